//! Accepted log records flattened for assertions, and `AnyValue` as JSON so
//! that a kvlist body can be compared with a `json!` object.

use std::collections::BTreeMap;

use base64::Engine;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use serde_json::{Map, Value};

use super::OtlpRequest;

/// One log record with what its request said about where it came from.
#[derive(Clone, Debug, PartialEq)]
pub struct OtlpRecord {
    /// The resource's attributes, as [`any_value_json`] gives them.
    pub resource: BTreeMap<String, Value>,
    pub scope_name: String,
    pub scope_version: String,
    pub time_unix_nano: u64,
    pub observed_time_unix_nano: u64,
    pub severity_number: i32,
    pub severity_text: String,
    /// The official value; [`OtlpRecord::body_json`] for comparisons.
    pub body: Option<AnyValue>,
    /// The record's attributes, as [`any_value_json`] gives them.
    pub attributes: BTreeMap<String, Value>,
}

impl OtlpRecord {
    /// The body as JSON (`null` without one).
    pub fn body_json(&self) -> Value {
        self.body.as_ref().map_or(Value::Null, any_value_json)
    }
}

/// An `AnyValue` as plain JSON: kvlist → object, array → array, string,
/// int, double (`null` if not finite), bool; bytes → base64 (as OTLP/JSON
/// writes them); an empty value → `null`.
pub fn any_value_json(value: &AnyValue) -> Value {
    match &value.value {
        None | Some(Any::StringValueStrindex(_)) => Value::Null,
        Some(Any::StringValue(s)) => Value::String(s.clone()),
        Some(Any::BoolValue(b)) => Value::Bool(*b),
        Some(Any::IntValue(i)) => Value::from(*i),
        Some(Any::DoubleValue(d)) => Value::from(*d),
        Some(Any::BytesValue(bytes)) => {
            Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
        }
        Some(Any::ArrayValue(array)) => array.values.iter().map(any_value_json).collect(),
        Some(Any::KvlistValue(list)) => Value::Object(
            list.values
                .iter()
                .map(|kv| (kv.key.clone(), key_value_json(kv)))
                .collect::<Map<_, _>>(),
        ),
    }
}

fn key_value_json(kv: &KeyValue) -> Value {
    kv.value.as_ref().map_or(Value::Null, any_value_json)
}

fn attribute_map(attributes: &[KeyValue]) -> BTreeMap<String, Value> {
    attributes
        .iter()
        .map(|kv| (kv.key.clone(), key_value_json(kv)))
        .collect()
}

/// Every record of `requests`, in order.
pub(crate) fn flatten(requests: &[OtlpRequest]) -> Vec<OtlpRecord> {
    let mut records = Vec::new();
    for resource_logs in requests.iter().flat_map(|r| &r.request.resource_logs) {
        let resource = resource_logs
            .resource
            .as_ref()
            .map(|r| attribute_map(&r.attributes))
            .unwrap_or_default();
        for scope_logs in &resource_logs.scope_logs {
            let scope = scope_logs.scope.clone().unwrap_or_default();
            records.extend(scope_logs.log_records.iter().map(|record| OtlpRecord {
                resource: resource.clone(),
                scope_name: scope.name.clone(),
                scope_version: scope.version.clone(),
                time_unix_nano: record.time_unix_nano,
                observed_time_unix_nano: record.observed_time_unix_nano,
                severity_number: record.severity_number,
                severity_text: record.severity_text.clone(),
                body: record.body.clone(),
                attributes: attribute_map(&record.attributes),
            }));
        }
    }
    records
}
