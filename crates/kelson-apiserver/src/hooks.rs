//! Reactions to writes that change what the API serves: a created, changed
//! or deleted CustomResourceDefinition changes the set of resources.

use std::sync::Arc;

use serde_json::{json, Value};

use crate::handler::Api;
use crate::meta;
use crate::registry::WriteOptions;
use crate::resources::{Resource, Subresource};

fn is_crd(res: &Resource) -> bool {
    res.group == "apiextensions.k8s.io" && res.plural == "customresourcedefinitions"
}

pub async fn after_write(api: &Arc<Api>, res: &Resource, _obj: &Value) {
    if is_crd(res) {
        sync_crds(api).await;
    }
}

pub async fn after_delete(api: &Arc<Api>, res: &Resource, obj: &Value) {
    if is_crd(res) {
        // The custom objects go with their definition.
        if let Some(group) = obj.pointer("/spec/group").and_then(Value::as_str) {
            if let Some(plural) = obj.pointer("/spec/names/plural").and_then(Value::as_str) {
                let prefix = crate::resources::storage_prefix(group, plural);
                delete_prefix(api, &prefix).await;
                api.registry.drop_cache(&prefix);
            }
        }
        sync_crds(api).await;
    }
}

async fn delete_prefix(api: &Arc<Api>, prefix: &str) {
    let store = api.registry.store();
    if let Ok(resp) = store
        .range(kelson_store::RangeRequest::prefix(bytes::Bytes::from(
            prefix.to_string(),
        )))
        .await
    {
        for kv in resp.kvs {
            let _ = store.delete(kv.key, None).await;
        }
    }
}

/// Rebuilds the custom resources from the stored CRDs and marks new ones
/// Established.
pub async fn sync_crds(api: &Arc<Api>) {
    let Some(crds) = api.find("apiextensions.k8s.io", "v1", "customresourcedefinitions") else {
        return;
    };
    let Ok(cache) = api.registry.synced_cache(&crds).await else {
        return;
    };
    let (items, _) = cache.list("");
    let mut custom = Vec::new();
    for item in &items {
        let crd = item.value();
        if meta::deletion_timestamp(&crd).is_some() {
            continue;
        }
        custom.extend(resources_of(&crd));
    }
    api.set_custom(custom);
    for item in items {
        let crd = item.value();
        let established = crd
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .is_some_and(|c| {
                c.iter()
                    .any(|c| c["type"] == "Established" && c["status"] == "True")
            });
        if established || meta::deletion_timestamp(&crd).is_some() {
            continue;
        }
        let now = meta::now();
        let names = crd.pointer("/spec/names").cloned().unwrap_or(json!({}));
        let stored: Vec<Value> = crd
            .pointer("/spec/versions")
            .and_then(Value::as_array)
            .map(|vs| {
                vs.iter()
                    .filter(|v| v["storage"] == true)
                    .filter_map(|v| v.get("name").cloned())
                    .collect()
            })
            .unwrap_or_default();
        let _ = api
            .registry
            .guaranteed_update(&crds, None, &item.name, &WriteOptions::default(), |cur| {
                let Some(cur) = cur else {
                    return Err(crate::status::ApiError::not_found("apiextensions.k8s.io", "customresourcedefinitions", &item.name));
                };
                let mut new = cur.clone();
                new["status"] = json!({
                    "acceptedNames": names,
                    "storedVersions": stored,
                    "conditions": [
                        {"type": "NamesAccepted", "status": "True", "lastTransitionTime": now, "reason": "NoConflicts", "message": "no conflicts found"},
                        {"type": "Established", "status": "True", "lastTransitionTime": now, "reason": "InitialNamesAccepted", "message": "the initial names have been accepted"},
                    ],
                });
                meta::meta_mut(&mut new).remove("resourceVersion");
                Ok(new)
            })
            .await;
    }
}

/// The served resources of one CRD, one per served version.
pub fn resources_of(crd: &Value) -> Vec<Arc<Resource>> {
    let s = |p: &str| {
        crd.pointer(p)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let strings = |p: &str| -> Vec<String> {
        crd.pointer(p)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    let group = s("/spec/group");
    let plural = s("/spec/names/plural");
    let kind = s("/spec/names/kind");
    if group.is_empty() || plural.is_empty() || kind.is_empty() {
        return Vec::new();
    }
    let mut singular = s("/spec/names/singular");
    if singular.is_empty() {
        singular = kind.to_lowercase();
    }
    let list_kind = match s("/spec/names/listKind") {
        l if l.is_empty() => format!("{kind}List"),
        l => l,
    };
    let namespaced = s("/spec/scope") != "Cluster";
    let versions = crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    versions
        .iter()
        .filter(|v| v["served"] == true)
        .map(|v| {
            let version = v
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let mut subresources = Vec::new();
            if v.pointer("/subresources/status").is_some() {
                subresources.push(Subresource {
                    name: "status".into(),
                    group: group.clone(),
                    version: version.clone(),
                    kind: kind.clone(),
                    verbs: vec!["get".into(), "patch".into(), "update".into()],
                });
            }
            let scale = v.pointer("/subresources/scale").cloned();
            if scale.is_some() {
                subresources.push(Subresource {
                    name: "scale".into(),
                    group: "autoscaling".into(),
                    version: "v1".into(),
                    kind: "Scale".into(),
                    verbs: vec!["get".into(), "patch".into(), "update".into()],
                });
            }
            Arc::new(Resource {
                group: group.clone(),
                version: version.clone(),
                plural: plural.clone(),
                singular: singular.clone(),
                kind: kind.clone(),
                list_kind: list_kind.clone(),
                namespaced,
                short_names: strings("/spec/names/shortNames"),
                categories: strings("/spec/names/categories"),
                verbs: crate::resources::ALL_VERBS
                    .iter()
                    .map(|s| s.to_string())
                    .collect(),
                subresources,
                storage: (group.clone(), plural.clone()),
                // Versions of one CRD share storage; objects keep the
                // apiVersion they were written with (no conversion webhook).
                storage_version: version.clone(),
                generation: true,
                create_on_update: false,
                custom: true,
                printer_columns: v
                    .get("additionalPrinterColumns")
                    .cloned()
                    .unwrap_or(Value::Null),
                structural: v
                    .pointer("/schema/openAPIV3Schema")
                    .filter(|s| s.is_object())
                    .map(|s| Arc::new(kelson_apimachinery::structural::parse(s))),
                schema: v
                    .pointer("/schema/openAPIV3Schema")
                    .cloned()
                    .unwrap_or(Value::Null),
                scale_paths: scale.unwrap_or(Value::Null),
            })
        })
        .collect()
}
