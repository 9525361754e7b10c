//! [`Retry`]: the retry layer of a model endpoint.

use std::future::Future;
use std::sync::Arc;

use pocket_agent::{Classify, Completion, CompletionRequest, CompletionStream, Model, ModelError};
use tokio::time::Instant;

use super::{Retrier, RetryPolicy};
use crate::error::DeadlineWouldPass;
use crate::event::ResilienceEvent;
use crate::hub::{Component, ResilienceHub};
use crate::scope::{CallScope, in_scope, later};

/// A [`Model`] whose retryable failures are tried again; see the [module docs](super).
///
/// The key (`model:NAME`, from the endpoint's name) names its retry budget, events and
/// counters. On a call path it is the one owner of retries: a `Retry` inside another finds
/// the outer one's scope and makes single calls.
///
/// - An open circuit inside (a [`CircuitBreaker`](crate::CircuitBreaker)) is not an attempt:
///   alone, the layer waits for the probe time if the deadline allows (else it fails with
///   [`DeadlineWouldPass`]); under a [`Fallback`](crate::Fallback) it returns at once so the
///   fallback can route elsewhere.
/// - A Retry-After is waited for exactly; under a [`Fallback`](crate::Fallback) with other
///   routes the error is returned at once instead, and the fallback holds this route and waits
///   only if every route is unavailable.
#[derive(Debug)]
pub struct Retry<M> {
    inner: M,
    retrier: Retrier,
}

impl<M: Model> Retry<M> {
    /// Wraps `inner`; its budget is the hub's for `model:NAME` (made with `policy` if new).
    pub fn new(inner: M, policy: RetryPolicy, hub: &ResilienceHub) -> Self {
        let key = Component::Model.key(inner.name());
        Self {
            retrier: Retrier::new(key, policy, hub),
            inner,
        }
    }

    /// The policy.
    pub fn policy(&self) -> &RetryPolicy {
        &self.retrier.policy
    }

    async fn retrying<'a, T, F, Fut>(
        &'a self,
        request: &'a CompletionRequest,
        op: F,
    ) -> Result<T, ModelError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, ModelError>>,
    {
        let policy = &self.retrier.policy;
        let make = || CallScope::new(policy.max_attempts, policy.max_elapsed, request.deadline);
        in_scope(make, |scope| async move {
            if !scope.claim_retries() {
                // An outer layer owns retries (and counts attempts) on this path.
                return op().await;
            }
            let _owner = Owner(&scope);
            self.retry_loop(&scope, op).await
        })
        .await
    }

    async fn retry_loop<T, F, Fut>(&self, scope: &CallScope, op: F) -> Result<T, ModelError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, ModelError>>,
    {
        let r = &self.retrier;
        r.budget.deposit();
        let mut tries = 0u32;
        loop {
            scope.count_attempt();
            tries += 1;
            let error = match op().await {
                Ok(value) => return Ok(value),
                Err(error) => error,
            };
            let now = Instant::now();
            if let ModelError::CircuitOpen { retry_in, .. } = &error {
                // No call was made: not an attempt, nothing to pay from the budget.
                scope.uncount_attempt();
                tries -= 1;
                if scope.routed() {
                    return Err(error);
                }
                let wait = *retry_in;
                if later(now, wait) > scope.deadline() {
                    return Err(DeadlineWouldPass {
                        key: r.key.clone(),
                        available_in: wait,
                        deadline_in: scope.deadline().saturating_duration_since(now),
                    }
                    .into_model_error());
                }
                tracing::info!(key = %r.key, wait_ms = wait.as_millis() as u64, "circuit open; waiting for its probe time");
                r.emitter.count(|c| c.waits += 1);
                r.emitter.emit(|| ResilienceEvent::WaitingForCoolDown {
                    keys: vec![r.key.clone()],
                    wait,
                });
                tokio::time::sleep(wait).await;
                continue;
            }
            let class = error.classify();
            if !class.retryable || tries >= r.policy.max_attempts || scope.attempts_left() == 0 {
                return Err(error);
            }
            if class.retry_after.is_some() && scope.has_alternatives() {
                // Rate-limited here, another route is free: let the fallback take it.
                return Err(error);
            }
            let delay = class.retry_after.unwrap_or_else(|| r.backoff(tries));
            if later(now, delay) > scope.deadline() {
                tracing::debug!(key = %r.key, "the next retry would start after the deadline");
                return Err(error);
            }
            if !r.schedule(scope.attempts(), delay, class.kind) {
                return Err(error);
            }
            tokio::time::sleep(delay).await;
        }
    }
}

/// Gives the path's retry loop back when the owning layer's call ends.
struct Owner<'a>(&'a Arc<CallScope>);

impl Drop for Owner<'_> {
    fn drop(&mut self) {
        self.0.release_retries();
    }
}

impl<M: Model> Model for Retry<M> {
    fn name(&self) -> &str {
        self.inner.name()
    }

    async fn complete(&self, request: &CompletionRequest) -> Result<Completion, ModelError> {
        self.retrying(request, || self.inner.complete(request))
            .await
    }

    async fn stream(&self, request: &CompletionRequest) -> Result<CompletionStream, ModelError> {
        self.retrying(request, || self.inner.stream(request)).await
    }
}
