//! Counters and gauges of the layers, as a plain snapshot for exporters.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;

/// The layers' counters and gauges at one moment; see [`ResilienceHub::metrics`](crate::ResilienceHub::metrics).
///
/// Maps are keyed like events (`model:NAME`, `tool:NAME`, `agent:NAME`); a key appears once
/// something happened to it. An exporter (Prometheus, say) turns each map into one labelled
/// metric family.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[non_exhaustive]
pub struct MetricsSnapshot {
    /// Retries scheduled, by key (model calls, tool calls, and whole runs of protected agents).
    pub retries_total: BTreeMap<String, u64>,
    /// Retries refused by the retry budget, by key.
    pub budget_rejections_total: BTreeMap<String, u64>,
    /// Breaker state by key: 0 closed, 1 half-open, 2 open.
    pub breaker_state: BTreeMap<String, u8>,
    /// Breaker transitions, by key.
    pub breaker_transitions_total: BTreeMap<String, u64>,
    /// Calls that fell through to another model route, by the route they left.
    pub fallbacks_total: BTreeMap<String, u64>,
    /// Calls that waited for a cool-down or a Retry-After because no route was available.
    pub cool_down_waits_total: u64,
    /// Failed run attempts of protected agents, by agent key.
    pub agent_failures_total: BTreeMap<String, u64>,
    /// Answers of protected agents that came from a fallback executor or the degraded path.
    pub executor_answers_total: BTreeMap<String, u64>,
    /// Human-in-the-loop failures, by agent key.
    pub human_in_loop_errors_total: BTreeMap<String, u64>,
}

/// What the hub counts; one short lock per update.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) retries: BTreeMap<Arc<str>, u64>,
    pub(crate) budget_rejections: BTreeMap<Arc<str>, u64>,
    pub(crate) transitions: BTreeMap<Arc<str>, u64>,
    pub(crate) fallbacks: BTreeMap<Arc<str>, u64>,
    pub(crate) waits: u64,
    pub(crate) agent_failures: BTreeMap<Arc<str>, u64>,
    pub(crate) executor_answers: BTreeMap<Arc<str>, u64>,
    pub(crate) hitl_errors: BTreeMap<Arc<str>, u64>,
}

/// Adds one to `key`'s counter, allocating only for a new key.
pub(crate) fn bump(map: &mut BTreeMap<Arc<str>, u64>, key: &Arc<str>) {
    match map.get_mut(key) {
        Some(n) => *n += 1,
        None => {
            map.insert(key.clone(), 1);
        }
    }
}

pub(crate) fn export(map: &BTreeMap<Arc<str>, u64>) -> BTreeMap<String, u64> {
    map.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}
