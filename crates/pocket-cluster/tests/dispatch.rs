//! The pool and its selection policies: capability and capacity filters, open breakers,
//! health, both policies (the weighted one statistically, on a seeded generator), and
//! silent instances on virtual time.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use pocket_agent::{Agent, Completion, CompletionRequest, Model, ModelError};
use pocket_cluster::{FailReason, InstanceId, InstanceStatus, Pool, Selection, Slot, Unavailable};
use pocket_resilience::{BreakerPolicy, Component, Outcome, ResilienceHub};

/// A model named as asked, answering `ok`.
struct Named(&'static str);

impl Model for Named {
    fn name(&self) -> &str {
        self.0
    }

    async fn complete(&self, _: &CompletionRequest) -> Result<Completion, ModelError> {
        Ok(Completion::text("ok"))
    }
}

fn agent(model: &'static str) -> Agent {
    Agent::builder(Named(model)).build().unwrap()
}

fn caps(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

/// Takes `n` slots of the instance that alone has capability `tag`.
fn hold(pool: &Pool, tag: &str, n: usize) -> Vec<Slot> {
    (0..n)
        .map(|_| pool.acquire("a", &caps(&[tag])).unwrap())
        .collect()
}

fn info(pool: &Pool, id: &InstanceId) -> pocket_cluster::InstanceInfo {
    pool.instances().into_iter().find(|i| &i.id == id).unwrap()
}

#[test]
fn capabilities_filter_instances() {
    let pool = Pool::new(Selection::P2c);
    let plain = pool.register("a", agent("m"), caps(&[]), 4);
    let gpu = pool.register("a", agent("m"), caps(&["gpu", "fast"]), 4);
    for _ in 0..20 {
        let slot = pool.acquire("a", &caps(&["gpu"])).unwrap();
        assert_eq!(slot.id(), &gpu);
    }
    assert!(matches!(
        pool.acquire("a", &caps(&["tpu"])),
        Err(Unavailable::NoCapability { .. })
    ));
    assert!(matches!(
        pool.acquire("b", &[]),
        Err(Unavailable::NoInstance { .. })
    ));
    // No requirement: either instance.
    let mut seen = std::collections::HashSet::new();
    for _ in 0..50 {
        seen.insert(pool.acquire("a", &[]).unwrap().id().clone());
    }
    assert!(seen.contains(&plain) && seen.contains(&gpu));
}

#[test]
fn concurrency_limits_are_enforced_and_freed_on_drop() {
    let pool = Pool::new(Selection::P2c);
    let id = pool.register("a", agent("m"), caps(&[]), 2);
    let first = pool.acquire("a", &[]).unwrap();
    let second = pool.acquire("a", &[]).unwrap();
    assert_eq!(info(&pool, &id).status, InstanceStatus::Overloaded);
    assert_eq!(pool.spare("a", &[]), 0);
    assert!(matches!(
        pool.acquire("a", &[]),
        Err(Unavailable::AtCapacity { .. })
    ));
    drop(first);
    assert_eq!(info(&pool, &id).status, InstanceStatus::Busy);
    assert_eq!(pool.spare("a", &[]), 1);
    second.finish(Outcome::Success, Duration::from_millis(10));
    assert_eq!(info(&pool, &id).status, InstanceStatus::Active);
    assert_eq!(pool.spare("a", &[]), 2);
}

#[test]
fn p2c_balances_load_between_instances() {
    let pool = Pool::with_options(Selection::P2c, Some(1), None);
    let x = pool.register("a", agent("m"), caps(&[]), 10);
    let y = pool.register("a", agent("m"), caps(&[]), 10);
    let held: Vec<Slot> = (0..12).map(|_| pool.acquire("a", &[]).unwrap()).collect();
    // Two candidates: power of two choices always takes the less loaded one.
    assert_eq!(info(&pool, &x).in_flight, 6);
    assert_eq!(info(&pool, &y).in_flight, 6);
    drop(held);
}

#[test]
fn p2c_prefers_the_less_loaded_and_then_the_healthier() {
    let pool = Pool::with_options(Selection::P2c, Some(2), None);
    let busy = pool.register("a", agent("m"), caps(&["x"]), 10);
    let idle = pool.register("a", agent("m"), caps(&["y"]), 10);
    let held = hold(&pool, "x", 5);
    for _ in 0..20 {
        assert_eq!(pool.acquire("a", &[]).unwrap().id(), &idle);
    }
    // Equal load: the healthier wins. Lower `idle`'s health by two failures (100 → 80);
    // `busy` finishes its five runs with success (health stays 100).
    for _ in 0..2 {
        pool.acquire("a", &caps(&["y"]))
            .unwrap()
            .finish(Outcome::Failure, Duration::ZERO);
    }
    drop(held);
    assert_eq!(info(&pool, &idle).health, 80);
    for _ in 0..20 {
        assert_eq!(pool.acquire("a", &[]).unwrap().id(), &busy);
    }
}

/// The weighted policy picks each instance in proportion to the seed's weight
/// `(100 − load%) + health + 10 × free slots`, within 2 % over 60,000 seeded draws.
#[test]
fn weighted_selection_follows_the_seed_weights() {
    let pool = Pool::with_options(Selection::Weighted, Some(42), None);
    let a = pool.register("a", agent("m"), caps(&["a"]), 10);
    let b = pool.register("a", agent("m"), caps(&["b"]), 10);
    let c = pool.register("a", agent("m"), caps(&["c"]), 10);
    let _b = hold(&pool, "b", 5);
    let _c = hold(&pool, "c", 8);
    // Lower c's health to 90 with one failure, keeping its 8 held slots.
    pool.acquire("a", &caps(&["c"]))
        .unwrap()
        .finish(Outcome::Failure, Duration::ZERO);
    assert_eq!(info(&pool, &c).health, 90);
    // a: 100 + 100 + 100 = 300; b: 50 + 100 + 50 = 200; c: 20 + 90 + 20 = 130.
    let weights = [(a.clone(), 300.0), (b.clone(), 200.0), (c.clone(), 130.0)];
    let total: f64 = weights.iter().map(|(_, w)| w).sum();
    let draws = 60_000;
    let mut counts = std::collections::HashMap::new();
    for _ in 0..draws {
        let slot = pool.acquire("a", &[]).unwrap();
        *counts.entry(slot.id().clone()).or_insert(0u32) += 1;
    }
    let mut chi2 = 0.0;
    for (id, w) in &weights {
        let expected = f64::from(draws) * w / total;
        let seen = f64::from(counts[id]);
        assert!(
            (seen - expected).abs() / expected < 0.02,
            "{id}: {seen} draws, expected {expected:.0}"
        );
        chi2 += (seen - expected).powi(2) / expected;
    }
    // 2 degrees of freedom: 13.8 is the 0.1 % critical value.
    assert!(chi2 < 13.8, "chi-square {chi2:.2}");
}

#[test]
fn degraded_instances_are_used_only_when_no_healthy_one_has_room() {
    let pool = Pool::with_options(Selection::Weighted, Some(7), None);
    let sick = pool.register("a", agent("m"), caps(&["s"]), 4);
    let well = pool.register("a", agent("m"), caps(&["w"]), 1);
    for _ in 0..6 {
        pool.acquire("a", &caps(&["s"]))
            .unwrap()
            .finish(Outcome::Failure, Duration::ZERO);
    }
    assert_eq!(info(&pool, &sick).health, 40);
    assert_ne!(info(&pool, &sick).status, InstanceStatus::Failed);
    let first = pool.acquire("a", &[]).unwrap();
    assert_eq!(first.id(), &well);
    // The healthy one is full: the degraded one takes the next.
    let second = pool.acquire("a", &[]).unwrap();
    assert_eq!(second.id(), &sick);
    // Below 30 it is failed and takes nothing.
    drop((first, second));
    for _ in 0..2 {
        pool.acquire("a", &caps(&["s"]))
            .unwrap()
            .finish(Outcome::Failure, Duration::ZERO);
    }
    let i = info(&pool, &sick);
    assert_eq!(i.status, InstanceStatus::Failed);
    assert_eq!(i.failure, Some(FailReason::Unhealthy { health: 20 }));
    assert!(matches!(
        pool.acquire("a", &caps(&["s"])),
        Err(Unavailable::AllFailed { .. })
    ));
}

#[test]
fn outcomes_update_health_and_mean_duration() {
    let pool = Pool::new(Selection::P2c);
    let id = pool.register("a", agent("m"), caps(&[]), 1);
    pool.acquire("a", &[])
        .unwrap()
        .finish(Outcome::Failure, Duration::from_secs(1));
    pool.acquire("a", &[])
        .unwrap()
        .finish(Outcome::Success, Duration::from_secs(2));
    pool.acquire("a", &[])
        .unwrap()
        .finish(Outcome::Ignored, Duration::from_secs(100));
    let i = info(&pool, &id);
    assert_eq!(i.health, 95); // 100 − 10 + 5
    assert_eq!((i.succeeded, i.failed), (1, 1));
    // EWMA: 1, then 1 + 0.2 × (2 − 1); ignored outcomes do not count.
    assert!((i.mean_duration_secs - 1.2).abs() < 1e-9);
    // Success never lifts health above 100.
    for _ in 0..5 {
        pool.acquire("a", &[])
            .unwrap()
            .finish(Outcome::Success, Duration::ZERO);
    }
    assert_eq!(info(&pool, &id).health, 100);
}

#[tokio::test(start_paused = true)]
async fn open_breakers_keep_work_away_until_their_cool_down_passes() {
    let hub = ResilienceHub::new();
    let policy = BreakerPolicy {
        consecutive_failures: 1,
        cool_down: Duration::from_secs(30),
        ..BreakerPolicy::default()
    };
    let flaky = hub.breaker_or_insert(Component::Model, "flaky", &policy);
    let agent_b = hub.breaker_or_insert(Component::Agent, "b", &policy);
    let pool = Pool::with_options(Selection::P2c, Some(3), Some(hub.clone()));
    let on_flaky = pool.register("a", agent("flaky"), caps(&[]), 4);
    let on_steady = pool.register("a", agent("steady"), caps(&[]), 4);
    pool.register("b", agent("steady"), caps(&[]), 4);

    flaky.try_acquire().unwrap().record(Outcome::Failure);
    agent_b.try_acquire().unwrap().record(Outcome::Failure);
    assert!(info(&pool, &on_flaky).breaker_open);
    // The instance whose model breaker is open is passed over while another has room...
    for _ in 0..20 {
        assert_eq!(pool.acquire("a", &[]).unwrap().id(), &on_steady);
    }
    // ...and used only when none has (its model may be a fallback chain that still serves).
    let full: Vec<Slot> = (0..4).map(|_| pool.acquire("a", &[]).unwrap()).collect();
    assert!(full.iter().all(|s| s.id() == &on_steady));
    assert_eq!(pool.acquire("a", &[]).unwrap().id(), &on_flaky);
    drop(full);
    assert_eq!(pool.spare("a", &[]), 8);
    // Every instance of `b` is behind its agent's open breaker.
    assert!(matches!(
        pool.acquire("b", &[]),
        Err(Unavailable::BreakerOpen { .. })
    ));
    assert!(pool.claimable().iter().all(|(agent, ..)| &**agent != "b"));

    assert_eq!(pool.spare("b", &[]), 0);
    // After the cool-down, the next call may probe: the instances are eligible again.
    tokio::time::advance(Duration::from_secs(31)).await;
    assert!(pool.acquire("b", &[]).is_ok());
    assert!(!info(&pool, &on_flaky).breaker_open);
}

#[tokio::test(start_paused = true)]
async fn an_instance_silent_past_the_timeout_is_failed_and_idle_ones_are_alive() {
    let pool = Pool::new(Selection::P2c);
    let stuck = pool.register("a", agent("m"), caps(&["s"]), 2);
    let idle = pool.register("a", agent("m"), caps(&["i"]), 2);
    let slot = pool.acquire("a", &caps(&["s"])).unwrap();
    let timeout = Duration::from_secs(120);

    tokio::time::advance(Duration::from_secs(100)).await;
    assert!(pool.check(timeout).is_empty());
    // A heartbeat (progress) resets the silence.
    slot.heartbeat();
    tokio::time::advance(Duration::from_secs(100)).await;
    assert!(pool.check(timeout).is_empty());
    tokio::time::advance(Duration::from_secs(21)).await;
    let failed = pool.check(timeout);
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].0, stuck);
    assert!(matches!(failed[0].2, FailReason::Silent { silent_secs } if silent_secs >= 120.0));
    assert_eq!(info(&pool, &stuck).status, InstanceStatus::Failed);
    // The idle instance was never silent with work in flight.
    assert_eq!(info(&pool, &idle).status, InstanceStatus::Active);
    assert!(info(&pool, &idle).last_heartbeat_secs_ago < 1.0);
    // Work goes elsewhere; unregistering removes it.
    assert_eq!(pool.acquire("a", &[]).unwrap().id(), &idle);
    assert!(pool.unregister(&stuck));
    assert_eq!(pool.instances().len(), 1);
    drop(slot);
}
