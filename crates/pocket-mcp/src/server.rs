//! One configured server: its state, the supervisor task that starts, watches and restarts
//! it, and the forwarding of its stderr and log messages into `tracing`.
//!
//! The supervisor is the only writer of a server's state, which it publishes on a `watch`
//! channel; tool calls read a snapshot (a clone of the peer handle) and never wait on it.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

// Logging is deprecated by SEP-2577, but servers on earlier protocol versions still send it.
use rmcp::model::{ClientCapabilities, ClientConfig, Implementation, Tool as McpToolInfo};
#[allow(deprecated)]
use rmcp::model::{LoggingLevel, LoggingMessageNotificationParam};
use rmcp::service::{NotificationContext, QuitReason, RunningService};
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::{StreamableHttpClientTransport, TokioChildProcess};
use rmcp::{ClientHandler, Peer, RoleClient, ServiceError, ServiceExt};
use serde::Serialize;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{McpServerConfig, read_secret};
use crate::error::McpError;

/// A server's tools by their MCP name, as last listed.
pub(crate) type ToolMap = BTreeMap<String, McpToolInfo>;

/// The first wait between restarts; it doubles up to `restart_max_backoff_secs`.
const INITIAL_BACKOFF: Duration = Duration::from_millis(500);
/// A connection that stayed up this long (or the max backoff, if longer) resets the backoff.
const STABLE_AFTER: Duration = Duration::from_secs(10);
/// How long a clean close may take (rmcp closes stdin, waits, sends SIGTERM, waits, kills).
const CLOSE_LIMIT: Duration = Duration::from_secs(15);
/// Longest stderr line forwarded whole; longer ones are cut.
const MAX_STDERR_LINE: usize = 8 * 1024;
/// How long stderr is still read after shutdown began, for the server's last words.
const STDERR_DRAIN: Duration = Duration::from_secs(2);

/// What a server is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ServerState {
    /// Not started yet (a lazy server nobody asked for).
    Idle,
    /// Starting for the first time.
    Starting,
    /// Connected; its tools can be called.
    Running,
    /// Crashed or failed to start; waiting to try again, or trying. Its tools fail meanwhile.
    Restarting,
    /// Shut down with the hub.
    Stopped,
}

impl ServerState {
    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Idle => "idle",
            Self::Starting => "starting",
            Self::Running => "running",
            Self::Restarting => "restarting",
            Self::Stopped => "stopped",
        }
    }
}

/// A snapshot of one server, for health reports and tests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct ServerStatus {
    /// The server's name (`[mcp.NAME]`).
    pub name: String,
    /// What it is doing.
    pub state: ServerState,
    /// `stdio` or `http`.
    pub transport: &'static str,
    /// The child's process id while a stdio server runs.
    pub pid: Option<u32>,
    /// Failed starts in a row (0 while running).
    pub attempt: u32,
    /// Starts after the first one (restarts after crashes or failed starts).
    pub restarts: u32,
    /// Why it last stopped or failed to start.
    pub last_error: Option<String>,
    /// Tools in its last tool list.
    pub tools: usize,
    /// Tool lists re-read after a list-changed notification.
    pub list_changes: u64,
}

/// What the supervisor publishes.
#[derive(Clone)]
pub(crate) struct State {
    pub(crate) phase: ServerState,
    requested: bool,
    pub(crate) attempt: u32,
    restarts: u32,
    pub(crate) last_error: Option<Arc<str>>,
    pid: Option<u32>,
    /// Set while running.
    pub(crate) peer: Option<Peer<RoleClient>>,
    /// The last tool list; kept while restarting so agents can still be built.
    pub(crate) tools: Option<Arc<ToolMap>>,
    list_changes: u64,
}

/// One configured server.
pub(crate) struct Server {
    pub(crate) name: Arc<str>,
    pub(crate) config: McpServerConfig,
    state: watch::Sender<State>,
}

/// How a connection ended.
enum Ended {
    /// We shut it down.
    Stopped,
    /// It closed or crashed; why.
    Closed(String),
}

/// A started server, before the supervisor publishes it.
struct Connected {
    service: RunningService<RoleClient, Handler>,
    list_changed: Arc<Notify>,
    pid: Option<u32>,
    tools: ToolMap,
}

impl Server {
    pub(crate) fn new(name: &str, config: McpServerConfig) -> Arc<Self> {
        let (state, _) = watch::channel(State {
            phase: ServerState::Idle,
            requested: false,
            attempt: 0,
            restarts: 0,
            last_error: None,
            pid: None,
            peer: None,
            tools: None,
            list_changes: 0,
        });
        Arc::new(Self {
            name: Arc::from(name),
            config,
            state,
        })
    }

    /// A copy of the current state; holds no lock afterwards.
    pub(crate) fn snapshot(&self) -> State {
        self.state.borrow().clone()
    }

    pub(crate) fn status(&self) -> ServerStatus {
        let s = self.snapshot();
        ServerStatus {
            name: self.name.to_string(),
            state: s.phase,
            transport: if self.config.url.is_some() {
                "http"
            } else {
                "stdio"
            },
            pid: s.pid,
            attempt: s.attempt,
            restarts: s.restarts,
            last_error: s.last_error.map(|e| e.to_string()),
            tools: s.tools.map_or(0, |t| t.len()),
            list_changes: s.list_changes,
        }
    }

    /// Asks the supervisor to start the server if it has not yet.
    pub(crate) fn request_start(&self) {
        self.state
            .send_if_modified(|s| !std::mem::replace(&mut s.requested, true));
    }

    /// Starts the server if needed and waits for its tool list (bounded by its start-up time
    /// limit). A server that was listed once answers with its last list, even while it
    /// restarts.
    pub(crate) async fn wait_listed(&self) -> Result<Arc<ToolMap>, McpError> {
        self.request_start();
        let mut rx = self.state.subscribe();
        let state = rx
            .wait_for(|s| {
                s.tools.is_some()
                    || matches!(s.phase, ServerState::Restarting | ServerState::Stopped)
            })
            .await
            .map_err(|_| McpError::Shutdown)?
            .clone();
        match (state.tools, state.phase) {
            (Some(tools), _) => Ok(tools),
            (None, ServerState::Stopped) => Err(McpError::Shutdown),
            (None, _) => Err(McpError::Start {
                server: self.name.to_string(),
                message: state
                    .last_error
                    .map_or_else(|| "unknown error".to_owned(), |e| e.to_string()),
            }),
        }
    }

    fn update(&self, f: impl FnOnce(&mut State)) {
        self.state.send_modify(f);
    }

    fn stopped(&self) {
        self.update(|s| {
            s.phase = ServerState::Stopped;
            s.peer = None;
            s.pid = None;
        });
    }

    /// Starts the server when asked, watches it, restarts it with backoff when it ends, and
    /// closes it when `cancel` fires. The only writer of the state after creation.
    pub(crate) async fn supervise(
        self: Arc<Self>,
        cancel: CancellationToken,
        tracker: TaskTracker,
    ) {
        let mut rx = self.state.subscribe();
        tokio::select! {
            biased;
            () = cancel.cancelled() => {
                self.stopped();
                return;
            }
            asked = rx.wait_for(|s| s.requested) => {
                if asked.is_err() {
                    return;
                }
            }
        }
        drop(rx);
        let max_backoff = Duration::from_secs(self.config.restart_max_backoff_secs);
        let stable_after = max_backoff.max(STABLE_AFTER);
        let mut failures: u32 = 0;
        let mut started_once = false;
        loop {
            if failures == 0 {
                self.update(|s| s.phase = ServerState::Starting);
            } else {
                self.update(|s| s.restarts += 1);
            }
            let connected = tokio::select! {
                biased;
                () = cancel.cancelled() => {
                    self.stopped();
                    return;
                }
                connected = self.connect(&cancel, &tracker) => connected,
            };
            let why = match connected {
                Ok(connected) => {
                    started_once = true;
                    let up = Instant::now();
                    tracing::info!(
                        server = %self.name,
                        pid = connected.pid,
                        tools = connected.tools.len(),
                        "MCP server started"
                    );
                    match self.run_connected(connected, &cancel).await {
                        Ended::Stopped => {
                            self.stopped();
                            tracing::info!(server = %self.name, "MCP server shut down");
                            return;
                        }
                        Ended::Closed(why) => {
                            if up.elapsed() >= stable_after {
                                failures = 0;
                            }
                            why
                        }
                    }
                }
                Err(why) => why,
            };
            failures = failures.saturating_add(1);
            let delay = backoff(failures, max_backoff);
            tracing::warn!(
                server = %self.name,
                error = %why,
                attempt = failures,
                retry_in_secs = delay.as_secs_f64(),
                "MCP server {}; trying again",
                if started_once { "stopped" } else { "failed to start" }
            );
            let why: Arc<str> = Arc::from(why);
            self.update(|s| {
                s.phase = ServerState::Restarting;
                s.attempt = failures;
                s.last_error = Some(why);
                s.peer = None;
                s.pid = None;
            });
            tokio::select! {
                biased;
                () = cancel.cancelled() => {
                    self.stopped();
                    return;
                }
                () = tokio::time::sleep(delay) => {}
            }
        }
    }

    /// Spawns or reaches the server, initialises it and lists its tools, within the start-up
    /// time limit.
    async fn connect(
        &self,
        cancel: &CancellationToken,
        tracker: &TaskTracker,
    ) -> Result<Connected, String> {
        let limit = self.config.init_timeout();
        let deadline = tokio::time::Instant::now() + limit;
        let list_changed = Arc::new(Notify::new());
        let handler = Handler {
            server: self.name.clone(),
            list_changed: list_changed.clone(),
        };
        let (service, pid) = if let Some(url) = &self.config.url {
            let transport = StreamableHttpClientTransport::from_config(self.http_config(url)?);
            let service = tokio::time::timeout_at(deadline, handler.serve(transport))
                .await
                .map_err(|_| timed_out("initialising", limit))?
                .map_err(|e| format!("initialising failed: {e}"))?;
            (service, None)
        } else {
            let (child, stderr) = self.spawn()?;
            let pid = child.id();
            if let Some(stderr) = stderr {
                tracker.spawn(forward_stderr(self.name.clone(), stderr, cancel.clone()));
            }
            let service = tokio::time::timeout_at(deadline, handler.serve(child))
                .await
                .map_err(|_| timed_out("initialising", limit))?
                .map_err(|e| format!("initialising failed: {e}"))?;
            (service, pid)
        };
        let listed = tokio::time::timeout_at(deadline, list_tools(service.peer())).await;
        let tools = match listed {
            Ok(Ok(tools)) => tools,
            Ok(Err(e)) => {
                close(service).await;
                return Err(format!("listing tools failed: {e}"));
            }
            Err(_) => {
                close(service).await;
                return Err(timed_out("listing tools", limit));
            }
        };
        self.warn_unknown_risk_keys(&tools);
        Ok(Connected {
            service,
            list_changed,
            pid,
            tools,
        })
    }

    fn spawn(&self) -> Result<(TokioChildProcess, Option<tokio::process::ChildStderr>), String> {
        let c = &self.config;
        let program = c.command.as_deref().unwrap_or_default();
        let mut cmd = tokio::process::Command::new(program);
        cmd.args(&c.args).envs(&c.env).kill_on_drop(true);
        for (name, var) in &c.env_from {
            cmd.env(name, read_secret(var)?);
        }
        if let Some(dir) = &c.cwd {
            cmd.current_dir(dir);
        }
        let mut cmd = process_wrap::tokio::CommandWrap::from(cmd);
        // Its own process group, so that shutting down `npx ...` also ends the server it runs.
        #[cfg(unix)]
        cmd.wrap(process_wrap::tokio::ProcessGroup::leader());
        TokioChildProcess::builder(cmd)
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run `{program}`: {e}"))
    }

    fn http_config(&self, url: &str) -> Result<StreamableHttpClientTransportConfig, String> {
        use reqwest::header::{HeaderName, HeaderValue};
        let mut headers = std::collections::HashMap::new();
        for (name, var) in &self.config.headers_from_env {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("`{name}` is not a valid header name"))?;
            let mut value = HeaderValue::from_str(&read_secret(var)?)
                .map_err(|_| format!("environment variable `{var}` is not a valid header value"))?;
            value.set_sensitive(true);
            headers.insert(name, value);
        }
        let mut config =
            StreamableHttpClientTransportConfig::with_uri(url.to_owned()).custom_headers(headers);
        if let Some(var) = &self.config.bearer_token_env {
            config = config.auth_header(read_secret(var)?);
        }
        Ok(config)
    }

    fn warn_unknown_risk_keys(&self, tools: &ToolMap) {
        for name in self.config.tool_risk.keys() {
            if !tools.contains_key(name) {
                tracing::warn!(
                    server = %self.name,
                    tool = %name,
                    "mcp.{}.tool_risk names a tool the server does not offer",
                    self.name
                );
            }
        }
    }

    /// Publishes the connection and serves it until it ends or we shut it down; re-reads the
    /// tool list on the server's list-changed notification.
    async fn run_connected(&self, connected: Connected, cancel: &CancellationToken) -> Ended {
        let Connected {
            service,
            list_changed,
            pid,
            tools,
        } = connected;
        let peer = service.peer().clone();
        self.update(|s| {
            s.phase = ServerState::Running;
            s.attempt = 0;
            s.last_error = None;
            s.pid = pid;
            s.peer = Some(peer.clone());
            s.tools = Some(Arc::new(tools));
        });
        let stop = service.cancellation_token();
        let ended = service.waiting();
        tokio::pin!(ended);
        loop {
            tokio::select! {
                biased;
                () = cancel.cancelled() => {
                    stop.cancel();
                    if tokio::time::timeout(CLOSE_LIMIT, &mut ended).await.is_err() {
                        tracing::warn!(server = %self.name, "MCP server did not close in time");
                    }
                    return Ended::Stopped;
                }
                quit = &mut ended => {
                    return Ended::Closed(match quit {
                        Ok(QuitReason::JoinError(e)) | Err(e) => format!("the connection failed: {e}"),
                        Ok(_) => "the server closed the connection (exited or crashed)".into(),
                    });
                }
                () = list_changed.notified() => {
                    let limit = self.config.init_timeout();
                    let listed = tokio::select! {
                        biased;
                        () = cancel.cancelled() => continue,
                        listed = tokio::time::timeout(limit, list_tools(&peer)) => listed,
                    };
                    match listed {
                        Ok(Ok(tools)) => {
                            tracing::info!(
                                server = %self.name,
                                tools = tools.len(),
                                "MCP server changed its tool list"
                            );
                            self.warn_unknown_risk_keys(&tools);
                            self.update(|s| {
                                s.tools = Some(Arc::new(tools));
                                s.list_changes += 1;
                            });
                        }
                        Ok(Err(e)) => tracing::warn!(
                            server = %self.name,
                            error = %e,
                            "re-listing tools after a list-changed notification failed"
                        ),
                        Err(_) => tracing::warn!(
                            server = %self.name,
                            "re-listing tools after a list-changed notification timed out"
                        ),
                    }
                }
            }
        }
    }
}

/// The wait before restart attempt `failures` (1-based): 0.5 s, 1 s, 2 s, ... up to `max`.
fn backoff(failures: u32, max: Duration) -> Duration {
    let doublings = failures.saturating_sub(1).min(20);
    INITIAL_BACKOFF.saturating_mul(1 << doublings).min(max)
}

fn timed_out(what: &str, limit: Duration) -> String {
    format!(
        "{what} timed out after {:.0}s (init_timeout_secs)",
        limit.as_secs_f64()
    )
}

async fn list_tools(peer: &Peer<RoleClient>) -> Result<ToolMap, ServiceError> {
    let tools = peer.list_all_tools().await?;
    Ok(tools.into_iter().map(|t| (t.name.to_string(), t)).collect())
}

/// Closes a service that is not published yet.
async fn close(service: RunningService<RoleClient, Handler>) {
    let _ = tokio::time::timeout(CLOSE_LIMIT, service.cancel()).await;
}

/// Forwards the child's stderr line by line into `tracing` (target `pocket_mcp::stderr`, field
/// `server`), until it closes; after shutdown began, for at most [`STDERR_DRAIN`] more. Lines
/// longer than [`MAX_STDERR_LINE`] bytes are cut.
async fn forward_stderr(
    server: Arc<str>,
    stderr: impl AsyncRead + Unpin,
    cancel: CancellationToken,
) {
    let mut reader = BufReader::new(stderr);
    let mut line = Vec::new();
    let drain = async {
        cancel.cancelled().await;
        tokio::time::sleep(STDERR_DRAIN).await;
    };
    tokio::pin!(drain);
    loop {
        line.clear();
        let read = tokio::select! {
            biased;
            read = read_line_capped(&mut reader, &mut line) => read,
            () = &mut drain => break,
        };
        match read {
            Ok(0) => break,
            Ok(n) => {
                let text = String::from_utf8_lossy(&line);
                let text = text.trim_end_matches(['\n', '\r']);
                let cut = if n > line.len() { " [cut]" } else { "" };
                tracing::info!(target: "pocket_mcp::stderr", server = %server, "{text}{cut}");
            }
            Err(e) => {
                tracing::debug!(server = %server, error = %e, "reading the server's stderr failed");
                break;
            }
        }
    }
}

/// Reads one line (through `\n` or to the end) into `line`, keeping at most
/// [`MAX_STDERR_LINE`] bytes of it; returns how many bytes it consumed (0 at the end).
async fn read_line_capped(
    reader: &mut (impl AsyncBufRead + Unpin),
    line: &mut Vec<u8>,
) -> std::io::Result<usize> {
    let mut consumed = 0;
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Ok(consumed);
        }
        let (take, done) = match available.iter().position(|&b| b == b'\n') {
            Some(at) => (at + 1, true),
            None => (available.len(), false),
        };
        let room = MAX_STDERR_LINE.saturating_sub(line.len());
        line.extend_from_slice(&available[..take.min(room)]);
        reader.consume(take);
        consumed += take;
        if done {
            return Ok(consumed);
        }
    }
}

/// Our side of the connection: who we are, and what we do with the server's notifications.
struct Handler {
    server: Arc<str>,
    list_changed: Arc<Notify>,
}

impl ClientHandler for Handler {
    async fn on_tool_list_changed(&self, _: NotificationContext<RoleClient>) {
        // A stored permit: several notifications during one re-listing cause one more.
        self.list_changed.notify_one();
    }

    #[allow(deprecated)] // see the import
    async fn on_logging_message(
        &self,
        params: LoggingMessageNotificationParam,
        _: NotificationContext<RoleClient>,
    ) {
        let server = &*self.server;
        let logger = params.logger.as_deref().unwrap_or_default();
        let data = match &params.data {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        match params.level {
            LoggingLevel::Debug => {
                tracing::debug!(target: "pocket_mcp::log", server, logger, "{data}");
            }
            LoggingLevel::Info | LoggingLevel::Notice => {
                tracing::info!(target: "pocket_mcp::log", server, logger, "{data}");
            }
            LoggingLevel::Warning => {
                tracing::warn!(target: "pocket_mcp::log", server, logger, "{data}");
            }
            _ => tracing::error!(target: "pocket_mcp::log", server, logger, "{data}"),
        }
    }

    fn get_info(&self) -> ClientConfig {
        ClientConfig::new(
            ClientCapabilities::default(),
            Implementation::new("pocket-agent", env!("CARGO_PKG_VERSION")),
        )
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Mutex;

    use super::*;

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn stderr_lines_become_events_naming_the_server() {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        let _guard = tracing::subscriber::set_default(subscriber);
        let long = "x".repeat(MAX_STDERR_LINE + 10);
        let input = format!("starting up\n{long}\nready\n");
        forward_stderr(Arc::from("fs"), input.as_bytes(), CancellationToken::new()).await;
        let logged = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = logged.lines().collect();
        assert_eq!(lines.len(), 3, "{logged}");
        assert!(
            lines[0].ends_with("pocket_mcp::stderr: starting up server=fs"),
            "{logged}"
        );
        assert!(
            lines[1].ends_with(&format!("{} [cut] server=fs", &long[..MAX_STDERR_LINE])),
            "{logged}"
        );
        assert!(
            lines[2].ends_with("pocket_mcp::stderr: ready server=fs"),
            "{logged}"
        );
    }

    #[test]
    fn backoff_doubles_up_to_the_limit() {
        let max = Duration::from_secs(5);
        assert_eq!(backoff(1, max), Duration::from_millis(500));
        assert_eq!(backoff(2, max), Duration::from_secs(1));
        assert_eq!(backoff(4, max), Duration::from_secs(4));
        assert_eq!(backoff(5, max), max);
        assert_eq!(backoff(u32::MAX, max), max);
    }
}
