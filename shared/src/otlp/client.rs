//! The OTLP/HTTP logs client: one POST per call, answers sorted as the
//! OTLP/HTTP specification says (any 2xx is success; 429, 502, 503, 504
//! and transport failures are retried; 400 and 413 refuse something in the
//! request; anything else refuses it all), the same [`SendError`] the
//! intake client gives, so the daemons' retry and split logic serves both.

use std::fmt;
use std::sync::Mutex;
use std::time::Duration;

use flate2::Compression;
use flate2::read::GzEncoder;
use prost::Message;

use super::encode::{Encoder, Format};
use crate::auth::body_start;
use crate::config::{CONNECT_TIMEOUT, OtlpConfig, Secret};
use crate::intake::{SendError, Transport, build_agent, read_answer};

/// A request the receiver took, with what it says it dropped of it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Delivered {
    /// `partial_success.rejected_log_records`: records the receiver took
    /// but dropped. Not retried (the specification says so).
    pub rejected: u64,
    /// `partial_success.error_message`.
    pub message: String,
}

/// The OTLP client. Thread-safe; its `Debug` shows no header value.
pub struct OtlpClient {
    agent: ureq::Agent,
    url: String,
    headers: Vec<(String, Secret)>,
    format: Format,
    gzip: bool,
    resource_attributes: Vec<(String, String)>,
    /// The body of the last request, kept for the next one: a body of a
    /// few MiB is mapped fresh by the allocator, and faulting its pages in
    /// again for every request cost a sixth of a drain's CPU.
    spare: Mutex<Option<Vec<u8>>>,
}

/// A body larger than this is not kept for the next request.
const MAX_SPARE: usize = 8 << 20;

impl fmt::Debug for OtlpClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OtlpClient")
            .field("url", &self.url)
            .field("format", &self.format)
            .field("gzip", &self.gzip)
            .finish_non_exhaustive()
    }
}

impl OtlpClient {
    pub fn new(config: &OtlpConfig) -> OtlpClient {
        OtlpClient {
            agent: build_agent(&Transport {
                extra_roots: &config.extra_roots,
                proxy: config.proxy.as_ref(),
                connect_timeout: CONNECT_TIMEOUT.min(config.timeout),
                request_timeout: config.timeout,
            }),
            url: config.url.clone(),
            headers: config.headers.clone(),
            format: config.format,
            gzip: config.gzip,
            resource_attributes: config.resource_attributes.clone(),
            spare: Mutex::new(None),
        }
    }

    /// The logs URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A new request in this client's format, its records from `scope`
    /// (name, version), `OTEL_RESOURCE_ATTRIBUTES` on every resource.
    pub fn encoder<'a>(&'a self, scope: (&'a str, &'a str)) -> Encoder<'a> {
        let buffer = self.spare_buffer().take().unwrap_or_default();
        Encoder::with_buffer(self.format, scope, &self.resource_attributes, buffer)
    }

    /// POSTs a request body made by [`OtlpClient::encoder`]: one attempt.
    pub fn send(&self, body: Vec<u8>) -> Result<Delivered, SendError> {
        let result = if self.gzip {
            self.post_gzip(&body[..])
        } else {
            self.post(&body[..])
        };
        self.keep_spare(body);
        result
    }

    /// POSTs a request written as it is sent (chunked): `next` writes the
    /// next resources into the request and says false once there are no
    /// more. One attempt. Only what `next` writes at a time is in memory,
    /// not the whole body: a drain's peak memory was its request bodies,
    /// several MiB each.
    pub fn send_streamed(
        &self,
        scope: (&str, &str),
        next: impl FnMut(&mut Encoder) -> bool,
    ) -> Result<Delivered, SendError> {
        let mut body = Streamed {
            encoder: Some(self.encoder(scope)),
            finished: Vec::new(),
            sent: 0,
            next,
        };
        let result = if self.gzip {
            self.post_gzip(&mut body)
        } else {
            self.post(ureq::SendBody::from_reader(&mut body))
        };
        self.keep_spare(body.finished);
        result
    }

    /// POSTs `body` compressed as it is sent (chunked), not into a copy.
    fn post_gzip(&self, body: impl std::io::Read) -> Result<Delivered, SendError> {
        // The fastest level: most of what gzip saves on logs, at a fraction
        // of the default level's CPU.
        let mut compressed = GzEncoder::new(body, Compression::fast());
        self.post(ureq::SendBody::from_reader(&mut compressed))
    }

    fn keep_spare(&self, buffer: Vec<u8>) {
        if buffer.capacity() <= MAX_SPARE {
            *self.spare_buffer() = Some(buffer);
        }
    }

    fn spare_buffer(&self) -> std::sync::MutexGuard<'_, Option<Vec<u8>>> {
        self.spare
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn post(&self, body: impl ureq::AsSendBody) -> Result<Delivered, SendError> {
        let mut request = self
            .agent
            .post(&self.url)
            .header("Content-Type", self.format.content_type());
        if self.gzip {
            request = request.header("Content-Encoding", "gzip");
        }
        for (name, value) in &self.headers {
            request = request.header(name, value.expose());
        }
        let response = request.send(body).map_err(|e| SendError::Retryable {
            reason: format!("POST {}: {e}", self.url),
            status: None,
            retry_after: None,
        })?;
        let answer = read_answer(response);
        let protobuf = answer.content_type.starts_with("application/x-protobuf");
        classify(
            &self.url,
            answer.status,
            answer.retry_after,
            protobuf,
            &answer.body,
        )
    }
}

/// A request body read as it is written (see [`OtlpClient::send_streamed`]).
struct Streamed<'a, F> {
    /// None once `next` said there is no more.
    encoder: Option<Encoder<'a>>,
    /// The end of the body, once finished (then its buffer, for the next
    /// request).
    finished: Vec<u8>,
    /// Bytes of the encoder's output (or of `finished`) read already.
    sent: usize,
    next: F,
}

impl<F: FnMut(&mut Encoder) -> bool> std::io::Read for Streamed<'_, F> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            let pending = match &self.encoder {
                Some(encoder) => &encoder.written()[self.sent..],
                None => &self.finished[self.sent..],
            };
            if !pending.is_empty() {
                let n = pending.len().min(buf.len());
                buf[..n].copy_from_slice(&pending[..n]);
                self.sent += n;
                return Ok(n);
            }
            let Some(encoder) = &mut self.encoder else {
                return Ok(0);
            };
            encoder.clear_written();
            self.sent = 0;
            if !(self.next)(encoder) {
                let encoder = self.encoder.take().expect("matched above");
                self.finished = encoder.finish();
            }
        }
    }
}

/// Sorts an answer as the OTLP/HTTP specification does.
fn classify(
    url: &str,
    status: u16,
    retry_after: Option<Duration>,
    protobuf: bool,
    body: &[u8],
) -> Result<Delivered, SendError> {
    match status {
        200..=299 => Ok(partial_success(protobuf, body)),
        413 => Err(SendError::TooLarge),
        400 => Err(SendError::Rejected {
            status,
            body_start: status_message(protobuf, body),
        }),
        429 | 502..=504 => Err(SendError::Retryable {
            reason: format!(
                "POST {url}: HTTP {status}: {}",
                status_message(protobuf, body)
            ),
            status: Some(status),
            retry_after: retry_after.filter(|_| status == 429 || status == 503),
        }),
        _ => Err(SendError::Refused {
            status,
            body_start: status_message(protobuf, body),
        }),
    }
}

/// `ExportLogsServiceResponse` (only what is read of it).
#[derive(Clone, PartialEq, Message)]
struct ExportLogsServiceResponse {
    #[prost(message, optional, tag = "1")]
    partial_success: Option<ExportLogsPartialSuccess>,
}

#[derive(Clone, PartialEq, Message)]
struct ExportLogsPartialSuccess {
    #[prost(int64, tag = "1")]
    rejected_log_records: i64,
    #[prost(string, tag = "2")]
    error_message: String,
}

/// `google.rpc.Status`, the body of an OTLP error answer.
#[derive(Clone, PartialEq, Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

/// What a 2xx answer says was dropped; an empty or unreadable body (Loki's
/// 204) says nothing was.
fn partial_success(protobuf: bool, body: &[u8]) -> Delivered {
    if body.is_empty() {
        return Delivered::default();
    }
    if protobuf {
        return ExportLogsServiceResponse::decode(body)
            .ok()
            .and_then(|r| r.partial_success)
            .map(|p| Delivered {
                rejected: u64::try_from(p.rejected_log_records).unwrap_or(0),
                message: p.error_message,
            })
            .unwrap_or_default();
    }
    let Ok(json) = serde_json::from_slice::<serde_json::Value>(body) else {
        return Delivered::default();
    };
    let partial = &json["partialSuccess"];
    // int64 is a string in OTLP/JSON; a number is read too.
    let rejected = match &partial["rejectedLogRecords"] {
        serde_json::Value::String(s) => s.parse().unwrap_or(0),
        other => other.as_u64().unwrap_or(0),
    };
    Delivered {
        rejected,
        message: partial["errorMessage"].as_str().unwrap_or("").to_string(),
    }
}

/// The message of an error answer: a `google.rpc.Status`'s when it is one,
/// else the start of the body.
fn status_message(protobuf: bool, body: &[u8]) -> String {
    if protobuf {
        if let Ok(status) = RpcStatus::decode(body) {
            return body_start(status.message.as_bytes());
        }
    } else if let Ok(json) = serde_json::from_slice::<serde_json::Value>(body) {
        if let Some(message) = json["message"].as_str() {
            return body_start(message.as_bytes());
        }
    }
    body_start(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_sorted_as_the_otlp_specification_says() {
        let url = "http://x/v1/logs";
        assert_eq!(
            classify(url, 200, None, true, b""),
            Ok(Delivered::default())
        );
        assert_eq!(
            classify(url, 204, None, false, b""),
            Ok(Delivered::default())
        );
        assert_eq!(
            classify(url, 413, None, true, b""),
            Err(SendError::TooLarge)
        );
        assert!(matches!(
            classify(url, 400, None, false, br#"{"code":3,"message":"bad body"}"#),
            Err(SendError::Rejected { status: 400, body_start }) if body_start == "bad body"
        ));
        for status in [429, 502, 503, 504] {
            let error = classify(url, status, None, true, b"").unwrap_err();
            assert!(error.is_retryable(), "{status}");
        }
        for status in [401, 403, 404, 408, 500, 501, 302] {
            let error = classify(url, status, None, true, b"").unwrap_err();
            assert!(
                matches!(error, SendError::Refused { .. }),
                "{status}: {error:?}"
            );
        }
        let wait = Some(Duration::from_secs(3));
        assert_eq!(
            classify(url, 503, wait, true, b"")
                .unwrap_err()
                .retry_after(),
            wait
        );
        assert_eq!(
            classify(url, 502, wait, true, b"")
                .unwrap_err()
                .retry_after(),
            None
        );
    }

    #[test]
    fn a_partial_success_is_read_in_both_encodings() {
        let response = ExportLogsServiceResponse {
            partial_success: Some(ExportLogsPartialSuccess {
                rejected_log_records: 3,
                error_message: "too old".into(),
            }),
        };
        let expected = Delivered {
            rejected: 3,
            message: "too old".into(),
        };
        assert_eq!(partial_success(true, &response.encode_to_vec()), expected);
        let json = br#"{"partialSuccess":{"rejectedLogRecords":"3","errorMessage":"too old"}}"#;
        assert_eq!(partial_success(false, json), expected);
        assert_eq!(partial_success(false, b"{}"), Delivered::default());
    }

    #[test]
    fn a_protobuf_status_gives_its_message() {
        let status = RpcStatus {
            code: 16,
            message: "unauthenticated".into(),
        };
        assert_eq!(
            status_message(true, &status.encode_to_vec()),
            "unauthenticated"
        );
    }
}
