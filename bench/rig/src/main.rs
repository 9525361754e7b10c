//! rig side of `bench/peers.sh`: N tasks, one tool round each (two model calls), at
//! concurrency C, against `pocket-stub`. Prints one JSON line with the same figures as
//! `pocket-bench agent`: tasks/s, CPU-seconds per task, p50/p99 added latency, peak RSS.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use nix::sys::resource::{UsageWho, getrusage};
use nix::sys::time::TimeVal;
use rig_agent::AgentBuilder;
use rig_agent::tool::{Tool, ToolContext};
use rig_core::providers::openai::OpenAIConfig;
use serde::Deserialize;

#[derive(Deserialize)]
struct AddArgs {
    a: i64,
    b: i64,
}

#[derive(Clone)]
struct Add;

impl Tool for Add {
    const NAME: &'static str = "add";
    type Args = AddArgs;
    type Output = i64;
    type Error = Infallible;

    fn description(&self) -> String {
        "Adds two integers.".to_owned()
    }

    fn parameters(&self) -> serde_json::Value {
        serde_json::json!({
            "type": "object",
            "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
            "required": ["a", "b"]
        })
    }

    async fn call(&self, _: &mut ToolContext, args: AddArgs) -> Result<i64, Infallible> {
        Ok(args.a + args.b)
    }
}

struct Args {
    base_url: String,
    tasks: usize,
    concurrency: usize,
    latency_ms: f64,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        base_url: String::new(),
        tasks: 100,
        concurrency: 1,
        latency_ms: 0.0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--base-url" => args.base_url = value,
            "--tasks" => args.tasks = value.parse().map_err(|e| format!("--tasks: {e}"))?,
            "--concurrency" => {
                args.concurrency = value.parse().map_err(|e| format!("--concurrency: {e}"))?
            }
            "--latency-ms" => {
                args.latency_ms = value.parse().map_err(|e| format!("--latency-ms: {e}"))?
            }
            other => return Err(format!("unknown flag {other}")),
        }
    }
    if args.base_url.is_empty() || args.tasks == 0 || args.concurrency == 0 {
        return Err(
            "usage: rig-bench --base-url URL --tasks N --concurrency C --latency-ms L".into(),
        );
    }
    Ok(args)
}

/// User + system CPU time of this process, in seconds (getrusage, as every runner reads it).
fn cpu_seconds() -> f64 {
    getrusage(UsageWho::RUSAGE_SELF).map_or(0.0, |u| {
        let s = |t: TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
        s(u.user_time()) + s(u.system_time())
    })
}

/// Peak resident set size (ru_maxrss), in MiB.
fn peak_rss_mib() -> f64 {
    getrusage(UsageWho::RUSAGE_SELF).map_or(0.0, |u| u.max_rss() as f64 / 1024.0)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

#[tokio::main]
async fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("rig-bench: {e}");
            std::process::exit(2);
        }
    };
    let model = OpenAIConfig::new("bench-key")
        .with_base_url(args.base_url.clone())
        .client()
        .chat("stub");
    let agent = Arc::new(AgentBuilder::new(model).tool(Add).build());

    let next = Arc::new(AtomicUsize::new(0));
    let cpu0 = cpu_seconds();
    let start = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..args.concurrency {
        let agent = agent.clone();
        let next = next.clone();
        let tasks = args.tasks;
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0usize;
            while next.fetch_add(1, Ordering::Relaxed) < tasks {
                let t0 = Instant::now();
                match agent
                    .prompt("What is 17 + 25? Use the add tool.")
                    .max_turns(2)
                    .await
                {
                    Ok(r) if r.to_string().contains("42") => latencies.push(t0.elapsed()),
                    Ok(r) => {
                        if errors == 0 {
                            eprintln!("rig-bench: unexpected answer: {r}");
                        }
                        errors += 1;
                    }
                    Err(e) => {
                        if errors == 0 {
                            eprintln!("rig-bench: task failed: {e}");
                        }
                        errors += 1;
                    }
                }
            }
            (latencies, errors)
        }));
    }
    let mut latencies = Vec::new();
    let mut errors = 0;
    for w in workers {
        if let Ok((l, e)) = w.await {
            latencies.extend(l);
            errors += e;
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    latencies.sort();
    let base = Duration::from_secs_f64(2.0 * args.latency_ms / 1000.0);
    let added = |p| percentile(&latencies, p).saturating_sub(base).as_secs_f64() * 1000.0;
    println!(
        "{}",
        serde_json::json!({
            "framework": "rig 0.44.0",
            "concurrency": args.concurrency,
            "tasks": args.tasks,
            "errors": errors,
            "elapsed_s": elapsed,
            "tasks_per_s": args.tasks as f64 / elapsed,
            "cpu_s_per_task": cpu / args.tasks as f64,
            "p50_added_ms": added(0.50),
            "p99_added_ms": added(0.99),
            "peak_rss_mib": peak_rss_mib(),
        })
    );
}
