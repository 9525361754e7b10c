//! An outage drill: the primary model goes down for 3 s while tasks keep arriving; retries,
//! the breaker (open, probing, closed again) and the fallback model keep every task answered.
//!
//! Run: `cargo run -p pocket-resilience --example outage_drill`. It wires the layers exactly as
//! the `pocket` binary does: a `[resilience]` section, `model_chain`, `protect`.

#![allow(clippy::print_stdout)] // the example's report is its output

use std::collections::BTreeMap;
use std::time::Duration;

use pocket_agent::{Agent, BoxModel};
use pocket_models::{Faults, SimConfig, SimModel};
use pocket_resilience::chaos::Outage;
use pocket_resilience::{ResilienceConfig, ResilienceEvent, ResilienceHub};
use tokio::task::JoinSet;
use tokio::time::Instant;

const SECTION: &str = r#"
[retry]
base_delay_ms = 50
max_delay_ms = 500

[breaker]
consecutive_failures = 3
cool_down_ms = 1000

[fallback]
models = ["backup"]
"#;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let config: ResilienceConfig = toml::from_str(SECTION)?;
    config.validate()?;
    let hub = ResilienceHub::new();
    let mut events = hub.subscribe();

    let primary = Outage::new(
        sim("sim:primary", 1),
        Duration::from_secs(1),
        Duration::from_secs(3),
    );
    let mut spares = BTreeMap::from([("backup", BoxModel::new(sim("sim:backup", 2)))]);
    let model = config.model_chain("drill", "primary", BoxModel::new(primary), &hub, |name| {
        spares
            .remove(name)
            .ok_or_else(|| format!("no model named `{name}`"))
    })?;
    let agent = Agent::builder_boxed(model)
        .name("drill")
        .run_timeout(Duration::from_secs(30))
        .build()?;
    let protected = config.protect(agent, &hub).build();
    println!("{config}\n");

    let started = Instant::now();
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    let mut count = |event: &ResilienceEvent| {
        *counts.entry(event.name()).or_default() += 1;
        if let ResilienceEvent::BreakerTransition { key, from, to } = event {
            println!(
                "{:>6.2}s  {key}: {} -> {}",
                started.elapsed().as_secs_f64(),
                from.as_str(),
                to.as_str()
            );
        }
    };
    // Tasks arrive every 50 ms for 6 s; the primary is down from 1 s to 4 s.
    let drill = async {
        let mut runs = JoinSet::new();
        for i in 0..120 {
            let protected = protected.clone();
            runs.spawn(async move { protected.run(format!("task {i}")).await });
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        runs.join_all().await
    };
    tokio::pin!(drill);
    let results = loop {
        tokio::select! {
            results = &mut drill => break results,
            Ok(event) = events.recv() => count(&event),
        }
    };
    while let Ok(event) = events.try_recv() {
        count(&event);
    }

    let mut paths: BTreeMap<&str, usize> = BTreeMap::new();
    for result in &results {
        match result {
            Ok(out) => *paths.entry(out.path.as_str()).or_default() += 1,
            Err(e) => println!("failed: {e}"),
        }
    }
    println!("\nanswered by: {paths:?} of {}", results.len());
    println!("events: {counts:?}");
    let m = hub.metrics();
    println!(
        "retries: {:?}\nfallbacks: {:?}\nbreaker transitions: {:?}",
        m.retries_total, m.fallbacks_total, m.breaker_transitions_total
    );
    println!(
        "\nhealth report:\n{}",
        serde_json::to_string_pretty(&hub.health_report())?
    );
    Ok(())
}

/// A `sim` model with 5 ms latency and 10 % transient faults.
fn sim(name: &str, seed: u64) -> SimModel {
    SimModel::named(
        name,
        SimConfig {
            seed,
            latency_ms: 5,
            faults: Faults::transient(0.1),
            ..SimConfig::default()
        },
    )
}
