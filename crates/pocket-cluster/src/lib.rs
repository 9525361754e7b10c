//! The Pocket Agent cluster: a durable task queue and the runtime that works it off.
//!
//! - [`store`]: the [`TaskStore`] trait — enqueue with priority, capabilities and an
//!   idempotency key; claim with a lease; heartbeat; checkpoint and journal each step; complete;
//!   fail with a scheduled retry or dead-letter; cancel; reclaim expired leases; stats.

pub mod store;

pub mod autoscale;
mod config;
mod event;
pub mod health;
mod pool;
mod report;
pub mod select;
mod worker;

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
pub use event::ClusterEvent;
pub use pool::{
    AgentLoad, FAILED_BELOW, FailReason, HEALTHY, InstanceId, InstanceInfo, InstanceStatus, Pool,
    Slot, Unavailable,
};
pub use report::{AgentScaling, ClusterReport, Overview, Performance};
pub use worker::{Cluster, ClusterBuilder, ClusterError, FactoryError, Stopped};
