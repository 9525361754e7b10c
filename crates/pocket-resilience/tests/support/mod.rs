//! Shared helpers of the integration tests.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Mutex;
use std::time::Duration;

use pocket_agent::{Completion, CompletionRequest, Message, Model, ModelError};
use pocket_resilience::ResilienceEvent;
use tokio::sync::broadcast;
use tokio::time::Instant;

/// A model that answers call `n` (0-based) with `script(n)` and records when each call came.
pub struct Timed {
    name: String,
    script: Box<dyn Fn(usize) -> Result<Completion, ModelError> + Send + Sync>,
    calls: Mutex<Vec<Instant>>,
}

impl Timed {
    pub fn new(
        name: &str,
        script: impl Fn(usize) -> Result<Completion, ModelError> + Send + Sync + 'static,
    ) -> Self {
        Self {
            name: name.into(),
            script: Box::new(script),
            calls: Mutex::new(Vec::new()),
        }
    }

    /// Fails the first `n` calls with `error()`, then answers `ok`.
    pub fn failing_first(
        name: &str,
        n: usize,
        error: impl Fn() -> ModelError + Send + Sync + 'static,
    ) -> Self {
        Self::new(name, move |i| {
            if i < n {
                Err(error())
            } else {
                Ok(Completion::text("ok"))
            }
        })
    }

    /// Always fails with `error()`.
    pub fn always(name: &str, error: impl Fn() -> ModelError + Send + Sync + 'static) -> Self {
        Self::new(name, move |_| Err(error()))
    }

    /// Always answers `text`.
    pub fn ok(name: &str, text: &'static str) -> Self {
        Self::new(name, move |_| Ok(Completion::text(text)))
    }

    pub fn calls(&self) -> usize {
        self.calls.lock().unwrap().len()
    }

    /// Times of the calls, relative to `t0`, in milliseconds.
    pub fn times_ms(&self, t0: Instant) -> Vec<u64> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .map(|t| t.duration_since(t0).as_millis() as u64)
            .collect()
    }
}

impl Model for Timed {
    fn name(&self) -> &str {
        &self.name
    }

    async fn complete(&self, _: &CompletionRequest) -> Result<Completion, ModelError> {
        let n = {
            let mut calls = self.calls.lock().unwrap();
            calls.push(Instant::now());
            calls.len() - 1
        };
        (self.script)(n)
    }
}

pub fn server_error() -> ModelError {
    ModelError::Server {
        status: 500,
        message: "boom".into(),
        retry_after: None,
    }
}

pub fn rate_limited(after: Duration) -> ModelError {
    ModelError::RateLimited {
        message: "slow down".into(),
        retry_after: Some(after),
    }
}

pub fn auth_error() -> ModelError {
    ModelError::Auth {
        status: 401,
        message: "bad key".into(),
    }
}

pub fn request() -> CompletionRequest {
    CompletionRequest::new(vec![Message::user("hi")])
}

pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Every event received so far.
pub fn drain(rx: &mut broadcast::Receiver<ResilienceEvent>) -> Vec<ResilienceEvent> {
    let mut out = Vec::new();
    while let Ok(e) = rx.try_recv() {
        out.push(e);
    }
    out
}

/// The names of the events, in order.
pub fn names(events: &[ResilienceEvent]) -> Vec<&'static str> {
    events.iter().map(ResilienceEvent::name).collect()
}

/// A tool that fails with a retryable error `fails` times, then answers; counts its calls.
pub struct FlakyTool {
    spec: pocket_agent::ToolSpec,
    fails: usize,
    calls: std::sync::atomic::AtomicUsize,
}

impl FlakyTool {
    pub fn new(name: &str, idempotent: bool, fails: usize) -> Self {
        let mut spec = pocket_agent::ToolSpec::new(
            name,
            "A tool that fails first.",
            serde_json::json!({"type": "object", "properties": {}}),
        );
        spec.idempotent = idempotent;
        Self {
            spec,
            fails,
            calls: Default::default(),
        }
    }

    pub fn calls(&self) -> usize {
        self.calls.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl pocket_agent::DynTool for FlakyTool {
    fn spec(&self) -> &pocket_agent::ToolSpec {
        &self.spec
    }

    fn call<'a>(
        &'a self,
        _: serde_json::Value,
        _: &'a pocket_agent::ToolContext,
    ) -> futures_util::future::BoxFuture<'a, Result<serde_json::Value, pocket_agent::ToolError>>
    {
        let n = self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let result = if n < self.fails {
            Err(pocket_agent::ToolError::transient("flaky"))
        } else {
            Ok(serde_json::json!("done"))
        };
        Box::pin(std::future::ready(result))
    }
}
