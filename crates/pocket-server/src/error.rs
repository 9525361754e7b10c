//! The one error type of the API and its mapping to HTTP status and JSON body.

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use pocket_cluster::StoreError;
use serde_json::json;

/// Why a request failed; maps to a status and `{"error": {"type", "message"}}`.
///
/// | variant | status | `type` |
/// |---|---|---|
/// | `BadRequest` | 400 | `invalid_request` |
/// | `Unauthorized` | 401 | `unauthorized` |
/// | `NotFound` | 404 | `not_found` |
/// | `Conflict` | 409 | `conflict` |
/// | `PayloadTooLarge` | 413 | `payload_too_large` |
/// | `QueueFull` | 429 (with `Retry-After`) | `queue_full` |
/// | `Busy` | 429 (with `Retry-After`) | `busy` |
/// | `TaskFailed` | 500 | `task_failed` |
/// | `Internal` | 500 | `internal` |
/// | `Unavailable` | 503 | `unavailable` |
/// | `Timeout` | 504 | `timeout` |
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// The request is malformed: bad JSON, a missing or wrong field.
    #[error("{0}")]
    BadRequest(String),
    /// No `Authorization: Bearer KEY` with a known key.
    #[error("a valid `Authorization: Bearer KEY` header is required")]
    Unauthorized,
    /// The thing named does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The request conflicts with the current state.
    #[error("{0}")]
    Conflict(String),
    /// The body is larger than the limit.
    #[error("the request body is larger than {limit} bytes")]
    PayloadTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The queue is full; try again after the hint.
    #[error("the queue is full; retry after {} s", retry_after.as_secs().max(1))]
    QueueFull {
        /// When to try again.
        retry_after: Duration,
    },
    /// Too many synchronous requests (chat completions) in flight; try again after the hint.
    #[error("{limit} chat completions are in flight already; retry after {} s", retry_after.as_secs().max(1))]
    Busy {
        /// The server's in-flight limit.
        limit: usize,
        /// When to try again.
        retry_after: Duration,
    },
    /// The task behind a synchronous request (chat completion) failed.
    #[error("the task failed: {0}")]
    TaskFailed(String),
    /// Something on our side failed (the store, say).
    #[error("{0}")]
    Internal(String),
    /// The server is shutting down or not ready.
    #[error("{0}")]
    Unavailable(String),
    /// The request took longer than the server's time limit.
    #[error("the request took longer than {} s", .0.as_secs_f64())]
    Timeout(Duration),
}

impl ApiError {
    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::QueueFull { .. } | Self::Busy { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::TaskFailed(_) | Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// The `type` in the JSON body.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::BadRequest(_) => "invalid_request",
            Self::Unauthorized => "unauthorized",
            Self::NotFound(_) => "not_found",
            Self::Conflict(_) => "conflict",
            Self::PayloadTooLarge { .. } => "payload_too_large",
            Self::QueueFull { .. } => "queue_full",
            Self::Busy { .. } => "busy",
            Self::TaskFailed(_) => "task_failed",
            Self::Internal(_) => "internal",
            Self::Unavailable(_) => "unavailable",
            Self::Timeout(_) => "timeout",
        }
    }

    /// The `Retry-After` hint, for [`QueueFull`](Self::QueueFull) and [`Busy`](Self::Busy).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::QueueFull { retry_after } | Self::Busy { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }

    /// The response, with OpenAI's extra `param` and `code` fields when `openai`.
    pub(crate) fn to_response(&self, openai: bool) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!(status = status.as_u16(), error = %self, "request failed");
        } else {
            tracing::debug!(status = status.as_u16(), error = %self, "request refused");
        }
        let body = if openai {
            json!({"error": {"type": self.kind(), "message": self.to_string(), "param": null, "code": self.kind()}})
        } else {
            json!({"error": {"type": self.kind(), "message": self.to_string()}})
        };
        let mut response = (status, axum::Json(body)).into_response();
        if let Some(after) = self.retry_after() {
            let secs = after.as_secs_f64().ceil().max(1.0);
            if let Ok(value) = HeaderValue::from_str(&format!("{secs:.0}")) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
        }
        response
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.to_response(false)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(id) => Self::NotFound(format!("no task `{id}`")),
            StoreError::QueueFull { retry_after, .. } => Self::QueueFull { retry_after },
            StoreError::Invalid(message) => Self::BadRequest(message),
            other => Self::Internal(other.to_string()),
        }
    }
}

/// [`ApiError`] in OpenAI's error shape (`{"error": {message, type, param, code}}`), for the
/// OpenAI-compatible routes.
#[derive(Debug)]
pub struct OpenAiError(pub ApiError);

impl From<ApiError> for OpenAiError {
    fn from(e: ApiError) -> Self {
        Self(e)
    }
}

impl From<StoreError> for OpenAiError {
    fn from(e: StoreError) -> Self {
        Self(e.into())
    }
}

impl IntoResponse for OpenAiError {
    fn into_response(self) -> Response {
        self.0.to_response(true)
    }
}
