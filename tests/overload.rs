//! Overload of the real binary over real HTTP: a burst of submissions at several times what
//! `pocket serve` can hold (a small `[cluster] max_queued`, a slow `sim`) is met with
//! `429 Too Many Requests` and a `Retry-After`, never with a failure or a growing memory; every
//! accepted task completes, and clients that wait as told get in later.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

mod common;

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const KEY: &str = "overload-key";
/// Queued tasks at most (`[cluster] max_queued`).
const MAX_QUEUED: usize = 20;
/// Runs in flight at most: one instance of two.
const IN_FLIGHT: usize = 2;
/// Submissions in the burst: several times what the server holds.
const BURST: usize = 200;
/// The bound on the serve process's resident memory during the burst. An idle debug build
/// sits near 40 MiB; a queue that grew with the burst or buffered rejected bodies would show.
const RSS_BOUND_KIB: u64 = 192 * 1024;

struct Served {
    child: Child,
    base: String,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(dir: &std::path::Path) -> Served {
    let cfg = dir.join("pocket.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"
[models.slow]
provider = "sim"
latency_ms = 50

[agents.default]
model = "slow"

[cluster]
max_queued = {MAX_QUEUED}
min_instances = 1
max_instances = 1
instance_concurrency = {IN_FLIGHT}
poll_interval_ms = 20
"#
        ),
    )
    .unwrap();
    let mut child = Command::new(assert_cmd::cargo::cargo_bin("pocket"))
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&cfg)
        .arg("--store")
        .arg(format!("sqlite://{}", dir.join("pocket.db").display()))
        .env_remove("POCKET_CONFIG")
        .env("POCKET_API_KEYS", KEY)
        .env("POCKET_LOG", "error")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let base = common::serve_address(&mut child, |_| {});
    Served { child, base }
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

enum Submitted {
    Accepted(String),
    Refused(u64),
}

async fn submit(http: &reqwest::Client, base: &str, i: usize) -> Submitted {
    let resp = http
        .post(format!("{base}/v1/tasks"))
        .bearer_auth(KEY)
        .json(&json!({"task": format!("task {i}"), "idempotency_key": format!("burst-{i}")}))
        .send()
        .await
        .unwrap();
    match resp.status().as_u16() {
        202 => {
            let body: Value = resp.json().await.unwrap();
            Submitted::Accepted(body["id"].as_str().unwrap().to_owned())
        }
        429 => {
            let after = resp
                .headers()
                .get("retry-after")
                .expect("a 429 says when to come back")
                .to_str()
                .unwrap()
                .parse::<u64>()
                .expect("Retry-After in whole seconds");
            assert!(after >= 1, "Retry-After {after}");
            let body: Value = resp.json().await.unwrap();
            assert_eq!(body["error"]["type"], "queue_full", "{body}");
            Submitted::Refused(after)
        }
        other => panic!("submission {i}: {other} {}", resp.text().await.unwrap()),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_burst_past_capacity_gets_429_with_retry_after_and_the_accepted_tasks_complete() {
    let dir = tempfile::tempdir().unwrap();
    let served = tokio::task::spawn_blocking({
        let dir = dir.path().to_owned();
        move || serve(&dir)
    })
    .await
    .unwrap();
    let pid = served.child.id();
    let base = served.base.clone();
    let http = reqwest::Client::new();

    // Sample the server's memory while the burst runs.
    let peak = Arc::new(AtomicU64::new(0));
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = std::thread::spawn({
        let (peak, sampling) = (Arc::clone(&peak), Arc::clone(&sampling));
        move || {
            while sampling.load(Ordering::Relaxed) {
                if let Some(kib) = rss_kib(pid) {
                    peak.fetch_max(kib, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    });

    // The burst: all at once, 50 connections at a time.
    let mut handles = Vec::new();
    let gate = Arc::new(tokio::sync::Semaphore::new(50));
    for i in 0..BURST {
        let (http, base, gate) = (http.clone(), base.clone(), Arc::clone(&gate));
        handles.push(tokio::spawn(async move {
            let _permit = gate.acquire().await.unwrap();
            (i, submit(&http, &base, i).await)
        }));
    }
    let mut accepted = Vec::new();
    let mut refused = Vec::new();
    for h in handles {
        match h.await.unwrap() {
            (_, Submitted::Accepted(id)) => accepted.push(id),
            (i, Submitted::Refused(after)) => refused.push((i, after)),
        }
    }
    // The server stays live and answers probes while full.
    assert_eq!(
        http.get(format!("{base}/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert!(
        !refused.is_empty(),
        "a burst of {BURST} past a queue of {MAX_QUEUED} is refused in part"
    );
    assert!(
        accepted.len() >= MAX_QUEUED,
        "at least a full queue is accepted: {}",
        accepted.len()
    );

    let first_refused = refused.len();

    // Clients that wait as told get in: each round, the refused wait their Retry-After
    // (at most a second here) and try again together.
    let started = Instant::now();
    while !refused.is_empty() {
        let wait = refused.iter().map(|(_, after)| *after).max().unwrap_or(1);
        tokio::time::sleep(Duration::from_secs(wait).min(Duration::from_secs(1))).await;
        let round: Vec<_> = std::mem::take(&mut refused)
            .into_iter()
            .map(|(i, _)| {
                let (http, base) = (http.clone(), base.clone());
                tokio::spawn(async move { (i, submit(&http, &base, i).await) })
            })
            .collect();
        for h in round {
            match h.await.unwrap() {
                (_, Submitted::Accepted(id)) => accepted.push(id),
                (i, Submitted::Refused(after)) => refused.push((i, after)),
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(240),
            "{} still refused",
            refused.len()
        );
    }
    assert_eq!(accepted.len(), BURST, "every submission got in");
    let unique: std::collections::HashSet<_> = accepted.iter().collect();
    assert_eq!(unique.len(), BURST, "each once");

    // Every accepted task completes.
    let started = Instant::now();
    for id in &accepted {
        loop {
            let view: Value = http
                .get(format!("{base}/v1/tasks/{id}"))
                .bearer_auth(KEY)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            match view["status"].as_str().unwrap() {
                "succeeded" => break,
                "queued" | "running" => {}
                other => panic!("task {id} is {other}: {view}"),
            }
            assert!(
                started.elapsed() < Duration::from_secs(240),
                "task {id} did not finish"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    sampling.store(false, Ordering::Relaxed);
    sampler.join().unwrap();
    let peak = peak.load(Ordering::Relaxed);
    eprintln!(
        "overload: {BURST} submissions, {} refused with 429 at first, all completed; peak RSS {} MiB (bound {} MiB)",
        first_refused,
        peak / 1024,
        RSS_BOUND_KIB / 1024
    );
    assert!(peak > 0, "memory was sampled");
    assert!(
        peak < RSS_BOUND_KIB,
        "peak RSS {peak} KiB over the bound {RSS_BOUND_KIB} KiB"
    );
}
