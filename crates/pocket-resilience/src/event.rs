//! What the layers report: [`ResilienceEvent`]s on the hub's broadcast channel.

use std::sync::Arc;
use std::time::Duration;

use pocket_agent::{Classification, ErrorKind};
use serde::Serialize;

use crate::breaker::BreakerState;
use crate::protected::RunPath;

/// Something a resilience layer did, as seen by [`ResilienceHub::subscribe`](crate::ResilienceHub::subscribe).
///
/// Keys name what a layer guards: `model:NAME`, `tool:NAME` or `agent:NAME`, where `NAME` is
/// the model's endpoint name (`openai:gpt-4o`), the tool's name or the agent's name.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ResilienceEvent {
    /// A circuit breaker changed state.
    BreakerTransition {
        /// The breaker's key.
        key: Arc<str>,
        /// The state it left.
        from: BreakerState,
        /// The state it entered.
        to: BreakerState,
    },
    /// A failed call will be tried again after `delay`.
    RetryScheduled {
        /// What is retried.
        key: Arc<str>,
        /// The attempt that failed (1-based, counted across fallback hops).
        attempt: u32,
        /// How long the layer waits before the next attempt.
        #[serde(with = "secs")]
        delay: Duration,
        /// What kind of failure it was.
        kind: ErrorKind,
    },
    /// A retry was refused because the key's retry budget is spent.
    BudgetExhausted {
        /// The budget's key.
        key: Arc<str>,
    },
    /// A call fell through from one model route to the next.
    FallbackTaken {
        /// The route that failed or was unavailable.
        from: Arc<str>,
        /// The route tried next.
        to: Arc<str>,
        /// Why: the kind of the error that made it fall through.
        kind: ErrorKind,
    },
    /// Every route of a call is open or rate-limited; the call waits for the earliest.
    WaitingForCoolDown {
        /// The routes (keys) waited for.
        keys: Vec<Arc<str>>,
        /// How long the call waits.
        #[serde(with = "secs")]
        wait: Duration,
    },
    /// A protected agent's run attempt failed (the seed's `agentFailed`).
    AgentFailed {
        /// The agent.
        agent: Arc<str>,
        /// The failed run's id.
        run_id: String,
        /// The attempt (1-based).
        attempt: u32,
        /// The error.
        error: String,
        /// Its classification.
        classification: Classification,
    },
    /// A protected agent answered again after failing.
    AgentRecovered {
        /// The agent.
        agent: Arc<str>,
        /// Time from the first failure of the streak to this success.
        #[serde(with = "secs")]
        after: Duration,
    },
    /// A protected agent's answer came from its fallback executor or its degraded path.
    ExecutorTaken {
        /// The agent.
        agent: Arc<str>,
        /// Which path answered.
        path: RunPath,
        /// The kind of the error that led there.
        kind: ErrorKind,
    },
    /// Asking a person to approve a tool call failed; the fail-safe policy decided (the
    /// seed's `humanInLoopError`).
    HumanInLoopError {
        /// The agent.
        agent: Arc<str>,
        /// The run's id.
        run_id: String,
        /// The tool.
        tool: Arc<str>,
        /// What failed.
        error: String,
        /// Whether the call was denied because of it.
        denied: bool,
    },
}

impl ResilienceEvent {
    /// The snake_case name of the event, as in its JSON `type`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::BreakerTransition { .. } => "breaker_transition",
            Self::RetryScheduled { .. } => "retry_scheduled",
            Self::BudgetExhausted { .. } => "budget_exhausted",
            Self::FallbackTaken { .. } => "fallback_taken",
            Self::WaitingForCoolDown { .. } => "waiting_for_cool_down",
            Self::AgentFailed { .. } => "agent_failed",
            Self::AgentRecovered { .. } => "agent_recovered",
            Self::ExecutorTaken { .. } => "executor_taken",
            Self::HumanInLoopError { .. } => "human_in_loop_error",
        }
    }
}

mod secs {
    use std::time::Duration;

    pub(super) fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }
}
