//! The durable task queue: one trait, several implementations, one conformance suite.
//!
//! Lifecycle of a task: `queued` → (claimed with a lease) `running` → `succeeded`, or
//! `failed` (dead letter, after the last attempt), or back to `queued` with a later
//! `run_after` (a scheduled retry), or `cancelled`. A lease that expires without a heartbeat
//! (the worker died) makes the task claimable again; the next worker resumes it from its last
//! checkpoint and journal. `waiting_approval` marks a running task blocked on a person.
//!
//! Every write that a worker makes on a task (heartbeat, checkpoint, journal, complete, fail)
//! names the worker; a worker that lost its lease gets [`StoreError::LeaseLost`] and must stop
//! working on the task, so no task is finished twice.

use std::fmt;
use std::time::{Duration, SystemTime};

use futures_util::future::BoxFuture;
use pocket_agent::{Checkpoint, CheckpointRef, JournalEntry};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A task's id (a UUID v7 string: sortable by creation time).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TaskId(pub String);

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a task is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    /// Waiting to be claimed (possibly not before `run_after`).
    Queued,
    /// Claimed by a worker under a lease.
    Running,
    /// Running, blocked on a person's approval.
    WaitingApproval,
    /// Finished with an answer.
    Succeeded,
    /// Failed after its last attempt (dead letter), or failed for good.
    Failed,
    /// Cancelled before it finished.
    Cancelled,
}

impl TaskStatus {
    /// The snake_case name, as stored and served.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::WaitingApproval => "waiting_approval",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    /// Whether the task will not change any more.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }
}

/// A task to enqueue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewTask {
    /// The agent that runs it.
    pub agent: String,
    /// The task text.
    pub task: String,
    /// Higher runs first. Default: 0.
    #[serde(default)]
    pub priority: i32,
    /// Capabilities an instance must have to run it.
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// A second enqueue with the same key returns the first task instead.
    #[serde(default)]
    pub idempotency_key: Option<String>,
    /// Attempts before the task is dead-lettered. Default: 3.
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    /// Free-form data the caller wants back (conversation history for chat, say).
    #[serde(default)]
    pub metadata: Value,
}

fn default_attempts() -> u32 {
    3
}

impl NewTask {
    /// A task for `agent` with default priority, no capabilities, no key, 3 attempts.
    pub fn new(agent: impl Into<String>, task: impl Into<String>) -> Self {
        Self {
            agent: agent.into(),
            task: task.into(),
            priority: 0,
            capabilities: Vec::new(),
            idempotency_key: None,
            max_attempts: default_attempts(),
            metadata: Value::Null,
        }
    }
}

/// What [`TaskStore::enqueue`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enqueued {
    /// The task's id (the existing one for a duplicate idempotency key).
    pub id: TaskId,
    /// `false` when the idempotency key matched an existing task.
    pub created: bool,
}

/// Everything the store knows of a task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskRecord {
    /// Id.
    pub id: TaskId,
    /// The agent that runs it.
    pub agent: String,
    /// The task text.
    pub task: String,
    /// Priority (higher first).
    pub priority: i32,
    /// Required capabilities.
    pub capabilities: Vec<String>,
    /// Idempotency key.
    pub idempotency_key: Option<String>,
    /// Status.
    pub status: TaskStatus,
    /// Attempts started so far (claims).
    pub attempts: u32,
    /// Attempts allowed.
    pub max_attempts: u32,
    /// The run's output (JSON of `RunOutput`) once succeeded.
    pub result: Option<Value>,
    /// The last error.
    pub error: Option<String>,
    /// Caller's data.
    pub metadata: Value,
    /// When it was enqueued.
    pub created_at: SystemTime,
    /// When it last changed.
    pub updated_at: SystemTime,
    /// Not claimable before this (a scheduled retry).
    pub run_after: SystemTime,
    /// The worker holding the lease, while running.
    pub lease_owner: Option<String>,
    /// When the lease runs out.
    pub lease_expires_at: Option<SystemTime>,
}

/// A task claimed by a worker, with what it needs to resume.
#[derive(Debug, Clone, PartialEq)]
pub struct Claimed {
    /// The task (status `running`, lease held by the claiming worker).
    pub record: TaskRecord,
    /// The last checkpoint with the journal entries written since, if the task ran before.
    pub resume: Option<Checkpoint>,
}

/// What [`TaskStore::fail`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailOutcome {
    /// Queued again, not before this time.
    Retrying {
        /// When it becomes claimable.
        at: SystemTime,
    },
    /// No attempts left (or not retryable): the task is `failed`.
    DeadLetter,
}

/// Which tasks [`TaskStore::list`] returns, newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskFilter {
    /// Only these statuses (empty: all).
    pub statuses: Vec<TaskStatus>,
    /// Only this agent.
    pub agent: Option<String>,
    /// At most this many (0: the store's default, 100).
    pub limit: usize,
}

/// Queue depth and counts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct QueueStats {
    /// Tasks by status.
    pub by_status: Vec<(TaskStatus, u64)>,
    /// Queued tasks by priority, highest first.
    pub queued_by_priority: Vec<(i32, u64)>,
}

/// A failed store operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// No task with this id.
    #[error("no task `{0}`")]
    NotFound(TaskId),
    /// The worker does not hold the task's lease (it expired and another worker took it, or
    /// the task was cancelled); the worker must stop working on it.
    #[error("worker `{worker}` no longer holds the lease of task `{id}`")]
    LeaseLost {
        /// The task.
        id: TaskId,
        /// The worker.
        worker: String,
    },
    /// The queue holds its configured maximum of tasks; try again later.
    #[error("the queue is full ({limit} tasks waiting); retry later")]
    QueueFull {
        /// The limit.
        limit: u64,
        /// A hint for when to retry.
        retry_after: Duration,
    },
    /// The request is invalid (empty agent name, say).
    #[error("invalid task: {0}")]
    Invalid(String),
    /// The database failed.
    #[error("task store: {message}")]
    Backend {
        /// What failed.
        message: String,
        /// Whether trying again may help (a lost connection, a busy database).
        retryable: bool,
        /// The underlying error.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
}

impl StoreError {
    /// Whether trying the same operation again may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::QueueFull { .. } => true,
            Self::Backend { retryable, .. } => *retryable,
            _ => false,
        }
    }
}

/// The durable queue of tasks and their runs' state.
///
/// Implementations: in-memory, SQLite (embedded default: one file, WAL) and PostgreSQL
/// (`FOR UPDATE SKIP LOCKED`, for several machines). All pass one conformance suite.
pub trait TaskStore: Send + Sync + 'static {
    /// Adds a task, or returns the existing one with the same idempotency key.
    ///
    /// # Errors
    /// [`StoreError::QueueFull`] beyond the configured maximum of queued tasks.
    fn enqueue(&self, task: NewTask) -> BoxFuture<'_, Result<Enqueued, StoreError>>;

    /// Claims up to `limit` claimable tasks for `worker`, highest priority first then oldest,
    /// among tasks of `agents` whose required capabilities are all in `capabilities`; each
    /// claim starts an attempt and holds a lease for `lease`.
    fn claim<'a>(
        &'a self,
        worker: &'a str,
        agents: &'a [String],
        capabilities: &'a [String],
        limit: usize,
        lease: Duration,
    ) -> BoxFuture<'a, Result<Vec<Claimed>, StoreError>>;

    /// Extends the leases `worker` holds on these tasks; returns the ids still held.
    fn heartbeat<'a>(
        &'a self,
        worker: &'a str,
        ids: &'a [TaskId],
        lease: Duration,
    ) -> BoxFuture<'a, Result<Vec<TaskId>, StoreError>>;

    /// Saves the run's state after a step; clears the journal it covers.
    fn checkpoint<'a>(
        &'a self,
        id: &'a TaskId,
        worker: &'a str,
        state: CheckpointRef<'a>,
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Appends a tool-call journal entry.
    fn journal<'a>(
        &'a self,
        id: &'a TaskId,
        worker: &'a str,
        entry: &'a JournalEntry,
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Marks a running task `waiting_approval` (`true`) or back to `running` (`false`).
    fn set_waiting<'a>(
        &'a self,
        id: &'a TaskId,
        worker: &'a str,
        waiting: bool,
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Finishes a task with its result; releases the lease.
    fn complete<'a>(
        &'a self,
        id: &'a TaskId,
        worker: &'a str,
        result: Value,
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Fails an attempt: with `retry_in` and attempts left, queues the task again for later;
    /// otherwise dead-letters it. Releases the lease.
    fn fail<'a>(
        &'a self,
        id: &'a TaskId,
        worker: &'a str,
        error: &'a str,
        retry_in: Option<Duration>,
    ) -> BoxFuture<'a, Result<FailOutcome, StoreError>>;

    /// Cancels a task that is not finished; `false` when it already was.
    fn cancel<'a>(&'a self, id: &'a TaskId) -> BoxFuture<'a, Result<bool, StoreError>>;

    /// Releases the leases `worker` holds (graceful shutdown): its running tasks become
    /// claimable again at once; attempts already counted stay counted. Returns how many.
    fn release<'a>(&'a self, worker: &'a str) -> BoxFuture<'a, Result<u64, StoreError>>;

    /// Makes tasks whose lease expired claimable again; returns how many.
    fn reclaim_expired(&self) -> BoxFuture<'_, Result<u64, StoreError>>;

    /// One task.
    fn get<'a>(&'a self, id: &'a TaskId) -> BoxFuture<'a, Result<Option<TaskRecord>, StoreError>>;

    /// Tasks matching a filter, newest first.
    fn list<'a>(
        &'a self,
        filter: &'a TaskFilter,
    ) -> BoxFuture<'a, Result<Vec<TaskRecord>, StoreError>>;

    /// Depth by status and priority.
    fn stats(&self) -> BoxFuture<'_, Result<QueueStats, StoreError>>;
}

// Compile-time check that the trait stays object safe.
const _: Option<&dyn TaskStore> = None;
