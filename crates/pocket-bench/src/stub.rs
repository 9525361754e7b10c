//! A fast OpenAI-compatible upstream for benchmarks: `POST /v1/chat/completions` answers
//! after a fixed latency with a scripted tool round.
//!
//! - Tools offered and no `tool` message yet: one tool call — `add` with `{"a":17,"b":25}`
//!   when `add` is offered, else the first offered tool with `{}`.
//! - Otherwise (a tool result present, or no tools offered): final text, `The answer is
//!   {last tool result}.` or `Hello from the stub.`
//!
//! Usage is always filled in (prompt tokens ≈ characters / 4 of the messages, 8 completion
//! tokens). `stream: true` gets the same answer as server-sent chunks, with a usage chunk
//! when `stream_options.include_usage` is set.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::served::Served;

/// How the stub answers.
#[derive(Debug, Clone, Copy, Default)]
pub struct StubConfig {
    /// Fixed delay before every answer. Default: none.
    pub latency: Duration,
}

#[derive(Deserialize)]
struct ChatRequest {
    #[serde(default)]
    model: String,
    messages: Vec<ChatMessage>,
    #[serde(default)]
    tools: Vec<ToolDef>,
    #[serde(default)]
    stream: bool,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
}

#[derive(Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

#[derive(Deserialize)]
struct ChatMessage {
    role: String,
    #[serde(default)]
    content: Value,
}

#[derive(Deserialize)]
struct ToolDef {
    function: FunctionDef,
}

#[derive(Deserialize)]
struct FunctionDef {
    name: String,
}

struct Shared {
    config: StubConfig,
    next_id: AtomicU64,
    requests: AtomicU64,
}

/// The text of a message's content: a string, or the `text` of its parts.
fn text_of(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect(),
        _ => String::new(),
    }
}

/// What the stub says to a request.
enum Answer {
    ToolCall { name: String, arguments: String },
    Text(String),
}

fn answer(request: &ChatRequest) -> Answer {
    let tool_result = request
        .messages
        .iter()
        .rev()
        .find(|m| m.role == "tool")
        .map(|m| text_of(&m.content));
    match (tool_result, request.tools.first()) {
        (Some(result), _) => Answer::Text(format!("The answer is {}.", result.trim())),
        (None, Some(first)) => {
            if request.tools.iter().any(|t| t.function.name == "add") {
                Answer::ToolCall {
                    name: "add".into(),
                    arguments: r#"{"a":17,"b":25}"#.into(),
                }
            } else {
                Answer::ToolCall {
                    name: first.function.name.clone(),
                    arguments: "{}".into(),
                }
            }
        }
        (None, None) => Answer::Text("Hello from the stub.".into()),
    }
}

fn usage(request: &ChatRequest) -> Value {
    let chars: usize = request
        .messages
        .iter()
        .map(|m| text_of(&m.content).len())
        .sum();
    let prompt = chars / 4 + 1;
    json!({"prompt_tokens": prompt, "completion_tokens": 8, "total_tokens": prompt + 8})
}

async fn completions(
    State(shared): State<Arc<Shared>>,
    body: Result<axum::Json<ChatRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let request = match body {
        Ok(axum::Json(r)) => r,
        Err(e) => {
            let body =
                json!({"error": {"type": "invalid_request_error", "message": e.body_text()}});
            return (StatusCode::BAD_REQUEST, axum::Json(body)).into_response();
        }
    };
    shared.requests.fetch_add(1, Ordering::Relaxed);
    if !shared.config.latency.is_zero() {
        tokio::time::sleep(shared.config.latency).await;
    }
    let n = shared.next_id.fetch_add(1, Ordering::Relaxed);
    let id = format!("chatcmpl-stub-{n}");
    let usage = usage(&request);
    let answer = answer(&request);
    if request.stream {
        let include_usage = request.stream_options.is_some_and(|o| o.include_usage);
        return stream_response(&id, &request.model, n, answer, usage, include_usage);
    }
    let (message, finish) = match answer {
        Answer::ToolCall { name, arguments } => (
            json!({"role": "assistant", "content": null, "tool_calls": [{
                "id": format!("call_{n}"), "type": "function",
                "function": {"name": name, "arguments": arguments},
            }]}),
            "tool_calls",
        ),
        Answer::Text(text) => (json!({"role": "assistant", "content": text}), "stop"),
    };
    axum::Json(json!({
        "id": id,
        "object": "chat.completion",
        "created": 0,
        "model": request.model,
        "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": finish}],
        "usage": usage,
    }))
    .into_response()
}

/// The whole answer as server-sent chunks in one body (the stub has nothing to wait for).
fn stream_response(
    id: &str,
    model: &str,
    n: u64,
    answer: Answer,
    usage: Value,
    include_usage: bool,
) -> Response {
    let chunk = |choices: Value| json!({"id": id, "object": "chat.completion.chunk", "created": 0, "model": model, "choices": choices});
    let (delta, finish) = match answer {
        Answer::ToolCall { name, arguments } => (
            json!({"tool_calls": [{"index": 0, "id": format!("call_{n}"), "type": "function",
                "function": {"name": name, "arguments": arguments}}]}),
            "tool_calls",
        ),
        Answer::Text(text) => (json!({"content": text}), "stop"),
    };
    let mut events = vec![
        chunk(
            json!([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": null}]),
        ),
        chunk(json!([{"index": 0, "delta": delta, "finish_reason": null}])),
        chunk(json!([{"index": 0, "delta": {}, "finish_reason": finish}])),
    ];
    if include_usage {
        let mut last = chunk(json!([]));
        last["usage"] = usage;
        events.push(last);
    }
    let mut body = String::new();
    for e in events {
        body.push_str("data: ");
        body.push_str(&e.to_string());
        body.push_str("\n\n");
    }
    body.push_str("data: [DONE]\n\n");
    ([(header::CONTENT_TYPE, "text/event-stream")], body).into_response()
}

/// The stub's routes.
pub fn router(config: StubConfig) -> Router {
    let shared = Arc::new(Shared {
        config,
        next_id: AtomicU64::new(0),
        requests: AtomicU64::new(0),
    });
    Router::new()
        .route("/v1/chat/completions", post(completions))
        .with_state(shared)
}

/// A running stub, stopped by [`Served::shutdown`] (or aborted when dropped).
pub type Stub = Served;

/// Binds `addr` (use port 0 for any free port) and serves the stub on a task.
///
/// # Errors
/// The address cannot be bound.
pub async fn spawn(addr: &str, config: StubConfig) -> std::io::Result<Stub> {
    Served::start(TcpListener::bind(addr).await?, router(config))
}
