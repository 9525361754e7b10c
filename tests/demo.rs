//! `pocket demo` end to end: the real binary starts the service, submits tasks over HTTP,
//! answers approvals both ways, checks every answer, and writes `metrics.prom`; with
//! `--keep-serving` it serves until SIGINT.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

fn demo() -> Command {
    let mut cmd = Command::new(assert_cmd::cargo::cargo_bin("pocket"));
    cmd.arg("demo")
        .env_remove("POCKET_CONFIG")
        .env_remove("POCKET_API_KEYS")
        .env_remove("POCKET_LOG")
        .env_remove("RUST_LOG");
    cmd
}

/// The number before `word` in `line` (`17 approved` -> 17).
fn count_before(line: &str, word: &str) -> u64 {
    let words: Vec<&str> = line.split_whitespace().collect();
    let at = words
        .iter()
        .position(|w| w.trim_matches(|c: char| !c.is_alphanumeric()) == word)
        .unwrap_or_else(|| panic!("no `{word}` in `{line}`"));
    words[at - 1].parse().unwrap()
}

#[test]
fn demo_answers_every_task_decides_approvals_both_ways_and_writes_metrics() {
    let logs = tempfile::tempdir().unwrap();
    let out = demo()
        .arg("--log-dir")
        .arg(logs.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");

    assert!(
        stdout.contains("answered as expected  300 / 300"),
        "{stdout}"
    );
    let approvals = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("approvals"))
        .expect("an approvals line");
    assert!(count_before(approvals, "approved") > 0, "{approvals}");
    assert!(count_before(approvals, "denied") > 0, "{approvals}");
    // The key was generated for the run and printed.
    assert!(stdout.contains("API key    demo-"), "{stdout}");
    // The resilience story: the primary's breaker opened during the outage and closed again.
    assert!(
        stdout.contains("breaker model:sim:primary: closed -> open"),
        "{stdout}"
    );
    assert!(
        stdout.contains("breaker model:sim:primary: half_open -> closed"),
        "{stdout}"
    );
    // Both reports, fetched over HTTP, and the dashboard's address.
    assert!(stdout.contains("Health (GET /v1/health)"), "{stdout}");
    assert!(stdout.contains("Cluster (GET /v1/cluster)"), "{stdout}");
    assert!(stdout.contains("succeeded 300"), "{stdout}");
    assert!(stdout.contains("dashboard  http://127.0.0.1:"), "{stdout}");

    let metrics = std::fs::read_to_string(logs.path().join("metrics.prom")).unwrap();
    assert!(metrics.contains("pocket_runs_total"), "{metrics}");
    assert!(metrics.contains("pocket_retries_total"), "{metrics}");
}

#[test]
fn bad_demo_arguments_exit_2() {
    let out = demo()
        .args(["--fault-rate", "1.5"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--fault-rate"));
}

#[tokio::test(flavor = "multi_thread")]
async fn keep_serving_serves_until_sigint_then_exits_0() {
    let logs = tempfile::tempdir().unwrap();
    let mut child = demo()
        .args(["--tasks", "20", "--keep-serving", "--log-dir"])
        .arg(logs.path())
        .env("POCKET_API_KEYS", " chosen-key , other")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (base, printed) = tokio::task::spawn_blocking(move || {
        let mut printed = String::new();
        let mut lines = BufReader::new(stdout).lines();
        let base = loop {
            let line = lines
                .next()
                .unwrap_or_else(|| panic!("the demo ended early:\n{printed}"))
                .unwrap();
            printed.push_str(&line);
            printed.push('\n');
            if let Some(rest) = line.strip_prefix("Serving on ") {
                break rest.split_whitespace().next().unwrap().to_owned();
            }
        };
        std::thread::spawn(move || for _ in lines {});
        (base, printed)
    })
    .await
    .unwrap();
    assert!(
        printed.contains("API key    chosen-key (from POCKET_API_KEYS)"),
        "{printed}"
    );
    assert!(
        printed.contains("answered as expected  20 / 20"),
        "{printed}"
    );

    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let healthz = http.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(healthz.status(), 200);
    let cluster = http
        .get(format!("{base}/v1/cluster"))
        .bearer_auth("chosen-key")
        .send()
        .await
        .unwrap();
    assert_eq!(cluster.status(), 200);
    let report: serde_json::Value = cluster.json().await.unwrap();
    assert_eq!(report["queue"]["succeeded"], 20, "{report}");
    let denied = http
        .get(format!("{base}/v1/cluster"))
        .bearer_auth("wrong-key")
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), 401);

    Command::new("kill")
        .arg("-INT")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success(), "{status}");
    assert!(logs.path().join("metrics.prom").exists());
    // Stopped: nothing listens any more.
    assert!(http.get(format!("{base}/healthz")).send().await.is_err());
}
