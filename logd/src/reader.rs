//! One file being read: plain (by offset, with `pread`) or `.gz` (through a
//! decompressor; offsets are offsets in the decompressed stream). Holds the
//! bytes of an incomplete last line between reads and notices truncation.

use std::borrow::Borrow;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;

use flate2::read::MultiGzDecoder;
use memchr::memrchr;

/// A `Read` over a file at an explicit position (`pread`), so readers of the
/// same open file never share a seek position.
#[derive(Debug)]
pub struct PositionedFile<F: Borrow<File>> {
    file: F,
    pos: u64,
}

impl<F: Borrow<File>> PositionedFile<F> {
    pub fn new(file: F, pos: u64) -> Self {
        Self { file, pos }
    }

    pub fn get_ref(&self) -> &File {
        self.file.borrow()
    }
}

impl<F: Borrow<File>> Read for PositionedFile<F> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.borrow().read_at(buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

enum Source {
    Plain(File),
    Gz(Box<MultiGzDecoder<PositionedFile<File>>>),
}

/// What [`FileReader::fill`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fill {
    /// This many new bytes were appended.
    Read(usize),
    /// Nothing new for now (a plain file may still grow).
    Eof,
    /// The file is now smaller than what was read of it (copytruncate).
    Truncated { size: u64 },
}

/// The reading state of one open file.
pub struct FileReader {
    source: Source,
    /// File offset of the first byte not yet consumed (the start of `held`).
    offset: u64,
    /// Bytes read but not consumed yet: an incomplete last line.
    held: Vec<u8>,
    /// The file's size as last known: from its last fstat, or the end of the
    /// last read past it (for `.gz`, the compressed size at open).
    size: u64,
}

impl FileReader {
    /// Starts reading `file` at `offset` (in the decompressed stream when
    /// `gz`: the start is skipped by decompressing it).
    pub fn open(file: File, gz: bool, offset: u64) -> io::Result<Self> {
        let size = file.metadata()?.len();
        let source = if gz {
            let mut dec = MultiGzDecoder::new(PositionedFile::new(file, 0));
            let skipped = io::copy(&mut (&mut dec).take(offset), &mut io::sink())?;
            if skipped < offset {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("decompressed size {skipped} is below the checkpoint offset {offset}"),
                ));
            }
            Source::Gz(Box::new(dec))
        } else {
            Source::Plain(file)
        };
        Ok(Self {
            source,
            offset,
            held: Vec::new(),
            size,
        })
    }

    /// The open file being read.
    pub fn file(&self) -> &File {
        match &self.source {
            Source::Plain(file) => file,
            Source::Gz(dec) => dec.get_ref().get_ref(),
        }
    }

    /// True when reading through a decompressor.
    pub fn is_compressed(&self) -> bool {
        matches!(self.source, Source::Gz(_))
    }

    /// File offset of the first byte not consumed yet.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The file's size as last known (see the field; compressed for `.gz`).
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Bytes read but not consumed (an incomplete line), counted in `offset`'s favour.
    pub fn held_len(&self) -> usize {
        self.held.len()
    }

    /// Starts a round of reading: `buf` becomes the held bytes, which start at [`Self::offset`].
    pub fn take_held(&mut self, buf: &mut Vec<u8>) {
        buf.clear();
        buf.extend_from_slice(&self.held);
        self.held.clear();
    }

    /// Appends up to `max` new bytes to `buf`, which holds the unconsumed
    /// bytes from [`Self::offset`] on.
    pub fn fill(&mut self, buf: &mut Vec<u8>, max: usize) -> io::Result<Fill> {
        let old = buf.len();
        let n = match &mut self.source {
            Source::Plain(file) => {
                // Read first, stat only when nothing came: in the steady
                // state a round is one pread(2) per file, not an fstat, an
                // lseek and a read.
                let read_pos = self.offset + old as u64;
                let n = pread_append(file, buf, max, read_pos)?;
                if n == 0 {
                    self.size = file.metadata()?.len();
                    if self.size < read_pos {
                        return Ok(Fill::Truncated { size: self.size });
                    }
                }
                self.size = self.size.max(read_pos + n as u64);
                n
            }
            Source::Gz(dec) => {
                buf.resize(old + max, 0);
                let n = read_retrying(|| dec.read(&mut buf[old..]));
                buf.truncate(old + *n.as_ref().unwrap_or(&0));
                n?
            }
        };
        Ok(if n == 0 { Fill::Eof } else { Fill::Read(n) })
    }

    /// The first `n` bytes of the round's buffer were turned into lines.
    pub fn consume(&mut self, n: usize) {
        self.offset += n as u64;
    }

    /// Ends a round: `rest` (the unconsumed bytes, from [`Self::offset`] on) is kept.
    pub fn hold(&mut self, rest: &[u8]) {
        self.held.clear();
        self.held.extend_from_slice(rest);
        if self.held.capacity() > 4 * rest.len().max(4096) {
            self.held.shrink_to_fit();
        }
    }

    /// Reads again from the start (after a truncation): held bytes are dropped.
    pub fn restart(&mut self) {
        self.offset = 0;
        self.held = Vec::new();
    }
}

/// pread(2) of up to `max` bytes at `pos`, appended to `buf` (its spare
/// capacity, not zeroed first: std's `read_buf_at` is not stable yet).
fn pread_append(file: &File, buf: &mut Vec<u8>, max: usize, pos: u64) -> io::Result<usize> {
    buf.reserve(max);
    let spare = &mut buf.spare_capacity_mut()[..max];
    let offset = libc::off_t::try_from(pos).map_err(|_| io::ErrorKind::InvalidInput)?;
    let n = read_retrying(|| {
        // SAFETY: `spare` is `max` bytes of writable memory owned by `buf`;
        // pread writes at most that many.
        let n = unsafe { libc::pread(file.as_raw_fd(), spare.as_mut_ptr().cast(), max, offset) };
        usize::try_from(n).map_err(|_| io::Error::last_os_error())
    })?;
    // SAFETY: pread initialised the first `n` (<= max) spare bytes.
    unsafe { buf.set_len(buf.len() + n) };
    Ok(n)
}

fn read_retrying(mut read: impl FnMut() -> io::Result<usize>) -> io::Result<usize> {
    loop {
        match read() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            r => return r,
        }
    }
}

/// The offset just past the last `\n` of a plain file (0 when it has none):
/// where reading "from the end" starts, so no line is shipped cut.
pub fn end_of_last_line(file: &File) -> io::Result<u64> {
    const BLOCK: u64 = 64 * 1024;
    let mut end = file.metadata()?.len();
    let mut block = vec![0u8; BLOCK as usize];
    while end > 0 {
        let start = end.saturating_sub(BLOCK);
        let buf = &mut block[..(end - start) as usize];
        file.read_exact_at(buf, start)?;
        if let Some(i) = memrchr(b'\n', buf) {
            return Ok(start + i as u64 + 1);
        }
        end = start;
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::Compression;
    use flate2::write::GzEncoder;
    use std::io::Write;

    fn read_all(r: &mut FileReader) -> Vec<u8> {
        let mut buf = Vec::new();
        r.take_held(&mut buf);
        while let Fill::Read(_) = r.fill(&mut buf, 7).unwrap() {}
        buf
    }

    #[test]
    fn plain_file_is_read_from_an_offset_and_growth_is_seen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"hello\nworld\n").unwrap();
        let mut r = FileReader::open(File::open(&path).unwrap(), false, 6).unwrap();
        assert_eq!(read_all(&mut r), b"world\n");
        r.consume(6);
        r.hold(b"");
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"more")
            .unwrap();
        assert_eq!(read_all(&mut r), b"more");
    }

    #[test]
    fn held_bytes_come_back_at_the_next_round() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"abc").unwrap();
        let mut r = FileReader::open(File::open(&path).unwrap(), false, 0).unwrap();
        let buf = read_all(&mut r);
        r.hold(&buf);
        assert_eq!(r.held_len(), 3);
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"def\n")
            .unwrap();
        assert_eq!(read_all(&mut r), b"abcdef\n");
    }

    #[test]
    fn truncation_below_the_offset_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"hello\nworld\n").unwrap();
        let mut r = FileReader::open(File::open(&path).unwrap(), false, 12).unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(3)
            .unwrap();
        let mut buf = Vec::new();
        assert_eq!(r.fill(&mut buf, 100).unwrap(), Fill::Truncated { size: 3 });
        r.restart();
        assert_eq!(read_all(&mut r), b"hel");
    }

    #[test]
    fn gz_is_resumed_at_a_decompressed_offset() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.gz");
        let mut enc = GzEncoder::new(Vec::new(), Compression::default());
        enc.write_all(b"line one\nline two\n").unwrap();
        std::fs::write(&path, enc.finish().unwrap()).unwrap();
        let mut r = FileReader::open(File::open(&path).unwrap(), true, 9).unwrap();
        assert_eq!(read_all(&mut r), b"line two\n");
        assert!(FileReader::open(File::open(&path).unwrap(), true, 100).is_err());
    }

    #[test]
    fn end_of_last_line_skips_an_incomplete_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"one\ntwo\nthr").unwrap();
        assert_eq!(end_of_last_line(&File::open(&path).unwrap()).unwrap(), 8);
        std::fs::write(&path, b"none").unwrap();
        assert_eq!(end_of_last_line(&File::open(&path).unwrap()).unwrap(), 0);
    }
}
