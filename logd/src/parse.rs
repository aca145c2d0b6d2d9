//! Turns the physical lines of a log file into the lines the intake wants:
//! `<UTC Z timestamp> <stream> F <content>\n`, valid UTF-8, content capped.
//!
//! CRI lines (`cri`), Docker json-file lines (`docker`) and anything else
//! (passed through, stamped with the read time, stream `stdout`) are handled;
//! partial lines (`P`, or json `log` without `\n`) are reassembled per stream,
//! and keep the timestamp of their first part.
//!
//! Fast path: a CRI `F` line with a canonical `Z` timestamp, valid UTF-8 and
//! content within the cap is copied as is (UTF-8 is checked once for a whole
//! run of lines).

use std::borrow::Cow;

use memchr::{memchr, memrchr};

use crate::cri::{self, Stream};
use crate::docker;
use crate::timestamp::{self, Stamp};

/// Appended to a line cut at `max_line_bytes`.
pub const TRUNCATED_SUFFIX: &[u8] = b" [truncated]";

/// `max_line_bytes` below this is raised to it (the cut must leave room for
/// the suffix and a little text).
pub const MIN_MAX_LINE_BYTES: usize = 64;

/// Lines per UTF-8 check at least: the check runs over a run of lines at once.
const MIN_VALIDATION_RUN: usize = 64 * 1024;

/// What one call to [`LineParser::parse`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ParseOutcome {
    /// Bytes of input consumed: whole physical lines, `\n` included.
    pub consumed: usize,
    /// Lines appended to the output.
    pub lines: usize,
}

/// A line being reassembled from partial parts on one stream.
#[derive(Debug, Default)]
struct Pending {
    active: bool,
    /// File offset of the first part's first byte.
    start: u64,
    /// `<timestamp> <stream> F ` of the first part.
    head: Vec<u8>,
    /// Raw content so far, capped a little above `max_line_bytes`.
    content: Vec<u8>,
    /// Content was dropped beyond the cap: the line will be cut.
    overflow: bool,
}

/// Parser state of one file: pending partial lines per stream, and the
/// offset up to which every byte has been turned into output lines.
#[derive(Debug)]
pub struct LineParser {
    max_line_bytes: usize,
    pending: [Pending; 2],
    quiescent: u64,
}

impl LineParser {
    /// A parser for a file read from `offset`. The content of an output line
    /// (after `<stream> F `) is at most `max_line_bytes` bytes, the
    /// ` [truncated]` suffix included (so for the hik8s intake, whose 30,720
    /// cap counts from after the `Z`, pass `30_720 - " stdout F ".len()`).
    pub fn new(max_line_bytes: usize, offset: u64) -> Self {
        Self {
            max_line_bytes: max_line_bytes.max(MIN_MAX_LINE_BYTES),
            pending: Default::default(),
            quiescent: offset,
        }
    }

    /// The file offset just past the last physical line after which no
    /// partial line was pending on either stream: every line that starts
    /// before it has been output. Reading again from here after a restart
    /// reproduces whole lines only (a resume point between the parts of an
    /// interleaved partial line would produce a fragment).
    pub fn quiescent_offset(&self) -> u64 {
        self.quiescent
    }

    /// File offset where the oldest pending partial line starts, if any.
    pub fn pending_since(&self) -> Option<u64> {
        self.pending
            .iter()
            .filter(|p| p.active)
            .map(|p| p.start)
            .min()
    }

    /// Parses the complete lines of `buf` (whose first byte is at file
    /// `offset`) and appends output lines to `out`. Stops at the last `\n`, or
    /// once the output grew by `max_out` bytes (after at least one line).
    pub fn parse(
        &mut self,
        buf: &[u8],
        offset: u64,
        max_out: usize,
        now: &Stamp,
        out: &mut Vec<u8>,
    ) -> ParseOutcome {
        let out_start = out.len();
        let mut done = ParseOutcome::default();
        while done.consumed < buf.len() {
            let rest = &buf[done.consumed..];
            let budget = max_out
                .saturating_sub(out.len() - out_start)
                .max(MIN_VALIDATION_RUN);
            let run_end = match memrchr(b'\n', &rest[..rest.len().min(budget)]) {
                Some(i) => i + 1,
                None => match memchr(b'\n', rest) {
                    Some(i) => i + 1,
                    None => break,
                },
            };
            let run = &rest[..run_end];
            let utf8_valid = simdutf8::basic::from_utf8(run).is_ok();
            let mut pos = 0;
            while pos < run.len() {
                let end = pos + memchr(b'\n', &run[pos..]).expect("a run ends with a newline");
                let start_offset = offset + (done.consumed + pos) as u64;
                let end_offset = offset + (done.consumed + end + 1) as u64;
                done.lines += self.push_line(
                    &run[pos..end],
                    utf8_valid,
                    start_offset,
                    end_offset,
                    now,
                    out,
                );
                pos = end + 1;
                if out.len() - out_start >= max_out {
                    done.consumed += pos;
                    return done;
                }
            }
            done.consumed += run_end;
        }
        done
    }

    /// Parses one physical line (without its `\n`) spanning file offsets
    /// `start..end`; `utf8_valid` says it is known to be valid UTF-8. Returns
    /// the number of lines appended to `out` (0 or 1).
    #[inline]
    pub fn push_line(
        &mut self,
        line: &[u8],
        utf8_valid: bool,
        start: u64,
        end: u64,
        now: &Stamp,
        out: &mut Vec<u8>,
    ) -> usize {
        let emitted = if let Some(l) = cri::split(line) {
            if !l.partial
                && utf8_valid
                && l.content.len() <= self.max_line_bytes
                && !self.pending[l.stream.index()].active
                && timestamp::is_canonical_utc(l.timestamp)
            {
                out.reserve(line.len() + 1);
                out.extend_from_slice(line);
                out.push(b'\n');
                1
            } else {
                self.part(
                    l.timestamp,
                    l.stream,
                    l.partial,
                    l.content,
                    utf8_valid,
                    start,
                    line,
                    now,
                    out,
                )
            }
        } else if let Some(d) = docker_line(line) {
            self.part(
                d.time.as_bytes(),
                d.stream,
                d.partial,
                d.content.as_bytes(),
                true,
                start,
                line,
                now,
                out,
            )
        } else {
            self.passthrough(line, utf8_valid, now, out)
        };
        if !self.pending[0].active && !self.pending[1].active {
            self.quiescent = end;
        }
        emitted
    }

    /// Outputs the pending partial lines (oldest first) as they are: the file
    /// is released and their remaining parts will never come. Every byte up
    /// to `end` then counts as output.
    pub fn finish(&mut self, end: u64, out: &mut Vec<u8>) -> usize {
        let mut order = [0, 1];
        order.sort_by_key(|&i| self.pending[i].start);
        let mut lines = 0;
        for i in order {
            if self.pending[i].active {
                self.emit_pending(i, out);
                lines += 1;
            }
        }
        self.quiescent = end;
        lines
    }

    /// One part (`partial`) or a whole line of `stream` with the given fields.
    #[allow(clippy::too_many_arguments)]
    fn part(
        &mut self,
        ts: &[u8],
        stream: Stream,
        partial: bool,
        content: &[u8],
        utf8_valid: bool,
        start: u64,
        line: &[u8],
        now: &Stamp,
        out: &mut Vec<u8>,
    ) -> usize {
        let max = self.max_line_bytes;
        let p = &mut self.pending[stream.index()];
        if p.active {
            // A continuation: its own timestamp is not used.
            let room = (max + 4).saturating_sub(p.content.len());
            if content.len() > room {
                p.content.extend_from_slice(&content[..room]);
                p.overflow = true;
            } else {
                p.content.extend_from_slice(content);
            }
            if partial {
                return 0;
            }
            self.emit_pending(stream.index(), out);
            return 1;
        }
        if partial {
            p.head.clear();
            if !timestamp::write_normalized(ts, &mut p.head) {
                return self.passthrough(line, utf8_valid, now, out);
            }
            write_stream_tag(&mut p.head, stream);
            p.active = true;
            p.start = start;
            p.content.clear();
            p.overflow = false;
            let keep = content.len().min(max + 4);
            p.content.extend_from_slice(&content[..keep]);
            p.overflow = keep < content.len();
            return 0;
        }
        let line_start = out.len();
        if !timestamp::write_normalized(ts, out) {
            out.truncate(line_start);
            return self.passthrough(line, utf8_valid, now, out);
        }
        write_stream_tag(out, stream);
        write_content(out, content, utf8_valid, false, max);
        1
    }

    fn passthrough(&self, line: &[u8], utf8_valid: bool, now: &Stamp, out: &mut Vec<u8>) -> usize {
        out.extend_from_slice(now.as_bytes());
        write_stream_tag(out, Stream::Stdout);
        write_content(out, line, utf8_valid, false, self.max_line_bytes);
        1
    }

    fn emit_pending(&mut self, i: usize, out: &mut Vec<u8>) {
        let max = self.max_line_bytes;
        let p = &mut self.pending[i];
        out.extend_from_slice(&p.head);
        write_content(out, &p.content, false, p.overflow, max);
        p.active = false;
        // Partial lines are rare: their buffer is not kept for the file's
        // lifetime (over hundreds of files those add up to megabytes).
        p.content = Vec::new();
        p.overflow = false;
    }
}

/// A json-file record, tried only for lines that look like JSON objects.
fn docker_line(line: &[u8]) -> Option<docker::DockerLine<'_>> {
    if line.first() == Some(&b'{') {
        docker::decode(line)
    } else {
        None
    }
}

fn write_stream_tag(out: &mut Vec<u8>, stream: Stream) {
    out.push(b' ');
    out.extend_from_slice(stream.as_bytes());
    out.extend_from_slice(b" F ");
}

/// Appends `content` as valid UTF-8 (invalid bytes become U+FFFD), cut on a
/// character boundary with the suffix when longer than `max` (or when the
/// caller already dropped some: `overflow`), then `\n`.
fn write_content(out: &mut Vec<u8>, content: &[u8], utf8_valid: bool, overflow: bool, max: usize) {
    let content: Cow<'_, [u8]> = if utf8_valid || simdutf8::basic::from_utf8(content).is_ok() {
        Cow::Borrowed(content)
    } else {
        Cow::Owned(String::from_utf8_lossy(content).into_owned().into_bytes())
    };
    if content.len() > max || overflow {
        let cut = floor_char_boundary(&content, max - TRUNCATED_SUFFIX.len());
        out.extend_from_slice(&content[..cut]);
        out.extend_from_slice(TRUNCATED_SUFFIX);
    } else {
        out.extend_from_slice(&content);
    }
    out.push(b'\n');
}

/// The largest `i <= at` that is a character boundary of UTF-8 `s`.
fn floor_char_boundary(s: &[u8], at: usize) -> usize {
    if at >= s.len() {
        return s.len();
    }
    let mut i = at;
    while i > 0 && (s[i] & 0xC0) == 0x80 {
        i -= 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: &str = "2030-01-01T00:00:00.000000000Z";

    /// The read time used for lines of no known format: [`NOW`].
    fn now() -> Stamp {
        Stamp::from_system_time(
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_893_456_000),
        )
    }

    /// Parses `input` whole with `max` and returns the output and the parser.
    fn run(input: &[u8], max: usize) -> (String, LineParser) {
        let mut p = LineParser::new(max, 0);
        let mut out = Vec::new();
        let r = p.parse(input, 0, usize::MAX, &now(), &mut out);
        assert_eq!(r.lines, out.iter().filter(|&&b| b == b'\n').count());
        (String::from_utf8(out).expect("output is UTF-8"), p)
    }

    #[test]
    fn canonical_z_lines_are_copied_as_is() {
        let input = "2024-11-18T08:59:45.123456789Z stdout F hello\n2024-11-18T08:59:46.1Z stderr F world\n";
        assert_eq!(run(input.as_bytes(), 1000).0, input);
    }

    #[test]
    fn offset_timestamp_is_converted_to_utc() {
        let (out, _) = run(b"2024-11-18T10:59:45.5+02:00 stdout F x\n", 1000);
        assert_eq!(out, "2024-11-18T08:59:45.5Z stdout F x\n");
    }

    #[test]
    fn partial_lines_are_reassembled_per_stream_with_the_first_timestamp() {
        let input = "2024-11-18T08:00:00.1Z stdout P a1\n\
                     2024-11-18T08:00:00.2Z stderr P b1\n\
                     2024-11-18T08:00:00.3Z stdout F a2\n\
                     2024-11-18T08:00:00.4Z stderr P b2\n\
                     2024-11-18T08:00:00.5Z stderr F b3\n";
        let (out, p) = run(input.as_bytes(), 1000);
        assert_eq!(
            out,
            "2024-11-18T08:00:00.1Z stdout F a1a2\n2024-11-18T08:00:00.2Z stderr F b1b2b3\n"
        );
        assert_eq!(p.quiescent_offset(), input.len() as u64);
    }

    #[test]
    fn pending_partial_on_other_stream_holds_the_quiescent_offset() {
        let first = "2024-11-18T08:00:00.0Z stdout F before\n";
        let input = format!(
            "{first}2024-11-18T08:00:00.1Z stderr P b1\n2024-11-18T08:00:00.2Z stdout F a\n"
        );
        let (out, p) = run(input.as_bytes(), 1000);
        assert_eq!(out.lines().count(), 2);
        assert_eq!(p.quiescent_offset(), first.len() as u64);
        assert_eq!(p.pending_since(), Some(first.len() as u64));
    }

    #[test]
    fn finish_outputs_pending_parts_as_they_are() {
        let input = "2024-11-18T08:00:00.2Z stderr P b1\n2024-11-18T08:00:00.1Z stdout P a1\n";
        let mut p = LineParser::new(1000, 0);
        let mut out = Vec::new();
        p.parse(input.as_bytes(), 0, usize::MAX, &now(), &mut out);
        assert!(out.is_empty());
        assert_eq!(p.finish(input.len() as u64, &mut out), 2);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "2024-11-18T08:00:00.2Z stderr F b1\n2024-11-18T08:00:00.1Z stdout F a1\n"
        );
        assert_eq!(p.quiescent_offset(), input.len() as u64);
    }

    #[test]
    fn docker_json_lines_are_converted_and_reassembled() {
        let input = concat!(
            r#"{"log":"one\n","stream":"stdout","time":"2024-11-18T08:59:45.123Z"}"#,
            "\n",
            r#"{"log":"tw","stream":"stderr","time":"2024-11-18T10:59:46+02:00"}"#,
            "\n",
            r#"{"log":"o\n","stream":"stderr","time":"2024-11-18T08:59:47Z"}"#,
            "\n"
        );
        let (out, _) = run(input.as_bytes(), 1000);
        assert_eq!(
            out,
            "2024-11-18T08:59:45.123Z stdout F one\n2024-11-18T08:59:46.000000000Z stderr F two\n"
        );
    }

    #[test]
    fn other_lines_are_stamped_with_the_read_time_on_stdout() {
        let (out, _) = run(
            b"plain text\n2024-99-99T00:00:00Z stdout F bad time\n\n",
            1000,
        );
        assert_eq!(
            out,
            format!(
                "{NOW} stdout F plain text\n{NOW} stdout F 2024-99-99T00:00:00Z stdout F bad time\n{NOW} stdout F \n"
            )
        );
    }

    #[test]
    fn invalid_utf8_is_replaced() {
        let (out, _) = run(b"2024-11-18T08:59:45.1Z stdout F a\xffb\n", 1000);
        assert_eq!(out, "2024-11-18T08:59:45.1Z stdout F a\u{FFFD}b\n");
    }

    #[test]
    fn character_split_across_partial_parts_is_reassembled() {
        // "é" is C3 A9; the runtime split the line between the two bytes.
        let (out, _) = run(
            b"2024-11-18T08:59:45.1Z stdout P a\xc3\n2024-11-18T08:59:45.2Z stdout F \xa9b\n",
            1000,
        );
        assert_eq!(out, "2024-11-18T08:59:45.1Z stdout F aéb\n");
    }

    #[test]
    fn long_line_is_cut_on_a_char_boundary_with_suffix_within_the_cap() {
        let content = "é".repeat(100); // 200 bytes
        let (out, _) = run(
            format!("2024-11-18T08:59:45.1Z stdout F {content}\n").as_bytes(),
            64,
        );
        let got = out
            .strip_prefix("2024-11-18T08:59:45.1Z stdout F ")
            .unwrap()
            .strip_suffix('\n')
            .unwrap();
        assert!(got.len() <= 64, "{} bytes", got.len());
        assert_eq!(got, format!("{} [truncated]", "é".repeat(26)));
    }

    #[test]
    fn reassembled_line_over_the_cap_is_cut() {
        let part = "x".repeat(50);
        let input = format!(
            "2024-11-18T08:59:45.1Z stdout P {part}\n2024-11-18T08:59:45.2Z stdout P {part}\n2024-11-18T08:59:45.3Z stdout F {part}\n"
        );
        let (out, _) = run(input.as_bytes(), 64);
        assert_eq!(
            out,
            format!(
                "2024-11-18T08:59:45.1Z stdout F {} [truncated]\n",
                "x".repeat(52)
            )
        );
    }

    #[test]
    fn parse_stops_at_the_last_newline_and_after_max_out() {
        let line = "2024-11-18T08:59:45.1Z stdout F hello\n";
        let input = format!("{line}{line}{line}2024-11-18T08:59:45.1Z std");
        let mut p = LineParser::new(1000, 100);
        let mut out = Vec::new();
        let r = p.parse(input.as_bytes(), 100, usize::MAX, &now(), &mut out);
        assert_eq!(
            r,
            ParseOutcome {
                consumed: 3 * line.len(),
                lines: 3
            }
        );
        assert_eq!(p.quiescent_offset(), 100 + 3 * line.len() as u64);
        out.clear();
        let r = p.parse(input.as_bytes(), 100, 1, &now(), &mut out);
        assert_eq!(
            r,
            ParseOutcome {
                consumed: line.len(),
                lines: 1
            }
        );
    }
}
