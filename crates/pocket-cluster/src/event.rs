//! What a running cluster reports as it works: tasks claimed and finished, instances up and
//! down, scaling decisions, and the steps of the runs someone follows. Sent on a bounded
//! broadcast channel ([`Cluster::subscribe`](crate::Cluster::subscribe)); a subscriber that
//! falls more than 1,024 events behind loses the oldest (its receiver says how many).
//!
//! A run's own steps ([`ClusterEvent::Agent`]: model turns, text deltas, tool calls,
//! approvals) are sent only for tasks someone watches
//! ([`Cluster::watch_task`](crate::Cluster::watch_task)): an unwatched run builds none.
//!
//! One who waits for one task follows it instead
//! ([`Cluster::follow_task`](crate::Cluster::follow_task),
//! [`Cluster::submit_followed`](crate::Cluster::submit_followed)): the task's end comes on a
//! oneshot and (if wanted) its events and steps on a bounded channel of its own, so a
//! task's events wake only its followers, however many other tasks are followed.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use pocket_agent::AgentEvent;
use serde::Serialize;

use crate::autoscale::ScaleDecision;
use crate::pool::InstanceId;
use crate::store::TaskId;

/// One thing that happened in a cluster.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ClusterEvent {
    /// A task was claimed from the store.
    TaskClaimed {
        /// The task.
        id: TaskId,
        /// Its agent.
        agent: Arc<str>,
        /// Which attempt this is (1 for the first).
        attempt: u32,
        /// Whether it resumes from a checkpoint.
        resumed: bool,
    },
    /// A claimed task started on an instance.
    TaskStarted {
        /// The task.
        id: TaskId,
        /// The instance.
        instance: InstanceId,
    },
    /// A task succeeded; its result is in the store.
    TaskSucceeded {
        /// The task.
        id: TaskId,
        /// The instance.
        instance: InstanceId,
        /// Run time of this attempt, in seconds.
        duration_secs: f64,
    },
    /// An attempt failed: the task is queued again for later, or dead-lettered.
    TaskFailed {
        /// The task.
        id: TaskId,
        /// The instance, if it started on one.
        instance: Option<InstanceId>,
        /// The error.
        error: String,
        /// When it is tried again, in seconds from now; `None` when dead-lettered.
        retry_in_secs: Option<f64>,
    },
    /// A task was cancelled: a queued one on this worker's [`Cluster::cancel`](crate::Cluster::cancel),
    /// a running one when its run here stopped.
    TaskCancelled {
        /// The task.
        id: TaskId,
    },
    /// This worker lost a task's lease (it stalled past the lease and another worker took
    /// the task); the run was stopped without finishing the task.
    LeaseLost {
        /// The task.
        id: TaskId,
    },
    /// A run was stopped by shutdown after the grace period; its lease is released and it
    /// resumes from its last checkpoint elsewhere.
    TaskInterrupted {
        /// The task.
        id: TaskId,
    },
    /// An instance was registered.
    InstanceUp {
        /// The instance.
        id: InstanceId,
        /// Its agent.
        agent: Arc<str>,
        /// `start`, `scale_up` or `rebuild`.
        reason: &'static str,
    },
    /// An instance was removed: failed (its runs taken back) or scaled down.
    InstanceDown {
        /// The instance.
        id: InstanceId,
        /// Its agent.
        agent: Arc<str>,
        /// Why.
        reason: String,
    },
    /// Building an instance from the agent's configuration failed.
    InstanceBuildFailed {
        /// The agent.
        agent: Arc<str>,
        /// The factory's error.
        error: String,
    },
    /// The autoscaler acted.
    Scaled {
        /// The agent.
        agent: Arc<str>,
        /// Up or down.
        decision: ScaleDecision,
        /// Instances before.
        from: u32,
        /// Instances wanted.
        to: u32,
        /// Why.
        reason: String,
    },
    /// Shutdown began: no more claims; in-flight runs get the grace period.
    ShuttingDown {
        /// Runs in flight.
        in_flight: usize,
    },
    /// The cluster stopped.
    Stopped {
        /// Leases released to the store.
        released: u64,
    },
    /// A step of a watched task's run on this worker: the agent's own event (its `run_id`
    /// is the task's id).
    Agent {
        /// The task.
        id: TaskId,
        /// What the agent reported.
        event: AgentStep,
    },
    /// The forwarding of a watched task's steps fell behind its agent, which dropped this
    /// many of them (the run itself is not affected).
    AgentStepsSkipped {
        /// The task.
        id: TaskId,
        /// Steps lost.
        skipped: u64,
    },
}

/// An agent's event inside a [`ClusterEvent`]: shared, so every subscriber gets the same
/// one without a copy. Two are equal when they are the same event.
#[derive(Debug, Clone, Serialize)]
#[serde(transparent)]
pub struct AgentStep(pub Arc<AgentEvent>);

impl PartialEq for AgentStep {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl std::ops::Deref for AgentStep {
    type Target = AgentEvent;

    fn deref(&self) -> &AgentEvent {
        &self.0
    }
}

impl ClusterEvent {
    /// The task the event is about, if any.
    pub fn task(&self) -> Option<&TaskId> {
        match self {
            Self::TaskClaimed { id, .. }
            | Self::TaskStarted { id, .. }
            | Self::TaskSucceeded { id, .. }
            | Self::TaskFailed { id, .. }
            | Self::TaskCancelled { id }
            | Self::LeaseLost { id }
            | Self::TaskInterrupted { id }
            | Self::Agent { id, .. }
            | Self::AgentStepsSkipped { id, .. } => Some(id),
            _ => None,
        }
    }

    /// Whether the event ends its task for good: succeeded, cancelled or dead-lettered.
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            Self::TaskSucceeded { .. }
                | Self::TaskCancelled { .. }
                | Self::TaskFailed {
                    retry_in_secs: None,
                    ..
                }
        )
    }
}

/// What a [`TaskFollower`](crate::TaskFollower) receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Following {
    /// Only the task's end (a oneshot; nothing else is sent to it).
    End,
    /// The task's events (claimed, started, failed attempts, ...) and its end.
    Events,
    /// The task's events, the steps of its runs on this worker ([`ClusterEvent::Agent`]),
    /// and its end.
    Steps,
}

/// One thing a [`TaskFollower`](crate::TaskFollower) receives.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Followed {
    /// An event of the task (or a step of its run).
    Event(ClusterEvent),
    /// This follower fell behind: its channel was full and this many of the task's events
    /// were dropped for it.
    Skipped(u64),
    /// The event that ended the task ([`ClusterEvent::is_final`]); nothing follows it.
    End(ClusterEvent),
}

/// Capacity of one follower's event channel.
pub(crate) const FOLLOW_CAPACITY: usize = 1024;
/// Tasks whose early steps are kept for a follower that has not registered yet.
const EARLY_TASKS: usize = 256;
/// How long early steps are kept for a follower that may still come.
const EARLY_TTL: std::time::Duration = std::time::Duration::from_secs(10);

/// One registered follower of a task.
struct Follower {
    key: u64,
    events: Option<tokio::sync::mpsc::Sender<ClusterEvent>>,
    steps: bool,
    end: Option<tokio::sync::oneshot::Sender<ClusterEvent>>,
    lagged: Arc<std::sync::atomic::AtomicU64>,
}

impl Follower {
    fn send(&self, event: &ClusterEvent) {
        if let Some(tx) = &self.events
            && let Err(tokio::sync::mpsc::error::TrySendError::Full(_)) = tx.try_send(event.clone())
        {
            self.lagged
                .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        }
    }
}

/// Steps of a run that started while a follower was being registered (its task id not
/// known yet), kept for it.
struct Early {
    at: std::time::Instant,
    events: Vec<ClusterEvent>,
}

#[derive(Default)]
struct Registry {
    by_task: HashMap<TaskId, Vec<Follower>>,
    /// Submits whose followers want steps and are not registered yet.
    pending_steps: usize,
    early: HashMap<TaskId, Early>,
}

/// The followers of each task: who gets its events, steps and end. Only a task's own
/// followers are woken by its events.
#[derive(Default)]
pub(crate) struct Followers {
    registry: std::sync::Mutex<Registry>,
    /// Followers registered plus pending submits: 0 skips the lock.
    active: std::sync::atomic::AtomicUsize,
    next_key: std::sync::atomic::AtomicU64,
}

/// The receiving half of a registration.
pub(crate) struct Registration {
    pub(crate) key: u64,
    pub(crate) events: Option<tokio::sync::mpsc::Receiver<ClusterEvent>>,
    pub(crate) end: tokio::sync::oneshot::Receiver<ClusterEvent>,
    pub(crate) lagged: Arc<std::sync::atomic::AtomicU64>,
}

impl Followers {
    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.registry
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Nobody follows a task and no follower is being registered.
    pub(crate) fn is_idle(&self) -> bool {
        self.active.load(Ordering::Acquire) == 0
    }

    /// Registers a follower of `id`; with [`Following::Steps`] it first gets the steps kept
    /// for the task while its id was not known.
    pub(crate) fn register(&self, id: &TaskId, what: Following) -> Registration {
        let key = self.next_key.fetch_add(1, Ordering::Relaxed);
        let (end_tx, end) = tokio::sync::oneshot::channel();
        let lagged = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (tx, rx) = match what {
            Following::End => (None, None),
            Following::Events | Following::Steps => {
                let (tx, rx) = tokio::sync::mpsc::channel(FOLLOW_CAPACITY);
                (Some(tx), Some(rx))
            }
        };
        let follower = Follower {
            key,
            events: tx,
            steps: what == Following::Steps,
            end: Some(end_tx),
            lagged: Arc::clone(&lagged),
        };
        let mut registry = self.lock();
        if follower.steps
            && let Some(early) = registry.early.remove(id)
        {
            for event in &early.events {
                follower.send(event);
            }
        }
        registry
            .by_task
            .entry(id.clone())
            .or_default()
            .push(follower);
        self.active.fetch_add(1, Ordering::AcqRel);
        Registration {
            key,
            events: rx,
            end,
            lagged,
        }
    }

    /// Removes a follower; `true` if it wanted steps.
    pub(crate) fn unregister(&self, id: &TaskId, key: u64) -> bool {
        let mut registry = self.lock();
        let Some(list) = registry.by_task.get_mut(id) else {
            return false;
        };
        let Some(at) = list.iter().position(|f| f.key == key) else {
            return false;
        };
        let follower = list.swap_remove(at);
        if list.is_empty() {
            registry.by_task.remove(id);
        }
        self.active.fetch_sub(1, Ordering::AcqRel);
        follower.steps
    }

    /// A submit whose follower wants steps begins: runs keep their steps until it
    /// registers (or [`end_pending`](Self::end_pending)).
    pub(crate) fn begin_pending(&self) {
        self.lock().pending_steps += 1;
        self.active.fetch_add(1, Ordering::AcqRel);
    }

    /// The submit registered its follower (or failed).
    pub(crate) fn end_pending(&self) {
        let mut registry = self.lock();
        registry.pending_steps = registry.pending_steps.saturating_sub(1);
        if registry.pending_steps == 0 {
            registry.early.clear();
        }
        self.active.fetch_sub(1, Ordering::AcqRel);
    }

    /// Whether someone wants the steps of `id`'s runs (or may soon).
    pub(crate) fn wants_steps(&self, id: &TaskId) -> bool {
        if self.is_idle() {
            return false;
        }
        let registry = self.lock();
        registry.pending_steps > 0
            || registry
                .by_task
                .get(id)
                .is_some_and(|list| list.iter().any(|f| f.steps))
    }

    /// Delivers an event of task `id` to its followers (a final one ends them).
    pub(crate) fn deliver(&self, id: &TaskId, event: &ClusterEvent) {
        if self.is_idle() {
            return;
        }
        let mut registry = self.lock();
        let Some(list) = registry.by_task.get_mut(id) else {
            return;
        };
        let last = event.is_final();
        for follower in list.iter_mut() {
            if last {
                if let Some(end) = follower.end.take() {
                    let _ = end.send(event.clone());
                }
            } else {
                follower.send(event);
            }
        }
    }

    /// Delivers a step of `id`'s run to its followers that want steps, or keeps it for a
    /// follower being registered. `false` when it was dropped: nobody had it.
    pub(crate) fn deliver_step(&self, id: &TaskId, event: &ClusterEvent) -> bool {
        if self.is_idle() {
            return false;
        }
        let mut registry = self.lock();
        let mut delivered = false;
        if let Some(list) = registry.by_task.get(id) {
            for follower in list.iter().filter(|f| f.steps) {
                follower.send(event);
                delivered = true;
            }
        }
        if delivered {
            return true;
        }
        if registry.pending_steps == 0 {
            return false;
        }
        if !registry.early.contains_key(id) && registry.early.len() >= EARLY_TASKS {
            registry.early.retain(|_, e| e.at.elapsed() < EARLY_TTL);
            if registry.early.len() >= EARLY_TASKS {
                return false;
            }
        }
        let early = registry.early.entry(id.clone()).or_insert_with(|| Early {
            at: std::time::Instant::now(),
            events: Vec::new(),
        });
        if early.events.len() >= FOLLOW_CAPACITY {
            return false;
        }
        early.events.push(event.clone());
        true
    }

    /// Whether `id` has a follower (for tests).
    pub(crate) fn count(&self) -> usize {
        self.lock().by_task.values().map(Vec::len).sum()
    }
}
