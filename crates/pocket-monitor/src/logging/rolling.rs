//! Log files with rotation by time (hourly, daily) and size, and retention by age and count.
//!
//! Neither tracing-appender (time rotation only, `prefix.date.suffix` names, count limit only)
//! nor file-rotate (no date in the current file's name, no injectable clock) gives the seed's
//! `app_YYYY-MM-DD.log` with age *and* count limits, so this writer does the file part and
//! tracing-appender's non-blocking worker does the threading.
//!
//! Names, all UTC:
//! - daily: `app_2025-05-01.log`
//! - hourly: `app_2025-05-01_13.log`
//! - past the size cap within a period: `app_2025-05-01.1.log`, `app_2025-05-01.2.log`, …
//!
//! Retention runs when the writer opens (start-up) and at every rotation: files whose period
//! ended longer ago than the age limit are deleted, then all but the newest `max_files`
//! (the current file counts, and is never deleted). Other files in the directory are left alone.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::config::{MonitorConfig, Rotation};

/// Where the writer reads the time; tests use [`ManualClock`].
pub trait Clock: Send + Sync + 'static {
    /// The current wall-clock time.
    fn now(&self) -> SystemTime;
}

/// The system's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A clock that moves only when told to: for tests of rotation and retention.
#[derive(Debug, Clone)]
pub struct ManualClock {
    now: Arc<Mutex<SystemTime>>,
}

impl ManualClock {
    /// A clock showing `start`.
    pub fn new(start: SystemTime) -> Self {
        Self {
            now: Arc::new(Mutex::new(start)),
        }
    }

    /// A clock showing this many seconds after the Unix epoch.
    pub fn at_unix(secs: u64) -> Self {
        Self::new(UNIX_EPOCH + Duration::from_secs(secs))
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        let mut now = self.now.lock().unwrap_or_else(PoisonError::into_inner);
        *now += by;
    }

    /// Sets the clock.
    pub fn set(&self, to: SystemTime) {
        *self.now.lock().unwrap_or_else(PoisonError::into_inner) = to;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        *self.now.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// How a [`RollingFile`] names, splits and prunes its files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RollingOptions {
    /// File name prefix. Default: `app`.
    pub prefix: String,
    /// When a new file starts. Default: daily.
    pub rotation: Rotation,
    /// Size cap of one file. Default: none.
    pub max_bytes: Option<u64>,
    /// Files whose period ended longer ago are deleted. Default: 7 days.
    pub max_age: Option<Duration>,
    /// At most this many files are kept (the current one counts). Default: 30.
    pub max_files: Option<usize>,
}

impl Default for RollingOptions {
    fn default() -> Self {
        Self::from_config(&MonitorConfig::default())
    }
}

impl RollingOptions {
    /// The options `[monitoring]` asks for.
    pub fn from_config(config: &MonitorConfig) -> Self {
        Self {
            prefix: config.file_prefix.clone(),
            rotation: config.rotation,
            max_bytes: config.effective_max_bytes(),
            max_age: config.retention.max_age(),
            max_files: config.retention.max_files,
        }
    }
}

/// An `io::Write` that appends to the current period's file, rotates, and prunes old files.
///
/// Each `write` should be one whole line (tracing's writers do that), so a line is never split
/// across two files.
pub struct RollingFile {
    dir: PathBuf,
    options: RollingOptions,
    clock: Arc<dyn Clock>,
    current: Current,
    deleted: Arc<AtomicU64>,
    errors: Arc<AtomicU64>,
}

struct Current {
    name: FileName,
    path: PathBuf,
    file: BufWriter<File>,
    written: u64,
    ends: SystemTime,
}

impl std::fmt::Debug for RollingFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RollingFile")
            .field("path", &self.current.path)
            .field("written", &self.current.written)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl RollingFile {
    /// Creates `dir` if needed, opens (appends to) the current period's file, and applies
    /// retention to the files already there.
    ///
    /// # Errors
    /// When the directory cannot be created or the file cannot be opened.
    pub fn open(
        dir: impl Into<PathBuf>,
        options: RollingOptions,
        clock: Arc<dyn Clock>,
    ) -> io::Result<Self> {
        let dir = dir.into();
        fs::create_dir_all(&dir)?;
        let now = clock.now();
        let name = next_name(&dir, &options, now, None)?;
        let current = open_file(&dir, &options, name)?;
        let mut this = Self {
            dir,
            options,
            clock,
            current,
            deleted: Arc::new(AtomicU64::new(0)),
            errors: Arc::new(AtomicU64::new(0)),
        };
        this.prune(now);
        Ok(this)
    }

    /// The file being written.
    pub fn current_path(&self) -> &Path {
        &self.current.path
    }

    /// The directory of the files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// How many old files retention deleted so far (shared counter).
    pub fn deleted_counter(&self) -> Arc<AtomicU64> {
        self.deleted.clone()
    }

    /// How many deletions or rotations failed so far (shared counter).
    pub fn error_counter(&self) -> Arc<AtomicU64> {
        self.errors.clone()
    }

    /// The log files of this writer's prefix in its directory, oldest first.
    ///
    /// # Errors
    /// When the directory cannot be read.
    pub fn list(&self) -> io::Result<Vec<PathBuf>> {
        Ok(list_files(&self.dir, &self.options.prefix)?
            .into_iter()
            .map(|(_, p)| p)
            .collect())
    }

    fn rotate(&mut self, now: SystemTime, by_size: bool) -> io::Result<()> {
        self.current.file.flush()?;
        let after = by_size.then_some(self.current.name);
        let name = next_name(&self.dir, &self.options, now, after)?;
        self.current = open_file(&self.dir, &self.options, name)?;
        self.prune(now);
        Ok(())
    }

    /// Deletes files past the age limit, then all but the newest `max_files`.
    fn prune(&mut self, now: SystemTime) {
        let files = match list_files(&self.dir, &self.options.prefix) {
            Ok(files) => files,
            Err(_) => {
                self.errors.fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
        let now_secs = unix_secs(now);
        let mut kept = Vec::with_capacity(files.len());
        for (name, path) in files {
            if name == self.current.name {
                kept.push((name, path));
                continue;
            }
            let too_old = self.options.max_age.is_some_and(|age| {
                let age = i64::try_from(age.as_secs()).unwrap_or(i64::MAX);
                name.end() < now_secs.saturating_sub(age)
            });
            if too_old {
                self.delete(&path);
            } else {
                kept.push((name, path));
            }
        }
        if let Some(max) = self.options.max_files {
            // Newest first; the current file is always kept and counts towards the limit.
            kept.sort_by_key(|(name, _)| std::cmp::Reverse(*name));
            let mut room = max.saturating_sub(1);
            for (name, path) in kept {
                if name == self.current.name {
                    continue;
                }
                if room > 0 {
                    room -= 1;
                } else {
                    self.delete(&path);
                }
            }
        }
    }

    fn delete(&self, path: &Path) {
        match fs::remove_file(path) {
            Ok(()) => self.deleted.fetch_add(1, Ordering::Relaxed),
            Err(_) => self.errors.fetch_add(1, Ordering::Relaxed),
        };
    }
}

impl Write for RollingFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let now = self.clock.now();
        let len = buf.len() as u64;
        if now >= self.current.ends {
            self.rotate(now, false)?;
        } else if self
            .options
            .max_bytes
            .is_some_and(|max| self.current.written > 0 && self.current.written + len > max)
        {
            self.rotate(now, true)?;
        }
        self.current.file.write_all(buf)?;
        self.current.written += len;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.current.file.flush()
    }
}

impl Drop for RollingFile {
    fn drop(&mut self) {
        let _ = self.current.file.flush();
    }
}

/// A parsed file name: the period it covers and its index within the period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct FileName {
    /// Start of the period, Unix seconds (UTC).
    start: i64,
    /// Index within the period (0 for the first file, which has no index in its name).
    index: u32,
    hourly: bool,
}

impl FileName {
    fn for_time(now: SystemTime, rotation: Rotation) -> Self {
        let secs = unix_secs(now);
        let hourly = rotation == Rotation::Hourly;
        let len = if hourly { 3600 } else { 86_400 };
        Self {
            start: secs - secs.rem_euclid(len),
            index: 0,
            hourly,
        }
    }

    fn end(&self) -> i64 {
        self.start + if self.hourly { 3600 } else { 86_400 }
    }

    pub(crate) fn render(&self, prefix: &str) -> String {
        let days = self.start.div_euclid(86_400);
        let (y, m, d) = civil_from_days(days);
        let mut s = format!("{prefix}_{y:04}-{m:02}-{d:02}");
        if self.hourly {
            s.push_str(&format!("_{:02}", self.start.rem_euclid(86_400) / 3600));
        }
        if self.index > 0 {
            s.push_str(&format!(".{}", self.index));
        }
        s.push_str(".log");
        s
    }

    pub(crate) fn parse(prefix: &str, file: &str) -> Option<Self> {
        let rest = file.strip_prefix(prefix)?.strip_prefix('_')?;
        let rest = rest.strip_suffix(".log")?;
        let (stamp, index) = match rest.split_once('.') {
            Some((stamp, index)) => (stamp, index.parse::<u32>().ok().filter(|&i| i > 0)?),
            None => (rest, 0),
        };
        let (date, hour) = match stamp.split_once('_') {
            Some((date, hour)) if hour.len() == 2 => (date, Some(hour.parse::<i64>().ok()?)),
            Some(_) => return None,
            None => (stamp, None),
        };
        let mut parts = date.split('-');
        let (y, m, d) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || y.len() != 4 || m.len() != 2 || d.len() != 2 {
            return None;
        }
        let (y, m, d) = (y.parse().ok()?, m.parse().ok()?, d.parse().ok()?);
        if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hour.is_some_and(|h| h > 23) {
            return None;
        }
        let start = days_from_civil(y, m, d) * 86_400 + hour.unwrap_or(0) * 3600;
        Some(Self {
            start,
            index,
            hourly: hour.is_some(),
        })
    }
}

/// The name of the file to open at `now`: the current period's newest file if it has room,
/// else the next index. `after` is the file that just filled up (size rotation).
fn next_name(
    dir: &Path,
    options: &RollingOptions,
    now: SystemTime,
    after: Option<FileName>,
) -> io::Result<FileName> {
    let mut name = FileName::for_time(now, options.rotation);
    let existing = list_files(dir, &options.prefix)?;
    let newest = existing
        .iter()
        .filter(|(n, _)| n.start == name.start && n.hourly == name.hourly)
        .max_by_key(|(n, _)| n.index);
    if let Some((n, path)) = newest {
        name.index = n.index;
        let full = options
            .max_bytes
            .is_some_and(|max| fs::metadata(path).map(|m| m.len() >= max).unwrap_or(false));
        if full || after.is_some_and(|a| a.start == n.start && a.index >= n.index) {
            name.index = n.index + 1;
        }
    } else if let Some(a) = after.filter(|a| a.start == name.start) {
        name.index = a.index + 1;
    }
    Ok(name)
}

fn open_file(dir: &Path, options: &RollingOptions, name: FileName) -> io::Result<Current> {
    let path = dir.join(name.render(&options.prefix));
    let file = OpenOptions::new().create(true).append(true).open(&path)?;
    let written = file.metadata().map(|m| m.len()).unwrap_or(0);
    let ends = UNIX_EPOCH + Duration::from_secs(u64::try_from(name.end()).unwrap_or(0));
    Ok(Current {
        name,
        path,
        file: BufWriter::new(file),
        written,
        ends,
    })
}

fn list_files(dir: &Path, prefix: &str) -> io::Result<Vec<(FileName, PathBuf)>> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let Some(file) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if let Some(name) = FileName::parse(prefix, &file) {
            files.push((name, entry.path()));
        }
    }
    files.sort_by_key(|(name, _)| *name);
    Ok(files)
}

fn unix_secs(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day count since 1970-01-01.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (
        if m <= 2 {
            yoe + era * 400 + 1
        } else {
            yoe + era * 400
        },
        m,
        d,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_round_trip() {
        for days in [-1, 0, 1, 59, 60, 365, 10_957, 19_000, 20_000, 50_000] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days, "{y}-{m}-{d}");
        }
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        // 2024-02-29, a leap day.
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
    }

    #[test]
    fn names_render_and_parse() {
        // 2025-05-01T13:20:00Z
        let t = UNIX_EPOCH + Duration::from_secs(1_746_105_600);
        let daily = FileName::for_time(t, Rotation::Daily);
        assert_eq!(daily.render("app"), "app_2025-05-01.log");
        let hourly = FileName::for_time(t, Rotation::Hourly);
        assert_eq!(hourly.render("app"), "app_2025-05-01_13.log");
        let split = FileName { index: 2, ..daily };
        assert_eq!(split.render("app"), "app_2025-05-01.2.log");
        for n in [daily, hourly, split] {
            assert_eq!(FileName::parse("app", &n.render("app")), Some(n));
        }
        for bad in [
            "app_2025-05-01.0.log",
            "app_2025-13-01.log",
            "app_2025-05-01_24.log",
            "app_2025-5-1.log",
            "other_2025-05-01.log",
            "app_2025-05-01.log.gz",
            "app-2025-05-01.log",
        ] {
            assert_eq!(FileName::parse("app", bad), None, "{bad}");
        }
    }
}
