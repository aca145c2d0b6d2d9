//! The `logd-upload-N` threads: each sends one request at a time and hands
//! the answer back. They decide nothing (the `logd-upload` thread does), so
//! several requests are in flight without an async runtime: a blocking
//! request per thread, the intake client's connection pool shared.
//!
//! Threads are started when more requests are to be in flight than there
//! are threads, up to the cap, and then stay: a node whose intake answers in
//! microseconds keeps one or two, one 50 ms away as many as it needs.

use std::ops::Range;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, unbounded};
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
    jobs_tx: Sender<Job>,
    jobs_rx: Receiver<Job>,
    answers_tx: Sender<Answer>,
    threads: usize,
}

impl Pool {
    /// Answers arrive on `answers`; no thread is started yet.
    pub fn new(sink: Arc<Sink>, answers: Sender<Answer>) -> Pool {
        // Unbounded, yet never holding more than the requests in flight:
        // the caller sends a job only for a free slot.
        let (jobs_tx, jobs_rx) = unbounded();
        Pool {
            sink,
            jobs_tx,
            jobs_rx,
            answers_tx: answers,
            threads: 0,
        }
    }

    /// Sends `job` on a thread of the pool; `in_flight` requests (this one
    /// included) are then in flight, and a thread is started if there are
    /// fewer.
    pub fn send(&mut self, job: Job, in_flight: usize) {
        if in_flight > self.threads {
            self.start_thread();
        }
        self.jobs_tx
            .send(job)
            .expect("the pool's threads never hang up");
    }

    fn start_thread(&mut self) {
        self.threads += 1;
        let sink = self.sink.clone();
        let jobs = self.jobs_rx.clone();
        let answers = self.answers_tx.clone();
        thread::Builder::new()
            .name(format!("logd-upload-{}", self.threads))
            .spawn(move || {
                for job in jobs {
                    let answer = send(&sink, job);
                    if answers.send(answer).is_err() {
                        return;
                    }
                }
            })
            .expect("spawning an upload thread");
    }
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
