//! Alert rules with their cool-down, driven by real agent runs on paused time; the minute
//! sampler and memory.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails loudly by design

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use pocket_agent::Agent;
use pocket_monitor::process::ProcessStats;
use pocket_monitor::{AlertKind, AlertsConfig, Health, HealthConfig, Monitor, MonitorConfig};

use support::{answer, model, monitored, network_error};

const MIB: u64 = 1024 * 1024;

fn monitor(alerts: AlertsConfig) -> Monitor {
    Monitor::builder(MonitorConfig {
        alerts,
        ..MonitorConfig::default()
    })
    .sample_interval(None)
    .build()
    .unwrap()
}

fn fired(monitor: &Monitor, kind: AlertKind) -> usize {
    monitor
        .alerts()
        .recent()
        .iter()
        .filter(|a| a.kind == kind)
        .count()
}

#[tokio::test(start_paused = true)]
async fn response_time_alerts_respect_the_cool_down() {
    let monitor = monitor(AlertsConfig {
        response_time_ms: 0, // every run is slow
        cool_down_secs: 60,
        ..AlertsConfig::default()
    });
    let mut events = monitor.alerts().subscribe();
    let agent = monitored(&monitor, "slow");
    for _ in 0..3 {
        agent.run("go").await.unwrap();
    }
    assert_eq!(
        fired(&monitor, AlertKind::HighResponseTime),
        1,
        "cooling down"
    );
    tokio::time::advance(Duration::from_secs(59)).await;
    agent.run("go").await.unwrap();
    assert_eq!(
        fired(&monitor, AlertKind::HighResponseTime),
        1,
        "still cooling down"
    );
    tokio::time::advance(Duration::from_secs(1)).await;
    agent.run("go").await.unwrap();
    assert_eq!(fired(&monitor, AlertKind::HighResponseTime), 2);

    let alert = events.try_recv().unwrap();
    assert_eq!(alert.kind, AlertKind::HighResponseTime);
    assert_eq!(alert.details["agent"], "slow");
    assert_eq!(alert.details["threshold_ms"], 0);
    assert!(alert.message.contains("agent slow response time"));
    let json = serde_json::to_value(&alert).unwrap();
    assert_eq!(json["kind"], "high_response_time");

    let status = monitor.alerts().statuses();
    assert_eq!(status.len(), 1);
    assert!(status[0].cooling_down);
    let exposition = monitor.metrics().encode();
    assert!(exposition.contains(r#"pocket_alerts_total{alert="high_response_time"} 2"#));
    monitor.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn error_rate_alert_fires_once_the_window_has_enough_failures() {
    let monitor = monitor(AlertsConfig {
        error_rate: 0.2,
        error_window: 10,
        ..AlertsConfig::default()
    });
    // Two failures, a success, then failures: 3 of the window of 10 is over 20%.
    let agent = Agent::builder(model([
        network_error(),
        network_error(),
        answer("ok"),
        network_error(),
        network_error(),
    ]))
    .name("flaky")
    .plugin(monitor.plugin())
    .build()
    .unwrap();
    for expected in [0, 0, 0, 1] {
        let _ = agent.run("go").await;
        assert_eq!(fired(&monitor, AlertKind::HighErrorRate), expected);
    }
    let _ = agent.run("go").await; // a fourth failure, within the cool-down
    assert_eq!(fired(&monitor, AlertKind::HighErrorRate), 1);
    let alert = monitor.alerts().recent().pop().unwrap();
    assert_eq!(alert.details["errors"], 3);
    assert_eq!(alert.details["window"], 10);
    monitor.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn the_minute_sampler_fills_the_history_and_checks_memory() {
    let rss = Arc::new(AtomicU64::new(100 * MIB));
    let source = rss.clone();
    let monitor = Monitor::builder(MonitorConfig {
        alerts: AlertsConfig {
            memory_mb: 512,
            ..AlertsConfig::default()
        },
        health: HealthConfig {
            degraded_memory_mb: 256,
            failed_memory_mb: 1024,
            ..HealthConfig::default()
        },
        ..MonitorConfig::default()
    })
    .process_stats(move || {
        Some(ProcessStats {
            resident_bytes: source.load(Ordering::Relaxed),
            cpu_seconds: 1.0,
            ..ProcessStats::default()
        })
    })
    .build()
    .unwrap();
    let agent = monitored(&monitor, "a");
    agent.run("go").await.unwrap();

    // Samples at 0, 1, 2 and 3 minutes (virtual time).
    tokio::time::sleep(Duration::from_secs(3 * 60 + 1)).await;
    let history = monitor.history();
    assert_eq!(history.len(), 4, "{history:#?}");
    assert_eq!(
        history[0].runs, 1,
        "the first sample counts the run before it"
    );
    assert_eq!(history[1].runs, 0, "later samples count only their minute");
    assert_eq!(history[3].memory_bytes, Some(100 * MIB));
    assert_eq!(history[3].cpu_percent, Some(0.0));
    assert_eq!(fired(&monitor, AlertKind::HighMemory), 0);
    assert_eq!(monitor.status(), Health::Healthy);

    rss.store(600 * MIB, Ordering::Relaxed);
    assert_eq!(monitor.status(), Health::Degraded);
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(fired(&monitor, AlertKind::HighMemory), 1);
    assert_eq!(monitor.last_memory_bytes(), Some(600 * MIB));
    rss.store(2048 * MIB, Ordering::Relaxed);
    let report = monitor.health();
    assert_eq!(report.status, Health::Failed);
    assert!(report.reasons[0].contains("memory 2048 MiB is over 1024 MiB"));
    assert_eq!(monitor.history().last().unwrap().status, Health::Degraded);

    // A day of samples at most.
    tokio::time::sleep(Duration::from_secs(25 * 3600)).await;
    assert_eq!(monitor.history().len(), 1440);
    monitor.shutdown().await;
}
