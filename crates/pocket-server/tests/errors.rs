//! Every error status with the JSON shape `{error: {type, message}}`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use serde_json::json;
use support::{Harness, Options, expect_error};

#[tokio::test]
async fn malformed_json_is_400_naming_the_problem() {
    let h = Harness::start(Options::default()).await;
    let resp = post_typed(&h, "application/json", "{\"task\": ").await;
    let message = expect_error(resp, 400, "invalid_request").await;
    assert!(
        message.starts_with("the body is not valid JSON"),
        "{message}"
    );

    let resp = h.post_json("/v1/tasks", &json!({"task": 5})).await;
    let message = expect_error(resp, 400, "invalid_request").await;
    assert!(
        message.starts_with("the JSON body does not match the schema"),
        "{message}"
    );
    assert!(message.contains("task"), "{message}");

    let resp = h
        .post_json("/v1/tasks", &json!({"task": "x", "colour": "red"}))
        .await;
    let message = expect_error(resp, 400, "invalid_request").await;
    assert!(message.contains("colour"), "{message}");

    let resp = h.post("/v1/tasks").body("{}").send().await.unwrap();
    let message = expect_error(resp, 400, "invalid_request").await;
    assert!(message.contains("Content-Type"), "{message}");

    let resp = h.post_json("/v1/tasks", &json!({"task": "   "})).await;
    let message = expect_error(resp, 400, "invalid_request").await;
    assert_eq!(message, "`task` must not be blank");
    h.stop().await;
}

#[tokio::test]
async fn json_bodies_are_read_whatever_the_json_content_type() {
    // `application/json` exactly takes a fast path; the other spellings go through axum's
    // media-type parsing. Both must accept the same bodies and refuse the same mistakes.
    let h = Harness::start(Options::default()).await;
    for content_type in [
        "application/json",
        "APPLICATION/JSON",
        "application/json; charset=utf-8",
        "application/json;charset=utf-8",
        "application/vnd.api+json",
    ] {
        let resp = post_typed(&h, content_type, r#"{"task": "say hi"}"#).await;
        assert_eq!(resp.status(), 202, "{content_type}");

        let resp = post_typed(&h, content_type, r#"{"task": "x", "colour": "red"}"#).await;
        let message = expect_error(resp, 400, "invalid_request").await;
        assert!(
            message.starts_with("the JSON body does not match the schema")
                && message.contains("colour"),
            "{content_type}: {message}"
        );

        let resp = post_typed(&h, content_type, r#"{"task": "x"} trailing"#).await;
        let message = expect_error(resp, 400, "invalid_request").await;
        assert!(
            message.starts_with("the body is not valid JSON"),
            "{content_type}: {message}"
        );
    }
    for content_type in ["text/json", "application/jsonx", "application/json-patch"] {
        let resp = post_typed(&h, content_type, r#"{"task": "say hi"}"#).await;
        let message = expect_error(resp, 400, "invalid_request").await;
        assert!(
            message.contains("Content-Type"),
            "{content_type}: {message}"
        );
    }
    h.stop().await;
}

/// `POST /v1/tasks` with this `Content-Type` and body, as given.
async fn post_typed(h: &Harness, content_type: &str, body: &'static str) -> reqwest::Response {
    h.post("/v1/tasks")
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_body_over_the_limit_is_413() {
    let h = Harness::start(Options {
        body_limit: Some(64),
        ..Options::default()
    })
    .await;
    let resp = h
        .post_json("/v1/tasks", &json!({"task": "x".repeat(100)}))
        .await;
    let message = expect_error(resp, 413, "payload_too_large").await;
    assert_eq!(message, "the request body is larger than 64 bytes");
    h.stop().await;
}

#[tokio::test]
async fn a_full_queue_is_429_with_retry_after() {
    let h = Harness::start(Options {
        max_queued: Some(1),
        ..Options::default()
    })
    .await;
    h.submit(json!({"task": "first"})).await;
    let resp = h.post_json("/v1/tasks", &json!({"task": "second"})).await;
    assert_eq!(resp.headers()["retry-after"], "7");
    expect_error(resp, 429, "queue_full").await;
    h.stop().await;
}

#[tokio::test]
async fn a_draining_server_refuses_new_work_with_503() {
    let h = Harness::start(Options::default()).await;
    h.server.drain();
    let resp = h.post_json("/v1/tasks", &json!({"task": "too late"})).await;
    let message = expect_error(resp, 503, "unavailable").await;
    assert_eq!(message, "the server is shutting down");
    let resp = h.client.get(h.url("/readyz")).send().await.unwrap();
    assert_eq!(resp.status(), 503);
    let resp = h.client.get(h.url("/healthz")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    h.stop().await;
}

#[tokio::test]
async fn a_response_slower_than_the_time_limit_is_504() {
    // Nothing works off the queue, so the completion waits past the limit.
    let h = Harness::start(Options {
        timeout: Some(Duration::from_millis(200)),
        ..Options::default()
    })
    .await;
    let resp = h
        .post_json(
            "/v1/chat/completions",
            &json!({"model": "default", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    expect_error(resp, 504, "timeout").await;
    h.stop().await;
}

#[tokio::test]
async fn unknown_routes_are_404_json() {
    let h = Harness::start(Options::default()).await;
    let resp = h.get("/v1/nothing").send().await.unwrap();
    expect_error(resp, 404, "not_found").await;
    h.stop().await;
}
