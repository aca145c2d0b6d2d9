//! The HiK8s intake client (SPEC §1): `POST /logs` as multipart/form-data,
//! and JSON batches to `/resources`, `/customresources` and `/events`.
//!
//! Each call is ONE attempt (plus one token renewal and resend after a 401);
//! what to do with a failure is the caller's decision, helped by
//! [`crate::retry`]. One [`ureq::Agent`] keeps connections alive between
//! calls; timeouts: 10 s to connect, 60 s for a whole request.

use std::fmt;
use std::io::Read;
use std::time::{Duration, SystemTime};

use ureq::tls::{Certificate, RootCerts, TlsConfig};
use ureq::unversioned::transport::{Connector, DefaultConnector};

use crate::auth::{TokenProvider, body_start};
use crate::config::{IntakeConfig, ProxyConfig};
use crate::one_send::OneSendConnector;
use crate::resolver::CachingResolver;
use crate::retry::parse_retry_after;

/// Longest response body read (and kept for logs) per request.
const MAX_RESPONSE_READ: u64 = 64 * 1024;

/// The file a `/logs` batch comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct LogMeta<'a> {
    /// `/var/log/pods/<namespace>_<pod>_<uid>/<container>`, always rooted at
    /// `/var/log/pods` whatever the mount point logd reads from.
    pub path: &'a str,
    /// The file name, e.g. `0.log`.
    pub file: &'a str,
}

/// A JSON batch route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Route {
    /// `/resources`: built-in kinds.
    Resources,
    /// `/customresources`: custom resource objects.
    CustomResources,
    /// `/events`: core `v1` Events only.
    Events,
}

impl Route {
    /// The route's name without `/`: `resources`, `customresources`,
    /// `events` (also the `route` field of the stdout/file sinks).
    pub fn name(self) -> &'static str {
        match self {
            Route::Resources => "resources",
            Route::CustomResources => "customresources",
            Route::Events => "events",
        }
    }
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a request was not acknowledged, sorted by what the caller must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendError {
    /// Try again later: connection error, timeout, 5xx, 429, 408, a 401
    /// even after a token renewal, a token endpoint failure, or an
    /// unexpected status (1xx/3xx). `status` is the HTTP status when there
    /// was one; `retry_after` is the server's `Retry-After` with 429 and
    /// 503.
    Retryable {
        reason: String,
        status: Option<u16>,
        retry_after: Option<Duration>,
    },
    /// 413: the body is too large; split it and send the halves.
    TooLarge,
    /// Any other 4xx: retrying the same data cannot succeed; a part of it
    /// may (split it to find what is refused).
    Rejected { status: u16, body_start: String },
    /// The whole request is refused for good, whatever it holds (an OTLP
    /// receiver's answer other than 2xx, 400, 413, 429 and 502-504): drop
    /// it, count and log it.
    Refused { status: u16, body_start: String },
}

impl SendError {
    /// The HTTP status, if the server answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            SendError::Retryable { status, .. } => *status,
            SendError::TooLarge => Some(413),
            SendError::Rejected { status, .. } | SendError::Refused { status, .. } => Some(*status),
        }
    }

    /// The wait the server asked for (429, 503).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            SendError::Retryable { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    pub fn is_retryable(&self) -> bool {
        matches!(self, SendError::Retryable { .. })
    }
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::Retryable { reason, .. } => f.write_str(reason),
            SendError::TooLarge => f.write_str("HTTP 413: request body too large"),
            SendError::Rejected { status, body_start }
            | SendError::Refused { status, body_start } => {
                write!(f, "HTTP {status}: {body_start}")
            }
        }
    }
}

impl std::error::Error for SendError {}

/// The intake client. Thread-safe (`&self` methods): share it by reference
/// or `Arc`. Its `Debug` shows no token.
pub struct IntakeClient {
    agent: ureq::Agent,
    base_url: String,
    tokens: TokenProvider,
}

impl fmt::Debug for IntakeClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IntakeClient")
            .field("base_url", &self.base_url)
            .field("tokens", &self.tokens)
            .finish_non_exhaustive()
    }
}

impl IntakeClient {
    /// A client for a validated configuration (see
    /// [`crate::config::CommonConfig::intake`]). Makes no request yet.
    pub fn new(config: &IntakeConfig) -> Self {
        IntakeClient {
            agent: build_agent(&Transport {
                extra_roots: &config.extra_roots,
                proxy: config.proxy.as_ref(),
                connect_timeout: config.connect_timeout,
                request_timeout: config.request_timeout,
            }),
            base_url: config.url.clone(),
            tokens: TokenProvider::new(&config.auth),
        }
    }

    /// The intake base URL, without trailing `/`.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// `POST /logs`: `stream` is the file's lines, each a CRI `F` line with
    /// a UTC `Z` timestamp and ending with `\n`, valid UTF-8, at most 32 MiB
    /// in all (SPEC §1; the caller guarantees all of this).
    pub fn post_logs(&self, meta: &LogMeta, stream: &[u8]) -> Result<(), SendError> {
        let multipart = Multipart::logs(meta);
        let url = format!("{}/logs", self.base_url);
        let body = Body([&multipart.head, stream, &multipart.tail]);
        self.post(&url, &multipart.content_type, body)
    }

    /// `POST /<route>` with `body`, a JSON array of records under 1 MiB
    /// (SPEC §1), as `Content-Type: application/json`.
    pub fn post_json(&self, route: Route, body: &[u8]) -> Result<(), SendError> {
        let url = format!("{}/{}", self.base_url, route.name());
        self.post(&url, "application/json", Body([body, &[], &[]]))
    }

    /// One POST, with one token renewal and resend after a 401.
    fn post(&self, url: &str, content_type: &str, body: Body<'_>) -> Result<(), SendError> {
        let token = self.tokens.token(&self.agent)?;
        match self.post_once(url, content_type, body, &token) {
            Err(SendError::Retryable {
                status: Some(401), ..
            }) if self.tokens.invalidate(&token) => {
                log::info!("intake answered 401: renewing the token and sending again");
                let token = self.tokens.token(&self.agent)?;
                self.post_once(url, content_type, body, &token)
            }
            other => other,
        }
    }

    fn post_once(
        &self,
        url: &str,
        content_type: &str,
        body: Body<'_>,
        token: &str,
    ) -> Result<(), SendError> {
        let mut reader = body.reader();
        let response = self
            .agent
            .post(url)
            .header("Authorization", format!("Bearer {token}"))
            .header("Content-Type", content_type)
            // Set by hand: a reader body would otherwise go chunked.
            .header("Content-Length", body.len())
            .send(ureq::SendBody::from_reader(&mut reader))
            .map_err(|e| SendError::Retryable {
                reason: format!("POST {url}: {e}"),
                status: None,
                retry_after: None,
            })?;
        let answer = read_answer(response);
        classify(url, answer.status, answer.retry_after, &answer.body)
    }
}

/// What a server answered, read whole: both sinks' clients sort it.
pub(crate) struct Answer {
    pub status: u16,
    /// `Retry-After`, in seconds or as an HTTP date.
    pub retry_after: Option<Duration>,
    pub content_type: String,
    /// The start of the body.
    pub body: Vec<u8>,
}

pub(crate) fn read_answer(mut response: ureq::http::Response<ureq::Body>) -> Answer {
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned)
    };
    let retry_after =
        header("retry-after").and_then(|value| parse_retry_after(&value, SystemTime::now()));
    let content_type = header("content-type").unwrap_or_default();
    // Reading the (small) body lets the connection be reused.
    let mut body = Vec::new();
    let _ = response
        .body_mut()
        .as_reader()
        .take(MAX_RESPONSE_READ)
        .read_to_end(&mut body);
    Answer {
        status: response.status().as_u16(),
        retry_after,
        content_type,
        body,
    }
}

/// Sorts an answer into success or a [`SendError`].
fn classify(
    url: &str,
    status: u16,
    retry_after: Option<Duration>,
    body: &[u8],
) -> Result<(), SendError> {
    match status {
        200..=299 => Ok(()),
        413 => Err(SendError::TooLarge),
        401 | 408 | 429 | 500..=599 | 100..=199 | 300..=399 => Err(SendError::Retryable {
            reason: format!("POST {url}: HTTP {status}: {}", body_start(body)),
            status: Some(status),
            retry_after: retry_after.filter(|_| status == 429 || status == 503),
        }),
        _ => Err(SendError::Rejected {
            status,
            body_start: body_start(body),
        }),
    }
}

/// Idle connections kept for reuse at most: as many as requests a daemon
/// may have in flight (logd's `LOGD_UPLOAD_CONCURRENCY` is at most 256).
const MAX_IDLE_CONNECTIONS: usize = 256;

/// What an HTTP client of either sink is built from.
pub(crate) struct Transport<'a> {
    pub extra_roots: &'a [Vec<u8>],
    pub proxy: Option<&'a ProxyConfig>,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
}

pub(crate) fn build_agent(settings: &Transport) -> ureq::Agent {
    // The Mozilla roots, plus the extra ones of `HIK8S_CA_FILE`; rustls on
    // ring, the one crypto provider of the project (kube uses it too).
    // The Mozilla roots are borrowed from the binary, not copied to the heap.
    let mozilla = webpki_root_certs::TLS_SERVER_ROOT_CERTS
        .iter()
        .map(|der| Certificate::from_der(der.as_ref()));
    let extra = settings
        .extra_roots
        .iter()
        .map(|der| Certificate::from_der(der).to_owned());
    let tls = TlsConfig::builder()
        .root_certs(RootCerts::from(mozilla.chain(extra)))
        .unversioned_rustls_crypto_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ));
    let config = ureq::Agent::config_builder()
        // Error statuses are answers to classify, with their bodies.
        .http_status_as_error(false)
        // A redirected POST would lose its body: surface 3xx instead.
        .max_redirects(0)
        .timeout_connect(Some(settings.connect_timeout))
        .timeout_global(Some(settings.request_timeout))
        // Every request in flight at once keeps its connection for the next
        // one (ureq keeps 3 per host by default: with more in flight, every
        // round would open new connections, each a TLS handshake).
        .max_idle_connections(MAX_IDLE_CONNECTIONS)
        .max_idle_connections_per_host(MAX_IDLE_CONNECTIONS)
        // Each connection keeps its buffers (128 KiB each by default): 64
        // connections held 16 MiB. Answers are small; a body goes out in
        // writes of the output buffer's size (a TLS record is 16 KiB anyway).
        .input_buffer_size(16 * 1024)
        .output_buffer_size(16 * 1024)
        // Always set: ureq's default reads the process environment, which
        // would bypass `.env` and flags.
        .proxy(settings.proxy.and_then(build_proxy))
        .tls_config(tls.build())
        .user_agent(concat!("hik8s-daemons/", env!("CARGO_PKG_VERSION")))
        .build();
    ureq::Agent::with_parts(
        config,
        DefaultConnector::default().chain(OneSendConnector),
        CachingResolver::default(),
    )
}

/// The proxy with its `NO_PROXY` list; the URL was validated with the
/// configuration.
fn build_proxy(config: &ProxyConfig) -> Option<ureq::Proxy> {
    let parsed = ureq::Proxy::new(config.url.expose()).ok()?;
    let mut builder = ureq::Proxy::builder(parsed.protocol())
        .host(parsed.host())
        .port(parsed.port());
    if let Some(username) = parsed.username() {
        builder = builder.username(username);
    }
    if let Some(password) = parsed.password() {
        builder = builder.password(password);
    }
    for host in &config.no_proxy {
        builder = builder.no_proxy(host);
    }
    builder.build().ok()
}

/// A request body in pieces, sent one after the other: a `/logs` body is
/// not copied into one buffer (a batch is up to 1 MiB, sent hundreds of
/// times a second while logd drains a backlog).
#[derive(Clone, Copy)]
struct Body<'a>([&'a [u8]; 3]);

impl<'a> Body<'a> {
    fn len(&self) -> usize {
        self.0.iter().map(|piece| piece.len()).sum()
    }

    fn reader(&self) -> BodyReader<'a> {
        BodyReader(self.0)
    }
}

/// Reads the pieces of a [`Body`] in order. Unlike `Read::chain`, a read
/// spans pieces: ureq sends what each read returns, and a read ending at
/// the small multipart head would cost a send(2) of its own.
struct BodyReader<'a>([&'a [u8]; 3]);

impl Read for BodyReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let mut n = 0;
        for piece in &mut self.0 {
            let take = piece.len().min(buf.len() - n);
            buf[n..n + take].copy_from_slice(&piece[..take]);
            *piece = &piece[take..];
            n += take;
        }
        Ok(n)
    }
}

/// The multipart/form-data framing around a `/logs` stream, and its
/// Content-Type.
struct Multipart {
    content_type: String,
    /// The `metadata` part and the `stream` part's headers.
    head: Vec<u8>,
    /// What follows the stream: the closing boundary.
    tail: Vec<u8>,
}

impl Multipart {
    /// The `/logs` framing: part `metadata` (JSON) then part `stream`. The
    /// boundary is 40 random alphanumerics (~238 bits), fresh for every
    /// request, so a log line contains it only by a chance of about 2^-200.
    fn logs(meta: &LogMeta) -> Multipart {
        let boundary = random_boundary();
        let metadata = serde_json::to_string(meta).expect("two strings always serialize");
        let part_head = |name: &str, content_type: &str| {
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\nContent-Type: {content_type}\r\n\r\n"
            )
        };
        let head = format!(
            "{}{metadata}\r\n{}",
            part_head("metadata", "application/json"),
            part_head("stream", "application/octet-stream")
        );
        Multipart {
            content_type: format!("multipart/form-data; boundary={boundary}"),
            head: head.into_bytes(),
            tail: format!("\r\n--{boundary}--\r\n").into_bytes(),
        }
    }
}

fn random_boundary() -> String {
    let mut boundary = String::from("hik8s-");
    boundary.extend(std::iter::repeat_with(fastrand::alphanumeric).take(40));
    boundary
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_sorted_by_what_the_caller_does() {
        let url = "http://x/logs";
        assert_eq!(classify(url, 200, None, b""), Ok(()));
        assert_eq!(classify(url, 204, None, b""), Ok(()));
        assert_eq!(classify(url, 413, None, b""), Err(SendError::TooLarge));
        assert_eq!(
            classify(url, 400, None, b"bad record"),
            Err(SendError::Rejected {
                status: 400,
                body_start: "bad record".into()
            })
        );
        assert_eq!(
            classify(url, 404, None, b"").unwrap_err().status(),
            Some(404)
        );
        for status in [401, 408, 429, 500, 502, 503, 504, 302] {
            let error = classify(url, status, None, b"").unwrap_err();
            assert!(error.is_retryable(), "{status}");
            assert_eq!(error.status(), Some(status));
        }
        let wait = Some(Duration::from_secs(3));
        assert_eq!(
            classify(url, 429, wait, b"").unwrap_err().retry_after(),
            wait
        );
        assert_eq!(
            classify(url, 503, wait, b"").unwrap_err().retry_after(),
            wait
        );
        assert_eq!(
            classify(url, 500, wait, b"").unwrap_err().retry_after(),
            None
        );
    }

    #[test]
    fn multipart_has_metadata_then_stream_and_a_fresh_boundary() {
        let meta = LogMeta {
            path: "/var/log/pods/ns_pod_uid/c",
            file: "0.log",
        };
        let stream = b"2024-11-18T08:59:45.123456789Z stdout F hello\n";
        let one = Multipart::logs(&meta);
        let two = Multipart::logs(&meta);
        assert_ne!(one.content_type, two.content_type);
        let boundary = one
            .content_type
            .strip_prefix("multipart/form-data; boundary=")
            .expect("boundary parameter");
        let mut body = Vec::new();
        let pieces = Body([&one.head, stream, &one.tail]);
        pieces
            .reader()
            .read_to_end(&mut body)
            .expect("reading slices");
        assert_eq!(body.len(), pieces.len());
        let text = String::from_utf8(body).expect("utf-8 body");
        let expected = format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"metadata\"\r\n\
             Content-Type: application/json\r\n\r\n\
             {{\"path\":\"/var/log/pods/ns_pod_uid/c\",\"file\":\"0.log\"}}\r\n\
             --{boundary}\r\nContent-Disposition: form-data; name=\"stream\"\r\n\
             Content-Type: application/octet-stream\r\n\r\n\
             2024-11-18T08:59:45.123456789Z stdout F hello\n\r\n--{boundary}--\r\n"
        );
        assert_eq!(text, expected);
    }
}
