//! The `watchd-process` thread's work: turns watch events into records
//! (SPEC §1, §4), ready to batch.
//!
//! For each object: fill in `apiVersion`/`kind` (list items lack them),
//! strip, fingerprint, decide with the watcher's [`Known`] set whether it
//! makes a record, and serialize the record. Pure code: the thread around
//! it only moves messages ([`crate::daemon`]).

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
}

impl Processor {
    pub fn new(metrics: Metrics) -> Self {
        Processor {
            known: HashMap::new(),
            metrics,
        }
    }

    /// Handles one message; `emit` receives the records it makes, in order.
    /// `now` is the records' timestamp (unix seconds).
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
                let mut value = match serde_json::to_value(&*object) {
                    Ok(v) => v,
                    Err(e) => {
                        log::error!("{}: cannot serialize an object: {e}", target.name());
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
        Some(self.record(target.route, event_type, value, now))
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
            emit(self.record(target.route, EventType::Delete, &object, now));
        }
    }

    fn record(&self, route: Route, event_type: EventType, object: &Value, now: u64) -> Record {
        self.metrics
            .records
            .get_or_create(&[("route", route.name()), ("event_type", event_type.name())])
            .inc();
        Record {
            route,
            bytes: record_bytes(event_type, object, now),
        }
    }
}

/// `{"timestamp":now,"event_type":…,"json":object}`.
pub fn record_bytes(event_type: EventType, object: &Value, now: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(b"{\"timestamp\":");
    out.extend_from_slice(now.to_string().as_bytes());
    out.extend_from_slice(b",\"event_type\":\"");
    out.extend_from_slice(event_type.name().as_bytes());
    out.extend_from_slice(b"\",\"json\":");
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
    use crate::resources::parse_resources;
    use kube::api::DynamicObject;
    use std::sync::Arc;

    fn pod(uid: &str, rv: &str, image: &str, with_types: bool) -> Box<DynamicObject> {
        let mut v = json!({
            "metadata": {"name": format!("p-{uid}"), "namespace": "ns", "uid": uid, "resourceVersion": rv,
                "managedFields": [{"manager": "m", "operation": "Update", "apiVersion": "v1", "time": "2024-01-01T00:00:00Z", "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {}}}]},
            "spec": {"containers": [{"name": "c", "image": image}]}
        });
        if with_types {
            v["apiVersion"] = json!("v1");
            v["kind"] = json!("Pod");
        }
        Box::new(serde_json::from_value(v).expect("a DynamicObject"))
    }

    fn run(p: &mut Processor, msgs: Vec<WatchMsg>) -> Vec<Value> {
        let mut out = Vec::new();
        for msg in msgs {
            p.handle(msg, 1700000000, &mut |r: Record| {
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
        let mut p = Processor::new(Metrics::default());
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
        let mut p = Processor::new(Metrics::default());
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
}
