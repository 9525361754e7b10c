//! Who answers when a protected agent cannot: another agent, or a function.

use std::error::Error as StdError;
use std::future::Future;

use futures_util::future::BoxFuture;
use pocket_agent::{Agent, ErrorKind, RunOutput, RunRequest, Usage};

type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// Why an executor was called.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cause {
    /// The kind of the failure that led here.
    pub kind: ErrorKind,
    /// The failure, in words.
    pub message: String,
}

/// Answers a task in place of a protected agent: its fallback executor or its degraded path.
pub trait Executor: Send + Sync + 'static {
    /// Runs the task; the request's run id is `ID-fallback` or `ID-degraded`.
    ///
    /// # Errors
    /// Any error; the protected agent then reports its own failure.
    fn execute(
        &self,
        request: RunRequest,
        cause: Cause,
    ) -> BoxFuture<'_, Result<RunOutput, BoxError>>;
}

/// Another agent answers (on another model, with fewer tools, ...).
impl Executor for Agent {
    fn execute(
        &self,
        request: RunRequest,
        _cause: Cause,
    ) -> BoxFuture<'_, Result<RunOutput, BoxError>> {
        Box::pin(async move { self.run_with(request).await.map_err(BoxError::from) })
    }
}

/// A function answers: `FnExecutor(|task, cause| async move { Ok("...".to_string()) })`.
/// Its answer becomes a run output with no iterations and no tool calls.
pub struct FnExecutor<F>(pub F);

impl<F> std::fmt::Debug for FnExecutor<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FnExecutor")
    }
}

impl<F, Fut> Executor for FnExecutor<F>
where
    F: Fn(String, Cause) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<String, BoxError>> + Send + 'static,
{
    fn execute(
        &self,
        request: RunRequest,
        cause: Cause,
    ) -> BoxFuture<'_, Result<RunOutput, BoxError>> {
        let run_id = request.run_id.unwrap_or_default();
        let answer = (self.0)(request.task, cause);
        Box::pin(async move {
            Ok(RunOutput {
                run_id,
                answer: answer.await?,
                iterations: 0,
                tool_calls: Vec::new(),
                usage: Usage::default(),
                duration_secs: 0.0,
                transcript: Vec::new(),
            })
        })
    }
}
