//! The scope of one model call: what every layer on the call's path shares.
//!
//! The outermost resilience layer of a call path (a [`Fallback`](crate::Fallback), else a
//! [`Retry`](crate::Retry)) opens the scope; the layers inside find it in a task-local. It
//! holds the attempts made so far, counted across fallback hops, the call's deadline (the
//! request's deadline or the opener's `max_elapsed`, whichever comes first), and who owns
//! retries, so that a path has exactly one retry loop.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use tokio::time::Instant;

tokio::task_local! {
    static CALL: Arc<CallScope>;
}

#[derive(Debug)]
pub(crate) struct CallScope {
    deadline: Instant,
    max_attempts: u32,
    attempts: AtomicU32,
    /// A fallback routes this call: a route must not wait for its own cool-down.
    routed: AtomicBool,
    /// The route being called has an alternative after it.
    alternatives: AtomicBool,
    /// A retry loop already owns this call path.
    retry_owner: AtomicBool,
}

impl CallScope {
    pub(crate) fn new(max_attempts: u32, max_elapsed: Duration, deadline: Option<Instant>) -> Self {
        let own = later(Instant::now(), max_elapsed);
        Self {
            deadline: deadline.map_or(own, |d| d.min(own)),
            max_attempts: max_attempts.max(1),
            attempts: AtomicU32::new(0),
            routed: AtomicBool::new(false),
            alternatives: AtomicBool::new(false),
            retry_owner: AtomicBool::new(false),
        }
    }

    pub(crate) fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Attempts made so far on this call path.
    pub(crate) fn attempts(&self) -> u32 {
        self.attempts.load(Ordering::Relaxed)
    }

    pub(crate) fn attempts_left(&self) -> u32 {
        self.max_attempts.saturating_sub(self.attempts())
    }

    pub(crate) fn count_attempt(&self) {
        self.attempts.fetch_add(1, Ordering::Relaxed);
    }

    /// Takes back an attempt that never reached the provider (an open circuit).
    pub(crate) fn uncount_attempt(&self) {
        let _ = self
            .attempts
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
    }

    pub(crate) fn set_routed(&self, alternatives: bool) {
        self.routed.store(true, Ordering::Relaxed);
        self.alternatives.store(alternatives, Ordering::Relaxed);
    }

    pub(crate) fn routed(&self) -> bool {
        self.routed.load(Ordering::Relaxed)
    }

    pub(crate) fn has_alternatives(&self) -> bool {
        self.alternatives.load(Ordering::Relaxed)
    }

    /// Claims the retry loop of this path; `false` when an outer layer already owns it.
    pub(crate) fn claim_retries(&self) -> bool {
        !self.retry_owner.swap(true, Ordering::Relaxed)
    }

    pub(crate) fn release_retries(&self) {
        self.retry_owner.store(false, Ordering::Relaxed);
    }
}

/// `now + d`, or about 30 years from `now` when that does not fit (a huge Retry-After or
/// setting must not panic).
pub(crate) fn later(now: Instant, d: Duration) -> Instant {
    now.checked_add(d)
        .unwrap_or_else(|| now + Duration::from_secs(30 * 365 * 86_400))
}

/// Runs `f` in the current call's scope, or in a new one made by `make` when there is none.
pub(crate) async fn in_scope<F, Fut>(make: impl FnOnce() -> CallScope, f: F) -> Fut::Output
where
    F: FnOnce(Arc<CallScope>) -> Fut,
    Fut: Future,
{
    match CALL.try_with(Arc::clone) {
        Ok(scope) => f(scope).await,
        Err(_) => {
            let scope = Arc::new(make());
            CALL.scope(scope.clone(), f(scope)).await
        }
    }
}
