//! The tailing core: owns the files being read, the checkpoint store and the
//! acknowledgement tracker. It has no threads and no I/O besides the log
//! files: the daemon tells it what changed ([`Tailer::notify`],
//! [`Tailer::scan`]), pulls lines ([`Tailer::read`]), reports what the intake
//! acknowledged ([`Tailer::ack`]) and saves [`Tailer::checkpoint`].
//!
//! Rules it implements (SPEC §3):
//! - A file is found by its fingerprint: a renamed or compressed file whose
//!   fingerprint has a checkpoint is read on from there; a finished one is
//!   never read again; one being read under another name (the `.gz` of an
//!   open rotated file) is left alone.
//! - At the very first start (no store at all) only the current `<n>.log`
//!   files are read, from their beginning or end per [`ReadFrom`]; rotated
//!   files are recorded as finished. Afterwards every file without a
//!   checkpoint is read from its beginning.
//! - A file renamed away by rotation is read to its end, then released once
//!   the runtime writes to a new `<n>.log`; a deleted file is read to its end
//!   through the open descriptor, within the caps for deleted files.
//! - A file smaller than what was read of it was truncated: it is read again
//!   from the start, as a new file.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use memchr::memchr;

use crate::acks::{AckToken, AckTracker, Commit, FileKey};
use crate::checkpoint::{Checkpoint, CheckpointStore, Checkpoints};
use crate::fingerprint::{self, FileId, Fingerprint};
use crate::parse::LineParser;
use crate::pod_path::{PodLogPath, Rotation, parse_pod_dir_name};
use crate::reader::{self, FileReader, Fill};
use crate::timestamp::Stamp;

/// Bytes read from a file per read call at most.
const READ_SIZE: usize = 256 * 1024;

/// Where files with no checkpoint are read from at the very first start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReadFrom {
    #[default]
    Beginning,
    /// From the end of the last complete line.
    End,
}

/// How the core reads the pods dir.
#[derive(Debug, Clone)]
pub struct TailerConfig {
    /// The pods dir as mounted (e.g. `/host/var/log/pods`); the intake is
    /// always told `/var/log/pods/...`.
    pub pods_dir: PathBuf,
    pub read_from: ReadFrom,
    /// Content (after `<stream> F `) of an output line is at most this many
    /// bytes, the ` [truncated]` suffix included. The hik8s intake caps what
    /// follows the `Z` of the timestamp at 30,720 bytes, so with that sink
    /// pass `30_720 - " stdout F ".len()` (= 30,710). At least 64.
    pub max_line_bytes: usize,
    /// Namespaces whose pods are never read.
    pub exclude_namespaces: Vec<String>,
    /// A pod uid never read (logd's own pod).
    pub exclude_pod_uid: Option<String>,
    /// Deleted files not read to their end are kept open up to this many…
    pub max_deleted_open: usize,
    /// …and this many bytes in total; beyond, the oldest are let go and
    /// counted as lost to rotation.
    pub max_deleted_bytes: u64,
}

impl TailerConfig {
    /// True when the pod's logs are never read (excluded namespace or uid).
    pub fn excludes(&self, namespace: &str, pod_uid: &str) -> bool {
        self.exclude_namespaces.iter().any(|n| n == namespace)
            || self.exclude_pod_uid.as_deref() == Some(pod_uid)
    }

    /// [`Self::excludes`] for a pod dir name `<ns>_<pod>_<uid>`; a name of
    /// another form is not a pod's and is excluded too.
    pub fn excludes_pod_dir(&self, pod_dir: &str) -> bool {
        parse_pod_dir_name(pod_dir).is_none_or(|(ns, _, uid)| self.excludes(ns, uid))
    }

    /// Defaults: from the beginning, 1 MiB lines, nothing excluded, 64
    /// deleted files or 1 GiB kept open.
    pub fn new(pods_dir: impl Into<PathBuf>) -> Self {
        Self {
            pods_dir: pods_dir.into(),
            read_from: ReadFrom::Beginning,
            max_line_bytes: 1024 * 1024,
            exclude_namespaces: Vec::new(),
            exclude_pod_uid: None,
            max_deleted_open: 64,
            max_deleted_bytes: 1024 * 1024 * 1024,
        }
    }
}

/// Who wrote a file, as the intake and the sinks name it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LogMeta {
    pub namespace: String,
    pub pod: String,
    pub pod_uid: String,
    pub container: String,
    /// The name kubelet gives the current file, e.g. `0.log` (also for rotated files).
    pub file: String,
    /// `/var/log/pods/<ns>_<pod>_<uid>/<container>`, whatever the real pods dir.
    pub intake_path: String,
}

impl LogMeta {
    pub fn of(log: &PodLogPath) -> Self {
        Self {
            namespace: log.namespace.clone(),
            pod: log.pod.clone(),
            pod_uid: log.pod_uid.clone(),
            container: log.container.clone(),
            file: log.base_file_name(),
            intake_path: log.intake_path(),
        }
    }
}

/// Lines read from one file in one [`Tailer::read`] call.
#[derive(Debug)]
pub struct Chunk {
    /// The file read (stable while it is read; batch per file with it).
    pub file: FileKey,
    pub meta: Arc<LogMeta>,
    /// `\n`-terminated CRI `F` lines with UTC `Z` timestamps, valid UTF-8, in file order.
    pub lines: Vec<u8>,
    pub line_count: usize,
    /// Hand back to [`Tailer::ack`] once the intake acknowledged (or dropped) these lines.
    pub ack: AckToken,
    /// The read stopped at its budget, not at the end of what is written:
    /// most likely the file has more to read right now (a backlog).
    pub more: bool,
}

/// Counters and gauges for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Files open for reading.
    pub files_open: usize,
    /// Files with lines not acknowledged yet, open or not.
    pub files_tracked: usize,
    /// Bytes in plain files past their committed offsets (written, not acknowledged).
    pub bytes_behind: u64,
    pub bytes_read: u64,
    pub lines_read: u64,
    pub truncations: u64,
    /// Deleted files let go before their end (beyond the caps), and their unread bytes.
    pub lost_files: u64,
    pub lost_bytes: u64,
    /// Chunks handed out and not acknowledged yet.
    pub unacked_chunks: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Release {
    /// Renamed away: the runtime writes to a new file now.
    Rotated,
    /// Gone from the container dir (deleted, or a symlink now pointing elsewhere).
    Deleted,
}

/// A file open for reading.
struct OpenFile {
    key: FileKey,
    id: FileId,
    dev: u64,
    ino: u64,
    path: PathBuf,
    log: PodLogPath,
    container_key: String,
    /// Where the log file links to, when it is a symlink (cri-dockerd).
    target: Option<PathBuf>,
    meta: Arc<LogMeta>,
    reader: FileReader,
    parser: LineParser,
    /// Set once nobody writes to the file any more: at its end it is done.
    release: Option<Release>,
    /// There may be something to read.
    dirty: bool,
    /// Dropping the rest of a physical line that was too long to hold.
    skipping: bool,
    /// The last listing of its container dir did not find it.
    missed: bool,
}

/// A file whose progress is tracked (open, or closed with chunks not acknowledged).
struct Live {
    id: FileId,
    path: PathBuf,
    container: String,
}

/// How a read of one file ended.
enum ReadEnd {
    /// Budget used up, most likely before the end of what is written.
    Budget,
    /// Nothing more for now.
    Paused,
    /// Released and read to its end.
    Finished,
    Truncated,
    Failed,
}

/// The tailing core. See the module documentation.
pub struct Tailer {
    cfg: TailerConfig,
    store: CheckpointStore,
    files: BTreeMap<FileKey, OpenFile>,
    by_inode: HashMap<(u64, u64), FileKey>,
    /// Open files by the path they were last seen at, for write hints.
    by_path: HashMap<PathBuf, FileKey>,
    acks: AckTracker,
    live: HashMap<FileKey, Live>,
    live_ids: HashMap<FileId, FileKey>,
    next_key: u64,
    /// Reading resumes after this key, so every file gets its turn.
    cursor: u64,
    scratch: Vec<u8>,
    warned: HashSet<PathBuf>,
    /// Checkpoints the last listing of their container did not find.
    missed_once: HashSet<Fingerprint>,
    stats: Stats,
}

impl Tailer {
    /// A core over `cfg.pods_dir` starting from `store` (see [`CheckpointStore::load`]).
    /// Nothing is read before [`Self::scan`].
    pub fn new(mut cfg: TailerConfig, store: CheckpointStore) -> Self {
        cfg.max_line_bytes = cfg.max_line_bytes.max(crate::parse::MIN_MAX_LINE_BYTES);
        Self {
            cfg,
            store,
            files: BTreeMap::new(),
            by_inode: HashMap::new(),
            by_path: HashMap::new(),
            acks: AckTracker::default(),
            live: HashMap::new(),
            live_ids: HashMap::new(),
            next_key: 0,
            cursor: 0,
            scratch: Vec::new(),
            warned: HashSet::new(),
            missed_once: HashSet::new(),
            stats: Stats::default(),
        }
    }

    /// Full scan of the pods dir (at start, and after an inotify overflow):
    /// discovers files, releases files that are gone or rotated away, prunes
    /// checkpoints of files that no longer exist. Ends the first start.
    pub fn scan(&mut self) {
        let mut containers: BTreeSet<(String, String)> = self.known_containers(None);
        match fs::read_dir(&self.cfg.pods_dir) {
            Ok(pods) => {
                for pod in pods.filter_map(Result::ok) {
                    let Ok(pod_dir) = pod.file_name().into_string() else {
                        continue;
                    };
                    for container in self.list_container_dirs(&pod_dir) {
                        containers.insert((pod_dir.clone(), container));
                    }
                }
            }
            Err(e) => log::error!(
                "cannot list the pods dir {}: {e}",
                self.cfg.pods_dir.display()
            ),
        }
        for (pod_dir, container) in containers {
            self.reconcile_container(&pod_dir, &container);
        }
        self.store.end_first_start();
    }

    /// A hint (from inotify) that something changed at `path`: the pods dir,
    /// a pod dir, a container dir, a log file, or (for symlinked logs) a link
    /// target or its dir. Correct whatever the hints: coalesced, repeated or
    /// missing ones only delay what a later hint or [`Self::scan`] finds.
    pub fn notify(&mut self, path: &Path) {
        let Ok(rel) = path.strip_prefix(&self.cfg.pods_dir) else {
            self.notify_outside(path);
            return;
        };
        let mut parts = Vec::new();
        for c in rel.components() {
            match c {
                Component::Normal(s) => match s.to_str() {
                    Some(s) => parts.push(s),
                    None => return,
                },
                _ => return,
            }
        }
        match parts.as_slice() {
            [] => self.scan(),
            [pod_dir] => {
                for (pod_dir, container) in self.pod_containers(pod_dir) {
                    self.reconcile_container(&pod_dir, &container);
                }
            }
            [pod_dir, container] => self.reconcile_container(pod_dir, container),
            [pod_dir, container, name] => {
                if PodLogPath::from_parts(pod_dir, container, name).is_none() {
                    return; // e.g. kubelet's `.tmp` while it compresses
                }
                self.reconcile_container(pod_dir, container);
            }
            _ => {}
        }
    }

    /// A hint (from inotify) that the file at `path` was written to. The
    /// open file last seen there is read next, without a look at the
    /// filesystem: a write makes no new file, and a rename or a delete has
    /// its own hint ([`Self::notify`]), so trusting the path here at worst
    /// reads a renamed file (harmless) before that hint is taken.
    pub fn notify_write(&mut self, path: &Path) {
        if let Some(f) = self.by_path.get(path).and_then(|k| self.files.get_mut(k))
            && f.path == path
            && f.release.is_none()
        {
            f.dirty = true;
            return;
        }
        self.notify(path);
    }

    /// Reads what is available, about `max_bytes` of output at most (one
    /// line more at worst), as one chunk per file with lines, each file's
    /// lines in order. Call again while it returns chunks.
    pub fn read(&mut self, max_bytes: usize) -> Vec<Chunk> {
        let max_bytes = max_bytes.max(1);
        let now = Stamp::now();
        let mut chunks = Vec::new();
        let mut used = 0;
        loop {
            let open_before = self.files.len();
            let any_released = self.files.values().any(|f| f.release.is_some());
            let mut waited = false;
            let start = FileKey(self.cursor);
            let keys: Vec<FileKey> = self
                .files
                .range(start..)
                .chain(self.files.range(..start))
                .filter(|(_, f)| f.dirty)
                .map(|(k, _)| *k)
                .collect();
            for key in keys {
                if used >= max_bytes {
                    break;
                }
                if any_released && self.waits_for_predecessor(key) {
                    waited = true;
                    continue;
                }
                self.cursor = key.0 + 1;
                if let Some(chunk) = self.read_file(key, max_bytes - used, &now) {
                    used += chunk.lines.len();
                    chunks.push(chunk);
                }
            }
            // A file that waited for a predecessor finished in this pass
            // must not be left for a call that may never come.
            if !chunks.is_empty() || !waited || self.files.len() == open_before {
                return chunks;
            }
        }
    }

    /// True when an older file of the same container and restart (one
    /// rotated away, or replaced) is still being read to its end: the lines
    /// of `<n>.log` reach the intake in the order they were written.
    fn waits_for_predecessor(&self, key: FileKey) -> bool {
        let Some(f) = self.files.get(&key) else {
            return false;
        };
        f.release.is_none()
            && self.files.range(..key).any(|(_, older)| {
                older.release.is_some()
                    && older.container_key == f.container_key
                    && older.log.restart == f.log.restart
            })
    }

    /// The intake acknowledged (or definitively dropped) the chunk. Repeated
    /// or unknown tokens are ignored.
    pub fn ack(&mut self, token: AckToken) {
        if let Some(commit) = self.acks.ack(token) {
            self.apply(commit);
        }
    }

    /// The committed offsets as of now, to save with [`Checkpoints::save`].
    /// Save once right after the first [`Self::scan`] too, so that a crash
    /// before the first acknowledgement is not taken for a first start.
    pub fn checkpoint(&self) -> Checkpoints {
        self.store.snapshot()
    }

    pub fn stats(&self) -> Stats {
        Stats {
            bytes_behind: self.bytes_behind(),
            ..self.counters()
        }
    }

    /// [`Self::stats`] but `bytes_behind` (left 0), which costs a stat of
    /// every open file.
    pub fn counters(&self) -> Stats {
        let mut s = self.stats;
        s.files_open = self.files.len();
        s.files_tracked = self.live.len();
        s.unacked_chunks = self.acks.unacked();
        s
    }

    /// Bytes in plain files past their committed offsets.
    pub fn bytes_behind(&self) -> u64 {
        self.files
            .values()
            .filter(|f| !f.reader.is_compressed())
            .map(|f| {
                // The size now, not when last read: while the pipeline waits
                // on the intake, what is written meanwhile is behind too.
                let size = f
                    .reader
                    .file()
                    .metadata()
                    .map_or(f.reader.size(), |m| m.len());
                size.saturating_sub(self.acks.committed(f.key).unwrap_or(0))
            })
            .sum()
    }

    /// Records a checkpoint for a fingerprinted file (a file known only by
    /// device and inode has no checkpoint to keep).
    fn remember(
        &mut self,
        id: &FileId,
        path: PathBuf,
        container: String,
        offset: u64,
        finished: bool,
    ) {
        if let Some(fp) = id.fingerprint() {
            let checkpoint = Checkpoint {
                path,
                container,
                offset,
                finished,
            };
            self.store.set(fp, checkpoint);
        }
    }

    fn pod_dir_excluded(&self, pod_dir: &str) -> bool {
        self.cfg.excludes_pod_dir(pod_dir)
    }

    /// Container dirs in a pod dir (none when it is excluded or not a pod dir).
    fn list_container_dirs(&self, pod_dir: &str) -> Vec<String> {
        if self.pod_dir_excluded(pod_dir) {
            return Vec::new();
        }
        let Ok(entries) = fs::read_dir(self.cfg.pods_dir.join(pod_dir)) else {
            return Vec::new();
        };
        entries
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| e.file_name().into_string().ok())
            .collect()
    }

    /// Containers logd has state for (open files or checkpoints), of one pod dir or all.
    fn known_containers(&self, pod_dir: Option<&str>) -> BTreeSet<(String, String)> {
        let keys = self
            .files
            .values()
            .map(|f| f.container_key.as_str())
            .chain(self.store.iter().map(|(_, cp)| cp.container.as_str()));
        keys.filter_map(|k| k.split_once('/'))
            .filter(|(p, _)| pod_dir.is_none_or(|d| d == *p))
            .map(|(p, c)| (p.to_owned(), c.to_owned()))
            .collect()
    }

    fn pod_containers(&self, pod_dir: &str) -> BTreeSet<(String, String)> {
        let mut containers = self.known_containers(Some(pod_dir));
        for c in self.list_container_dirs(pod_dir) {
            containers.insert((pod_dir.to_owned(), c));
        }
        containers
    }

    /// A hint outside the pods dir: the target of a symlinked log, or its dir.
    fn notify_outside(&mut self, path: &Path) {
        let mut containers = BTreeSet::new();
        for f in self.files.values_mut() {
            if let Some(target) = &f.target {
                if target == path || target.parent() == Some(path) {
                    f.dirty = true;
                    containers.insert((f.log.pod_dir_name(), f.log.container.clone()));
                }
            }
        }
        for (pod_dir, container) in containers {
            self.reconcile_container(&pod_dir, &container);
        }
    }

    /// Brings one container dir's files in line with what is on disk: opens
    /// new files, follows renames, releases files rotated away or gone,
    /// prunes checkpoints of files that no longer exist.
    fn reconcile_container(&mut self, pod_dir: &str, container: &str) {
        let container_key = format!("{pod_dir}/{container}");
        let dir = self.cfg.pods_dir.join(pod_dir).join(container);
        let names: Vec<String> = if self.pod_dir_excluded(pod_dir) {
            Vec::new()
        } else {
            match fs::read_dir(&dir) {
                Ok(entries) => entries
                    .filter_map(Result::ok)
                    .filter_map(|e| e.file_name().into_string().ok())
                    .collect(),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
                Err(e) => {
                    // Not knowing what is there, change nothing (pruning would forget offsets).
                    self.warn_once(&dir, format_args!("cannot list {}: {e}", dir.display()));
                    return;
                }
            }
        };
        let mut found: Vec<(PodLogPath, PathBuf, (u64, u64))> = names
            .iter()
            .filter_map(|name| {
                let log = PodLogPath::from_parts(pod_dir, container, name)?;
                let path = dir.join(name);
                let md = fs::metadata(&path).ok().filter(|md| md.is_file())?;
                Some((log, path, (md.dev(), md.ino())))
            })
            .collect();
        // Older files first: rotated ones by their stamp, then the current one.
        found.sort_by(|a, b| age_order(&a.0).cmp(&age_order(&b.0)));
        let current: HashMap<u32, (u64, u64)> = found
            .iter()
            .filter(|(log, ..)| !log.is_rotated())
            .map(|(log, _, inode)| (log.restart, *inode))
            .collect();

        // An open file still known by inode may have its first line by now:
        // identify it, so that its .gz (same fingerprint) is not taken for a new file.
        let unidentified: Vec<FileKey> = self
            .files
            .values()
            .filter(|f| f.container_key == container_key && matches!(f.id, FileId::DevInode { .. }))
            .map(|f| f.key)
            .collect();
        for key in unidentified {
            self.try_identify(key);
        }

        let mut seen_ids = HashSet::new();
        let mut matched = HashSet::new();
        for (log, path, inode) in found {
            if let Some(&key) = self.by_inode.get(&inode) {
                let f = self
                    .files
                    .get_mut(&key)
                    .expect("the inode index only names open files");
                if f.path != path {
                    log::debug!("{} is now {}", f.path.display(), path.display());
                    if self.by_path.get(&f.path) == Some(&key) {
                        self.by_path.remove(&f.path);
                    }
                    self.by_path.insert(path.clone(), key);
                    f.path.clone_from(&path);
                    if let Some(live) = self.live.get_mut(&key) {
                        live.path = path;
                    }
                }
                f.log = log;
                f.dirty = true;
                seen_ids.insert(f.id);
                matched.insert(key);
            } else if let Some(key) = self.discover(log, path, &current, &mut seen_ids) {
                matched.insert(key);
            }
        }

        // A rotated file deleted later (kubelet deletes the oldest) counts
        // against the caps for deleted files too: it holds disk space.
        for f in self
            .files
            .values_mut()
            .filter(|f| f.container_key == container_key && f.release != Some(Release::Deleted))
        {
            if !matched.contains(&f.key) {
                // A listing can miss a file while it is renamed (kubelet
                // rotating `<n>.log` as the runtime still writes to it): a
                // plain file is released only once it is really gone (no
                // link left), or missed by two listings in a row. A
                // symlinked log is released at once: its link now points
                // elsewhere, or is gone, while its target stays.
                let gone =
                    f.target.is_some() || f.reader.file().metadata().is_ok_and(|m| m.nlink() == 0);
                if gone || f.missed {
                    log::debug!("{} is gone; reading it to its end", f.path.display());
                    f.release = Some(Release::Deleted);
                    f.dirty = true;
                } else {
                    f.missed = true;
                }
                continue;
            }
            f.missed = false;
            if f.release.is_none()
                && f.log.is_rotated()
                && rotated_away(&f.log, (f.dev, f.ino), &current)
            {
                f.release = Some(Release::Rotated);
                f.dirty = true;
            }
        }

        // One listing can miss a file under both its names when it is
        // renamed or removed meanwhile (kubelet gzipping: `.tmp` renamed to
        // `.gz`, then the plain file removed): pruning its checkpoint then
        // would have the `.gz` read again from 0. So a checkpoint is pruned
        // only when two listings of its container in a row miss it.
        let live_ids = &self.live_ids;
        let missed_once = &mut self.missed_once;
        self.store.retain(|fp, cp| {
            if cp.container != container_key {
                return true;
            }
            let id = FileId::FirstLine(fp);
            if seen_ids.contains(&id) || live_ids.contains_key(&id) {
                missed_once.remove(&fp);
                return true;
            }
            !missed_once.remove(&fp) && missed_once.insert(fp)
        });
        self.enforce_deleted_caps();
    }

    /// Opens a file not open yet, if it is to be read. Returns its key.
    fn discover(
        &mut self,
        log: PodLogPath,
        path: PathBuf,
        current: &HashMap<u32, (u64, u64)>,
        seen_ids: &mut HashSet<FileId>,
    ) -> Option<FileKey> {
        let file = match open_noatime(&path) {
            Ok(f) => f,
            Err(e) => {
                self.warn_once(&path, format_args!("cannot open {}: {e}", path.display()));
                return None;
            }
        };
        let md = file.metadata().ok()?;
        let inode = (md.dev(), md.ino());
        if let Some(&key) = self.by_inode.get(&inode) {
            return Some(key); // replaced between stat and open by a file already open
        }
        let gz = log.is_compressed();
        let id = match fingerprint::identify(&file, gz) {
            Ok(id) => id,
            Err(e) => {
                self.warn_once(
                    &path,
                    format_args!("cannot read the start of {}: {e}", path.display()),
                );
                return None;
            }
        };
        seen_ids.insert(id);
        if self.live_ids.contains_key(&id) {
            return None; // being read under another name (the .gz of an open rotated file)
        }
        let container = log.container_key();
        let checkpoint = id.fingerprint().and_then(|fp| self.store.get(fp));
        let start = match checkpoint {
            Some(cp) if cp.finished => return None,
            Some(cp) => cp.offset,
            None if self.store.is_first_start() => match (log.is_rotated(), self.cfg.read_from) {
                (true, _) => {
                    // Rotated before logd ever ran: not read, and remembered as such.
                    self.remember(&id, path, container, 0, true);
                    return None;
                }
                (false, ReadFrom::Beginning) => 0,
                (false, ReadFrom::End) => reader::end_of_last_line(&file).ok()?,
            },
            None => 0,
        };
        let reader = match FileReader::open(file, gz, start) {
            Ok(r) => r,
            Err(e) => {
                log::warn!(
                    "cannot read {} from offset {start}: {e}; not reading it",
                    path.display()
                );
                self.remember(&id, path, container, start, true);
                return None;
            }
        };
        if id
            .fingerprint()
            .is_some_and(|fp| self.store.get(fp).is_none())
        {
            self.remember(&id, path.clone(), container.clone(), start, false);
        }
        let key = FileKey(self.next_key);
        self.next_key += 1;
        let release = if gz || (log.is_rotated() && rotated_away(&log, inode, current)) {
            Some(Release::Rotated)
        } else {
            None
        };
        let is_link = fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink());
        let target = if is_link {
            fs::canonicalize(&path).ok()
        } else {
            None
        };
        log::debug!("reading {} from offset {start}", path.display());
        self.acks.open(key, start);
        self.live.insert(
            key,
            Live {
                id,
                path: path.clone(),
                container: container.clone(),
            },
        );
        self.live_ids.insert(id, key);
        self.by_inode.insert(inode, key);
        self.by_path.insert(path.clone(), key);
        self.files.insert(
            key,
            OpenFile {
                key,
                id,
                dev: inode.0,
                ino: inode.1,
                path,
                meta: Arc::new(LogMeta::of(&log)),
                log,
                container_key: container,
                target,
                reader,
                parser: LineParser::new(self.cfg.max_line_bytes, start),
                release,
                dirty: true,
                skipping: false,
                missed: false,
            },
        );
        Some(key)
    }

    /// Reads one file, up to `budget` bytes of output.
    fn read_file(&mut self, key: FileKey, budget: usize, now: &Stamp) -> Option<Chunk> {
        self.try_identify(key);
        let max_physical_line = (2 * self.cfg.max_line_bytes).max(READ_SIZE);
        let f = self.files.get_mut(&key)?;
        let scratch = &mut self.scratch;
        f.reader.take_held(scratch);
        let mut out = Vec::new();
        let mut lines = 0;
        let mut at_end = false;
        let end = loop {
            if out.capacity() == 0 && !scratch.is_empty() {
                // Bytes in hand: sized once for what there is to read (the
                // size known from the last look, or what was just read).
                let unread = f.reader.size().saturating_sub(f.reader.offset()) as usize;
                let in_hand = unread.max(scratch.len());
                out.reserve_exact(out_capacity(in_hand, budget, self.cfg.max_line_bytes));
            }
            // Lines in what is held or was just read first, then more bytes.
            if f.skipping {
                let skip = match memchr(b'\n', scratch) {
                    Some(i) => {
                        f.skipping = false;
                        i + 1
                    }
                    None => scratch.len(),
                };
                f.reader.consume(skip);
                scratch.drain(..skip);
            }
            let r = f.parser.parse(
                scratch,
                f.reader.offset(),
                budget.saturating_sub(out.len()),
                now,
                &mut out,
            );
            lines += r.lines;
            f.reader.consume(r.consumed);
            scratch.drain(..r.consumed);
            if scratch.len() >= max_physical_line {
                // No newline in sight: output what is held as a line (cut
                // to the cap) and drop the rest of it.
                let start = f.reader.offset();
                let end = start + scratch.len() as u64;
                let valid = std::str::from_utf8(scratch).is_ok();
                lines += f
                    .parser
                    .push_line(scratch, valid, start, end, now, &mut out);
                f.reader.consume(scratch.len());
                scratch.clear();
                f.skipping = true;
            }
            if out.len() >= budget {
                break ReadEnd::Budget;
            }
            if at_end {
                f.dirty = false;
                break ReadEnd::Paused;
            }
            let want = (budget - out.len()).clamp(4096, READ_SIZE);
            match f.reader.fill(scratch, want) {
                Err(e) => {
                    log::warn!("cannot read {}: {e}; letting go of it", f.path.display());
                    break ReadEnd::Failed;
                }
                Ok(Fill::Truncated { size }) => {
                    log::info!(
                        "{} was truncated (size {size} below offset {}); reading it again from the start",
                        f.path.display(),
                        f.reader.offset() + scratch.len() as u64
                    );
                    break ReadEnd::Truncated;
                }
                Ok(Fill::Eof) => {
                    if f.release.is_some() {
                        break ReadEnd::Finished;
                    }
                    f.dirty = false;
                    break ReadEnd::Paused;
                }
                Ok(Fill::Read(n)) => {
                    self.stats.bytes_read += n as u64;
                    // Short of what was asked: pread stopped at the file's
                    // end. A live file is done for this round after parsing
                    // (a later write has its own event), without another
                    // read to find its end again.
                    at_end = n < want && f.release.is_none();
                }
            }
        };
        if matches!(end, ReadEnd::Finished | ReadEnd::Truncated) {
            // Nothing more will follow these bytes: a last line without its
            // newline and pending partial lines are output as they are.
            let start = f.reader.offset();
            let stop = start + scratch.len() as u64;
            if !scratch.is_empty() && !f.skipping {
                let valid = std::str::from_utf8(scratch).is_ok();
                lines += f
                    .parser
                    .push_line(scratch, valid, start, stop, now, &mut out);
            }
            f.reader.consume(scratch.len());
            scratch.clear();
            lines += f.parser.finish(stop, &mut out);
        }
        f.reader.hold(scratch);
        let safe = f.parser.quiescent_offset();
        let meta = Arc::clone(&f.meta);
        if lines > 0 {
            // The first line may have been completed after the identification
            // at the start: its chunks must commit under its fingerprint.
            self.try_identify(key);
        }
        self.stats.lines_read += lines as u64;
        let token = if lines > 0 {
            Some(self.acks.sent(key, safe))
        } else {
            if let Some(commit) = self.acks.advanced(key, safe) {
                self.apply(commit);
            }
            None
        };
        let more = matches!(end, ReadEnd::Budget);
        match end {
            ReadEnd::Budget | ReadEnd::Paused => {}
            ReadEnd::Finished => {
                log::debug!("finished reading {key:?}");
                self.close(key);
            }
            ReadEnd::Failed => {
                if let Some(f) = self.files.get(&key) {
                    self.stats.lost_files += 1;
                    self.stats.lost_bytes += f.reader.size().saturating_sub(f.reader.offset());
                }
                self.close(key);
            }
            ReadEnd::Truncated => self.restart_truncated(key),
        }
        token.map(|ack| Chunk {
            file: key,
            meta,
            lines: out,
            line_count: lines,
            ack,
            more,
        })
    }

    /// A file known by device and inode only: its fingerprint, once its first line is complete.
    fn try_identify(&mut self, key: FileKey) {
        let Some(f) = self.files.get_mut(&key) else {
            return;
        };
        if !matches!(f.id, FileId::DevInode { .. }) {
            return;
        }
        let Ok(id @ FileId::FirstLine(fp)) =
            fingerprint::identify(f.reader.file(), f.reader.is_compressed())
        else {
            return;
        };
        if self.live_ids.get(&f.id) == Some(&key) {
            self.live_ids.remove(&f.id);
        }
        f.id = id;
        self.live_ids.entry(id).or_insert(key);
        let path = f.path.clone();
        let container = f.container_key.clone();
        if let Some(live) = self.live.get_mut(&key) {
            live.id = id;
        }
        if self.store.get(fp).is_none() {
            let offset = self.acks.committed(key).unwrap_or(0);
            self.store.set(
                fp,
                Checkpoint {
                    path,
                    container,
                    offset,
                    finished: false,
                },
            );
        }
    }

    /// Reads a truncated file again from the start, under a new key (the old
    /// key finishes once its chunks are acknowledged).
    fn restart_truncated(&mut self, old: FileKey) {
        let Some(mut f) = self.files.remove(&old) else {
            return;
        };
        self.stats.truncations += 1;
        if let Some(commit) = self.acks.done_reading(old) {
            self.apply(commit);
        }
        let key = FileKey(self.next_key);
        self.next_key += 1;
        f.key = key;
        f.id = FileId::DevInode {
            dev: f.dev,
            ino: f.ino,
        };
        f.reader.restart();
        f.parser = LineParser::new(self.cfg.max_line_bytes, 0);
        f.skipping = false;
        f.dirty = true;
        self.acks.open(key, 0);
        self.live.insert(
            key,
            Live {
                id: f.id,
                path: f.path.clone(),
                container: f.container_key.clone(),
            },
        );
        self.live_ids.insert(f.id, key);
        self.by_inode.insert((f.dev, f.ino), key);
        self.by_path.insert(f.path.clone(), key);
        self.files.insert(key, f);
    }

    /// Stops reading a file; it finishes once its chunks are acknowledged.
    fn close(&mut self, key: FileKey) {
        if let Some(f) = self.files.remove(&key) {
            if self.by_inode.get(&(f.dev, f.ino)) == Some(&key) {
                self.by_inode.remove(&(f.dev, f.ino));
            }
            if self.by_path.get(&f.path) == Some(&key) {
                self.by_path.remove(&f.path);
            }
        }
        if let Some(commit) = self.acks.done_reading(key) {
            self.apply(commit);
        }
    }

    /// Records a new committed offset in the store.
    fn apply(&mut self, commit: Commit) {
        let Some(live) = self.live.get(&commit.file) else {
            return;
        };
        if let Some(fp) = live.id.fingerprint() {
            let checkpoint = Checkpoint {
                path: live.path.clone(),
                container: live.container.clone(),
                offset: commit.offset,
                finished: commit.finished,
            };
            self.store.set(fp, checkpoint);
        }
        if commit.finished {
            let id = live.id;
            self.live.remove(&commit.file);
            if self.live_ids.get(&id) == Some(&commit.file) {
                self.live_ids.remove(&id);
            }
        }
    }

    /// Lets go of the oldest deleted files while more are open than the caps allow.
    fn enforce_deleted_caps(&mut self) {
        let deleted: Vec<(FileKey, u64)> = self
            .files
            .values()
            .filter(|f| f.release == Some(Release::Deleted))
            .map(|f| {
                (
                    f.key,
                    f.reader
                        .file()
                        .metadata()
                        .map_or(f.reader.size(), |m| m.len()),
                )
            })
            .collect();
        let mut count = deleted.len();
        let mut bytes: u64 = deleted.iter().map(|(_, size)| size).sum();
        for (key, size) in deleted {
            if count <= self.cfg.max_deleted_open && bytes <= self.cfg.max_deleted_bytes {
                break;
            }
            let f = &self.files[&key];
            let unread = if f.reader.is_compressed() {
                size
            } else {
                size.saturating_sub(f.reader.offset())
            };
            log::warn!(
                "{} was deleted before logd read it to its end; letting go of {unread} unread bytes \
                 (at most {} deleted files and {} bytes are kept open)",
                f.path.display(),
                self.cfg.max_deleted_open,
                self.cfg.max_deleted_bytes
            );
            self.stats.lost_files += 1;
            self.stats.lost_bytes += unread;
            self.close(key);
            count -= 1;
            bytes -= size;
        }
    }

    fn warn_once(&mut self, path: &Path, msg: std::fmt::Arguments<'_>) {
        if self.warned.insert(path.to_owned()) {
            log::warn!("{msg}");
        }
    }
}

/// The output buffer of a read with `in_hand` bytes read, sized so that it
/// does not grow by doubling: output is about as long as input, and when the
/// budget cuts it, it goes one line past the budget.
fn out_capacity(in_hand: usize, budget: usize, max_line_bytes: usize) -> usize {
    let expected = in_hand + in_hand / 8 + 256;
    if expected < budget {
        expected
    } else {
        budget + max_line_bytes.min(READ_SIZE) + 64
    }
}

/// Sorts a container's files oldest first: by restart, rotated ones by their
/// stamp, the current file last.
fn age_order(log: &PodLogPath) -> (u32, bool, &str) {
    match &log.rotation {
        Rotation::Current => (log.restart, true, ""),
        Rotation::Rotated { stamp } | Rotation::Compressed { stamp } => (log.restart, false, stamp),
    }
}

/// True when a rotated file is no longer written to: the runtime writes to a
/// new current file for its restart, or the container restarted since.
fn rotated_away(log: &PodLogPath, inode: (u64, u64), current: &HashMap<u32, (u64, u64)>) -> bool {
    match current.get(&log.restart) {
        Some(cur) => *cur != inode,
        None => current.keys().any(|&r| r > log.restart),
    }
}

/// Opens a log file for reading without updating its access time: with
/// `relatime`, every read of a file written since would otherwise dirty
/// its inode (6 % of logd's time in the steady bench). O_NOATIME needs the
/// file's owner or CAP_FOWNER (logd runs as root); without, a plain open.
fn open_noatime(path: &Path) -> io::Result<File> {
    let noatime = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOATIME)
        .open(path);
    match noatime {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => File::open(path),
        other => other,
    }
}
