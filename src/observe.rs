//! Monitoring and the runtime's shared services, set up the same way for every command.

use std::path::PathBuf;

use pocket_agent::Agent;
use pocket_mcp::McpHub;
use pocket_monitor::logging::LogGuard;
use pocket_monitor::{Metrics, Monitor, MonitorConfig};
use pocket_resilience::{BreakerState, ResilienceEvent, ResilienceHub};
use tokio::task::JoinHandle;

use crate::Failure;
use crate::config::Config;

/// The `[monitoring]` section with the command line applied: `--log-dir` wins over
/// `log_dir`; `POCKET_LOG` / `RUST_LOG` set the level everywhere; otherwise the console shows
/// `console_default` and up, the files and the ring the configured level.
pub(crate) fn monitor_config(
    config: &Config,
    log_dir: Option<PathBuf>,
    console_default: &str,
) -> MonitorConfig {
    let mut mon = config.monitoring.clone();
    if let Some(dir) = log_dir {
        mon.log_dir = Some(dir);
    }
    let env = std::env::var("POCKET_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .ok();
    match env.filter(|f| !f.trim().is_empty()) {
        Some(filter) => {
            mon.level = filter;
            mon.console_level = None;
        }
        None if mon.console_level.is_none() => mon.console_level = Some(console_default.to_owned()),
        None => {}
    }
    mon
}

/// What a command's agents share: MCP servers, resilience, monitoring.
pub(crate) struct Services {
    pub(crate) mcp: McpHub,
    pub(crate) hub: ResilienceHub,
    pub(crate) monitor: Monitor,
    glue: JoinHandle<()>,
}

impl Services {
    /// Starts the MCP servers, the resilience hub and the monitor (with the log ring).
    pub(crate) fn new(mcp: McpHub, monitor: Monitor) -> Self {
        let hub = ResilienceHub::new();
        let glue = tokio::spawn(resilience_metrics(hub.clone(), monitor.metrics().clone()));
        Self {
            mcp,
            hub,
            monitor,
            glue,
        }
    }

    /// Feeds an agent's events to the monitor.
    pub(crate) fn observe(&self, agent: &Agent) {
        // The observer is tracked by the monitor and ends with its shutdown.
        let _observer = self.monitor.observe(agent);
    }

    /// Stops everything: MCP children, monitor tasks, the metrics glue.
    pub(crate) async fn shutdown(self) {
        self.mcp.shutdown().await;
        self.monitor.shutdown().await;
        self.glue.abort();
        let _ = self.glue.await;
    }
}

impl Services {
    /// The monitor (sampling the process once a minute when `sample`), then the `[mcp]`
    /// servers; if those fail to start, the monitor is stopped again.
    pub(crate) async fn start(
        config: &Config,
        monitoring: MonitorConfig,
        logs: &LogGuard,
        sample: bool,
    ) -> Result<Self, Failure> {
        let monitor = self::monitor(monitoring, logs, sample).map_err(Failure::Usage)?;
        match crate::wiring::start_mcp(config).await {
            Ok(mcp) => Ok(Self::new(mcp, monitor)),
            Err(e) => {
                monitor.shutdown().await;
                Err(e.into())
            }
        }
    }
}

/// Builds the monitor for a command.
pub(crate) fn monitor(
    config: MonitorConfig,
    logs: &LogGuard,
    sample: bool,
) -> Result<Monitor, String> {
    let mut builder = Monitor::builder(config).recent_logs(logs.recent().clone());
    if !sample {
        builder = builder.sample_interval(None);
    }
    builder.build().map_err(|e| format!("monitoring: {e}"))
}

/// Resilience events into Prometheus metrics: retries and breaker states.
async fn resilience_metrics(hub: ResilienceHub, metrics: Metrics) {
    let mut events = hub.subscribe();
    drop(hub);
    loop {
        match events.recv().await {
            Ok(ResilienceEvent::RetryScheduled { key, .. }) => metrics.record_retry(&key),
            Ok(ResilienceEvent::BreakerTransition { key, to, .. }) => {
                let state = match to {
                    BreakerState::Closed => pocket_monitor::BreakerState::Closed,
                    BreakerState::HalfOpen => pocket_monitor::BreakerState::HalfOpen,
                    BreakerState::Open => pocket_monitor::BreakerState::Open,
                };
                metrics.set_breaker_state(&key, state);
            }
            Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        }
    }
}
