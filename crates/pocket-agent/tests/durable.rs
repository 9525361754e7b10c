//! Durable runs: checkpoints, the tool-call journal, and resuming after a crash.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails loudly by design

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures_util::future::BoxFuture;
use pocket_agent::testing::{MemoryCheckpointer, ScriptedModel, call};
use pocket_agent::{
    Agent, AgentErrorKind, Approval, ApprovalError, ApprovalRequest, Approver, Checkpoint,
    Classify, Completion, EventKind, InterruptedCalls, JournalEntry, JournalState, Message,
    RunRequest, Tool, ToolContext, ToolError,
};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::Notify;

#[derive(Deserialize, JsonSchema)]
struct Args {
    /// Text.
    text: String,
}

/// Counts its executions; optionally waits on a notify before returning (a call in flight).
#[derive(Clone, Default)]
struct Effect {
    runs: Arc<AtomicUsize>,
    idempotent: bool,
    hold: Option<Arc<Notify>>,
}

impl Tool for Effect {
    type Args = Args;
    type Output = String;
    fn name(&self) -> &str {
        "effect"
    }
    fn description(&self) -> &str {
        "Has an effect."
    }
    fn idempotent(&self) -> bool {
        self.idempotent
    }
    async fn call(&self, args: Args, _: &ToolContext) -> Result<String, ToolError> {
        self.runs.fetch_add(1, Ordering::SeqCst);
        if let Some(hold) = &self.hold {
            hold.notified().await;
        }
        Ok(format!("did {}", args.text))
    }
}

fn effect_turn() -> Completion {
    Completion::tool_calls(vec![call("c1", "effect", json!({"text": "it"}))])
}

fn request(store: &Arc<MemoryCheckpointer>, resume: Option<Checkpoint>) -> RunRequest {
    RunRequest {
        run_id: Some("run-1".into()),
        checkpointer: Some(store.clone()),
        resume,
        ..RunRequest::new("do it")
    }
}

/// The checkpoint a crash right after the model asked for the call leaves behind.
fn before_the_call(journal: Vec<JournalEntry>) -> Checkpoint {
    Checkpoint {
        messages: vec![Message::user("do it"), effect_turn().to_message()],
        iterations: 1,
        journal,
        ..Checkpoint::default()
    }
}

fn entry(state: JournalState) -> JournalEntry {
    JournalEntry {
        call_id: "c1".into(),
        tool: "effect".into(),
        state,
    }
}

#[tokio::test]
async fn a_run_checkpoints_before_and_after_each_round_of_calls() {
    let store = Arc::new(MemoryCheckpointer::default());
    let model = ScriptedModel::new([Ok(effect_turn()), Ok(Completion::text("done"))]);
    let agent = Agent::builder(model)
        .tool(Effect::default())
        .build()
        .unwrap();
    let out = agent.run_with(request(&store, None)).await.unwrap();
    assert_eq!(out.answer, "done");
    assert_eq!(store.checkpoints(), 2);
    let last = store.resume_point().unwrap();
    assert_eq!(last.iterations, 1);
    assert!(
        matches!(last.messages.last(), Some(Message::Tool { content, .. }) if content == "did it")
    );
    assert_eq!(last.tool_calls.len(), 1);
    assert!(last.journal.is_empty(), "the checkpoint covers the journal");
}

#[tokio::test]
async fn a_journaled_result_is_replayed_not_executed_again() {
    let store = Arc::new(MemoryCheckpointer::default());
    let effect = Effect::default();
    let model = Arc::new(ScriptedModel::new([Ok(Completion::text("finished"))]));
    let agent = Agent::builder(model.clone())
        .tool(effect.clone())
        .build()
        .unwrap();
    let mut events = agent.subscribe();
    let cp = before_the_call(vec![
        entry(JournalState::Started),
        entry(JournalState::Finished {
            content: "did it".into(),
            is_error: false,
        }),
    ]);
    let out = agent.run_with(request(&store, Some(cp))).await.unwrap();
    assert_eq!(
        effect.runs.load(Ordering::SeqCst),
        0,
        "the journaled call did not run again"
    );
    assert_eq!(out.answer, "finished");
    assert_eq!(out.iterations, 2, "iterations continue from the checkpoint");
    // The model saw the replayed result.
    assert!(
        matches!(model.requests()[0].messages.last(), Some(Message::Tool { content, .. }) if content == "did it")
    );
    let names: Vec<_> = std::iter::from_fn(|| events.try_recv().ok())
        .map(|e| e.kind.name())
        .collect();
    assert_eq!(names[0], "run_resumed");
    assert!(names.contains(&"tool_call_replayed"));
    assert!(!names.contains(&"tool_call_started"));
}

#[tokio::test]
async fn a_call_not_yet_started_runs_on_resume() {
    let store = Arc::new(MemoryCheckpointer::default());
    let effect = Effect::default();
    let agent = Agent::builder(ScriptedModel::new([Ok(Completion::text("ok"))]))
        .tool(effect.clone())
        .build()
        .unwrap();
    agent
        .run_with(request(&store, Some(before_the_call(vec![]))))
        .await
        .unwrap();
    assert_eq!(effect.runs.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn an_interrupted_non_idempotent_call_fails_the_run_naming_it() {
    let store = Arc::new(MemoryCheckpointer::default());
    let effect = Effect::default();
    let agent = Agent::builder(ScriptedModel::new([]))
        .tool(effect.clone())
        .build()
        .unwrap();
    let cp = before_the_call(vec![entry(JournalState::Started)]);
    let err = agent.run_with(request(&store, Some(cp))).await.unwrap_err();
    assert!(
        matches!(err.kind(), AgentErrorKind::Interrupted { tool, call_id } if tool == "effect" && call_id == "c1")
    );
    assert!(err.to_string().contains("not idempotent"), "{err}");
    assert!(!err.is_retryable());
    assert_eq!(effect.runs.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn an_interrupted_idempotent_call_runs_again() {
    let store = Arc::new(MemoryCheckpointer::default());
    let effect = Effect {
        idempotent: true,
        ..Effect::default()
    };
    let agent = Agent::builder(ScriptedModel::new([Ok(Completion::text("ok"))]))
        .tool(effect.clone())
        .build()
        .unwrap();
    let cp = before_the_call(vec![entry(JournalState::Started)]);
    agent.run_with(request(&store, Some(cp))).await.unwrap();
    assert_eq!(effect.runs.load(Ordering::SeqCst), 1);
}

struct Yes(AtomicUsize);

impl Approver for Yes {
    fn approve<'a>(
        &'a self,
        _: &'a ApprovalRequest,
    ) -> BoxFuture<'a, Result<Approval, ApprovalError>> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Box::pin(std::future::ready(Ok(Approval::Approve)))
    }
}

#[tokio::test]
async fn interrupted_calls_can_go_to_approval_instead() {
    let store = Arc::new(MemoryCheckpointer::default());
    let effect = Effect::default();
    let approver = Arc::new(Yes(AtomicUsize::new(0)));
    let agent = Agent::builder(ScriptedModel::new([Ok(Completion::text("ok"))]))
        .tool(effect.clone())
        .shared_approver(approver.clone())
        .interrupted_calls(InterruptedCalls::Ask)
        .build()
        .unwrap();
    let cp = before_the_call(vec![entry(JournalState::Started)]);
    agent.run_with(request(&store, Some(cp))).await.unwrap();
    assert_eq!(
        approver.0.load(Ordering::SeqCst),
        1,
        "a person was asked although the tool is safe"
    );
    assert_eq!(effect.runs.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_failing_checkpoint_fails_the_run_retryably() {
    let store = Arc::new(MemoryCheckpointer::default());
    store.fail_from_now();
    let effect = Effect::default();
    let agent = Agent::builder(ScriptedModel::new([Ok(effect_turn())]))
        .tool(effect.clone())
        .build()
        .unwrap();
    let err = agent.run_with(request(&store, None)).await.unwrap_err();
    assert!(matches!(err.kind(), AgentErrorKind::Checkpoint { message } if message == "disk full"));
    assert!(err.is_retryable());
    assert_eq!(
        effect.runs.load(Ordering::SeqCst),
        0,
        "nothing runs that could not be journaled"
    );
}

/// A process dies while a call is in flight: the run's future is dropped mid-call. A new
/// agent resumes from what the store holds.
#[tokio::test]
async fn crash_mid_call_then_resume() {
    let store = Arc::new(MemoryCheckpointer::default());
    let hold = Arc::new(Notify::new());
    let effect = Effect {
        hold: Some(hold),
        ..Effect::default()
    };
    let agent = Agent::builder(ScriptedModel::new([Ok(effect_turn())]))
        .tool(effect.clone())
        .build()
        .unwrap();
    let mut events = agent.subscribe();
    let run = tokio::spawn({
        let agent = agent.clone();
        let req = request(&store, None);
        async move { agent.run_with(req).await }
    });
    while !matches!(
        events.recv().await.unwrap().kind,
        EventKind::ToolCallStarted { .. }
    ) {}
    run.abort(); // the crash
    assert!(run.await.unwrap_err().is_cancelled());

    let resume = store.resume_point().unwrap();
    assert_eq!(resume.journal, vec![entry(JournalState::Started)]);
    let fresh = Agent::builder(ScriptedModel::new([Ok(Completion::text("ok"))]))
        .tool(Effect::default())
        .build()
        .unwrap();
    let err = fresh
        .run_with(request(&store, Some(resume)))
        .await
        .unwrap_err();
    assert!(
        matches!(err.kind(), AgentErrorKind::Interrupted { .. }),
        "{err}"
    );
    assert_eq!(
        effect.runs.load(Ordering::SeqCst),
        1,
        "ran once, before the crash"
    );
}
