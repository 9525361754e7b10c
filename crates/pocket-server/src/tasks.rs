//! `/v1/tasks`: submit, read, cancel, follow.

use std::convert::Infallible;
use std::time::{Duration, SystemTime};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::{Stream, StreamExt};
use pocket_cluster::{ClusterEvent, Following, NewTask, TaskId, TaskRecord};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::Shared;
use crate::error::ApiError;
use crate::json::Json;
use crate::watch::{self, Update};

/// The body of `POST /v1/tasks`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateTask {
    /// The task text (required, not blank).
    pub task: String,
    /// The agent; default: the server's default agent.
    #[serde(default)]
    pub agent: Option<String>,
    /// Higher runs first; default 0.
    #[serde(default)]
    pub priority: i32,
    /// Capabilities an instance must have.
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// A second submission with this key returns the first task (409 if its body differs).
    #[serde(default)]
    pub idempotency_key: Option<String>,
}

/// A task as `GET /v1/tasks/{id}` shows it. Timestamps are RFC 3339 in UTC.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskView {
    /// Id.
    pub id: String,
    /// `queued`, `running`, `waiting_approval`, `succeeded`, `failed` or `cancelled`.
    pub status: String,
    /// The run's output once succeeded (`answer`, `iterations`, `tool_calls`, `usage`, ...).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub result: Option<Value>,
    /// The last error.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub error: Option<String>,
    /// Attempts started so far.
    pub attempts: u32,
    /// When it was submitted.
    pub created_at: String,
    /// When it last changed.
    pub updated_at: String,
    /// Its agent.
    pub agent: String,
    /// Its priority.
    pub priority: i32,
}

impl From<&TaskRecord> for TaskView {
    fn from(r: &TaskRecord) -> Self {
        Self {
            id: r.id.0.clone(),
            status: r.status.as_str().to_owned(),
            result: r.result.clone(),
            error: r.error.clone(),
            attempts: r.attempts,
            created_at: rfc3339(r.created_at),
            updated_at: rfc3339(r.updated_at),
            agent: r.agent.clone(),
            priority: r.priority,
        }
    }
}

/// RFC 3339 in UTC with exactly three fractional digits, so the strings sort by time.
pub(crate) fn rfc3339(t: SystemTime) -> String {
    let t = time::OffsetDateTime::from(t);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

pub(crate) async fn create(
    State(state): State<Shared>,
    Json(body): Json<CreateTask>,
) -> Result<Response, ApiError> {
    state.accepting()?;
    if body.task.trim().is_empty() {
        return Err(ApiError::BadRequest("`task` must not be blank".into()));
    }
    let agent = body
        .agent
        .clone()
        .unwrap_or_else(|| state.default_agent.clone());
    let mut new = NewTask::new(agent, body.task.clone());
    new.priority = body.priority;
    new.capabilities = body.capabilities.clone();
    new.idempotency_key = body.idempotency_key.clone();
    let enqueued = state.cluster.submit(new.clone()).await?;
    if !enqueued.created {
        let existing = state
            .cluster
            .store()
            .get(&enqueued.id)
            .await?
            .ok_or_else(|| ApiError::Internal("the existing task vanished".into()))?;
        let same = existing.agent == new.agent
            && existing.task == new.task
            && existing.priority == new.priority
            && existing.capabilities == new.capabilities;
        if !same {
            return Err(ApiError::Conflict(
                "`idempotency_key` was used before with a different task".into(),
            ));
        }
    }
    tracing::debug!(id = %enqueued.id, created = enqueued.created, "task submitted");
    Ok((StatusCode::ACCEPTED, axum::Json(json!({"id": enqueued.id}))).into_response())
}

async fn record(state: &Shared, id: &TaskId) -> Result<TaskRecord, ApiError> {
    state
        .cluster
        .store()
        .get(id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no task `{id}`")))
}

pub(crate) async fn get(
    State(state): State<Shared>,
    Path(id): Path<String>,
) -> Result<axum::Json<TaskView>, ApiError> {
    let record = record(&state, &TaskId(id)).await?;
    Ok(axum::Json(TaskView::from(&record)))
}

pub(crate) async fn cancel(
    State(state): State<Shared>,
    Path(id): Path<String>,
) -> Result<axum::Json<TaskView>, ApiError> {
    let id = TaskId(id);
    if !state.cluster.cancel(&id).await? {
        let record = record(&state, &id).await?;
        return Err(ApiError::Conflict(format!(
            "task `{id}` already finished ({})",
            record.status
        )));
    }
    let record = record(&state, &id).await?;
    Ok(axum::Json(TaskView::from(&record)))
}

/// SSE: one event per cluster event about the task (`event:` its type, `data:` its JSON),
/// and one per step of its run on this worker (`event:` the step's type, `data:` the
/// agent's event), then `end` with the task's final view. A client that falls behind
/// skips events and gets `lagged` (`{"skipped": N}`) instead.
pub(crate) async fn events(
    State(state): State<Shared>,
    Path(id): Path<String>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let id = TaskId(id);
    // Registered before the task is read: nothing in between is missed. Its run's steps
    // are forwarded while this stream lives.
    let follower = state.cluster.follow_task(&id, Following::Steps);
    record(&state, &id).await?; // 404 before the stream starts
    let stream = watch::follow(&state, follower)
    .map(move |item| {
        Ok(match item {
            Ok(Update::Event(ClusterEvent::Agent { event, .. })) => Event::default()
                .event(event.kind.name())
                .json_data(&*event)
                .unwrap_or_else(|_| Event::default().event("error")),
            Ok(Update::Lagged(skipped)) => Event::default()
                .event("lagged")
                .data(json!({"skipped": skipped, "note": "this client fell behind; the skipped events are gone"}).to_string()),
            Ok(Update::Event(e)) => Event::default()
                .event(watch::event_name(&e))
                .json_data(&e)
                .unwrap_or_else(|_| Event::default().event("error")),
            Ok(Update::End(record)) => Event::default()
                .event("end")
                .json_data(TaskView::from(&*record))
                .unwrap_or_else(|_| Event::default().event("error")),
            Err(e) => Event::default()
                .event("error")
                .data(json!({"error": {"type": e.kind(), "message": e.to_string()}}).to_string()),
        })
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::rfc3339;

    #[test]
    fn rfc3339_always_has_milliseconds_so_it_sorts() {
        let whole = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(rfc3339(whole), "2023-11-14T22:13:20.000Z");
        let later = whole + Duration::from_millis(7);
        assert_eq!(rfc3339(later), "2023-11-14T22:13:20.007Z");
        assert!(rfc3339(later) > rfc3339(whole));
    }
}
