//! SIGTERM/SIGINT become a shutdown; a second one exits at once. Signals
//! are raised in this test binary's own process (its own, apart from the
//! other test binaries) and in a child process.

use std::process::Command;
use std::time::{Duration, Instant};

use shared::shutdown::{FORCED_EXIT_CODE, Shutdown};
use signal_hook::consts::{SIGINT, SIGTERM};

const DEADLINE: Duration = Duration::from_secs(30);

fn thread_names() -> Vec<String> {
    std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task")
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .map(|name| name.trim().to_string())
        .collect()
}

#[test]
fn sigterm_triggers_the_shutdown_on_a_named_thread() {
    let shutdown = Shutdown::install("sigtest").expect("signal handler");
    // The new thread names itself as it starts: wait for it.
    let deadline = Instant::now() + DEADLINE;
    while !thread_names().iter().any(|n| n == "sigtest-signal") {
        assert!(Instant::now() < deadline, "no thread named sigtest-signal");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(!shutdown.is_triggered());
    signal_hook::low_level::raise(SIGTERM).expect("raise SIGTERM");
    assert!(
        shutdown.wait_timeout(DEADLINE),
        "SIGTERM did not trigger the shutdown"
    );
}

#[test]
fn a_second_signal_exits_at_once() {
    let output = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "second_signal_child",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .output()
        .expect("child runs");
    assert_eq!(output.status.code(), Some(FORCED_EXIT_CODE), "{output:?}");
}

/// The child half of `a_second_signal_exits_at_once`.
#[test]
#[ignore = "run by a_second_signal_exits_at_once in a child process"]
fn second_signal_child() {
    let shutdown = Shutdown::install("sigchild").expect("signal handler");
    signal_hook::low_level::raise(SIGINT).expect("raise SIGINT");
    assert!(
        shutdown.wait_timeout(DEADLINE),
        "SIGINT did not trigger the shutdown"
    );
    signal_hook::low_level::raise(SIGTERM).expect("raise SIGTERM");
    // The signal thread exits the process; reaching the end fails the parent.
    std::thread::sleep(DEADLINE);
    panic!("the second signal did not exit the process");
}
