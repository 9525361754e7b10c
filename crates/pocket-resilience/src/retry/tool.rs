//! [`RetryTool`]: retries of idempotent tools.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use pocket_agent::{Classify, DynTool, SharedTool, ToolContext, ToolError, ToolSpec};
use serde_json::Value;
use tokio::time::Instant;

use super::{Retrier, RetryPolicy};
use crate::hub::{Component, ResilienceHub};
use crate::scope::later;

/// A tool whose retryable failures are tried again, if its spec says it is idempotent; other
/// tools are called once, as they are. See the [module docs](super).
///
/// The agent's time limit of a tool call covers all attempts. An open circuit inside is
/// returned at once (the model sees it); a cancelled run stops the wait.
#[derive(Debug)]
pub struct RetryTool {
    inner: SharedTool,
    retrier: Retrier,
}

impl RetryTool {
    /// Wraps `tool`; its budget is the hub's for `tool:NAME` (made with `policy` if new).
    pub fn new(tool: SharedTool, policy: RetryPolicy, hub: &ResilienceHub) -> Self {
        let key = Component::Tool.key(&tool.spec().name);
        Self {
            retrier: Retrier::new(key, policy, hub),
            inner: tool,
        }
    }

    /// Wraps `tool` and returns it shared, as the agent builder takes it.
    pub fn shared(tool: SharedTool, policy: RetryPolicy, hub: &ResilienceHub) -> SharedTool {
        Arc::new(Self::new(tool, policy, hub))
    }

    async fn retry_loop(&self, args: Value, ctx: &ToolContext) -> Result<Value, ToolError> {
        let r = &self.retrier;
        r.budget.deposit();
        let deadline = later(Instant::now(), r.policy.max_elapsed);
        let mut tries = 0u32;
        loop {
            tries += 1;
            let error = match self.inner.call(args.clone(), ctx).await {
                Ok(value) => return Ok(value),
                Err(error) => error,
            };
            let class = error.classify();
            let open = matches!(error, ToolError::CircuitOpen { .. });
            if open || !class.retryable || tries >= r.policy.max_attempts {
                return Err(error);
            }
            let delay = class.retry_after.unwrap_or_else(|| r.backoff(tries));
            if later(Instant::now(), delay) > deadline || !r.schedule(tries, delay, class.kind) {
                return Err(error);
            }
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = ctx.cancel.cancelled() => return Err(ToolError::Cancelled),
            }
        }
    }
}

impl DynTool for RetryTool {
    fn spec(&self) -> &ToolSpec {
        self.inner.spec()
    }

    fn call<'a>(
        &'a self,
        args: Value,
        ctx: &'a ToolContext,
    ) -> BoxFuture<'a, Result<Value, ToolError>> {
        if !self.inner.spec().idempotent || self.retrier.policy.max_attempts <= 1 {
            return self.inner.call(args, ctx);
        }
        Box::pin(self.retry_loop(args, ctx))
    }
}
