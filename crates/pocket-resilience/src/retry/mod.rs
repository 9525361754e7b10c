//! Retries: exponential backoff with full jitter, Retry-After, a retry budget per key.
//!
//! [`Retry`] wraps a [`Model`](pocket_agent::Model), [`RetryTool`] a tool that declares itself
//! idempotent. Both retry only errors that classify as retryable, wait
//! `random(0, min(max_delay, base_delay × 2^(n−1)))` before retry `n` (full jitter) or
//! exactly the provider's Retry-After when it gave one, stop after `max_attempts`, and never
//! sleep past `max_elapsed` or the request's deadline: a retry that could not start in time is
//! not waited for. Every retry must be paid for from the key's [`RetryBudget`] (tower's
//! [`TpsBudget`]): each call deposits, each retry withdraws, so retries stay a share of recent
//! calls and an outage cannot become a retry storm.

mod model;
mod tool;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use pocket_agent::ErrorKind;
use serde::Deserialize;
use tower::retry::budget::{Budget, TpsBudget};

pub use self::model::Retry;
pub use self::tool::RetryTool;
use crate::event::ResilienceEvent;
use crate::hub::{Emitter, ResilienceHub, lock};
use crate::metrics::bump;

/// How the delay before a retry is drawn.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Jitter {
    /// Uniformly between zero and the exponential ceiling ("full jitter"), so clients that
    /// failed together do not retry together.
    #[default]
    Full,
    /// Exactly the exponential ceiling. For tests and single clients.
    None,
}

/// How many retries a key may make: a share of its recent calls plus a small reserve.
#[derive(Debug, Clone, PartialEq)]
pub struct BudgetPolicy {
    /// Retries allowed per call made, over the window (0.0–1.0; tower rounds it to 1/n).
    /// Default: 0.2.
    pub ratio: f32,
    /// Retries per second allowed whatever the traffic, so a quiet key can still retry.
    /// Default: 10.
    pub min_per_sec: u32,
    /// How long a call counts toward the budget (1–60 s, whole seconds). Default: 10 s.
    pub window: Duration,
}

impl Default for BudgetPolicy {
    fn default() -> Self {
        Self {
            ratio: 0.2,
            min_per_sec: 10,
            window: Duration::from_secs(10),
        }
    }
}

/// How a layer retries.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Calls at most, the first included; 1 turns retries off. Default: 3.
    pub max_attempts: u32,
    /// Ceiling of the first retry's delay. Default: 200 ms.
    pub base_delay: Duration,
    /// Highest ceiling of any delay. Default: 10 s.
    pub max_delay: Duration,
    /// Time from the first call after which no retry starts. Default: 60 s.
    pub max_elapsed: Duration,
    /// How delays are drawn. Default: [`Jitter::Full`].
    pub jitter: Jitter,
    /// The retry budget of the layer's key. Default: [`BudgetPolicy::default`].
    pub budget: BudgetPolicy,
    /// Seed of the jitter; `None` seeds from the system. Default: `None`.
    pub seed: Option<u64>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(10),
            max_elapsed: Duration::from_secs(60),
            jitter: Jitter::Full,
            budget: BudgetPolicy::default(),
            seed: None,
        }
    }
}

impl RetryPolicy {
    /// The ceiling of the delay before retry `n` (1-based): `base_delay × 2^(n−1)`, at most
    /// `max_delay`.
    pub fn ceiling(&self, retry: u32) -> Duration {
        let factor = 2u32
            .checked_pow(retry.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.base_delay.saturating_mul(factor).min(self.max_delay)
    }

    /// The delay before retry `n` (1-based), drawn from `rng` by the jitter mode.
    pub fn delay(&self, retry: u32, rng: &mut fastrand::Rng) -> Duration {
        let ceiling = self.ceiling(retry);
        match self.jitter {
            Jitter::None => ceiling,
            Jitter::Full => {
                let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
                Duration::from_nanos(rng.u64(0..=nanos))
            }
        }
    }

    fn rng(&self) -> fastrand::Rng {
        self.seed
            .map_or_else(fastrand::Rng::new, fastrand::Rng::with_seed)
    }
}

/// A retry budget: tower's [`TpsBudget`] with its arguments kept in range.
#[derive(Debug)]
pub struct RetryBudget {
    inner: TpsBudget,
}

impl RetryBudget {
    /// A budget by `policy`; out-of-range values are clamped (window to 1–60 s, ratio to
    /// 0–1000).
    pub fn new(policy: &BudgetPolicy) -> Self {
        let window = Duration::from_secs(policy.window.as_secs().clamp(1, 60));
        let ratio = if policy.ratio.is_finite() {
            policy.ratio.clamp(0.0, 1000.0)
        } else {
            0.0
        };
        let min = policy.min_per_sec.min(i32::MAX as u32 - 1);
        Self {
            inner: TpsBudget::new(window, min, ratio),
        }
    }

    /// Records a call (first attempts only).
    pub fn deposit(&self) {
        self.inner.deposit();
    }

    /// Takes one retry from the budget; `false` when it is spent.
    pub fn withdraw(&self) -> bool {
        self.inner.withdraw()
    }
}

/// What retry layers share: the key, the policy, its budget, the jitter and the hub's emitter.
#[derive(Debug)]
pub(crate) struct Retrier {
    key: Arc<str>,
    policy: RetryPolicy,
    budget: Arc<RetryBudget>,
    rng: Mutex<fastrand::Rng>,
    emitter: Arc<Emitter>,
}

impl Retrier {
    pub(crate) fn new(key: Arc<str>, policy: RetryPolicy, hub: &ResilienceHub) -> Self {
        Self {
            budget: hub.budget(&key, &policy.budget),
            rng: Mutex::new(policy.rng()),
            emitter: hub.emitter().clone(),
            key,
            policy,
        }
    }

    pub(crate) fn backoff(&self, retry: u32) -> Duration {
        self.policy.delay(retry, &mut lock(&self.rng))
    }

    /// Pays for a retry from the budget and announces it; `false` when the budget is spent.
    pub(crate) fn schedule(&self, attempt: u32, delay: Duration, kind: ErrorKind) -> bool {
        if !self.budget.withdraw() {
            tracing::warn!(key = %self.key, attempt, "retry budget exhausted; not retrying");
            self.emitter
                .count(|c| bump(&mut c.budget_rejections, &self.key));
            self.emitter.emit(|| ResilienceEvent::BudgetExhausted {
                key: self.key.clone(),
            });
            return false;
        }
        tracing::info!(key = %self.key, attempt, delay_ms = delay.as_millis() as u64, kind = kind.as_str(), "retrying");
        self.emitter.count(|c| bump(&mut c.retries, &self.key));
        self.emitter.emit(|| ResilienceEvent::RetryScheduled {
            key: self.key.clone(),
            attempt,
            delay,
            kind,
        });
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceiling_doubles_up_to_the_maximum() {
        let p = RetryPolicy {
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(1000),
            ..RetryPolicy::default()
        };
        let ceilings: Vec<u64> = (1..=6).map(|n| p.ceiling(n).as_millis() as u64).collect();
        assert_eq!(ceilings, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(p.ceiling(200), Duration::from_millis(1000), "no overflow");
    }

    #[test]
    fn full_jitter_stays_within_zero_and_the_ceiling() {
        let p = RetryPolicy {
            seed: Some(1),
            ..RetryPolicy::default()
        };
        let mut rng = p.rng();
        for n in 1..=8 {
            let ceiling = p.ceiling(n);
            let draws: Vec<Duration> = (0..500).map(|_| p.delay(n, &mut rng)).collect();
            assert!(draws.iter().all(|d| *d <= ceiling), "retry {n}");
            // Spread over the whole range, not clustered at the top (that would be no jitter).
            assert!(draws.iter().any(|d| *d < ceiling / 4), "retry {n}");
            assert!(draws.iter().any(|d| *d > ceiling * 3 / 4), "retry {n}");
        }
    }

    #[test]
    fn no_jitter_is_the_ceiling() {
        let p = RetryPolicy {
            jitter: Jitter::None,
            ..RetryPolicy::default()
        };
        let mut rng = p.rng();
        assert_eq!(p.delay(3, &mut rng), Duration::from_millis(800));
    }

    #[test]
    fn out_of_range_budget_arguments_do_not_panic() {
        let b = RetryBudget::new(&BudgetPolicy {
            ratio: f32::NAN,
            min_per_sec: u32::MAX,
            window: Duration::from_secs(3600),
        });
        b.deposit();
        let _ = b.withdraw();
    }
}
