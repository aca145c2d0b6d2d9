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
