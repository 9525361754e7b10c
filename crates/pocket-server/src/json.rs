//! A JSON body extractor whose rejections are [`ApiError`]s: malformed bodies get our JSON
//! error shape with a message naming the problem.

use axum::body::Bytes;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, StatusCode, header};
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// Like [`axum::Json`], rejecting with [`ApiError::BadRequest`] (bad JSON, wrong schema,
/// missing `Content-Type: application/json`) or [`ApiError::PayloadTooLarge`].
#[derive(Debug)]
pub(crate) struct Json<T>(pub(crate) T);

impl<T, S> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let limit = req
            .extensions()
            .get::<BodyLimit>()
            .map_or(crate::DEFAULT_BODY_LIMIT, |l| l.0);
        if !plain_json(req.headers()) {
            // Any other content type (`+json` types, parameters spelled otherwise, none at
            // all): axum decides, and names the problem when it refuses.
            return from_axum(axum::Json::from_request(req, state).await, limit);
        }
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|e| reject(&JsonRejection::from(e), limit))?;
        // The fast path parses without tracking where it is; only a body that fails is
        // parsed again by axum, whose error names the field (serde_path_to_error), so the
        // messages are the same as axum's and valid bodies skip the path bookkeeping.
        match serde_json::from_slice(&bytes) {
            Ok(value) => Ok(Self(value)),
            Err(_) => from_axum(axum::Json::from_bytes(&bytes), limit),
        }
    }
}

/// axum's extraction as ours: the value, or its rejection as an [`ApiError`].
fn from_axum<T>(
    result: Result<axum::Json<T>, JsonRejection>,
    limit: usize,
) -> Result<Json<T>, ApiError> {
    result
        .map(|axum::Json(value)| Json(value))
        .map_err(|rejection| reject(&rejection, limit))
}

/// Exactly `Content-Type: application/json` (any case): the common case, checked without
/// parsing the media type.
fn plain_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"application/json"))
}

/// The body limit in force, for the 413 message.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BodyLimit(pub(crate) usize);

fn reject(rejection: &JsonRejection, limit: usize) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError::PayloadTooLarge { limit };
    }
    let what = match rejection {
        JsonRejection::JsonDataError(_) => "the JSON body does not match the schema",
        JsonRejection::JsonSyntaxError(_) => "the body is not valid JSON",
        JsonRejection::MissingJsonContentType(_) => "expected `Content-Type: application/json`",
        _ => "the body could not be read",
    };
    // `body_text` names the field or position (serde's message).
    ApiError::BadRequest(format!("{what}: {}", rejection.body_text()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn with_type(value: Option<&'static str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some(v) = value {
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(v));
        }
        headers
    }

    #[test]
    fn only_exactly_application_json_takes_the_fast_path() {
        for fast in ["application/json", "Application/JSON"] {
            assert!(plain_json(&with_type(Some(fast))), "{fast}");
        }
        for other in [
            None,
            Some("application/json; charset=utf-8"),
            Some("application/vnd.api+json"),
            Some("application/jsonx"),
            Some("text/json"),
        ] {
            assert!(!plain_json(&with_type(other)), "{other:?}");
        }
    }
}
