//! Which resources watchd watches, and where their records go.
//!
//! The built-in table names every built-in resource `WATCHD_RESOURCES` may
//! ask for, in kubectl's `plural[.group]` form; the default set is the
//! original daemon's (SPEC §4). Secrets are not in the table and are refused
//! by name: watchd never reads them.

use std::fmt;

/// The intake route a record is posted to (SPEC §1): `Resources` for
/// built-in kinds, `CustomResources` for objects of CRDs, `Events` for
/// core/v1 Events only.
pub use shared::intake::Route;

/// One resource to watch: everything needed to list and watch it and to
/// label its objects.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Target {
    /// API group, empty for the core group.
    pub group: String,
    /// The version watched (a CRD's storage version).
    pub version: String,
    pub plural: String,
    pub kind: String,
    pub namespaced: bool,
    pub route: Route,
}

impl Target {
    /// kubectl's `plural[.group]` form: `pods`, `deployments.apps`.
    pub fn name(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// `group/version`, or `version` for the core group.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// Whether `WATCHD_EXCLUDE` names this resource, by `plural[.group]`
    /// (exact) or by kind (any case).
    pub fn is_excluded(&self, exclude: &[String]) -> bool {
        let name = self.name();
        exclude
            .iter()
            .any(|e| *e == name || e.eq_ignore_ascii_case(&self.kind))
    }
}

/// (plural, group, version, kind, namespaced, in the default set)
type Builtin = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    bool,
    bool,
);

/// Every built-in resource watchd knows. The `true` ones are watched by
/// default (SPEC §4).
const BUILTINS: &[Builtin] = &[
    ("pods", "", "v1", "Pod", true, true),
    ("deployments", "apps", "v1", "Deployment", true, true),
    ("replicasets", "apps", "v1", "ReplicaSet", true, true),
    ("daemonsets", "apps", "v1", "DaemonSet", true, true),
    ("statefulsets", "apps", "v1", "StatefulSet", true, true),
    ("services", "", "v1", "Service", true, true),
    ("namespaces", "", "v1", "Namespace", false, true),
    ("nodes", "", "v1", "Node", false, true),
    (
        "ingresses",
        "networking.k8s.io",
        "v1",
        "Ingress",
        true,
        true,
    ),
    ("serviceaccounts", "", "v1", "ServiceAccount", true, true),
    (
        "roles",
        "rbac.authorization.k8s.io",
        "v1",
        "Role",
        true,
        true,
    ),
    (
        "clusterroles",
        "rbac.authorization.k8s.io",
        "v1",
        "ClusterRole",
        false,
        true,
    ),
    (
        "clusterrolebindings",
        "rbac.authorization.k8s.io",
        "v1",
        "ClusterRoleBinding",
        false,
        true,
    ),
    (
        "storageclasses",
        "storage.k8s.io",
        "v1",
        "StorageClass",
        false,
        true,
    ),
    ("events", "", "v1", "Event", true, true),
    // Known, not watched by default.
    ("configmaps", "", "v1", "ConfigMap", true, false),
    ("endpoints", "", "v1", "Endpoints", true, false),
    ("limitranges", "", "v1", "LimitRange", true, false),
    (
        "persistentvolumeclaims",
        "",
        "v1",
        "PersistentVolumeClaim",
        true,
        false,
    ),
    (
        "persistentvolumes",
        "",
        "v1",
        "PersistentVolume",
        false,
        false,
    ),
    (
        "replicationcontrollers",
        "",
        "v1",
        "ReplicationController",
        true,
        false,
    ),
    ("resourcequotas", "", "v1", "ResourceQuota", true, false),
    (
        "controllerrevisions",
        "apps",
        "v1",
        "ControllerRevision",
        true,
        false,
    ),
    (
        "horizontalpodautoscalers",
        "autoscaling",
        "v2",
        "HorizontalPodAutoscaler",
        true,
        false,
    ),
    ("cronjobs", "batch", "v1", "CronJob", true, false),
    ("jobs", "batch", "v1", "Job", true, false),
    ("leases", "coordination.k8s.io", "v1", "Lease", true, false),
    (
        "endpointslices",
        "discovery.k8s.io",
        "v1",
        "EndpointSlice",
        true,
        false,
    ),
    (
        "ingressclasses",
        "networking.k8s.io",
        "v1",
        "IngressClass",
        false,
        false,
    ),
    (
        "networkpolicies",
        "networking.k8s.io",
        "v1",
        "NetworkPolicy",
        true,
        false,
    ),
    (
        "runtimeclasses",
        "node.k8s.io",
        "v1",
        "RuntimeClass",
        false,
        false,
    ),
    (
        "poddisruptionbudgets",
        "policy",
        "v1",
        "PodDisruptionBudget",
        true,
        false,
    ),
    (
        "rolebindings",
        "rbac.authorization.k8s.io",
        "v1",
        "RoleBinding",
        true,
        false,
    ),
    (
        "priorityclasses",
        "scheduling.k8s.io",
        "v1",
        "PriorityClass",
        false,
        false,
    ),
    (
        "csidrivers",
        "storage.k8s.io",
        "v1",
        "CSIDriver",
        false,
        false,
    ),
    ("csinodes", "storage.k8s.io", "v1", "CSINode", false, false),
    (
        "volumeattachments",
        "storage.k8s.io",
        "v1",
        "VolumeAttachment",
        false,
        false,
    ),
    (
        "customresourcedefinitions",
        "apiextensions.k8s.io",
        "v1",
        "CustomResourceDefinition",
        false,
        false,
    ),
    (
        "mutatingwebhookconfigurations",
        "admissionregistration.k8s.io",
        "v1",
        "MutatingWebhookConfiguration",
        false,
        false,
    ),
    (
        "validatingwebhookconfigurations",
        "admissionregistration.k8s.io",
        "v1",
        "ValidatingWebhookConfiguration",
        false,
        false,
    ),
];

fn target(b: &Builtin) -> Target {
    let &(plural, group, version, kind, namespaced, _) = b;
    let route = if group.is_empty() && plural == "events" {
        Route::Events
    } else {
        Route::Resources
    };
    Target {
        group: group.to_string(),
        version: version.to_string(),
        plural: plural.to_string(),
        kind: kind.to_string(),
        namespaced,
        route,
    }
}

/// The built-in resources watched when `WATCHD_RESOURCES` is unset.
pub fn default_targets() -> Vec<Target> {
    BUILTINS.iter().filter(|b| b.5).map(target).collect()
}

/// Why a `WATCHD_RESOURCES` value was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum ResourcesError {
    /// Secrets were asked for: watchd never reads them.
    Secrets,
    /// A name that is not a built-in resource watchd knows.
    Unknown(String),
    /// Nothing left after splitting on commas.
    Empty,
}

impl fmt::Display for ResourcesError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResourcesError::Secrets => f.write_str(
                "secrets are never read or shipped by watchd; remove them from the list",
            ),
            ResourcesError::Unknown(name) => write!(
                f,
                "unknown resource {name:?}: use kubectl's plural[.group] form of a built-in resource (e.g. pods, deployments.apps, ingresses.networking.k8s.io); custom resources are watched without being listed"
            ),
            ResourcesError::Empty => f.write_str("no resource named"),
        }
    }
}

impl std::error::Error for ResourcesError {}

/// Parses `WATCHD_RESOURCES`: comma-separated `plural[.group]` names of
/// built-in resources. `secrets` (in any spelling kubectl accepts) is an
/// error, as is a name not in the table. Duplicates are kept once.
pub fn parse_resources(value: &str) -> Result<Vec<Target>, ResourcesError> {
    let mut targets: Vec<Target> = Vec::new();
    for name in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let name = name.to_ascii_lowercase();
        if matches!(
            name.as_str(),
            "secrets" | "secret" | "secrets.v1" | "secrets.core"
        ) {
            return Err(ResourcesError::Secrets);
        }
        let (plural, group) = name.split_once('.').unwrap_or((&name, ""));
        // kubectl accepts `pods.core`/`pods.v1` style for the core group too.
        let group = if group == "core" || group == "v1" {
            ""
        } else {
            group
        };
        let found = BUILTINS
            .iter()
            .find(|b| b.0 == plural && b.1 == group)
            .ok_or_else(|| ResourcesError::Unknown(name.clone()))?;
        let t = target(found);
        if !targets.contains(&t) {
            targets.push(t);
        }
    }
    if targets.is_empty() {
        return Err(ResourcesError::Empty);
    }
    Ok(targets)
}

/// Parses `WATCHD_EXCLUDE`: comma-separated kinds or `plural[.group]` names.
pub fn parse_exclude(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_set_is_the_original_one() {
        let names: Vec<String> = default_targets().iter().map(Target::name).collect();
        assert_eq!(
            names,
            [
                "pods",
                "deployments.apps",
                "replicasets.apps",
                "daemonsets.apps",
                "statefulsets.apps",
                "services",
                "namespaces",
                "nodes",
                "ingresses.networking.k8s.io",
                "serviceaccounts",
                "roles.rbac.authorization.k8s.io",
                "clusterroles.rbac.authorization.k8s.io",
                "clusterrolebindings.rbac.authorization.k8s.io",
                "storageclasses.storage.k8s.io",
                "events",
            ]
        );
        let events = default_targets()
            .into_iter()
            .find(|t| t.kind == "Event")
            .expect("events");
        assert_eq!(events.route, Route::Events);
        assert!(
            default_targets()
                .iter()
                .filter(|t| t.kind != "Event")
                .all(|t| t.route == Route::Resources)
        );
    }

    #[test]
    fn kubectl_names_parse() {
        let t = parse_resources(
            " pods, deployments.apps,ingresses.networking.k8s.io,leases.coordination.k8s.io,pods",
        )
        .expect("valid");
        let names: Vec<String> = t.iter().map(Target::name).collect();
        assert_eq!(
            names,
            [
                "pods",
                "deployments.apps",
                "ingresses.networking.k8s.io",
                "leases.coordination.k8s.io"
            ]
        );
        assert_eq!(t[1].api_version(), "apps/v1");
        assert_eq!(t[0].api_version(), "v1");
        assert_eq!(parse_resources("Nodes").expect("valid")[0].kind, "Node");
    }

    #[test]
    fn secrets_are_refused() {
        for v in ["secrets", "pods,secrets", "SECRETS", "secrets.v1", "secret"] {
            assert_eq!(parse_resources(v), Err(ResourcesError::Secrets), "{v}");
        }
    }

    #[test]
    fn unknown_names_are_errors() {
        assert_eq!(
            parse_resources("pods,widgets"),
            Err(ResourcesError::Unknown("widgets".into()))
        );
        assert_eq!(
            parse_resources("deployments"),
            Err(ResourcesError::Unknown("deployments".into()))
        );
        assert_eq!(parse_resources(" , "), Err(ResourcesError::Empty));
        // events.k8s.io Events crash the backend's processor (SPEC §1).
        assert!(parse_resources("events.events.k8s.io").is_err());
    }

    #[test]
    fn exclude_matches_names_and_kinds() {
        let exclude = parse_exclude("ciliumendpoints.cilium.io, ReplicaSet");
        let rs = parse_resources("replicasets.apps")
            .expect("valid")
            .remove(0);
        assert!(rs.is_excluded(&exclude));
        let pods = parse_resources("pods").expect("valid").remove(0);
        assert!(!pods.is_excluded(&exclude));
        let cep = Target {
            group: "cilium.io".into(),
            version: "v2".into(),
            plural: "ciliumendpoints".into(),
            kind: "CiliumEndpoint".into(),
            namespaced: true,
            route: Route::CustomResources,
        };
        assert!(cep.is_excluded(&exclude));
        assert!(cep.is_excluded(&parse_exclude("ciliumendpoint")));
    }
}
