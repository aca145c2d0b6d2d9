//! The real logd binary shipping to an OpenTelemetry receiver (the test
//! intake's OTLP/HTTP route, which decodes with the official message
//! definitions): the records' shape (resource per file, CRI time in
//! nanoseconds, stream, path), many files per request, both encodings and
//! gzip, and the OTLP answers (partial success, a refused record, 503 with
//! Retry-After, an outage with a restart in it).

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::daemon::{Env, Logd};
use common::delivery::{Tally, numbered};
use common::pods::{Node, TIMESTAMP, uid};
use common::{SOON, wait_until};
use serde_json::{Value, json};
use testkit::intake::{Faults, Intake, OtlpAnswer, OtlpFormat, OtlpRecord};

/// `TIMESTAMP` in nanoseconds since the epoch.
const TIMESTAMP_NANOS: u64 = 1_731_920_385_123_456_789;

/// logd reading `node`, shipping to `intake`'s OTLP route.
fn otlp_env(node: &Node, intake: &Intake) -> Env {
    Env::local(node)
        .set("HIK8S_SINK", "otlp")
        .set("OTEL_EXPORTER_OTLP_ENDPOINT", &intake.url())
        .set("NODE_NAME", "node-7")
}

fn bodies(intake: &Intake) -> Vec<String> {
    intake
        .otlp_records()
        .iter()
        .map(|r| r.body_json().as_str().unwrap_or_default().to_owned())
        .collect()
}

/// Waits until every expected body arrived; returns the records.
fn wait_for_bodies(intake: &Intake, expected: &[String], timeout: Duration) -> Vec<OtlpRecord> {
    let deadline = Instant::now() + timeout;
    while intake.otlp_record_count() < expected.len() as u64
        || !Tally::of(expected, &bodies(intake)).missing.is_empty()
    {
        assert!(
            Instant::now() < deadline,
            "not every line arrived in {timeout:?}: {}",
            Tally::of(expected, &bodies(intake)).summary()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    intake.otlp_records()
}

fn assert_each_once(expected: &[String], intake: &Intake) {
    let tally = Tally::of(expected, &bodies(intake));
    assert!(
        tally.missing.is_empty() && tally.duplicated.is_empty() && tally.unexpected.is_empty(),
        "each of {} lines should arrive once: {}",
        expected.len(),
        tally.summary()
    );
}

fn attribute(map: &BTreeMap<String, Value>, key: &str) -> Value {
    map.get(key).cloned().unwrap_or(Value::Null)
}

#[test]
fn a_pods_tree_arrives_once_as_filelog_records() {
    let node = Node::new();
    let intake = Intake::start();
    let env = otlp_env(&node, &intake).set(
        "OTEL_RESOURCE_ATTRIBUTES",
        "k8s.cluster.name=test%20cluster",
    );
    let logd = Logd::start(&node, &env);

    let mut web = node.container("shop", "web-1", &uid(1), "nginx");
    web.lines(&["GET /", "GET /cart"]);
    // A partial line in two parts, then a line on stderr.
    web.write(format!("{TIMESTAMP} stdout P first half, \n").as_bytes());
    web.write(format!("{TIMESTAMP} stdout F second half\n").as_bytes());
    web.write(format!("{TIMESTAMP} stderr F warning: disk\n").as_bytes());
    let mut db = node.container("data", "db-0", &uid(2), "postgres");
    db.restart();
    db.restart();
    db.write(format!("{TIMESTAMP} stdout F bad \u{e9} ").as_bytes());
    db.write(b"\xff\xfe end\n");
    db.lines(&["ready"]);

    let expected: Vec<String> = [
        "GET /",
        "GET /cart",
        "first half, second half",
        "warning: disk",
        "ready",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    wait_for_bodies(&intake, &expected, SOON);
    wait_until(SOON, "six records", || intake.otlp_record_count() == 6);
    logd.wait_idle(SOON);
    let records = intake.otlp_records();
    assert_eq!(records.len(), 6, "six lines, each once");

    let by_body = |body: &str| -> &OtlpRecord {
        records
            .iter()
            .find(|r| r.body_json() == json!(body))
            .unwrap_or_else(|| panic!("no record {body:?}"))
    };
    let get = by_body("GET /");
    assert_eq!(get.scope_name, "logd");
    let resource: BTreeMap<&str, Value> = [
        ("k8s.namespace.name", json!("shop")),
        ("k8s.pod.name", json!("web-1")),
        ("k8s.pod.uid", json!(uid(1))),
        ("k8s.container.name", json!("nginx")),
        ("k8s.container.restart_count", json!(0)),
        ("k8s.node.name", json!("node-7")),
        ("k8s.cluster.name", json!("test cluster")),
    ]
    .into_iter()
    .collect();
    for (key, value) in &resource {
        assert_eq!(&attribute(&get.resource, key), value, "{key}");
    }
    assert_eq!(get.resource.len(), resource.len(), "{:?}", get.resource);
    assert_eq!(get.time_unix_nano, TIMESTAMP_NANOS, "the CRI time, in ns");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    assert!(
        get.observed_time_unix_nano > now - 60_000_000_000 && get.observed_time_unix_nano <= now,
        "observed when read: {}",
        get.observed_time_unix_nano
    );
    assert_eq!(attribute(&get.attributes, "log.iostream"), json!("stdout"));
    assert_eq!(
        attribute(&get.attributes, "log.file.path"),
        json!(format!("{}/0.log", web.intake_path))
    );
    let warning = by_body("warning: disk");
    assert_eq!(
        attribute(&warning.attributes, "log.iostream"),
        json!("stderr")
    );

    // The third start of the container: its file is 2.log.
    let ready = by_body("ready");
    assert_eq!(
        attribute(&ready.resource, "k8s.container.restart_count"),
        json!(2)
    );
    assert_eq!(attribute(&ready.resource, "k8s.pod.name"), json!("db-0"));
    let repaired = records
        .iter()
        .map(|r| r.body_json().as_str().unwrap_or_default().to_owned())
        .find(|b| b.starts_with("bad "))
        .expect("the line with invalid UTF-8 arrives");
    assert!(
        repaired.starts_with("bad \u{e9} ")
            && repaired.ends_with(" end")
            && repaired.contains('\u{fffd}'),
        "repaired: {repaired:?}"
    );
    let request = &intake.otlp_requests()[0];
    assert_eq!(request.format, OtlpFormat::Protobuf, "the default");
    assert!(!request.gzip, "no compression by default");
}

#[test]
fn a_thousand_files_go_in_about_one_request_per_linger() {
    let node = Node::new();
    let intake = Intake::start();
    let env = otlp_env(&node, &intake).set("LOGD_BATCH_LINGER_MS", "1000");
    let logd = Logd::start(&node, &env);
    let mut expected = Vec::new();
    for c in 0..1000 {
        let mut log = node.container("many", &format!("p{c}"), &uid(c), "app");
        let lines = numbered(&format!("p{c}-"), 0..5);
        log.lines(&lines);
        expected.extend(lines);
    }
    let started = Instant::now();
    wait_for_bodies(&intake, &expected, Duration::from_secs(60));
    logd.wait_idle(SOON);
    assert_each_once(&expected, &intake);
    let requests = intake.otlp_requests().len();
    let seconds = started.elapsed().as_secs_f64().max(1.0);
    eprintln!("1,000 files: {requests} requests in {seconds:.1} s");
    // Written within a linger or two: a few requests, not one per file.
    assert!(
        requests <= 4 + 2 * seconds as usize,
        "{requests} requests for 1,000 files in {seconds:.1} s"
    );
    let resources: usize = intake
        .otlp_requests()
        .iter()
        .map(|r| r.request.resource_logs.len())
        .sum();
    assert!(resources >= 1000, "a resource per file: {resources}");
}

#[test]
fn gzip_and_json_as_configured() {
    for (protocol, compression) in [
        ("http/json", "none"),
        ("http/json", "gzip"),
        ("http/protobuf", "gzip"),
    ] {
        let node = Node::new();
        let intake = Intake::start();
        let env = otlp_env(&node, &intake)
            .set("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
            .set("OTEL_EXPORTER_OTLP_COMPRESSION", compression)
            .set("OTEL_EXPORTER_OTLP_HEADERS", "X-Scope-OrgID=tenant%201");
        let _logd = Logd::start(&node, &env);
        let mut log = node.container("ns", "pod", &uid(3), "app");
        let expected = numbered("line-", 0..50);
        log.lines(&expected);
        let records = wait_for_bodies(&intake, &expected, SOON);
        assert_each_once(&expected, &intake);
        assert_eq!(records[0].time_unix_nano, TIMESTAMP_NANOS, "{protocol}");
        for request in intake.otlp_requests() {
            let format = if protocol == "http/json" {
                OtlpFormat::Json
            } else {
                OtlpFormat::Protobuf
            };
            assert_eq!(request.format, format, "{protocol}");
            assert_eq!(request.gzip, compression == "gzip", "{compression}");
            assert_eq!(
                request.headers.get("x-scope-orgid").map(String::as_str),
                Some("tenant 1")
            );
        }
    }
}

#[test]
fn a_partial_success_is_counted_and_not_sent_again() {
    let node = Node::new();
    let intake = Intake::start();
    intake.set_otlp_answer(OtlpAnswer::PartialSuccess {
        rejected: 2,
        message: "two too old".into(),
    });
    let logd = Logd::start(&node, &otlp_env(&node, &intake));
    let mut log = node.container("ns", "pod", &uid(4), "app");
    let expected = numbered("kept-", 0..10);
    log.lines(&expected);
    wait_for_bodies(&intake, &expected, SOON);
    logd.wait_idle(SOON);
    let dropped = "logd_lines_dropped_total{reason=\"partial_success\"}";
    wait_until(SOON, "the partial success counted", || {
        logd.metrics().get(dropped) > 0.0
    });
    let requests = intake.otlp_requests().len() as f64;
    assert_eq!(logd.metrics().get(dropped), 2.0 * requests);
    assert_each_once(&expected, &intake);
    assert!(logd.stderr().contains("two too old"), "{}", logd.stderr());
}

#[test]
fn a_refused_record_is_isolated_and_dropped_alone() {
    let node = Node::new();
    let intake = Intake::start();
    intake.otlp_refuse_body_containing("POISON");
    let logd = Logd::start(&node, &otlp_env(&node, &intake));
    let mut expected = Vec::new();
    let mut logs: Vec<_> = (0..5)
        .map(|c| node.container("ns", &format!("p{c}"), &uid(10 + c), "app"))
        .collect();
    for (c, log) in logs.iter_mut().enumerate() {
        let mut lines = numbered(&format!("p{c}-"), 0..20);
        if c == 2 {
            lines.insert(7, "POISON pill".to_string());
        }
        log.lines(&lines);
        expected.extend(lines.into_iter().filter(|l| !l.contains("POISON")));
    }
    wait_for_bodies(&intake, &expected, SOON);
    let rejected = "logd_lines_dropped_total{reason=\"rejected\"}";
    wait_until(SOON, "the refused line dropped", || {
        logd.metrics().get(rejected) == 1.0
    });
    logd.wait_idle(SOON);
    assert_each_once(&expected, &intake);
    assert_eq!(logd.metrics().get(rejected), 1.0);
}

#[test]
fn retry_after_is_honoured_and_an_outage_with_a_restart_loses_nothing() {
    let node = Node::new();
    let intake = Intake::start();
    intake.set_faults(Faults {
        fail_503: 1.0,
        retry_after_secs: Some(2),
        ..Faults::default()
    });
    let env = otlp_env(&node, &intake);
    let mut logd = Logd::start(&node, &env);
    let mut log = node.container("ns", "pod", &uid(20), "app");
    let first = numbered("before-", 0..100);
    log.lines(&first);
    wait_until(SOON, "two tries", || {
        intake
            .requests()
            .iter()
            .filter(|r| r.path == "/v1/logs")
            .count()
            >= 2
    });
    // Two tries, the second not before the Retry-After.
    let tries: Vec<Instant> = intake
        .requests()
        .iter()
        .filter(|r| r.path == "/v1/logs")
        .map(|r| r.at)
        .collect();
    assert!(
        tries[1] - tries[0] >= Duration::from_millis(1900),
        "sent again after {:?}",
        tries[1] - tries[0]
    );
    // A restart in the middle of the outage.
    logd.kill();
    let more = numbered("during-", 0..100);
    log.lines(&more);
    let logd = Logd::start(&node, &env);
    intake.set_faults(Faults::default());
    let expected: Vec<String> = first.into_iter().chain(more).collect();
    wait_for_bodies(&intake, &expected, SOON);
    logd.wait_idle(SOON);
    assert_each_once(&expected, &intake);
}
