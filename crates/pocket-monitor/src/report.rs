//! What the monitor reports: per-agent and per-tool statistics, the history samples, the
//! system status and the health report.

use std::collections::BTreeMap;
use std::fmt;
use std::time::SystemTime;

use serde::Serialize;

use crate::alerts::{Alert, AlertStatus};
use crate::logging::LogSummary;

/// Health of an agent or of the whole system (the seed's three states).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// Errors and memory are under the degraded thresholds.
    Healthy,
    /// Over a degraded threshold.
    Degraded,
    /// Over a failed threshold.
    Failed,
}

/// The system status: [`Health`] of the whole process.
pub type SystemStatus = Health;

impl Health {
    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Healthy => "healthy",
            Self::Degraded => "degraded",
            Self::Failed => "failed",
        }
    }
}

impl fmt::Display for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One agent's runs, from the plugin's hooks (the seed's per-agent record).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AgentStats {
    /// Runs that ended (succeeded, failed or were cancelled).
    pub executions: u64,
    /// Runs that failed (cancelled runs are not errors).
    pub errors: u64,
    /// Runs that were cancelled.
    pub cancelled: u64,
    /// Runs in progress.
    pub running: u64,
    /// Wall time of all ended runs, milliseconds.
    pub total_time_ms: f64,
    /// Mean wall time of an ended run, milliseconds.
    pub mean_time_ms: f64,
    /// Errors among the agent's recent runs (up to `alerts.error_window`), 0.0–1.0.
    pub recent_error_rate: f64,
    /// From the recent error rate and the `[monitoring.health]` thresholds.
    pub health: Health,
    /// Tool calls that ran (seen by `after_tool`).
    pub tool_calls: u64,
    /// Of those, how many returned an error.
    pub tool_failures: u64,
    /// Mean duration of a tool call, milliseconds.
    pub mean_tool_time_ms: f64,
    /// The last error, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// One tool's calls, from the agents' event streams (refused calls included).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ToolStats {
    /// Calls.
    pub calls: u64,
    /// Calls that failed or were refused.
    pub failures: u64,
    /// Mean duration, milliseconds.
    pub mean_time_ms: f64,
}

/// Totals over all agents.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunSummary {
    /// Agents seen.
    pub agents: usize,
    /// Runs ended.
    pub total: u64,
    /// Runs failed.
    pub failed: u64,
    /// Runs in progress.
    pub running: u64,
    /// Mean run time, milliseconds.
    pub mean_time_ms: f64,
}

/// Totals over all tools.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ToolSummary {
    /// Distinct tools called.
    pub tools: usize,
    /// Calls.
    pub executions: u64,
    /// Failed or refused calls.
    pub failures: u64,
    /// Mean call time, milliseconds.
    pub mean_time_ms: f64,
}

/// Totals over all model calls.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelSummary {
    /// Calls.
    pub calls: u64,
    /// Failed calls.
    pub failures: u64,
    /// Prompt tokens.
    pub input_tokens: u64,
    /// Output tokens.
    pub output_tokens: u64,
}

/// One minute of history (the seed keeps a day of these).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sample {
    /// When it was taken (Unix seconds in JSON).
    #[serde(serialize_with = "unix_secs")]
    pub at: SystemTime,
    /// Runs that ended since the previous sample.
    pub runs: u64,
    /// Of those, failed.
    pub failures: u64,
    /// Their mean time, milliseconds (0 without runs).
    pub mean_run_ms: f64,
    /// Runs in progress.
    pub running: u64,
    /// Tool calls since the previous sample.
    pub tool_calls: u64,
    /// Of those, failed.
    pub tool_failures: u64,
    /// Model calls since the previous sample.
    pub model_calls: u64,
    /// Tokens (input and output) since the previous sample.
    pub tokens: u64,
    /// Resident memory, bytes.
    pub memory_bytes: Option<u64>,
    /// CPU use since the previous sample, percent of one core.
    pub cpu_percent: Option<f64>,
    /// Open client connections.
    pub open_connections: i64,
    /// Tasks waiting in the queue.
    pub queue_depth: i64,
    /// The system status.
    pub status: Health,
}

/// The seed's health report.
#[derive(Debug, Clone, Serialize)]
pub struct HealthReport {
    /// The system status.
    pub status: SystemStatus,
    /// Why it is not healthy, in words (empty when healthy).
    pub reasons: Vec<String>,
    /// When the report was made (Unix seconds in JSON).
    #[serde(serialize_with = "unix_secs")]
    pub at: SystemTime,
    /// Seconds since the monitor started.
    pub uptime_secs: f64,
    /// Error rate of recent runs (those in `[monitoring.health] window_secs`).
    pub error_rate: f64,
    /// Resident memory, bytes.
    pub memory_bytes: Option<u64>,
    /// CPU use over the last sample interval, percent of one core.
    pub cpu_percent: Option<f64>,
    /// Runs over all agents.
    pub runs: RunSummary,
    /// Tool calls over all tools.
    pub tools: ToolSummary,
    /// Model calls.
    pub models: ModelSummary,
    /// Per agent.
    pub agents: BTreeMap<String, AgentStats>,
    /// Per tool.
    pub tool_stats: BTreeMap<String, ToolStats>,
    /// Alert types that fired, with when.
    pub alerts: Vec<AlertStatus>,
    /// The last alerts (up to 10), oldest first.
    pub recent_alerts: Vec<Alert>,
    /// Counts over the recent log entries, when the monitor was given the ring.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logs: Option<LogSummary>,
}

pub(crate) fn unix_secs<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(
        t.duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0),
    )
}
