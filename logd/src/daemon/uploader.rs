//! The `logd-upload` thread: decides what goes to the intake and when,
//! with several requests in flight (sent by the `logd-upload-N` threads of
//! [`Pool`]), and acknowledges every chunk of a batch once all its lines are
//! delivered, or dropped and counted.
//!
//! - **Order.** A file has at most one request in flight: its pieces wait
//!   in a queue of their own, so its lines reach the intake in the order
//!   they were written (but while a line answered 500 is looked for: see
//!   [`Uploader::on_server_error`]). Files go in turn.
//! - **How many at once.** The [`Limiter`] grows the number in flight while
//!   response times stay flat and cuts it on overload; `Retry-After` and an
//!   outage's backoff hold every request back, not only the one answered.
//! - **Bad data never stalls the node's logs.** What cannot be delivered as
//!   is gets split in halves at line boundaries, down to the line the
//!   intake will not take, which is dropped and counted: at once on a 413
//!   or another 4xx; on 500 only when other requests went through meanwhile
//!   (then the piece is the problem, not the intake). Once halving has
//!   begun, one more 500 halves a piece again, so one bad line costs
//!   seconds; a single line is dropped only after a full turn of 500s. An
//!   intake answering 500 to everything is an outage: waited for, with a
//!   halved piece as a probe now and then, since a piece holding a bad line
//!   may be all there is to send.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, after, never, select, unbounded};
use logd::{AckToken, FileKey, LogMeta};
use shared::intake::SendError;
use shared::retry::Backoff;
use shared::shutdown::Shutdown;
use shared::sink::Sink;

use super::batcher::Batch;
use super::held::Held;
use super::limiter::{Limiter, QUEUE_WAIT};
use super::metrics::Metrics;
use super::upload_pool::{self, Answer, Job, Part, Pool};

/// A backlog's batch goes at this size per [`BACKLOG_BATCH_TIME`] of the
/// intake's response time (see [`backlog_batch`]).
const BACKLOG_BATCH_BYTES: usize = 128 * 1024;
const BACKLOG_BATCH_TIME: Duration = Duration::from_millis(10);
/// A request that carries every ready file's lines (OTLP) has a backlog
/// grow the limit only after this long a wait for a slot, and one by one:
/// on loopback each request's time is mostly encoding, and more in flight
/// only held more bodies and encoders (a drain with 5 in flight: 281-353
/// instead of 381-462 MB/s, peak RSS 12.8 instead of 9.6 MiB).
const BUNDLE_QUEUE_WAIT: Duration = Duration::from_millis(20);
/// 500s in a row after which a piece is split (or a single line dropped),
/// once other requests went through meanwhile.
const ATTEMPTS_PER_TURN: u32 = 4;

pub struct Uploader {
    pub sink: Arc<Sink>,
    pub batches: Receiver<Vec<Batch>>,
    pub acks: Sender<Vec<AckToken>>,
    /// Triggered when the shutdown grace period is over: stop retrying.
    pub hard_stop: Shutdown,
    pub metrics: Metrics,
    pub held: Held,
    /// `LOGD_UPLOAD_CONCURRENCY`: requests in flight at most.
    pub max_in_flight: usize,
    /// `LOGD_BATCH_LINGER_MS`: lines that lingered can wait a tenth of it
    /// for a slot without harm.
    pub linger: Duration,
    /// The sink takes many files per request (OTLP): a request carries the
    /// head pieces of the ready files, up to about this many bytes.
    pub bundle: Option<usize>,
}

/// A batch whose pieces are not all resolved yet.
struct Open {
    file: FileKey,
    meta: Arc<LogMeta>,
    /// None while a piece of it is in flight (the bytes travel with it).
    lines: Option<Vec<u8>>,
    /// See [`Batch::reads`]; travels with the bytes.
    reads: Vec<(usize, u64)>,
    /// See [`Batch::backlog`].
    backlog: bool,
    bytes: usize,
    acks: Vec<AckToken>,
    open_pieces: usize,
}

/// A range of a batch's lines to send.
struct Piece {
    batch: u64,
    lines: Range<usize>,
    /// How many lines: known, so a backlog's bytes are not scanned for it.
    line_count: u64,
    /// 2xx answers counted when this piece began (or was split off): more
    /// since means the intake works and a 500 is this piece's own.
    successes_seen: u64,
    /// A half of a piece answered 500 again and again while the intake took
    /// other requests: it holds the bad line, or its sibling does.
    isolating: bool,
    /// 500s in a row.
    server_errors: u32,
    /// Goes in a request of its own: it was in a request of several files
    /// the receiver refused (400, 413), so what it refuses is looked for
    /// file by file, then line by line.
    solo: bool,
    /// Between attempts of this piece after 500s.
    backoff: Backoff,
}

/// What happens to a piece after an answer that is not a success.
enum Next {
    /// Again, once the global hold (if any) is over.
    Again,
    /// Again, not before then.
    At(Instant),
    /// Again, after the next piece of its file (see [`Uploader::on_server_error`]).
    Behind,
    Split(Piece, Piece),
    Drop,
}

struct State {
    open: HashMap<u64, Open>,
    next_batch: u64,
    /// Each file's pieces, in order; the head is the one that goes next.
    queues: HashMap<FileKey, VecDeque<Piece>>,
    /// Files whose head piece may go now, in turn, and since when.
    ready: VecDeque<(FileKey, Instant)>,
    /// Files whose head piece waits for a time of its own.
    waiting: BinaryHeap<Reverse<(Instant, FileKey)>>,
    /// Bytes of the pieces in the queues that are not in flight.
    queued_bytes: usize,
    in_flight: usize,
    limiter: Limiter,
    /// Nothing is sent before then: a `Retry-After`, or an outage's backoff.
    hold_until: Option<Instant>,
    /// When the last hold ended: waiting for it is not waiting for a slot.
    hold_ended: Instant,
    /// Between requests while the intake is down or overloaded.
    outage: Backoff,
    /// A piece answered 500 by an intake that fails everything may be
    /// halved as a probe after then.
    next_probe: Instant,
    /// 2xx answers so far.
    successes: u64,
}

impl Uploader {
    pub fn run(self) {
        let (answers_tx, answers) = unbounded();
        let mut pool = Pool::new(self.sink.clone(), answers_tx);
        let now = Instant::now();
        let mut state = State {
            open: HashMap::new(),
            next_batch: 0,
            queues: HashMap::new(),
            ready: VecDeque::new(),
            waiting: BinaryHeap::new(),
            queued_bytes: 0,
            in_flight: 0,
            limiter: Limiter::new(self.max_in_flight, now),
            hold_until: None,
            hold_ended: now,
            outage: Backoff::new(),
            next_probe: now,
            successes: 0,
        };
        let mut open = true;
        loop {
            if !self.dispatch(&mut state, &mut pool) {
                return;
            }
            if !open && state.open.is_empty() {
                return;
            }
            let timer = match next_wake(&state) {
                Some(at) => after(at.saturating_duration_since(Instant::now())),
                None => never(),
            };
            // No more bytes waiting here than the next round of requests
            // takes: the rest wait in the batcher, growing, and in the
            // files. (On loopback that is a batch or two: what waits here
            // is sent within a millisecond.)
            let round = state.limiter.limit() * self.backlog_batch(&state);
            let batches = if open && state.queued_bytes < round {
                &self.batches
            } else {
                &never()
            };
            select! {
                recv(answers) -> answer => {
                    let answer = answer.expect("the pool holds a sender");
                    if !self.on_answer(&mut state, answer) {
                        return;
                    }
                }
                recv(batches) -> message => match message {
                    Ok(batches) => {
                        for batch in batches {
                            take(&mut state, batch);
                        }
                    }
                    Err(_) => open = false,
                },
                recv(timer) -> _ => wake_due(&mut state, Instant::now()),
                recv(self.hard_stop.receiver()) -> _ => return,
            }
        }
    }

    /// Sends the ready files' head pieces while the limit allows; false
    /// when the parse thread is gone.
    fn dispatch(&self, state: &mut State, pool: &mut Pool) -> bool {
        loop {
            let now = Instant::now();
            if state.hold_until.is_some_and(|t| now < t) {
                break;
            }
            if let Some(ended) = state.hold_until.take() {
                state.hold_ended = ended;
            }
            if state.in_flight >= state.limiter.limit() {
                break;
            }
            let Some((file, since)) = state.ready.pop_front() else {
                break;
            };
            let job = self.job(state, file);
            state.in_flight += 1;
            let backlog = state.open[&job.parts[0].batch].backlog;
            let (patience, wanted) = match (backlog, self.bundle) {
                (true, None) => (QUEUE_WAIT, state.in_flight + state.ready.len()),
                (true, Some(_)) => (BUNDLE_QUEUE_WAIT, 0),
                (false, _) => ((self.linger / 10).max(QUEUE_WAIT), 0),
            };
            let waited = now.saturating_duration_since(since.max(state.hold_ended));
            state.limiter.on_send(waited, patience, wanted);
            if state.limiter.limit() == 1 {
                // One at a time (an intake that answers at once, or one
                // overloaded): sent from here, without the hand-over to a
                // pool thread and back, two wake-ups a request.
                self.publish(state);
                if !self.on_answer(state, upload_pool::send(&self.sink, job)) {
                    return false;
                }
            } else {
                pool.send(job);
            }
        }
        self.publish(state);
        true
    }

    /// The request for `file`'s head piece and, if the sink takes many
    /// files per request, the head pieces of the ready files after it.
    fn job(&self, state: &mut State, file: FileKey) -> Job {
        let (Some(limit), false) = (self.bundle, head(state, file).solo) else {
            return Job {
                parts: vec![part(state, file)],
            };
        };
        let mut size = request_size(state, file);
        let mut parts = vec![part(state, file)];
        while size < limit {
            let Some(at) = state.ready.iter().position(|(f, _)| !head(state, *f).solo) else {
                break;
            };
            let (next, _) = state.ready.remove(at).expect("found above");
            size += request_size(state, next);
            parts.push(part(state, next));
        }
        Job { parts }
    }

    /// The size at which a backlog's batch goes: see [`backlog_batch`]. A
    /// request that carries many files' batches is as large as it needs to
    /// be whatever their sizes, so theirs stays the loopback one.
    fn backlog_batch(&self, state: &State) -> usize {
        if self.bundle.is_some() {
            BACKLOG_BATCH_BYTES
        } else {
            backlog_batch(state.limiter.mean_response())
        }
    }

    fn publish(&self, state: &State) {
        let limit = state.limiter.limit();
        self.held.set_backlog_batch(self.backlog_batch(state));
        self.metrics.upload_limit.set(limit as i64);
        self.metrics.uploads_in_flight.set(state.in_flight as i64);
    }

    /// Handles an answer; false when the parse thread is gone.
    fn on_answer(&self, state: &mut State, answer: Answer) -> bool {
        let now = Instant::now();
        state.in_flight -= 1;
        self.metrics
            .upload_seconds
            .observe(answer.took.as_secs_f64());
        let Answer { job, result, took } = answer;
        let mut pieces: Vec<(FileKey, Piece)> = job
            .parts
            .into_iter()
            .map(|part| {
                let batch = state.open.get_mut(&part.batch).expect("open batch");
                batch.lines = Some(part.lines);
                batch.reads = part.reads;
                let file = batch.file;
                let piece = state
                    .queues
                    .get_mut(&file)
                    .and_then(VecDeque::pop_front)
                    .expect("the answered piece heads its file's queue");
                (file, piece)
            })
            .collect();
        match result {
            Ok(delivered) => {
                state.successes += 1;
                state.limiter.on_response(took, now);
                state.outage.reset();
                if delivered.rejected > 0 {
                    // The receiver took the request and dropped some of
                    // it: sending it again would not change that.
                    log::warn!(
                        "the receiver dropped {} records of a request: {}",
                        delivered.rejected,
                        delivered.message
                    );
                    self.metrics
                        .dropped("partial_success", delivered.rejected as usize);
                }
                for (file, piece) in pieces {
                    self.metrics.batch("delivered");
                    self.metrics.lines_shipped.inc_by(piece.line_count);
                    self.metrics.bytes_shipped.inc_by(piece.lines.len() as u64);
                    if !self.resolve(state, piece.batch, file) {
                        return false;
                    }
                }
                true
            }
            Err(error) if pieces.len() > 1 => self.on_bundle_failure(state, pieces, &error, now),
            Err(error) => {
                let (file, piece) = pieces.pop().expect("a job has a part");
                let next = self.on_failure(state, piece, &error, took, now);
                self.follow(state, file, next)
            }
        }
    }

    /// A request of several files failed: all wait (an outage), all go
    /// again one by one to find what the receiver refuses (400, 413), or
    /// all are dropped (refused for good). False when the parse thread is
    /// gone.
    fn on_bundle_failure(
        &self,
        state: &mut State,
        pieces: Vec<(FileKey, Piece)>,
        error: &SendError,
        now: Instant,
    ) -> bool {
        match error {
            SendError::Retryable { retry_after, .. } => {
                state.limiter.on_overload(now);
                let wait = state.outage.next_delay(*retry_after);
                self.hold(state, now + wait);
                self.metrics.retries.inc();
                log::warn!(
                    "sending {} files' lines failed ({error}); retrying in {wait:?}",
                    pieces.len()
                );
            }
            SendError::TooLarge | SendError::Rejected { .. } => {
                self.metrics.batch("split");
                log::info!(
                    "the receiver refuses a request of {} files ({error}); sending them one by one",
                    pieces.len()
                );
            }
            SendError::Refused { .. } => {
                log::error!(
                    "the receiver refuses a request of {} files for good ({error}); dropped",
                    pieces.len()
                );
                for (file, piece) in pieces {
                    self.metrics.batch("rejected");
                    self.metrics.dropped("refused", piece.line_count as usize);
                    if !self.resolve(state, piece.batch, file) {
                        return false;
                    }
                }
                return true;
            }
        }
        let solo = !error.is_retryable();
        for (file, mut piece) in pieces.into_iter().rev() {
            piece.solo |= solo;
            if !self.follow(state, file, (piece, Next::Again)) {
                return false;
            }
        }
        true
    }

    /// What to do with `piece` after `error`.
    fn on_failure(
        &self,
        state: &mut State,
        mut piece: Piece,
        error: &SendError,
        took: Duration,
        now: Instant,
    ) -> (Piece, Next) {
        let meta = state.open[&piece.batch].meta.clone();
        match error {
            SendError::TooLarge => {
                let next = self.split_or_drop(state, &piece, &meta, "rejected", "413", false);
                (piece, next)
            }
            SendError::Rejected { status, body_start } => {
                let answer = format!("{status}: {body_start}");
                let next = self.split_or_drop(state, &piece, &meta, "rejected", &answer, false);
                (piece, next)
            }
            SendError::Refused { .. } => {
                log::error!(
                    "the receiver refuses {} lines of {}/{} for good ({error}); dropped",
                    piece.line_count,
                    meta.intake_path,
                    meta.file
                );
                self.metrics.batch("rejected");
                self.metrics.dropped("refused", piece.line_count as usize);
                (piece, Next::Drop)
            }
            SendError::Retryable { status, .. } if *status == Some(500) => {
                state.limiter.on_response(took, now);
                piece.server_errors += 1;
                self.on_server_error(state, piece, &meta, error, now)
            }
            SendError::Retryable { retry_after, .. } => {
                // The intake is down or overloaded: everything waits.
                state.limiter.on_overload(now);
                piece.server_errors = 0;
                let wait = state.outage.next_delay(*retry_after);
                self.hold(state, now + wait);
                self.on_retry(&meta, error, wait);
                (piece, Next::Again)
            }
        }
    }

    /// A 500: the piece's own problem if the intake takes other requests,
    /// an outage otherwise.
    fn on_server_error(
        &self,
        state: &mut State,
        mut piece: Piece,
        meta: &LogMeta,
        error: &SendError,
        now: Instant,
    ) -> (Piece, Next) {
        let intake_works = state.successes > piece.successes_seen;
        let turn = if piece.isolating && piece.line_count >= 2 {
            1
        } else {
            ATTEMPTS_PER_TURN
        };
        if intake_works && piece.server_errors >= turn {
            let reason = error.to_string();
            let next = self.split_or_drop(state, &piece, meta, "server_error", &reason, true);
            return (piece, next);
        }
        if !intake_works {
            if sibling_untried(state, &piece) {
                // No other request tells whether the intake works, but the
                // rest of this batch can: a success there makes this 500 the
                // piece's own. The one exception to a file's order: while a
                // bad line is looked for, the halves of a batch may arrive
                // swapped.
                return (piece, Next::Behind);
            }
            if piece.server_errors >= ATTEMPTS_PER_TURN
                && piece.line_count >= 2
                && now >= state.next_probe
            {
                // Halve as a probe, once per outage wait, so that an outage
                // does not multiply the requests.
                let wait = state.outage.next_delay(None);
                state.next_probe = now + wait * 2;
                let reason = error.to_string();
                let isolating = piece.isolating;
                let next =
                    self.split_or_drop(state, &piece, meta, "server_error", &reason, isolating);
                return (piece, next);
            }
            let wait = state.outage.next_delay(None);
            self.hold(state, now + wait);
            self.on_retry(meta, error, wait);
            return (piece, Next::Again);
        }
        let wait = piece.backoff.next_delay(None);
        self.on_retry(meta, error, wait);
        (piece, Next::At(now + wait))
    }

    fn hold(&self, state: &mut State, until: Instant) {
        state.hold_until = Some(state.hold_until.map_or(until, |t| t.max(until)));
    }

    /// Puts the piece (or its halves) back at the head of its file's queue,
    /// or drops it; false when the parse thread is gone.
    fn follow(&self, state: &mut State, file: FileKey, (piece, next): (Piece, Next)) -> bool {
        if !matches!(next, Next::Drop) {
            state.queued_bytes += piece.lines.len();
        }
        let queue = state.queues.entry(file).or_default();
        match next {
            Next::Again => {
                queue.push_front(piece);
                state.ready.push_front((file, Instant::now()));
            }
            Next::At(at) => {
                queue.push_front(piece);
                state.waiting.push(Reverse((at, file)));
            }
            Next::Behind => {
                queue.insert(1, piece);
                state.ready.push_front((file, Instant::now()));
            }
            Next::Split(first, second) => {
                state
                    .open
                    .get_mut(&piece.batch)
                    .expect("open batch")
                    .open_pieces += 1;
                queue.push_front(second);
                queue.push_front(first);
                state.ready.push_front((file, Instant::now()));
            }
            Next::Drop => return self.resolve(state, piece.batch, file),
        }
        true
    }

    /// Halves `piece` (`isolating`: see [`Piece::isolating`]), or, for a
    /// single line, drops and counts it.
    fn split_or_drop(
        &self,
        state: &State,
        piece: &Piece,
        meta: &LogMeta,
        reason: &'static str,
        answer: &str,
        isolating: bool,
    ) -> Next {
        let lines = state.open[&piece.batch]
            .lines
            .as_deref()
            .expect("the answered piece's bytes are back");
        if let Some((first, second)) = split(
            piece,
            &lines[piece.lines.clone()],
            isolating,
            state.successes,
        ) {
            self.metrics.batch("split");
            return Next::Split(first, second);
        }
        log::warn!(
            "the intake refuses a line of {}/{} ({answer}); it is dropped ({} bytes)",
            meta.intake_path,
            meta.file,
            piece.lines.len()
        );
        self.metrics.batch("rejected");
        self.metrics.dropped(reason, 1);
        Next::Drop
    }

    /// A piece of `batch` is delivered or dropped: the file's next piece
    /// may go, and once all of the batch's are resolved its chunks are
    /// acknowledged. False when the parse thread is gone.
    fn resolve(&self, state: &mut State, batch: u64, file: FileKey) -> bool {
        match state.queues.get(&file) {
            Some(queue) if !queue.is_empty() => state.ready.push_back((file, Instant::now())),
            _ => {
                state.queues.remove(&file);
            }
        }
        let open = state.open.get_mut(&batch).expect("open batch");
        open.open_pieces -= 1;
        if open.open_pieces > 0 {
            return true;
        }
        let done = state.open.remove(&batch).expect("present above");
        self.held.release(done.bytes);
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

/// The size at which a backlog's batch goes, for requests answered in
/// `response` on average: [`BACKLOG_BATCH_BYTES`] per [`BACKLOG_BATCH_TIME`]
/// of it. On loopback that is 128 KiB: holding more would only hold memory,
/// since the file's next read comes within the round anyway. Tens of
/// milliseconds away, every request pays the round trip: fewer, larger ones
/// carry the backlog with fewer in flight (384 KiB at 25 ms, 1 MiB from
/// 70 ms, never more than `LOGD_BATCH_MAX_BYTES`: the batcher's cap).
fn backlog_batch(response: Duration) -> usize {
    let times = response.as_nanos() / BACKLOG_BATCH_TIME.as_nanos() + 1;
    BACKLOG_BATCH_BYTES.saturating_mul(usize::try_from(times).unwrap_or(usize::MAX))
}

/// The piece after `piece` in its file's queue is of the same batch (a half
/// of the same split) and was not answered 500 yet.
fn sibling_untried(state: &State, piece: &Piece) -> bool {
    let file = state.open[&piece.batch].file;
    state.queues[&file]
        .front()
        .is_some_and(|next| next.batch == piece.batch && next.server_errors == 0)
}

fn head(state: &State, file: FileKey) -> &Piece {
    state.queues[&file]
        .front()
        .expect("a ready file has a piece")
}

/// `file`'s head piece for a request, which takes its batch's bytes along.
fn part(state: &mut State, file: FileKey) -> Part {
    let piece = head(state, file);
    let (id, range) = (piece.batch, piece.lines.clone());
    state.queued_bytes -= range.len();
    let batch = state.open.get_mut(&id).expect("open batch");
    Part {
        batch: id,
        meta: batch.meta.clone(),
        lines: batch.lines.take().expect("one piece of a batch in flight"),
        reads: std::mem::take(&mut batch.reads),
        range,
    }
}

/// About what `file`'s head piece adds to an OTLP request (its lines are
/// counted already: no scan of its bytes).
fn request_size(state: &State, file: FileKey) -> usize {
    let piece = head(state, file);
    let meta = &state.open[&piece.batch].meta;
    let path_len = meta.intake_path.len() + meta.file.len() + 1;
    shared::otlp::logs::encoded_size(piece.lines.len(), piece.line_count as usize, path_len)
}

/// Registers a new batch as one piece at the end of its file's queue.
fn take(state: &mut State, batch: Batch) {
    let id = state.next_batch;
    state.next_batch += 1;
    let len = batch.lines.len();
    state.open.insert(
        id,
        Open {
            file: batch.file,
            meta: batch.meta,
            lines: Some(batch.lines),
            reads: batch.reads,
            backlog: batch.backlog,
            bytes: len,
            acks: batch.acks,
            open_pieces: 1,
        },
    );
    state.queued_bytes += len;
    let queue = state.queues.entry(batch.file).or_default();
    if queue.is_empty() {
        // It has been waiting since the batcher handed it over.
        state.ready.push_back((batch.file, batch.flushed));
    }
    queue.push_back(Piece {
        batch: id,
        lines: 0..len,
        line_count: batch.line_count as u64,
        successes_seen: state.successes,
        isolating: false,
        server_errors: 0,
        backoff: Backoff::new(),
        solo: false,
    });
}

/// When the loop must look again without an answer or a batch: the end of
/// the hold, if something is ready, or a waiting piece's time.
fn next_wake(state: &State) -> Option<Instant> {
    let hold = state.hold_until.filter(|_| !state.ready.is_empty());
    let waiting = state.waiting.peek().map(|Reverse((at, _))| *at);
    match (hold, waiting) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Moves the files whose wait is over to the ready ones.
fn wake_due(state: &mut State, now: Instant) {
    while let Some(Reverse((at, file))) = state.waiting.peek().copied() {
        if at > now {
            break;
        }
        state.waiting.pop();
        state.ready.push_back((file, now));
    }
}

/// The two halves of a piece, or None for a single line.
fn split(piece: &Piece, lines: &[u8], isolating: bool, successes: u64) -> Option<(Piece, Piece)> {
    let (first, _) = split_in_half(lines)?;
    let cut = piece.lines.start + first.len();
    let first_count = count_lines(first);
    let half = |range: Range<usize>, line_count| Piece {
        batch: piece.batch,
        lines: range,
        line_count,
        successes_seen: successes,
        isolating,
        server_errors: 0,
        backoff: Backoff::new(),
        solo: true,
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
