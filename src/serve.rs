//! `pocket serve`: the HTTP API over a cluster worker in one process.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use pocket_server::{HttpApprover, Server};

use crate::config::Config;
use crate::observe::{self, Services};
use crate::wiring::Overrides;
use crate::{AgentArgs, Failure};

/// Options of `pocket serve`.
#[derive(Debug, clap::Args)]
pub(crate) struct ServeArgs {
    #[command(flatten)]
    pub(crate) agent: AgentArgs,
    /// Address to listen on.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7878")]
    pub(crate) listen: SocketAddr,
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
    };
    // People answer risky calls over HTTP (GET/POST /v1/approvals, the dashboard).
    let approver = HttpApprover::new();
    let shared: Arc<dyn pocket_agent::Approver> = Arc::new(approver.clone());
    let (cluster, names, url) =
        crate::worker::build_cluster(config, args.store, &overrides, Some(shared), services)
            .await?;
    // Keys only from the environment, never from a file or a flag.
    let keys = std::env::var("POCKET_API_KEYS").unwrap_or_default();
    if keys.trim().is_empty() {
        return Err(Failure::Usage(
            "POCKET_API_KEYS is not set: the API needs at least one key (comma-separated)".into(),
        ));
    }
    let server = Server::builder(cluster.clone())
        .monitor(services.monitor.clone())
        .resilience(services.hub.clone())
        .approvals(approver)
        .api_keys_csv(&keys)
        .default_agent(names[0].clone())
        .build()
        .map_err(|e| Failure::Usage(format!("POCKET_API_KEYS: {e}")))?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| Failure::Usage(format!("--listen {}: {e}", args.listen)))?;
    let local = listener.local_addr().map_or(args.listen, |a| a);
    eprintln!(
        "pocket serve on http://{local} (store {})",
        crate::worker::redact(&url)
    );
    // serve() drains and stops the cluster on SIGINT/SIGTERM, which ends run().
    let serving = async {
        let served = server
            .serve(listener, crate::worker::shutdown_signal())
            .await;
        cluster.shutdown();
        served
    };
    let (stopped, served) = tokio::join!(cluster.run(std::future::pending::<()>()), serving);
    served.map_err(|e| Failure::Usage(format!("HTTP server: {e}")))?;
    let stopped = stopped.map_err(|e| Failure::Usage(format!("cluster: {e}")))?;
    eprintln!("pocket serve stopped: {stopped:?}");
    Ok(())
}
