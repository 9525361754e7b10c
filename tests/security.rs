//! Security properties of the real binary, end to end: the API refuses every route without a
//! key (routes read from pocket-server's router source, so a new route is covered the day it
//! is added), secrets stay out of logs and error bodies, the file tools stay in their
//! workspace, `http_fetch` refuses other schemes and private hosts and keeps its limits, and
//! the shell never runs without a person's approval.
//!
//! Where a test needs a model that asks for a specific tool call (a `file://` URL, say), a
//! scripted OpenAI-compatible provider on 127.0.0.1 plays the model; everything else is the
//! real `pocket` binary over real HTTP.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const API_KEY: &str = "pk-api-SECRET-aaaa1111";
const WRONG_KEY: &str = "pk-wrong-SECRET-cccc3333";
const PROVIDER_KEY: &str = "sk-provider-SECRET-bbbb2222";
const DB_PASSWORD: &str = "db-SECRET-dddd4444";

fn pocket() -> Command {
    let mut cmd = Command::new(assert_cmd::cargo::cargo_bin("pocket"));
    cmd.env_remove("POCKET_CONFIG")
        .env_remove("OPENAI_API_KEY")
        .env_remove("OPENAI_BASE_URL")
        .env_remove("ANTHROPIC_API_KEY")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null());
    cmd
}

/// A port on 127.0.0.1 that nothing listens on.
fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Served {
    child: Child,
    base: String,
}

impl Served {
    /// Starts `pocket serve` on a free port; stderr goes to `stderr_file`.
    fn start(mut cmd: Command, stderr_file: &Path) -> Self {
        let mut child = cmd
            .args(["--listen", "127.0.0.1:0"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut copy = std::fs::File::create(stderr_file).unwrap();
        let base = common::serve_address(&mut child, move |line| {
            let _ = writeln!(copy, "{line}");
        });
        Self { child, base }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// SIGTERM and wait.
    fn stop(mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ------------------------------------------------------------------ routes and keys

/// `(method, path)` of every route in pocket-server's router, read from its source.
fn routes_from_source() -> Vec<(String, String)> {
    let src = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("crates/pocket-server/src/lib.rs"),
    )
    .unwrap();
    let mut routes = Vec::new();
    for line in src.lines() {
        let line = line.trim();
        let Some(rest) = line.strip_prefix(".route(\"") else {
            continue;
        };
        let (path, handlers) = rest.split_once('"').unwrap();
        for method in ["get", "post", "delete", "put", "patch"] {
            let called = handlers
                .match_indices(&format!("{method}("))
                .any(|(i, _)| i == 0 || !handlers.as_bytes()[i - 1].is_ascii_alphanumeric());
            if called {
                routes.push((method.to_uppercase(), path.to_owned()));
            }
        }
    }
    assert!(
        routes.len() >= 12,
        "found only {routes:?} in the router source"
    );
    routes
}

/// Routes open by design: the probes, and the dashboard's sign-in and sign-out (they take a
/// key and set or clear a cookie; they show no data).
const OPEN: [(&str, &str); 4] = [
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("POST", "/v1/session"),
    ("POST", "/v1/session/logout"),
];

#[tokio::test(flavor = "multi_thread")]
async fn every_route_but_the_probes_and_sign_in_needs_a_key() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = pocket();
    cmd.arg("serve")
        .arg("--store")
        .arg(format!("sqlite://{}", dir.path().join("p.db").display()))
        .env("POCKET_API_KEYS", API_KEY)
        .env("POCKET_LOG", "warn");
    let log = dir.path().join("stderr.log");
    let served = tokio::task::spawn_blocking(move || Served::start(cmd, &log))
        .await
        .unwrap();
    let http = reqwest::Client::new();
    let routes = routes_from_source();
    let mut checked = Vec::new();
    for (method, path) in &routes {
        let path = path.replace("{id}", "01a2107a-2125-7233-9cfa-c2d36e5bad90");
        let open = OPEN.iter().any(|(m, p)| m == method && *p == path);
        for key in [None, Some(WRONG_KEY), Some("")] {
            let mut req = http.request(method.parse().unwrap(), served.url(&path));
            if method == "POST" {
                req = req.json(&json!({"task": "x", "decision": "approve"}));
            }
            if let Some(key) = key {
                req = req.bearer_auth(key);
            }
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            let text = resp.text().await.unwrap();
            assert!(!text.contains(WRONG_KEY), "{method} {path} echoed the key");
            if open {
                // Open by design: the probes answer; sign-in judges the key it is given.
                assert!(
                    status < 500 || path == "/readyz",
                    "{method} {path}: {status}"
                );
                continue;
            }
            assert_eq!(
                status, 401,
                "{method} {path} with key {key:?} answered {status}: {text}"
            );
            // `/` answers a sign-in page (HTML); the API answers the JSON error shape.
            if path != "/" {
                let body: Value = serde_json::from_str(&text).unwrap();
                assert_eq!(body["error"]["type"], "unauthorized", "{method} {path}");
            }
        }
        checked.push(format!("{method} {path}"));
    }
    // A key in the query string or a Basic header is not a key.
    for req in [
        http.get(served.url(&format!("/v1/cluster?key={API_KEY}"))),
        http.get(served.url("/v1/cluster"))
            .basic_auth(API_KEY, None::<&str>),
        http.get(served.url("/v1/cluster"))
            .header("authorization", format!("bearer{API_KEY}")),
    ] {
        assert_eq!(req.send().await.unwrap().status(), 401);
    }
    // The right key opens them (one is enough to show the 401s were about the key).
    let ok = http
        .get(served.url("/v1/cluster"))
        .bearer_auth(API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(
        http.get(served.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert!(
        checked.iter().any(|r| r == "GET /"),
        "the dashboard route is covered: {checked:?}"
    );
    served.stop();
}

// ------------------------------------------------------------------ secrets

fn all_text_under(dir: &Path) -> String {
    let mut text = String::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            text.push_str(&all_text_under(&path));
        } else if path.extension().is_some_and(|e| e != "db") {
            let mut bytes = Vec::new();
            std::fs::File::open(&path)
                .unwrap()
                .read_to_end(&mut bytes)
                .unwrap();
            text.push_str(&String::from_utf8_lossy(&bytes));
        }
    }
    text
}

fn assert_no_secret(what: &str, text: &str) {
    for secret in [API_KEY, WRONG_KEY, PROVIDER_KEY, DB_PASSWORD] {
        assert!(
            !text.contains(secret),
            "{what} holds the secret {secret}:\n{text}"
        );
    }
}

/// A config whose only model is an OpenAI-compatible provider on a closed local port, its
/// key in `POCKET_TEST_PROVIDER_KEY`; few retries and no breaker, so that runs fail quickly.
fn provider_config(dir: &Path) -> PathBuf {
    let path = dir.join("pocket.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[models.remote]
provider = "openai"
model = "gpt-test"
base_url = "http://127.0.0.1:{port}/v1"
api_key_env = "POCKET_TEST_PROVIDER_KEY"
timeout_secs = 5

[agents.default]
model = "remote"

[resilience.retry]
max_attempts = 2
base_delay_ms = 10

[resilience.protected]
max_run_retries = 0

# An open breaker makes a run wait out its cool-down for a route; not what this test is about.
[resilience.breaker]
enabled = false

[cluster]
poll_interval_ms = 20
retry_base_secs = 0.05
retry_max_secs = 0.1
"#,
            port = closed_port()
        ),
    )
    .unwrap();
    path
}

#[tokio::test(flavor = "multi_thread")]
async fn secrets_never_reach_logs_or_error_bodies() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = provider_config(dir.path());
    let logs = dir.path().join("logs");
    let mut cmd = pocket();
    cmd.arg("serve")
        .arg("--config")
        .arg(&cfg)
        .arg("--log-dir")
        .arg(&logs)
        .arg("--store")
        .arg(format!("sqlite://{}", dir.path().join("p.db").display()))
        .env("POCKET_API_KEYS", format!("{API_KEY},second-key"))
        .env("POCKET_TEST_PROVIDER_KEY", PROVIDER_KEY)
        .env("POCKET_LOG", "debug");
    let stderr_file = logs.join("stderr.txt");
    std::fs::create_dir_all(&logs).unwrap();
    let served = tokio::task::spawn_blocking({
        let f = stderr_file.clone();
        move || Served::start(cmd, &f)
    })
    .await
    .unwrap();
    let http = reqwest::Client::new();
    let mut bodies = String::new();

    // A task whose model cannot be reached fails; its error names the failure, not the key.
    let created: Value = http
        .post(served.url("/v1/tasks"))
        .bearer_auth(API_KEY)
        .json(&json!({"task": "say hello"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["id"].as_str().unwrap().to_owned();
    let started = Instant::now();
    let view = loop {
        let text = http
            .get(served.url(&format!("/v1/tasks/{id}")))
            .bearer_auth(API_KEY)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let view: Value = serde_json::from_str(&text).unwrap();
        if view["status"] == "failed" {
            bodies.push_str(&text);
            break view;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the task did not fail: {view}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        view["error"].as_str().unwrap().contains("connect"),
        "the error says what failed: {view}"
    );

    // A chat completion through the same model fails with an error body.
    let chat = http
        .post(served.url("/v1/chat/completions"))
        .bearer_auth(API_KEY)
        .json(&json!({"model": "default", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert!(!chat.status().is_success(), "the model is unreachable");
    bodies.push_str(&chat.text().await.unwrap());

    // Error bodies of refused keys, and every report.
    for path in ["/v1/tasks", "/v1/cluster"] {
        bodies.push_str(
            &http
                .get(served.url(path))
                .bearer_auth(WRONG_KEY)
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap(),
        );
    }
    for path in [
        "/v1/health",
        "/v1/cluster",
        "/metrics",
        "/v1/models",
        "/v1/approvals",
        "/v1/monitor",
    ] {
        bodies.push_str(
            &http
                .get(served.url(path))
                .bearer_auth(API_KEY)
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap(),
        );
    }
    served.stop();
    assert_no_secret("an HTTP body", &bodies);
    let logged = all_text_under(&logs);
    assert!(
        logged.contains("pocket serve on"),
        "stderr was captured: {logged}"
    );
    assert!(
        logged.to_lowercase().contains("connect"),
        "the logs record the failed model calls"
    );
    assert_no_secret("the logs of pocket serve", &logged);

    // `pocket run` against the same unreachable provider.
    let out = pocket()
        .args(["run", "--config"])
        .arg(&cfg)
        .arg("say hello")
        .env("POCKET_TEST_PROVIDER_KEY", PROVIDER_KEY)
        .env("POCKET_LOG", "debug")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "the task failed");
    assert_no_secret(
        "pocket run's output",
        &format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    );
}

/// A store URL's password is not printed when the store cannot be opened.
#[test]
fn a_store_password_is_not_printed() {
    let url = format!(
        "postgres://pocket:{DB_PASSWORD}@127.0.0.1:{}/pocket",
        closed_port()
    );
    let out = pocket()
        .args(["worker", "--store", &url])
        .env("POCKET_LOG", "debug")
        .output()
        .unwrap();
    assert!(!out.status.success(), "no store, no worker");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("127.0.0.1"),
        "the error names the store: {text}"
    );
    assert_no_secret("pocket worker's output", &text);
}

// ------------------------------------------------------------------ file tools

fn run_json(args: &[&str], config: &Path) -> Value {
    let out = pocket()
        .arg("run")
        .arg("--config")
        .arg(config)
        .args(args)
        .arg("--json")
        .env("POCKET_LOG", "error")
        .output()
        .unwrap();
    json_of(&out)
}

fn json_of(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// The errors of a run's tool calls, one per call.
fn tool_errors(run: &Value) -> Vec<String> {
    run["tool_calls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["error"].as_str().unwrap_or("").to_owned())
        .collect()
}

#[test]
fn file_tools_refuse_traversal_and_symlinks_out_of_the_workspace() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let ws = root.join("ws");
    std::fs::create_dir_all(ws.join("inner")).unwrap();
    std::fs::write(root.join("outside.txt"), "TOPSECRET").unwrap();
    std::os::unix::fs::symlink(root, ws.join("link")).unwrap();
    std::os::unix::fs::symlink(root.join("outside.txt"), ws.join("alias.txt")).unwrap();
    let cfg = root.join("pocket.toml");
    std::fs::write(
        &cfg,
        format!(
            "[tools.files]\nworkspace = {:?}\n",
            ws.display().to_string()
        ),
    )
    .unwrap();
    let outside = root.join("outside.txt").display().to_string();
    for task in [
        "read_file '../outside.txt'".to_owned(),
        "read_file 'inner/../../outside.txt'".to_owned(),
        "read_file 'link/outside.txt'".to_owned(),
        "read_file 'alias.txt'".to_owned(),
        format!("read_file '{outside}'"),
        "write_file 'link/planted.txt'".to_owned(),
        "write_file '../planted.txt'".to_owned(),
        "write_file 'alias.txt'".to_owned(),
        "list_files 'link'".to_owned(),
    ] {
        let run = run_json(&["--tool", "files", &task], &cfg);
        let errors = tool_errors(&run);
        assert!(!errors.is_empty(), "{task}: a tool was called: {run}");
        for e in &errors {
            assert!(e.contains("outside the workspace"), "{task}: {e}");
        }
        assert!(!run.to_string().contains("TOPSECRET"), "{task}: {run}");
    }
    assert!(
        !root.join("planted.txt").exists(),
        "nothing written outside"
    );
    assert_eq!(
        std::fs::read_to_string(root.join("outside.txt")).unwrap(),
        "TOPSECRET",
        "the symlinked file is unchanged"
    );
    // Inside the workspace the same tools work.
    let run = run_json(&["--tool", "files", "write_file 'inner/ok.txt'"], &cfg);
    assert_eq!(tool_errors(&run), vec![String::new()], "{run}");
    assert!(ws.join("inner/ok.txt").exists());
}

// ------------------------------------------------------------------ http_fetch

/// An OpenAI-compatible provider that asks for `calls` (tool name, arguments) in its first
/// answer and then answers "done".
fn scripted_provider(calls: Vec<(&'static str, Value)>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}/v1", listener.local_addr().unwrap());
    let turn = Arc::new(Mutex::new(0u32));
    let calls = Arc::new(calls);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let turn = Arc::clone(&turn);
            let calls = Arc::clone(&calls);
            std::thread::spawn(move || {
                let _ = read_request(&mut stream);
                let n = {
                    let mut t = turn.lock().unwrap();
                    *t += 1;
                    *t
                };
                let message = if n == 1 {
                    let tool_calls: Vec<Value> = calls
                        .iter()
                        .enumerate()
                        .map(|(i, (name, args))| {
                            json!({"id": format!("call_{i}"), "type": "function",
                                   "function": {"name": name, "arguments": args.to_string()}})
                        })
                        .collect();
                    json!({"role": "assistant", "content": null, "tool_calls": tool_calls})
                } else {
                    json!({"role": "assistant", "content": "done"})
                };
                let body = json!({
                    "id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": "fake",
                    "choices": [{"index": 0, "message": message,
                                 "finish_reason": if n == 1 { "tool_calls" } else { "stop" }}],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
                })
                .to_string();
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
            });
        }
    });
    base
}

/// Reads one HTTP request (head and Content-Length body); returns the path.
fn read_request(stream: &mut std::net::TcpStream) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk).unwrap_or(0);
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                break;
            }
        }
    }
    let head = String::from_utf8_lossy(&buf);
    head.split_whitespace().nth(1).unwrap_or("/").to_owned()
}

/// A local HTTP server: `/big` answers 3 MiB, `/slow` never answers; returns its base URL.
fn target_server() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            std::thread::spawn(move || {
                let path = read_request(&mut stream);
                if path == "/slow" {
                    std::thread::sleep(Duration::from_secs(30));
                    return;
                }
                let body = vec![b'x'; 3 << 20];
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(&body);
            });
        }
    });
    base
}

#[test]
fn http_fetch_refuses_other_schemes_and_private_hosts() {
    let target = target_server();
    let provider = scripted_provider(vec![
        ("http_fetch", json!({"url": "file:///etc/passwd"})),
        ("http_fetch", json!({"url": "ftp://127.0.0.1/x"})),
        ("http_fetch", json!({"url": "gopher://127.0.0.1:70/"})),
        ("http_fetch", json!({"url": "data:text/plain,hello"})),
        ("http_fetch", json!({"url": format!("{target}/big")})),
        ("http_fetch", json!({"url": "http://[::1]/"})),
        (
            "http_fetch",
            json!({"url": "http://169.254.169.254/latest/meta-data/"}),
        ),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("pocket.toml");
    std::fs::write(&cfg, "[resilience.retry]\nmax_attempts = 1\n").unwrap();
    let out = pocket()
        .args(["run", "--config"])
        .arg(&cfg)
        .args([
            "--model",
            "openai:fake",
            "--tool",
            "http_fetch",
            "--json",
            "fetch",
        ])
        .env("OPENAI_BASE_URL", &provider)
        .env("OPENAI_API_KEY", "unused")
        .env("POCKET_LOG", "error")
        .output()
        .unwrap();
    let run = json_of(&out);
    let errors = tool_errors(&run);
    assert_eq!(errors.len(), 7, "{run}");
    for e in &errors[..4] {
        assert!(e.contains("is not allowed; use http or https"), "{e}");
    }
    for e in &errors[4..] {
        assert!(e.starts_with("denied"), "private hosts are refused: {e}");
    }
    assert!(!run.to_string().contains("root:"), "{run}");
}

#[test]
fn http_fetch_keeps_its_size_and_time_limits() {
    let target = target_server();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("pocket.toml");
    std::fs::write(
        &cfg,
        "[tools.http_fetch]\nallow_private = true\nmax_bytes = 4096\ntimeout_secs = 1\n\
         [resilience.tools.http_fetch.retry]\nmax_attempts = 1\n",
    )
    .unwrap();
    // Size: 3 MiB offered, 4 KiB returned, marked truncated.
    let run = run_json(
        &["--tool", "http_fetch", &format!("fetch {target}/big")],
        &cfg,
    );
    assert_eq!(tool_errors(&run), vec![String::new()], "{run}");
    let answer = run["answer"].as_str().unwrap();
    let result: Value = serde_json::from_str(answer.trim_start_matches("http_fetch returned: "))
        .unwrap_or_else(|e| panic!("{e}: {answer}"));
    assert_eq!(result["truncated"], true, "{result}");
    assert!(result["body"].as_str().unwrap().len() <= 4096, "{result}");

    // Time: a server that never answers is given up on with a timeout error.
    let run = run_json(
        &["--tool", "http_fetch", &format!("fetch {target}/slow")],
        &cfg,
    );
    let errors = tool_errors(&run);
    assert_eq!(errors.len(), 1, "{run}");
    assert!(
        errors[0].contains("timed out") || errors[0].contains("timeout"),
        "{errors:?}"
    );
}

// ------------------------------------------------------------------ shell

#[test]
fn shell_never_runs_without_approval() {
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().join("ws");
    std::fs::create_dir_all(&ws).unwrap();
    let cfg = dir.path().join("pocket.toml");
    // Even with non-dangerous failures allowed, a dangerous tool is denied when nobody can
    // be asked.
    std::fs::write(
        &cfg,
        format!(
            "[tools.files]\nworkspace = {:?}\n[agents.default]\ntools = [\"shell\"]\n\
             [agents.default.approval]\non_failure = \"allow\"\n",
            ws.display().to_string()
        ),
    )
    .unwrap();
    let run = run_json(&["shell 'touch marker'"], &cfg);
    let errors = tool_errors(&run);
    assert_eq!(errors.len(), 1, "{run}");
    assert!(errors[0].starts_with("denied"), "{errors:?}");
    assert!(!ws.join("marker").exists(), "the command never ran");
}

#[tokio::test(flavor = "multi_thread")]
async fn shell_waits_for_a_person_under_serve_and_a_denial_keeps_it_from_running() {
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().join("ws");
    std::fs::create_dir_all(&ws).unwrap();
    let cfg = dir.path().join("pocket.toml");
    std::fs::write(
        &cfg,
        format!(
            "[tools.files]\nworkspace = {:?}\n[agents.default]\ntools = [\"shell\"]\n\
             [cluster]\npoll_interval_ms = 20\n",
            ws.display().to_string()
        ),
    )
    .unwrap();
    let mut cmd = pocket();
    cmd.arg("serve")
        .arg("--config")
        .arg(&cfg)
        .arg("--store")
        .arg(format!("sqlite://{}", dir.path().join("p.db").display()))
        .env("POCKET_API_KEYS", API_KEY)
        .env("POCKET_LOG", "warn");
    let log = dir.path().join("stderr.log");
    let served = tokio::task::spawn_blocking(move || Served::start(cmd, &log))
        .await
        .unwrap();
    let http = reqwest::Client::new();
    let created: Value = http
        .post(served.url("/v1/tasks"))
        .bearer_auth(API_KEY)
        .json(&json!({"task": "shell 'touch marker'"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["id"].as_str().unwrap().to_owned();
    let get = |path: String| {
        let http = http.clone();
        let url = served.url(&path);
        async move {
            http.get(url)
                .bearer_auth(API_KEY)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    let started = Instant::now();
    let approval = loop {
        let pending = get("/v1/approvals".into()).await;
        let list = pending
            .as_array()
            .or_else(|| pending["approvals"].as_array())
            .cloned()
            .unwrap_or_default();
        if let Some(a) = list.first() {
            break a.clone();
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no approval request"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        get(format!("/v1/tasks/{id}")).await["status"],
        "waiting_approval"
    );
    assert!(!ws.join("marker").exists(), "nothing runs while it waits");
    let denied = http
        .post(served.url(&format!(
            "/v1/approvals/{}",
            approval["id"].as_str().unwrap()
        )))
        .bearer_auth(API_KEY)
        .json(&json!({"decision": "deny", "reason": "not today"}))
        .send()
        .await
        .unwrap();
    assert!(denied.status().is_success(), "{}", denied.status());
    let started = Instant::now();
    let view = loop {
        let view = get(format!("/v1/tasks/{id}")).await;
        if matches!(view["status"].as_str(), Some("succeeded" | "failed")) {
            break view;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "{view}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(view.to_string().contains("not today"), "{view}");
    assert!(!ws.join("marker").exists(), "a denied command never runs");
    served.stop();
}
