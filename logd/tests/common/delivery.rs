//! What the test intake received, counted against what was written: every
//! test line is unique, so losses and duplicates are counted exactly.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use testkit::intake::Intake;

/// The message of a received stream line: what follows `<ts> <stream> F `.
/// Panics on a line that is not of that form (logd must never send one).
pub fn message(line: &str) -> &str {
    let (ts, rest) = line
        .split_once("Z ")
        .unwrap_or_else(|| panic!("a stream line without a `Z ` timestamp: {line:?}"));
    assert!(
        !ts.is_empty(),
        "a stream line without a timestamp: {line:?}"
    );
    let (_, message) = rest
        .split_once(" F ")
        .unwrap_or_else(|| panic!("a stream line that is not an F line: {line:?}"));
    message
}

/// The messages the intake accepted, in arrival order.
pub fn messages(intake: &Intake) -> Vec<String> {
    intake
        .log_lines()
        .iter()
        .map(|line| message(line).to_owned())
        .collect()
}

/// `<prefix>-<i>` for `i` in `range`: unique test messages.
pub fn numbered(prefix: &str, range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("{prefix}-{i}")).collect()
}

/// How the received messages compare with the expected ones.
#[derive(Debug, Default)]
pub struct Tally {
    /// Expected and never received.
    pub missing: Vec<String>,
    /// Received more than once: message → times received.
    pub duplicated: BTreeMap<String, usize>,
    /// Received and not expected.
    pub unexpected: Vec<String>,
}

impl Tally {
    pub fn of(expected: &[String], received: &[String]) -> Tally {
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for m in received {
            *counts.entry(m.as_str()).or_default() += 1;
        }
        let mut tally = Tally::default();
        for m in expected {
            match counts.remove(m.as_str()) {
                None => tally.missing.push(m.clone()),
                Some(1) => {}
                Some(n) => {
                    tally.duplicated.insert(m.clone(), n);
                }
            }
        }
        tally.unexpected = counts.into_keys().map(str::to_owned).collect();
        tally.unexpected.sort();
        tally
    }

    /// Extra copies received in all (a line received 3 times counts 2).
    pub fn duplicates(&self) -> usize {
        self.duplicated.values().map(|n| n - 1).sum()
    }

    /// A short description for assertion messages.
    pub fn summary(&self) -> String {
        fn first<T: std::fmt::Debug>(items: impl Iterator<Item = T>) -> Vec<T> {
            items.take(5).collect()
        }
        format!(
            "{} missing (first: {:?}), {} duplicated (first: {:?}), {} unexpected (first: {:?})",
            self.missing.len(),
            first(self.missing.iter()),
            self.duplicated.len(),
            first(self.duplicated.iter()),
            self.unexpected.len(),
            first(self.unexpected.iter()),
        )
    }
}

/// Waits until every expected message was received at least once; panics
/// with what is missing after `timeout`. Returns the received messages.
pub fn wait_for_all(intake: &Intake, expected: &[String], timeout: Duration) -> Vec<String> {
    let deadline = Instant::now() + timeout;
    let mut checked_at = u64::MAX;
    loop {
        // Counting is cheap; comparing is done only when more arrived.
        let count = intake.log_line_count();
        if count >= expected.len() as u64 && count != checked_at {
            checked_at = count;
            let received = messages(intake);
            if Tally::of(expected, &received).missing.is_empty() {
                return received;
            }
        }
        if Instant::now() >= deadline {
            let received = messages(intake);
            panic!(
                "timed out after {timeout:?} waiting for {} lines: {}",
                expected.len(),
                Tally::of(expected, &received).summary()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Asserts that every expected message was received exactly once, and
/// nothing else.
pub fn assert_each_once(expected: &[String], received: &[String]) {
    let tally = Tally::of(expected, received);
    assert!(
        tally.missing.is_empty() && tally.duplicated.is_empty() && tally.unexpected.is_empty(),
        "each of {} lines should arrive once: {}",
        expected.len(),
        tally.summary()
    );
}
