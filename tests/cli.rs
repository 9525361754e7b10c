//! The `pocket` binary: answers, JSON output, exit codes, config errors, approval without a
//! terminal, and a real OpenAI-compatible HTTP round trip.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};

use assert_cmd::Command;
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use predicates::prelude::*;
use serde_json::{Value, json};

fn pocket() -> Command {
    let mut cmd = Command::cargo_bin("pocket").unwrap();
    cmd.env_remove("POCKET_CONFIG")
        .env_remove("OPENAI_API_KEY")
        .env_remove("OPENAI_BASE_URL")
        .env_remove("ANTHROPIC_API_KEY")
        .env_remove("RUST_LOG")
        .env_remove("POCKET_LOG");
    cmd
}

fn config(text: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    std::io::Write::write_all(&mut f, text.as_bytes()).unwrap();
    f
}

#[test]
fn sim_answers_with_the_calculator() {
    pocket()
        .args([
            "run",
            "--model",
            "sim",
            "--tool",
            "calculator",
            "What is 17 * 23?",
        ])
        .assert()
        .success()
        .stdout("17 * 23 = 391\n");
}

#[test]
fn json_output_has_answer_iterations_tool_calls_and_usage() {
    let out = pocket()
        .args(["run", "--json", "--tool", "calculator", "What is 2 ^ 10?"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["answer"], "2 ^ 10 = 1024");
    assert_eq!(v["iterations"], 2);
    assert_eq!(v["tool_calls"][0]["name"], "calculator");
    assert_eq!(
        v["tool_calls"][0]["arguments"],
        json!({"expression": "2 ^ 10"})
    );
    assert!(v["usage"]["input_tokens"].as_u64().unwrap() > 0);
}

/// A model that always fails, with resilience turned off (nothing retries or waits).
const BROKEN: &str = "[models.broken]\nprovider = \"sim\"\nfaults = { server_error = 1.0 }\n[resilience]\nenabled = false\n";

#[test]
fn a_failed_task_exits_1() {
    let cfg = config(BROKEN);
    pocket()
        .args(["run", "--config"])
        .arg(cfg.path())
        .args(["--model", "broken", "hi"])
        .assert()
        .code(1)
        .stderr(
            predicate::str::contains("the task failed").and(predicate::str::contains("HTTP 500")),
        );

    let out = pocket()
        .args(["run", "--json", "--config"])
        .arg(cfg.path())
        .args(["--model", "broken", "hi"])
        .assert()
        .code(1)
        .get_output()
        .stdout
        .clone();
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["error"]["kind"], "network");
    assert_eq!(v["error"]["retryable"], true);
    assert_eq!(v["error"]["attempts"], 1);
}

#[test]
fn resilience_retries_calls_and_runs_as_configured() {
    // A model that fails 60 % of calls: with retries the task is answered.
    let cfg = config(
        "[models.flaky]\nprovider = \"sim\"\nseed = 3\nfaults = { server_error = 0.6 }\n\
         [resilience.retry]\nbase_delay_ms = 1\nmax_attempts = 6\nbudget_min_per_sec = 100\n\
         [resilience.breaker]\nconsecutive_failures = 0\nfailure_rate = 1.0\n",
    );
    let out = pocket()
        .args(["run", "--json", "--tool", "calculator", "--config"])
        .arg(cfg.path())
        .args(["--model", "flaky", "What is 6 * 7?"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["answer"], "6 * 7 = 42");
    assert_eq!(v["path"], "primary");

    // Always failing: whole runs are retried, and the error says how many were made.
    let cfg = config(
        "[models.broken]\nprovider = \"sim\"\nfaults = { server_error = 1.0 }\n\
         [resilience.retry]\nbase_delay_ms = 1\nmax_attempts = 2\n\
         [resilience.breaker]\nconsecutive_failures = 0\nfailure_rate = 1.0\n\
         [resilience.protected]\nmax_run_retries = 2\nbase_delay_ms = 1\n",
    );
    let out = pocket()
        .args(["run", "--json", "--config"])
        .arg(cfg.path())
        .args(["--model", "broken", "hi"])
        .assert()
        .code(1)
        .get_output()
        .stdout
        .clone();
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["error"]["attempts"], 3);
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("failed after 3 attempt(s)")
    );
}

#[test]
fn usage_and_config_errors_exit_2_naming_the_problem() {
    pocket().args(["run"]).assert().code(2);
    pocket()
        .args(["run", "--tool", "calc", "x"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--tool").and(predicate::str::contains("calc")));
    pocket()
        .args(["run", "--model", "gpt-4", "x"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "--model: `gpt-4` is neither a model spec",
        ));
    pocket()
        .args(["run", "--model", "anthropic:claude", "x"])
        .assert()
        .code(2)
        .stderr(
            predicate::str::contains("ANTHROPIC_API_KEY")
                .and(predicate::str::contains("is not set")),
        );
    pocket()
        .args(["run", "--config", "/nonexistent/pocket.toml", "x"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "/nonexistent/pocket.toml: cannot read the file",
        ));
    pocket()
        .args(["run", "--agent", "ghost", "x"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("no agent named `ghost`"));
}

#[test]
fn config_typos_name_the_file_and_key() {
    let cfg = config("[agents.default]\nmax_iteratons = 3\n");
    let path = cfg.path().display().to_string();
    pocket()
        .args(["run", "--config", &path, "x"])
        .assert()
        .code(2)
        .stderr(
            predicate::str::contains(format!(
                "{path}: agents.default.max_iteratons: unknown field `max_iteratons`"
            ))
            .and(predicate::str::contains("line 2")),
        );
    let cfg = config("[agents.default]\ntools = [\"calculator\", \"shel\"]\n");
    pocket()
        .args(["run", "--config"])
        .arg(cfg.path())
        .arg("x")
        .assert()
        .code(2)
        .stderr(
            predicate::str::contains("agents.default.tools[1]")
                .and(predicate::str::contains("shel")),
        );
    let cfg = config(
        "[models.m]\nprovider = \"anthropic\"\nmodel = \"c\"\napi_key_env = \"POCKET_TEST_UNSET_KEY\"\n[agents.default]\nmodel = \"m\"\n",
    );
    pocket()
        .args(["run", "--config"])
        .arg(cfg.path())
        .arg("x")
        .assert()
        .code(2)
        .stderr(
            predicate::str::contains("agents.default.model")
                .and(predicate::str::contains("POCKET_TEST_UNSET_KEY")),
        );
}

#[test]
fn server_section_typos_and_bad_values_name_the_file_and_key() {
    let cfg = config("[server]\nlisten = \"127.0.0.1:0\"\nbody_limt_bytes = 1024\n");
    let path = cfg.path().display().to_string();
    pocket()
        .args(["serve", "--config", &path])
        .env("POCKET_API_KEYS", "k")
        .assert()
        .code(2)
        .stderr(
            predicate::str::contains(format!(
                "{path}: server.body_limt_bytes: unknown field `body_limt_bytes`"
            ))
            .and(predicate::str::contains("line 3")),
        );
    let cfg = config("[server]\ncors_origins = [\"https://ok.example\", \"ops.example.com\"]\n");
    pocket()
        .args(["serve", "--config"])
        .arg(cfg.path())
        .env("POCKET_API_KEYS", "k")
        .assert()
        .code(2)
        .stderr(
            predicate::str::contains("server.cors_origins")
                .and(predicate::str::contains("`ops.example.com`")),
        );
    // The keys come from the variable [server] names.
    let cfg = config("[server]\napi_keys_env = \"POCKET_TEST_UNSET_KEYS\"\n");
    pocket()
        .args([
            "serve",
            "--store",
            "memory:",
            "--listen",
            "127.0.0.1:0",
            "--config",
        ])
        .arg(cfg.path())
        .env("POCKET_API_KEYS", "k")
        .env_remove("POCKET_TEST_UNSET_KEYS")
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "POCKET_TEST_UNSET_KEYS is not set",
        ));
    let cfg = config("[server]\ndefault_agent = \"nobody\"\n[agents.math]\n");
    pocket()
        .args([
            "serve",
            "--store",
            "memory:",
            "--listen",
            "127.0.0.1:0",
            "--config",
        ])
        .arg(cfg.path())
        .env("POCKET_API_KEYS", "k")
        .assert()
        .code(2)
        .stderr(
            predicate::str::contains("server.default_agent")
                .and(predicate::str::contains("`nobody`")),
        );
}

#[test]
fn config_file_from_env_and_agent_selection() {
    let cfg = config("[agents.math]\ntools = [\"calculator\"]\nmax_iterations = 3\n");
    pocket()
        .env("POCKET_CONFIG", cfg.path())
        .args(["run", "--agent", "math", "What is 6 * 7?"])
        .assert()
        .success()
        .stdout("6 * 7 = 42\n");
}

#[test]
fn dangerous_tools_are_denied_without_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&format!(
        "[tools.shell]\nworkspace = {:?}\n",
        dir.path().display().to_string()
    ));
    let marker = dir.path().join("ran");
    pocket()
        .args(["run", "--config"])
        .arg(cfg.path())
        .args(["--tool", "shell"])
        .arg(format!("Use the shell to run `touch {}`", marker.display()))
        .write_stdin("")
        .assert()
        .success()
        .stdout(
            predicate::str::contains("shell failed: error: denied")
                .and(predicate::str::contains("not a TTY")),
        )
        .stderr(predicate::str::contains("asking for approval failed"));
    assert!(!marker.exists(), "the denied command must not run");
}

/// What the fake OpenAI-compatible server saw.
#[derive(Default)]
struct Seen {
    bodies: Vec<Value>,
    auth: Vec<Option<String>>,
}

/// Calls the calculator on the first turn, answers with the tool's result on the second.
async fn fake_openai(
    State(seen): State<Arc<Mutex<Seen>>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    let last = body["messages"]
        .as_array()
        .and_then(|m| m.last())
        .cloned()
        .unwrap_or_default();
    {
        let mut seen = seen.lock().unwrap();
        seen.auth.push(
            headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .map(String::from),
        );
        seen.bodies.push(body);
    }
    let message = if last["role"] == "tool" {
        json!({"role": "assistant", "content": format!("The answer is {}.", last["content"].as_str().unwrap_or("?"))})
    } else {
        json!({"role": "assistant", "content": null, "tool_calls": [{
            "id": "call_abc", "type": "function",
            "function": {"name": "calculator", "arguments": "{\"expression\":\"17 * 23\"}"}
        }]})
    };
    let reply = json!({
        "id": "x", "object": "chat.completion", "model": "test-model",
        "choices": [{"index": 0, "message": message, "finish_reason": if last["role"] == "tool" { "stop" } else { "tool_calls" }}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
    });
    (StatusCode::OK, Json(reply))
}

async fn unauthorized() -> (StatusCode, Json<Value>) {
    (
        StatusCode::UNAUTHORIZED,
        Json(
            json!({"error": {"message": "Incorrect API key provided", "type": "invalid_request_error"}}),
        ),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn openai_compatible_server_one_tool_round() {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let app = axum::Router::new()
        .route("/v1/chat/completions", post(fake_openai))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let out = tokio::task::spawn_blocking(move || {
        pocket()
            .env("OPENAI_BASE_URL", format!("http://{addr}/v1"))
            .env("OPENAI_API_KEY", "sk-test-key")
            .args([
                "run",
                "--model",
                "openai:test-model",
                "--tool",
                "calculator",
                "What is 17 * 23?",
            ])
            .assert()
            .success()
            .get_output()
            .stdout
            .clone()
    })
    .await
    .unwrap();
    server.abort();
    assert_eq!(String::from_utf8(out).unwrap(), "The answer is 391.\n");
    let seen = seen.lock().unwrap();
    assert_eq!(seen.bodies.len(), 2, "one tool round, then the answer");
    assert_eq!(seen.bodies[0]["model"], "test-model");
    assert_eq!(seen.bodies[0]["tools"][0]["function"]["name"], "calculator");
    assert_eq!(seen.auth[0].as_deref(), Some("Bearer sk-test-key"));
    let tool_msg = seen.bodies[1]["messages"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(tool_msg["role"], "tool");
    assert_eq!(tool_msg["tool_call_id"], "call_abc");
    assert_eq!(tool_msg["content"], "391");
}

#[tokio::test(flavor = "multi_thread")]
async fn auth_failure_exits_1_without_printing_the_key() {
    let app = axum::Router::new().route("/v1/chat/completions", post(unauthorized));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let output = tokio::task::spawn_blocking(move || {
        pocket()
            .env("OPENAI_BASE_URL", format!("http://{addr}/v1"))
            .env("OPENAI_API_KEY", "sk-very-secret-value")
            .env("POCKET_LOG", "debug")
            .args(["run", "--model", "openai:m", "hi"])
            .assert()
            .code(1)
            .get_output()
            .clone()
    })
    .await
    .unwrap();
    server.abort();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("authentication failed (HTTP 401): Incorrect API key provided"),
        "{stderr}"
    );
    assert!(stderr.contains("[auth, critical]"), "{stderr}");
    assert!(
        !stderr.contains("sk-very-secret-value"),
        "the key leaked: {stderr}"
    );
}

#[test]
fn an_mcp_pattern_without_its_server_is_a_config_error() {
    let cfg = config("[agents.default]\ntools = [\"fz.*\"]\n");
    pocket()
        .args(["run", "--config"])
        .arg(cfg.path())
        .arg("x")
        .assert()
        .code(2)
        .stderr(
            predicate::str::contains("agents.default.tools[0]").and(predicate::str::contains("fz")),
        );
}

#[test]
fn log_dir_gets_the_days_log_file() {
    let dir = tempfile::tempdir().unwrap();
    pocket()
        // The per-run lines are at debug.
        .env("POCKET_LOG", "debug")
        .args(["run", "--tool", "calculator", "--log-dir"])
        .arg(dir.path())
        .arg("What is 2 + 2?")
        .assert()
        .success()
        .stdout("2 + 2 = 4\n");
    let files: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let name = files[0].file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        name.starts_with("app_")
            && name.ends_with(".log")
            && name.len() == "app_YYYY-MM-DD.log".len(),
        "{name}"
    );
    let text = std::fs::read_to_string(&files[0]).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l["message"] == "run started" && l["agent"] == "default"),
        "{text}"
    );
    assert!(
        lines.iter().any(|l| l["message"] == "run finished"),
        "{text}"
    );
}

#[test]
fn worker_with_a_bad_store_url_exits_2() {
    pocket()
        .args(["worker", "--store", "bogus://x"])
        .assert()
        .code(2)
        .stderr(
            predicate::str::contains("--store bogus://x").and(predicate::str::contains("bogus")),
        );
}
