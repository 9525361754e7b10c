//! The monitoring plugin and the observer: per-agent statistics from hooks, status and the
//! health report, and the observer's flush, stop and lag handling.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails loudly by design

mod support;

use std::time::Duration;

use futures_util::future::BoxFuture;
use pocket_agent::{
    AfterRun, Agent, BeforeRun, CancellationToken, Message, Plugin, RunInfo, RunOutput, RunRequest,
};
use pocket_monitor::{Health, HealthConfig, Monitor, MonitorConfig};
use serde_json::json;

use support::{Broken, Double, answer, ask, model, monitored, network_error};

fn monitor() -> Monitor {
    Monitor::builder(MonitorConfig::default())
        .sample_interval(None)
        .build()
        .unwrap()
}

#[tokio::test]
async fn per_agent_stats_come_from_the_hooks() {
    let monitor = monitor();
    let writer = Agent::builder(model([
        ask("double", json!({ "x": 1 })),
        answer("2"),
        ask("broken", json!({ "x": 1 })),
        answer("broken"),
        network_error(),
    ]))
    .name("writer")
    .tool(Double)
    .tool(Broken)
    .plugin(monitor.plugin())
    .build()
    .unwrap();
    let reader = monitored(&monitor, "reader");
    writer.run("a").await.unwrap();
    writer.run("b").await.unwrap();
    writer.run("c").await.unwrap_err();
    reader.run("d").await.unwrap();

    let stats = monitor.agent_stats();
    let w = &stats["writer"];
    assert_eq!((w.executions, w.errors, w.running), (3, 1, 0));
    assert_eq!((w.tool_calls, w.tool_failures), (2, 1));
    assert!(w.total_time_ms > 0.0);
    assert!((w.mean_time_ms - w.total_time_ms / 3.0).abs() < 1e-9);
    assert!((w.recent_error_rate - 1.0 / 3.0).abs() < 1e-9);
    assert_eq!(
        w.health,
        Health::Failed,
        "a third of recent runs failed (over 20%)"
    );
    assert!(
        w.last_error
            .as_deref()
            .unwrap()
            .contains("connection reset")
    );
    let r = &stats["reader"];
    assert_eq!((r.executions, r.errors, r.health), (1, 0, Health::Healthy));
    monitor.shutdown().await;
}

#[tokio::test]
async fn a_cancelled_run_is_not_an_error() {
    let monitor = monitor();
    let agent = monitored(&monitor, "a");
    let cancel = CancellationToken::new();
    cancel.cancel();
    let err = agent
        .run_with(RunRequest {
            cancel: Some(cancel),
            ..RunRequest::new("go")
        })
        .await
        .unwrap_err();
    assert!(err.is_cancelled());
    let a = &monitor.agent_stats()["a"];
    assert_eq!((a.executions, a.errors, a.cancelled), (1, 0, 1));
    assert_eq!(monitor.status(), Health::Healthy);
    assert!(
        monitor
            .metrics()
            .encode()
            .contains(r#"pocket_runs_total{agent="a",outcome="cancelled"} 1"#)
    );
    monitor.shutdown().await;
}

/// Rejects every answer in `after_run`.
struct Rejector;

impl Plugin for Rejector {
    fn name(&self) -> &str {
        "rejector"
    }
    fn after_run<'a>(&'a self, _: &'a RunInfo, _: &'a RunOutput) -> BoxFuture<'a, AfterRun> {
        Box::pin(async { AfterRun::Stop("not good enough".into()) })
    }
}

/// Stops every run in `before_run`.
struct Gate;

impl Plugin for Gate {
    fn name(&self) -> &str {
        "gate"
    }
    fn before_run<'a>(&'a self, _: &'a RunInfo, _: &'a [Message]) -> BoxFuture<'a, BeforeRun> {
        Box::pin(async { BeforeRun::Stop("closed".into()) })
    }
}

#[tokio::test]
async fn a_run_is_counted_once_whatever_the_other_plugins_do() {
    // Added last (as documented): a rejection by an earlier plugin is one failure.
    let monitor = monitor();
    let agent = Agent::builder(model([]))
        .name("last")
        .plugin(Rejector)
        .plugin(monitor.plugin())
        .build()
        .unwrap();
    agent.run("go").await.unwrap_err();
    let a = &monitor.agent_stats()["last"];
    assert_eq!((a.executions, a.errors, a.running), (1, 1, 0));

    // Added first: the success recorded in after_run is not counted again by on_error.
    let agent = Agent::builder(model([]))
        .name("first")
        .plugin(monitor.plugin())
        .plugin(Rejector)
        .build()
        .unwrap();
    agent.run("go").await.unwrap_err();
    let a = &monitor.agent_stats()["first"];
    assert_eq!((a.executions, a.running), (1, 0));

    // A run stopped before our before_run: counted as a failure, the running gauge intact.
    let agent = Agent::builder(model([]))
        .name("gated")
        .plugin(Gate)
        .plugin(monitor.plugin())
        .build()
        .unwrap();
    agent.run("go").await.unwrap_err();
    let a = &monitor.agent_stats()["gated"];
    assert_eq!((a.executions, a.errors, a.running), (1, 1, 0));
    let text = monitor.metrics().encode();
    assert!(
        !text.contains(r#"pocket_runs_active{agent="gated"} -1"#),
        "the gauge never goes below zero"
    );
    monitor.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn status_follows_the_recent_error_rate_and_recovers() {
    let monitor = Monitor::builder(MonitorConfig {
        health: HealthConfig {
            degraded_error_rate: 0.05,
            failed_error_rate: 0.2,
            window_secs: 300,
            ..HealthConfig::default()
        },
        ..MonitorConfig::default()
    })
    .sample_interval(None)
    .process_stats(|| None)
    .build()
    .unwrap();
    let mut steps = vec![network_error()];
    steps.extend((0..9).map(|_| answer("ok")));
    steps.push(network_error());
    steps.push(network_error());
    let agent = Agent::builder(model(steps))
        .name("a")
        .plugin(monitor.plugin())
        .build()
        .unwrap();
    for _ in 0..10 {
        let _ = agent.run("go").await;
    }
    assert_eq!(monitor.status(), Health::Degraded, "1 of 10 is over 5%");
    let _ = agent.run("go").await;
    let _ = agent.run("go").await;
    let report = monitor.health();
    assert_eq!(report.status, Health::Failed, "3 of 12 is over 20%");
    assert!(report.reasons[0].starts_with("error rate 25%"));

    tokio::time::advance(Duration::from_secs(301)).await;
    assert_eq!(
        monitor.status(),
        Health::Healthy,
        "old failures leave the window"
    );
    assert_eq!(monitor.agent_stats()["a"].health, Health::Healthy);
    monitor.shutdown().await;
}

#[tokio::test]
async fn the_health_report_has_the_seeds_sections() {
    let monitor = monitor();
    let agent = Agent::builder(model([ask("double", json!({ "x": 3 })), answer("6")]))
        .name("a")
        .tool(Double)
        .plugin(monitor.plugin())
        .build()
        .unwrap();
    let observer = monitor.observe(&agent);
    agent.run("go").await.unwrap();
    observer.stop().await;
    monitor.sample_now();
    let json = serde_json::to_value(monitor.health()).unwrap();
    for key in [
        "status",
        "reasons",
        "at",
        "uptime_secs",
        "error_rate",
        "memory_bytes",
        "runs",
        "tools",
        "models",
        "agents",
        "tool_stats",
        "alerts",
        "recent_alerts",
    ] {
        assert!(json.get(key).is_some(), "no {key} in {json:#}");
    }
    assert_eq!(json["status"], "healthy");
    assert_eq!(json["runs"]["total"], 1);
    assert_eq!(json["tools"]["executions"], 1);
    assert_eq!(json["models"]["output_tokens"], 10);
    assert_eq!(json["agents"]["a"]["executions"], 1);
    assert_eq!(json["tool_stats"]["double"]["calls"], 1);
    let sample = serde_json::to_value(monitor.history().pop().unwrap()).unwrap();
    assert_eq!(sample["runs"], 1);
    assert_eq!(sample["model_calls"], 2);
    assert_eq!(sample["status"], "healthy");
    monitor.shutdown().await;
}

#[tokio::test]
async fn the_observer_counts_lost_events_and_ends_with_its_agent() {
    let monitor = monitor();
    let agent = monitored(&monitor, "busy");
    let observer = monitor.observe(&agent);
    // The scripted model never yields, so these runs fill the event channel (1024) before
    // the observer gets a turn.
    for _ in 0..400 {
        agent.run("go").await.unwrap();
    }
    observer.flush().await;
    let text = monitor.metrics().encode();
    let lost: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("pocket_monitor_events_lost_total "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(lost > 0.0, "{text}");
    // The plugin does not depend on the event stream: every run is counted.
    assert_eq!(monitor.agent_stats()["busy"].executions, 400);

    drop(agent);
    support::eventually("the observer ends with its agent", || {
        observer.is_finished()
    })
    .await;
    monitor.shutdown().await;
}
