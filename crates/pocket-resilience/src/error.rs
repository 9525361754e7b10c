//! The errors this crate adds to the core's.

use std::sync::Arc;
use std::time::Duration;

use pocket_agent::ModelError;

/// Every route of a call was open or rate-limited until after the call's deadline, so the
/// call did not wait. It reaches the caller as the source of a [`ModelError::Other`] whose
/// message names the deadline (so it classifies as a retryable timeout); find it with
/// [`DeadlineWouldPass::find`].
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error(
    "{key} is available in {:.1}s; the deadline is in {:.1}s",
    .available_in.as_secs_f64(),
    .deadline_in.as_secs_f64()
)]
pub struct DeadlineWouldPass {
    /// The route that becomes available first.
    pub key: Arc<str>,
    /// When it becomes available (next probe or end of its Retry-After).
    pub available_in: Duration,
    /// How much time the call had left.
    pub deadline_in: Duration,
}

impl DeadlineWouldPass {
    /// This error as the model error a layer returns.
    pub fn into_model_error(self) -> ModelError {
        ModelError::Other {
            message: "every route is unavailable until after the call's deadline".into(),
            source: Some(Box::new(self)),
        }
    }

    /// The `DeadlineWouldPass` behind a model error, if that is what it is.
    pub fn find(error: &ModelError) -> Option<&Self> {
        match error {
            ModelError::Other {
                source: Some(source),
                ..
            } => source.downcast_ref(),
            _ => None,
        }
    }
}
