//! Approvals over HTTP.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;

use pocket_agent::{Approval, ApprovalRequest, Approver, Risk};
use serde_json::{Value, json};
use support::{Harness, Options, expect_error};

fn request(call: &str) -> ApprovalRequest {
    ApprovalRequest {
        run_id: Arc::from("run-1"),
        agent: Arc::from("default"),
        call_id: call.into(),
        tool: "shell".into(),
        risk: Risk::Dangerous,
        arguments: json!({"command": "rm -rf /tmp/x"}),
    }
}

async fn pending(h: &Harness, n: usize) -> Vec<Value> {
    for _ in 0..200 {
        let body: Value = h
            .get("/v1/approvals")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let list = body["approvals"].as_array().unwrap().clone();
        if list.len() == n {
            return list;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("never saw {n} pending approvals");
}

#[tokio::test]
async fn pending_requests_are_listed_and_answered_over_http() {
    let h = Harness::start(Options::default()).await;
    assert_eq!(pending(&h, 0).await, Vec::<Value>::new());
    let approver = h.approver.clone();
    let first = tokio::spawn(async move { approver.approve(&request("call-1")).await });
    let list = pending(&h, 1).await;
    let approver = h.approver.clone();
    let second = tokio::spawn(async move { approver.approve(&request("call-2")).await });
    let list2 = pending(&h, 2).await;
    assert_eq!(list2[0], list[0]);
    let a = &list[0];
    assert_eq!(a["run_id"], "run-1");
    assert_eq!(a["agent"], "default");
    assert_eq!(a["call_id"], "call-1");
    assert_eq!(a["tool"], "shell");
    assert_eq!(a["risk"], "dangerous");
    assert_eq!(a["arguments"], json!({"command": "rm -rf /tmp/x"}));
    assert!(a["requested_at"].as_str().unwrap().ends_with('Z'));

    let id1 = list2[0]["id"].as_str().unwrap();
    let id2 = list2[1]["id"].as_str().unwrap();
    let resp = h
        .post(&format!("/v1/approvals/{id1}"))
        .json(&json!({"decision": "approve"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.json::<Value>().await.unwrap(),
        json!({"id": id1, "decision": "approve"})
    );
    assert_eq!(first.await.unwrap().unwrap(), Approval::Approve);

    let resp = h
        .post(&format!("/v1/approvals/{id2}"))
        .json(&json!({"decision": "deny", "reason": "not today"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        second.await.unwrap().unwrap(),
        Approval::Deny("not today".into())
    );
    assert_eq!(pending(&h, 0).await, Vec::<Value>::new());

    // Answered already: the first answer stands.
    let resp = h
        .post(&format!("/v1/approvals/{id1}"))
        .json(&json!({"decision": "deny"}))
        .send()
        .await
        .unwrap();
    let message = expect_error(resp, 409, "conflict").await;
    assert!(message.contains("answered already (approve)"), "{message}");
    let resp = h
        .post_json("/v1/approvals/apr-unknown", &json!({"decision": "approve"}))
        .await;
    expect_error(resp, 404, "not_found").await;
    h.stop().await;
}

#[tokio::test]
async fn ids_come_from_the_run_and_call_and_an_answer_outlives_the_wait() {
    let h = Harness::start(Options::default()).await;
    let approver = h.approver.clone();
    let asking = tokio::spawn(async move { approver.approve(&request("call-7")).await });
    let list = pending(&h, 1).await;
    let id = list[0]["id"].as_str().unwrap().to_owned();
    assert_eq!(
        id,
        pocket_cluster::store::approval_id(&pocket_cluster::TaskId("run-1".into()), "call-7")
    );
    // The run stops waiting (its process stops, say) before anyone answers...
    asking.abort();
    let _ = asking.await;
    // ...asks again for the same call when it resumes, and is answered then.
    let approver = h.approver.clone();
    let resumed = tokio::spawn(async move { approver.approve(&request("call-7")).await });
    assert_eq!(pending(&h, 1).await[0]["id"], id.as_str());
    let edited = json!({"command": "ls /tmp/x"});
    let resp = h
        .post(&format!("/v1/approvals/{id}"))
        .json(&json!({"decision": "edit", "arguments": edited}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.json::<Value>().await.unwrap(),
        json!({"id": id, "decision": "edit"})
    );
    assert_eq!(
        resumed.await.unwrap().unwrap(),
        Approval::Edit(edited.clone())
    );
    // A third ask of the same call (another resume) gets the recorded answer at once.
    assert_eq!(
        h.approver.approve(&request("call-7")).await.unwrap(),
        Approval::Edit(edited)
    );
    assert_eq!(pending(&h, 0).await, Vec::<Value>::new());
    h.stop().await;
}

#[tokio::test]
async fn a_bad_decision_is_400_and_an_abandoned_request_disappears() {
    let h = Harness::start(Options::default()).await;
    let approver = h.approver.clone();
    let asking = tokio::spawn(async move { approver.approve(&request("call-1")).await });
    let list = pending(&h, 1).await;
    let id = list[0]["id"].as_str().unwrap();
    let resp = h
        .post(&format!("/v1/approvals/{id}"))
        .json(&json!({"decision": "maybe"}))
        .send()
        .await
        .unwrap();
    let message = expect_error(resp, 400, "invalid_request").await;
    assert!(message.contains("maybe"), "{message}");
    for (body, says) in [
        (json!({"decision": "edit"}), "needs `arguments`"),
        (
            json!({"decision": "edit", "arguments": [1]}),
            "needs `arguments`",
        ),
        (
            json!({"decision": "approve", "arguments": {"command": "ls"}}),
            "`edit` only",
        ),
    ] {
        let resp = h
            .post(&format!("/v1/approvals/{id}"))
            .json(&body)
            .send()
            .await
            .unwrap();
        let message = expect_error(resp, 400, "invalid_request").await;
        assert!(message.contains(says), "{body}: {message}");
    }
    // The agent stops waiting (its approval timeout): the request is withdrawn.
    asking.abort();
    let _ = asking.await;
    assert_eq!(pending(&h, 0).await, Vec::<Value>::new());
    h.stop().await;
}

#[tokio::test]
async fn a_dangerous_call_waits_for_approval_through_the_cluster() {
    let mut h = Harness::start(Options {
        dangerous_tool: true,
        ..Options::default()
    })
    .await;
    h.run_cluster();
    let id = h.submit(json!({"task": "launch 'the rocket'"})).await;
    let list = pending(&h, 1).await;
    assert_eq!(list[0]["run_id"], id.as_str());
    assert_eq!(list[0]["tool"], "launch");
    assert_eq!(list[0]["arguments"], json!({"target": "the rocket"}));
    let view: Value = h
        .get(&format!("/v1/tasks/{id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(view["status"], "waiting_approval");

    let approval = list[0]["id"].as_str().unwrap();
    let resp = h
        .post(&format!("/v1/approvals/{approval}"))
        .json(&json!({"decision": "approve"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let view = h.wait_terminal(&id).await;
    assert_eq!(view["status"], "succeeded");
    assert_eq!(
        view["result"]["answer"],
        "launch returned: the rocket is away"
    );
    h.stop().await;
}

/// Submits a dangerous task and answers its approval with `decision`; returns the task's
/// final view.
async fn answer_through_the_cluster(decision: Value) -> Value {
    let mut h = Harness::start(Options {
        dangerous_tool: true,
        ..Options::default()
    })
    .await;
    h.run_cluster();
    let id = h.submit(json!({"task": "launch 'the rocket'"})).await;
    let list = pending(&h, 1).await;
    let approval = list[0]["id"].as_str().unwrap();
    let resp = h
        .post(&format!("/v1/approvals/{approval}"))
        .json(&decision)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let view = h.wait_terminal(&id).await;
    // Its task is finished: the request is no longer pending, and cannot be answered.
    assert_eq!(pending(&h, 0).await, Vec::<Value>::new());
    let resp = h
        .post(&format!("/v1/approvals/{approval}"))
        .json(&json!({"decision": "approve"}))
        .send()
        .await
        .unwrap();
    expect_error(resp, 409, "conflict").await;
    h.stop().await;
    view
}

#[tokio::test]
async fn a_denied_call_does_not_run_and_the_model_hears_why() {
    let view =
        answer_through_the_cluster(json!({"decision": "deny", "reason": "no launches today"}))
            .await;
    assert_eq!(view["status"], "succeeded");
    let call = &view["result"]["tool_calls"][0];
    assert_eq!(call["name"], "launch");
    let error = call["error"].as_str().unwrap();
    assert!(error.contains("no launches today"), "{error}");
}

#[tokio::test]
async fn an_edited_call_runs_with_the_new_arguments() {
    let view = answer_through_the_cluster(
        json!({"decision": "edit", "arguments": {"target": "the probe"}}),
    )
    .await;
    assert_eq!(view["status"], "succeeded");
    assert_eq!(
        view["result"]["answer"],
        "launch returned: the probe is away"
    );
}
