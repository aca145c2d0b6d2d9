//! Which resources the server serves: the built-in kinds, plus one entry per
//! CustomResourceDefinition stored.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use serde_json::Value;

/// The storage identity of a resource: objects of all served versions of a
/// resource share one store, keyed by group and plural.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct ResourceId {
    pub group: String,
    pub plural: String,
}

impl ResourceId {
    pub fn new(group: &str, plural: &str) -> ResourceId {
        ResourceId {
            group: group.to_string(),
            plural: plural.to_string(),
        }
    }

    /// kubectl's `plural[.group]` form, e.g. `pods`, `deployments.apps`.
    pub fn display_name(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }
}

/// One resource as discovery describes it.
#[derive(Clone, Debug)]
pub(crate) struct ResourceType {
    pub id: ResourceId,
    /// Served versions, highest priority first.
    pub versions: Vec<String>,
    pub storage_version: String,
    pub singular: String,
    pub kind: String,
    pub list_kind: String,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    pub namespaced: bool,
    /// Whether `<plural>/status` is served (same object, see module docs).
    pub has_status: bool,
    /// Defined by a CRD: list items keep `apiVersion`/`kind` (the real server
    /// serves custom resources as unstructured objects, which always carry
    /// them), and deleting the CRD deletes the objects.
    pub custom: bool,
}

impl ResourceType {
    /// `group/version`, or `version` for the core group.
    pub fn api_version(&self, version: &str) -> String {
        api_version(&self.id.group, version)
    }

    pub fn serves(&self, version: &str) -> bool {
        self.versions.iter().any(|v| v == version)
    }

    /// A CRD's resource, or `None` when the CRD lacks what a resource needs.
    pub fn from_crd(crd: &Value) -> Option<ResourceType> {
        let spec = crd.get("spec")?;
        let group = spec.get("group")?.as_str()?;
        let names = spec.get("names")?;
        let plural = names.get("plural")?.as_str()?;
        let kind = names.get("kind")?.as_str()?;
        let strings = |v: Option<&Value>| -> Vec<String> {
            v.and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default()
        };
        let mut versions = Vec::new();
        let mut storage_version = None;
        let mut has_status = false;
        for v in spec.get("versions")?.as_array()? {
            let name = v.get("name")?.as_str()?;
            if v.get("storage").and_then(Value::as_bool) == Some(true) {
                storage_version = Some(name.to_string());
            }
            if v.get("served").and_then(Value::as_bool) == Some(true) {
                versions.push(name.to_string());
                has_status |= v.pointer("/subresources/status").is_some();
            }
        }
        versions.sort_by(|a, b| compare_versions(a, b));
        Some(ResourceType {
            id: ResourceId::new(group, plural),
            storage_version: storage_version.or_else(|| versions.first().cloned())?,
            versions,
            singular: names
                .get("singular")
                .and_then(Value::as_str)
                .map(String::from)
                .unwrap_or_else(|| kind.to_lowercase()),
            kind: kind.to_string(),
            list_kind: names
                .get("listKind")
                .and_then(Value::as_str)
                .map(String::from)
                .unwrap_or_else(|| format!("{kind}List")),
            short_names: strings(names.get("shortNames")),
            categories: strings(names.get("categories")),
            namespaced: spec.get("scope").and_then(Value::as_str) != Some("Cluster"),
            has_status,
            custom: true,
        })
    }
}

pub(crate) fn api_version(group: &str, version: &str) -> String {
    if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    }
}

/// Splits an `apiVersion` into group and version (`v1` is the core group).
pub(crate) fn split_api_version(api_version: &str) -> (&str, &str) {
    api_version.rsplit_once('/').unwrap_or(("", api_version))
}

/// Kubernetes' version priority: GA before beta before alpha, higher numbers
/// first, anything else after, alphabetically.
pub(crate) fn compare_versions(a: &str, b: &str) -> Ordering {
    fn rank(v: &str) -> Option<(u8, u64, u64)> {
        let rest = v.strip_prefix('v')?;
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let major: u64 = rest[..digits].parse().ok()?;
        let tail = &rest[digits..];
        let (stage, minor) = if tail.is_empty() {
            (3, 0)
        } else if let Some(n) = tail.strip_prefix("beta") {
            (2, n.parse().ok()?)
        } else if let Some(n) = tail.strip_prefix("alpha") {
            (1, n.parse().ok()?)
        } else {
            return None;
        };
        Some((stage, major, minor))
    }
    match (rank(a), rank(b)) {
        (Some(x), Some(y)) => y.cmp(&x),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => a.cmp(b),
    }
}

/// The built-in groups in the order the real server lists them.
const BUILTIN_GROUPS: &[&str] = &[
    "",
    "apps",
    "coordination.k8s.io",
    "networking.k8s.io",
    "rbac.authorization.k8s.io",
    "storage.k8s.io",
    "apiextensions.k8s.io",
];

/// (group, plural, singular, kind, namespaced, has status, short names, categories)
type Builtin = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    bool,
    bool,
    &'static [&'static str],
    &'static [&'static str],
);

#[rustfmt::skip]
const BUILTINS: &[Builtin] = &[
    ("", "configmaps", "configmap", "ConfigMap", true, false, &["cm"], &[]),
    ("", "events", "event", "Event", true, false, &["ev"], &[]),
    ("", "namespaces", "namespace", "Namespace", false, true, &["ns"], &[]),
    ("", "nodes", "node", "Node", false, true, &["no"], &[]),
    ("", "pods", "pod", "Pod", true, true, &["po"], &["all"]),
    ("", "secrets", "secret", "Secret", true, false, &[], &[]),
    ("", "serviceaccounts", "serviceaccount", "ServiceAccount", true, false, &["sa"], &[]),
    ("", "services", "service", "Service", true, true, &["svc"], &["all"]),
    ("apps", "daemonsets", "daemonset", "DaemonSet", true, true, &["ds"], &["all"]),
    ("apps", "deployments", "deployment", "Deployment", true, true, &["deploy"], &["all"]),
    ("apps", "replicasets", "replicaset", "ReplicaSet", true, true, &["rs"], &["all"]),
    ("apps", "statefulsets", "statefulset", "StatefulSet", true, true, &["sts"], &["all"]),
    ("coordination.k8s.io", "leases", "lease", "Lease", true, false, &[], &[]),
    ("networking.k8s.io", "ingresses", "ingress", "Ingress", true, true, &["ing"], &[]),
    ("rbac.authorization.k8s.io", "clusterrolebindings", "clusterrolebinding", "ClusterRoleBinding", false, false, &[], &[]),
    ("rbac.authorization.k8s.io", "clusterroles", "clusterrole", "ClusterRole", false, false, &[], &[]),
    ("rbac.authorization.k8s.io", "rolebindings", "rolebinding", "RoleBinding", true, false, &[], &[]),
    ("rbac.authorization.k8s.io", "roles", "role", "Role", true, false, &[], &[]),
    ("storage.k8s.io", "storageclasses", "storageclass", "StorageClass", false, false, &["sc"], &[]),
    ("apiextensions.k8s.io", "customresourcedefinitions", "customresourcedefinition", "CustomResourceDefinition", false, true, &["crd", "crds"], &["api-extensions"]),
];

/// The resources served right now.
pub(crate) struct Catalog {
    builtin: Vec<ResourceType>,
    /// By CRD name (`<plural>.<group>`).
    custom: BTreeMap<String, ResourceType>,
}

impl Catalog {
    pub fn new() -> Catalog {
        let builtin = BUILTINS
            .iter()
            .map(
                |&(group, plural, singular, kind, namespaced, has_status, short, cats)| {
                    ResourceType {
                        id: ResourceId::new(group, plural),
                        versions: vec!["v1".to_string()],
                        storage_version: "v1".to_string(),
                        singular: singular.to_string(),
                        kind: kind.to_string(),
                        list_kind: format!("{kind}List"),
                        short_names: short.iter().map(|s| s.to_string()).collect(),
                        categories: cats.iter().map(|s| s.to_string()).collect(),
                        namespaced,
                        has_status,
                        custom: false,
                    }
                },
            )
            .collect();
        Catalog {
            builtin,
            custom: BTreeMap::new(),
        }
    }

    /// Every resource: built-in ones first, then custom ones by CRD name.
    pub fn all(&self) -> impl Iterator<Item = &ResourceType> {
        self.builtin.iter().chain(self.custom.values())
    }

    /// The resource served at `group/version` under `plural`.
    pub fn by_plural(&self, group: &str, version: &str, plural: &str) -> Option<&ResourceType> {
        self.all()
            .find(|t| t.id.group == group && t.id.plural == plural && t.serves(version))
    }

    /// The resource of objects with this `apiVersion` and `kind`.
    pub fn by_kind(&self, api_version: &str, kind: &str) -> Option<&ResourceType> {
        let (group, version) = split_api_version(api_version);
        self.all()
            .find(|t| t.id.group == group && t.kind == kind && t.serves(version))
    }

    pub fn set_crd(&mut self, crd_name: &str, crd: &Value) {
        match ResourceType::from_crd(crd) {
            Some(t) => self.custom.insert(crd_name.to_string(), t),
            None => self.custom.remove(crd_name),
        };
    }

    pub fn remove_crd(&mut self, crd_name: &str) -> Option<ResourceType> {
        self.custom.remove(crd_name)
    }

    /// Groups with their served versions (highest priority first), in the
    /// real server's order: built-in groups, then custom groups by name.
    pub fn groups(&self) -> Vec<(String, Vec<String>)> {
        let mut groups: Vec<(String, Vec<String>)> = BUILTIN_GROUPS
            .iter()
            .map(|g| (g.to_string(), vec!["v1".to_string()]))
            .collect();
        let mut custom: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for t in self.custom.values() {
            if BUILTIN_GROUPS.contains(&t.id.group.as_str()) {
                continue;
            }
            let versions = custom.entry(&t.id.group).or_default();
            for v in &t.versions {
                if !versions.contains(v) {
                    versions.push(v.clone());
                }
            }
        }
        for (group, mut versions) in custom {
            versions.sort_by(|a, b| compare_versions(a, b));
            groups.push((group.to_string(), versions));
        }
        groups
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_sort_like_kubernetes() {
        let mut v = vec![
            "v1alpha1", "v2beta1", "v1", "foo", "v2", "v1beta2", "v1beta1",
        ];
        v.sort_by(|a, b| compare_versions(a, b));
        assert_eq!(
            v,
            [
                "v2", "v1", "v2beta1", "v1beta2", "v1beta1", "v1alpha1", "foo"
            ]
        );
    }

    #[test]
    fn crd_resource_serves_its_served_versions_and_marks_storage() {
        let crd = serde_json::json!({"spec": {
            "group": "example.com", "scope": "Namespaced",
            "names": {"plural": "widgets", "kind": "Widget", "shortNames": ["wd"]},
            "versions": [
                {"name": "v1beta1", "served": true, "storage": false},
                {"name": "v1", "served": true, "storage": true},
                {"name": "v0", "served": false, "storage": false}
            ]
        }});
        let t = ResourceType::from_crd(&crd).expect("valid CRD");
        assert_eq!(t.versions, ["v1", "v1beta1"]);
        assert_eq!(t.storage_version, "v1");
        assert_eq!(t.singular, "widget");
        assert_eq!(t.list_kind, "WidgetList");
        assert!(t.namespaced);
    }
}
