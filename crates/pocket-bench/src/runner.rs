//! The peer workload on Pocket Agent: N tasks, each one tool round (two model calls through
//! the OpenAI-compatible client, one local tool call), C at a time.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use pocket_agent::{Agent, Tool, ToolContext, ToolError};
use pocket_models::{OpenAiConfig, OpenAiModel};
use schemars::JsonSchema;
use serde::Deserialize;

use crate::stats::{self, Report};

/// The task every framework runs; the stub answers it with `add(17, 25)`, then text.
pub const TASK: &str = "What is 17 + 25? Use the add tool.";
/// What a correct answer contains.
pub const EXPECTED: &str = "42";

/// What [`run`] does.
#[derive(Debug, Clone)]
pub struct RunnerConfig {
    /// The stub's base URL, `http://HOST:PORT/v1`.
    pub base_url: String,
    /// Tasks to run (at least 1).
    pub tasks: usize,
    /// Tasks in flight at once (at least 1).
    pub concurrency: usize,
    /// The stub's fixed latency, subtracted twice from each task's latency.
    pub latency: Duration,
}

/// Why [`run`] could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunnerError {
    /// `tasks` or `concurrency` is zero.
    #[error("{0} must be at least 1")]
    Zero(&'static str),
    /// The model client could not be set up.
    #[error("model client")]
    Model(#[from] pocket_models::openai::ConfigError),
    /// The agent could not be built.
    #[error("agent")]
    Build(#[from] pocket_agent::BuildError),
}

#[derive(Deserialize, JsonSchema)]
struct AddArgs {
    /// First addend.
    a: i64,
    /// Second addend.
    b: i64,
}

/// The trivial local tool of the workload.
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

    async fn call(&self, args: AddArgs, _ctx: &ToolContext) -> Result<i64, ToolError> {
        Ok(args.a + args.b)
    }
}

/// The agent of the workload: the OpenAI-compatible client at `base_url`, the `add` tool.
///
/// # Errors
/// As [`RunnerError`].
pub fn agent(base_url: &str) -> Result<Agent, RunnerError> {
    let model = OpenAiModel::new(
        OpenAiConfig::new("stub")
            .with_base_url(base_url)
            .with_api_key("bench-key"),
    )?;
    Ok(Agent::builder(model).tool(Add).max_iterations(4).build()?)
}

/// Runs the workload and measures it: CPU and peak RSS are this whole process's.
///
/// # Errors
/// As [`RunnerError`]; failed tasks are counted in [`Report::errors`], not returned.
pub async fn run(config: RunnerConfig) -> Result<Report, RunnerError> {
    if config.tasks == 0 {
        return Err(RunnerError::Zero("tasks"));
    }
    if config.concurrency == 0 {
        return Err(RunnerError::Zero("concurrency"));
    }
    let agent = agent(&config.base_url)?;
    let next = Arc::new(AtomicUsize::new(0));
    let cpu0 = stats::cpu_seconds();
    let start = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..config.concurrency.min(config.tasks) {
        let agent = agent.clone();
        let next = next.clone();
        let tasks = config.tasks;
        workers.spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0usize;
            while next.fetch_add(1, Ordering::Relaxed) < tasks {
                let t0 = Instant::now();
                match agent.run(TASK).await {
                    Ok(out) if out.answer.contains(EXPECTED) => latencies.push(t0.elapsed()),
                    Ok(out) => {
                        tracing_free_note(&format!("unexpected answer: {}", out.answer), errors);
                        errors += 1;
                    }
                    Err(e) => {
                        tracing_free_note(&format!("task failed: {e}"), errors);
                        errors += 1;
                    }
                }
            }
            (latencies, errors)
        });
    }
    let mut latencies = Vec::with_capacity(config.tasks);
    let mut errors = 0;
    while let Some(joined) = workers.join_next().await {
        match joined {
            Ok((l, e)) => {
                latencies.extend(l);
                errors += e;
            }
            Err(_) => errors += 1,
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = stats::cpu_seconds() - cpu0;
    latencies.sort_unstable();
    let base = config.latency * 2;
    let added = |p| {
        stats::percentile(&latencies, p)
            .saturating_sub(base)
            .as_secs_f64()
            * 1000.0
    };
    #[allow(clippy::cast_precision_loss, reason = "task counts")]
    let tasks = config.tasks as f64;
    Ok(Report {
        framework: format!("pocket-agent {}", env!("CARGO_PKG_VERSION")),
        concurrency: config.concurrency,
        tasks: config.tasks,
        errors,
        elapsed_s: elapsed,
        tasks_per_s: tasks / elapsed,
        cpu_s_per_task: cpu / tasks,
        p50_added_ms: added(0.50),
        p99_added_ms: added(0.99),
        peak_rss_mib: stats::peak_rss_mib(),
    })
}

/// The first failure of a worker goes to stderr, so a broken setup is visible at once.
fn tracing_free_note(message: &str, errors_so_far: usize) {
    if errors_so_far == 0 {
        #[allow(clippy::print_stderr, reason = "a benchmark tool's own diagnostics")]
        {
            eprintln!("pocket-bench: {message}");
        }
    }
}
