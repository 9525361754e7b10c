//! Resilience layers for Pocket Agent: retries with budgets, circuit breakers, fallbacks, the
//! protected agent and its health report.
//!
//! Every layer wraps one of the core's traits and is that trait again: [`Retry`] and
//! [`CircuitBreaker`] are [`Model`]s over a `Model`, [`Fallback`] is a `Model` over routes,
//! [`RetryTool`] and [`BreakerTool`] are tools over a tool, and [`ProtectedAgent`] wraps an
//! [`Agent`]. They share one [`ResilienceHub`]: the breaker registry, the retry budgets, the
//! [`ResilienceEvent`] channel, the counters ([`MetricsSnapshot`]) and the [`HealthReport`].
//!
//! # The order of the layers
//!
//! ```text
//! ProtectedAgent                    whole-run retries, agent breaker, fallback executor,
//!  │                                degraded path, error history, health report
//!  └─ Agent (the core loop)
//!      ├─ model: Fallback           routes in order; waits when all are open or rate-limited;
//!      │   │                        opens the call's scope (attempts across hops, deadline)
//!      │   ├─ Retry                 backoff + Retry-After + budget, per model endpoint
//!      │   │   └─ CircuitBreaker    per model endpoint
//!      │   │       └─ provider      never retries on its own
//!      │   └─ Retry(CircuitBreaker(fallback provider)) ...
//!      └─ tools: RetryTool          idempotent tools only
//!          └─ BreakerTool           per tool
//!              └─ tool
//! ```
//!
//! Why this order: the breaker sits inside the retry so it sees every attempt (it counts each
//! provider failure and refuses calls while open, which the retry layer then waits for or
//! hands to the fallback instead of hammering); the fallback sits outside the routes' retries
//! so a route gets its retries before the call moves on, while the scope the fallback opens
//! bounds attempts and time across all hops. Retries of whole runs are outermost and paid
//! from the agent's own budget; a model call inside a run still has exactly one retry loop.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//!
//! use pocket_agent::{Agent, BoxModel, Completion, CompletionRequest, Model, ModelError};
//! use pocket_resilience::{
//!     BreakerPolicy, CircuitBreaker, Fallback, FallbackPolicy, ProtectedAgent, ResilienceHub,
//!     Retry, RetryPolicy,
//! };
//!
//! /// A provider that is down.
//! struct Down;
//!
//! impl Model for Down {
//!     fn name(&self) -> &str { "primary" }
//!     async fn complete(&self, _: &CompletionRequest) -> Result<Completion, ModelError> {
//!         Err(ModelError::Server { status: 500, message: "down".into(), retry_after: None })
//!     }
//! }
//!
//! /// A provider that answers.
//! struct Up;
//!
//! impl Model for Up {
//!     fn name(&self) -> &str { "backup" }
//!     async fn complete(&self, _: &CompletionRequest) -> Result<Completion, ModelError> {
//!         Ok(Completion::text("hello from the backup"))
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let hub = ResilienceHub::new();
//! let retry = RetryPolicy { base_delay: Duration::from_millis(1), ..RetryPolicy::default() };
//! let breaker = BreakerPolicy::default();
//! let route = |m: BoxModel| {
//!     BoxModel::new(Retry::new(CircuitBreaker::new(m, &breaker, &hub), retry.clone(), &hub))
//! };
//! let model = Fallback::new(
//!     route(BoxModel::new(Down)),
//!     [route(BoxModel::new(Up))],
//!     FallbackPolicy::default(),
//!     &hub,
//! );
//! let agent = Agent::builder(model).name("helper").build()?;
//! let protected = ProtectedAgent::builder(agent, &hub).build();
//!
//! let out = protected.run("say hello").await?;
//! assert_eq!(out.output.answer, "hello from the backup");
//! let metrics = hub.metrics();
//! assert_eq!(metrics.retries_total["model:primary"], 2); // 3 attempts on the primary
//! assert_eq!(metrics.fallbacks_total["model:primary"], 1); // then the backup answered
//! assert_eq!(hub.health_report().health_score, 100);
//! # Ok(()) }
//! ```
//!
//! [`ResilienceConfig`] reads the `[resilience]` section of `pocket.toml` and builds these
//! layers ([`wrap_model`](ResilienceConfig::wrap_model),
//! [`model_chain`](ResilienceConfig::model_chain), [`wrap_tool`](ResilienceConfig::wrap_tool),
//! [`protect`](ResilienceConfig::protect)). [`chaos::Outage`] takes a model down for a while,
//! for demos and drills.
//!
//! All waiting uses `tokio::time`, so tests run on paused virtual time. The crate has no
//! cargo features; it depends on the core, tokio, tower (for its retry budget), serde,
//! thiserror, tracing and fastrand.
//!
//! [`Model`]: pocket_agent::Model
//! [`Agent`]: pocket_agent::Agent

pub mod breaker;
pub mod chaos;
mod config;
mod error;
mod event;
pub mod fallback;
mod health;
mod hub;
mod metrics;
pub mod protected;
pub mod retry;
mod scope;

pub use breaker::{
    Breaker, BreakerPolicy, BreakerSnapshot, BreakerState, BreakerTool, CircuitBreaker, Outcome,
    Permit, Rejected,
};
pub use config::{
    AgentOverrides, BreakerConfig, ConfigError, FallbackConfig, ModelOverrides, ProtectedConfig,
    ResilienceConfig, RetryConfig, ToolOverrides,
};
pub use error::DeadlineWouldPass;
pub use event::ResilienceEvent;
pub use fallback::{Fallback, FallbackPolicy};
pub use health::HealthReport;
pub use hub::{Component, ResilienceHub};
pub use metrics::MetricsSnapshot;
pub use protected::{
    AgentFailure, Cause, ErrorCallback, Executor, FnExecutor, ProtectedAgent, ProtectedBuilder,
    ProtectedError, ProtectedOutput, ProtectedPolicy, RunPath,
};
pub use retry::{BudgetPolicy, Jitter, Retry, RetryBudget, RetryPolicy, RetryTool};
