//! Shared utilities of the cluster runtime's tests: a store clock on tokio's (virtual) time,
//! counting and hanging tools, agent factories on the `sim` model, and a store that can
//! stall a worker's heartbeats.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures_util::future::BoxFuture;
use pocket_agent::{
    Agent, CheckpointRef, Completion, CompletionRequest, JournalEntry, Model, ModelError, Tool,
    ToolContext, ToolError,
};
use pocket_cluster::store::{Clock, MemoryStore, StoreOptions};
use pocket_cluster::{
    Claimed, Enqueued, FailOutcome, NewTask, QueueStats, StoreError, TaskFilter, TaskId,
    TaskRecord, TaskStatus, TaskStore,
};
use pocket_models::{SimConfig, SimModel};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;

/// A store clock that follows tokio's clock, so leases expire on virtual time.
#[derive(Debug, Clone)]
pub struct TokioClock {
    base: SystemTime,
    start: tokio::time::Instant,
}

impl TokioClock {
    pub fn new() -> Self {
        Self {
            base: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            start: tokio::time::Instant::now(),
        }
    }
}

impl Clock for TokioClock {
    fn now(&self) -> SystemTime {
        self.base + self.start.elapsed()
    }
}

/// A memory store on tokio's clock, with these options.
pub fn memory_store(options: StoreOptions) -> Arc<dyn TaskStore> {
    Arc::new(MemoryStore::new(options.clock(TokioClock::new())))
}

/// Executions per run id (task id).
#[derive(Debug, Clone, Default)]
pub struct Counter(Arc<Mutex<HashMap<String, u32>>>);

impl Counter {
    pub fn bump(&self, run: &str) {
        *self.0.lock().unwrap().entry(run.to_owned()).or_default() += 1;
    }

    pub fn get(&self, run: &str) -> u32 {
        self.0.lock().unwrap().get(run).copied().unwrap_or(0)
    }

    pub fn total(&self) -> u32 {
        self.0.lock().unwrap().values().sum()
    }

    pub fn runs(&self) -> usize {
        self.0.lock().unwrap().len()
    }
}

/// No arguments.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct NoArgs {}

/// `count`: counts its executions per task; not idempotent.
pub struct CountTool(pub Counter);

impl Tool for CountTool {
    type Args = NoArgs;
    type Output = u32;

    fn name(&self) -> &str {
        "count"
    }

    fn description(&self) -> &str {
        "Counts."
    }

    async fn call(&self, _: NoArgs, ctx: &ToolContext) -> Result<u32, ToolError> {
        self.0.bump(&ctx.run_id);
        Ok(self.0.get(&ctx.run_id))
    }
}

/// `wait`: idempotent; hangs forever when `hang` is set, else returns at once. Counts its
/// executions.
pub struct WaitTool {
    pub hang: bool,
    pub counter: Counter,
}

impl Tool for WaitTool {
    type Args = NoArgs;
    type Output = &'static str;

    fn name(&self) -> &str {
        "wait"
    }

    fn description(&self) -> &str {
        "Waits."
    }

    fn idempotent(&self) -> bool {
        true
    }

    async fn call(&self, _: NoArgs, ctx: &ToolContext) -> Result<&'static str, ToolError> {
        self.counter.bump(&ctx.run_id);
        if self.hang {
            std::future::pending::<()>().await;
        }
        Ok("waited")
    }
}

/// A `sim` agent with a `count` tool.
pub fn counting_agent(name: &str, counter: &Counter, sim: SimConfig) -> Agent {
    Agent::builder(SimModel::new(sim))
        .name(name)
        .tool(CountTool(counter.clone()))
        .build()
        .unwrap()
}

/// A model that hangs on its first call if `hang` is still set (and clears it), and
/// otherwise answers `done`.
pub struct HangOnce {
    pub hang: Arc<AtomicBool>,
}

impl Model for HangOnce {
    fn name(&self) -> &str {
        "hang-once"
    }

    async fn complete(&self, _: &CompletionRequest) -> Result<Completion, ModelError> {
        if self.hang.swap(false, Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        Ok(Completion::text("done"))
    }
}

/// A model that always fails with this error.
pub struct Failing(pub fn() -> ModelError);

impl Model for Failing {
    fn name(&self) -> &str {
        "failing"
    }

    async fn complete(&self, _: &CompletionRequest) -> Result<Completion, ModelError> {
        Err((self.0)())
    }
}

/// A store whose heartbeats fail while `stalled` is set: a worker that stalls.
pub struct Stalling {
    pub inner: Arc<dyn TaskStore>,
    pub stalled: Arc<AtomicBool>,
    pub heartbeats_refused: Arc<AtomicU32>,
}

impl TaskStore for Stalling {
    fn enqueue(&self, task: NewTask) -> BoxFuture<'_, Result<Enqueued, StoreError>> {
        self.inner.enqueue(task)
    }

    fn claim<'a>(
        &'a self,
        worker: &'a str,
        agents: &'a [String],
        capabilities: &'a [String],
        limit: usize,
        lease: Duration,
    ) -> BoxFuture<'a, Result<Vec<Claimed>, StoreError>> {
        self.inner.claim(worker, agents, capabilities, limit, lease)
    }

    fn heartbeat<'a>(
        &'a self,
        worker: &'a str,
        ids: &'a [TaskId],
        lease: Duration,
    ) -> BoxFuture<'a, Result<Vec<TaskId>, StoreError>> {
        if self.stalled.load(Ordering::SeqCst) {
            self.heartbeats_refused.fetch_add(1, Ordering::SeqCst);
            return Box::pin(async {
                Err(StoreError::Backend {
                    message: "stalled".into(),
                    retryable: true,
                    source: None,
                })
            });
        }
        self.inner.heartbeat(worker, ids, lease)
    }

    fn checkpoint<'a>(
        &'a self,
        id: &'a TaskId,
        worker: &'a str,
        state: CheckpointRef<'a>,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        self.inner.checkpoint(id, worker, state)
    }

    fn journal<'a>(
        &'a self,
        id: &'a TaskId,
        worker: &'a str,
        entry: &'a JournalEntry,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        self.inner.journal(id, worker, entry)
    }

    fn set_waiting<'a>(
        &'a self,
        id: &'a TaskId,
        worker: &'a str,
        waiting: bool,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        self.inner.set_waiting(id, worker, waiting)
    }

    fn complete<'a>(
        &'a self,
        id: &'a TaskId,
        worker: &'a str,
        result: Value,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        self.inner.complete(id, worker, result)
    }

    fn fail<'a>(
        &'a self,
        id: &'a TaskId,
        worker: &'a str,
        error: &'a str,
        retry_in: Option<Duration>,
    ) -> BoxFuture<'a, Result<FailOutcome, StoreError>> {
        self.inner.fail(id, worker, error, retry_in)
    }

    fn cancel<'a>(&'a self, id: &'a TaskId) -> BoxFuture<'a, Result<bool, StoreError>> {
        self.inner.cancel(id)
    }

    fn release<'a>(&'a self, worker: &'a str) -> BoxFuture<'a, Result<u64, StoreError>> {
        self.inner.release(worker)
    }

    fn reclaim_expired(&self) -> BoxFuture<'_, Result<u64, StoreError>> {
        self.inner.reclaim_expired()
    }

    fn get<'a>(&'a self, id: &'a TaskId) -> BoxFuture<'a, Result<Option<TaskRecord>, StoreError>> {
        self.inner.get(id)
    }

    fn list<'a>(
        &'a self,
        filter: &'a TaskFilter,
    ) -> BoxFuture<'a, Result<Vec<TaskRecord>, StoreError>> {
        self.inner.list(filter)
    }

    fn stats(&self) -> BoxFuture<'_, Result<QueueStats, StoreError>> {
        self.inner.stats()
    }
}

/// Polls `check` every 10 ms (virtual or real) until it holds, at most `limit`.
pub async fn wait_until<F, Fut>(limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not met within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The status of a task.
pub async fn status(store: &Arc<dyn TaskStore>, id: &TaskId) -> TaskStatus {
    store.get(id).await.unwrap().unwrap().status
}

/// Whether every task has this status.
pub async fn all_have(store: &Arc<dyn TaskStore>, ids: &[TaskId], want: TaskStatus) -> bool {
    for id in ids {
        if status(store, id).await != want {
            return false;
        }
    }
    true
}
