//! The real logd binary under kubelet's log rotation: renames, gzips and
//! deletes, while logd runs, while it is stopped, and while the intake is
//! down.

mod common;

use std::time::Duration;

use common::daemon::{Env, Logd};
use common::delivery::{Tally, assert_each_once, messages, numbered, wait_for_all};
use common::pods::{Node, cri_line, uid};
use common::{SOON, wait_until};
use testkit::intake::Intake;

#[test]
fn kubelet_rotation_at_a_high_rate_loses_and_repeats_nothing() {
    const CONTAINERS: usize = 3;
    const ROTATIONS: usize = 40;
    const LINES_PER_ROUND: usize = 100;
    let node = Node::new();
    let intake = Intake::start();
    let logd = Logd::start(&node, &Env::new(&node, &intake));

    let write_and_rotate = |c: usize| {
        let mut log = node.container("rot", &format!("pod{c}"), &uid(c as u32), "app");
        let mut written = Vec::new();
        for round in 0..ROTATIONS {
            let before = numbered(&format!("c{c}-r{round}-a"), 0..LINES_PER_ROUND);
            log.lines(&before);
            // The runtime writes on to the renamed file until it reopens:
            // those lines must not be lost either.
            log.rename_current();
            let late = numbered(&format!("c{c}-r{round}-late"), 0..5);
            log.lines(&late);
            log.reopen();
            // Kubelet's housekeeping: delete beyond 5 files, gzip all
            // rotated files but the newest. A file created, rotated and
            // deleted before logd could open it at all is lost whatever
            // logd does; kubelet rotates every 10 s at most, so deletion
            // waits until logd has seen the file (its first line arrived),
            // though not until logd finished it.
            if round >= 3 {
                let seen = format!("c{c}-r{}-a-0", round - 3);
                wait_until(SOON, &format!("{seen} to arrive"), || {
                    intake
                        .log_lines()
                        .iter()
                        .any(|l| l.ends_with(&format!(" F {seen}")))
                });
            }
            log.delete_oldest(3);
            log.compress_older();
            written.extend(before);
            written.extend(late);
        }
        let last = numbered(&format!("c{c}-end"), 0..10);
        log.lines(&last);
        written.extend(last);
        written
    };
    let expected: Vec<String> = std::thread::scope(|scope| {
        let writers: Vec<_> = (0..CONTAINERS)
            .map(|c| scope.spawn(move || write_and_rotate(c)))
            .collect();
        writers
            .into_iter()
            .flat_map(|w| w.join().expect("writer thread"))
            .collect()
    });

    wait_for_all(&intake, &expected, Duration::from_secs(60));
    logd.wait_idle(SOON);
    assert_each_once(&expected, &messages(&intake));
    let m = logd.metrics();
    assert_eq!(m.get("logd_lost_to_rotation_files_total"), 0.0);
}

#[test]
fn rotations_while_logd_is_stopped_lose_and_repeat_nothing() {
    let node = Node::new();
    let intake = Intake::start();
    let env = Env::new(&node, &intake);
    let mut log = node.container("default", "api", &uid(7), "api");

    let shipped = numbered("shipped", 0..100);
    log.lines(&shipped);
    let mut logd = Logd::start(&node, &env);
    wait_for_all(&intake, &shipped, SOON);
    logd.wait_idle(SOON);
    logd.signal("TERM");
    assert!(logd.wait_exit(SOON).success());
    drop(logd);

    // While logd is down: more lines in the file it knows, two rotations,
    // the older rotated file gzipped (its name and inode change).
    let in_known_file = numbered("known-file", 0..100);
    log.lines(&in_known_file);
    log.rotate();
    let in_new_file = numbered("new-file", 0..100);
    log.lines(&in_new_file);
    log.rotate();
    log.compress_older();
    let in_current = numbered("current", 0..100);
    log.lines(&in_current);
    let names: Vec<String> = log
        .rotated_files()
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert!(
        names[0].ends_with(".gz") && !names[1].ends_with(".gz"),
        "{names:?}"
    );

    let logd = Logd::start(&node, &env);
    let expected = [shipped, in_known_file, in_new_file, in_current].concat();
    wait_for_all(&intake, &expected, SOON);
    logd.wait_idle(SOON);
    assert_each_once(&expected, &messages(&intake));
}

/// Writes `bytes` worth of numbered lines (about 100 bytes each) in
/// writes of about 256 KiB; returns the messages.
fn write_lots(log: &mut common::pods::ContainerLog, prefix: &str, bytes: usize) -> Vec<String> {
    let per_line = cri_line(&format!("{prefix}-0000000-padding-padding-padding")).len();
    let count = bytes / per_line;
    let all: Vec<String> = (0..count)
        .map(|i| format!("{prefix}-{i:07}-padding-padding-padding"))
        .collect();
    for block in all.chunks(2500) {
        log.lines(block);
    }
    all
}

#[test]
fn a_deleted_file_is_finished_once_the_intake_is_back() {
    let node = Node::new();
    let intake = Intake::start();
    let logd = Logd::start(&node, &Env::new(&node, &intake));
    let mut log = node.container("default", "batch", &uid(8), "job");
    log.line("first");
    wait_for_all(&intake, &["first".to_owned()], SOON);

    intake.set_refusing(true);
    // More than the pipeline holds (a few MiB of batches and parked
    // pieces): logd must read the rest from the deleted file later.
    let lines = write_lots(&mut log, "deleted", 24 * 1024 * 1024);
    log.rotate();
    log.delete_oldest(0);
    log.line("after");

    intake.set_refusing(false);
    let expected = [vec!["first".to_owned()], lines, vec!["after".to_owned()]].concat();
    wait_for_all(&intake, &expected, Duration::from_secs(90));
    logd.wait_idle(SOON);
    assert_each_once(&expected, &messages(&intake));
    assert_eq!(logd.metrics().get("logd_lost_to_rotation_files_total"), 0.0);
}

#[test]
fn deleted_files_beyond_the_cap_are_counted_as_lost_and_logged() {
    let node = Node::new();
    let intake = Intake::start();
    let env = Env::new(&node, &intake).set("LOGD_DELETED_MAX_FILES", "1");
    let logd = Logd::start(&node, &env);
    let mut log = node.container("default", "noisy", &uid(9), "app");
    log.line("first");
    wait_for_all(&intake, &["first".to_owned()], SOON);

    intake.set_refusing(true);
    // Three files of 8 MiB, all deleted while the intake is down: more
    // than the pipeline holds, so some of it is unread; only one deleted
    // file may be kept open.
    let mut written = vec!["first".to_owned()];
    for i in 0..3 {
        written.extend(write_lots(&mut log, &format!("f{i}"), 8 * 1024 * 1024));
        log.rotate();
    }
    log.delete_oldest(0);
    wait_until(SOON, "logd to let go of deleted files", || {
        logd.metrics().get("logd_lost_to_rotation_files_total") >= 1.0
    });
    log.line("after");
    written.push("after".to_owned());
    intake.set_refusing(false);
    wait_for_all(&intake, &["after".to_owned()], Duration::from_secs(90));
    logd.wait_idle(SOON);

    let received = messages(&intake);
    let tally = Tally::of(&written, &received);
    assert!(
        tally.duplicated.is_empty() && tally.unexpected.is_empty(),
        "{}",
        tally.summary()
    );
    assert!(
        !tally.missing.is_empty(),
        "nothing was lost: the cap was not reached"
    );
    let m = logd.metrics();
    let lost_bytes: usize = tally.missing.iter().map(|m| cri_line(m).len()).sum();
    assert_eq!(
        m.get("logd_lost_to_rotation_bytes_total"),
        lost_bytes as f64,
        "lost bytes counted vs the lines that never arrived"
    );
    assert!(
        logd.stderr()
            .contains("was deleted before logd read it to its end"),
        "the loss is not logged"
    );
}
