//! Just enough OpenAPI v3 for kubectl: `/openapi/v3` lists a document per
//! group-version, and each document declares the PATCH operation of every
//! kind with its `fieldValidation` parameter. kubectl apply/create then
//! leave validation to the server (`fieldValidation=Strict`, which this
//! server does not check) instead of failing to download schemas. There
//! are no schemas: kubectl falls back to its built-in types for patches.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};

use serde_json::{Map, Value, json};

use super::catalog::Catalog;

/// `api/v1` or `apis/<group>/<version>`: the key kubectl looks up.
fn gv_key(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// `/openapi/v3`: where each group-version's document is.
pub(crate) fn root(catalog: &Catalog) -> Value {
    let mut paths = Map::new();
    for (group, versions) in catalog.groups() {
        for version in versions {
            let key = gv_key(&group, &version);
            let Some(doc) = group_version(catalog, &key) else {
                continue;
            };
            // The hash names the content, so kubectl's cache stays right
            // when CRDs change the document.
            let mut hasher = DefaultHasher::new();
            doc.to_string().hash(&mut hasher);
            let url = format!("/openapi/v3/{key}?hash={:016X}", hasher.finish());
            paths.insert(key, json!({"serverRelativeURL": url}));
        }
    }
    json!({"paths": paths})
}

/// `/openapi/v3/<gv key>`, or `None` if no resource is served there.
pub(crate) fn group_version(catalog: &Catalog, key: &str) -> Option<Value> {
    let mut paths = Map::new();
    for (group, versions) in catalog.groups() {
        for version in versions.iter().filter(|v| gv_key(&group, v) == key) {
            for t in catalog
                .all()
                .filter(|t| t.id.group == group && t.serves(version))
            {
                let prefix = format!("/{key}");
                let path = if t.namespaced {
                    format!("{prefix}/namespaces/{{namespace}}/{}/{{name}}", t.id.plural)
                } else {
                    format!("{prefix}/{}/{{name}}", t.id.plural)
                };
                let patch = json!({"patch": {
                    "operationId": format!("patch{}", t.kind),
                    "x-kubernetes-action": "patch",
                    "x-kubernetes-group-version-kind": {"group": group, "version": version, "kind": t.kind},
                    "parameters": [
                        {"name": "dryRun", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
                        {"name": "fieldManager", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
                        {"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
                        {"name": "force", "in": "query", "schema": {"type": "boolean", "uniqueItems": true}}
                    ],
                    "responses": {"200": {"description": "OK"}}
                }});
                paths.insert(path, patch);
            }
        }
    }
    if paths.is_empty() {
        return None;
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.32.4"},
        "paths": paths,
        "components": {"schemas": {}},
    }))
}
