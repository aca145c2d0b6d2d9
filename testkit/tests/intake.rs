//! The test intake server, driven over real HTTP with hand-built requests.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{Value, json};
use testkit::intake::{
    CLIENT_ID, CLIENT_SECRET, Faults, Intake, IntakeOptions, LogBatch, MAX_LOGS_BODY_BYTES,
    MAX_MESSAGE_BYTES, STATIC_TOKEN,
};

const WAIT: Duration = Duration::from_secs(20);
const POD_PATH: &str = "/var/log/pods/default_web-1_0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0/app";
const BOUNDARY: &str = "test-boundary-7d1f";

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .new_agent()
}

struct Answer {
    status: u16,
    retry_after: Option<String>,
    body: String,
}

fn answer(result: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Answer {
    let mut response = result.expect("the request got an answer");
    Answer {
        status: response.status().as_u16(),
        retry_after: response
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().expect("ASCII Retry-After").to_owned()),
        body: response
            .body_mut()
            .read_to_string()
            .expect("a readable body"),
    }
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// A multipart body of `(name, content type, data)` parts.
fn multipart(parts: &[(&str, &str, &[u8])]) -> Vec<u8> {
    let mut body = Vec::new();
    for (name, content_type, data) in parts {
        write!(
            body,
            "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"\r\nContent-Type: {content_type}\r\n\r\n"
        )
        .unwrap();
        body.extend_from_slice(data);
        body.extend_from_slice(b"\r\n");
    }
    write!(body, "--{BOUNDARY}--\r\n").unwrap();
    body
}

fn logs_body(path: &str, file: &str, stream: &[u8]) -> Vec<u8> {
    let metadata = json!({"path": path, "file": file}).to_string();
    multipart(&[
        ("metadata", "application/json", metadata.as_bytes()),
        ("stream", "application/octet-stream", stream),
    ])
}

fn multipart_type() -> String {
    format!("multipart/form-data; boundary={BOUNDARY}")
}

fn post_logs_as(intake: &Intake, token: &str, content_type: &str, body: &[u8]) -> Answer {
    answer(
        agent()
            .post(format!("{}/logs", intake.url()))
            .header("Authorization", bearer(token))
            .header("Content-Type", content_type)
            .send(body),
    )
}

fn post_logs(intake: &Intake, body: &[u8]) -> Answer {
    post_logs_as(intake, STATIC_TOKEN, &multipart_type(), body)
}

fn post_json(intake: &Intake, route: &str, content_type: &str, body: &str) -> Answer {
    answer(
        agent()
            .post(format!("{}{route}", intake.url()))
            .header("Authorization", bearer(STATIC_TOKEN))
            .header("Content-Type", content_type)
            .send(body),
    )
}

fn request_token(intake: &Intake, user: &str, password: &str, form: &str) -> Answer {
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    answer(
        agent()
            .post(intake.token_url())
            .header("Authorization", format!("Basic {basic}"))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .send(form),
    )
}

fn issue_token(intake: &Intake) -> String {
    let answer = request_token(
        intake,
        CLIENT_ID,
        CLIENT_SECRET,
        "grant_type=client_credentials&audience=https%3A%2F%2Fapi.test",
    );
    assert_eq!(answer.status, 200, "{}", answer.body);
    let body: Value = serde_json::from_str(&answer.body).unwrap();
    body["access_token"]
        .as_str()
        .expect("an access_token")
        .to_owned()
}

fn line(message: &str) -> String {
    format!("2024-11-18T08:59:45.123456789Z stdout F {message}\n")
}

fn record(event_type: &str, kind: &str, name: &str) -> Value {
    json!({
        "timestamp": 1_731_920_385,
        "event_type": event_type,
        "json": {"apiVersion": "v1", "kind": kind, "metadata": {"name": name}},
    })
}

#[test]
fn well_formed_logs_request_is_stored_with_path_file_and_lines() {
    let intake = Intake::start();
    let stream = format!(
        "{}\n{}{}partial line without newline",
        line("one"),
        line("two"),
        line("")
    );
    let answer = post_logs(&intake, &logs_body(POD_PATH, "0.log", stream.as_bytes()));

    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(
        intake.log_batches(),
        vec![LogBatch {
            path: POD_PATH.into(),
            file: "0.log".into(),
            lines: vec![
                "2024-11-18T08:59:45.123456789Z stdout F one".into(),
                "2024-11-18T08:59:45.123456789Z stdout F two".into(),
                "2024-11-18T08:59:45.123456789Z stdout F ".into(),
            ],
        }]
    );
    assert_eq!(intake.log_lines().len(), 3);
    assert_eq!(intake.log_line_count(), 3);
}

#[test]
fn malformed_logs_requests_are_answered_500_and_not_stored() {
    let intake = Intake::start();
    let good_stream = line("hello");
    let good_metadata = json!({"path": POD_PATH, "file": "0.log"}).to_string();
    let good_metadata = good_metadata.as_bytes();
    let json_type = "application/json";
    let octet = "application/octet-stream";
    let long_message = format!(
        "2024-11-18T08:59:45Z{}\n",
        "x".repeat(MAX_MESSAGE_BYTES + 1)
    );
    let mut invalid_utf8 = line("bad ").into_bytes();
    invalid_utf8.insert(invalid_utf8.len() - 1, 0xff);

    // (what is wrong, Content-Type, body, part of the answer saying why)
    let mut cases: Vec<(&str, String, Vec<u8>, &str)> = vec![
        (
            "parts in the wrong order",
            multipart_type(),
            multipart(&[
                ("stream", octet, good_stream.as_bytes()),
                ("metadata", json_type, good_metadata),
            ]),
            "expected part \"metadata\", got Some(\"stream\")",
        ),
        (
            "a wrong part name",
            multipart_type(),
            multipart(&[
                ("meta", json_type, good_metadata),
                ("stream", octet, good_stream.as_bytes()),
            ]),
            "got Some(\"meta\")",
        ),
        (
            "metadata not application/json",
            multipart_type(),
            multipart(&[
                ("metadata", "text/plain", good_metadata),
                ("stream", octet, good_stream.as_bytes()),
            ]),
            "expected application/json",
        ),
        (
            "stream not application/octet-stream",
            multipart_type(),
            multipart(&[
                ("metadata", json_type, good_metadata),
                ("stream", "text/plain", good_stream.as_bytes()),
            ]),
            "expected application/octet-stream",
        ),
        (
            "no stream part",
            multipart_type(),
            multipart(&[("metadata", json_type, good_metadata)]),
            "no stream",
        ),
        (
            "a third part",
            multipart_type(),
            multipart(&[
                ("metadata", json_type, good_metadata),
                ("stream", octet, good_stream.as_bytes()),
                ("stream", octet, good_stream.as_bytes()),
            ]),
            "more than two parts",
        ),
        (
            "metadata not JSON",
            multipart_type(),
            multipart(&[
                ("metadata", json_type, b"{path:"),
                ("stream", octet, good_stream.as_bytes()),
            ]),
            "metadata is not JSON",
        ),
        (
            "metadata without file",
            multipart_type(),
            multipart(&[
                (
                    "metadata",
                    json_type,
                    json!({"path": POD_PATH}).to_string().as_bytes(),
                ),
                ("stream", octet, good_stream.as_bytes()),
            ]),
            "no string \"file\"",
        ),
        (
            "not multipart",
            "application/octet-stream".into(),
            good_stream.clone().into_bytes(),
            "is not multipart/form-data",
        ),
        (
            "not a multipart body",
            multipart_type(),
            b"garbage".to_vec(),
            "malformed multipart body",
        ),
        (
            "invalid UTF-8 in the stream",
            multipart_type(),
            logs_body(POD_PATH, "0.log", &invalid_utf8),
            "not valid UTF-8",
        ),
        (
            "a message over 30720 bytes",
            multipart_type(),
            logs_body(POD_PATH, "0.log", long_message.as_bytes()),
            "message of 30721 bytes",
        ),
        (
            "a timestamp with an offset",
            multipart_type(),
            logs_body(
                POD_PATH,
                "0.log",
                b"2024-11-18T08:59:45+02:00 stdout F hi\n",
            ),
            "no 'Z'",
        ),
        (
            "a timestamp not in %Y-%m-%dT%H:%M:%S%.f",
            multipart_type(),
            logs_body(POD_PATH, "0.log", b"2024-11-18 08:59:45Z stdout F hi\n"),
            "bad timestamp",
        ),
        (
            "a line without timestamp",
            multipart_type(),
            logs_body(POD_PATH, "0.log", b"just text\n"),
            "no 'Z'",
        ),
    ];
    for bad_path in [
        "/host/var/log/pods/default_web-1_0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0/app",
        "/var/log/pods/default_web-1_0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0/app/0.log",
        "/var/log/pods/default_web-1/app",
        "/var/log/pods/default_web-1_not-a-uid/app",
    ] {
        let body = logs_body(bad_path, "0.log", good_stream.as_bytes());
        cases.push(("a bad path", multipart_type(), body, "metadata.path"));
    }

    for (what, content_type, body, why) in &cases {
        let answer = post_logs_as(&intake, STATIC_TOKEN, content_type, body);
        assert_eq!(answer.status, 500, "{what}: {}", answer.body);
        assert!(
            answer.body.contains(why),
            "{what}: expected {why:?} in {:?}",
            answer.body
        );
    }
    assert!(intake.log_batches().is_empty());

    // The limit itself is allowed.
    let longest = format!("2024-11-18T08:59:45Z{}\n", "x".repeat(MAX_MESSAGE_BYTES));
    let answer = post_logs(&intake, &logs_body(POD_PATH, "0.log", longest.as_bytes()));
    assert_eq!(answer.status, 200, "{}", answer.body);
}

#[test]
fn logs_body_over_32_mib_is_413_and_the_connection_stays_usable() {
    let intake = Intake::start();
    let agent = agent();
    let stream = line(&"y".repeat(1000)).repeat(MAX_LOGS_BODY_BYTES / 1000 + 1);
    let body = logs_body(POD_PATH, "0.log", stream.as_bytes());
    assert!(body.len() > MAX_LOGS_BODY_BYTES);
    let post = |body: &[u8]| {
        answer(
            agent
                .post(format!("{}/logs", intake.url()))
                .header("Authorization", bearer(STATIC_TOKEN))
                .header("Content-Type", multipart_type())
                .send(body),
        )
    };

    assert_eq!(post(&body).status, 413);
    assert!(intake.log_batches().is_empty());
    assert_eq!(
        post(&logs_body(POD_PATH, "0.log", line("small").as_bytes())).status,
        200
    );
}

#[test]
fn json_routes_match_only_json_and_store_records() {
    let intake = Intake::start();
    let batch = json!([record("initapply", "Pod", "a"), record("apply", "Pod", "b")]).to_string();

    assert_eq!(
        post_json(&intake, "/resources", "text/plain", &batch).status,
        404
    );
    assert_eq!(
        post_json(
            &intake,
            "/resources",
            "application/json; charset=utf-8",
            &batch
        )
        .status,
        200
    );
    assert_eq!(
        post_json(
            &intake,
            "/event",
            "application/json",
            &record("delete", "Event", "e").to_string()
        )
        .status,
        200
    );
    assert_eq!(
        post_json(
            &intake,
            "/customresources",
            "application/json",
            &json!([record("apply", "Widget", "w")]).to_string()
        )
        .status,
        200
    );

    let names = |route: &str| -> Vec<String> {
        intake
            .records(route)
            .iter()
            .map(|r| r["json"]["metadata"]["name"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(names("resources"), ["a", "b"]);
    assert_eq!(names("events"), ["e"]);
    assert_eq!(names("customresources"), ["w"]);
    assert_eq!(intake.records("resources")[0]["event_type"], "initapply");
}

#[test]
fn json_record_without_api_version_or_kind_is_answered_200_and_dropped() {
    let intake = Intake::start();
    let mut no_kind = record("apply", "Pod", "no-kind");
    no_kind["json"].as_object_mut().unwrap().remove("kind");
    let mut no_api_version = record("apply", "Pod", "no-api-version");
    no_api_version["json"]
        .as_object_mut()
        .unwrap()
        .remove("apiVersion");
    let batch = json!([no_kind, record("apply", "Pod", "kept"), no_api_version]).to_string();

    assert_eq!(
        post_json(&intake, "/resources", "application/json", &batch).status,
        200
    );
    assert_eq!(intake.records("resources").len(), 1);
    assert_eq!(intake.dropped_records(), 2);
}

#[test]
fn malformed_json_records_are_answered_500_and_not_stored() {
    let intake = Intake::start();
    let mut float_timestamp = record("apply", "Pod", "a");
    float_timestamp["timestamp"] = json!(1.5);
    let cases = [
        "not json".to_owned(),
        record("apply", "Pod", "a").to_string(), // an object, not an array
        json!([record("update", "Pod", "a")]).to_string(),
        json!([float_timestamp]).to_string(),
        json!([{"timestamp": 1, "event_type": "apply", "json": "text"}]).to_string(),
        json!([record("apply", "Pod", "a"), 42]).to_string(),
    ];
    for body in &cases {
        let answer = post_json(&intake, "/resources", "application/json", body);
        assert_eq!(answer.status, 500, "{body}: {}", answer.body);
    }
    assert!(intake.records("resources").is_empty());
}

#[test]
fn json_body_over_1_mib_is_413() {
    let intake = Intake::start();
    let mut big = record("apply", "ConfigMap", "big");
    big["json"]["data"] = json!({"blob": "z".repeat(1024 * 1024)});
    let body = json!([big]).to_string();

    assert_eq!(
        post_json(&intake, "/resources", "application/json", &body).status,
        413
    );
    assert!(intake.records("resources").is_empty());
}

#[test]
fn data_routes_need_a_live_bearer_token() {
    let intake = Intake::start();
    let body = logs_body(POD_PATH, "0.log", line("x").as_bytes());
    let without = answer(
        agent()
            .post(format!("{}/logs", intake.url()))
            .header("Content-Type", multipart_type())
            .send(&body[..]),
    );

    assert_eq!(without.status, 401);
    assert_eq!(
        post_logs_as(&intake, "made-up-token", &multipart_type(), &body).status,
        401
    );
    assert_eq!(
        post_logs_as(&intake, STATIC_TOKEN, &multipart_type(), &body).status,
        200
    );
    let token = issue_token(&intake);
    assert_eq!(
        post_logs_as(&intake, &token, &multipart_type(), &body).status,
        200
    );
    assert_eq!(intake.log_batches().len(), 2);
}

#[test]
fn token_endpoint_checks_client_credentials_and_form() {
    let intake = Intake::start();
    let form = "grant_type=client_credentials&audience=a&audience=b";

    assert_eq!(request_token(&intake, CLIENT_ID, "wrong", form).status, 401);
    assert_eq!(
        request_token(
            &intake,
            CLIENT_ID,
            CLIENT_SECRET,
            "grant_type=client_credentials"
        )
        .status,
        400
    );
    assert_eq!(
        request_token(
            &intake,
            CLIENT_ID,
            CLIENT_SECRET,
            "grant_type=password&audience=a"
        )
        .status,
        400
    );
    assert_eq!(intake.token_requests(), 0);

    let answer = request_token(&intake, CLIENT_ID, CLIENT_SECRET, form);
    assert_eq!(answer.status, 200);
    let body: Value = serde_json::from_str(&answer.body).unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3600);
    assert_ne!(issue_token(&intake), body["access_token"].as_str().unwrap());
    assert_eq!(intake.token_requests(), 2);
}

#[test]
fn expired_token_is_answered_401() {
    let intake = Intake::start_with(IntakeOptions {
        token_expires_in_secs: 1,
        ..IntakeOptions::default()
    });
    let token = issue_token(&intake);
    let body = logs_body(POD_PATH, "0.log", line("x").as_bytes());
    assert_eq!(
        post_logs_as(&intake, &token, &multipart_type(), &body).status,
        200
    );

    let expired = intake.wait_for(WAIT, |intake| {
        post_logs_as(intake, &token, &multipart_type(), &body).status == 401
    });
    assert!(expired, "the token was still accepted after {WAIT:?}");
}

#[test]
fn revoked_tokens_are_answered_401_and_new_ones_work() {
    let intake = Intake::start();
    let token = issue_token(&intake);
    let body = logs_body(POD_PATH, "0.log", line("x").as_bytes());

    intake.revoke_tokens();
    assert_eq!(
        post_logs_as(&intake, &token, &multipart_type(), &body).status,
        401
    );
    assert_eq!(
        post_logs_as(&intake, STATIC_TOKEN, &multipart_type(), &body).status,
        200
    );
    let renewed = issue_token(&intake);
    assert_eq!(
        post_logs_as(&intake, &renewed, &multipart_type(), &body).status,
        200
    );
}

#[test]
fn injected_faults_answer_their_status_with_retry_after_and_store_nothing() {
    let intake = Intake::start();
    let body = logs_body(POD_PATH, "0.log", line("x").as_bytes());
    for (status, faults) in [
        (
            500,
            Faults {
                fail_500: 1.0,
                ..Faults::default()
            },
        ),
        (
            503,
            Faults {
                fail_503: 1.0,
                ..Faults::default()
            },
        ),
        (
            429,
            Faults {
                fail_429: 1.0,
                ..Faults::default()
            },
        ),
    ] {
        intake.set_faults(Faults {
            retry_after_secs: Some(7),
            ..faults
        });
        let answer = post_logs(&intake, &body);
        assert_eq!(answer.status, status);
        let expected_retry_after = (status != 500).then(|| "7".to_owned());
        assert_eq!(
            answer.retry_after, expected_retry_after,
            "Retry-After of {status}"
        );
        assert_eq!(
            post_json(&intake, "/events", "application/json", "[]").status,
            status
        );
    }
    // Token requests are never faulted.
    issue_token(&intake);
    assert!(intake.log_batches().is_empty());

    intake.set_faults(Faults::default());
    assert_eq!(post_logs(&intake, &body).status, 200);
}

#[test]
fn injected_latency_delays_the_answer() {
    let intake = Intake::start();
    intake.set_faults(Faults {
        latency: Duration::from_millis(300),
        ..Faults::default()
    });
    let started = Instant::now();
    let answer = post_logs(&intake, &logs_body(POD_PATH, "0.log", line("x").as_bytes()));

    assert_eq!(answer.status, 200);
    assert!(started.elapsed() >= Duration::from_millis(300));
}

fn connect_error(intake: &Intake) -> Option<ErrorKind> {
    TcpStream::connect(("127.0.0.1", intake.port()))
        .err()
        .map(|e| e.kind())
}

fn healthy(intake: &Intake) -> bool {
    agent()
        .get(format!("{}/healthz", intake.url()))
        .call()
        .is_ok_and(|r| r.status() == 200)
}

#[test]
fn refusing_closes_listener_and_open_connections_then_reopens_on_the_same_port() {
    let intake = Intake::start();
    let port = intake.port();
    let mut open = TcpStream::connect(("127.0.0.1", port)).unwrap();
    open.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut first_answer = [0u8; 12];
    open.read_exact(&mut first_answer).unwrap();
    assert_eq!(&first_answer, b"HTTP/1.1 200");

    intake.set_refusing(true);
    assert_eq!(connect_error(&intake), Some(ErrorKind::ConnectionRefused));
    open.set_read_timeout(Some(WAIT)).unwrap();
    let mut rest = Vec::new();
    // The rest of the first answer, then the end of the stream (not a
    // timeout: the server closed the connection).
    open.read_to_end(&mut rest)
        .expect("the open connection was closed");
    assert!(
        rest.ends_with(b"ok"),
        "{:?}",
        String::from_utf8_lossy(&rest)
    );

    intake.set_refusing(false);
    assert_eq!(intake.port(), port);
    assert!(healthy(&intake));
}

#[test]
fn refuse_connections_for_reopens_by_itself() {
    let intake = Intake::start();
    intake.refuse_connections_for(Duration::from_millis(300));

    assert_eq!(connect_error(&intake), Some(ErrorKind::ConnectionRefused));
    assert!(
        intake.wait_for(WAIT, healthy),
        "not listening again after {WAIT:?}"
    );
    let answer = post_logs(
        &intake,
        &logs_body(POD_PATH, "0.log", line("after").as_bytes()),
    );
    assert_eq!(answer.status, 200);
}

#[test]
fn requests_containing_a_rejected_needle_get_its_status() {
    let intake = Intake::start();
    intake.reject_lines_containing("poison", 400);
    intake.reject_lines_containing("crash", 500);

    let poisoned = format!("{}{}", line("fine"), line("poison here"));
    assert_eq!(
        post_logs(&intake, &logs_body(POD_PATH, "0.log", poisoned.as_bytes())).status,
        400
    );
    let crashing = json!([record("apply", "Pod", "crash")]).to_string();
    assert_eq!(
        post_json(&intake, "/resources", "application/json", &crashing).status,
        500
    );
    assert_eq!(
        post_logs(
            &intake,
            &logs_body(POD_PATH, "0.log", line("fine").as_bytes())
        )
        .status,
        200
    );

    assert_eq!(
        intake.log_lines(),
        ["2024-11-18T08:59:45.123456789Z stdout F fine"]
    );
    assert!(intake.records("resources").is_empty());
}

#[test]
fn raw_route_counts_lines_and_bytes() {
    let intake = Intake::start();
    let body = "/var/log/a.log\tline one\n/var/log/a.log\tline two\n";
    let unauthorized = answer(agent().post(format!("{}/raw", intake.url())).send(body));
    assert_eq!(unauthorized.status, 401);

    let answer = answer(
        agent()
            .post(format!("{}/raw", intake.url()))
            .header("Authorization", bearer(STATIC_TOKEN))
            .send(body),
    );
    assert_eq!(answer.status, 200);
    assert_eq!(intake.raw_lines(), 2);
    assert_eq!(intake.raw_bytes(), body.len() as u64);
}

#[test]
fn count_only_counts_lines_without_storing_them() {
    let intake = Intake::start_with(IntakeOptions {
        count_only: true,
        ..IntakeOptions::default()
    });
    let stream = format!("{}{}", line("a"), line("b"));
    assert_eq!(
        post_logs(&intake, &logs_body(POD_PATH, "0.log", stream.as_bytes())).status,
        200
    );

    assert_eq!(intake.log_line_count(), 2);
    assert_eq!(intake.log_byte_count(), stream.len() as u64);
    assert!(intake.log_batches().is_empty());
}

#[test]
fn requests_are_logged_with_their_status_and_headers() {
    let intake = Intake::start();
    let body = logs_body(POD_PATH, "0.log", line("x").as_bytes());
    post_logs(&intake, &body);
    post_json(&intake, "/nowhere", "application/json", "[]");

    let requests = intake.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0].method, "POST");
    assert_eq!(requests[0].path, "/logs");
    assert_eq!(requests[0].status, 200);
    assert_eq!(
        requests[0].content_type.as_deref(),
        Some(multipart_type().as_str())
    );
    assert_eq!(requests[0].body_len, body.len());
    assert_eq!(requests[0].authorization, Some(bearer(STATIC_TOKEN)));
    assert_eq!(requests[1].status, 404);
    assert_eq!(intake.status_counts().get(&404), Some(&1));
}

/// Sends `request` on `stream` and reads one answer; returns its status line
/// and headers.
fn exchange(stream: &mut TcpStream, request: &[u8]) -> String {
    stream.write_all(request).unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).expect("an answer");
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .expect("a Content-Length")
        .parse()
        .unwrap();
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).unwrap();
    head
}

#[test]
fn keep_alive_connection_serves_several_requests_including_chunked_bodies() {
    let intake = Intake::start();
    let mut stream = TcpStream::connect(("127.0.0.1", intake.port())).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let raw = |body: &str| {
        format!(
            "POST /raw HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {STATIC_TOKEN}\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    };

    assert!(exchange(&mut stream, raw("f\ta\n").as_bytes()).starts_with("HTTP/1.1 200"));
    let chunked = format!(
        "POST /raw HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {STATIC_TOKEN}\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nf\tb\n\r\n4\r\nf\tc\n\r\n0\r\n\r\n"
    );
    assert!(exchange(&mut stream, chunked.as_bytes()).starts_with("HTTP/1.1 200"));
    assert!(exchange(&mut stream, raw("f\td\n").as_bytes()).starts_with("HTTP/1.1 200"));
    assert_eq!(intake.raw_lines(), 4);
}

#[test]
fn without_keep_alive_each_answer_closes_the_connection() {
    let intake = Intake::start_with(IntakeOptions {
        keep_alive: false,
        ..IntakeOptions::default()
    });
    let mut stream = TcpStream::connect(("127.0.0.1", intake.port())).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();

    let head = exchange(&mut stream, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(head.contains("Connection: close"), "{head}");
    let mut rest = Vec::new();
    assert_eq!(stream.read_to_end(&mut rest).unwrap(), 0);
}

#[test]
fn concurrent_connections_are_all_served() {
    let intake = Intake::start();
    std::thread::scope(|scope| {
        for client in 0..8 {
            let intake = &intake;
            scope.spawn(move || {
                let agent = agent();
                for batch in 0..10 {
                    let body = logs_body(
                        POD_PATH,
                        &format!("{client}.log"),
                        line(&format!("{batch}")).as_bytes(),
                    );
                    let answer = answer(
                        agent
                            .post(format!("{}/logs", intake.url()))
                            .header("Authorization", bearer(STATIC_TOKEN))
                            .header("Content-Type", multipart_type())
                            .send(&body[..]),
                    );
                    assert_eq!(answer.status, 200, "{}", answer.body);
                }
            });
        }
    });
    assert_eq!(intake.log_batches().len(), 80);
}

#[test]
fn healthz_needs_no_token() {
    let intake = Intake::start();
    assert!(healthy(&intake));
}

/// A `POST /raw` of one line, as sent on a raw connection.
fn raw_request(line: &str) -> String {
    let body = format!("/var/log/a.log\t{line}\n");
    format!(
        "POST /raw HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {STATIC_TOKEN}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

fn connect(intake: &Intake) -> TcpStream {
    let stream = TcpStream::connect(("127.0.0.1", intake.port())).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    stream
}

/// A request stops counting as in flight just after its answer is written,
/// so a client can read the answer a moment before.
fn all_answered(intake: &Intake) -> bool {
    intake.wait_for(WAIT, |i| i.in_flight() == 0)
}

fn with_latency(ms: u64) -> Faults {
    Faults {
        latency: Duration::from_millis(ms),
        ..Faults::default()
    }
}

/// Sends one `/raw` request on `stream`; returns how long its answer took.
fn timed_raw(stream: &mut TcpStream, line: &str) -> Duration {
    let started = Instant::now();
    let head = exchange(stream, raw_request(line).as_bytes());
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    started.elapsed()
}

#[test]
fn concurrent_requests_wait_out_the_latency_together_and_count_as_in_flight() {
    const CLIENTS: usize = 8;
    let latency = Duration::from_millis(200);
    let intake = Intake::start();
    intake.set_faults(with_latency(200));
    let mut streams: Vec<TcpStream> = (0..CLIENTS).map(|_| connect(&intake)).collect();
    let started = Instant::now();
    std::thread::scope(|scope| {
        for (client, stream) in streams.iter_mut().enumerate() {
            scope.spawn(move || timed_raw(stream, &client.to_string()));
        }
        assert!(
            intake.wait_for(WAIT, |i| i.in_flight() == CLIENTS),
            "in flight: {}",
            intake.in_flight()
        );
    });
    let elapsed = started.elapsed();

    // One after the other they would take CLIENTS × latency.
    assert!(elapsed >= latency, "{elapsed:?}");
    assert!(elapsed < 4 * latency, "{elapsed:?}");
    assert_eq!(intake.max_in_flight(), CLIENTS);
    assert_eq!(intake.raw_lines(), CLIENTS as u64);
    assert!(all_answered(&intake), "in flight: {}", intake.in_flight());
}

#[test]
fn max_in_flight_resets_and_counts_only_data_requests() {
    let intake = Intake::start();
    let mut stream = connect(&intake);
    timed_raw(&mut stream, "a");
    assert_eq!(intake.max_in_flight(), 1);

    assert!(all_answered(&intake));
    intake.reset_max_in_flight();
    assert_eq!(intake.max_in_flight(), 0);
    assert!(healthy(&intake));
    issue_token(&intake);
    assert_eq!(intake.max_in_flight(), 0);

    // A data request counts even when it is refused.
    let unauthorized = answer(agent().post(format!("{}/raw", intake.url())).send("f\tx\n"));
    assert_eq!(unauthorized.status, 401);
    assert_eq!(intake.max_in_flight(), 1);
    assert!(all_answered(&intake));
}

#[test]
fn requests_are_stamped_with_the_arrival_of_their_head() {
    let intake = Intake::start();
    intake.set_faults(with_latency(300));
    let mut stream = connect(&intake);
    let before = Instant::now();
    timed_raw(&mut stream, "first");
    let between = Instant::now();
    timed_raw(&mut stream, "second");

    let requests = intake.requests();
    assert_eq!(requests.len(), 2);
    // Stamped on arrival, not on answer: the latency comes after.
    assert!(requests[0].at >= before);
    assert!(requests[0].at + Duration::from_millis(300) <= between);
    assert!(requests[1].at >= between);
}

#[test]
fn latency_can_change_mid_test_and_a_waiting_request_keeps_its_own() {
    let intake = Intake::start();
    let mut stream = connect(&intake);
    intake.set_faults(with_latency(5));
    assert!(timed_raw(&mut stream, "fast") < Duration::from_millis(250));

    intake.set_faults(with_latency(500));
    assert!(timed_raw(&mut stream, "slow") >= Duration::from_millis(500));

    assert!(all_answered(&intake));
    std::thread::scope(|scope| {
        let waiting = scope.spawn(|| timed_raw(&mut stream, "slow, started before the change"));
        assert!(intake.wait_for(WAIT, |i| i.in_flight() == 1));
        intake.set_faults(with_latency(5));
        let mut other = connect(&intake);
        assert!(timed_raw(&mut other, "fast again") < Duration::from_millis(250));
        let slow = waiting.join().unwrap();
        assert!(slow >= Duration::from_millis(500), "{slow:?}");
    });
}
