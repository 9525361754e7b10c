//! Following one task: its cluster events (its run's steps too, while watched) until it is
//! terminal, with the store polled as a fallback (another worker may run it, or this
//! subscriber may fall behind: it then skips what it missed, and says so).

use std::time::Duration;

use futures_util::Stream;
use pocket_cluster::{Cluster, ClusterEvent, TaskId, TaskRecord};
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::sync::watch;
use tokio::time::{Interval, MissedTickBehavior};

use crate::error::ApiError;

/// How often the store is read while following a task.
const POLL: Duration = Duration::from_millis(250);

/// One step of a followed task.
#[derive(Debug)]
pub(crate) enum Update {
    /// A cluster event about the task.
    Event(ClusterEvent),
    /// This follower fell behind the cluster's channel, which dropped this many events (of
    /// any task) for it; it goes on with the newest.
    Lagged(u64),
    /// The task is terminal; the stream ends after this.
    End(Box<TaskRecord>),
}

struct Follow {
    cluster: Cluster,
    id: TaskId,
    events: broadcast::Receiver<ClusterEvent>,
    poll: Interval,
    draining: watch::Receiver<bool>,
    check_now: bool,
    done: bool,
}

/// The task's events until it is terminal, then [`Update::End`]; an error (and the end)
/// when the store fails or the server drains. Subscribe (`events`)
/// before submitting or reading the task, so nothing is missed in between.
pub(crate) fn follow(
    cluster: Cluster,
    id: TaskId,
    events: broadcast::Receiver<ClusterEvent>,
    draining: watch::Receiver<bool>,
) -> impl Stream<Item = Result<Update, ApiError>> + Send + 'static {
    let mut poll = tokio::time::interval(POLL);
    poll.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let state = Follow {
        cluster,
        id,
        events,
        poll,
        draining,
        check_now: true,
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
                loop {
                    match self.events.try_recv() {
                        Ok(event) if task_of(&event) == Some(&self.id) => {
                            self.check_now = true;
                            return Ok(Update::Event(event));
                        }
                        Ok(_) => {}
                        Err(broadcast::error::TryRecvError::Lagged(n)) => {
                            self.check_now = true;
                            return Ok(Update::Lagged(n));
                        }
                        Err(_) => return Ok(Update::End(Box::new(record))),
                    }
                }
            }
            tokio::select! {
                event = self.events.recv() => match event {
                    Ok(event) => {
                        if task_of(&event) != Some(&self.id) {
                            continue;
                        }
                        self.check_now = ends(&event);
                        return Ok(Update::Event(event));
                    }
                    Err(RecvError::Lagged(n)) => {
                        self.check_now = true;
                        return Ok(Update::Lagged(n));
                    }
                    Err(RecvError::Closed) => {
                        // No more events: the store alone tells.
                        self.poll.tick().await;
                        self.check_now = true;
                    }
                },
                _ = self.poll.tick() => self.check_now = true,
                () = drained(&mut self.draining) => {
                    return Err(ApiError::Unavailable("the server is shutting down".into()));
                }
            }
        }
    }

    async fn terminal(&self) -> Result<Option<TaskRecord>, ApiError> {
        match self.cluster.store().get(&self.id).await? {
            Some(record) if record.status.is_terminal() => Ok(Some(record)),
            Some(_) => Ok(None),
            None => Err(ApiError::NotFound(format!("no task `{}`", self.id))),
        }
    }
}

/// Resolves once the server drains (or its state is gone).
async fn drained(draining: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is not `Send`: drop it here.
    let _ = draining.wait_for(|d| *d).await.map(|_| ());
}

/// The task an event is about.
pub(crate) fn task_of(event: &ClusterEvent) -> Option<&TaskId> {
    match event {
        ClusterEvent::TaskClaimed { id, .. }
        | ClusterEvent::TaskStarted { id, .. }
        | ClusterEvent::TaskSucceeded { id, .. }
        | ClusterEvent::TaskFailed { id, .. }
        | ClusterEvent::TaskCancelled { id }
        | ClusterEvent::LeaseLost { id }
        | ClusterEvent::TaskInterrupted { id }
        | ClusterEvent::Agent { id, .. }
        | ClusterEvent::AgentStepsSkipped { id, .. } => Some(id),
        _ => None,
    }
}

/// Whether the event may have made the task terminal.
fn ends(event: &ClusterEvent) -> bool {
    matches!(
        event,
        ClusterEvent::TaskSucceeded { .. }
            | ClusterEvent::TaskCancelled { .. }
            | ClusterEvent::TaskFailed {
                retry_in_secs: None,
                ..
            }
    )
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
    use pocket_cluster::{Cluster, NewTask, TaskStore};
    use pocket_models::{SimConfig, SimModel};

    use super::*;

    #[tokio::test]
    async fn a_follower_that_falls_behind_skips_with_a_note_and_goes_on() {
        let store: Arc<dyn TaskStore> = Arc::new(MemoryStore::new(StoreOptions::new()));
        let cluster = Cluster::builder(store)
            .agent("default")
            .factory(|name| {
                Ok(Agent::builder(SimModel::new(SimConfig::default()))
                    .name(name)
                    .build()?)
            })
            .build()
            .unwrap();
        let id = cluster
            .submit(NewTask::new("default", "x"))
            .await
            .unwrap()
            .id;
        // A channel of 2 with 5 events queued: the follower lost the 3 oldest.
        let (tx, rx) = broadcast::channel(2);
        for _ in 0..5 {
            tx.send(ClusterEvent::TaskCancelled { id: id.clone() })
                .unwrap();
        }
        let (_draining, draining) = watch::channel(false);
        let updates: Vec<_> = follow(cluster.clone(), id.clone(), rx, draining)
            .take(3)
            .collect()
            .await;
        assert!(matches!(updates[0], Ok(Update::Lagged(3))), "{updates:?}");
        assert!(matches!(
            updates[1],
            Ok(Update::Event(ClusterEvent::TaskCancelled { .. }))
        ));
        assert!(matches!(
            updates[2],
            Ok(Update::Event(ClusterEvent::TaskCancelled { .. }))
        ));
    }

    #[tokio::test]
    async fn a_task_that_ended_before_it_was_read_still_shows_what_it_sent() {
        let store: Arc<dyn TaskStore> = Arc::new(MemoryStore::new(StoreOptions::new()));
        let cluster = Cluster::builder(store)
            .agent("default")
            .factory(|name| {
                Ok(Agent::builder(SimModel::new(SimConfig::default()))
                    .name(name)
                    .build()?)
            })
            .build()
            .unwrap();
        let id = cluster
            .submit(NewTask::new("default", "x"))
            .await
            .unwrap()
            .id;
        let other = cluster
            .submit(NewTask::new("default", "y"))
            .await
            .unwrap()
            .id;
        let (tx, rx) = broadcast::channel(8);
        tx.send(ClusterEvent::TaskInterrupted { id: id.clone() })
            .unwrap();
        tx.send(ClusterEvent::TaskInterrupted { id: other })
            .unwrap();
        tx.send(ClusterEvent::TaskCancelled { id: id.clone() })
            .unwrap();
        assert!(cluster.cancel(&id).await.unwrap());
        let (_draining, draining) = watch::channel(false);
        let updates: Vec<_> = follow(cluster.clone(), id.clone(), rx, draining)
            .collect()
            .await;
        assert_eq!(updates.len(), 3, "{updates:?}");
        assert!(matches!(
            updates[0],
            Ok(Update::Event(ClusterEvent::TaskInterrupted { .. }))
        ));
        assert!(matches!(
            updates[1],
            Ok(Update::Event(ClusterEvent::TaskCancelled { .. }))
        ));
        assert!(matches!(&updates[2], Ok(Update::End(r)) if r.id == id));
    }
}
