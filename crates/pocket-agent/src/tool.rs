//! Tools: what an agent can do besides talking.
//!
//! Authors implement the typed [`Tool`] trait; its JSON Schema is derived from `Args`. The
//! agent holds tools as [`DynTool`] (JSON in, JSON out), which is also what tools without a
//! Rust type for their arguments (MCP servers, say) implement directly.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::error::ToolError;

/// How risky a tool is; decides whether a person must approve a call.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Risk {
    /// Reads or computes; no effects outside the process.
    #[default]
    Safe,
    /// Reaches outside (network, files) but does not destroy.
    Sensitive,
    /// Can destroy or execute (shell, delete); needs approval by default.
    Dangerous,
}

impl Risk {
    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Safe => "safe",
            Self::Sensitive => "sensitive",
            Self::Dangerous => "dangerous",
        }
    }
}

/// What the model and the agent know of a tool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolSpec {
    /// Unique name within an agent.
    pub name: String,
    /// What the tool does, for the model.
    pub description: String,
    /// JSON Schema of the arguments (an object schema).
    pub parameters: Value,
    /// Risk level.
    pub risk: Risk,
    /// Whether calling twice with the same arguments is harmless (retry layers may retry it).
    #[serde(default)]
    pub idempotent: bool,
    /// Time limit of one call; `None` uses the agent's tool timeout.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::event::opt_duration_secs"
    )]
    pub timeout: Option<Duration>,
}

impl ToolSpec {
    /// A safe, non-idempotent spec with no own time limit.
    pub fn new(name: impl Into<String>, description: impl Into<String>, parameters: Value) -> Self {
        Self {
            name: name.into(),
            description: description.into(),
            parameters,
            risk: Risk::Safe,
            idempotent: false,
            timeout: None,
        }
    }

    /// Sets the risk level.
    #[must_use]
    pub fn with_risk(mut self, risk: Risk) -> Self {
        self.risk = risk;
        self
    }
}

/// What a tool call knows of the run it belongs to.
#[derive(Debug, Clone)]
pub struct ToolContext {
    /// The run's id.
    pub run_id: Arc<str>,
    /// The agent's name.
    pub agent: Arc<str>,
    /// The model's id for this call.
    pub call_id: String,
    /// Cancelled when the run is cancelled or times out; long tools should watch it.
    pub cancel: CancellationToken,
}

impl ToolContext {
    /// A context for calling a tool outside an agent run (tests, scripts).
    pub fn detached() -> Self {
        Self {
            run_id: Arc::from("detached"),
            agent: Arc::from("none"),
            call_id: String::from("call"),
            cancel: CancellationToken::new(),
        }
    }
}

/// A tool with typed arguments; its schema is derived from `Args`.
///
/// ```
/// use pocket_agent::{Tool, ToolContext, ToolError};
/// use schemars::JsonSchema;
/// use serde::Deserialize;
///
/// #[derive(Deserialize, JsonSchema)]
/// struct AddArgs {
///     /// First addend.
///     a: f64,
///     /// Second addend.
///     b: f64,
/// }
///
/// struct Add;
///
/// impl Tool for Add {
///     type Args = AddArgs;
///     type Output = f64;
///
///     fn name(&self) -> &str {
///         "add"
///     }
///
///     fn description(&self) -> &str {
///         "Adds two numbers."
///     }
///
///     async fn call(&self, args: AddArgs, _ctx: &ToolContext) -> Result<f64, ToolError> {
///         Ok(args.a + args.b)
///     }
/// }
/// ```
pub trait Tool: Send + Sync + 'static {
    /// The arguments; their JSON Schema is what the model sees.
    type Args: DeserializeOwned + JsonSchema + Send;
    /// The result, serialized to JSON for the model.
    type Output: Serialize + Send;

    /// Unique name within an agent.
    fn name(&self) -> &str;

    /// What the tool does, for the model.
    fn description(&self) -> &str;

    /// Risk level. Default: [`Risk::Safe`].
    fn risk(&self) -> Risk {
        Risk::Safe
    }

    /// Whether calling twice with the same arguments is harmless. Default: `false`.
    fn idempotent(&self) -> bool {
        false
    }

    /// Own time limit of one call. Default: `None` (the agent's tool timeout).
    fn timeout(&self) -> Option<Duration> {
        None
    }

    /// Runs the tool.
    ///
    /// # Errors
    /// A [`ToolError`]; the agent shows it to the model as the call's result.
    fn call(
        &self,
        args: Self::Args,
        ctx: &ToolContext,
    ) -> impl Future<Output = Result<Self::Output, ToolError>> + Send;

    /// The tool behind the JSON-level [`DynTool`] interface the agent uses.
    fn into_dyn(self) -> SharedTool
    where
        Self: Sized,
    {
        Arc::new(Typed::new(self))
    }
}

/// A tool at the JSON level: what the agent stores and calls.
pub trait DynTool: Send + Sync + 'static {
    /// The tool's spec.
    fn spec(&self) -> &ToolSpec;

    /// Calls the tool with arguments already validated against the spec's schema.
    ///
    /// # Errors
    /// A [`ToolError`]; the agent shows it to the model as the call's result.
    fn call<'a>(
        &'a self,
        args: Value,
        ctx: &'a ToolContext,
    ) -> BoxFuture<'a, Result<Value, ToolError>>;
}

/// A shared, type-erased tool.
pub type SharedTool = Arc<dyn DynTool>;

impl std::fmt::Debug for dyn DynTool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DynTool")
            .field("name", &self.spec().name)
            .field("risk", &self.spec().risk)
            .finish()
    }
}

// Compile-time check that the trait stays object safe.
const _: Option<&dyn DynTool> = None;

/// The schema of `T` as a JSON value, without the `$schema` and `title` noise.
pub fn schema_for<T: JsonSchema>() -> Value {
    let mut value = serde_json::to_value(schemars::schema_for!(T)).unwrap_or(Value::Null);
    if let Some(obj) = value.as_object_mut() {
        obj.remove("$schema");
        obj.remove("title");
        if !obj.contains_key("properties") && obj.get("type") == Some(&Value::from("object")) {
            obj.insert("properties".into(), Value::Object(Default::default()));
        }
    }
    value
}

/// Adapter from a typed [`Tool`] to [`DynTool`]; caches the spec.
struct Typed<T> {
    tool: T,
    spec: ToolSpec,
}

impl<T: Tool> Typed<T> {
    fn new(tool: T) -> Self {
        let spec = ToolSpec {
            name: tool.name().to_owned(),
            description: tool.description().to_owned(),
            parameters: schema_for::<T::Args>(),
            risk: tool.risk(),
            idempotent: tool.idempotent(),
            timeout: tool.timeout(),
        };
        Self { tool, spec }
    }
}

impl<T: Tool> DynTool for Typed<T> {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }

    fn call<'a>(
        &'a self,
        args: Value,
        ctx: &'a ToolContext,
    ) -> BoxFuture<'a, Result<Value, ToolError>> {
        Box::pin(async move {
            let args: T::Args = serde_json::from_value(args)
                .map_err(|e| ToolError::invalid_arguments(e.to_string()))?;
            let out = self.tool.call(args, ctx).await?;
            serde_json::to_value(out)
                .map_err(|e| ToolError::failed(format!("tool output is not JSON: {e}")))
        })
    }
}
