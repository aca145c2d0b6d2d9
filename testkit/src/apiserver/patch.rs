//! The PATCH body formats: JSON merge patch (RFC 7386), an approximation of
//! strategic merge patch, and JSON patch (RFC 6902).

use serde_json::{Map, Value};

use super::status::ApiError;

/// Applies a patch of the given `Content-Type` to `target`.
pub(crate) fn apply(content_type: &str, target: &mut Value, patch: &Value) -> Result<(), ApiError> {
    match content_type {
        "application/merge-patch+json" => {
            merge_patch(target, patch);
            Ok(())
        }
        "application/strategic-merge-patch+json" => {
            strategic_merge_patch(target, patch);
            Ok(())
        }
        "application/json-patch+json" => json_patch(target, patch),
        other => Err(ApiError::unsupported_media_type(other)),
    }
}

/// RFC 7386: objects merge, `null` removes, anything else replaces.
pub(crate) fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let target = target.as_object_mut().expect("made an object above");
    for (key, value) in patch {
        if value.is_null() {
            target.remove(key);
        } else {
            merge_patch(target.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}

/// Strategic merge patch without the schema: like a merge patch, except
/// that lists whose elements all have a `name` merge element by element on
/// `name` (containers, volumes, env...), `{"$patch": "delete"}` elements are
/// removed, and the other `$` directives are ignored. Other lists replace.
fn strategic_merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let target = target.as_object_mut().expect("made an object above");
    for (key, value) in patch {
        if key.starts_with('$') {
            continue;
        }
        match value {
            Value::Null => {
                target.remove(key);
            }
            Value::Array(items) if items.iter().all(|i| name_of(i).is_some()) => {
                let slot = target
                    .entry(key.clone())
                    .or_insert(Value::Array(Vec::new()));
                if !slot.is_array() {
                    *slot = Value::Array(Vec::new());
                }
                merge_named_list(slot.as_array_mut().expect("made an array above"), items);
            }
            _ => strategic_merge_patch(target.entry(key.clone()).or_insert(Value::Null), value),
        }
    }
}

fn name_of(item: &Value) -> Option<&str> {
    item.get("name")?.as_str()
}

fn merge_named_list(target: &mut Vec<Value>, patch: &[Value]) {
    for item in patch {
        let name = name_of(item).expect("checked by the caller");
        let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
        let existing = target.iter().position(|t| name_of(t) == Some(name));
        match (existing, delete) {
            (Some(i), true) => {
                target.remove(i);
            }
            (Some(i), false) => strategic_merge_patch(&mut target[i], item),
            (None, true) => {}
            (None, false) => {
                let mut added = Value::Null;
                strategic_merge_patch(&mut added, item);
                target.push(added);
            }
        }
    }
}

/// RFC 6902 with the `add`, `remove`, `replace` and `test` operations.
fn json_patch(target: &mut Value, patch: &Value) -> Result<(), ApiError> {
    let ops = patch
        .as_array()
        .ok_or_else(|| ApiError::bad_request("a JSON patch must be an array"))?;
    for op in ops {
        let name = op.get("op").and_then(Value::as_str).unwrap_or("");
        let path = op.get("path").and_then(Value::as_str).unwrap_or("");
        let value = op.get("value").cloned().unwrap_or(Value::Null);
        let (parent, last) = match path.rsplit_once('/') {
            Some((parent, last)) => (parent, last.replace("~1", "/").replace("~0", "~")),
            None => {
                return Err(ApiError::bad_request(format!(
                    "bad JSON patch path {path:?}"
                )));
            }
        };
        let missing = || ApiError::invalid(format!("JSON patch: no {path:?} in the object"));
        match name {
            "test" => {
                if target.pointer(path) != Some(&value) {
                    return Err(ApiError::invalid(format!(
                        "JSON patch: test of {path:?} failed"
                    )));
                }
            }
            "add" | "replace" | "remove" => {
                let container = target.pointer_mut(parent).ok_or_else(missing)?;
                match container {
                    Value::Object(map) => match name {
                        "remove" => {
                            map.remove(&last).ok_or_else(missing)?;
                        }
                        "replace" if !map.contains_key(&last) => return Err(missing()),
                        _ => {
                            map.insert(last, value);
                        }
                    },
                    Value::Array(list) => {
                        let index = if last == "-" {
                            list.len()
                        } else {
                            last.parse::<usize>().map_err(|_| missing())?
                        };
                        match name {
                            "add" if index <= list.len() => list.insert(index, value),
                            "replace" if index < list.len() => list[index] = value,
                            "remove" if index < list.len() => {
                                list.remove(index);
                            }
                            _ => return Err(missing()),
                        }
                    }
                    _ => return Err(missing()),
                }
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "unsupported JSON patch op {other:?}"
                )));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_merges_objects_and_removes_nulls() {
        let mut obj = json!({"metadata": {"labels": {"a": "1", "b": "2"}}, "spec": {"x": [1, 2]}});
        merge_patch(
            &mut obj,
            &json!({"metadata": {"labels": {"a": null, "c": "3"}}, "spec": {"x": [3]}}),
        );
        assert_eq!(
            obj,
            json!({"metadata": {"labels": {"b": "2", "c": "3"}}, "spec": {"x": [3]}})
        );
    }

    #[test]
    fn strategic_patch_merges_containers_by_name() {
        let mut obj = json!({"spec": {"containers": [
            {"name": "app", "image": "a:1", "ports": [{"containerPort": 80}]},
            {"name": "side", "image": "s:1"}
        ]}});
        let patch = json!({"spec": {
            "$setElementOrder/containers": [{"name": "app"}, {"name": "side"}],
            "containers": [{"name": "app", "image": "a:2"}, {"name": "side", "$patch": "delete"}]
        }});
        strategic_merge_patch(&mut obj, &patch);
        assert_eq!(
            obj,
            json!({"spec": {"containers": [{"name": "app", "image": "a:2", "ports": [{"containerPort": 80}]}]}})
        );
    }

    #[test]
    fn json_patch_adds_replaces_and_removes() {
        let mut obj = json!({"metadata": {"labels": {"a": "1"}}, "list": [1, 2]});
        let patch = json!([
            {"op": "add", "path": "/metadata/labels/b", "value": "2"},
            {"op": "replace", "path": "/metadata/labels/a", "value": "x"},
            {"op": "remove", "path": "/list/0"},
            {"op": "add", "path": "/list/-", "value": 3},
            {"op": "test", "path": "/list", "value": [2, 3]}
        ]);
        json_patch(&mut obj, &patch).expect("patch applies");
        assert_eq!(
            obj,
            json!({"metadata": {"labels": {"a": "x", "b": "2"}}, "list": [2, 3]})
        );
        assert!(
            json_patch(
                &mut obj,
                &json!([{"op": "replace", "path": "/nope", "value": 1}])
            )
            .is_err()
        );
    }
}
