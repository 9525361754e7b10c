//! `pocket-stub --port P --latency-ms L`: the benchmark's OpenAI-compatible upstream.
//! Runs until SIGINT or SIGTERM.

use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use pocket_bench::stub::{self, StubConfig};

/// A fast OpenAI-compatible stub: `POST /v1/chat/completions` after a fixed latency, with a
/// scripted tool round (a tool call while no tool result is present, then text).
#[derive(Parser)]
#[command(name = "pocket-stub")]
struct Args {
    /// Port to listen on (0: any free port; the address is printed).
    #[arg(long, default_value_t = 8089)]
    port: u16,
    /// Address to bind.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Fixed latency of every answer, in milliseconds.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let addr = format!("{}:{}", args.host, args.port);
    let stub = stub::spawn(
        &addr,
        StubConfig {
            latency: Duration::from_millis(args.latency_ms),
        },
    )
    .await
    .with_context(|| format!("cannot listen on {addr}"))?;
    #[allow(clippy::print_stderr, reason = "the binary's own start-up line")]
    {
        eprintln!(
            "pocket-stub on {} (latency {} ms)",
            stub.base_url(),
            args.latency_ms
        );
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot install the SIGTERM handler")?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    stub.shutdown().await.context("stub server")?;
    Ok(())
}
