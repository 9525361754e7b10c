//! The webhook sink against an in-test server: delivery, retries, and a server that hangs
//! (runs go on, alerts beyond the queue are dropped and counted, shutdown does not wait).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails loudly by design

mod support;

use pocket_monitor::logging::RecentLogs;
use pocket_monitor::{AlertKind, AlertsConfig, Monitor, MonitorConfig};
use serde_json::json;
use tracing_subscriber::layer::SubscriberExt;

use support::{Webhook, eventually, guard, monitored, webhook_server};

fn monitor(alerts: AlertsConfig) -> Monitor {
    Monitor::builder(MonitorConfig {
        alerts,
        ..MonitorConfig::default()
    })
    .sample_interval(None)
    .build()
    .unwrap()
}

#[tokio::test]
async fn alerts_are_posted_as_json() {
    let (url, mut received) = webhook_server(Webhook::Ok).await;
    let monitor = monitor(AlertsConfig {
        response_time_ms: 0,
        webhook_url: Some(url),
        ..AlertsConfig::default()
    });
    let agent = monitored(&monitor, "slow");
    agent.run("go").await.unwrap();
    let body = guard("the webhook request", received.recv()).await.unwrap();
    assert_eq!(body["kind"], "high_response_time");
    assert_eq!(body["details"]["agent"], "slow");
    assert!(body["message"].as_str().unwrap().contains("slow"));
    assert!(
        body["text"]
            .as_str()
            .unwrap()
            .starts_with("Pocket Agent alert: ")
    );
    assert!(body["at"].is_f64());
    let metrics = monitor.metrics().clone();
    eventually("the delivery is counted", || {
        metrics.alert_deliveries("webhook", "sent") == 1
    })
    .await;
    monitor.shutdown().await;
}

#[tokio::test]
async fn a_failed_delivery_is_retried() {
    let (url, mut received) = webhook_server(Webhook::FailOnce).await;
    let monitor = monitor(AlertsConfig {
        webhook_url: Some(url),
        webhook_retries: 2,
        ..AlertsConfig::default()
    });
    monitor
        .alerts()
        .fire(AlertKind::HighMemory, "memory is high".into(), json!({}));
    let first = guard("the first attempt", received.recv()).await.unwrap();
    let second = guard("the retry", received.recv()).await.unwrap();
    assert_eq!(first, second);
    let metrics = monitor.metrics().clone();
    eventually("the delivery is counted", || {
        metrics.alert_deliveries("webhook", "sent") == 1
    })
    .await;
    assert_eq!(metrics.alert_deliveries("webhook", "failed"), 0);
    monitor.shutdown().await;
}

#[tokio::test]
async fn a_hanging_webhook_never_blocks_runs_and_never_logs_its_url() {
    let logs = RecentLogs::new(1000);
    let _default =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(logs.layer()));
    let (url, mut received) = webhook_server(Webhook::Hang).await;
    let monitor = monitor(AlertsConfig {
        response_time_ms: 0,
        cool_down_secs: 0, // every slow run alerts
        webhook_url: Some(url),
        webhook_timeout_ms: 200,
        webhook_retries: 0,
        webhook_queue: 1,
        ..AlertsConfig::default()
    });
    let agent = monitored(&monitor, "slow");
    guard("runs while the webhook hangs", async {
        for _ in 0..20 {
            agent.run("go").await.unwrap();
        }
    })
    .await;
    assert_eq!(monitor.alerts().recent().len(), 20, "every run alerted");
    guard("the hanging request", received.recv()).await.unwrap();

    // Firing without yielding: the sender cannot take any, so past the queue of one they
    // are dropped, and counted.
    let metrics = monitor.metrics().clone();
    let dropped = metrics.alert_deliveries("webhook", "dropped");
    for _ in 0..5 {
        monitor
            .alerts()
            .fire(AlertKind::HighMemory, "memory is high".into(), json!({}));
    }
    assert!(metrics.alert_deliveries("webhook", "dropped") >= dropped + 4);

    eventually("the attempt times out", || {
        metrics.alert_deliveries("webhook", "failed") >= 1
    })
    .await;
    guard("shutdown with a hanging webhook", monitor.shutdown()).await;

    let leaked = logs
        .latest(1000)
        .into_iter()
        .filter(|e| serde_json::to_string(&e).unwrap().contains("secret-token"))
        .count();
    assert_eq!(leaked, 0, "the webhook URL appeared in a log entry");
    assert!(
        logs.latest(1000)
            .iter()
            .any(|e| e.message == "alert webhook failed"),
        "the failure is logged"
    );
}
