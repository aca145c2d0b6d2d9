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

#[derive(Debug)]
struct Entry {
    fingerprint: u64,
    namespace: Option<Box<str>>,
    name: Box<str>,
    /// The list that last saw the object (see [`Known::list_started`]).
    list: u32,
}

/// One watcher's knowledge of its objects.
#[derive(Debug, Default)]
pub struct Known {
    entries: HashMap<String, Entry>,
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
        self.entries.is_empty()
    }

    /// Whether the object with this uid is known (was listed or applied and
    /// not deleted since).
    pub fn contains(&self, uid: &str) -> bool {
        self.entries.contains_key(uid)
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
        let gone: Vec<String> = self
            .entries
            .iter()
            .filter(|(_, e)| e.list != list)
            .map(|(uid, _)| uid.clone())
            .collect();
        gone.into_iter()
            .filter_map(|uid| self.forget(&uid))
            .collect()
    }

    /// An object added or modified: `apply`, unless nothing but ignored
    /// fields changed.
    pub fn applied(&mut self, seen: Seen<'_>) -> Option<EventType> {
        self.remember(seen).then_some(EventType::Apply)
    }

    /// An object deleted. Always a `delete` record, known or not.
    pub fn deleted(&mut self, uid: &str) -> EventType {
        self.entries.remove(uid);
        EventType::Delete
    }

    /// The watcher stops for good (its CRD was deleted): every object it
    /// knew is gone.
    pub fn drain(&mut self) -> Vec<Vanished> {
        let uids: Vec<String> = self.entries.keys().cloned().collect();
        uids.into_iter()
            .filter_map(|uid| self.forget(&uid))
            .collect()
    }

    /// Stores the fingerprint; true when it differs from the one known (or
    /// the object is new).
    fn remember(&mut self, seen: Seen<'_>) -> bool {
        let list = self.list;
        match self.entries.get_mut(seen.uid) {
            Some(entry) => {
                entry.list = list;
                let changed = entry.fingerprint != seen.fingerprint;
                entry.fingerprint = seen.fingerprint;
                changed
            }
            None => {
                self.entries.insert(
                    seen.uid.to_string(),
                    Entry {
                        fingerprint: seen.fingerprint,
                        namespace: seen.namespace.map(Into::into),
                        name: seen.name.into(),
                        list,
                    },
                );
                true
            }
        }
    }

    fn forget(&mut self, uid: &str) -> Option<Vanished> {
        let (uid, entry) = self.entries.remove_entry(uid)?;
        Some(Vanished {
            uid,
            namespace: entry.namespace.map(String::from),
            name: entry.name.into(),
        })
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
}
