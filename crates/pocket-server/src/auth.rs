//! Bearer-key authentication with a constant-time comparison. Keys are never logged.

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::Shared;
use crate::error::ApiError;

/// The accepted keys. `Debug` shows only how many there are.
pub(crate) struct Keys(Vec<Vec<u8>>);

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Keys({} redacted)", self.0.len())
    }
}

impl Keys {
    pub(crate) fn new(keys: Vec<String>) -> Self {
        Self(keys.into_iter().map(String::into_bytes).collect())
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `candidate` is one of the keys. Compares against every key, each in time
    /// independent of where the bytes differ.
    pub(crate) fn accepts(&self, candidate: &[u8]) -> bool {
        self.0
            .iter()
            .fold(false, |found, key| found | constant_time_eq(key, candidate))
    }
}

/// Equality whose running time depends only on the lengths, not on the contents.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// Refuses requests without a known key (when keys are configured).
pub(crate) async fn require_key(State(state): State<Shared>, req: Request, next: Next) -> Response {
    if state.keys.is_empty() {
        return next.run(req).await;
    }
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
        .map(<[u8]>::trim_ascii);
    match presented {
        Some(key) if state.keys.accepts(key) => next.run(req).await,
        _ => ApiError::Unauthorized.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_eq_compares_contents_and_lengths() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(constant_time_eq(b"", b""));
    }

    #[test]
    fn keys_accept_any_configured_key_and_hide_them_in_debug() {
        let keys = Keys::new(vec!["one".into(), "two".into()]);
        assert!(keys.accepts(b"two"));
        assert!(!keys.accepts(b"three"));
        assert_eq!(format!("{keys:?}"), "Keys(2 redacted)");
    }
}
