//! How a log file is recognised across renames, compression and restarts:
//! by a fingerprint of its first line (decompressed for `.gz`), not by its
//! name or inode. Device and inode only stand in until the first line is
//! complete.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;

use flate2::read::MultiGzDecoder;
use memchr::memchr;

use crate::reader::PositionedFile;

/// At most this many bytes of the first line are hashed.
pub const FINGERPRINT_BYTES: usize = 256;

/// A hash of a file's first line (FNV-1a, 64 bits: stable across builds and
/// releases, unlike `std`'s hasher, because it is persisted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fingerprint(pub u64);

impl Fingerprint {
    /// The fingerprint of `head`, the start of a file: its first line, `\n`
    /// included, capped at [`FINGERPRINT_BYTES`]. `None` while the first line
    /// is shorter than the cap and not complete yet.
    pub fn of_head(head: &[u8]) -> Option<Self> {
        let head = &head[..head.len().min(FINGERPRINT_BYTES)];
        let line = match memchr(b'\n', head) {
            Some(nl) => &head[..=nl],
            None if head.len() == FINGERPRINT_BYTES => head,
            None => return None,
        };
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for &b in line {
            hash ^= u64::from(b);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
        Some(Self(hash))
    }

    /// Sixteen hex digits, the form stored in checkpoints.
    pub fn to_hex(self) -> String {
        format!("{:016x}", self.0)
    }

    pub fn from_hex(s: &str) -> Option<Self> {
        (s.len() == 16).then(|| u64::from_str_radix(s, 16).ok().map(Self))?
    }
}

/// A file's identity: the type says which identification is in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileId {
    /// The first line is known: the identity that survives renames,
    /// compression and restarts.
    FirstLine(Fingerprint),
    /// The first line is not complete yet. Only used for files logd holds
    /// open (an open file's inode cannot be reused); never persisted.
    DevInode { dev: u64, ino: u64 },
}

impl FileId {
    pub fn fingerprint(self) -> Option<Fingerprint> {
        match self {
            FileId::FirstLine(fp) => Some(fp),
            FileId::DevInode { .. } => None,
        }
    }
}

/// Identifies an open file from its first bytes (decompressed when `gz`).
pub fn identify(file: &File, gz: bool) -> io::Result<FileId> {
    let mut head = [0u8; FINGERPRINT_BYTES];
    let n = if gz {
        read_up_to(
            &mut MultiGzDecoder::new(PositionedFile::new(file, 0)),
            &mut head,
        )?
    } else {
        read_up_to(&mut PositionedFile::new(file, 0), &mut head)?
    };
    match Fingerprint::of_head(&head[..n]) {
        Some(fp) => Ok(FileId::FirstLine(fp)),
        None => {
            let md = file.metadata()?;
            Ok(FileId::DevInode {
                dev: md.dev(),
                ino: md.ino(),
            })
        }
    }
}

/// Reads until `buf` is full or the end of input; returns the bytes read.
fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::Compression;
    use flate2::write::GzEncoder;
    use std::io::Write;

    fn write(dir: &tempfile::TempDir, name: &str, data: &[u8]) -> File {
        let path = dir.path().join(name);
        std::fs::write(&path, data).unwrap();
        File::open(path).unwrap()
    }

    #[test]
    fn complete_first_line_shorter_than_the_cap_counts() {
        let dir = tempfile::tempdir().unwrap();
        let a = identify(&write(&dir, "a", b"first\nsecond\n"), false).unwrap();
        let b = identify(&write(&dir, "b", b"first\nother\n"), false).unwrap();
        assert!(matches!(a, FileId::FirstLine(_)));
        assert_eq!(a, b);
    }

    #[test]
    fn incomplete_short_first_line_stands_in_with_dev_inode() {
        let dir = tempfile::tempdir().unwrap();
        let f = write(&dir, "a", b"no newline yet");
        let md = f.metadata().unwrap();
        assert_eq!(
            identify(&f, false).unwrap(),
            FileId::DevInode {
                dev: md.dev(),
                ino: md.ino()
            }
        );
        assert!(Fingerprint::of_head(b"").is_none());
    }

    #[test]
    fn first_line_longer_than_the_cap_is_hashed_on_the_cap() {
        let long = vec![b'x'; FINGERPRINT_BYTES + 10];
        let mut longer = long.clone();
        longer.extend_from_slice(b"tail\n");
        assert!(Fingerprint::of_head(&long).is_some());
        assert_eq!(Fingerprint::of_head(&long), Fingerprint::of_head(&longer));
    }

    #[test]
    fn inode_reuse_is_a_new_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        std::fs::write(&path, b"2024-11-18T08:00:00.1Z stdout F old\n").unwrap();
        let old = identify(&File::open(&path).unwrap(), false).unwrap();
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, b"2024-11-18T08:00:00.2Z stdout F new\n").unwrap();
        let new = identify(&File::open(&path).unwrap(), false).unwrap();
        assert_ne!(old, new);
    }

    #[test]
    fn gz_of_a_rotated_file_has_its_fingerprint() {
        let dir = tempfile::tempdir().unwrap();
        let data =
            b"2024-11-18T08:00:00.1Z stdout F first\n2024-11-18T08:00:00.2Z stdout F second\n";
        let plain = identify(&write(&dir, "0.log.20241118-080000", data), false).unwrap();
        let mut enc = GzEncoder::new(Vec::new(), Compression::default());
        enc.write_all(data).unwrap();
        let gz = identify(
            &write(&dir, "0.log.20241118-080000.gz", &enc.finish().unwrap()),
            true,
        )
        .unwrap();
        assert_eq!(plain, gz);
    }

    #[test]
    fn hex_form_round_trips() {
        let fp = Fingerprint(0x0123_4567_89ab_cdef);
        assert_eq!(fp.to_hex(), "0123456789abcdef");
        assert_eq!(Fingerprint::from_hex(&fp.to_hex()), Some(fp));
        assert_eq!(Fingerprint::from_hex("xyz"), None);
    }
}
