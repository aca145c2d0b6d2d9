//! Test support, dev-only: servers that speak the real protocols on
//! 127.0.0.1, each on a port of its own, for the daemons' tests.

pub mod apiserver;
pub mod intake;
pub mod wait;
