//! One MCP tool as a [`DynTool`] named `SERVER.tool`, and how its results and failures map
//! onto ours.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use pocket_agent::{DynTool, ToolContext, ToolError, ToolSpec};
use rmcp::ServiceError;
use rmcp::model::{
    CallToolRequestParams, CallToolResult, ContentBlock, ErrorCode, ResourceContents,
};
use serde_json::Value;

use crate::hub::HubInner;
use crate::server::{Server, ServerState};

/// A tool of an MCP server. The server is looked up at call time, so a restarted server and a
/// refreshed tool list are used without rebuilding the agent.
pub(crate) struct McpTool {
    /// Keeps the hub (and so the server's supervisor) alive while an agent holds the tool.
    _hub: Arc<HubInner>,
    server: Arc<Server>,
    /// The tool's name on the server.
    remote: String,
    spec: ToolSpec,
    timeout: Duration,
}

impl McpTool {
    pub(crate) fn new(hub: Arc<HubInner>, server: Arc<Server>, info: &rmcp::model::Tool) -> Self {
        let config = &server.config;
        let remote = info.name.to_string();
        let description = info
            .description
            .as_deref()
            .or(info.title.as_deref())
            .unwrap_or_default()
            .to_owned();
        let mut parameters = Value::Object((*info.input_schema).clone());
        if let Some(obj) = parameters.as_object_mut() {
            obj.entry("type").or_insert_with(|| Value::from("object"));
        }
        let timeout = config.call_timeout();
        let spec = ToolSpec {
            name: format!("{}.{remote}", server.name),
            description,
            parameters,
            risk: config.risk_of(&remote),
            // Annotations (idempotentHint) come from the server and are only hints; a retry
            // layer must not trust them, so nothing is marked idempotent.
            idempotent: false,
            timeout: Some(timeout),
        };
        Self {
            _hub: hub,
            server,
            remote,
            spec,
            timeout,
        }
    }

    /// The peer to call, or why the call cannot be made now.
    fn peer(&self) -> Result<rmcp::Peer<rmcp::RoleClient>, ToolError> {
        let name = &self.server.name;
        let state = self.server.snapshot();
        match state.phase {
            ServerState::Running => {
                let offered = state
                    .tools
                    .as_ref()
                    .is_some_and(|t| t.contains_key(&self.remote));
                if !offered {
                    return Err(ToolError::failed(format!(
                        "MCP server `{name}` no longer offers the tool `{}`",
                        self.remote
                    )));
                }
                state
                    .peer
                    .ok_or_else(|| ToolError::transient(format!("MCP server `{name}` is starting")))
            }
            ServerState::Restarting => {
                let mut message = format!(
                    "MCP server `{name}` is restarting (attempt {})",
                    state.attempt
                );
                if let Some(e) = state.last_error {
                    message.push_str(&format!("; it stopped because: {e}"));
                }
                Err(ToolError::transient(message))
            }
            ServerState::Idle | ServerState::Starting => {
                self.server.request_start();
                Err(ToolError::transient(format!(
                    "MCP server `{name}` is starting"
                )))
            }
            ServerState::Stopped => Err(ToolError::failed(format!(
                "MCP server `{name}` is shut down"
            ))),
        }
    }

    async fn call_remote(&self, args: Value, ctx: &ToolContext) -> Result<Value, ToolError> {
        let peer = self.peer()?;
        let arguments = match args {
            Value::Object(map) => Some(map),
            Value::Null => None,
            other => {
                return Err(ToolError::invalid_arguments(format!(
                    "arguments must be a JSON object, got {other}"
                )));
            }
        };
        let mut params = CallToolRequestParams::new(self.remote.clone());
        params.arguments = arguments;
        // Dropping the request (time-out, cancellation) makes rmcp tell the server with
        // `notifications/cancelled`.
        let result = tokio::select! {
            biased;
            () = ctx.cancel.cancelled() => return Err(ToolError::Cancelled),
            result = tokio::time::timeout(self.timeout, peer.call_tool(params)) => result,
        };
        match result {
            Err(_) => Err(ToolError::Timeout {
                after: self.timeout,
            }),
            Ok(Ok(result)) => into_value(result),
            Ok(Err(e)) => Err(service_error(&self.server.name, e)),
        }
    }
}

impl DynTool for McpTool {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }

    fn call<'a>(
        &'a self,
        args: Value,
        ctx: &'a ToolContext,
    ) -> BoxFuture<'a, Result<Value, ToolError>> {
        Box::pin(self.call_remote(args, ctx))
    }
}

/// A result with `isError: true` is the tool's own failure: not retryable, with its text.
/// Otherwise `structuredContent` when present, else the content as text.
pub(crate) fn into_value(result: CallToolResult) -> Result<Value, ToolError> {
    let text = content_text(&result.content);
    if result.is_error == Some(true) {
        let message = if text.is_empty() {
            "the MCP tool reported an error without a message".to_owned()
        } else {
            text
        };
        return Err(ToolError::failed(message));
    }
    match result.structured_content {
        Some(value) => Ok(value),
        None => Ok(Value::String(text)),
    }
}

/// Text blocks as they are, other blocks as a short bracketed note; one block a line.
fn content_text(content: &[ContentBlock]) -> String {
    let parts: Vec<String> = content
        .iter()
        .map(|block| match block {
            ContentBlock::Text(t) => t.text.clone(),
            ContentBlock::Image(i) => {
                format!("[image: {}, {} bytes base64]", i.mime_type, i.data.len())
            }
            ContentBlock::Audio(a) => {
                format!("[audio: {}, {} bytes base64]", a.mime_type, a.data.len())
            }
            ContentBlock::Resource(r) => match &r.resource {
                ResourceContents::TextResourceContents { text, .. } => text.clone(),
                ResourceContents::BlobResourceContents { uri, .. } => format!("[resource: {uri}]"),
                _ => "[resource]".to_owned(),
            },
            ContentBlock::ResourceLink(link) => format!("[resource link: {}]", link.uri),
            _ => "[content of an unsupported type]".to_owned(),
        })
        .collect();
    parts.join("\n")
}

/// Protocol and transport failures. The server's refusal of the arguments is
/// [`ToolError::InvalidArguments`] (the model may fix them); a broken connection is retryable
/// (the supervisor restarts the server); other JSON-RPC errors are not.
pub(crate) fn service_error(server: &str, error: ServiceError) -> ToolError {
    let (message, retryable) = match &error {
        ServiceError::McpError(data) if data.code == ErrorCode::INVALID_PARAMS => {
            return ToolError::invalid_arguments(data.message.to_string());
        }
        ServiceError::McpError(data) => {
            // The message is all of it; keeping the error as the source would say it twice.
            return ToolError::failed(format!(
                "MCP server `{server}` refused the call: {}",
                data.message
            ));
        }
        ServiceError::Timeout { timeout } => return ToolError::Timeout { after: *timeout },
        ServiceError::Cancelled { .. } => return ToolError::Cancelled,
        ServiceError::TransportClosed | ServiceError::TransportSend(_) => (
            format!(
                "the connection to MCP server `{server}` broke during the call; it is being restarted"
            ),
            true,
        ),
        _ => (
            format!("MCP server `{server}` gave an answer we cannot use"),
            false,
        ),
    };
    ToolError::Failed {
        message,
        retryable,
        source: Some(Box::new(error)),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use pocket_agent::Classify;
    use rmcp::model::ErrorData;
    use serde_json::json;

    use super::*;

    fn result(value: Value) -> CallToolResult {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn text_content_is_joined() {
        let r = result(json!({"content": [
            {"type": "text", "text": "one"},
            {"type": "text", "text": "two"},
            {"type": "image", "data": "AAAA", "mimeType": "image/png"}
        ]}));
        assert_eq!(
            into_value(r).unwrap(),
            json!("one\ntwo\n[image: image/png, 4 bytes base64]")
        );
    }

    #[test]
    fn structured_content_wins() {
        let r = result(json!({
            "content": [{"type": "text", "text": "{\"a\":1}"}],
            "structuredContent": {"a": 1}
        }));
        assert_eq!(into_value(r).unwrap(), json!({"a": 1}));
    }

    #[test]
    fn is_error_results_are_failures_that_are_not_retryable() {
        let r = result(json!({
            "content": [{"type": "text", "text": "Access denied"}],
            "isError": true
        }));
        let e = into_value(r).unwrap_err();
        assert!(matches!(
            e,
            ToolError::Failed {
                retryable: false,
                ..
            }
        ));
        assert_eq!(e.to_string(), "Access denied");
        let empty = into_value(result(json!({"content": [], "isError": true}))).unwrap_err();
        assert!(empty.to_string().contains("without a message"));
    }

    #[test]
    fn service_errors_map_to_typed_tool_errors() {
        let invalid = service_error(
            "fs",
            ServiceError::McpError(ErrorData::invalid_params("path is required", None)),
        );
        assert!(matches!(invalid, ToolError::InvalidArguments { .. }));
        let closed = service_error("fs", ServiceError::TransportClosed);
        assert!(closed.is_retryable());
        assert!(closed.to_string().contains("`fs`"));
        let refused = service_error(
            "fs",
            ServiceError::McpError(ErrorData::internal_error("boom", None)),
        );
        assert!(!refused.is_retryable());
        assert_eq!(
            refused.to_string(),
            "MCP server `fs` refused the call: boom"
        );
        let timeout = service_error(
            "fs",
            ServiceError::Timeout {
                timeout: Duration::from_secs(2),
            },
        );
        assert!(matches!(timeout, ToolError::Timeout { .. }));
    }
}
