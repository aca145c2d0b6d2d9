//! The real logd binary against a failing intake: an outage, then errors
//! and throttling; lines the intake refuses for good; an intake answering
//! 500 to everything.

mod common;

use std::time::{Duration, Instant};

use common::daemon::{Env, Logd};
use common::delivery::{Tally, assert_each_once, messages, numbered, wait_for_all};
use common::pods::{Node, uid};
use common::{SOON, wait_until};
use testkit::intake::{Faults, Intake};

/// logd's resident memory at most while a backlog much larger than it
/// waits (debug build; the pipeline holds about 11 MiB of lines at most:
/// 4 × 256 KiB queued chunks, 4 MiB of batches, 4 MiB parked, a batch
/// queued and one being sent).
const RSS_BOUND_KIB: u64 = 40 * 1024;

#[test]
fn an_outage_then_errors_and_throttling_lose_nothing_and_memory_stays_bounded() {
    const CONTAINERS: usize = 8;
    const LINES_PER_CONTAINER: usize = 100_000; // ~95 bytes each: ~76 MiB in all
    let node = Node::new();
    let intake = Intake::start();
    let logd = Logd::start(&node, &Env::new(&node, &intake));
    let idle_rss = logd.rss_kib();

    let outage = Duration::from_secs(20);
    intake.set_refusing(true);
    let outage_ends = Instant::now() + outage;
    let mut expected = Vec::new();
    let mut backlog_bytes = 0;
    let mut logs = Vec::new();
    for c in 0..CONTAINERS {
        let mut log = node.container("load", &format!("pod{c}"), &uid(c as u32), "app");
        let lines = numbered(
            &format!("c{c}-backlog-padding-padding-padding"),
            0..LINES_PER_CONTAINER,
        );
        for block in lines.chunks(2000) {
            log.lines(block);
        }
        expected.extend(lines);
        backlog_bytes += log.len();
        logs.push(log);
    }

    // While the backlog waits, memory stays flat, and the metrics show
    // all of it as behind, read or not, including lines written once logd
    // had stopped reading (half-way through the outage).
    let mut peak_rss = 0;
    let mut behind = 0.0;
    let mut later = None;
    while Instant::now() < outage_ends {
        if later.is_none() && Instant::now() + outage / 2 >= outage_ends {
            let lines = numbered("later", 0..1000);
            let before = logs[0].len();
            logs[0].lines(&lines);
            backlog_bytes += logs[0].len() - before;
            later = Some(lines);
        }
        peak_rss = peak_rss.max(logd.rss_kib());
        behind = logd.metrics().get("logd_bytes_behind");
        std::thread::sleep(Duration::from_millis(100)); // sampling, not waiting
    }
    assert_eq!(
        behind, backlog_bytes as f64,
        "bytes behind during the outage"
    );
    let read = logd.metrics().get("logd_bytes_read_total");
    assert!(
        read < 32.0 * 1024.0 * 1024.0,
        "logd read {read} bytes during the outage: the files should be the buffer"
    );
    assert_eq!(intake.log_line_count(), 0);
    expected.extend(later.expect("written half-way"));
    intake.set_refusing(false);

    // The intake is back, but answers 10 % of requests 503 and 5 % 429,
    // with Retry-After.
    intake.set_faults(Faults {
        fail_503: 0.10,
        fail_429: 0.05,
        retry_after_secs: Some(1),
        ..Faults::default()
    });
    let drain_peak = logd.peak_rss_during(|| {
        wait_for_all(&intake, &expected, Duration::from_secs(120));
    });
    logd.wait_idle(SOON);
    assert_each_once(&expected, &messages(&intake));
    let statuses = intake.status_counts();
    let m = logd.metrics();
    eprintln!(
        "outage: RSS idle {idle_rss} KiB, peak during the outage {peak_rss} KiB, peak while draining {drain_peak} KiB; statuses {statuses:?}; retries {}",
        m.get("logd_retries_total")
    );
    assert!(
        statuses.get(&503).is_some_and(|&n| n > 0),
        "no 503 was injected: {statuses:?}"
    );
    assert!(
        statuses.get(&429).is_some_and(|&n| n > 0),
        "no 429 was injected: {statuses:?}"
    );
    assert!(
        peak_rss < RSS_BOUND_KIB && drain_peak < RSS_BOUND_KIB,
        "RSS peaked at {peak_rss} KiB (outage), {drain_peak} KiB (drain): over {RSS_BOUND_KIB} KiB"
    );
    assert_eq!(m.get("logd_lines_dropped_total"), 0.0);
}

#[test]
fn a_line_the_intake_refuses_for_good_is_dropped_and_counted_and_the_rest_delivered() {
    let node = Node::new();
    let intake = Intake::start();
    intake.reject_lines_containing("poison-400", 400);
    intake.reject_lines_containing("poison-413", 413);
    let logd = Logd::start(&node, &Env::new(&node, &intake));
    let mut log = node.container("default", "web", &uid(1), "nginx");
    let before = numbered("before", 0..500);
    let after = numbered("after", 0..500);
    log.lines(&before);
    log.line("poison-400 the intake answers 400 to any batch with this line");
    log.line("poison-413 the intake answers 413 to any batch with this line");
    log.lines(&after);

    let expected = [before, after].concat();
    wait_for_all(&intake, &expected, SOON);
    wait_until(SOON, "both lines to be dropped", || {
        logd.metrics()
            .get("logd_lines_dropped_total{reason=\"rejected\"}")
            == 2.0
    });
    logd.wait_idle(SOON);
    assert_each_once(&expected, &messages(&intake));
    assert!(logd.stderr().contains("400"), "the 400 is not logged");
}

#[test]
fn a_line_answered_500_again_and_again_while_others_succeed_is_isolated_and_dropped() {
    let node = Node::new();
    let intake = Intake::start();
    intake.reject_lines_containing("crashes-the-backend", 500);
    let logd = Logd::start(&node, &Env::new(&node, &intake));
    let mut log = node.container("default", "web", &uid(2), "nginx");
    let before = numbered("before", 0..300);
    let after = numbered("after", 0..300);
    log.lines(&before);
    log.line("crashes-the-backend");
    log.lines(&after);
    // Other files keep flowing meanwhile: the intake works.
    let mut other = node.container("default", "other", &uid(3), "app");
    let others = numbered("other", 0..50);
    other.lines(&others);

    let expected = [before, after, others].concat();
    wait_for_all(&intake, &expected, Duration::from_secs(60));
    wait_until(Duration::from_secs(60), "the line to be dropped", || {
        logd.metrics()
            .get("logd_lines_dropped_total{reason=\"server_error\"}")
            == 1.0
    });
    logd.wait_idle(SOON);
    assert_each_once(&expected, &messages(&intake));
}

#[test]
fn an_intake_answering_500_to_everything_is_waited_for_not_dropped() {
    let node = Node::new();
    let intake = Intake::start();
    intake.set_faults(Faults {
        fail_500: 1.0,
        ..Faults::default()
    });
    let logd = Logd::start(&node, &Env::new(&node, &intake));
    let mut logs: Vec<_> = (0..3)
        .map(|c| node.container("default", &format!("pod{c}"), &uid(c), "app"))
        .collect();
    let mut expected = Vec::new();
    for (c, log) in logs.iter_mut().enumerate() {
        let lines = numbered(&format!("c{c}"), 0..200);
        log.lines(&lines);
        expected.extend(lines);
    }
    // Long enough for a turn of retries, a probe (a halved batch) and more.
    wait_until(SOON, "six refused requests", || {
        intake.status_counts().get(&500).is_some_and(|&n| n >= 6)
    });
    intake.set_faults(Faults::default());

    wait_for_all(&intake, &expected, Duration::from_secs(90));
    logd.wait_idle(SOON);
    let tally = Tally::of(&expected, &messages(&intake));
    assert!(
        tally.missing.is_empty() && tally.duplicated.is_empty(),
        "{}",
        tally.summary()
    );
    assert_eq!(logd.metrics().get("logd_lines_dropped_total"), 0.0);
}
