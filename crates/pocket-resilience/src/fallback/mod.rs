//! Fallback: a chain of model routes tried in order, and waiting instead of failing when all
//! of them are unavailable.
//!
//! A route is usually `Retry(CircuitBreaker(provider))`. A call goes to the first route that
//! is not known to be unavailable. It falls through to the next route on a retryable error
//! (after the route's own retries), an open circuit, or a context-length error (the next model
//! may have a larger window); it stops at once on anything else (auth, an invalid request, a
//! cancelled call), because another model would fail the same way or should not see the data.
//!
//! A route that answered with an open circuit or a Retry-After is held, for every call through
//! this fallback, until its probe time or the end of its Retry-After (the routes' retry layers
//! do not wait for these themselves when there is more than one route). When every route is
//! held, the call waits for the earliest of them, bounded by its deadline; when that would
//! pass the deadline it fails at once with [`DeadlineWouldPass`].
//!
//! The fallback opens the call's scope: `max_attempts` bounds the calls made across all
//! routes and hops, and `max_elapsed` (or the request's deadline) bounds the whole call.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pocket_agent::{
    BoxModel, Classify, Completion, CompletionRequest, CompletionStream, ErrorKind, Model,
    ModelError,
};
use tokio::time::Instant;

use crate::error::DeadlineWouldPass;
use crate::event::ResilienceEvent;
use crate::hub::{Component, Emitter, ResilienceHub, lock};
use crate::metrics::bump;
use crate::scope::{CallScope, in_scope, later};

/// Bounds of one call through a [`Fallback`].
#[derive(Debug, Clone, PartialEq)]
pub struct FallbackPolicy {
    /// Calls made at most for one model call, across all routes and retries. Default: 6.
    pub max_attempts: u32,
    /// Time after which no new attempt or wait starts. Default: 60 s.
    pub max_elapsed: Duration,
}

impl Default for FallbackPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 6,
            max_elapsed: Duration::from_secs(60),
        }
    }
}

/// A [`Model`] over a chain of routes; see the [module docs](self). Its name is the primary
/// route's.
#[derive(Debug)]
pub struct Fallback {
    routes: Vec<Route>,
    policy: FallbackPolicy,
    emitter: Arc<Emitter>,
}

#[derive(Debug)]
struct Route {
    model: BoxModel,
    key: Arc<str>,
    held_until: Mutex<Option<Instant>>,
}

impl Route {
    fn held(&self, now: Instant) -> Option<Instant> {
        lock(&self.held_until).filter(|until| *until > now)
    }

    fn hold(&self, until: Instant) {
        let mut held = lock(&self.held_until);
        if held.is_none_or(|h| h < until) {
            *held = Some(until);
        }
    }
}

impl Fallback {
    /// A chain that tries `primary`, then each of `fallbacks` in order.
    pub fn new(
        primary: BoxModel,
        fallbacks: impl IntoIterator<Item = BoxModel>,
        policy: FallbackPolicy,
        hub: &ResilienceHub,
    ) -> Self {
        let routes: Vec<Route> = std::iter::once(primary)
            .chain(fallbacks)
            .map(|model| Route {
                key: Component::Model.key(model.name()),
                model,
                held_until: Mutex::new(None),
            })
            .collect();
        let then = routes[1..]
            .iter()
            .map(|r| Arc::from(r.model.name()))
            .collect();
        hub.note_fallbacks(routes[0].model.name(), then);
        Self {
            routes,
            policy,
            emitter: hub.emitter().clone(),
        }
    }

    /// The routes' names, in order.
    pub fn routes(&self) -> impl Iterator<Item = &str> {
        self.routes.iter().map(|r| r.model.name())
    }

    async fn route<'a, T, F, Fut>(
        &'a self,
        request: &'a CompletionRequest,
        op: F,
    ) -> Result<T, ModelError>
    where
        F: Fn(&'a BoxModel) -> Fut,
        Fut: Future<Output = Result<T, ModelError>>,
    {
        let make = || {
            CallScope::new(
                self.policy.max_attempts,
                self.policy.max_elapsed,
                request.deadline,
            )
        };
        in_scope(make, |scope| async move { self.rounds(&scope, op).await }).await
    }

    async fn rounds<'a, T, F, Fut>(&'a self, scope: &CallScope, op: F) -> Result<T, ModelError>
    where
        F: Fn(&'a BoxModel) -> Fut,
        Fut: Future<Output = Result<T, ModelError>>,
    {
        let mut last: Option<ModelError> = None;
        loop {
            let mut held: Vec<(usize, Instant)> = Vec::new();
            // The route the call last left, and why.
            let mut left: Option<(usize, ErrorKind)> = None;
            for (i, route) in self.routes.iter().enumerate() {
                let now = Instant::now();
                if let Some(until) = route.held(now) {
                    held.push((i, until));
                    left = Some((i, ErrorKind::Resource));
                    continue;
                }
                if scope.attempts_left() == 0 {
                    break;
                }
                if let Some((from, kind)) = left {
                    self.fell_through(from, i, kind);
                }
                // With other routes, the fallback does all waiting, so it can wait for the
                // earliest route rather than for this one.
                scope.set_routed(self.routes.len() > 1);
                let before = scope.attempts();
                let error = match op(&route.model).await {
                    Ok(value) => return Ok(value),
                    Err(error) => error,
                };
                let open = matches!(error, ModelError::CircuitOpen { .. });
                if !open && scope.attempts() == before {
                    // A route without a retry layer: its call is an attempt all the same.
                    scope.count_attempt();
                }
                let class = error.classify();
                let hold = match &error {
                    ModelError::CircuitOpen { retry_in, .. } => Some(*retry_in),
                    _ => class.retry_after,
                };
                if let Some(wait) = hold {
                    let until = later(Instant::now(), wait);
                    route.hold(until);
                    held.push((i, until));
                } else if !(class.retryable || matches!(error, ModelError::ContextLength { .. })) {
                    return Err(error);
                }
                left = Some((i, class.kind));
                last = Some(error);
            }
            let earliest = held.iter().min_by_key(|(_, until)| *until).copied();
            let Some((i, until)) = earliest.filter(|_| scope.attempts_left() > 0) else {
                return Err(last
                    .unwrap_or_else(|| ModelError::other("no attempt left for this model call")));
            };
            let now = Instant::now();
            let wait = until.saturating_duration_since(now);
            if until > scope.deadline() {
                return Err(DeadlineWouldPass {
                    key: self.routes[i].key.clone(),
                    available_in: wait,
                    deadline_in: scope.deadline().saturating_duration_since(now),
                }
                .into_model_error());
            }
            tracing::info!(
                wait_ms = wait.as_millis() as u64,
                "every route is unavailable; waiting for the earliest"
            );
            self.emitter.count(|c| c.waits += 1);
            self.emitter.emit(|| ResilienceEvent::WaitingForCoolDown {
                keys: held
                    .iter()
                    .map(|(i, _)| self.routes[*i].key.clone())
                    .collect(),
                wait,
            });
            tokio::time::sleep_until(until).await;
        }
    }

    fn fell_through(&self, from: usize, to: usize, kind: ErrorKind) {
        let (from, to) = (&self.routes[from].key, &self.routes[to].key);
        tracing::info!(%from, %to, kind = kind.as_str(), "falling back");
        self.emitter.count(|c| bump(&mut c.fallbacks, from));
        self.emitter.emit(|| ResilienceEvent::FallbackTaken {
            from: from.clone(),
            to: to.clone(),
            kind,
        });
    }
}

impl Model for Fallback {
    fn name(&self) -> &str {
        self.routes[0].model.name()
    }

    async fn complete(&self, request: &CompletionRequest) -> Result<Completion, ModelError> {
        self.route(request, |model| model.complete(request)).await
    }

    async fn stream(&self, request: &CompletionRequest) -> Result<CompletionStream, ModelError> {
        self.route(request, |model| model.stream(request)).await
    }
}
