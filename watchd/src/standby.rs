//! The warm standby, on the `watchd-process` thread (SPEC §4 "High
//! availability").
//!
//! A standby watches like the leader and keeps the same uid → fingerprint
//! map (the process thread handles every message as usual), but its
//! records go nowhere: the process thread asks [`Standby::role`] once per
//! message and drops them. It remembers the deletions among them, as
//! `delete` records of the object's identity only (what a relist's
//! `delete` carries), for the window in which an old leader may have seen a
//! deletion without shipping it: a lease duration (the others wait that
//! long after they last saw it renew) plus the renew deadline (it may have
//! gone on that long after its last renewal).
//!
//! On taking over, the new leader sends those deletions first (duplicates
//! of what the old leader shipped are harmless; a missed one is not), then
//! its snapshot: the kube thread restarts every watcher when the term
//! begins, and the process thread marks every known set to treat its next
//! list as a first one ([`crate::relist::Known::resync`]): every listed
//! object is sent as `initapply`, and an object the map knew that the list
//! no longer has (deleted between the old watches and the new list) as
//! `delete`. A relist rather than the map, because the map holds hashes,
//! not objects. Deletions seen after the term began ship as usual.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use serde_json::{Map, Value};

use crate::lanes::{CreditPool, PerRoute, Records};
use crate::leader::Leadership;
use crate::resources::Route;

/// What the process thread does with one message's records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Not the leader (yet): drop them (deletions are remembered).
    Standby,
    /// The term just began: send the remembered deletions and resync,
    /// then ship.
    Promoted,
    /// The leader: ship.
    Leader,
    /// The term is over: drop them; the process is exiting.
    Fenced,
}

impl Role {
    /// Whether this message's records go to the lanes.
    pub fn ships(self) -> bool {
        matches!(self, Role::Promoted | Role::Leader)
    }
}

#[derive(Debug)]
struct Remembered {
    at: Instant,
    route: Route,
    record: Vec<u8>,
}

/// The standby's state on the process thread.
#[derive(Debug)]
pub struct Standby {
    gate: Leadership,
    window: Duration,
    led: bool,
    deletes: VecDeque<Remembered>,
    /// Credits for the remembered deletions handed to the lanes.
    credits: CreditPool,
}

impl Standby {
    /// Remembers deletions for `window` (see the module docs).
    pub fn new(gate: Leadership, window: Duration, credits: CreditPool) -> Standby {
        Standby {
            gate,
            window,
            led: false,
            deletes: VecDeque::new(),
            credits,
        }
    }

    /// Reads the gate, once per message.
    pub fn role(&mut self) -> Role {
        if self.gate.is_leading() {
            if self.led {
                Role::Leader
            } else {
                self.led = true;
                Role::Promoted
            }
        } else if self.led {
            Role::Fenced
        } else {
            Role::Standby
        }
    }

    /// A standby's records: dropped, the deletions among them remembered.
    pub fn drop_records(&mut self, route: Route, records: Vec<Vec<u8>>) {
        if self.led {
            return;
        }
        let now = Instant::now();
        for record in records {
            if let Some(record) = identity_delete(&record) {
                self.deletes.push_back(Remembered {
                    at: now,
                    route,
                    record,
                });
            }
        }
        self.forget_before(now);
    }

    /// The deletions of the window, oldest first, by route: what the new
    /// leader sends before anything else.
    pub fn take_window(&mut self) -> Vec<(Route, Vec<Vec<u8>>)> {
        self.forget_before(Instant::now());
        let mut by_route: Vec<(Route, Vec<Vec<u8>>)> = Vec::new();
        for d in self.deletes.drain(..) {
            match by_route.iter_mut().find(|(r, _)| *r == d.route) {
                Some((_, records)) => records.push(d.record),
                None => by_route.push((d.route, vec![d.record])),
            }
        }
        by_route
    }

    /// On [`Role::Promoted`]: the window's deletions go to their lanes,
    /// before anything else. False when a lane is closed (shutting down).
    pub fn hand_over(&mut self, lanes: &PerRoute<Sender<Records>>) -> bool {
        let window = self.take_window();
        let count: usize = window.iter().map(|(_, records)| records.len()).sum();
        log::info!(
            "leading: sending first the {count} deletions seen in the last {:?} (the old leader may not have shipped them), then every object as initapply",
            self.window
        );
        for (route, records) in window {
            // The lanes are empty (a standby hands nothing on): no wait.
            let credit = self.credits.take_blocking(route);
            if lanes.get(route).send(Records { records, credit }).is_err() {
                return false;
            }
        }
        true
    }

    /// Deletions remembered now.
    pub fn remembered(&self) -> usize {
        self.deletes.len()
    }

    fn forget_before(&mut self, now: Instant) {
        while self
            .deletes
            .front()
            .is_some_and(|d| now.saturating_duration_since(d.at) > self.window)
        {
            self.deletes.pop_front();
        }
    }
}

/// A `delete` record cut down to the object's identity (`apiVersion`,
/// `kind`, `metadata.name`/`namespace`/`uid`), keeping everything before
/// its `json` (timestamp, event type, sink fields); `None` for a record
/// that is not a `delete`. A record watchd made always ends with its
/// `json`.
fn identity_delete(record: &[u8]) -> Option<Vec<u8>> {
    let head = &record[..record.len().min(96)];
    find(head, br#""event_type":"delete""#)?;
    const JSON: &[u8] = br#","json":"#;
    let start = find(record, JSON)? + JSON.len();
    let end = record.len().checked_sub(1).filter(|&e| e > start)?;
    let Ok(object) = serde_json::from_slice::<Value>(&record[start..end]) else {
        // Unexpected: keep it whole.
        return Some(record.to_vec());
    };
    let mut metadata = Map::new();
    for field in ["name", "namespace", "uid"] {
        if let Some(v) = object.pointer(&format!("/metadata/{field}")) {
            metadata.insert(field.into(), v.clone());
        }
    }
    let mut identity = Map::new();
    for field in ["apiVersion", "kind"] {
        if let Some(v) = object.get(field) {
            identity.insert(field.into(), v.clone());
        }
    }
    identity.insert("metadata".into(), Value::Object(metadata));
    let mut out = record[..start].to_vec();
    serde_json::to_writer(&mut out, &identity).expect("a Value serializes into a Vec");
    out.push(b'}');
    Some(out)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::leader::LeaderMetrics;
    use serde_json::json;

    fn credits() -> CreditPool {
        crate::lanes::channels(8, 8).events.credit_pool()
    }

    fn record(event_type: &str, name: &str) -> Vec<u8> {
        format!(
            r#"{{"timestamp":1700000000,"event_type":"{event_type}","json":{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"{name}","namespace":"ns","uid":"u-{name}","labels":{{"a":"b"}}}},"spec":{{"containers":[]}}}}}}"#
        )
        .into_bytes()
    }

    #[test]
    fn a_standby_remembers_deletions_only_by_identity_and_hands_them_over_once() {
        let gate = Leadership::standby(LeaderMetrics::default());
        let mut s = Standby::new(gate.clone(), Duration::from_secs(60), credits());
        assert_eq!(s.role(), Role::Standby);
        s.drop_records(
            Route::Resources,
            vec![
                record("apply", "a"),
                record("delete", "b"),
                record("initapply", "c"),
            ],
        );
        s.drop_records(Route::Events, vec![record("delete", "e")]);
        s.drop_records(Route::Resources, vec![record("delete", "d")]);
        assert_eq!(s.remembered(), 3);

        assert!(gate.begin(Instant::now() + Duration::from_secs(5)));
        assert_eq!(s.role(), Role::Promoted);
        assert!(Role::Promoted.ships());
        let window = s.take_window();
        assert_eq!(window.len(), 2);
        let (route, records) = &window[0];
        assert_eq!(*route, Route::Resources);
        let parsed: Vec<Value> = records
            .iter()
            .map(|r| serde_json::from_slice(r).expect("JSON"))
            .collect();
        assert_eq!(
            parsed[0],
            json!({"timestamp": 1700000000, "event_type": "delete", "json": {
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "b", "namespace": "ns", "uid": "u-b"}}})
        );
        assert_eq!(parsed[1]["json"]["metadata"]["name"], "d");
        assert_eq!(window[1].0, Route::Events);
        assert_eq!(s.role(), Role::Leader);
        assert!(s.take_window().is_empty());

        gate.end("lost");
        assert_eq!(s.role(), Role::Fenced);
        assert!(!Role::Fenced.ships());
    }

    #[test]
    fn deletions_older_than_the_window_are_forgotten() {
        let gate = Leadership::standby(LeaderMetrics::default());
        let mut s = Standby::new(gate, Duration::from_millis(30), credits());
        s.drop_records(Route::Resources, vec![record("delete", "old")]);
        std::thread::sleep(Duration::from_millis(50));
        s.drop_records(Route::Resources, vec![record("delete", "new")]);
        let window = s.take_window();
        assert_eq!(window.len(), 1);
        assert_eq!(window[0].1.len(), 1);
        let r: Value = serde_json::from_slice(&window[0].1[0]).expect("JSON");
        assert_eq!(r["json"]["metadata"]["name"], "new");
    }

    #[test]
    fn sink_fields_before_the_object_are_kept() {
        let r = br#"{"timestamp":1,"event_type":"delete","otlp":{"type":"DELETED","resource":"pods","observed":5},"json":{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p","uid":"u"},"status":{}}}"#;
        let cut = identity_delete(r).expect("a delete");
        assert_eq!(
            String::from_utf8(cut).expect("UTF-8"),
            r#"{"timestamp":1,"event_type":"delete","otlp":{"type":"DELETED","resource":"pods","observed":5},"json":{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p","uid":"u"}}}"#
        );
        assert!(identity_delete(&record("apply", "x")).is_none());
    }
}
