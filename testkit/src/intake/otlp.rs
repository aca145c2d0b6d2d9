//! `POST /v1/logs` (or any path ending in `/v1/logs`, such as Loki's
//! `/otlp/v1/logs`): an OTLP/HTTP logs receiver, for the daemons' OTLP sink.
//!
//! It is a route of the intake so that the intake's listener, keep-alive,
//! latency, faults, in-flight count and request log apply to it unchanged;
//! only the bearer token is not asked for (OTLP receivers do not use the
//! intake's OAuth). Bodies are decoded with the official message types
//! (`opentelemetry-proto`), so what a sender gets wrong in the encoding
//! fails here as it would at a real receiver: a 400, never a silent success.

mod json;
mod records;

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::Mutex;

use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::AnyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use prost::Message;

use super::http::{RequestHead, Response};
use super::store::Delivery;
use super::token::media_type;
use super::{MAX_OTLP_BODY_BYTES, Shared};

pub(crate) use records::flatten;
pub use records::{OtlpRecord, any_value_json};

/// How an accepted export is answered ([`super::Intake::set_otlp_answer`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum OtlpAnswer {
    /// 200 with an empty `ExportLogsServiceResponse`, as the Collector
    /// answers.
    #[default]
    Ok200,
    /// 200 with `partial_success` set: the sender is told `rejected`
    /// records were refused for good, with `message`.
    PartialSuccess { rejected: i64, message: String },
    /// 204 with no body, as Loki's OTLP endpoint answers.
    NoContent204,
}

/// The encoding of a request body, and of its answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OtlpFormat {
    /// `Content-Type: application/x-protobuf`.
    Protobuf,
    /// `Content-Type: application/json` (OTLP/JSON).
    Json,
}

impl OtlpFormat {
    fn content_type(self) -> &'static str {
        match self {
            OtlpFormat::Protobuf => "application/x-protobuf",
            OtlpFormat::Json => "application/json",
        }
    }
}

/// One accepted (2xx) export request.
#[derive(Clone, Debug, PartialEq)]
pub struct OtlpRequest {
    /// The request path, e.g. `/v1/logs` or `/otlp/v1/logs`.
    pub path: String,
    pub format: OtlpFormat,
    /// Whether the body came with `Content-Encoding: gzip`.
    pub gzip: bool,
    /// Every request header, names in lower case (values of a repeated
    /// header joined with `, `), to check that configured headers such as
    /// `authorization` or `x-scope-orgid` arrived.
    pub headers: BTreeMap<String, String>,
    /// Body bytes as received (compressed, if gzip).
    pub wire_bytes: usize,
    /// The decoded body.
    pub request: ExportLogsServiceRequest,
}

/// The receiver's settings, changed by the test thread at any time.
#[derive(Default)]
pub(crate) struct OtlpState {
    answer: Mutex<OtlpAnswer>,
    /// A request with a record whose body has a string containing one of
    /// these is refused with 400.
    refused_bodies: Mutex<Vec<String>>,
}

impl OtlpState {
    pub(crate) fn set_answer(&self, answer: OtlpAnswer) {
        *self.answer.lock().expect("otlp answer lock") = answer;
    }

    pub(crate) fn refuse_body_containing(&self, needle: &str) {
        self.refused_bodies
            .lock()
            .expect("otlp refusals lock")
            .push(needle.to_owned());
    }

    pub(crate) fn clear_refusals(&self) {
        self.refused_bodies
            .lock()
            .expect("otlp refusals lock")
            .clear();
    }
}

/// `/v1/logs`, and any path ending in it (a receiver behind a prefix).
pub(crate) fn is_otlp_path(path: &str) -> bool {
    path.ends_with("/v1/logs")
}

/// Decodes, checks and answers an export request: 415 for a content type or
/// encoding OTLP/HTTP does not have, 400 (with a `google.rpc.Status`) for a
/// body that does not decode or holds a refused record, 413 for a body
/// that inflates past [`MAX_OTLP_BODY_BYTES`].
pub(crate) fn export(
    shared: &Shared,
    head: &RequestHead,
    body: Vec<u8>,
) -> Result<(Response, Delivery), Response> {
    let content_type = head.header("content-type").unwrap_or("");
    let format = match media_type(content_type).to_ascii_lowercase().as_str() {
        "application/x-protobuf" => OtlpFormat::Protobuf,
        "application/json" => OtlpFormat::Json,
        _ => {
            return Err(Response::text(
                415,
                format!(
                    "Content-Type {content_type:?} is neither application/x-protobuf nor application/json"
                ),
            ));
        }
    };
    let gzip = match head.header("content-encoding").map(str::trim) {
        None | Some("") => false,
        Some(e) if e.eq_ignore_ascii_case("identity") => false,
        Some(e) if e.eq_ignore_ascii_case("gzip") => true,
        Some(e) => {
            return Err(Response::text(
                415,
                format!("Content-Encoding {e:?} is not gzip"),
            ));
        }
    };
    let wire_bytes = body.len();
    let body = if gzip { gunzip(&body, format)? } else { body };
    if shared.opts.count_only && format == OtlpFormat::Protobuf && !refusing(shared) {
        let records = count::records(body)
            .map_err(|e| bad_request(format, &format!("cannot decode the body: {e}")))?;
        let answer = shared.otlp.answer.lock().expect("otlp answer lock").clone();
        return Ok((
            answer_response(&answer, format),
            Delivery::Otlp {
                request: None,
                records,
            },
        ));
    }
    let request = match format {
        OtlpFormat::Protobuf => {
            ExportLogsServiceRequest::decode(body.as_slice()).map_err(|e| e.to_string())
        }
        OtlpFormat::Json => json::decode(&body),
    }
    .map_err(|e| bad_request(format, &format!("cannot decode the body: {e}")))?;
    if let Some(needle) = refused_needle(shared, &request) {
        return Err(bad_request(
            format,
            &format!("refused: a log record's body contains {needle:?}"),
        ));
    }
    let records = request
        .resource_logs
        .iter()
        .flat_map(|r| &r.scope_logs)
        .map(|s| s.log_records.len() as u64)
        .sum();
    let request = (!shared.opts.count_only).then(|| OtlpRequest {
        path: head.path.clone(),
        format,
        gzip,
        headers: header_map(head),
        wire_bytes,
        request,
    });
    let answer = shared.otlp.answer.lock().expect("otlp answer lock").clone();
    Ok((
        answer_response(&answer, format),
        Delivery::Otlp { request, records },
    ))
}

/// Inflates a gzip body, up to the body limit.
fn gunzip(body: &[u8], format: OtlpFormat) -> Result<Vec<u8>, Response> {
    let mut inflated = Vec::new();
    flate2::read::GzDecoder::new(body)
        .take(MAX_OTLP_BODY_BYTES as u64 + 1)
        .read_to_end(&mut inflated)
        .map_err(|e| bad_request(format, &format!("cannot gunzip the body: {e}")))?;
    if inflated.len() > MAX_OTLP_BODY_BYTES {
        return Err(Response::text(413, "gzip body inflates past the limit"));
    }
    Ok(inflated)
}

fn header_map(head: &RequestHead) -> BTreeMap<String, String> {
    let mut map = BTreeMap::<String, String>::new();
    for (name, value) in head.headers() {
        map.entry(name.to_ascii_lowercase())
            .and_modify(|v| {
                v.push_str(", ");
                v.push_str(value);
            })
            .or_insert_with(|| value.clone());
    }
    map
}

/// The first refused needle found in a string of a record's body (a string
/// body, or a string anywhere in a kvlist or array body).
fn refusing(shared: &Shared) -> bool {
    !shared
        .otlp
        .refused_bodies
        .lock()
        .expect("otlp refusals lock")
        .is_empty()
}

/// For benchmarks (`count_only`, protobuf): a request's records counted
/// without decoding them. The full decode into the official types (an
/// allocation per string) costs this receiver more than the sender's
/// encoding, and a benchmark measures the sender; the records are still
/// framed as the official definitions say.
mod count {
    use bytes::Bytes;
    use prost::Message;

    #[derive(Clone, PartialEq, Message)]
    struct Request {
        #[prost(message, repeated, tag = "1")]
        resource_logs: Vec<ResourceLogs>,
    }

    #[derive(Clone, PartialEq, Message)]
    struct ResourceLogs {
        #[prost(message, repeated, tag = "2")]
        scope_logs: Vec<ScopeLogs>,
    }

    #[derive(Clone, PartialEq, Message)]
    struct ScopeLogs {
        /// Slices of the body, not copies.
        #[prost(bytes = "bytes", repeated, tag = "2")]
        log_records: Vec<Bytes>,
    }

    pub(super) fn records(body: Vec<u8>) -> Result<u64, prost::DecodeError> {
        let request = Request::decode(Bytes::from(body))?;
        Ok(request
            .resource_logs
            .iter()
            .flat_map(|r| &r.scope_logs)
            .map(|s| s.log_records.len() as u64)
            .sum())
    }
}

fn refused_needle(shared: &Shared, request: &ExportLogsServiceRequest) -> Option<String> {
    let needles = shared
        .otlp
        .refused_bodies
        .lock()
        .expect("otlp refusals lock");
    if needles.is_empty() {
        return None;
    }
    let bodies = request
        .resource_logs
        .iter()
        .flat_map(|r| &r.scope_logs)
        .flat_map(|s| &s.log_records)
        .filter_map(|record| record.body.as_ref());
    for body in bodies {
        if let Some(needle) = needles.iter().find(|n| has_string_containing(body, n)) {
            return Some(needle.clone());
        }
    }
    None
}

fn has_string_containing(value: &AnyValue, needle: &str) -> bool {
    match &value.value {
        Some(Any::StringValue(s)) => s.contains(needle),
        Some(Any::ArrayValue(array)) => array
            .values
            .iter()
            .any(|v| has_string_containing(v, needle)),
        Some(Any::KvlistValue(list)) => list
            .values
            .iter()
            .filter_map(|kv| kv.value.as_ref())
            .any(|v| has_string_containing(v, needle)),
        _ => false,
    }
}

fn answer_response(answer: &OtlpAnswer, format: OtlpFormat) -> Response {
    let (status, partial_success) = match answer {
        OtlpAnswer::Ok200 => (200, None),
        OtlpAnswer::PartialSuccess { rejected, message } => (
            200,
            Some(ExportLogsPartialSuccess {
                rejected_log_records: *rejected,
                error_message: message.clone(),
            }),
        ),
        OtlpAnswer::NoContent204 => (204, None),
    };
    let body = match (status, format) {
        (204, _) => Vec::new(),
        (_, OtlpFormat::Protobuf) => ExportLogsServiceResponse { partial_success }.encode_to_vec(),
        (_, OtlpFormat::Json) => json::response(partial_success.as_ref()),
    };
    Response {
        status,
        content_type: format.content_type(),
        body,
        retry_after_secs: None,
    }
}

/// `google.rpc.Status`, the body OTLP/HTTP gives a refused request.
#[derive(Clone, PartialEq, Message)]
struct Status {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

/// `google.rpc.Code.INVALID_ARGUMENT`.
const INVALID_ARGUMENT: i32 = 3;

/// A 400 with a `google.rpc.Status`, in the request's format.
fn bad_request(format: OtlpFormat, message: &str) -> Response {
    let body = match format {
        OtlpFormat::Protobuf => Status {
            code: INVALID_ARGUMENT,
            message: message.to_owned(),
        }
        .encode_to_vec(),
        OtlpFormat::Json => serde_json::json!({"code": INVALID_ARGUMENT, "message": message})
            .to_string()
            .into_bytes(),
    };
    Response {
        status: 400,
        content_type: format.content_type(),
        body,
        retry_after_secs: None,
    }
}
