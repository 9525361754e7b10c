//! The observer: a task that turns an agent's event stream into metrics.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pocket_agent::{Agent, AgentEvent, EVENT_CAPACITY, EventKind};
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

/// The longest the task lets events gather after one wakes it; see [`batch_window`].
const MAX_BATCH_WINDOW: Duration = Duration::from_millis(2);

/// How long to let events gather before counting them, given that the last wake-up counted
/// `counted` events that had arrived over `over` (from the end of the wake-up before).
///
/// While the task waits, nothing waits on the agent's channel, so its sends wake nobody:
/// under steady load the task wakes once per window instead of once per event (four per
/// run), which costs the runs' threads less. The window holds an eighth of the channel at
/// the recent rate, at most [`MAX_BATCH_WINDOW`]; none at a low rate, where wake-ups are
/// few anyway, and none when that would be under the timer's millisecond, as in a sudden
/// burst (so a burst is counted as it comes, as without a window, and not lost).
fn batch_window(counted: usize, over: Duration) -> Duration {
    /// Below this many events a second, no window.
    const MIN_RATE: f64 = 2_000.0;
    let secs = over.as_secs_f64();
    #[allow(clippy::cast_precision_loss, reason = "event counts")]
    let rate = if secs > 0.0 {
        counted as f64 / secs
    } else {
        f64::INFINITY
    };
    if rate < MIN_RATE {
        return Duration::ZERO;
    }
    #[allow(clippy::cast_precision_loss, reason = "a small constant")]
    let window = Duration::from_secs_f64((EVENT_CAPACITY / 8) as f64 / rate).min(MAX_BATCH_WINDOW);
    if window < Duration::from_millis(1) {
        Duration::ZERO
    } else {
        window
    }
}

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
        // The end of the last wake-up, and the window the next one waits out.
        let mut last = Instant::now();
        let mut window = Duration::ZERO;
        loop {
            tokio::select! {
                biased;
                () = stop.cancelled() => {
                    self.drain(&mut events);
                    return;
                }
                Some(done) = flushes.recv() => self.flush(&mut events, done),
                event = events.recv() => {
                    match event {
                        Ok(event) => self.handle(event),
                        Err(RecvError::Lagged(n)) => self.lost(n),
                        Err(RecvError::Closed) => return,
                    }
                    if !window.is_zero() {
                        // Let the rest of a burst gather; a flush or a stop ends the wait.
                        tokio::select! {
                            biased;
                            () = stop.cancelled() => {}
                            Some(done) = flushes.recv() => self.flush(&mut events, done),
                            () = tokio::time::sleep(window) => {}
                        }
                    }
                    let counted = 1 + self.drain(&mut events);
                    let now = Instant::now();
                    window = batch_window(counted, now - last);
                    last = now;
                }
            }
        }
    }

    /// Counts every event waiting, then tells the [`Observer::flush`] caller.
    fn flush(&mut self, events: &mut broadcast::Receiver<AgentEvent>, done: oneshot::Sender<()>) {
        self.drain(events);
        let _ = done.send(());
    }

    /// Counts every event waiting; returns how many there were.
    fn drain(&mut self, events: &mut broadcast::Receiver<AgentEvent>) -> usize {
        let mut n = 0;
        loop {
            match events.try_recv() {
                Ok(event) => {
                    self.handle(event);
                    n += 1;
                }
                Err(TryRecvError::Lagged(lost)) => self.lost(lost),
                Err(TryRecvError::Empty | TryRecvError::Closed) => return n,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_window_at_a_low_rate() {
        // One run's four events a second, or a first event after a long quiet.
        assert_eq!(batch_window(4, Duration::from_secs(1)), Duration::ZERO);
        assert_eq!(batch_window(1, Duration::from_secs(60)), Duration::ZERO);
        assert_eq!(batch_window(1_999, Duration::from_secs(1)), Duration::ZERO);
    }

    #[test]
    fn steady_load_gets_the_longest_window() {
        // 5,000 runs a second: ~40 events in the last 2 ms.
        assert_eq!(batch_window(40, Duration::from_millis(2)), MAX_BATCH_WINDOW);
    }

    #[test]
    fn the_window_holds_an_eighth_of_the_channel_at_the_recent_rate() {
        // 64,000 events a second: 128 of them take 2 ms.
        let w = batch_window(64, Duration::from_millis(1));
        assert_eq!(w, Duration::from_millis(2));
        // 100,000 a second: 1.28 ms.
        let w = batch_window(100, Duration::from_millis(1));
        assert!(
            w > Duration::from_millis(1) && w < MAX_BATCH_WINDOW,
            "{w:?}"
        );
    }

    #[test]
    fn a_burst_gets_no_window() {
        // Hundreds of events in a fraction of a millisecond: waiting could overflow.
        assert_eq!(
            batch_window(600, Duration::from_micros(300)),
            Duration::ZERO
        );
        assert_eq!(batch_window(10, Duration::ZERO), Duration::ZERO);
    }
}
