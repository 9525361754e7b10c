//! The worker: a [`Cluster`] handle that owns agent instances, claims tasks from a
//! [`TaskStore`], runs them durably, and reports what it does.
//!
//! # What [`Cluster::run`] does
//!
//! - **Claims** batches for every (agent, capabilities) group of instances with free slots,
//!   at most the free slots and `claim_batch`, under a lease of `lease_secs`; a full batch is
//!   followed by another claim at once, an empty one by a wait for `poll_interval_ms`, a local
//!   submit, or a freed slot when work may be waiting for one (a group had no free slot, or a
//!   claimed task waits for an instance).
//! - **Dispatches** each claimed task to an instance chosen by the [`Pool`]'s policy, or keeps
//!   it (still leased) until one frees up.
//! - **Runs** it with `agent.run_with(RunRequest { run_id: task id, checkpointer: the store,
//!   resume: the last checkpoint, cancel, .. })`: the run checkpoints after each step and
//!   journals each tool call through the store under this worker's lease.
//! - **Finishes** it: completes with the serialized [`RunOutput`](pocket_agent::RunOutput), or
//!   fails with a retry delay from the error's classification (its Retry-After, else
//!   exponential backoff from `retry_base_secs` with jitter, at most `retry_max_secs`; not
//!   retryable: dead letter).
//! - **Heartbeats** every `heartbeat_secs`: renews the leases it holds; stops the runs of
//!   tasks it no longer holds (cancelled, or taken by another worker after this one stalled)
//!   without finishing them; makes expired leases claimable again; checks instances (see
//!   [`health`](crate::health)); runs the autoscaler; updates the metrics.
//! - **Shuts down** gracefully: stops claiming, gives in-flight runs `shutdown_grace_secs`,
//!   cancels the rest (their checkpoints stay), releases its leases, unloads the agents.
//!
//! Every spawned run lives in a [`JoinSet`] owned by the `run` future: dropping or aborting
//! that future (a crash, in tests) aborts every run and leaves the leases to expire, after
//! which another worker resumes the tasks from their checkpoints.

use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, SystemTime};

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use pocket_agent::{
    Agent, AgentError, AgentErrorKind, CancellationToken, CheckpointError, CheckpointRef,
    Checkpointer, Classify, ErrorKind, JournalEntry, Message, RunRequest,
};
use pocket_monitor::{Metrics, OverheadPhase};
use pocket_resilience::{Breaker, BreakerPolicy, Component, Outcome, ResilienceHub};
use tokio::sync::broadcast;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::autoscale::{Autoscaler, Observation, ScaleDecision};
use crate::config::{ClusterConfig, ConfigError};
use crate::event::{AgentStep, ClusterEvent, Followed, Followers, Following};
use crate::pool::{Beat, InstanceId, InstanceStatus, Pool, Slot};
use crate::report::{AgentScaling, ClusterReport};
use crate::store::{
    Claimed, Enqueued, FailOutcome, NewTask, StoreError, TaskId, TaskStatus, TaskStore,
};

/// Capacity of the event channel.
const EVENT_CAPACITY: usize = 1024;

/// The error an agent factory returns.
pub type FactoryError = Box<dyn std::error::Error + Send + Sync>;

/// Builds an agent instance from the agent's name (its configuration).
type Factory = Arc<dyn Fn(&str) -> Result<Agent, FactoryError> + Send + Sync>;

/// What one claim round of the dispatcher found.
#[derive(Debug, Default, Clone, Copy)]
struct ClaimRound {
    /// Some claim came back full: more work is likely waiting.
    full: bool,
    /// Some group of this worker's agents had no free slot, so it was not asked for work.
    starved: bool,
}

/// What [`Cluster::run_now`] did.
#[derive(Debug)]
pub enum RunNow {
    /// It ran here: its answer, or why it has none.
    Ran(Result<Box<pocket_agent::RunOutput>, RunNowError>),
    /// Nothing ran (no instance free, the breaker refused, or the worker is stopping): the
    /// request, untouched, to queue instead.
    NotNow(RunRequest),
}

/// Why a run started with [`Cluster::run_now`] gave no answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunNowError {
    /// The run failed.
    #[error(transparent)]
    Agent(#[from] AgentError),
    /// The run panicked (the instance is counted as failing).
    #[error("the run panicked")]
    Panicked,
}

/// Why a cluster could not be built or run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// The `[cluster]` section is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// No agent to serve was named, or no factory given.
    #[error("{0}")]
    Incomplete(&'static str),
    /// The factory could not build an instance of an agent.
    #[error("building an instance of agent `{agent}` failed")]
    Factory {
        /// The agent.
        agent: String,
        /// The factory's error.
        #[source]
        source: FactoryError,
    },
    /// [`Cluster::run`] is already running on this cluster.
    #[error("the cluster is already running")]
    AlreadyRunning,
}

/// What [`Cluster::run`] did at shutdown.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stopped {
    /// Runs in flight when shutdown began.
    pub in_flight: usize,
    /// Runs still going after the grace period, cancelled (they resume elsewhere).
    pub interrupted: usize,
    /// Leases released to the store.
    pub released: u64,
}

#[derive(Debug, Clone)]
pub(crate) struct AgentSpec {
    pub(crate) name: Arc<str>,
    pub(crate) capabilities: Vec<String>,
}

/// A claimed task waiting for an instance, with its entry in the held set.
type Waiting = (Claimed, Arc<RunEntry>);

/// Why a run was stopped from outside; the first reason wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum StopReason {
    None = 0,
    LeaseLost = 1,
    Cancelled = 2,
    InstanceFailed = 3,
    Shutdown = 4,
}

/// A claimed task this worker holds: pending dispatch or running.
pub(crate) struct RunEntry {
    pub(crate) cancel: CancellationToken,
    reason: AtomicU8,
    pub(crate) instance: OnceLock<InstanceId>,
    /// Blocked on a person's approval: not silent.
    waiting: AtomicBool,
}

impl RunEntry {
    fn new() -> Self {
        Self {
            cancel: CancellationToken::new(),
            reason: AtomicU8::new(StopReason::None as u8),
            instance: OnceLock::new(),
            waiting: AtomicBool::new(false),
        }
    }

    pub(crate) fn is_waiting(&self) -> bool {
        self.waiting.load(Ordering::Acquire)
    }

    /// Stops the run for `reason` unless it was stopped already; `true` if this call did.
    pub(crate) fn stop(&self, reason: StopReason) -> bool {
        let first = self
            .reason
            .compare_exchange(
                StopReason::None as u8,
                reason as u8,
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok();
        self.cancel.cancel();
        first
    }

    pub(crate) fn reason(&self) -> StopReason {
        match self.reason.load(Ordering::Acquire) {
            1 => StopReason::LeaseLost,
            2 => StopReason::Cancelled,
            3 => StopReason::InstanceFailed,
            4 => StopReason::Shutdown,
            _ => StopReason::None,
        }
    }
}

/// The state every clone of a [`Cluster`] and every run shares.
pub(crate) struct Shared {
    pub(crate) config: ClusterConfig,
    pub(crate) worker: Arc<str>,
    pub(crate) store: Arc<dyn TaskStore>,
    pub(crate) pool: Pool,
    pub(crate) factory: Factory,
    pub(crate) agents: Vec<AgentSpec>,
    pub(crate) events: broadcast::Sender<ClusterEvent>,
    pub(crate) runs: Mutex<HashMap<TaskId, Arc<RunEntry>>>,
    pub(crate) scalers: Mutex<HashMap<Arc<str>, Autoscaler>>,
    /// Queue depth at the last heartbeat.
    pub(crate) queued: AtomicU64,
    pub(crate) metrics: Option<Metrics>,
    pub(crate) agent_breakers: HashMap<Arc<str>, Arc<Breaker>>,
    /// Cancelled when shutdown begins: no more claims or scaling.
    pub(crate) stop: CancellationToken,
    /// Tasks whose runs' steps are forwarded as [`ClusterEvent::Agent`] (`None`: every
    /// task), with how many watchers each has.
    watched: Mutex<HashMap<Option<TaskId>, usize>>,
    /// Bumped whenever `watched` changes.
    watch_changed: tokio::sync::watch::Sender<u64>,
    /// Who follows which task ([`Cluster::follow_task`]).
    followers: Followers,
    running: AtomicBool,
    pub(crate) lease: Duration,
    pub(crate) heartbeat: Duration,
    pub(crate) instance_timeout: Duration,
    grace: Duration,
    poll: Duration,
    /// Claim rounds run so far (tests check which events cause one).
    #[cfg(test)]
    claim_rounds: AtomicU64,
    retry_base: Duration,
    retry_max: Duration,
}

/// A worker's handle: cheap to clone, shared by the binary, the HTTP server and tests.
///
/// ```
/// # use std::sync::Arc;
/// # use std::time::Duration;
/// # use pocket_agent::{Agent, Completion, CompletionRequest, Model, ModelError};
/// # struct Echo;
/// # impl Model for Echo {
/// #     fn name(&self) -> &str { "echo" }
/// #     async fn complete(&self, _: &CompletionRequest) -> Result<Completion, ModelError> {
/// #         Ok(Completion::text("hi"))
/// #     }
/// # }
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use pocket_cluster::store::{MemoryStore, StoreOptions};
/// use pocket_cluster::{Cluster, ClusterConfig, NewTask, TaskStatus, TaskStore};
///
/// let config = ClusterConfig::default();
/// let store: Arc<dyn TaskStore> = Arc::new(MemoryStore::new(config.store_options()));
/// let cluster = Cluster::builder(store.clone())
///     .config(config)
///     .agent("default")
///     .factory(|name| Ok(Agent::builder(Echo).name(name).build()?))
///     .build()?;
///
/// let id = cluster.submit(NewTask::new("default", "say hi")).await?.id;
/// let worker = cluster.clone();
/// let running = tokio::spawn(async move { worker.run(std::future::pending()).await });
/// while !store.get(&id).await?.is_some_and(|t| t.status == TaskStatus::Succeeded) {
///     tokio::time::sleep(Duration::from_millis(5)).await;
/// }
/// cluster.shutdown();
/// let stopped = running.await??;
/// assert_eq!(stopped.interrupted, 0);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<Shared>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("worker", &self.inner.worker)
            .field("pool", &self.inner.pool)
            .finish_non_exhaustive()
    }
}

/// Builds a [`Cluster`]; see [`Cluster::builder`].
#[must_use]
pub struct ClusterBuilder {
    store: Arc<dyn TaskStore>,
    config: ClusterConfig,
    factory: Option<Factory>,
    agents: Vec<AgentSpec>,
    hub: Option<ResilienceHub>,
    agent_breaker: Option<BreakerPolicy>,
    metrics: Option<Metrics>,
    seed: Option<u64>,
}

impl ClusterBuilder {
    /// The `[cluster]` section. Default: [`ClusterConfig::default`].
    pub fn config(mut self, config: ClusterConfig) -> Self {
        self.config = config;
        self
    }

    /// Builds an instance of the named agent (at start, when scaling up, and to replace a
    /// failed one). Required.
    pub fn factory(
        mut self,
        factory: impl Fn(&str) -> Result<Agent, FactoryError> + Send + Sync + 'static,
    ) -> Self {
        self.factory = Some(Arc::new(factory));
        self
    }

    /// Serves tasks of this agent, with no capabilities. At least one agent is required.
    pub fn agent(self, name: impl Into<String>) -> Self {
        self.agent_with_capabilities(name, Vec::<String>::new())
    }

    /// Serves tasks of this agent whose required capabilities are among these.
    pub fn agent_with_capabilities(
        mut self,
        name: impl Into<String>,
        capabilities: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        self.agents.push(AgentSpec {
            name: Arc::from(name.into()),
            capabilities: capabilities.into_iter().map(Into::into).collect(),
        });
        self
    }

    /// Routes work around instances whose model breaker (`model:NAME`) in this hub is open,
    /// and keeps it away from agents whose breaker (`agent:NAME`) is open (see
    /// [`pool`](crate::pool)). Default: no hub.
    pub fn resilience(mut self, hub: ResilienceHub) -> Self {
        self.hub = Some(hub);
        self
    }

    /// With a hub: every run's outcome also feeds the agent's breaker (`agent:NAME`, made
    /// with this policy if no layer made it first), so an agent that keeps failing stops
    /// taking tasks (they stay queued) until its breaker lets a probe through. Default: off.
    pub fn agent_breaker(mut self, policy: BreakerPolicy) -> Self {
        self.agent_breaker = Some(policy);
        self
    }

    /// Sets `pocket_queue_depth` and `pocket_instances{status}`, and records queue waits
    /// (`pocket_runtime_overhead_seconds{phase="queue_wait"}`). Default: none.
    pub fn metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Seeds the pool's random choices, for reproducible tests. Default: random.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Validates the configuration and builds `min_instances` instances of every agent.
    ///
    /// # Errors
    /// [`ClusterError::Config`], [`ClusterError::Incomplete`] without agents or factory,
    /// [`ClusterError::Factory`] when an instance cannot be built.
    pub fn build(self) -> Result<Cluster, ClusterError> {
        let c = &self.config;
        c.validate()?;
        let factory = self
            .factory
            .ok_or(ClusterError::Incomplete("a cluster needs an agent factory"))?;
        if self.agents.is_empty() {
            return Err(ClusterError::Incomplete(
                "a cluster needs at least one agent",
            ));
        }
        let policy = c.scale_policy()?;
        let mut agent_breakers = HashMap::new();
        if let (Some(hub), Some(bp)) = (&self.hub, &self.agent_breaker) {
            for spec in &self.agents {
                let b = hub.breaker_or_insert(Component::Agent, &spec.name, bp);
                agent_breakers.insert(spec.name.clone(), b);
            }
        }
        let worker: Arc<str> = match &c.worker_id {
            Some(id) => Arc::from(id.as_str()),
            None => Arc::from(format!(
                "worker-{}-{:08x}",
                std::process::id(),
                fastrand::u32(..)
            )),
        };
        let (retry_base, retry_max) = c.retry_delays();
        let shared = Shared {
            worker,
            store: self.store,
            pool: Pool::with_options(c.selection, self.seed, self.hub),
            factory,
            events: broadcast::channel(EVENT_CAPACITY).0,
            runs: Mutex::new(HashMap::new()),
            scalers: Mutex::new(
                self.agents
                    .iter()
                    .map(|a| (a.name.clone(), Autoscaler::new(policy.clone())))
                    .collect(),
            ),
            agents: self.agents,
            queued: AtomicU64::new(0),
            metrics: self.metrics,
            agent_breakers,
            stop: CancellationToken::new(),
            watched: Mutex::new(HashMap::new()),
            watch_changed: tokio::sync::watch::Sender::new(0),
            followers: Followers::default(),
            running: AtomicBool::new(false),
            lease: c.lease()?,
            heartbeat: c.heartbeat()?,
            instance_timeout: c.instance_timeout()?,
            grace: c.shutdown_grace()?,
            poll: c.poll_interval(),
            #[cfg(test)]
            claim_rounds: AtomicU64::new(0),
            retry_base,
            retry_max,
            config: self.config,
        };
        for spec in &shared.agents {
            for _ in 0..shared.config.min_instances {
                shared
                    .add_instance(spec, "start")
                    .map_err(|source| ClusterError::Factory {
                        agent: spec.name.to_string(),
                        source,
                    })?;
            }
        }
        Ok(Cluster {
            inner: Arc::new(shared),
        })
    }
}

impl Cluster {
    /// Starts building a cluster that works off `store`.
    pub fn builder(store: Arc<dyn TaskStore>) -> ClusterBuilder {
        ClusterBuilder {
            store,
            config: ClusterConfig::default(),
            factory: None,
            agents: Vec::new(),
            hub: None,
            agent_breaker: None,
            metrics: None,
            seed: None,
        }
    }

    /// This worker's name in leases.
    pub fn worker_id(&self) -> &str {
        &self.inner.worker
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn TaskStore> {
        &self.inner.store
    }

    /// Whether `name` is one of the agents this cluster runs (cheap: no store access).
    pub fn has_agent(&self, name: &str) -> bool {
        self.inner.agents.iter().any(|a| &*a.name == name)
    }

    /// The pool of instances.
    pub fn pool(&self) -> &Pool {
        &self.inner.pool
    }

    /// The configuration.
    pub fn config(&self) -> &ClusterConfig {
        &self.inner.config
    }

    /// Receives every [`ClusterEvent`] from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<ClusterEvent> {
        self.inner.events.subscribe()
    }

    /// Sends the steps of task `id`'s runs on this worker ([`ClusterEvent::Agent`]) on the
    /// event channel while the returned guard lives. Runs of unwatched tasks build no step
    /// events at all. A run already going starts forwarding from its next step.
    pub fn watch_task(&self, id: &TaskId) -> TaskWatch {
        self.inner.watch(Some(id.clone()))
    }

    /// Like [`watch_task`](Self::watch_task) for every task: for the moment between
    /// submitting a task and learning its id (then watch it and drop this guard).
    pub fn watch_all(&self) -> TaskWatch {
        self.inner.watch(None)
    }

    /// Follows task `id` on this worker: its end (and, by `what`, its events and its runs'
    /// steps) is sent to the returned follower alone, so only the follower of a task is
    /// woken by it. Registered at once: an end after this call is not missed; one before it
    /// is in the store (read it after this call). Events of runs on other workers do not
    /// come here (read the store for those). Dropping the follower unregisters it.
    pub fn follow_task(&self, id: &TaskId, what: Following) -> TaskFollower {
        let registration = self.inner.followers.register(id, what);
        if what == Following::Steps {
            self.inner.watch_changed.send_modify(|v| *v += 1);
        }
        TaskFollower {
            shared: Arc::clone(&self.inner),
            id: id.clone(),
            key: registration.key,
            events: registration.events,
            end: Some(registration.end),
            lagged: registration.lagged,
            stashed: None,
            ended: None,
            done: false,
        }
    }

    /// [`submit`](Self::submit), then [`follow_task`](Self::follow_task). With
    /// [`Following::Steps`], the steps of runs that start before the follower is registered
    /// are kept for it, so it gets its run's steps from the first.
    ///
    /// # Errors
    /// As [`submit`](Self::submit).
    pub async fn submit_followed(
        &self,
        task: NewTask,
        what: Following,
    ) -> Result<(Enqueued, TaskFollower), StoreError> {
        let pending = (what == Following::Steps).then(|| PendingSteps::new(&self.inner));
        let enqueued = self.submit(task).await?;
        let follower = self.follow_task(&enqueued.id, what);
        drop(pending);
        Ok((enqueued, follower))
    }

    /// Followers registered now, over all tasks (they are removed when dropped).
    pub fn followers(&self) -> usize {
        self.inner.followers.count()
    }

    /// Enqueues a task and wakes this worker's dispatcher.
    ///
    /// # Errors
    /// The store's: [`StoreError::QueueFull`] (with a retry hint) when `max_queued` tasks
    /// wait, [`StoreError::Invalid`] for a malformed task.
    pub async fn submit(&self, task: NewTask) -> Result<Enqueued, StoreError> {
        let enqueued = self.inner.store.enqueue(task).await?;
        self.inner.pool.wake();
        Ok(enqueued)
    }

    /// Cancels a task; a run of it on this worker stops at once (on other workers, at their
    /// next heartbeat or checkpoint). `false` when it had finished already.
    ///
    /// # Errors
    /// The store's ([`StoreError::NotFound`] for an unknown id).
    pub async fn cancel(&self, id: &TaskId) -> Result<bool, StoreError> {
        let cancelled = self.inner.store.cancel(id).await?;
        if cancelled {
            match self.inner.entry(id) {
                // Its run reports the cancellation when it stops.
                Some(entry) => {
                    entry.stop(StopReason::Cancelled);
                }
                None => self
                    .inner
                    .emit_task(id, || ClusterEvent::TaskCancelled { id: id.clone() }),
            }
        }
        Ok(cancelled)
    }

    /// Marks a task this worker runs as waiting for a person's approval (`true`) or running
    /// again (`false`), in the store (`waiting_approval`) and here: an instance whose run
    /// waits is not failed for silence. An approver calls it around asking, with the
    /// request's `run_id` (the task's id).
    ///
    /// # Errors
    /// The store's ([`StoreError::LeaseLost`] when this worker no longer holds the task).
    pub async fn set_waiting(&self, id: &TaskId, waiting: bool) -> Result<(), StoreError> {
        if let Some(entry) = self.inner.entry(id) {
            entry.waiting.store(waiting, Ordering::Release);
            if let Some(instance) = entry.instance.get() {
                self.inner.pool.heartbeat(instance);
            }
        }
        self.inner
            .store
            .set_waiting(id, &self.inner.worker, waiting)
            .await
    }

    /// Whether this worker is stopping its run of `id`, or all its runs: shutdown began, or
    /// the run was cancelled, lost its lease or was taken from a silent instance. An approver
    /// uses it to tell a run that stops (and resumes later) from an agent that gave up.
    pub fn is_stopping(&self, id: &TaskId) -> bool {
        self.inner.stop.is_cancelled()
            || self
                .inner
                .entry(id)
                .is_some_and(|e| e.reason() != StopReason::None)
    }

    /// Tasks this worker holds now (running or waiting for an instance).
    pub fn in_flight(&self) -> usize {
        lock(&self.inner.runs).len()
    }

    /// The system report (the seed's): instances by status, queue, mean load and health,
    /// utilisation, and each agent's scaling recommendation with its reason.
    ///
    /// # Errors
    /// The store's, reading the queue's statistics.
    pub async fn report(&self) -> Result<ClusterReport, StoreError> {
        let stats = self.inner.store.stats().await?;
        let queued = count(&stats.by_status, TaskStatus::Queued);
        let now = Instant::now();
        let scaling = {
            let scalers = lock(&self.inner.scalers);
            self.inner
                .agents
                .iter()
                .filter_map(|spec| {
                    let scaler = scalers.get(&spec.name)?;
                    let obs = self.inner.observe(spec, queued);
                    Some(AgentScaling {
                        agent: spec.name.clone(),
                        min_instances: scaler.policy().min_instances,
                        max_instances: scaler.policy().max_instances,
                        recommendation: scaler.recommend(&obs, now),
                    })
                })
                .collect()
        };
        Ok(ClusterReport::new(
            self.inner.worker.clone(),
            self.inner.pool.instances(),
            &stats,
            scaling,
        ))
    }

    /// Runs `request` at once on a free instance of `agent` on this worker, in the caller's
    /// task, without queueing it: for a caller that waits for the answer (a chat
    /// completion), spared the queue's round trip (enqueue, claim, a task of its own, the
    /// end sent back). When every instance of `agent` is busy it waits up to `wait` for a
    /// slot, unless queued work already waits for one (then it does not wait: the queue
    /// goes first). [`RunNow::NotNow`] gives the request back, with nothing run, when no
    /// slot came free in time, the agent's breaker refuses, or the worker is not running
    /// ([`run`](Self::run)) or stopping: queue the task instead ([`submit`](Self::submit)).
    ///
    /// Not durable: the run is not in the task store, so nothing resumes it if this
    /// process dies (its caller's connection dies with it) and no queue retries a failed
    /// run (the model and tool layers still retry their calls). The instance's load and
    /// health and the agent's breaker count it like a queued run. Dropping the future
    /// stops the run.
    pub async fn run_now(&self, agent: &str, request: RunRequest, wait: Duration) -> RunNow {
        let shared = &*self.inner;
        if !shared.running.load(Ordering::Acquire) || shared.stop.is_cancelled() {
            return RunNow::NotNow(request);
        }
        // Queued work waiting for a slot goes first: then this run joins the queue.
        let wait = if shared.pool.frees_wanted() {
            Duration::ZERO
        } else {
            wait
        };
        let slot = tokio::select! {
            slot = shared.pool.acquire_within(agent, &[], wait) => slot,
            () = shared.stop.cancelled() => return RunNow::NotNow(request),
        };
        let Ok(slot) = slot else {
            return RunNow::NotNow(request);
        };
        let permit = match shared.agent_breakers.get(agent).map(|b| b.try_acquire()) {
            None => None,
            Some(Ok(permit)) => Some(permit),
            Some(Err(_)) => return RunNow::NotNow(request),
        };
        let started = Instant::now();
        let result = AssertUnwindSafe(slot.agent().run_with(request))
            .catch_unwind()
            .await;
        let (result, outcome) = match result {
            Ok(Ok(output)) => (Ok(output), Outcome::Success),
            Ok(Err(error)) => {
                let outcome = outcome_of(&error);
                (Err(RunNowError::Agent(error)), outcome)
            }
            Err(_panic) => {
                tracing::error!(agent, instance = %slot.id(), "a direct run panicked");
                (Err(RunNowError::Panicked), Outcome::Failure)
            }
        };
        if let Some(permit) = permit {
            permit.record(outcome);
        }
        slot.finish(outcome, started.elapsed());
        RunNow::Ran(result.map(Box::new))
    }

    /// Begins a graceful shutdown of [`run`](Self::run) (also before it started: it then
    /// returns at once).
    pub fn shutdown(&self) {
        self.inner.stop.cancel();
    }

    /// Works until `signal` resolves or [`shutdown`](Self::shutdown) is called, then shuts
    /// down gracefully: no more claims, `shutdown_grace_secs` for in-flight runs, the rest
    /// cancelled (their checkpoints stay), leases released, agents unloaded.
    ///
    /// Dropping the returned future before it finishes aborts every run at once and
    /// releases nothing: the leases expire and other workers resume the tasks (this is how
    /// tests crash a worker).
    ///
    /// # Errors
    /// [`ClusterError::AlreadyRunning`] if another `run` of this cluster is going.
    pub async fn run(&self, signal: impl Future<Output = ()>) -> Result<Stopped, ClusterError> {
        let shared = &self.inner;
        if shared.running.swap(true, Ordering::AcqRel) {
            return Err(ClusterError::AlreadyRunning);
        }
        let _running = RunningGuard(shared);
        // Left over from a run that was dropped (crashed): those leases are not ours to renew.
        lock(&shared.runs).clear();
        tracing::info!(worker = %shared.worker, agents = shared.agents.len(), "cluster worker started");
        let maintenance_stop = CancellationToken::new();
        let mut signal = std::pin::pin!(signal);
        let stopper = async {
            tokio::select! {
                () = &mut signal => shared.stop.cancel(),
                () = shared.stop.cancelled() => {}
            }
        };
        let dispatch = async {
            let stopped = Arc::clone(shared).dispatch_loop().await;
            maintenance_stop.cancel();
            stopped
        };
        let (mut stopped, (), ()) = tokio::join!(
            dispatch,
            Arc::clone(shared).maintenance_loop(maintenance_stop.clone()),
            stopper
        );
        match shared.store.release(&shared.worker).await {
            Ok(n) => stopped.released = n,
            Err(e) => tracing::warn!(error = %e, "releasing leases at shutdown failed"),
        }
        for agent in shared.pool.all_agents() {
            agent.shutdown().await;
        }
        shared.emit(|| ClusterEvent::Stopped {
            released: stopped.released,
        });
        tracing::info!(
            worker = %shared.worker,
            interrupted = stopped.interrupted,
            released = stopped.released,
            "cluster worker stopped"
        );
        Ok(stopped)
    }
}

struct RunningGuard<'a>(&'a Shared);

impl Drop for RunningGuard<'_> {
    fn drop(&mut self) {
        self.0.running.store(false, Ordering::Release);
    }
}

/// Keeps a task's run steps on the event channel; see [`Cluster::watch_task`].
#[must_use = "the task is watched only while the guard lives"]
pub struct TaskWatch {
    shared: Arc<Shared>,
    key: Option<TaskId>,
}

impl std::fmt::Debug for TaskWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskWatch")
            .field("task", &self.key)
            .finish()
    }
}

impl Drop for TaskWatch {
    fn drop(&mut self) {
        let mut watched = lock(&self.shared.watched);
        if let Some(n) = watched.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                watched.remove(&self.key);
            }
        }
        drop(watched);
        self.shared.watch_changed.send_modify(|v| *v += 1);
    }
}

/// Keeps runs' steps for a follower being registered; see [`Cluster::submit_followed`].
struct PendingSteps(Arc<Shared>);

impl PendingSteps {
    fn new(shared: &Arc<Shared>) -> Self {
        shared.followers.begin_pending();
        shared.watch_changed.send_modify(|v| *v += 1);
        Self(Arc::clone(shared))
    }
}

impl Drop for PendingSteps {
    fn drop(&mut self) {
        self.0.followers.end_pending();
        self.0.watch_changed.send_modify(|v| *v += 1);
    }
}

/// One task's end, events and steps on this worker; see [`Cluster::follow_task`].
/// Unregistered when dropped.
pub struct TaskFollower {
    shared: Arc<Shared>,
    id: TaskId,
    key: u64,
    events: Option<tokio::sync::mpsc::Receiver<ClusterEvent>>,
    end: Option<tokio::sync::oneshot::Receiver<ClusterEvent>>,
    lagged: Arc<AtomicU64>,
    /// An event received after a loss, sent after the note about the loss.
    stashed: Option<ClusterEvent>,
    /// The end, sent once the events before it are.
    ended: Option<ClusterEvent>,
    done: bool,
}

impl std::fmt::Debug for TaskFollower {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskFollower")
            .field("task", &self.id)
            .finish_non_exhaustive()
    }
}

impl TaskFollower {
    /// The task.
    pub fn id(&self) -> &TaskId {
        &self.id
    }

    /// The next event, loss note or the end; `None` after the end, or when nothing more
    /// can come (the cluster is gone).
    pub async fn next(&mut self) -> Option<Followed> {
        loop {
            if let Some(item) = self.ready() {
                return Some(item);
            }
            if self.done {
                return None;
            }
            let (has_events, has_end) = (self.events.is_some(), self.end.is_some());
            if !has_events && !has_end {
                self.done = true;
                return None;
            }
            let events = self.events.as_mut();
            let end = self.end.as_mut();
            let got = tokio::select! {
                biased;
                event = async { events?.recv().await }, if has_events => Ok(event),
                end = async { end?.await.ok() }, if has_end => Err(end),
            };
            match got {
                Ok(Some(event)) => self.stashed = Some(event),
                Ok(None) => self.events = None,
                Err(end) => {
                    self.end = None;
                    self.ended = end;
                }
            }
        }
    }

    /// What can be sent without waiting: a loss note, an event already queued, or the end
    /// once every event queued before it was sent.
    pub fn ready(&mut self) -> Option<Followed> {
        let lost = self.lagged.swap(0, Ordering::AcqRel);
        if lost > 0 {
            return Some(Followed::Skipped(lost));
        }
        if let Some(event) = self.stashed.take() {
            return Some(Followed::Event(event));
        }
        if let Some(rx) = self.events.as_mut()
            && let Ok(event) = rx.try_recv()
        {
            // A loss before this event is told first.
            let lost = self.lagged.swap(0, Ordering::AcqRel);
            if lost > 0 {
                self.stashed = Some(event);
                return Some(Followed::Skipped(lost));
            }
            return Some(Followed::Event(event));
        }
        if let Some(end) = self.ended.take() {
            self.done = true;
            self.events = None;
            return Some(Followed::End(end));
        }
        None
    }
}

impl Drop for TaskFollower {
    fn drop(&mut self) {
        if self.shared.followers.unregister(&self.id, self.key) {
            self.shared.watch_changed.send_modify(|v| *v += 1);
        }
    }
}

/// Forwards the steps of one run from its agent to the cluster's channel while the task is
/// watched: subscribed to the agent only then, so an unwatched run builds no events.
struct StepForwarder<'a> {
    shared: &'a Shared,
    agent: &'a Agent,
    id: &'a TaskId,
    steps: Option<broadcast::Receiver<pocket_agent::AgentEvent>>,
    changed: tokio::sync::watch::Receiver<u64>,
    /// Some steps of this run reached no follower (it joined late, or none was there): a
    /// follower that comes is told so first.
    gap: bool,
}

impl<'a> StepForwarder<'a> {
    /// Subscribes at once if the task is watched, so the run's first step is not missed.
    fn new(shared: &'a Shared, agent: &'a Agent, id: &'a TaskId) -> Self {
        let changed = shared.watch_changed.subscribe();
        let steps = shared.is_watched(id).then(|| agent.subscribe());
        let gap = steps.is_none();
        Self {
            shared,
            agent,
            id,
            steps,
            changed,
            gap,
        }
    }

    /// Forwards until dropped.
    async fn pump(&mut self) -> std::convert::Infallible {
        loop {
            let Some(steps) = self.steps.as_mut() else {
                if self.changed.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
                if self.shared.is_watched(self.id) {
                    self.steps = Some(self.agent.subscribe());
                    self.gap = true;
                }
                continue;
            };
            tokio::select! {
                step = steps.recv() => match step {
                    Ok(event) => self.forward(event),
                    Err(broadcast::error::RecvError::Lagged(n)) => self.skipped(n),
                    Err(broadcast::error::RecvError::Closed) => std::future::pending::<()>().await,
                },
                changed = self.changed.changed() => {
                    if changed.is_err() || !self.shared.is_watched(self.id) {
                        self.steps = None;
                        self.gap = true;
                    }
                }
            }
        }
    }

    /// Forwards what the agent sent before the run ended.
    fn drain(&mut self) {
        while let Some(steps) = self.steps.as_mut() {
            match steps.try_recv() {
                Ok(event) => self.forward(event),
                Err(broadcast::error::TryRecvError::Lagged(n)) => self.skipped(n),
                Err(_) => break,
            }
        }
    }

    fn forward(&mut self, event: pocket_agent::AgentEvent) {
        if *event.run_id == *self.id.0 {
            self.send(ClusterEvent::Agent {
                id: self.id.clone(),
                event: AgentStep(Arc::new(event)),
            });
        }
    }

    fn skipped(&mut self, n: u64) {
        tracing::debug!(task = %self.id, skipped = n, "forwarding run steps fell behind");
        self.send(ClusterEvent::AgentStepsSkipped {
            id: self.id.clone(),
            skipped: n,
        });
    }

    /// To the event channel while the task is watched there, and to the task's followers.
    fn send(&mut self, event: ClusterEvent) {
        let followers = &self.shared.followers;
        if self.gap {
            let note = ClusterEvent::AgentStepsSkipped {
                id: self.id.clone(),
                skipped: 0,
            };
            self.gap = !followers.deliver_step(self.id, &note);
        }
        if !followers.deliver_step(self.id, &event) {
            self.gap = true;
        }
        if self.shared.is_watched_here(self.id) {
            self.shared.emit(|| event);
        }
    }
}

/// Removes a task from the held set when its run ends, however it ends.
struct Held {
    shared: Arc<Shared>,
    id: TaskId,
}

impl Drop for Held {
    fn drop(&mut self) {
        lock(&self.shared.runs).remove(&self.id);
    }
}

impl Shared {
    pub(crate) fn emit(&self, event: impl FnOnce() -> ClusterEvent) {
        if self.events.receiver_count() > 0 {
            let _ = self.events.send(event());
        }
    }

    fn watch(self: &Arc<Self>, key: Option<TaskId>) -> TaskWatch {
        *lock(&self.watched).entry(key.clone()).or_insert(0) += 1;
        self.watch_changed.send_modify(|v| *v += 1);
        TaskWatch {
            shared: Arc::clone(self),
            key,
        }
    }

    /// Whether the steps of `id`'s runs are wanted: on the event channel or by followers.
    fn is_watched(&self, id: &TaskId) -> bool {
        self.is_watched_here(id) || self.followers.wants_steps(id)
    }

    /// Whether the steps of `id`'s runs go on the event channel ([`Cluster::watch_task`]).
    fn is_watched_here(&self, id: &TaskId) -> bool {
        let watched = lock(&self.watched);
        !watched.is_empty()
            && (watched.contains_key(&None) || watched.contains_key(&Some(id.clone())))
    }

    /// Sends an event of task `id` on the event channel and to the task's followers.
    pub(crate) fn emit_task(&self, id: &TaskId, event: impl FnOnce() -> ClusterEvent) {
        let global = self.events.receiver_count() > 0;
        if !global && self.followers.is_idle() {
            return;
        }
        let event = event();
        self.followers.deliver(id, &event);
        if global {
            let _ = self.events.send(event);
        }
    }

    pub(crate) fn entry(&self, id: &TaskId) -> Option<Arc<RunEntry>> {
        lock(&self.runs).get(id).cloned()
    }

    /// Builds and registers one instance of `spec`.
    pub(crate) fn add_instance(
        &self,
        spec: &AgentSpec,
        reason: &'static str,
    ) -> Result<InstanceId, FactoryError> {
        let agent = (self.factory)(&spec.name)?;
        let id = self.pool.register(
            &spec.name,
            agent,
            spec.capabilities.clone(),
            self.config.instance_concurrency,
        );
        self.emit(|| ClusterEvent::InstanceUp {
            id: id.clone(),
            agent: spec.name.clone(),
            reason,
        });
        Ok(id)
    }

    /// What the autoscaler sees of one agent.
    pub(crate) fn observe(&self, spec: &AgentSpec, queued: u64) -> Observation {
        let load = self.pool.load_of(&spec.name);
        Observation {
            instances: load.up,
            in_flight: load.in_flight,
            capacity: load.capacity,
            queued,
            concurrency: self.config.instance_concurrency,
        }
    }

    /// One autoscaler check per agent, carried out.
    pub(crate) fn autoscale(&self, queued_by_agent: &HashMap<Arc<str>, u64>) {
        if self.stop.is_cancelled() {
            return;
        }
        let now = Instant::now();
        for spec in &self.agents {
            let queued = queued_by_agent.get(&spec.name).copied().unwrap_or(0);
            let obs = self.observe(spec, queued);
            let rec = match lock(&self.scalers).get_mut(&spec.name) {
                Some(scaler) => scaler.decide(&obs, now),
                None => continue,
            };
            match rec.decision {
                ScaleDecision::NoChange => continue,
                ScaleDecision::ScaleUp => {
                    for _ in rec.current..rec.target {
                        if let Err(e) = self.add_instance(spec, "scale_up") {
                            self.build_failed(spec, &e);
                            break;
                        }
                    }
                }
                ScaleDecision::ScaleDown => {
                    for _ in rec.target..rec.current {
                        let Some(id) = self.pool.removal_candidate(&spec.name) else {
                            break;
                        };
                        if self.pool.unregister(&id) {
                            self.emit(|| ClusterEvent::InstanceDown {
                                id,
                                agent: spec.name.clone(),
                                reason: "scaled down".into(),
                            });
                        }
                    }
                }
            }
            tracing::info!(
                agent = %spec.name,
                decision = rec.decision.as_str(),
                from = rec.current,
                to = rec.target,
                reason = %rec.reason,
                "autoscaler acted"
            );
            self.emit(|| ClusterEvent::Scaled {
                agent: spec.name.clone(),
                decision: rec.decision,
                from: rec.current,
                to: rec.target,
                reason: rec.reason.clone(),
            });
        }
    }

    pub(crate) fn build_failed(&self, spec: &AgentSpec, error: &FactoryError) {
        tracing::error!(agent = %spec.name, error = %error, "building an agent instance failed");
        self.emit(|| ClusterEvent::InstanceBuildFailed {
            agent: spec.name.clone(),
            error: error.to_string(),
        });
    }

    /// Instances by status, for the gauges.
    pub(crate) fn export_instances(&self) {
        let Some(metrics) = &self.metrics else { return };
        let mut counts = [0i64; 4];
        for info in self.pool.instances() {
            let at = InstanceStatus::ALL
                .iter()
                .position(|s| *s == info.status)
                .unwrap_or(0);
            counts[at] += 1;
        }
        for (status, n) in InstanceStatus::ALL.iter().zip(counts) {
            metrics.set_instances(status.as_str(), n);
        }
    }

    /// Claims and dispatches until shutdown begins, then drains. Returns the shutdown
    /// numbers (without the released leases, which the caller adds).
    async fn dispatch_loop(self: Arc<Self>) -> Stopped {
        let mut runs: JoinSet<()> = JoinSet::new();
        let mut pending: Vec<Waiting> = Vec::new();
        let mut claim_failures = 0u32;
        loop {
            while runs.try_join_next().is_some() {}
            if self.stop.is_cancelled() {
                break;
            }
            // Tasks waiting for an instance go first, highest priority first.
            if !pending.is_empty() {
                pending.sort_by_key(|(c, _)| std::cmp::Reverse(c.record.priority));
                let waiting = std::mem::take(&mut pending);
                for (claimed, entry) in waiting {
                    pending.extend(self.dispatch(claimed, entry, &mut runs));
                }
            }
            let mut more = false;
            // Freed slots matter only while work may wait for one (see Pool::want_frees).
            self.pool.want_frees(true);
            if pending.is_empty() {
                match self.claim_round(&mut runs, &mut pending).await {
                    Ok(round) => {
                        claim_failures = 0;
                        more = round.full;
                        self.pool
                            .want_frees(round.full || round.starved || !pending.is_empty());
                    }
                    Err(e) => {
                        claim_failures = claim_failures.saturating_add(1);
                        tracing::warn!(error = %e, failures = claim_failures, "claiming tasks failed");
                    }
                }
            }
            if more {
                tokio::task::yield_now().await;
                continue;
            }
            let wait = self.poll * claim_failures.clamp(1, 10);
            tokio::select! {
                biased;
                () = self.stop.cancelled() => break,
                Some(_) = runs.join_next() => {}
                () = self.pool.freed() => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
        self.drain(runs, pending).await
    }

    /// One claim per (agent, capabilities) group with free slots.
    async fn claim_round(
        self: &Arc<Self>,
        runs: &mut JoinSet<()>,
        pending: &mut Vec<Waiting>,
    ) -> Result<ClaimRound, StoreError> {
        let mut round = ClaimRound::default();
        #[cfg(test)]
        self.claim_rounds.fetch_add(1, Ordering::SeqCst);
        for (agent, capabilities, free) in self.pool.claimable() {
            if !self.agents.iter().any(|a| a.name == agent) {
                continue;
            }
            if free == 0 {
                round.starved = true;
                continue;
            }
            let limit = free.min(self.config.claim_batch) as usize;
            let agents = [agent.to_string()];
            let claimed = self
                .store
                .claim(&self.worker, &agents, &capabilities, limit, self.lease)
                .await?;
            round.full |= claimed.len() == limit;
            let now = SystemTime::now();
            for c in claimed {
                let id = c.record.id.clone();
                let entry = Arc::new(RunEntry::new());
                lock(&self.runs).insert(id.clone(), Arc::clone(&entry));
                if let Some(m) = &self.metrics {
                    let since = c.record.run_after.max(c.record.created_at);
                    m.record_overhead(
                        OverheadPhase::QueueWait,
                        now.duration_since(since).unwrap_or_default(),
                    );
                }
                self.emit_task(&id, || ClusterEvent::TaskClaimed {
                    id: id.clone(),
                    agent: agent.clone(),
                    attempt: c.record.attempts,
                    resumed: c.resume.is_some(),
                });
                tracing::debug!(task = %id, agent = %agent, attempt = c.record.attempts, "task claimed");
                pending.extend(self.dispatch(c, entry, runs));
            }
        }
        Ok(round)
    }

    /// Starts a claimed task on an instance, or gives it back when none can take it now.
    fn dispatch(
        self: &Arc<Self>,
        claimed: Claimed,
        entry: Arc<RunEntry>,
        runs: &mut JoinSet<()>,
    ) -> Option<Waiting> {
        let id = &claimed.record.id;
        if entry.reason() != StopReason::None {
            // Stopped while waiting (cancelled or lost): nothing to run.
            lock(&self.runs).remove(id);
            self.emit_stopped(id, entry.reason());
            return None;
        }
        let slot = match self
            .pool
            .acquire(&claimed.record.agent, &claimed.record.capabilities)
        {
            Ok(slot) => slot,
            Err(e) => {
                tracing::debug!(task = %id, reason = %e, "no instance free; the task waits");
                return Some((claimed, entry));
            }
        };
        let _ = entry.instance.set(slot.id().clone());
        self.emit_task(id, || ClusterEvent::TaskStarted {
            id: id.clone(),
            instance: slot.id().clone(),
        });
        let held = Held {
            shared: Arc::clone(self),
            id: id.clone(),
        };
        // Boxed first: the run's future is large, and spawning moves it by value.
        runs.spawn(Box::pin(
            Arc::clone(self).execute(claimed, slot, entry, held),
        ));
        None
    }

    fn emit_stopped(&self, id: &TaskId, reason: StopReason) {
        match reason {
            StopReason::LeaseLost => {
                self.emit_task(id, || ClusterEvent::LeaseLost { id: id.clone() })
            }
            StopReason::Cancelled => {
                self.emit_task(id, || ClusterEvent::TaskCancelled { id: id.clone() });
            }
            StopReason::Shutdown => {
                self.emit_task(id, || ClusterEvent::TaskInterrupted { id: id.clone() });
            }
            StopReason::InstanceFailed | StopReason::None => {}
        }
    }

    /// Runs one task to its end and writes the end to the store.
    async fn execute(
        self: Arc<Self>,
        claimed: Claimed,
        slot: Slot,
        entry: Arc<RunEntry>,
        held: Held,
    ) {
        let _held = held;
        let Claimed { record, resume } = claimed;
        let id = record.id;
        let started = Instant::now();
        let checkpointer = Arc::new(StoreCheckpointer {
            shared: Arc::clone(&self),
            id: id.clone(),
            entry: Arc::clone(&entry),
            beat: slot.beat(),
        });
        let request = RunRequest {
            task: record.task,
            history: history(&record.metadata),
            run_id: Some(id.0.clone()),
            // The run cancels its token when it ends; that is harmless here, where the
            // stop reason (not the token) says why a run was stopped.
            cancel: Some(entry.cancel.clone()),
            checkpointer: Some(checkpointer),
            resume,
            // Nobody follows this run's steps: no text deltas to send, so the model answers
            // in one piece (a follower who comes later gets the answer at the end).
            stream: (!self.is_watched(&id)).then_some(false),
        };
        let breaker = self.agent_breakers.get(slot.agent_name()).cloned();
        // The breaker gates claims; a task claimed while its probe slots are taken runs
        // anyway, uncounted.
        let permit = breaker.as_deref().and_then(|b| b.try_acquire().ok());
        let mut steps = StepForwarder::new(&self, slot.agent(), &id);
        let result = {
            let run = AssertUnwindSafe(slot.agent().run_with(request)).catch_unwind();
            tokio::select! {
                biased;
                result = run => result,
                never = steps.pump() => match never {},
            }
        };
        steps.drain();
        drop(steps);
        let duration = started.elapsed();
        let instance = slot.id().clone();
        let outcome = match (result, entry.reason()) {
            // An answer is kept whatever stopped the run meanwhile (shutdown, a silent
            // instance): the store refuses it if the lease is gone.
            (Ok(Ok(output)), _) => {
                let value = serde_json::to_value(&output).unwrap_or_else(
                    |e| serde_json::json!({ "answer": output.answer, "error": e.to_string() }),
                );
                match self.store.complete(&id, &self.worker, value).await {
                    Ok(()) => {
                        tracing::debug!(task = %id, instance = %instance, "task succeeded");
                        self.emit_task(&id, || ClusterEvent::TaskSucceeded {
                            id: id.clone(),
                            instance: instance.clone(),
                            duration_secs: duration.as_secs_f64(),
                        });
                    }
                    Err(e) => self.write_failed(&id, &e).await,
                }
                Outcome::Success
            }
            (Ok(Err(error)), StopReason::None) => {
                let retry_in = self.retry_delay(&error, record.attempts);
                self.fail(&id, Some(&instance), &error.to_string(), retry_in)
                    .await;
                outcome_of(&error)
            }
            (Err(_panic), StopReason::None) => {
                tracing::error!(task = %id, instance = %instance, "the run panicked");
                let retry_in = Some(self.backoff(record.attempts));
                self.fail(&id, Some(&instance), "the run panicked", retry_in)
                    .await;
                Outcome::Failure
            }
            (_, StopReason::InstanceFailed) => {
                // Taken back from a silent instance: queued again at once, resuming from
                // its last checkpoint.
                let error = format!("instance `{instance}` stopped responding; run taken back");
                self.fail(&id, Some(&instance), &error, Some(Duration::ZERO))
                    .await;
                Outcome::Ignored
            }
            (_, other) => {
                tracing::info!(task = %id, instance = %instance, reason = ?other, "run stopped");
                self.emit_stopped(&id, other);
                Outcome::Ignored
            }
        };
        if let Some(permit) = permit {
            permit.record(outcome);
        }
        slot.finish(outcome, duration);
    }

    /// Fails an attempt in the store and reports it.
    async fn fail(
        &self,
        id: &TaskId,
        instance: Option<&InstanceId>,
        error: &str,
        retry_in: Option<Duration>,
    ) {
        match self.store.fail(id, &self.worker, error, retry_in).await {
            Ok(outcome) => {
                let retry_in = match outcome {
                    FailOutcome::Retrying { .. } => {
                        Some(retry_in.unwrap_or_default().as_secs_f64())
                    }
                    FailOutcome::DeadLetter => None,
                };
                tracing::info!(task = %id, error, retry_in_secs = ?retry_in, "task attempt failed");
                self.emit_task(id, || ClusterEvent::TaskFailed {
                    id: id.clone(),
                    instance: instance.cloned(),
                    error: error.to_owned(),
                    retry_in_secs: retry_in,
                });
            }
            Err(e) => self.write_failed(id, &e).await,
        }
    }

    /// A final write was refused: the lease is gone (cancelled, or taken by another
    /// worker), or the store failed (the lease then runs out and the task is retried).
    async fn write_failed(&self, id: &TaskId, error: &StoreError) {
        match error {
            StoreError::LeaseLost { .. } => {
                let reason = self.lost_reason(id).await;
                tracing::warn!(task = %id, reason = ?reason, "lease lost before the task was finished");
                self.emit_stopped(id, reason);
            }
            e => {
                tracing::error!(task = %id, error = %e, "writing the task's end failed; its lease will expire")
            }
        }
    }

    /// Whether a task this worker no longer holds was cancelled or taken over.
    pub(crate) async fn lost_reason(&self, id: &TaskId) -> StopReason {
        match self.store.get(id).await {
            Ok(Some(task)) if task.status == TaskStatus::Cancelled => StopReason::Cancelled,
            _ => StopReason::LeaseLost,
        }
    }

    /// The delay before the next attempt, or `None` for a dead letter.
    fn retry_delay(&self, error: &AgentError, attempt: u32) -> Option<Duration> {
        let c = error.classify();
        c.retryable
            .then(|| c.retry_after.unwrap_or_else(|| self.backoff(attempt)))
    }

    /// `retry_base × 2^(attempt−1)`, at most `retry_max`, with jitter (half to full).
    fn backoff(&self, attempt: u32) -> Duration {
        let exp = attempt.saturating_sub(1).min(30);
        let full = self
            .retry_base
            .saturating_mul(1u32 << exp)
            .min(self.retry_max);
        full.mul_f64(0.5 + fastrand::f64() * 0.5)
    }

    /// Stops claiming, lets runs finish within the grace period, cancels the rest.
    async fn drain(&self, mut runs: JoinSet<()>, pending: Vec<Waiting>) -> Stopped {
        for (claimed, _) in &pending {
            lock(&self.runs).remove(&claimed.record.id);
        }
        let in_flight = runs.len();
        tracing::info!(
            in_flight,
            grace_secs = self.grace.as_secs_f64(),
            "shutting down: no more claims"
        );
        self.emit(|| ClusterEvent::ShuttingDown { in_flight });
        let deadline = tokio::time::sleep(self.grace);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                () = &mut deadline => break,
                next = runs.join_next() => if next.is_none() { break },
            }
        }
        let interrupted = runs.len();
        if interrupted > 0 {
            tracing::warn!(
                interrupted,
                "grace period over; cancelling the runs still going"
            );
            let entries: Vec<Arc<RunEntry>> = lock(&self.runs).values().cloned().collect();
            for entry in entries {
                entry.stop(StopReason::Shutdown);
            }
            while runs.join_next().await.is_some() {}
        }
        Stopped {
            in_flight,
            interrupted,
            released: 0,
        }
    }
}

/// Saves a run's checkpoints and journal in the store under this worker's lease; a lost
/// lease stops the run.
struct StoreCheckpointer {
    shared: Arc<Shared>,
    id: TaskId,
    entry: Arc<RunEntry>,
    beat: Beat,
}

impl StoreCheckpointer {
    async fn refused(&self, error: StoreError) -> CheckpointError {
        if let StoreError::LeaseLost { .. } = error {
            let reason = self.shared.lost_reason(&self.id).await;
            if self.entry.stop(reason) {
                tracing::warn!(task = %self.id, instance = %self.beat.id(), reason = ?reason, "lease lost; stopping the run");
            }
        }
        CheckpointError(error.to_string())
    }
}

impl Checkpointer for StoreCheckpointer {
    fn checkpoint<'a>(
        &'a self,
        _run_id: &'a str,
        state: CheckpointRef<'a>,
    ) -> BoxFuture<'a, Result<(), CheckpointError>> {
        Box::pin(async move {
            self.beat.touch();
            match self
                .shared
                .store
                .checkpoint(&self.id, &self.shared.worker, state)
                .await
            {
                Ok(()) => Ok(()),
                Err(e) => Err(self.refused(e).await),
            }
        })
    }

    fn journal<'a>(
        &'a self,
        _run_id: &'a str,
        entry: &'a JournalEntry,
    ) -> BoxFuture<'a, Result<(), CheckpointError>> {
        Box::pin(async move {
            self.beat.touch();
            match self
                .shared
                .store
                .journal(&self.id, &self.shared.worker, entry)
                .await
            {
                Ok(()) => Ok(()),
                Err(e) => Err(self.refused(e).await),
            }
        })
    }
}

/// Conversation history a caller put in the task's metadata (`{"history": [messages]}`).
fn history(metadata: &serde_json::Value) -> Vec<Message> {
    match metadata.get("history") {
        Some(value) => serde_json::from_value(value.clone()).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "ignoring the task's metadata.history: not a list of messages");
            Vec::new()
        }),
        None => Vec::new(),
    }
}

/// What a failed run says about the instance and agent that ran it: failures of the model
/// or the run's machinery count; failures that the task itself caused (an iteration limit,
/// a plugin's stop, an interrupted call, invalid input) and cancellations do not.
fn outcome_of(error: &AgentError) -> Outcome {
    match error.kind() {
        AgentErrorKind::Cancelled
        | AgentErrorKind::MaxIterations { .. }
        | AgentErrorKind::Stopped { .. }
        | AgentErrorKind::Interrupted { .. }
        | AgentErrorKind::Checkpoint { .. } => Outcome::Ignored,
        _ if error.classify().kind == ErrorKind::Validation => Outcome::Ignored,
        _ => Outcome::Failure,
    }
}

pub(crate) fn count(by_status: &[(TaskStatus, u64)], status: TaskStatus) -> u64 {
    by_status
        .iter()
        .find(|(s, _)| *s == status)
        .map_or(0, |(_, n)| *n)
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use pocket_agent::EventKind;
    use pocket_models::{SimConfig, SimModel};

    use super::*;
    use crate::store::{MemoryStore, StoreOptions};

    fn cluster() -> Cluster {
        cluster_with(ClusterConfig {
            poll_interval_ms: 5,
            ..ClusterConfig::default()
        })
    }

    fn cluster_with(config: ClusterConfig) -> Cluster {
        let store: Arc<dyn TaskStore> = Arc::new(MemoryStore::new(StoreOptions::new()));
        Cluster::builder(store)
            .config(config)
            .agent("default")
            .factory(|name| {
                Ok(Agent::builder(SimModel::new(SimConfig::default()))
                    .name(name)
                    .streaming(true)
                    .build()?)
            })
            .build()
            .unwrap()
    }

    /// Runs one task to its end; returns every cluster event sent meanwhile.
    async fn run_one(cluster: &Cluster, watch: bool) -> (TaskId, Vec<ClusterEvent>) {
        let mut events = cluster.subscribe();
        let id = cluster
            .submit(NewTask::new("default", "say something"))
            .await
            .unwrap()
            .id;
        let _watching = watch.then(|| cluster.watch_task(&id));
        let store = Arc::clone(cluster.store());
        let done = {
            let id = id.clone();
            async move {
                while !store
                    .get(&id)
                    .await
                    .unwrap()
                    .is_some_and(|t| t.status.is_terminal())
                {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
        };
        cluster.run(done).await.unwrap();
        let mut seen = Vec::new();
        while let Ok(e) = events.try_recv() {
            seen.push(e);
        }
        (id, seen)
    }

    #[tokio::test]
    async fn an_unwatched_run_sends_no_steps_and_a_watched_one_sends_them_all() {
        let cluster = cluster();
        let (_, unwatched) = run_one(&cluster, false).await;
        assert!(
            unwatched
                .iter()
                .any(|e| matches!(e, ClusterEvent::TaskSucceeded { .. })),
            "{unwatched:?}"
        );
        assert!(
            !unwatched
                .iter()
                .any(|e| matches!(e, ClusterEvent::Agent { .. })),
            "{unwatched:?}"
        );

        // A cluster that shut down stays down: a fresh one for the second run.
        let cluster = super::tests::cluster();
        let (id, watched) = run_one(&cluster, true).await;
        assert!(
            watched
                .iter()
                .any(|e| matches!(e, ClusterEvent::TaskSucceeded { .. })),
            "{watched:?}"
        );
        let steps: Vec<&str> = watched
            .iter()
            .filter_map(|e| match e {
                ClusterEvent::Agent { id: task, event } => {
                    assert_eq!(task, &id);
                    assert_eq!(&*event.run_id, id.0.as_str());
                    Some(event.kind.name())
                }
                _ => None,
            })
            .collect();
        assert_eq!(steps.first(), Some(&"run_started"));
        assert_eq!(steps.last(), Some(&"run_finished"), "drained after the run");
        let text: String = watched
            .iter()
            .filter_map(|e| match e {
                ClusterEvent::Agent { event, .. } => match &event.kind {
                    EventKind::TextDelta { text } => Some(text.as_str()),
                    _ => None,
                },
                _ => None,
            })
            .collect();
        assert_eq!(text, "I have no tool for this. You asked: say something");
        // The guard is gone: nothing is watched any more.
        assert!(!cluster.inner.is_watched(&id));
    }

    #[tokio::test]
    async fn a_follower_gets_only_its_task_and_a_note_when_it_fell_behind() {
        let cluster = cluster();
        let id = TaskId("mine".into());
        let other = TaskId("other".into());
        let mut follower = cluster.follow_task(&id, Following::Events);
        let mut end_only = cluster.follow_task(&id, Following::End);
        let extra = 5;
        for n in 0..crate::event::FOLLOW_CAPACITY + extra {
            cluster.inner.emit_task(&id, || ClusterEvent::TaskClaimed {
                id: id.clone(),
                agent: Arc::from("default"),
                attempt: u32::try_from(n).unwrap(),
                resumed: false,
            });
            cluster
                .inner
                .emit_task(&other, || ClusterEvent::LeaseLost { id: other.clone() });
        }
        let done = ClusterEvent::TaskCancelled { id: id.clone() };
        cluster.inner.emit_task(&id, || done.clone());
        assert_eq!(follower.next().await, Some(Followed::Skipped(extra as u64)));
        for n in 0..crate::event::FOLLOW_CAPACITY {
            match follower.next().await {
                Some(Followed::Event(ClusterEvent::TaskClaimed { id: t, attempt, .. })) => {
                    assert_eq!(t, id);
                    assert_eq!(attempt as usize, n);
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(follower.next().await, Some(Followed::End(done.clone())));
        assert_eq!(follower.next().await, None);
        // The end-only follower was woken once, by the end.
        assert_eq!(end_only.next().await, Some(Followed::End(done)));
        assert_eq!(cluster.followers(), 2);
        drop(follower);
        drop(end_only);
        assert_eq!(cluster.followers(), 0);
    }

    /// One instance of one slot, and a poll so long that only a wake-up can start a run.
    fn one_slot_cluster() -> Cluster {
        cluster_with(ClusterConfig {
            poll_interval_ms: 600_000,
            min_instances: 1,
            max_instances: 1,
            instance_concurrency: 1,
            ..ClusterConfig::default()
        })
    }

    /// Waits (at most 10 s) until the dispatcher's wish for freed slots is `wanted`.
    async fn frees_wanted(cluster: &Cluster, wanted: bool) {
        let pool = &cluster.inner.pool;
        tokio::time::timeout(Duration::from_secs(10), async {
            while pool.frees_wanted() != wanted {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("the dispatcher never set frees_wanted = {wanted}"));
    }

    /// Runs `cluster` on a task until the sender is used, once its dispatcher is idle.
    async fn start(
        cluster: &Cluster,
    ) -> (
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<Result<Stopped, ClusterError>>,
    ) {
        let runner = cluster.clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let running = tokio::spawn(async move {
            runner
                .run(async {
                    let _ = stopped.await;
                })
                .await
        });
        frees_wanted(cluster, false).await;
        (stop, running)
    }

    #[tokio::test]
    async fn a_direct_run_does_not_wake_an_idle_dispatcher() {
        let cluster = one_slot_cluster();
        // The first claim round found the queue empty with a slot free: nothing can wait
        // for a slot, so frees need not wake the dispatcher.
        let (stop, running) = start(&cluster).await;
        let rounds = cluster.inner.claim_rounds.load(Ordering::SeqCst);
        for n in 0..3 {
            match cluster
                .run_now(
                    "default",
                    RunRequest::new(format!("direct {n}")),
                    Duration::ZERO,
                )
                .await
            {
                RunNow::Ran(Ok(output)) => assert!(output.answer.contains("direct"), "{output:?}"),
                other => panic!("{other:?}"),
            }
        }
        assert!(!cluster.inner.pool.frees_wanted());
        // Give a wrongly woken dispatcher the time to claim.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(
            cluster.inner.claim_rounds.load(Ordering::SeqCst),
            rounds,
            "a direct run's end must not make the dispatcher ask the store for work"
        );
        stop.send(()).unwrap();
        running.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn a_task_queued_while_every_slot_is_busy_starts_when_one_frees() {
        let cluster = one_slot_cluster();
        let store = Arc::clone(cluster.store());
        let (stop, running) = start(&cluster).await;
        // The only slot is taken (as by a long direct run), then a task comes.
        let held = cluster.inner.pool.acquire("default", &[]).unwrap();
        let id = cluster
            .submit(NewTask::new("default", "queued"))
            .await
            .unwrap()
            .id;
        // The submit woke the dispatcher; no slot was free, so it now waits for one.
        frees_wanted(&cluster, true).await;
        assert_eq!(
            store.get(&id).await.unwrap().unwrap().status,
            TaskStatus::Queued
        );
        drop(held);
        // The poll is 10 minutes away: only the freed slot can start the task.
        tokio::time::timeout(Duration::from_secs(20), async {
            while !store
                .get(&id)
                .await
                .unwrap()
                .is_some_and(|t| t.status == TaskStatus::Succeeded)
            {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the task did not run after its slot was freed");
        stop.send(()).unwrap();
        running.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn a_direct_run_waits_for_a_busy_slot_unless_queued_work_waits_first() {
        let cluster = one_slot_cluster();
        let (stop, running) = start(&cluster).await;
        let pool = &cluster.inner.pool;

        // The only slot is busy: without a wait, the request comes back to be queued.
        let held = pool.acquire("default", &[]).unwrap();
        let request = RunRequest::new("now");
        let back = cluster.run_now("default", request, Duration::ZERO).await;
        assert!(matches!(back, RunNow::NotNow(_)), "{back:?}");

        // With a wait, it runs once the slot is freed.
        let freer = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            drop(held);
        });
        let ran = cluster
            .run_now(
                "default",
                RunRequest::new("waited"),
                Duration::from_secs(600),
            )
            .await;
        assert!(
            matches!(&ran, RunNow::Ran(Ok(output)) if output.answer.contains("waited")),
            "{ran:?}"
        );
        freer.await.unwrap();

        // A queued task waits for the slot: a direct run does not wait, it joins the queue.
        let held = pool.acquire("default", &[]).unwrap();
        cluster
            .submit(NewTask::new("default", "queued"))
            .await
            .unwrap();
        frees_wanted(&cluster, true).await;
        let back = cluster
            .run_now(
                "default",
                RunRequest::new("later"),
                Duration::from_secs(600),
            )
            .await;
        assert!(matches!(back, RunNow::NotNow(_)), "{back:?}");
        drop(held);
        stop.send(()).unwrap();
        running.await.unwrap().unwrap();
    }
}
