//! What the server accepted and answered, shared with the test thread.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::Value;

use super::otlp::OtlpRequest;
use super::{LogBatch, RequestLog};

/// The JSON routes' record kinds, named as in [`super::Intake::records`].
pub(crate) const RECORD_ROUTES: [&str; 3] = ["resources", "customresources", "events"];

#[derive(Default)]
pub(crate) struct Store {
    received: Mutex<Received>,
    log_lines: AtomicU64,
    log_bytes: AtomicU64,
    raw_lines: AtomicU64,
    raw_bytes: AtomicU64,
    otlp_records: AtomicU64,
}

#[derive(Default)]
struct Received {
    log_batches: Vec<LogBatch>,
    /// Indexed like [`RECORD_ROUTES`].
    records: [Vec<Value>; 3],
    dropped_records: usize,
    otlp_requests: Vec<OtlpRequest>,
    requests: Vec<RequestLog>,
    status_counts: BTreeMap<u16, u64>,
}

/// Something a request delivered, stored only once it is answered 2xx.
pub(crate) enum Delivery {
    Logs {
        /// `None` with `count_only`.
        batch: Option<LogBatch>,
        lines: u64,
        bytes: u64,
    },
    Records {
        route: &'static str,
        records: Vec<Value>,
        dropped: usize,
    },
    Raw {
        lines: u64,
        bytes: u64,
    },
    Otlp {
        /// `None` with `count_only`.
        request: Option<OtlpRequest>,
        records: u64,
    },
}

fn route_index(route: &str) -> usize {
    RECORD_ROUTES
        .iter()
        .position(|r| *r == route)
        .unwrap_or_else(|| {
            panic!("unknown record route {route:?}; expected one of {RECORD_ROUTES:?}")
        })
}

impl Store {
    pub(crate) fn deliver(&self, delivery: Delivery) {
        match delivery {
            Delivery::Logs {
                batch,
                lines,
                bytes,
            } => {
                if let Some(batch) = batch {
                    self.lock().log_batches.push(batch);
                }
                self.log_lines.fetch_add(lines, Ordering::Relaxed);
                self.log_bytes.fetch_add(bytes, Ordering::Relaxed);
            }
            Delivery::Records {
                route,
                records,
                dropped,
            } => {
                let mut received = self.lock();
                received.records[route_index(route)].extend(records);
                received.dropped_records += dropped;
            }
            Delivery::Raw { lines, bytes } => {
                self.raw_lines.fetch_add(lines, Ordering::Relaxed);
                self.raw_bytes.fetch_add(bytes, Ordering::Relaxed);
            }
            Delivery::Otlp { request, records } => {
                if let Some(request) = request {
                    self.lock().otlp_requests.push(request);
                }
                self.otlp_records.fetch_add(records, Ordering::Relaxed);
            }
        }
    }

    pub(crate) fn log_request(&self, request: RequestLog) {
        let mut received = self.lock();
        *received.status_counts.entry(request.status).or_default() += 1;
        received.requests.push(request);
    }

    pub(crate) fn log_batches(&self) -> Vec<LogBatch> {
        self.lock().log_batches.clone()
    }

    pub(crate) fn records(&self, route: &str) -> Vec<Value> {
        self.lock().records[route_index(route)].clone()
    }

    pub(crate) fn dropped_records(&self) -> usize {
        self.lock().dropped_records
    }

    pub(crate) fn requests(&self) -> Vec<RequestLog> {
        self.lock().requests.clone()
    }

    pub(crate) fn status_counts(&self) -> BTreeMap<u16, u64> {
        self.lock().status_counts.clone()
    }

    pub(crate) fn otlp_requests(&self) -> Vec<OtlpRequest> {
        self.lock().otlp_requests.clone()
    }

    pub(crate) fn otlp_record_count(&self) -> u64 {
        self.otlp_records.load(Ordering::Relaxed)
    }

    pub(crate) fn log_line_count(&self) -> u64 {
        self.log_lines.load(Ordering::Relaxed)
    }

    pub(crate) fn log_byte_count(&self) -> u64 {
        self.log_bytes.load(Ordering::Relaxed)
    }

    pub(crate) fn raw_lines(&self) -> u64 {
        self.raw_lines.load(Ordering::Relaxed)
    }

    pub(crate) fn raw_bytes(&self) -> u64 {
        self.raw_bytes.load(Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Received> {
        self.received.lock().expect("intake store lock")
    }
}
