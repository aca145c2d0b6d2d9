//! Test support for the daemon tests: a kubelet-like writer of a pods tree
//! ([`pods`]), the real logd binary run as a process ([`daemon`]), and
//! counting what the test intake received ([`delivery`]).
//!
//! Every test runs its own logd on its own temp dirs against its own test
//! intake on a port of its own, so tests run in parallel.

#![allow(dead_code)] // each test binary uses its own subset

pub mod daemon;
pub mod delivery;
pub mod pods;

use std::time::Duration;

pub use testkit::wait::wait_until;

/// Deadline for anything that should happen "soon": generous, for a loaded
/// 2-core CI machine; waits return as soon as their condition holds.
pub const SOON: Duration = Duration::from_secs(30);
