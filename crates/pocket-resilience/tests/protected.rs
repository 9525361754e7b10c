//! The protected agent: whole-run retries, giving up, executors, the agent breaker, the error
//! history, the error callback, failed approvals, and the health report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::future::BoxFuture;
use pocket_agent::testing::{ScriptedModel, call};
use pocket_agent::{
    Agent, AgentEvent, Approval, ApprovalError, ApprovalPolicy, ApprovalRequest, Approver,
    Completion, ErrorKind, EventKind, ModelError, OnApprovalFailure, Risk,
};
use pocket_resilience::{
    AgentFailure, BreakerPolicy, BreakerState, Cause, FnExecutor, Jitter, ProtectedAgent,
    ProtectedError, ProtectedPolicy, ResilienceEvent, ResilienceHub, RunPath,
};
use support::{drain, ms, server_error};
use tokio::sync::broadcast;
use tokio::time::Instant;

fn policy(retries: u32) -> ProtectedPolicy {
    ProtectedPolicy {
        max_run_retries: retries,
        base_delay: ms(1000),
        jitter: Jitter::None,
        ..ProtectedPolicy::default()
    }
}

fn no_breaker() -> BreakerPolicy {
    BreakerPolicy {
        consecutive_failures: 0,
        failure_rate: 2.0,
        ..BreakerPolicy::default()
    }
}

fn agent(name: &str, model: ScriptedModel) -> Agent {
    Agent::builder(model).name(name).build().unwrap()
}

fn run_ids(rx: &mut broadcast::Receiver<AgentEvent>) -> Vec<String> {
    let mut ids = Vec::new();
    while let Ok(e) = rx.try_recv() {
        if matches!(e.kind, EventKind::RunStarted { .. }) {
            ids.push(e.run_id.to_string());
        }
    }
    ids
}

#[tokio::test(start_paused = true)]
async fn retries_whole_runs_with_backoff_and_fresh_run_ids() {
    let hub = ResilienceHub::new();
    let mut events = hub.subscribe();
    let model = ScriptedModel::new([Err(server_error()), Err(server_error())]);
    let agent = agent("writer", model);
    let mut runs = agent.subscribe();
    let protected = ProtectedAgent::builder(agent, &hub)
        .policy(policy(2))
        .build();
    let t0 = Instant::now();
    let out = protected.run("write").await.unwrap();
    assert_eq!(out.output.answer, "done");
    assert_eq!((out.path, out.attempts), (RunPath::Primary, 3));
    assert_eq!(Instant::now() - t0, ms(1000 + 2000), "backoff 1 s then 2 s");
    assert_eq!(
        run_ids(&mut runs),
        ["writer-1-1", "writer-1-2", "writer-1-3"]
    );

    let history = protected.history();
    assert_eq!(history.len(), 2);
    assert_eq!(history[0].run_id, "writer-1-1");
    assert_eq!(history[1].attempt, 2);
    assert_eq!(history[1].classification.kind, ErrorKind::Network);
    assert!(
        history[1].error.contains("provider error (HTTP 500)"),
        "{}",
        history[1].error
    );

    let names = support::names(&drain(&mut events));
    assert_eq!(
        names,
        [
            "agent_failed",
            "retry_scheduled",
            "agent_failed",
            "retry_scheduled",
            "agent_recovered"
        ]
    );
    let report = hub.health_report();
    assert_eq!(report.agents_total, 1);
    assert_eq!(report.agents_failing, 0);
    assert_eq!(report.health_score, 100);
    assert_eq!(report.failures_last_24h, 2);
    assert_eq!(report.mean_recovery_secs, Some(3.0));
    assert_eq!(hub.metrics().retries_total["agent:writer"], 2);
}

#[tokio::test(start_paused = true)]
async fn gives_up_with_the_attempt_count_in_the_error() {
    let hub = ResilienceHub::new();
    let seen = Arc::new(Mutex::new(Vec::<(String, u32)>::new()));
    let callback = {
        let seen = seen.clone();
        Arc::new(move |f: &AgentFailure| seen.lock().unwrap().push((f.run_id.clone(), f.attempt)))
    };
    let model = ScriptedModel::new([]).then_always(|| Err(server_error()));
    let protected = ProtectedAgent::builder(agent("w", model), &hub)
        .policy(policy(2))
        .breaker(no_breaker())
        .on_error(callback)
        .build();
    let err = protected.run("write").await.unwrap_err();
    assert_eq!(err.attempts(), 3);
    assert_eq!(err.to_string(), "agent `w` failed after 3 attempt(s)");
    let source = std::error::Error::source(&err).unwrap().to_string();
    assert_eq!(
        source,
        "model call failed after 1 iteration(s): provider error (HTTP 500): boom"
    );
    assert!(matches!(err, ProtectedError::Failed { .. }));
    assert_eq!(
        *seen.lock().unwrap(),
        [
            ("w-1-1".into(), 1),
            ("w-1-2".into(), 2),
            ("w-1-3".into(), 3)
        ]
    );
    let report = hub.health_report();
    assert_eq!((report.agents_failing, report.health_score), (1, 0));
    assert_eq!(report.mean_recovery_secs, None);
    assert!(
        report.recommendations.contains(
            &"Agent w failed its last run (network): see its error history for the cause."
                .to_owned()
        ),
        "{:?}",
        report.recommendations
    );
}

#[tokio::test(start_paused = true)]
async fn a_non_retryable_failure_stops_at_once() {
    let hub = ResilienceHub::new();
    let model = ScriptedModel::new([]).then_always(|| Err(support::auth_error()));
    let protected = ProtectedAgent::builder(agent("w", model), &hub)
        .policy(policy(5))
        .build();
    let t0 = Instant::now();
    let err = protected.run("write").await.unwrap_err();
    assert_eq!(err.attempts(), 1);
    assert_eq!(Instant::now(), t0);
}

#[tokio::test(start_paused = true)]
async fn a_permission_failure_takes_the_degraded_path() {
    let hub = ResilienceHub::new();
    let mut events = hub.subscribe();
    let causes = Arc::new(Mutex::new(Vec::new()));
    let degraded = {
        let causes = causes.clone();
        FnExecutor(move |task: String, cause: Cause| {
            causes.lock().unwrap().push(cause);
            async move { Ok(format!("read-only answer to: {task}")) }
        })
    };
    let model = ScriptedModel::new([]).then_always(|| Err(support::auth_error()));
    let protected = ProtectedAgent::builder(agent("ops", model), &hub)
        .policy(policy(2))
        .degraded(degraded)
        .build();
    let out = protected.run("clean up").await.unwrap();
    assert_eq!(out.path, RunPath::Degraded);
    assert_eq!(out.attempts, 1);
    assert_eq!(out.output.answer, "read-only answer to: clean up");
    assert_eq!(out.output.run_id, "ops-1-degraded");
    assert_eq!(causes.lock().unwrap()[0].kind, ErrorKind::Auth);
    assert!(
        drain(&mut events).contains(&ResilienceEvent::ExecutorTaken {
            agent: Arc::from("ops"),
            path: RunPath::Degraded,
            kind: ErrorKind::Auth,
        })
    );
    assert_eq!(hub.metrics().executor_answers_total["agent:ops"], 1);
}

#[tokio::test(start_paused = true)]
async fn the_fallback_agent_answers_when_the_agent_gives_up() {
    let hub = ResilienceHub::new();
    let model = ScriptedModel::new([]).then_always(|| Err(server_error()));
    let spare = agent(
        "spare",
        ScriptedModel::new([Ok(Completion::text("spare answer"))]),
    );
    let protected = ProtectedAgent::builder(agent("main", model), &hub)
        .policy(policy(1))
        .breaker(no_breaker())
        .fallback(spare)
        .build();
    let out = protected.run("task").await.unwrap();
    assert_eq!((out.path, out.attempts), (RunPath::Fallback, 2));
    assert_eq!(out.output.answer, "spare answer");
    assert_eq!(out.output.run_id, "main-1-fallback");
    assert_eq!(protected.history().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn the_agent_breaker_opens_and_fails_fast() {
    let hub = ResilienceHub::new();
    let model = Arc::new(ScriptedModel::new([]).then_always(|| Err(server_error())));
    let agent = Agent::builder(model.clone()).name("flaky").build().unwrap();
    let protected = ProtectedAgent::builder(agent, &hub)
        .policy(policy(5))
        .breaker(BreakerPolicy {
            consecutive_failures: 2,
            cool_down: std::time::Duration::from_secs(60),
            ..BreakerPolicy::default()
        })
        .build();
    let err = protected.run("one").await.unwrap_err();
    assert_eq!(
        err.attempts(),
        2,
        "the breaker opened after 2 failures and stopped the retries"
    );
    assert_eq!(protected.breaker().state(), BreakerState::Open);
    let calls = model.calls();
    let t0 = Instant::now();
    let err = protected.run("two").await.unwrap_err();
    assert!(
        matches!(&err, ProtectedError::CircuitOpen { agent, .. } if &**agent == "flaky"),
        "{err}"
    );
    assert_eq!(err.attempts(), 0);
    assert_eq!(Instant::now(), t0, "failed fast");
    assert_eq!(model.calls(), calls, "the model was not called");

    let report = hub.health_report();
    assert_eq!((report.agents_total, report.agents_failing), (1, 1));
    assert_eq!(report.health_score, 0);
    assert_eq!(report.breakers.len(), 1);
    assert_eq!(&*report.breakers[0].key, "agent:flaky");
    assert_eq!(report.breakers[0].state, BreakerState::Open);
    assert!(
        report.recommendations[0]
            .starts_with("Circuit for agent flaky is open (next probe in 60s)"),
        "{:?}",
        report.recommendations
    );
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["breakers"][0]["state"], "open");
    assert_eq!(json["agents_failing"], 1);
}

#[tokio::test(start_paused = true)]
async fn the_error_history_keeps_the_last_1000_failures() {
    let hub = ResilienceHub::new();
    let model = ScriptedModel::new([]).then_always(|| Err(server_error()));
    let protected = ProtectedAgent::builder(agent("busy", model), &hub)
        .policy(policy(0))
        .breaker(no_breaker())
        .build();
    for _ in 0..1005 {
        protected.run("x").await.unwrap_err();
    }
    let history = protected.history();
    assert_eq!(history.len(), 1000);
    assert_eq!(history[0].run_id, "busy-6-1");
    assert_eq!(history[999].run_id, "busy-1005-1");
    let report = hub.health_report();
    assert_eq!(
        report.failures_last_24h, 1005,
        "counted apart from the bounded history"
    );
    assert!(
        report
            .recommendations
            .iter()
            .any(|r| r.starts_with("1005 failed runs in the last 24 h"))
    );
}

/// An approver whose channel is broken.
struct Broken(AtomicUsize);

impl Approver for Broken {
    fn approve<'a>(
        &'a self,
        _: &'a ApprovalRequest,
    ) -> BoxFuture<'a, Result<Approval, ApprovalError>> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Box::pin(async { Err(ApprovalError("the approval service is down".into())) })
    }
}

#[tokio::test(start_paused = true)]
async fn failed_approvals_are_fail_safe_and_reported_as_human_in_loop_errors() {
    let hub = ResilienceHub::new();
    let mut events = hub.subscribe();
    let delete = Arc::new(support::FlakyTool::new("delete_file", false, 0));
    let lookup = Arc::new(support::FlakyTool::new("lookup", false, 0));
    let model = ScriptedModel::new([
        Ok(Completion::tool_calls(vec![
            call("1", "delete_file", serde_json::json!({})),
            call("2", "lookup", serde_json::json!({})),
        ])),
        Ok(Completion::text("finished")),
    ]);
    let agent = Agent::builder(model)
        .name("ops")
        .dyn_tool(delete.clone())
        .dyn_tool(lookup.clone())
        .approver(Broken(AtomicUsize::new(0)))
        .approval_policy(ApprovalPolicy {
            required_from: Risk::Safe,
            on_failure: OnApprovalFailure::Allow,
            ..ApprovalPolicy::default()
        })
        .build()
        .unwrap();
    let protected = ProtectedAgent::builder(agent, &hub).build();
    let out = protected.run("tidy up").await.unwrap();
    assert_eq!(out.output.answer, "finished");
    assert_eq!(
        delete.calls(),
        0,
        "a dangerous name is denied when asking fails"
    );
    assert_eq!(lookup.calls(), 1, "others follow the policy (allow)");
    let mut hitl: Vec<(String, bool)> = drain(&mut events)
        .into_iter()
        .filter_map(|e| match e {
            ResilienceEvent::HumanInLoopError {
                tool,
                denied,
                run_id,
                agent,
                error,
            } => {
                assert_eq!((&*agent, run_id.as_str()), ("ops", "ops-1-1"));
                assert_eq!(error, "the approval service is down");
                Some((tool.to_string(), denied))
            }
            _ => None,
        })
        .collect();
    hitl.sort();
    assert_eq!(
        hitl,
        [("delete_file".into(), true), ("lookup".into(), false)]
    );
    assert_eq!(hub.metrics().human_in_loop_errors_total["agent:ops"], 2);
    assert!(
        hub.health_report()
            .recommendations
            .iter()
            .any(|r| r.starts_with("Asking a person for approval failed 2 times"))
    );
}

#[tokio::test(start_paused = true)]
async fn the_report_names_a_model_breaker_and_its_fallback() {
    use pocket_resilience::{CircuitBreaker, Component, Fallback, FallbackPolicy, Outcome};
    let hub = ResilienceHub::new();
    let primary = pocket_agent::BoxModel::new(CircuitBreaker::new(
        support::Timed::ok("openai:gpt-4o", "a"),
        &BreakerPolicy::default(),
        &hub,
    ));
    let backup = pocket_agent::BoxModel::new(support::Timed::ok("anthropic:claude", "b"));
    let _model = Fallback::new(primary, [backup], FallbackPolicy::default(), &hub);
    let b = hub.breaker(Component::Model, "openai:gpt-4o").unwrap();
    while let Ok(p) = b.try_acquire() {
        p.record(Outcome::Failure);
    }
    let report = hub.health_report();
    assert_eq!(report.agents_total, 0);
    assert_eq!(
        report.health_score, 0,
        "no agents: the share of closed breakers"
    );
    assert_eq!(
        report.recommendations,
        [
            "Circuit for model openai:gpt-4o is open (next probe in 30s): check the provider's \
          status, rate limits and credentials; calls fall back to anthropic:claude."
        ]
    );
    // Unused imports guard.
    let _ = ModelError::Cancelled;
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_run_is_neither_a_failure_nor_a_reason_to_fall_back() {
    let hub = ResilienceHub::new();
    let model = ScriptedModel::new([]).then_always(|| Err(server_error()));
    let spare = agent("spare", ScriptedModel::new([]));
    let protected = ProtectedAgent::builder(agent("w", model), &hub)
        .policy(policy(3))
        .fallback(spare)
        .build();
    let cancel = pocket_agent::CancellationToken::new();
    let request = pocket_agent::RunRequest {
        cancel: Some(cancel.clone()),
        ..pocket_agent::RunRequest::new("task")
    };
    let t0 = Instant::now();
    let (result, ()) = tokio::join!(protected.run_with(request), async {
        tokio::time::sleep(ms(500)).await;
        cancel.cancel();
    });
    let err = result.unwrap_err();
    assert_eq!(err.attempts(), 1, "cancelled while waiting to retry");
    assert_eq!(Instant::now() - t0, ms(500));
    assert_eq!(protected.history().len(), 1, "only the real failure");
}

/// A model that takes a second to answer.
struct Sleepy;

impl pocket_agent::Model for Sleepy {
    fn name(&self) -> &str {
        "sleepy"
    }

    async fn complete(
        &self,
        _: &pocket_agent::CompletionRequest,
    ) -> Result<Completion, ModelError> {
        tokio::time::sleep(ms(1000)).await;
        Ok(Completion::text("late"))
    }
}

#[tokio::test(start_paused = true)]
async fn a_run_cancelled_midway_is_not_recorded_and_not_handed_over() {
    let hub = ResilienceHub::new();
    let spare = agent("spare", ScriptedModel::new([]));
    let main = Agent::builder(Sleepy).name("main").build().unwrap();
    let protected = ProtectedAgent::builder(main, &hub)
        .policy(policy(3))
        .fallback(spare)
        .build();
    let cancel = pocket_agent::CancellationToken::new();
    let request = pocket_agent::RunRequest {
        cancel: Some(cancel.clone()),
        ..pocket_agent::RunRequest::new("task")
    };
    let (result, ()) = tokio::join!(protected.run_with(request), async {
        tokio::time::sleep(ms(500)).await;
        cancel.cancel();
    });
    let err = result.unwrap_err();
    assert!(err.agent_error().unwrap().is_cancelled());
    assert_eq!(err.attempts(), 1);
    assert!(protected.history().is_empty());
    assert_eq!(protected.breaker().snapshot().calls_in_window, 0);
    assert!(hub.metrics().executor_answers_total.is_empty());
}

#[tokio::test(start_paused = true)]
async fn the_report_counts_failures_and_recoveries_of_the_last_24_hours() {
    let hub = ResilienceHub::new();
    let model = ScriptedModel::new([
        Err(server_error()),
        Err(server_error()),
        Ok(Completion::text("ok")),
        Err(server_error()),
        Ok(Completion::text("ok")),
    ]);
    let protected = ProtectedAgent::builder(agent("a", model), &hub)
        .policy(policy(0))
        .breaker(no_breaker())
        .build();
    protected.run("1").await.unwrap_err();
    tokio::time::advance(std::time::Duration::from_secs(10)).await;
    protected.run("2").await.unwrap_err();
    tokio::time::advance(std::time::Duration::from_secs(10)).await;
    protected.run("3").await.unwrap(); // recovered 20 s after the first failure
    protected.run("4").await.unwrap_err();
    tokio::time::advance(std::time::Duration::from_secs(40)).await;
    protected.run("5").await.unwrap(); // recovered after 40 s
    let report = hub.health_report();
    assert_eq!(report.failures_last_24h, 3);
    assert_eq!(report.mean_recovery_secs, Some(30.0));
    assert_eq!(report.agents_failing, 0);

    tokio::time::advance(std::time::Duration::from_secs(25 * 3600)).await;
    let report = hub.health_report();
    assert_eq!(report.failures_last_24h, 0);
    assert_eq!(report.mean_recovery_secs, None);
    assert_eq!(protected.history().len(), 3, "the history is not aged out");
}
