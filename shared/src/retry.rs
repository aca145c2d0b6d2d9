//! When and how long to wait before sending again (SPEC §3 "Failures").
//!
//! Connection errors, timeouts, 429 and 5xx are retried with exponential
//! backoff and jitter, 250 ms doubling up to 30 s, for ever (or up to a cap
//! the caller chooses); a `Retry-After` sent with 429 or 503 is the wait.
//! Waits end early on shutdown. Isolating a batch that the intake refuses
//! with 500 again and again is the daemons' job: [`send_with_retry`] only
//! offers a cap on attempts for it.

use std::time::{Duration, SystemTime};

use crate::intake::SendError;
use crate::shutdown::Shutdown;

/// First wait after a failure.
pub const INITIAL_DELAY: Duration = Duration::from_millis(250);
/// Longest backoff wait.
pub const MAX_DELAY: Duration = Duration::from_secs(30);
/// Longest wait a server's `Retry-After` can impose.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(5 * 60);

/// Exponential backoff with equal jitter, owned by one sender: each
/// [`Backoff::next_delay`] doubles the base wait (up to the maximum) and
/// returns a wait between half of it and all of it, so many daemons that
/// failed together do not come back together, and no wait is near zero.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    failures: u32,
}

impl Backoff {
    /// 250 ms doubling to 30 s.
    pub fn new() -> Self {
        Backoff::with_bounds(INITIAL_DELAY, MAX_DELAY)
    }

    /// A backoff from `initial` doubling to `max` (tests use small ones).
    pub fn with_bounds(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            max: max.max(initial),
            failures: 0,
        }
    }

    /// The wait before the next attempt, after one more failure. A
    /// `retry_after` from the server is the wait itself (capped at
    /// [`MAX_RETRY_AFTER`]); the backoff still advances.
    pub fn next_delay(&mut self, retry_after: Option<Duration>) -> Duration {
        let base = self.base_delay();
        self.failures = self.failures.saturating_add(1);
        match retry_after {
            Some(wait) => wait.min(MAX_RETRY_AFTER),
            None => equal_jitter(base),
        }
    }

    /// Back to the initial wait, after a success.
    pub fn reset(&mut self) {
        self.failures = 0;
    }

    /// Failures since the last reset.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    fn base_delay(&self) -> Duration {
        // 2^failures, saturating long before overflow: 2^20 * 250 ms is days.
        let factor = 1u32 << self.failures.min(20);
        self.initial.saturating_mul(factor).min(self.max)
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new()
    }
}

/// Half of `base` plus a random part of the other half.
fn equal_jitter(base: Duration) -> Duration {
    let half = base / 2;
    let nanos = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX);
    half + Duration::from_nanos(fastrand::u64(0..=nanos))
}

/// A `Retry-After` header value as a wait: delta-seconds (`120`) or an
/// HTTP date (`Wed, 21 Oct 2015 07:28:00 GMT`, a date in the past is no
/// wait). None when it is neither.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let date = httpdate::parse_http_date(value).ok()?;
    Some(date.duration_since(now).unwrap_or(Duration::ZERO))
}

/// How [`send_with_retry`] ended.
#[derive(Debug)]
pub enum Delivery {
    /// The intake acknowledged (2xx).
    Delivered,
    /// 413: the caller splits the batch and sends the halves.
    TooLarge,
    /// A 4xx other than 401, 408, 413 and 429: do not send this again.
    Rejected { status: u16, body_start: String },
    /// The whole request is refused for good (see [`SendError::Refused`]):
    /// drop it.
    Refused { status: u16, body_start: String },
    /// The attempt cap was reached; `last` is the last failure.
    GaveUp { last: SendError },
    /// Shutdown was triggered while waiting to retry (or before the first
    /// attempt); the data was not acknowledged.
    ShutDown,
}

/// How many attempts [`send_with_retry`] makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempts {
    /// Until success, a non-retryable answer, or shutdown (SPEC default).
    Forever,
    /// At most this many (at least 1), then [`Delivery::GaveUp`].
    AtMost(u32),
}

/// Calls `op` until it succeeds, fails in a way retrying cannot fix, the
/// attempt cap is reached, or shutdown is triggered. Between attempts it
/// calls `on_retry(error, wait)` (to log and count) and waits on `shutdown`
/// for the wait given by `backoff` (reset on success). A shutdown during a
/// wait returns [`Delivery::ShutDown`] at once; an attempt in flight is
/// never interrupted (the agent's timeouts bound it).
pub fn send_with_retry(
    mut op: impl FnMut() -> Result<(), SendError>,
    backoff: &mut Backoff,
    attempts: Attempts,
    shutdown: &Shutdown,
    mut on_retry: impl FnMut(&SendError, Duration),
) -> Delivery {
    let mut made = 0u32;
    loop {
        if shutdown.is_triggered() {
            return Delivery::ShutDown;
        }
        made = made.saturating_add(1);
        let error = match op() {
            Ok(()) => {
                backoff.reset();
                return Delivery::Delivered;
            }
            Err(SendError::TooLarge) => return Delivery::TooLarge,
            Err(SendError::Rejected { status, body_start }) => {
                return Delivery::Rejected { status, body_start };
            }
            Err(SendError::Refused { status, body_start }) => {
                return Delivery::Refused { status, body_start };
            }
            Err(error) => error,
        };
        if let Attempts::AtMost(max) = attempts
            && made >= max
        {
            return Delivery::GaveUp { last: error };
        }
        let wait = backoff.next_delay(error.retry_after());
        on_retry(&error, wait);
        if shutdown.wait_timeout(wait) {
            return Delivery::ShutDown;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn retryable(retry_after: Option<Duration>) -> SendError {
        SendError::Retryable {
            reason: "test".into(),
            status: Some(503),
            retry_after,
        }
    }

    #[test]
    fn delays_double_with_jitter_up_to_the_max() {
        let mut backoff = Backoff::new();
        let mut bases = Vec::new();
        for _ in 0..12 {
            let base = backoff.base_delay();
            let delay = backoff.next_delay(None);
            assert!(
                delay >= base / 2 && delay <= base,
                "{delay:?} vs base {base:?}"
            );
            bases.push(base.as_millis());
        }
        assert_eq!(
            bases,
            [
                250, 500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000, 30000, 30000
            ]
        );
    }

    #[test]
    fn reset_starts_over() {
        let mut backoff = Backoff::new();
        for _ in 0..5 {
            backoff.next_delay(None);
        }
        backoff.reset();
        assert!(backoff.next_delay(None) <= INITIAL_DELAY);
        assert_eq!(backoff.failures(), 1);
    }

    #[test]
    fn retry_after_is_the_wait_capped() {
        let mut backoff = Backoff::new();
        assert_eq!(
            backoff.next_delay(Some(Duration::from_secs(7))),
            Duration::from_secs(7)
        );
        assert_eq!(
            backoff.next_delay(Some(Duration::from_secs(3600))),
            MAX_RETRY_AFTER
        );
    }

    #[test]
    fn retry_after_parses_seconds_and_dates() {
        let now = httpdate::parse_http_date("Wed, 21 Oct 2015 07:28:00 GMT").expect("valid date");
        assert_eq!(
            parse_retry_after(" 120 ", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-1", now), None);
    }

    #[test]
    fn retries_until_success_and_resets_the_backoff() {
        let shutdown = Shutdown::new();
        let mut backoff = Backoff::with_bounds(Duration::from_millis(1), Duration::from_millis(2));
        let mut calls = 0;
        let mut retries = Vec::new();
        let delivery = send_with_retry(
            || {
                calls += 1;
                if calls < 4 {
                    Err(retryable(None))
                } else {
                    Ok(())
                }
            },
            &mut backoff,
            Attempts::Forever,
            &shutdown,
            |error, wait| retries.push((error.status(), wait)),
        );
        assert!(matches!(delivery, Delivery::Delivered), "{delivery:?}");
        assert_eq!(calls, 4);
        assert_eq!(retries.len(), 3);
        assert!(retries.iter().all(|(status, _)| *status == Some(503)));
        assert_eq!(backoff.failures(), 0);
    }

    #[test]
    fn non_retryable_answers_end_at_once() {
        let shutdown = Shutdown::new();
        let mut backoff = Backoff::new();
        let delivery = send_with_retry(
            || Err(SendError::TooLarge),
            &mut backoff,
            Attempts::Forever,
            &shutdown,
            |_, _| panic!("no retry expected"),
        );
        assert!(matches!(delivery, Delivery::TooLarge));
        let delivery = send_with_retry(
            || {
                Err(SendError::Rejected {
                    status: 400,
                    body_start: "bad".into(),
                })
            },
            &mut backoff,
            Attempts::Forever,
            &shutdown,
            |_, _| panic!("no retry expected"),
        );
        assert!(
            matches!(delivery, Delivery::Rejected { status: 400, ref body_start } if body_start == "bad")
        );
    }

    #[test]
    fn gives_up_after_the_attempt_cap() {
        let shutdown = Shutdown::new();
        let mut backoff = Backoff::with_bounds(Duration::from_millis(1), Duration::from_millis(1));
        let mut calls = 0;
        let delivery = send_with_retry(
            || {
                calls += 1;
                Err(retryable(None))
            },
            &mut backoff,
            Attempts::AtMost(3),
            &shutdown,
            |_, _| {},
        );
        assert!(matches!(
            delivery,
            Delivery::GaveUp {
                last: SendError::Retryable {
                    status: Some(503),
                    ..
                }
            }
        ));
        assert_eq!(calls, 3);
    }

    #[test]
    fn shutdown_ends_a_long_wait_promptly() {
        let shutdown = Shutdown::new();
        let trigger = shutdown.clone();
        let mut backoff = Backoff::new();
        let start = std::time::Instant::now();
        let delivery = send_with_retry(
            || Err(retryable(Some(Duration::from_secs(120)))),
            &mut backoff,
            Attempts::Forever,
            &shutdown,
            |_, _| trigger.trigger(),
        );
        assert!(matches!(delivery, Delivery::ShutDown));
        assert!(start.elapsed() < Duration::from_secs(10));
    }
}
