//! The listening socket, which can be closed (connections refused) and
//! reopened on the same port, and the open connections, one thread each.

use std::collections::HashMap;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::http::{Body, Conn, ReadError, RequestHead, Response};
use super::routes;
use super::{RequestLog, Shared};

/// How long to wait for the listener to close or reopen before giving up.
const LISTENER_CHANGE_TIMEOUT: Duration = Duration::from_secs(30);

pub(crate) struct Listener {
    port: u16,
    state: Mutex<ListenState>,
    changed: Condvar,
    /// A clone of each open connection's socket, to shut it down.
    connections: Mutex<HashMap<u64, TcpStream>>,
    next_connection: AtomicU64,
}

struct ListenState {
    /// Refused until `set_refusing(false)`.
    refusing: bool,
    /// Refused until then.
    refuse_until: Option<Instant>,
    shut_down: bool,
    /// Whether the listening socket is open (kept by the accept thread).
    listening: bool,
}

impl ListenState {
    fn wants_closed(&self) -> bool {
        self.shut_down || self.refusing || self.refuse_until.is_some_and(|t| Instant::now() < t)
    }
}

impl Listener {
    /// For a socket already bound to `port`.
    pub(crate) fn new(port: u16) -> Listener {
        Listener {
            port,
            state: Mutex::new(ListenState {
                refusing: false,
                refuse_until: None,
                shut_down: false,
                listening: true,
            }),
            changed: Condvar::new(),
            connections: Mutex::new(HashMap::new()),
            next_connection: AtomicU64::new(1),
        }
    }

    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    pub(crate) fn set_refusing(&self, refusing: bool) {
        if refusing {
            self.lock_state().refusing = true;
            self.close();
        } else {
            let mut state = self.lock_state();
            state.refusing = false;
            state.refuse_until = None;
            drop(state);
            self.changed.notify_all();
            self.wait_until_listening();
        }
    }

    pub(crate) fn refuse_until(&self, until: Instant) {
        self.lock_state().refuse_until = Some(until);
        self.close();
    }

    pub(crate) fn shut_down(&self) {
        self.lock_state().shut_down = true;
        self.changed.notify_all();
        self.close();
    }

    /// Waits until the accept thread has closed the listening socket, then
    /// shuts down every open connection.
    fn close(&self) {
        let deadline = Instant::now() + LISTENER_CHANGE_TIMEOUT;
        let mut state = self.lock_state();
        while state.listening {
            assert!(
                Instant::now() < deadline,
                "test intake: the listener did not close"
            );
            drop(state);
            self.wake_accept_thread();
            state = self.lock_state();
            state = self
                .changed
                .wait_timeout(state, Duration::from_millis(100))
                .expect("listener state lock")
                .0;
        }
        drop(state);
        for (_, stream) in self.lock_connections().drain() {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }

    fn wait_until_listening(&self) {
        let state = self.lock_state();
        let (state, timeout) = self
            .changed
            .wait_timeout_while(state, LISTENER_CHANGE_TIMEOUT, |s| {
                !s.listening && !s.shut_down
            })
            .expect("listener state lock");
        assert!(
            !timeout.timed_out() || state.listening,
            "test intake: cannot listen on port {} again",
            self.port
        );
    }

    /// The accept thread blocks in `accept`: a connection wakes it up to
    /// look at the state.
    fn wake_accept_thread(&self) {
        let _ =
            TcpStream::connect_timeout(&([127, 0, 0, 1], self.port).into(), Duration::from_secs(1));
    }

    fn set_listening(&self, listening: bool) {
        self.lock_state().listening = listening;
        self.changed.notify_all();
    }

    /// Blocks until the listener should be open again; false when shut down.
    fn wait_until_wanted_open(&self) -> bool {
        let mut state = self.lock_state();
        loop {
            if state.shut_down {
                return false;
            }
            if !state.wants_closed() {
                return true;
            }
            state = match state.refuse_until {
                Some(until) if !state.refusing => {
                    let wait = until.saturating_duration_since(Instant::now());
                    self.changed
                        .wait_timeout(state, wait)
                        .expect("listener state lock")
                        .0
                }
                _ => self.changed.wait(state).expect("listener state lock"),
            };
        }
    }

    fn wants_closed(&self) -> bool {
        self.lock_state().wants_closed()
    }

    fn register(&self, stream: &TcpStream) -> Option<u64> {
        let clone = stream.try_clone().ok()?;
        let id = self.next_connection.fetch_add(1, Ordering::Relaxed);
        self.lock_connections().insert(id, clone);
        Some(id)
    }

    fn forget(&self, id: u64) {
        self.lock_connections().remove(&id);
    }

    /// Runs `f` unless connection `id` was shut down, holding off shutdowns
    /// meanwhile; returns whether it ran.
    fn while_open(&self, id: u64, f: impl FnOnce()) -> bool {
        let connections = self.lock_connections();
        let open = connections.contains_key(&id);
        if open {
            f();
        }
        open
    }

    fn lock_state(&self) -> MutexGuard<'_, ListenState> {
        self.state.lock().expect("listener state lock")
    }

    fn lock_connections(&self) -> MutexGuard<'_, HashMap<u64, TcpStream>> {
        self.connections.lock().expect("connections lock")
    }
}

pub(crate) fn spawn_accept_thread(shared: Arc<Shared>, socket: TcpListener) -> JoinHandle<()> {
    thread::Builder::new()
        .name("intake-accept".into())
        .spawn(move || accept_loop(&shared, socket))
        .expect("spawn the intake accept thread")
}

fn accept_loop(shared: &Arc<Shared>, socket: TcpListener) {
    let listener = &shared.listener;
    let mut socket = Some(socket);
    loop {
        let current = match socket.take() {
            Some(socket) => socket,
            None => match bind_when_wanted(listener) {
                Some(socket) => socket,
                None => return,
            },
        };
        listener.set_listening(true);
        accept_until_closed(shared, &current);
        drop(current);
        listener.set_listening(false);
    }
}

/// Waits until the listener should be open and binds the same port again;
/// `None` once shut down.
fn bind_when_wanted(listener: &Listener) -> Option<TcpListener> {
    let mut warned = false;
    loop {
        if !listener.wait_until_wanted_open() {
            return None;
        }
        // std sets SO_REUSEADDR, so connections of the old socket in
        // TIME_WAIT do not block the port.
        match TcpListener::bind(("127.0.0.1", listener.port)) {
            Ok(socket) => return Some(socket),
            Err(e) => {
                if !warned {
                    eprintln!(
                        "test intake: cannot bind 127.0.0.1:{} again yet: {e}",
                        listener.port
                    );
                    warned = true;
                }
                thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

fn accept_until_closed(shared: &Arc<Shared>, socket: &TcpListener) {
    for stream in socket.incoming() {
        if shared.listener.wants_closed() {
            return;
        }
        match stream {
            Ok(stream) => spawn_connection(shared, stream),
            // E.g. out of file descriptors: give the machine a moment.
            Err(_) => thread::sleep(Duration::from_millis(10)),
        }
    }
}

fn spawn_connection(shared: &Arc<Shared>, stream: TcpStream) {
    let Some(id) = shared.listener.register(&stream) else {
        return;
    };
    let shared_for_thread = Arc::clone(shared);
    let spawned = thread::Builder::new()
        .name(format!("intake-conn-{id}"))
        .spawn(move || serve(&shared_for_thread, id, stream));
    if spawned.is_err() {
        shared.listener.forget(id);
    }
}

/// Answers the requests of one connection until it closes, is shut down, or
/// an answer closes it.
fn serve(shared: &Shared, id: u64, stream: TcpStream) {
    // Responses are written in one piece; no need to wait for more.
    let _ = stream.set_nodelay(true);
    let mut conn = Conn::new(stream);
    while serve_one(shared, id, &mut conn) {}
    shared.listener.forget(id);
}

/// Reads, answers and records one request; returns whether the connection
/// stays open.
fn serve_one(shared: &Shared, id: u64, conn: &mut Conn) -> bool {
    let head = match conn.read_head() {
        Ok(Some(head)) => head,
        Ok(None) => return false,
        Err(e) => return refuse_unreadable(shared, id, conn, None, Instant::now(), e),
    };
    let at = Instant::now();
    // Taken on arrival, so that a change of faults mid-test applies to the
    // requests that start after it, and to no request already started.
    let faults = shared.faults.lock().expect("faults lock").clone();
    // Held until this function returns, after the answer is written.
    let _in_flight = routes::is_data_route(&head).then(|| shared.in_flight.enter());
    let body = match conn.read_body(&head, routes::body_limit(&head.path)) {
        Ok(body) => body,
        Err(e) => return refuse_unreadable(shared, id, conn, Some(&head), at, e),
    };
    let body_len = match &body {
        Body::Complete(bytes) => bytes.len(),
        Body::TooLarge { len } => *len,
    };
    let keep_alive = shared.opts.keep_alive && head.wants_keep_alive();
    let outcome = routes::handle(shared, &head, &faults, body);
    // Slept here, in this connection's thread and under no lock, so that
    // concurrent requests are delayed independently, as by a distant intake.
    if !outcome.latency.is_zero() {
        thread::sleep(outcome.latency);
    }
    let request = request_log(&head, at, outcome.response.status, body_len);
    let answered = shared.listener.while_open(id, || {
        if outcome.response.is_success()
            && let Some(delivery) = outcome.delivery
        {
            shared.store.deliver(delivery);
        }
        shared.store.log_request(request);
    });
    // A connection shut down meanwhile (refused connections) is never
    // answered, and what it carried is not stored.
    answered && conn.write_response(&outcome.response, keep_alive).is_ok() && keep_alive
}

/// Answers a request that could not be read (if the socket still works) and
/// closes the connection.
fn refuse_unreadable(
    shared: &Shared,
    id: u64,
    conn: &mut Conn,
    head: Option<&RequestHead>,
    at: Instant,
    error: ReadError,
) -> bool {
    let response = match error {
        ReadError::Io => return false,
        ReadError::Malformed(message) => Response::text(400, message),
        ReadError::Oversized => Response::text(413, "body too large"),
    };
    let request = match head {
        Some(head) => request_log(head, at, response.status, 0),
        None => RequestLog {
            at,
            method: String::new(),
            path: String::new(),
            status: response.status,
            content_type: None,
            body_len: 0,
            authorization: None,
        },
    };
    if shared
        .listener
        .while_open(id, || shared.store.log_request(request))
    {
        let _ = conn.write_response(&response, false);
    }
    false
}

fn request_log(head: &RequestHead, at: Instant, status: u16, body_len: usize) -> RequestLog {
    RequestLog {
        at,
        method: head.method.clone(),
        path: head.path.clone(),
        status,
        content_type: head.header("content-type").map(str::to_owned),
        body_len,
        authorization: head.header("authorization").map(str::to_owned),
    }
}
