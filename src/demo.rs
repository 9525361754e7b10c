//! `pocket demo`: a batch of tasks through a protected agent on the offline `sim` model, with
//! transient faults and a full outage of the primary model injected; retries, the circuit
//! breaker and the fallback model keep the answers coming. Progress bar, live breaker
//! transitions, and a report.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use pocket_agent::{Agent, BoxModel, Classify};
use pocket_models::{Faults, SimConfig, SimModel};
use pocket_monitor::{LogGuard, MonitorConfig};
use pocket_resilience::chaos::Outage;
use pocket_resilience::{ResilienceConfig, ResilienceEvent};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::observe::{self, Services};

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
    /// When the primary model goes down, in milliseconds after the start.
    #[arg(long, default_value_t = 300)]
    outage_after_ms: u64,
    /// How long the primary model stays down, in milliseconds (0: no outage).
    #[arg(long, default_value_t = 500)]
    outage_ms: u64,
    /// Where the logs (`app_YYYY-MM-DD.log`) and a metrics snapshot (`metrics.prom`) go.
    #[arg(long, value_name = "DIR", default_value = "logs")]
    pub(crate) log_dir: PathBuf,
}

/// The demo's `[resilience]` section: short delays and cool-downs to fit a short demo.
const RESILIENCE: &str = r#"
[retry]
base_delay_ms = 20
max_delay_ms = 200
budget_ratio = 0.5

[breaker]
consecutive_failures = 5
cool_down_ms = 200

[fallback]
models = ["backup"]

[protected]
base_delay_ms = 50
"#;

#[derive(Debug, Default)]
struct Tally {
    succeeded: usize,
    verified: usize,
    failed: BTreeMap<&'static str, usize>,
    paths: BTreeMap<&'static str, usize>,
    durations: Vec<Duration>,
}

/// Runs the demo.
///
/// # Errors
/// A message when the arguments make no sense or the agent cannot be built.
#[allow(clippy::print_stdout)] // the demo's report is the CLI's own output
pub(crate) async fn run(
    args: DemoArgs,
    monitoring: MonitorConfig,
    logs: &LogGuard,
) -> Result<(), String> {
    if !(0.0..=1.0).contains(&args.fault_rate) || !(0.0..=1.0).contains(&args.bad_args_rate) {
        return Err("--fault-rate and --bad-args-rate must be between 0 and 1".into());
    }
    if args.concurrency == 0 {
        return Err("--concurrency must be at least 1".into());
    }
    let config: ResilienceConfig = toml::from_str(RESILIENCE).map_err(|e| e.to_string())?;
    let monitor = observe::monitor(monitoring, logs, false)?;
    let mcp = pocket_mcp::McpHub::start(pocket_mcp::McpConfig::default())
        .await
        .map_err(|e| e.to_string())?;
    let services = Services::new(mcp, monitor);
    let hub = services.hub.clone();
    let sim = |name: &str, seed: u64, faults: Faults| {
        SimModel::named(
            name,
            SimConfig {
                seed,
                latency_ms: args.latency_ms,
                jitter_ms: args.latency_ms,
                retry_after_ms: 50,
                faults,
            },
        )
    };
    let faults = Faults {
        invalid_tool_args: args.bad_args_rate,
        ..Faults::transient(args.fault_rate)
    };
    let primary = Outage::new(
        sim("sim:primary", args.seed, faults),
        Duration::from_millis(args.outage_after_ms),
        Duration::from_millis(args.outage_ms),
    );
    let mut backup = Some(BoxModel::new(sim("sim:backup", args.seed + 1, faults)));
    let model = config.model_chain("demo", "primary", BoxModel::new(primary), &hub, |_| {
        backup.take().ok_or_else(|| "one backup model".to_owned())
    })?;
    let tools = ["calculator", "time"]
        .iter()
        .map(|name| pocket_tools::builtin(name, &pocket_tools::ToolsConfig::default()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    let agent = Agent::builder_boxed(model)
        .name("demo")
        .dyn_tools(config.wrap_tools(tools.into_iter().flatten(), &hub))
        .plugin(services.monitor.plugin())
        .max_iterations(5)
        .run_timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| e.to_string())?;
    services.observe(&agent);
    let protected = config.protect(agent, &hub).build();

    println!(
        "Pocket Agent demo: {} tasks on the offline `sim` model, {} at a time",
        args.tasks, args.concurrency
    );
    println!(
        "  faults: {:.0}% of model calls fail (429, 500, reset, timeout), {:.0}% of tool turns send garbage arguments",
        args.fault_rate * 100.0,
        args.bad_args_rate * 100.0
    );
    if args.outage_ms > 0 {
        println!(
            "  outage: the primary model is down from {} ms to {} ms; `sim:backup` is its fallback",
            args.outage_after_ms,
            args.outage_after_ms + args.outage_ms
        );
    }
    println!(
        "  layers: protected agent (run retries) > fallback > retry (budget) > circuit breaker > model\n"
    );

    let bar = ProgressBar::new(args.tasks as u64);
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{bar:40}] {pos}/{len} tasks  {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let started = Instant::now();

    // Breaker transitions as they happen; everything else is counted by the hub and the
    // monitor.
    let mut resilience_events = hub.subscribe();
    // The watcher stops when the runs are done (the hub outlives them).
    let done = pocket_agent::CancellationToken::new();
    let watcher = tokio::spawn({
        let bar = bar.clone();
        let done = done.clone();
        async move {
            let mut timeline = Vec::new();
            loop {
                let received = tokio::select! {
                    biased;
                    event = resilience_events.recv() => event,
                    () = done.cancelled() => match resilience_events.try_recv() {
                        Ok(event) => Ok(event),
                        Err(_) => return timeline,
                    },
                };
                match received {
                    Ok(ResilienceEvent::BreakerTransition { key, from, to }) => {
                        let line = format!(
                            "  {:>5.2}s  breaker {key}: {} -> {}",
                            started.elapsed().as_secs_f64(),
                            from.as_str(),
                            to.as_str()
                        );
                        // Live on a terminal; the report repeats them otherwise.
                        bar.println(&line);
                        timeline.push(line);
                    }
                    Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return timeline,
                }
            }
        }
    });

    let permits = Arc::new(Semaphore::new(args.concurrency));
    let mut runs = JoinSet::new();
    let mut rng = fastrand::Rng::with_seed(args.seed);
    for i in 0..args.tasks {
        let (task, expected) = make_task(&mut rng, i);
        let protected = protected.clone();
        let permits = permits.clone();
        runs.spawn(async move {
            let _permit = permits.acquire_owned().await;
            let t = Instant::now();
            (protected.run(task).await, expected, t.elapsed())
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
                *tally.paths.entry(out.path.as_str()).or_default() += 1;
                if expected.as_deref().is_none_or(|e| out.output.answer == e) {
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
    let report = hub.health_report();
    let metrics = hub.metrics();
    drop(protected);
    done.cancel();
    let timeline = watcher.await.unwrap_or_default();
    // Shutting the monitor down first lets its observers count every event.
    let monitor = services.monitor.clone();
    services.shutdown().await;
    let (tool_calls, tool_errors) = monitor
        .tool_stats()
        .values()
        .fold((0, 0), |(c, f), t| (c + t.calls, f + t.failures));

    tally.durations.sort();
    let pct = |p: f64| {
        tally
            .durations
            .get(((tally.durations.len() as f64 - 1.0) * p) as usize)
            .copied()
            .unwrap_or_default()
    };
    let failed: usize = tally.failed.values().sum();
    let join = |m: &BTreeMap<String, u64>| {
        if m.is_empty() {
            "none".to_owned()
        } else {
            m.iter()
                .map(|(k, n)| format!("{k} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
    if bar.is_hidden() && !timeline.is_empty() {
        println!("Circuit breaker");
        for line in &timeline {
            println!("{line}");
        }
    }
    println!("\nReport");
    println!(
        "  succeeded        {} / {} ({} answers checked correct)",
        tally.succeeded, args.tasks, tally.verified
    );
    println!(
        "  run paths        {}",
        tally
            .paths
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if failed > 0 {
        println!(
            "  failed           {failed} by kind: {}",
            tally
                .failed
                .iter()
                .map(|(k, n)| format!("{k} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    println!("  retries          {}", join(&metrics.retries_total));
    println!(
        "  budget refusals  {}",
        join(&metrics.budget_rejections_total)
    );
    println!("  fallbacks        {}", join(&metrics.fallbacks_total));
    println!(
        "  breaker changes  {}",
        join(&metrics.breaker_transitions_total)
    );
    println!("  waits for a probe {}", metrics.cool_down_waits_total);
    println!(
        "  tool calls       {tool_calls} ({tool_errors} returned errors to the model, which recovered or answered)"
    );
    println!(
        "  run latency      p50 {:.0} ms, p95 {:.0} ms; {:.1} runs/s over {:.1} s",
        pct(0.5).as_secs_f64() * 1e3,
        pct(0.95).as_secs_f64() * 1e3,
        args.tasks as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64()
    );
    println!("  health score     {} / 100", report.health_score);
    for line in &report.recommendations {
        println!("  - {line}");
    }
    let status = monitor.status();
    let health = monitor.health();
    let metrics_file = args.log_dir.join("metrics.prom");
    let exposition = monitor.metrics().encode();
    std::fs::write(&metrics_file, exposition)
        .map_err(|e| format!("cannot write {}: {e}", metrics_file.display()))?;
    println!();
    match logs.first_file() {
        Some(file) => println!("Logs     {} (JSON lines, one file a day)", file.display()),
        None => println!(
            "Logs     {} (JSON lines, one file a day)",
            args.log_dir.display()
        ),
    }
    println!(
        "Metrics  {} (Prometheus text format)",
        metrics_file.display()
    );
    println!(
        "Status   {}{}",
        status.as_str(),
        if health.reasons.is_empty() {
            String::new()
        } else {
            format!(": {}", health.reasons.join("; "))
        }
    );
    println!(
        "\nNext for the demo: the durable cluster with its queue, workers, dashboard and HTTP API."
    );
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
