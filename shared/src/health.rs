//! Liveness and readiness, as `/healthz` and `/readyz` report them.
//!
//! Each long-running thread holds a [`ThreadAlive`] guard from
//! [`Health::watch_thread`]; when the thread ends (returns or panics) the
//! guard drops and the daemon is unhealthy. The daemon calls
//! [`Health::set_ready`] once its first scan (logd) or initial lists
//! (watchd) are done.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// Shared liveness and readiness state. Clones share one state.
#[derive(Clone, Default, Debug)]
pub struct Health {
    inner: Arc<Inner>,
}

#[derive(Default, Debug)]
struct Inner {
    ready: AtomicBool,
    /// Watched threads: name and whether it still runs.
    threads: Mutex<Vec<(String, bool)>>,
}

impl Health {
    pub fn new() -> Self {
        Health::default()
    }

    /// Starts watching a thread: call it on the thread itself and keep the
    /// guard for the thread's whole life. Every thread of the daemon that
    /// must run for it to work should hold one.
    pub fn watch_thread(&self, name: impl Into<String>) -> ThreadAlive {
        let mut threads = self.threads();
        threads.push((name.into(), true));
        ThreadAlive {
            health: self.clone(),
            index: threads.len() - 1,
        }
    }

    /// Marks the daemon ready (for good).
    pub fn set_ready(&self) {
        self.inner.ready.store(true, Ordering::SeqCst);
    }

    pub fn is_ready(&self) -> bool {
        self.inner.ready.load(Ordering::SeqCst)
    }

    /// The names of watched threads that ended.
    pub fn dead_threads(&self) -> Vec<String> {
        self.threads()
            .iter()
            .filter(|(_, alive)| !alive)
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// True while every watched thread runs.
    pub fn is_healthy(&self) -> bool {
        self.threads().iter().all(|(_, alive)| *alive)
    }

    fn threads(&self) -> MutexGuard<'_, Vec<(String, bool)>> {
        // Entries are only pushed or flipped: a panic cannot leave one half-written.
        self.inner
            .threads
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Held by a running thread; dropping it (the thread ended, normally or by
/// a panic) makes `/healthz` answer 503.
#[derive(Debug)]
pub struct ThreadAlive {
    health: Health,
    index: usize,
}

impl Drop for ThreadAlive {
    fn drop(&mut self) {
        let name = {
            let mut threads = self.health.threads();
            threads[self.index].1 = false;
            threads[self.index].0.clone()
        };
        if std::thread::panicking() {
            log::error!("thread {name} panicked: the daemon is now unhealthy");
        } else {
            log::debug!("thread {name} ended");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_that_ends_makes_the_daemon_unhealthy() {
        let health = Health::new();
        let keep = health.watch_thread("worker-a");
        let worker = {
            let health = health.clone();
            std::thread::spawn(move || {
                let _alive = health.watch_thread("worker-b");
            })
        };
        worker.join().expect("worker thread");
        assert!(!health.is_healthy());
        assert_eq!(health.dead_threads(), ["worker-b"]);
        drop(keep);
        assert_eq!(health.dead_threads(), ["worker-a", "worker-b"]);
    }

    #[test]
    fn ready_once_set() {
        let health = Health::new();
        assert!(!health.is_ready());
        assert!(health.is_healthy());
        health.clone().set_ready();
        assert!(health.is_ready());
    }
}
