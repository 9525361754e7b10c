//! Helpers shared by the integration tests.

#![allow(dead_code, unreachable_pub)] // each test binary uses a different subset

use pocket_agent::{SharedTool, ToolContext, ToolError};
use serde_json::Value;

/// Calls a tool at the JSON level, as the agent does, outside any run.
pub async fn call(tool: &SharedTool, args: Value) -> Result<Value, ToolError> {
    tool.call(args, &ToolContext::detached()).await
}

/// The tool named `name` among `tools`.
pub fn named(tools: &[SharedTool], name: &str) -> SharedTool {
    tools
        .iter()
        .find(|t| t.spec().name == name)
        .cloned()
        .unwrap_or_else(|| panic!("no tool named {name}"))
}

/// The `Denied` reason, or a panic naming what came instead.
pub fn denied_reason(result: Result<Value, ToolError>) -> String {
    match result {
        Err(ToolError::Denied { reason }) => reason,
        other => panic!("expected Denied, got {other:?}"),
    }
}

/// The `Failed` message and retryability, or a panic naming what came instead.
pub fn failed(result: Result<Value, ToolError>) -> (String, bool) {
    match result {
        Err(ToolError::Failed {
            message, retryable, ..
        }) => (message, retryable),
        other => panic!("expected Failed, got {other:?}"),
    }
}

/// The error of `builtin(name, config)`; `SharedTool` is not `Debug`, so no `unwrap_err`.
pub fn builtin_err(name: &str, config: &pocket_tools::ToolsConfig) -> pocket_tools::ToolsError {
    match pocket_tools::builtin(name, config) {
        Ok(tools) => panic!("`{name}` built {} tool(s), expected an error", tools.len()),
        Err(e) => e,
    }
}
