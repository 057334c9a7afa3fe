//! PATCH: JSON patch, merge patch, strategic merge patch and server-side
//! apply, each applied to the current object inside an optimistic-
//! concurrency retry loop.

use std::sync::Arc;

use http::{header, StatusCode};
use kelson_apimachinery::{openapi as schemas, strategic};
use serde_json::{json, Value};

use crate::convert;
use crate::handler::{check_type, field_check, respond_object, write_options, Api, Body, Query};
use crate::meta::{self, meta_mut};
use crate::negotiate::{self, Output, PatchType};
use crate::resources::Resource;
use crate::status::ApiError;
use crate::strategy;

#[allow(clippy::too_many_arguments)]
pub async fn patch(
    api: &Arc<Api>,
    res: &Arc<Resource>,
    ns: Option<&str>,
    name: &str,
    sub: &str,
    parts: &http::request::Parts,
    body: &[u8],
    q: &Query,
    out: Output,
) -> Result<http::Response<Body>, ApiError> {
    let ctype = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let kind = negotiate::patch_type(ctype)?;
    let mut opts = write_options(q)?;
    let patch = negotiate::decode_body(ctype, body)?;
    let definition = schemas::definition_name(&res.group, &res.version, &res.kind);
    if kind == PatchType::Strategic
        && (res.custom || definition.is_none_or(|d| !strategic::supports(d)))
    {
        return Err(ApiError::unsupported_media(
            "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml",
        ));
    }
    if kind == PatchType::Apply {
        if opts.field_manager.as_deref().is_none_or(str::is_empty) {
            return Err(ApiError::bad_request(
                "PATCH with application/apply-patch+yaml requires fieldManager to be set",
            ));
        }
        if !patch.is_object() {
            return Err(ApiError::bad_request(
                "the applied configuration must be an object",
            ));
        }
    }
    if kind == PatchType::Json && !patch.is_array() {
        return Err(ApiError::bad_request(
            "json: cannot unmarshal object into Go value of type jsonpatch.Patch",
        ));
    }
    if matches!(kind, PatchType::Merge | PatchType::Strategic) && !patch.is_object() {
        return Err(ApiError::bad_request("the patch must be a JSON object"));
    }
    let force = q.flag("force");
    if force && kind != PatchType::Apply {
        return Err(ApiError::bad_request(
            "force is only allowed for apply patches",
        ));
    }
    if opts.field_manager.is_none() {
        opts.field_manager = Some("unknown".into());
    }
    let mut warnings: Vec<String> = Vec::new();
    let create_ok = kind == PatchType::Apply && sub.is_empty();
    if create_ok {
        if let Some(ns) = ns {
            crate::handler::may_create_in(api, res, ns, name).await?;
        }
    }
    let (stored, created) = api
        .registry
        .guaranteed_update(res, ns, name, &opts, |current| {
            let Some(current) = current else {
                if !create_ok {
                    return Err(ApiError::not_found(&res.group, &res.plural, name));
                }
                let mut obj = patch.clone();
                check_type(res, &mut obj)?;
                warnings = field_check(res, &obj, q)?;
                {
                    let m = meta_mut(&mut obj);
                    m.insert("name".into(), json!(name));
                    if let Some(ns) = ns {
                        m.insert("namespace".into(), json!(ns));
                    }
                }
                strategy::apply_defaults(res, &mut obj);
                return Ok(convert::to_storage(res, obj));
            };
            let served = convert::from_storage(res, current.clone());
            let current_rv = meta::resource_version(&served).map(String::from);
            let mut patched = match kind {
                PatchType::Json => {
                    let p: json_patch::Patch = serde_json::from_value(patch.clone())
                        .map_err(|e| ApiError::bad_request(format!("invalid JSON patch: {e}")))?;
                    let mut doc = served.clone();
                    json_patch::patch(&mut doc, &p).map_err(|e| {
                        ApiError::new(422, "Invalid", format!("the server rejected our request due to an error in our request: {e}"))
                    })?;
                    doc
                }
                PatchType::Merge => {
                    let mut doc = served.clone();
                    json_patch::merge(&mut doc, &patch);
                    doc
                }
                PatchType::Strategic => {
                    let def = definition.unwrap_or_default();
                    strategic::strategic_merge(&served, &patch, def).map_err(|e| {
                        ApiError::new(e.http_status(), if e.http_status() == 422 { "Invalid" } else { "BadRequest" }, e.to_string())
                    })?
                }
                PatchType::Apply => apply_config(res, &served, &patch, definition, opts.field_manager.as_deref().unwrap_or(""), force)?,
            };
            if !patched.is_object() {
                return Err(ApiError::bad_request("the patch produced something that is not an object"));
            }
            check_type(res, &mut patched)?;
            warnings = field_check(res, &patched, q)?;
            // A resourceVersion left as it was read is not a precondition.
            if meta::resource_version(&patched).map(String::from) == current_rv {
                meta_mut(&mut patched).remove("resourceVersion");
            }
            strategy::apply_defaults(res, &mut patched);
            let patched = convert::to_storage(res, patched);
            Ok(strategy::merge_update(res, sub, patched, current))
        })
        .await?;
    crate::hooks::after_write(api, res, &stored).await;
    let code = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(respond_object(res, stored, code, out, &warnings))
}

/// Server-side apply, first cut: the applied configuration is merged into
/// the live object with the type's merge rules, and the manager's entry in
/// managedFields is recorded.
fn apply_config(
    res: &Resource,
    live: &Value,
    applied: &Value,
    definition: Option<&'static str>,
    manager: &str,
    _force: bool,
) -> Result<Value, ApiError> {
    let mut config = applied.clone();
    if let Some(m) = config.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("managedFields");
        m.remove("resourceVersion");
    }
    let mut out = match definition.filter(|d| !res.custom && strategic::supports(d)) {
        Some(def) => strategic::strategic_merge(live, &config, def)
            .map_err(|e| ApiError::new(e.http_status(), "BadRequest", e.to_string()))?,
        None => {
            let mut doc = live.clone();
            json_patch::merge(&mut doc, &config);
            doc
        }
    };
    let entry = json!({
        "manager": manager,
        "operation": "Apply",
        "apiVersion": res.api_version(),
        "time": meta::now(),
        "fieldsType": "FieldsV1",
        "fieldsV1": fields_v1(&config),
    });
    let m = meta_mut(&mut out);
    let mut managed: Vec<Value> = m
        .get("managedFields")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    managed.retain(|e| {
        !(e.get("manager").and_then(Value::as_str) == Some(manager)
            && e.get("operation") == Some(&json!("Apply")))
    });
    managed.push(entry);
    m.insert("managedFields".into(), Value::Array(managed));
    Ok(out)
}

/// The set of fields a configuration sets, in the FieldsV1 shape ("f:name"
/// for object fields, "k:{...}" for keyed list items, "v:..." for set items).
fn fields_v1(config: &Value) -> Value {
    fn walk(v: &Value) -> Value {
        match v {
            Value::Object(o) => {
                let mut out = serde_json::Map::new();
                for (k, v) in o {
                    if k == "apiVersion" || k == "kind" {
                        continue;
                    }
                    out.insert(format!("f:{k}"), walk(v));
                }
                Value::Object(out)
            }
            Value::Array(items) => {
                let mut out = serde_json::Map::new();
                for item in items {
                    match item {
                        Value::Object(o) => {
                            let key = [
                                "name",
                                "containerPort",
                                "port",
                                "mountPath",
                                "type",
                                "ip",
                                "key",
                            ]
                            .iter()
                            .find_map(|k| o.get(*k).map(|v| (k, v)));
                            if let Some((k, kv)) = key {
                                let mut inner = walk(item);
                                if let Some(i) = inner.as_object_mut() {
                                    i.insert(".".into(), json!({}));
                                }
                                out.insert(format!("k:{{\"{k}\":{kv}}}"), inner);
                            }
                        }
                        other => {
                            out.insert(format!("v:{other}"), json!({}));
                        }
                    }
                }
                Value::Object(out)
            }
            _ => json!({}),
        }
    }
    walk(config)
}
