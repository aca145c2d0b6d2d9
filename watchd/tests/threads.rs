//! Every thread of a running watchd has a name (SPEC: users debug with
//! `top -H`).

mod support;

use std::collections::BTreeSet;

use support::Watchd;
use testkit::apiserver::ApiServer;
use testkit::intake::Intake;

#[test]
fn every_thread_has_a_watchd_name() {
    let api = ApiServer::start();
    let intake = Intake::start();
    let watchd = Watchd::start(&api, &intake, &[]);
    watchd.wait_ready();
    let names: BTreeSet<String> = std::fs::read_dir(format!("/proc/{}/task", watchd.pid()))
        .expect("the task dir")
        .map(|t| {
            let path = t.expect("a task").path().join("comm");
            std::fs::read_to_string(path)
                .unwrap_or_default()
                .trim()
                .to_string()
        })
        .collect();
    for expected in [
        "watchd-kube",
        "watchd-process",
        // One upload thread per route, short enough for Linux's 15 bytes.
        "watchd-up-res",
        "watchd-up-cr",
        "watchd-up-ev",
        "watchd-metrics",
        "watchd-signal",
    ] {
        assert!(
            names.contains(expected),
            "{expected} missing from {names:?}"
        );
    }
    // The main thread is named after the binary; the metrics server's
    // library threads inherit watchd-metrics; the runtime's blocking pool
    // (if used at all) is watchd-kube-blk.
    let allowed = |n: &str| n == "watchd" || n.starts_with("watchd-");
    assert!(
        names.iter().all(|n| allowed(n)),
        "unexpected thread names: {names:?}"
    );
    eprintln!("threads: {names:?}");
}
