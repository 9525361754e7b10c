//! The `[resilience]` section of `pocket.toml`, and building the layers from it.
//!
//! Global defaults in `[resilience.retry]`, `[resilience.breaker]`, `[resilience.fallback]`
//! and `[resilience.protected]`; overrides with the same keys under
//! `[resilience.models.NAME]`, `[resilience.tools.NAME]` and `[resilience.agents.NAME]`.
//! Every key is optional; a key left out takes the next level's value, and in the end the
//! policy's documented default.
//!
//! ```
//! use pocket_resilience::ResilienceConfig;
//!
//! let config: ResilienceConfig = toml::from_str(r#"
//!     [retry]
//!     max_attempts = 4
//!     base_delay_ms = 100
//!
//!     [breaker]
//!     consecutive_failures = 3
//!
//!     [fallback]
//!     models = ["backup"]
//!
//!     [models."openai:gpt-4o".retry]
//!     max_attempts = 2
//! "#).unwrap();
//! config.validate().unwrap();
//! assert_eq!(config.model_retry("openai:gpt-4o").max_attempts, 2);
//! assert_eq!(config.model_retry("sim").max_attempts, 4);
//! assert_eq!(config.fallback_models("default", "sim"), ["backup"]);
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use pocket_agent::{Agent, BoxModel, SharedTool};
use serde::Deserialize;

use crate::breaker::{BreakerPolicy, BreakerTool, CircuitBreaker};
use crate::fallback::{Fallback, FallbackPolicy};
use crate::hub::{Component, ResilienceHub};
use crate::protected::{ProtectedAgent, ProtectedBuilder, ProtectedPolicy};
use crate::retry::{Jitter, Retry, RetryPolicy, RetryTool};

/// The `[resilience]` section.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResilienceConfig {
    /// `false` turns every layer off: models, tools and agents are used as they are.
    /// Default: `true`.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Retries of model and tool calls.
    #[serde(default)]
    pub retry: RetryConfig,
    /// Circuit breakers of models, tools and agents.
    #[serde(default)]
    pub breaker: BreakerConfig,
    /// The fallback model chain.
    #[serde(default)]
    pub fallback: FallbackConfig,
    /// Protected agents: whole-run retries, fallback and degraded agents.
    #[serde(default)]
    pub protected: ProtectedConfig,
    /// Overrides per model (by the name in `[models]`, or the spec: `sim`, `openai:MODEL`).
    #[serde(default)]
    pub models: BTreeMap<String, ModelOverrides>,
    /// Overrides per tool (by tool name).
    #[serde(default)]
    pub tools: BTreeMap<String, ToolOverrides>,
    /// Overrides per agent (by agent name).
    #[serde(default)]
    pub agents: BTreeMap<String, AgentOverrides>,
}

impl Default for ResilienceConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            retry: RetryConfig::default(),
            breaker: BreakerConfig::default(),
            fallback: FallbackConfig::default(),
            protected: ProtectedConfig::default(),
            models: BTreeMap::new(),
            tools: BTreeMap::new(),
            agents: BTreeMap::new(),
        }
    }
}

fn yes() -> bool {
    true
}

/// `retry`: see [`RetryPolicy`] for what each key does.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// Calls at most, the first included; 1 turns retries off. Default: 3.
    pub max_attempts: Option<u32>,
    /// Ceiling of the first retry's delay. Default: 200.
    pub base_delay_ms: Option<u64>,
    /// Highest ceiling of any delay. Default: 10000.
    pub max_delay_ms: Option<u64>,
    /// Time from the first call after which no retry starts. Default: 60000.
    pub max_elapsed_ms: Option<u64>,
    /// `full` (random between 0 and the ceiling) or `none`. Default: `full`.
    pub jitter: Option<Jitter>,
    /// Retries allowed per call made, over the budget window (0–1). Default: 0.2.
    pub budget_ratio: Option<f32>,
    /// Retries per second allowed whatever the traffic. Default: 10.
    pub budget_min_per_sec: Option<u32>,
    /// How long a call counts toward the budget, 1–60. Default: 10.
    pub budget_window_secs: Option<u64>,
}

impl RetryConfig {
    fn apply(&self, p: &mut RetryPolicy) {
        set(&mut p.max_attempts, self.max_attempts);
        set(
            &mut p.base_delay,
            self.base_delay_ms.map(Duration::from_millis),
        );
        set(
            &mut p.max_delay,
            self.max_delay_ms.map(Duration::from_millis),
        );
        set(
            &mut p.max_elapsed,
            self.max_elapsed_ms.map(Duration::from_millis),
        );
        set(&mut p.jitter, self.jitter);
        set(&mut p.budget.ratio, self.budget_ratio);
        set(&mut p.budget.min_per_sec, self.budget_min_per_sec);
        set(
            &mut p.budget.window,
            self.budget_window_secs.map(Duration::from_secs),
        );
    }

    fn check(&self, at: &str, errors: &mut Vec<ConfigError>) {
        check(
            errors,
            at,
            "max_attempts",
            self.max_attempts,
            |n| *n >= 1,
            "must be at least 1",
        );
        check(
            errors,
            at,
            "base_delay_ms",
            self.base_delay_ms,
            |n| *n >= 1,
            "must be at least 1",
        );
        check(
            errors,
            at,
            "max_elapsed_ms",
            self.max_elapsed_ms,
            |n| *n >= 1,
            "must be at least 1",
        );
        check(
            errors,
            at,
            "budget_ratio",
            self.budget_ratio,
            |r| r.is_finite() && (0.0..=1000.0).contains(r),
            "must be between 0 and 1000",
        );
        check(
            errors,
            at,
            "budget_window_secs",
            self.budget_window_secs,
            |s| (1..=60).contains(s),
            "must be between 1 and 60",
        );
    }
}

/// `breaker`: see [`BreakerPolicy`] for what each key does.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerConfig {
    /// `false` leaves out the breaker. Default: `true`.
    pub enabled: Option<bool>,
    /// Failures in a row that open the breaker; 0 turns this off. Default: 5.
    pub consecutive_failures: Option<u32>,
    /// Share of failures in the window that opens it (above 1 turns this off). Default: 0.5.
    pub failure_rate: Option<f64>,
    /// Calls in the sliding window. Default: 20.
    pub window: Option<u32>,
    /// Calls the window needs before its rate counts. Default: 10.
    pub min_calls: Option<u32>,
    /// How long it stays open before a probe. Default: 30000.
    pub cool_down_ms: Option<u64>,
    /// Probes let through while half-open. Default: 1.
    pub half_open_probes: Option<u32>,
}

impl BreakerConfig {
    fn apply(&self, p: &mut BreakerPolicy, enabled: &mut bool) {
        set(enabled, self.enabled);
        set(&mut p.consecutive_failures, self.consecutive_failures);
        set(&mut p.failure_rate, self.failure_rate);
        set(&mut p.window, self.window);
        set(&mut p.min_calls, self.min_calls);
        set(
            &mut p.cool_down,
            self.cool_down_ms.map(Duration::from_millis),
        );
        set(&mut p.half_open_probes, self.half_open_probes);
    }

    fn check(&self, at: &str, errors: &mut Vec<ConfigError>) {
        check(
            errors,
            at,
            "failure_rate",
            self.failure_rate,
            |r| r.is_finite() && *r > 0.0,
            "must be greater than 0 (above 1 turns it off)",
        );
        check(
            errors,
            at,
            "cool_down_ms",
            self.cool_down_ms,
            |n| *n >= 1,
            "must be at least 1",
        );
        check(
            errors,
            at,
            "half_open_probes",
            self.half_open_probes,
            |n| *n >= 1,
            "must be at least 1",
        );
    }
}

/// `fallback`: the models a call falls back to, in order.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FallbackConfig {
    /// Model names (from `[models]`) or specs tried after the agent's own model. Default: none.
    pub models: Option<Vec<String>>,
    /// Calls at most for one model call, across all routes. Default: the routes' retry
    /// `max_attempts` added up.
    pub max_attempts: Option<u32>,
    /// Time after which a call starts no new attempt or wait. Default: the primary model's
    /// retry `max_elapsed_ms`.
    pub max_elapsed_ms: Option<u64>,
}

impl FallbackConfig {
    fn check(&self, at: &str, errors: &mut Vec<ConfigError>) {
        check(
            errors,
            at,
            "max_attempts",
            self.max_attempts,
            |n| *n >= 1,
            "must be at least 1",
        );
        check(
            errors,
            at,
            "max_elapsed_ms",
            self.max_elapsed_ms,
            |n| *n >= 1,
            "must be at least 1",
        );
        check(
            errors,
            at,
            "models",
            self.models.as_ref(),
            |m| m.iter().all(|n| !n.is_empty()),
            "names must not be empty",
        );
    }
}

/// `protected`: see [`ProtectedPolicy`] for what each key does.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProtectedConfig {
    /// Runs tried again after a retryable failure. Default: 2.
    pub max_run_retries: Option<u32>,
    /// Ceiling of the first delay between runs. Default: 1000.
    pub base_delay_ms: Option<u64>,
    /// Highest ceiling of any delay between runs. Default: 30000.
    pub max_delay_ms: Option<u64>,
    /// Failures kept in each agent's error history. Default: 1000.
    pub history: Option<usize>,
    /// An agent (from `[agents]`) that answers when this one gives up. Default: none.
    pub fallback_agent: Option<String>,
    /// An agent that answers after a permission (auth) failure. Default: none.
    pub degraded_agent: Option<String>,
}

impl ProtectedConfig {
    fn check(&self, at: &str, errors: &mut Vec<ConfigError>) {
        check(
            errors,
            at,
            "history",
            self.history,
            |n| *n >= 1,
            "must be at least 1",
        );
        check(
            errors,
            at,
            "base_delay_ms",
            self.base_delay_ms,
            |n| *n >= 1,
            "must be at least 1",
        );
    }
}

/// `models.NAME`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelOverrides {
    /// Retries of this model's calls.
    #[serde(default)]
    pub retry: RetryConfig,
    /// This model's breaker.
    #[serde(default)]
    pub breaker: BreakerConfig,
    /// What this model falls back to.
    #[serde(default)]
    pub fallback: FallbackConfig,
}

/// `tools.NAME`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolOverrides {
    /// Retries of this tool's calls (idempotent tools only).
    #[serde(default)]
    pub retry: RetryConfig,
    /// This tool's breaker.
    #[serde(default)]
    pub breaker: BreakerConfig,
}

/// `agents.NAME`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentOverrides {
    /// This agent's run retries and executors.
    #[serde(default)]
    pub protected: ProtectedConfig,
    /// This agent's own breaker.
    #[serde(default)]
    pub breaker: BreakerConfig,
    /// The models this agent's model falls back to.
    #[serde(default)]
    pub fallback: FallbackConfig,
}

/// A value in `[resilience]` that cannot work, named by its key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct ConfigError {
    /// The key's path, like `resilience.models.gpt.retry.budget_ratio`.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

fn set<T>(target: &mut T, value: Option<T>) {
    if let Some(v) = value {
        *target = v;
    }
}

fn check<T>(
    errors: &mut Vec<ConfigError>,
    at: &str,
    key: &str,
    value: Option<T>,
    ok: impl FnOnce(&T) -> bool,
    message: &str,
) {
    if let Some(v) = value
        && !ok(&v)
    {
        errors.push(ConfigError {
            key: format!("{at}.{key}"),
            message: message.to_owned(),
        });
    }
}

impl ResilienceConfig {
    /// Checks every value, and that delays and windows fit together once resolved.
    ///
    /// # Errors
    /// The first problem found, naming its key (`resilience.retry.budget_ratio`).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut errors = Vec::new();
        let root = "resilience";
        self.retry.check(&format!("{root}.retry"), &mut errors);
        self.breaker.check(&format!("{root}.breaker"), &mut errors);
        self.fallback
            .check(&format!("{root}.fallback"), &mut errors);
        self.protected
            .check(&format!("{root}.protected"), &mut errors);
        for (name, o) in &self.models {
            let at = format!("{root}.models.{name}");
            o.retry.check(&format!("{at}.retry"), &mut errors);
            o.breaker.check(&format!("{at}.breaker"), &mut errors);
            o.fallback.check(&format!("{at}.fallback"), &mut errors);
            resolved_retry(&self.model_retry(name), &format!("{at}.retry"), &mut errors);
            let b = self.breaker_policy(Component::Model, name).0;
            resolved_breaker(&b, &format!("{at}.breaker"), &mut errors);
        }
        for (name, o) in &self.tools {
            let at = format!("{root}.tools.{name}");
            o.retry.check(&format!("{at}.retry"), &mut errors);
            o.breaker.check(&format!("{at}.breaker"), &mut errors);
            resolved_retry(&self.tool_retry(name), &format!("{at}.retry"), &mut errors);
            let b = self.breaker_policy(Component::Tool, name).0;
            resolved_breaker(&b, &format!("{at}.breaker"), &mut errors);
        }
        for (name, o) in &self.agents {
            let at = format!("{root}.agents.{name}");
            o.protected.check(&format!("{at}.protected"), &mut errors);
            o.breaker.check(&format!("{at}.breaker"), &mut errors);
            o.fallback.check(&format!("{at}.fallback"), &mut errors);
            let b = self.breaker_policy(Component::Agent, name).0;
            resolved_breaker(&b, &format!("{at}.breaker"), &mut errors);
        }
        resolved_retry(&self.model_retry(""), &format!("{root}.retry"), &mut errors);
        let b = self.breaker_policy(Component::Model, "").0;
        resolved_breaker(&b, &format!("{root}.breaker"), &mut errors);
        match errors.into_iter().next() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// The retry policy of model `name`: defaults, then `[resilience.retry]`, then
    /// `[resilience.models.NAME.retry]`.
    pub fn model_retry(&self, name: &str) -> RetryPolicy {
        let mut p = RetryPolicy::default();
        self.retry.apply(&mut p);
        if let Some(o) = self.models.get(name) {
            o.retry.apply(&mut p);
        }
        p
    }

    /// The retry policy of tool `name`: defaults, then `[resilience.retry]`, then
    /// `[resilience.tools.NAME.retry]`.
    pub fn tool_retry(&self, name: &str) -> RetryPolicy {
        let mut p = RetryPolicy::default();
        self.retry.apply(&mut p);
        if let Some(o) = self.tools.get(name) {
            o.retry.apply(&mut p);
        }
        p
    }

    /// The breaker policy of `name` and whether the breaker is on: defaults, then
    /// `[resilience.breaker]`, then the component's override.
    pub fn breaker_policy(&self, component: Component, name: &str) -> (BreakerPolicy, bool) {
        let mut p = BreakerPolicy::default();
        let mut enabled = true;
        self.breaker.apply(&mut p, &mut enabled);
        let own = match component {
            Component::Model => self.models.get(name).map(|o| &o.breaker),
            Component::Tool => self.tools.get(name).map(|o| &o.breaker),
            Component::Agent => self.agents.get(name).map(|o| &o.breaker),
        };
        if let Some(o) = own {
            o.apply(&mut p, &mut enabled);
        }
        (p, enabled)
    }

    /// The models the model `model` of agent `agent` falls back to: the agent's list, else
    /// the model's, else the global one (without `model` itself).
    pub fn fallback_models(&self, agent: &str, model: &str) -> Vec<String> {
        let list = self
            .agents
            .get(agent)
            .and_then(|o| o.fallback.models.as_ref())
            .or_else(|| {
                self.models
                    .get(model)
                    .and_then(|o| o.fallback.models.as_ref())
            })
            .or(self.fallback.models.as_ref());
        list.map(|l| l.iter().filter(|m| *m != model).cloned().collect())
            .unwrap_or_default()
    }

    fn fallback_setting<T: Copy>(
        &self,
        agent: &str,
        model: &str,
        get: impl Fn(&FallbackConfig) -> Option<T>,
    ) -> Option<T> {
        self.agents
            .get(agent)
            .and_then(|o| get(&o.fallback))
            .or_else(|| self.models.get(model).and_then(|o| get(&o.fallback)))
            .or_else(|| get(&self.fallback))
    }

    /// The protected-agent policy of `agent`: defaults, then `[resilience.protected]`, then
    /// `[resilience.agents.NAME.protected]`.
    pub fn protected_policy(&self, agent: &str) -> ProtectedPolicy {
        let mut p = ProtectedPolicy::default();
        let global = &self.protected;
        let own = self.agents.get(agent).map(|o| &o.protected);
        for c in std::iter::once(global).chain(own) {
            set(&mut p.max_run_retries, c.max_run_retries);
            set(
                &mut p.base_delay,
                c.base_delay_ms.map(Duration::from_millis),
            );
            set(&mut p.max_delay, c.max_delay_ms.map(Duration::from_millis));
            set(&mut p.history, c.history);
        }
        p
    }

    /// The agent (from `[agents]`) that answers when `agent` gives up, if configured.
    pub fn fallback_agent(&self, agent: &str) -> Option<&str> {
        self.agents
            .get(agent)
            .and_then(|o| o.protected.fallback_agent.as_deref())
            .or(self.protected.fallback_agent.as_deref())
            .filter(|a| *a != agent)
    }

    /// The agent that answers after a permission failure of `agent`, if configured.
    pub fn degraded_agent(&self, agent: &str) -> Option<&str> {
        self.agents
            .get(agent)
            .and_then(|o| o.protected.degraded_agent.as_deref())
            .or(self.protected.degraded_agent.as_deref())
            .filter(|a| *a != agent)
    }

    /// One model route: `Retry(CircuitBreaker(model))`, configured for `name` (the model's
    /// name in `[models]`, or its spec). Returns `model` as it is when resilience is off.
    pub fn wrap_model(&self, name: &str, model: BoxModel, hub: &ResilienceHub) -> BoxModel {
        if !self.enabled {
            return model;
        }
        let (breaker, on) = self.breaker_policy(Component::Model, name);
        let model = if on {
            BoxModel::new(CircuitBreaker::new(model, &breaker, hub))
        } else {
            model
        };
        let retry = self.model_retry(name);
        if retry.max_attempts > 1 {
            BoxModel::new(Retry::new(model, retry, hub))
        } else {
            model
        }
    }

    /// The model of agent `agent`: its route (see [`wrap_model`](Self::wrap_model)), and a
    /// [`Fallback`] over it and the fallback models' routes when any are configured.
    /// `resolve` builds a fallback model from its name.
    ///
    /// # Errors
    /// The first error of `resolve`.
    pub fn model_chain<E>(
        &self,
        agent: &str,
        name: &str,
        model: BoxModel,
        hub: &ResilienceHub,
        mut resolve: impl FnMut(&str) -> Result<BoxModel, E>,
    ) -> Result<BoxModel, E> {
        let primary = self.wrap_model(name, model, hub);
        let names = self.fallback_models(agent, name);
        if !self.enabled || names.is_empty() {
            return Ok(primary);
        }
        let mut routes = Vec::with_capacity(names.len());
        let mut attempts = self.model_retry(name).max_attempts;
        for n in &names {
            routes.push(self.wrap_model(n, resolve(n)?, hub));
            attempts = attempts.saturating_add(self.model_retry(n).max_attempts);
        }
        let policy = FallbackPolicy {
            max_attempts: self
                .fallback_setting(agent, name, |f| f.max_attempts)
                .unwrap_or(attempts),
            max_elapsed: self
                .fallback_setting(agent, name, |f| f.max_elapsed_ms)
                .map_or(self.model_retry(name).max_elapsed, Duration::from_millis),
        };
        Ok(BoxModel::new(Fallback::new(primary, routes, policy, hub)))
    }

    /// A tool with its layers: `RetryTool(BreakerTool(tool))`; the retry layer only retries
    /// tools whose spec says they are idempotent. Returns `tool` as it is when resilience is
    /// off.
    pub fn wrap_tool(&self, tool: SharedTool, hub: &ResilienceHub) -> SharedTool {
        if !self.enabled {
            return tool;
        }
        let name = tool.spec().name.clone();
        let (breaker, on) = self.breaker_policy(Component::Tool, &name);
        let tool = if on {
            BreakerTool::shared(tool, &breaker, hub)
        } else {
            tool
        };
        let retry = self.tool_retry(&name);
        if retry.max_attempts > 1 && tool.spec().idempotent {
            RetryTool::shared(tool, retry, hub)
        } else {
            tool
        }
    }

    /// [`wrap_tool`](Self::wrap_tool) for each tool.
    pub fn wrap_tools(
        &self,
        tools: impl IntoIterator<Item = SharedTool>,
        hub: &ResilienceHub,
    ) -> Vec<SharedTool> {
        tools.into_iter().map(|t| self.wrap_tool(t, hub)).collect()
    }

    /// A [`ProtectedAgent`] builder for `agent` with its configured run policy and breaker.
    /// Add the fallback and degraded agents named by [`fallback_agent`](Self::fallback_agent)
    /// and [`degraded_agent`](Self::degraded_agent), and an error callback, then build.
    /// When resilience is off, runs are not retried and the breaker never opens.
    pub fn protect(&self, agent: Agent, hub: &ResilienceHub) -> ProtectedBuilder {
        let name = agent.name().to_owned();
        let (mut breaker, on) = self.breaker_policy(Component::Agent, &name);
        let mut policy = self.protected_policy(&name);
        if !self.enabled || !on {
            breaker.consecutive_failures = 0;
            breaker.failure_rate = f64::INFINITY;
        }
        if !self.enabled {
            policy.max_run_retries = 0;
        }
        ProtectedAgent::builder(agent, hub)
            .policy(policy)
            .breaker(breaker)
    }
}

fn resolved_retry(p: &RetryPolicy, at: &str, errors: &mut Vec<ConfigError>) {
    if p.base_delay > p.max_delay {
        errors.push(ConfigError {
            key: format!("{at}.base_delay_ms"),
            message: format!(
                "must not be above max_delay_ms ({} > {})",
                p.base_delay.as_millis(),
                p.max_delay.as_millis()
            ),
        });
    }
}

fn resolved_breaker(p: &BreakerPolicy, at: &str, errors: &mut Vec<ConfigError>) {
    if p.failure_rate <= 1.0 && p.min_calls > p.window {
        errors.push(ConfigError {
            key: format!("{at}.min_calls"),
            message: format!(
                "must not be above window ({} > {}), or the failure rate never counts",
                p.min_calls, p.window
            ),
        });
    }
}

impl fmt::Display for ResilienceConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = self.model_retry("");
        let (b, on) = self.breaker_policy(Component::Model, "");
        if !self.enabled {
            return f.write_str("resilience off");
        }
        write!(
            f,
            "retry: {} attempts, {}–{} ms full jitter, budget {}/call + {}/s; breaker: {}",
            r.max_attempts,
            r.base_delay.as_millis(),
            r.max_delay.as_millis(),
            r.budget.ratio,
            r.budget.min_per_sec,
            if on {
                format!(
                    "opens after {} failures in a row or {:.0}% of {} calls, probes after {} ms",
                    b.consecutive_failures,
                    b.failure_rate * 100.0,
                    b.window,
                    b.cool_down.as_millis()
                )
            } else {
                "off".to_owned()
            }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> ResilienceConfig {
        match toml::from_str(text) {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn empty_section_is_the_defaults() {
        let c = parse("");
        assert!(c.enabled);
        assert_eq!(c.model_retry("x"), RetryPolicy::default());
        assert_eq!(
            c.breaker_policy(Component::Tool, "x"),
            (BreakerPolicy::default(), true)
        );
        assert_eq!(c.protected_policy("a"), ProtectedPolicy::default());
        assert!(c.fallback_models("a", "m").is_empty());
        assert_eq!(c.validate(), Ok(()));
    }

    #[test]
    fn overrides_apply_per_model_tool_and_agent() {
        let c = parse(
            r#"
            [retry]
            max_attempts = 5
            budget_ratio = 0.5
            [breaker]
            cool_down_ms = 1000
            [fallback]
            models = ["b", "c"]
            [protected]
            max_run_retries = 1
            fallback_agent = "spare"
            [models.a.retry]
            max_attempts = 2
            [models.a.fallback]
            models = ["c"]
            [tools.shell.breaker]
            enabled = false
            [agents.ops.protected]
            max_run_retries = 4
            degraded_agent = "safe"
            [agents.ops.fallback]
            models = ["d"]
            "#,
        );
        assert_eq!(c.validate(), Ok(()));
        assert_eq!(c.model_retry("a").max_attempts, 2);
        assert_eq!(c.model_retry("a").budget.ratio, 0.5, "global still applies");
        assert_eq!(c.model_retry("b").max_attempts, 5);
        assert_eq!(c.tool_retry("shell").max_attempts, 5);
        let (b, on) = c.breaker_policy(Component::Tool, "shell");
        assert!(!on);
        assert_eq!(b.cool_down, Duration::from_millis(1000));
        assert!(c.breaker_policy(Component::Tool, "calculator").1);
        assert_eq!(c.fallback_models("default", "a"), ["c"]);
        assert_eq!(c.fallback_models("default", "b"), ["c"], "not itself");
        assert_eq!(
            c.fallback_models("ops", "a"),
            ["d"],
            "the agent's list wins"
        );
        assert_eq!(c.protected_policy("ops").max_run_retries, 4);
        assert_eq!(c.protected_policy("x").max_run_retries, 1);
        assert_eq!(c.fallback_agent("ops"), Some("spare"));
        assert_eq!(c.fallback_agent("spare"), None, "never itself");
        assert_eq!(c.degraded_agent("ops"), Some("safe"));
        assert_eq!(c.degraded_agent("x"), None);
    }

    #[test]
    fn unknown_keys_are_refused() {
        let e = toml::from_str::<ResilienceConfig>("[retry]\nmax_attempt = 3\n")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("unknown field `max_attempt`"), "{e}");
        let e = toml::from_str::<ResilienceConfig>("[models.a]\nretries = {}\n")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("unknown field `retries`"), "{e}");
    }

    #[test]
    fn bad_values_name_their_key() {
        let err = |text: &str| parse(text).validate().err().map(|e| e.to_string());
        assert_eq!(
            err("[retry]\nbudget_window_secs = 120\n").as_deref(),
            Some("resilience.retry.budget_window_secs: must be between 1 and 60")
        );
        assert_eq!(
            err("[models.gpt.retry]\nmax_attempts = 0\n").as_deref(),
            Some("resilience.models.gpt.retry.max_attempts: must be at least 1")
        );
        assert_eq!(
            err("[retry]\nbase_delay_ms = 5000\nmax_delay_ms = 100\n").as_deref(),
            Some("resilience.retry.base_delay_ms: must not be above max_delay_ms (5000 > 100)")
        );
        assert_eq!(
            err("[agents.a.breaker]\nhalf_open_probes = 0\n").as_deref(),
            Some("resilience.agents.a.breaker.half_open_probes: must be at least 1")
        );
        assert_eq!(
            err("[breaker]\nmin_calls = 30\n").as_deref(),
            Some(
                "resilience.breaker.min_calls: must not be above window (30 > 20), or the failure rate never counts"
            )
        );
    }

    #[test]
    fn off_means_no_layers() {
        let c = parse("enabled = false\n");
        let hub = ResilienceHub::new();
        let model = BoxModel::new(crate::chaos::Outage::new(
            pocket_agent::testing::ScriptedModel::new([]),
            Duration::ZERO,
            Duration::ZERO,
        ));
        let wrapped = c.wrap_model("m", model, &hub);
        assert_eq!(pocket_agent::Model::name(&wrapped), "scripted");
        assert!(hub.breakers().is_empty(), "no breaker was made");
    }
}
