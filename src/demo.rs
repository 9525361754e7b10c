//! `pocket demo`: the production stack on one machine, offline. It starts the service that
//! `pocket serve` runs (HTTP API, cluster worker on an embedded SQLite store, monitoring,
//! approvals) with the `sim` model, transient faults and an outage of the primary model
//! injected, then acts as a client over real HTTP: it submits a batch of tasks of mixed
//! priority, answers the approval requests of dangerous tool calls (approving most, denying
//! some), shows live counts, checks every answer, and prints the health and cluster reports.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use futures_util::{StreamExt, stream};
use indicatif::{ProgressBar, ProgressStyle};
use pocket_agent::{Agent, BoxModel, DynTool, Risk, SharedTool, ToolContext, ToolError, ToolSpec};
use pocket_cluster::{Cluster, ClusterConfig};
use pocket_models::{Faults, SimConfig, SimModel};
use pocket_monitor::{LogGuard, MonitorConfig};
use pocket_resilience::chaos::Outage;
use pocket_resilience::{ResilienceConfig, ResilienceEvent};
use pocket_server::HttpApprover;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::Failure;
use crate::config::ServerConfig;
use crate::observe::{self, Services};

/// Options of `pocket demo`.
#[derive(Debug, clap::Args)]
pub(crate) struct DemoArgs {
    /// How many tasks to submit.
    #[arg(long, default_value_t = 300)]
    tasks: usize,
    /// Every Nth task asks to delete a file, which needs a person's approval (0: none).
    #[arg(long, value_name = "N", default_value_t = 12)]
    approval_every: usize,
    /// Runs one agent instance takes at once.
    #[arg(long, default_value_t = 8)]
    concurrency: u32,
    /// Agent instances at most (the autoscaler starts with one).
    #[arg(long, default_value_t = 4)]
    max_instances: u32,
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
    /// When the primary model goes down, in milliseconds after the service starts.
    #[arg(long, default_value_t = 300)]
    outage_after_ms: u64,
    /// How long the primary model stays down, in milliseconds (0: no outage).
    #[arg(long, default_value_t = 500)]
    outage_ms: u64,
    /// Address of the demo's HTTP API and dashboard (port 0: any free port).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// After the batch, keep serving (API and dashboard) until Ctrl-C.
    #[arg(long)]
    keep_serving: bool,
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
"#;

/// The demo's `[cluster]` section: fast heartbeats, polls, scaling and retries.
const CLUSTER: &str = r#"
min_instances = 1
lease_secs = 10
heartbeat_secs = 0.25
instance_timeout_secs = 30
poll_interval_ms = 20
scale_up_utilisation = 0.75
scale_down_utilisation = 0.1
scale_stable_checks = 2
cool_down_secs = 0.5
shutdown_grace_secs = 5
retry_base_secs = 0.05
retry_max_secs = 0.5
"#;

/// The one agent the demo serves.
const AGENT: &str = "default";

/// How long the batch may go without a task finishing before the demo gives up.
const STALL_LIMIT: Duration = Duration::from_secs(60);

/// What a task must end with.
#[derive(Debug, Clone)]
enum Expect {
    /// This exact answer (arithmetic, checked by the calculator).
    Answer(String),
    /// The `time` tool's result.
    Time,
    /// Approved: the file is deleted and the answer says so.
    Deleted(PathBuf),
    /// Denied: the file is still there and the answer gives the reason.
    Kept(PathBuf),
}

#[derive(Debug, Clone)]
struct Planned {
    task: String,
    priority: i32,
    expect: Expect,
}

/// A task as the server reported it at the end.
#[derive(Debug)]
struct Finished {
    planned: Planned,
    view: Value,
}

/// Runs the demo.
///
/// # Errors
/// Usage when the arguments make no sense or the service cannot start; a message (exit 1)
/// when a task did not end as expected.
#[allow(clippy::print_stdout)] // the demo's report is the CLI's own output
pub(crate) async fn run(
    args: DemoArgs,
    monitoring: MonitorConfig,
    logs: &LogGuard,
) -> Result<(), Failure> {
    check(&args).map_err(Failure::Usage)?;
    let monitor = observe::monitor(monitoring, logs, false).map_err(Failure::Usage)?;
    let mcp = pocket_mcp::McpHub::start(pocket_mcp::McpConfig::default())
        .await
        .map_err(|e| Failure::Usage(e.to_string()))?;
    let services = Services::new(mcp, monitor);
    let dir = WorkDir::create().map_err(Failure::Usage)?;
    let result = demo(&args, &services, logs, &dir).await;
    // Shutting the monitor down first lets its observers count every event.
    let monitor = services.monitor.clone();
    services.shutdown().await;
    let metrics_file = args.log_dir.join("metrics.prom");
    std::fs::write(&metrics_file, monitor.metrics().encode())
        .map_err(|e| Failure::Usage(format!("cannot write {}: {e}", metrics_file.display())))?;
    if result.is_ok() {
        println!(
            "Metrics  {} (Prometheus text; also served at /metrics while running)",
            metrics_file.display()
        );
    }
    result
}

fn check(args: &DemoArgs) -> Result<(), String> {
    if !(0.0..=1.0).contains(&args.fault_rate) || !(0.0..=1.0).contains(&args.bad_args_rate) {
        return Err("--fault-rate and --bad-args-rate must be between 0 and 1".into());
    }
    if args.tasks == 0 {
        return Err("--tasks must be at least 1".into());
    }
    if args.concurrency == 0 {
        return Err("--concurrency must be at least 1".into());
    }
    if args.max_instances == 0 {
        return Err("--max-instances must be at least 1".into());
    }
    Ok(())
}

/// A private directory for the store and the files the tasks delete; removed on drop.
struct WorkDir(PathBuf);

impl WorkDir {
    fn create() -> Result<Self, String> {
        let mut bytes = [0u8; 8];
        getrandom::fill(&mut bytes).map_err(|e| format!("no OS randomness: {e}"))?;
        let path = std::env::temp_dir().join(format!("pocket-demo-{}", hex(&bytes)));
        std::fs::create_dir_all(path.join("files"))
            .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        Ok(Self(path))
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The API key: the first of `POCKET_API_KEYS` when set, else a fresh random one.
fn api_key() -> Result<(String, bool), String> {
    if let Ok(keys) = std::env::var("POCKET_API_KEYS")
        && let Some(first) = keys.split(',').map(str::trim).find(|k| !k.is_empty())
    {
        return Ok((first.to_owned(), false));
    }
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| format!("no OS randomness for the API key: {e}"))?;
    Ok((format!("demo-{}", hex(&bytes)), true))
}

#[allow(clippy::print_stdout)]
async fn demo(
    args: &DemoArgs,
    services: &Services,
    logs: &LogGuard,
    dir: &WorkDir,
) -> Result<(), Failure> {
    let usage = |e: String| Failure::Usage(e);
    let hub = services.hub.clone();
    let files = dir.0.join("files");

    // The agent: the primary model (down for a while) falls back to a backup model; both
    // fail transiently now and then. Tools: calculator, time, and a dangerous delete_file.
    let approver = HttpApprover::new();
    // The outage's clock starts with the agent; the breaker timeline uses the same origin.
    let started = Instant::now();
    let agent = build_agent(args, services, &approver, &files).map_err(usage)?;
    services.observe(&agent);

    let mut cluster_config: ClusterConfig =
        toml::from_str(CLUSTER).map_err(|e| usage(e.to_string()))?;
    cluster_config.max_instances = args.max_instances;
    cluster_config.instance_concurrency = args.concurrency;
    cluster_config
        .validate()
        .map_err(|e| usage(e.to_string()))?;
    let store_url = format!("sqlite://{}", dir.0.join("pocket.db").display());
    let store = pocket_cluster::open(&store_url, cluster_config.store_options())
        .await
        .map_err(|e| usage(format!("{store_url}: {e}")))?;
    let cluster = Cluster::builder(store)
        .config(cluster_config)
        .resilience(hub.clone())
        .metrics(services.monitor.metrics().clone())
        .agent(AGENT)
        .factory(move |_| Ok(agent.clone()))
        .build()
        .map_err(|e| usage(format!("cluster: {e}")))?;

    let (key, generated) = api_key().map_err(usage)?;
    let settings = ServerConfig {
        listen: args.listen,
        ..ServerConfig::default()
    };
    let server = crate::serve::build_server(
        cluster.clone(),
        services,
        approver,
        &settings,
        &key,
        &[AGENT.to_owned()],
    )
    .map_err(|e| usage(e.with_file(&crate::config::Config::default())))?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| usage(format!("--listen {}: {e}", args.listen)))?;
    let addr = listener.local_addr().map_err(|e| usage(e.to_string()))?;
    let base = format!("http://{addr}");

    println!(
        "Pocket Agent demo: the service (`pocket serve`) on {base}, {} tasks over HTTP",
        args.tasks
    );
    println!("  store      {store_url} (a temporary directory, removed at exit)");
    println!(
        "  API key    {key}{}",
        if generated {
            " (random for this run; set POCKET_API_KEYS to choose)"
        } else {
            " (from POCKET_API_KEYS)"
        }
    );
    println!("  dashboard  {base}/ (enter the key)");
    println!(
        "  faults     {:.0}% of model calls fail (429, 500, reset, timeout), {:.0}% of tool turns send garbage arguments",
        args.fault_rate * 100.0,
        args.bad_args_rate * 100.0
    );
    if args.outage_ms > 0 {
        println!(
            "  outage     the primary model is down from {} ms to {} ms after start; `sim:backup` is its fallback",
            args.outage_after_ms,
            args.outage_after_ms + args.outage_ms
        );
    }
    println!(
        "  cluster    1 to {} instances of {} runs; failed runs retried by the queue\n",
        args.max_instances, args.concurrency
    );

    let bar = ProgressBar::new(args.tasks as u64);
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{bar:40}] {pos}/{len}  {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let watching = CancellationToken::new();
    let watcher = tokio::spawn(breaker_timeline(
        hub.subscribe(),
        bar.clone(),
        started,
        watching.clone(),
    ));

    let stop = CancellationToken::new();
    let client = Client::new(&base, &key).map_err(usage)?;
    let driver = async {
        let outcome = tokio::select! {
            outcome = drive(args, &client, &bar, &files) => outcome,
            () = crate::worker::shutdown_signal() => Err(Failure::Message(
                "interrupted before the batch finished".into(),
            )),
        };
        bar.finish_and_clear();
        watching.cancel();
        let timeline = watcher.await.unwrap_or_default();
        let outcome = match outcome {
            Ok(batch) => report(args, &client, &batch, &timeline, started, services, logs).await,
            Err(e) => Err(e),
        };
        if outcome.is_ok() && args.keep_serving {
            println!("\nServing on {base} (dashboard {base}/, key {key}) until Ctrl-C.");
            crate::worker::shutdown_signal().await;
        }
        stop.cancel();
        outcome
    };
    let (served, outcome) = tokio::join!(
        crate::serve::run_service(
            &server,
            &cluster,
            listener,
            stop.clone().cancelled_owned(),
            settings.shutdown_grace(),
        ),
        driver
    );
    let stopped = served?;
    outcome?;
    println!(
        "Stopped  {} runs in flight at shutdown, {} interrupted (their checkpoints kept)",
        stopped.in_flight, stopped.interrupted
    );
    Ok(())
}

fn build_agent(
    args: &DemoArgs,
    services: &Services,
    approver: &HttpApprover,
    files: &Path,
) -> Result<Agent, String> {
    let hub = &services.hub;
    let config: ResilienceConfig = toml::from_str(RESILIENCE).map_err(|e| e.to_string())?;
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
    let model = config.model_chain(AGENT, "primary", BoxModel::new(primary), hub, |_| {
        backup.take().ok_or_else(|| "one backup model".to_owned())
    })?;
    let mut tools = ["calculator", "time"]
        .iter()
        .map(|name| pocket_tools::builtin(name, &pocket_tools::ToolsConfig::default()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?
        .into_iter()
        .flatten()
        .collect::<Vec<SharedTool>>();
    tools.push(Arc::new(DeleteFile::new(files.to_owned())));
    let shared: Arc<dyn pocket_agent::Approver> = Arc::new(approver.clone());
    Agent::builder_boxed(model)
        .name(AGENT)
        .dyn_tools(config.wrap_tools(tools, hub))
        .plugin(services.monitor.plugin())
        .shared_approver(shared)
        .max_iterations(5)
        .run_timeout(Duration::from_secs(60))
        .build()
        .map_err(|e| e.to_string())
}

/// Deletes a file of the demo's directory: a dangerous tool, so each call waits for a
/// person's approval (here, the demo answering over `POST /v1/approvals/{id}`).
struct DeleteFile {
    dir: PathBuf,
    spec: ToolSpec,
}

impl DeleteFile {
    fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            spec: ToolSpec {
                name: "delete_file".into(),
                description: "Deletes a file of the workspace, by name.".into(),
                parameters: json!({
                    "type": "object",
                    "properties": {"path": {"type": "string", "description": "The file's name."}},
                    "required": ["path"],
                    "additionalProperties": false
                }),
                risk: Risk::Dangerous,
                idempotent: false,
                timeout: None,
            },
        }
    }
}

impl DynTool for DeleteFile {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }

    fn call<'a>(
        &'a self,
        args: Value,
        _ctx: &'a ToolContext,
    ) -> BoxFuture<'a, Result<Value, ToolError>> {
        Box::pin(async move {
            let name = args["path"].as_str().unwrap_or_default();
            if name.is_empty() || name.contains(['/', '\\']) || name.starts_with('.') {
                return Err(ToolError::invalid_arguments(format!(
                    "`path` must be a file name in the workspace, not `{name}`"
                )));
            }
            tokio::fs::remove_file(self.dir.join(name))
                .await
                .map_err(|e| ToolError::failed(format!("cannot delete `{name}`: {e}")))?;
            Ok(Value::String(format!("deleted {name}")))
        })
    }
}

/// Breaker transitions as they happen (above the progress bar), until `done`.
async fn breaker_timeline(
    mut events: tokio::sync::broadcast::Receiver<ResilienceEvent>,
    bar: ProgressBar,
    started: Instant,
    done: CancellationToken,
) -> Vec<String> {
    let mut timeline = Vec::new();
    loop {
        let received = tokio::select! {
            biased;
            event = events.recv() => event,
            () = done.cancelled() => match events.try_recv() {
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
                bar.println(&line);
                timeline.push(line);
            }
            Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return timeline,
        }
    }
}

/// A JSON client of the demo's own API.
struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    fn new(base: &str, key: &str) -> Result<Self, String> {
        let mut headers = reqwest::header::HeaderMap::new();
        let auth = reqwest::header::HeaderValue::from_str(&format!("Bearer {key}"))
            .map_err(|_| "the API key is not a valid header value".to_owned())?;
        headers.insert(reqwest::header::AUTHORIZATION, auth);
        let http = reqwest::Client::builder()
            .default_headers(headers)
            // Loopback only, whatever HTTP_PROXY says.
            .no_proxy()
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Self {
            http,
            base: base.to_owned(),
        })
    }

    async fn get(&self, path: &str) -> Result<Value, Failure> {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .map_err(|e| http_failure(path, &e))?;
        decode(path, response).await
    }

    async fn post(&self, path: &str, body: &Value) -> Result<Value, Failure> {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .json(body)
            .send()
            .await
            .map_err(|e| http_failure(path, &e))?;
        decode(path, response).await
    }
}

fn http_failure(path: &str, e: &reqwest::Error) -> Failure {
    Failure::Message(format!("{path}: {e}"))
}

async fn decode(path: &str, response: reqwest::Response) -> Result<Value, Failure> {
    let status = response.status();
    let body: Value = response
        .json()
        .await
        .map_err(|e| Failure::Message(format!("{path}: {status}: {e}")))?;
    if !status.is_success() {
        return Err(Failure::Message(format!(
            "{path}: {status}: {}",
            body["error"]["message"].as_str().unwrap_or("no message")
        )));
    }
    Ok(body)
}

/// What the batch did, for the report.
struct Batch {
    finished: Vec<Finished>,
    approved: usize,
    denied: usize,
    took: Duration,
}

/// Submits the tasks, answers approvals, follows the counts, and reads every task back.
#[allow(clippy::print_stdout)]
async fn drive(
    args: &DemoArgs,
    client: &Client,
    bar: &ProgressBar,
    files: &Path,
) -> Result<Batch, Failure> {
    let mut rng = fastrand::Rng::with_seed(args.seed);
    let plan: Vec<Planned> = (0..args.tasks)
        .map(|i| plan_task(&mut rng, i, args.approval_every, files))
        .collect::<Result<_, _>>()
        .map_err(Failure::Usage)?;
    let started = Instant::now();
    // Task id -> approve?; filled as submissions are answered.
    let decisions: Mutex<HashMap<String, bool>> = Mutex::new(HashMap::new());
    let (approved, denied) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let submitted = CancellationToken::new();
    let batch_done = CancellationToken::new();

    let submit = async {
        let ids: Vec<Result<(String, Planned), Failure>> = stream::iter(plan.iter().cloned())
            .map(|p| {
                let decisions = &decisions;
                async move {
                    let body = json!({"task": p.task, "priority": p.priority});
                    let created = client.post("/v1/tasks", &body).await?;
                    let id = created["id"].as_str().unwrap_or_default().to_owned();
                    match &p.expect {
                        Expect::Deleted(_) => lock(decisions).insert(id.clone(), true),
                        Expect::Kept(_) => lock(decisions).insert(id.clone(), false),
                        _ => None,
                    };
                    Ok((id, p))
                }
            })
            .buffer_unordered(16)
            .collect()
            .await;
        submitted.cancel();
        ids.into_iter().collect::<Result<Vec<_>, _>>()
    };

    let answer_approvals = async {
        loop {
            if batch_done.is_cancelled() {
                return Ok::<(), Failure>(());
            }
            let pending = client.get("/v1/approvals").await?;
            for request in pending["approvals"].as_array().into_iter().flatten() {
                let task = request["run_id"].as_str().unwrap_or_default();
                // Unknown yet: the task ran before its submission was answered; next round.
                let Some(approve) = lock(&decisions).get(task).copied() else {
                    continue;
                };
                let id = request["id"].as_str().unwrap_or_default();
                let body = if approve {
                    json!({"decision": "approve"})
                } else {
                    json!({"decision": "deny", "reason": DENY_REASON})
                };
                // 404: it was withdrawn meanwhile (the run stopped waiting).
                if client
                    .post(&format!("/v1/approvals/{id}"), &body)
                    .await
                    .is_ok()
                {
                    let n = if approve { &approved } else { &denied };
                    n.fetch_add(1, Ordering::Relaxed);
                }
            }
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(50)) => {}
                () = batch_done.cancelled() => {}
            }
        }
    };

    let follow = async {
        let mut last = (0, Instant::now());
        let mut printed = Instant::now();
        loop {
            if batch_done.is_cancelled() {
                // The approvals or the submissions failed; their error is the report.
                return Ok::<(), Failure>(());
            }
            let report = client.get("/v1/cluster").await?;
            let q = |s: &str| report["queue"][s].as_u64().unwrap_or(0);
            let finished = q("succeeded") + q("failed") + q("cancelled");
            let counts = format!(
                "queued {}  running {}  waiting approval {}  done {}  failed {}  instances {}",
                q("queued"),
                q("running"),
                q("waiting_approval"),
                q("succeeded"),
                q("failed") + q("cancelled"),
                report["overview"]["total_instances"].as_u64().unwrap_or(0),
            );
            bar.set_position(finished);
            // Without a terminal the bar is hidden: a line a second instead.
            if bar.is_hidden() && printed.elapsed() >= Duration::from_secs(1) {
                printed = Instant::now();
                println!("  {:>5.1}s  {counts}", started.elapsed().as_secs_f64());
            }
            bar.set_message(counts);
            if submitted.is_cancelled() && finished >= args.tasks as u64 {
                batch_done.cancel();
                return Ok::<(), Failure>(());
            }
            if finished > last.0 {
                last = (finished, Instant::now());
            } else if last.1.elapsed() > STALL_LIMIT {
                batch_done.cancel();
                return Err(Failure::Message(format!(
                    "no task finished for {} s ({finished} of {} done)",
                    STALL_LIMIT.as_secs(),
                    args.tasks
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };

    let (ids, approvals, followed) = tokio::join!(
        async {
            let ids = submit.await;
            if ids.is_err() {
                batch_done.cancel();
            }
            ids
        },
        async {
            let answered = answer_approvals.await;
            batch_done.cancel();
            answered
        },
        follow
    );
    let ids = ids?;
    followed?;
    approvals?;
    let took = started.elapsed();

    let finished: Vec<Result<Finished, Failure>> = stream::iter(ids)
        .map(|(id, planned)| async move {
            let view = client.get(&format!("/v1/tasks/{id}")).await?;
            Ok(Finished { planned, view })
        })
        .buffer_unordered(16)
        .collect()
        .await;
    Ok(Batch {
        finished: finished.into_iter().collect::<Result<_, _>>()?,
        approved: approved.into_inner(),
        denied: denied.into_inner(),
        took,
    })
}

const DENY_REASON: &str = "kept for the audit";

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Task `i`: arithmetic (checked), the time, or deleting a file (needs approval; every
/// third such request is denied). Priorities 0, 5 or 10.
fn plan_task(
    rng: &mut fastrand::Rng,
    i: usize,
    approval_every: usize,
    files: &Path,
) -> Result<Planned, String> {
    let priority = match rng.u8(0..10) {
        0 => 10,
        1..=3 => 5,
        _ => 0,
    };
    if approval_every > 0 && i % approval_every == approval_every - 1 {
        let name = format!("report-{i}.tmp");
        let path = files.join(&name);
        std::fs::write(&path, format!("report {i}\n"))
            .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        let nth = i / approval_every;
        let expect = if nth % 3 == 2 {
            Expect::Kept(path)
        } else {
            Expect::Deleted(path)
        };
        return Ok(Planned {
            task: format!("Please delete the old report '{name}'."),
            priority,
            expect,
        });
    }
    if i % 10 == 9 {
        return Ok(Planned {
            task: "What time is it now?".into(),
            priority,
            expect: Expect::Time,
        });
    }
    let (a, b) = (rng.i64(2..1000), rng.i64(2..100));
    let (op, value) = match rng.u8(0..3) {
        0 => ('+', a + b),
        1 => ('-', a - b),
        _ => ('*', a * b),
    };
    Ok(Planned {
        task: format!("What is {a} {op} {b}?"),
        priority,
        expect: Expect::Answer(format!("{a} {op} {b} = {value}")),
    })
}

/// Why a finished task is not what its plan expects, if it is not.
fn mismatch(f: &Finished) -> Option<String> {
    let status = f.view["status"].as_str().unwrap_or("?");
    let answer = f.view["result"]["answer"].as_str().unwrap_or("");
    if status != "succeeded" {
        return Some(format!(
            "`{}` ended {status}: {}",
            f.planned.task,
            f.view["error"].as_str().unwrap_or("no error")
        ));
    }
    let ok = match &f.planned.expect {
        Expect::Answer(expected) => answer == expected,
        Expect::Time => answer.starts_with("time returned: "),
        Expect::Deleted(path) => answer.starts_with("delete_file returned: ") && !path.exists(),
        Expect::Kept(path) => {
            answer.starts_with("delete_file failed: ")
                && answer.contains(DENY_REASON)
                && path.exists()
        }
    };
    (!ok).then(|| format!("`{}` answered `{answer}`", f.planned.task))
}

#[allow(clippy::print_stdout)]
async fn report(
    args: &DemoArgs,
    client: &Client,
    batch: &Batch,
    timeline: &[String],
    started: Instant,
    services: &Services,
    logs: &LogGuard,
) -> Result<(), Failure> {
    let problems: Vec<String> = batch.finished.iter().filter_map(mismatch).collect();
    let checked = batch.finished.len() - problems.len();
    let retried = batch
        .finished
        .iter()
        .filter(|f| f.view["attempts"].as_u64().unwrap_or(0) > 1)
        .count();

    if !timeline.is_empty() {
        println!("Circuit breaker");
        for line in timeline {
            println!("{line}");
        }
        println!();
    }
    println!("Tasks");
    println!(
        "  answered as expected  {checked} / {} in {:.1} s ({:.0} tasks/s)",
        args.tasks,
        batch.took.as_secs_f64(),
        args.tasks as f64 / batch.took.as_secs_f64()
    );
    println!(
        "  approvals             {} approved (files deleted), {} denied (files kept, the model told why)",
        batch.approved, batch.denied
    );
    println!("  retried by the queue  {retried} tasks took more than one attempt");
    println!(
        "  priority              {}",
        priority_order(&batch.finished)
    );

    let metrics = services.hub.metrics();
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
    println!("\nResilience");
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
    let tools = services.monitor.tool_stats();
    let (calls, errors) = tools
        .values()
        .fold((0, 0), |(c, f), t| (c + t.calls, f + t.failures));
    println!(
        "  tool calls       {calls} ({errors} returned errors to the model: garbage arguments, denials)"
    );

    let health = client.get("/v1/health").await?;
    let m = &health["monitor"];
    let r = &health["resilience"];
    println!("\nHealth (GET /v1/health)");
    println!(
        "  status           {}{}",
        m["status"].as_str().unwrap_or("?"),
        reasons(&m["reasons"])
    );
    println!(
        "  runs             {} total, {} failed attempts, mean {:.0} ms; model calls {} ({} failed)",
        m["runs"]["total"],
        m["runs"]["failed"],
        m["runs"]["mean_time_ms"].as_f64().unwrap_or(0.0),
        m["models"]["calls"],
        m["models"]["failures"]
    );
    println!(
        "  resilience       score {} / 100; breakers: {}",
        r["health_score"],
        r["breakers"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|b| format!(
                "{} {} (opened {}x)",
                b["key"].as_str().unwrap_or("?"),
                b["state"].as_str().unwrap_or("?"),
                b["opened_total"]
            ))
            .collect::<Vec<_>>()
            .join(", ")
    );
    for line in r["recommendations"].as_array().into_iter().flatten() {
        println!("  - {}", line.as_str().unwrap_or_default());
    }

    let cluster = client.get("/v1/cluster").await?;
    let o = &cluster["overview"];
    let p = &cluster["performance"];
    println!("\nCluster (GET /v1/cluster)");
    println!(
        "  worker           {}",
        cluster["worker"].as_str().unwrap_or("?")
    );
    println!(
        "  queue            {}",
        cluster["queue"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, n)| format!("{k} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "  instances        {} ({} idle, {} busy, {} failed); utilisation {:.0}%",
        o["total_instances"],
        o["active"],
        o["busy"],
        o["failed"],
        p["utilisation"].as_f64().unwrap_or(0.0) * 100.0
    );
    for s in cluster["scaling"].as_array().into_iter().flatten() {
        println!(
            "  scaling          {}: {}",
            s["agent"].as_str().unwrap_or("?"),
            s["recommendation"]["reason"].as_str().unwrap_or("?")
        );
    }

    println!();
    match logs.first_file() {
        Some(file) => println!("Logs     {} (JSON lines)", file.display()),
        None => println!("Logs     {} (JSON lines)", args.log_dir.display()),
    }
    println!(
        "Demo     {:.1} s; the dashboard was at {}/{}",
        started.elapsed().as_secs_f64(),
        client.base,
        if args.keep_serving {
            ""
        } else {
            " (keep it up with --keep-serving)"
        }
    );

    if problems.is_empty() {
        return Ok(());
    }
    for line in problems.iter().take(10) {
        println!("  unexpected: {line}");
    }
    Err(Failure::Message(format!(
        "{} of {} tasks did not end as expected",
        problems.len(),
        args.tasks
    )))
}

fn reasons(list: &Value) -> String {
    let reasons: Vec<&str> = list
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    if reasons.is_empty() {
        String::new()
    } else {
        format!(" ({})", reasons.join("; "))
    }
}

/// Median finishing position (in percent of the batch) by priority, over tasks that needed
/// no approval: higher priorities should finish earlier.
fn priority_order(finished: &[Finished]) -> String {
    let mut done: Vec<(&str, i32)> = finished
        .iter()
        .filter(|f| !matches!(f.planned.expect, Expect::Deleted(_) | Expect::Kept(_)))
        .filter_map(|f| Some((f.view["updated_at"].as_str()?, f.planned.priority)))
        .collect();
    // RFC 3339 UTC with fixed millisecond digits sorts as text.
    done.sort();
    let n = done.len().max(1) as f64;
    let mut ranks: BTreeMap<i32, Vec<f64>> = BTreeMap::new();
    for (rank, (_, priority)) in done.iter().enumerate() {
        ranks
            .entry(*priority)
            .or_default()
            .push(rank as f64 / n * 100.0);
    }
    let parts: Vec<String> = ranks
        .iter()
        .rev()
        .map(|(priority, r)| {
            format!(
                "priority {priority}: {} tasks, median finish at {:.0}%",
                r.len(),
                r.get(r.len() / 2).copied().unwrap_or(0.0)
            )
        })
        .collect();
    parts.join("; ")
}
