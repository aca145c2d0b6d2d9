//! The OTLP sink against the real binary, the test API server and the test
//! intake's OTLP/HTTP receiver (which decodes with the official
//! `opentelemetry-proto` messages): records in the shape of the
//! Collector's `k8sobjects` receiver in watch mode, and the OTLP/HTTP
//! answers (partial success, 400, 503 with `Retry-After`).

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use support::{
    DEADLINE, Watchd, create_certificate_crd, create_copies, fixture, fixtures_dir, wait_intake,
};
use testkit::apiserver::ApiServer;
use testkit::intake::opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use testkit::intake::prost::Message;
use testkit::intake::{Faults, Intake, OtlpAnswer, OtlpFormat, OtlpRecord};

/// Starts watchd with the OTLP sink on `intake`'s receiver; `env` adds or
/// overrides variables.
fn start(api: &ApiServer, intake: &Intake, env: &[(&str, &str)]) -> Watchd {
    let mut vars = vec![
        ("HIK8S_SINK", "otlp".to_string()),
        ("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", intake.otlp_logs_url()),
    ];
    vars.extend(env.iter().map(|(k, v)| (*k, v.to_string())));
    Watchd::start_raw(Some(api), &vars)
}

fn attr<'a>(r: &'a OtlpRecord, key: &str) -> &'a str {
    r.attributes.get(key).and_then(Value::as_str).unwrap_or("")
}

/// (watch type, `hik8s.event_type`, kind, namespace/name) of a record.
fn summary(r: &OtlpRecord) -> (String, String, String, String) {
    let body = r.body_json();
    let s = |p: &str| {
        body.pointer(p)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    (
        s("/type"),
        attr(r, "hik8s.event_type").to_string(),
        s("/object/kind"),
        format!(
            "{}/{}",
            s("/object/metadata/namespace"),
            s("/object/metadata/name")
        ),
    )
}

fn records_of(intake: &Intake, name: &str) -> Vec<OtlpRecord> {
    intake
        .otlp_records()
        .into_iter()
        .filter(|r| r.body_json()["object"]["metadata"]["name"] == name)
        .collect()
}

/// The value of one metric series (0 when absent).
fn metric(watchd: &Watchd, series: &str) -> u64 {
    watchd
        .get("/metrics")
        .1
        .lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .unwrap_or(0.0) as u64
}

fn wait_metric(watchd: &Watchd, series: &str, value: u64) {
    let deadline = std::time::Instant::now() + DEADLINE;
    while metric(watchd, series) != value {
        assert!(
            std::time::Instant::now() < deadline,
            "{series} never reached {value}: {}\nwatchd output:\n{}",
            metric(watchd, series),
            watchd.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn pod(name: &str, label: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": name, "namespace": "default", "labels": {"mark": label}},
           "spec": {"containers": [{"name": "c", "image": "nginx:1.27"}]}})
}

fn event(name: &str, kind: &str, times: Value) -> Value {
    let mut e = json!({"apiVersion": "v1", "kind": "Event", "type": kind, "reason": "Test",
                       "message": format!("a {kind} event"),
                       "involvedObject": {"kind": "Pod", "namespace": "examples", "name": "test1-656b95f57-mddjc"},
                       "metadata": {"name": name, "namespace": "examples"}});
    for (k, v) in times.as_object().expect("an object") {
        e[k] = v.clone();
    }
    e
}

/// 2024-11-18T10:00:00.123456Z, 2024-11-18T10:00:05Z and
/// 2024-11-18T08:59:45Z in unix nanoseconds.
const T_10_00_00_123456: u64 = 1_731_924_000_123_456_000;
const T_10_00_05: u64 = 1_731_924_005_000_000_000;
const T_08_59_45: u64 = 1_731_920_385_000_000_000;

/// (plural, kind, namespace/name) of every object the fixtures create.
fn fixture_objects() -> BTreeSet<(String, String, String)> {
    let mut set = BTreeSet::new();
    for entry in std::fs::read_dir(fixtures_dir()).expect("fixtures") {
        let path = entry.expect("entry").path();
        let record: Value =
            serde_json::from_slice(&std::fs::read(&path).expect("readable")).expect("JSON");
        if record["event_type"] == "delete" {
            continue;
        }
        let o = &record["json"];
        let kind = o["kind"].as_str().expect("kind").to_string();
        // Every fixture kind's plural (and the test API server's for the
        // CRDs it makes up) is its lower-case kind and an "s".
        let plural = format!("{}s", kind.to_lowercase());
        let ns = o["metadata"]["namespace"].as_str().unwrap_or_default();
        let name = o["metadata"]["name"].as_str().expect("name");
        set.insert((plural, kind, format!("{ns}/{name}")));
    }
    set
}

#[test]
fn fixtures_arrive_as_added_kvlist_bodies_updates_as_modified_deletions_as_deleted_and_no_secret() {
    let api = ApiServer::start();
    api.load_fixtures(&fixtures_dir()).expect("fixtures load");
    api.create(json!({"apiVersion": "v1", "kind": "Secret",
                      "metadata": {"name": "db-password", "namespace": "examples"},
                      "data": {"password": "aHVudGVyMg=="}}));
    api.create(event(
        "normal-event",
        "Normal",
        json!({"eventTime": "2024-11-18T10:00:00.123456Z"}),
    ));
    api.create(event(
        "warning-event",
        "Warning",
        json!({"lastTimestamp": "2024-11-18T10:00:05Z", "firstTimestamp": "2024-11-18T09:00:00Z"}),
    ));
    let intake = Intake::start();
    let started = SystemTime::now();
    let watchd = start(&api, &intake, &[]);
    let mut expected = fixture_objects();
    expected.insert((
        "events".into(),
        "Event".into(),
        "examples/normal-event".into(),
    ));
    expected.insert((
        "events".into(),
        "Event".into(),
        "examples/warning-event".into(),
    ));
    assert!(expected.len() >= 12, "{expected:?}");

    let added = |intake: &Intake| -> BTreeSet<(String, String, String)> {
        intake
            .otlp_records()
            .iter()
            .filter(|r| attr(r, "hik8s.event_type") == "initapply")
            .map(|r| {
                let (_, _, kind, name) = summary(r);
                (attr(r, "k8s.resource.name").to_string(), kind, name)
            })
            .collect()
    };
    wait_intake(&intake, &watchd, "every fixture object as ADDED", |i| {
        expected.is_subset(&added(i))
    });
    watchd.wait_ready();

    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("now")
        .as_nanos() as u64;
    let started = started.duration_since(UNIX_EPOCH).expect("now").as_nanos() as u64;
    let records = intake.otlp_records();
    for r in &records {
        // The k8sobjects receiver's shape: a kvlist body, not a string.
        assert!(
            matches!(
                r.body.as_ref().and_then(|b| b.value.as_ref()),
                Some(Any::KvlistValue(_))
            ),
            "{r:?}"
        );
        let body = r.body_json();
        let object = &body["object"];
        assert_eq!(body.as_object().map(|b| b.len()), Some(2), "{body}");
        assert_eq!(body["type"], "ADDED", "{body}");
        assert_eq!(attr(r, "hik8s.event_type"), "initapply");
        assert_eq!(attr(r, "event.domain"), "k8s");
        assert_eq!(
            Some(attr(r, "event.name")),
            object["metadata"]["name"].as_str()
        );
        let kind = object["kind"].as_str().expect("a kind");
        assert!(object["apiVersion"].is_string(), "{object}");
        assert_eq!(
            attr(r, "k8s.resource.name"),
            format!("{}s", kind.to_lowercase())
        );
        // One resource per namespace; none for cluster-scoped objects.
        assert_eq!(
            r.resource.get("k8s.namespace.name"),
            object["metadata"].get("namespace"),
            "{r:?}"
        );
        assert_eq!(
            (r.scope_name.as_str(), r.observed_time_unix_nano >= started),
            ("watchd", true)
        );
        assert!(r.observed_time_unix_nano <= now, "{r:?}");
        // Stripped as for the intake.
        let text = object.to_string();
        assert!(!text.contains("fieldsV1") && !text.contains("last-applied-configuration"));
        if kind != "Event" {
            assert_eq!((r.time_unix_nano, r.severity_number), (0, 0), "{r:?}");
        }
        // A Secret never.
        assert_ne!(kind, "Secret");
        assert!(!text.contains("aHVudGVyMg=="));
    }
    assert!(
        records.iter().any(|r| r.resource.is_empty()),
        "the cluster-scoped CiliumIdentity has a resource of its own"
    );
    // Events: severity from their type, their own time.
    let event = |name: &str| {
        records
            .iter()
            .find(|r| attr(r, "event.name") == name)
            .map(|r| (r.time_unix_nano, r.severity_number, r.severity_text.clone()))
            .expect("the event")
    };
    assert_eq!(
        event("normal-event"),
        (T_10_00_00_123456, 9, "Normal".into())
    );
    assert_eq!(event("warning-event"), (T_10_00_05, 13, "Warning".into()));
    // The fixture's Event is of type NotNormal: no severity.
    assert_eq!(
        event("hello-server-597dbdc58-bz6zv.1809046a11754b30"),
        (T_08_59_45, 0, String::new())
    );

    // An update is MODIFIED, a new object ADDED (both `apply`), a deletion
    // DELETED, in that order.
    let name = "test1-656b95f57-mddjc";
    api.patch_merge(
        "v1",
        "Pod",
        Some("examples"),
        name,
        json!({"metadata": {"labels": {"changed": "yes"}}}),
    );
    api.create(pod("fresh-pod", "new"));
    wait_intake(&intake, &watchd, "the update and the new pod", |i| {
        records_of(i, name).len() == 2 && records_of(i, "fresh-pod").len() == 1
    });
    api.delete("v1", "Pod", Some("examples"), name);
    wait_intake(&intake, &watchd, "the deletion", |i| {
        records_of(i, name).len() == 3
    });
    let pod_records = records_of(&intake, name);
    let types: Vec<(String, String)> = pod_records
        .iter()
        .map(|r| {
            let (watch_type, event_type, _, _) = summary(r);
            (watch_type, event_type)
        })
        .collect();
    assert_eq!(
        types,
        [
            ("ADDED".into(), "initapply".into()),
            ("MODIFIED".into(), "apply".into()),
            ("DELETED".into(), "delete".into()),
        ]
    );
    assert_eq!(
        pod_records[1].body_json()["object"]["metadata"]["labels"]["changed"],
        "yes"
    );
    assert_eq!(attr(&pod_records[2], "event.name"), name);
    assert_eq!(attr(&pod_records[2], "k8s.resource.name"), "pods");
    let fresh = &records_of(&intake, "fresh-pod")[0];
    assert_eq!(
        summary(fresh),
        (
            "ADDED".into(),
            "apply".into(),
            "Pod".into(),
            "default/fresh-pod".into()
        )
    );
    assert!(
        !intake
            .otlp_records()
            .iter()
            .any(|r| r.body_json()["object"]["kind"] == "Secret")
    );
}

#[test]
fn a_partial_success_is_logged_and_counted_and_not_sent_again() {
    let api = ApiServer::start();
    api.create(pod("first", "a"));
    let intake = Intake::start();
    intake.set_otlp_answer(OtlpAnswer::PartialSuccess {
        rejected: 1,
        message: "too old".into(),
    });
    let watchd = start(&api, &intake, &[("WATCHD_RESOURCES", "pods")]);
    wait_metric(
        &watchd,
        "watchd_records_dropped_total{reason=\"partial_success\"}",
        1,
    );
    watchd.wait_log("partial success", DEADLINE);
    assert!(watchd.log().contains("too old"), "{}", watchd.log());

    // A later record arrives after it: had the first been sent again, it
    // would have been before (one request in flight per route).
    intake.set_otlp_answer(OtlpAnswer::Ok200);
    api.create(pod("second", "b"));
    wait_intake(&intake, &watchd, "the second pod", |i| {
        records_of(i, "second").len() == 1
    });
    assert_eq!(records_of(&intake, "first").len(), 1);
    assert_eq!(metric(&watchd, "watchd_retries_total"), 0);
    assert_eq!(
        metric(
            &watchd,
            "watchd_records_dropped_total{reason=\"partial_success\"}"
        ),
        1
    );
}

#[test]
fn a_400_isolates_the_refused_record_and_drops_only_it() {
    let api = ApiServer::start();
    for i in 0..6 {
        let label = if i == 3 { "poison" } else { "fine" };
        api.create(pod(&format!("pod-{i}"), label));
    }
    let intake = Intake::start();
    intake.otlp_refuse_body_containing("poison");
    let watchd = start(&api, &intake, &[("WATCHD_RESOURCES", "pods")]);
    wait_intake(&intake, &watchd, "the five good pods", |i| {
        i.otlp_records().len() == 5
    });
    wait_metric(
        &watchd,
        "watchd_records_dropped_total{reason=\"rejected\"}",
        1,
    );
    let mut names: Vec<String> = intake
        .otlp_records()
        .iter()
        .map(|r| attr(r, "event.name").to_string())
        .collect();
    names.sort();
    assert_eq!(names, ["pod-0", "pod-1", "pod-2", "pod-4", "pod-5"]);
    assert!(
        intake.requests().iter().any(|r| r.status == 400),
        "the batch was refused first"
    );
    assert!(watchd.log().contains("pod-3"), "{}", watchd.log());
}

#[test]
fn a_503_is_retried_after_its_retry_after() {
    let api = ApiServer::start();
    api.create(pod("waiting", "a"));
    let intake = Intake::start();
    let retry_after = 2;
    intake.set_faults(Faults {
        fail_503: 1.0,
        retry_after_secs: Some(retry_after),
        ..Faults::default()
    });
    let watchd = start(&api, &intake, &[("WATCHD_RESOURCES", "pods")]);
    wait_intake(&intake, &watchd, "a 503", |i| {
        i.requests().iter().any(|r| r.status == 503)
    });
    intake.set_faults(Faults::default());
    wait_intake(&intake, &watchd, "the pod", |i| {
        records_of(i, "waiting").len() == 1
    });
    let requests: Vec<_> = intake
        .requests()
        .into_iter()
        .filter(|r| r.path == "/v1/logs")
        .collect();
    for pair in requests.windows(2) {
        if pair[0].status == 503 {
            let waited = pair[1].at.duration_since(pair[0].at);
            assert!(
                waited >= Duration::from_secs(retry_after),
                "sent again after {waited:?}"
            );
        }
    }
    assert_eq!(requests.last().map(|r| r.status), Some(200));
    assert!(metric(&watchd, "watchd_retries_total") >= 1);
}

#[test]
fn json_and_gzip_variants_decode() {
    let api = ApiServer::start();
    api.create(pod("p", "a"));
    api.create(event(
        "e",
        "Warning",
        json!({"lastTimestamp": "2024-11-18T10:00:05Z"}),
    ));
    for (protocol, compression, format, gzip) in [
        ("http/json", "gzip", OtlpFormat::Json, true),
        ("http/protobuf", "gzip", OtlpFormat::Protobuf, true),
        ("http/json", "none", OtlpFormat::Json, false),
    ] {
        let intake = Intake::start();
        let watchd = start(
            &api,
            &intake,
            &[
                ("WATCHD_RESOURCES", "pods,events"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol),
                ("OTEL_EXPORTER_OTLP_COMPRESSION", compression),
                ("OTEL_RESOURCE_ATTRIBUTES", "k8s.cluster.name=test"),
            ],
        );
        wait_intake(&intake, &watchd, "the pod and the event", |i| {
            i.otlp_records().len() == 2
        });
        for request in intake.otlp_requests() {
            assert_eq!(
                (request.format, request.gzip),
                (format, gzip),
                "{protocol} {compression}"
            );
        }
        let mut records = intake.otlp_records();
        records.sort_by_key(|r| attr(r, "event.name").to_string());
        let (e, p) = (&records[0], &records[1]);
        assert_eq!(p.body_json()["type"], "ADDED");
        assert_eq!(
            p.body_json()["object"]["spec"]["containers"][0]["image"],
            "nginx:1.27"
        );
        assert_eq!(attr(p, "k8s.resource.name"), "pods");
        assert_eq!(
            p.resource.get("k8s.namespace.name"),
            Some(&json!("default"))
        );
        assert_eq!(p.resource.get("k8s.cluster.name"), Some(&json!("test")));
        assert_eq!(attr(e, "k8s.resource.name"), "events");
        assert_eq!(
            (
                e.time_unix_nano,
                e.severity_number,
                e.severity_text.as_str()
            ),
            (T_10_00_05, 13, "Warning")
        );
    }
}

/// Pods and custom resources of the benchmark's shape (fixture copies, with
/// managedFields); returns the bytes of the objects as stored.
fn populate(api: &ApiServer, pods: usize, certificates: usize) -> usize {
    create_certificate_crd(api);
    let pod = fixture("pod-aggregation__apply_pod");
    let cert = fixture("certificate-deletion__apply_certificate");
    create_copies(api, &pod, "bench-pod", 0..pods)
        + create_copies(api, &cert, "bench-cert", 0..certificates)
}

/// The initial sync over OTLP/HTTP (protobuf, gzip): bytes on the wire
/// against the objects unmodified.
fn initial_sync_wire_ratio(pods: usize, certificates: usize) -> f64 {
    let api = ApiServer::start();
    let unmodified = populate(&api, pods, certificates);
    let intake = Intake::start();
    let watchd = start(
        &api,
        &intake,
        &[
            ("WATCHD_RESOURCES", "pods"),
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip"),
            ("RUST_LOG", "warn"),
        ],
    );
    let objects = (pods + certificates) as u64;
    assert!(
        intake.wait_for(Duration::from_secs(600), |i| i.otlp_record_count()
            >= objects),
        "{} of {objects} records; watchd output:\n{}",
        intake.otlp_record_count(),
        watchd.log()
    );
    let requests = intake.otlp_requests();
    assert!(requests.iter().all(|r| r.gzip));
    let wire: usize = requests.iter().map(|r| r.wire_bytes).sum();
    let protobuf: usize = requests.iter().map(|r| r.request.encoded_len()).sum();
    let ratio = wire as f64 / unmodified as f64;
    println!(
        "initial sync of {pods} Pods + {certificates} Certificates over OTLP (protobuf, gzip): \
         {wire} bytes in {} requests ({protobuf} before gzip) against {unmodified} unmodified: \
         {:.2} % ({:.1} % before gzip)",
        requests.len(),
        ratio * 100.0,
        protobuf as f64 * 100.0 / unmodified as f64
    );
    ratio
}

#[test]
fn the_initial_sync_with_gzip_sends_at_most_15_percent_of_the_objects() {
    assert!(initial_sync_wire_ratio(1_000, 100) <= 0.15);
}

/// The target's own figures: `cargo test -p watchd --test otlp -- --ignored
/// --nocapture` (about 20 s in a debug build, on top of the others).
#[test]
#[ignore = "10,000 Pods: the figure of the README, about 20 s"]
fn the_initial_sync_of_10000_pods_and_1000_crs_with_gzip_sends_at_most_15_percent() {
    assert!(initial_sync_wire_ratio(10_000, 1_000) <= 0.15);
}
