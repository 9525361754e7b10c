//! The Pocket Agent core: an agent loop small enough to read in one sitting.
//!
//! An [`Agent`] is a [`Model`], a set of tools ([`Tool`] / [`DynTool`]), an iteration limit,
//! time limits, an [`Approver`] for risky calls, and [`Plugin`] hooks. Every step of a run is
//! an [`AgentEvent`] on a channel other layers subscribe to. Errors are typed and classified
//! ([`Classify`]) so that retry, breaker and alerting layers decide on kinds, not strings.
//!
//! ```
//! use pocket_agent::{Agent, Completion, CompletionRequest, Message, Model, ModelError};
//! use pocket_agent::{Tool, ToolCall, ToolContext, ToolError};
//! use schemars::JsonSchema;
//! use serde::Deserialize;
//!
//! /// A model that asks for one tool call, then answers with its result.
//! struct Scripted;
//!
//! impl Model for Scripted {
//!     fn name(&self) -> &str {
//!         "scripted"
//!     }
//!
//!     async fn complete(&self, req: &CompletionRequest) -> Result<Completion, ModelError> {
//!         match req.messages.last() {
//!             Some(Message::Tool { content, .. }) => Ok(Completion::text(format!("It is {content}."))),
//!             _ => Ok(Completion::tool_calls(vec![ToolCall {
//!                 id: "1".into(),
//!                 name: "double".into(),
//!                 arguments: serde_json::json!({ "x": 21 }),
//!             }])),
//!         }
//!     }
//! }
//!
//! #[derive(Deserialize, JsonSchema)]
//! struct DoubleArgs {
//!     /// The number to double.
//!     x: i64,
//! }
//!
//! struct Double;
//!
//! impl Tool for Double {
//!     type Args = DoubleArgs;
//!     type Output = i64;
//!     fn name(&self) -> &str { "double" }
//!     fn description(&self) -> &str { "Doubles a number." }
//!     async fn call(&self, args: DoubleArgs, _: &ToolContext) -> Result<i64, ToolError> {
//!         Ok(args.x * 2)
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let agent = Agent::builder(Scripted).tool(Double).max_iterations(4).build()?;
//! let out = agent.run("What is 21 doubled?").await?;
//! assert_eq!(out.answer, "It is 42.");
//! assert_eq!(out.iterations, 2);
//! # Ok(()) }
//! ```
//!
//! Feature `test-utils` adds [`testing`](crate::testing) doubles (a scripted model). The crate depends on tokio, serde, schemars, jsonschema,
//! thiserror and tracing only, so embedding an agent pulls in no server or database.

pub mod agent;
pub mod approval;
pub mod durable;
pub mod error;
pub mod event;
pub mod message;
pub mod model;
pub mod plugin;
#[cfg(any(test, feature = "test-utils"))]
pub mod testing;
pub mod tool;

pub use agent::{
    Agent, AgentBuilder, BuildError, EVENT_CAPACITY, RunOutput, RunRequest, ToolCallRecord,
};
pub use approval::{
    Approval, ApprovalError, ApprovalPolicy, ApprovalRequest, Approver, AutoApprove, DenyAll,
    OnApprovalFailure,
};
pub use durable::{
    Checkpoint, CheckpointError, CheckpointRef, Checkpointer, InterruptedCalls, JournalEntry,
    JournalState,
};
pub use error::{
    AgentError, AgentErrorKind, Classification, Classify, ErrorKind, ModelError, Severity,
    ToolError,
};
pub use event::{AgentEvent, EventKind};
pub use message::{
    Completion, CompletionRequest, FinishReason, Message, RequestOptions, StreamEvent, ToolCall,
    Usage,
};
pub use model::{BoxModel, CompletionStream, Model, completion_as_stream};
pub use plugin::{AfterRun, AfterTool, BeforeRun, BeforeTool, Plugin, RunInfo};
pub use tool::{DynTool, Risk, SharedTool, Tool, ToolContext, ToolSpec, schema_for};

/// Re-exported so tool authors derive schemas with the same version the agent reads.
pub use schemars;
/// Re-exported for cancellation of runs.
pub use tokio_util::sync::CancellationToken;
