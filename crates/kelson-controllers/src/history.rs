//! ControllerRevision helpers shared by the StatefulSet and DaemonSet
//! controllers, after upstream's pkg/controller/history.
//!
//! A revision's `data` is a strategic-merge patch restoring the owner's
//! template; its name is `<owner>-<hash>`, where the hash covers the data
//! and the owner's collision count. Pods carry the revision's name in the
//! `controller-revision-hash` label, and `kubectl rollout history|undo`
//! read these objects.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::Value;

/// The pod label naming the revision a pod was created from.
pub const CONTROLLER_REVISION_HASH_LABEL: &str = "controller-revision-hash";
/// The label upstream puts on a revision with its data's hash.
pub const REVISION_DATA_HASH_LABEL: &str = "controller.kubernetes.io/hash";

/// Upstream's cap on a revision name's owner prefix (253 minus room for the
/// hash).
const MAX_PREFIX_LEN: usize = 223;
/// Upstream retries name collisions forever; a bound keeps a pathological
/// cluster from spinning one sync forever.
const MAX_COLLISION_RETRIES: i32 = 1000;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("creating controller revision {namespace}/{name}: {source}")]
    Create {
        namespace: String,
        name: String,
        #[source]
        source: Box<kube::Error>,
    },
    #[error("reading controller revision {namespace}/{name}: {source}")]
    Get {
        namespace: String,
        name: String,
        #[source]
        source: Box<kube::Error>,
    },
    #[error("updating controller revision {namespace}/{name}: {source}")]
    Update {
        namespace: String,
        name: String,
        #[source]
        source: Box<kube::Error>,
    },
    #[error("deleting controller revision {namespace}/{name}: {source}")]
    Delete {
        namespace: String,
        name: String,
        #[source]
        source: Box<kube::Error>,
    },
    #[error("too many name collisions creating a controller revision for {owner}")]
    TooManyCollisions { owner: String },
}

/// Upstream's hash of revision data plus collision count: FNV-1 (32 bit,
/// Go's `fnv.New32`) over the data's JSON as Go's encoder writes it (keys
/// sorted, HTML characters escaped), then the decimal collision count,
/// printed in decimal and safe-encoded.
pub fn hash_revision(data: &Value, collision_count: Option<i32>) -> String {
    let mut buf = Vec::with_capacity(1024);
    write_go_json(data, &mut buf);
    let mut h = fnv1_32(&buf, FNV_OFFSET);
    if let Some(c) = collision_count {
        h = fnv1_32(c.to_string().as_bytes(), h);
    }
    safe_encode(&h.to_string())
}

/// "<owner>-<hash>" (upstream's ControllerRevisionName, owner prefix
/// truncated to fit 223 chars).
pub fn revision_name(owner: &str, hash: &str) -> String {
    let mut end = owner.len().min(MAX_PREFIX_LEN);
    while !owner.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}-{}", &owner[..end], hash)
}

/// The next revision number: one more than the largest in `revisions` (1 if
/// none).
pub fn next_revision(revisions: &[Arc<ControllerRevision>]) -> i64 {
    revisions
        .iter()
        .map(|r| r.revision)
        .max()
        .map_or(1, |m| m.saturating_add(1))
}

/// Upstream's ordering of revisions (oldest first): by revision, then
/// creation time, then name.
pub fn compare_revisions(a: &ControllerRevision, b: &ControllerRevision) -> Ordering {
    a.revision
        .cmp(&b.revision)
        .then_with(|| {
            let ta = a.metadata.creation_timestamp.as_ref().map(|t| t.0);
            let tb = b.metadata.creation_timestamp.as_ref().map(|t| t.0);
            ta.cmp(&tb)
        })
        .then_with(|| a.metadata.name.cmp(&b.metadata.name))
}

/// Revisions equal to `data` (semantic JSON equality of .data), newest
/// first.
pub fn find_equal(
    revisions: &[Arc<ControllerRevision>],
    data: &Value,
) -> Vec<Arc<ControllerRevision>> {
    let mut eq: Vec<_> = revisions
        .iter()
        .filter(|r| r.data.as_ref().is_some_and(|d| semantic_eq(&d.0, data)))
        .cloned()
        .collect();
    eq.sort_by(|a, b| compare_revisions(b, a));
    eq
}

/// JSON equality where an integer and the same integral float are equal
/// (the API server may hand back `1.0` for `1`), as Go's decode into
/// interface{} makes every number a float64.
fn semantic_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x == y || x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| semantic_eq(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| semantic_eq(v, w)))
        }
        _ => a == b,
    }
}

/// Creates the revision (name from hash_revision(data, collision_count)).
/// If a revision of that name exists with equal data it is returned; with
/// different data `*collision_count` is incremented and creation retried,
/// as upstream.
pub async fn create_revision(
    client: &kube::Client,
    namespace: &str,
    owner: OwnerReference,
    labels: BTreeMap<String, String>,
    data: Value,
    revision: i64,
    collision_count: &mut i32,
) -> Result<ControllerRevision, Error> {
    create_revision_with_annotations(
        client,
        namespace,
        owner,
        labels,
        BTreeMap::new(),
        data,
        revision,
        collision_count,
    )
    .await
}

/// [`create_revision`] with annotations on the revision: upstream's
/// StatefulSet copies the set's annotations (among them
/// `kubernetes.io/change-cause`, the CHANGE-CAUSE column of
/// `kubectl rollout history`).
#[allow(clippy::too_many_arguments)]
pub async fn create_revision_with_annotations(
    client: &kube::Client,
    namespace: &str,
    owner: OwnerReference,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    data: Value,
    revision: i64,
    collision_count: &mut i32,
) -> Result<ControllerRevision, Error> {
    let api: Api<ControllerRevision> = Api::namespaced(client.clone(), namespace);
    let owner_name = owner.name.clone();
    let mut cr = ControllerRevision {
        data: Some(RawExtension(data)),
        metadata: ObjectMeta {
            namespace: Some(namespace.to_string()),
            labels: Some(labels),
            annotations: (!annotations.is_empty()).then_some(annotations),
            owner_references: Some(vec![owner]),
            ..ObjectMeta::default()
        },
        revision,
    };
    for _ in 0..MAX_COLLISION_RETRIES {
        let data = cr.data.as_ref().map(|d| &d.0).unwrap_or(&Value::Null);
        let hash = hash_revision(data, Some(*collision_count));
        let name = revision_name(&owner_name, &hash);
        cr.metadata.name = Some(name.clone());
        if let Some(l) = cr.metadata.labels.as_mut() {
            l.insert(REVISION_DATA_HASH_LABEL.to_string(), hash);
        }
        match api.create(&PostParams::default(), &cr).await {
            Ok(created) => return Ok(created),
            Err(kube::Error::Api(s)) if s.code == 409 && s.reason == "AlreadyExists" => {
                let existing = api.get(&name).await.map_err(|e| Error::Get {
                    namespace: namespace.to_string(),
                    name: name.clone(),
                    source: Box::new(e),
                })?;
                let same = existing
                    .data
                    .as_ref()
                    .is_some_and(|d| semantic_eq(&d.0, data));
                if same {
                    return Ok(existing);
                }
                *collision_count = collision_count.saturating_add(1);
            }
            Err(e) => {
                return Err(Error::Create {
                    namespace: namespace.to_string(),
                    name,
                    source: Box::new(e),
                })
            }
        }
    }
    Err(Error::TooManyCollisions { owner: owner_name })
}

/// Sets .revision on an existing revision (re-used old revision becomes the
/// newest).
pub async fn update_revision(
    client: &kube::Client,
    rev: &ControllerRevision,
    revision: i64,
) -> Result<ControllerRevision, Error> {
    if rev.revision == revision {
        return Ok(rev.clone());
    }
    let namespace = rev.metadata.namespace.clone().unwrap_or_default();
    let name = rev.metadata.name.clone().unwrap_or_default();
    let api: Api<ControllerRevision> = Api::namespaced(client.clone(), &namespace);
    // A merge patch of the one mutable field cannot conflict, so upstream's
    // retry-on-conflict loop is not needed.
    let patch = serde_json::json!({ "revision": revision });
    api.patch(&name, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .map_err(|e| Error::Update {
            namespace,
            name,
            source: Box::new(e),
        })
}

/// Makes `owner` (a controller reference) the controller of an orphaned
/// revision (upstream's AdoptControllerRevision); the revision's UID in the
/// patch keeps a same-named successor from being adopted.
pub async fn adopt_revision(
    client: &kube::Client,
    rev: &ControllerRevision,
    owner: OwnerReference,
) -> Result<ControllerRevision, Error> {
    let namespace = rev.metadata.namespace.clone().unwrap_or_default();
    let name = rev.metadata.name.clone().unwrap_or_default();
    let api: Api<ControllerRevision> = Api::namespaced(client.clone(), &namespace);
    let patch = serde_json::json!({
        "metadata": {"ownerReferences": [owner], "uid": rev.metadata.uid}
    });
    api.patch(&name, &PatchParams::default(), &Patch::Strategic(patch))
        .await
        .map_err(|e| Error::Update {
            namespace,
            name,
            source: Box::new(e),
        })
}

/// Deletes revisions beyond `limit` (oldest first), never deleting those in
/// `live` (names still referenced by pods / current / update).
pub async fn truncate_history(
    client: &kube::Client,
    namespace: &str,
    revisions: &[Arc<ControllerRevision>],
    live: &HashSet<String>,
    limit: usize,
) -> Result<(), Error> {
    let doomed = revisions_to_truncate(revisions, live, limit);
    if doomed.is_empty() {
        return Ok(());
    }
    let api: Api<ControllerRevision> = Api::namespaced(client.clone(), namespace);
    for rev in doomed {
        let name = rev.metadata.name.clone().unwrap_or_default();
        match api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => {
                return Err(Error::Delete {
                    namespace: namespace.to_string(),
                    name,
                    source: Box::new(e),
                })
            }
        }
    }
    Ok(())
}

/// The non-live revisions beyond `limit`, oldest first.
fn revisions_to_truncate(
    revisions: &[Arc<ControllerRevision>],
    live: &HashSet<String>,
    limit: usize,
) -> Vec<Arc<ControllerRevision>> {
    let mut history: Vec<_> = revisions
        .iter()
        .filter(|r| !r.metadata.name.as_ref().is_some_and(|n| live.contains(n)))
        .cloned()
        .collect();
    if history.len() <= limit {
        return Vec::new();
    }
    history.sort_by(|a, b| compare_revisions(a, b));
    let excess = history.len() - limit;
    history.truncate(excess);
    history
}

// ---------------------------------------------------------------------------
// Hashing

/// The 32-bit FNV offset basis, where a hash starts.
pub(crate) const FNV_OFFSET: u32 = 0x811c_9dc5;
const FNV_PRIME: u32 = 0x0100_0193;

/// FNV-1 (multiply, then xor), Go's `hash/fnv.New32`.
fn fnv1_32(bytes: &[u8], mut hash: u32) -> u32 {
    for b in bytes {
        hash = hash.wrapping_mul(FNV_PRIME);
        hash ^= u32::from(*b);
    }
    hash
}

/// FNV-1a (xor, then multiply), Go's `hash/fnv.New32a`, which the
/// Deployment controller's pod-template-hash uses.
pub(crate) fn fnv1a_32(bytes: &[u8], mut hash: u32) -> u32 {
    for b in bytes {
        hash ^= u32::from(*b);
        hash = hash.wrapping_mul(FNV_PRIME);
    }
    hash
}

/// Upstream's rand.SafeEncodeString: every byte mapped onto consonants and
/// digits that cannot spell words, a safe label value and name suffix.
pub(crate) fn safe_encode(s: &str) -> String {
    const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    s.bytes()
        .map(|b| ALPHANUMS[usize::from(b) % ALPHANUMS.len()] as char)
        .collect()
}

/// JSON as Go's encoding/json writes a decoded map: object keys sorted,
/// `<`, `>`, `&`, U+2028 and U+2029 escaped, so the hash does not depend on
/// serde_json's key order.
fn write_go_json(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::Number(n) => write_go_number(n, out),
        Value::String(s) => write_go_string(s, out),
        Value::Array(a) => {
            out.push(b'[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_go_json(x, out);
            }
            out.push(b']');
        }
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push(b'{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_go_string(k, out);
                out.push(b':');
                if let Some(x) = m.get(k) {
                    write_go_json(x, out);
                }
            }
            out.push(b'}');
        }
    }
}

fn write_go_number(n: &serde_json::Number, out: &mut Vec<u8>) {
    if let Some(i) = n.as_i64() {
        out.extend_from_slice(i.to_string().as_bytes());
    } else if let Some(u) = n.as_u64() {
        out.extend_from_slice(u.to_string().as_bytes());
    } else if let Some(f) = n.as_f64() {
        // Go prints integral floats below 1e21 without a fraction.
        if f.fract() == 0.0 && f.abs() < 1e21 {
            out.extend_from_slice(format!("{f:.0}").as_bytes());
        } else {
            out.extend_from_slice(f.to_string().as_bytes());
        }
    }
}

fn write_go_string(s: &str, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    for c in s.chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '\n' => out.extend_from_slice(b"\\n"),
            '\r' => out.extend_from_slice(b"\\r"),
            '\t' => out.extend_from_slice(b"\\t"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' | '\u{0}'..='\u{1f}' => {
                let code = c as u32;
                out.extend_from_slice(b"\\u");
                for shift in [12, 8, 4, 0] {
                    out.push(HEX[((code >> shift) & 0xf) as usize]);
                }
            }
            _ => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use serde_json::json;

    fn rev(name: &str, revision: i64, data: Value) -> Arc<ControllerRevision> {
        Arc::new(ControllerRevision {
            data: Some(RawExtension(data)),
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..ObjectMeta::default()
            },
            revision,
        })
    }

    #[test]
    fn fnv1_matches_go_reference_values() {
        // Go: fnv.New32() of "" is the offset basis; of "a" is 0x050c5d7e.
        assert_eq!(fnv1_32(b"", FNV_OFFSET), 0x811c_9dc5);
        assert_eq!(fnv1_32(b"a", FNV_OFFSET), 0x050c_5d7e);
        assert_eq!(fnv1_32(b"foobar", FNV_OFFSET), 0x31f0_b262);
        // Go: fnv.New32a() of "a" is 0xe40c292c, of "foobar" 0xbf9cf968.
        assert_eq!(fnv1a_32(b"a", FNV_OFFSET), 0xe40c_292c);
        assert_eq!(fnv1a_32(b"foobar", FNV_OFFSET), 0xbf9c_f968);
    }

    #[test]
    fn safe_encode_maps_digits_like_upstream() {
        // '0' is byte 48, 48 % 27 = 21 -> '4'; '1' is 49 % 27 = 22 -> '5'.
        assert_eq!(safe_encode("0"), "4");
        assert_eq!(safe_encode("10"), "54");
    }

    #[test]
    fn go_json_sorts_keys_and_escapes_html() {
        let mut out = Vec::new();
        write_go_json(&json!({"b": 1, "a": ["<&>", 2.0, true, null]}), &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"a":["\u003c\u0026\u003e",2,true,null],"b":1}"#
        );
    }

    #[test]
    fn hash_depends_on_data_and_collision_count() {
        let a = json!({"spec": {"template": {"$patch": "replace", "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}});
        let b = json!({"spec": {"template": {"$patch": "replace", "spec": {"containers": [{"name": "c", "image": "httpd"}]}}}});
        let h = hash_revision(&a, Some(0));
        assert_eq!(h, hash_revision(&a, Some(0)), "stable");
        assert_ne!(h, hash_revision(&b, Some(0)));
        assert_ne!(h, hash_revision(&a, Some(1)));
        assert_ne!(h, hash_revision(&a, None));
        assert!(!h.is_empty() && h.len() <= 10);
        assert!(h
            .bytes()
            .all(|c| b"bcdfghjklmnpqrstvwxz2456789".contains(&c)));
    }

    #[test]
    fn hash_matches_upstream_computation() {
        // FNV-1 of `{}` followed by "0", printed in decimal, safe-encoded.
        let expected = safe_encode(&fnv1_32(b"0", fnv1_32(b"{}", FNV_OFFSET)).to_string());
        assert_eq!(hash_revision(&json!({}), Some(0)), expected);
    }

    #[test]
    fn revision_name_truncates_long_owner() {
        assert_eq!(revision_name("web", "abc12"), "web-abc12");
        let long = "x".repeat(300);
        let name = revision_name(&long, "abc12");
        assert_eq!(name.len(), 223 + 1 + 5);
        assert!(name.ends_with("x-abc12"));
    }

    #[test]
    fn next_revision_is_one_past_the_largest() {
        assert_eq!(next_revision(&[]), 1);
        let revs = [
            rev("a", 3, json!({})),
            rev("b", 7, json!({})),
            rev("c", 2, json!({})),
        ];
        assert_eq!(next_revision(&revs), 8);
    }

    #[test]
    fn find_equal_returns_newest_first() {
        let d1 = json!({"spec": {"template": {"x": 1}}});
        let d2 = json!({"spec": {"template": {"x": 2}}});
        let revs = [
            rev("a", 1, d1.clone()),
            rev("b", 2, d2.clone()),
            rev("c", 3, json!({"spec": {"template": {"x": 1.0}}})),
        ];
        let eq = find_equal(&revs, &d1);
        let names: Vec<_> = eq
            .iter()
            .map(|r| r.metadata.name.clone().unwrap())
            .collect();
        assert_eq!(names, ["c", "a"]);
        assert!(find_equal(&revs, &json!({"other": true})).is_empty());
    }

    #[test]
    fn ordering_breaks_ties_by_time_then_name() {
        let mut a = (*rev("b", 1, json!({}))).clone();
        let mut b = (*rev("a", 1, json!({}))).clone();
        assert_eq!(
            compare_revisions(&b, &a),
            Ordering::Less,
            "same time: by name"
        );
        a.metadata.creation_timestamp = Some(Time("2024-01-01T00:00:00Z".parse().unwrap()));
        b.metadata.creation_timestamp = Some(Time("2024-01-02T00:00:00Z".parse().unwrap()));
        assert_eq!(compare_revisions(&a, &b), Ordering::Less, "older first");
    }

    #[test]
    fn truncation_keeps_live_and_newest() {
        let revs: Vec<_> = (1..=6)
            .map(|i| rev(&format!("r{i}"), i, json!({ "i": i })))
            .collect();
        let live: HashSet<String> = ["r1".to_string(), "r6".to_string()].into();
        let doomed = revisions_to_truncate(&revs, &live, 2);
        let names: Vec<_> = doomed
            .iter()
            .map(|r| r.metadata.name.clone().unwrap())
            .collect();
        // Non-live history r2..r5 (4) minus limit 2: the two oldest go.
        assert_eq!(names, ["r2", "r3"]);
        assert!(revisions_to_truncate(&revs, &live, 4).is_empty());
        assert_eq!(revisions_to_truncate(&revs, &HashSet::new(), 0).len(), 6);
    }
}
