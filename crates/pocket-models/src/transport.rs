//! How a provider's requests travel. A plain `http://` endpoint (a local vLLM, Ollama,
//! llama.cpp or LiteLLM, the case where a model call is cheap and the client's own cost per
//! request shows) is reached with hyper's HTTP/1 connections directly ([`crate::direct`]);
//! `https://` endpoints, and every endpoint while an HTTP proxy is set in the environment, go
//! through reqwest (TLS with the platform's roots, proxies). Both keep the same limits: a
//! connect limit, a limit on the wait for the response and for each gap between body chunks,
//! and a whole-call limit for requests that are not streamed.
//!
//! The direct route exists because of what the general clients do per request beyond
//! sending it: reqwest parses the URL again in its redirect layer and for the response (IDNA
//! included), matches the proxy rules and clones its layered service (measured side by side
//! as a bare proxy at 2,000 requests/s, ~20 % of that proxy's CPU per request); hyper-util's
//! pooled client, under reqwest, runs each connection on a task of its own and spawns one more
//! per response (BENCHMARKS.md, "Service overhead").

use std::error::Error as StdError;
use std::fmt;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::stream::{self, BoxStream};
use http_body_util::Full;
use pocket_agent::ModelError;
use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderMap, HeaderValue, USER_AGENT};
use reqwest::{Method, StatusCode, Url};
use tokio::time::Instant;

use crate::direct::{DirectClient, DirectResponse};
use crate::http::{ConfigError, Limits};

const AGENT: &str = concat!("pocket-agent/", env!("CARGO_PKG_VERSION"));

/// The environment variables that make reqwest send plain-HTTP requests through a proxy.
const PROXY_VARS: [&str; 4] = ["http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"];

/// Sends a provider's requests to its one endpoint.
pub(crate) struct Transport {
    route: Route,
    endpoint: Url,
    limits: Limits,
}

enum Route {
    Direct(DirectClient),
    Reqwest { client: reqwest::Client, url: Url },
}

impl Transport {
    /// A transport to `endpoint`: direct for `http://` when `direct` allows it and no proxy
    /// is set in the environment, reqwest otherwise.
    pub(crate) fn new(endpoint: Url, limits: Limits, direct: bool) -> Result<Self, ConfigError> {
        let proxied = PROXY_VARS
            .iter()
            .any(|v| std::env::var_os(v).is_some_and(|value| !value.is_empty()));
        Self::build(endpoint, limits, direct && !proxied)
    }

    /// As [`new`](Self::new), with the proxy variables already taken into `direct`.
    fn build(endpoint: Url, limits: Limits, direct: bool) -> Result<Self, ConfigError> {
        let route = if direct && endpoint.scheme() == "http" {
            Route::Direct(direct_client(&endpoint, &limits)?)
        } else {
            Route::Reqwest {
                client: limits.client()?,
                url: endpoint.clone(),
            }
        };
        Ok(Self {
            route,
            endpoint,
            limits,
        })
    }

    /// The URL requests go to.
    pub(crate) fn endpoint(&self) -> &str {
        self.endpoint.as_str()
    }

    /// Whether requests skip reqwest (plain HTTP, no proxy).
    #[cfg(test)]
    fn is_direct(&self) -> bool {
        matches!(self.route, Route::Direct(_))
    }

    /// POSTs `body` as JSON with `headers` (and `Accept: text/event-stream` when
    /// `streamed`). A call that is not `streamed` must be whole
    /// (response and body) within the provider's timeout; a streamed one only each wait.
    /// Failures come back as the [`ModelError`] they stand for, with the transport's own
    /// error as the source.
    pub(crate) async fn post_json(
        &self,
        headers: HeaderMap,
        body: &impl serde::Serialize,
        streamed: bool,
    ) -> Result<Response, ModelError> {
        let body = serde_json::to_vec(body).map_err(|e| ModelError::InvalidRequest {
            status: 0,
            message: format!("the request cannot be serialized: {e}"),
        })?;
        self.post(headers, body, streamed)
            .await
            .map_err(|e| self.limits.error(e))
    }

    async fn post(
        &self,
        mut headers: HeaderMap,
        body: Vec<u8>,
        streamed: bool,
    ) -> Result<Response, TransportError> {
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if streamed {
            headers.insert(ACCEPT, HeaderValue::from_static("text/event-stream"));
        }
        match &self.route {
            Route::Reqwest { client, url } => {
                let mut request = client.post(url.clone()).headers(headers).body(body);
                if !streamed {
                    request = request.timeout(self.limits.timeout);
                }
                let response = request.send().await.map_err(TransportError::reqwest)?;
                Ok(Response {
                    inner: Inner::Reqwest(response),
                    limits: self.limits,
                })
            }
            Route::Direct(client) => {
                headers.insert(USER_AGENT, HeaderValue::from_static(AGENT));
                let idle = self.limits.timeout;
                let deadline = (!streamed).then(|| Instant::now() + idle);
                let mut request = http::Request::new(Full::new(Bytes::from(body)));
                *request.method_mut() = Method::POST;
                *request.headers_mut() = headers;
                let response =
                    tokio::time::timeout_at(wait_until(idle, deadline), client.send(request))
                        .await
                        .map_err(|_| TransportError::timeout())??;
                Ok(Response {
                    inner: Inner::Direct {
                        response,
                        deadline,
                        idle,
                    },
                    limits: self.limits,
                })
            }
        }
    }
}

/// The direct client of a plain-http `endpoint`.
fn direct_client(endpoint: &Url, limits: &Limits) -> Result<DirectClient, ConfigError> {
    let invalid = |reason: String| ConfigError::InvalidBaseUrl {
        url: endpoint.to_string(),
        reason,
    };
    let host = endpoint
        .host_str()
        .ok_or_else(|| invalid("it has no host".to_owned()))?;
    // `port_or_known_default` is always there for http.
    let port = endpoint.port_or_known_default().unwrap_or(80);
    let host_header = match endpoint.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    };
    let host_header = HeaderValue::try_from(host_header).map_err(|e| invalid(e.to_string()))?;
    let target = match endpoint.query() {
        Some(query) => format!("{}?{query}", endpoint.path()),
        None => endpoint.path().to_owned(),
    };
    let target = target
        .parse()
        .map_err(|e: http::uri::InvalidUri| invalid(e.to_string()))?;
    Ok(DirectClient::new(
        format!("{host}:{port}"),
        host_header,
        target,
        limits.connect_timeout,
    ))
}

/// The end of the next wait: `idle` from now, or the call's deadline if that comes first.
fn wait_until(idle: Duration, deadline: Option<Instant>) -> Instant {
    let next = Instant::now() + idle;
    deadline.map_or(next, |d| d.min(next))
}

/// A response whose head has arrived; its body is read with [`chunk`](Self::chunk),
/// [`bytes`](Self::bytes) or [`bytes_stream`](Self::bytes_stream).
pub(crate) struct Response {
    inner: Inner,
    /// The transport's limits, to say which one a failure passed.
    limits: Limits,
}

enum Inner {
    Reqwest(reqwest::Response),
    Direct {
        response: DirectResponse,
        deadline: Option<Instant>,
        idle: Duration,
    },
}

impl Response {
    /// The status.
    pub(crate) fn status(&self) -> StatusCode {
        match &self.inner {
            Inner::Reqwest(r) => r.status(),
            Inner::Direct { response, .. } => response.head.status,
        }
    }

    /// The headers.
    pub(crate) fn headers(&self) -> &HeaderMap {
        match &self.inner {
            Inner::Reqwest(r) => r.headers(),
            Inner::Direct { response, .. } => &response.head.headers,
        }
    }

    /// The next piece of the body, `None` at its end.
    pub(crate) async fn chunk(&mut self) -> Result<Option<Bytes>, TransportError> {
        match &mut self.inner {
            Inner::Reqwest(r) => r.chunk().await.map_err(TransportError::reqwest),
            Inner::Direct {
                response,
                deadline,
                idle,
            } => loop {
                let next = std::future::poll_fn(|cx| response.poll_frame(cx));
                let frame = tokio::time::timeout_at(wait_until(*idle, *deadline), next)
                    .await
                    .map_err(|_| TransportError::timeout())?;
                match frame {
                    None => return Ok(None),
                    Some(Err(e)) => return Err(e),
                    // Trailers and empty frames carry no body bytes.
                    Some(Ok(frame)) => match frame.into_data() {
                        Ok(data) if !data.is_empty() => return Ok(Some(data)),
                        _ => {}
                    },
                }
            },
        }
    }

    /// The whole body.
    pub(crate) async fn bytes(self) -> Result<Bytes, ModelError> {
        let limits = self.limits;
        self.read_all().await.map_err(|e| limits.error(e))
    }

    async fn read_all(mut self) -> Result<Bytes, TransportError> {
        if let Inner::Reqwest(r) = self.inner {
            return r.bytes().await.map_err(TransportError::reqwest);
        }
        // A short answer comes in one piece: keep it without copying.
        let Some(first) = self.chunk().await? else {
            return Ok(Bytes::new());
        };
        let Some(second) = self.chunk().await? else {
            return Ok(first);
        };
        let mut all = BytesMut::with_capacity(first.len() + second.len());
        all.extend_from_slice(&first);
        all.extend_from_slice(&second);
        while let Some(more) = self.chunk().await? {
            all.extend_from_slice(&more);
        }
        Ok(all.freeze())
    }

    /// The body as a stream of pieces; it ends after the first error.
    pub(crate) fn bytes_stream(self) -> BoxStream<'static, Result<Bytes, ModelError>> {
        Box::pin(stream::unfold(Some(self), |response| async move {
            let mut response = response?;
            match response.chunk().await {
                Ok(Some(bytes)) => Some((Ok(bytes), Some(response))),
                Ok(None) => None,
                Err(e) => Some((Err(response.limits.error(e)), None)),
            }
        }))
    }
}

/// A request that failed on its way: no connection, a broken or stalled response, or a
/// passed time limit. The transport's own error is its [`source`](StdError::source).
#[derive(Debug)]
pub struct TransportError {
    kind: Kind,
    source: Option<Box<dyn StdError + Send + Sync>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Connect,
    Body,
    Timeout { connect: bool },
    Other,
}

impl TransportError {
    fn reqwest(err: reqwest::Error) -> Self {
        let kind = if err.is_timeout() {
            Kind::Timeout {
                connect: err.is_connect(),
            }
        } else if err.is_connect() {
            Kind::Connect
        } else if err.is_body() || err.is_decode() {
            Kind::Body
        } else {
            Kind::Other
        };
        Self {
            kind,
            source: Some(Box::new(err)),
        }
    }

    pub(crate) fn connect(err: std::io::Error) -> Self {
        let kind = if err.kind() == std::io::ErrorKind::TimedOut {
            Kind::Timeout { connect: true }
        } else {
            Kind::Connect
        };
        Self {
            kind,
            source: Some(Box::new(err)),
        }
    }

    pub(crate) fn connect_timeout() -> Self {
        Self {
            kind: Kind::Timeout { connect: true },
            source: None,
        }
    }

    pub(crate) fn other(err: hyper::Error) -> Self {
        Self {
            kind: Kind::Other,
            source: Some(Box::new(err)),
        }
    }

    pub(crate) fn body(err: hyper::Error) -> Self {
        Self {
            kind: Kind::Body,
            source: Some(Box::new(err)),
        }
    }

    /// The connection closed before the response was complete.
    pub(crate) fn eof() -> Self {
        Self {
            kind: Kind::Body,
            source: Some(Box::new(std::io::Error::from(
                std::io::ErrorKind::UnexpectedEof,
            ))),
        }
    }

    fn timeout() -> Self {
        Self {
            kind: Kind::Timeout { connect: false },
            source: None,
        }
    }

    /// No connection could be made.
    pub fn is_connect(&self) -> bool {
        matches!(self.kind, Kind::Connect | Kind::Timeout { connect: true })
    }

    /// A time limit passed (of the connection if [`is_connect`](Self::is_connect)).
    pub fn is_timeout(&self) -> bool {
        matches!(self.kind, Kind::Timeout { .. })
    }

    /// The response body broke off.
    pub fn is_body(&self) -> bool {
        self.kind == Kind::Body
    }

    /// A short description; the details stay in the source chain.
    pub(crate) fn describe(&self) -> &'static str {
        use std::io::ErrorKind as K;
        match io_kind(self) {
            Some(K::ConnectionRefused) => return "connection refused",
            Some(K::ConnectionReset) => return "connection reset",
            Some(K::ConnectionAborted) => return "connection aborted",
            Some(K::UnexpectedEof) => {
                return "connection closed before the response was complete";
            }
            _ => {}
        }
        match self.kind {
            Kind::Connect => "could not connect",
            Kind::Body => "the response body was interrupted",
            Kind::Timeout { .. } => "the request timed out",
            Kind::Other => "the request failed",
        }
    }
}

impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.describe())
    }
}

impl StdError for TransportError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_deref()
            .map(|s| s as &(dyn StdError + 'static))
    }
}

/// The first error of type `T` in `err`'s source chain (itself excluded).
fn find<'a, T: StdError + 'static>(err: &'a (dyn StdError + 'static)) -> Option<&'a T> {
    let mut source = err.source();
    while let Some(cause) = source {
        if let Some(found) = cause.downcast_ref::<T>() {
            return Some(found);
        }
        source = cause.source();
    }
    None
}

/// The kind of the first I/O error in `err`'s source chain.
fn io_kind(err: &(dyn StdError + 'static)) -> Option<std::io::ErrorKind> {
    find::<std::io::Error>(err).map(std::io::Error::kind)
}

impl Limits {
    /// Classifies a transport error, keeping it as the source.
    fn error(&self, err: TransportError) -> ModelError {
        if let Kind::Timeout { connect } = err.kind {
            let after = if connect {
                self.connect_timeout
            } else {
                self.timeout
            };
            return ModelError::Timeout { after: Some(after) };
        }
        ModelError::Connection {
            message: err.describe().to_owned(),
            source: Some(Box::new(err)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(1),
        }
    }

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn only_plain_http_without_a_proxy_goes_direct() {
        let local = || url("http://127.0.0.1:11434/v1/chat/completions");
        let direct = Transport::build(local(), limits(), true).unwrap();
        assert!(direct.is_direct());
        assert_eq!(
            direct.endpoint(),
            "http://127.0.0.1:11434/v1/chat/completions"
        );
        // Turned off, or a proxy in the environment (folded into `direct` by `new`).
        assert!(
            !Transport::build(local(), limits(), false)
                .unwrap()
                .is_direct()
        );
        let tls = url("https://api.openai.com/v1/chat/completions");
        assert!(!Transport::build(tls, limits(), true).unwrap().is_direct());
    }

    #[test]
    fn direct_requests_carry_the_host_and_the_path() {
        let cases = [
            (
                "http://127.0.0.1:11434/v1/chat/completions",
                ("127.0.0.1:11434", "127.0.0.1:11434", "/v1/chat/completions"),
            ),
            (
                "http://gateway.local/openai/v1/chat/completions?api-version=2",
                (
                    "gateway.local:80",
                    "gateway.local",
                    "/openai/v1/chat/completions?api-version=2",
                ),
            ),
            (
                "http://[::1]:8000/v1/messages",
                ("[::1]:8000", "[::1]:8000", "/v1/messages"),
            ),
        ];
        for (endpoint, (address, host, target)) in cases {
            let client = direct_client(&url(endpoint), &limits()).unwrap();
            let (a, h, t) = client.destination();
            assert_eq!(
                (a, h, t.to_string().as_str()),
                (address, host, target),
                "{endpoint}"
            );
        }
    }

    #[test]
    fn timeouts_say_which_limit_passed() {
        let limits = limits();
        let read = limits.error(TransportError::timeout());
        assert!(
            matches!(read, ModelError::Timeout { after: Some(d) } if d == limits.timeout),
            "{read:?}"
        );
        let connect = limits.error(TransportError::connect_timeout());
        assert!(
            matches!(connect, ModelError::Timeout { after: Some(d) } if d == limits.connect_timeout),
            "{connect:?}"
        );
    }
}
