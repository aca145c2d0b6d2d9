//! Every document in `deploy/` must be a valid object of its Kubernetes type.
//!
//! The cluster silently ignores a field it does not know (a misspelt
//! `tolerations`, a `readOnly` at the wrong level), so each document is read
//! into its k8s-openapi type and written back: anything the type dropped on
//! the way is a field Kubernetes would not know either.

use std::path::{Path, PathBuf};

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{Namespace, Secret, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

/// Reads `doc` as `T` and back, and returns the paths of fields that did not
/// survive (or changed on) the round trip.
fn round_trip<T: DeserializeOwned + Serialize>(doc: &Value) -> Result<Vec<String>, String> {
    let typed: T = serde_json::from_value(doc.clone()).map_err(|e| e.to_string())?;
    let back = serde_json::to_value(&typed).map_err(|e| e.to_string())?;
    let mut lost = Vec::new();
    diff("", doc, &back, &mut lost);
    Ok(lost)
}

fn diff(path: &str, want: &Value, got: &Value, out: &mut Vec<String>) {
    match (want, got) {
        (Value::Object(w), Value::Object(g)) => {
            for (key, wv) in w {
                let p = format!("{path}.{key}");
                match g.get(key) {
                    Some(gv) => diff(&p, wv, gv, out),
                    None => out.push(format!("{p} (unknown field)")),
                }
            }
        }
        (Value::Array(w), Value::Array(g)) if w.len() == g.len() => {
            for (i, (wv, gv)) in w.iter().zip(g).enumerate() {
                diff(&format!("{path}[{i}]"), wv, gv, out);
            }
        }
        _ if want != got => out.push(format!("{path}: {want} became {got}")),
        _ => {}
    }
}

fn check(doc: &Value) -> Result<Vec<String>, String> {
    let kind = doc["kind"].as_str().unwrap_or_default();
    match kind {
        "Namespace" => round_trip::<Namespace>(doc),
        "Secret" => round_trip::<Secret>(doc),
        "ServiceAccount" => round_trip::<ServiceAccount>(doc),
        "ClusterRole" => round_trip::<ClusterRole>(doc),
        "ClusterRoleBinding" => round_trip::<ClusterRoleBinding>(doc),
        "Role" => round_trip::<Role>(doc),
        "RoleBinding" => round_trip::<RoleBinding>(doc),
        "PodDisruptionBudget" => round_trip::<PodDisruptionBudget>(doc),
        "DaemonSet" => round_trip::<DaemonSet>(doc),
        "Deployment" => round_trip::<Deployment>(doc),
        other => Err(format!("no type known for kind {other:?}")),
    }
}

fn documents() -> Vec<(String, Value)> {
    let mut files: Vec<_> = std::fs::read_dir(deploy_dir())
        .expect("deploy/ exists")
        .map(|e| e.expect("readable deploy/ entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    let mut docs = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("readable manifest");
        for (i, de) in serde_yaml_ng::Deserializer::from_str(&text).enumerate() {
            let value = Value::deserialize(de)
                .unwrap_or_else(|e| panic!("{} document {i}: {e}", file.display()));
            if !value.is_null() {
                docs.push((format!("{} document {i}", file.display()), value));
            }
        }
    }
    docs
}

#[test]
fn every_deploy_document_is_a_known_kubernetes_object() {
    let docs = documents();
    assert!(
        docs.len() >= 7,
        "expected the full set of manifests, found {}",
        docs.len()
    );
    let mut problems = Vec::new();
    for (name, doc) in &docs {
        match check(doc) {
            Ok(lost) if lost.is_empty() => {}
            Ok(lost) => problems.push(format!("{name}: {}", lost.join(", "))),
            Err(e) => problems.push(format!("{name}: {e}")),
        }
    }
    assert!(
        problems.is_empty(),
        "manifest problems:\n{}",
        problems.join("\n")
    );
}

#[test]
fn a_misspelt_field_is_caught() {
    let doc: Value = serde_json::json!({
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": "x"},
        "spec": {"selector": {}, "template": {"spec": {"containers": [], "toleration": []}}}
    });
    let lost = check(&doc).expect("parses");
    assert_eq!(lost, vec![".spec.template.spec.toleration (unknown field)"]);
}

#[test]
fn watchd_role_never_grants_secrets() {
    let docs = documents();
    let (_, role) = docs
        .iter()
        .find(|(_, d)| d["kind"] == "ClusterRole" && d["metadata"]["name"] == "hik8s-watchd")
        .expect("the watchd ClusterRole");
    for rule in role["rules"].as_array().expect("rules") {
        let resources = rule["resources"].as_array().expect("resources");
        assert!(
            !resources.iter().any(|r| r == "secrets" || r == "*"),
            "{rule}"
        );
        let verbs: Vec<_> = rule["verbs"].as_array().expect("verbs").iter().collect();
        assert_eq!(verbs, ["get", "list", "watch"], "{rule}");
    }
}

#[test]
fn watchd_runs_a_leader_and_a_standby_and_logd_everywhere() {
    let docs = documents();
    let find = |kind: &str| {
        docs.iter()
            .find(|(_, d)| d["kind"] == kind)
            .map(|(_, d)| d.clone())
            .unwrap_or_else(|| panic!("a {kind}"))
    };
    let watchd = find("Deployment");
    assert_eq!(watchd["spec"]["replicas"], 2);
    // A new replica is ready (warm) before an old one stops.
    assert_eq!(
        watchd["spec"]["strategy"],
        serde_json::json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}})
    );
    let pod = &watchd["spec"]["template"]["spec"];
    let anti =
        &pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0];
    assert_eq!(
        anti["podAffinityTerm"]["topologyKey"],
        "kubernetes.io/hostname"
    );
    assert_eq!(
        anti["podAffinityTerm"]["labelSelector"]["matchLabels"],
        watchd["spec"]["selector"]["matchLabels"]
    );
    let env = pod["containers"][0]["env"].as_array().expect("env");
    for (var, field) in [
        ("POD_NAME", "metadata.name"),
        ("POD_NAMESPACE", "metadata.namespace"),
    ] {
        let e = env
            .iter()
            .find(|e| e["name"] == var)
            .unwrap_or_else(|| panic!("{var}"));
        assert_eq!(e["valueFrom"]["fieldRef"]["fieldPath"], field, "{var}");
    }
    let pdb = find("PodDisruptionBudget");
    assert_eq!(pdb["spec"]["minAvailable"], 1);
    assert_eq!(
        pdb["spec"]["selector"]["matchLabels"],
        watchd["spec"]["selector"]["matchLabels"]
    );
    assert_eq!(
        pdb["metadata"]["namespace"],
        watchd["metadata"]["namespace"]
    );
    let logd = find("DaemonSet");
    let pod = &logd["spec"]["template"]["spec"];
    assert_eq!(
        pod["tolerations"],
        serde_json::json!([{"operator": "Exists"}])
    );
    let env = pod["containers"][0]["env"].as_array().expect("env");
    let own_uid = env
        .iter()
        .find(|e| e["name"] == "LOGD_EXCLUDE_POD_UID")
        .expect("LOGD_EXCLUDE_POD_UID");
    assert_eq!(
        own_uid["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.uid"
    );
    let pods_mount = pod["containers"][0]["volumeMounts"]
        .as_array()
        .expect("mounts")
        .iter()
        .find(|m| m["mountPath"] == "/var/log/pods")
        .expect("the pods dir mounted");
    assert_eq!(pods_mount["readOnly"], true);
}

#[test]
fn watchd_may_get_create_and_update_leases_in_its_namespace_only() {
    let docs = documents();
    let deployment = &docs
        .iter()
        .find(|(_, d)| d["kind"] == "Deployment")
        .expect("the watchd Deployment")
        .1;
    let namespace = &deployment["metadata"]["namespace"];
    let account = &deployment["spec"]["template"]["spec"]["serviceAccountName"];
    let (_, role) = docs
        .iter()
        .find(|(_, d)| d["kind"] == "Role")
        .expect("the leader election Role");
    assert_eq!(&role["metadata"]["namespace"], namespace);
    assert_eq!(
        role["rules"],
        serde_json::json!([{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
                            "verbs": ["get", "create", "update"]}])
    );
    let (_, binding) = docs
        .iter()
        .find(|(_, d)| d["kind"] == "RoleBinding")
        .expect("its RoleBinding");
    assert_eq!(&binding["metadata"]["namespace"], namespace);
    assert_eq!(binding["roleRef"]["kind"], "Role");
    assert_eq!(binding["roleRef"]["name"], role["metadata"]["name"]);
    assert_eq!(
        binding["subjects"],
        serde_json::json!([{"kind": "ServiceAccount", "name": account, "namespace": namespace}])
    );
}
