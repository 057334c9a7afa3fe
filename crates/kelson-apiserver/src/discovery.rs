//! Discovery documents: /api, /apis, /api/v1, /apis/G, /apis/G/V, in both
//! the classic form and the aggregated apidiscovery.k8s.io/v2 form that
//! kubectl 1.30+ asks for first.

use std::sync::Arc;

use serde_json::{json, Value};

use crate::resources::Resource;

/// Served groups in order, each with its versions (preferred first).
pub fn groups(resources: &[Arc<Resource>]) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for r in resources.iter().filter(|r| !r.group.is_empty()) {
        match out.iter_mut().find(|(g, _)| *g == r.group) {
            Some((_, versions)) => {
                if !versions.contains(&r.version) {
                    versions.push(r.version.clone());
                }
            }
            None => out.push((r.group.clone(), vec![r.version.clone()])),
        }
    }
    out
}

fn group_version(g: &str, v: &str) -> String {
    if g.is_empty() {
        v.to_string()
    } else {
        format!("{g}/{v}")
    }
}

pub fn api_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}]
    })
}

fn api_group(g: &str, versions: &[String]) -> Value {
    let vs: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": group_version(g, v), "version": v}))
        .collect();
    json!({
        "name": g,
        "versions": vs,
        "preferredVersion": vs.first().cloned().unwrap_or(Value::Null),
    })
}

pub fn api_group_list(resources: &[Arc<Resource>]) -> Value {
    let groups: Vec<Value> = groups(resources)
        .iter()
        .map(|(g, vs)| api_group(g, vs))
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

pub fn api_group_doc(resources: &[Arc<Resource>], group: &str) -> Option<Value> {
    let (g, vs) = groups(resources).into_iter().find(|(g, _)| g == group)?;
    let mut doc = api_group(&g, &vs);
    doc["kind"] = json!("APIGroup");
    doc["apiVersion"] = json!("v1");
    Some(doc)
}

pub fn resource_list(resources: &[Arc<Resource>], group: &str, version: &str) -> Option<Value> {
    let mine: Vec<&Arc<Resource>> = resources
        .iter()
        .filter(|r| r.group == group && r.version == version)
        .collect();
    if mine.is_empty() {
        return None;
    }
    let mut list = Vec::new();
    for r in mine {
        let mut e = json!({
            "name": r.plural,
            "singularName": r.singular,
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": r.verbs,
        });
        if !r.short_names.is_empty() {
            e["shortNames"] = json!(r.short_names);
        }
        if !r.categories.is_empty() {
            e["categories"] = json!(r.categories);
        }
        if r.group != r.storage.0 || r.version != r.storage_version {
            // Kubernetes reports the storage version hash only for the
            // storage version; leaving it out elsewhere is harmless.
        }
        list.push(e);
        for s in &r.subresources {
            let mut e = json!({
                "name": format!("{}/{}", r.plural, s.name),
                "singularName": "",
                "namespaced": r.namespaced,
                "kind": s.kind,
                "verbs": s.verbs,
            });
            if s.group != r.group || s.version != r.version {
                e["group"] = json!(s.group);
                e["version"] = json!(s.version);
            }
            list.push(e);
        }
    }
    Some(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version(group, version),
        "resources": list,
    }))
}

fn discovery_resource(r: &Resource) -> Value {
    let mut e = json!({
        "resource": r.plural,
        "responseKind": {"group": r.group, "version": r.version, "kind": r.kind},
        "scope": if r.namespaced { "Namespaced" } else { "Cluster" },
        "singularResource": r.singular,
        "verbs": r.verbs,
    });
    if !r.short_names.is_empty() {
        e["shortNames"] = json!(r.short_names);
    }
    if !r.categories.is_empty() {
        e["categories"] = json!(r.categories);
    }
    if !r.subresources.is_empty() {
        let subs: Vec<Value> = r
            .subresources
            .iter()
            .map(|s| {
                json!({
                    "subresource": s.name,
                    "responseKind": {"group": s.group, "version": s.version, "kind": s.kind},
                    "verbs": s.verbs,
                })
            })
            .collect();
        e["subresources"] = json!(subs);
    }
    e
}

/// The aggregated document for `/api` (core only) or `/apis` (all groups).
pub fn aggregated(resources: &[Arc<Resource>], core: bool, api_version: &str) -> Value {
    let mut items = Vec::new();
    if core {
        let res: Vec<Value> = resources
            .iter()
            .filter(|r| r.group.is_empty())
            .map(|r| discovery_resource(r))
            .collect();
        items.push(json!({
            "metadata": {"creationTimestamp": null},
            "versions": [{"version": "v1", "resources": res, "freshness": "Current"}],
        }));
    } else {
        for (g, versions) in groups(resources) {
            let vs: Vec<Value> = versions
                .iter()
                .map(|v| {
                    let res: Vec<Value> = resources
                        .iter()
                        .filter(|r| r.group == g && &r.version == v)
                        .map(|r| discovery_resource(r))
                        .collect();
                    json!({"version": v, "resources": res, "freshness": "Current"})
                })
                .collect();
            items.push(json!({"metadata": {"name": g, "creationTimestamp": null}, "versions": vs}));
        }
    }
    json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": api_version,
        "metadata": {},
        "items": items,
    })
}
