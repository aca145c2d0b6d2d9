//! Test support for the tailing core tests: a pods dir in a temp dir, log
//! line builders, and helpers that drive a `Tailer` to quiescence.
#![allow(dead_code)] // each test binary uses a different part

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use logd::{CheckpointStore, Chunk, Tailer, TailerConfig};

/// A node's log dirs: `pods` (the pods dir) and `state` (logd's state dir).
pub struct Node {
    _root: tempfile::TempDir,
    pub pods: PathBuf,
    pub state: PathBuf,
}

impl Node {
    pub fn new() -> Self {
        let root = tempfile::tempdir().expect("temp dir");
        let pods = root.path().join("pods");
        let state = root.path().join("state");
        fs::create_dir_all(&pods).unwrap();
        fs::create_dir_all(&state).unwrap();
        Self {
            _root: root,
            pods,
            state,
        }
    }

    /// Creates `<pods>/<ns>_<pod>_<uid>/<container>` and returns it.
    pub fn container(&self, ns: &str, pod: &str, uid: &str, container: &str) -> PathBuf {
        let dir = self.pods.join(format!("{ns}_{pod}_{uid}")).join(container);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    pub fn config(&self) -> TailerConfig {
        TailerConfig::new(&self.pods)
    }

    /// A tailer over this node with the saved checkpoints (a start or restart), after its first scan.
    pub fn start(&self, cfg: TailerConfig) -> Tailer {
        let mut t = Tailer::new(cfg, CheckpointStore::load(&self.state));
        t.scan();
        t
    }

    pub fn save(&self, t: &Tailer) {
        t.checkpoint().save(&self.state).expect("save checkpoints");
    }
}

/// Appends `text` to `path` (creating it).
pub fn append(path: &Path, text: &str) {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
}

/// A CRI line with a canonical UTC timestamp made from `n` (its second and nanos).
pub fn cri(n: u64, stream: &str, tag: char, content: &str) -> String {
    format!("{} {stream} {tag} {content}\n", ts(n))
}

/// `2024-11-18T08:MM:SS.nnnnnnnnnZ` unique per `n` (up to 3600 * 10^9).
pub fn ts(n: u64) -> String {
    format!("2024-11-18T08:{:02}:{:02}.{:09}Z", n / 60 % 60, n % 60, n)
}

/// Reads until the tailer has nothing more, returning every chunk (not acknowledged).
pub fn read_all(t: &mut Tailer, max_bytes: usize) -> Vec<Chunk> {
    let mut all = Vec::new();
    for _ in 0..100_000 {
        let chunks = t.read(max_bytes);
        if chunks.is_empty() {
            return all;
        }
        all.extend(chunks);
    }
    panic!("the tailer kept returning data");
}

/// Reads everything and acknowledges it; returns the lines.
pub fn drain(t: &mut Tailer) -> Vec<String> {
    let chunks = read_all(t, 1 << 20);
    for c in &chunks {
        t.ack(c.ack);
    }
    lines(&chunks)
}

/// The lines of chunks, without their newlines.
pub fn lines(chunks: &[Chunk]) -> Vec<String> {
    chunks
        .iter()
        .flat_map(|c| {
            let text = std::str::from_utf8(&c.lines).expect("output is UTF-8");
            assert!(text.ends_with('\n'), "chunks end with a newline");
            assert_eq!(text.matches('\n').count(), c.line_count);
            text.lines().map(str::to_owned).collect::<Vec<_>>()
        })
        .collect()
}

/// The content of output lines (what follows `<stream> F `).
pub fn contents(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .map(|l| l.splitn(4, ' ').nth(3).unwrap_or("").to_owned())
        .collect()
}
