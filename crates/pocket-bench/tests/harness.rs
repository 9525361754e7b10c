#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The stub answers the scripted round, and the runner completes tasks against it.

use std::time::Duration;

use pocket_bench::runner::{self, RunnerConfig};
use pocket_bench::stub::{self, StubConfig};
use serde_json::{Value, json};

async fn post(url: &str, body: Value) -> (u16, String) {
    let resp = reqwest::Client::new()
        .post(url)
        .json(&body)
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

#[tokio::test]
async fn stub_answers_a_tool_call_then_text_with_usage() {
    let stub = stub::spawn("127.0.0.1:0", StubConfig::default())
        .await
        .unwrap();
    let url = format!("{}/chat/completions", stub.base_url());
    let tools = json!([{"type": "function", "function": {"name": "add", "parameters": {}}}]);

    let (status, body) = post(
        &url,
        json!({"model": "m", "messages": [{"role": "user", "content": "17 + 25?"}], "tools": tools}),
    )
    .await;
    assert_eq!(status, 200);
    let first: Value = serde_json::from_str(&body).unwrap();
    let choice = &first["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    let call = &choice["message"]["tool_calls"][0];
    assert_eq!(call["function"]["name"], "add");
    let args: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(args, json!({"a": 17, "b": 25}));
    assert!(first["usage"]["total_tokens"].as_u64().unwrap() > 0);

    let (status, body) = post(
        &url,
        json!({"model": "m", "tools": tools, "messages": [
            {"role": "user", "content": "17 + 25?"},
            {"role": "assistant", "content": null, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": call["id"], "content": "42"},
        ]}),
    )
    .await;
    assert_eq!(status, 200);
    let second: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(second["choices"][0]["finish_reason"], "stop");
    assert_eq!(
        second["choices"][0]["message"]["content"],
        "The answer is 42."
    );

    // Streaming: the same answer as chunks, usage on request, then [DONE].
    let (status, body) = post(
        &url,
        json!({"model": "m", "stream": true, "stream_options": {"include_usage": true},
               "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(status, 200);
    assert!(body.contains("Hello from the stub."), "{body}");
    assert!(body.contains("\"usage\""), "{body}");
    assert!(body.trim_end().ends_with("data: [DONE]"), "{body}");

    let (status, body) = post(&url, json!({"messages": "not a list"})).await;
    assert_eq!(status, 400, "{body}");
    stub.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runner_completes_ten_tasks_against_the_stub() {
    let stub = stub::spawn(
        "127.0.0.1:0",
        StubConfig {
            latency: Duration::from_millis(1),
        },
    )
    .await
    .unwrap();
    let report = runner::run(RunnerConfig {
        base_url: stub.base_url(),
        tasks: 10,
        concurrency: 4,
        latency: Duration::from_millis(1),
    })
    .await
    .unwrap();
    assert_eq!(report.tasks, 10);
    assert_eq!(report.errors, 0, "{report:?}");
    assert!(report.cpu_s_per_task >= 0.0);
    assert!(report.peak_rss_mib > 0.0);
    stub.shutdown().await.unwrap();
}

#[tokio::test]
async fn runner_refuses_zero_concurrency() {
    let err = runner::run(RunnerConfig {
        base_url: "http://127.0.0.1:9/v1".into(),
        tasks: 1,
        concurrency: 0,
        latency: Duration::ZERO,
    })
    .await
    .unwrap_err();
    assert!(err.to_string().contains("concurrency"), "{err}");
}

/// The load generator in both pacing modes against the stub: every request due is sent and
/// answered, and the samples file lists each one at its due time (`i` / rate).
#[tokio::test]
async fn load_sends_every_request_due_and_writes_the_samples() {
    use pocket_bench::load::{self, LoadConfig};
    let stub = stub::spawn("127.0.0.1:0", StubConfig::default())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    for even in [false, true] {
        let samples = dir.path().join(format!("samples-{even}.csv"));
        let config = LoadConfig {
            url: format!("{}/chat/completions", stub.base_url()),
            body: json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
                .to_string(),
            bearer: None,
            rate: 500.0,
            duration: Duration::from_millis(200),
            warmup: Duration::from_millis(20),
            max_in_flight: 1_000,
            timeout: Duration::from_secs(10),
            samples_out: Some(samples.clone()),
            even,
        };
        let report = load::run(config, format!("even={even}")).await.unwrap();
        assert_eq!(report.sent, 100, "even={even}");
        assert_eq!(report.ok, 100, "even={even}");
        assert_eq!(report.dropped, 0);
        let text = std::fs::read_to_string(&samples).unwrap();
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some("due_ms,latency_ms,ok"));
        let due: Vec<f64> = lines
            .map(|l| {
                let cols: Vec<&str> = l.split(',').collect();
                assert_eq!(cols[2], "1", "{l}");
                cols[0].parse().unwrap()
            })
            .collect();
        assert_eq!(due.len(), 100);
        for (i, d) in due.iter().enumerate() {
            // Request i of the measured part is due 2 ms after request i - 1.
            assert!(
                (d - 2.0 * i as f64).abs() < 1e-6,
                "sample {i} due at {d} ms"
            );
        }
    }
}

/// The generator speaks plain HTTP only: another URL is refused up front, naming it, rather
/// than every request failing.
#[tokio::test]
async fn load_refuses_a_url_that_is_not_plain_http() {
    use pocket_bench::load::{self, LoadConfig};
    for url in [
        "https://127.0.0.1:1/v1/chat/completions",
        "not a url",
        "/v1/chat",
    ] {
        let config = LoadConfig {
            url: url.to_owned(),
            body: "{}".to_owned(),
            bearer: None,
            rate: 10.0,
            duration: Duration::from_millis(100),
            warmup: Duration::ZERO,
            max_in_flight: 10,
            timeout: Duration::from_secs(1),
            samples_out: None,
            even: false,
        };
        let err = load::run(config, "bad".into()).await.unwrap_err();
        let message = err.to_string();
        assert!(message.contains(url), "{message}");
        assert!(matches!(err, load::LoadError::Invalid(_)), "{err:?}");
    }
}
