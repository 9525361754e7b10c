//! The observer: a task that turns an agent's event stream into metrics.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use pocket_agent::{Agent, AgentEvent, EventKind};
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::metrics::{Outcome, OverheadPhase};
use crate::monitor::Monitor;

/// Label of tool calls whose tool the agent does not have (the name comes from the model, so
/// it is not used as a label value).
const UNKNOWN_TOOL: &str = "unknown";

/// Runs tracked at once for the overhead measure; past it the bookkeeping starts over.
const MAX_TRACKED_RUNS: usize = 10_000;

/// The handle of one agent's observer task (from [`Monitor::observe`]).
///
/// Dropping it leaves the task running until the agent is dropped or the monitor shuts down.
#[derive(Debug)]
pub struct Observer {
    stop: CancellationToken,
    flush: mpsc::Sender<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Observer {
    pub(crate) fn spawn(
        monitor: Monitor,
        agent: &Agent,
        stop: CancellationToken,
        tracker: &TaskTracker,
        runtime: &tokio::runtime::Handle,
    ) -> Self {
        let events = agent.subscribe();
        let known = agent
            .tools()
            .iter()
            .map(|s| Arc::from(s.name.as_str()))
            .collect();
        let (flush, requests) = mpsc::channel(4);
        let task = Task {
            monitor,
            known,
            unknown: Arc::from(UNKNOWN_TOOL),
            runs: HashMap::new(),
        };
        let task = tracker.spawn_on(task.run(events, requests, stop.clone()), runtime);
        Self { stop, flush, task }
    }

    /// Waits until every event sent before this call has been counted.
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.flush.send(done).await.is_ok() {
            let _ = wait.await;
        }
    }

    /// Counts what is pending, then stops the task and waits for it.
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }

    /// Whether the task has ended (the agent was dropped, or the monitor shut down).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

struct Task {
    monitor: Monitor,
    known: HashSet<Arc<str>>,
    unknown: Arc<str>,
    runs: HashMap<Arc<str>, RunTimes>,
}

/// Model and tool time of one run, to find the time spent in the runtime itself.
#[derive(Default)]
struct RunTimes {
    model: Duration,
    tools: Duration,
    /// The longest tool call of the current step: calls in a step run concurrently, so the
    /// step's tool time is its longest call.
    step_tools: Duration,
}

impl RunTimes {
    fn end_step(&mut self) {
        self.tools += std::mem::take(&mut self.step_tools);
    }
}

impl Task {
    async fn run(
        mut self,
        mut events: broadcast::Receiver<AgentEvent>,
        mut flushes: mpsc::Receiver<oneshot::Sender<()>>,
        stop: CancellationToken,
    ) {
        loop {
            tokio::select! {
                biased;
                () = stop.cancelled() => {
                    self.drain(&mut events);
                    return;
                }
                Some(done) = flushes.recv() => {
                    self.drain(&mut events);
                    let _ = done.send(());
                }
                event = events.recv() => match event {
                    Ok(event) => self.handle(event),
                    Err(RecvError::Lagged(n)) => self.lost(n),
                    Err(RecvError::Closed) => return,
                },
            }
        }
    }

    fn drain(&mut self, events: &mut broadcast::Receiver<AgentEvent>) {
        loop {
            match events.try_recv() {
                Ok(event) => self.handle(event),
                Err(TryRecvError::Lagged(n)) => self.lost(n),
                Err(TryRecvError::Empty | TryRecvError::Closed) => return,
            }
        }
    }

    fn lost(&mut self, n: u64) {
        self.monitor.metrics().record_events_lost(n);
        // Partial runs would give wrong overhead numbers.
        self.runs.clear();
        tracing::warn!(
            component = "monitor",
            lost = n,
            "the monitor fell behind the agent's events; some were not counted"
        );
    }

    fn handle(&mut self, event: AgentEvent) {
        let AgentEvent {
            run_id,
            agent,
            kind,
            ..
        } = event;
        match kind {
            EventKind::RunStarted { .. } => {
                if self.runs.len() >= MAX_TRACKED_RUNS {
                    self.runs.clear();
                }
                self.runs.insert(run_id, RunTimes::default());
            }
            EventKind::ModelCallStarted { .. } => {
                if let Some(r) = self.runs.get_mut(&run_id) {
                    r.end_step();
                }
            }
            EventKind::ModelCallFinished {
                model,
                duration,
                usage,
                ..
            } => {
                if let Some(r) = self.runs.get_mut(&run_id) {
                    r.model += duration;
                }
                self.monitor
                    .model_call(model, Outcome::Success, duration, Some(usage));
            }
            EventKind::ModelCallFailed {
                model,
                duration,
                error,
                classification,
                ..
            } => {
                if let Some(r) = self.runs.get_mut(&run_id) {
                    r.model += duration;
                }
                tracing::warn!(
                    component = "model",
                    agent = %agent,
                    run_id = %run_id,
                    model = %model,
                    duration_ms = duration.as_secs_f64() * 1e3,
                    error_kind = classification.kind.as_str(),
                    retryable = classification.retryable,
                    error = %error,
                    "model call failed"
                );
                let outcome = Outcome::Failed(classification.kind);
                self.monitor.model_call(model, outcome, duration, None);
            }
            EventKind::ToolCallFinished {
                tool,
                duration,
                classification,
                ..
            } => {
                if let Some(r) = self.runs.get_mut(&run_id) {
                    r.step_tools = r.step_tools.max(duration);
                }
                let tool = if self.known.contains(&tool) {
                    tool
                } else {
                    self.unknown.clone()
                };
                let outcome = classification.map_or(Outcome::Success, |c| Outcome::Failed(c.kind));
                self.monitor.tool_call(tool, outcome, duration);
            }
            EventKind::ApprovalDecided { tool, decision, .. } => {
                self.monitor.metrics().record_approval(tool, decision);
            }
            EventKind::ApprovalFailed { tool, denied, .. } => {
                let decision = if denied {
                    "failed_denied"
                } else {
                    "failed_allowed"
                };
                self.monitor.metrics().record_approval(tool, decision);
            }
            EventKind::RunFinished { duration, .. } | EventKind::RunFailed { duration, .. } => {
                if let Some(mut r) = self.runs.remove(&run_id) {
                    r.end_step();
                    let overhead = duration.saturating_sub(r.model + r.tools);
                    self.monitor
                        .metrics()
                        .record_overhead(OverheadPhase::AgentLoop, overhead);
                }
            }
            _ => {}
        }
    }
}
