//! Circuit breakers: stop calling what keeps failing, probe it after a cool-down.
//!
//! A [`Breaker`] is the state machine, shared through the hub's registry and keyed per model
//! endpoint, per tool and per agent. [`CircuitBreaker`] puts one in front of a [`Model`],
//! [`BreakerTool`] in front of a tool; the protected agent keeps one per agent.
//!
//! - **Closed**: calls pass. A failure opens it when it makes `consecutive_failures` in a
//!   row, or when the failure rate over the last `window` calls reaches `failure_rate` with at
//!   least `min_calls` calls in the window. (Only a failure opens a breaker.)
//! - **Open**: calls fail fast with a typed `CircuitOpen` error carrying the time until the
//!   next probe. After `cool_down` it turns half-open.
//! - **Half-open**: up to `half_open_probes` calls go through as probes; others are refused.
//!   A probe's success closes the breaker, its failure opens it again for another cool-down.
//!
//! What counts as a failure is decided per component by the layer (see [`Outcome`]). Every
//! transition is a [`ResilienceEvent::BreakerTransition`](crate::ResilienceEvent) and a counter.
//!
//! [`Model`]: pocket_agent::Model

mod model;
mod tool;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

pub use self::model::CircuitBreaker;
pub use self::tool::BreakerTool;
use crate::event::ResilienceEvent;
use crate::hub::{Component, Emitter, lock};
use crate::metrics::bump;
use crate::scope::later;

/// When a breaker opens and how it recovers.
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerPolicy {
    /// Failures in a row that open the breaker; 0 turns this trigger off. Default: 5.
    pub consecutive_failures: u32,
    /// Share of failed calls in the window (0.0–1.0) at or above which the breaker opens;
    /// above 1.0 turns this trigger off. Default: 0.5.
    pub failure_rate: f64,
    /// How many of the latest calls the failure rate is computed over. Default: 20.
    pub window: u32,
    /// Calls the window must hold before its rate counts. Default: 10.
    pub min_calls: u32,
    /// How long the breaker stays open before letting a probe through. Default: 30 s.
    pub cool_down: Duration,
    /// Probe calls let through while half-open (at least 1). Default: 1.
    pub half_open_probes: u32,
}

impl Default for BreakerPolicy {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            failure_rate: 0.5,
            window: 20,
            min_calls: 10,
            cool_down: Duration::from_secs(30),
            half_open_probes: 1,
        }
    }
}

impl BreakerPolicy {
    /// How long a call refused while probes are in flight should wait: a tenth of the
    /// cool-down, at least 1 ms.
    pub fn probe_wait(&self) -> Duration {
        (self.cool_down / 10).max(Duration::from_millis(1))
    }
}

/// A breaker's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    /// Calls pass.
    Closed,
    /// Calls fail fast.
    Open,
    /// A limited number of probe calls pass.
    HalfOpen,
}

impl BreakerState {
    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
        }
    }

    /// The state as a gauge value: 0 closed, 1 half-open, 2 open.
    pub fn as_gauge(self) -> u8 {
        match self {
            Self::Closed => 0,
            Self::HalfOpen => 1,
            Self::Open => 2,
        }
    }
}

/// How a call through the breaker ended, as the breaker counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The guarded thing answered.
    Success,
    /// It failed in a way that says it is unhealthy.
    Failure,
    /// Says nothing about its health (cancelled, refused before the call); a probe slot is
    /// given back.
    Ignored,
}

/// The breaker refused a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejected {
    /// How long until the breaker lets a probe through.
    pub retry_in: Duration,
}

/// A breaker's state for reports.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct BreakerSnapshot {
    /// `model:NAME`, `tool:NAME` or `agent:NAME`.
    pub key: Arc<str>,
    /// What it guards.
    pub component: Component,
    /// The model endpoint, tool or agent name.
    pub name: Arc<str>,
    /// Its state.
    pub state: BreakerState,
    /// Failures in a row (closed state).
    pub consecutive_failures: u32,
    /// Calls in the sliding window (closed state).
    pub calls_in_window: u32,
    /// Share of failures in the window (closed state).
    pub failure_rate: f64,
    /// Seconds until the next probe, when open.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_in_secs: Option<f64>,
    /// How often it opened.
    pub opened_total: u64,
    /// Seconds in the current state.
    pub in_state_secs: f64,
}

/// A circuit breaker's state machine; see the [module docs](self).
#[derive(Debug)]
pub struct Breaker {
    key: Arc<str>,
    component: Component,
    name: Arc<str>,
    policy: BreakerPolicy,
    state: Mutex<State>,
    emitter: Option<Arc<Emitter>>,
}

#[derive(Debug)]
struct State {
    phase: Phase,
    /// Bumped at every transition; outcomes of calls admitted earlier are not counted.
    generation: u64,
    consecutive: u32,
    window: VecDeque<bool>,
    window_failures: u32,
    probes: u32,
    opened_total: u64,
    since: Instant,
}

#[derive(Debug, Clone, Copy)]
enum Phase {
    Closed,
    Open { until: Instant },
    HalfOpen,
}

impl Phase {
    fn state(self) -> BreakerState {
        match self {
            Self::Closed => BreakerState::Closed,
            Self::Open { .. } => BreakerState::Open,
            Self::HalfOpen => BreakerState::HalfOpen,
        }
    }
}

type Transition = (BreakerState, BreakerState);

impl State {
    fn enter(&mut self, phase: Phase, now: Instant) -> Transition {
        let from = self.phase.state();
        self.phase = phase;
        self.generation += 1;
        self.since = now;
        match phase {
            Phase::Closed => {
                self.consecutive = 0;
                self.window.clear();
                self.window_failures = 0;
            }
            Phase::HalfOpen => self.probes = 0,
            Phase::Open { .. } => self.opened_total += 1,
        }
        (from, phase.state())
    }

    fn push(&mut self, failed: bool, window: u32) {
        if window == 0 {
            return;
        }
        if self.window.len() >= window as usize && self.window.pop_front() == Some(true) {
            self.window_failures -= 1;
        }
        self.window.push_back(failed);
        self.window_failures += u32::from(failed);
    }

    fn rate(&self) -> f64 {
        if self.window.is_empty() {
            0.0
        } else {
            f64::from(self.window_failures) / self.window.len() as f64
        }
    }
}

/// The right to make one call through a breaker. Record how it ended with
/// [`record`](Permit::record); dropping it unrecorded counts as [`Outcome::Ignored`].
#[derive(Debug)]
#[must_use = "a permit must record the call's outcome"]
pub struct Permit<'a> {
    breaker: &'a Breaker,
    generation: u64,
    probe: bool,
    done: bool,
}

impl Permit<'_> {
    /// Whether this call is a half-open probe.
    pub fn is_probe(&self) -> bool {
        self.probe
    }

    /// Records how the call ended.
    pub fn record(self, outcome: Outcome) {
        self.record_at(Instant::now(), outcome);
    }

    pub(crate) fn record_at(mut self, now: Instant, outcome: Outcome) {
        self.done = true;
        self.breaker
            .record_at(now, self.generation, self.probe, outcome);
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.breaker.record_at(
                Instant::now(),
                self.generation,
                self.probe,
                Outcome::Ignored,
            );
        }
    }
}

impl Breaker {
    /// A breaker of its own, outside any hub (no events, no counters). Layers get theirs from
    /// [`ResilienceHub::breaker_or_insert`](crate::ResilienceHub::breaker_or_insert).
    pub fn new(component: Component, name: &str, policy: BreakerPolicy) -> Self {
        Self::with_emitter(component, name, policy, None)
    }

    pub(crate) fn with_emitter(
        component: Component,
        name: &str,
        policy: BreakerPolicy,
        emitter: Option<Arc<Emitter>>,
    ) -> Self {
        Self {
            key: component.key(name),
            component,
            name: Arc::from(name),
            policy,
            state: Mutex::new(State {
                phase: Phase::Closed,
                generation: 0,
                consecutive: 0,
                window: VecDeque::new(),
                window_failures: 0,
                probes: 0,
                opened_total: 0,
                since: Instant::now(),
            }),
            emitter,
        }
    }

    /// `model:NAME`, `tool:NAME` or `agent:NAME`.
    pub fn key(&self) -> &Arc<str> {
        &self.key
    }

    /// The guarded name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The policy.
    pub fn policy(&self) -> &BreakerPolicy {
        &self.policy
    }

    /// The state now (an open breaker whose cool-down has passed still says open until a
    /// call asks to go through).
    pub fn state(&self) -> BreakerState {
        lock(&self.state).phase.state()
    }

    /// Asks to make one call.
    ///
    /// # Errors
    /// [`Rejected`] with the time until the next probe when the breaker is open, or
    /// half-open with all probe slots taken.
    pub fn try_acquire(&self) -> Result<Permit<'_>, Rejected> {
        self.try_acquire_at(Instant::now())
    }

    pub(crate) fn try_acquire_at(&self, now: Instant) -> Result<Permit<'_>, Rejected> {
        let mut transition = None;
        let result = {
            let mut s = lock(&self.state);
            if let Phase::Open { until } = s.phase
                && now >= until
            {
                transition = Some(s.enter(Phase::HalfOpen, now));
            }
            match s.phase {
                Phase::Closed => Ok((s.generation, false)),
                Phase::Open { until } => Err(Rejected {
                    retry_in: until.saturating_duration_since(now),
                }),
                Phase::HalfOpen if s.probes < self.policy.half_open_probes.max(1) => {
                    s.probes += 1;
                    Ok((s.generation, true))
                }
                Phase::HalfOpen => Err(Rejected {
                    retry_in: self.policy.probe_wait(),
                }),
            }
        };
        if let Some(t) = transition {
            self.announce(t);
        }
        result.map(|(generation, probe)| Permit {
            breaker: self,
            generation,
            probe,
            done: false,
        })
    }

    pub(crate) fn record_at(&self, now: Instant, generation: u64, probe: bool, outcome: Outcome) {
        let transition = {
            let mut s = lock(&self.state);
            if s.generation != generation {
                return;
            }
            match (s.phase, outcome) {
                (Phase::Closed, Outcome::Success) => {
                    s.consecutive = 0;
                    s.push(false, self.policy.window);
                    None
                }
                (Phase::Closed, Outcome::Failure) => {
                    s.consecutive += 1;
                    s.push(true, self.policy.window);
                    let p = &self.policy;
                    let by_streak =
                        p.consecutive_failures > 0 && s.consecutive >= p.consecutive_failures;
                    let by_rate =
                        s.window.len() >= p.min_calls.max(1) as usize && s.rate() >= p.failure_rate;
                    (by_streak || by_rate).then(|| {
                        s.enter(
                            Phase::Open {
                                until: later(now, p.cool_down),
                            },
                            now,
                        )
                    })
                }
                (Phase::HalfOpen, Outcome::Success) if probe => Some(s.enter(Phase::Closed, now)),
                (Phase::HalfOpen, Outcome::Failure) if probe => Some(s.enter(
                    Phase::Open {
                        until: later(now, self.policy.cool_down),
                    },
                    now,
                )),
                (Phase::HalfOpen, Outcome::Ignored) if probe => {
                    s.probes = s.probes.saturating_sub(1);
                    None
                }
                _ => None,
            }
        };
        if let Some(t) = transition {
            self.announce(t);
        }
    }

    fn announce(&self, (from, to): Transition) {
        match to {
            BreakerState::Open => {
                tracing::warn!(key = %self.key, from = from.as_str(), cool_down_secs = self.policy.cool_down.as_secs_f64(), "circuit opened");
            }
            _ => {
                tracing::info!(key = %self.key, from = from.as_str(), to = to.as_str(), "circuit changed state")
            }
        }
        if let Some(emitter) = &self.emitter {
            emitter.count(|c| bump(&mut c.transitions, &self.key));
            emitter.emit(|| ResilienceEvent::BreakerTransition {
                key: self.key.clone(),
                from,
                to,
            });
        }
    }

    /// The breaker's state for reports.
    pub fn snapshot(&self) -> BreakerSnapshot {
        let now = Instant::now();
        let s = lock(&self.state);
        BreakerSnapshot {
            key: self.key.clone(),
            component: self.component,
            name: self.name.clone(),
            state: s.phase.state(),
            consecutive_failures: s.consecutive,
            calls_in_window: s.window.len() as u32,
            failure_rate: s.rate(),
            retry_in_secs: match s.phase {
                Phase::Open { until } => Some(until.saturating_duration_since(now).as_secs_f64()),
                _ => None,
            },
            opened_total: s.opened_total,
            in_state_secs: now.saturating_duration_since(s.since).as_secs_f64(),
        }
    }
}

#[cfg(test)]
mod tests;
