//! Small helpers over object metadata kept as JSON.

use serde_json::{Map, Value};

pub fn meta(obj: &Value) -> Option<&Map<String, Value>> {
    obj.get("metadata").and_then(Value::as_object)
}

pub fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.get("metadata").is_some_and(Value::is_object) {
        if let Some(o) = obj.as_object_mut() {
            o.insert("metadata".into(), Value::Object(Map::new()));
        }
    }
    obj.get_mut("metadata")
        .and_then(Value::as_object_mut)
        .expect("metadata was just made an object")
}

pub fn str_field<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    meta(obj)?.get(field)?.as_str()
}

pub fn name(obj: &Value) -> &str {
    str_field(obj, "name").unwrap_or("")
}

pub fn namespace(obj: &Value) -> &str {
    str_field(obj, "namespace").unwrap_or("")
}

pub fn uid(obj: &Value) -> Option<&str> {
    str_field(obj, "uid")
}

pub fn resource_version(obj: &Value) -> Option<&str> {
    str_field(obj, "resourceVersion").filter(|s| !s.is_empty())
}

pub fn finalizers(obj: &Value) -> Vec<String> {
    meta(obj)
        .and_then(|m| m.get("finalizers"))
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

pub fn deletion_timestamp(obj: &Value) -> Option<&str> {
    str_field(obj, "deletionTimestamp")
}

pub fn generation(obj: &Value) -> i64 {
    meta(obj)
        .and_then(|m| m.get("generation"))
        .and_then(Value::as_i64)
        .unwrap_or(0)
}

/// Now as Kubernetes writes timestamps (RFC 3339, whole seconds, UTC).
pub fn now() -> String {
    format_time(jiff::Timestamp::now())
}

pub fn format_time(t: jiff::Timestamp) -> String {
    let secs = t.as_second();
    jiff::Timestamp::from_second(secs)
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default()
}

/// The object minus fields that are not stored (resourceVersion comes from
/// the store's revision; selfLink is gone upstream).
pub fn for_storage(obj: &Value) -> Vec<u8> {
    // Serialized through a view rather than a trimmed copy: cloning a whole
    // object on every write cost as much as encoding it.
    serde_json::to_vec(&StorageView(obj)).unwrap_or_default()
}

/// An object as stored: metadata without `resourceVersion` (the store
/// revision is the truth) and without the long-gone `selfLink`.
struct StorageView<'a>(&'a Value);

struct StoredMeta<'a>(&'a Map<String, Value>);

impl serde::Serialize for StorageView<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let Some(top) = self.0.as_object() else {
            return self.0.serialize(s);
        };
        let mut map = s.serialize_map(Some(top.len()))?;
        for (k, v) in top {
            match (k.as_str(), v) {
                ("metadata", Value::Object(m)) => map.serialize_entry(k, &StoredMeta(m))?,
                _ => map.serialize_entry(k, v)?,
            }
        }
        map.end()
    }
}

impl serde::Serialize for StoredMeta<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let kept = self
            .0
            .iter()
            .filter(|(k, _)| !matches!(k.as_str(), "resourceVersion" | "selfLink"));
        let mut map = s.serialize_map(None)?;
        for (k, v) in kept {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

/// `json` (a stored object: a JSON object whose metadata has no
/// resourceVersion) with `metadata.resourceVersion` set to `rev`, by
/// splicing the bytes instead of decoding and encoding the whole object.
/// None if `json` is not such an object.
pub fn with_resource_version(json: &[u8], rev: u64) -> Option<Vec<u8>> {
    use serde_json::value::RawValue;
    let top: std::collections::BTreeMap<&str, &RawValue> = serde_json::from_slice(json).ok()?;
    let meta = top.get("metadata")?.get();
    if !meta.starts_with('{') || meta.contains("\"resourceVersion\"") {
        return None;
    }
    // The raw value borrows from `json`, so its offset is exact.
    let open = meta.as_ptr() as usize - json.as_ptr() as usize;
    let empty = meta[1..].trim_start().starts_with('}');
    let mut out = Vec::with_capacity(json.len() + 32);
    out.extend_from_slice(&json[..=open]);
    out.extend_from_slice(b"\"resourceVersion\":\"");
    out.extend_from_slice(rev.to_string().as_bytes());
    out.extend_from_slice(if empty { b"\"" } else { b"\"," });
    out.extend_from_slice(&json[open + 1..]);
    Some(out)
}

/// Everything but metadata and status: what a generation counts.
pub fn spec_part(obj: &Value) -> Map<String, Value> {
    obj.as_object()
        .map(|o| {
            o.iter()
                .filter(|(k, _)| {
                    !matches!(k.as_str(), "metadata" | "status" | "apiVersion" | "kind")
                })
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .unwrap_or_default()
}

/// A random suffix for generateName, from the alphabet upstream uses (no
/// vowels, no look-alike digits).
pub fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let bytes = uuid::Uuid::new_v4().into_bytes();
    bytes
        .iter()
        .take(5)
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn storage_drops_resource_version_and_self_link_only() {
        let obj = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "a", "resourceVersion": "7", "selfLink": "/x", "labels": {"k": "v"}},
            "spec": {"resourceVersion": "kept"},
        });
        let stored: Value = serde_json::from_slice(&for_storage(&obj)).unwrap();
        assert_eq!(
            stored,
            json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "a", "labels": {"k": "v"}},
                "spec": {"resourceVersion": "kept"},
            })
        );
    }

    #[test]
    fn resource_version_is_spliced_into_metadata() {
        let stored = for_storage(&json!({"kind": "Pod", "metadata": {"name": "a"}, "spec": {}}));
        let out: Value =
            serde_json::from_slice(&with_resource_version(&stored, 42).unwrap()).unwrap();
        assert_eq!(
            out,
            json!({"kind": "Pod", "metadata": {"name": "a", "resourceVersion": "42"}, "spec": {}})
        );
        let empty = br#"{"metadata": { } ,"b":1}"#;
        let out: Value = serde_json::from_slice(&with_resource_version(empty, 3).unwrap()).unwrap();
        assert_eq!(out, json!({"metadata": {"resourceVersion": "3"}, "b": 1}));
    }

    #[test]
    fn splicing_refuses_what_it_cannot_do_safely() {
        assert!(with_resource_version(b"[1]", 1).is_none());
        assert!(with_resource_version(br#"{"metadata":null}"#, 1).is_none());
        assert!(with_resource_version(br#"{"spec":{}}"#, 1).is_none());
        assert!(with_resource_version(br#"{"metadata":{"resourceVersion":"1"}}"#, 2).is_none());
        assert!(with_resource_version(b"not json", 1).is_none());
    }
}
