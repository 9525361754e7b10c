//! [`CircuitBreaker`]: a breaker in front of a model endpoint.

use std::sync::Arc;

use pocket_agent::{Classify, Completion, CompletionRequest, CompletionStream, Model, ModelError};

use super::{Breaker, BreakerPolicy, Outcome};
use crate::hub::{Component, ResilienceHub};

/// A [`Model`] behind a circuit breaker keyed `model:NAME` by the endpoint's name.
///
/// While the breaker is open, calls fail at once with [`ModelError::CircuitOpen`] (retryable,
/// with the time until the next probe as its Retry-After); the model is not called.
///
/// What counts: a retryable error (rate limit, 5xx, connection, timeout, malformed answer) is
/// a failure; any answer, a refusal included (auth, invalid request, context length), is a
/// success, because the endpoint is up; a cancelled call or an inner breaker's refusal
/// counts as nothing. Streams count by whether they opened.
#[derive(Debug)]
pub struct CircuitBreaker<M> {
    inner: M,
    breaker: Arc<Breaker>,
}

impl<M: Model> CircuitBreaker<M> {
    /// Wraps `inner` with the hub's breaker for its endpoint (made with `policy` if new).
    pub fn new(inner: M, policy: &BreakerPolicy, hub: &ResilienceHub) -> Self {
        let breaker = hub.breaker_or_insert(Component::Model, inner.name(), policy);
        Self { inner, breaker }
    }

    /// Wraps `inner` with a breaker of your own.
    pub fn with_breaker(inner: M, breaker: Arc<Breaker>) -> Self {
        Self { inner, breaker }
    }

    /// The breaker.
    pub fn breaker(&self) -> &Arc<Breaker> {
        &self.breaker
    }

    fn refused(&self, retry_in: std::time::Duration) -> ModelError {
        ModelError::CircuitOpen {
            key: self.breaker.name().to_owned(),
            retry_in,
        }
    }
}

impl<M: Model> Model for CircuitBreaker<M> {
    fn name(&self) -> &str {
        self.inner.name()
    }

    async fn complete(&self, request: &CompletionRequest) -> Result<Completion, ModelError> {
        let permit = self
            .breaker
            .try_acquire()
            .map_err(|r| self.refused(r.retry_in))?;
        let result = self.inner.complete(request).await;
        permit.record(model_outcome(&result));
        result
    }

    async fn stream(&self, request: &CompletionRequest) -> Result<CompletionStream, ModelError> {
        let permit = self
            .breaker
            .try_acquire()
            .map_err(|r| self.refused(r.retry_in))?;
        let result = self.inner.stream(request).await;
        permit.record(model_outcome(&result));
        result
    }
}

/// How a model call counts for its endpoint's breaker.
pub(crate) fn model_outcome<T>(result: &Result<T, ModelError>) -> Outcome {
    match result {
        Ok(_) => Outcome::Success,
        Err(ModelError::Cancelled | ModelError::CircuitOpen { .. }) => Outcome::Ignored,
        Err(e) if e.is_retryable() => Outcome::Failure,
        Err(_) => Outcome::Success,
    }
}
