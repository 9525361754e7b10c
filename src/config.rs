//! `pocket.toml`: parsed in two stages — raw TOML into these types (unknown keys and wrong
//! types are refused with the key's path), then checked against each other and the
//! environment (model names, tool names, secrets), so every error names the file and the key.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use pocket_agent::{ApprovalPolicy, InterruptedCalls, OnApprovalFailure, Risk};
use pocket_models::SimConfig;
use pocket_tools::ToolsConfig;
use serde::Deserialize;

/// The whole configuration file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Config {
    /// Named models, referred to by agents.
    #[serde(default)]
    pub(crate) models: BTreeMap<String, ModelConfig>,
    /// Named agents.
    #[serde(default)]
    pub(crate) agents: BTreeMap<String, AgentConfig>,
    /// Settings of the built-in tools.
    #[serde(default)]
    pub(crate) tools: ToolsConfig,
    /// Retries, breakers, fallbacks, protected agents.
    #[serde(default)]
    pub(crate) resilience: pocket_resilience::ResilienceConfig,
    /// The cluster: instances, leases, scaling.
    #[serde(default)]
    pub(crate) cluster: pocket_cluster::ClusterConfig,
    /// The task store.
    #[serde(default)]
    pub(crate) store: StoreConfig,
    /// Logs, metrics, alerts.
    #[serde(default)]
    pub(crate) monitoring: pocket_monitor::MonitorConfig,
    /// MCP tool servers, `[mcp.NAME]`.
    #[serde(default)]
    pub(crate) mcp: pocket_mcp::McpConfig,
    /// The HTTP API of `pocket serve`.
    #[serde(default)]
    pub(crate) server: ServerConfig,
    /// Where the file was read from (not a TOML key).
    #[serde(skip)]
    pub(crate) path: Option<PathBuf>,
}

/// One `[models.NAME]` table, tagged by `provider`.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "provider", rename_all = "snake_case", deny_unknown_fields)]
pub(crate) enum ModelConfig {
    /// An OpenAI-compatible server.
    Openai {
        /// The model id sent to the server.
        model: String,
        /// Default: `OPENAI_BASE_URL`, else `https://api.openai.com/v1`.
        base_url: Option<String>,
        /// Env var holding the API key. Default: `OPENAI_API_KEY` (optional for local servers).
        api_key_env: Option<String>,
        /// Time limit of one call. Default: 120.
        timeout_secs: Option<u64>,
    },
    /// The Anthropic Messages API.
    Anthropic {
        /// The model id.
        model: String,
        /// Default: `ANTHROPIC_BASE_URL`, else `https://api.anthropic.com`.
        base_url: Option<String>,
        /// Env var holding the API key. Default: `ANTHROPIC_API_KEY` (required).
        api_key_env: Option<String>,
        /// Upper bound of output tokens. Default: 4096.
        max_tokens: Option<u32>,
        /// Time limit of one call. Default: 120.
        timeout_secs: Option<u64>,
    },
    /// The offline `sim` model.
    Sim(SimConfig),
}

/// `[store]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct StoreConfig {
    /// `sqlite://FILE` (default `sqlite://pocket.db`), `postgres://...`, or `memory:`.
    pub(crate) url: String,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            url: "sqlite://pocket.db".into(),
        }
    }
}

/// `[server]`: the HTTP API of `pocket serve`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct ServerConfig {
    /// Address to listen on (`--listen` wins). Default: `127.0.0.1:7878`.
    pub(crate) listen: SocketAddr,
    /// The environment variable holding the API keys, comma-separated. Default:
    /// `POCKET_API_KEYS`.
    pub(crate) api_keys_env: String,
    /// Largest request body in bytes; beyond it, 413. Default: 1 MiB.
    pub(crate) body_limit_bytes: usize,
    /// Time limit for producing a response, in seconds; beyond it, 504. Streams, once
    /// started, are not limited. Default: 300.
    pub(crate) request_timeout_secs: f64,
    /// Origins a browser may call the API from (`https://ops.example.com`, or `*` for any).
    /// Default: none (no CORS headers: only same-origin pages, such as the dashboard).
    pub(crate) cors_origins: Vec<String>,
    /// After SIGINT or SIGTERM, how long open HTTP requests may take to finish before the
    /// server closes them, in seconds. In-flight runs get `[cluster] shutdown_grace_secs`.
    /// Default: 30.
    pub(crate) shutdown_grace_secs: f64,
    /// The agent of a task or chat request that names none. Default: `default`, or the first
    /// agent of `[agents]` when there is no `default`.
    pub(crate) default_agent: Option<String>,
    /// How long a dashboard sign-in lasts, in seconds. Default: 43200 (12 hours).
    pub(crate) session_ttl_secs: f64,
    /// Interval of the dashboard's live series, in seconds. Default: 5.
    pub(crate) live_interval_secs: f64,
    /// A non-streaming chat completion runs at once on a free instance of this server
    /// instead of as a queued task (queued when none is free): much less latency and CPU,
    /// but not durable (a crash loses it with the caller's connection). `false`: every
    /// completion is a durable task. Default: `true`.
    pub(crate) chat_direct: bool,
    /// How long a direct chat completion waits for a busy agent's slot before it is queued
    /// as a task, in milliseconds (0: queue at once). It does not wait while queued tasks
    /// wait for a slot. Default: 100.
    pub(crate) chat_direct_wait_ms: u64,
    /// Chat completions in flight at most (streams count until they end); beyond it, 429
    /// with `Retry-After`. Default: 1024.
    pub(crate) max_chat_in_flight: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 7878)),
            api_keys_env: "POCKET_API_KEYS".into(),
            body_limit_bytes: pocket_server::DEFAULT_BODY_LIMIT,
            request_timeout_secs: pocket_server::DEFAULT_REQUEST_TIMEOUT.as_secs_f64(),
            cors_origins: Vec::new(),
            shutdown_grace_secs: 30.0,
            default_agent: None,
            session_ttl_secs: pocket_server::DEFAULT_SESSION_TTL.as_secs_f64(),
            live_interval_secs: pocket_server::DEFAULT_LIVE_INTERVAL.as_secs_f64(),
            chat_direct: true,
            chat_direct_wait_ms: 100,
            max_chat_in_flight: pocket_server::DEFAULT_MAX_CHAT_IN_FLIGHT,
        }
    }
}

impl ServerConfig {
    /// The request time limit.
    pub(crate) fn request_timeout(&self) -> Duration {
        Duration::try_from_secs_f64(self.request_timeout_secs).unwrap_or(Duration::MAX)
    }

    /// The grace period of open HTTP requests at shutdown.
    pub(crate) fn shutdown_grace(&self) -> Duration {
        Duration::try_from_secs_f64(self.shutdown_grace_secs).unwrap_or(Duration::MAX)
    }

    /// How long a dashboard session lasts.
    pub(crate) fn session_ttl(&self) -> Duration {
        Duration::try_from_secs_f64(self.session_ttl_secs).unwrap_or(Duration::MAX)
    }

    /// The dashboard's live-series interval.
    pub(crate) fn live_interval(&self) -> Duration {
        Duration::try_from_secs_f64(self.live_interval_secs).unwrap_or(Duration::MAX)
    }

    /// Checks the values the types cannot; the error is `(key, message)`.
    pub(crate) fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.api_keys_env.trim().is_empty() {
            return Err(("api_keys_env", "must name an environment variable".into()));
        }
        if self.body_limit_bytes == 0 {
            return Err(("body_limit_bytes", "must be at least 1".into()));
        }
        if self.max_chat_in_flight == 0 {
            return Err(("max_chat_in_flight", "must be at least 1".into()));
        }
        for (key, value) in [
            ("request_timeout_secs", self.request_timeout_secs),
            ("session_ttl_secs", self.session_ttl_secs),
            ("live_interval_secs", self.live_interval_secs),
        ] {
            match Duration::try_from_secs_f64(value) {
                Ok(d) if !d.is_zero() => {}
                _ => {
                    return Err((
                        key,
                        format!("`{value}` is not a positive number of seconds"),
                    ));
                }
            }
        }
        if Duration::try_from_secs_f64(self.shutdown_grace_secs).is_err() {
            return Err((
                "shutdown_grace_secs",
                format!("`{}` is not a number of seconds", self.shutdown_grace_secs),
            ));
        }
        for origin in &self.cors_origins {
            pocket_server::check_origin(origin).map_err(|e| ("cors_origins", e.to_string()))?;
        }
        Ok(())
    }
}

/// One `[agents.NAME]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AgentConfig {
    /// A `[models]` name or a model spec (`sim`, `openai:MODEL`, `anthropic:MODEL`).
    #[serde(default = "default_model")]
    pub(crate) model: String,
    /// Built-in tools by name, and MCP tools by pattern (`fs.*`, `fs.read_text_file`).
    #[serde(default)]
    pub(crate) tools: Vec<String>,
    /// System prompt. Default: none.
    pub(crate) system_prompt: Option<String>,
    /// Model turns per run. Default: 10.
    #[serde(default = "default_max_iterations")]
    pub(crate) max_iterations: u32,
    /// Time limit of one tool call. Default: 60.
    #[serde(default = "default_tool_timeout")]
    pub(crate) tool_timeout_secs: u64,
    /// Time limit of one run. Default: none.
    pub(crate) run_timeout_secs: Option<u64>,
    /// Approval of risky tool calls.
    #[serde(default)]
    pub(crate) approval: ApprovalConfig,
    /// Capabilities this agent's instances offer to tasks that require them.
    #[serde(default)]
    pub(crate) capabilities: Vec<String>,
    /// On resuming a crashed run, what to do with a call of a non-idempotent tool that
    /// started but has no recorded result: `fail` (default) or `ask`.
    #[serde(default)]
    pub(crate) interrupted_calls: InterruptedCalls,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            model: default_model(),
            tools: Vec::new(),
            system_prompt: None,
            max_iterations: default_max_iterations(),
            tool_timeout_secs: default_tool_timeout(),
            run_timeout_secs: None,
            approval: ApprovalConfig::default(),
            capabilities: Vec::new(),
            interrupted_calls: InterruptedCalls::default(),
        }
    }
}

/// `[agents.NAME.approval]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct ApprovalConfig {
    /// Calls of tools at or above this risk need approval. Default: `dangerous`.
    pub(crate) required_from: Risk,
    /// How long to wait for a person. Default: 300.
    pub(crate) timeout_secs: u64,
    /// Non-dangerous calls when asking fails: `deny` (default) or `allow`.
    pub(crate) on_failure: OnApprovalFailure,
    /// Tool-name words that make a tool dangerous. Default: the seed's list.
    pub(crate) dangerous_names: Vec<String>,
}

impl Default for ApprovalConfig {
    fn default() -> Self {
        let p = ApprovalPolicy::default();
        Self {
            required_from: p.required_from,
            timeout_secs: p.timeout.as_secs(),
            on_failure: p.on_failure,
            dangerous_names: p.dangerous_names,
        }
    }
}

impl ApprovalConfig {
    pub(crate) fn policy(&self) -> ApprovalPolicy {
        ApprovalPolicy {
            required_from: self.required_from,
            timeout: Duration::from_secs(self.timeout_secs),
            dangerous_names: self.dangerous_names.clone(),
            on_failure: self.on_failure,
        }
    }
}

fn default_model() -> String {
    "sim".into()
}

fn default_max_iterations() -> u32 {
    10
}

fn default_tool_timeout() -> u64 {
    60
}

/// A configuration problem, naming where it is.
#[derive(Debug)]
pub(crate) struct ConfigError {
    /// The file, when the problem is in one.
    pub(crate) file: Option<PathBuf>,
    /// The key path (`agents.default.model`) or the flag (`--model`).
    pub(crate) key: String,
    /// What is wrong.
    pub(crate) message: String,
}

impl ConfigError {
    pub(crate) fn new(
        file: Option<&Path>,
        key: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            file: file.map(Path::to_path_buf),
            key: key.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(file) = &self.file {
            write!(f, "{}: ", file.display())?;
        }
        if !self.key.is_empty() {
            write!(f, "{}: ", self.key)?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Reads and parses a file.
    pub(crate) fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new(Some(path), "", format!("cannot read the file: {e}")))?;
        let mut config = Self::parse(&text).map_err(|mut e| {
            e.file = Some(path.to_path_buf());
            e
        })?;
        config
            .resilience
            .validate()
            .map_err(|e| ConfigError::new(Some(path), e.key, e.message))?;
        config.cluster.validate().map_err(|e| {
            ConfigError::new(Some(path), format!("cluster.{}", e.key), e.message.clone())
        })?;
        config.monitoring.validate().map_err(|e| {
            ConfigError::new(Some(path), format!("monitoring.{}", e.key), e.message)
        })?;
        config.server.validate().map_err(|(key, message)| {
            ConfigError::new(Some(path), format!("server.{key}"), message)
        })?;
        config.path = Some(path.to_path_buf());
        Ok(config)
    }

    /// Parses TOML text; errors name the key path.
    pub(crate) fn parse(text: &str) -> Result<Self, ConfigError> {
        let de = toml::Deserializer::parse(text)
            .map_err(|e| ConfigError::new(None, "", format!("invalid TOML: {}", e.message())))?;
        serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            let inner = e.into_inner();
            let mut message = inner.message().to_owned();
            if let Some(line) = inner.span().map(|s| line_of(text, s.start)) {
                message.push_str(&format!(" (line {line})"));
            }
            ConfigError::new(None, if key == "." { String::new() } else { key }, message)
        })
    }

    pub(crate) fn file(&self) -> Option<&Path> {
        self.path.as_deref()
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())]
        .bytes()
        .filter(|&b| b == b'\n')
        .count()
        + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        Config::parse(text).unwrap_err().to_string()
    }

    #[test]
    fn a_full_config_parses() {
        let c = Config::parse(
            r#"
            [models.local]
            provider = "openai"
            model = "qwen"
            base_url = "http://localhost:8000/v1"

            [models.flaky]
            provider = "sim"
            seed = 3
            faults = { rate_limit = 0.1 }

            [agents.default]
            model = "flaky"
            tools = ["calculator"]
            max_iterations = 4
            [agents.default.approval]
            required_from = "sensitive"
            "#,
        )
        .unwrap();
        assert!(matches!(&c.models["local"], ModelConfig::Openai { model, .. } if model == "qwen"));
        assert!(
            matches!(&c.models["flaky"], ModelConfig::Sim(s) if s.seed == 3 && s.faults.rate_limit == 0.1)
        );
        let a = &c.agents["default"];
        assert_eq!(a.max_iterations, 4);
        assert_eq!(a.approval.required_from, Risk::Sensitive);
        assert_eq!(a.tool_timeout_secs, 60);
    }

    #[test]
    fn unknown_keys_are_named_with_their_path() {
        let e = err("[agents.default]\nmodle = \"sim\"\n");
        assert!(
            e.starts_with("agents.default.modle: unknown field `modle`"),
            "{e}"
        );
        assert!(e.contains("line 2"), "{e}");
        let e = err("[sevrer]\n");
        assert!(e.contains("unknown field `sevrer`"), "{e}");
        let e = err("[models.x]\nprovider = \"sim\"\nsed = 1\n");
        assert!(
            e.contains("models.x") && e.contains("unknown field `sed`"),
            "{e}"
        );
    }

    #[test]
    fn wrong_types_name_the_key() {
        let e = err("[agents.a]\nmax_iterations = \"ten\"\n");
        assert!(
            e.starts_with("agents.a.max_iterations: invalid type: string \"ten\""),
            "{e}"
        );
        let e = err("[models.m]\nprovider = \"gemini\"\nmodel = \"x\"\n");
        assert!(
            e.contains("models.m") && e.contains("unknown variant `gemini`"),
            "{e}"
        );
    }

    #[test]
    fn the_server_section_parses_with_defaults() {
        let c = Config::parse(
            "[server]\nlisten = \"0.0.0.0:8080\"\nbody_limit_bytes = 4096\ncors_origins = [\"https://ops.example.com\"]\n",
        )
        .unwrap();
        assert_eq!(c.server.listen, "0.0.0.0:8080".parse().unwrap());
        assert_eq!(c.server.body_limit_bytes, 4096);
        assert_eq!(c.server.api_keys_env, "POCKET_API_KEYS");
        assert_eq!(c.server.request_timeout(), Duration::from_secs(300));
        assert_eq!(c.server.shutdown_grace(), Duration::from_secs(30));
        assert!(c.server.chat_direct);
        assert_eq!(c.server.chat_direct_wait_ms, 100);
        assert_eq!(
            c.server.max_chat_in_flight,
            pocket_server::DEFAULT_MAX_CHAT_IN_FLIGHT
        );
        c.server.validate().unwrap();
        assert_eq!(Config::default().server.cors_origins, Vec::<String>::new());
        let c = Config::parse(
            "[server]\nchat_direct = false\nchat_direct_wait_ms = 0\nmax_chat_in_flight = 8\n",
        )
        .unwrap();
        assert!(!c.server.chat_direct);
        assert_eq!(c.server.chat_direct_wait_ms, 0);
        assert_eq!(c.server.max_chat_in_flight, 8);
    }

    #[test]
    fn server_typos_and_bad_values_name_the_key() {
        let e = err("[server]\nbody_limit = 10\n");
        assert!(
            e.starts_with("server.body_limit: unknown field `body_limit`"),
            "{e}"
        );
        let e = err("[server]\nlisten = \"localhost\"\n");
        assert!(
            e.starts_with("server.listen: invalid socket address"),
            "{e}"
        );
        let bad = |text: &str| Config::parse(text).unwrap().server.validate().unwrap_err();
        assert_eq!(
            bad("[server]\nbody_limit_bytes = 0\n").0,
            "body_limit_bytes"
        );
        assert_eq!(
            bad("[server]\nrequest_timeout_secs = 0\n").0,
            "request_timeout_secs"
        );
        assert_eq!(
            bad("[server]\nmax_chat_in_flight = 0\n").0,
            "max_chat_in_flight"
        );
        assert_eq!(
            bad("[server]\nlive_interval_secs = -1\n").0,
            "live_interval_secs"
        );
        let (key, message) = bad("[server]\ncors_origins = [\"ops.example.com/\"]\n");
        assert_eq!(key, "cors_origins");
        assert!(message.contains("ops.example.com/"), "{message}");
    }

    #[test]
    fn broken_toml_says_so() {
        assert!(err("[agents\n").starts_with("invalid TOML"));
    }
}
