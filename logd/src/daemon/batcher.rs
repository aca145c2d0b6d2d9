//! The `logd-batch` thread: groups lines per file (one request carries one
//! file's lines), and flushes a file's batch when it is full, when it has
//! waited long enough, or when all batches together hold too much.
//!
//! "Long enough" is staggered: each file has its own point of the linger
//! period (its phase), and its batch goes at the first one after its first
//! line. A file written without pause still makes one request per period,
//! and no line waits longer than the linger; but the files' flushes spread
//! evenly over the period instead of all going together (files written
//! together start their batches together, and would stay in step). So the
//! uploads come evenly, and the batches hold about half a period's lines at
//! any time instead of a whole one's: what keeps 1,000 busy files under the
//! global cap, whose early flushes would mean more requests. The phases are
//! whole slots of 100 ms, so the thread wakes at most ten times a second.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, never, select};
use logd::{AckToken, Chunk, FileKey, LogMeta};

use super::held::Held;

/// One request's worth of one file's lines.
#[derive(Debug)]
pub struct Batch {
    pub file: FileKey,
    pub meta: Arc<LogMeta>,
    /// `\n`-terminated lines.
    pub lines: Vec<u8>,
    pub line_count: usize,
    /// Handed back once the batch is delivered or dropped.
    pub acks: Vec<AckToken>,
    /// When it was handed to the uploader: how long it waits for a slot
    /// tells the uploader whether more requests in flight would help.
    pub flushed: Instant,
    /// It went at a backlog's size, its file read faster than it lingers:
    /// what counts is throughput, not how long a line waits. (A batch of a
    /// read merely cut by the round's budget, such as the first lines of
    /// many files at start, lingers and is not one.)
    pub backlog: bool,
    /// When its lines were read: `(end, unix nanos)` per chunk, `end` being
    /// where the chunk's lines end in `lines` (an OTLP record's observed
    /// time).
    pub reads: Vec<(usize, u64)>,
}

/// A message to the uploader holds several batches up to this many bytes:
/// what waits in the queue and in the uploader stays about one batch.
pub const MESSAGE_BYTES: usize = 256 * 1024;
/// Batches are due at most this often (see [`Schedule::due`]).
const SLOT: Duration = Duration::from_millis(100);

pub struct Batcher {
    pub chunks: Receiver<Vec<Chunk>>,
    pub batches: Sender<Vec<Batch>>,
    pub max_bytes: usize,
    pub linger: Duration,
    /// Bytes held in this thread's batches at most; beyond, the largest is
    /// flushed.
    pub batches_cap: usize,
    /// Bytes held here and at the uploader: no chunk is taken at its cap.
    pub held: Held,
    /// The sink carries many files' lines per request (OTLP): every file
    /// has the same phase, so the files' batches go together, once per
    /// linger, in one message of up to this many bytes (else
    /// [`MESSAGE_BYTES`]), and make one request.
    pub bundle: Option<usize>,
}

struct Pending {
    batch: Batch,
    due: Instant,
}

/// When batches are due: the linger period, each file at its own phase of it.
struct Schedule {
    /// Where every file's period starts at phase 0.
    origin: Instant,
    linger: Duration,
    /// Every file at phase 0 (see [`Batcher::bundle`]).
    together: bool,
}

impl Schedule {
    /// When a batch of `file` begun at `since` is flushed: at the file's
    /// phase, the first time after `since` (within one linger period).
    fn due(&self, file: FileKey, since: Instant) -> Instant {
        let period = self.linger.as_nanos();
        if period == 0 {
            return since;
        }
        // The phases are whole slots: files of a slot go together, at most
        // one wake-up per slot; and a batch goes exactly at its phase, never
        // early (a batch sent early would have its file's next one due at
        // the same phase, a moment later: two requests in one period).
        let slots = (period / SLOT.as_nanos()).max(1);
        // Fibonacci hashing: consecutive keys land far apart in the period.
        let spread = u128::from(file.0.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let phase = if self.together {
            0
        } else {
            ((spread * slots) >> 64) * (period / slots)
        };
        let elapsed = since.saturating_duration_since(self.origin).as_nanos();
        let mut at = elapsed - elapsed % period + phase;
        if at <= elapsed {
            at += period;
        }
        self.origin + Duration::from_nanos(u64::try_from(at).unwrap_or(u64::MAX))
    }
}

impl Batcher {
    /// Runs until the parse thread hangs up, then flushes everything.
    pub fn run(self) {
        let schedule = Schedule {
            origin: Instant::now(),
            linger: self.linger,
            together: self.bundle.is_some(),
        };
        let mut pending: HashMap<FileKey, Pending> = HashMap::new();
        let mut held = 0usize;
        loop {
            let timer = match pending.values().map(|p| p.due).min() {
                Some(due) => crossbeam_channel::at(due),
                None => crossbeam_channel::never(),
            };
            // At the cap of bytes held, chunks wait (and the parse thread
            // with them) until the uploader releases some.
            let (chunks, released) = if self.held.at_cap() {
                (&never(), self.held.released())
            } else {
                (&self.chunks, &never())
            };
            let ready: Vec<Batch> = select! {
                recv(released) -> _ => Vec::new(),
                recv(chunks) -> chunks => match chunks {
                    // Caught up with a backlog: nothing lingers.
                    Ok(chunks) if chunks.is_empty() => take_all(&mut pending, &mut held),
                    Ok(chunks) => self.add_all(&mut pending, chunks, &schedule, &mut held),
                    Err(_) => break,
                },
                recv(timer) -> _ => {
                    let now = Instant::now();
                    let expired: Vec<FileKey> = pending
                        .iter()
                        .filter(|(_, p)| p.due <= now)
                        .map(|(file, _)| *file)
                        .collect();
                    take(&mut pending, expired, &mut held)
                }
            };
            if !self.send(ready) {
                return;
            }
        }
        // Shutdown: everything batched goes to the uploader.
        self.send(take_all(&mut pending, &mut held));
    }

    /// Hands batches to the uploader, waiting while it holds a round of
    /// requests' worth already. Small batches go together, up to
    /// [`MESSAGE_BYTES`]: one hand-over, not one wake-up of each thread per
    /// batch. False when the uploader is gone.
    fn send(&self, ready: Vec<Batch>) -> bool {
        let mut message = Vec::new();
        let mut bytes = 0;
        let now = Instant::now();
        let message_bytes = self.bundle.unwrap_or(MESSAGE_BYTES);
        for mut batch in ready {
            batch.flushed = now;
            if bytes + batch.lines.len() > message_bytes && !message.is_empty() {
                if self.batches.send(std::mem::take(&mut message)).is_err() {
                    return false;
                }
                bytes = 0;
            }
            bytes += batch.lines.len();
            message.push(batch);
        }
        message.is_empty() || self.batches.send(message).is_ok()
    }

    /// Adds the chunks to their files' batches; returns the batches full by
    /// now, and the largest ones while all together hold more than the cap.
    fn add_all(
        &self,
        pending: &mut HashMap<FileKey, Pending>,
        chunks: Vec<Chunk>,
        schedule: &Schedule,
        held: &mut usize,
    ) -> Vec<Batch> {
        let mut ready = Vec::new();
        for chunk in chunks {
            *held += chunk.lines.len();
            self.held.add(chunk.lines.len());
            let file = chunk.file;
            // A file read faster than its lines could linger (a backlog):
            // the next read of it comes within the round anyway, so its
            // batch goes at the size the uploader finds right for the
            // intake's response time.
            let backlog = chunk.more;
            let full = if backlog {
                self.held.backlog_batch()
            } else {
                self.max_bytes
            };
            if add(pending, chunk, self.max_bytes, schedule) >= full {
                let mut batches = take(pending, [file], held);
                batches.iter_mut().for_each(|batch| batch.backlog = backlog);
                ready.extend(batches);
            }
        }
        if *held > self.batches_cap && self.bundle.is_some() {
            // One request carries them all: everything goes, as at the
            // linger, not the largest few (which would be a request each).
            ready.extend(take_all(pending, held));
        } else if *held > self.batches_cap {
            let mut by_size: Vec<(usize, FileKey)> = pending
                .iter()
                .map(|(file, p)| (p.batch.lines.len(), *file))
                .collect();
            by_size.sort_unstable_by(|a, b| b.cmp(a));
            let mut largest = Vec::new();
            let mut over = *held - self.batches_cap;
            for (size, file) in by_size {
                if over == 0 {
                    break;
                }
                over = over.saturating_sub(size);
                largest.push(file);
            }
            ready.extend(take(pending, largest, held));
        }
        ready
    }
}

/// Takes these files' batches out of `pending`.
fn take(
    pending: &mut HashMap<FileKey, Pending>,
    files: impl IntoIterator<Item = FileKey>,
    held: &mut usize,
) -> Vec<Batch> {
    let batches: Vec<Batch> = files
        .into_iter()
        .filter_map(|file| pending.remove(&file))
        .map(|p| p.batch)
        .collect();
    *held -= batches.iter().map(|b| b.lines.len()).sum::<usize>();
    batches
}

fn take_all(pending: &mut HashMap<FileKey, Pending>, held: &mut usize) -> Vec<Batch> {
    let files: Vec<FileKey> = pending.keys().copied().collect();
    take(pending, files, held)
}

fn now_nanos() -> u64 {
    shared::otlp::logs::unix_nanos(std::time::SystemTime::now())
}

/// Adds a chunk to its file's batch; returns the batch's size.
fn add(
    pending: &mut HashMap<FileKey, Pending>,
    chunk: Chunk,
    max_bytes: usize,
    schedule: &Schedule,
) -> usize {
    match pending.get_mut(&chunk.file) {
        Some(p) => {
            let needed = p.batch.lines.len() + chunk.lines.len();
            if needed > p.batch.lines.capacity() {
                // Grow by a quarter (still amortised: a batch takes many
                // small chunks while lingering, and doubling left up to half
                // of every batch empty), never past a full batch.
                let capacity = p.batch.lines.capacity();
                let grown = (capacity + capacity / 4).min(max_bytes);
                let target = needed.max(grown);
                p.batch.lines.reserve_exact(target - p.batch.lines.len());
            }
            p.batch.lines.extend_from_slice(&chunk.lines);
            p.batch.reads.push((p.batch.lines.len(), now_nanos()));
            p.batch.line_count += chunk.line_count;
            p.batch.acks.push(chunk.ack);
            p.batch.lines.len()
        }
        None => {
            let size = chunk.lines.len();
            let reads = vec![(size, now_nanos())];
            pending.insert(
                chunk.file,
                Pending {
                    batch: Batch {
                        file: chunk.file,
                        meta: chunk.meta,
                        lines: chunk.lines,
                        line_count: chunk.line_count,
                        acks: vec![chunk.ack],
                        flushed: Instant::now(),
                        backlog: false,
                        reads,
                    },
                    due: schedule.due(chunk.file, Instant::now()),
                },
            );
            size
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINGER: Duration = Duration::from_millis(1000);

    fn schedule() -> Schedule {
        Schedule {
            origin: Instant::now(),
            linger: LINGER,
            together: false,
        }
    }

    #[test]
    fn no_batch_waits_longer_than_the_linger() {
        let s = schedule();
        for key in 0..1000 {
            for begun_ms in [0, 1, 250, 999, 1000, 12_345] {
                let since = s.origin + Duration::from_millis(begun_ms);
                let due = s.due(FileKey(key), since);
                assert!(due > since, "key {key} at {begun_ms} ms: due at once");
                assert!(
                    due <= since + LINGER,
                    "key {key} at {begun_ms} ms: after the linger"
                );
            }
        }
    }

    #[test]
    fn a_file_written_without_pause_is_flushed_once_per_period() {
        let s = schedule();
        let file = FileKey(7);
        // Each batch begins just after the previous one went.
        let mut due = s.due(file, s.origin);
        for _ in 0..10 {
            let next = s.due(file, due + Duration::from_millis(3));
            assert_eq!(next - due, LINGER);
            due = next;
        }
    }

    #[test]
    fn files_begun_together_are_flushed_spread_over_the_period() {
        let s = schedule();
        let since = s.origin + Duration::from_millis(40);
        // 1,000 files in tenths of the period: each tenth gets about 100.
        let mut tenths = [0u32; 10];
        for key in 0..1000 {
            let wait = s.due(FileKey(key), since) - since;
            tenths[(wait.as_millis() as usize * 10 / LINGER.as_millis() as usize).min(9)] += 1;
        }
        for (i, n) in tenths.iter().enumerate() {
            assert!(
                (80..=120).contains(n),
                "tenth {i} of the period: {n} files of 1,000"
            );
        }
    }

    #[test]
    fn files_of_a_slot_are_due_together() {
        let s = schedule();
        let since = s.origin + Duration::from_millis(40);
        let times: std::collections::BTreeSet<Instant> =
            (0..1000).map(|key| s.due(FileKey(key), since)).collect();
        assert_eq!(times.len(), 10, "one wake-up per 100 ms slot");
    }

    #[test]
    fn without_a_linger_a_batch_is_due_at_once() {
        let s = Schedule {
            origin: Instant::now(),
            linger: Duration::ZERO,
            together: false,
        };
        let since = s.origin + Duration::from_millis(5);
        assert_eq!(s.due(FileKey(3), since), since);
    }
}
