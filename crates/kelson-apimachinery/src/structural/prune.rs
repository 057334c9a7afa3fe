//! Pruning, null removal, embedded ObjectMeta coercion and defaulting
//! (upstream `pruning`, `defaulting` and `objectmeta` packages).

use serde_json::{Map, Value};

use super::Structural;

/// Fields every Kubernetes object may carry next to its schema'd ones.
const META_FIELDS: [&str; 3] = ["apiVersion", "kind", "metadata"];

/// JSON fields of `metav1.ObjectMeta`; anything else is dropped when
/// upstream round-trips metadata through the Go type.
const OBJECT_META_FIELDS: &[&str] = &[
    "name",
    "generateName",
    "namespace",
    "selfLink",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "labels",
    "annotations",
    "ownerReferences",
    "finalizers",
    "managedFields",
];

/// Builds upstream's unknown-field paths: `a.b`, `a[0].b`.
struct Tracker {
    found: Vec<String>,
}

fn join_key(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

impl Tracker {
    /// Upstream `prune`: `embedded` is the effective
    /// x-kubernetes-embedded-resource (forced on for the resource root).
    fn prune(&mut self, x: &mut Value, s: Option<&Structural>, embedded: bool, path: &str) {
        if let Some(s) = s.filter(|s| s.preserve()) {
            self.skip_prune(x, s, embedded, path);
            return;
        }
        match x {
            Value::Object(m) => {
                let Some(s) = s else {
                    for k in m.keys() {
                        self.found.push(join_key(path, k));
                    }
                    m.clear();
                    return;
                };
                let keys: Vec<String> = m.keys().cloned().collect();
                for k in keys {
                    if embedded && META_FIELDS.contains(&k.as_str()) {
                        continue;
                    }
                    let child = join_key(path, &k);
                    if let Some(prop) = s.properties.get(&k) {
                        if let Some(v) = m.get_mut(&k) {
                            self.prune(v, Some(prop), prop.embedded_resource, &child);
                        }
                    } else if let Some(ap) = &s.additional_properties {
                        let sub = ap.schema.as_deref();
                        let emb = sub.is_some_and(|s| s.embedded_resource);
                        if let Some(v) = m.get_mut(&k) {
                            self.prune(v, sub, emb, &child);
                        }
                    } else {
                        // Root-level apiVersion/kind/metadata are never
                        // reported (they are handled separately).
                        if !META_FIELDS.contains(&k.as_str()) || !path.is_empty() {
                            self.found.push(child);
                        }
                        m.remove(&k);
                    }
                }
            }
            Value::Array(items) => {
                let item_schema = s.and_then(|s| s.items.as_deref());
                let emb = item_schema.is_some_and(|s| s.embedded_resource);
                for (i, v) in items.iter_mut().enumerate() {
                    self.prune(v, item_schema, emb, &format!("{path}[{i}]"));
                }
            }
            _ => {}
        }
    }

    /// Upstream `skipPrune`: keep unknown fields, but prune inside the
    /// properties and additionalProperties the schema does specify.
    fn skip_prune(&mut self, x: &mut Value, s: &Structural, embedded: bool, path: &str) {
        match x {
            Value::Object(m) => {
                for (k, v) in m.iter_mut() {
                    if embedded && META_FIELDS.contains(&k.as_str()) {
                        continue;
                    }
                    let child = join_key(path, k);
                    if let Some(prop) = s.properties.get(k) {
                        self.prune(v, Some(prop), prop.embedded_resource, &child);
                    } else if let Some(ap) = &s.additional_properties {
                        let sub = ap.schema.as_deref();
                        let emb = sub.is_some_and(|s| s.embedded_resource);
                        self.prune(v, sub, emb, &child);
                    }
                }
            }
            Value::Array(items) => {
                if let Some(is) = s.items.as_deref() {
                    for (i, v) in items.iter_mut().enumerate() {
                        self.skip_prune(v, is, is.embedded_resource, &format!("{path}[{i}]"));
                    }
                }
            }
            _ => {}
        }
    }
}

/// The decode-time pipeline of upstream's `unstructuredSchemaCoercer` for a
/// custom resource: root ObjectMeta coercion, pruning, removal of
/// non-nullable nulls without default, and embedded ObjectMeta coercion.
pub(crate) fn prune_object(s: &Structural, obj: &mut Value) -> Vec<String> {
    let mut paths = Vec::new();
    if let Some(meta) = obj.get_mut("metadata") {
        coerce_object_meta(meta, "metadata", &mut paths);
    }
    let mut t = Tracker { found: Vec::new() };
    t.prune(obj, Some(s), true, "");
    t.found.sort();
    paths.extend(t.found);
    prune_nulls(obj, Some(s));
    let mut embedded = Vec::new();
    coerce_embedded(obj, s, "", true, &mut embedded);
    embedded.sort();
    paths.extend(embedded);
    paths
}

/// Drops what a JSON round-trip through `metav1.ObjectMeta` drops: unknown
/// fields (reported under `path`), `null`s and a null creationTimestamp.
fn coerce_object_meta(meta: &mut Value, path: &str, out: &mut Vec<String>) {
    let Some(m) = meta.as_object_mut() else {
        return;
    };
    let unknown: Vec<String> = m
        .keys()
        .filter(|k| !OBJECT_META_FIELDS.contains(&k.as_str()))
        .cloned()
        .collect();
    for k in unknown {
        out.push(format!("{path}.{k}"));
        m.remove(&k);
    }
    m.retain(|_, v| !v.is_null());
}

/// Upstream `objectmeta.Coerce` below the root: embedded resources'
/// metadata are round-tripped through ObjectMeta. Paths use `field.Path`
/// syntax (`spec.map[key]`).
fn coerce_embedded(x: &mut Value, s: &Structural, path: &str, root: bool, out: &mut Vec<String>) {
    match x {
        Value::Object(m) => {
            if s.embedded_resource && !root {
                if let Some(meta) = m.get_mut("metadata") {
                    coerce_object_meta(meta, &join_key(path, "metadata"), out);
                }
            }
            for (k, v) in m.iter_mut() {
                if let Some(prop) = s.properties.get(k) {
                    coerce_embedded(v, prop, &join_key(path, k), false, out);
                } else if let Some(sub) = s
                    .additional_properties
                    .as_ref()
                    .and_then(|ap| ap.schema.as_deref())
                {
                    coerce_embedded(v, sub, &format!("{path}[{k}]"), false, out);
                }
            }
        }
        Value::Array(items) => {
            if let Some(is) = s.items.as_deref() {
                for (i, v) in items.iter_mut().enumerate() {
                    coerce_embedded(v, is, &format!("{path}[{i}]"), false, out);
                }
            }
        }
        _ => {}
    }
}

fn field_schema<'a>(k: &str, s: Option<&'a Structural>) -> Option<&'a Structural> {
    let s = s?;
    match s.properties.get(k) {
        Some(p) => Some(p),
        None => s.additional_properties.as_ref()?.schema.as_deref(),
    }
}

/// Upstream `PruneNonNullableNullsWithoutDefaults`: map entries that are
/// `null` where the schema is neither nullable nor defaulted are removed
/// (those with a default are defaulted later).
fn prune_nulls(x: &mut Value, s: Option<&Structural>) {
    match x {
        Value::Object(m) => {
            m.retain(|k, v| {
                let fs = field_schema(k, s);
                !(v.is_null() && fs.is_some_and(|fs| !fs.nullable && fs.default.is_none()))
            });
            for (k, v) in m.iter_mut() {
                prune_nulls(v, field_schema(k, s));
            }
        }
        Value::Array(items) => {
            let is = s.and_then(|s| s.items.as_deref());
            for v in items {
                prune_nulls(v, is);
            }
        }
        _ => {}
    }
}

fn non_nullable_null(x: &Value, s: Option<&Structural>) -> bool {
    x.is_null() && s.is_some_and(|s| !s.nullable)
}

/// Upstream `defaulting.Default`.
pub(crate) fn apply_defaults(x: &mut Value, s: Option<&Structural>) {
    let Some(s) = s else {
        return;
    };
    match x {
        Value::Object(m) => {
            for (k, prop) in &s.properties {
                let Some(d) = &prop.default else {
                    continue;
                };
                let absent = match m.get(k) {
                    None => true,
                    Some(v) => non_nullable_null(v, Some(prop)),
                };
                if absent {
                    m.insert(k.clone(), d.clone());
                }
            }
            default_entries(m, s);
        }
        Value::Array(items) => {
            let is = s.items.as_deref();
            for v in items.iter_mut() {
                if non_nullable_null(v, is) {
                    *v = is.and_then(|is| is.default.clone()).unwrap_or(Value::Null);
                }
                apply_defaults(v, is);
            }
        }
        _ => {}
    }
}

fn default_entries(m: &mut Map<String, Value>, s: &Structural) {
    for (k, v) in m.iter_mut() {
        if let Some(prop) = s.properties.get(k) {
            apply_defaults(v, Some(prop));
        } else if let Some(ap) = &s.additional_properties {
            let sub = ap.schema.as_deref();
            if non_nullable_null(v, sub) {
                *v = sub.and_then(|s| s.default.clone()).unwrap_or(Value::Null);
            }
            apply_defaults(v, sub);
        }
    }
}

/// Upstream `PruneDefaults`: every default is pruned by the schema it sits
/// in, so a default can never introduce unknown fields.
pub(crate) fn prune_defaults(s: &mut Structural) {
    if let Some(mut d) = s.default.take() {
        let mut t = Tracker { found: Vec::new() };
        t.prune(&mut d, Some(s), s.embedded_resource, "");
        s.default = Some(d);
    }
    if let Some(ap) = s.additional_properties.as_mut() {
        if let Some(sub) = ap.schema.as_deref_mut() {
            prune_defaults(sub);
        }
    }
    if let Some(is) = s.items.as_deref_mut() {
        prune_defaults(is);
    }
    for p in s.properties.values_mut() {
        prune_defaults(p);
    }
}

/// Whether pruning `v` with `s` changes it (upstream's "must not have
/// unknown fields" check on defaults).
pub(crate) fn needs_pruning(v: &Value, s: &Structural) -> bool {
    let mut copy = v.clone();
    let mut t = Tracker { found: Vec::new() };
    t.prune(&mut copy, Some(s), s.embedded_resource, "");
    copy != *v
}
