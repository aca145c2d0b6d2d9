//! The real logd binary's configuration errors (SPEC §2): each stops logd
//! at start with one line naming the variable, and exit code 2. `--help`
//! lists every variable.

mod common;

use std::net::TcpListener;

use common::daemon::{Env, Logd, run_to_exit};
use common::pods::Node;
use testkit::intake::Intake;

/// Runs logd with `env` and asserts exit 2 with one stderr line naming
/// `variable`.
fn assert_config_error(node: &Node, env: &Env, args: &[&str], variable: &str) {
    let (status, _, stderr) = run_to_exit(node, env, args);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(
        status.code(),
        Some(2),
        "expected exit 2 for a bad {variable}; stderr:\n{stderr}"
    );
    assert_eq!(
        lines.len(),
        1,
        "expected one line for a bad {variable}:\n{stderr}"
    );
    assert!(
        lines[0].starts_with(&format!("logd: configuration error: {variable}")),
        "the line does not name {variable}: {}",
        lines[0]
    );
}

#[test]
fn every_configuration_error_exits_2_naming_the_variable() {
    let node = Node::new();
    let intake = Intake::start();
    let url = intake.url();
    let to_intake = Env::new(&node, &intake).set("LOGD_METRICS_ADDR", "off");
    let local = Env::local(&node).set("LOGD_METRICS_ADDR", "off");
    let credentials = Env::local(&node)
        .set("LOGD_METRICS_ADDR", "off")
        .set("HIK8S_URL", &url)
        .set("CLIENT_ID", "test-client")
        .set("CLIENT_SECRET", "test-secret")
        .set("AUTH_DOMAIN", "auth.example")
        .set("AUTH_AUDIENCE", "https://api.hik8s.ai/");
    let missing_dir = node.root().join("no/such/dir/out.ndjson");
    let busy = TcpListener::bind("127.0.0.1:0").expect("binding a port");
    let busy_addr = busy.local_addr().unwrap().to_string();

    let cases: Vec<(&str, Env)> = vec![
        ("HIK8S_URL", to_intake.clone().set("HIK8S_URL", "not a url")),
        (
            "HIK8S_URL",
            to_intake.clone().set("HIK8S_URL", "ftp://intake.example"),
        ),
        (
            "HIK8S_PORT",
            local
                .clone()
                .set("HIK8S_HOST", "intake.example")
                .set("HIK8S_PORT", "https")
                .set("HIK8S_TOKEN", "t"),
        ),
        // A sink of hik8s without any credentials.
        ("HIK8S_URL", to_intake.clone().unset("HIK8S_TOKEN")),
        // Half a credentials set.
        ("CLIENT_SECRET", credentials.clone().unset("CLIENT_SECRET")),
        ("CLIENT_ID", credentials.clone().unset("CLIENT_ID")),
        ("AUTH_DOMAIN", credentials.clone().unset("AUTH_DOMAIN")),
        ("AUTH_AUDIENCE", credentials.clone().unset("AUTH_AUDIENCE")),
        // Both a token and client credentials.
        ("HIK8S_TOKEN", credentials.clone().set("HIK8S_TOKEN", "t")),
        ("HIK8S_SINK", local.clone().set("HIK8S_SINK", "hik8s")),
        ("HIK8S_SINK", local.clone().set("HIK8S_SINK", "kafka")),
        (
            "HIK8S_SINK",
            local
                .clone()
                .set("HIK8S_SINK", &format!("file:{}", missing_dir.display())),
        ),
        (
            "HIK8S_CA_FILE",
            to_intake.clone().set("HIK8S_CA_FILE", "/no/such/ca.pem"),
        ),
        (
            "HIK8S_SHUTDOWN_GRACE_SECS",
            local.clone().set("HIK8S_SHUTDOWN_GRACE_SECS", "forever"),
        ),
        (
            "LOGD_READ_FROM",
            local.clone().set("LOGD_READ_FROM", "middle"),
        ),
        (
            "LOGD_BATCH_MAX_BYTES",
            local.clone().set("LOGD_BATCH_MAX_BYTES", "abc"),
        ),
        (
            "LOGD_BATCH_MAX_BYTES",
            local.clone().set("LOGD_BATCH_MAX_BYTES", "0"),
        ),
        // More than the intake takes in one request.
        (
            "LOGD_BATCH_MAX_BYTES",
            to_intake.clone().set("LOGD_BATCH_MAX_BYTES", "64MiB"),
        ),
        (
            "LOGD_BATCH_LINGER_MS",
            local.clone().set("LOGD_BATCH_LINGER_MS", "soon"),
        ),
        (
            "LOGD_UPLOAD_CONCURRENCY",
            to_intake.clone().set("LOGD_UPLOAD_CONCURRENCY", "0"),
        ),
        (
            "LOGD_UPLOAD_CONCURRENCY",
            to_intake.clone().set("LOGD_UPLOAD_CONCURRENCY", "many"),
        ),
        (
            "LOGD_UPLOAD_CONCURRENCY",
            to_intake.clone().set("LOGD_UPLOAD_CONCURRENCY", "100000"),
        ),
        (
            "LOGD_MAX_LINE_BYTES",
            local.clone().set("LOGD_MAX_LINE_BYTES", "10"),
        ),
        (
            "LOGD_MAX_LINE_BYTES",
            local.clone().set("LOGD_MAX_LINE_BYTES", "big"),
        ),
        (
            "LOGD_METRICS_ADDR",
            local.clone().set("LOGD_METRICS_ADDR", "9600"),
        ),
        (
            "LOGD_METRICS_ADDR",
            local.clone().set("LOGD_METRICS_ADDR", "127.0.0.1:99999"),
        ),
        // An address that cannot be bound.
        (
            "LOGD_METRICS_ADDR",
            local.clone().set("LOGD_METRICS_ADDR", &busy_addr),
        ),
        (
            "LOGD_DELETED_MAX_FILES",
            local.clone().set("LOGD_DELETED_MAX_FILES", "many"),
        ),
        (
            "LOGD_DELETED_MAX_BYTES",
            local.clone().set("LOGD_DELETED_MAX_BYTES", "lots"),
        ),
    ];
    for (variable, env) in &cases {
        assert_config_error(&node, env, &[], variable);
    }
    // A flag is checked like its variable.
    assert_config_error(
        &node,
        &local,
        &["--logd-read-from=middle"],
        "LOGD_READ_FROM",
    );
    drop(busy);
}

#[test]
fn help_lists_every_variable_of_logd() {
    let node = Node::new();
    let (status, stdout, _) = run_to_exit(&node, &Env::local(&node), &["--help"]);
    assert_eq!(status.code(), Some(0));
    for variable in [
        "HIK8S_URL",
        "HIK8S_HOST",
        "HIK8S_PORT",
        "HIK8S_TOKEN",
        "CLIENT_ID",
        "CLIENT_SECRET",
        "AUTH_DOMAIN",
        "AUTH0_DOMAIN",
        "AUTH_AUDIENCE",
        "AUTH0_AUDIENCE",
        "AUTH_TOKEN_URL",
        "HIK8S_CA_FILE",
        "HTTPS_PROXY",
        "NO_PROXY",
        "HIK8S_SHUTDOWN_GRACE_SECS",
        "HIK8S_SINK",
        "RUST_LOG",
        "LOGD_PODS_DIR",
        "LOGD_STATE_DIR",
        "LOGD_READ_FROM",
        "LOGD_BATCH_MAX_BYTES",
        "LOGD_BATCH_LINGER_MS",
        "LOGD_UPLOAD_CONCURRENCY",
        "LOGD_MAX_LINE_BYTES",
        "LOGD_EXCLUDE_NAMESPACES",
        "LOGD_EXCLUDE_POD_UID",
        "LOGD_METRICS_ADDR",
        "LOGD_DELETED_MAX_FILES",
        "LOGD_DELETED_MAX_BYTES",
    ] {
        assert!(
            stdout.contains(variable),
            "--help does not list {variable}:\n{stdout}"
        );
    }
    // The test-only knob stays out of the help.
    assert!(!stdout.contains("LOGD_TEST_MAX_INOTIFY_WATCHES"));
}

#[test]
fn a_line_cap_above_what_the_intake_takes_is_lowered_and_said_once_at_start() {
    let node = Node::new();
    let intake = Intake::start();
    let env = Env::new(&node, &intake).set("LOGD_MAX_LINE_BYTES", "65536");
    let logd = Logd::start(&node, &env);
    let stderr = logd.stderr();
    let said = stderr
        .lines()
        .filter(|l| {
            l.contains("WARN") && l.contains("LOGD_MAX_LINE_BYTES=65536 is lowered to 30720")
        })
        .count();
    assert_eq!(said, 1, "not said once at start:\n{stderr}");
}
