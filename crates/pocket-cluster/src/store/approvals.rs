//! Durable approval requests: a run that waits for a person keeps its request in the task
//! store, so the request survives a restart and a resumed run finds its answer.
//!
//! A request's id is derived from its task and tool call ([`approval_id`]): a run that
//! resumes from its checkpoint and asks again for the same call gets the same row back,
//! answered or still pending. An answer is written once; a second answer is refused.
//!
//! Every store of this crate keeps approvals ([`TaskStore::approvals`](super::TaskStore::approvals)):
//! the memory store in its process, SQLite and PostgreSQL in table `pocket_approvals`.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), pocket_cluster::StoreError> {
//! use pocket_agent::Approval;
//! use pocket_cluster::store::{self, Decided, NewApproval, StoreOptions, TaskId};
//!
//! let store = store::open("memory:", StoreOptions::new()).await?;
//! let approvals = store.approvals().expect("every store of this crate keeps approvals");
//! let asked = NewApproval {
//!     task_id: TaskId("task-1".into()),
//!     agent: "ops".into(),
//!     call_id: "call-1".into(),
//!     tool: "shell".into(),
//!     risk: "dangerous".into(),
//!     arguments: serde_json::json!({"command": "ls"}),
//! };
//! let pending = approvals.request_approval(&asked).await?;
//! assert!(pending.decision.is_none());
//! let decided = approvals.decide_approval(&pending.id, &Approval::Approve).await?;
//! assert!(matches!(decided, Decided::Recorded(_)));
//! // Asked again (a resumed run): the answer is there at once.
//! let again = approvals.request_approval(&asked).await?;
//! assert_eq!(again.decision, Some(Approval::Approve));
//! # Ok(()) }
//! ```

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::SystemTime;

use futures_util::future::BoxFuture;
use pocket_agent::Approval;
use serde::Serialize;
use serde_json::Value;

use super::{StoreError, TaskId};

/// An approval request to record.
#[derive(Debug, Clone, PartialEq)]
pub struct NewApproval {
    /// The task (the run's id).
    pub task_id: TaskId,
    /// The agent.
    pub agent: String,
    /// The model's id of the tool call.
    pub call_id: String,
    /// The tool.
    pub tool: String,
    /// The tool's effective risk (`safe`, `sensitive`, `dangerous`).
    pub risk: String,
    /// The arguments the model asked for.
    pub arguments: Value,
}

impl NewApproval {
    /// The id this request is kept under: [`approval_id`] of its task and call.
    pub fn id(&self) -> String {
        approval_id(&self.task_id, &self.call_id)
    }
}

/// A recorded approval request and its answer, if any.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ApprovalRecord {
    /// [`approval_id`] of the task and call.
    pub id: String,
    /// The task.
    pub task_id: TaskId,
    /// The agent.
    pub agent: String,
    /// The tool call's id.
    pub call_id: String,
    /// The tool.
    pub tool: String,
    /// The tool's effective risk.
    pub risk: String,
    /// The arguments the model asked for.
    pub arguments: Value,
    /// When it was first asked.
    pub requested_at: SystemTime,
    /// The answer, once given.
    pub decision: Option<Approval>,
    /// When it was answered.
    pub decided_at: Option<SystemTime>,
}

/// What [`ApprovalStore::decide_approval`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum Decided {
    /// The answer was recorded; the record as it is now.
    Recorded(ApprovalRecord),
    /// It had been answered before; that answer stands.
    AlreadyDecided(ApprovalRecord),
    /// No request has this id.
    NotFound,
}

/// Where approval requests and their answers are kept (see the [module docs](self)).
pub trait ApprovalStore: Send + Sync {
    /// Records a request, or returns the one already recorded under its id (answered or not,
    /// with its first `requested_at`).
    ///
    /// # Errors
    /// [`StoreError::Invalid`] for an empty task or call id, a NUL character, or an id
    /// already taken by another task and call; the backend's errors.
    fn request_approval<'a>(
        &'a self,
        request: &'a NewApproval,
    ) -> BoxFuture<'a, Result<ApprovalRecord, StoreError>>;

    /// Answers a request, unless it was answered before.
    ///
    /// # Errors
    /// The backend's; [`StoreError::Invalid`] for an edit whose arguments hold a NUL.
    fn decide_approval<'a>(
        &'a self,
        id: &'a str,
        decision: &'a Approval,
    ) -> BoxFuture<'a, Result<Decided, StoreError>>;

    /// One request.
    ///
    /// # Errors
    /// The backend's.
    fn get_approval<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<ApprovalRecord>, StoreError>>;

    /// Unanswered requests whose task is not finished (or is not a task of this store),
    /// oldest first, at most `limit` (0: 100).
    ///
    /// # Errors
    /// The backend's.
    fn pending_approvals(
        &self,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<ApprovalRecord>, StoreError>>;
}

// Compile-time check that the trait stays object safe.
const _: Option<&dyn ApprovalStore> = None;

/// The id of the approval request for `call_id` in `task`: `apr-` and 32 hex digits of a
/// 128-bit FNV-1a hash of both (length-prefixed, so no two pairs share an input). Stable
/// across versions and processes.
pub fn approval_id(task: &TaskId, call_id: &str) -> String {
    const OFFSET: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    const PRIME: u128 = 0x0000_0000_0100_0000_0000_0000_0000_013b;
    let mut hash = OFFSET;
    let task = task.0.as_bytes();
    let call = call_id.as_bytes();
    let parts: [&[u8]; 4] = [
        &(task.len() as u64).to_le_bytes(),
        task,
        &(call.len() as u64).to_le_bytes(),
        call,
    ];
    for byte in parts.into_iter().flatten() {
        hash ^= u128::from(*byte);
        hash = hash.wrapping_mul(PRIME);
    }
    format!("apr-{hash:032x}")
}

/// `pending_approvals`' row limit.
pub(super) fn pending_limit(limit: usize) -> usize {
    if limit == 0 { 100 } else { limit }
}

/// The checks every store makes before it records a request.
pub(super) fn validate_request(request: &NewApproval) -> Result<(), StoreError> {
    if request.task_id.0.is_empty() || request.call_id.is_empty() {
        return Err(StoreError::Invalid(
            "an approval request needs a task id and a call id".into(),
        ));
    }
    let texts = [
        &request.task_id.0,
        &request.agent,
        &request.call_id,
        &request.tool,
        &request.risk,
    ];
    if texts.iter().any(|t| t.contains('\0')) {
        return Err(StoreError::Invalid(
            "a NUL character in an approval request".into(),
        ));
    }
    Ok(())
}

/// The stored row under `request`'s id must be that request's.
pub(super) fn check_same(
    record: ApprovalRecord,
    request: &NewApproval,
) -> Result<ApprovalRecord, StoreError> {
    if record.task_id == request.task_id && record.call_id == request.call_id {
        Ok(record)
    } else {
        Err(StoreError::Invalid(format!(
            "approval id `{}` already belongs to another task and call",
            record.id
        )))
    }
}

/// The memory store's requests: one short lock, oldest first.
#[derive(Debug, Default)]
pub(super) struct MemoryTable {
    inner: Mutex<Table>,
}

#[derive(Debug, Default)]
struct Table {
    next: u64,
    rows: BTreeMap<u64, ApprovalRecord>,
    ids: HashMap<String, u64>,
}

/// Answered requests kept by the memory store beyond which the oldest answered ones go.
const KEEP_ANSWERED: usize = 10_000;

impl MemoryTable {
    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(super) fn request(
        &self,
        request: &NewApproval,
        now: SystemTime,
    ) -> Result<ApprovalRecord, StoreError> {
        validate_request(request)?;
        let id = request.id();
        let mut t = self.lock();
        if let Some(row) = t.ids.get(&id).and_then(|seq| t.rows.get(seq)) {
            return check_same(row.clone(), request);
        }
        let seq = t.next;
        t.next += 1;
        let record = ApprovalRecord {
            id: id.clone(),
            task_id: request.task_id.clone(),
            agent: request.agent.clone(),
            call_id: request.call_id.clone(),
            tool: request.tool.clone(),
            risk: request.risk.clone(),
            arguments: request.arguments.clone(),
            requested_at: now,
            decision: None,
            decided_at: None,
        };
        t.rows.insert(seq, record.clone());
        t.ids.insert(id, seq);
        t.prune();
        Ok(record)
    }

    pub(super) fn decide(&self, id: &str, decision: &Approval, now: SystemTime) -> Decided {
        let mut t = self.lock();
        let Some(seq) = t.ids.get(id).copied() else {
            return Decided::NotFound;
        };
        match t.rows.get_mut(&seq) {
            None => Decided::NotFound,
            Some(row) if row.decision.is_some() => Decided::AlreadyDecided(row.clone()),
            Some(row) => {
                row.decision = Some(decision.clone());
                row.decided_at = Some(now);
                Decided::Recorded(row.clone())
            }
        }
    }

    pub(super) fn get(&self, id: &str) -> Option<ApprovalRecord> {
        let t = self.lock();
        t.ids.get(id).and_then(|seq| t.rows.get(seq)).cloned()
    }

    /// Unanswered requests, oldest first, for which `keep` says yes.
    pub(super) fn pending(
        &self,
        limit: usize,
        mut keep: impl FnMut(&TaskId) -> bool,
    ) -> Vec<ApprovalRecord> {
        self.lock()
            .rows
            .values()
            .filter(|r| r.decision.is_none() && keep(&r.task_id))
            .take(pending_limit(limit))
            .cloned()
            .collect()
    }
}

impl Table {
    /// Drops the oldest answered requests beyond [`KEEP_ANSWERED`], so memory stays bounded
    /// by the unanswered ones.
    fn prune(&mut self) {
        if self.rows.len() <= 2 * KEEP_ANSWERED {
            return;
        }
        let answered: Vec<u64> = self
            .rows
            .iter()
            .filter(|(_, r)| r.decision.is_some())
            .map(|(seq, _)| *seq)
            .collect();
        let excess = answered.len().saturating_sub(KEEP_ANSWERED);
        for seq in answered.into_iter().take(excess) {
            if let Some(row) = self.rows.remove(&seq) {
                self.ids.remove(&row.id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_and_tell_pairs_apart() {
        let t = TaskId("t1".into());
        assert_eq!(approval_id(&t, "c1"), approval_id(&t, "c1"));
        assert_ne!(approval_id(&t, "c1"), approval_id(&t, "c2"));
        // Length prefixes: ("ab", "c") and ("a", "bc") differ.
        assert_ne!(
            approval_id(&TaskId("ab".into()), "c"),
            approval_id(&TaskId("a".into()), "bc")
        );
        let id = approval_id(&t, "c1");
        assert!(id.starts_with("apr-") && id.len() == 36, "{id}");
    }
}
