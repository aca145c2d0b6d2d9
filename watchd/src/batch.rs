//! Groups one route's serialized records into JSON-array batches (SPEC §1,
//! §2 `WATCHD_BATCH_MAX_BYTES`, `WATCHD_BATCH_LINGER_MS`).
//!
//! A batch is flushed when the next record would take it over the size
//! limit, or when its oldest record has waited the linger time. A record
//! too large for any request (the intake reads at most 1 MiB of body) is
//! refused; one larger than the limit but within 1 MiB goes alone.

use std::time::{Duration, Instant};

use crate::resources::Route;

/// The most body the intake's JSON routes read (SPEC §1).
pub const INTAKE_JSON_LIMIT: usize = 1024 * 1024;

/// Records ready to be posted to one route.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batch {
    pub route: Route,
    /// Each record serialized as a JSON object.
    pub records: Vec<Vec<u8>>,
}

impl Batch {
    /// The request body: `[record,record,...]`.
    pub fn body(&self) -> Vec<u8> {
        let mut body = Vec::with_capacity(array_len(&self.records));
        body.push(b'[');
        for (i, record) in self.records.iter().enumerate() {
            if i > 0 {
                body.push(b',');
            }
            body.extend_from_slice(record);
        }
        body.push(b']');
        body
    }

    /// Splits into two halves (for a 413 or a 4xx); `None` for a batch of
    /// one record.
    pub fn split(mut self) -> Option<(Batch, Batch)> {
        if self.records.len() < 2 {
            return None;
        }
        let second = Batch {
            route: self.route,
            records: self.records.split_off(self.records.len() / 2),
        };
        Some((self, second))
    }
}

/// Length of `[a,b,c]` for these records.
fn array_len(records: &[Vec<u8>]) -> usize {
    2 + records.iter().map(Vec::len).sum::<usize>() + records.len().saturating_sub(1)
}

#[derive(Debug)]
struct Pending {
    records: Vec<Vec<u8>>,
    /// Body length if sent now.
    bytes: usize,
    since: Instant,
}

/// A record refused because no request could carry it.
#[derive(Debug, PartialEq, Eq)]
pub struct TooLarge {
    pub bytes: usize,
}

/// The batch in the making of one route.
#[derive(Debug)]
pub struct Batcher {
    route: Route,
    max_bytes: usize,
    linger: Duration,
    pending: Option<Pending>,
}

impl Batcher {
    /// Batches to `route` of at most `max_bytes` of body (capped at
    /// [`INTAKE_JSON_LIMIT`]), flushed after `linger`.
    pub fn new(route: Route, max_bytes: usize, linger: Duration) -> Self {
        Batcher {
            route,
            max_bytes: max_bytes.clamp(64, INTAKE_JSON_LIMIT),
            linger,
            pending: None,
        }
    }

    pub fn route(&self) -> Route {
        self.route
    }

    /// Adds a record; returns the batches to send now (the batch it did not
    /// fit in, and/or the record alone when it exceeds the size limit), in
    /// order.
    pub fn push(&mut self, record: Vec<u8>, now: Instant) -> Result<Vec<Batch>, TooLarge> {
        let alone = record.len() + 2;
        if alone > INTAKE_JSON_LIMIT {
            return Err(TooLarge {
                bytes: record.len(),
            });
        }
        let mut ready = Vec::new();
        if let Some(p) = &self.pending
            && p.bytes + 1 + record.len() > self.max_bytes
        {
            ready.extend(self.drain());
        }
        if alone > self.max_bytes {
            ready.push(self.batch(vec![record]));
            return Ok(ready);
        }
        let p = self.pending.get_or_insert_with(|| Pending {
            records: Vec::new(),
            bytes: 1,
            since: now,
        });
        p.bytes += record.len() + 1;
        p.records.push(record);
        Ok(ready)
    }

    /// The batch, if its oldest record has waited `linger` or more.
    pub fn due(&mut self, now: Instant) -> Option<Batch> {
        let due = self.next_deadline().is_some_and(|deadline| now >= deadline);
        if due { self.drain() } else { None }
    }

    /// When the batch becomes due, if one is pending.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.pending.as_ref().map(|p| p.since + self.linger)
    }

    /// The pending batch, due or not.
    pub fn drain(&mut self) -> Option<Batch> {
        let p = self.pending.take()?;
        Some(self.batch(p.records))
    }

    /// Records waiting.
    pub fn pending_records(&self) -> usize {
        self.pending.as_ref().map_or(0, |p| p.records.len())
    }

    fn batch(&self, records: Vec<Vec<u8>>) -> Batch {
        Batch {
            route: self.route,
            records,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(n: usize) -> Vec<u8> {
        // A JSON string of n bytes including quotes.
        let mut r = vec![b'"'];
        r.extend(std::iter::repeat_n(b'x', n - 2));
        r.push(b'"');
        r
    }

    #[test]
    fn flushes_before_exceeding_the_size_and_bodies_stay_under_it() {
        let mut b = Batcher::new(Route::Events, 100, Duration::from_secs(1));
        let now = Instant::now();
        let mut sent = Vec::new();
        for _ in 0..10 {
            sent.extend(b.push(rec(30), now).expect("fits"));
        }
        sent.extend(b.drain());
        let total: usize = sent.iter().map(|s| s.records.len()).sum();
        assert_eq!(total, 10);
        for batch in &sent {
            let body = batch.body();
            assert!(body.len() <= 100, "{}", body.len());
            let parsed: Vec<String> = serde_json::from_slice(&body).expect("a JSON array");
            assert_eq!(parsed.len(), batch.records.len());
        }
        // 3 records of 30 = 2 + 90 + 2 = 94 bytes; a 4th would be 125.
        assert_eq!(sent[0].records.len(), 3);
    }

    #[test]
    fn linger_makes_batches_due() {
        let mut b = Batcher::new(Route::Events, 1000, Duration::from_millis(500));
        let t0 = Instant::now();
        assert_eq!(b.next_deadline(), None);
        b.push(rec(10), t0).expect("fits");
        b.push(rec(10), t0 + Duration::from_millis(300))
            .expect("fits");
        assert_eq!(b.next_deadline(), Some(t0 + Duration::from_millis(500)));
        assert_eq!(b.due(t0 + Duration::from_millis(499)), None);
        let due = b.due(t0 + Duration::from_millis(500)).expect("due");
        assert_eq!(due.route, Route::Events);
        assert_eq!(due.records.len(), 2);
        assert_eq!(b.pending_records(), 0);
    }

    #[test]
    fn oversized_records_go_alone_or_are_refused() {
        let mut b = Batcher::new(Route::Events, 100, Duration::from_secs(1));
        let now = Instant::now();
        b.push(rec(10), now).expect("fits");
        let out = b.push(rec(500), now).expect("within 1 MiB");
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].records, [rec(10)]);
        assert_eq!(out[1].records, [rec(500)]);
        assert_eq!(
            b.push(rec(INTAKE_JSON_LIMIT), now),
            Err(TooLarge {
                bytes: INTAKE_JSON_LIMIT
            })
        );
        assert!(b.push(rec(INTAKE_JSON_LIMIT - 2), now).is_ok());
    }

    #[test]
    fn split_halves_keep_the_route_and_order() {
        let batch = Batch {
            route: Route::Events,
            records: vec![rec(3), rec(4), rec(5)],
        };
        let (a, b) = batch.split().expect("three records");
        assert_eq!(a.records, [rec(3)]);
        assert_eq!(b.records, [rec(4), rec(5)]);
        assert_eq!(b.route, Route::Events);
        assert!(a.split().is_none());
    }
}
