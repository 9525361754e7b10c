//! The monitoring plugin: the seed's hooks recording runs and tool calls per agent.

use std::time::Duration;

use futures_util::future::BoxFuture;
use pocket_agent::{
    AfterRun, AfterTool, AgentError, BeforeRun, Classify, Message, Plugin, RunInfo, RunOutput,
    Severity, ToolCall, ToolError, ToolSpec,
};
use serde_json::Value;

use crate::metrics::Outcome;
use crate::monitor::Monitor;

/// How much of a task goes into the `run started` line.
const TASK_IN_LOG: usize = 200;

/// Records runs (start, end, duration, outcome) and tool calls per agent, feeds the run
/// metrics and alerts, and writes the seed's log lines. From [`Monitor::plugin`]; add it as
/// the agent's last plugin.
///
/// It never changes what it is given and never stops a run.
#[derive(Debug, Clone)]
pub struct MonitoringPlugin {
    monitor: Monitor,
}

impl MonitoringPlugin {
    pub(crate) fn new(monitor: Monitor) -> Self {
        Self { monitor }
    }
}

fn ready<'a, T: Send + 'a>(value: T) -> BoxFuture<'a, T> {
    Box::pin(std::future::ready(value))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

impl Plugin for MonitoringPlugin {
    fn name(&self) -> &str {
        "monitoring"
    }

    fn before_run<'a>(&'a self, run: &'a RunInfo, _: &'a [Message]) -> BoxFuture<'a, BeforeRun> {
        self.monitor.run_started(run);
        // Per run: debug, so a busy service does not write two lines per request at the
        // default level (failures are at warn and above, cancellations at info).
        tracing::debug!(
            component = "execution",
            agent = %run.agent,
            run_id = %run.run_id,
            task = truncate(&run.task, TASK_IN_LOG),
            "run started"
        );
        ready(BeforeRun::Continue)
    }

    fn after_run<'a>(&'a self, run: &'a RunInfo, output: &'a RunOutput) -> BoxFuture<'a, AfterRun> {
        let duration = run.started.elapsed();
        if self
            .monitor
            .run_ended(run, Outcome::Success, None, duration)
        {
            tracing::debug!(
                component = "execution",
                agent = %run.agent,
                run_id = %run.run_id,
                duration_ms = ms(duration),
                memory_bytes = self.monitor.last_memory_bytes(),
                iterations = output.iterations,
                tool_calls = output.tool_calls.len(),
                input_tokens = output.usage.input_tokens,
                output_tokens = output.usage.output_tokens,
                "run finished"
            );
        }
        ready(AfterRun::Continue)
    }

    fn on_error<'a>(&'a self, run: &'a RunInfo, error: &'a AgentError) -> BoxFuture<'a, ()> {
        let duration = run.started.elapsed();
        let class = error.classify();
        let outcome = if error.is_cancelled() {
            Outcome::Cancelled
        } else {
            Outcome::Failed(class.kind)
        };
        let message = error.to_string();
        if !self
            .monitor
            .run_ended(run, outcome, Some(message.clone()), duration)
        {
            tracing::debug!(
                component = "execution",
                run_id = %run.run_id,
                "a plugin after `monitoring` stopped a run already counted as a success; \
                 add the monitoring plugin last"
            );
            return ready(());
        }
        if outcome == Outcome::Cancelled {
            tracing::info!(
                component = "execution",
                agent = %run.agent,
                run_id = %run.run_id,
                duration_ms = ms(duration),
                "run cancelled"
            );
        } else if class.severity == Severity::Critical {
            crate::critical!(
                component = "execution",
                agent = %run.agent,
                run_id = %run.run_id,
                duration_ms = ms(duration),
                memory_bytes = self.monitor.last_memory_bytes(),
                error_kind = class.kind.as_str(),
                severity = class.severity.as_str(),
                iterations = error.iterations(),
                error = %message,
                "run failed"
            );
        } else if class.severity == Severity::High {
            tracing::error!(
                component = "execution",
                agent = %run.agent,
                run_id = %run.run_id,
                duration_ms = ms(duration),
                memory_bytes = self.monitor.last_memory_bytes(),
                error_kind = class.kind.as_str(),
                severity = class.severity.as_str(),
                retryable = class.retryable,
                iterations = error.iterations(),
                error = %message,
                "run failed"
            );
        } else {
            // Low and medium severity: transient faults a retry layer may absorb (the seed
            // logs failed executions as warnings).
            tracing::warn!(
                component = "execution",
                agent = %run.agent,
                run_id = %run.run_id,
                duration_ms = ms(duration),
                memory_bytes = self.monitor.last_memory_bytes(),
                error_kind = class.kind.as_str(),
                severity = class.severity.as_str(),
                retryable = class.retryable,
                iterations = error.iterations(),
                error = %message,
                "run failed"
            );
        }
        ready(())
    }

    fn after_tool<'a>(
        &'a self,
        run: &'a RunInfo,
        spec: &'a ToolSpec,
        _call: &'a ToolCall,
        result: &'a Result<Value, ToolError>,
        duration: Duration,
    ) -> BoxFuture<'a, AfterTool> {
        self.monitor.tool_ran(&run.agent, result.is_err(), duration);
        match result {
            Ok(_) => tracing::debug!(
                component = "tool",
                agent = %run.agent,
                run_id = %run.run_id,
                tool = %spec.name,
                duration_ms = ms(duration),
                "tool call finished"
            ),
            Err(e) => tracing::warn!(
                component = "tool",
                agent = %run.agent,
                run_id = %run.run_id,
                tool = %spec.name,
                duration_ms = ms(duration),
                error_kind = e.classify().kind.as_str(),
                error = %e,
                "tool call failed"
            ),
        }
        ready(AfterTool::Continue)
    }
}
