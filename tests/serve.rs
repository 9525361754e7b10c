//! `pocket serve` end to end: the real binary on a real port, with a real SQLite store.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

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

/// Starts `pocket serve` on a free port and reads its address from the status line.
fn serve(dir: &std::path::Path) -> Served {
    let mut cmd = Command::new(assert_cmd::cargo::cargo_bin("pocket"));
    cmd.args([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--tool",
        "calculator",
        "--store",
    ])
    .arg(format!("sqlite://{}", dir.join("pocket.db").display()))
    .env("POCKET_API_KEYS", "key-one, key-two");
    start(cmd, Arc::default())
}

/// Starts a `pocket serve` command; its stderr lines go to `log`.
fn start(mut cmd: Command, log: Arc<Mutex<Vec<String>>>) -> Served {
    let mut child = cmd
        .env_remove("POCKET_CONFIG")
        .env("POCKET_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let base = common::serve_address(&mut child, move |line| {
        log.lock().unwrap().push(line.to_owned());
    });
    Served { child, base }
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_answers_tasks_and_chat_behind_a_key() {
    let dir = tempfile::tempdir().unwrap();
    let served = tokio::task::spawn_blocking({
        let dir = dir.path().to_owned();
        move || serve(&dir)
    })
    .await
    .unwrap();
    let http = reqwest::Client::new();
    let url = |path: &str| format!("{}{path}", served.base);

    assert_eq!(
        http.get(url("/healthz")).send().await.unwrap().status(),
        200
    );
    let denied = http
        .post(url("/v1/tasks"))
        .json(&json!({"task": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), 401);
    let body: Value = denied.json().await.unwrap();
    assert_eq!(body["error"]["type"], "unauthorized");

    let created = http
        .post(url("/v1/tasks"))
        .bearer_auth("key-two")
        .json(&json!({"task": "What is 12 * 12?"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 202);
    let id = created.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let started = Instant::now();
    let task = loop {
        let task: Value = http
            .get(url(&format!("/v1/tasks/{id}")))
            .bearer_auth("key-one")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if task["status"] == "succeeded" || task["status"] == "failed" {
            break task;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "task stuck: {task}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(task["status"], "succeeded", "{task}");
    assert_eq!(task["result"]["answer"], "12 * 12 = 144");

    let chat: Value = http
        .post(url("/v1/chat/completions"))
        .bearer_auth("key-one")
        .json(&json!({"model": "default", "messages": [{"role": "user", "content": "What is 7 * 6?"}]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(chat["object"], "chat.completion");
    assert_eq!(chat["choices"][0]["message"]["content"], "7 * 6 = 42");

    let metrics = http
        .get(url("/metrics"))
        .bearer_auth("key-one")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("pocket_runs_total"), "{metrics}");
    // The cluster's runs feed the model and tool counters too, not only the run counter.
    assert!(metrics.contains("pocket_model_calls_total{"), "{metrics}");
    assert!(
        metrics.contains("pocket_tool_calls_total{") && metrics.contains("calculator"),
        "{metrics}"
    );

    // The CLI client against the same server.
    let base = served.base.clone();
    tokio::task::spawn_blocking(move || {
        let client = |key: &str| {
            let mut cmd = assert_cmd::Command::cargo_bin("pocket").unwrap();
            cmd.env("POCKET_API_KEY", key)
                .env("POCKET_SERVER", &base)
                .env_remove("POCKET_API_KEYS");
            cmd
        };
        client("key-one")
            .args(["submit", "--wait", "What is 3 * 3?"])
            .assert()
            .success()
            .stdout("3 * 3 = 9\n");
        let id = client("key-one")
            .args(["submit", "What is 2 + 5?"])
            .assert()
            .success()
            .get_output()
            .stdout
            .clone();
        let id = String::from_utf8(id).unwrap().trim().to_owned();
        assert!(!id.is_empty());
        client("key-one")
            .args(["status", &id])
            .assert()
            .success()
            .stdout(predicates::str::contains(format!("\"id\": \"{id}\"")));
        client("key-one")
            .args(["status"])
            .assert()
            .success()
            .stdout(predicates::str::contains("\"instances\""));
        client("key-one")
            .arg("approvals")
            .assert()
            .success()
            .stdout("no pending approvals\n");
        client("key-one")
            .args(["approve", "no-such-request"])
            .assert()
            .code(1)
            .stderr(predicates::str::contains("404"));
        client("wrong-key")
            .args(["submit", "x"])
            .assert()
            .code(2)
            .stderr(predicates::str::contains("401"));
    })
    .await
    .unwrap();

    // SIGTERM: drain and exit 0.
    let mut served = served;
    Command::new("kill")
        .arg("-TERM")
        .arg(served.child.id().to_string())
        .status()
        .unwrap();
    let status = tokio::task::spawn_blocking(move || served.child.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success(), "{status}");
}

#[test]
fn serve_without_api_keys_refuses_to_start() {
    assert_cmd::Command::cargo_bin("pocket")
        .unwrap()
        .args(["serve", "--listen", "127.0.0.1:0", "--store", "memory:"])
        .env_remove("POCKET_API_KEYS")
        .env_remove("POCKET_CONFIG")
        .assert()
        .code(2)
        .stderr(predicates::str::contains("POCKET_API_KEYS is not set"));
}

/// `[server]` takes effect (listen address, key variable, body and time limits, CORS), and
/// SIGINT with runs in flight stops accepting, leaves the runs to the store (not failed, not
/// run), and exits 0.
#[tokio::test(flavor = "multi_thread")]
async fn server_settings_take_effect_and_sigint_keeps_in_flight_runs() {
    let dir = tempfile::tempdir().unwrap();
    let workspace = dir.path().join("ws");
    std::fs::create_dir(&workspace).unwrap();
    let db = dir.path().join("pocket.db");
    let config = dir.path().join("pocket.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[server]
listen = "127.0.0.1:0"
api_keys_env = "POCKET_TEST_SERVER_KEYS"
body_limit_bytes = 2048
request_timeout_secs = 1
cors_origins = ["https://ops.example.com"]
shutdown_grace_secs = 5

[store]
url = "sqlite://{}"

[cluster]
shutdown_grace_secs = 0.5

[tools.shell]
workspace = {:?}

[agents.default]
tools = ["calculator", "shell"]
"#,
            db.display(),
            workspace.display().to_string()
        ),
    )
    .unwrap();
    let log: Arc<Mutex<Vec<String>>> = Arc::default();
    let served = tokio::task::spawn_blocking({
        let log = log.clone();
        move || {
            let mut cmd = Command::new(assert_cmd::cargo::cargo_bin("pocket"));
            cmd.arg("serve")
                .arg("--config")
                .arg(&config)
                .env("POCKET_TEST_SERVER_KEYS", "cfg-key")
                .env_remove("POCKET_API_KEYS");
            start(cmd, log)
        }
    })
    .await
    .unwrap();
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let url = |path: &str| format!("{}{path}", served.base);

    // The body limit: 413 with the JSON error.
    let big = http
        .post(url("/v1/tasks"))
        .bearer_auth("cfg-key")
        .json(&json!({"task": "x".repeat(4096)}))
        .send()
        .await
        .unwrap();
    assert_eq!(big.status(), 413);
    let body: Value = big.json().await.unwrap();
    assert!(body["error"]["message"].is_string(), "{body}");

    // CORS: a preflight from the allowed origin is answered, another origin gets nothing.
    let preflight = |origin: &'static str| {
        http.request(reqwest::Method::OPTIONS, url("/v1/tasks"))
            .header("Origin", origin)
            .header("Access-Control-Request-Method", "POST")
            .header(
                "Access-Control-Request-Headers",
                "authorization,content-type",
            )
            .send()
    };
    let allowed = preflight("https://ops.example.com").await.unwrap();
    assert!(allowed.status().is_success(), "{}", allowed.status());
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "https://ops.example.com"
    );
    let other = preflight("https://evil.example").await.unwrap();
    assert!(!other.headers().contains_key("access-control-allow-origin"));

    // The request time limit: a chat completion whose task waits for an approval gets 504.
    let marker = workspace.join("ran");
    let dangerous = format!("Use the shell to run `touch {}`", marker.display());
    let chat = http
        .post(url("/v1/chat/completions"))
        .bearer_auth("cfg-key")
        .json(&json!({"model": "default", "messages": [{"role": "user", "content": dangerous}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(chat.status(), 504);

    // A task in flight, waiting for a person, when SIGINT comes.
    let created = http
        .post(url("/v1/tasks"))
        .bearer_auth("cfg-key")
        .json(&json!({"task": dangerous}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 202);
    let id = created.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let started = Instant::now();
    loop {
        let task: Value = http
            .get(url(&format!("/v1/tasks/{id}")))
            .bearer_auth("cfg-key")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if task["status"] == "waiting_approval" {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "never waited: {task}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let mut served = served;
    Command::new("kill")
        .arg("-INT")
        .arg(served.child.id().to_string())
        .status()
        .unwrap();
    let status = tokio::task::spawn_blocking(move || served.child.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success(), "{status}: {:?}", log.lock().unwrap());
    let stopped = log
        .lock()
        .unwrap()
        .iter()
        .find(|l| l.starts_with("pocket serve stopped"))
        .cloned()
        .unwrap_or_default();
    // The runs waiting for approval outlived the cluster's grace period.
    assert!(
        stopped.contains("interrupted: ") && !stopped.contains("interrupted: 0"),
        "{stopped}"
    );
    assert!(!marker.exists(), "an unapproved command ran");

    // The run is the store's again, not lost and not failed: another worker resumes it.
    let store = pocket_cluster::open(
        &format!("sqlite://{}", db.display()),
        pocket_cluster::ClusterConfig::default().store_options(),
    )
    .await
    .unwrap();
    let task = store
        .get(&pocket_cluster::TaskId(id.clone()))
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(
            task.status,
            pocket_cluster::TaskStatus::Queued | pocket_cluster::TaskStatus::WaitingApproval
        ),
        "{:?}",
        task.status
    );
}
