//! The state of every watcher, for `/readyz` and the `watchers` metric.
//!
//! watchd is ready once the CRD watcher has listed and every watcher that
//! is permitted has finished its first list (SPEC §4 "RBAC"): a forbidden
//! resource, or one this cluster does not serve, does not hold readiness
//! back.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use shared::health::Health;

use crate::metrics::Metrics;

/// Where a watcher is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WatcherState {
    /// Its first list is under way.
    Listing,
    /// Listed, now watching.
    Watching,
    /// The API server refused it (403); retried every few minutes.
    Forbidden,
    /// The API server does not serve it (404: an API this cluster lacks);
    /// retried every few minutes.
    NotServed,
    /// It failed otherwise and waits to retry.
    Retrying,
}

impl WatcherState {
    const ALL: [WatcherState; 5] = [
        WatcherState::Listing,
        WatcherState::Watching,
        WatcherState::Forbidden,
        WatcherState::NotServed,
        WatcherState::Retrying,
    ];

    /// Refused for good (until retried minutes later): it does not hold
    /// readiness back.
    fn is_refused(self) -> bool {
        matches!(self, WatcherState::Forbidden | WatcherState::NotServed)
    }

    fn name(self) -> &'static str {
        match self {
            WatcherState::Listing => "listing",
            WatcherState::Watching => "watching",
            WatcherState::Forbidden => "forbidden",
            WatcherState::NotServed => "not_served",
            WatcherState::Retrying => "retrying",
        }
    }
}

#[derive(Debug, Default)]
struct Inner {
    /// By resource name (`plural[.group]`), with whether it has listed once.
    watchers: HashMap<String, (WatcherState, bool)>,
    crds_listed: bool,
}

/// Shared watcher states. Clones share one state.
#[derive(Clone, Debug)]
pub struct WatchStatus {
    inner: Arc<Mutex<Inner>>,
    health: Health,
    metrics: Metrics,
}

impl WatchStatus {
    pub fn new(health: Health, metrics: Metrics) -> Self {
        WatchStatus {
            inner: Arc::default(),
            health,
            metrics,
        }
    }

    /// Records `name`'s state, and readiness when it completes the set.
    pub fn set(&self, name: &str, state: WatcherState) {
        let mut inner = self.lock();
        let entry = inner
            .watchers
            .entry(name.to_string())
            .or_insert((state, false));
        entry.0 = state;
        entry.1 |= state == WatcherState::Watching;
        self.update(&inner);
    }

    /// Forgets a watcher that stopped for good (its CRD was deleted).
    pub fn remove(&self, name: &str) {
        let mut inner = self.lock();
        inner.watchers.remove(name);
        self.update(&inner);
    }

    /// The CRD watcher finished its first list, and every CRD present at
    /// start has its watcher registered.
    pub fn crds_listed(&self) {
        let mut inner = self.lock();
        inner.crds_listed = true;
        self.update(&inner);
    }

    fn update(&self, inner: &Inner) {
        for state in WatcherState::ALL {
            let n = inner.watchers.values().filter(|(s, _)| *s == state).count();
            self.metrics
                .watchers
                .get_or_create(&[("state", state.name())])
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        let all_listed = inner
            .watchers
            .values()
            .all(|(state, listed)| *listed || state.is_refused());
        if inner.crds_listed && all_listed && !self.health.is_ready() {
            log::info!("initial lists done: ready");
            self.health.set_ready();
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Entries are replaced whole: a panic cannot leave one half-written.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_once_every_permitted_watcher_listed_and_crds_too() {
        let health = Health::new();
        let status = WatchStatus::new(health.clone(), Metrics::default());
        status.set("pods", WatcherState::Listing);
        status.set("nodes", WatcherState::Listing);
        status.set("nodes", WatcherState::Forbidden);
        status.set("pods", WatcherState::Watching);
        assert!(!health.is_ready(), "CRDs not listed yet");
        status.set("widgets.example.com", WatcherState::Listing);
        status.crds_listed();
        assert!(!health.is_ready());
        status.set("widgets.example.com", WatcherState::Watching);
        assert!(health.is_ready());
    }
}
