//! Test doubles for code built on the core (feature `test-utils`).

use std::collections::VecDeque;
use std::sync::Mutex;

use crate::error::ModelError;
use crate::message::{Completion, CompletionRequest, ToolCall};
use crate::model::Model;

/// One scripted answer of a [`ScriptedModel`].
pub type Step = Result<Completion, ModelError>;

/// A model that answers from a script, one step per call, and records every request.
///
/// When the script runs out it repeats the fallback (by default, the text `done`).
pub struct ScriptedModel {
    name: String,
    steps: Mutex<VecDeque<Step>>,
    fallback: Mutex<Box<dyn FnMut() -> Step + Send>>,
    requests: Mutex<Vec<CompletionRequest>>,
}

impl std::fmt::Debug for ScriptedModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScriptedModel")
            .field("calls", &self.calls())
            .finish_non_exhaustive()
    }
}

impl ScriptedModel {
    /// A model that answers with these steps in order.
    pub fn new(steps: impl IntoIterator<Item = Step>) -> Self {
        Self {
            name: "scripted".into(),
            steps: Mutex::new(steps.into_iter().collect()),
            fallback: Mutex::new(Box::new(|| Ok(Completion::text("done")))),
            requests: Mutex::new(Vec::new()),
        }
    }

    /// What to answer once the script is used up.
    #[must_use]
    pub fn then_always(self, fallback: impl FnMut() -> Step + Send + 'static) -> Self {
        *lock(&self.fallback) = Box::new(fallback);
        self
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<CompletionRequest> {
        lock(&self.requests).clone()
    }

    /// How many calls were made.
    pub fn calls(&self) -> usize {
        lock(&self.requests).len()
    }
}

impl Model for ScriptedModel {
    fn name(&self) -> &str {
        &self.name
    }

    async fn complete(&self, request: &CompletionRequest) -> Result<Completion, ModelError> {
        lock(&self.requests).push(request.clone());
        let step = lock(&self.steps).pop_front();
        step.unwrap_or_else(|| (lock(&self.fallback))())
    }
}

/// A tool call with this id, tool name and JSON arguments.
pub fn call(id: &str, name: &str, arguments: serde_json::Value) -> ToolCall {
    ToolCall {
        id: id.into(),
        name: name.into(),
        arguments,
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A [`Checkpointer`](crate::Checkpointer) in memory: keeps every checkpoint and the journal
/// entries written since the last one, as a task store would.
#[derive(Debug, Default)]
pub struct MemoryCheckpointer {
    state: Mutex<MemoryState>,
}

#[derive(Debug, Default)]
struct MemoryState {
    checkpoints: Vec<crate::Checkpoint>,
    journal: Vec<crate::JournalEntry>,
    fail: bool,
}

impl MemoryCheckpointer {
    /// How many checkpoints were written.
    pub fn checkpoints(&self) -> usize {
        lock(&self.state).checkpoints.len()
    }

    /// What a new process would resume from: the last checkpoint with the journal since.
    pub fn resume_point(&self) -> Option<crate::Checkpoint> {
        let state = lock(&self.state);
        let mut cp = state.checkpoints.last()?.clone();
        cp.journal = state.journal.clone();
        Some(cp)
    }

    /// Makes every later write fail.
    pub fn fail_from_now(&self) {
        lock(&self.state).fail = true;
    }
}

impl crate::Checkpointer for MemoryCheckpointer {
    fn checkpoint<'a>(
        &'a self,
        _run_id: &'a str,
        view: crate::CheckpointRef<'a>,
    ) -> futures_util::future::BoxFuture<'a, Result<(), crate::CheckpointError>> {
        let mut state = lock(&self.state);
        let result = if state.fail {
            Err(crate::CheckpointError("disk full".into()))
        } else {
            state.checkpoints.push(view.to_owned());
            state.journal.clear();
            Ok(())
        };
        Box::pin(std::future::ready(result))
    }

    fn journal<'a>(
        &'a self,
        _run_id: &'a str,
        entry: &'a crate::JournalEntry,
    ) -> futures_util::future::BoxFuture<'a, Result<(), crate::CheckpointError>> {
        let mut state = lock(&self.state);
        let result = if state.fail {
            Err(crate::CheckpointError("disk full".into()))
        } else {
            state.journal.push(entry.clone());
            Ok(())
        };
        Box::pin(std::future::ready(result))
    }
}
