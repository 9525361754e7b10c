//! Alerts: the seed's three rules (response time, error rate, memory), a cool-down per alert
//! type, and sinks — the log, a webhook, an in-memory list, and a broadcast of alert events.

mod webhook;

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::broadcast;
use tokio::time::Instant;

pub(crate) use webhook::WebhookOptions;
pub use webhook::WebhookSink;

use crate::config::AlertsConfig;
use crate::metrics::Metrics;

/// How many alerts the in-memory list keeps.
const RECENT_ALERTS: usize = 100;

pub(crate) fn webhook_options(config: &AlertsConfig, url: String) -> WebhookOptions {
    WebhookOptions {
        url,
        timeout: Duration::from_millis(config.webhook_timeout_ms),
        retries: config.webhook_retries,
        queue: config.webhook_queue,
    }
}

/// What an alert is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum AlertKind {
    /// A run took longer than `alerts.response_time_ms`.
    HighResponseTime,
    /// Too many of the last `alerts.error_window` runs failed.
    HighErrorRate,
    /// Resident memory is above `alerts.memory_mb`.
    HighMemory,
}

impl AlertKind {
    /// The snake_case name (also the `alert` label of `pocket_alerts_total`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::HighResponseTime => "high_response_time",
            Self::HighErrorRate => "high_error_rate",
            Self::HighMemory => "high_memory",
        }
    }
}

impl fmt::Display for AlertKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One alert, as sinks, subscribers and the webhook (JSON) receive it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Alert {
    /// What it is about.
    pub kind: AlertKind,
    /// When it fired (Unix seconds in JSON).
    #[serde(serialize_with = "unix_secs")]
    pub at: SystemTime,
    /// One sentence for a person.
    pub message: String,
    /// The numbers behind it (`agent`, `duration_ms`, `threshold_ms`, …).
    pub details: Value,
}

fn unix_secs<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(
        t.duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0),
    )
}

/// Somewhere alerts go. `deliver` is called on the path that fired the alert (often a run's
/// own task), so it must not block or wait: hand the alert to a queue and return.
pub trait AlertSink: Send + Sync + 'static {
    /// A short name for metrics (`pocket_alert_deliveries_total{sink}`) and logs.
    fn name(&self) -> &'static str;

    /// Takes the alert; must return at once.
    fn deliver(&self, alert: &Alert);
}

// Compile-time check that the trait stays object safe.
const _: Option<&dyn AlertSink> = None;

/// The log sink: a WARN event with target `pocket::alert`.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogSink;

impl AlertSink for LogSink {
    fn name(&self) -> &'static str {
        "log"
    }

    fn deliver(&self, alert: &Alert) {
        tracing::warn!(
            target: "pocket::alert",
            component = "alerts",
            alert = alert.kind.as_str(),
            details = %alert.details,
            "ALERT: {}",
            alert.message
        );
    }
}

/// The last time an alert type fired.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlertStatus {
    /// The type.
    pub kind: AlertKind,
    /// When it last fired (Unix seconds in JSON).
    #[serde(serialize_with = "unix_secs")]
    pub last_fired: SystemTime,
    /// Seconds since then.
    pub secs_since: f64,
    /// Whether it is still cooling down (a new occurrence would be suppressed).
    pub cooling_down: bool,
}

/// Evaluates the rules, applies the cool-down, and fans alerts out to the sinks.
/// A cheap-clone handle.
#[derive(Clone)]
pub struct AlertManager {
    inner: Arc<Inner>,
}

struct Inner {
    config: AlertsConfig,
    sinks: Vec<Arc<dyn AlertSink>>,
    metrics: Metrics,
    state: Mutex<State>,
    events: broadcast::Sender<Alert>,
}

#[derive(Default)]
struct State {
    last: HashMap<AlertKind, (Instant, SystemTime)>,
    recent: VecDeque<Alert>,
}

impl fmt::Debug for AlertManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AlertManager")
            .field("config", &self.inner.config)
            .field(
                "sinks",
                &self
                    .inner
                    .sinks
                    .iter()
                    .map(|s| s.name())
                    .collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl AlertManager {
    /// A manager with these rules, the log sink and the given sinks (a webhook sink comes
    /// from the [`Monitor`](crate::Monitor) builder, which owns its sender task).
    pub fn new(
        config: AlertsConfig,
        metrics: Metrics,
        sinks: impl IntoIterator<Item = Arc<dyn AlertSink>>,
    ) -> Self {
        let mut all: Vec<Arc<dyn AlertSink>> = vec![Arc::new(LogSink)];
        all.extend(sinks);
        let (events, _) = broadcast::channel(64);
        Self {
            inner: Arc::new(Inner {
                config,
                sinks: all,
                metrics,
                state: Mutex::new(State::default()),
                events,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The rules in force.
    pub fn config(&self) -> &AlertsConfig {
        &self.inner.config
    }

    /// Fires `high_response_time` if `duration` is over the threshold. Returns whether an
    /// alert went out.
    pub fn check_response_time(&self, agent: &str, duration: Duration) -> bool {
        let threshold = self.inner.config.response_time_ms;
        let ms = duration.as_secs_f64() * 1e3;
        if ms <= threshold as f64 {
            return false;
        }
        self.fire(
            AlertKind::HighResponseTime,
            format!(
                "agent {agent} response time ({ms:.0} ms) exceeded the threshold ({threshold} ms)"
            ),
            json!({ "agent": agent, "duration_ms": ms, "threshold_ms": threshold }),
        )
    }

    /// Fires `high_error_rate` if `errors / alerts.error_window` is over the threshold (the
    /// seed's rule: a fixed denominator, so a fresh process needs that many failures first).
    pub fn check_error_rate(&self, errors: usize) -> bool {
        let window = self.inner.config.error_window.max(1);
        let rate = errors as f64 / window as f64;
        let threshold = self.inner.config.error_rate;
        if rate <= threshold {
            return false;
        }
        self.fire(
            AlertKind::HighErrorRate,
            format!(
                "error rate ({:.1}%) of the last {window} runs exceeded the threshold ({:.1}%)",
                rate * 100.0,
                threshold * 100.0
            ),
            json!({ "errors": errors, "window": window, "rate": rate, "threshold": threshold }),
        )
    }

    /// Fires `high_memory` if resident memory is over the threshold.
    pub fn check_memory(&self, resident_bytes: u64) -> bool {
        let threshold = self.inner.config.memory_mb;
        let mb = resident_bytes as f64 / (1024.0 * 1024.0);
        if mb <= threshold as f64 {
            return false;
        }
        self.fire(
            AlertKind::HighMemory,
            format!("memory use ({mb:.0} MiB) exceeded the threshold ({threshold} MiB)"),
            json!({ "memory_mb": mb, "threshold_mb": threshold }),
        )
    }

    /// Fires an alert unless its type fired less than a cool-down ago. Returns whether it
    /// went out. The cool-down clock is Tokio's, so paused time drives it in tests.
    pub fn fire(&self, kind: AlertKind, message: String, details: Value) -> bool {
        let now = Instant::now();
        let cool_down = self.inner.config.cool_down();
        let alert = {
            let mut state = self.lock();
            if let Some((last, _)) = state.last.get(&kind)
                && now.saturating_duration_since(*last) < cool_down
            {
                return false;
            }
            let alert = Alert {
                kind,
                at: SystemTime::now(),
                message,
                details,
            };
            state.last.insert(kind, (now, alert.at));
            if state.recent.len() >= RECENT_ALERTS {
                state.recent.pop_front();
            }
            state.recent.push_back(alert.clone());
            alert
        };
        self.inner.metrics.record_alert(kind.as_str());
        for sink in &self.inner.sinks {
            sink.deliver(&alert);
        }
        let _ = self.inner.events.send(alert);
        true
    }

    /// The alerts fired so far (the last 100), oldest first.
    pub fn recent(&self) -> Vec<Alert> {
        self.lock().recent.iter().cloned().collect()
    }

    /// When each alert type last fired.
    pub fn statuses(&self) -> Vec<AlertStatus> {
        let now = Instant::now();
        let cool_down = self.inner.config.cool_down();
        let mut out: Vec<AlertStatus> = self
            .lock()
            .last
            .iter()
            .map(|(kind, (at, wall))| {
                let since = now.saturating_duration_since(*at);
                AlertStatus {
                    kind: *kind,
                    last_fired: *wall,
                    secs_since: since.as_secs_f64(),
                    cooling_down: since < cool_down,
                }
            })
            .collect();
        out.sort_by_key(|s| s.kind.as_str());
        out
    }

    /// Receives every alert fired from now on (the seed's `alert` event). A receiver that
    /// falls 64 alerts behind loses the oldest.
    pub fn subscribe(&self) -> broadcast::Receiver<Alert> {
        self.inner.events.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Collect(Mutex<Vec<AlertKind>>);

    impl AlertSink for Collect {
        fn name(&self) -> &'static str {
            "collect"
        }
        fn deliver(&self, alert: &Alert) {
            self.0.lock().unwrap().push(alert.kind);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn cool_down_is_per_type() {
        let sink = Arc::new(Collect::default());
        let config = AlertsConfig {
            response_time_ms: 100,
            cool_down_secs: 60,
            ..AlertsConfig::default()
        };
        let alerts =
            AlertManager::new(config, Metrics::new(), [sink.clone() as Arc<dyn AlertSink>]);
        assert!(alerts.check_response_time("a", Duration::from_millis(150)));
        assert!(
            !alerts.check_response_time("a", Duration::from_millis(150)),
            "cooling down"
        );
        assert!(
            !alerts.check_response_time("a", Duration::from_millis(50)),
            "under threshold"
        );
        assert!(
            alerts.check_memory(2 << 30),
            "another type is not cooling down"
        );
        tokio::time::advance(Duration::from_secs(59)).await;
        assert!(!alerts.check_response_time("a", Duration::from_secs(1)));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(alerts.check_response_time("a", Duration::from_secs(1)));
        assert_eq!(
            *sink.0.lock().unwrap(),
            [
                AlertKind::HighResponseTime,
                AlertKind::HighMemory,
                AlertKind::HighResponseTime
            ]
        );
        assert_eq!(alerts.recent().len(), 3);
        assert_eq!(alerts.statuses().len(), 2);
    }

    #[test]
    fn error_rate_uses_the_fixed_window() {
        let config = AlertsConfig {
            error_rate: 0.1,
            error_window: 100,
            ..AlertsConfig::default()
        };
        let alerts = AlertManager::new(config, Metrics::new(), []);
        assert!(!alerts.check_error_rate(10), "10% is not over 10%");
        assert!(alerts.check_error_rate(11));
    }
}
