//! `pocket serve`: the HTTP API over a cluster worker in one process. `pocket demo` runs the
//! same machinery ([`build_server`], [`run_service`]) on its own agents.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use pocket_cluster::{Cluster, Stopped};
use pocket_server::{HttpApprover, Server};
use tokio_util::sync::CancellationToken;

use crate::config::{Config, ServerConfig};
use crate::observe::{self, Services};
use crate::wiring::Overrides;
use crate::{AgentArgs, Failure};

/// Options of `pocket serve`.
#[derive(Debug, clap::Args)]
pub(crate) struct ServeArgs {
    #[command(flatten)]
    pub(crate) agent: AgentArgs,
    /// Address to listen on (default: `[server] listen`, else `127.0.0.1:7878`).
    #[arg(long, value_name = "ADDR")]
    pub(crate) listen: Option<SocketAddr>,
    /// The task store (default: `[store] url`, else `sqlite://pocket.db`).
    #[arg(long, value_name = "URL")]
    pub(crate) store: Option<String>,
    /// Write logs to DIR/app_YYYY-MM-DD.log (overrides `[monitoring] log_dir`).
    #[arg(long, value_name = "DIR")]
    pub(crate) log_dir: Option<PathBuf>,
}

/// Runs the API and a worker until SIGINT or SIGTERM, then drains and shuts down.
pub(crate) async fn run(
    args: ServeArgs,
    config: Config,
    monitoring: pocket_monitor::MonitorConfig,
    logs: &pocket_monitor::LogGuard,
) -> Result<(), Failure> {
    let services = observe::Services::start(&config, monitoring, logs, true).await?;
    let result = serve(args, &config, &services).await;
    services.shutdown().await;
    result
}

#[allow(clippy::print_stderr)] // the CLI's own status lines
async fn serve(args: ServeArgs, config: &Config, services: &Services) -> Result<(), Failure> {
    let overrides = Overrides {
        model: args.agent.model,
        tools: args.agent.tools,
        // Text deltas reach task events and streamed chat completions.
        stream: true,
    };
    let settings = &config.server;
    // Before the store is opened: a missing key is the most common start-up mistake.
    let keys = api_keys(settings)?;
    // People answer risky calls over HTTP (GET/POST /v1/approvals, the dashboard).
    let approver = HttpApprover::new();
    let shared: Arc<dyn pocket_agent::Approver> = Arc::new(approver.clone());
    let (cluster, names, url) =
        crate::worker::build_cluster(config, args.store, &overrides, Some(shared), services)
            .await?;
    let server = build_server(cluster.clone(), services, approver, settings, &keys, &names)
        .map_err(|e| Failure::Usage(e.with_file(config)))?;
    let (listen, source) = match args.listen {
        Some(addr) => (addr, "--listen"),
        None => (settings.listen, "server.listen"),
    };
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| Failure::Usage(format!("{source} {listen}: {e}")))?;
    let local = listener.local_addr().map_or(listen, |a| a);
    eprintln!(
        "pocket serve on http://{local} (store {})",
        crate::worker::redact(&url)
    );
    let stopped = run_service(
        &server,
        &cluster,
        listener,
        crate::worker::shutdown_signal(),
        settings.shutdown_grace(),
    )
    .await?;
    eprintln!("pocket serve stopped: {stopped:?}");
    Ok(())
}

/// The API keys from the environment variable `[server] api_keys_env` names (never from a
/// file or a flag).
///
/// # Errors
/// Usage, naming the variable, when it is unset or blank.
pub(crate) fn api_keys(settings: &ServerConfig) -> Result<String, Failure> {
    let var = &settings.api_keys_env;
    match std::env::var(var) {
        Ok(keys) if !keys.trim().is_empty() => Ok(keys),
        _ => Err(Failure::Usage(format!(
            "{var} is not set: the API needs at least one key (comma-separated)"
        ))),
    }
}

/// Why the server could not be built, naming the `[server]` key.
pub(crate) struct SettingError {
    key: &'static str,
    message: String,
}

impl SettingError {
    /// The message, with the config file when there is one.
    pub(crate) fn with_file(self, config: &Config) -> String {
        match config.file() {
            Some(file) => format!("{}: {}: {}", file.display(), self.key, self.message),
            None => format!("{}: {}", self.key, self.message),
        }
    }
}

/// The HTTP API over `cluster` with the `[server]` settings: monitor, resilience report,
/// approvals, keys (comma-separated), body and time limits, CORS, dashboard sessions and
/// live series, default agent.
pub(crate) fn build_server(
    cluster: Cluster,
    services: &Services,
    approver: HttpApprover,
    settings: &ServerConfig,
    keys: &str,
    agents: &[String],
) -> Result<Server, SettingError> {
    let default_agent = match &settings.default_agent {
        Some(name) if agents.contains(name) => name.clone(),
        Some(name) => {
            return Err(SettingError {
                key: "server.default_agent",
                message: format!(
                    "no agent named `{name}` is served (served: {})",
                    agents.join(", ")
                ),
            });
        }
        None if agents.iter().any(|a| a == "default") => "default".into(),
        None => agents.first().cloned().unwrap_or_else(|| "default".into()),
    };
    Server::builder(cluster)
        .monitor(services.monitor.clone())
        .resilience(services.hub.clone())
        .approvals(approver)
        .api_keys_csv(keys)
        .body_limit(settings.body_limit_bytes)
        .request_timeout(settings.request_timeout())
        .cors_origins(settings.cors_origins.iter().cloned())
        .session_ttl(settings.session_ttl())
        .live_interval(settings.live_interval())
        .chat_direct(settings.chat_direct)
        .chat_direct_wait(Duration::from_millis(settings.chat_direct_wait_ms))
        .max_chat_in_flight(settings.max_chat_in_flight)
        .default_agent(default_agent)
        .build()
        .map_err(|e| SettingError {
            key: match e {
                pocket_server::BuildError::EmptyKey => "api keys",
                pocket_server::BuildError::ZeroBodyLimit => "server.body_limit_bytes",
                pocket_server::BuildError::ZeroTimeout => "server.request_timeout_secs",
                pocket_server::BuildError::ZeroChatLimit => "server.max_chat_in_flight",
                pocket_server::BuildError::InvalidOrigin(_) => "server.cors_origins",
                pocket_server::BuildError::ZeroDashboardDuration => {
                    "server.session_ttl_secs or server.live_interval_secs"
                }
                _ => "server",
            },
            message: e.to_string(),
        })
}

/// Serves `server` on `listener` and works off the queue with `cluster` until `signal`
/// resolves; then stops accepting (new tasks get 503), lets in-flight runs finish within the
/// cluster's grace period (or leaves them checkpointed, their leases released), and gives
/// open HTTP requests `http_grace` to finish before closing them.
///
/// # Errors
/// The listener's or the cluster's errors.
pub(crate) async fn run_service(
    server: &Server,
    cluster: &Cluster,
    listener: tokio::net::TcpListener,
    signal: impl Future<Output = ()> + Send + 'static,
    http_grace: Duration,
) -> Result<Stopped, Failure> {
    let fired = CancellationToken::new();
    let signal = {
        let fired = fired.clone();
        async move {
            signal.await;
            fired.cancel();
        }
    };
    // serve() drains and begins the cluster's shutdown when the signal fires.
    let serving = async {
        let served = tokio::select! {
            served = server.serve(listener, signal) => served,
            () = async {
                fired.cancelled().await;
                tokio::time::sleep(http_grace).await;
            } => {
                tracing::warn!(
                    grace_secs = http_grace.as_secs_f64(),
                    "HTTP requests still open after the shutdown grace period: closing them"
                );
                Ok(())
            }
        };
        // Also when the listener failed before any signal.
        cluster.shutdown();
        served
    };
    let running = crate::worker::run_spawned(cluster.clone(), std::future::pending::<()>());
    let (stopped, served) = tokio::join!(running, serving);
    served.map_err(|e| Failure::Usage(format!("HTTP server: {e}")))?;
    stopped.map_err(|e| Failure::Usage(format!("cluster: {e}")))
}
