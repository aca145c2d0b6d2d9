//! Just enough HTTP/1.1 for the intake: request heads parsed with
//! `httparse`, bodies framed by `Content-Length` or chunked encoding,
//! `Expect: 100-continue`, keep-alive, and plain responses.

use std::io::{self, Read, Write};
use std::net::TcpStream;

/// Largest request head accepted.
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// A body larger than its route's limit is read and thrown away (so the
/// client can read the 413) up to this size; beyond it the connection is
/// closed instead.
const MAX_DRAIN_BYTES: u64 = 1024 * 1024 * 1024;
const READ_CHUNK: usize = 64 * 1024;

pub(crate) struct RequestHead {
    pub(crate) method: String,
    /// Without the query.
    pub(crate) path: String,
    headers: Vec<(String, String)>,
    http_1_0: bool,
}

impl RequestHead {
    /// The first header named `name` (case-insensitive).
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every header, as received.
    pub(crate) fn headers(&self) -> &[(String, String)] {
        &self.headers
    }

    /// Whether the client allows the connection to stay open after this
    /// request.
    pub(crate) fn wants_keep_alive(&self) -> bool {
        let connection = self.header("connection").unwrap_or("");
        let has = |token: &str| {
            connection
                .split(',')
                .any(|t| t.trim().eq_ignore_ascii_case(token))
        };
        if self.http_1_0 {
            has("keep-alive")
        } else {
            !has("close")
        }
    }
}

pub(crate) enum Body {
    Complete(Vec<u8>),
    /// Larger than the limit: read and thrown away.
    TooLarge {
        len: usize,
    },
}

#[derive(Debug)]
pub(crate) enum ReadError {
    /// The connection failed or closed mid-request: nothing to answer.
    Io,
    /// Not HTTP we understand: answer 400 and close.
    Malformed(String),
    /// Far too large to even drain: answer 413 and close.
    Oversized,
}

impl From<io::Error> for ReadError {
    fn from(_: io::Error) -> Self {
        ReadError::Io
    }
}

pub(crate) struct Response {
    pub(crate) status: u16,
    pub(crate) content_type: &'static str,
    pub(crate) body: Vec<u8>,
    pub(crate) retry_after_secs: Option<u64>,
}

impl Response {
    pub(crate) fn text(status: u16, message: impl Into<String>) -> Response {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            body: message.into().into_bytes(),
            retry_after_secs: None,
        }
    }

    pub(crate) fn json(status: u16, body: Vec<u8>) -> Response {
        Response {
            status,
            content_type: "application/json",
            body,
            retry_after_secs: None,
        }
    }

    pub(crate) fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// One client connection: the socket and the bytes read past the current
/// request.
pub(crate) struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    start: usize,
}

impl Conn {
    pub(crate) fn new(stream: TcpStream) -> Conn {
        Conn {
            stream,
            buf: Vec::new(),
            start: 0,
        }
    }

    /// Reads the next request head; `None` when the client closed the
    /// connection between requests.
    pub(crate) fn read_head(&mut self) -> Result<Option<RequestHead>, ReadError> {
        loop {
            if let Some((head, len)) = parse_head(self.available())? {
                self.consume(len);
                return Ok(Some(head));
            }
            if self.available().len() > MAX_HEAD_BYTES {
                return Err(ReadError::Malformed("request head too large".into()));
            }
            if self.fill()? == 0 {
                return if self.available().is_empty() {
                    Ok(None)
                } else {
                    Err(ReadError::Malformed(
                        "connection closed inside a request head".into(),
                    ))
                };
            }
        }
    }

    /// Reads the body of the request `head`, keeping at most `limit` bytes.
    pub(crate) fn read_body(
        &mut self,
        head: &RequestHead,
        limit: usize,
    ) -> Result<Body, ReadError> {
        let chunked = head
            .header("transfer-encoding")
            .is_some_and(|te| te.to_ascii_lowercase().contains("chunked"));
        let content_length = match head.header("content-length") {
            Some(v) => Some(
                v.trim()
                    .parse::<u64>()
                    .map_err(|_| ReadError::Malformed(format!("bad Content-Length {v:?}")))?,
            ),
            None => None,
        };
        if content_length.is_some_and(|len| len > MAX_DRAIN_BYTES) {
            return Err(ReadError::Oversized);
        }
        let expects_body = chunked || content_length.is_some_and(|len| len > 0);
        if expects_body
            && head
                .header("expect")
                .is_some_and(|e| e.eq_ignore_ascii_case("100-continue"))
        {
            self.stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
        }
        let mut sink = BodySink::new(limit);
        if chunked {
            self.read_chunked(&mut sink)?;
        } else {
            self.read_exact_into(&mut sink, content_length.unwrap_or(0))?;
        }
        Ok(sink.finish())
    }

    pub(crate) fn write_response(
        &mut self,
        response: &Response,
        keep_alive: bool,
    ) -> io::Result<()> {
        let mut out = Vec::with_capacity(256 + response.body.len());
        write!(
            out,
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\n",
            response.status,
            reason(response.status),
            response.content_type,
        )?;
        // A 204 has no body, and no Content-Length (RFC 9110 §8.6).
        if response.status != 204 {
            write!(out, "Content-Length: {}\r\n", response.body.len())?;
        }
        if let Some(secs) = response.retry_after_secs {
            write!(out, "Retry-After: {secs}\r\n")?;
        }
        if !keep_alive {
            out.extend_from_slice(b"Connection: close\r\n");
        }
        out.extend_from_slice(b"\r\n");
        if response.status != 204 {
            out.extend_from_slice(&response.body);
        }
        self.stream.write_all(&out)?;
        self.stream.flush()
    }

    fn read_chunked(&mut self, sink: &mut BodySink) -> Result<(), ReadError> {
        loop {
            let line = self.read_line()?;
            let size = line.split(';').next().unwrap_or("").trim();
            let size = u64::from_str_radix(size, 16)
                .map_err(|_| ReadError::Malformed(format!("bad chunk size {size:?}")))?;
            if size == 0 {
                // Trailers, up to the empty line.
                while !self.read_line()?.is_empty() {}
                return Ok(());
            }
            if sink.len as u64 + size > MAX_DRAIN_BYTES {
                return Err(ReadError::Oversized);
            }
            self.read_exact_into(sink, size)?;
            if !self.read_line()?.is_empty() {
                return Err(ReadError::Malformed("chunk not followed by CRLF".into()));
            }
        }
    }

    /// Reads one CRLF-terminated line (without the CRLF).
    fn read_line(&mut self) -> Result<String, ReadError> {
        loop {
            if let Some(end) = memchr::memmem::find(self.available(), b"\r\n") {
                let line = String::from_utf8_lossy(&self.available()[..end]).into_owned();
                self.consume(end + 2);
                return Ok(line);
            }
            if self.available().len() > MAX_HEAD_BYTES {
                return Err(ReadError::Malformed("line too long".into()));
            }
            if self.fill()? == 0 {
                return Err(ReadError::Io);
            }
        }
    }

    fn read_exact_into(&mut self, sink: &mut BodySink, mut n: u64) -> Result<(), ReadError> {
        while n > 0 {
            if self.available().is_empty() && self.fill()? == 0 {
                return Err(ReadError::Io);
            }
            let take = self
                .available()
                .len()
                .min(usize::try_from(n).unwrap_or(usize::MAX));
            sink.push(&self.buf[self.start..self.start + take]);
            self.consume(take);
            n -= take as u64;
        }
        Ok(())
    }

    fn available(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
    }

    /// Reads more bytes from the socket; returns how many (0 at end of
    /// stream).
    fn fill(&mut self) -> io::Result<usize> {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        let old_len = self.buf.len();
        self.buf.resize(old_len + READ_CHUNK, 0);
        let result = self.stream.read(&mut self.buf[old_len..]);
        let read = *result.as_ref().unwrap_or(&0);
        self.buf.truncate(old_len + read);
        result
    }
}

/// Collects a body up to a limit, then only counts.
struct BodySink {
    limit: usize,
    len: usize,
    data: Vec<u8>,
}

impl BodySink {
    fn new(limit: usize) -> BodySink {
        BodySink {
            limit,
            len: 0,
            data: Vec::new(),
        }
    }

    fn push(&mut self, bytes: &[u8]) {
        self.len += bytes.len();
        if self.len <= self.limit {
            self.data.extend_from_slice(bytes);
        } else {
            self.data = Vec::new();
        }
    }

    fn finish(self) -> Body {
        if self.len > self.limit {
            Body::TooLarge { len: self.len }
        } else {
            Body::Complete(self.data)
        }
    }
}

/// Parses a request head at the start of `bytes`; `None` if incomplete.
fn parse_head(bytes: &[u8]) -> Result<Option<(RequestHead, usize)>, ReadError> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut request = httparse::Request::new(&mut headers);
    let len = match request.parse(bytes) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(ReadError::Malformed(format!("bad request head: {e}"))),
    };
    let target = request.path.unwrap_or("/");
    let head = RequestHead {
        method: request.method.unwrap_or("").to_owned(),
        path: target.split('?').next().unwrap_or("").to_owned(),
        headers: request
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.to_owned(),
                    String::from_utf8_lossy(h.value).into_owned(),
                )
            })
            .collect(),
        http_1_0: request.version == Some(0),
    };
    Ok(Some((head, len)))
}

fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        413 => "Payload Too Large",
        415 => "Unsupported Media Type",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}
