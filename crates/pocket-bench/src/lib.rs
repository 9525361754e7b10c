//! Benchmark harness for Pocket Agent (not published).
//!
//! - [`stub`]: a fast OpenAI-compatible upstream with a fixed latency and a scripted tool
//!   round (binary `pocket-stub`).
//! - [`runner`]: the peer workload on a Pocket Agent [`Agent`](pocket_agent::Agent) — N tasks,
//!   one tool round each, at concurrency C (`pocket-bench agent`).
//! - [`load`]: an open-loop load generator for `POST /v1/chat/completions`
//!   (`pocket-bench load`).
//! - [`proxy`]: a bare pass-through on the same HTTP stack as `pocket serve`, the floor of
//!   one more hop (`pocket-bench proxy`).
//! - [`stats`]: CPU time and peak RSS (`getrusage`), percentiles, the JSON report.
//!
//! `bench/peers.sh` and `bench/service-latency.sh` drive these binaries; the numbers are in
//! `BENCHMARKS.md`.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use std::time::Duration;
//! let stub = pocket_bench::stub::spawn("127.0.0.1:0", pocket_bench::stub::StubConfig {
//!     latency: Duration::from_millis(20),
//! }).await?;
//! let report = pocket_bench::runner::run(pocket_bench::runner::RunnerConfig {
//!     base_url: stub.base_url(),
//!     tasks: 100,
//!     concurrency: 8,
//!     latency: Duration::from_millis(20),
//! }).await?;
//! assert_eq!(report.errors, 0);
//! # Ok(()) }
//! ```

pub mod load;
mod plain_http;
pub mod proxy;
pub mod runner;
pub mod served;
pub mod stats;
pub mod stub;
