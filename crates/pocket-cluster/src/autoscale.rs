//! The autoscaler: how many instances an agent should have, from utilisation and queue depth.
//!
//! A pure state machine over [`Observation`]s and a clock reading, so every rule is tested on
//! plain values:
//!
//! 1. **Limits first.** Below `min_instances` it scales up to the minimum, above
//!    `max_instances` down to the maximum, at once (no hysteresis, no cool-down).
//! 2. **Up** when utilisation (busy slots over slots) reaches `scale_up_utilisation`, or tasks
//!    are queued and there is no capacity at all. The target covers the work in sight:
//!    `ceil((in_flight + queued) / (concurrency × scale_up_utilisation))`, at least one more
//!    instance, at most `max_instances`.
//! 3. **Down** by one when utilisation falls to `scale_down_utilisation`, not below
//!    `min_instances`.
//! 4. **Hysteresis.** The gap between the two thresholds is a dead band; and a condition must
//!    hold for `stable_checks` consecutive checks before the autoscaler acts.
//! 5. **Cool-down.** After an action, none for `cool_down`.

use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

/// When and how far to scale; see the [module docs](self).
#[derive(Debug, Clone, PartialEq)]
pub struct ScalePolicy {
    /// Instances at least.
    pub min_instances: u32,
    /// Instances at most.
    pub max_instances: u32,
    /// Utilisation (0 to 1) at which to scale up.
    pub scale_up_utilisation: f64,
    /// Utilisation at which to scale down (below `scale_up_utilisation`).
    pub scale_down_utilisation: f64,
    /// Consecutive checks a condition must hold.
    pub stable_checks: u32,
    /// Quiet time after an action.
    pub cool_down: Duration,
}

impl Default for ScalePolicy {
    /// The `[cluster]` defaults: 1 to 10 instances, up at 80 %, down at 20 %, 2 checks, 60 s.
    fn default() -> Self {
        Self {
            min_instances: 1,
            max_instances: 10,
            scale_up_utilisation: 0.8,
            scale_down_utilisation: 0.2,
            stable_checks: 2,
            cool_down: Duration::from_secs(60),
        }
    }
}

/// What the autoscaler sees of one agent at a check.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Observation {
    /// Instances that are up (not failed).
    pub instances: u32,
    /// Runs in flight on them.
    pub in_flight: u32,
    /// Their slots.
    pub capacity: u32,
    /// Tasks waiting in the queue.
    pub queued: u64,
    /// Slots of one instance (for sizing new ones).
    pub concurrency: u32,
}

impl Observation {
    /// Busy slots over slots; 0 without capacity.
    pub fn utilisation(&self) -> f64 {
        if self.capacity == 0 {
            0.0
        } else {
            f64::from(self.in_flight) / f64::from(self.capacity)
        }
    }
}

/// Scale up, down, or leave it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ScaleDecision {
    /// Add instances.
    ScaleUp,
    /// Remove instances.
    ScaleDown,
    /// Leave it as it is.
    NoChange,
}

impl ScaleDecision {
    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ScaleUp => "scale_up",
            Self::ScaleDown => "scale_down",
            Self::NoChange => "no_change",
        }
    }
}

/// A scaling recommendation with its reason.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Recommendation {
    /// What to do.
    pub decision: ScaleDecision,
    /// Instances up now.
    pub current: u32,
    /// Instances wanted.
    pub target: u32,
    /// Utilisation seen (0 to 1).
    pub utilisation: f64,
    /// Queue depth seen.
    pub queued: u64,
    /// Why, in words.
    pub reason: String,
}

/// The autoscaler of one agent; see the [module docs](self).
///
/// ```
/// use std::time::Duration;
/// use pocket_cluster::autoscale::{Autoscaler, Observation, ScaleDecision, ScalePolicy};
///
/// let mut scaler = Autoscaler::new(ScalePolicy { stable_checks: 1, ..ScalePolicy::default() });
/// let busy = Observation { instances: 2, in_flight: 19, capacity: 20, queued: 30, concurrency: 10 };
/// let now = tokio::time::Instant::now();
/// let r = scaler.decide(&busy, now);
/// assert_eq!(r.decision, ScaleDecision::ScaleUp);
/// assert_eq!(r.target, 7); // ceil((19 + 30) / (10 × 0.8))
/// // Cooling down: the same pressure a second later changes nothing.
/// let r = scaler.decide(&busy, now + Duration::from_secs(1));
/// assert_eq!(r.decision, ScaleDecision::NoChange);
/// assert!(r.reason.contains("cooling down"));
/// ```
#[derive(Debug, Clone)]
pub struct Autoscaler {
    policy: ScalePolicy,
    last_action: Option<Instant>,
    streak: Option<(ScaleDecision, u32)>,
}

/// The direction the numbers point to, before hysteresis and cool-down.
struct Want {
    decision: ScaleDecision,
    target: u32,
    reason: String,
    /// Limits act at once.
    forced: bool,
}

impl Autoscaler {
    /// An autoscaler that has not acted yet.
    pub fn new(policy: ScalePolicy) -> Self {
        Self {
            policy,
            last_action: None,
            streak: None,
        }
    }

    /// Its policy.
    pub fn policy(&self) -> &ScalePolicy {
        &self.policy
    }

    /// What one more check with `obs` at `now` would decide, without changing any state
    /// (for reports).
    pub fn recommend(&self, obs: &Observation, now: Instant) -> Recommendation {
        self.clone().decide(obs, now)
    }

    /// One check: updates the hysteresis count and returns the decision to carry out. A
    /// decision other than [`ScaleDecision::NoChange`] starts the cool-down, so the caller
    /// should act on it.
    pub fn decide(&mut self, obs: &Observation, now: Instant) -> Recommendation {
        let want = self.want(obs);
        let recommend = |decision, target, reason| Recommendation {
            decision,
            current: obs.instances,
            target,
            utilisation: obs.utilisation(),
            queued: obs.queued,
            reason,
        };
        if want.forced {
            self.streak = None;
            self.last_action = Some(now);
            return recommend(want.decision, want.target, want.reason);
        }
        if want.decision == ScaleDecision::NoChange {
            self.streak = None;
            return recommend(ScaleDecision::NoChange, obs.instances, want.reason);
        }
        let count = match self.streak {
            Some((d, n)) if d == want.decision => n + 1,
            _ => 1,
        };
        self.streak = Some((want.decision, count));
        let needed = self.policy.stable_checks.max(1);
        if count < needed {
            return recommend(
                ScaleDecision::NoChange,
                obs.instances,
                format!("{} (held for {count} of {needed} checks)", want.reason),
            );
        }
        if let Some(last) = self.last_action {
            let quiet = now.saturating_duration_since(last);
            if quiet < self.policy.cool_down {
                let left = self.policy.cool_down - quiet;
                return recommend(
                    ScaleDecision::NoChange,
                    obs.instances,
                    format!(
                        "{}, but cooling down ({:.0}s left)",
                        want.reason,
                        left.as_secs_f64().ceil()
                    ),
                );
            }
        }
        self.streak = None;
        self.last_action = Some(now);
        recommend(want.decision, want.target, want.reason)
    }

    fn want(&self, obs: &Observation) -> Want {
        let p = &self.policy;
        let n = obs.instances;
        let u = obs.utilisation();
        let pct = |x: f64| x * 100.0;
        let want = |decision, target, reason: String| Want {
            decision,
            target,
            reason,
            forced: false,
        };
        if n < p.min_instances {
            return Want {
                decision: ScaleDecision::ScaleUp,
                target: p.min_instances,
                reason: format!("{n} instances, below the minimum of {}", p.min_instances),
                forced: true,
            };
        }
        if n > p.max_instances {
            return Want {
                decision: ScaleDecision::ScaleDown,
                target: p.max_instances,
                reason: format!("{n} instances, above the maximum of {}", p.max_instances),
                forced: true,
            };
        }
        let starved = obs.capacity == 0 && obs.queued > 0;
        if starved || u >= p.scale_up_utilisation {
            let reason = if starved {
                format!("{} tasks queued and no capacity", obs.queued)
            } else {
                format!(
                    "utilisation {:.0}% at or above the scale-up threshold {:.0}% ({} queued)",
                    pct(u),
                    pct(p.scale_up_utilisation),
                    obs.queued
                )
            };
            if n >= p.max_instances {
                return want(
                    ScaleDecision::NoChange,
                    n,
                    format!(
                        "{reason}; already at the maximum of {} instances",
                        p.max_instances
                    ),
                );
            }
            let per = f64::from(obs.concurrency.max(1)) * p.scale_up_utilisation.max(0.01);
            let demand = f64::from(obs.in_flight) + obs.queued as f64;
            let needed = (demand / per).ceil().min(f64::from(u32::MAX)) as u32;
            let target = needed.clamp(n + 1, p.max_instances);
            return want(ScaleDecision::ScaleUp, target, reason);
        }
        if u <= p.scale_down_utilisation {
            let reason = format!(
                "utilisation {:.0}% at or below the scale-down threshold {:.0}%",
                pct(u),
                pct(p.scale_down_utilisation)
            );
            return if n > p.min_instances {
                want(ScaleDecision::ScaleDown, n - 1, reason)
            } else {
                want(
                    ScaleDecision::NoChange,
                    n,
                    format!(
                        "{reason}; already at the minimum of {} instances",
                        p.min_instances
                    ),
                )
            };
        }
        want(
            ScaleDecision::NoChange,
            n,
            format!(
                "utilisation {:.0}% within the band {:.0}%–{:.0}%",
                pct(u),
                pct(p.scale_down_utilisation),
                pct(p.scale_up_utilisation),
            ),
        )
    }
}
