//! `http_fetch` against an in-test axum server on 127.0.0.1.

#![allow(clippy::unwrap_used, clippy::expect_used)] // fixtures fail the test loudly by design

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect};
use axum::routing::get;
use pocket_agent::{Risk, SharedTool, Tool, ToolError};
use pocket_tools::{HttpFetch, HttpFetchConfig, ToolsConfig, ToolsError, builtin};
use serde_json::json;
use support::{call, denied_reason, failed};

struct Server {
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Server {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

async fn server() -> Server {
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&hits);
    let app = Router::new()
        .route(
            "/hello",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                    "hello world",
                )
            }),
        )
        .route("/big", get(|| async { "a".repeat(10_000) }))
        .route(
            "/missing",
            get(|| async { (StatusCode::NOT_FOUND, "not here").into_response() }),
        )
        .route("/redirect", get(|| async { Redirect::temporary("/hello") }))
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(30)).await;
                "late"
            }),
        )
        .layer(axum::middleware::from_fn(
            move |req: axum::extract::Request, next: axum::middleware::Next| {
                counter.fetch_add(1, Ordering::SeqCst);
                next.run(req)
            },
        ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    Server { addr, hits, task }
}

fn config(allow_private: bool) -> HttpFetchConfig {
    HttpFetchConfig {
        allow_private,
        ..HttpFetchConfig::default()
    }
}

fn fetcher(allow_private: bool) -> SharedTool {
    HttpFetch::new(&config(allow_private)).unwrap().into_dyn()
}

#[tokio::test]
async fn fetches_status_content_type_and_body() {
    let server = server().await;
    let out = call(&fetcher(true), json!({ "url": server.url("/hello") }))
        .await
        .unwrap();
    assert_eq!(
        out,
        json!({
            "url": server.url("/hello"),
            "status": 200,
            "content_type": "text/plain; charset=utf-8",
            "body": "hello world",
            "truncated": false,
        })
    );
}

#[tokio::test]
async fn non_2xx_status_is_a_result() {
    let server = server().await;
    let out = call(&fetcher(true), json!({ "url": server.url("/missing") }))
        .await
        .unwrap();
    assert_eq!(out["status"], 404);
    assert_eq!(out["body"], "not here");
}

#[tokio::test]
async fn body_is_truncated_at_the_size_limit() {
    let server = server().await;
    let tool = HttpFetch::new(&config(true))
        .unwrap()
        .with_max_bytes(1000)
        .into_dyn();
    let out = call(&tool, json!({ "url": server.url("/big") }))
        .await
        .unwrap();
    assert_eq!(out["truncated"], true);
    assert_eq!(out["body"].as_str().unwrap(), "a".repeat(1000));

    let exact = HttpFetch::new(&config(true))
        .unwrap()
        .with_max_bytes(10_000)
        .into_dyn();
    let out = call(&exact, json!({ "url": server.url("/big") }))
        .await
        .unwrap();
    assert_eq!(out["truncated"], false);
    assert_eq!(out["body"].as_str().unwrap().len(), 10_000);
}

#[tokio::test]
async fn redirects_are_followed() {
    let server = server().await;
    let out = call(&fetcher(true), json!({ "url": server.url("/redirect") }))
        .await
        .unwrap();
    assert_eq!(out["status"], 200);
    assert_eq!(out["url"], server.url("/hello"));
    assert_eq!(out["body"], "hello world");
}

#[tokio::test]
async fn private_addresses_are_refused_by_default() {
    let server = server().await;
    let tool = builtin("http_fetch", &ToolsConfig::default())
        .unwrap()
        .remove(0);

    let url = server.url("/hello");
    let reason = denied_reason(call(&tool, json!({ "url": url })).await);
    assert_eq!(
        reason,
        "host `127.0.0.1` is a private, loopback or link-local address (127.0.0.1); \
         fetching it is not allowed"
    );

    // A name that resolves to loopback is refused by the resolver, before connecting.
    let url = format!("http://localhost:{}/hello", server.addr.port());
    let reason = denied_reason(call(&tool, json!({ "url": url })).await);
    assert!(
        reason.starts_with("host `localhost` is a private, loopback or link-local address"),
        "{reason}"
    );

    let url = format!("http://[::ffff:127.0.0.1]:{}/hello", server.addr.port());
    denied_reason(call(&tool, json!({ "url": url })).await);

    assert_eq!(
        server.hits.load(Ordering::SeqCst),
        0,
        "the server was reached"
    );
}

#[tokio::test]
async fn allowed_hosts_restrict_hosts() {
    let server = server().await;
    let config = HttpFetchConfig {
        allow_private: true,
        allowed_hosts: vec!["example.com".into()],
        ..HttpFetchConfig::default()
    };
    let tool = HttpFetch::new(&config).unwrap().into_dyn();
    let reason = denied_reason(call(&tool, json!({ "url": server.url("/hello") })).await);
    assert_eq!(reason, "host `127.0.0.1` is not in the allowed hosts");

    let config = HttpFetchConfig {
        allow_private: true,
        allowed_hosts: vec!["127.0.0.1".into()],
        ..HttpFetchConfig::default()
    };
    let tool = HttpFetch::new(&config).unwrap().into_dyn();
    let out = call(&tool, json!({ "url": server.url("/hello") }))
        .await
        .unwrap();
    assert_eq!(out["status"], 200);
    assert_eq!(server.hits.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn time_limit_is_a_timeout_error() {
    let server = server().await;
    let tool = HttpFetch::new(&config(true))
        .unwrap()
        .with_timeout(Duration::from_millis(300))
        .into_dyn();
    let err = call(&tool, json!({ "url": server.url("/slow") }))
        .await
        .unwrap_err();
    assert!(
        matches!(err, ToolError::Timeout { after } if after == Duration::from_millis(300)),
        "{err:?}"
    );
}

#[tokio::test]
async fn connection_failure_is_retryable() {
    // Bind, note the port, close: nothing listens there now.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let (message, retryable) =
        failed(call(&fetcher(true), json!({ "url": format!("http://{addr}/") })).await);
    assert!(retryable);
    assert!(
        message.starts_with(&format!("fetching `http://{addr}/` failed")),
        "{message}"
    );
}

#[tokio::test]
async fn only_http_and_https() {
    for url in ["ftp://example.com/file", "file:///etc/passwd", "not a url"] {
        let err = call(&fetcher(false), json!({ "url": url }))
            .await
            .unwrap_err();
        assert!(
            matches!(err, ToolError::InvalidArguments { .. }),
            "{url}: {err:?}"
        );
    }
}

#[test]
fn spec_and_config_validation() {
    let tool = fetcher(false);
    assert_eq!(tool.spec().risk, Risk::Sensitive);
    assert_eq!(tool.spec().timeout, Some(Duration::from_secs(20)));
    let err = HttpFetch::new(&HttpFetchConfig {
        timeout_secs: 0,
        ..HttpFetchConfig::default()
    })
    .unwrap_err();
    assert!(matches!(err, ToolsError::InvalidConfig { .. }));
    assert_eq!(
        err.to_string(),
        "invalid `tools.http_fetch.timeout_secs`: must be at least 1 second"
    );
}
