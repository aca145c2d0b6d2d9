//! The real logd binary on real files: how lines are read and what reaches
//! the intake.

mod common;

use common::daemon::{Env, Logd};
use common::delivery::{assert_each_once, messages, numbered, wait_for_all};
use common::pods::{Node, TIMESTAMP, uid};
use common::{SOON, wait_until};
use testkit::intake::Intake;

#[test]
fn lines_of_a_container_arrive_once_under_its_pod_path() {
    let node = Node::new();
    let intake = Intake::start();
    let mut web = node.container("default", "web", &uid(1), "nginx");
    let before = numbered("before", 0..50);
    web.lines(&before);
    let logd = Logd::start(&node, &Env::new(&node, &intake));

    let after = numbered("after", 0..50);
    for line in &after {
        web.line(line);
    }
    let expected = [before, after].concat();
    let received = wait_for_all(&intake, &expected, SOON);
    logd.wait_idle(SOON);
    assert_each_once(&expected, &messages(&intake));
    assert_eq!(received.len(), expected.len());
    for batch in intake.log_batches() {
        assert_eq!(batch.path, web.intake_path);
        assert_eq!(batch.file, "0.log");
        for line in &batch.lines {
            assert!(
                line.starts_with(&format!("{TIMESTAMP} stdout F ")),
                "{line:?}"
            );
        }
    }
    let m = logd.metrics();
    assert_eq!(m.get("logd_lines_shipped_total"), 100.0);
    assert_eq!(m.get("logd_lines_read_total"), 100.0);
}

#[test]
fn a_line_written_in_two_writes_arrives_once_whole() {
    let node = Node::new();
    let intake = Intake::start();
    let mut app = node.container("default", "app", &uid(2), "app");
    let logd = Logd::start(&node, &Env::new(&node, &intake));

    let line = format!("{TIMESTAMP} stdout F split-line whose second half comes later\n");
    let (first, second) = line.split_at(35);
    app.write(first.as_bytes());
    // The second write comes once logd has read the first: it must hold
    // the half line, not ship it (a shipped half would show up below as an
    // unexpected line).
    wait_until(SOON, "logd to read the first half", || {
        logd.metrics().get("logd_bytes_read_total") >= first.len() as f64
    });
    app.write(second.as_bytes());
    app.line("split-after");

    let expected = vec![
        "split-line whose second half comes later".to_owned(),
        "split-after".to_owned(),
    ];
    wait_for_all(&intake, &expected, SOON);
    logd.wait_idle(SOON);
    assert_each_once(&expected, &messages(&intake));
}

#[test]
fn health_readiness_and_bytes_behind_show_what_waits_for_the_intake() {
    let node = Node::new();
    let intake = Intake::start();
    let logd = Logd::start(&node, &Env::new(&node, &intake));
    assert_eq!(logd.get("/healthz").map(|(s, _)| s), Some(200));
    assert_eq!(logd.get("/readyz").map(|(s, _)| s), Some(200));
    let m = logd.metrics();
    for family in [
        "logd_lines_read_total",
        "logd_bytes_read_total",
        "logd_lines_shipped_total",
        "logd_bytes_shipped_total",
        "logd_retries_total",
        "logd_files_tracked",
        "logd_files_open",
        "logd_bytes_behind",
        "logd_checkpoint_writes_total",
        "logd_lost_to_rotation_files_total",
        "logd_lost_to_rotation_bytes_total",
        "logd_inotify_rescans_total",
    ] {
        assert!(m.has(family), "/metrics lacks {family}");
    }

    intake.set_refusing(true);
    let mut log = node.container("default", "web", &uid(3), "nginx");
    let lines = numbered("behind", 0..100);
    log.lines(&lines);
    let written = log.len() as f64;
    wait_until(SOON, "bytes behind to count what was written", || {
        logd.metrics().get("logd_bytes_behind") == written
    });
    wait_until(SOON, "a failed send to be retried", || {
        logd.metrics().get("logd_retries_total") >= 1.0
    });
    assert_eq!(logd.metrics().get("logd_bytes_behind"), written);
    // Waiting on the intake is no reason to be unhealthy.
    assert_eq!(logd.get("/healthz").map(|(s, _)| s), Some(200));

    intake.set_refusing(false);
    wait_for_all(&intake, &lines, SOON);
    logd.wait_idle(SOON);
    let m = logd.metrics();
    assert_eq!(m.get("logd_lines_shipped_total"), 100.0);
    assert!(m.get("logd_checkpoint_writes_total") >= 1.0);
    assert_eq!(
        m.get("logd_batches_total{result=\"delivered\"}"),
        intake.log_batches().len() as f64
    );
}
