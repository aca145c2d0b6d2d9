//! The real logd binary as a child process: its environment, its stderr
//! (kept in a file and printed when a test fails), signals, its metrics
//! and health endpoints, and its memory use.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use testkit::intake::{Intake, STATIC_TOKEN};

use super::pods::Node;
use super::{SOON, wait_until};

/// The environment logd runs with; nothing else from the test's
/// environment reaches it.
#[derive(Clone, Debug)]
pub struct Env(BTreeMap<String, String>);

impl Env {
    /// logd reading `node` and shipping to `intake` with a static token;
    /// metrics on a port of its own; batches flushed after 100 ms.
    pub fn new(node: &Node, intake: &Intake) -> Env {
        Env::local(node)
            .set("HIK8S_URL", &intake.url())
            .set("HIK8S_TOKEN", STATIC_TOKEN)
    }

    /// logd reading `node` with no intake (the stdout sink); its log filter
    /// is `info`, or `LOGD_TEST_RUST_LOG` when set.
    pub fn local(node: &Node) -> Env {
        let mut vars = BTreeMap::new();
        for (k, v) in [
            (
                "LOGD_PODS_DIR",
                node.pods.to_str().expect("UTF-8 temp path"),
            ),
            (
                "LOGD_STATE_DIR",
                node.state.to_str().expect("UTF-8 temp path"),
            ),
            ("LOGD_METRICS_ADDR", "127.0.0.1:0"),
            ("LOGD_BATCH_LINGER_MS", "100"),
        ] {
            vars.insert(k.to_owned(), v.to_owned());
        }
        // `LOGD_TEST_RUST_LOG=debug cargo test ...` to see more of a failure.
        let filter = std::env::var("LOGD_TEST_RUST_LOG").unwrap_or_else(|_| "info".into());
        vars.insert("RUST_LOG".into(), filter);
        Env(vars)
    }

    pub fn set(mut self, name: &str, value: &str) -> Env {
        self.0.insert(name.to_owned(), value.to_owned());
        self
    }

    pub fn unset(mut self, name: &str) -> Env {
        self.0.remove(name);
        self
    }
}

/// Each start gets its own stderr file, so restarts keep every log.
static STARTS: AtomicUsize = AtomicUsize::new(0);

/// A running logd. Dropping it kills it (SIGKILL) and, when the test is
/// failing, prints its stderr.
pub struct Logd {
    child: Child,
    stderr_path: PathBuf,
    metrics_addr: Option<SocketAddr>,
    exit: Option<ExitStatus>,
}

impl Logd {
    /// Starts logd in `node`'s root dir (so no stray `.env` is read) and
    /// waits until it is ready (its first scan done, its watches in place).
    pub fn start(node: &Node, env: &Env) -> Logd {
        let mut logd = Logd::spawn(node, env);
        logd.wait_ready();
        logd
    }

    /// Starts logd without waiting for anything.
    pub fn spawn(node: &Node, env: &Env) -> Logd {
        let n = STARTS.fetch_add(1, Ordering::Relaxed);
        let stderr_path = node.root().join(format!("logd-{n}.stderr"));
        let stderr = std::fs::File::create(&stderr_path).expect("creating the stderr file");
        let child = Command::new(env!("CARGO_BIN_EXE_logd"))
            .env_clear()
            .envs(&env.0)
            .current_dir(node.root())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("starting logd");
        Logd {
            child,
            stderr_path,
            metrics_addr: None,
            exit: None,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything logd wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Waits for the metrics server's address in the log, then for
    /// `/readyz` to answer 200. With metrics off, waits for the start line.
    fn wait_ready(&mut self) {
        wait_until(SOON, "logd to start", || {
            self.assert_running();
            let stderr = self.stderr();
            if let Some(addr) = served_addr(&stderr) {
                self.metrics_addr = Some(addr);
                return true;
            }
            stderr.contains("inotify watches), sink:")
        });
        if self.metrics_addr.is_some() {
            wait_until(SOON, "logd's /readyz to answer 200", || {
                self.assert_running();
                self.get("/readyz").is_some_and(|(status, _)| status == 200)
            });
        }
    }

    fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().expect("waiting on logd") {
            self.exit = Some(status);
            panic!("logd exited early ({status}):\n{}", self.stderr());
        }
    }

    /// `GET path` on the metrics server: status and body; None when it
    /// cannot be reached.
    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        let addr = self.metrics_addr.expect("logd runs with metrics on");
        http_get(addr, path)
    }

    /// A scrape of `/metrics`.
    pub fn metrics(&self) -> Metrics {
        let (status, body) = self.get("/metrics").expect("logd's /metrics answers");
        assert_eq!(status, 200, "GET /metrics: {body}");
        Metrics::parse(&body)
    }

    /// Sends a signal by name (`TERM`, `KILL`, `STOP`, `CONT`) with kill(1).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args(["-s", name, &self.pid().to_string()])
            .status()
            .expect("running kill(1)");
        assert!(status.success(), "kill -s {name} failed");
    }

    /// SIGKILL, and reaps the process.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        self.exit = Some(self.child.wait().expect("reaping logd"));
    }

    /// Waits for the process to exit; panics after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        if let Some(status) = self.exit {
            return status;
        }
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("waiting on logd") {
                self.exit = Some(status);
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "logd did not exit within {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Resident memory (`VmRSS` of /proc/<pid>/status), in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("reading /proc/<pid>/status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/<pid>/status")
    }

    /// Runs `work` while sampling logd's resident memory every 100 ms;
    /// returns the peak seen, in KiB.
    pub fn peak_rss_during(&self, work: impl FnOnce()) -> u64 {
        let done = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|scope| {
            let sampler = scope.spawn(|| {
                let mut peak = 0;
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    peak = peak.max(self.rss_kib());
                    std::thread::sleep(Duration::from_millis(100));
                }
                peak
            });
            work();
            done.store(true, std::sync::atomic::Ordering::Relaxed);
            sampler.join().expect("sampler thread")
        })
    }

    /// Waits until logd has nothing in flight: every byte of the files it
    /// has open acknowledged, and no closed file waiting for an
    /// acknowledgement. After that (and with no new writes) the intake
    /// receives nothing more.
    pub fn wait_idle(&self, timeout: Duration) {
        wait_until(timeout, "logd to have nothing in flight", || {
            let m = self.metrics();
            m.get("logd_bytes_behind") == 0.0
                && m.get("logd_files_tracked") <= m.get("logd_files_open")
        });
    }
}

impl Drop for Logd {
    fn drop(&mut self) {
        if self.exit.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            // The temp dir goes away with the test: keep the whole log.
            let kept = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
                "{}-{}",
                std::thread::current()
                    .name()
                    .unwrap_or("test")
                    .replace("::", "-"),
                self.stderr_path
                    .file_name()
                    .expect("a file")
                    .to_string_lossy()
            ));
            let _ = std::fs::copy(&self.stderr_path, &kept);
            eprintln!(
                "---- logd stderr (whole log in {}) ----\n{}",
                kept.display(),
                tail(&self.stderr(), 200)
            );
        }
    }
}

/// Runs logd to its exit (it must exit within 30 s): status and stderr.
pub fn run_to_exit(node: &Node, env: &Env, args: &[&str]) -> (ExitStatus, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_logd"))
        .args(args)
        .env_clear()
        .envs(&env.0)
        .current_dir(node.root())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting logd");
    let deadline = Instant::now() + SOON;
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting on logd") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("logd {args:?} did not exit within {SOON:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut stdout = String::new();
    let mut stderr = String::new();
    let _ = child
        .stdout
        .take()
        .expect("piped")
        .read_to_string(&mut stdout);
    let _ = child
        .stderr
        .take()
        .expect("piped")
        .read_to_string(&mut stderr);
    (status, stdout, stderr)
}

/// One file's entry in logd's checkpoint file (`<state>/checkpoints.json`).
#[derive(Debug, Clone, serde::Deserialize)]
pub struct SavedCheckpoint {
    /// The file's path when the checkpoint was written.
    pub path: PathBuf,
    /// Every line before this byte was acknowledged.
    pub offset: u64,
    pub finished: bool,
}

/// The checkpoints logd saved in `node`'s state dir (empty when none).
pub fn saved_checkpoints(node: &Node) -> Vec<SavedCheckpoint> {
    #[derive(serde::Deserialize)]
    struct File {
        files: Vec<SavedCheckpoint>,
    }
    match std::fs::read(node.state.join("checkpoints.json")) {
        Ok(bytes) => {
            let file: File = serde_json::from_slice(&bytes).expect("checkpoints.json parses");
            file.files
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => panic!("reading checkpoints.json: {e}"),
    }
}

/// The saved checkpoint of the file at `path`.
pub fn saved_checkpoint(node: &Node, path: &std::path::Path) -> Option<SavedCheckpoint> {
    saved_checkpoints(node).into_iter().find(|c| c.path == path)
}

/// A scrape of logd's `/metrics`: series (name with labels) → value.
#[derive(Debug)]
pub struct Metrics(BTreeMap<String, f64>);

impl Metrics {
    fn parse(text: &str) -> Metrics {
        let series = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .filter_map(|l| {
                let (name, value) = l.rsplit_once(' ')?;
                Some((name.to_owned(), value.parse().ok()?))
            })
            .collect();
        Metrics(series)
    }

    /// True when the scrape has the series or family `name`.
    pub fn has(&self, name: &str) -> bool {
        self.0
            .keys()
            .any(|series| series == name || series.starts_with(&format!("{name}{{")))
    }

    /// The value of a series (`logd_bytes_behind`,
    /// `logd_lines_dropped_total{reason="rejected"}`), or of all the series
    /// of a family summed when `name` has no labels. 0 when absent.
    pub fn get(&self, name: &str) -> f64 {
        self.0
            .iter()
            .filter(|(series, _)| {
                *series == name
                    || (!name.contains('{')
                        && series
                            .strip_prefix(name)
                            .is_some_and(|l| l.starts_with('{')))
            })
            .map(|(_, v)| v)
            .sum()
    }
}

/// Reads `serving /metrics, /healthz and /readyz on <addr>` from the log.
fn served_addr(stderr: &str) -> Option<SocketAddr> {
    let line = stderr
        .lines()
        .find(|l| l.contains("serving /metrics, /healthz and /readyz on "))?;
    line.rsplit(' ').next()?.parse().ok()
}

/// A plain HTTP/1.0 GET: status and body, or None when it fails.
fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split(' ').nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n")?.1.to_owned();
    Some((status, body))
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
