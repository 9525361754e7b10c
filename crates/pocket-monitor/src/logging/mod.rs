//! Logs: the subscriber a binary installs — console, rolling files, sampling, and the ring of
//! recent entries — from a [`MonitorConfig`].
//!
//! Libraries only emit `tracing` events; the binary calls [`install`] once and keeps the
//! returned [`LogGuard`] alive until exit (dropping it flushes the files).
//!
//! The stack, outermost first: the level filter ([`EnvFilter`] syntax), the [`SamplingLayer`]
//! (so every sink sees the same events), then the sinks: console (stderr), files
//! ([`RollingFile`] behind tracing-appender's non-blocking worker, so a slow disk never
//! blocks a run; lines beyond its 128k-line buffer are dropped and counted), and the
//! [`RecentLogs`] ring.

mod recent;
mod rolling;
mod sampling;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tracing::Subscriber;
use tracing_appender::non_blocking::{ErrorCounter, NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::fmt::writer::BoxMakeWriter;
use tracing_subscriber::layer::{Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::{SubscriberInitExt, TryInitError};

pub use recent::{FieldValue, LogEntry, LogLevel, LogQuery, LogSummary, RecentLayer, RecentLogs};
pub use rolling::{Clock, ManualClock, RollingFile, RollingOptions, SystemClock};
pub use sampling::{Sampler, SamplingLayer};

use crate::config::{ConfigError, LogFormat, MonitorConfig};

/// A boxed layer, as [`LogBuilder::layer`] returns it.
pub type BoxLayer<S> = Box<dyn Layer<S> + Send + Sync + 'static>;

/// Why the log stack could not be built or installed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LogError {
    /// A `[monitoring]` value is wrong.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The log directory or file could not be opened.
    #[error("cannot open the log file in {}", path.display())]
    Io {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The OTLP exporter could not be started.
    #[error("cannot start the OTLP exporter: {0}")]
    Otlp(String),
    /// A global subscriber was installed already.
    #[error("a global tracing subscriber is already installed")]
    AlreadyInstalled(#[source] TryInitError),
}

/// Keeps the file writer alive (dropping it flushes), and gives the ring of recent entries.
#[must_use = "dropping the guard stops the file writer"]
pub struct LogGuard {
    recent: RecentLogs,
    files: Option<FileSink>,
    #[cfg(feature = "otlp")]
    _otlp: crate::otlp::Providers,
}

struct FileSink {
    dir: PathBuf,
    first_file: PathBuf,
    dropped: ErrorCounter,
    deleted: Arc<AtomicU64>,
    errors: Arc<AtomicU64>,
    // Last: dropping it flushes and joins the writer thread.
    _worker: WorkerGuard,
}

impl std::fmt::Debug for LogGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogGuard")
            .field("recent", &self.recent)
            .field("log_dir", &self.log_dir())
            .finish_non_exhaustive()
    }
}

impl LogGuard {
    /// The ring of recent entries (cheap clone), for the API, the dashboard and the health
    /// report.
    pub fn recent(&self) -> &RecentLogs {
        &self.recent
    }

    /// The directory of the log files, if files are written.
    pub fn log_dir(&self) -> Option<&Path> {
        self.files.as_ref().map(|f| f.dir.as_path())
    }

    /// The file opened at start-up (later ones follow the rotation).
    pub fn first_file(&self) -> Option<&Path> {
        self.files.as_ref().map(|f| f.first_file.as_path())
    }

    /// Lines dropped because the file writer fell more than 128k lines behind.
    pub fn dropped_lines(&self) -> usize {
        self.files.as_ref().map_or(0, |f| f.dropped.dropped_lines())
    }

    /// Old files deleted by retention since start-up.
    pub fn deleted_files(&self) -> u64 {
        self.files
            .as_ref()
            .map_or(0, |f| f.deleted.load(Ordering::Relaxed))
    }

    /// Failed rotations or deletions since start-up.
    pub fn file_errors(&self) -> u64 {
        self.files
            .as_ref()
            .map_or(0, |f| f.errors.load(Ordering::Relaxed))
    }
}

/// Builds the log stack; [`install`] and [`layer`] are the short forms.
#[must_use]
pub struct LogBuilder<'a> {
    config: &'a MonitorConfig,
    clock: Arc<dyn Clock>,
    console: Option<BoxMakeWriter>,
    recent: Option<RecentLogs>,
}

impl<'a> LogBuilder<'a> {
    /// A builder for this configuration.
    pub fn new(config: &'a MonitorConfig) -> Self {
        Self {
            config,
            clock: Arc::new(SystemClock),
            console: None,
            recent: None,
        }
    }

    /// The clock of file rotation. Default: the system's.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Where console lines go. Default: stderr, with colours when it is a terminal.
    pub fn console_writer<W>(mut self, writer: W) -> Self
    where
        W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
    {
        self.console = Some(BoxMakeWriter::new(writer));
        self
    }

    /// The ring to fill. Default: a new one of `recent_logs` entries.
    pub fn recent(mut self, recent: RecentLogs) -> Self {
        self.recent = Some(recent);
        self
    }

    /// The whole stack as one layer, to add to a subscriber of your own (with more layers,
    /// such as OpenTelemetry's).
    ///
    /// # Errors
    /// A bad `[monitoring]` value, or a log directory that cannot be opened.
    pub fn layer<S>(self) -> Result<(BoxLayer<S>, LogGuard), LogError>
    where
        S: Subscriber + for<'l> LookupSpan<'l> + Send + Sync,
    {
        let config = self.config;
        config.validate()?;
        let filter = EnvFilter::builder()
            .parse(&config.level)
            .map_err(|e| ConfigError::new("level", e.to_string()))?;
        let sampler = SamplingLayer::new(Sampler::new(config.sample_rate, config.sample_seed));
        let recent = self
            .recent
            .unwrap_or_else(|| RecentLogs::new(config.recent_logs));

        let mut sinks: Vec<BoxLayer<S>> = Vec::with_capacity(3);
        if config.console {
            let layer = match self.console {
                Some(writer) => fmt_layer(config.format, writer, false),
                None => {
                    let ansi = std::io::stderr().is_terminal();
                    fmt_layer(config.format, std::io::stderr, ansi)
                }
            };
            match &config.console_level {
                Some(level) => {
                    let console_filter = EnvFilter::builder()
                        .parse(level)
                        .map_err(|e| ConfigError::new("console_level", e.to_string()))?;
                    sinks.push(layer.with_filter(console_filter).boxed());
                }
                None => sinks.push(layer),
            }
        }
        let mut files = None;
        if let Some(dir) = &config.log_dir {
            let options = RollingOptions::from_config(config);
            let file =
                RollingFile::open(dir, options, self.clock).map_err(|source| LogError::Io {
                    path: dir.clone(),
                    source,
                })?;
            let first_file = file.current_path().to_path_buf();
            let (deleted, errors) = (file.deleted_counter(), file.error_counter());
            let (writer, worker) = NonBlockingBuilder::default()
                .lossy(true)
                .thread_name("pocket-log-files")
                .finish(file);
            files = Some(FileSink {
                dir: dir.clone(),
                first_file,
                dropped: writer.error_counter(),
                deleted,
                errors,
                _worker: worker,
            });
            sinks.push(fmt_layer(config.file_format, writer, false));
        }
        #[cfg(feature = "otlp")]
        let otlp = {
            let (layer, providers) = crate::otlp::start::<S>(&config.otlp)?;
            sinks.extend(layer);
            providers
        };
        sinks.push(Box::new(recent.layer()));
        // The filter goes outermost: composed the other way, the stack loses the filter's
        // level hint and every disabled event pays a dynamic check (17 ns instead of ~1 ns).
        let layer = sampler.and_then(sinks).and_then(filter).boxed();
        let guard = LogGuard {
            recent,
            files,
            #[cfg(feature = "otlp")]
            _otlp: otlp,
        };
        Ok((layer, guard))
    }

    /// Builds the stack and installs it as the global subscriber.
    ///
    /// # Errors
    /// As [`layer`](Self::layer), and [`LogError::AlreadyInstalled`].
    pub fn install(self) -> Result<LogGuard, LogError> {
        let (layer, guard) = self.layer()?;
        tracing_subscriber::registry()
            .with(layer)
            .try_init()
            .map_err(LogError::AlreadyInstalled)?;
        Ok(guard)
    }
}

/// Installs the global subscriber that `[monitoring]` describes; for the binary's `main`.
///
/// ```no_run
/// let config = pocket_monitor::MonitorConfig {
///     log_dir: Some("logs".into()),
///     ..Default::default()
/// };
/// let logs = pocket_monitor::logging::install(&config)?;
/// tracing::info!(component = "system", "started");
/// println!("logs in {:?}", logs.log_dir());
/// # Ok::<(), pocket_monitor::logging::LogError>(())
/// ```
///
/// # Errors
/// A bad `[monitoring]` value, a log directory that cannot be opened, or a subscriber that is
/// already installed.
pub fn install(config: &MonitorConfig) -> Result<LogGuard, LogError> {
    LogBuilder::new(config).install()
}

/// The stack as one layer, to compose with other layers; see [`LogBuilder::layer`].
///
/// # Errors
/// As [`LogBuilder::layer`].
pub fn layer<S>(config: &MonitorConfig) -> Result<(BoxLayer<S>, LogGuard), LogError>
where
    S: Subscriber + for<'l> LookupSpan<'l> + Send + Sync,
{
    LogBuilder::new(config).layer()
}

fn fmt_layer<S, W>(format: LogFormat, writer: W, ansi: bool) -> BoxLayer<S>
where
    S: Subscriber + for<'l> LookupSpan<'l>,
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let base = tracing_subscriber::fmt::layer()
        .with_writer(writer)
        .with_ansi(ansi);
    match format {
        LogFormat::Pretty => base.boxed(),
        LogFormat::Json => base
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(true)
            .boxed(),
    }
}
