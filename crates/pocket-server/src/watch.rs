//! Following one task: its events (its run's steps too, when asked) until it is terminal.
//! The cluster sends a task's events and end to its followers alone
//! ([`Cluster::follow_task`]); the store is read once after the follower is registered (a
//! task that ended before is not missed), at the end, and on every tick of the server's
//! clock ([`POLL`]) as a fallback (another worker may run it).

use std::time::Duration;

use futures_util::Stream;
use pocket_cluster::{Cluster, ClusterEvent, Followed, TaskFollower, TaskRecord};
use tokio::sync::watch;
use tokio::time::MissedTickBehavior;

use crate::error::ApiError;
use crate::{AppState, Shared};

/// How often the store is read while following a task.
pub(crate) const POLL: Duration = Duration::from_millis(250);

/// One step of a followed task.
#[derive(Debug)]
pub(crate) enum Update {
    /// A cluster event about the task.
    Event(ClusterEvent),
    /// This follower fell behind its channel, which dropped this many of the task's events
    /// for it; it goes on with the newest.
    Lagged(u64),
    /// The task is terminal; the stream ends after this.
    End(Box<TaskRecord>),
}

struct Follow {
    cluster: Cluster,
    follower: TaskFollower,
    /// The server's clock; a shared watch rather than a timer per follower, which cost
    /// every request a timer-wheel entry to add and remove.
    ticks: watch::Receiver<u64>,
    /// The clock stopped (the server is not serving): no more polls.
    no_ticks: bool,
    draining: watch::Receiver<bool>,
    check_now: bool,
    /// The follower will send nothing more: only the store tells.
    quiet: bool,
    done: bool,
}

/// Ticks the server's clock every [`POLL`] until aborted.
pub(crate) async fn tick(state: Shared) {
    let mut every = tokio::time::interval(POLL);
    every.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        state.ticks.send_modify(|n| *n = n.wrapping_add(1));
    }
}

/// The task's events until it is terminal, then [`Update::End`]; an error (and the end)
/// when the store fails or the server drains. Register the follower before reading the
/// task (or with [`Cluster::submit_followed`]), so nothing is missed in between.
pub(crate) fn follow(
    state: &AppState,
    follower: TaskFollower,
) -> impl Stream<Item = Result<Update, ApiError>> + Send + 'static + use<> {
    follow_with(
        state.cluster.clone(),
        follower,
        state.draining.subscribe(),
        state.ticks.subscribe(),
    )
}

fn follow_with(
    cluster: Cluster,
    follower: TaskFollower,
    draining: watch::Receiver<bool>,
    ticks: watch::Receiver<u64>,
) -> impl Stream<Item = Result<Update, ApiError>> + Send + 'static {
    let state = Follow {
        cluster,
        follower,
        ticks,
        no_ticks: false,
        draining,
        check_now: true,
        quiet: false,
        done: false,
    };
    futures_util::stream::unfold(state, |mut s| async move {
        if s.done {
            return None;
        }
        let item = s.next().await;
        if matches!(item, Ok(Update::End(_)) | Err(_)) {
            s.done = true;
        }
        Some((item, s))
    })
}

impl Follow {
    async fn next(&mut self) -> Result<Update, ApiError> {
        loop {
            if std::mem::take(&mut self.check_now)
                && let Some(record) = self.terminal().await?
            {
                // What was sent before the end and not read yet goes first (a run that
                // finished before this follower read a thing still shows its steps).
                if let Some(item) = self.follower.ready() {
                    self.check_now = true;
                    return Ok(update(item));
                }
                return Ok(Update::End(Box::new(record)));
            }
            tokio::select! {
                item = self.follower.next(), if !self.quiet => match item {
                    Some(item) => {
                        self.check_now = matches!(item, Followed::End(_));
                        return Ok(update(item));
                    }
                    None => self.quiet = true,
                },
                ticked = self.ticks.changed(), if !self.no_ticks => match ticked {
                    Ok(()) => self.check_now = true,
                    Err(_) => self.no_ticks = true,
                },
                () = drained(&mut self.draining) => {
                    return Err(ApiError::Unavailable("the server is shutting down".into()));
                }
            }
        }
    }

    async fn terminal(&self) -> Result<Option<TaskRecord>, ApiError> {
        let id = self.follower.id();
        match self.cluster.store().get(id).await? {
            Some(record) if record.status.is_terminal() => Ok(Some(record)),
            Some(_) => Ok(None),
            None => Err(ApiError::NotFound(format!("no task `{id}`"))),
        }
    }
}

fn update(item: Followed) -> Update {
    match item {
        Followed::Event(e) | Followed::End(e) => Update::Event(e),
        Followed::Skipped(n) => Update::Lagged(n),
        // Followed is non-exhaustive: anything new is shown as nothing lost.
        _ => Update::Lagged(0),
    }
}

/// Resolves once the server drains (or its state is gone).
async fn drained(draining: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is not `Send`: drop it here.
    let _ = draining.wait_for(|d| *d).await.map(|_| ());
}

/// The name of an event's `type` tag (the SSE `event:` field); a run's step is named by
/// its own type (`model_call_started`, `text_delta`, `tool_call_finished`, ...).
pub(crate) fn event_name(event: &ClusterEvent) -> &'static str {
    match event {
        ClusterEvent::Agent { event, .. } => event.kind.name(),
        ClusterEvent::AgentStepsSkipped { .. } => "agent_steps_skipped",
        ClusterEvent::TaskClaimed { .. } => "task_claimed",
        ClusterEvent::TaskStarted { .. } => "task_started",
        ClusterEvent::TaskSucceeded { .. } => "task_succeeded",
        ClusterEvent::TaskFailed { .. } => "task_failed",
        ClusterEvent::TaskCancelled { .. } => "task_cancelled",
        ClusterEvent::LeaseLost { .. } => "lease_lost",
        ClusterEvent::TaskInterrupted { .. } => "task_interrupted",
        _ => "cluster_event",
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::sync::Arc;

    use futures_util::StreamExt;
    use pocket_agent::Agent;
    use pocket_cluster::store::{MemoryStore, StoreOptions};
    use pocket_cluster::{Cluster, Following, NewTask, TaskStatus, TaskStore};
    use pocket_models::{SimConfig, SimModel};

    use super::*;

    fn cluster() -> Cluster {
        let store: Arc<dyn TaskStore> = Arc::new(MemoryStore::new(StoreOptions::new()));
        Cluster::builder(store)
            .agent("default")
            .factory(|name| {
                Ok(Agent::builder(SimModel::new(SimConfig::default()))
                    .name(name)
                    .build()?)
            })
            .build()
            .unwrap()
    }

    #[tokio::test]
    async fn a_task_that_ended_before_it_was_followed_still_ends() {
        let cluster = cluster();
        let id = cluster
            .submit(NewTask::new("default", "x"))
            .await
            .unwrap()
            .id;
        assert!(cluster.cancel(&id).await.unwrap());
        let follower = cluster.follow_task(&id, Following::Events);
        let (_draining, draining) = watch::channel(false);
        let (_ticks, ticks) = watch::channel(0);
        let updates: Vec<_> = follow_with(cluster.clone(), follower, draining, ticks)
            .collect()
            .await;
        assert_eq!(updates.len(), 1, "{updates:?}");
        assert!(
            matches!(&updates[0], Ok(Update::End(r)) if r.id == id && r.status == TaskStatus::Cancelled)
        );
        assert_eq!(cluster.followers(), 0);
    }

    #[tokio::test]
    async fn a_cancel_reaches_the_follower_and_a_dropped_follower_is_gone() {
        let cluster = cluster();
        let (enqueued, follower) = cluster
            .submit_followed(NewTask::new("default", "x"), Following::End)
            .await
            .unwrap();
        let id = enqueued.id;
        assert_eq!(cluster.followers(), 1);
        let (_draining, draining) = watch::channel(false);
        let (_ticks, ticks) = watch::channel(0);
        let mut updates = Box::pin(follow_with(cluster.clone(), follower, draining, ticks));
        let canceller = cluster.clone();
        let cancelled = id.clone();
        tokio::spawn(async move { canceller.cancel(&cancelled).await.unwrap() });
        let first = updates.next().await.unwrap().unwrap();
        assert!(
            matches!(&first, Update::Event(ClusterEvent::TaskCancelled { id: t }) if *t == id),
            "{first:?}"
        );
        let second = updates.next().await.unwrap().unwrap();
        assert!(matches!(&second, Update::End(r) if r.status == TaskStatus::Cancelled));
        assert!(updates.next().await.is_none());
        drop(updates);
        assert_eq!(cluster.followers(), 0);

        // A client that goes away before the end leaves nothing behind.
        let (_, follower) = cluster
            .submit_followed(NewTask::new("default", "y"), Following::Steps)
            .await
            .unwrap();
        let (_draining, draining) = watch::channel(false);
        let (_ticks, ticks) = watch::channel(0);
        let stream = follow_with(cluster.clone(), follower, draining, ticks);
        assert_eq!(cluster.followers(), 1);
        drop(stream);
        assert_eq!(cluster.followers(), 0);
    }

    #[tokio::test]
    async fn a_task_run_by_another_worker_is_seen_on_the_next_tick() {
        let cluster = cluster();
        let (enqueued, follower) = cluster
            .submit_followed(NewTask::new("default", "x"), Following::End)
            .await
            .unwrap();
        let id = enqueued.id;
        let (_draining, draining) = watch::channel(false);
        let (clock, ticks) = watch::channel(0);
        let mut updates = Box::pin(follow_with(cluster.clone(), follower, draining, ticks));
        let quiet = Duration::from_millis(50);
        assert!(
            tokio::time::timeout(quiet, updates.next()).await.is_err(),
            "queued: nothing to tell"
        );

        // Another worker (this cluster is not running) takes the task and finishes it: no
        // event reaches this process; only the store knows.
        let store = cluster.store();
        let agents = ["default".to_owned()];
        let claimed = store
            .claim("elsewhere", &agents, &[], 1, Duration::from_secs(30))
            .await
            .unwrap();
        assert_eq!(claimed.len(), 1);
        store
            .complete(
                &id,
                "elsewhere",
                serde_json::json!({"answer": "done there"}),
            )
            .await
            .unwrap();
        assert!(
            tokio::time::timeout(quiet, updates.next()).await.is_err(),
            "no tick yet: the store is not read"
        );
        clock.send_modify(|n| *n += 1);
        let end = updates.next().await.unwrap().unwrap();
        assert!(
            matches!(&end, Update::End(r) if r.id == id && r.status == TaskStatus::Succeeded),
            "{end:?}"
        );
        assert!(updates.next().await.is_none());
    }
}
