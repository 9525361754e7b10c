//! The worker on the in-memory store: many tasks exactly once, a crash and resume from
//! checkpoints, a lost lease, a silent instance, retries, cancellation, back-pressure,
//! graceful shutdown and autoscaling.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cluster_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use cluster_support::{
    CountTool, Counter, Failing, HangOnce, Stalling, WaitTool, all_have, counting_agent,
    memory_store, status, wait_until,
};
use pocket_agent::{Agent, ModelError};
use pocket_cluster::store::{MemoryStore, StoreOptions};
use pocket_cluster::{
    Cluster, ClusterConfig, ClusterEvent, NewTask, ScaleDecision, Selection, StoreError, TaskId,
    TaskStatus, TaskStore,
};
use pocket_models::{SimConfig, SimModel};
use tokio::sync::broadcast;

/// Drains the events received so far.
fn drain(rx: &mut broadcast::Receiver<ClusterEvent>) -> Vec<ClusterEvent> {
    let mut out = Vec::new();
    while let Ok(e) = rx.try_recv() {
        out.push(e);
    }
    out
}

fn config() -> ClusterConfig {
    ClusterConfig {
        poll_interval_ms: 20,
        ..ClusterConfig::default()
    }
}

async fn submit_all(cluster: &Cluster, tasks: impl IntoIterator<Item = String>) -> Vec<TaskId> {
    let mut ids = Vec::new();
    for task in tasks {
        ids.push(
            cluster
                .submit(NewTask::new("default", task))
                .await
                .unwrap()
                .id,
        );
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_sim_tasks_each_succeed_exactly_once() {
    let config = ClusterConfig {
        min_instances: 2,
        max_instances: 4,
        instance_concurrency: 32,
        claim_batch: 64,
        poll_interval_ms: 5,
        ..ClusterConfig::default()
    };
    let store: Arc<dyn TaskStore> = Arc::new(MemoryStore::new(config.store_options()));
    let counter = Counter::default();
    let c = counter.clone();
    let cluster = Cluster::builder(store.clone())
        .config(config)
        .agent("default")
        .factory(move |name| Ok(counting_agent(name, &c, SimConfig::default())))
        .build()
        .unwrap();
    let worker = cluster.clone();
    let running = tokio::spawn(async move { worker.run(std::future::pending()).await });
    let ids = submit_all(&cluster, (0..500).map(|i| format!("count item {i}"))).await;

    wait_until(Duration::from_secs(60), || {
        all_have(&store, &ids, TaskStatus::Succeeded)
    })
    .await;
    for id in &ids {
        assert_eq!(
            counter.get(&id.0),
            1,
            "task {id} ran its tool more than once"
        );
        let record = store.get(id).await.unwrap().unwrap();
        assert_eq!(record.attempts, 1);
        let result = record.result.unwrap();
        assert_eq!(result["run_id"], id.0.as_str());
        assert_eq!(result["answer"], "count returned: 1");
    }
    assert_eq!(counter.total(), 500);
    let report = cluster.report().await.unwrap();
    assert_eq!(report.queue["succeeded"], 500);
    assert_eq!(report.overview.queue_size, 0);
    cluster.shutdown();
    let stopped = running.await.unwrap().unwrap();
    assert_eq!(stopped.interrupted, 0);
    assert_eq!(stopped.released, 0);
}

/// A worker dies mid-run (its `run` future is aborted, like `kill -9`): every task had run
/// `count` (journaled) and was stuck in `wait`. A second worker resumes every task from its
/// checkpoint once the leases expire: `count` is replayed from the journal, not run again;
/// the idempotent `wait` runs again.
#[tokio::test(start_paused = true)]
async fn a_crashed_workers_tasks_resume_elsewhere_without_rerunning_journaled_calls() {
    let store = memory_store(StoreOptions::new());
    let counts = Counter::default();
    let waits = Counter::default();
    let worker = |id: &str, hang: bool| {
        let (counts, waits) = (counts.clone(), waits.clone());
        Cluster::builder(store.clone())
            .config(ClusterConfig {
                worker_id: Some(id.into()),
                ..config()
            })
            .agent("default")
            .factory(move |name| {
                Ok(Agent::builder(SimModel::default())
                    .name(name)
                    .tool(CountTool(counts.clone()))
                    .tool(WaitTool {
                        hang,
                        counter: waits.clone(),
                    })
                    .build()?)
            })
            .build()
            .unwrap()
    };
    let a = worker("a", true);
    let ids = submit_all(&a, (0..20).map(|i| format!("count and wait {i}"))).await;
    let runner = a.clone();
    let crashed = tokio::spawn(async move { runner.run(std::future::pending()).await });
    wait_until(Duration::from_secs(30), || async {
        ids.iter()
            .all(|id| counts.get(&id.0) == 1 && waits.get(&id.0) == 1)
    })
    .await;
    crashed.abort();
    assert!(crashed.await.unwrap_err().is_cancelled());
    for id in &ids {
        let t = store.get(id).await.unwrap().unwrap();
        assert_eq!(
            (t.status, t.lease_owner.as_deref()),
            (TaskStatus::Running, Some("a"))
        );
    }

    let b = worker("b", false);
    let mut events = b.subscribe();
    let runner = b.clone();
    let second = tokio::spawn(async move { runner.run(std::future::pending()).await });
    wait_until(Duration::from_secs(300), || {
        all_have(&store, &ids, TaskStatus::Succeeded)
    })
    .await;
    for id in &ids {
        assert_eq!(counts.get(&id.0), 1, "count ran again for {id}");
        assert_eq!(waits.get(&id.0), 2, "wait (idempotent) runs again for {id}");
        let t = store.get(id).await.unwrap().unwrap();
        assert_eq!(t.attempts, 2);
        let answer = t.result.unwrap()["answer"].as_str().unwrap().to_owned();
        assert!(answer.contains("count returned: 1"), "{answer}");
        assert!(answer.contains("wait returned: waited"), "{answer}");
    }
    let resumed = drain(&mut events)
        .into_iter()
        .filter(|e| matches!(e, ClusterEvent::TaskClaimed { resumed: true, .. }))
        .count();
    assert_eq!(resumed, 20);
    b.shutdown();
    second.await.unwrap().unwrap();
}

/// Worker `a` stalls (its heartbeats fail, its model takes 100 s) past its 30 s lease;
/// worker `b` takes the task over and finishes it. When `a` wakes up, its checkpoint is
/// refused: it stops the run without running the tool and without finishing the task.
#[tokio::test(start_paused = true)]
async fn a_worker_that_stalls_past_its_lease_stops_without_finishing_the_task() {
    let store = memory_store(StoreOptions::new());
    let counts = Counter::default();
    let stalled = Arc::new(AtomicBool::new(true));
    let refused = Arc::new(AtomicU32::new(0));
    let stalling: Arc<dyn TaskStore> = Arc::new(Stalling {
        inner: store.clone(),
        stalled: stalled.clone(),
        heartbeats_refused: refused.clone(),
    });
    let (c1, c2) = (counts.clone(), counts.clone());
    let a = Cluster::builder(stalling)
        .config(ClusterConfig {
            worker_id: Some("a".into()),
            instance_concurrency: 1,
            ..config()
        })
        .agent("default")
        .factory(move |name| {
            let slow = SimConfig {
                latency_ms: 100_000,
                ..SimConfig::default()
            };
            Ok(counting_agent(name, &c1, slow))
        })
        .build()
        .unwrap();
    let mut a_events = a.subscribe();
    let id = a
        .submit(NewTask::new("default", "count once"))
        .await
        .unwrap()
        .id;
    let runner = a.clone();
    let a_run = tokio::spawn(async move { runner.run(std::future::pending()).await });
    wait_until(Duration::from_secs(5), || async {
        status(&store, &id).await == TaskStatus::Running
    })
    .await;

    let b = Cluster::builder(store.clone())
        .config(ClusterConfig {
            worker_id: Some("b".into()),
            ..config()
        })
        .agent("default")
        .factory(move |name| Ok(counting_agent(name, &c2, SimConfig::default())))
        .build()
        .unwrap();
    let runner = b.clone();
    let b_run = tokio::spawn(async move { runner.run(std::future::pending()).await });
    wait_until(Duration::from_secs(90), || async {
        status(&store, &id).await == TaskStatus::Succeeded
    })
    .await;
    let done = store.get(&id).await.unwrap().unwrap();
    assert_eq!(done.attempts, 2);
    assert!(refused.load(Ordering::SeqCst) >= 2);

    // `a` wakes at 100 s: its checkpoint is refused and it stops.
    wait_until(Duration::from_secs(200), || async { a.in_flight() == 0 }).await;
    let events = drain(&mut a_events);
    assert!(
        events
            .iter()
            .any(|e| matches!(e, ClusterEvent::LeaseLost { id: lost } if *lost == id)),
        "{events:?}"
    );
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, ClusterEvent::TaskSucceeded { .. })),
        "{events:?}"
    );
    assert_eq!(counts.get(&id.0), 1, "the tool ran once, on b");
    assert_eq!(store.get(&id).await.unwrap().unwrap(), done);
    a.shutdown();
    b.shutdown();
    a_run.await.unwrap().unwrap();
    b_run.await.unwrap().unwrap();
}

/// An instance whose run hangs shows no progress; after the 2-minute timeout it is marked
/// failed, its run is taken back (the task queued again), and a new instance built from
/// the agent's configuration finishes the task.
#[tokio::test(start_paused = true)]
async fn a_silent_instance_is_failed_its_tasks_reclaimed_and_it_is_rebuilt() {
    let store = memory_store(StoreOptions::new());
    let hang = Arc::new(AtomicBool::new(true));
    let built = Arc::new(AtomicU32::new(0));
    let (h, n) = (hang.clone(), built.clone());
    let cluster = Cluster::builder(store.clone())
        .config(config())
        .agent("default")
        .factory(move |name| {
            n.fetch_add(1, Ordering::SeqCst);
            Ok(Agent::builder(HangOnce { hang: h.clone() })
                .name(name)
                .build()?)
        })
        .build()
        .unwrap();
    let first = cluster.pool().instances()[0].id.clone();
    let mut events = cluster.subscribe();
    let id = cluster
        .submit(NewTask::new("default", "hello"))
        .await
        .unwrap()
        .id;
    let runner = cluster.clone();
    let started = tokio::time::Instant::now();
    let run = tokio::spawn(async move { runner.run(std::future::pending()).await });
    wait_until(Duration::from_secs(300), || async {
        status(&store, &id).await == TaskStatus::Succeeded
    })
    .await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(120) && took < Duration::from_secs(150),
        "{took:?}"
    );
    assert_eq!(built.load(Ordering::SeqCst), 2);
    let instances = cluster.pool().instances();
    assert_eq!(instances.len(), 1);
    assert_ne!(instances[0].id, first);
    assert_eq!(store.get(&id).await.unwrap().unwrap().attempts, 2);

    let events = drain(&mut events);
    let down = events.iter().position(|e| {
        matches!(e, ClusterEvent::InstanceDown { id: i, reason, .. }
            if *i == first && reason.contains("no progress"))
    });
    let failed = events.iter().position(
        |e| matches!(e, ClusterEvent::TaskFailed { id: t, retry_in_secs: Some(_), .. } if *t == id),
    );
    let rebuilt = events
        .iter()
        .position(|e| matches!(e, ClusterEvent::InstanceUp { reason, .. } if *reason == "rebuild"));
    let succeeded = events
        .iter()
        .position(|e| matches!(e, ClusterEvent::TaskSucceeded { id: t, .. } if *t == id));
    assert!(
        down.is_some() && failed.is_some() && rebuilt.is_some() && succeeded.is_some(),
        "{events:?}"
    );
    assert!(down < rebuilt && rebuilt < succeeded && failed < succeeded);
    cluster.shutdown();
    run.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn retryable_errors_are_retried_and_others_dead_lettered() {
    let store = memory_store(StoreOptions::new());
    let cluster = |model: fn() -> ModelError| {
        Cluster::builder(store.clone())
            .config(config())
            .agent("default")
            .factory(move |name| Ok(Agent::builder(Failing(model)).name(name).build()?))
            .build()
            .unwrap()
    };
    // Rate limited with a Retry-After of 7 s: retried after exactly that, until attempts run
    // out.
    let limited = cluster(|| ModelError::RateLimited {
        message: "slow down".into(),
        retry_after: Some(Duration::from_secs(7)),
    });
    let mut events = limited.subscribe();
    let id = limited
        .submit(NewTask::new("default", "hi"))
        .await
        .unwrap()
        .id;
    let runner = limited.clone();
    let run = tokio::spawn(async move { runner.run(std::future::pending()).await });
    wait_until(Duration::from_secs(60), || async {
        status(&store, &id).await == TaskStatus::Failed
    })
    .await;
    let record = store.get(&id).await.unwrap().unwrap();
    assert_eq!(record.attempts, 3);
    let retries: Vec<Option<f64>> = drain(&mut events)
        .into_iter()
        .filter_map(|e| match e {
            ClusterEvent::TaskFailed { retry_in_secs, .. } => Some(retry_in_secs),
            _ => None,
        })
        .collect();
    assert_eq!(retries, vec![Some(7.0), Some(7.0), None]);
    limited.shutdown();
    run.await.unwrap().unwrap();

    // Bad credentials: dead-lettered at once.
    let denied = cluster(|| ModelError::Auth {
        status: 401,
        message: "bad key".into(),
    });
    let id = denied
        .submit(NewTask::new("default", "hi"))
        .await
        .unwrap()
        .id;
    let runner = denied.clone();
    let run = tokio::spawn(async move { runner.run(std::future::pending()).await });
    wait_until(Duration::from_secs(10), || async {
        status(&store, &id).await == TaskStatus::Failed
    })
    .await;
    let record = store.get(&id).await.unwrap().unwrap();
    assert_eq!(record.attempts, 1);
    assert!(record.error.unwrap().contains("bad key"));
    // The instance's health paid for both failures of its model.
    assert_eq!(denied.pool().instances()[0].health, 90);
    denied.shutdown();
    run.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn cancelling_a_running_task_stops_its_run() {
    let store = memory_store(StoreOptions::new());
    let counter = Counter::default();
    let c = counter.clone();
    let cluster = Cluster::builder(store.clone())
        .config(config())
        .agent("default")
        .factory(move |name| {
            let slow = SimConfig {
                latency_ms: 60_000,
                ..SimConfig::default()
            };
            Ok(counting_agent(name, &c, slow))
        })
        .build()
        .unwrap();
    let mut events = cluster.subscribe();
    let id = cluster
        .submit(NewTask::new("default", "count slowly"))
        .await
        .unwrap()
        .id;
    let runner = cluster.clone();
    let run = tokio::spawn(async move { runner.run(std::future::pending()).await });
    wait_until(Duration::from_secs(5), || async {
        cluster.in_flight() == 1
    })
    .await;
    assert!(cluster.cancel(&id).await.unwrap());
    wait_until(Duration::from_secs(5), || async {
        cluster.in_flight() == 0
    })
    .await;
    assert_eq!(status(&store, &id).await, TaskStatus::Cancelled);
    assert_eq!(counter.total(), 0);
    assert!(
        drain(&mut events)
            .iter()
            .any(|e| matches!(e, ClusterEvent::TaskCancelled { id: c } if *c == id))
    );
    assert!(!cluster.cancel(&id).await.unwrap());
    cluster.shutdown();
    run.await.unwrap().unwrap();
}

/// A task cancelled through the store (another process: the HTTP server) is noticed at the
/// next heartbeat.
#[tokio::test(start_paused = true)]
async fn a_task_cancelled_elsewhere_is_stopped_at_the_next_heartbeat() {
    let store = memory_store(StoreOptions::new());
    let counter = Counter::default();
    let c = counter.clone();
    let cluster = Cluster::builder(store.clone())
        .config(config())
        .agent("default")
        .factory(move |name| {
            let slow = SimConfig {
                latency_ms: 60_000,
                ..SimConfig::default()
            };
            Ok(counting_agent(name, &c, slow))
        })
        .build()
        .unwrap();
    let id = cluster
        .submit(NewTask::new("default", "count slowly"))
        .await
        .unwrap()
        .id;
    let runner = cluster.clone();
    let run = tokio::spawn(async move { runner.run(std::future::pending()).await });
    wait_until(Duration::from_secs(5), || async {
        cluster.in_flight() == 1
    })
    .await;
    let at = tokio::time::Instant::now();
    assert!(store.cancel(&id).await.unwrap());
    wait_until(Duration::from_secs(30), || async {
        cluster.in_flight() == 0
    })
    .await;
    assert!(
        at.elapsed() <= Duration::from_secs(11),
        "{:?}",
        at.elapsed()
    );
    assert_eq!(counter.total(), 0);
    cluster.shutdown();
    run.await.unwrap().unwrap();
}

#[tokio::test]
async fn submissions_beyond_max_queued_are_refused() {
    let config = ClusterConfig {
        max_queued: 3,
        ..ClusterConfig::default()
    };
    let store: Arc<dyn TaskStore> = Arc::new(MemoryStore::new(config.store_options()));
    let counter = Counter::default();
    let cluster = Cluster::builder(store)
        .config(config)
        .agent("default")
        .factory(move |name| Ok(counting_agent(name, &counter, SimConfig::default())))
        .build()
        .unwrap();
    for i in 0..3 {
        cluster
            .submit(NewTask::new("default", format!("task {i}")))
            .await
            .unwrap();
    }
    let err = cluster
        .submit(NewTask::new("default", "one too many"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::QueueFull { limit: 3, .. }),
        "{err}"
    );
    assert!(err.is_retryable());
}

#[tokio::test(start_paused = true)]
async fn shutdown_lets_runs_finish_within_the_grace_period_and_releases_the_rest() {
    let store = memory_store(StoreOptions::new());
    let counter = Counter::default();
    let build = |latency_ms: u64, grace: f64| {
        let c = counter.clone();
        Cluster::builder(store.clone())
            .config(ClusterConfig {
                shutdown_grace_secs: grace,
                ..config()
            })
            .agent("default")
            .factory(move |name| {
                let sim = SimConfig {
                    latency_ms,
                    ..SimConfig::default()
                };
                Ok(counting_agent(name, &c, sim))
            })
            .build()
            .unwrap()
    };
    // Runs of 5 s, grace of 20 s: both finish.
    let quick = build(5_000, 20.0);
    let ids = submit_all(&quick, ["hi one".into(), "hi two".into()]).await;
    let runner = quick.clone();
    let run = tokio::spawn(async move { runner.run(std::future::pending()).await });
    wait_until(Duration::from_secs(1), || async { quick.in_flight() == 2 }).await;
    quick.shutdown();
    let stopped = run.await.unwrap().unwrap();
    assert_eq!((stopped.in_flight, stopped.interrupted), (2, 0));
    assert!(all_have(&store, &ids, TaskStatus::Succeeded).await);

    // Runs of 100 s, grace of 1 s: interrupted, released, queued again with attempts kept.
    let slow = build(100_000, 1.0);
    let mut events = slow.subscribe();
    let id = slow
        .submit(NewTask::new("default", "count slowly"))
        .await
        .unwrap()
        .id;
    let runner = slow.clone();
    let started = tokio::time::Instant::now();
    let run = tokio::spawn(async move { runner.run(std::future::pending()).await });
    wait_until(Duration::from_secs(1), || async { slow.in_flight() == 1 }).await;
    slow.shutdown();
    let stopped = run.await.unwrap().unwrap();
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!((stopped.interrupted, stopped.released), (1, 1));
    let t = store.get(&id).await.unwrap().unwrap();
    assert_eq!((t.status, t.attempts), (TaskStatus::Queued, 1));
    let events = drain(&mut events);
    assert!(
        events
            .iter()
            .any(|e| matches!(e, ClusterEvent::TaskInterrupted { .. }))
    );
    assert!(matches!(
        events.last(),
        Some(ClusterEvent::Stopped { released: 1 })
    ));
    // A stopped worker does not claim again: the task stays queued.
    assert!(slow.run(std::future::ready(())).await.is_ok());
    assert_eq!(status(&store, &id).await, TaskStatus::Queued);
}

#[tokio::test(start_paused = true)]
async fn the_autoscaler_adds_instances_under_load_and_removes_them_when_idle() {
    let store = memory_store(StoreOptions::new());
    let counter = Counter::default();
    let c = counter.clone();
    let cluster = Cluster::builder(store.clone())
        .config(ClusterConfig {
            min_instances: 1,
            max_instances: 4,
            instance_concurrency: 2,
            scale_stable_checks: 2,
            cool_down_secs: 15.0,
            selection: Selection::Weighted,
            ..config()
        })
        .agent("default")
        .seed(9)
        .factory(move |name| {
            let sim = SimConfig {
                latency_ms: 30_000,
                ..SimConfig::default()
            };
            Ok(counting_agent(name, &c, sim))
        })
        .build()
        .unwrap();
    let mut events = cluster.subscribe();
    let ids = submit_all(&cluster, (0..16).map(|i| format!("count {i}"))).await;
    let runner = cluster.clone();
    let run = tokio::spawn(async move { runner.run(std::future::pending()).await });
    wait_until(Duration::from_secs(120), || async {
        cluster.pool().instances().len() == 4
    })
    .await;
    let report = cluster.report().await.unwrap();
    assert_eq!(report.overview.total_instances, 4);
    wait_until(Duration::from_secs(900), || {
        all_have(&store, &ids, TaskStatus::Succeeded)
    })
    .await;
    wait_until(Duration::from_secs(600), || async {
        cluster.pool().instances().len() == 1
    })
    .await;
    let scaled: Vec<(ScaleDecision, u32, u32)> = drain(&mut events)
        .into_iter()
        .filter_map(|e| match e {
            ClusterEvent::Scaled {
                decision, from, to, ..
            } => Some((decision, from, to)),
            _ => None,
        })
        .collect();
    assert_eq!(scaled[0], (ScaleDecision::ScaleUp, 1, 4), "{scaled:?}");
    assert_eq!(
        &scaled[1..],
        &[
            (ScaleDecision::ScaleDown, 4, 3),
            (ScaleDecision::ScaleDown, 3, 2),
            (ScaleDecision::ScaleDown, 2, 1)
        ],
        "{scaled:?}"
    );
    assert_eq!(counter.total(), 16);
    cluster.shutdown();
    run.await.unwrap().unwrap();
}

/// A run waiting for a person's approval makes no progress, but its instance is not failed
/// for silence while the wait is declared.
#[tokio::test(start_paused = true)]
async fn a_run_waiting_for_approval_is_not_taken_for_a_silent_instance() {
    let store = memory_store(StoreOptions::new());
    let hang = Arc::new(AtomicBool::new(true));
    let h = hang.clone();
    let cluster = Cluster::builder(store.clone())
        .config(config())
        .agent("default")
        .factory(move |name| {
            Ok(Agent::builder(HangOnce { hang: h.clone() })
                .name(name)
                .build()?)
        })
        .build()
        .unwrap();
    let id = cluster
        .submit(NewTask::new("default", "hello"))
        .await
        .unwrap()
        .id;
    let runner = cluster.clone();
    let run = tokio::spawn(async move { runner.run(std::future::pending()).await });
    wait_until(Duration::from_secs(5), || async {
        cluster.in_flight() == 1
    })
    .await;
    cluster.set_waiting(&id, true).await.unwrap();
    assert_eq!(status(&store, &id).await, TaskStatus::WaitingApproval);
    tokio::time::sleep(Duration::from_secs(600)).await;
    let instances = cluster.pool().instances();
    assert_eq!(instances.len(), 1);
    assert!(instances[0].is_up());
    assert_eq!(status(&store, &id).await, TaskStatus::WaitingApproval);
    // The wait ends but the run stays stuck: now it is silent.
    cluster.set_waiting(&id, false).await.unwrap();
    wait_until(Duration::from_secs(300), || async {
        status(&store, &id).await == TaskStatus::Succeeded
    })
    .await;
    assert_eq!(store.get(&id).await.unwrap().unwrap().attempts, 2);
    cluster.shutdown();
    run.await.unwrap().unwrap();
}

/// With an agent breaker, an agent whose runs keep failing stops taking tasks while the
/// breaker is open, so queued tasks keep their attempts instead of being dead-lettered.
#[tokio::test(start_paused = true)]
async fn an_open_agent_breaker_stops_claims_until_its_cool_down() {
    let store = memory_store(StoreOptions::new());
    let hub = pocket_resilience::ResilienceHub::new();
    let cluster = Cluster::builder(store.clone())
        .config(ClusterConfig {
            instance_concurrency: 1,
            ..config()
        })
        .agent("default")
        .resilience(hub.clone())
        .agent_breaker(pocket_resilience::BreakerPolicy {
            consecutive_failures: 2,
            cool_down: Duration::from_secs(60),
            ..pocket_resilience::BreakerPolicy::default()
        })
        .factory(|name| {
            let down = || ModelError::Server {
                status: 503,
                message: "down".into(),
                retry_after: None,
            };
            Ok(Agent::builder(Failing(down)).name(name).build()?)
        })
        .build()
        .unwrap();
    let ids = submit_all(&cluster, (0..5).map(|i| format!("task {i}"))).await;
    let runner = cluster.clone();
    let run = tokio::spawn(async move { runner.run(std::future::pending()).await });
    tokio::time::sleep(Duration::from_secs(30)).await;
    let mut attempts = 0;
    for id in &ids {
        attempts += store.get(id).await.unwrap().unwrap().attempts;
    }
    assert_eq!(
        attempts, 2,
        "two failures opened the breaker; nothing else was claimed"
    );
    let breaker = hub
        .breaker(pocket_resilience::Component::Agent, "default")
        .unwrap();
    assert_eq!(breaker.state(), pocket_resilience::BreakerState::Open);
    assert!(cluster.pool().instances()[0].breaker_open);
    // After the cool-down one probe runs (and fails: the breaker opens again).
    tokio::time::sleep(Duration::from_secs(45)).await;
    let mut attempts = 0;
    for id in &ids {
        attempts += store.get(id).await.unwrap().unwrap().attempts;
    }
    assert_eq!(attempts, 3);
    cluster.shutdown();
    run.await.unwrap().unwrap();
}

/// Many producers at once against a bounded queue: exactly `max_queued` tasks get in, the
/// rest are refused with a retry hint, and a running worker never holds more tasks than its
/// slots.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queue_and_the_worker_stay_bounded_under_a_flood() {
    let config = ClusterConfig {
        max_queued: 100,
        min_instances: 2,
        max_instances: 2,
        instance_concurrency: 4,
        ..config()
    };
    let store: Arc<dyn TaskStore> = Arc::new(MemoryStore::new(config.store_options()));
    let counter = Counter::default();
    let c = counter.clone();
    let cluster = Cluster::builder(store.clone())
        .config(config)
        .agent("default")
        .factory(move |name| {
            let sim = SimConfig {
                latency_ms: 2,
                ..SimConfig::default()
            };
            Ok(counting_agent(name, &c, sim))
        })
        .build()
        .unwrap();
    let mut producers = tokio::task::JoinSet::new();
    for p in 0..8 {
        let cluster = cluster.clone();
        producers.spawn(async move {
            let (mut accepted, mut refused) = (0u32, 0u32);
            for i in 0..500 {
                match cluster
                    .submit(NewTask::new("default", format!("count {p}-{i}")))
                    .await
                {
                    Ok(_) => accepted += 1,
                    Err(StoreError::QueueFull { retry_after, .. }) => {
                        assert!(retry_after > Duration::ZERO);
                        refused += 1;
                    }
                    Err(e) => panic!("{e}"),
                }
            }
            (accepted, refused)
        });
    }
    let mut accepted = 0;
    while let Some(r) = producers.join_next().await {
        let (a, r) = r.unwrap();
        accepted += a;
        assert_eq!(a + r, 500);
    }
    assert_eq!(accepted, 100);

    let runner = cluster.clone();
    let run = tokio::spawn(async move { runner.run(std::future::pending()).await });
    let mut peak = 0;
    while counter.total() < 100 {
        peak = peak.max(cluster.in_flight());
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert!(peak <= 8, "held {peak} tasks with 8 slots");
    cluster.shutdown();
    run.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn the_gauges_follow_the_queue_and_the_instances() {
    let store = memory_store(StoreOptions::new());
    let metrics = pocket_monitor::Metrics::new();
    let counter = Counter::default();
    let cluster = Cluster::builder(store.clone())
        .config(ClusterConfig {
            min_instances: 2,
            ..config()
        })
        .agent("default")
        .metrics(metrics.clone())
        .factory(move |name| Ok(counting_agent(name, &counter, SimConfig::default())))
        .build()
        .unwrap();
    // Tasks of an agent nobody serves stay queued.
    for i in 0..3 {
        cluster
            .submit(NewTask::new("other", format!("task {i}")))
            .await
            .unwrap();
    }
    let runner = cluster.clone();
    let run = tokio::spawn(async move { runner.run(std::future::pending()).await });
    tokio::time::sleep(Duration::from_secs(11)).await;
    assert_eq!(metrics.queue_depth(), 3);
    let text = metrics.encode();
    assert!(
        text.contains(r#"pocket_instances{status="active"} 2"#),
        "{text}"
    );
    assert!(
        text.contains(r#"pocket_instances{status="failed"} 0"#),
        "{text}"
    );
    cluster.shutdown();
    run.await.unwrap().unwrap();
}

/// The same worker on the embedded SQLite store (real time): every task once, and a second
/// worker finishes what a crashed first one left, resuming from the file.
#[cfg(feature = "sqlite")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_sqlite_a_second_worker_finishes_what_a_crashed_one_left() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("pocket.db").display());
    let store: Arc<dyn TaskStore> = Arc::new(
        pocket_cluster::SqliteStore::open(&url, StoreOptions::new())
            .await
            .unwrap(),
    );
    let counts = Counter::default();
    let waits = Counter::default();
    let worker = |id: &str, hang: bool| {
        let (counts, waits) = (counts.clone(), waits.clone());
        Cluster::builder(store.clone())
            .config(ClusterConfig {
                worker_id: Some(id.into()),
                lease_secs: 1.0,
                heartbeat_secs: 0.2,
                ..config()
            })
            .agent("default")
            .factory(move |name| {
                Ok(Agent::builder(SimModel::default())
                    .name(name)
                    .tool(CountTool(counts.clone()))
                    .tool(WaitTool {
                        hang,
                        counter: waits.clone(),
                    })
                    .build()?)
            })
            .build()
            .unwrap()
    };
    let a = worker("a", true);
    let ids = submit_all(&a, (0..10).map(|i| format!("count and wait {i}"))).await;
    let runner = a.clone();
    let crashed = tokio::spawn(async move { runner.run(std::future::pending()).await });
    wait_until(Duration::from_secs(30), || async {
        ids.iter()
            .all(|id| counts.get(&id.0) == 1 && waits.get(&id.0) == 1)
    })
    .await;
    crashed.abort();
    let _ = crashed.await;

    let b = worker("b", false);
    let runner = b.clone();
    let second = tokio::spawn(async move { runner.run(std::future::pending()).await });
    wait_until(Duration::from_secs(30), || {
        all_have(&store, &ids, TaskStatus::Succeeded)
    })
    .await;
    for id in &ids {
        assert_eq!(counts.get(&id.0), 1, "count ran again for {id}");
        assert_eq!(store.get(id).await.unwrap().unwrap().attempts, 2);
    }
    b.shutdown();
    second.await.unwrap().unwrap();
}
