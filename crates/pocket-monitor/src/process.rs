//! Process statistics from `/proc/self` (Linux; `None` elsewhere).
//!
//! A few lines of parsing instead of `procfs` (rustix, flate2, chrono, …) or `sysinfo`
//! (which walks every process): we need four numbers from two files.

use serde::Serialize;

/// What the process uses now.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct ProcessStats {
    /// Resident memory, bytes (`VmRSS`).
    pub resident_bytes: u64,
    /// Virtual memory, bytes (`VmSize`).
    pub virtual_bytes: u64,
    /// CPU time used since start, user plus system, seconds.
    pub cpu_seconds: f64,
    /// Threads.
    pub threads: u64,
    /// Open file descriptors, if they could be counted.
    pub open_fds: Option<u64>,
}

/// Linux's `USER_HZ`, the unit of `utime`/`stime` in `/proc/*/stat`: 100 on every mainstream
/// architecture (it is part of the kernel ABI, unlike `HZ`).
const USER_HZ: f64 = 100.0;

/// Reads the current process's statistics; `None` where `/proc/self` does not exist.
pub fn read() -> Option<ProcessStats> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let mut stats = parse_status(&status)?;
    stats.cpu_seconds = parse_stat_cpu(&stat)?;
    stats.open_fds = std::fs::read_dir("/proc/self/fd")
        .ok()
        .map(|d| d.count() as u64);
    Some(stats)
}

fn parse_status(text: &str) -> Option<ProcessStats> {
    let mut stats = ProcessStats::default();
    let mut seen = false;
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let number = || {
            value
                .split_whitespace()
                .next()
                .and_then(|n| n.parse::<u64>().ok())
        };
        match key {
            "VmRSS" => {
                stats.resident_bytes = number()? * 1024;
                seen = true;
            }
            "VmSize" => stats.virtual_bytes = number()? * 1024,
            "Threads" => stats.threads = number()?,
            _ => {}
        }
    }
    seen.then_some(stats)
}

/// utime + stime of `/proc/self/stat`, in seconds. The command name (field 2) is in
/// parentheses and may hold spaces, so fields are counted after the last `)`.
fn parse_stat_cpu(text: &str) -> Option<f64> {
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // After `)`: state is field 3; utime and stime are fields 14 and 15.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / USER_HZ)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_and_stat() {
        let status = "Name:\tpocket\nVmSize:\t  20000 kB\nVmRSS:\t    3000 kB\nThreads:\t7\n";
        let s = parse_status(status).unwrap();
        assert_eq!(s.resident_bytes, 3000 * 1024);
        assert_eq!(s.virtual_bytes, 20000 * 1024);
        assert_eq!(s.threads, 7);
        let stat = "1234 (a (weird) name) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 7 0";
        assert_eq!(parse_stat_cpu(stat), Some(3.0));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn reads_this_process() {
        let s = read().unwrap();
        assert!(s.resident_bytes > 0);
        assert!(s.threads >= 1);
        assert!(s.open_fds.is_some_and(|n| n > 0));
    }
}
