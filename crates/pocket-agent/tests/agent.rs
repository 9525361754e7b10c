//! The agent loop: iterations, parallel tools, validation, approval, hooks, limits, events.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails loudly by design

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::future::BoxFuture;
use pocket_agent::testing::{ScriptedModel, call};
use pocket_agent::{
    AfterRun, AfterTool, Agent, AgentErrorKind, Approval, ApprovalError, ApprovalPolicy,
    ApprovalRequest, Approver, BeforeRun, BeforeTool, Classify, Completion, ErrorKind, EventKind,
    Message, ModelError, OnApprovalFailure, Plugin, Risk, RunInfo, RunOutput, RunRequest, Tool,
    ToolCall, ToolContext, ToolError, ToolSpec,
};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::Barrier;

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct EchoArgs {
    /// Text to echo.
    text: String,
}

/// Echoes its text; counts calls.
#[derive(Default, Clone)]
struct Echo {
    calls: Arc<AtomicUsize>,
    risk: Option<Risk>,
}

impl Tool for Echo {
    type Args = EchoArgs;
    type Output = String;
    fn name(&self) -> &str {
        "echo"
    }
    fn description(&self) -> &str {
        "Echoes text."
    }
    fn risk(&self) -> Risk {
        self.risk.unwrap_or(Risk::Safe)
    }
    async fn call(&self, args: EchoArgs, _: &ToolContext) -> Result<String, ToolError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Ok(args.text)
    }
}

#[derive(Deserialize, JsonSchema)]
struct NoArgs {}

/// Waits on a shared barrier: two calls finish only if they run at the same time.
struct Meet(Arc<Barrier>, &'static str);

impl Tool for Meet {
    type Args = NoArgs;
    type Output = &'static str;
    fn name(&self) -> &str {
        self.1
    }
    fn description(&self) -> &str {
        "Meets another call."
    }
    async fn call(&self, _: NoArgs, _: &ToolContext) -> Result<&'static str, ToolError> {
        self.0.wait().await;
        Ok("met")
    }
}

struct Panics;

impl Tool for Panics {
    type Args = NoArgs;
    type Output = ();
    fn name(&self) -> &str {
        "panics"
    }
    fn description(&self) -> &str {
        "Always panics."
    }
    async fn call(&self, _: NoArgs, _: &ToolContext) -> Result<(), ToolError> {
        panic!("boom in tool")
    }
}

struct Hangs;

impl Tool for Hangs {
    type Args = NoArgs;
    type Output = ();
    fn name(&self) -> &str {
        "hangs"
    }
    fn description(&self) -> &str {
        "Never returns."
    }
    fn timeout(&self) -> Option<Duration> {
        Some(Duration::from_secs(5))
    }
    async fn call(&self, _: NoArgs, _: &ToolContext) -> Result<(), ToolError> {
        std::future::pending().await
    }
}

fn echo_call(id: &str, text: &str) -> Completion {
    Completion::tool_calls(vec![call(id, "echo", json!({ "text": text }))])
}

fn tool_messages(transcript: &[Message]) -> Vec<(String, bool)> {
    transcript
        .iter()
        .filter_map(|m| match m {
            Message::Tool {
                content, is_error, ..
            } => Some((content.clone(), *is_error)),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn answers_after_one_tool_round() {
    let model = Arc::new(ScriptedModel::new([
        Ok(echo_call("1", "pong")),
        Ok(Completion::text("said pong")),
    ]));
    let echo = Echo::default();
    let agent = Agent::builder(model.clone())
        .tool(echo.clone())
        .build()
        .unwrap();
    let out = agent.run("ping").await.unwrap();
    assert_eq!(out.answer, "said pong");
    assert_eq!(out.iterations, 2);
    assert_eq!(echo.calls.load(Ordering::SeqCst), 1);
    assert_eq!(out.tool_calls.len(), 1);
    assert_eq!(out.tool_calls[0].error, None);
    // The second request carries the tool result, answering call "1".
    let second = &model.requests()[1];
    assert!(matches!(
        second.messages.last(),
        Some(Message::Tool { call_id, content, is_error: false, .. }) if call_id == "1" && content == "pong"
    ));
    assert_eq!(second.tools.len(), 1);
    assert_eq!(second.tools[0].name, "echo");
}

#[tokio::test]
async fn iteration_limit_reports_how_many_ran_with_the_partial_transcript() {
    let model = ScriptedModel::new([]).then_always(|| Ok(echo_call("x", "again")));
    let agent = Agent::builder(model)
        .tool(Echo::default())
        .max_iterations(3)
        .build()
        .unwrap();
    let err = agent.run("loop forever").await.unwrap_err();
    assert!(matches!(
        err.kind(),
        AgentErrorKind::MaxIterations { limit: 3 }
    ));
    assert_eq!(err.iterations(), 3);
    assert!(err.to_string().contains("3 iterations"), "{err}");
    // user + 3 × (assistant + tool)
    assert_eq!(err.transcript().len(), 7);
    assert_eq!(tool_messages(err.transcript()).len(), 3);
}

#[tokio::test]
async fn tool_calls_of_one_turn_run_concurrently() {
    let barrier = Arc::new(Barrier::new(2));
    let model = ScriptedModel::new([
        Ok(Completion::tool_calls(vec![
            call("a", "left", json!({})),
            call("b", "right", json!({})),
        ])),
        Ok(Completion::text("both met")),
    ]);
    let agent = Agent::builder(model)
        .tool(Meet(barrier.clone(), "left"))
        .tool(Meet(barrier, "right"))
        .build()
        .unwrap();
    // Sequential calls would wait on the barrier forever.
    let out = tokio::time::timeout(Duration::from_secs(10), agent.run("meet"))
        .await
        .expect("calls ran concurrently")
        .unwrap();
    assert_eq!(out.answer, "both met");
    assert_eq!(
        tool_messages(&out.transcript),
        vec![("met".into(), false), ("met".into(), false)]
    );
}

#[tokio::test]
async fn invalid_arguments_go_back_to_the_model_naming_the_argument() {
    let model = Arc::new(ScriptedModel::new([
        Ok(Completion::tool_calls(vec![call(
            "1",
            "echo",
            json!({ "text": 42 }),
        )])),
        Ok(Completion::tool_calls(vec![call(
            "2",
            "echo",
            json!({ "txt": "typo" }),
        )])),
        Ok(Completion::tool_calls(vec![call(
            "3",
            "echo",
            Value::String("{not json".into()),
        )])),
        Ok(Completion::text("gave up")),
    ]));
    let echo = Echo::default();
    let agent = Agent::builder(model.clone())
        .tool(echo.clone())
        .build()
        .unwrap();
    let out = agent.run("echo").await.unwrap();
    assert_eq!(
        echo.calls.load(Ordering::SeqCst),
        0,
        "invalid calls never reach the tool"
    );
    let results = tool_messages(&out.transcript);
    assert_eq!(results.len(), 3);
    assert!(results.iter().all(|(_, is_error)| *is_error));
    assert!(
        results[0].0.contains("invalid arguments") && results[0].0.contains("/text"),
        "{}",
        results[0].0
    );
    assert!(results[1].0.contains("txt"), "{}", results[1].0);
    assert!(
        results[2].0.contains("must be a JSON object"),
        "{}",
        results[2].0
    );
    // The model saw the first error on its second turn.
    assert!(matches!(
        model.requests()[1].messages.last(),
        Some(Message::Tool { is_error: true, .. })
    ));
}

#[tokio::test]
async fn unknown_tool_is_an_error_the_model_sees() {
    let model = ScriptedModel::new([
        Ok(Completion::tool_calls(vec![call("1", "nope", json!({}))])),
        Ok(Completion::text("ok")),
    ]);
    let agent = Agent::builder(model).tool(Echo::default()).build().unwrap();
    let out = agent.run("x").await.unwrap();
    assert_eq!(
        tool_messages(&out.transcript),
        vec![("error: unknown tool `nope`".into(), true)]
    );
}

#[tokio::test]
async fn a_panicking_tool_becomes_a_tool_error() {
    let model = ScriptedModel::new([
        Ok(Completion::tool_calls(vec![call("1", "panics", json!({}))])),
        Ok(Completion::text("recovered")),
    ]);
    let agent = Agent::builder(model).tool(Panics).build().unwrap();
    let out = agent.run("x").await.unwrap();
    assert_eq!(out.answer, "recovered");
    assert_eq!(
        tool_messages(&out.transcript),
        vec![("error: tool panicked: boom in tool".into(), true)]
    );
}

#[tokio::test(start_paused = true)]
async fn a_hanging_tool_hits_its_time_limit() {
    let model = ScriptedModel::new([
        Ok(Completion::tool_calls(vec![call("1", "hangs", json!({}))])),
        Ok(Completion::text("moved on")),
    ]);
    let agent = Agent::builder(model).tool(Hangs).build().unwrap();
    let out = agent.run("x").await.unwrap();
    assert_eq!(
        tool_messages(&out.transcript),
        vec![("error: tool timed out after 5.0s".into(), true)]
    );
}

#[tokio::test(start_paused = true)]
async fn run_time_limit_fails_with_partial_transcript() {
    let model = ScriptedModel::new([])
        .then_always(|| Ok(Completion::tool_calls(vec![call("1", "hangs", json!({}))])));
    let agent = Agent::builder(model)
        .tool(Hangs)
        .run_timeout(Duration::from_secs(12))
        .build()
        .unwrap();
    let err = agent.run("x").await.unwrap_err();
    assert!(err.is_timeout(), "{err}");
    assert_eq!(err.classify().kind, ErrorKind::Timeout);
    // 5 s tool limit: iterations at t=0, 5, 10; the third is cut off at 12 s.
    assert_eq!(err.iterations(), 3);
    assert_eq!(tool_messages(err.transcript()).len(), 2);
}

#[tokio::test]
async fn cancellation_stops_the_run() {
    let model = ScriptedModel::new([])
        .then_always(|| Ok(Completion::tool_calls(vec![call("1", "hangs", json!({}))])));
    let agent = Agent::builder(model).tool(Hangs).build().unwrap();
    let cancel = pocket_agent::CancellationToken::new();
    let run = tokio::spawn({
        let agent = agent.clone();
        let cancel = cancel.clone();
        async move {
            agent
                .run_with(RunRequest {
                    cancel: Some(cancel),
                    ..RunRequest::new("x")
                })
                .await
        }
    });
    let mut events = agent.subscribe();
    // Wait until the tool runs, then cancel.
    loop {
        if let EventKind::ToolCallStarted { .. } = events.recv().await.unwrap().kind {
            break;
        }
    }
    cancel.cancel();
    let err = run.await.unwrap().unwrap_err();
    assert!(err.is_cancelled());
    assert_eq!(err.iterations(), 1);
}

#[tokio::test]
async fn ending_a_run_does_not_cancel_the_callers_token() {
    let model = ScriptedModel::new([Err(ModelError::Timeout { after: None })]);
    let agent = Agent::builder(model).build().unwrap();
    let cancel = pocket_agent::CancellationToken::new();
    let req = RunRequest {
        cancel: Some(cancel.clone()),
        ..RunRequest::new("x")
    };
    agent.run_with(req.clone()).await.unwrap_err();
    assert!(
        !cancel.is_cancelled(),
        "a caller may reuse its token for a retry"
    );
    assert_eq!(agent.run_with(req).await.unwrap().answer, "done");
}

#[tokio::test]
async fn model_errors_fail_the_run_with_their_classification() {
    let model = ScriptedModel::new([Err(ModelError::RateLimited {
        message: "slow".into(),
        retry_after: Some(Duration::from_secs(2)),
    })]);
    let agent = Agent::builder(model).build().unwrap();
    let err = agent.run("x").await.unwrap_err();
    assert_eq!(err.classify().kind, ErrorKind::RateLimited);
    assert_eq!(err.retry_after(), Some(Duration::from_secs(2)));
    assert!(err.model_error().is_some());
    assert_eq!(err.iterations(), 1);
}

// ---- approval ----

struct Answer(Result<Approval, ApprovalError>, Arc<AtomicUsize>);

impl Approver for Answer {
    fn approve<'a>(
        &'a self,
        _: &'a ApprovalRequest,
    ) -> BoxFuture<'a, Result<Approval, ApprovalError>> {
        self.1.fetch_add(1, Ordering::SeqCst);
        Box::pin(std::future::ready(self.0.clone()))
    }
}

struct NeverAnswers;

impl Approver for NeverAnswers {
    fn approve<'a>(
        &'a self,
        _: &'a ApprovalRequest,
    ) -> BoxFuture<'a, Result<Approval, ApprovalError>> {
        Box::pin(std::future::pending())
    }
}

async fn run_dangerous(
    approver: Option<Box<dyn FnOnce(pocket_agent::AgentBuilder) -> pocket_agent::AgentBuilder>>,
    risk: Risk,
) -> (RunOutput, usize, Vec<EventKind>) {
    let echo = Echo {
        risk: Some(risk),
        ..Echo::default()
    };
    let model = ScriptedModel::new([Ok(echo_call("1", "rm -rf /")), Ok(Completion::text("end"))]);
    let mut builder = Agent::builder(model).tool(echo.clone());
    if let Some(f) = approver {
        builder = f(builder);
    }
    let agent = builder.build().unwrap();
    let mut rx = agent.subscribe();
    let out = agent.run("x").await.unwrap();
    let mut events = Vec::new();
    while let Ok(e) = rx.try_recv() {
        events.push(e.kind);
    }
    (out, echo.calls.load(Ordering::SeqCst), events)
}

#[tokio::test]
async fn approval_approve_runs_the_call() {
    let asked = Arc::new(AtomicUsize::new(0));
    let a = asked.clone();
    let (out, calls, events) = run_dangerous(
        Some(Box::new(move |b| {
            b.approver(Answer(Ok(Approval::Approve), a))
        })),
        Risk::Dangerous,
    )
    .await;
    assert_eq!(asked.load(Ordering::SeqCst), 1);
    assert_eq!(calls, 1);
    assert_eq!(
        tool_messages(&out.transcript),
        vec![("rm -rf /".into(), false)]
    );
    assert!(events.iter().any(|e| matches!(
        e,
        EventKind::ApprovalDecided {
            decision: "approve",
            ..
        }
    )));
}

#[tokio::test]
async fn approval_deny_sends_the_reason_to_the_model() {
    let (out, calls, _) = run_dangerous(
        Some(Box::new(|b| {
            b.approver(Answer(
                Ok(Approval::Deny("not today".into())),
                Default::default(),
            ))
        })),
        Risk::Dangerous,
    )
    .await;
    assert_eq!(calls, 0);
    assert_eq!(
        tool_messages(&out.transcript),
        vec![(
            "error: denied: a person denied the call: not today".into(),
            true
        )]
    );
}

#[tokio::test]
async fn approval_edit_runs_with_the_new_arguments_validated() {
    let (out, calls, _) = run_dangerous(
        Some(Box::new(|b| {
            b.approver(Answer(
                Ok(Approval::Edit(json!({"text": "ls"}))),
                Default::default(),
            ))
        })),
        Risk::Dangerous,
    )
    .await;
    assert_eq!(calls, 1);
    assert_eq!(tool_messages(&out.transcript), vec![("ls".into(), false)]);

    let (out, calls, _) = run_dangerous(
        Some(Box::new(|b| {
            b.approver(Answer(
                Ok(Approval::Edit(json!({"text": 1}))),
                Default::default(),
            ))
        })),
        Risk::Dangerous,
    )
    .await;
    assert_eq!(calls, 0, "an edit with invalid arguments is refused");
    assert!(
        tool_messages(&out.transcript)[0]
            .0
            .contains("invalid arguments")
    );
}

#[tokio::test(start_paused = true)]
async fn approval_timeout_denies_a_dangerous_call_and_emits_an_event() {
    let policy = ApprovalPolicy {
        timeout: Duration::from_secs(30),
        on_failure: OnApprovalFailure::Allow,
        ..Default::default()
    };
    let (out, calls, events) = run_dangerous(
        Some(Box::new(move |b| {
            b.approver(NeverAnswers).approval_policy(policy)
        })),
        Risk::Dangerous,
    )
    .await;
    assert_eq!(calls, 0);
    let (msg, is_error) = &tool_messages(&out.transcript)[0];
    assert!(
        *is_error && msg.contains("no answer within 30s") && msg.contains("fail-safe"),
        "{msg}"
    );
    assert!(
        events
            .iter()
            .any(|e| matches!(e, EventKind::ApprovalFailed { denied: true, .. }))
    );
}

#[tokio::test]
async fn approval_failure_follows_the_policy_for_non_dangerous_tools() {
    let failing = || {
        Answer(
            Err(ApprovalError("chat is down".into())),
            Default::default(),
        )
    };
    let allow = ApprovalPolicy {
        required_from: Risk::Sensitive,
        on_failure: OnApprovalFailure::Allow,
        ..Default::default()
    };
    let (_, calls, events) = run_dangerous(
        Some(Box::new(move |b| {
            b.approver(failing()).approval_policy(allow)
        })),
        Risk::Sensitive,
    )
    .await;
    assert_eq!(calls, 1, "policy allows a sensitive call when asking fails");
    assert!(
        events
            .iter()
            .any(|e| matches!(e, EventKind::ApprovalFailed { denied: false, .. }))
    );

    let deny = ApprovalPolicy {
        required_from: Risk::Sensitive,
        ..Default::default()
    };
    let (_, calls, _) = run_dangerous(
        Some(Box::new(move |b| {
            b.approver(failing()).approval_policy(deny)
        })),
        Risk::Sensitive,
    )
    .await;
    assert_eq!(calls, 0, "the default policy denies");
}

#[tokio::test]
async fn without_an_approver_dangerous_calls_are_denied_and_safe_ones_run() {
    let (out, calls, _) = run_dangerous(None, Risk::Dangerous).await;
    assert_eq!(calls, 0);
    assert!(
        tool_messages(&out.transcript)[0]
            .0
            .contains("no approver is configured")
    );
    let (_, calls, _) = run_dangerous(None, Risk::Safe).await;
    assert_eq!(calls, 1);
}

// ---- plugins ----

#[derive(Default)]
struct Rewriter {
    loads: AtomicUsize,
}

impl Plugin for Rewriter {
    fn name(&self) -> &str {
        "rewriter"
    }
    fn on_load(&self) -> BoxFuture<'_, Result<(), String>> {
        self.loads.fetch_add(1, Ordering::SeqCst);
        Box::pin(std::future::ready(Ok(())))
    }
    fn before_run<'a>(
        &'a self,
        _: &'a RunInfo,
        messages: &'a [Message],
    ) -> BoxFuture<'a, BeforeRun> {
        let mut m = messages.to_vec();
        m.insert(0, Message::system("be brief"));
        Box::pin(std::future::ready(BeforeRun::Rewrite(m)))
    }
    fn before_tool<'a>(
        &'a self,
        _: &'a RunInfo,
        _: &'a ToolSpec,
        call: &'a ToolCall,
    ) -> BoxFuture<'a, BeforeTool> {
        let action = match call.id.as_str() {
            "skip" => BeforeTool::Skip("not needed".into()),
            _ => BeforeTool::Rewrite(json!({ "text": "rewritten" })),
        };
        Box::pin(std::future::ready(action))
    }
    fn after_tool<'a>(
        &'a self,
        _: &'a RunInfo,
        _: &'a ToolSpec,
        _: &'a ToolCall,
        result: &'a Result<Value, ToolError>,
        _: Duration,
    ) -> BoxFuture<'a, AfterTool> {
        let action = match result {
            Ok(v) => AfterTool::Rewrite(json!(format!("{}!", v.as_str().unwrap_or_default()))),
            Err(_) => AfterTool::Continue,
        };
        Box::pin(std::future::ready(action))
    }
    fn after_run<'a>(&'a self, _: &'a RunInfo, output: &'a RunOutput) -> BoxFuture<'a, AfterRun> {
        Box::pin(std::future::ready(AfterRun::Rewrite(
            output.answer.to_uppercase(),
        )))
    }
}

#[tokio::test]
async fn hooks_rewrite_messages_arguments_results_and_answers() {
    let model = Arc::new(ScriptedModel::new([
        Ok(Completion::tool_calls(vec![
            call("1", "echo", json!({"text": "original"})),
            call("skip", "echo", json!({"text": "s"})),
        ])),
        Ok(Completion::text("done")),
    ]));
    let plugin = Arc::new(Rewriter::default());
    let agent = Agent::builder(model.clone())
        .tool(Echo::default())
        .shared_plugin(plugin.clone())
        .build()
        .unwrap();
    let out = agent.run("x").await.unwrap();
    agent.run("again").await.unwrap();
    assert_eq!(plugin.loads.load(Ordering::SeqCst), 1, "on_load runs once");
    assert_eq!(model.requests()[0].messages[0], Message::system("be brief"));
    assert_eq!(
        tool_messages(&out.transcript),
        vec![
            ("rewritten!".into(), false),
            (
                "error: skipped by plugin `rewriter`: not needed".into(),
                true
            )
        ]
    );
    assert_eq!(out.tool_calls[0].arguments, json!({"text": "rewritten"}));
    assert_eq!(out.answer, "DONE");
}

struct Stopper;

impl Plugin for Stopper {
    fn name(&self) -> &str {
        "guard"
    }
    fn before_tool<'a>(
        &'a self,
        _: &'a RunInfo,
        _: &'a ToolSpec,
        _: &'a ToolCall,
    ) -> BoxFuture<'a, BeforeTool> {
        Box::pin(std::future::ready(BeforeTool::Stop(
            "tool use forbidden".into(),
        )))
    }
}

#[tokio::test]
async fn a_hook_can_stop_the_run() {
    let echo = Echo::default();
    let model = ScriptedModel::new([Ok(echo_call("1", "a"))]);
    let agent = Agent::builder(model)
        .tool(echo.clone())
        .plugin(Stopper)
        .build()
        .unwrap();
    let err = agent.run("x").await.unwrap_err();
    assert!(
        matches!(err.kind(), AgentErrorKind::Stopped { plugin, reason } if plugin == "guard" && reason == "tool use forbidden")
    );
    assert_eq!(echo.calls.load(Ordering::SeqCst), 0);
    assert_eq!(
        err.to_string(),
        "stopped by plugin `guard`: tool use forbidden"
    );
}

struct BrokenLoad;

impl Plugin for BrokenLoad {
    fn name(&self) -> &str {
        "broken"
    }
    fn on_load(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(std::future::ready(Err("missing config".into())))
    }
}

#[tokio::test]
async fn a_plugin_that_fails_to_load_fails_every_run() {
    let model = Arc::new(ScriptedModel::new([]));
    let agent = Agent::builder(model.clone())
        .plugin(BrokenLoad)
        .build()
        .unwrap();
    for _ in 0..2 {
        let err = agent.run("x").await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "plugin `broken` failed to load: missing config"
        );
    }
    assert_eq!(model.calls(), 0);
}

// ---- events, streaming, build errors ----

#[tokio::test]
async fn every_step_is_an_event_in_order() {
    let model = ScriptedModel::new([Ok(echo_call("1", "a")), Ok(Completion::text("done"))]);
    let agent = Agent::builder(model)
        .name("ev")
        .tool(Echo::default())
        .build()
        .unwrap();
    let mut rx = agent.subscribe();
    let out = agent.run("x").await.unwrap();
    let mut names = Vec::new();
    while let Ok(e) = rx.try_recv() {
        assert_eq!(&*e.run_id, out.run_id);
        assert_eq!(&*e.agent, "ev");
        names.push(e.kind.name());
    }
    assert_eq!(
        names,
        [
            "run_started",
            "model_call_started",
            "model_call_finished",
            "tool_call_started",
            "tool_call_finished",
            "model_call_started",
            "model_call_finished",
            "run_finished"
        ]
    );
}

#[tokio::test]
async fn failed_runs_emit_run_failed_with_classification() {
    let model = ScriptedModel::new([Err(ModelError::Auth {
        status: 401,
        message: "bad key".into(),
    })]);
    let agent = Agent::builder(model).build().unwrap();
    let mut rx = agent.subscribe();
    agent.run("x").await.unwrap_err();
    let last = std::iter::from_fn(|| rx.try_recv().ok()).last().unwrap();
    let json = serde_json::to_value(&last).unwrap();
    assert_eq!(json["type"], "run_failed");
    assert_eq!(json["classification"]["kind"], "auth");
    assert_eq!(json["classification"]["severity"], "critical");
    assert_eq!(json["classification"]["retryable"], false);
}

#[tokio::test]
async fn streaming_agents_emit_text_deltas() {
    let model = ScriptedModel::new([Ok(Completion::text("hello world"))]);
    let agent = Agent::builder(model).streaming(true).build().unwrap();
    let mut rx = agent.subscribe();
    assert_eq!(agent.run("x").await.unwrap().answer, "hello world");
    let deltas: Vec<String> = std::iter::from_fn(|| rx.try_recv().ok())
        .filter_map(|e| match e.kind {
            EventKind::TextDelta { text } => Some(text),
            _ => None,
        })
        .collect();
    assert_eq!(deltas.concat(), "hello world");
}

#[tokio::test]
async fn a_run_can_turn_streaming_off_or_on_whatever_the_agent_says() {
    fn deltas(rx: &mut tokio::sync::broadcast::Receiver<pocket_agent::AgentEvent>) -> String {
        std::iter::from_fn(|| rx.try_recv().ok())
            .filter_map(|e| match e.kind {
                EventKind::TextDelta { text } => Some(text),
                _ => None,
            })
            .collect()
    }
    let streaming = Agent::builder(ScriptedModel::new([Ok(Completion::text("one piece"))]))
        .streaming(true)
        .build()
        .unwrap();
    let mut rx = streaming.subscribe();
    let request = RunRequest {
        stream: Some(false),
        ..RunRequest::new("x")
    };
    assert_eq!(
        streaming.run_with(request).await.unwrap().answer,
        "one piece"
    );
    assert_eq!(
        deltas(&mut rx),
        "",
        "no deltas when the run turns streaming off"
    );

    let plain = Agent::builder(ScriptedModel::new([Ok(Completion::text("streamed"))]))
        .build()
        .unwrap();
    let mut rx = plain.subscribe();
    let request = RunRequest {
        stream: Some(true),
        ..RunRequest::new("x")
    };
    assert_eq!(plain.run_with(request).await.unwrap().answer, "streamed");
    assert_eq!(deltas(&mut rx), "streamed");
}

#[test]
fn build_refuses_duplicate_tools_and_zero_iterations() {
    let err = Agent::builder(ScriptedModel::new([]))
        .tool(Echo::default())
        .tool(Echo::default())
        .build()
        .unwrap_err();
    assert_eq!(err.to_string(), "two tools are named `echo`");
    let err = Agent::builder(ScriptedModel::new([]))
        .max_iterations(0)
        .build()
        .unwrap_err();
    assert_eq!(err.to_string(), "max_iterations must be greater than zero");
}

#[test]
fn derived_schema_describes_the_arguments() {
    let agent = Agent::builder(ScriptedModel::new([]))
        .tool(Echo::default())
        .build()
        .unwrap();
    let schema = &agent.tools()[0].parameters;
    assert_eq!(schema["type"], "object");
    assert_eq!(schema["properties"]["text"]["type"], "string");
    assert_eq!(schema["properties"]["text"]["description"], "Text to echo.");
    assert_eq!(schema["required"], json!(["text"]));
    assert!(schema.get("$schema").is_none());
}
