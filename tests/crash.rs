//! Crash drills with the real binary: `kill -9` a worker mid-way through 500 tasks, start
//! another, and check that no task is lost or finished twice and that no tool call whose
//! result was journaled ran again — on SQLite, and on PostgreSQL with two workers.
//!
//! Each task appends its own file name to its own file (`write_file` with `append`), so the
//! file's length counts the executions of that task's tool call.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pocket_cluster::{NewTask, StoreOptions, TaskFilter, TaskStatus, TaskStore};

const TASKS: usize = 500;

fn config(dir: &Path) -> PathBuf {
    let ws = dir.join("ws");
    std::fs::create_dir_all(ws.join("c")).unwrap();
    let path = dir.join("pocket.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[models.slow]
provider = "sim"
latency_ms = 15
jitter_ms = 10

[agents.default]
model = "slow"
tools = ["files"]

[tools.files]
workspace = {ws:?}

[cluster]
lease_secs = 2.0
heartbeat_secs = 0.5
poll_interval_ms = 50
instance_concurrency = 8
max_instances = 4
shutdown_grace_secs = 5.0
"#,
            ws = ws.display().to_string()
        ),
    )
    .unwrap();
    path
}

struct Worker(Child);

impl Worker {
    fn start(config: &Path, store: &str, log: &Path) -> Self {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let child = Command::new(assert_cmd::cargo::cargo_bin("pocket"))
            .args(["worker", "--store", store, "--config"])
            .arg(config)
            .env_remove("POCKET_CONFIG")
            .env("POCKET_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        Self(child)
    }

    /// `kill -9`.
    fn kill(mut self) {
        self.0.kill().unwrap();
        self.0.wait().unwrap();
    }

    /// SIGTERM, then wait for a graceful exit.
    fn stop(mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.0.id().to_string())
            .status();
        let status = self.0.wait().unwrap();
        assert!(status.success(), "graceful shutdown exits 0, got {status}");
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn count(store: &Arc<dyn TaskStore>, status: TaskStatus) -> u64 {
    let stats = store.stats().await.unwrap();
    stats
        .by_status
        .iter()
        .find(|(s, _)| *s == status)
        .map_or(0, |(_, n)| *n)
}

async fn wait_until(
    store: &Arc<dyn TaskStore>,
    what: &str,
    limit: Duration,
    done: impl Fn(u64, u64) -> bool,
) {
    let started = Instant::now();
    loop {
        let ok = count(store, TaskStatus::Succeeded).await;
        let failed = count(store, TaskStatus::Failed).await;
        if done(ok, failed) {
            return;
        }
        assert!(
            started.elapsed() < limit,
            "timed out waiting for {what}: {ok} succeeded, {failed} failed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn enqueue(store: &Arc<dyn TaskStore>) {
    for i in 0..TASKS {
        let task = NewTask {
            idempotency_key: Some(format!("crash-{i}")),
            ..NewTask::new("default", format!("write_file 'c/t{i}.txt' with append"))
        };
        assert!(store.enqueue(task).await.unwrap().created);
    }
}

/// Every task is finished exactly once; tool calls ran once, except calls that were in
/// flight at the kill (started, no journaled result): those tasks fail as interrupted rather
/// than run a non-idempotent call again.
async fn check(store: &Arc<dyn TaskStore>, ws: &Path, in_flight_limit: usize) {
    let all = store
        .list(&TaskFilter {
            limit: TASKS * 2,
            ..TaskFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(all.len(), TASKS, "no task lost or duplicated");
    let mut interrupted = 0;
    for task in &all {
        let name = task.task.split('\'').nth(1).unwrap().to_owned();
        let text = std::fs::read_to_string(ws.join(&name)).unwrap_or_default();
        let runs = text.matches(name.as_str()).count();
        match task.status {
            TaskStatus::Succeeded => {
                assert_eq!(
                    runs, 1,
                    "task {} ({name}) ran its tool {runs} times",
                    task.id
                );
                let answer = task.result.as_ref().unwrap()["answer"]
                    .as_str()
                    .unwrap()
                    .to_owned();
                assert!(answer.starts_with("write_file returned"), "{answer}");
            }
            TaskStatus::Failed => {
                let error = task.error.clone().unwrap_or_default();
                assert!(
                    error.contains("not idempotent"),
                    "only interrupted calls may fail: {error}"
                );
                assert!(
                    runs <= 1,
                    "an interrupted call is not run again ({name}: {runs})"
                );
                interrupted += 1;
            }
            other => panic!("task {} is {other:?}", task.id),
        }
    }
    assert!(
        interrupted <= in_flight_limit,
        "{interrupted} interrupted calls"
    );
    eprintln!(
        "crash drill: {} succeeded exactly once, {interrupted} failed as interrupted",
        TASKS - interrupted
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_kill_9_mid_way_then_resume() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let url = format!("sqlite://{}", dir.path().join("pocket.db").display());
    let store = pocket_cluster::open(&url, StoreOptions::new())
        .await
        .unwrap();
    enqueue(&store).await;

    let log = dir.path().join("worker.log");
    let first = Worker::start(&cfg, &url, &log);
    wait_until(
        &store,
        "a third of the tasks",
        Duration::from_secs(120),
        |ok, _| ok >= TASKS as u64 / 3,
    )
    .await;
    first.kill();
    let after_kill = count(&store, TaskStatus::Succeeded).await;
    assert!(after_kill < TASKS as u64, "the kill came mid-way");

    let second = Worker::start(&cfg, &url, &log);
    wait_until(
        &store,
        "every task",
        Duration::from_secs(180),
        |ok, failed| ok + failed == TASKS as u64,
    )
    .await;
    second.stop();
    // One worker: at most 4 instances × 8 runs were in flight at the kill.
    check(&store, &dir.path().join("ws"), 32).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_two_workers_one_killed() {
    let Ok(base) = std::env::var("POCKET_TEST_POSTGRES_URL") else {
        eprintln!("SKIPPED postgres_two_workers_one_killed: POCKET_TEST_POSTGRES_URL is not set");
        return;
    };
    let schema = format!("crash_{}", std::process::id());
    let admin = sqlx::PgPool::connect(&base).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP SCHEMA IF EXISTS {schema} CASCADE"
    )))
    .execute(&admin)
    .await
    .unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&admin)
        .await
        .unwrap();
    let sep = if base.contains('?') { '&' } else { '?' };
    let url = format!("{base}{sep}options[search_path]={schema}");

    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let store = pocket_cluster::open(&url, StoreOptions::new())
        .await
        .unwrap();
    enqueue(&store).await;

    let log = dir.path().join("worker.log");
    let doomed = Worker::start(&cfg, &url, &log);
    let survivor = Worker::start(&cfg, &url, &log);
    wait_until(
        &store,
        "a third of the tasks",
        Duration::from_secs(120),
        |ok, _| ok >= TASKS as u64 / 3,
    )
    .await;
    doomed.kill();
    wait_until(
        &store,
        "every task",
        Duration::from_secs(180),
        |ok, failed| ok + failed == TASKS as u64,
    )
    .await;
    survivor.stop();
    check(&store, &dir.path().join("ws"), 32).await;
    drop(store);
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
        .execute(&admin)
        .await
        .unwrap();
}
