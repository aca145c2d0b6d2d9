//! A node's pods tree in a temp dir, written the way the container runtime
//! and kubelet write it: CRI lines appended to `<n>.log`; rotation renames
//! `<n>.log` to `<n>.log.<YYYYMMDD-HHMMSS>` and starts a new `<n>.log`;
//! older rotated files are gzipped (through a `.tmp` file, as kubelet does)
//! and the oldest deleted.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use flate2::Compression;
use flate2::write::GzEncoder;

/// The timestamp every test line carries (UTC, as the intake wants it).
pub const TIMESTAMP: &str = "2024-11-18T08:59:45.123456789Z";

/// `<TIMESTAMP> stdout F <message>\n`: one complete CRI line.
pub fn cri_line(message: &str) -> String {
    format!("{TIMESTAMP} stdout F {message}\n")
}

/// A Docker json-file record carrying `message` (what cri-dockerd's
/// symlinked logs hold), with its newline.
pub fn docker_json_line(message: &str) -> String {
    let log = serde_json::to_string(&format!("{message}\n")).expect("a string serializes");
    format!("{{\"log\":{log},\"stream\":\"stdout\",\"time\":\"{TIMESTAMP}\"}}\n")
}

/// A uid of the usual form, made up from `n`.
pub fn uid(n: u32) -> String {
    format!("{n:08x}-0000-4000-8000-00000000{n:04x}")
}

/// A node: `<root>/<pods dir>` and `<root>/state`, removed on drop.
pub struct Node {
    root: tempfile::TempDir,
    /// Where logd reads the pods' logs (`LOGD_PODS_DIR`).
    pub pods: PathBuf,
    /// logd's state dir (`LOGD_STATE_DIR`).
    pub state: PathBuf,
}

impl Node {
    /// A node whose pods dir is `<root>/pods`.
    pub fn new() -> Node {
        Node::with_pods_dir("pods")
    }

    /// A node whose pods dir is `<root>/<relative>` (e.g.
    /// `host/var/log/pods`, as a DaemonSet mounts it).
    pub fn with_pods_dir(relative: &str) -> Node {
        let root = tempfile::tempdir().expect("a temp dir");
        let pods = root.path().join(relative);
        let state = root.path().join("state");
        fs::create_dir_all(&pods).expect("creating the pods dir");
        Node { root, pods, state }
    }

    /// The temp dir everything lives in (logd runs there, and writes its
    /// stderr there).
    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// `<pods>/<ns>_<pod>_<uid>`.
    pub fn pod_dir(&self, ns: &str, pod: &str, uid: &str) -> PathBuf {
        self.pods.join(format!("{ns}_{pod}_{uid}"))
    }

    /// Creates the container's log dir and an empty `0.log`, as the runtime
    /// does when the container starts.
    pub fn container(&self, ns: &str, pod: &str, uid: &str, container: &str) -> ContainerLog {
        let dir = self.pod_dir(ns, pod, uid).join(container);
        let intake_path = format!("/var/log/pods/{ns}_{pod}_{uid}/{container}");
        ContainerLog::create(dir, intake_path)
    }
}

/// One container's log dir, written like the runtime and kubelet do.
pub struct ContainerLog {
    pub dir: PathBuf,
    /// The `metadata.path` logd must send: `/var/log/pods/<ns>_<pod>_<uid>/<container>`.
    pub intake_path: String,
    restart: u32,
    current: File,
    /// Rotations so far: makes each rotated file's stamp unique and later
    /// than the one before, however fast the test rotates.
    rotations: u32,
    /// Rotated files (plain or `.gz`), oldest first.
    rotated: VecDeque<PathBuf>,
}

impl ContainerLog {
    fn create(dir: PathBuf, intake_path: String) -> ContainerLog {
        fs::create_dir_all(&dir).expect("creating a container dir");
        let current = open_append(&dir.join("0.log"));
        ContainerLog {
            dir,
            intake_path,
            restart: 0,
            current,
            rotations: 0,
            rotated: VecDeque::new(),
        }
    }

    /// The file the runtime writes to now: `<dir>/<restart>.log`.
    pub fn current_path(&self) -> PathBuf {
        self.dir.join(format!("{}.log", self.restart))
    }

    /// Rotated files still on disk (plain or `.gz`), oldest first.
    pub fn rotated_files(&self) -> Vec<PathBuf> {
        self.rotated.iter().cloned().collect()
    }

    /// The current file's size: where the next line starts.
    pub fn len(&self) -> u64 {
        self.current.metadata().expect("stat of a log file").len()
    }

    /// Appends `bytes` in exactly one write(2).
    pub fn write(&mut self, bytes: &[u8]) {
        let written = self.current.write(bytes).expect("writing a log file");
        assert_eq!(written, bytes.len(), "a short write to a log file");
    }

    /// Appends one CRI line carrying `message`.
    pub fn line(&mut self, message: &str) {
        self.write(cri_line(message).as_bytes());
    }

    /// Appends a CRI line for each message, in one write(2).
    pub fn lines<S: AsRef<str>>(&mut self, messages: &[S]) {
        let text: String = messages.iter().map(|m| cri_line(m.as_ref())).collect();
        self.write(text.as_bytes());
    }

    /// Kubelet's rotation: renames `<n>.log` to `<n>.log.<stamp>` and has the
    /// runtime write to a new `<n>.log`. Returns the rotated file.
    pub fn rotate(&mut self) -> PathBuf {
        let rotated = self.rename_current();
        self.reopen();
        rotated
    }

    /// The first half of a rotation: kubelet renames `<n>.log` away; the
    /// runtime still writes to it until it reopens ([`Self::reopen`]).
    pub fn rename_current(&mut self) -> PathBuf {
        self.rotations += 1;
        let rotated = self
            .dir
            .join(format!("{}.log.{}", self.restart, stamp(self.rotations)));
        fs::rename(self.current_path(), &rotated).expect("renaming the log file");
        self.rotated.push_back(rotated.clone());
        rotated
    }

    /// The second half of a rotation: the runtime opens a new `<n>.log`.
    pub fn reopen(&mut self) {
        self.current = open_append(&self.current_path());
    }

    /// Kubelet's compression: every rotated file but the newest is gzipped
    /// into `<name>.tmp`, renamed to `<name>.gz`, and the original removed.
    pub fn compress_older(&mut self) {
        let newest = self.rotated.len().saturating_sub(1);
        for i in 0..newest {
            let plain = self.rotated[i].clone();
            if plain.extension().is_some_and(|e| e == "gz") {
                continue;
            }
            let gz = gzip(&plain).expect("gzipping a rotated log");
            self.rotated[i] = gz;
        }
    }

    /// Deletes the oldest rotated files until at most `keep` are left.
    /// Returns the deleted paths.
    pub fn delete_oldest(&mut self, keep: usize) -> Vec<PathBuf> {
        let mut deleted = Vec::new();
        while self.rotated.len() > keep {
            let oldest = self.rotated.pop_front().expect("more than keep >= 0");
            fs::remove_file(&oldest).expect("deleting a rotated log");
            deleted.push(oldest);
        }
        deleted
    }

    /// The container restarted: the runtime writes to `<n+1>.log` now.
    pub fn restart(&mut self) {
        self.restart += 1;
        self.current = open_append(&self.current_path());
    }
}

fn open_append(path: &Path) -> File {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("opening {}: {e}", path.display()))
}

/// A rotation stamp (`YYYYMMDD-HHMMSS`), `n` seconds after 08:00:00.
fn stamp(n: u32) -> String {
    let (h, m, s) = (8 + n / 3600, n / 60 % 60, n % 60);
    format!("20241118-{h:02}{m:02}{s:02}")
}

/// Gzips `plain` as kubelet does; returns the `.gz` path.
fn gzip(plain: &Path) -> io::Result<PathBuf> {
    let mut name = plain.as_os_str().to_owned();
    name.push(".tmp");
    let tmp = PathBuf::from(name);
    let mut name = plain.as_os_str().to_owned();
    name.push(".gz");
    let gz = PathBuf::from(name);

    let mut encoder = GzEncoder::new(File::create(&tmp)?, Compression::default());
    io::copy(&mut File::open(plain)?, &mut encoder)?;
    encoder.finish()?.sync_all()?;
    fs::rename(&tmp, &gz)?;
    fs::remove_file(plain)?;
    Ok(gz)
}
