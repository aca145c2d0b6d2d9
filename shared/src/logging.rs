//! Logging setup: env_logger, one line per event:
//! `2024-11-18T08:59:45.123Z INFO  [logd-parse] logd::parse: message`,
//! with the thread's name to match `top -H`. Never log tokens or secrets.

use std::io::Write;

/// Initialises the global logger with `filter` (env_logger syntax, from
/// `RUST_LOG` via [`crate::config::CommonConfig::log_filter`]; `info` when
/// empty). Writes to stderr, so the stdout sink's NDJSON stays clean. A
/// second call does nothing.
pub fn init(filter: &str) {
    let filter = if filter.trim().is_empty() {
        "info"
    } else {
        filter
    };
    let _ = env_logger::Builder::new()
        .parse_filters(filter)
        .target(env_logger::Target::Stderr)
        .format(|buf, record| {
            let thread = std::thread::current();
            writeln!(
                buf,
                "{} {:<5} [{}] {}: {}",
                buf.timestamp_millis(),
                record.level(),
                thread.name().unwrap_or("unnamed"),
                record.target(),
                record.args()
            )
        })
        .try_init();
}
