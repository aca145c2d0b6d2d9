//! OTLP/JSON, with the official types' serde, and the two places where that
//! serde and the OTLP/JSON spec part:
//!
//! - An empty `kvlistValue` or `arrayValue` is `{}` in OTLP/JSON (protobuf's
//!   JSON mapping leaves out empty repeated fields), but the official
//!   `KeyValueList` and `ArrayValue` need their `values` key. It is added
//!   before decoding.
//! - Keys must be lowerCamelCase (`timeUnixNano`; the spec says the
//!   original `time_unix_nano` is not valid). The official serde ignores
//!   unknown keys, as receivers must, so a snake_case body would decode as
//!   an empty request and be answered 200: a sender's bug would pass. No
//!   key of OTLP/JSON has an underscore (attribute names are values of
//!   `"key"`), so a key with one is refused here.
//!
//! Also: `int64` fields go as decimal strings in OTLP/JSON. The official
//! serde reads them as strings or numbers, but writes
//! `ExportLogsPartialSuccess.rejectedLogRecords` as a number and cannot
//! read it back from a string; answers are therefore written by hand, as
//! the Collector writes them.

use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceRequest,
};
use serde_json::{Value, json};

/// Decodes an OTLP/JSON `ExportLogsServiceRequest`.
pub(super) fn decode(body: &[u8]) -> Result<ExportLogsServiceRequest, String> {
    let mut value: Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    conform(&mut value)?;
    serde_json::from_value(value).map_err(|e| e.to_string())
}

/// Refuses snake_case keys and gives empty lists their `values`.
fn conform(value: &mut Value) -> Result<(), String> {
    match value {
        Value::Object(map) => {
            if let Some(key) = map.keys().find(|key| key.contains('_')) {
                return Err(format!(
                    "key {key:?} is not lowerCamelCase, as OTLP/JSON keys must be"
                ));
            }
            for list in ["kvlistValue", "arrayValue"] {
                if let Some(Value::Object(list)) = map.get_mut(list) {
                    list.entry("values").or_insert_with(|| json!([]));
                }
            }
            map.values_mut().try_for_each(conform)
        }
        Value::Array(items) => items.iter_mut().try_for_each(conform),
        _ => Ok(()),
    }
}

/// An `ExportLogsServiceResponse` in OTLP/JSON: `{}` when all was accepted.
pub(super) fn response(partial_success: Option<&ExportLogsPartialSuccess>) -> Vec<u8> {
    let response = match partial_success {
        None => json!({}),
        Some(partial) => json!({"partialSuccess": {
            "rejectedLogRecords": partial.rejected_log_records.to_string(),
            "errorMessage": partial.error_message,
        }}),
    };
    response.to_string().into_bytes()
}
