//! `pocket worker`: the dispatcher and agent pool without an API, working off a shared store.

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use pocket_agent::{Agent, Approver};
use pocket_cluster::{Cluster, Stopped};

use crate::config::{Config, ConfigError};
use crate::observe::{self, Services};
use crate::wiring::{self, Overrides};
use crate::{AgentArgs, Failure};

/// Options of `pocket worker`.
#[derive(Debug, clap::Args)]
pub(crate) struct WorkerArgs {
    #[command(flatten)]
    pub(crate) agent: AgentArgs,
    /// The task store: `sqlite://FILE`, `postgres://...` (default: `[store] url`, else
    /// `sqlite://pocket.db`).
    #[arg(long, value_name = "URL")]
    pub(crate) store: Option<String>,
    /// Write logs to DIR/app_YYYY-MM-DD.log (overrides `[monitoring] log_dir`).
    #[arg(long, value_name = "DIR")]
    pub(crate) log_dir: Option<PathBuf>,
}

/// Runs a worker until SIGINT or SIGTERM, then shuts down gracefully: stops claiming, lets
/// in-flight runs finish within the grace period (or leaves them checkpointed for another
/// worker), and releases its leases.
pub(crate) async fn run(
    args: WorkerArgs,
    config: Config,
    monitoring: pocket_monitor::MonitorConfig,
    logs: &pocket_monitor::LogGuard,
) -> Result<(), Failure> {
    let services = observe::Services::start(&config, monitoring, logs, true).await?;
    let result = work(args, &config, &services).await;
    services.shutdown().await;
    result
}

/// Opens the store and builds a cluster serving every configured agent (or `default`).
/// Agents are built once (MCP tools need async set-up); instances are cheap clones, and a
/// replaced instance is a fresh clone of the configured agent. Returns the cluster, the agent
/// names and the store URL.
pub(crate) async fn build_cluster(
    config: &Config,
    store: Option<String>,
    overrides: &Overrides,
    approver: Option<Arc<dyn Approver>>,
    services: &Services,
) -> Result<(Cluster, Vec<String>, String), Failure> {
    let url = store.unwrap_or_else(|| config.store.url.clone());
    let store = pocket_cluster::open(&url, config.cluster.store_options())
        .await
        .map_err(|e| Failure::Usage(format!("--store {}: {e}", redact(&url))))?;
    let mut names: Vec<String> = config.agents.keys().cloned().collect();
    if names.is_empty() {
        names.push("default".into());
    }
    let mut agents: HashMap<String, Agent> = HashMap::new();
    for name in &names {
        let agent =
            wiring::build_agent(config, name, overrides, approver.clone(), services).await?;
        agents.insert(name.clone(), agent);
    }
    let mut builder = Cluster::builder(store)
        .config(config.cluster.clone())
        .resilience(services.hub.clone())
        .metrics(services.monitor.metrics().clone())
        .factory(move |name| {
            agents
                .get(name)
                .cloned()
                .ok_or_else(|| format!("no agent named `{name}`").into())
        });
    for name in &names {
        let caps = config
            .agents
            .get(name)
            .map(|a| a.capabilities.clone())
            .unwrap_or_default();
        builder = builder.agent_with_capabilities(name.clone(), caps);
    }
    let cluster = builder
        .build()
        .map_err(|e| Failure::from(ConfigError::new(config.file(), "cluster", e.to_string())))?;
    Ok((cluster, names, url))
}

#[allow(clippy::print_stderr)] // the CLI's own status lines
async fn work(args: WorkerArgs, config: &Config, services: &Services) -> Result<(), Failure> {
    let overrides = Overrides {
        model: args.agent.model,
        tools: args.agent.tools,
        stream: false,
    };
    // Nobody is at a terminal: approval requests go to the shared store, where any
    // `pocket serve` on the same store lists them and records the answer, which this worker
    // reads back (or the request times out into the fail-safe denial).
    let approver = pocket_server::HttpApprover::new();
    let shared: Arc<dyn Approver> = Arc::new(approver.clone());
    let (cluster, names, url) =
        build_cluster(config, args.store, &overrides, Some(shared), services).await?;
    approver.attach(cluster.clone());
    eprintln!(
        "pocket worker {} serving {} on {}",
        cluster.worker_id(),
        names.join(", "),
        redact(&url)
    );
    let stopped: Stopped = run_spawned(cluster.clone(), shutdown_signal())
        .await
        .map_err(|e| Failure::Usage(format!("worker: {e}")))?;
    eprintln!("pocket worker stopped: {stopped:?}");
    Ok(())
}

/// Runs the cluster's loops until `signal` on a runtime worker thread, not on the caller's
/// (often `block_on`'s) thread: every submission and finished run wakes the dispatch loop, and
/// waking a thread outside the runtime's workers costs a context switch each time (~10 → ~3.4
/// `futex` calls per chat request in `pocket serve`, BENCHMARKS.md). The loops are aborted if
/// the returned future is dropped.
pub(crate) async fn run_spawned(
    cluster: Cluster,
    signal: impl Future<Output = ()> + Send + 'static,
) -> Result<Stopped, pocket_cluster::ClusterError> {
    let mut running = AbortOnDrop(tokio::spawn(async move { cluster.run(signal).await }));
    match (&mut running.0).await {
        Ok(stopped) => stopped,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        // Cancelled: the runtime is shutting down, and the cluster's runs with it.
        Err(_) => Ok(Stopped::default()),
    }
}

/// Aborts a spawned task when dropped.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// SIGINT or SIGTERM.
pub(crate) async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}

/// A store URL without its password, for logs.
pub(crate) fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn store_passwords_are_not_printed() {
        assert_eq!(
            redact("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact("sqlite://pocket.db"), "sqlite://pocket.db");
    }
}
