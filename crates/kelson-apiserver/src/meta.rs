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
    let mut v = obj.clone();
    let m = meta_mut(&mut v);
    m.remove("resourceVersion");
    m.remove("selfLink");
    serde_json::to_vec(&v).unwrap_or_default()
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
