//! A task waiting for approval survives restarts of `pocket serve` (the real binary, one
//! SQLite file): a graceful stop (SIGTERM) and a crash (SIGKILL, the lease then runs out).
//! The request stays pending under the same id, the resumed run asks again and waits, and
//! once approved over the API the task completes with its tool run exactly once.

#![allow(clippy::unwrap_used, clippy::expect_used)]
#![cfg(unix)]

mod common;

use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const KEY: &str = "restart-key";

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

impl Served {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn signal(&mut self, signal: &str) -> ExitStatus {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill {signal}");
        self.child.wait().unwrap()
    }
}

/// Starts `pocket serve` on a free port over `dir`'s store and config.
fn serve(dir: &Path) -> Served {
    let mut child = Command::new(assert_cmd::cargo::cargo_bin("pocket"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--tool",
            "shell",
            "--config",
        ])
        .arg(dir.join("pocket.toml"))
        .arg("--store")
        .arg(format!("sqlite://{}", dir.join("pocket.db").display()))
        .env("POCKET_API_KEYS", KEY)
        .env_remove("POCKET_CONFIG")
        .env("POCKET_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let base = common::serve_address(&mut child, |_| {});
    Served { child, base }
}

async fn start(dir: &Path) -> Served {
    let dir = dir.to_owned();
    tokio::task::spawn_blocking(move || serve(&dir))
        .await
        .unwrap()
}

/// A client that keeps no idle connection, so a graceful stop has none to wait for.
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
}

async fn get(http: &reqwest::Client, served: &Served, path: &str) -> Value {
    http.get(served.url(path))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Polls until `check` accepts what `path` returns (at most 30 s).
async fn until(
    http: &reqwest::Client,
    served: &Served,
    path: &str,
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> Value {
    let started = Instant::now();
    loop {
        let body = get(http, served, path).await;
        if check(&body) {
            return body;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "never saw {what}; last: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The one pending approval, once listed.
async fn pending(http: &reqwest::Client, served: &Served) -> Value {
    let list = until(http, served, "/v1/approvals", "one pending approval", |b| {
        b["approvals"].as_array().is_some_and(|a| a.len() == 1)
    })
    .await;
    list["approvals"][0].clone()
}

async fn status_is(http: &reqwest::Client, served: &Served, id: &str, status: &str) -> Value {
    until(http, served, &format!("/v1/tasks/{id}"), status, |t| {
        t["status"] == status
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_task_waiting_for_approval_survives_restarts_and_runs_its_tool_once() {
    let dir = tempfile::tempdir().unwrap();
    let workspace = dir.path().join("ws");
    std::fs::write(
        dir.path().join("pocket.toml"),
        format!(
            "[cluster]\nlease_secs = 2.0\nheartbeat_secs = 0.25\nshutdown_grace_secs = 0.2\n\
             poll_interval_ms = 50\n\n[tools.shell]\nworkspace = {:?}\n",
            workspace.display().to_string()
        ),
    )
    .unwrap();
    let marker = workspace.join("marker");
    let http = client();

    // 1. Submitted; the run asks for approval of its shell call and waits.
    let mut first = start(dir.path()).await;
    let created = http
        .post(first.url("/v1/tasks"))
        .bearer_auth(KEY)
        .json(&json!({"task": "Use the shell: 'echo ran >> marker'"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 202);
    let id = created.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let asked = pending(&http, &first).await;
    assert_eq!(asked["run_id"], id.as_str());
    assert_eq!(asked["tool"], "shell");
    assert_eq!(asked["arguments"], json!({"command": "echo ran >> marker"}));
    let approval = asked["id"].as_str().unwrap().to_owned();
    status_is(&http, &first, &id, "waiting_approval").await;

    // 2. A graceful stop: the run is interrupted, its lease released; the request stays.
    let status = first.signal("-TERM");
    assert!(status.success(), "pocket serve exited with {status}");
    assert!(!marker.exists(), "the tool has not run");

    // 3. Started again: still pending under the same id; the resumed run waits again.
    let mut second = start(dir.path()).await;
    assert_eq!(pending(&http, &second).await, asked);
    let view = status_is(&http, &second, &id, "waiting_approval").await;
    assert_eq!(view["attempts"], 2, "resumed by a second attempt");

    // 4. A crash: nothing is released; the lease runs out and the next server takes over.
    second.signal("-KILL");
    let third = start(dir.path()).await;
    assert_eq!(pending(&http, &third).await, asked);
    until(
        &http,
        &third,
        &format!("/v1/tasks/{id}"),
        "the third attempt waiting",
        |t| t["status"] == "waiting_approval" && t["attempts"] == 3,
    )
    .await;
    assert!(!marker.exists(), "the tool has not run");

    // 5. Approved over the API: the waiting run goes on and the task completes.
    let resp = http
        .post(third.url(&format!("/v1/approvals/{approval}")))
        .bearer_auth(KEY)
        .json(&json!({"decision": "approve"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let done = until(
        &http,
        &third,
        &format!("/v1/tasks/{id}"),
        "the task finished",
        |t| ["succeeded", "failed"].contains(&t["status"].as_str().unwrap_or("")),
    )
    .await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["attempts"], 3);
    let answer = done["result"]["answer"].as_str().unwrap();
    assert!(answer.starts_with("shell returned:"), "{answer}");
    assert_eq!(
        std::fs::read_to_string(&marker).unwrap(),
        "ran\n",
        "the tool ran exactly once"
    );
    assert_eq!(
        get(&http, &third, "/v1/approvals").await["approvals"],
        json!([])
    );
}
