//! The `logd-upload-N` threads: each sends one request at a time and hands
//! the answer back. They decide nothing (the `logd-upload` thread does), so
//! several requests are in flight without an async runtime: a blocking
//! request per thread, the intake client's connection pool shared.
//!
//! Threads are started when more requests are to be in flight than there
//! are threads, up to the cap, and then stay: a node whose intake answers in
//! microseconds keeps one or two, one 50 ms away as many as it needs.
//! Requests wait in a queue. A request wakes the thread that became idle
//! last (its caches are the warmest); a thread that has just handed an
//! answer back takes a waiting request first, and parks when there is none.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use logd::LogMeta;
use shared::intake::{LogMeta as WireMeta, SendError};
use shared::otlp::{Delivered, logs::LogFile};
use shared::sink::Sink;

/// One request: a part of one batch, or (a sink taking many files per
/// request) of several files' batches.
pub struct Job {
    pub parts: Vec<Part>,
}

/// `lines[range]` of a batch, whose bytes travel with it and come back with
/// the answer (a batch has at most one request in flight).
pub struct Part {
    pub batch: u64,
    pub meta: Arc<LogMeta>,
    pub lines: Vec<u8>,
    pub range: Range<usize>,
    /// See [`super::batcher::Batch::reads`].
    pub reads: Vec<(usize, u64)>,
}

pub struct Answer {
    pub job: Job,
    pub result: Result<Delivered, SendError>,
    pub took: Duration,
}

pub struct Pool {
    sink: Arc<Sink>,
    /// Each thread, to wake it when it is idle and a job waits.
    threads: Vec<Waker>,
    shared: Arc<Mutex<Shared>>,
    answers_tx: Sender<Answer>,
}

/// What the uploader and the pool's threads share.
#[derive(Default)]
struct Shared {
    /// Jobs not taken by a thread yet, in the order sent.
    queue: VecDeque<Job>,
    /// Threads without a job, the last to become idle on top.
    idle: Vec<usize>,
    /// Threads sending a request.
    busy: usize,
    /// The uploader is gone: idle threads end.
    closed: bool,
}

impl Pool {
    /// Answers arrive on `answers`; no thread is started yet.
    pub fn new(sink: Arc<Sink>, answers: Sender<Answer>) -> Pool {
        Pool {
            sink,
            threads: Vec::new(),
            shared: Arc::new(Mutex::new(Shared::default())),
            answers_tx: answers,
        }
    }

    /// Queues `job` and wakes the thread of the pool that became idle
    /// last; if none is idle, starts one unless threads between two
    /// requests (woken, or with an answer to hand back) will take it. So
    /// there are never more threads than requests in flight at once. The
    /// caller sends a job only for a free slot.
    pub fn send(&mut self, job: Job) {
        let mut shared = lock(&self.shared);
        shared.queue.push_back(job);
        if let Some(thread) = shared.idle.pop() {
            drop(shared);
            self.threads[thread].wake();
        } else if self.threads.len() - shared.busy < shared.queue.len() {
            drop(shared);
            self.start_thread();
        }
    }

    fn start_thread(&mut self) {
        let index = self.threads.len();
        let woken = Arc::new(AtomicBool::new(false));
        let wake = woken.clone();
        let sink = self.sink.clone();
        let shared = self.shared.clone();
        let answers = self.answers_tx.clone();
        let handle = thread::Builder::new()
            .name(format!("logd-upload-{}", index + 1))
            .spawn(move || {
                let mut answer = None;
                loop {
                    let job = {
                        let mut shared = lock(&shared);
                        if answer.is_some() {
                            shared.busy -= 1;
                        }
                        let job = shared.queue.pop_front();
                        if job.is_some() {
                            shared.busy += 1;
                        } else if shared.closed {
                            return;
                        } else {
                            shared.idle.push(index);
                        }
                        job
                    };
                    // The answer is handed back only now, so that the
                    // request its slot lets go finds this thread idle
                    // rather than a new one started.
                    if let Some(answer) = answer.take()
                        && answers.send(answer).is_err()
                    {
                        return;
                    }
                    let Some(job) = job else {
                        // Parked at once: a channel's receiver would spin
                        // and yield the CPU a few times first, a context
                        // switch each on a busy node.
                        while !wake.swap(false, Ordering::Acquire) {
                            thread::park();
                        }
                        continue;
                    };
                    answer = Some(send(&sink, job));
                }
            })
            .expect("spawning an upload thread");
        self.threads.push(Waker {
            thread: handle.thread().clone(),
            woken,
        });
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        lock(&self.shared).closed = true;
        for thread in &self.threads {
            thread.wake();
        }
    }
}

/// Wakes a parked pool thread.
struct Waker {
    thread: Thread,
    woken: Arc<AtomicBool>,
}

impl Waker {
    fn wake(&self) {
        self.woken.store(true, Ordering::Release);
        self.thread.unpark();
    }
}

fn lock(shared: &Mutex<Shared>) -> std::sync::MutexGuard<'_, Shared> {
    shared
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Sends `job` on the calling thread.
pub fn send(sink: &Sink, job: Job) -> Answer {
    let files: Vec<LogFile> = job
        .parts
        .iter()
        .map(|part| LogFile {
            meta: WireMeta {
                path: &part.meta.intake_path,
                file: &part.meta.file,
            },
            lines: &part.lines[part.range.clone()],
            reads: &part.reads,
            start: part.range.start,
        })
        .collect();
    let started = Instant::now();
    let result = sink.send_log_files(&files);
    drop(files);
    Answer {
        took: started.elapsed(),
        job,
        result,
    }
}
