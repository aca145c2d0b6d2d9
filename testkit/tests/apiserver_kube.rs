//! Fidelity: the `kube` 5 client (as watchd uses it) against the test API
//! server: discovery over all groups, and watchers that list, watch, and
//! relist after a 410.

mod apiserver_common;

use std::future::Future;
use std::time::Duration;

use apiserver_common::*;
use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::discovery::{Discovery, Scope};
use kube::runtime::watcher;
use kube::{Client, Config, ResourceExt};
use serde_json::json;
use testkit::apiserver::ApiServer;

/// Runs a test body on a current-thread runtime, as watchd's kube thread does.
fn run<F: Future<Output = ()>>(f: F) {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(f);
}

/// A client configured from the server's kubeconfig.
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

/// The next item of a watcher stream, within the deadline.
async fn next<S, K>(stream: &mut S) -> Result<watcher::Event<K>, watcher::Error>
where
    S: Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Unpin,
{
    tokio::time::timeout(DEADLINE, stream.next())
        .await
        .expect("the watcher yields in time")
        .expect("the watcher stream does not end")
}

/// Names in one initial listing: Init, InitApply..., InitDone.
async fn initial_list<S, K>(stream: &mut S) -> Vec<K>
where
    S: Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Unpin,
    K: std::fmt::Debug,
{
    match next(stream).await {
        Ok(watcher::Event::Init) => {}
        other => panic!("expected Init, got {other:?}"),
    }
    let mut objects = Vec::new();
    loop {
        match next(stream).await {
            Ok(watcher::Event::InitApply(obj)) => objects.push(obj),
            Ok(watcher::Event::InitDone) => return objects,
            other => panic!("expected InitApply or InitDone, got {other:?}"),
        }
    }
}

/// Skips to the 410 the watcher reports when its resourceVersion expired.
async fn expect_expired<S, K>(stream: &mut S)
where
    S: Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Unpin,
    K: std::fmt::Debug,
{
    match next(stream).await {
        Err(watcher::Error::WatchError(status)) => {
            assert_eq!(
                (status.code, status.reason.as_str()),
                (410, "Expired"),
                "{status:?}"
            )
        }
        other => panic!("expected the 410 watch error, got {other:?}"),
    }
}

/// What watchd needs from discovery, whichever way it was run.
fn check_discovery(discovery: &Discovery) {
    for group in [
        "",
        "apps",
        "networking.k8s.io",
        "rbac.authorization.k8s.io",
        "storage.k8s.io",
        "coordination.k8s.io",
        "apiextensions.k8s.io",
        "example.com",
    ] {
        assert!(discovery.has_group(group), "group {group:?}");
    }
    let core = discovery.get("").expect("core group");
    let (pods, caps) = core.recommended_kind("Pod").expect("pods");
    assert_eq!(
        (pods.plural.as_str(), pods.api_version.as_str()),
        ("pods", "v1")
    );
    assert_eq!(caps.scope, Scope::Namespaced);
    assert!(caps.supports_operation("watch"));
    assert!(
        caps.subresources.iter().any(|(r, _)| r.plural == "status"),
        "pods/status"
    );
    let (nodes, caps) = core.recommended_kind("Node").expect("nodes");
    assert_eq!(
        (nodes.plural.as_str(), caps.scope),
        ("nodes", Scope::Cluster)
    );
    let apps = discovery.get("apps").expect("apps");
    let (deployments, _) = apps.recommended_kind("Deployment").expect("deployments");
    assert_eq!(deployments.api_version, "apps/v1");

    let custom = discovery.get("example.com").expect("CRD group");
    assert_eq!(custom.preferred_version(), Some("v1"));
    assert_eq!(custom.versions().collect::<Vec<_>>(), ["v1", "v1beta1"]);
    let gvk = GroupVersionKind::gvk("example.com", "v1beta1", "Widget");
    let (widgets, _) = discovery.resolve_gvk(&gvk).expect("served at v1beta1");
    assert_eq!(widgets.plural, "widgets");
}

#[test]
fn kube_discovery_finds_every_group_and_a_crds_versions() {
    let server = ApiServer::start();
    server.create(widget_crd());
    run(async {
        let client = client(&server).await;
        let discovery = Discovery::new(client.clone())
            .run()
            .await
            .expect("discovery");
        check_discovery(&discovery);
        let aggregated = Discovery::new(client)
            .run_aggregated()
            .await
            .expect("aggregated discovery");
        check_discovery(&aggregated);
    });
}

#[test]
fn kube_pod_watcher_lists_watches_and_relists_after_410() {
    let server = ApiServer::start();
    server.create(pod("ns", "a"));
    run(async {
        let pods: Api<Pod> = Api::all(client(&server).await);
        let mut stream = watcher(pods, watcher::Config::default()).boxed();
        let listed = initial_list(&mut stream).await;
        assert_eq!(
            listed.iter().map(|p| p.name_any()).collect::<Vec<_>>(),
            ["a"]
        );

        server.create(pod("ns", "b"));
        match next(&mut stream).await {
            Ok(watcher::Event::Apply(p)) => assert_eq!(p.name_any(), "b"),
            other => panic!("expected Apply(b), got {other:?}"),
        }

        // The client misses changes, then its resourceVersion expires.
        server.freeze_watches(true);
        server.patch_merge(
            "v1",
            "Pod",
            Some("ns"),
            "a",
            json!({"metadata": {"labels": {"changed": "yes"}}}),
        );
        server.delete("v1", "Pod", Some("ns"), "b");
        server.compact();
        server.drop_watches();
        server.freeze_watches(false);

        expect_expired(&mut stream).await;
        let relisted = initial_list(&mut stream).await;
        assert_eq!(
            relisted.iter().map(|p| p.name_any()).collect::<Vec<_>>(),
            ["a"]
        );
        assert_eq!(
            relisted[0].labels().get("changed").map(String::as_str),
            Some("yes")
        );
    });
    let log = server.requests();
    let lists: Vec<_> = log
        .iter()
        .filter(|r| r.path == "/api/v1/pods" && !r.is_watch())
        .collect();
    assert_eq!(lists.len(), 2, "one list, one relist: {log:?}");
    assert!(
        lists
            .iter()
            .all(|r| r.param("limit").as_deref() == Some("500")),
        "{lists:?}"
    );
    let watches: Vec<_> = log.iter().filter(|r| r.is_watch()).collect();
    assert!(
        watches.len() >= 2,
        "a watch, and the re-watch that got 410: {log:?}"
    );
    assert!(
        watches
            .iter()
            .all(|r| r.param("allowWatchBookmarks").as_deref() == Some("true"))
    );
}

#[test]
fn kube_dynamic_watcher_on_a_custom_resource_relists_after_410() {
    let server = ApiServer::start();
    server.create(widget_crd());
    server.create(widget("ns", "w1"));
    run(async {
        let client = client(&server).await;
        let discovery = Discovery::new(client.clone())
            .run()
            .await
            .expect("discovery");
        let gvk = GroupVersionKind::gvk("example.com", "v1", "Widget");
        let (resource, _): (ApiResource, _) =
            discovery.resolve_gvk(&gvk).expect("Widget is served");
        let widgets: Api<DynamicObject> = Api::all_with(client, &resource);
        let mut stream = watcher(widgets, watcher::Config::default()).boxed();
        let listed = initial_list(&mut stream).await;
        assert_eq!(
            listed.iter().map(|w| w.name_any()).collect::<Vec<_>>(),
            ["w1"]
        );

        server.create(widget("ns", "w2"));
        match next(&mut stream).await {
            Ok(watcher::Event::Apply(w)) => {
                assert_eq!(w.name_any(), "w2");
                let types = w.types.expect("watch events carry apiVersion and kind");
                assert_eq!(
                    (types.api_version.as_str(), types.kind.as_str()),
                    ("example.com/v1", "Widget")
                );
                assert_eq!(w.data["spec"]["size"], 1);
            }
            other => panic!("expected Apply(w2), got {other:?}"),
        }

        // A change the client misses, then its resourceVersion expires.
        server.freeze_watches(true);
        server.create(widget("ns", "w3"));
        server.compact();
        server.drop_watches();
        server.freeze_watches(false);
        expect_expired(&mut stream).await;
        let relisted = initial_list(&mut stream).await;
        assert_eq!(
            relisted.iter().map(|w| w.name_any()).collect::<Vec<_>>(),
            ["w1", "w2", "w3"]
        );

        server.delete("example.com/v1", "Widget", Some("ns"), "w1");
        match next(&mut stream).await {
            Ok(watcher::Event::Delete(w)) => assert_eq!(w.name_any(), "w1"),
            other => panic!("expected Delete(w1), got {other:?}"),
        }
    });
}

#[test]
fn kube_watcher_resumes_from_a_bookmark_after_a_timeout_without_relisting() {
    let server = ApiServer::start();
    server.set_bookmark_interval(Duration::from_millis(100));
    server.create(pod("ns", "a"));
    run(async {
        let pods: Api<Pod> = Api::namespaced(client(&server).await, "ns");
        let config = watcher::Config::default().timeout(1);
        let mut stream = watcher(pods, config).boxed();
        initial_list(&mut stream).await;
        // Let a few watches time out and resume; bookmarks are no events.
        let deadline = tokio::time::Instant::now() + DEADLINE;
        while server.requests().iter().filter(|r| r.is_watch()).count() < 3 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the watcher re-watches after timeouts"
            );
            if let Ok(item) = tokio::time::timeout(Duration::from_millis(50), stream.next()).await {
                panic!("no change happened, yet the watcher yielded {item:?}");
            }
        }
        server.create(pod("ns", "b"));
        match next(&mut stream).await {
            Ok(watcher::Event::Apply(p)) => assert_eq!(p.name_any(), "b"),
            other => panic!("expected Apply(b), got {other:?}"),
        }
    });
    let lists = server.requests().iter().filter(|r| !r.is_watch()).count();
    assert_eq!(lists, 1, "resuming a timed-out watch needs no relist");
}
