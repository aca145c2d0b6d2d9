//! watchd's performance figures, against the test API server holding
//! 10,000 fixture-shaped Pods (with managedFields) and 1,000 custom
//! resources:
//! - time from start until every `initapply` record is acknowledged, with
//!   the intake answering at once and 50 ms late (production's intake is
//!   25-100 ms away; the routes upload side by side, one request in flight
//!   each);
//! - peak RSS of the watchd process;
//! - bytes sent, against the objects unmodified;
//! - records/s sustained for a stream of 500 updates/s, with watchd's CPU
//!   (% of one core), at the last latency.
//!
//! Run: `cargo bench -p watchd --bench initial_sync` (release build).

#[path = "../tests/support/mod.rs"]
mod support;

use std::thread;
use std::time::{Duration, Instant};

use serde_json::json;
use support::{Watchd, copy, fixture};
use testkit::apiserver::ApiServer;
use testkit::intake::{Faults, Intake, RequestLog};

const PODS: usize = 10_000;
const CUSTOM: usize = 1_000;
const UPDATES_PER_SEC: usize = 500;
const UPDATE_SECS: usize = 10;
/// Intake latencies the initial sync is measured at, in milliseconds.
const LATENCIES_MS: [u64; 2] = [0, 50];

fn metric(watchd: &Watchd, prefix: &str) -> u64 {
    watchd
        .get("/metrics")
        .1
        .lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// CPU seconds (user + system) of the process so far.
fn usage(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let fields: Vec<&str> = stat.rsplit_once(") ").expect("comm").1.split(' ').collect();
    let ticks: f64 =
        fields[11].parse::<f64>().expect("utime") + fields[12].parse::<f64>().expect("stime");
    // USER_HZ is 100 on Linux.
    ticks / 100.0
}

fn wait_shipped(watchd: &Watchd, at_least: u64, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while metric(watchd, "watchd_records_shipped_total") < at_least {
        assert!(
            Instant::now() < deadline,
            "only {} records acknowledged; log:\n{}",
            metric(watchd, "watchd_records_shipped_total"),
            watchd.log()
        );
        thread::sleep(Duration::from_millis(20));
    }
}

fn main() {
    let api = ApiServer::start();
    let unmodified = populate(&api);
    println!(
        "watchd benchmark: {PODS} Pods + {CUSTOM} custom resources (fixture-shaped, with managedFields)"
    );
    let mut last = None;
    for latency in LATENCIES_MS {
        // One watchd at a time: the previous one stops first.
        drop(last.take());
        let latency = Duration::from_millis(latency);
        last = Some(initial_sync(&api, latency, unmodified));
    }
    let (watchd, _intake) = last.expect("one latency at least");
    update_stream(&api, &watchd);
}

/// Creates the CRD, the Pods and the custom resources; returns their bytes
/// as the API server stores them.
fn populate(api: &ApiServer) -> usize {
    let pod = fixture("pod-aggregation__apply_pod");
    let cert = fixture("certificate-deletion__apply_certificate");
    api.create(json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "certificates.cert-manager.io"},
        "spec": {"group": "cert-manager.io", "scope": "Namespaced",
                 "names": {"plural": "certificates", "kind": "Certificate"},
                 "versions": [{"name": "v1", "served": true, "storage": true}]}
    }));
    let mut unmodified = 0usize;
    for i in 0..PODS {
        let stored = api.create(copy(&pod, &format!("bench-pod-{i}")));
        unmodified += serde_json::to_vec(&stored).expect("serializable").len();
    }
    for i in 0..CUSTOM {
        let stored = api.create(copy(&cert, &format!("bench-cert-{i}")));
        unmodified += serde_json::to_vec(&stored).expect("serializable").len();
    }
    unmodified
}

/// Starts watchd against an intake answering `latency` late, waits for
/// every `initapply` to be acknowledged and prints the figures; returns
/// both, still running.
fn initial_sync(api: &ApiServer, latency: Duration, unmodified: usize) -> (Watchd, Intake) {
    let intake = Intake::start();
    intake.set_faults(Faults {
        latency,
        ..Faults::default()
    });
    let start = Instant::now();
    let watchd = Watchd::start(
        api,
        &intake,
        &[
            ("WATCHD_RESOURCES", "pods"),
            ("RUST_LOG", "warn,shared::metrics=info"),
        ],
    );
    let objects = (PODS + CUSTOM) as u64;
    wait_shipped(&watchd, objects, Duration::from_secs(300));
    let sync = start.elapsed();
    let rss_sync = watchd.peak_rss_kib();
    let synced = |r: &&RequestLog| r.path == "/resources" || r.path == "/customresources";
    let requests = intake.requests();
    let sent: usize = requests
        .iter()
        .filter(synced)
        .filter(|r| r.status == 200)
        .map(|r| r.body_len)
        .sum();
    let requests = requests.iter().filter(synced).count();
    println!("intake latency {} ms:", latency.as_millis());
    println!(
        "  initial sync: {:.2} s to every initapply acknowledged ({:.0} records/s)",
        sync.as_secs_f64(),
        objects as f64 / sync.as_secs_f64()
    );
    println!(
        "  requests: {requests} for {objects} records ({:.0} records per request)",
        objects as f64 / requests as f64
    );
    println!(
        "  bytes sent: {} against {} unmodified ({:.1} %)",
        sent,
        unmodified,
        sent as f64 * 100.0 / unmodified as f64
    );
    println!(
        "  peak RSS after the sync: {:.1} MiB",
        rss_sync as f64 / 1024.0
    );
    (watchd, intake)
}

/// A stream of updates: a real change (a label) on Pods, round-robin.
fn update_stream(api: &ApiServer, watchd: &Watchd) {
    let shipped_before = metric(watchd, "watchd_records_shipped_total");
    let cpu_before = usage(watchd.pid());
    let stream_start = Instant::now();
    let total = UPDATES_PER_SEC * UPDATE_SECS;
    for n in 0..total {
        let due = stream_start + Duration::from_secs_f64(n as f64 / UPDATES_PER_SEC as f64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            thread::sleep(wait);
        }
        api.patch_merge(
            "v1",
            "Pod",
            Some("examples"),
            &format!("bench-pod-{}", n % PODS),
            json!({"metadata": {"labels": {"bench-update": n.to_string()}}}),
        );
    }
    let offered = stream_start.elapsed();
    wait_shipped(
        watchd,
        shipped_before + total as u64,
        Duration::from_secs(120),
    );
    let stream = stream_start.elapsed();
    let (cpu_after, rss_peak) = (usage(watchd.pid()), watchd.peak_rss_kib());
    let cpu_percent = (cpu_after - cpu_before) / stream.as_secs_f64() * 100.0;
    println!(
        "update stream (intake latency {} ms): {total} updates offered in {:.1} s ({:.0}/s), all acknowledged after {:.1} s: {:.0} records/s, watchd CPU {:.1} % of one core; peak RSS {:.1} MiB",
        LATENCIES_MS[LATENCIES_MS.len() - 1],
        offered.as_secs_f64(),
        total as f64 / offered.as_secs_f64(),
        stream.as_secs_f64(),
        total as f64 / stream.as_secs_f64(),
        cpu_percent,
        rss_peak as f64 / 1024.0
    );
}
