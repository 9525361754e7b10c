//! `/v1/tasks`: submit, read, cancel, idempotency, follow by SSE.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use serde_json::{Value, json};
use support::{Harness, Options, expect_error};

#[tokio::test]
async fn submitted_task_runs_and_reads_back_with_its_result() {
    let mut h = Harness::start(Options::default()).await;
    h.run_cluster();
    let id = h
        .submit(json!({"task": "hello there", "agent": "helper", "priority": 5}))
        .await;
    let view = h.wait_terminal(&id).await;
    assert_eq!(view["id"], id.as_str());
    assert_eq!(view["status"], "succeeded");
    assert_eq!(view["agent"], "helper");
    assert_eq!(view["priority"], 5);
    assert_eq!(view["attempts"], 1);
    assert_eq!(
        view["result"]["answer"],
        "I have no tool for this. You asked: hello there"
    );
    assert!(view.get("error").is_none());
    // RFC 3339 in UTC.
    let created = view["created_at"].as_str().unwrap();
    assert!(created.ends_with('Z') && created.contains('T'), "{created}");
    assert!(view["updated_at"].as_str().unwrap() >= created);
    h.stop().await;
}

#[tokio::test]
async fn a_task_without_agent_goes_to_the_default_agent_and_starts_queued() {
    let h = Harness::start(Options::default()).await;
    let id = h.submit(json!({"task": "later"})).await;
    let view: Value = h
        .get(&format!("/v1/tasks/{id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(view["status"], "queued");
    assert_eq!(view["agent"], "default");
    assert_eq!(view["priority"], 0);
    assert_eq!(view["attempts"], 0);
    assert!(view.get("result").is_none());
    h.stop().await;
}

#[tokio::test]
async fn idempotency_key_returns_the_same_id_and_refuses_a_different_body() {
    let h = Harness::start(Options::default()).await;
    let body = json!({"task": "once", "idempotency_key": "k-1"});
    let first = h.submit(body.clone()).await;
    let second = h.submit(body).await;
    assert_eq!(first, second);
    let resp = h
        .post_json(
            "/v1/tasks",
            &json!({"task": "something else", "idempotency_key": "k-1"}),
        )
        .await;
    let message = expect_error(resp, 409, "conflict").await;
    assert!(message.contains("idempotency_key"), "{message}");
    h.stop().await;
}

#[tokio::test]
async fn delete_cancels_then_conflicts_and_unknown_ids_are_404() {
    let h = Harness::start(Options::default()).await;
    let id = h.submit(json!({"task": "never runs"})).await;
    let resp = h.delete(&format!("/v1/tasks/{id}")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let view: Value = resp.json().await.unwrap();
    assert_eq!(view["status"], "cancelled");

    let resp = h.delete(&format!("/v1/tasks/{id}")).send().await.unwrap();
    let message = expect_error(resp, 409, "conflict").await;
    assert!(
        message.contains("already finished (cancelled)"),
        "{message}"
    );

    let resp = h.delete("/v1/tasks/nope").send().await.unwrap();
    expect_error(resp, 404, "not_found").await;
    let resp = h.get("/v1/tasks/nope").send().await.unwrap();
    expect_error(resp, 404, "not_found").await;
    let resp = h.get("/v1/tasks/nope/events").send().await.unwrap();
    expect_error(resp, 404, "not_found").await;
    h.stop().await;
}

#[tokio::test]
async fn events_stream_follows_the_task_to_its_end() {
    let mut h = Harness::start(Options::default()).await;
    let id = h.submit(json!({"task": "stream me"})).await;
    let resp = h
        .get(&format!("/v1/tasks/{id}/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    // Subscribed before the headers came back: start working now, miss nothing.
    h.run_cluster();
    let events: Vec<_> = resp
        .bytes_stream()
        .eventsource()
        .map(|e| e.unwrap())
        .collect()
        .await;
    let names: Vec<&str> = events.iter().map(|e| e.event.as_str()).collect();
    let task_level: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| n.starts_with("task_") || *n == "end")
        .collect();
    assert_eq!(
        task_level,
        ["task_claimed", "task_started", "task_succeeded", "end"]
    );
    // The run's own steps, in order, between its start and its success.
    let steps: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| !n.starts_with("task_") && *n != "end")
        .collect();
    let deltas = steps.iter().filter(|n| **n == "text_delta").count();
    assert!(deltas > 1, "the answer streams word by word: {steps:?}");
    let mut expected = vec!["run_started", "model_call_started"];
    expected.extend(std::iter::repeat_n("text_delta", deltas));
    expected.extend(["model_call_finished", "run_finished"]);
    assert_eq!(steps, expected);
    let started = names.iter().position(|n| *n == "task_started").unwrap();
    let succeeded = names.iter().position(|n| *n == "task_succeeded").unwrap();
    assert_eq!(succeeded - started - 1, steps.len());
    let text: String = events
        .iter()
        .filter(|e| e.event == "text_delta")
        .map(|e| {
            let step: Value = serde_json::from_str(&e.data).unwrap();
            assert_eq!(step["run_id"], id.as_str());
            step["text"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(text, "I have no tool for this. You asked: stream me");

    let claimed: Value = serde_json::from_str(&events[0].data).unwrap();
    assert_eq!(claimed["type"], "task_claimed");
    assert_eq!(claimed["id"], id.as_str());
    assert_eq!(claimed["attempt"], 1);
    let end: Value = serde_json::from_str(&events.last().unwrap().data).unwrap();
    assert_eq!(end["status"], "succeeded");
    assert_eq!(
        end["result"]["answer"],
        "I have no tool for this. You asked: stream me"
    );
    h.stop().await;
}

#[tokio::test]
async fn events_show_the_approval_and_the_tool_call_of_a_run() {
    let mut h = Harness::start(Options {
        dangerous_tool: true,
        ..Options::default()
    })
    .await;
    let id = h.submit(json!({"task": "launch 'the rocket'"})).await;
    let resp = h
        .get(&format!("/v1/tasks/{id}/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    h.run_cluster();
    let mut events = resp.bytes_stream().eventsource();
    let mut names = Vec::new();
    let mut requested = None;
    while let Some(event) = events.next().await {
        let event = event.unwrap();
        names.push(event.event.clone());
        if event.event == "approval_requested" {
            requested = Some(serde_json::from_str::<Value>(&event.data).unwrap());
            break;
        }
    }
    let requested = requested.expect("the run asked for approval");
    assert_eq!(requested["tool"], "launch");
    assert_eq!(requested["risk"], "dangerous");
    assert_eq!(requested["arguments"], json!({"target": "the rocket"}));
    let call_id = requested["call_id"].as_str().unwrap();
    let approval = pocket_cluster::store::approval_id(&pocket_cluster::TaskId(id.clone()), call_id);
    let resp = h
        .post(&format!("/v1/approvals/{approval}"))
        .json(&json!({"decision": "approve"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let rest: Vec<_> = events.map(|e| e.unwrap()).collect().await;
    names.extend(rest.iter().map(|e| e.event.clone()));
    let after: Vec<&str> = names
        .iter()
        .map(String::as_str)
        .skip_while(|n| *n != "approval_requested")
        .filter(|n| *n != "text_delta")
        .collect();
    assert_eq!(
        after,
        [
            "approval_requested",
            "approval_decided",
            "tool_call_started",
            "tool_call_finished",
            "model_call_started",
            "model_call_finished",
            "run_finished",
            "task_succeeded",
            "end"
        ]
    );
    let decided: Value = serde_json::from_str(
        &rest
            .iter()
            .find(|e| e.event == "approval_decided")
            .unwrap()
            .data,
    )
    .unwrap();
    assert_eq!(decided["decision"], "approve");
    h.stop().await;
}

#[tokio::test]
async fn events_of_a_cancelled_queued_task_end_with_its_state() {
    let h = Harness::start(Options::default()).await;
    let id = h.submit(json!({"task": "cancel me"})).await;
    let resp = h
        .get(&format!("/v1/tasks/{id}/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let cancelled = h.delete(&format!("/v1/tasks/{id}")).send().await.unwrap();
    assert_eq!(cancelled.status(), 200);
    let events: Vec<_> = resp
        .bytes_stream()
        .eventsource()
        .map(|e| e.unwrap())
        .collect()
        .await;
    // The cancellation reaches the stream at once, then the end.
    let names: Vec<&str> = events.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(names, ["task_cancelled", "end"]);
    let end: Value = serde_json::from_str(&events[1].data).unwrap();
    assert_eq!(end["status"], "cancelled");
    h.stop().await;
}

#[tokio::test]
async fn shutdown_ends_open_event_streams_so_serve_returns() {
    let h = Harness::start(Options::default()).await;
    let id = h.submit(json!({"task": "stuck in the queue"})).await;
    let resp = h
        .get(&format!("/v1/tasks/{id}/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let reading = tokio::spawn(async move {
        resp.bytes_stream()
            .eventsource()
            .map(|e| e.unwrap())
            .collect::<Vec<_>>()
            .await
    });
    // `stop` waits for `serve` to return, which needs the stream to end.
    tokio::time::timeout(std::time::Duration::from_secs(10), h.stop())
        .await
        .expect("serve returned");
    let events = reading.await.unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].event, "error");
    let body: Value = serde_json::from_str(&events[0].data).unwrap();
    assert_eq!(body["error"]["type"], "unavailable");
}
