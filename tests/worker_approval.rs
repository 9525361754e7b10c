//! `pocket worker` (no API of its own) records its runs' approval requests in the shared
//! store, where any `pocket serve` on that store lists and answers them; the worker reads the
//! answer back. Here the test answers through the store itself, as a server would.

#![allow(clippy::unwrap_used, clippy::expect_used)]
#![cfg(unix)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pocket_agent::Approval;
use pocket_cluster::store::ApprovalRecord;
use pocket_cluster::{NewTask, StoreOptions, TaskId, TaskStatus, TaskStore};

struct Worker(Child);

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn worker(dir: &Path, store: &str) -> Worker {
    let config = dir.join("pocket.toml");
    std::fs::write(
        &config,
        format!(
            "[cluster]\nheartbeat_secs = 0.25\npoll_interval_ms = 50\n\n\
             [tools.shell]\nworkspace = {:?}\n",
            dir.join("ws").display().to_string()
        ),
    )
    .unwrap();
    let child = Command::new(assert_cmd::cargo::cargo_bin("pocket"))
        .args(["worker", "--tool", "shell", "--store", store, "--config"])
        .arg(&config)
        .env_remove("POCKET_CONFIG")
        .env("POCKET_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Worker(child)
}

/// Polls (at most 30 s) until `check` returns something.
async fn until<T, F, Fut>(what: &str, check: F) -> T
where
    F: Fn() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(found) = check().await {
            return found;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "never saw {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn pending_for(store: &Arc<dyn TaskStore>, task: &TaskId) -> ApprovalRecord {
    until("the worker's approval request", || async {
        let approvals = store.approvals().expect("the SQLite store keeps approvals");
        approvals
            .pending_approvals(0)
            .await
            .unwrap()
            .into_iter()
            .find(|r| &r.task_id == task)
    })
    .await
}

async fn finished(store: &Arc<dyn TaskStore>, task: &TaskId) -> TaskStatus {
    until("the task finish", || async {
        let record = store.get(task).await.unwrap().unwrap();
        record.status.is_terminal().then_some(record.status)
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_workers_dangerous_call_waits_for_an_answer_recorded_in_the_shared_store() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("pocket.db").display());
    let store = pocket_cluster::open(&url, StoreOptions::new())
        .await
        .unwrap();
    let _worker = worker(dir.path(), &url);
    let marker = dir.path().join("ws").join("marker");

    // Approved: the command runs once.
    let approved = store
        .enqueue(NewTask::new(
            "default",
            "Use the shell: 'echo ran >> marker'",
        ))
        .await
        .unwrap()
        .id;
    let request = pending_for(&store, &approved).await;
    assert_eq!(request.tool, "shell");
    assert!(!marker.exists(), "nothing runs before the answer");
    let approvals = store.approvals().unwrap();
    approvals
        .decide_approval(&request.id, &Approval::Approve)
        .await
        .unwrap();
    assert_eq!(finished(&store, &approved).await, TaskStatus::Succeeded);
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), "ran\n");

    // Denied: the command never runs; the model is told why.
    let denied = store
        .enqueue(NewTask::new(
            "default",
            "Use the shell: 'echo again >> marker'",
        ))
        .await
        .unwrap()
        .id;
    let request = pending_for(&store, &denied).await;
    approvals
        .decide_approval(&request.id, &Approval::Deny("not today".into()))
        .await
        .unwrap();
    finished(&store, &denied).await;
    assert_eq!(
        std::fs::read_to_string(&marker).unwrap(),
        "ran\n",
        "the denied command did not run"
    );
}
