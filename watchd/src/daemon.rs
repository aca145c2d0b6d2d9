//! watchd's configuration and the wiring of its threads (SPEC §2, §4).
//!
//! ```text
//!                                                                    ┌─▶ watchd-up-res ─▶ /resources
//! API server ─▶ watchd-kube ─(tokio mpsc, bounded)─▶ watchd-process ─┼─▶ watchd-up-cr  ─▶ /customresources
//!                                                  (crossbeam lanes) └─▶ watchd-up-ev  ─▶ /events
//! ```
//!
//! Shutdown (SIGTERM/SIGINT): the watchers stop, which closes the channel
//! to the process thread, which ends and closes the lanes to the upload
//! threads, which send what is batched and end. The whole drain is bounded
//! by `HIK8S_SHUTDOWN_GRACE_SECS`.

use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, Sender};

use shared::config::{Config, ConfigError, OrExit, VarSpec};
use shared::health::Health;
use shared::metrics::{MetricsServer, Registry};
use shared::shutdown::Shutdown;
use shared::sink::Sink;

use crate::batch::{Batcher, INTAKE_JSON_LIMIT};
use crate::kube_thread::{Election, KubeSettings, KubeThread};
use crate::lanes::{self, Credited, PerRoute, Records};
use crate::leader::{ElectionConfig, LeaderMetrics, Leadership, election_config};
use crate::metrics::Metrics;
use crate::process::Processor;
use crate::resources::{Target, default_targets, parse_exclude, parse_resources};
use crate::standby::{Role, Standby};
use crate::status::WatchStatus;
use crate::upload::{self, Uploader};

/// Watch events in flight between the kube and process threads. Small:
/// under backpressure the watchers wait, the API server is the buffer.
const EVENT_CHANNEL: usize = 64;
/// Messages (mostly one record each) in flight to each upload thread, and
/// the credits of each route ([`crate::lanes`]).
const LANE: usize = 256;

/// watchd's own variables.
pub const VARS: &[VarSpec] = &[
    VarSpec::new(
        "WATCHD_RESOURCES",
        "comma-separated built-in resources to watch, kubectl's plural[.group] form (pods, deployments.apps, ...)",
    )
    .default_described("pods, deployments/replicasets/daemonsets/statefulsets.apps, services, namespaces, nodes, ingresses.networking.k8s.io, serviceaccounts, roles/clusterroles/clusterrolebindings.rbac.authorization.k8s.io, storageclasses.storage.k8s.io, events"),
    VarSpec::new("WATCHD_EXCLUDE", "comma-separated plural[.group] names or kinds never shipped (built-in or custom)"),
    VarSpec::new("WATCHD_BATCH_MAX_BYTES", "flush a route's batch at this size (at most 1 MiB)").default("512KiB"),
    VarSpec::new("WATCHD_BATCH_LINGER_MS", "flush a non-empty batch after this long").default("1000"),
    VarSpec::new("WATCHD_METRICS_ADDR", "/metrics, /healthz and /readyz listen address; off disables").default("0.0.0.0:9601"),
    VarSpec::new("WATCHD_LEADER_ELECTION", "on: replicas elect the one that ships with a coordination.k8s.io Lease (needs POD_NAME, POD_NAMESPACE); off: a single replica")
        .default_described("on when POD_NAME is set (in a cluster), else off"),
    VarSpec::new("WATCHD_LEASE_NAME", "the Lease of the leader election, in POD_NAMESPACE").default("watchd"),
    VarSpec::new("WATCHD_LEASE_DURATION_SECS", "how long the other replicas wait after they last saw the leader renew").default("15"),
    VarSpec::new("WATCHD_RENEW_DEADLINE_SECS", "how long the leader ships after its last renewal; less than the lease duration").default("10"),
    VarSpec::new("WATCHD_RETRY_PERIOD_SECS", "how often the leader renews and the others try (theirs jittered by 1.2)").default("2"),
    VarSpec::new("POD_NAME", "the pod's name (downward API): the Lease holder identity"),
    VarSpec::new("POD_NAMESPACE", "the pod's namespace (downward API): where the Lease is"),
];

/// watchd's settings, checked.
#[derive(Debug)]
pub struct Settings {
    pub targets: Vec<Target>,
    pub exclude: Vec<String>,
    pub batch_max_bytes: usize,
    pub linger: Duration,
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Leader election, when on ([`crate::leader`]).
    pub election: Option<ElectionConfig>,
}

/// Reads and checks watchd's own variables.
pub fn settings(config: &Config) -> Result<Settings, ConfigError> {
    let exclude = parse_exclude(config.value("WATCHD_EXCLUDE").unwrap_or_default());
    let targets = match config.value("WATCHD_RESOURCES") {
        Some(value) => {
            parse_resources(value).map_err(|e| config.invalid("WATCHD_RESOURCES", e.to_string()))?
        }
        None => default_targets(),
    };
    let targets = targets
        .into_iter()
        .filter(|t| !t.is_excluded(&exclude))
        .collect();
    let max = config.bytes("WATCHD_BATCH_MAX_BYTES")?;
    if max > INTAKE_JSON_LIMIT as u64 || max < 1024 {
        return Err(config.invalid(
            "WATCHD_BATCH_MAX_BYTES",
            format!("{max} is not between 1 KiB and 1 MiB (the intake reads at most 1 MiB of a JSON body)"),
        ));
    }
    Ok(Settings {
        targets,
        exclude,
        batch_max_bytes: max as usize,
        linger: config.millis("WATCHD_BATCH_LINGER_MS")?,
        metrics_addr: config.socket_addr_or_off("WATCHD_METRICS_ADDR")?,
        election: election_config(config)?,
    })
}

/// Runs watchd until SIGTERM/SIGINT; returns the exit status.
pub fn run() -> i32 {
    let config = Config::from_env_and_args("watchd", VARS).or_exit();
    shared::logging::init(&config.common().log_filter);
    let settings = settings(&config).or_exit();
    let grace = config.common().shutdown_grace;
    let sink = match Sink::open(&config.common().sink) {
        Ok(sink) => sink,
        Err(e) => Err(config.invalid("HIK8S_SINK", e.to_string())).or_exit(),
    };
    let shutdown = match Shutdown::install("watchd") {
        Ok(s) => s,
        Err(e) => {
            log::error!("cannot install the signal handler: {e}");
            return 1;
        }
    };
    let mut registry = Registry::default();
    let metrics = Metrics::register(&mut registry);
    let health = Health::new();
    let status = WatchStatus::new(health.clone(), metrics.clone());
    // Only the leader ships; without leader election, the one replica.
    let leader_metrics = LeaderMetrics::register(&mut registry);
    let gate = match settings.election {
        Some(_) => Leadership::standby(leader_metrics.clone()),
        None => {
            leader_metrics.leader.set(1);
            Leadership::always()
        }
    };

    let channels = lanes::channels(EVENT_CHANNEL, LANE);
    let give_up = Shutdown::new();
    let otlp = sink.is_otlp();
    let uploads = Uploads::start(
        channels.lanes_rx,
        Arc::new(sink),
        &settings,
        &metrics,
        &health,
        &give_up,
        &gate,
    );
    let standby = settings.election.as_ref().map(|election| {
        let credits = channels.events.credit_pool();
        Standby::new(gate.clone(), election.delete_window(), credits)
    });
    let process_thread = {
        let (metrics, health, lanes) = (metrics.clone(), health.clone(), channels.lanes);
        let events = channels.events_rx;
        thread::Builder::new()
            .name("watchd-process".into())
            .spawn(move || {
                let _alive = health.watch_thread("watchd-process");
                process_loop(events, lanes, metrics, otlp, standby)
            })
            .expect("spawning watchd-process")
    };
    let kube = KubeThread::start(
        KubeSettings {
            targets: settings.targets,
            exclude: settings.exclude,
            election: settings.election.map(|config| Election {
                config,
                gate,
                metrics: leader_metrics,
            }),
        },
        channels.events,
        status,
        metrics,
    );
    let kube = match kube {
        Ok(kube) => kube,
        Err(e) => {
            eprintln!("watchd: configuration error: KUBECONFIG: {e}");
            return 2;
        }
    };
    let _server = match settings.metrics_addr {
        Some(addr) => match MetricsServer::start("watchd", addr, registry, health, &shutdown) {
            Ok(server) => Some(server),
            Err(e) => {
                eprintln!("watchd: configuration error: WATCHD_METRICS_ADDR: {e}");
                return 2;
            }
        },
        None => None,
    };

    shutdown.wait();
    let deadline = Instant::now() + grace;
    // The watchers stop, which closes the channels one after the other:
    // process, then the lanes, and each upload thread sends what is batched.
    // A leader keeps renewing its Lease meanwhile, and releases it then.
    kube.stop();
    uploads.join(deadline, &give_up);
    kube.finish();
    kube.join();
    let _ = process_thread.join();
    log::info!("stopped");
    0
}

/// The upload threads, one per route.
struct Uploads {
    threads: Vec<JoinHandle<()>>,
    /// Nothing is ever sent: it disconnects when every upload thread ended.
    done: Receiver<()>,
}

impl Uploads {
    fn start(
        lanes: PerRoute<Receiver<Records>>,
        sink: Arc<Sink>,
        settings: &Settings,
        metrics: &Metrics,
        health: &Health,
        give_up: &Shutdown,
        gate: &Leadership,
    ) -> Uploads {
        let (done_tx, done) = crossbeam_channel::bounded::<()>(1);
        let threads = lanes
            .into_iter()
            .map(|(route, lane)| {
                let batcher = Batcher::new(route, settings.batch_max_bytes, settings.linger);
                let (sink, metrics, health) = (sink.clone(), metrics.clone(), health.clone());
                let (give_up, done_tx, gate) = (give_up.clone(), done_tx.clone(), gate.clone());
                let name = upload::thread_name(route);
                thread::Builder::new()
                    .name(name.into())
                    .spawn(move || {
                        let _alive = health.watch_thread(name);
                        let _done = done_tx;
                        upload_route(lane, batcher, &sink, metrics, give_up, gate);
                    })
                    .unwrap_or_else(|e| panic!("spawning {name}: {e}"))
            })
            .collect();
        Uploads { threads, done }
    }

    /// Waits for every upload thread to send what is batched; at `deadline`
    /// tells those still sending to give up.
    fn join(self, deadline: Instant, give_up: &Shutdown) {
        if let Err(crossbeam_channel::RecvTimeoutError::Timeout) = self.done.recv_deadline(deadline)
        {
            give_up.trigger();
        }
        for thread in self.threads {
            let _ = thread.join();
        }
    }
}

/// An upload thread: one route's records in, requests out, until its lane
/// closes and what is batched is sent (or the grace period is over).
fn upload_route(
    lane: Receiver<Records>,
    batcher: Batcher,
    sink: &Sink,
    metrics: Metrics,
    give_up: Shutdown,
    gate: Leadership,
) {
    let route = batcher.route();
    let uploader = Uploader::new(sink, metrics.clone(), give_up).gated(gate);
    if let Err(gave_up) = upload::run(lane, batcher, uploader, &metrics) {
        log::warn!(
            "shutdown grace period over: {} records to /{route} were not delivered",
            gave_up.records
        );
    }
}

/// The process thread: watch events in, records out to their route's lane,
/// until the kube thread is gone (or an upload thread, at the end of a
/// shutdown). `otlp`: the records are for the OTLP sink. With leader
/// election, a `standby` drops its records ([`crate::standby`]).
fn process_loop(
    mut events: tokio::sync::mpsc::Receiver<Credited>,
    lanes: PerRoute<Sender<Records>>,
    metrics: Metrics,
    otlp: bool,
    mut standby: Option<Standby>,
) {
    let mut processor = Processor::new(metrics, otlp);
    while let Some(Credited { msg, credit }) = events.blocking_recv() {
        let role = standby.as_mut().map_or(Role::Leader, Standby::role);
        if role == Role::Promoted {
            processor.resync();
            if let Some(standby) = standby.as_mut()
                && !standby.hand_over(&lanes)
            {
                return;
            }
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
            .unwrap_or_default();
        // A message's records are all of its target's route.
        let route = msg.target().route;
        let mut records = Vec::new();
        processor.handle(msg, now, &mut |record| records.push(record.bytes));
        if !role.ships() {
            if let Some(standby) = standby.as_mut() {
                standby.drop_records(route, records);
            }
            continue;
        }
        if records.is_empty() {
            continue;
        }
        // Never waits: the credit is room in the lane.
        if lanes.get(route).send(Records { records, credit }).is_err() {
            return;
        }
    }
}
