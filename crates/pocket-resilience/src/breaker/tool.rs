//! [`BreakerTool`]: a breaker in front of a tool.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use pocket_agent::{Classify, DynTool, SharedTool, ToolContext, ToolError, ToolSpec};
use serde_json::Value;

use super::{Breaker, BreakerPolicy, Outcome};
use crate::hub::{Component, ResilienceHub};

/// A tool behind a circuit breaker keyed `tool:NAME`.
///
/// While the breaker is open, calls fail at once with [`ToolError::CircuitOpen`]; the model
/// sees that as the call's result. What counts: a retryable error (a transient failure, a
/// timeout) or a panic is a failure; a result is a success; errors that are about the call
/// rather than the tool (invalid arguments, denied, a non-retryable failure) and cancelled
/// calls count as nothing.
#[derive(Debug)]
pub struct BreakerTool {
    inner: SharedTool,
    breaker: Arc<Breaker>,
}

impl BreakerTool {
    /// Wraps `tool` with the hub's breaker for its name (made with `policy` if new).
    pub fn new(tool: SharedTool, policy: &BreakerPolicy, hub: &ResilienceHub) -> Self {
        let breaker = hub.breaker_or_insert(Component::Tool, &tool.spec().name, policy);
        Self {
            inner: tool,
            breaker,
        }
    }

    /// Wraps `tool` and returns it shared, as the agent builder takes it.
    pub fn shared(tool: SharedTool, policy: &BreakerPolicy, hub: &ResilienceHub) -> SharedTool {
        Arc::new(Self::new(tool, policy, hub))
    }

    /// The breaker.
    pub fn breaker(&self) -> &Arc<Breaker> {
        &self.breaker
    }
}

impl DynTool for BreakerTool {
    fn spec(&self) -> &ToolSpec {
        self.inner.spec()
    }

    fn call<'a>(
        &'a self,
        args: Value,
        ctx: &'a ToolContext,
    ) -> BoxFuture<'a, Result<Value, ToolError>> {
        Box::pin(async move {
            let permit = self
                .breaker
                .try_acquire()
                .map_err(|r| ToolError::CircuitOpen {
                    key: self.breaker.name().to_owned(),
                    retry_in: r.retry_in,
                })?;
            let result = self.inner.call(args, ctx).await;
            permit.record(tool_outcome(&result));
            result
        })
    }
}

/// How a tool call counts for the tool's breaker.
pub(crate) fn tool_outcome(result: &Result<Value, ToolError>) -> Outcome {
    match result {
        Ok(_) => Outcome::Success,
        Err(ToolError::Panicked { .. }) => Outcome::Failure,
        Err(ToolError::Cancelled | ToolError::CircuitOpen { .. }) => Outcome::Ignored,
        Err(e) if e.is_retryable() => Outcome::Failure,
        Err(_) => Outcome::Ignored,
    }
}
