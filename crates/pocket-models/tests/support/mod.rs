//! Helpers shared by the provider tests: in-process HTTP servers on `127.0.0.1:0` that record
//! what they receive and answer with canned (or deliberately broken) responses.

// Each test crate includes this module and uses a different part of it; helpers fail the
// test loudly (unwrap) when the machine cannot bind a port or a fixture is wrong.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::Response;
use futures_util::StreamExt;
use pocket_agent::{CompletionStream, ModelError, StreamEvent};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// A server running on a spawned task; stopped when dropped.
pub struct TestServer {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    handle: JoinHandle<()>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

/// One request a server received.
#[derive(Debug, Clone)]
pub struct Captured {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Value,
}

/// The requests a server received, in order.
#[derive(Clone, Default)]
pub struct Recorded(Arc<Mutex<Vec<Captured>>>);

impl Recorded {
    /// The only request received; panics unless exactly one arrived.
    pub fn single(&self) -> Captured {
        let all = self.0.lock().unwrap();
        assert_eq!(all.len(), 1, "expected exactly one request");
        all[0].clone()
    }
}

/// A server that records every request and answers it with `respond()`.
pub async fn server<F>(respond: F) -> (TestServer, Recorded)
where
    F: Fn() -> Response + Send + Sync + 'static,
{
    let recorded = Recorded::default();
    let log = recorded.clone();
    let respond = Arc::new(respond);
    let app = Router::new().fallback(move |uri: Uri, headers: HeaderMap, body: Bytes| {
        let log = log.clone();
        let respond = respond.clone();
        async move {
            let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
            log.0.lock().unwrap().push(Captured {
                path: uri.path().to_owned(),
                headers,
                body,
            });
            respond()
        }
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let handle = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (TestServer { url, handle }, recorded)
}

/// A server that waits `delay` before answering every request with an empty JSON object.
pub async fn slow_server(delay: Duration) -> TestServer {
    let app = Router::new().fallback(move || async move {
        tokio::time::sleep(delay).await;
        json(200, serde_json::json!({}))
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let handle = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    TestServer { url, handle }
}

/// A JSON response.
pub fn json(status: u16, body: Value) -> Response {
    raw(
        status,
        &[("content-type", "application/json")],
        body.to_string(),
    )
}

/// A response with these headers and body.
pub fn raw(status: u16, headers: &[(&'static str, &str)], body: impl Into<Body>) -> Response {
    let mut response = Response::new(body.into());
    *response.status_mut() = StatusCode::from_u16(status).unwrap();
    for (name, value) in headers {
        response
            .headers_mut()
            .insert(*name, HeaderValue::from_str(value).unwrap());
    }
    response
}

/// An event-stream response whose body is sent in `chunks`, each as its own write with a
/// short pause between, so the client reads them separately.
pub fn sse_in_chunks(chunks: Vec<Vec<u8>>) -> Response {
    let stream = futures_util::stream::iter(chunks).then(|chunk| async move {
        tokio::time::sleep(Duration::from_millis(2)).await;
        Ok::<_, std::io::Error>(Bytes::from(chunk))
    });
    let mut response = Response::new(Body::from_stream(stream));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    response
}

/// An event-stream response that sends `first`, then stalls for `stall`.
pub fn sse_then_stall(first: &'static str, stall: Duration) -> Response {
    let stream = futures_util::stream::iter([0, 1]).then(move |i| async move {
        if i == 1 {
            tokio::time::sleep(stall).await;
        }
        Ok::<_, std::io::Error>(Bytes::from_static(if i == 0 {
            first.as_bytes()
        } else {
            b""
        }))
    });
    let mut response = Response::new(Body::from_stream(stream));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    response
}

/// `body` cut every `n` bytes and, on top, after the first byte of every multi-byte
/// character, so framing and UTF-8 decoding both meet pieces that end mid-way.
pub fn awkward_chunks(body: &str, n: usize) -> Vec<Vec<u8>> {
    assert!(
        !body.is_ascii(),
        "the body needs multi-byte characters to split"
    );
    let mut cuts: Vec<usize> = (n..body.len()).step_by(n).collect();
    cuts.extend(
        body.char_indices()
            .filter(|(_, c)| c.len_utf8() > 1)
            .map(|(i, _)| i + 1),
    );
    cuts.sort_unstable();
    cuts.dedup();
    let bytes = body.as_bytes();
    let mut chunks = Vec::with_capacity(cuts.len() + 1);
    let mut start = 0;
    for cut in cuts {
        chunks.push(bytes[start..cut].to_vec());
        start = cut;
    }
    chunks.push(bytes[start..].to_vec());
    assert!(
        chunks.iter().any(|c| std::str::from_utf8(c).is_err()),
        "no chunk ends inside a character"
    );
    chunks
}

/// SSE `data:` frames for these JSON payloads (and any literal like `[DONE]`).
pub fn sse_data(payloads: &[&str]) -> String {
    payloads.iter().map(|p| format!("data: {p}\n\n")).collect()
}

/// A URL on which nothing listens: bind a port, then let it go.
pub fn dead_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}")
}

/// A raw TCP server that reads one request, writes `reply`, then resets the connection
/// (SO_LINGER 0, so the peer gets RST rather than a clean close).
pub async fn resetting_server(reply: &'static [u8]) -> TestServer {
    cutting_server(reply, true).await
}

/// A server that writes `reply` (a response cut short) and then closes the connection in
/// order (FIN, not a reset).
pub async fn closing_server(reply: &'static [u8]) -> TestServer {
    cutting_server(reply, false).await
}

async fn cutting_server(reply: &'static [u8], reset: bool) -> TestServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let handle = tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            read_request(&mut socket).await;
            socket.write_all(reply).await.unwrap();
            socket.flush().await.unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
            if reset {
                socket.set_zero_linger().unwrap();
            }
            drop(socket);
        }
    });
    TestServer { url, handle }
}

/// A raw TCP server that answers every request with `reply` (a whole keep-alive response)
/// and counts the connections it accepts; see [`KeepAliveServer`].
pub async fn keep_alive_server(reply: String) -> KeepAliveServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let connections = Arc::new(AtomicUsize::new(0));
    let close = Arc::new(Notify::new());
    let closed = Arc::new(Notify::new());
    let (count, close_one, closed_one) = (connections.clone(), close.clone(), closed.clone());
    let reply: Arc<[u8]> = reply.into_bytes().into();
    let handle = tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            let (reply, close, closed) = (reply.clone(), close_one.clone(), closed_one.clone());
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        more = read_request(&mut socket) => {
                            if !more {
                                return;
                            }
                            socket.write_all(&reply).await.unwrap();
                        }
                        () = close.notified() => {
                            drop(socket);
                            closed.notify_one();
                            return;
                        }
                    }
                }
            });
        }
    });
    KeepAliveServer {
        server: TestServer { url, handle },
        connections,
        close,
        closed,
    }
}

/// A keep-alive server from [`keep_alive_server`].
pub struct KeepAliveServer {
    pub server: TestServer,
    connections: Arc<AtomicUsize>,
    close: Arc<Notify>,
    closed: Arc<Notify>,
}

impl KeepAliveServer {
    /// The connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// Closes the one open connection from the server's side (FIN, not a reset; no
    /// `Connection: close` was sent) and returns once it is closed.
    pub async fn close_connection(&self) {
        self.close.notify_one();
        self.closed.notified().await;
    }
}

/// Reads request headers and a `content-length` body; `false` if the connection ended first.
async fn read_request(socket: &mut TcpStream) -> bool {
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = socket.read(&mut buf).await.unwrap_or(0);
        if n == 0 {
            return false;
        }
        data.extend_from_slice(&buf[..n]);
        let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&data[..end]).to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map(|v| v.trim().parse().unwrap())
            .unwrap_or(0);
        if data.len() >= end + 4 + length {
            return true;
        }
    }
}

/// Drains a stream into its events; the error, if one ends it, is returned separately.
pub async fn collect(mut stream: CompletionStream) -> (Vec<StreamEvent>, Option<ModelError>) {
    let mut events = Vec::new();
    while let Some(item) = stream.next().await {
        match item {
            Ok(event) => events.push(event),
            Err(e) => {
                assert!(stream.next().await.is_none(), "items after an error");
                return (events, Some(e));
            }
        }
    }
    (events, None)
}

/// The error of a result that must have failed.
pub fn err<T>(result: Result<T, ModelError>) -> ModelError {
    match result {
        Ok(_) => panic!("expected an error, got a success"),
        Err(e) => e,
    }
}

/// The header's value as text.
pub fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The transport error kept as the source of a connection error.
pub fn transport_source(err: &ModelError) -> &pocket_models::TransportError {
    std::error::Error::source(err)
        .and_then(|s| s.downcast_ref::<pocket_models::TransportError>())
        .unwrap_or_else(|| panic!("no TransportError source in {err:?}"))
}
