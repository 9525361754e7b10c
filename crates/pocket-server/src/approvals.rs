//! Approvals over HTTP: [`HttpApprover`] keeps each request in the task store until someone
//! answers `POST /v1/approvals/{id}`, so a request survives a restart.
//!
//! A request's id comes from its task and tool call ([`approval_id`]). When a run stops
//! while it waits (shutdown, a crash) and resumes later from its checkpoint, it asks again
//! for the same call and finds the same request: answered meanwhile (the answer is used at
//! once) or still pending (it waits again). An answer recorded by another process sharing
//! the store is seen within a second.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use axum::extract::{Path, State};
use futures_util::future::BoxFuture;
use pocket_agent::{Approval, ApprovalError, ApprovalRequest, Approver};
use pocket_cluster::store::{
    ApprovalRecord, ApprovalStore, Decided, MemoryStore, NewApproval, StoreOptions,
};
use pocket_cluster::{Cluster, StoreError, TaskId};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::Notify;

use crate::Shared;
use crate::error::ApiError;
use crate::json::Json;

/// How often a waiting request reads the store for an answer given elsewhere (another
/// process on the same store); answers given through this process wake it at once.
const POLL: Duration = Duration::from_secs(1);

/// An [`Approver`] answered over HTTP: give it to the agents (`shared_approver`) and to
/// [`ServerBuilder::approvals`](crate::ServerBuilder::approvals). A cheap-clone handle.
///
/// Requests are kept in the attached cluster's task store (its
/// [`approvals`](pocket_cluster::TaskStore::approvals)); before a server attaches a cluster,
/// or over a store that keeps no approvals, in memory. While a request waits, its task (the
/// request's `run_id`) is marked `waiting_approval`.
///
/// A request the agent stops waiting for while its run goes on (the agent's approval timeout:
/// the fail-safe policy then decides) is withdrawn from this process's listing; one whose run
/// stops (shutdown, cancellation, a lost lease) stays pending for the resumed run.
#[derive(Clone)]
pub struct HttpApprover {
    inner: Arc<Inner>,
}

struct Inner {
    /// Where requests live until a cluster is attached.
    memory: MemoryStore,
    cluster: OnceLock<Cluster>,
    /// Requests this process waits on, by id.
    waiting: Mutex<HashMap<String, Waiter>>,
    /// Requests whose agent stopped waiting while its run went on (at most
    /// [`KEEP_ABANDONED`]; the oldest are forgotten first).
    abandoned: Mutex<Abandoned>,
}

struct Waiter {
    wake: Arc<Notify>,
    /// Asks of this id in flight here (a retried run may overlap its predecessor).
    asks: usize,
}

/// A request waiting for an answer, as `GET /v1/approvals` lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingApproval {
    /// Its id, for `POST /v1/approvals/{id}`: derived from `run_id` and `call_id`.
    pub id: String,
    /// The run (for cluster tasks, the task's id).
    pub run_id: String,
    /// The agent.
    pub agent: String,
    /// The tool call's id.
    pub call_id: String,
    /// The tool.
    pub tool: String,
    /// The tool's effective risk.
    pub risk: Value,
    /// The arguments the model asked for.
    pub arguments: Value,
    /// When it was first asked, RFC 3339 UTC.
    pub requested_at: String,
}

impl From<&ApprovalRecord> for PendingApproval {
    fn from(r: &ApprovalRecord) -> Self {
        Self {
            id: r.id.clone(),
            run_id: r.task_id.0.clone(),
            agent: r.agent.clone(),
            call_id: r.call_id.clone(),
            tool: r.tool.clone(),
            risk: Value::String(r.risk.clone()),
            arguments: r.arguments.clone(),
            requested_at: crate::tasks::rfc3339(r.requested_at),
        }
    }
}

impl std::fmt::Debug for HttpApprover {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpApprover")
            .field("waiting_here", &lock(&self.inner.waiting).len())
            .field("durable", &self.inner.cluster.get().is_some())
            .finish_non_exhaustive()
    }
}

impl Default for HttpApprover {
    fn default() -> Self {
        Self::new()
    }
}

impl HttpApprover {
    /// An approver with nothing pending.
    pub fn new() -> Self {
        Self {
            inner: Arc::new(Inner {
                memory: MemoryStore::new(StoreOptions::new()),
                cluster: OnceLock::new(),
                waiting: Mutex::new(HashMap::new()),
                abandoned: Mutex::new(Abandoned::default()),
            }),
        }
    }

    /// Pending requests in the store, oldest first: unanswered, of unfinished tasks, and
    /// not abandoned by their agent in this process.
    ///
    /// # Errors
    /// The store's.
    pub async fn list(&self) -> Result<Vec<PendingApproval>, StoreError> {
        let records = self.store().pending_approvals(0).await?;
        let abandoned = lock(&self.inner.abandoned);
        Ok(records
            .iter()
            .filter(|r| !abandoned.contains(&r.id))
            .map(PendingApproval::from)
            .collect())
    }

    /// Answers a pending request: records the answer in the store and wakes the run if it
    /// waits in this process (elsewhere, it sees the answer within a second).
    ///
    /// # Errors
    /// [`ApiError::NotFound`] when no such request exists, or its agent stopped waiting;
    /// [`ApiError::Conflict`] when it was answered before or its task has finished; the
    /// store's errors.
    pub async fn decide(&self, id: &str, approval: Approval) -> Result<(), ApiError> {
        let gone = || ApiError::NotFound(format!("no approval `{id}` is waiting"));
        if lock(&self.inner.abandoned).contains(id) {
            return Err(gone());
        }
        let store = self.store();
        let record = store.get_approval(id).await?.ok_or_else(gone)?;
        if let Some(cluster) = self.inner.cluster.get()
            && let Some(task) = cluster.store().get(&record.task_id).await?
            && task.status.is_terminal()
        {
            return Err(ApiError::Conflict(format!(
                "approval `{id}`: its task `{}` already finished ({})",
                task.id, task.status
            )));
        }
        match store.decide_approval(id, &approval).await? {
            Decided::Recorded(_) => {
                if let Some(w) = lock(&self.inner.waiting).get(id) {
                    w.wake.notify_waiters();
                }
                Ok(())
            }
            Decided::AlreadyDecided(r) => Err(ApiError::Conflict(format!(
                "approval `{id}` was answered already ({})",
                r.decision.as_ref().map_or("?", decision_name)
            ))),
            Decided::NotFound => Err(gone()),
        }
    }

    /// Binds the approver to a cluster's task store. The server does this itself; a
    /// `pocket worker` without a server attaches its own approver, so its runs' requests are
    /// recorded in the shared store and answered through any server on that store.
    pub fn attach(&self, cluster: Cluster) {
        // A second server over the same approver keeps the first cluster.
        let _ = self.inner.cluster.set(cluster);
    }

    /// The approval store: the cluster's, else this approver's memory.
    fn store(&self) -> &dyn ApprovalStore {
        self.inner
            .cluster
            .get()
            .and_then(|c| c.store().approvals())
            .unwrap_or(&self.inner.memory)
    }

    async fn ask(&self, request: &ApprovalRequest) -> Result<Approval, ApprovalError> {
        let failed = |e: StoreError| ApprovalError(format!("the approval store failed: {e}"));
        let new = NewApproval {
            task_id: TaskId(request.run_id.to_string()),
            agent: request.agent.to_string(),
            call_id: request.call_id.clone(),
            tool: request.tool.clone(),
            risk: request.risk.as_str().to_owned(),
            arguments: request.arguments.clone(),
        };
        let record = self.store().request_approval(&new).await.map_err(failed)?;
        if let Some(decision) = record.decision {
            tracing::info!(approval = %record.id, run_id = %request.run_id, decision = decision_name(&decision), "approval answered before (resumed run)");
            return Ok(decision);
        }
        let id = record.id.clone();
        let wake = self.register(&record);
        // Unregisters when this ask ends, however it ends.
        let mut registered = Registered {
            approver: self,
            id: id.clone(),
            task: new.task_id.clone(),
            answered: false,
        };
        tracing::info!(approval = %id, run_id = %request.run_id, tool = %request.tool, "approval requested");
        self.set_waiting(&new.task_id, true).await;
        let answer = self.wait(&id, &wake).await;
        registered.answered = true;
        self.set_waiting(&new.task_id, false).await;
        Ok(answer)
    }

    /// Registers a local waiter (or joins one) and returns its wake-up.
    fn register(&self, record: &ApprovalRecord) -> Arc<Notify> {
        lock(&self.inner.abandoned).remove(&record.id);
        let mut waiting = lock(&self.inner.waiting);
        let w = waiting.entry(record.id.clone()).or_insert_with(|| Waiter {
            wake: Arc::new(Notify::new()),
            asks: 0,
        });
        w.asks += 1;
        Arc::clone(&w.wake)
    }

    /// Waits until the store holds an answer.
    async fn wait(&self, id: &str, wake: &Notify) -> Approval {
        loop {
            // Armed before reading, so an answer recorded after the read still wakes us.
            let woken = wake.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            match self.store().get_approval(id).await {
                Ok(Some(ApprovalRecord {
                    decision: Some(decision),
                    ..
                })) => return decision,
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(approval = %id, error = %e, "reading an approval failed; trying again");
                }
            }
            tokio::select! {
                () = woken => {}
                () = tokio::time::sleep(POLL) => {}
            }
        }
    }

    async fn set_waiting(&self, task: &TaskId, waiting: bool) {
        if let Some(cluster) = self.inner.cluster.get()
            && let Err(e) = cluster.set_waiting(task, waiting).await
        {
            // Not a cluster task (a direct run), or the lease moved on: the ask goes on.
            tracing::debug!(task = %task, error = %e, "could not mark the task waiting_approval");
        }
    }
}

/// A local waiter's registration; dropping it ends the wait here.
struct Registered<'a> {
    approver: &'a HttpApprover,
    id: String,
    task: TaskId,
    answered: bool,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        let inner = &self.approver.inner;
        let mut waiting = lock(&inner.waiting);
        let Some(w) = waiting.get_mut(&self.id) else {
            return;
        };
        w.asks -= 1;
        if w.asks > 0 {
            return;
        }
        waiting.remove(&self.id);
        drop(waiting);
        // Answered, or the run stops (it asks again when it resumes): nothing to withdraw.
        // Otherwise the agent gave up (its approval timeout) while its run goes on.
        let stopping = inner
            .cluster
            .get()
            .is_some_and(|c| c.is_stopping(&self.task));
        if !self.answered && !stopping && !std::thread::panicking() {
            lock(&inner.abandoned).insert(self.id.clone());
        }
    }
}

/// Abandoned requests remembered by one approver; beyond this the oldest are forgotten (they
/// show as pending again until their task finishes).
const KEEP_ABANDONED: usize = 10_000;

/// A bounded set of abandoned request ids, oldest first.
#[derive(Default)]
struct Abandoned {
    ids: HashSet<String>,
    order: VecDeque<String>,
}

impl Abandoned {
    fn contains(&self, id: &str) -> bool {
        self.ids.contains(id)
    }

    fn insert(&mut self, id: String) {
        if self.ids.insert(id.clone()) {
            self.order.push_back(id);
        }
        while self.order.len() > KEEP_ABANDONED {
            if let Some(old) = self.order.pop_front() {
                self.ids.remove(&old);
            }
        }
    }

    fn remove(&mut self, id: &str) {
        if self.ids.remove(id) {
            self.order.retain(|o| o != id);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn decision_name(approval: &Approval) -> &'static str {
    match approval {
        Approval::Approve => "approve",
        Approval::Deny(_) => "deny",
        Approval::Edit(_) => "edit",
    }
}

impl Approver for HttpApprover {
    fn approve<'a>(
        &'a self,
        request: &'a ApprovalRequest,
    ) -> BoxFuture<'a, Result<Approval, ApprovalError>> {
        Box::pin(self.ask(request))
    }
}

/// The body of `POST /v1/approvals/{id}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DecisionBody {
    decision: Decision,
    #[serde(default)]
    reason: Option<String>,
    /// The arguments to run with instead (`edit` only).
    #[serde(default)]
    arguments: Option<Value>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Decision {
    Approve,
    Deny,
    Edit,
}

impl DecisionBody {
    fn approval(self) -> Result<Approval, ApiError> {
        match (self.decision, self.arguments) {
            (Decision::Edit, Some(args)) if args.is_object() => Ok(Approval::Edit(args)),
            (Decision::Edit, _) => Err(ApiError::BadRequest(
                "`edit` needs `arguments`: the JSON object to run the tool with".into(),
            )),
            (_, Some(_)) => Err(ApiError::BadRequest(
                "`arguments` goes with `edit` only".into(),
            )),
            (Decision::Approve, None) => Ok(Approval::Approve),
            (Decision::Deny, None) => Ok(Approval::Deny(
                self.reason
                    .unwrap_or_else(|| "denied by an operator".into()),
            )),
        }
    }
}

pub(crate) async fn list(State(state): State<Shared>) -> Result<axum::Json<Value>, ApiError> {
    let pending = match state.approver.as_ref() {
        Some(approver) => approver.list().await?,
        None => Vec::new(),
    };
    Ok(axum::Json(json!({"approvals": pending})))
}

pub(crate) async fn decide(
    State(state): State<Shared>,
    Path(id): Path<String>,
    Json(body): Json<DecisionBody>,
) -> Result<axum::Json<Value>, ApiError> {
    let approver = state
        .approver
        .as_ref()
        .ok_or_else(|| ApiError::NotFound(format!("no approval `{id}` is waiting")))?;
    let approval = body.approval()?;
    let name = decision_name(&approval);
    approver.decide(&id, approval).await?;
    tracing::info!(approval = %id, decision = name, "approval answered");
    Ok(axum::Json(json!({"id": id, "decision": name})))
}
