//! Fidelity: the real kubectl (the first on the `PATH`; `.ci/test` installs
//! one from PyPI when there is none) against the test API server.

mod apiserver_common;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Instant;

use apiserver_common::*;
use serde_json::{Value, json};
use testkit::apiserver::ApiServer;

/// `kubectl`, looked up on the `PATH` when it runs.
const KUBECTL: &str = "kubectl";

/// A server with a kubeconfig and a kubectl cache dir of its own.
struct Cluster {
    server: ApiServer,
    dir: tempfile::TempDir,
}

impl Cluster {
    /// Panics when kubectl is not on the `PATH`: these tests prove nothing
    /// without it, so its absence is a failure, not a skip.
    fn start() -> Cluster {
        let found = Command::new(KUBECTL)
            .args(["version", "--client"])
            .output()
            .is_ok_and(|out| out.status.success());
        assert!(
            found,
            "kubectl is not on the PATH: run the tests with `.ci/test`, which installs it"
        );
        let server = ApiServer::start();
        let dir = tempfile::tempdir().expect("temp dir");
        server.write_kubeconfig(&dir.path().join("kubeconfig"));
        Cluster { server, dir }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(KUBECTL);
        cmd.env("KUBECONFIG", self.dir.path().join("kubeconfig"))
            .env_remove("KUBERNETES_SERVICE_HOST")
            .arg("--cache-dir")
            .arg(self.dir.path().join("cache"))
            .args(args);
        cmd
    }

    /// Runs kubectl to completion; its stdout. Panics if it fails.
    fn kubectl(&self, args: &[&str]) -> String {
        let out = self.command(args).output().expect("run kubectl");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}\nstdout: {stdout}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }

    fn file(&self, name: &str, content: &Value) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, serde_json::to_vec_pretty(content).unwrap()).expect("write manifest");
        path
    }
}

/// Objects recorded from real clusters, from the repository's fixtures.
fn fixture(name: &str) -> Value {
    let path = testkit::fixtures_dir().join(name);
    let record: Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("read fixture"))
            .expect("fixture JSON");
    let mut obj = record["json"].clone();
    let meta = obj["metadata"].as_object_mut().expect("metadata");
    meta.remove("uid");
    meta.remove("resourceVersion");
    obj
}

#[test]
fn kubectl_reads_discovery_lists_and_crds() {
    let c = Cluster::start();
    c.server.create(fixture("pod-deletion__apply_1_pod_kyverno_kyverno-cleanup-update-requests-28904880-pwmcv_bf076442-ef7d-44de-9acc-42552939b77f_146313170.json"));
    c.server.create(fixture(
        "skiplist-resource__apply_pod_should_be_processed.json",
    ));
    c.server.create(widget_crd());

    let pods = c.kubectl(&["get", "pods", "-A"]);
    assert!(pods.contains("NAMESPACE"), "{pods}");
    assert!(
        pods.contains("kyverno-cleanup-update-requests-28904880-pwmcv"),
        "{pods}"
    );

    let apis: Value = serde_json::from_str(&c.kubectl(&["get", "--raw", "/apis"])).expect("JSON");
    assert_eq!(apis["kind"], "APIGroupList");
    assert!(
        apis["groups"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["name"] == "example.com")
    );

    let resources = c.kubectl(&["api-resources"]);
    for line in [
        "pods ",
        "deployments ",
        "replicasets ",
        "daemonsets ",
        "statefulsets ",
        "services ",
        "namespaces ",
        "nodes ",
        "ingresses ",
        "serviceaccounts ",
        "roles ",
        "clusterroles ",
        "clusterrolebindings ",
        "storageclasses ",
        "events ",
        "secrets ",
        "leases ",
        "customresourcedefinitions ",
        "widgets ",
    ] {
        assert!(
            resources.lines().any(|l| l.starts_with(line)),
            "api-resources lacks {line:?}:\n{resources}"
        );
    }
    let deployments = resources
        .lines()
        .find(|l| l.starts_with("deployments "))
        .unwrap();
    assert!(
        deployments.contains("apps/v1") && deployments.contains("Deployment"),
        "{deployments}"
    );

    let crds = c.kubectl(&["get", "crd"]);
    assert!(crds.contains("widgets.example.com"), "{crds}");
}

#[test]
fn kubectl_gets_custom_resources_once_their_crd_exists() {
    let c = Cluster::start();
    // Discovery is cached before the CRD exists: kubectl must refresh it.
    c.kubectl(&["get", "pods"]);
    c.server.create(widget_crd());
    c.server.create(widget("default", "first-widget"));
    let out = c.kubectl(&["get", "widgets"]);
    assert!(out.contains("first-widget"), "{out}");
    let out = c.kubectl(&[
        "get",
        "widgets.v1beta1.example.com",
        "first-widget",
        "-o",
        "json",
    ]);
    let obj: Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(obj["apiVersion"], "example.com/v1beta1");
}

#[test]
fn kubectl_watch_receives_a_modification_made_through_the_server() {
    let c = Cluster::start();
    c.server.create(pod("default", "watched"));
    let mut child: Child = c
        .command(&["get", "pods", "-w", "--output-watch-events", "-o", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start kubectl get -w");
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        // With `-w -o json`, kubectl prints each event on one line.
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let deadline = Instant::now() + DEADLINE;
    let next_event = || -> Value {
        let text = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("kubectl printed an event in time");
        serde_json::from_str(&text).expect("kubectl printed JSON")
    };
    let first = next_event();
    assert_eq!(first["type"], "ADDED", "{first}");
    assert!(
        c.server.wait_for(DEADLINE, |s| s.open_watches() == 1),
        "kubectl opens a watch"
    );
    c.server.patch_merge(
        "v1",
        "Pod",
        Some("default"),
        "watched",
        json!({"metadata": {"labels": {"seen-by": "kubectl"}}}),
    );
    let modified = next_event();
    assert_eq!(modified["type"], "MODIFIED", "{modified}");
    assert_eq!(
        modified["object"]["metadata"]["labels"]["seen-by"],
        "kubectl"
    );
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn kubectl_apply_label_and_delete_write_through_rest() {
    let c = Cluster::start();
    let mut deployment =
        fixture("skiplist-resource__apply_deployment_should_be_processed_1_init.json");
    for field in ["status", "managedFields", "creationTimestamp", "generation"] {
        deployment.as_object_mut().unwrap().remove(field);
        deployment["metadata"]
            .as_object_mut()
            .unwrap()
            .remove(field);
    }
    let ns = deployment["metadata"]["namespace"]
        .as_str()
        .expect("namespaced")
        .to_string();
    let name = deployment["metadata"]["name"].as_str().unwrap().to_string();
    let path = c.file("deployment.json", &deployment);
    let out = c.kubectl(&["apply", "-f", path.to_str().unwrap()]);
    assert!(out.contains("created"), "{out}");
    let stored = c
        .server
        .get("apps/v1", "Deployment", Some(&ns), &name)
        .expect("created");
    assert!(
        stored["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"]
            .is_string()
    );

    // A second apply with a changed image patches (strategic merge).
    let image = "registry.example/changed:2";
    deployment["spec"]["template"]["spec"]["containers"][0]["image"] = json!(image);
    let path = c.file("deployment.json", &deployment);
    let out = c.kubectl(&["apply", "-f", path.to_str().unwrap()]);
    assert!(out.contains("configured"), "{out}");
    let stored = c
        .server
        .get("apps/v1", "Deployment", Some(&ns), &name)
        .expect("still there");
    assert_eq!(
        stored["spec"]["template"]["spec"]["containers"][0]["image"],
        image
    );
    assert_eq!(
        stored["spec"]["template"]["spec"]["containers"][0]["name"],
        deployment["spec"]["template"]["spec"]["containers"][0]["name"]
    );

    c.kubectl(&["label", "deployment", &name, "-n", &ns, "checked=yes"]);
    let stored = c
        .server
        .get("apps/v1", "Deployment", Some(&ns), &name)
        .expect("still there");
    assert_eq!(stored["metadata"]["labels"]["checked"], "yes");

    c.kubectl(&["delete", "deployment", &name, "-n", &ns]);
    assert!(
        c.server
            .get("apps/v1", "Deployment", Some(&ns), &name)
            .is_none()
    );
    assert!(
        c.server
            .requests()
            .iter()
            .any(|r| r.method == "PATCH" && r.status == 200),
        "apply and label patch"
    );
}
