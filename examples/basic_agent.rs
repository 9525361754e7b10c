//! A first agent: the offline `sim` model, the built-in calculator, a custom tool, and a
//! plugin that logs every tool call with its duration (the seed's `afterTool` hook).
//!
//! Run: `cargo run --example basic_agent`

#![allow(clippy::print_stdout, clippy::print_stderr)] // an example prints what it shows

use std::time::Duration;

use futures_util::future::BoxFuture;
use pocket_agent::{
    AfterTool, Agent, Plugin, RunInfo, Tool, ToolCall, ToolContext, ToolError, ToolSpec,
};
use pocket_models::SimModel;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;

#[derive(Deserialize, JsonSchema)]
struct GreetArgs {
    /// Who to greet.
    name: String,
}

/// A custom tool: its JSON Schema is derived from `GreetArgs`.
struct Greet;

impl Tool for Greet {
    type Args = GreetArgs;
    type Output = String;

    fn name(&self) -> &str {
        "greet"
    }

    fn description(&self) -> &str {
        "Greets someone by name."
    }

    async fn call(&self, args: GreetArgs, _ctx: &ToolContext) -> Result<String, ToolError> {
        Ok(format!("Hello, {}!", args.name))
    }
}

/// Logs each tool call.
struct CallLog;

impl Plugin for CallLog {
    fn name(&self) -> &str {
        "call-log"
    }

    fn after_tool<'a>(
        &'a self,
        run: &'a RunInfo,
        _spec: &'a ToolSpec,
        call: &'a ToolCall,
        result: &'a Result<Value, ToolError>,
        duration: Duration,
    ) -> BoxFuture<'a, AfterTool> {
        let outcome = if result.is_ok() { "ok" } else { "error" };
        eprintln!(
            "[{}] {} {} in {:?}",
            run.run_id, call.name, outcome, duration
        );
        Box::pin(std::future::ready(AfterTool::Continue))
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let calculator = pocket_tools::builtin("calculator", &pocket_tools::ToolsConfig::default())?;
    let agent = Agent::builder(SimModel::default())
        .name("example")
        .dyn_tools(calculator)
        .tool(Greet)
        .plugin(CallLog)
        .max_iterations(4)
        .build()?;

    let out = agent.run("What is (17 + 4) * 23?").await?;
    println!("{}", out.answer);

    let out = agent.run("Please greet 'Ada'").await?;
    println!("{}", out.answer);
    Ok(())
}
