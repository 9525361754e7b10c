//! From a validated configuration (plus command-line overrides) to running agents.

use std::sync::Arc;
use std::time::Duration;

use pocket_agent::{Agent, Approver, BoxModel, SharedTool};
use pocket_mcp::{McpError, McpHub};
use pocket_models::{
    AnthropicConfig, AnthropicModel, OpenAiConfig, OpenAiModel, SimConfig, SimModel,
};
use pocket_resilience::ProtectedAgent;

use crate::observe::Services;

use crate::config::{AgentConfig, Config, ConfigError, ModelConfig};

/// What the command line adds to an agent's configuration.
#[derive(Debug, Default, Clone)]
pub(crate) struct Overrides {
    /// `--model SPEC`.
    pub(crate) model: Option<String>,
    /// `--tool NAME`...
    pub(crate) tools: Vec<String>,
    /// Calls the model in streaming mode, so a run's text deltas reach its watchers (`pocket
    /// serve`: task events and streamed chat completions).
    pub(crate) stream: bool,
}

/// Builds the agent `name` from the config (or the defaults when the config has no such
/// agent and `name` is `default`), with the overrides applied.
pub(crate) async fn build_agent(
    config: &Config,
    name: &str,
    overrides: &Overrides,
    approver: Option<Arc<dyn Approver>>,
    services: &Services,
) -> Result<Agent, ConfigError> {
    let (mcp, hub) = (&services.mcp, &services.hub);
    let file = config.file();
    let default = AgentConfig::default();
    let agent = match config.agents.get(name) {
        Some(a) => a,
        None if name == "default" => &default,
        None => {
            let known: Vec<&str> = config.agents.keys().map(String::as_str).collect();
            return Err(ConfigError::new(
                file,
                "--agent",
                format!(
                    "no agent named `{name}` in [agents] (configured: {})",
                    list(&known)
                ),
            ));
        }
    };
    let key = format!("agents.{name}");
    let (model_name, model) = match &overrides.model {
        Some(spec) => (
            spec.as_str(),
            model_from_spec(config, spec).map_err(|m| ConfigError::new(None, "--model", m))?,
        ),
        None => (
            agent.model.as_str(),
            model_from_spec(config, &agent.model)
                .map_err(|m| ConfigError::new(file, format!("{key}.model"), m))?,
        ),
    };
    // Retry(Breaker(model)), and the fallback chain over the configured fallback models.
    let model = config
        .resilience
        .model_chain(name, model_name, model, hub, |fallback| {
            model_from_spec(config, fallback).map_err(|m| {
                ConfigError::new(
                    file,
                    "resilience.fallback.models",
                    format!("`{fallback}`: {m}"),
                )
            })
        })?;

    let mut tools: Vec<SharedTool> = Vec::new();
    let mut seen: Vec<&str> = Vec::new();
    let named = agent
        .tools
        .iter()
        .enumerate()
        .map(|(i, t)| (format!("{key}.tools[{i}]"), file, t));
    let flagged = overrides
        .tools
        .iter()
        .map(|t| ("--tool".to_owned(), None, t));
    for (where_, file, tool) in named.chain(flagged) {
        if seen.contains(&tool.as_str()) {
            continue;
        }
        seen.push(tool);
        if McpHub::is_pattern(tool) {
            let matched = mcp
                .tools_matching(&[tool])
                .await
                .map_err(|e| ConfigError::new(file, where_, e.to_string()))?;
            // `fs.*` and `fs.read_text_file` may both name a tool.
            tools.retain(|t| !matched.iter().any(|m| m.spec().name == t.spec().name));
            tools.extend(matched);
            continue;
        }
        let built = pocket_tools::builtin(tool, &config.tools)
            .map_err(|e| ConfigError::new(file, where_, e.to_string()))?;
        tools.extend(built);
    }

    let tools = config.resilience.wrap_tools(tools, hub);
    let mut builder = Agent::builder_boxed(model)
        .name(name)
        .dyn_tools(tools)
        .plugin(services.monitor.plugin())
        .max_iterations(agent.max_iterations)
        .tool_timeout(Duration::from_secs(agent.tool_timeout_secs))
        .approval_policy(agent.approval.policy())
        .interrupted_calls(agent.interrupted_calls)
        .streaming(overrides.stream);
    if let Some(prompt) = &agent.system_prompt {
        builder = builder.system_prompt(prompt);
    }
    if let Some(secs) = agent.run_timeout_secs {
        builder = builder.run_timeout(Duration::from_secs(secs));
    }
    if let Some(approver) = approver {
        builder = builder.shared_approver(approver);
    }
    let agent = builder
        .build()
        .map_err(|e| ConfigError::new(file, key, e.to_string()))?;
    // Model calls, tokens, tool calls and approvals reach /metrics from the agent's events;
    // clones (the cluster's instances) share them.
    services.observe(&agent);
    Ok(agent)
}

/// The agent `name` behind its protection: whole-run retries, its breaker, and the fallback
/// and degraded agents `[resilience]` names for it.
pub(crate) async fn build_protected(
    config: &Config,
    name: &str,
    overrides: &Overrides,
    approver: Option<Arc<dyn Approver>>,
    services: &Services,
) -> Result<ProtectedAgent, ConfigError> {
    let agent = build_agent(config, name, overrides, approver.clone(), services).await?;
    let mut protected = config.resilience.protect(agent, &services.hub);
    let plain = Overrides::default();
    if let Some(spare) = config.resilience.fallback_agent(name) {
        let spare = Box::pin(build_agent(
            config,
            spare,
            &plain,
            approver.clone(),
            services,
        ))
        .await?;
        protected = protected.fallback(spare);
    }
    if let Some(safe) = config.resilience.degraded_agent(name) {
        let safe = Box::pin(build_agent(config, safe, &plain, approver, services)).await?;
        protected = protected.degraded(safe);
    }
    Ok(protected.build())
}

/// Starts the `[mcp]` servers (eager ones now, lazy ones when an agent names them).
pub(crate) async fn start_mcp(config: &Config) -> Result<McpHub, ConfigError> {
    McpHub::start(config.mcp.clone())
        .await
        .map_err(|e| match e {
            McpError::Config { key, message } => ConfigError::new(config.file(), key, message),
            other => ConfigError::new(config.file(), "mcp", other.to_string()),
        })
}

/// A `[models]` name, or a spec: `sim`, `openai:MODEL`, `anthropic:MODEL`.
pub(crate) fn model_from_spec(config: &Config, spec: &str) -> Result<BoxModel, String> {
    if let Some(model) = config.models.get(spec) {
        return build_model(spec, model).map_err(|m| format!("model `{spec}`: {m}"));
    }
    let (provider, id) = spec.split_once(':').unwrap_or((spec, ""));
    let model = match (provider, id) {
        ("sim", "") => ModelConfig::Sim(SimConfig::default()),
        ("openai", id) if !id.is_empty() => ModelConfig::Openai {
            model: id.into(),
            base_url: None,
            api_key_env: None,
            timeout_secs: None,
        },
        ("anthropic", id) if !id.is_empty() => ModelConfig::Anthropic {
            model: id.into(),
            base_url: None,
            api_key_env: None,
            max_tokens: None,
            timeout_secs: None,
        },
        _ => {
            let names: Vec<&str> = config.models.keys().map(String::as_str).collect();
            return Err(format!(
                "`{spec}` is neither a model spec (`sim`, `openai:MODEL`, `anthropic:MODEL`) \
                 nor a name in [models] (configured: {})",
                list(&names)
            ));
        }
    };
    build_model(spec, &model)
}

fn build_model(name: &str, model: &ModelConfig) -> Result<BoxModel, String> {
    Ok(match model {
        ModelConfig::Sim(sim) => BoxModel::new(SimModel::named(sim_name(name), sim.clone())),
        ModelConfig::Openai {
            model,
            base_url,
            api_key_env,
            timeout_secs,
        } => {
            let mut c = OpenAiConfig::from_env(model.clone());
            if let Some(url) = base_url {
                c.base_url = url.clone();
            }
            if let Some(var) = api_key_env {
                c.api_key = Some(secret(var)?.into());
            }
            if let Some(secs) = timeout_secs {
                c.timeout = Duration::from_secs(*secs);
            }
            BoxModel::new(OpenAiModel::new(c).map_err(|e| e.to_string())?)
        }
        ModelConfig::Anthropic {
            model,
            base_url,
            api_key_env,
            max_tokens,
            timeout_secs,
        } => {
            let var = api_key_env.as_deref().unwrap_or("ANTHROPIC_API_KEY");
            let mut c = AnthropicConfig::new(model.clone(), secret(var)?);
            if let Ok(url) = std::env::var("ANTHROPIC_BASE_URL") {
                c.base_url = url;
            }
            if let Some(url) = base_url {
                c.base_url = url.clone();
            }
            if let Some(n) = max_tokens {
                c.max_tokens = *n;
            }
            if let Some(secs) = timeout_secs {
                c.timeout = Duration::from_secs(*secs);
            }
            BoxModel::new(AnthropicModel::new(c).map_err(|e| e.to_string())?)
        }
    })
}

fn sim_name(name: &str) -> String {
    if name == "sim" {
        name.to_owned()
    } else {
        format!("sim:{name}")
    }
}

/// The value of a secret's env var; the error names the variable, never a value.
fn secret(var: &str) -> Result<String, String> {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => Ok(v),
        _ => Err(format!(
            "environment variable `{var}` (api_key_env) is not set"
        )),
    }
}

fn list(names: &[&str]) -> String {
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}
