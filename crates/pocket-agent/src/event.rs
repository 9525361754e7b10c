//! The event stream of every step of every run.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use serde_json::Value;

use crate::error::Classification;
use crate::message::Usage;
use crate::tool::Risk;

/// One step of a run, as seen by subscribers of [`Agent::subscribe`](crate::Agent::subscribe).
#[derive(Debug, Clone, Serialize)]
pub struct AgentEvent {
    /// The run's id.
    pub run_id: Arc<str>,
    /// The agent's name.
    pub agent: Arc<str>,
    /// When the step happened.
    #[serde(serialize_with = "unix_secs")]
    pub at: SystemTime,
    /// What happened.
    #[serde(flatten)]
    pub kind: EventKind,
}

/// What happened in a step.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum EventKind {
    /// A run started.
    RunStarted {
        /// The task.
        task: Arc<str>,
    },
    /// A run resumed from a checkpoint.
    RunResumed {
        /// Model turns already used.
        iterations: u32,
    },
    /// A model call started.
    ModelCallStarted {
        /// The iteration (1-based).
        iteration: u32,
        /// The model's name.
        model: Arc<str>,
    },
    /// A model call returned.
    ModelCallFinished {
        /// The iteration (1-based).
        iteration: u32,
        /// The model's name.
        model: Arc<str>,
        /// How long the call took.
        #[serde(with = "duration_secs")]
        duration: Duration,
        /// Tokens used.
        usage: Usage,
        /// How many tool calls the model asked for.
        tool_calls: usize,
    },
    /// A model call failed.
    ModelCallFailed {
        /// The iteration (1-based).
        iteration: u32,
        /// The model's name.
        model: Arc<str>,
        /// How long the call took.
        #[serde(with = "duration_secs")]
        duration: Duration,
        /// The error.
        error: String,
        /// Its classification.
        classification: Classification,
    },
    /// A piece of the answer's text (streaming agents only).
    TextDelta {
        /// The text.
        text: String,
    },
    /// A tool call is about to run (after hooks, validation and approval).
    ToolCallStarted {
        /// The call's id.
        call_id: String,
        /// The tool.
        tool: Arc<str>,
        /// The arguments it runs with.
        arguments: Value,
    },
    /// A tool call ended (or was refused before running).
    ToolCallFinished {
        /// The call's id.
        call_id: String,
        /// The tool.
        tool: Arc<str>,
        /// How long the call took.
        #[serde(with = "duration_secs")]
        duration: Duration,
        /// The error the model saw, if the call failed.
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<String>,
        /// The error's classification, if the call failed.
        #[serde(skip_serializing_if = "Option::is_none")]
        classification: Option<Classification>,
    },
    /// A call's result was replayed from the journal; the tool did not run again.
    ToolCallReplayed {
        /// The call's id.
        call_id: String,
        /// The tool.
        tool: Arc<str>,
    },
    /// A person is asked to approve a call.
    ApprovalRequested {
        /// The call's id.
        call_id: String,
        /// The tool.
        tool: Arc<str>,
        /// Its effective risk.
        risk: Risk,
        /// The arguments asked for.
        arguments: Value,
    },
    /// A person answered.
    ApprovalDecided {
        /// The call's id.
        call_id: String,
        /// The tool.
        tool: Arc<str>,
        /// `approve`, `deny` or `edit`.
        decision: &'static str,
        /// The reason of a denial.
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// Asking failed or timed out; the fail-safe policy decided (the seed's `humanInLoopError`).
    ApprovalFailed {
        /// The call's id.
        call_id: String,
        /// The tool.
        tool: Arc<str>,
        /// What failed.
        error: String,
        /// Whether the call was denied because of it.
        denied: bool,
    },
    /// A run ended with an answer.
    RunFinished {
        /// Model turns used.
        iterations: u32,
        /// Tokens used.
        usage: Usage,
        /// How long the run took.
        #[serde(with = "duration_secs")]
        duration: Duration,
    },
    /// A run failed.
    RunFailed {
        /// Model turns used.
        iterations: u32,
        /// The error.
        error: String,
        /// Its classification.
        classification: Classification,
        /// How long the run took.
        #[serde(with = "duration_secs")]
        duration: Duration,
    },
}

impl EventKind {
    /// The snake_case name of the event, as in its JSON `type`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::RunStarted { .. } => "run_started",
            Self::RunResumed { .. } => "run_resumed",
            Self::ModelCallStarted { .. } => "model_call_started",
            Self::ModelCallFinished { .. } => "model_call_finished",
            Self::ModelCallFailed { .. } => "model_call_failed",
            Self::TextDelta { .. } => "text_delta",
            Self::ToolCallStarted { .. } => "tool_call_started",
            Self::ToolCallFinished { .. } => "tool_call_finished",
            Self::ToolCallReplayed { .. } => "tool_call_replayed",
            Self::ApprovalRequested { .. } => "approval_requested",
            Self::ApprovalDecided { .. } => "approval_decided",
            Self::ApprovalFailed { .. } => "approval_failed",
            Self::RunFinished { .. } => "run_finished",
            Self::RunFailed { .. } => "run_failed",
        }
    }
}

fn unix_secs<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    s.serialize_f64(secs)
}

pub(crate) mod duration_secs {
    use std::time::Duration;

    pub(crate) fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }
}

pub(crate) mod opt_duration_secs {
    use std::time::Duration;

    use serde::Deserialize;

    pub(crate) fn serialize<S: serde::Serializer>(
        d: &Option<Duration>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_f64(d.as_secs_f64()),
            None => s.serialize_none(),
        }
    }

    pub(crate) fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        let secs = Option::<f64>::deserialize(d)?;
        secs.map(|s| Duration::try_from_secs_f64(s).map_err(serde::de::Error::custom))
            .transpose()
    }
}
