//! The protected agent (the seed's `createProtectedAgent`): whole-run retries, a breaker per
//! agent, a fallback executor, the degraded path for permission errors, a global error
//! callback, a bounded error history, and events for failures and failed approvals.

mod executor;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use pocket_agent::{
    Agent, AgentError, Classification, Classify, ErrorKind, EventKind, RunOutput, RunRequest,
    Severity,
};
use serde::Serialize;
use tokio::sync::broadcast::error::RecvError;
use tokio::time::Instant;

pub use self::executor::{Cause, Executor, FnExecutor};
use crate::breaker::{Breaker, BreakerPolicy, BreakerState, Outcome};
use crate::event::ResilienceEvent;
use crate::hub::{Component, ResilienceHub};
use crate::metrics::bump;
use crate::retry::{BudgetPolicy, Jitter, Retrier, RetryPolicy};

/// Called with every failed run attempt of every protected agent it is given to.
pub type ErrorCallback = Arc<dyn Fn(&AgentFailure) + Send + Sync>;

/// How a protected agent retries whole runs.
#[derive(Debug, Clone, PartialEq)]
pub struct ProtectedPolicy {
    /// Runs tried again after the first fails with a retryable error. Default: 2.
    pub max_run_retries: u32,
    /// Ceiling of the first delay between runs. Default: 1 s (the seed's `retryDelay`).
    pub base_delay: Duration,
    /// Highest ceiling of any delay. Default: 30 s.
    pub max_delay: Duration,
    /// How delays are drawn. Default: [`Jitter::Full`].
    pub jitter: Jitter,
    /// The agent's retry budget (key `agent:NAME`). Default: [`BudgetPolicy::default`].
    pub budget: BudgetPolicy,
    /// Failures kept in the agent's error history. Default: 1,000.
    pub history: usize,
    /// Seed of the jitter; `None` seeds from the system. Default: `None`.
    pub seed: Option<u64>,
}

impl Default for ProtectedPolicy {
    fn default() -> Self {
        Self {
            max_run_retries: 2,
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(30),
            jitter: Jitter::Full,
            budget: BudgetPolicy::default(),
            history: 1000,
            seed: None,
        }
    }
}

impl ProtectedPolicy {
    fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            max_attempts: self.max_run_retries.saturating_add(1),
            base_delay: self.base_delay,
            max_delay: self.max_delay,
            max_elapsed: Duration::MAX,
            jitter: self.jitter,
            budget: self.budget.clone(),
            seed: self.seed,
        }
    }
}

/// One failed run attempt, as kept in the error history and given to the error callback.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AgentFailure {
    /// The agent.
    pub agent: Arc<str>,
    /// The failed run's id.
    pub run_id: String,
    /// The task.
    pub task: Arc<str>,
    /// The attempt (1-based).
    pub attempt: u32,
    /// The error.
    pub error: String,
    /// Its classification.
    pub classification: Classification,
    /// Model turns the run used.
    pub iterations: u32,
    /// When it failed.
    #[serde(serialize_with = "unix_secs")]
    pub at: SystemTime,
    /// How long the attempt ran.
    #[serde(serialize_with = "secs")]
    pub duration: Duration,
}

/// Which path produced a protected agent's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunPath {
    /// The agent itself.
    Primary,
    /// The fallback executor, after the agent gave up.
    Fallback,
    /// The degraded path, after a permission (auth) error.
    Degraded,
}

impl RunPath {
    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Primary => "primary",
            Self::Fallback => "fallback",
            Self::Degraded => "degraded",
        }
    }
}

/// A protected agent's answer.
#[derive(Debug, Clone)]
pub struct ProtectedOutput {
    /// The run's output (from whichever path answered).
    pub output: RunOutput,
    /// Which path answered.
    pub path: RunPath,
    /// Runs of the agent itself, the successful one included.
    pub attempts: u32,
}

/// Why a protected agent gave up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProtectedError {
    /// Every attempt failed (or the failure was not retryable), and no fallback answered.
    #[error("agent `{agent}` failed after {attempts} attempt(s)")]
    Failed {
        /// The agent.
        agent: Arc<str>,
        /// Runs made.
        attempts: u32,
        /// The last run's error.
        #[source]
        source: AgentError,
    },
    /// The agent's breaker is open, no run was made, and no fallback answered.
    #[error("circuit open for agent `{agent}`; next probe in {:.1}s", .retry_in.as_secs_f64())]
    CircuitOpen {
        /// The agent.
        agent: Arc<str>,
        /// Time until the breaker lets a probe run through.
        retry_in: Duration,
    },
}

impl ProtectedError {
    /// Runs made before giving up.
    pub fn attempts(&self) -> u32 {
        match self {
            Self::Failed { attempts, .. } => *attempts,
            Self::CircuitOpen { .. } => 0,
        }
    }

    /// The last run's error, if a run was made.
    pub fn agent_error(&self) -> Option<&AgentError> {
        match self {
            Self::Failed { source, .. } => Some(source),
            Self::CircuitOpen { .. } => None,
        }
    }
}

impl Classify for ProtectedError {
    fn classify(&self) -> Classification {
        match self {
            Self::Failed { source, .. } => source.classify(),
            Self::CircuitOpen { retry_in, .. } => Classification {
                retry_after: Some(*retry_in),
                ..Classification::new(ErrorKind::Resource, Severity::High, true)
            },
        }
    }
}

/// An [`Agent`] with whole-run retries, a breaker, fallbacks and reporting; cheap to clone.
/// Build it with [`ProtectedAgent::builder`]; see the [module docs](self).
///
/// A run: fail fast (or go to the fallback executor) while the agent's breaker is open; else
/// run the agent, each attempt with the run id `ID-N`; on a retryable failure wait (full
/// jitter from `base_delay`, or the error's Retry-After) and run again, up to
/// `max_run_retries` times, each retry paid from the agent's retry budget. A permission
/// (auth) failure goes to the degraded path when there is one. When the agent gives up, the
/// fallback executor answers if there is one; else the error says how many attempts were made.
///
/// Every failed attempt is recorded in the agent's error history (bounded), reported to the
/// hub (event `agent_failed`, counters, health report) and given to the error callback.
/// Failed approvals during a run become `human_in_loop_error` events.
#[derive(Clone)]
pub struct ProtectedAgent {
    inner: Arc<Inner>,
}

struct Inner {
    agent: Agent,
    name: Arc<str>,
    hub: ResilienceHub,
    breaker: Arc<Breaker>,
    retrier: Retrier,
    max_run_retries: u32,
    fallback: Option<Arc<dyn Executor>>,
    degraded: Option<Arc<dyn Executor>>,
    on_error: Option<ErrorCallback>,
    next_run: AtomicU64,
}

impl std::fmt::Debug for ProtectedAgent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProtectedAgent")
            .field("agent", &self.inner.agent)
            .field("breaker", &self.inner.breaker.state())
            .field("fallback", &self.inner.fallback.is_some())
            .field("degraded", &self.inner.degraded.is_some())
            .finish_non_exhaustive()
    }
}

/// Builds a [`ProtectedAgent`]; see [`ProtectedAgent::builder`].
#[must_use]
pub struct ProtectedBuilder {
    agent: Agent,
    hub: ResilienceHub,
    policy: ProtectedPolicy,
    breaker: BreakerPolicy,
    fallback: Option<Arc<dyn Executor>>,
    degraded: Option<Arc<dyn Executor>>,
    on_error: Option<ErrorCallback>,
}

impl ProtectedBuilder {
    /// Run retries, their delays and budget, and the history size. Default:
    /// [`ProtectedPolicy::default`].
    pub fn policy(mut self, policy: ProtectedPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// The agent's breaker (key `agent:NAME`). Default: [`BreakerPolicy::default`].
    pub fn breaker(mut self, policy: BreakerPolicy) -> Self {
        self.breaker = policy;
        self
    }

    /// Who answers when the agent gives up or its breaker is open (the seed's
    /// `fallbackExecutors`): another [`Agent`], or a [`FnExecutor`]. Default: none.
    pub fn fallback(mut self, executor: impl Executor) -> Self {
        self.fallback = Some(Arc::new(executor));
        self
    }

    /// Who answers after a permission (auth) failure: say, an agent on another model with only
    /// safe tools. Default: none.
    pub fn degraded(mut self, executor: impl Executor) -> Self {
        self.degraded = Some(Arc::new(executor));
        self
    }

    /// Called with every failed attempt (the seed's global `errorCallback`); share one
    /// callback among agents for a global one. Default: none (failures are logged).
    pub fn on_error(mut self, callback: ErrorCallback) -> Self {
        self.on_error = Some(callback);
        self
    }

    /// Builds the protected agent and registers it with the hub.
    pub fn build(self) -> ProtectedAgent {
        let name: Arc<str> = Arc::from(self.agent.name());
        let breaker = self
            .hub
            .breaker_or_insert(Component::Agent, &name, &self.breaker);
        self.hub.register_agent(&name, self.policy.history);
        let retrier = Retrier::new(
            Component::Agent.key(&name),
            self.policy.retry_policy(),
            &self.hub,
        );
        ProtectedAgent {
            inner: Arc::new(Inner {
                agent: self.agent,
                name,
                hub: self.hub,
                breaker,
                retrier,
                max_run_retries: self.policy.max_run_retries,
                fallback: self.fallback,
                degraded: self.degraded,
                on_error: self.on_error,
                next_run: AtomicU64::new(1),
            }),
        }
    }
}

impl ProtectedAgent {
    /// Starts protecting `agent`, reporting to `hub`.
    pub fn builder(agent: Agent, hub: &ResilienceHub) -> ProtectedBuilder {
        ProtectedBuilder {
            agent,
            hub: hub.clone(),
            policy: ProtectedPolicy::default(),
            breaker: BreakerPolicy::default(),
            fallback: None,
            degraded: None,
            on_error: None,
        }
    }

    /// The agent inside.
    pub fn agent(&self) -> &Agent {
        &self.inner.agent
    }

    /// The agent's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The agent's breaker.
    pub fn breaker(&self) -> &Arc<Breaker> {
        &self.inner.breaker
    }

    /// The agent's error history, oldest first.
    pub fn history(&self) -> Vec<AgentFailure> {
        self.inner.hub.agent_history(&self.inner.name)
    }

    /// Runs one task; see the [type docs](Self).
    ///
    /// # Errors
    /// A [`ProtectedError`] saying how many attempts were made, with the last run's error.
    pub async fn run(&self, task: impl Into<String>) -> Result<ProtectedOutput, ProtectedError> {
        self.run_with(RunRequest::new(task)).await
    }

    /// Runs one task with history, an id and a cancellation token.
    ///
    /// # Errors
    /// As [`run`](Self::run).
    pub async fn run_with(&self, request: RunRequest) -> Result<ProtectedOutput, ProtectedError> {
        let inner = &*self.inner;
        let base = request.run_id.clone().unwrap_or_else(|| {
            format!(
                "{}-{}",
                inner.name,
                inner.next_run.fetch_add(1, Ordering::Relaxed)
            )
        });
        let task: Arc<str> = Arc::from(request.task.as_str());
        let mut attempts = 0u32;
        let mut last: Option<AgentError> = None;
        loop {
            let permit = match inner.breaker.try_acquire() {
                Ok(permit) => permit,
                Err(rejected) => {
                    tracing::warn!(agent = %inner.name, retry_in_secs = rejected.retry_in.as_secs_f64(), "agent circuit open; not running");
                    let error = match last {
                        Some(source) => ProtectedError::Failed {
                            agent: inner.name.clone(),
                            attempts,
                            source,
                        },
                        None => ProtectedError::CircuitOpen {
                            agent: inner.name.clone(),
                            retry_in: rejected.retry_in,
                        },
                    };
                    return self.give_up(&request, &base, attempts, error).await;
                }
            };
            attempts += 1;
            let attempt_request = RunRequest {
                run_id: Some(format!("{base}-{attempts}")),
                ..request.clone()
            };
            let started = Instant::now();
            match self.observed(attempt_request).await {
                Ok(output) => {
                    permit.record(Outcome::Success);
                    inner.hub.record_agent_success(&inner.name);
                    return Ok(ProtectedOutput {
                        output,
                        path: RunPath::Primary,
                        attempts,
                    });
                }
                Err(error) if error.is_cancelled() => {
                    // The caller stopped the run: not a failure of the agent, and not a
                    // reason to ask anyone else.
                    permit.record(Outcome::Ignored);
                    return Err(ProtectedError::Failed {
                        agent: inner.name.clone(),
                        attempts,
                        source: error,
                    });
                }
                Err(error) => {
                    permit.record(Outcome::Failure);
                    let class = error.classify();
                    self.report(AgentFailure {
                        agent: inner.name.clone(),
                        run_id: format!("{base}-{attempts}"),
                        task: task.clone(),
                        attempt: attempts,
                        error: error.to_string(),
                        classification: class,
                        iterations: error.iterations(),
                        at: SystemTime::now(),
                        duration: started.elapsed(),
                    });
                    if class.kind == ErrorKind::Auth
                        && let Some(degraded) = &inner.degraded
                        && let Some(out) = self
                            .execute(
                                degraded.as_ref(),
                                RunPath::Degraded,
                                &request,
                                &base,
                                &error,
                            )
                            .await
                    {
                        return Ok(ProtectedOutput {
                            output: out,
                            path: RunPath::Degraded,
                            attempts,
                        });
                    }
                    // An open breaker refuses the next run anyway: give up without waiting.
                    let retry = class.retryable
                        && attempts <= inner.max_run_retries
                        && inner.breaker.state() != BreakerState::Open;
                    let delay = class
                        .retry_after
                        .unwrap_or_else(|| inner.retrier.backoff(attempts));
                    if !retry || !inner.retrier.schedule(attempts, delay, class.kind) {
                        let error = ProtectedError::Failed {
                            agent: inner.name.clone(),
                            attempts,
                            source: error,
                        };
                        return self.give_up(&request, &base, attempts, error).await;
                    }
                    let cancelled = match &request.cancel {
                        Some(cancel) => tokio::select! {
                            () = tokio::time::sleep(delay) => false,
                            () = cancel.cancelled() => true,
                        },
                        None => {
                            tokio::time::sleep(delay).await;
                            false
                        }
                    };
                    if cancelled {
                        return Err(ProtectedError::Failed {
                            agent: inner.name.clone(),
                            attempts,
                            source: error,
                        });
                    }
                    last = Some(error);
                }
            }
        }
    }

    /// The fallback executor's answer, or `error`.
    async fn give_up(
        &self,
        request: &RunRequest,
        base: &str,
        attempts: u32,
        error: ProtectedError,
    ) -> Result<ProtectedOutput, ProtectedError> {
        if let Some(fallback) = &self.inner.fallback
            && let Some(output) = self
                .execute(fallback.as_ref(), RunPath::Fallback, request, base, &error)
                .await
        {
            return Ok(ProtectedOutput {
                output,
                path: RunPath::Fallback,
                attempts,
            });
        }
        tracing::warn!(agent = %self.inner.name, attempts, error = %error, "agent gave up");
        Err(error)
    }

    async fn execute(
        &self,
        executor: &dyn Executor,
        path: RunPath,
        request: &RunRequest,
        base: &str,
        error: &(dyn std::error::Error + Send + Sync + 'static),
    ) -> Option<RunOutput> {
        let inner = &*self.inner;
        let kind = cause_kind(error);
        let request = RunRequest {
            run_id: Some(format!("{base}-{}", path.as_str())),
            ..request.clone()
        };
        let cause = Cause {
            kind,
            message: error.to_string(),
        };
        match executor.execute(request, cause).await {
            Ok(output) => {
                tracing::info!(agent = %inner.name, path = path.as_str(), "answered by another path");
                let key = Component::Agent.key(&inner.name);
                let emitter = inner.hub.emitter();
                emitter.count(|c| bump(&mut c.executor_answers, &key));
                emitter.emit(|| ResilienceEvent::ExecutorTaken {
                    agent: inner.name.clone(),
                    path,
                    kind,
                });
                Some(output)
            }
            Err(e) => {
                tracing::error!(agent = %inner.name, path = path.as_str(), error = %e, "the other path failed too");
                None
            }
        }
    }

    fn report(&self, failure: AgentFailure) {
        let inner = &*self.inner;
        tracing::warn!(agent = %failure.agent, run_id = %failure.run_id, attempt = failure.attempt, kind = failure.classification.kind.as_str(), error = %failure.error, "run failed");
        inner.hub.record_agent_failure(&failure);
        if let Some(callback) = &inner.on_error {
            callback(&failure);
        }
    }

    /// Runs the agent, turning its failed approvals into hub events as they happen.
    async fn observed(&self, request: RunRequest) -> Result<RunOutput, AgentError> {
        let inner = &*self.inner;
        let run_id = request.run_id.clone().unwrap_or_default();
        let mut events = inner.agent.subscribe();
        let run = inner.agent.run_with(request);
        tokio::pin!(run);
        let mut open = true;
        let result = loop {
            tokio::select! {
                biased;
                result = &mut run => break result,
                event = events.recv(), if open => match event {
                    Ok(event) => self.on_event(&run_id, event),
                    Err(RecvError::Lagged(n)) => tracing::debug!(missed = n, "protected agent fell behind its events"),
                    Err(RecvError::Closed) => open = false,
                },
            }
        };
        while let Ok(event) = events.try_recv() {
            self.on_event(&run_id, event);
        }
        result
    }

    fn on_event(&self, run_id: &str, event: pocket_agent::AgentEvent) {
        if &*event.run_id != run_id {
            return;
        }
        if let EventKind::ApprovalFailed {
            tool,
            error,
            denied,
            ..
        } = event.kind
        {
            let inner = &*self.inner;
            let key = Component::Agent.key(&inner.name);
            let emitter = inner.hub.emitter();
            emitter.count(|c| bump(&mut c.hitl_errors, &key));
            emitter.emit(|| ResilienceEvent::HumanInLoopError {
                agent: inner.name.clone(),
                run_id: run_id.to_owned(),
                tool,
                error,
                denied,
            });
        }
    }
}

fn cause_kind(error: &(dyn std::error::Error + Send + Sync + 'static)) -> ErrorKind {
    if let Some(e) = error.downcast_ref::<ProtectedError>() {
        e.classify().kind
    } else if let Some(e) = error.downcast_ref::<AgentError>() {
        e.classify().kind
    } else {
        Classification::from_message(&error.to_string()).kind
    }
}

fn unix_secs<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    s.serialize_f64(secs)
}

fn secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}
