//! The content hash that tells a real change from noise (SPEC §4).
//!
//! Two versions of an object with the same fingerprint mean the same thing
//! to HiK8s: they differ at most in `metadata.resourceVersion`, in
//! `metadata.managedFields[].time`, or in heartbeat times (a Node's
//! `status.conditions[].lastHeartbeatTime`, a Lease's `spec.renewTime`),
//! which change every few seconds on a healthy cluster. A Lease's
//! `metadata.generation` is ignored too: where a server bumps it, it only
//! follows `spec` changes, which are themselves hashed.
//!
//! The hash is stable within a process (SipHash with fixed keys), which is
//! all watchd needs: fingerprints are kept in memory only.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};

use serde_json::{Map, Value};

/// A 64-bit content hash of `object` that ignores the fields named in the
/// module docs. Call it on the stripped object (what is shipped).
pub fn fingerprint(object: &Value) -> u64 {
    let mut h = DefaultHasher::new();
    let Some(map) = object.as_object() else {
        hash_value(object, &mut h);
        return h.finish();
    };
    let kind = map.get("kind").and_then(Value::as_str).unwrap_or_default();
    for (key, value) in map {
        key.hash(&mut h);
        match (key.as_str(), kind) {
            ("metadata", "Lease") => {
                hash_metadata(value, &["resourceVersion", "generation"], &mut h)
            }
            ("metadata", _) => hash_metadata(value, &["resourceVersion"], &mut h),
            ("status", "Node") => {
                hash_skipping_nested(value, "conditions", "lastHeartbeatTime", &mut h)
            }
            ("spec", "Lease") => hash_object_skipping(value, &["renewTime"], &mut h),
            _ => hash_value(value, &mut h),
        }
    }
    h.finish()
}

/// Hashes `metadata` without the `skip` fields, and its managedFields
/// without their times.
fn hash_metadata(metadata: &Value, skip: &[&str], h: &mut DefaultHasher) {
    let Some(map) = metadata.as_object() else {
        return hash_value(metadata, h);
    };
    tag(b'{', h);
    for (key, value) in map {
        if skip.contains(&key.as_str()) {
            continue;
        }
        match key.as_str() {
            "managedFields" => {
                key.hash(h);
                hash_array_of_objects_skipping(value, &["time"], h);
            }
            _ => {
                key.hash(h);
                hash_value(value, h);
            }
        }
    }
    tag(b'}', h);
}

/// Hashes `value` (an object) with `array_key`'s elements hashed without
/// their `skip` field: `status.conditions[].lastHeartbeatTime`.
fn hash_skipping_nested(value: &Value, array_key: &str, skip: &str, h: &mut DefaultHasher) {
    let Some(map) = value.as_object() else {
        return hash_value(value, h);
    };
    tag(b'{', h);
    for (key, v) in map {
        key.hash(h);
        if key == array_key {
            hash_array_of_objects_skipping(v, &[skip], h);
        } else {
            hash_value(v, h);
        }
    }
    tag(b'}', h);
}

fn hash_array_of_objects_skipping(value: &Value, skip: &[&str], h: &mut DefaultHasher) {
    let Some(items) = value.as_array() else {
        return hash_value(value, h);
    };
    tag(b'[', h);
    items.len().hash(h);
    for item in items {
        hash_object_skipping(item, skip, h);
    }
}

fn hash_object_skipping(value: &Value, skip: &[&str], h: &mut DefaultHasher) {
    let Some(map) = value.as_object() else {
        return hash_value(value, h);
    };
    hash_map(map, skip, h);
}

fn hash_map(map: &Map<String, Value>, skip: &[&str], h: &mut DefaultHasher) {
    tag(b'{', h);
    for (key, value) in map {
        if skip.contains(&key.as_str()) {
            continue;
        }
        key.hash(h);
        hash_value(value, h);
    }
    tag(b'}', h);
}

/// Hashes any JSON value; every variant is tagged so that `"1"` and `1`,
/// or `[]` and `{}`, differ.
fn hash_value(value: &Value, h: &mut DefaultHasher) {
    match value {
        Value::Null => tag(b'n', h),
        Value::Bool(b) => {
            tag(b'b', h);
            b.hash(h);
        }
        Value::Number(n) => {
            tag(b'#', h);
            n.to_string().hash(h);
        }
        Value::String(s) => {
            tag(b'"', h);
            s.hash(h);
        }
        Value::Array(items) => {
            tag(b'[', h);
            items.len().hash(h);
            for item in items {
                hash_value(item, h);
            }
        }
        Value::Object(map) => hash_map(map, &[], h),
    }
}

fn tag(t: u8, h: &mut DefaultHasher) {
    h.write_u8(t);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(rv: &str, heartbeat: &str, label: &str) -> Value {
        json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {
                "name": "n1", "uid": "u1", "resourceVersion": rv,
                "labels": {"tier": label},
                "managedFields": [{"manager": "kubelet", "operation": "Update", "apiVersion": "v1", "time": heartbeat}]
            },
            "status": {"conditions": [
                {"type": "Ready", "status": "True", "lastHeartbeatTime": heartbeat, "lastTransitionTime": "2024-01-01T00:00:00Z"}
            ]}
        })
    }

    #[test]
    fn node_heartbeats_and_versions_do_not_count() {
        let a = node("1", "2024-12-01T10:00:00Z", "a");
        let b = node("2", "2024-12-01T10:00:40Z", "a");
        assert_eq!(fingerprint(&a), fingerprint(&b));
        let c = node("3", "2024-12-01T10:00:50Z", "b");
        assert_ne!(fingerprint(&a), fingerprint(&c));
    }

    #[test]
    fn a_condition_status_change_counts() {
        let a = node("1", "t1", "a");
        let mut b = node("2", "t2", "a");
        b["status"]["conditions"][0]["status"] = json!("False");
        assert_ne!(fingerprint(&a), fingerprint(&b));
    }

    #[test]
    fn lease_renewals_do_not_count_but_holder_changes_do() {
        let lease = |rv: &str, renew: &str, holder: &str| {
            json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                   "metadata": {"name": "l", "resourceVersion": rv, "generation": rv.parse::<u64>().expect("a number")},
                   "spec": {"holderIdentity": holder, "renewTime": renew, "leaseDurationSeconds": 40}})
        };
        let a = lease("1", "2024-12-01T10:00:00.000000Z", "node-a");
        let b = lease("2", "2024-12-01T10:00:10.000000Z", "node-a");
        let c = lease("3", "2024-12-01T10:00:20.000000Z", "node-b");
        assert_eq!(fingerprint(&a), fingerprint(&b));
        assert_ne!(fingerprint(&b), fingerprint(&c));
    }

    #[test]
    fn heartbeat_fields_count_on_other_kinds() {
        let pod =
            |renew: &str| json!({"kind": "Pod", "metadata": {}, "spec": {"renewTime": renew}});
        assert_ne!(fingerprint(&pod("a")), fingerprint(&pod("b")));
    }

    #[test]
    fn json_types_are_told_apart() {
        assert_ne!(
            fingerprint(&json!({"a": 1})),
            fingerprint(&json!({"a": "1"}))
        );
        assert_ne!(
            fingerprint(&json!({"a": []})),
            fingerprint(&json!({"a": {}}))
        );
        assert_ne!(
            fingerprint(&json!({"a": {"b": 1}, "c": 2})),
            fingerprint(&json!({"a": {"b": 1, "c": 2}}))
        );
    }
}
