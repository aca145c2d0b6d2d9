//! What a daemon process shows: a bad configuration is one line on stderr
//! and exit status 2, `--help` goes to stdout with status 0, and log lines
//! carry time, level, thread name and target. Each case runs an ignored
//! child test of this binary in a process of its own.

use std::process::{Command, Output};

use shared::config::{Config, OrExit};

/// Runs the ignored test `name` of this binary in a child process.
fn run_child(name: &str) -> Output {
    Command::new(std::env::current_exe().expect("test binary"))
        .args([
            name,
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .output()
        .expect("child runs")
}

fn parse_or_exit(env: &[(&str, &str)], args: &[&str]) -> Config {
    Config::parse(
        "logd",
        &[],
        args.iter().map(|a| a.to_string()),
        env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        None,
    )
    .or_exit()
}

#[test]
fn a_bad_configuration_exits_2_with_one_line_naming_the_variable() {
    let output = run_child("bad_url_child");
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let stderr = String::from_utf8(output.stderr).expect("utf-8 stderr");
    assert!(
        stderr
            .lines()
            .any(|l| l == r#"logd: configuration error: HIK8S_URL: "ftp//x" is not an http(s) URL"#),
        "{stderr}"
    );
}

#[test]
fn help_goes_to_stdout_with_status_0() {
    let output = run_child("help_child");
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let stdout = String::from_utf8(output.stdout).expect("utf-8 stdout");
    assert!(stdout.contains("--hik8s-url"), "{stdout}");
    assert!(stdout.contains("HIK8S_SHUTDOWN_GRACE_SECS"), "{stdout}");
}

#[test]
fn log_lines_carry_level_thread_and_target() {
    let output = run_child("logging_child");
    assert!(output.status.success(), "{output:?}");
    let stderr = String::from_utf8(output.stderr).expect("utf-8 stderr");
    let line = stderr
        .lines()
        .find(|l| l.contains("hello from a named thread"))
        .unwrap_or_else(|| panic!("no log line in {stderr}"));
    // `2024-11-18T08:59:45.123Z INFO  [logtest-worker] target: message`
    assert!(
        line.contains(" INFO  [logtest-worker] process_exit_and_logs: "),
        "{line}"
    );
    assert!(
        line.split(' ').next().is_some_and(|t| t.ends_with('Z')),
        "{line}"
    );
    assert!(!stderr.contains("filtered out debug"), "{stderr}");
}

#[test]
#[ignore = "run by a_bad_configuration_exits_2_with_one_line_naming_the_variable"]
fn bad_url_child() {
    parse_or_exit(&[("HIK8S_URL", "ftp//x"), ("HIK8S_TOKEN", "made-up")], &[]);
    panic!("or_exit should have exited");
}

#[test]
#[ignore = "run by help_goes_to_stdout_with_status_0"]
fn help_child() {
    parse_or_exit(&[], &["--help"]);
    panic!("or_exit should have exited");
}

#[test]
#[ignore = "run by log_lines_carry_level_thread_and_target"]
fn logging_child() {
    shared::logging::init("info");
    std::thread::Builder::new()
        .name("logtest-worker".into())
        .spawn(|| {
            log::debug!("filtered out debug");
            log::info!("hello from a named thread");
        })
        .expect("spawn")
        .join()
        .expect("join");
}
