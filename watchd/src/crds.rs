//! Custom resources (SPEC §4): watchd watches the CRDs themselves, and for
//! every CRD that is `Established` (present at start or created later)
//! watches its objects at the CRD's storage version, until the CRD is
//! deleted.
//!
//! The watched resource is built from the CRD (group, storage version,
//! plural, kind, scope) rather than from API discovery, which fails as a
//! whole when one aggregated API group is unavailable.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::api::Api;
use kube::runtime::watcher;
use serde_json::Value;
use shared::retry::Backoff;
use tokio::task::{AbortHandle, JoinSet};

use crate::kube_thread::{REFUSED_RETRY, WatchMsg, WatcherCtx, api_resource, watch_target};
use crate::raw::RawObject;
use crate::rbac;
use crate::resources::{Route, Target};
use crate::status::WatcherState;

/// CRDs per list page. A CRD carries its OpenAPI schema (often 100 KB to
/// 1 MB of JSON), and the page is held as text ([`RawObject`]) while its
/// CRDs are looked at, one parsed at a time.
const CRD_PAGE_SIZE: u32 = 25;

/// The CRDs' own resource.
fn crd_resource() -> Target {
    Target {
        group: "apiextensions.k8s.io".into(),
        version: "v1".into(),
        plural: "customresourcedefinitions".into(),
        kind: "CustomResourceDefinition".into(),
        namespaced: false,
        route: Route::Resources,
    }
}

/// The resource a CRD defines, at its storage version; `None` when the CRD
/// lacks a field a resource needs.
pub fn crd_target(crd: &Value) -> Option<Target> {
    let spec = crd.get("spec")?;
    let names = spec.get("names")?;
    let versions = spec.get("versions")?.as_array()?;
    let storage = versions
        .iter()
        .find(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
        .or_else(|| {
            versions
                .iter()
                .find(|v| v.get("served").and_then(Value::as_bool) == Some(true))
        })?;
    Some(Target {
        group: spec.get("group")?.as_str()?.to_string(),
        version: storage.get("name")?.as_str()?.to_string(),
        plural: names.get("plural")?.as_str()?.to_string(),
        kind: names.get("kind")?.as_str()?.to_string(),
        namespaced: spec.get("scope").and_then(Value::as_str) != Some("Cluster"),
        route: Route::CustomResources,
    })
}

/// True when the CRD's `Established` condition is `True`: its objects can
/// be listed.
pub fn is_established(crd: &Value) -> bool {
    crd.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|conditions| {
            conditions.iter().any(|c| {
                c.get("type").and_then(Value::as_str) == Some("Established")
                    && c.get("status").and_then(Value::as_str) == Some("True")
            })
        })
}

/// The watchers of custom resources, by CRD name.
struct Running {
    tasks: JoinSet<()>,
    by_crd: HashMap<String, (Arc<Target>, AbortHandle)>,
}

impl Running {
    fn start(&mut self, ctx: &WatcherCtx, crd: &str, target: Target) {
        let target = Arc::new(target);
        log::info!(
            "watching custom resource {} at {} (CRD {crd})",
            target.name(),
            target.api_version()
        );
        ctx.status.set(&target.name(), WatcherState::Listing);
        let handle = self.tasks.spawn(watch_target(ctx.clone(), target.clone()));
        self.by_crd.insert(crd.to_string(), (target, handle));
    }

    /// Stops the watcher of `crd`; with `gone`, its objects are reported
    /// deleted (the CRD itself was deleted).
    async fn stop(&mut self, ctx: &WatcherCtx, crd: &str, gone: bool) {
        let Some((target, handle)) = self.by_crd.remove(crd) else {
            return;
        };
        // Single-threaded runtime: the task is not running now, and once
        // aborted it never runs again, so nothing it sent can follow.
        handle.abort();
        ctx.status.remove(&target.name());
        log::info!("stopped watching {} (CRD {crd})", target.name());
        if gone {
            let _ = ctx.tx.send(WatchMsg::Stopped(target)).await;
        }
    }

    fn target(&self, crd: &str) -> Option<&Target> {
        self.by_crd.get(crd).map(|(t, _)| t.as_ref())
    }
}

/// Watches the CRDs and keeps one watcher per established, not excluded
/// CRD. Dropping this task's future stops every watcher it started.
pub async fn watch_crds(ctx: WatcherCtx, exclude: Vec<String>) {
    let crds = crd_resource();
    let api: Api<RawObject> = Api::all_with(ctx.client.clone(), &api_resource(&crds));
    let config = watcher::Config::default().page_size(CRD_PAGE_SIZE);
    let mut events = std::pin::pin!(watcher(api, config));
    let mut running = Running {
        tasks: JoinSet::new(),
        by_crd: HashMap::new(),
    };
    let mut listed: Option<HashSet<String>> = None;
    let mut first_list_done = false;
    let mut backoff = Backoff::new();
    let mut forbidden = false;
    while let Some(event) = events.next().await {
        match event {
            Ok(watcher::Event::Init) => listed = Some(HashSet::new()),
            Ok(watcher::Event::InitApply(crd) | watcher::Event::Apply(crd)) => {
                let Some((name, crd)) = parse(&crd) else {
                    continue;
                };
                if let Some(seen) = listed.as_mut() {
                    seen.insert(name.clone());
                }
                reconcile(&ctx, &mut running, &name, &crd, &exclude).await;
            }
            Ok(watcher::Event::InitDone) => {
                backoff.reset();
                forbidden = false;
                let seen = listed.take().unwrap_or_default();
                let vanished: Vec<String> = running
                    .by_crd
                    .keys()
                    .filter(|n| !seen.contains(*n))
                    .cloned()
                    .collect();
                for crd in vanished {
                    running.stop(&ctx, &crd, true).await;
                }
                if !first_list_done {
                    first_list_done = true;
                    ctx.status.crds_listed();
                }
            }
            Ok(watcher::Event::Delete(crd)) => {
                if let Some((name, _)) = parse(&crd) {
                    running.stop(&ctx, &name, true).await;
                }
            }
            Err(error) => {
                let wait = if is_forbidden(&error) {
                    if !forbidden {
                        log::warn!(
                            "{} (custom resources are not watched meanwhile)",
                            rbac::forbidden_message(&crds, REFUSED_RETRY.as_secs() / 60)
                        );
                        forbidden = true;
                    }
                    // Readiness must not wait for what is not permitted.
                    if !first_list_done {
                        first_list_done = true;
                        ctx.status.crds_listed();
                    }
                    REFUSED_RETRY
                } else {
                    let wait = backoff.next_delay(None);
                    log::warn!("customresourcedefinitions: {error}; retrying in {wait:.1?}");
                    wait
                };
                tokio::time::sleep(wait.max(Duration::from_millis(100))).await;
            }
        }
    }
}

/// Starts, restarts (storage version changed) or stops the watcher of one
/// CRD after it was listed, added or modified.
async fn reconcile(
    ctx: &WatcherCtx,
    running: &mut Running,
    crd: &str,
    data: &Value,
    exclude: &[String],
) {
    let wanted = crd_target(data).filter(|t| is_established(data) && !t.is_excluded(exclude));
    match wanted {
        Some(target) => {
            if running.target(crd) == Some(&target) {
                return;
            }
            running.stop(ctx, crd, false).await;
            running.start(ctx, crd, target);
        }
        None => {
            if let Some(t) = crd_target(data)
                && t.is_excluded(exclude)
            {
                log::debug!("{}: excluded by WATCHD_EXCLUDE", t.name());
            }
            running.stop(ctx, crd, false).await;
        }
    }
}

/// A CRD's name and the CRD; `None` (logged) if it is not JSON, which the
/// kube client would have refused already.
fn parse(crd: &RawObject) -> Option<(String, Value)> {
    match crd.to_value() {
        Ok(crd) => {
            let name = crd
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            Some((name, crd))
        }
        Err(e) => {
            log::error!("customresourcedefinitions: cannot parse a CRD: {e}");
            None
        }
    }
}

fn is_forbidden(error: &watcher::Error) -> bool {
    matches!(
        error,
        watcher::Error::InitialListFailed(kube::Error::Api(s))
            | watcher::Error::WatchStartFailed(kube::Error::Api(s))
            | watcher::Error::WatchFailed(kube::Error::Api(s)) if s.code == 403
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn crd(storage_first: bool) -> Value {
        json!({
            "spec": {
                "group": "example.com", "scope": "Cluster",
                "names": {"plural": "widgets", "kind": "Widget"},
                "versions": [
                    {"name": "v1beta1", "served": true, "storage": storage_first},
                    {"name": "v1", "served": true, "storage": !storage_first}
                ]
            },
            "status": {"conditions": [{"type": "NamesAccepted", "status": "True"}, {"type": "Established", "status": "True"}]}
        })
    }

    #[test]
    fn the_storage_version_is_watched_even_when_not_first() {
        let t = crd_target(&crd(false)).expect("complete CRD");
        assert_eq!(t.api_version(), "example.com/v1");
        assert_eq!(t.name(), "widgets.example.com");
        assert!(!t.namespaced);
        assert_eq!(t.route, Route::CustomResources);
        assert_eq!(crd_target(&crd(true)).expect("complete").version, "v1beta1");
    }

    #[test]
    fn established_needs_the_condition_true() {
        assert!(is_established(&crd(false)));
        let mut c = crd(false);
        c["status"]["conditions"][1]["status"] = json!("False");
        assert!(!is_established(&c));
        assert!(!is_established(&json!({"spec": {}})));
    }
}
