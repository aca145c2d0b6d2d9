//! Watched objects kept as the JSON text the API server sent, until the
//! process thread parses them (SPEC §4; issue #16: memory follows the page).
//!
//! kube's watcher holds a whole list page (250 objects) while it hands the
//! objects out one by one, and a page is parsed before the first one goes.
//! As [`kube::api::DynamicObject`]s (a `serde_json::Value` tree plus a typed
//! `ObjectMeta`) a fixture-shaped Pod of 5.4 KB of JSON takes about 52 KB,
//! and a page 13 MB; as text it takes what it weighs. [`RawObject`] is that
//! text, written while the list or watch event is parsed (nothing else is
//! built), and the one field kube's watcher reads, `resourceVersion`.
//!
//! The text is re-encoded as it is read, not cut out of the response:
//! serde buffers a watch event's `object` whenever it comes before its
//! `type`, and a cut needs serde_json's own deserializer. Keys keep their
//! order; numbers and strings mean what they meant.

use std::borrow::Cow;
use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::serde::Serialize;
use k8s_openapi::serde::de::{
    self, Deserialize, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor,
};
use kube::api::ApiResource;
use kube::core::{DynamicResourceScope, Resource};
use serde_json::Value;

/// One object of a watched resource, as JSON text.
#[derive(Clone, Debug, Default)]
pub struct RawObject {
    /// Only `resourceVersion`: the one field kube's watcher reads.
    meta: ObjectMeta,
    json: Box<str>,
}

impl RawObject {
    /// The object as the API server sent it.
    pub fn json(&self) -> &str {
        &self.json
    }

    /// Parses the text (done on the process thread).
    pub fn to_value(&self) -> serde_json::Result<Value> {
        serde_json::from_str(&self.json)
    }

    /// An object from a JSON value (tests).
    pub fn from_value(value: &Value) -> RawObject {
        serde_json::from_value(value.clone()).expect("a JSON value transcodes")
    }
}

impl Resource for RawObject {
    type DynamicType = ApiResource;
    type Scope = DynamicResourceScope;

    fn kind(dt: &ApiResource) -> Cow<'_, str> {
        dt.kind.as_str().into()
    }

    fn group(dt: &ApiResource) -> Cow<'_, str> {
        dt.group.as_str().into()
    }

    fn version(dt: &ApiResource) -> Cow<'_, str> {
        dt.version.as_str().into()
    }

    fn api_version(dt: &ApiResource) -> Cow<'_, str> {
        dt.api_version.as_str().into()
    }

    fn plural(dt: &ApiResource) -> Cow<'_, str> {
        dt.plural.as_str().into()
    }

    fn meta(&self) -> &ObjectMeta {
        &self.meta
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.meta
    }
}

impl<'de> Deserialize<'de> for RawObject {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut out = Vec::with_capacity(1024);
        let mut resource_version = None;
        Transcode {
            out: &mut out,
            capture: Capture::Object(&mut resource_version),
        }
        .deserialize(deserializer)?;
        // Only JSON was written, from valid UTF-8 strings.
        let json = String::from_utf8(out).map_err(de::Error::custom)?;
        Ok(RawObject {
            meta: ObjectMeta {
                resource_version,
                ..ObjectMeta::default()
            },
            json: json.into_boxed_str(),
        })
    }
}

/// Where `metadata.resourceVersion` is looked for.
enum Capture<'a> {
    /// Nowhere below.
    None,
    /// In the object's `metadata`.
    Object(&'a mut Option<String>),
    /// In this map (`metadata`), as `resourceVersion`.
    Metadata(&'a mut Option<String>),
    /// This value (a string) is it.
    Version(&'a mut Option<String>),
}

/// Writes the value it deserializes as JSON to `out`.
struct Transcode<'a, 'c> {
    out: &'a mut Vec<u8>,
    capture: Capture<'c>,
}

impl<'de> DeserializeSeed<'de> for Transcode<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl Transcode<'_, '_> {
    fn string<E: de::Error>(self, s: &str) -> Result<(), E> {
        if let Capture::Version(version) = self.capture {
            *version = Some(s.to_string());
        }
        write_json(self.out, s)
    }
}

fn write_json<E: de::Error>(out: &mut Vec<u8>, value: &(impl Serialize + ?Sized)) -> Result<(), E> {
    serde_json::to_writer(out, value).map_err(E::custom)
}

impl<'de> Visitor<'de> for Transcode<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.out.extend_from_slice(b"null");
        Ok(())
    }

    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        self.visit_unit()
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        self.out
            .extend_from_slice(if v { b"true" } else { b"false" });
        Ok(())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        write_json(self.out, &v)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        write_json(self.out, &v)
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        // As serde_json writes it (non-finite: null, as in a Value).
        write_json(self.out, &v)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.string(v)
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<(), E> {
        self.string(v)
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<(), E> {
        self.string(&v)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        self.out.push(b'[');
        let mut first = true;
        loop {
            let mark = self.out.len();
            if !first {
                self.out.push(b',');
            }
            let element = Transcode {
                out: self.out,
                capture: Capture::None,
            };
            if seq.next_element_seed(element)?.is_none() {
                self.out.truncate(mark);
                break;
            }
            first = false;
        }
        self.out.push(b']');
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let Transcode { out, mut capture } = self;
        out.push(b'{');
        let mut first = true;
        loop {
            let mark = out.len();
            if !first {
                out.push(b',');
            }
            let Some(key) = map.next_key_seed(KeySeed { out: &mut *out })? else {
                out.truncate(mark);
                break;
            };
            first = false;
            out.push(b':');
            let below = match (&mut capture, key) {
                (Capture::Object(version), Key::Metadata) => Capture::Metadata(version),
                (Capture::Metadata(version), Key::ResourceVersion) => Capture::Version(version),
                _ => Capture::None,
            };
            map.next_value_seed(Transcode {
                out: &mut *out,
                capture: below,
            })?;
        }
        out.push(b'}');
        Ok(())
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<(), E> {
        // Not produced by JSON; as serde_json writes bytes.
        write_json(self.out, v)
    }
}

/// The keys the transcoder looks for.
#[derive(Clone, Copy)]
enum Key {
    Metadata,
    ResourceVersion,
    Other,
}

/// Writes a map key (a string) to `out`.
struct KeySeed<'a> {
    out: &'a mut Vec<u8>,
}

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = Key;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Key, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed<'_> {
    type Value = Key;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string key")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Key, E> {
        write_json(self.out, v)?;
        Ok(match v {
            "metadata" => Key::Metadata,
            "resourceVersion" => Key::ResourceVersion,
            _ => Key::Other,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::ObjectList;
    use kube::core::WatchEvent;
    use serde_json::json;

    #[test]
    fn the_text_means_what_the_api_server_sent_and_the_resource_version_is_read() {
        let object = json!({
            "metadata": {"name": "p", "namespace": "ns", "resourceVersion": "42",
                "labels": {"a": "b\"c\\d\u{1}é"}, "managedFields": [{"fieldsV1": {"f:spec": {}}}]},
            "spec": {"n": 1, "neg": -3, "f": 1.5, "big": 18446744073709551615u64, "t": true,
                     "nil": null, "empty": [], "e": {}, "list": [1, "two", [3], {"four": 4}]}
        });
        let text = serde_json::to_string(&object).expect("JSON");
        let raw: RawObject = serde_json::from_str(&text).expect("transcodes");
        assert_eq!(raw.meta().resource_version.as_deref(), Some("42"));
        assert_eq!(raw.to_value().expect("JSON"), object);
        // Keys keep their order: the text is the one serde_json writes.
        assert_eq!(raw.json(), text);
    }

    #[test]
    fn a_resource_version_elsewhere_is_not_taken() {
        let raw = RawObject::from_value(&json!({
            "spec": {"metadata": {"resourceVersion": "1"}, "resourceVersion": "2"},
            "metadata": {"name": "x", "annotations": {"resourceVersion": "3"}}
        }));
        assert_eq!(raw.meta().resource_version, None);
    }

    #[test]
    fn list_items_and_watch_events_in_either_key_order() {
        let list = r#"{"kind":"PodList","apiVersion":"v1","metadata":{"resourceVersion":"7","continue":"c"},
            "items":[{"metadata":{"name":"a","resourceVersion":"5"}},{"metadata":{"name":"b","resourceVersion":"6"},"spec":{}}]}"#;
        let list: ObjectList<RawObject> = serde_json::from_str(list).expect("a list");
        assert_eq!(list.items.len(), 2);
        assert_eq!(
            list.items[1].json(),
            r#"{"metadata":{"name":"b","resourceVersion":"6"},"spec":{}}"#
        );
        for event in [
            r#"{"type":"ADDED","object":{"metadata":{"name":"a","resourceVersion":"8"},"x":[1.25]}}"#,
            // serde buffers the object when it comes first.
            r#"{"object":{"metadata":{"name":"a","resourceVersion":"8"},"x":[1.25]},"type":"ADDED"}"#,
        ] {
            let event: WatchEvent<RawObject> = serde_json::from_str(event).expect("an event");
            let WatchEvent::Added(raw) = event else {
                panic!("not ADDED: {event:?}")
            };
            assert_eq!(raw.meta().resource_version.as_deref(), Some("8"));
            assert_eq!(
                raw.json(),
                r#"{"metadata":{"name":"a","resourceVersion":"8"},"x":[1.25]}"#
            );
        }
    }
}
