//! Running the real watchd binary against the test API server and the test
//! intake server, and waiting on what it does.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use testkit::apiserver::ApiServer;
use testkit::intake::{Intake, STATIC_TOKEN};

/// Generous: tests run in parallel on a loaded 2-core machine.
pub const DEADLINE: Duration = Duration::from_secs(30);

pub use testkit::fixtures_dir;

/// The `json` object of the first fixture whose file name contains `name_part`.
pub fn fixture(name_part: &str) -> Value {
    let dir = fixtures_dir();
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("fixtures")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.to_string_lossy().contains(name_part))
        .collect();
    files.sort();
    let record: Value =
        serde_json::from_slice(&std::fs::read(&files[0]).expect("readable")).expect("JSON");
    record["json"].clone()
}

/// `template` renamed to `name`, without what the API server assigns.
pub fn copy(template: &Value, name: &str) -> Value {
    let mut o = template.clone();
    let meta = o["metadata"].as_object_mut().expect("metadata");
    meta.insert("name".into(), name.into());
    meta.remove("uid");
    meta.remove("resourceVersion");
    meta.remove("generateName");
    o
}

/// Creates the CRD of cert-manager's Certificates (served at `v1`), the
/// custom resources of the benchmark's shape.
pub fn create_certificate_crd(api: &ApiServer) {
    api.create(serde_json::json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "certificates.cert-manager.io"},
        "spec": {"group": "cert-manager.io", "scope": "Namespaced",
                 "names": {"plural": "certificates", "kind": "Certificate"},
                 "versions": [{"name": "v1", "served": true, "storage": true}]}
    }));
}

/// Creates copies of `template` named `<prefix>-<i>` for each `i` of
/// `indexes`; returns the bytes of the objects as the API server stores them.
pub fn create_copies(
    api: &ApiServer,
    template: &Value,
    prefix: &str,
    indexes: std::ops::Range<usize>,
) -> usize {
    indexes
        .map(|i| {
            let stored = api.create(copy(template, &format!("{prefix}-{i}")));
            serde_json::to_vec(&stored).expect("serializable").len()
        })
        .sum()
}

/// A running watchd process; killed when dropped.
pub struct Watchd {
    child: Child,
    log: Arc<Mutex<String>>,
    _dir: tempfile::TempDir,
}

impl Watchd {
    /// Starts watchd on `api`, shipping to `intake`, with metrics on a free
    /// port and a short linger; `env` adds or overrides variables.
    pub fn start(api: &ApiServer, intake: &Intake, env: &[(&str, &str)]) -> Watchd {
        let mut base = vec![
            ("HIK8S_URL", intake.url()),
            ("HIK8S_TOKEN", STATIC_TOKEN.to_string()),
        ];
        base.extend(env.iter().map(|(k, v)| (*k, v.to_string())));
        Watchd::start_raw(Some(api), &base)
    }

    /// Starts watchd with only `env` (plus KUBECONFIG for `api`, a HOME of
    /// its own, metrics on a free port, linger 100 ms).
    pub fn start_raw(api: Option<&ApiServer>, env: &[(&str, String)]) -> Watchd {
        let dir = tempfile::tempdir().expect("a temp dir");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_watchd"));
        cmd.current_dir(dir.path())
            .env_clear()
            .env("HOME", dir.path())
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("RUST_LOG", "info")
            .env("WATCHD_METRICS_ADDR", "127.0.0.1:0")
            .env("WATCHD_BATCH_LINGER_MS", "100")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(api) = api {
            let kubeconfig = dir.path().join("kubeconfig");
            api.write_kubeconfig(&kubeconfig);
            cmd.env("KUBECONFIG", &kubeconfig);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("watchd starts");
        let log = Arc::new(Mutex::new(String::new()));
        for stream in [
            Box::new(child.stderr.take().expect("stderr")) as Box<dyn Read + Send>,
            Box::new(child.stdout.take().expect("stdout")),
        ] {
            let log = log.clone();
            thread::spawn(move || {
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { break };
                    let mut log = log.lock().expect("log lock");
                    log.push_str(&line);
                    log.push('\n');
                }
            });
        }
        Watchd {
            child,
            log,
            _dir: dir,
        }
    }

    /// Everything watchd printed so far (stderr and stdout).
    pub fn log(&self) -> String {
        self.log.lock().expect("log lock").clone()
    }

    /// Waits until the output contains `text`; panics with the output
    /// after `timeout`.
    pub fn wait_log(&self, text: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.log().contains(text) {
            assert!(
                Instant::now() < deadline,
                "watchd never printed {text:?}; output:\n{}",
                self.log()
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// The metrics server's address, from the log.
    pub fn metrics_addr(&self) -> SocketAddr {
        let marker = "serving /metrics, /healthz and /readyz on ";
        self.wait_log(marker, DEADLINE);
        let log = self.log();
        let start = log.find(marker).expect("seen") + marker.len();
        let addr = log[start..].lines().next().expect("a line").trim();
        addr.parse().expect("an address")
    }

    /// `GET path` on the metrics server: (status, body).
    pub fn get(&self, path: &str) -> (u16, String) {
        http_get(self.metrics_addr(), path)
    }

    /// Waits until `/readyz` answers 200.
    pub fn wait_ready(&self) {
        let deadline = Instant::now() + DEADLINE;
        while self.get("/readyz").0 != 200 {
            assert!(
                Instant::now() < deadline,
                "never ready; output:\n{}",
                self.log()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn sigterm(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
    }

    /// Waits for the process to exit; panics after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                // Let the readers catch the last lines.
                thread::sleep(Duration::from_millis(50));
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "watchd did not exit; output:\n{}",
                self.log()
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Peak resident memory so far (VmHWM), in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        self.status_kib("VmHWM:")
    }

    /// Resident memory now (VmRSS), in KiB.
    pub fn rss_kib(&self) -> u64 {
        self.status_kib("VmRSS:")
    }

    fn status_kib(&self, field: &str) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("status");
        status
            .lines()
            .find(|l| l.starts_with(field))
            .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or_else(|| panic!("{field} in /proc/PID/status"))
    }
}

impl Drop for Watchd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A plain HTTP/1.0 GET: (status, body).
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(5)) else {
        return (0, String::new());
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let _ = write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// (event_type, kind, namespace/name) of a record.
pub fn summary(record: &Value) -> (String, String, String) {
    let s = |p: &str| {
        record
            .pointer(p)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    (
        s("/event_type"),
        s("/json/kind"),
        format!(
            "{}/{}",
            s("/json/metadata/namespace"),
            s("/json/metadata/name")
        ),
    )
}

/// Records of `route` with this event type and object name.
pub fn count(intake: &Intake, route: &str, event_type: &str, name: &str) -> usize {
    intake
        .records(route)
        .iter()
        .filter(|r| r["event_type"] == event_type && r["json"]["metadata"]["name"] == name)
        .count()
}

/// Waits until `cond` holds on the intake; panics with `what` and the
/// watchd output after the deadline.
pub fn wait_intake(
    intake: &Intake,
    watchd: &Watchd,
    what: &str,
    cond: impl FnMut(&Intake) -> bool,
) {
    assert!(
        intake.wait_for(DEADLINE, cond),
        "timed out waiting for {what}; watchd output:\n{}",
        watchd.log()
    );
}
