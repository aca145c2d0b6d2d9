//! High availability (SPEC §4 "High availability"): which replica ships.
//!
//! watchd may run as several replicas; they elect a leader with a
//! `coordination.k8s.io/v1` Lease, as client-go does ([`crate::lease`]).
//! Every replica watches and keeps its uid → fingerprint map (a warm
//! standby, [`crate::standby`]); only the leader ships. This module holds
//! the configuration and the [`Leadership`] gate that the process and
//! upload threads read before they hand on or send anything.
//!
//! A replica leads for one term at most. It opens the gate when it acquires
//! the Lease, for the renew deadline; each renewal moves that deadline on.
//! A renewal that does not succeed before the deadline, by this process's
//! monotonic clock, closes the gate by itself: from that instant nothing is
//! sent, whatever the elector is doing. The other replicas take the Lease
//! only a lease duration after they last saw it renewed (they count on
//! their own clocks), so with client-go's 15 s and 10 s a fenced leader has
//! stopped at least 5 s before anybody else can lead.
//!
//! A leader that lost its Lease (not renewed in time, or another holder
//! seen) exits with status 1 and lets Kubernetes restart it, as client-go's
//! users (kube-controller-manager, kube-scheduler) do, rather than going
//! back to standby: what it holds (batches, lane messages, the map of what
//! it shipped) belongs to a term that is over, and a new process starts
//! with none of it, so no record of an old term can ever reach the intake
//! in a later one, and the gate never has to open twice. The restarted
//! process is a standby like any other.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use shared::config::{Config, ConfigError};
use shared::metrics::Registry;
use shared::metrics::prometheus_client::metrics::counter::Counter;
use shared::metrics::prometheus_client::metrics::family::Family;
use shared::metrics::prometheus_client::metrics::gauge::Gauge;

/// client-go's defaults (`leaderelection.LeaderElectionConfig`, as
/// kube-controller-manager sets them).
pub const DEFAULT_LEASE_DURATION: Duration = Duration::from_secs(15);
pub const DEFAULT_RENEW_DEADLINE: Duration = Duration::from_secs(10);
pub const DEFAULT_RETRY_PERIOD: Duration = Duration::from_secs(2);
/// client-go's `JitterFactor`: a candidate waits between 1 and 2.2 retry
/// periods between attempts.
pub const JITTER_FACTOR: f64 = 1.2;

/// How leader election is configured (`WATCHD_LEADER_ELECTION` on).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ElectionConfig {
    /// `holderIdentity`: the pod's name (`POD_NAME`).
    pub identity: String,
    /// Where the Lease is: the pod's namespace (`POD_NAMESPACE`).
    pub namespace: String,
    /// `WATCHD_LEASE_NAME`.
    pub lease_name: String,
    /// How long the others wait after they last saw the Lease renewed.
    pub lease_duration: Duration,
    /// How long the leader keeps shipping after its last renewal.
    pub renew_deadline: Duration,
    /// How often the leader renews and the candidates try.
    pub retry_period: Duration,
}

impl ElectionConfig {
    /// `namespace/name` of the Lease, for the log.
    pub fn lease(&self) -> String {
        format!("{}/{}", self.namespace, self.lease_name)
    }

    /// The window whose deletions a new leader sends again: the old
    /// leader may have seen them but not shipped them (a lease duration
    /// since the standby last saw it renew, plus the renew deadline it may
    /// have gone on for).
    pub fn delete_window(&self) -> Duration {
        self.lease_duration + self.renew_deadline
    }
}

/// Reads the leader election variables; `None` when it is off.
///
/// `WATCHD_LEADER_ELECTION` unset means on when `POD_NAME` is set (in a
/// cluster, from the downward API) and off otherwise (`cargo run` with a
/// kubeconfig). On, `POD_NAME` and `POD_NAMESPACE` are required.
pub fn election_config(config: &Config) -> Result<Option<ElectionConfig>, ConfigError> {
    let on = match config.value("WATCHD_LEADER_ELECTION") {
        Some(_) => config.bool("WATCHD_LEADER_ELECTION")?,
        None => config.value("POD_NAME").is_some(),
    };
    if !on {
        return Ok(None);
    }
    let required = |name: &str, what: &str| {
        config.value(name).map(str::to_string).ok_or_else(|| {
            config.invalid(
                name,
                format!("is required with leader election on ({what}, from the downward API); WATCHD_LEADER_ELECTION=off runs a single replica"),
            )
        })
    };
    let identity = required("POD_NAME", "the pod's name, metadata.name")?;
    let namespace = required("POD_NAMESPACE", "the pod's namespace, metadata.namespace")?;
    let lease_name = config.string("WATCHD_LEASE_NAME")?;
    if !is_dns_subdomain(&lease_name) {
        return Err(config.invalid(
            "WATCHD_LEASE_NAME",
            format!("{lease_name:?} is not a valid object name (lower case letters, digits, '-' and '.')"),
        ));
    }
    let lease_duration = config.secs("WATCHD_LEASE_DURATION_SECS")?;
    let renew_deadline = config.secs("WATCHD_RENEW_DEADLINE_SECS")?;
    let retry_period = config.secs("WATCHD_RETRY_PERIOD_SECS")?;
    // client-go's own checks (leaderelection.NewLeaderElector).
    if retry_period.is_zero() {
        return Err(config.invalid("WATCHD_RETRY_PERIOD_SECS", "must be more than 0"));
    }
    if renew_deadline.as_secs_f64() <= JITTER_FACTOR * retry_period.as_secs_f64() {
        return Err(config.invalid(
            "WATCHD_RENEW_DEADLINE_SECS",
            format!(
                "{renew_deadline:?} must be more than {JITTER_FACTOR} times WATCHD_RETRY_PERIOD_SECS ({retry_period:?})"
            ),
        ));
    }
    if lease_duration <= renew_deadline {
        return Err(config.invalid(
            "WATCHD_LEASE_DURATION_SECS",
            format!(
                "{lease_duration:?} must be more than WATCHD_RENEW_DEADLINE_SECS ({renew_deadline:?}): a fenced leader must stop before another can lead"
            ),
        ));
    }
    Ok(Some(ElectionConfig {
        identity,
        namespace,
        lease_name,
        lease_duration,
        renew_deadline,
        retry_period,
    }))
}

/// An RFC 1123 subdomain, as object names must be.
fn is_dns_subdomain(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

type Labels1 = [(&'static str, &'static str); 1];

/// The leader election metrics.
#[derive(Clone, Debug, Default)]
pub struct LeaderMetrics {
    /// 1 while this replica leads (ships), else 0.
    pub leader: Gauge,
    /// This replica's leadership changes, by `change`: acquired, lost,
    /// released.
    pub changes: Family<Labels1, Counter>,
    /// Lease holders this replica saw take over (another replica's or its
    /// own term beginning).
    pub holder_changes: Counter,
}

impl LeaderMetrics {
    /// Registers `watchd_leader`, `watchd_leadership_changes_total` and
    /// `watchd_lease_holder_changes_total`.
    pub fn register(registry: &mut Registry) -> LeaderMetrics {
        let m = LeaderMetrics::default();
        let r = registry.sub_registry_with_prefix("watchd");
        r.register(
            "leader",
            "1 while this replica is the leader (the one that ships), else 0",
            m.leader.clone(),
        );
        r.register(
            "leadership_changes",
            "This replica's leadership changes: acquired, lost, released",
            m.changes.clone(),
        );
        r.register(
            "lease_holder_changes",
            "New Lease holders seen",
            m.holder_changes.clone(),
        );
        m
    }

    pub(crate) fn changed(&self, change: &'static str) {
        self.changes.get_or_create(&[("change", change)]).inc();
    }
}

/// Whether this replica may ship now. Clones share one state.
///
/// Read before every hand-over and every send: by the process thread
/// ([`crate::standby`]) and by each upload thread right before each
/// request ([`Leadership::wait_until_leading`]).
#[derive(Clone, Debug)]
pub struct Leadership {
    inner: Arc<Gate>,
}

#[derive(Debug)]
struct Gate {
    /// The origin of `until`.
    base: Instant,
    /// Nanoseconds after `base` until which this replica may ship: 0 for
    /// never (a standby, or a term that ended), [`ALWAYS`] without leader
    /// election. Moves only forward within a term, and only while the
    /// term is still valid, so once the clock passed it the gate stays
    /// shut.
    until: AtomicU64,
    /// The term ended for good (lost or released).
    ended: AtomicBool,
    /// Upload threads wait here while their replica does not lead yet.
    changed: (Mutex<()>, Condvar),
    metrics: LeaderMetrics,
}

const ALWAYS: u64 = u64::MAX;

impl Leadership {
    /// Without leader election: the only replica always ships.
    pub fn always() -> Leadership {
        Leadership::with(ALWAYS, LeaderMetrics::default())
    }

    /// A replica that stands by until its term begins.
    pub fn standby(metrics: LeaderMetrics) -> Leadership {
        metrics.leader.set(0);
        Leadership::with(0, metrics)
    }

    fn with(until: u64, metrics: LeaderMetrics) -> Leadership {
        Leadership {
            inner: Arc::new(Gate {
                base: Instant::now(),
                until: AtomicU64::new(until),
                ended: AtomicBool::new(false),
                changed: (Mutex::new(()), Condvar::new()),
                metrics,
            }),
        }
    }

    /// True when this replica may ship right now.
    pub fn is_leading(&self) -> bool {
        match self.inner.until.load(Ordering::SeqCst) {
            0 => false,
            ALWAYS => true,
            until => self.nanos(Instant::now()) < until,
        }
    }

    /// True once this replica's term is over (lost, released, or its
    /// deadline passed): it will never ship again.
    pub fn has_ended(&self) -> bool {
        if self.inner.ended.load(Ordering::SeqCst) {
            return true;
        }
        match self.inner.until.load(Ordering::SeqCst) {
            0 | ALWAYS => false,
            until => self.nanos(Instant::now()) >= until,
        }
    }

    /// The term begins: this replica may ship until `deadline`. False (and
    /// nothing changes) if a term already began, or `deadline` is past.
    pub(crate) fn begin(&self, deadline: Instant) -> bool {
        let until = self.nanos(deadline).max(1);
        if self.inner.ended.load(Ordering::SeqCst) || Instant::now() >= deadline {
            return false;
        }
        let begun = self
            .inner
            .until
            .compare_exchange(0, until, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok();
        if begun {
            self.inner.metrics.leader.set(1);
            self.inner.metrics.changed("acquired");
            self.notify();
        }
        begun
    }

    /// A renewal: this replica may ship until `deadline`, if its term is
    /// still valid now. False when the term is over (the gate stays shut).
    pub(crate) fn extend(&self, deadline: Instant) -> bool {
        let wanted = self.nanos(deadline).max(1);
        let mut current = self.inner.until.load(Ordering::SeqCst);
        loop {
            if current == 0 || current == ALWAYS || self.inner.ended.load(Ordering::SeqCst) {
                return false;
            }
            if self.nanos(Instant::now()) >= current {
                return false;
            }
            match self.inner.until.compare_exchange(
                current,
                wanted.max(current),
                Ordering::SeqCst,
                Ordering::SeqCst,
            ) {
                Ok(_) => return true,
                Err(now) => current = now,
            }
        }
    }

    /// When the term's deadline is, if this replica leads.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        match self.inner.until.load(Ordering::SeqCst) {
            0 | ALWAYS => None,
            until => Some(self.inner.base + Duration::from_nanos(until)),
        }
    }

    /// Ends the term: the gate shuts for good. `change` (lost, released)
    /// is counted if a term was on.
    pub(crate) fn end(&self, change: &'static str) {
        let was = self.inner.until.swap(0, Ordering::SeqCst);
        let first = !self.inner.ended.swap(true, Ordering::SeqCst);
        if was != 0 && was != ALWAYS && first {
            self.inner.metrics.leader.set(0);
            self.inner.metrics.changed(change);
        }
        self.notify();
    }

    /// Runs `send` (one request) once this replica leads: at once while it
    /// does; after waiting while it stands by (nothing reaches an upload
    /// thread then: a safeguard); never once its term is over: a fenced
    /// replica sends nothing more and exits ([`crate::lease`]).
    pub fn when_leading<T>(&self, send: impl FnOnce() -> T) -> T {
        self.wait_until_leading();
        send()
    }

    /// Returns once this replica leads (see [`Leadership::when_leading`]).
    pub fn wait_until_leading(&self) {
        loop {
            if self.is_leading() {
                return;
            }
            let (lock, cvar) = &self.inner.changed;
            let guard = lock.lock().unwrap_or_else(|p| p.into_inner());
            // The elector ends a lapsed term within moments; until it does,
            // wake now and then to look again.
            let _ = cvar.wait_timeout(guard, Duration::from_millis(100));
        }
    }

    fn notify(&self) {
        let (lock, cvar) = &self.inner.changed;
        let _guard = lock.lock().unwrap_or_else(|p| p.into_inner());
        cvar.notify_all();
    }

    fn nanos(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.inner.base).as_nanos())
            .unwrap_or(ALWAYS - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_election_the_gate_is_always_open() {
        let l = Leadership::always();
        assert!(l.is_leading());
        assert!(!l.has_ended());
        l.wait_until_leading();
    }

    #[test]
    fn a_term_opens_once_moves_on_with_renewals_and_shuts_for_good() {
        let metrics = LeaderMetrics::default();
        let l = Leadership::standby(metrics.clone());
        assert!(!l.is_leading());
        assert!(!l.extend(Instant::now() + Duration::from_secs(5)));
        assert!(!l.begin(Instant::now()), "a deadline already past");
        assert!(l.begin(Instant::now() + Duration::from_millis(50)));
        assert!(l.is_leading());
        assert_eq!(metrics.leader.get(), 1);
        assert!(!l.begin(Instant::now() + Duration::from_secs(5)));
        assert!(l.extend(Instant::now() + Duration::from_millis(80)));
        assert!(l.is_leading());
        std::thread::sleep(Duration::from_millis(100));
        // Not renewed in time: shut by the clock alone, and for good.
        assert!(!l.is_leading());
        assert!(l.has_ended());
        assert!(!l.extend(Instant::now() + Duration::from_secs(5)));
        assert!(!l.is_leading());
        l.end("lost");
        assert_eq!(metrics.leader.get(), 0);
        assert_eq!(
            metrics.changes.get_or_create(&[("change", "lost")]).get(),
            1
        );
        assert!(!l.begin(Instant::now() + Duration::from_secs(5)));
    }

    #[test]
    fn a_released_term_never_reopens() {
        let l = Leadership::standby(LeaderMetrics::default());
        assert!(l.begin(Instant::now() + Duration::from_secs(5)));
        l.end("released");
        assert!(!l.is_leading());
        assert!(l.has_ended());
        assert!(!l.extend(Instant::now() + Duration::from_secs(5)));
    }

    #[test]
    fn an_upload_thread_waits_at_the_gate_until_the_term_begins() {
        let l = Leadership::standby(LeaderMetrics::default());
        let waiter = {
            let l = l.clone();
            std::thread::spawn(move || {
                l.wait_until_leading();
                Instant::now()
            })
        };
        std::thread::sleep(Duration::from_millis(30));
        let opened = Instant::now();
        assert!(l.begin(Instant::now() + Duration::from_secs(5)));
        let passed = waiter.join().expect("the waiter");
        assert!(passed >= opened);
    }

    fn parse(env: &[(&str, &str)]) -> Result<Option<ElectionConfig>, ConfigError> {
        let config = Config::parse(
            "watchd",
            crate::daemon::VARS,
            Vec::new(),
            env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
            None,
        )?;
        election_config(&config)
    }

    #[test]
    fn election_is_on_in_a_cluster_and_off_with_a_kubeconfig_unless_asked() {
        assert_eq!(parse(&[]), Ok(None));
        let on = parse(&[("POD_NAME", "watchd-0"), ("POD_NAMESPACE", "hik8s")])
            .expect("valid")
            .expect("on");
        assert_eq!(
            on,
            ElectionConfig {
                identity: "watchd-0".into(),
                namespace: "hik8s".into(),
                lease_name: "watchd".into(),
                lease_duration: DEFAULT_LEASE_DURATION,
                renew_deadline: DEFAULT_RENEW_DEADLINE,
                retry_period: DEFAULT_RETRY_PERIOD,
            }
        );
        assert_eq!(on.delete_window(), Duration::from_secs(25));
        assert_eq!(
            parse(&[
                ("POD_NAME", "watchd-0"),
                ("POD_NAMESPACE", "hik8s"),
                ("WATCHD_LEADER_ELECTION", "off")
            ]),
            Ok(None)
        );
        let error = parse(&[("WATCHD_LEADER_ELECTION", "on")]).expect_err("no POD_NAME");
        assert_eq!(error.var(), Some("POD_NAME"));
        assert_eq!(error.exit_code(), 2);
        let error = parse(&[("POD_NAME", "watchd-0")]).expect_err("no POD_NAMESPACE");
        assert_eq!(error.var(), Some("POD_NAMESPACE"));
    }

    #[test]
    fn timings_are_client_gos_rules() {
        let base = [("POD_NAME", "a"), ("POD_NAMESPACE", "ns")];
        let with = |extra: &[(&'static str, &'static str)]| {
            let mut env = base.to_vec();
            env.extend_from_slice(extra);
            parse(&env)
        };
        let fast = with(&[
            ("WATCHD_LEASE_DURATION_SECS", "1500ms"),
            ("WATCHD_RENEW_DEADLINE_SECS", "1s"),
            ("WATCHD_RETRY_PERIOD_SECS", "200ms"),
        ])
        .expect("valid")
        .expect("on");
        assert_eq!(fast.lease_duration, Duration::from_millis(1500));
        let var = |r: Result<Option<ElectionConfig>, ConfigError>| {
            r.expect_err("invalid").var().map(str::to_string)
        };
        assert_eq!(
            var(with(&[("WATCHD_LEASE_DURATION_SECS", "10")])).as_deref(),
            Some("WATCHD_LEASE_DURATION_SECS")
        );
        assert_eq!(
            var(with(&[("WATCHD_RETRY_PERIOD_SECS", "9")])).as_deref(),
            Some("WATCHD_RENEW_DEADLINE_SECS")
        );
        assert_eq!(
            var(with(&[("WATCHD_RETRY_PERIOD_SECS", "0")])).as_deref(),
            Some("WATCHD_RETRY_PERIOD_SECS")
        );
        assert_eq!(
            var(with(&[("WATCHD_LEASE_NAME", "Not_A_Name")])).as_deref(),
            Some("WATCHD_LEASE_NAME")
        );
    }
}
