//! Custom resources against the real binary: watched at the CRD's storage
//! version, picked up when created after start, dropped when deleted.

mod support;

use serde_json::{Value, json};
use support::{DEADLINE, Watchd, count, wait_intake};
use testkit::apiserver::ApiServer;
use testkit::intake::Intake;

fn widget_crd(versions: Value) -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {
            "group": "example.com", "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList"},
            "versions": versions
        }
    })
}

fn widget(api_version: &str, name: &str) -> Value {
    json!({"apiVersion": api_version, "kind": "Widget",
           "metadata": {"name": name, "namespace": "default"}, "spec": {"size": 3}})
}

#[test]
fn crd_objects_arrive_at_the_storage_version_even_when_it_is_not_the_first() {
    let api = ApiServer::start();
    // v2 has the higher priority (discovery prefers it); v1 is stored.
    api.create(widget_crd(json!([
        {"name": "v2", "served": true, "storage": false},
        {"name": "v1", "served": true, "storage": true}
    ])));
    api.create(widget("example.com/v1", "w1"));
    let intake = Intake::start();
    let watchd = Watchd::start(&api, &intake, &[]);
    wait_intake(&intake, &watchd, "the widget", |i| {
        count(i, "customresources", "initapply", "w1") == 1
    });
    let record = intake.records("customresources").remove(0);
    assert_eq!(record["json"]["apiVersion"], "example.com/v1");
    assert_eq!(record["json"]["kind"], "Widget");
    let paths: Vec<String> = api
        .requests()
        .into_iter()
        .map(|r| r.path)
        .filter(|p| p.contains("widgets"))
        .collect();
    assert!(
        paths.iter().all(|p| p.starts_with("/apis/example.com/v1/")),
        "{paths:?}"
    );
}

#[test]
fn a_crd_created_after_start_is_watched_and_a_deleted_one_is_not() {
    let api = ApiServer::start();
    let intake = Intake::start();
    let watchd = Watchd::start(&api, &intake, &[("WATCHD_EXCLUDE", "gadgets.example.com")]);
    watchd.wait_ready();

    api.create(widget_crd(
        json!([{"name": "v1", "served": true, "storage": true}]),
    ));
    // An excluded CRD is never watched.
    let mut gadgets = widget_crd(json!([{"name": "v1", "served": true, "storage": true}]));
    gadgets["metadata"]["name"] = json!("gadgets.example.com");
    gadgets["spec"]["names"] = json!({"plural": "gadgets", "kind": "Gadget"});
    api.create(gadgets);
    api.create(json!({"apiVersion": "example.com/v1", "kind": "Gadget", "metadata": {"name": "g1", "namespace": "default"}}));
    api.create(widget("example.com/v1", "w1"));
    wait_intake(&intake, &watchd, "the widget created after start", |i| {
        count(i, "customresources", "apply", "w1") + count(i, "customresources", "initapply", "w1")
            == 1
    });

    api.delete(
        "apiextensions.k8s.io/v1",
        "CustomResourceDefinition",
        None,
        "widgets.example.com",
    );
    wait_intake(&intake, &watchd, "the widget's delete", |i| {
        count(i, "customresources", "delete", "w1") == 1
    });
    watchd.wait_log("stopped watching widgets.example.com", DEADLINE);
    let widget_requests = |api: &ApiServer| {
        api.requests()
            .iter()
            .filter(|r| r.path.contains("/widgets"))
            .count()
    };
    let before = widget_requests(&api);
    // A live watcher would re-watch after its stream ends: end every
    // stream twice, and wait each time for another watcher to come back.
    for _ in 0..2 {
        let pod_watches = |api: &ApiServer| {
            api.requests()
                .iter()
                .filter(|r| r.path == "/api/v1/pods" && r.is_watch())
                .count()
        };
        let seen = pod_watches(&api);
        api.drop_watches();
        assert!(
            api.wait_for(DEADLINE, |a| pod_watches(a) > seen),
            "pods were not watched again"
        );
    }
    assert_eq!(
        widget_requests(&api),
        before,
        "requests for a deleted CRD's objects"
    );
    assert!(
        api.requests().iter().all(|r| !r.path.contains("/gadgets")),
        "an excluded CRD was watched"
    );
    assert_eq!(count(&intake, "customresources", "delete", "w1"), 1);
    assert!(
        intake
            .records("customresources")
            .iter()
            .all(|r| r["json"]["kind"] != "Gadget")
    );
}
