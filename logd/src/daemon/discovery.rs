//! Discovery: the `logd-inotify` thread. It watches the pods dir, every pod
//! dir and every container dir with inotify, and tells the parse thread which
//! paths changed. It blocks in read(2) and never polls.
//!
//! It is a hint source, not a source of truth: the tailing core re-reads the
//! directories it is pointed at, so a coalesced, duplicated or late event is
//! harmless. What must never happen is a *missed* file, so an event-queue
//! overflow or a watch that cannot be added turns into a full rescan.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};

use crossbeam_channel::Sender;
use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask};
use logd::TailerConfig;

/// What the parse thread is told.
#[derive(Debug)]
pub enum Change {
    /// These paths (files or dirs) were created, written, moved or deleted.
    Paths(Vec<PathBuf>),
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
    inotify: Inotify,
    pods_dir: PathBuf,
    /// Which pod dirs are never read, so never watched.
    filter: TailerConfig,
    watches: HashMap<WatchDescriptor, (PathBuf, Level)>,
    by_path: HashMap<PathBuf, WatchDescriptor>,
    /// Test-only stand-in for the kernel's `max_user_watches`, so the
    /// out-of-watches path can be tested without a machine-wide sysctl.
    max_watches: Option<usize>,
    /// A watch could not be added since the last full rescan.
    degraded: bool,
}

const DIR_MASK: WatchMask = WatchMask::CREATE
    .union(WatchMask::MOVED_TO)
    .union(WatchMask::MOVED_FROM)
    .union(WatchMask::DELETE)
    .union(WatchMask::DELETE_SELF)
    .union(WatchMask::ONLYDIR);
const CONTAINER_MASK: WatchMask = DIR_MASK.union(WatchMask::MODIFY);
const LINKED_FILE_MASK: WatchMask = WatchMask::MODIFY.union(WatchMask::DELETE_SELF);

/// Size of the read buffer: many events per read(2) under load.
const EVENT_BUFFER: usize = 64 * 1024;

impl Discovery {
    /// Discovery of `filter.pods_dir`, skipping the pods `filter` excludes.
    pub fn new(filter: TailerConfig, max_watches: Option<usize>) -> io::Result<Self> {
        Ok(Discovery {
            inotify: Inotify::init()?,
            pods_dir: filter.pods_dir.clone(),
            filter,
            watches: HashMap::new(),
            by_path: HashMap::new(),
            max_watches,
            degraded: false,
        })
    }

    /// Number of inotify watches held.
    pub fn watch_count(&self) -> usize {
        self.watches.len()
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
        loop {
            let mut changed = Vec::new();
            let mut rescan = false;
            match self.inotify.read_events_blocking(&mut buffer) {
                Ok(events) => {
                    for event in events {
                        if event.mask.contains(EventMask::Q_OVERFLOW) {
                            log::warn!(
                                "inotify event queue overflowed: rescanning {}",
                                self.pods_dir.display()
                            );
                            rescan = true;
                            continue;
                        }
                        let name = event.name.map(PathBuf::from);
                        self.on_event(&event.wd, event.mask, name.as_deref(), &mut changed);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::error!("reading inotify events failed: {e}; discovery stops");
                    return;
                }
            }
            if rescan {
                self.watch_tree();
            }
            let mut messages = Vec::new();
            if !changed.is_empty() {
                // Byte order, not Path's component-wise order: this runs
                // for every event of a busy node.
                changed.sort_unstable_by(|a, b| a.as_os_str().cmp(b.as_os_str()));
                changed.dedup();
                messages.push(Change::Paths(changed));
            }
            if rescan {
                messages.push(Change::Rescan);
            }
            if self.degraded {
                messages.push(Change::Degraded);
            }
            for message in messages {
                if tx.send(message).is_err() {
                    return;
                }
            }
        }
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
            // The watched dir or file is gone; the kernel dropped the watch.
            self.forget(wd);
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

    /// Adds a watch; false when it could not be added (gone, or out of
    /// watches: then the tree is rescanned periodically instead).
    fn watch(&mut self, path: &Path, level: Level) -> bool {
        if self.by_path.contains_key(path) {
            return true;
        }
        let mask = match level {
            Level::PodsDir | Level::PodDir => DIR_MASK,
            Level::ContainerDir => CONTAINER_MASK,
            Level::LinkedFile => LINKED_FILE_MASK,
        };
        let result = if self
            .max_watches
            .is_some_and(|max| self.watches.len() >= max)
        {
            Err(io::Error::from_raw_os_error(28)) // ENOSPC, as the kernel says it
        } else {
            self.inotify.watches().add(path, mask)
        };
        match result {
            Ok(wd) => {
                self.by_path.insert(path.to_path_buf(), wd.clone());
                self.watches.insert(wd, (path.to_path_buf(), level));
                true
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => false,
            Err(e) => {
                if !self.degraded {
                    log::warn!(
                        "cannot add an inotify watch for {} ({e}): rescanning the tree every second until watches can be added",
                        path.display()
                    );
                }
                self.degraded = true;
                false
            }
        }
    }

    fn forget(&mut self, wd: &WatchDescriptor) {
        if let Some((path, _)) = self.watches.remove(wd) {
            self.by_path.remove(&path);
        }
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
