//! The logd daemon: the pipeline threads around the tailing core.
//! ARCHITECTURE.md draws them; each module here is one thread.

mod batcher;
mod checkpointer;
mod discovery;
mod held;
mod limiter;
mod metrics;
pub mod settings;
mod tailing;
mod upload_pool;
mod uploader;

use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{Sender, bounded, unbounded};
use logd::{CheckpointStore, Tailer};
use shared::health::Health;
use shared::metrics::{MetricsServer, Registry};
use shared::shutdown::Shutdown;
use shared::sink::Sink;

use self::batcher::Batcher;
use self::checkpointer::Checkpointer;
use self::discovery::Discovery;
use self::held::Held;
use self::metrics::Metrics;
use self::settings::Settings;
use self::tailing::Tailing;
use self::uploader::Uploader;

/// Messages (each a chunk list of up to 256 KiB) queued for the batcher.
const CHUNK_QUEUE: usize = 2;
/// Messages of batches queued for the uploader, which takes a round of
/// requests' worth at a time (see `uploader`).
const BATCH_QUEUE: usize = 1;
/// Discovery messages queued for the parse thread; a full queue blocks
/// discovery, the kernel queues events, and an overflow means a rescan.
const CHANGE_QUEUE: usize = 1024;
/// Bytes held in the batcher's batches at most. With staggered flushes
/// (see `batcher`) the batches hold about half a linger period's lines:
/// 1,000 files at 10 lines/s hold about 1.8 MB, under this cap.
const BATCHES_CAP: usize = 2 * 1024 * 1024;
/// Bytes of lines held in memory at most, in batches, queued and in flight
/// together (SPEC §3: "a few MiB"). A drain 25 ms away needs about 5 MB in
/// flight for 200 MB/s (Little's law); the rest is the batcher's, which
/// holds little in a backlog since a read round makes a whole batch.
const HELD_CAP: usize = 6 * 1024 * 1024;
/// With a sink that takes many files per request (OTLP), a request holds
/// about this many bytes at most (its records, before compression: well
/// under the 20 MiB an OpenTelemetry Collector takes by default), and the
/// batcher hands its batches over in messages of this many bytes.
const REQUEST_BYTES: usize = 4 * 1024 * 1024;
/// Files' writes are read every fifth (or half) of the linger, within these
/// bounds.
const WRITE_ROUND_MIN: Duration = Duration::from_millis(100);
const WRITE_ROUND_MAX: Duration = Duration::from_millis(500);

/// Runs logd until SIGTERM/SIGINT and the drain; returns the exit status.
pub fn run(settings: Settings) -> i32 {
    let shutdown = match Shutdown::install("logd") {
        Ok(shutdown) => shutdown,
        Err(e) => {
            log::error!("cannot install the signal handler: {e}");
            return 1;
        }
    };
    let sink = match Sink::open(&settings.common.sink) {
        Ok(sink) => Arc::new(sink),
        Err(e) => {
            eprintln!("logd: configuration error: HIK8S_SINK: cannot open: {e}");
            return 2;
        }
    };
    for warning in &settings.warnings {
        log::warn!("{warning}");
    }
    let health = Health::new();
    let metrics = Metrics::default();
    let mut registry = Registry::default();
    metrics.register(&mut registry);
    let _metrics_server = match settings.metrics_addr {
        Some(addr) => match MetricsServer::start("logd", addr, registry, health.clone(), &shutdown)
        {
            Ok(server) => Some(server),
            Err(e) => {
                eprintln!("logd: configuration error: LOGD_METRICS_ADDR: {e}");
                return 2;
            }
        },
        None => None,
    };

    if let Err(e) = std::fs::create_dir_all(&settings.state_dir) {
        log::error!(
            "cannot create the state dir {}: {e}; checkpoints will be retried",
            settings.state_dir.display()
        );
    }
    let store = CheckpointStore::load(&settings.state_dir);
    // A line waits for its batch's linger anyway: a busy file is read every
    // fifth of it (every half, when every file's batch goes together once
    // per linger: see `batcher`), in fewer, larger reads than at every
    // write, at most that much later.
    let share = if sink.files_per_request() > 1 { 2 } else { 5 };
    let write_round = (settings.batch_linger / share).clamp(WRITE_ROUND_MIN, WRITE_ROUND_MAX);
    let mut discovery = match Discovery::new(
        settings.tailer.clone(),
        settings.max_inotify_watches,
        write_round,
    ) {
        Ok(discovery) => discovery,
        Err(e) => {
            log::error!("cannot start inotify: {e}");
            return 1;
        }
    };
    // Watches first, then the first scan: nothing created in between is missed.
    discovery.watch_tree();
    log::info!(
        "logd {} reading {} ({} inotify watches), sink: {}",
        env!("CARGO_PKG_VERSION"),
        settings.tailer.pods_dir.display(),
        discovery.watch_count(),
        sink_name(&sink)
    );

    let (changes_tx, changes_rx) = bounded(CHANGE_QUEUE);
    let (chunks_tx, chunks_rx) = bounded(CHUNK_QUEUE);
    let (batches_tx, batches_rx) = bounded(BATCH_QUEUE);
    // Unbounded, yet bounded in practice by the chunks in flight: the
    // parse thread must never block on it, or it and the uploader would
    // wait on each other.
    let (acks_tx, acks_rx) = unbounded();
    let (snapshots_tx, snapshots_rx) = bounded(1);
    let (exited_tx, exited_rx) = unbounded::<&'static str>();
    let hard_stop = Shutdown::new();
    let held = Held::new(HELD_CAP, settings.batch_max_bytes);
    // Local sinks write one request at a time anyway.
    let max_in_flight = if sink.is_hik8s() || sink.is_otlp() {
        settings.upload_concurrency
    } else {
        1
    };

    let bundle = (sink.files_per_request() > 1).then_some(REQUEST_BYTES);

    spawn_detached("logd-inotify", &health, move || discovery.run(changes_tx));
    let tailing = spawn(
        "logd-parse",
        &health,
        &exited_tx,
        Tailing {
            tailer: Tailer::new(settings.tailer.clone(), store),
            changes: changes_rx,
            chunks: chunks_tx,
            acks: acks_rx,
            checkpoints: snapshots_tx,
            shutdown: shutdown.clone(),
            metrics: metrics.clone(),
            health: health.clone(),
            held: held.clone(),
        },
        Tailing::run,
    );
    let batcher = spawn(
        "logd-batch",
        &health,
        &exited_tx,
        Batcher {
            chunks: chunks_rx,
            batches: batches_tx,
            max_bytes: settings.batch_max_bytes,
            linger: settings.batch_linger,
            batches_cap: BATCHES_CAP,
            held: held.clone(),
            bundle,
        },
        Batcher::run,
    );
    let uploader = spawn(
        "logd-upload",
        &health,
        &exited_tx,
        Uploader {
            sink,
            batches: batches_rx,
            acks: acks_tx,
            hard_stop: hard_stop.clone(),
            metrics: metrics.clone(),
            bundle,
            held,
            max_in_flight,
            linger: settings.batch_linger,
        },
        Uploader::run,
    );
    let checkpointer = spawn(
        "logd-checkpoint",
        &health,
        &exited_tx,
        Checkpointer {
            snapshots: snapshots_rx,
            state_dir: settings.state_dir.clone(),
            metrics,
        },
        Checkpointer::run,
    );
    drop(exited_tx);

    // Until SIGTERM/SIGINT, or a pipeline thread ending on its own (a bug:
    // exit non-zero so the kubelet restarts logd from its checkpoint).
    let ended = crossbeam_channel::select! {
        recv(shutdown.receiver()) -> _ => None,
        recv(exited_rx) -> name => name.ok(),
    };
    // After a shutdown the threads end one after the other, and the select
    // may see one of them end before it sees the shutdown: that is no
    // failure. (`is_triggered` holds before any thread can see the shutdown.)
    if let Some(name) = ended
        && !shutdown.is_triggered()
    {
        log::error!("thread {name} ended unexpectedly: exiting");
        return 1;
    }
    let grace = settings.common.shutdown_grace;
    log::info!("shutting down: sending what is batched (up to {grace:?})");
    let deadline = Instant::now() + grace;
    // The parse thread stops reading and hangs up; the batcher flushes; the
    // uploader delivers until done or the grace period is over.
    let mut uploader_done = ended == Some("logd-upload");
    while !uploader_done {
        match exited_rx.recv_deadline(deadline) {
            Ok(name) => uploader_done = name == "logd-upload",
            Err(_) => break,
        }
    }
    if !uploader_done {
        log::warn!("grace period over: what was not acknowledged is sent again at the next start");
        hard_stop.trigger();
    }
    for handle in [uploader, batcher, tailing, checkpointer] {
        let _ = handle.join();
    }
    log::info!("checkpoint written; bye");
    0
}

fn sink_name(sink: &Sink) -> String {
    match sink {
        Sink::Hik8s(client) => client.base_url().to_string(),
        Sink::Stdout => "stdout".into(),
        Sink::File(file) => format!("file:{}", file.path().display()),
        Sink::Otlp(client) => format!("otlp:{}", client.url()),
    }
}

/// Starts a named pipeline thread running `body(value)`; it reports its
/// end on `exited`.
fn spawn<T: Send + 'static>(
    name: &'static str,
    health: &Health,
    exited: &Sender<&'static str>,
    value: T,
    body: fn(T),
) -> JoinHandle<()> {
    let health = health.clone();
    let exited = exited.clone();
    thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let _alive = health.watch_thread(name);
            body(value);
            let _ = exited.send(name);
        })
        .expect("spawning a thread at start")
}

/// A thread that is never joined: discovery blocks in read(2) and ends with
/// the process.
fn spawn_detached(name: &'static str, health: &Health, body: impl FnOnce() + Send + 'static) {
    let health = health.clone();
    thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let _alive = health.watch_thread(name);
            body();
        })
        .expect("spawning a thread at start");
}
