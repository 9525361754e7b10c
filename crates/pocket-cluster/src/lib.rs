//! The Pocket Agent cluster: a durable task queue and the runtime that works it off.
//!
//! - [`store`]: the [`TaskStore`] trait — enqueue with priority, capabilities and an
//!   idempotency key; claim with a lease; heartbeat; checkpoint and journal each step; complete;
//!   fail with a scheduled retry or dead-letter; cancel; reclaim expired leases; stats.
//! - [`Cluster`]: the worker — a cheap-clone handle that owns agent instances built by a
//!   factory, claims tasks from any store under a lease, runs them durably (checkpoints and a
//!   tool-call journal in the store, so another worker resumes a crashed run), renews leases,
//!   stops runs it no longer holds, retries by error classification, reports
//!   [`ClusterEvent`]s, and shuts down gracefully.
//! - [`Pool`]: instances with status, load, health, capabilities, concurrency limits and
//!   heartbeats; [`select`]: power of two choices (default) or the seed's weighted random
//!   choice, both routing around open circuit breakers.
//! - [`health`]: heartbeats, silent instances failed and rebuilt, expired leases reclaimed.
//! - [`autoscale`]: instances between a minimum and a maximum from utilisation and queue
//!   depth, with hysteresis and a cool-down; [`ClusterReport`]: the system report.
//! - [`ClusterConfig`]: the `[cluster]` section of `pocket.toml`.
//!
//! ```
//! # use pocket_agent::{Agent, Completion, CompletionRequest, Model, ModelError};
//! # struct Echo;
//! # impl Model for Echo {
//! #     fn name(&self) -> &str { "echo" }
//! #     async fn complete(&self, _: &CompletionRequest) -> Result<Completion, ModelError> {
//! #         Ok(Completion::text("hello"))
//! #     }
//! # }
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use pocket_cluster::{Cluster, ClusterConfig, ClusterEvent, NewTask};
//!
//! let config = ClusterConfig::default();
//! let store = pocket_cluster::open("memory:", config.store_options()).await?;
//! let cluster = Cluster::builder(store)
//!     .config(config)
//!     .agent("greeter")
//!     .factory(|name| Ok(Agent::builder(Echo).name(name).build()?))
//!     .build()?;
//! let mut events = cluster.subscribe();
//! let id = cluster.submit(NewTask::new("greeter", "say hello")).await?.id;
//!
//! let worker = cluster.clone();
//! let stop_when_done = async move {
//!     while let Ok(event) = events.recv().await {
//!         if matches!(event, ClusterEvent::TaskSucceeded { .. }) {
//!             break;
//!         }
//!     }
//! };
//! worker.run(stop_when_done).await?; // then shuts down gracefully
//! let task = cluster.store().get(&id).await?.expect("the task exists");
//! assert_eq!(task.result.expect("succeeded")["answer"], "hello");
//! # Ok(()) }
//! ```

pub mod store;

pub mod autoscale;
mod config;
mod event;
pub mod health;
pub mod pool;
mod report;
pub mod select;
pub mod worker;

#[cfg(feature = "postgres")]
pub use store::PostgresStore;
#[cfg(feature = "sqlite")]
pub use store::SqliteStore;
pub use store::{
    Claimed, Enqueued, FailOutcome, NewTask, QueueStats, StoreError, TaskFilter, TaskId,
    TaskRecord, TaskStatus, TaskStore,
};
pub use store::{Clock, ManualClock, MemoryStore, StoreOptions, SystemClock, open};

pub use autoscale::{Autoscaler, Observation, Recommendation, ScaleDecision, ScalePolicy};
pub use config::{ClusterConfig, ConfigError, Selection};
pub use event::{AgentStep, ClusterEvent, Followed, Following};
pub use pool::{
    AgentLoad, FAILED_BELOW, FailReason, HEALTHY, InstanceId, InstanceInfo, InstanceStatus, Pool,
    Slot, Unavailable,
};
pub use report::{AgentScaling, ClusterReport, Overview, Performance};
pub use worker::{
    Cluster, ClusterBuilder, ClusterError, FactoryError, RunNow, RunNowError, Stopped,
    TaskFollower, TaskWatch,
};
