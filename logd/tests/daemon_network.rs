//! The real logd binary against an intake that is far away (the test
//! intake answering every request some milliseconds later): several
//! requests in flight, each file's lines in order, the adaptive limit under
//! throttling and changing latency, SIGKILL with requests in flight, and an
//! outage of 1,000 files.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::daemon::{Env, Logd, Metrics};
use common::delivery::{Tally, assert_each_once, messages, numbered, wait_for_all};
use common::pods::{Node, cri_line, uid};
use common::{SOON, wait_until};
use testkit::intake::{Faults, Intake};

/// See `daemon_faults.rs`: logd's resident memory at most (debug build).
const RSS_BOUND_KIB: u64 = 40 * 1024;

fn latency(ms: u64) -> Faults {
    Faults {
        latency: Duration::from_millis(ms),
        ..Faults::default()
    }
}

/// Each file's lines, as the intake received them, in arrival order.
fn lines_by_file(intake: &Intake) -> HashMap<String, Vec<String>> {
    let mut files: HashMap<String, Vec<String>> = HashMap::new();
    for batch in intake.log_batches() {
        let lines = files
            .entry(format!("{}/{}", batch.path, batch.file))
            .or_default();
        lines.extend(
            batch
                .lines
                .iter()
                .map(|l| common::delivery::message(l).to_owned()),
        );
    }
    files
}

/// `count` containers with `lines` numbered lines each, prefixed `prefix`;
/// returns every line written.
fn write_pods(node: &Node, prefix: &str, count: usize, lines: usize) -> Vec<String> {
    let mut expected = Vec::new();
    for c in 0..count {
        let mut log = node.container("net", &format!("{prefix}{c}"), &uid(c as u32), "app");
        let written = numbered(&format!("{prefix}{c}-"), 0..lines);
        log.lines(&written);
        expected.extend(written);
    }
    expected
}

#[test]
fn a_thousand_files_50_ms_away_go_in_overlapping_requests_each_in_order() {
    let node = Node::new();
    let intake = Intake::start();
    intake.set_faults(latency(50));
    let logd = Logd::start(&node, &Env::new(&node, &intake));
    let expected = write_pods(&node, "p", 1000, 20);

    wait_for_all(&intake, &expected, Duration::from_secs(120));
    logd.wait_idle(SOON);
    assert_each_once(&expected, &messages(&intake));
    let most = intake.max_in_flight();
    eprintln!(
        "1,000 files at 50 ms: at most {most} requests in flight; limit now {}",
        logd.metrics().get("logd_upload_limit")
    );
    assert!(most >= 8, "at most {most} requests in flight at once");
    // Each file's lines are numbered in the order they were written.
    for (file, lines) in lines_by_file(&intake) {
        let numbers: Vec<usize> = lines
            .iter()
            .map(|l| {
                l.rsplit('-')
                    .next()
                    .and_then(|n| n.parse().ok())
                    .expect("numbered")
            })
            .collect();
        assert!(
            numbers.is_sorted(),
            "the lines of {file} arrived out of order: {numbers:?}"
        );
    }
}

#[test]
fn sigkill_with_requests_in_flight_then_restart_loses_nothing_and_repeats_within_the_bound() {
    const FILES: usize = 40;
    const LINES: usize = 3_000;
    const BATCH_MAX_BYTES: usize = 16 * 1024;
    let node = Node::new();
    let intake = Intake::start();
    intake.set_faults(latency(200));
    let env = Env::new(&node, &intake).set("LOGD_BATCH_MAX_BYTES", &BATCH_MAX_BYTES.to_string());
    let mut logd = Logd::start(&node, &env);
    let expected = write_pods(&node, "k", FILES, LINES);

    wait_until(SOON, "several requests in flight", || {
        intake.in_flight() >= 4 && intake.log_line_count() > 0
    });
    logd.kill();
    intake.set_faults(Faults::default());
    let restarted = Logd::start(&node, &env);
    wait_for_all(&intake, &expected, Duration::from_secs(120));
    restarted.wait_idle(SOON);
    let tally = Tally::of(&expected, &messages(&intake));
    assert!(
        tally.missing.is_empty() && tally.unexpected.is_empty(),
        "{}",
        tally.summary()
    );
    // What is sent again: the batches in flight at the kill, at most one
    // per file, and what was acknowledged since the last checkpoint write
    // (1 s): here every line was written before, so at most what one file's
    // batches deliver in a second, for every file. Requests are 200 ms long,
    // so a file has at most 5 batches acknowledged a second.
    let line_len = cri_line("k0-00000").len();
    let per_batch = BATCH_MAX_BYTES / line_len + 1;
    let bound = FILES * per_batch + 2 * FILES * 5 * per_batch;
    eprintln!(
        "SIGKILL in flight: {} of {} lines sent again (bound {bound})",
        tally.duplicates(),
        expected.len()
    );
    assert!(tally.duplicates() <= bound, "{}", tally.summary());
    for (message, copies) in &tally.duplicated {
        assert_eq!(*copies, 2, "{message} arrived {copies} times");
    }
}

/// Polls the limit until `cond` holds of it.
fn wait_limit(logd: &Logd, what: &str, cond: impl Fn(f64) -> bool) {
    wait_until(SOON, what, || cond(logd.metrics().get("logd_upload_limit")));
}

#[test]
fn throttled_with_retry_after_the_limit_falls_to_one_nothing_goes_early_and_nothing_is_lost() {
    let node = Node::new();
    let intake = Intake::start();
    intake.set_faults(latency(50));
    let logd = Logd::start(&node, &Env::new(&node, &intake));
    let mut expected = write_pods(&node, "a", 200, 200);
    wait_limit(&logd, "the limit to grow", |l| l >= 4.0);

    intake.set_faults(Faults {
        fail_429: 1.0,
        retry_after_secs: Some(2),
        ..latency(50)
    });
    let throttled_at = Instant::now();
    expected.extend(write_pods(&node, "b", 200, 50));
    wait_limit(&logd, "the limit to fall to 1", |l| l == 1.0);
    let rest = Duration::from_secs(5).saturating_sub(throttled_at.elapsed());
    std::thread::sleep(rest); // the 5 s of throttling: the scenario, not a wait
    intake.set_faults(latency(50));

    wait_for_all(&intake, &expected, Duration::from_secs(120));
    logd.wait_idle(SOON);
    assert_each_once(&expected, &messages(&intake));

    // After the first 429 was answered, no request went out before its
    // Retry-After was over (requests already in flight then arrive within
    // a few milliseconds).
    let requests: Vec<_> = intake
        .requests()
        .into_iter()
        .filter(|r| r.path == "/logs")
        .collect();
    let first = requests
        .iter()
        .find(|r| r.status == 429)
        .expect("a 429 was answered");
    let answered = first.at + Duration::from_millis(50);
    let early: Vec<_> = requests
        .iter()
        .filter(|r| {
            r.at > answered + Duration::from_millis(150)
                && r.at < answered + Duration::from_millis(1900)
        })
        .collect();
    assert!(
        early.is_empty(),
        "{} requests went out before the Retry-After of 2 s was over",
        early.len()
    );
    // Load again: the limit recovers.
    expected = write_pods(&node, "c", 200, 200);
    wait_limit(&logd, "the limit to grow again", |l| l >= 4.0);
    wait_for_all(&intake, &expected, Duration::from_secs(120));
}

#[test]
fn latency_jumping_from_5_to_500_ms_mid_drain_and_back_loses_nothing_and_the_limit_follows() {
    let node = Node::new();
    let intake = Intake::start();
    intake.set_faults(latency(5));
    // Small batches: many requests, so the limit has something to follow.
    let env = Env::new(&node, &intake).set("LOGD_BATCH_MAX_BYTES", "32KiB");
    let logd = Logd::start(&node, &env);
    let expected = write_pods(&node, "d", 40, 20_000);

    wait_limit(&logd, "the limit to grow at 5 ms", |l| l >= 4.0);
    let before = logd.metrics().get("logd_upload_limit");
    intake.set_faults(latency(500));
    let mut lowest = before;
    let slow_until = Instant::now() + Duration::from_secs(6);
    while Instant::now() < slow_until {
        lowest = lowest.min(logd.metrics().get("logd_upload_limit"));
        std::thread::sleep(Duration::from_millis(100)); // sampling, not waiting
    }
    intake.set_faults(latency(5));
    wait_limit(&logd, "the limit to grow again at 5 ms", |l| l > lowest);

    wait_for_all(&intake, &expected, Duration::from_secs(180));
    logd.wait_idle(SOON);
    assert_each_once(&expected, &messages(&intake));
    let m: Metrics = logd.metrics();
    eprintln!("limit {before} at 5 ms, down to {lowest} at 500 ms");
    assert!(lowest < before, "the limit stayed at {before} at 500 ms");
    assert_eq!(m.get("logd_retries_total"), 0.0, "requests failed");
}

#[test]
fn an_outage_with_a_thousand_files_then_recovery_delivers_everything_in_bounded_memory() {
    let node = Node::new();
    let intake = Intake::start();
    let logd = Logd::start(&node, &Env::new(&node, &intake));
    intake.set_refusing(true);
    let expected = write_pods(&node, "o", 1000, 300);

    let mut peak = 0;
    let outage_ends = Instant::now() + Duration::from_secs(10);
    while Instant::now() < outage_ends {
        peak = peak.max(logd.rss_kib());
        std::thread::sleep(Duration::from_millis(100)); // sampling, not waiting
    }
    intake.set_refusing(false);
    intake.set_faults(latency(50));
    let drain_peak = logd.peak_rss_during(|| {
        wait_for_all(&intake, &expected, Duration::from_secs(180));
    });
    logd.wait_idle(SOON);
    assert_each_once(&expected, &messages(&intake));
    eprintln!("outage of 1,000 files: RSS peak {peak} KiB (outage), {drain_peak} KiB (drain)");
    assert!(
        peak < RSS_BOUND_KIB && drain_peak < RSS_BOUND_KIB,
        "RSS peaked at {peak} KiB (outage), {drain_peak} KiB (drain): over {RSS_BOUND_KIB} KiB"
    );
    assert_eq!(logd.metrics().get("logd_lines_dropped_total"), 0.0);
}

/// Threads of `pid` whose name starts with `prefix`, as `top -H` shows them.
fn threads_named(pid: u32, prefix: &str) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("logd's threads")
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .filter(|name| name.starts_with(prefix))
        .count()
}

#[test]
fn the_concurrency_cap_bounds_both_requests_in_flight_and_upload_threads() {
    let node = Node::new();
    let intake = Intake::start();
    intake.set_faults(latency(50));
    let env = Env::new(&node, &intake).set("LOGD_UPLOAD_CONCURRENCY", "8");
    let logd = Logd::start(&node, &env);
    let expected = write_pods(&node, "cap", 300, 20);

    wait_for_all(&intake, &expected, Duration::from_secs(120));
    logd.wait_idle(SOON);
    assert_each_once(&expected, &messages(&intake));
    let most = intake.max_in_flight();
    assert!((2..=8).contains(&most), "{most} requests in flight at once");
    let threads = threads_named(logd.pid(), "logd-upload-");
    assert!(threads <= 8, "{threads} upload threads for a cap of 8");
}
