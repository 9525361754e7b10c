//! The monitor: metrics, alerts, per-agent statistics, history and health behind one handle,
//! with the tasks it owns (the minute sampler, the webhook sender, the event observers).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, SystemTime};

use pocket_agent::{Agent, RunInfo, Usage};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::alerts::{AlertManager, AlertSink, WebhookSink};
use crate::config::{ConfigError, MonitorConfig};
use crate::logging::RecentLogs;
use crate::metrics::{Metrics, Outcome};
use crate::observer::Observer;
use crate::plugin::MonitoringPlugin;
use crate::process::{self, ProcessStats};
use crate::report::{
    AgentStats, Health, HealthReport, ModelSummary, RunSummary, Sample, SystemStatus, ToolStats,
    ToolSummary,
};

/// One day of one-minute samples (the seed's history).
const HISTORY: usize = 1440;
/// Run ids whose success was recorded, so a later `on_error` for the same run (a plugin after
/// this one stopped it) is not counted twice.
const SUCCEEDED_MEMORY: usize = 256;

/// Why a [`Monitor`] could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MonitorError {
    /// A `[monitoring]` value is wrong.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The monitor spawns tasks, so it must be built inside a Tokio runtime.
    #[error("the monitor must be built inside a Tokio runtime")]
    NoRuntime,
    /// The webhook's HTTP client could not be built.
    #[error("cannot build the alert webhook's HTTP client")]
    Webhook(#[source] reqwest::Error),
}

type ProcessSource = Arc<dyn Fn() -> Option<ProcessStats> + Send + Sync>;

/// Metrics, alerts, per-agent statistics, history and health: a cheap-clone handle.
///
/// Feed it from two places, each counting different things, so nothing is counted twice:
/// - [`plugin`](Self::plugin) (add it to every agent, last): runs, their duration and outcome,
///   per-agent statistics, the response-time and error-rate alerts, run and tool log lines;
/// - [`observe`](Self::observe) (once per agent): model calls, tokens, tool calls (refused ones
///   too), approvals and the runtime's own overhead, from the agent's event stream.
///
/// Every task it starts is tracked; [`shutdown`](Self::shutdown) stops and awaits them.
#[derive(Clone)]
pub struct Monitor {
    inner: Arc<Inner>,
}

struct Inner {
    config: MonitorConfig,
    metrics: Metrics,
    alerts: AlertManager,
    state: Mutex<State>,
    recent_logs: Option<RecentLogs>,
    process: ProcessSource,
    last_rss: AtomicU64,
    started: Instant,
    tracker: TaskTracker,
    shutdown: CancellationToken,
    runtime: tokio::runtime::Handle,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl fmt::Debug for Monitor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Monitor")
            .field("config", &self.inner.config)
            .field("tasks", &self.inner.tracker.len())
            .finish_non_exhaustive()
    }
}

/// Builds a [`Monitor`]; see [`Monitor::builder`].
#[must_use]
pub struct MonitorBuilder {
    config: MonitorConfig,
    metrics: Option<Metrics>,
    sinks: Vec<Arc<dyn AlertSink>>,
    recent_logs: Option<RecentLogs>,
    sample_interval: Option<Duration>,
    process: Option<ProcessSource>,
}

impl MonitorBuilder {
    /// Use this metrics registry (to share it with the server). Default: a new one.
    pub fn metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Adds an alert sink (chat, e-mail, paging). Default: the log, plus the webhook when
    /// `alerts.webhook_url` is set.
    pub fn alert_sink(mut self, sink: impl AlertSink) -> Self {
        self.sinks.push(Arc::new(sink));
        self
    }

    /// The ring of recent log entries, for the health report's log summary. Default: none.
    pub fn recent_logs(mut self, logs: RecentLogs) -> Self {
        self.recent_logs = Some(logs);
        self
    }

    /// How often the sampler takes a history sample and checks memory; `None` starts no
    /// sampler (call [`Monitor::sample_now`] yourself). Default: one minute.
    pub fn sample_interval(mut self, every: Option<Duration>) -> Self {
        self.sample_interval = every;
        self
    }

    /// Where process statistics come from. Default: `/proc/self`.
    pub fn process_stats(
        mut self,
        source: impl Fn() -> Option<ProcessStats> + Send + Sync + 'static,
    ) -> Self {
        self.process = Some(Arc::new(source));
        self
    }

    /// Builds the monitor and starts its tasks (the sampler, the webhook sender).
    ///
    /// # Errors
    /// A bad `[monitoring]` value, no Tokio runtime, or a webhook client that cannot be built.
    pub fn build(self) -> Result<Monitor, MonitorError> {
        let config = self.config;
        config.validate()?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| MonitorError::NoRuntime)?;
        let metrics = self.metrics.unwrap_or_default();
        let tracker = TaskTracker::new();
        let shutdown = CancellationToken::new();
        let mut sinks = self.sinks;
        if let Some(url) = config.alerts.resolve_webhook_url()? {
            let key = if config.alerts.webhook_url_env.is_some() {
                "alerts.webhook_url_env"
            } else {
                "alerts.webhook_url"
            };
            crate::config::check_url(key, &url)?;
            let options = crate::alerts::webhook_options(&config.alerts, url);
            let sink = WebhookSink::spawn(
                options,
                metrics.clone(),
                &tracker,
                &runtime,
                shutdown.child_token(),
            )
            .map_err(MonitorError::Webhook)?;
            sinks.push(Arc::new(sink));
        }
        let alerts = AlertManager::new(config.alerts.clone(), metrics.clone(), sinks);
        let window = config.alerts.error_window;
        let inner = Arc::new(Inner {
            config,
            metrics,
            alerts,
            state: Mutex::new(State::new(window)),
            recent_logs: self.recent_logs,
            process: self.process.unwrap_or_else(|| Arc::new(process::read)),
            last_rss: AtomicU64::new(0),
            started: Instant::now(),
            tracker,
            shutdown,
            runtime,
        });
        if let Some(every) = self.sample_interval {
            let weak = Arc::downgrade(&inner);
            let stop = inner.shutdown.child_token();
            inner
                .tracker
                .spawn_on(sampler(weak, every, stop), &inner.runtime);
        }
        Ok(Monitor { inner })
    }
}

async fn sampler(monitor: Weak<Inner>, every: Duration, stop: CancellationToken) {
    let mut tick = tokio::time::interval(every.max(Duration::from_millis(1)));
    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            biased;
            () = stop.cancelled() => return,
            _ = tick.tick() => {
                let Some(inner) = monitor.upgrade() else { return };
                Monitor { inner }.sample_now();
            }
        }
    }
}

impl Monitor {
    /// Starts building a monitor for this `[monitoring]` configuration.
    pub fn builder(config: MonitorConfig) -> MonitorBuilder {
        MonitorBuilder {
            config,
            metrics: None,
            sinks: Vec::new(),
            recent_logs: None,
            sample_interval: Some(Duration::from_secs(60)),
            process: None,
        }
    }

    /// A monitor with the defaults of [`MonitorBuilder`].
    ///
    /// # Errors
    /// As [`MonitorBuilder::build`].
    pub fn new(config: MonitorConfig) -> Result<Self, MonitorError> {
        Self::builder(config).build()
    }

    /// The metrics registry (for `/metrics`, and for other layers to record into).
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// The alert manager (recent alerts, alert events, custom alerts).
    pub fn alerts(&self) -> &AlertManager {
        &self.inner.alerts
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &MonitorConfig {
        &self.inner.config
    }

    /// The ring of recent log entries, if it was given one.
    pub fn recent_logs(&self) -> Option<&RecentLogs> {
        self.inner.recent_logs.as_ref()
    }

    /// The plugin to add to every agent, as its last plugin (so that its `after_run` sees the
    /// final outcome).
    pub fn plugin(&self) -> MonitoringPlugin {
        MonitoringPlugin::new(self.clone())
    }

    /// Starts consuming the agent's event stream (model calls, tokens, tool calls, approvals,
    /// overhead). The task ends when every clone of the agent is dropped, when the returned
    /// handle is stopped, or at [`shutdown`](Self::shutdown); dropping the handle leaves it
    /// running.
    pub fn observe(&self, agent: &Agent) -> Observer {
        let stop = self.inner.shutdown.child_token();
        Observer::spawn(
            self.clone(),
            agent,
            stop,
            &self.inner.tracker,
            &self.inner.runtime,
        )
    }

    /// Stops every task of the monitor (observers drain what they have first) and waits for
    /// them.
    pub async fn shutdown(&self) {
        self.inner.shutdown.cancel();
        self.inner.tracker.close();
        self.inner.tracker.wait().await;
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Resident memory at the last sample, if known (for log lines; free to read).
    pub fn last_memory_bytes(&self) -> Option<u64> {
        match self.inner.last_rss.load(Ordering::Relaxed) {
            0 => None,
            n => Some(n),
        }
    }

    // --- fed by the plugin ---------------------------------------------------------------

    pub(crate) fn run_started(&self, run: &RunInfo) {
        {
            let mut st = self.lock();
            st.in_flight.insert(run.run_id.clone(), ());
            st.agent(&run.agent).running += 1;
        }
        self.inner.metrics.add_active_runs(run.agent.clone(), 1);
    }

    /// Records a run's end; returns false when it was already recorded.
    pub(crate) fn run_ended(
        &self,
        run: &RunInfo,
        outcome: Outcome,
        error: Option<String>,
        duration: Duration,
    ) -> bool {
        let now = Instant::now();
        let failed = outcome.is_failure();
        let (was_running, errors_in_window) = {
            let mut st = self.lock();
            let was_running = st.in_flight.remove(&run.run_id).is_some();
            if !was_running && st.succeeded.contains(&run.run_id) {
                return false;
            }
            if outcome == Outcome::Success {
                if st.succeeded.len() >= SUCCEEDED_MEMORY {
                    st.succeeded.pop_front();
                }
                st.succeeded.push_back(run.run_id.clone());
            }
            let window = st.window;
            let agent = st.agent(&run.agent);
            if was_running {
                agent.running = agent.running.saturating_sub(1);
            }
            agent.executions += 1;
            agent.total_time += duration;
            match outcome {
                Outcome::Cancelled => agent.cancelled += 1,
                Outcome::Failed(_) => {
                    agent.errors += 1;
                    agent.last_error = error;
                }
                Outcome::Success => {}
            }
            if outcome != Outcome::Cancelled {
                push_bounded(&mut agent.recent, (now, failed), window);
                push_bounded(&mut st.recent, (now, failed), window);
            }
            st.totals.runs += 1;
            st.totals.failures += u64::from(failed);
            st.totals.run_time += duration;
            // Only a failure can raise the error rate: successes skip the count.
            let errors = if failed {
                st.recent.iter().filter(|(_, e)| *e).count()
            } else {
                0
            };
            (was_running, errors)
        };
        let metrics = &self.inner.metrics;
        if was_running {
            metrics.add_active_runs(run.agent.clone(), -1);
        }
        metrics.record_run(run.agent.clone(), outcome, duration);
        if outcome != Outcome::Cancelled {
            self.inner.alerts.check_response_time(&run.agent, duration);
        }
        if failed {
            self.inner.alerts.check_error_rate(errors_in_window);
        }
        true
    }

    pub(crate) fn tool_ran(&self, agent: &Arc<str>, failed: bool, duration: Duration) {
        let mut st = self.lock();
        let a = st.agent(agent);
        a.tool_calls += 1;
        a.tool_failures += u64::from(failed);
        a.tool_time += duration;
    }

    // --- fed by the observers ------------------------------------------------------------

    pub(crate) fn model_call(
        &self,
        model: Arc<str>,
        outcome: Outcome,
        duration: Duration,
        usage: Option<Usage>,
    ) {
        {
            let mut st = self.lock();
            st.totals.model_calls += 1;
            st.totals.model_failures += u64::from(outcome.is_failure());
            if let Some(u) = usage {
                st.totals.input_tokens += u.input_tokens;
                st.totals.output_tokens += u.output_tokens;
            }
        }
        self.inner
            .metrics
            .record_model_call(model, outcome, duration, usage);
    }

    pub(crate) fn tool_call(&self, tool: Arc<str>, outcome: Outcome, duration: Duration) {
        let failed = outcome.is_failure();
        {
            let mut st = self.lock();
            st.totals.tool_calls += 1;
            st.totals.tool_failures += u64::from(failed);
            st.totals.tool_time += duration;
            let t = st.tools.entry(tool.clone()).or_default();
            t.calls += 1;
            t.failures += u64::from(failed);
            t.time += duration;
        }
        self.inner.metrics.record_tool_call(tool, outcome, duration);
    }

    // --- reports -------------------------------------------------------------------------

    /// Per-agent statistics, by agent name.
    pub fn agent_stats(&self) -> BTreeMap<String, AgentStats> {
        let health = &self.inner.config.health;
        let horizon = self.horizon();
        let st = self.lock();
        st.agents
            .iter()
            .map(|(name, a)| {
                let rate = error_rate(&a.recent, horizon);
                let health = if rate > health.failed_error_rate {
                    Health::Failed
                } else if rate > health.degraded_error_rate {
                    Health::Degraded
                } else {
                    Health::Healthy
                };
                let stats = AgentStats {
                    executions: a.executions,
                    errors: a.errors,
                    cancelled: a.cancelled,
                    running: a.running,
                    total_time_ms: ms(a.total_time),
                    mean_time_ms: mean_ms(a.total_time, a.executions),
                    recent_error_rate: rate,
                    health,
                    tool_calls: a.tool_calls,
                    tool_failures: a.tool_failures,
                    mean_tool_time_ms: mean_ms(a.tool_time, a.tool_calls),
                    last_error: a.last_error.clone(),
                };
                (name.to_string(), stats)
            })
            .collect()
    }

    /// Per-tool statistics, by tool name (`unknown` gathers calls of tools an agent does not
    /// have).
    pub fn tool_stats(&self) -> BTreeMap<String, ToolStats> {
        self.lock()
            .tools
            .iter()
            .map(|(name, t)| {
                let stats = ToolStats {
                    calls: t.calls,
                    failures: t.failures,
                    mean_time_ms: mean_ms(t.time, t.calls),
                };
                (name.to_string(), stats)
            })
            .collect()
    }

    /// The system status: failed or degraded when the error rate of recent runs or the
    /// resident memory is over the `[monitoring.health]` thresholds.
    pub fn status(&self) -> SystemStatus {
        let memory = (self.inner.process)().map(|p| p.resident_bytes);
        self.assess(memory).0
    }

    fn horizon(&self) -> Option<Instant> {
        Instant::now().checked_sub(Duration::from_secs(self.inner.config.health.window_secs))
    }

    /// Status, reasons and the recent error rate.
    fn assess(&self, memory: Option<u64>) -> (Health, Vec<String>, f64) {
        let h = &self.inner.config.health;
        let rate = error_rate(&self.lock().recent, self.horizon());
        let mut status = Health::Healthy;
        let mut reasons = Vec::new();
        let mut worse = |level: Health, reason: String| {
            status = status.max(level);
            reasons.push(reason);
        };
        if rate > h.failed_error_rate {
            worse(
                Health::Failed,
                format!(
                    "error rate {:.0}% is over {:.0}%",
                    rate * 100.0,
                    h.failed_error_rate * 100.0
                ),
            );
        } else if rate > h.degraded_error_rate {
            worse(
                Health::Degraded,
                format!(
                    "error rate {:.0}% is over {:.0}%",
                    rate * 100.0,
                    h.degraded_error_rate * 100.0
                ),
            );
        }
        if let Some(bytes) = memory {
            let mb = bytes / (1024 * 1024);
            if mb > h.failed_memory_mb {
                worse(
                    Health::Failed,
                    format!("memory {mb} MiB is over {} MiB", h.failed_memory_mb),
                );
            } else if mb > h.degraded_memory_mb {
                worse(
                    Health::Degraded,
                    format!("memory {mb} MiB is over {} MiB", h.degraded_memory_mb),
                );
            }
        }
        (status, reasons, rate)
    }

    /// The seed's health report: status and why, runs, tools, models, agents, alerts, logs.
    pub fn health(&self) -> HealthReport {
        let process = (self.inner.process)();
        let memory = process.map(|p| p.resident_bytes);
        let (status, reasons, error_rate) = self.assess(memory);
        let agents = self.agent_stats();
        let tool_stats = self.tool_stats();
        let (runs, tools, models, cpu_percent) = {
            let st = self.lock();
            let t = st.totals;
            let running = st.agents.values().map(|a| a.running).sum();
            let runs = RunSummary {
                agents: st.agents.len(),
                total: t.runs,
                failed: t.failures,
                running,
                mean_time_ms: mean_ms(t.run_time, t.runs),
            };
            let tools = ToolSummary {
                tools: st.tools.len(),
                executions: t.tool_calls,
                failures: t.tool_failures,
                mean_time_ms: mean_ms(t.tool_time, t.tool_calls),
            };
            let models = ModelSummary {
                calls: t.model_calls,
                failures: t.model_failures,
                input_tokens: t.input_tokens,
                output_tokens: t.output_tokens,
            };
            (
                runs,
                tools,
                models,
                st.history.back().and_then(|s| s.cpu_percent),
            )
        };
        let mut recent_alerts = self.inner.alerts.recent();
        let skip = recent_alerts.len().saturating_sub(10);
        recent_alerts.drain(..skip);
        HealthReport {
            status,
            reasons,
            at: SystemTime::now(),
            uptime_secs: self.inner.started.elapsed().as_secs_f64(),
            error_rate,
            memory_bytes: memory,
            cpu_percent,
            runs,
            tools,
            models,
            agents,
            tool_stats,
            alerts: self.inner.alerts.statuses(),
            recent_alerts,
            logs: self.inner.recent_logs.as_ref().map(|l| l.summary(100)),
        }
    }

    /// The history: up to a day of samples, oldest first.
    pub fn history(&self) -> Vec<Sample> {
        self.lock().history.iter().cloned().collect()
    }

    /// Takes a history sample now (the sampler does this every interval): reads process
    /// statistics, checks the memory alert, and appends the sample.
    pub fn sample_now(&self) -> Sample {
        let now = Instant::now();
        let process = (self.inner.process)();
        let memory = process.map(|p| p.resident_bytes);
        if let Some(bytes) = memory {
            self.inner.last_rss.store(bytes, Ordering::Relaxed);
        }
        let (status, _, _) = self.assess(memory);
        let metrics = &self.inner.metrics;
        let sample = {
            let mut st = self.lock();
            let cpu_percent = match (process, st.last_cpu) {
                (Some(p), Some((then, cpu))) => {
                    let wall = now.saturating_duration_since(then).as_secs_f64();
                    (wall > 0.0).then(|| (p.cpu_seconds - cpu).max(0.0) / wall * 100.0)
                }
                _ => None,
            };
            if let Some(p) = process {
                st.last_cpu = Some((now, p.cpu_seconds));
            }
            let (t, last) = (st.totals, st.last_sample);
            st.last_sample = t;
            let runs = t.runs - last.runs;
            let sample = Sample {
                at: SystemTime::now(),
                runs,
                failures: t.failures - last.failures,
                mean_run_ms: mean_ms(t.run_time.saturating_sub(last.run_time), runs),
                running: st.agents.values().map(|a| a.running).sum(),
                tool_calls: t.tool_calls - last.tool_calls,
                tool_failures: t.tool_failures - last.tool_failures,
                model_calls: t.model_calls - last.model_calls,
                tokens: (t.input_tokens + t.output_tokens)
                    - (last.input_tokens + last.output_tokens),
                memory_bytes: memory,
                cpu_percent,
                open_connections: metrics.open_connections(),
                queue_depth: metrics.queue_depth(),
                status,
            };
            push_bounded(&mut st.history, sample.clone(), HISTORY);
            sample
        };
        if let Some(bytes) = memory {
            self.inner.alerts.check_memory(bytes);
        }
        tracing::debug!(
            component = "system",
            runs = sample.runs,
            failures = sample.failures,
            memory_bytes = memory,
            cpu_percent = sample.cpu_percent,
            status = status.as_str(),
            "metrics sampled"
        );
        sample
    }
}

fn push_bounded<T>(q: &mut VecDeque<T>, item: T, cap: usize) {
    while q.len() >= cap.max(1) {
        q.pop_front();
    }
    q.push_back(item);
}

/// Errors over outcomes that ended after `horizon` (all of them when there is none).
fn error_rate(recent: &VecDeque<(Instant, bool)>, horizon: Option<Instant>) -> f64 {
    let (mut n, mut errors) = (0u64, 0u64);
    for (at, failed) in recent {
        if horizon.is_none_or(|h| *at >= h) {
            n += 1;
            errors += u64::from(*failed);
        }
    }
    if n == 0 {
        0.0
    } else {
        errors as f64 / n as f64
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn mean_ms(total: Duration, n: u64) -> f64 {
    if n == 0 { 0.0 } else { ms(total) / n as f64 }
}

struct State {
    window: usize,
    agents: HashMap<Arc<str>, AgentState>,
    tools: HashMap<Arc<str>, ToolState>,
    in_flight: HashMap<Arc<str>, ()>,
    succeeded: VecDeque<Arc<str>>,
    recent: VecDeque<(Instant, bool)>,
    totals: Totals,
    last_sample: Totals,
    last_cpu: Option<(Instant, f64)>,
    history: VecDeque<Sample>,
}

impl State {
    fn new(window: usize) -> Self {
        Self {
            window,
            agents: HashMap::new(),
            tools: HashMap::new(),
            in_flight: HashMap::new(),
            succeeded: VecDeque::new(),
            recent: VecDeque::new(),
            totals: Totals::default(),
            last_sample: Totals::default(),
            last_cpu: None,
            history: VecDeque::new(),
        }
    }

    fn agent(&mut self, name: &Arc<str>) -> &mut AgentState {
        self.agents.entry(name.clone()).or_default()
    }
}

#[derive(Default)]
struct AgentState {
    executions: u64,
    errors: u64,
    cancelled: u64,
    running: u64,
    total_time: Duration,
    last_error: Option<String>,
    recent: VecDeque<(Instant, bool)>,
    tool_calls: u64,
    tool_failures: u64,
    tool_time: Duration,
}

#[derive(Default)]
struct ToolState {
    calls: u64,
    failures: u64,
    time: Duration,
}

#[derive(Debug, Clone, Copy, Default)]
struct Totals {
    runs: u64,
    failures: u64,
    run_time: Duration,
    tool_calls: u64,
    tool_failures: u64,
    tool_time: Duration,
    model_calls: u64,
    model_failures: u64,
    input_tokens: u64,
    output_tokens: u64,
}
