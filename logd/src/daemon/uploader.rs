//! The `logd-upload` thread: sends batches to the sink with the shared retry
//! policy, and acknowledges every chunk of a batch once all its lines are
//! delivered, or dropped and counted.
//!
//! What cannot be delivered as is gets split in halves at line boundaries,
//! down to the line the intake will not take, which is dropped and counted
//! (bad data never stalls the node's logs): at once on a 413 or another
//! 4xx; on 500 again and again only once another request went through (a
//! probe half, or a newer batch). Once halving has begun, one more 500 halves
//! a piece again, so one bad line costs seconds, not a minute of the node's
//! uploads; a single line is dropped only after a full turn of 500s. An
//! intake that fails everything is an outage: pieces are parked, retried
//! with backoff, and newer batches are tried meanwhile, within a cap on
//! parked bytes.

use std::collections::{HashMap, VecDeque};
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use logd::{AckToken, LogMeta};
use shared::intake::{LogMeta as WireMeta, SendError};
use shared::retry::{Attempts, Backoff, Delivery, send_with_retry};
use shared::shutdown::Shutdown;
use shared::sink::Sink;

use super::batcher::Batch;
use super::metrics::Metrics;

/// Consecutive failures after which a piece is set aside (parked) or, on
/// a run of 500s while the intake takes other requests, split.
const ATTEMPTS_PER_TURN: u32 = 4;
/// Parked bytes at most; beyond, no new batch is taken until they drain.
const PARKED_CAP: usize = 4 * 1024 * 1024;

pub struct Uploader {
    pub sink: Sink,
    pub batches: Receiver<Vec<Batch>>,
    pub acks: Sender<Vec<AckToken>>,
    /// Triggered when the shutdown grace period is over: stop retrying.
    pub hard_stop: Shutdown,
    pub metrics: Metrics,
}

/// A batch whose pieces are not all resolved yet.
struct InFlight {
    meta: Arc<LogMeta>,
    lines: Vec<u8>,
    acks: Vec<AckToken>,
    open_pieces: usize,
}

/// A range of a batch's lines to send.
struct Piece {
    batch: u64,
    lines: Range<usize>,
    /// How many lines: known, so a backlog's bytes are not scanned for it.
    line_count: u64,
    /// Successes counted when this piece last failed: more since means the
    /// intake works and the piece itself is the problem.
    successes_seen: u64,
    /// A half of a piece the intake answered 500 again and again while it
    /// took other requests: it holds the bad line, or its sibling does.
    isolating: bool,
}

enum Outcome {
    Delivered,
    Dropped,
    Split(Piece, Piece),
    Parked(Piece),
    Stopped,
}

struct State {
    in_flight: HashMap<u64, InFlight>,
    ready: VecDeque<Piece>,
    parked: Vec<Piece>,
    parked_bytes: usize,
    next_batch: u64,
    /// 2xx answers so far.
    successes: u64,
    /// Between attempts of one piece.
    backoff: Backoff,
    /// Between rounds over parked pieces.
    parked_backoff: Backoff,
    /// A piece was halved as a probe in this round over parked pieces.
    probed: bool,
}

/// What the loop does next when no piece is ready.
enum Work {
    Batch(Vec<Batch>),
    RetryParked,
    /// The batcher hung up (shutdown): finish what is here.
    Closed,
    Done,
}

impl Uploader {
    pub fn run(self) {
        let mut state = State {
            in_flight: HashMap::new(),
            ready: VecDeque::new(),
            parked: Vec::new(),
            parked_bytes: 0,
            next_batch: 0,
            successes: 0,
            backoff: Backoff::new(),
            parked_backoff: Backoff::new(),
            probed: false,
        };
        let mut open = true;
        loop {
            let Some(piece) = state.ready.pop_front() else {
                match self.next_work(&mut state, open) {
                    Work::Batch(batches) => {
                        for batch in batches {
                            take(&mut state, batch);
                        }
                    }
                    Work::RetryParked => {
                        state.parked_bytes = 0;
                        state.probed = false;
                        let parked = std::mem::take(&mut state.parked);
                        state.ready.extend(parked);
                    }
                    Work::Closed => open = false,
                    Work::Done => return,
                }
                continue;
            };
            let batch = piece.batch;
            match self.send(&mut state, piece) {
                Outcome::Delivered | Outcome::Dropped => {
                    if !self.resolve_piece(&mut state, batch) {
                        return;
                    }
                }
                Outcome::Split(first, second) => {
                    if let Some(b) = state.in_flight.get_mut(&batch) {
                        b.open_pieces += 1;
                    }
                    // Isolating a bad line is not waiting out an outage:
                    // each half starts with short waits. (Carried over,
                    // the backoff of ten levels of halving reaches its
                    // 30 s cap, and the whole node waits on one line.)
                    state.backoff.reset();
                    state.ready.push_front(second);
                    state.ready.push_front(first);
                }
                Outcome::Parked(piece) => {
                    state.parked_bytes += piece.lines.len();
                    state.parked.push(piece);
                }
                Outcome::Stopped => return,
            }
        }
    }

    fn next_work(&self, state: &mut State, open: bool) -> Work {
        if state.parked.is_empty() {
            if !open {
                return Work::Done;
            }
            return match self.batches.recv() {
                Ok(batch) => Work::Batch(batch),
                Err(_) => Work::Closed,
            };
        }
        // Parked pieces wait for the intake: meanwhile newer batches are
        // tried (they tell a poisoned piece from an outage), within a cap.
        let wait = state.parked_backoff.next_delay(None);
        if open && state.parked_bytes < PARKED_CAP {
            match self.batches.recv_timeout(wait) {
                Ok(batch) => Work::Batch(batch),
                Err(RecvTimeoutError::Timeout) => Work::RetryParked,
                Err(RecvTimeoutError::Disconnected) => Work::Closed,
            }
        } else if self.hard_stop.wait_timeout(wait) {
            Work::Done
        } else {
            Work::RetryParked
        }
    }

    /// One turn of sending a piece: a few attempts with backoff.
    fn send(&self, state: &mut State, mut piece: Piece) -> Outcome {
        let batch = &state.in_flight[&piece.batch];
        let lines = &batch.lines[piece.lines.clone()];
        let meta = &batch.meta;
        let wire = WireMeta {
            path: &meta.intake_path,
            file: &meta.file,
        };
        // Halving is harmless, dropping is not: while isolating, one 500
        // is enough to halve a piece further (once the intake is known to
        // work), but a single line is dropped only after a full turn.
        let attempts = if piece.isolating && piece.line_count >= 2 {
            1
        } else {
            ATTEMPTS_PER_TURN
        };
        let mut server_errors = 0u32;
        let mut successes = 0u64;
        let delivery = send_with_retry(
            || {
                let result = self.sink.send_logs(&wire, lines);
                match &result {
                    Ok(()) => successes += 1,
                    Err(e) if e.status() == Some(500) => server_errors += 1,
                    Err(_) => server_errors = 0,
                }
                result
            },
            &mut state.backoff,
            Attempts::AtMost(attempts),
            &self.hard_stop,
            |error, wait| self.on_retry(meta, error, wait),
        );
        let line_count = piece.line_count;
        state.successes += successes;
        match delivery {
            Delivery::Delivered => {
                state.parked_backoff.reset();
                self.metrics.batch("delivered");
                self.metrics.lines_shipped.inc_by(line_count);
                self.metrics.bytes_shipped.inc_by(lines.len() as u64);
                Outcome::Delivered
            }
            Delivery::ShutDown => Outcome::Stopped,
            // Retrying cannot help: isolate the line(s) the intake refuses,
            // so the rest of the batch is still delivered.
            Delivery::Rejected { status, body_start } => self.split_or_drop(
                &piece,
                lines,
                meta,
                "rejected",
                &format!("{status}: {body_start}"),
                false,
            ),
            Delivery::TooLarge => self.split_or_drop(
                &piece,
                lines,
                meta,
                "rejected",
                "413 Payload Too Large",
                false,
            ),
            Delivery::GaveUp { last } => {
                let intake_works = state.successes > piece.successes_seen;
                piece.successes_seen = state.successes;
                if server_errors < attempts {
                    // Connection errors, 503s, 429s: an outage or overload.
                    return Outcome::Parked(piece);
                }
                if !intake_works {
                    // 500s and no other request went through yet: halve
                    // the piece as a probe, once per round, so that an
                    // outage does not multiply the requests.
                    if state.probed || piece.line_count < 2 {
                        return Outcome::Parked(piece);
                    }
                    state.probed = true;
                }
                self.split_or_drop(
                    &piece,
                    lines,
                    meta,
                    "server_error",
                    &last.to_string(),
                    intake_works || piece.isolating,
                )
            }
        }
    }

    /// Halves `piece` (`isolating`: see [`Piece::isolating`]), or, for a
    /// single line, drops and counts it.
    fn split_or_drop(
        &self,
        piece: &Piece,
        lines: &[u8],
        meta: &LogMeta,
        reason: &'static str,
        answer: &str,
        isolating: bool,
    ) -> Outcome {
        if let Some((first, second)) = split(piece, lines, isolating) {
            self.metrics.batch("split");
            return Outcome::Split(first, second);
        }
        log::warn!(
            "the intake refuses a line of {}/{} ({answer}); it is dropped ({} bytes)",
            meta.intake_path,
            meta.file,
            lines.len()
        );
        self.metrics.batch("rejected");
        self.metrics.dropped(reason, 1);
        Outcome::Dropped
    }

    /// A piece of `batch` is delivered or dropped; once all are, the batch's
    /// chunks are acknowledged. False when the parse thread is gone.
    fn resolve_piece(&self, state: &mut State, batch: u64) -> bool {
        let Some(in_flight) = state.in_flight.get_mut(&batch) else {
            return true;
        };
        in_flight.open_pieces -= 1;
        if in_flight.open_pieces > 0 {
            return true;
        }
        let done = state.in_flight.remove(&batch).expect("present above");
        self.acks.send(done.acks).is_ok()
    }

    fn on_retry(&self, meta: &LogMeta, error: &SendError, wait: Duration) {
        self.metrics.retries.inc();
        log::warn!(
            "sending {}/{} failed ({error}); retrying in {wait:?}",
            meta.intake_path,
            meta.file
        );
    }
}

/// Registers a new batch as one piece ready to send.
fn take(state: &mut State, batch: Batch) {
    let id = state.next_batch;
    state.next_batch += 1;
    let len = batch.lines.len();
    state.in_flight.insert(
        id,
        InFlight {
            meta: batch.meta,
            lines: batch.lines,
            acks: batch.acks,
            open_pieces: 1,
        },
    );
    state.ready.push_back(Piece {
        batch: id,
        lines: 0..len,
        line_count: batch.line_count as u64,
        successes_seen: state.successes,
        isolating: false,
    });
}

/// The two halves of a piece, or None for a single line.
fn split(piece: &Piece, lines: &[u8], isolating: bool) -> Option<(Piece, Piece)> {
    let (first, _) = split_in_half(lines)?;
    let cut = piece.lines.start + first.len();
    let first_count = count_lines(first);
    let half = |range: Range<usize>, line_count| Piece {
        batch: piece.batch,
        lines: range,
        line_count,
        successes_seen: piece.successes_seen,
        isolating,
    };
    Some((
        half(piece.lines.start..cut, first_count),
        half(cut..piece.lines.end, piece.line_count - first_count),
    ))
}

/// Splits `\n`-terminated lines into two non-empty halves at a line
/// boundary near the middle; None for a single line.
fn split_in_half(lines: &[u8]) -> Option<(&[u8], &[u8])> {
    let middle = lines.len() / 2;
    let after = memchr::memchr(b'\n', &lines[middle..]).map(|i| middle + i + 1);
    let before = memchr::memrchr(b'\n', &lines[..middle]).map(|i| i + 1);
    let cut = after
        .filter(|&c| c < lines.len())
        .or(before.filter(|&c| c > 0))?;
    Some(lines.split_at(cut))
}

fn count_lines(lines: &[u8]) -> u64 {
    memchr::memchr_iter(b'\n', lines).count() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn halves_are_cut_at_line_boundaries() {
        let (a, b) = split_in_half(b"one\ntwo\nthree\n").unwrap();
        assert_eq!((a, b), (&b"one\ntwo\n"[..], &b"three\n"[..]));
        let (a, b) = split_in_half(b"a long first line\nb\n").unwrap();
        assert_eq!((a, b), (&b"a long first line\n"[..], &b"b\n"[..]));
    }

    #[test]
    fn a_single_line_does_not_split() {
        assert!(split_in_half(b"only one line\n").is_none());
    }
}
