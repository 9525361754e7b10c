//! The agent: a model, tools, limits, approval and plugins, and the loop that runs them.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use futures_util::{FutureExt, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::{OnceCell, broadcast};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::approval::{Approval, ApprovalPolicy, ApprovalRequest, Approver};
use crate::durable::{
    Checkpoint, CheckpointRef, Checkpointer, InterruptedCalls, JournalEntry, JournalState,
};
use crate::error::{AgentError, AgentErrorKind, Classify, ModelError, ToolError};
use crate::event::{AgentEvent, EventKind};
use crate::message::{
    Completion, CompletionRequest, Message, RequestOptions, StreamEvent, ToolCall, Usage,
};
use crate::model::{BoxModel, Model};
use crate::plugin::{AfterRun, AfterTool, BeforeRun, BeforeTool, Plugin, RunInfo};
use crate::tool::{Risk, SharedTool, Tool, ToolContext, ToolSpec};

/// Events an agent's channel holds ([`Agent::subscribe`]): a subscriber that falls further
/// behind loses the oldest.
pub const EVENT_CAPACITY: usize = 1024;

/// An agent: cheap to clone, safe to run from many tasks at once.
#[derive(Clone)]
pub struct Agent {
    inner: Arc<Inner>,
}

struct Inner {
    name: Arc<str>,
    model: BoxModel,
    model_name: Arc<str>,
    system_prompt: Option<String>,
    tools: Vec<Registered>,
    by_name: HashMap<String, usize>,
    specs: Arc<[ToolSpec]>,
    max_iterations: u32,
    tool_timeout: Duration,
    run_timeout: Option<Duration>,
    approver: Option<Arc<dyn Approver>>,
    approval: ApprovalPolicy,
    plugins: Vec<Arc<dyn Plugin>>,
    options: RequestOptions,
    streaming: bool,
    interrupted: InterruptedCalls,
    events: broadcast::Sender<AgentEvent>,
    loaded: OnceCell<Result<(), (String, String)>>,
    next_run: AtomicU64,
}

struct Registered {
    tool: SharedTool,
    name: Arc<str>,
    validator: jsonschema::Validator,
    risk: Risk,
    timeout: Option<Duration>,
}

/// One run's input beyond the task.
#[derive(Clone, Default)]
pub struct RunRequest {
    /// The task, added as the last user message.
    pub task: String,
    /// Earlier conversation (after the system prompt, before the task).
    pub history: Vec<Message>,
    /// The run's id; default: the agent's name and a counter.
    pub run_id: Option<String>,
    /// Cancels the run; default: never.
    pub cancel: Option<CancellationToken>,
    /// Saves the run's state after each step and journals tool calls; default: none.
    pub checkpointer: Option<Arc<dyn Checkpointer>>,
    /// Resume from this checkpoint instead of starting (the task and history are then
    /// ignored, and `before_run` hooks are not called again).
    pub resume: Option<Checkpoint>,
    /// Stream the model's answers (text deltas as events) in this run; default: the
    /// agent's [`streaming`](AgentBuilder::streaming) setting. A caller that knows nobody
    /// watches the run's text passes `Some(false)` to spare the streaming protocol.
    pub stream: Option<bool>,
}

impl std::fmt::Debug for RunRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunRequest")
            .field("task", &self.task)
            .field("history", &self.history.len())
            .field("run_id", &self.run_id)
            .field("durable", &self.checkpointer.is_some())
            .field("resume", &self.resume.as_ref().map(|c| c.iterations))
            .field("stream", &self.stream)
            .finish()
    }
}

impl RunRequest {
    /// A request for this task.
    pub fn new(task: impl Into<String>) -> Self {
        Self {
            task: task.into(),
            ..Self::default()
        }
    }
}

/// One tool call of a run, as recorded in its output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCallRecord {
    /// The tool.
    pub name: String,
    /// The arguments it ran with (or was refused with).
    pub arguments: Value,
    /// The error the model saw, if the call failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// How long the call took, in seconds.
    pub duration_secs: f64,
}

/// A successful run.
#[derive(Debug, Clone, Serialize)]
pub struct RunOutput {
    /// The run's id.
    pub run_id: String,
    /// The final answer.
    pub answer: String,
    /// Model turns used.
    pub iterations: u32,
    /// Every tool call, in the order they were asked for.
    pub tool_calls: Vec<ToolCallRecord>,
    /// Tokens used.
    pub usage: Usage,
    /// How long the run took, in seconds.
    pub duration_secs: f64,
    /// The whole conversation.
    #[serde(skip)]
    pub transcript: Vec<Message>,
}

/// Why [`AgentBuilder::build`] refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// Two tools have the same name.
    #[error("two tools are named `{0}`")]
    DuplicateTool(String),
    /// A tool's schema is not a valid JSON Schema.
    #[error("tool `{tool}` has an invalid JSON Schema: {message}")]
    InvalidSchema {
        /// The tool.
        tool: String,
        /// What is wrong.
        message: String,
    },
    /// A limit is zero.
    #[error("{0} must be greater than zero")]
    Zero(&'static str),
}

/// Builds an [`Agent`]; see [`Agent::builder`].
#[must_use]
pub struct AgentBuilder {
    name: String,
    model: BoxModel,
    system_prompt: Option<String>,
    tools: Vec<SharedTool>,
    max_iterations: u32,
    tool_timeout: Duration,
    run_timeout: Option<Duration>,
    approver: Option<Arc<dyn Approver>>,
    approval: ApprovalPolicy,
    plugins: Vec<Arc<dyn Plugin>>,
    options: RequestOptions,
    streaming: bool,
    interrupted: InterruptedCalls,
}

impl AgentBuilder {
    /// The agent's name, used in events, logs and run ids. Default: `default`.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// A system prompt put before every conversation. Default: none.
    pub fn system_prompt(mut self, prompt: impl Into<String>) -> Self {
        self.system_prompt = Some(prompt.into());
        self
    }

    /// Adds a typed tool.
    pub fn tool(mut self, tool: impl Tool) -> Self {
        self.tools.push(tool.into_dyn());
        self
    }

    /// Adds a JSON-level tool (an MCP tool, a wrapped tool).
    pub fn dyn_tool(mut self, tool: SharedTool) -> Self {
        self.tools.push(tool);
        self
    }

    /// Adds several JSON-level tools.
    pub fn dyn_tools(mut self, tools: impl IntoIterator<Item = SharedTool>) -> Self {
        self.tools.extend(tools);
        self
    }

    /// Model turns allowed per run. Default: 10.
    pub fn max_iterations(mut self, n: u32) -> Self {
        self.max_iterations = n;
        self
    }

    /// Time limit of one tool call, unless the tool sets its own. Default: 60 s.
    pub fn tool_timeout(mut self, timeout: Duration) -> Self {
        self.tool_timeout = timeout;
        self
    }

    /// Time limit of a whole run. Default: none.
    pub fn run_timeout(mut self, timeout: Duration) -> Self {
        self.run_timeout = Some(timeout);
        self
    }

    /// Who approves risky calls. Default: nobody, so calls that need approval are denied.
    pub fn approver(mut self, approver: impl Approver) -> Self {
        self.approver = Some(Arc::new(approver));
        self
    }

    /// Who approves risky calls, shared.
    pub fn shared_approver(mut self, approver: Arc<dyn Approver>) -> Self {
        self.approver = Some(approver);
        self
    }

    /// When approval is needed and what a failure to ask means. Default:
    /// [`ApprovalPolicy::default`].
    pub fn approval_policy(mut self, policy: ApprovalPolicy) -> Self {
        self.approval = policy;
        self
    }

    /// Adds a plugin; hooks run in the order plugins are added.
    pub fn plugin(mut self, plugin: impl Plugin) -> Self {
        self.plugins.push(Arc::new(plugin));
        self
    }

    /// Adds a shared plugin.
    pub fn shared_plugin(mut self, plugin: Arc<dyn Plugin>) -> Self {
        self.plugins.push(plugin);
        self
    }

    /// Sampling options of every model call. Default: the provider's.
    pub fn request_options(mut self, options: RequestOptions) -> Self {
        self.options = options;
        self
    }

    /// Calls the model in streaming mode and emits [`EventKind::TextDelta`] events.
    /// Default: off.
    pub fn streaming(mut self, on: bool) -> Self {
        self.streaming = on;
        self
    }

    /// What a resumed run does with a non-idempotent call that started before a crash and
    /// has no journaled result. Default: [`InterruptedCalls::Fail`].
    pub fn interrupted_calls(mut self, policy: InterruptedCalls) -> Self {
        self.interrupted = policy;
        self
    }

    /// Builds the agent.
    ///
    /// # Errors
    /// A [`BuildError`] for duplicate tool names, invalid schemas and zero limits.
    pub fn build(self) -> Result<Agent, BuildError> {
        if self.max_iterations == 0 {
            return Err(BuildError::Zero("max_iterations"));
        }
        let mut by_name = HashMap::with_capacity(self.tools.len());
        let mut tools = Vec::with_capacity(self.tools.len());
        for tool in self.tools {
            let spec = tool.spec();
            if by_name.insert(spec.name.clone(), tools.len()).is_some() {
                return Err(BuildError::DuplicateTool(spec.name.clone()));
            }
            let validator = jsonschema::validator_for(&spec.parameters).map_err(|e| {
                BuildError::InvalidSchema {
                    tool: spec.name.clone(),
                    message: e.to_string(),
                }
            })?;
            tools.push(Registered {
                name: Arc::from(spec.name.as_str()),
                risk: self.approval.effective_risk(&spec.name, spec.risk),
                timeout: spec.timeout,
                validator,
                tool,
            });
        }
        let specs: Arc<[ToolSpec]> = tools.iter().map(|t| t.tool.spec().clone()).collect();
        let (events, _) = broadcast::channel(EVENT_CAPACITY);
        Ok(Agent {
            inner: Arc::new(Inner {
                name: Arc::from(self.name),
                model_name: Arc::from(self.model.name()),
                model: self.model,
                system_prompt: self.system_prompt,
                tools,
                by_name,
                specs,
                max_iterations: self.max_iterations,
                tool_timeout: self.tool_timeout,
                run_timeout: self.run_timeout,
                approver: self.approver,
                approval: self.approval,
                plugins: self.plugins,
                options: self.options,
                streaming: self.streaming,
                interrupted: self.interrupted,
                events,
                loaded: OnceCell::new(),
                next_run: AtomicU64::new(1),
            }),
        })
    }
}

/// What the loop has done so far; kept outside the loop's future so a timeout or
/// cancellation still reports the partial transcript.
struct RunState {
    request: CompletionRequest,
    /// Call the model in streaming mode.
    streaming: bool,
    iterations: u32,
    usage: Usage,
    records: Vec<ToolCallRecord>,
}

/// The outcome of one tool call inside the loop.
enum CallOutcome {
    Done {
        content: String,
        is_error: bool,
        record: ToolCallRecord,
    },
    Stop {
        plugin: String,
        reason: String,
    },
    Fail(AgentErrorKind),
}

/// A run's durability: where it checkpoints, and the journal it resumed with.
struct Durable {
    store: Arc<dyn Checkpointer>,
    resumed: HashMap<String, JournalState>,
}

impl Agent {
    /// Starts building an agent around `model`.
    ///
    /// ```
    /// # use pocket_agent::{Agent, Completion, CompletionRequest, Model, ModelError};
    /// # struct Echo;
    /// # impl Model for Echo {
    /// #     fn name(&self) -> &str { "echo" }
    /// #     async fn complete(&self, _: &CompletionRequest) -> Result<Completion, ModelError> {
    /// #         Ok(Completion::text("hi"))
    /// #     }
    /// # }
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let agent = Agent::builder(Echo).name("greeter").max_iterations(3).build()?;
    /// let out = agent.run("say hi").await?;
    /// assert_eq!(out.answer, "hi");
    /// # Ok(()) }
    /// ```
    pub fn builder(model: impl Model) -> AgentBuilder {
        Self::builder_boxed(BoxModel::new(model))
    }

    /// Starts building an agent around an already boxed model.
    pub fn builder_boxed(model: BoxModel) -> AgentBuilder {
        AgentBuilder {
            name: "default".into(),
            model,
            system_prompt: None,
            tools: Vec::new(),
            max_iterations: 10,
            tool_timeout: Duration::from_secs(60),
            run_timeout: None,
            approver: None,
            approval: ApprovalPolicy::default(),
            plugins: Vec::new(),
            options: RequestOptions::default(),
            streaming: false,
            interrupted: InterruptedCalls::Fail,
        }
    }

    /// The agent's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The model's name.
    pub fn model_name(&self) -> &str {
        &self.inner.model_name
    }

    /// The specs of the agent's tools.
    pub fn tools(&self) -> &[ToolSpec] {
        &self.inner.specs
    }

    /// Receives every event of every run of this agent from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<AgentEvent> {
        self.inner.events.subscribe()
    }

    /// Runs one task to its answer.
    ///
    /// # Errors
    /// An [`AgentError`] saying why the run failed, with the partial transcript.
    pub async fn run(&self, task: impl Into<String>) -> Result<RunOutput, AgentError> {
        self.run_with(RunRequest::new(task)).await
    }

    /// Calls every plugin's `on_unload`.
    pub async fn shutdown(&self) {
        for plugin in &self.inner.plugins {
            plugin.on_unload().await;
        }
    }

    /// Runs one task with history, an id and a cancellation token.
    ///
    /// # Errors
    /// An [`AgentError`] saying why the run failed, with the partial transcript.
    pub async fn run_with(&self, request: RunRequest) -> Result<RunOutput, AgentError> {
        let inner = &*self.inner;
        let run_id: Arc<str> = match request.run_id {
            Some(id) => Arc::from(id),
            None => Arc::from(format!(
                "{}-{}",
                inner.name,
                inner.next_run.fetch_add(1, Ordering::Relaxed)
            )),
        };
        let task = match (&request.resume, request.task.is_empty()) {
            (Some(cp), true) => cp
                .messages
                .iter()
                .rev()
                .find_map(|m| match m {
                    Message::User { content } => Some(content.as_str()),
                    _ => None,
                })
                .unwrap_or_default(),
            _ => request.task.as_str(),
        };
        let run = RunInfo {
            run_id,
            agent: inner.name.clone(),
            task: Arc::from(task),
            started: Instant::now(),
        };
        let span = tracing::info_span!(
            "invoke_agent",
            gen_ai.operation.name = "invoke_agent",
            gen_ai.agent.name = %inner.name,
            run_id = %run.run_id,
        );
        // A child: ending the run stops its tools without cancelling the caller's token.
        let cancel = request.cancel.map(|c| c.child_token()).unwrap_or_default();
        let durable = request.checkpointer.map(|store| Durable {
            store,
            resumed: request
                .resume
                .as_ref()
                .map(|c| {
                    c.journal
                        .iter()
                        .map(|e| (e.call_id.clone(), e.state.clone()))
                        .collect()
                })
                .unwrap_or_default(),
        });
        async move {
            let resumed = request.resume.is_some();
            let (messages, iterations, usage, records) = match request.resume {
                Some(cp) => (cp.messages, cp.iterations, cp.usage, cp.tool_calls),
                None => {
                    let mut messages = Vec::with_capacity(request.history.len() + 2);
                    messages.extend(inner.system_prompt.as_ref().map(Message::system));
                    messages.extend(request.history);
                    messages.push(Message::user(request.task));
                    (messages, 0, Usage::default(), Vec::new())
                }
            };
            let mut state = RunState {
                request: CompletionRequest {
                    messages,
                    tools: inner.specs.clone(),
                    options: inner.options.clone(),
                    deadline: inner.run_timeout.map(|t| tokio::time::Instant::now() + t),
                },
                streaming: request.stream.unwrap_or(inner.streaming),
                iterations,
                usage,
                records,
            };
            if resumed {
                self.emit(&run, || EventKind::RunResumed { iterations });
            } else {
                self.emit(&run, || EventKind::RunStarted {
                    task: run.task.clone(),
                });
            }
            let result = self
                .run_inner(&run, &mut state, durable.as_ref(), resumed, &cancel)
                .await;
            // Whatever ended the run, its tools should stop too.
            cancel.cancel();
            let result = match result {
                Ok(answer) => self.finish(&run, state, answer).await,
                Err(kind) => Err(AgentError::new(
                    kind,
                    state.iterations,
                    state.request.messages,
                    state.usage,
                )),
            };
            if let Err(error) = &result {
                for plugin in &inner.plugins {
                    plugin.on_error(&run, error).await;
                }
                tracing::warn!(error = %error, iterations = error.iterations(), "run failed");
                self.emit(&run, || EventKind::RunFailed {
                    iterations: error.iterations(),
                    error: error.to_string(),
                    classification: error.classify(),
                    duration: run.started.elapsed(),
                });
            }
            result
        }
        .instrument(span)
        .await
    }

    /// Loads plugins once, runs the `before_run` hooks, and the loop under the run's limits.
    async fn run_inner(
        &self,
        run: &RunInfo,
        state: &mut RunState,
        durable: Option<&Durable>,
        resumed: bool,
        cancel: &CancellationToken,
    ) -> Result<String, AgentErrorKind> {
        let inner = &*self.inner;
        if !inner.plugins.is_empty() {
            let loaded = inner.loaded.get_or_init(|| self.load_plugins()).await;
            if let Err((plugin, message)) = loaded {
                return Err(AgentErrorKind::Plugin {
                    plugin: plugin.clone(),
                    message: message.clone(),
                });
            }
        }
        for plugin in inner.plugins.iter().filter(|_| !resumed) {
            match plugin.before_run(run, &state.request.messages).await {
                BeforeRun::Continue => {}
                BeforeRun::Rewrite(messages) => state.request.messages = messages,
                BeforeRun::Stop(reason) => {
                    return Err(AgentErrorKind::Stopped {
                        plugin: plugin.name().into(),
                        reason,
                    });
                }
            }
        }
        let limit = async {
            match inner.run_timeout {
                Some(t) => tokio::time::sleep(t).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            () = cancel.cancelled() => Err(AgentErrorKind::Cancelled),
            () = limit => Err(AgentErrorKind::Timeout {
                after: inner.run_timeout.unwrap_or_default(),
            }),
            result = self.run_loop(run, state, durable, cancel) => result,
        }
    }

    async fn load_plugins(&self) -> Result<(), (String, String)> {
        for plugin in &self.inner.plugins {
            plugin
                .on_load()
                .await
                .map_err(|e| (plugin.name().to_owned(), e))?;
        }
        Ok(())
    }

    async fn run_loop(
        &self,
        run: &RunInfo,
        state: &mut RunState,
        durable: Option<&Durable>,
        cancel: &CancellationToken,
    ) -> Result<String, AgentErrorKind> {
        let inner = &*self.inner;
        loop {
            // Calls of the last turn without results: a resumed run picks them up here.
            let pending = pending_calls(&state.request.messages);
            if !pending.is_empty() {
                let (results, failure) =
                    self.run_calls(run, state, durable, &pending, cancel).await;
                state.request.messages.extend(results);
                failure.map_or(Ok(()), Err)?;
                checkpoint(run, state, durable).await?;
            }
            if state.iterations >= inner.max_iterations {
                return Err(AgentErrorKind::MaxIterations {
                    limit: inner.max_iterations,
                });
            }
            state.iterations += 1;
            let completion = self
                .call_model(run, state)
                .await
                .map_err(AgentErrorKind::Model)?;
            state.usage += completion.usage;
            if completion.tool_calls.is_empty() {
                let answer = completion.content.clone().unwrap_or_default();
                state.request.messages.push(Message::Assistant {
                    content: completion.content,
                    tool_calls: Vec::new(),
                });
                return Ok(answer);
            }
            let calls = completion.tool_calls;
            let failure = if durable.is_some() {
                state.request.messages.push(Message::Assistant {
                    content: completion.content,
                    tool_calls: calls.clone(),
                });
                // Saved before the calls run, so a crash now re-runs the calls, not the model.
                checkpoint(run, state, durable).await?;
                let (results, failure) = self.run_calls(run, state, durable, &calls, cancel).await;
                state.request.messages.extend(results);
                failure
            } else {
                // No copy of the calls: run them, then move them into the transcript.
                let (results, failure) = self.run_calls(run, state, durable, &calls, cancel).await;
                let messages = &mut state.request.messages;
                messages.push(Message::Assistant {
                    content: completion.content,
                    tool_calls: calls,
                });
                messages.extend(results);
                failure
            };
            failure.map_or(Ok(()), Err)?;
            checkpoint(run, state, durable).await?;
        }
    }

    /// Runs one turn's calls concurrently; returns their results in order (and records them),
    /// and the first failure that ends the run, if any.
    async fn run_calls(
        &self,
        run: &RunInfo,
        state: &mut RunState,
        durable: Option<&Durable>,
        calls: &[ToolCall],
        cancel: &CancellationToken,
    ) -> (Vec<Message>, Option<AgentErrorKind>) {
        let outcomes = futures_util::future::join_all(
            calls
                .iter()
                .map(|call| self.execute(run, durable, call, cancel)),
        )
        .await;
        let mut failure = None;
        let mut results = Vec::with_capacity(calls.len());
        for (call, outcome) in calls.iter().zip(outcomes) {
            match outcome {
                CallOutcome::Done {
                    content,
                    is_error,
                    record,
                } => {
                    state.records.push(record);
                    results.push(Message::Tool {
                        call_id: call.id.clone(),
                        name: call.name.clone(),
                        content,
                        is_error,
                    });
                }
                CallOutcome::Stop { plugin, reason } => {
                    failure.get_or_insert(AgentErrorKind::Stopped { plugin, reason });
                }
                CallOutcome::Fail(kind) => {
                    failure.get_or_insert(kind);
                }
            }
        }
        (results, failure)
    }

    async fn call_model(&self, run: &RunInfo, state: &RunState) -> Result<Completion, ModelError> {
        let inner = &*self.inner;
        let iteration = state.iterations;
        self.emit(run, || EventKind::ModelCallStarted {
            iteration,
            model: inner.model_name.clone(),
        });
        let span = tracing::info_span!(
            "chat",
            gen_ai.operation.name = "chat",
            gen_ai.request.model = %inner.model_name,
            gen_ai.usage.input_tokens = tracing::field::Empty,
            gen_ai.usage.output_tokens = tracing::field::Empty,
            iteration,
        );
        let started = Instant::now();
        let result = async {
            if state.streaming {
                self.call_model_streaming(run, &state.request).await
            } else {
                inner.model.complete(&state.request).await
            }
        }
        .instrument(span.clone())
        .await;
        let duration = started.elapsed();
        match &result {
            Ok(c) => {
                span.record("gen_ai.usage.input_tokens", c.usage.input_tokens);
                span.record("gen_ai.usage.output_tokens", c.usage.output_tokens);
                self.emit(run, || EventKind::ModelCallFinished {
                    iteration,
                    model: inner.model_name.clone(),
                    duration,
                    usage: c.usage,
                    tool_calls: c.tool_calls.len(),
                });
            }
            Err(e) => {
                tracing::debug!(parent: &span, error = %e, "model call failed");
                self.emit(run, || EventKind::ModelCallFailed {
                    iteration,
                    model: inner.model_name.clone(),
                    duration,
                    error: e.to_string(),
                    classification: e.classify(),
                });
            }
        }
        result
    }

    async fn call_model_streaming(
        &self,
        run: &RunInfo,
        request: &CompletionRequest,
    ) -> Result<Completion, ModelError> {
        let mut stream = self.inner.model.stream(request).await?;
        while let Some(item) = stream.next().await {
            match item? {
                StreamEvent::TextDelta(text) => self.emit(run, || EventKind::TextDelta { text }),
                StreamEvent::Done(completion) => return Ok(completion),
                _ => {}
            }
        }
        Err(ModelError::malformed(
            "the stream ended without a final completion",
        ))
    }

    /// Hooks, validation, approval, the call itself with its time limit, and hooks again.
    async fn execute(
        &self,
        run: &RunInfo,
        durable: Option<&Durable>,
        call: &ToolCall,
        cancel: &CancellationToken,
    ) -> CallOutcome {
        let started = Instant::now();
        let inner = &*self.inner;
        let tool = inner.by_name.get(&call.name).map(|&i| &inner.tools[i]);
        let mut ask = false;
        match durable.and_then(|d| d.resumed.get(&call.id)) {
            Some(JournalState::Finished { content, is_error }) => {
                return self.replayed(run, call, content, *is_error);
            }
            Some(JournalState::Started) if !tool.is_some_and(|t| t.tool.spec().idempotent) => {
                let interrupted = || {
                    CallOutcome::Fail(AgentErrorKind::Interrupted {
                        tool: call.name.clone(),
                        call_id: call.id.clone(),
                    })
                };
                match inner.interrupted {
                    InterruptedCalls::Fail => return interrupted(),
                    InterruptedCalls::Ask if inner.approver.is_none() => return interrupted(),
                    InterruptedCalls::Ask => ask = true,
                }
            }
            _ => {}
        }
        let Some(tool) = tool else {
            let err = ToolError::NotFound {
                name: call.name.clone(),
            };
            return self.refused(run, call, None, call.arguments.clone(), err, started);
        };
        let span = tracing::info_span!(
            "execute_tool",
            gen_ai.operation.name = "execute_tool",
            gen_ai.tool.name = %tool.name,
            gen_ai.tool.call.id = %call.id,
        );
        let outcome = self
            .execute_known(run, durable, call, tool, ask, cancel, started)
            .instrument(span)
            .await;
        if let (
            Some(d),
            CallOutcome::Done {
                content, is_error, ..
            },
        ) = (durable, &outcome)
        {
            let entry = JournalEntry {
                call_id: call.id.clone(),
                tool: call.name.clone(),
                state: JournalState::Finished {
                    content: content.clone(),
                    is_error: *is_error,
                },
            };
            if let Err(e) = d.store.journal(&run.run_id, &entry).await {
                return CallOutcome::Fail(AgentErrorKind::Checkpoint { message: e.0 });
            }
        }
        outcome
    }

    /// A call whose result was journaled before a crash: the model sees it again, the tool
    /// does not run.
    fn replayed(
        &self,
        run: &RunInfo,
        call: &ToolCall,
        content: &str,
        is_error: bool,
    ) -> CallOutcome {
        self.emit(run, || EventKind::ToolCallReplayed {
            call_id: call.id.clone(),
            tool: Arc::from(call.name.as_str()),
        });
        CallOutcome::Done {
            content: content.to_owned(),
            is_error,
            record: ToolCallRecord {
                name: call.name.clone(),
                arguments: call.arguments.clone(),
                error: is_error.then(|| content.to_owned()),
                duration_secs: 0.0,
            },
        }
    }

    #[allow(clippy::too_many_arguments)] // private; each is a distinct input of one call
    async fn execute_known(
        &self,
        run: &RunInfo,
        durable: Option<&Durable>,
        call: &ToolCall,
        tool: &Registered,
        ask: bool,
        cancel: &CancellationToken,
        started: Instant,
    ) -> CallOutcome {
        let inner = &*self.inner;
        let spec = tool.tool.spec();
        let mut args = match parse_arguments(&call.arguments) {
            Ok(args) => args,
            Err(err) => {
                return self.refused(run, call, Some(tool), call.arguments.clone(), err, started);
            }
        };
        for plugin in &inner.plugins {
            match plugin.before_tool(run, spec, call).await {
                BeforeTool::Run => {}
                BeforeTool::Rewrite(new) => args = new,
                BeforeTool::Skip(reason) => {
                    let err = ToolError::Failed {
                        message: format!("skipped by plugin `{}`: {reason}", plugin.name()),
                        retryable: false,
                        source: None,
                    };
                    return self.refused(run, call, Some(tool), args, err, started);
                }
                BeforeTool::Stop(reason) => {
                    return CallOutcome::Stop {
                        plugin: plugin.name().into(),
                        reason,
                    };
                }
            }
        }
        if let Err(err) = validate(tool, &args) {
            return self.refused(run, call, Some(tool), args, err, started);
        }
        if ask || inner.approval.requires_approval(tool.risk) {
            match self.ask_approval(run, call, tool, &args).await {
                Ok(Some(edited)) => {
                    if let Err(err) = validate(tool, &edited) {
                        return self.refused(run, call, Some(tool), edited, err, started);
                    }
                    args = edited;
                }
                Ok(None) => {}
                Err(err) => return self.refused(run, call, Some(tool), args, err, started),
            }
        }

        if let Some(d) = durable {
            let entry = JournalEntry {
                call_id: call.id.clone(),
                tool: call.name.clone(),
                state: JournalState::Started,
            };
            if let Err(e) = d.store.journal(&run.run_id, &entry).await {
                return CallOutcome::Fail(AgentErrorKind::Checkpoint { message: e.0 });
            }
        }
        self.emit(run, || EventKind::ToolCallStarted {
            call_id: call.id.clone(),
            tool: tool.name.clone(),
            arguments: args.clone(),
        });
        let ctx = ToolContext {
            run_id: run.run_id.clone(),
            agent: inner.name.clone(),
            call_id: call.id.clone(),
            cancel: cancel.child_token(),
        };
        let limit = tool.timeout.unwrap_or(inner.tool_timeout);
        let result = match tokio::time::timeout(
            limit,
            AssertUnwindSafe(tool.tool.call(args.clone(), &ctx)).catch_unwind(),
        )
        .await
        {
            Ok(Ok(result)) => result,
            Ok(Err(panic)) => Err(ToolError::Panicked {
                message: panic_message(&*panic),
            }),
            Err(_) => {
                ctx.cancel.cancel();
                Err(ToolError::Timeout { after: limit })
            }
        };
        let duration = started.elapsed();
        let mut result = result;
        for plugin in &inner.plugins {
            match plugin.after_tool(run, spec, call, &result, duration).await {
                AfterTool::Continue => {}
                AfterTool::Rewrite(value) => result = Ok(value),
                AfterTool::Stop(reason) => {
                    return CallOutcome::Stop {
                        plugin: plugin.name().into(),
                        reason,
                    };
                }
            }
        }
        self.finish_call(run, call, Some(tool), args, result, started)
    }

    /// Asks the approver. `Ok(Some(args))` when the person edited the arguments.
    async fn ask_approval(
        &self,
        run: &RunInfo,
        call: &ToolCall,
        tool: &Registered,
        args: &Value,
    ) -> Result<Option<Value>, ToolError> {
        let inner = &*self.inner;
        let Some(approver) = &inner.approver else {
            return Err(ToolError::denied(format!(
                "tool `{}` is {} and needs approval, but no approver is configured",
                tool.name,
                tool.risk.as_str()
            )));
        };
        let request = ApprovalRequest {
            run_id: run.run_id.clone(),
            agent: inner.name.clone(),
            call_id: call.id.clone(),
            tool: tool.name.to_string(),
            risk: tool.risk,
            arguments: args.clone(),
        };
        self.emit(run, || EventKind::ApprovalRequested {
            call_id: call.id.clone(),
            tool: tool.name.clone(),
            risk: tool.risk,
            arguments: args.clone(),
        });
        let answer =
            match tokio::time::timeout(inner.approval.timeout, approver.approve(&request)).await {
                Ok(Ok(answer)) => answer,
                Ok(Err(e)) => return self.approval_failed(run, call, tool, e.to_string()),
                Err(_) => {
                    let msg = format!(
                        "no answer within {:.0}s",
                        inner.approval.timeout.as_secs_f64()
                    );
                    return self.approval_failed(run, call, tool, msg);
                }
            };
        let (decision, reason, outcome) = match answer {
            Approval::Approve => ("approve", None, Ok(None)),
            Approval::Deny(reason) => {
                let err = ToolError::denied(format!("a person denied the call: {reason}"));
                ("deny", Some(reason), Err(err))
            }
            Approval::Edit(new) => ("edit", None, Ok(Some(new))),
        };
        tracing::info!(tool = %tool.name, decision, "approval decided");
        self.emit(run, || EventKind::ApprovalDecided {
            call_id: call.id.clone(),
            tool: tool.name.clone(),
            decision,
            reason,
        });
        outcome
    }

    fn approval_failed(
        &self,
        run: &RunInfo,
        call: &ToolCall,
        tool: &Registered,
        error: String,
    ) -> Result<Option<Value>, ToolError> {
        let denied = !self.inner.approval.allows_on_failure(tool.risk);
        tracing::warn!(tool = %tool.name, %error, denied, "asking for approval failed");
        let reason = format!(
            "approval of `{}` ({}) failed: {error}; denied by the fail-safe policy",
            tool.name,
            tool.risk.as_str()
        );
        self.emit(run, || EventKind::ApprovalFailed {
            call_id: call.id.clone(),
            tool: tool.name.clone(),
            error,
            denied,
        });
        if denied {
            Err(ToolError::denied(reason))
        } else {
            Ok(None)
        }
    }

    fn refused(
        &self,
        run: &RunInfo,
        call: &ToolCall,
        tool: Option<&Registered>,
        args: Value,
        err: ToolError,
        started: Instant,
    ) -> CallOutcome {
        self.finish_call(run, call, tool, args, Err(err), started)
    }

    fn finish_call(
        &self,
        run: &RunInfo,
        call: &ToolCall,
        tool: Option<&Registered>,
        args: Value,
        result: Result<Value, ToolError>,
        started: Instant,
    ) -> CallOutcome {
        let duration = started.elapsed();
        let (content, error) = match result {
            Ok(Value::String(s)) => (s, None),
            Ok(v) => (v.to_string(), None),
            Err(e) => {
                tracing::debug!(tool = %call.name, error = %e, "tool call failed");
                (format!("error: {e}"), Some(e))
            }
        };
        let name = tool.map_or_else(|| Arc::from(call.name.as_str()), |t| t.name.clone());
        self.emit(run, || EventKind::ToolCallFinished {
            call_id: call.id.clone(),
            tool: name,
            duration,
            error: error.as_ref().map(ToString::to_string),
            classification: error.as_ref().map(Classify::classify),
        });
        let is_error = error.is_some();
        CallOutcome::Done {
            record: ToolCallRecord {
                name: call.name.clone(),
                arguments: args,
                error: error.map(|e| e.to_string()),
                duration_secs: duration.as_secs_f64(),
            },
            content,
            is_error,
        }
    }

    async fn finish(
        &self,
        run: &RunInfo,
        state: RunState,
        answer: String,
    ) -> Result<RunOutput, AgentError> {
        let mut output = RunOutput {
            run_id: run.run_id.to_string(),
            answer,
            iterations: state.iterations,
            tool_calls: state.records,
            usage: state.usage,
            duration_secs: 0.0,
            transcript: state.request.messages,
        };
        for plugin in &self.inner.plugins {
            match plugin.after_run(run, &output).await {
                AfterRun::Continue => {}
                AfterRun::Rewrite(answer) => output.answer = answer,
                AfterRun::Stop(reason) => {
                    let kind = AgentErrorKind::Stopped {
                        plugin: plugin.name().into(),
                        reason,
                    };
                    return Err(AgentError::new(
                        kind,
                        output.iterations,
                        output.transcript,
                        output.usage,
                    ));
                }
            }
        }
        let duration = run.started.elapsed();
        output.duration_secs = duration.as_secs_f64();
        self.emit(run, || EventKind::RunFinished {
            iterations: output.iterations,
            usage: output.usage,
            duration,
        });
        Ok(output)
    }

    /// Sends an event if anyone listens; builds it only then.
    fn emit(&self, run: &RunInfo, kind: impl FnOnce() -> EventKind) {
        let events = &self.inner.events;
        if events.receiver_count() > 0 {
            let _ = events.send(AgentEvent {
                run_id: run.run_id.clone(),
                agent: run.agent.clone(),
                at: SystemTime::now(),
                kind: kind(),
            });
        }
    }
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("name", &self.inner.name)
            .field("model", &self.inner.model_name)
            .field(
                "tools",
                &self.inner.specs.iter().map(|s| &s.name).collect::<Vec<_>>(),
            )
            .field("max_iterations", &self.inner.max_iterations)
            .finish_non_exhaustive()
    }
}

/// Calls of the last assistant turn that have no result yet.
fn pending_calls(messages: &[Message]) -> Vec<ToolCall> {
    let Some(at) = messages
        .iter()
        .rposition(|m| matches!(m, Message::Assistant { .. }))
    else {
        return Vec::new();
    };
    let Message::Assistant { tool_calls, .. } = &messages[at] else {
        return Vec::new();
    };
    let answered: Vec<&str> = messages[at + 1..]
        .iter()
        .filter_map(|m| match m {
            Message::Tool { call_id, .. } => Some(call_id.as_str()),
            _ => None,
        })
        .collect();
    tool_calls
        .iter()
        .filter(|c| !answered.contains(&c.id.as_str()))
        .cloned()
        .collect()
}

async fn checkpoint(
    run: &RunInfo,
    state: &RunState,
    durable: Option<&Durable>,
) -> Result<(), AgentErrorKind> {
    let Some(d) = durable else { return Ok(()) };
    let view = CheckpointRef {
        messages: &state.request.messages,
        iterations: state.iterations,
        usage: state.usage,
        tool_calls: &state.records,
    };
    d.store
        .checkpoint(&run.run_id, view)
        .await
        .map_err(|e| AgentErrorKind::Checkpoint { message: e.0 })
}

/// Arguments as a JSON object; providers pass unparsable argument text as a JSON string.
fn parse_arguments(raw: &Value) -> Result<Value, ToolError> {
    match raw {
        Value::String(text) => match serde_json::from_str::<Value>(text) {
            Ok(v @ Value::Object(_)) => Ok(v),
            Ok(_) | Err(_) => Err(ToolError::invalid_arguments(format!(
                "arguments must be a JSON object, got: {}",
                truncate(text, 200)
            ))),
        },
        Value::Null => Ok(Value::Object(Default::default())),
        other => Ok(other.clone()),
    }
}

fn validate(tool: &Registered, args: &Value) -> Result<(), ToolError> {
    let mut errors = tool.validator.iter_errors(args).peekable();
    if errors.peek().is_none() {
        return Ok(());
    }
    let message = errors
        .take(5)
        .map(|e| {
            let path = e.instance_path().to_string();
            if path.is_empty() {
                e.to_string()
            } else {
                format!("`{path}`: {e}")
            }
        })
        .collect::<Vec<_>>()
        .join("; ");
    Err(ToolError::invalid_arguments(message))
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".to_owned()
    }
}
