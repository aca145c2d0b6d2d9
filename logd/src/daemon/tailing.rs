//! The `logd-parse` thread: drives the tailing core. It turns discovery's
//! hints into reads, sends the lines on in chunks, takes acknowledgements
//! back, and hands the committable offsets to the checkpoint writer.

use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, select};
use logd::{AckToken, Checkpoints, Chunk, Stats, Tailer};
use shared::health::Health;
use shared::shutdown::Shutdown;

use super::discovery::Change;
use super::held::Held;
use super::metrics::Metrics;

/// Output bytes per read round: one message to the batcher. Small enough to
/// keep memory flat, large enough to amortise the channel hop. A backlog is
/// read in rounds of a backlog's batch when that is larger (the intake tens
/// of milliseconds away): each round then makes a whole batch of one file,
/// which goes at once, instead of every file's batch filling a little per
/// turn of the files and all of them waiting, half full, in memory.
const READ_BUDGET: usize = 256 * 1024;
/// Checkpoints are written at most this often while data flows (SPEC §3).
const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);
/// Read without catching up, this much is a backlog: once caught up, the
/// batcher sends what it holds at once instead of letting it linger.
const BACKLOG_BYTES: usize = 4 * 1024 * 1024;
/// While the parse thread waits for room in the batcher's queue, metrics
/// are brought up to date this often.
const STATS_INTERVAL: Duration = Duration::from_secs(1);
/// Otherwise at most this often.
const STATS_MIN_INTERVAL: Duration = Duration::from_millis(100);
/// Bytes behind at most this often: it takes a stat of every open file
/// (1,000 files every 100 ms were a twelfth of logd's CPU).
const SIZES_INTERVAL: Duration = Duration::from_secs(1);
/// Out of inotify watches, the tree is rescanned this often instead.
const DEGRADED_RESCAN_INTERVAL: Duration = Duration::from_secs(1);

pub struct Tailing {
    pub tailer: Tailer,
    pub changes: Receiver<Change>,
    pub chunks: Sender<Vec<Chunk>>,
    pub acks: Receiver<Vec<AckToken>>,
    pub checkpoints: Sender<Checkpoints>,
    pub shutdown: Shutdown,
    pub metrics: Metrics,
    pub health: Health,
    /// For the size of a backlog's batch.
    pub held: Held,
}

/// Timers of the loop; `None` when nothing is due, so an idle logd sleeps.
struct Due {
    /// Acknowledgements came since the last checkpoint.
    checkpoint: Option<Instant>,
    last_checkpoint: Instant,
    rescan: Option<Instant>,
    /// Metrics are to be brought up to date.
    stats: Option<Instant>,
    last_stats: Instant,
    /// When bytes behind was last brought up to date.
    last_sizes: Option<Instant>,
}

impl Due {
    fn next(&self) -> Option<Instant> {
        [self.checkpoint, self.rescan, self.stats]
            .into_iter()
            .flatten()
            .min()
    }
}

impl Tailing {
    pub fn run(mut self) {
        self.tailer.scan();
        // Saved at once, so a crash before the first acknowledgement is not
        // taken for a very first start (which would skip rotated files).
        let _ = self.checkpoints.send(self.tailer.checkpoint());
        let mut due = Due {
            checkpoint: None,
            last_checkpoint: Instant::now(),
            rescan: None,
            stats: None,
            last_stats: Instant::now(),
            last_sizes: None,
        };
        let mut last_stats = Stats::default();
        self.publish_stats(&mut last_stats, &mut due);
        self.health.set_ready();

        while !self.shutdown.is_triggered() {
            if !self.read_and_send(&mut due, &mut last_stats) {
                break;
            }
            self.publish_stats_if_due(&mut last_stats, &mut due);
            if !self.wait(&mut due) {
                break;
            }
            self.run_timers(&mut due);
        }
        self.drain();
    }

    /// The periodic rescan (out of inotify watches) and the checkpoint, when
    /// they are due.
    fn run_timers(&mut self, due: &mut Due) {
        let now = Instant::now();
        if due.rescan.is_some_and(|at| at <= now) {
            self.tailer.scan();
            due.rescan = Some(now + DEGRADED_RESCAN_INTERVAL);
        }
        self.checkpoint_if_due(due);
    }

    /// Hands the committable offsets to the checkpoint writer, at most once
    /// a second while data flows.
    fn checkpoint_if_due(&mut self, due: &mut Due) {
        let Some(since) = due.checkpoint else {
            return;
        };
        let at = since.max(due.last_checkpoint + CHECKPOINT_INTERVAL);
        let now = Instant::now();
        if at <= now {
            // Acknowledgements left waiting (see `wait`) count too.
            while let Ok(more) = self.acks.try_recv() {
                for token in more {
                    self.tailer.ack(token);
                }
            }
            let _ = self.checkpoints.send(self.tailer.checkpoint());
            due.last_checkpoint = now;
            due.checkpoint = None;
        } else {
            due.checkpoint = Some(at);
        }
    }

    /// Reads and sends until nothing is left to read. False when shutdown
    /// interrupted a send (the unsent lines are not acknowledged, so they
    /// are read again at the next start).
    fn read_and_send(&mut self, due: &mut Due, last_stats: &mut Stats) -> bool {
        let mut behind = false;
        let mut backlog = 0;
        loop {
            let chunks = self.tailer.read(READ_BUDGET.max(self.held.backlog_batch()));
            if chunks.is_empty() {
                if behind {
                    // Caught up with a backlog: an empty message tells the
                    // batcher to send what it holds instead of lingering.
                    return self.chunks.send(Vec::new()).is_ok();
                }
                return true;
            }
            // A backlog is more than the batches can hold: a burst of a busy
            // node (a few rounds) is not one, and lingers as usual.
            backlog += chunks.iter().map(|c| c.lines.len()).sum::<usize>();
            behind = backlog >= BACKLOG_BYTES;
            // The batcher may be full (a slow intake, an outage): meanwhile
            // keep taking acks, or the uploader would wait on us and we on
            // it; keep following the tree, so that files kubelet creates
            // and deletes during an outage are held open (within the caps
            // for deleted files) or counted as lost; keep the metrics, the
            // checkpoints and the periodic rescans going.
            let publish = crossbeam_channel::tick(STATS_INTERVAL);
            loop {
                let timer = match due.rescan.into_iter().chain(due.checkpoint).min() {
                    Some(at) => crossbeam_channel::at(at),
                    None => crossbeam_channel::never(),
                };
                select! {
                    send(self.chunks, chunks) -> sent => {
                        if sent.is_err() {
                            return false;
                        }
                        self.checkpoint_if_due(due);
                        break;
                    }
                    recv(self.acks) -> acks => match acks {
                        Ok(acks) => self.ack(acks, due),
                        Err(_) => return false,
                    },
                    recv(self.changes) -> change => self.on_change(change.ok(), due),
                    recv(publish) -> _ => self.publish_stats(last_stats, due),
                    recv(timer) -> _ => self.run_timers(due),
                    recv(self.shutdown.receiver()) -> _ => return false,
                }
            }
        }
    }

    /// Blocks until there is something to do: a change, acknowledgements, a
    /// timer, or shutdown (then false).
    fn wait(&mut self, due: &mut Due) -> bool {
        let timeout = due
            .next()
            .map(|at| at.saturating_duration_since(Instant::now()));
        let never = crossbeam_channel::never();
        let timer = match timeout {
            Some(t) => crossbeam_channel::after(t),
            None => never,
        };
        // Once a checkpoint is scheduled, acknowledgements only matter for
        // it: they wait in their (unbounded) channel until it is due, so
        // the thread wakes once a second for them, not once per request.
        let no_acks = crossbeam_channel::never();
        let acks = if due.checkpoint.is_some() {
            &no_acks
        } else {
            &self.acks
        };
        select! {
            recv(self.changes) -> change => self.on_change(change.ok(), due),
            recv(acks) -> acks => match acks {
                Ok(acks) => self.ack(acks, due),
                Err(_) => return false,
            },
            recv(timer) -> _ => {}
            recv(self.shutdown.receiver()) -> _ => return false,
        }
        true
    }

    /// A change from discovery (None: discovery ended), and the burst
    /// already queued behind it, coalesced.
    fn on_change(&mut self, change: Option<Change>, due: &mut Due) {
        let Some(change) = change else {
            log::error!("the discovery thread ended: rescanning every second");
            self.changes = crossbeam_channel::never();
            due.rescan.get_or_insert_with(Instant::now);
            return;
        };
        self.apply(change, due);
        while let Ok(change) = self.changes.try_recv() {
            self.apply(change, due);
        }
    }

    fn apply(&mut self, change: Change, due: &mut Due) {
        match change {
            Change::Paths(paths) => {
                for path in &paths {
                    self.tailer.notify(path);
                }
            }
            Change::Writes(paths) => {
                for path in &paths {
                    self.tailer.notify_write(path);
                }
            }
            Change::Rescan => {
                self.metrics.inotify_rescans.inc();
                self.tailer.scan();
                due.rescan = None;
            }
            Change::Degraded => {
                due.rescan.get_or_insert_with(Instant::now);
            }
        }
    }

    /// Takes acknowledgements (and any already queued) and schedules a
    /// checkpoint.
    fn ack(&mut self, acks: Vec<AckToken>, due: &mut Due) {
        due.checkpoint.get_or_insert_with(Instant::now);
        for token in acks {
            self.tailer.ack(token);
        }
        while let Ok(more) = self.acks.try_recv() {
            for token in more {
                self.tailer.ack(token);
            }
        }
    }

    /// After shutdown: the batcher and uploader finish what was sent (the
    /// uploader within the grace period); their acknowledgements are taken
    /// until the uploader is gone, then the final checkpoint is handed over.
    fn drain(self) {
        let Tailing {
            mut tailer,
            chunks,
            acks,
            checkpoints,
            ..
        } = self;
        drop(chunks);
        for batch in acks.iter() {
            for token in batch {
                tailer.ack(token);
            }
        }
        let _ = checkpoints.send(tailer.checkpoint());
    }

    /// Brings the metrics up to date, at most every [`STATS_MIN_INTERVAL`];
    /// a skipped update is made when the timer in `due` fires.
    fn publish_stats_if_due(&self, last: &mut Stats, due: &mut Due) {
        let at = due.last_stats + STATS_MIN_INTERVAL;
        if at <= Instant::now() {
            self.publish_stats(last, due);
        } else {
            due.stats = Some(at);
        }
    }

    /// Brings the metrics up to date, bytes behind only every
    /// [`SIZES_INTERVAL`] (the timer in `due` makes a skipped one).
    fn publish_stats(&self, last: &mut Stats, due: &mut Due) {
        let now = Instant::now();
        let mut stats = self.tailer.counters();
        match due.last_sizes.map(|at| at + SIZES_INTERVAL) {
            Some(at) if now < at => {
                stats.bytes_behind = last.bytes_behind;
                due.stats = Some(at);
            }
            _ => {
                stats.bytes_behind = self.tailer.bytes_behind();
                due.last_sizes = Some(now);
                due.stats = None;
            }
        }
        self.metrics.update_from_core(&stats, last);
        *last = stats;
        due.last_stats = now;
    }
}
