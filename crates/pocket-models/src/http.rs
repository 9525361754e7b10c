//! What the HTTP providers share: the secret key type, client construction, the one mapping
//! from HTTP status, headers and body (or a transport error) to [`ModelError`], and the SSE
//! driver that turns a response body into a [`CompletionStream`].

use std::borrow::Cow;
use std::collections::VecDeque;
use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use eventsource_stream::{Event, EventStreamError, Eventsource};
use futures_util::StreamExt;
use pocket_agent::{Completion, CompletionStream, ModelError, StreamEvent, ToolSpec};
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, HeaderValue};
use serde::Deserialize;

use crate::transport::Response;

/// Longest provider message or body excerpt kept in an error, in bytes.
const MAX_ERROR_TEXT: usize = 500;
/// Most bytes of an error response body that are read.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// An API key. Its `Debug` prints `[redacted]` and it has no `Display`, so it cannot end up in
/// a log line or an error message by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    /// Wraps a key.
    pub fn new(key: impl Into<String>) -> Self {
        Self(key.into())
    }

    /// The key itself, for the one place that puts it in a request header.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl From<String> for ApiKey {
    fn from(key: String) -> Self {
        Self(key)
    }
}

impl From<&str> for ApiKey {
    fn from(key: &str) -> Self {
        Self(key.to_owned())
    }
}

/// A provider could not be set up from its configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A required environment variable is not set (or is empty).
    #[error("environment variable {var} is not set")]
    MissingEnv {
        /// The variable's name.
        var: &'static str,
    },
    /// The base URL is not an absolute `http`/`https` URL.
    #[error("invalid base URL `{url}`: {reason}")]
    InvalidBaseUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The API key has characters that an HTTP header cannot carry. The key is not shown.
    #[error("the API key contains characters not allowed in an HTTP header")]
    InvalidApiKey,
    /// The HTTP client could not be built (TLS backend initialisation, say).
    #[error("could not build the HTTP client")]
    Client {
        /// The underlying error.
        #[source]
        source: Box<dyn StdError + Send + Sync + 'static>,
    },
}

/// A trimmed environment value, or `None` if it is unset or empty.
pub(crate) fn non_empty(value: Option<String>) -> Option<String> {
    value.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
}

/// Checks a base URL and returns it without a trailing slash.
pub(crate) fn normalize_base_url(url: &str) -> Result<String, ConfigError> {
    let trimmed = url.trim().trim_end_matches('/');
    let invalid = |reason: String| ConfigError::InvalidBaseUrl {
        url: url.to_owned(),
        reason,
    };
    let parsed = reqwest::Url::parse(trimmed).map_err(|e| invalid(e.to_string()))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(invalid(format!(
            "scheme must be http or https, not `{}`",
            parsed.scheme()
        )));
    }
    Ok(trimmed.to_owned())
}

/// `path` under a checked base URL, parsed once here rather than on every request.
pub(crate) fn endpoint(base_url: &str, path: &str) -> Result<reqwest::Url, ConfigError> {
    let base = normalize_base_url(base_url)?;
    reqwest::Url::parse(&format!("{base}{path}")).map_err(|e| ConfigError::InvalidBaseUrl {
        url: base_url.to_owned(),
        reason: e.to_string(),
    })
}

/// A header value carrying a secret; marked sensitive so HTTP-level debug output hides it.
pub(crate) fn secret_header(value: &str) -> Result<HeaderValue, ConfigError> {
    let mut header = HeaderValue::from_str(value).map_err(|_| ConfigError::InvalidApiKey)?;
    header.set_sensitive(true);
    Ok(header)
}

/// The time limits of a provider, kept so errors can say which limit was passed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Whole-call limit of a non-streaming call; idle limit between chunks of a stream.
    pub(crate) timeout: Duration,
    /// Limit of establishing the connection.
    pub(crate) connect_timeout: Duration,
}

impl Limits {
    /// An HTTP client with these limits. `read_timeout` bounds the wait for the response
    /// headers and each gap between body chunks; non-streaming calls add a total limit per
    /// request. No retries: those belong to the resilience layer.
    pub(crate) fn client(&self) -> Result<reqwest::Client, ConfigError> {
        reqwest::Client::builder()
            .user_agent(concat!("pocket-agent/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(self.connect_timeout)
            .read_timeout(self.timeout)
            // A provider's API answers where it is asked; a redirect is reported as the
            // error it is rather than followed (with the key) somewhere else. It also
            // spares cloning every request in case a redirect comes.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| ConfigError::Client {
                source: Box::new(e),
            })
    }
}

/// Passes a successful response through; turns any other into the [`ModelError`] its status,
/// headers and (size-capped) body call for. A body that echoes the API key has it redacted
/// before any of it reaches the error.
pub(crate) async fn check_status(
    mut response: Response,
    key: Option<&ApiKey>,
) -> Result<Response, ModelError> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let mut body = Vec::new();
    // A body that fails half-way still tells the status; classify on what arrived.
    while body.len() < MAX_ERROR_BODY {
        match response.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            Ok(None) => break,
            Err(e) => {
                tracing::debug!(cause = %e, "error body interrupted");
                break;
            }
        }
    }
    if let Some(key) = key {
        body = redact(body, key);
    }
    let err = error_from_response(status, response.headers(), &body, SystemTime::now());
    tracing::debug!(status = status.as_u16(), error = %err, "model call failed");
    Err(err)
}

/// The body with every occurrence of the key replaced by `[redacted]`.
fn redact(body: Vec<u8>, key: &ApiKey) -> Vec<u8> {
    let key = key.expose().as_bytes();
    if key.is_empty() || !body.windows(key.len()).any(|w| w == key) {
        return body;
    }
    let mut out = Vec::with_capacity(body.len());
    let mut rest = body.as_slice();
    while !rest.is_empty() {
        if rest.starts_with(key) {
            out.extend_from_slice(b"[redacted]");
            rest = &rest[key.len()..];
        } else {
            out.push(rest[0]);
            rest = &rest[1..];
        }
    }
    out
}

/// The one mapping from an HTTP error response to a [`ModelError`], for every provider.
///
/// - 429 → [`ModelError::RateLimited`] with Retry-After, except OpenAI's
///   `insufficient_quota` (a billing state that waiting does not fix) → `InvalidRequest`.
/// - 5xx and Anthropic's 529 → [`ModelError::Server`] with Retry-After.
/// - 401/403 → [`ModelError::Auth`].
/// - 408 → [`ModelError::Timeout`].
/// - 400/413 whose body says the prompt does not fit → [`ModelError::ContextLength`].
/// - other 4xx → [`ModelError::InvalidRequest`].
pub(crate) fn error_from_response(
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
    now: SystemTime,
) -> ModelError {
    let code = status.as_u16();
    let details = ErrorDetails::parse(body);
    let message = details.message.clone().unwrap_or_else(|| {
        let text = excerpt(body);
        if text.is_empty() {
            status.canonical_reason().unwrap_or("no message").to_owned()
        } else {
            text
        }
    });
    match code {
        429 if details.has_marker(&["insufficient_quota"]) => ModelError::InvalidRequest {
            status: code,
            message,
        },
        429 => ModelError::RateLimited {
            message,
            retry_after: retry_after(headers, now),
        },
        401 | 403 => ModelError::Auth {
            status: code,
            message,
        },
        408 => ModelError::Timeout { after: None },
        400 | 413 if details.is_context_length(body) => ModelError::ContextLength { message },
        400..=499 => ModelError::InvalidRequest {
            status: code,
            message,
        },
        500..=599 => ModelError::Server {
            status: code,
            message,
            retry_after: retry_after(headers, now),
        },
        _ => ModelError::malformed(format!("unexpected HTTP status {code}: {message}")),
    }
}

/// An error the provider reported inside a 200 stream (OpenAI-compatible servers send
/// `{"error": {...}}`, Anthropic an `error` event), mapped as the HTTP status its type names.
pub(crate) fn error_from_stream(data: &str) -> ModelError {
    let details = ErrorDetails::parse(data.as_bytes());
    let status = status_for_error_type(details.kind.as_deref().unwrap_or_default());
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    error_from_response(
        status,
        &HeaderMap::new(),
        data.as_bytes(),
        SystemTime::now(),
    )
}

/// The HTTP status an error type stands for (Anthropic documents these pairs; OpenAI's types
/// are similar). Unknown types count as a server failure: the stream broke on their side.
fn status_for_error_type(kind: &str) -> u16 {
    match kind {
        "invalid_request_error" | "BadRequestError" => 400,
        "authentication_error" => 401,
        "permission_error" => 403,
        "not_found_error" => 404,
        "request_too_large" => 413,
        "rate_limit_error" | "rate_limit_exceeded" | "tokens" | "requests" => 429,
        "overloaded_error" => 529,
        _ => 500,
    }
}

/// What an error body says, in the shapes providers use:
/// `{"error": {"message", "type", "code"}}` (OpenAI, Anthropic), `{"error": "..."}` (Ollama),
/// `{"message", "type", "code"}` (vLLM) and `{"detail": "..."}` (FastAPI servers).
#[derive(Debug, Default)]
struct ErrorDetails {
    message: Option<String>,
    kind: Option<String>,
    code: Option<String>,
}

impl ErrorDetails {
    fn parse(body: &[u8]) -> Self {
        #[derive(Deserialize)]
        struct Envelope {
            #[serde(default)]
            error: Option<serde_json::Value>,
            #[serde(default)]
            message: Option<serde_json::Value>,
            #[serde(default, rename = "type")]
            kind: Option<serde_json::Value>,
            #[serde(default)]
            code: Option<serde_json::Value>,
            #[serde(default)]
            detail: Option<serde_json::Value>,
        }
        fn text(v: Option<&serde_json::Value>) -> Option<String> {
            match v? {
                serde_json::Value::String(s) if !s.is_empty() => Some(s.clone()),
                serde_json::Value::Number(n) => Some(n.to_string()),
                _ => None,
            }
        }
        let Ok(env) = serde_json::from_slice::<Envelope>(body) else {
            return Self::default();
        };
        match env.error {
            Some(serde_json::Value::Object(obj)) => Self {
                message: text(obj.get("message")).map(|m| truncate(&m)),
                kind: text(obj.get("type")),
                code: text(obj.get("code")),
            },
            Some(serde_json::Value::String(s)) => Self {
                message: Some(truncate(&s)),
                ..Self::default()
            },
            _ => Self {
                message: text(env.message.as_ref())
                    .or_else(|| text(env.detail.as_ref()))
                    .map(|m| truncate(&m)),
                kind: text(env.kind.as_ref()),
                code: text(env.code.as_ref()),
            },
        }
    }

    fn has_marker(&self, markers: &[&str]) -> bool {
        [&self.kind, &self.code]
            .into_iter()
            .flatten()
            .any(|v| markers.contains(&v.as_str()))
    }

    /// Whether the error says the prompt does not fit the context window. Codes first, then
    /// the phrasings of OpenAI, vLLM, llama.cpp and Anthropic.
    fn is_context_length(&self, body: &[u8]) -> bool {
        if self.has_marker(&["context_length_exceeded", "exceed_context_size_error"]) {
            return true;
        }
        let text = match &self.message {
            Some(m) => m.to_ascii_lowercase(),
            None => String::from_utf8_lossy(body).to_ascii_lowercase(),
        };
        [
            "context length",
            "maximum context",
            "context window",
            "context size",
            "prompt is too long",
        ]
        .iter()
        .any(|p| text.contains(p))
    }
}

/// The body as text, cut to [`MAX_ERROR_TEXT`] bytes at a character boundary.
fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    truncate(text.trim())
}

fn truncate(text: &str) -> String {
    if text.len() <= MAX_ERROR_TEXT {
        return text.to_owned();
    }
    let end = text.floor_char_boundary(MAX_ERROR_TEXT);
    format!("{}…", &text[..end])
}

/// How long the provider asked us to wait: `retry-after-ms` (milliseconds, OpenAI), else
/// `retry-after` as seconds or an HTTP date (a date in the past means no wait).
pub(crate) fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    if let Some(ms) = header("retry-after-ms").and_then(|v| v.parse::<f64>().ok())
        && ms.is_finite()
        && ms >= 0.0
    {
        return Some(Duration::from_secs_f64(ms / 1000.0));
    }
    let value = header("retry-after")?;
    if let Ok(secs) = value.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs));
    }
    let at = parse_http_date(value)?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Parses an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), the only date format RFC 9110
/// asks senders to use.
fn parse_http_date(value: &str) -> Option<SystemTime> {
    let mut parts = value.split_ascii_whitespace();
    let _weekday = parts.next()?.strip_suffix(',')?;
    let day: u32 = parts.next()?.parse().ok()?;
    let month = match parts.next()? {
        "Jan" => 1,
        "Feb" => 2,
        "Mar" => 3,
        "Apr" => 4,
        "May" => 5,
        "Jun" => 6,
        "Jul" => 7,
        "Aug" => 8,
        "Sep" => 9,
        "Oct" => 10,
        "Nov" => 11,
        "Dec" => 12,
        _ => return None,
    };
    let year: i64 = parts.next()?.parse().ok()?;
    let mut clock = parts.next()?.split(':').map(|p| p.parse::<u64>().ok());
    let (h, m, s) = (clock.next()??, clock.next()??, clock.next()??);
    if parts.next()? != "GMT" || parts.next().is_some() || clock.next().is_some() {
        return None;
    }
    if !(1..=31).contains(&day) || h > 23 || m > 59 || s > 60 {
        return None;
    }
    let days = days_from_civil(year, month, day);
    let secs = u64::try_from(days).ok()? * 86_400 + h * 3600 + m * 60 + s;
    UNIX_EPOCH.checked_add(Duration::from_secs(secs))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Whether a response is an event stream (some servers ignore `stream: true` and answer with
/// one JSON document).
pub(crate) fn is_event_stream(response: &Response) -> bool {
    response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().starts_with("text/event-stream"))
}

/// A provider's streaming protocol: turns SSE events into [`StreamEvent`]s and assembles the
/// final [`Completion`].
pub(crate) trait SseDecoder: Send + 'static {
    /// Handles one event, queueing what it yields. Returns `true` once the provider has said
    /// the completion is over (`[DONE]`, `message_stop`).
    fn on_event(
        &mut self,
        event: &Event,
        out: &mut VecDeque<StreamEvent>,
    ) -> Result<bool, ModelError>;

    /// The assembled completion. `ended` says whether the provider's end marker was seen; a
    /// decoder may accept a stream without one if the completion is otherwise whole.
    fn finish(self, ended: bool) -> Result<Completion, ModelError>;
}

struct Driver<S, D> {
    events: S,
    decoder: Option<D>,
    pending: VecDeque<StreamEvent>,
    ended: bool,
}

/// Runs a decoder over a streaming response. The stream ends after the first error or after
/// [`StreamEvent::Done`].
pub(crate) fn drive<D: SseDecoder>(response: Response, decoder: D) -> CompletionStream {
    let driver = Driver {
        events: response.bytes_stream().eventsource(),
        decoder: Some(decoder),
        pending: VecDeque::new(),
        ended: false,
    };
    Box::pin(futures_util::stream::unfold(driver, |mut d| async move {
        loop {
            if let Some(event) = d.pending.pop_front() {
                return Some((Ok(event), d));
            }
            let decoder = d.decoder.as_mut()?;
            if d.ended {
                let decoder = d.decoder.take()?;
                return Some((decoder.finish(true).map(StreamEvent::Done), d));
            }
            match d.events.next().await {
                Some(Ok(event)) => match decoder.on_event(&event, &mut d.pending) {
                    Ok(ended) => d.ended = ended,
                    Err(e) => {
                        d.decoder = None;
                        d.pending.clear();
                        return Some((Err(e), d));
                    }
                },
                Some(Err(e)) => {
                    d.decoder = None;
                    let err = match e {
                        EventStreamError::Transport(e) => e,
                        EventStreamError::Utf8(e) => {
                            ModelError::malformed(format!("event stream is not UTF-8: {e}"))
                        }
                        EventStreamError::Parser(e) => {
                            ModelError::malformed(format!("invalid event stream: {e}"))
                        }
                    };
                    return Some((Err(err), d));
                }
                None => {
                    let decoder = d.decoder.take()?;
                    return Some((decoder.finish(false).map(StreamEvent::Done), d));
                }
            }
        }
    }))
}

/// The error of a stream that stopped before the provider said it was complete.
pub(crate) fn truncated_stream() -> ModelError {
    ModelError::Connection {
        message: "the event stream ended before the completion was complete".to_owned(),
        source: None,
    }
}

/// Tool-call arguments from their JSON text: empty text is `{}` (a call without arguments);
/// text that is not JSON is kept as a JSON string so the agent can tell the model.
pub(crate) fn parse_arguments(raw: &str) -> serde_json::Value {
    if raw.trim().is_empty() {
        return serde_json::Value::Object(serde_json::Map::new());
    }
    serde_json::from_str(raw).unwrap_or_else(|_| serde_json::Value::String(raw.to_owned()))
}

/// A [`ModelError::MalformedResponse`] for a body that is not the JSON we expect.
pub(crate) fn malformed_json(err: &serde_json::Error, body: &[u8]) -> ModelError {
    ModelError::malformed(format!("{err}; body: {}", excerpt(body)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        map
    }

    fn map(status: u16, hdrs: &[(&'static str, &str)], body: &str) -> ModelError {
        error_from_response(
            StatusCode::from_u16(status).unwrap(),
            &headers(hdrs),
            body.as_bytes(),
            UNIX_EPOCH + Duration::from_secs(784_111_777), // Sun, 06 Nov 1994 08:49:37 GMT
        )
    }

    #[test]
    fn arguments_parse_or_stay_raw() {
        use serde_json::json;
        assert_eq!(parse_arguments(r#"{"a":1}"#), json!({"a": 1}));
        assert_eq!(parse_arguments("  "), json!({}));
        assert_eq!(parse_arguments("{oops"), json!("{oops"));
    }

    #[test]
    fn echoed_keys_are_redacted_from_bodies() {
        let key = ApiKey::new("sk-123");
        assert_eq!(
            redact(b"bad key sk-123, really sk-123".to_vec(), &key),
            b"bad key [redacted], really [redacted]"
        );
        assert_eq!(redact(b"sk-12".to_vec(), &key), b"sk-12");
    }

    #[test]
    fn api_key_debug_is_redacted() {
        let key = ApiKey::new("sk-secret");
        assert_eq!(format!("{key:?}"), "[redacted]");
        assert_eq!(key.expose(), "sk-secret");
    }

    #[test]
    fn http_date_parses_imf_fixdate() {
        let t = parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        assert_eq!(t, UNIX_EPOCH + Duration::from_secs(784_111_777));
        assert_eq!(
            parse_http_date("Thu, 01 Jan 1970 00:00:00 GMT"),
            Some(UNIX_EPOCH)
        );
        assert_eq!(parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT"), None);
        assert_eq!(parse_http_date("Sun, 06 Nov 1994 08:49:37 UTC"), None);
        assert_eq!(parse_http_date("soon"), None);
    }

    #[test]
    fn retry_after_forms() {
        let now = UNIX_EPOCH + Duration::from_secs(784_111_777);
        let get = |pairs: &[(&'static str, &str)]| retry_after(&headers(pairs), now);
        assert_eq!(get(&[("retry-after", "7")]), Some(Duration::from_secs(7)));
        assert_eq!(
            get(&[("retry-after", "1.5")]),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(
            get(&[("retry-after", "Sun, 06 Nov 1994 08:50:07 GMT")]),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            get(&[("retry-after", "Sun, 06 Nov 1994 08:00:00 GMT")]),
            Some(Duration::ZERO)
        );
        assert_eq!(
            get(&[("retry-after", "7"), ("retry-after-ms", "250")]),
            Some(Duration::from_millis(250))
        );
        assert_eq!(get(&[("retry-after", "-3")]), None);
        assert_eq!(get(&[("retry-after", "later")]), None);
        assert_eq!(get(&[]), None);
    }

    #[test]
    fn status_mapping() {
        let openai = r#"{"error":{"message":"Rate limit reached","type":"requests","code":"rate_limit_exceeded"}}"#;
        match map(429, &[("retry-after", "2")], openai) {
            ModelError::RateLimited {
                message,
                retry_after,
            } => {
                assert_eq!(message, "Rate limit reached");
                assert_eq!(retry_after, Some(Duration::from_secs(2)));
            }
            other => panic!("{other:?}"),
        }
        let quota = r#"{"error":{"message":"You exceeded your current quota","type":"insufficient_quota","code":"insufficient_quota"}}"#;
        assert!(matches!(
            map(429, &[], quota),
            ModelError::InvalidRequest { status: 429, .. }
        ));
        assert!(matches!(
            map(500, &[], "boom"),
            ModelError::Server { status: 500, ref message, retry_after: None } if message == "boom"
        ));
        assert!(matches!(
            map(529, &[("retry-after", "1")], r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#),
            ModelError::Server { status: 529, ref message, retry_after: Some(d) }
                if message == "Overloaded" && d == Duration::from_secs(1)
        ));
        assert!(matches!(
            map(401, &[], r#"{"error":"unauthorized"}"#),
            ModelError::Auth { status: 401, ref message } if message == "unauthorized"
        ));
        assert!(
            matches!(map(403, &[], ""), ModelError::Auth { status: 403, ref message } if message == "Forbidden")
        );
        assert!(matches!(
            map(408, &[], ""),
            ModelError::Timeout { after: None }
        ));
        assert!(matches!(
            map(404, &[], r#"{"detail":"Not Found"}"#),
            ModelError::InvalidRequest { status: 404, ref message } if message == "Not Found"
        ));
        assert!(matches!(
            map(302, &[], ""),
            ModelError::MalformedResponse { .. }
        ));
    }

    #[test]
    fn context_length_phrasings() {
        for body in [
            r#"{"error":{"message":"too many tokens","type":"invalid_request_error","code":"context_length_exceeded"}}"#,
            r#"{"object":"error","message":"This model's maximum context length is 4096 tokens.","type":"BadRequestError","code":400}"#,
            r#"{"error":{"code":400,"message":"the request exceeds the available context size","type":"exceed_context_size_error"}}"#,
            r#"{"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long: 201000 tokens > 200000 maximum"}}"#,
            "Input exceeds the context length of this model",
        ] {
            assert!(
                matches!(map(400, &[], body), ModelError::ContextLength { .. }),
                "{body}"
            );
        }
        assert!(matches!(
            map(400, &[], r#"{"error":{"message":"temperature must be <= 2"}}"#),
            ModelError::InvalidRequest { status: 400, ref message } if message == "temperature must be <= 2"
        ));
        // Only a 400/413 is about the request's size.
        assert!(matches!(
            map(500, &[], "maximum context exceeded in worker"),
            ModelError::Server { .. }
        ));
    }

    #[test]
    fn long_bodies_are_cut_at_a_char_boundary() {
        let body = "é".repeat(400);
        let ModelError::InvalidRequest { message, .. } = map(422, &[], &body) else {
            panic!()
        };
        assert!(message.ends_with('…'));
        assert!(message.len() <= MAX_ERROR_TEXT + '…'.len_utf8());
    }

    #[test]
    fn stream_errors_map_by_type() {
        assert!(matches!(
            error_from_stream(
                r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#
            ),
            ModelError::Server { status: 529, .. }
        ));
        assert!(matches!(
            error_from_stream(r#"{"error":{"message":"rate","type":"rate_limit_error"}}"#),
            ModelError::RateLimited { .. }
        ));
        assert!(matches!(
            error_from_stream(
                r#"{"error":{"message":"prompt is too long","type":"invalid_request_error"}}"#
            ),
            ModelError::ContextLength { .. }
        ));
        assert!(matches!(
            error_from_stream(r#"{"error":{"message":"kaput"}}"#),
            ModelError::Server { status: 500, .. }
        ));
    }

    #[test]
    fn base_urls_are_checked_and_trimmed() {
        assert_eq!(
            normalize_base_url("http://localhost:8000/v1/").unwrap(),
            "http://localhost:8000/v1"
        );
        assert!(matches!(
            normalize_base_url("localhost:8000"),
            Err(ConfigError::InvalidBaseUrl { .. })
        ));
        assert!(matches!(
            normalize_base_url("ftp://example.com"),
            Err(ConfigError::InvalidBaseUrl { .. })
        ));
    }

    #[test]
    fn secret_header_rejects_newlines_without_echoing_the_key() {
        let err = secret_header("sk-abc\nInjected: 1").unwrap_err();
        assert!(!err.to_string().contains("sk-abc"));
        assert!(secret_header("sk-abc").unwrap().is_sensitive());
    }
}

// ---- tool names on the wire ----

/// OpenAI and Anthropic accept tool names matching `^[a-zA-Z0-9_-]{1,64}$`.
fn is_wire_safe(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// A tool's name as providers accept it: unchanged when it already fits; otherwise `.` becomes
/// `__`, any other character outside `[a-zA-Z0-9_-]` becomes `_`, and a name over 64 bytes
/// keeps 55 of them plus `_` and an 8-digit hash. MCP tools (`fs.read_file`) need this.
pub(crate) fn wire_name(name: &str) -> Cow<'_, str> {
    if is_wire_safe(name) {
        return Cow::Borrowed(name);
    }
    let mut out = String::with_capacity(name.len() + 4);
    for c in name.chars() {
        match c {
            '.' => out.push_str("__"),
            c if c.is_ascii_alphanumeric() || c == '_' || c == '-' => out.push(c),
            _ => out.push('_'),
        }
    }
    if out.is_empty() {
        out.push('_');
    }
    if out.len() > 64 {
        // FNV-1a of the real name keeps long names apart.
        let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        out.truncate(55);
        out.push_str(&format!("_{:08x}", hash as u32));
    }
    Cow::Owned(out)
}

/// The real name of a tool the provider called by its wire name.
fn real_name(wire: String, tools: &[ToolSpec]) -> String {
    if is_wire_safe(&wire) && tools.iter().any(|t| t.name == wire) {
        return wire;
    }
    tools
        .iter()
        .find(|t| wire_name(&t.name) == wire.as_str())
        .map_or(wire, |t| t.name.clone())
}

/// Whether any of the request's tools is renamed on the wire.
fn renames(tools: &[ToolSpec]) -> bool {
    tools.iter().any(|t| !is_wire_safe(&t.name))
}

/// Gives the completion's tool calls their real names.
pub(crate) fn restore_names(mut completion: Completion, tools: &[ToolSpec]) -> Completion {
    if renames(tools) {
        for call in &mut completion.tool_calls {
            call.name = real_name(std::mem::take(&mut call.name), tools);
        }
    }
    completion
}

/// Gives the stream's tool calls their real names.
pub(crate) fn restore_stream(stream: CompletionStream, tools: Arc<[ToolSpec]>) -> CompletionStream {
    if !renames(&tools) {
        return stream;
    }
    Box::pin(stream.map(move |item| {
        item.map(|event| match event {
            StreamEvent::ToolCallStart { index, id, name } => StreamEvent::ToolCallStart {
                index,
                id,
                name: real_name(name, &tools),
            },
            StreamEvent::Done(c) => StreamEvent::Done(restore_names(c, &tools)),
            other => other,
        })
    }))
}

#[cfg(test)]
mod wire_name_tests {
    use super::*;

    fn spec(name: &str) -> ToolSpec {
        ToolSpec::new(name, "", serde_json::json!({"type": "object"}))
    }

    #[test]
    fn safe_names_are_unchanged_and_dots_are_encoded() {
        assert_eq!(wire_name("read_file"), "read_file");
        assert_eq!(wire_name("fs.read_text_file"), "fs__read_text_file");
        assert_eq!(wire_name("a b/c"), "a_b_c");
        let long = "x".repeat(80);
        let w = wire_name(&long);
        assert_eq!(w.len(), 64);
        assert_ne!(wire_name(&"x".repeat(81)), w, "long names stay apart");
    }

    #[test]
    fn wire_names_decode_to_the_request_tools() {
        let tools = [spec("fs.read_text_file"), spec("calculator")];
        assert_eq!(
            real_name("fs__read_text_file".into(), &tools),
            "fs.read_text_file"
        );
        assert_eq!(real_name("calculator".into(), &tools), "calculator");
        assert_eq!(real_name("unknown".into(), &tools), "unknown");
        let c = restore_names(
            Completion::tool_calls(vec![pocket_agent::ToolCall {
                id: "1".into(),
                name: "fs__read_text_file".into(),
                arguments: serde_json::json!({}),
            }]),
            &tools,
        );
        assert_eq!(c.tool_calls[0].name, "fs.read_text_file");
    }
}
