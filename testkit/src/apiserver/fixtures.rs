//! Loading recorded objects (`{"event_type", "json"}` record files) into a
//! server.

use std::io;
use std::path::Path;

use serde_json::{Value, json};

use super::ApiServer;
use super::catalog::split_api_version;

pub(crate) fn load(server: &ApiServer, dir: &Path) -> io::Result<usize> {
    let mut files: Vec<_> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    let mut loaded = 0;
    for file in files {
        let text = std::fs::read_to_string(&file)?;
        let record: Value = serde_json::from_str(&text).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {e}", file.display()),
            )
        })?;
        let event_type = record
            .get("event_type")
            .and_then(Value::as_str)
            .unwrap_or("");
        let Some(obj) = record
            .get("json")
            .filter(|_| matches!(event_type, "apply" | "initapply"))
        else {
            continue;
        };
        if upsert(server, obj.clone()) {
            loaded += 1;
        }
    }
    Ok(loaded)
}

/// Creates or replaces `obj`; `false` if it lacks what an object needs.
fn upsert(server: &ApiServer, mut obj: Value) -> bool {
    let (Some(api_version), Some(kind), Some(name)) = (
        obj.get("apiVersion")
            .and_then(Value::as_str)
            .map(String::from),
        obj.get("kind").and_then(Value::as_str).map(String::from),
        obj.pointer("/metadata/name")
            .and_then(Value::as_str)
            .map(String::from),
    ) else {
        return false;
    };
    let ns = obj
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .map(String::from);
    let served = server
        .shared()
        .store
        .lock()
        .expect("store lock")
        .catalog
        .by_kind(&api_version, &kind)
        .is_some();
    if !served {
        server.create(crd_for(&api_version, &kind, ns.is_some()));
    }
    let meta = obj["metadata"]
        .as_object_mut()
        .expect("has a name, so an object");
    // Recorded uids are placeholders shared by unrelated objects.
    meta.remove("uid");
    meta.remove("resourceVersion");
    if let Some(current) = server.get(&api_version, &kind, ns.as_deref(), &name) {
        // The recorded object wins, whatever was stored (a replace of some
        // kinds, Leases, must name the version it replaces).
        meta.insert(
            "resourceVersion".into(),
            current["metadata"]["resourceVersion"].clone(),
        );
        server.replace(obj);
    } else {
        server.create(obj);
    }
    true
}

/// A minimal CRD serving `kind` at `api_version`.
fn crd_for(api_version: &str, kind: &str, namespaced: bool) -> Value {
    let (group, version) = split_api_version(api_version);
    let plural = format!("{}s", kind.to_lowercase());
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("{plural}.{group}")},
        "spec": {
            "group": group,
            "names": {"plural": plural, "singular": kind.to_lowercase(), "kind": kind},
            "scope": if namespaced { "Namespaced" } else { "Cluster" },
            "versions": [{
                "name": version, "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}
            }]
        }
    })
}
