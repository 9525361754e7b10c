//! Building the layers from a `[resilience]` section, as the `pocket` binary does.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;

use pocket_agent::{Agent, BoxModel, Completion, ToolContext};
use pocket_resilience::{ResilienceConfig, ResilienceHub, RunPath};
use serde::Deserialize;
use support::{Timed, ms, server_error};
use tokio::time::Instant;

/// The part of `pocket.toml` this test needs.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    resilience: ResilienceConfig,
}

const TOML: &str = r#"
[resilience.retry]
max_attempts = 3
base_delay_ms = 100
jitter = "none"

[resilience.breaker]
consecutive_failures = 2
cool_down_ms = 10000

[resilience.fallback]
models = ["backup"]

[resilience.protected]
max_run_retries = 1
fallback_agent = "spare"

[resilience.models.primary.retry]
max_attempts = 2

[resilience.tools.lookup.retry]
max_attempts = 4

[resilience.tools.lookup.breaker]
consecutive_failures = 10
"#;

#[tokio::test(start_paused = true)]
async fn the_configured_layers_retry_break_and_fall_back() {
    let config = toml::from_str::<File>(TOML).unwrap().resilience;
    config.validate().unwrap();
    let hub = ResilienceHub::new();
    let primary = Arc::new(Timed::always("primary", server_error));
    let backup = Arc::new(Timed::ok("backup", "from backup"));
    let models: BTreeMap<&str, Arc<Timed>> =
        [("primary", primary.clone()), ("backup", backup.clone())].into();
    let resolve = |name: &str| -> Result<BoxModel, String> {
        models
            .get(name)
            .map(|m| BoxModel::new(m.clone()))
            .ok_or_else(|| format!("no model `{name}`"))
    };
    let model = config
        .model_chain(
            "default",
            "primary",
            resolve("primary").unwrap(),
            &hub,
            resolve,
        )
        .unwrap();
    let agent = Agent::builder_boxed(model).build().unwrap();
    let t0 = Instant::now();
    let out = agent.run("hi").await.unwrap();
    assert_eq!(out.answer, "from backup");
    assert_eq!(
        primary.times_ms(t0),
        [0, 100],
        "models.primary.retry.max_attempts = 2"
    );
    assert_eq!(backup.calls(), 1);
    let m = hub.metrics();
    assert_eq!(m.retries_total["model:primary"], 1);
    assert_eq!(m.fallbacks_total["model:primary"], 1);
    assert_eq!(
        m.breaker_state["model:primary"], 2,
        "opened after 2 failures"
    );

    // The open primary is skipped at once from now on.
    let t1 = Instant::now();
    agent.run("again").await.unwrap();
    assert_eq!(primary.calls(), 2);
    assert_eq!(Instant::now(), t1);

    let report = hub.health_report();
    assert!(
        report.recommendations[0].contains("calls fall back to backup"),
        "{:?}",
        report.recommendations
    );
}

#[tokio::test(start_paused = true)]
async fn configured_tools_and_agents() {
    let config = toml::from_str::<File>(TOML).unwrap().resilience;
    let hub = ResilienceHub::new();

    let lookup = Arc::new(support::FlakyTool::new("lookup", true, 3));
    let tools = config.wrap_tools([lookup.clone() as pocket_agent::SharedTool], &hub);
    tools[0]
        .call(serde_json::json!({}), &ToolContext::detached())
        .await
        .unwrap();
    assert_eq!(
        lookup.calls(),
        4,
        "tools.lookup.retry.max_attempts = 4, its breaker at 10"
    );

    assert_eq!(config.fallback_agent("default"), Some("spare"));
    let failing = Agent::builder(Timed::always("m", server_error))
        .build()
        .unwrap();
    let spare = Agent::builder(Timed::new("s", |_| Ok(Completion::text("spare"))))
        .name("spare")
        .build()
        .unwrap();
    let protected = config.protect(failing, &hub).fallback(spare).build();
    let out = protected.run("task").await.unwrap();
    assert_eq!(out.path, RunPath::Fallback);
    assert_eq!(out.attempts, 2, "protected.max_run_retries = 1");
    assert_eq!(out.output.answer, "spare");
    let _ = ms(0);
}

#[tokio::test(start_paused = true)]
async fn resilience_off_leaves_everything_as_it_is() {
    let config = toml::from_str::<File>("[resilience]\nenabled = false\n")
        .unwrap()
        .resilience;
    let hub = ResilienceHub::new();
    let primary = Arc::new(Timed::always("primary", server_error));
    let model = config
        .model_chain(
            "default",
            "primary",
            BoxModel::new(primary.clone()),
            &hub,
            |_| Err::<BoxModel, ()>(()),
        )
        .unwrap();
    let agent = Agent::builder_boxed(model).build().unwrap();
    agent.run("hi").await.unwrap_err();
    assert_eq!(primary.calls(), 1);
    assert!(hub.breakers().is_empty());
}

#[test]
fn a_typo_in_the_section_is_refused_with_its_key() {
    let err = toml::from_str::<File>("[resilience.breaker]\ncool_down = 5\n")
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("unknown field `cool_down`"), "{err}");
    assert!(err.contains("cool_down_ms"), "lists the valid keys: {err}");
}

#[test]
fn the_readme_example_parses_and_states_the_defaults() {
    let readme = include_str!("../README.md");
    let start = readme.find("```toml\n").unwrap() + "```toml\n".len();
    let end = start + readme[start..].find("```").unwrap();
    let config = toml::from_str::<File>(&readme[start..end])
        .unwrap()
        .resilience;
    config.validate().unwrap();
    // The section's global values are the documented defaults.
    assert_eq!(
        config.model_retry("sim"),
        pocket_resilience::RetryPolicy::default()
    );
    let (breaker, on) = config.breaker_policy(pocket_resilience::Component::Model, "sim");
    assert_eq!(breaker, pocket_resilience::BreakerPolicy::default());
    assert!(on);
    assert_eq!(
        config.protected_policy("x"),
        pocket_resilience::ProtectedPolicy::default()
    );
    assert_eq!(config.model_retry("openai:gpt-4o").max_attempts, 5);
    assert_eq!(
        config.fallback_models("default", "openai:gpt-4o"),
        ["anthropic:claude-sonnet-4-5"]
    );
}
