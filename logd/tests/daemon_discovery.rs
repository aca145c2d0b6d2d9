//! The real logd binary finding files: inotify, its overflow and its
//! limits, pods appearing and vanishing, exclusions, where the pods dir is
//! mounted, symlinked logs.

mod common;

use std::fs;
use std::io::Write;
use std::time::Duration;

use common::daemon::{Env, Logd};
use common::delivery::{assert_each_once, messages, numbered, wait_for_all};
use common::pods::{Node, cri_line, docker_json_line, uid};
use common::{SOON, wait_until};
use testkit::intake::{Faults, Intake};

#[test]
fn an_inotify_queue_overflow_misses_nothing() {
    let node = Node::new();
    let intake = Intake::start();
    let logd = Logd::start(&node, &Env::new(&node, &intake));
    let mut known = node.container("default", "known", &uid(1), "app");
    known.line("known-0");
    wait_for_all(&intake, &["known-0".to_owned()], SOON);

    // Stopped, logd reads no events: the kernel queue fills and overflows.
    let queue: usize = fs::read_to_string("/proc/sys/fs/inotify/max_queued_events")
        .expect("reading max_queued_events")
        .trim()
        .parse()
        .expect("a number");
    logd.signal("STOP");
    for i in 0..queue / 2 + 100 {
        // Two events each (created, deleted) in the watched pods dir.
        let junk = node.pods.join(format!("junk-{i}"));
        fs::create_dir(&junk).expect("mkdir");
        fs::remove_dir(&junk).expect("rmdir");
    }
    // What happens now has no event in the queue any more.
    let mut expected = vec!["known-0".to_owned()];
    let late = numbered("known-late", 0..10);
    known.lines(&late);
    expected.extend(late);
    for p in 0..5 {
        let mut log = node.container(
            "default",
            &format!("after-overflow-{p}"),
            &uid(100 + p),
            "app",
        );
        let lines = numbered(&format!("new-pod-{p}"), 0..10);
        log.lines(&lines);
        expected.extend(lines);
    }
    logd.signal("CONT");

    wait_for_all(&intake, &expected, SOON);
    logd.wait_idle(SOON);
    assert_each_once(&expected, &messages(&intake));
    assert!(logd.metrics().get("logd_inotify_rescans_total") >= 1.0);
    assert!(
        logd.stderr().contains("overflowed"),
        "the overflow is not logged"
    );
}

#[test]
fn out_of_inotify_watches_every_pod_is_still_read() {
    let node = Node::new();
    let intake = Intake::start();
    // The pods dir and one pod with its container: then no watch is left.
    let env = Env::new(&node, &intake).set("LOGD_TEST_MAX_INOTIFY_WATCHES", "3");
    let mut first = node.container("default", "first", &uid(1), "app");
    first.line("first-0");
    let logd = Logd::start(&node, &env);

    let mut logs: Vec<_> = (0..10)
        .map(|p| node.container("default", &format!("pod{p}"), &uid(10 + p), "app"))
        .collect();
    let mut expected = vec!["first-0".to_owned()];
    for round in 0..3 {
        for (p, log) in logs.iter_mut().enumerate() {
            let lines = numbered(&format!("pod{p}-round{round}"), 0..10);
            log.lines(&lines);
            expected.extend(lines);
        }
        // Lines that arrive after each round show the unwatched files are
        // followed, not read once.
        wait_for_all(&intake, &expected, SOON);
    }
    logd.wait_idle(SOON);
    assert_each_once(&expected, &messages(&intake));
    assert!(
        logd.stderr().contains("cannot add an inotify watch"),
        "running out of watches is not logged"
    );
}

#[test]
fn a_pod_dir_deleted_while_read_is_finished_and_forgotten() {
    let node = Node::new();
    let intake = Intake::start();
    // A slow intake: logd is still reading when the pod goes away.
    intake.set_faults(Faults {
        latency: Duration::from_millis(100),
        ..Faults::default()
    });
    let env = Env::new(&node, &intake).set("LOGD_BATCH_MAX_BYTES", "64KiB");
    let logd = Logd::start(&node, &env);
    let mut log = node.container("default", "doomed", &uid(1), "app");
    let lines = numbered("doomed-padding-padding-padding-padding", 0..40_000);
    for block in lines.chunks(2000) {
        log.lines(block);
    }
    wait_until(SOON, "logd to start reading", || {
        logd.metrics().get("logd_bytes_read_total") > 0.0
    });
    fs::remove_dir_all(node.pod_dir("default", "doomed", &uid(1))).expect("rm -rf the pod dir");
    assert!(
        intake.log_line_count() < lines.len() as u64,
        "logd had shipped everything before the pod was deleted: the test proves nothing"
    );
    intake.set_faults(Faults::default());

    // A pod created afterwards is read as usual.
    let mut next = node.container("default", "next", &uid(2), "app");
    next.line("next-0");
    let expected = [lines, vec!["next-0".to_owned()]].concat();
    wait_for_all(&intake, &expected, Duration::from_secs(60));
    logd.wait_idle(SOON);
    assert_each_once(&expected, &messages(&intake));
    let m = logd.metrics();
    assert_eq!(m.get("logd_lost_to_rotation_files_total"), 0.0);
    assert_eq!(
        m.get("logd_files_open"),
        1.0,
        "the deleted file is still open"
    );
}

#[test]
fn five_hundred_pods_appearing_at_once_are_all_read() {
    let node = Node::new();
    let intake = Intake::start();
    let logd = Logd::start(&node, &Env::new(&node, &intake));
    let mut expected = Vec::new();
    let mut logs = Vec::new();
    for p in 0..500 {
        let mut log = node.container("crowd", &format!("pod{p}"), &uid(p), "app");
        let lines = numbered(&format!("pod{p}"), 0..5);
        log.lines(&lines);
        expected.extend(lines);
        logs.push(log);
    }
    // And each writes again once its dir is (or is not yet) watched.
    for (p, log) in logs.iter_mut().enumerate() {
        let lines = numbered(&format!("pod{p}-again"), 0..5);
        log.lines(&lines);
        expected.extend(lines);
    }
    wait_for_all(&intake, &expected, Duration::from_secs(60));
    logd.wait_idle(SOON);
    assert_each_once(&expected, &messages(&intake));
}

#[test]
fn new_containers_and_restart_files_are_read() {
    let node = Node::new();
    let intake = Intake::start();
    let logd = Logd::start(&node, &Env::new(&node, &intake));
    let mut app = node.container("default", "web", &uid(1), "app");
    app.line("app-0");
    // A second container of the same pod, then the first one restarts.
    let mut sidecar = node.container("default", "web", &uid(1), "sidecar");
    sidecar.line("sidecar-0");
    app.restart();
    app.line("app-restarted-0");
    app.restart();
    app.line("app-restarted-twice-0");

    let expected: Vec<String> = [
        "app-0",
        "sidecar-0",
        "app-restarted-0",
        "app-restarted-twice-0",
    ]
    .map(String::from)
    .to_vec();
    wait_for_all(&intake, &expected, SOON);
    logd.wait_idle(SOON);
    assert_each_once(&expected, &messages(&intake));
    let mut files: Vec<(String, String)> = intake
        .log_batches()
        .into_iter()
        .map(|b| (b.path.rsplit('/').next().unwrap().to_owned(), b.file))
        .collect();
    files.sort();
    files.dedup();
    assert_eq!(
        files,
        [
            ("app", "0.log"),
            ("app", "1.log"),
            ("app", "2.log"),
            ("sidecar", "0.log")
        ]
        .map(|(c, f)| (c.to_owned(), f.to_owned()))
    );
}

#[test]
fn excluded_namespaces_and_logds_own_pod_are_never_read() {
    let node = Node::new();
    let intake = Intake::start();
    let own_uid = uid(42);
    let env = Env::new(&node, &intake)
        .set("LOGD_EXCLUDE_NAMESPACES", "kube-system, quiet")
        .set("LOGD_EXCLUDE_POD_UID", &own_uid);
    let mut system = node.container("kube-system", "coredns", &uid(1), "coredns");
    let mut own = node.container("hik8s", "logd-abcde", &own_uid, "logd");
    system.line("excluded-before");
    own.line("excluded-before");
    let logd = Logd::start(&node, &env);

    system.line("excluded-after");
    own.line("excluded-after");
    let mut quiet = node.container("quiet", "job", &uid(2), "job");
    quiet.line("excluded-new-pod");
    let mut shipped = node.container("default", "web", &uid(3), "nginx");
    shipped.line("shipped-0");

    wait_for_all(&intake, &["shipped-0".to_owned()], SOON);
    logd.wait_idle(SOON);
    assert_each_once(&["shipped-0".to_owned()], &messages(&intake));
    // Not even read: the only bytes read are the shipped pod's.
    assert_eq!(
        logd.metrics().get("logd_bytes_read_total"),
        cri_line("shipped-0").len() as f64
    );
}

#[test]
fn a_pods_dir_mounted_elsewhere_is_still_reported_under_var_log_pods() {
    let node = Node::with_pods_dir("host/var/log/pods");
    let intake = Intake::start();
    let logd = Logd::start(&node, &Env::new(&node, &intake));
    let mut log = node.container("shop", "cart-7d9f", &uid(5), "cart");
    log.line("mounted-elsewhere");
    wait_for_all(&intake, &["mounted-elsewhere".to_owned()], SOON);
    logd.wait_idle(SOON);
    let batches = intake.log_batches();
    assert_eq!(batches.len(), 1);
    assert_eq!(
        batches[0].path,
        format!("/var/log/pods/shop_cart-7d9f_{}/cart", uid(5))
    );
    assert_eq!(batches[0].file, "0.log");
}

#[test]
fn a_symlinked_log_file_is_followed_to_its_target() {
    let node = Node::new();
    let intake = Intake::start();
    // cri-dockerd: the log file links to Docker's json-file log.
    let docker_dir = node.root().join("docker/containers/abc123");
    fs::create_dir_all(&docker_dir).unwrap();
    let target = docker_dir.join("abc123-json.log");
    let container_dir = node.pod_dir("default", "legacy", &uid(6)).join("app");
    fs::create_dir_all(&container_dir).unwrap();
    let mut file = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&target)
        .unwrap();
    std::os::unix::fs::symlink(&target, container_dir.join("0.log")).unwrap();
    file.write_all(docker_json_line("linked-before").as_bytes())
        .unwrap();
    let logd = Logd::start(&node, &Env::new(&node, &intake));
    wait_for_all(&intake, &["linked-before".to_owned()], SOON);

    // Writes land in the target's dir, which logd does not watch as such.
    let after = numbered("linked-after", 0..20);
    for m in &after {
        file.write_all(docker_json_line(m).as_bytes()).unwrap();
    }
    let expected = [vec!["linked-before".to_owned()], after].concat();
    wait_for_all(&intake, &expected, SOON);
    logd.wait_idle(SOON);
    assert_each_once(&expected, &messages(&intake));
    for batch in intake.log_batches() {
        assert_eq!(
            batch.path,
            format!("/var/log/pods/default_legacy_{}/app", uid(6))
        );
    }
}
