//! Dispatch benchmarks: how fast a worker moves tasks through the in-memory store with a
//! zero-latency `sim` model, how fast the pool alone dispatches, and how much resident memory
//! one in-flight run costs at 10,000 concurrent runs.
//!
//! `cargo bench -p pocket-cluster --bench dispatch` (criterion: `pool_dispatch`,
//! `worker_end_to_end`), then the memory measurement, printed as one line. Set
//! `POCKET_BENCH_RUNS` to change the 10,000 (BENCHMARKS.md also has 100,000). The
//! criterion filter `zzz` matches no benchmark: `cargo bench -p pocket-cluster --bench
//! dispatch -- zzz` prints the memory line and the throughput summary only.

// A benchmark reports on stdout; failing to set up is a bug in the benchmark.
#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use pocket_agent::{Agent, Completion, CompletionRequest, Model, ModelError};
use pocket_cluster::store::{MemoryStore, StoreOptions};
use pocket_cluster::{Cluster, ClusterConfig, NewTask, Pool, Selection, TaskStatus, TaskStore};
use pocket_models::SimModel;
use pocket_resilience::Outcome;
use tokio::sync::Semaphore;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn sim_agent(name: &str) -> Agent {
    Agent::builder(SimModel::default())
        .name(name)
        .build()
        .unwrap()
}

/// Choosing an instance, running a zero-latency agent on it, recording the outcome.
fn pool_dispatch(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("pool_dispatch");
    for policy in [Selection::P2c, Selection::Weighted] {
        let pool = Pool::with_options(policy, Some(1), None);
        for _ in 0..4 {
            pool.register("default", sim_agent("default"), Vec::new(), 64);
        }
        group.throughput(Throughput::Elements(1));
        group.bench_function(format!("acquire_only/{}", policy.as_str()), |b| {
            b.iter(|| pool.acquire("default", &[]).unwrap());
        });
        group.bench_function(format!("acquire_run_finish/{}", policy.as_str()), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let begin = Instant::now();
                    for _ in 0..iters {
                        let slot = pool.acquire("default", &[]).unwrap();
                        let started = Instant::now();
                        let out = slot.agent().run("hello").await.unwrap();
                        slot.finish(Outcome::Success, started.elapsed());
                        std::hint::black_box(out);
                    }
                    begin.elapsed()
                })
            });
        });
    }
    group.finish();
}

fn bench_config() -> ClusterConfig {
    ClusterConfig {
        min_instances: 4,
        max_instances: 4,
        instance_concurrency: 256,
        claim_batch: 256,
        poll_interval_ms: 1,
        max_queued: 10_000_000,
        ..ClusterConfig::default()
    }
}

/// Enqueues `n` tasks, starts a worker, and waits until none is queued or running.
async fn run_batch(n: usize) -> (Duration, Duration) {
    let config = bench_config();
    let store: Arc<dyn TaskStore> = Arc::new(MemoryStore::new(
        config.store_options().keep_finished(Some(n)),
    ));
    let cluster = Cluster::builder(store.clone())
        .config(config)
        .agent("default")
        .factory(|name| Ok(sim_agent(name)))
        .build()
        .unwrap();
    let mut last = None;
    for i in 0..n {
        let task = NewTask::new("default", format!("task {i}"));
        last = Some(store.enqueue(task).await.unwrap().id);
    }
    let last = last.unwrap();
    let started = Instant::now();
    let cpu = cpu_time();
    let worker = cluster.clone();
    let running = tokio::spawn(async move { worker.run(std::future::pending()).await });
    // The last task is claimed last; polling it is cheap (the memory store's `stats` walks
    // the queue).
    while store.get(&last).await.unwrap().unwrap().status != TaskStatus::Succeeded {
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    loop {
        let stats = store.stats().await.unwrap();
        let left: u64 = stats
            .by_status
            .iter()
            .filter(|(s, _)| matches!(s, TaskStatus::Queued | TaskStatus::Running))
            .map(|(_, n)| n)
            .sum();
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    let took = started.elapsed();
    let cpu = cpu.zip(cpu_time()).map(|(a, b)| b.saturating_sub(a));
    cluster.shutdown();
    running.await.unwrap().unwrap();
    (took, cpu.unwrap_or_default())
}

/// Claim, dispatch, run, complete: the worker's whole path, store included (enqueueing is
/// not timed).
fn worker_end_to_end(c: &mut Criterion) {
    let rt = runtime();
    let n = 20_000;
    let mut group = c.benchmark_group("worker_end_to_end");
    group.sample_size(10);
    group.throughput(Throughput::Elements(n as u64));
    group.bench_function("sim_zero_latency", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    total += run_batch(n).await.0;
                }
                total
            })
        });
    });
    group.finish();
}

/// A model that answers only when its gate opens: keeps runs in flight.
struct Gated(Arc<Semaphore>);

impl Model for Gated {
    fn name(&self) -> &str {
        "gated"
    }

    async fn complete(&self, _: &CompletionRequest) -> Result<Completion, ModelError> {
        let _permit = self.0.acquire().await;
        Ok(Completion::text("done"))
    }
}

/// Resident memory in bytes, from `/proc/self/statm`.
fn rss() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// Resident memory per in-flight run: enqueue `runs` tasks (measured before), let a worker
/// take them all on a model that does not answer, measure again.
fn memory_per_run() {
    let runs: usize = std::env::var("POCKET_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let rt = runtime();
    rt.block_on(async {
        let gate = Arc::new(Semaphore::new(0));
        let config = ClusterConfig {
            min_instances: 10,
            max_instances: 10,
            instance_concurrency: u32::try_from(runs.div_ceil(10)).unwrap(),
            claim_batch: 1000,
            poll_interval_ms: 1,
            max_queued: 10_000_000,
            ..ClusterConfig::default()
        };
        let store: Arc<dyn TaskStore> = Arc::new(MemoryStore::new(StoreOptions::new()));
        let g = gate.clone();
        let cluster = Cluster::builder(store.clone())
            .config(config)
            .agent("default")
            .factory(move |name| Ok(Agent::builder(Gated(g.clone())).name(name).build()?))
            .build()
            .unwrap();
        for i in 0..runs {
            store
                .enqueue(NewTask::new("default", format!("task {i}")))
                .await
                .unwrap();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let before = rss().unwrap_or(0);
        let worker = cluster.clone();
        let running = tokio::spawn(async move { worker.run(std::future::pending()).await });
        while cluster.in_flight() < runs
            || cluster
                .pool()
                .instances()
                .iter()
                .map(|i| i.in_flight as usize)
                .sum::<usize>()
                < runs
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let after = rss().unwrap_or(0);
        let per_run = after.saturating_sub(before) as f64 / runs as f64;
        println!(
            "memory_per_in_flight_run: {runs} runs in flight, RSS {:.1} MiB -> {:.1} MiB, {per_run:.0} bytes per run",
            before as f64 / 1048576.0,
            after as f64 / 1048576.0,
        );
        gate.add_permits(Semaphore::MAX_PERMITS / 2);
        cluster.shutdown();
        running.await.unwrap().unwrap();
    });
}

/// CPU time of this process so far (user and system), from `/proc/self/stat`.
fn cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces): utime is the 12th, stime the 13th.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

/// The best of five batches of 50,000 tasks through the worker, as one line (the best run
/// is the one least disturbed by other processes on the machine), with the CPU time the
/// process spent per task (which other processes disturb less).
fn throughput_summary() {
    let rt = runtime();
    let n = 50_000;
    let mut best = Duration::MAX;
    let mut cpu_best = Duration::MAX;
    for _ in 0..5 {
        let (took, cpu) = rt.block_on(run_batch(n));
        best = best.min(took);
        cpu_best = cpu_best.min(cpu);
    }
    println!(
        "worker_throughput: {n} tasks in {:.1} ms at best, {:.0} tasks/s; CPU {:.1} µs per task",
        best.as_secs_f64() * 1e3,
        n as f64 / best.as_secs_f64(),
        cpu_best.as_secs_f64() * 1e6 / n as f64,
    );
}

fn main() {
    // First, in a fresh process: memory freed by earlier benchmarks would be reused and hide
    // the growth.
    if std::env::args().any(|a| a == "--bench") {
        memory_per_run();
    }
    let mut c = Criterion::default().configure_from_args();
    pool_dispatch(&mut c);
    worker_end_to_end(&mut c);
    c.final_summary();
    if std::env::args().any(|a| a == "--bench") {
        throughput_summary();
    }
}
