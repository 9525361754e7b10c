//! A server over a cluster on the in-memory store with `sim` agents, on 127.0.0.1:0.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use pocket_agent::Agent;
use pocket_cluster::{Cluster, ClusterConfig};
use pocket_models::{SimConfig, SimModel};
use pocket_monitor::{Monitor, MonitorConfig};
use pocket_resilience::ResilienceHub;
use pocket_server::{HttpApprover, Server};
use serde_json::Value;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub const KEY: &str = "test-key-123";

/// Agents every harness serves.
pub const AGENTS: [&str; 2] = ["default", "helper"];

#[derive(Debug, Clone, Default)]
pub struct Options {
    pub max_queued: Option<u64>,
    pub body_limit: Option<usize>,
    pub timeout: Option<Duration>,
    /// Agents get the dangerous [`Launch`] tool and the harness's approver.
    pub dangerous_tool: bool,
    /// Keys as `POCKET_API_KEYS` gives them, instead of [`KEY`] and `second-key`.
    pub keys_csv: Option<String>,
    /// The dashboard's live-series interval (default: the server's).
    pub live_interval: Option<Duration>,
    /// The dashboard's session lifetime (default: the server's).
    pub session_ttl: Option<Duration>,
    /// Chat completions in flight at most (default: the server's).
    pub max_chat_in_flight: Option<usize>,
    /// Every chat completion is a queued task (no direct runs on a free instance).
    pub chat_queued: bool,
}

/// A dangerous tool: approval required.
pub struct Launch;

#[derive(serde::Deserialize, schemars::JsonSchema)]
pub struct LaunchArgs {
    /// What to launch.
    pub target: String,
}

impl pocket_agent::Tool for Launch {
    type Args = LaunchArgs;
    type Output = String;

    fn name(&self) -> &str {
        "launch"
    }

    fn description(&self) -> &str {
        "Launches something."
    }

    fn risk(&self) -> pocket_agent::Risk {
        pocket_agent::Risk::Dangerous
    }

    async fn call(
        &self,
        args: LaunchArgs,
        _: &pocket_agent::ToolContext,
    ) -> Result<String, pocket_agent::ToolError> {
        Ok(format!("{} is away", args.target))
    }
}

pub struct Harness {
    pub base: String,
    pub client: reqwest::Client,
    pub cluster: Cluster,
    pub server: Server,
    pub monitor: Monitor,
    pub approver: HttpApprover,
    stop: watch::Sender<bool>,
    serving: JoinHandle<std::io::Result<()>>,
    running: Option<JoinHandle<()>>,
}

async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

impl Harness {
    pub async fn start(options: Options) -> Self {
        let config = ClusterConfig {
            poll_interval_ms: 20,
            ..ClusterConfig::default()
        };
        let mut store_options = config.store_options();
        if let Some(limit) = options.max_queued {
            store_options = store_options
                .max_queued(limit)
                .queue_full_retry_after(Duration::from_secs(7));
        }
        let store = pocket_cluster::open("memory:", store_options)
            .await
            .unwrap();
        let approver = HttpApprover::new();
        let dangerous = options.dangerous_tool;
        let agent_approver = approver.clone();
        let mut builder = Cluster::builder(store).config(config).factory(move |name| {
            // Streaming: text deltas reach task events and chat streams.
            let mut agent = Agent::builder(SimModel::new(SimConfig::default()))
                .name(name)
                .streaming(true);
            if dangerous {
                agent = agent.tool(Launch).approver(agent_approver.clone());
            }
            Ok(agent.build()?)
        });
        for name in AGENTS {
            builder = builder.agent(name);
        }
        let cluster = builder.build().unwrap();
        let monitor = Monitor::new(MonitorConfig::default()).unwrap();
        let mut server = Server::builder(cluster.clone())
            .monitor(monitor.clone())
            .resilience(ResilienceHub::new())
            .approvals(approver.clone())
            .api_keys([KEY, "second-key"]);
        if let Some(csv) = &options.keys_csv {
            server = server.api_keys_csv(csv);
        }
        if let Some(limit) = options.body_limit {
            server = server.body_limit(limit);
        }
        if let Some(t) = options.timeout {
            server = server.request_timeout(t);
        }
        if let Some(every) = options.live_interval {
            server = server.live_interval(every);
        }
        if let Some(ttl) = options.session_ttl {
            server = server.session_ttl(ttl);
        }
        if options.chat_queued {
            server = server.chat_direct(false);
        }
        if let Some(n) = options.max_chat_in_flight {
            server = server.max_chat_in_flight(n);
        }
        let server = server.build().unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop, rx) = watch::channel(false);
        let serving = tokio::spawn({
            let server = server.clone();
            async move { server.serve(listener, stopped(rx)).await }
        });
        Self {
            base,
            client: reqwest::Client::new(),
            cluster,
            server,
            monitor,
            approver,
            stop,
            serving,
            running: None,
        }
    }

    /// Starts working off the queue.
    pub fn run_cluster(&mut self) {
        let cluster = self.cluster.clone();
        let rx = self.stop.subscribe();
        self.running = Some(tokio::spawn(async move {
            cluster.run(stopped(rx)).await.unwrap();
        }));
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.client.get(self.url(path)).bearer_auth(KEY)
    }

    pub fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.client.post(self.url(path)).bearer_auth(KEY)
    }

    /// `POST path` with a JSON body and the key; the response, whatever its status.
    pub async fn post_json(&self, path: &str, body: &Value) -> reqwest::Response {
        self.post(path).json(body).send().await.unwrap()
    }

    pub fn delete(&self, path: &str) -> reqwest::RequestBuilder {
        self.client.delete(self.url(path)).bearer_auth(KEY)
    }

    /// Submits a task; returns its id.
    pub async fn submit(&self, body: Value) -> String {
        let resp = self.post_json("/v1/tasks", &body).await;
        assert_eq!(resp.status(), 202);
        let body: Value = resp.json().await.unwrap();
        body["id"].as_str().unwrap().to_owned()
    }

    /// Polls until the task is terminal; returns its view.
    pub async fn wait_terminal(&self, id: &str) -> Value {
        for _ in 0..500 {
            let view: Value = self
                .get(&format!("/v1/tasks/{id}"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if ["succeeded", "failed", "cancelled"].contains(&view["status"].as_str().unwrap()) {
                return view;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("task {id} did not finish");
    }

    /// Stops the server and the cluster and waits for both.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        self.serving.await.unwrap().unwrap();
        if let Some(running) = self.running.take() {
            running.await.unwrap();
        }
    }
}

/// Asserts the JSON error shape and returns the message.
pub async fn expect_error(resp: reqwest::Response, status: u16, kind: &str) -> String {
    assert_eq!(resp.status(), status);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["type"], kind, "body: {body}");
    body["error"]["message"].as_str().unwrap().to_owned()
}
