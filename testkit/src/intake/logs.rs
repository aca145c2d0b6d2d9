//! `POST /logs`: the multipart body and the backend's rules for it. Every
//! violation is an `Err(message)`, which the backend answers with 500.

use bytes::Bytes;

use super::MAX_MESSAGE_BYTES;
use super::token::media_type;

/// A `/logs` body that passed every rule.
pub(crate) struct LogsRequest {
    pub(crate) path: String,
    pub(crate) file: String,
    /// The whole stream part, valid UTF-8 (kept as multer gave it: no copy).
    pub(crate) stream: Bytes,
    /// How many lines [`Self::lines`] yields.
    pub(crate) line_count: usize,
}

impl LogsRequest {
    /// The stream's lines as the backend reads them: split on `\n`, text
    /// after the last `\n` ignored, blank lines skipped.
    pub(crate) fn lines(&self) -> impl Iterator<Item = &str> {
        stream_lines(std::str::from_utf8(&self.stream).expect("checked when parsed"))
    }
}

/// memchr, not `str::split`: the benchmarks send hundreds of MB a second.
fn stream_lines(stream: &str) -> impl Iterator<Item = &str> {
    let mut start = 0;
    memchr::memchr_iter(b'\n', stream.as_bytes())
        .map(move |end| {
            let line = &stream[start..end];
            start = end + 1;
            line
        })
        .filter(|line| !is_blank(line))
}

/// A line of whitespace only (the backend skips it). Most lines start with
/// a digit: no Unicode trim for them.
fn is_blank(line: &str) -> bool {
    match line.as_bytes().first() {
        None => true,
        Some(b) if b.is_ascii_alphanumeric() => false,
        Some(_) => line.trim().is_empty(),
    }
}

/// Parses and checks a `/logs` body sent with `content_type`.
pub(crate) fn parse_logs_request(
    content_type: Option<&str>,
    body: Vec<u8>,
) -> Result<LogsRequest, String> {
    let content_type = content_type.ok_or("no Content-Type")?;
    if !media_type(content_type).eq_ignore_ascii_case("multipart/form-data") {
        return Err(format!(
            "Content-Type {content_type:?} is not multipart/form-data"
        ));
    }
    let boundary =
        multer::parse_boundary(content_type).map_err(|e| format!("bad multipart boundary: {e}"))?;
    let (metadata, stream) = read_parts(body, boundary)?;
    let (path, file) = parse_metadata(&metadata)?;
    let text =
        std::str::from_utf8(&stream).map_err(|e| format!("stream is not valid UTF-8: {e}"))?;
    let mut line_count = 0;
    for (index, line) in stream_lines(text).enumerate() {
        check_line(line).map_err(|e| format!("line {index}: {e}"))?;
        line_count += 1;
    }
    Ok(LogsRequest {
        path,
        file,
        stream,
        line_count,
    })
}

/// Reads exactly two parts, `metadata` (application/json) then `stream`
/// (application/octet-stream), with `multer`.
fn read_parts(body: Vec<u8>, boundary: String) -> Result<(Bytes, Bytes), String> {
    let body_stream = futures::stream::once(async move { Ok::<_, std::io::Error>(body) });
    let mut multipart = multer::Multipart::new(body_stream, boundary);
    futures::executor::block_on(async move {
        let bad = |e: multer::Error| format!("malformed multipart body: {e}");
        let metadata = multipart
            .next_field()
            .await
            .map_err(bad)?
            .ok_or("no parts")?;
        check_part(&metadata, "metadata", "application/json")?;
        let metadata = metadata.bytes().await.map_err(bad)?;
        let stream = multipart
            .next_field()
            .await
            .map_err(bad)?
            .ok_or("only one part: no stream")?;
        check_part(&stream, "stream", "application/octet-stream")?;
        let stream = stream.bytes().await.map_err(bad)?;
        if multipart.next_field().await.map_err(bad)?.is_some() {
            return Err("more than two parts".to_string());
        }
        Ok((metadata, stream))
    })
}

fn check_part(field: &multer::Field<'_>, name: &str, content_type: &str) -> Result<(), String> {
    if field.name() != Some(name) {
        return Err(format!("expected part {name:?}, got {:?}", field.name()));
    }
    match field.content_type() {
        Some(mime) if mime.essence_str().eq_ignore_ascii_case(content_type) => Ok(()),
        other => Err(format!(
            "part {name:?} has Content-Type {:?}, expected {content_type}",
            other.map(|m| m.to_string())
        )),
    }
}

/// `{"path": "/var/log/pods/<ns>_<pod>_<uid>/<container>", "file": "<name>"}`.
fn parse_metadata(metadata: &[u8]) -> Result<(String, String), String> {
    let value: serde_json::Value =
        serde_json::from_slice(metadata).map_err(|e| format!("metadata is not JSON: {e}"))?;
    let field = |name: &str| {
        value
            .get(name)
            .and_then(|v| v.as_str())
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .ok_or(format!("metadata has no string {name:?}"))
    };
    let path = field("path")?;
    let file = field("file")?;
    check_pod_path(&path)?;
    Ok((path, file))
}

/// The backend splits the path on `/` and reads components 4
/// (`<ns>_<pod>_<uid>`) and 5 (the container).
pub(crate) fn check_pod_path(path: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("metadata.path {path:?}: {why}"));
    let components: Vec<&str> = path.split('/').collect();
    if !path.starts_with("/var/log/pods/") {
        return bad("does not start with /var/log/pods/");
    }
    if components.len() != 6 {
        return bad("expected /var/log/pods/<ns>_<pod>_<uid>/<container>");
    }
    let pod_dir: Vec<&str> = components[4].split('_').collect();
    if pod_dir.len() != 3 || pod_dir.iter().any(|p| p.is_empty()) {
        return bad("the pod directory is not <ns>_<pod>_<uid>");
    }
    if !looks_like_uid(pod_dir[2]) {
        return bad("the pod uid does not look like a uid");
    }
    if components[5].is_empty() {
        return bad("no container");
    }
    Ok(())
}

/// A pod uid (`8-4-4-4-12` hex) or a static pod's config hash (hex).
fn looks_like_uid(uid: &str) -> bool {
    (8..=64).contains(&uid.len())
        && uid.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
        && !uid.starts_with('-')
        && !uid.ends_with('-')
}

/// A stream line: `<timestamp>Z<message>`, the timestamp in
/// `%Y-%m-%dT%H:%M:%S%.f`, the message at most [`MAX_MESSAGE_BYTES`].
fn check_line(line: &str) -> Result<(), String> {
    // memchr, not `split_once`: this runs for every line a benchmark sends.
    let z = memchr::memchr(b'Z', line.as_bytes())
        .ok_or_else(|| format!("no 'Z' ending a timestamp in {:?}", preview(line)))?;
    let (timestamp, message) = (&line[..z], &line[z + 1..]);
    if !is_timestamp(timestamp.as_bytes()) {
        return Err(format!("bad timestamp {:?}", preview(timestamp)));
    }
    if message.len() > MAX_MESSAGE_BYTES {
        return Err(format!(
            "message of {} bytes is longer than {MAX_MESSAGE_BYTES}",
            message.len()
        ));
    }
    Ok(())
}

fn preview(s: &str) -> &str {
    let mut end = s.len().min(80);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// `%Y-%m-%dT%H:%M:%S%.f`: `YYYY-MM-DDTHH:MM:SS`, optionally `.` and 1 to 9
/// digits; a real calendar date, hour < 24, minute < 60, second <= 60.
pub(crate) fn is_timestamp(s: &[u8]) -> bool {
    if s.len() < 19 || !is_date_time(&s[..19]) {
        return false;
    }
    match &s[19..] {
        [] => true,
        [b'.', fraction @ ..] => {
            (1..=9).contains(&fraction.len()) && fraction.iter().all(u8::is_ascii_digit)
        }
        _ => false,
    }
}

fn is_date_time(s: &[u8]) -> bool {
    let separators = [(4, b'-'), (7, b'-'), (10, b'T'), (13, b':'), (16, b':')];
    if separators.iter().any(|&(i, c)| s[i] != c) {
        return false;
    }
    let number = |from: usize, to: usize| -> Option<u32> {
        s[from..to].iter().try_fold(0u32, |n, &b| {
            b.is_ascii_digit().then(|| n * 10 + u32::from(b - b'0'))
        })
    };
    let (Some(year), Some(month), Some(day), Some(hour), Some(minute), Some(second)) = (
        number(0, 4),
        number(5, 7),
        number(8, 10),
        number(11, 13),
        number(14, 16),
        number(17, 19),
    ) else {
        return false;
    };
    (1..=12).contains(&month)
        && (1..=days_in_month(year, month)).contains(&day)
        && hour < 24
        && minute < 60
        && second <= 60
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_follow_the_backend_format() {
        for ok in [
            "2024-11-18T08:59:45",
            "2024-11-18T08:59:45.1",
            "2024-11-18T08:59:45.123456789",
            "2024-02-29T23:59:60",
        ] {
            assert!(is_timestamp(ok.as_bytes()), "{ok}");
        }
        for bad in [
            "",
            "2024-11-18 08:59:45",
            "2024-11-18T08:59:45.",
            "2024-11-18T08:59:45.1234567890",
            "2024-11-18T08:59:45+02:00",
            "2023-02-29T08:59:45",
            "2024-13-18T08:59:45",
            "2024-11-18T24:00:00",
            "24-11-18T08:59:45",
            "2024-11-18T08:59:4a",
        ] {
            assert!(!is_timestamp(bad.as_bytes()), "{bad}");
        }
    }

    #[test]
    fn pod_paths_must_have_the_exact_form() {
        assert!(
            check_pod_path("/var/log/pods/default_web-1_0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0/app")
                .is_ok()
        );
        assert!(
            check_pod_path(
                "/var/log/pods/kube-system_etcd-node_0123456789abcdef0123456789abcdef/etcd"
            )
            .is_ok()
        );
        for bad in [
            "/host/var/log/pods/ns_pod_0f1e2d3c/app",
            "/var/log/pods/ns_pod_0f1e2d3c/app/0.log",
            "/var/log/pods/ns_pod_0f1e2d3c/",
            "/var/log/pods/ns_pod_0f1e2d3c",
            "/var/log/pods/ns_pod/app",
            "/var/log/pods/_pod_0f1e2d3c/app",
            "/var/log/pods/ns_pod_x_0f1e2d3c/app",
            "/var/log/pods/ns_pod_not-a-uid/app",
        ] {
            assert!(check_pod_path(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn lines_ignore_text_after_the_last_newline_and_blank_lines() {
        fn lines(stream: &str) -> Vec<&str> {
            stream_lines(stream).collect()
        }
        assert_eq!(lines("a\n\nb\n \nc"), ["a", "b"]);
        assert!(lines("a").is_empty());
        assert!(lines("").is_empty());
    }
}
