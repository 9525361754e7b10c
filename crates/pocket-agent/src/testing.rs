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
