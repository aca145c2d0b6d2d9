//! Retries against the test intake: `Retry-After`, 5xx until the intake
//! recovers, refused connections, shutdown during a wait, and the answers
//! that must not be retried.

mod support;

use std::sync::mpsc;
use std::time::{Duration, Instant};

use shared::intake::{IntakeClient, Route, SendError};
use shared::retry::{Attempts, Backoff, Delivery, send_with_retry};
use shared::shutdown::Shutdown;
use support::{lines, meta, static_token, wait_until};
use testkit::intake::{self, Faults, Intake};

const DEADLINE: Duration = Duration::from_secs(30);

fn client(intake: &Intake) -> IntakeClient {
    IntakeClient::new(&static_token(intake, intake::STATIC_TOKEN))
}

/// A backoff small enough for tests.
fn quick() -> Backoff {
    Backoff::with_bounds(Duration::from_millis(10), Duration::from_millis(100))
}

/// A batch answered `status` with `Retry-After: 1` is sent again after
/// about a second, not after the (much shorter) backoff.
fn retry_after_is_honoured(status: u16) {
    let intake = Intake::start();
    let faults = Faults {
        fail_503: if status == 503 { 1.0 } else { 0.0 },
        fail_429: if status == 429 { 1.0 } else { 0.0 },
        retry_after_secs: Some(1),
        ..Faults::default()
    };
    intake.set_faults(faults);
    let client = client(&intake);
    let shutdown = Shutdown::new();
    let mut waits = Vec::new();
    let start = Instant::now();
    let delivery = send_with_retry(
        || client.post_logs(&meta(), lines("retry-after", 2).as_bytes()),
        &mut quick(),
        Attempts::Forever,
        &shutdown,
        |error, wait| {
            assert_eq!(error.status(), Some(status));
            waits.push(wait);
            intake.set_faults(Faults::default());
        },
    );
    assert!(matches!(delivery, Delivery::Delivered), "{delivery:?}");
    assert_eq!(waits, [Duration::from_secs(1)]);
    assert!(
        start.elapsed() >= Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(intake.log_lines().len(), 2);
}

#[test]
fn retry_after_of_a_503_is_honoured() {
    retry_after_is_honoured(503);
}

#[test]
fn retry_after_of_a_429_is_honoured() {
    retry_after_is_honoured(429);
}

#[test]
fn server_errors_are_retried_until_the_intake_recovers() {
    let intake = Intake::start();
    intake.set_faults(Faults {
        fail_500: 1.0,
        ..Faults::default()
    });
    let client = client(&intake);
    let shutdown = Shutdown::new();
    std::thread::scope(|scope| {
        scope.spawn(|| {
            wait_until(DEADLINE, "three refused attempts", || {
                intake.requests().iter().filter(|r| r.status == 500).count() >= 3
            });
            intake.set_faults(Faults::default());
        });
        let mut retries = 0;
        let delivery = send_with_retry(
            || client.post_logs(&meta(), lines("outage", 3).as_bytes()),
            &mut quick(),
            Attempts::Forever,
            &shutdown,
            |error, _| {
                assert_eq!(error.status(), Some(500));
                retries += 1;
            },
        );
        assert!(matches!(delivery, Delivery::Delivered), "{delivery:?}");
        assert!(retries >= 3, "{retries} retries");
    });
    assert_eq!(intake.log_batches().len(), 1, "delivered exactly once");
}

#[test]
fn refused_connections_are_retried_until_the_intake_is_back() {
    let intake = Intake::start();
    intake.refuse_connections_for(Duration::from_secs(1));
    let client = client(&intake);
    let shutdown = Shutdown::new();
    let mut saw_connection_error = false;
    let delivery = send_with_retry(
        || client.post_logs(&meta(), lines("refused", 1).as_bytes()),
        &mut quick(),
        Attempts::Forever,
        &shutdown,
        |error, _| {
            assert!(error.is_retryable(), "{error:?}");
            saw_connection_error |= error.status().is_none();
        },
    );
    assert!(matches!(delivery, Delivery::Delivered), "{delivery:?}");
    assert!(saw_connection_error, "the first attempts should be refused");
    assert_eq!(intake.log_lines().len(), 1);
}

#[test]
fn shutdown_interrupts_a_retry_wait_promptly() {
    let intake = Intake::start();
    intake.set_faults(Faults {
        fail_503: 1.0,
        retry_after_secs: Some(120),
        ..Faults::default()
    });
    let client = client(&intake);
    let shutdown = Shutdown::new();
    let (waiting_tx, waiting_rx) = mpsc::channel();
    let trigger = shutdown.clone();
    let triggered_at = std::thread::spawn(move || {
        waiting_rx.recv().expect("a retry wait begins");
        trigger.trigger();
        Instant::now()
    });
    let delivery = send_with_retry(
        || client.post_logs(&meta(), lines("stopping", 1).as_bytes()),
        &mut quick(),
        Attempts::Forever,
        &shutdown,
        |_, wait| {
            assert_eq!(wait, Duration::from_secs(120));
            let _ = waiting_tx.send(());
        },
    );
    let returned_at = Instant::now();
    assert!(matches!(delivery, Delivery::ShutDown), "{delivery:?}");
    let triggered_at = triggered_at.join().expect("trigger thread");
    assert!(
        returned_at.duration_since(triggered_at) < Duration::from_secs(5),
        "took {:?} after the trigger",
        returned_at.duration_since(triggered_at)
    );
}

#[test]
fn too_large_bodies_surface_as_too_large() {
    let intake = Intake::start();
    let client = client(&intake);
    let huge_json = format!(
        "[{{\"timestamp\": 1, \"event_type\": \"apply\", \"json\": {{\"apiVersion\": \"v1\", \"kind\": \"Pod\", \"pad\": \"{}\"}}}}]",
        "x".repeat(1 << 20)
    );
    let error = client
        .post_json(Route::Resources, huge_json.as_bytes())
        .expect_err("over 1 MiB");
    assert_eq!(error, SendError::TooLarge);

    // 33 MiB of valid lines on /logs.
    let line = format!(
        "2024-11-18T08:59:45.000000001Z stdout F {}\n",
        "y".repeat(1000)
    );
    let stream = line.repeat(33 * 1024);
    let error = client
        .post_logs(&meta(), stream.as_bytes())
        .expect_err("over 32 MiB");
    assert_eq!(error, SendError::TooLarge);
    let shutdown = Shutdown::new();
    let delivery = send_with_retry(
        || client.post_json(Route::Resources, huge_json.as_bytes()),
        &mut quick(),
        Attempts::Forever,
        &shutdown,
        |error, _| panic!("413 must not be retried: {error:?}"),
    );
    assert!(matches!(delivery, Delivery::TooLarge), "{delivery:?}");
}

#[test]
fn other_client_errors_are_rejected_with_status_and_body_start() {
    let intake = Intake::start();
    intake.reject_lines_containing("poison", 400);
    let client = client(&intake);
    let stream = lines("fine", 2) + "2024-11-18T08:59:45.1Z stdout F poison pill\n";
    let error = client
        .post_logs(&meta(), stream.as_bytes())
        .expect_err("rejected");
    let SendError::Rejected { status, body_start } = &error else {
        panic!("expected Rejected, got {error:?}");
    };
    assert_eq!(*status, 400);
    assert!(!body_start.is_empty(), "the body start is kept for the log");
    let shutdown = Shutdown::new();
    let delivery = send_with_retry(
        || client.post_logs(&meta(), stream.as_bytes()),
        &mut quick(),
        Attempts::Forever,
        &shutdown,
        |error, _| panic!("400 must not be retried: {error:?}"),
    );
    assert!(
        matches!(delivery, Delivery::Rejected { status: 400, .. }),
        "{delivery:?}"
    );
    assert!(intake.log_lines().is_empty());
}

#[test]
fn an_attempt_cap_gives_up_with_the_last_error() {
    let intake = Intake::start();
    intake.set_faults(Faults {
        fail_500: 1.0,
        ..Faults::default()
    });
    let client = client(&intake);
    let shutdown = Shutdown::new();
    let delivery = send_with_retry(
        || client.post_logs(&meta(), lines("capped", 1).as_bytes()),
        &mut quick(),
        Attempts::AtMost(3),
        &shutdown,
        |_, _| {},
    );
    let Delivery::GaveUp { last } = delivery else {
        panic!("expected GaveUp, got {delivery:?}");
    };
    assert_eq!(last.status(), Some(500));
    assert_eq!(intake.requests().len(), 3);
}
