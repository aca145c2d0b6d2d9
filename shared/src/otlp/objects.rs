//! watchd's records as OpenTelemetry log records, in the shape of the
//! Collector's `k8sobjects` receiver in watch mode, so that pipelines built
//! for it work unchanged:
//!
//! - one `ResourceLogs` per namespace, with `k8s.namespace.name` (none for
//!   cluster-scoped objects); within it the records keep their order, so
//!   the records of one object stay in order (an `apply` never overtakes
//!   the `delete` after it);
//! - the body is a kvlist `{"type": "ADDED"|"MODIFIED"|"DELETED",
//!   "object": {…}}`, the object as kvlists and arrays (not a JSON string);
//! - attributes `k8s.resource.name` (the plural), `event.domain` = `k8s`,
//!   `event.name` = the object's name (left out when it has none, as the
//!   receiver does), and `hik8s.event_type` = `initapply`, `apply` or
//!   `delete` (watchd's own distinction, which `type` does not carry);
//! - `observed_time_unix_nano` = when watchd made the record; no
//!   `time_unix_nano` and no severity, as the receiver, except for
//!   core/v1 Events (the `/events` route), which also get, as the
//!   Collector's `k8sevents` receiver gives them, severity from their
//!   `type` (`Normal` → INFO 9, `Warning` → WARN 13, the type as the
//!   severity text) and their own time as `time_unix_nano`: the
//!   latest occurrence of a series (`series.lastObservedTime`), else
//!   `eventTime`, else `lastTimestamp`, else `firstTimestamp`, else
//!   `metadata.creationTimestamp`.
//!
//! For this sink only, watchd adds to each record what the intake's record
//! format (SPEC §1) has no room for:
//! `"otlp":{"type":"ADDED","resource":"pods","observed":<unix nanos>}`.
//! A record without it is still encoded: `initapply` is `ADDED`, `apply`
//! `MODIFIED`, `delete` `DELETED`, no `k8s.resource.name`, observed at its
//! `timestamp`.

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::{Map, Value as Json};

use super::encode::{Encoder, Record, Value};
use crate::intake::Route;

/// One record as watchd hands it to every sink.
#[derive(Deserialize)]
struct RecordIn {
    /// Unix seconds.
    #[serde(default)]
    timestamp: u64,
    event_type: String,
    json: Json,
    #[serde(default)]
    otlp: Option<OtlpFields>,
}

/// What watchd adds for this sink.
#[derive(Deserialize)]
struct OtlpFields {
    /// The watch event type: `ADDED`, `MODIFIED` or `DELETED`.
    #[serde(rename = "type")]
    watch_type: String,
    /// The resource's plural (`pods`, `certificates`).
    resource: String,
    /// When watchd made the record, unix nanoseconds.
    observed: u64,
}

/// A record ready to be written.
struct Prepared {
    /// `{"object": {…}, "type": "…"}`.
    body: Json,
    event_type: String,
    resource: Option<String>,
    observed: u64,
}

impl Prepared {
    fn object(&self) -> &Json {
        &self.body["object"]
    }

    fn namespace(&self) -> &str {
        self.object()
            .pointer("/metadata/namespace")
            .and_then(Json::as_str)
            .unwrap_or("")
    }
}

/// Writes `body` (a JSON array of `{"timestamp","event_type","json"}`
/// records, what watchd hands every sink) into `request`.
pub fn encode_records(request: &mut Encoder, route: Route, body: &[u8]) -> serde_json::Result<()> {
    let records: Vec<RecordIn> = serde_json::from_slice(body)?;
    let records: Vec<Prepared> = records.into_iter().map(prepare).collect();
    // Namespaces in the order they first appear; each keeps its records'
    // order.
    let mut groups: Vec<(&str, Vec<&Prepared>)> = Vec::new();
    let mut index: HashMap<&str, usize> = HashMap::new();
    for record in &records {
        let namespace = record.namespace();
        let at = *index.entry(namespace).or_insert_with(|| {
            groups.push((namespace, Vec::new()));
            groups.len() - 1
        });
        groups[at].1.push(record);
    }
    request.reserve(body.len() + body.len() / 2);
    for (namespace, records) in groups {
        if namespace.is_empty() {
            request.begin_resource(&[]);
        } else {
            request.begin_resource(&[("k8s.namespace.name", Value::Str(namespace))]);
        }
        for record in records {
            write(request, route, record);
        }
        request.end_resource();
    }
    Ok(())
}

fn prepare(record: RecordIn) -> Prepared {
    let (watch_type, resource, observed) = match record.otlp {
        Some(o) => (o.watch_type, Some(o.resource), o.observed),
        None => {
            let watch_type = match record.event_type.as_str() {
                "initapply" => "ADDED",
                "delete" => "DELETED",
                _ => "MODIFIED",
            };
            let observed = record.timestamp.saturating_mul(1_000_000_000);
            (watch_type.to_string(), None, observed)
        }
    };
    let mut body = Map::new();
    body.insert("type".into(), Json::String(watch_type));
    body.insert("object".into(), record.json);
    Prepared {
        body: Json::Object(body),
        event_type: record.event_type,
        resource,
        observed,
    }
}

fn write(request: &mut Encoder, route: Route, record: &Prepared) {
    let object = record.object();
    let mut attributes = Vec::with_capacity(4);
    if let Some(resource) = &record.resource {
        attributes.push(("k8s.resource.name", Value::Str(resource)));
    }
    let name = object
        .pointer("/metadata/name")
        .and_then(Json::as_str)
        .unwrap_or("");
    if !name.is_empty() {
        attributes.push(("event.domain", Value::Str("k8s")));
        attributes.push(("event.name", Value::Str(name)));
    }
    attributes.push(("hik8s.event_type", Value::Str(&record.event_type)));
    let (time, severity_number, severity_text) = match route {
        Route::Events => {
            let (number, text) = event_severity(object);
            (event_time(object).unwrap_or(0), number, text)
        }
        _ => (0, 0, ""),
    };
    request.record(&Record {
        time_unix_nano: time,
        observed_time_unix_nano: record.observed,
        severity_number,
        severity_text,
        body: Value::Json(&record.body),
        attributes: &attributes,
    });
}

/// An Event's `type` as a severity: `Normal` INFO (9), `Warning` WARN
/// (13), with the type as the text; others none.
fn event_severity(event: &Json) -> (i32, &str) {
    let Some(kind) = event.get("type").and_then(Json::as_str) else {
        return (0, "");
    };
    if kind.eq_ignore_ascii_case("normal") {
        (9, kind)
    } else if kind.eq_ignore_ascii_case("warning") {
        (13, kind)
    } else {
        (0, "")
    }
}

/// When an Event happened (its latest occurrence), in unix nanoseconds.
fn event_time(event: &Json) -> Option<u64> {
    [
        "/series/lastObservedTime",
        "/eventTime",
        "/lastTimestamp",
        "/firstTimestamp",
        "/metadata/creationTimestamp",
    ]
    .iter()
    .filter_map(|p| event.pointer(p).and_then(Json::as_str))
    .find_map(|t| humantime::parse_rfc3339(t).ok())
    .map(super::logs::unix_nanos)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otlp::encode::Format;
    use prost::Message;
    use serde_json::json;

    // The parts of `opentelemetry/proto/logs/v1/logs.proto` and
    // `common/v1/common.proto` read here, to decode what the encoder wrote.
    #[derive(Clone, PartialEq, Message)]
    struct LogsData {
        #[prost(message, repeated, tag = "1")]
        resource_logs: Vec<ResourceLogs>,
    }
    #[derive(Clone, PartialEq, Message)]
    struct ResourceLogs {
        #[prost(message, optional, tag = "1")]
        resource: Option<Resource>,
        #[prost(message, repeated, tag = "2")]
        scope_logs: Vec<ScopeLogs>,
    }
    #[derive(Clone, PartialEq, Message)]
    struct Resource {
        #[prost(message, repeated, tag = "1")]
        attributes: Vec<KeyValue>,
    }
    #[derive(Clone, PartialEq, Message)]
    struct ScopeLogs {
        #[prost(message, repeated, tag = "2")]
        log_records: Vec<LogRecord>,
    }
    #[derive(Clone, PartialEq, Message)]
    struct LogRecord {
        #[prost(fixed64, tag = "1")]
        time_unix_nano: u64,
        #[prost(int32, tag = "2")]
        severity_number: i32,
        #[prost(string, tag = "3")]
        severity_text: String,
        #[prost(message, optional, tag = "5")]
        body: Option<AnyValue>,
        #[prost(message, repeated, tag = "6")]
        attributes: Vec<KeyValue>,
        #[prost(fixed64, tag = "11")]
        observed_time_unix_nano: u64,
    }
    #[derive(Clone, PartialEq, Message)]
    struct KeyValue {
        #[prost(string, tag = "1")]
        key: String,
        #[prost(message, optional, tag = "2")]
        value: Option<AnyValue>,
    }
    #[derive(Clone, PartialEq, Message)]
    struct AnyValue {
        #[prost(oneof = "Any", tags = "1, 2, 3, 4, 5, 6")]
        value: Option<Any>,
    }
    #[derive(Clone, PartialEq, prost::Oneof)]
    enum Any {
        #[prost(string, tag = "1")]
        String(String),
        #[prost(bool, tag = "2")]
        Bool(bool),
        #[prost(int64, tag = "3")]
        Int(i64),
        #[prost(double, tag = "4")]
        Double(f64),
        #[prost(message, tag = "5")]
        Array(ArrayValue),
        #[prost(message, tag = "6")]
        Kvlist(KeyValueList),
    }
    #[derive(Clone, PartialEq, Message)]
    struct ArrayValue {
        #[prost(message, repeated, tag = "1")]
        values: Vec<AnyValue>,
    }
    #[derive(Clone, PartialEq, Message)]
    struct KeyValueList {
        #[prost(message, repeated, tag = "1")]
        values: Vec<KeyValue>,
    }

    /// An `AnyValue` as plain JSON (kvlist → object).
    fn plain(value: &AnyValue) -> Json {
        match &value.value {
            None => Json::Null,
            Some(Any::String(s)) => json!(s),
            Some(Any::Bool(b)) => json!(b),
            Some(Any::Int(i)) => json!(i),
            Some(Any::Double(d)) => json!(d),
            Some(Any::Array(a)) => a.values.iter().map(plain).collect(),
            Some(Any::Kvlist(l)) => Json::Object(pairs(&l.values)),
        }
    }

    fn pairs(values: &[KeyValue]) -> Map<String, Json> {
        values
            .iter()
            .map(|kv| (kv.key.clone(), kv.value.as_ref().map_or(Json::Null, plain)))
            .collect()
    }

    /// (resource attributes, records) of each resource.
    fn decode(body: &[u8]) -> Vec<(Map<String, Json>, Vec<LogRecord>)> {
        let logs = LogsData::decode(body).expect("a valid ExportLogsServiceRequest");
        logs.resource_logs
            .into_iter()
            .map(|r| {
                let attributes = pairs(&r.resource.unwrap_or_default().attributes);
                let records = r.scope_logs.into_iter().flat_map(|s| s.log_records);
                (attributes, records.collect())
            })
            .collect()
    }

    fn encode(format: Format, route: Route, records: &[Json]) -> Vec<u8> {
        let body = serde_json::to_vec(records).expect("serializable");
        let mut request = Encoder::new(format, ("watchd", "0.0.0"), &[]);
        encode_records(&mut request, route, &body).expect("valid records");
        request.finish()
    }

    fn pod(ns: &str, name: &str, image: &str) -> Json {
        json!({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": name, "namespace": ns, "uid": format!("uid-{name}"), "labels": {"a": "b"}},
               "spec": {"containers": [{"name": "c", "image": image, "ports": [{"containerPort": 80}]}],
                        "priority": 0, "enableServiceLinks": true, "overhead": null}})
    }

    fn record(event_type: &str, watch_type: &str, resource: &str, object: Json) -> Json {
        json!({"timestamp": 1_700_000_000u64, "event_type": event_type, "json": object,
               "otlp": {"type": watch_type, "resource": resource, "observed": 1_700_000_000_123_456_789u64}})
    }

    #[test]
    fn objects_are_kvlist_bodies_with_the_k8sobjects_attributes_grouped_by_namespace() {
        let node =
            json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1", "uid": "u"}});
        let records = [
            record("initapply", "ADDED", "pods", pod("a", "p1", "img:1")),
            record("initapply", "ADDED", "nodes", node.clone()),
            record("apply", "ADDED", "pods", pod("b", "p2", "img:1")),
            record("apply", "MODIFIED", "pods", pod("a", "p1", "img:2")),
            record("delete", "DELETED", "pods", pod("a", "p1", "img:2")),
        ];
        let resources = decode(&encode(Format::Protobuf, Route::Resources, &records));
        let summary: Vec<(Json, Vec<(Json, Json)>)> = resources
            .iter()
            .map(|(attributes, records)| {
                let ns = attributes
                    .get("k8s.namespace.name")
                    .cloned()
                    .unwrap_or(Json::Null);
                let records = records
                    .iter()
                    .map(|r| {
                        let body = plain(r.body.as_ref().expect("a body"));
                        (
                            body["type"].clone(),
                            body["object"]["spec"]["containers"][0]["image"].clone(),
                        )
                    })
                    .collect();
                (ns, records)
            })
            .collect();
        assert_eq!(
            summary,
            [
                (
                    json!("a"),
                    vec![
                        (json!("ADDED"), json!("img:1")),
                        (json!("MODIFIED"), json!("img:2")),
                        (json!("DELETED"), json!("img:2"))
                    ]
                ),
                (Json::Null, vec![(json!("ADDED"), Json::Null)]),
                (json!("b"), vec![(json!("ADDED"), json!("img:1"))]),
            ]
        );
        // The cluster-scoped Node's resource has no attribute at all.
        assert!(resources[1].0.is_empty());

        let first = &resources[0].1[0];
        assert_eq!(
            plain(first.body.as_ref().expect("a body")),
            json!({"type": "ADDED", "object": pod("a", "p1", "img:1")})
        );
        assert_eq!(
            Json::Object(pairs(&first.attributes)),
            json!({"k8s.resource.name": "pods", "event.domain": "k8s", "event.name": "p1", "hik8s.event_type": "initapply"})
        );
        let keys: Vec<&str> = first.attributes.iter().map(|kv| kv.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "k8s.resource.name",
                "event.domain",
                "event.name",
                "hik8s.event_type"
            ]
        );
        assert_eq!(first.observed_time_unix_nano, 1_700_000_000_123_456_789);
        assert_eq!(
            (
                first.time_unix_nano,
                first.severity_number,
                first.severity_text.as_str()
            ),
            (0, 0, "")
        );
        let delete = &resources[0].1[2];
        assert_eq!(
            plain(&delete.attributes[3].value.clone().expect("a value")),
            json!("delete")
        );
        // Types survive: integers, booleans, null as an empty value.
        let body = plain(first.body.as_ref().expect("a body"));
        assert_eq!(
            body["object"]["spec"]["containers"][0]["ports"][0]["containerPort"],
            json!(80)
        );
        assert_eq!(body["object"]["spec"]["enableServiceLinks"], json!(true));
        assert!(body["object"]["spec"]["overhead"].is_null());
    }

    #[test]
    fn the_json_encoding_says_the_same() {
        let records = [
            record("initapply", "ADDED", "pods", pod("a", "p1", "img:1")),
            record("delete", "DELETED", "pods", pod("a", "p1", "img:1")),
        ];
        let body = encode(Format::Json, Route::Resources, &records);
        let request: Json = serde_json::from_slice(&body).expect("OTLP/JSON");
        let resource = &request["resourceLogs"][0];
        assert_eq!(
            resource["resource"]["attributes"],
            json!([{"key": "k8s.namespace.name", "value": {"stringValue": "a"}}])
        );
        let records = resource["scopeLogs"][0]["logRecords"]
            .as_array()
            .expect("records");
        assert_eq!(records.len(), 2);
        assert_eq!(records[0]["observedTimeUnixNano"], "1700000000123456789");
        assert!(records[0].get("timeUnixNano").is_none());
        let values = records[1]["body"]["kvlistValue"]["values"]
            .as_array()
            .expect("a kvlist");
        let kind = values.iter().find(|kv| kv["key"] == "type").expect("type");
        assert_eq!(kind["value"], json!({"stringValue": "DELETED"}));
        let object = values
            .iter()
            .find(|kv| kv["key"] == "object")
            .expect("object");
        assert!(
            object["value"]["kvlistValue"]["values"].is_array(),
            "{object}"
        );
        assert_eq!(
            records[1]["attributes"][0],
            json!({"key": "k8s.resource.name", "value": {"stringValue": "pods"}})
        );
    }

    #[test]
    fn events_get_severity_from_their_type_and_their_own_time() {
        let event = |name: &str, kind: &str, times: Json| {
            let mut e = json!({"apiVersion": "v1", "kind": "Event", "type": kind, "reason": "R",
                               "metadata": {"name": name, "namespace": "ns", "creationTimestamp": "2024-01-01T00:00:00Z"}});
            for (k, v) in times.as_object().expect("an object") {
                e[k] = v.clone();
            }
            record("initapply", "ADDED", "events", e)
        };
        let records = [
            event(
                "warning",
                "Warning",
                json!({"lastTimestamp": "2024-11-18T08:59:45Z", "firstTimestamp": "2024-11-18T08:00:00Z"}),
            ),
            event(
                "normal",
                "Normal",
                json!({"eventTime": "2024-11-18T08:59:45.123456Z", "lastTimestamp": null}),
            ),
            event(
                "series",
                "Normal",
                json!({"eventTime": "2024-11-18T08:00:00.000000Z", "series": {"count": 2, "lastObservedTime": "2024-11-18T09:00:00.000001Z"}}),
            ),
            event(
                "first",
                "Custom",
                json!({"firstTimestamp": "2024-11-18T08:00:00Z"}),
            ),
            event("created", "Normal", json!({})),
        ];
        let resources = decode(&encode(Format::Protobuf, Route::Events, &records));
        assert_eq!(resources.len(), 1);
        let got: Vec<(u64, i32, &str)> = resources[0]
            .1
            .iter()
            .map(|r| {
                (
                    r.time_unix_nano,
                    r.severity_number,
                    r.severity_text.as_str(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (1_731_920_385_000_000_000, 13, "Warning"),
                (1_731_920_385_123_456_000, 9, "Normal"),
                (1_731_920_400_000_001_000, 9, "Normal"),
                (1_731_916_800_000_000_000, 0, ""),
                (1_704_067_200_000_000_000, 9, "Normal"),
            ]
        );
        // An Event's own `type` stays in the object; the watch type is the body's.
        let body = plain(resources[0].1[0].body.as_ref().expect("a body"));
        assert_eq!(
            (&body["type"], &body["object"]["type"]),
            (&json!("ADDED"), &json!("Warning"))
        );
        // A deleted Event known only by name: no time, no severity.
        let vanished = record(
            "delete",
            "DELETED",
            "events",
            json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "e", "namespace": "ns", "uid": "u"}}),
        );
        let resources = decode(&encode(Format::Protobuf, Route::Events, &[vanished]));
        let r = &resources[0].1[0];
        assert_eq!((r.time_unix_nano, r.severity_number), (0, 0));
    }

    #[test]
    fn records_without_the_otlp_fields_are_encoded_from_their_event_type() {
        let plain_record = |event_type: &str| json!({"timestamp": 1_700_000_000u64, "event_type": event_type, "json": pod("a", "p", "i")});
        let records = [
            plain_record("initapply"),
            plain_record("apply"),
            plain_record("delete"),
        ];
        let resources = decode(&encode(Format::Protobuf, Route::Resources, &records));
        let types: Vec<Json> = resources[0]
            .1
            .iter()
            .map(|r| plain(r.body.as_ref().expect("a body"))["type"].clone())
            .collect();
        assert_eq!(types, [json!("ADDED"), json!("MODIFIED"), json!("DELETED")]);
        let r = &resources[0].1[0];
        assert_eq!(r.observed_time_unix_nano, 1_700_000_000_000_000_000);
        assert_eq!(
            Json::Object(pairs(&r.attributes)),
            json!({"event.domain": "k8s", "event.name": "p", "hik8s.event_type": "initapply"})
        );
    }

    #[test]
    fn a_body_that_is_no_record_array_is_an_error() {
        let mut request = Encoder::new(Format::Protobuf, ("watchd", "0"), &[]);
        assert!(
            encode_records(&mut request, Route::Resources, b"{\"not\": \"an array\"}").is_err()
        );
        assert!(encode_records(&mut request, Route::Resources, b"[{\"timestamp\": 1}]").is_err());
        assert!(request.is_empty());
    }
}
