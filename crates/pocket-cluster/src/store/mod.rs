//! The durable task queue: one trait, several implementations, one conformance suite.
//!
//! Lifecycle of a task: `queued` → (claimed with a lease) `running` → `succeeded`, or
//! `failed` (dead letter, after the last attempt), or back to `queued` with a later
//! `run_after` (a scheduled retry), or `cancelled`. A lease that expires without a heartbeat
//! (the worker died) makes the task claimable again once [`TaskStore::reclaim_expired`] runs
//! (or dead-letters it, if that was its last attempt); the next worker resumes it from its
//! last checkpoint and journal. `waiting_approval` marks a running task blocked on a person.
//!
//! Every write that a worker makes on a task (heartbeat, checkpoint, journal, complete, fail)
//! names the worker; a worker that lost its lease gets [`StoreError::LeaseLost`] and must stop
//! working on the task, so no task is finished twice.
//!
//! | store | for | constructor |
//! |---|---|---|
//! | [`MemoryStore`] | tests, one process that may lose its queue | [`MemoryStore::new`] |
//! | [`SqliteStore`] (feature `sqlite`) | the embedded default: one file, WAL | [`SqliteStore::open`] |
//! | [`PostgresStore`] (feature `postgres`) | several machines on one database | [`PostgresStore::connect`] |
//!
//! Both SQL features are on by default; `default-features = false, features = ["sqlite"]`
//! leaves PostgreSQL (and its TLS stack) out. [`open`] picks a store from a URL. Time comes
//! from a [`Clock`] in [`StoreOptions`] (never from the database), so leases and scheduled
//! retries are tested with a [`ManualClock`]; the stores keep times as whole milliseconds
//! since the Unix epoch. Every store passes `tests/store_conformance.rs`.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), pocket_cluster::StoreError> {
//! use std::time::Duration;
//! use pocket_cluster::store::{self, NewTask, StoreOptions};
//!
//! let store = store::open("memory:", StoreOptions::new()).await?;
//! let queued = store.enqueue(NewTask::new("support", "Summarise ticket 42")).await?;
//! let claimed = store
//!     .claim("worker-1", &["support".into()], &[], 1, Duration::from_secs(30))
//!     .await?;
//! assert_eq!(claimed[0].record.id, queued.id);
//! store.complete(&queued.id, "worker-1", serde_json::json!({"answer": "done"})).await?;
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::future::BoxFuture;
use pocket_agent::{Checkpoint, CheckpointRef, JournalEntry};
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub mod approvals;
mod clock;
mod memory;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod sql;
#[cfg(feature = "sqlite")]
mod sqlite;

pub use approvals::{ApprovalRecord, ApprovalStore, Decided, NewApproval, approval_id};
pub use clock::{Clock, ManualClock, SystemClock};
pub use memory::MemoryStore;
#[cfg(feature = "postgres")]
pub use postgres::PostgresStore;
#[cfg(feature = "sqlite")]
pub use sqlite::SqliteStore;

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

    /// Every status, in lifecycle order (the order of [`QueueStats::by_status`]).
    pub const ALL: [TaskStatus; 6] = [
        Self::Queued,
        Self::Running,
        Self::WaitingApproval,
        Self::Succeeded,
        Self::Failed,
        Self::Cancelled,
    ];

    /// Parses [`as_str`](Self::as_str)'s names.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }

    /// Whether a worker holds a lease on the task (`running` or `waiting_approval`).
    pub fn is_leased(self) -> bool {
        matches!(self, Self::Running | Self::WaitingApproval)
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for TaskStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
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
    /// Tasks by status: every status in [`TaskStatus::ALL`] order, zeros included.
    pub by_status: Vec<(TaskStatus, u64)>,
    /// Queued tasks (scheduled retries included) by priority, highest first; no zeros.
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
    /// A store URL that [`open`] (or a store's constructor) cannot use: an unknown scheme,
    /// a scheme whose feature is off, or a malformed URL.
    #[error("bad task store URL: {0}")]
    BadUrl(String),
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
    /// Adds a task, or returns the existing one with the same idempotency key (even when the
    /// queue is full, and also when two enqueues race).
    ///
    /// # Errors
    /// [`StoreError::QueueFull`] beyond the configured maximum of queued tasks;
    /// [`StoreError::Invalid`] for an empty agent, idempotency key or capability, or
    /// `max_attempts` 0.
    fn enqueue(&self, task: NewTask) -> BoxFuture<'_, Result<Enqueued, StoreError>>;

    /// Claims up to `limit` claimable tasks for `worker`, highest priority first then oldest,
    /// among tasks of `agents` (empty: any agent) whose required capabilities are all in
    /// `capabilities`; each claim starts an attempt and holds a lease for `lease`.
    ///
    /// Claimable means `queued` with `run_after` not in the future. Concurrent claims never
    /// return the same task. A task that ran before comes with its last checkpoint and the
    /// journal entries written since ([`Claimed::resume`]).
    ///
    /// # Errors
    /// [`StoreError::Invalid`] for an empty worker name.
    fn claim<'a>(
        &'a self,
        worker: &'a str,
        agents: &'a [String],
        capabilities: &'a [String],
        limit: usize,
        lease: Duration,
    ) -> BoxFuture<'a, Result<Vec<Claimed>, StoreError>>;

    /// Extends the leases `worker` holds on these tasks to `lease` from now; returns the ids
    /// still held, in the order given. A lease that ran out but was not reclaimed yet is
    /// still held.
    fn heartbeat<'a>(
        &'a self,
        worker: &'a str,
        ids: &'a [TaskId],
        lease: Duration,
    ) -> BoxFuture<'a, Result<Vec<TaskId>, StoreError>>;

    /// Saves the run's state after a step; clears the journal it covers.
    ///
    /// # Errors
    /// [`StoreError::LeaseLost`] when `worker` does not hold the task (also for the other
    /// worker writes below); [`StoreError::NotFound`] for an unknown id.
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

    /// Finishes a task with its result; releases the lease and drops its checkpoint and
    /// journal.
    fn complete<'a>(
        &'a self,
        id: &'a TaskId,
        worker: &'a str,
        result: Value,
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Fails an attempt: with `retry_in` and attempts left, queues the task again for later
    /// (keeping its checkpoint, so the next attempt resumes); otherwise dead-letters it.
    /// Releases the lease. Backoff is the caller's: it knows the error.
    fn fail<'a>(
        &'a self,
        id: &'a TaskId,
        worker: &'a str,
        error: &'a str,
        retry_in: Option<Duration>,
    ) -> BoxFuture<'a, Result<FailOutcome, StoreError>>;

    /// Cancels a task that is not finished; `false` when it already was. The worker running
    /// it gets [`StoreError::LeaseLost`] on its next write.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] for an unknown id.
    fn cancel<'a>(&'a self, id: &'a TaskId) -> BoxFuture<'a, Result<bool, StoreError>>;

    /// Releases the leases `worker` holds (graceful shutdown): its running tasks become
    /// claimable again at once; attempts already counted stay counted. Returns how many.
    fn release<'a>(&'a self, worker: &'a str) -> BoxFuture<'a, Result<u64, StoreError>>;

    /// Makes tasks whose lease expired claimable again; returns how many it changed. A task
    /// whose expired attempt was its last is dead-lettered instead (a task that kills its
    /// workers must not loop forever).
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

    /// Where this store keeps approval requests and their answers ([`approvals`]), or
    /// `None` when it keeps none. Default: `None`; every store of this crate keeps them.
    fn approvals(&self) -> Option<&dyn ApprovalStore> {
        None
    }
}

// Compile-time check that the trait stays object safe.
const _: Option<&dyn TaskStore> = None;

/// How a store behaves: back-pressure, retention and its clock.
///
/// Defaults: no limit on queued tasks, a one-second retry hint when full, the memory store
/// keeps the 10,000 most recently finished tasks, SQL pools of 4 (SQLite readers) or 10
/// (PostgreSQL) connections, and the system clock.
#[derive(Debug, Clone)]
#[must_use]
pub struct StoreOptions {
    max_queued: Option<u64>,
    queue_full_retry_after: Duration,
    keep_finished: Option<usize>,
    max_connections: Option<u32>,
    clock: Arc<dyn Clock>,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            max_queued: None,
            queue_full_retry_after: Duration::from_secs(1),
            keep_finished: Some(10_000),
            max_connections: None,
            clock: Arc::new(SystemClock),
        }
    }
}

impl StoreOptions {
    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// At most this many `queued` tasks; a new enqueue beyond it fails with
    /// [`StoreError::QueueFull`]. Default: no limit.
    pub fn max_queued(mut self, limit: impl Into<Option<u64>>) -> Self {
        self.max_queued = limit.into();
        self
    }

    /// The retry hint that [`StoreError::QueueFull`] carries. Default: one second.
    pub fn queue_full_retry_after(mut self, after: Duration) -> Self {
        self.queue_full_retry_after = after;
        self
    }

    /// [`MemoryStore`] only: how many finished tasks to keep; older ones are dropped, with
    /// their idempotency keys. `None` keeps all (memory then grows with every task).
    /// Default: 10,000. SQL stores keep every task.
    pub fn keep_finished(mut self, keep: impl Into<Option<usize>>) -> Self {
        self.keep_finished = keep.into();
        self
    }

    /// SQL stores: the connection pool's size (SQLite: readers; it always writes through
    /// one connection). Default: 4 for SQLite, 10 for PostgreSQL.
    pub fn max_connections(mut self, connections: u32) -> Self {
        self.max_connections = Some(connections.max(1));
        self
    }

    /// Where the store reads the time. Default: [`SystemClock`].
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Like [`clock`](Self::clock), for a clock that is already shared.
    pub fn shared_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    fn now_ms(&self) -> i64 {
        to_ms(self.clock.now())
    }

    fn queue_full(&self, limit: u64) -> StoreError {
        StoreError::QueueFull {
            limit,
            retry_after: self.queue_full_retry_after,
        }
    }
}

/// Opens the store a URL names: `memory:`, `sqlite://path/to/file.db` (created if missing),
/// `sqlite::memory:`, or `postgres://user@host/db` (also `postgresql://`).
///
/// # Errors
/// [`StoreError::BadUrl`] for another scheme, one whose feature is off, or a malformed URL;
/// the store's own errors when it cannot open.
pub async fn open(url: &str, options: StoreOptions) -> Result<Arc<dyn TaskStore>, StoreError> {
    let Some((scheme, _)) = url.split_once(':') else {
        return Err(StoreError::BadUrl(format!(
            "`{url}` has no scheme (expected memory:, sqlite://PATH or postgres://USER@HOST/DB)"
        )));
    };
    match scheme {
        "memory" => Ok(Arc::new(MemoryStore::new(options))),
        #[cfg(feature = "sqlite")]
        "sqlite" => Ok(Arc::new(SqliteStore::open(url, options).await?)),
        #[cfg(feature = "postgres")]
        "postgres" | "postgresql" => Ok(Arc::new(PostgresStore::connect(url, options).await?)),
        _ => Err(StoreError::BadUrl(format!(
            "unsupported scheme `{scheme}` in `{url}` (expected memory:, sqlite:// or \
             postgres://, with the crate feature for it)"
        ))),
    }
}

/// Milliseconds since the Unix epoch (negative before it), as the stores keep times.
fn to_ms(time: SystemTime) -> i64 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_millis()).unwrap_or(i64::MAX),
        Err(before) => i64::try_from(before.duration().as_millis()).map_or(i64::MIN, |ms| -ms),
    }
}

fn from_ms(ms: i64) -> SystemTime {
    let magnitude = Duration::from_millis(ms.unsigned_abs());
    if ms >= 0 {
        UNIX_EPOCH + magnitude
    } else {
        UNIX_EPOCH - magnitude
    }
}

/// A duration in whole milliseconds, saturating.
fn duration_ms(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// The checks every store makes before it enqueues.
fn validate(task: &NewTask) -> Result<(), StoreError> {
    if task.agent.trim().is_empty() {
        return Err(StoreError::Invalid("the agent name is empty".into()));
    }
    if task.max_attempts == 0 {
        return Err(StoreError::Invalid(
            "max_attempts must be at least 1".into(),
        ));
    }
    if task
        .idempotency_key
        .as_deref()
        .is_some_and(|k| k.is_empty())
    {
        return Err(StoreError::Invalid("the idempotency key is empty".into()));
    }
    if task.capabilities.iter().any(|c| c.is_empty()) {
        return Err(StoreError::Invalid("a capability name is empty".into()));
    }
    // PostgreSQL's text cannot hold NUL; refuse it everywhere so every store agrees.
    let mut texts = [&task.agent, &task.task]
        .into_iter()
        .chain(task.idempotency_key.as_ref())
        .chain(&task.capabilities);
    if texts.any(|t| t.contains('\0')) {
        return Err(StoreError::Invalid(
            "a NUL character in the agent, task, idempotency key or a capability".into(),
        ));
    }
    Ok(())
}

fn validate_worker(worker: &str) -> Result<(), StoreError> {
    if worker.is_empty() || worker.contains('\0') {
        return Err(StoreError::Invalid(
            "the worker name is empty or holds a NUL character".into(),
        ));
    }
    Ok(())
}

/// A new task id: a UUID v7, so ids sort by creation time.
fn new_id() -> TaskId {
    TaskId(uuid::Uuid::now_v7().to_string())
}

/// `list`'s row limit: the filter's, or 100.
fn list_limit(filter: &TaskFilter) -> usize {
    if filter.limit == 0 { 100 } else { filter.limit }
}

/// Says what [`TaskStore::reclaim_expired`] did, when it did anything.
fn log_reclaimed(dead_lettered: u64, requeued: u64) {
    if dead_lettered + requeued > 0 {
        tracing::warn!(
            requeued,
            dead_lettered,
            "reclaimed tasks whose lease expired (their workers stopped heartbeating)"
        );
    }
}

/// The error text a reclaimed task keeps.
fn lease_expired_error(dead: bool) -> &'static str {
    if dead {
        "the lease expired on the last attempt (the worker stopped heartbeating)"
    } else {
        "the lease expired (the worker stopped heartbeating); queued again"
    }
}
