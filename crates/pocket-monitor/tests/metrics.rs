//! The exposition after real runs: names, types, label sets and values, parsed; and
//! `promtool check metrics` when promtool is installed.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails loudly by design

mod support;

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use pocket_agent::{Agent, AutoApprove, Tool, ToolContext, ToolError};
use pocket_monitor::{BreakerState, Monitor, MonitorConfig, OverheadPhase};
use serde_json::json;

use support::{
    Broken, Double, DoubleArgs, PromFamily, answer, ask, eventually, model, monitored,
    network_error, parse_exposition,
};

/// Dangerous by its name, so it needs approval.
struct DropTable;

impl Tool for DropTable {
    type Args = DoubleArgs;
    type Output = &'static str;
    fn name(&self) -> &str {
        "drop_table"
    }
    fn description(&self) -> &str {
        "Drops a table."
    }
    async fn call(&self, _: DoubleArgs, _: &ToolContext) -> Result<&'static str, ToolError> {
        Ok("dropped")
    }
}

/// Six runs touching every path the observer and the plugin count.
async fn populated() -> (Monitor, BTreeMap<String, PromFamily>) {
    let monitor = Monitor::builder(MonitorConfig::default())
        .sample_interval(None)
        .build()
        .unwrap();
    let script = [
        ask("double", json!({ "x": 2 })),
        answer("4"),
        ask("nope", json!({})),
        answer("no such tool"),
        ask("double", json!({ "x": "a" })),
        answer("bad arguments"),
        ask("broken", json!({ "x": 1 })),
        answer("it broke"),
        ask("drop_table", json!({ "x": 1 })),
        answer("dropped"),
        network_error(),
    ];
    let agent = Agent::builder(model(script))
        .name("metered")
        .tool(Double)
        .tool(Broken)
        .tool(DropTable)
        .approver(AutoApprove)
        .plugin(monitor.plugin())
        .build()
        .unwrap();
    let observer = monitor.observe(&agent);
    for _ in 0..5 {
        agent.run("go").await.unwrap();
    }
    agent.run("go").await.unwrap_err();
    observer.flush().await;

    let metrics = monitor.metrics();
    metrics.record_retry("scripted");
    metrics.record_retry("scripted");
    metrics.set_breaker_state("scripted", BreakerState::Open);
    metrics.set_queue_depth(7);
    metrics.set_instances("active", 3);
    metrics.set_instances("failed", 1);
    let guard = metrics.connection();
    let _second = metrics.connection();
    drop(guard);
    metrics.record_overhead(OverheadPhase::Checkpoint, Duration::from_millis(2));
    monitor.alerts().fire(
        pocket_monitor::AlertKind::HighMemory,
        "memory".into(),
        json!({}),
    );
    let families = parse_exposition(&metrics.encode());
    (monitor, families)
}

#[tokio::test]
async fn every_family_has_its_name_type_and_label_set() {
    let (monitor, families) = populated().await;
    let expected: &[(&str, &str, &[&str])] = &[
        ("pocket_runs_total", "counter", &["agent", "outcome"]),
        ("pocket_run_duration_seconds", "histogram", &["agent"]),
        ("pocket_runs_active", "gauge", &["agent"]),
        ("pocket_model_calls_total", "counter", &["model", "outcome"]),
        ("pocket_model_latency_seconds", "histogram", &["model"]),
        ("pocket_model_tokens_total", "counter", &["model", "type"]),
        ("pocket_tool_calls_total", "counter", &["outcome", "tool"]),
        ("pocket_tool_duration_seconds", "histogram", &["tool"]),
        ("pocket_retries_total", "counter", &["key"]),
        ("pocket_breaker_state", "gauge", &["key"]),
        ("pocket_approvals_total", "counter", &["decision", "tool"]),
        ("pocket_queue_depth", "gauge", &[]),
        ("pocket_instances", "gauge", &["status"]),
        ("pocket_open_connections", "gauge", &[]),
        ("pocket_alerts_total", "counter", &["alert"]),
        ("pocket_alert_deliveries_total", "counter", &[]),
        ("pocket_runtime_overhead_seconds", "histogram", &["phase"]),
        ("pocket_monitor_events_lost_total", "counter", &[]),
        ("pocket_uptime_seconds", "gauge", &[]),
        (
            "gen_ai_client_operation_duration_seconds",
            "histogram",
            &[
                "error_type",
                "gen_ai_operation_name",
                "gen_ai_request_model",
            ],
        ),
        (
            "gen_ai_client_token_usage",
            "histogram",
            &[
                "gen_ai_operation_name",
                "gen_ai_request_model",
                "gen_ai_token_type",
            ],
        ),
    ];
    for (name, kind, labels) in expected {
        if *name == "pocket_alert_deliveries_total" {
            // Only the log sink here, which is not counted: no samples, no family.
            assert!(!families.contains_key(*name));
            continue;
        }
        let family = families
            .get(*name)
            .unwrap_or_else(|| panic!("{name} missing; have {:?}", families.keys()));
        assert_eq!(family.kind, *kind, "{name}");
        let got: Vec<String> = family.label_names().into_iter().collect();
        assert_eq!(got, *labels, "labels of {name}");
    }
    if cfg!(target_os = "linux") {
        for name in [
            "pocket_process_resident_memory_bytes",
            "pocket_process_threads",
            "pocket_process_open_fds",
        ] {
            assert_eq!(families[name].kind, "gauge", "{name}");
        }
        assert_eq!(families["pocket_process_cpu_seconds_total"].kind, "counter");
    }
    for name in families.keys() {
        assert!(
            name.starts_with("pocket_") || name.starts_with("gen_ai_client_"),
            "{name} has no pocket_ prefix"
        );
    }
    monitor.shutdown().await;
}

#[tokio::test]
async fn values_count_each_run_and_call_once() {
    let (monitor, f) = populated().await;
    let v = |family: &str, sample: &str, labels: &[(&str, &str)]| {
        f[family]
            .value(sample, labels)
            .unwrap_or_else(|| panic!("{sample}{labels:?} missing in {:#?}", f[family]))
    };
    let runs = "pocket_runs_total";
    assert_eq!(
        v(runs, runs, &[("agent", "metered"), ("outcome", "success")]),
        5.0
    );
    assert_eq!(
        v(runs, runs, &[("agent", "metered"), ("outcome", "network")]),
        1.0
    );
    let count = "pocket_run_duration_seconds_count";
    assert_eq!(
        v(
            "pocket_run_duration_seconds",
            count,
            &[("agent", "metered")]
        ),
        6.0
    );
    assert_eq!(
        v(
            "pocket_runs_active",
            "pocket_runs_active",
            &[("agent", "metered")]
        ),
        0.0
    );

    let calls = "pocket_model_calls_total";
    let scripted = ("model", "scripted");
    assert_eq!(v(calls, calls, &[scripted, ("outcome", "success")]), 10.0);
    assert_eq!(v(calls, calls, &[scripted, ("outcome", "network")]), 1.0);
    let tokens = "pocket_model_tokens_total";
    assert_eq!(v(tokens, tokens, &[scripted, ("type", "input")]), 500.0);
    assert_eq!(v(tokens, tokens, &[scripted, ("type", "output")]), 50.0);

    let tools = "pocket_tool_calls_total";
    for (tool, outcome) in [
        ("double", "success"),
        ("double", "validation"),
        ("unknown", "validation"),
        ("broken", "tool"),
        ("drop_table", "success"),
    ] {
        assert_eq!(
            v(tools, tools, &[("tool", tool), ("outcome", outcome)]),
            1.0,
            "{tool} {outcome}"
        );
    }
    assert!(
        !f[tools].samples.iter().any(|s| s.labels["tool"] == "nope"),
        "a tool name from the model is not a label value"
    );
    let approvals = "pocket_approvals_total";
    assert_eq!(
        v(
            approvals,
            approvals,
            &[("tool", "drop_table"), ("decision", "approve")]
        ),
        1.0
    );

    let overhead = "pocket_runtime_overhead_seconds";
    let count = "pocket_runtime_overhead_seconds_count";
    assert_eq!(v(overhead, count, &[("phase", "agent_loop")]), 6.0);
    assert_eq!(v(overhead, count, &[("phase", "checkpoint")]), 1.0);

    let genai = "gen_ai_client_operation_duration_seconds";
    let count = "gen_ai_client_operation_duration_seconds_count";
    let chat = ("gen_ai_operation_name", "chat");
    let model = ("gen_ai_request_model", "scripted");
    assert_eq!(v(genai, count, &[chat, model, ("error_type", "")]), 10.0);
    assert_eq!(
        v(genai, count, &[chat, model, ("error_type", "network")]),
        1.0
    );
    let usage = "gen_ai_client_token_usage";
    let sum = "gen_ai_client_token_usage_sum";
    assert_eq!(
        v(usage, sum, &[chat, model, ("gen_ai_token_type", "input")]),
        500.0
    );

    assert_eq!(
        v(
            "pocket_retries_total",
            "pocket_retries_total",
            &[("key", "scripted")]
        ),
        2.0
    );
    assert_eq!(
        v(
            "pocket_breaker_state",
            "pocket_breaker_state",
            &[("key", "scripted")]
        ),
        2.0
    );
    assert_eq!(v("pocket_queue_depth", "pocket_queue_depth", &[]), 7.0);
    assert_eq!(
        v(
            "pocket_instances",
            "pocket_instances",
            &[("status", "failed")]
        ),
        1.0
    );
    assert_eq!(
        v("pocket_open_connections", "pocket_open_connections", &[]),
        1.0
    );
    assert_eq!(
        v(
            "pocket_alerts_total",
            "pocket_alerts_total",
            &[("alert", "high_memory")]
        ),
        1.0
    );

    // The plugin and the observer agree, and the per-agent view matches the metrics.
    let stats = &monitor.agent_stats()["metered"];
    assert_eq!((stats.executions, stats.errors), (6, 1));
    assert_eq!(
        stats.tool_calls, 3,
        "after_tool sees the calls that ran: double, broken, drop_table"
    );
    assert_eq!(stats.tool_failures, 1);
    let tools = monitor.tool_stats();
    assert_eq!(tools["double"].calls, 2);
    assert_eq!(tools["unknown"].failures, 1);
    let report = monitor.health();
    assert_eq!(report.models.calls, 11);
    assert_eq!(report.tools.executions, 5);
    assert_eq!(report.runs.total, 6);
    monitor.shutdown().await;
}

#[tokio::test]
async fn the_openmetrics_encoding_is_available_too() {
    let (monitor, _) = populated().await;
    let text = monitor.metrics().encode_openmetrics();
    assert!(text.contains("# TYPE pocket_runs counter"));
    assert!(text.contains("# UNIT pocket_run_duration_seconds seconds"));
    assert!(text.trim_end().ends_with("# EOF"));
    monitor.shutdown().await;
}

#[tokio::test]
async fn promtool_accepts_the_exposition() {
    let Ok(status) = Command::new("promtool").arg("--version").output() else {
        println!("skipped: promtool is not installed (Debian package `prometheus`)");
        return;
    };
    assert!(status.status.success());
    let (monitor, _) = populated().await;
    monitor.sample_now();
    let text = monitor.metrics().encode();
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}\n--- exposition ---\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    monitor.shutdown().await;
}

/// Steady runs, then a burst that fits in the agent's event channel: all counted without a
/// flush, none lost. (Under steady load the observer lets events gather for a moment after
/// one wakes it; the moment is sized so that a burst like this one does not overflow.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steady_runs_then_a_burst_are_counted_without_a_flush() {
    const STEADY: usize = 400;
    const BURST: usize = 200; // 800 events: within the channel's 1,024
    let monitor = Monitor::builder(MonitorConfig::default())
        .sample_interval(None)
        .build()
        .unwrap();
    let agent = monitored(&monitor, "bursty");
    let _observer = monitor.observe(&agent);
    for _ in 0..STEADY / 10 {
        let runs = (0..10).map(|_| agent.run("go"));
        for result in futures_util::future::join_all(runs).await {
            result.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let runs = (0..BURST).map(|_| agent.run("go"));
    for result in futures_util::future::join_all(runs).await {
        result.unwrap();
    }
    let value = |family: &str, labels: &[(&str, &str)]| {
        parse_exposition(&monitor.metrics().encode())
            .get(family)
            .and_then(|f| f.value(family, labels))
            .unwrap_or(0.0)
    };
    let calls = "pocket_model_calls_total";
    let counted = || value(calls, &[("model", "scripted"), ("outcome", "success")]);
    let lost = || value("pocket_monitor_events_lost_total", &[]);
    let all = (STEADY + BURST) as f64;
    eventually("every run counted, or some events lost", || {
        counted() >= all || lost() > 0.0
    })
    .await;
    assert_eq!(lost(), 0.0, "events lost");
    assert_eq!(counted(), all);
}
