//! watchd's performance figures, against the test API server holding
//! fixture-shaped Pods (with managedFields) and 1,000 custom resources, at
//! 10,000 and then 100,000 Pods:
//! - time from start until every `initapply` record is acknowledged, with
//!   the intake answering at once and 50 ms late (production's intake is
//!   25-100 ms away; the routes upload side by side, one request in flight
//!   each);
//! - peak RSS (VmHWM) and CPU time of the watchd process (watchd runs as a
//!   process of its own: the test servers, in this process, are not
//!   counted);
//! - requests to the intake, and list requests (pages) to the API server;
//! - bytes sent, against the objects unmodified;
//! - two replicas with leader election on (`WATCHD_LEADER_ELECTION`): the
//!   leader's time to every `initapply` acknowledged, the standby's time to
//!   every object listed, and the peak RSS of both;
//! - at 10,000 Pods: records/s sustained for a stream of 500 updates/s,
//!   with watchd's CPU (% of one core), at the last latency.
//!
//! Run: `cargo bench -p watchd --bench initial_sync` (release build).
//! `WATCHD_BENCH_PODS=100000` runs one size only (several: `10000,100000`;
//! sizes ascend, as Pods are only ever added).

#[path = "../tests/support/mod.rs"]
mod support;

use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{Watchd, create_certificate_crd, create_copies, fixture};
use testkit::apiserver::ApiServer;
use testkit::intake::{Faults, Intake, RequestLog};

/// Pods in the cluster, one size after the other.
const SIZES: [usize; 2] = [10_000, 100_000];
const CUSTOM: usize = 1_000;
const UPDATES_PER_SEC: usize = 500;
const UPDATE_SECS: usize = 10;
/// Intake latencies the initial sync is measured at, in milliseconds.
const LATENCIES_MS: [u64; 2] = [0, 50];
/// Generous: the test API server serves 100,000 Pods in about 30 s on the
/// loaded 2-core machine.
const SYNC_TIMEOUT: Duration = Duration::from_secs(600);

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

/// Waits until `prefix`'s series of `watchd` add up to `at_least`.
fn wait_metric(watchd: &Watchd, prefix: &str, at_least: u64, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while metric(watchd, prefix) < at_least {
        assert!(
            Instant::now() < deadline,
            "only {} of {prefix}; log:\n{}",
            metric(watchd, prefix),
            watchd.log()
        );
        thread::sleep(Duration::from_millis(20));
    }
}

fn wait_shipped(watchd: &Watchd, at_least: u64, timeout: Duration) {
    wait_metric(watchd, "watchd_records_shipped_total", at_least, timeout);
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn main() {
    let sizes: Vec<usize> = match std::env::var("WATCHD_BENCH_PODS") {
        Ok(list) => list
            .split(',')
            .map(|s| s.trim().parse().expect("WATCHD_BENCH_PODS: Pod counts"))
            .collect(),
        Err(_) => SIZES.to_vec(),
    };
    let api = ApiServer::start();
    let mut cluster = Cluster::new(&api);
    for pods in sizes {
        let start = Instant::now();
        cluster.grow_to(pods);
        println!(
            "watchd benchmark: {pods} Pods + {CUSTOM} custom resources (fixture-shaped, with managedFields; created in {:.1} s)",
            start.elapsed().as_secs_f64()
        );
        let mut last = None;
        for latency in LATENCIES_MS {
            // One watchd at a time: the previous one stops first.
            drop(last.take());
            let latency = Duration::from_millis(latency);
            last = Some(initial_sync(&api, &cluster, latency));
        }
        if pods == SIZES[0] {
            let (watchd, _intake) = last.take().expect("one latency at least");
            update_stream(&api, &watchd, pods);
        }
        drop(last);
        two_replicas(&api, &cluster);
    }
    let status = std::fs::read_to_string("/proc/self/status").expect("status");
    let own = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmHWM");
    println!(
        "(the benchmark process, with the test API server and intakes: peak RSS {:.0} MiB)",
        mib(own)
    );
}

/// What the API server holds.
struct Cluster<'a> {
    api: &'a ApiServer,
    pods: usize,
    pod: Value,
    /// Bytes of the objects as the API server stores them.
    unmodified: usize,
}

impl<'a> Cluster<'a> {
    /// Creates the CRD and the custom resources.
    fn new(api: &'a ApiServer) -> Cluster<'a> {
        create_certificate_crd(api);
        let cert = fixture("certificate-deletion__apply_certificate");
        let unmodified = create_copies(api, &cert, "bench-cert", 0..CUSTOM);
        Cluster {
            api,
            pods: 0,
            pod: fixture("pod-aggregation__apply_pod"),
            unmodified,
        }
    }

    /// Creates Pods up to `pods`.
    fn grow_to(&mut self, pods: usize) {
        if pods > self.pods {
            self.unmodified += create_copies(self.api, &self.pod, "bench-pod", self.pods..pods);
            self.pods = pods;
        }
    }

    /// Pods and custom resources.
    fn objects(&self) -> u64 {
        (self.pods + CUSTOM) as u64
    }
}

/// List requests (pages) of Pods and Certificates the API server answered.
fn list_requests(api: &ApiServer) -> usize {
    api.requests()
        .iter()
        .filter(|r| {
            r.method == "GET" && (r.path.ends_with("/pods") || r.path.ends_with("/certificates"))
        })
        .filter(|r| r.param("watch").is_none_or(|w| w != "true" && w != "1"))
        .count()
}

/// Starts watchd against an intake answering `latency` late, waits for
/// every `initapply` to be acknowledged and prints the figures; returns
/// both, still running.
fn initial_sync(api: &ApiServer, cluster: &Cluster, latency: Duration) -> (Watchd, Intake) {
    let intake = Intake::start();
    intake.set_faults(Faults {
        latency,
        ..Faults::default()
    });
    let lists_before = list_requests(api);
    let start = Instant::now();
    let watchd = Watchd::start(
        api,
        &intake,
        &[
            ("WATCHD_RESOURCES", "pods"),
            ("RUST_LOG", "warn,shared::metrics=info"),
        ],
    );
    let objects = cluster.objects();
    wait_shipped(&watchd, objects, SYNC_TIMEOUT);
    let sync = start.elapsed();
    let (rss_sync, cpu) = (watchd.peak_rss_kib(), usage(watchd.pid()));
    let lists = list_requests(api) - lists_before;
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
        "  initial sync: {:.2} s to every initapply acknowledged ({:.0} records/s); watchd CPU {cpu:.1} s",
        sync.as_secs_f64(),
        objects as f64 / sync.as_secs_f64()
    );
    println!(
        "  requests: {requests} to the intake for {objects} records ({:.0} records per request); {lists} list requests (pages) to the API server",
        objects as f64 / requests as f64
    );
    println!(
        "  bytes sent: {} against {} unmodified ({:.1} %)",
        sent,
        cluster.unmodified,
        sent as f64 * 100.0 / cluster.unmodified as f64
    );
    println!("  peak RSS after the sync: {:.1} MiB", mib(rss_sync));
    (watchd, intake)
}

/// Two replicas with leader election on, each with an intake of its own:
/// the leader starts first and takes the Lease, the standby follows. Prints
/// the leader's time to every `initapply` acknowledged, the standby's to
/// every object listed (its records are made and dropped), and both peak
/// RSS; then stops both (the leader releases its Lease).
fn two_replicas(api: &ApiServer, cluster: &Cluster) {
    let objects = cluster.objects();
    let env = |name| {
        [
            ("WATCHD_LEADER_ELECTION", "on"),
            ("POD_NAME", name),
            ("POD_NAMESPACE", "default"),
            ("WATCHD_RESOURCES", "pods"),
            ("RUST_LOG", "warn,shared::metrics=info"),
        ]
    };
    let (leader_intake, standby_intake) = (Intake::start(), Intake::start());
    let start = Instant::now();
    let mut leader = Watchd::start(api, &leader_intake, &env("bench-leader"));
    let holder = |api: &ApiServer| {
        api.lease("default", "watchd")
            .and_then(|l| l["spec"]["holderIdentity"].as_str().map(str::to_string))
    };
    assert!(
        api.wait_for(support::DEADLINE, |api| holder(api).as_deref()
            == Some("bench-leader")),
        "the first replica never took the Lease; log:\n{}",
        leader.log()
    );
    let standby_start = Instant::now();
    let mut standby = Watchd::start(api, &standby_intake, &env("bench-standby"));
    wait_shipped(&leader, objects, SYNC_TIMEOUT);
    let leader_sync = start.elapsed();
    wait_metric(&standby, "watchd_records_total", objects, SYNC_TIMEOUT);
    let standby_sync = standby_start.elapsed();
    let (rss_leader, rss_standby) = (leader.peak_rss_kib(), standby.peak_rss_kib());
    let (now_leader, now_standby) = (leader.rss_kib(), standby.rss_kib());
    let (cpu_leader, cpu_standby) = (usage(leader.pid()), usage(standby.pid()));
    assert!(
        standby_intake.requests().is_empty(),
        "the standby shipped; log:\n{}",
        standby.log()
    );
    println!("two replicas, leader election on (intake latency 0 ms):");
    println!(
        "  leader: {:.2} s to every initapply acknowledged, peak RSS {:.1} MiB (now {:.1}), CPU {cpu_leader:.1} s",
        leader_sync.as_secs_f64(),
        mib(rss_leader),
        mib(now_leader)
    );
    println!(
        "  standby: {:.2} s to every object listed, peak RSS {:.1} MiB ({:+.1} % of the leader's; now {:.1}), CPU {cpu_standby:.1} s",
        standby_sync.as_secs_f64(),
        mib(rss_standby),
        (rss_standby as f64 / rss_leader as f64 - 1.0) * 100.0,
        mib(now_standby)
    );
    for replica in [&mut standby, &mut leader] {
        replica.sigterm();
        let status = replica.wait_exit(support::DEADLINE);
        assert!(status.success(), "{status}; log:\n{}", replica.log());
    }
}

/// A stream of updates: a real change (a label) on Pods, round-robin.
fn update_stream(api: &ApiServer, watchd: &Watchd, pods: usize) {
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
            &format!("bench-pod-{}", n % pods),
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
        mib(rss_peak)
    );
}
