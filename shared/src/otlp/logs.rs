//! logd's lines as OpenTelemetry log records, in the shape the Collector's
//! filelog receiver gives them with its `container` parser (so dashboards
//! built for it work unchanged): a `ResourceLogs` per log file with the
//! `k8s.*` resource attributes of its path, and per line a record with the
//! CRI time, the message as a string body, `log.iostream` and
//! `log.file.path`.

use std::borrow::Cow;
use std::time::UNIX_EPOCH;

use super::encode::{Encoder, Record, Value};
use crate::calendar::days_from_civil;
use crate::intake::LogMeta;
use crate::sink::{PodPath, split_cri};

/// One file's lines, as logd hands them to every sink: CRI `F` lines
/// (`<RFC3339Nano UTC>Z <stream> F <message>`), each ending with `\n`.
#[derive(Debug, Clone, Copy)]
pub struct LogFile<'a> {
    pub meta: LogMeta<'a>,
    pub lines: &'a [u8],
    /// When the lines were read: `(end, unix nanos)` per read, in order,
    /// `end` being where that read's lines end, counted from `lines[0]`
    /// minus `start`. Lines past the last entry take the last time; none:
    /// the time of sending.
    pub reads: &'a [(usize, u64)],
    /// Where `lines` starts in the frame of `reads` (a part of a batch).
    pub start: usize,
}

/// Writes `file`'s lines into `request` as one resource.
pub fn encode_file(request: &mut Encoder, file: &LogFile) {
    let pod = PodPath::parse(file.meta.path);
    let restarts = restart_count(file.meta.file);
    let mut resource = vec![
        ("k8s.namespace.name", Value::Str(pod.namespace)),
        ("k8s.pod.name", Value::Str(pod.pod)),
        ("k8s.pod.uid", Value::Str(pod.pod_uid)),
        ("k8s.container.name", Value::Str(pod.container)),
    ];
    if let Some(restarts) = restarts {
        resource.push(("k8s.container.restart_count", Value::Int(restarts)));
    }
    request.begin_resource(&resource);
    let path = format!("{}/{}", file.meta.path, file.meta.file);
    let now = unix_nanos(std::time::SystemTime::now());
    let mut reads = file.reads.iter().peekable();
    let mut start = 0;
    // Text after the last '\n' is not a line yet, as the intake does.
    for end in memchr::memchr_iter(b'\n', file.lines) {
        let line = &file.lines[start..end];
        let offset = file.start + start;
        start = end + 1;
        while reads.peek().is_some_and(|(end, _)| *end <= offset) && reads.len() > 1 {
            reads.next();
        }
        let observed = reads.peek().map_or(now, |(_, at)| *at);
        // logd's lines are valid UTF-8 (it repairs them when it reads):
        // checked with SIMD, repaired here only if they are not.
        let text = match simdutf8::basic::from_utf8(line) {
            Ok(text) => Cow::Borrowed(text),
            Err(_) => String::from_utf8_lossy(line),
        };
        let (time, stream, message) = split_cri(&text);
        request.record(&Record {
            time_unix_nano: parse_time(time).unwrap_or(0),
            observed_time_unix_nano: observed,
            severity_number: 0,
            severity_text: "",
            body: Value::Str(message),
            attributes: &[
                ("log.iostream", Value::Str(stream)),
                ("log.file.path", Value::Str(&path)),
            ],
        });
    }
    request.end_resource();
}

/// About the bytes a file's `line_count` lines (`line_bytes` in all) take
/// in a protobuf request: the lines, and per line the record's framing,
/// times, stream and path (`path_len` bytes). The sink reserves it before
/// encoding (so the body is not grown, and copied, as it is written);
/// logd bundles files into requests by it.
pub fn encoded_size(line_bytes: usize, line_count: usize, path_len: usize) -> usize {
    line_bytes + line_count * (path_len + 96) + 256
}

impl LogFile<'_> {
    /// [`encoded_size`] of these lines.
    pub fn encoded_size(&self) -> usize {
        let path_len = self.meta.path.len() + self.meta.file.len() + 1;
        let lines = memchr::memchr_iter(b'\n', self.lines).count();
        encoded_size(self.lines.len(), lines, path_len)
    }
}

/// `<restarts>.log` (or a rotated `<restarts>.log.<date>`): kubelet names a
/// container's log files by its restart count.
fn restart_count(file: &str) -> Option<i64> {
    let digits = file.split('.').next()?;
    digits.parse().ok()
}

/// A time as logd writes every line's (`YYYY-MM-DDTHH:MM:SS.fffffffffZ`:
/// UTC, 1 to 9 fraction digits) in nanoseconds since the epoch; None for
/// anything else. Parsed by hand: it is done for every line.
fn parse_time(time: &str) -> Option<u64> {
    let b = time.as_bytes();
    let n = b.len();
    if !(22..=30).contains(&n) || b[n - 1] != b'Z' || b[19] != b'.' {
        return None;
    }
    let digits = |range: std::ops::Range<usize>| -> Option<u64> {
        b[range].iter().try_fold(0u64, |acc, &c| {
            c.is_ascii_digit().then(|| acc * 10 + u64::from(c - b'0'))
        })
    };
    let separators = [(4, b'-'), (7, b'-'), (10, b'T'), (13, b':'), (16, b':')];
    if separators.iter().any(|&(i, c)| b[i] != c) {
        return None;
    }
    let (year, month, day) = (digits(0..4)?, digits(5..7)?, digits(8..10)?);
    let (hour, minute, second) = (digits(11..13)?, digits(14..16)?, digits(17..19)?);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let fraction = digits(20..n - 1)? * 10u64.pow(9 - (n - 21) as u32);
    let days = days_from_civil(year as i64, month as u32, day as u32);
    let secs = u64::try_from(days * 86_400).ok()? + hour * 3600 + minute * 60 + second;
    Some(secs * 1_000_000_000 + fraction)
}

pub fn unix_nanos(t: std::time::SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_keep_their_nanoseconds() {
        assert_eq!(
            parse_time("2024-11-18T08:59:45.123456789Z"),
            Some(1_731_920_385_123_456_789)
        );
        assert_eq!(
            parse_time("2024-11-18T08:59:45.5Z"),
            Some(1_731_920_385_500_000_000)
        );
        assert_eq!(parse_time("1970-01-01T00:00:00.000000001Z"), Some(1));
        for bad in [
            "not a time",
            "2024-11-18T08:59:45Z",
            "2024-11-18T08:59:45.1234567890Z",
            "2024-13-18T08:59:45.1Z",
            "2024-11-18 08:59:45.1Z",
            "2024-11-18T08:59:45.1+01:00",
            "1969-12-31T23:59:59.1Z",
        ] {
            assert_eq!(parse_time(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_restart_count_is_the_file_name() {
        assert_eq!(restart_count("0.log"), Some(0));
        assert_eq!(restart_count("12.log.20241118-085945"), Some(12));
        assert_eq!(restart_count("app.log"), None);
    }
}
