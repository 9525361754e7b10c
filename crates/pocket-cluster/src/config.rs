//! The `[cluster]` section of `pocket.toml`.

use std::time::Duration;

use serde::Deserialize;

use crate::autoscale::ScalePolicy;
use crate::store::StoreOptions;

/// How the dispatcher picks an instance among those that can take a task.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Selection {
    /// Power of two choices: two eligible instances at random, the less loaded one wins
    /// (ties go to the healthier). The default: near-optimal balance at O(1) cost.
    #[default]
    P2c,
    /// The seed's weighted random choice: weight `(100 − load%) + health + 10 × free slots`.
    Weighted,
}

impl Selection {
    /// The name used in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::P2c => "p2c",
            Self::Weighted => "weighted",
        }
    }
}

/// The `[cluster]` section: pool size, leases, heartbeats, back-pressure, autoscaling and
/// shutdown. Every key is optional; unknown keys are refused.
///
/// ```
/// use pocket_cluster::{ClusterConfig, Selection};
///
/// let config: ClusterConfig = toml::from_str(
///     r#"
///     min_instances = 2
///     max_instances = 8
///     selection = "weighted"
///     lease_secs = 60
///     "#,
/// )?;
/// config.validate()?;
/// assert_eq!(config.selection, Selection::Weighted);
/// assert_eq!(config.instance_timeout_secs, 120.0);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// This worker's name in leases; default: `worker-<pid>-<random>`.
    pub worker_id: Option<String>,
    /// Instances per agent at least (0 allows scaling to zero). Default: 1.
    pub min_instances: u32,
    /// Instances per agent at most. Default: 10.
    pub max_instances: u32,
    /// Runs one instance takes at once. Default: 10.
    pub instance_concurrency: u32,
    /// Lease on a claimed task, in seconds; renewed every `heartbeat_secs`. Default: 30.
    pub lease_secs: f64,
    /// Interval of lease renewals, instance health checks and expired-lease reclaiming, in
    /// seconds; must be shorter than `lease_secs`. Default: 10.
    pub heartbeat_secs: f64,
    /// An instance with runs in flight that shows no progress (no checkpoint, journal entry
    /// or finished run) for this long is marked failed, its runs are taken back and it is
    /// rebuilt. Keep it above the longest model or tool call. Default: 120.
    pub instance_timeout_secs: f64,
    /// Tasks claimed at most per store round trip. Default: 32.
    pub claim_batch: u32,
    /// How often an idle worker asks the store for work, in milliseconds. Default: 500.
    pub poll_interval_ms: u64,
    /// Queued tasks at most; beyond it a submit fails with `QueueFull` (the store enforces
    /// it: pass [`store_options`](Self::store_options) when opening the store). Default: 10,000.
    pub max_queued: u64,
    /// Scale up when the share of busy slots reaches this (0 to 1). Default: 0.8.
    pub scale_up_utilisation: f64,
    /// Scale down when it falls to this; must be below `scale_up_utilisation` (the gap is
    /// the hysteresis band). Default: 0.2.
    pub scale_down_utilisation: f64,
    /// Consecutive checks (one per heartbeat) a scaling condition must hold before the
    /// autoscaler acts. Default: 2.
    pub scale_stable_checks: u32,
    /// Time after a scaling action during which no other is taken, in seconds. Default: 60.
    pub cool_down_secs: f64,
    /// Instance selection policy, `"p2c"` or `"weighted"`. Default: `"p2c"`.
    pub selection: Selection,
    /// On shutdown, how long in-flight runs may take to finish before they are cancelled
    /// (their checkpoints stay; another worker resumes them), in seconds. Default: 30.
    pub shutdown_grace_secs: f64,
    /// First retry delay of a failed run without a Retry-After hint, in seconds; doubled per
    /// attempt, with full jitter. Default: 1.
    pub retry_base_secs: f64,
    /// Longest retry delay, in seconds. Default: 300.
    pub retry_max_secs: f64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            worker_id: None,
            min_instances: 1,
            max_instances: 10,
            instance_concurrency: 10,
            lease_secs: 30.0,
            heartbeat_secs: 10.0,
            instance_timeout_secs: 120.0,
            claim_batch: 32,
            poll_interval_ms: 500,
            max_queued: 10_000,
            scale_up_utilisation: 0.8,
            scale_down_utilisation: 0.2,
            scale_stable_checks: 2,
            cool_down_secs: 60.0,
            selection: Selection::P2c,
            shutdown_grace_secs: 30.0,
            retry_base_secs: 1.0,
            retry_max_secs: 300.0,
        }
    }
}

/// A `[cluster]` value that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cluster.{key}: {message}")]
pub struct ConfigError {
    /// The key, without the `cluster.` prefix.
    pub key: &'static str,
    /// What is wrong.
    pub message: String,
}

fn bad(key: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        key,
        message: message.into(),
    }
}

fn secs(key: &'static str, value: f64, allow_zero: bool) -> Result<Duration, ConfigError> {
    match Duration::try_from_secs_f64(value) {
        Ok(d) if allow_zero || !d.is_zero() => Ok(d),
        Ok(_) => Err(bad(key, "must be greater than zero")),
        Err(_) => Err(bad(key, format!("`{value}` is not a duration in seconds"))),
    }
}

impl ClusterConfig {
    /// Checks every value once; the runtime calls it too.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the first key that is wrong.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.worker_id.as_deref().is_some_and(str::is_empty) {
            return Err(bad("worker_id", "must not be empty"));
        }
        if self.max_instances == 0 {
            return Err(bad("max_instances", "must be at least 1"));
        }
        if self.min_instances > self.max_instances {
            return Err(bad(
                "min_instances",
                format!(
                    "{} is above max_instances ({})",
                    self.min_instances, self.max_instances
                ),
            ));
        }
        if self.instance_concurrency == 0 {
            return Err(bad("instance_concurrency", "must be at least 1"));
        }
        let lease = self.lease()?;
        let heartbeat = self.heartbeat()?;
        if heartbeat >= lease {
            return Err(bad(
                "heartbeat_secs",
                format!(
                    "{} must be shorter than lease_secs ({}), or leases run out between renewals",
                    self.heartbeat_secs, self.lease_secs
                ),
            ));
        }
        self.instance_timeout()?;
        if self.claim_batch == 0 {
            return Err(bad("claim_batch", "must be at least 1"));
        }
        if self.poll_interval_ms == 0 {
            return Err(bad("poll_interval_ms", "must be at least 1"));
        }
        if self.max_queued == 0 {
            return Err(bad("max_queued", "must be at least 1"));
        }
        for (key, v) in [
            ("scale_up_utilisation", self.scale_up_utilisation),
            ("scale_down_utilisation", self.scale_down_utilisation),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return Err(bad(key, format!("{v} is not between 0 and 1")));
            }
        }
        if self.scale_down_utilisation >= self.scale_up_utilisation {
            return Err(bad(
                "scale_down_utilisation",
                format!(
                    "{} must be below scale_up_utilisation ({})",
                    self.scale_down_utilisation, self.scale_up_utilisation
                ),
            ));
        }
        if self.scale_stable_checks == 0 {
            return Err(bad("scale_stable_checks", "must be at least 1"));
        }
        self.cool_down()?;
        self.shutdown_grace()?;
        let base = secs("retry_base_secs", self.retry_base_secs, true)?;
        let max = secs("retry_max_secs", self.retry_max_secs, true)?;
        if base > max {
            return Err(bad("retry_base_secs", "must not be above retry_max_secs"));
        }
        Ok(())
    }

    /// The store options this section implies: `max_queued` as the queue's limit.
    pub fn store_options(&self) -> StoreOptions {
        StoreOptions::new().max_queued(self.max_queued)
    }

    pub(crate) fn lease(&self) -> Result<Duration, ConfigError> {
        secs("lease_secs", self.lease_secs, false)
    }

    pub(crate) fn heartbeat(&self) -> Result<Duration, ConfigError> {
        secs("heartbeat_secs", self.heartbeat_secs, false)
    }

    pub(crate) fn instance_timeout(&self) -> Result<Duration, ConfigError> {
        secs("instance_timeout_secs", self.instance_timeout_secs, false)
    }

    pub(crate) fn cool_down(&self) -> Result<Duration, ConfigError> {
        secs("cool_down_secs", self.cool_down_secs, true)
    }

    pub(crate) fn shutdown_grace(&self) -> Result<Duration, ConfigError> {
        secs("shutdown_grace_secs", self.shutdown_grace_secs, true)
    }

    pub(crate) fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.poll_interval_ms.max(1))
    }

    pub(crate) fn retry_delays(&self) -> (Duration, Duration) {
        (
            Duration::try_from_secs_f64(self.retry_base_secs).unwrap_or(Duration::from_secs(1)),
            Duration::try_from_secs_f64(self.retry_max_secs).unwrap_or(Duration::from_secs(300)),
        )
    }

    /// The autoscaler's policy from this section.
    ///
    /// # Errors
    /// As [`validate`](Self::validate).
    pub fn scale_policy(&self) -> Result<ScalePolicy, ConfigError> {
        self.validate()?;
        Ok(ScalePolicy {
            min_instances: self.min_instances,
            max_instances: self.max_instances,
            scale_up_utilisation: self.scale_up_utilisation,
            scale_down_utilisation: self.scale_down_utilisation,
            stable_checks: self.scale_stable_checks,
            cool_down: self.cool_down()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_documented() {
        let c = ClusterConfig::default();
        c.validate().unwrap();
        assert_eq!(c.instance_timeout_secs, 120.0);
        assert_eq!(c.selection, Selection::P2c);
    }

    #[test]
    fn toml_keys_parse_and_unknown_keys_are_refused() {
        let c: ClusterConfig = toml::from_str(
            r#"
            worker_id = "w1"
            min_instances = 0
            max_instances = 3
            instance_concurrency = 4
            lease_secs = 0.5
            heartbeat_secs = 0.1
            instance_timeout_secs = 120
            claim_batch = 8
            poll_interval_ms = 50
            max_queued = 100
            scale_up_utilisation = 0.9
            scale_down_utilisation = 0.1
            scale_stable_checks = 3
            cool_down_secs = 30
            selection = "weighted"
            shutdown_grace_secs = 5
            retry_base_secs = 2
            retry_max_secs = 60
            "#,
        )
        .unwrap();
        c.validate().unwrap();
        assert_eq!(c.lease().unwrap(), Duration::from_millis(500));
        assert_eq!(c.selection, Selection::Weighted);
        let policy = c.scale_policy().unwrap();
        assert_eq!((policy.min_instances, policy.stable_checks), (0, 3));
        let e = toml::from_str::<ClusterConfig>("lease = 3").unwrap_err();
        assert!(e.to_string().contains("unknown field `lease`"), "{e}");
        let e = toml::from_str::<ClusterConfig>(r#"selection = "random""#).unwrap_err();
        assert!(e.to_string().contains("p2c"), "{e}");
    }

    #[test]
    fn errors_name_the_key() {
        let c = ClusterConfig {
            heartbeat_secs: 30.0,
            ..ClusterConfig::default()
        };
        let e = c.validate().unwrap_err();
        assert_eq!(e.key, "heartbeat_secs");
        assert!(e.to_string().starts_with("cluster.heartbeat_secs: "));
        let c = ClusterConfig {
            scale_down_utilisation: 0.9,
            ..ClusterConfig::default()
        };
        assert_eq!(c.validate().unwrap_err().key, "scale_down_utilisation");
        let c = ClusterConfig {
            min_instances: 11,
            ..ClusterConfig::default()
        };
        assert_eq!(c.validate().unwrap_err().key, "min_instances");
        let c = ClusterConfig {
            lease_secs: -1.0,
            ..ClusterConfig::default()
        };
        assert_eq!(c.validate().unwrap_err().key, "lease_secs");
    }
}
