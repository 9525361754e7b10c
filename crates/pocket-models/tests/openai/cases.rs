// The cases of `tests/openai.rs` and `tests/openai_reqwest.rs`, which include this file with
// `DIRECT_HTTP` set: every case runs on both routes a plain-http endpoint can take.


use std::sync::Arc;
use std::time::Duration;

use pocket_agent::{
    Classify, Completion, CompletionRequest, FinishReason, Message, Model, ModelError,
    RequestOptions, StreamEvent, ToolCall, ToolSpec, Usage,
};
use pocket_models::{OpenAiConfig, OpenAiModel};
use serde_json::{Value, json};
use support::{
    awkward_chunks, closing_server, collect, dead_url, err, header_str, json, raw, transport_source,
    resetting_server, server, slow_server, sse_data, sse_in_chunks, sse_then_stall,
};

const KEY: &str = "sk-test-key-123";

#[allow(clippy::unwrap_used)] // A fixture that cannot be built should fail the test.
fn model(url: &str) -> OpenAiModel {
    OpenAiModel::new(
        OpenAiConfig::new("gpt-test")
            .with_direct_http(DIRECT_HTTP).with_base_url(format!("{url}/v1"))
            .with_api_key(KEY),
    )
    .unwrap()
}

fn hello() -> CompletionRequest {
    CompletionRequest::new(vec![Message::user("hello")])
}

fn text_reply(content: &str) -> Value {
    json!({
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 31, "completion_tokens": 5, "total_tokens": 36}
    })
}

fn error_body(message: &str, kind: &str, code: Value) -> Value {
    json!({"error": {"message": message, "type": kind, "param": null, "code": code}})
}

#[tokio::test]
async fn complete_sends_messages_tools_and_bearer_key() {
    let (srv, recorded) = server(|| json(200, text_reply("It is 42."))).await;
    let request = CompletionRequest {
        messages: vec![
            Message::system("Be brief."),
            Message::user("What is 21 doubled?"),
            Message::Assistant {
                content: None,
                tool_calls: vec![ToolCall {
                    id: "call_1".into(),
                    name: "double".into(),
                    arguments: json!({"x": 21}),
                }],
            },
            Message::Tool {
                call_id: "call_1".into(),
                name: "double".into(),
                content: "42".into(),
                is_error: false,
            },
        ],
        tools: Arc::from(vec![ToolSpec::new(
            "double",
            "Doubles a number.",
            json!({"type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"]}),
        )]),
        options: RequestOptions {
            temperature: Some(0.25),
            max_tokens: Some(100),
        },
        deadline: None,
    };

    let completion = model(&srv.url).complete(&request).await.unwrap();

    assert_eq!(
        completion,
        Completion {
            content: Some("It is 42.".into()),
            tool_calls: vec![],
            usage: Usage {
                input_tokens: 31,
                output_tokens: 5
            },
            finish_reason: FinishReason::Stop,
        }
    );
    let req = recorded.single();
    assert_eq!(req.path, "/v1/chat/completions");
    assert_eq!(
        header_str(&req.headers, "authorization"),
        Some("Bearer sk-test-key-123")
    );
    assert_eq!(
        header_str(&req.headers, "content-type"),
        Some("application/json")
    );
    assert!(
        header_str(&req.headers, "user-agent").is_some_and(|a| a.starts_with("pocket-agent/")),
        "{:?}",
        req.headers
    );
    assert_eq!(
        req.body,
        json!({
            "model": "gpt-test",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "What is 21 doubled?"},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "double", "arguments": "{\"x\":21}"}}
                ]},
                {"role": "tool", "tool_call_id": "call_1", "content": "42"}
            ],
            "tools": [{"type": "function", "function": {
                "name": "double",
                "description": "Doubles a number.",
                "parameters": {"type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"]}
            }}],
            "temperature": 0.25,
            "max_tokens": 100
        })
    );
}

#[tokio::test]
async fn keyless_config_sends_no_authorization_header() {
    let (srv, recorded) = server(|| json(200, text_reply("hi"))).await;
    let local = OpenAiModel::new(OpenAiConfig::new("llama3").with_direct_http(DIRECT_HTTP).with_base_url(&srv.url)).unwrap();
    assert_eq!(local.name(), "openai:llama3");
    local.complete(&hello()).await.unwrap();
    let req = recorded.single();
    assert_eq!(req.path, "/chat/completions");
    assert!(req.headers.get("authorization").is_none());
}

#[tokio::test]
async fn two_parallel_tool_calls_and_usage() {
    let (srv, _) = server(|| {
        json(
            200,
            json!({
                "choices": [{"index": 0, "message": {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "call_a", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}},
                    {"id": "call_b", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Rome\"}"}}
                ]}, "finish_reason": "tool_calls"}],
                "usage": {"prompt_tokens": 80, "completion_tokens": 40, "total_tokens": 120}
            }),
        )
    })
    .await;

    let completion = model(&srv.url).complete(&hello()).await.unwrap();

    assert_eq!(
        completion,
        Completion {
            content: None,
            tool_calls: vec![
                ToolCall {
                    id: "call_a".into(),
                    name: "weather".into(),
                    arguments: json!({"city": "Paris"}),
                },
                ToolCall {
                    id: "call_b".into(),
                    name: "weather".into(),
                    arguments: json!({"city": "Rome"}),
                },
            ],
            usage: Usage {
                input_tokens: 80,
                output_tokens: 40
            },
            finish_reason: FinishReason::ToolCalls,
        }
    );
}

#[tokio::test]
async fn invalid_json_arguments_arrive_as_a_string() {
    let (srv, _) = server(|| {
        json(
            200,
            json!({
                "choices": [{"message": {"content": null, "tool_calls": [
                    {"id": "call_x", "type": "function", "function": {"name": "calc", "arguments": "{\"expr\": 1+"}}
                ]}, "finish_reason": "tool_calls"}]
            }),
        )
    })
    .await;

    let completion = model(&srv.url).complete(&hello()).await.unwrap();

    assert_eq!(
        completion.tool_calls,
        vec![ToolCall {
            id: "call_x".into(),
            name: "calc".into(),
            arguments: Value::String("{\"expr\": 1+".into()),
        }]
    );
    assert_eq!(completion.usage, Usage::default());
}

#[tokio::test]
async fn stream_split_every_7_bytes_and_inside_utf8_chars() {
    let body = sse_data(&[
        r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}"#,
        r#"{"choices":[{"index":0,"delta":{"content":"Grüße, "},"finish_reason":null}]}"#,
        r#"{"choices":[{"index":0,"delta":{"content":"🦀 crab ✓"},"finish_reason":null}]}"#,
        r#"{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":null}"#,
        r#"{"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":4,"total_tokens":13}}"#,
        "[DONE]",
    ]);
    let chunks = awkward_chunks(&body, 7);
    let (srv, recorded) = server(move || sse_in_chunks(chunks.clone())).await;

    let stream = model(&srv.url).stream(&hello()).await.unwrap();
    let (events, error) = collect(stream).await;

    assert!(error.is_none(), "{error:?}");
    assert_eq!(
        events,
        vec![
            StreamEvent::TextDelta("Grüße, ".into()),
            StreamEvent::TextDelta("🦀 crab ✓".into()),
            StreamEvent::Done(Completion {
                content: Some("Grüße, 🦀 crab ✓".into()),
                tool_calls: vec![],
                usage: Usage {
                    input_tokens: 9,
                    output_tokens: 4
                },
                finish_reason: FinishReason::Stop,
            }),
        ]
    );
    let req = recorded.single();
    assert_eq!(req.body["stream"], json!(true));
    assert_eq!(req.body["stream_options"], json!({"include_usage": true}));
    assert_eq!(
        header_str(&req.headers, "accept"),
        Some("text/event-stream")
    );
}

#[tokio::test]
async fn stream_assembles_interleaved_tool_call_deltas_split_with_crlf() {
    let body = sse_data(&[
        r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":null,"tool_calls":[{"index":0,"id":"call_a","type":"function","function":{"name":"weather","arguments":""}}]},"finish_reason":null}]}"#,
        r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"city\":"}}]},"finish_reason":null}]}"#,
        r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"id":"call_b","type":"function","function":{"name":"time","arguments":"{\"tz\""}}]},"finish_reason":null}]}"#,
        r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"\"Zürich\"}"}}]},"finish_reason":null}]}"#,
        r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"function":{"arguments":":\"CET\"}"}}]},"finish_reason":null}]}"#,
        r#"{"choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}"#,
        r#"{"choices":[],"usage":{"prompt_tokens":20,"completion_tokens":11}}"#,
        "[DONE]",
    ])
    .replace('\n', "\r\n");
    let chunks = awkward_chunks(&body, 7);
    let (srv, _) = server(move || sse_in_chunks(chunks.clone())).await;

    let (events, error) = collect(model(&srv.url).stream(&hello()).await.unwrap()).await;

    assert!(error.is_none(), "{error:?}");
    let delta = |index, arguments: &str| StreamEvent::ToolCallDelta {
        index,
        arguments: arguments.into(),
    };
    assert_eq!(
        events,
        vec![
            StreamEvent::ToolCallStart {
                index: 0,
                id: "call_a".into(),
                name: "weather".into()
            },
            delta(0, "{\"city\":"),
            StreamEvent::ToolCallStart {
                index: 1,
                id: "call_b".into(),
                name: "time".into()
            },
            delta(1, "{\"tz\""),
            delta(0, "\"Zürich\"}"),
            delta(1, ":\"CET\"}"),
            StreamEvent::Done(Completion {
                content: None,
                tool_calls: vec![
                    ToolCall {
                        id: "call_a".into(),
                        name: "weather".into(),
                        arguments: json!({"city": "Zürich"}),
                    },
                    ToolCall {
                        id: "call_b".into(),
                        name: "time".into(),
                        arguments: json!({"tz": "CET"}),
                    },
                ],
                usage: Usage {
                    input_tokens: 20,
                    output_tokens: 11
                },
                finish_reason: FinishReason::ToolCalls,
            }),
        ]
    );
}

#[tokio::test]
async fn stream_with_invalid_json_arguments_keeps_the_raw_text() {
    let body = sse_data(&[
        r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"id":"c","function":{"name":"f","arguments":"{oops"}}]}}]}"#,
        r#"{"choices":[{"delta":{},"finish_reason":"tool_calls"}]}"#,
        "[DONE]",
    ]);
    let (srv, _) = server(move || sse_in_chunks(vec![body.clone().into_bytes()])).await;
    let (events, error) = collect(model(&srv.url).stream(&hello()).await.unwrap()).await;
    assert!(error.is_none());
    let Some(StreamEvent::Done(done)) = events.last() else {
        panic!("{events:?}")
    };
    assert_eq!(done.tool_calls[0].arguments, Value::String("{oops".into()));
}

#[tokio::test]
async fn stream_answered_with_plain_json_still_streams() {
    let (srv, _) = server(|| json(200, text_reply("whole"))).await;
    let (events, error) = collect(model(&srv.url).stream(&hello()).await.unwrap()).await;
    assert!(error.is_none());
    assert_eq!(events[0], StreamEvent::TextDelta("whole".into()));
    assert!(matches!(&events[1], StreamEvent::Done(c) if c.content.as_deref() == Some("whole")));
}

#[tokio::test]
async fn stream_cut_before_done_is_a_connection_error() {
    let body = sse_data(&[r#"{"choices":[{"delta":{"content":"Hel"}}]}"#]);
    let (srv, _) = server(move || sse_in_chunks(vec![body.clone().into_bytes()])).await;
    let (events, error) = collect(model(&srv.url).stream(&hello()).await.unwrap()).await;
    assert_eq!(events, vec![StreamEvent::TextDelta("Hel".into())]);
    assert!(
        matches!(&error, Some(ModelError::Connection { message, source: None })
            if message == "the event stream ended before the completion was complete"),
        "{error:?}"
    );
}

#[tokio::test]
async fn stream_error_chunk_is_mapped() {
    let body = sse_data(&[
        r#"{"choices":[{"delta":{"content":"Hel"}}]}"#,
        r#"{"error":{"message":"The server had an error","type":"server_error"}}"#,
    ]);
    let (srv, _) = server(move || sse_in_chunks(vec![body.clone().into_bytes()])).await;
    let (events, error) = collect(model(&srv.url).stream(&hello()).await.unwrap()).await;
    assert_eq!(events, vec![StreamEvent::TextDelta("Hel".into())]);
    assert!(
        matches!(&error, Some(ModelError::Server { status: 500, message, retry_after: None })
            if message == "The server had an error"),
        "{error:?}"
    );
}

#[tokio::test]
async fn stream_that_stalls_times_out() {
    let first = "data: {\"choices\":[{\"delta\":{\"content\":\"Hel\"}}]}\n\n";
    let (srv, _) = server(move || sse_then_stall(first, Duration::from_secs(30))).await;
    let slow = OpenAiModel::new(
        OpenAiConfig::new("gpt-test")
            .with_direct_http(DIRECT_HTTP).with_base_url(&srv.url)
            .with_timeout(Duration::from_secs(1)),
    )
    .unwrap();
    let (events, error) = collect(slow.stream(&hello()).await.unwrap()).await;
    assert_eq!(events, vec![StreamEvent::TextDelta("Hel".into())]);
    assert!(
        matches!(error, Some(ModelError::Timeout { after: Some(d) }) if d == Duration::from_secs(1)),
        "{error:?}"
    );
}

#[tokio::test]
async fn stream_status_errors_come_before_the_stream() {
    let (srv, _) = server(|| {
        raw(
            429,
            &[("retry-after", "2")],
            error_body("slow down", "requests", json!("rate_limit_exceeded")).to_string(),
        )
    })
    .await;
    let e = err(model(&srv.url).stream(&hello()).await);
    assert!(
        matches!(&e, ModelError::RateLimited { message, retry_after: Some(d) }
            if message == "slow down" && *d == Duration::from_secs(2)),
        "{e:?}"
    );
}

#[tokio::test]
async fn rate_limited_429_with_retry_after_seconds() {
    let (srv, recorded) = server(|| {
        raw(
            429,
            &[("content-type", "application/json"), ("retry-after", "3")],
            error_body(
                "Rate limit reached for gpt-test",
                "requests",
                json!("rate_limit_exceeded"),
            )
            .to_string(),
        )
    })
    .await;
    let e = err(model(&srv.url).complete(&hello()).await);
    assert!(
        matches!(&e, ModelError::RateLimited { message, retry_after: Some(d) }
            if message == "Rate limit reached for gpt-test" && *d == Duration::from_secs(3)),
        "{e:?}"
    );
    assert!(e.is_retryable());
    assert_eq!(e.retry_after(), Some(Duration::from_secs(3)));
    // No retry of its own: exactly one request reached the server.
    recorded.single();
}

#[tokio::test]
async fn server_error_500() {
    let (srv, recorded) = server(|| {
        json(
            500,
            error_body("The server had an error", "server_error", Value::Null),
        )
    })
    .await;
    let e = err(model(&srv.url).complete(&hello()).await);
    assert!(
        matches!(&e, ModelError::Server { status: 500, message, retry_after: None }
            if message == "The server had an error"),
        "{e:?}"
    );
    recorded.single();
}

#[tokio::test]
async fn unavailable_503_with_retry_after_ms_and_plain_body() {
    let (srv, _) = server(|| raw(503, &[("retry-after-ms", "1500")], "upstream overloaded")).await;
    let e = err(model(&srv.url).complete(&hello()).await);
    assert!(
        matches!(&e, ModelError::Server { status: 503, message, retry_after: Some(d) }
            if message == "upstream overloaded" && *d == Duration::from_millis(1500)),
        "{e:?}"
    );
}

#[tokio::test]
async fn unauthorized_401_redacts_an_echoed_key() {
    let (srv, _) = server(|| {
        json(
            401,
            error_body(
                &format!("Incorrect API key provided: {KEY}."),
                "invalid_request_error",
                json!("invalid_api_key"),
            ),
        )
    })
    .await;
    let e = err(model(&srv.url).complete(&hello()).await);
    assert!(
        matches!(&e, ModelError::Auth { status: 401, message }
            if message == "Incorrect API key provided: [redacted]."),
        "{e:?}"
    );
    assert!(!e.to_string().contains(KEY));
    assert!(!format!("{e:?}").contains(KEY));
    assert!(!e.is_retryable());
}

#[tokio::test]
async fn forbidden_403() {
    let (srv, _) = server(|| {
        json(
            403,
            error_body(
                "Project does not have access to model",
                "invalid_request_error",
                json!("model_not_found"),
            ),
        )
    })
    .await;
    let e = err(model(&srv.url).complete(&hello()).await);
    assert!(
        matches!(&e, ModelError::Auth { status: 403, message }
            if message == "Project does not have access to model"),
        "{e:?}"
    );
}

#[tokio::test]
async fn context_length_400() {
    let (srv, _) = server(|| {
        json(
            400,
            error_body(
                "This model's maximum context length is 128000 tokens. However, your messages resulted in 130000 tokens.",
                "invalid_request_error",
                json!("context_length_exceeded"),
            ),
        )
    })
    .await;
    let e = err(model(&srv.url).complete(&hello()).await);
    assert!(
        matches!(&e, ModelError::ContextLength { message }
            if message.starts_with("This model's maximum context length is 128000 tokens.")),
        "{e:?}"
    );
}

#[tokio::test]
async fn other_400_is_an_invalid_request() {
    let (srv, _) = server(|| {
        json(
            400,
            error_body(
                "Invalid value for 'temperature'",
                "invalid_request_error",
                Value::Null,
            ),
        )
    })
    .await;
    let e = err(model(&srv.url).complete(&hello()).await);
    assert!(
        matches!(&e, ModelError::InvalidRequest { status: 400, message }
            if message == "Invalid value for 'temperature'"),
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
    assert!(e.is_retryable());
}

#[tokio::test]
async fn connection_reset_mid_body() {
    let srv = resetting_server(
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 400\r\n\r\n{\"choices\":[{\"message\":",
    )
    .await;
    let e = err(model(&srv.url).complete(&hello()).await);
    assert!(
        matches!(&e, ModelError::Connection { message, source: Some(_) } if message == "connection reset"),
        "{e:?}"
    );
    assert!(transport_source(&e).is_body());
}

/// A body cut short by an orderly close (not a reset) says so, on both routes.
#[tokio::test]
async fn connection_closed_mid_body() {
    let srv = closing_server(
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 400\r\n\r\n{\"choices\":[{\"message\":",
    )
    .await;
    let e = err(model(&srv.url).complete(&hello()).await);
    assert!(
        matches!(&e, ModelError::Connection { message, source: Some(_) }
            if message == "connection closed before the response was complete"),
        "{e:?}"
    );
    assert!(transport_source(&e).is_body());
}

#[tokio::test]
async fn connection_reset_mid_stream() {
    let srv = resetting_server(
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n\
          31\r\ndata: {\"choices\":[{\"delta\":{\"content\":\"Hel\"}}]}\n\n\r\n",
    )
    .await;
    let (events, error) = collect(model(&srv.url).stream(&hello()).await.unwrap()).await;
    assert_eq!(events, vec![StreamEvent::TextDelta("Hel".into())]);
    assert!(
        matches!(&error, Some(ModelError::Connection { message, source: Some(_) })
            if message == "connection reset"),
        "{error:?}"
    );
}

#[tokio::test]
async fn slow_server_times_out() {
    let srv = slow_server(Duration::from_secs(30)).await;
    let slow = OpenAiModel::new(
        OpenAiConfig::new("gpt-test")
            .with_direct_http(DIRECT_HTTP).with_base_url(&srv.url)
            .with_timeout(Duration::from_millis(300)),
    )
    .unwrap();
    let e = err(slow.complete(&hello()).await);
    assert!(
        matches!(e, ModelError::Timeout { after: Some(d) } if d == Duration::from_millis(300)),
        "{e:?}"
    );
}

#[tokio::test]
async fn malformed_json_200() {
    let (srv, _) = server(|| {
        raw(
            200,
            &[("content-type", "application/json")],
            "{\"choices\": [",
        )
    })
    .await;
    let e = err(model(&srv.url).complete(&hello()).await);
    assert!(
        matches!(&e, ModelError::MalformedResponse { message } if message.contains("{\"choices\": [")),
        "{e:?}"
    );
}

#[tokio::test]
async fn json_200_without_choices_is_malformed() {
    let (srv, _) = server(|| json(200, json!({"object": "list", "data": []}))).await;
    let e = err(model(&srv.url).complete(&hello()).await);
    assert!(
        matches!(&e, ModelError::MalformedResponse { message } if message == "the response has no choices"),
        "{e:?}"
    );
}

/// OpenAI refuses tool names with dots (`^[a-zA-Z0-9_-]{1,64}$`); MCP tools have them.
#[tokio::test]
async fn dotted_tool_names_are_encoded_on_the_wire_and_decoded_back() {
    let reply = json!({
        "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {"role": "assistant", "content": null,
            "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "fs__read_text_file", "arguments": "{}"}}]}}]
    });
    let (srv, recorded) = server(move || json(200, reply.clone())).await;
    let tool = ToolSpec::new("fs.read_text_file", "Reads.", json!({"type": "object"}));
    let history = ToolCall {
        id: "c0".into(),
        name: "fs.read_text_file".into(),
        arguments: json!({}),
    };
    let request = CompletionRequest {
        messages: vec![
            Message::user("read"),
            Message::Assistant {
                content: None,
                tool_calls: vec![history],
            },
            Message::Tool {
                call_id: "c0".into(),
                name: "fs.read_text_file".into(),
                content: "x".into(),
                is_error: false,
            },
        ],
        tools: Arc::from(vec![tool]),
        ..CompletionRequest::default()
    };
    let completion = model(&srv.url).complete(&request).await.unwrap();
    assert_eq!(completion.tool_calls[0].name, "fs.read_text_file");
    let body = recorded.single().body;
    assert_eq!(body["tools"][0]["function"]["name"], "fs__read_text_file");
    assert_eq!(
        body["messages"][1]["tool_calls"][0]["function"]["name"],
        "fs__read_text_file"
    );
}

#[tokio::test]
async fn a_redirect_is_an_error_not_followed_with_the_key() {
    // Were it followed, the second request would reach this same server and be recorded.
    let (srv, recorded) = server(|| raw(307, &[("location", "/v1/elsewhere")], "moved")).await;
    let e = err(model(&srv.url).complete(&hello()).await);
    assert!(
        matches!(&e, ModelError::MalformedResponse { message } if message.contains("unexpected HTTP status 307")),
        "{e:?}"
    );
    recorded.single();
}

/// A whole keep-alive response answering `content`.
fn keep_alive_reply(content: &str) -> String {
    let body = text_reply(content).to_string();
    format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// The connections three calls one after another take, the server closing each kept
/// connection between calls when `close_between`.
#[allow(clippy::unwrap_used)] // A call that fails should fail the test.
async fn connections_for_three_calls(close_between: bool) -> usize {
    let srv = support::keep_alive_server(keep_alive_reply("again")).await;
    let model = model(&srv.server.url);
    for _ in 0..3 {
        let completion = model.complete(&hello()).await.unwrap();
        assert_eq!(completion.content.as_deref(), Some("again"));
        if close_between {
            srv.close_connection().await;
        }
    }
    srv.connections()
}

#[tokio::test]
async fn calls_one_after_another_share_one_connection() {
    assert_eq!(connections_for_three_calls(false).await, 1);
}

#[tokio::test]
async fn a_kept_connection_the_server_closed_is_not_used_again() {
    assert_eq!(connections_for_three_calls(true).await, 3);
}

#[tokio::test]
async fn calls_at_once_each_get_an_answer() {
    let srv = support::keep_alive_server(keep_alive_reply("many")).await;
    let model = Arc::new(model(&srv.server.url));
    let calls: Vec<_> = (0..8)
        .map(|_| {
            let model = model.clone();
            tokio::spawn(async move { model.complete(&hello()).await })
        })
        .collect();
    for call in calls {
        let completion = call.await.unwrap().unwrap();
        assert_eq!(completion.content.as_deref(), Some("many"));
    }
    // Then the connections made for them are kept: one more call makes none.
    let before = srv.connections();
    assert!((1..=8).contains(&before), "{before} connections");
    model.complete(&hello()).await.unwrap();
    assert_eq!(srv.connections(), before);
}
