//! watchd's records as OpenTelemetry log records, in the shape of the
//! Collector's `k8sobjects` receiver in watch mode.

use super::encode::Encoder;
use crate::intake::Route;

/// Writes `body` (a JSON array of `{"timestamp","event_type","json"}`
/// records, what watchd hands every sink) into `request`.
pub fn encode_records(
    _request: &mut Encoder,
    _route: Route,
    body: &[u8],
) -> serde_json::Result<()> {
    let _records: Vec<serde_json::Value> = serde_json::from_slice(body)?;
    todo!("watchd OTLP records")
}
