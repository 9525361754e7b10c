//! A stdio server's stderr goes into `tracing`. A test binary of its own: a thread-local
//! subscriber misses events whose callsite other tests' threads hit first without one.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use pocket_mcp::McpHub;
use support::{eventually, one, require, stdio};

const DEADLINE: Duration = Duration::from_secs(60);

/// Collects formatted log lines.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

// Current-thread, so that the thread-local subscriber sees every task of the hub.
#[tokio::test(flavor = "current_thread")]
async fn the_servers_stderr_goes_into_tracing() {
    let Some(bin) = require("stderr", "mcp-server-filesystem") else {
        return;
    };
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    let hub = McpHub::start(one("fs", stdio(&bin, &[root.to_str().unwrap()])))
        .await
        .unwrap();
    hub.tools_matching(&["fs.*"]).await.unwrap();
    let logged = || String::from_utf8_lossy(&captured.0.lock().unwrap()).into_owned();
    eventually("the startup banner is logged", DEADLINE, || {
        logged().contains("Secure MCP Filesystem Server running on stdio")
    })
    .await;
    let line = logged()
        .lines()
        .find(|l| l.contains("Secure MCP Filesystem Server"))
        .unwrap()
        .to_owned();
    assert!(line.contains("pocket_mcp::stderr"), "{line}");
    assert!(line.contains("server=fs"), "{line}");
    hub.shutdown().await;
}
