//! Shared helpers of the integration tests: agents on scripted models, a Prometheus
//! exposition parser, an in-test webhook server, and a bounded wait.

#![allow(dead_code, unreachable_pub)] // each test file uses a subset
#![allow(clippy::unwrap_used, clippy::expect_used)] // fixtures fail the test loudly by design

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use pocket_agent::testing::{ScriptedModel, Step, call};
use pocket_agent::{Completion, ModelError, Tool, ToolContext, ToolError, Usage};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::mpsc;

/// A completion asking for one tool call.
pub fn ask(tool: &str, args: Value) -> Step {
    Ok(Completion::tool_calls(vec![call("c1", tool, args)]))
}

/// A final answer with some token usage.
pub fn answer(text: &str) -> Step {
    let mut c = Completion::text(text);
    c.usage = Usage {
        input_tokens: 100,
        output_tokens: 10,
    };
    Ok(c)
}

/// A transient model failure (classified as network).
pub fn network_error() -> Step {
    Err(ModelError::other("connection reset by peer"))
}

/// A model that plays these steps, then answers `done`.
pub fn model(steps: impl IntoIterator<Item = Step>) -> ScriptedModel {
    ScriptedModel::new(steps)
}

#[derive(Deserialize, JsonSchema)]
pub struct DoubleArgs {
    /// The number to double.
    pub x: i64,
}

/// Doubles a number.
pub struct Double;

impl Tool for Double {
    type Args = DoubleArgs;
    type Output = i64;
    fn name(&self) -> &str {
        "double"
    }
    fn description(&self) -> &str {
        "Doubles a number."
    }
    async fn call(&self, args: DoubleArgs, _: &ToolContext) -> Result<i64, ToolError> {
        Ok(args.x * 2)
    }
}

/// Always fails.
pub struct Broken;

impl Tool for Broken {
    type Args = DoubleArgs;
    type Output = i64;
    fn name(&self) -> &str {
        "broken"
    }
    fn description(&self) -> &str {
        "Fails."
    }
    async fn call(&self, _: DoubleArgs, _: &ToolContext) -> Result<i64, ToolError> {
        Err(ToolError::failed("the disk is on fire"))
    }
}

// --- Prometheus text exposition -----------------------------------------------------------

/// One sample line.
#[derive(Debug, Clone)]
pub struct PromSample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// One metric family: `# HELP`, `# TYPE` and its samples.
#[derive(Debug, Clone, Default)]
pub struct PromFamily {
    pub kind: String,
    pub help: String,
    pub samples: Vec<PromSample>,
}

impl PromFamily {
    /// Label names of the family's samples, without `le` (histogram buckets).
    pub fn label_names(&self) -> BTreeSet<String> {
        self.samples
            .iter()
            .flat_map(|s| s.labels.keys().cloned())
            .filter(|k| k != "le")
            .collect()
    }

    /// The value of the sample with this exact name and these labels.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples
            .iter()
            .find(|s| {
                s.name == name
                    && s.labels.len() == labels.len()
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.value)
    }
}

/// Parses the Prometheus text format 0.0.4 strictly enough to catch malformed output: every
/// sample belongs to the family its `# TYPE` announced, with the suffixes its type allows.
pub fn parse_exposition(text: &str) -> BTreeMap<String, PromFamily> {
    let mut families: BTreeMap<String, PromFamily> = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').expect("HELP has a name and text");
            families.entry(name.into()).or_default().help = help.into();
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE has a name and a type");
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                "unknown type in {line:?}"
            );
            families.entry(name.into()).or_default().kind = kind.into();
            current = Some(name.into());
            continue;
        }
        assert!(!line.starts_with('#'), "unexpected comment {line:?}");
        let family = current.clone().expect("a sample before any # TYPE");
        let sample = parse_sample(line);
        let kind = families[&family].kind.clone();
        let allowed: Vec<String> = match kind.as_str() {
            "histogram" => ["_bucket", "_sum", "_count"]
                .iter()
                .map(|s| format!("{family}{s}"))
                .collect(),
            _ => vec![family.clone()],
        };
        assert!(
            allowed.contains(&sample.name),
            "sample {} does not belong to {kind} family {family}",
            sample.name
        );
        if kind == "counter" {
            assert!(family.ends_with("_total"), "counter {family} lacks _total");
        }
        families.get_mut(&family).unwrap().samples.push(sample);
    }
    for (name, f) in &families {
        assert!(!f.kind.is_empty(), "{name} has no # TYPE");
        assert!(!f.help.is_empty(), "{name} has no # HELP");
    }
    families
}

fn parse_sample(line: &str) -> PromSample {
    let (head, value) = line.rsplit_once(' ').expect("a sample has a value");
    let value: f64 = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line:?}")),
    };
    let (name, labels) = match head.split_once('{') {
        None => (head.to_owned(), BTreeMap::new()),
        Some((name, rest)) => {
            let body = rest.strip_suffix('}').expect("labels end with }");
            (name.to_owned(), parse_labels(body))
        }
    };
    assert!(
        name.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
        "bad metric name {name:?}"
    );
    PromSample {
        name,
        labels,
        value,
    }
}

fn parse_labels(body: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut chars = body.chars().peekable();
    while chars.peek().is_some() {
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        assert_eq!(chars.next(), Some('"'), "label value is quoted");
        let mut value = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => value.push(chars.next().expect("escape")),
                '"' => break,
                c => value.push(c),
            }
        }
        assert!(
            key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "bad label name {key:?}"
        );
        labels.insert(key, value);
        if chars.peek() == Some(&',') {
            chars.next();
        }
    }
    labels
}

// --- webhook server ------------------------------------------------------------------------

/// How the in-test webhook answers.
#[derive(Debug, Clone, Copy)]
pub enum Webhook {
    /// 200 OK to everything.
    Ok,
    /// 500 to the first request, then 200.
    FailOnce,
    /// Never answers.
    Hang,
}

/// A webhook server on 127.0.0.1:0; every JSON body it receives comes out of the receiver.
pub async fn webhook_server(mode: Webhook) -> (String, mpsc::UnboundedReceiver<Value>) {
    use axum::Json;
    use axum::http::StatusCode;
    use axum::routing::post;
    use std::sync::atomic::{AtomicUsize, Ordering};

    let (tx, rx) = mpsc::unbounded_channel();
    let seen = Arc::new(AtomicUsize::new(0));
    let app = axum::Router::new().route(
        "/hooks/secret-token",
        post(move |Json(body): Json<Value>| {
            let tx = tx.clone();
            let seen = seen.clone();
            async move {
                let n = seen.fetch_add(1, Ordering::SeqCst);
                let _ = tx.send(body);
                match mode {
                    Webhook::Ok => StatusCode::OK,
                    Webhook::FailOnce if n == 0 => StatusCode::INTERNAL_SERVER_ERROR,
                    Webhook::FailOnce => StatusCode::OK,
                    Webhook::Hang => std::future::pending().await,
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}/hooks/secret-token"), rx)
}

/// An agent named `name` on an empty script (it answers `done`), reporting to `monitor`
/// through its plugin.
pub fn monitored(monitor: &pocket_monitor::Monitor, name: &str) -> pocket_agent::Agent {
    pocket_agent::Agent::builder(model([]))
        .name(name)
        .plugin(monitor.plugin())
        .build()
        .unwrap()
}

/// Waits for `cond` to hold, polling; fails the test after 10 s. A guard against a hang, not
/// a timing assertion.
pub async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let wait = async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    guard(what, wait).await;
}

/// Runs `fut`, failing the test if it takes more than 10 s.
pub async fn guard<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(Duration::from_secs(10), fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out waiting for: {what}"),
    }
}
