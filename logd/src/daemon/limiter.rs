//! How many requests may be in flight at once: an AIMD limiter in the
//! spirit of Vector's adaptive request concurrency.
//!
//! The intake is tens of milliseconds away; one request at a time would
//! leave logd waiting on round trips (Little's law: 1,000 requests a second
//! at 50 ms need 50 in flight). But how many the intake can take is not
//! known and changes, so it is measured, not configured:
//!
//! - the limit grows by one per window (a window lasts about one response
//!   time) in which a request waited for a slot longer than it could
//!   without harm, and response times stayed flat. For a backlog that is
//!   [`QUEUE_WAIT`]: throughput is what counts, and the queueing test below
//!   says where more in flight stops helping. For lines that lingered it
//!   is a tenth of the linger: on loopback, 100 files flushed together take
//!   30 ms one at a time, nothing next to a second's linger, and more in
//!   flight would only cost threads, connections and wake-ups. Until the
//!   first sign that the limit is too high, a backlog has it double
//!   instead, up to what was waiting (a slow start, as TCP's): a drain 25 ms
//!   away spent half a second of its first two growing one by one to the 15
//!   requests it needs;
//! - it is multiplied by 0.9 after a window whose mean response time climbed
//!   well above the long-run mean, or above twice the response time with
//!   one or two in flight plus a tenth of a millisecond (either way the intake
//!   queues our requests: more in flight would only wait there longer).
//!   The second test is what stops a backlog's growth on loopback, where
//!   response times are a fraction of a millisecond and a few in flight
//!   already keep the intake busy. An intake that moved farther away keeps
//!   the limit falling until it is measured again with one or two in
//!   flight;
//! - it is halved by every sign of overload: 429, 502, 503, 504, a timeout
//!   or a connection error. Every request in flight when the intake is
//!   overloaded answers so, which brings the limit to 1 within one round
//!   trip.
//!
//! No clock of its own: the caller says when a response came.

use std::time::{Duration, Instant};

/// A request of a backlog that waited this long for a slot says the limit
/// is too low: on loopback too, where with two requests in flight the
/// intake takes one while logd sends the next, and a drain goes faster.
pub const QUEUE_WAIT: Duration = Duration::from_millis(2);
/// A window lasts at least this long: on loopback, response times are
/// tens of microseconds and too noisy to judge one at a time.
const MIN_WINDOW: Duration = Duration::from_millis(10);
/// A window's mean response time "climbed" above this many times the
/// long-run mean...
const CLIMB_RATIO: f64 = 1.5;
/// ...plus this much (scheduling noise on a busy node is milliseconds).
const CLIMB_SLACK: f64 = 0.005;
/// A window's mean response time above this many times the one with one or
/// two in flight ([`Limiter::floor`])...
const QUEUEING_RATIO: f64 = 2.0;
/// ...plus this much says requests queue at the intake.
const QUEUEING_SLACK: f64 = 0.0001;
/// The limit at which the intake's own response time is measured.
const FLOOR_LIMIT: usize = 2;
/// Weight of a window's mean in the long-run mean.
const EWMA_WEIGHT: f64 = 0.1;
/// Multiplicative decrease when response times climb.
const CLIMB_DECREASE: f64 = 0.9;

#[derive(Debug)]
pub struct Limiter {
    max: usize,
    limit: usize,
    /// Long-run mean response time, in seconds, over windows.
    past: Option<f64>,
    window: Window,
    /// No sign yet that the limit is too high: it doubles.
    slow_start: bool,
    /// The last window mean response time with at most [`FLOOR_LIMIT`] in
    /// flight, or a lower one since: the intake's own, without our queue.
    floor: Option<f64>,
}

#[derive(Debug)]
struct Window {
    started: Instant,
    sum: f64,
    count: u32,
    /// A request sent in this window waited for a slot: demand is there,
    /// so a higher limit would be used.
    reached: bool,
    /// The most requests of a backlog that were in flight or waiting for a
    /// slot at once (slow start grows the limit to at most that).
    wanted: usize,
}

impl Window {
    fn new(now: Instant) -> Window {
        Window {
            started: now,
            sum: 0.0,
            count: 0,
            reached: false,
            wanted: 0,
        }
    }
}

impl Limiter {
    /// Starts at one request in flight; never above `max` (at least 1).
    pub fn new(max: usize, now: Instant) -> Limiter {
        Limiter {
            max: max.max(1),
            limit: 1,
            past: None,
            window: Window::new(now),
            slow_start: true,
            floor: None,
        }
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// The long-run mean response time (zero before the first window).
    pub fn mean_response(&self) -> Duration {
        Duration::from_secs_f64(self.past.unwrap_or(0.0))
    }

    /// A request was sent after waiting `waited` for a slot; it could have
    /// waited `patience` without harm. For a backlog's request, `wanted`
    /// requests are in flight or waiting for a slot (this one included);
    /// for lines that lingered it is 0: they grow the limit one by one
    /// (no slow start), since what the linger's bursts need is reached soon
    /// enough, and a limit beyond it only costs threads and connections.
    pub fn on_send(&mut self, waited: Duration, patience: Duration, wanted: usize) {
        if waited >= patience {
            self.window.reached = true;
            self.window.wanted = self.window.wanted.max(wanted);
        }
    }

    /// The intake answered (any status but those of [`Limiter::on_overload`])
    /// after `took`.
    pub fn on_response(&mut self, took: Duration, now: Instant) {
        self.window.sum += took.as_secs_f64();
        self.window.count += 1;
        let length = self
            .past
            .map_or(MIN_WINDOW, Duration::from_secs_f64)
            .max(MIN_WINDOW);
        if now.saturating_duration_since(self.window.started) >= length {
            self.close_window(now);
        }
    }

    /// 429, 502, 503, 504, a timeout or a connection error.
    pub fn on_overload(&mut self, now: Instant) {
        self.slow_start = false;
        self.limit = (self.limit / 2).max(1);
        self.window = Window::new(now);
    }

    fn close_window(&mut self, now: Instant) {
        let mean = self.window.sum / f64::from(self.window.count);
        let floor = match self.floor {
            Some(floor) if self.limit > FLOOR_LIMIT => floor.min(mean),
            _ => mean,
        };
        self.floor = Some(floor);
        let queueing = mean > floor * QUEUEING_RATIO + QUEUEING_SLACK;
        match self.past {
            Some(past) if queueing || mean > past * CLIMB_RATIO + CLIMB_SLACK => {
                self.slow_start = false;
                self.limit = ((self.limit as f64 * CLIMB_DECREASE) as usize).max(1);
            }
            _ if self.window.reached && self.slow_start => {
                let doubled = (self.limit * 2).min(self.window.wanted);
                // `max`: one by one at least (lingered lines want 0).
                self.limit = doubled.max(self.limit + 1).min(self.max);
            }
            _ if self.window.reached => self.limit = (self.limit + 1).min(self.max),
            _ => {}
        }
        self.past = Some(match self.past {
            Some(past) => past + EWMA_WEIGHT * (mean - past),
            None => mean,
        });
        self.window = Window::new(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RTT: Duration = Duration::from_millis(50);

    /// Runs `rounds` windows with `demand` requests wanted at once, each
    /// answered after `rtt`; returns the limit after each window.
    fn run(limiter: &mut Limiter, now: &mut Instant, demand: usize, rtt: Duration, rounds: usize) {
        for _ in 0..rounds {
            let sent = demand.min(limiter.limit());
            for _ in 0..sent {
                // The rest of the demand waits a round trip or more.
                let waited = if demand > sent {
                    rtt * u32::try_from(demand.div_ceil(sent)).unwrap()
                } else {
                    Duration::ZERO
                };
                limiter.on_send(waited, QUEUE_WAIT, demand);
            }
            *now += rtt;
            for _ in 0..sent {
                limiter.on_response(rtt, *now);
            }
        }
    }

    #[test]
    fn grows_while_response_times_stay_flat_and_demand_is_there() {
        let mut now = Instant::now();
        let mut l = Limiter::new(64, now);
        run(&mut l, &mut now, 50, RTT, 100);
        assert_eq!(l.limit(), 50, "it reached what the demand needs");
        run(&mut l, &mut now, 50, RTT, 100);
        assert_eq!(l.limit(), 50, "no growth beyond the demand");
    }

    #[test]
    fn it_doubles_up_to_the_demand_until_a_sign_it_is_too_high() {
        let mut now = Instant::now();
        let mut l = Limiter::new(64, now);
        run(&mut l, &mut now, 50, RTT, 6);
        assert_eq!(l.limit(), 50, "1, 2, 4, 8, 16, 32, then what waited");
        l.on_overload(now);
        assert_eq!(l.limit(), 25);
        run(&mut l, &mut now, 50, RTT, 3);
        assert_eq!(l.limit(), 28, "one by one after an overload");
    }

    #[test]
    fn lingered_lines_grow_it_one_by_one() {
        let mut now = Instant::now();
        let mut l = Limiter::new(64, now);
        let patience = Duration::from_millis(100);
        for _ in 0..6 {
            for _ in 0..l.limit() {
                l.on_send(patience, patience, 0);
            }
            now += RTT;
            for _ in 0..l.limit() {
                l.on_response(RTT, now);
            }
        }
        assert_eq!(l.limit(), 7, "no slow start");
    }

    #[test]
    fn lingered_lines_that_go_in_milliseconds_one_at_a_time_do_not_grow_it() {
        let mut now = Instant::now();
        let mut l = Limiter::new(64, now);
        let rtt = Duration::from_micros(300);
        let patience = Duration::from_millis(100);
        for _ in 0..100 {
            // 100 files' batches due together, one after the other: the
            // last waited 30 ms.
            for i in 0..100 {
                l.on_send(rtt * i, patience, 0);
                now += rtt;
                l.on_response(rtt, now);
            }
        }
        assert_eq!(l.limit(), 1);
    }

    #[test]
    fn requests_queueing_at_the_intake_stop_the_growth() {
        // On loopback, an intake that takes 300 µs a request and serves two
        // at once: beyond two in flight, requests only wait there longer.
        let mut now = Instant::now();
        let mut l = Limiter::new(64, now);
        let mut highest = 0;
        for round in 0..10_000 {
            let in_flight = l.limit();
            if round >= 100 {
                // Past slow start's one doubling too many.
                highest = highest.max(in_flight);
            }
            let took = Duration::from_micros(300 * in_flight.div_ceil(2) as u64);
            for _ in 0..in_flight {
                l.on_send(QUEUE_WAIT, QUEUE_WAIT, in_flight * 2);
            }
            now += took.max(MIN_WINDOW);
            for _ in 0..in_flight {
                l.on_response(took, now);
            }
        }
        assert!((2..=8).contains(&highest), "it grew to {highest}");
    }

    #[test]
    fn never_grows_past_its_cap() {
        let mut now = Instant::now();
        let mut l = Limiter::new(8, now);
        run(&mut l, &mut now, 100, RTT, 100);
        assert_eq!(l.limit(), 8);
    }

    #[test]
    fn overload_halves_it_down_to_one() {
        let mut now = Instant::now();
        let mut l = Limiter::new(64, now);
        run(&mut l, &mut now, 40, RTT, 60);
        assert_eq!(l.limit(), 40);
        l.on_overload(now);
        assert_eq!(l.limit(), 20);
        // Every request in flight answers 429: the limit falls to 1.
        for _ in 0..19 {
            l.on_overload(now);
        }
        assert_eq!(l.limit(), 1);
    }

    #[test]
    fn climbing_response_times_shrink_it_then_it_grows_at_the_new_level() {
        let mut now = Instant::now();
        let mut l = Limiter::new(64, now);
        run(&mut l, &mut now, 30, Duration::from_millis(20), 200);
        assert_eq!(l.limit(), 30);
        let slow = Duration::from_millis(500);
        run(&mut l, &mut now, 30, slow, 3);
        let lowest = l.limit();
        assert!(lowest < 30, "the limit did not follow the climb: {lowest}");
        // The slower level becomes the norm, and the limit grows again.
        run(&mut l, &mut now, 30, slow, 200);
        assert_eq!(l.limit(), 30);
    }
}
