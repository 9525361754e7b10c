//! Plugins: hooks around runs and tool calls.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use serde_json::Value;

use crate::agent::RunOutput;
use crate::error::{AgentError, ToolError};
use crate::message::{Message, ToolCall};
use crate::tool::ToolSpec;

/// What a hook knows of the run it is called in.
#[derive(Debug, Clone)]
pub struct RunInfo {
    /// The run's id.
    pub run_id: Arc<str>,
    /// The agent's name.
    pub agent: Arc<str>,
    /// The task as given.
    pub task: Arc<str>,
    /// When the run started.
    pub started: Instant,
}

/// What to do after [`Plugin::before_run`].
#[derive(Debug, Clone, PartialEq)]
pub enum BeforeRun {
    /// Go on with the messages as they are.
    Continue,
    /// Replace the messages the run starts with.
    Rewrite(Vec<Message>),
    /// Do not run; the run fails with this reason.
    Stop(String),
}

/// What to do after [`Plugin::after_run`].
#[derive(Debug, Clone, PartialEq)]
pub enum AfterRun {
    /// Keep the answer.
    Continue,
    /// Replace the answer.
    Rewrite(String),
    /// Reject the answer; the run fails with this reason.
    Stop(String),
}

/// What to do after [`Plugin::before_tool`].
#[derive(Debug, Clone, PartialEq)]
pub enum BeforeTool {
    /// Run the call as asked.
    Run,
    /// Run the call with these arguments instead (they are validated).
    Rewrite(Value),
    /// Do not run the call; the model sees this text as the call's error.
    Skip(String),
    /// Stop the whole run with this reason.
    Stop(String),
}

/// What to do after [`Plugin::after_tool`].
#[derive(Debug, Clone, PartialEq)]
pub enum AfterTool {
    /// Keep the result.
    Continue,
    /// Replace the result the model sees.
    Rewrite(Value),
    /// Stop the whole run with this reason.
    Stop(String),
}

/// Hooks around runs and tool calls. Every hook has a no-op default; hooks run in the order
/// the plugins were added, and the first `Stop` wins.
pub trait Plugin: Send + Sync + 'static {
    /// The plugin's name, for errors and logs.
    fn name(&self) -> &str;

    /// Called once, before the agent's first run.
    ///
    /// # Errors
    /// A message; every run of the agent then fails with it.
    fn on_load(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(std::future::ready(Ok(())))
    }

    /// Called by [`Agent::shutdown`](crate::Agent::shutdown).
    fn on_unload(&self) -> BoxFuture<'_, ()> {
        Box::pin(std::future::ready(()))
    }

    /// Before the first model call, with the messages the run starts with.
    fn before_run<'a>(
        &'a self,
        _run: &'a RunInfo,
        _messages: &'a [Message],
    ) -> BoxFuture<'a, BeforeRun> {
        Box::pin(std::future::ready(BeforeRun::Continue))
    }

    /// After a successful run, with its output.
    fn after_run<'a>(
        &'a self,
        _run: &'a RunInfo,
        _output: &'a RunOutput,
    ) -> BoxFuture<'a, AfterRun> {
        Box::pin(std::future::ready(AfterRun::Continue))
    }

    /// After a failed run, with its error.
    fn on_error<'a>(&'a self, _run: &'a RunInfo, _error: &'a AgentError) -> BoxFuture<'a, ()> {
        Box::pin(std::future::ready(()))
    }

    /// Before a tool call (after the model asked for it, before validation and approval).
    fn before_tool<'a>(
        &'a self,
        _run: &'a RunInfo,
        _spec: &'a ToolSpec,
        _call: &'a ToolCall,
    ) -> BoxFuture<'a, BeforeTool> {
        Box::pin(std::future::ready(BeforeTool::Run))
    }

    /// After a tool call, with its result and how long it took.
    fn after_tool<'a>(
        &'a self,
        _run: &'a RunInfo,
        _spec: &'a ToolSpec,
        _call: &'a ToolCall,
        _result: &'a Result<Value, ToolError>,
        _duration: Duration,
    ) -> BoxFuture<'a, AfterTool> {
        Box::pin(std::future::ready(AfterTool::Continue))
    }
}

// Compile-time check that the trait stays object safe.
const _: Option<&dyn Plugin> = None;
