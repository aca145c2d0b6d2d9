//! Fidelity: Leases (`coordination.k8s.io/v1`) as watchd's leader election
//! will use them with kube 5's `Api<Lease>` (client-go's algorithm: get; on
//! 404 create; else replace with the resourceVersion read; 409 = lost the
//! race), the error `Status`es kube reads `reason` and `code` from, Go's
//! strict MicroTime parsing, and the partition control.

mod apiserver_common;

use std::future::Future;
use std::process::Command;
use std::time::Duration;

use apiserver_common::*;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use serde_json::{Value, json};
use testkit::apiserver::ApiServer;

const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/default/leases";

/// Runs a test body on a current-thread runtime, as watchd's kube thread does.
fn run<F: Future<Output = ()>>(f: F) {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(f);
}

/// A client configured from the server's kubeconfig (namespace `default`).
async fn client(server: &ApiServer) -> Client {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("kubeconfig");
    server.write_kubeconfig(&path);
    let kubeconfig = Kubeconfig::read_from(&path).expect("read kubeconfig");
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("config from kubeconfig");
    Client::try_from(config).expect("client")
}

async fn leases(server: &ApiServer) -> Api<Lease> {
    Api::namespaced(client(server).await, "default")
}

/// Waits, without blocking the runtime, until `cond` holds.
async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {DEADLINE:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn micro_time(s: &str) -> MicroTime {
    MicroTime(s.parse().expect("a timestamp"))
}

/// A Lease `watchd` held by `holder`, renewed at `renewed`.
fn lease(holder: &str, renewed: &str) -> Lease {
    Lease {
        metadata: ObjectMeta {
            name: Some("watchd".into()),
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: Some(15),
            acquire_time: Some(micro_time("2026-12-06T10:00:00.000001Z")),
            renew_time: Some(micro_time(renewed)),
            lease_transitions: Some(0),
            ..LeaseSpec::default()
        }),
    }
}

/// The `Status` of a failed kube call.
fn api_error<T: std::fmt::Debug>(result: kube::Result<T>) -> kube::core::Status {
    match result {
        Err(kube::Error::Api(status)) => *status,
        other => panic!("expected kube::Error::Api, got {other:?}"),
    }
}

fn rv(lease: &Lease) -> String {
    lease
        .metadata
        .resource_version
        .clone()
        .expect("a resourceVersion")
}

#[test]
fn a_missing_lease_is_the_real_servers_not_found_status_byte_for_byte() {
    let server = ApiServer::start();
    let resp = get(server.addr(), &format!("{LEASES}/watchd"));
    assert_eq!(resp.status, 404);
    assert_eq!(
        String::from_utf8_lossy(&resp.body),
        r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"leases.coordination.k8s.io \"watchd\" not found","reason":"NotFound","details":{"name":"watchd","group":"coordination.k8s.io","kind":"leases"},"code":404}"#
    );
    // The core group has no group in the details.
    let resp = get(server.addr(), "/api/v1/namespaces/default/pods/p");
    assert_eq!(
        String::from_utf8_lossy(&resp.body),
        r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"pods \"p\" not found","reason":"NotFound","details":{"name":"p","kind":"pods"},"code":404}"#
    );
    // A path that names no resource.
    let resp = get(server.addr(), "/apis/coordination.k8s.io/v1/nothings");
    assert_eq!(
        String::from_utf8_lossy(&resp.body),
        r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"the server could not find the requested resource","reason":"NotFound","details":{},"code":404}"#
    );

    run(async {
        let leases = leases(&server).await;
        let status = api_error(leases.get("watchd").await);
        assert_eq!(
            (status.code, status.reason.as_str(), status.message.as_str()),
            (
                404,
                "NotFound",
                r#"leases.coordination.k8s.io "watchd" not found"#
            )
        );
        assert!(status.is_not_found());
        let details = status.details.expect("details");
        assert_eq!(
            (
                details.name.as_str(),
                details.group.as_str(),
                details.kind.as_str()
            ),
            ("watchd", "coordination.k8s.io", "leases")
        );
        assert!(leases.get_opt("watchd").await.expect("get_opt").is_none());
    });
}

#[test]
fn kube_acquires_renews_and_loses_races_as_client_go_does() {
    let server = ApiServer::start();
    run(async {
        let leases = leases(&server).await;
        let pp = PostParams::default();

        // Acquire: 404, so create.
        assert!(leases.get_opt("watchd").await.expect("get").is_none());
        let created = leases
            .create(&pp, &lease("watchd-0", "2026-12-06T10:00:00.000001Z"))
            .await
            .expect("create");
        let spec = created.spec.clone().expect("spec");
        assert_eq!(spec.holder_identity.as_deref(), Some("watchd-0"));
        assert_eq!(
            spec.renew_time,
            Some(micro_time("2026-12-06T10:00:00.000001Z"))
        );

        // Another candidate creates too: it lost the race.
        let status = api_error(
            leases
                .create(&pp, &lease("watchd-1", "2026-12-06T10:00:00.000002Z"))
                .await,
        );
        assert_eq!(
            (status.code, status.reason.as_str(), status.message.as_str()),
            (
                409,
                "AlreadyExists",
                r#"leases.coordination.k8s.io "watchd" already exists"#
            )
        );
        assert!(status.is_already_exists());

        // Renew: replace with the resourceVersion read.
        let mut renewal = leases.get("watchd").await.expect("get");
        renewal.spec.as_mut().expect("spec").renew_time =
            Some(micro_time("2026-12-06T10:00:05.123456Z"));
        let renewed = leases
            .replace("watchd", &pp, &renewal)
            .await
            .expect("renew with a fresh resourceVersion");
        assert_ne!(
            rv(&renewed),
            rv(&created),
            "a write moves the resourceVersion"
        );
        assert_eq!(
            renewed.spec.as_ref().expect("spec").renew_time,
            Some(micro_time("2026-12-06T10:00:05.123456Z"))
        );

        // A candidate that read before the renewal: stale, 409 Conflict.
        let mut takeover = created.clone();
        takeover.spec.as_mut().expect("spec").holder_identity = Some("watchd-1".into());
        let status = api_error(leases.replace("watchd", &pp, &takeover).await);
        assert_eq!(
            (status.code, status.reason.as_str(), status.message.as_str()),
            (
                409,
                "Conflict",
                "Operation cannot be fulfilled on leases.coordination.k8s.io \"watchd\": the object has been modified; please apply your changes to the latest version and try again"
            )
        );
        assert!(status.is_conflict());

        // A replace without a resourceVersion: Leases allow no unconditional update.
        let mut blind = lease("watchd-1", "2026-12-06T10:00:06.000000Z");
        blind.metadata.resource_version = None;
        let status = api_error(leases.replace("watchd", &pp, &blind).await);
        assert_eq!(
            (status.code, status.reason.as_str(), status.message.as_str()),
            (
                422,
                "Invalid",
                r#"leases.coordination.k8s.io "watchd" is invalid: metadata.resourceVersion: Invalid value: 0x0: must be specified for an update"#
            )
        );
        assert!(status.is_invalid());
        let details = status.details.expect("details");
        assert_eq!(
            (
                details.name.as_str(),
                details.group.as_str(),
                details.kind.as_str()
            ),
            ("watchd", "coordination.k8s.io", "leases")
        );
        assert_eq!(details.causes.len(), 1);
        assert_eq!(
            (
                details.causes[0].reason.as_str(),
                details.causes[0].message.as_str(),
                details.causes[0].field.as_str()
            ),
            (
                "FieldValueInvalid",
                "Invalid value: 0x0: must be specified for an update",
                "metadata.resourceVersion"
            )
        );

        // Validation, as the real server's ValidateLeaseSpec.
        let mut zero = leases.get("watchd").await.expect("get");
        zero.spec.as_mut().expect("spec").lease_duration_seconds = Some(0);
        let status = api_error(leases.replace("watchd", &pp, &zero).await);
        assert_eq!(
            (status.code, status.message.as_str()),
            (
                422,
                r#"Lease.coordination.k8s.io "watchd" is invalid: spec.leaseDurationSeconds: Invalid value: 0: must be greater than 0"#
            )
        );

        // None of the refused writes changed it.
        let now = leases.get("watchd").await.expect("get");
        assert_eq!(rv(&now), rv(&renewed));
        assert_eq!(
            now.spec.expect("spec").holder_identity.as_deref(),
            Some("watchd-0")
        );
    });
}

#[test]
fn a_put_of_a_missing_lease_creates_it() {
    let server = ApiServer::start();
    let body = json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "watchd", "resourceVersion": "12345"},
        "spec": {"holderIdentity": "watchd-0", "renewTime": "2026-12-06T10:00:00.000000Z"}
    });
    let resp = request(
        server.addr(),
        "PUT",
        &format!("{LEASES}/watchd"),
        Some("application/json"),
        body.to_string().as_bytes(),
    );
    assert_eq!(resp.status, 201, "{}", String::from_utf8_lossy(&resp.body));
    let stored = server.lease("default", "watchd").expect("created");
    assert_eq!(stored["spec"]["holderIdentity"], "watchd-0");
    assert_ne!(stored["metadata"]["resourceVersion"], "12345");
}

/// A raw POST of a Lease whose `spec` is `spec`: the answer's status and body.
fn post_lease(server: &ApiServer, name: &str, spec: Value) -> (u16, Value) {
    let body = json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": name}, "spec": spec
    });
    let resp = request(
        server.addr(),
        "POST",
        LEASES,
        Some("application/json"),
        body.to_string().as_bytes(),
    );
    (resp.status, resp.json())
}

#[test]
fn micro_times_are_read_as_go_reads_rfc3339_micro_and_written_in_utc() {
    let server = ApiServer::start();
    let accepted = [
        (
            "2026-12-06T10:00:00.123456Z",
            json!("2026-12-06T10:00:00.123456Z"),
        ),
        // An offset is RFC3339Micro too (Z07:00); stored in UTC.
        (
            "2026-12-06T12:30:00.123456+02:30",
            json!("2026-12-06T10:00:00.123456Z"),
        ),
        (
            "2026-01-01T00:30:00.000000+01:00",
            json!("2025-12-31T23:30:00.000000Z"),
        ),
        // Go takes a comma for the point, and a one-digit hour.
        (
            "2026-12-06T10:00:00,123456Z",
            json!("2026-12-06T10:00:00.123456Z"),
        ),
        (
            "2026-12-06T7:00:00.000000Z",
            json!("2026-12-06T07:00:00.000000Z"),
        ),
        (
            "2024-02-29T10:00:00.000000Z",
            json!("2024-02-29T10:00:00.000000Z"),
        ),
        // Go's zero time: MicroTime writes it as null.
        ("0001-01-01T00:00:00.000000Z", Value::Null),
    ];
    for (i, (sent, stored)) in accepted.iter().enumerate() {
        let name = format!("ok-{i}");
        let (code, body) = post_lease(&server, &name, json!({"renewTime": sent}));
        assert_eq!(code, 201, "{sent}: {body}");
        assert_eq!(&body["spec"]["renewTime"], stored, "{sent}");
        let lease = server.lease("default", &name).expect("stored");
        assert_eq!(&lease["spec"]["renewTime"], stored, "{sent}");
    }

    let layout = r#"as "2006-01-02T15:04:05.000000Z07:00""#;
    let refused = [
        (
            json!("2026-12-06T10:00:00Z"),
            format!(
                r#"parsing time "2026-12-06T10:00:00Z" {layout}: cannot parse "Z" as ".000000""#
            ),
        ),
        (
            json!("2026-12-06T10:00:00.123456789Z"),
            format!(
                r#"parsing time "2026-12-06T10:00:00.123456789Z" {layout}: cannot parse "789Z" as "Z07:00""#
            ),
        ),
        (
            json!("2026-12-06T10:00:00.123Z"),
            format!(
                r#"parsing time "2026-12-06T10:00:00.123Z" {layout}: cannot parse ".123Z" as ".000000""#
            ),
        ),
        (
            json!("2026-12-06T10:00:00.123456"),
            format!(
                r#"parsing time "2026-12-06T10:00:00.123456" {layout}: cannot parse "" as "Z07:00""#
            ),
        ),
        (
            json!("2026-12-06T10:00:00.123456z"),
            format!(
                r#"parsing time "2026-12-06T10:00:00.123456z" {layout}: cannot parse "z" as "Z07:00""#
            ),
        ),
        (
            json!("2026-12-06T10:00:00.123456+0200"),
            format!(
                r#"parsing time "2026-12-06T10:00:00.123456+0200" {layout}: cannot parse "+0200" as "Z07:00""#
            ),
        ),
        (
            json!("2026-12-06 10:00:00.123456Z"),
            format!(
                r#"parsing time "2026-12-06 10:00:00.123456Z" {layout}: cannot parse " 10:00:00.123456Z" as "T""#
            ),
        ),
        (
            json!("garbage"),
            format!(r#"parsing time "garbage" {layout}: cannot parse "garbage" as "2006""#),
        ),
        (
            json!("2026-13-06T10:00:00.123456Z"),
            r#"parsing time "2026-13-06T10:00:00.123456Z": month out of range"#.to_string(),
        ),
        (
            json!("2026-02-29T10:00:00.123456Z"),
            r#"parsing time "2026-02-29T10:00:00.123456Z": day out of range"#.to_string(),
        ),
        (
            json!("2026-12-06T24:00:00.123456Z"),
            r#"parsing time "2026-12-06T24:00:00.123456Z": hour out of range"#.to_string(),
        ),
        (
            json!("2026-12-06T10:00:00.123456Z "),
            r#"parsing time "2026-12-06T10:00:00.123456Z ": extra text: " ""#.to_string(),
        ),
        (
            json!(1_765_015_200),
            "json: cannot unmarshal number into Go value of type string".to_string(),
        ),
    ];
    for (sent, why) in &refused {
        let (code, body) = post_lease(&server, "bad", json!({"renewTime": sent}));
        assert_eq!(code, 400, "{sent}: {body}");
        assert_eq!(body["kind"], "Status");
        assert_eq!(body["reason"], "BadRequest", "{sent}");
        assert_eq!(body["code"], 400);
        assert_eq!(
            body["message"].as_str().expect("message"),
            format!(r#"Lease in version "v1" cannot be handled as a Lease: {why}"#),
            "{sent}"
        );
    }
    assert!(server.lease("default", "bad").is_none());

    // The other fields' JSON types, as Go's decoder reports them.
    let typed = [
        (
            json!({"leaseDurationSeconds": "15"}),
            "json: cannot unmarshal string into Go struct field LeaseSpec.spec.leaseDurationSeconds of type int32",
        ),
        (
            json!({"leaseTransitions": 2_147_483_648_i64}),
            "json: cannot unmarshal number 2147483648 into Go struct field LeaseSpec.spec.leaseTransitions of type int32",
        ),
        (
            json!({"holderIdentity": 7}),
            "json: cannot unmarshal number into Go struct field LeaseSpec.spec.holderIdentity of type string",
        ),
        (
            json!("held"),
            "json: cannot unmarshal string into Go struct field Lease.spec of type v1.LeaseSpec",
        ),
    ];
    for (spec, why) in typed {
        let (code, body) = post_lease(&server, "bad", spec.clone());
        assert_eq!(
            (code, &body["reason"]),
            (400, &json!("BadRequest")),
            "{spec}"
        );
        assert_eq!(
            body["message"].as_str().expect("message"),
            format!(r#"Lease in version "v1" cannot be handled as a Lease: {why}"#),
            "{spec}"
        );
    }

    // null fields are unset; a Lease without spec is served with `spec: {}`.
    let (code, body) = post_lease(
        &server,
        "nulls",
        json!({"holderIdentity": null, "renewTime": null}),
    );
    assert_eq!((code, &body["spec"]), (201, &json!({})));
    let resp = request(
        server.addr(),
        "POST",
        LEASES,
        Some("application/json"),
        br#"{"apiVersion":"coordination.k8s.io/v1","kind":"Lease","metadata":{"name":"bare"}}"#,
    );
    assert_eq!((resp.status, &resp.json()["spec"]), (201, &json!({})));

    // A patch whose result does not decode is an Invalid patch (422).
    let resp = request(
        server.addr(),
        "PATCH",
        &format!("{LEASES}/ok-0"),
        Some("application/merge-patch+json"),
        br#"{"spec":{"renewTime":"2026-12-06T10:00:00Z"}}"#,
    );
    let body = resp.json();
    assert_eq!(
        (resp.status, &body["reason"]),
        (422, &json!("Invalid")),
        "{body}"
    );
    let message = body["message"].as_str().expect("message");
    assert!(
        message.starts_with(r#" "" is invalid: patch: Invalid value: ""#)
            && message.ends_with(&format!(
                r#"": parsing time "2026-12-06T10:00:00Z" {layout}: cannot parse "Z" as ".000000""#
            )),
        "{message}"
    );
    assert_eq!(body["details"]["causes"][0]["field"], "patch");
}

#[test]
fn a_partitioned_holder_gets_no_answer_until_the_partition_heals() {
    let server = ApiServer::start();
    run(async {
        let leases = leases(&server).await;
        let pp = PostParams::default();
        let held = leases
            .create(&pp, &lease("watchd-0", "2026-12-06T10:00:00.000001Z"))
            .await
            .expect("create");

        server.refuse_lease_writes_from("watchd-0");
        let unanswered =
            |server: &ApiServer| server.requests().iter().filter(|r| r.status == 0).count();

        // The leader's renewal: sent, read, never answered.
        let mut renewal = held.clone();
        renewal.spec.as_mut().expect("spec").renew_time =
            Some(micro_time("2026-12-06T10:00:05.000000Z"));
        let renew = tokio::spawn({
            let (leases, renewal) = (leases.clone(), renewal.clone());
            async move {
                leases
                    .replace("watchd", &PostParams::default(), &renewal)
                    .await
            }
        });
        until("the renewal to be refused", || unanswered(&server) == 1).await;
        assert!(!renew.is_finished(), "a refused write gets no answer");
        let log = server.requests();
        let refused = log.iter().find(|r| r.status == 0).expect("logged");
        assert_eq!(
            (refused.method.as_str(), refused.path.as_str()),
            ("PUT", &*format!("{LEASES}/watchd"))
        );
        // The leader's client gives up (its renew deadline), as watchd's will.
        renew.abort();

        // Its release (holder cleared) is cut off too.
        let mut release = held.clone();
        release.spec.as_mut().expect("spec").holder_identity = None;
        let released = tokio::spawn({
            let (leases, release) = (leases.clone(), release.clone());
            async move {
                leases
                    .replace("watchd", &PostParams::default(), &release)
                    .await
            }
        });
        until("the release to be refused", || unanswered(&server) == 2).await;
        assert!(!released.is_finished());
        released.abort();

        // Reads from it still work: the server knows clients only by the
        // holder in a Lease body.
        let read = leases.get("watchd").await.expect("reads go through");
        assert_eq!(rv(&read), rv(&held), "nothing was applied");

        // Another candidate takes the expired Lease over.
        let mut takeover = read.clone();
        let spec = takeover.spec.as_mut().expect("spec");
        spec.holder_identity = Some("watchd-1".into());
        spec.lease_transitions = Some(1);
        let taken = leases
            .replace("watchd", &pp, &takeover)
            .await
            .expect("watchd-1 is not cut off");

        // The old leader tries to take it back, and the partition heals
        // while it waits: the connection closes, the write is never applied.
        let mut back = taken.clone();
        back.spec.as_mut().expect("spec").holder_identity = Some("watchd-0".into());
        let retake = tokio::spawn({
            let (leases, back) = (leases.clone(), back.clone());
            async move {
                leases
                    .replace("watchd", &PostParams::default(), &back)
                    .await
            }
        });
        until("the take-back to be refused", || unanswered(&server) == 3).await;
        server.allow_lease_writes_from("watchd-0");
        until("the waiting write to end", || retake.is_finished()).await;
        match retake.await.expect("the task ran") {
            Err(kube::Error::Api(status)) => panic!("expected no answer, got {status:?}"),
            Err(_) => {}
            Ok(lease) => panic!("a write across the partition was applied: {lease:?}"),
        }
        let now = server.lease("default", "watchd").expect("the Lease");
        assert_eq!(now["spec"]["holderIdentity"], "watchd-1");
        assert_eq!(now["metadata"]["resourceVersion"], json!(rv(&taken)));

        // Healed: its writes are answered again (here: it lost the race).
        let status = api_error(leases.replace("watchd", &pp, &renewal).await);
        assert_eq!((status.code, status.reason.as_str()), (409, "Conflict"));
    });
}

#[test]
fn kubectl_reports_a_missing_lease_as_the_real_server_makes_it() {
    let server = ApiServer::start();
    let dir = tempfile::tempdir().expect("temp dir");
    server.write_kubeconfig(&dir.path().join("kubeconfig"));
    let kubectl = |args: &[&str]| {
        Command::new("kubectl")
            .env("KUBECONFIG", dir.path().join("kubeconfig"))
            .env_remove("KUBERNETES_SERVICE_HOST")
            .arg("--cache-dir")
            .arg(dir.path().join("cache"))
            .args(args)
            .output()
            .expect("kubectl is on the PATH (.ci/test installs it)")
    };
    let out = kubectl(&["get", "lease", "watchd", "-n", "default"]);
    assert!(!out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        r#"Error from server (NotFound): leases.coordination.k8s.io "watchd" not found"#
    );

    server.create(json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "watchd", "namespace": "default"},
        "spec": {"holderIdentity": "watchd-0", "renewTime": "2026-12-06T12:00:00.000001+02:00"}
    }));
    let out = kubectl(&["get", "lease", "watchd", "-n", "default", "-o", "json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lease: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(lease["spec"]["renewTime"], "2026-12-06T10:00:00.000001Z");
}
