//! Paces watch requests that come back too fast (SPEC §4 "Failures").
//!
//! `kube`'s watcher re-watches at once when a watch stream ends cleanly,
//! which is right after a long watch, and a hot request loop when a server
//! or proxy ends every watch at once (some do, in quiet namespaces). This
//! layer sits in the kube client's stack: a watch request for a path whose
//! previous watch started less than [`QUICK`] ago waits first, 500 ms
//! doubling to 30 s while the quick restarts go on. Other requests pass
//! untouched.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http::Request;
use tower::{Layer, Service};

/// A watch restarting sooner than this after the previous one is "quick".
pub const QUICK: Duration = Duration::from_secs(5);
/// First wait before a quick restart.
const FIRST_WAIT: Duration = Duration::from_millis(500);
/// Longest wait.
const MAX_WAIT: Duration = Duration::from_secs(30);

/// The pacing policy: per watched path, when its last watch started and how
/// many quick restarts came in a row.
#[derive(Debug, Default)]
pub struct Pacer {
    paths: HashMap<String, (Instant, u32)>,
}

impl Pacer {
    /// A watch of `path` is about to start at `now`: how long it must wait.
    pub fn wait_before(&mut self, path: &str, now: Instant) -> Duration {
        let entry = self
            .paths
            .entry(path.to_string())
            .or_insert((now - QUICK * 2, 0));
        let quick = now.saturating_duration_since(entry.0) < QUICK;
        entry.1 = if quick { entry.1.saturating_add(1) } else { 0 };
        let wait = match entry.1 {
            0 => Duration::ZERO,
            n => FIRST_WAIT
                .saturating_mul(1 << (n - 1).min(10))
                .min(MAX_WAIT),
        };
        // The watch starts after the wait.
        entry.0 = now + wait;
        wait
    }
}

fn is_watch<B>(request: &Request<B>) -> bool {
    request
        .uri()
        .query()
        .is_some_and(|q| q.split('&').any(|p| p == "watch=true" || p == "watch=1"))
}

/// The tower layer: `ClientBuilder::with_layer(&WatchPacingLayer::default())`.
#[derive(Clone, Default)]
pub struct WatchPacingLayer {
    pacer: Arc<Mutex<Pacer>>,
}

impl<S> Layer<S> for WatchPacingLayer {
    type Service = WatchPacing<S>;

    fn layer(&self, inner: S) -> WatchPacing<S> {
        WatchPacing {
            inner,
            pacer: self.pacer.clone(),
        }
    }
}

/// The service of [`WatchPacingLayer`]. `S` must be `Clone` (wrap it in a
/// `tower::buffer::Buffer`): the request is sent after the wait.
#[derive(Clone)]
pub struct WatchPacing<S> {
    inner: S,
    pacer: Arc<Mutex<Pacer>>,
}

impl<S, B> Service<Request<B>> for WatchPacing<S>
where
    S: Service<Request<B>> + Clone + Send + 'static,
    S::Future: Send,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let wait = if is_watch(&request) {
            let mut pacer = self.pacer.lock().unwrap_or_else(|p| p.into_inner());
            pacer.wait_before(request.uri().path(), Instant::now())
        } else {
            Duration::ZERO
        };
        if wait.is_zero() {
            return Box::pin(self.inner.call(request));
        }
        log::debug!(
            "{}: watch restarted quickly, waiting {wait:?}",
            request.uri().path()
        );
        // The readied service goes into the future; a fresh clone stays.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            tokio::time::sleep(wait).await;
            inner.call(request).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quick_restarts_wait_longer_and_longer_and_slow_ones_not_at_all() {
        let mut p = Pacer::default();
        let t0 = Instant::now();
        assert_eq!(p.wait_before("/api/v1/events", t0), Duration::ZERO);
        // Ends at once, again and again.
        let mut t = t0;
        let mut waits = Vec::new();
        for _ in 0..8 {
            let w = p.wait_before("/api/v1/events", t);
            waits.push(w.as_millis());
            t += w;
        }
        assert_eq!(waits, [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000]);
        // Another path is not affected.
        assert_eq!(p.wait_before("/api/v1/pods", t), Duration::ZERO);
        // A watch that lasted longer than QUICK starts over.
        assert_eq!(
            p.wait_before("/api/v1/events", t + QUICK * 2),
            Duration::ZERO
        );
    }

    #[test]
    fn only_watch_requests_are_paced() {
        let watch: Request<()> = Request::get("/api/v1/pods?watch=true&resourceVersion=5")
            .body(())
            .expect("valid");
        let list: Request<()> = Request::get("/api/v1/pods?limit=500")
            .body(())
            .expect("valid");
        assert!(is_watch(&watch));
        assert!(!is_watch(&list));
    }
}
