//! Helpers shared by the integration tests: configurations pointing at a
//! test intake, valid log lines, waiting on a condition with a deadline.

#![allow(dead_code)] // each test file uses its own subset

use shared::config::{Config, IntakeConfig};
use shared::intake::LogMeta;
use testkit::intake::{self, Intake};

/// A pod path of the form the intake requires.
pub const POD_PATH: &str = "/var/log/pods/default_web-1_0a1b2c3d-0000-4000-8000-000000000001/nginx";

pub fn meta() -> LogMeta<'static> {
    LogMeta {
        path: POD_PATH,
        file: "0.log",
    }
}

/// `n` CRI `F` lines with a UTC timestamp, each ending with `\n`.
pub fn lines(prefix: &str, n: usize) -> String {
    (0..n)
        .map(|i| format!("2024-11-18T08:59:45.{i:09}Z stdout F {prefix} line {i}\n"))
        .collect()
}

/// The parsed configuration for `env` (no flags, no `.env`).
pub fn config(env: &[(&str, &str)]) -> Config {
    Config::parse(
        "shared-test",
        &[],
        Vec::new(),
        env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        None,
    )
    .unwrap_or_else(|e| panic!("test configuration refused: {e}"))
}

/// Intake settings with client credentials against `intake`.
pub fn client_credentials(intake: &Intake) -> IntakeConfig {
    let url = intake.url();
    let token_url = intake.token_url();
    config(&[
        ("HIK8S_URL", &url),
        ("CLIENT_ID", intake::CLIENT_ID),
        ("CLIENT_SECRET", intake::CLIENT_SECRET),
        ("AUTH_TOKEN_URL", &token_url),
        ("AUTH_AUDIENCE", "https://api.hik8s.ai/,second-audience"),
    ])
    .common()
    .intake()
    .expect("hik8s sink")
    .clone()
}

/// Intake settings with a static token against `intake`.
pub fn static_token(intake: &Intake, token: &str) -> IntakeConfig {
    let url = intake.url();
    config(&[("HIK8S_URL", &url), ("HIK8S_TOKEN", token)])
        .common()
        .intake()
        .expect("hik8s sink")
        .clone()
}

#[allow(unused_imports)] // each test file uses its own subset
pub use testkit::wait::wait_until;
