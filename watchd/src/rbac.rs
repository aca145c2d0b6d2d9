//! What to tell the operator when the API server forbids a list or watch
//! (SPEC §4 "RBAC"): the exact ClusterRole rule that would grant it.

use crate::resources::Target;

/// The ClusterRole rule granting watchd `target`, in the YAML of a rule
/// list entry (one line, ready to paste under `rules:`).
pub fn missing_rule(target: &Target) -> String {
    format!(
        "- {{apiGroups: [\"{}\"], resources: [\"{}\"], verbs: [\"get\", \"list\", \"watch\"]}}",
        target.group, target.plural
    )
}

/// The log line for a forbidden resource, said once per resource.
pub fn forbidden_message(target: &Target, retry_minutes: u64) -> String {
    format!(
        "forbidden to list/watch {}: add this rule to watchd's ClusterRole: {} (retrying every {} min, the other resources flow meanwhile)",
        target.name(),
        missing_rule(target),
        retry_minutes
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::parse_resources;

    #[test]
    fn rules_name_group_and_resource() {
        let pods = parse_resources("pods").expect("valid").remove(0);
        assert_eq!(
            missing_rule(&pods),
            r#"- {apiGroups: [""], resources: ["pods"], verbs: ["get", "list", "watch"]}"#
        );
        let ing = parse_resources("ingresses.networking.k8s.io")
            .expect("valid")
            .remove(0);
        assert!(
            forbidden_message(&ing, 3)
                .contains(r#"apiGroups: ["networking.k8s.io"], resources: ["ingresses"]"#)
        );
    }
}
