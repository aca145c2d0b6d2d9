//! The `logd-batch` thread: groups lines per file (one request carries one
//! file's lines), and flushes a file's batch when it is full, when it has
//! waited long enough, or when all batches together hold too much.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, select};
use logd::{AckToken, Chunk, FileKey, LogMeta};

/// One request's worth of one file's lines.
#[derive(Debug)]
pub struct Batch {
    pub meta: Arc<LogMeta>,
    /// `\n`-terminated lines.
    pub lines: Vec<u8>,
    pub line_count: usize,
    /// Handed back once the batch is delivered or dropped.
    pub acks: Vec<AckToken>,
}

/// A message to the uploader holds several batches up to this many bytes:
/// what waits in the queue and in the uploader stays about one batch.
const MESSAGE_BYTES: usize = 256 * 1024;
/// A batch may go this much before its linger is over.
const LINGER_SLACK: Duration = Duration::from_millis(100);

pub struct Batcher {
    pub chunks: Receiver<Vec<Chunk>>,
    pub batches: Sender<Vec<Batch>>,
    pub max_bytes: usize,
    pub linger: Duration,
    /// Bytes held in all batches at most; beyond, the largest is flushed.
    pub global_cap: usize,
}

struct Pending {
    batch: Batch,
    since: Instant,
}

impl Batcher {
    /// Runs until the parse thread hangs up, then flushes everything.
    pub fn run(self) {
        let mut pending: HashMap<FileKey, Pending> = HashMap::new();
        let mut held = 0usize;
        loop {
            let oldest = pending.values().map(|p| p.since).min();
            let timer = match oldest {
                Some(since) => crossbeam_channel::at(since + self.linger),
                None => crossbeam_channel::never(),
            };
            let ready: Vec<Batch> = select! {
                recv(self.chunks) -> chunks => match chunks {
                    // Caught up with a backlog: nothing lingers.
                    Ok(chunks) if chunks.is_empty() => take_all(&mut pending, &mut held),
                    Ok(chunks) => self.add_all(&mut pending, chunks, &mut held),
                    Err(_) => break,
                },
                recv(timer) -> _ => {
                    // Batches due within the slack go too: one wake-up for
                    // many files instead of one each.
                    let now = Instant::now() + LINGER_SLACK;
                    let expired: Vec<FileKey> = pending
                        .iter()
                        .filter(|(_, p)| p.since + self.linger <= now)
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

    /// Hands batches to the uploader, waiting for room (that is the
    /// backpressure). Small batches go together, up to [`MESSAGE_BYTES`]:
    /// one hand-over, not one wake-up of each thread per batch. False when
    /// the uploader is gone.
    fn send(&self, ready: Vec<Batch>) -> bool {
        let mut message = Vec::new();
        let mut bytes = 0;
        for batch in ready {
            if bytes + batch.lines.len() > MESSAGE_BYTES && !message.is_empty() {
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
        held: &mut usize,
    ) -> Vec<Batch> {
        let mut ready = Vec::new();
        for chunk in chunks {
            *held += chunk.lines.len();
            let file = chunk.file;
            if add(pending, chunk, self.max_bytes) >= self.max_bytes {
                ready.extend(take(pending, [file], held));
            }
        }
        if *held > self.global_cap {
            let mut by_size: Vec<(usize, FileKey)> = pending
                .iter()
                .map(|(file, p)| (p.batch.lines.len(), *file))
                .collect();
            by_size.sort_unstable_by(|a, b| b.cmp(a));
            let mut largest = Vec::new();
            let mut over = *held - self.global_cap;
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

/// Adds a chunk to its file's batch; returns the batch's size.
fn add(pending: &mut HashMap<FileKey, Pending>, chunk: Chunk, max_bytes: usize) -> usize {
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
            p.batch.line_count += chunk.line_count;
            p.batch.acks.push(chunk.ack);
            p.batch.lines.len()
        }
        None => {
            let size = chunk.lines.len();
            pending.insert(
                chunk.file,
                Pending {
                    batch: Batch {
                        meta: chunk.meta,
                        lines: chunk.lines,
                        line_count: chunk.line_count,
                        acks: vec![chunk.ack],
                    },
                    since: Instant::now(),
                },
            );
            size
        }
    }
}
