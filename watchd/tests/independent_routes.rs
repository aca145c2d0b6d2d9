//! The three routes upload independently, against the real binary: while
//! the intake answers 503 to every `/events` request (the backend's events
//! store overloaded, say), Pods and custom resources still arrive; when
//! `/events` recovers, its records arrive too, in order; and SIGTERM sends
//! what the healthy routes hold without waiting for the failing one longer
//! than the grace period.

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{DEADLINE, Watchd, count, wait_intake};
use testkit::apiserver::ApiServer;
use testkit::intake::{Intake, RequestLog};
use testkit::wait::wait_until;

/// In every `/events` body (each record's object is an Event) and in no
/// other route's: the intake refusing requests containing it is a failing
/// `/events` route.
const AN_EVENT: &str = r#""kind":"Event""#;
/// What the `/events` lane holds (`LANE` in `daemon.rs`).
const LANE: u64 = 256;
/// More Events than the `/events` lane and the event channel hold (256 +
/// 64): were the process thread to wait on the failing route's lane, it
/// would stop the other two.
const EVENTS_DURING: usize = 400;

fn widget_crd() -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {
            "group": "example.com", "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList"},
            "versions": [{"name": "v1", "served": true, "storage": true}]
        }
    })
}

fn widget(name: &str) -> Value {
    json!({"apiVersion": "example.com/v1", "kind": "Widget",
           "metadata": {"name": name, "namespace": "default"}, "spec": {"size": 3}})
}

fn pod(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": name, "namespace": "default"},
           "spec": {"containers": [{"name": "c", "image": "nginx"}]}})
}

fn event(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Event",
           "metadata": {"name": name, "namespace": "default"},
           "involvedObject": {"kind": "Pod", "name": "p", "namespace": "default"},
           "reason": "Test", "message": format!("{name} happened")})
}

/// `watchd_records_total` for this route and event type: records made.
fn made(watchd: &Watchd, route: &str, event_type: &str) -> u64 {
    let series = format!("watchd_records_total{{route=\"{route}\",event_type=\"{event_type}\"}} ");
    let metrics = watchd.get("/metrics").1;
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&series)?.parse().ok())
        .unwrap_or(0)
}

fn events_refused(intake: &Intake) -> usize {
    let refused = |r: &RequestLog| r.path == "/events" && r.status == 503;
    intake.requests().iter().filter(|r| refused(r)).count()
}

/// Pod and Widget `name` both arrived (with any event type).
fn both_arrived(intake: &Intake, name: &str) -> bool {
    let arrived = |route| {
        intake
            .records(route)
            .iter()
            .any(|r| r["json"]["metadata"]["name"] == name)
    };
    arrived("resources") && arrived("customresources")
}

/// `(event_type, name)` of the `/events` records, in arrival order.
fn events_in_order(intake: &Intake) -> Vec<(String, String)> {
    intake
        .records("events")
        .iter()
        .map(|r| {
            let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
            (s(&r["event_type"]), s(&r["json"]["metadata"]["name"]))
        })
        .collect()
}

#[test]
fn a_failing_route_holds_back_neither_other_route_and_catches_up_in_order() {
    let api = ApiServer::start();
    api.create(widget_crd());
    api.create(pod("before"));
    api.create(widget("before"));
    api.create(event("ev-before"));
    let intake = Intake::start();
    intake.reject_lines_containing(AN_EVENT, 503);
    let watchd = Watchd::start(&api, &intake, &[("WATCHD_RESOURCES", "pods,events")]);
    wait_intake(&intake, &watchd, "a refused /events request", |i| {
        events_refused(i) > 0
    });
    wait_intake(&intake, &watchd, "the Pod and Widget listed", |i| {
        both_arrived(i, "before")
    });

    for n in 0..EVENTS_DURING {
        api.create(event(&format!("ev-{n}")));
    }
    // An apply, then the delete after it: the order must hold.
    api.create(event("ev-gone"));
    api.delete("v1", "Event", Some("default"), "ev-gone");
    // The /events lane is full: its upload thread takes nothing while it
    // retries, and its watcher waits for a credit. Only now are the Pod and
    // the Widget made, behind the Events in no queue but the API server's.
    wait_until(DEADLINE, "a full /events lane", || {
        made(&watchd, "events", "apply") >= LANE
    });
    api.create(pod("during"));
    api.create(widget("during"));
    let start = Instant::now();
    wait_intake(&intake, &watchd, "the Pod and Widget made meanwhile", |i| {
        both_arrived(i, "during")
    });
    let took = start.elapsed();
    // /events still fails: nothing of it arrived.
    assert!(intake.records("events").is_empty());
    assert_eq!(watchd.get("/healthz").0, 200, "{}", watchd.log());

    intake.clear_rejections();
    wait_intake(&intake, &watchd, "every Event, once /events is back", |i| {
        count(i, "events", "delete", "ev-gone") == 1
    });
    let mut expected = vec![("initapply".to_string(), "ev-before".to_string())];
    expected.extend((0..EVENTS_DURING).map(|n| ("apply".into(), format!("ev-{n}"))));
    expected.push(("apply".into(), "ev-gone".into()));
    expected.push(("delete".into(), "ev-gone".into()));
    assert_eq!(events_in_order(&intake), expected);
    eprintln!(
        "with /events failing and its lane full: the other routes' records arrived after \
         {took:.1?}; {} /events requests refused",
        events_refused(&intake)
    );
}

#[test]
fn sigterm_while_a_route_fails_sends_the_others_and_gives_up_on_it_after_the_grace_period() {
    let api = ApiServer::start();
    api.create(widget_crd());
    api.create(pod("p"));
    api.create(widget("w"));
    api.create(event("e"));
    let intake = Intake::start();
    intake.reject_lines_containing(AN_EVENT, 503);
    // A linger far longer than the test: only the drain sends the batches.
    let mut watchd = Watchd::start(
        &api,
        &intake,
        &[
            ("WATCHD_RESOURCES", "pods,events"),
            ("WATCHD_BATCH_LINGER_MS", "600000"),
            ("HIK8S_SHUTDOWN_GRACE_SECS", "3"),
        ],
    );
    watchd.wait_ready();
    assert!(intake.records("resources").is_empty());
    let start = Instant::now();
    watchd.sigterm();
    let status = watchd.wait_exit(DEADLINE);
    assert_eq!(status.code(), Some(0), "{}", watchd.log());
    assert!(
        start.elapsed() < Duration::from_secs(3 + 5),
        "took {:?}",
        start.elapsed()
    );
    assert_eq!(count(&intake, "resources", "initapply", "p"), 1);
    assert_eq!(count(&intake, "customresources", "initapply", "w"), 1);
    assert!(intake.records("events").is_empty());
    assert!(
        watchd
            .log()
            .contains("shutdown grace period over: 1 records to /events were not delivered"),
        "{}",
        watchd.log()
    );
}
