//! The listening socket, one thread per connection, and the state they
//! share.

use std::collections::{HashMap, HashSet};
use std::io::{self, Read};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use super::ApiRequest;
use super::discovery;
use super::http::{self, RequestReader};
use super::routes::{self, Reply};
use super::store::Store;
use super::watch::{self, WatchEnd};

pub(crate) struct Shared {
    pub addr: SocketAddr,
    pub store: Mutex<Store>,
    /// `plural[.group]` names whose reads answer 403.
    pub forbidden: Mutex<HashSet<String>>,
    pub requests: Mutex<Vec<ApiRequest>>,
    /// Lease holders cut off from the server, and the requests they wait
    /// on (see [`super::ApiServer::refuse_lease_writes_from`]).
    pub partition: Mutex<Partition>,
    /// Lease writes still to gather (see
    /// [`super::ApiServer::gather_lease_writes`]), and those waiting.
    pub lease_gate: (Mutex<LeaseGate>, Condvar),
    bookmark_interval_ms: AtomicU64,
    stopping: AtomicBool,
    /// Open connections, so stopping the server can close them.
    connections: Mutex<HashMap<u64, TcpStream>>,
    next_connection: AtomicU64,
}

/// Lease writes held until enough have arrived: a race made certain.
#[derive(Default)]
pub(crate) struct LeaseGate {
    /// How many writes to gather; 0: none held.
    pub expected: usize,
    pub arrived: usize,
}

impl Shared {
    /// Holds a Lease write until the gathered number has arrived (or 10 s
    /// passed), then lets it through: they are then served in turn, on the
    /// same snapshot of the store they all read before.
    pub fn pass_lease_gate(&self) {
        let (gate, arrived) = &self.lease_gate;
        let mut state = gate.lock().expect("lease gate lock");
        if state.expected == 0 {
            return;
        }
        state.arrived += 1;
        if state.arrived >= state.expected {
            *state = LeaseGate::default();
            arrived.notify_all();
            return;
        }
        let _ = arrived
            .wait_timeout_while(state, std::time::Duration::from_secs(10), |s| {
                s.expected > 0
            })
            .expect("lease gate lock");
    }
}

/// The simulated network partition of Lease holders.
#[derive(Default)]
pub(crate) struct Partition {
    /// Holder identities whose Lease writes get no answer.
    pub refused: HashSet<String>,
    /// Connections holding an unanswered write: connection id → (holder,
    /// the connection, to close when the holder is allowed again).
    held: HashMap<u64, (String, TcpStream)>,
}

impl Partition {
    /// Lets `holder`'s writes through again, and closes the connections of
    /// its writes still waiting: those writes were never applied.
    pub fn allow(&mut self, holder: &str) {
        self.refused.remove(holder);
        self.held.retain(|_, (h, stream)| {
            if h == holder {
                let _ = stream.shutdown(Shutdown::Both);
                false
            } else {
                true
            }
        });
    }
}

impl Shared {
    pub fn bookmark_interval(&self) -> Duration {
        Duration::from_millis(self.bookmark_interval_ms.load(Ordering::Relaxed))
    }

    pub fn set_bookmark_interval(&self, every: Duration) {
        let ms = u64::try_from(every.as_millis()).unwrap_or(u64::MAX).max(1);
        self.bookmark_interval_ms.store(ms, Ordering::Relaxed);
    }
}

/// The running server: the accept thread, stopped on drop.
pub(crate) struct Server {
    pub shared: Arc<Shared>,
    accept_thread: Option<JoinHandle<()>>,
}

impl Server {
    pub fn start(addr: SocketAddr) -> io::Result<Server> {
        let listener = TcpListener::bind(addr)?;
        let shared = Arc::new(Shared {
            addr: listener.local_addr()?,
            store: Mutex::new(Store::new()),
            forbidden: Mutex::new(HashSet::new()),
            requests: Mutex::new(Vec::new()),
            partition: Mutex::new(Partition::default()),
            lease_gate: (Mutex::new(LeaseGate::default()), Condvar::new()),
            bookmark_interval_ms: AtomicU64::new(5_000),
            stopping: AtomicBool::new(false),
            connections: Mutex::new(HashMap::new()),
            next_connection: AtomicU64::new(0),
        });
        let accept_shared = shared.clone();
        let accept_thread = thread::Builder::new()
            .name("apiserver-accept".into())
            .spawn(move || accept_loop(&accept_shared, listener))?;
        Ok(Server {
            shared,
            accept_thread: Some(accept_thread),
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        if let Ok(mut store) = self.shared.store.lock() {
            store.drop_watches(true);
        }
        // Wake the accept call so it sees `stopping`.
        let _ = TcpStream::connect(self.shared.addr);
        if let Some(t) = self.accept_thread.take() {
            let _ = t.join();
        }
        if let Ok(connections) = self.shared.connections.lock() {
            for stream in connections.values() {
                let _ = stream.shutdown(Shutdown::Both);
            }
        }
    }
}

fn accept_loop(shared: &Arc<Shared>, listener: TcpListener) {
    for stream in listener.incoming() {
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        let Ok(stream) = stream else { continue };
        let id = shared.next_connection.fetch_add(1, Ordering::Relaxed);
        match stream.try_clone() {
            Ok(clone) => {
                shared
                    .connections
                    .lock()
                    .expect("connections lock")
                    .insert(id, clone);
            }
            Err(_) => continue,
        }
        let conn_shared = shared.clone();
        let spawned = thread::Builder::new()
            .name(format!("apiserver-conn-{id}"))
            .spawn(move || {
                // Errors only mean the client went away.
                let _ = serve_connection(&conn_shared, id, stream);
                conn_shared
                    .connections
                    .lock()
                    .expect("connections lock")
                    .remove(&id);
            });
        if spawned.is_err() {
            shared
                .connections
                .lock()
                .expect("connections lock")
                .remove(&id);
        }
    }
}

/// Serves requests on one connection until either side closes it.
fn serve_connection(shared: &Shared, id: u64, stream: TcpStream) -> io::Result<()> {
    // One write per event: do not let Nagle hold small chunks back.
    stream.set_nodelay(true)?;
    let mut out = stream.try_clone()?;
    let mut reader = RequestReader::new(stream);
    while let Some(req) = reader.next_request()? {
        let reply = routes::handle(shared, &req);
        let status = match &reply {
            Reply::Json(code, _) => *code,
            Reply::Status(e) => e.code,
            Reply::AggregatedDiscovery(_) | Reply::Watch(_) => 200,
            Reply::Unanswered { .. } => 0,
        };
        shared
            .requests
            .lock()
            .expect("requests lock")
            .push(ApiRequest {
                method: req.method.clone(),
                path: req.path.clone(),
                query: req.query.clone(),
                status,
            });
        let close = req.wants_close();
        match reply {
            Reply::Json(code, body) => {
                let body = serde_json::to_vec(&body).expect("JSON values serialize");
                http::write_json(&mut out, code, "application/json", &body, close)?;
            }
            Reply::Status(e) => {
                http::write_json(
                    &mut out,
                    e.code,
                    "application/json",
                    &e.to_status_json(),
                    close,
                )?;
            }
            Reply::Unanswered { holder } => return hold_unanswered(shared, id, out, &holder),
            Reply::AggregatedDiscovery(body) => {
                let body = serde_json::to_vec(&body).expect("JSON values serialize");
                let content_type = discovery::AGGREGATED_CONTENT_TYPE;
                http::write_json(&mut out, 200, content_type, &body, close)?;
            }
            Reply::Watch(plan) => {
                if let WatchEnd::Dropped = watch::serve(shared, &mut out, &plan)? {
                    out.shutdown(Shutdown::Both)?;
                    return Ok(());
                }
            }
        }
        if close {
            return Ok(());
        }
    }
    Ok(())
}

/// Leaves a refused Lease write unanswered: the connection stays open and
/// silent until the client gives up and closes it, the holder is allowed
/// again (the connection is closed, the write never applied), or the server
/// stops. What a client sees when its packets are dropped on the way.
fn hold_unanswered(
    shared: &Shared,
    id: u64,
    mut stream: TcpStream,
    holder: &str,
) -> io::Result<()> {
    {
        let mut partition = shared.partition.lock().expect("partition lock");
        if !partition.refused.contains(holder) {
            // Allowed again since the request came: close, as allow would.
            return Ok(());
        }
        partition
            .held
            .insert(id, (holder.to_string(), stream.try_clone()?));
    }
    // The client sends nothing more before an answer: this returns when it
    // closes the connection or the connection is shut down here.
    let mut buf = [0u8; 4096];
    while matches!(stream.read(&mut buf), Ok(n) if n > 0) {}
    shared
        .partition
        .lock()
        .expect("partition lock")
        .held
        .remove(&id);
    Ok(())
}
