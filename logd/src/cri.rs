//! The CRI log line format kubelet's runtimes write:
//! `<RFC3339Nano timestamp> <stdout|stderr> <P|F> <content>`.

use memchr::memchr;

/// Which output stream a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn as_bytes(self) -> &'static [u8] {
        match self {
            Stream::Stdout => b"stdout",
            Stream::Stderr => b"stderr",
        }
    }

    /// 0 for stdout, 1 for stderr: an index for per-stream state.
    pub fn index(self) -> usize {
        self as usize
    }

    pub fn from_name(name: &[u8]) -> Option<Self> {
        match name {
            b"stdout" => Some(Stream::Stdout),
            b"stderr" => Some(Stream::Stderr),
            _ => None,
        }
    }
}

/// A line split into its CRI fields. The timestamp is not validated here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CriLine<'a> {
    pub timestamp: &'a [u8],
    pub stream: Stream,
    /// `P`: the line continues in the next part of the same stream.
    pub partial: bool,
    pub content: &'a [u8],
}

/// The longest timestamp considered: 9 fraction digits and a `+hh:mm` offset
/// is 35 bytes; a little more is allowed so long fractions still parse.
const MAX_TIMESTAMP_LEN: usize = 40;

/// Splits `line` (without its `\n`) into CRI fields; `None` when it does not
/// have the shape (the caller then tries other formats).
#[inline]
pub fn split(line: &[u8]) -> Option<CriLine<'_>> {
    if !line.first()?.is_ascii_digit() {
        return None;
    }
    let space = memchr(b' ', &line[..line.len().min(MAX_TIMESTAMP_LEN)])?;
    let rest = &line[space + 1..];
    let stream = match rest.get(..7)? {
        b"stdout " => Stream::Stdout,
        b"stderr " => Stream::Stderr,
        _ => return None,
    };
    let partial = match rest.get(7)? {
        b'F' => false,
        b'P' => true,
        _ => return None,
    };
    let content = match rest.get(8) {
        None => &rest[8..],
        Some(b' ') => &rest[9..],
        Some(_) => return None,
    };
    Some(CriLine {
        timestamp: &line[..space],
        stream,
        partial,
        content,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_and_partial_lines_are_split() {
        let l = split(b"2024-11-18T08:59:45.123456789Z stdout F hello world").unwrap();
        assert_eq!(l.timestamp, b"2024-11-18T08:59:45.123456789Z");
        assert_eq!(
            (l.stream, l.partial, l.content),
            (Stream::Stdout, false, &b"hello world"[..])
        );
        let l = split(b"2024-11-18T08:59:45Z stderr P part").unwrap();
        assert_eq!(
            (l.stream, l.partial, l.content),
            (Stream::Stderr, true, &b"part"[..])
        );
    }

    #[test]
    fn empty_content_with_or_without_trailing_space() {
        assert_eq!(
            split(b"2024-11-18T08:59:45Z stdout F ").unwrap().content,
            b""
        );
        assert_eq!(
            split(b"2024-11-18T08:59:45Z stdout F").unwrap().content,
            b""
        );
    }

    #[test]
    fn other_shapes_are_not_cri() {
        for line in [
            &b"hello"[..],
            b"2024-11-18T08:59:45Z stdin F x",
            b"2024-11-18T08:59:45Z stdout X x",
            b"2024-11-18T08:59:45Z stdout Fx",
            b"2024-11-18T08:59:45Z",
            b"{\"log\":\"x\"}",
            b"",
        ] {
            assert_eq!(split(line), None, "{}", String::from_utf8_lossy(line));
        }
    }
}
