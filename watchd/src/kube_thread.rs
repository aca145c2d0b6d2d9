//! The `watchd-kube` thread: the only async code in watchd (SPEC §4).
//!
//! It runs a current-thread tokio runtime with one `kube` watcher task per
//! resource, plus the CRD watcher ([`crate::crds`]) that starts and stops
//! the watchers of custom resources. Every watch event goes to the
//! `watchd-process` thread over a bounded `tokio::sync::mpsc` channel, with
//! a credit of its route ([`crate::lanes`]): a task awaits a credit and room
//! when there is none (backpressure reaches the API server reads, nothing is
//! dropped, no timer of another watcher is frozen, and a route the intake
//! does not take holds back only its own watchers).
//!
//! Architecture invariant: nothing in this module blocks the runtime; all
//! CPU work on objects (parsing, stripping, hashing, serializing) happens
//! on the process thread. Here they stay the text they came as
//! ([`crate::raw`]); only CRDs, to start their watchers, are parsed.

use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::api::{Api, ApiResource};
use kube::runtime::watcher;
use shared::retry::Backoff;
use tokio::sync::watch;

use crate::lanes::EventSender;
use crate::metrics::Metrics;
use crate::raw::RawObject;
use crate::rbac;
use crate::resources::Target;
use crate::status::{WatchStatus, WatcherState};
use crate::watch_pacing::WatchPacingLayer;

/// Objects per list page: bounds what a watcher holds while listing (the
/// page's objects as text, [`RawObject`], and the response they were read
/// from: 250 fixture-shaped Pods with managedFields are about 1.4 MB each).
const PAGE_SIZE: u32 = 250;
/// How often a forbidden (403) or not served (404) resource is tried again.
pub const REFUSED_RETRY: Duration = Duration::from_secs(180);
/// A watcher without an error for this long starts its backoff over.
const BACKOFF_RESET_AFTER: Duration = Duration::from_secs(120);
/// Threads of the runtime's blocking pool (kube uses it for kubeconfig
/// exec plugins and file reads only).
const MAX_BLOCKING_THREADS: usize = 2;

/// What happened to one watched object, as the process thread needs it.
#[derive(Debug)]
pub enum Change {
    /// Listed during a (re)list.
    Listed,
    /// Added or modified.
    Applied,
    /// Deleted.
    Deleted,
}

/// A message from the kube thread to the process thread.
#[derive(Debug)]
pub enum WatchMsg {
    /// A (re)list of `target` begins.
    ListStarted(Arc<Target>),
    /// An object of `target`, as the API server sent it.
    Object {
        target: Arc<Target>,
        change: Change,
        object: Box<RawObject>,
    },
    /// The (re)list of `target` is complete.
    ListDone(Arc<Target>),
    /// `target` is not watched any more (its CRD was deleted): everything
    /// known of it is gone.
    Stopped(Arc<Target>),
}

impl WatchMsg {
    /// The resource the message is about (its route is the records' route).
    pub fn target(&self) -> &Arc<Target> {
        match self {
            WatchMsg::ListStarted(target)
            | WatchMsg::Object { target, .. }
            | WatchMsg::ListDone(target)
            | WatchMsg::Stopped(target) => target,
        }
    }
}

/// What the kube thread needs.
pub struct KubeSettings {
    /// Built-in resources to watch.
    pub targets: Vec<Target>,
    /// `WATCHD_EXCLUDE`, applied to custom resources.
    pub exclude: Vec<String>,
    /// Leader election, when on ([`crate::lease`]).
    pub election: Option<Election>,
}

/// What the elector needs on the kube thread.
pub struct Election {
    pub config: crate::leader::ElectionConfig,
    pub gate: crate::leader::Leadership,
    pub metrics: crate::leader::LeaderMetrics,
}

/// The running kube thread.
pub struct KubeThread {
    handle: JoinHandle<()>,
    stop: watch::Sender<bool>,
    /// Release the Lease and end (leader election only).
    finish: watch::Sender<bool>,
}

impl KubeThread {
    /// Starts `watchd-kube`: builds the runtime and the kube `Client` in it
    /// (from `KUBECONFIG`, `~/.kube/config` or in-cluster credentials), then
    /// watches. Returns an error, before any watch starts, when the thread
    /// cannot start or no Kubernetes credentials are found.
    pub fn start(
        settings: KubeSettings,
        tx: EventSender,
        status: WatchStatus,
        metrics: Metrics,
    ) -> Result<KubeThread, String> {
        let (stop, stop_rx) = watch::channel(false);
        let (finish, finish_rx) = watch::channel(false);
        let (started_tx, started_rx) = std::sync::mpsc::sync_channel(1);
        let handle = thread::Builder::new()
            .name("watchd-kube".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .max_blocking_threads(MAX_BLOCKING_THREADS)
                    .thread_name("watchd-kube-blk")
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ =
                            started_tx.send(Err(format!("cannot start the tokio runtime: {e}")));
                        return;
                    }
                };
                runtime.block_on(async move {
                    let client = match client().await {
                        Ok(c) => {
                            let _ = started_tx.send(Ok(()));
                            c
                        }
                        Err(e) => {
                            let _ = started_tx.send(Err(e));
                            return;
                        }
                    };
                    run(client, settings, tx, status, metrics, stop_rx, finish_rx).await;
                });
            })
            .map_err(|e| format!("cannot start the watchd-kube thread: {e}"))?;
        match started_rx.recv() {
            Ok(Ok(())) => Ok(KubeThread {
                handle,
                stop,
                finish,
            }),
            Ok(Err(e)) => {
                let _ = handle.join();
                Err(e)
            }
            Err(_) => Err("the watchd-kube thread ended while starting".into()),
        }
    }

    /// Asks every watcher to stop; the channel to the process thread closes
    /// once they have. A candidate stops campaigning; a leader keeps its
    /// Lease until [`KubeThread::finish`]. Call [`KubeThread::join`] next.
    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }

    /// After [`KubeThread::stop`] and once what was batched is sent: a
    /// leader releases its Lease, and the thread ends.
    pub fn finish(&self) {
        let _ = self.finish.send(true);
    }

    /// Waits for the thread to end.
    pub fn join(self) {
        let _ = self.handle.join();
    }
}

async fn client() -> Result<kube::Client, String> {
    let config = kube::Config::infer().await.map_err(|e| {
        format!("no Kubernetes credentials: neither KUBECONFIG, ~/.kube/config nor in-cluster service account ({e})")
    })?;
    let builder = kube::client::ClientBuilder::try_from(config)
        .map_err(|e| format!("cannot build the Kubernetes client: {e}"))?;
    // The buffer makes the stack cloneable, which the pacing layer needs
    // (its worker is a task on this runtime).
    Ok(builder
        .with_layer(&tower::buffer::BufferLayer::new(1024))
        .with_layer(&WatchPacingLayer::default())
        .build())
}

/// Runs every watcher until `stop` turns true; with leader election, the
/// elector too, until `finish` (a leader releases its Lease first).
async fn run(
    client: kube::Client,
    settings: KubeSettings,
    tx: EventSender,
    status: WatchStatus,
    metrics: Metrics,
    mut stop: watch::Receiver<bool>,
    finish: watch::Receiver<bool>,
) {
    let KubeSettings {
        targets,
        exclude,
        election,
    } = settings;
    let ctx = WatcherCtx {
        client,
        tx,
        status,
        metrics,
    };
    let names: Vec<String> = targets.iter().map(Target::name).collect();
    log::info!(
        "watching {} built-in resources ({}) and the objects of every CRD",
        names.len(),
        names.join(", ")
    );
    let Some(election) = election else {
        let mut tasks = start_watchers(&ctx, &targets, &exclude);
        drop(ctx);
        let _ = stop.wait_for(|stopped| *stopped).await;
        log::info!("stopping the watchers");
        tasks.shutdown().await;
        return;
    };
    let (leading_tx, mut leading) = watch::channel(None);
    let elector = crate::lease::Elector::new(
        ctx.client.clone(),
        election.config,
        election.gate,
        election.metrics,
    );
    let elector = tokio::spawn(elector.run(leading_tx, stop.clone(), finish));
    // The first attempt decides how the watchers start: a replica that
    // leads at once lists once, as the leader.
    let led_at_once = tokio::select! {
        _ = stop.wait_for(|stopped| *stopped) => false,
        first = leading.wait_for(Option::is_some) => first.is_ok_and(|l| *l == Some(true)),
    };
    let mut tasks = start_watchers(&ctx, &targets, &exclude);
    if !led_at_once {
        let elected = tokio::select! {
            _ = stop.wait_for(|stopped| *stopped) => false,
            l = leading.wait_for(|l| *l == Some(true)) => l.is_ok(),
        };
        if elected {
            // The new leader's snapshot: every watcher starts over, and its
            // list is sent whole (crate::standby).
            log::info!("restarting the watchers: their lists are the new leader's snapshot");
            tasks.shutdown().await;
            tasks = start_watchers(&ctx, &targets, &exclude);
        }
    }
    let _ = stop.wait_for(|stopped| *stopped).await;
    drop(ctx);
    log::info!("stopping the watchers");
    tasks.shutdown().await;
    // A leader renews while what was batched is sent, then releases.
    let _ = elector.await;
}

/// Starts one watcher task per built-in resource, and the CRD watcher.
fn start_watchers(
    ctx: &WatcherCtx,
    targets: &[Target],
    exclude: &[String],
) -> tokio::task::JoinSet<()> {
    let mut tasks = tokio::task::JoinSet::new();
    for target in targets {
        let ctx = ctx.clone();
        let target = Arc::new(target.clone());
        ctx.status.set(&target.name(), WatcherState::Listing);
        tasks.spawn(async move { watch_target(ctx, target).await });
    }
    tasks.spawn(crate::crds::watch_crds(ctx.clone(), exclude.to_vec()));
    tasks
}

/// What every watcher task shares.
#[derive(Clone)]
pub struct WatcherCtx {
    pub client: kube::Client,
    pub tx: EventSender,
    pub status: WatchStatus,
    pub metrics: Metrics,
}

/// The kube description of `target`.
pub fn api_resource(target: &Target) -> ApiResource {
    ApiResource {
        group: target.group.clone(),
        version: target.version.clone(),
        api_version: target.api_version(),
        kind: target.kind.clone(),
        plural: target.plural.clone(),
    }
}

/// Watches one resource for ever, sending its events on; returns only when
/// the process thread is gone.
pub async fn watch_target(ctx: WatcherCtx, target: Arc<Target>) {
    let api: Api<RawObject> = Api::all_with(ctx.client.clone(), &api_resource(&target));
    let config = watcher::Config::default().page_size(PAGE_SIZE);
    let mut events = std::pin::pin!(watcher(api, config));
    let name = target.name();
    let mut backoff = Backoff::new();
    let mut last_error: Option<Instant> = None;
    let mut state = WatcherState::Listing;
    let mut listed = false;
    while let Some(event) = events.next().await {
        let msg = match event {
            Ok(event) => to_msg(&target, event),
            Err(error) => {
                if last_error.is_some_and(|t| t.elapsed() > BACKOFF_RESET_AFTER) {
                    backoff.reset();
                }
                last_error = Some(Instant::now());
                let (wait, new_state) = on_error(&ctx, &target, &error, &mut backoff, state);
                if new_state != state {
                    state = new_state;
                    ctx.status.set(&name, state);
                }
                tokio::time::sleep(wait).await;
                continue;
            }
        };
        let done = matches!(msg, WatchMsg::ListDone(_));
        if ctx.tx.send(msg).await.is_err() {
            return;
        }
        listed |= done;
        if listed && state != WatcherState::Watching {
            match state {
                WatcherState::Forbidden => log::info!("{name}: permitted now, watching"),
                WatcherState::NotServed => log::info!("{name}: served now, watching"),
                _ => {}
            }
            state = WatcherState::Watching;
            ctx.status.set(&name, state);
        }
    }
}

fn to_msg(target: &Arc<Target>, event: watcher::Event<RawObject>) -> WatchMsg {
    let object = |change, object| WatchMsg::Object {
        target: target.clone(),
        change,
        object: Box::new(object),
    };
    match event {
        watcher::Event::Init => WatchMsg::ListStarted(target.clone()),
        watcher::Event::InitApply(o) => object(Change::Listed, o),
        watcher::Event::InitDone => WatchMsg::ListDone(target.clone()),
        watcher::Event::Apply(o) => object(Change::Applied, o),
        watcher::Event::Delete(o) => object(Change::Deleted, o),
    }
}

/// Logs and counts a watcher error; returns how long to wait before the
/// watcher tries again, and its state meanwhile. A refusal (403) or a
/// resource the cluster does not serve (404) is logged once, when the
/// watcher enters that state.
fn on_error(
    ctx: &WatcherCtx,
    target: &Target,
    error: &watcher::Error,
    backoff: &mut Backoff,
    state: WatcherState,
) -> (Duration, WatcherState) {
    let name = target.name();
    let status = match error {
        watcher::Error::InitialListFailed(kube::Error::Api(s))
        | watcher::Error::WatchStartFailed(kube::Error::Api(s))
        | watcher::Error::WatchFailed(kube::Error::Api(s)) => Some(s.code),
        watcher::Error::WatchError(s) => Some(s.code),
        _ => None,
    };
    let count = |kind| {
        ctx.metrics
            .watch_errors
            .get_or_create(&[("kind", kind)])
            .inc()
    };
    match status {
        Some(403) => {
            count("forbidden");
            if state != WatcherState::Forbidden {
                log::warn!(
                    "{}",
                    rbac::forbidden_message(target, REFUSED_RETRY.as_secs() / 60)
                );
            }
            (REFUSED_RETRY, WatcherState::Forbidden)
        }
        Some(404) => {
            count("not_served");
            if state != WatcherState::NotServed {
                log::warn!(
                    "{name}: this API server does not serve it (404); not watched, tried again every {} minutes",
                    REFUSED_RETRY.as_secs() / 60
                );
            }
            (REFUSED_RETRY, WatcherState::NotServed)
        }
        Some(410) => {
            // Expected: the watch's version was compacted away (Events in
            // quiet namespaces do this often). The watcher relists.
            count("expired");
            let wait = backoff.next_delay(None);
            log::debug!("{name}: watch expired (410), relisting in {wait:?}");
            (wait, state)
        }
        _ => {
            count("failed");
            let wait = backoff.next_delay(None);
            log::warn!("{name}: {error}; retrying in {wait:.1?}");
            let state = if state == WatcherState::Watching {
                state
            } else {
                WatcherState::Retrying
            };
            (wait, state)
        }
    }
}
