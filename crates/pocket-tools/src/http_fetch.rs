//! `http_fetch`: GET a URL, with a time limit, a size limit and an address policy.
//!
//! Secure by default: hosts that are, or resolve to, loopback, private, link-local or other
//! non-public addresses are refused unless [`HttpFetchConfig::allow_private`] is set. The
//! check runs inside the client's DNS resolver, so the address checked is the address
//! connected to (no DNS-rebinding gap), and again on every redirect. System proxies are not
//! used, since a proxy would connect on our behalf to addresses we never see.

use std::error::Error as StdError;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use pocket_agent::{Risk, Tool, ToolContext, ToolError};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::{Url, redirect};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::config::{HttpFetchConfig, positive_bytes, positive_secs};
use crate::error::ToolsError;
use crate::text::lossy_text;

/// Most redirects followed.
pub const MAX_REDIRECTS: usize = 10;

/// Arguments of [`HttpFetch`].
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpFetchArgs {
    /// The `http://` or `https://` URL to GET.
    pub url: String,
}

/// What [`HttpFetch`] returns. A non-2xx status is a result too, not an error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpFetchOutput {
    /// The final URL, after redirects.
    pub url: String,
    /// The HTTP status code.
    pub status: u16,
    /// The `Content-Type` header, if any.
    pub content_type: Option<String>,
    /// The body as text; invalid UTF-8 is replaced by U+FFFD.
    pub body: String,
    /// Whether the body was cut at the size limit.
    pub truncated: bool,
}

/// The `http_fetch` tool: GETs a URL and returns status, content type and body.
///
/// [`Risk::Sensitive`]; idempotent (GET). Network failures are retryable
/// [`ToolError::Failed`]; passing the time limit is [`ToolError::Timeout`]; refused hosts
/// are [`ToolError::Denied`].
#[derive(Debug, Clone)]
pub struct HttpFetch {
    client: reqwest::Client,
    policy: Arc<Policy>,
    timeout: Duration,
    max_bytes: usize,
}

impl HttpFetch {
    /// A fetcher with the limits and policy of `config`.
    ///
    /// # Errors
    /// [`ToolsError::InvalidConfig`] for a zero limit or an empty host entry, naming the key;
    /// [`ToolsError::HttpClient`] when the client cannot be built.
    pub fn new(config: &HttpFetchConfig) -> Result<Self, ToolsError> {
        let timeout = positive_secs("tools.http_fetch.timeout_secs", config.timeout_secs)?;
        let max_bytes = positive_bytes("tools.http_fetch.max_bytes", config.max_bytes)?;
        let mut allowed_hosts = Vec::with_capacity(config.allowed_hosts.len());
        for host in &config.allowed_hosts {
            let host = normalize_host(host);
            if host.is_empty() {
                return Err(ToolsError::InvalidConfig {
                    key: "tools.http_fetch.allowed_hosts",
                    message: "contains an empty host".into(),
                });
            }
            allowed_hosts.push(host);
        }
        let policy = Arc::new(Policy {
            allow_private: config.allow_private,
            allowed_hosts,
        });
        let redirect_policy = {
            let policy = Arc::clone(&policy);
            redirect::Policy::custom(move |attempt| {
                if attempt.previous().len() >= MAX_REDIRECTS {
                    return attempt.error(Refusal::TooManyRedirects);
                }
                match policy.check_url(attempt.url()) {
                    Ok(()) => attempt.follow(),
                    Err(refusal) => attempt.error(refusal),
                }
            })
        };
        let client = reqwest::Client::builder()
            .user_agent(concat!("pocket-agent/", env!("CARGO_PKG_VERSION")))
            .no_proxy()
            .redirect(redirect_policy)
            .dns_resolver(GuardedResolver {
                policy: Arc::clone(&policy),
            })
            .build()
            .map_err(ToolsError::HttpClient)?;
        Ok(Self {
            client,
            policy,
            timeout,
            max_bytes,
        })
    }

    /// Sets the time limit of one fetch (connecting and reading the body included).
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets the largest body returned, in bytes.
    #[must_use]
    pub fn with_max_bytes(mut self, max_bytes: usize) -> Self {
        self.max_bytes = max_bytes;
        self
    }

    async fn fetch(&self, url: Url) -> Result<HttpFetchOutput, ToolError> {
        let response = self
            .client
            .get(url.clone())
            .send()
            .await
            .map_err(|e| request_error(&url, &e))?;
        let status = response.status().as_u16();
        let final_url = response.url().to_string();
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(String::from);
        let mut body = Vec::new();
        let mut truncated = false;
        let mut stream = response.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| request_error(&url, &e))?;
            let room = self.max_bytes - body.len();
            if chunk.len() > room {
                body.extend_from_slice(&chunk[..room]);
                truncated = true;
                break;
            }
            body.extend_from_slice(&chunk);
        }
        tracing::debug!(url = %final_url, status, bytes = body.len(), truncated, "fetched");
        Ok(HttpFetchOutput {
            url: final_url,
            status,
            content_type,
            body: lossy_text(body, truncated),
            truncated,
        })
    }
}

impl Tool for HttpFetch {
    type Args = HttpFetchArgs;
    type Output = HttpFetchOutput;

    fn name(&self) -> &str {
        "http_fetch"
    }

    fn description(&self) -> &str {
        "Fetches a URL with HTTP GET and returns the status code, content type and body text \
         (cut at a size limit; `truncated` says so). Only http and https URLs of public hosts."
    }

    fn risk(&self) -> Risk {
        Risk::Sensitive
    }

    fn idempotent(&self) -> bool {
        true
    }

    fn timeout(&self) -> Option<Duration> {
        // A little beyond our own limit, so ours fires first with its clearer error.
        Some(self.timeout + Duration::from_secs(5))
    }

    async fn call(
        &self,
        args: HttpFetchArgs,
        ctx: &ToolContext,
    ) -> Result<HttpFetchOutput, ToolError> {
        let url = Url::parse(args.url.trim()).map_err(|e| {
            ToolError::invalid_arguments(format!("url `{}` is not a valid URL: {e}", args.url))
        })?;
        self.policy
            .check_url(&url)
            .map_err(|refusal| refusal.into_tool_error())?;
        tokio::select! {
            result = tokio::time::timeout(self.timeout, self.fetch(url)) => {
                result.unwrap_or(Err(ToolError::Timeout { after: self.timeout }))
            }
            () = ctx.cancel.cancelled() => Err(ToolError::Cancelled),
        }
    }
}

/// Which URLs and addresses may be fetched.
#[derive(Debug)]
struct Policy {
    allow_private: bool,
    /// Normalized (lowercase, no trailing dot); empty means any.
    allowed_hosts: Vec<String>,
}

impl Policy {
    fn check_url(&self, url: &Url) -> Result<(), Refusal> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Refusal::Scheme(url.scheme().to_owned()));
        }
        let host = url.host_str().ok_or(Refusal::NoHost)?;
        // The URL parser has already normalized IP literals (`0x7f.1` is `127.0.0.1`).
        let host = normalize_host(host);
        self.check_host(&host)?;
        if let Ok(ip) = host.parse::<IpAddr>() {
            // IP literals never reach the resolver, so check the address here.
            if !self.allow_private && !is_public(ip) {
                return Err(Refusal::Private { host, ip });
            }
        }
        Ok(())
    }

    fn check_host(&self, host: &str) -> Result<(), Refusal> {
        let allowed = self.allowed_hosts.is_empty()
            || self.allowed_hosts.iter().any(|entry| {
                host == entry
                    || host
                        .strip_suffix(entry.as_str())
                        .is_some_and(|prefix| prefix.ends_with('.'))
            });
        if allowed {
            Ok(())
        } else {
            Err(Refusal::HostNotAllowed(host.to_owned()))
        }
    }
}

fn normalize_host(host: &str) -> String {
    host.trim()
        .trim_end_matches('.')
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase()
}

/// Why a URL or address was refused.
#[derive(Debug, Clone)]
enum Refusal {
    Scheme(String),
    NoHost,
    HostNotAllowed(String),
    Private { host: String, ip: IpAddr },
    TooManyRedirects,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Scheme(s) => write!(f, "scheme `{s}` is not allowed; use http or https"),
            Self::NoHost => f.write_str("the URL has no host"),
            Self::HostNotAllowed(h) => write!(f, "host `{h}` is not in the allowed hosts"),
            Self::Private { host, ip } => write!(
                f,
                "host `{host}` is a private, loopback or link-local address ({ip}); \
                 fetching it is not allowed"
            ),
            Self::TooManyRedirects => write!(f, "more than {MAX_REDIRECTS} redirects"),
        }
    }
}

impl StdError for Refusal {}

impl Refusal {
    fn into_tool_error(self) -> ToolError {
        match self {
            Self::Scheme(_) | Self::NoHost => ToolError::invalid_arguments(self.to_string()),
            Self::HostNotAllowed(_) | Self::Private { .. } => {
                tracing::warn!(reason = %self, "http_fetch refused a host");
                ToolError::denied(self.to_string())
            }
            Self::TooManyRedirects => ToolError::failed(self.to_string()),
        }
    }
}

/// A resolver that drops non-public addresses unless the policy allows them.
struct GuardedResolver {
    policy: Arc<Policy>,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_private = self.policy.allow_private;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if allow_private {
                return Ok(Box::new(found.into_iter()) as Addrs);
            }
            let public: Vec<SocketAddr> = found
                .iter()
                .copied()
                .filter(|a| is_public(a.ip()))
                .collect();
            match (public.is_empty(), found.first()) {
                (false, _) => Ok(Box::new(public.into_iter()) as Addrs),
                (true, Some(first)) => Err(Box::new(Refusal::Private {
                    host,
                    ip: first.ip(),
                }) as Box<dyn StdError + Send + Sync>),
                (true, None) => Err(format!("no addresses found for `{host}`").into()),
            }
        })
    }
}

/// Maps a reqwest failure: our refusals keep their kind; the rest are retryable.
fn request_error(url: &Url, err: &reqwest::Error) -> ToolError {
    let mut source: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = source {
        if let Some(refusal) = e.downcast_ref::<Refusal>() {
            return refusal.clone().into_tool_error();
        }
        source = e.source();
    }
    if err.is_timeout() {
        return ToolError::transient(format!("fetching `{url}` timed out"));
    }
    // The model sees only the message, so put the causes in it.
    let mut message = format!("fetching `{url}` failed");
    let mut source = err.source();
    while let Some(e) = source {
        message.push_str(": ");
        message.push_str(&e.to_string());
        source = e.source();
    }
    tracing::debug!(url = %url, error = %message, "http_fetch failed");
    ToolError::transient(message)
}

/// Whether `ip` is a public unicast address.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(a == 0 // "this network", 0.0.0.0
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_documentation()
        || ip.is_multicast()
        || (a == 100 && (b & 0xc0) == 64) // shared address space (CGNAT) 100.64/10
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments 192.0.0/24
        || (a == 198 && (b & 0xfe) == 18) // benchmarking 198.18/15
        || a >= 240) // reserved 240/4
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_public_v4(v4);
    }
    let s = ip.segments();
    let embedded = |hi: u16, lo: u16| {
        let [a, b] = hi.to_be_bytes();
        let [c, d] = lo.to_be_bytes();
        Ipv4Addr::new(a, b, c, d)
    };
    // NAT64 64:ff9b::/96 and 6to4 2002::/16 carry an IPv4 address.
    if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0] {
        return is_public_v4(embedded(s[6], s[7]));
    }
    if s[0] == 0x2002 {
        return is_public_v4(embedded(s[1], s[2]));
    }
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || s[..6] == [0, 0, 0, 0, 0, 0] // IPv4-compatible (deprecated)
        || (s[0] & 0xfe00) == 0xfc00 // unique local fc00::/7
        || (s[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
        || (s[0] & 0xffc0) == 0xfec0 // site-local fec0::/10 (deprecated)
        || (s[0] == 0x2001 && s[1] == 0x0db8)) // documentation 2001:db8::/32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn private_and_special_addresses_are_not_public() {
        for s in [
            "127.0.0.1",
            "127.1.2.3",
            "0.0.0.0",
            "10.0.0.1",
            "172.16.5.4",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "192.0.0.8",
            "192.0.2.1",
            "198.18.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "240.0.0.1",
            "::",
            "::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a00:1",
            "2002:7f00:1::",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "ff02::1",
            "2001:db8::1",
        ] {
            assert!(!is_public(ip(s)), "{s} should not be public");
        }
    }

    #[test]
    fn public_addresses_are_public() {
        for s in [
            "1.1.1.1",
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "93.184.216.34",
            "2606:4700:4700::1111",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
        ] {
            assert!(is_public(ip(s)), "{s} should be public");
        }
    }

    fn policy(allow_private: bool, hosts: &[&str]) -> Policy {
        Policy {
            allow_private,
            allowed_hosts: hosts.iter().map(|h| normalize_host(h)).collect(),
        }
    }

    fn check(p: &Policy, url: &str) -> Result<(), String> {
        p.check_url(&Url::parse(url).unwrap())
            .map_err(|r| r.to_string())
    }

    #[test]
    fn url_policy() {
        let open = policy(false, &[]);
        assert_eq!(check(&open, "https://example.com/x"), Ok(()));
        assert_eq!(
            check(&open, "file:///etc/passwd"),
            Err("scheme `file` is not allowed; use http or https".into())
        );
        assert_eq!(
            check(&open, "http://127.0.0.1:8080/"),
            Err(
                "host `127.0.0.1` is a private, loopback or link-local address (127.0.0.1); \
                 fetching it is not allowed"
                    .into()
            )
        );
        // Obfuscated forms are normalized by the URL parser.
        assert!(check(&open, "http://0x7f.1/").is_err());
        assert!(check(&open, "http://2130706433/").is_err());
        assert!(check(&open, "http://[::ffff:169.254.169.254]/").is_err());
        assert_eq!(check(&policy(true, &[]), "http://127.0.0.1/"), Ok(()));

        let listed = policy(false, &["Example.com."]);
        assert_eq!(check(&listed, "https://example.com/"), Ok(()));
        assert_eq!(check(&listed, "https://api.EXAMPLE.com/"), Ok(()));
        assert_eq!(
            check(&listed, "https://badexample.com/"),
            Err("host `badexample.com` is not in the allowed hosts".into())
        );
        assert!(check(&listed, "https://example.com.evil.net/").is_err());
    }
}
