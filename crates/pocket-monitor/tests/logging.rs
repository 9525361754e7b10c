//! The log stack: sampling (deterministic, never dropping errors), the critical marker, and
//! the ring of recent entries during real agent runs.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails loudly by design

mod support;

use std::io;
use std::sync::{Arc, Mutex};

use pocket_agent::Agent;
use pocket_monitor::logging::{LogBuilder, LogLevel, Sampler};
use pocket_monitor::{Monitor, MonitorConfig};
use serde_json::json;
use tracing::Level;
use tracing_subscriber::Registry;
use tracing_subscriber::layer::SubscriberExt;

use support::{Double, answer, ask, model};

/// Console output captured for the test.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

fn config(sample_rate: f64, seed: u64, level: &str) -> MonitorConfig {
    MonitorConfig {
        sample_rate,
        sample_seed: seed,
        level: level.into(),
        ..MonitorConfig::default()
    }
}

/// Emits 300 INFO and 60 ERROR events, interleaved, and returns the indices of the INFO
/// events that reached the ring, the count of errors that did, and the console text.
fn emit_through_stack(config: &MonitorConfig) -> (Vec<usize>, usize, String) {
    let console = Captured::default();
    let writer = console.clone();
    let (layer, guard) = LogBuilder::new(config)
        .console_writer(move || writer.clone())
        .layer::<Registry>()
        .unwrap();
    let subscriber = tracing_subscriber::registry().with(layer);
    tracing::subscriber::with_default(subscriber, || {
        for i in 0..300 {
            tracing::info!(i, "info");
            if i % 5 == 0 {
                tracing::error!(i, "error");
            }
        }
    });
    let entries = guard.recent().latest(usize::MAX);
    let infos = entries
        .iter()
        .filter(|e| e.level == LogLevel::Info)
        .map(|e| match e.field("i") {
            Some(pocket_monitor::logging::FieldValue::I64(i)) => *i as usize,
            other => panic!("unexpected field {other:?}"),
        })
        .collect();
    let errors = entries
        .iter()
        .filter(|e| e.level == LogLevel::Error)
        .count();
    (infos, errors, console.text())
}

#[test]
fn sampling_is_deterministic_under_a_seed_and_never_drops_errors() {
    let (kept, errors, console) = emit_through_stack(&config(0.3, 42, "info"));
    assert_eq!(errors, 60, "every error is kept");
    // The same seed gives the same decisions: those of a bare sampler asked 300 times.
    let sampler = Sampler::new(0.3, 42);
    let expected: Vec<usize> = (0..300).filter(|_| sampler.keep(&Level::INFO)).collect();
    assert_eq!(kept, expected);
    assert!(
        (60..120).contains(&kept.len()),
        "about 30% kept: {}",
        kept.len()
    );
    // Every sink sees the same events.
    assert_eq!(console.lines().count(), kept.len() + 60);

    let (again, _, _) = emit_through_stack(&config(0.3, 42, "info"));
    assert_eq!(again, kept, "same seed, same decisions");
    let (other, _, _) = emit_through_stack(&config(0.3, 43, "info"));
    assert_ne!(other, kept, "another seed, other decisions");
}

#[test]
fn a_zero_rate_keeps_only_errors_and_a_full_rate_keeps_all() {
    let (kept, errors, _) = emit_through_stack(&config(0.0, 1, "info"));
    assert!(kept.is_empty());
    assert_eq!(errors, 60);
    let (kept, errors, _) = emit_through_stack(&config(1.0, 1, "info"));
    assert_eq!(kept.len(), 300);
    assert_eq!(errors, 60);
}

#[test]
fn a_filter_can_select_only_critical_events() {
    let (layer, guard) = LogBuilder::new(&MonitorConfig {
        console: false,
        level: "off,pocket::critical=error".into(),
        ..MonitorConfig::default()
    })
    .layer::<Registry>()
    .unwrap();
    let subscriber = tracing_subscriber::registry().with(layer);
    tracing::subscriber::with_default(subscriber, || {
        tracing::error!("an ordinary error");
        tracing::warn!("a warning");
        pocket_monitor::critical!(component = "system", "out of disk");
    });
    let entries = guard.recent().latest(10);
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].level, LogLevel::Critical);
    assert_eq!(entries[0].message, "out of disk");
}

#[tokio::test]
async fn the_ring_records_the_plugins_lines_with_agent_and_performance() {
    let (layer, guard) = LogBuilder::new(&MonitorConfig {
        console: false,
        level: "debug".into(),
        ..MonitorConfig::default()
    })
    .layer::<Registry>()
    .unwrap();
    let _default = tracing::subscriber::set_default(tracing_subscriber::registry().with(layer));
    let monitor = Monitor::builder(MonitorConfig::default())
        .recent_logs(guard.recent().clone())
        .sample_interval(None)
        .build()
        .unwrap();
    let agent = Agent::builder(model([ask("double", json!({ "x": 2 })), answer("4")]))
        .name("writer")
        .tool(Double)
        .plugin(monitor.plugin())
        .build()
        .unwrap();
    agent.run("double 2").await.unwrap();

    let lines = guard.recent().query(&pocket_monitor::logging::LogQuery {
        agent: Some("writer".into()),
        ..Default::default()
    });
    let find = |message: &str| {
        lines
            .iter()
            .find(|e| e.message == message)
            .unwrap_or_else(|| panic!("no {message:?} in {lines:#?}"))
    };
    let started = find("run started");
    assert_eq!(started.component, "execution");
    assert!(
        started
            .run_id
            .as_deref()
            .is_some_and(|r| r.starts_with("writer-"))
    );
    let tool = find("tool call finished");
    assert_eq!(tool.component, "tool");
    assert!(tool.duration_ms.is_some());
    let finished = find("run finished");
    assert!(finished.duration_ms.is_some());
    let json = serde_json::to_value(finished).unwrap();
    assert_eq!(json["agent"], "writer");
    assert_eq!(json["metadata"]["iterations"], 2);
    assert!(json["performance"]["duration_ms"].is_number());
    let report = monitor.health();
    assert!(report.logs.is_some_and(|l| l.total >= 3));
    monitor.shutdown().await;
}

#[test]
fn the_console_can_be_stricter_than_the_files_and_the_level_hint_survives() {
    let console = Captured::default();
    let writer = console.clone();
    let (layer, guard) = LogBuilder::new(&MonitorConfig {
        level: "info".into(),
        console_level: Some("warn".into()),
        ..MonitorConfig::default()
    })
    .console_writer(move || writer.clone())
    .layer::<Registry>()
    .unwrap();
    let subscriber = tracing_subscriber::registry().with(layer);
    // The filter's hint reaches the dispatcher, so a disabled event costs a load and a compare.
    assert_eq!(
        tracing::Subscriber::max_level_hint(&subscriber),
        Some(tracing::level_filters::LevelFilter::INFO)
    );
    tracing::subscriber::with_default(subscriber, || {
        tracing::debug!("filtered everywhere");
        tracing::info!("files and ring only");
        tracing::warn!("everywhere");
    });
    let text = console.text();
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(text.contains("everywhere"));
    assert_eq!(guard.recent().len(), 2);
}
