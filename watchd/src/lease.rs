//! The elector: client-go's leader election algorithm
//! (`tools/leaderelection`) on a `coordination.k8s.io/v1` Lease, with
//! kube's `Api<Lease>`, as a task on the `watchd-kube` runtime.
//!
//! One attempt (`Elector::try_acquire_or_renew`) is client-go's
//! `tryAcquireOrRenew`: get the Lease; on 404 create it; else, unless
//! another holder's Lease is still valid, replace it with the
//! `resourceVersion` read (optimistic concurrency: a 409 means another
//! replica wrote first, a lost race, not an error). A Lease is valid until
//! a lease duration after this replica last saw its record change, by its
//! own monotonic clock: clocks of other machines are never compared.
//!
//! - A candidate tries every retry period, jittered by 1.2 (between 1 and
//!   2.2 periods), so that candidates do not try in step, and also right
//!   when the holder's Lease expires by its clock (jittered by up to 6 % of
//!   a period), so that a standby takes over a dead leader's Lease a lease
//!   duration after it last saw it renewed, not up to 2.2 periods later.
//! - The leader renews every retry period, and within a round tries again
//!   every retry period until the renew deadline after its last renewal.
//!   Each request is bounded by that deadline: a write that hangs (a
//!   network partition) cannot hold it past it.
//! - Fencing: at the deadline, or as soon as it sees another holder (or
//!   none) on the Lease, the leader shuts its gate ([`Leadership`]) and
//!   exits with status 1 (why exit: [`crate::leader`]).
//! - Release (SIGTERM, once what was batched is sent): the holder is
//!   emptied, `leaseDurationSeconds` 1, as client-go's `ReleaseOnCancel`
//!   does, so a standby takes over at its next attempt instead of a lease
//!   duration later.
//!
//! Two deliberate differences from client-go: a replica counts as the
//! holder only for a term it began itself (client-go also takes a Lease
//! naming its identity at once, which would let a restarted pod, same name,
//! cold, step back in ahead of the warm standby); and seeing another
//! holder fences the leader at once instead of at its renew deadline.

use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use tokio::sync::watch;

use crate::leader::{ElectionConfig, JITTER_FACTOR, LeaderMetrics, Leadership};

/// What one attempt found.
#[derive(Debug, PartialEq, Eq)]
enum Attempt {
    /// This replica holds the Lease now (created, taken over or renewed).
    Held,
    /// Another replica's Lease is valid (`""`: the Lease has no holder,
    /// which for a leader means it was taken from it).
    HeldBy(String),
    /// Another replica wrote the Lease between our read and our write.
    LostRace,
    /// The API server could not be asked or refused otherwise.
    Failed(String),
}

/// The record last seen on the Lease, and when it was first seen.
struct Observed {
    spec: LeaseSpec,
    at: Instant,
}

/// One replica's side of the election.
pub struct Elector {
    api: Api<Lease>,
    config: ElectionConfig,
    gate: Leadership,
    metrics: LeaderMetrics,
    observed: Option<Observed>,
    /// The Lease as this replica last wrote it, while its term is on.
    held: Option<Lease>,
    /// Whether the last attempt failed (failures are logged once in a row).
    failing: bool,
}

impl Elector {
    pub fn new(
        client: kube::Client,
        config: ElectionConfig,
        gate: Leadership,
        metrics: LeaderMetrics,
    ) -> Elector {
        Elector {
            api: Api::namespaced(client, &config.namespace),
            config,
            gate,
            metrics,
            observed: None,
            held: None,
            failing: false,
        }
    }

    /// Campaigns, then leads. `leading` turns `Some(false)` after the
    /// first attempt if it did not win, `Some(true)` when the term begins.
    /// Returns once `stop` turned true before this replica led, or after
    /// the release once `release` turned true. Never returns from a lost
    /// term: the process exits.
    pub async fn run(
        mut self,
        leading: watch::Sender<Option<bool>>,
        mut stop: watch::Receiver<bool>,
        mut release: watch::Receiver<bool>,
    ) {
        log::info!(
            "leader election on Lease {} as {} (lease {:?}, renew deadline {:?}, retry {:?}): standing by until elected",
            self.config.lease(),
            self.config.identity,
            self.config.lease_duration,
            self.config.renew_deadline,
            self.config.retry_period
        );
        if !self.campaign(&mut stop, &leading).await {
            return;
        }
        leading.send_replace(Some(true));
        self.lead(&mut release).await;
    }

    /// Tries until this replica holds the Lease (true) or `stop` (false).
    async fn campaign(
        &mut self,
        stop: &mut watch::Receiver<bool>,
        leading: &watch::Sender<Option<bool>>,
    ) -> bool {
        let mut last_holder: Option<String> = None;
        loop {
            if *stop.borrow() {
                return false;
            }
            let started = Instant::now();
            let attempt = self.bounded(started + self.config.renew_deadline).await;
            match attempt {
                Attempt::Held => {
                    if self.gate.begin(started + self.config.renew_deadline) {
                        log::info!(
                            "acquired Lease {}: this replica leads and ships from now on",
                            self.config.lease()
                        );
                        return true;
                    }
                    // The write took the whole deadline: do not lead on it.
                    self.held = None;
                }
                Attempt::HeldBy(holder) => {
                    if last_holder.as_deref() != Some(holder.as_str()) {
                        log::info!(
                            "Lease {} is held by {holder}: standing by (watching, shipping nothing)",
                            self.config.lease()
                        );
                        last_holder = Some(holder);
                    }
                }
                Attempt::LostRace => log::info!(
                    "Lease {}: another replica wrote it first; standing by",
                    self.config.lease()
                ),
                Attempt::Failed(error) => self.failed(&error),
            }
            leading.send_if_modified(|l| l.replace(false).is_none());
            let wait = self.next_attempt();
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                _ = stop.wait_for(|s| *s) => return false,
            }
        }
    }

    /// Renews until `release` (then releases and returns), or exits when
    /// the Lease is lost.
    async fn lead(&mut self, release: &mut watch::Receiver<bool>) {
        loop {
            let released = tokio::select! {
                () = tokio::time::sleep(self.config.retry_period) => false,
                _ = release.wait_for(|r| *r) => true,
            };
            if released {
                return self.release().await;
            }
            // A round: try every retry period until renewed or the deadline.
            loop {
                let Some(deadline) = self.gate.deadline() else {
                    self.lost("its term ended");
                };
                let started = Instant::now();
                if started >= deadline {
                    self.lost("not renewed within the renew deadline");
                }
                match self.bounded(deadline).await {
                    Attempt::Held => {
                        if !self.gate.extend(started + self.config.renew_deadline) {
                            self.lost("renewed only after the renew deadline");
                        }
                        self.failing = false;
                        break;
                    }
                    Attempt::HeldBy(holder) if holder.is_empty() => {
                        self.lost("the Lease was released by someone else")
                    }
                    Attempt::HeldBy(holder) => {
                        self.lost(&format!("the Lease is held by {holder} now"))
                    }
                    // Someone wrote the Lease since our read: the next read
                    // tells who.
                    Attempt::LostRace => {}
                    Attempt::Failed(error) => self.failed(&error),
                }
                let next = (started + self.config.retry_period).min(deadline);
                let released = tokio::select! {
                    () = tokio::time::sleep_until(next.into()) => false,
                    _ = release.wait_for(|r| *r) => true,
                };
                if released {
                    return self.release().await;
                }
            }
        }
    }

    /// One attempt, given up at `deadline`.
    async fn bounded(&mut self, deadline: Instant) -> Attempt {
        match tokio::time::timeout_at(deadline.into(), self.try_acquire_or_renew()).await {
            Ok(attempt) => attempt,
            Err(_) => Attempt::Failed("no answer in time".into()),
        }
    }

    /// client-go's `tryAcquireOrRenew`.
    async fn try_acquire_or_renew(&mut self) -> Attempt {
        let now = micro_now();
        let pp = PostParams {
            field_manager: Some("watchd".into()),
            ..PostParams::default()
        };
        let current = match self.api.get_opt(&self.config.lease_name).await {
            Ok(current) => current,
            Err(e) => return Attempt::Failed(format!("reading the Lease: {e}")),
        };
        let leading = self.held.is_some();
        let Some(mut lease) = current else {
            // No Lease yet (or it was deleted): create it.
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.config.lease_name.clone()),
                    namespace: Some(self.config.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(self.record(now.clone(), now, 0)),
            };
            return match self.api.create(&pp, &lease).await {
                Ok(created) => self.wrote(created),
                Err(kube::Error::Api(s)) if s.code == 409 => Attempt::LostRace,
                Err(e) => Attempt::Failed(format!("creating the Lease: {e}")),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        self.observe(&spec);
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let mine = leading && holder == self.config.identity;
        if leading && !mine {
            return Attempt::HeldBy(holder);
        }
        if !mine && !holder.is_empty() && self.observed_valid() {
            return Attempt::HeldBy(holder);
        }
        let transitions = spec.lease_transitions.unwrap_or(0);
        let new_spec = if mine {
            LeaseSpec {
                renew_time: Some(now),
                lease_duration_seconds: Some(whole_seconds(self.config.lease_duration)),
                ..spec
            }
        } else {
            LeaseSpec {
                preferred_holder: spec.preferred_holder,
                strategy: spec.strategy,
                ..self.record(now.clone(), now, transitions.saturating_add(1))
            }
        };
        lease.spec = Some(new_spec);
        // `metadata.resourceVersion` is the one read: a write in between
        // makes this a 409.
        match self.api.replace(&self.config.lease_name, &pp, &lease).await {
            Ok(updated) => self.wrote(updated),
            Err(kube::Error::Api(s)) if s.code == 409 => Attempt::LostRace,
            Err(e) => Attempt::Failed(format!("writing the Lease: {e}")),
        }
    }

    /// A record naming this replica, acquired at `acquired`.
    fn record(&self, acquired: MicroTime, renewed: MicroTime, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.config.identity.clone()),
            lease_duration_seconds: Some(whole_seconds(self.config.lease_duration)),
            acquire_time: Some(acquired),
            renew_time: Some(renewed),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }

    fn wrote(&mut self, lease: Lease) -> Attempt {
        let spec = lease.spec.clone().unwrap_or_default();
        self.observe(&spec);
        self.held = Some(lease);
        Attempt::Held
    }

    /// Notes the record read; a new one restarts the validity clock.
    fn observe(&mut self, spec: &LeaseSpec) {
        if self.observed.as_ref().is_some_and(|o| o.spec == *spec) {
            return;
        }
        let previous = self
            .observed
            .as_ref()
            .and_then(|o| o.spec.holder_identity.clone());
        if spec
            .holder_identity
            .as_deref()
            .is_some_and(|h| !h.is_empty())
            && previous != spec.holder_identity
        {
            self.metrics.holder_changes.inc();
        }
        self.observed = Some(Observed {
            spec: spec.clone(),
            at: Instant::now(),
        });
    }

    /// client-go's `isLeaseValid`: a lease duration since the record last
    /// changed, by this replica's clock.
    fn observed_valid(&self) -> bool {
        self.observed
            .as_ref()
            .is_some_and(|o| o.at.elapsed() < self.config.lease_duration)
    }

    /// A candidate's wait: a retry period jittered by 1.2, or less when
    /// the holder's Lease expires sooner (by this replica's clock), so
    /// that a warm standby takes over at expiry rather than up to 2.2
    /// retry periods later. The expiry wake-up is jittered too (up to 6 %
    /// of a period), so that candidates do not write in step.
    fn next_attempt(&self) -> Duration {
        let wait = jittered(self.config.retry_period);
        let expiry = self.observed.as_ref().and_then(|o| {
            let holder = o.spec.holder_identity.as_deref().unwrap_or("");
            let left = (o.at + self.config.lease_duration).checked_duration_since(Instant::now())?;
            (!holder.is_empty()).then(|| {
                left + jittered(self.config.retry_period / 20) - self.config.retry_period / 20
            })
        });
        expiry.map_or(wait, |e| e.min(wait))
    }

    fn failed(&mut self, error: &str) {
        if self.failing {
            log::debug!("Lease {}: {error}", self.config.lease());
        } else {
            log::warn!(
                "Lease {}: {error}; trying again every {:?}",
                self.config.lease(),
                self.config.retry_period
            );
            self.failing = true;
        }
    }

    /// Fencing: shut the gate, then exit (see [`crate::leader`]).
    fn lost(&self, why: &str) -> ! {
        self.gate.end("lost");
        log::error!(
            "lost Lease {}: {why}; stopped shipping, exiting so that Kubernetes restarts this replica as a standby",
            self.config.lease()
        );
        std::process::exit(1);
    }

    /// client-go's `release`: the gate shuts first (what was batched is
    /// sent by now), then the holder is emptied.
    async fn release(&mut self) {
        self.gate.end("released");
        let Some(mut lease) = self.held.take() else {
            return;
        };
        let now = micro_now();
        let spec = lease.spec.take().unwrap_or_default();
        lease.spec = Some(LeaseSpec {
            holder_identity: Some(String::new()),
            lease_duration_seconds: Some(1),
            acquire_time: Some(now.clone()),
            renew_time: Some(now),
            lease_transitions: spec.lease_transitions,
            preferred_holder: spec.preferred_holder,
            strategy: spec.strategy,
        });
        let pp = PostParams::default();
        let request = self.api.replace(&self.config.lease_name, &pp, &lease);
        match tokio::time::timeout(self.config.renew_deadline, request).await {
            Ok(Ok(_)) => log::info!(
                "released Lease {}: a standby takes over at its next attempt",
                self.config.lease()
            ),
            Ok(Err(e)) => log::warn!(
                "could not release Lease {}: {e}; a standby takes over once it expires",
                self.config.lease()
            ),
            Err(_) => log::warn!(
                "could not release Lease {}: no answer within {:?}; a standby takes over once it expires",
                self.config.lease(),
                self.config.renew_deadline
            ),
        }
    }
}

/// Now, as a MicroTime (serialized with six fractional digits and `Z`).
fn micro_now() -> MicroTime {
    let now = Timestamp::now();
    // Whole microseconds: what the server stores and serves back.
    let micros = now.as_microsecond();
    MicroTime(Timestamp::from_microsecond(micros).unwrap_or(now))
}

/// `leaseDurationSeconds` is whole seconds: rounded up, at least 1.
fn whole_seconds(d: Duration) -> i32 {
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    i32::try_from(secs.max(1)).unwrap_or(i32::MAX)
}

/// client-go's `wait.Jitter(period, 1.2)`: between 1 and 2.2 periods.
fn jittered(period: Duration) -> Duration {
    // A random number from std's randomly keyed hasher (no RNG needed).
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    let fraction = (random >> 11) as f64 / (1u64 << 53) as f64;
    period.mul_f64(1.0 + fraction * JITTER_FACTOR)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_client_gos_bounds() {
        let period = Duration::from_secs(2);
        let waits: Vec<Duration> = (0..200).map(|_| jittered(period)).collect();
        assert!(
            waits
                .iter()
                .all(|w| *w >= period && *w <= period.mul_f64(2.2))
        );
        assert!(waits.iter().any(|w| *w != waits[0]), "not random");
    }

    #[test]
    fn lease_durations_are_whole_seconds_rounded_up() {
        assert_eq!(whole_seconds(Duration::from_secs(15)), 15);
        assert_eq!(whole_seconds(Duration::from_millis(1500)), 2);
        assert_eq!(whole_seconds(Duration::from_millis(300)), 1);
    }

    #[test]
    fn micro_times_have_six_digits_and_z() {
        let json = serde_json::to_value(micro_now()).expect("serializes");
        let text = json.as_str().expect("a string");
        let (_, fraction) = text.split_once('.').expect("a fraction");
        assert_eq!(fraction.len(), 7, "{text}");
        assert!(fraction.ends_with('Z'), "{text}");
    }
}
