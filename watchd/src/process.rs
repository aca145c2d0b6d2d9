//! The `watchd-process` thread's work: turns watch events into records
//! (SPEC §1, §4), ready to batch.
//!
//! For each object: fill in `apiVersion`/`kind` (list items lack them),
//! strip, fingerprint, decide with the watcher's [`Known`] set whether it
//! makes a record, and serialize the record. Pure code: the thread around
//! it only moves messages ([`crate::daemon`]).
//!
//! For the OTLP sink a record also carries what the intake's format has no
//! room for ([`OtlpFields`]): the watch type (`ADDED` for an object watchd
//! did not know, `MODIFIED` for one it knew, `DELETED`), the resource's
//! plural and the time in nanoseconds.

use std::collections::HashMap;

use serde_json::{Map, Value, json};

use crate::fingerprint::fingerprint;
use crate::kube_thread::{Change, WatchMsg};
use crate::metrics::Metrics;
use crate::relist::{EventType, Known, Seen, Vanished};
use crate::resources::{Route, Target};
use crate::strip::strip;

/// A serialized record and its route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub route: Route,
    /// `{"timestamp":…,"event_type":…,"json":{…}}`
    pub bytes: Vec<u8>,
}

/// Turns watch messages into records; holds every watcher's [`Known`] set.
#[derive(Debug, Default)]
pub struct Processor {
    known: HashMap<String, Known>,
    metrics: Metrics,
    /// Records carry [`OtlpFields`] (the sink is OTLP).
    otlp: bool,
}

/// The watch type of a record, as the Collector's `k8sobjects` receiver
/// names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WatchType {
    Added,
    Modified,
    Deleted,
}

impl WatchType {
    pub fn name(self) -> &'static str {
        match self {
            WatchType::Added => "ADDED",
            WatchType::Modified => "MODIFIED",
            WatchType::Deleted => "DELETED",
        }
    }
}

/// What a record carries for the OTLP sink only, as `"otlp":{"type",
/// "resource","observed"}` (read by `shared::otlp::objects`).
#[derive(Clone, Copy, Debug)]
pub struct OtlpFields<'a> {
    pub watch_type: WatchType,
    /// The resource's plural: `k8s.resource.name`.
    pub resource: &'a str,
    /// When the record was made, unix nanoseconds.
    pub observed: u64,
}

impl Processor {
    /// `otlp`: the records are for the OTLP sink and carry [`OtlpFields`];
    /// otherwise they are exactly the intake's (SPEC §1).
    pub fn new(metrics: Metrics, otlp: bool) -> Self {
        Processor {
            known: HashMap::new(),
            metrics,
            otlp,
        }
    }

    /// Handles one message; `emit` receives the records it makes, in order.
    /// `now` is when (unix nanoseconds): the records' `timestamp` is its
    /// seconds.
    pub fn handle(&mut self, msg: WatchMsg, now: u64, emit: &mut impl FnMut(Record)) {
        match msg {
            WatchMsg::ListStarted(target) => self.known_of(&target).list_started(),
            WatchMsg::ListDone(target) => {
                let gone = self.known_of(&target).list_done();
                self.vanished(&target, gone, now, emit);
            }
            WatchMsg::Stopped(target) => {
                if let Some(mut known) = self.known.remove(&target.name()) {
                    let gone = known.drain();
                    self.vanished(&target, gone, now, emit);
                }
            }
            WatchMsg::Object {
                target,
                change,
                object,
            } => {
                let mut value = match object.to_value() {
                    Ok(v) => v,
                    Err(e) => {
                        log::error!("{}: cannot parse an object: {e}", target.name());
                        return;
                    }
                };
                drop(object);
                if let Some(record) = self.object(&target, change, &mut value, now) {
                    emit(record);
                }
            }
        }
    }

    /// Objects known over all watchers.
    pub fn known_objects(&self) -> usize {
        self.known.values().map(Known::len).sum()
    }

    /// This replica just became the leader: every watcher's next list
    /// ships its whole snapshot ([`Known::resync`], [`crate::standby`]).
    pub fn resync(&mut self) {
        self.known.values_mut().for_each(Known::resync);
    }

    fn known_of(&mut self, target: &Target) -> &mut Known {
        self.known.entry(target.name()).or_default()
    }

    fn object(
        &mut self,
        target: &Target,
        change: Change,
        value: &mut Value,
        now: u64,
    ) -> Option<Record> {
        let map = value.as_object_mut()?;
        fill_type(map, target);
        strip(value);
        let uid = value
            .pointer("/metadata/uid")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let namespace = value.pointer("/metadata/namespace").and_then(Value::as_str);
        let name = value
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        // Objects without a uid (never on a real server) are keyed by name.
        let key = if uid.is_empty() {
            format!("{}/{}", namespace.unwrap_or_default(), name)
        } else {
            uid.to_string()
        };
        let known = self.known.entry(target.name()).or_default();
        let was_known = known.contains(&key);
        let event_type = match change {
            Change::Deleted => Some(known.deleted(&key)),
            Change::Listed | Change::Applied => {
                let seen = Seen {
                    uid: &key,
                    namespace,
                    name,
                    fingerprint: fingerprint(value),
                };
                let event_type = match change {
                    Change::Listed => known.listed(seen),
                    _ => known.applied(seen),
                };
                if event_type.is_none() {
                    self.metrics
                        .skipped_duplicates
                        .get_or_create(&[("route", target.route.name())])
                        .inc();
                }
                event_type
            }
        }?;
        // An apply of an object watchd did not know is its creation.
        let watch_type = match event_type {
            EventType::InitApply => WatchType::Added,
            EventType::Apply if was_known => WatchType::Modified,
            EventType::Apply => WatchType::Added,
            EventType::Delete => WatchType::Deleted,
        };
        Some(self.record(target, event_type, watch_type, value, now))
    }

    fn vanished(
        &mut self,
        target: &Target,
        gone: Vec<Vanished>,
        now: u64,
        emit: &mut impl FnMut(Record),
    ) {
        for v in gone {
            let mut metadata = Map::new();
            metadata.insert("name".into(), v.name.into());
            if let Some(ns) = v.namespace {
                metadata.insert("namespace".into(), ns.into());
            }
            metadata.insert("uid".into(), v.uid.into());
            let object = json!({
                "apiVersion": target.api_version(),
                "kind": target.kind,
                "metadata": metadata,
            });
            emit(self.record(target, EventType::Delete, WatchType::Deleted, &object, now));
        }
    }

    fn record(
        &self,
        target: &Target,
        event_type: EventType,
        watch_type: WatchType,
        object: &Value,
        now: u64,
    ) -> Record {
        let route = target.route;
        self.metrics
            .records
            .get_or_create(&[("route", route.name()), ("event_type", event_type.name())])
            .inc();
        let otlp = self.otlp.then_some(OtlpFields {
            watch_type,
            resource: &target.plural,
            observed: now,
        });
        Record {
            route,
            bytes: record_bytes(event_type, object, now / 1_000_000_000, otlp),
        }
    }
}

/// `{"timestamp":now,"event_type":…,"json":object}` (`now` in unix
/// seconds), with `"otlp":{"type":…,"resource":…,"observed":…}` before
/// `json` when `otlp` is given.
pub fn record_bytes(
    event_type: EventType,
    object: &Value,
    now: u64,
    otlp: Option<OtlpFields>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(b"{\"timestamp\":");
    out.extend_from_slice(now.to_string().as_bytes());
    out.extend_from_slice(b",\"event_type\":\"");
    out.extend_from_slice(event_type.name().as_bytes());
    out.push(b'"');
    if let Some(o) = otlp {
        out.extend_from_slice(b",\"otlp\":{\"type\":\"");
        out.extend_from_slice(o.watch_type.name().as_bytes());
        out.extend_from_slice(b"\",\"resource\":");
        serde_json::to_writer(&mut out, o.resource).expect("a str serializes into a Vec");
        out.extend_from_slice(b",\"observed\":");
        out.extend_from_slice(o.observed.to_string().as_bytes());
        out.push(b'}');
    }
    out.extend_from_slice(b",\"json\":");
    serde_json::to_writer(&mut out, object).expect("a Value serializes into a Vec");
    out.push(b'}');
    out
}

/// Objects of a list come without `apiVersion` and `kind`; the backend
/// drops records lacking them (SPEC §1).
fn fill_type(map: &mut Map<String, Value>, target: &Target) {
    let missing = |v: Option<&Value>| v.and_then(Value::as_str).is_none_or(str::is_empty);
    if missing(map.get("apiVersion")) {
        map.insert("apiVersion".into(), target.api_version().into());
    }
    if missing(map.get("kind")) {
        map.insert("kind".into(), target.kind.clone().into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raw::RawObject;
    use crate::resources::parse_resources;
    use std::sync::Arc;

    fn pod(uid: &str, rv: &str, image: &str, with_types: bool) -> Box<RawObject> {
        let mut v = json!({
            "metadata": {"name": format!("p-{uid}"), "namespace": "ns", "uid": uid, "resourceVersion": rv,
                "managedFields": [{"manager": "m", "operation": "Update", "apiVersion": "v1", "time": "2024-01-01T00:00:00Z", "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {}}}]},
            "spec": {"containers": [{"name": "c", "image": image}]}
        });
        if with_types {
            v["apiVersion"] = json!("v1");
            v["kind"] = json!("Pod");
        }
        Box::new(RawObject::from_value(&v))
    }

    /// Unix nanoseconds; the records' `timestamp` is 1700000000.
    const NOW: u64 = 1_700_000_000_500_000_000;

    fn run(p: &mut Processor, msgs: Vec<WatchMsg>) -> Vec<Value> {
        let mut out = Vec::new();
        for msg in msgs {
            p.handle(msg, NOW, &mut |r: Record| {
                assert_eq!(r.route, Route::Resources);
                out.push(serde_json::from_slice(&r.bytes).expect("a JSON record"));
            });
        }
        out
    }

    #[test]
    fn list_items_get_types_and_are_stripped_and_relists_diff() {
        let target = Arc::new(parse_resources("pods").expect("valid").remove(0));
        let obj = |change, o| WatchMsg::Object {
            target: target.clone(),
            change,
            object: o,
        };
        let mut p = Processor::new(Metrics::default(), false);
        let out = run(
            &mut p,
            vec![
                WatchMsg::ListStarted(target.clone()),
                obj(Change::Listed, pod("a", "1", "img:1", false)),
                obj(Change::Listed, pod("b", "1", "img:1", false)),
                WatchMsg::ListDone(target.clone()),
                obj(Change::Applied, pod("a", "2", "img:1", true)),
                obj(Change::Applied, pod("a", "3", "img:2", true)),
            ],
        );
        assert_eq!(out.len(), 3, "{out:?}");
        assert_eq!(out[0]["event_type"], "initapply");
        assert_eq!(out[0]["timestamp"], 1700000000);
        assert_eq!(out[0]["json"]["apiVersion"], "v1");
        assert_eq!(out[0]["json"]["kind"], "Pod");
        assert!(
            out[0]["json"]["metadata"]["managedFields"][0]
                .get("fieldsV1")
                .is_none()
        );
        assert_eq!(
            out[0]["json"]["metadata"]["managedFields"][0]["manager"],
            "m"
        );
        assert_eq!(out[2]["event_type"], "apply");
        assert_eq!(out[2]["json"]["spec"]["containers"][0]["image"], "img:2");

        // A relist: a is unchanged, b vanished, c is new.
        let out = run(
            &mut p,
            vec![
                WatchMsg::ListStarted(target.clone()),
                obj(Change::Listed, pod("a", "4", "img:2", false)),
                obj(Change::Listed, pod("c", "4", "img:1", false)),
                WatchMsg::ListDone(target.clone()),
            ],
        );
        let summary: Vec<(String, String)> = out
            .iter()
            .map(|r| {
                (
                    r["event_type"].as_str().unwrap_or_default().to_string(),
                    r["json"]["metadata"]["uid"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [("apply".into(), "c".into()), ("delete".into(), "b".into())]
        );
        assert_eq!(out[1]["json"]["kind"], "Pod");
        assert_eq!(out[1]["json"]["metadata"]["name"], "p-b");
        assert_eq!(out[1]["json"]["metadata"]["namespace"], "ns");
    }

    #[test]
    fn a_stopped_watcher_reports_its_objects_deleted() {
        let target = Arc::new(parse_resources("pods").expect("valid").remove(0));
        let mut p = Processor::new(Metrics::default(), false);
        let out = run(
            &mut p,
            vec![
                WatchMsg::ListStarted(target.clone()),
                WatchMsg::Object {
                    target: target.clone(),
                    change: Change::Listed,
                    object: pod("a", "1", "i", false),
                },
                WatchMsg::ListDone(target.clone()),
                WatchMsg::Object {
                    target: target.clone(),
                    change: Change::Deleted,
                    object: pod("a", "2", "i", true),
                },
                WatchMsg::Object {
                    target: target.clone(),
                    change: Change::Applied,
                    object: pod("b", "3", "i", true),
                },
                WatchMsg::Stopped(target.clone()),
            ],
        );
        let types: Vec<&str> = out
            .iter()
            .map(|r| r["event_type"].as_str().unwrap_or_default())
            .collect();
        assert_eq!(types, ["initapply", "delete", "apply", "delete"]);
        assert_eq!(p.known_objects(), 0);
    }

    #[test]
    fn records_for_the_otlp_sink_carry_the_watch_type_the_plural_and_the_time() {
        let target = Arc::new(parse_resources("pods").expect("valid").remove(0));
        let obj = |change, o| WatchMsg::Object {
            target: target.clone(),
            change,
            object: o,
        };
        let mut p = Processor::new(Metrics::default(), true);
        let out = run(
            &mut p,
            vec![
                WatchMsg::ListStarted(target.clone()),
                obj(Change::Listed, pod("a", "1", "img:1", false)),
                obj(Change::Listed, pod("b", "1", "img:1", false)),
                WatchMsg::ListDone(target.clone()),
                obj(Change::Applied, pod("a", "2", "img:2", true)),
                obj(Change::Applied, pod("c", "3", "img:1", true)),
                obj(Change::Deleted, pod("c", "4", "img:1", true)),
                // A relist: b vanished, d is new, a changed.
                WatchMsg::ListStarted(target.clone()),
                obj(Change::Listed, pod("a", "5", "img:3", false)),
                obj(Change::Listed, pod("d", "5", "img:1", false)),
                WatchMsg::ListDone(target.clone()),
            ],
        );
        let summary: Vec<(&str, &str, &str)> = out
            .iter()
            .map(|r| {
                (
                    r["event_type"].as_str().unwrap_or_default(),
                    r["otlp"]["type"].as_str().unwrap_or_default(),
                    r["json"]["metadata"]["uid"].as_str().unwrap_or_default(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("initapply", "ADDED", "a"),
                ("initapply", "ADDED", "b"),
                ("apply", "MODIFIED", "a"),
                ("apply", "ADDED", "c"),
                ("delete", "DELETED", "c"),
                ("apply", "MODIFIED", "a"),
                ("apply", "ADDED", "d"),
                ("delete", "DELETED", "b"),
            ]
        );
        for r in &out {
            assert_eq!(r["otlp"]["resource"], "pods");
            assert_eq!(r["otlp"]["observed"], NOW);
            assert_eq!(r["timestamp"], 1_700_000_000);
        }
    }

    #[test]
    fn records_for_the_intake_are_exactly_the_intakes() {
        let target = Arc::new(parse_resources("pods").expect("valid").remove(0));
        let mut p = Processor::new(Metrics::default(), false);
        let mut out = Vec::new();
        p.handle(
            WatchMsg::Object {
                target: target.clone(),
                change: Change::Applied,
                object: pod("a", "1", "i", true),
            },
            NOW,
            &mut |r: Record| out.push(r.bytes),
        );
        assert_eq!(out.len(), 1);
        assert!(
            out[0].starts_with(br#"{"timestamp":1700000000,"event_type":"apply","json":{"#),
            "{}",
            String::from_utf8_lossy(&out[0])
        );
    }
}
