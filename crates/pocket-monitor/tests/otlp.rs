//! OTLP export (feature `otlp`): spans and the GenAI metrics reach an in-test collector.
//!
//! `cargo test -p pocket-monitor --features otlp --test otlp`

#![cfg(feature = "otlp")]
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails loudly by design

use std::sync::{Arc, Mutex};
use std::time::Duration;

use pocket_monitor::logging::LogBuilder;
use pocket_monitor::{Metrics, MonitorConfig, OtlpConfig, Outcome};
use tracing_subscriber::layer::SubscriberExt;

/// Path and content type of every request the collector got.
type Seen = Arc<Mutex<Vec<(String, String)>>>;

/// A collector on 127.0.0.1:0 in a runtime of its own (the exporters block).
fn collector() -> (String, Seen) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
                let record = record.clone();
                async move {
                    let kind = req
                        .headers()
                        .get("content-type")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned();
                    record
                        .lock()
                        .unwrap()
                        .push((req.uri().path().to_owned(), kind));
                    axum::http::StatusCode::OK
                }
            });
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    let addr = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    (format!("http://{addr}"), seen)
}

#[test]
fn spans_and_genai_metrics_are_exported() {
    let (endpoint, seen) = collector();
    let config = MonitorConfig {
        console: false,
        otlp: OtlpConfig {
            endpoint: Some(endpoint),
            ..OtlpConfig::default()
        },
        ..MonitorConfig::default()
    };
    let (layer, guard) = LogBuilder::new(&config)
        .layer::<tracing_subscriber::Registry>()
        .unwrap();
    // After the exporters started, so the instruments record into the OTLP meter provider.
    let metrics = Metrics::new();
    tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), || {
        let span = tracing::info_span!(
            "chat",
            gen_ai.operation.name = "chat",
            gen_ai.request.model = "sim"
        );
        let _entered = span.enter();
        tracing::info!("inside a model call");
    });
    metrics.record_model_call(
        "sim",
        Outcome::Success,
        Duration::from_millis(120),
        Some(pocket_agent::Usage {
            input_tokens: 10,
            output_tokens: 2,
        }),
    );
    drop(guard); // shuts the providers down, which flushes both
    let seen = seen.lock().unwrap().clone();
    assert!(
        seen.iter()
            .any(|(p, t)| p == "/v1/traces" && t.contains("protobuf")),
        "{seen:?}"
    );
    assert!(
        seen.iter()
            .any(|(p, t)| p == "/v1/metrics" && t.contains("protobuf")),
        "{seen:?}"
    );
}
