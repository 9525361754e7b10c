//! Approvals over HTTP: [`HttpApprover`] holds each pending request until someone answers
//! `POST /v1/approvals/{id}`. In memory: pending requests do not survive a restart (the
//! agent's approval timeout and fail-safe policy then apply).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::SystemTime;

use axum::extract::{Path, State};
use futures_util::future::BoxFuture;
use pocket_agent::{Approval, ApprovalError, ApprovalRequest, Approver};
use pocket_cluster::{Cluster, TaskId};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::oneshot;

use crate::Shared;
use crate::error::ApiError;
use crate::json::Json;

/// An [`Approver`] answered over HTTP: give it to the agents (`shared_approver`) and to
/// [`ServerBuilder::approvals`](crate::ServerBuilder::approvals). A cheap-clone handle.
///
/// While a request waits, the task (the request's `run_id`) is marked `waiting_approval`
/// through the cluster, when the server attached one.
#[derive(Clone, Default)]
pub struct HttpApprover {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    pending: Mutex<HashMap<String, Pending>>,
    next: AtomicU64,
    cluster: OnceLock<Cluster>,
}

struct Pending {
    view: PendingApproval,
    reply: oneshot::Sender<Approval>,
}

/// A request waiting for an answer, as `GET /v1/approvals` lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingApproval {
    /// Its id, for `POST /v1/approvals/{id}`.
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
    /// When it was asked, RFC 3339 UTC.
    pub requested_at: String,
    #[serde(skip)]
    seq: u64,
}

impl std::fmt::Debug for HttpApprover {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpApprover")
            .field("pending", &self.pending().len())
            .finish_non_exhaustive()
    }
}

impl HttpApprover {
    /// An approver with nothing pending.
    pub fn new() -> Self {
        Self::default()
    }

    /// Requests waiting for an answer, oldest first.
    pub fn pending(&self) -> Vec<PendingApproval> {
        let mut list: Vec<_> = lock(&self.inner.pending)
            .values()
            .map(|p| p.view.clone())
            .collect();
        list.sort_by_key(|p| p.seq);
        list
    }

    /// Answers a pending request.
    ///
    /// # Errors
    /// [`ApiError::NotFound`] when no request with this id waits (answered, timed out, or
    /// never asked).
    pub fn decide(&self, id: &str, approval: Approval) -> Result<(), ApiError> {
        let pending = lock(&self.inner.pending).remove(id);
        match pending.map(|p| p.reply.send(approval)) {
            Some(Ok(())) => Ok(()),
            _ => Err(ApiError::NotFound(format!("no approval `{id}` is waiting"))),
        }
    }

    pub(crate) fn attach(&self, cluster: Cluster) {
        // A second server over the same approver keeps the first cluster.
        let _ = self.inner.cluster.set(cluster);
    }

    async fn ask(&self, request: &ApprovalRequest) -> Result<Approval, ApprovalError> {
        let seq = self.inner.next.fetch_add(1, Ordering::Relaxed);
        let id = format!("apr-{seq}");
        let (reply, answer) = oneshot::channel();
        let view = PendingApproval {
            id: id.clone(),
            run_id: request.run_id.to_string(),
            agent: request.agent.to_string(),
            call_id: request.call_id.clone(),
            tool: request.tool.clone(),
            risk: serde_json::to_value(request.risk).unwrap_or(Value::Null),
            arguments: request.arguments.clone(),
            requested_at: crate::tasks::rfc3339(SystemTime::now()),
            seq,
        };
        lock(&self.inner.pending).insert(id.clone(), Pending { view, reply });
        // Removes the entry if the agent stops waiting (its approval timeout).
        let _forget = Forget {
            inner: &self.inner,
            id: id.clone(),
        };
        tracing::info!(approval = %id, run_id = %request.run_id, tool = %request.tool, "approval requested");
        let task = TaskId(request.run_id.to_string());
        self.set_waiting(&task, true).await;
        let result = answer
            .await
            .map_err(|_| ApprovalError("the approval request was dropped".into()));
        self.set_waiting(&task, false).await;
        result
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

struct Forget<'a> {
    inner: &'a Inner,
    id: String,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        lock(&self.inner.pending).remove(&self.id);
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
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
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Decision {
    Approve,
    Deny,
}

pub(crate) async fn list(State(state): State<Shared>) -> axum::Json<Value> {
    let pending = state
        .approver
        .as_ref()
        .map(HttpApprover::pending)
        .unwrap_or_default();
    axum::Json(json!({"approvals": pending}))
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
    let (approval, name) = match body.decision {
        Decision::Approve => (Approval::Approve, "approve"),
        Decision::Deny => (
            Approval::Deny(
                body.reason
                    .unwrap_or_else(|| "denied by an operator".into()),
            ),
            "deny",
        ),
    };
    approver.decide(&id, approval)?;
    tracing::info!(approval = %id, decision = name, "approval answered");
    Ok(axum::Json(json!({"id": id, "decision": name})))
}
