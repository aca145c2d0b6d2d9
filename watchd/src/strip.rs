//! Less traffic, same meaning (SPEC §4): what watchd removes from an object
//! before shipping it.
//!
//! - `metadata.managedFields[].fieldsV1`, the bulk of most objects; the
//!   backend reads `manager`, `operation`, `apiVersion` and `time`, which
//!   stay.
//! - the `kubectl.kubernetes.io/last-applied-configuration` annotation, a
//!   second copy of the object as it was last applied.

use serde_json::Value;

/// The annotation `kubectl apply` writes: a copy of the applied object.
pub const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Removes what watchd does not ship from `object`, in place. An
/// `annotations` map left empty is removed too.
pub fn strip(object: &mut Value) {
    let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut) else {
        return;
    };
    if let Some(entries) = metadata
        .get_mut("managedFields")
        .and_then(Value::as_array_mut)
    {
        for entry in entries.iter_mut().filter_map(Value::as_object_mut) {
            entry.remove("fieldsV1");
            // Without fieldsV1 its type says nothing.
            entry.remove("fieldsType");
        }
    }
    if let Some(annotations) = metadata
        .get_mut("annotations")
        .and_then(Value::as_object_mut)
    {
        annotations.remove(LAST_APPLIED);
        if annotations.is_empty() {
            metadata.remove("annotations");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn drops_fields_v1_and_last_applied_and_keeps_the_rest() {
        let mut obj = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {
                "name": "web",
                "annotations": {
                    LAST_APPLIED: "{\"big\": true}",
                    "deployment.kubernetes.io/revision": "3"
                },
                "managedFields": [{
                    "apiVersion": "apps/v1", "fieldsType": "FieldsV1",
                    "fieldsV1": {"f:spec": {}}, "manager": "kubectl",
                    "operation": "Apply", "time": "2024-12-01T10:33:09Z"
                }]
            },
            "spec": {"replicas": 2}
        });
        strip(&mut obj);
        assert_eq!(
            obj,
            json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {
                    "name": "web",
                    "annotations": {"deployment.kubernetes.io/revision": "3"},
                    "managedFields": [{
                        "apiVersion": "apps/v1", "manager": "kubectl",
                        "operation": "Apply", "time": "2024-12-01T10:33:09Z"
                    }]
                },
                "spec": {"replicas": 2}
            })
        );
    }

    #[test]
    fn an_annotation_map_left_empty_goes() {
        let mut obj = json!({"metadata": {"annotations": {LAST_APPLIED: "{}"}}});
        strip(&mut obj);
        assert_eq!(obj, json!({"metadata": {}}));
    }

    #[test]
    fn objects_without_metadata_are_left_alone() {
        let mut obj = json!({"kind": "X"});
        strip(&mut obj);
        assert_eq!(obj, json!({"kind": "X"}));
    }
}
