//! The system report (the seed's `getSystemReport`), served at `GET /v1/cluster`.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;

use crate::autoscale::Recommendation;
use crate::pool::{InstanceInfo, InstanceStatus};
use crate::store::{QueueStats, TaskStatus};

/// The state of a worker's cluster: instances, queue, performance and scaling.
///
/// JSON shape:
///
/// ```json
/// {
///   "worker": "worker-4242-1a2b3c4d",
///   "overview": { "total_instances": 3, "active": 1, "busy": 1, "overloaded": 0,
///                 "failed": 1, "queue_size": 12, "running": 9 },
///   "performance": { "mean_load": 30.0, "mean_health": 85.0, "utilisation": 0.45,
///                    "in_flight": 9, "capacity": 20 },
///   "scaling": [ { "agent": "default", "min_instances": 1, "max_instances": 10,
///                  "recommendation": { "decision": "no_change", "current": 2, "target": 2,
///                                      "utilisation": 0.45, "queued": 12,
///                                      "reason": "utilisation 45% within the band 20%–80%" } } ],
///   "queue": { "queued": 12, "running": 9, "waiting_approval": 0, "succeeded": 40,
///              "failed": 1, "cancelled": 0 },
///   "instances": [ { "id": "default-1", "agent": "default", "status": "busy", ... } ]
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClusterReport {
    /// This worker's name.
    pub worker: Arc<str>,
    /// Counts.
    pub overview: Overview,
    /// Load, health, utilisation.
    pub performance: Performance,
    /// Each agent's scaling recommendation.
    pub scaling: Vec<AgentScaling>,
    /// Tasks in the store by status.
    pub queue: BTreeMap<&'static str, u64>,
    /// Every instance.
    pub instances: Vec<InstanceInfo>,
}

/// Instances by status and queue size.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Overview {
    /// Instances registered.
    pub total_instances: u32,
    /// Idle.
    pub active: u32,
    /// Running tasks, with free slots.
    pub busy: u32,
    /// Every slot taken.
    pub overloaded: u32,
    /// Failed (being replaced).
    pub failed: u32,
    /// Tasks queued in the store (scheduled retries included).
    pub queue_size: u64,
    /// Tasks running in the store (on every worker).
    pub running: u64,
}

/// Load, health and utilisation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Performance {
    /// Mean load of all instances, in percent.
    pub mean_load: f64,
    /// Mean health of all instances, 0 to 100.
    pub mean_health: f64,
    /// Busy slots over slots of the instances that are up, 0 to 1.
    pub utilisation: f64,
    /// Runs in flight.
    pub in_flight: u32,
    /// Slots of the instances that are up.
    pub capacity: u32,
}

/// One agent's scaling recommendation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AgentScaling {
    /// The agent.
    pub agent: Arc<str>,
    /// Its minimum.
    pub min_instances: u32,
    /// Its maximum.
    pub max_instances: u32,
    /// What the autoscaler would do now, and why.
    pub recommendation: Recommendation,
}

impl ClusterReport {
    /// Builds the report from the instances, the store's statistics and the agents'
    /// recommendations.
    pub fn new(
        worker: Arc<str>,
        instances: Vec<InstanceInfo>,
        stats: &QueueStats,
        scaling: Vec<AgentScaling>,
    ) -> Self {
        let mut overview = Overview::default();
        let mut perf = Performance::default();
        for i in &instances {
            overview.total_instances += 1;
            match i.status {
                InstanceStatus::Active => overview.active += 1,
                InstanceStatus::Busy => overview.busy += 1,
                InstanceStatus::Overloaded => overview.overloaded += 1,
                InstanceStatus::Failed => overview.failed += 1,
            }
            perf.mean_load += i.load;
            perf.mean_health += f64::from(i.health);
            if i.is_up() {
                perf.in_flight += i.in_flight;
                perf.capacity += i.capacity;
            }
        }
        if !instances.is_empty() {
            let n = instances.len() as f64;
            perf.mean_load /= n;
            perf.mean_health /= n;
        }
        if perf.capacity > 0 {
            perf.utilisation = f64::from(perf.in_flight) / f64::from(perf.capacity);
        }
        let queue: BTreeMap<&'static str, u64> = TaskStatus::ALL
            .iter()
            .map(|s| {
                let n = stats
                    .by_status
                    .iter()
                    .find(|(t, _)| t == s)
                    .map_or(0, |(_, n)| *n);
                (s.as_str(), n)
            })
            .collect();
        overview.queue_size = queue.get("queued").copied().unwrap_or(0);
        overview.running = queue.get("running").copied().unwrap_or(0);
        Self {
            worker,
            overview,
            performance: perf,
            scaling,
            queue,
            instances,
        }
    }
}
