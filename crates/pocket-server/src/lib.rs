//! The Pocket Agent HTTP API: tasks with server-sent events, probes, Prometheus metrics, the
//! health and cluster reports, and an OpenAI-compatible chat endpoint, over a [`Cluster`].
//!
//! Routes (all JSON unless said; all but `/healthz`, `/readyz` and the sign-in routes need
//! `Authorization: Bearer KEY` or the dashboard's session cookie when keys are configured):
//!
//! | route | what |
//! |---|---|
//! | `POST /v1/tasks` | `{task, agent?, priority?, capabilities?, idempotency_key?}` → 202 `{id}` |
//! | `GET /v1/tasks/{id}` | the task ([`TaskView`]; timestamps RFC 3339, UTC) |
//! | `DELETE /v1/tasks/{id}` | cancels (404 unknown, 409 finished) |
//! | `GET /v1/tasks/{id}/events` | SSE of the task's [`ClusterEvent`](pocket_cluster::ClusterEvent)s and its run's steps (named by their type), ending with `end` |
//! | `GET /healthz`, `GET /readyz` | liveness; readiness (store answers, an instance is up) |
//! | `GET /metrics` | Prometheus text |
//! | `GET /v1/health`, `GET /v1/cluster` | health report; system report |
//! | `POST /v1/chat/completions`, `GET /v1/models` | OpenAI-compatible; `model` names an agent |
//! | `GET /v1/approvals`, `POST /v1/approvals/{id}` | pending approvals ([`HttpApprover`], kept in the task store); `{decision: "approve"\|"deny"\|"edit", reason?, arguments?}` (409 once answered) |
//! | `GET /v1/monitor[?history=MINUTES]` | what the dashboard shows: cluster report, queue by priority, monitor health, breakers, recent alerts and log errors, minute history, live series, pending approvals |
//! | `GET /` | the dashboard when signed in (session cookie or bearer key); else 401 and a sign-in page |
//! | `POST /v1/session`, `POST /v1/session/logout` | sign in with a key (form field `key` or JSON `{key}`): sets an `HttpOnly`, `SameSite=Strict` session cookie; sign out |
//!
//! Errors are `{"error": {"type", "message"}}` with status 400, 401, 404, 409, 413, 429
//! (with `Retry-After`), 500, 503 or 504; see [`ApiError`].
//!
//! ```no_run
//! # async fn example(cluster: pocket_cluster::Cluster) -> Result<(), Box<dyn std::error::Error>> {
//! use pocket_server::Server;
//!
//! let server = Server::builder(cluster.clone())
//!     .api_keys(["secret-key"])
//!     .build()?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:7878").await?;
//! let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! let signal = async move { let _ = stopped.await; };
//! # drop(stop);
//! server.serve(listener, signal).await?;
//! # Ok(()) }
//! ```
//!
//! This crate has no cargo features.

mod approvals;
mod auth;
mod chat;
mod dashboard;
mod error;
mod json;
mod live;
mod probes;
mod tasks;
mod watch;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use pocket_cluster::Cluster;
use pocket_monitor::Monitor;
use pocket_resilience::ResilienceHub;
use tokio::net::TcpListener;

pub use approvals::{HttpApprover, PendingApproval};
pub use error::{ApiError, OpenAiError};
pub use tasks::{CreateTask, TaskView};

/// The default request body limit: 1 MiB.
pub const DEFAULT_BODY_LIMIT: usize = 1024 * 1024;
/// The default time limit for producing a response: 5 minutes (a chat completion waits for
/// its task). Streams, once started, are not limited.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(300);
/// The default lifetime of a dashboard session: 12 hours.
pub const DEFAULT_SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// The default bound on chat completions in flight: 1,024.
pub const DEFAULT_MAX_CHAT_IN_FLIGHT: usize = 1024;

/// Default of [`ServerBuilder::chat_direct_wait`]: 100 ms.
pub const DEFAULT_CHAT_DIRECT_WAIT: Duration = Duration::from_millis(100);
/// The default interval of the dashboard's live series: 5 seconds.
pub const DEFAULT_LIVE_INTERVAL: Duration = Duration::from_secs(5);

/// Why a server could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// An API key is empty (after trimming).
    #[error("an API key is empty")]
    EmptyKey,
    /// The body limit is 0.
    #[error("the request body limit must be above 0")]
    ZeroBodyLimit,
    /// The request time limit is 0.
    #[error("the request time limit must be above 0")]
    ZeroTimeout,
    /// The session lifetime or the live-series interval is 0.
    #[error("the dashboard's session lifetime and live interval must be above 0")]
    ZeroDashboardDuration,
    /// The bound on chat completions in flight is 0.
    #[error("the bound on chat completions in flight must be above 0")]
    ZeroChatLimit,
    /// A CORS origin is not `*` or `scheme://host[:port]`.
    #[error("CORS origin `{0}` is not `*` or `http(s)://host[:port]` (no path, no trailing slash)")]
    InvalidOrigin(String),
}

/// Checks a CORS origin as [`ServerBuilder::cors_origins`] takes it: `*`, or
/// `http://host[:port]` / `https://host[:port]` with no path.
///
/// # Errors
/// [`BuildError::InvalidOrigin`].
pub fn check_origin(origin: &str) -> Result<(), BuildError> {
    if origin == "*" {
        return Ok(());
    }
    let bad = || BuildError::InvalidOrigin(origin.to_owned());
    let host = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"))
        .ok_or_else(bad)?;
    if host.is_empty()
        || host.contains(['/', '?', '#', '@'])
        || axum::http::HeaderValue::from_str(origin).is_err()
    {
        return Err(bad());
    }
    Ok(())
}

/// Builds a [`Server`]; see [`Server::builder`].
#[must_use]
#[derive(Debug)]
pub struct ServerBuilder {
    cluster: Cluster,
    monitor: Option<Monitor>,
    hub: Option<ResilienceHub>,
    approver: Option<HttpApprover>,
    keys: Vec<String>,
    body_limit: usize,
    timeout: Duration,
    default_agent: Option<String>,
    cors_origins: Vec<String>,
    session_ttl: Duration,
    live_interval: Duration,
    max_chat_in_flight: usize,
    chat_direct: bool,
    chat_direct_wait: Duration,
}

impl ServerBuilder {
    /// How long a direct chat completion waits for a busy agent's slot before it is queued
    /// as a task instead ([`Cluster::run_now`]); it does not wait while queued tasks wait.
    /// Default: [`DEFAULT_CHAT_DIRECT_WAIT`].
    pub fn chat_direct_wait(mut self, wait: Duration) -> Self {
        self.chat_direct_wait = wait;
        self
    }

    /// Whether a non-streaming chat completion runs at once on a free local instance of its
    /// agent ([`Cluster::run_now`]) instead of as a queued task; it is queued when none is
    /// free. Direct runs skip the queue's round trip (about half the service's CPU per
    /// completion, see BENCHMARKS.md) but are not durable: nothing resumes one whose
    /// process dies, which also drops the caller's connection. Default: `true`.
    pub fn chat_direct(mut self, on: bool) -> Self {
        self.chat_direct = on;
        self
    }

    /// Chat completions in flight at most (streams count until they end); beyond it,
    /// `POST /v1/chat/completions` answers 429 with `Retry-After`. Default:
    /// [`DEFAULT_MAX_CHAT_IN_FLIGHT`].
    pub fn max_chat_in_flight(mut self, n: usize) -> Self {
        self.max_chat_in_flight = n;
        self
    }

    /// Serves `/metrics` and the monitor half of `/v1/health`, and counts open connections.
    /// Default: none (`/metrics` is empty).
    pub fn monitor(mut self, monitor: Monitor) -> Self {
        self.monitor = Some(monitor);
        self
    }

    /// Adds the resilience health report to `/v1/health`. Default: none.
    pub fn resilience(mut self, hub: ResilienceHub) -> Self {
        self.hub = Some(hub);
        self
    }

    /// Serves `GET /v1/approvals` and `POST /v1/approvals/{id}` from this approver (give
    /// the same one to the agents), and lets it mark tasks `waiting_approval`. Default: none
    /// (the list is empty; answers are 404).
    pub fn approvals(mut self, approver: HttpApprover) -> Self {
        self.approver = Some(approver);
        self
    }

    /// Accepted bearer keys (blank entries ignored; surrounding whitespace trimmed). Default:
    /// none, which leaves the API **open** (a warning is logged at start).
    pub fn api_keys(mut self, keys: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.keys = keys
            .into_iter()
            .map(Into::into)
            .map(|k| k.trim().to_owned())
            .collect();
        self
    }

    /// Keys from a comma-separated list such as the `POCKET_API_KEYS` variable's value.
    pub fn api_keys_csv(self, csv: &str) -> Self {
        self.api_keys(csv.split(',').filter(|k| !k.trim().is_empty()))
    }

    /// Largest request body in bytes; beyond it, 413. Default: [`DEFAULT_BODY_LIMIT`].
    pub fn body_limit(mut self, bytes: usize) -> Self {
        self.body_limit = bytes;
        self
    }

    /// Time limit for producing a response; beyond it, 504. Default:
    /// [`DEFAULT_REQUEST_TIMEOUT`].
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Origins a browser page may call the API from (CORS): `https://host[:port]`, or `*` for
    /// any. Preflight requests are answered without a key; the other requests still need
    /// one. Default: none (no CORS headers; same-origin pages such as the dashboard work).
    pub fn cors_origins(mut self, origins: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.cors_origins = origins.into_iter().map(Into::into).collect();
        self
    }

    /// How long a dashboard session (sign-in) lasts. Default: [`DEFAULT_SESSION_TTL`].
    pub fn session_ttl(mut self, ttl: Duration) -> Self {
        self.session_ttl = ttl;
        self
    }

    /// The interval of the dashboard's live series (sampled while [`Server::serve`] runs;
    /// the last 180 intervals are kept). Default: [`DEFAULT_LIVE_INTERVAL`].
    pub fn live_interval(mut self, every: Duration) -> Self {
        self.live_interval = every;
        self
    }

    /// The agent of a `POST /v1/tasks` that names none. Default: `default`.
    pub fn default_agent(mut self, name: impl Into<String>) -> Self {
        self.default_agent = Some(name.into());
        self
    }

    /// Builds the server.
    ///
    /// # Errors
    /// [`BuildError`] for an empty key, a zero body limit, time limit or chat bound, or an invalid
    /// CORS origin.
    pub fn build(self) -> Result<Server, BuildError> {
        for origin in &self.cors_origins {
            check_origin(origin)?;
        }
        if self.keys.iter().any(String::is_empty) {
            return Err(BuildError::EmptyKey);
        }
        if self.body_limit == 0 {
            return Err(BuildError::ZeroBodyLimit);
        }
        if self.timeout.is_zero() {
            return Err(BuildError::ZeroTimeout);
        }
        if self.max_chat_in_flight == 0 {
            return Err(BuildError::ZeroChatLimit);
        }
        if self.session_ttl.is_zero() || self.live_interval.is_zero() {
            return Err(BuildError::ZeroDashboardDuration);
        }
        if let Some(approver) = &self.approver {
            approver.attach(self.cluster.clone());
        }
        Ok(Server {
            state: Arc::new(AppState {
                approver: self.approver,
                cluster: self.cluster,
                monitor: self.monitor,
                hub: self.hub,
                keys: auth::Keys::new(self.keys),
                body_limit: self.body_limit,
                timeout: self.timeout,
                default_agent: self.default_agent.unwrap_or_else(|| "default".into()),
                draining: tokio::sync::watch::Sender::new(false),
                ticks: tokio::sync::watch::Sender::new(0),
                cors_origins: self.cors_origins,
                sessions: auth::Sessions::new(self.session_ttl),
                live: live::Live::default(),
                live_interval: self.live_interval,
                chat_slots: Arc::new(tokio::sync::Semaphore::new(self.max_chat_in_flight)),
                chat_limit: self.max_chat_in_flight,
                chat_direct: self.chat_direct,
                chat_direct_wait: self.chat_direct_wait,
                chat_ids: chat::Ids::new(),
            }),
        })
    }
}

/// What every handler shares.
#[derive(Debug)]
pub(crate) struct AppState {
    pub(crate) cluster: Cluster,
    pub(crate) monitor: Option<Monitor>,
    pub(crate) hub: Option<ResilienceHub>,
    pub(crate) approver: Option<HttpApprover>,
    pub(crate) keys: auth::Keys,
    pub(crate) body_limit: usize,
    pub(crate) timeout: Duration,
    pub(crate) default_agent: String,
    /// `true` once draining; event streams end when it turns.
    pub(crate) draining: tokio::sync::watch::Sender<bool>,
    /// Ticks every [`watch::POLL`] while serving: one clock for every follower's store
    /// read, rather than a timer per request.
    pub(crate) ticks: tokio::sync::watch::Sender<u64>,
    /// Allowed CORS origins (checked at build); empty: no CORS.
    pub(crate) cors_origins: Vec<String>,
    /// The dashboard's sign-in sessions.
    pub(crate) sessions: auth::Sessions,
    /// The dashboard's live series.
    pub(crate) live: live::Live,
    pub(crate) live_interval: Duration,
    /// Chat completions in flight (see [`ServerBuilder::max_chat_in_flight`]).
    pub(crate) chat_slots: Arc<tokio::sync::Semaphore>,
    /// Their limit, for the 429's message.
    pub(crate) chat_limit: usize,
    /// Run non-streaming chat completions on a free local instance when there is one.
    pub(crate) chat_direct: bool,
    /// How long a direct run waits for a busy agent's slot.
    pub(crate) chat_direct_wait: Duration,
    /// Ids of chat completions run directly.
    pub(crate) chat_ids: chat::Ids,
}

impl AppState {
    /// 503 while the server drains.
    pub(crate) fn accepting(&self) -> Result<(), ApiError> {
        if *self.draining.borrow() {
            Err(ApiError::Unavailable("the server is shutting down".into()))
        } else {
            Ok(())
        }
    }
}

pub(crate) type Shared = Arc<AppState>;

/// The HTTP API over a cluster: a cheap-clone handle.
#[derive(Debug, Clone)]
pub struct Server {
    state: Shared,
}

impl Server {
    /// Starts building a server over `cluster`.
    pub fn builder(cluster: Cluster) -> ServerBuilder {
        ServerBuilder {
            cluster,
            monitor: None,
            hub: None,
            approver: None,
            keys: Vec::new(),
            body_limit: DEFAULT_BODY_LIMIT,
            timeout: DEFAULT_REQUEST_TIMEOUT,
            default_agent: None,
            cors_origins: Vec::new(),
            session_ttl: DEFAULT_SESSION_TTL,
            live_interval: DEFAULT_LIVE_INTERVAL,
            max_chat_in_flight: DEFAULT_MAX_CHAT_IN_FLIGHT,
            chat_direct: true,
            chat_direct_wait: DEFAULT_CHAT_DIRECT_WAIT,
        }
    }

    /// The routes, with auth, the body limit and the time limit applied.
    pub fn router(&self) -> Router {
        let state = self.state.clone();
        let api = Router::new()
            .route("/v1/tasks", post(tasks::create))
            .route("/v1/tasks/{id}", get(tasks::get).delete(tasks::cancel))
            .route("/v1/tasks/{id}/events", get(tasks::events))
            .route("/v1/health", get(probes::health))
            .route("/v1/cluster", get(probes::cluster))
            .route("/metrics", get(probes::metrics))
            .route("/v1/chat/completions", post(chat::completions))
            .route("/v1/models", get(chat::models))
            .route("/v1/approvals", get(approvals::list))
            .route("/v1/approvals/{id}", post(approvals::decide))
            .route("/v1/monitor", get(live::snapshot))
            .route("/dashboard.js", get(dashboard::script))
            .fallback(not_found)
            .route_layer(middleware::from_fn_with_state(
                state.clone(),
                auth::require_key,
            ));
        let router = Router::new()
            .route("/healthz", get(probes::healthz))
            .route("/readyz", get(probes::readyz))
            // The dashboard checks the session itself: without one it answers 401 and the
            // sign-in page, which posts the key to /v1/session.
            .route("/", get(dashboard::page))
            .route("/v1/session", post(auth::sign_in))
            .route("/v1/session/logout", post(auth::sign_out))
            .merge(api)
            .fallback(not_found)
            .layer(middleware::from_fn_with_state(state.clone(), guard))
            .layer(DefaultBodyLimit::max(state.body_limit));
        // Outermost, so preflights are answered before auth asks for a key.
        let router = match cors(&state.cors_origins) {
            Some(layer) => router.layer(layer),
            None => router,
        };
        router.with_state(state)
    }

    /// Stops taking new work: from now on task submissions and chat completions get 503 and
    /// `/readyz` says 503; open event streams end with an `error` event. [`serve`](Self::serve) calls it when its signal fires.
    pub fn drain(&self) {
        self.state.draining.send_replace(true);
    }

    /// Serves on `listener` until `signal` resolves, then drains (see [`drain`](Self::drain)),
    /// begins the cluster's graceful shutdown ([`Cluster::shutdown`]) and shuts down the HTTP
    /// side gracefully: requests in progress finish; no new connections are accepted.
    ///
    /// # Errors
    /// The listener's I/O errors.
    pub async fn serve(
        &self,
        listener: TcpListener,
        signal: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        if self.state.keys.is_empty() {
            tracing::warn!(
                "no API keys configured: the HTTP API is open to anyone who can reach it"
            );
        }
        let addr = listener.local_addr()?;
        tracing::info!(%addr, "HTTP API listening");
        let this = self.clone();
        let shutdown = async move {
            signal.await;
            tracing::info!("HTTP API shutting down");
            this.drain();
            this.state.cluster.shutdown();
        };
        // The dashboard's live series, until the server drains (or serving fails).
        let sampler = tokio::spawn(live::run(self.state.clone()));
        let ticker = tokio::spawn(watch::tick(self.state.clone()));
        // Small writes (SSE chunks, short answers) go out at once rather than waiting on
        // Nagle's algorithm for the peer's (possibly delayed) ACK.
        let listener = listener.tap_io(|tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(error = %e, "could not set TCP_NODELAY on a connection");
            }
        });
        let served = axum::serve(listener, self.router())
            .with_graceful_shutdown(shutdown)
            .await;
        sampler.abort();
        ticker.abort();
        served
    }
}

/// Counts connections, tells the JSON extractor the body limit, and applies the time limit.
async fn guard(State(state): State<Shared>, mut req: Request, next: Next) -> Response {
    let _connection = state.monitor.as_ref().map(|m| m.metrics().connection());
    req.extensions_mut()
        .insert(json::BodyLimit(state.body_limit));
    match tokio::time::timeout(state.timeout, next.run(req)).await {
        Ok(response) => response,
        Err(_) => ApiError::Timeout(state.timeout).into_response(),
    }
}

/// The CORS layer for these origins (already checked); `None` when there are none.
fn cors(origins: &[String]) -> Option<tower_http::cors::CorsLayer> {
    use axum::http::{HeaderValue, Method, header};
    use tower_http::cors::{AllowOrigin, CorsLayer};
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::POST, Method::DELETE])
            .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
            .max_age(Duration::from_secs(600)),
    )
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such route".into())
}
