//! The breaker's state machine against a reference model, on a hand-driven clock.

use std::time::Duration;

use proptest::prelude::*;
use tokio::time::Instant;

use super::*;

fn policy() -> BreakerPolicy {
    BreakerPolicy {
        consecutive_failures: 3,
        failure_rate: 0.5,
        window: 6,
        min_calls: 4,
        cool_down: Duration::from_secs(10),
        half_open_probes: 2,
    }
}

#[test]
fn opens_after_consecutive_failures_and_fails_fast_with_the_probe_time() {
    let b = Breaker::new(Component::Model, "m", policy());
    let t0 = Instant::now();
    for _ in 0..2 {
        b.try_acquire_at(t0)
            .map(|p| p.record_at(t0, Outcome::Failure))
            .ok();
    }
    assert_eq!(b.state(), BreakerState::Closed);
    b.try_acquire_at(t0)
        .map(|p| p.record_at(t0, Outcome::Failure))
        .ok();
    assert_eq!(b.state(), BreakerState::Open);
    let later = t0 + Duration::from_secs(4);
    assert_eq!(
        b.try_acquire_at(later).err(),
        Some(Rejected {
            retry_in: Duration::from_secs(6)
        })
    );
}

#[test]
fn opens_on_the_failure_rate_once_the_window_has_min_calls() {
    let b = Breaker::new(Component::Model, "m", policy());
    let t = Instant::now();
    let run = |o| b.try_acquire_at(t).map(|p| p.record_at(t, o)).ok();
    // F S F: rate 2/3 but only 3 calls (< min_calls 4).
    run(Outcome::Failure);
    run(Outcome::Success);
    run(Outcome::Failure);
    assert_eq!(b.state(), BreakerState::Closed);
    // S: 2/4 = 0.5 reaches the rate.
    run(Outcome::Success);
    assert_eq!(b.state(), BreakerState::Closed, "a success never opens");
    run(Outcome::Failure);
    assert_eq!(b.state(), BreakerState::Open, "3/5 failed");
}

#[test]
fn half_open_admits_the_probe_limit_and_a_success_closes() {
    let b = Breaker::new(Component::Model, "m", policy());
    let t0 = Instant::now();
    for _ in 0..3 {
        b.try_acquire_at(t0)
            .map(|p| p.record_at(t0, Outcome::Failure))
            .ok();
    }
    let t1 = t0 + Duration::from_secs(10);
    let p1 = b.try_acquire_at(t1);
    let p2 = b.try_acquire_at(t1);
    let p3 = b.try_acquire_at(t1);
    assert_eq!(b.state(), BreakerState::HalfOpen);
    assert!(p1.as_ref().is_ok_and(Permit::is_probe));
    assert!(p2.is_ok());
    assert_eq!(
        p3.err(),
        Some(Rejected {
            retry_in: Duration::from_secs(1)
        }),
        "third probe refused; waits a tenth of the cool-down"
    );
    // A cancelled probe gives its slot back.
    drop(p2);
    let p4 = b.try_acquire_at(t1);
    assert!(p4.is_ok());
    p1.map(|p| p.record_at(t1, Outcome::Success)).ok();
    assert_eq!(b.state(), BreakerState::Closed);
    // The other probe's late result belongs to an old generation and changes nothing.
    p4.map(|p| p.record_at(t1, Outcome::Failure)).ok();
    assert_eq!(b.snapshot().consecutive_failures, 0);
}

#[test]
fn a_failed_probe_opens_again_for_a_full_cool_down() {
    let b = Breaker::new(Component::Model, "m", policy());
    let t0 = Instant::now();
    for _ in 0..3 {
        b.try_acquire_at(t0)
            .map(|p| p.record_at(t0, Outcome::Failure))
            .ok();
    }
    let t1 = t0 + Duration::from_secs(12);
    b.try_acquire_at(t1)
        .map(|p| p.record_at(t1, Outcome::Failure))
        .ok();
    assert_eq!(b.state(), BreakerState::Open);
    assert_eq!(
        b.try_acquire_at(t1 + Duration::from_secs(1)).err(),
        Some(Rejected {
            retry_in: Duration::from_secs(9)
        })
    );
    assert_eq!(b.snapshot().opened_total, 2);
}

/// What a test does to the breaker.
#[derive(Debug, Clone, Copy)]
enum Op {
    /// A call that ends with this outcome at once.
    Call(Outcome),
    /// A call admitted now and finished later (by `Finish`), to test stale results.
    Start,
    /// The oldest started call ends.
    Finish(Outcome),
    /// Time passes.
    Advance(u64),
}

fn op() -> impl Strategy<Value = Op> {
    let outcome = prop_oneof![
        4 => Just(Outcome::Failure),
        3 => Just(Outcome::Success),
        1 => Just(Outcome::Ignored),
    ];
    prop_oneof![
        6 => outcome.clone().prop_map(Op::Call),
        1 => Just(Op::Start),
        1 => outcome.prop_map(Op::Finish),
        2 => (0u64..15_000).prop_map(Op::Advance),
    ]
}

/// The reference: the rules in plain words, recomputed from a log of everything that happened
/// since the breaker last closed, with no counters kept incrementally.
#[derive(Debug)]
struct Reference {
    policy: BreakerPolicy,
    state: BreakerState,
    /// Outcomes counted since the breaker last closed (closed state only).
    log: Vec<bool>,
    open_until_ms: u64,
    probes: u32,
    /// Identifies the state a call was admitted in; a transition starts a new era.
    era: u64,
}

impl Reference {
    fn new(policy: BreakerPolicy) -> Self {
        Self {
            policy,
            state: BreakerState::Closed,
            log: Vec::new(),
            open_until_ms: 0,
            probes: 0,
            era: 0,
        }
    }

    fn to(&mut self, state: BreakerState, now_ms: u64) {
        self.era += 1;
        self.state = state;
        match state {
            BreakerState::Closed => self.log.clear(),
            BreakerState::Open => {
                self.open_until_ms = now_ms + self.policy.cool_down.as_millis() as u64;
            }
            BreakerState::HalfOpen => self.probes = 0,
        }
    }

    /// `Some((era, probe))` when admitted.
    fn admit(&mut self, now_ms: u64) -> Option<(u64, bool)> {
        if self.state == BreakerState::Open && now_ms >= self.open_until_ms {
            self.to(BreakerState::HalfOpen, now_ms);
        }
        match self.state {
            BreakerState::Closed => Some((self.era, false)),
            BreakerState::Open => None,
            BreakerState::HalfOpen if self.probes < self.policy.half_open_probes => {
                self.probes += 1;
                Some((self.era, true))
            }
            BreakerState::HalfOpen => None,
        }
    }

    fn finish(&mut self, era: u64, outcome: Outcome, now_ms: u64) {
        if era != self.era {
            return;
        }
        match (self.state, outcome) {
            (BreakerState::Closed, Outcome::Ignored) => {}
            (BreakerState::Closed, o) => {
                self.log.push(o == Outcome::Failure);
                let streak = self.log.iter().rev().take_while(|f| **f).count() as u32;
                let window: Vec<bool> = self
                    .log
                    .iter()
                    .rev()
                    .take(self.policy.window as usize)
                    .copied()
                    .collect();
                let failed = window.iter().filter(|f| **f).count();
                let rate_trips = window.len() >= self.policy.min_calls as usize
                    && failed as f64 / window.len() as f64 >= self.policy.failure_rate;
                // Only a failure can open the breaker.
                let failed_now = o == Outcome::Failure;
                if failed_now && (streak >= self.policy.consecutive_failures || rate_trips) {
                    self.to(BreakerState::Open, now_ms);
                }
            }
            (BreakerState::HalfOpen, Outcome::Success) => self.to(BreakerState::Closed, now_ms),
            (BreakerState::HalfOpen, Outcome::Failure) => self.to(BreakerState::Open, now_ms),
            (BreakerState::HalfOpen, Outcome::Ignored) => self.probes -= 1,
            (BreakerState::Open, _) => {}
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn breaker_matches_the_reference(
        ops in proptest::collection::vec(op(), 1..120),
        streak in 1u32..5,
        rate in prop_oneof![Just(0.5), Just(0.75), Just(2.0)],
        probes in 1u32..3,
    ) {
        let policy = BreakerPolicy {
            consecutive_failures: streak,
            failure_rate: rate,
            window: 5,
            min_calls: 3,
            cool_down: Duration::from_secs(5),
            half_open_probes: probes,
        };
        let breaker = Breaker::new(Component::Tool, "t", policy.clone());
        let mut reference = Reference::new(policy);
        let t0 = Instant::now();
        let mut now_ms = 0u64;
        let mut pending: std::collections::VecDeque<(Permit<'_>, u64)> = Default::default();
        for op in ops {
            let now = t0 + Duration::from_millis(now_ms);
            match op {
                Op::Advance(ms) => now_ms += ms,
                Op::Call(outcome) => {
                    let admitted = breaker.try_acquire_at(now);
                    let expected = reference.admit(now_ms);
                    prop_assert_eq!(admitted.is_ok(), expected.is_some(), "admission at {}ms", now_ms);
                    if let (Ok(permit), Some((era, probe))) = (admitted, expected) {
                        prop_assert_eq!(permit.is_probe(), probe);
                        permit.record_at(now, outcome);
                        reference.finish(era, outcome, now_ms);
                    }
                }
                Op::Start => {
                    let admitted = breaker.try_acquire_at(now);
                    let expected = reference.admit(now_ms);
                    prop_assert_eq!(admitted.is_ok(), expected.is_some());
                    if let (Ok(permit), Some((era, _))) = (admitted, expected) {
                        pending.push_back((permit, era));
                    }
                }
                Op::Finish(outcome) => {
                    if let Some((permit, era)) = pending.pop_front() {
                        permit.record_at(now, outcome);
                        reference.finish(era, outcome, now_ms);
                    }
                }
            }
            prop_assert_eq!(breaker.state(), reference.state, "state after {:?} at {}ms", op, now_ms);
            if reference.state == BreakerState::Open && now_ms < reference.open_until_ms {
                let now = t0 + Duration::from_millis(now_ms);
                prop_assert_eq!(
                    breaker.try_acquire_at(now).err(),
                    Some(Rejected { retry_in: Duration::from_millis(reference.open_until_ms - now_ms) })
                );
            }
        }
        // Drop the rest unrecorded: probes are given back.
        for (permit, _) in pending.drain(..) {
            drop(permit);
        }
    }
}
