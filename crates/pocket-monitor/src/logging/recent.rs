//! A bounded in-memory ring of recent log entries, for the API and the dashboard.

use std::collections::VecDeque;
use std::fmt::{self, Write as _};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::SystemTime;

use serde::Serialize;
use serde::ser::SerializeMap;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;

use crate::CRITICAL_TARGET;

/// The seed's log levels: tracing's, plus `critical` (an ERROR event with the critical marker).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Very detailed.
    Trace,
    /// Detailed.
    Debug,
    /// Normal operation.
    Info,
    /// Something to watch.
    Warn,
    /// Something failed.
    Error,
    /// Needs a person now: an ERROR event from [`critical!`](crate::critical) (target
    /// `pocket::critical`) or with the field `critical = true`.
    Critical,
}

impl LogLevel {
    fn from_tracing(level: &Level) -> Self {
        match *level {
            Level::TRACE => Self::Trace,
            Level::DEBUG => Self::Debug,
            Level::INFO => Self::Info,
            Level::WARN => Self::Warn,
            _ => Self::Error,
        }
    }

    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Trace => "trace",
            Self::Debug => "debug",
            Self::Info => "info",
            Self::Warn => "warn",
            Self::Error => "error",
            Self::Critical => "critical",
        }
    }
}

/// A field value of a log entry.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum FieldValue {
    /// A boolean.
    Bool(bool),
    /// A signed integer.
    I64(i64),
    /// An unsigned integer.
    U64(u64),
    /// A float.
    F64(f64),
    /// Text (also `%display` and `?debug` values).
    Str(String),
}

/// One log entry, shaped like the seed's: time, level, agent, component, message, metadata,
/// performance.
///
/// Conventional field names are lifted out of the metadata: `message`, `agent` (or
/// `gen_ai.agent.name`), `run_id`, `component`, `duration_ms`, `memory_bytes`, `critical`.
/// `agent` and `run_id` are inherited from the enclosing spans (the core's `invoke_agent`).
#[derive(Debug, Clone, PartialEq)]
pub struct LogEntry {
    /// When the event happened.
    pub at: SystemTime,
    /// Its level.
    pub level: LogLevel,
    /// Its target (the module path unless set).
    pub target: &'static str,
    /// The message.
    pub message: String,
    /// The agent, from the event or an enclosing span.
    pub agent: Option<Arc<str>>,
    /// The run, from the event or an enclosing span.
    pub run_id: Option<Arc<str>>,
    /// The component (`execution`, `tool`, `model`, `system`, …); empty when none.
    pub component: String,
    /// Performance: how long the operation took, if the event said.
    pub duration_ms: Option<f64>,
    /// Performance: the process memory, if the event said.
    pub memory_bytes: Option<u64>,
    /// Every other field.
    pub fields: Vec<(&'static str, FieldValue)>,
}

impl LogEntry {
    fn empty() -> Self {
        Self {
            at: SystemTime::UNIX_EPOCH,
            level: LogLevel::Info,
            target: "",
            message: String::new(),
            agent: None,
            run_id: None,
            component: String::new(),
            duration_ms: None,
            memory_bytes: None,
            fields: Vec::new(),
        }
    }

    /// Clears the entry, keeping its buffers for the next event: text buffers go to this
    /// thread's pool, agent and run id to the caller (the next event often has the same).
    fn reset(&mut self) -> Recycled {
        self.message.clear();
        self.component.clear();
        recycle_strings(&mut self.fields);
        self.duration_ms = None;
        self.memory_bytes = None;
        Recycled {
            agent: self.agent.take(),
            run_id: self.run_id.take(),
        }
    }

    /// The value of a metadata field.
    pub fn field(&self, name: &str) -> Option<&FieldValue> {
        self.fields.iter().find(|(n, _)| *n == name).map(|(_, v)| v)
    }
}

impl Serialize for LogEntry {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        struct Fields<'a>(&'a [(&'static str, FieldValue)]);
        impl Serialize for Fields<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut map = s.serialize_map(Some(self.0.len()))?;
                for (k, v) in self.0 {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
        }
        #[derive(Serialize)]
        struct Performance {
            #[serde(skip_serializing_if = "Option::is_none")]
            duration_ms: Option<f64>,
            #[serde(skip_serializing_if = "Option::is_none")]
            memory_bytes: Option<u64>,
        }
        let at = self
            .at
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("at", &at)?;
        map.serialize_entry("level", &self.level)?;
        map.serialize_entry("target", self.target)?;
        map.serialize_entry("message", &self.message)?;
        if let Some(agent) = &self.agent {
            map.serialize_entry("agent", &**agent)?;
        }
        if let Some(run_id) = &self.run_id {
            map.serialize_entry("run_id", &**run_id)?;
        }
        if !self.component.is_empty() {
            map.serialize_entry("component", &self.component)?;
        }
        if !self.fields.is_empty() {
            map.serialize_entry("metadata", &Fields(&self.fields))?;
        }
        if self.duration_ms.is_some() || self.memory_bytes.is_some() {
            let perf = Performance {
                duration_ms: self.duration_ms,
                memory_bytes: self.memory_bytes,
            };
            map.serialize_entry("performance", &perf)?;
        }
        map.end()
    }
}

/// What an evicted entry leaves for the next one.
#[derive(Default)]
struct Recycled {
    agent: Option<Arc<str>>,
    run_id: Option<Arc<str>>,
}

/// Most text buffers one thread keeps for reuse.
const POOL: usize = 32;

thread_local! {
    static STRINGS: std::cell::RefCell<Vec<String>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn recycle_strings(fields: &mut Vec<(&'static str, FieldValue)>) {
    for (_, value) in fields.drain(..) {
        if let FieldValue::Str(s) = value {
            give_back(s);
        }
    }
}

fn give_back(mut s: String) {
    STRINGS.with(|pool| {
        let mut pool = pool.borrow_mut();
        if pool.len() < POOL {
            s.clear();
            pool.push(s);
        }
    });
}

fn pooled_string() -> String {
    STRINGS
        .with(|pool| pool.borrow_mut().pop())
        .unwrap_or_default()
}

/// The recycled `Arc` when it holds the same text, else a new one.
fn reuse_arc(recycled: &mut Option<Arc<str>>, value: &str) -> Arc<str> {
    match recycled.take() {
        Some(arc) if *arc == *value => arc,
        _ => Arc::from(value),
    }
}

/// Counts over the most recent entries (the seed's `logSummary`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct LogSummary {
    /// Entries seen since start-up (after filtering and sampling).
    pub total: u64,
    /// Entries in the ring now.
    pub buffered: usize,
    /// Errors (and criticals) among the last `window` entries.
    pub recent_errors: usize,
    /// Warnings among the last `window` entries.
    pub recent_warnings: usize,
    /// How many entries the counts looked at.
    pub window: usize,
}

/// What [`RecentLogs::query`] returns.
#[derive(Debug, Clone, Default)]
pub struct LogQuery {
    /// Only entries at or above this level. Default: all.
    pub min_level: Option<LogLevel>,
    /// Only entries of this agent. Default: all.
    pub agent: Option<String>,
    /// At most this many, the newest. Default: 100.
    pub limit: Option<usize>,
}

/// The ring of recent entries: a cheap-clone handle, filled by [`RecentLayer`].
#[derive(Clone)]
pub struct RecentLogs {
    inner: Arc<Mutex<Ring>>,
}

struct Ring {
    entries: VecDeque<LogEntry>,
    capacity: usize,
    total: u64,
}

impl fmt::Debug for RecentLogs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ring = self.lock();
        f.debug_struct("RecentLogs")
            .field("capacity", &ring.capacity)
            .field("buffered", &ring.entries.len())
            .field("total", &ring.total)
            .finish()
    }
}

impl RecentLogs {
    /// A ring keeping the last `capacity` entries (at least 1).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            inner: Arc::new(Mutex::new(Ring {
                entries: VecDeque::with_capacity(capacity.min(1024)),
                capacity,
                total: 0,
            })),
        }
    }

    /// The layer that fills this ring.
    pub fn layer(&self) -> RecentLayer {
        RecentLayer { logs: self.clone() }
    }

    fn lock(&self) -> MutexGuard<'_, Ring> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// How many entries the ring keeps at most.
    pub fn capacity(&self) -> usize {
        self.lock().capacity
    }

    /// How many entries it holds now.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The newest `n` entries, oldest first.
    pub fn latest(&self, n: usize) -> Vec<LogEntry> {
        let ring = self.lock();
        let skip = ring.entries.len().saturating_sub(n);
        ring.entries.iter().skip(skip).cloned().collect()
    }

    /// The newest entries that match, oldest first.
    pub fn query(&self, query: &LogQuery) -> Vec<LogEntry> {
        let limit = query.limit.unwrap_or(100);
        let ring = self.lock();
        let mut out: Vec<LogEntry> = ring
            .entries
            .iter()
            .rev()
            .filter(|e| query.min_level.is_none_or(|min| e.level >= min))
            .filter(|e| {
                query
                    .agent
                    .as_deref()
                    .is_none_or(|a| e.agent.as_deref() == Some(a))
            })
            .take(limit)
            .cloned()
            .collect();
        out.reverse();
        out
    }

    /// Counts over the last `window` entries.
    pub fn summary(&self, window: usize) -> LogSummary {
        let ring = self.lock();
        let recent = ring.entries.iter().rev().take(window);
        let (mut errors, mut warnings, mut seen) = (0, 0, 0);
        for e in recent {
            seen += 1;
            match e.level {
                LogLevel::Error | LogLevel::Critical => errors += 1,
                LogLevel::Warn => warnings += 1,
                _ => {}
            }
        }
        LogSummary {
            total: ring.total,
            buffered: ring.entries.len(),
            recent_errors: errors,
            recent_warnings: warnings,
            window: seen,
        }
    }

    /// Empties the ring (the total stays).
    pub fn clear(&self) {
        self.lock().entries.clear();
    }

    /// A spare entry: the oldest one when the ring is full, so its buffers are reused.
    fn spare(&self) -> (LogEntry, Recycled) {
        let mut ring = self.lock();
        if ring.entries.len() >= ring.capacity
            && let Some(mut e) = ring.entries.pop_front()
        {
            drop(ring);
            let recycled = e.reset();
            return (e, recycled);
        }
        (LogEntry::empty(), Recycled::default())
    }

    fn push(&self, entry: LogEntry) {
        let mut ring = self.lock();
        while ring.entries.len() >= ring.capacity {
            ring.entries.pop_front();
        }
        ring.entries.push_back(entry);
        ring.total += 1;
    }
}

/// The `tracing` layer that records events into a [`RecentLogs`].
#[derive(Debug, Clone)]
pub struct RecentLayer {
    logs: RecentLogs,
}

/// `agent` and `run_id` of a span, kept in its extensions for the events inside it.
#[derive(Debug, Default)]
struct SpanTags {
    agent: Option<Arc<str>>,
    run_id: Option<Arc<str>>,
}

impl Visit for SpanTags {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "agent" | "gen_ai.agent.name" => self.agent = Some(Arc::from(value)),
            "run_id" => self.run_id = Some(Arc::from(value)),
            _ => {}
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if matches!(field.name(), "agent" | "gen_ai.agent.name" | "run_id") {
            self.record_str(field, &format!("{value:?}"));
        }
    }
}

impl<S> Layer<S> for RecentLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let wanted = attrs
            .metadata()
            .fields()
            .iter()
            .any(|f| matches!(f.name(), "agent" | "gen_ai.agent.name" | "run_id"));
        if !wanted {
            return;
        }
        let mut tags = SpanTags::default();
        attrs.record(&mut tags);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(tags);
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let meta = event.metadata();
        let (mut entry, mut recycled) = self.logs.spare();
        entry.at = SystemTime::now();
        entry.level = LogLevel::from_tracing(meta.level());
        entry.target = meta.target();
        let mut critical = meta.target() == CRITICAL_TARGET;
        event.record(&mut EntryVisitor {
            entry: &mut entry,
            critical: &mut critical,
            recycled: &mut recycled,
        });
        if critical && entry.level == LogLevel::Error {
            entry.level = LogLevel::Critical;
        }
        if (entry.agent.is_none() || entry.run_id.is_none())
            && let Some(scope) = ctx.event_scope(event)
        {
            for span in scope {
                let ext = span.extensions();
                if let Some(tags) = ext.get::<SpanTags>() {
                    if entry.agent.is_none() {
                        entry.agent.clone_from(&tags.agent);
                    }
                    if entry.run_id.is_none() {
                        entry.run_id.clone_from(&tags.run_id);
                    }
                }
                if entry.agent.is_some() && entry.run_id.is_some() {
                    break;
                }
            }
        }
        self.logs.push(entry);
    }
}

struct EntryVisitor<'a> {
    entry: &'a mut LogEntry,
    critical: &'a mut bool,
    recycled: &'a mut Recycled,
}

impl EntryVisitor<'_> {
    fn other(&mut self, field: &Field, value: FieldValue) {
        self.entry.fields.push((field.name(), value));
    }
}

impl Visit for EntryVisitor<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        match field.name() {
            "duration_ms" => self.entry.duration_ms = Some(value),
            "memory_bytes" if value >= 0.0 => self.entry.memory_bytes = Some(value as u64),
            _ => self.other(field, FieldValue::F64(value)),
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        match field.name() {
            "duration_ms" => self.entry.duration_ms = Some(value as f64),
            "memory_bytes" if value >= 0 => self.entry.memory_bytes = Some(value.unsigned_abs()),
            _ => self.other(field, FieldValue::I64(value)),
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        match field.name() {
            "duration_ms" => self.entry.duration_ms = Some(value as f64),
            "memory_bytes" => self.entry.memory_bytes = Some(value),
            _ => self.other(field, FieldValue::U64(value)),
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        if field.name() == "critical" {
            *self.critical |= value;
        } else {
            self.other(field, FieldValue::Bool(value));
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "message" => self.entry.message.push_str(value),
            "component" => self.entry.component.push_str(value),
            "agent" | "gen_ai.agent.name" => {
                self.entry.agent = Some(reuse_arc(&mut self.recycled.agent, value));
            }
            "run_id" => self.entry.run_id = Some(reuse_arc(&mut self.recycled.run_id, value)),
            _ => {
                let mut s = pooled_string();
                s.push_str(value);
                self.other(field, FieldValue::Str(s));
            }
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        match field.name() {
            // `format_args!` messages arrive here; write into the reused buffer.
            "message" => {
                let _ = write!(self.entry.message, "{value:?}");
            }
            "component" => {
                let _ = write!(self.entry.component, "{value:?}");
            }
            "agent" | "gen_ai.agent.name" | "run_id" => {
                let mut s = pooled_string();
                let _ = write!(s, "{value:?}");
                self.record_str(field, &s);
                give_back(s);
            }
            _ => {
                let mut s = pooled_string();
                let _ = write!(s, "{value:?}");
                self.other(field, FieldValue::Str(s));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    #[test]
    fn entries_are_shaped_like_the_seed() {
        let logs = RecentLogs::new(3);
        let subscriber = tracing_subscriber::registry().with(logs.layer());
        tracing::subscriber::with_default(subscriber, || {
            let span =
                tracing::info_span!("invoke_agent", gen_ai.agent.name = "writer", run_id = "r1");
            let _g = span.enter();
            tracing::info!(
                component = "execution",
                duration_ms = 12.5,
                memory_bytes = 1024u64,
                tool = "calc",
                "run finished"
            );
            crate::critical!(component = "system", "disk full");
            tracing::warn!(agent = "other", "{} retries", 3);
            tracing::debug!("four");
        });
        assert_eq!(logs.len(), 3, "the ring keeps the last 3");
        let all = logs.latest(10);
        assert_eq!(all[0].level, LogLevel::Critical);
        assert_eq!(all[0].agent.as_deref(), Some("writer"));
        assert_eq!(all[1].agent.as_deref(), Some("other"));
        assert_eq!(all[1].message, "3 retries");
        assert_eq!(logs.summary(100).recent_errors, 1);
        assert_eq!(logs.summary(100).total, 4);
        let json = serde_json::to_value(&all[0]).unwrap();
        assert_eq!(json["level"], "critical");
        assert_eq!(json["component"], "system");
        assert_eq!(json["run_id"], "r1");
    }

    #[test]
    fn a_full_ring_reuses_the_evicted_entrys_agent() {
        let logs = RecentLogs::new(1);
        let subscriber = tracing_subscriber::registry().with(logs.layer());
        let agents = tracing::subscriber::with_default(subscriber, || {
            let mut agents = Vec::new();
            for i in 0..3 {
                tracing::info!(agent = "same", i, note = %"text", "event");
                agents.push(logs.latest(1).pop().unwrap().agent.unwrap());
            }
            agents
        });
        assert!(
            Arc::ptr_eq(&agents[1], &agents[2]),
            "no new Arc for the same agent"
        );
        assert_eq!(logs.summary(10).total, 3);
        let last = logs.latest(1).pop().unwrap();
        assert_eq!(last.field("note"), Some(&FieldValue::Str("text".into())));
        assert_eq!(last.field("i"), Some(&FieldValue::I64(2)));
    }

    #[test]
    fn performance_and_metadata_serialize() {
        let logs = RecentLogs::new(10);
        let subscriber = tracing_subscriber::registry().with(logs.layer());
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(
                component = "execution",
                duration_ms = 12.5,
                memory_bytes = 1024u64,
                tool = "calc",
                ok = true,
                "done"
            );
        });
        let json = serde_json::to_value(logs.latest(1).pop().unwrap()).unwrap();
        assert_eq!(json["performance"]["duration_ms"], 12.5);
        assert_eq!(json["performance"]["memory_bytes"], 1024);
        assert_eq!(json["metadata"]["tool"], "calc");
        assert_eq!(json["metadata"]["ok"], true);
        let q = logs.query(&LogQuery {
            min_level: Some(LogLevel::Warn),
            ..LogQuery::default()
        });
        assert!(q.is_empty());
    }
}
