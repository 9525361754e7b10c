//! The OpenAI-compatible endpoint.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use serde_json::{Value, json};
use support::{Harness, Options};

fn request(stream: bool) -> Value {
    json!({
        "model": "helper",
        "temperature": 0.2,
        "stream": stream,
        "stream_options": {"include_usage": true},
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "earlier question"},
            {"role": "assistant", "content": "earlier answer"},
            {"role": "user", "content": [{"type": "text", "text": "what now"}]},
        ],
    })
}

const ANSWER: &str = "I have no tool for this. You asked: what now";

/// Checks a non-streaming answer's shape and returns its body.
async fn answer_in_openai_shape(resp: reqwest::Response) -> Value {
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], "helper");
    assert!(body["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert!(body["created"].as_u64().unwrap() > 1_600_000_000);
    let choices = body["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 1);
    assert_eq!(choices[0]["index"], 0);
    assert_eq!(choices[0]["finish_reason"], "stop");
    assert_eq!(choices[0]["message"]["role"], "assistant");
    assert_eq!(choices[0]["message"]["content"], ANSWER);
    let usage = &body["usage"];
    let (input, output) = (
        usage["prompt_tokens"].as_u64().unwrap(),
        usage["completion_tokens"].as_u64().unwrap(),
    );
    assert!(input > 0 && output > 0, "{usage}");
    assert_eq!(usage["total_tokens"].as_u64().unwrap(), input + output);
    body
}

#[tokio::test]
async fn a_completion_runs_at_once_on_a_free_instance_without_a_task() {
    let mut h = Harness::start(Options::default()).await;
    h.run_cluster();
    let resp = h.post_json("/v1/chat/completions", &request(false)).await;
    let body = answer_in_openai_shape(resp).await;
    let id = body["id"].as_str().unwrap();
    assert!(id.starts_with("chatcmpl-direct-"), "{id}");
    // Run directly: nothing was queued, and the instance counted the run.
    let stats = h.cluster.store().stats().await.unwrap();
    assert_eq!(
        stats.by_status.iter().map(|(_, n)| n).sum::<u64>(),
        0,
        "{stats:?}"
    );
    let report = h.cluster.report().await.unwrap();
    let succeeded: u64 = report.instances.iter().map(|i| i.succeeded).sum();
    assert_eq!(succeeded, 1, "{:?}", report.instances);
    h.stop().await;
}

#[tokio::test]
async fn a_queued_completion_is_a_task_carrying_the_history() {
    let mut h = Harness::start(Options {
        chat_queued: true,
        ..Options::default()
    })
    .await;
    h.run_cluster();
    let resp = h.post_json("/v1/chat/completions", &request(false)).await;
    let body = answer_in_openai_shape(resp).await;

    // The task behind it carries the history.
    let task_id = body["id"].as_str().unwrap().trim_start_matches("chatcmpl-");
    let record = h
        .cluster
        .store()
        .get(&pocket_cluster::TaskId(task_id.into()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.task, "what now");
    assert_eq!(
        record.metadata["history"],
        json!([
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "earlier question"},
            {"role": "assistant", "content": "earlier answer"},
        ])
    );
    h.stop().await;
}

// Several threads: the run may finish before the handler reads a thing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_completion_sends_chunks_then_done() {
    let mut h = Harness::start(Options::default()).await;
    h.run_cluster();
    let resp = h.post_json("/v1/chat/completions", &request(true)).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    let data: Vec<String> = resp
        .bytes_stream()
        .eventsource()
        .map(|e| e.unwrap().data)
        .collect()
        .await;
    // Role, one content chunk per streamed word, finish, usage, [DONE].
    assert_eq!(data.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let id = chunks[0]["id"].as_str().unwrap();
    for c in &chunks {
        assert_eq!(c["object"], "chat.completion.chunk");
        assert_eq!(c["model"], "helper");
        assert_eq!(c["id"], id);
    }
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let n = chunks.len();
    let content = &chunks[1..n - 2];
    assert!(
        content.len() > 1,
        "the answer came in several chunks: {data:?}"
    );
    for c in content {
        assert!(c["choices"][0]["finish_reason"].is_null());
        assert!(
            !c["choices"][0]["delta"]["content"]
                .as_str()
                .unwrap()
                .is_empty()
        );
    }
    let joined: String = content
        .iter()
        .map(|c| c["choices"][0]["delta"]["content"].as_str().unwrap())
        .collect();
    assert_eq!(joined, ANSWER, "the chunks join up to the answer, in order");
    assert_eq!(chunks[n - 2]["choices"][0]["delta"], json!({}));
    assert_eq!(chunks[n - 2]["choices"][0]["finish_reason"], "stop");
    assert_eq!(chunks[n - 1]["choices"], json!([]));
    let usage = &chunks[n - 1]["usage"];
    assert_eq!(
        usage["total_tokens"].as_u64().unwrap(),
        usage["prompt_tokens"].as_u64().unwrap() + usage["completion_tokens"].as_u64().unwrap()
    );

    // The same request without streaming answers the same text.
    let body: Value = h
        .post_json("/v1/chat/completions", &request(false))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], joined.as_str());
    h.stop().await;
}

#[tokio::test]
async fn errors_use_openai_shape() {
    let h = Harness::start(Options::default()).await;
    let resp = h
        .post_json(
            "/v1/chat/completions",
            &json!({"model": "nobody", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(resp.status(), 404);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["type"], "not_found");
    assert_eq!(body["error"]["code"], "not_found");
    assert!(body["error"]["param"].is_null());
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("`nobody`")
    );

    let resp = h
        .post_json(
            "/v1/chat/completions",
            &json!({"model": "helper", "messages": [{"role": "assistant", "content": "hi"}]}),
        )
        .await;
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body["error"]["message"],
        "the last message must have role `user`"
    );
    assert!(body["error"]["param"].is_null());

    let resp = h
        .post_json("/v1/chat/completions", &json!({"messages": []}))
        .await;
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert!(body["error"]["message"].as_str().unwrap().contains("model"));
    assert_eq!(body["error"]["code"], "invalid_request");
    h.stop().await;
}

#[tokio::test]
async fn models_lists_the_agents() {
    let h = Harness::start(Options::default()).await;
    let body: Value = h
        .get("/v1/models")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        body,
        json!({"object": "list", "data": [
            {"id": "default", "object": "model", "created": 0, "owned_by": "pocket"},
            {"id": "helper", "object": "model", "created": 0, "owned_by": "pocket"},
        ]})
    );
    h.stop().await;
}

/// Waits (bounded) until the cluster has `n` task followers.
async fn followers(h: &Harness, n: usize) {
    for _ in 0..500 {
        if h.cluster.followers() == n {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(h.cluster.followers(), n, "followers");
}

#[tokio::test]
async fn beyond_the_in_flight_bound_a_completion_gets_429_with_retry_after() {
    let mut h = Harness::start(Options {
        max_chat_in_flight: Some(1),
        ..Options::default()
    })
    .await;
    // Not running yet: the first completion waits for its task.
    let first = tokio::spawn({
        let request = h.post("/v1/chat/completions").json(&request(false));
        async move { request.send().await.unwrap() }
    });
    followers(&h, 1).await;
    let resp = h.post_json("/v1/chat/completions", &request(false)).await;
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["retry-after"], "1");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["type"], "busy");
    assert_eq!(body["error"]["code"], "busy");
    assert!(body["error"]["param"].is_null());
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("1 chat completions are in flight"),
        "{message}"
    );

    h.run_cluster();
    let resp = first.await.unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], ANSWER);
    // The slot is free again.
    let resp = h.post_json("/v1/chat/completions", &request(false)).await;
    assert_eq!(resp.status(), 200);
    followers(&h, 0).await;
    h.stop().await;
}

#[tokio::test]
async fn a_client_that_goes_away_leaves_no_follower_behind() {
    let h = Harness::start(Options {
        max_chat_in_flight: Some(1),
        ..Options::default()
    })
    .await;
    // Not running: the tasks stay queued while their clients wait.
    let resp = h.post_json("/v1/chat/completions", &request(true)).await;
    assert_eq!(resp.status(), 200);
    followers(&h, 1).await;
    drop(resp);
    followers(&h, 0).await;

    let waiting = tokio::spawn({
        let request = h.post("/v1/chat/completions").json(&request(false));
        async move { request.send().await }
    });
    followers(&h, 1).await;
    waiting.abort();
    followers(&h, 0).await;
    // Its slot was given back too.
    let resp = h.post_json("/v1/chat/completions", &request(true)).await;
    assert_eq!(resp.status(), 200);
    drop(resp);
    followers(&h, 0).await;
    h.stop().await;
}
