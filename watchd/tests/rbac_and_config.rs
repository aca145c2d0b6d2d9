//! Refusals: a resource the API server forbids, and configurations watchd
//! refuses to start with.

mod support;

use serde_json::json;
use support::{DEADLINE, Watchd, count, wait_intake};
use testkit::apiserver::ApiServer;
use testkit::intake::{Intake, STATIC_TOKEN};

#[test]
fn a_forbidden_resource_names_the_missing_rule_once_and_the_rest_flows_and_turns_ready() {
    let api = ApiServer::start();
    api.forbid("nodes", true);
    api.forbid("ingresses.networking.k8s.io", true);
    api.create(json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p1", "namespace": "default"}, "spec": {}}));
    let intake = Intake::start();
    let watchd = Watchd::start(&api, &intake, &[]);
    let rule = r#"forbidden to list/watch nodes: add this rule to watchd's ClusterRole: - {apiGroups: [""], resources: ["nodes"], verbs: ["get", "list", "watch"]}"#;
    watchd.wait_log(rule, DEADLINE);
    watchd.wait_log(r#"- {apiGroups: ["networking.k8s.io"], resources: ["ingresses"], verbs: ["get", "list", "watch"]}"#, DEADLINE);
    wait_intake(&intake, &watchd, "the pod", |i| {
        count(i, "resources", "initapply", "p1") == 1
    });
    watchd.wait_ready();
    assert_eq!(watchd.log().matches(rule).count(), 1, "{}", watchd.log());
    // kube's own logs (tracing) reach the log output.
    assert!(
        watchd.log().contains("kube_runtime::watcher"),
        "{}",
        watchd.log()
    );
    let metrics = watchd.get("/metrics").1;
    assert!(
        metrics.contains("watchd_watchers{state=\"forbidden\"} 2"),
        "{metrics}"
    );
    // Secrets are never asked for.
    assert!(api.requests().iter().all(|r| !r.path.contains("secrets")));
}

#[test]
fn a_resource_the_cluster_does_not_serve_is_logged_once_and_does_not_hold_readiness() {
    // The test API server has no batch group: cronjobs answer 404, as on a
    // cluster without that API.
    let api = ApiServer::start();
    api.create(json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p1", "namespace": "default"}, "spec": {}}));
    let intake = Intake::start();
    let watchd = Watchd::start(
        &api,
        &intake,
        &[("WATCHD_RESOURCES", "pods,cronjobs.batch")],
    );
    let message = "cronjobs.batch: this API server does not serve it (404)";
    watchd.wait_log(message, DEADLINE);
    wait_intake(&intake, &watchd, "the pod", |i| {
        count(i, "resources", "initapply", "p1") == 1
    });
    watchd.wait_ready();
    assert_eq!(watchd.log().matches(message).count(), 1, "{}", watchd.log());
    let metrics = watchd.get("/metrics").1;
    assert!(
        metrics.contains("watchd_watchers{state=\"not_served\"} 1"),
        "{metrics}"
    );
}

fn exits_2_with(env: &[(&str, &str)], with_api: bool, expected: &[&str]) {
    let api = ApiServer::start();
    let intake = Intake::start();
    let mut vars = vec![
        ("HIK8S_URL", intake.url()),
        ("HIK8S_TOKEN", STATIC_TOKEN.to_string()),
    ];
    vars.extend(env.iter().map(|(k, v)| (*k, v.to_string())));
    let mut watchd = Watchd::start_raw(with_api.then_some(&api), &vars);
    let status = watchd.wait_exit(DEADLINE);
    assert_eq!(status.code(), Some(2), "{}", watchd.log());
    let log = watchd.log();
    for text in expected {
        assert!(log.contains(text), "{text:?} not in:\n{log}");
    }
    assert!(
        api.requests().iter().all(|r| !r.path.contains("secrets")),
        "{:?}",
        api.requests()
    );
}

#[test]
fn asking_for_secrets_is_a_configuration_error() {
    exits_2_with(
        &[("WATCHD_RESOURCES", "pods,secrets")],
        true,
        &["watchd: configuration error: WATCHD_RESOURCES: secrets are never read"],
    );
}

#[test]
fn an_unknown_resource_is_a_configuration_error() {
    exits_2_with(
        &[("WATCHD_RESOURCES", "pods,widgets.example.com")],
        true,
        &[
            "watchd: configuration error: WATCHD_RESOURCES: unknown resource \"widgets.example.com\"",
        ],
    );
}

#[test]
fn a_batch_size_over_the_intake_limit_is_a_configuration_error() {
    exits_2_with(
        &[("WATCHD_BATCH_MAX_BYTES", "2MiB")],
        true,
        &["WATCHD_BATCH_MAX_BYTES"],
    );
}

#[test]
fn without_kubernetes_credentials_watchd_says_so_and_exits_2() {
    exits_2_with(&[], false, &["no Kubernetes credentials"]);
}
