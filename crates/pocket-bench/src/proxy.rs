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
use axum::http::{HeaderValue, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use http_body_util::BodyExt;
use tokio::net::TcpListener;

use crate::plain_http::{self, PlainClient};
use crate::served::Served;

/// Which HTTP client forwards requests upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ClientKind {
    /// reqwest, as `pocket serve`'s model providers use it (redirects off).
    Reqwest,
    /// hyper's own pooled HTTP/1 client, nothing above it.
    Hyper,
}

enum Upstream {
    Reqwest {
        client: reqwest::Client,
        url: reqwest::Url,
    },
    Hyper {
        client: PlainClient,
        uri: Uri,
    },
}

/// Listens on `addr` and forwards `POST /v1/chat/completions` to `upstream` (the full URL)
/// with the `client` asked for.
///
/// # Errors
/// `upstream` is not a URL (an `http://` one for `hyper`), or the address cannot be bound.
pub async fn spawn(addr: &str, upstream: &str, client: ClientKind) -> anyhow::Result<Served> {
    let state = Arc::new(match client {
        ClientKind::Reqwest => Upstream::Reqwest {
            url: reqwest::Url::parse(upstream)?,
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()?,
        },
        ClientKind::Hyper => Upstream::Hyper {
            client: plain_http::client(),
            uri: plain_http::uri(upstream).map_err(anyhow::Error::msg)?,
        },
    });
    let app = Router::new()
        .route("/v1/chat/completions", post(forward))
        .with_state(state);
    Ok(Served::start(TcpListener::bind(addr).await?, app)?)
}

async fn forward(State(up): State<Arc<Upstream>>, headers: HeaderMap, body: Bytes) -> Response {
    let auth = headers.get(header::AUTHORIZATION);
    let answer = match &*up {
        Upstream::Reqwest { client, url } => via_reqwest(client, url, auth, body).await,
        Upstream::Hyper { client, uri } => via_hyper(client, uri, auth, body).await,
    };
    match answer {
        Ok((status, bytes)) => {
            (status, [(header::CONTENT_TYPE, "application/json")], bytes).into_response()
        }
        Err(e) => (StatusCode::BAD_GATEWAY, e).into_response(),
    }
}

async fn via_reqwest(
    client: &reqwest::Client,
    url: &reqwest::Url,
    auth: Option<&HeaderValue>,
    body: Bytes,
) -> Result<(StatusCode, Bytes), String> {
    let mut request = client
        .post(url.clone())
        .header(header::CONTENT_TYPE, "application/json")
        .body(body);
    if let Some(auth) = auth {
        request = request.header(header::AUTHORIZATION, auth);
    }
    let answer = request.send().await.map_err(|e| e.to_string())?;
    let status = answer.status();
    let bytes = answer.bytes().await.map_err(|e| e.to_string())?;
    Ok((status, bytes))
}

async fn via_hyper(
    client: &PlainClient,
    uri: &Uri,
    auth: Option<&HeaderValue>,
    body: Bytes,
) -> Result<(StatusCode, Bytes), String> {
    let answer = client
        .request(plain_http::post_json(uri, body, auth))
        .await
        .map_err(|e| e.to_string())?;
    let status = answer.status();
    let bytes = answer
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, bytes))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::{Value, json};

    use super::{ClientKind, spawn};
    use crate::stub::{self, StubConfig};

    #[tokio::test]
    async fn answers_come_back_as_the_upstream_gave_them() {
        for client in [ClientKind::Reqwest, ClientKind::Hyper] {
            answers_come_back_through(client).await;
        }
    }

    async fn answers_come_back_through(client: ClientKind) {
        let stub = stub::spawn("127.0.0.1:0", StubConfig::default())
            .await
            .unwrap();
        let url = format!("{}/chat/completions", stub.base_url());
        let proxy = spawn("127.0.0.1:0", &url, client).await.unwrap();
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
