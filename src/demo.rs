//! `pocket demo`: a batch of tasks through real agents on the offline `sim` model, with
//! injected faults, a progress bar, and a report.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use pocket_agent::{Agent, Classify, EventKind};
use pocket_models::{Faults, SimConfig, SimModel};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// Options of `pocket demo`.
#[derive(Debug, clap::Args)]
pub(crate) struct DemoArgs {
    /// How many tasks to run.
    #[arg(long, default_value_t = 200)]
    tasks: usize,
    /// How many run at once.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Share of model calls that fail with a transient fault (429, 500, reset, timeout).
    #[arg(long, default_value_t = 0.1)]
    fault_rate: f64,
    /// Share of tool-calling turns whose arguments are garbage.
    #[arg(long, default_value_t = 0.05)]
    bad_args_rate: f64,
    /// Seed of the faults and the tasks.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Model latency in milliseconds (plus up to as much again of jitter).
    #[arg(long, default_value_t = 20)]
    latency_ms: u64,
}

#[derive(Debug, Default)]
struct Tally {
    succeeded: usize,
    verified: usize,
    failed: BTreeMap<&'static str, usize>,
    tool_calls: u64,
    tool_errors: u64,
    tokens: u64,
    durations: Vec<Duration>,
}

/// Runs the demo.
///
/// # Errors
/// A message when the arguments make no sense or the agent cannot be built.
#[allow(clippy::print_stdout)] // the demo's report is the CLI's own output
pub(crate) async fn run(args: DemoArgs) -> Result<(), String> {
    if !(0.0..=1.0).contains(&args.fault_rate) || !(0.0..=1.0).contains(&args.bad_args_rate) {
        return Err("--fault-rate and --bad-args-rate must be between 0 and 1".into());
    }
    if args.concurrency == 0 {
        return Err("--concurrency must be at least 1".into());
    }
    let sim = SimModel::new(SimConfig {
        seed: args.seed,
        latency_ms: args.latency_ms,
        jitter_ms: args.latency_ms,
        retry_after_ms: 100,
        faults: Faults {
            invalid_tool_args: args.bad_args_rate,
            ..Faults::transient(args.fault_rate)
        },
    });
    let tools = ["calculator", "time"]
        .iter()
        .map(|name| pocket_tools::builtin(name, &pocket_tools::ToolsConfig::default()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    let agent = Agent::builder(sim)
        .name("demo")
        .dyn_tools(tools.into_iter().flatten())
        .max_iterations(5)
        .build()
        .map_err(|e| e.to_string())?;

    println!(
        "Pocket Agent demo: {} tasks on the offline `sim` model",
        args.tasks
    );
    println!(
        "  faults injected: {:.0}% of model calls (429, 500, reset, timeout), {:.0}% garbage tool arguments; seed {}",
        args.fault_rate * 100.0,
        args.bad_args_rate * 100.0,
        args.seed
    );
    println!(
        "  tools: calculator, time; {} runs at a time\n",
        args.concurrency
    );

    let bar = ProgressBar::new(args.tasks as u64);
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{bar:40}] {pos}/{len} tasks  {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );

    let mut events = agent.subscribe();
    let counter = tokio::spawn(async move {
        let (mut calls, mut errors) = (0u64, 0u64);
        loop {
            match events.recv().await {
                Ok(e) => {
                    if let EventKind::ToolCallFinished { error, .. } = e.kind {
                        calls += 1;
                        errors += u64::from(error.is_some());
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return (calls, errors),
            }
        }
    });

    let started = Instant::now();
    let permits = Arc::new(Semaphore::new(args.concurrency));
    let mut runs = JoinSet::new();
    let mut rng = fastrand::Rng::with_seed(args.seed);
    for i in 0..args.tasks {
        let (task, expected) = make_task(&mut rng, i);
        let agent = agent.clone();
        let permits = permits.clone();
        runs.spawn(async move {
            let _permit = permits.acquire_owned().await;
            let t = Instant::now();
            (agent.run(task).await, expected, t.elapsed())
        });
    }
    let mut tally = Tally::default();
    while let Some(joined) = runs.join_next().await {
        let Ok((result, expected, took)) = joined else {
            continue;
        };
        tally.durations.push(took);
        match result {
            Ok(out) => {
                tally.succeeded += 1;
                tally.tokens += out.usage.total();
                if expected.as_deref().is_none_or(|e| out.answer == e) {
                    tally.verified += 1;
                }
            }
            Err(err) => {
                *tally
                    .failed
                    .entry(err.classify().kind.as_str())
                    .or_default() += 1
            }
        }
        let failed: usize = tally.failed.values().sum();
        bar.set_message(format!("{} ok, {failed} failed", tally.succeeded));
        bar.inc(1);
    }
    bar.finish();
    let elapsed = started.elapsed();
    drop(agent);
    (tally.tool_calls, tally.tool_errors) = counter.await.unwrap_or_default();

    tally.durations.sort();
    let pct = |p: f64| {
        tally
            .durations
            .get(((tally.durations.len() as f64 - 1.0) * p) as usize)
            .copied()
            .unwrap_or_default()
    };
    let failed: usize = tally.failed.values().sum();
    println!("\nReport");
    println!(
        "  succeeded        {} / {} ({} answers checked correct)",
        tally.succeeded, args.tasks, tally.verified
    );
    println!(
        "  failed           {failed}{}",
        if failed > 0 {
            format!(
                " by kind: {}",
                tally
                    .failed
                    .iter()
                    .map(|(k, n)| format!("{k} {n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        } else {
            String::new()
        }
    );
    println!(
        "  tool calls       {} ({} returned errors to the model, which recovered or answered)",
        tally.tool_calls, tally.tool_errors
    );
    println!("  tokens           {}", tally.tokens);
    println!(
        "  run latency      p50 {:.0} ms, p95 {:.0} ms; {:.1} runs/s over {:.1} s",
        pct(0.5).as_secs_f64() * 1e3,
        pct(0.95).as_secs_f64() * 1e3,
        args.tasks as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64()
    );
    println!(
        "\nFailed runs above are the transient faults with nothing yet to retry them. The demo"
    );
    println!(
        "grows with the runtime: retries with budgets, circuit breakers and fallbacks (failures"
    );
    println!("above become recoveries), logs and Prometheus metrics, and the durable cluster with");
    println!("its queue, workers, dashboard and HTTP API.");
    Ok(())
}

/// A task and the answer `sim` must give to it (when it can be checked).
fn make_task(rng: &mut fastrand::Rng, i: usize) -> (String, Option<String>) {
    if i % 10 == 9 {
        return ("What time is it now?".into(), None);
    }
    let (a, b) = (rng.i64(2..1000), rng.i64(2..100));
    let (op, value) = match rng.u8(0..3) {
        0 => ('+', a + b),
        1 => ('-', a - b),
        _ => ('*', a * b),
    };
    (
        format!("What is {a} {op} {b}?"),
        Some(format!("{a} {op} {b} = {value}")),
    )
}
