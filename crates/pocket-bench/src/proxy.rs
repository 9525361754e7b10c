//! A bare pass-through for `POST /v1/chat/completions` on the same HTTP stack as
//! `pocket serve` (axum and hyper in, reqwest out): the body goes upstream as it came, the
//! answer comes back as it went, nothing parsed, checked or recorded. It measures the floor
//! of one more HTTP hop on a machine, so that what `pocket serve` adds can be split into that
//! hop and its own work (`bench/service-latency.sh`, `pocket-bench proxy`).

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use tokio::net::TcpListener;

use crate::served::Served;

struct Upstream {
    client: reqwest::Client,
    url: reqwest::Url,
}

/// Listens on `addr` and forwards `POST /v1/chat/completions` to `upstream` (the full URL).
///
/// # Errors
/// `upstream` is not a URL, or the address cannot be bound.
pub async fn spawn(addr: &str, upstream: &str) -> anyhow::Result<Served> {
    let url = reqwest::Url::parse(upstream)?;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let state = Arc::new(Upstream { client, url });
    let app = Router::new()
        .route("/v1/chat/completions", post(forward))
        .with_state(state);
    Ok(Served::start(TcpListener::bind(addr).await?, app)?)
}

async fn forward(State(up): State<Arc<Upstream>>, headers: HeaderMap, body: Bytes) -> Response {
    let mut request = up
        .client
        .post(up.url.clone())
        .header(header::CONTENT_TYPE, "application/json")
        .body(body);
    if let Some(auth) = headers.get(header::AUTHORIZATION) {
        request = request.header(header::AUTHORIZATION, auth);
    }
    let answer = match request.send().await {
        Ok(answer) => answer,
        Err(e) => return (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    };
    let status = answer.status();
    match answer.bytes().await {
        Ok(bytes) => (status, [(header::CONTENT_TYPE, "application/json")], bytes).into_response(),
        Err(e) => (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::{Value, json};

    use super::spawn;
    use crate::stub::{self, StubConfig};

    #[tokio::test]
    async fn answers_come_back_as_the_upstream_gave_them() {
        let stub = stub::spawn("127.0.0.1:0", StubConfig::default())
            .await
            .unwrap();
        let url = format!("{}/chat/completions", stub.base_url());
        let proxy = spawn("127.0.0.1:0", &url).await.unwrap();
        let body = json!({"model": "stub", "messages": [{"role": "user", "content": "hi"}]});
        let client = reqwest::Client::new();
        let post = || {
            client
                .post(format!("http://{}/v1/chat/completions", proxy.addr()))
                .json(&body)
                .timeout(Duration::from_secs(10))
                .send()
        };
        let answer = post().await.unwrap();
        assert_eq!(answer.status(), 200);
        let answer: Value = answer.json().await.unwrap();
        assert_eq!(
            answer["choices"][0]["message"]["content"],
            "Hello from the stub."
        );

        // An upstream that is gone: 502, not a hang.
        stub.shutdown().await.unwrap();
        assert_eq!(post().await.unwrap().status(), 502);
        proxy.shutdown().await.unwrap();
    }
}
