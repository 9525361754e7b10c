//! The OpenAI-compatible endpoint: `POST /v1/chat/completions` and `GET /v1/models`.
//!
//! A completion is a cluster task for the agent `model` names: the last message (a user
//! message) is the task and the earlier ones go as `metadata.history`, so it is queued,
//! balanced, retried and resumed like any task. The handler follows the task to its end.
//! Streaming sends the role at once, then the answer's text as the agent's model streams it
//! (one content chunk per text delta of the run, when it runs on this worker with a
//! streaming agent), then the finish chunk, an optional usage chunk
//! (`stream_options.include_usage`) and `data: [DONE]`. What did not arrive as deltas (the
//! task ran on another worker, the agent does not stream, or this client fell behind and
//! skipped some) is sent as one chunk when the task ends, so the chunks always join up to
//! the answer. Text a model writes in a turn that also calls tools is streamed too.

use std::convert::Infallible;
use std::future::ready;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::{StreamExt, stream};
use pocket_agent::{EventKind, Message, RunRequest, Usage};
use pocket_cluster::{ClusterEvent, Following, NewTask, RunNow, TaskRecord, TaskStatus};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::OwnedSemaphorePermit;

use crate::Shared;
use crate::error::{ApiError, OpenAiError};
use crate::json::Json;
use crate::watch::{self, Update};

#[derive(Debug, Deserialize)]
pub(crate) struct ChatRequest {
    model: String,
    messages: Vec<ChatMessage>,
    #[serde(default)]
    stream: bool,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
}

#[derive(Debug, Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

#[derive(Debug, Deserialize)]
struct ChatMessage {
    role: String,
    #[serde(default)]
    content: Value,
}

/// A message's text: a string, or the `text` parts of an array.
fn text_of(content: &Value) -> Result<String, ApiError> {
    match content {
        Value::String(s) => Ok(s.clone()),
        Value::Null => Ok(String::new()),
        Value::Array(parts) => Ok(parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("")),
        _ => Err(ApiError::BadRequest(
            "`content` must be a string or an array of parts".into(),
        )),
    }
}

/// The task and its history.
fn split(messages: &[ChatMessage]) -> Result<(String, Vec<Message>), ApiError> {
    let Some((last, earlier)) = messages.split_last() else {
        return Err(ApiError::BadRequest("`messages` must not be empty".into()));
    };
    if last.role != "user" {
        return Err(ApiError::BadRequest(
            "the last message must have role `user`".into(),
        ));
    }
    let task = text_of(&last.content)?;
    let history = earlier
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let text = text_of(&m.content)?;
            match m.role.as_str() {
                "system" | "developer" => Ok(Message::system(text)),
                "user" => Ok(Message::user(text)),
                "assistant" => Ok(Message::assistant(text)),
                other => Err(ApiError::BadRequest(format!(
                    "messages[{i}]: role `{other}` is not supported"
                ))),
            }
        })
        .collect::<Result<_, _>>()?;
    Ok((task, history))
}

async fn agents(state: &Shared) -> Result<Vec<String>, ApiError> {
    let report = state.cluster.report().await?;
    Ok(report.scaling.iter().map(|s| s.agent.to_string()).collect())
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The answer and usage of a terminal task, or why it has none.
fn outcome(record: &TaskRecord) -> Result<(String, Usage), ApiError> {
    match record.status {
        TaskStatus::Succeeded => {
            let result = record.result.clone().unwrap_or(Value::Null);
            let answer = result
                .get("answer")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            let usage = result
                .get("usage")
                .cloned()
                .and_then(|u| serde_json::from_value(u).ok())
                .unwrap_or_default();
            Ok((answer, usage))
        }
        TaskStatus::Cancelled => Err(ApiError::TaskFailed("the task was cancelled".into())),
        _ => Err(ApiError::TaskFailed(
            record
                .error
                .clone()
                .unwrap_or_else(|| "unknown error".into()),
        )),
    }
}

fn usage_json(u: &Usage) -> Value {
    json!(WireUsage::from(u))
}

/// A non-streaming answer in OpenAI's shape, serialized straight from borrowed fields.
#[derive(Serialize)]
struct Completion<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    system_fingerprint: Option<&'static str>,
    choices: [Choice<'a>; 1],
    usage: WireUsage,
}

#[derive(Serialize)]
struct Choice<'a> {
    index: u32,
    message: AnswerMessage<'a>,
    logprobs: Option<()>,
    finish_reason: &'static str,
}

#[derive(Serialize)]
struct AnswerMessage<'a> {
    role: &'static str,
    content: &'a str,
    refusal: Option<&'static str>,
}

#[derive(Serialize)]
struct WireUsage {
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
}

impl From<&Usage> for WireUsage {
    fn from(u: &Usage) -> Self {
        Self {
            prompt_tokens: u.input_tokens,
            completion_tokens: u.output_tokens,
            total_tokens: u.total(),
        }
    }
}

/// A non-streaming answer in OpenAI's shape.
fn completion_response(id: &str, model: &str, answer: &str, usage: &Usage) -> Response {
    axum::Json(Completion {
        id,
        object: "chat.completion",
        created: unix_now(),
        model,
        system_fingerprint: None,
        choices: [Choice {
            index: 0,
            message: AnswerMessage {
                role: "assistant",
                content: answer,
                refusal: None,
            },
            logprobs: None,
            finish_reason: "stop",
        }],
        usage: WireUsage::from(usage),
    })
    .into_response()
}

/// Ids of chat completions run directly (not queued, so without a task id): a random
/// prefix per server and a counter, so they are unique across servers and cheap to make.
#[derive(Debug)]
pub(crate) struct Ids {
    prefix: String,
    next: AtomicU64,
}

impl Ids {
    pub(crate) fn new() -> Self {
        let mut bytes = [0u8; 8];
        // Without OS randomness, the clock: unique enough for ids that are not secrets.
        if getrandom::fill(&mut bytes).is_err() {
            bytes = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64)
                .to_le_bytes();
        }
        Self {
            prefix: bytes.iter().map(|b| format!("{b:02x}")).collect(),
            next: AtomicU64::new(1),
        }
    }

    /// `direct-` prefix and counter: also the run's id (approval ids derive from it).
    pub(crate) fn next(&self) -> String {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        format!("direct-{}-{n}", self.prefix)
    }
}

pub(crate) async fn completions(
    State(state): State<Shared>,
    body: Result<Json<ChatRequest>, ApiError>,
) -> Result<Response, OpenAiError> {
    let Json(request) = body?;
    state.accepting()?;
    // Beyond the limit, 429 at once rather than a queue that grows without end.
    let permit = state
        .chat_slots
        .clone()
        .try_acquire_owned()
        .map_err(|_| ApiError::Busy {
            limit: state.chat_limit,
            retry_after: Duration::from_secs(1),
        })?;
    let (task, history) = split(&request.messages)?;
    if !state.cluster.has_agent(&request.model) {
        return Err(ApiError::NotFound(format!(
            "the model `{}` does not exist (models are agent names; see /v1/models)",
            request.model
        ))
        .into());
    }
    let (task, history) = if state.chat_direct && !request.stream {
        let id = state.chat_ids.next();
        let run = RunRequest {
            history,
            run_id: Some(id),
            // Nobody watches this run's text: the model answers in one piece.
            stream: Some(false),
            ..RunRequest::new(task)
        };
        match state
            .cluster
            .run_now(&request.model, run, state.chat_direct_wait)
            .await
        {
            RunNow::Ran(Ok(output)) => {
                drop(permit);
                let id = format!("chatcmpl-{}", output.run_id);
                return Ok(completion_response(
                    &id,
                    &request.model,
                    &output.answer,
                    &output.usage,
                ));
            }
            RunNow::Ran(Err(e)) => return Err(ApiError::TaskFailed(e.to_string()).into()),
            // No instance free here: queued like any task.
            RunNow::NotNow(run) => (run.task, run.history),
        }
    } else {
        (task, history)
    };
    let mut new = NewTask::new(request.model.clone(), task);
    new.metadata = json!({"history": history, "source": "chat.completions"});
    // Only this task's end wakes this request; a stream also gets the run's steps, from
    // its first (kept for it while the task's id is not known yet).
    let what = if request.stream {
        Following::Steps
    } else {
        Following::End
    };
    let (enqueued, follower) = state.cluster.submit_followed(new, what).await?;
    let id = enqueued.id;
    tracing::debug!(%id, model = %request.model, stream = request.stream, "chat completion submitted");
    let chat_id = format!("chatcmpl-{id}");
    let created = unix_now();
    let model = request.model;
    let updates = watch::follow(&state, follower);

    if !request.stream {
        let end = updates
            .filter_map(|u| {
                ready(match u {
                    Ok(Update::End(record)) => Some(outcome(&record)),
                    Ok(Update::Event(_) | Update::Lagged(_)) => None,
                    Err(e) => Some(Err(e)),
                })
            })
            .take(1);
        let mut end = std::pin::pin!(end);
        let (answer, usage) = end
            .next()
            .await
            .unwrap_or_else(|| Err(ApiError::Internal("the task's updates ended early".into())))?;
        drop(permit);
        return Ok(completion_response(&chat_id, &model, &answer, &usage));
    }

    let relay = Relay {
        chunks: Chunks {
            id: chat_id,
            model,
            created,
        },
        include_usage: request.stream_options.is_some_and(|o| o.include_usage),
        sent: String::new(),
        behind: false,
        _permit: permit,
    };
    let first = relay
        .chunks
        .delta(json!({"role": "assistant", "content": ""}), None);
    let rest = updates
        .scan(relay, |relay, update| ready(Some(relay.step(update))))
        .flat_map(stream::iter);
    let stream = stream::once(ready(first))
        .chain(rest)
        .chain(stream::once(ready(Event::default().data("[DONE]"))))
        .map(Ok::<_, Infallible>);
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

/// The fields every chunk of one completion shares.
struct Chunks {
    id: String,
    model: String,
    created: u64,
}

impl Chunks {
    fn event(&self, choices: Value, usage: Option<Value>) -> Event {
        let mut c = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": null,
            "choices": choices,
        });
        if let Some(u) = usage {
            c["usage"] = u;
        }
        Event::default().data(c.to_string())
    }

    fn delta(&self, delta: Value, finish: Option<&str>) -> Event {
        self.event(
            json!([{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]),
            None,
        )
    }
}

/// Turns a followed task into chunks: its text deltas as they come, then what is missing
/// of the answer, the finish chunk and the usage.
struct Relay {
    chunks: Chunks,
    include_usage: bool,
    /// The text sent so far.
    sent: String,
    /// Some deltas were missed: send no more, make it up at the end.
    behind: bool,
    /// Counts this completion as in flight while it streams.
    _permit: OwnedSemaphorePermit,
}

impl Relay {
    fn step(&mut self, update: Result<Update, ApiError>) -> Vec<Event> {
        match update {
            Ok(Update::Event(ClusterEvent::Agent { event, .. })) => match &event.kind {
                EventKind::TextDelta { text } if !self.behind && !text.is_empty() => {
                    self.sent.push_str(text);
                    vec![self.chunks.delta(json!({"content": text}), None)]
                }
                _ => Vec::new(),
            },
            Ok(Update::Event(ClusterEvent::AgentStepsSkipped { .. }) | Update::Lagged(_)) => {
                self.behind = true;
                Vec::new()
            }
            Ok(Update::Event(_)) => Vec::new(),
            Ok(Update::End(record)) => match outcome(&record) {
                Ok((answer, usage)) => self.finish(&answer, &usage),
                Err(e) => vec![error_chunk(&e)],
            },
            Err(e) => vec![error_chunk(&e)],
        }
    }

    fn finish(&mut self, answer: &str, usage: &Usage) -> Vec<Event> {
        let mut events = Vec::new();
        match answer.strip_prefix(self.sent.as_str()) {
            Some("") => {}
            Some(rest) => events.push(self.chunks.delta(json!({"content": rest}), None)),
            None => tracing::warn!(
                "the streamed text is not a prefix of the answer (text of a turn that called \
                 tools, or of a failed attempt); the answer's end is not sent"
            ),
        }
        events.push(self.chunks.delta(json!({}), Some("stop")));
        if self.include_usage {
            events.push(self.chunks.event(json!([]), Some(usage_json(usage))));
        }
        events
    }
}

fn error_chunk(e: &ApiError) -> Event {
    Event::default().data(
        json!({"error": {"type": e.kind(), "message": e.to_string(), "param": null, "code": e.kind()}})
            .to_string(),
    )
}

pub(crate) async fn models(State(state): State<Shared>) -> Result<axum::Json<Value>, OpenAiError> {
    let data: Vec<Value> = agents(&state)
        .await?
        .into_iter()
        .map(|id| json!({"id": id, "object": "model", "created": 0, "owned_by": "pocket"}))
        .collect();
    Ok(axum::Json(json!({"object": "list", "data": data})))
}
