//! A JSON body extractor whose rejections are [`ApiError`]s: malformed bodies get our JSON
//! error shape with a message naming the problem.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
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
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(reject(&rejection, limit)),
        }
    }
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
