//! SIGTERM/SIGINT turned into a value every thread can wait on.
//!
//! A [`Shutdown`] is a cheap, cloneable handle. Triggering it (by a signal,
//! by [`Shutdown::trigger`] in tests, or on an internal fatal error) closes a
//! crossbeam channel, so a thread can:
//! - `select!` on [`Shutdown::receiver`] next to its work channel: the
//!   receiver's `recv` returns `Err` once shut down, on every clone;
//! - wait with [`Shutdown::wait_timeout`] instead of `thread::sleep`, so
//!   a backoff wait ends as soon as the daemon is asked to stop;
//! - check [`Shutdown::is_triggered`] between units of work.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

/// Exit status when a second SIGTERM/SIGINT forces an immediate exit.
pub const FORCED_EXIT_CODE: i32 = 130;

type Callback = Box<dyn FnOnce() + Send>;

/// A shutdown request that any thread can wait on or trigger. Clones share
/// one state: triggering one triggers all.
#[derive(Clone)]
pub struct Shutdown {
    inner: Arc<Inner>,
}

struct Inner {
    triggered: AtomicBool,
    /// Dropped on trigger: that disconnects `receiver` for every waiter.
    sender: Mutex<Option<Sender<()>>>,
    receiver: Receiver<()>,
    /// Run once, by the thread that triggers.
    on_trigger: Mutex<Vec<Callback>>,
}

impl Shutdown {
    /// A shutdown not tied to signals (tests, or a daemon that installs
    /// signals later with [`Shutdown::install_signal_handler`]).
    pub fn new() -> Self {
        let (sender, receiver) = crossbeam_channel::bounded(0);
        Shutdown {
            inner: Arc::new(Inner {
                triggered: AtomicBool::new(false),
                sender: Mutex::new(Some(sender)),
                receiver,
                on_trigger: Mutex::new(Vec::new()),
            }),
        }
    }

    /// A shutdown triggered by the first SIGTERM or SIGINT, watched by a
    /// thread named `<daemon>-signal`. A second SIGTERM/SIGINT exits the
    /// process at once with status [`FORCED_EXIT_CODE`], for an operator
    /// who does not want to wait for the drain (nothing acknowledged is lost:
    /// checkpoints only ever cover acknowledged data).
    pub fn install(daemon: &str) -> io::Result<Self> {
        let shutdown = Shutdown::new();
        shutdown.install_signal_handler(daemon)?;
        Ok(shutdown)
    }

    /// Starts the `<daemon>-signal` thread described in [`Shutdown::install`].
    pub fn install_signal_handler(&self, daemon: &str) -> io::Result<()> {
        let mut signals = Signals::new([SIGTERM, SIGINT])?;
        let shutdown = self.clone();
        let daemon_name = daemon.to_string();
        thread::Builder::new()
            .name(format!("{daemon}-signal"))
            .spawn(move || {
                for signal in signals.forever() {
                    let name = if signal == SIGTERM { "SIGTERM" } else { "SIGINT" };
                    if shutdown.is_triggered() {
                        log::warn!("{daemon_name}: second {name}, exiting now without draining");
                        std::process::exit(FORCED_EXIT_CODE);
                    }
                    log::info!("{daemon_name}: {name} received, shutting down (send it again to exit at once)");
                    shutdown.trigger();
                }
            })?;
        Ok(())
    }

    /// Asks every thread to stop. Idempotent; runs the callbacks registered
    /// with [`Shutdown::on_trigger`] on the first call.
    pub fn trigger(&self) {
        if self.inner.triggered.swap(true, Ordering::SeqCst) {
            return;
        }
        drop(lock(&self.inner.sender).take());
        let callbacks = std::mem::take(&mut *lock(&self.inner.on_trigger));
        for callback in callbacks {
            callback();
        }
    }

    /// True once shutdown was triggered.
    pub fn is_triggered(&self) -> bool {
        self.inner.triggered.load(Ordering::SeqCst)
    }

    /// Waits up to `timeout` for shutdown; true if shutdown was triggered
    /// (returns at once when it already was).
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        match self.inner.receiver.recv_timeout(timeout) {
            Err(RecvTimeoutError::Disconnected) => true,
            // Nothing is ever sent: a timeout is the only other outcome.
            Ok(()) | Err(RecvTimeoutError::Timeout) => self.is_triggered(),
        }
    }

    /// Blocks until shutdown is triggered.
    pub fn wait(&self) {
        // `recv` only returns (with Err) once the sender is dropped.
        let _ = self.inner.receiver.recv();
    }

    /// A receiver that never yields a message and is disconnected on
    /// shutdown: in `select!`, its `recv` arm fires (with `Err`) once the
    /// daemon is stopping.
    pub fn receiver(&self) -> &Receiver<()> {
        &self.inner.receiver
    }

    /// Runs `callback` once when shutdown is triggered, on the triggering
    /// thread (at once if shutdown already happened). Used to unblock a
    /// thread sitting in a blocking call that no channel can interrupt, like
    /// the metrics server's `recv`. Keep it short and non-blocking.
    pub fn on_trigger(&self, callback: impl FnOnce() + Send + 'static) {
        let mut callbacks = lock(&self.inner.on_trigger);
        if self.is_triggered() {
            drop(callbacks);
            callback();
        } else {
            callbacks.push(Box::new(callback));
        }
    }
}

impl Default for Shutdown {
    fn default() -> Self {
        Shutdown::new()
    }
}

impl std::fmt::Debug for Shutdown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shutdown")
            .field("triggered", &self.is_triggered())
            .finish()
    }
}

/// Locks a mutex whose data stays consistent even if a holder panicked
/// (an `Option` taken or a `Vec` drained in one step).
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::time::Instant;

    #[test]
    fn wait_timeout_times_out_while_running() {
        let shutdown = Shutdown::new();
        let start = Instant::now();
        assert!(!shutdown.wait_timeout(Duration::from_millis(30)));
        assert!(start.elapsed() >= Duration::from_millis(30));
        assert!(!shutdown.is_triggered());
    }

    #[test]
    fn trigger_from_another_thread_wakes_a_waiter_promptly() {
        let shutdown = Shutdown::new();
        let waiter = {
            let shutdown = shutdown.clone();
            thread::spawn(move || {
                let start = Instant::now();
                let triggered = shutdown.wait_timeout(Duration::from_secs(30));
                (triggered, start.elapsed())
            })
        };
        shutdown.trigger();
        let (triggered, elapsed) = waiter.join().expect("waiter thread");
        assert!(triggered);
        assert!(elapsed < Duration::from_secs(10), "took {elapsed:?}");
    }

    #[test]
    fn receiver_is_disconnected_after_trigger() {
        let shutdown = Shutdown::new();
        let clone = shutdown.clone();
        assert_eq!(
            clone.receiver().try_recv(),
            Err(crossbeam_channel::TryRecvError::Empty)
        );
        shutdown.trigger();
        assert_eq!(
            clone.receiver().recv_timeout(Duration::from_secs(5)),
            Err(RecvTimeoutError::Disconnected)
        );
        assert!(clone.wait_timeout(Duration::ZERO));
        clone.wait();
    }

    #[test]
    fn callbacks_run_once_and_late_ones_at_once() {
        let shutdown = Shutdown::new();
        let runs = Arc::new(AtomicUsize::new(0));
        let counter = runs.clone();
        shutdown.on_trigger(move || {
            counter.fetch_add(1, Ordering::SeqCst);
        });
        shutdown.trigger();
        shutdown.trigger();
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        let counter = runs.clone();
        shutdown.on_trigger(move || {
            counter.fetch_add(1, Ordering::SeqCst);
        });
        assert_eq!(runs.load(Ordering::SeqCst), 2);
    }
}
