//! The health report (the seed's `getHealthReport`): agents, breakers, recent failures,
//! recovery time, and what to do about it in words.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use tokio::time::Instant;

use crate::breaker::{BreakerSnapshot, BreakerState};
use crate::event::ResilienceEvent;
use crate::hub::{Component, ResilienceHub};
use crate::metrics::bump;
use crate::protected::AgentFailure;

const HOUR: u64 = 3600;
/// Failures in the last 24 hours above which the report recommends a review.
const MANY_FAILURES: u64 = 10;

/// The state of every protected agent and breaker of a hub, with recommendations.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct HealthReport {
    /// Protected agents registered with the hub.
    pub agents_total: usize,
    /// Agents whose last run failed or whose breaker is not closed.
    pub agents_failing: usize,
    /// 0–100: the share of healthy agents (of breakers when there are no agents; 100 when
    /// there is neither). A half-open breaker counts half.
    pub health_score: u8,
    /// Every breaker, by key.
    pub breakers: Vec<BreakerSnapshot>,
    /// Failed run attempts of protected agents in the last 24 hours (counted per hour, so the
    /// oldest hour may be partly older).
    pub failures_last_24h: u64,
    /// Mean time from an agent's first failure to its next success, over the last 24 hours.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mean_recovery_secs: Option<f64>,
    /// What to do, in words; empty when all is well.
    pub recommendations: Vec<String>,
    /// When the report was made (Unix seconds).
    pub generated_at: f64,
}

/// What the hub keeps per protected agent.
#[derive(Debug)]
pub(crate) struct AgentHealth {
    history: VecDeque<AgentFailure>,
    capacity: usize,
    failing_since: Option<Instant>,
    last_failed: bool,
    last_kind: Option<&'static str>,
    hours: VecDeque<Hour>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Hour {
    index: u64,
    failures: u64,
    recoveries: u64,
    recovery: Duration,
}

impl AgentHealth {
    fn new(capacity: usize) -> Self {
        Self {
            history: VecDeque::new(),
            capacity: capacity.max(1),
            failing_since: None,
            last_failed: false,
            last_kind: None,
            hours: VecDeque::new(),
        }
    }

    fn hour(&mut self, index: u64) -> &mut Hour {
        if self.hours.back().is_none_or(|h| h.index != index) {
            self.hours.push_back(Hour {
                index,
                ..Hour::default()
            });
        }
        while self.hours.len() > 25 {
            self.hours.pop_front();
        }
        let last = self.hours.len() - 1; // not empty: pushed above if it was
        &mut self.hours[last]
    }

    fn recent(&self, now_index: u64) -> impl Iterator<Item = &Hour> {
        self.hours.iter().filter(move |h| h.index + 24 > now_index)
    }
}

impl ResilienceHub {
    /// Registers a protected agent so the report counts it; keeps `history` failures.
    pub(crate) fn register_agent(&self, agent: &Arc<str>, history: usize) {
        self.agents()
            .entry(agent.clone())
            .or_insert_with(|| AgentHealth::new(history));
    }

    fn hour_index(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.started()).as_secs() / HOUR
    }

    pub(crate) fn record_agent_failure(&self, failure: &AgentFailure) {
        let now = Instant::now();
        let index = self.hour_index(now);
        {
            let mut agents = self.agents();
            let health = agents
                .entry(failure.agent.clone())
                .or_insert_with(|| AgentHealth::new(1000));
            if health.history.len() >= health.capacity {
                health.history.pop_front();
            }
            health.history.push_back(failure.clone());
            health.failing_since.get_or_insert(now);
            health.last_failed = true;
            health.last_kind = Some(failure.classification.kind.as_str());
            health.hour(index).failures += 1;
        }
        let key = Component::Agent.key(&failure.agent);
        let emitter = self.emitter();
        emitter.count(|c| bump(&mut c.agent_failures, &key));
        emitter.emit(|| ResilienceEvent::AgentFailed {
            agent: failure.agent.clone(),
            run_id: failure.run_id.clone(),
            attempt: failure.attempt,
            error: failure.error.clone(),
            classification: failure.classification,
        });
    }

    pub(crate) fn record_agent_success(&self, agent: &Arc<str>) {
        let now = Instant::now();
        let index = self.hour_index(now);
        let recovered = {
            let mut agents = self.agents();
            let Some(health) = agents.get_mut(agent) else {
                return;
            };
            health.last_failed = false;
            let recovered = health
                .failing_since
                .take()
                .map(|since| now.saturating_duration_since(since));
            if let Some(after) = recovered {
                let hour = health.hour(index);
                hour.recoveries += 1;
                hour.recovery += after;
            }
            recovered
        };
        if let Some(after) = recovered {
            tracing::info!(%agent, after_secs = after.as_secs_f64(), "agent recovered");
            self.emitter().emit(|| ResilienceEvent::AgentRecovered {
                agent: agent.clone(),
                after,
            });
        }
    }

    /// The failures kept for `agent`, oldest first (at most its history capacity).
    pub fn agent_history(&self, agent: &str) -> Vec<AgentFailure> {
        self.agents()
            .get(agent)
            .map(|h| h.history.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// The health report now.
    pub fn health_report(&self) -> HealthReport {
        let now = Instant::now();
        let index = self.hour_index(now);
        let breakers = self.breakers();
        let agent_breaker = |name: &str| {
            breakers
                .iter()
                .find(|b| b.component == Component::Agent && &*b.name == name)
                .map(|b| b.state)
        };
        let mut failures = 0;
        let (mut recoveries, mut recovery) = (0u64, Duration::ZERO);
        let mut failing: Vec<(Arc<str>, Option<&'static str>)> = Vec::new();
        let mut score_sum = 0.0;
        let agents_total;
        {
            let agents = self.agents();
            agents_total = agents.len();
            for (name, health) in agents.iter() {
                for hour in health.recent(index) {
                    failures += hour.failures;
                    recoveries += hour.recoveries;
                    recovery += hour.recovery;
                }
                let state = agent_breaker(name).unwrap_or(BreakerState::Closed);
                if health.last_failed || state != BreakerState::Closed {
                    failing.push((name.clone(), health.last_kind));
                }
                score_sum += match state {
                    BreakerState::Open => 0.0,
                    BreakerState::HalfOpen => 0.5,
                    BreakerState::Closed if health.last_failed => 0.0,
                    BreakerState::Closed => 1.0,
                };
            }
        }
        let health_score = if agents_total > 0 {
            score_sum / agents_total as f64
        } else if !breakers.is_empty() {
            breakers
                .iter()
                .map(|b| match b.state {
                    BreakerState::Closed => 1.0,
                    BreakerState::HalfOpen => 0.5,
                    BreakerState::Open => 0.0,
                })
                .sum::<f64>()
                / breakers.len() as f64
        } else {
            1.0
        };
        let metrics = self.metrics();
        let mut recommendations = Vec::new();
        for b in breakers.iter().filter(|b| b.state != BreakerState::Closed) {
            recommendations.push(self.breaker_advice(b));
        }
        for (name, kind) in &failing {
            if agent_breaker(name).is_none_or(|s| s == BreakerState::Closed) {
                recommendations.push(format!(
                    "Agent {name} failed its last run ({}): see its error history for the cause.",
                    kind.unwrap_or("unknown")
                ));
            }
        }
        for (key, n) in &metrics.budget_rejections_total {
            recommendations.push(format!(
                "The retry budget of {key} refused {n} retries: it fails more often than retries \
                 may make up for; look at its error rate before raising \
                 resilience.retry.budget_ratio."
            ));
        }
        if failures > MANY_FAILURES {
            recommendations.push(format!(
                "{failures} failed runs in the last 24 h: review the error history for a common \
                 cause, and consider a fallback model or more capacity."
            ));
        }
        let hitl: u64 = metrics.human_in_loop_errors_total.values().sum();
        if hitl > 0 {
            recommendations.push(format!(
                "Asking a person for approval failed {hitl} times: check the approval channel; \
                 dangerous tool calls were denied meanwhile."
            ));
        }
        HealthReport {
            agents_total,
            agents_failing: failing.len(),
            health_score: (health_score * 100.0).round().clamp(0.0, 100.0) as u8,
            breakers,
            failures_last_24h: failures,
            mean_recovery_secs: (recoveries > 0)
                .then(|| recovery.as_secs_f64() / recoveries as f64),
            recommendations,
            generated_at: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
        }
    }

    fn breaker_advice(&self, b: &BreakerSnapshot) -> String {
        let state = match (b.state, b.retry_in_secs) {
            (BreakerState::Open, Some(s)) => format!("is open (next probe in {s:.0}s)"),
            (BreakerState::Open, None) => "is open".to_owned(),
            _ => "is half-open (probing)".to_owned(),
        };
        let name = &b.name;
        match b.component {
            Component::Model => {
                let then = match self.fallbacks_of(name) {
                    Some(routes) if !routes.is_empty() => format!(
                        "calls fall back to {}",
                        routes
                            .iter()
                            .map(|r| r.as_ref())
                            .collect::<Vec<_>>()
                            .join(", then ")
                    ),
                    _ => "no fallback model is configured, so calls wait for the probe or fail; \
                          consider resilience.fallback.models"
                        .to_owned(),
                };
                format!(
                    "Circuit for model {name} {state}: check the provider's status, rate limits \
                     and credentials; {then}."
                )
            }
            Component::Tool => format!(
                "Circuit for tool {name} {state}: the tool keeps failing; check what it depends \
                 on. The model is told the tool is unavailable meanwhile."
            ),
            Component::Agent => format!(
                "Circuit for agent {name} {state}: its runs keep failing, so new runs fail fast \
                 or go to its fallback; see its error history."
            ),
        }
    }
}
