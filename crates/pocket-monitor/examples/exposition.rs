//! Prints a populated `/metrics` exposition: a few real agent runs (one tool call, one failed
//! model call) plus the values the binary, cluster and server set. `check-metrics.sh` pipes it
//! into `promtool check metrics`.
//!
//! `cargo run -p pocket-monitor --example exposition [-- --openmetrics]`

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use pocket_agent::{
    Agent, Completion, CompletionRequest, Message, Model, ModelError, Tool, ToolCall, ToolContext,
    ToolError, Usage,
};
use pocket_monitor::{BreakerState, Monitor, MonitorConfig, OverheadPhase};
use schemars::JsonSchema;
use serde::Deserialize;

/// Asks for `double` once, answers with its result; the fourth call fails.
struct Scripted {
    calls: AtomicUsize,
}

impl Model for Scripted {
    fn name(&self) -> &str {
        "scripted"
    }

    async fn complete(&self, req: &CompletionRequest) -> Result<Completion, ModelError> {
        if self.calls.fetch_add(1, Ordering::Relaxed) == 3 {
            return Err(ModelError::other("connection reset by peer"));
        }
        let mut c = match req.messages.last() {
            Some(Message::Tool { content, .. }) => Completion::text(format!("It is {content}.")),
            _ => Completion::tool_calls(vec![ToolCall {
                id: "1".into(),
                name: "double".into(),
                arguments: serde_json::json!({ "x": 21 }),
            }]),
        };
        c.usage = Usage {
            input_tokens: 120,
            output_tokens: 8,
        };
        Ok(c)
    }
}

#[derive(Deserialize, JsonSchema)]
struct Args {
    /// The number to double.
    x: i64,
}

struct Double;

impl Tool for Double {
    type Args = Args;
    type Output = i64;
    fn name(&self) -> &str {
        "double"
    }
    fn description(&self) -> &str {
        "Doubles a number."
    }
    async fn call(&self, args: Args, _: &ToolContext) -> Result<i64, ToolError> {
        Ok(args.x * 2)
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let monitor = Monitor::builder(MonitorConfig::default())
        .sample_interval(None)
        .build()?;
    let agent = Agent::builder(Scripted {
        calls: AtomicUsize::new(0),
    })
    .name("example")
    .tool(Double)
    .plugin(monitor.plugin())
    .build()?;
    let observer = monitor.observe(&agent);
    for _ in 0..3 {
        let _ = agent.run("What is 21 doubled?").await;
    }
    observer.stop().await;

    let metrics = monitor.metrics();
    metrics.record_retry("scripted");
    metrics.set_breaker_state("scripted", BreakerState::HalfOpen);
    metrics.set_queue_depth(3);
    metrics.set_instances("active", 2);
    let _connection = metrics.connection();
    metrics.record_overhead(OverheadPhase::QueueWait, Duration::from_millis(4));
    monitor.sample_now();

    let text = if std::env::args().any(|a| a == "--openmetrics") {
        metrics.encode_openmetrics()
    } else {
        metrics.encode()
    };
    #[allow(clippy::print_stdout)] // the example's output is the exposition
    {
        print!("{text}");
    }
    monitor.shutdown().await;
    Ok(())
}
