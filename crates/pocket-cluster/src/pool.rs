//! The pool of agent instances and the dispatcher's choice among them.
//!
//! An instance is one [`Agent`] built for an agent name, with capabilities, a concurrency
//! limit, a health score, a moving average of run durations and a last heartbeat. The pool
//! hands out [`Slot`]s: the right to run one task on one instance. A slot frees itself when
//! dropped, so a panicking or aborted run never leaks capacity.
//!
//! # Eligibility, then selection
//!
//! For a task of agent `A` needing capabilities `C`, an instance is eligible when it serves
//! `A`, has every capability in `C`, is not failed, has a free slot, and its agent's circuit
//! breaker (`agent:A`, when the pool has a [`ResilienceHub`]) is not open. The eligible are
//! tried in tiers, each only when no instance of the tiers before has room:
//!
//! 1. model breaker closed, health at least [`HEALTHY`];
//! 2. model breaker closed, degraded (health at least [`FAILED_BELOW`]);
//! 3. and 4. the same with the model's breaker (`model:NAME`) open.
//!
//! So work goes around an open model breaker whenever another instance can take it, yet an
//! agent whose every instance shares that model keeps working: its model may be a
//! [`Fallback`](pocket_resilience::Fallback) (known by its primary route's name) that serves
//! from another route, or a retry layer waits for the probe. An open *agent* breaker, which
//! counts whole runs, keeps all work away. A degraded instance is not starved of the
//! successes that heal it. Within a tier the [`Selection`] policy picks one
//! ([`select::pick`](crate::select::pick())).
//!
//! Breakers are looked up in the hub when an instance registers: layers must have made them
//! by then (the factory builds the model layers; the cluster makes the agent breakers first).
//!
//! # Health, load and heartbeats (the seed's rules)
//!
//! Health starts at 100; a success adds 5, a failure takes 10 (outcomes that say nothing
//! about the instance, such as a cancelled run, change nothing); below [`FAILED_BELOW`] the
//! instance is marked failed. Load is in-flight runs over capacity. Every finished run feeds
//! an exponential moving average of durations (weight 0.2). An instance's heartbeat is any
//! sign of progress: a slot taken, a checkpoint or journal entry written, a run finished;
//! [`Pool::check`] marks failed an instance with runs in flight that has been silent for the
//! timeout, and counts idle instances as alive.

use std::collections::HashSet;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::Duration;

use pocket_agent::Agent;
use pocket_resilience::{Breaker, BreakerState, Component, Outcome, ResilienceHub};
use serde::Serialize;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::config::Selection;
use crate::select::{self, Candidate};

/// Health at or above which an instance is preferred.
pub const HEALTHY: u32 = 50;
/// Health below which an instance is marked failed.
pub const FAILED_BELOW: u32 = 30;
const HEALTH_MAX: u32 = 100;
const SUCCESS_GAIN: u32 = 5;
const FAILURE_LOSS: u32 = 10;
/// Weight of the newest duration in the moving average.
const EWMA_ALPHA: f64 = 0.2;

/// An instance's id: the agent's name and a counter, such as `support-3`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct InstanceId(pub Arc<str>);

impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An instance's status, the seed's four.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum InstanceStatus {
    /// Healthy and idle.
    Active,
    /// Running tasks, with free slots.
    Busy,
    /// Every slot taken.
    Overloaded,
    /// Silent past the timeout or unhealthy; takes no work and is being rebuilt.
    Failed,
}

impl InstanceStatus {
    /// Every status, in report order.
    pub const ALL: [Self; 4] = [Self::Active, Self::Busy, Self::Overloaded, Self::Failed];

    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Busy => "busy",
            Self::Overloaded => "overloaded",
            Self::Failed => "failed",
        }
    }
}

/// Why an instance was marked failed.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum FailReason {
    /// It had runs in flight and showed no progress for this long.
    Silent {
        /// Seconds since its last heartbeat.
        silent_secs: f64,
    },
    /// Its health fell below [`FAILED_BELOW`].
    Unhealthy {
        /// Its health.
        health: u32,
    },
    /// Marked failed by hand ([`Pool::mark_failed`]).
    Marked {
        /// Why.
        message: String,
    },
}

impl fmt::Display for FailReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Silent { silent_secs } => {
                write!(f, "no progress for {silent_secs:.0}s with runs in flight")
            }
            Self::Unhealthy { health } => write!(f, "health fell to {health}"),
            Self::Marked { message } => f.write_str(message),
        }
    }
}

/// Why no instance could take a task.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Unavailable {
    /// No instance serves the agent.
    #[error("no instance serves agent `{agent}`")]
    NoInstance {
        /// The agent.
        agent: String,
    },
    /// No instance of the agent has every capability asked for.
    #[error("no instance of agent `{agent}` has the capabilities {capabilities:?}")]
    NoCapability {
        /// The agent.
        agent: String,
        /// The capabilities asked for.
        capabilities: Vec<String>,
    },
    /// Every instance that could take it is failed.
    #[error("every instance of agent `{agent}` is failed")]
    AllFailed {
        /// The agent.
        agent: String,
    },
    /// The agent's circuit breaker is open.
    #[error("the circuit breaker of agent `{agent}` is open")]
    BreakerOpen {
        /// The agent.
        agent: String,
    },
    /// Every fitting instance is at its concurrency limit.
    #[error("every instance of agent `{agent}` is at its concurrency limit")]
    AtCapacity {
        /// The agent.
        agent: String,
    },
}

/// One instance as reports show it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InstanceInfo {
    /// Id.
    pub id: InstanceId,
    /// The agent it serves.
    pub agent: Arc<str>,
    /// The agent's model.
    pub model: Arc<str>,
    /// Status.
    pub status: InstanceStatus,
    /// Why it failed, when it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<FailReason>,
    /// Load in percent (in-flight over capacity).
    pub load: f64,
    /// Health, 0 to 100.
    pub health: u32,
    /// Runs in flight.
    pub in_flight: u32,
    /// Runs it takes at once.
    pub capacity: u32,
    /// Capabilities.
    pub capabilities: Vec<String>,
    /// Seconds since its last heartbeat.
    pub last_heartbeat_secs_ago: f64,
    /// Moving average of run durations, in seconds (0 before the first run).
    pub mean_duration_secs: f64,
    /// Runs that succeeded on it.
    pub succeeded: u64,
    /// Runs that failed on it.
    pub failed: u64,
    /// Whether an open circuit breaker keeps work away from it now.
    pub breaker_open: bool,
}

impl InstanceInfo {
    /// Whether it can take work (not failed).
    pub fn is_up(&self) -> bool {
        self.status != InstanceStatus::Failed
    }
}

/// An agent's instances in numbers, for the autoscaler and reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct AgentLoad {
    /// Instances that are not failed.
    pub up: u32,
    /// Failed instances (being rebuilt).
    pub failed: u32,
    /// Runs in flight on instances that are up.
    pub in_flight: u32,
    /// Slots of instances that are up.
    pub capacity: u32,
}

impl AgentLoad {
    /// Busy slots over all slots (0 without capacity).
    pub fn utilisation(&self) -> f64 {
        if self.capacity == 0 {
            0.0
        } else {
            f64::from(self.in_flight) / f64::from(self.capacity)
        }
    }
}

struct Stats {
    mean_duration: Option<f64>,
    succeeded: u64,
    failed: u64,
    failure: Option<FailReason>,
}

pub(crate) struct Instance {
    id: InstanceId,
    agent_name: Arc<str>,
    agent: Agent,
    capabilities: Vec<String>,
    capacity: u32,
    in_flight: AtomicU32,
    health: AtomicU32,
    failed: AtomicBool,
    /// Milliseconds since the pool's epoch.
    last_beat: AtomicU64,
    agent_breaker: Option<Arc<Breaker>>,
    model_breaker: Option<Arc<Breaker>>,
    stats: Mutex<Stats>,
    epoch: Instant,
}

impl Instance {
    fn has(&self, capabilities: &[String]) -> bool {
        capabilities.iter().all(|c| self.capabilities.contains(c))
    }

    fn candidate(&self) -> Candidate {
        Candidate {
            in_flight: self.in_flight.load(Ordering::Relaxed),
            capacity: self.capacity,
            health: self.health.load(Ordering::Relaxed),
        }
    }

    fn is_failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    /// Whether its agent's breaker keeps all work away now.
    fn agent_blocked(&self) -> bool {
        self.agent_breaker.as_deref().is_some_and(blocks)
    }

    /// Whether its model's breaker is open now (work goes elsewhere if it can).
    fn model_blocked(&self) -> bool {
        self.model_breaker.as_deref().is_some_and(blocks)
    }

    fn breaker_open(&self) -> bool {
        self.agent_blocked() || self.model_blocked()
    }

    pub(crate) fn touch(&self) {
        self.last_beat
            .store(ms_since(self.epoch), Ordering::Relaxed);
    }

    fn silent_for(&self, now: Instant) -> Duration {
        let last = Duration::from_millis(self.last_beat.load(Ordering::Relaxed));
        now.saturating_duration_since(self.epoch + last)
    }

    /// Takes one slot if one is free.
    fn try_take(&self) -> bool {
        self.in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.capacity).then_some(n + 1)
            })
            .is_ok()
    }

    fn fail(&self, reason: FailReason) -> bool {
        let first = !self.failed.swap(true, Ordering::AcqRel);
        if first {
            lock(&self.stats).failure = Some(reason);
        }
        first
    }

    fn status(&self) -> InstanceStatus {
        let in_flight = self.in_flight.load(Ordering::Relaxed);
        if self.is_failed() {
            InstanceStatus::Failed
        } else if in_flight == 0 {
            InstanceStatus::Active
        } else if in_flight >= self.capacity {
            InstanceStatus::Overloaded
        } else {
            InstanceStatus::Busy
        }
    }

    fn info(&self, now: Instant) -> InstanceInfo {
        let c = self.candidate();
        let stats = lock(&self.stats);
        InstanceInfo {
            id: self.id.clone(),
            agent: self.agent_name.clone(),
            model: Arc::from(self.agent.model_name()),
            status: self.status(),
            failure: stats.failure.clone(),
            load: c.load(),
            health: c.health,
            in_flight: c.in_flight,
            capacity: c.capacity,
            capabilities: self.capabilities.clone(),
            last_heartbeat_secs_ago: self.silent_for(now).as_secs_f64(),
            mean_duration_secs: stats.mean_duration.unwrap_or(0.0),
            succeeded: stats.succeeded,
            failed: stats.failed,
            breaker_open: self.breaker_open(),
        }
    }
}

/// Whether a breaker keeps work away now: open, with time left before its next probe. (An
/// open breaker whose cool-down has passed lets the next call through as a probe.)
fn blocks(breaker: &Breaker) -> bool {
    breaker.state() == BreakerState::Open
        && breaker
            .snapshot()
            .retry_in_secs
            .is_some_and(|secs| secs > 0.0)
}

fn ms_since(epoch: Instant) -> u64 {
    u64::try_from(Instant::now().saturating_duration_since(epoch).as_millis()).unwrap_or(u64::MAX)
}

/// The pool: a cheap-clone handle over the instances of every agent a worker serves.
///
/// ```
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
/// use pocket_cluster::{InstanceStatus, Pool, Selection};
///
/// let pool = Pool::new(Selection::P2c);
/// let agent = Agent::builder(Echo).name("support").build()?;
/// let id = pool.register("support", agent, vec!["email".into()], 2);
///
/// let slot = pool.acquire("support", &["email".into()])?;
/// assert_eq!(slot.id(), &id);
/// let out = slot.agent().run("hello").await?;
/// slot.finish(pocket_resilience::Outcome::Success, std::time::Duration::from_millis(5));
/// assert_eq!(out.answer, "hi");
/// assert_eq!(pool.instances()[0].status, InstanceStatus::Active);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Pool {
    inner: Arc<PoolInner>,
}

struct PoolInner {
    selection: Selection,
    instances: RwLock<Arc<[Arc<Instance>]>>,
    rng: Mutex<fastrand::Rng>,
    hub: Option<ResilienceHub>,
    next_id: AtomicU64,
    freed: Notify,
    /// Whether a freed slot wakes [`Pool::freed`] (see [`Pool::want_frees`]).
    frees_wanted: AtomicBool,
    /// Callers of [`Pool::acquire_within`] waiting for a slot, and their wake-up.
    slot_waiters: AtomicUsize,
    slot_freed: Notify,
    epoch: Instant,
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("selection", &self.inner.selection)
            .field("instances", &self.snapshot().len())
            .finish_non_exhaustive()
    }
}

impl Pool {
    /// An empty pool choosing with `selection`, a randomly seeded generator, and no breakers.
    pub fn new(selection: Selection) -> Self {
        Self::build(selection, fastrand::Rng::new(), None)
    }

    /// An empty pool whose random choices come from `seed` (for reproducible tests), and
    /// that keeps work away from instances whose breakers in `hub` are open, if given (see
    /// the [module docs](self)).
    pub fn with_options(
        selection: Selection,
        seed: Option<u64>,
        hub: Option<ResilienceHub>,
    ) -> Self {
        let rng = seed.map_or_else(fastrand::Rng::new, fastrand::Rng::with_seed);
        Self::build(selection, rng, hub)
    }

    fn build(selection: Selection, rng: fastrand::Rng, hub: Option<ResilienceHub>) -> Self {
        Self {
            inner: Arc::new(PoolInner {
                selection,
                instances: RwLock::new(Arc::from(Vec::new())),
                rng: Mutex::new(rng),
                hub,
                next_id: AtomicU64::new(1),
                freed: Notify::new(),
                frees_wanted: AtomicBool::new(true),
                slot_waiters: AtomicUsize::new(0),
                slot_freed: Notify::new(),
                epoch: Instant::now(),
            }),
        }
    }

    /// The selection policy.
    pub fn selection(&self) -> Selection {
        self.inner.selection
    }

    fn snapshot(&self) -> Arc<[Arc<Instance>]> {
        self.inner
            .instances
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn update(&self, f: impl FnOnce(&mut Vec<Arc<Instance>>)) {
        let mut guard = self
            .inner
            .instances
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let mut list = guard.to_vec();
        f(&mut list);
        *guard = Arc::from(list);
    }

    /// Adds an instance of `agent_name` running `agent`, with these capabilities and
    /// `capacity` concurrent runs (at least 1); returns its id. With a hub, the instance is
    /// kept away from work while the breaker of `agent:<agent_name>` or of
    /// `model:<its model>` is open.
    pub fn register(
        &self,
        agent_name: &str,
        agent: Agent,
        capabilities: Vec<String>,
        capacity: u32,
    ) -> InstanceId {
        let n = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let id = InstanceId(Arc::from(format!("{agent_name}-{n}")));
        let hub = self.inner.hub.as_ref();
        let agent_breaker = hub.and_then(|h| h.breaker(Component::Agent, agent_name));
        let model_breaker = hub.and_then(|h| h.breaker(Component::Model, agent.model_name()));
        let instance = Arc::new(Instance {
            id: id.clone(),
            agent_name: Arc::from(agent_name),
            agent,
            capabilities,
            capacity: capacity.max(1),
            in_flight: AtomicU32::new(0),
            health: AtomicU32::new(HEALTH_MAX),
            failed: AtomicBool::new(false),
            last_beat: AtomicU64::new(0),
            agent_breaker,
            model_breaker,
            stats: Mutex::new(Stats {
                mean_duration: None,
                succeeded: 0,
                failed: 0,
                failure: None,
            }),
            epoch: self.inner.epoch,
        });
        instance.touch();
        tracing::info!(instance = %id, agent = agent_name, capacity, "instance registered");
        self.update(|list| list.push(instance));
        self.inner.freed.notify_one();
        id
    }

    /// Removes an instance; its runs in flight go on to their end. `false` if unknown.
    pub fn unregister(&self, id: &InstanceId) -> bool {
        let mut found = false;
        self.update(|list| {
            let before = list.len();
            list.retain(|i| &i.id != id);
            found = list.len() != before;
        });
        if found {
            tracing::info!(instance = %id, "instance unregistered");
        }
        found
    }

    /// Takes a slot on the instance the policy picks among the eligible ones for a task of
    /// `agent` needing `capabilities` (see the [module docs](self)).
    ///
    /// # Errors
    /// [`Unavailable`] saying why no instance could take it.
    pub fn acquire(&self, agent: &str, capabilities: &[String]) -> Result<Slot, Unavailable> {
        let instances = self.snapshot();
        let mut fitting = Vec::new();
        let mut seen = (false, false, false, false); // agent, capabilities, up, breakers closed
        for inst in instances.iter() {
            if &*inst.agent_name != agent {
                continue;
            }
            seen.0 = true;
            if !inst.has(capabilities) {
                continue;
            }
            seen.1 = true;
            if inst.is_failed() {
                continue;
            }
            seen.2 = true;
            if inst.agent_blocked() {
                continue;
            }
            seen.3 = true;
            fitting.push((inst, inst.model_blocked()));
        }
        // The tiers of the module docs: model breaker closed first, healthy first.
        for (model_open, healthy) in [(false, true), (false, false), (true, true), (true, false)] {
            let mut pool: Vec<&Arc<Instance>> = fitting
                .iter()
                .filter(|(i, open)| {
                    let c = i.candidate();
                    *open == model_open && (c.health >= HEALTHY) == healthy && c.free() > 0
                })
                .map(|(i, _)| *i)
                .collect();
            while !pool.is_empty() {
                let cands: Vec<Candidate> = pool.iter().map(|i| i.candidate()).collect();
                let pick = {
                    let mut rng = lock(&self.inner.rng);
                    select::pick(self.inner.selection, &cands, &mut rng)
                };
                let Some(at) = pick else { break };
                let inst = pool.swap_remove(at);
                if inst.try_take() {
                    inst.touch();
                    return Ok(Slot {
                        instance: Arc::clone(inst),
                        pool: Arc::clone(&self.inner),
                        done: false,
                    });
                }
            }
        }
        let agent = agent.to_owned();
        Err(match seen {
            (false, ..) => Unavailable::NoInstance { agent },
            (true, false, ..) => Unavailable::NoCapability {
                agent,
                capabilities: capabilities.to_vec(),
            },
            (true, true, false, _) => Unavailable::AllFailed { agent },
            (true, true, true, false) => Unavailable::BreakerOpen { agent },
            _ => Unavailable::AtCapacity { agent },
        })
    }

    /// As [`acquire`](Self::acquire), but when every fitting instance is at its concurrency
    /// limit ([`Unavailable::AtCapacity`]), waits up to `wait` for one of their slots to be
    /// freed. Other refusals come back at once.
    ///
    /// # Errors
    /// As [`acquire`](Self::acquire), once `wait` has passed.
    pub async fn acquire_within(
        &self,
        agent: &str,
        capabilities: &[String],
        wait: Duration,
    ) -> Result<Slot, Unavailable> {
        if wait.is_zero() {
            return self.acquire(agent, capabilities);
        }
        let deadline = tokio::time::Instant::now() + wait;
        let inner = &*self.inner;
        inner.slot_waiters.fetch_add(1, Ordering::SeqCst);
        let _waiting = Waiting(&inner.slot_waiters);
        loop {
            // Registered before looking, so a slot freed after the look still wakes us; each
            // freed slot wakes one waiter (a waiter dropped once woken passes it on).
            let freed = inner.slot_freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            std::sync::atomic::fence(Ordering::SeqCst);
            match self.acquire(agent, capabilities) {
                Err(Unavailable::AtCapacity { .. }) => {}
                done => return done,
            }
            if tokio::time::timeout_at(deadline, freed).await.is_err() {
                return self.acquire(agent, capabilities);
            }
        }
    }

    /// Whether the dispatcher wants freed slots now (see [`want_frees`](Self::want_frees)):
    /// claimed or queued work may be waiting for one.
    pub(crate) fn frees_wanted(&self) -> bool {
        self.inner.frees_wanted.load(Ordering::SeqCst)
    }

    /// Free slots among the eligible instances of `agent` with these capabilities: how many
    /// tasks [`acquire`](Self::acquire) would place now.
    pub fn spare(&self, agent: &str, capabilities: &[String]) -> u32 {
        self.snapshot()
            .iter()
            .filter(|i| {
                &*i.agent_name == agent
                    && i.has(capabilities)
                    && !i.is_failed()
                    && i.health.load(Ordering::Relaxed) >= FAILED_BELOW
                    && !i.agent_blocked()
            })
            .map(|i| i.candidate().free())
            .sum()
    }

    /// The distinct (agent, capabilities) groups of instances that are up, with their free
    /// slots: what a worker claims for.
    pub fn claimable(&self) -> Vec<(Arc<str>, Vec<String>, u32)> {
        let mut groups: Vec<(Arc<str>, Vec<String>, u32)> = Vec::new();
        for inst in self.snapshot().iter() {
            if inst.is_failed() || inst.agent_blocked() {
                continue;
            }
            let free = inst.candidate().free();
            match groups
                .iter_mut()
                .find(|(a, caps, _)| *a == inst.agent_name && *caps == inst.capabilities)
            {
                Some(group) => group.2 += free,
                None => groups.push((inst.agent_name.clone(), inst.capabilities.clone(), free)),
            }
        }
        groups
    }

    /// Records a heartbeat of an instance (a sign of progress). `false` if unknown.
    pub fn heartbeat(&self, id: &InstanceId) -> bool {
        match self.find(id) {
            Some(inst) => {
                inst.touch();
                true
            }
            None => false,
        }
    }

    /// Marks an instance failed; `false` if unknown or already failed.
    pub fn mark_failed(&self, id: &InstanceId, reason: FailReason) -> bool {
        match self.find(id) {
            Some(inst) => {
                let first = inst.fail(reason.clone());
                if first {
                    tracing::warn!(instance = %id, reason = %reason, "instance failed");
                }
                first
            }
            None => false,
        }
    }

    /// The health check: marks failed every instance that has runs in flight and has been
    /// silent for `timeout`, counts idle instances as alive, and returns the instances
    /// failed now or earlier (silent or unhealthy) with their reason, for recovery.
    ///
    /// [`silent`](Self::silent), [`mark_failed`](Self::mark_failed) and
    /// [`failed`](Self::failed) do the same in steps, for a caller that spares some silent
    /// instances (the worker spares those whose runs wait for a person's approval).
    pub fn check(&self, timeout: Duration) -> Vec<(InstanceId, Arc<str>, FailReason)> {
        for (id, silent) in self.silent(timeout) {
            self.mark_failed(
                &id,
                FailReason::Silent {
                    silent_secs: silent.as_secs_f64(),
                },
            );
        }
        self.failed()
    }

    /// Instances that are up, have runs in flight and have been silent for `timeout`, with
    /// how long; idle instances count as alive (their heartbeat is renewed).
    pub fn silent(&self, timeout: Duration) -> Vec<(InstanceId, Duration)> {
        let now = Instant::now();
        let mut silent = Vec::new();
        for inst in self.snapshot().iter().filter(|i| !i.is_failed()) {
            if inst.in_flight.load(Ordering::Acquire) == 0 {
                inst.touch();
                continue;
            }
            let quiet = inst.silent_for(now);
            if quiet >= timeout {
                silent.push((inst.id.clone(), quiet));
            }
        }
        silent
    }

    /// The failed instances with their agent and why they failed.
    pub fn failed(&self) -> Vec<(InstanceId, Arc<str>, FailReason)> {
        self.snapshot()
            .iter()
            .filter(|i| i.is_failed())
            .map(|inst| {
                let reason = lock(&inst.stats)
                    .failure
                    .clone()
                    .unwrap_or(FailReason::Marked {
                        message: "failed".into(),
                    });
                (inst.id.clone(), inst.agent_name.clone(), reason)
            })
            .collect()
    }

    /// Every instance as reports show it, in registration order.
    pub fn instances(&self) -> Vec<InstanceInfo> {
        let now = Instant::now();
        self.snapshot().iter().map(|i| i.info(now)).collect()
    }

    /// The agents that have instances, in registration order.
    pub fn agents(&self) -> Vec<Arc<str>> {
        let mut seen = HashSet::new();
        self.snapshot()
            .iter()
            .filter(|i| seen.insert(i.agent_name.clone()))
            .map(|i| i.agent_name.clone())
            .collect()
    }

    /// The instances of `agent` in numbers.
    pub fn load_of(&self, agent: &str) -> AgentLoad {
        let mut load = AgentLoad::default();
        for inst in self.snapshot().iter().filter(|i| &*i.agent_name == agent) {
            if inst.is_failed() {
                load.failed += 1;
            } else {
                let c = inst.candidate();
                load.up += 1;
                load.in_flight += c.in_flight;
                load.capacity += c.capacity;
            }
        }
        load
    }

    /// The instance of `agent` that is up, idle if any, least loaded otherwise, registered
    /// last: the one to remove when scaling down.
    pub fn removal_candidate(&self, agent: &str) -> Option<InstanceId> {
        self.snapshot()
            .iter()
            .rev()
            .filter(|i| &*i.agent_name == agent && !i.is_failed())
            .min_by_key(|i| i.in_flight.load(Ordering::Relaxed))
            .map(|i| i.id.clone())
    }

    /// The agents of every registered instance, for graceful shutdown.
    pub(crate) fn all_agents(&self) -> Vec<Agent> {
        self.snapshot().iter().map(|i| i.agent.clone()).collect()
    }

    /// Resolves when a slot is freed or an instance registered (a permit is stored if
    /// nobody waits, so no wake-up is lost).
    pub(crate) async fn freed(&self) {
        self.inner.freed.notified().await;
    }

    /// Whether a freed slot wakes whoever waits in [`freed`](Self::freed) (registering an
    /// instance and [`wake`](Self::wake) always do). The dispatcher wants frees only while
    /// work may wait for a slot (its last claim was cut short by full slots, or a claimed
    /// task waits for an instance); otherwise every run that ends on this pool, such as a
    /// direct one ([`Cluster::run_now`](crate::Cluster::run_now)), would wake it for a claim
    /// that finds nothing — a store query per run. Default: `true`.
    pub(crate) fn want_frees(&self, on: bool) {
        self.inner.frees_wanted.store(on, Ordering::SeqCst);
        // Pairs with the fence in `Slot::release`: either the dispatcher's next look at the
        // free slots sees a slot freed meanwhile, or that release sees `on` and wakes it.
        std::sync::atomic::fence(Ordering::SeqCst);
    }

    /// Wakes whoever waits in [`freed`](Self::freed).
    pub(crate) fn wake(&self) {
        self.inner.freed.notify_one();
    }

    fn find(&self, id: &InstanceId) -> Option<Arc<Instance>> {
        self.snapshot().iter().find(|i| &i.id == id).cloned()
    }
}

/// Counts a caller of [`Pool::acquire_within`] among the waiters until dropped.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The right to run one task on one instance; the slot is freed when this is dropped.
#[must_use = "dropping a slot frees it at once"]
pub struct Slot {
    instance: Arc<Instance>,
    pool: Arc<PoolInner>,
    done: bool,
}

impl fmt::Debug for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Slot")
            .field("instance", &self.instance.id)
            .finish()
    }
}

impl Slot {
    /// The instance's id.
    pub fn id(&self) -> &InstanceId {
        &self.instance.id
    }

    /// The agent name the instance serves.
    pub fn agent_name(&self) -> &Arc<str> {
        &self.instance.agent_name
    }

    /// The instance's agent.
    pub fn agent(&self) -> &Agent {
        &self.instance.agent
    }

    /// Records a heartbeat (progress) of the instance.
    pub fn heartbeat(&self) {
        self.instance.touch();
    }

    /// A handle that records heartbeats of this instance from elsewhere (a checkpointer).
    pub(crate) fn beat(&self) -> Beat {
        Beat(Arc::clone(&self.instance))
    }

    /// Records how the run ended and how long it took, and frees the slot: success raises
    /// health by 5, failure lowers it by 10 (and marks the instance failed below 30),
    /// [`Outcome::Ignored`] changes nothing but the heartbeat.
    pub fn finish(mut self, outcome: Outcome, duration: Duration) {
        self.done = true;
        let inst = &self.instance;
        inst.touch();
        let health = match outcome {
            Outcome::Success => {
                inst.health
                    .fetch_update(Ordering::AcqRel, Ordering::Acquire, |h| {
                        Some((h + SUCCESS_GAIN).min(HEALTH_MAX))
                    })
            }
            Outcome::Failure => {
                inst.health
                    .fetch_update(Ordering::AcqRel, Ordering::Acquire, |h| {
                        Some(h.saturating_sub(FAILURE_LOSS))
                    })
            }
            Outcome::Ignored => Err(0),
        };
        if outcome != Outcome::Ignored {
            let mut stats = lock(&inst.stats);
            let secs = duration.as_secs_f64();
            stats.mean_duration = Some(match stats.mean_duration {
                Some(mean) => mean + EWMA_ALPHA * (secs - mean),
                None => secs,
            });
            match outcome {
                Outcome::Success => stats.succeeded += 1,
                _ => stats.failed += 1,
            }
        }
        if outcome == Outcome::Failure
            && let Ok(before) = health
        {
            let after = before.saturating_sub(FAILURE_LOSS);
            if after < FAILED_BELOW && inst.fail(FailReason::Unhealthy { health: after }) {
                tracing::warn!(instance = %inst.id, health = after, "instance failed: unhealthy");
            }
        }
        self.release();
    }

    fn release(&self) {
        self.instance.in_flight.fetch_sub(1, Ordering::AcqRel);
        std::sync::atomic::fence(Ordering::SeqCst);
        if self.pool.frees_wanted.load(Ordering::SeqCst) {
            self.pool.freed.notify_one();
        }
        if self.pool.slot_waiters.load(Ordering::SeqCst) > 0 {
            self.pool.slot_freed.notify_one();
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        // `finish` released it already.
        if !self.done {
            self.release();
        }
    }
}

/// Records heartbeats of one instance.
#[derive(Clone)]
pub(crate) struct Beat(Arc<Instance>);

impl Beat {
    pub(crate) fn touch(&self) {
        self.0.touch();
    }

    pub(crate) fn id(&self) -> &InstanceId {
        &self.0.id
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::time::Duration;

    use pocket_agent::{Agent, Completion, CompletionRequest, Model, ModelError};

    use std::sync::atomic::Ordering;

    use super::{Pool, Selection, Unavailable};

    struct Ok;

    impl Model for Ok {
        fn name(&self) -> &str {
            "ok"
        }

        async fn complete(&self, _: &CompletionRequest) -> Result<Completion, ModelError> {
            Result::Ok(Completion::text("ok"))
        }
    }

    #[tokio::test]
    async fn a_freed_slot_wakes_the_dispatcher_only_when_it_wants_frees() {
        let pool = Pool::new(Selection::P2c);
        pool.register("a", Agent::builder(Ok).build().unwrap(), Vec::new(), 2);
        // Registering wakes it: take that permit.
        pool.freed().await;

        pool.want_frees(false);
        drop(pool.acquire("a", &[]).unwrap());
        assert!(
            tokio::time::timeout(Duration::from_millis(50), pool.freed())
                .await
                .is_err(),
            "a free nobody wants must not wake the dispatcher"
        );

        pool.want_frees(true);
        drop(pool.acquire("a", &[]).unwrap());
        tokio::time::timeout(Duration::from_secs(10), pool.freed())
            .await
            .expect("a wanted free wakes the dispatcher (the permit is kept)");
    }

    #[tokio::test]
    async fn acquire_within_waits_for_a_slot_and_gives_up_after_its_wait() {
        let pool = Pool::new(Selection::P2c);
        pool.register("a", Agent::builder(Ok).build().unwrap(), Vec::new(), 1);
        let held = pool.acquire("a", &[]).unwrap();
        assert!(matches!(
            pool.acquire_within("a", &[], Duration::ZERO).await,
            Err(Unavailable::AtCapacity { .. })
        ));
        assert!(matches!(
            pool.acquire_within("a", &[], Duration::from_millis(20))
                .await,
            Err(Unavailable::AtCapacity { .. })
        ));
        // Other refusals do not wait.
        assert!(matches!(
            pool.acquire_within("b", &[], Duration::from_secs(600))
                .await,
            Err(Unavailable::NoInstance { .. })
        ));

        let freer = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            drop(held);
        });
        let slot = pool
            .acquire_within("a", &[], Duration::from_secs(600))
            .await
            .expect("the slot freed meanwhile");
        freer.await.unwrap();
        assert_eq!(pool.inner.slot_waiters.load(Ordering::SeqCst), 0);
        drop(slot);
    }

    #[tokio::test]
    async fn every_freed_slot_goes_to_a_waiter() {
        let pool = Pool::new(Selection::P2c);
        pool.register("a", Agent::builder(Ok).build().unwrap(), Vec::new(), 2);
        let held = [
            pool.acquire("a", &[]).unwrap(),
            pool.acquire("a", &[]).unwrap(),
        ];
        let waiters: Vec<_> = (0..2)
            .map(|_| {
                let pool = pool.clone();
                tokio::spawn(async move {
                    pool.acquire_within("a", &[], Duration::from_secs(600))
                        .await
                        .map(|slot| slot.id().clone())
                })
            })
            .collect();
        tokio::time::timeout(Duration::from_secs(10), async {
            while pool.inner.slot_waiters.load(Ordering::SeqCst) < 2 {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the two waiters never started waiting");
        drop(held);
        for waiter in waiters {
            let got = tokio::time::timeout(Duration::from_secs(10), waiter)
                .await
                .expect("a waiter missed its freed slot")
                .unwrap();
            assert!(got.is_ok(), "{got:?}");
        }
    }
}
