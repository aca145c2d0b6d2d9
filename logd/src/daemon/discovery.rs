//! Discovery: the `logd-inotify` thread. It watches the pods dir, every pod
//! dir and every container dir with inotify, and tells the parse thread which
//! paths changed. It blocks in poll(2) and never polls on a timer.
//!
//! It is a hint source, not a source of truth: the tailing core re-reads the
//! directories it is pointed at, so a coalesced, duplicated or late event is
//! harmless. What must never happen is a *missed* file, so an event-queue
//! overflow or a watch that cannot be added turns into a full rescan.
//!
//! Two inotify instances split the events by urgency. Structural events
//! (a pod, container or file appearing, moving, going) are read as soon as
//! they come: kubelet renames, compresses and deletes rotated files quickly,
//! and logd must open them before. Writes (MODIFY) are read at most once a
//! write round (a fifth of the linger by default: see `daemon::run`):
//! meanwhile the kernel queues and merges them, so a busy node wakes
//! discovery, the parse thread and the batcher about five times a second
//! instead of once per write(2).

use std::collections::{HashMap, HashSet};
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use inotify::{EventMask, Events, Inotify, WatchDescriptor, WatchMask};
use logd::TailerConfig;

/// What the parse thread is told.
#[derive(Debug)]
pub enum Change {
    /// These paths (files or dirs) were created, moved or deleted.
    Paths(Vec<PathBuf>),
    /// These files were written to (and nothing else is known of them).
    Writes(Vec<PathBuf>),
    /// Events may have been lost: rescan the whole tree.
    Rescan,
    /// Some directories could not be watched (inotify limits): until the
    /// next successful full rescan, the parse thread must rescan periodically.
    Degraded,
}

/// Which part of the tree a watch is on.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Level {
    PodsDir,
    PodDir,
    ContainerDir,
    /// A symlinked log file: the watch is on its target (inotify follows the
    /// link), so writes to the target are seen.
    LinkedFile,
}

pub struct Discovery {
    /// Directory events, read at once.
    structure: Inotify,
    /// Writes (MODIFY), read at most every `write_round`: it adds at most
    /// that much to a line's latency, well inside the batch linger.
    content: Inotify,
    write_round: Duration,
    pods_dir: PathBuf,
    /// Which pod dirs are never read, so never watched.
    filter: TailerConfig,
    /// The watches of `structure`.
    watches: HashMap<WatchDescriptor, (PathBuf, Level)>,
    /// The watches of `content`: container dirs and linked files.
    content_watches: HashMap<WatchDescriptor, PathBuf>,
    /// Paths fully watched (both instances, where both apply).
    by_path: HashMap<PathBuf, Vec<WatchDescriptor>>,
    /// Test-only stand-in for the kernel's `max_user_watches`, so the
    /// out-of-watches path can be tested without a machine-wide sysctl.
    max_watches: Option<usize>,
    /// A watch could not be added since the last full rescan.
    degraded: bool,
}

/// What one round of events asks of the parse thread.
#[derive(Default)]
struct Round {
    changed: Vec<PathBuf>,
    written: Vec<PathBuf>,
    rescan: bool,
}

const DIR_MASK: WatchMask = WatchMask::CREATE
    .union(WatchMask::MOVED_TO)
    .union(WatchMask::MOVED_FROM)
    .union(WatchMask::DELETE)
    .union(WatchMask::DELETE_SELF)
    .union(WatchMask::ONLYDIR);
const CONTENT_DIR_MASK: WatchMask = WatchMask::MODIFY.union(WatchMask::ONLYDIR);
const LINKED_FILE_MASK: WatchMask = WatchMask::MODIFY.union(WatchMask::DELETE_SELF);

/// Size of the read buffer: many events per read(2) under load.
const EVENT_BUFFER: usize = 64 * 1024;

impl Discovery {
    /// Discovery of `filter.pods_dir`, skipping the pods `filter` excludes;
    /// busy files' writes are reported at most every `write_round`.
    pub fn new(
        filter: TailerConfig,
        max_watches: Option<usize>,
        write_round: Duration,
    ) -> io::Result<Self> {
        Ok(Discovery {
            structure: Inotify::init()?,
            content: Inotify::init()?,
            write_round,
            pods_dir: filter.pods_dir.clone(),
            filter,
            watches: HashMap::new(),
            content_watches: HashMap::new(),
            by_path: HashMap::new(),
            max_watches,
            degraded: false,
        })
    }

    /// Number of inotify watches held.
    pub fn watch_count(&self) -> usize {
        self.watches.len() + self.content_watches.len()
    }

    /// Walks the whole tree and adds the watches that are missing. Call it
    /// before the parse thread's first scan, so nothing created in between
    /// is missed, and after every overflow.
    pub fn watch_tree(&mut self) {
        self.degraded = false;
        let pods_dir = self.pods_dir.clone();
        self.watch(&pods_dir, Level::PodsDir);
        for pod in subdirs(&pods_dir) {
            self.watch_pod(&pod, &mut Vec::new());
        }
    }

    /// The thread body: reads events until the channel closes.
    pub fn run(mut self, tx: Sender<Change>) {
        let mut buffer = vec![0u8; EVENT_BUFFER];
        // When the content instance may be read again (at once once past).
        let mut content_at: Option<Instant> = None;
        loop {
            let (structure_ready, content_ready) = match self.poll(content_at) {
                Ok(ready) => ready,
                Err(e) => {
                    log::error!("waiting for inotify events failed: {e}; discovery stops");
                    return;
                }
            };
            let mut round = Round::default();
            let ready = [
                (structure_ready, Instance::Structure),
                (content_ready, Instance::Content),
            ];
            for (_, instance) in ready.into_iter().filter(|(ready, _)| *ready) {
                if let Err(e) = self.read_events(instance, &mut buffer, &mut round) {
                    log::error!("reading inotify events failed: {e}; discovery stops");
                    return;
                }
            }
            if content_ready {
                content_at = Some(Instant::now() + self.write_round);
            }
            if round.rescan {
                self.watch_tree();
            }
            for message in self.messages(round) {
                if tx.send(message).is_err() {
                    return;
                }
            }
        }
    }

    /// Blocks until the structure instance, or the content instance once
    /// `content_at` has passed, has events; returns which do.
    fn poll(&self, content_at: Option<Instant>) -> io::Result<(bool, bool)> {
        let now = Instant::now();
        let content_open = content_at.is_none_or(|at| at <= now);
        let pollfd = |fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // poll(2) skips a negative fd: the content instance while it cools down.
        let mut fds = [
            pollfd(self.structure.as_raw_fd()),
            pollfd(if content_open {
                self.content.as_raw_fd()
            } else {
                -1
            }),
        ];
        let timeout = match content_at {
            Some(at) if !content_open => {
                // Rounded up, so the wait never ends just before `at`.
                let ms = (at - now).as_micros().div_ceil(1000);
                libc::c_int::try_from(ms).unwrap_or(libc::c_int::MAX)
            }
            _ => -1,
        };
        // SAFETY: `fds` is a valid array of two pollfd for the whole call.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::Interrupted => Ok((false, false)),
                _ => Err(e),
            };
        }
        Ok((fds[0].revents != 0, content_open && fds[1].revents != 0))
    }

    /// Reads what `instance` has queued and adds it to `round`.
    fn read_events(
        &mut self,
        instance: Instance,
        buffer: &mut [u8],
        round: &mut Round,
    ) -> io::Result<()> {
        loop {
            let inotify = match instance {
                Instance::Structure => &mut self.structure,
                Instance::Content => &mut self.content,
            };
            let Some(events) = read_available(inotify, buffer)? else {
                return Ok(());
            };
            // Writes seen in this read, by watch and name: a file written
            // many times since the last round is one hint, and one path.
            let mut seen_writes = HashSet::new();
            for event in events {
                if event.mask.contains(EventMask::Q_OVERFLOW) {
                    self.overflowed(round);
                    continue;
                }
                let name = event.name.map(Path::new);
                match instance {
                    Instance::Structure => {
                        self.on_event(&event.wd, event.mask, name, &mut round.changed)
                    }
                    Instance::Content => {
                        let key = (event.wd.get_watch_descriptor_id(), event.name);
                        if event.mask.contains(EventMask::IGNORED) || seen_writes.insert(key) {
                            self.on_write(&event.wd, event.mask, name, &mut round.written)
                        }
                    }
                }
            }
        }
    }

    /// A write to a file of a watched container dir, or to a linked file.
    fn on_write(
        &mut self,
        wd: &WatchDescriptor,
        mask: EventMask,
        name: Option<&Path>,
        written: &mut Vec<PathBuf>,
    ) {
        if mask.contains(EventMask::IGNORED) {
            // The watched dir or file is gone; the kernel dropped the watch.
            if let Some(path) = self.content_watches.remove(wd) {
                self.forget(&path, wd);
            }
            return;
        }
        if let Some(path) = self.content_watches.get(wd) {
            written.push(match name {
                Some(name) => path.join(name),
                None => path.clone(),
            });
        }
    }

    fn overflowed(&self, round: &mut Round) {
        if !round.rescan {
            log::warn!(
                "inotify event queue overflowed: rescanning {}",
                self.pods_dir.display()
            );
        }
        round.rescan = true;
    }

    /// What the parse thread is told after a round of events.
    fn messages(&self, round: Round) -> Vec<Change> {
        let mut messages = Vec::new();
        // Structure first: a write to a file just created is then seen once
        // the file is open.
        if !round.changed.is_empty() {
            messages.push(Change::Paths(deduplicated(round.changed)));
        }
        if !round.written.is_empty() {
            messages.push(Change::Writes(deduplicated(round.written)));
        }
        if round.rescan {
            messages.push(Change::Rescan);
        }
        if self.degraded {
            messages.push(Change::Degraded);
        }
        messages
    }

    fn on_event(
        &mut self,
        wd: &WatchDescriptor,
        mask: EventMask,
        name: Option<&Path>,
        changed: &mut Vec<PathBuf>,
    ) {
        let Some((dir, level)) = self.watches.get(wd).cloned() else {
            return;
        };
        if mask.contains(EventMask::IGNORED) {
            // The watched dir is gone; the kernel dropped the watch.
            if let Some((path, _)) = self.watches.remove(wd) {
                self.forget(&path, wd);
            }
            return;
        }
        let path = match name {
            Some(name) => dir.join(name),
            None => dir.clone(),
        };
        let is_dir = mask.contains(EventMask::ISDIR);
        let appeared = mask.intersects(EventMask::CREATE | EventMask::MOVED_TO);
        if appeared && is_dir {
            match level {
                Level::PodsDir => self.watch_pod(&path, changed),
                Level::PodDir => self.watch_container(&path, changed),
                _ => {}
            }
        }
        if appeared && !is_dir && level == Level::ContainerDir {
            self.watch_if_symlink(&path);
        }
        if level == Level::PodDir
            && let Some(pod) = dir.file_name().and_then(|n| n.to_str())
            && self.filter.excludes_pod_dir(pod)
        {
            return;
        }
        changed.push(path);
    }

    fn watch_pod(&mut self, pod: &Path, changed: &mut Vec<PathBuf>) {
        let excluded = pod
            .file_name()
            .and_then(|n| n.to_str())
            .is_none_or(|n| self.filter.excludes_pod_dir(n));
        if excluded || !self.watch(pod, Level::PodDir) {
            return;
        }
        // Containers created before the watch was in place have no event.
        for container in subdirs(pod) {
            self.watch_container(&container, changed);
        }
        changed.push(pod.to_path_buf());
    }

    fn watch_container(&mut self, container: &Path, changed: &mut Vec<PathBuf>) {
        if !self.watch(container, Level::ContainerDir) {
            return;
        }
        if let Ok(entries) = std::fs::read_dir(container) {
            for entry in entries.flatten() {
                self.watch_if_symlink(&entry.path());
            }
        }
        changed.push(container.to_path_buf());
    }

    /// cri-dockerd links the `.log` files to Docker's json-file logs: writes
    /// land in the target's directory, which is not watched, so the target
    /// file itself is.
    fn watch_if_symlink(&mut self, path: &Path) {
        let is_link = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
        if is_link {
            self.watch(path, Level::LinkedFile);
        }
    }

    /// Adds the watches of `path`; false when they could not all be added
    /// (gone, or out of watches: then the tree is rescanned periodically
    /// instead).
    fn watch(&mut self, path: &Path, level: Level) -> bool {
        if self.by_path.contains_key(path) {
            return true;
        }
        let (structure, content) = match level {
            Level::PodsDir | Level::PodDir => (Some(DIR_MASK), None),
            Level::ContainerDir => (Some(DIR_MASK), Some(CONTENT_DIR_MASK)),
            Level::LinkedFile => (None, Some(LINKED_FILE_MASK)),
        };
        let mut added = Vec::new();
        let result: io::Result<()> = (|| {
            if let Some(mask) = structure {
                let wd = self.add_watch(Instance::Structure, path, mask)?;
                self.watches.insert(wd.clone(), (path.to_path_buf(), level));
                added.push(wd);
            }
            if let Some(mask) = content {
                let wd = self.add_watch(Instance::Content, path, mask)?;
                self.content_watches.insert(wd.clone(), path.to_path_buf());
                added.push(wd);
            }
            Ok(())
        })();
        match result {
            Ok(()) => {
                self.by_path.insert(path.to_path_buf(), added);
                true
            }
            Err(e) => {
                self.unwatch(added);
                if e.kind() != io::ErrorKind::NotFound {
                    if !self.degraded {
                        log::warn!(
                            "cannot add an inotify watch for {} ({e}): rescanning the tree every second until watches can be added",
                            path.display()
                        );
                    }
                    self.degraded = true;
                }
                false
            }
        }
    }

    fn add_watch(
        &mut self,
        instance: Instance,
        path: &Path,
        mask: WatchMask,
    ) -> io::Result<WatchDescriptor> {
        if self
            .max_watches
            .is_some_and(|max| self.watch_count() >= max)
        {
            return Err(io::Error::from_raw_os_error(libc::ENOSPC)); // as the kernel says it
        }
        match instance {
            Instance::Structure => self.structure.watches().add(path, mask),
            Instance::Content => self.content.watches().add(path, mask),
        }
    }

    /// A watch of `path` is gone: the path is to be watched again when it
    /// comes back (unless it already has, with new watches).
    fn forget(&mut self, path: &Path, wd: &WatchDescriptor) {
        if self.by_path.get(path).is_some_and(|wds| wds.contains(wd)) {
            self.by_path.remove(path);
        }
    }

    /// Removes watches of a path that could only be half watched.
    fn unwatch(&mut self, wds: Vec<WatchDescriptor>) {
        for wd in wds {
            if self.watches.remove(&wd).is_some() {
                let _ = self.structure.watches().remove(wd);
            } else if self.content_watches.remove(&wd).is_some() {
                let _ = self.content.watches().remove(wd);
            }
        }
    }
}

#[derive(Clone, Copy)]
enum Instance {
    Structure,
    Content,
}

/// Sorted, each path once. Byte order, not Path's component-wise order:
/// this runs for every event of a busy node.
fn deduplicated(mut paths: Vec<PathBuf>) -> Vec<PathBuf> {
    paths.sort_unstable_by(|a, b| a.as_os_str().cmp(b.as_os_str()));
    paths.dedup();
    paths
}

/// The events queued on a non-blocking inotify instance; None when there
/// are none (left). An interrupted read ends the round too: poll(2) reports
/// what is left.
fn read_available<'a>(
    inotify: &mut Inotify,
    buffer: &'a mut [u8],
) -> io::Result<Option<Events<'a>>> {
    match inotify.read_events(buffer) {
        Ok(events) => Ok(Some(events)),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

fn subdirs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect()
}
