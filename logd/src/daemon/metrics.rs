//! logd's metrics (SPEC §5). Clones share the same values, so each thread
//! keeps a clone and updates what it owns.

use logd::Stats;
use shared::metrics::Registry;
use shared::metrics::prometheus_client::metrics::counter::Counter;
use shared::metrics::prometheus_client::metrics::family::Family;
use shared::metrics::prometheus_client::metrics::gauge::Gauge;
use shared::metrics::prometheus_client::metrics::histogram::{Histogram, exponential_buckets};

type Labels = [(&'static str, &'static str); 1];

#[derive(Clone)]
pub struct Metrics {
    pub lines_read: Counter,
    pub bytes_read: Counter,
    pub lines_shipped: Counter,
    pub bytes_shipped: Counter,
    /// By reason: `rejected` (a 4xx), `server_error` (a 500 again and again
    /// while other requests succeed).
    pub lines_dropped: Family<Labels, Counter>,
    /// By result: `delivered`, `split` (413 or isolating a bad line),
    /// `rejected`.
    pub batches: Family<Labels, Counter>,
    pub retries: Counter,
    pub files_tracked: Gauge,
    pub files_open: Gauge,
    pub bytes_behind: Gauge,
    pub truncations: Counter,
    pub lost_to_rotation_files: Counter,
    pub lost_to_rotation_bytes: Counter,
    pub checkpoint_writes: Counter,
    pub checkpoint_errors: Counter,
    pub inotify_rescans: Counter,
    /// Requests allowed in flight at once (the adaptive limit).
    pub upload_limit: Gauge,
    pub uploads_in_flight: Gauge,
    /// Time from sending a request to its answer.
    pub upload_seconds: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            lines_read: Counter::default(),
            bytes_read: Counter::default(),
            lines_shipped: Counter::default(),
            bytes_shipped: Counter::default(),
            lines_dropped: Family::default(),
            batches: Family::default(),
            retries: Counter::default(),
            files_tracked: Gauge::default(),
            files_open: Gauge::default(),
            bytes_behind: Gauge::default(),
            truncations: Counter::default(),
            lost_to_rotation_files: Counter::default(),
            lost_to_rotation_bytes: Counter::default(),
            checkpoint_writes: Counter::default(),
            checkpoint_errors: Counter::default(),
            inotify_rescans: Counter::default(),
            upload_limit: Gauge::default(),
            uploads_in_flight: Gauge::default(),
            // 1 ms to about 16 s, doubling.
            upload_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 15)),
        }
    }
}

impl Metrics {
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("logd");
        r.register(
            "lines_read",
            "Lines read from log files",
            self.lines_read.clone(),
        );
        r.register(
            "bytes_read",
            "Bytes read from log files",
            self.bytes_read.clone(),
        );
        r.register(
            "lines_shipped",
            "Lines acknowledged by the sink",
            self.lines_shipped.clone(),
        );
        r.register(
            "bytes_shipped",
            "Bytes of lines acknowledged by the sink",
            self.bytes_shipped.clone(),
        );
        r.register(
            "lines_dropped",
            "Lines dropped, by reason",
            self.lines_dropped.clone(),
        );
        r.register("batches", "Batches sent, by result", self.batches.clone());
        r.register(
            "retries",
            "Requests retried after a failure",
            self.retries.clone(),
        );
        r.register(
            "files_tracked",
            "Log files being followed",
            self.files_tracked.clone(),
        );
        r.register(
            "files_open",
            "Log files open (including rotated and deleted ones being finished)",
            self.files_open.clone(),
        );
        r.register(
            "bytes_behind",
            "Bytes written to log files and not yet acknowledged",
            self.bytes_behind.clone(),
        );
        r.register(
            "truncations",
            "Files found truncated and read again from the start",
            self.truncations.clone(),
        );
        r.register(
            "lost_to_rotation_files",
            "Deleted files let go before they were finished",
            self.lost_to_rotation_files.clone(),
        );
        r.register(
            "lost_to_rotation_bytes",
            "Unread bytes of deleted files let go",
            self.lost_to_rotation_bytes.clone(),
        );
        r.register(
            "checkpoint_writes",
            "Checkpoint files written",
            self.checkpoint_writes.clone(),
        );
        r.register(
            "checkpoint_errors",
            "Checkpoint writes that failed (retried)",
            self.checkpoint_errors.clone(),
        );
        r.register(
            "inotify_rescans",
            "Full rescans after an inotify overflow or missing watch",
            self.inotify_rescans.clone(),
        );
        r.register(
            "upload_limit",
            "Requests allowed in flight at once (adaptive, at most LOGD_UPLOAD_CONCURRENCY)",
            self.upload_limit.clone(),
        );
        r.register(
            "uploads_in_flight",
            "Requests in flight",
            self.uploads_in_flight.clone(),
        );
        r.register(
            "upload_duration_seconds",
            "Time from sending a request to the intake's answer",
            self.upload_seconds.clone(),
        );
    }

    pub fn dropped(&self, reason: &'static str, lines: usize) {
        self.lines_dropped
            .get_or_create(&[("reason", reason)])
            .inc_by(lines as u64);
    }

    pub fn batch(&self, result: &'static str) {
        self.batches.get_or_create(&[("result", result)]).inc();
    }

    /// Brings the core's figures over: `last` is what was brought last time.
    pub fn update_from_core(&self, now: &Stats, last: &Stats) {
        self.lines_read.inc_by(now.lines_read - last.lines_read);
        self.bytes_read.inc_by(now.bytes_read - last.bytes_read);
        self.truncations.inc_by(now.truncations - last.truncations);
        self.lost_to_rotation_files
            .inc_by(now.lost_files - last.lost_files);
        self.lost_to_rotation_bytes
            .inc_by(now.lost_bytes - last.lost_bytes);
        self.files_tracked.set(now.files_tracked as i64);
        self.files_open.set(now.files_open as i64);
        self.bytes_behind
            .set(i64::try_from(now.bytes_behind).unwrap_or(i64::MAX));
    }
}
