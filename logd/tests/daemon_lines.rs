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
