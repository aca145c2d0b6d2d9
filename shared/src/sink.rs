//! Where batches go (`HIK8S_SINK`): the intake, or NDJSON on stdout or in a
//! file. The daemons hand every sink the same input they would hand the
//! intake, and the stdout/file sinks turn it into one JSON object a line:
//!
//! - logs (SPEC §3): per stream line,
//!   `{"time","stream","namespace","pod","pod_uid","container","file","message"}`;
//! - records (SPEC §4): per record,
//!   `{"route","timestamp","event_type","json"}`.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::config::SinkConfig;
use crate::intake::{IntakeClient, LogMeta, Route, SendError};
use crate::otlp::{self, Delivered, OtlpClient, logs::LogFile};

/// A destination for log batches and record batches. Thread-safe.
#[derive(Debug)]
pub enum Sink {
    /// The HiK8s intake.
    Hik8s(IntakeClient),
    /// NDJSON on stdout, one batch written under one lock.
    Stdout,
    /// NDJSON appended to a file, written and flushed per batch.
    File(FileSink),
    /// An OpenTelemetry receiver (OTLP/HTTP).
    Otlp(OtlpClient),
}

/// An append-only NDJSON file.
#[derive(Debug)]
pub struct FileSink {
    path: PathBuf,
    file: Mutex<File>,
}

impl FileSink {
    /// Opens (creating if needed) `path` for appending.
    pub fn open(path: &Path) -> io::Result<FileSink> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(FileSink {
            path: path.to_path_buf(),
            file: Mutex::new(file),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn write_batch(&self, ndjson: &[u8]) -> io::Result<()> {
        let mut file = self
            .file
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        file.write_all(ndjson)?;
        file.flush()
    }
}

impl Sink {
    /// The sink `config` names; opens the file of a `file:` sink.
    pub fn open(config: &SinkConfig) -> io::Result<Sink> {
        Ok(match config {
            SinkConfig::Hik8s(intake) => Sink::Hik8s(IntakeClient::new(intake)),
            SinkConfig::Stdout => Sink::Stdout,
            SinkConfig::File(path) => Sink::File(FileSink::open(path)?),
            SinkConfig::Otlp(otlp) => Sink::Otlp(OtlpClient::new(otlp)),
        })
    }

    /// Sends one file's lines: the input of [`IntakeClient::post_logs`]
    /// (CRI `F` lines `<RFC3339Nano UTC>Z <stream> F <message>`, each
    /// ending with `\n`). Stdout/file write errors are
    /// [`SendError::Retryable`].
    pub fn send_logs(&self, meta: &LogMeta, stream: &[u8]) -> Result<(), SendError> {
        let file = LogFile {
            meta: *meta,
            lines: stream,
            reads: &[],
            start: 0,
        };
        self.send_log_files(&[file]).map(|_| ())
    }

    /// Sends several files' lines in one request: as many as
    /// [`Sink::files_per_request`] allows. What the receiver took but
    /// dropped (an OTLP `partial_success`) is in the answer.
    pub fn send_log_files(&self, files: &[LogFile]) -> Result<Delivered, SendError> {
        match self {
            Sink::Hik8s(client) => {
                assert_eq!(files.len(), 1, "the intake takes one file per request");
                client.post_logs(&files[0].meta, files[0].lines)?;
            }
            Sink::Stdout | Sink::File(_) => {
                let len = files.iter().map(|f| f.lines.len()).sum::<usize>();
                let mut out = Vec::with_capacity(len * 2);
                for file in files {
                    write_log_lines(&file.meta, file.lines, &mut out);
                }
                self.write_local(&out)?;
            }
            Sink::Otlp(client) => {
                // Sent as it is written, one file at a time.
                let mut files = files.iter();
                return client.send_streamed(("logd", env!("CARGO_PKG_VERSION")), |request| {
                    let Some(file) = files.next() else {
                        return false;
                    };
                    request.reserve(file.encoded_size());
                    otlp::logs::encode_file(request, file);
                    true
                });
            }
        }
        Ok(Delivered::default())
    }

    /// How many files' lines one request may carry: one for the intake
    /// (SPEC §1), any number for the others.
    pub fn files_per_request(&self) -> usize {
        match self {
            Sink::Hik8s(_) => 1,
            _ => usize::MAX,
        }
    }

    /// Sends one route's records: the input of [`IntakeClient::post_json`],
    /// a JSON array of `{"timestamp","event_type","json"}` records (for the
    /// OTLP sink with watchd's `otlp` field, see [`otlp::objects`]). A body
    /// that is not such an array is [`SendError::Rejected`] with status 400
    /// on the stdout/file/OTLP sinks. What the receiver took but dropped (an
    /// OTLP `partial_success`) is in the answer.
    pub fn send_records(&self, route: Route, body: &[u8]) -> Result<Delivered, SendError> {
        match self {
            Sink::Hik8s(client) => client.post_json(route, body).map(|()| Delivered::default()),
            Sink::Otlp(client) => {
                let mut request = client.encoder(("watchd", env!("CARGO_PKG_VERSION")));
                otlp::objects::encode_records(&mut request, route, body).map_err(|e| {
                    SendError::Rejected {
                        status: 400,
                        body_start: format!("not a JSON array of records: {e}"),
                    }
                })?;
                client.send(request.finish())
            }
            Sink::Stdout | Sink::File(_) => {
                let mut out = Vec::with_capacity(body.len() + 64);
                write_records(route, body, &mut out).map_err(|e| SendError::Rejected {
                    status: 400,
                    body_start: format!("not a JSON array of records: {e}"),
                })?;
                self.write_local(&out).map(|()| Delivered::default())
            }
        }
    }

    /// True for the intake sink (logd cuts long lines shorter for it).
    pub fn is_hik8s(&self) -> bool {
        matches!(self, Sink::Hik8s(_))
    }

    /// True for the OTLP sink (logd batches for it differently).
    pub fn is_otlp(&self) -> bool {
        matches!(self, Sink::Otlp(_))
    }

    fn write_local(&self, ndjson: &[u8]) -> Result<(), SendError> {
        let result = match self {
            Sink::File(file) => file.write_batch(ndjson),
            _ => {
                let mut stdout = io::stdout().lock();
                stdout.write_all(ndjson).and_then(|()| stdout.flush())
            }
        };
        result.map_err(|e| SendError::Retryable {
            reason: match self {
                Sink::File(file) => format!("writing {}: {e}", file.path.display()),
                _ => format!("writing stdout: {e}"),
            },
            status: None,
            retry_after: None,
        })
    }
}

#[derive(Serialize)]
struct LogLine<'a> {
    time: &'a str,
    stream: &'a str,
    namespace: &'a str,
    pod: &'a str,
    pod_uid: &'a str,
    container: &'a str,
    file: &'a str,
    message: &'a str,
}

/// Appends one NDJSON object per line of `stream` to `out`. A line that is
/// not a CRI line becomes the message, with an empty time and stream
/// `stdout`; text after the last `\n` is ignored, as the intake does.
pub fn write_log_lines(meta: &LogMeta, stream: &[u8], out: &mut Vec<u8>) {
    let pod = PodPath::parse(meta.path);
    let mut lines = stream.split(|&b| b == b'\n');
    // The piece after the last '\n' is empty or unterminated: skipped.
    lines.next_back();
    for line in lines {
        let line = String::from_utf8_lossy(line);
        let (time, stream, message) = split_cri(&line);
        let record = LogLine {
            time,
            stream,
            namespace: pod.namespace,
            pod: pod.pod,
            pod_uid: pod.pod_uid,
            container: pod.container,
            file: meta.file,
            message,
        };
        serde_json::to_writer(&mut *out, &record).expect("writing JSON to a Vec cannot fail");
        out.push(b'\n');
    }
}

/// `<time> <stream> <tag> <message>` → (time, stream, message).
pub(crate) fn split_cri(line: &str) -> (&str, &str, &str) {
    // By bytes, not `splitn`: it runs once per line of a drain, and a
    // char searcher cost 3 % of it.
    let parsed = memchr::memchr(b' ', line.as_bytes()).and_then(|space| {
        let (time, rest) = (&line[..space], &line[space + 1..]);
        let stream = ["stdout", "stderr"]
            .into_iter()
            .find(|stream| rest.starts_with(stream))?;
        let tag_and_message = rest[stream.len()..].strip_prefix(' ')?;
        let message = match tag_and_message.as_bytes() {
            [b'F' | b'P'] => "",
            [b'F' | b'P', b' ', ..] => &tag_and_message[2..],
            _ => return None,
        };
        Some((time, stream, message))
    });
    parsed.unwrap_or(("", "stdout", line))
}

/// The parts of `/var/log/pods/<namespace>_<pod>_<uid>/<container>`;
/// empty strings where the path does not have that form.
pub(crate) struct PodPath<'a> {
    pub namespace: &'a str,
    pub pod: &'a str,
    pub pod_uid: &'a str,
    pub container: &'a str,
}

impl<'a> PodPath<'a> {
    pub fn parse(path: &'a str) -> PodPath<'a> {
        let mut components = path.trim_end_matches('/').rsplit('/');
        let container = components.next().unwrap_or("");
        let pod_dir = components.next().unwrap_or("");
        // Namespaces, pod names and uids contain no '_'.
        let mut parts = pod_dir.splitn(3, '_');
        PodPath {
            namespace: parts.next().unwrap_or(""),
            pod: parts.next().unwrap_or(""),
            pod_uid: parts.next().unwrap_or(""),
            container,
        }
    }
}

#[derive(Deserialize)]
struct RecordIn<'a> {
    #[serde(borrow)]
    timestamp: &'a RawValue,
    #[serde(borrow)]
    event_type: &'a RawValue,
    #[serde(borrow)]
    json: &'a RawValue,
}

#[derive(Serialize)]
struct RecordOut<'a> {
    route: &'a str,
    timestamp: &'a RawValue,
    event_type: &'a RawValue,
    json: &'a RawValue,
}

/// Appends one NDJSON object per record of `body` (a JSON array of
/// records) to `out`; the objects are copied through, not re-encoded.
pub fn write_records(route: Route, body: &[u8], out: &mut Vec<u8>) -> serde_json::Result<()> {
    let records: Vec<RecordIn> = serde_json::from_slice(body)?;
    for record in records {
        let line = RecordOut {
            route: route.name(),
            timestamp: record.timestamp,
            event_type: record.event_type,
            json: record.json,
        };
        serde_json::to_writer(&mut *out, &line)?;
        out.push(b'\n');
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    #[test]
    fn cri_lines_split_into_time_stream_and_message() {
        let t = "2026-01-02T03:04:05.123456789Z";
        assert_eq!(
            split_cri(&format!("{t} stderr F a b")),
            (t, "stderr", "a b")
        );
        assert_eq!(
            split_cri(&format!("{t} stdout P part")),
            (t, "stdout", "part")
        );
        assert_eq!(split_cri(&format!("{t} stdout F ")), (t, "stdout", ""));
        assert_eq!(split_cri(&format!("{t} stdout F")), (t, "stdout", ""));
        for odd in [
            "no spaces",
            "t stdoutX F m",
            "t  stdout F m",
            "t stdout Fx m",
            "t stdin F m",
        ] {
            assert_eq!(split_cri(odd), ("", "stdout", odd), "{odd}");
        }
    }

    fn parse_lines(out: &[u8]) -> Vec<Value> {
        std::str::from_utf8(out)
            .expect("utf-8")
            .lines()
            .map(|line| serde_json::from_str(line).expect("one JSON object a line"))
            .collect()
    }

    #[test]
    fn log_lines_become_one_object_each() {
        let meta = LogMeta {
            path: "/var/log/pods/default_web-1_0a1b-2c3d/nginx",
            file: "0.log",
        };
        let stream = "2024-11-18T08:59:45.123456789Z stdout F hello \"world\"\n\
                      2024-11-18T08:59:46.000000001Z stderr F \n\
                      not cri at all\n\
                      unterminated";
        let mut out = Vec::new();
        write_log_lines(&meta, stream.as_bytes(), &mut out);
        let lines = parse_lines(&out);
        assert_eq!(lines.len(), 3);
        assert_eq!(
            lines[0],
            json!({"time": "2024-11-18T08:59:45.123456789Z", "stream": "stdout",
                   "namespace": "default", "pod": "web-1", "pod_uid": "0a1b-2c3d",
                   "container": "nginx", "file": "0.log", "message": "hello \"world\""})
        );
        assert_eq!(lines[1]["stream"], "stderr");
        assert_eq!(lines[1]["message"], "");
        assert_eq!(lines[2]["time"], "");
        assert_eq!(lines[2]["message"], "not cri at all");
    }

    #[test]
    fn records_carry_their_route() {
        let body = br#"[{"timestamp": 1700000000, "event_type": "apply", "json": {"kind": "Pod", "x": [1, 2]}},
                        {"timestamp": 1700000001, "event_type": "delete", "json": {"kind": "Pod"}}]"#;
        let mut out = Vec::new();
        write_records(Route::Resources, body, &mut out).expect("valid records");
        let lines = parse_lines(&out);
        assert_eq!(
            lines,
            [
                json!({"route": "resources", "timestamp": 1700000000, "event_type": "apply",
                       "json": {"kind": "Pod", "x": [1, 2]}}),
                json!({"route": "resources", "timestamp": 1700000001, "event_type": "delete",
                       "json": {"kind": "Pod"}}),
            ]
        );
        assert!(out.starts_with(br#"{"route":"resources","#));
    }

    #[test]
    fn a_body_that_is_no_record_array_is_an_error() {
        let mut out = Vec::new();
        assert!(write_records(Route::Events, b"{\"not\": \"an array\"}", &mut out).is_err());
        assert!(write_records(Route::Events, b"[{\"json\": {}}]", &mut out).is_err());
    }
}
