//! Heartbeats, health checks and recovery: the worker's maintenance round, every
//! `heartbeat_secs`.
//!
//! 1. **Leases.** Renews the lease of every task the worker holds. A task it no longer holds
//!    was cancelled (its run is stopped) or taken by another worker after this one stalled
//!    past its lease (its run is stopped and the task is not finished here).
//! 2. **Expired leases.** Makes the tasks of dead workers claimable again
//!    ([`TaskStore::reclaim_expired`](crate::TaskStore::reclaim_expired)); they resume from
//!    their last checkpoint.
//! 3. **Instances.** [`Pool::check`](crate::Pool::check) marks failed every instance with runs
//!    in flight that showed no progress for `instance_timeout_secs` (default two minutes).
//!    An instance whose run waits for a person's approval
//!    ([`Cluster::set_waiting`](crate::Cluster::set_waiting)) is not silent.
//!    A failed instance's runs are taken back (cancelled, and their tasks queued again at
//!    once, to resume from their checkpoints elsewhere), it is removed, and a new instance is
//!    built from the agent's configuration by the factory. An instance failed because its
//!    health fell (the seed's rule: below 30) is replaced the same way, but its runs in
//!    flight are left to finish.
//! 4. **Scaling.** Each agent's autoscaler checks utilisation and queue depth
//!    ([`autoscale`](crate::autoscale)).
//! 5. **Metrics.** Queue depth and instances by status.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use tokio::time::MissedTickBehavior;

use crate::pool::FailReason;
use crate::store::{TaskFilter, TaskId, TaskStatus};
use crate::worker::{Shared, StopReason, count, lock};
use pocket_agent::CancellationToken;

impl Shared {
    /// Runs a maintenance round every heartbeat until `stop` is cancelled.
    pub(crate) async fn maintenance_loop(self: Arc<Self>, stop: CancellationToken) {
        let mut tick = tokio::time::interval(self.heartbeat);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                () = stop.cancelled() => break,
                _ = tick.tick() => {}
            }
            self.maintain().await;
        }
    }

    /// One maintenance round; see the [module docs](self).
    pub(crate) async fn maintain(&self) {
        self.renew_leases().await;
        match self.store.reclaim_expired().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(tasks = n, "reclaimed tasks of expired leases"),
            Err(e) => tracing::warn!(error = %e, "reclaiming expired leases failed"),
        }
        self.check_instances();
        let queued = self.queue_depths().await;
        self.autoscale(&queued);
        self.export_instances();
    }

    /// Renews the held leases; stops the runs of tasks no longer held.
    async fn renew_leases(&self) {
        let ids: Vec<TaskId> = lock(&self.runs).keys().cloned().collect();
        if ids.is_empty() {
            return;
        }
        let held = match self.store.heartbeat(&self.worker, &ids, self.lease).await {
            Ok(held) => held,
            Err(e) => {
                tracing::warn!(error = %e, tasks = ids.len(), "renewing leases failed");
                return;
            }
        };
        let held: HashSet<&TaskId> = held.iter().collect();
        for id in ids.iter().filter(|id| !held.contains(id)) {
            // Finished here between listing and renewing: nothing to stop.
            let Some(entry) = self.entry(id) else {
                continue;
            };
            let reason = match self.store.get(id).await {
                Ok(Some(task)) if task.status == TaskStatus::Cancelled => StopReason::Cancelled,
                Ok(Some(task)) if task.status.is_terminal() => continue,
                _ => StopReason::LeaseLost,
            };
            if entry.stop(reason) {
                tracing::warn!(task = %id, reason = ?reason, "task no longer held; stopping its run");
            }
        }
    }

    /// Fails silent instances (sparing those with a run waiting for a person's approval),
    /// takes their runs back, and rebuilds failed instances.
    fn check_instances(&self) {
        for (id, quiet) in self.pool.silent(self.instance_timeout) {
            let waiting = lock(&self.runs)
                .values()
                .any(|e| e.instance.get() == Some(&id) && e.is_waiting());
            if waiting {
                self.pool.heartbeat(&id);
            } else {
                self.pool.mark_failed(
                    &id,
                    FailReason::Silent {
                        silent_secs: quiet.as_secs_f64(),
                    },
                );
            }
        }
        for (id, agent, reason) in self.pool.failed() {
            if matches!(reason, FailReason::Silent { .. }) {
                let entries: Vec<_> = lock(&self.runs)
                    .values()
                    .filter(|e| e.instance.get() == Some(&id))
                    .cloned()
                    .collect();
                for entry in entries {
                    entry.stop(StopReason::InstanceFailed);
                }
            }
            if !self.pool.unregister(&id) {
                continue;
            }
            tracing::warn!(instance = %id, reason = %reason, "instance failed; replacing it");
            self.emit(|| crate::ClusterEvent::InstanceDown {
                id: id.clone(),
                agent: agent.clone(),
                reason: reason.to_string(),
            });
            if self.stop.is_cancelled() {
                continue;
            }
            if let Some(spec) = self.agents.iter().find(|s| s.name == agent)
                && let Err(e) = self.add_instance(spec, "rebuild")
            {
                self.build_failed(spec, &e);
            }
        }
    }

    /// The queue depth each agent's autoscaler sees: the store's queued count; for an agent
    /// without capacity, only if a task of it is queued (so that queued work of one agent
    /// does not wake another from zero).
    async fn queue_depths(&self) -> HashMap<Arc<str>, u64> {
        let queued = match self.store.stats().await {
            Ok(stats) => count(&stats.by_status, TaskStatus::Queued),
            Err(e) => {
                tracing::warn!(error = %e, "reading queue statistics failed");
                return HashMap::new();
            }
        };
        self.queued
            .store(queued, std::sync::atomic::Ordering::Relaxed);
        if let Some(m) = &self.metrics {
            m.set_queue_depth(i64::try_from(queued).unwrap_or(i64::MAX));
        }
        let mut depths = HashMap::new();
        for spec in &self.agents {
            let mut depth = queued;
            if queued > 0 && self.pool.load_of(&spec.name).capacity == 0 {
                let filter = TaskFilter {
                    statuses: vec![TaskStatus::Queued],
                    agent: Some(spec.name.to_string()),
                    limit: 1,
                };
                depth = match self.store.list(&filter).await {
                    Ok(tasks) if tasks.is_empty() => 0,
                    _ => queued,
                };
            }
            depths.insert(spec.name.clone(), depth);
        }
        depths
    }
}
