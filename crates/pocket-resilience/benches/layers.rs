//! The added cost of the resilience layers per call, on a zero-latency model and tool.
//!
//! Run: `cargo bench -p pocket-resilience --bench layers`. Each variant answers the same
//! request from the same in-process model; the difference to `bare` is what the layers add
//! (breaker admission and record, the call scope, the retry budget's deposit, boxing).

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use futures_util::future::BoxFuture;
use pocket_agent::{
    BoxModel, Completion, CompletionRequest, DynTool, Message, Model, ModelError, SharedTool,
    ToolContext, ToolError, ToolSpec,
};
use pocket_resilience::{
    BreakerPolicy, BreakerTool, CircuitBreaker, Fallback, FallbackPolicy, ResilienceHub, Retry,
    RetryPolicy, RetryTool,
};
use serde_json::{Value, json};

struct Zero(&'static str);

impl Model for Zero {
    fn name(&self) -> &str {
        self.0
    }

    async fn complete(&self, _: &CompletionRequest) -> Result<Completion, ModelError> {
        Ok(Completion::text("ok"))
    }
}

struct Echo(ToolSpec);

impl DynTool for Echo {
    fn spec(&self) -> &ToolSpec {
        &self.0
    }

    fn call<'a>(
        &'a self,
        args: Value,
        _: &'a ToolContext,
    ) -> BoxFuture<'a, Result<Value, ToolError>> {
        Box::pin(std::future::ready(Ok(args)))
    }
}

fn time_calls(rt: &tokio::runtime::Runtime, model: &BoxModel, iters: u64) -> Duration {
    let request = CompletionRequest::new(vec![Message::user("hi")]);
    rt.block_on(async {
        let start = Instant::now();
        for _ in 0..iters {
            black_box(model.complete(black_box(&request)).await.unwrap());
        }
        start.elapsed()
    })
}

fn models(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let hub = ResilienceHub::new();
    let breaker = BreakerPolicy::default();
    let retry = RetryPolicy::default();
    let route = |name: &'static str| {
        BoxModel::new(Retry::new(
            CircuitBreaker::new(Zero(name), &breaker, &hub),
            retry.clone(),
            &hub,
        ))
    };
    let variants = [
        ("bare", BoxModel::new(Zero("bare"))),
        (
            "breaker",
            BoxModel::new(CircuitBreaker::new(Zero("b"), &breaker, &hub)),
        ),
        ("retry+breaker", route("rb")),
        (
            "fallback(retry+breaker, retry+breaker)",
            BoxModel::new(Fallback::new(
                route("f1"),
                [route("f2")],
                FallbackPolicy::default(),
                &hub,
            )),
        ),
    ];
    let mut group = c.benchmark_group("model_call");
    for (name, model) in &variants {
        group.bench_function(*name, |b| {
            b.iter_custom(|iters| time_calls(&rt, model, iters))
        });
    }
    group.finish();
}

fn tools(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let hub = ResilienceHub::new();
    let mut spec = ToolSpec::new("echo", "Echoes.", json!({"type": "object"}));
    spec.idempotent = true;
    let bare: SharedTool = Arc::new(Echo(spec));
    let layered = RetryTool::shared(
        BreakerTool::shared(bare.clone(), &BreakerPolicy::default(), &hub),
        RetryPolicy::default(),
        &hub,
    );
    let ctx = ToolContext::detached();
    let args = json!({"x": 1});
    let mut group = c.benchmark_group("tool_call");
    for (name, tool) in [("bare", &bare), ("retry+breaker", &layered)] {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        black_box(tool.call(args.clone(), &ctx).await.unwrap());
                    }
                    start.elapsed()
                })
            })
        });
    }
    group.finish();
}

criterion_group!(benches, models, tools);
criterion_main!(benches);
