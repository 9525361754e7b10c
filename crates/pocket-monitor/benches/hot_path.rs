//! Cost of monitoring on the hot path: one log event (disabled by the filter, and enabled
//! through the installed stack to `io::sink`), one counter increment, one histogram
//! observation, and one tool-call record (counter + histogram).
//!
//! `cargo bench -p pocket-monitor --bench hot_path`

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use pocket_monitor::logging::LogBuilder;
use pocket_monitor::{LogFormat, Metrics, MonitorConfig, Outcome};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use tracing_subscriber::layer::SubscriberExt;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Labels {
    tool: Arc<str>,
    outcome: &'static str,
}

fn logging(c: &mut Criterion) {
    // The binary's stack: level filter `info`, sampler at 1.0, console JSON (to io::sink),
    // the ring of recent entries. Installed globally, as the binary does.
    let config = MonitorConfig {
        format: LogFormat::Json,
        level: "info".into(),
        ..MonitorConfig::default()
    };
    let (layer, guard) = LogBuilder::new(&config)
        .console_writer(std::io::sink)
        .layer::<tracing_subscriber::Registry>()
        .unwrap_or_else(|e| panic!("log stack: {e}"));
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer))
        .unwrap_or_else(|e| panic!("install: {e}"));

    let mut g = c.benchmark_group("log_event");
    g.bench_function("disabled_by_filter", |b| {
        b.iter(|| {
            tracing::debug!(
                component = "tool",
                agent = "bench",
                duration_ms = black_box(1.5),
                "tool call finished"
            );
        });
    });
    g.bench_function("enabled_json_to_sink_and_ring", |b| {
        b.iter(|| {
            tracing::info!(
                component = "tool",
                agent = "bench",
                duration_ms = black_box(1.5),
                "tool call finished"
            );
        });
    });
    // The two halves of the enabled path, each alone.
    let ring = pocket_monitor::RecentLogs::new(10_000);
    let ring_only = tracing::Dispatch::new(
        tracing_subscriber::registry()
            .with(ring.layer())
            .with(tracing_subscriber::EnvFilter::new("info")),
    );
    g.bench_function("enabled_ring_only", |b| {
        tracing::dispatcher::with_default(&ring_only, || {
            b.iter(|| {
                tracing::info!(
                    component = "tool",
                    agent = "bench",
                    duration_ms = black_box(1.5),
                    "tool call finished"
                );
            });
        });
    });
    let json_only = tracing::Dispatch::new(
        tracing_subscriber::registry()
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_writer(std::io::sink),
            )
            .with(tracing_subscriber::EnvFilter::new("info")),
    );
    g.bench_function("enabled_json_to_sink_only", |b| {
        tracing::dispatcher::with_default(&json_only, || {
            b.iter(|| {
                tracing::info!(
                    component = "tool",
                    agent = "bench",
                    duration_ms = black_box(1.5),
                    "tool call finished"
                );
            });
        });
    });
    g.finish();
    drop(guard);
}

fn metrics(c: &mut Criterion) {
    let mut g = c.benchmark_group("metrics");
    let family = Family::<Labels, Counter>::default();
    let labels = Labels {
        tool: Arc::from("calculator"),
        outcome: "success",
    };
    g.bench_function("counter_inc_labelled", |b| {
        b.iter(|| family.get_or_create(black_box(&labels)).inc());
    });
    let histogram = Histogram::new([0.001, 0.01, 0.1, 1.0, 10.0]);
    g.bench_function("histogram_observe", |b| {
        b.iter(|| histogram.observe(black_box(0.042)));
    });
    let metrics = Metrics::new();
    let tool: Arc<str> = Arc::from("calculator");
    g.bench_function("record_tool_call", |b| {
        b.iter(|| {
            metrics.record_tool_call(
                tool.clone(),
                Outcome::Success,
                black_box(Duration::from_micros(420)),
            );
        });
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = logging, metrics
}
criterion_main!(benches);
