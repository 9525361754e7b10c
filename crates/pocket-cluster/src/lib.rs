//! The Pocket Agent cluster: a durable task queue and the runtime that works it off.
//!
//! - [`store`]: the [`TaskStore`] trait — enqueue with priority, capabilities and an
//!   idempotency key; claim with a lease; heartbeat; checkpoint and journal each step; complete;
//!   fail with a scheduled retry or dead-letter; cancel; reclaim expired leases; stats.

pub mod store;

pub use store::{
    Claimed, Enqueued, FailOutcome, NewTask, QueueStats, StoreError, TaskFilter, TaskId,
    TaskRecord, TaskStatus, TaskStore,
};
pub use store::{Clock, ManualClock, MemoryStore, StoreOptions, SystemClock, open};
#[cfg(feature = "postgres")]
pub use store::PostgresStore;
#[cfg(feature = "sqlite")]
pub use store::SqliteStore;
