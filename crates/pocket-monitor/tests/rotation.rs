//! Rotation and retention of log files, on a clock the test moves.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails loudly by design

use std::fs;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use pocket_monitor::logging::{LogBuilder, ManualClock, RollingFile, RollingOptions};
use pocket_monitor::{MonitorConfig, Rotation};

/// 2025-05-01T13:20:00Z
const MAY_1_1320: u64 = 1_746_105_600;
const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(86_400);

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

fn options(rotation: Rotation) -> RollingOptions {
    RollingOptions {
        prefix: "app".into(),
        rotation,
        max_bytes: None,
        max_age: None,
        max_files: None,
    }
}

fn open(dir: &Path, options: RollingOptions, clock: &ManualClock) -> RollingFile {
    RollingFile::open(dir, options, Arc::new(clock.clone())).unwrap()
}

#[test]
fn daily_files_are_named_like_the_seed() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at_unix(MAY_1_1320);
    let mut file = open(dir.path(), options(Rotation::Daily), &clock);
    file.write_all(b"one\n").unwrap();
    clock.advance(10 * HOUR); // 23:20, same day
    file.write_all(b"two\n").unwrap();
    clock.advance(HOUR); // 00:20 the next day
    file.write_all(b"three\n").unwrap();
    file.flush().unwrap();
    assert_eq!(
        names(dir.path()),
        ["app_2025-05-01.log", "app_2025-05-02.log"]
    );
    let first = fs::read_to_string(dir.path().join("app_2025-05-01.log")).unwrap();
    assert_eq!(first, "one\ntwo\n");
    assert_eq!(file.current_path(), dir.path().join("app_2025-05-02.log"));
}

#[test]
fn hourly_rotation_adds_the_hour() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at_unix(MAY_1_1320);
    let mut file = open(dir.path(), options(Rotation::Hourly), &clock);
    file.write_all(b"a\n").unwrap();
    clock.advance(HOUR);
    file.write_all(b"b\n").unwrap();
    clock.advance(11 * HOUR); // 01:20 the next day
    file.write_all(b"c\n").unwrap();
    file.flush().unwrap();
    assert_eq!(
        names(dir.path()),
        [
            "app_2025-05-01_13.log",
            "app_2025-05-01_14.log",
            "app_2025-05-02_01.log"
        ]
    );
}

#[test]
fn size_rotation_splits_a_day_and_never_splits_a_line() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at_unix(MAY_1_1320);
    let opts = RollingOptions {
        max_bytes: Some(100),
        ..options(Rotation::Size)
    };
    let mut file = open(dir.path(), opts, &clock);
    let line = [b'x'; 59].iter().chain(b"\n").copied().collect::<Vec<u8>>();
    for _ in 0..3 {
        file.write_all(&line).unwrap();
    }
    // A line larger than the cap goes alone into a file of its own.
    file.write_all(&[b'y'; 150]).unwrap();
    clock.advance(DAY);
    file.write_all(&line).unwrap();
    file.flush().unwrap();
    assert_eq!(
        names(dir.path()),
        [
            "app_2025-05-01.1.log",
            "app_2025-05-01.2.log",
            "app_2025-05-01.3.log",
            "app_2025-05-01.log",
            "app_2025-05-02.log"
        ]
    );
    for name in [
        "app_2025-05-01.log",
        "app_2025-05-01.1.log",
        "app_2025-05-01.2.log",
    ] {
        assert_eq!(fs::metadata(dir.path().join(name)).unwrap().len(), 60);
    }
}

#[test]
fn retention_by_age_runs_at_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at_unix(MAY_1_1320);
    let opts = RollingOptions {
        max_age: Some(2 * DAY),
        ..options(Rotation::Daily)
    };
    let mut file = open(dir.path(), opts, &clock);
    for _ in 0..5 {
        file.write_all(b"line\n").unwrap();
        clock.advance(DAY);
    }
    file.write_all(b"line\n").unwrap(); // rotates into May 6 and prunes
    // Now is May 6 13:20; the cut-off is May 4 13:20. May 3's file ended at May 4 00:00.
    assert_eq!(
        names(dir.path()),
        [
            "app_2025-05-04.log",
            "app_2025-05-05.log",
            "app_2025-05-06.log"
        ]
    );
    assert_eq!(
        file.deleted_counter()
            .load(std::sync::atomic::Ordering::Relaxed),
        3
    );
}

#[test]
fn retention_by_count_keeps_the_newest_and_the_current_file() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at_unix(MAY_1_1320);
    let opts = RollingOptions {
        max_files: Some(3),
        ..options(Rotation::Hourly)
    };
    let mut file = open(dir.path(), opts, &clock);
    for _ in 0..6 {
        file.write_all(b"line\n").unwrap();
        clock.advance(HOUR);
    }
    file.flush().unwrap();
    assert_eq!(
        names(dir.path()),
        [
            "app_2025-05-01_16.log",
            "app_2025-05-01_17.log",
            "app_2025-05-01_18.log"
        ]
    );
    assert_eq!(
        file.current_path(),
        dir.path().join("app_2025-05-01_18.log")
    );
}

#[test]
fn retention_runs_at_start_up_and_leaves_other_files_alone() {
    let dir = tempfile::tempdir().unwrap();
    for name in [
        "app_2025-04-01.log",
        "app_2025-04-20.log",
        "app_2025-04-27.log",
        "app_2025-04-28.log",
        "app_2025-04-28.1.log",
        "app_2025-04-30_22.log",
        "app_2025-04-30.log",
        "app_notes.log",
        "other_2025-01-01.log",
        "readme.txt",
    ] {
        fs::write(dir.path().join(name), "old\n").unwrap();
    }
    let clock = ManualClock::at_unix(MAY_1_1320);
    let opts = RollingOptions {
        max_age: Some(3 * DAY),
        max_files: Some(4),
        ..options(Rotation::Daily)
    };
    let _file = open(dir.path(), opts, &clock);
    // Age: before Apr 28 13:20 goes (Apr 27 ended Apr 28 00:00). Count: the current file and
    // the three newest others.
    assert_eq!(
        names(dir.path()),
        [
            "app_2025-04-28.1.log",
            "app_2025-04-30.log",
            "app_2025-04-30_22.log",
            "app_2025-05-01.log",
            "app_notes.log",
            "other_2025-01-01.log",
            "readme.txt",
        ]
    );
}

#[test]
fn a_restart_appends_to_the_current_file_unless_it_is_full() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at_unix(MAY_1_1320);
    {
        let mut file = open(dir.path(), options(Rotation::Daily), &clock);
        file.write_all(b"before\n").unwrap();
    }
    {
        let mut file = open(dir.path(), options(Rotation::Daily), &clock);
        file.write_all(b"after\n").unwrap();
    }
    let text = fs::read_to_string(dir.path().join("app_2025-05-01.log")).unwrap();
    assert_eq!(text, "before\nafter\n");

    let capped = RollingOptions {
        max_bytes: Some(10),
        ..options(Rotation::Size)
    };
    let file = open(dir.path(), capped, &clock);
    assert_eq!(file.current_path(), dir.path().join("app_2025-05-01.1.log"));
}

#[test]
fn the_installed_stack_writes_json_lines_to_the_seed_file_name() {
    let dir = tempfile::tempdir().unwrap();
    let config = MonitorConfig {
        log_dir: Some(dir.path().join("logs")),
        console: false,
        level: "debug".into(),
        ..MonitorConfig::default()
    };
    let clock = ManualClock::at_unix(MAY_1_1320);
    let (layer, guard) = LogBuilder::new(&config)
        .clock(Arc::new(clock))
        .layer::<tracing_subscriber::Registry>()
        .unwrap();
    use tracing_subscriber::layer::SubscriberExt;
    let subscriber = tracing_subscriber::registry().with(layer);
    tracing::subscriber::with_default(subscriber, || {
        let span = tracing::info_span!("invoke_agent", gen_ai.agent.name = "writer", run_id = "r7");
        let _entered = span.enter();
        tracing::info!(component = "execution", duration_ms = 5.0, "run finished");
        pocket_monitor::critical!(component = "store", "the store is gone");
    });
    let file = guard.first_file().unwrap().to_path_buf();
    assert_eq!(file, dir.path().join("logs/app_2025-05-01.log"));
    assert_eq!(guard.recent().len(), 2);
    drop(guard); // flushes the writer thread
    let text = fs::read_to_string(&file).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert_eq!(lines[0]["message"], "run finished");
    assert_eq!(lines[0]["component"], "execution");
    assert_eq!(lines[0]["spans"][0]["gen_ai.agent.name"], "writer");
    assert_eq!(lines[1]["level"], "ERROR");
    assert_eq!(lines[1]["target"], "pocket::critical");
    assert_eq!(lines[1]["critical"], true);
}
