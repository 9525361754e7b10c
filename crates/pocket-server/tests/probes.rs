//! Probes, metrics and reports.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::{Value, json};
use support::{Harness, Options};

#[tokio::test]
async fn healthz_and_readyz_answer_200_when_up() {
    let h = Harness::start(Options::default()).await;
    let live: Value = h
        .client
        .get(h.url("/healthz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(live, json!({"status": "ok"}));
    let ready: Value = h
        .client
        .get(h.url("/readyz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready, json!({"status": "ready"}));
    h.stop().await;
}

#[tokio::test]
async fn metrics_are_prometheus_text() {
    let h = Harness::start(Options::default()).await;
    let resp = h.get("/metrics").send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-type"].to_str().unwrap(),
        pocket_monitor::CONTENT_TYPE
    );
    let text = resp.text().await.unwrap();
    assert!(text.contains("# TYPE pocket_"), "{text}");
    assert!(text.ends_with("# EOF\n") || text.ends_with('\n'));
    h.stop().await;
}

#[tokio::test]
async fn health_combines_monitor_and_resilience_reports() {
    let h = Harness::start(Options::default()).await;
    let body: Value = h
        .get("/v1/health")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let expected = serde_json::to_value(h.monitor.health()).unwrap();
    assert_eq!(body["monitor"]["status"], expected["status"]);
    assert!(body["monitor"].is_object());
    assert_eq!(body["resilience"]["agents_total"], 0);
    h.stop().await;
}

#[tokio::test]
async fn cluster_report_lists_the_instances_and_queue() {
    let h = Harness::start(Options::default()).await;
    h.submit(json!({"task": "waiting"})).await;
    let body: Value = h
        .get("/v1/cluster")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["worker"], h.cluster.worker_id());
    assert_eq!(body["queue"]["queued"], 1);
    let agents: Vec<&str> = body["scaling"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["agent"].as_str().unwrap())
        .collect();
    assert_eq!(agents, ["default", "helper"]);
    assert_eq!(
        body["instances"].as_array().unwrap().len(),
        h.cluster.pool().instances().len()
    );
    h.stop().await;
}
