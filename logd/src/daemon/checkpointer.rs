//! The `logd-checkpoint` thread: writes the committable offsets to the
//! state dir. The parse thread sends a snapshot at most about once a second
//! while data flows; only the newest queued one is written. A write that
//! fails (full or read-only disk) is logged once, counted, and retried,
//! while logd keeps shipping.

use std::path::PathBuf;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError};
use logd::Checkpoints;

use super::metrics::Metrics;

/// How soon a failed write is tried again when no newer snapshot comes.
const RETRY_EVERY: Duration = Duration::from_secs(5);

pub struct Checkpointer {
    pub snapshots: Receiver<Checkpoints>,
    pub state_dir: PathBuf,
    pub metrics: Metrics,
}

impl Checkpointer {
    /// Runs until the parse thread hangs up (after its final snapshot).
    pub fn run(self) {
        let mut unsaved: Option<Checkpoints> = None;
        let mut failing = false;
        loop {
            let snapshot = match unsaved.take() {
                None => match self.snapshots.recv() {
                    Ok(snapshot) => snapshot,
                    Err(_) => return,
                },
                Some(old) => match self.snapshots.recv_timeout(RETRY_EVERY) {
                    Ok(newer) => newer,
                    Err(RecvTimeoutError::Timeout) => old,
                    Err(RecvTimeoutError::Disconnected) => return,
                },
            };
            // Only the newest matters.
            let snapshot = self.snapshots.try_iter().last().unwrap_or(snapshot);
            match snapshot.save(&self.state_dir) {
                Ok(()) => {
                    self.metrics.checkpoint_writes.inc();
                    if failing {
                        log::info!(
                            "checkpoints are written again to {}",
                            self.state_dir.display()
                        );
                        failing = false;
                    }
                }
                Err(e) => {
                    self.metrics.checkpoint_errors.inc();
                    if !failing {
                        log::error!(
                            "cannot write checkpoints to {}: {e}; retrying (shipping goes on, but a restart would send again what was shipped since)",
                            self.state_dir.display()
                        );
                        failing = true;
                    }
                    unsaved = Some(snapshot);
                }
            }
        }
    }
}
