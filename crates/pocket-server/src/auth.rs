//! Authentication: bearer keys compared in constant time, and the dashboard's sessions.
//!
//! A person signs in once with a key (`POST /v1/session`); the server answers with a cookie
//! holding an opaque random token (32 bytes from the OS), mapped in memory to its expiry. The
//! cookie is `HttpOnly` (scripts cannot read it), `SameSite=Strict` (other sites' pages do not
//! send it) and `Path=/`, and `Secure` behind a proxy that says `X-Forwarded-Proto: https`.
//! The key itself is never stored in the cookie. Keys and tokens are never logged.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::time::Instant;

use crate::Shared;
use crate::error::ApiError;

/// The session cookie's name.
pub(crate) const COOKIE: &str = "pocket_session";
/// Sessions kept at most; signing in beyond that ends the one closest to expiry.
const MAX_SESSIONS: usize = 10_000;

/// The accepted keys. `Debug` shows only how many there are.
pub(crate) struct Keys(Vec<Vec<u8>>);

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Keys({} redacted)", self.0.len())
    }
}

impl Keys {
    pub(crate) fn new(keys: Vec<String>) -> Self {
        Self(keys.into_iter().map(String::into_bytes).collect())
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `candidate` is one of the keys. Compares against every key, each in time
    /// independent of where the bytes differ.
    pub(crate) fn accepts(&self, candidate: &[u8]) -> bool {
        self.0
            .iter()
            .fold(false, |found, key| found | constant_time_eq(key, candidate))
    }
}

/// Equality whose running time depends only on the lengths, not on the contents.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// The dashboard's sessions: token → expiry. `Debug` shows only how many there are.
pub(crate) struct Sessions {
    ttl: Duration,
    live: Mutex<HashMap<String, Instant>>,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Sessions({} redacted, ttl {:?})",
            self.lock().len(),
            self.ttl
        )
    }
}

impl Sessions {
    pub(crate) fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            live: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Instant>> {
        self.live.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts a session; returns its token (64 hex digits).
    fn start(&self) -> Result<String, ApiError> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(|e| {
            ApiError::Internal(format!("no randomness from the OS for a session: {e}"))
        })?;
        let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let now = Instant::now();
        let mut live = self.lock();
        live.retain(|_, expires| *expires > now);
        if live.len() >= MAX_SESSIONS
            && let Some(oldest) = live
                .iter()
                .min_by_key(|(_, expires)| **expires)
                .map(|(t, _)| t.clone())
        {
            live.remove(&oldest);
        }
        live.insert(token.clone(), now + self.ttl);
        Ok(token)
    }

    /// Whether `token` names a session that has not expired.
    fn valid(&self, token: &str) -> bool {
        let now = Instant::now();
        let mut live = self.lock();
        match live.get(token) {
            Some(expires) if *expires > now => true,
            Some(_) => {
                live.remove(token);
                false
            }
            None => false,
        }
    }

    fn end(&self, token: &str) {
        self.lock().remove(token);
    }
}

/// The bearer key of the request, trimmed.
fn bearer(headers: &HeaderMap) -> Option<&[u8]> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
        .map(<[u8]>::trim_ascii)
}

/// The session token in the request's cookies.
fn session_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.trim())
}

/// Whether the request carries a known key or a live session (always, when no keys are
/// configured).
pub(crate) fn authenticated(state: &Shared, headers: &HeaderMap) -> bool {
    state.keys.is_empty()
        || bearer(headers).is_some_and(|key| state.keys.accepts(key))
        || session_token(headers).is_some_and(|token| state.sessions.valid(token))
}

/// Refuses requests without a known key or a live session (when keys are configured).
pub(crate) async fn require_key(State(state): State<Shared>, req: Request, next: Next) -> Response {
    if authenticated(&state, req.headers()) {
        next.run(req).await
    } else {
        ApiError::Unauthorized.into_response()
    }
}

/// `POST /v1/session`: the key as a form field `key` (the sign-in page) or JSON `{"key"}`.
/// A known key starts a session: the form gets a 303 to `/`, JSON a 204, both with the
/// cookie. An unknown key gets 401: the sign-in page again for the form, the JSON error
/// otherwise.
pub(crate) async fn sign_in(
    State(state): State<Shared>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().starts_with("application/json"));
    let key = if json {
        #[derive(serde::Deserialize)]
        struct SignIn {
            key: String,
        }
        match serde_json::from_slice::<SignIn>(&body) {
            Ok(SignIn { key }) => key.into_bytes(),
            Err(e) => {
                return ApiError::BadRequest(format!("expected {{\"key\": \"...\"}}: {e}"))
                    .into_response();
            }
        }
    } else {
        match form_field(&body, "key") {
            Some(key) => key,
            None => {
                return crate::dashboard::sign_in_page(
                    StatusCode::BAD_REQUEST,
                    "The form has no `key` field.",
                );
            }
        }
    };
    let key = key.trim_ascii();
    if !state.keys.is_empty() && !state.keys.accepts(key) {
        tracing::info!("dashboard sign-in refused: unknown key");
        return if json {
            ApiError::Unauthorized.into_response()
        } else {
            crate::dashboard::sign_in_page(StatusCode::UNAUTHORIZED, "That key is not valid.")
        };
    }
    let token = match state.sessions.start() {
        Ok(token) => token,
        Err(e) => return e.into_response(),
    };
    tracing::info!("dashboard session started");
    let cookie = format!(
        "{COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}{}",
        state.sessions.ttl.as_secs().max(1),
        secure_suffix(&headers)
    );
    let mut response = if json {
        StatusCode::NO_CONTENT.into_response()
    } else {
        (StatusCode::SEE_OTHER, [(header::LOCATION, "/")]).into_response()
    };
    set_cookie(&mut response, &cookie);
    response
}

/// `POST /v1/session/logout`: ends the session (if any), clears the cookie, 303 to `/`.
pub(crate) async fn sign_out(State(state): State<Shared>, headers: HeaderMap) -> Response {
    if let Some(token) = session_token(&headers) {
        state.sessions.end(token);
    }
    let cookie = format!(
        "{COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0{}",
        secure_suffix(&headers)
    );
    let mut response = (StatusCode::SEE_OTHER, [(header::LOCATION, "/")]).into_response();
    set_cookie(&mut response, &cookie);
    response
}

fn set_cookie(response: &mut Response, cookie: &str) {
    if let Ok(value) = HeaderValue::from_str(cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

/// `; Secure` when a proxy in front says the client came over HTTPS.
fn secure_suffix(headers: &HeaderMap) -> &'static str {
    let https = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("https"));
    if https { "; Secure" } else { "" }
}

/// The value of `name` in an `application/x-www-form-urlencoded` body, decoded.
fn form_field(body: &[u8], name: &str) -> Option<Vec<u8>> {
    body.split(|b| *b == b'&')
        .filter_map(|pair| {
            let mut parts = pair.splitn(2, |b| *b == b'=');
            Some((parts.next()?, parts.next().unwrap_or_default()))
        })
        .find(|(n, _)| url_decode(n) == name.as_bytes())
        .map(|(_, v)| url_decode(v))
}

fn url_decode(s: &[u8]) -> Vec<u8> {
    let hex = |b: u8| char::from(b).to_digit(16);
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < s.len() => match (hex(s[i + 1]), hex(s[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(u8::try_from(h * 16 + l).unwrap_or(b'?'));
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_eq_compares_contents_and_lengths() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(constant_time_eq(b"", b""));
    }

    #[test]
    fn keys_accept_any_configured_key_and_hide_them_in_debug() {
        let keys = Keys::new(vec!["one".into(), "two".into()]);
        assert!(keys.accepts(b"two"));
        assert!(!keys.accepts(b"three"));
        assert_eq!(format!("{keys:?}"), "Keys(2 redacted)");
    }

    #[test]
    fn form_fields_are_url_decoded() {
        assert_eq!(
            form_field(b"a=1&key=k%2By+z%3D&b=2", "key").unwrap(),
            b"k+y z="
        );
        assert_eq!(form_field(b"key=50%", "key").unwrap(), b"50%");
        assert_eq!(form_field(b"key=%zz", "key").unwrap(), b"%zz");
        assert_eq!(form_field(b"key", "key").unwrap(), b"");
        assert!(form_field(b"other=1", "key").is_none());
    }

    #[test]
    fn cookies_are_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; pocket_session=abc ; b=2"),
        );
        assert_eq!(session_token(&headers), Some("abc"));
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("pocket_sessionx=1"),
        );
        assert_eq!(session_token(&headers), None);
    }

    #[tokio::test]
    async fn sessions_are_random_expire_and_end() {
        let sessions = Sessions::new(Duration::from_secs(60));
        let a = sessions.start().unwrap();
        let b = sessions.start().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 64);
        assert!(sessions.valid(&a));
        assert!(!sessions.valid("nope"));
        sessions.end(&a);
        assert!(!sessions.valid(&a));
        assert!(sessions.valid(&b));
        assert_eq!(format!("{sessions:?}"), "Sessions(1 redacted, ttl 60s)");
        let short = Sessions::new(Duration::ZERO);
        let c = short.start().unwrap();
        assert!(!short.valid(&c), "a session past its expiry is refused");
    }
}
