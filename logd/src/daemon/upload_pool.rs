//! The `logd-upload-N` threads: each sends one request at a time and hands
//! the answer back. They decide nothing (the `logd-upload` thread does), so
//! several requests are in flight without an async runtime: a blocking
//! request per thread, the intake client's connection pool shared.
//!
//! Threads are started when more requests are to be in flight than there
//! are threads, up to the cap, and then stay: a node whose intake answers in
//! microseconds keeps one or two, one 50 ms away as many as it needs. A
//! request goes to the thread that became idle last: it is likely still
//! awake (a channel's receiver spins a moment before it sleeps) and its
//! caches warm, where handing requests round the pool woke a cold thread
//! from its sleep for each.

use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Sender, bounded};
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
    /// Each thread's own queue of one job.
    threads: Vec<Sender<Job>>,
    /// Threads without a job, the last to become idle on top.
    idle: Arc<Mutex<Vec<usize>>>,
    answers_tx: Sender<Answer>,
}

impl Pool {
    /// Answers arrive on `answers`; no thread is started yet.
    pub fn new(sink: Arc<Sink>, answers: Sender<Answer>) -> Pool {
        Pool {
            sink,
            threads: Vec::new(),
            idle: Arc::new(Mutex::new(Vec::new())),
            answers_tx: answers,
        }
    }

    /// Sends `job` on the thread of the pool that became idle last, or on
    /// a new one if none is idle. The caller sends a job only for a free
    /// slot.
    pub fn send(&mut self, job: Job) {
        let idle = lock(&self.idle).pop();
        let thread = idle.unwrap_or_else(|| self.start_thread());
        self.threads[thread]
            .send(job)
            .expect("the pool's threads never hang up");
    }

    /// Starts a thread; returns its index.
    fn start_thread(&mut self) -> usize {
        let index = self.threads.len();
        let (jobs_tx, jobs) = bounded(1);
        self.threads.push(jobs_tx);
        let sink = self.sink.clone();
        let idle = self.idle.clone();
        let answers = self.answers_tx.clone();
        thread::Builder::new()
            .name(format!("logd-upload-{}", index + 1))
            .spawn(move || {
                for job in jobs {
                    let answer = send(&sink, job);
                    // Idle before the answer is seen: the uploader's next
                    // job may come to this thread at once.
                    lock(&idle).push(index);
                    if answers.send(answer).is_err() {
                        return;
                    }
                }
            })
            .expect("spawning an upload thread");
        index
    }
}

fn lock(idle: &Mutex<Vec<usize>>) -> std::sync::MutexGuard<'_, Vec<usize>> {
    idle.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
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
