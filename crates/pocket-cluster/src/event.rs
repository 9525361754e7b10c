//! What a running cluster reports as it works: tasks claimed and finished, instances up and
//! down, scaling decisions, and the steps of the runs someone follows. Sent on a bounded
//! broadcast channel ([`Cluster::subscribe`](crate::Cluster::subscribe)); a subscriber that
//! falls more than 1,024 events behind loses the oldest (its receiver says how many).
//!
//! A run's own steps ([`ClusterEvent::Agent`]: model turns, text deltas, tool calls,
//! approvals) are sent only for tasks someone watches
//! ([`Cluster::watch_task`](crate::Cluster::watch_task)): an unwatched run builds none.

use std::sync::Arc;

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
    /// A running task was cancelled; its run was stopped.
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
