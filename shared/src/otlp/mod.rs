//! The OTLP/HTTP sink (SPEC §7): OpenTelemetry logs to any OTLP receiver
//! (the Collector, Grafana Loki, Elastic, vendors).
//!
//! - [`encode`]: requests, written as protobuf or OTLP/JSON record by record;
//! - [`logs`]: logd's lines as the Collector's filelog receiver (with its
//!   `container` parser) makes them, one `ResourceLogs` per file;
//! - [`client`]: the POST and the answers, sorted into [`crate::intake::SendError`].

pub mod client;
pub mod encode;
pub mod logs;
pub mod objects;

pub use client::{Delivered, OtlpClient};
