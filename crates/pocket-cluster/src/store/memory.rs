//! The in-memory store: one mutex over a few ordered indexes.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::future::BoxFuture;
use pocket_agent::{Checkpoint, CheckpointRef, JournalEntry};
use serde_json::Value;

use super::{
    Claimed, Enqueued, FailOutcome, NewTask, QueueStats, StoreError, StoreOptions, TaskFilter,
    TaskId, TaskRecord, TaskStatus, TaskStore, duration_ms, from_ms, lease_expired_error,
    list_limit, log_reclaimed, new_id, validate, validate_worker,
};

mod approvals;

/// A [`TaskStore`] in this process's memory: for tests, and for a single process that may
/// lose its queue when it stops.
///
/// Every operation takes one short lock (never across an `.await`); claims cost
/// O(log n) plus the queued tasks they skip for another agent or a missing capability.
/// Finished tasks beyond [`StoreOptions::keep_finished`] (default 10,000) are dropped, oldest
/// first, with their idempotency keys, so memory stays bounded by the unfinished tasks.
/// Clones share one store.
#[derive(Debug, Clone)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    options: StoreOptions,
    state: Mutex<State>,
    approvals: super::approvals::MemoryTable,
}

/// One task with its run state.
#[derive(Debug)]
struct Slot {
    record: TaskRecord,
    run_after: i64,
    lease_expires: Option<i64>,
    checkpoint: Option<Checkpoint>,
    journal: Vec<JournalEntry>,
}

#[derive(Debug, Default)]
struct State {
    next_seq: u64,
    /// Every task kept, by enqueue order.
    tasks: BTreeMap<u64, Slot>,
    ids: HashMap<TaskId, u64>,
    keys: HashMap<String, u64>,
    /// Queued tasks that were claimable when last looked at, in claim order.
    ready: BTreeSet<(Reverse<i32>, u64)>,
    /// Queued tasks by `run_after`; moved to `ready` when due.
    delayed: BTreeSet<(i64, u64)>,
    /// Running or waiting tasks.
    leased: BTreeSet<u64>,
    /// Finished tasks, oldest first, for pruning.
    finished: VecDeque<u64>,
    counts: [u64; TaskStatus::ALL.len()],
    /// Queued tasks (scheduled retries included) by priority, kept as they change so that
    /// `stats` (every heartbeat) does not walk the queue.
    queued_by_priority: BTreeMap<Reverse<i32>, u64>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new(options: StoreOptions) -> Self {
        Self {
            inner: Arc::new(Inner {
                options,
                state: Mutex::new(State::default()),
                approvals: Default::default(),
            }),
        }
    }

    /// Runs `f` on the state with the current time, under the lock.
    fn with<R>(&self, f: impl FnOnce(&mut State, i64, &StoreOptions) -> R) -> R {
        let now = self.inner.options.now_ms();
        let mut state = self
            .inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        f(&mut state, now, &self.inner.options)
    }
}

impl State {
    fn enqueue(
        &mut self,
        task: NewTask,
        now: i64,
        options: &StoreOptions,
    ) -> Result<Enqueued, StoreError> {
        validate(&task)?;
        if let Some(seq) = task.idempotency_key.as_ref().and_then(|k| self.keys.get(k))
            && let Some(slot) = self.tasks.get(seq)
        {
            return Ok(Enqueued {
                id: slot.record.id.clone(),
                created: false,
            });
        }
        if let Some(limit) = options.max_queued
            && self.counts[TaskStatus::Queued.index()] >= limit
        {
            return Err(options.queue_full(limit));
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let id = new_id();
        let at = from_ms(now);
        if let Some(key) = &task.idempotency_key {
            self.keys.insert(key.clone(), seq);
        }
        self.ids.insert(id.clone(), seq);
        self.ready.insert((Reverse(task.priority), seq));
        self.counts[TaskStatus::Queued.index()] += 1;
        self.count_queued(task.priority, true);
        self.tasks.insert(
            seq,
            Slot {
                record: TaskRecord {
                    id: id.clone(),
                    agent: task.agent,
                    task: task.task,
                    priority: task.priority,
                    capabilities: task.capabilities,
                    idempotency_key: task.idempotency_key,
                    status: TaskStatus::Queued,
                    attempts: 0,
                    max_attempts: task.max_attempts,
                    result: None,
                    error: None,
                    metadata: task.metadata,
                    created_at: at,
                    updated_at: at,
                    run_after: at,
                    lease_owner: None,
                    lease_expires_at: None,
                },
                run_after: now,
                lease_expires: None,
                checkpoint: None,
                journal: Vec::new(),
            },
        );
        Ok(Enqueued { id, created: true })
    }

    fn claim(
        &mut self,
        worker: &str,
        agents: &[String],
        capabilities: &[String],
        limit: usize,
        lease: i64,
        now: i64,
    ) -> Vec<Claimed> {
        while let Some(&(at, seq)) = self.delayed.first() {
            if at > now {
                break;
            }
            self.delayed.pop_first();
            if let Some(slot) = self.tasks.get(&seq) {
                self.ready.insert((Reverse(slot.record.priority), seq));
            }
        }
        let picked: Vec<(Reverse<i32>, u64)> = self
            .ready
            .iter()
            .filter(|(_, seq)| {
                self.tasks.get(seq).is_some_and(|slot| {
                    let r = &slot.record;
                    (agents.is_empty() || agents.contains(&r.agent))
                        && r.capabilities.iter().all(|c| capabilities.contains(c))
                })
            })
            .take(limit)
            .copied()
            .collect();
        let expires = now.saturating_add(lease);
        let mut claimed = Vec::with_capacity(picked.len());
        for key in picked {
            self.ready.remove(&key);
            let seq = key.1;
            let Some(slot) = self.tasks.get_mut(&seq) else {
                continue;
            };
            let r = &mut slot.record;
            r.status = TaskStatus::Running;
            r.attempts = r.attempts.saturating_add(1);
            r.lease_owner = Some(worker.to_owned());
            r.lease_expires_at = Some(from_ms(expires));
            r.updated_at = from_ms(now);
            slot.lease_expires = Some(expires);
            let resume = slot.checkpoint.as_ref().map(|checkpoint| Checkpoint {
                journal: slot.journal.clone(),
                ..checkpoint.clone()
            });
            claimed.push(Claimed {
                record: slot.record.clone(),
                resume,
            });
            self.leased.insert(seq);
            self.count_queued(key.0.0, false);
            self.counts[TaskStatus::Queued.index()] -= 1;
            self.counts[TaskStatus::Running.index()] += 1;
        }
        claimed
    }

    /// The task `worker` holds, by sequence number.
    fn held(&self, id: &TaskId, worker: &str) -> Result<u64, StoreError> {
        let seq = *self
            .ids
            .get(id)
            .ok_or_else(|| StoreError::NotFound(id.clone()))?;
        match self.tasks.get(&seq) {
            Some(slot)
                if slot.record.status.is_leased()
                    && slot.record.lease_owner.as_deref() == Some(worker) =>
            {
                Ok(seq)
            }
            _ => Err(StoreError::LeaseLost {
                id: id.clone(),
                worker: worker.to_owned(),
            }),
        }
    }

    fn slot(&mut self, seq: u64) -> Result<&mut Slot, StoreError> {
        self.tasks.get_mut(&seq).ok_or_else(|| StoreError::Backend {
            message: "memory store index out of step with its tasks".into(),
            retryable: false,
            source: None,
        })
    }

    fn set_status(&mut self, seq: u64, status: TaskStatus, now: i64) -> Result<(), StoreError> {
        let slot = self.slot(seq)?;
        let old = slot.record.status;
        let priority = slot.record.priority;
        slot.record.status = status;
        slot.record.updated_at = from_ms(now);
        self.counts[old.index()] -= 1;
        self.counts[status.index()] += 1;
        if old == TaskStatus::Queued && status != TaskStatus::Queued {
            self.count_queued(priority, false);
        } else if old != TaskStatus::Queued && status == TaskStatus::Queued {
            self.count_queued(priority, true);
        }
        Ok(())
    }

    /// One more (`true`) or one fewer queued task of this priority.
    fn count_queued(&mut self, priority: i32, more: bool) {
        let n = self
            .queued_by_priority
            .entry(Reverse(priority))
            .or_default();
        if more {
            *n += 1;
        } else {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.queued_by_priority.remove(&Reverse(priority));
            }
        }
    }

    /// Drops the lease of a leased task.
    fn unlease(&mut self, seq: u64) -> Result<(), StoreError> {
        let slot = self.slot(seq)?;
        slot.record.lease_owner = None;
        slot.record.lease_expires_at = None;
        slot.lease_expires = None;
        self.leased.remove(&seq);
        Ok(())
    }

    /// Queues a leased task again, claimable from `run_after`.
    fn requeue(&mut self, seq: u64, run_after: i64, now: i64) -> Result<(), StoreError> {
        self.unlease(seq)?;
        self.set_status(seq, TaskStatus::Queued, now)?;
        let slot = self.slot(seq)?;
        slot.run_after = run_after;
        slot.record.run_after = from_ms(run_after);
        self.delayed.insert((run_after, seq));
        Ok(())
    }

    /// Moves a task to a terminal status, and prunes old finished tasks.
    fn finish(
        &mut self,
        seq: u64,
        status: TaskStatus,
        now: i64,
        options: &StoreOptions,
    ) -> Result<(), StoreError> {
        self.unlease(seq)?;
        let slot = self.slot(seq)?;
        slot.checkpoint = None;
        slot.journal = Vec::new();
        let priority = slot.record.priority;
        let run_after = slot.run_after;
        self.ready.remove(&(Reverse(priority), seq));
        self.delayed.remove(&(run_after, seq));
        self.set_status(seq, status, now)?;
        self.finished.push_back(seq);
        if let Some(keep) = options.keep_finished {
            while self.finished.len() > keep {
                let Some(old) = self.finished.pop_front() else {
                    break;
                };
                if let Some(slot) = self.tasks.remove(&old) {
                    self.counts[slot.record.status.index()] -= 1;
                    self.ids.remove(&slot.record.id);
                    if let Some(key) = &slot.record.idempotency_key {
                        self.keys.remove(key);
                    }
                }
            }
        }
        Ok(())
    }

    fn fail(
        &mut self,
        id: &TaskId,
        worker: &str,
        error: &str,
        retry_in: Option<Duration>,
        now: i64,
        options: &StoreOptions,
    ) -> Result<FailOutcome, StoreError> {
        let seq = self.held(id, worker)?;
        let slot = self.slot(seq)?;
        slot.record.error = Some(error.to_owned());
        let attempts_left = slot.record.attempts < slot.record.max_attempts;
        match retry_in {
            Some(delay) if attempts_left => {
                let at = now.saturating_add(duration_ms(delay));
                self.requeue(seq, at, now)?;
                Ok(FailOutcome::Retrying { at: from_ms(at) })
            }
            _ => {
                self.finish(seq, TaskStatus::Failed, now, options)?;
                Ok(FailOutcome::DeadLetter)
            }
        }
    }

    fn cancel(
        &mut self,
        id: &TaskId,
        now: i64,
        options: &StoreOptions,
    ) -> Result<bool, StoreError> {
        let seq = *self
            .ids
            .get(id)
            .ok_or_else(|| StoreError::NotFound(id.clone()))?;
        if self.slot(seq)?.record.status.is_terminal() {
            return Ok(false);
        }
        self.finish(seq, TaskStatus::Cancelled, now, options)?;
        Ok(true)
    }

    fn reclaim_expired(&mut self, now: i64, options: &StoreOptions) -> Result<u64, StoreError> {
        let expired: Vec<u64> = self
            .leased
            .iter()
            .copied()
            .filter(|seq| {
                self.tasks
                    .get(seq)
                    .and_then(|slot| slot.lease_expires)
                    .is_some_and(|at| at <= now)
            })
            .collect();
        let mut dead_letters = 0;
        for &seq in &expired {
            let slot = self.slot(seq)?;
            let dead = slot.record.attempts >= slot.record.max_attempts;
            slot.record.error = Some(lease_expired_error(dead).to_owned());
            if dead {
                dead_letters += 1;
                self.finish(seq, TaskStatus::Failed, now, options)?;
            } else {
                self.requeue(seq, now, now)?;
            }
        }
        let total = expired.len() as u64;
        log_reclaimed(dead_letters, total - dead_letters);
        Ok(total)
    }

    fn stats(&self) -> QueueStats {
        QueueStats {
            by_status: TaskStatus::ALL
                .into_iter()
                .map(|s| (s, self.counts[s.index()]))
                .collect(),
            queued_by_priority: self
                .queued_by_priority
                .iter()
                .map(|(p, n)| (p.0, *n))
                .collect(),
        }
    }
}

impl TaskStore for MemoryStore {
    fn enqueue(&self, task: NewTask) -> BoxFuture<'_, Result<Enqueued, StoreError>> {
        Box::pin(async move { self.with(|s, now, options| s.enqueue(task, now, options)) })
    }

    fn claim<'a>(
        &'a self,
        worker: &'a str,
        agents: &'a [String],
        capabilities: &'a [String],
        limit: usize,
        lease: Duration,
    ) -> BoxFuture<'a, Result<Vec<Claimed>, StoreError>> {
        Box::pin(async move {
            validate_worker(worker)?;
            if limit == 0 {
                return Ok(Vec::new());
            }
            let lease = duration_ms(lease);
            Ok(self.with(|s, now, _| s.claim(worker, agents, capabilities, limit, lease, now)))
        })
    }

    fn heartbeat<'a>(
        &'a self,
        worker: &'a str,
        ids: &'a [TaskId],
        lease: Duration,
    ) -> BoxFuture<'a, Result<Vec<TaskId>, StoreError>> {
        Box::pin(async move {
            let lease = duration_ms(lease);
            self.with(|s, now, _| {
                let expires = now.saturating_add(lease);
                let mut held = Vec::with_capacity(ids.len());
                for id in ids {
                    let Ok(seq) = s.held(id, worker) else {
                        continue;
                    };
                    let slot = s.slot(seq)?;
                    slot.lease_expires = Some(expires);
                    slot.record.lease_expires_at = Some(from_ms(expires));
                    held.push(id.clone());
                }
                Ok(held)
            })
        })
    }

    fn checkpoint<'a>(
        &'a self,
        id: &'a TaskId,
        worker: &'a str,
        state: CheckpointRef<'a>,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            self.with(|s, now, _| {
                let seq = s.held(id, worker)?;
                let slot = s.slot(seq)?;
                slot.checkpoint = Some(state.to_owned());
                slot.journal.clear();
                slot.record.updated_at = from_ms(now);
                Ok(())
            })
        })
    }

    fn journal<'a>(
        &'a self,
        id: &'a TaskId,
        worker: &'a str,
        entry: &'a JournalEntry,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            self.with(|s, _, _| {
                let seq = s.held(id, worker)?;
                s.slot(seq)?.journal.push(entry.clone());
                Ok(())
            })
        })
    }

    fn set_waiting<'a>(
        &'a self,
        id: &'a TaskId,
        worker: &'a str,
        waiting: bool,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            self.with(|s, now, _| {
                let seq = s.held(id, worker)?;
                let status = if waiting {
                    TaskStatus::WaitingApproval
                } else {
                    TaskStatus::Running
                };
                s.set_status(seq, status, now)
            })
        })
    }

    fn complete<'a>(
        &'a self,
        id: &'a TaskId,
        worker: &'a str,
        result: Value,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            self.with(|s, now, options| {
                let seq = s.held(id, worker)?;
                s.slot(seq)?.record.result = Some(result);
                s.finish(seq, TaskStatus::Succeeded, now, options)
            })
        })
    }

    fn fail<'a>(
        &'a self,
        id: &'a TaskId,
        worker: &'a str,
        error: &'a str,
        retry_in: Option<Duration>,
    ) -> BoxFuture<'a, Result<FailOutcome, StoreError>> {
        Box::pin(async move {
            self.with(|s, now, options| s.fail(id, worker, error, retry_in, now, options))
        })
    }

    fn cancel<'a>(&'a self, id: &'a TaskId) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async move { self.with(|s, now, options| s.cancel(id, now, options)) })
    }

    fn release<'a>(&'a self, worker: &'a str) -> BoxFuture<'a, Result<u64, StoreError>> {
        Box::pin(async move {
            self.with(|s, now, _| {
                let mine: Vec<u64> = s
                    .leased
                    .iter()
                    .copied()
                    .filter(|seq| {
                        s.tasks
                            .get(seq)
                            .is_some_and(|slot| slot.record.lease_owner.as_deref() == Some(worker))
                    })
                    .collect();
                for &seq in &mine {
                    s.requeue(seq, now, now)?;
                }
                Ok(mine.len() as u64)
            })
        })
    }

    fn reclaim_expired(&self) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(async move { self.with(|s, now, options| s.reclaim_expired(now, options)) })
    }

    fn get<'a>(&'a self, id: &'a TaskId) -> BoxFuture<'a, Result<Option<TaskRecord>, StoreError>> {
        Box::pin(async move {
            Ok(self.with(|s, _, _| {
                s.ids
                    .get(id)
                    .and_then(|seq| s.tasks.get(seq))
                    .map(|slot| slot.record.clone())
            }))
        })
    }

    fn list<'a>(
        &'a self,
        filter: &'a TaskFilter,
    ) -> BoxFuture<'a, Result<Vec<TaskRecord>, StoreError>> {
        Box::pin(async move {
            Ok(self.with(|s, _, _| {
                s.tasks
                    .values()
                    .rev()
                    .map(|slot| &slot.record)
                    .filter(|r| filter.statuses.is_empty() || filter.statuses.contains(&r.status))
                    .filter(|r| filter.agent.as_ref().is_none_or(|a| *a == r.agent))
                    .take(list_limit(filter))
                    .cloned()
                    .collect()
            }))
        })
    }

    fn stats(&self) -> BoxFuture<'_, Result<QueueStats, StoreError>> {
        Box::pin(async move { Ok(self.with(|s, _, _| s.stats())) })
    }

    fn approvals(&self) -> Option<&dyn super::ApprovalStore> {
        Some(self)
    }
}
