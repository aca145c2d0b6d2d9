//! Behaviour of the tailing core on real files in a temp pods dir: first
//! start, rotation, compression, truncation, deletion, restarts, symlinks.

mod core_support;

use std::fs;
use std::io::Write;
use std::os::unix::fs::symlink;

use core_support::{Node, append, contents, cri, drain, lines, read_all};
use flate2::Compression;
use flate2::write::GzEncoder;
use logd::{ReadFrom, Tailer};

const UID: &str = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0";

fn gzip(plain: &std::path::Path) {
    let gz = plain.with_file_name(format!(
        "{}.gz",
        plain.file_name().unwrap().to_str().unwrap()
    ));
    let tmp = plain.with_file_name(format!(
        "{}.tmp",
        plain.file_name().unwrap().to_str().unwrap()
    ));
    let mut enc = GzEncoder::new(Vec::new(), Compression::fast());
    enc.write_all(&fs::read(plain).unwrap()).unwrap();
    fs::write(&tmp, enc.finish().unwrap()).unwrap();
    fs::rename(&tmp, gz).unwrap();
    fs::remove_file(plain).unwrap();
}

#[test]
fn first_start_reads_current_files_and_skips_rotated_ones() {
    let node = Node::new();
    let dir = node.container("default", "web", UID, "nginx");
    append(
        &dir.join("0.log.20241118-080000"),
        &cri(1, "stdout", 'F', "old rotated"),
    );
    append(
        &dir.join("0.log"),
        &(cri(2, "stdout", 'F', "current 1") + &cri(3, "stderr", 'F', "current 2")),
    );
    let mut t = node.start(node.config());
    let chunks = read_all(&mut t, 1 << 20);
    assert_eq!(contents(&lines(&chunks)), ["current 1", "current 2"]);
    let meta = &chunks[0].meta;
    assert_eq!(
        meta.intake_path,
        format!("/var/log/pods/default_web_{UID}/nginx")
    );
    assert_eq!(
        (
            meta.namespace.as_str(),
            meta.pod.as_str(),
            meta.container.as_str(),
            meta.file.as_str()
        ),
        ("default", "web", "nginx", "0.log")
    );
    for c in &chunks {
        t.ack(c.ack);
    }
    node.save(&t);
    drop(t);
    // A restart does not take the skipped rotated file for a new one.
    let mut t = node.start(node.config());
    assert_eq!(drain(&mut t), Vec::<String>::new());
}

#[test]
fn read_from_end_starts_after_the_last_complete_line() {
    let node = Node::new();
    let log = node.container("ns", "p", UID, "c").join("0.log");
    append(
        &log,
        &(cri(1, "stdout", 'F', "before") + &cri(2, "stdout", 'F', "half")[..30]),
    );
    let mut cfg = node.config();
    cfg.read_from = ReadFrom::End;
    let mut t = node.start(cfg);
    assert_eq!(drain(&mut t), Vec::<String>::new());
    append(&log, &cri(2, "stdout", 'F', "half")[30..]);
    append(&log, &cri(3, "stdout", 'F', "after"));
    t.notify(&log);
    assert_eq!(contents(&drain(&mut t)), ["half", "after"]);
}

#[test]
fn rotated_file_is_read_to_the_end_before_release() {
    let node = Node::new();
    let dir = node.container("ns", "p", UID, "c");
    let log = dir.join("0.log");
    append(&log, &cri(1, "stdout", 'F', "one"));
    let mut t = node.start(node.config());
    assert_eq!(contents(&drain(&mut t)), ["one"]);
    // kubelet renames; the runtime still writes to the renamed file before it reopens.
    let rotated = dir.join("0.log.20241118-080001");
    fs::rename(&log, &rotated).unwrap();
    t.notify(&dir);
    append(&rotated, &cri(2, "stdout", 'F', "two"));
    append(&rotated, "2024-11-18T08:00:03.0Z stdout F no newline");
    t.notify(&rotated);
    assert_eq!(
        contents(&drain(&mut t)),
        ["two"],
        "the last line is held while the file may grow"
    );
    append(&log, &cri(4, "stdout", 'F', "four"));
    t.notify(&dir);
    assert_eq!(contents(&drain(&mut t)), ["no newline", "four"]);
    assert_eq!(t.stats().files_open, 1, "the rotated file was released");
    // Its .gz is never read again.
    gzip(&rotated);
    t.notify(&dir);
    assert_eq!(drain(&mut t), Vec::<String>::new());
}

#[test]
fn gz_of_an_open_rotated_file_is_not_read_twice() {
    let node = Node::new();
    let dir = node.container("ns", "p", UID, "c");
    let log = dir.join("0.log");
    append(&log, &cri(1, "stdout", 'F', "one"));
    let mut t = node.start(node.config());
    let first = read_all(&mut t, 1 << 20);
    assert_eq!(contents(&lines(&first)), ["one"]);
    append(&log, &cri(2, "stdout", 'F', "two"));
    let rotated = dir.join("0.log.20241118-080001");
    fs::rename(&log, &rotated).unwrap();
    append(&log, &cri(3, "stdout", 'F', "three"));
    gzip(&rotated);
    t.notify(&dir);
    // The open descriptor of the deleted plain file is read; the .gz is recognised.
    assert_eq!(
        contents(&lines(&read_all(&mut t, 1 << 20))),
        ["two", "three"]
    );
    t.notify(&dir);
    assert!(read_all(&mut t, 1 << 20).is_empty());
}

#[test]
fn stop_then_rotations_and_gzip_then_restart_loses_nothing() {
    let node = Node::new();
    let dir = node.container("ns", "p", UID, "c");
    let log = dir.join("0.log");
    append(
        &log,
        &(cri(1, "stdout", 'F', "a") + &cri(2, "stdout", 'F', "b")),
    );
    let mut t = node.start(node.config());
    let chunks = read_all(&mut t, 1 << 20);
    t.ack(chunks[0].ack);
    node.save(&t);
    append(&log, &cri(3, "stdout", 'F', "c"));
    t.notify(&log);
    assert_eq!(contents(&drain(&mut t)), ["c"]);
    drop(t); // crash: "c" was acknowledged but not saved
    // While logd is down: two rotations, and the older rotated file is compressed.
    append(&log, &cri(4, "stdout", 'F', "d"));
    fs::rename(&log, dir.join("0.log.20241118-080001")).unwrap();
    append(&log, &cri(5, "stdout", 'F', "e"));
    fs::rename(&log, dir.join("0.log.20241118-080002")).unwrap();
    append(&log, &cri(6, "stdout", 'F', "f"));
    gzip(&dir.join("0.log.20241118-080001"));
    let mut t = node.start(node.config());
    assert_eq!(contents(&drain(&mut t)), ["c", "d", "e", "f"]);
    node.save(&t);
    drop(t);
    let mut t = node.start(node.config());
    assert_eq!(
        drain(&mut t),
        Vec::<String>::new(),
        "nothing is read twice after a clean save"
    );
}

#[test]
fn copytruncate_restarts_at_zero() {
    let node = Node::new();
    let log = node.container("ns", "p", UID, "c").join("0.log");
    append(
        &log,
        &(cri(1, "stdout", 'F', "first long line of the file") + &cri(2, "stdout", 'F', "second")),
    );
    let mut t = node.start(node.config());
    assert_eq!(drain(&mut t).len(), 2);
    fs::OpenOptions::new()
        .write(true)
        .open(&log)
        .unwrap()
        .set_len(0)
        .unwrap();
    t.notify(&log);
    assert!(drain(&mut t).is_empty());
    append(&log, &cri(3, "stdout", 'F', "after truncation"));
    t.notify(&log);
    assert_eq!(contents(&drain(&mut t)), ["after truncation"]);
    assert_eq!(t.stats().truncations, 1);
}

#[test]
fn deleted_file_is_read_through_its_descriptor_and_caps_count_losses() {
    let node = Node::new();
    let dir = node.container("ns", "p", UID, "c");
    let log = dir.join("0.log");
    append(&log, &cri(1, "stdout", 'F', "one"));
    let mut t = node.start(node.config());
    assert_eq!(drain(&mut t).len(), 1);
    append(&log, &cri(2, "stdout", 'F', "written before the delete"));
    fs::remove_file(&log).unwrap();
    t.notify(&dir);
    assert_eq!(contents(&drain(&mut t)), ["written before the delete"]);
    assert_eq!(t.stats().files_open, 0);

    // With no deleted file allowed open, an unread deleted file is let go and counted.
    let log1 = dir.join("1.log");
    append(&log1, &cri(3, "stdout", 'F', "x"));
    let mut cfg = node.config();
    cfg.max_deleted_open = 0;
    let mut t = node.start(cfg);
    append(&log1, &cri(4, "stdout", 'F', "lost"));
    let chunks = read_all(&mut t, 1);
    assert_eq!(
        contents(&lines(&chunks)),
        ["x", "lost"],
        "read as long as it exists"
    );
    append(&log1, &cri(5, "stdout", 'F', "gone"));
    fs::remove_file(&log1).unwrap();
    t.notify(&dir);
    assert!(read_all(&mut t, 1 << 20).is_empty());
    let stats = t.stats();
    assert_eq!(
        (stats.lost_files, stats.lost_bytes),
        (1, cri(5, "stdout", 'F', "gone").len() as u64)
    );
}

#[test]
fn unterminated_line_is_held_until_its_newline() {
    let node = Node::new();
    let log = node.container("ns", "p", UID, "c").join("0.log");
    let line = cri(1, "stdout", 'F', "written in two parts");
    append(&log, &line[..20]);
    let mut t = node.start(node.config());
    assert!(drain(&mut t).is_empty());
    append(&log, &line[20..]);
    t.notify(&log);
    assert_eq!(contents(&drain(&mut t)), ["written in two parts"]);
}

#[test]
fn committed_offset_stops_before_unacked_chunks_and_pending_partials() {
    let node = Node::new();
    let log = node.container("ns", "p", UID, "c").join("0.log");
    let a = cri(1, "stdout", 'F', "a");
    append(&log, &a);
    let mut t = node.start(node.config());
    let c1 = read_all(&mut t, 1 << 20);
    append(
        &log,
        &(cri(2, "stderr", 'P', "partial ") + &cri(3, "stdout", 'F', "b")),
    );
    t.notify(&log);
    let c2 = read_all(&mut t, 1 << 20);
    assert_eq!(contents(&lines(&c2)), ["b"]);
    t.ack(c2[0].ack);
    node.save(&t);
    // c1 is not acknowledged: a restart reads everything again.
    let mut restarted = node.start(node.config());
    assert_eq!(
        contents(&drain(&mut restarted)),
        ["a", "b"],
        "the partial line is still pending"
    );
    drop(restarted);
    t.ack(c1[0].ack);
    node.save(&t);
    // Now "a" is committed, but "b" is not past the pending partial line, so it comes again whole.
    let mut restarted = node.start(node.config());
    assert_eq!(contents(&drain(&mut restarted)), ["b"]);
    drop(restarted);
    append(&log, &cri(4, "stderr", 'F', "done"));
    t.notify(&log);
    assert_eq!(contents(&drain(&mut t)), ["partial done"]);
    node.save(&t);
    let mut restarted = node.start(node.config());
    assert!(drain(&mut restarted).is_empty());
}

#[test]
fn symlinked_docker_log_is_followed_across_docker_rotation() {
    let node = Node::new();
    let dir = node.container("ns", "p", UID, "c");
    let docker_dir = node.state.parent().unwrap().join("docker").join("abc");
    fs::create_dir_all(&docker_dir).unwrap();
    let target = docker_dir.join("abc-json.log");
    let rec = |log: &str, n: u64| {
        format!(
            "{{\"log\":\"{log}\\n\",\"stream\":\"stdout\",\"time\":\"2024-11-18T10:00:{n:02}.5+02:00\"}}\n"
        )
    };
    append(&target, &rec("one", 1));
    symlink(&target, dir.join("0.log")).unwrap();
    let mut t = node.start(node.config());
    assert_eq!(drain(&mut t), ["2024-11-18T08:00:01.5Z stdout F one"]);
    append(&target, &rec("two", 2));
    t.notify(&target);
    fs::rename(&target, docker_dir.join("abc-json.log.1")).unwrap();
    append(&target, &rec("three", 3));
    t.notify(&docker_dir);
    assert_eq!(contents(&drain(&mut t)), ["two", "three"]);
}

#[test]
fn excluded_namespaces_and_own_pod_are_not_read() {
    let node = Node::new();
    append(
        &node.container("kube-system", "p", UID, "c").join("0.log"),
        &cri(1, "stdout", 'F', "excluded ns"),
    );
    append(
        &node
            .container("logging", "logd", "self-uid", "logd")
            .join("0.log"),
        &cri(2, "stdout", 'F', "own output"),
    );
    append(
        &node.container("default", "p", UID, "c").join("0.log"),
        &cri(3, "stdout", 'F', "kept"),
    );
    let mut cfg = node.config();
    cfg.exclude_namespaces = vec!["kube-system".into()];
    cfg.exclude_pod_uid = Some("self-uid".into());
    let mut t = node.start(cfg);
    assert_eq!(contents(&drain(&mut t)), ["kept"]);
}

#[test]
fn checkpoints_of_gone_files_are_pruned() {
    let node = Node::new();
    let dir = node.container("ns", "p", UID, "c");
    append(&dir.join("0.log"), &cri(1, "stdout", 'F', "one"));
    let mut t = node.start(node.config());
    drain(&mut t);
    assert_eq!(t.checkpoint().len(), 1);
    fs::remove_dir_all(dir.parent().unwrap()).unwrap();
    t.scan();
    drain(&mut t);
    t.scan();
    // Pruned when a second listing in a row misses it (one listing may miss
    // a file being renamed).
    assert_eq!(t.checkpoint().len(), 1);
    t.scan();
    assert_eq!(t.checkpoint().len(), 0);
}

#[test]
fn read_is_bounded_by_max_bytes_and_fair_between_files() {
    let node = Node::new();
    let a = node.container("ns", "a", UID, "c").join("0.log");
    let b = node.container("ns", "b", UID, "c").join("0.log");
    for n in 0..1000 {
        append(
            &a,
            &cri(n, "stdout", 'F', "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"),
        );
        append(
            &b,
            &cri(n, "stdout", 'F', "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"),
        );
    }
    let mut t = node.start(node.config());
    let line_len = cri(0, "stdout", 'F', "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa").len();
    let mut seen_b_early = false;
    for round in 0..10 {
        let chunks = t.read(10_000);
        let bytes: usize = chunks.iter().map(|c| c.lines.len()).sum();
        assert!(bytes <= 10_000 + line_len, "round {round}: {bytes} bytes");
        seen_b_early |= chunks.iter().any(|c| c.meta.pod == "b");
    }
    assert!(
        seen_b_early,
        "the second file gets its turn before the first is done"
    );
    let rest = read_all(&mut t, 1 << 20);
    assert!(!rest.is_empty());
}

#[test]
fn a_read_cut_by_its_budget_says_the_file_has_more() {
    let node = Node::new();
    let log = node.container("ns", "a", UID, "c").join("0.log");
    for n in 0..1000 {
        append(&log, &cri(n, "stdout", 'F', "a backlog of lines to read"));
    }
    let mut t = node.start(node.config());
    let cut = t.read(10_000);
    assert_eq!(cut.len(), 1);
    assert!(cut[0].more, "a read cut by the budget with lines left");
    let rest = t.read(1 << 20);
    assert_eq!(rest.len(), 1);
    assert!(!rest[0].more, "a read to the end of what is written");
    append(&log, &cri(1000, "stdout", 'F', "one more"));
    t.notify_write(&log);
    let last = t.read(10_000);
    assert!(last.len() == 1 && !last[0].more, "a line written later");
}

#[test]
fn restart_resumes_from_the_saved_offset() {
    let node = Node::new();
    let log = node.container("ns", "p", UID, "c").join("0.log");
    append(&log, &cri(1, "stdout", 'F', "one"));
    let mut t = node.start(node.config());
    assert_eq!(drain(&mut t).len(), 1);
    node.save(&t);
    drop(t);
    append(&log, &cri(2, "stdout", 'F', "two"));
    let mut t: Tailer = node.start(node.config());
    assert_eq!(contents(&drain(&mut t)), ["two"]);
}

#[test]
fn bytes_behind_counts_what_is_written_and_not_read_yet() {
    let node = Node::new();
    let dir = node.container("ns", "p", UID, "c");
    let first = cri(1, "stdout", 'F', "one");
    append(&dir.join("0.log"), &first);
    let mut t = node.start(node.config());
    let chunks = read_all(&mut t, 1 << 20);
    assert_eq!(t.stats().bytes_behind, first.len() as u64);
    // Written while nothing is read (the daemon waits on the intake).
    let second = cri(2, "stdout", 'F', "two");
    append(&dir.join("0.log"), &second);
    assert_eq!(t.stats().bytes_behind, (first.len() + second.len()) as u64);
    for chunk in chunks {
        t.ack(chunk.ack);
    }
    assert_eq!(t.stats().bytes_behind, second.len() as u64);
}
