//! `[mcp.NAME]`: how to reach one MCP server, and how its tools behave in an agent.
//!
//! Parsing is serde's job (unknown keys are refused); [`McpServerConfig::validate`] then checks
//! what serde cannot, and its errors name the key (`mcp.fs: set either `command` or `url`,
//! not both`). Secrets are given only by the name of the environment variable that holds
//! them (`env_from`, `headers_from_env`, `bearer_token_env`) and are never logged.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use pocket_agent::Risk;
use serde::{Deserialize, Serialize};

use crate::error::McpError;

/// Every `[mcp.NAME]` table, by server name. The server name prefixes its tools (`NAME.tool`).
pub type McpConfig = BTreeMap<String, McpServerConfig>;

/// When a server is started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StartMode {
    /// On the first [`McpHub::tools_matching`](crate::McpHub::tools_matching) that names it
    /// (the agent needs the tool list when it is built). The default.
    #[default]
    Lazy,
    /// When the hub starts; [`McpHub::start`](crate::McpHub::start) fails if it cannot.
    Eager,
}

/// One `[mcp.NAME]` table: a stdio server (`command`) or a streamable HTTP server (`url`).
///
/// ```toml
/// [mcp.fs]
/// command = "npx"
/// args = ["-y", "@modelcontextprotocol/server-filesystem", "/srv/data"]
/// tool_risk = { write_file = "dangerous" }
///
/// [mcp.search]
/// url = "https://mcp.example.com/mcp"
/// bearer_token_env = "SEARCH_TOKEN"
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct McpServerConfig {
    /// The program of a stdio server. Set this or `url`.
    pub command: Option<String>,
    /// Its arguments. Default: none.
    pub args: Vec<String>,
    /// Extra environment variables, literal values (not for secrets). Default: none.
    pub env: BTreeMap<String, String>,
    /// Extra environment variables copied from ours: child variable → our variable's name.
    /// For secrets. Default: none.
    pub env_from: BTreeMap<String, String>,
    /// Working directory of the child. Default: ours.
    pub cwd: Option<PathBuf>,
    /// The endpoint of a streamable HTTP server. Set this or `command`.
    pub url: Option<String>,
    /// HTTP headers from environment variables: header name → variable name. Default: none.
    pub headers_from_env: BTreeMap<String, String>,
    /// Environment variable holding a bearer token sent as `Authorization`. Default: none.
    pub bearer_token_env: Option<String>,
    /// When to start the server. Default: `lazy`.
    pub start: StartMode,
    /// Time limit of starting: spawn or connect, initialise, list the tools. Default: 30.
    pub init_timeout_secs: u64,
    /// Time limit of one tool call; it is also the tool's own limit in the agent. Default: 60.
    pub call_timeout_secs: u64,
    /// Risk of the server's tools, for approval and breakers. Default: `sensitive`.
    pub risk: Risk,
    /// Risk of single tools by their MCP name (`write_file = "dangerous"`). Default: none.
    pub tool_risk: BTreeMap<String, Risk>,
    /// Upper bound of the wait between restarts of a crashed server; waits start at 0.5 s
    /// and double. Default: 30.
    pub restart_max_backoff_secs: u64,
}

impl Default for McpServerConfig {
    /// Neither `command` nor `url` (not valid until one is set); every other key at its
    /// documented default.
    fn default() -> Self {
        Self {
            command: None,
            args: Vec::new(),
            env: BTreeMap::new(),
            env_from: BTreeMap::new(),
            cwd: None,
            url: None,
            headers_from_env: BTreeMap::new(),
            bearer_token_env: None,
            start: StartMode::Lazy,
            init_timeout_secs: 30,
            call_timeout_secs: 60,
            risk: Risk::Sensitive,
            tool_risk: BTreeMap::new(),
            restart_max_backoff_secs: 30,
        }
    }
}

impl McpServerConfig {
    /// A stdio server: `command` with `args`, every other key at its default.
    pub fn stdio<I, S>(command: impl Into<String>, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            command: Some(command.into()),
            args: args.into_iter().map(Into::into).collect(),
            ..Self::default()
        }
    }

    /// A streamable HTTP server at `url`, every other key at its default.
    pub fn http(url: impl Into<String>) -> Self {
        Self {
            url: Some(url.into()),
            ..Self::default()
        }
    }

    /// Time limit of starting.
    pub fn init_timeout(&self) -> Duration {
        Duration::from_secs(self.init_timeout_secs)
    }

    /// Time limit of one call.
    pub fn call_timeout(&self) -> Duration {
        Duration::from_secs(self.call_timeout_secs)
    }

    /// The risk of the tool with this MCP name.
    pub fn risk_of(&self, tool: &str) -> Risk {
        self.tool_risk.get(tool).copied().unwrap_or(self.risk)
    }

    /// Checks what serde cannot: one transport, keys that fit it, limits above zero, header
    /// names, and that every named environment variable is set (its value is not read into
    /// any message).
    ///
    /// # Errors
    /// [`McpError::Config`] naming the key (`mcp.NAME.KEY`).
    pub fn validate(&self, name: &str) -> Result<(), McpError> {
        let key = format!("mcp.{name}");
        let bad = |sub: &str, message: String| {
            let key = if sub.is_empty() {
                key.clone()
            } else {
                format!("{key}.{sub}")
            };
            Err(McpError::config(key, message))
        };
        if name.is_empty() || name.contains(['.', '*']) || name.chars().any(char::is_whitespace) {
            return bad(
                "",
                "a server name must be non-empty, without `.`, `*` or spaces (it prefixes \
                 its tools: `NAME.tool`)"
                    .into(),
            );
        }
        match (&self.command, &self.url) {
            (Some(_), Some(_)) => return bad("", "set either `command` or `url`, not both".into()),
            (None, None) => {
                return bad(
                    "",
                    "set `command` (a stdio server) or `url` (a streamable HTTP server)".into(),
                );
            }
            (Some(command), None) => {
                if command.trim().is_empty() {
                    return bad("command", "is empty".into());
                }
                if !self.headers_from_env.is_empty() {
                    return bad(
                        "headers_from_env",
                        "is for `url` servers; pass secrets to a `command` server with `env_from`"
                            .into(),
                    );
                }
                if self.bearer_token_env.is_some() {
                    return bad(
                        "bearer_token_env",
                        "is for `url` servers; pass secrets to a `command` server with `env_from`"
                            .into(),
                    );
                }
            }
            (None, Some(url)) => {
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    return bad("url", format!("`{url}` is not an http:// or https:// URL"));
                }
                for (sub, set) in [
                    ("args", !self.args.is_empty()),
                    ("env", !self.env.is_empty()),
                    ("env_from", !self.env_from.is_empty()),
                    ("cwd", self.cwd.is_some()),
                ] {
                    if set {
                        return bad(sub, "is for `command` servers, not `url` servers".into());
                    }
                }
            }
        }
        for (sub, secs) in [
            ("init_timeout_secs", self.init_timeout_secs),
            ("call_timeout_secs", self.call_timeout_secs),
            ("restart_max_backoff_secs", self.restart_max_backoff_secs),
        ] {
            if secs == 0 {
                return bad(sub, "must be greater than zero".into());
            }
        }
        for header in self.headers_from_env.keys() {
            if reqwest::header::HeaderName::from_bytes(header.as_bytes()).is_err() {
                return bad(
                    &format!("headers_from_env.{header}"),
                    format!("`{header}` is not a valid HTTP header name"),
                );
            }
        }
        let vars = self
            .env_from
            .iter()
            .map(|(k, v)| (format!("env_from.{k}"), v))
            .chain(
                self.headers_from_env
                    .iter()
                    .map(|(k, v)| (format!("headers_from_env.{k}"), v)),
            )
            .chain(
                self.bearer_token_env
                    .iter()
                    .map(|v| ("bearer_token_env".to_owned(), v)),
            );
        for (sub, var) in vars {
            if read_secret(var).is_err() {
                return bad(&sub, format!("environment variable `{var}` is not set"));
            }
        }
        Ok(())
    }
}

/// The value of a secret's variable; the error names the variable, never a value.
pub(crate) fn read_secret(var: &str) -> Result<String, String> {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => Ok(v),
        _ => Err(format!("environment variable `{var}` is not set")),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn parse(text: &str) -> McpConfig {
        toml::from_str(text).unwrap()
    }

    fn invalid(text: &str) -> String {
        let config = parse(text);
        let (name, server) = config.iter().next().unwrap();
        server.validate(name).unwrap_err().to_string()
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let c = parse("[fs]\ncommand = \"mcp-fs\"\n");
        let fs = &c["fs"];
        assert_eq!(fs.start, StartMode::Lazy);
        assert_eq!(fs.init_timeout(), Duration::from_secs(30));
        assert_eq!(fs.call_timeout(), Duration::from_secs(60));
        assert_eq!(fs.risk, Risk::Sensitive);
        assert_eq!(fs.restart_max_backoff_secs, 30);
        fs.validate("fs").unwrap();
    }

    #[test]
    fn a_full_stdio_and_http_config_parses() {
        let c = parse(
            r#"
            [fs]
            command = "npx"
            args = ["-y", "@modelcontextprotocol/server-filesystem", "/tmp"]
            env = { LOG = "1" }
            start = "eager"
            call_timeout_secs = 5
            tool_risk = { write_file = "dangerous", read_file = "safe" }

            [web]
            url = "https://example.com/mcp"
            risk = "safe"
            "#,
        );
        let fs = &c["fs"];
        assert_eq!(fs.start, StartMode::Eager);
        assert_eq!(fs.risk_of("write_file"), Risk::Dangerous);
        assert_eq!(fs.risk_of("read_file"), Risk::Safe);
        assert_eq!(fs.risk_of("list_directory"), Risk::Sensitive);
        fs.validate("fs").unwrap();
        c["web"].validate("web").unwrap();
    }

    #[test]
    fn unknown_keys_are_refused() {
        let e = toml::from_str::<McpConfig>("[fs]\ncomand = \"x\"\n").unwrap_err();
        assert!(e.to_string().contains("unknown field `comand`"), "{e}");
    }

    #[test]
    fn validation_names_the_key() {
        assert_eq!(
            invalid("[fs]\ncommand = \"a\"\nurl = \"http://x\"\n"),
            "mcp.fs: set either `command` or `url`, not both"
        );
        assert!(invalid("[fs]\nargs = [\"a\"]\n").starts_with("mcp.fs: set `command`"));
        assert_eq!(
            invalid("[web]\nurl = \"ftp://x\"\n"),
            "mcp.web.url: `ftp://x` is not an http:// or https:// URL"
        );
        assert_eq!(
            invalid("[web]\nurl = \"http://x\"\nargs = [\"a\"]\n"),
            "mcp.web.args: is for `command` servers, not `url` servers"
        );
        assert_eq!(
            invalid("[fs]\ncommand = \"a\"\ncall_timeout_secs = 0\n"),
            "mcp.fs.call_timeout_secs: must be greater than zero"
        );
        assert_eq!(
            invalid("[\"f.s\"]\ncommand = \"a\"\n").split(':').next(),
            Some("mcp.f.s")
        );
        assert_eq!(
            invalid("[web]\nurl = \"http://x\"\nheaders_from_env = { \"bad header\" = \"X\" }\n"),
            "mcp.web.headers_from_env.bad header: `bad header` is not a valid HTTP header name"
        );
    }

    #[test]
    fn missing_secret_variables_are_named_without_values() {
        let e = invalid(
            "[fs]\ncommand = \"a\"\nenv_from = { TOKEN = \"POCKET_MCP_TEST_SURELY_UNSET\" }\n",
        );
        assert_eq!(
            e,
            "mcp.fs.env_from.TOKEN: environment variable `POCKET_MCP_TEST_SURELY_UNSET` is not set"
        );
        let e = invalid(
            "[web]\nurl = \"http://x\"\nbearer_token_env = \"POCKET_MCP_TEST_SURELY_UNSET\"\n",
        );
        assert!(e.starts_with("mcp.web.bearer_token_env: "), "{e}");
    }
}
