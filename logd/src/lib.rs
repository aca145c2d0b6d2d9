//! logd as a library: the tailing core (identity, checkpoints, rotation,
//! parsing) works on plain files with no threads, so it can be tested alone;
//! the daemon's threads only move data between its parts.

pub mod cri;
pub mod docker;
pub mod parse;
pub mod pod_path;
pub mod timestamp;
