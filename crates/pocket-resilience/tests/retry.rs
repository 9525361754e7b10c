//! Retries of model and tool calls, on virtual time.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use pocket_agent::{DynTool, Model, ModelError, ToolContext, ToolError};
use pocket_resilience::{
    BudgetPolicy, Jitter, ResilienceEvent, ResilienceHub, Retry, RetryPolicy, RetryTool,
};
use support::{Timed, drain, ms, request, server_error};
use tokio::task::JoinSet;
use tokio::time::Instant;

fn policy(max_attempts: u32) -> RetryPolicy {
    RetryPolicy {
        max_attempts,
        base_delay: ms(100),
        max_delay: ms(1000),
        jitter: Jitter::None,
        seed: Some(7),
        ..RetryPolicy::default()
    }
}

#[tokio::test(start_paused = true)]
async fn backoff_doubles_from_the_base_up_to_the_maximum() {
    let hub = ResilienceHub::new();
    let mut rx = hub.subscribe();
    let model = Arc::new(Timed::failing_first("m", 5, server_error));
    let retry = Retry::new(model.clone(), policy(6), &hub);
    let t0 = Instant::now();
    let out = retry.complete(&request()).await.unwrap();
    assert_eq!(out.content.as_deref(), Some("ok"));
    // Delays 100, 200, 400, 800, then 1000 (the maximum).
    assert_eq!(model.times_ms(t0), [0, 100, 300, 700, 1500, 2500]);
    let scheduled: Vec<(u32, u64)> = drain(&mut rx)
        .into_iter()
        .filter_map(|e| match e {
            ResilienceEvent::RetryScheduled {
                key,
                attempt,
                delay,
                kind,
            } => {
                assert_eq!(&*key, "model:m");
                assert_eq!(kind, pocket_agent::ErrorKind::Network);
                Some((attempt, delay.as_millis() as u64))
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        scheduled,
        [(1, 100), (2, 200), (3, 400), (4, 800), (5, 1000)]
    );
    assert_eq!(hub.metrics().retries_total["model:m"], 5);
}

#[tokio::test(start_paused = true)]
async fn full_jitter_stays_under_each_ceiling_and_is_seeded() {
    async fn gaps(seed: u64) -> Vec<u64> {
        let hub = ResilienceHub::new();
        let model = Arc::new(Timed::failing_first("m", 5, server_error));
        let p = RetryPolicy {
            jitter: Jitter::Full,
            seed: Some(seed),
            ..policy(6)
        };
        let retry = Retry::new(model.clone(), p, &hub);
        let t0 = Instant::now();
        retry.complete(&request()).await.unwrap();
        let times = model.times_ms(t0);
        times.windows(2).map(|w| w[1] - w[0]).collect()
    }
    let ceilings = [100, 200, 400, 800, 1000];
    let a = gaps(1).await;
    assert_eq!(a.len(), 5);
    for (gap, ceiling) in a.iter().zip(ceilings) {
        assert!(
            *gap <= ceiling,
            "gap {gap} over its ceiling {ceiling}: {a:?}"
        );
    }
    assert_ne!(a, ceilings, "jitter draws below the ceiling");
    assert_eq!(gaps(1).await, a, "the same seed gives the same delays");
    assert_ne!(gaps(2).await, a, "another seed gives other delays");
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_honoured_exactly_even_above_the_maximum_delay() {
    let hub = ResilienceHub::new();
    let model = Arc::new(Timed::failing_first("m", 1, || {
        support::rate_limited(ms(2500))
    }));
    let retry = Retry::new(model.clone(), policy(3), &hub);
    let t0 = Instant::now();
    retry.complete(&request()).await.unwrap();
    assert_eq!(model.times_ms(t0), [0, 2500]);
}

#[tokio::test(start_paused = true)]
async fn only_retryable_errors_are_retried() {
    let hub = ResilienceHub::new();
    let model = Arc::new(Timed::always("m", support::auth_error));
    let retry = Retry::new(model.clone(), policy(5), &hub);
    let err = retry.complete(&request()).await.unwrap_err();
    assert!(matches!(err, ModelError::Auth { status: 401, .. }), "{err}");
    assert_eq!(model.calls(), 1);
    assert!(hub.metrics().retries_total.is_empty());
}

#[tokio::test(start_paused = true)]
async fn gives_up_after_max_attempts_with_the_last_error() {
    let hub = ResilienceHub::new();
    let model = Arc::new(Timed::always("m", server_error));
    let retry = Retry::new(model.clone(), policy(3), &hub);
    let err = retry.complete(&request()).await.unwrap_err();
    assert!(matches!(err, ModelError::Server { status: 500, .. }));
    assert_eq!(model.calls(), 3);
}

#[tokio::test(start_paused = true)]
async fn never_sleeps_past_the_deadline_or_max_elapsed() {
    let hub = ResilienceHub::new();
    // Deadline at 250 ms: calls at 0 and 100; the next would start at 300.
    let model = Arc::new(Timed::always("m", server_error));
    let retry = Retry::new(model.clone(), policy(10), &hub);
    let t0 = Instant::now();
    let mut req = request();
    req.deadline = Some(t0 + ms(250));
    retry.complete(&req).await.unwrap_err();
    assert_eq!(model.times_ms(t0), [0, 100]);
    assert_eq!(
        Instant::now() - t0,
        ms(100),
        "returned at once, no sleep to no purpose"
    );

    // max_elapsed 1 s: calls at 0, 100, 300, 700; the next would start at 1500.
    let model = Arc::new(Timed::always("n", server_error));
    let p = RetryPolicy {
        max_elapsed: ms(1000),
        ..policy(10)
    };
    let retry = Retry::new(model.clone(), p, &hub);
    let t0 = Instant::now();
    retry.complete(&request()).await.unwrap_err();
    assert_eq!(model.times_ms(t0), [0, 100, 300, 700]);

    // A Retry-After past the deadline is not waited for.
    let model = Arc::new(Timed::always("o", || support::rate_limited(ms(5000))));
    let retry = Retry::new(model.clone(), policy(10), &hub);
    let t0 = Instant::now();
    let mut req = request();
    req.deadline = Some(t0 + ms(4000));
    retry.complete(&req).await.unwrap_err();
    assert_eq!(model.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn the_budget_stops_a_retry_storm() {
    let hub = ResilienceHub::new();
    let mut rx = hub.subscribe();
    let model = Arc::new(Timed::always("down", server_error));
    let p = RetryPolicy {
        budget: BudgetPolicy {
            ratio: 0.1,
            min_per_sec: 1,
            window: Duration::from_secs(10),
        },
        ..policy(3)
    };
    let retry = Arc::new(Retry::new(model.clone(), p, &hub));
    let mut calls = JoinSet::new();
    for _ in 0..200 {
        let retry = retry.clone();
        calls.spawn(async move { retry.complete(&request()).await });
    }
    while let Some(done) = calls.join_next().await {
        assert!(done.unwrap().is_err());
    }
    let m = hub.metrics();
    let retries = m.retries_total["model:down"];
    // Without a budget: 200 calls × 2 retries = 400. With it: 10 % of 200 calls plus a
    // reserve of 1/s over the 10 s window.
    assert!(retries <= 20 + 10, "{retries} retries");
    assert!(retries >= 10, "the reserve alone allows 10; got {retries}");
    assert_eq!(model.calls() as u64, 200 + retries);
    let rejected = m.budget_rejections_total["model:down"];
    assert!(rejected > 0);
    let exhausted = drain(&mut rx)
        .iter()
        .filter(|e| matches!(e, ResilienceEvent::BudgetExhausted { .. }))
        .count() as u64;
    assert_eq!(exhausted, rejected);
}

#[tokio::test(start_paused = true)]
async fn nested_retry_layers_do_not_multiply_attempts() {
    let hub = ResilienceHub::new();
    let model = Arc::new(Timed::always("m", server_error));
    let inner = Retry::new(model.clone(), policy(3), &hub);
    let outer = Retry::new(inner, policy(3), &hub);
    outer.complete(&request()).await.unwrap_err();
    assert_eq!(model.calls(), 3, "one owner of retries per call path");
}

#[tokio::test(start_paused = true)]
async fn tools_are_retried_only_when_idempotent() {
    let hub = ResilienceHub::new();
    let ctx = ToolContext::detached();

    let idempotent = Arc::new(support::FlakyTool::new("lookup", true, 2));
    let tool = RetryTool::new(idempotent.clone(), policy(3), &hub);
    let t0 = Instant::now();
    let out = tool.call(serde_json::json!({}), &ctx).await.unwrap();
    assert_eq!(out, serde_json::json!("done"));
    assert_eq!(idempotent.calls(), 3);
    assert_eq!(Instant::now() - t0, ms(300));
    assert_eq!(hub.metrics().retries_total["tool:lookup"], 2);

    let effectful = Arc::new(support::FlakyTool::new("send_mail", false, 2));
    let tool = RetryTool::new(effectful.clone(), policy(3), &hub);
    let err = tool.call(serde_json::json!({}), &ctx).await.unwrap_err();
    assert!(matches!(
        err,
        ToolError::Failed {
            retryable: true,
            ..
        }
    ));
    assert_eq!(effectful.calls(), 1, "not idempotent: called once");
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_run_stops_a_tool_retry_wait() {
    let hub = ResilienceHub::new();
    let flaky = Arc::new(support::FlakyTool::new("lookup", true, 5));
    let tool = RetryTool::new(flaky.clone(), policy(5), &hub);
    let ctx = ToolContext::detached();
    let cancel = ctx.cancel.clone();
    let t0 = Instant::now();
    let (result, ()) = tokio::join!(tool.call(serde_json::json!({}), &ctx), async {
        tokio::time::sleep(ms(150)).await;
        cancel.cancel();
    });
    assert!(matches!(result, Err(ToolError::Cancelled)));
    assert_eq!(
        flaky.calls(),
        2,
        "calls at 0 and 100; cancelled during the 200 ms wait"
    );
    assert_eq!(Instant::now() - t0, ms(150));
}

#[tokio::test(start_paused = true)]
async fn streams_are_retried_until_they_open() {
    use futures_util::StreamExt;
    let hub = ResilienceHub::new();
    let model = Arc::new(Timed::failing_first("m", 2, server_error));
    let retry = Retry::new(model.clone(), policy(3), &hub);
    let mut stream = retry.stream(&request()).await.unwrap();
    let mut done = None;
    while let Some(event) = stream.next().await {
        if let pocket_agent::StreamEvent::Done(c) = event.unwrap() {
            done = c.content;
        }
    }
    assert_eq!(done.as_deref(), Some("ok"));
    assert_eq!(model.calls(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_huge_retry_after_does_not_overflow() {
    let hub = ResilienceHub::new();
    let model = Arc::new(Timed::always("m", || support::rate_limited(Duration::MAX)));
    let retry = Retry::new(model.clone(), policy(3), &hub);
    let err = retry.complete(&request()).await.unwrap_err();
    assert!(matches!(err, ModelError::RateLimited { .. }));
    assert_eq!(model.calls(), 1, "past the deadline: not waited for");
    let p = RetryPolicy {
        max_elapsed: Duration::MAX,
        ..policy(3)
    };
    let model = Arc::new(Timed::failing_first("n", 1, server_error));
    Retry::new(model.clone(), p, &hub)
        .complete(&request())
        .await
        .unwrap();
    assert_eq!(model.calls(), 2);
}
