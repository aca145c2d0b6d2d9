//! Bytes of lines held in memory between the parse thread and the intake:
//! in batches, queued for the uploader and in flight, under one cap.
//!
//! The batcher adds a chunk's bytes when it takes the chunk, and takes no
//! more chunks while the total is at the cap; the uploader releases a
//! batch's bytes once the batch is delivered or dropped. So however many
//! requests are in flight and however large a slow intake lets batches
//! grow, the lines in memory stay under the cap (plus the one message the
//! batcher is taking), and the files on disk are the buffer.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crossbeam_channel::{Receiver, Sender, bounded};

#[derive(Clone)]
pub struct Held {
    inner: Arc<Inner>,
    /// Woken when bytes are released, for a batcher waiting at the cap.
    released_tx: Sender<()>,
    released_rx: Receiver<()>,
}

struct Inner {
    cap: usize,
    /// `LOGD_BATCH_MAX_BYTES`: a backlog's batch never grows past it.
    batch_max: usize,
    bytes: AtomicUsize,
    /// What a backlog's batch may grow to before it goes (the uploader
    /// sizes it by the intake's response time; see the batcher), and what
    /// the parse thread reads of a backlog's file at a time.
    backlog_batch: AtomicUsize,
}

impl Held {
    pub fn new(cap: usize, batch_max: usize) -> Held {
        let (released_tx, released_rx) = bounded(1);
        Held {
            inner: Arc::new(Inner {
                cap,
                batch_max,
                bytes: AtomicUsize::new(0),
                backlog_batch: AtomicUsize::new(0),
            }),
            released_tx,
            released_rx,
        }
    }

    pub fn add(&self, bytes: usize) {
        self.inner.bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    pub fn release(&self, bytes: usize) {
        self.inner.bytes.fetch_sub(bytes, Ordering::Relaxed);
        // Full means a wake-up is pending already.
        let _ = self.released_tx.try_send(());
    }

    pub fn bytes(&self) -> usize {
        self.inner.bytes.load(Ordering::Relaxed)
    }

    pub fn at_cap(&self) -> bool {
        self.bytes() >= self.inner.cap
    }

    /// Ready after bytes were released (at most one pending wake-up).
    pub fn released(&self) -> &Receiver<()> {
        &self.released_rx
    }

    pub fn set_backlog_batch(&self, bytes: usize) {
        self.inner.backlog_batch.store(bytes, Ordering::Relaxed);
    }

    /// At most `LOGD_BATCH_MAX_BYTES`.
    pub fn backlog_batch(&self) -> usize {
        self.inner
            .backlog_batch
            .load(Ordering::Relaxed)
            .min(self.inner.batch_max)
    }
}
