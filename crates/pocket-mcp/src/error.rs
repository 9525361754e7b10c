//! Errors of configuring, starting and selecting MCP servers and tools.
//!
//! Errors of *calling* a tool are [`pocket_agent::ToolError`]s, since the agent shows them to
//! the model; see [`McpHub`](crate::McpHub) for how MCP failures map onto them.

/// Why the hub could not be started or could not give tools.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum McpError {
    /// A configuration value is wrong; `key` is its path (`mcp.fs.url`).
    #[error("{key}: {message}")]
    Config {
        /// The key's path.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// A tool pattern is not `SERVER.TOOL` or `SERVER.*`.
    #[error("`{pattern}` is not an MCP tool pattern: write `SERVER.TOOL` or `SERVER.*`")]
    InvalidPattern {
        /// The pattern.
        pattern: String,
    },
    /// A tool pattern names a server that is not configured.
    #[error("no MCP server `{server}` for `{pattern}` in [mcp] (configured: {})", list(.known))]
    UnknownServer {
        /// The pattern.
        pattern: String,
        /// The server it names.
        server: String,
        /// The configured servers.
        known: Vec<String>,
    },
    /// A pattern names one tool that the server does not offer.
    #[error("MCP server `{server}` has no tool `{tool}` (it offers: {})", list(.available))]
    UnknownTool {
        /// The server.
        server: String,
        /// The tool asked for.
        tool: String,
        /// The tools it offers.
        available: Vec<String>,
    },
    /// A server could not be started (spawned or reached, initialised, its tools listed).
    #[error("MCP server `{server}` failed to start: {message}")]
    Start {
        /// The server.
        server: String,
        /// What failed.
        message: String,
    },
    /// The hub was shut down.
    #[error("the MCP hub is shut down")]
    Shutdown,
}

impl McpError {
    pub(crate) fn config(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Config {
            key: key.into(),
            message: message.into(),
        }
    }

    /// The configuration key this error is about, for errors that name one.
    pub fn config_key(&self) -> Option<&str> {
        match self {
            Self::Config { key, .. } => Some(key),
            _ => None,
        }
    }
}

fn list(names: &[String]) -> String {
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}
