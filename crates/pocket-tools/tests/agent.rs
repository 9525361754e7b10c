//! Built-in tools inside a real agent run: the agent validates arguments against the derived
//! schemas, then calls the tool.

#![allow(clippy::unwrap_used, clippy::expect_used)] // fixtures fail the test loudly by design

use std::sync::Mutex;

use pocket_agent::{Agent, Completion, CompletionRequest, Message, Model, ModelError, ToolCall};
use pocket_tools::{ToolsConfig, builtin};
use serde_json::{Value, json};

/// Asks for the scripted tool calls one per turn, then answers with the last tool result.
struct Scripted {
    calls: Mutex<Vec<(String, Value)>>,
}

impl Scripted {
    fn new(calls: Vec<(&str, Value)>) -> Self {
        let mut calls: Vec<_> = calls.into_iter().map(|(n, a)| (n.to_owned(), a)).collect();
        calls.reverse();
        Self {
            calls: Mutex::new(calls),
        }
    }
}

impl Model for Scripted {
    fn name(&self) -> &str {
        "scripted"
    }

    async fn complete(&self, req: &CompletionRequest) -> Result<Completion, ModelError> {
        let next = self.calls.lock().unwrap().pop();
        match next {
            Some((name, arguments)) => Ok(Completion::tool_calls(vec![ToolCall {
                id: "1".into(),
                name,
                arguments,
            }])),
            None => match req.messages.last() {
                Some(Message::Tool { content, .. }) => Ok(Completion::text(content.clone())),
                _ => Ok(Completion::text("no tool result")),
            },
        }
    }
}

#[tokio::test]
async fn agent_runs_the_calculator_and_the_model_sees_an_integer() {
    let tools = builtin("calculator", &ToolsConfig::default()).unwrap();
    let model = Scripted::new(vec![("calculator", json!({ "expression": "17 * 23" }))]);
    let agent = Agent::builder(model).dyn_tools(tools).build().unwrap();
    let out = agent.run("What is 17 * 23?").await.unwrap();
    assert_eq!(out.answer, "391");
    assert_eq!(out.tool_calls.len(), 1);
    assert_eq!(out.tool_calls[0].error, None);
}

#[tokio::test]
async fn agent_rejects_unknown_and_missing_arguments_by_schema() {
    let dir = tempfile::TempDir::new().unwrap();
    let mut config = ToolsConfig::default();
    config.files.workspace = dir.path().to_owned();
    let mut tools = builtin("time", &config).unwrap();
    tools.extend(builtin("files", &config).unwrap());
    let model = Scripted::new(vec![
        ("time", json!({ "timezone": "+02:00" })),
        ("list_files", json!({})),
        ("read_file", json!({})),
    ]);
    let agent = Agent::builder(model).dyn_tools(tools).build().unwrap();
    let out = agent.run("go").await.unwrap();
    let errors: Vec<_> = out.tool_calls.iter().map(|c| c.error.is_some()).collect();
    assert_eq!(errors, [true, false, true], "{:?}", out.tool_calls);
}
