//! [`ApprovalStore`] for the memory store.

use futures_util::future::BoxFuture;
use pocket_agent::Approval;

use super::super::approvals::{ApprovalRecord, ApprovalStore, Decided, NewApproval};
use super::super::{StoreError, from_ms};
use super::MemoryStore;

impl MemoryStore {
    fn approval_now(&self) -> std::time::SystemTime {
        from_ms(self.inner.options.now_ms())
    }
}

impl ApprovalStore for MemoryStore {
    fn request_approval<'a>(
        &'a self,
        request: &'a NewApproval,
    ) -> BoxFuture<'a, Result<ApprovalRecord, StoreError>> {
        Box::pin(async move { self.inner.approvals.request(request, self.approval_now()) })
    }

    fn decide_approval<'a>(
        &'a self,
        id: &'a str,
        decision: &'a Approval,
    ) -> BoxFuture<'a, Result<Decided, StoreError>> {
        Box::pin(async move {
            Ok(self
                .inner
                .approvals
                .decide(id, decision, self.approval_now()))
        })
    }

    fn get_approval<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<ApprovalRecord>, StoreError>> {
        Box::pin(async move { Ok(self.inner.approvals.get(id)) })
    }

    fn pending_approvals(
        &self,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<ApprovalRecord>, StoreError>> {
        Box::pin(async move {
            // The tasks' lock is taken inside the approvals' lock, never the other way round.
            let unfinished = |task: &super::super::TaskId| {
                self.with(|s, _, _| {
                    s.ids
                        .get(task)
                        .and_then(|seq| s.tasks.get(seq))
                        .is_none_or(|slot| !slot.record.status.is_terminal())
                })
            };
            Ok(self.inner.approvals.pending(limit, unfinished))
        })
    }
}
