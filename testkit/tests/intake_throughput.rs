//! How fast the test intake takes `/logs` and `/raw` bodies, so a benchmark
//! of a daemon knows the intake is not its bottleneck. Ignored by default:
//! `cargo test --release -p testkit --test intake_throughput -- --ignored --nocapture`.

use std::io::Write;
use std::time::{Duration, Instant};

use testkit::intake::{Intake, IntakeOptions, STATIC_TOKEN};

const TOTAL_BYTES: usize = 300 * 1024 * 1024;
const BATCH_BYTES: usize = 1024 * 1024;
const BOUNDARY: &str = "throughput-boundary";

fn logs_body() -> (Vec<u8>, u64) {
    let line = format!(
        "2024-11-18T08:59:45.123456789Z stdout F {}\n",
        "m".repeat(160)
    );
    let lines = BATCH_BYTES / line.len();
    let mut body = Vec::with_capacity(BATCH_BYTES + 512);
    write!(
        body,
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"metadata\"\r\nContent-Type: application/json\r\n\r\n\
         {{\"path\":\"/var/log/pods/default_web-1_0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0/app\",\"file\":\"0.log\"}}\r\n\
         --{BOUNDARY}\r\nContent-Disposition: form-data; name=\"stream\"\r\nContent-Type: application/octet-stream\r\n\r\n"
    )
    .unwrap();
    body.extend_from_slice(line.repeat(lines).as_bytes());
    write!(body, "\r\n--{BOUNDARY}--\r\n").unwrap();
    (body, lines as u64)
}

fn send_all(intake: &Intake, route: &str, content_type: &str, body: &[u8]) -> Duration {
    let agent = ureq::Agent::new_with_defaults();
    let started = Instant::now();
    for _ in 0..TOTAL_BYTES / body.len() {
        let response = agent
            .post(format!("{}{route}", intake.url()))
            .header("Authorization", format!("Bearer {STATIC_TOKEN}"))
            .header("Content-Type", content_type)
            .send(body)
            .expect("accepted");
        assert_eq!(response.status(), 200);
    }
    started.elapsed()
}

fn report(what: &str, elapsed: Duration) {
    let mib = TOTAL_BYTES as f64 / (1024.0 * 1024.0);
    println!(
        "{what}: {mib:.0} MiB in {:.2} s = {:.0} MiB/s",
        elapsed.as_secs_f64(),
        mib / elapsed.as_secs_f64()
    );
}

#[test]
#[ignore = "a measurement, not a check; run with --release"]
fn logs_and_raw_throughput() {
    let intake = Intake::start_with(IntakeOptions {
        count_only: true,
        ..IntakeOptions::default()
    });
    let (body, lines) = logs_body();
    let content_type = format!("multipart/form-data; boundary={BOUNDARY}");
    let elapsed = send_all(&intake, "/logs", &content_type, &body);
    report("/logs (count_only, validated)", elapsed);
    assert_eq!(
        intake.log_line_count(),
        lines * (TOTAL_BYTES / body.len()) as u64
    );
    assert!(intake.log_batches().is_empty());

    let raw = "/var/log/pods/x/app/0.log\tsome message of a typical length for a log line\n"
        .repeat(BATCH_BYTES / 72);
    let elapsed = send_all(&intake, "/raw", "text/plain", raw.as_bytes());
    report("/raw", elapsed);
}
