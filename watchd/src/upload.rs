//! The `watchd-upload` thread: batches records per route and sends them
//! (SPEC §1, §3 "Failures", §4).
//!
//! Connection errors, timeouts, 429 and 5xx are retried for ever with the
//! shared backoff, while the channel behind fills up and the watchers wait:
//! memory stays bounded. A 413 or another 4xx splits the batch until the
//! offending record is alone; that record is logged and dropped.

use std::time::Instant;

use crossbeam_channel::{Receiver, RecvTimeoutError};
use serde_json::Value;
use shared::retry::{Attempts, Backoff, Delivery, send_with_retry};
use shared::shutdown::Shutdown;
use shared::sink::Sink;

use crate::batch::{Batch, Batcher};
use crate::metrics::Metrics;
use crate::process::Record;

/// Sends batches through a sink, splitting what the intake refuses.
pub struct Uploader<'a> {
    sink: &'a Sink,
    metrics: Metrics,
    /// Triggered when the shutdown grace period is over: stop retrying.
    give_up: Shutdown,
    backoff: Backoff,
}

/// The upload stopped before everything was acknowledged (grace period
/// over).
#[derive(Debug)]
pub struct GaveUp {
    pub records: usize,
}

impl<'a> Uploader<'a> {
    pub fn new(sink: &'a Sink, metrics: Metrics, give_up: Shutdown) -> Self {
        Uploader {
            sink,
            metrics,
            give_up,
            backoff: Backoff::new(),
        }
    }

    /// Delivers `batch`, or drops the records the intake refuses for good.
    /// Returns only when every record is acknowledged or dropped, or when
    /// `give_up` is triggered.
    pub fn send(&mut self, batch: Batch) -> Result<(), GaveUp> {
        // Halves are pushed second-first so they go out in order.
        let mut stack = vec![batch];
        while let Some(batch) = stack.pop() {
            let body = batch.body();
            let route = batch.route;
            let metrics = &self.metrics;
            let delivery = send_with_retry(
                || self.sink.send_records(route, &body),
                &mut self.backoff,
                Attempts::Forever,
                &self.give_up,
                |error, wait| {
                    metrics.retries.inc();
                    log::warn!(
                        "sending {} records to /{route}: {error}; retrying in {wait:.1?}",
                        batch.records.len()
                    );
                },
            );
            let result = match delivery {
                Delivery::Delivered => {
                    let m = &self.metrics;
                    m.records_shipped
                        .get_or_create(&[("route", route.name())])
                        .inc_by(batch.records.len() as u64);
                    m.bytes_shipped
                        .get_or_create(&[("route", route.name())])
                        .inc_by(body.len() as u64);
                    "delivered"
                }
                Delivery::TooLarge | Delivery::Rejected { .. } => {
                    let reason = match &delivery {
                        Delivery::Rejected { status, body_start } => {
                            format!("HTTP {status}: {body_start}")
                        }
                        _ => "HTTP 413: too large".to_string(),
                    };
                    match batch.split() {
                        Some((first, second)) => {
                            stack.push(second);
                            stack.push(first);
                            "split"
                        }
                        None => {
                            log::error!(
                                "the intake refused a record for good, dropped: /{route} {}: {reason}",
                                describe(&body)
                            );
                            self.metrics
                                .records_dropped
                                .get_or_create(&[("reason", "rejected")])
                                .inc();
                            "dropped"
                        }
                    }
                }
                Delivery::GaveUp { .. } | Delivery::ShutDown => {
                    let records =
                        batch.records.len() + stack.iter().map(|b| b.records.len()).sum::<usize>();
                    return Err(GaveUp { records });
                }
            };
            self.metrics
                .batches
                .get_or_create(&[("route", route.name()), ("result", result)])
                .inc();
        }
        Ok(())
    }
}

/// `Kind namespace/name` of the one record in `body`, for the log.
fn describe(body: &[u8]) -> String {
    let Ok(records) = serde_json::from_slice::<Vec<Value>>(body) else {
        return "(unreadable)".into();
    };
    let Some(object) = records.first().map(|r| &r["json"]) else {
        return "(empty)".into();
    };
    let s = |p: &str| {
        object
            .pointer(p)
            .and_then(Value::as_str)
            .unwrap_or("?")
            .to_string()
    };
    format!(
        "{} {} {}/{} uid {}",
        records[0]["event_type"].as_str().unwrap_or("?"),
        s("/kind"),
        s("/metadata/namespace"),
        s("/metadata/name"),
        s("/metadata/uid")
    )
}

/// The upload loop: takes records until the channel closes, flushing
/// batches when full or lingering, then sends what is left and returns.
pub fn run(
    records: Receiver<Record>,
    mut batcher: Batcher,
    mut uploader: Uploader<'_>,
    metrics: &Metrics,
) -> Result<(), GaveUp> {
    loop {
        let next = match batcher.next_deadline() {
            Some(deadline) => records.recv_deadline(deadline),
            None => records.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        let now = Instant::now();
        let mut ready = Vec::new();
        match next {
            Ok(record) => match batcher.push(record.route, record.bytes, now) {
                Ok(full) => ready.extend(full),
                Err(too_large) => {
                    log::error!(
                        "a {} record of {} bytes is larger than any request the intake takes (1 MiB), dropped",
                        record.route,
                        too_large.bytes
                    );
                    metrics
                        .records_dropped
                        .get_or_create(&[("reason", "too_large")])
                        .inc();
                }
            },
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                for batch in batcher.drain() {
                    uploader.send(batch)?;
                }
                return Ok(());
            }
        }
        ready.extend(batcher.due(now));
        for batch in ready {
            uploader.send(batch)?;
        }
    }
}
