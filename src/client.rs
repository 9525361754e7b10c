//! The CLI client of `pocket serve`: `submit`, `status`, `approvals`, `approve`, `deny`.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};

use crate::Failure;

/// Where the server is and how to reach it.
#[derive(Debug, clap::Args)]
pub(crate) struct ServerArgs {
    /// The server's base URL.
    #[arg(long, env = "POCKET_SERVER", default_value = "http://127.0.0.1:7878")]
    server: String,
}

/// `pocket submit`.
#[derive(Debug, clap::Args)]
pub(crate) struct SubmitArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// The agent that runs the task (default: the server's first agent).
    #[arg(long)]
    agent: Option<String>,
    /// Higher runs first.
    #[arg(long)]
    priority: Option<i32>,
    /// A second submit with the same key returns the first task.
    #[arg(long)]
    idempotency_key: Option<String>,
    /// Wait for the task to finish, showing its progress, and print the answer.
    #[arg(long)]
    wait: bool,
    /// The task.
    #[arg(required = true)]
    task: Vec<String>,
}

/// `pocket status`.
#[derive(Debug, clap::Args)]
pub(crate) struct StatusArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// A task's id; without it, the cluster's report.
    id: Option<String>,
}

/// `pocket approvals`.
#[derive(Debug, clap::Args)]
pub(crate) struct ApprovalsArgs {
    #[command(flatten)]
    server: ServerArgs,
}

/// `pocket approve` / `pocket deny`.
#[derive(Debug, clap::Args)]
pub(crate) struct DecideArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// The approval request's id (from `pocket approvals`).
    id: String,
    /// Why (sent to the model with a denial).
    #[arg(long)]
    reason: Option<String>,
}

struct Client {
    http: reqwest::Client,
    base: String,
    key: String,
}

impl Client {
    /// The key comes from `POCKET_API_KEY`, else the first of `POCKET_API_KEYS`.
    fn new(args: &ServerArgs) -> Result<Self, Failure> {
        let key = std::env::var("POCKET_API_KEY")
            .ok()
            .or_else(|| {
                std::env::var("POCKET_API_KEYS").ok().and_then(|k| {
                    k.split(',')
                        .map(str::trim)
                        .find(|k| !k.is_empty())
                        .map(String::from)
                })
            })
            .filter(|k| !k.is_empty())
            .ok_or_else(|| {
                Failure::Usage("set POCKET_API_KEY to a key the server accepts".into())
            })?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| Failure::Usage(format!("HTTP client: {e}")))?;
        Ok(Self {
            http,
            base: args.server.trim_end_matches('/').to_owned(),
            key,
        })
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, Failure> {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.key);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .map_err(|e| Failure::Usage(format!("cannot reach {}: {e}", self.base)))?;
        let status = response.status();
        let value: Value = response.json().await.unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(value);
        }
        let message = value["error"]["message"]
            .as_str()
            .unwrap_or("no message")
            .to_owned();
        let failure = format!("{} {path}: HTTP {status}: {message}", self.base);
        // 4xx other than 404 is the caller's mistake (usage); the rest is the server's.
        if status.is_client_error() && status != reqwest::StatusCode::NOT_FOUND {
            Err(Failure::Usage(failure))
        } else {
            Err(Failure::Message(failure))
        }
    }
}

fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_default()
}

/// Submits a task; with `--wait`, follows it to the end. Exit 1 if it failed.
#[allow(clippy::print_stdout)] // the CLI's own output
pub(crate) async fn submit(args: SubmitArgs) -> Result<(), Failure> {
    let client = Client::new(&args.server)?;
    let mut body = json!({ "task": args.task.join(" ") });
    if let Some(agent) = args.agent {
        body["agent"] = agent.into();
    }
    if let Some(p) = args.priority {
        body["priority"] = p.into();
    }
    if let Some(k) = args.idempotency_key {
        body["idempotency_key"] = k.into();
    }
    let created = client
        .call(reqwest::Method::POST, "/v1/tasks", Some(body))
        .await?;
    let id = created["id"].as_str().unwrap_or_default().to_owned();
    if !args.wait {
        println!("{id}");
        return Ok(());
    }
    let spinner = ProgressBar::new_spinner();
    spinner.set_style(
        ProgressStyle::with_template("{spinner} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    spinner.enable_steady_tick(Duration::from_millis(120));
    let task = loop {
        let task = client
            .call(reqwest::Method::GET, &format!("/v1/tasks/{id}"), None)
            .await?;
        let status = task["status"].as_str().unwrap_or("unknown").to_owned();
        spinner.set_message(format!(
            "task {id}: {status} (attempts {})",
            task["attempts"]
        ));
        if matches!(status.as_str(), "succeeded" | "failed" | "cancelled") {
            break task;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    spinner.finish_and_clear();
    match task["status"].as_str() {
        Some("succeeded") => {
            println!("{}", task["result"]["answer"].as_str().unwrap_or_default());
            Ok(())
        }
        _ => Err(Failure::Message(format!(
            "task {id} {}: {}",
            task["status"].as_str().unwrap_or("ended"),
            task["error"].as_str().unwrap_or("no error recorded")
        ))),
    }
}

/// Prints a task, or the cluster's report.
#[allow(clippy::print_stdout)] // the CLI's own output
pub(crate) async fn status(args: StatusArgs) -> Result<(), Failure> {
    let client = Client::new(&args.server)?;
    let path = match &args.id {
        Some(id) => format!("/v1/tasks/{id}"),
        None => "/v1/cluster".to_owned(),
    };
    println!(
        "{}",
        pretty(&client.call(reqwest::Method::GET, &path, None).await?)
    );
    Ok(())
}

/// Lists pending approval requests.
#[allow(clippy::print_stdout)] // the CLI's own output
pub(crate) async fn approvals(args: ApprovalsArgs) -> Result<(), Failure> {
    let client = Client::new(&args.server)?;
    let list = client
        .call(reqwest::Method::GET, "/v1/approvals", None)
        .await?;
    let pending = list["approvals"].as_array().cloned().unwrap_or_default();
    if pending.is_empty() {
        println!("no pending approvals");
    }
    for a in pending {
        println!(
            "{}  {} ({}) by agent {} in task {}: {}",
            a["id"].as_str().unwrap_or_default(),
            a["tool"].as_str().unwrap_or_default(),
            a["risk"].as_str().unwrap_or_default(),
            a["agent"].as_str().unwrap_or_default(),
            a["run_id"].as_str().unwrap_or_default(),
            a["arguments"]
        );
    }
    Ok(())
}

/// Approves or denies a pending request.
#[allow(clippy::print_stdout)] // the CLI's own output
pub(crate) async fn decide(args: DecideArgs, approve: bool) -> Result<(), Failure> {
    let client = Client::new(&args.server)?;
    let mut body = json!({ "decision": if approve { "approve" } else { "deny" } });
    if let Some(reason) = args.reason {
        body["reason"] = reason.into();
    }
    client
        .call(
            reqwest::Method::POST,
            &format!("/v1/approvals/{}", args.id),
            Some(body),
        )
        .await?;
    println!(
        "{} {}",
        if approve { "approved" } else { "denied" },
        args.id
    );
    Ok(())
}
