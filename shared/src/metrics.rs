//! Metrics and the `/metrics`, `/healthz`, `/readyz` HTTP server.
//!
//! A daemon builds a [`Registry`] at start (counters, gauges, families with
//! labels, from the re-exported `prometheus_client`), keeps clones of its
//! metrics (they are `Arc`s inside) in the threads that update them, and
//! hands the registry to [`MetricsServer::start`].
//!
//! The server runs on a thread named `<daemon>-metrics`, blocked in
//! `recv()` (no polling), and stops on shutdown or when dropped. Its
//! library (tiny_http) starts an accept thread and a small pool of
//! connection threads; they are started from `<daemon>-metrics` and so carry
//! that name in `top -H` (Linux threads inherit their creator's name).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::{self, JoinHandle};

pub use prometheus_client;
pub use prometheus_client::registry::Registry;

use crate::health::Health;
use crate::shutdown::Shutdown;

/// The Content-Type of `/metrics`.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The registry in the OpenMetrics text format.
pub fn encode(registry: &Registry) -> String {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry)
        .expect("writing to a String cannot fail");
    text
}

/// A running `/metrics`, `/healthz`, `/readyz` server.
pub struct MetricsServer {
    local_addr: SocketAddr,
    server: Arc<tiny_http::Server>,
    thread: Option<JoinHandle<()>>,
}

impl MetricsServer {
    /// Binds `addr` and serves on a thread named `<daemon>-metrics`:
    /// - `GET /metrics`: `registry` (200, OpenMetrics text);
    /// - `GET /healthz`: 200 `ok` while every thread watched by `health`
    ///   runs, else 503 naming the dead ones;
    /// - `GET /readyz`: 200 once `health.set_ready()` was called, else 503;
    /// - anything else: 404.
    ///
    /// Fails if the address cannot be bound. Stops when `shutdown` is
    /// triggered, or on [`MetricsServer::stop`] / drop.
    pub fn start(
        daemon: &str,
        addr: SocketAddr,
        registry: Registry,
        health: Health,
        shutdown: &Shutdown,
    ) -> io::Result<MetricsServer> {
        let (bound_tx, bound_rx) = crossbeam_channel::bounded(1);
        let thread = thread::Builder::new()
            .name(format!("{daemon}-metrics"))
            .spawn(move || {
                // Bound here so tiny_http's own threads inherit this thread's name.
                let server = match tiny_http::Server::http(addr) {
                    Ok(server) => Arc::new(server),
                    Err(e) => {
                        let _ =
                            bound_tx.send(Err(io::Error::other(format!("binding {addr}: {e}"))));
                        return;
                    }
                };
                let _ = bound_tx.send(Ok(server.clone()));
                serve(&server, &registry, &health);
            })?;
        let server = bound_rx
            .recv()
            .map_err(|_| io::Error::other("the metrics thread ended before binding"))??;
        let local_addr = server
            .server_addr()
            .to_ip()
            .ok_or_else(|| io::Error::other("the metrics server is not on an IP address"))?;
        let unblock = server.clone();
        shutdown.on_trigger(move || unblock.unblock());
        log::info!("serving /metrics, /healthz and /readyz on {local_addr}");
        Ok(MetricsServer {
            local_addr,
            server,
            thread: Some(thread),
        })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// True once the server thread ended (after shutdown or a failure of
    /// the listener).
    pub fn is_finished(&self) -> bool {
        self.thread
            .as_ref()
            .is_none_or(|thread| thread.is_finished())
    }

    /// Stops serving and waits for the server thread.
    pub fn stop(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        if let Some(thread) = self.thread.take() {
            self.server.unblock();
            let _ = thread.join();
        }
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

/// Answers requests until unblocked.
fn serve(server: &tiny_http::Server, registry: &Registry, health: &Health) {
    loop {
        let request = match server.recv() {
            Ok(request) => request,
            // Either `unblock()` (shutdown or stop), or the accept thread
            // failed and ended: nothing more can come either way.
            Err(e) => {
                log::debug!("metrics server stops: {e}");
                return;
            }
        };
        let (status, content_type, body) =
            answer(request.method(), request.url(), registry, health);
        let header = tiny_http::Header::from_bytes("Content-Type", content_type)
            .expect("static header is valid");
        let response = tiny_http::Response::from_string(body)
            .with_status_code(status)
            .with_header(header);
        if let Err(e) = request.respond(response) {
            log::debug!("metrics server: answering: {e}");
        }
    }
}

fn answer(
    method: &tiny_http::Method,
    url: &str,
    registry: &Registry,
    health: &Health,
) -> (u16, &'static str, String) {
    const TEXT: &str = "text/plain; charset=utf-8";
    if !matches!(method, tiny_http::Method::Get | tiny_http::Method::Head) {
        return (405, TEXT, "only GET\n".into());
    }
    let path = url.split('?').next().unwrap_or(url);
    match path {
        "/metrics" => (200, OPENMETRICS_CONTENT_TYPE, encode(registry)),
        "/healthz" if health.is_healthy() => (200, TEXT, "ok\n".into()),
        "/healthz" => (
            503,
            TEXT,
            format!("threads ended: {}\n", health.dead_threads().join(", ")),
        ),
        "/readyz" if health.is_ready() => (200, TEXT, "ready\n".into()),
        "/readyz" => (503, TEXT, "not ready\n".into()),
        _ => (404, TEXT, "not found\n".into()),
    }
}
