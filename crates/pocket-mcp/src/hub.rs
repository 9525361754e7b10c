//! The hub: every configured server, its supervisor task, and tool selection by pattern.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use pocket_agent::SharedTool;
use tokio_util::sync::{CancellationToken, DropGuard};
use tokio_util::task::TaskTracker;

use crate::config::{McpConfig, StartMode};
use crate::error::McpError;
use crate::server::{Server, ServerStatus};
use crate::tool::McpTool;

/// The MCP servers of one configuration, each watched by a supervisor task.
///
/// A cheap-clone handle. Tools it gives out keep it alive; when the last handle and tool are
/// dropped, the servers are told to stop, but only [`McpHub::shutdown`] waits until their
/// processes are gone, so call it before exiting.
///
/// # Lifecycle
/// - **Start:** an `eager` server starts in [`McpHub::start`]; a `lazy` one (the default) on the
///   first [`McpHub::tools_matching`] that names it, since an agent needs tool specs when it
///   is built. Starting (spawn or connect, initialise, list tools) is bounded by
///   `init_timeout_secs`.
/// - **Crash:** when a server's connection ends (the process exits or is killed, the HTTP
///   session breaks), it is restarted after 0.5 s, 1 s, 2 s, ... up to
///   `restart_max_backoff_secs`; a connection that stayed up for that long (at least 10 s)
///   resets the backoff. Meanwhile its tools fail with a retryable
///   [`ToolError::Failed`](pocket_agent::ToolError::Failed) "MCP server `fs` is restarting
///   (attempt N)", so a run goes on and the model sees why.
/// - **List changed:** on the server's `notifications/tools/list_changed` the tool list is
///   read again. Tools are resolved by name at call time, so a tool the server dropped fails
///   clearly; new tools and new schemas reach an agent when it is built again with
///   [`McpHub::tools_matching`] (the agent compiles schemas once, at build time).
/// - **Shutdown:** [`McpHub::shutdown`] closes every connection (stdio: close stdin, wait,
///   SIGTERM, wait, kill the process group) and waits for the supervisors. Children are also
///   spawned with kill-on-drop, as a last resort.
///
/// # Errors of calls
/// | MCP outcome | [`ToolError`](pocket_agent::ToolError) |
/// |---|---|
/// | result with `isError: true` | `Failed { retryable: false }`, the result's text |
/// | JSON-RPC "invalid params" | `InvalidArguments` |
/// | other JSON-RPC error | `Failed { retryable: false }` |
/// | connection broken, server restarting | `Failed { retryable: true }` |
/// | `call_timeout_secs` passed | `Timeout` (the server is sent `notifications/cancelled`) |
/// | run cancelled | `Cancelled` |
#[derive(Clone)]
pub struct McpHub {
    inner: Arc<HubInner>,
}

pub(crate) struct HubInner {
    servers: BTreeMap<String, Arc<Server>>,
    cancel: CancellationToken,
    tracker: TaskTracker,
    _stop_on_drop: DropGuard,
}

impl McpHub {
    /// Validates the configuration, starts a supervisor per server, and starts the `eager`
    /// servers (concurrently). Must be called inside a tokio runtime.
    ///
    /// # Errors
    /// [`McpError::Config`] naming the key of the first invalid value (nothing is started
    /// then), or [`McpError::Start`] when an eager server fails to start (the others are
    /// shut down again).
    pub async fn start(config: McpConfig) -> Result<Self, McpError> {
        for (name, server) in &config {
            server.validate(name)?;
        }
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        let mut servers = BTreeMap::new();
        for (name, server_config) in config {
            let server = Server::new(&name, server_config);
            tracker.spawn(
                server
                    .clone()
                    .supervise(cancel.child_token(), tracker.clone()),
            );
            servers.insert(name, server);
        }
        tracker.close();
        let hub = Self {
            inner: Arc::new(HubInner {
                servers,
                _stop_on_drop: cancel.clone().drop_guard(),
                cancel,
                tracker,
            }),
        };
        let eager = hub
            .inner
            .servers
            .values()
            .filter(|s| s.config.start == StartMode::Eager)
            .map(|s| s.wait_listed());
        let started = futures_util::future::join_all(eager).await;
        if let Some(Err(e)) = started.into_iter().find(Result::is_err) {
            hub.shutdown().await;
            return Err(e);
        }
        Ok(hub)
    }

    /// The configured server names.
    pub fn server_names(&self) -> impl Iterator<Item = &str> {
        self.inner.servers.keys().map(String::as_str)
    }

    /// Whether a `tools = [...]` entry is for the hub: MCP tool patterns are `SERVER.TOOL` or
    /// `SERVER.*`, and built-in tool names have no `.`.
    pub fn is_pattern(entry: &str) -> bool {
        entry.contains('.')
    }

    /// The tools that match any of `patterns`, sorted by name, each once.
    ///
    /// A pattern is `SERVER.TOOL` (exactly that tool), or `SERVER.` followed by a glob where
    /// `*` matches any text (`fs.*`, `fs.read_*`). Servers not started yet are started (and
    /// this waits for their tool lists, bounded by `init_timeout_secs`); a server that was
    /// listed once answers with its last list even while it restarts.
    ///
    /// # Errors
    /// [`McpError::InvalidPattern`], [`McpError::UnknownServer`], [`McpError::UnknownTool`]
    /// for a plain name the server does not offer, [`McpError::Start`] when a server never
    /// started, [`McpError::Shutdown`] after [`McpHub::shutdown`].
    pub async fn tools_matching<S: AsRef<str>>(
        &self,
        patterns: &[S],
    ) -> Result<Vec<SharedTool>, McpError> {
        let mut wanted: Vec<(&Arc<Server>, &str)> = Vec::with_capacity(patterns.len());
        for pattern in patterns {
            let pattern = pattern.as_ref();
            let (server, tool) = match pattern.split_once('.') {
                Some((s, t)) if !s.is_empty() && !t.is_empty() => (s, t),
                _ => {
                    return Err(McpError::InvalidPattern {
                        pattern: pattern.to_owned(),
                    });
                }
            };
            let Some(found) = self.inner.servers.get(server) else {
                return Err(McpError::UnknownServer {
                    pattern: pattern.to_owned(),
                    server: server.to_owned(),
                    known: self.server_names().map(str::to_owned).collect(),
                });
            };
            wanted.push((found, tool));
        }
        let needed: BTreeMap<&str, &Arc<Server>> =
            wanted.iter().map(|(s, _)| (&*s.name, *s)).collect();
        let listed = futures_util::future::join_all(needed.values().map(|s| s.wait_listed())).await;
        let mut lists = BTreeMap::new();
        for (name, list) in needed.keys().zip(listed) {
            lists.insert(*name, list?);
        }

        let mut chosen: BTreeMap<String, SharedTool> = BTreeMap::new();
        for (server, pattern) in wanted {
            let list = &lists[&*server.name];
            let mut matched = 0;
            for (name, info) in list.iter() {
                if !glob_match(pattern, name) {
                    continue;
                }
                matched += 1;
                let full = format!("{}.{name}", server.name);
                chosen.entry(full).or_insert_with(|| {
                    Arc::new(McpTool::new(self.inner.clone(), server.clone(), info))
                });
            }
            if matched == 0 {
                if !pattern.contains('*') {
                    return Err(McpError::UnknownTool {
                        server: server.name.to_string(),
                        tool: pattern.to_owned(),
                        available: list.keys().cloned().collect(),
                    });
                }
                tracing::warn!(
                    server = %server.name,
                    pattern,
                    "the MCP tool pattern matches no tool"
                );
            }
        }
        Ok(chosen.into_values().collect())
    }

    /// Every server's status, by name.
    pub fn status(&self) -> Vec<ServerStatus> {
        self.inner.servers.values().map(|s| s.status()).collect()
    }

    /// One server's status.
    pub fn server_status(&self, name: &str) -> Option<ServerStatus> {
        self.inner.servers.get(name).map(|s| s.status())
    }

    /// Closes every server and waits until their processes have exited and every task of the
    /// hub has ended. Tools fail with "shut down" afterwards. Calling it again is harmless.
    pub async fn shutdown(&self) {
        self.inner.cancel.cancel();
        self.inner.tracker.wait().await;
    }
}

impl std::fmt::Debug for McpHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("McpHub")
            .field(
                "servers",
                &self.inner.servers.keys().collect::<BTreeSet<_>>(),
            )
            .finish_non_exhaustive()
    }
}

/// `*` matches any text (also none); everything else matches itself.
fn glob_match(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let Some(first) = parts.next() else {
        return text.is_empty();
    };
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        // No `*`: the whole text must have been the prefix.
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("*", "read_file"));
        assert!(glob_match("read_file", "read_file"));
        assert!(!glob_match("read_file", "read_files"));
        assert!(glob_match("read_*", "read_file"));
        assert!(glob_match("read_*", "read_"));
        assert!(!glob_match("read_*", "write_file"));
        assert!(glob_match("*_file", "write_file"));
        assert!(glob_match("r*d*e", "read_file"));
        assert!(!glob_match("r*x*e", "read_file"));
        assert!(!glob_match("ab*ba", "aba"));
    }

    #[test]
    fn entries_with_a_dot_are_patterns() {
        assert!(McpHub::is_pattern("fs.*"));
        assert!(McpHub::is_pattern("everything.echo"));
        assert!(!McpHub::is_pattern("calculator"));
    }

    #[tokio::test]
    async fn patterns_name_known_servers() {
        let mut config = McpConfig::new();
        config.insert(
            "fs".into(),
            crate::McpServerConfig::stdio("/nonexistent/mcp-server", ["x"]),
        );
        let hub = McpHub::start(config)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let e = hub
            .tools_matching(&["fz.*"])
            .await
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            e.as_deref(),
            Some("no MCP server `fz` for `fz.*` in [mcp] (configured: fs)")
        );
        let e = hub
            .tools_matching(&["fs"])
            .await
            .err()
            .map(|e| e.to_string());
        assert!(e.is_some_and(|e| e.contains("not an MCP tool pattern")));
        // A server whose program does not exist fails to start, naming it.
        let e = hub
            .tools_matching(&["fs.*"])
            .await
            .err()
            .map(|e| e.to_string());
        assert!(
            e.as_deref().is_some_and(|e| e.starts_with(
                "MCP server `fs` failed to start: cannot run `/nonexistent/mcp-server`"
            )),
            "{e:?}"
        );
        hub.shutdown().await;
        let e = hub.tools_matching(&["fs.*"]).await.err();
        assert!(e.is_some());
    }
}
