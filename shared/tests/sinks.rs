//! The stdout and file sinks: NDJSON read back and parsed line by line.

mod support;

use std::process::Command;

use serde_json::{Value, json};
use shared::config::SinkConfig;
use shared::intake::Route;
use shared::sink::Sink;
use support::{config, lines, meta};

fn parse_ndjson(text: &str) -> Vec<Value> {
    text.lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line:?}")))
        .collect()
}

fn records_body() -> Vec<u8> {
    serde_json::to_vec(&json!([
        {"timestamp": 1_700_000_000, "event_type": "initapply",
         "json": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web-1"}}},
        {"timestamp": 1_700_000_001, "event_type": "delete",
         "json": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web-2"}}},
    ]))
    .expect("json")
}

fn expected_log_line(i: usize) -> Value {
    json!({
        "time": format!("2024-11-18T08:59:45.{i:09}Z"),
        "stream": "stdout",
        "namespace": "default",
        "pod": "web-1",
        "pod_uid": "0a1b2c3d-0000-4000-8000-000000000001",
        "container": "nginx",
        "file": "0.log",
        "message": format!("sink line {i}"),
    })
}

#[test]
fn file_sink_appends_one_json_object_a_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("out.ndjson");
    let value = format!("file:{}", path.display());
    let config = config(&[("HIK8S_SINK", &value)]);
    assert!(matches!(config.common().sink, SinkConfig::File(_)));
    let sink = Sink::open(&config.common().sink).expect("file sink opens");
    assert!(!sink.is_hik8s());

    sink.send_logs(&meta(), lines("sink", 3).as_bytes())
        .expect("logs written");
    sink.send_records(Route::Resources, &records_body())
        .expect("records written");
    // A second sink on the same file appends (a restarted daemon).
    let again = Sink::open(&config.common().sink).expect("reopens");
    again
        .send_logs(&meta(), lines("sink", 1).as_bytes())
        .expect("logs written");

    let written = parse_ndjson(&std::fs::read_to_string(&path).expect("read back"));
    assert_eq!(written.len(), 6);
    for (i, line) in written[..3].iter().enumerate() {
        assert_eq!(*line, expected_log_line(i));
    }
    assert_eq!(
        written[3],
        json!({"route": "resources", "timestamp": 1_700_000_000, "event_type": "initapply",
               "json": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web-1"}}})
    );
    assert_eq!(written[4]["event_type"], "delete");
    assert_eq!(written[5], expected_log_line(0));
}

#[test]
fn stdout_sink_writes_one_json_object_a_line() {
    // Runs `stdout_sink_child` in a child process and reads its stdout.
    let output = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "stdout_sink_child",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .output()
        .expect("child runs");
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8(output.stdout).expect("utf-8 stdout");
    // Keep the NDJSON, not the test harness's own lines.
    let ndjson: String = stdout
        .lines()
        .filter(|line| line.starts_with('{'))
        .map(|line| format!("{line}\n"))
        .collect();
    let written = parse_ndjson(&ndjson);
    assert_eq!(written.len(), 4, "{stdout}");
    assert_eq!(written[0], expected_log_line(0));
    assert_eq!(written[1], expected_log_line(1));
    assert_eq!(written[2]["route"], "events");
    assert_eq!(written[3]["json"]["metadata"]["name"], "web-2");
}

/// The child half of `stdout_sink_writes_one_json_object_a_line`.
#[test]
#[ignore = "run by stdout_sink_writes_one_json_object_a_line in a child process"]
fn stdout_sink_child() {
    let config = config(&[("HIK8S_SINK", "stdout")]);
    let sink = Sink::open(&config.common().sink).expect("stdout sink");
    // The harness prints "test stdout_sink_child ... " without a newline first.
    println!();
    sink.send_logs(&meta(), lines("sink", 2).as_bytes())
        .expect("logs written");
    sink.send_records(Route::Events, &records_body())
        .expect("records written");
}
