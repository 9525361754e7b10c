//! `pocket-bench agent …` runs the peer workload on Pocket Agent; `pocket-bench load …` is
//! the open-loop load generator. Each prints one JSON line (see `bench/*.sh`).
//! `pocket-bench proxy …` is a bare pass-through to an upstream, the floor of one more HTTP
//! hop; it runs until SIGINT or SIGTERM.

use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use pocket_bench::{load, proxy, runner};

#[derive(Parser)]
#[command(name = "pocket-bench")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// N tasks of one tool round each on a Pocket Agent against the stub, C at a time.
    Agent {
        /// The stub's base URL.
        #[arg(long, default_value = "http://127.0.0.1:8089/v1")]
        base_url: String,
        /// Tasks to run.
        #[arg(long, default_value_t = 100)]
        tasks: usize,
        /// Tasks in flight at once.
        #[arg(long, default_value_t = 1)]
        concurrency: usize,
        /// The stub's fixed latency (subtracted twice per task), in milliseconds.
        #[arg(long, default_value_t = 0.0)]
        latency_ms: f64,
    },
    /// Open-loop load on an OpenAI-compatible `POST /v1/chat/completions`.
    Load {
        /// The full URL.
        #[arg(long)]
        url: String,
        /// The `model` field of each request.
        #[arg(long, default_value = "stub")]
        model: String,
        /// Environment variable holding a bearer key to send (none: no header).
        #[arg(long)]
        key_env: Option<String>,
        /// Requests per second.
        #[arg(long)]
        rate: f64,
        /// Measured seconds.
        #[arg(long, default_value_t = 10.0)]
        duration_secs: f64,
        /// Unmeasured seconds first.
        #[arg(long, default_value_t = 2.0)]
        warmup_secs: f64,
        /// Requests in flight beyond which new ones are dropped.
        #[arg(long, default_value_t = 20_000)]
        max_in_flight: usize,
        /// A label for the report.
        #[arg(long, default_value = "")]
        label: String,
        /// Write every measured request there as CSV (`due_ms,latency_ms,ok`).
        #[arg(long)]
        samples_out: Option<std::path::PathBuf>,
        /// Space requests evenly (a pacing thread) instead of starting those due each
        /// millisecond in a burst.
        #[arg(long)]
        even: bool,
    },
    /// A bare pass-through of `POST /v1/chat/completions` to an upstream, until SIGINT or
    /// SIGTERM: the floor of one more HTTP hop on this machine.
    Proxy {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8090")]
        listen: String,
        /// The upstream's full URL (`http://127.0.0.1:8089/v1/chat/completions`).
        #[arg(long)]
        upstream: String,
        /// The HTTP client for the upstream: `reqwest` (as `pocket serve`'s model providers)
        /// or `hyper` (hyper's own pooled client, no layers above it).
        #[arg(long, value_enum, default_value_t = proxy::ClientKind::Reqwest)]
        client: proxy::ClientKind,
    },
}

fn secs(flag: &str, v: f64) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(v)
        .with_context(|| format!("--{flag} must be a non-negative number of seconds, got {v}"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let line = match Cli::parse().command {
        Command::Agent {
            base_url,
            tasks,
            concurrency,
            latency_ms,
        } => {
            let report = runner::run(runner::RunnerConfig {
                base_url,
                tasks,
                concurrency,
                latency: secs("latency-ms", latency_ms / 1000.0)?,
            })
            .await?;
            serde_json::to_string(&report)?
        }
        Command::Load {
            url,
            model,
            key_env,
            rate,
            duration_secs,
            warmup_secs,
            max_in_flight,
            label,
            samples_out,
            even,
        } => {
            let bearer = match key_env {
                Some(var) => Some(std::env::var(&var).with_context(|| {
                    format!("--key-env: environment variable {var} is not set")
                })?),
                None => None,
            };
            let body = serde_json::json!({
                "model": model,
                "messages": [{"role": "user", "content": "Say hello."}],
            })
            .to_string();
            let report = load::run(
                load::LoadConfig {
                    url,
                    body,
                    bearer,
                    rate,
                    duration: secs("duration-secs", duration_secs)?,
                    warmup: secs("warmup-secs", warmup_secs)?,
                    max_in_flight,
                    timeout: Duration::from_secs(30),
                    samples_out,
                    even,
                },
                label,
            )
            .await?;
            serde_json::to_string(&report)?
        }
        Command::Proxy {
            listen,
            upstream,
            client,
        } => {
            let proxy = proxy::spawn(&listen, &upstream, client)
                .await
                .with_context(|| format!("cannot proxy {listen} to {upstream}"))?;
            #[allow(clippy::print_stderr, reason = "the binary's own start-up line")]
            {
                eprintln!("pocket-bench proxy on {} to {upstream}", proxy.addr());
            }
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .context("cannot install the SIGTERM handler")?;
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            proxy.shutdown().await.context("proxy server")?;
            return Ok(());
        }
    };
    #[allow(clippy::print_stdout, reason = "the binary's output")]
    {
        println!("{line}");
    }
    Ok(())
}
