//! High availability (SPEC §4, issue #16): two real watchd processes elect
//! a leader with a Lease on the test API server; only the leader ships, the
//! standby is warm, and no deletion is missed across a failover (SIGKILL,
//! SIGTERM, a partition of the leader's Lease writes).
//!
//! Each replica ships to an intake of its own: what reached which intake
//! says which replica sent it, and the intakes stamp each request's
//! arrival on the test's clock, so "no two leaders ship at once" is a
//! comparison of instants. Failover times are printed (`--nocapture`).

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{DEADLINE, Watchd};
use testkit::apiserver::ApiServer;
use testkit::intake::Intake;

/// Short timings for the tests (client-go's rules hold: lease > renew
/// deadline > 1.2 retry periods).
const FAST: [(&str, &str); 3] = [
    ("WATCHD_LEASE_DURATION_SECS", "3s"),
    ("WATCHD_RENEW_DEADLINE_SECS", "2s"),
    ("WATCHD_RETRY_PERIOD_SECS", "500ms"),
];
const FAST_LEASE: Duration = Duration::from_secs(3);
const FAST_RENEW: Duration = Duration::from_secs(2);
const FAST_RETRY: Duration = Duration::from_millis(500);

/// One replica and the intake only it ships to.
struct Replica {
    name: &'static str,
    watchd: Watchd,
    intake: Intake,
}

impl Replica {
    fn start(api: &ApiServer, name: &'static str, timings: &[(&str, &str)]) -> Replica {
        let intake = Intake::start();
        let mut env = vec![
            ("WATCHD_LEADER_ELECTION", "on"),
            ("POD_NAME", name),
            ("POD_NAMESPACE", "default"),
            ("WATCHD_RESOURCES", "pods"),
        ];
        env.extend_from_slice(timings);
        let watchd = Watchd::start(api, &intake, &env);
        Replica {
            name,
            watchd,
            intake,
        }
    }

    /// The value of a metric line (`name{labels}` exactly), 0 if absent.
    fn metric(&self, series: &str) -> f64 {
        let (status, body) = self.watchd.get("/metrics");
        assert_eq!(status, 200);
        body.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .map_or(0.0, |v| v.trim().parse().expect("a number"))
    }

    fn pod_records(&self) -> Vec<Value> {
        self.intake.records("resources")
    }

    /// When this replica's first request reached its intake.
    fn first_request(&self) -> Option<Instant> {
        self.intake.requests().iter().map(|r| r.at).min()
    }

    /// When its last request reached its intake.
    fn last_request(&self) -> Option<Instant> {
        self.intake.requests().iter().map(|r| r.at).max()
    }

    fn sigkill(&self) {
        let status = Command::new("kill")
            .args(["-KILL", &self.watchd.pid().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
    }

    /// Lines logged at WARN or ERROR.
    fn complaints(&self) -> Vec<String> {
        self.watchd
            .log()
            .lines()
            .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
            .map(str::to_string)
            .collect()
    }
}

fn pod(name: &str, version: u32) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": name, "namespace": "default", "labels": {"v": version.to_string()}},
           "spec": {"containers": [{"name": "c", "image": "nginx"}]}})
}

fn set_version(api: &ApiServer, name: &str, version: u32) {
    api.patch_merge(
        "v1",
        "Pod",
        Some("default"),
        name,
        json!({"metadata": {"labels": {"v": version.to_string()}}}),
    );
}

fn delete(api: &ApiServer, name: &str) {
    api.delete("v1", "Pod", Some("default"), name);
}

/// The Lease holder, if any.
fn holder(api: &ApiServer) -> Option<String> {
    api.lease("default", "watchd")
        .and_then(|l| l["spec"]["holderIdentity"].as_str().map(str::to_string))
        .filter(|h| !h.is_empty())
}

/// Waits until the Lease names a holder that `pred` accepts; returns it and
/// when it was first seen (polled every 5 ms).
fn wait_holder(
    api: &ApiServer,
    timeout: Duration,
    pred: impl Fn(&str) -> bool,
) -> (String, Instant) {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(h) = holder(api)
            && pred(&h)
        {
            return (h, Instant::now());
        }
        assert!(
            Instant::now() < deadline,
            "no such Lease holder after {timeout:?}; Lease: {:?}",
            api.lease("default", "watchd")
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Waits until `cond` holds, polling; panics with `what` and both logs.
fn wait(what: &str, replicas: &[&Replica], timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        if Instant::now() >= deadline {
            let logs: Vec<String> = replicas
                .iter()
                .map(|r| format!("--- {} ---\n{}", r.name, r.watchd.log()))
                .collect();
            panic!("timed out waiting for {what}\n{}", logs.join("\n"));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// (event_type, pod name, label v) of each pod record, in arrival order.
fn summary(records: &[Value]) -> Vec<(String, String, String)> {
    records
        .iter()
        .map(|r| {
            let s = |p: &str| {
                r.pointer(p)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string()
            };
            (
                s("/event_type"),
                s("/json/metadata/name"),
                s("/json/metadata/labels/v"),
            )
        })
        .collect()
}

/// Names with a `delete` record in either intake.
fn deleted_names(replicas: &[&Replica]) -> BTreeSet<String> {
    replicas
        .iter()
        .flat_map(|r| summary(&r.pod_records()))
        .filter(|(t, _, _)| t == "delete")
        .map(|(_, name, _)| name)
        .collect()
}

/// The label `v` of each pod as the last record in `replica`'s intake says.
fn last_versions(replica: &Replica) -> BTreeMap<String, String> {
    let mut last = BTreeMap::new();
    for (event_type, name, v) in summary(&replica.pod_records()) {
        if event_type == "delete" {
            last.remove(&name);
        } else {
            last.insert(name, v);
        }
    }
    last
}

/// The label `v` of every pod not deleted, as the API server has it.
fn current_versions(
    api: &ApiServer,
    pods: usize,
    deleted: &BTreeSet<String>,
) -> BTreeMap<String, String> {
    (0..pods)
        .map(|i| format!("p{i}"))
        .filter(|n| !deleted.contains(n))
        .map(|n| {
            let pod = api
                .get("v1", "Pod", Some("default"), &n)
                .expect("a survivor");
            let v = pod["metadata"]["labels"]["v"]
                .as_str()
                .expect("v")
                .to_string();
            (n, v)
        })
        .collect()
}

/// A leader and a warm standby: both have listed every pod.
fn leader_and_standby<'a>(
    api: &ApiServer,
    a: &'a Replica,
    b: &'a Replica,
    pods: usize,
) -> (&'a Replica, &'a Replica) {
    let (name, _) = wait_holder(api, DEADLINE, |_| true);
    let (leader, standby) = if name == a.name { (a, b) } else { (b, a) };
    wait(
        "the leader's initapply of every pod",
        &[a, b],
        DEADLINE,
        || leader.pod_records().len() >= pods,
    );
    standby.watchd.wait_ready();
    wait("the standby's list", &[a, b], DEADLINE, || {
        standby.metric(r#"watchd_records_total{route="resources",event_type="initapply"}"#)
            >= pods as f64
    });
    (leader, standby)
}

#[test]
fn two_replicas_one_ships_and_both_watch() {
    let api = ApiServer::start();
    for i in 0..20 {
        api.create(pod(&format!("p{i}"), 0));
    }
    let a = Replica::start(&api, "watchd-a", &FAST);
    let b = Replica::start(&api, "watchd-b", &FAST);
    let (leader, standby) = leader_and_standby(&api, &a, &b, 20);
    leader.watchd.wait_ready();

    for i in 0..5 {
        set_version(&api, &format!("p{i}"), 1);
    }
    delete(&api, "p18");
    delete(&api, "p19");
    wait("the changes at the leader", &[&a, &b], DEADLINE, || {
        let s = summary(&leader.pod_records());
        s.iter().filter(|(t, _, _)| t == "delete").count() == 2
            && s.iter()
                .filter(|(t, _, v)| t == "apply" && v == "1")
                .count()
                == 5
    });
    // The standby saw them too (its map is current), and shipped nothing.
    wait("the changes at the standby", &[&a, &b], DEADLINE, || {
        standby.metric(r#"watchd_records_total{route="resources",event_type="delete"}"#) == 2.0
            && standby.metric(r#"watchd_records_total{route="resources",event_type="apply"}"#)
                == 5.0
    });
    assert!(
        standby.intake.requests().is_empty(),
        "the standby shipped: {:?}",
        standby.pod_records()
    );
    assert_eq!(leader.pod_records().len(), 20 + 5 + 2);
    assert_eq!(leader.metric("watchd_leader"), 1.0);
    assert_eq!(standby.metric("watchd_leader"), 0.0);
    assert_eq!(
        leader.metric(r#"watchd_leadership_changes_total{change="acquired"}"#),
        1.0
    );
    assert!(standby.metric(r#"watchd_watchers{state="watching"}"#) >= 1.0);
    // Readiness does not depend on leadership.
    assert_eq!(standby.watchd.get("/readyz").0, 200);
    let lease = api.lease("default", "watchd").expect("the Lease");
    assert_eq!(lease["spec"]["leaseDurationSeconds"], 3);
    assert_eq!(lease["spec"]["leaseTransitions"], 0);
    for log in [a.watchd.log(), b.watchd.log()] {
        assert!(!log.contains(" ERROR "), "{log}");
    }
}

#[test]
fn after_sigkill_of_the_leader_the_standby_leads_and_every_deletion_of_the_gap_arrives() {
    let api = ApiServer::start();
    let pods = 200;
    for i in 0..pods {
        api.create(pod(&format!("p{i}"), 0));
    }
    let a = Replica::start(&api, "watchd-a", &FAST);
    let b = Replica::start(&api, "watchd-b", &FAST);
    let (leader, standby) = leader_and_standby(&api, &a, &b, pods);

    // Changes while the leader is alive, then through its death and the
    // gap until the standby leads, then after: one change and one deletion
    // every 50 ms.
    let mut deleted = BTreeSet::new();
    let mut version = BTreeMap::new();
    let next = std::cell::Cell::new(0);
    let mut step = |deleted: &mut BTreeSet<String>| {
        let n = next.get();
        let gone = format!("p{n}");
        let changed = format!("p{}", pods - 1 - n);
        delete(&api, &gone);
        deleted.insert(gone);
        let v = version.entry(changed.clone()).or_insert(0);
        *v += 1;
        set_version(&api, &changed, *v);
        next.set(n + 1);
        std::thread::sleep(Duration::from_millis(50));
    };
    for _ in 0..5 {
        step(&mut deleted);
    }
    let killed = Instant::now();
    leader.sigkill();
    let (_, elected) = loop {
        if next.get() < 5 + 60 {
            step(&mut deleted);
        } else {
            std::thread::sleep(Duration::from_millis(5));
        }
        if let Some(h) = holder(&api).filter(|h| h == standby.name) {
            break (h, Instant::now());
        }
        assert!(killed.elapsed() < DEADLINE, "the standby never took over");
    };
    let during_gap = next.get() - 5;
    for _ in 0..5 {
        step(&mut deleted);
    }
    assert!(next.get() < pods / 2, "the changes ran into each other");

    let survivors = current_versions(&api, pods, &deleted);
    wait(
        "every deletion and every survivor's state",
        &[&a, &b],
        DEADLINE,
        || deleted.is_subset(&deleted_names(&[&a, &b])) && last_versions(standby) == survivors,
    );
    let first_record = standby.first_request().expect("the new leader shipped");
    let takeover = elected - killed;
    let to_first_record = first_record.saturating_duration_since(killed);
    println!(
        "SIGKILL failover ({pods} pods, {during_gap} deleted in the gap): Lease taken {takeover:?} after the kill, first record {to_first_record:?} after it (lease {FAST_LEASE:?}, retry {FAST_RETRY:?})"
    );
    // A lease duration after the standby last saw the renewal (up to 2.2
    // retry periods after it was made), and no more than a short while
    // for the write.
    assert!(
        takeover <= FAST_LEASE + FAST_RETRY * 3,
        "taken over {takeover:?} after the kill"
    );
    // The snapshot is whole: every survivor as initapply after the kill.
    let initapply: BTreeSet<String> = summary(&standby.pod_records())
        .into_iter()
        .filter(|(t, _, _)| t == "initapply")
        .map(|(_, n, _)| n)
        .collect();
    assert!(
        survivors.keys().all(|n| initapply.contains(n)),
        "missing from the snapshot: {:?}",
        survivors
            .keys()
            .filter(|n| !initapply.contains(*n))
            .collect::<Vec<_>>()
    );
    assert!(
        standby.complaints().is_empty(),
        "{:?}",
        standby.complaints()
    );
}

#[test]
fn with_default_timings_the_new_leaders_first_record_comes_within_20_s_of_a_sigkill() {
    let api = ApiServer::start();
    let pods = 100;
    for i in 0..pods {
        api.create(pod(&format!("p{i}"), 0));
    }
    // client-go's timings: 15 s, 10 s, 2 s.
    let a = Replica::start(&api, "watchd-a", &[]);
    let b = Replica::start(&api, "watchd-b", &[]);
    let (leader, standby) = leader_and_standby(&api, &a, &b, pods);
    // Renewals every 2 s, observed by the standby at its own pace.
    std::thread::sleep(Duration::from_secs(5));
    let killed = Instant::now();
    leader.sigkill();
    // A deletion every 500 ms through the gap.
    let mut deleted = BTreeSet::new();
    let mut i = 0;
    let (_, elected) = loop {
        if i < pods && i as u32 * 500 <= killed.elapsed().as_millis() as u32 {
            delete(&api, &format!("p{i}"));
            deleted.insert(format!("p{i}"));
            i += 1;
        }
        if let Some(h) = holder(&api).filter(|h| h == standby.name) {
            break (h, Instant::now());
        }
        assert!(
            killed.elapsed() < Duration::from_secs(40),
            "the standby never took over"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    let survivors = current_versions(&api, pods, &deleted);
    wait("every deletion and survivor", &[&a, &b], DEADLINE, || {
        deleted.is_subset(&deleted_names(&[&a, &b])) && last_versions(standby) == survivors
    });
    let first_record = standby
        .first_request()
        .expect("the new leader shipped")
        .saturating_duration_since(killed);
    println!(
        "SIGKILL failover (default timings, {} deleted in the gap): Lease taken {:?} after the kill, first record {first_record:?} after it",
        deleted.len(),
        elected - killed
    );
    assert!(first_record <= Duration::from_secs(20), "{first_record:?}");
}

#[test]
fn after_sigterm_the_leader_releases_and_the_standby_leads_within_5_s_with_default_timings() {
    let api = ApiServer::start();
    let pods = 30;
    for i in 0..pods {
        api.create(pod(&format!("p{i}"), 0));
    }
    // client-go's timings: 15 s, 10 s, 2 s.
    let a = Replica::start(&api, "watchd-a", &[]);
    let b = Replica::start(&api, "watchd-b", &[]);
    let (leader, standby) = leader_and_standby(&api, &a, &b, pods);
    let lease = api.lease("default", "watchd").expect("the Lease");
    assert_eq!(lease["spec"]["leaseDurationSeconds"], 15);

    // Changes just before the SIGTERM and during the hand-over.
    let mut deleted = BTreeSet::new();
    for i in 0..3 {
        delete(&api, &format!("p{i}"));
        deleted.insert(format!("p{i}"));
        set_version(&api, &format!("p{}", pods - 1 - i), 1);
    }
    let terminated = Instant::now();
    leader.watchd.sigterm();
    let mut i = 3;
    let (_, elected) = loop {
        if i < 10 {
            delete(&api, &format!("p{i}"));
            deleted.insert(format!("p{i}"));
            set_version(&api, &format!("p{}", pods - 1 - i), 1);
            i += 1;
        }
        if let Some(h) = holder(&api).filter(|h| h == standby.name) {
            break (h, Instant::now());
        }
        assert!(
            terminated.elapsed() < DEADLINE,
            "the standby never took over"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let takeover = elected - terminated;
    // The old leader drained, released and exited 0.
    wait("the old leader's exit", &[&a, &b], DEADLINE, || {
        leader.watchd.log().contains("watchd::daemon: stopped")
    });
    let log = leader.watchd.log();
    assert!(log.contains("released Lease default/watchd"), "{log}");
    assert!(leader.complaints().is_empty(), "{:?}", leader.complaints());
    let survivors = current_versions(&api, pods, &deleted);
    wait("nothing lost", &[&a, &b], DEADLINE, || {
        deleted.is_subset(&deleted_names(&[&a, &b])) && last_versions(standby) == survivors
    });
    let first_record = standby.first_request().expect("the new leader shipped");
    println!(
        "SIGTERM failover (default timings): Lease taken {takeover:?} after the SIGTERM, first record {:?} after it",
        first_record.saturating_duration_since(terminated)
    );
    assert!(takeover <= Duration::from_secs(5), "{takeover:?}");
}

#[test]
fn a_leader_cut_off_from_its_lease_stops_shipping_before_the_standby_can_lead() {
    let api = ApiServer::start();
    let pods = 10;
    for i in 0..pods {
        api.create(pod(&format!("p{i}"), 0));
    }
    let a = Replica::start(&api, "watchd-a", &FAST);
    let b = Replica::start(&api, "watchd-b", &FAST);
    let (leader, standby) = leader_and_standby(&api, &a, &b, pods);

    // A change every 20 ms throughout, so that a leader that had not
    // stopped would be seen shipping.
    let stop = std::sync::atomic::AtomicBool::new(false);
    let mut version = 0;
    let (partitioned, elected) = std::thread::scope(|scope| {
        let changes = scope.spawn(|| {
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                version += 1;
                set_version(&api, "p0", version);
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        std::thread::sleep(Duration::from_millis(300));
        let partitioned = Instant::now();
        api.refuse_lease_writes_from(leader.name);
        let (_, elected) = wait_holder(&api, DEADLINE, |h| h == standby.name);
        std::thread::sleep(Duration::from_millis(500));
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        changes.join().expect("the changes");
        (partitioned, elected)
    });
    let final_version = version.to_string();
    wait(
        "the last change at the new leader",
        &[&a, &b],
        DEADLINE,
        || last_versions(standby).get("p0") == Some(&final_version),
    );
    wait("the old leader's exit", &[&a, &b], DEADLINE, || {
        leader.watchd.log().contains("lost Lease default/watchd")
    });
    let last_old = leader.last_request().expect("the old leader shipped");
    let first_new = standby.first_request().expect("the new leader shipped");
    println!(
        "partition: the old leader's last request {:?} after the partition, the Lease taken {:?} after it, the new leader's first request {:?} after it",
        last_old.saturating_duration_since(partitioned),
        elected - partitioned,
        first_new.saturating_duration_since(partitioned),
    );
    assert!(
        last_old < elected && last_old < first_new,
        "two leaders shipped at once"
    );
    // Fenced by its own clock: within the renew deadline after its last
    // renewal, which was before the partition.
    assert!(
        last_old.saturating_duration_since(partitioned) < FAST_RENEW + Duration::from_millis(300),
        "shipped {:?} after the partition",
        last_old.saturating_duration_since(partitioned)
    );
    let log = leader.watchd.log();
    assert!(
        log.contains(
            "stopped shipping, exiting so that Kubernetes restarts this replica as a standby"
        ),
        "{log}"
    );
}

#[test]
fn replicas_starting_at_the_same_instant_agree_on_one_leader_without_complaint() {
    let api = ApiServer::start();
    api.create(pod("p0", 0));
    // The first Lease writes of the two are held until both have arrived:
    // they race for certain, whatever the machine's scheduling.
    api.gather_lease_writes(2);
    let a = Replica::start(&api, "watchd-a", &FAST);
    let b = Replica::start(&api, "watchd-b", &FAST);
    let (leader, _) = wait_holder(&api, DEADLINE, |_| true);
    let (leader, other) = if leader == a.name { (&a, &b) } else { (&b, &a) };
    wait("both decided", &[&a, &b], DEADLINE, || {
        leader
            .watchd
            .log()
            .contains("acquired Lease default/watchd")
            && (other.watchd.log().contains("is held by watchd-")
                || other.watchd.log().contains("wrote it first"))
    });
    wait("the pod at the leader", &[&a, &b], DEADLINE, || {
        !leader.pod_records().is_empty()
    });
    // A few renewals later, still one leader, one shipping.
    std::thread::sleep(FAST_RETRY * 3);
    assert_eq!(holder(&api).as_deref(), Some(leader.name));
    assert!(other.intake.requests().is_empty());
    assert!(!other.watchd.log().contains("acquired Lease"));
    for r in [&a, &b] {
        assert!(
            r.complaints().is_empty(),
            "{}: {:?}",
            r.name,
            r.complaints()
        );
    }
    let conflicts = api
        .requests()
        .iter()
        .filter(|r| r.path.contains("/leases") && r.status == 409)
        .count();
    assert!(conflicts > 0, "the replicas never raced for the Lease");
}

#[test]
fn leader_election_on_needs_the_pods_name_and_namespace() {
    let api = ApiServer::start();
    let mut watchd = Watchd::start_raw(
        Some(&api),
        &[
            ("WATCHD_LEADER_ELECTION", "on".into()),
            ("POD_NAMESPACE", "default".into()),
        ],
    );
    let status = watchd.wait_exit(DEADLINE);
    assert_eq!(status.code(), Some(2));
    assert!(
        watchd
            .log()
            .contains("watchd: configuration error: POD_NAME: is required with leader election on"),
        "{}",
        watchd.log()
    );
    let mut watchd = Watchd::start_raw(
        Some(&api),
        &[
            ("POD_NAME", "watchd-a".into()),
            ("POD_NAMESPACE", "default".into()),
            ("WATCHD_LEASE_DURATION_SECS", "5".into()),
        ],
    );
    assert_eq!(watchd.wait_exit(DEADLINE).code(), Some(2));
    assert!(
        watchd
            .log()
            .contains("configuration error: WATCHD_LEASE_DURATION_SECS"),
        "{}",
        watchd.log()
    );
}
