//! The `shell` tool: output, exit codes, time limits, process cleanup, environment.

#![cfg(target_os = "linux")] // process checks read /proc
#![allow(clippy::unwrap_used, clippy::expect_used)] // fixtures fail the test loudly by design

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use pocket_agent::{Risk, SharedTool, Tool, ToolContext, ToolError};
use pocket_tools::{Shell, ShellConfig, ToolsConfig, Workspace, builtin};
use serde_json::json;
use support::call;
use tempfile::TempDir;

fn shell(dir: &TempDir) -> SharedTool {
    Shell::new(Workspace::open(dir.path()).unwrap()).into_dyn()
}

/// Whether process `pid` is gone (or a zombie nobody has reaped yet), waiting up to 3 s.
fn gone(pid: &str) -> bool {
    let stat = Path::new("/proc").join(pid.trim()).join("stat");
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        match std::fs::read_to_string(&stat) {
            Err(_) => return true,
            // The state follows the parenthesized command name.
            Ok(s)
                if s.rsplit(')')
                    .next()
                    .is_some_and(|r| r.trim_start().starts_with('Z')) =>
            {
                return true;
            }
            Ok(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    false
}

#[tokio::test]
async fn captures_stdout_stderr_and_exit_code() {
    let dir = TempDir::new().unwrap();
    let out = call(
        &shell(&dir),
        json!({ "command": "echo hello; echo oops >&2; exit 3" }),
    )
    .await
    .unwrap();
    assert_eq!(
        out,
        json!({ "exit_code": 3, "stdout": "hello\n", "stderr": "oops\n", "truncated": false })
    );
}

#[tokio::test]
async fn runs_in_the_workspace() {
    let dir = TempDir::new().unwrap();
    let out = call(
        &shell(&dir),
        json!({ "command": "pwd; echo hi > made.txt" }),
    )
    .await
    .unwrap();
    let canonical = std::fs::canonicalize(dir.path()).unwrap();
    assert_eq!(out["stdout"], format!("{}\n", canonical.display()));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("made.txt")).unwrap(),
        "hi\n"
    );
}

#[tokio::test]
async fn output_is_truncated_at_the_limit() {
    let dir = TempDir::new().unwrap();
    let tool = Shell::new(Workspace::open(dir.path()).unwrap())
        .with_max_output_bytes(1000)
        .into_dyn();
    let out = call(
        &tool,
        json!({ "command": "head -c 100000 /dev/zero | tr '\\0' a; echo done >&2" }),
    )
    .await
    .unwrap();
    assert_eq!(out["exit_code"], 0);
    assert_eq!(out["truncated"], true);
    assert_eq!(out["stdout"].as_str().unwrap(), "a".repeat(1000));
    assert_eq!(out["stderr"], "done\n");
}

#[tokio::test]
async fn time_limit_kills_the_command_and_its_children() {
    let dir = TempDir::new().unwrap();
    let tool = Shell::new(Workspace::open(dir.path()).unwrap())
        .with_timeout(Duration::from_millis(500))
        .into_dyn();
    let err = call(
        &tool,
        json!({ "command": "sleep 30 & echo $! > bg.pid; echo $$ > sh.pid; wait; touch finished" }),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, ToolError::Timeout { after } if after == Duration::from_millis(500)),
        "{err:?}"
    );
    let sh = std::fs::read_to_string(dir.path().join("sh.pid")).unwrap();
    let bg = std::fs::read_to_string(dir.path().join("bg.pid")).unwrap();
    assert!(gone(&sh), "sh {sh} still runs");
    assert!(gone(&bg), "background sleep {bg} still runs");
    assert!(!dir.path().join("finished").exists());
}

#[tokio::test]
async fn background_processes_do_not_hold_the_call_open() {
    let dir = TempDir::new().unwrap();
    // Had the call waited for the background job, the job would have written `finished`.
    let out = call(
        &shell(&dir),
        json!({ "command": "(sleep 30; touch finished) & echo $! > bg.pid; echo started" }),
    )
    .await
    .unwrap();
    assert_eq!(out["stdout"], "started\n");
    assert!(
        !dir.path().join("finished").exists(),
        "the call waited for the background job"
    );
    let bg = std::fs::read_to_string(dir.path().join("bg.pid")).unwrap();
    assert!(gone(&bg), "background sleep {bg} outlived the command");
}

#[tokio::test]
async fn cancellation_kills_the_command() {
    let dir = TempDir::new().unwrap();
    let tool = shell(&dir);
    let ctx = ToolContext::detached();
    let cancel = ctx.cancel.clone();
    let canceller = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        cancel.cancel();
    });
    let err = tool
        .call(json!({ "command": "echo $$ > sh.pid; sleep 30" }), &ctx)
        .await
        .unwrap_err();
    canceller.await.unwrap();
    assert!(matches!(err, ToolError::Cancelled), "{err:?}");
    let sh = std::fs::read_to_string(dir.path().join("sh.pid")).unwrap();
    assert!(gone(&sh), "sh {sh} still runs");
}

#[tokio::test]
async fn environment_does_not_leak() {
    // Cargo sets this for the test process; the command must not see it.
    let parent = std::env::var("CARGO_MANIFEST_DIR").unwrap();
    assert!(!parent.is_empty());
    let dir = TempDir::new().unwrap();
    let out = call(
        &shell(&dir),
        json!({ "command": "echo \"[${CARGO_MANIFEST_DIR:-unset}]\"; echo \"$PATH\"; env | cut -d= -f1 | sort" }),
    )
    .await
    .unwrap();
    let stdout = out["stdout"].as_str().unwrap();
    let mut lines = stdout.lines();
    assert_eq!(lines.next(), Some("[unset]"));
    assert_eq!(lines.next(), std::env::var("PATH").ok().as_deref());
    // What sh itself adds (PWD, OLDPWD, SHLVL, _) is fine; nothing else may appear.
    let allowed = ["PATH", "HOME", "LANG", "PWD", "OLDPWD", "SHLVL", "_"];
    for name in lines {
        assert!(
            allowed.contains(&name),
            "`{name}` leaked into the command's environment"
        );
    }
}

#[test]
fn builtin_uses_the_config_and_is_dangerous() {
    let dir = TempDir::new().unwrap();
    let config = ToolsConfig {
        shell: ShellConfig {
            workspace: Some(dir.path().join("sh-ws")),
            timeout_secs: 7,
            ..ShellConfig::default()
        },
        ..ToolsConfig::default()
    };
    let tool = builtin("shell", &config).unwrap().remove(0);
    assert!(dir.path().join("sh-ws").is_dir());
    assert_eq!(tool.spec().name, "shell");
    assert_eq!(tool.spec().risk, Risk::Dangerous);
    assert!(!tool.spec().idempotent);
    // The agent's limit sits a little above the tool's own, which fires first.
    assert_eq!(tool.spec().timeout, Some(Duration::from_secs(12)));
}
