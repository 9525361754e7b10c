//! Task store throughput: a task's whole life in the store (enqueue, claim, a checkpoint
//! after each step, complete), one claim per task, in batches of 32, and among 16 or 64
//! concurrent workers, on the memory store, on SQLite (a WAL file in a temporary directory)
//! and, with `POCKET_BENCH_POSTGRES_URL` set, on PostgreSQL.
//!
//! `cargo bench -p pocket-cluster --bench store`

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use pocket_agent::{CheckpointRef, Message, ToolCallRecord, Usage};
use pocket_cluster::store::{MemoryStore, NewTask, SqliteStore, StoreOptions, TaskStore};
use serde_json::json;

const LEASE: Duration = Duration::from_secs(60);
const BATCH: usize = 32;

/// A step's state as an agent checkpoints it: a short conversation and one tool call.
struct Step {
    messages: Vec<Message>,
    tool_calls: Vec<ToolCallRecord>,
}

impl Step {
    fn new() -> Self {
        Self {
            messages: vec![
                Message::system("You are a support agent. Be brief and cite the ticket."),
                Message::user("Summarise ticket 42 and suggest a reply."),
                Message::assistant("Looking up ticket 42 first."),
                Message::user("Ticket 42: the export button fails with a 500 since Monday."),
                Message::assistant("The export fails server-side; suggest a workaround."),
            ],
            tool_calls: vec![ToolCallRecord {
                name: "lookup_ticket".into(),
                arguments: json!({"id": 42}),
                error: None,
                duration_secs: 0.012,
            }],
        }
    }

    fn as_ref(&self) -> CheckpointRef<'_> {
        CheckpointRef {
            messages: &self.messages,
            iterations: 2,
            usage: Usage {
                input_tokens: 420,
                output_tokens: 64,
            },
            tool_calls: &self.tool_calls,
        }
    }
}

/// Enqueues `n` tasks, claims them `batch` at a time, checkpoints and completes each.
async fn lifecycle(store: &dyn TaskStore, step: &Step, n: usize, batch: usize) {
    let mut ids = Vec::with_capacity(n);
    for _ in 0..n {
        ids.push(store.enqueue(NewTask::new("bench", "t")).await.unwrap().id);
    }
    let mut done = 0;
    while done < n {
        let claimed = store.claim("w", &[], &[], batch, LEASE).await.unwrap();
        assert!(!claimed.is_empty(), "claimed nothing");
        for task in claimed {
            let id = &task.record.id;
            store.checkpoint(id, "w", step.as_ref()).await.unwrap();
            store
                .complete(id, "w", json!({"answer": "ok"}))
                .await
                .unwrap();
            done += 1;
        }
    }
    black_box(ids);
}

/// One task's life among concurrent workers doing the same: enqueue, claim one, a checkpoint
/// after each of `steps` steps, complete.
async fn one_of_many(store: &dyn TaskStore, step: &Step, worker: &str, steps: usize) {
    store.enqueue(NewTask::new("bench", "t")).await.unwrap();
    loop {
        if let Some(task) = store.claim(worker, &[], &[], 1, LEASE).await.unwrap().pop() {
            let id = &task.record.id;
            for _ in 0..steps {
                store.checkpoint(id, worker, step.as_ref()).await.unwrap();
            }
            store
                .complete(id, worker, json!({"answer": "ok"}))
                .await
                .unwrap();
            return;
        }
        tokio::task::yield_now().await;
    }
}

/// Runs `f` as a task on the runtime (as the cluster's workers do), not on the bench thread.
fn on_runtime<F, Fut>(rt: &tokio::runtime::Runtime, f: F) -> Duration
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Duration> + Send + 'static,
{
    rt.block_on(rt.spawn(f())).unwrap()
}

fn bench_store(
    c: &mut Criterion,
    name: &str,
    store: Arc<dyn TaskStore>,
    rt: &tokio::runtime::Runtime,
) {
    let step = Arc::new(Step::new());
    let mut group = c.benchmark_group(name);
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(5));

    group.throughput(Throughput::Elements(1));
    group.bench_function("task_claim_1", |b| {
        b.iter_custom(|iters| {
            let (store, step) = (Arc::clone(&store), Arc::clone(&step));
            on_runtime(rt, move || async move {
                let start = Instant::now();
                for _ in 0..iters {
                    lifecycle(&*store, &step, 1, 1).await;
                }
                start.elapsed()
            })
        });
    });

    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("tasks_claim_32", |b| {
        b.iter_custom(|iters| {
            let (store, step) = (Arc::clone(&store), Arc::clone(&step));
            on_runtime(rt, move || async move {
                let start = Instant::now();
                for _ in 0..iters {
                    lifecycle(&*store, &step, BATCH, BATCH).await;
                }
                start.elapsed()
            })
        });
    });

    for (concurrent, steps) in [(16, 1), (64, 3)] {
        group.throughput(Throughput::Elements(concurrent as u64));
        let name = format!("tasks_{concurrent}_workers_{steps}_steps");
        group.bench_function(name, |b| {
            let workers: Arc<Vec<String>> =
                Arc::new((0..concurrent).map(|i| format!("w{i}")).collect());
            b.iter_custom(|iters| {
                let (store, step, workers) =
                    (Arc::clone(&store), Arc::clone(&step), Arc::clone(&workers));
                on_runtime(rt, move || async move {
                    let start = Instant::now();
                    for _ in 0..iters {
                        futures_util::future::join_all(
                            workers
                                .iter()
                                .map(|w| one_of_many(&*store, &step, w, steps)),
                        )
                        .await;
                    }
                    start.elapsed()
                })
            });
        });
    }

    group.throughput(Throughput::Elements(1));
    group.bench_function("enqueue", |b| {
        b.iter_custom(|iters| {
            let store = Arc::clone(&store);
            on_runtime(rt, move || async move {
                let start = Instant::now();
                for _ in 0..iters {
                    store
                        .enqueue(NewTask::new("bench-enqueue", "t"))
                        .await
                        .unwrap();
                }
                // Last in the group: the queued tasks it leaves are never claimed.
                start.elapsed()
            })
        });
    });
    group.finish();
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();

    let memory: Arc<dyn TaskStore> = Arc::new(MemoryStore::new(StoreOptions::new()));
    bench_store(c, "store_memory", memory, &rt);

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bench.db");
    let sqlite: Arc<dyn TaskStore> = Arc::new(
        rt.block_on(SqliteStore::open(
            &format!("sqlite://{}", path.display()),
            StoreOptions::new(),
        ))
        .unwrap(),
    );
    bench_store(c, "store_sqlite_wal", sqlite, &rt);

    #[cfg(feature = "postgres")]
    if let Ok(url) = std::env::var("POCKET_BENCH_POSTGRES_URL") {
        let postgres: Arc<dyn TaskStore> = Arc::new(
            rt.block_on(pocket_cluster::store::PostgresStore::connect(
                &url,
                StoreOptions::new(),
            ))
            .unwrap(),
        );
        bench_store(c, "store_postgres", postgres, &rt);
    }
}

criterion_group!(store, benches);
criterion_main!(store);
