//! One conformance suite for every `TaskStore`: each case runs against the memory store,
//! SQLite (a temporary file) and, when `POCKET_TEST_POSTGRES_URL` is set, PostgreSQL (a fresh
//! schema per case). Time moves only through the manual clock.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use pocket_agent::Message;
use pocket_cluster::store::{
    FailOutcome, NewTask, StoreError, StoreOptions, TaskFilter, TaskId, TaskStatus, TaskStore,
};
use serde_json::json;
use support::{Backend, State, count, finished, start, started};

const LEASE: Duration = Duration::from_secs(30);

fn caps(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| (*s).to_owned()).collect()
}

fn any() -> Vec<String> {
    Vec::new()
}

async fn claim_one(store: &dyn TaskStore, worker: &str) -> Option<pocket_cluster::Claimed> {
    let mut claimed = store.claim(worker, &any(), &any(), 1, LEASE).await.unwrap();
    assert!(claimed.len() <= 1);
    claimed.pop()
}

async fn status(store: &dyn TaskStore, id: &TaskId) -> TaskStatus {
    store.get(id).await.unwrap().expect("task exists").status
}

fn assert_lease_lost<T: std::fmt::Debug>(result: Result<T, StoreError>) {
    match result {
        Err(StoreError::LeaseLost { .. }) => {}
        other => panic!("expected LeaseLost, got {other:?}"),
    }
}

/// Runs each case against every backend: `memory::case`, `sqlite::case`, `postgres::case`.
macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(super::Backend::Memory).await;
                }
            )*
        }

        #[cfg(feature = "sqlite")]
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(super::Backend::Sqlite).await;
                }
            )*
        }

        #[cfg(feature = "postgres")]
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    // Skipped (and said so once) without POCKET_TEST_POSTGRES_URL.
                    if let Some(backend) = super::support::postgres() {
                        super::$case(backend).await;
                    }
                }
            )*
        }
    };
}

conformance!(
    enqueue_queues_the_task,
    duplicate_idempotency_key_returns_the_first_task,
    concurrent_duplicate_enqueues_create_one_task,
    claims_by_priority_then_fifo,
    claims_only_tasks_whose_capabilities_the_worker_has,
    claims_only_the_workers_agents,
    claim_respects_run_after,
    claim_starts_an_attempt_under_a_lease,
    concurrent_claimers_never_share_a_task,
    concurrent_lifecycles_batch_without_mixing_up_tasks,
    claim_resumes_from_the_last_checkpoint_and_journal,
    checkpoint_clears_the_journal_it_covers,
    heartbeat_extends_only_leases_the_worker_holds,
    writes_by_a_non_owner_are_lease_lost,
    unknown_task_is_not_found,
    set_waiting_round_trips,
    complete_stores_the_result_and_ends_the_lease,
    fail_with_retry_queues_again_for_later,
    fail_on_the_last_attempt_dead_letters,
    cancel_stops_queued_and_running_tasks,
    release_makes_running_tasks_claimable_at_once,
    reclaim_expired_requeues_after_the_lease,
    reclaim_expired_dead_letters_the_last_attempt,
    stats_count_by_status_and_queued_priority,
    max_queued_pushes_back_with_queue_full,
    list_filters_newest_first,
    bad_input_is_invalid,
    nul_characters_in_run_state_round_trip,
    two_stores_on_one_database_share_one_queue,
    stores_work_inside_spawned_tasks,
);

async fn enqueue_queues_the_task(backend: Backend) {
    let h = backend.open(StoreOptions::new()).await;
    let task = NewTask {
        priority: 7,
        capabilities: caps(&["gpu", "net"]),
        idempotency_key: Some("k-1".into()),
        max_attempts: 5,
        metadata: json!({"history": [{"role": "user", "content": "hi"}], "n": 1}),
        ..NewTask::new("support", "Summarise ticket 42")
    };
    let done = h.store.enqueue(task).await.unwrap();
    assert!(done.created);

    let record = h.store.get(&done.id).await.unwrap().unwrap();
    assert_eq!(record.id, done.id);
    assert_eq!(record.agent, "support");
    assert_eq!(record.task, "Summarise ticket 42");
    assert_eq!(record.priority, 7);
    assert_eq!(record.capabilities, caps(&["gpu", "net"]));
    assert_eq!(record.idempotency_key.as_deref(), Some("k-1"));
    assert_eq!(record.status, TaskStatus::Queued);
    assert_eq!((record.attempts, record.max_attempts), (0, 5));
    assert_eq!(record.result, None);
    assert_eq!(record.error, None);
    assert_eq!(record.metadata["history"][0]["content"], "hi");
    assert_eq!(record.created_at, start());
    assert_eq!(record.updated_at, start());
    assert_eq!(record.run_after, start());
    assert_eq!(record.lease_owner, None);
    assert_eq!(record.lease_expires_at, None);

    // Defaults round-trip too: null metadata, no capabilities, no key.
    let plain = h.store.enqueue(NewTask::new("support", "x")).await.unwrap();
    let record = h.store.get(&plain.id).await.unwrap().unwrap();
    assert_eq!(record.metadata, serde_json::Value::Null);
    assert!(record.capabilities.is_empty());
    assert_eq!(record.idempotency_key, None);
    assert_ne!(plain.id, done.id);
}

async fn duplicate_idempotency_key_returns_the_first_task(backend: Backend) {
    let h = backend.open(StoreOptions::new()).await;
    let keyed = |text: &str| NewTask {
        idempotency_key: Some("order-7".into()),
        ..NewTask::new("support", text)
    };
    let first = h.store.enqueue(keyed("first")).await.unwrap();
    let again = h.store.enqueue(keyed("second")).await.unwrap();
    assert!(first.created);
    assert!(!again.created);
    assert_eq!(again.id, first.id);

    let all = h.store.list(&TaskFilter::default()).await.unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].task, "first");

    // The key still holds once the task finished.
    let claimed = claim_one(&*h.store, "w").await.unwrap();
    h.store
        .complete(&claimed.record.id, "w", json!("ok"))
        .await
        .unwrap();
    let later = h.store.enqueue(keyed("third")).await.unwrap();
    assert_eq!((later.id, later.created), (first.id, false));
}

async fn concurrent_duplicate_enqueues_create_one_task(backend: Backend) {
    let h = backend.open(StoreOptions::new()).await;
    let mut joins = Vec::new();
    for i in 0..16 {
        let store = Arc::clone(&h.store);
        joins.push(tokio::spawn(async move {
            store
                .enqueue(NewTask {
                    idempotency_key: Some("same".into()),
                    ..NewTask::new("support", format!("copy {i}"))
                })
                .await
                .unwrap()
        }));
    }
    let mut results = Vec::new();
    for join in joins {
        results.push(join.await.unwrap());
    }
    assert_eq!(results.iter().filter(|r| r.created).count(), 1);
    let ids: HashSet<_> = results.iter().map(|r| r.id.clone()).collect();
    assert_eq!(ids.len(), 1);
    assert_eq!(h.store.list(&TaskFilter::default()).await.unwrap().len(), 1);
}

async fn claims_by_priority_then_fifo(backend: Backend) {
    let h = backend.open(StoreOptions::new()).await;
    let mut ids = Vec::new();
    for (name, priority) in [("a", 0), ("b", 5), ("c", 0), ("d", 5), ("e", -3), ("f", 9)] {
        let id = h
            .store
            .enqueue(NewTask {
                priority,
                ..NewTask::new("agent", name)
            })
            .await
            .unwrap()
            .id;
        ids.push(id);
        // Same millisecond for some, later for others: order must not depend on the clock.
        if name == "c" {
            h.clock.advance(Duration::from_millis(1));
        }
    }
    let mut order = Vec::new();
    while let Some(claimed) = claim_one(&*h.store, "w").await {
        order.push(claimed.record.task);
    }
    assert_eq!(order, ["f", "b", "d", "a", "c", "e"]);

    // A batch claim comes back in the same order.
    let h = backend.open(StoreOptions::new()).await;
    for (name, priority) in [("a", 0), ("b", 5), ("c", 0), ("d", 5)] {
        h.store
            .enqueue(NewTask {
                priority,
                ..NewTask::new("agent", name)
            })
            .await
            .unwrap();
    }
    let batch = h.store.claim("w", &any(), &any(), 3, LEASE).await.unwrap();
    let names: Vec<_> = batch.iter().map(|c| c.record.task.as_str()).collect();
    assert_eq!(names, ["b", "d", "a"]);
}

async fn claims_only_tasks_whose_capabilities_the_worker_has(backend: Backend) {
    let h = backend.open(StoreOptions::new()).await;
    let gpu = h
        .store
        .enqueue(NewTask {
            capabilities: caps(&["gpu", "net"]),
            priority: 1,
            ..NewTask::new("agent", "needs gpu+net")
        })
        .await
        .unwrap()
        .id;
    let plain = h
        .store
        .enqueue(NewTask::new("agent", "needs nothing"))
        .await
        .unwrap()
        .id;

    // A worker without the capabilities skips the higher-priority task.
    let got = h
        .store
        .claim("cpu", &any(), &caps(&["net"]), 5, LEASE)
        .await
        .unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].record.id, plain);

    let got = h
        .store
        .claim("big", &any(), &caps(&["disk", "net", "gpu"]), 5, LEASE)
        .await
        .unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].record.id, gpu);
}

async fn claims_only_the_workers_agents(backend: Backend) {
    let h = backend.open(StoreOptions::new()).await;
    let a = h
        .store
        .enqueue(NewTask::new("alpha", "1"))
        .await
        .unwrap()
        .id;
    let b = h.store.enqueue(NewTask::new("beta", "2")).await.unwrap().id;
    let g = h
        .store
        .enqueue(NewTask::new("gamma", "3"))
        .await
        .unwrap()
        .id;

    let got = h
        .store
        .claim("w", &caps(&["beta", "delta"]), &any(), 10, LEASE)
        .await
        .unwrap();
    assert_eq!(got.iter().map(|c| &c.record.id).collect::<Vec<_>>(), [&b]);

    // No agents named: any agent.
    let got = h.store.claim("w", &any(), &any(), 10, LEASE).await.unwrap();
    assert_eq!(
        got.iter().map(|c| &c.record.id).collect::<Vec<_>>(),
        [&a, &g]
    );
}

async fn claim_respects_run_after(backend: Backend) {
    let h = backend.open(StoreOptions::new()).await;
    let id = h
        .store
        .enqueue(NewTask::new("agent", "t"))
        .await
        .unwrap()
        .id;
    let claimed = claim_one(&*h.store, "w").await.unwrap();
    let outcome = h
        .store
        .fail(&id, "w", "model overloaded", Some(Duration::from_secs(10)))
        .await
        .unwrap();
    assert_eq!(
        outcome,
        FailOutcome::Retrying {
            at: start() + Duration::from_secs(10)
        }
    );
    assert_eq!(claimed.record.attempts, 1);

    assert!(claim_one(&*h.store, "w").await.is_none());
    h.clock.advance(Duration::from_millis(9_999));
    assert!(claim_one(&*h.store, "w").await.is_none());
    h.clock.advance(Duration::from_millis(1));
    let again = claim_one(&*h.store, "w").await.expect("due now");
    assert_eq!(again.record.id, id);
    assert_eq!(again.record.attempts, 2);
}

async fn claim_starts_an_attempt_under_a_lease(backend: Backend) {
    let h = backend.open(StoreOptions::new()).await;
    let id = h
        .store
        .enqueue(NewTask::new("agent", "t"))
        .await
        .unwrap()
        .id;
    h.clock.advance(Duration::from_secs(2));
    let claimed = claim_one(&*h.store, "worker-1").await.unwrap();
    let now = start() + Duration::from_secs(2);
    assert_eq!(claimed.record.id, id);
    assert_eq!(claimed.record.status, TaskStatus::Running);
    assert_eq!(claimed.record.attempts, 1);
    assert_eq!(claimed.record.lease_owner.as_deref(), Some("worker-1"));
    assert_eq!(claimed.record.lease_expires_at, Some(now + LEASE));
    assert_eq!(claimed.record.updated_at, now);
    assert_eq!(
        claimed.resume, None,
        "a first attempt has nothing to resume"
    );
    assert_eq!(h.store.get(&id).await.unwrap().unwrap(), claimed.record);
    // Nothing left to claim; limit 0 claims nothing.
    assert!(claim_one(&*h.store, "worker-2").await.is_none());
    h.store.enqueue(NewTask::new("agent", "u")).await.unwrap();
    assert!(
        h.store
            .claim("w", &any(), &any(), 0, LEASE)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn concurrent_claimers_never_share_a_task(backend: Backend) {
    let h = backend.open(StoreOptions::new()).await;
    const TASKS: usize = 120;
    for i in 0..TASKS {
        h.store
            .enqueue(NewTask {
                priority: (i % 3) as i32,
                ..NewTask::new("agent", format!("t{i}"))
            })
            .await
            .unwrap();
    }
    let mut joins = Vec::new();
    for w in 0..12 {
        let store = Arc::clone(&h.store);
        joins.push(tokio::spawn(async move {
            let worker = format!("w{w}");
            let mut mine = Vec::new();
            loop {
                let got = store.claim(&worker, &[], &[], 3, LEASE).await.unwrap();
                if got.is_empty() {
                    break;
                }
                for claimed in got {
                    assert_eq!(claimed.record.lease_owner.as_deref(), Some(worker.as_str()));
                    mine.push(claimed.record.id);
                }
                tokio::task::yield_now().await;
            }
            mine
        }));
    }
    let mut seen = HashSet::new();
    let mut total = 0;
    for join in joins {
        for id in join.await.unwrap() {
            total += 1;
            assert!(seen.insert(id.clone()), "task {id} claimed twice");
        }
    }
    assert_eq!(total, TASKS);
    let stats = h.store.stats().await.unwrap();
    assert_eq!(count(&stats, TaskStatus::Running), TASKS as u64);
}

/// Many workers at once, each: enqueue (half with a shared idempotency key), claim,
/// checkpoint twice, complete; one stranger writes on every task. The SQL stores merge such
/// concurrent writes into one statement per kind: each must still land on its own task.
async fn concurrent_lifecycles_batch_without_mixing_up_tasks(backend: Backend) {
    let h = backend.open(StoreOptions::new()).await;
    const WORKERS: usize = 24;
    let mut joins = Vec::new();
    for w in 0..WORKERS {
        let store = Arc::clone(&h.store);
        joins.push(tokio::spawn(async move {
            let worker = format!("w{w}");
            let key = (w % 2 == 0).then(|| format!("pair-{}", w / 4));
            let queued = store
                .enqueue(NewTask {
                    priority: (w % 3) as i32,
                    idempotency_key: key.clone(),
                    ..NewTask::new("agent", format!("t{w}"))
                })
                .await
                .unwrap();
            let mut mine = Vec::new();
            loop {
                let got = store.claim(&worker, &[], &[], 2, LEASE).await.unwrap();
                if got.is_empty() {
                    break;
                }
                let priorities: Vec<i32> = got.iter().map(|c| c.record.priority).collect();
                let mut sorted = priorities.clone();
                sorted.sort_by(|a, b| b.cmp(a));
                assert_eq!(
                    priorities, sorted,
                    "a claim's tasks come highest priority first"
                );
                for claimed in got {
                    let id = claimed.record.id;
                    assert_eq!(claimed.record.lease_owner.as_deref(), Some(worker.as_str()));
                    assert_lease_lost(
                        store
                            .checkpoint(&id, "stranger", State::after(9).as_ref())
                            .await,
                    );
                    for step in 1..=2 {
                        store
                            .checkpoint(&id, &worker, State::after(step).as_ref())
                            .await
                            .unwrap();
                    }
                    assert_lease_lost(store.complete(&id, "stranger", json!("no")).await);
                    store
                        .complete(&id, &worker, json!({"by": worker, "task": id.0}))
                        .await
                        .unwrap();
                    mine.push(id);
                }
                tokio::task::yield_now().await;
            }
            (key, queued, mine)
        }));
    }
    let mut by_key = std::collections::HashMap::new();
    let mut created = 0;
    let mut done = HashSet::new();
    for join in joins {
        let (key, queued, mine) = join.await.unwrap();
        created += usize::from(queued.created);
        if let Some(key) = key {
            let first = by_key.entry(key).or_insert_with(|| queued.id.clone());
            assert_eq!(*first, queued.id, "one task per idempotency key");
        }
        for id in mine {
            assert!(done.insert(id.clone()), "task {id} claimed twice");
        }
    }
    // 12 keyless tasks and 6 keys (two workers each).
    assert_eq!(created, WORKERS / 2 + WORKERS / 4);
    assert_eq!(done.len(), created);
    for id in &done {
        let record = h.store.get(id).await.unwrap().unwrap();
        assert_eq!(record.status, TaskStatus::Succeeded);
        assert_eq!(record.result.unwrap()["task"], json!(id.0));
        assert_eq!(record.lease_owner, None);
    }
    let stats = h.store.stats().await.unwrap();
    assert_eq!(count(&stats, TaskStatus::Succeeded), created as u64);
    assert_eq!(count(&stats, TaskStatus::Queued), 0);
}

async fn claim_resumes_from_the_last_checkpoint_and_journal(backend: Backend) {
    let h = backend.open(StoreOptions::new()).await;
    let id = h
        .store
        .enqueue(NewTask::new("agent", "t"))
        .await
        .unwrap()
        .id;
    claim_one(&*h.store, "w1").await.unwrap();
    let state = State::after(2);
    h.store.checkpoint(&id, "w1", state.as_ref()).await.unwrap();
    h.store
        .journal(&id, "w1", &started("call-1"))
        .await
        .unwrap();
    h.store
        .journal(&id, "w1", &finished("call-1", "42"))
        .await
        .unwrap();
    h.store
        .journal(&id, "w1", &started("call-2"))
        .await
        .unwrap();

    // The worker dies; its lease runs out.
    h.clock.advance(LEASE);
    assert_eq!(h.store.reclaim_expired().await.unwrap(), 1);
    let claimed = claim_one(&*h.store, "w2").await.unwrap();
    assert_eq!(claimed.record.attempts, 2);
    let resume = claimed.resume.expect("resumes");
    let mut expected = state.as_ref().to_owned();
    expected.journal = vec![
        started("call-1"),
        finished("call-1", "42"),
        started("call-2"),
    ];
    assert_eq!(resume, expected);
    assert_eq!(resume.messages.last(), Some(&Message::assistant("turn 1")));
}

async fn checkpoint_clears_the_journal_it_covers(backend: Backend) {
    let h = backend.open(StoreOptions::new()).await;
    let id = h
        .store
        .enqueue(NewTask::new("agent", "t"))
        .await
        .unwrap()
        .id;
    claim_one(&*h.store, "w1").await.unwrap();
    h.store
        .checkpoint(&id, "w1", State::after(1).as_ref())
        .await
        .unwrap();
    h.store.journal(&id, "w1", &started("a")).await.unwrap();
    h.store
        .journal(&id, "w1", &finished("a", "done"))
        .await
        .unwrap();
    let state = State::after(2);
    h.clock.advance(Duration::from_secs(1));
    h.store.checkpoint(&id, "w1", state.as_ref()).await.unwrap();
    assert_eq!(
        h.store.get(&id).await.unwrap().unwrap().updated_at,
        start() + Duration::from_secs(1)
    );
    h.store.journal(&id, "w1", &started("b")).await.unwrap();

    assert_eq!(h.store.release("w1").await.unwrap(), 1);
    let resume = claim_one(&*h.store, "w2").await.unwrap().resume.unwrap();
    assert_eq!(resume.iterations, 2);
    assert_eq!(resume.messages, state.messages);
    assert_eq!(resume.journal, vec![started("b")]);
}

async fn heartbeat_extends_only_leases_the_worker_holds(backend: Backend) {
    let h = backend.open(StoreOptions::new()).await;
    let a = h
        .store
        .enqueue(NewTask::new("agent", "a"))
        .await
        .unwrap()
        .id;
    let b = h
        .store
        .enqueue(NewTask::new("agent", "b"))
        .await
        .unwrap()
        .id;
    let c = h
        .store
        .enqueue(NewTask::new("agent", "c"))
        .await
        .unwrap()
        .id;
    claim_one(&*h.store, "w1").await.unwrap(); // a
    claim_one(&*h.store, "w2").await.unwrap(); // b
    let unknown = TaskId("no-such-task".into());

    h.clock.advance(Duration::from_secs(20));
    let held = h
        .store
        .heartbeat(
            "w1",
            &[b.clone(), a.clone(), c.clone(), unknown],
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    assert_eq!(held, std::slice::from_ref(&a));
    let record = h.store.get(&a).await.unwrap().unwrap();
    assert_eq!(
        record.lease_expires_at,
        Some(start() + Duration::from_secs(80))
    );
    let other = h.store.get(&b).await.unwrap().unwrap();
    assert_eq!(other.lease_expires_at, Some(start() + LEASE));

    // Past b's lease but within a's: only b is reclaimed.
    h.clock.advance(Duration::from_secs(15));
    assert_eq!(h.store.reclaim_expired().await.unwrap(), 1);
    assert_eq!(status(&*h.store, &a).await, TaskStatus::Running);
    assert_eq!(status(&*h.store, &b).await, TaskStatus::Queued);
    assert!(
        h.store
            .heartbeat("w2", std::slice::from_ref(&b), LEASE)
            .await
            .unwrap()
            .is_empty()
    );

    // A finished task is not held any more.
    h.store.complete(&a, "w1", json!(1)).await.unwrap();
    assert!(
        h.store
            .heartbeat("w1", &[a], LEASE)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn writes_by_a_non_owner_are_lease_lost(backend: Backend) {
    let h = backend.open(StoreOptions::new()).await;
    let id = h
        .store
        .enqueue(NewTask::new("agent", "t"))
        .await
        .unwrap()
        .id;
    let queued = h
        .store
        .enqueue(NewTask::new("agent", "u"))
        .await
        .unwrap()
        .id;
    claim_one(&*h.store, "owner").await.unwrap();
    let state = State::after(1);
    let s = &*h.store;

    assert_lease_lost(s.checkpoint(&id, "thief", state.as_ref()).await);
    assert_lease_lost(s.journal(&id, "thief", &started("x")).await);
    assert_lease_lost(s.set_waiting(&id, "thief", true).await);
    assert_lease_lost(s.complete(&id, "thief", json!("stolen")).await);
    assert_lease_lost(s.fail(&id, "thief", "boom", None).await);
    // Nobody holds a queued task.
    assert_lease_lost(s.complete(&queued, "owner", json!("x")).await);

    match s.complete(&id, "thief", json!(0)).await {
        Err(e @ StoreError::LeaseLost { .. }) => {
            assert!(!e.is_retryable());
            assert!(e.to_string().contains("thief"));
        }
        other => panic!("expected LeaseLost, got {other:?}"),
    }
    let record = s.get(&id).await.unwrap().unwrap();
    assert_eq!(record.status, TaskStatus::Running);
    assert_eq!(record.lease_owner.as_deref(), Some("owner"));
    s.complete(&id, "owner", json!("mine")).await.unwrap();
}

async fn unknown_task_is_not_found(backend: Backend) {
    let h = backend.open(StoreOptions::new()).await;
    let id = TaskId("0190f1a2-0000-7000-8000-000000000000".into());
    assert_eq!(h.store.get(&id).await.unwrap(), None);
    assert!(matches!(
        h.store.cancel(&id).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        h.store.complete(&id, "w", json!(1)).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        h.store.checkpoint(&id, "w", State::after(1).as_ref()).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        h.store.journal(&id, "w", &started("c")).await,
        Err(StoreError::NotFound(_))
    ));
}

async fn set_waiting_round_trips(backend: Backend) {
    let h = backend.open(StoreOptions::new()).await;
    let id = h
        .store
        .enqueue(NewTask::new("agent", "t"))
        .await
        .unwrap()
        .id;
    claim_one(&*h.store, "w").await.unwrap();
    h.store.set_waiting(&id, "w", true).await.unwrap();
    assert_eq!(status(&*h.store, &id).await, TaskStatus::WaitingApproval);
    let stats = h.store.stats().await.unwrap();
    assert_eq!(count(&stats, TaskStatus::WaitingApproval), 1);
    assert_eq!(count(&stats, TaskStatus::Running), 0);
    // Still held while waiting: heartbeats and checkpoints work.
    assert_eq!(
        h.store
            .heartbeat("w", std::slice::from_ref(&id), LEASE)
            .await
            .unwrap(),
        std::slice::from_ref(&id)
    );
    h.store
        .checkpoint(&id, "w", State::after(1).as_ref())
        .await
        .unwrap();
    h.store.set_waiting(&id, "w", false).await.unwrap();
    assert_eq!(status(&*h.store, &id).await, TaskStatus::Running);
    h.store.set_waiting(&id, "w", true).await.unwrap();
    h.store.complete(&id, "w", json!("approved")).await.unwrap();
    assert_eq!(status(&*h.store, &id).await, TaskStatus::Succeeded);
}

async fn complete_stores_the_result_and_ends_the_lease(backend: Backend) {
    let h = backend.open(StoreOptions::new()).await;
    let id = h
        .store
        .enqueue(NewTask::new("agent", "t"))
        .await
        .unwrap()
        .id;
    claim_one(&*h.store, "w").await.unwrap();
    h.store
        .checkpoint(&id, "w", State::after(1).as_ref())
        .await
        .unwrap();
    h.clock.advance(Duration::from_secs(3));
    let output = json!({"answer": "42", "iterations": 1, "usage": {"input_tokens": 3}});
    h.store.complete(&id, "w", output.clone()).await.unwrap();

    let record = h.store.get(&id).await.unwrap().unwrap();
    assert_eq!(record.status, TaskStatus::Succeeded);
    assert_eq!(record.result, Some(output));
    assert_eq!(record.lease_owner, None);
    assert_eq!(record.lease_expires_at, None);
    assert_eq!(record.updated_at, start() + Duration::from_secs(3));
    // Finished once: a second completion, or any other write, is refused.
    assert_lease_lost(h.store.complete(&id, "w", json!("again")).await);
    assert_lease_lost(h.store.fail(&id, "w", "late", Some(LEASE)).await);
    assert!(claim_one(&*h.store, "w").await.is_none());
}

async fn fail_with_retry_queues_again_for_later(backend: Backend) {
    let h = backend.open(StoreOptions::new()).await;
    let id = h
        .store
        .enqueue(NewTask::new("agent", "t"))
        .await
        .unwrap()
        .id;
    claim_one(&*h.store, "w").await.unwrap();
    let state = State::after(3);
    h.store.checkpoint(&id, "w", state.as_ref()).await.unwrap();
    let outcome = h
        .store
        .fail(&id, "w", "rate limited", Some(Duration::from_millis(1500)))
        .await
        .unwrap();
    let at = start() + Duration::from_millis(1500);
    assert_eq!(outcome, FailOutcome::Retrying { at });

    let record = h.store.get(&id).await.unwrap().unwrap();
    assert_eq!(record.status, TaskStatus::Queued);
    assert_eq!(record.run_after, at);
    assert_eq!(record.error.as_deref(), Some("rate limited"));
    assert_eq!(record.lease_owner, None);
    assert_eq!(record.attempts, 1);
    assert_lease_lost(h.store.complete(&id, "w", json!(1)).await);

    // The next attempt resumes from the checkpoint.
    h.clock.advance(Duration::from_millis(1500));
    let claimed = claim_one(&*h.store, "w2").await.unwrap();
    assert_eq!(claimed.record.attempts, 2);
    assert_eq!(claimed.resume.unwrap().messages, state.messages);
}

async fn fail_on_the_last_attempt_dead_letters(backend: Backend) {
    let h = backend.open(StoreOptions::new()).await;
    let id = h
        .store
        .enqueue(NewTask {
            max_attempts: 2,
            ..NewTask::new("agent", "t")
        })
        .await
        .unwrap()
        .id;
    claim_one(&*h.store, "w").await.unwrap();
    let retry = Some(Duration::from_secs(1));
    assert!(matches!(
        h.store.fail(&id, "w", "first", retry).await.unwrap(),
        FailOutcome::Retrying { .. }
    ));
    h.clock.advance(Duration::from_secs(1));
    claim_one(&*h.store, "w").await.unwrap();
    h.store
        .checkpoint(&id, "w", State::after(1).as_ref())
        .await
        .unwrap();
    assert_eq!(
        h.store.fail(&id, "w", "second", retry).await.unwrap(),
        FailOutcome::DeadLetter
    );
    let record = h.store.get(&id).await.unwrap().unwrap();
    assert_eq!(record.status, TaskStatus::Failed);
    assert_eq!(record.error.as_deref(), Some("second"));
    assert_eq!(record.attempts, 2);
    assert_eq!(record.lease_owner, None);
    h.clock.advance(Duration::from_secs(60));
    assert!(claim_one(&*h.store, "w").await.is_none());

    // Without a retry delay the task fails at once, attempts left or not.
    let other = h
        .store
        .enqueue(NewTask::new("agent", "u"))
        .await
        .unwrap()
        .id;
    claim_one(&*h.store, "w").await.unwrap();
    assert_eq!(
        h.store
            .fail(&other, "w", "not retryable", None)
            .await
            .unwrap(),
        FailOutcome::DeadLetter
    );
    assert_eq!(status(&*h.store, &other).await, TaskStatus::Failed);
}

async fn cancel_stops_queued_and_running_tasks(backend: Backend) {
    let h = backend.open(StoreOptions::new()).await;
    let running = h
        .store
        .enqueue(NewTask {
            priority: 1,
            ..NewTask::new("agent", "running")
        })
        .await
        .unwrap()
        .id;
    let queued = h
        .store
        .enqueue(NewTask::new("agent", "queued"))
        .await
        .unwrap()
        .id;
    claim_one(&*h.store, "w").await.unwrap();

    assert!(h.store.cancel(&queued).await.unwrap());
    assert_eq!(status(&*h.store, &queued).await, TaskStatus::Cancelled);
    assert!(claim_one(&*h.store, "w2").await.is_none());

    h.clock.advance(Duration::from_secs(1));
    assert!(h.store.cancel(&running).await.unwrap());
    let record = h.store.get(&running).await.unwrap().unwrap();
    assert_eq!(record.status, TaskStatus::Cancelled);
    assert_eq!(record.lease_owner, None);
    assert_eq!(record.updated_at, start() + Duration::from_secs(1));
    // The worker finds out on its next write.
    assert_lease_lost(
        h.store
            .checkpoint(&running, "w", State::after(1).as_ref())
            .await,
    );
    assert_lease_lost(h.store.complete(&running, "w", json!("late")).await);
    assert!(
        h.store
            .heartbeat("w", std::slice::from_ref(&running), LEASE)
            .await
            .unwrap()
            .is_empty()
    );

    // Finished tasks stay as they are.
    assert!(!h.store.cancel(&running).await.unwrap());
    let done = h
        .store
        .enqueue(NewTask::new("agent", "done"))
        .await
        .unwrap()
        .id;
    claim_one(&*h.store, "w").await.unwrap();
    h.store.complete(&done, "w", json!("ok")).await.unwrap();
    assert!(!h.store.cancel(&done).await.unwrap());
    assert_eq!(status(&*h.store, &done).await, TaskStatus::Succeeded);

    // A scheduled retry can be cancelled too.
    let retrying = h
        .store
        .enqueue(NewTask::new("agent", "retrying"))
        .await
        .unwrap()
        .id;
    claim_one(&*h.store, "w").await.unwrap();
    h.store
        .fail(&retrying, "w", "x", Some(LEASE))
        .await
        .unwrap();
    assert!(h.store.cancel(&retrying).await.unwrap());
    h.clock.advance(LEASE);
    assert!(claim_one(&*h.store, "w").await.is_none());
}

async fn release_makes_running_tasks_claimable_at_once(backend: Backend) {
    let h = backend.open(StoreOptions::new()).await;
    for i in 0..3 {
        h.store
            .enqueue(NewTask::new("agent", format!("t{i}")))
            .await
            .unwrap();
    }
    let mine = h
        .store
        .claim("leaving", &any(), &any(), 2, LEASE)
        .await
        .unwrap();
    let theirs = claim_one(&*h.store, "staying").await.unwrap();
    h.store
        .set_waiting(&mine[1].record.id, "leaving", true)
        .await
        .unwrap();
    h.clock.advance(Duration::from_secs(1));

    assert_eq!(h.store.release("leaving").await.unwrap(), 2);
    assert_eq!(h.store.release("nobody").await.unwrap(), 0);
    for claimed in &mine {
        let record = h.store.get(&claimed.record.id).await.unwrap().unwrap();
        assert_eq!(record.status, TaskStatus::Queued);
        assert_eq!(record.lease_owner, None);
        assert_eq!(record.run_after, start() + Duration::from_secs(1));
        assert_eq!(record.attempts, 1, "attempts already counted stay counted");
    }
    assert_eq!(
        status(&*h.store, &theirs.record.id).await,
        TaskStatus::Running
    );

    // Claimable at once, without moving the clock.
    let again = h
        .store
        .claim("next", &any(), &any(), 5, LEASE)
        .await
        .unwrap();
    let mut got: Vec<_> = again.iter().map(|c| c.record.id.clone()).collect();
    let mut want: Vec<_> = mine.iter().map(|c| c.record.id.clone()).collect();
    got.sort();
    want.sort();
    assert_eq!(got, want);
    assert!(again.iter().all(|c| c.record.attempts == 2));
    assert_lease_lost(
        h.store
            .complete(&mine[0].record.id, "leaving", json!(1))
            .await,
    );
}

async fn reclaim_expired_requeues_after_the_lease(backend: Backend) {
    let h = backend.open(StoreOptions::new()).await;
    let id = h
        .store
        .enqueue(NewTask::new("agent", "t"))
        .await
        .unwrap()
        .id;
    claim_one(&*h.store, "dead").await.unwrap();

    h.clock.advance(LEASE - Duration::from_millis(1));
    assert_eq!(h.store.reclaim_expired().await.unwrap(), 0);
    assert_eq!(status(&*h.store, &id).await, TaskStatus::Running);
    h.clock.advance(Duration::from_millis(1));
    assert_eq!(h.store.reclaim_expired().await.unwrap(), 1);
    assert_eq!(h.store.reclaim_expired().await.unwrap(), 0);

    let record = h.store.get(&id).await.unwrap().unwrap();
    assert_eq!(record.status, TaskStatus::Queued);
    assert_eq!(record.lease_owner, None);
    assert_eq!(record.run_after, start() + LEASE);
    assert!(record.error.is_some());

    let claimed = claim_one(&*h.store, "alive").await.unwrap();
    assert_eq!(claimed.record.attempts, 2);
    // The old worker wakes up: too late.
    assert_lease_lost(h.store.complete(&id, "dead", json!("stale")).await);
    h.store
        .complete(&id, "alive", json!("fresh"))
        .await
        .unwrap();
}

async fn reclaim_expired_dead_letters_the_last_attempt(backend: Backend) {
    let h = backend.open(StoreOptions::new()).await;
    let id = h
        .store
        .enqueue(NewTask {
            max_attempts: 1,
            ..NewTask::new("agent", "poison")
        })
        .await
        .unwrap()
        .id;
    claim_one(&*h.store, "w").await.unwrap();
    h.clock.advance(LEASE);
    assert_eq!(h.store.reclaim_expired().await.unwrap(), 1);
    let record = h.store.get(&id).await.unwrap().unwrap();
    assert_eq!(record.status, TaskStatus::Failed);
    assert!(record.error.is_some());
    assert!(claim_one(&*h.store, "w").await.is_none());
}

async fn stats_count_by_status_and_queued_priority(backend: Backend) {
    let h = backend.open(StoreOptions::new()).await;
    let empty = h.store.stats().await.unwrap();
    assert_eq!(empty.by_status, TaskStatus::ALL.map(|s| (s, 0)).to_vec());
    assert!(empty.queued_by_priority.is_empty());

    for priority in [1, 5, 5, 0, 1, 5, 9] {
        h.store
            .enqueue(NewTask {
                priority,
                ..NewTask::new("agent", "t")
            })
            .await
            .unwrap();
    }
    // Claim the 9 and one 5; finish the 9; the 5 goes back for later (still queued).
    let nine = claim_one(&*h.store, "w").await.unwrap().record.id;
    let five = claim_one(&*h.store, "w").await.unwrap().record.id;
    let one = h.store.claim("w", &any(), &any(), 3, LEASE).await.unwrap();
    assert_eq!(one.len(), 3); // 5, 5, 1
    h.store.complete(&nine, "w", json!(1)).await.unwrap();
    h.store.fail(&five, "w", "x", Some(LEASE)).await.unwrap();
    h.store
        .set_waiting(&one[0].record.id, "w", true)
        .await
        .unwrap();
    h.store.cancel(&one[1].record.id).await.unwrap();
    h.store
        .fail(&one[2].record.id, "w", "x", None)
        .await
        .unwrap();

    let stats = h.store.stats().await.unwrap();
    assert_eq!(
        stats.by_status,
        vec![
            (TaskStatus::Queued, 3),
            (TaskStatus::Running, 0),
            (TaskStatus::WaitingApproval, 1),
            (TaskStatus::Succeeded, 1),
            (TaskStatus::Failed, 1),
            (TaskStatus::Cancelled, 1),
        ]
    );
    assert_eq!(stats.queued_by_priority, vec![(5, 1), (1, 1), (0, 1)]);
}

async fn max_queued_pushes_back_with_queue_full(backend: Backend) {
    let h = backend
        .open(
            StoreOptions::new()
                .max_queued(2)
                .queue_full_retry_after(Duration::from_millis(250)),
        )
        .await;
    let keyed = |key: &str| NewTask {
        idempotency_key: Some(key.into()),
        ..NewTask::new("agent", key)
    };
    let first = h.store.enqueue(keyed("a")).await.unwrap();
    h.store.enqueue(keyed("b")).await.unwrap();
    match h.store.enqueue(keyed("c")).await {
        Err(e @ StoreError::QueueFull { .. }) => {
            assert!(e.is_retryable());
            let StoreError::QueueFull { limit, retry_after } = e else {
                unreachable!()
            };
            assert_eq!(limit, 2);
            assert_eq!(retry_after, Duration::from_millis(250));
        }
        other => panic!("expected QueueFull, got {other:?}"),
    }
    // A duplicate still answers with the existing task when full.
    let again = h.store.enqueue(keyed("a")).await.unwrap();
    assert_eq!((again.id, again.created), (first.id, false));

    // Running tasks do not count against the queue.
    claim_one(&*h.store, "w").await.unwrap();
    assert!(h.store.enqueue(keyed("c")).await.unwrap().created);
    assert!(matches!(
        h.store.enqueue(keyed("d")).await,
        Err(StoreError::QueueFull { .. })
    ));
    let stats = h.store.stats().await.unwrap();
    assert_eq!(count(&stats, TaskStatus::Queued), 2);
}

async fn list_filters_newest_first(backend: Backend) {
    let h = backend.open(StoreOptions::new()).await;
    let mut ids = Vec::new();
    for (agent, text) in [("a", "1"), ("b", "2"), ("a", "3"), ("a", "4"), ("b", "5")] {
        ids.push(h.store.enqueue(NewTask::new(agent, text)).await.unwrap().id);
    }
    let texts = |records: Vec<pocket_cluster::TaskRecord>| -> Vec<String> {
        records.into_iter().map(|r| r.task).collect()
    };
    let all = h.store.list(&TaskFilter::default()).await.unwrap();
    assert_eq!(texts(all), ["5", "4", "3", "2", "1"]);

    let only_a = TaskFilter {
        agent: Some("a".into()),
        ..TaskFilter::default()
    };
    assert_eq!(texts(h.store.list(&only_a).await.unwrap()), ["4", "3", "1"]);

    // "1" runs, "2" succeeds.
    claim_one(&*h.store, "w").await.unwrap();
    claim_one(&*h.store, "w").await.unwrap();
    h.store.complete(&ids[1], "w", json!(2)).await.unwrap();
    let running_or_done = TaskFilter {
        statuses: vec![TaskStatus::Running, TaskStatus::Succeeded],
        ..TaskFilter::default()
    };
    assert_eq!(
        texts(h.store.list(&running_or_done).await.unwrap()),
        ["2", "1"]
    );
    let queued_a = TaskFilter {
        statuses: vec![TaskStatus::Queued],
        agent: Some("a".into()),
        limit: 1,
    };
    assert_eq!(texts(h.store.list(&queued_a).await.unwrap()), ["4"]);
    let limited = TaskFilter {
        limit: 2,
        ..TaskFilter::default()
    };
    assert_eq!(texts(h.store.list(&limited).await.unwrap()), ["5", "4"]);
    let nobody = TaskFilter {
        agent: Some("z".into()),
        ..TaskFilter::default()
    };
    assert!(h.store.list(&nobody).await.unwrap().is_empty());
}

async fn bad_input_is_invalid(backend: Backend) {
    let h = backend.open(StoreOptions::new()).await;
    let invalid = |r: Result<pocket_cluster::Enqueued, StoreError>| {
        assert!(matches!(r, Err(StoreError::Invalid(_))), "{r:?}");
    };
    invalid(h.store.enqueue(NewTask::new("", "t")).await);
    invalid(h.store.enqueue(NewTask::new("  ", "t")).await);
    invalid(
        h.store
            .enqueue(NewTask {
                max_attempts: 0,
                ..NewTask::new("a", "t")
            })
            .await,
    );
    invalid(
        h.store
            .enqueue(NewTask {
                idempotency_key: Some(String::new()),
                ..NewTask::new("a", "t")
            })
            .await,
    );
    invalid(
        h.store
            .enqueue(NewTask {
                capabilities: caps(&["gpu", ""]),
                ..NewTask::new("a", "t")
            })
            .await,
    );
    assert!(matches!(
        h.store.claim("", &any(), &any(), 1, LEASE).await,
        Err(StoreError::Invalid(_))
    ));
    assert!(
        h.store
            .list(&TaskFilter::default())
            .await
            .unwrap()
            .is_empty()
    );
}

/// Regression: PostgreSQL's JSONB refuses `\u0000`, which tool output may hold (a binary
/// file read by a tool); the stores keep JSON as text, so it round-trips everywhere.
async fn nul_characters_in_run_state_round_trip(backend: Backend) {
    let h = backend.open(StoreOptions::new()).await;
    let metadata = json!({"note": "a\u{0}b"});
    let id = h
        .store
        .enqueue(NewTask {
            metadata: metadata.clone(),
            ..NewTask::new("agent", "t")
        })
        .await
        .unwrap()
        .id;
    claim_one(&*h.store, "w").await.unwrap();
    let mut state = State::after(1);
    state
        .messages
        .push(Message::user("bytes: \u{0}\u{1}\u{7f}"));
    h.store.checkpoint(&id, "w", state.as_ref()).await.unwrap();
    h.store
        .journal(&id, "w", &finished("c", "\u{0}"))
        .await
        .unwrap();
    h.store.release("w").await.unwrap();
    let resume = claim_one(&*h.store, "w").await.unwrap().resume.unwrap();
    assert_eq!(resume.messages, state.messages);
    assert_eq!(resume.journal, vec![finished("c", "\u{0}")]);
    h.store.complete(&id, "w", json!("x\u{0}y")).await.unwrap();
    let record = h.store.get(&id).await.unwrap().unwrap();
    assert_eq!(record.result, Some(json!("x\u{0}y")));
    assert_eq!(record.metadata, metadata);
    // NUL in what the store indexes (agent, task text, key, capabilities) is refused.
    assert!(matches!(
        h.store.enqueue(NewTask::new("agent", "a\u{0}")).await,
        Err(StoreError::Invalid(_))
    ));
}

/// Two stores on one database (two processes on a SQLite file, two machines on PostgreSQL)
/// claim concurrently without sharing a task, and see each other's writes.
async fn two_stores_on_one_database_share_one_queue(backend: Backend) {
    let h = backend.open(StoreOptions::new()).await;
    let other = h.another().await;
    const TASKS: usize = 60;
    for i in 0..TASKS {
        let store = if i % 2 == 0 { &h.store } else { &other };
        store
            .enqueue(NewTask::new("agent", format!("t{i}")))
            .await
            .unwrap();
    }
    let mut joins = Vec::new();
    for (n, store) in [&h.store, &other, &h.store, &other].into_iter().enumerate() {
        let store = Arc::clone(store);
        joins.push(tokio::spawn(async move {
            let worker = format!("w{n}");
            let mut mine = Vec::new();
            loop {
                let got = store.claim(&worker, &[], &[], 2, LEASE).await.unwrap();
                if got.is_empty() {
                    break;
                }
                for claimed in got {
                    store
                        .complete(&claimed.record.id, &worker, json!(n))
                        .await
                        .unwrap();
                    mine.push(claimed.record.id);
                }
            }
            mine
        }));
    }
    let mut seen = HashSet::new();
    for join in joins {
        for id in join.await.unwrap() {
            assert!(seen.insert(id.clone()), "task {id} claimed twice");
        }
    }
    assert_eq!(seen.len(), TASKS);
    let stats = other.stats().await.unwrap();
    assert_eq!(count(&stats, TaskStatus::Succeeded), TASKS as u64);
}

/// SQLite only: the queue survives closing and reopening the file, migrations included.
#[cfg(feature = "sqlite")]
#[tokio::test]
async fn sqlite_store_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pocket.db");
    let path = path.to_str().unwrap();
    let first = pocket_cluster::store::SqliteStore::open(path, StoreOptions::new())
        .await
        .unwrap();
    let id = first.enqueue(NewTask::new("agent", "t")).await.unwrap().id;
    claim_one(&first, "w").await.unwrap();
    first
        .checkpoint(&id, "w", State::after(2).as_ref())
        .await
        .unwrap();
    first.journal(&id, "w", &started("c1")).await.unwrap();
    first.close().await;

    // The process died holding the lease; the next one opens the file by URL.
    let clock = pocket_cluster::ManualClock::new(std::time::SystemTime::now() + LEASE * 2);
    let second = pocket_cluster::store::SqliteStore::open(
        &format!("sqlite://{path}"),
        StoreOptions::new().clock(clock),
    )
    .await
    .unwrap();
    assert_eq!(second.reclaim_expired().await.unwrap(), 1);
    let claimed = claim_one(&second, "w2").await.unwrap();
    assert_eq!(claimed.record.id, id);
    let resume = claimed.resume.unwrap();
    assert_eq!(resume.iterations, 2);
    assert_eq!(resume.journal, vec![started("c1")]);
}

/// Memory only: finished tasks beyond `keep_finished` are dropped, oldest first.
#[tokio::test]
async fn memory_store_prunes_finished_tasks() {
    let h = Backend::Memory
        .open(StoreOptions::new().keep_finished(2))
        .await;
    let mut ids = Vec::new();
    for i in 0..4 {
        let id = h
            .store
            .enqueue(NewTask {
                idempotency_key: Some(format!("k{i}")),
                ..NewTask::new("agent", format!("t{i}"))
            })
            .await
            .unwrap()
            .id;
        claim_one(&*h.store, "w").await.unwrap();
        h.store.complete(&id, "w", json!(i)).await.unwrap();
        ids.push(id);
    }
    assert_eq!(h.store.get(&ids[0]).await.unwrap(), None);
    assert_eq!(h.store.get(&ids[1]).await.unwrap(), None);
    assert!(h.store.get(&ids[2]).await.unwrap().is_some());
    assert_eq!(h.store.list(&TaskFilter::default()).await.unwrap().len(), 2);
    let stats = h.store.stats().await.unwrap();
    assert_eq!(count(&stats, TaskStatus::Succeeded), 2);
    // The pruned task's key is free again.
    let again = h
        .store
        .enqueue(NewTask {
            idempotency_key: Some("k0".into()),
            ..NewTask::new("agent", "t0 again")
        })
        .await
        .unwrap();
    assert!(again.created);
}

/// Every store's futures are `Send`: opening (by URL) and using a store works inside
/// spawned tasks.
async fn stores_work_inside_spawned_tasks(backend: Backend) {
    let h = backend.open(StoreOptions::new()).await;
    let url = h.url().to_owned();
    let done = tokio::spawn(async move {
        let store = pocket_cluster::store::open(&url, StoreOptions::new())
            .await
            .unwrap();
        let id = store
            .enqueue(NewTask::new("spawned", "t"))
            .await
            .unwrap()
            .id;
        assert!(store.cancel(&id).await.unwrap());
        store.get(&id).await.unwrap().unwrap().status
    });
    assert_eq!(done.await.unwrap(), TaskStatus::Cancelled);
}

/// `open` picks the store by URL scheme and refuses others.
#[tokio::test]
async fn open_chooses_by_scheme() {
    let memory = pocket_cluster::store::open("memory:", StoreOptions::new())
        .await
        .unwrap();
    memory.enqueue(NewTask::new("a", "t")).await.unwrap();
    #[cfg(feature = "sqlite")]
    {
        let sqlite = pocket_cluster::store::open("sqlite::memory:", StoreOptions::new())
            .await
            .unwrap();
        let id = sqlite.enqueue(NewTask::new("a", "t")).await.unwrap().id;
        assert_eq!(status(&*sqlite, &id).await, TaskStatus::Queued);
    }
    for url in ["redis://localhost", "pocket.db"] {
        let err = match pocket_cluster::store::open(url, StoreOptions::new()).await {
            Err(err) => err,
            Ok(_) => panic!("`{url}` opened a store"),
        };
        assert!(matches!(err, StoreError::BadUrl(_)), "{err:?}");
        let message = err.to_string();
        assert!(message.starts_with("bad task store URL"), "{message}");
        assert!(message.contains(url), "{message}");
    }
}
