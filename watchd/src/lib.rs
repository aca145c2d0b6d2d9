//! watchd, the HiK8s cluster daemon: watches the Kubernetes API and ships
//! apply / initapply / delete records of built-in resources, Events and
//! custom resources to the intake (SPEC §4).
//!
//! Threads: `watchd-kube` (the only async code: a current-thread tokio
//! runtime running kube's watchers and, with several replicas, the leader
//! election: [`leader`], [`lease`], [`standby`]), `watchd-process` (strip,
//! fingerprint, relist diff, serialize), one upload thread per route,
//! `watchd-up-res`, `watchd-up-cr` and `watchd-up-ev` (batch and post with
//! ureq; see [`lanes`]), `watchd-metrics`, `watchd-signal`.

pub mod batch;
pub mod crds;
pub mod daemon;
pub mod fingerprint;
pub mod kube_thread;
pub mod lanes;
pub mod leader;
pub mod lease;
pub mod metrics;
pub mod process;
pub mod raw;
pub mod rbac;
pub mod relist;
pub mod resources;
pub mod standby;
pub mod status;
pub mod strip;
pub mod upload;
pub mod watch_pacing;
