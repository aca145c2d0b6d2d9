//! A request's head and body in one write. ureq writes the head of a request
//! and then its body, two `send(2)` calls and two TCP segments; when the
//! body is small, that doubles the packets and the intake's wake-ups (logd
//! in the steady state posts a few KiB per file, a few hundred times a
//! second). This connector, last in ureq's chain, wraps the connection (TLS
//! or not): it keeps a head back while the body announced by its
//! `Content-Length` fits after it in the output buffer, and sends both with
//! the body's first write. Larger requests go as before.

use std::fmt;

use ureq::unversioned::transport::{Buffers, ConnectionDetails, Connector, NextTimeout, Transport};

/// See the module documentation.
#[derive(Debug, Default)]
pub struct OneSendConnector;

impl<In: Transport> Connector<In> for OneSendConnector {
    type Out = OneSend<In>;

    fn connect(
        &self,
        _details: &ConnectionDetails,
        chained: Option<In>,
    ) -> Result<Option<Self::Out>, ureq::Error> {
        Ok(chained.map(|inner| OneSend {
            inner,
            head: Vec::new(),
            starts_request: true,
        }))
    }
}

/// A connection that may hold a request head back (see the module documentation).
pub struct OneSend<T> {
    inner: T,
    /// A head not sent yet: its body comes next.
    head: Vec<u8>,
    /// The next write is the start of a request (nothing was written since
    /// the last answer was awaited): only then may it be a head.
    starts_request: bool,
}

impl<T: Transport> fmt::Debug for OneSend<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.fmt(f)
    }
}

impl<T: Transport> OneSend<T> {
    /// Sends a held head on its own (ureq waits for an answer first).
    fn release_head(&mut self, timeout: NextTimeout) -> Result<(), ureq::Error> {
        if self.head.is_empty() {
            return Ok(());
        }
        let len = self.head.len();
        self.inner.buffers().output()[..len].copy_from_slice(&self.head);
        self.head.clear();
        self.inner.transmit_output(len, timeout)
    }
}

impl<T: Transport> Transport for OneSend<T> {
    fn buffers(&mut self) -> &mut dyn Buffers {
        self.inner.buffers()
    }

    fn transmit_output(&mut self, amount: usize, timeout: NextTimeout) -> Result<(), ureq::Error> {
        let output = self.inner.buffers().output();
        if !self.head.is_empty() {
            // The body's first bytes: the head goes in front of them. It
            // fits: held only if the whole body fits after it.
            let len = self.head.len();
            output.copy_within(..amount, len);
            output[..len].copy_from_slice(&self.head);
            self.head.clear();
            return self.inner.transmit_output(len + amount, timeout);
        }
        let room = output.len();
        let written = &output[..amount];
        let starts_request = std::mem::replace(&mut self.starts_request, false);
        if starts_request && body_len(written).is_some_and(|body| amount + body <= room) {
            self.head.extend_from_slice(written);
            return Ok(());
        }
        self.inner.transmit_output(amount, timeout)
    }

    fn await_input(&mut self, timeout: NextTimeout) -> Result<bool, ureq::Error> {
        self.release_head(timeout)?;
        self.starts_request = true;
        self.inner.await_input(timeout)
    }

    fn is_open(&mut self) -> bool {
        self.inner.is_open()
    }

    fn is_tls(&self) -> bool {
        self.inner.is_tls()
    }
}

/// The body length announced by `bytes` when they are exactly a request
/// head with a `Content-Length` above 0 (and no other framing).
fn body_len(bytes: &[u8]) -> Option<usize> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(bytes) {
        Ok(httparse::Status::Complete(len)) if len == bytes.len() => {}
        _ => return None,
    }
    let mut body = None;
    for header in request.headers.iter() {
        if header.name.eq_ignore_ascii_case("transfer-encoding") {
            return None;
        }
        if header.name.eq_ignore_ascii_case("content-length") {
            body = std::str::from_utf8(header.value).ok()?.trim().parse().ok();
        }
    }
    body.filter(|&len| len > 0)
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use ureq::unversioned::resolver::DefaultResolver;
    use ureq::unversioned::transport::{
        Buffers, ConnectionDetails, Connector, LazyBuffers, NextTimeout, Transport,
    };

    use super::{OneSendConnector, body_len};

    /// A connection that records each write and answers 200.
    #[derive(Debug, Default)]
    struct Recorder(Arc<Mutex<Vec<Vec<u8>>>>);

    impl Connector for Recorder {
        type Out = Recorded;

        fn connect(
            &self,
            _: &ConnectionDetails,
            _: Option<()>,
        ) -> Result<Option<Recorded>, ureq::Error> {
            Ok(Some(Recorded {
                writes: Arc::clone(&self.0),
                buffers: LazyBuffers::new(4096, 4096),
            }))
        }
    }

    #[derive(Debug)]
    struct Recorded {
        writes: Arc<Mutex<Vec<Vec<u8>>>>,
        buffers: LazyBuffers,
    }

    impl Transport for Recorded {
        fn buffers(&mut self) -> &mut dyn Buffers {
            &mut self.buffers
        }

        fn transmit_output(&mut self, amount: usize, _: NextTimeout) -> Result<(), ureq::Error> {
            let bytes = self.buffers.output()[..amount].to_vec();
            self.writes.lock().unwrap().push(bytes);
            Ok(())
        }

        fn await_input(&mut self, _: NextTimeout) -> Result<bool, ureq::Error> {
            let answer = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
            self.buffers.input_append_buf()[..answer.len()].copy_from_slice(answer);
            self.buffers.input_appended(answer.len());
            Ok(true)
        }

        fn is_open(&mut self) -> bool {
            true
        }
    }

    /// The writes of POSTs of `bodies`, one after the other on one
    /// connection, through the connector.
    fn writes_of(bodies: &[&[u8]]) -> Vec<Vec<u8>> {
        let recorder = Recorder::default();
        let writes = Arc::clone(&recorder.0);
        let agent = ureq::Agent::with_parts(
            ureq::Agent::config_builder().build(),
            recorder.chain(OneSendConnector),
            DefaultResolver::default(),
        );
        for body in bodies {
            let mut response = agent.post("http://127.0.0.1:9/logs").send(*body).unwrap();
            assert_eq!(response.status(), 200);
            response.body_mut().read_to_vec().unwrap();
        }
        writes.lock().unwrap().clone()
    }

    #[test]
    fn a_small_request_is_one_write_and_a_large_one_as_before() {
        let small = vec![b'x'; 1000];
        let writes = writes_of(&[&small, &small]);
        assert_eq!(writes.len(), 2, "head and body in one write, per request");
        for write in writes {
            assert!(write.starts_with(b"POST /logs HTTP/1.1\r\n"));
            assert!(write.ends_with(&small));
        }

        // More than the 4 KiB output buffer holds after the head.
        let large = vec![b'y'; 10_000];
        let writes = writes_of(&[&large]);
        assert!(writes.len() >= 3, "{} writes", writes.len());
        assert!(writes[0].ends_with(b"\r\n\r\n"), "the head alone first");
        assert_eq!(writes[1..].concat(), large);
    }

    #[test]
    fn only_a_whole_head_announcing_a_body_is_held() {
        let head = b"POST /logs HTTP/1.1\r\nHost: x\r\nContent-Length: 12\r\n\r\n";
        assert_eq!(body_len(head), Some(12));
        let lower = b"POST /logs HTTP/1.1\r\ncontent-length: 7\r\n\r\n";
        assert_eq!(body_len(lower), Some(7));
        // No body, an unfinished head, a head with bytes after it, chunked.
        assert_eq!(body_len(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"), None);
        assert_eq!(
            body_len(b"POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n"),
            None
        );
        assert_eq!(body_len(b"POST / HTTP/1.1\r\nContent-Length: 5\r\n"), None);
        assert_eq!(
            body_len(b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello"),
            None
        );
        assert_eq!(
            body_len(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n"),
            None
        );
        // The body itself is not a head.
        assert_eq!(
            body_len(b"--boundary\r\nContent-Disposition: form-data\r\n\r\n"),
            None
        );
    }
}
