//! The intake client against the test intake server: the wire format of
//! `/logs` and the JSON routes, and authentication.

mod support;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use shared::intake::{IntakeClient, LogMeta, Route, SendError};
use support::{POD_PATH, client_credentials, lines, meta, static_token, wait_until};
use testkit::intake::{self, Intake, IntakeOptions};

const DEADLINE: Duration = Duration::from_secs(30);

#[test]
fn logs_arrive_exactly_as_sent_through_a_real_multipart_parser() {
    let intake = Intake::start();
    let client = IntakeClient::new(&static_token(&intake, intake::STATIC_TOKEN));
    // Quotes, backslashes, a multipart-looking line and non-ASCII text.
    let tricky = "2024-11-18T08:59:46.5Z stderr F say \"hi\" \\ --boundary-like\r-- Grüße ✓\n";
    let first = lines("first", 100) + tricky;
    client
        .post_logs(&meta(), first.as_bytes())
        .expect("first batch");
    let other = LogMeta {
        path: POD_PATH,
        file: "1.log",
    };
    client
        .post_logs(&other, lines("second", 3).as_bytes())
        .expect("second batch");

    let batches = intake.log_batches();
    assert_eq!(batches.len(), 2);
    assert_eq!(batches[0].path, POD_PATH);
    assert_eq!(batches[0].file, "0.log");
    let expected: Vec<&str> = first.lines().collect();
    assert_eq!(batches[0].lines, expected);
    assert_eq!(batches[1].file, "1.log");
    assert_eq!(batches[1].lines.len(), 3);
}

#[test]
fn every_request_has_its_own_boundary_and_the_bearer_token() {
    let intake = Intake::start();
    let client = IntakeClient::new(&static_token(&intake, intake::STATIC_TOKEN));
    for i in 0..5 {
        client
            .post_logs(&meta(), lines(&format!("batch {i}"), 2).as_bytes())
            .expect("batch");
    }
    let requests = intake.requests();
    assert_eq!(requests.len(), 5);
    let boundaries: HashSet<String> = requests
        .iter()
        .map(|r| {
            assert_eq!(r.status, 200);
            assert_eq!(
                r.authorization.as_deref(),
                Some(format!("Bearer {}", intake::STATIC_TOKEN).as_str())
            );
            let content_type = r.content_type.as_deref().expect("content type");
            let boundary = content_type
                .strip_prefix("multipart/form-data; boundary=")
                .unwrap_or_else(|| panic!("not multipart: {content_type}"));
            assert!(boundary.len() >= 32, "short boundary {boundary}");
            boundary.to_string()
        })
        .collect();
    assert_eq!(boundaries.len(), 5, "boundaries repeat: {boundaries:?}");
}

#[test]
fn json_batches_go_to_their_route_as_application_json() {
    let intake = Intake::start();
    let client = IntakeClient::new(&static_token(&intake, intake::STATIC_TOKEN));
    let record = |name: &str, kind: &str| {
        serde_json::json!({"timestamp": 1_700_000_000, "event_type": "apply",
            "json": {"apiVersion": "v1", "kind": kind, "metadata": {"name": name}}})
    };
    for (route, kind) in [
        (Route::Resources, "Pod"),
        (Route::CustomResources, "Widget"),
        (Route::Events, "Event"),
    ] {
        let body = serde_json::to_vec(&[record("a", kind), record("b", kind)]).expect("json");
        client.post_json(route, &body).expect("batch accepted");
    }
    for route in ["resources", "customresources", "events"] {
        let records = intake.records(route);
        assert_eq!(records.len(), 2, "{route}");
        assert_eq!(records[1]["json"]["metadata"]["name"], "b");
    }
    for request in intake.requests() {
        assert_eq!(request.content_type.as_deref(), Some("application/json"));
    }
}

#[test]
fn client_credentials_are_fetched_once_and_shared_by_threads() {
    let intake = Intake::start();
    let client = Arc::new(IntakeClient::new(&client_credentials(&intake)));
    let senders: Vec<_> = (0..4)
        .map(|t| {
            let client = client.clone();
            std::thread::spawn(move || {
                for i in 0..5 {
                    client
                        .post_logs(&meta(), lines(&format!("t{t} b{i}"), 2).as_bytes())
                        .expect("batch");
                }
            })
        })
        .collect();
    for sender in senders {
        sender.join().expect("sender thread");
    }
    assert_eq!(intake.token_requests(), 1);
    assert_eq!(intake.log_lines().len(), 40);
    let requests = intake.requests();
    let token_request = requests
        .iter()
        .find(|r| r.path == "/oauth2/token")
        .expect("a token request");
    let basic = base64::engine::general_purpose::STANDARD.encode(format!(
        "{}:{}",
        intake::CLIENT_ID,
        intake::CLIENT_SECRET
    ));
    assert_eq!(
        token_request.authorization.as_deref(),
        Some(format!("Basic {basic}").as_str())
    );
    assert_eq!(token_request.status, 200);
    let bearers: HashSet<_> = requests
        .iter()
        .filter(|r| r.path == "/logs")
        .map(|r| r.authorization.clone().expect("authorization"))
        .collect();
    assert_eq!(bearers.len(), 1, "one token for all: {bearers:?}");
}

#[test]
fn the_token_is_renewed_before_it_expires() {
    let intake = Intake::start_with(IntakeOptions {
        token_expires_in_secs: 2,
        ..IntakeOptions::default()
    });
    let client = IntakeClient::new(&client_credentials(&intake));
    // Tokens live 2 s and are renewed after 1 s: keep sending until a third
    // token was fetched; no request may meet an expired token (401).
    wait_until(DEADLINE, "two token renewals", || {
        client
            .post_logs(&meta(), lines("renewal", 1).as_bytes())
            .expect("batch");
        std::thread::sleep(Duration::from_millis(20));
        intake.token_requests() >= 3
    });
    let statuses: Vec<u16> = intake.requests().iter().map(|r| r.status).collect();
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
}

#[test]
fn a_401_renews_the_token_once_and_resends() {
    let intake = Intake::start();
    let client = IntakeClient::new(&client_credentials(&intake));
    client
        .post_logs(&meta(), lines("before", 1).as_bytes())
        .expect("first batch");
    intake.revoke_tokens();
    client
        .post_logs(&meta(), lines("after", 1).as_bytes())
        .expect("batch after revocation");
    assert_eq!(intake.token_requests(), 2);
    let logs: Vec<u16> = intake
        .requests()
        .iter()
        .filter(|r| r.path == "/logs")
        .map(|r| r.status)
        .collect();
    assert_eq!(logs, [200, 401, 200]);
    assert_eq!(intake.log_lines().len(), 2);
}

#[test]
fn a_static_token_needs_no_token_endpoint_and_a_bad_one_is_retryable() {
    let intake = Intake::start();
    let client = IntakeClient::new(&static_token(&intake, intake::STATIC_TOKEN));
    intake.revoke_tokens();
    client
        .post_logs(&meta(), lines("static", 1).as_bytes())
        .expect("static token accepted");
    assert_eq!(intake.token_requests(), 0);

    let wrong = IntakeClient::new(&static_token(&intake, "made-up-wrong-token"));
    let error = wrong
        .post_logs(&meta(), lines("wrong", 1).as_bytes())
        .expect_err("wrong token");
    assert!(
        matches!(
            error,
            SendError::Retryable {
                status: Some(401),
                ..
            }
        ),
        "{error:?}"
    );
}

#[test]
fn refused_client_credentials_are_retryable_not_dropped() {
    let intake = Intake::start();
    let url = intake.url();
    let token_url = intake.token_url();
    let config = support::config(&[
        ("HIK8S_URL", &url),
        ("CLIENT_ID", intake::CLIENT_ID),
        ("CLIENT_SECRET", "made-up-wrong-secret"),
        ("AUTH_TOKEN_URL", &token_url),
        ("AUTH_AUDIENCE", "aud"),
    ]);
    let client = IntakeClient::new(config.common().intake().expect("hik8s"));
    let error = client
        .post_logs(&meta(), lines("x", 1).as_bytes())
        .expect_err("bad secret");
    assert!(error.is_retryable(), "{error:?}");
    assert_eq!(error.status(), Some(401));
    assert!(
        !error.to_string().contains("made-up-wrong-secret"),
        "{error}"
    );
}

#[test]
fn tokens_and_secrets_never_show_in_debug() {
    let intake = Intake::start();
    let config = client_credentials(&intake);
    let client = IntakeClient::new(&config);
    client
        .post_logs(&meta(), lines("debug", 1).as_bytes())
        .expect("batch");
    let bearer = intake
        .requests()
        .iter()
        .find(|r| r.path == "/logs")
        .and_then(|r| r.authorization.clone())
        .expect("bearer");
    let token = bearer.trim_start_matches("Bearer ");
    let debug = format!("{client:?} {config:?}");
    assert!(!debug.contains(token), "{debug}");
    assert!(!debug.contains(intake::CLIENT_SECRET), "{debug}");

    let config = static_token(&intake, intake::STATIC_TOKEN);
    let debug = format!("{:?} {config:?}", IntakeClient::new(&config));
    assert!(!debug.contains(intake::STATIC_TOKEN), "{debug}");
}
