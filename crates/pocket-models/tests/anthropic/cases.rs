// The cases of `tests/anthropic.rs` and `tests/anthropic_reqwest.rs`, which include this file with
// `DIRECT_HTTP` set: every case runs on both routes a plain-http endpoint can take.


use std::sync::Arc;
use std::time::Duration;

use pocket_agent::{
    Classify, Completion, CompletionRequest, FinishReason, Message, Model, ModelError,
    RequestOptions, StreamEvent, ToolCall, ToolSpec, Usage,
};
use pocket_models::{AnthropicConfig, AnthropicModel};
use serde_json::{Value, json};
use support::{
    awkward_chunks, collect, dead_url, err, header_str, json, raw, transport_source, server,
    slow_server, sse_in_chunks,
};

const KEY: &str = "sk-ant-test-key";

#[allow(clippy::unwrap_used)] // A fixture that cannot be built should fail the test.
fn model(url: &str) -> AnthropicModel {
    AnthropicModel::new(AnthropicConfig::new("claude-test", KEY).with_direct_http(DIRECT_HTTP).with_base_url(url)).unwrap()
}

fn hello() -> CompletionRequest {
    CompletionRequest::new(vec![Message::user("hello")])
}

fn error_body(kind: &str, message: &str) -> Value {
    json!({"type": "error", "error": {"type": kind, "message": message}})
}

fn tool_result(id: &str, content: &str, is_error: bool) -> Message {
    Message::Tool {
        call_id: id.into(),
        name: "weather".into(),
        content: content.into(),
        is_error,
    }
}

#[tokio::test]
async fn request_shape_headers_and_tool_use_mapping() {
    let (srv, recorded) = server(|| {
        json(
            200,
            json!({
                "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-test",
                "content": [{"type": "text", "text": "Paris is sunny, Rome is rainy."}],
                "stop_reason": "end_turn", "stop_sequence": null,
                "usage": {"input_tokens": 120, "output_tokens": 12}
            }),
        )
    })
    .await;
    let request = CompletionRequest {
        messages: vec![
            Message::system("You are a weather bot."),
            Message::user("Weather in Paris and Rome?"),
            Message::Assistant {
                content: None,
                tool_calls: vec![
                    ToolCall {
                        id: "toolu_1".into(),
                        name: "weather".into(),
                        arguments: json!({"city": "Paris"}),
                    },
                    ToolCall {
                        id: "toolu_2".into(),
                        name: "weather".into(),
                        arguments: json!({"city": "Rome"}),
                    },
                ],
            },
            tool_result("toolu_1", "sunny", false),
            tool_result("toolu_2", "service down", true),
        ],
        tools: Arc::from(vec![ToolSpec::new(
            "weather",
            "Current weather of a city.",
            json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}),
        )]),
        options: RequestOptions {
            temperature: Some(0.5),
            max_tokens: None,
        },
        deadline: None,
    };

    let m = model(&srv.url);
    assert_eq!(m.name(), "anthropic:claude-test");
    let completion = m.complete(&request).await.unwrap();

    assert_eq!(
        completion,
        Completion {
            content: Some("Paris is sunny, Rome is rainy.".into()),
            tool_calls: vec![],
            usage: Usage {
                input_tokens: 120,
                output_tokens: 12
            },
            finish_reason: FinishReason::Stop,
        }
    );
    let req = recorded.single();
    assert_eq!(req.path, "/v1/messages");
    assert_eq!(header_str(&req.headers, "x-api-key"), Some(KEY));
    assert_eq!(
        header_str(&req.headers, "anthropic-version"),
        Some("2023-06-01")
    );
    assert!(req.headers.get("authorization").is_none());
    assert_eq!(
        req.body,
        json!({
            "model": "claude-test",
            "max_tokens": 4096,
            "system": "You are a weather bot.",
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "Weather in Paris and Rome?"}]},
                {"role": "assistant", "content": [
                    {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Paris"}},
                    {"type": "tool_use", "id": "toolu_2", "name": "weather", "input": {"city": "Rome"}}
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"},
                    {"type": "tool_result", "tool_use_id": "toolu_2", "content": "service down", "is_error": true}
                ]}
            ],
            "tools": [{
                "name": "weather",
                "description": "Current weather of a city.",
                "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
            }],
            "temperature": 0.5
        })
    );
}

#[tokio::test]
async fn tool_use_response_with_two_calls_and_usage() {
    let (srv, _) = server(|| {
        json(
            200,
            json!({
                "id": "msg_2", "type": "message", "role": "assistant",
                "content": [
                    {"type": "text", "text": "Checking both."},
                    {"type": "tool_use", "id": "toolu_a", "name": "weather", "input": {"city": "Paris"}},
                    {"type": "tool_use", "id": "toolu_b", "name": "time", "input": {}}
                ],
                "stop_reason": "tool_use",
                "usage": {"input_tokens": 50, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 30, "output_tokens": 60}
            }),
        )
    })
    .await;

    let completion = model(&srv.url).complete(&hello()).await.unwrap();

    assert_eq!(
        completion,
        Completion {
            content: Some("Checking both.".into()),
            tool_calls: vec![
                ToolCall {
                    id: "toolu_a".into(),
                    name: "weather".into(),
                    arguments: json!({"city": "Paris"}),
                },
                ToolCall {
                    id: "toolu_b".into(),
                    name: "time".into(),
                    arguments: json!({}),
                },
            ],
            usage: Usage {
                input_tokens: 80,
                output_tokens: 60
            },
            finish_reason: FinishReason::ToolCalls,
        }
    );
}

#[tokio::test]
async fn max_tokens_stop_is_length_and_request_limit_is_sent() {
    let (srv, recorded) = server(|| {
        json(
            200,
            json!({"content": [{"type": "text", "text": "Once upon"}], "stop_reason": "max_tokens",
                   "usage": {"input_tokens": 5, "output_tokens": 3}}),
        )
    })
    .await;
    let mut request = hello();
    request.options.max_tokens = Some(3);
    let completion = model(&srv.url).complete(&request).await.unwrap();
    assert_eq!(completion.finish_reason, FinishReason::Length);
    assert_eq!(completion.content.as_deref(), Some("Once upon"));
    assert_eq!(recorded.single().body["max_tokens"], json!(3));
}

fn sse(events: &[(&str, Value)]) -> String {
    events
        .iter()
        .map(|(name, data)| format!("event: {name}\ndata: {data}\n\n"))
        .collect()
}

#[tokio::test]
async fn stream_split_every_7_bytes_and_inside_utf8_chars() {
    let body = sse(&[
        (
            "message_start",
            json!({"type": "message_start", "message": {"id": "msg_s", "type": "message", "role": "assistant",
                   "content": [], "stop_reason": null, "usage": {"input_tokens": 25, "output_tokens": 1}}}),
        ),
        (
            "content_block_start",
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ),
        ("ping", json!({"type": "ping"})),
        (
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Grüße "}}),
        ),
        (
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "🦀!"}}),
        ),
        (
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 0}),
        ),
        (
            "content_block_start",
            json!({"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "toolu_a", "name": "weather", "input": {}}}),
        ),
        (
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": ""}}),
        ),
        (
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "{\"city\": \"Zü"}}),
        ),
        (
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "rich\"}"}}),
        ),
        (
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 1}),
        ),
        (
            "content_block_start",
            json!({"type": "content_block_start", "index": 2, "content_block": {"type": "tool_use", "id": "toolu_b", "name": "time", "input": {}}}),
        ),
        (
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 2}),
        ),
        (
            "message_delta",
            json!({"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": null}, "usage": {"output_tokens": 42}}),
        ),
        ("message_stop", json!({"type": "message_stop"})),
    ]);
    let chunks = awkward_chunks(&body, 7);
    let (srv, recorded) = server(move || sse_in_chunks(chunks.clone())).await;

    let (events, error) = collect(model(&srv.url).stream(&hello()).await.unwrap()).await;

    assert!(error.is_none(), "{error:?}");
    assert_eq!(
        events,
        vec![
            StreamEvent::TextDelta("Grüße ".into()),
            StreamEvent::TextDelta("🦀!".into()),
            StreamEvent::ToolCallStart {
                index: 0,
                id: "toolu_a".into(),
                name: "weather".into()
            },
            StreamEvent::ToolCallDelta {
                index: 0,
                arguments: "{\"city\": \"Zü".into()
            },
            StreamEvent::ToolCallDelta {
                index: 0,
                arguments: "rich\"}".into()
            },
            StreamEvent::ToolCallStart {
                index: 1,
                id: "toolu_b".into(),
                name: "time".into()
            },
            StreamEvent::Done(Completion {
                content: Some("Grüße 🦀!".into()),
                tool_calls: vec![
                    ToolCall {
                        id: "toolu_a".into(),
                        name: "weather".into(),
                        arguments: json!({"city": "Zürich"}),
                    },
                    ToolCall {
                        id: "toolu_b".into(),
                        name: "time".into(),
                        arguments: json!({}),
                    },
                ],
                usage: Usage {
                    input_tokens: 25,
                    output_tokens: 42
                },
                finish_reason: FinishReason::ToolCalls,
            }),
        ]
    );
    let req = recorded.single();
    assert_eq!(req.body["stream"], json!(true));
    assert_eq!(
        header_str(&req.headers, "accept"),
        Some("text/event-stream")
    );
}

#[tokio::test]
async fn stream_overloaded_error_event_is_a_529() {
    let body = sse(&[
        (
            "message_start",
            json!({"type": "message_start", "message": {"usage": {"input_tokens": 3, "output_tokens": 1}}}),
        ),
        ("error", error_body("overloaded_error", "Overloaded")),
    ]);
    let (srv, _) = server(move || sse_in_chunks(vec![body.clone().into_bytes()])).await;
    let (events, error) = collect(model(&srv.url).stream(&hello()).await.unwrap()).await;
    assert!(events.is_empty());
    assert!(
        matches!(&error, Some(ModelError::Server { status: 529, message, retry_after: None })
            if message == "Overloaded"),
        "{error:?}"
    );
}

#[tokio::test]
async fn rate_limited_429_with_retry_after() {
    let (srv, recorded) = server(|| {
        raw(
            429,
            &[("content-type", "application/json"), ("retry-after", "12")],
            error_body(
                "rate_limit_error",
                "Number of request tokens has exceeded your rate limit",
            )
            .to_string(),
        )
    })
    .await;
    let e = err(model(&srv.url).complete(&hello()).await);
    assert!(
        matches!(&e, ModelError::RateLimited { message, retry_after: Some(d) }
            if message == "Number of request tokens has exceeded your rate limit"
                && *d == Duration::from_secs(12)),
        "{e:?}"
    );
    recorded.single();
}

#[tokio::test]
async fn overloaded_529_is_a_server_error() {
    let (srv, _) = server(|| json(529, error_body("overloaded_error", "Overloaded"))).await;
    let e = err(model(&srv.url).complete(&hello()).await);
    assert!(
        matches!(&e, ModelError::Server { status: 529, message, retry_after: None } if message == "Overloaded"),
        "{e:?}"
    );
    assert!(e.is_retryable());
}

#[tokio::test]
async fn api_error_500() {
    let (srv, _) = server(|| json(500, error_body("api_error", "Internal server error"))).await;
    let e = err(model(&srv.url).complete(&hello()).await);
    assert!(
        matches!(&e, ModelError::Server { status: 500, message, .. } if message == "Internal server error"),
        "{e:?}"
    );
}

#[tokio::test]
async fn authentication_401_and_permission_403() {
    let (srv, _) =
        server(|| json(401, error_body("authentication_error", "invalid x-api-key"))).await;
    let e = err(model(&srv.url).complete(&hello()).await);
    assert!(
        matches!(&e, ModelError::Auth { status: 401, message } if message == "invalid x-api-key"),
        "{e:?}"
    );
    assert!(!format!("{e:?}").contains(KEY));

    let (srv, _) = server(|| {
        json(
            403,
            error_body(
                "permission_error",
                "Your API key does not have permission to use the specified resource.",
            ),
        )
    })
    .await;
    let e = err(model(&srv.url).complete(&hello()).await);
    assert!(matches!(&e, ModelError::Auth { status: 403, .. }), "{e:?}");
}

#[tokio::test]
async fn prompt_too_long_400_is_context_length() {
    let (srv, _) = server(|| {
        json(
            400,
            error_body(
                "invalid_request_error",
                "prompt is too long: 210000 tokens > 200000 maximum",
            ),
        )
    })
    .await;
    let e = err(model(&srv.url).complete(&hello()).await);
    assert!(
        matches!(&e, ModelError::ContextLength { message }
            if message == "prompt is too long: 210000 tokens > 200000 maximum"),
        "{e:?}"
    );
}

#[tokio::test]
async fn other_400_is_an_invalid_request() {
    let (srv, _) = server(|| {
        json(
            400,
            error_body(
                "invalid_request_error",
                "messages: roles must alternate between \"user\" and \"assistant\"",
            ),
        )
    })
    .await;
    let e = err(model(&srv.url).complete(&hello()).await);
    assert!(
        matches!(&e, ModelError::InvalidRequest { status: 400, message }
            if message.starts_with("messages: roles must alternate")),
        "{e:?}"
    );
}

#[tokio::test]
async fn connection_refused() {
    let e = err(model(&dead_url()).complete(&hello()).await);
    assert!(
        matches!(&e, ModelError::Connection { message, source: Some(_) } if message == "connection refused"),
        "{e:?}"
    );
    assert!(transport_source(&e).is_connect());
}

#[tokio::test]
async fn slow_server_times_out() {
    let srv = slow_server(Duration::from_secs(30)).await;
    let slow = AnthropicModel::new(
        AnthropicConfig::new("claude-test", KEY)
            .with_direct_http(DIRECT_HTTP).with_base_url(&srv.url)
            .with_timeout(Duration::from_millis(250)),
    )
    .unwrap();
    let e = err(slow.complete(&hello()).await);
    assert!(
        matches!(e, ModelError::Timeout { after: Some(d) } if d == Duration::from_millis(250)),
        "{e:?}"
    );
}

#[tokio::test]
async fn malformed_json_200() {
    let (srv, _) = server(|| {
        raw(
            200,
            &[("content-type", "application/json")],
            "not json at all",
        )
    })
    .await;
    let e = err(model(&srv.url).complete(&hello()).await);
    assert!(
        matches!(&e, ModelError::MalformedResponse { message } if message.contains("not json at all")),
        "{e:?}"
    );
}
