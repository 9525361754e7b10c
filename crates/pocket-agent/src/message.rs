//! Conversation messages, tool calls, and the request/response types of a model call.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::tool::ToolSpec;

/// One message of a conversation, tagged by its role.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "role", rename_all = "snake_case")]
pub enum Message {
    /// Instructions for the model.
    System {
        /// The instructions.
        content: String,
    },
    /// What the user asked.
    User {
        /// The user's text.
        content: String,
    },
    /// A model turn: text, tool calls, or both.
    Assistant {
        /// Text the model produced, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        content: Option<String>,
        /// Tool calls the model asked for, in order.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        tool_calls: Vec<ToolCall>,
    },
    /// The result of one tool call, answering the assistant's call with the same id.
    Tool {
        /// The id of the call this answers.
        call_id: String,
        /// The tool's name.
        name: String,
        /// The result (JSON text) or the error message the model sees.
        content: String,
        /// Whether `content` is an error.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        is_error: bool,
    },
}

impl Message {
    /// A system message.
    pub fn system(content: impl Into<String>) -> Self {
        Self::System {
            content: content.into(),
        }
    }

    /// A user message.
    pub fn user(content: impl Into<String>) -> Self {
        Self::User {
            content: content.into(),
        }
    }

    /// An assistant message with text only.
    pub fn assistant(content: impl Into<String>) -> Self {
        Self::Assistant {
            content: Some(content.into()),
            tool_calls: Vec::new(),
        }
    }

    /// The text of the message, if it has any.
    pub fn text(&self) -> Option<&str> {
        match self {
            Self::System { content } | Self::User { content } | Self::Tool { content, .. } => {
                Some(content)
            }
            Self::Assistant { content, .. } => content.as_deref(),
        }
    }
}

/// A call of a tool by the model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    /// The provider's id for this call; results refer to it.
    pub id: String,
    /// The tool's name.
    pub name: String,
    /// The arguments. A provider that received arguments that are not valid JSON passes the
    /// raw text as a JSON string, so the agent can tell the model what was wrong.
    pub arguments: Value,
}

/// Token counts of one model call or a whole run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Tokens in the prompt.
    pub input_tokens: u64,
    /// Tokens the model produced.
    pub output_tokens: u64,
}

impl Usage {
    /// Input plus output tokens.
    pub fn total(&self) -> u64 {
        self.input_tokens + self.output_tokens
    }
}

impl std::ops::AddAssign for Usage {
    fn add_assign(&mut self, rhs: Self) {
        self.input_tokens += rhs.input_tokens;
        self.output_tokens += rhs.output_tokens;
    }
}

/// Why the model stopped producing output.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum FinishReason {
    /// The model finished its answer.
    #[default]
    Stop,
    /// The model asked for tool calls.
    ToolCalls,
    /// The output hit the token limit.
    Length,
    /// The provider filtered the output.
    ContentFilter,
    /// Anything else the provider reported.
    Other,
}

/// Sampling options of a model call. `None` leaves the provider's default.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RequestOptions {
    /// Sampling temperature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    /// Upper bound of output tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
}

/// What a model is asked: the conversation so far and the tools it may call.
#[derive(Debug, Clone, Default)]
pub struct CompletionRequest {
    /// The conversation, oldest first.
    pub messages: Vec<Message>,
    /// The tools the model may call (shared, so a request is cheap to build each turn).
    pub tools: Arc<[ToolSpec]>,
    /// Sampling options.
    pub options: RequestOptions,
    /// When the caller stops waiting (the run's time limit); layers that wait (retry,
    /// wait-for-cool-down) must not sleep past it. `None`: no deadline.
    pub deadline: Option<tokio::time::Instant>,
}

impl CompletionRequest {
    /// A request with these messages and no tools.
    pub fn new(messages: Vec<Message>) -> Self {
        Self {
            messages,
            ..Self::default()
        }
    }
}

/// A model's answer to one request.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Completion {
    /// Text of the answer, if any.
    pub content: Option<String>,
    /// Tool calls asked for, in order.
    pub tool_calls: Vec<ToolCall>,
    /// Tokens used by this call.
    pub usage: Usage,
    /// Why the model stopped.
    pub finish_reason: FinishReason,
}

impl Completion {
    /// A completion with text only.
    pub fn text(content: impl Into<String>) -> Self {
        Self {
            content: Some(content.into()),
            ..Self::default()
        }
    }

    /// A completion that asks for these tool calls.
    pub fn tool_calls(calls: Vec<ToolCall>) -> Self {
        Self {
            tool_calls: calls,
            finish_reason: FinishReason::ToolCalls,
            ..Self::default()
        }
    }

    /// The assistant message this completion adds to a conversation.
    pub fn to_message(&self) -> Message {
        Message::Assistant {
            content: self.content.clone(),
            tool_calls: self.tool_calls.clone(),
        }
    }
}

/// One item of a streamed completion.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum StreamEvent {
    /// A piece of the answer's text.
    TextDelta(String),
    /// A tool call began (its arguments follow as deltas).
    ToolCallStart {
        /// Position of the call in the turn.
        index: usize,
        /// The call's id.
        id: String,
        /// The tool's name.
        name: String,
    },
    /// A piece of a tool call's JSON arguments.
    ToolCallDelta {
        /// Position of the call in the turn.
        index: usize,
        /// The piece of JSON text.
        arguments: String,
    },
    /// The whole completion, assembled; always the last item of a successful stream.
    Done(Completion),
}
