//! pods/binding (how a scheduler assigns a pod) and pods/eviction (a delete
//! that honours PodDisruptionBudgets).

use std::sync::Arc;

use http::{header, StatusCode};
use serde_json::{json, Value};

use crate::handler::{full, write_options, Api, Body, Query};
use crate::meta;
use crate::negotiate;
use crate::registry::{DeleteOptions, WriteOptions};
use crate::resources::Resource;
use crate::status::{success_status, ApiError, Cause};

fn created_status(group: &str, kind: &str, name: &str) -> http::Response<Body> {
    let mut s = success_status(group, kind, name, None);
    s["code"] = json!(201);
    http::Response::builder()
        .status(StatusCode::CREATED)
        .header(header::CONTENT_TYPE, "application/json")
        .body(full(serde_json::to_vec(&s).unwrap_or_default()))
        .unwrap_or_else(|_| http::Response::new(full("")))
}

pub async fn bind(
    api: &Arc<Api>,
    res: &Arc<Resource>,
    ns: Option<&str>,
    name: &str,
    parts: &http::request::Parts,
    body: &[u8],
) -> Result<http::Response<Body>, ApiError> {
    let ctype = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let binding = negotiate::decode_body(ctype, body)?;
    let node = binding
        .pointer("/target/name")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            ApiError::invalid(
                "",
                "Binding",
                name,
                vec![Cause {
                    reason: "FieldValueRequired".into(),
                    message: "Required value".into(),
                    field: "target.name".into(),
                }],
            )
        })?
        .to_string();
    let q = Query::empty();
    let opts = WriteOptions {
        binding: true,
        ..write_options(&q).unwrap_or_default()
    };
    let uid_pre = binding
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .map(String::from);
    api.registry
        .guaranteed_update(res, ns, name, &opts, |current| {
            let Some(pod) = current else {
                return Err(ApiError::not_found("", "pods", name));
            };
            if let Some(uid) = &uid_pre {
                if meta::uid(pod) != Some(uid.as_str()) {
                    return Err(ApiError::conflict("", "pods", name, "Precondition failed: UID mismatch"));
                }
            }
            if meta::deletion_timestamp(pod).is_some() {
                return Err(ApiError::conflict("", "pods", name, "pod is being deleted, cannot be assigned to a host"));
            }
            let assigned = pod.pointer("/spec/nodeName").and_then(Value::as_str).unwrap_or("");
            if !assigned.is_empty() {
                return Err(ApiError::conflict(
                    "",
                    "pods",
                    name,
                    &format!("pod {name} is already assigned to node \"{assigned}\""),
                ));
            }
            let mut new = pod.clone();
            new["spec"]["nodeName"] = json!(node);
            let conds = new["status"]
                .as_object_mut()
                .map(|s| s.entry("conditions").or_insert_with(|| json!([])));
            if let Some(Value::Array(conds)) = conds {
                conds.retain(|c| c.get("type") != Some(&json!("PodScheduled")));
                conds.push(json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": meta::now()}));
            }
            meta::meta_mut(&mut new).remove("resourceVersion");
            Ok(new)
        })
        .await?;
    Ok(created_status("", "pods", name))
}

pub async fn evict(
    api: &Arc<Api>,
    res: &Arc<Resource>,
    ns: Option<&str>,
    name: &str,
    parts: &http::request::Parts,
    body: &[u8],
) -> Result<http::Response<Body>, ApiError> {
    let ctype = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let eviction = negotiate::decode_body(ctype, body)?;
    let pod = api.registry.get(res, ns, name).await?;
    let phase = pod
        .pointer("/status/phase")
        .and_then(Value::as_str)
        .unwrap_or("");
    // Terminal and not-yet-running pods cannot disrupt anything.
    if phase == "Running" {
        if let (Some(ns), Some(pdbs)) = (ns, api.find("policy", "v1", "poddisruptionbudgets")) {
            let cache = api.registry.synced_cache(&pdbs).await?;
            let (items, _) = cache.list(&format!("{ns}/"));
            let labels = pod
                .pointer("/metadata/labels")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default();
            for item in items {
                let pdb = item.value();
                let Some(sel) = pdb.pointer("/spec/selector") else {
                    continue;
                };
                let Ok(Some(sel)) = kelson_apimachinery::labels::from_label_selector(sel) else {
                    continue;
                };
                if !sel.matches(&labels) {
                    continue;
                }
                let allowed = pdb
                    .pointer("/status/disruptionsAllowed")
                    .and_then(Value::as_i64)
                    .unwrap_or(0);
                if allowed < 1 {
                    let mut e = ApiError::too_many_requests(10);
                    e.message =
                        "Cannot evict pod as it would violate the pod's disruption budget.".into();
                    e.details.causes = vec![Cause {
                        reason: "DisruptionBudget".into(),
                        message: format!(
                            "The disruption budget {} needs {} healthy pods and has {} currently",
                            item.name,
                            pdb.pointer("/status/desiredHealthy")
                                .and_then(Value::as_i64)
                                .unwrap_or(0),
                            pdb.pointer("/status/currentHealthy")
                                .and_then(Value::as_i64)
                                .unwrap_or(0)
                        ),
                        field: String::new(),
                    }];
                    return Err(e);
                }
                // Spend one disruption; the disruption controller recomputes later.
                let pod_name = name.to_string();
                api.registry
                    .guaranteed_update(
                        &pdbs,
                        Some(ns),
                        &item.name,
                        &WriteOptions::default(),
                        |cur| {
                            let Some(cur) = cur else {
                                return Err(ApiError::not_found(
                                    "policy",
                                    "poddisruptionbudgets",
                                    &item.name,
                                ));
                            };
                            let mut new = cur.clone();
                            let left = cur
                                .pointer("/status/disruptionsAllowed")
                                .and_then(Value::as_i64)
                                .unwrap_or(0);
                            if left < 1 {
                                return Err(ApiError::too_many_requests(10));
                            }
                            new["status"]["disruptionsAllowed"] = json!(left - 1);
                            if let Some(o) = new["status"].as_object_mut() {
                                let d = o.entry("disruptedPods").or_insert_with(|| json!({}));
                                d[&pod_name] = json!(meta::now());
                            }
                            meta::meta_mut(&mut new).remove("resourceVersion");
                            Ok(new)
                        },
                    )
                    .await?;
            }
        }
    }
    let d = eviction.get("deleteOptions");
    let opts = DeleteOptions {
        dry_run: d
            .and_then(|d| d.get("dryRun"))
            .and_then(Value::as_array)
            .is_some_and(|a| a.iter().any(|x| x == "All")),
        grace_period: d
            .and_then(|d| d.get("gracePeriodSeconds"))
            .and_then(Value::as_i64),
        propagation: d
            .and_then(|d| d.get("propagationPolicy"))
            .and_then(Value::as_str)
            .map(String::from),
        uid: d
            .and_then(|d| d.pointer("/preconditions/uid"))
            .and_then(Value::as_str)
            .map(String::from),
        resource_version: d
            .and_then(|d| d.pointer("/preconditions/resourceVersion"))
            .and_then(Value::as_str)
            .map(String::from),
    };
    api.registry.delete(res, ns, name, &opts).await?;
    Ok(created_status("policy", "eviction", name))
}
