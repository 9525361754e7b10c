//! Process figures (`getrusage`: CPU time and peak RSS), percentiles and the one-line JSON
//! report every runner of the peer benchmark prints.

use std::time::Duration;

use nix::sys::resource::{UsageWho, getrusage};
use nix::sys::time::TimeVal;
use serde::Serialize;

/// User + system CPU time of this process (all threads, exited ones included), in seconds,
/// from `getrusage(RUSAGE_SELF)` — microsecond resolution, where `/proc/self/stat` counts
/// 10 ms ticks, too coarse for sub-second runs. The Python peers read the same call.
/// `0.0` if the call fails.
pub fn cpu_seconds() -> f64 {
    getrusage(UsageWho::RUSAGE_SELF)
        .map_or(0.0, |u| seconds(u.user_time()) + seconds(u.system_time()))
}

fn seconds(t: TimeVal) -> f64 {
    #[allow(clippy::cast_precision_loss, reason = "seconds of CPU time")]
    let s = t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
    s
}

/// Peak resident set size of this process (`ru_maxrss`, the same figure as the Python
/// peers' `resource.getrusage`), in MiB. Falls back to `/proc/self/status` `VmHWM`.
pub fn peak_rss_mib() -> f64 {
    match getrusage(UsageWho::RUSAGE_SELF) {
        #[allow(clippy::cast_precision_loss, reason = "KiB of memory")]
        Ok(u) if u.max_rss() > 0 => u.max_rss() as f64 / 1024.0,
        _ => vm_hwm_mib(&std::fs::read_to_string("/proc/self/status").unwrap_or_default()),
    }
}

fn vm_hwm_mib(status: &str) -> f64 {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0)
}

/// The `p`-quantile (0..=1, nearest rank) of sorted durations; zero when empty.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss,
        reason = "a rank within a slice's length"
    )]
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// One runner's result, printed as one JSON line (the same keys for every framework).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Framework and version.
    pub framework: String,
    /// Tasks in flight at once.
    pub concurrency: usize,
    /// Tasks run.
    pub tasks: usize,
    /// Tasks that failed or gave a wrong answer.
    pub errors: usize,
    /// Wall-clock time of the whole batch, in seconds.
    pub elapsed_s: f64,
    /// Tasks per second.
    pub tasks_per_s: f64,
    /// CPU-seconds (user + system) of the process per task.
    pub cpu_s_per_task: f64,
    /// Median per-task latency minus the stub's two fixed latencies, in ms.
    pub p50_added_ms: f64,
    /// 99th-percentile per-task latency minus the stub's two fixed latencies, in ms.
    pub p99_added_ms: f64,
    /// Peak RSS of the process, in MiB.
    pub peak_rss_mib: f64,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn cpu_time_grows_with_work() {
        let before = cpu_seconds();
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
        }
        assert!(cpu_seconds() > before, "{x}");
    }

    #[test]
    fn vm_hwm_is_read_in_mib() {
        let status = "Name:\tx\nVmHWM:\t    2048 kB\nVmRSS:\t 1024 kB\n";
        assert!((vm_hwm_mib(status) - 2.0).abs() < 1e-9);
        assert!(peak_rss_mib() > 0.0);
    }

    #[test]
    fn nearest_rank_percentiles() {
        let d: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&d, 0.5), Duration::from_millis(50));
        assert_eq!(percentile(&d, 0.99), Duration::from_millis(99));
        assert_eq!(percentile(&[], 0.5), Duration::ZERO);
    }
}
