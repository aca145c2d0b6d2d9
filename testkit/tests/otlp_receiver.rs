//! The test intake's OTLP/HTTP logs receiver (`/v1/logs`), driven over real
//! HTTP with requests built from the official message types, and with
//! handwritten OTLP/JSON as the spec writes it.

use std::io::Write;
use std::time::{Duration, Instant};

use flate2::Compression;
use flate2::write::GzEncoder;
use serde_json::{Value, json};
use testkit::intake::opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use testkit::intake::opentelemetry_proto::tonic::common::v1::{
    AnyValue, InstrumentationScope, KeyValue, KeyValueList, any_value,
};
use testkit::intake::opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use testkit::intake::opentelemetry_proto::tonic::resource::v1::Resource;
use testkit::intake::prost::Message;
use testkit::intake::{Faults, Intake, IntakeOptions, OtlpAnswer, OtlpFormat, any_value_json};

const WAIT: Duration = Duration::from_secs(20);
const PROTOBUF: &str = "application/x-protobuf";
const JSON: &str = "application/json";

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .new_agent()
}

struct Answer {
    status: u16,
    content_type: Option<String>,
    retry_after: Option<String>,
    body: Vec<u8>,
}

impl Answer {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Posts `body` to `path` with `headers`; an error if no answer came.
fn try_post(
    intake: &Intake,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<Answer, ureq::Error> {
    let mut request = agent().post(format!("{}{path}", intake.url()));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let mut response = request.send(body)?;
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|v| v.to_str().expect("an ASCII header").to_owned())
    };
    Ok(Answer {
        status: response.status().as_u16(),
        content_type: header("content-type"),
        retry_after: header("retry-after"),
        body: response.body_mut().read_to_vec().expect("a readable body"),
    })
}

fn post(intake: &Intake, content_type: &str, body: &[u8]) -> Answer {
    try_post(intake, "/v1/logs", &[("Content-Type", content_type)], body)
        .expect("the request got an answer")
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

fn string(s: &str) -> AnyValue {
    AnyValue {
        value: Some(any_value::Value::StringValue(s.to_owned())),
    }
}

fn key_value(key: &str, value: AnyValue) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(value),
        ..KeyValue::default()
    }
}

fn record(time_unix_nano: u64, body: AnyValue) -> LogRecord {
    LogRecord {
        time_unix_nano,
        observed_time_unix_nano: time_unix_nano + 1_000,
        severity_number: 9,
        severity_text: "INFO".into(),
        body: Some(body),
        attributes: vec![key_value("log.iostream", string("stdout"))],
        ..LogRecord::default()
    }
}

/// One resource (a pod), one scope (`logd`), these records.
fn export(records: Vec<LogRecord>) -> ExportLogsServiceRequest {
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes: vec![
                    key_value("k8s.namespace.name", string("default")),
                    key_value("k8s.pod.name", string("web-1")),
                ],
                ..Resource::default()
            }),
            scope_logs: vec![ScopeLogs {
                scope: Some(InstrumentationScope {
                    name: "logd".into(),
                    version: "0.1.0".into(),
                    ..InstrumentationScope::default()
                }),
                log_records: records,
                ..ScopeLogs::default()
            }],
            ..ResourceLogs::default()
        }],
    }
}

fn two_lines() -> ExportLogsServiceRequest {
    export(vec![
        record(1_700_000_000_000_000_001, string("first line")),
        record(1_700_000_000_000_000_002, string("second line")),
    ])
}

/// A handwritten, spec-conformant OTLP/JSON export: lowerCamelCase keys,
/// 64-bit integers as strings, a kvlist body holding an array.
const JSON_EXPORT: &str = r#"{"resourceLogs":[{
  "resource":{"attributes":[{"key":"k8s.pod.name","value":{"stringValue":"web-1"}}]},
  "scopeLogs":[{
    "scope":{"name":"logd","version":"0.1.0"},
    "logRecords":[{
      "timeUnixNano":"1700000000123456789",
      "observedTimeUnixNano":"1700000000223456789",
      "severityNumber":17,
      "severityText":"ERROR",
      "body":{"kvlistValue":{"values":[
        {"key":"msg","value":{"stringValue":"disk full"}},
        {"key":"code","value":{"intValue":"28"}},
        {"key":"ratio","value":{"doubleValue":0.5}},
        {"key":"fatal","value":{"boolValue":false}},
        {"key":"paths","value":{"arrayValue":{"values":[{"stringValue":"/var"},{"intValue":"1"}]}}},
        {"key":"empty","value":{"kvlistValue":{}}}
      ]}},
      "attributes":[{"key":"log.iostream","value":{"stringValue":"stderr"}}],
      "traceId":"5b8efff798038103d269b633813fc60c",
      "spanId":"eee19b7ec3c1b174"
    }]
  }]
}]}"#;

fn json_export_body() -> Value {
    json!({
        "msg": "disk full",
        "code": 28,
        "ratio": 0.5,
        "fatal": false,
        "paths": ["/var", 1],
        "empty": {},
    })
}

/// An OTLP/JSON `ExportLogsServiceResponse` as the official type. The spec
/// writes `rejectedLogRecords` (an int64) as a string, which the official
/// serde reads only as a number: turned into one first.
fn json_response(body: &[u8]) -> ExportLogsServiceResponse {
    let mut value: Value = serde_json::from_slice(body).expect("a JSON answer");
    if let Some(rejected) = value.pointer_mut("/partialSuccess/rejectedLogRecords") {
        let text = rejected.as_str().expect("int64 written as a string");
        *rejected = json!(text.parse::<i64>().unwrap());
    }
    serde_json::from_value(value).expect("an ExportLogsServiceResponse")
}

/// `google.rpc.Status`, the body of a 400.
#[derive(Clone, PartialEq, prost::Message)]
struct Status {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

#[test]
fn a_protobuf_export_is_stored_and_answered_with_an_empty_response() {
    let intake = Intake::start();
    let sent = two_lines();
    let body = sent.encode_to_vec();

    let answer = try_post(
        &intake,
        "/v1/logs",
        &[
            ("Content-Type", PROTOBUF),
            ("Authorization", "Bearer made-up"),
            ("X-Scope-OrgID", "tenant-1"),
        ],
        &body,
    )
    .unwrap();

    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.content_type.as_deref(), Some(PROTOBUF));
    let response = ExportLogsServiceResponse::decode(answer.body.as_slice()).unwrap();
    assert_eq!(response, ExportLogsServiceResponse::default());

    let requests = intake.otlp_requests();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(request.path, "/v1/logs");
    assert_eq!(request.format, OtlpFormat::Protobuf);
    assert!(!request.gzip);
    assert_eq!(request.wire_bytes, body.len());
    assert_eq!(request.request, sent);
    assert_eq!(request.headers["authorization"], "Bearer made-up");
    assert_eq!(request.headers["x-scope-orgid"], "tenant-1");

    let records = intake.otlp_records();
    assert_eq!(records.len(), 2);
    let first = &records[0];
    assert_eq!(first.resource["k8s.pod.name"], json!("web-1"));
    assert_eq!(first.resource["k8s.namespace.name"], json!("default"));
    assert_eq!(
        (first.scope_name.as_str(), first.scope_version.as_str()),
        ("logd", "0.1.0")
    );
    assert_eq!(first.time_unix_nano, 1_700_000_000_000_000_001);
    assert_eq!(first.observed_time_unix_nano, 1_700_000_000_000_001_001);
    assert_eq!(
        (first.severity_number, first.severity_text.as_str()),
        (9, "INFO")
    );
    assert_eq!(first.body, Some(string("first line")));
    assert_eq!(first.body_json(), json!("first line"));
    assert_eq!(first.attributes["log.iostream"], json!("stdout"));
    assert_eq!(records[1].body_json(), json!("second line"));
    assert_eq!(intake.otlp_record_count(), 2);

    let log = intake.requests();
    assert_eq!(log.len(), 1);
    assert_eq!((log[0].path.as_str(), log[0].status), ("/v1/logs", 200));
}

#[test]
fn a_gzipped_protobuf_export_is_inflated() {
    let intake = Intake::start();
    let sent = two_lines();
    let body = gzip(&sent.encode_to_vec());

    let answer = try_post(
        &intake,
        "/v1/logs",
        &[("Content-Type", PROTOBUF), ("Content-Encoding", "gzip")],
        &body,
    )
    .unwrap();

    assert_eq!(answer.status, 200, "{}", answer.text());
    let request = &intake.otlp_requests()[0];
    assert!(request.gzip);
    assert_eq!(request.wire_bytes, body.len());
    assert_eq!(request.request, sent);
}

#[test]
fn an_otlp_json_export_is_decoded_with_the_official_types_and_answered_in_json() {
    let intake = Intake::start();

    // Loki's form: the receiver under a prefix.
    let answer = try_post(
        &intake,
        "/otlp/v1/logs",
        &[("Content-Type", "application/json; charset=utf-8")],
        JSON_EXPORT.as_bytes(),
    )
    .unwrap();

    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.content_type.as_deref(), Some(JSON));
    assert_eq!(answer.text(), "{}");
    assert_eq!(
        json_response(&answer.body),
        ExportLogsServiceResponse::default()
    );
    let request = &intake.otlp_requests()[0];
    assert_eq!(request.path, "/otlp/v1/logs");
    assert_eq!(request.format, OtlpFormat::Json);
    let log_record = &request.request.resource_logs[0].scope_logs[0].log_records[0];
    assert_eq!(log_record.trace_id.len(), 16);
    assert_eq!(log_record.span_id.len(), 8);

    let records = intake.otlp_records();
    assert_eq!(records.len(), 1);
    let record = &records[0];
    assert_eq!(record.resource["k8s.pod.name"], json!("web-1"));
    assert_eq!(record.scope_name, "logd");
    assert_eq!(record.time_unix_nano, 1_700_000_000_123_456_789);
    assert_eq!(record.observed_time_unix_nano, 1_700_000_000_223_456_789);
    assert_eq!(
        (record.severity_number, record.severity_text.as_str()),
        (17, "ERROR")
    );
    assert_eq!(record.body_json(), json_export_body());
    assert_eq!(record.attributes["log.iostream"], json!("stderr"));
}

#[test]
fn a_gzipped_json_export_is_inflated() {
    let intake = Intake::start();
    let body = gzip(JSON_EXPORT.as_bytes());

    let answer = try_post(
        &intake,
        "/v1/logs",
        &[("Content-Type", JSON), ("Content-Encoding", "gzip")],
        &body,
    )
    .unwrap();

    assert_eq!(answer.status, 200, "{}", answer.text());
    let request = &intake.otlp_requests()[0];
    assert!(request.gzip);
    assert_eq!(request.format, OtlpFormat::Json);
    assert_eq!(request.wire_bytes, body.len());
    assert_eq!(intake.otlp_records()[0].body_json(), json_export_body());
}

#[test]
fn json_and_protobuf_of_the_same_export_decode_alike() {
    let intake = Intake::start();
    assert_eq!(post(&intake, JSON, JSON_EXPORT.as_bytes()).status, 200);
    let from_json = intake.otlp_requests()[0].request.clone();

    assert_eq!(
        post(&intake, PROTOBUF, &from_json.encode_to_vec()).status,
        200
    );

    assert_eq!(intake.otlp_requests()[1].request, from_json);
}

#[test]
fn json_with_snake_case_keys_is_refused_rather_than_read_as_empty() {
    let intake = Intake::start();
    let body = r#"{"resource_logs":[{"scope_logs":[{"log_records":[{"time_unix_nano":"1"}]}]}]}"#;

    let answer = post(&intake, JSON, body.as_bytes());

    assert_eq!(answer.status, 400);
    assert_eq!(answer.content_type.as_deref(), Some(JSON));
    let status: Value = serde_json::from_slice(&answer.body).unwrap();
    assert_eq!(status["code"], json!(3));
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .contains("resource_logs"),
        "{status}"
    );
    assert!(intake.otlp_requests().is_empty());
}

#[test]
fn undecodable_bodies_are_400_with_a_status_and_not_stored() {
    let intake = Intake::start();

    let answer = post(&intake, PROTOBUF, b"\xff\xff\xff not protobuf");
    assert_eq!(answer.status, 400);
    assert_eq!(answer.content_type.as_deref(), Some(PROTOBUF));
    let status = Status::decode(answer.body.as_slice()).expect("a google.rpc.Status");
    assert_eq!(status.code, 3);
    assert!(
        status.message.contains("cannot decode"),
        "{}",
        status.message
    );

    let answer = post(&intake, JSON, br#"{"resourceLogs": ["#);
    assert_eq!(answer.status, 400);
    let status: Value = serde_json::from_slice(&answer.body).unwrap();
    assert_eq!(status["code"], json!(3));

    let answer = try_post(
        &intake,
        "/v1/logs",
        &[("Content-Type", PROTOBUF), ("Content-Encoding", "gzip")],
        b"not gzip",
    )
    .unwrap();
    assert_eq!(answer.status, 400);

    assert!(intake.otlp_requests().is_empty());
    assert_eq!(intake.otlp_record_count(), 0);
}

#[test]
fn other_content_types_and_encodings_are_415() {
    let intake = Intake::start();
    let body = two_lines().encode_to_vec();

    assert_eq!(post(&intake, "text/plain", &body).status, 415);
    assert_eq!(post(&intake, "application/protobuf-ish", &body).status, 415);
    let answer = try_post(
        &intake,
        "/v1/logs",
        &[("Content-Type", PROTOBUF), ("Content-Encoding", "br")],
        &body,
    )
    .unwrap();
    assert_eq!(answer.status, 415);

    assert!(intake.otlp_requests().is_empty());
    assert_eq!(intake.status_counts().get(&415), Some(&3));
}

#[test]
fn a_partial_success_is_answered_in_the_request_format() {
    let intake = Intake::start();
    intake.set_otlp_answer(OtlpAnswer::PartialSuccess {
        rejected: 2,
        message: "too old".into(),
    });
    let expected = ExportLogsServiceResponse {
        partial_success: Some(ExportLogsPartialSuccess {
            rejected_log_records: 2,
            error_message: "too old".into(),
        }),
    };

    let answer = post(&intake, PROTOBUF, &two_lines().encode_to_vec());
    assert_eq!(answer.status, 200);
    assert_eq!(answer.content_type.as_deref(), Some(PROTOBUF));
    assert_eq!(
        ExportLogsServiceResponse::decode(answer.body.as_slice()).unwrap(),
        expected
    );

    let answer = post(&intake, JSON, JSON_EXPORT.as_bytes());
    assert_eq!(answer.status, 200);
    assert_eq!(answer.content_type.as_deref(), Some(JSON));
    let body: Value = serde_json::from_slice(&answer.body).unwrap();
    assert_eq!(
        body,
        json!({"partialSuccess": {"rejectedLogRecords": "2", "errorMessage": "too old"}})
    );
    assert_eq!(json_response(&answer.body), expected);

    // Still accepted: stored and counted whole.
    assert_eq!(intake.otlp_requests().len(), 2);
    assert_eq!(intake.otlp_record_count(), 3);
}

#[test]
fn no_content_is_a_204_without_a_body() {
    let intake = Intake::start();
    intake.set_otlp_answer(OtlpAnswer::NoContent204);

    let answer = post(&intake, PROTOBUF, &two_lines().encode_to_vec());
    assert_eq!(answer.status, 204);
    assert!(answer.body.is_empty());
    // An empty body is the empty ExportLogsServiceResponse.
    assert_eq!(
        ExportLogsServiceResponse::decode(answer.body.as_slice()).unwrap(),
        ExportLogsServiceResponse::default()
    );
    // The connection stays usable after a 204.
    assert_eq!(post(&intake, JSON, JSON_EXPORT.as_bytes()).status, 204);
    assert_eq!(intake.otlp_record_count(), 3);

    intake.set_otlp_answer(OtlpAnswer::Ok200);
    assert_eq!(post(&intake, JSON, JSON_EXPORT.as_bytes()).status, 200);
}

#[test]
fn injected_503_with_retry_after_applies_and_stores_nothing() {
    let intake = Intake::start();
    intake.set_faults(Faults {
        fail_503: 1.0,
        retry_after_secs: Some(7),
        ..Faults::default()
    });

    let answer = post(&intake, PROTOBUF, &two_lines().encode_to_vec());
    assert_eq!(answer.status, 503);
    assert_eq!(answer.retry_after.as_deref(), Some("7"));
    assert!(intake.otlp_requests().is_empty());
    assert_eq!(intake.otlp_record_count(), 0);

    intake.set_faults(Faults::default());
    assert_eq!(
        post(&intake, PROTOBUF, &two_lines().encode_to_vec()).status,
        200
    );
    assert_eq!(intake.otlp_record_count(), 2);
}

#[test]
fn injected_latency_delays_the_answer_and_counts_the_request_in_flight() {
    let intake = Intake::start();
    let latency = Duration::from_millis(300);
    intake.set_faults(Faults {
        latency,
        ..Faults::default()
    });
    let body = two_lines().encode_to_vec();

    std::thread::scope(|s| {
        let started = Instant::now();
        let sender = s.spawn(|| post(&intake, PROTOBUF, &body));
        assert!(
            intake.wait_for(WAIT, |i| i.in_flight() == 1),
            "the request never counted as in flight"
        );
        assert_eq!(sender.join().unwrap().status, 200);
        assert!(started.elapsed() >= latency, "{:?}", started.elapsed());
    });
    assert_eq!(intake.max_in_flight(), 1);
}

#[test]
fn refused_connections_apply() {
    let intake = Intake::start();
    let body = two_lines().encode_to_vec();

    intake.set_refusing(true);
    let refused = try_post(&intake, "/v1/logs", &[("Content-Type", PROTOBUF)], &body);
    assert!(refused.is_err(), "answered while refusing");

    intake.set_refusing(false);
    assert_eq!(post(&intake, PROTOBUF, &body).status, 200);
    assert_eq!(intake.otlp_record_count(), 2);
}

#[test]
fn a_poisoned_record_makes_its_request_a_400_until_it_is_split_off() {
    let intake = Intake::start();
    intake.otlp_refuse_body_containing("POISON");
    let fine = record(1, string("fine"));
    let poisoned = record(2, string("this line has POISON in it"));

    let answer = post(
        &intake,
        PROTOBUF,
        &export(vec![fine.clone(), poisoned.clone()]).encode_to_vec(),
    );
    assert_eq!(answer.status, 400);
    let status = Status::decode(answer.body.as_slice()).expect("a google.rpc.Status");
    assert!(status.message.contains("POISON"), "{}", status.message);
    assert_eq!(intake.otlp_record_count(), 0);

    // A string inside a kvlist body counts too.
    let nested = record(
        3,
        AnyValue {
            value: Some(any_value::Value::KvlistValue(KeyValueList {
                values: vec![key_value("msg", string("POISON again"))],
            })),
        },
    );
    assert_eq!(
        post(&intake, PROTOBUF, &export(vec![nested]).encode_to_vec()).status,
        400
    );

    // The split: the fine half goes through.
    assert_eq!(
        post(&intake, PROTOBUF, &export(vec![fine]).encode_to_vec()).status,
        200
    );
    assert_eq!(
        post(
            &intake,
            PROTOBUF,
            &export(vec![poisoned.clone()]).encode_to_vec()
        )
        .status,
        400
    );
    assert_eq!(intake.otlp_record_count(), 1);
    assert_eq!(intake.otlp_records()[0].body_json(), json!("fine"));

    intake.clear_rejections();
    assert_eq!(
        post(&intake, PROTOBUF, &export(vec![poisoned]).encode_to_vec()).status,
        200
    );
}

#[test]
fn count_only_counts_records_without_storing_them() {
    let intake = Intake::start_with(IntakeOptions {
        count_only: true,
        ..IntakeOptions::default()
    });

    assert_eq!(
        post(&intake, PROTOBUF, &two_lines().encode_to_vec()).status,
        200
    );
    assert_eq!(post(&intake, JSON, JSON_EXPORT.as_bytes()).status, 200);

    assert_eq!(intake.otlp_record_count(), 3);
    assert!(intake.otlp_requests().is_empty());
    assert!(intake.otlp_records().is_empty());
}

#[test]
fn the_intake_routes_still_ask_for_a_token() {
    let intake = Intake::start();
    let answer = try_post(
        &intake,
        "/logs",
        &[("Content-Type", "multipart/form-data; boundary=x")],
        b"",
    )
    .unwrap();
    assert_eq!(answer.status, 401);
    assert_eq!(intake.otlp_logs_url(), format!("{}/v1/logs", intake.url()));
}

#[test]
fn any_value_json_maps_every_kind() {
    let value = |v| AnyValue { value: Some(v) };
    use any_value::Value::*;
    assert_eq!(any_value_json(&value(IntValue(-5))), json!(-5));
    assert_eq!(any_value_json(&value(DoubleValue(1.25))), json!(1.25));
    assert_eq!(any_value_json(&value(DoubleValue(f64::NAN))), Value::Null);
    assert_eq!(any_value_json(&value(BoolValue(true))), json!(true));
    assert_eq!(
        any_value_json(&value(BytesValue(b"hi".to_vec()))),
        json!("aGk=")
    );
    assert_eq!(any_value_json(&AnyValue { value: None }), Value::Null);
}
