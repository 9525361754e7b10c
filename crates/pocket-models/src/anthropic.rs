//! The Anthropic Messages API (`POST /v1/messages`) with `tool_use`, usage, and streaming over
//! server-sent events.
//!
//! ```no_run
//! use pocket_agent::{CompletionRequest, Message, Model};
//! use pocket_models::{AnthropicConfig, AnthropicModel};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let model = AnthropicModel::new(AnthropicConfig::from_env("claude-sonnet-4-5")?)?;
//! let answer = model
//!     .complete(&CompletionRequest::new(vec![Message::user("Say hi")]))
//!     .await?;
//! println!("{}", answer.content.unwrap_or_default());
//! # Ok(()) }
//! ```

use std::borrow::Cow;
use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use eventsource_stream::Event;
use pocket_agent::{
    Completion, CompletionRequest, CompletionStream, FinishReason, Message, Model, ModelError,
    StreamEvent, ToolCall, ToolSpec, Usage, completion_as_stream,
};
use reqwest::header::{HeaderMap, HeaderValue};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;

use crate::http::{self, Limits};
pub use crate::http::{ApiKey, ConfigError};
use crate::transport::{Response, Transport};

/// The API version sent in `anthropic-version`.
const API_VERSION: &str = "2023-06-01";

/// Where and how to reach the Anthropic Messages API.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct AnthropicConfig {
    /// The API root; requests go to `{base_url}/v1/messages`.
    /// Default: `https://api.anthropic.com`.
    pub base_url: String,
    /// Sent as `x-api-key`.
    pub api_key: ApiKey,
    /// The model id, like `claude-sonnet-4-5`.
    pub model: String,
    /// Output token limit when the request sets none (the API requires one). Default: 4096.
    pub max_tokens: u32,
    /// Limit of a whole non-streaming call, and of the wait for the first byte and each gap
    /// between events of a stream. Default: 120 s.
    pub timeout: Duration,
    /// Limit of establishing the connection. Default: 10 s.
    pub connect_timeout: Duration,
    /// Reach a plain `http://` base URL (a gateway or a test server) with hyper's HTTP/1
    /// client directly rather than through reqwest; `https://` URLs, and any while
    /// `HTTP_PROXY`/`ALL_PROXY` is set, always go through reqwest. Default: `true`.
    pub direct_http: bool,
}

impl AnthropicConfig {
    /// The default base URL.
    pub const DEFAULT_BASE_URL: &'static str = "https://api.anthropic.com";

    /// A config for `model` with this key and the defaults.
    pub fn new(model: impl Into<String>, api_key: impl Into<ApiKey>) -> Self {
        Self {
            base_url: Self::DEFAULT_BASE_URL.to_owned(),
            api_key: api_key.into(),
            model: model.into(),
            max_tokens: 4096,
            timeout: Duration::from_secs(120),
            connect_timeout: Duration::from_secs(10),
            direct_http: true,
        }
    }

    /// A config for `model` from the environment: `ANTHROPIC_API_KEY` (required) and
    /// `ANTHROPIC_BASE_URL` (optional). Empty variables count as unset.
    ///
    /// # Errors
    /// [`ConfigError::MissingEnv`] if `ANTHROPIC_API_KEY` is not set.
    pub fn from_env(model: impl Into<String>) -> Result<Self, ConfigError> {
        Self::from_lookup(model, |name| std::env::var(name).ok())
    }

    fn from_lookup(
        model: impl Into<String>,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let key = http::non_empty(lookup("ANTHROPIC_API_KEY")).ok_or(ConfigError::MissingEnv {
            var: "ANTHROPIC_API_KEY",
        })?;
        let mut config = Self::new(model, key);
        if let Some(url) = http::non_empty(lookup("ANTHROPIC_BASE_URL")) {
            config.base_url = url;
        }
        Ok(config)
    }

    /// Sets the base URL.
    #[must_use]
    pub fn with_base_url(mut self, base_url: impl Into<String>) -> Self {
        self.base_url = base_url.into();
        self
    }

    /// Sets the default output token limit.
    #[must_use]
    pub fn with_max_tokens(mut self, max_tokens: u32) -> Self {
        self.max_tokens = max_tokens;
        self
    }

    /// Sets the call timeout (see [`timeout`](Self::timeout)).
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets the connect timeout.
    #[must_use]
    pub fn with_connect_timeout(mut self, connect_timeout: Duration) -> Self {
        self.connect_timeout = connect_timeout;
        self
    }

    /// Sets [`direct_http`](Self::direct_http).
    #[must_use]
    pub fn with_direct_http(mut self, direct_http: bool) -> Self {
        self.direct_http = direct_http;
        self
    }
}

/// A Claude model behind the Anthropic Messages API. Cheap to clone.
///
/// It never retries: wrap it in the resilience layer for that.
#[derive(Clone)]
pub struct AnthropicModel {
    inner: Arc<Inner>,
}

struct Inner {
    name: String,
    model: String,
    max_tokens: u32,
    key: HeaderValue,
    /// Kept only to redact it from error bodies that echo it.
    secret: ApiKey,
    transport: Transport,
}

impl fmt::Debug for AnthropicModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AnthropicModel")
            .field("name", &self.inner.name)
            .field("endpoint", &self.inner.transport.endpoint())
            .finish_non_exhaustive()
    }
}

impl AnthropicModel {
    /// A model for this config.
    ///
    /// # Errors
    /// [`ConfigError`] if the base URL is not an http(s) URL, the key cannot be sent in a
    /// header, or the HTTP client cannot be built.
    pub fn new(config: AnthropicConfig) -> Result<Self, ConfigError> {
        let endpoint = http::endpoint(&config.base_url, "/v1/messages")?;
        let limits = Limits {
            timeout: config.timeout,
            connect_timeout: config.connect_timeout,
        };
        Ok(Self {
            inner: Arc::new(Inner {
                name: format!("anthropic:{}", config.model),
                model: config.model,
                max_tokens: config.max_tokens,
                key: http::secret_header(config.api_key.expose())?,
                secret: config.api_key,
                transport: Transport::new(endpoint, limits, config.direct_http)?,
            }),
        })
    }

    /// A model for `model` configured from the environment (see
    /// [`AnthropicConfig::from_env`]).
    ///
    /// # Errors
    /// As [`AnthropicConfig::from_env`] and [`new`](Self::new).
    pub fn from_env(model: impl Into<String>) -> Result<Self, ConfigError> {
        Self::new(AnthropicConfig::from_env(model)?)
    }

    /// The URL requests go to.
    pub fn endpoint(&self) -> &str {
        self.inner.transport.endpoint()
    }
}

impl Inner {
    async fn send(
        &self,
        request: &CompletionRequest,
        stream: bool,
    ) -> Result<Response, ModelError> {
        let body = MessagesRequest::new(&self.model, self.max_tokens, request, stream);
        let mut headers = HeaderMap::new();
        headers.insert("x-api-key", self.key.clone());
        headers.insert("anthropic-version", HeaderValue::from_static(API_VERSION));
        tracing::debug!(
            messages = request.messages.len(),
            tools = request.tools.len(),
            stream,
            "sending messages request"
        );
        let response = self.transport.post_json(headers, &body, stream).await?;
        http::check_status(response, Some(&self.secret)).await
    }

    async fn read_completion(&self, response: Response) -> Result<Completion, ModelError> {
        let body = response.bytes().await?;
        parse_response(&body)
    }
}

impl Model for AnthropicModel {
    fn name(&self) -> &str {
        &self.inner.name
    }

    #[tracing::instrument(
        level = "debug",
        name = "chat",
        skip_all,
        fields(gen_ai.system = "anthropic", gen_ai.request.model = %self.inner.model)
    )]
    async fn complete(&self, request: &CompletionRequest) -> Result<Completion, ModelError> {
        let started = Instant::now();
        let response = self.inner.send(request, false).await?;
        let completion =
            http::restore_names(self.inner.read_completion(response).await?, &request.tools);
        tracing::debug!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            gen_ai.usage.input_tokens = completion.usage.input_tokens,
            gen_ai.usage.output_tokens = completion.usage.output_tokens,
            tool_calls = completion.tool_calls.len(),
            "messages response received"
        );
        Ok(completion)
    }

    #[tracing::instrument(
        level = "debug",
        name = "chat_stream",
        skip_all,
        fields(gen_ai.system = "anthropic", gen_ai.request.model = %self.inner.model)
    )]
    async fn stream(&self, request: &CompletionRequest) -> Result<CompletionStream, ModelError> {
        let response = self.inner.send(request, true).await?;
        if !http::is_event_stream(&response) {
            let completion =
                http::restore_names(self.inner.read_completion(response).await?, &request.tools);
            return Ok(completion_as_stream(completion));
        }
        let stream = http::drive(response, MessageStream::default());
        Ok(http::restore_stream(stream, request.tools.clone()))
    }
}

// ---- request ----

#[derive(Serialize)]
struct MessagesRequest<'a> {
    model: &'a str,
    max_tokens: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    system: Option<Cow<'a, str>>,
    messages: Vec<Turn<'a>>,
    #[serde(skip_serializing_if = "Tools::is_empty")]
    tools: Tools<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f32>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    stream: bool,
}

impl<'a> MessagesRequest<'a> {
    fn new(
        model: &'a str,
        default_max_tokens: u32,
        request: &'a CompletionRequest,
        stream: bool,
    ) -> Self {
        let (system, messages) = turns(&request.messages);
        Self {
            model,
            max_tokens: request.options.max_tokens.unwrap_or(default_max_tokens),
            system,
            messages,
            tools: Tools(&request.tools),
            temperature: request.options.temperature,
            stream,
        }
    }
}

#[derive(Serialize)]
struct Turn<'a> {
    role: &'static str,
    content: Vec<Block<'a>>,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Block<'a> {
    Text {
        text: &'a str,
    },
    ToolUse {
        id: &'a str,
        name: Cow<'a, str>,
        input: Cow<'a, Value>,
    },
    ToolResult {
        tool_use_id: &'a str,
        content: &'a str,
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        is_error: bool,
    },
}

/// Our conversation as Anthropic turns: system messages become the top-level `system` (joined
/// by blank lines), tool results become `tool_result` blocks of a user turn, and consecutive
/// turns of one role merge into one, as the API wants roles to alternate. Empty text is
/// dropped (the API rejects empty text blocks).
fn turns(messages: &[Message]) -> (Option<Cow<'_, str>>, Vec<Turn<'_>>) {
    let mut system: Option<Cow<'_, str>> = None;
    let mut turns: Vec<Turn<'_>> = Vec::with_capacity(messages.len());
    for message in messages {
        let (role, blocks) = match message {
            Message::System { content } => {
                system = Some(match system.take() {
                    None => Cow::Borrowed(content.as_str()),
                    Some(previous) => Cow::Owned(format!("{previous}\n\n{content}")),
                });
                continue;
            }
            Message::User { content } => ("user", text_block(content).into_iter().collect()),
            Message::Assistant {
                content,
                tool_calls,
            } => {
                let mut blocks = Vec::with_capacity(1 + tool_calls.len());
                blocks.extend(content.as_deref().and_then(text_block));
                blocks.extend(tool_calls.iter().map(|call| Block::ToolUse {
                    id: &call.id,
                    name: http::wire_name(&call.name),
                    input: tool_input(&call.arguments),
                }));
                ("assistant", blocks)
            }
            Message::Tool {
                call_id,
                content,
                is_error,
                ..
            } => (
                "user",
                vec![Block::ToolResult {
                    tool_use_id: call_id,
                    content,
                    is_error: *is_error,
                }],
            ),
        };
        if blocks.is_empty() {
            continue;
        }
        match turns.last_mut() {
            Some(last) if last.role == role => last.content.extend(blocks),
            _ => turns.push(Turn {
                role,
                content: blocks,
            }),
        }
    }
    (system, turns)
}

fn text_block(text: &str) -> Option<Block<'_>> {
    (!text.is_empty()).then_some(Block::Text { text })
}

/// `tool_use.input` must be an object. Arguments kept as raw text because they were not
/// valid JSON go back as `{}`; the tool result next to them says what was wrong.
fn tool_input(arguments: &Value) -> Cow<'_, Value> {
    if arguments.is_object() {
        Cow::Borrowed(arguments)
    } else {
        Cow::Owned(Value::Object(serde_json::Map::new()))
    }
}

struct Tools<'a>(&'a [ToolSpec]);

impl Tools<'_> {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Serialize for Tools<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(|spec| WireTool {
            name: http::wire_name(&spec.name),
            description: &spec.description,
            input_schema: &spec.parameters,
        }))
    }
}

#[derive(Serialize)]
struct WireTool<'a> {
    name: Cow<'a, str>,
    description: &'a str,
    input_schema: &'a Value,
}

// ---- response ----

#[derive(Deserialize)]
struct MessagesResponse {
    content: Vec<ContentBlock>,
    #[serde(default)]
    stop_reason: Option<String>,
    #[serde(default)]
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ContentBlock {
    Text {
        text: String,
    },
    ToolUse {
        id: String,
        name: String,
        #[serde(default)]
        input: Value,
    },
    /// Thinking and other blocks we do not use.
    #[serde(other)]
    Other,
}

#[derive(Deserialize, Default, Clone, Copy)]
struct WireUsage {
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: Option<u64>,
    #[serde(default)]
    cache_creation_input_tokens: Option<u64>,
    #[serde(default)]
    cache_read_input_tokens: Option<u64>,
}

impl WireUsage {
    /// All prompt tokens: uncached, written to the cache, and read from it.
    fn input(&self) -> Option<u64> {
        let parts = [
            self.input_tokens,
            self.cache_creation_input_tokens,
            self.cache_read_input_tokens,
        ];
        parts
            .iter()
            .any(Option::is_some)
            .then(|| parts.iter().flatten().sum())
    }
}

/// Parses a non-streaming `/v1/messages` body.
fn parse_response(body: &[u8]) -> Result<Completion, ModelError> {
    let response: MessagesResponse =
        serde_json::from_slice(body).map_err(|e| http::malformed_json(&e, body))?;
    let mut text = String::new();
    let mut tool_calls = Vec::new();
    for block in response.content {
        match block {
            ContentBlock::Text { text: t } => text.push_str(&t),
            ContentBlock::ToolUse { id, name, input } => tool_calls.push(ToolCall {
                id,
                name,
                arguments: if input.is_null() {
                    Value::Object(serde_json::Map::new())
                } else {
                    input
                },
            }),
            ContentBlock::Other => {}
        }
    }
    let usage = response.usage.unwrap_or_default();
    Ok(Completion {
        content: (!text.is_empty()).then_some(text),
        finish_reason: finish_reason(response.stop_reason.as_deref(), !tool_calls.is_empty()),
        tool_calls,
        usage: Usage {
            input_tokens: usage.input().unwrap_or_default(),
            output_tokens: usage.output_tokens.unwrap_or_default(),
        },
    })
}

fn finish_reason(reason: Option<&str>, has_tool_calls: bool) -> FinishReason {
    match reason {
        Some("tool_use") => FinishReason::ToolCalls,
        Some("max_tokens" | "model_context_window_exceeded") => FinishReason::Length,
        Some("refusal") => FinishReason::ContentFilter,
        None | Some("end_turn" | "stop_sequence") if has_tool_calls => FinishReason::ToolCalls,
        None | Some("end_turn" | "stop_sequence") => FinishReason::Stop,
        Some(_) => FinishReason::Other,
    }
}

// ---- streaming ----

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum StreamData {
    MessageStart {
        message: StartMessage,
    },
    ContentBlockStart {
        index: usize,
        content_block: StartBlock,
    },
    ContentBlockDelta {
        index: usize,
        delta: BlockDelta,
    },
    MessageDelta {
        delta: MessageDeltaBody,
        #[serde(default)]
        usage: Option<WireUsage>,
    },
    MessageStop,
    /// An error inside the stream; its raw data is mapped by [`http::error_from_stream`].
    Error,
    /// `ping`, `content_block_stop` and event types added later.
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
struct StartMessage {
    #[serde(default)]
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum StartBlock {
    Text {
        #[serde(default)]
        text: String,
    },
    ToolUse {
        id: String,
        name: String,
    },
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum BlockDelta {
    TextDelta {
        text: String,
    },
    InputJsonDelta {
        partial_json: String,
    },
    /// Thinking and signature deltas.
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
struct MessageDeltaBody {
    #[serde(default)]
    stop_reason: Option<String>,
}

/// Assembles a streamed message from its events.
#[derive(Default)]
struct MessageStream {
    text: String,
    /// Tool calls in order, with the content-block index each came in.
    calls: Vec<(usize, ToolCall, String)>,
    stop_reason: Option<String>,
    usage: Usage,
}

impl MessageStream {
    fn push_text(&mut self, text: String, out: &mut VecDeque<StreamEvent>) {
        if !text.is_empty() {
            self.text.push_str(&text);
            out.push_back(StreamEvent::TextDelta(text));
        }
    }
}

impl http::SseDecoder for MessageStream {
    fn on_event(
        &mut self,
        event: &Event,
        out: &mut VecDeque<StreamEvent>,
    ) -> Result<bool, ModelError> {
        let data = event.data.trim();
        if data.is_empty() {
            return Ok(false);
        }
        let parsed: StreamData =
            serde_json::from_str(data).map_err(|e| http::malformed_json(&e, data.as_bytes()))?;
        match parsed {
            StreamData::MessageStart { message } => {
                if let Some(usage) = message.usage {
                    self.usage.input_tokens = usage.input().unwrap_or_default();
                    self.usage.output_tokens = usage.output_tokens.unwrap_or_default();
                }
            }
            StreamData::ContentBlockStart {
                index,
                content_block,
            } => match content_block {
                StartBlock::Text { text } => self.push_text(text, out),
                StartBlock::ToolUse { id, name } => {
                    out.push_back(StreamEvent::ToolCallStart {
                        index: self.calls.len(),
                        id: id.clone(),
                        name: name.clone(),
                    });
                    let call = ToolCall {
                        id,
                        name,
                        arguments: Value::Null,
                    };
                    self.calls.push((index, call, String::new()));
                }
                StartBlock::Other => {}
            },
            StreamData::ContentBlockDelta { index, delta } => match delta {
                BlockDelta::TextDelta { text } => self.push_text(text, out),
                BlockDelta::InputJsonDelta { partial_json } => {
                    let position = self.calls.iter().rposition(|(block, ..)| *block == index);
                    let Some(position) = position else {
                        return Err(ModelError::malformed(format!(
                            "input delta for content block {index}, which is not a tool_use"
                        )));
                    };
                    if !partial_json.is_empty() {
                        if let Some((_, _, json)) = self.calls.get_mut(position) {
                            json.push_str(&partial_json);
                        }
                        out.push_back(StreamEvent::ToolCallDelta {
                            index: position,
                            arguments: partial_json,
                        });
                    }
                }
                BlockDelta::Other => {}
            },
            StreamData::MessageDelta { delta, usage } => {
                if delta.stop_reason.is_some() {
                    self.stop_reason = delta.stop_reason;
                }
                if let Some(usage) = usage {
                    if let Some(input) = usage.input() {
                        self.usage.input_tokens = input;
                    }
                    if let Some(output) = usage.output_tokens {
                        self.usage.output_tokens = output;
                    }
                }
            }
            StreamData::MessageStop => return Ok(true),
            StreamData::Error => return Err(http::error_from_stream(data)),
            StreamData::Other => {}
        }
        Ok(false)
    }

    fn finish(self, ended: bool) -> Result<Completion, ModelError> {
        if !ended && self.stop_reason.is_none() {
            return Err(http::truncated_stream());
        }
        let tool_calls: Vec<ToolCall> = self
            .calls
            .into_iter()
            .map(|(_, mut call, json)| {
                call.arguments = http::parse_arguments(&json);
                call
            })
            .collect();
        Ok(Completion {
            content: (!self.text.is_empty()).then_some(self.text),
            finish_reason: finish_reason(self.stop_reason.as_deref(), !tool_calls.is_empty()),
            tool_calls,
            usage: self.usage,
        })
    }
}

#[cfg(test)]
mod tests {
    use pocket_agent::RequestOptions;
    use serde_json::json;

    use super::*;
    use crate::http::SseDecoder;

    fn tool_result(id: &str, content: &str, is_error: bool) -> Message {
        Message::Tool {
            call_id: id.into(),
            name: "t".into(),
            content: content.into(),
            is_error,
        }
    }

    #[test]
    fn conversation_maps_to_alternating_turns() {
        let request = CompletionRequest {
            messages: vec![
                Message::system("be brief"),
                Message::system("use tools"),
                Message::user("weather in Paris and Rome?"),
                Message::Assistant {
                    content: Some("Checking.".into()),
                    tool_calls: vec![
                        ToolCall {
                            id: "tu_1".into(),
                            name: "weather".into(),
                            arguments: json!({"city": "Paris"}),
                        },
                        ToolCall {
                            id: "tu_2".into(),
                            name: "weather".into(),
                            arguments: Value::String("{bad".into()),
                        },
                    ],
                },
                tool_result("tu_1", "sunny", false),
                tool_result("tu_2", "invalid arguments", true),
                Message::user("and now?"),
            ],
            tools: Arc::from(vec![ToolSpec::new(
                "weather",
                "Weather of a city.",
                json!({"type": "object", "properties": {"city": {"type": "string"}}}),
            )]),
            options: RequestOptions {
                temperature: Some(0.0),
                max_tokens: None,
            },
            deadline: None,
        };
        let body =
            serde_json::to_value(MessagesRequest::new("claude", 4096, &request, false)).unwrap();
        assert_eq!(
            body,
            json!({
                "model": "claude",
                "max_tokens": 4096,
                "system": "be brief\n\nuse tools",
                "messages": [
                    {"role": "user", "content": [{"type": "text", "text": "weather in Paris and Rome?"}]},
                    {"role": "assistant", "content": [
                        {"type": "text", "text": "Checking."},
                        {"type": "tool_use", "id": "tu_1", "name": "weather", "input": {"city": "Paris"}},
                        {"type": "tool_use", "id": "tu_2", "name": "weather", "input": {}}
                    ]},
                    {"role": "user", "content": [
                        {"type": "tool_result", "tool_use_id": "tu_1", "content": "sunny"},
                        {"type": "tool_result", "tool_use_id": "tu_2", "content": "invalid arguments", "is_error": true},
                        {"type": "text", "text": "and now?"}
                    ]}
                ],
                "tools": [{"name": "weather", "description": "Weather of a city.",
                           "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}],
                "temperature": 0.0
            })
        );
    }

    #[test]
    fn request_max_tokens_overrides_default() {
        let mut request = CompletionRequest::new(vec![Message::user("x")]);
        request.options.max_tokens = Some(10);
        let body = serde_json::to_value(MessagesRequest::new("c", 4096, &request, true)).unwrap();
        assert_eq!(body["max_tokens"], json!(10));
        assert_eq!(body["stream"], json!(true));
        assert!(body.get("system").is_none());
        assert!(body.get("tools").is_none());
    }

    #[test]
    fn response_blocks_and_stop_reasons() {
        let c = parse_response(
            br#"{"id":"msg_1","type":"message","role":"assistant","content":[
                {"type":"thinking","thinking":"hmm","signature":"x"},
                {"type":"text","text":"Let me check."},
                {"type":"tool_use","id":"tu_1","name":"weather","input":{"city":"Paris"}}
            ],"stop_reason":"tool_use","usage":{"input_tokens":10,"cache_read_input_tokens":5,"output_tokens":7}}"#,
        )
        .unwrap();
        assert_eq!(c.content.as_deref(), Some("Let me check."));
        assert_eq!(c.finish_reason, FinishReason::ToolCalls);
        assert_eq!(
            c.usage,
            Usage {
                input_tokens: 15,
                output_tokens: 7
            }
        );
        assert_eq!(c.tool_calls[0].arguments, json!({"city": "Paris"}));
        assert_eq!(
            finish_reason(Some("max_tokens"), false),
            FinishReason::Length
        );
        assert_eq!(finish_reason(Some("end_turn"), false), FinishReason::Stop);
        assert_eq!(
            finish_reason(Some("refusal"), false),
            FinishReason::ContentFilter
        );
        assert_eq!(
            finish_reason(Some("pause_turn"), false),
            FinishReason::Other
        );
        assert!(matches!(
            parse_response(br#"{"type":"message"}"#),
            Err(ModelError::MalformedResponse { .. })
        ));
    }

    fn feed(events: &[&str]) -> Result<(Vec<StreamEvent>, Completion), ModelError> {
        let mut decoder = MessageStream::default();
        let mut out = VecDeque::new();
        let mut ended = false;
        for data in events {
            let event = Event {
                data: (*data).to_owned(),
                ..Event::default()
            };
            ended = decoder.on_event(&event, &mut out)?;
        }
        Ok((out.into_iter().collect(), decoder.finish(ended)?))
    }

    #[test]
    fn stream_assembles_text_and_tool_use() {
        let (events, c) = feed(&[
            r#"{"type":"message_start","message":{"usage":{"input_tokens":12,"output_tokens":1}}}"#,
            r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi"}}"#,
            r#"{"type":"content_block_stop","index":0}"#,
            r#"{"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"tu_1","name":"f","input":{}}}"#,
            r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"a\":"}}"#,
            r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"1}"}}"#,
            r#"{"type":"ping"}"#,
            r#"{"type":"message_delta","delta":{"stop_reason":"tool_use"},"usage":{"output_tokens":9}}"#,
            r#"{"type":"message_stop"}"#,
        ])
        .unwrap();
        assert_eq!(events.len(), 4);
        assert_eq!(
            events[1],
            StreamEvent::ToolCallStart {
                index: 0,
                id: "tu_1".into(),
                name: "f".into()
            }
        );
        assert_eq!(c.content.as_deref(), Some("Hi"));
        assert_eq!(c.tool_calls[0].arguments, json!({"a": 1}));
        assert_eq!(c.finish_reason, FinishReason::ToolCalls);
        assert_eq!(
            c.usage,
            Usage {
                input_tokens: 12,
                output_tokens: 9
            }
        );
    }

    #[test]
    fn stream_error_event_is_mapped() {
        let err = feed(&[
            r#"{"type":"message_start","message":{}}"#,
            r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
        ])
        .unwrap_err();
        assert!(
            matches!(err, ModelError::Server { status: 529, .. }),
            "{err:?}"
        );
    }

    #[test]
    fn stream_without_stop_is_truncated() {
        let err = feed(&[
            r#"{"type":"message_start","message":{}}"#,
            r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":"par"}}"#,
        ])
        .unwrap_err();
        assert!(matches!(err, ModelError::Connection { .. }));
    }

    #[test]
    fn env_lookup_requires_the_key() {
        assert!(matches!(
            AnthropicConfig::from_lookup("c", |_| None),
            Err(ConfigError::MissingEnv {
                var: "ANTHROPIC_API_KEY"
            })
        ));
        let c = AnthropicConfig::from_lookup("c", |k| match k {
            "ANTHROPIC_API_KEY" => Some("sk-ant-1".into()),
            "ANTHROPIC_BASE_URL" => Some("http://proxy:8080".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(c.base_url, "http://proxy:8080");
        assert_eq!(c.max_tokens, 4096);
        assert!(!format!("{c:?}").contains("sk-ant-1"));
        let model = AnthropicModel::new(c).unwrap();
        assert_eq!(model.name(), "anthropic:c");
        assert_eq!(model.endpoint(), "http://proxy:8080/v1/messages");
        assert!(!format!("{model:?}").contains("sk-ant-1"));
    }
}
