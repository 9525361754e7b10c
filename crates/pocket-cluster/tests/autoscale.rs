//! Autoscaling decisions (limits, thresholds, hysteresis, cool-down) on virtual time, and
//! the system report.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use pocket_cluster::autoscale::{Autoscaler, Observation, ScaleDecision, ScalePolicy};
use pocket_cluster::{
    AgentScaling, ClusterReport, InstanceId, InstanceInfo, InstanceStatus, QueueStats, TaskStatus,
};
use tokio::time::Instant;

fn policy() -> ScalePolicy {
    ScalePolicy {
        min_instances: 1,
        max_instances: 5,
        scale_up_utilisation: 0.8,
        scale_down_utilisation: 0.2,
        stable_checks: 2,
        cool_down: Duration::from_secs(60),
    }
}

/// `n` instances of 10 slots with `in_flight` runs and `queued` tasks waiting.
fn obs(n: u32, in_flight: u32, queued: u64) -> Observation {
    Observation {
        instances: n,
        in_flight,
        capacity: n * 10,
        queued,
        concurrency: 10,
    }
}

#[test]
fn limits_act_at_once() {
    let now = Instant::now();
    let mut s = Autoscaler::new(policy());
    let r = s.decide(&obs(0, 0, 0), now);
    assert_eq!(
        (r.decision, r.current, r.target),
        (ScaleDecision::ScaleUp, 0, 1)
    );
    assert!(r.reason.contains("below the minimum"), "{}", r.reason);
    // Limits ignore the cool-down the last action started.
    let r = s.decide(&obs(7, 0, 0), now);
    assert_eq!((r.decision, r.target), (ScaleDecision::ScaleDown, 5));
    assert!(r.reason.contains("above the maximum"), "{}", r.reason);
}

#[test]
fn scale_up_needs_the_condition_for_stable_checks() {
    let now = Instant::now();
    let mut s = Autoscaler::new(policy());
    let hot = obs(2, 17, 0); // 85 %
    let r = s.decide(&hot, now);
    assert_eq!(r.decision, ScaleDecision::NoChange);
    assert!(r.reason.contains("held for 1 of 2 checks"), "{}", r.reason);
    // A check inside the band resets the count.
    let r = s.decide(&obs(2, 10, 0), now);
    assert_eq!(r.decision, ScaleDecision::NoChange);
    assert!(r.reason.contains("within the band 20%–80%"), "{}", r.reason);
    assert_eq!(s.decide(&hot, now).decision, ScaleDecision::NoChange);
    let r = s.decide(&hot, now);
    assert_eq!(
        (r.decision, r.current, r.target),
        (ScaleDecision::ScaleUp, 2, 3)
    );
    assert!(
        r.reason
            .contains("utilisation 85% at or above the scale-up threshold 80%"),
        "{}",
        r.reason
    );
}

#[test]
fn the_target_covers_queued_work_within_the_maximum() {
    let now = Instant::now();
    let mut s = Autoscaler::new(ScalePolicy {
        stable_checks: 1,
        max_instances: 20,
        ..policy()
    });
    // ceil((20 + 36) / (10 × 0.8)) = 7.
    let r = s.decide(&obs(2, 20, 36), now);
    assert_eq!((r.decision, r.target), (ScaleDecision::ScaleUp, 7));
    let mut s = Autoscaler::new(ScalePolicy {
        stable_checks: 1,
        ..policy()
    });
    let r = s.decide(&obs(2, 20, 1_000), now);
    assert_eq!(r.target, 5);
    // At the maximum it stays, and says why.
    let r = s.decide(&obs(5, 50, 1_000), now + Duration::from_secs(3600));
    assert_eq!(r.decision, ScaleDecision::NoChange);
    assert!(
        r.reason.contains("already at the maximum of 5"),
        "{}",
        r.reason
    );
}

#[test]
fn queued_work_wakes_an_agent_scaled_to_zero() {
    let mut s = Autoscaler::new(ScalePolicy {
        min_instances: 0,
        stable_checks: 1,
        ..policy()
    });
    let r = s.decide(&obs(0, 0, 12), Instant::now());
    assert_eq!((r.decision, r.target), (ScaleDecision::ScaleUp, 2));
    assert!(r.reason.contains("12 tasks queued and no capacity"));
    // Nothing queued, nothing running: zero stays zero.
    let mut s = Autoscaler::new(ScalePolicy {
        min_instances: 0,
        stable_checks: 1,
        ..policy()
    });
    assert_eq!(
        s.decide(&obs(0, 0, 0), Instant::now()).decision,
        ScaleDecision::NoChange
    );
}

#[tokio::test(start_paused = true)]
async fn cool_down_spaces_actions_and_scale_down_goes_one_at_a_time() {
    let mut s = Autoscaler::new(ScalePolicy {
        stable_checks: 1,
        ..policy()
    });
    let idle = obs(4, 2, 0); // 5 %
    let r = s.decide(&idle, Instant::now());
    assert_eq!(
        (r.decision, r.current, r.target),
        (ScaleDecision::ScaleDown, 4, 3)
    );
    tokio::time::advance(Duration::from_secs(30)).await;
    let r = s.decide(&obs(3, 2, 0), Instant::now());
    assert_eq!(r.decision, ScaleDecision::NoChange);
    assert!(r.reason.contains("cooling down (30s left)"), "{}", r.reason);
    // The report's recommendation does not change the state.
    let peek = s.recommend(&obs(3, 2, 0), Instant::now());
    assert_eq!(peek.decision, ScaleDecision::NoChange);
    tokio::time::advance(Duration::from_secs(30)).await;
    let peek = s.recommend(&obs(3, 2, 0), Instant::now());
    assert_eq!(peek.decision, ScaleDecision::ScaleDown);
    let r = s.decide(&obs(3, 2, 0), Instant::now());
    assert_eq!((r.decision, r.target), (ScaleDecision::ScaleDown, 2));
    // Down to the minimum and no further.
    tokio::time::advance(Duration::from_secs(61)).await;
    assert_eq!(s.decide(&obs(2, 0, 0), Instant::now()).target, 1);
    tokio::time::advance(Duration::from_secs(61)).await;
    let r = s.decide(&obs(1, 0, 0), Instant::now());
    assert_eq!(r.decision, ScaleDecision::NoChange);
    assert!(
        r.reason.contains("already at the minimum of 1"),
        "{}",
        r.reason
    );
}

#[test]
fn hysteresis_band_keeps_a_scaled_pool_stable() {
    // After scaling 2 → 3 at 85 %, the same work is 57 %: inside the band, no change back.
    let mut s = Autoscaler::new(ScalePolicy {
        stable_checks: 1,
        cool_down: Duration::ZERO,
        ..policy()
    });
    let now = Instant::now();
    assert_eq!(
        s.decide(&obs(2, 17, 0), now).decision,
        ScaleDecision::ScaleUp
    );
    for _ in 0..10 {
        assert_eq!(
            s.decide(&obs(3, 17, 0), now).decision,
            ScaleDecision::NoChange
        );
    }
}

fn instance(id: &str, status: InstanceStatus, in_flight: u32, health: u32) -> InstanceInfo {
    InstanceInfo {
        id: InstanceId(Arc::from(id)),
        agent: Arc::from("default"),
        model: Arc::from("sim"),
        status,
        failure: None,
        load: f64::from(in_flight) * 10.0,
        health,
        in_flight,
        capacity: 10,
        capabilities: Vec::new(),
        last_heartbeat_secs_ago: 0.0,
        mean_duration_secs: 0.0,
        succeeded: 0,
        failed: 0,
        breaker_open: false,
    }
}

#[test]
fn the_report_counts_instances_and_averages_load_and_health() {
    let instances = vec![
        instance("default-1", InstanceStatus::Active, 0, 100),
        instance("default-2", InstanceStatus::Busy, 6, 90),
        instance("default-3", InstanceStatus::Overloaded, 10, 80),
        instance("default-4", InstanceStatus::Failed, 2, 10),
    ];
    let stats = QueueStats {
        by_status: TaskStatus::ALL
            .iter()
            .map(|s| {
                (
                    *s,
                    match s {
                        TaskStatus::Queued => 7,
                        TaskStatus::Running => 18,
                        TaskStatus::Succeeded => 100,
                        _ => 0,
                    },
                )
            })
            .collect(),
        queued_by_priority: vec![(0, 7)],
    };
    let mut scaler = Autoscaler::new(policy());
    let rec = scaler.decide(&obs(3, 16, 7), Instant::now());
    let report = ClusterReport::new(
        Arc::from("w1"),
        instances,
        &stats,
        vec![AgentScaling {
            agent: Arc::from("default"),
            min_instances: 1,
            max_instances: 5,
            recommendation: rec,
        }],
    );
    let o = report.overview;
    assert_eq!(
        (o.total_instances, o.active, o.busy, o.overloaded, o.failed),
        (4, 1, 1, 1, 1)
    );
    assert_eq!((o.queue_size, o.running), (7, 18));
    assert_eq!(report.performance.mean_load, 45.0); // (0 + 60 + 100 + 20) / 4
    assert_eq!(report.performance.mean_health, 70.0);
    // Utilisation over the instances that are up: 16 of 30 slots.
    assert_eq!(
        (report.performance.in_flight, report.performance.capacity),
        (16, 30)
    );
    assert!((report.performance.utilisation - 16.0 / 30.0).abs() < 1e-9);

    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["overview"]["queue_size"], 7);
    assert_eq!(json["queue"]["succeeded"], 100);
    assert_eq!(json["instances"][3]["status"], "failed");
    assert_eq!(
        json["scaling"][0]["recommendation"]["decision"],
        "no_change"
    );
    assert!(
        json["scaling"][0]["recommendation"]["reason"]
            .as_str()
            .unwrap()
            .contains("within the band")
    );
}
