//! The `/metrics`, `/healthz`, `/readyz` server over real HTTP.

mod support;

use std::time::Duration;

use shared::health::Health;
use shared::metrics::prometheus_client::metrics::counter::Counter;
use shared::metrics::prometheus_client::metrics::family::Family;
use shared::metrics::{MetricsServer, OPENMETRICS_CONTENT_TYPE, Registry};
use shared::shutdown::Shutdown;
use support::wait_until;

const DEADLINE: Duration = Duration::from_secs(30);

/// GET `path`: status, Content-Type and body.
fn get(server: &MetricsServer, path: &str) -> (u16, String, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .proxy(None)
        .timeout_global(Some(DEADLINE))
        .build()
        .into();
    let url = format!("http://{}{path}", server.local_addr());
    let mut response = agent
        .get(&url)
        .call()
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = response.body_mut().read_to_string().expect("body");
    (response.status().as_u16(), content_type, body)
}

fn start(daemon: &str, registry: Registry, health: &Health, shutdown: &Shutdown) -> MetricsServer {
    let addr = "127.0.0.1:0".parse().expect("address");
    MetricsServer::start(daemon, addr, registry, health.clone(), shutdown).expect("server starts")
}

#[test]
fn metrics_show_registered_counters() {
    let mut registry = Registry::default();
    let shipped = Counter::<u64>::default();
    registry.register(
        "lines_shipped",
        "Lines acknowledged by the intake",
        shipped.clone(),
    );
    let dropped = Family::<Vec<(String, String)>, Counter>::default();
    registry.register("lines_dropped", "Lines dropped, by reason", dropped.clone());
    shipped.inc_by(3);
    dropped
        .get_or_create(&vec![("reason".to_string(), "rejected".to_string())])
        .inc();
    let health = Health::new();
    let shutdown = Shutdown::new();
    let server = start("mtest", registry, &health, &shutdown);
    // Updates after the start are seen: the server reads the live metrics.
    shipped.inc();

    let (status, content_type, body) = get(&server, "/metrics");
    assert_eq!(status, 200);
    assert_eq!(content_type, OPENMETRICS_CONTENT_TYPE);
    assert!(body.contains("lines_shipped_total 4"), "{body}");
    assert!(
        body.contains("lines_dropped_total{reason=\"rejected\"} 1"),
        "{body}"
    );
    assert!(body.ends_with("# EOF\n"), "{body}");
    assert_eq!(get(&server, "/nothing").0, 404);
}

#[test]
fn healthz_follows_the_threads_and_readyz_the_ready_flag() {
    let health = Health::new();
    let shutdown = Shutdown::new();
    let server = start("htest", Registry::default(), &health, &shutdown);
    let alive = health.watch_thread("htest-worker");

    assert_eq!(get(&server, "/healthz").0, 200);
    let (status, _, body) = get(&server, "/readyz");
    assert_eq!((status, body.as_str()), (503, "not ready\n"));
    health.set_ready();
    assert_eq!(get(&server, "/readyz").0, 200);

    drop(alive);
    let (status, _, body) = get(&server, "/healthz");
    assert_eq!(status, 503);
    assert!(body.contains("htest-worker"), "{body}");
}

#[test]
fn the_server_runs_on_a_named_thread_and_stops_on_shutdown() {
    let health = Health::new();
    let shutdown = Shutdown::new();
    let server = start("stest", Registry::default(), &health, &shutdown);
    let names: Vec<String> = std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task")
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .map(|name| name.trim().to_string())
        .collect();
    assert!(names.iter().any(|n| n == "stest-metrics"), "{names:?}");
    assert_eq!(get(&server, "/healthz").0, 200);
    assert!(!server.is_finished());
    shutdown.trigger();
    wait_until(DEADLINE, "the metrics thread to end", || {
        server.is_finished()
    });
}

#[test]
fn a_busy_address_is_an_error() {
    let health = Health::new();
    let shutdown = Shutdown::new();
    let first = start("btest", Registry::default(), &health, &shutdown);
    let result = MetricsServer::start(
        "btest",
        first.local_addr(),
        Registry::default(),
        health,
        &shutdown,
    );
    assert!(result.is_err(), "binding the same port twice must fail");
}
