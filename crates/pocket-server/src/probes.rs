//! Probes, metrics and reports.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::Shared;
use crate::error::ApiError;

/// Liveness: 200 while the process serves.
pub(crate) async fn healthz() -> axum::Json<Value> {
    axum::Json(json!({"status": "ok"}))
}

/// Readiness: the store answers `stats()` and the pool has an instance; 503 otherwise, and
/// while draining.
pub(crate) async fn readyz(State(state): State<Shared>) -> Response {
    let not_ready = |reason: String| {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({"status": "unavailable", "reason": reason})),
        )
            .into_response()
    };
    if let Err(e) = state.accepting() {
        return not_ready(e.to_string());
    }
    if let Err(e) = state.cluster.store().stats().await {
        return not_ready(format!("the task store does not answer: {e}"));
    }
    if state.cluster.pool().instances().is_empty() {
        return not_ready("no agent instance in the pool".into());
    }
    axum::Json(json!({"status": "ready"})).into_response()
}

/// Prometheus text exposition of the monitor's metrics (empty without a monitor).
pub(crate) async fn metrics(State(state): State<Shared>) -> Response {
    let body = state
        .monitor
        .as_ref()
        .map(|m| m.metrics().encode())
        .unwrap_or_default();
    ([(header::CONTENT_TYPE, pocket_monitor::CONTENT_TYPE)], body).into_response()
}

/// `{"monitor": ..., "resilience": ...}`; a part is `null` when not configured.
pub(crate) async fn health(State(state): State<Shared>) -> axum::Json<Value> {
    let monitor = state
        .monitor
        .as_ref()
        .and_then(|m| serde_json::to_value(m.health()).ok());
    let resilience = state
        .hub
        .as_ref()
        .and_then(|h| serde_json::to_value(h.health_report()).ok());
    axum::Json(json!({"monitor": monitor, "resilience": resilience}))
}

/// The cluster's system report.
pub(crate) async fn cluster(State(state): State<Shared>) -> Result<axum::Json<Value>, ApiError> {
    let report = state.cluster.report().await?;
    serde_json::to_value(&report)
        .map(axum::Json)
        .map_err(|e| ApiError::Internal(format!("encoding the cluster report: {e}")))
}
