//! Typed errors of models, tools and agents, and their classification.
//!
//! Every error answers [`Classify::classify`]: what kind of failure it is, how severe, whether
//! trying again may help, and how long the provider asked us to wait. Retry, circuit-breaker
//! and alerting layers decide on this classification, never on error strings.

use std::error::Error as StdError;
use std::fmt;
use std::time::Duration;

use serde::Serialize;

use crate::message::{Message, Usage};

/// What kind of failure an error is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorKind {
    /// The network or the remote server failed (connection reset, refused, 5xx).
    Network,
    /// Something took longer than its time limit.
    Timeout,
    /// The provider asked us to slow down.
    RateLimited,
    /// The input was wrong: bad arguments, a bad request, a malformed answer.
    Validation,
    /// A resource ran out: context length, an overloaded server, an open circuit, iterations.
    Resource,
    /// A tool failed while running.
    Tool,
    /// Credentials or permission were refused.
    Auth,
    /// Anything else.
    Unknown,
}

impl ErrorKind {
    /// The snake_case name used in events, metrics and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Network => "network",
            Self::Timeout => "timeout",
            Self::RateLimited => "rate_limited",
            Self::Validation => "validation",
            Self::Resource => "resource",
            Self::Tool => "tool",
            Self::Auth => "auth",
            Self::Unknown => "unknown",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How bad a failure is, for alerting and reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Expected now and then; nothing to do.
    Low,
    /// Worth watching if it repeats.
    Medium,
    /// Needs attention.
    High,
    /// Needs a person now (bad credentials, a crash).
    Critical,
}

impl Severity {
    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Low => "low",
            Self::Medium => "medium",
            Self::High => "high",
            Self::Critical => "critical",
        }
    }
}

/// The answer of [`Classify::classify`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Classification {
    /// What kind of failure.
    pub kind: ErrorKind,
    /// How bad.
    pub severity: Severity,
    /// Whether the same call may succeed if tried again.
    pub retryable: bool,
    /// How long the provider asked us to wait before trying again.
    #[serde(skip_serializing_if = "Option::is_none", with = "opt_secs")]
    pub retry_after: Option<Duration>,
}

impl Classification {
    /// A classification without a Retry-After hint.
    pub const fn new(kind: ErrorKind, severity: Severity, retryable: bool) -> Self {
        Self {
            kind,
            severity,
            retryable,
            retry_after: None,
        }
    }

    /// Classifies a foreign error by its message. This is the last resort, for errors that
    /// carry no type information (a plugin's or a tool's own error text).
    pub fn from_message(message: &str) -> Self {
        let m = message.to_ascii_lowercase();
        let has = |words: &[&str]| words.iter().any(|w| m.contains(w));
        if has(&["timed out", "timeout", "deadline"]) {
            Self::new(ErrorKind::Timeout, Severity::Medium, true)
        } else if has(&["rate limit", "too many requests", "429"]) {
            Self::new(ErrorKind::RateLimited, Severity::Medium, true)
        } else if has(&[
            "connection",
            "network",
            "reset",
            "refused",
            "unreachable",
            "dns",
        ]) {
            Self::new(ErrorKind::Network, Severity::Medium, true)
        } else if has(&[
            "unauthorized",
            "forbidden",
            "permission",
            "denied",
            "api key",
        ]) {
            Self::new(ErrorKind::Auth, Severity::High, false)
        } else if has(&["invalid", "validation", "malformed", "parse"]) {
            Self::new(ErrorKind::Validation, Severity::Medium, false)
        } else if has(&[
            "out of memory",
            "quota",
            "exhausted",
            "context length",
            "too large",
        ]) {
            Self::new(ErrorKind::Resource, Severity::High, false)
        } else {
            Self::new(ErrorKind::Unknown, Severity::Medium, false)
        }
    }
}

mod opt_secs {
    use std::time::Duration;

    pub(super) fn serialize<S: serde::Serializer>(
        v: &Option<Duration>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match v {
            Some(d) => s.serialize_f64(d.as_secs_f64()),
            None => s.serialize_none(),
        }
    }
}

/// Errors that can say what kind of failure they are.
pub trait Classify {
    /// Kind, severity, retryability and Retry-After of this error.
    fn classify(&self) -> Classification;

    /// Whether trying the same call again may succeed.
    fn is_retryable(&self) -> bool {
        self.classify().retryable
    }

    /// How long the provider asked us to wait, if it said.
    fn retry_after(&self) -> Option<Duration> {
        self.classify().retry_after
    }
}

type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// A failed model call.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    /// The provider refused the call for its rate limit (HTTP 429).
    #[error("rate limited by the provider{}: {message}", fmt_after(*.retry_after))]
    RateLimited {
        /// The provider's message.
        message: String,
        /// The provider's Retry-After, if given.
        retry_after: Option<Duration>,
    },
    /// The provider failed (HTTP 5xx, or an overloaded signal).
    #[error("provider error (HTTP {status}): {message}")]
    Server {
        /// HTTP status.
        status: u16,
        /// The provider's message.
        message: String,
        /// The provider's Retry-After, if given.
        retry_after: Option<Duration>,
    },
    /// Credentials were refused (HTTP 401/403).
    #[error("authentication failed (HTTP {status}): {message}")]
    Auth {
        /// HTTP status.
        status: u16,
        /// The provider's message.
        message: String,
    },
    /// The conversation does not fit the model's context window.
    #[error("context length exceeded: {message}")]
    ContextLength {
        /// The provider's message.
        message: String,
    },
    /// The provider rejected the request as invalid (HTTP 4xx).
    #[error("invalid request (HTTP {status}): {message}")]
    InvalidRequest {
        /// HTTP status.
        status: u16,
        /// The provider's message.
        message: String,
    },
    /// The connection failed (refused, reset, DNS, TLS).
    #[error("connection to the model failed: {message}")]
    Connection {
        /// What failed.
        message: String,
        /// The underlying error.
        #[source]
        source: Option<BoxError>,
    },
    /// The call took longer than its time limit.
    #[error("model call timed out{}", fmt_limit(*.after))]
    Timeout {
        /// The limit that was passed, if known.
        after: Option<Duration>,
    },
    /// The provider answered with something we could not understand.
    #[error("malformed response from the model: {message}")]
    MalformedResponse {
        /// What was wrong.
        message: String,
    },
    /// A circuit breaker is open for this model; no call was made.
    #[error("circuit open for model {key}; next probe in {:.1}s", .retry_in.as_secs_f64())]
    CircuitOpen {
        /// The breaker's key (usually the model endpoint).
        key: String,
        /// How long until the breaker lets a probe through.
        retry_in: Duration,
    },
    /// The call was cancelled.
    #[error("model call cancelled")]
    Cancelled,
    /// Any other failure.
    #[error("{message}")]
    Other {
        /// What failed.
        message: String,
        /// The underlying error.
        #[source]
        source: Option<BoxError>,
    },
}

impl ModelError {
    /// A [`ModelError::Other`] from a message.
    pub fn other(message: impl Into<String>) -> Self {
        Self::Other {
            message: message.into(),
            source: None,
        }
    }

    /// A [`ModelError::MalformedResponse`] from a message.
    pub fn malformed(message: impl Into<String>) -> Self {
        Self::MalformedResponse {
            message: message.into(),
        }
    }
}

impl Classify for ModelError {
    fn classify(&self) -> Classification {
        use ErrorKind as K;
        use Severity as S;
        match self {
            Self::RateLimited { retry_after, .. } => Classification {
                retry_after: *retry_after,
                ..Classification::new(K::RateLimited, S::Medium, true)
            },
            Self::Server {
                status,
                retry_after,
                ..
            } => {
                let kind = if matches!(status, 503 | 529) {
                    K::Resource
                } else {
                    K::Network
                };
                Classification {
                    retry_after: *retry_after,
                    ..Classification::new(kind, S::High, true)
                }
            }
            Self::Auth { .. } => Classification::new(K::Auth, S::Critical, false),
            Self::ContextLength { .. } => Classification::new(K::Resource, S::High, false),
            Self::InvalidRequest { .. } => Classification::new(K::Validation, S::High, false),
            Self::Connection { .. } => Classification::new(K::Network, S::Medium, true),
            Self::Timeout { .. } => Classification::new(K::Timeout, S::Medium, true),
            Self::MalformedResponse { .. } => Classification::new(K::Validation, S::Medium, true),
            Self::CircuitOpen { retry_in, .. } => Classification {
                retry_after: Some(*retry_in),
                ..Classification::new(K::Resource, S::High, true)
            },
            Self::Cancelled => Classification::new(K::Unknown, S::Low, false),
            Self::Other { message, .. } => Classification::from_message(message),
        }
    }
}

/// A failed tool call. The agent turns it into a tool result the model sees.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ToolError {
    /// The model asked for a tool the agent does not have.
    #[error("unknown tool `{name}`")]
    NotFound {
        /// The name asked for.
        name: String,
    },
    /// The arguments do not match the tool's schema.
    #[error("invalid arguments: {message}")]
    InvalidArguments {
        /// What was wrong, naming the argument.
        message: String,
    },
    /// The call was refused: by a person, by the approval policy, or by the tool's confinement.
    #[error("denied: {reason}")]
    Denied {
        /// Why.
        reason: String,
    },
    /// The tool took longer than its time limit.
    #[error("tool timed out after {:.1}s", .after.as_secs_f64())]
    Timeout {
        /// The limit.
        after: Duration,
    },
    /// The tool panicked; the panic was caught.
    #[error("tool panicked: {message}")]
    Panicked {
        /// The panic message.
        message: String,
    },
    /// The tool ran and failed.
    #[error("{message}")]
    Failed {
        /// What failed.
        message: String,
        /// Whether the same call may succeed if tried again.
        retryable: bool,
        /// The underlying error.
        #[source]
        source: Option<BoxError>,
    },
    /// A circuit breaker is open for this tool; it was not called.
    #[error("circuit open for tool {key}; next probe in {:.1}s", .retry_in.as_secs_f64())]
    CircuitOpen {
        /// The breaker's key.
        key: String,
        /// How long until the breaker lets a probe through.
        retry_in: Duration,
    },
    /// The call was cancelled.
    #[error("tool call cancelled")]
    Cancelled,
}

impl ToolError {
    /// A non-retryable [`ToolError::Failed`].
    pub fn failed(message: impl Into<String>) -> Self {
        Self::Failed {
            message: message.into(),
            retryable: false,
            source: None,
        }
    }

    /// A retryable [`ToolError::Failed`].
    pub fn transient(message: impl Into<String>) -> Self {
        Self::Failed {
            message: message.into(),
            retryable: true,
            source: None,
        }
    }

    /// A [`ToolError::InvalidArguments`].
    pub fn invalid_arguments(message: impl Into<String>) -> Self {
        Self::InvalidArguments {
            message: message.into(),
        }
    }

    /// A [`ToolError::Denied`].
    pub fn denied(reason: impl Into<String>) -> Self {
        Self::Denied {
            reason: reason.into(),
        }
    }
}

impl Classify for ToolError {
    fn classify(&self) -> Classification {
        use ErrorKind as K;
        use Severity as S;
        match self {
            Self::NotFound { .. } | Self::InvalidArguments { .. } => {
                Classification::new(K::Validation, S::Low, false)
            }
            Self::Denied { .. } => Classification::new(K::Auth, S::Medium, false),
            Self::Timeout { .. } => Classification::new(K::Timeout, S::Medium, true),
            Self::Panicked { .. } => Classification::new(K::Tool, S::High, false),
            Self::Failed { retryable, .. } => Classification::new(K::Tool, S::Medium, *retryable),
            Self::CircuitOpen { retry_in, .. } => Classification {
                retry_after: Some(*retry_in),
                ..Classification::new(K::Resource, S::High, true)
            },
            Self::Cancelled => Classification::new(K::Unknown, S::Low, false),
        }
    }
}

/// Why an agent run failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentErrorKind {
    /// The run used all its iterations without a final answer.
    #[error("no answer after {limit} iterations (the iteration limit)")]
    MaxIterations {
        /// The limit.
        limit: u32,
    },
    /// A model call failed.
    #[error("model call failed")]
    Model(#[source] ModelError),
    /// The run took longer than its time limit.
    #[error("run timed out after {:.1}s", .after.as_secs_f64())]
    Timeout {
        /// The limit.
        after: Duration,
    },
    /// The run was cancelled.
    #[error("run cancelled")]
    Cancelled,
    /// A plugin stopped the run.
    #[error("stopped by plugin `{plugin}`: {reason}")]
    Stopped {
        /// The plugin's name.
        plugin: String,
        /// Its reason.
        reason: String,
    },
    /// On resuming, a call of a non-idempotent tool had started before the crash and has no
    /// result; it is not run again blindly.
    #[error(
        "tool call `{tool}` ({call_id}) started before the run was interrupted and has no \
         recorded result; the tool is not idempotent, so it is not run again"
    )]
    Interrupted {
        /// The tool.
        tool: String,
        /// The call's id.
        call_id: String,
    },
    /// Saving the run's state failed.
    #[error("saving the run's checkpoint failed: {message}")]
    Checkpoint {
        /// What failed.
        message: String,
    },
    /// A plugin failed to load.
    #[error("plugin `{plugin}` failed to load: {message}")]
    Plugin {
        /// The plugin's name.
        plugin: String,
        /// What failed.
        message: String,
    },
}

/// A failed agent run, with what the run did before it failed.
#[derive(Debug)]
pub struct AgentError {
    inner: Box<AgentErrorInner>,
}

#[derive(Debug)]
struct AgentErrorInner {
    kind: AgentErrorKind,
    iterations: u32,
    transcript: Vec<Message>,
    usage: Usage,
}

impl AgentError {
    /// An error of this kind after `iterations` model turns, with the partial transcript.
    pub fn new(
        kind: AgentErrorKind,
        iterations: u32,
        transcript: Vec<Message>,
        usage: Usage,
    ) -> Self {
        Self {
            inner: Box::new(AgentErrorInner {
                kind,
                iterations,
                transcript,
                usage,
            }),
        }
    }

    /// Why the run failed.
    pub fn kind(&self) -> &AgentErrorKind {
        &self.inner.kind
    }

    /// How many model turns ran.
    pub fn iterations(&self) -> u32 {
        self.inner.iterations
    }

    /// The conversation up to the failure.
    pub fn transcript(&self) -> &[Message] {
        &self.inner.transcript
    }

    /// Tokens used before the failure.
    pub fn usage(&self) -> Usage {
        self.inner.usage
    }

    /// The model error, if a model call failed.
    pub fn model_error(&self) -> Option<&ModelError> {
        match &self.inner.kind {
            AgentErrorKind::Model(e) => Some(e),
            _ => None,
        }
    }

    /// Whether the run was cancelled.
    pub fn is_cancelled(&self) -> bool {
        matches!(self.inner.kind, AgentErrorKind::Cancelled)
    }

    /// Whether the run hit its time limit.
    pub fn is_timeout(&self) -> bool {
        matches!(self.inner.kind, AgentErrorKind::Timeout { .. })
    }
}

impl fmt::Display for AgentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.inner.kind {
            // The model error is the whole story; say it once here, keep it as the source.
            AgentErrorKind::Model(e) => {
                write!(
                    f,
                    "model call failed after {} iteration(s): {e}",
                    self.inner.iterations
                )
            }
            kind => fmt::Display::fmt(kind, f),
        }
    }
}

impl StdError for AgentError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match &self.inner.kind {
            AgentErrorKind::Model(e) => e.source(),
            _ => None,
        }
    }
}

impl Classify for AgentError {
    fn classify(&self) -> Classification {
        use ErrorKind as K;
        use Severity as S;
        match &self.inner.kind {
            AgentErrorKind::Model(e) => e.classify(),
            AgentErrorKind::MaxIterations { .. } => {
                Classification::new(K::Resource, S::Medium, false)
            }
            AgentErrorKind::Timeout { .. } => Classification::new(K::Timeout, S::Medium, true),
            AgentErrorKind::Cancelled => Classification::new(K::Unknown, S::Low, false),
            AgentErrorKind::Stopped { .. } => Classification::new(K::Validation, S::Medium, false),
            AgentErrorKind::Plugin { .. } => Classification::new(K::Unknown, S::High, false),
            AgentErrorKind::Interrupted { .. } => Classification::new(K::Tool, S::High, false),
            AgentErrorKind::Checkpoint { .. } => Classification::new(K::Resource, S::High, true),
        }
    }
}

fn fmt_after(d: Option<Duration>) -> String {
    d.map(|d| format!(" (retry after {:.1}s)", d.as_secs_f64()))
        .unwrap_or_default()
}

fn fmt_limit(d: Option<Duration>) -> String {
    d.map(|d| format!(" after {:.1}s", d.as_secs_f64()))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_carries_retry_after() {
        let e = ModelError::RateLimited {
            message: "slow down".into(),
            retry_after: Some(Duration::from_secs(3)),
        };
        let c = e.classify();
        assert_eq!(c.kind, ErrorKind::RateLimited);
        assert!(c.retryable);
        assert_eq!(c.retry_after, Some(Duration::from_secs(3)));
        assert_eq!(
            e.to_string(),
            "rate limited by the provider (retry after 3.0s): slow down"
        );
    }

    #[test]
    fn auth_and_validation_are_not_retryable() {
        let auth = ModelError::Auth {
            status: 401,
            message: "bad key".into(),
        };
        assert_eq!(auth.classify().kind, ErrorKind::Auth);
        assert_eq!(auth.classify().severity, Severity::Critical);
        assert!(!auth.is_retryable());
        let ctx = ModelError::ContextLength {
            message: "too long".into(),
        };
        assert_eq!(ctx.classify().kind, ErrorKind::Resource);
        assert!(!ctx.is_retryable());
        assert!(!ToolError::invalid_arguments("x").is_retryable());
    }

    #[test]
    fn foreign_messages_classify_as_last_resort() {
        assert_eq!(
            Classification::from_message("operation timed out").kind,
            ErrorKind::Timeout
        );
        assert_eq!(
            Classification::from_message("connection reset by peer").kind,
            ErrorKind::Network
        );
        assert_eq!(
            Classification::from_message("Permission denied").kind,
            ErrorKind::Auth
        );
        assert_eq!(
            Classification::from_message("whatever").kind,
            ErrorKind::Unknown
        );
    }

    #[test]
    fn agent_error_reports_iterations_and_keeps_transcript() {
        let e = AgentError::new(
            AgentErrorKind::MaxIterations { limit: 3 },
            3,
            vec![Message::user("hi")],
            Usage::default(),
        );
        assert_eq!(
            e.to_string(),
            "no answer after 3 iterations (the iteration limit)"
        );
        assert_eq!(e.iterations(), 3);
        assert_eq!(e.transcript().len(), 1);
    }
}
