//! `test-intake [--port N] [--count-only]`: runs the test intake server for
//! benchmarks and for trying the daemons by hand.
//!
//! Prints `listening on http://127.0.0.1:PORT` to stdout, then every second
//! (when anything changed) the counters to stderr. Runs until killed
//! (SIGTERM/SIGINT end it with the default action).

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use testkit::intake::{CLIENT_ID, CLIENT_SECRET, Intake, IntakeOptions, STATIC_TOKEN};

const USAGE: &str = "usage: test-intake [--port N] [--count-only]

Runs the test HiK8s intake server on 127.0.0.1.
  --port N        listen on port N (default: a free port)
  --count-only    count /logs lines without storing them (benchmarks)

Credentials: client id and secret for the token endpoint (/oauth2/token),
or the static bearer token, as printed at start.";

struct Args {
    port: u16,
    count_only: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        port: 0,
        count_only: false,
    };
    let mut argv = std::env::args().skip(1);
    while let Some(arg) = argv.next() {
        match arg.as_str() {
            "--port" => {
                let value = argv.next().ok_or("--port needs a value")?;
                args.port = value
                    .parse()
                    .map_err(|_| format!("--port: not a port: {value:?}"))?;
            }
            "--count-only" => args.count_only = true,
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(args)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            if !message.is_empty() {
                eprintln!("test-intake: {message}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(if message.is_empty() { 0 } else { 2 });
        }
    };
    let intake = Intake::start_on(
        args.port,
        IntakeOptions {
            count_only: args.count_only,
            ..IntakeOptions::default()
        },
    );
    println!("listening on {}", intake.url());
    let _ = std::io::stdout().flush();
    eprintln!(
        "token url {}  client id {CLIENT_ID}  client secret {CLIENT_SECRET}  static token {STATIC_TOKEN}",
        intake.token_url()
    );
    let mut last = String::new();
    loop {
        std::thread::sleep(Duration::from_secs(1));
        let counters = counters(&intake);
        if counters != last {
            eprintln!("{counters}");
            last = counters;
        }
    }
}

fn counters(intake: &Intake) -> String {
    let statuses: Vec<String> = intake
        .status_counts()
        .iter()
        .map(|(status, count)| format!("{status}:{count}"))
        .collect();
    format!(
        "log lines {}  log bytes {}  raw lines {}  raw bytes {}  requests by status {}",
        intake.log_line_count(),
        intake.log_byte_count(),
        intake.raw_lines(),
        intake.raw_bytes(),
        statuses.join(" ")
    )
}
