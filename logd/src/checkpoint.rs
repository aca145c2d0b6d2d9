//! How read offsets survive restarts: a store of per-file offsets keyed by
//! fingerprint, saved as JSON atomically (temp file, fsync, rename, fsync of
//! the dir) and loaded at start. A corrupt store is logged and set aside,
//! never a crash.
//!
//! Offsets of `.gz` files are offsets in the decompressed stream, which is
//! the same stream as the plain file they were made from.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::fingerprint::Fingerprint;

/// The store's file name in the state dir.
pub const CHECKPOINT_FILE: &str = "checkpoints.json";
const FORMAT_VERSION: u32 = 1;

/// What is known of one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// Where the file was last seen (informational: files are found by fingerprint).
    pub path: PathBuf,
    /// `<namespace>_<pod>_<uid>/<container>`: whose file it is.
    pub container: String,
    /// Every line before this offset was acknowledged by the intake.
    pub offset: u64,
    /// The file was read to its end and released: never read it again.
    pub finished: bool,
}

/// The offsets of every file logd knows, keyed by fingerprint.
#[derive(Debug, Clone, Default)]
pub struct CheckpointStore {
    entries: HashMap<Fingerprint, Checkpoint>,
    first_start: bool,
}

impl CheckpointStore {
    /// A store with no state at all: logd's very first start on this node.
    pub fn first_start() -> Self {
        Self {
            entries: HashMap::new(),
            first_start: true,
        }
    }

    /// Loads the store saved in `state_dir`. No file means a first start. A
    /// file that cannot be parsed is renamed aside
    /// (`checkpoints.json.corrupt-<unix time>`) and logged as an error, and
    /// the store starts as on a first start (files are then read per
    /// `read_from`); an unreadable file is logged the same way.
    pub fn load(state_dir: &Path) -> Self {
        let path = state_dir.join(CHECKPOINT_FILE);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                log::info!("no checkpoints in {}: first start", state_dir.display());
                return Self::first_start();
            }
            Err(e) => {
                log::error!(
                    "cannot read {}: {e}; starting as on a first start",
                    path.display()
                );
                return Self::first_start();
            }
        };
        match parse(&bytes) {
            Ok(entries) => {
                log::info!(
                    "loaded {} checkpoints from {}",
                    entries.len(),
                    path.display()
                );
                Self {
                    entries,
                    first_start: false,
                }
            }
            Err(why) => {
                let secs = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_secs();
                let aside = state_dir.join(format!("{CHECKPOINT_FILE}.corrupt-{secs}"));
                match fs::rename(&path, &aside) {
                    Ok(()) => log::error!(
                        "checkpoints in {} are corrupt ({why}); set aside as {}; starting as on a first start",
                        path.display(),
                        aside.display()
                    ),
                    Err(e) => log::error!(
                        "checkpoints in {} are corrupt ({why}) and cannot be set aside ({e}); starting as on a first start",
                        path.display()
                    ),
                }
                Self::first_start()
            }
        }
    }

    /// True when there was no state at all (see [`Self::load`]).
    pub fn is_first_start(&self) -> bool {
        self.first_start
    }

    /// Marks the first start as over: from now on every new file is read from its beginning.
    pub fn end_first_start(&mut self) {
        self.first_start = false;
    }

    pub fn get(&self, fp: Fingerprint) -> Option<&Checkpoint> {
        self.entries.get(&fp)
    }

    pub fn set(&mut self, fp: Fingerprint, checkpoint: Checkpoint) {
        self.entries.insert(fp, checkpoint);
    }

    pub fn remove(&mut self, fp: Fingerprint) -> Option<Checkpoint> {
        self.entries.remove(&fp)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (Fingerprint, &Checkpoint)> {
        self.entries.iter().map(|(fp, cp)| (*fp, cp))
    }

    /// Keeps only the entries for which `keep` is true.
    pub fn retain(&mut self, mut keep: impl FnMut(Fingerprint, &Checkpoint) -> bool) {
        self.entries.retain(|fp, cp| keep(*fp, cp));
    }

    /// A copy to hand to the checkpoint writer.
    pub fn snapshot(&self) -> Checkpoints {
        let mut files: Vec<Record> = self
            .entries
            .iter()
            .map(|(fp, cp)| Record {
                fingerprint: fp.to_hex(),
                path: cp.path.to_string_lossy().into_owned(),
                container: cp.container.clone(),
                offset: cp.offset,
                finished: cp.finished,
            })
            .collect();
        files.sort_by(|a, b| (&a.container, &a.path).cmp(&(&b.container, &b.path)));
        Checkpoints { files }
    }
}

/// A snapshot of the store, ready to be saved (by the checkpoint writer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoints {
    files: Vec<Record>,
}

impl Checkpoints {
    /// Number of files in the snapshot.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// Writes the snapshot to `state_dir` atomically: a temp file in the same
    /// dir, written and fsynced, renamed over the store, then the dir fsynced.
    /// On error the previous store is left intact.
    pub fn save(&self, state_dir: &Path) -> io::Result<()> {
        let json = serde_json::to_vec(&FileFormat {
            version: FORMAT_VERSION,
            files: self.files.clone(),
        })
        .map_err(io::Error::other)?;
        let tmp = state_dir.join(format!("{CHECKPOINT_FILE}.tmp"));
        let result = (|| {
            let mut file = File::create(&tmp)?;
            file.write_all(&json)?;
            file.sync_all()?;
            fs::rename(&tmp, state_dir.join(CHECKPOINT_FILE))?;
            File::open(state_dir)?.sync_all()
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }
}

#[derive(Serialize, Deserialize)]
struct FileFormat {
    version: u32,
    files: Vec<Record>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Record {
    fingerprint: String,
    path: String,
    container: String,
    offset: u64,
    finished: bool,
}

fn parse(bytes: &[u8]) -> Result<HashMap<Fingerprint, Checkpoint>, String> {
    let format: FileFormat = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    if format.version != FORMAT_VERSION {
        return Err(format!("unknown version {}", format.version));
    }
    format
        .files
        .into_iter()
        .map(|r| {
            let fp = Fingerprint::from_hex(&r.fingerprint)
                .ok_or_else(|| format!("bad fingerprint {:?}", r.fingerprint))?;
            Ok((
                fp,
                Checkpoint {
                    path: r.path.into(),
                    container: r.container,
                    offset: r.offset,
                    finished: r.finished,
                },
            ))
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::{Mutex, Once};

    /// Log lines of every test in this process (tests filter by their own temp paths).
    pub(crate) fn captured_logs() -> &'static Mutex<Vec<String>> {
        struct Capture;
        static LINES: Mutex<Vec<String>> = Mutex::new(Vec::new());
        impl log::Log for Capture {
            fn enabled(&self, _: &log::Metadata) -> bool {
                true
            }
            fn log(&self, record: &log::Record) {
                LINES
                    .lock()
                    .unwrap()
                    .push(format!("{} {}", record.level(), record.args()));
            }
            fn flush(&self) {}
        }
        static INIT: Once = Once::new();
        INIT.call_once(|| {
            log::set_logger(&Capture).expect("no other logger in unit tests");
            log::set_max_level(log::LevelFilter::Debug);
        });
        &LINES
    }

    fn entry(offset: u64, finished: bool) -> Checkpoint {
        Checkpoint {
            path: "/var/log/pods/ns_p_u/c/0.log".into(),
            container: "ns_p_u/c".into(),
            offset,
            finished,
        }
    }

    #[test]
    fn saved_store_loads_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = CheckpointStore::first_start();
        store.set(Fingerprint(1), entry(42, false));
        store.set(Fingerprint(u64::MAX), entry(7, true));
        store.snapshot().save(dir.path()).unwrap();
        let loaded = CheckpointStore::load(dir.path());
        assert!(!loaded.is_first_start());
        assert_eq!(loaded.get(Fingerprint(1)), Some(&entry(42, false)));
        assert_eq!(loaded.get(Fingerprint(u64::MAX)), Some(&entry(7, true)));
        assert_eq!(loaded.len(), 2);
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [CHECKPOINT_FILE], "no temp file is left behind");
    }

    #[test]
    fn missing_store_is_a_first_start_and_an_empty_saved_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        assert!(CheckpointStore::load(dir.path()).is_first_start());
        CheckpointStore::first_start()
            .snapshot()
            .save(dir.path())
            .unwrap();
        assert!(!CheckpointStore::load(dir.path()).is_first_start());
    }

    #[test]
    fn corrupt_checkpoint_is_set_aside_and_logged() {
        let logs = captured_logs();
        for bad in [
            &b"{\"version\":1,\"files\":[{\"fingerp"[..],
            b"\0\0\0",
            br#"{"version":9,"files":[]}"#,
        ] {
            let dir = tempfile::tempdir().unwrap();
            fs::write(dir.path().join(CHECKPOINT_FILE), bad).unwrap();
            let store = CheckpointStore::load(dir.path());
            assert!(store.is_first_start() && store.is_empty());
            let names: Vec<String> = fs::read_dir(dir.path())
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            assert_eq!(names.len(), 1);
            assert!(
                names[0].starts_with("checkpoints.json.corrupt-"),
                "{names:?}"
            );
            let needle = dir.path().join(&names[0]).display().to_string();
            assert!(
                logs.lock()
                    .unwrap()
                    .iter()
                    .any(|l| l.starts_with("ERROR") && l.contains(&needle)),
                "an error names the set-aside file"
            );
        }
    }

    #[test]
    fn failed_save_keeps_the_previous_store() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = CheckpointStore::first_start();
        store.set(Fingerprint(1), entry(1, false));
        store.snapshot().save(dir.path()).unwrap();
        // The temp file's name is taken by a directory: the save fails.
        fs::create_dir(dir.path().join(format!("{CHECKPOINT_FILE}.tmp"))).unwrap();
        store.set(Fingerprint(1), entry(2, false));
        assert!(store.snapshot().save(dir.path()).is_err());
        assert_eq!(
            CheckpointStore::load(dir.path())
                .get(Fingerprint(1))
                .unwrap()
                .offset,
            1
        );
    }
}
