//! The scale subresource (autoscaling/v1 Scale) of workloads and of custom
//! resources that declare one.

use std::sync::Arc;

use http::{header, Method, Request, StatusCode};
use serde_json::{json, Value};

use crate::handler::{full, write_options, Api, Body, Query};
use crate::meta;
use crate::negotiate::{self, Output, PatchType};
use crate::resources::Resource;
use crate::status::ApiError;

/// JSON pointers of (spec replicas, status replicas, label selector).
fn paths(res: &Resource) -> (String, String, Option<String>) {
    if res.custom {
        let p = |k: &str| {
            res.scale_paths
                .get(k)
                .and_then(Value::as_str)
                .map(|s| s.trim_start_matches('.').replace('.', "/"))
                .map(|s| format!("/{s}"))
        };
        (
            p("specReplicasPath").unwrap_or_else(|| "/spec/replicas".into()),
            p("statusReplicasPath").unwrap_or_else(|| "/status/replicas".into()),
            p("labelSelectorPath"),
        )
    } else {
        ("/spec/replicas".into(), "/status/replicas".into(), None)
    }
}

fn selector_string(res: &Resource, obj: &Value) -> Option<String> {
    let (_, _, sel_path) = paths(res);
    if let Some(p) = sel_path {
        return obj.pointer(&p).and_then(Value::as_str).map(String::from);
    }
    let sel = obj.pointer("/spec/selector")?;
    if sel.is_object() {
        kelson_apimachinery::labels::from_label_selector(sel)
            .ok()
            .flatten()
            .map(|s| s.to_string())
    } else {
        // ReplicationControllers use a plain map.
        let m = sel.as_object()?;
        Some(
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect::<Vec<_>>()
                .join(","),
        )
    }
}

fn to_scale(res: &Resource, obj: &Value) -> Value {
    let (spec_p, status_p, _) = paths(res);
    let m = meta::meta(obj).cloned().unwrap_or_default();
    let mut status =
        json!({"replicas": obj.pointer(&status_p).and_then(Value::as_i64).unwrap_or(0)});
    if let Some(s) = selector_string(res, obj).filter(|s| !s.is_empty()) {
        status["selector"] = json!(s);
    }
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": m.get("name"),
            "namespace": m.get("namespace"),
            "uid": m.get("uid"),
            "resourceVersion": m.get("resourceVersion"),
            "creationTimestamp": m.get("creationTimestamp"),
        },
        "spec": {"replicas": obj.pointer(&spec_p).and_then(Value::as_i64).unwrap_or(0)},
        "status": status,
    })
}

fn respond(v: &Value, out: Output) -> http::Response<Body> {
    let (body, ct) = if out == Output::Yaml {
        (negotiate::to_yaml(v), "application/yaml")
    } else {
        (
            serde_json::to_vec(v).unwrap_or_default(),
            "application/json",
        )
    };
    http::Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, ct)
        .body(full(body))
        .unwrap_or_else(|_| http::Response::new(full("")))
}

fn set_pointer(obj: &mut Value, ptr: &str, v: Value) {
    let mut cur = obj;
    let parts: Vec<&str> = ptr.trim_start_matches('/').split('/').collect();
    for (i, p) in parts.iter().enumerate() {
        if i + 1 == parts.len() {
            if let Some(o) = cur.as_object_mut() {
                o.insert((*p).to_string(), v);
            }
            return;
        }
        if !cur.get(*p).is_some_and(Value::is_object) {
            if let Some(o) = cur.as_object_mut() {
                o.insert((*p).to_string(), json!({}));
            }
        }
        match cur.get_mut(*p) {
            Some(next) => cur = next,
            None => return,
        }
    }
}

pub async fn serve(
    api: &Arc<Api>,
    res: &Arc<Resource>,
    ns: Option<&str>,
    name: &str,
    req: Request<hyper::body::Incoming>,
    q: &Query,
    out: Output,
) -> Result<http::Response<Body>, ApiError> {
    let out = match out {
        Output::Json | Output::Yaml => out,
        _ => Output::Json,
    };
    let method = req.method().clone();
    if method == Method::GET {
        let obj = api.registry.get(res, ns, name).await?;
        return Ok(respond(&to_scale(res, &obj), out));
    }
    if method != Method::PUT && method != Method::PATCH {
        return Err(ApiError::method_not_allowed(
            "the server does not allow this method on the requested resource",
        ));
    }
    let mut opts = write_options(q)?;
    opts.admission = Some(crate::admission::Admission::new(api, "scale"));
    let manager = crate::fieldmanager::manager_name(opts.field_manager.as_deref(), req.headers());
    let ctype = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    let body = http_body_util::BodyExt::collect(http_body_util::Limited::new(
        req.into_body(),
        negotiate::MAX_BODY,
    ))
    .await
    .map_err(|_| ApiError::too_large("Request entity too large: limit is 3145728"))?
    .to_bytes();
    let patch_kind = if method == Method::PATCH {
        Some(negotiate::patch_type(ctype.as_deref())?)
    } else {
        None
    };
    let input = negotiate::decode_body(ctype.as_deref(), &body)?;
    let (spec_p, _, _) = paths(res);
    let (stored, _) = api
        .registry
        .guaranteed_update(res, ns, name, &opts, |current| {
            let Some(current) = current else {
                return Err(ApiError::not_found(&res.group, &res.plural, name));
            };
            let scale = to_scale(res, current);
            let desired = match patch_kind {
                None => input.clone(),
                Some(PatchType::Json) => {
                    let p: json_patch::Patch = serde_json::from_value(input.clone())
                        .map_err(|e| ApiError::bad_request(format!("invalid JSON patch: {e}")))?;
                    let mut s = scale.clone();
                    json_patch::patch(&mut s, &p)
                        .map_err(|e| ApiError::new(422, "Invalid", e.to_string()))?;
                    s
                }
                Some(_) => {
                    let mut s = scale.clone();
                    json_patch::merge(&mut s, &input);
                    s
                }
            };
            let replicas = desired
                .pointer("/spec/replicas")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            if replicas < 0 {
                return Err(ApiError::invalid(
                    "autoscaling",
                    "Scale",
                    name,
                    vec![crate::status::Cause {
                        reason: "FieldValueInvalid".into(),
                        message: format!(
                            "Invalid value: {replicas}: must be greater than or equal to 0"
                        ),
                        field: "spec.replicas".into(),
                    }],
                ));
            }
            let mut new = current.clone();
            set_pointer(&mut new, &spec_p, json!(replicas));
            // Only a resourceVersion the client sent is a precondition; the
            // one copied from the current object by a patch is not (a
            // concurrent status write must not turn into a 409).
            let sent_rv = match patch_kind {
                None => meta::resource_version(&input),
                Some(PatchType::Json) => input
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|op| {
                        op.get("path").and_then(Value::as_str) == Some("/metadata/resourceVersion")
                    })
                    .then(|| meta::resource_version(&desired))
                    .flatten(),
                Some(_) => input
                    .pointer("/metadata/resourceVersion")
                    .and_then(Value::as_str),
            };
            match sent_rv {
                Some(rv) => {
                    crate::meta::meta_mut(&mut new).insert("resourceVersion".into(), json!(rv));
                }
                None => {
                    crate::meta::meta_mut(&mut new).remove("resourceVersion");
                }
            }
            // Whoever scales owns the replicas field, through "scale".
            crate::fieldmanager::track_update(res, "scale", Some(current), &mut new, &manager);
            Ok(new)
        })
        .await?;
    Ok(respond(&to_scale(res, &stored), out))
}
