//! Changes missed while watches were down are found by the relist, and
//! only they are sent (SPEC §4 "Records").

mod support;

use serde_json::json;
use support::{Watchd, count, wait_intake};
use testkit::apiserver::ApiServer;
use testkit::intake::Intake;

fn pod(name: &str) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"},
           "spec": {"containers": [{"name": "c", "image": "nginx"}]}})
}

#[test]
fn after_frozen_watches_compaction_and_dropped_connections_only_the_missed_changes_arrive() {
    let api = ApiServer::start();
    for name in ["gone", "changed", "same"] {
        api.create(pod(name));
    }
    let intake = Intake::start();
    let watchd = Watchd::start(&api, &intake, &[("WATCHD_RESOURCES", "pods")]);
    wait_intake(&intake, &watchd, "three initapply", |i| {
        i.records("resources").len() == 3
    });

    api.freeze_watches(true);
    api.delete("v1", "Pod", Some("default"), "gone");
    api.patch_merge(
        "v1",
        "Pod",
        Some("default"),
        "changed",
        json!({"metadata": {"labels": {"v": "2"}}}),
    );
    api.create(pod("new"));
    let lists_before = api
        .requests()
        .iter()
        .filter(|r| r.path == "/api/v1/pods" && !r.is_watch())
        .count();
    api.compact();
    api.drop_watches();
    api.freeze_watches(false);

    wait_intake(&intake, &watchd, "the missed changes", |i| {
        count(i, "resources", "delete", "gone") == 1
            && count(i, "resources", "apply", "changed") == 1
            && count(i, "resources", "apply", "new") == 1
    });
    assert!(
        api.requests()
            .iter()
            .filter(|r| r.path == "/api/v1/pods" && !r.is_watch())
            .count()
            > lists_before,
        "no relist happened"
    );
    // A marker change after the relist: once it arrives, everything before
    // it has been processed.
    api.patch_merge(
        "v1",
        "Pod",
        Some("default"),
        "same",
        json!({"metadata": {"labels": {"marker": "1"}}}),
    );
    wait_intake(&intake, &watchd, "the marker", |i| {
        count(i, "resources", "apply", "same") == 1
    });
    let records = intake.records("resources");
    assert_eq!(records.len(), 3 + 3 + 1, "{records:#?}");
    let deleted = records
        .iter()
        .find(|r| r["event_type"] == "delete")
        .expect("the delete");
    assert_eq!(deleted["json"]["kind"], "Pod");
    assert_eq!(deleted["json"]["apiVersion"], "v1");
    assert_eq!(deleted["json"]["metadata"]["namespace"], "default");
}

#[test]
fn watches_that_end_at_once_are_retried_with_backoff_not_in_a_hot_loop() {
    let api = ApiServer::start();
    api.create(pod("a"));
    let intake = Intake::start();
    let watchd = Watchd::start(&api, &intake, &[("WATCHD_RESOURCES", "events")]);
    watchd.wait_ready();
    let watches = |api: &ApiServer| {
        api.requests()
            .iter()
            .filter(|r| r.path == "/api/v1/events" && r.is_watch())
            .count()
    };
    let before = watches(&api);
    // Every watch ends as soon as it starts, for 4 s.
    let start = std::time::Instant::now();
    while start.elapsed() < std::time::Duration::from_secs(4) {
        api.drop_watches();
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    let during = watches(&api) - before;
    // Paced: 0 + 0.5 + 1 + 2 s of waits fit in 4 s, so about 4 restarts
    // (a hot loop would make hundreds).
    assert!(during <= 8, "{during} watch requests in 4 s");
    // And it still works afterwards.
    api.create(json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "e1", "namespace": "default"},
        "reason": "Test", "involvedObject": {"kind": "Pod", "name": "a", "namespace": "default"}}));
    wait_intake(&intake, &watchd, "the event", |i| {
        count(i, "events", "apply", "e1") == 1
    });
}
