//! Fault injection for demos and drills: an [`Outage`] of a model for a while.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use pocket_agent::{Completion, CompletionRequest, CompletionStream, Model, ModelError};
use tokio::time::Instant;

use crate::scope::later;

/// A [`Model`] that is down (HTTP 503) from `after` past its creation for `lasting`, and
/// passes calls to `inner` otherwise. Shows a breaker opening and closing and a fallback
/// taking over.
#[derive(Debug)]
pub struct Outage<M> {
    inner: M,
    starts: Instant,
    ends: Instant,
    refused: AtomicU64,
}

impl<M: Model> Outage<M> {
    /// `inner`, down from `after` for `lasting`, measured from now (on tokio's clock).
    pub fn new(inner: M, after: Duration, lasting: Duration) -> Self {
        let starts = later(Instant::now(), after);
        Self {
            inner,
            starts,
            ends: later(starts, lasting),
            refused: AtomicU64::new(0),
        }
    }

    /// Calls that arrived during the outage.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    fn down(&self) -> Option<ModelError> {
        let now = Instant::now();
        (now >= self.starts && now < self.ends).then(|| {
            self.refused.fetch_add(1, Ordering::Relaxed);
            ModelError::Server {
                status: 503,
                message: "injected outage".into(),
                retry_after: None,
            }
        })
    }
}

impl<M: Model> Model for Outage<M> {
    fn name(&self) -> &str {
        self.inner.name()
    }

    async fn complete(&self, request: &CompletionRequest) -> Result<Completion, ModelError> {
        match self.down() {
            Some(error) => Err(error),
            None => self.inner.complete(request).await,
        }
    }

    async fn stream(&self, request: &CompletionRequest) -> Result<CompletionStream, ModelError> {
        match self.down() {
            Some(error) => Err(error),
            None => self.inner.stream(request).await,
        }
    }
}
