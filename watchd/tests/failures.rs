//! Intake failures against the real binary: outages and error statuses
//! lose nothing; a record the intake refuses for good is the only loss;
//! SIGTERM drains what is batched and exits 0.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::json;
use support::{DEADLINE, Watchd, copy, fixture, wait_intake};
use testkit::apiserver::ApiServer;
use testkit::intake::{Faults, Intake};
use testkit::wait::wait_until;

fn create_pods(api: &ApiServer, prefix: &str, n: usize) {
    for i in 0..n {
        api.create(json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": format!("{prefix}-{i}"), "namespace": "default"},
            "spec": {"containers": [{"name": "c", "image": "nginx"}]}}));
    }
}

/// How many records each pod name has, over all event types.
fn per_pod(intake: &Intake) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for r in intake.records("resources") {
        let name = r["json"]["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        *counts.entry(name).or_insert(0) += 1;
    }
    counts
}

#[test]
fn an_intake_outage_loses_nothing() {
    let api = ApiServer::start();
    create_pods(&api, "before", 10);
    let intake = Intake::start();
    intake.set_refusing(true);
    let watchd = Watchd::start(&api, &intake, &[("WATCHD_RESOURCES", "pods")]);
    watchd.wait_log("retrying in", DEADLINE);
    create_pods(&api, "during", 10);
    intake.set_refusing(false);
    wait_intake(&intake, &watchd, "all 20 pods", |i| per_pod(i).len() == 20);
    assert!(
        per_pod(&intake).values().all(|n| *n == 1),
        "{:?}",
        per_pod(&intake)
    );
}

#[test]
fn during_an_intake_outage_the_watchers_wait_and_memory_stays_bounded() {
    // 4,000 fixture-shaped Pods: about 21 MB as JSON, several times that
    // as parsed objects, listed in pages of 250.
    const PODS: usize = 4000;
    let api = ApiServer::start();
    let pod = fixture("pod-aggregation__apply_pod");
    for i in 0..PODS {
        api.create(copy(&pod, &format!("outage-{i}")));
    }
    let intake = Intake::start();
    intake.set_refusing(true);
    let watchd = Watchd::start(&api, &intake, &[("WATCHD_RESOURCES", "pods")]);
    // Three failed sends (backoff 1 + 2 s): the buffers have long filled.
    wait_until(DEADLINE, "three retries of a send", || {
        watchd.log().matches("retrying in").count() >= 3
    });
    let pages = || {
        api.requests()
            .iter()
            .filter(|r| r.path.ends_with("/pods") && !r.is_watch())
            .count()
    };
    let pages_during_outage = pages();
    let rss_during_outage = watchd.peak_rss_kib();
    // Bounded buffering (SPEC §4): a channel of 64 events, and per route a
    // lane of 256 records and a batch; the rest waits in the API server.
    assert!(
        pages_during_outage <= 4,
        "{pages_during_outage} list pages of {} fetched while nothing could be sent",
        PODS.div_ceil(250)
    );
    assert!(
        rss_during_outage < 64 * 1024,
        "peak RSS {rss_during_outage} KiB during the outage"
    );
    intake.set_refusing(false);
    wait_intake(&intake, &watchd, "every pod", |i| per_pod(i).len() == PODS);
    assert!(pages() > pages_during_outage);
    eprintln!(
        "outage: {pages_during_outage} list pages fetched, peak RSS {} MiB",
        rss_during_outage / 1024
    );
}

#[test]
fn error_statuses_are_retried_and_lose_nothing() {
    let api = ApiServer::start();
    create_pods(&api, "p", 30);
    let intake = Intake::start();
    intake.set_faults(Faults {
        fail_503: 0.3,
        fail_429: 0.3,
        retry_after_secs: Some(0),
        ..Faults::default()
    });
    // Small batches: many requests, many faults.
    let watchd = Watchd::start(
        &api,
        &intake,
        &[
            ("WATCHD_RESOURCES", "pods"),
            ("WATCHD_BATCH_MAX_BYTES", "2KiB"),
        ],
    );
    create_pods(&api, "q", 30);
    wait_intake(&intake, &watchd, "all 60 pods", |i| per_pod(i).len() == 60);
    let statuses = intake.status_counts();
    assert!(
        statuses.get(&503).copied().unwrap_or(0) + statuses.get(&429).copied().unwrap_or(0) > 0,
        "{statuses:?}"
    );
    assert!(
        per_pod(&intake).values().all(|n| *n == 1),
        "{:?}",
        per_pod(&intake)
    );
}

#[test]
fn a_record_the_intake_refuses_is_isolated_logged_and_dropped_and_the_rest_arrives() {
    let api = ApiServer::start();
    create_pods(&api, "good", 20);
    api.create(json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "poison-pill", "namespace": "default"}, "spec": {}}));
    create_pods(&api, "fine", 20);
    let intake = Intake::start();
    intake.reject_lines_containing("poison-pill", 400);
    let watchd = Watchd::start(&api, &intake, &[("WATCHD_RESOURCES", "pods")]);
    wait_intake(&intake, &watchd, "the 40 good pods", |i| {
        per_pod(i).len() == 40
    });
    watchd.wait_log("the intake refused a record for good, dropped: /resources initapply Pod default/poison-pill", DEADLINE);
    assert!(!per_pod(&intake).contains_key("poison-pill"));
    let metrics = watchd.get("/metrics").1;
    assert!(
        metrics.contains("watchd_records_dropped_total{reason=\"rejected\"} 1"),
        "{metrics}"
    );
}

#[test]
fn a_record_the_intake_answers_500_again_and_again_is_dropped_while_the_rest_arrives() {
    let api = ApiServer::start();
    create_pods(&api, "good", 20);
    api.create(json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "crashes-the-backend", "namespace": "default"}, "spec": {}}));
    create_pods(&api, "fine", 20);
    let intake = Intake::start();
    intake.reject_lines_containing("crashes-the-backend", 500);
    let watchd = Watchd::start(&api, &intake, &[("WATCHD_RESOURCES", "pods")]);
    wait_intake(&intake, &watchd, "the 40 good pods", |i| {
        per_pod(i).len() == 40
    });
    watchd.wait_log(
        "dropped: /resources initapply Pod default/crashes-the-backend",
        DEADLINE,
    );
    assert!(!per_pod(&intake).contains_key("crashes-the-backend"));
}

#[test]
fn an_intake_that_answers_500_to_everything_is_an_outage_and_loses_nothing() {
    let api = ApiServer::start();
    create_pods(&api, "p", 5);
    let intake = Intake::start();
    intake.set_faults(Faults {
        fail_500: 1.0,
        ..Faults::default()
    });
    let watchd = Watchd::start(&api, &intake, &[("WATCHD_RESOURCES", "pods")]);
    // Long enough to split the batch down to single records and retry them.
    assert!(intake.wait_for(
        DEADLINE,
        |i| i.status_counts().get(&500).copied().unwrap_or(0) >= 12
    ));
    intake.set_faults(Faults::default());
    wait_intake(&intake, &watchd, "all 5 pods", |i| per_pod(i).len() == 5);
    assert!(!watchd.log().contains("dropped"), "{}", watchd.log());
}

#[test]
fn sigterm_sends_what_is_batched_and_exits_0() {
    let api = ApiServer::start();
    create_pods(&api, "p", 25);
    let intake = Intake::start();
    // A linger far longer than the test: only the drain can send them.
    let mut watchd = Watchd::start(
        &api,
        &intake,
        &[
            ("WATCHD_RESOURCES", "pods"),
            ("WATCHD_BATCH_LINGER_MS", "600000"),
        ],
    );
    watchd.wait_ready();
    let produced = "watchd_records_total{route=\"resources\",event_type=\"initapply\"} 25";
    let deadline = std::time::Instant::now() + DEADLINE;
    while !watchd.get("/metrics").1.contains(produced) {
        assert!(
            std::time::Instant::now() < deadline,
            "{}",
            watchd.get("/metrics").1
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(intake.records("resources").is_empty());
    watchd.sigterm();
    let status = watchd.wait_exit(DEADLINE);
    assert_eq!(status.code(), Some(0), "{}", watchd.log());
    assert_eq!(per_pod(&intake).len(), 25);
}
