//! Human approval of risky tool calls (the seed's `humanInLoop`), fail-safe.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::tool::Risk;

/// A person's answer to an approval request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "decision", content = "value", rename_all = "snake_case")]
pub enum Approval {
    /// Run the call as asked.
    Approve,
    /// Do not run it; the reason goes back to the model.
    Deny(String),
    /// Run it with these arguments instead (validated again).
    Edit(Value),
}

/// What a person is asked to approve.
#[derive(Debug, Clone, Serialize)]
pub struct ApprovalRequest {
    /// The run's id.
    pub run_id: Arc<str>,
    /// The agent's name.
    pub agent: Arc<str>,
    /// The call's id.
    pub call_id: String,
    /// The tool's name.
    pub tool: String,
    /// The tool's effective risk (declared, raised by the dangerous-names list).
    pub risk: Risk,
    /// The arguments the model asked for.
    pub arguments: Value,
}

/// Asking a person failed (no one to ask, a broken channel, ...).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct ApprovalError(pub String);

/// Asks a person whether a tool call may run.
pub trait Approver: Send + Sync + 'static {
    /// Asks, and waits for the answer. The agent bounds the wait by the policy's timeout.
    ///
    /// # Errors
    /// An [`ApprovalError`] when asking failed; the agent then applies its fail-safe policy.
    fn approve<'a>(
        &'a self,
        request: &'a ApprovalRequest,
    ) -> BoxFuture<'a, Result<Approval, ApprovalError>>;
}

/// Approves every call. For tests and trusted batch jobs only.
#[derive(Debug, Clone, Copy, Default)]
pub struct AutoApprove;

impl Approver for AutoApprove {
    fn approve<'a>(
        &'a self,
        _: &'a ApprovalRequest,
    ) -> BoxFuture<'a, Result<Approval, ApprovalError>> {
        Box::pin(std::future::ready(Ok(Approval::Approve)))
    }
}

/// Denies every call with a fixed reason.
#[derive(Debug, Clone)]
pub struct DenyAll(pub String);

impl Approver for DenyAll {
    fn approve<'a>(
        &'a self,
        _: &'a ApprovalRequest,
    ) -> BoxFuture<'a, Result<Approval, ApprovalError>> {
        Box::pin(std::future::ready(Ok(Approval::Deny(self.0.clone()))))
    }
}

/// What to do with a call whose approval could not be obtained.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnApprovalFailure {
    /// Deny the call (the default).
    #[default]
    Deny,
    /// Run the call anyway. Never applies to dangerous tools.
    Allow,
}

/// When approval is needed and what happens when asking fails.
#[derive(Debug, Clone, PartialEq)]
pub struct ApprovalPolicy {
    /// Calls of tools at or above this risk need approval. Default: [`Risk::Dangerous`].
    pub required_from: Risk,
    /// How long to wait for an answer. Default: 5 minutes.
    pub timeout: Duration,
    /// Tool-name words that make a tool dangerous whatever it declares. Default: `delete`,
    /// `rm`, `remove`, `drop`, `exec`, `system` (the seed's list).
    pub dangerous_names: Vec<String>,
    /// What happens to non-dangerous calls when asking fails. Dangerous calls are always
    /// denied. Default: [`OnApprovalFailure::Deny`].
    pub on_failure: OnApprovalFailure,
}

impl Default for ApprovalPolicy {
    fn default() -> Self {
        Self {
            required_from: Risk::Dangerous,
            timeout: Duration::from_secs(300),
            dangerous_names: ["delete", "rm", "remove", "drop", "exec", "system"]
                .map(String::from)
                .to_vec(),
            on_failure: OnApprovalFailure::Deny,
        }
    }
}

impl ApprovalPolicy {
    /// The risk the policy treats `tool` as having: its declared risk, raised to dangerous when
    /// a word of its name (split at `_`, `-`, `.`, `/`, and spaces) is on the dangerous list.
    pub fn effective_risk(&self, tool: &str, declared: Risk) -> Risk {
        let listed = tool
            .split(|c: char| !c.is_ascii_alphanumeric())
            .any(|word| {
                self.dangerous_names
                    .iter()
                    .any(|d| d.eq_ignore_ascii_case(word))
            });
        if listed { Risk::Dangerous } else { declared }
    }

    /// Whether a call of a tool with this effective risk needs approval.
    pub fn requires_approval(&self, risk: Risk) -> bool {
        risk >= self.required_from
    }

    /// Whether a call may run after asking failed.
    pub fn allows_on_failure(&self, risk: Risk) -> bool {
        risk < Risk::Dangerous && self.on_failure == OnApprovalFailure::Allow
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dangerous_names_raise_risk_by_word() {
        let p = ApprovalPolicy::default();
        assert_eq!(p.effective_risk("delete_file", Risk::Safe), Risk::Dangerous);
        assert_eq!(
            p.effective_risk("fs.remove", Risk::Sensitive),
            Risk::Dangerous
        );
        assert_eq!(
            p.effective_risk("format", Risk::Safe),
            Risk::Safe,
            "rm inside a word is not rm"
        );
        assert_eq!(p.effective_risk("calculator", Risk::Safe), Risk::Safe);
    }

    #[test]
    fn dangerous_calls_are_never_allowed_on_failure() {
        let p = ApprovalPolicy {
            on_failure: OnApprovalFailure::Allow,
            ..Default::default()
        };
        assert!(!p.allows_on_failure(Risk::Dangerous));
        assert!(p.allows_on_failure(Risk::Sensitive));
        assert!(!ApprovalPolicy::default().allows_on_failure(Risk::Sensitive));
    }
}
