//! Waiting on a condition with a deadline, the one way tests wait: poll
//! every few milliseconds, return as soon as it holds.

use std::time::{Duration, Instant};

/// Polls `cond` every 5 ms until it holds (`true`) or `timeout` passes
/// (`false`).
pub fn poll_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Like [`poll_until`], but panics naming `what` when `timeout` passes.
pub fn wait_until(timeout: Duration, what: &str, cond: impl FnMut() -> bool) {
    assert!(
        poll_until(timeout, cond),
        "timed out after {timeout:?} waiting for {what}"
    );
}
