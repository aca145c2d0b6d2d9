//! Records of built-in and custom resources against the real binary: the
//! fixtures arrive as `initapply`, stripped and typed; updates as `apply`,
//! deletions as `delete`; heartbeat-only updates are skipped.

mod support;

use std::collections::BTreeSet;

use serde_json::{Value, json};
use support::{Watchd, count, fixtures_dir, wait_intake};
use testkit::apiserver::ApiServer;
use testkit::intake::Intake;

/// (route, kind, namespace/name) of every object the fixtures create.
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
        let api_version = o["apiVersion"].as_str().expect("apiVersion");
        let kind = o["kind"].as_str().expect("kind").to_string();
        let builtin = ["v1", "apps/v1"].contains(&api_version);
        let route = match (kind.as_str(), builtin) {
            ("Event", _) => "events",
            (_, true) => "resources",
            _ => "customresources",
        };
        let ns = o["metadata"]["namespace"].as_str().unwrap_or_default();
        let name = o["metadata"]["name"].as_str().expect("name");
        set.insert((route.to_string(), kind, format!("{ns}/{name}")));
    }
    set
}

#[test]
fn fixtures_arrive_as_initapply_stripped_and_typed_then_updates_and_deletions_follow() {
    let api = ApiServer::start();
    api.load_fixtures(&fixtures_dir()).expect("fixtures load");
    let intake = Intake::start();
    let watchd = Watchd::start(&api, &intake, &[]);
    let expected = fixture_objects();
    assert!(expected.len() >= 10, "{expected:?}");

    let initapplied = |intake: &Intake| -> BTreeSet<(String, String, String)> {
        ["resources", "customresources", "events"]
            .iter()
            .flat_map(|route| {
                intake
                    .records(route)
                    .into_iter()
                    .filter(|r| r["event_type"] == "initapply")
                    .map(|r| {
                        let (_, kind, name) = support::summary(&r);
                        (route.to_string(), kind, name)
                    })
            })
            .collect()
    };
    wait_intake(&intake, &watchd, "every fixture object as initapply", |i| {
        expected.is_subset(&initapplied(i))
    });
    watchd.wait_ready();

    for route in ["resources", "customresources", "events"] {
        for r in intake.records(route) {
            let o = &r["json"];
            assert!(o["apiVersion"].is_string() && o["kind"].is_string(), "{r}");
            assert!(r["timestamp"].is_u64(), "{r}");
            let text = o.to_string();
            assert!(!text.contains("fieldsV1"), "{text}");
            assert!(!text.contains("last-applied-configuration"), "{text}");
            if let Some(mf) = o["metadata"]["managedFields"].as_array() {
                assert!(
                    mf.iter()
                        .all(|e| e["manager"].is_string() && e["time"].is_string()),
                    "{text}"
                );
            }
        }
    }
    // No object twice in the first lists.
    let initapply_count: usize = ["resources", "customresources", "events"]
        .iter()
        .map(|r| {
            intake
                .records(r)
                .iter()
                .filter(|x| x["event_type"] == "initapply")
                .count()
        })
        .sum();
    assert_eq!(initapply_count, initapplied(&intake).len());

    // An update: apply. A deletion: delete.
    let pod = api
        .get("v1", "Pod", Some("examples"), "test1-656b95f57-mddjc")
        .expect("fixture pod");
    api.patch_merge(
        "v1",
        "Pod",
        Some("examples"),
        "test1-656b95f57-mddjc",
        json!({"metadata": {"labels": {"changed": "yes"}}}),
    );
    wait_intake(&intake, &watchd, "the pod's apply", |i| {
        i.records("resources").iter().any(|r| {
            r["event_type"] == "apply" && r["json"]["metadata"]["labels"]["changed"] == "yes"
        })
    });
    api.delete("v1", "Pod", Some("examples"), "test1-656b95f57-mddjc");
    wait_intake(&intake, &watchd, "the pod's delete", |i| {
        count(i, "resources", "delete", "test1-656b95f57-mddjc") == 1
    });
    let deleted = intake
        .records("resources")
        .into_iter()
        .find(|r| r["event_type"] == "delete")
        .expect("found");
    assert_eq!(deleted["json"]["metadata"]["uid"], pod["metadata"]["uid"]);
    assert_eq!(deleted["json"]["kind"], "Pod");
}

#[test]
fn heartbeat_only_updates_of_nodes_and_leases_are_skipped_and_a_label_change_is_sent() {
    let api = ApiServer::start();
    let time = |s: u32| format!("2024-12-01T10:{:02}:{:02}Z", s / 60, s % 60);
    api.create(json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": "node-1", "labels": {"tier": "a"}},
        "status": {"conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
            "lastHeartbeatTime": time(0), "lastTransitionTime": time(0)}]}
    }));
    api.create(json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "node-1", "namespace": "kube-node-lease"},
        "spec": {"holderIdentity": "node-1", "leaseDurationSeconds": 40, "renewTime": "2024-12-01T10:00:00.000000Z"}
    }));
    let intake = Intake::start();
    let watchd = Watchd::start(
        &api,
        &intake,
        &[("WATCHD_RESOURCES", "nodes,leases.coordination.k8s.io")],
    );
    wait_intake(&intake, &watchd, "the node and the lease", |i| {
        count(i, "resources", "initapply", "node-1") == 2
    });

    for s in 1..=20 {
        api.patch_merge("v1", "Node", None, "node-1", json!({"status": {"conditions": [{"type": "Ready", "status": "True",
            "reason": "KubeletReady", "lastHeartbeatTime": time(s * 10), "lastTransitionTime": time(0)}]}}));
        api.patch_merge(
            "coordination.k8s.io/v1",
            "Lease",
            Some("kube-node-lease"),
            "node-1",
            json!({"spec": {"renewTime": format!("2024-12-01T10:00:{:02}.000000Z", s)}}),
        );
    }
    api.patch_merge(
        "v1",
        "Node",
        None,
        "node-1",
        json!({"metadata": {"labels": {"tier": "b"}}}),
    );
    api.patch_merge(
        "coordination.k8s.io/v1",
        "Lease",
        Some("kube-node-lease"),
        "node-1",
        json!({"metadata": {"labels": {"changed": "yes"}}}),
    );
    wait_intake(&intake, &watchd, "the label changes", |i| {
        i.records("resources")
            .iter()
            .filter(|r| r["event_type"] == "apply")
            .count()
            >= 2
            && i.records("resources").iter().any(|r| {
                r["json"]["kind"] == "Lease" && r["json"]["metadata"]["labels"]["changed"] == "yes"
            })
            && i.records("resources").iter().any(|r| {
                r["json"]["kind"] == "Node" && r["json"]["metadata"]["labels"]["tier"] == "b"
            })
    });
    let applies: Vec<Value> = intake
        .records("resources")
        .into_iter()
        .filter(|r| r["event_type"] == "apply")
        .collect();
    assert_eq!(applies.len(), 2, "only the label changes: {applies:#?}");
    let skipped = watchd.get("/metrics").1;
    assert!(
        skipped.contains("watchd_skipped_duplicates_total{route=\"resources\"} 40"),
        "{skipped}"
    );
}

#[test]
fn the_file_sink_writes_one_record_a_line_with_its_route() {
    let api = ApiServer::start();
    api.create(json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p1", "namespace": "default"}, "spec": {}}));
    api.create(json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "e1", "namespace": "default"}, "reason": "Test"}));
    let dir = tempfile::tempdir().expect("a temp dir");
    let out = dir.path().join("records.ndjson");
    let watchd = Watchd::start_raw(
        Some(&api),
        &[
            ("HIK8S_SINK", format!("file:{}", out.display())),
            ("WATCHD_RESOURCES", "pods,events".into()),
        ],
    );
    let lines = || -> Vec<Value> {
        std::fs::read_to_string(&out)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("one JSON object a line"))
            .collect()
    };
    let deadline = std::time::Instant::now() + support::DEADLINE;
    while lines().len() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "{:?}\n{}",
            lines(),
            watchd.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let mut routes: Vec<(String, String)> = lines()
        .iter()
        .map(|l| {
            (
                l["route"].as_str().unwrap_or_default().into(),
                l["json"]["kind"].as_str().unwrap_or_default().into(),
            )
        })
        .collect();
    routes.sort();
    assert_eq!(
        routes,
        [
            ("events".into(), "Event".into()),
            ("resources".into(), "Pod".into())
        ]
    );
    assert!(
        lines()
            .iter()
            .all(|l| l["event_type"] == "initapply" && l["timestamp"].is_u64())
    );
}
