//! The fallback chain: order, refusals, open and rate-limited routes, waiting for the
//! earliest route against the deadline, and attempts counted across hops.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use pocket_agent::{BoxModel, Completion, ErrorKind, Model, ModelError};
use pocket_resilience::{
    BreakerPolicy, CircuitBreaker, Component, DeadlineWouldPass, Fallback, FallbackPolicy, Jitter,
    Outcome, ResilienceEvent, ResilienceHub, Retry, RetryPolicy,
};
use support::{Timed, drain, ms, request, server_error};
use tokio::time::Instant;

fn retry(max_attempts: u32) -> RetryPolicy {
    RetryPolicy {
        max_attempts,
        base_delay: ms(100),
        jitter: Jitter::None,
        ..RetryPolicy::default()
    }
}

fn breaker() -> BreakerPolicy {
    BreakerPolicy {
        consecutive_failures: 50,
        cool_down: Duration::from_secs(30),
        ..BreakerPolicy::default()
    }
}

/// `Retry(CircuitBreaker(model))`.
fn route(model: &Arc<Timed>, max_attempts: u32, hub: &ResilienceHub) -> BoxModel {
    BoxModel::new(Retry::new(
        CircuitBreaker::new(model.clone(), &breaker(), hub),
        retry(max_attempts),
        hub,
    ))
}

fn chain(routes: &[&Arc<Timed>], max_attempts: u32, hub: &ResilienceHub) -> Fallback {
    let mut routes = routes.iter().map(|m| route(m, 2, hub));
    let primary = routes.next().unwrap();
    Fallback::new(
        primary,
        routes,
        FallbackPolicy {
            max_attempts,
            ..FallbackPolicy::default()
        },
        hub,
    )
}

fn fallbacks(events: &[ResilienceEvent]) -> Vec<(String, String, ErrorKind)> {
    events
        .iter()
        .filter_map(|e| match e {
            ResilienceEvent::FallbackTaken { from, to, kind } => {
                Some((from.to_string(), to.to_string(), *kind))
            }
            _ => None,
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn routes_are_tried_in_order_after_their_own_retries() {
    let hub = ResilienceHub::new();
    let mut rx = hub.subscribe();
    let a = Arc::new(Timed::always("a", server_error));
    let b = Arc::new(Timed::always("b", server_error));
    let c = Arc::new(Timed::ok("c", "from c"));
    let model = chain(&[&a, &b, &c], 10, &hub);
    assert_eq!(model.name(), "a");
    assert_eq!(model.routes().collect::<Vec<_>>(), ["a", "b", "c"]);
    let t0 = Instant::now();
    let out = model.complete(&request()).await.unwrap();
    assert_eq!(out.content.as_deref(), Some("from c"));
    assert_eq!(a.times_ms(t0), [0, 100]);
    assert_eq!(b.times_ms(t0), [100, 200]);
    assert_eq!(c.times_ms(t0), [200]);
    assert_eq!(
        fallbacks(&drain(&mut rx)),
        [
            ("model:a".into(), "model:b".into(), ErrorKind::Network),
            ("model:b".into(), "model:c".into(), ErrorKind::Network),
        ]
    );
    let m = hub.metrics();
    assert_eq!(m.fallbacks_total["model:a"], 1);
    assert_eq!(m.fallbacks_total["model:b"], 1);
}

#[tokio::test(start_paused = true)]
async fn auth_and_validation_errors_do_not_fall_through() {
    for error in [support::auth_error as fn() -> ModelError, || {
        ModelError::InvalidRequest {
            status: 400,
            message: "bad".into(),
        }
    }] {
        let hub = ResilienceHub::new();
        let a = Arc::new(Timed::always("a", error));
        let b = Arc::new(Timed::ok("b", "from b"));
        let model = chain(&[&a, &b], 10, &hub);
        let err = model.complete(&request()).await.unwrap_err();
        assert!(!pocket_agent::Classify::is_retryable(&err), "{err}");
        assert_eq!((a.calls(), b.calls()), (1, 0), "{err}");
        assert!(hub.metrics().fallbacks_total.is_empty());
    }
}

#[tokio::test(start_paused = true)]
async fn context_length_falls_through_without_retrying() {
    let hub = ResilienceHub::new();
    let mut rx = hub.subscribe();
    let a = Arc::new(Timed::always("small", || ModelError::ContextLength {
        message: "too long".into(),
    }));
    let b = Arc::new(Timed::ok("large", "from the large model"));
    let model = chain(&[&a, &b], 10, &hub);
    let out = model.complete(&request()).await.unwrap();
    assert_eq!(out.content.as_deref(), Some("from the large model"));
    assert_eq!((a.calls(), b.calls()), (1, 1));
    assert_eq!(
        fallbacks(&drain(&mut rx)),
        [(
            "model:small".into(),
            "model:large".into(),
            ErrorKind::Resource
        )]
    );
}

#[tokio::test(start_paused = true)]
async fn an_open_circuit_falls_through_at_once_and_stays_skipped() {
    let hub = ResilienceHub::new();
    let mut rx = hub.subscribe();
    let a = Arc::new(Timed::ok("a", "from a"));
    let b = Arc::new(Timed::ok("b", "from b"));
    let model = chain(&[&a, &b], 10, &hub);
    // Open a's breaker.
    let breaker = hub.breaker(Component::Model, "a").unwrap();
    while let Ok(permit) = breaker.try_acquire() {
        permit.record(Outcome::Failure);
    }
    let t0 = Instant::now();
    for _ in 0..2 {
        let out = model.complete(&request()).await.unwrap();
        assert_eq!(out.content.as_deref(), Some("from b"));
    }
    assert_eq!(Instant::now(), t0, "no waiting");
    assert_eq!((a.calls(), b.calls()), (0, 2));
    assert_eq!(
        fallbacks(&drain(&mut rx)),
        vec![("model:a".into(), "model:b".into(), ErrorKind::Resource); 2]
    );
    // After the cool-down a is tried again (its probe succeeds).
    tokio::time::advance(Duration::from_secs(30)).await;
    let out = model.complete(&request()).await.unwrap();
    assert_eq!(out.content.as_deref(), Some("from a"));
}

#[tokio::test(start_paused = true)]
async fn a_rate_limited_route_is_held_for_its_retry_after() {
    let hub = ResilienceHub::new();
    let a = Arc::new(Timed::failing_first("a", 1, || {
        support::rate_limited(ms(5000))
    }));
    let b = Arc::new(Timed::ok("b", "from b"));
    let model = chain(&[&a, &b], 10, &hub);
    let t0 = Instant::now();
    model.complete(&request()).await.unwrap();
    assert_eq!(Instant::now(), t0, "went to b instead of waiting 5 s for a");
    tokio::time::advance(ms(4000)).await;
    model.complete(&request()).await.unwrap();
    assert_eq!((a.calls(), b.calls()), (1, 2), "a skipped while held");
    tokio::time::advance(ms(1000)).await;
    let out = model.complete(&request()).await.unwrap();
    assert_eq!(out.content.as_deref(), Some("ok"), "a again");
    assert_eq!(a.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn when_every_route_is_unavailable_the_call_waits_for_the_earliest() {
    let hub = ResilienceHub::new();
    let mut rx = hub.subscribe();
    let a = Arc::new(Timed::failing_first("a", 1, || {
        support::rate_limited(ms(2000))
    }));
    let b = Arc::new(Timed::always("b", || support::rate_limited(ms(3000))));
    let model = chain(&[&a, &b], 10, &hub);
    let t0 = Instant::now();
    let out = model.complete(&request()).await.unwrap();
    assert_eq!(out.content.as_deref(), Some("ok"));
    assert_eq!(a.times_ms(t0), [0, 2000]);
    assert_eq!(b.times_ms(t0), [0]);
    let events = drain(&mut rx);
    assert!(events.contains(&ResilienceEvent::WaitingForCoolDown {
        keys: vec![Arc::from("model:a"), Arc::from("model:b")],
        wait: ms(2000),
    }));
    assert_eq!(hub.metrics().cool_down_waits_total, 1);
}

#[tokio::test(start_paused = true)]
async fn waiting_stops_at_the_deadline_with_a_clear_error() {
    let hub = ResilienceHub::new();
    let a = Arc::new(Timed::always("a", || support::rate_limited(ms(20_000))));
    let b = Arc::new(Timed::always("b", || support::rate_limited(ms(10_000))));
    let model = chain(&[&a, &b], 10, &hub);
    let t0 = Instant::now();
    let mut req = request();
    req.deadline = Some(t0 + ms(4000));
    let err = model.complete(&req).await.unwrap_err();
    assert_eq!(Instant::now(), t0, "failed at once");
    let wait = DeadlineWouldPass::find(&err).unwrap();
    assert_eq!(
        *wait,
        DeadlineWouldPass {
            key: Arc::from("model:b"),
            available_in: ms(10_000),
            deadline_in: ms(4000),
        }
    );
    assert_eq!(
        std::error::Error::source(&err)
            .map(ToString::to_string)
            .as_deref(),
        Some("model:b is available in 10.0s; the deadline is in 4.0s")
    );
}

#[tokio::test(start_paused = true)]
async fn attempts_are_counted_across_hops() {
    let hub = ResilienceHub::new();
    let mut rx = hub.subscribe();
    let a = Arc::new(Timed::always("a", server_error));
    let b = Arc::new(Timed::always("b", server_error));
    let c = Arc::new(Timed::ok("c", "never"));
    let routes: Vec<BoxModel> = [&a, &b, &c].iter().map(|m| route(m, 3, &hub)).collect();
    let mut routes = routes.into_iter();
    let model = Fallback::new(
        routes.next().unwrap(),
        routes,
        FallbackPolicy {
            max_attempts: 5,
            ..FallbackPolicy::default()
        },
        &hub,
    );
    let err = model.complete(&request()).await.unwrap_err();
    assert!(matches!(err, ModelError::Server { .. }));
    assert_eq!((a.calls(), b.calls(), c.calls()), (3, 2, 0));
    let attempts: Vec<(String, u32)> = drain(&mut rx)
        .into_iter()
        .filter_map(|e| match e {
            ResilienceEvent::RetryScheduled { key, attempt, .. } => {
                Some((key.to_string(), attempt))
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        attempts,
        [
            ("model:a".into(), 1),
            ("model:a".into(), 2),
            ("model:b".into(), 4),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn bare_routes_count_as_attempts_too() {
    let hub = ResilienceHub::new();
    let models: Vec<Arc<Timed>> = (0..4)
        .map(|i| Arc::new(Timed::always(&format!("m{i}"), server_error)))
        .collect();
    let mut routes = models.iter().map(|m| BoxModel::new(m.clone()));
    let model = Fallback::new(
        routes.next().unwrap(),
        routes,
        FallbackPolicy {
            max_attempts: 3,
            ..FallbackPolicy::default()
        },
        &hub,
    );
    model.complete(&request()).await.unwrap_err();
    let calls: Vec<usize> = models.iter().map(|m| m.calls()).collect();
    assert_eq!(calls, [1, 1, 1, 0]);
}

#[tokio::test(start_paused = true)]
async fn an_agent_answers_through_the_fallback() {
    let hub = ResilienceHub::new();
    let a = Arc::new(Timed::always("a", server_error));
    let b = Arc::new(Timed::new("b", |_| Ok(Completion::text("from b"))));
    let agent = pocket_agent::Agent::builder(chain(&[&a, &b], 10, &hub))
        .build()
        .unwrap();
    let out = agent.run("hello").await.unwrap();
    assert_eq!(out.answer, "from b");
    assert_eq!(agent.model_name(), "a");
}
