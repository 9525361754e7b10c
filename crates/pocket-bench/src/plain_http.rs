//! hyper's pooled HTTP/1 client over plain TCP, as the load generator and the proxy's
//! `hyper` route send with it: no TLS, no redirect or retry layers, nothing parsed per request.

use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::{HeaderValue, Method, Request, Uri};
use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// The client type.
pub(crate) type PlainClient = Client<HttpConnector, Full<Bytes>>;

/// A pooled client with `TCP_NODELAY` on its connections.
pub(crate) fn client() -> PlainClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new()).build(connector)
}

/// `url` parsed once, if it is an `http://` URL with a host; otherwise why not, naming it.
pub(crate) fn uri(url: &str) -> Result<Uri, String> {
    let uri: Uri = url.parse().map_err(|e| format!("url `{url}`: {e}"))?;
    if uri.scheme_str() != Some("http") || uri.host().is_none() {
        return Err(format!("url `{url}` must be an http:// URL with a host"));
    }
    Ok(uri)
}

/// `POST uri` with a JSON `body` and, when given, an `Authorization` header.
pub(crate) fn post_json(
    uri: &Uri,
    body: Bytes,
    auth: Option<&HeaderValue>,
) -> Request<Full<Bytes>> {
    let mut request = Request::new(Full::new(body));
    *request.method_mut() = Method::POST;
    *request.uri_mut() = uri.clone();
    let headers = request.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Some(auth) = auth {
        headers.insert(AUTHORIZATION, auth.clone());
    }
    request
}
