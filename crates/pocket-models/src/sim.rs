//! `sim`: a deterministic offline model for demos, tests and chaos drills.
//!
//! # The rule `sim` answers by
//!
//! 1. It reads the task (the last user message) and what follows it.
//! 2. **No tool results yet:** it picks every tool whose name, or a word of its name of three
//!    letters or more (split at `_`, `-`, `.`), appears as a word in the task; a tool whose
//!    schema has an `expression` property is also picked when the task holds an arithmetic
//!    expression (`17 * 23`). Arguments come from the tool's schema: `expression` gets the
//!    expression, `url` the first URL, `path` and `command` the first quoted text (`'..'`,
//!    `".."` or `` `..` ``), other strings the first quoted text or else the task; numbers the
//!    first number in the task; booleans `true` when the property's name is a word of the task,
//!    else `false`. Only required properties are filled unless a specific value was found.
//!    All picked tools are called in one turn (parallel calls).
//!    No tool picked: it answers `I have no tool for this. You asked: TASK`.
//! 3. **Tool results present:** if a result says its arguments were invalid and fewer than
//!    three model turns have passed since the task, it asks for the same calls again with
//!    arguments derived afresh. Otherwise it answers from the results, one line per call:
//!    `EXPRESSION = RESULT` for calls with an expression, `TOOL returned: RESULT`, or
//!    `TOOL failed: ERROR`.
//!
//! Token usage is counted as one token per four characters, in and out.
//!
//! # Faults
//!
//! Each call draws one number from a generator seeded by [`SimConfig::seed`] and the call's
//! sequence number, and fails with the first fault whose cumulative rate covers it:
//! rate limit (429 with Retry-After), server error (500), connection reset, timeout, malformed
//! output. Separately, a turn that calls tools gets arguments that are not JSON at the
//! `invalid_tool_args` rate. The same seed and the same order of calls give the same faults.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use pocket_agent::{
    Completion, CompletionRequest, CompletionStream, FinishReason, Message, Model, ModelError,
    StreamEvent, ToolCall, ToolSpec, Usage,
};
use serde::Deserialize;
use serde_json::{Map, Value};

/// Rates (0.0 to 1.0) of injected faults per call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Faults {
    /// HTTP 429 with a Retry-After of [`SimConfig::retry_after_ms`].
    pub rate_limit: f64,
    /// HTTP 500.
    pub server_error: f64,
    /// A connection reset.
    pub connection_reset: f64,
    /// A timeout (after the configured latency).
    pub timeout: f64,
    /// A 200 whose body is not a valid completion.
    pub malformed: f64,
    /// Tool-call arguments that are not JSON (the agent sends the error back to the model).
    pub invalid_tool_args: f64,
}

impl Faults {
    /// The same rate for the transient faults (rate limit, server error, reset, timeout),
    /// split evenly: `transient(0.3)` fails 30 % of calls with a retryable error.
    pub fn transient(total: f64) -> Self {
        let each = total / 4.0;
        Self {
            rate_limit: each,
            server_error: each,
            connection_reset: each,
            timeout: each,
            ..Self::default()
        }
    }
}

/// How `sim` behaves.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SimConfig {
    /// Seed of the fault generator. Default: 0.
    pub seed: u64,
    /// Latency of every call in milliseconds. Default: 0.
    pub latency_ms: u64,
    /// Extra random latency, up to this many milliseconds. Default: 0.
    pub jitter_ms: u64,
    /// Retry-After of injected rate limits, in milliseconds. Default: 100.
    pub retry_after_ms: u64,
    /// Fault rates. Default: none.
    pub faults: Faults,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            seed: 0,
            latency_ms: 0,
            jitter_ms: 0,
            retry_after_ms: 100,
            faults: Faults::default(),
        }
    }
}

/// The deterministic offline model; see the [module docs](self) for its rule.
#[derive(Debug)]
pub struct SimModel {
    config: SimConfig,
    name: String,
    calls: AtomicU64,
}

impl SimModel {
    /// A `sim` model with this behaviour, named `sim`.
    pub fn new(config: SimConfig) -> Self {
        Self::named("sim", config)
    }

    /// A `sim` model with a name of its own (for several in one process).
    pub fn named(name: impl Into<String>, config: SimConfig) -> Self {
        Self {
            config,
            name: name.into(),
            calls: AtomicU64::new(0),
        }
    }

    /// Calls made so far.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    async fn answer(&self, request: &CompletionRequest) -> Result<Completion, ModelError> {
        let n = self.calls.fetch_add(1, Ordering::Relaxed);
        let mut rng = fastrand::Rng::with_seed(mix(self.config.seed, n));
        let latency = self.config.latency_ms
            + if self.config.jitter_ms > 0 {
                rng.u64(0..=self.config.jitter_ms)
            } else {
                0
            };
        if latency > 0 {
            tokio::time::sleep(Duration::from_millis(latency)).await;
        }
        let f = &self.config.faults;
        let draw = rng.f64();
        let mut edge = 0.0;
        let mut hit = |rate: f64| {
            edge += rate;
            draw < edge
        };
        if hit(f.rate_limit) {
            return Err(ModelError::RateLimited {
                message: "sim: injected rate limit".into(),
                retry_after: Some(Duration::from_millis(self.config.retry_after_ms)),
            });
        }
        if hit(f.server_error) {
            return Err(ModelError::Server {
                status: 500,
                message: "sim: injected server error".into(),
                retry_after: None,
            });
        }
        if hit(f.connection_reset) {
            return Err(ModelError::Connection {
                message: "sim: injected connection reset".into(),
                source: None,
            });
        }
        if hit(f.timeout) {
            return Err(ModelError::Timeout {
                after: Some(Duration::from_millis(latency)),
            });
        }
        if hit(f.malformed) {
            return Err(ModelError::malformed(
                "sim: injected malformed output `{\"choices\": [`",
            ));
        }
        let corrupt = f.invalid_tool_args > 0.0 && rng.f64() < f.invalid_tool_args;
        let mut completion = respond(request, corrupt);
        completion.usage = Usage {
            input_tokens: request
                .messages
                .iter()
                .map(|m| m.text().map_or(0, str::len) as u64)
                .sum::<u64>()
                / 4,
            output_tokens: completion.content.as_ref().map_or(0, |c| c.len() as u64) / 4
                + completion
                    .tool_calls
                    .iter()
                    .map(|c| c.arguments.to_string().len() as u64)
                    .sum::<u64>()
                    / 4,
        };
        Ok(completion)
    }
}

impl Default for SimModel {
    fn default() -> Self {
        Self::new(SimConfig::default())
    }
}

impl Model for SimModel {
    fn name(&self) -> &str {
        &self.name
    }

    async fn complete(&self, request: &CompletionRequest) -> Result<Completion, ModelError> {
        self.answer(request).await
    }

    /// Streams the answer word by word, then the tool calls, then the whole completion.
    async fn stream(&self, request: &CompletionRequest) -> Result<CompletionStream, ModelError> {
        let completion = self.answer(request).await?;
        let mut events = Vec::new();
        if let Some(text) = &completion.content {
            events.extend(
                text.split_inclusive(' ')
                    .map(|w| Ok(StreamEvent::TextDelta(w.to_owned()))),
            );
        }
        for (index, call) in completion.tool_calls.iter().enumerate() {
            events.push(Ok(StreamEvent::ToolCallStart {
                index,
                id: call.id.clone(),
                name: call.name.clone(),
            }));
            events.push(Ok(StreamEvent::ToolCallDelta {
                index,
                arguments: call.arguments.to_string(),
            }));
        }
        events.push(Ok(StreamEvent::Done(completion)));
        Ok(Box::pin(futures_util::stream::iter(events)))
    }
}

/// SplitMix64 of seed and call number, so neighbouring calls get unrelated streams.
fn mix(seed: u64, n: u64) -> u64 {
    let mut z = seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The rule, without faults.
fn respond(request: &CompletionRequest, corrupt: bool) -> Completion {
    let messages = &request.messages;
    let task_at = messages
        .iter()
        .rposition(|m| matches!(m, Message::User { .. }));
    let task = task_at.and_then(|i| messages[i].text()).unwrap_or_default();
    let after = task_at.map_or(&messages[..0], |i| &messages[i + 1..]);

    let results: Vec<&Message> = after
        .iter()
        .rev()
        .take_while(|m| matches!(m, Message::Tool { .. }))
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    if results.is_empty() {
        let calls = derive_calls(task, &request.tools, corrupt);
        return if calls.is_empty() {
            Completion::text(format!("I have no tool for this. You asked: {task}"))
        } else {
            Completion::tool_calls(calls)
        };
    }
    let turns = after
        .iter()
        .filter(|m| matches!(m, Message::Assistant { .. }))
        .count();
    let invalid = results.iter().any(|m| {
        matches!(m, Message::Tool { is_error: true, content, .. } if content.contains("invalid arguments"))
    });
    if invalid && turns < 3 {
        let calls = derive_calls(task, &request.tools, corrupt);
        if !calls.is_empty() {
            return Completion::tool_calls(calls);
        }
    }
    let asked: Vec<&ToolCall> = after
        .iter()
        .filter_map(|m| match m {
            Message::Assistant { tool_calls, .. } => Some(tool_calls),
            _ => None,
        })
        .flatten()
        .collect();
    let lines: Vec<String> = results
        .iter()
        .filter_map(|m| match m {
            Message::Tool {
                call_id,
                name,
                content,
                is_error,
            } => {
                // Latest first: a re-asked call may reuse an id.
                let expr = asked
                    .iter()
                    .rev()
                    .find(|c| &c.id == call_id)
                    .and_then(|c| c.arguments.get("expression"))
                    .and_then(Value::as_str);
                Some(match (is_error, expr) {
                    (true, _) => format!("{name} failed: {content}"),
                    (false, Some(expr)) => format!("{expr} = {content}"),
                    (false, None) => format!("{name} returned: {content}"),
                })
            }
            _ => None,
        })
        .collect();
    Completion {
        content: Some(lines.join("\n")),
        finish_reason: FinishReason::Stop,
        ..Completion::default()
    }
}

fn derive_calls(task: &str, tools: &[ToolSpec], corrupt: bool) -> Vec<ToolCall> {
    let lower = task.to_lowercase();
    let words: Vec<&str> = lower
        .split(|c: char| !c.is_alphanumeric() && c != '_')
        .filter(|w| !w.is_empty())
        .collect();
    let expression = find_expression(task);
    let mut calls = Vec::new();
    for spec in tools {
        let props = spec.parameters.get("properties").and_then(Value::as_object);
        let takes_expression = props.is_some_and(|p| p.contains_key("expression"));
        let name = spec.name.to_lowercase();
        let named = words.contains(&name.as_str())
            || name
                .split(['_', '-', '.'])
                .any(|part| part.len() >= 3 && words.contains(&part));
        if !(named || takes_expression && expression.is_some()) {
            continue;
        }
        let arguments = if corrupt {
            Value::String("{\"oops\": not json".into())
        } else {
            Value::Object(derive_arguments(
                task,
                &spec.parameters,
                expression.as_deref(),
            ))
        };
        calls.push(ToolCall {
            id: format!("call_{}", calls.len() + 1),
            name: spec.name.clone(),
            arguments,
        });
    }
    calls
}

fn derive_arguments(task: &str, schema: &Value, expression: Option<&str>) -> Map<String, Value> {
    let mut args = Map::new();
    let Some(props) = schema.get("properties").and_then(Value::as_object) else {
        return args;
    };
    let required: Vec<&str> = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let quoted = find_quoted(task);
    for (key, prop) in props {
        let is_required = required.contains(&key.as_str());
        let ty = prop.get("type").and_then(|t| match t {
            Value::String(s) => Some(s.as_str()),
            Value::Array(a) => a.iter().filter_map(Value::as_str).find(|s| *s != "null"),
            _ => None,
        });
        let value = match (ty, key.as_str()) {
            (Some("string"), "expression") => expression.map(Value::from),
            (Some("string"), "url") => task
                .split_whitespace()
                .find(|w| w.starts_with("http"))
                .map(|u| Value::from(u.trim_end_matches(['.', ',', '?', '!', ')']))),
            (Some("string"), _) => match quoted {
                Some(q) => Some(Value::from(q)),
                None if is_required => Some(Value::from(task)),
                None => None,
            },
            (Some("integer"), _) => find_number(task)
                .map(|n| Value::from(n as i64))
                .or(is_required.then(|| Value::from(0))),
            (Some("number"), _) => find_number(task)
                .map(Value::from)
                .or(is_required.then(|| Value::from(0))),
            (Some("boolean"), name) if mentions(task, name) => Some(Value::Bool(true)),
            (Some("boolean"), _) => is_required.then_some(Value::Bool(false)),
            (Some("array"), _) => is_required.then(|| Value::Array(Vec::new())),
            (Some("object"), _) => is_required.then(|| Value::Object(Map::new())),
            _ => None,
        };
        if let Some(value) = value {
            args.insert(key.clone(), value);
        }
    }
    args
}

/// The longest run of arithmetic characters holding an operator between two operands.
fn find_expression(task: &str) -> Option<String> {
    let is_expr = |c: char| c.is_ascii_digit() || " .+-*/%^()".contains(c);
    task.split(|c: char| !is_expr(c))
        .map(|s| s.trim().trim_end_matches(['.', ' ']))
        .filter(|s| {
            let b = s.as_bytes();
            b.iter().any(u8::is_ascii_digit)
                && (1..b.len())
                    .any(|i| b"+-*/%^".contains(&b[i]) && b[..i].iter().any(u8::is_ascii_digit))
        })
        .max_by_key(|s| s.len())
        .map(str::to_owned)
}

/// Whether `word` appears in the task as a whole word (case-insensitive).
fn mentions(task: &str, word: &str) -> bool {
    task.split(|c: char| !c.is_alphanumeric() && c != '_')
        .any(|w| w.eq_ignore_ascii_case(word))
}

fn find_quoted(task: &str) -> Option<&str> {
    for q in ['`', '"', '\''] {
        let mut parts = task.splitn(3, q);
        if let (Some(_), Some(inner), Some(_)) = (parts.next(), parts.next(), parts.next())
            && !inner.is_empty()
        {
            return Some(inner);
        }
    }
    None
}

fn find_number(task: &str) -> Option<f64> {
    task.split(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-'))
        .filter(|s| s.bytes().any(|b| b.is_ascii_digit()))
        .find_map(|s| s.parse().ok())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::json;

    use super::*;

    fn calculator() -> ToolSpec {
        ToolSpec::new(
            "calculator",
            "Evaluates arithmetic.",
            json!({"type": "object", "properties": {"expression": {"type": "string"}}, "required": ["expression"]}),
        )
    }

    fn request(messages: Vec<Message>, tools: Vec<ToolSpec>) -> CompletionRequest {
        CompletionRequest {
            messages,
            tools: Arc::from(tools),
            ..Default::default()
        }
    }

    #[test]
    fn finds_the_expression() {
        assert_eq!(
            find_expression("What is 17 * 23?").as_deref(),
            Some("17 * 23")
        );
        assert_eq!(
            find_expression("Compute (2 + 3) ^ 2 please.").as_deref(),
            Some("(2 + 3) ^ 2")
        );
        assert_eq!(find_expression("Call me at 555"), None);
        assert_eq!(find_expression("-5"), None);
    }

    #[test]
    fn first_turn_calls_the_calculator_then_answers_from_the_result() {
        let task = Message::user("What is 17 * 23?");
        let first = respond(&request(vec![task.clone()], vec![calculator()]), false);
        assert_eq!(first.tool_calls.len(), 1);
        assert_eq!(
            first.tool_calls[0].arguments,
            json!({"expression": "17 * 23"})
        );
        let second = respond(
            &request(
                vec![
                    task,
                    first.to_message(),
                    Message::Tool {
                        call_id: "call_1".into(),
                        name: "calculator".into(),
                        content: "391".into(),
                        is_error: false,
                    },
                ],
                vec![calculator()],
            ),
            false,
        );
        assert!(second.tool_calls.is_empty());
        assert_eq!(second.content.as_deref(), Some("17 * 23 = 391"));
    }

    #[test]
    fn picks_tools_by_name_and_fills_required_arguments() {
        let read = ToolSpec::new(
            "read_file",
            "Reads a file.",
            json!({"type": "object", "properties": {"path": {"type": "string"}, "max": {"type": "integer"}}, "required": ["path"]}),
        );
        let c = respond(
            &request(
                vec![Message::user("read 'notes.txt' please")],
                vec![read, calculator()],
            ),
            false,
        );
        assert_eq!(c.tool_calls.len(), 1);
        assert_eq!(c.tool_calls[0].name, "read_file");
        assert_eq!(c.tool_calls[0].arguments, json!({"path": "notes.txt"}));
    }

    #[test]
    fn reasked_call_after_invalid_arguments_answers_with_the_expression() {
        let task = Message::user("What is 41 + 55?");
        let bad = respond(&request(vec![task.clone()], vec![calculator()]), true);
        assert!(
            bad.tool_calls[0].arguments.is_string(),
            "corrupted arguments"
        );
        let error = Message::Tool {
            call_id: bad.tool_calls[0].id.clone(),
            name: "calculator".into(),
            content: "error: invalid arguments: not an object".into(),
            is_error: true,
        };
        let mut messages = vec![task, bad.to_message(), error];
        let again = respond(&request(messages.clone(), vec![calculator()]), false);
        assert_eq!(
            again.tool_calls[0].arguments,
            json!({"expression": "41 + 55"})
        );
        messages.push(again.to_message());
        messages.push(Message::Tool {
            call_id: again.tool_calls[0].id.clone(),
            name: "calculator".into(),
            content: "96".into(),
            is_error: false,
        });
        let answer = respond(&request(messages, vec![calculator()]), false);
        assert_eq!(answer.content.as_deref(), Some("41 + 55 = 96"));
    }

    #[test]
    fn a_boolean_named_in_the_task_is_true() {
        let write = ToolSpec::new(
            "write_file",
            "Writes.",
            json!({"type": "object", "properties": {
                "path": {"type": "string"}, "content": {"type": "string"}, "append": {"type": "boolean"}
            }, "required": ["path", "content"]}),
        );
        let c = respond(
            &request(
                vec![Message::user("write_file 'a.txt' with append")],
                vec![write.clone()],
            ),
            false,
        );
        assert_eq!(
            c.tool_calls[0].arguments,
            json!({"path": "a.txt", "content": "a.txt", "append": true})
        );
        let c = respond(
            &request(vec![Message::user("write_file 'a.txt'")], vec![write]),
            false,
        );
        assert_eq!(
            c.tool_calls[0].arguments,
            json!({"path": "a.txt", "content": "a.txt"})
        );
    }

    #[test]
    fn without_tools_it_says_so() {
        let c = respond(&request(vec![Message::user("hello")], vec![]), false);
        assert_eq!(
            c.content.as_deref(),
            Some("I have no tool for this. You asked: hello")
        );
    }

    #[tokio::test]
    async fn faults_are_deterministic_under_a_seed() {
        let config = SimConfig {
            seed: 7,
            faults: Faults::transient(0.5),
            ..Default::default()
        };
        let req = request(vec![Message::user("hi")], vec![]);
        let mut runs = Vec::new();
        for _ in 0..2 {
            let model = SimModel::new(config.clone());
            let mut outcomes = Vec::new();
            for _ in 0..200 {
                outcomes.push(
                    model
                        .complete(&req)
                        .await
                        .map_err(|e| e.to_string())
                        .map(|c| c.content),
                );
            }
            runs.push(outcomes);
        }
        assert_eq!(runs[0], runs[1]);
        let failures = runs[0].iter().filter(|o| o.is_err()).count();
        assert!(
            (60..140).contains(&failures),
            "about half of 200 calls fail, got {failures}"
        );
    }
}
