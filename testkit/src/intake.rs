//! A test HiK8s intake server.
//!
//! [`Intake::start`] runs a server on `127.0.0.1` with a port of its own. It
//! speaks the real intake protocol (SPEC §1) over real HTTP/1.1 with
//! keep-alive, enforces the backend's rules with the backend's own status
//! codes (a malformed `/logs` body is a 500, as on the real backend), records
//! what it accepted, and injects faults on demand: error statuses, latency,
//! refused connections, revoked tokens, rejected lines.
//!
//! It is also an OTLP/HTTP logs receiver (`POST /v1/logs`, or any path
//! ending in it; protobuf or JSON, gzip or not), for the daemons' OTLP sink,
//! with the same faults: [`Intake::otlp_records`], [`Intake::set_otlp_answer`],
//! [`Intake::otlp_refuse_body_containing`].
//!
//! Only requests answered 2xx count as delivered: a request that was faulted,
//! rejected or invalid is never stored.
//!
//! Threads: `intake-accept` (the listener) and one `intake-conn-N` per open
//! connection. Dropping the [`Intake`] closes the listener and every open
//! connection.

mod http;
mod in_flight;
mod listener;
mod logs;
mod otlp;
mod records;
mod routes;
mod store;
mod token;

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use in_flight::InFlight;
use listener::Listener;
use otlp::OtlpState;
use store::Store;
use token::Tokens;

/// The official OTLP message types the receiver decodes into, re-exported
/// so that tests build requests and read answers with the same version.
pub use opentelemetry_proto;
pub use otlp::{OtlpAnswer, OtlpFormat, OtlpRecord, OtlpRequest, any_value_json};
/// The `prost` that `opentelemetry_proto`'s messages derive from
/// (`prost::Message::encode`, `decode`).
pub use prost;

/// The client id the token endpoint accepts (made up).
pub const CLIENT_ID: &str = "test-client";
/// The client secret the token endpoint accepts (made up).
pub const CLIENT_SECRET: &str = "test-secret";
/// A bearer token that is always accepted, never expires and is not affected
/// by [`Intake::revoke_tokens`] (for `HIK8S_TOKEN` tests).
pub const STATIC_TOKEN: &str = "static-test-token";

/// Largest `/logs` request body, in bytes: larger bodies are answered 413.
pub const MAX_LOGS_BODY_BYTES: usize = 32 * 1024 * 1024;
/// Largest body of a JSON route (the backend's JSON limit): larger bodies are
/// answered 413.
pub const MAX_JSON_BODY_BYTES: usize = 1024 * 1024;
/// Largest OTLP request body, in bytes, as received and once inflated
/// (the OpenTelemetry Collector's default `max_request_body_size`): larger
/// bodies are answered 413.
pub const MAX_OTLP_BODY_BYTES: usize = 20 * 1024 * 1024;
/// Longest message of a stream line, in bytes: everything after the first
/// `Z` (the end of the timestamp), so it includes ` stdout F `. Longer lines
/// make the whole request a 500.
pub const MAX_MESSAGE_BYTES: usize = 30 * 1024;

/// How the server behaves, fixed at start.
#[derive(Clone, Debug)]
pub struct IntakeOptions {
    /// `expires_in` of issued tokens; a token is refused (401) once it has
    /// expired. Default 3600.
    pub token_expires_in_secs: u64,
    /// For benchmarks: accepted `/logs` lines are validated and counted
    /// ([`Intake::log_line_count`]) but not stored, so [`Intake::log_batches`]
    /// and [`Intake::log_lines`] stay empty; OTLP records likewise
    /// ([`Intake::otlp_record_count`]). Default false.
    pub count_only: bool,
    /// Keep connections open between requests (HTTP/1.1 keep-alive). When
    /// false every response carries `Connection: close`. Default true.
    pub keep_alive: bool,
}

impl Default for IntakeOptions {
    fn default() -> Self {
        IntakeOptions {
            token_expires_in_secs: 3600,
            count_only: false,
            keep_alive: true,
        }
    }
}

/// Faults injected into data requests (`/logs`, the JSON routes, `/raw`,
/// OTLP's `/v1/logs`; never the token endpoint or `/healthz`), after
/// authentication. A faulted request is not stored.
#[derive(Clone, Debug, Default)]
pub struct Faults {
    /// Fraction (0..=1) of data requests answered 500.
    pub fail_500: f64,
    /// Fraction (0..=1) of data requests answered 503.
    pub fail_503: f64,
    /// Fraction (0..=1) of data requests answered 429.
    pub fail_429: f64,
    /// Sent as `Retry-After: <secs>` with every 429 and 503 when set.
    pub retry_after_secs: Option<u64>,
    /// Added before answering every data request. Each request waits in
    /// its own connection's thread, so concurrent requests are delayed
    /// independently (a distant intake, not a slow one).
    pub latency: Duration,
}

/// One accepted `POST /logs` request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogBatch {
    /// `metadata.path`, e.g. `/var/log/pods/ns_pod_uid/container`.
    pub path: String,
    /// `metadata.file`, e.g. `0.log`.
    pub file: String,
    /// The stream split on `\n`, as received, without the `\n`. Text after
    /// the last `\n` is ignored and blank lines are skipped, as the backend
    /// does.
    pub lines: Vec<String>,
}

/// One request and the status it was answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestLog {
    /// When the request's head had arrived: before its body, and before any
    /// injected latency (to check, e.g., that a client waited out a
    /// `Retry-After` before sending again).
    pub at: Instant,
    pub method: String,
    /// The request path without the query.
    pub path: String,
    pub status: u16,
    pub content_type: Option<String>,
    /// Bytes of request body received.
    pub body_len: usize,
    /// The `Authorization` header as sent (test tokens are made up).
    pub authorization: Option<String>,
}

/// The running server. Dropping it stops the server and closes its
/// connections.
pub struct Intake {
    shared: Arc<Shared>,
    accept_thread: Option<JoinHandle<()>>,
}

/// What the server threads and the test thread share.
struct Shared {
    opts: IntakeOptions,
    store: Store,
    tokens: Tokens,
    faults: Mutex<Faults>,
    /// Needles and the status a request containing one is answered.
    rejections: Mutex<Vec<(String, u16)>>,
    otlp: OtlpState,
    /// Data requests from their head to their answer.
    in_flight: InFlight,
    listener: Listener,
}

impl Intake {
    /// Starts a server on `127.0.0.1` with a free port and default options.
    pub fn start() -> Intake {
        Intake::start_with(IntakeOptions::default())
    }

    /// Starts a server on `127.0.0.1` with a free port.
    pub fn start_with(opts: IntakeOptions) -> Intake {
        Intake::start_on(0, opts)
    }

    /// Starts a server on `127.0.0.1:port` (0: a free port). Panics if the
    /// port cannot be bound.
    pub fn start_on(port: u16, opts: IntakeOptions) -> Intake {
        let socket = TcpListener::bind(("127.0.0.1", port))
            .unwrap_or_else(|e| panic!("test intake: cannot bind 127.0.0.1:{port}: {e}"));
        let port = socket
            .local_addr()
            .expect("a bound socket has an address")
            .port();
        let shared = Arc::new(Shared {
            opts,
            store: Store::default(),
            tokens: Tokens::default(),
            faults: Mutex::new(Faults::default()),
            rejections: Mutex::new(Vec::new()),
            otlp: OtlpState::default(),
            in_flight: InFlight::default(),
            listener: Listener::new(port),
        });
        let accept_thread = listener::spawn_accept_thread(Arc::clone(&shared), socket);
        Intake {
            shared,
            accept_thread: Some(accept_thread),
        }
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port())
    }

    /// The token endpoint: `url() + "/oauth2/token"`.
    pub fn token_url(&self) -> String {
        format!("{}/oauth2/token", self.url())
    }

    /// The OTLP/HTTP logs endpoint: `url() + "/v1/logs"`.
    pub fn otlp_logs_url(&self) -> String {
        format!("{}/v1/logs", self.url())
    }

    pub fn port(&self) -> u16 {
        self.shared.listener.port()
    }

    /// Accepted `POST /logs` requests, in arrival order (empty with
    /// `count_only`).
    pub fn log_batches(&self) -> Vec<LogBatch> {
        self.shared.store.log_batches()
    }

    /// Every accepted stream line, flattened, in arrival order (empty with
    /// `count_only`).
    pub fn log_lines(&self) -> Vec<String> {
        self.shared
            .store
            .log_batches()
            .into_iter()
            .flat_map(|batch| batch.lines)
            .collect()
    }

    /// How many stream lines were accepted (counted with `count_only` too).
    pub fn log_line_count(&self) -> u64 {
        self.shared.store.log_line_count()
    }

    /// How many bytes of stream parts were accepted (counted with
    /// `count_only` too).
    pub fn log_byte_count(&self) -> u64 {
        self.shared.store.log_byte_count()
    }

    /// Accepted records (the whole record objects) of `route`: `"resources"`,
    /// `"customresources"` or `"events"`. The single-object routes
    /// (`/resource`, …) count under the plural. Dropped records (no
    /// `apiVersion` or `kind`) are not included. Panics on another route
    /// name, to catch typos in tests.
    pub fn records(&self, route: &str) -> Vec<serde_json::Value> {
        self.shared.store.records(route)
    }

    /// Records that were answered 200 but dropped because their `json`
    /// lacks `apiVersion` or `kind`, as the backend does.
    pub fn dropped_records(&self) -> usize {
        self.shared.store.dropped_records()
    }

    /// Every answered request with its status, in order of answer.
    pub fn requests(&self) -> Vec<RequestLog> {
        self.shared.store.requests()
    }

    /// How many answered requests had each status.
    pub fn status_counts(&self) -> BTreeMap<u16, u64> {
        self.shared.store.status_counts()
    }

    /// How many tokens were issued.
    pub fn token_requests(&self) -> usize {
        self.shared.tokens.issued_count()
    }

    /// Lines (`\n`-terminated) received on `POST /raw`.
    pub fn raw_lines(&self) -> u64 {
        self.shared.store.raw_lines()
    }

    /// Body bytes received on `POST /raw`.
    pub fn raw_bytes(&self) -> u64 {
        self.shared.store.raw_bytes()
    }

    /// Accepted (2xx) OTLP export requests, in arrival order (empty with
    /// `count_only`).
    pub fn otlp_requests(&self) -> Vec<OtlpRequest> {
        self.shared.store.otlp_requests()
    }

    /// Every log record of [`Intake::otlp_requests`], flattened, in arrival
    /// order.
    pub fn otlp_records(&self) -> Vec<OtlpRecord> {
        otlp::flatten(&self.shared.store.otlp_requests())
    }

    /// How many OTLP log records were accepted (counted with `count_only`
    /// too). A partial success's answer does not say which records it
    /// rejected: they are all counted.
    pub fn otlp_record_count(&self) -> u64 {
        self.shared.store.otlp_record_count()
    }

    /// How accepted OTLP exports are answered from now on (default
    /// [`OtlpAnswer::Ok200`]).
    pub fn set_otlp_answer(&self, answer: OtlpAnswer) {
        self.shared.otlp.set_answer(answer);
    }

    /// From now on, an OTLP export with a log record whose body has a
    /// string containing `needle` (a string body, or a string anywhere in a
    /// kvlist or array body) is answered 400 and not stored: what a sender
    /// must split and isolate. After faults and decoding.
    pub fn otlp_refuse_body_containing(&self, needle: &str) {
        self.shared.otlp.refuse_body_containing(needle);
    }

    /// Polls `cond` (every ~5 ms) until it holds or `timeout` passes; returns
    /// whether it held.
    pub fn wait_for(&self, timeout: Duration, mut cond: impl FnMut(&Intake) -> bool) -> bool {
        crate::wait::poll_until(timeout, || cond(self))
    }

    /// Data requests being handled now: from the arrival of their head to
    /// the end of their answer, the injected latency included.
    pub fn in_flight(&self) -> usize {
        self.shared.in_flight.now()
    }

    /// The most data requests in flight at once (as [`Intake::in_flight`]
    /// counts them) since the start or the last
    /// [`Intake::reset_max_in_flight`].
    pub fn max_in_flight(&self) -> usize {
        self.shared.in_flight.max()
    }

    /// Starts [`Intake::max_in_flight`] again from the requests in flight
    /// now.
    pub fn reset_max_in_flight(&self) {
        self.shared.in_flight.reset_max();
    }

    /// Replaces the injected faults, at any time: a request takes the faults
    /// (and the latency) in force when its head arrives, so requests that
    /// started before the change keep the old ones.
    pub fn set_faults(&self, faults: Faults) {
        *self.shared.faults.lock().expect("faults lock") = faults;
    }

    /// Closes the listening socket (a connect gets ECONNREFUSED) and every
    /// open connection, and reopens the listener on the same port after `d`.
    /// Returns once the listener is closed.
    pub fn refuse_connections_for(&self, d: Duration) {
        self.shared.listener.refuse_until(Instant::now() + d);
    }

    /// `true`: closes the listening socket and every open connection, until
    /// called with `false`. Returns once the listener is closed (or, for
    /// `false`, listening again on the same port).
    pub fn set_refusing(&self, refusing: bool) {
        self.shared.listener.set_refusing(refusing);
    }

    /// From now on, a `/logs` request whose stream contains `needle`, or a
    /// JSON-route request whose body contains it, is answered `status` and
    /// not stored (after authentication, faults and validation).
    pub fn reject_lines_containing(&self, needle: &str, status: u16) {
        self.shared
            .rejections
            .lock()
            .expect("rejections lock")
            .push((needle.to_owned(), status));
    }

    /// Forgets every needle given to [`Intake::reject_lines_containing`]
    /// and [`Intake::otlp_refuse_body_containing`].
    pub fn clear_rejections(&self) {
        self.shared.otlp.clear_refusals();
        self.shared
            .rejections
            .lock()
            .expect("rejections lock")
            .clear();
    }

    /// Every token issued so far is answered 401 from now on (forcing the
    /// client to renew it). [`STATIC_TOKEN`] stays valid.
    pub fn revoke_tokens(&self) {
        self.shared.tokens.revoke_all();
    }
}

impl Drop for Intake {
    fn drop(&mut self) {
        self.shared.listener.shut_down();
        if let Some(thread) = self.accept_thread.take() {
            // A panicked accept thread has already reported its panic.
            let _ = thread.join();
        }
    }
}
