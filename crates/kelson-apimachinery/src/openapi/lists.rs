//! Merge semantics published as OpenAPI extensions, taken from
//! [`crate::strategic`]'s table (k8s-openapi's server-side-apply list types
//! and the upstream Go `patchStrategy` / `patchMergeKey` tags):
//! `x-kubernetes-list-type`, `x-kubernetes-list-map-keys`,
//! `x-kubernetes-map-type`, `x-kubernetes-patch-strategy` and
//! `x-kubernetes-patch-merge-key`. kubectl reads the patch extensions to
//! compute the strategic merge patches of client-side `apply`.

use crate::strategic::{list_strategy, patch_meta, ListStrategy};
use serde_json::{Map, Value};

/// Adds the extensions to every property of definition `def`.
pub(crate) fn apply(def: &str, schema: &mut Value) {
    let Some(props) = schema.get_mut("properties").and_then(Value::as_object_mut) else {
        return;
    };
    for (field, prop) in props.iter_mut() {
        let Some(prop) = prop.as_object_mut() else {
            continue;
        };
        let is_array = prop.get("type").and_then(Value::as_str) == Some("array");
        insert_list_type(prop, list_strategy(def, field), is_array);
        let meta = patch_meta(def, field);
        let strategy: Vec<&str> = [
            (meta.merge, "merge"),
            (meta.replace, "replace"),
            (meta.retain_keys, "retainKeys"),
        ]
        .iter()
        .filter(|(on, _)| *on)
        .map(|(_, s)| *s)
        .collect();
        if let Some(key) = meta.merge_key {
            prop.insert("x-kubernetes-patch-merge-key".into(), key.into());
        }
        if !strategy.is_empty() {
            prop.insert(
                "x-kubernetes-patch-strategy".into(),
                strategy.join(",").into(),
            );
        }
    }
}

fn insert_list_type(prop: &mut Map<String, Value>, strategy: ListStrategy, is_array: bool) {
    match strategy {
        // Atomic is also the table's answer for unmarked lists; it is what
        // server-side apply does with them, so publishing it is accurate.
        ListStrategy::Atomic if is_array => {
            prop.insert("x-kubernetes-list-type".into(), "atomic".into());
        }
        ListStrategy::Set if is_array => {
            prop.insert("x-kubernetes-list-type".into(), "set".into());
        }
        ListStrategy::Map { keys } if is_array => {
            prop.insert("x-kubernetes-list-type".into(), "map".into());
            prop.insert(
                "x-kubernetes-list-map-keys".into(),
                Value::Array(keys.iter().map(|k| Value::from(*k)).collect()),
            );
        }
        ListStrategy::MapAtomic => {
            prop.insert("x-kubernetes-map-type".into(), "atomic".into());
        }
        _ => {}
    }
}
