//! From a request to an answer: which document or resource a path names,
//! and the REST verbs on resources.

use std::time::Duration;

use serde_json::{Value, json};

use super::catalog::ResourceType;
use super::discovery;
use super::http::Request;
use super::lease;
use super::openapi;
use super::patch;
use super::select::Selector;
use super::server::Shared;
use super::status::ApiError;
use super::store::WatchFrom;

/// What a path names.
#[derive(Debug, PartialEq)]
enum Route<'a> {
    Version,
    CoreVersions,
    GroupList,
    Group(&'a str),
    ResourceList { group: &'a str, version: &'a str },
    OpenApiRoot,
    OpenApi(&'a str),
    Resource(ResourcePath<'a>),
    Unknown,
}

#[derive(Debug, PartialEq)]
struct ResourcePath<'a> {
    group: &'a str,
    version: &'a str,
    plural: &'a str,
    namespace: Option<&'a str>,
    name: Option<&'a str>,
    subresource: Option<&'a str>,
}

fn route(path: &str) -> Route<'_> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    match parts.as_slice() {
        ["version"] => Route::Version,
        ["api"] => Route::CoreVersions,
        ["api", version] => Route::ResourceList { group: "", version },
        ["api", version, rest @ ..] => resource_route("", version, rest),
        ["apis"] => Route::GroupList,
        ["apis", group] => Route::Group(group),
        ["apis", group, version] => Route::ResourceList { group, version },
        ["apis", group, version, rest @ ..] => resource_route(group, version, rest),
        ["openapi", "v3"] => Route::OpenApiRoot,
        ["openapi", "v3", ..] => {
            Route::OpenApi(path.trim_matches('/').trim_start_matches("openapi/v3/"))
        }
        _ => Route::Unknown,
    }
}

fn resource_route<'a>(group: &'a str, version: &'a str, rest: &[&'a str]) -> Route<'a> {
    let (namespace, rest) = match rest {
        // A Namespace's own status, not a resource named "status" in it.
        ["namespaces", _, "status"] => (None, rest),
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some(*ns), rest),
        _ => (None, rest),
    };
    let (plural, name, subresource) = match rest {
        [plural] => (*plural, None, None),
        [plural, name] => (*plural, Some(*name), None),
        [plural, name, sub] => (*plural, Some(*name), Some(*sub)),
        _ => return Route::Unknown,
    };
    Route::Resource(ResourcePath {
        group,
        version,
        plural,
        namespace,
        name,
        subresource,
    })
}

/// How the connection answers a request.
pub(crate) enum Reply {
    /// A whole JSON body with this status code.
    Json(u16, Value),
    /// An error: its `Status`, with its code.
    Status(ApiError),
    /// An aggregated discovery document (200, its own media type).
    AggregatedDiscovery(Value),
    /// A watch stream.
    Watch(Box<WatchPlan>),
    /// No answer at all: a Lease write of a holder the test cut off.
    Unanswered { holder: String },
}

impl From<ApiError> for Reply {
    fn from(e: ApiError) -> Reply {
        Reply::Status(e)
    }
}

/// A watch request, checked and ready to stream.
pub(crate) struct WatchPlan {
    pub resource: ResourceType,
    /// The version asked for: events carry `apiVersion` of this version.
    pub version: String,
    pub namespace: Option<String>,
    pub selector: Selector,
    pub from: WatchFrom,
    pub bookmarks: bool,
    /// `sendInitialEvents=true`: the backlog ends with a BOOKMARK annotated
    /// `k8s.io/initial-events-end`.
    pub initial_events_end: bool,
    pub timeout: Option<Duration>,
}

pub(crate) fn handle(shared: &Shared, req: &Request) -> Reply {
    match handle_inner(shared, req) {
        Ok(reply) => reply,
        Err(e) => e.into(),
    }
}

fn handle_inner(shared: &Shared, req: &Request) -> Result<Reply, ApiError> {
    let route = route(&req.path);
    if !matches!(route, Route::Resource(_)) && req.method != "GET" {
        return Err(ApiError::method_not_allowed());
    }
    let store = || shared.store.lock().expect("store lock");
    let found = |doc: Option<Value>| {
        doc.map(|d| Reply::Json(200, d))
            .ok_or_else(ApiError::no_route)
    };
    match route {
        Route::Version => Ok(Reply::Json(200, discovery::version())),
        Route::CoreVersions | Route::GroupList
            if req
                .header("accept")
                .is_some_and(discovery::wants_aggregated) =>
        {
            let core = route == Route::CoreVersions;
            Ok(Reply::AggregatedDiscovery(discovery::aggregated(
                &store().catalog,
                core,
            )))
        }
        Route::CoreVersions => Ok(Reply::Json(
            200,
            discovery::core_versions(&shared.addr.to_string()),
        )),
        Route::GroupList => Ok(Reply::Json(200, discovery::group_list(&store().catalog))),
        Route::Group(group) => found(discovery::group(&store().catalog, group)),
        Route::ResourceList { group, version } => {
            found(discovery::resource_list(&store().catalog, group, version))
        }
        Route::OpenApiRoot => Ok(Reply::Json(200, openapi::root(&store().catalog))),
        Route::OpenApi(key) => found(openapi::group_version(&store().catalog, key)),
        Route::Resource(path) => resource(shared, req, path),
        Route::Unknown => Err(ApiError::no_route()),
    }
}

fn resource(shared: &Shared, req: &Request, path: ResourcePath) -> Result<Reply, ApiError> {
    let t = shared
        .store
        .lock()
        .expect("store lock")
        .catalog
        .by_plural(path.group, path.version, path.plural)
        .cloned()
        .ok_or_else(ApiError::no_route)?;
    if path.namespace.is_some() && !t.namespaced {
        return Err(ApiError::no_route());
    }
    if path
        .subresource
        .is_some_and(|s| s != "status" || !t.has_status)
    {
        return Err(ApiError::no_route());
    }
    let ns = path.namespace;
    let version = path.version;
    match (req.method.as_str(), path.name) {
        ("GET", Some(name)) => {
            check_allowed(shared, &t, "get", ns)?;
            let obj = shared.store.lock().expect("store lock").get(&t, ns, name)?;
            Ok(Reply::Json(200, present(&t, version, &obj)))
        }
        ("GET", None) if is_true(req.param("watch")) => {
            check_allowed(shared, &t, "watch", ns)?;
            watch_plan(req, t, version, ns).map(|plan| Reply::Watch(Box::new(plan)))
        }
        ("GET", None) => {
            check_allowed(shared, &t, "list", ns)?;
            list(shared, req, &t, version, ns)
        }
        ("POST", None) => {
            let body = json_body(req)?;
            if let Some(holder) = refused_holder(shared, &t, ns, None, &body) {
                return Ok(Reply::Unanswered { holder });
            }
            if lease::is_lease(&t) {
                shared.pass_lease_gate();
            }
            let obj = shared
                .store
                .lock()
                .expect("store lock")
                .create(&t, ns, body)?;
            Ok(Reply::Json(201, present(&t, version, &obj)))
        }
        ("PUT", Some(name)) => {
            let body = json_body(req)?;
            if let Some(holder) = refused_holder(shared, &t, ns, Some(name), &body) {
                return Ok(Reply::Unanswered { holder });
            }
            if lease::is_lease(&t) {
                shared.pass_lease_gate();
            }
            let (obj, created) = shared
                .store
                .lock()
                .expect("store lock")
                .put(&t, ns, name, body)?;
            let code = if created { 201 } else { 200 };
            Ok(Reply::Json(code, present(&t, version, &obj)))
        }
        ("PATCH", Some(name)) => {
            let body: Value = serde_json::from_slice(&req.body)
                .map_err(|e| ApiError::bad_request(format!("the patch is not JSON: {e}")))?;
            let content_type = req.content_type().to_string();
            if lease::is_lease(&t) {
                // Judge the Lease as the patch would leave it.
                let stored = shared.store.lock().expect("store lock").get(&t, ns, name);
                let patched = match stored {
                    Ok(stored) => {
                        let mut obj = (*stored).clone();
                        patch::apply(&content_type, &mut obj, &body).map(|()| obj)
                    }
                    Err(_) => Ok(body.clone()),
                };
                if let Some(holder) = patched
                    .ok()
                    .and_then(|obj| refused_holder(shared, &t, ns, Some(name), &obj))
                {
                    return Ok(Reply::Unanswered { holder });
                }
            }
            let obj = shared
                .store
                .lock()
                .expect("store lock")
                .patch(&t, ns, name, |obj| patch::apply(&content_type, obj, &body))?;
            Ok(Reply::Json(200, present(&t, version, &obj)))
        }
        ("DELETE", Some(name)) => {
            let obj = shared
                .store
                .lock()
                .expect("store lock")
                .delete(&t, ns, name)?;
            Ok(Reply::Json(200, present(&t, version, &obj)))
        }
        _ => Err(ApiError::method_not_allowed()),
    }
}

/// The holder whose write of this Lease the test cut off, if any: the
/// Lease as written names a refused holder, or names none (a release) while
/// the stored one names a refused holder.
fn refused_holder(
    shared: &Shared,
    t: &ResourceType,
    ns: Option<&str>,
    name: Option<&str>,
    written: &Value,
) -> Option<String> {
    if !lease::is_lease(t) {
        return None;
    }
    let refused = |holder: &str| {
        let partition = shared.partition.lock().expect("partition lock");
        partition.refused.contains(holder)
    };
    let holder = lease::holder(written);
    if !holder.is_empty() {
        return refused(holder).then(|| holder.to_string());
    }
    let name = name.or_else(|| written.pointer("/metadata/name").and_then(Value::as_str))?;
    let ns = ns.or_else(|| {
        written
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
    });
    let stored = shared
        .store
        .lock()
        .expect("store lock")
        .get(t, Some(ns.unwrap_or("default")), name)
        .ok()?;
    let previous = lease::holder(&stored);
    (!previous.is_empty() && refused(previous)).then(|| previous.to_string())
}

/// 403 for reads of a resource the test marked forbidden.
fn check_allowed(
    shared: &Shared,
    t: &ResourceType,
    verb: &str,
    ns: Option<&str>,
) -> Result<(), ApiError> {
    let forbidden = shared.forbidden.lock().expect("forbidden lock");
    if forbidden.contains(&t.id.display_name()) {
        return Err(ApiError::forbidden(&t.id.group, &t.id.plural, verb, ns));
    }
    Ok(())
}

fn is_true(value: Option<String>) -> bool {
    matches!(value.as_deref(), Some("1" | "true"))
}

fn selector(req: &Request) -> Result<Selector, ApiError> {
    Selector::parse(
        req.param("labelSelector").as_deref(),
        req.param("fieldSelector").as_deref(),
    )
}

fn json_body(req: &Request) -> Result<Value, ApiError> {
    match req.content_type() {
        "" | "application/json" => serde_json::from_slice(&req.body)
            .map_err(|e| ApiError::bad_request(format!("the body is not JSON: {e}"))),
        other => Err(ApiError::unsupported_media_type(other)),
    }
}

/// An object as served at `version`; list items of built-in resources go
/// without `apiVersion` and `kind`, as the real server sends them.
pub(crate) fn present(t: &ResourceType, version: &str, obj: &Value) -> Value {
    present_owned(t, version, obj.clone())
}

/// [`present`], of an object already copied.
pub(crate) fn present_owned(t: &ResourceType, version: &str, mut obj: Value) -> Value {
    obj["apiVersion"] = json!(t.api_version(version));
    obj["kind"] = json!(t.kind);
    obj
}

fn list(
    shared: &Shared,
    req: &Request,
    t: &ResourceType,
    version: &str,
    ns: Option<&str>,
) -> Result<Reply, ApiError> {
    let limit = match req.param("limit").as_deref() {
        None | Some("") | Some("0") => None,
        Some(l) => Some(
            l.parse::<usize>()
                .map_err(|_| ApiError::bad_request(format!("invalid limit {l:?}")))?,
        ),
    };
    let continue_token = req.param("continue").filter(|c| !c.is_empty());
    let page = shared.store.lock().expect("store lock").list(
        t,
        ns,
        &selector(req)?,
        limit,
        continue_token.as_deref(),
    )?;
    let items: Vec<Value> = page
        .items
        .iter()
        .map(|obj| {
            let mut item = present_owned(t, version, obj.value());
            if !t.custom {
                let map = item.as_object_mut().expect("objects are JSON objects");
                map.remove("apiVersion");
                map.remove("kind");
            }
            item
        })
        .collect();
    let mut metadata = json!({"resourceVersion": page.rv.to_string()});
    if let Some(token) = page.continue_token {
        metadata["continue"] = json!(token);
    }
    if let Some(remaining) = page.remaining {
        metadata["remainingItemCount"] = json!(remaining);
    }
    Ok(Reply::Json(
        200,
        json!({
            "kind": t.list_kind,
            "apiVersion": t.api_version(version),
            "metadata": metadata,
            "items": items,
        }),
    ))
}

fn watch_plan(
    req: &Request,
    t: ResourceType,
    version: &str,
    ns: Option<&str>,
) -> Result<WatchPlan, ApiError> {
    let from = match req.param("resourceVersion").as_deref() {
        None | Some("") | Some("0") => WatchFrom::Now,
        Some(rv) => WatchFrom::After(rv.parse().map_err(|_| {
            ApiError::invalid(format!(
                "resourceVersion: Invalid value: {rv:?}: must be a number"
            ))
        })?),
    };
    let timeout = match req.param("timeoutSeconds") {
        None => None,
        Some(s) => Some(Duration::from_secs(s.parse().map_err(|_| {
            ApiError::bad_request(format!("invalid timeoutSeconds {s:?}"))
        })?)),
    };
    let initial_events_end = is_true(req.param("sendInitialEvents"));
    Ok(WatchPlan {
        version: version.to_string(),
        namespace: ns.map(String::from),
        selector: selector(req)?,
        from: if initial_events_end {
            WatchFrom::Now
        } else {
            from
        },
        bookmarks: is_true(req.param("allowWatchBookmarks")),
        initial_events_end,
        timeout,
        resource: t,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_namespaced_and_cluster_paths() {
        let r = |group, version, plural, namespace, name, subresource| {
            Route::Resource(ResourcePath {
                group,
                version,
                plural,
                namespace,
                name,
                subresource,
            })
        };
        assert_eq!(route("/api/v1/pods"), r("", "v1", "pods", None, None, None));
        assert_eq!(
            route("/api/v1/namespaces"),
            r("", "v1", "namespaces", None, None, None)
        );
        assert_eq!(
            route("/api/v1/namespaces/kube-system"),
            r("", "v1", "namespaces", None, Some("kube-system"), None)
        );
        assert_eq!(
            route("/api/v1/namespaces/ns1/pods"),
            r("", "v1", "pods", Some("ns1"), None, None)
        );
        assert_eq!(
            route("/apis/apps/v1/namespaces/ns1/deployments/web/status"),
            r(
                "apps",
                "v1",
                "deployments",
                Some("ns1"),
                Some("web"),
                Some("status")
            )
        );
        assert_eq!(
            route("/apis/apps/v1"),
            Route::ResourceList {
                group: "apps",
                version: "v1"
            }
        );
        assert_eq!(route("/openapi/v2"), Route::Unknown);
    }
}
