//! Prometheus metrics: a typed registry (prometheus-client, no global state) behind a
//! cheap-clone handle, and its text exposition.
//!
//! Names are prefixed `pocket_` with the unit in the name, except the two OpenTelemetry GenAI
//! histograms, which keep their standard names (`gen_ai_client_operation_duration_seconds`,
//! `gen_ai_client_token_usage`) so that existing GenAI dashboards work.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `pocket_runs_total` | counter | `agent`, `outcome` |
//! | `pocket_run_duration_seconds` | histogram | `agent` |
//! | `pocket_runs_active` | gauge | `agent` |
//! | `pocket_model_calls_total` | counter | `model`, `outcome` |
//! | `pocket_model_latency_seconds` | histogram | `model` |
//! | `pocket_model_tokens_total` | counter | `model`, `type` (`input`, `output`) |
//! | `pocket_tool_calls_total` | counter | `tool`, `outcome` |
//! | `pocket_tool_duration_seconds` | histogram | `tool` |
//! | `pocket_retries_total` | counter | `key` |
//! | `pocket_breaker_state` | gauge (0 closed, 1 half-open, 2 open) | `key` |
//! | `pocket_approvals_total` | counter | `tool`, `decision` |
//! | `pocket_queue_depth` | gauge | |
//! | `pocket_instances` | gauge | `status` |
//! | `pocket_open_connections` | gauge | |
//! | `pocket_alerts_total` | counter | `alert` |
//! | `pocket_alert_deliveries_total` | counter | `sink`, `outcome` |
//! | `pocket_runtime_overhead_seconds` | histogram | `phase` |
//! | `pocket_monitor_events_lost_total` | counter | |
//! | `pocket_process_resident_memory_bytes` | gauge | |
//! | `pocket_process_cpu_seconds_total` | counter | |
//! | `pocket_process_open_fds`, `pocket_process_threads` | gauge | |
//! | `pocket_uptime_seconds` | gauge | |
//! | `gen_ai_client_operation_duration_seconds` | histogram | `gen_ai_operation_name`, `gen_ai_request_model`, `error_type` |
//! | `gen_ai_client_token_usage` | histogram | `gen_ai_operation_name`, `gen_ai_request_model`, `gen_ai_token_type` |
//!
//! `outcome` is `success`, `cancelled`, or the error kind (`network`, `timeout`,
//! `rate_limited`, `validation`, `resource`, `tool`, `auth`, `unknown`).

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pocket_agent::ErrorKind;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::process;

/// `Content-Type` of [`Metrics::encode`] (Prometheus text format 0.0.4).
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// `Content-Type` of [`Metrics::encode_openmetrics`].
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// How an operation ended, as the `outcome` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// It succeeded.
    Success,
    /// It was cancelled.
    Cancelled,
    /// It failed with this kind of error.
    Failed(ErrorKind),
}

impl Outcome {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Cancelled => "cancelled",
            Self::Failed(kind) => kind.as_str(),
        }
    }

    /// Whether it is a failure.
    pub fn is_failure(self) -> bool {
        matches!(self, Self::Failed(_))
    }
}

/// A circuit breaker's state, as the value of `pocket_breaker_state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BreakerState {
    /// Calls go through (0).
    Closed,
    /// One trial call goes through (1).
    HalfOpen,
    /// Calls fail fast (2).
    Open,
}

impl BreakerState {
    fn value(self) -> i64 {
        match self {
            Self::Closed => 0,
            Self::HalfOpen => 1,
            Self::Open => 2,
        }
    }
}

/// Where time went outside the model and the tools (`pocket_runtime_overhead_seconds`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum OverheadPhase {
    /// A task waiting in the queue before a worker took it.
    QueueWait,
    /// Choosing an instance and handing the task over.
    Scheduling,
    /// Plugin hooks.
    Hooks,
    /// Writing checkpoints and journal entries.
    Checkpoint,
    /// The rest of a run: its wall time less model and tool time (the loop, validation,
    /// hooks and approval waits inside the run).
    AgentLoop,
}

impl OverheadPhase {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::QueueWait => "queue_wait",
            Self::Scheduling => "scheduling",
            Self::Hooks => "hooks",
            Self::Checkpoint => "checkpoint",
            Self::AgentLoop => "agent_loop",
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AgentOutcome {
    agent: Arc<str>,
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AgentLabel {
    agent: Arc<str>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModelOutcome {
    model: Arc<str>,
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModelLabel {
    model: Arc<str>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TokenLabels {
    model: Arc<str>,
    r#type: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ToolOutcome {
    tool: Arc<str>,
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ToolLabel {
    tool: Arc<str>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KeyLabel {
    key: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ApprovalLabels {
    tool: Arc<str>,
    decision: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    status: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AlertLabel {
    alert: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeliveryLabels {
    sink: &'static str,
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabel {
    phase: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GenAiOperation {
    gen_ai_operation_name: &'static str,
    gen_ai_request_model: Arc<str>,
    error_type: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GenAiTokens {
    gen_ai_operation_name: &'static str,
    gen_ai_request_model: Arc<str>,
    gen_ai_token_type: &'static str,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

fn run_buckets() -> Histogram {
    Histogram::new([
        0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
    ])
}

fn tool_buckets() -> Histogram {
    Histogram::new([
        0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    ])
}

fn overhead_buckets() -> Histogram {
    Histogram::new([
        1e-5, 1e-4, 5e-4, 1e-3, 5e-3, 0.01, 0.05, 0.1, 0.5, 1.0, 10.0,
    ])
}

/// The OpenTelemetry GenAI advice for `gen_ai.client.operation.duration`.
fn genai_duration_buckets() -> Histogram {
    Histogram::new([
        0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
    ])
}

/// The OpenTelemetry GenAI advice for `gen_ai.client.token.usage`.
fn genai_token_buckets() -> Histogram {
    Histogram::new([
        1.0,
        4.0,
        16.0,
        64.0,
        256.0,
        1024.0,
        4096.0,
        16384.0,
        65536.0,
        262_144.0,
        1_048_576.0,
        4_194_304.0,
        16_777_216.0,
        67_108_864.0,
    ])
}

/// The runtime's metrics: a cheap-clone handle over one registry.
///
/// ```
/// use std::time::Duration;
/// use pocket_monitor::{BreakerState, Metrics, Outcome};
///
/// let metrics = Metrics::new();
/// metrics.record_run("writer", Outcome::Success, Duration::from_millis(1200));
/// metrics.record_retry("openai:gpt-4o");
/// metrics.set_breaker_state("openai:gpt-4o", BreakerState::Open);
/// let text = metrics.encode();
/// assert!(text.contains(r#"pocket_runs_total{agent="writer",outcome="success"} 1"#));
/// assert!(text.contains(r#"pocket_breaker_state{key="openai:gpt-4o"} 2"#));
/// ```
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    runs: Family<AgentOutcome, Counter>,
    run_duration: Histograms<AgentLabel>,
    runs_active: Family<AgentLabel, Gauge>,
    model_calls: Family<ModelOutcome, Counter>,
    model_latency: Histograms<ModelLabel>,
    tokens: Family<TokenLabels, Counter>,
    tool_calls: Family<ToolOutcome, Counter>,
    tool_duration: Histograms<ToolLabel>,
    retries: Family<KeyLabel, Counter>,
    breaker_state: Family<KeyLabel, Gauge>,
    approvals: Family<ApprovalLabels, Counter>,
    queue_depth: Gauge,
    instances: Family<StatusLabel, Gauge>,
    open_connections: Gauge,
    alerts: Family<AlertLabel, Counter>,
    alert_deliveries: Family<DeliveryLabels, Counter>,
    overhead: Histograms<PhaseLabel>,
    events_lost: Counter,
    genai_duration: Histograms<GenAiOperation>,
    genai_tokens: Histograms<GenAiTokens>,
    #[cfg(feature = "otlp")]
    otel: crate::otlp::Instruments,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with every metric of the table above.
    pub fn new() -> Self {
        Self::with_registry(Registry::default())
    }

    /// Adds the runtime's metrics to a registry that may hold your own already.
    pub fn with_registry(mut registry: Registry) -> Self {
        let genai_duration: Histograms<GenAiOperation> =
            Family::new_with_constructor(genai_duration_buckets);
        let genai_tokens: Histograms<GenAiTokens> =
            Family::new_with_constructor(genai_token_buckets);
        registry.register_with_unit(
            "gen_ai_client_operation_duration",
            "GenAI operation duration (OpenTelemetry gen_ai.client.operation.duration)",
            Unit::Seconds,
            genai_duration.clone(),
        );
        registry.register(
            "gen_ai_client_token_usage",
            "Tokens used per GenAI operation (OpenTelemetry gen_ai.client.token.usage)",
            genai_tokens.clone(),
        );

        let p = registry.sub_registry_with_prefix("pocket");
        let runs = Family::<AgentOutcome, Counter>::default();
        p.register("runs", "Agent runs by agent and outcome", runs.clone());
        let run_duration: Histograms<AgentLabel> = Family::new_with_constructor(run_buckets);
        p.register_with_unit(
            "run_duration",
            "Wall time of agent runs",
            Unit::Seconds,
            run_duration.clone(),
        );
        let runs_active = Family::<AgentLabel, Gauge>::default();
        p.register(
            "runs_active",
            "Runs in progress by agent",
            runs_active.clone(),
        );
        let model_calls = Family::<ModelOutcome, Counter>::default();
        p.register(
            "model_calls",
            "Model calls by model and outcome",
            model_calls.clone(),
        );
        let model_latency: Histograms<ModelLabel> =
            Family::new_with_constructor(genai_duration_buckets);
        p.register_with_unit(
            "model_latency",
            "Latency of model calls",
            Unit::Seconds,
            model_latency.clone(),
        );
        let tokens = Family::<TokenLabels, Counter>::default();
        p.register(
            "model_tokens",
            "Tokens by model and type (input, output)",
            tokens.clone(),
        );
        let tool_calls = Family::<ToolOutcome, Counter>::default();
        p.register(
            "tool_calls",
            "Tool calls by tool and outcome",
            tool_calls.clone(),
        );
        let tool_duration: Histograms<ToolLabel> = Family::new_with_constructor(tool_buckets);
        p.register_with_unit(
            "tool_duration",
            "Duration of tool calls (hooks, validation and approval included)",
            Unit::Seconds,
            tool_duration.clone(),
        );
        let retries = Family::<KeyLabel, Counter>::default();
        p.register(
            "retries",
            "Retries by key (model, tool or agent)",
            retries.clone(),
        );
        let breaker_state = Family::<KeyLabel, Gauge>::default();
        p.register(
            "breaker_state",
            "Circuit breaker state by key: 0 closed, 1 half-open, 2 open",
            breaker_state.clone(),
        );
        let approvals = Family::<ApprovalLabels, Counter>::default();
        p.register(
            "approvals",
            "Approval decisions by tool and decision",
            approvals.clone(),
        );
        let queue_depth = Gauge::default();
        p.register(
            "queue_depth",
            "Tasks waiting in the queue",
            queue_depth.clone(),
        );
        let instances = Family::<StatusLabel, Gauge>::default();
        p.register("instances", "Agent instances by status", instances.clone());
        let open_connections = Gauge::default();
        p.register(
            "open_connections",
            "Open client connections",
            open_connections.clone(),
        );
        let alerts = Family::<AlertLabel, Counter>::default();
        p.register("alerts", "Alerts fired by type", alerts.clone());
        let alert_deliveries = Family::<DeliveryLabels, Counter>::default();
        p.register(
            "alert_deliveries",
            "Alert deliveries by sink and outcome (sent, failed, dropped)",
            alert_deliveries.clone(),
        );
        let overhead: Histograms<PhaseLabel> = Family::new_with_constructor(overhead_buckets);
        p.register_with_unit(
            "runtime_overhead",
            "Time spent in the runtime itself, apart from model and tool time, by phase",
            Unit::Seconds,
            overhead.clone(),
        );
        let events_lost = Counter::default();
        p.register(
            "monitor_events_lost",
            "Agent events the monitor missed because it fell behind",
            events_lost.clone(),
        );
        p.register_collector(Box::new(ProcessCollector {
            started: Instant::now(),
        }));

        Self {
            inner: Arc::new(Inner {
                registry,
                runs,
                run_duration,
                runs_active,
                model_calls,
                model_latency,
                tokens,
                tool_calls,
                tool_duration,
                retries,
                breaker_state,
                approvals,
                queue_depth,
                instances,
                open_connections,
                alerts,
                alert_deliveries,
                overhead,
                events_lost,
                genai_duration,
                genai_tokens,
                #[cfg(feature = "otlp")]
                otel: crate::otlp::Instruments::new(),
            }),
        }
    }

    /// The exposition in the Prometheus text format 0.0.4 (serve with [`CONTENT_TYPE`]).
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        // Writing into a String cannot fail.
        let _ =
            prometheus_client::encoding::prometheus_text::encode(&mut out, &self.inner.registry);
        out
    }

    /// The exposition in the OpenMetrics text format (serve with
    /// [`OPENMETRICS_CONTENT_TYPE`]).
    pub fn encode_openmetrics(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.inner.registry);
        out
    }

    /// The registry, to encode it another way.
    pub fn registry(&self) -> &Registry {
        &self.inner.registry
    }

    /// Counts a finished run and observes its duration.
    pub fn record_run(&self, agent: impl Into<Arc<str>>, outcome: Outcome, duration: Duration) {
        let agent = agent.into();
        self.inner
            .run_duration
            .get_or_create(&AgentLabel {
                agent: agent.clone(),
            })
            .observe(duration.as_secs_f64());
        self.inner
            .runs
            .get_or_create(&AgentOutcome {
                agent,
                outcome: outcome.as_str(),
            })
            .inc();
    }

    /// Adds `delta` to the runs in progress of an agent.
    pub fn add_active_runs(&self, agent: impl Into<Arc<str>>, delta: i64) {
        self.inner
            .runs_active
            .get_or_create(&AgentLabel {
                agent: agent.into(),
            })
            .inc_by(delta);
    }

    /// Counts a model call, observes its latency, and its tokens when it succeeded; feeds the
    /// GenAI histograms too.
    pub fn record_model_call(
        &self,
        model: impl Into<Arc<str>>,
        outcome: Outcome,
        duration: Duration,
        usage: Option<pocket_agent::Usage>,
    ) {
        let model = model.into();
        let i = &self.inner;
        let secs = duration.as_secs_f64();
        i.model_calls
            .get_or_create(&ModelOutcome {
                model: model.clone(),
                outcome: outcome.as_str(),
            })
            .inc();
        i.model_latency
            .get_or_create(&ModelLabel {
                model: model.clone(),
            })
            .observe(secs);
        let error_type = match outcome {
            Outcome::Success => "",
            other => other.as_str(),
        };
        #[cfg(feature = "otlp")]
        i.otel.record(
            &model,
            (outcome != Outcome::Success).then_some(error_type),
            secs,
            usage,
        );
        i.genai_duration
            .get_or_create(&GenAiOperation {
                gen_ai_operation_name: "chat",
                gen_ai_request_model: model.clone(),
                error_type,
            })
            .observe(secs);
        if let Some(usage) = usage {
            for (kind, n) in [
                ("input", usage.input_tokens),
                ("output", usage.output_tokens),
            ] {
                i.tokens
                    .get_or_create(&TokenLabels {
                        model: model.clone(),
                        r#type: kind,
                    })
                    .inc_by(n);
                i.genai_tokens
                    .get_or_create(&GenAiTokens {
                        gen_ai_operation_name: "chat",
                        gen_ai_request_model: model.clone(),
                        gen_ai_token_type: kind,
                    })
                    .observe(n as f64);
            }
        }
    }

    /// Counts a tool call and observes its duration.
    pub fn record_tool_call(
        &self,
        tool: impl Into<Arc<str>>,
        outcome: Outcome,
        duration: Duration,
    ) {
        let tool = tool.into();
        self.inner
            .tool_duration
            .get_or_create(&ToolLabel { tool: tool.clone() })
            .observe(duration.as_secs_f64());
        self.inner
            .tool_calls
            .get_or_create(&ToolOutcome {
                tool,
                outcome: outcome.as_str(),
            })
            .inc();
    }

    /// Counts an approval decision (`approve`, `deny`, `edit`, `failed_denied`,
    /// `failed_allowed`).
    pub fn record_approval(&self, tool: impl Into<Arc<str>>, decision: &'static str) {
        self.inner
            .approvals
            .get_or_create(&ApprovalLabels {
                tool: tool.into(),
                decision,
            })
            .inc();
    }

    /// Counts one retry under a key (a model spec, a tool or an agent name); for the
    /// resilience layers.
    pub fn record_retry(&self, key: &str) {
        self.inner
            .retries
            .get_or_create(&KeyLabel { key: key.into() })
            .inc();
    }

    /// Sets the state of the circuit breaker under a key.
    pub fn set_breaker_state(&self, key: &str, state: BreakerState) {
        self.inner
            .breaker_state
            .get_or_create(&KeyLabel { key: key.into() })
            .set(state.value());
    }

    /// Sets how many tasks wait in the queue; for the cluster.
    pub fn set_queue_depth(&self, depth: i64) {
        self.inner.queue_depth.set(depth);
    }

    /// The queue depth last set.
    pub fn queue_depth(&self) -> i64 {
        self.inner.queue_depth.get()
    }

    /// Sets how many instances have a status (`active`, `busy`, `overloaded`, `failed`); for
    /// the cluster.
    pub fn set_instances(&self, status: &str, count: i64) {
        self.inner
            .instances
            .get_or_create(&StatusLabel {
                status: status.into(),
            })
            .set(count);
    }

    /// Sets how many client connections are open; for the server.
    pub fn set_open_connections(&self, count: i64) {
        self.inner.open_connections.set(count);
    }

    /// Counts one open connection until the guard is dropped.
    pub fn connection(&self) -> ConnectionGuard {
        self.inner.open_connections.inc();
        ConnectionGuard {
            gauge: self.inner.open_connections.clone(),
        }
    }

    /// How many client connections are open.
    pub fn open_connections(&self) -> i64 {
        self.inner.open_connections.get()
    }

    /// Observes time spent in the runtime itself in one phase.
    pub fn record_overhead(&self, phase: OverheadPhase, duration: Duration) {
        self.inner
            .overhead
            .get_or_create(&PhaseLabel {
                phase: phase.as_str(),
            })
            .observe(duration.as_secs_f64());
    }

    pub(crate) fn record_alert(&self, alert: &'static str) {
        self.inner.alerts.get_or_create(&AlertLabel { alert }).inc();
    }

    pub(crate) fn record_delivery(&self, sink: &'static str, outcome: &'static str) {
        self.inner
            .alert_deliveries
            .get_or_create(&DeliveryLabels { sink, outcome })
            .inc();
    }

    /// Alert deliveries of a sink with an outcome so far (`sent`, `failed`, `dropped`).
    pub fn alert_deliveries(&self, sink: &'static str, outcome: &'static str) -> u64 {
        self.inner
            .alert_deliveries
            .get(&DeliveryLabels { sink, outcome })
            .map_or(0, |c| c.get())
    }

    pub(crate) fn record_events_lost(&self, n: u64) {
        self.inner.events_lost.inc_by(n);
    }
}

/// Decrements `pocket_open_connections` when dropped.
#[derive(Debug)]
#[must_use = "the connection counts as open only while the guard lives"]
pub struct ConnectionGuard {
    gauge: Gauge,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

/// Reads `/proc/self` at every scrape, so process numbers are never stale.
#[derive(Debug)]
struct ProcessCollector {
    started: Instant,
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), fmt::Error> {
        let uptime = ConstGauge::new(self.started.elapsed().as_secs_f64());
        uptime.encode(encoder.encode_descriptor(
            "uptime",
            "Time since the metrics registry was created.",
            Some(&Unit::Seconds),
            uptime.metric_type(),
        )?)?;
        let Some(p) = process::read() else {
            return Ok(());
        };
        let rss = ConstGauge::new(i64::try_from(p.resident_bytes).unwrap_or(i64::MAX));
        rss.encode(encoder.encode_descriptor(
            "process_resident_memory",
            "Resident memory of the process.",
            Some(&Unit::Bytes),
            rss.metric_type(),
        )?)?;
        let cpu = ConstCounter::new(p.cpu_seconds);
        cpu.encode(encoder.encode_descriptor(
            "process_cpu",
            "CPU time of the process, user and system.",
            Some(&Unit::Seconds),
            cpu.metric_type(),
        )?)?;
        let threads = ConstGauge::new(i64::try_from(p.threads).unwrap_or(i64::MAX));
        threads.encode(encoder.encode_descriptor(
            "process_threads",
            "Threads of the process.",
            None,
            threads.metric_type(),
        )?)?;
        if let Some(fds) = p.open_fds {
            let fds = ConstGauge::new(i64::try_from(fds).unwrap_or(i64::MAX));
            fds.encode(encoder.encode_descriptor(
                "process_open_fds",
                "Open file descriptors of the process.",
                None,
                fds.metric_type(),
            )?)?;
        }
        Ok(())
    }
}
