//! How many data requests are being handled at once, and the most so far:
//! what shows whether a client keeps several requests in flight.

use std::sync::atomic::{AtomicUsize, Ordering};

#[derive(Default)]
pub(crate) struct InFlight {
    now: AtomicUsize,
    max: AtomicUsize,
}

/// Counts one request until dropped, so every way out of a connection's
/// request (answered, refused, connection gone) ends the count.
pub(crate) struct Counted<'a>(&'a InFlight);

impl InFlight {
    pub(crate) fn enter(&self) -> Counted<'_> {
        let now = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.max.fetch_max(now, Ordering::SeqCst);
        Counted(self)
    }

    pub(crate) fn now(&self) -> usize {
        self.now.load(Ordering::SeqCst)
    }

    pub(crate) fn max(&self) -> usize {
        self.max.load(Ordering::SeqCst)
    }

    /// The maximum starts again from the requests in flight now: those are
    /// still concurrent with whatever comes next.
    pub(crate) fn reset_max(&self) {
        self.max.store(self.now(), Ordering::SeqCst);
        // A request that entered between the load and the store.
        self.max.fetch_max(self.now(), Ordering::SeqCst);
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.now.fetch_sub(1, Ordering::SeqCst);
    }
}
