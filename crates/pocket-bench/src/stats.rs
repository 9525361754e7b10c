//! Process figures from `/proc/self` (no extra dependency), percentiles and the one-line
//! JSON report every runner of the peer benchmark prints.

use std::time::Duration;

use serde::Serialize;

/// User + system CPU time of this process (all threads), in seconds, from
/// `/proc/self/stat` (`utime`, `stime`; USER_HZ is 100 on Linux). `0.0` where unreadable.
pub fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    cpu_seconds_of(&stat)
}

/// utime + stime of a `/proc/PID/stat` line, in seconds.
fn cpu_seconds_of(stat: &str) -> f64 {
    // The command name may hold spaces and parentheses: fields are counted after the last `)`.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // After the name, `state` is field 0: utime is 11, stime 12 (stat(5) fields 14 and 15).
    (ticks(11) + ticks(12)) / 100.0
}

/// Peak resident set size of this process (`VmHWM`), in MiB. `0.0` where unreadable.
pub fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    vm_hwm_mib(&status)
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
    fn stat_fields_are_counted_after_the_command_name() {
        let line = "42 (a (weird) name) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 1 0";
        assert!((cpu_seconds_of(line) - 3.0).abs() < 1e-9);
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
