//! Finding the npm-installed test servers, skipping with a reason when they are missing, and
//! bounded polling.

#![allow(dead_code)] // each test binary uses a part

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use pocket_mcp::{McpConfig, McpServerConfig};

/// Where `package.json` pins the test servers.
pub(crate) fn servers_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/servers")
}

/// Says why a test is skipped. Written to stderr directly, past the test harness's capture,
/// so that `cargo test` shows it even when the test passes.
pub(crate) fn skip(test: &str, why: &str) {
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {why}");
}

fn node_works() -> Result<(), String> {
    match std::process::Command::new("node").arg("--version").output() {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(format!("`node --version` failed ({})", out.status)),
        Err(e) => Err(format!("node is not installed ({e})")),
    }
}

/// The path of an installed server's program (`node_modules/.bin/NAME`, or a script in
/// `tests/servers`), or `None` after saying why the test is skipped.
pub(crate) fn require(test: &str, program: &str) -> Option<PathBuf> {
    if let Err(why) = node_works() {
        skip(
            test,
            &format!("{why}; the MCP test servers need node and npm"),
        );
        return None;
    }
    let dir = servers_dir();
    let path = if program.ends_with(".mjs") {
        dir.join(program)
    } else {
        dir.join("node_modules/.bin").join(program)
    };
    if !path.exists() || !dir.join("node_modules/@modelcontextprotocol/sdk").exists() {
        skip(
            test,
            &format!(
                "{} is not installed; run `npm ci --prefix crates/pocket-mcp/tests/servers`",
                path.display()
            ),
        );
        return None;
    }
    Some(path)
}

/// A stdio server config running `program` (a bin or a `.mjs` script) with `args`.
pub(crate) fn stdio(program: &Path, args: &[&str]) -> McpServerConfig {
    if program.extension().is_some_and(|e| e == "mjs") {
        let mut all = vec![program.display().to_string()];
        all.extend(args.iter().map(|a| (*a).to_owned()));
        McpServerConfig::stdio("node", all)
    } else {
        McpServerConfig::stdio(program.display().to_string(), args.iter().copied())
    }
}

/// A one-server config.
pub(crate) fn one(name: &str, server: McpServerConfig) -> McpConfig {
    let mut config = McpConfig::new();
    config.insert(name.to_owned(), server);
    config
}

/// Polls `check` every 50 ms until it holds; fails after `deadline`.
pub(crate) async fn eventually(what: &str, deadline: Duration, mut check: impl FnMut() -> bool) {
    let until = tokio::time::Instant::now() + deadline;
    while !check() {
        assert!(
            tokio::time::Instant::now() < until,
            "{what}: not within {deadline:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether a process with this id is still alive (or an unreaped zombie).
pub(crate) fn process_exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// SIGKILLs a process.
pub(crate) fn kill(pid: u32) {
    let status = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -9 {pid} failed");
}

/// A fresh temporary directory whose path has no digits: `sim` takes numeric arguments from
/// the first number in the task, and a path in the task must not supply one.
pub(crate) fn tempdir_without_digits(test: &str) -> tempfile::TempDir {
    let tag: String = std::process::id()
        .to_string()
        .bytes()
        .map(|b| char::from(b'a' + (b - b'0')))
        .collect();
    let dir = tempfile::Builder::new()
        .prefix(&format!("pocket-mcp-{test}-{tag}"))
        .rand_bytes(0)
        .tempdir()
        .expect("create a temporary directory");
    assert!(
        !dir.path()
            .to_string_lossy()
            .bytes()
            .any(|b| b.is_ascii_digit()),
        "{}",
        dir.path().display()
    );
    dir
}
