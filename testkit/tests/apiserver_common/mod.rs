//! A raw HTTP/1.1 client for the API server's protocol tests: it sees the
//! bytes on the wire, so it can check the chunk framing of watches.

#![allow(dead_code)] // Each test file uses a different part.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use serde_json::{Value, json};

/// Generous: the CI machine is small and loaded.
pub const DEADLINE: Duration = Duration::from_secs(20);

pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).expect("connect to the API server");
    stream
        .set_read_timeout(Some(DEADLINE))
        .expect("set timeout");
    stream
}

fn send_head(
    stream: &mut TcpStream,
    method: &str,
    target: &str,
    content_type: Option<&str>,
    body: &[u8],
) {
    let mut head =
        format!("{method} {target} HTTP/1.1\r\nHost: test\r\nAccept: application/json\r\n");
    if let Some(ct) = content_type {
        head.push_str(&format!("Content-Type: {ct}\r\n"));
    }
    head.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    ));
    stream.write_all(head.as_bytes()).expect("write request");
    stream.write_all(body).expect("write body");
}

/// Reads a status line and headers.
fn read_head(reader: &mut BufReader<TcpStream>) -> (u16, Vec<(String, String)>) {
    let mut line = String::new();
    reader.read_line(&mut line).expect("read status line");
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {line:?}"));
    let mut headers = Vec::new();
    loop {
        line.clear();
        reader.read_line(&mut line).expect("read header");
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let (name, value) = l.split_once(':').expect("header has a colon");
        headers.push((name.to_string(), value.trim().to_string()));
    }
    (status, headers)
}

/// Reads one chunk; `None` for the last (empty) one.
fn read_chunk(reader: &mut BufReader<TcpStream>) -> Option<Vec<u8>> {
    let mut line = String::new();
    reader
        .read_line(&mut line)
        .expect("read chunk size (timed out?)");
    let size = usize::from_str_radix(line.trim(), 16)
        .unwrap_or_else(|_| panic!("bad chunk size line {line:?}"));
    if size == 0 {
        line.clear();
        reader.read_line(&mut line).expect("read final CRLF");
        return None;
    }
    let mut data = vec![0; size + 2];
    reader.read_exact(&mut data).expect("read chunk");
    assert_eq!(&data[size..], b"\r\n", "chunk ends with CRLF");
    data.truncate(size);
    Some(data)
}

/// One request on a fresh connection; the whole response.
pub fn request(
    addr: SocketAddr,
    method: &str,
    target: &str,
    content_type: Option<&str>,
    body: &[u8],
) -> Response {
    let mut stream = connect(addr);
    send_head(&mut stream, method, target, content_type, body);
    let mut reader = BufReader::new(stream);
    let (status, headers) = read_head(&mut reader);
    let chunked = headers
        .iter()
        .any(|(n, v)| n.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    let mut body = Vec::new();
    if chunked {
        while let Some(chunk) = read_chunk(&mut reader) {
            body.extend(chunk);
        }
    } else {
        reader.read_to_end(&mut body).expect("read body");
    }
    Response {
        status,
        headers,
        body,
    }
}

pub fn get(addr: SocketAddr, target: &str) -> Response {
    request(addr, "GET", target, None, b"")
}

pub fn get_json(addr: SocketAddr, target: &str) -> Value {
    let resp = get(addr, target);
    assert_eq!(
        resp.status,
        200,
        "GET {target}: {}",
        String::from_utf8_lossy(&resp.body)
    );
    resp.json()
}

/// An open watch stream, read event by event.
pub struct Watch {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    reader: BufReader<TcpStream>,
}

impl Watch {
    pub fn open(addr: SocketAddr, target: &str) -> Watch {
        let mut stream = connect(addr);
        send_head(&mut stream, "GET", target, None, b"");
        let mut reader = BufReader::new(stream);
        let (status, headers) = read_head(&mut reader);
        Watch {
            status,
            headers,
            reader,
        }
    }

    /// The next event, or `None` at the end of the stream. Checks that the
    /// chunk holds exactly one JSON event and its newline.
    pub fn next(&mut self) -> Option<Value> {
        let chunk = read_chunk(&mut self.reader)?;
        assert_eq!(chunk.last(), Some(&b'\n'), "an event ends with a newline");
        assert_eq!(
            chunk.iter().filter(|&&b| b == b'\n').count(),
            1,
            "one event per chunk: {}",
            String::from_utf8_lossy(&chunk)
        );
        Some(serde_json::from_slice(&chunk).expect("event is JSON"))
    }

    /// The next event, which must exist.
    pub fn event(&mut self) -> Value {
        self.next().expect("an event, not the end of the stream")
    }

    /// The bytes left until the server closes the connection.
    pub fn raw_rest(&mut self) -> Vec<u8> {
        let mut rest = Vec::new();
        self.reader.read_to_end(&mut rest).expect("read to the end");
        rest
    }

    /// Every remaining event up to the end of the stream.
    pub fn rest(&mut self) -> Vec<Value> {
        std::iter::from_fn(|| self.next()).collect()
    }
}

pub fn pod(ns: &str, name: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": {"app": name}},
        "spec": {"containers": [{"name": "main", "image": "busybox"}]}
    })
}

/// A CRD `widgets.example.com`: namespaced, served at v1 (storage) and
/// v1beta1.
pub fn widget_crd() -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {
            "group": "example.com",
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "shortNames": ["wd"]},
            "versions": [
                {"name": "v1beta1", "served": true, "storage": false,
                 "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}},
                {"name": "v1", "served": true, "storage": true,
                 "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}
            ]
        }
    })
}

pub fn widget(ns: &str, name: &str) -> Value {
    json!({
        "apiVersion": "example.com/v1",
        "kind": "Widget",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"size": 1}
    })
}

/// The names of the items of a list.
pub fn names(list: &Value) -> Vec<String> {
    list["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| i["metadata"]["name"].as_str().expect("name").to_string())
        .collect()
}

/// `metadata.resourceVersion` as a number.
pub fn rv(obj: &Value) -> u64 {
    obj["metadata"]["resourceVersion"]
        .as_str()
        .expect("resourceVersion")
        .parse()
        .expect("numeric resourceVersion")
}
