//! OTLP/HTTP export (feature `otlp`): spans through `tracing-opentelemetry`, and the GenAI
//! metrics through a periodic reader. Both export from the SDK's own threads, with the
//! blocking HTTP client, so they never run on the Tokio runtime.

use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::metrics::Histogram;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{MetricExporter, SpanExporter, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Subscriber;
use tracing_subscriber::Layer;
use tracing_subscriber::registry::LookupSpan;

use crate::config::OtlpConfig;
use crate::logging::{BoxLayer, LogError};

/// The SDK providers; dropping them flushes and stops the exporters.
pub(crate) struct Providers {
    tracer: Option<SdkTracerProvider>,
    meter: Option<SdkMeterProvider>,
}

impl Drop for Providers {
    fn drop(&mut self) {
        if let Some(t) = self.tracer.take() {
            let _ = t.shutdown();
        }
        if let Some(m) = self.meter.take() {
            let _ = m.shutdown();
        }
    }
}

/// Starts the exporters `[monitoring.otlp]` asks for. The meter provider becomes the global
/// one, so [`Metrics`](crate::Metrics) created afterwards record into it: install logging
/// before building the monitor.
pub(crate) fn start<S>(config: &OtlpConfig) -> Result<(Option<BoxLayer<S>>, Providers), LogError>
where
    S: Subscriber + for<'l> LookupSpan<'l> + Send + Sync,
{
    let mut providers = Providers {
        tracer: None,
        meter: None,
    };
    let Some(base) = config.endpoint.as_deref() else {
        return Ok((None, providers));
    };
    let base = base.trim_end_matches('/');
    let resource = Resource::builder()
        .with_service_name(config.service_name.clone())
        .build();
    let fail = |e: &dyn std::fmt::Display| LogError::Otlp(e.to_string());
    let mut layer = None;
    if config.traces {
        let exporter = SpanExporter::builder()
            .with_http()
            .with_endpoint(format!("{base}/v1/traces"))
            .with_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| fail(&e))?;
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource.clone())
            .build();
        let tracer = provider.tracer("pocket");
        layer = Some(tracing_opentelemetry::layer().with_tracer(tracer).boxed());
        providers.tracer = Some(provider);
    }
    if config.metrics {
        let exporter = MetricExporter::builder()
            .with_http()
            .with_endpoint(format!("{base}/v1/metrics"))
            .with_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| fail(&e))?;
        let reader = PeriodicReader::builder(exporter)
            .with_interval(Duration::from_secs(config.export_interval_secs.max(1)))
            .build();
        let provider = SdkMeterProvider::builder()
            .with_reader(reader)
            .with_resource(resource)
            .build();
        opentelemetry::global::set_meter_provider(provider.clone());
        providers.meter = Some(provider);
    }
    Ok((layer, providers))
}

/// The two GenAI client histograms, recorded next to their Prometheus twins.
pub(crate) struct Instruments {
    duration: Histogram<f64>,
    tokens: Histogram<u64>,
}

impl Instruments {
    /// From the global meter provider (a no-op one unless [`start`] ran first).
    pub(crate) fn new() -> Self {
        let meter = opentelemetry::global::meter("pocket");
        let duration = meter
            .f64_histogram("gen_ai.client.operation.duration")
            .with_unit("s")
            .with_description("GenAI operation duration")
            .with_boundaries(vec![
                0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96,
                81.92,
            ])
            .build();
        let tokens = meter
            .u64_histogram("gen_ai.client.token.usage")
            .with_unit("{token}")
            .with_description("Measures number of input and output tokens used")
            .with_boundaries(vec![
                1.0,
                4.0,
                16.0,
                64.0,
                256.0,
                1024.0,
                4096.0,
                16384.0,
                65536.0,
                262_144.0,
                1_048_576.0,
                4_194_304.0,
                16_777_216.0,
                67_108_864.0,
            ])
            .build();
        Self { duration, tokens }
    }

    pub(crate) fn record(
        &self,
        model: &str,
        error_type: Option<&'static str>,
        secs: f64,
        usage: Option<pocket_agent::Usage>,
    ) {
        let mut attrs = vec![
            KeyValue::new("gen_ai.operation.name", "chat"),
            KeyValue::new("gen_ai.request.model", model.to_owned()),
        ];
        if let Some(error) = error_type {
            attrs.push(KeyValue::new("error.type", error));
        }
        self.duration.record(secs, &attrs);
        if let Some(usage) = usage {
            for (kind, n) in [
                ("input", usage.input_tokens),
                ("output", usage.output_tokens),
            ] {
                let mut a = attrs.clone();
                a.push(KeyValue::new("gen_ai.token.type", kind));
                self.tokens.record(n, &a);
            }
        }
    }
}
