//! The agent loop's own cost per step: an in-process zero-latency model, two tools.
//!
//! Run: `cargo bench -p pocket-agent --bench agent_loop`. One step = one model turn + one tool call
//! (hooks, schema validation, timeout and panic guard, transcript, events).

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use pocket_agent::{
    Agent, Completion, CompletionRequest, Message, Model, ModelError, Tool, ToolCall, ToolContext,
    ToolError,
};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::json;

const STEPS: u32 = 10;

/// Calls a tool on every turn but the last, alternating between the two tools.
struct ZeroLatency;

impl Model for ZeroLatency {
    fn name(&self) -> &str {
        "zero"
    }

    async fn complete(&self, request: &CompletionRequest) -> Result<Completion, ModelError> {
        let turn = request
            .messages
            .iter()
            .filter(|m| matches!(m, Message::Assistant { .. }))
            .count();
        if turn as u32 + 1 >= STEPS {
            return Ok(Completion::text("done"));
        }
        let call = if turn % 2 == 0 {
            ToolCall {
                id: format!("c{turn}"),
                name: "add".into(),
                arguments: json!({"a": 2, "b": 3}),
            }
        } else {
            ToolCall {
                id: format!("c{turn}"),
                name: "upper".into(),
                arguments: json!({"text": "hello"}),
            }
        };
        Ok(Completion::tool_calls(vec![call]))
    }
}

#[derive(Deserialize, JsonSchema)]
struct AddArgs {
    a: i64,
    b: i64,
}

struct Add;

impl Tool for Add {
    type Args = AddArgs;
    type Output = i64;
    fn name(&self) -> &str {
        "add"
    }
    fn description(&self) -> &str {
        "Adds two integers."
    }
    async fn call(&self, args: AddArgs, _: &ToolContext) -> Result<i64, ToolError> {
        Ok(args.a + args.b)
    }
}

#[derive(Deserialize, JsonSchema)]
struct UpperArgs {
    text: String,
}

struct Upper;

impl Tool for Upper {
    type Args = UpperArgs;
    type Output = String;
    fn name(&self) -> &str {
        "upper"
    }
    fn description(&self) -> &str {
        "Upper-cases text."
    }
    async fn call(&self, args: UpperArgs, _: &ToolContext) -> Result<String, ToolError> {
        Ok(args.text.to_uppercase())
    }
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let agent = Agent::builder(ZeroLatency)
        .tool(Add)
        .tool(Upper)
        .max_iterations(STEPS)
        .build()
        .unwrap();
    assert_eq!(rt.block_on(agent.run("go")).unwrap().iterations, STEPS);

    let mut group = c.benchmark_group("agent_loop");
    group.throughput(Throughput::Elements(u64::from(STEPS)));
    group.bench_function("run_10_steps", |b| {
        b.iter(|| rt.block_on(agent.run(black_box("go"))).unwrap())
    });

    let mut listening = agent.subscribe();
    group.bench_function("run_10_steps_with_event_subscriber", |b| {
        b.iter(|| {
            let out = rt.block_on(agent.run(black_box("go"))).unwrap();
            while listening.try_recv().is_ok() {}
            out
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
