//! Monitoring for Pocket Agent: structured logs with rotation, retention and sampling;
//! Prometheus metrics; alerts; health (the seed's Example 2).
//!
//! Libraries only emit; the binary installs. A binary calls [`logging::install`] once in
//! `main` (console, rolling files `app_YYYY-MM-DD.log`, sampling, a ring of recent entries),
//! builds one [`Monitor`], adds [`Monitor::plugin`] to every agent and calls
//! [`Monitor::observe`] on each, and serves [`Metrics::encode`] at `/metrics` and
//! [`Monitor::health`] at `/v1/health`.
//!
//! ```
//! use pocket_agent::{Agent, Completion, CompletionRequest, Model, ModelError};
//! use pocket_monitor::{Health, Monitor, MonitorConfig};
//!
//! struct Echo;
//!
//! impl Model for Echo {
//!     fn name(&self) -> &str {
//!         "echo"
//!     }
//!     async fn complete(&self, _: &CompletionRequest) -> Result<Completion, ModelError> {
//!         Ok(Completion::text("hi"))
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let monitor = Monitor::new(MonitorConfig::default())?;
//! let agent = Agent::builder(Echo)
//!     .name("greeter")
//!     .plugin(monitor.plugin()) // runs, per-agent statistics, alerts
//!     .build()?;
//! let observer = monitor.observe(&agent); // model calls, tokens, tools, approvals
//!
//! agent.run("say hi").await?;
//! observer.flush().await;
//!
//! assert_eq!(monitor.agent_stats()["greeter"].executions, 1);
//! assert_eq!(monitor.status(), Health::Healthy);
//! let exposition = monitor.metrics().encode();
//! assert!(exposition.contains(r#"pocket_model_calls_total{model="echo",outcome="success"} 1"#));
//! monitor.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! Logs follow the seed's entry shape through conventional field names: `agent`,
//! `component`, `message`, other fields as metadata, and `duration_ms` / `memory_bytes` as
//! performance. `critical` is an ERROR event with target `pocket::critical` (use
//! [`critical!`]), so a filter such as `off,pocket::critical=error` selects exactly those.
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | `otlp` | off | OTLP/HTTP export of spans and of the GenAI metrics, set by `[monitoring.otlp]`; OpenTelemetry adds over a minute of build on two cores |

pub mod alerts;
mod config;
pub mod logging;
mod metrics;
mod monitor;
mod observer;
#[cfg(feature = "otlp")]
mod otlp;
mod plugin;
pub mod process;
mod report;

pub use alerts::{Alert, AlertKind, AlertManager, AlertSink, AlertStatus, LogSink, WebhookSink};
pub use config::{
    AlertsConfig, ConfigError, HealthConfig, LogFormat, MonitorConfig, OtlpConfig, RetentionConfig,
    Rotation,
};
pub use logging::{LogGuard, RecentLogs};
pub use metrics::{
    BreakerState, CONTENT_TYPE, ConnectionGuard, Metrics, OPENMETRICS_CONTENT_TYPE, Outcome,
    OverheadPhase,
};
pub use monitor::{Monitor, MonitorBuilder, MonitorError};
pub use observer::Observer;
pub use plugin::MonitoringPlugin;
pub use report::{
    AgentStats, Health, HealthReport, ModelSummary, RunSummary, Sample, SystemStatus, ToolStats,
    ToolSummary,
};

#[doc(hidden)]
pub mod __private {
    pub use tracing;
}

/// The target of critical events; `off,pocket::critical=error` selects only them.
pub const CRITICAL_TARGET: &str = "pocket::critical";

/// Emits a critical event: an ERROR event with target [`CRITICAL_TARGET`] and the field
/// `critical = true`. Takes what `tracing::error!` takes, without a `target:`.
///
/// ```
/// pocket_monitor::critical!(component = "store", path = "pocket.db", "the store is corrupt");
/// ```
#[macro_export]
macro_rules! critical {
    ($($arg:tt)+) => {
        $crate::__private::tracing::error!(target: $crate::CRITICAL_TARGET, critical = true, $($arg)+)
    };
}
