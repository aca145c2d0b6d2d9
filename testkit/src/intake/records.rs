//! The JSON routes: `/resources`, `/customresources`, `/events` (arrays of
//! records) and `/resource`, `/customresource`, `/event` (one record).

use serde_json::Value;

/// A JSON route: where its records are kept and whether it takes an array.
pub(crate) struct JsonRoute {
    /// As in [`super::Intake::records`].
    pub(crate) records: &'static str,
    pub(crate) batch: bool,
}

pub(crate) fn json_route(path: &str) -> Option<JsonRoute> {
    let (records, batch) = match path {
        "/resources" => ("resources", true),
        "/customresources" => ("customresources", true),
        "/events" => ("events", true),
        "/resource" => ("resources", false),
        "/customresource" => ("customresources", false),
        "/event" => ("events", false),
        _ => return None,
    };
    Some(JsonRoute { records, batch })
}

/// Records of an accepted body: the kept ones and how many were dropped.
pub(crate) struct Accepted {
    pub(crate) kept: Vec<Value>,
    pub(crate) dropped: usize,
}

/// Checks a body of `route`; `Err(message)` is answered 500, as the backend
/// answers a record it cannot deserialize.
pub(crate) fn parse_records(route: &JsonRoute, body: &[u8]) -> Result<Accepted, String> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| format!("body is not JSON: {e}"))?;
    let records = match (route.batch, value) {
        (true, Value::Array(records)) => records,
        (true, _) => return Err("body is not a JSON array of records".into()),
        (false, record) => vec![record],
    };
    for (index, record) in records.iter().enumerate() {
        check_record(record).map_err(|e| format!("record {index}: {e}"))?;
    }
    let (kept, dropped): (Vec<Value>, Vec<Value>) =
        records.into_iter().partition(has_api_version_and_kind);
    Ok(Accepted {
        kept,
        dropped: dropped.len(),
    })
}

/// `{"timestamp": <integer>, "event_type": "apply"|"initapply"|"delete",
/// "json": <object>}`. The backend reads `timestamp` as an i64.
fn check_record(record: &Value) -> Result<(), String> {
    if !record.is_object() {
        return Err("not an object".into());
    }
    if record.get("timestamp").and_then(Value::as_i64).is_none() {
        return Err("timestamp is not an integer (unix seconds)".into());
    }
    match record.get("event_type").and_then(Value::as_str) {
        Some("apply" | "initapply" | "delete") => {}
        other => {
            return Err(format!(
                "event_type {other:?} is not apply, initapply or delete"
            ));
        }
    }
    if !record.get("json").is_some_and(Value::is_object) {
        return Err("json is not an object".into());
    }
    Ok(())
}

fn has_api_version_and_kind(record: &Value) -> bool {
    let json = &record["json"];
    json.get("apiVersion").is_some_and(Value::is_string)
        && json.get("kind").is_some_and(Value::is_string)
}
