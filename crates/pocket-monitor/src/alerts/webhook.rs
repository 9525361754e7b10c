//! The webhook sink: alerts POSTed as JSON by a background task, never on a run's path.

use std::time::Duration;

use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{Alert, AlertSink};
use crate::metrics::Metrics;

/// Hands alerts to a bounded queue that a background task POSTs to a URL, with a time limit
/// per attempt and retries with backoff. When the queue is full the alert is dropped and
/// counted (`pocket_alert_deliveries_total{sink="webhook",outcome="dropped"}`), so a webhook
/// that hangs never slows a run. The URL is never logged.
///
/// The body is the [`Alert`] plus a `text` field, so Slack-style incoming webhooks show it
/// as is.
#[derive(Debug, Clone)]
pub struct WebhookSink {
    queue: mpsc::Sender<Alert>,
    metrics: Metrics,
}

/// What one webhook delivery sends.
#[derive(Serialize)]
struct Payload<'a> {
    text: String,
    #[serde(flatten)]
    alert: &'a Alert,
}

/// How the sender is set up.
#[derive(Debug, Clone)]
pub(crate) struct WebhookOptions {
    pub(crate) url: String,
    pub(crate) timeout: Duration,
    pub(crate) retries: u32,
    pub(crate) queue: usize,
}

impl WebhookSink {
    /// Starts the sender task on `tracker`; it stops when `shutdown` is cancelled.
    pub(crate) fn spawn(
        options: WebhookOptions,
        metrics: Metrics,
        tracker: &TaskTracker,
        runtime: &tokio::runtime::Handle,
        shutdown: CancellationToken,
    ) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .timeout(options.timeout)
            .connect_timeout(options.timeout)
            .build()?;
        let (queue, rx) = mpsc::channel(options.queue.max(1));
        let sender = Sender {
            client,
            url: options.url,
            retries: options.retries,
            metrics: metrics.clone(),
        };
        tracker.spawn_on(sender.run(rx, shutdown), runtime);
        Ok(Self { queue, metrics })
    }
}

impl AlertSink for WebhookSink {
    fn name(&self) -> &'static str {
        "webhook"
    }

    fn deliver(&self, alert: &Alert) {
        if self.queue.try_send(alert.clone()).is_err() {
            self.metrics.record_delivery("webhook", "dropped");
            tracing::debug!(
                component = "alerts",
                alert = alert.kind.as_str(),
                "alert webhook queue full or closed; alert dropped"
            );
        }
    }
}

struct Sender {
    client: reqwest::Client,
    url: String,
    retries: u32,
    metrics: Metrics,
}

impl Sender {
    async fn run(self, mut rx: mpsc::Receiver<Alert>, shutdown: CancellationToken) {
        loop {
            let alert = tokio::select! {
                biased;
                () = shutdown.cancelled() => return,
                next = rx.recv() => match next {
                    Some(alert) => alert,
                    None => return,
                },
            };
            let sent = tokio::select! {
                biased;
                () = shutdown.cancelled() => return,
                sent = self.deliver(&alert) => sent,
            };
            self.metrics
                .record_delivery("webhook", if sent { "sent" } else { "failed" });
        }
    }

    async fn deliver(&self, alert: &Alert) -> bool {
        let payload = Payload {
            text: format!("Pocket Agent alert: {}", alert.message),
            alert,
        };
        for attempt in 0..=self.retries {
            if attempt > 0 {
                tokio::time::sleep(backoff(attempt)).await;
            }
            match self.client.post(&self.url).json(&payload).send().await {
                Ok(resp) if resp.status().is_success() => return true,
                Ok(resp) => tracing::warn!(
                    component = "alerts",
                    alert = alert.kind.as_str(),
                    status = resp.status().as_u16(),
                    attempt = attempt + 1,
                    "alert webhook refused the alert"
                ),
                // `without_url`: the URL often holds a token.
                Err(e) => tracing::warn!(
                    component = "alerts",
                    alert = alert.kind.as_str(),
                    error = %e.without_url(),
                    attempt = attempt + 1,
                    "alert webhook failed"
                ),
            }
        }
        false
    }
}

/// 250 ms, 500 ms, 1 s, … capped at 8 s.
fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(250u64.saturating_mul(1 << attempt.saturating_sub(1).min(5)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!(backoff(1), Duration::from_millis(250));
        assert_eq!(backoff(2), Duration::from_millis(500));
        assert_eq!(backoff(6), Duration::from_secs(8));
        assert_eq!(backoff(60), Duration::from_secs(8));
    }
}
