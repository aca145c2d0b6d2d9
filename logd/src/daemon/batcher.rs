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
            select! {
                recv(self.chunks) -> chunks => match chunks {
                    Ok(chunks) if chunks.is_empty() => {
                        let files: Vec<FileKey> = pending.keys().copied().collect();
                        for file in files {
                            if !self.flush(&mut pending, file, &mut held) {
                                return;
                            }
                        }
                    }
                    Ok(chunks) => {
                        for chunk in chunks {
                            held += chunk.lines.len();
                            let file = chunk.file;
                            let full = add(&mut pending, chunk, self.max_bytes) >= self.max_bytes;
                            if full && !self.flush(&mut pending, file, &mut held) {
                                return;
                            }
                        }
                        while held > self.global_cap {
                            let Some(largest) = largest(&pending) else { break };
                            if !self.flush(&mut pending, largest, &mut held) {
                                return;
                            }
                        }
                    }
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
                    // One message for all of them: one hand-over, not one
                    // wake-up of each thread per batch.
                    let batches: Vec<Batch> = expired
                        .into_iter()
                        .filter_map(|file| pending.remove(&file))
                        .map(|p| p.batch)
                        .collect();
                    held -= batches.iter().map(|b| b.lines.len()).sum::<usize>();
                    if self.batches.send(batches).is_err() {
                        return;
                    }
                }
            }
        }
        // Shutdown: everything batched goes to the uploader.
        let files: Vec<FileKey> = pending.keys().copied().collect();
        for file in files {
            if !self.flush(&mut pending, file, &mut held) {
                return;
            }
        }
    }

    /// Sends a file's batch to the uploader (waiting for room: that is the
    /// backpressure). False when the uploader is gone.
    fn flush(
        &self,
        pending: &mut HashMap<FileKey, Pending>,
        file: FileKey,
        held: &mut usize,
    ) -> bool {
        let Some(p) = pending.remove(&file) else {
            return true;
        };
        *held -= p.batch.lines.len();
        self.batches.send(vec![p.batch]).is_ok()
    }
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

fn largest(pending: &HashMap<FileKey, Pending>) -> Option<FileKey> {
    pending
        .iter()
        .max_by_key(|(_, p)| p.batch.lines.len())
        .map(|(file, _)| *file)
}
