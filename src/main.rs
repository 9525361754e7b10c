//! `pocket`: the Pocket Agent command line.

mod approve;
mod config;
mod demo;
mod wiring;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use pocket_agent::{Classify, RunRequest};

use crate::config::{Config, ConfigError};
use crate::wiring::Overrides;

/// Pocket Agent: run LLM agents in production.
#[derive(Debug, Parser)]
#[command(name = "pocket", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run one task and print the answer.
    Run(RunArgs),
    /// Run a batch of tasks offline on the `sim` model with injected faults, and report.
    Demo(demo::DemoArgs),
}

/// Arguments shared by commands that build an agent.
#[derive(Debug, clap::Args)]
struct AgentArgs {
    /// Configuration file (TOML).
    #[arg(long, env = "POCKET_CONFIG")]
    config: Option<PathBuf>,
    /// Agent to use, from the config's [agents].
    #[arg(long, default_value = "default")]
    agent: String,
    /// Model: `sim`, `openai:MODEL`, `anthropic:MODEL`, or a name from [models].
    #[arg(long)]
    model: Option<String>,
    /// Enable a built-in tool (calculator, time, files, http_fetch, shell); repeatable.
    #[arg(long = "tool", value_name = "NAME")]
    tools: Vec<String>,
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    #[command(flatten)]
    agent: AgentArgs,
    /// Print JSON: answer, iterations, tool calls, usage.
    #[arg(long)]
    json: bool,
    /// The task.
    #[arg(required = true)]
    task: Vec<String>,
}

/// Exit codes: 0 ok, 1 the task failed, 2 usage or configuration error.
enum Failure {
    Task,
    Usage(String),
}

impl From<ConfigError> for Failure {
    fn from(e: ConfigError) -> Self {
        Self::Usage(e.to_string())
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The demo's progress bar and report are its output; failed runs are in the report.
    init_logging(if matches!(cli.command, Command::Demo(_)) {
        "error"
    } else {
        "warn"
    });
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return report(Failure::Usage(format!("cannot start the runtime: {e}"))),
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Run(args) => run(args).await,
            Command::Demo(args) => demo::run(args).await.map_err(Failure::Usage),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => report(f),
    }
}

#[allow(clippy::print_stderr)] // the CLI's own error output
fn report(failure: Failure) -> ExitCode {
    match failure {
        Failure::Task => ExitCode::from(1),
        Failure::Usage(message) => {
            eprintln!("error: {message}");
            ExitCode::from(2)
        }
    }
}

/// Logs go to stderr; `POCKET_LOG` or `RUST_LOG` set the filter (default: `default`).
fn init_logging(default: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = std::env::var("POCKET_LOG")
        .ok()
        .and_then(|f| EnvFilter::try_new(f).ok())
        .or_else(|| EnvFilter::try_from_default_env().ok())
        .unwrap_or_else(|| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}

fn load_config(path: Option<&PathBuf>) -> Result<Config, ConfigError> {
    match path {
        Some(p) => Config::load(p),
        None => Ok(Config::default()),
    }
}

async fn run(args: RunArgs) -> Result<(), Failure> {
    let config = load_config(args.agent.config.as_ref())?;
    let mcp = wiring::start_mcp(&config).await?;
    let result = run_with(args, &config, &mcp).await;
    // Child processes of MCP servers end with us, whatever happened.
    mcp.shutdown().await;
    result
}

#[allow(clippy::print_stdout, clippy::print_stderr)] // the CLI's own output
async fn run_with(args: RunArgs, config: &Config, mcp: &pocket_mcp::McpHub) -> Result<(), Failure> {
    let overrides = Overrides {
        model: args.agent.model,
        tools: args.agent.tools,
    };
    let approver: Arc<dyn pocket_agent::Approver> = Arc::new(approve::TerminalApprover::default());
    let hub = pocket_resilience::ResilienceHub::new();
    let agent = wiring::build_protected(
        config,
        &args.agent.agent,
        &overrides,
        Some(approver),
        mcp,
        &hub,
    )
    .await?;
    let task = args.task.join(" ");
    if task.trim().is_empty() {
        return Err(Failure::Usage("the task is empty".into()));
    }
    let cancel = pocket_agent::CancellationToken::new();
    let on_ctrl_c = cancel.clone();
    let ctrl_c = tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            on_ctrl_c.cancel();
        }
    });
    let result = agent
        .run_with(RunRequest {
            cancel: Some(cancel),
            ..RunRequest::new(task)
        })
        .await;
    ctrl_c.abort();
    match result {
        Ok(out) if args.json => {
            let mut body = serde_json::to_value(&out.output).unwrap_or_default();
            body["attempts"] = out.attempts.into();
            body["path"] = out.path.as_str().into();
            println!(
                "{}",
                serde_json::to_string_pretty(&body).unwrap_or_default()
            );
            Ok(())
        }
        Ok(out) => {
            println!("{}", out.output.answer);
            Ok(())
        }
        Err(err) => {
            let c = err.classify();
            let message = match err.agent_error() {
                Some(cause) => format!("{err}: {cause}"),
                None => err.to_string(),
            };
            if args.json {
                let body = serde_json::json!({ "error": {
                    "message": message,
                    "kind": c.kind,
                    "severity": c.severity,
                    "retryable": c.retryable,
                    "attempts": err.attempts(),
                    "iterations": err.agent_error().map_or(0, |e| e.iterations()),
                }});
                println!(
                    "{}",
                    serde_json::to_string_pretty(&body).unwrap_or_default()
                );
            } else {
                eprintln!(
                    "error: the task failed: {message} [{}, {}]",
                    c.kind,
                    c.severity.as_str()
                );
            }
            Err(Failure::Task)
        }
    }
}
