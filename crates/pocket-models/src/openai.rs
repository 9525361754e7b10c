//! Any OpenAI-compatible chat-completions server: OpenAI itself, vLLM, llama.cpp, Ollama,
//! LiteLLM. Tool calls (several per turn), usage, and streaming over server-sent events.
//!
//! ```no_run
//! use pocket_agent::{CompletionRequest, Message, Model};
//! use pocket_models::{OpenAiConfig, OpenAiModel};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! // OPENAI_BASE_URL=http://localhost:11434/v1 talks to a local Ollama, no key needed.
//! let model = OpenAiModel::new(OpenAiConfig::from_env("gpt-4o-mini"))?;
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
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;

use crate::http::{self, Limits};
pub use crate::http::{ApiKey, ConfigError};
use crate::transport::{Response, Transport};

/// Where and how to reach an OpenAI-compatible server.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct OpenAiConfig {
    /// The API root, up to and including the version: requests go to
    /// `{base_url}/chat/completions`. Default: `https://api.openai.com/v1`.
    pub base_url: String,
    /// Sent as `Authorization: Bearer …` when set. Local servers usually need none.
    pub api_key: Option<ApiKey>,
    /// The model id, like `gpt-4o-mini` or `llama3.1:8b`.
    pub model: String,
    /// Limit of a whole non-streaming call, and of the wait for the first byte and each gap
    /// between chunks of a stream (so long generations are not cut off). Default: 120 s.
    pub timeout: Duration,
    /// Limit of establishing the connection. Default: 10 s.
    pub connect_timeout: Duration,
    /// Reach a plain `http://` base URL with hyper's HTTP/1 client directly rather than through
    /// reqwest: the same limits and errors, less CPU per request (a local server). `https://`
    /// URLs, and any while `HTTP_PROXY`/`ALL_PROXY` is set, always go through reqwest.
    /// Default: `true`.
    pub direct_http: bool,
}

impl OpenAiConfig {
    /// The default base URL.
    pub const DEFAULT_BASE_URL: &'static str = "https://api.openai.com/v1";

    /// A config for `model` at the default base URL, without a key, with default time limits.
    pub fn new(model: impl Into<String>) -> Self {
        Self {
            base_url: Self::DEFAULT_BASE_URL.to_owned(),
            api_key: None,
            model: model.into(),
            timeout: Duration::from_secs(120),
            connect_timeout: Duration::from_secs(10),
            direct_http: true,
        }
    }

    /// A config for `model` from the environment: `OPENAI_BASE_URL` (default
    /// `https://api.openai.com/v1`) and `OPENAI_API_KEY` (optional, so keyless local servers
    /// work). Empty variables count as unset.
    pub fn from_env(model: impl Into<String>) -> Self {
        Self::from_lookup(model, |name| std::env::var(name).ok())
    }

    fn from_lookup(model: impl Into<String>, lookup: impl Fn(&str) -> Option<String>) -> Self {
        let mut config = Self::new(model);
        if let Some(url) = http::non_empty(lookup("OPENAI_BASE_URL")) {
            config.base_url = url;
        }
        config.api_key = http::non_empty(lookup("OPENAI_API_KEY")).map(ApiKey::from);
        config
    }

    /// Sets the base URL.
    #[must_use]
    pub fn with_base_url(mut self, base_url: impl Into<String>) -> Self {
        self.base_url = base_url.into();
        self
    }

    /// Sets the API key.
    #[must_use]
    pub fn with_api_key(mut self, api_key: impl Into<ApiKey>) -> Self {
        self.api_key = Some(api_key.into());
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

/// A model behind an OpenAI-compatible `/chat/completions` endpoint. Cheap to clone.
///
/// It never retries: wrap it in the resilience layer for that.
#[derive(Clone)]
pub struct OpenAiModel {
    inner: Arc<Inner>,
}

struct Inner {
    name: String,
    model: String,
    auth: Option<HeaderValue>,
    /// Kept only to redact it from error bodies that echo it.
    secret: Option<ApiKey>,
    transport: Transport,
}

impl fmt::Debug for OpenAiModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenAiModel")
            .field("name", &self.inner.name)
            .field("endpoint", &self.inner.transport.endpoint())
            .finish_non_exhaustive()
    }
}

impl OpenAiModel {
    /// A model for this config.
    ///
    /// # Errors
    /// [`ConfigError`] if the base URL is not an http(s) URL, the key cannot be sent in a
    /// header, or the HTTP client cannot be built.
    pub fn new(config: OpenAiConfig) -> Result<Self, ConfigError> {
        let endpoint = http::endpoint(&config.base_url, "/chat/completions")?;
        let auth = config
            .api_key
            .as_ref()
            .map(|key| http::secret_header(&format!("Bearer {}", key.expose())))
            .transpose()?;
        let limits = Limits {
            timeout: config.timeout,
            connect_timeout: config.connect_timeout,
        };
        Ok(Self {
            inner: Arc::new(Inner {
                name: format!("openai:{}", config.model),
                model: config.model,
                auth,
                secret: config.api_key,
                transport: Transport::new(endpoint, limits, config.direct_http)?,
            }),
        })
    }

    /// A model for `model` configured from the environment (see [`OpenAiConfig::from_env`]).
    ///
    /// # Errors
    /// As [`new`](Self::new).
    pub fn from_env(model: impl Into<String>) -> Result<Self, ConfigError> {
        Self::new(OpenAiConfig::from_env(model))
    }

    /// The URL requests go to.
    pub fn endpoint(&self) -> &str {
        self.inner.transport.endpoint()
    }
}

impl Inner {
    /// Sends one request and checks its status.
    async fn send(
        &self,
        request: &CompletionRequest,
        stream: bool,
    ) -> Result<Response, ModelError> {
        let body = ChatRequest {
            model: &self.model,
            messages: Messages(&request.messages),
            tools: Tools(&request.tools),
            temperature: request.options.temperature,
            max_tokens: request.options.max_tokens,
            stream,
            stream_options: stream.then_some(StreamOptions {
                include_usage: true,
            }),
        };
        let mut headers = HeaderMap::new();
        if let Some(auth) = &self.auth {
            headers.insert(AUTHORIZATION, auth.clone());
        }
        tracing::debug!(
            messages = request.messages.len(),
            tools = request.tools.len(),
            stream,
            "sending chat completion request"
        );
        let response = self.transport.post_json(headers, &body, stream).await?;
        http::check_status(response, self.secret.as_ref()).await
    }

    async fn read_completion(&self, response: Response) -> Result<Completion, ModelError> {
        let body = response.bytes().await?;
        parse_response(&body)
    }
}

impl Model for OpenAiModel {
    fn name(&self) -> &str {
        &self.inner.name
    }

    #[tracing::instrument(
        level = "debug",
        name = "chat",
        skip_all,
        fields(gen_ai.system = "openai", gen_ai.request.model = %self.inner.model)
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
            "chat completion received"
        );
        Ok(completion)
    }

    #[tracing::instrument(
        level = "debug",
        name = "chat_stream",
        skip_all,
        fields(gen_ai.system = "openai", gen_ai.request.model = %self.inner.model)
    )]
    async fn stream(&self, request: &CompletionRequest) -> Result<CompletionStream, ModelError> {
        let response = self.inner.send(request, true).await?;
        if !http::is_event_stream(&response) {
            // The server ignored `stream: true` and answered in one piece.
            let completion =
                http::restore_names(self.inner.read_completion(response).await?, &request.tools);
            return Ok(completion_as_stream(completion));
        }
        let stream = http::drive(response, ChatStream::default());
        Ok(http::restore_stream(stream, request.tools.clone()))
    }
}

// ---- request: borrowed views of our types, serialized without intermediate copies ----

#[derive(Serialize)]
struct ChatRequest<'a> {
    model: &'a str,
    messages: Messages<'a>,
    #[serde(skip_serializing_if = "Tools::is_empty")]
    tools: Tools<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u32>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_options: Option<StreamOptions>,
}

#[derive(Serialize)]
struct StreamOptions {
    include_usage: bool,
}

struct Messages<'a>(&'a [Message]);

impl Serialize for Messages<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(WireMessage::from))
    }
}

#[derive(Serialize)]
#[serde(tag = "role", rename_all = "lowercase")]
enum WireMessage<'a> {
    System {
        content: &'a str,
    },
    User {
        content: &'a str,
    },
    Assistant {
        /// `null` is allowed next to tool calls; an empty turn sends `""`.
        content: Option<&'a str>,
        #[serde(skip_serializing_if = "Calls::is_empty")]
        tool_calls: Calls<'a>,
    },
    Tool {
        tool_call_id: &'a str,
        content: &'a str,
    },
}

impl<'a> From<&'a Message> for WireMessage<'a> {
    fn from(message: &'a Message) -> Self {
        match message {
            Message::System { content } => Self::System { content },
            Message::User { content } => Self::User { content },
            Message::Assistant {
                content,
                tool_calls,
            } => Self::Assistant {
                content: content
                    .as_deref()
                    .or_else(|| tool_calls.is_empty().then_some("")),
                tool_calls: Calls(tool_calls),
            },
            Message::Tool {
                call_id, content, ..
            } => Self::Tool {
                tool_call_id: call_id,
                content,
            },
        }
    }
}

struct Calls<'a>(&'a [ToolCall]);

impl Calls<'_> {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Serialize for Calls<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(|call| WireCall {
            id: &call.id,
            kind: "function",
            function: WireCallFunction {
                name: http::wire_name(&call.name),
                arguments: arguments_text(&call.arguments),
            },
        }))
    }
}

#[derive(Serialize)]
struct WireCall<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    function: WireCallFunction<'a>,
}

#[derive(Serialize)]
struct WireCallFunction<'a> {
    name: Cow<'a, str>,
    arguments: Cow<'a, str>,
}

/// Arguments as the JSON text OpenAI expects. Raw text kept from an invalid-JSON call goes
/// back as it came, so the model sees what it actually sent.
fn arguments_text(arguments: &Value) -> Cow<'_, str> {
    match arguments {
        Value::String(raw) => Cow::Borrowed(raw),
        other => Cow::Owned(other.to_string()),
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
            kind: "function",
            function: WireFunction {
                name: http::wire_name(&spec.name),
                description: &spec.description,
                parameters: &spec.parameters,
            },
        }))
    }
}

#[derive(Serialize)]
struct WireTool<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    function: WireFunction<'a>,
}

#[derive(Serialize)]
struct WireFunction<'a> {
    name: Cow<'a, str>,
    description: &'a str,
    parameters: &'a Value,
}

// ---- response ----

#[derive(Deserialize)]
struct ChatResponse {
    #[serde(default)]
    choices: Option<Vec<Choice>>,
    #[serde(default)]
    usage: Option<WireUsage>,
    #[serde(default)]
    error: Option<IgnoredAny>,
}

#[derive(Deserialize)]
struct Choice {
    message: ResponseMessage,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct ResponseMessage {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<ResponseCall>>,
}

#[derive(Deserialize)]
struct ResponseCall {
    #[serde(default)]
    id: Option<String>,
    function: ResponseFunction,
}

#[derive(Deserialize)]
struct ResponseFunction {
    name: String,
    #[serde(default)]
    arguments: Option<Value>,
}

#[derive(Deserialize, Default, Clone, Copy)]
struct WireUsage {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
}

impl From<WireUsage> for Usage {
    fn from(u: WireUsage) -> Self {
        Self {
            input_tokens: u.prompt_tokens,
            output_tokens: u.completion_tokens,
        }
    }
}

/// Parses a non-streaming `/chat/completions` body.
fn parse_response(body: &[u8]) -> Result<Completion, ModelError> {
    let response: ChatResponse =
        serde_json::from_slice(body).map_err(|e| http::malformed_json(&e, body))?;
    if response.error.is_some() {
        // A proxy that reports failures with a 200.
        return Err(http::error_from_stream(&String::from_utf8_lossy(body)));
    }
    let choice = response
        .choices
        .and_then(|c| c.into_iter().next())
        .ok_or_else(|| ModelError::malformed("the response has no choices"))?;
    let tool_calls: Vec<ToolCall> = choice
        .message
        .tool_calls
        .unwrap_or_default()
        .into_iter()
        .enumerate()
        .map(|(i, call)| ToolCall {
            id: call
                .id
                .filter(|id| !id.is_empty())
                .unwrap_or_else(|| fallback_id(i)),
            name: call.function.name,
            arguments: match call.function.arguments {
                Some(Value::String(raw)) => http::parse_arguments(&raw),
                None | Some(Value::Null) => Value::Object(Default::default()),
                Some(other) => other,
            },
        })
        .collect();
    Ok(Completion {
        content: choice.message.content.filter(|c| !c.is_empty()),
        finish_reason: finish_reason(choice.finish_reason.as_deref(), !tool_calls.is_empty()),
        tool_calls,
        usage: response.usage.map(Usage::from).unwrap_or_default(),
    })
}

/// An id for a call the server sent without one (some local servers do).
fn fallback_id(index: usize) -> String {
    format!("call_{index}")
}

fn finish_reason(reason: Option<&str>, has_tool_calls: bool) -> FinishReason {
    let reason = match reason {
        None | Some("stop" | "eos" | "eos_token" | "end_turn" | "stop_sequence") => {
            FinishReason::Stop
        }
        Some("tool_calls" | "function_call") => FinishReason::ToolCalls,
        Some("length") => FinishReason::Length,
        Some("content_filter") => FinishReason::ContentFilter,
        Some(_) => FinishReason::Other,
    };
    // Some local servers say `stop` next to tool calls; the calls are what matters.
    if has_tool_calls && reason == FinishReason::Stop {
        FinishReason::ToolCalls
    } else {
        reason
    }
}

// ---- streaming ----

#[derive(Deserialize)]
struct Chunk {
    #[serde(default)]
    choices: Option<Vec<ChunkChoice>>,
    #[serde(default)]
    usage: Option<WireUsage>,
    #[serde(default)]
    error: Option<IgnoredAny>,
}

#[derive(Deserialize)]
struct ChunkChoice {
    #[serde(default)]
    delta: Option<Delta>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct Delta {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<DeltaCall>>,
}

#[derive(Deserialize)]
struct DeltaCall {
    #[serde(default)]
    index: Option<usize>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    function: Option<DeltaFunction>,
}

#[derive(Deserialize)]
struct DeltaFunction {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    arguments: Option<String>,
}

/// Assembles a streamed chat completion from its chunks.
#[derive(Default)]
struct ChatStream {
    text: String,
    calls: Vec<PartialCall>,
    /// The server's `index` of each call in `calls` (`None` if it sent none).
    indices: Vec<Option<usize>>,
    finish: Option<String>,
    usage: Option<WireUsage>,
}

#[derive(Default)]
struct PartialCall {
    id: String,
    name: String,
    arguments: String,
    started: bool,
}

impl ChatStream {
    /// Which of our calls a delta continues, or a new one. Calls are matched by the server's
    /// `index`; a different id at a known index starts a new call, for servers that send
    /// every call with index 0.
    fn slot(&mut self, delta: &DeltaCall) -> usize {
        let id = delta.id.as_deref().filter(|id| !id.is_empty());
        let found = match delta.index {
            Some(index) => self.indices.iter().rposition(|i| *i == Some(index)),
            None if id.is_none() => self.calls.len().checked_sub(1),
            None => self.calls.len().checked_sub(1).filter(|&last| {
                self.calls
                    .get(last)
                    .is_some_and(|c| Some(c.id.as_str()) == id)
            }),
        };
        let continues = found.filter(|&slot| match (id, self.calls.get(slot)) {
            (Some(id), Some(call)) => call.id.is_empty() || call.id == id,
            _ => true,
        });
        continues.unwrap_or_else(|| {
            self.calls.push(PartialCall::default());
            self.indices.push(delta.index);
            self.calls.len() - 1
        })
    }

    fn on_call(&mut self, delta: DeltaCall, out: &mut VecDeque<StreamEvent>) {
        let index = self.slot(&delta);
        let Some(call) = self.calls.get_mut(index) else {
            return;
        };
        if let Some(id) = delta.id.filter(|id| !id.is_empty())
            && call.id.is_empty()
        {
            call.id = id;
        }
        let (name, piece) = match delta.function {
            Some(f) => (f.name, f.arguments),
            None => (None, None),
        };
        if let Some(name) = name
            && !call.started
        {
            call.name.push_str(&name);
        }
        if !call.started && !call.name.is_empty() {
            call.started = true;
            if call.id.is_empty() {
                call.id = fallback_id(index);
            }
            out.push_back(StreamEvent::ToolCallStart {
                index,
                id: call.id.clone(),
                name: call.name.clone(),
            });
            if !call.arguments.is_empty() {
                out.push_back(StreamEvent::ToolCallDelta {
                    index,
                    arguments: call.arguments.clone(),
                });
            }
        }
        if let Some(piece) = piece.filter(|p| !p.is_empty()) {
            call.arguments.push_str(&piece);
            if call.started {
                out.push_back(StreamEvent::ToolCallDelta {
                    index,
                    arguments: piece,
                });
            }
        }
    }
}

impl http::SseDecoder for ChatStream {
    fn on_event(
        &mut self,
        event: &Event,
        out: &mut VecDeque<StreamEvent>,
    ) -> Result<bool, ModelError> {
        let data = event.data.trim();
        if data == "[DONE]" {
            return Ok(true);
        }
        if data.is_empty() {
            return Ok(false);
        }
        let chunk: Chunk =
            serde_json::from_str(data).map_err(|e| http::malformed_json(&e, data.as_bytes()))?;
        if chunk.error.is_some() {
            return Err(http::error_from_stream(data));
        }
        if let Some(usage) = chunk.usage {
            self.usage = Some(usage);
        }
        // One choice is asked for (`n` is never set); others would be a server's quirk.
        let Some(choice) = chunk.choices.and_then(|c| c.into_iter().next()) else {
            return Ok(false);
        };
        if let Some(delta) = choice.delta {
            if let Some(text) = delta.content.filter(|t| !t.is_empty()) {
                self.text.push_str(&text);
                out.push_back(StreamEvent::TextDelta(text));
            }
            for call in delta.tool_calls.unwrap_or_default() {
                self.on_call(call, out);
            }
        }
        if let Some(reason) = choice.finish_reason {
            self.finish = Some(reason);
        }
        Ok(false)
    }

    fn finish(self, ended: bool) -> Result<Completion, ModelError> {
        if !ended && self.finish.is_none() {
            return Err(http::truncated_stream());
        }
        let tool_calls = self
            .calls
            .into_iter()
            .enumerate()
            .map(|(i, call)| {
                if call.name.is_empty() {
                    return Err(ModelError::malformed(format!(
                        "streamed tool call {i} has no name"
                    )));
                }
                Ok(ToolCall {
                    arguments: http::parse_arguments(&call.arguments),
                    id: call.id,
                    name: call.name,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Completion {
            content: (!self.text.is_empty()).then_some(self.text),
            finish_reason: finish_reason(self.finish.as_deref(), !tool_calls.is_empty()),
            tool_calls,
            usage: self.usage.map(Usage::from).unwrap_or_default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use crate::http::SseDecoder;
    use pocket_agent::RequestOptions;
    use serde_json::json;

    use super::*;

    fn request_json(request: &CompletionRequest, stream: bool) -> Value {
        serde_json::to_value(ChatRequest {
            model: "m",
            messages: Messages(&request.messages),
            tools: Tools(&request.tools),
            temperature: request.options.temperature,
            max_tokens: request.options.max_tokens,
            stream,
            stream_options: stream.then_some(StreamOptions {
                include_usage: true,
            }),
        })
        .unwrap()
    }

    #[test]
    fn messages_map_to_openai_roles() {
        let request = CompletionRequest {
            messages: vec![
                Message::system("be brief"),
                Message::user("hi"),
                Message::Assistant {
                    content: None,
                    tool_calls: vec![
                        ToolCall {
                            id: "c1".into(),
                            name: "add".into(),
                            arguments: json!({"a": 1}),
                        },
                        ToolCall {
                            id: "c2".into(),
                            name: "add".into(),
                            arguments: Value::String("{broken".into()),
                        },
                    ],
                },
                Message::Tool {
                    call_id: "c1".into(),
                    name: "add".into(),
                    content: "1".into(),
                    is_error: false,
                },
                Message::Assistant {
                    content: None,
                    tool_calls: vec![],
                },
            ],
            tools: Arc::from(vec![ToolSpec::new(
                "add",
                "Adds.",
                json!({"type": "object"}),
            )]),
            options: RequestOptions {
                temperature: Some(0.5),
                max_tokens: Some(64),
            },
            deadline: None,
        };
        assert_eq!(
            request_json(&request, false),
            json!({
                "model": "m",
                "messages": [
                    {"role": "system", "content": "be brief"},
                    {"role": "user", "content": "hi"},
                    {"role": "assistant", "content": null, "tool_calls": [
                        {"id": "c1", "type": "function", "function": {"name": "add", "arguments": "{\"a\":1}"}},
                        {"id": "c2", "type": "function", "function": {"name": "add", "arguments": "{broken"}}
                    ]},
                    {"role": "tool", "tool_call_id": "c1", "content": "1"},
                    {"role": "assistant", "content": ""}
                ],
                "tools": [{"type": "function", "function": {"name": "add", "description": "Adds.", "parameters": {"type": "object"}}}],
                "temperature": 0.5,
                "max_tokens": 64
            })
        );
    }

    #[test]
    fn streaming_request_asks_for_usage() {
        let v = request_json(&CompletionRequest::new(vec![Message::user("x")]), true);
        assert_eq!(v["stream"], json!(true));
        assert_eq!(v["stream_options"], json!({"include_usage": true}));
        assert!(v.get("tools").is_none());
    }

    #[test]
    fn finish_reasons() {
        assert_eq!(finish_reason(Some("stop"), false), FinishReason::Stop);
        assert_eq!(finish_reason(Some("stop"), true), FinishReason::ToolCalls);
        assert_eq!(finish_reason(None, false), FinishReason::Stop);
        assert_eq!(
            finish_reason(Some("tool_calls"), true),
            FinishReason::ToolCalls
        );
        assert_eq!(finish_reason(Some("length"), false), FinishReason::Length);
        assert_eq!(
            finish_reason(Some("content_filter"), false),
            FinishReason::ContentFilter
        );
        assert_eq!(finish_reason(Some("weird"), false), FinishReason::Other);
    }

    #[test]
    fn response_without_choices_is_malformed() {
        assert!(matches!(
            parse_response(br#"{"choices": []}"#),
            Err(ModelError::MalformedResponse { .. })
        ));
        assert!(matches!(
            parse_response(b"<html>"),
            Err(ModelError::MalformedResponse { .. })
        ));
    }

    #[test]
    fn response_with_object_arguments_and_missing_ids() {
        let c = parse_response(
            br#"{"choices":[{"message":{"content":"","tool_calls":[
                {"function":{"name":"a","arguments":{"x":1}}},
                {"id":"","function":{"name":"b"}}
            ]},"finish_reason":"stop"}]}"#,
        )
        .unwrap();
        assert_eq!(c.content, None);
        assert_eq!(c.finish_reason, FinishReason::ToolCalls);
        assert_eq!(c.usage, Usage::default());
        assert_eq!(
            c.tool_calls,
            vec![
                ToolCall {
                    id: "call_0".into(),
                    name: "a".into(),
                    arguments: json!({"x": 1})
                },
                ToolCall {
                    id: "call_1".into(),
                    name: "b".into(),
                    arguments: json!({})
                },
            ]
        );
    }

    #[test]
    fn error_in_a_200_body_is_mapped() {
        assert!(matches!(
            parse_response(br#"{"error":{"message":"overloaded","type":"server_error"}}"#),
            Err(ModelError::Server { status: 500, .. })
        ));
    }

    fn feed(chunks: &[&str]) -> (Vec<StreamEvent>, ChatStream) {
        let mut decoder = ChatStream::default();
        let mut out = VecDeque::new();
        for data in chunks {
            let event = Event {
                data: (*data).to_owned(),
                ..Event::default()
            };
            decoder.on_event(&event, &mut out).unwrap();
        }
        (out.into_iter().collect(), decoder)
    }

    #[test]
    fn stream_calls_that_share_index_zero_are_kept_apart() {
        let (events, decoder) = feed(&[
            r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"id":"a","function":{"name":"f","arguments":"{}"}}]}}]}"#,
            r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"id":"b","function":{"name":"g","arguments":"{\"x\":2}"}}]}}]}"#,
            r#"{"choices":[{"delta":{},"finish_reason":"tool_calls"}]}"#,
        ]);
        assert_eq!(events.len(), 4);
        let c = decoder.finish(false).unwrap();
        assert_eq!(c.tool_calls[0].id, "a");
        assert_eq!(c.tool_calls[1].id, "b");
        assert_eq!(c.tool_calls[1].arguments, json!({"x": 2}));
    }

    #[test]
    fn stream_arguments_before_the_name_are_replayed_at_start() {
        let (events, decoder) = feed(&[
            r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"q\":"}}]}}]}"#,
            r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"id":"z","function":{"name":"find","arguments":"1}"}}]}}]}"#,
            "[DONE]",
        ]);
        assert_eq!(
            events,
            vec![
                StreamEvent::ToolCallStart {
                    index: 0,
                    id: "z".into(),
                    name: "find".into()
                },
                StreamEvent::ToolCallDelta {
                    index: 0,
                    arguments: "{\"q\":".into()
                },
                StreamEvent::ToolCallDelta {
                    index: 0,
                    arguments: "1}".into()
                },
            ]
        );
        assert_eq!(
            decoder.finish(true).unwrap().tool_calls[0].arguments,
            json!({"q": 1})
        );
    }

    #[test]
    fn stream_without_end_is_truncated() {
        let (_, decoder) = feed(&[r#"{"choices":[{"delta":{"content":"par"}}]}"#]);
        assert!(matches!(
            decoder.finish(false),
            Err(ModelError::Connection { .. })
        ));
    }

    #[test]
    fn env_lookup() {
        let c = OpenAiConfig::from_lookup("m", |k| match k {
            "OPENAI_BASE_URL" => Some("http://localhost:8000/v1".into()),
            "OPENAI_API_KEY" => Some(String::new()),
            _ => None,
        });
        assert_eq!(c.base_url, "http://localhost:8000/v1");
        assert!(c.api_key.is_none());
        let c = OpenAiConfig::from_lookup("m", |k| (k == "OPENAI_API_KEY").then(|| "sk-1".into()));
        assert_eq!(c.base_url, OpenAiConfig::DEFAULT_BASE_URL);
        assert_eq!(c.api_key.as_ref().map(ApiKey::expose), Some("sk-1"));
        assert_eq!(c.timeout, Duration::from_secs(120));
        assert!(!format!("{c:?}").contains("sk-1"));
    }

    #[test]
    fn name_and_debug_hide_the_key() {
        let model = OpenAiModel::new(
            OpenAiConfig::new("gpt-4o-mini")
                .with_base_url("http://localhost:1/v1/")
                .with_api_key("sk-very-secret"),
        )
        .unwrap();
        assert_eq!(model.name(), "openai:gpt-4o-mini");
        assert_eq!(model.endpoint(), "http://localhost:1/v1/chat/completions");
        assert!(!format!("{model:?}").contains("sk-very-secret"));
    }
}
