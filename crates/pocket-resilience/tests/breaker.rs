//! Circuit breakers in front of models and tools, on virtual time.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use pocket_agent::{
    Completion, CompletionRequest, DynTool, Model, ModelError, ToolContext, ToolError,
};
use pocket_resilience::{
    BreakerPolicy, BreakerState, BreakerTool, CircuitBreaker, Component, DeadlineWouldPass, Jitter,
    ResilienceEvent, ResilienceHub, Retry, RetryPolicy,
};
use support::{Timed, drain, ms, names, request, server_error};
use tokio::task::JoinSet;
use tokio::time::Instant;

fn breaker(consecutive: u32, cool_down: Duration, probes: u32) -> BreakerPolicy {
    BreakerPolicy {
        consecutive_failures: consecutive,
        cool_down,
        half_open_probes: probes,
        ..BreakerPolicy::default()
    }
}

fn transitions(events: &[ResilienceEvent]) -> Vec<(BreakerState, BreakerState)> {
    events
        .iter()
        .filter_map(|e| match e {
            ResilienceEvent::BreakerTransition { from, to, .. } => Some((*from, *to)),
            _ => None,
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn opens_fails_fast_probes_and_closes_with_events_and_metrics() {
    let hub = ResilienceHub::new();
    let mut rx = hub.subscribe();
    let model = Arc::new(Timed::failing_first("m", 3, server_error));
    let guarded = CircuitBreaker::new(model.clone(), &breaker(3, ms(1000), 1), &hub);
    for _ in 0..3 {
        guarded.complete(&request()).await.unwrap_err();
    }
    assert_eq!(guarded.breaker().state(), BreakerState::Open);
    assert_eq!(hub.metrics().breaker_state["model:m"], 2);

    tokio::time::advance(ms(400)).await;
    match guarded.complete(&request()).await {
        Err(ModelError::CircuitOpen { key, retry_in }) => {
            assert_eq!(key, "m");
            assert_eq!(retry_in, ms(600), "carries when it will probe");
        }
        other => panic!("expected an open circuit, got {other:?}"),
    }
    assert_eq!(model.calls(), 3, "failed fast: the model was not called");

    tokio::time::advance(ms(600)).await;
    guarded.complete(&request()).await.unwrap();
    assert_eq!(guarded.breaker().state(), BreakerState::Closed);
    use BreakerState::*;
    assert_eq!(
        transitions(&drain(&mut rx)),
        [(Closed, Open), (Open, HalfOpen), (HalfOpen, Closed)]
    );
    let m = hub.metrics();
    assert_eq!(m.breaker_transitions_total["model:m"], 3);
    assert_eq!(m.breaker_state["model:m"], 0);
}

/// A model that takes 100 ms per call and answers.
struct Slow(std::sync::atomic::AtomicUsize);

impl Model for Slow {
    fn name(&self) -> &str {
        "slow"
    }

    async fn complete(&self, _: &CompletionRequest) -> Result<Completion, ModelError> {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        tokio::time::sleep(ms(100)).await;
        Ok(Completion::text("ok"))
    }
}

#[tokio::test(start_paused = true)]
async fn half_open_lets_only_the_probe_limit_through() {
    let hub = ResilienceHub::new();
    let slow = Arc::new(Slow(Default::default()));
    let guarded = Arc::new(CircuitBreaker::new(
        slow.clone(),
        &breaker(1, ms(1000), 2),
        &hub,
    ));
    // Open it by hand: one failure recorded on the shared breaker.
    let b = hub.breaker(Component::Model, "slow").unwrap();
    b.try_acquire()
        .unwrap()
        .record(pocket_resilience::Outcome::Failure);
    assert_eq!(b.state(), BreakerState::Open);
    tokio::time::advance(ms(1000)).await;

    let mut calls = JoinSet::new();
    for _ in 0..5 {
        let guarded = guarded.clone();
        calls.spawn(async move { guarded.complete(&request()).await });
    }
    let (mut ok, mut refused) = (0, 0);
    while let Some(done) = calls.join_next().await {
        match done.unwrap() {
            Ok(_) => ok += 1,
            Err(ModelError::CircuitOpen { retry_in, .. }) => {
                assert_eq!(retry_in, ms(100), "a tenth of the cool-down");
                refused += 1;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!((ok, refused), (2, 3));
    assert_eq!(slow.0.load(std::sync::atomic::Ordering::SeqCst), 2);
    assert_eq!(b.state(), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_single_route_waits_for_the_probe_instead_of_failing() {
    let hub = ResilienceHub::new();
    let mut rx = hub.subscribe();
    let model = Arc::new(Timed::failing_first("m", 3, server_error));
    let retry = RetryPolicy {
        max_attempts: 5,
        base_delay: ms(100),
        jitter: Jitter::None,
        ..RetryPolicy::default()
    };
    let layered = Retry::new(
        CircuitBreaker::new(model.clone(), &breaker(3, ms(5000), 1), &hub),
        retry,
        &hub,
    );
    let t0 = Instant::now();
    layered.complete(&request()).await.unwrap();
    // Failures at 0, 100, 300 open the breaker; the retry at 700 finds it open and waits
    // until the probe time (300 + 5000), when the probe succeeds.
    assert_eq!(model.times_ms(t0), [0, 100, 300, 5300]);
    let events = drain(&mut rx);
    assert_eq!(
        names(&events),
        [
            "retry_scheduled",
            "retry_scheduled",
            "breaker_transition",
            "retry_scheduled",
            "waiting_for_cool_down",
            "breaker_transition",
            "breaker_transition",
        ]
    );
    assert!(events.contains(&ResilienceEvent::WaitingForCoolDown {
        keys: vec![Arc::from("model:m")],
        wait: ms(4600),
    }));
}

#[tokio::test(start_paused = true)]
async fn a_cool_down_past_the_deadline_fails_at_once_with_a_clear_error() {
    let hub = ResilienceHub::new();
    let model = Arc::new(Timed::always("m", server_error));
    let layered = Retry::new(
        CircuitBreaker::new(model.clone(), &breaker(1, ms(30_000), 1), &hub),
        RetryPolicy::default(),
        &hub,
    );
    layered.complete(&request()).await.unwrap_err();
    assert_eq!(layered_state(&hub), BreakerState::Open);
    let calls = model.calls();
    let t0 = Instant::now();
    let mut req = request();
    req.deadline = Some(t0 + ms(2000));
    let err = layered.complete(&req).await.unwrap_err();
    let wait = DeadlineWouldPass::find(&err).expect("a DeadlineWouldPass source");
    assert_eq!(&*wait.key, "model:m");
    assert_eq!(wait.deadline_in, ms(2000));
    assert!(wait.available_in > ms(29_000));
    assert_eq!(Instant::now(), t0, "did not wait");
    assert_eq!(
        err.to_string(),
        "every route is unavailable until after the call's deadline"
    );
    assert_eq!(
        err.classify_kind(),
        pocket_agent::ErrorKind::Timeout,
        "classifies as a timeout"
    );
    assert_eq!(model.calls(), calls, "the model was not called");
}

fn layered_state(hub: &ResilienceHub) -> BreakerState {
    hub.breaker(Component::Model, "m").unwrap().state()
}

trait KindOf {
    fn classify_kind(&self) -> pocket_agent::ErrorKind;
}

impl KindOf for ModelError {
    fn classify_kind(&self) -> pocket_agent::ErrorKind {
        pocket_agent::Classify::classify(self).kind
    }
}

#[tokio::test(start_paused = true)]
async fn a_tool_breaker_opens_and_the_tool_is_not_called() {
    let hub = ResilienceHub::new();
    let flaky = Arc::new(support::FlakyTool::new("lookup", false, 100));
    let tool = BreakerTool::new(flaky.clone(), &breaker(2, ms(1000), 1), &hub);
    let ctx = ToolContext::detached();
    for _ in 0..2 {
        tool.call(serde_json::json!({}), &ctx).await.unwrap_err();
    }
    let err = tool.call(serde_json::json!({}), &ctx).await.unwrap_err();
    assert!(
        matches!(&err, ToolError::CircuitOpen { key, retry_in } if key == "lookup" && *retry_in == ms(1000)),
        "{err}"
    );
    assert_eq!(flaky.calls(), 2);
    assert_eq!(hub.metrics().breaker_state["tool:lookup"], 2);
}

#[tokio::test(start_paused = true)]
async fn refusals_do_not_open_a_model_breaker() {
    let hub = ResilienceHub::new();
    let model = Arc::new(Timed::always("m", support::auth_error));
    let guarded = CircuitBreaker::new(model.clone(), &breaker(2, ms(1000), 1), &hub);
    for _ in 0..5 {
        guarded.complete(&request()).await.unwrap_err();
    }
    assert_eq!(guarded.breaker().state(), BreakerState::Closed);
    assert_eq!(model.calls(), 5);
}
