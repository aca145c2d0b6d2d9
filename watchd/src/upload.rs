//! The upload threads, one per route: each batches its route's records and
//! sends them (SPEC §1, §3 "Failures", §4).
//!
//! A route has its own thread, batcher and backoff, so a route the intake
//! is slow on or fails waits alone ([`crate::lanes`]); within a route one
//! request is in flight at a time, so records arrive in the order they were
//! made (an `apply` never overtakes the `delete` after it).
//!
//! Connection errors, timeouts, 429 and 5xx are retried for ever with the
//! shared backoff, while the route's lane fills up and its watchers wait:
//! memory stays bounded. A 413 or another 4xx splits the batch until the
//! offending record is alone; that record is logged and dropped. The
//! backend answers a malformed record with 500, not 400: a batch answered
//! 500 [`REPEATED_500`] times in a row is split the same way, and a single
//! record is dropped for it only if other requests of the route succeeded
//! meanwhile (a route that fails everything is an outage: wait).
//!
//! The OTLP sink answers the same way (its client sorts the answers), and
//! may also take a request but drop some of its records (a
//! `partial_success`): those are logged and counted as dropped, and not
//! sent again, as the OTLP specification says.

use std::time::Instant;

use crossbeam_channel::{Receiver, RecvTimeoutError};
use serde_json::Value;
use shared::intake::SendError;
use shared::otlp::Delivered;
use shared::retry::{Attempts, Backoff, Delivery, send_with_retry};
use shared::shutdown::Shutdown;
use shared::sink::Sink;

use crate::batch::{Batch, Batcher};
use crate::lanes::Records;
use crate::leader::Leadership;
use crate::metrics::Metrics;
use crate::resources::Route;

/// Consecutive 500s after which a batch is split to find a bad record.
pub const REPEATED_500: u32 = 4;

/// The name of `route`'s upload thread. Linux keeps 15 bytes of a thread
/// name (`top -H`, `perf`), so `watchd-upload-resources` would show as
/// `watchd-upload-r`: hence the short names.
pub fn thread_name(route: Route) -> &'static str {
    match route {
        Route::Resources => "watchd-up-res",
        Route::CustomResources => "watchd-up-cr",
        Route::Events => "watchd-up-ev",
    }
}

/// Sends one route's batches through a sink, splitting what the intake
/// refuses.
pub struct Uploader<'a> {
    sink: &'a Sink,
    metrics: Metrics,
    /// Triggered when the shutdown grace period is over: stop retrying.
    give_up: Shutdown,
    backoff: Backoff,
    /// Requests of this route acknowledged so far: tells a bad record from
    /// an outage of the route.
    delivered: u64,
    /// Leader election: every request waits here first ([`Uploader::gated`]).
    gate: Leadership,
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
            delivered: 0,
            gate: Leadership::always(),
        }
    }

    /// Sends only while this replica leads: each request, first or retry,
    /// checks `gate` right before it goes, and once the term is over none
    /// goes any more ([`Leadership::when_leading`]).
    pub fn gated(mut self, gate: Leadership) -> Self {
        self.gate = gate;
        self
    }

    /// Delivers `batch`, or drops the records the intake refuses for good.
    /// Returns only when every record is acknowledged or dropped, or when
    /// `give_up` is triggered.
    pub fn send(&mut self, batch: Batch) -> Result<(), GaveUp> {
        // Halves are pushed second-first so they go out in order.
        let mut stack = vec![batch];
        let delivered_before = self.delivered;
        while let Some(batch) = stack.pop() {
            let body = batch.body();
            let route = batch.route;
            let metrics = &self.metrics;
            let mut five_hundreds = 0;
            let mut answer = Delivered::default();
            let delivery = send_with_retry(
                || match self
                    .gate
                    .when_leading(|| self.sink.send_records(route, &body))
                {
                    Ok(delivered) => {
                        answer = delivered;
                        Ok(())
                    }
                    Err(SendError::Retryable {
                        status: Some(500),
                        reason,
                        ..
                    }) if {
                        five_hundreds += 1;
                        five_hundreds >= REPEATED_500
                    } =>
                    {
                        Err(SendError::Rejected {
                            status: 500,
                            body_start: format!("{reason} ({REPEATED_500} times in a row)"),
                        })
                    }
                    Err(other) => Err(other),
                },
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
                    self.delivered += 1;
                    let m = &self.metrics;
                    let records = batch.records.len() as u64;
                    let dropped = answer.rejected.min(records);
                    if answer.rejected > 0 {
                        log::error!(
                            "the sink took {records} records to /{route} but dropped {} of them (partial success), not sent again: {}",
                            answer.rejected,
                            answer.message
                        );
                        m.records_dropped
                            .get_or_create(&[("reason", "partial_success")])
                            .inc_by(dropped);
                    }
                    m.records_shipped
                        .get_or_create(&[("route", route.name())])
                        .inc_by(records - dropped);
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
                    let outage = matches!(delivery, Delivery::Rejected { status: 500, .. })
                        && self.delivered == delivered_before;
                    if batch.records.len() > 1 {
                        let (first, second) = batch.split().expect("two records or more");
                        // Isolating a bad record is not waiting out an
                        // outage: each half starts with short waits.
                        self.backoff.reset();
                        stack.push(second);
                        stack.push(first);
                        "split"
                    } else if outage {
                        // Nothing succeeded yet: an outage, or this record?
                        // The rest of the batch goes first and tells; when
                        // nothing else is left, keep trying (the backoff
                        // grows).
                        stack.insert(0, batch);
                        "retried"
                    } else {
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
                Delivery::Refused { status, body_start } => {
                    log::error!(
                        "the sink refused {} records for good, dropped: /{route}: HTTP {status}: {body_start}",
                        batch.records.len()
                    );
                    self.metrics
                        .records_dropped
                        .get_or_create(&[("reason", "refused")])
                        .inc_by(batch.records.len() as u64);
                    "dropped"
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

/// The upload loop of one route: takes records from its lane until the
/// lane closes, flushing batches when full or lingering, then sends what is
/// left and returns.
pub fn run(
    lane: Receiver<Records>,
    mut batcher: Batcher,
    mut uploader: Uploader<'_>,
    metrics: &Metrics,
) -> Result<(), GaveUp> {
    loop {
        let next = match batcher.next_deadline() {
            Some(deadline) => lane.recv_deadline(deadline),
            None => lane.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        let now = Instant::now();
        let mut ready = Vec::new();
        match next {
            // The message's credit goes back as it is dropped here.
            Ok(message) => {
                for record in message.records {
                    ready.extend(push(&mut batcher, record, now, metrics));
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                if let Some(batch) = batcher.drain() {
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

/// Adds a record to the batch; returns the batches to send now. A record
/// no request can carry is logged, counted and dropped.
fn push(batcher: &mut Batcher, record: Vec<u8>, now: Instant, metrics: &Metrics) -> Vec<Batch> {
    batcher.push(record, now).unwrap_or_else(|too_large| {
        log::error!(
            "a {} record of {} bytes is larger than any request the intake takes (1 MiB), dropped",
            batcher.route(),
            too_large.bytes
        );
        metrics
            .records_dropped
            .get_or_create(&[("reason", "too_large")])
            .inc();
        Vec::new()
    })
}
