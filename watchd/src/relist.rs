//! What a watcher knows, and which records a list or a change makes (SPEC
//! §4 "Records").
//!
//! A [`Known`] set holds, per object uid, the fingerprint of what was last
//! shipped and the name needed to report a deletion: hashes, never whole
//! objects. The first list of a watcher makes `initapply` records; a later
//! list (after `410 Gone` or a lost connection) is compared with it: changed
//! or new objects make `apply`, objects not listed again make `delete`,
//! unchanged ones nothing.

use std::collections::HashMap;

/// The `event_type` of a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventType {
    InitApply,
    Apply,
    Delete,
}

impl EventType {
    /// The wire name.
    pub fn name(self) -> &'static str {
        match self {
            EventType::InitApply => "initapply",
            EventType::Apply => "apply",
            EventType::Delete => "delete",
        }
    }
}

/// The name of an object that vanished during a relist.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vanished {
    pub uid: String,
    pub namespace: Option<String>,
    pub name: String,
}

/// What is kept of an object: 32 bytes, plus its name, plus the key (16
/// bytes for a UUID uid), in a hash map.
#[derive(Debug)]
struct Entry {
    fingerprint: u64,
    name: Box<str>,
    /// Its namespace in [`Namespaces`], or [`NO_NAMESPACE`].
    namespace: u32,
    /// The list that last saw the object (see [`Known::list_started`]).
    list: u32,
}

/// A cluster-scoped object's namespace in an [`Entry`].
const NO_NAMESPACE: u32 = u32::MAX;

/// Entries by uid. The API server's uids are UUIDs: kept as their 16
/// bytes (a `String` of 36 would cost 60 and a hash map slot 24 more), in
/// shards so that growing a table copies a sixteenth of them at a time.
/// Other uids (and the `namespace/name` keys of objects without one) are
/// kept as strings.
#[derive(Debug, Default)]
struct Entries {
    uuids: [HashMap<u128, Entry>; SHARDS],
    others: HashMap<Box<str>, Entry>,
}

const SHARDS: usize = 16;

/// A uid as [`Entries`] keys it.
#[derive(Clone, Copy)]
enum Uid<'a> {
    Uuid(u128),
    Other(&'a str),
}

impl<'a> Uid<'a> {
    fn of(uid: &'a str) -> Uid<'a> {
        parse_uuid(uid).map_or(Uid::Other(uid), Uid::Uuid)
    }
}

impl Entries {
    fn len(&self) -> usize {
        self.uuids.iter().map(HashMap::len).sum::<usize>() + self.others.len()
    }

    fn shard(uuid: u128) -> usize {
        // The last hex digit: random in the API server's (version 4) uids.
        (uuid as usize) % SHARDS
    }

    fn get_mut(&mut self, uid: Uid<'_>) -> Option<&mut Entry> {
        match uid {
            Uid::Uuid(u) => self.uuids[Self::shard(u)].get_mut(&u),
            Uid::Other(s) => self.others.get_mut(s),
        }
    }

    fn contains(&self, uid: Uid<'_>) -> bool {
        match uid {
            Uid::Uuid(u) => self.uuids[Self::shard(u)].contains_key(&u),
            Uid::Other(s) => self.others.contains_key(s),
        }
    }

    fn insert(&mut self, uid: Uid<'_>, entry: Entry) {
        match uid {
            Uid::Uuid(u) => drop(self.uuids[Self::shard(u)].insert(u, entry)),
            Uid::Other(s) => drop(self.others.insert(s.into(), entry)),
        }
    }

    fn remove(&mut self, uid: Uid<'_>) -> Option<Entry> {
        match uid {
            Uid::Uuid(u) => self.uuids[Self::shard(u)].remove(&u),
            Uid::Other(s) => self.others.remove(s),
        }
    }

    /// Removes the entries `keep` refuses; returns them with their uids.
    fn take_unless(&mut self, mut keep: impl FnMut(&Entry) -> bool) -> Vec<(String, Entry)> {
        let mut gone = Vec::new();
        for shard in &mut self.uuids {
            let uids: Vec<u128> = shard
                .iter()
                .filter(|(_, e)| !keep(e))
                .map(|(u, _)| *u)
                .collect();
            for u in uids {
                if let Some(e) = shard.remove(&u) {
                    gone.push((format_uuid(u), e));
                }
            }
            if shard.is_empty() {
                // An emptied shard (a CRD's objects deleted) gives its table back.
                shard.shrink_to_fit();
            }
        }
        let uids: Vec<Box<str>> = self
            .others
            .iter()
            .filter(|(_, e)| !keep(e))
            .map(|(u, _)| u.clone())
            .collect();
        for u in uids {
            if let Some((u, e)) = self.others.remove_entry(&u) {
                gone.push((u.into(), e));
            }
        }
        gone
    }
}

/// A UUID in its canonical form (lowercase, 8-4-4-4-12), as 16 bytes; any
/// other string is `None` (so that [`format_uuid`] gives it back exactly).
fn parse_uuid(s: &str) -> Option<u128> {
    let b = s.as_bytes();
    if b.len() != 36 {
        return None;
    }
    let mut value: u128 = 0;
    for (i, &c) in b.iter().enumerate() {
        if matches!(i, 8 | 13 | 18 | 23) {
            if c != b'-' {
                return None;
            }
            continue;
        }
        let digit = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            _ => return None,
        };
        value = value << 4 | u128::from(digit);
    }
    Some(value)
}

fn format_uuid(u: u128) -> String {
    let h = format!("{u:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// The namespaces of one watcher's objects, each kept once, and forgotten
/// with the last object in it.
#[derive(Debug, Default)]
struct Namespaces {
    /// By id: the name and how many entries refer to it (`None`: free).
    names: Vec<Option<(Box<str>, u32)>>,
    ids: HashMap<Box<str>, u32>,
    free: Vec<u32>,
}

impl Namespaces {
    /// The id of `namespace`, counting one more entry in it.
    fn add(&mut self, namespace: Option<&str>) -> u32 {
        let Some(namespace) = namespace else {
            return NO_NAMESPACE;
        };
        if let Some(&id) = self.ids.get(namespace) {
            if let Some((_, refs)) = &mut self.names[id as usize] {
                *refs += 1;
            }
            return id;
        }
        let slot = Some((Box::<str>::from(namespace), 1));
        let id = match self.free.pop() {
            Some(id) => {
                self.names[id as usize] = slot;
                id
            }
            None => {
                self.names.push(slot);
                u32::try_from(self.names.len() - 1).expect("fewer than 4 billion namespaces")
            }
        };
        self.ids.insert(namespace.into(), id);
        id
    }

    /// One entry less in namespace `id`; returns its name.
    fn remove(&mut self, id: u32) -> Option<String> {
        let slot = self.names.get_mut(id as usize)?;
        let (name, refs) = slot.as_mut()?;
        *refs -= 1;
        let name = name.to_string();
        if *refs == 0 {
            *slot = None;
            self.ids.remove(name.as_str());
            self.free.push(id);
        }
        Some(name)
    }
}

/// One watcher's knowledge of its objects.
#[derive(Debug, Default)]
pub struct Known {
    entries: Entries,
    namespaces: Namespaces,
    /// True once a list completed: later lists make `apply`, not `initapply`.
    listed: bool,
    /// Counts lists; entries not stamped with the current one when it ends
    /// have vanished.
    list: u32,
    /// [`Known::resync`] asked: the next list sends every object.
    resync: bool,
    /// The current list sends every object as `initapply`.
    full: bool,
}

/// An object as [`Known`] needs it: identity and fingerprint.
#[derive(Clone, Copy, Debug)]
pub struct Seen<'a> {
    pub uid: &'a str,
    pub namespace: Option<&'a str>,
    pub name: &'a str,
    pub fingerprint: u64,
}

impl Known {
    pub fn new() -> Self {
        Known::default()
    }

    /// Objects known.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the object with this uid is known (was listed or applied and
    /// not deleted since).
    pub fn contains(&self, uid: &str) -> bool {
        self.entries.contains(Uid::of(uid))
    }

    /// True once the first list completed.
    pub fn has_listed(&self) -> bool {
        self.listed
    }

    /// A list (the first, or a relist) begins.
    pub fn list_started(&mut self) {
        self.list = self.list.wrapping_add(1);
        if self.resync {
            self.resync = false;
            self.full = true;
        }
    }

    /// This replica just became the leader ([`crate::standby`]): the next
    /// list to start sends every object as `initapply`, changed or not,
    /// and, as any relist, a `delete` for each known object it lacks.
    pub fn resync(&mut self) {
        self.resync = true;
    }

    /// An object of the current list: the record to send, if any.
    pub fn listed(&mut self, seen: Seen<'_>) -> Option<EventType> {
        let changed = self.remember(seen);
        if self.full {
            return Some(EventType::InitApply);
        }
        match (changed, self.listed) {
            (false, _) => None,
            (true, false) => Some(EventType::InitApply),
            (true, true) => Some(EventType::Apply),
        }
    }

    /// The current list is complete: the objects it did not list are gone.
    pub fn list_done(&mut self) -> Vec<Vanished> {
        self.listed = true;
        self.full = false;
        let list = self.list;
        let gone = self.entries.take_unless(|e| e.list == list);
        self.vanished(gone)
    }

    /// An object added or modified: `apply`, unless nothing but ignored
    /// fields changed.
    pub fn applied(&mut self, seen: Seen<'_>) -> Option<EventType> {
        self.remember(seen).then_some(EventType::Apply)
    }

    /// An object deleted. Always a `delete` record, known or not.
    pub fn deleted(&mut self, uid: &str) -> EventType {
        if let Some(entry) = self.entries.remove(Uid::of(uid)) {
            self.namespaces.remove(entry.namespace);
        }
        EventType::Delete
    }

    /// The watcher stops for good (its CRD was deleted): every object it
    /// knew is gone.
    pub fn drain(&mut self) -> Vec<Vanished> {
        let gone = self.entries.take_unless(|_| false);
        self.vanished(gone)
    }

    /// Stores the fingerprint; true when it differs from the one known (or
    /// the object is new).
    fn remember(&mut self, seen: Seen<'_>) -> bool {
        let list = self.list;
        let uid = Uid::of(seen.uid);
        match self.entries.get_mut(uid) {
            Some(entry) => {
                entry.list = list;
                let changed = entry.fingerprint != seen.fingerprint;
                entry.fingerprint = seen.fingerprint;
                changed
            }
            None => {
                let namespace = self.namespaces.add(seen.namespace);
                self.entries.insert(
                    uid,
                    Entry {
                        fingerprint: seen.fingerprint,
                        name: seen.name.into(),
                        namespace,
                        list,
                    },
                );
                true
            }
        }
    }

    fn vanished(&mut self, gone: Vec<(String, Entry)>) -> Vec<Vanished> {
        gone.into_iter()
            .map(|(uid, entry)| Vanished {
                uid,
                namespace: self.namespaces.remove(entry.namespace),
                name: entry.name.into(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(uid: &str, fingerprint: u64) -> Seen<'_> {
        Seen {
            uid,
            namespace: Some("ns"),
            name: uid,
            fingerprint,
        }
    }

    #[test]
    fn first_list_is_initapply_then_changes_are_apply() {
        let mut k = Known::new();
        k.list_started();
        assert_eq!(k.listed(seen("a", 1)), Some(EventType::InitApply));
        assert_eq!(k.listed(seen("b", 1)), Some(EventType::InitApply));
        assert!(k.list_done().is_empty());
        assert_eq!(k.applied(seen("a", 1)), None, "same content");
        assert_eq!(k.applied(seen("a", 2)), Some(EventType::Apply));
        assert_eq!(k.applied(seen("c", 1)), Some(EventType::Apply));
        assert_eq!(k.deleted("b"), EventType::Delete);
        assert_eq!(k.len(), 2);
    }

    #[test]
    fn relist_reports_changed_new_and_vanished_only() {
        let mut k = Known::new();
        k.list_started();
        for uid in ["a", "b", "c"] {
            k.listed(seen(uid, 1));
        }
        k.list_done();
        k.list_started();
        assert_eq!(k.listed(seen("a", 1)), None);
        assert_eq!(k.listed(seen("b", 2)), Some(EventType::Apply));
        assert_eq!(k.listed(seen("d", 1)), Some(EventType::Apply));
        let gone = k.list_done();
        assert_eq!(
            gone,
            [Vanished {
                uid: "c".into(),
                namespace: Some("ns".into()),
                name: "c".into()
            }]
        );
        assert_eq!(k.len(), 3);
    }

    #[test]
    fn an_interrupted_first_list_does_not_resend_what_it_sent() {
        let mut k = Known::new();
        k.list_started();
        assert_eq!(k.listed(seen("a", 1)), Some(EventType::InitApply));
        // The list failed half way; the watcher starts over.
        k.list_started();
        assert_eq!(k.listed(seen("a", 1)), None);
        assert_eq!(k.listed(seen("b", 1)), Some(EventType::InitApply));
        assert!(k.list_done().is_empty());
    }

    #[test]
    fn after_a_resync_the_next_list_sends_everything_and_what_vanished() {
        let mut k = Known::new();
        k.list_started();
        for uid in ["a", "b"] {
            k.listed(seen(uid, 1));
        }
        k.list_done();
        k.resync();
        // Changes before the resynced list starts are as usual.
        assert_eq!(k.applied(seen("a", 1)), None);
        k.list_started();
        assert_eq!(k.listed(seen("a", 1)), Some(EventType::InitApply));
        assert_eq!(k.listed(seen("c", 1)), Some(EventType::InitApply));
        let gone: Vec<String> = k.list_done().into_iter().map(|v| v.uid).collect();
        assert_eq!(gone, ["b"]);
        // Only that one list.
        k.list_started();
        assert_eq!(k.listed(seen("a", 1)), None);
        assert_eq!(k.listed(seen("c", 2)), Some(EventType::Apply));
    }

    #[test]
    fn drain_reports_everything_known() {
        let mut k = Known::new();
        k.list_started();
        k.listed(seen("a", 1));
        k.listed(seen("b", 1));
        k.list_done();
        let mut gone: Vec<String> = k.drain().into_iter().map(|v| v.uid).collect();
        gone.sort();
        assert_eq!(gone, ["a", "b"]);
        assert!(k.is_empty());
    }

    #[test]
    fn uuid_uids_are_kept_as_16_bytes_and_given_back_as_they_came() {
        let uid = "c4123476-5412-4119-9662-b800f48dfdb2";
        assert_eq!(
            parse_uuid(uid),
            Some(0xc4123476_5412_4119_9662_b800f48dfdb2)
        );
        assert_eq!(format_uuid(parse_uuid(uid).expect("a UUID")), uid);
        assert_eq!(format_uuid(0), "00000000-0000-0000-0000-000000000000");
        for other in [
            "C4123476-5412-4119-9662-B800F48DFDB2",
            "c4123476541241199662b800f48dfdb2",
            "c4123476-5412-4119-9662-b800f48dfdb2-",
            "c4123476+5412-4119-9662-b800f48dfdb2",
            "g4123476-5412-4119-9662-b800f48dfdb2",
            "ns/name",
            "",
        ] {
            assert_eq!(parse_uuid(other), None, "{other}");
        }

        let mut k = Known::new();
        k.list_started();
        let upper = "C4123476-5412-4119-9662-B800F48DFDB2";
        for (uid, name) in [(uid, "lower"), (upper, "upper"), ("plain", "plain")] {
            let seen = Seen {
                uid,
                namespace: Some("ns"),
                name,
                fingerprint: 1,
            };
            assert_eq!(k.listed(seen), Some(EventType::InitApply));
        }
        assert!(k.contains(uid) && k.contains(upper) && k.contains("plain"));
        assert_eq!(k.len(), 3);
        let mut gone: Vec<(String, String)> =
            k.drain().into_iter().map(|v| (v.uid, v.name)).collect();
        gone.sort();
        assert_eq!(
            gone,
            [
                (upper.to_string(), "upper".to_string()),
                (uid.to_string(), "lower".to_string()),
                ("plain".to_string(), "plain".to_string()),
            ]
        );
    }

    #[test]
    fn a_namespace_is_kept_once_and_forgotten_with_its_last_object() {
        let mut k = Known::new();
        k.list_started();
        for (uid, ns) in [
            ("a", Some("one")),
            ("b", Some("one")),
            ("c", Some("two")),
            ("d", None),
        ] {
            let seen = Seen {
                uid,
                namespace: ns,
                name: uid,
                fingerprint: 1,
            };
            k.listed(seen);
        }
        k.list_done();
        assert_eq!(k.namespaces.ids.len(), 2);
        k.deleted("a");
        assert_eq!(k.namespaces.ids.len(), 2);
        k.deleted("b");
        assert_eq!(k.namespaces.ids.len(), 1);
        // The freed slot is used again.
        assert!(k.applied(seen("e", 2)).is_some());
        assert_eq!(k.namespaces.names.len(), 2);
        k.list_started();
        k.listed(seen("e", 2));
        let mut gone: Vec<Vanished> = k.list_done();
        gone.sort_by(|a, b| a.uid.cmp(&b.uid));
        assert_eq!(
            gone,
            [
                Vanished {
                    uid: "c".into(),
                    namespace: Some("two".into()),
                    name: "c".into()
                },
                Vanished {
                    uid: "d".into(),
                    namespace: None,
                    name: "d".into()
                },
            ]
        );
        assert_eq!(k.namespaces.ids.len(), 1);
    }
}
