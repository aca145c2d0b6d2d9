//! `test-intake [--port N] [--count-only] [--interval-ms N] [--latency]
//! [--delay-ms N] [--otlp-answer 200|204|partial:N]`:
//! runs the test intake server for benchmarks and for trying the daemons by
//! hand.
//!
//! Prints `listening on http://127.0.0.1:PORT` to stdout, then (every
//! second, or every `--interval-ms`, when anything changed) the counters to
//! stderr, ending with the wall-clock time they were read. Runs until killed
//! (SIGTERM/SIGINT end it with the default action).

use std::io::{BufRead, Write};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use testkit::intake::{
    CLIENT_ID, CLIENT_SECRET, Faults, Intake, IntakeOptions, OtlpAnswer, STATIC_TOKEN,
};

const USAGE: &str = "usage: test-intake [--port N] [--count-only] [--interval-ms N] [--latency]
                   [--delay-ms N] [--otlp-answer 200|204|partial:N]

Runs the test HiK8s intake server on 127.0.0.1, with an OTLP/HTTP logs
receiver at /v1/logs (and any path ending in /v1/logs; no token needed).
  --port N          listen on port N (default: a free port)
  --count-only      count /logs lines and OTLP records without storing them
                    (benchmarks)
  --interval-ms N   print the counters at most every N ms (default 1000)
  --latency         measure the end-to-end latency of /logs lines: the time
                    each line was received minus the time in its timestamp,
                    printed as percentiles with the counters (needs the
                    lines stored, so not with --count-only). A line `reset`
                    on stdin starts the measurement afresh: lines received
                    until then are not counted.
  --delay-ms N      answer each data request (/logs, /raw, the JSON routes,
                    /v1/logs) N ms after it was received, as a distant intake
                    would; concurrent requests are delayed independently
                    (default 0)
  --otlp-answer A   how accepted OTLP exports are answered: 200 (an empty
                    ExportLogsServiceResponse, the default), 204 (no body,
                    as Loki answers) or partial:N (200 with partial_success
                    saying N records were rejected)

Counters line (stderr): log lines N  log bytes N  raw lines N  raw bytes N
  otlp records N  max in flight N  requests by status S:N ...  at UNIX_SECONDS
(max in flight: the most data requests handled at once so far)
Latency line (stderr): latency ms  lines N  p50 X  p99 X  max X  unparsed N

Credentials: client id and secret for the token endpoint (/oauth2/token),
or the static bearer token, as printed at start.";

/// How often `--latency` looks at the line count: the resolution of the
/// receive times it records.
const LATENCY_POLL: Duration = Duration::from_millis(1);

struct Args {
    port: u16,
    count_only: bool,
    interval: Duration,
    latency: bool,
    delay: Duration,
    otlp_answer: OtlpAnswer,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        port: 0,
        count_only: false,
        interval: Duration::from_secs(1),
        latency: false,
        delay: Duration::ZERO,
        otlp_answer: OtlpAnswer::Ok200,
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
            "--interval-ms" => {
                let value = argv.next().ok_or("--interval-ms needs a value")?;
                let ms: u64 =
                    value.parse().ok().filter(|ms| *ms > 0).ok_or_else(|| {
                        format!("--interval-ms: not a positive number: {value:?}")
                    })?;
                args.interval = Duration::from_millis(ms);
            }
            "--delay-ms" => {
                let value = argv.next().ok_or("--delay-ms needs a value")?;
                let ms: u64 = value
                    .parse()
                    .map_err(|_| format!("--delay-ms: not a number of ms: {value:?}"))?;
                args.delay = Duration::from_millis(ms);
            }
            "--otlp-answer" => {
                let value = argv.next().ok_or("--otlp-answer needs a value")?;
                args.otlp_answer = parse_otlp_answer(&value).ok_or_else(|| {
                    format!("--otlp-answer: not 200, 204 or partial:N: {value:?}")
                })?;
            }
            "--count-only" => args.count_only = true,
            "--latency" => args.latency = true,
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if args.latency && args.count_only {
        return Err("--latency needs the lines: not with --count-only".into());
    }
    Ok(args)
}

fn parse_otlp_answer(value: &str) -> Option<OtlpAnswer> {
    match value {
        "200" => Some(OtlpAnswer::Ok200),
        "204" => Some(OtlpAnswer::NoContent204),
        _ => {
            let rejected = value.strip_prefix("partial:")?.parse().ok()?;
            Some(OtlpAnswer::PartialSuccess {
                rejected,
                message: format!("test-intake --otlp-answer {value}"),
            })
        }
    }
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
    intake.set_faults(Faults {
        latency: args.delay,
        ..Faults::default()
    });
    intake.set_otlp_answer(args.otlp_answer);
    println!("listening on {}", intake.url());
    let _ = std::io::stdout().flush();
    eprintln!(
        "token url {}  client id {CLIENT_ID}  client secret {CLIENT_SECRET}  static token {STATIC_TOKEN}",
        intake.token_url()
    );
    let mut latency = args.latency.then(|| Latency::new(reset_on_stdin()));
    let poll = if args.latency {
        LATENCY_POLL
    } else {
        args.interval
    };
    let mut last = String::new();
    let mut next_print = Instant::now() + args.interval;
    loop {
        std::thread::sleep(poll);
        if let Some(latency) = &mut latency {
            latency.poll(&intake);
        }
        if Instant::now() < next_print {
            continue;
        }
        next_print += args.interval;
        let counters = counters(&intake);
        let changed = counters != last;
        if let Some(latency) = &mut latency {
            // Also once more after the last change: lines stored after the
            // last measurement would otherwise never be measured.
            if changed || latency.pending() {
                latency.measure(&intake);
                eprintln!("{}", latency.summary());
            }
        }
        if changed {
            eprintln!("{counters}  at {:.6}", unix_seconds(SystemTime::now()));
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
        "log lines {}  log bytes {}  raw lines {}  raw bytes {}  otlp records {}  max in flight {}  requests by status {}",
        intake.log_line_count(),
        intake.log_byte_count(),
        intake.raw_lines(),
        intake.raw_bytes(),
        intake.otlp_record_count(),
        intake.max_in_flight(),
        statuses.join(" ")
    )
}

fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

/// A flag raised by each `reset` line on stdin (read by a thread of its
/// own; stdin at end of file ends the thread, not the server).
fn reset_on_stdin() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    let raised = Arc::clone(&flag);
    std::thread::Builder::new()
        .name("intake-stdin".into())
        .spawn(move || {
            for line in std::io::stdin().lock().lines() {
                match line {
                    Ok(line) if line.trim() == "reset" => raised.store(true, Ordering::Relaxed),
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
        })
        .expect("spawning the stdin thread at start");
    flag
}

/// End-to-end latency of `/logs` lines. The server stores lines in the order
/// it accepted them and counts them; polling the count every millisecond
/// gives the time each line was received (to within the poll), without
/// touching the server's hot path. Receive time minus the line's timestamp
/// (the time the writer wrote it) is the latency.
struct Latency {
    reset: Arc<AtomicBool>,
    /// When each line count was first seen, in increasing count order.
    arrivals: Vec<(SystemTime, u64)>,
    /// Lines of the first `batches_done` batches have been measured.
    batches_done: usize,
    lines_done: u64,
    /// Lines with an index below this (received before a reset) are skipped.
    first_counted: u64,
    /// Microseconds, one per measured line.
    samples: Vec<i64>,
    unparsed: u64,
}

impl Latency {
    fn new(reset: Arc<AtomicBool>) -> Latency {
        Latency {
            reset,
            arrivals: Vec::new(),
            batches_done: 0,
            lines_done: 0,
            first_counted: 0,
            samples: Vec::new(),
            unparsed: 0,
        }
    }

    /// Records the time of a new line count, and applies a reset.
    fn poll(&mut self, intake: &Intake) {
        let count = intake.log_line_count();
        if self.arrivals.last().is_none_or(|(_, last)| *last < count) {
            self.arrivals.push((SystemTime::now(), count));
        }
        if self.reset.swap(false, Ordering::Relaxed) {
            self.first_counted = count;
            self.samples.clear();
            self.unparsed = 0;
        }
    }

    /// Whether lines were received that are not measured yet.
    fn pending(&self) -> bool {
        self.arrivals
            .last()
            .is_some_and(|(_, count)| *count > self.lines_done)
    }

    /// Measures the lines received since the last call. A batch stored but
    /// not yet seen in the count is left for the next call.
    fn measure(&mut self, intake: &Intake) {
        let Some(&(_, seen)) = self.arrivals.last() else {
            return;
        };
        let batches = intake.log_batches();
        for batch in &batches[self.batches_done..] {
            if self.lines_done + batch.lines.len() as u64 > seen {
                break;
            }
            for line in &batch.lines {
                let index = self.lines_done;
                self.lines_done += 1;
                if index < self.first_counted {
                    continue;
                }
                // The first poll that saw a count above `index`.
                let at = self.arrivals.partition_point(|(_, count)| *count <= index);
                let received = self.arrivals[at].0;
                match parse_utc(line) {
                    Some(written) => self.samples.push(micros_between(written, received)),
                    None => self.unparsed += 1,
                }
            }
            self.batches_done += 1;
        }
    }

    fn summary(&self) -> String {
        let mut sorted = self.samples.clone();
        sorted.sort_unstable();
        let ms = |q: f64| -> f64 {
            if sorted.is_empty() {
                return 0.0;
            }
            // Nearest rank.
            let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
            sorted[rank - 1] as f64 / 1000.0
        };
        format!(
            "latency ms  lines {}  p50 {:.1}  p99 {:.1}  max {:.1}  unparsed {}",
            sorted.len(),
            ms(0.50),
            ms(0.99),
            ms(1.0),
            self.unparsed
        )
    }
}

fn micros_between(from: SystemTime, to: SystemTime) -> i64 {
    match to.duration_since(from) {
        Ok(d) => d.as_micros() as i64,
        Err(e) => -(e.duration().as_micros() as i64),
    }
}

/// The time of a line that starts `YYYY-MM-DDTHH:MM:SS[.fraction]Z ` (the
/// form logd sends), or `None`.
fn parse_utc(line: &str) -> Option<SystemTime> {
    let stamp = line.get(..line.find('Z')?)?;
    let (date_time, fraction) = stamp.split_once('.').unwrap_or((stamp, ""));
    let b = date_time.as_bytes();
    if b.len() != 19 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' {
        return None;
    }
    let num = |range: std::ops::Range<usize>| date_time.get(range)?.parse::<i64>().ok();
    let days = days_from_civil(num(0..4)?, num(5..7)?, num(8..10)?);
    let secs = days * 86_400 + num(11..13)? * 3600 + num(14..16)? * 60 + num(17..19)?;
    let digits = &fraction[..fraction.len().min(9)];
    let nanos = if digits.is_empty() {
        0
    } else {
        digits.parse::<u32>().ok()? * 10u32.pow(9 - digits.len() as u32)
    };
    UNIX_EPOCH.checked_add(Duration::new(u64::try_from(secs).ok()?, nanos))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
/// algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_otlp_answers() {
        assert_eq!(parse_otlp_answer("200"), Some(OtlpAnswer::Ok200));
        assert_eq!(parse_otlp_answer("204"), Some(OtlpAnswer::NoContent204));
        assert!(matches!(
            parse_otlp_answer("partial:3"),
            Some(OtlpAnswer::PartialSuccess { rejected: 3, .. })
        ));
        assert_eq!(parse_otlp_answer("partial:x"), None);
        assert_eq!(parse_otlp_answer("500"), None);
    }

    #[test]
    fn parses_the_utc_stamps_logd_sends() {
        let at = |line| {
            parse_utc(line)
                .expect("parses")
                .duration_since(UNIX_EPOCH)
                .expect("after the epoch")
        };
        assert_eq!(at("1970-01-01T00:00:00Z stdout F x"), Duration::ZERO);
        // Both checked with `date -u -d <stamp> +%s`.
        assert_eq!(
            at("2024-11-18T08:59:45.5Z stdout F x"),
            Duration::new(1_731_920_385, 500_000_000)
        );
        assert_eq!(
            at("2000-03-01T00:00:00.000000001Z stderr F"),
            Duration::new(951_868_800, 1)
        );
        assert!(parse_utc("2024-11-18 08:59:45Z stdout F x").is_none());
        assert!(parse_utc("not a stamp").is_none());
    }
}
