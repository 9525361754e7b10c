//! Durable runs: checkpoints after each step, a journal of tool calls, and resuming.
//!
//! A run given a [`Checkpointer`] (in [`RunRequest`](crate::RunRequest)) saves its state after
//! every model turn and after every round of tool calls, and journals each tool call when it
//! starts and when it ends. A process that dies mid-run loses nothing: another process passes
//! the last [`Checkpoint`] (with the journal entries written since) as
//! [`RunRequest::resume`](crate::RunRequest::resume), and the run goes on from there. A tool
//! call whose result is in the journal is not executed again: its result is replayed. A call
//! that started but has no result is run again only if its tool is idempotent; otherwise
//! [`InterruptedCalls`] decides.

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};

use crate::agent::ToolCallRecord;
use crate::message::{Message, Usage};

/// A run's state, saved after each step.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The conversation so far (system prompt, history, task, turns).
    pub messages: Vec<Message>,
    /// Model turns used.
    pub iterations: u32,
    /// Tokens used.
    pub usage: Usage,
    /// Tool calls made so far.
    pub tool_calls: Vec<ToolCallRecord>,
    /// Journal entries of tool calls whose results are not yet in `messages`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub journal: Vec<JournalEntry>,
}

/// A borrowed view of a run's state, handed to [`Checkpointer::checkpoint`]; serializes to
/// the same JSON as [`Checkpoint`].
#[derive(Debug, Clone, Copy, Serialize)]
pub struct CheckpointRef<'a> {
    /// The conversation so far.
    pub messages: &'a [Message],
    /// Model turns used.
    pub iterations: u32,
    /// Tokens used.
    pub usage: Usage,
    /// Tool calls made so far.
    pub tool_calls: &'a [ToolCallRecord],
}

impl CheckpointRef<'_> {
    /// An owned copy.
    pub fn to_owned(&self) -> Checkpoint {
        Checkpoint {
            messages: self.messages.to_vec(),
            iterations: self.iterations,
            usage: self.usage,
            tool_calls: self.tool_calls.to_vec(),
            journal: Vec::new(),
        }
    }
}

/// One tool call's journal entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalEntry {
    /// The model's id of the call.
    pub call_id: String,
    /// The tool.
    pub tool: String,
    /// How far the call got.
    pub state: JournalState,
}

/// How far a journaled tool call got.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum JournalState {
    /// The call started; its effects may have happened.
    Started,
    /// The call ended; this is what the model saw.
    Finished {
        /// The result or error text.
        content: String,
        /// Whether it is an error.
        is_error: bool,
    },
}

/// Writing a checkpoint or a journal entry failed; the run fails with a retryable error so
/// that it is tried again from the last good checkpoint.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct CheckpointError(pub String);

/// Where a durable run saves its state (a task store, in the cluster).
pub trait Checkpointer: Send + Sync + 'static {
    /// Saves the run's state after a step. Entries journaled before it are covered by it.
    ///
    /// # Errors
    /// A [`CheckpointError`]; the run then fails (retryably).
    fn checkpoint<'a>(
        &'a self,
        run_id: &'a str,
        state: CheckpointRef<'a>,
    ) -> BoxFuture<'a, Result<(), CheckpointError>>;

    /// Records that a tool call started or finished.
    ///
    /// # Errors
    /// A [`CheckpointError`]; the run then fails (retryably) without running the call.
    fn journal<'a>(
        &'a self,
        run_id: &'a str,
        entry: &'a JournalEntry,
    ) -> BoxFuture<'a, Result<(), CheckpointError>>;
}

// Compile-time check that the trait stays object safe.
const _: Option<&dyn Checkpointer> = None;

/// What to do, on resuming, with a call of a non-idempotent tool that started before the
/// crash and has no journaled result (its effects may or may not have happened).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InterruptedCalls {
    /// Fail the run with an error naming the call (the default).
    #[default]
    Fail,
    /// Ask the approver whether to run it again; without an approver, fail.
    Ask,
}
