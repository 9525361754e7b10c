//! The `[monitoring]` section of `pocket.toml`.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// Everything the monitoring crate can be told, as the `[monitoring]` table.
///
/// Every field has a default, so an empty table (or none) is valid:
///
/// ```
/// let config: pocket_monitor::MonitorConfig = toml::from_str(r#"
///     log_dir = "logs"
///     rotation = "hourly"
///     sample_rate = 0.5
///     [retention]
///     max_age_days = 3
///     [alerts]
///     response_time_ms = 5000
///     webhook_url_env = "POCKET_ALERT_WEBHOOK"
/// "#).unwrap();
/// config.validate().unwrap();
/// assert_eq!(config.file_prefix, "app");
/// assert_eq!(config.retention.max_files, Some(30));
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MonitorConfig {
    /// Directory of the log files; created if missing. Default: none (console only).
    pub log_dir: Option<PathBuf>,
    /// File names are `{file_prefix}_YYYY-MM-DD.log`. Default: `app`.
    pub file_prefix: String,
    /// Whether logs go to stderr too. Default: `true`.
    pub console: bool,
    /// Console format. Default: `pretty`.
    pub format: LogFormat,
    /// File format. Default: `json` (one object per line).
    pub file_format: LogFormat,
    /// Level filter in `RUST_LOG` syntax (`info`, `warn,pocket_agent=debug`), for every sink.
    /// Default: `info`.
    pub level: String,
    /// A stricter filter for the console only (a CLI keeps its terminal quiet while the files
    /// get `info`). It cannot let through what `level` stops. Default: none (`level`).
    pub console_level: Option<String>,
    /// When a new file starts. Default: `daily`.
    pub rotation: Rotation,
    /// Size cap of one file in bytes: past it, the period goes on in `…YYYY-MM-DD.1.log`.
    /// Default: 100 MiB when `rotation = "size"`, otherwise none.
    pub max_bytes: Option<u64>,
    /// Which old files are deleted (at start-up and at every rotation).
    pub retention: RetentionConfig,
    /// Share of events below ERROR that are kept, 0.0–1.0; errors are never sampled out.
    /// Default: 1.0 (keep everything).
    pub sample_rate: f64,
    /// Seed of the sampler, so that a rate gives the same decisions run after run. Default: 0.
    pub sample_seed: u64,
    /// How many recent entries the in-memory ring keeps for the API and dashboard.
    /// Default: 10 000 (the seed's buffer).
    pub recent_logs: usize,
    /// Alert rules and sinks.
    pub alerts: AlertsConfig,
    /// Thresholds of the system status.
    pub health: HealthConfig,
    /// OTLP export (cargo feature `otlp`).
    pub otlp: OtlpConfig,
}

impl Default for MonitorConfig {
    fn default() -> Self {
        Self {
            log_dir: None,
            file_prefix: "app".into(),
            console: true,
            format: LogFormat::Pretty,
            file_format: LogFormat::Json,
            level: "info".into(),
            console_level: None,
            rotation: Rotation::Daily,
            max_bytes: None,
            retention: RetentionConfig::default(),
            sample_rate: 1.0,
            sample_seed: 0,
            recent_logs: 10_000,
            alerts: AlertsConfig::default(),
            health: HealthConfig::default(),
            otlp: OtlpConfig::default(),
        }
    }
}

/// `[monitoring.otlp]`: OTLP/HTTP (protobuf) export of spans and of the GenAI metrics, in
/// builds with pocket-monitor's cargo feature `otlp`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OtlpConfig {
    /// The collector's base URL (`http://localhost:4318`): spans go to `/v1/traces`, metrics
    /// to `/v1/metrics`. Default: none (no export).
    pub endpoint: Option<String>,
    /// The resource's `service.name`. Default: `pocket`.
    pub service_name: String,
    /// Export spans (`invoke_agent`, `chat`, `execute_tool`). Default: `true`.
    pub traces: bool,
    /// Export `gen_ai.client.operation.duration` and `gen_ai.client.token.usage`.
    /// Default: `true`.
    pub metrics: bool,
    /// How often metrics are exported, seconds. Default: 60.
    pub export_interval_secs: u64,
}

impl Default for OtlpConfig {
    fn default() -> Self {
        Self {
            endpoint: None,
            service_name: "pocket".into(),
            traces: true,
            metrics: true,
            export_interval_secs: 60,
        }
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// One human-readable line per event (colours on a terminal).
    Pretty,
    /// One JSON object per line, with the current span's fields.
    Json,
}

/// When a log file ends and the next begins. Times are UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rotation {
    /// A file per hour: `app_YYYY-MM-DD_HH.log`.
    Hourly,
    /// A file per day: `app_YYYY-MM-DD.log` (the seed's name).
    Daily,
    /// A file per day, split at `max_bytes`: `app_YYYY-MM-DD.log`, `app_YYYY-MM-DD.1.log`, …
    Size,
}

/// `[monitoring.retention]`: old log files are deleted at start-up and at every rotation.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// Files whose period ended more than this many days ago are deleted. Default: 7 (the
    /// seed's `logRetention`); `0` keeps files of any age.
    pub max_age_days: u32,
    /// At most this many files are kept, the newest ones (the current file counts). Default:
    /// 30; none keeps any number.
    pub max_files: Option<usize>,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            max_age_days: 7,
            max_files: Some(30),
        }
    }
}

impl RetentionConfig {
    /// The age limit, if any.
    pub fn max_age(&self) -> Option<Duration> {
        (self.max_age_days > 0).then(|| Duration::from_secs(u64::from(self.max_age_days) * 86_400))
    }
}

/// `[monitoring.alerts]`: the seed's three rules, a cool-down, and where alerts go.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    /// A run slower than this fires `high_response_time`. Default: 10 000 (the seed's).
    pub response_time_ms: u64,
    /// Errors among the last `error_window` runs, divided by `error_window`, above this fires
    /// `high_error_rate`. Default: 0.1 (the seed's).
    pub error_rate: f64,
    /// How many recent runs the error rate looks at. Default: 100 (the seed's).
    pub error_window: usize,
    /// Resident memory above this many MiB fires `high_memory`. Default: 1024.
    pub memory_mb: u64,
    /// An alert type that fired stays quiet this long. Default: 60 (the seed's minute).
    pub cool_down_secs: u64,
    /// Where alerts are POSTed as JSON. Default: none. Prefer `webhook_url_env` when the URL
    /// holds a token (Slack and most chat webhooks do).
    pub webhook_url: Option<String>,
    /// The name of an environment variable holding the webhook URL. Default: none.
    pub webhook_url_env: Option<String>,
    /// Time limit of one webhook attempt. Default: 5000.
    pub webhook_timeout_ms: u64,
    /// Further attempts after a failed one. Default: 2.
    pub webhook_retries: u32,
    /// How many alerts may wait for the webhook; more are dropped and counted. Default: 64.
    pub webhook_queue: usize,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        Self {
            response_time_ms: 10_000,
            error_rate: 0.1,
            error_window: 100,
            memory_mb: 1024,
            cool_down_secs: 60,
            webhook_url: None,
            webhook_url_env: None,
            webhook_timeout_ms: 5_000,
            webhook_retries: 2,
            webhook_queue: 64,
        }
    }
}

// The webhook URL is a secret more often than not: never print it.
impl fmt::Debug for AlertsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AlertsConfig")
            .field("response_time_ms", &self.response_time_ms)
            .field("error_rate", &self.error_rate)
            .field("error_window", &self.error_window)
            .field("memory_mb", &self.memory_mb)
            .field("cool_down_secs", &self.cool_down_secs)
            .field(
                "webhook_url",
                &self.webhook_url.as_ref().map(|_| "<redacted>"),
            )
            .field("webhook_url_env", &self.webhook_url_env)
            .field("webhook_timeout_ms", &self.webhook_timeout_ms)
            .field("webhook_retries", &self.webhook_retries)
            .field("webhook_queue", &self.webhook_queue)
            .finish()
    }
}

impl AlertsConfig {
    /// The webhook URL: `webhook_url_env`'s value if set, else `webhook_url`.
    ///
    /// # Errors
    /// When `webhook_url_env` names a variable that is not set.
    pub fn resolve_webhook_url(&self) -> Result<Option<String>, ConfigError> {
        if let Some(var) = &self.webhook_url_env {
            return match std::env::var(var) {
                Ok(url) if !url.trim().is_empty() => Ok(Some(url)),
                _ => Err(ConfigError::new(
                    "alerts.webhook_url_env",
                    format!("the environment variable `{var}` is not set"),
                )),
            };
        }
        Ok(self.webhook_url.clone())
    }

    /// The cool-down as a duration.
    pub fn cool_down(&self) -> Duration {
        Duration::from_secs(self.cool_down_secs)
    }
}

/// `[monitoring.health]`: when the system status turns degraded or failed (the seed's numbers).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    /// Error rate of recent runs above which the status is degraded. Default: 0.05.
    pub degraded_error_rate: f64,
    /// Error rate of recent runs above which the status is failed. Default: 0.2.
    pub failed_error_rate: f64,
    /// Resident memory (MiB) above which the status is degraded. Default: 1024.
    pub degraded_memory_mb: u64,
    /// Resident memory (MiB) above which the status is failed. Default: 2048.
    pub failed_memory_mb: u64,
    /// Only runs that ended this recently count for the status (the last `alerts.error_window`
    /// of them at most). Default: 300.
    pub window_secs: u64,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            degraded_error_rate: 0.05,
            failed_error_rate: 0.2,
            degraded_memory_mb: 1024,
            failed_memory_mb: 2048,
            window_secs: 300,
        }
    }
}

/// A `[monitoring]` value that makes no sense; names the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("monitoring.{key}: {message}")]
pub struct ConfigError {
    /// The key under `[monitoring]`, dotted (`alerts.error_rate`).
    pub key: &'static str,
    /// What is wrong.
    pub message: String,
}

impl ConfigError {
    pub(crate) fn new(key: &'static str, message: impl Into<String>) -> Self {
        Self {
            key,
            message: message.into(),
        }
    }
}

impl MonitorConfig {
    /// Checks values against each other; the parse already refused unknown keys.
    ///
    /// # Errors
    /// The first bad value, naming its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let rate = |key, v: f64| {
            if (0.0..=1.0).contains(&v) {
                Ok(())
            } else {
                Err(ConfigError::new(
                    key,
                    format!("must be between 0 and 1, got {v}"),
                ))
            }
        };
        rate("sample_rate", self.sample_rate)?;
        rate("alerts.error_rate", self.alerts.error_rate)?;
        rate(
            "health.degraded_error_rate",
            self.health.degraded_error_rate,
        )?;
        rate("health.failed_error_rate", self.health.failed_error_rate)?;
        if self.file_prefix.is_empty()
            || self
                .file_prefix
                .contains(|c: char| std::path::is_separator(c) || c == '\0')
        {
            return Err(ConfigError::new(
                "file_prefix",
                "must be a non-empty file name without path separators",
            ));
        }
        if self.max_bytes == Some(0) {
            return Err(ConfigError::new("max_bytes", "must be greater than zero"));
        }
        if self.recent_logs == 0 {
            return Err(ConfigError::new("recent_logs", "must be at least 1"));
        }
        if self.retention.max_files == Some(0) {
            return Err(ConfigError::new(
                "retention.max_files",
                "must be at least 1 (the current file)",
            ));
        }
        if self.alerts.error_window == 0 {
            return Err(ConfigError::new(
                "alerts.error_window",
                "must be at least 1",
            ));
        }
        if self.alerts.webhook_queue == 0 {
            return Err(ConfigError::new(
                "alerts.webhook_queue",
                "must be at least 1",
            ));
        }
        if self.alerts.webhook_timeout_ms == 0 {
            return Err(ConfigError::new(
                "alerts.webhook_timeout_ms",
                "must be greater than zero",
            ));
        }
        if let Some(url) = &self.alerts.webhook_url {
            check_url("alerts.webhook_url", url)?;
        }
        if let Some(endpoint) = &self.otlp.endpoint {
            if !cfg!(feature = "otlp") {
                return Err(ConfigError::new(
                    "otlp.endpoint",
                    "this build has no OTLP export (cargo feature `otlp` of pocket-monitor)",
                ));
            }
            check_url("otlp.endpoint", endpoint)?;
            if self.otlp.export_interval_secs == 0 {
                return Err(ConfigError::new(
                    "otlp.export_interval_secs",
                    "must be greater than zero",
                ));
            }
        }
        if let Err(e) = tracing_subscriber::EnvFilter::builder().parse(&self.level) {
            return Err(ConfigError::new("level", e.to_string()));
        }
        if let Some(level) = &self.console_level
            && let Err(e) = tracing_subscriber::EnvFilter::builder().parse(level)
        {
            return Err(ConfigError::new("console_level", e.to_string()));
        }
        Ok(())
    }

    /// The size cap in force: `max_bytes`, or 100 MiB for `rotation = "size"`.
    pub fn effective_max_bytes(&self) -> Option<u64> {
        match (self.max_bytes, self.rotation) {
            (Some(n), _) => Some(n),
            (None, Rotation::Size) => Some(100 * 1024 * 1024),
            (None, _) => None,
        }
    }
}

pub(crate) fn check_url(key: &'static str, url: &str) -> Result<(), ConfigError> {
    match reqwest::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") => Ok(()),
        // Never echo the URL: it may hold a token.
        Ok(_) => Err(ConfigError::new(key, "must be an http or https URL")),
        Err(e) => Err(ConfigError::new(key, format!("not a valid URL ({e})"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_table_gives_the_documented_defaults() {
        let c: MonitorConfig = toml::from_str("").unwrap();
        assert_eq!(c, MonitorConfig::default());
        assert_eq!(c.alerts.cool_down(), Duration::from_secs(60));
        assert_eq!(c.retention.max_age(), Some(Duration::from_secs(7 * 86_400)));
        assert!(c.validate().is_ok());
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = toml::from_str::<MonitorConfig>("log_dri = \"x\"").err();
        assert!(err.is_some_and(|e| e.to_string().contains("log_dri")));
        let err = toml::from_str::<MonitorConfig>("[alerts]\nwebhook = \"x\"").err();
        assert!(err.is_some_and(|e| e.to_string().contains("webhook")));
    }

    #[test]
    fn validation_names_the_key() {
        let mut c = MonitorConfig {
            sample_rate: 1.5,
            ..MonitorConfig::default()
        };
        assert_eq!(c.validate().map_err(|e| e.key), Err("sample_rate"));
        c.sample_rate = 0.5;
        c.level = "info,[".into();
        assert_eq!(c.validate().map_err(|e| e.key), Err("level"));
        c.level = "debug".into();
        c.alerts.webhook_url = Some("ftp://secret-token@example.invalid".into());
        let err = c.validate().err();
        assert!(err.as_ref().is_some_and(|e| e.key == "alerts.webhook_url"));
        assert!(err.is_some_and(|e| !e.to_string().contains("secret-token")));
    }

    #[test]
    fn an_otlp_endpoint_needs_the_feature() {
        let c: MonitorConfig =
            toml::from_str("[otlp]\nendpoint = \"http://localhost:4318\"").unwrap();
        if cfg!(feature = "otlp") {
            assert!(c.validate().is_ok());
        } else {
            assert_eq!(c.validate().map_err(|e| e.key), Err("otlp.endpoint"));
        }
    }

    #[test]
    fn debug_output_redacts_the_webhook_url() {
        let c = AlertsConfig {
            webhook_url: Some("https://hooks.example.invalid/T0/secret".into()),
            ..AlertsConfig::default()
        };
        let shown = format!("{c:?}");
        assert!(!shown.contains("secret"), "{shown}");
        assert!(shown.contains("<redacted>"));
    }

    #[test]
    fn size_rotation_has_a_default_cap() {
        let c = MonitorConfig {
            rotation: Rotation::Size,
            ..MonitorConfig::default()
        };
        assert_eq!(c.effective_max_bytes(), Some(100 * 1024 * 1024));
        assert_eq!(MonitorConfig::default().effective_max_bytes(), None);
    }
}
