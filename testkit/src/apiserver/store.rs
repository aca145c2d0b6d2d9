//! The objects, the global resourceVersion counter, the event history that
//! watches resume from, list snapshots for paging, and the open watches.
//!
//! Objects are kept as JSON text ([`Stored`]) and parsed when served: a
//! fixture-shaped Pod takes 5.8 KB as text, 48 KB as a `serde_json::Value`,
//! and benchmarks hold 100,000 of them.
//!
//! Everything here runs under one lock, so a write, its history entry and
//! its delivery to the open watches are one atomic step: a watch that
//! registers under the lock sees each event exactly once, either in its
//! backlog or live.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use crossbeam_channel::{Receiver, Sender};
use serde_json::{Value, json};

use super::catalog::{Catalog, ResourceId, ResourceType};
use super::lease;
use super::meta;
use super::select::Selector;
use super::status::ApiError;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One committed change. `object` is as stored (with the `apiVersion` it
/// was written at, and `metadata.resourceVersion` = `rv`).
#[derive(Debug)]
pub(crate) struct Event {
    pub kind: EventType,
    pub resource: ResourceId,
    pub object: Arc<Stored>,
    pub rv: u64,
}

/// An object as stored: its JSON text.
#[derive(Debug)]
pub(crate) struct Stored {
    json: Box<str>,
    /// Its `metadata.resourceVersion`.
    rv: u64,
}

impl Stored {
    fn new(object: &Value) -> Stored {
        Stored {
            json: object.to_string().into_boxed_str(),
            rv: object_rv(object),
        }
    }

    /// The object, parsed.
    pub fn value(&self) -> Value {
        serde_json::from_str(&self.json).expect("stored objects are JSON")
    }
}

/// What an open watch receives.
#[derive(Debug)]
pub(crate) enum Delivery {
    Event(Arc<Event>),
    /// The server ends the watch: with the final chunk (`abrupt: false`,
    /// the connection stays usable), or by closing the connection.
    End {
        abrupt: bool,
    },
}

/// Where a watch starts.
#[derive(Clone, Copy, Debug)]
pub(crate) enum WatchFrom {
    /// `resourceVersion` unset or `"0"`: synthetic ADDED events for the
    /// current objects, then changes.
    Now,
    /// Changes newer than this resourceVersion.
    After(u64),
}

/// A registered watch: its backlog and the channel of live events. The
/// channel disconnects when the watch's resource goes away (CRD deleted).
pub(crate) struct Subscription {
    pub id: u64,
    /// The resourceVersion when the watch registered.
    pub rv: u64,
    pub backlog: Vec<Arc<Event>>,
    pub events: Receiver<Delivery>,
}

/// One page of a list.
pub(crate) struct ListPage {
    pub items: Vec<Arc<Stored>>,
    pub rv: u64,
    pub continue_token: Option<String>,
    pub remaining: Option<usize>,
}

/// The full result of a paged list, kept until its last page is served, so
/// every page comes from the same resourceVersion.
struct Snapshot {
    rv: u64,
    items: Vec<Arc<Stored>>,
}

struct Watcher {
    id: u64,
    resource: ResourceId,
    tx: Sender<Delivery>,
}

/// (namespace, or "" for cluster-scoped objects; name): the real server's
/// key order, which lists follow.
type Key = (String, String);

pub(crate) struct Store {
    pub catalog: Catalog,
    rv: u64,
    objects: BTreeMap<ResourceId, BTreeMap<Key, Arc<Stored>>>,
    /// Events newer than `compacted`, in rv order.
    history: Vec<Arc<Event>>,
    compacted: u64,
    snapshots: HashMap<u64, Snapshot>,
    watchers: Vec<Watcher>,
    next_id: u64,
    /// While set, commits are not delivered to open watches.
    pub frozen: bool,
}

impl Store {
    pub fn new() -> Store {
        Store {
            catalog: Catalog::new(),
            // Start well above 0: "0" means "any version" to clients.
            rv: 1000,
            objects: BTreeMap::new(),
            history: Vec::new(),
            compacted: 0,
            snapshots: HashMap::new(),
            watchers: Vec::new(),
            next_id: 1,
            frozen: false,
        }
    }

    /// The resourceVersion of the last write.
    pub fn rv(&self) -> u64 {
        self.rv
    }

    /// Forgets the history up to now: watches and continue tokens from an
    /// older resourceVersion get 410 Expired.
    pub fn compact(&mut self) {
        self.compacted = self.rv;
        self.history.clear();
        self.snapshots.clear();
    }

    /// Ends every open watch, cleanly or by closing its connection.
    pub fn drop_watches(&mut self, abrupt: bool) {
        for w in self.watchers.drain(..) {
            let _ = w.tx.send(Delivery::End { abrupt });
        }
    }

    pub fn unsubscribe(&mut self, id: u64) {
        self.watchers.retain(|w| w.id != id);
    }

    pub fn open_watches(&self) -> usize {
        self.watchers.len()
    }

    pub fn get(
        &self,
        t: &ResourceType,
        ns: Option<&str>,
        name: &str,
    ) -> Result<Arc<Value>, ApiError> {
        self.objects
            .get(&t.id)
            .and_then(|objects| objects.get(&key(t, ns, name)))
            .map(|stored| Arc::new(stored.value()))
            .ok_or_else(|| ApiError::not_found(&t.id.group, &t.id.plural, name))
    }

    /// A page of the objects in `ns` (all namespaces if `None`) that match
    /// `selector`. With `continue`, the page comes from the snapshot the
    /// first page was taken from (and `ns`, `selector` are not looked at).
    pub fn list(
        &mut self,
        t: &ResourceType,
        ns: Option<&str>,
        selector: &Selector,
        limit: Option<usize>,
        continue_token: Option<&str>,
    ) -> Result<ListPage, ApiError> {
        let (id, offset) = match continue_token {
            Some(token) => self.decode_continue(token)?,
            None => {
                let items: Vec<Arc<Stored>> = self
                    .objects
                    .get(&t.id)
                    .into_iter()
                    .flat_map(|objects| objects.iter())
                    .filter(|((namespace, _), _)| ns.is_none_or(|ns| ns == namespace))
                    .filter(|(_, obj)| selector.is_everything() || selector.matches(&obj.value()))
                    .map(|(_, obj)| obj.clone())
                    .collect();
                if limit.is_none_or(|limit| items.len() <= limit) {
                    return Ok(ListPage {
                        items,
                        rv: self.rv,
                        continue_token: None,
                        remaining: None,
                    });
                }
                let id = self.next_id();
                self.snapshots.insert(id, Snapshot { rv: self.rv, items });
                (id, 0)
            }
        };
        let snapshot = &self.snapshots[&id];
        let end = limit.map_or(snapshot.items.len(), |l| {
            (offset + l).min(snapshot.items.len())
        });
        let items = snapshot.items[offset..end].to_vec();
        let rv = snapshot.rv;
        let remaining = snapshot.items.len() - end;
        if remaining == 0 {
            self.snapshots.remove(&id);
            return Ok(ListPage {
                items,
                rv,
                continue_token: None,
                remaining: None,
            });
        }
        let token = json!({"v": "meta.k8s.io/v1", "rv": rv, "snapshot": id, "offset": end});
        Ok(ListPage {
            items,
            rv,
            continue_token: Some(URL_SAFE_NO_PAD.encode(token.to_string())),
            remaining: Some(remaining),
        })
    }

    fn decode_continue(&self, token: &str) -> Result<(u64, usize), ApiError> {
        let bad = || ApiError::bad_request(format!("invalid continue token {token:?}"));
        let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| bad())?;
        let parsed: Value = serde_json::from_slice(&bytes).map_err(|_| bad())?;
        let field = |name: &str| parsed.get(name).and_then(Value::as_u64).ok_or_else(bad);
        let (rv, id, offset) = (field("rv")?, field("snapshot")?, field("offset")?);
        if !self.snapshots.contains_key(&id) {
            if rv < self.compacted {
                return Err(ApiError::expired(
                    "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
                ));
            }
            return Err(bad());
        }
        Ok((id, offset as usize))
    }

    /// Registers a watch on `t` (filtering is the watcher's job).
    pub fn watch(&mut self, t: &ResourceType, from: WatchFrom) -> Result<Subscription, ApiError> {
        let backlog = match from {
            WatchFrom::Now => self
                .objects
                .get(&t.id)
                .into_iter()
                .flat_map(|objects| objects.values())
                .map(|obj| {
                    Arc::new(Event {
                        kind: EventType::Added,
                        resource: t.id.clone(),
                        rv: obj.rv,
                        object: obj.clone(),
                    })
                })
                .collect(),
            WatchFrom::After(rv) if rv < self.compacted => {
                return Err(ApiError::expired(format!(
                    "too old resource version: {rv} ({})",
                    self.compacted
                )));
            }
            WatchFrom::After(rv) => {
                let start = self.history.partition_point(|e| e.rv <= rv);
                self.history[start..]
                    .iter()
                    .filter(|e| e.resource == t.id)
                    .cloned()
                    .collect()
            }
        };
        let (tx, events) = crossbeam_channel::unbounded();
        let id = self.next_id();
        self.watchers.push(Watcher {
            id,
            resource: t.id.clone(),
            tx,
        });
        Ok(Subscription {
            id,
            rv: self.rv,
            backlog,
            events,
        })
    }

    /// Stores a new object. `ns` is the namespace of the request path, if
    /// any; for namespaced resources the object's own namespace is used
    /// when the path has none.
    pub fn create(
        &mut self,
        t: &ResourceType,
        ns: Option<&str>,
        mut obj: Value,
    ) -> Result<Arc<Value>, ApiError> {
        let ns = resolve_namespace(t, ns, &obj)?;
        prepare_object(t, ns.as_deref(), &mut obj)?;
        let meta = obj["metadata"]
            .as_object_mut()
            .expect("prepare_object made it");
        if meta
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .is_empty()
        {
            match meta.get("generateName").and_then(Value::as_str) {
                Some(prefix) if !prefix.is_empty() => {
                    let name = format!("{prefix}{}", meta::name_suffix());
                    meta.insert("name".into(), json!(name));
                }
                _ => {
                    return Err(ApiError::invalid(
                        "metadata.name: Required value: name or generateName is required",
                    ));
                }
            }
        }
        let name = meta["name"].as_str().expect("set above").to_string();
        if lease::is_lease(t) {
            lease::validate(&obj, &name)?;
        }
        let meta = obj["metadata"]
            .as_object_mut()
            .expect("prepare_object made it");
        if self
            .objects
            .get(&t.id)
            .is_some_and(|o| o.contains_key(&key(t, ns.as_deref(), &name)))
        {
            return Err(ApiError::already_exists(&t.id.group, &t.id.plural, &name));
        }
        if meta
            .get("uid")
            .and_then(Value::as_str)
            .unwrap_or("")
            .is_empty()
        {
            meta.insert("uid".into(), json!(meta::new_uid()));
        }
        meta.insert("creationTimestamp".into(), json!(meta::now_rfc3339()));
        meta.insert("generation".into(), json!(1));
        meta.remove("deletionTimestamp");
        Ok(self.commit(t, EventType::Added, obj))
    }

    /// Replaces a stored object. A non-empty `metadata.resourceVersion` in
    /// `obj` must be the stored one (else 409 Conflict), as on the real server.
    pub fn replace(
        &mut self,
        t: &ResourceType,
        ns: Option<&str>,
        name: &str,
        mut obj: Value,
    ) -> Result<Arc<Value>, ApiError> {
        let ns = resolve_namespace(t, ns, &obj)?;
        prepare_object(t, ns.as_deref(), &mut obj)?;
        match obj.pointer("/metadata/name").and_then(Value::as_str) {
            Some(n) if n != name => return Err(name_mismatch(n, name)),
            Some(_) => {}
            None => obj["metadata"]["name"] = json!(name),
        }
        let current = self.get(t, ns.as_deref(), name)?;
        let wanted_rv = obj
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .unwrap_or("");
        if wanted_rv.is_empty() && lease::is_lease(t) {
            return Err(lease::missing_resource_version(name));
        }
        if !wanted_rv.is_empty() && wanted_rv != current["metadata"]["resourceVersion"] {
            return Err(ApiError::conflict(&t.id.group, &t.id.plural, name));
        }
        if lease::is_lease(t) {
            lease::validate(&obj, name)?;
        }
        // Fields the server owns survive a replace.
        for field in ["uid", "creationTimestamp", "generation"] {
            match current["metadata"].get(field) {
                Some(v) => obj["metadata"][field] = v.clone(),
                None => drop(
                    obj["metadata"]
                        .as_object_mut()
                        .expect("an object")
                        .remove(field),
                ),
            }
        }
        if obj.get("spec") != current.get("spec") {
            let generation = current
                .pointer("/metadata/generation")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            obj["metadata"]["generation"] = json!(generation + 1);
        }
        Ok(self.commit(t, EventType::Modified, obj))
    }

    /// A REST PUT: [`Store::replace`], except that a missing Lease is
    /// created, as the real server allows for Leases (create-on-update; the
    /// body's resourceVersion is ignored then). `true` when it created.
    pub fn put(
        &mut self,
        t: &ResourceType,
        ns: Option<&str>,
        name: &str,
        mut obj: Value,
    ) -> Result<(Arc<Value>, bool), ApiError> {
        if lease::is_lease(t) && obj.is_object() {
            let ns = resolve_namespace(t, ns, &obj)?;
            if self.get(t, ns.as_deref(), name).is_err() {
                let meta = obj
                    .as_object_mut()
                    .expect("checked above")
                    .entry("metadata")
                    .or_insert_with(|| json!({}));
                if let Some(meta) = meta.as_object_mut() {
                    match meta.get("name").and_then(Value::as_str) {
                        Some(n) if n != name => return Err(name_mismatch(n, name)),
                        Some(_) => {}
                        None => drop(meta.insert("name".into(), json!(name))),
                    }
                    meta.remove("resourceVersion");
                }
                return self.create(t, ns.as_deref(), obj).map(|o| (o, true));
            }
        }
        self.replace(t, ns, name, obj).map(|o| (o, false))
    }

    /// Changes a stored object with `change` (a patch), then stores it
    /// like [`Store::replace`].
    pub fn patch(
        &mut self,
        t: &ResourceType,
        ns: Option<&str>,
        name: &str,
        change: impl FnOnce(&mut Value) -> Result<(), ApiError>,
    ) -> Result<Arc<Value>, ApiError> {
        let mut obj = (*self.get(t, ns, name)?).clone();
        change(&mut obj)?;
        if lease::is_lease(t) {
            // The real server decodes the patched object itself; its
            // failure is an Invalid patch, not a BadRequest body.
            lease::decode(&mut obj.clone()).map_err(|e| lease::undecodable_patch(&obj, &e))?;
        }
        self.replace(t, ns, name, obj)
    }

    /// Deletes an object, returning it as it was at deletion (with the
    /// deletion's resourceVersion). Deleting a CRD deletes its objects.
    pub fn delete(
        &mut self,
        t: &ResourceType,
        ns: Option<&str>,
        name: &str,
    ) -> Result<Arc<Value>, ApiError> {
        let current = self.get(t, ns, name)?;
        Ok(self.commit(t, EventType::Deleted, (*current).clone()))
    }

    fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// Writes `obj` at the next resourceVersion, records the event and
    /// delivers it to the open watches of its resource.
    fn commit(&mut self, t: &ResourceType, kind: EventType, mut obj: Value) -> Arc<Value> {
        if t.id == crd_resource() && kind != EventType::Deleted {
            mark_crd_established(&mut obj);
        }
        self.rv += 1;
        obj["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
        let ns = obj
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .map(String::from);
        let stored = Arc::new(Stored::new(&obj));
        let obj = Arc::new(obj);
        let objects = self.objects.entry(t.id.clone()).or_default();
        let k = key(t, ns.as_deref(), &name);
        if kind == EventType::Deleted {
            objects.remove(&k);
        } else {
            objects.insert(k, stored.clone());
        }
        let event = Arc::new(Event {
            kind,
            resource: t.id.clone(),
            object: stored,
            rv: self.rv,
        });
        self.history.push(event.clone());
        if !self.frozen {
            for w in self.watchers.iter().filter(|w| w.resource == t.id) {
                // A receiver gone means its watch is ending; it unsubscribes.
                let _ = w.tx.send(Delivery::Event(event.clone()));
            }
        }
        if t.id == crd_resource() {
            self.crd_changed(&name, kind, &obj);
        }
        obj
    }

    fn crd_changed(&mut self, crd_name: &str, kind: EventType, crd: &Value) {
        if kind != EventType::Deleted {
            self.catalog.set_crd(crd_name, crd);
            return;
        }
        let Some(gone) = self.catalog.remove_crd(crd_name) else {
            return;
        };
        let objects: Vec<Arc<Stored>> = self
            .objects
            .get(&gone.id)
            .map(|o| o.values().cloned().collect())
            .unwrap_or_default();
        for obj in objects {
            self.commit(&gone, EventType::Deleted, obj.value());
        }
        self.watchers.retain(|w| w.resource != gone.id);
    }
}

pub(crate) fn crd_resource() -> ResourceId {
    ResourceId::new("apiextensions.k8s.io", "customresourcedefinitions")
}

fn key(t: &ResourceType, ns: Option<&str>, name: &str) -> Key {
    let ns = if t.namespaced { ns.unwrap_or("") } else { "" };
    (ns.to_string(), name.to_string())
}

pub(crate) fn object_rv(obj: &Value) -> u64 {
    obj.pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .and_then(|rv| rv.parse().ok())
        .unwrap_or(0)
}

/// The namespace an object is written to: the path's, else the object's,
/// else `default`; none for cluster-scoped resources.
fn resolve_namespace(
    t: &ResourceType,
    path_ns: Option<&str>,
    obj: &Value,
) -> Result<Option<String>, ApiError> {
    if !t.namespaced {
        return Ok(None);
    }
    let own = obj
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty());
    match (path_ns, own) {
        (Some(p), Some(o)) if p != o => Err(ApiError::bad_request(format!(
            "the namespace of the provided object does not match the namespace sent on the request ({o} vs {p})"
        ))),
        (Some(p), _) => Ok(Some(p.to_string())),
        (None, Some(o)) => Ok(Some(o.to_string())),
        (None, None) => Ok(Some("default".to_string())),
    }
}

fn name_mismatch(in_object: &str, in_url: &str) -> ApiError {
    ApiError::bad_request(format!(
        "the name of the object ({in_object}) does not match the name on the URL ({in_url})"
    ))
}

/// Checks the object's type, decodes it as the real server does for the
/// types it decodes (Leases), and sets the fields every stored object has.
fn prepare_object(t: &ResourceType, ns: Option<&str>, obj: &mut Value) -> Result<(), ApiError> {
    if !obj.is_object() {
        return Err(ApiError::bad_request("the body is not a JSON object"));
    }
    if let Some(kind) = obj.get("kind").and_then(Value::as_str)
        && kind != t.kind
    {
        return Err(ApiError::bad_request(format!(
            "the kind of the object ({kind}) is not {} ",
            t.kind
        )));
    }
    let version = obj
        .get("apiVersion")
        .and_then(Value::as_str)
        .map(|av| super::catalog::split_api_version(av).1.to_string())
        .filter(|v| t.serves(v))
        .unwrap_or_else(|| t.storage_version.clone());
    if lease::is_lease(t) {
        lease::decode(obj).map_err(|e| {
            ApiError::bad_request(format!(
                "{kind} in version {version:?} cannot be handled as a {kind}: {e}",
                kind = t.kind
            ))
        })?;
    }
    obj["apiVersion"] = json!(t.api_version(&version));
    obj["kind"] = json!(t.kind);
    if !obj.get("metadata").is_some_and(Value::is_object) {
        obj["metadata"] = json!({});
    }
    let meta = obj["metadata"]
        .as_object_mut()
        .expect("made an object above");
    match ns {
        Some(ns) => meta.insert("namespace".into(), json!(ns)),
        None => meta.remove("namespace"),
    };
    if t.id == crd_resource() {
        check_crd(obj)?;
    }
    Ok(())
}

/// A CRD must be named `<plural>.<group>` and define a servable resource.
fn check_crd(crd: &Value) -> Result<(), ApiError> {
    let t = ResourceType::from_crd(crd).ok_or_else(|| {
        ApiError::invalid("CustomResourceDefinition: spec.group, spec.names.plural, spec.names.kind and spec.versions (one with storage: true) are required")
    })?;
    let name = crd
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    let want = format!("{}.{}", t.id.plural, t.id.group);
    if name != want {
        return Err(ApiError::invalid(format!(
            "CustomResourceDefinition.apiextensions.k8s.io \"{name}\" is invalid: metadata.name: Invalid value: \"{name}\": must be spec.names.plural+\".\"+spec.group ({want})"
        )));
    }
    Ok(())
}

/// The status the real server's CRD controllers set once names are
/// accepted: `Established`, accepted names, stored versions.
fn mark_crd_established(crd: &mut Value) {
    let Some(t) = ResourceType::from_crd(crd) else {
        return;
    };
    let now = meta::now_rfc3339();
    let mut names = crd
        .pointer("/spec/names")
        .cloned()
        .unwrap_or_else(|| json!({}));
    names["singular"] = json!(t.singular);
    names["listKind"] = json!(t.list_kind);
    let mut stored: Vec<Value> = crd
        .pointer("/status/storedVersions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if !stored.contains(&json!(t.storage_version)) {
        stored.push(json!(t.storage_version));
    }
    crd["status"] = json!({
        "acceptedNames": names,
        "conditions": [
            {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts",
             "message": "no conflicts found", "lastTransitionTime": now},
            {"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
             "message": "the initial names have been accepted", "lastTransitionTime": now}
        ],
        "storedVersions": stored,
    });
}
