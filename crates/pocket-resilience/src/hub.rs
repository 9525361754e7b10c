//! The hub: one cheap-clone handle shared by every layer of a process, holding the breaker
//! registry, the retry budgets, the event channel, the counters and the agents' health.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use serde::Serialize;
use tokio::sync::broadcast;
use tokio::time::Instant;

use crate::breaker::{Breaker, BreakerPolicy, BreakerSnapshot};
use crate::event::ResilienceEvent;
use crate::health::AgentHealth;
use crate::metrics::{Counters, MetricsSnapshot, export};
use crate::retry::{BudgetPolicy, RetryBudget};

/// Capacity of the event channel; a subscriber that falls further behind loses the oldest.
const EVENT_CAPACITY: usize = 1024;

/// What a layer guards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Component {
    /// A model endpoint.
    Model,
    /// A tool.
    Tool,
    /// A whole agent.
    Agent,
}

impl Component {
    /// The snake_case name, the prefix of keys.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Model => "model",
            Self::Tool => "tool",
            Self::Agent => "agent",
        }
    }

    /// The key of `name` under this component: `model:openai:gpt-4o`, `tool:shell`.
    pub fn key(self, name: &str) -> Arc<str> {
        Arc::from(format!("{}:{name}", self.as_str()))
    }
}

impl fmt::Display for Component {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Events and counters, shared by the hub and by every breaker it made (breakers do not hold
/// the hub itself, so the registry holds no cycle).
#[derive(Debug)]
pub(crate) struct Emitter {
    events: broadcast::Sender<ResilienceEvent>,
    counters: Mutex<Counters>,
}

impl Emitter {
    fn new() -> Self {
        Self {
            events: broadcast::channel(EVENT_CAPACITY).0,
            counters: Mutex::new(Counters::default()),
        }
    }

    /// Sends an event if anyone listens; builds it only then.
    pub(crate) fn emit(&self, event: impl FnOnce() -> ResilienceEvent) {
        if self.events.receiver_count() > 0 {
            let _ = self.events.send(event());
        }
    }

    /// Updates the counters under one short lock.
    pub(crate) fn count(&self, update: impl FnOnce(&mut Counters)) {
        update(&mut lock(&self.counters));
    }
}

/// The shared state of the resilience layers of a process. Cheap to clone; build the layers
/// of one process with clones of one hub so the health report and the metrics see them all.
///
/// ```
/// use pocket_resilience::{ResilienceEvent, ResilienceHub};
///
/// let hub = ResilienceHub::new();
/// let mut events = hub.subscribe();
/// // ... build layers with `&hub`, run agents ...
/// assert!(events.try_recv().is_err());
/// assert_eq!(hub.health_report().health_score, 100);
/// ```
#[derive(Clone)]
pub struct ResilienceHub {
    inner: Arc<HubInner>,
}

struct HubInner {
    emitter: Arc<Emitter>,
    breakers: Mutex<BTreeMap<Arc<str>, Arc<Breaker>>>,
    budgets: Mutex<HashMap<Arc<str>, Arc<RetryBudget>>>,
    agents: Mutex<BTreeMap<Arc<str>, AgentHealth>>,
    fallbacks: Mutex<BTreeMap<Arc<str>, Vec<Arc<str>>>>,
    started: Instant,
}

impl Default for ResilienceHub {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for ResilienceHub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResilienceHub")
            .field("breakers", &lock(&self.inner.breakers).len())
            .field("agents", &lock(&self.inner.agents).len())
            .finish_non_exhaustive()
    }
}

impl ResilienceHub {
    /// An empty hub.
    pub fn new() -> Self {
        Self {
            inner: Arc::new(HubInner {
                emitter: Arc::new(Emitter::new()),
                breakers: Mutex::new(BTreeMap::new()),
                budgets: Mutex::new(HashMap::new()),
                agents: Mutex::new(BTreeMap::new()),
                fallbacks: Mutex::new(BTreeMap::new()),
                started: Instant::now(),
            }),
        }
    }

    /// Receives every event of every layer built with this hub from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<ResilienceEvent> {
        self.inner.emitter.events.subscribe()
    }

    /// The counters and gauges now.
    pub fn metrics(&self) -> MetricsSnapshot {
        let breaker_state = self
            .breakers()
            .into_iter()
            .map(|b| (b.key.to_string(), b.state.as_gauge()))
            .collect();
        let c = lock(&self.inner.emitter.counters);
        MetricsSnapshot {
            retries_total: export(&c.retries),
            budget_rejections_total: export(&c.budget_rejections),
            breaker_state,
            breaker_transitions_total: export(&c.transitions),
            fallbacks_total: export(&c.fallbacks),
            cool_down_waits_total: c.waits,
            agent_failures_total: export(&c.agent_failures),
            executor_answers_total: export(&c.executor_answers),
            human_in_loop_errors_total: export(&c.hitl_errors),
        }
    }

    /// Every breaker's state, ordered by key.
    pub fn breakers(&self) -> Vec<BreakerSnapshot> {
        let breakers: Vec<Arc<Breaker>> = lock(&self.inner.breakers).values().cloned().collect();
        breakers.iter().map(|b| b.snapshot()).collect()
    }

    /// The breaker of `name` under `component`, if a layer made one.
    pub fn breaker(&self, component: Component, name: &str) -> Option<Arc<Breaker>> {
        lock(&self.inner.breakers)
            .get(&*component.key(name))
            .cloned()
    }

    /// The breaker of `name` under `component`; made with `policy` if it does not exist yet.
    /// Layers guarding the same key share one breaker (the first policy wins).
    pub fn breaker_or_insert(
        &self,
        component: Component,
        name: &str,
        policy: &BreakerPolicy,
    ) -> Arc<Breaker> {
        let key = component.key(name);
        lock(&self.inner.breakers)
            .entry(key)
            .or_insert_with(|| {
                Arc::new(Breaker::with_emitter(
                    component,
                    name,
                    policy.clone(),
                    Some(self.inner.emitter.clone()),
                ))
            })
            .clone()
    }

    /// The retry budget of `key`; made with `policy` if it does not exist yet.
    pub(crate) fn budget(&self, key: &Arc<str>, policy: &BudgetPolicy) -> Arc<RetryBudget> {
        lock(&self.inner.budgets)
            .entry(key.clone())
            .or_insert_with(|| Arc::new(RetryBudget::new(policy)))
            .clone()
    }

    /// Notes that calls to model `primary` fall back to `then`, for the health report.
    pub(crate) fn note_fallbacks(&self, primary: &str, then: Vec<Arc<str>>) {
        lock(&self.inner.fallbacks).insert(Arc::from(primary), then);
    }

    pub(crate) fn fallbacks_of(&self, model: &str) -> Option<Vec<Arc<str>>> {
        lock(&self.inner.fallbacks).get(model).cloned()
    }

    pub(crate) fn emitter(&self) -> &Arc<Emitter> {
        &self.inner.emitter
    }

    pub(crate) fn agents(&self) -> MutexGuard<'_, BTreeMap<Arc<str>, AgentHealth>> {
        lock(&self.inner.agents)
    }

    pub(crate) fn started(&self) -> Instant {
        self.inner.started
    }
}

/// Locks a mutex, taking the data of a poisoned one: every critical section here leaves its
/// data consistent at each step, so a panic elsewhere does not make it unusable.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
