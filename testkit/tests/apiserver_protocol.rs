//! The test API server's wire protocol, checked with a raw HTTP client:
//! discovery, lists and paging, watches, errors, writes, test controls.

mod apiserver_common;

use std::time::{Duration, Instant};

use apiserver_common::*;
use serde_json::{Value, json};
use testkit::apiserver::ApiServer;

fn group<'a>(groups: &'a Value, name: &str) -> Option<&'a Value> {
    groups["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .find(|g| g["name"] == name)
}

#[test]
fn discovery_serves_builtin_kinds_and_crd_groups_come_and_go() {
    let server = ApiServer::start();
    let addr = server.addr();

    let version = get_json(addr, "/version");
    assert_eq!(
        (version["major"].as_str(), version["minor"].as_str()),
        (Some("1"), Some("32"))
    );
    assert_eq!(get_json(addr, "/api")["versions"], json!(["v1"]));
    let core = get_json(addr, "/api/v1");
    assert_eq!(core["kind"], "APIResourceList");
    let pods = core["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "pods")
        .expect("pods");
    assert_eq!(pods["kind"], "Pod");
    assert_eq!(pods["singularName"], "pod");
    assert_eq!(pods["namespaced"], true);
    assert!(pods["verbs"].as_array().unwrap().contains(&json!("watch")));

    let groups = get_json(addr, "/apis");
    assert_eq!(groups["kind"], "APIGroupList");
    for name in [
        "apps",
        "networking.k8s.io",
        "rbac.authorization.k8s.io",
        "storage.k8s.io",
        "coordination.k8s.io",
        "apiextensions.k8s.io",
    ] {
        let g = group(&groups, name).unwrap_or_else(|| panic!("group {name} in /apis"));
        assert_eq!(g["preferredVersion"]["version"], "v1");
    }
    let rbac = get_json(addr, "/apis/rbac.authorization.k8s.io/v1");
    let cluster_roles = rbac["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "clusterroles")
        .expect("clusterroles");
    assert_eq!(cluster_roles["namespaced"], false);
    assert!(group(&groups, "example.com").is_none());

    let crd = server.create(widget_crd());
    let conditions = crd["status"]["conditions"].as_array().expect("conditions");
    assert!(
        conditions
            .iter()
            .any(|c| c["type"] == "Established" && c["status"] == "True")
    );
    assert_eq!(crd["status"]["storedVersions"], json!(["v1"]));

    let groups = get_json(addr, "/apis");
    let g = group(&groups, "example.com").expect("the CRD's group appears");
    assert_eq!(
        g["preferredVersion"],
        json!({"groupVersion": "example.com/v1", "version": "v1"})
    );
    let versions: Vec<&Value> = g["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| &v["version"])
        .collect();
    assert_eq!(versions, [&json!("v1"), &json!("v1beta1")]);
    for v in ["v1", "v1beta1"] {
        let list = get_json(addr, &format!("/apis/example.com/{v}"));
        let widgets = &list["resources"][0];
        assert_eq!(
            (widgets["name"].as_str(), widgets["kind"].as_str()),
            (Some("widgets"), Some("Widget"))
        );
        assert_eq!(widgets["shortNames"], json!(["wd"]));
    }

    server.delete(
        "apiextensions.k8s.io/v1",
        "CustomResourceDefinition",
        None,
        "widgets.example.com",
    );
    assert!(
        group(&get_json(addr, "/apis"), "example.com").is_none(),
        "the CRD's group vanishes"
    );
    let gone = get(addr, "/apis/example.com/v1");
    assert_eq!(gone.status, 404);
    assert_eq!(get(addr, "/apis/example.com/v1/widgets").status, 404);
}

#[test]
fn aggregated_discovery_is_served_when_asked_for() {
    let server = ApiServer::start();
    let addr = server.addr();
    server.create(widget_crd());
    let accept =
        "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json";
    let fetch = |path: &str| {
        let mut stream = std::net::TcpStream::connect(addr).expect("connect");
        use std::io::{Read, Write};
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: t\r\nAccept: {accept}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut text = String::new();
        stream.read_to_string(&mut text).expect("read response");
        let (head, body) = text.split_once("\r\n\r\n").expect("head and body");
        assert!(
            head.contains(
                "Content-Type: application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
            ),
            "{head}"
        );
        serde_json::from_str::<Value>(body).expect("JSON body")
    };
    let apis = fetch("/apis");
    assert_eq!(apis["kind"], "APIGroupDiscoveryList");
    let items = apis["items"].as_array().unwrap();
    let widgets = items
        .iter()
        .find(|g| g["metadata"]["name"] == "example.com")
        .expect("CRD group");
    let versions: Vec<&Value> = widgets["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| &v["version"])
        .collect();
    assert_eq!(
        versions,
        [&json!("v1"), &json!("v1beta1")],
        "preferred version first"
    );
    assert_eq!(
        widgets["versions"][0]["resources"][0]["resource"],
        "widgets"
    );
    assert_eq!(
        widgets["versions"][0]["resources"][0]["scope"],
        "Namespaced"
    );
    let core = fetch("/api");
    assert_eq!(core["items"].as_array().unwrap().len(), 1);
    let resources = core["items"][0]["versions"][0]["resources"]
        .as_array()
        .unwrap();
    let pods = resources
        .iter()
        .find(|r| r["resource"] == "pods")
        .expect("pods");
    assert_eq!(
        pods["responseKind"],
        json!({"group": "", "version": "v1", "kind": "Pod"})
    );
    assert_eq!(pods["subresources"][0]["subresource"], "status");
}

#[test]
fn lists_have_list_kind_and_items_without_type_except_custom_resources() {
    let server = ApiServer::start();
    let addr = server.addr();
    server.create(pod("ns1", "a"));
    server.create(pod("ns2", "b"));
    server.create(widget_crd());
    server.create(widget("ns1", "w"));

    let list = get_json(addr, "/api/v1/pods");
    assert_eq!(list["kind"], "PodList");
    assert_eq!(list["apiVersion"], "v1");
    assert_eq!(rv(&list), server.resource_version());
    assert_eq!(names(&list), ["a", "b"]);
    for item in list["items"].as_array().unwrap() {
        assert!(
            item.get("apiVersion").is_none() && item.get("kind").is_none(),
            "{item}"
        );
        assert!(
            item["metadata"]["uid"]
                .as_str()
                .is_some_and(|u| u.len() == 36)
        );
        assert!(
            item["metadata"]["creationTimestamp"]
                .as_str()
                .is_some_and(|t| t.ends_with('Z'))
        );
    }
    assert_eq!(names(&get_json(addr, "/api/v1/namespaces/ns2/pods")), ["b"]);
    assert_eq!(
        names(&get_json(addr, "/api/v1/pods?labelSelector=app%3Da")),
        ["a"]
    );
    assert_eq!(
        names(&get_json(
            addr,
            "/api/v1/pods?fieldSelector=metadata.namespace%3Dns2"
        )),
        ["b"]
    );
    // kube sends `?&limit=500`: the empty parameter is ignored.
    assert_eq!(
        names(&get_json(addr, "/api/v1/pods?&limit=500")),
        ["a", "b"]
    );

    // Served at v1beta1 too, from the one stored copy.
    let widgets = get_json(addr, "/apis/example.com/v1beta1/namespaces/ns1/widgets");
    assert_eq!(widgets["kind"], "WidgetList");
    assert_eq!(widgets["items"][0]["apiVersion"], "example.com/v1beta1");
    assert_eq!(widgets["items"][0]["kind"], "Widget");
    let one = get_json(addr, "/apis/example.com/v1beta1/namespaces/ns1/widgets/w");
    assert_eq!(one["apiVersion"], "example.com/v1beta1");
}

#[test]
fn list_pages_all_come_from_the_first_pages_snapshot() {
    let server = ApiServer::start();
    let addr = server.addr();
    for name in ["p1", "p2", "p3", "p4", "p5"] {
        server.create(pod("ns", name));
    }
    let first = get_json(addr, "/api/v1/pods?limit=2");
    assert_eq!(names(&first), ["p1", "p2"]);
    assert_eq!(first["metadata"]["remainingItemCount"], 3);
    let snapshot_rv = rv(&first);

    // Changes after the first page do not show in the later pages.
    server.delete("v1", "Pod", Some("ns"), "p3");
    server.create(pod("ns", "p6"));

    let token = first["metadata"]["continue"]
        .as_str()
        .expect("continue token");
    let second = get_json(addr, &format!("/api/v1/pods?limit=2&continue={token}"));
    assert_eq!(names(&second), ["p3", "p4"]);
    assert_eq!(rv(&second), snapshot_rv);
    let token = second["metadata"]["continue"]
        .as_str()
        .expect("continue token");
    let last = get_json(addr, &format!("/api/v1/pods?limit=2&continue={token}"));
    assert_eq!(names(&last), ["p5"]);
    assert!(last["metadata"].get("continue").is_none_or(|c| c == ""));

    // A fresh list sees the changes.
    assert_eq!(
        names(&get_json(addr, "/api/v1/pods?limit=10")),
        ["p1", "p2", "p4", "p5", "p6"]
    );

    // A continue token from before a compaction has expired.
    let first = get_json(addr, "/api/v1/pods?limit=2");
    server.create(pod("ns", "p7"));
    server.compact();
    let token = first["metadata"]["continue"]
        .as_str()
        .expect("continue token");
    let expired = get(addr, &format!("/api/v1/pods?limit=2&continue={token}"));
    assert_eq!(expired.status, 410);
    assert_eq!(expired.json()["reason"], "Expired");
}

#[test]
fn watch_without_resource_version_starts_with_the_current_objects() {
    let server = ApiServer::start();
    let addr = server.addr();
    server.create(pod("ns", "a"));
    server.create(pod("other", "b"));
    let mut watch = Watch::open(addr, "/api/v1/namespaces/ns/pods?watch=1&timeoutSeconds=30");
    assert_eq!(watch.status, 200);
    assert!(
        watch
            .headers
            .iter()
            .any(|(n, v)| n == "Transfer-Encoding" && v == "chunked")
    );
    let added = watch.event();
    assert_eq!(added["type"], "ADDED");
    assert_eq!(added["object"]["metadata"]["name"], "a");
    assert_eq!(added["object"]["apiVersion"], "v1");
    assert_eq!(added["object"]["kind"], "Pod");

    // Each change arrives as it happens, in its own chunk.
    server.patch_merge(
        "v1",
        "Pod",
        Some("ns"),
        "a",
        json!({"metadata": {"labels": {"x": "1"}}}),
    );
    let modified = watch.event();
    assert_eq!(modified["type"], "MODIFIED");
    assert_eq!(modified["object"]["metadata"]["labels"]["x"], "1");
    server.create(pod("other", "c"));
    server.delete("v1", "Pod", Some("ns"), "a");
    let deleted = watch.event();
    assert_eq!(deleted["type"], "DELETED");
    assert_eq!(deleted["object"]["metadata"]["name"], "a");
    assert_eq!(rv(&deleted["object"]), server.resource_version());
}

#[test]
fn watch_from_a_resource_version_sends_only_newer_events() {
    let server = ApiServer::start();
    let addr = server.addr();
    let a = server.create(pod("ns", "a"));
    server.create(pod("ns", "b"));
    server.create(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ns"}}));
    server.patch_merge(
        "v1",
        "Pod",
        Some("ns"),
        "b",
        json!({"metadata": {"labels": {"x": "1"}}}),
    );
    let mut watch = Watch::open(
        addr,
        &format!(
            "/api/v1/pods?watch=true&resourceVersion={}&timeoutSeconds=30",
            rv(&a)
        ),
    );
    let first = watch.event();
    assert_eq!(
        (
            first["type"].as_str(),
            first["object"]["metadata"]["name"].as_str()
        ),
        (Some("ADDED"), Some("b"))
    );
    let second = watch.event();
    assert_eq!(
        (
            second["type"].as_str(),
            second["object"]["metadata"]["name"].as_str()
        ),
        (Some("MODIFIED"), Some("b"))
    );
    assert!(rv(&first["object"]) < rv(&second["object"]));
    server.create(pod("ns", "c"));
    let third = watch.event();
    assert_eq!(
        (
            third["type"].as_str(),
            third["object"]["metadata"]["name"].as_str()
        ),
        (Some("ADDED"), Some("c"))
    );
}

#[test]
fn watch_from_before_the_compaction_gets_410_expired_in_the_stream() {
    let server = ApiServer::start();
    let addr = server.addr();
    let a = server.create(pod("ns", "a"));
    server.create(pod("ns", "b"));
    server.compact();
    let mut watch = Watch::open(
        addr,
        &format!("/api/v1/pods?watch=1&resourceVersion={}", rv(&a)),
    );
    assert_eq!(watch.status, 200);
    let error = watch.event();
    assert_eq!(error["type"], "ERROR");
    assert_eq!(error["object"]["kind"], "Status");
    assert_eq!(error["object"]["code"], 410);
    assert_eq!(error["object"]["reason"], "Expired");
    assert!(watch.next().is_none(), "the stream ends after the error");

    // From the compaction point on, watching works.
    let mut watch = Watch::open(
        addr,
        &format!(
            "/api/v1/pods?watch=1&resourceVersion={}",
            server.resource_version()
        ),
    );
    server.create(pod("ns", "c"));
    assert_eq!(watch.event()["type"], "ADDED");
}

#[test]
fn bookmarks_come_only_when_asked_and_timeout_ends_the_stream() {
    let server = ApiServer::start();
    server.set_bookmark_interval(Duration::from_millis(50));
    let addr = server.addr();
    server.create(pod("ns", "a"));
    let now = server.resource_version();

    let started = Instant::now();
    let mut unasked = Watch::open(
        addr,
        &format!("/api/v1/pods?watch=1&resourceVersion={now}&timeoutSeconds=1"),
    );
    let events = unasked.rest();
    let took = started.elapsed();
    assert!(
        events.is_empty(),
        "no events, no bookmarks unasked: {events:?}"
    );
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(15),
        "ended after {took:?}"
    );

    let mut asked = Watch::open(
        addr,
        &format!(
            "/api/v1/pods?watch=1&resourceVersion={now}&allowWatchBookmarks=true&timeoutSeconds=1"
        ),
    );
    let events = asked.rest();
    assert!(!events.is_empty(), "bookmarks when asked");
    for e in &events {
        assert_eq!(e["type"], "BOOKMARK");
        assert_eq!(e["object"]["kind"], "Pod");
        assert_eq!(e["object"]["apiVersion"], "v1");
        assert_eq!(rv(&e["object"]), now);
    }
}

#[test]
fn forbidden_resources_answer_403_status_for_list_and_watch() {
    let server = ApiServer::start();
    let addr = server.addr();
    server.forbid("deployments.apps", true);
    for target in [
        "/apis/apps/v1/deployments",
        "/apis/apps/v1/deployments?watch=1",
        "/apis/apps/v1/namespaces/ns/deployments",
    ] {
        let resp = get(addr, target);
        assert_eq!(resp.status, 403, "{target}");
        let status = resp.json();
        assert_eq!(
            (
                status["kind"].as_str(),
                status["reason"].as_str(),
                status["code"].as_u64()
            ),
            (Some("Status"), Some("Forbidden"), Some(403))
        );
        assert!(
            status["message"].as_str().unwrap().contains("cannot"),
            "{status}"
        );
    }
    assert_eq!(
        get(addr, "/api/v1/pods").status,
        200,
        "other resources stay readable"
    );
    server.forbid("deployments.apps", false);
    assert_eq!(get(addr, "/apis/apps/v1/deployments").status, 200);
}

#[test]
fn rest_writes_create_replace_patch_and_delete() {
    let server = ApiServer::start();
    let addr = server.addr();
    let body = serde_json::to_vec(&pod("ns", "a")).unwrap();
    let created = request(
        addr,
        "POST",
        "/api/v1/namespaces/ns/pods",
        Some("application/json"),
        &body,
    );
    assert_eq!(created.status, 201);
    let created = created.json();
    assert_eq!(created["metadata"]["generation"], 1);
    let again = request(
        addr,
        "POST",
        "/api/v1/namespaces/ns/pods",
        Some("application/json"),
        &body,
    );
    assert_eq!(
        (again.status, again.json()["reason"].clone()),
        (409, json!("AlreadyExists"))
    );

    let patch = br#"{"metadata":{"labels":{"tier":"web"}}}"#;
    let patched = request(
        addr,
        "PATCH",
        "/api/v1/namespaces/ns/pods/a",
        Some("application/merge-patch+json"),
        patch,
    );
    assert_eq!(patched.status, 200);
    assert_eq!(patched.json()["metadata"]["labels"]["tier"], "web");

    // A replace with a stale resourceVersion conflicts.
    let stale = serde_json::to_vec(&created).unwrap();
    let conflict = request(
        addr,
        "PUT",
        "/api/v1/namespaces/ns/pods/a",
        Some("application/json"),
        &stale,
    );
    assert_eq!(
        (conflict.status, conflict.json()["reason"].clone()),
        (409, json!("Conflict"))
    );
    let mut fresh = server.get("v1", "Pod", Some("ns"), "a").expect("stored");
    fresh["spec"]["containers"][0]["image"] = json!("busybox:2");
    let replaced = request(
        addr,
        "PUT",
        "/api/v1/namespaces/ns/pods/a",
        Some("application/json"),
        &serde_json::to_vec(&fresh).unwrap(),
    );
    assert_eq!(replaced.status, 200);
    let replaced = replaced.json();
    assert_eq!(
        replaced["metadata"]["generation"], 2,
        "a spec change bumps generation"
    );
    assert_eq!(replaced["metadata"]["uid"], created["metadata"]["uid"]);

    let deleted = request(addr, "DELETE", "/api/v1/namespaces/ns/pods/a", None, b"");
    assert_eq!(deleted.status, 200);
    let missing = get(addr, "/api/v1/namespaces/ns/pods/a");
    assert_eq!(
        (missing.status, missing.json()["reason"].clone()),
        (404, json!("NotFound"))
    );
}

#[test]
fn frozen_watches_lose_the_events_and_dropped_watches_end() {
    let server = ApiServer::start();
    let addr = server.addr();
    server.create(pod("ns", "a"));
    let mut watch = Watch::open(
        addr,
        &format!(
            "/api/v1/pods?watch=1&resourceVersion={}",
            server.resource_version()
        ),
    );
    assert!(
        server.wait_for(DEADLINE, |s| s.open_watches() == 1),
        "the watch registers"
    );

    server.freeze_watches(true);
    server.patch_merge(
        "v1",
        "Pod",
        Some("ns"),
        "a",
        json!({"metadata": {"labels": {"lost": "1"}}}),
    );
    server.freeze_watches(false);
    server.patch_merge(
        "v1",
        "Pod",
        Some("ns"),
        "a",
        json!({"metadata": {"labels": {"seen": "1"}}}),
    );
    let event = watch.event();
    assert_eq!(
        event["object"]["metadata"]["labels"]["seen"], "1",
        "the frozen change never came: {event}"
    );
    assert_eq!(
        event["object"]["metadata"]["labels"]["lost"], "1",
        "the object itself is current"
    );

    server.drop_watches();
    assert!(watch.next().is_none(), "a dropped watch ends its stream");
    assert!(server.wait_for(DEADLINE, |s| s.open_watches() == 0));
}

#[test]
fn broken_watch_connections_close_without_the_final_chunk() {
    let server = ApiServer::start();
    let addr = server.addr();
    server.create(pod("ns", "a"));
    let mut watch = Watch::open(addr, "/api/v1/pods?watch=1");
    assert_eq!(watch.event()["type"], "ADDED");
    server.break_watch_connections();
    assert_eq!(watch.raw_rest(), b"", "the connection closes mid-stream");
    assert!(server.wait_for(DEADLINE, |s| s.open_watches() == 0));
}

#[test]
fn deleting_a_crd_deletes_its_objects_and_ends_their_watches() {
    let server = ApiServer::start();
    let addr = server.addr();
    server.create(widget_crd());
    server.create(widget("ns", "w1"));
    let mut watch = Watch::open(
        addr,
        &format!(
            "/apis/example.com/v1beta1/widgets?watch=1&resourceVersion={}",
            server.resource_version()
        ),
    );
    assert!(server.wait_for(DEADLINE, |s| s.open_watches() == 1));
    server.delete(
        "apiextensions.k8s.io/v1",
        "CustomResourceDefinition",
        None,
        "widgets.example.com",
    );
    let deleted = watch.event();
    assert_eq!(deleted["type"], "DELETED");
    assert_eq!(deleted["object"]["apiVersion"], "example.com/v1beta1");
    assert!(watch.next().is_none());
}

#[test]
fn every_request_is_logged_with_its_status() {
    let server = ApiServer::start();
    let addr = server.addr();
    get(addr, "/api/v1/pods?limit=5");
    get(addr, "/apis/nothing.example.com/v1/things");
    Watch::open(addr, "/api/v1/pods?watch=1&timeoutSeconds=0").rest();
    let log = server.requests();
    assert_eq!(log.len(), 3);
    assert_eq!(
        (
            log[0].method.as_str(),
            log[0].path.as_str(),
            log[0].query.as_str(),
            log[0].status
        ),
        ("GET", "/api/v1/pods", "limit=5", 200)
    );
    assert_eq!(log[0].param("limit").as_deref(), Some("5"));
    assert_eq!(log[1].status, 404);
    assert!(log[2].is_watch() && !log[0].is_watch());
}
