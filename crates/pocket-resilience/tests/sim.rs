//! End to end with the `sim` model: 1,000 tasks through 30 % transient faults, and a model
//! that always fails behind a breaker.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use pocket_agent::{Agent, BoxModel, Tool, ToolContext, ToolError};
use pocket_models::{Faults, SimConfig, SimModel};
use pocket_resilience::{
    BreakerPolicy, BreakerState, BudgetPolicy, CircuitBreaker, ResilienceEvent, ResilienceHub,
    Retry, RetryPolicy,
};
use schemars::JsonSchema;
use serde::Deserialize;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;

#[derive(Deserialize, JsonSchema)]
struct CalcArgs {
    /// `A OP B`.
    expression: String,
}

/// Evaluates `A OP B` for `+`, `-`, `*`.
struct Calc;

impl Tool for Calc {
    type Args = CalcArgs;
    type Output = i64;

    fn name(&self) -> &str {
        "calculator"
    }

    fn description(&self) -> &str {
        "Evaluates A OP B."
    }

    async fn call(&self, args: CalcArgs, _: &ToolContext) -> Result<i64, ToolError> {
        let parts: Vec<&str> = args.expression.split_whitespace().collect();
        let [a, op, b] = parts[..] else {
            return Err(ToolError::invalid_arguments("want A OP B"));
        };
        let (a, b): (i64, i64) = (a.parse().unwrap(), b.parse().unwrap());
        Ok(match op {
            "+" => a + b,
            "-" => a - b,
            _ => a * b,
        })
    }
}

#[tokio::test(start_paused = true)]
async fn a_thousand_tasks_through_30_percent_transient_faults_all_succeed_within_the_budget() {
    let hub = ResilienceHub::new();
    let mut events = hub.subscribe();
    let sim = Arc::new(SimModel::new(SimConfig {
        seed: 30,
        faults: Faults::transient(0.3),
        retry_after_ms: 100,
        ..SimConfig::default()
    }));
    let budget = BudgetPolicy {
        ratio: 0.5,
        min_per_sec: 10,
        window: Duration::from_secs(10),
    };
    let retry = RetryPolicy {
        max_attempts: 10,
        budget: budget.clone(),
        seed: Some(30),
        ..RetryPolicy::default()
    };
    // A provider failing 30 % of calls at random is degraded, not down: the breaker is set
    // to open on long streaks or a large majority of failures only.
    let breaker = BreakerPolicy {
        consecutive_failures: 12,
        failure_rate: 0.8,
        window: 50,
        min_calls: 20,
        ..BreakerPolicy::default()
    };
    let model = Retry::new(
        CircuitBreaker::new(sim.clone(), &breaker, &hub),
        retry,
        &hub,
    );
    let agent = Agent::builder(model)
        .tool(Calc)
        .max_iterations(4)
        .run_timeout(Duration::from_secs(120))
        .build()
        .unwrap();

    let started = Instant::now();
    let permits = Arc::new(Semaphore::new(50));
    let mut runs = JoinSet::new();
    let mut rng = fastrand::Rng::with_seed(30);
    for _ in 0..1000 {
        let (a, b) = (rng.i64(2..1000), rng.i64(2..100));
        let agent = agent.clone();
        let permits = permits.clone();
        runs.spawn(async move {
            let _permit = permits.acquire_owned().await.unwrap();
            let out = agent.run(format!("What is {a} * {b}?")).await;
            (out, format!("{a} * {b} = {}", a * b))
        });
    }
    let mut ok = 0;
    while let Some(done) = runs.join_next().await {
        let (out, expected) = done.unwrap();
        match out {
            Ok(out) => {
                assert_eq!(out.answer, expected);
                ok += 1;
            }
            Err(e) => panic!("a task failed: {e}"),
        }
    }
    assert_eq!(ok, 1000);
    let elapsed = Instant::now() - started;

    let m = hub.metrics();
    let retries = m.retries_total["model:sim"];
    let calls = sim.calls();
    // Two model turns per task (the tool call, then the answer), each one logical call.
    let logical = 2000;
    assert_eq!(calls, logical + retries, "every retry is one more call");
    // About 3 in 7 of the logical calls need a retry at a 30 % fault rate.
    assert!(retries > 600, "{retries} retries");
    let windows = elapsed.as_secs().div_ceil(budget.window.as_secs()) + 1;
    let allowed = (f64::from(budget.ratio) * logical as f64) as u64
        + u64::from(budget.min_per_sec) * budget.window.as_secs() * windows;
    assert!(
        retries <= allowed,
        "{retries} retries, the budget allows {allowed} over {elapsed:?}"
    );
    assert!(m.budget_rejections_total.is_empty(), "no retry was refused");
    assert!(
        m.breaker_transitions_total.is_empty(),
        "the breaker stayed closed"
    );
    let scheduled = support::drain(&mut events)
        .iter()
        .filter(|e| matches!(e, ResilienceEvent::RetryScheduled { .. }))
        .count() as u64;
    assert!(
        scheduled > 0 && scheduled <= retries,
        "events may lag, never exceed"
    );
}

#[tokio::test(start_paused = true)]
async fn against_a_model_that_always_fails_the_breaker_lets_through_only_threshold_and_probes() {
    let hub = ResilienceHub::new();
    let mut events = hub.subscribe();
    let sim = Arc::new(SimModel::new(SimConfig {
        seed: 1,
        faults: Faults {
            server_error: 1.0,
            ..Faults::default()
        },
        ..SimConfig::default()
    }));
    let breaker = BreakerPolicy {
        consecutive_failures: 5,
        cool_down: Duration::from_secs(10),
        half_open_probes: 1,
        ..BreakerPolicy::default()
    };
    let model = BoxModel::new(Retry::new(
        CircuitBreaker::new(sim.clone(), &breaker, &hub),
        RetryPolicy {
            max_attempts: 4,
            seed: Some(1),
            ..RetryPolicy::default()
        },
        &hub,
    ));
    let agent = Agent::builder_boxed(model)
        .run_timeout(Duration::from_secs(45))
        .build()
        .unwrap();
    let started = Instant::now();
    let mut runs = JoinSet::new();
    for i in 0..50 {
        let agent = agent.clone();
        runs.spawn(async move { agent.run(format!("task {i}")).await });
    }
    while let Some(done) = runs.join_next().await {
        assert!(done.unwrap().is_err(), "nothing can succeed");
    }
    let elapsed = Instant::now() - started;

    let transitions: Vec<(BreakerState, BreakerState)> = support::drain(&mut events)
        .into_iter()
        .filter_map(|e| match e {
            ResilienceEvent::BreakerTransition { from, to, .. } => Some((from, to)),
            _ => None,
        })
        .collect();
    assert_eq!(transitions[0], (BreakerState::Closed, BreakerState::Open));
    let probes = transitions
        .iter()
        .filter(|t| **t == (BreakerState::Open, BreakerState::HalfOpen))
        .count() as u64;
    assert_eq!(sim.calls(), 5 + probes, "threshold + one call per probe");
    assert!(
        probes <= elapsed.as_secs() / 10 + 1,
        "{probes} probes in {elapsed:?}: at most one per cool-down"
    );
    assert!(probes >= 3, "the callers waited for the probes: {probes}");
    assert!(
        transitions
            .iter()
            .all(|t| *t != (BreakerState::HalfOpen, BreakerState::Closed)),
        "never closed"
    );
}
