//! watchd's metrics (SPEC §5): records by route and event type, skipped
//! duplicates, watchers by state, batches by result, retries, drops.
//!
//! Clones share the same series; each thread keeps a clone.

use shared::metrics::Registry;
use shared::metrics::prometheus_client::metrics::counter::Counter;
use shared::metrics::prometheus_client::metrics::family::Family;
use shared::metrics::prometheus_client::metrics::gauge::Gauge;

type Labels1 = [(&'static str, &'static str); 1];
type Labels2 = [(&'static str, &'static str); 2];

/// Every watchd metric.
#[derive(Clone, Default, Debug)]
pub struct Metrics {
    /// Records produced, by `route` and `event_type`.
    pub records: Family<Labels2, Counter>,
    /// Updates not shipped because only ignored fields changed, by `route`.
    pub skipped_duplicates: Family<Labels1, Counter>,
    /// Watchers by `state`: listing, watching, forbidden, retrying.
    pub watchers: Family<Labels1, Gauge>,
    /// Batches by `route` and `result`: delivered, split, dropped.
    pub batches: Family<Labels2, Counter>,
    /// Records acknowledged by the sink (less those it said it dropped), by
    /// `route`.
    pub records_shipped: Family<Labels1, Counter>,
    /// Records dropped, by `reason`: too_large, rejected (a record the sink
    /// refused, isolated), refused (a request the sink refused whole),
    /// partial_success (records an OTLP receiver took but dropped).
    pub records_dropped: Family<Labels1, Counter>,
    /// Bytes of request bodies acknowledged, by `route`.
    pub bytes_shipped: Family<Labels1, Counter>,
    /// Send attempts that failed and were retried.
    pub retries: Counter,
    /// Watch errors (lost connections, expired versions, refusals), by `kind`.
    pub watch_errors: Family<Labels1, Counter>,
}

impl Metrics {
    /// Registers every metric under the `watchd_` prefix.
    pub fn register(registry: &mut Registry) -> Metrics {
        let m = Metrics::default();
        let r = registry.sub_registry_with_prefix("watchd");
        r.register(
            "records",
            "Records produced, by route and event type",
            m.records.clone(),
        );
        r.register(
            "skipped_duplicates",
            "Updates not shipped: only resourceVersion, managedFields times or heartbeats changed",
            m.skipped_duplicates.clone(),
        );
        r.register("watchers", "Watchers by state", m.watchers.clone());
        r.register("batches", "Batches by route and result", m.batches.clone());
        r.register(
            "records_shipped",
            "Records acknowledged, by route",
            m.records_shipped.clone(),
        );
        r.register(
            "records_dropped",
            "Records dropped, by reason",
            m.records_dropped.clone(),
        );
        r.register(
            "bytes_shipped",
            "Request body bytes acknowledged, by route",
            m.bytes_shipped.clone(),
        );
        r.register(
            "retries",
            "Failed send attempts that were retried",
            m.retries.clone(),
        );
        r.register(
            "watch_errors",
            "Watch errors, by kind",
            m.watch_errors.clone(),
        );
        m
    }
}
