//! An open-loop load generator: requests start at a fixed arrival rate whatever the answers'
//! latency (so a slow server meets a growing queue, as in production, instead of slowing the
//! client down): request *i* is due at *i* / rate. By default the requests due are started
//! each millisecond (Tokio's timer resolution), so they leave in small bursts;
//! [`LoadConfig::even`] spaces them evenly with a pacing thread. Each request is timed from
//! the moment it is sent; how late the generator itself started requests is reported too, so
//! a run whose generator fell behind shows it.
//!
//! It talks HTTP/1.1 over plain TCP with hyper's own pooled client rather than reqwest: the
//! generator shares the machine's cores with what it measures, so every microsecond it
//! spends per request is taken from the target (reqwest parses the URL of every request
//! twice and wraps it in redirect, timeout and decompression layers that a generator needs
//! none of).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderValue, StatusCode};
use bytes::Bytes;
use http_body_util::BodyExt;
use serde::Serialize;
use tokio::task::JoinSet;

use crate::{plain_http, stats};

/// What [`run`] sends.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// The full `http://` URL, like `http://127.0.0.1:7878/v1/chat/completions` (no TLS: a
    /// generator measures a server, not a TLS stack).
    pub url: String,
    /// The JSON body of every request.
    pub body: String,
    /// `Authorization: Bearer …`, when set.
    pub bearer: Option<String>,
    /// Requests started per second (> 0).
    pub rate: f64,
    /// How long requests are measured.
    pub duration: Duration,
    /// Requests sent before the measured ones, not counted (connections, caches).
    pub warmup: Duration,
    /// Requests in flight beyond which new ones are dropped and counted as such.
    pub max_in_flight: usize,
    /// Time limit of one request.
    pub timeout: Duration,
    /// When set, every measured request is written there as a CSV line (`due_ms`: when it
    /// was due, from the first measured one; `latency_ms`; `ok`), to see when the slow ones
    /// happened.
    pub samples_out: Option<std::path::PathBuf>,
    /// Space requests evenly (a pacing thread) instead of starting those due each
    /// millisecond. Costs every process more CPU per request (fewer requests per wake-up).
    pub even: bool,
}

/// Why [`run`] could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// A setting is out of range.
    #[error("invalid load setting: {0}")]
    Invalid(String),
    /// The samples file could not be written.
    #[error("cannot write {path}: {source}")]
    Samples {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// The result of one open-loop run; latencies in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct LoadReport {
    /// A label for the table (what was measured).
    pub label: String,
    /// The arrival rate asked for.
    pub target_rate: f64,
    /// Measured requests started per second.
    pub achieved_rate: f64,
    /// Measured requests started.
    pub sent: usize,
    /// Of which answered with a 2xx status.
    pub ok: usize,
    /// Of which failed (transport error or non-2xx status), including `shed`.
    pub errors: usize,
    /// Of the errors, those answered `429 Too Many Requests` (load shed by the target).
    pub shed: usize,
    /// Measured requests not sent because `max_in_flight` were pending.
    pub dropped: usize,
    /// Median latency of answered requests.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Slowest.
    pub max_ms: f64,
    /// 99th percentile of how late the generator started a request after its due time.
    pub p99_start_lag_ms: f64,
    /// CPU-seconds the generator itself used.
    pub generator_cpu_s: f64,
}

struct Sample {
    /// When it was due, from the start of the run.
    due: Duration,
    latency: Duration,
    lag: Duration,
    ok: bool,
    /// Answered 429.
    shed: bool,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Sends requests at `config.rate` per second for warm-up plus duration, and reports the
/// measured part.
///
/// # Errors
/// As [`LoadError`]; failed requests are counted, not returned.
pub async fn run(config: LoadConfig, label: String) -> Result<LoadReport, LoadError> {
    if config.rate.is_nan() || config.rate <= 0.0 {
        return Err(LoadError::Invalid(format!(
            "rate {} must be > 0",
            config.rate
        )));
    }
    if config.duration.is_zero() {
        return Err(LoadError::Invalid("duration must be > 0".into()));
    }
    let uri = plain_http::uri(&config.url).map_err(LoadError::Invalid)?;
    let client = plain_http::client();
    let timeout = config.timeout;
    let bearer = config
        .bearer
        .as_ref()
        .map(|k| HeaderValue::from_str(&format!("Bearer {k}")))
        .transpose()
        .map_err(|_| LoadError::Invalid("the API key cannot be sent in a header".into()))?;
    let body = bytes_of(&config.body);
    let interval = Duration::from_secs_f64(1.0 / config.rate);
    let warmup_n = requests_in(config.warmup, config.rate);
    let total = warmup_n + requests_in(config.duration, config.rate);
    let samples = Arc::new(Mutex::new(Vec::with_capacity(total - warmup_n)));
    let mut tasks = JoinSet::new();
    let mut dropped = 0usize;
    let cpu0 = stats::cpu_seconds();
    let start = tokio::time::Instant::now();
    let mut measured_start = None;
    {
        // Starts request `i` (due at `start + i * interval`) unless too many are in flight.
        let mut launch = |i: usize| {
            let intended = start + nth(interval, i);
            let measured = i >= warmup_n;
            if measured && measured_start.is_none() {
                measured_start = Some(Instant::now());
            }
            while tasks.try_join_next().is_some() {}
            if tasks.len() >= config.max_in_flight {
                if measured {
                    dropped += 1;
                }
                return;
            }
            let sent = client.request(plain_http::post_json(&uri, body.clone(), bearer.as_ref()));
            let samples = samples.clone();
            tasks.spawn(async move {
                let t0 = tokio::time::Instant::now();
                let exchange = async {
                    let response = sent.await.ok()?;
                    let status = response.status();
                    let read = response.into_body().collect().await.is_ok();
                    Some((
                        read && status.is_success(),
                        status == StatusCode::TOO_MANY_REQUESTS,
                    ))
                };
                let (ok, shed) = tokio::time::timeout(timeout, exchange)
                    .await
                    .ok()
                    .flatten()
                    .unwrap_or((false, false));
                if measured {
                    let sample = Sample {
                        due: intended - start,
                        latency: t0.elapsed(),
                        lag: t0.saturating_duration_since(intended),
                        ok,
                        shed,
                    };
                    if let Ok(mut s) = samples.lock() {
                        s.push(sample);
                    }
                }
            });
        };
        if config.even {
            // A thread of its own keeps the arrival clock: it sleeps to each request's due
            // time (to within the OS timer's slack, ~50 µs) and hands its index over.
            let (due_tx, mut due_rx) = tokio::sync::mpsc::unbounded_channel::<usize>();
            let std_start = start.into_std();
            let pacer = std::thread::Builder::new()
                .name("pocket-bench-pacer".into())
                .spawn(move || {
                    for i in 0..total {
                        let due = std_start + nth(interval, i);
                        let now = Instant::now();
                        if due > now {
                            std::thread::sleep(due - now);
                        }
                        if due_tx.send(i).is_err() {
                            return;
                        }
                    }
                })
                .map_err(|e| LoadError::Invalid(format!("cannot start the pacing thread: {e}")))?;
            while let Some(i) = due_rx.recv().await {
                launch(i);
            }
            let _ = pacer.join();
        } else {
            // Tokio's timer wakes at millisecond granularity: each wake-up starts every
            // request due by then, so at 5,000/s they leave in bursts of five.
            let mut i = 0usize;
            while i < total {
                tokio::time::sleep_until(start + nth(interval, i)).await;
                let now = tokio::time::Instant::now();
                while i < total && start + nth(interval, i) <= now {
                    launch(i);
                    i += 1;
                }
            }
        }
    }
    let sending = measured_start.map_or(Duration::ZERO, |s| s.elapsed());
    while tasks.join_next().await.is_some() {}
    let generator_cpu_s = stats::cpu_seconds() - cpu0;
    let samples = std::mem::take(
        &mut *samples
            .lock()
            .map_err(|_| LoadError::Invalid("a request task panicked while recording".into()))?,
    );
    let sent = samples.len();
    if let Some(path) = &config.samples_out {
        write_samples(path, &samples, nth(interval, warmup_n)).map_err(|source| {
            LoadError::Samples {
                path: path.clone(),
                source,
            }
        })?;
    }
    let mut latencies: Vec<Duration> = samples.iter().filter(|s| s.ok).map(|s| s.latency).collect();
    let mut lags: Vec<Duration> = samples.iter().map(|s| s.lag).collect();
    latencies.sort_unstable();
    lags.sort_unstable();
    let ok = latencies.len();
    #[allow(clippy::cast_precision_loss, reason = "request counts")]
    let achieved_rate = if sending.is_zero() {
        0.0
    } else {
        (sent + dropped) as f64 / sending.as_secs_f64()
    };
    Ok(LoadReport {
        label,
        target_rate: config.rate,
        achieved_rate,
        sent,
        ok,
        errors: sent - ok,
        shed: samples.iter().filter(|s| s.shed).count(),
        dropped,
        p50_ms: ms(stats::percentile(&latencies, 0.50)),
        p90_ms: ms(stats::percentile(&latencies, 0.90)),
        p99_ms: ms(stats::percentile(&latencies, 0.99)),
        p999_ms: ms(stats::percentile(&latencies, 0.999)),
        max_ms: ms(latencies.last().copied().unwrap_or_default()),
        p99_start_lag_ms: ms(stats::percentile(&lags, 0.99)),
        generator_cpu_s,
    })
}

/// One CSV line per sample, in the order they were due.
fn write_samples(
    path: &std::path::Path,
    samples: &[Sample],
    first: Duration,
) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut sorted: Vec<&Sample> = samples.iter().collect();
    sorted.sort_unstable_by_key(|s| s.due);
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    writeln!(out, "due_ms,latency_ms,ok")?;
    for s in sorted {
        writeln!(
            out,
            "{:.3},{:.3},{}",
            ms(s.due.saturating_sub(first)),
            ms(s.latency),
            u8::from(s.ok)
        )?;
    }
    out.flush()
}

fn bytes_of(body: &str) -> Bytes {
    // Cloned by reference count: every request sends the same buffer.
    Bytes::from(body.to_owned())
}

#[allow(clippy::cast_precision_loss, reason = "a request index")]
fn nth(interval: Duration, i: usize) -> Duration {
    interval.mul_f64(i as f64)
}

#[allow(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "a request count from a positive rate and a duration"
)]
fn requests_in(span: Duration, rate: f64) -> usize {
    (span.as_secs_f64() * rate).round() as usize
}
