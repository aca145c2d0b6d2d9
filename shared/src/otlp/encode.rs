//! OTLP logs requests (`ExportLogsServiceRequest`), written straight into
//! the request body as protobuf or as OTLP/JSON, record by record.
//!
//! Why not message structs: logd encodes millions of lines a second while it
//! drains a backlog, and a `LogRecord` struct costs an allocation per string
//! (body, each attribute key and value). Here a record is written from the
//! line's own bytes, and the only allocation is the growing body.
//!
//! Protobuf: field numbers of `opentelemetry/proto/logs/v1/logs.proto` and
//! `common/v1/common.proto`; the varints and keys are prost's. A nested
//! message is written in place after a guess of its length's size, and
//! moved by a byte or two when the guess was wrong. OTLP/JSON follows the
//! OTLP specification: lowerCamelCase keys, 64-bit integers as strings,
//! enums as integers, no nulls.

use std::io::Write;

use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint};
use serde_json::Value as Json;

/// An attribute value or a body (`AnyValue`).
#[derive(Debug, Clone, Copy)]
pub enum Value<'a> {
    Str(&'a str),
    Int(i64),
    Double(f64),
    Bool(bool),
    /// A JSON value, as the `k8sobjects` receiver turns objects into
    /// bodies: objects become kvlists, arrays arrays, `null` an empty value.
    Json(&'a Json),
}

/// One `LogRecord`. A zero time or severity is left out.
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    pub time_unix_nano: u64,
    pub observed_time_unix_nano: u64,
    pub severity_number: i32,
    pub severity_text: &'a str,
    pub body: Value<'a>,
    pub attributes: &'a [(&'a str, Value<'a>)],
}

/// The wire format (`OTEL_EXPORTER_OTLP_PROTOCOL`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `http/protobuf`.
    Protobuf,
    /// `http/json`.
    Json,
}

impl Format {
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Protobuf => "application/x-protobuf",
            Format::Json => "application/json",
        }
    }
}

// Field numbers.
const REQUEST_RESOURCE_LOGS: u32 = 1;
const RESOURCE_LOGS_RESOURCE: u32 = 1;
const RESOURCE_LOGS_SCOPE_LOGS: u32 = 2;
const RESOURCE_ATTRIBUTES: u32 = 1;
const SCOPE_LOGS_SCOPE: u32 = 1;
const SCOPE_LOGS_LOG_RECORDS: u32 = 2;
const SCOPE_NAME: u32 = 1;
const SCOPE_VERSION: u32 = 2;
const RECORD_TIME: u32 = 1;
const RECORD_SEVERITY_NUMBER: u32 = 2;
const RECORD_SEVERITY_TEXT: u32 = 3;
const RECORD_BODY: u32 = 5;
const RECORD_ATTRIBUTES: u32 = 6;
const RECORD_OBSERVED_TIME: u32 = 11;
const KEY_VALUE_KEY: u32 = 1;
const KEY_VALUE_VALUE: u32 = 2;
const ANY_STRING: u32 = 1;
const ANY_BOOL: u32 = 2;
const ANY_INT: u32 = 3;
const ANY_DOUBLE: u32 = 4;
const ANY_ARRAY: u32 = 5;
const ANY_KVLIST: u32 = 6;
/// `ArrayValue.values` and `KeyValueList.values`.
const LIST_VALUES: u32 = 1;

/// Builds one request: resources, each with its records, in order.
///
/// ```
/// use shared::otlp::encode::{Encoder, Format, Record, Value};
/// let mut request = Encoder::new(Format::Json, ("logd", "0.1.0"), &[]);
/// request.begin_resource(&[("k8s.pod.name", Value::Str("web-1"))]);
/// request.record(&Record {
///     time_unix_nano: 1_700_000_000_123_456_789,
///     observed_time_unix_nano: 0,
///     severity_number: 0,
///     severity_text: "",
///     body: Value::Str("hello"),
///     attributes: &[("log.iostream", Value::Str("stdout"))],
/// });
/// request.end_resource();
/// let body = request.finish();
/// assert!(body.starts_with(br#"{"resourceLogs":[{"resource":{"attributes":[{"key":"k8s.pod.name""#));
/// ```
pub struct Encoder<'c> {
    format: Format,
    out: Vec<u8>,
    /// Protobuf: where each open message's length goes, and the bytes
    /// reserved for it. JSON: unused.
    open: Vec<(usize, usize)>,
    scope: (&'c str, &'c str),
    /// Added to every resource (`OTEL_RESOURCE_ATTRIBUTES`).
    extra: &'c [(String, String)],
    resources: usize,
    records_in_resource: usize,
    records: usize,
}

impl<'c> Encoder<'c> {
    /// A request whose records come from the instrumentation scope
    /// `(name, version)`, with `extra` on every resource.
    pub fn new(format: Format, scope: (&'c str, &'c str), extra: &'c [(String, String)]) -> Self {
        Encoder::with_buffer(format, scope, extra, Vec::with_capacity(4096))
    }

    /// As [`Encoder::new`], writing into `out` (cleared first): a buffer of
    /// an earlier request, whose pages are already there.
    pub fn with_buffer(
        format: Format,
        scope: (&'c str, &'c str),
        extra: &'c [(String, String)],
        mut out: Vec<u8>,
    ) -> Self {
        out.clear();
        if format == Format::Json {
            out.extend_from_slice(br#"{"resourceLogs":["#);
        }
        Encoder {
            format,
            out,
            open: Vec::new(),
            scope,
            extra,
            resources: 0,
            records_in_resource: 0,
            records: 0,
        }
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.out.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records == 0
    }

    /// Records written so far.
    pub fn records(&self) -> usize {
        self.records
    }

    /// What was written since the last [`Encoder::clear_written`].
    pub fn written(&self) -> &[u8] {
        &self.out
    }

    /// Forgets what was written (it was sent), between resources: a request
    /// can be sent as it is written, one resource in memory at a time.
    pub fn clear_written(&mut self) {
        assert!(self.open.is_empty(), "cleared inside a resource");
        self.out.clear();
    }

    /// Reserves room for about `additional` more bytes.
    pub fn reserve(&mut self, additional: usize) {
        self.out.reserve(additional);
    }

    /// Opens a `ResourceLogs` with these attributes (then the configured
    /// ones) and its one `ScopeLogs`.
    pub fn begin_resource(&mut self, attributes: &[(&str, Value)]) {
        let extra = self.extra.iter().map(|(k, v)| (k.as_str(), Value::Str(v)));
        let (name, version) = self.scope;
        match self.format {
            Format::Protobuf => {
                self.begin(REQUEST_RESOURCE_LOGS, 3);
                self.begin(RESOURCE_LOGS_RESOURCE, 1);
                for (key, value) in attributes.iter().copied().chain(extra) {
                    self.key_value(RESOURCE_ATTRIBUTES, key, value);
                }
                self.end();
                self.begin(RESOURCE_LOGS_SCOPE_LOGS, 3);
                self.begin(SCOPE_LOGS_SCOPE, 1);
                self.string_field(SCOPE_NAME, name);
                self.string_field(SCOPE_VERSION, version);
                self.end();
            }
            Format::Json => {
                if self.resources > 0 {
                    self.out.push(b',');
                }
                self.out.extend_from_slice(br#"{"resource":{"attributes":"#);
                self.json_key_values(attributes.iter().copied().chain(extra));
                self.out
                    .extend_from_slice(br#"},"scopeLogs":[{"scope":{"name":"#);
                json_string(&mut self.out, name);
                self.out.extend_from_slice(br#","version":"#);
                json_string(&mut self.out, version);
                self.out.extend_from_slice(br#"},"logRecords":["#);
            }
        }
        self.resources += 1;
        self.records_in_resource = 0;
    }

    /// Writes a record into the open resource.
    pub fn record(&mut self, record: &Record) {
        match self.format {
            Format::Protobuf => self.pb_record(record),
            Format::Json => {
                if self.records_in_resource > 0 {
                    self.out.push(b',');
                }
                self.json_record(record);
            }
        }
        self.records_in_resource += 1;
        self.records += 1;
    }

    /// Closes the resource opened last.
    pub fn end_resource(&mut self) {
        match self.format {
            Format::Protobuf => {
                self.end(); // ScopeLogs
                self.end(); // ResourceLogs
            }
            Format::Json => self.out.extend_from_slice(b"]}]}"),
        }
    }

    /// The request body.
    pub fn finish(mut self) -> Vec<u8> {
        debug_assert!(self.open.is_empty(), "a resource left open");
        if self.format == Format::Json {
            self.out.extend_from_slice(b"]}");
        }
        self.out
    }

    // Protobuf.

    fn pb_record(&mut self, r: &Record) {
        self.begin(SCOPE_LOGS_LOG_RECORDS, 2);
        if r.time_unix_nano != 0 {
            encode_key(RECORD_TIME, WireType::SixtyFourBit, &mut self.out);
            self.out.extend_from_slice(&r.time_unix_nano.to_le_bytes());
        }
        if r.severity_number != 0 {
            encode_key(RECORD_SEVERITY_NUMBER, WireType::Varint, &mut self.out);
            encode_varint(r.severity_number as u64, &mut self.out);
        }
        if !r.severity_text.is_empty() {
            self.string_field(RECORD_SEVERITY_TEXT, r.severity_text);
        }
        self.value_field(RECORD_BODY, r.body);
        for &(key, value) in r.attributes {
            self.key_value(RECORD_ATTRIBUTES, key, value);
        }
        if r.observed_time_unix_nano != 0 {
            encode_key(RECORD_OBSERVED_TIME, WireType::SixtyFourBit, &mut self.out);
            self.out
                .extend_from_slice(&r.observed_time_unix_nano.to_le_bytes());
        }
        self.end();
    }

    fn key_value(&mut self, field: u32, key: &str, value: Value) {
        self.begin(field, 1);
        self.string_field(KEY_VALUE_KEY, key);
        self.value_field(KEY_VALUE_VALUE, value);
        self.end();
    }

    /// An `AnyValue` field (always written: an empty one means "no value").
    fn value_field(&mut self, field: u32, value: Value) {
        match value {
            // Strings and scalars have known lengths: no reservation.
            Value::Str(s) => {
                let inner = 1 + encoded_len_varint(s.len() as u64) + s.len();
                encode_key(field, WireType::LengthDelimited, &mut self.out);
                encode_varint(inner as u64, &mut self.out);
                self.string_field(ANY_STRING, s);
            }
            Value::Json(json) => self.json_value_field(field, json),
            scalar => {
                self.begin(field, 1);
                self.scalar(scalar);
                self.end();
            }
        }
    }

    fn scalar(&mut self, value: Value) {
        match value {
            Value::Str(s) => self.string_field(ANY_STRING, s),
            Value::Bool(b) => {
                encode_key(ANY_BOOL, WireType::Varint, &mut self.out);
                encode_varint(u64::from(b), &mut self.out);
            }
            Value::Int(i) => {
                encode_key(ANY_INT, WireType::Varint, &mut self.out);
                encode_varint(i as u64, &mut self.out);
            }
            Value::Double(d) => {
                encode_key(ANY_DOUBLE, WireType::SixtyFourBit, &mut self.out);
                self.out.extend_from_slice(&d.to_le_bytes());
            }
            Value::Json(_) => unreachable!("written by json_value_field"),
        }
    }

    fn json_value_field(&mut self, field: u32, json: &Json) {
        self.begin(field, 1);
        match json {
            Json::Null => {}
            Json::Bool(b) => self.scalar(Value::Bool(*b)),
            Json::String(s) => self.string_field(ANY_STRING, s),
            Json::Number(n) => self.scalar(number(n)),
            Json::Array(items) => {
                self.begin(ANY_ARRAY, 2);
                for item in items {
                    self.json_value_field(LIST_VALUES, item);
                }
                self.end();
            }
            Json::Object(map) => {
                self.begin(ANY_KVLIST, 2);
                for (key, value) in map {
                    self.begin(LIST_VALUES, 1);
                    self.string_field(KEY_VALUE_KEY, key);
                    self.json_value_field(KEY_VALUE_VALUE, value);
                    self.end();
                }
                self.end();
            }
        }
        self.end();
    }

    fn string_field(&mut self, field: u32, s: &str) {
        encode_key(field, WireType::LengthDelimited, &mut self.out);
        encode_varint(s.len() as u64, &mut self.out);
        self.out.extend_from_slice(s.as_bytes());
    }

    /// Opens a length-delimited field, reserving `guess` bytes for its
    /// length.
    fn begin(&mut self, field: u32, guess: usize) {
        encode_key(field, WireType::LengthDelimited, &mut self.out);
        let at = self.out.len();
        self.out.resize(at + guess, 0);
        self.open.push((at, guess));
    }

    /// Closes the field opened last: writes its length, moving its content
    /// if the length takes more or fewer bytes than reserved.
    fn end(&mut self) {
        let (at, reserved) = self.open.pop().expect("a message is open");
        let content = at + reserved;
        let len = self.out.len() - content;
        let needed = encoded_len_varint(len as u64);
        if needed > reserved {
            let grow = needed - reserved;
            self.out.resize(self.out.len() + grow, 0);
            self.out.copy_within(content..content + len, content + grow);
        } else if needed < reserved {
            self.out.copy_within(content..content + len, at + needed);
            self.out.truncate(at + needed + len);
        }
        let mut length = [0u8; 10];
        let mut slot = &mut length[..];
        encode_varint(len as u64, &mut slot);
        self.out[at..at + needed].copy_from_slice(&length[..needed]);
    }

    // OTLP/JSON.

    fn json_record(&mut self, r: &Record) {
        self.out.push(b'{');
        let mut first = true;
        let mut key = |out: &mut Vec<u8>, name: &str| {
            if !first {
                out.push(b',');
            }
            first = false;
            out.push(b'"');
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b"\":");
        };
        if r.time_unix_nano != 0 {
            key(&mut self.out, "timeUnixNano");
            json_u64_string(&mut self.out, r.time_unix_nano);
        }
        if r.observed_time_unix_nano != 0 {
            key(&mut self.out, "observedTimeUnixNano");
            json_u64_string(&mut self.out, r.observed_time_unix_nano);
        }
        if r.severity_number != 0 {
            key(&mut self.out, "severityNumber");
            json_number(&mut self.out, r.severity_number);
        }
        if !r.severity_text.is_empty() {
            key(&mut self.out, "severityText");
            json_string(&mut self.out, r.severity_text);
        }
        key(&mut self.out, "body");
        json_any(&mut self.out, r.body);
        if !r.attributes.is_empty() {
            key(&mut self.out, "attributes");
            self.json_key_values(r.attributes.iter().copied());
        }
        self.out.push(b'}');
    }

    fn json_key_values<'v>(&mut self, pairs: impl Iterator<Item = (&'v str, Value<'v>)>) {
        json_key_values(&mut self.out, pairs);
    }
}

fn json_key_values<'v>(out: &mut Vec<u8>, pairs: impl Iterator<Item = (&'v str, Value<'v>)>) {
    out.push(b'[');
    for (i, (key, value)) in pairs.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(br#"{"key":"#);
        json_string(out, key);
        out.extend_from_slice(br#","value":"#);
        json_any(out, value);
        out.push(b'}');
    }
    out.push(b']');
}

/// An `AnyValue` object: `{"stringValue":"…"}`, `{"intValue":"5"}`, …
fn json_any(out: &mut Vec<u8>, value: Value) {
    match value {
        Value::Str(s) => {
            out.extend_from_slice(br#"{"stringValue":"#);
            json_string(out, s);
        }
        Value::Int(i) => {
            out.extend_from_slice(br#"{"intValue":"#);
            json_u64_string(out, i);
        }
        Value::Double(d) => {
            out.extend_from_slice(br#"{"doubleValue":"#);
            // std's shortest round-trip form, a valid JSON number when
            // finite (and no float formatter more in logd's binary); the
            // others are strings in the protobuf JSON mapping.
            if d.is_finite() {
                let _ = write!(out, "{d}");
            } else if d.is_nan() {
                out.extend_from_slice(br#""NaN""#);
            } else if d > 0.0 {
                out.extend_from_slice(br#""Infinity""#);
            } else {
                out.extend_from_slice(br#""-Infinity""#);
            }
        }
        Value::Bool(b) => {
            out.extend_from_slice(br#"{"boolValue":"#);
            out.extend_from_slice(if b { b"true" } else { b"false" });
        }
        Value::Json(json) => match json {
            Json::Null => out.push(b'{'),
            Json::Bool(b) => return json_any(out, Value::Bool(*b)),
            Json::Number(n) => return json_any(out, number(n)),
            Json::String(s) => return json_any(out, Value::Str(s)),
            Json::Array(items) => {
                out.extend_from_slice(br#"{"arrayValue":{"values":["#);
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    json_any(out, Value::Json(item));
                }
                out.extend_from_slice(b"]}");
            }
            Json::Object(map) => {
                out.extend_from_slice(br#"{"kvlistValue":{"values":"#);
                json_key_values(out, map.iter().map(|(k, v)| (k.as_str(), Value::Json(v))));
                out.push(b'}');
            }
        },
    }
    out.push(b'}');
}

/// A JSON number as the `AnyValue` the `k8sobjects` receiver makes of it:
/// an integer when it is one (and fits), else a double.
fn number(n: &serde_json::Number) -> Value<'static> {
    match n.as_i64() {
        Some(i) => Value::Int(i),
        None => Value::Double(n.as_f64().unwrap_or(f64::NAN)),
    }
}

fn json_string(out: &mut Vec<u8>, s: &str) {
    serde_json::to_writer(&mut *out, s).expect("writing JSON to a Vec cannot fail");
}

/// A 64-bit integer, as OTLP/JSON writes them: in a string.
fn json_u64_string(out: &mut Vec<u8>, n: impl serde::Serialize) {
    out.push(b'"');
    json_number(out, n);
    out.push(b'"');
}

fn json_number(out: &mut Vec<u8>, n: impl serde::Serialize) {
    serde_json::to_writer(&mut *out, &n).expect("writing JSON to a Vec cannot fail");
}
