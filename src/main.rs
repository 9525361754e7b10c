//! `pocket`: the Pocket Agent command line.

mod approve;
mod client;
mod config;
mod demo;
mod observe;
mod serve;
mod wiring;
mod worker;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use pocket_agent::{Classify, RunRequest};

use crate::config::{Config, ConfigError};
use crate::wiring::Overrides;

/// mimalloc rather than the system allocator: a service allocates and frees per request on
/// every thread, and glibc's malloc was a fifth of the chat path's CPU.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    /// The service on this machine, offline: a batch of tasks over HTTP on the `sim` model
    /// with injected faults and approvals, checked and reported.
    Demo(demo::DemoArgs),
    /// The whole runtime: HTTP API, dispatcher, workers, monitoring, dashboard.
    Serve(serve::ServeArgs),
    /// Work off the task store's queue (no API): several workers may share one store.
    Worker(worker::WorkerArgs),
    /// Submit a task to a server (`--wait` follows it to its answer).
    Submit(client::SubmitArgs),
    /// A task's state, or the cluster's report.
    Status(client::StatusArgs),
    /// Pending approval requests.
    Approvals(client::ApprovalsArgs),
    /// Approve a pending tool call.
    Approve(client::DecideArgs),
    /// Deny a pending tool call (`--reason` goes to the model).
    Deny(client::DecideArgs),
}

/// Arguments shared by commands that build an agent.
#[derive(Debug, clap::Args)]
pub(crate) struct AgentArgs {
    /// Configuration file (TOML).
    #[arg(long, env = "POCKET_CONFIG")]
    pub(crate) config: Option<PathBuf>,
    /// Agent to use, from the config's [agents].
    #[arg(long, default_value = "default")]
    pub(crate) agent: String,
    /// Model: `sim`, `openai:MODEL`, `anthropic:MODEL`, or a name from [models].
    #[arg(long)]
    pub(crate) model: Option<String>,
    /// Enable a built-in tool (calculator, time, files, http_fetch, shell); repeatable.
    #[arg(long = "tool", value_name = "NAME")]
    pub(crate) tools: Vec<String>,
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    #[command(flatten)]
    agent: AgentArgs,
    /// Print JSON: answer, iterations, tool calls, usage.
    #[arg(long)]
    json: bool,
    /// Write logs to DIR/app_YYYY-MM-DD.log (overrides `[monitoring] log_dir`).
    #[arg(long, value_name = "DIR")]
    log_dir: Option<PathBuf>,
    /// The task.
    #[arg(required = true)]
    task: Vec<String>,
}

/// Exit codes: 0 ok, 1 the task failed, 2 usage or configuration error.
pub(crate) enum Failure {
    Task,
    /// Exit 1 with this message (a client whose task or server failed).
    Message(String),
    Usage(String),
}

impl From<ConfigError> for Failure {
    fn from(e: ConfigError) -> Self {
        Self::Usage(e.to_string())
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Stage two of parsing: the config file, before anything starts.
    let (config, log_dir, console) = match &cli.command {
        Command::Run(a) => (
            load_config(a.agent.config.as_ref()),
            a.log_dir.clone(),
            "warn",
        ),
        // The demo's progress bar and report are its output; failed runs are in the report.
        Command::Demo(a) => (Ok(Config::default()), Some(a.log_dir.clone()), "error"),
        Command::Serve(a) => (
            load_config(a.agent.config.as_ref()),
            a.log_dir.clone(),
            "info",
        ),
        Command::Worker(a) => (
            load_config(a.agent.config.as_ref()),
            a.log_dir.clone(),
            "info",
        ),
        // Client commands: no config, no log files, only warnings on the terminal.
        Command::Submit(_)
        | Command::Status(_)
        | Command::Approvals(_)
        | Command::Approve(_)
        | Command::Deny(_) => (Ok(Config::default()), None, "warn"),
    };
    let config = match config {
        Ok(c) => c,
        Err(e) => return report(e.into()),
    };
    let monitoring = observe::monitor_config(&config, log_dir, console);
    // Dropping the guard at the end of main flushes the log files.
    let logs = match pocket_monitor::logging::install(&monitoring) {
        Ok(logs) => logs,
        Err(e) => return report(Failure::Usage(format!("logging: {e}"))),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return report(Failure::Usage(format!("cannot start the runtime: {e}"))),
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Run(args) => run(args, config, monitoring, &logs).await,
            Command::Worker(args) => worker::run(args, config, monitoring, &logs).await,
            Command::Serve(args) => serve::run(args, config, monitoring, &logs).await,
            Command::Submit(args) => client::submit(args).await,
            Command::Status(args) => client::status(args).await,
            Command::Approvals(args) => client::approvals(args).await,
            Command::Approve(args) => client::decide(args, true).await,
            Command::Deny(args) => client::decide(args, false).await,
            Command::Demo(args) => demo::run(args, monitoring, &logs).await,
        }
    });
    drop(runtime);
    drop(logs);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => report(f),
    }
}

#[allow(clippy::print_stderr)] // the CLI's own error output
fn report(failure: Failure) -> ExitCode {
    match failure {
        Failure::Task => ExitCode::from(1),
        Failure::Message(message) => {
            eprintln!("error: {message}");
            ExitCode::from(1)
        }
        Failure::Usage(message) => {
            eprintln!("error: {message}");
            ExitCode::from(2)
        }
    }
}

fn load_config(path: Option<&PathBuf>) -> Result<Config, ConfigError> {
    match path {
        Some(p) => Config::load(p),
        None => Ok(Config::default()),
    }
}

async fn run(
    args: RunArgs,
    config: Config,
    monitoring: pocket_monitor::MonitorConfig,
    logs: &pocket_monitor::LogGuard,
) -> Result<(), Failure> {
    let services = observe::Services::start(&config, monitoring, logs, false).await?;
    let result = run_with(args, &config, &services).await;
    // MCP children, monitor tasks: everything ends with us, whatever happened.
    services.shutdown().await;
    result
}

#[allow(clippy::print_stdout, clippy::print_stderr)] // the CLI's own output
async fn run_with(
    args: RunArgs,
    config: &Config,
    services: &observe::Services,
) -> Result<(), Failure> {
    let overrides = Overrides {
        model: args.agent.model,
        tools: args.agent.tools,
        stream: false,
    };
    let approver: Arc<dyn pocket_agent::Approver> = Arc::new(approve::TerminalApprover::default());
    let agent = wiring::build_protected(
        config,
        &args.agent.agent,
        &overrides,
        Some(approver),
        services,
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
