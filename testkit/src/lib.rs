//! Test support, dev-only: servers that speak the real protocols on
//! 127.0.0.1, each on a port of its own, for the daemons' tests.

pub mod apiserver;
pub mod intake;
pub mod wait;

use std::path::{Path, PathBuf};

/// Real Kubernetes objects recorded from clusters (`testkit/fixtures/k8s-objects/`,
/// provenance in `testkit/fixtures/README.md`), found from this crate's own
/// directory so that a clone anywhere finds them.
pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/k8s-objects")
}
