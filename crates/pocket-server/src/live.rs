//! `GET /v1/monitor`: everything the dashboard shows, in one call; and the live series behind
//! its short-range charts, sampled by [`run`] while the server serves.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::SystemTime;

use axum::extract::State;
use axum::http::Uri;
use pocket_cluster::TaskStatus;
use pocket_monitor::logging::{LogLevel, LogQuery};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::time::{Instant, MissedTickBehavior};

use crate::Shared;
use crate::error::ApiError;

/// Live points kept: 15 minutes at the default interval.
const LIVE_POINTS: usize = 180;
/// History minutes sent when the query does not say.
const DEFAULT_HISTORY_MINUTES: usize = 60;
/// The most history minutes a query may ask for (the monitor keeps a day).
const MAX_HISTORY_MINUTES: usize = 1440;
/// Recent alerts and log errors sent.
const RECENT: usize = 20;

/// One interval of the live series.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct LivePoint {
    /// End of the interval, Unix seconds.
    at: f64,
    /// Length of the interval, seconds.
    secs: f64,
    /// Tasks that ended in the store (succeeded or failed, on any worker) in the interval.
    finished: u64,
    /// Of those, failed.
    failed: u64,
    /// Runs this process's monitor saw end in the interval.
    runs: u64,
    /// Their mean time in milliseconds; `null` without runs.
    mean_run_ms: Option<f64>,
    /// Tasks queued at the end of the interval.
    queued: u64,
    /// Tasks running.
    running: u64,
    /// Tasks waiting for an approval.
    waiting_approval: u64,
    /// Model tokens (input and output) used in the interval.
    tokens: u64,
}

/// Cumulative counts at one instant, to take differences of.
#[derive(Debug, Clone, Copy)]
struct Totals {
    at: Instant,
    succeeded: u64,
    failed: u64,
    runs: u64,
    run_ms: f64,
    tokens: u64,
}

/// The live series: the last [`LIVE_POINTS`] intervals.
#[derive(Debug, Default)]
pub(crate) struct Live {
    inner: Mutex<LiveState>,
}

#[derive(Debug, Default)]
struct LiveState {
    last: Option<Totals>,
    points: VecDeque<LivePoint>,
}

impl Live {
    fn lock(&self) -> MutexGuard<'_, LiveState> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn points(&self) -> Vec<LivePoint> {
        self.lock().points.iter().cloned().collect()
    }
}

/// Samples every `state.live_interval` until the server drains.
pub(crate) async fn run(state: Shared) {
    let mut draining = state.draining.subscribe();
    let mut tick = tokio::time::interval(state.live_interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let drained = async move {
        let _ = draining.wait_for(|d| *d).await;
    };
    tokio::pin!(drained);
    loop {
        tokio::select! {
            biased;
            () = &mut drained => return,
            _ = tick.tick() => sample(&state).await,
        }
    }
}

/// Takes one sample: reads the store's counts and the monitor's totals, and appends the
/// difference from the previous sample as a point.
async fn sample(state: &Shared) {
    let stats = match state.cluster.store().stats().await {
        Ok(stats) => stats,
        Err(e) => {
            tracing::debug!(error = %e, "live sample skipped: the store did not answer");
            return;
        }
    };
    let count = |status: TaskStatus| {
        stats
            .by_status
            .iter()
            .find(|(s, _)| *s == status)
            .map_or(0, |(_, n)| *n)
    };
    let (runs, run_ms, tokens) = state.monitor.as_ref().map_or((0, 0.0, 0), |m| {
        let h = m.health();
        (
            h.runs.total,
            h.runs.mean_time_ms * h.runs.total as f64,
            h.models.input_tokens + h.models.output_tokens,
        )
    });
    let now = Totals {
        at: Instant::now(),
        succeeded: count(TaskStatus::Succeeded),
        failed: count(TaskStatus::Failed),
        runs,
        run_ms,
        tokens,
    };
    let mut live = state.live.lock();
    if let Some(last) = live.last {
        let failed = now.failed.saturating_sub(last.failed);
        let runs = now.runs.saturating_sub(last.runs);
        let point = LivePoint {
            at: unix_secs(SystemTime::now()),
            secs: now.at.saturating_duration_since(last.at).as_secs_f64(),
            finished: now.succeeded.saturating_sub(last.succeeded) + failed,
            failed,
            runs,
            mean_run_ms: (runs > 0).then(|| ((now.run_ms - last.run_ms) / runs as f64).max(0.0)),
            queued: count(TaskStatus::Queued),
            running: count(TaskStatus::Running),
            waiting_approval: count(TaskStatus::WaitingApproval),
            tokens: now.tokens.saturating_sub(last.tokens),
        };
        if live.points.len() >= LIVE_POINTS {
            live.points.pop_front();
        }
        live.points.push_back(point);
    }
    live.last = Some(now);
}

fn unix_secs(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// `history=MINUTES` from the query string (1 to a day; default an hour).
fn history_minutes(query: Option<&str>) -> Result<usize, ApiError> {
    let Some(value) = query
        .unwrap_or_default()
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(name, _)| *name == "history")
        .map(|(_, v)| v)
    else {
        return Ok(DEFAULT_HISTORY_MINUTES);
    };
    match value.parse::<usize>() {
        Ok(n) if (1..=MAX_HISTORY_MINUTES).contains(&n) => Ok(n),
        _ => Err(ApiError::BadRequest(format!(
            "`history` must be a whole number of minutes from 1 to {MAX_HISTORY_MINUTES}, not `{value}`"
        ))),
    }
}

/// `GET /v1/monitor[?history=MINUTES]`: the cluster report, the queue by priority, the
/// monitor's health summary, breakers, recent alerts and log errors, the minute history, the
/// live series and the pending approvals.
pub(crate) async fn snapshot(
    State(state): State<Shared>,
    uri: Uri,
) -> Result<axum::Json<Value>, ApiError> {
    let minutes = history_minutes(uri.query())?;
    let report = state.cluster.report().await?;
    let stats = state.cluster.store().stats().await?;
    let by_priority: Vec<Value> = stats
        .queued_by_priority
        .iter()
        .map(|(priority, queued)| json!({"priority": priority, "queued": queued}))
        .collect();
    let (health, history, alerts, errors) = match &state.monitor {
        Some(m) => monitor_parts(m, minutes),
        None => (Value::Null, Vec::new(), Vec::new(), Vec::new()),
    };
    let resilience = state
        .hub
        .as_ref()
        .and_then(|h| serde_json::to_value(h.health_report()).ok());
    // The store's list: requests of runs waiting in other processes, or between a restart
    // and their resumption, show too.
    let approvals = match &state.approver {
        Some(approver) => approver.list().await?,
        None => Vec::new(),
    };
    Ok(axum::Json(json!({
        "at": unix_secs(SystemTime::now()),
        "cluster": report,
        "queued_by_priority": by_priority,
        "health": health,
        "resilience": resilience,
        "alerts": alerts,
        "errors": errors,
        "history": history,
        "live": {
            "every_secs": state.live_interval.as_secs_f64(),
            "points": state.live.points(),
        },
        "approvals": approvals,
    })))
}

/// The health summary, the last `minutes` history samples, and the recent alerts and log
/// errors (newest first).
fn monitor_parts(
    m: &pocket_monitor::Monitor,
    minutes: usize,
) -> (Value, Vec<pocket_monitor::Sample>, Vec<Value>, Vec<Value>) {
    let report = m.health();
    let health = json!({
        "status": report.status,
        "reasons": report.reasons,
        "error_rate": report.error_rate,
        "uptime_secs": report.uptime_secs,
        "memory_bytes": report.memory_bytes,
        "cpu_percent": report.cpu_percent,
        "runs": report.runs,
        "tools": report.tools,
        "models": report.models,
    });
    let mut history = m.history();
    history.drain(..history.len().saturating_sub(minutes));
    let alerts = m
        .alerts()
        .recent()
        .iter()
        .rev()
        .take(RECENT)
        .filter_map(|a| serde_json::to_value(a).ok())
        .collect();
    let errors = m.recent_logs().map_or_else(Vec::new, |logs| {
        logs.query(&LogQuery {
            min_level: Some(LogLevel::Warn),
            agent: None,
            limit: Some(RECENT),
        })
        .iter()
        .rev()
        .map(|e| {
            json!({
                "at": unix_secs(e.at),
                "level": e.level.as_str(),
                "agent": e.agent.as_deref(),
                "component": e.component,
                "message": e.message,
            })
        })
        .collect()
    });
    (health, history, alerts, errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_minutes_default_bounds_and_errors() {
        assert_eq!(history_minutes(None).unwrap(), DEFAULT_HISTORY_MINUTES);
        assert_eq!(history_minutes(Some("x=1&history=5")).unwrap(), 5);
        assert_eq!(history_minutes(Some("history=1440")).unwrap(), 1440);
        for bad in ["history=0", "history=1441", "history=ten", "history="] {
            let e = history_minutes(Some(bad)).unwrap_err();
            assert!(e.to_string().contains("`history`"), "{e}");
        }
    }
}
