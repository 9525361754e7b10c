//! The dashboard at `/`: the page for a signed-in request (a session cookie or a bearer key),
//! else 401 with the sign-in page. Everything is in the binary: no CDN, no build step.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::Shared;

const PAGE: &str = include_str!("dashboard.html");
const SCRIPT: &str = include_str!("dashboard.js");
const SIGN_IN: &str = include_str!("signin.html");

/// Scripts only from this origin (`/dashboard.js`), data only from it, no frames, forms
/// only to it.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; \
    connect-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; \
    base-uri 'none'";

/// `GET /`: the dashboard, or 401 with the sign-in page.
pub(crate) async fn page(State(state): State<Shared>, headers: HeaderMap) -> Response {
    if crate::auth::authenticated(&state, &headers) {
        respond(StatusCode::OK, "text/html; charset=utf-8", PAGE.to_owned())
    } else {
        sign_in_page(StatusCode::UNAUTHORIZED, "")
    }
}

/// `GET /dashboard.js` (behind auth): the page's script.
pub(crate) async fn script() -> Response {
    respond(
        StatusCode::OK,
        "text/javascript; charset=utf-8",
        SCRIPT.to_owned(),
    )
}

/// The sign-in page with `message` (plain text) above the form.
pub(crate) fn sign_in_page(status: StatusCode, message: &str) -> Response {
    let body = SIGN_IN.replace("{{message}}", &escape(message));
    respond(status, "text/html; charset=utf-8", body)
}

fn respond(status: StatusCode, content_type: &'static str, body: String) -> Response {
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_TYPE, content_type),
        (header::CACHE_CONTROL, "no-store"),
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_in_page_escapes_its_message() {
        assert_eq!(escape("<b>&\"</b>"), "&lt;b&gt;&amp;&quot;&lt;/b&gt;");
        assert!(SIGN_IN.contains("{{message}}"));
        assert!(PAGE.contains("/dashboard.js"));
    }
}
