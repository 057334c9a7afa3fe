//! PATCH: JSON patch, merge patch, strategic merge patch and server-side
//! apply, each applied to the current object inside an optimistic-
//! concurrency retry loop.

use std::sync::Arc;

use http::{header, StatusCode};
use kelson_apimachinery::{openapi as schemas, strategic};
use serde_json::json;

use crate::convert;
use crate::handler::{
    check_type, field_check, respond_written, serves_stored_json, write_options, Api, Body, Query,
};
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
    opts.admission = Some(crate::admission::Admission::new(api, sub));
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
    let manager = crate::fieldmanager::manager_name(opts.field_manager.as_deref(), &parts.headers);
    let mut warnings: Vec<String> = Vec::new();
    let create_ok = kind == PatchType::Apply && sub.is_empty();
    if create_ok {
        if let Some(ns) = ns {
            crate::handler::may_create_in(api, res, ns, name).await?;
        }
    }
    let (stored, created, json) = api
        .registry
        .guaranteed_update_encoded(res, ns, name, &opts, serves_stored_json(res, out), |current| {
            let Some(current) = current else {
                if !create_ok {
                    return Err(ApiError::not_found(&res.group, &res.plural, name));
                }
                check_type(res, &mut patch.clone())?;
                warnings = field_check(res, &patch, q)?;
                let mut obj = crate::fieldmanager::apply(res, sub, None, &patch, &manager, force)?;
                check_type(res, &mut obj)?;
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
            let served = convert::served(res, current);
            let served = served.as_ref();
            let current_rv = meta::resource_version(served).map(String::from);
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
                    strategic::strategic_merge(served, &patch, def).map_err(|e| {
                        ApiError::new(e.http_status(), if e.http_status() == 422 { "Invalid" } else { "BadRequest" }, e.to_string())
                    })?
                }
                PatchType::Apply => crate::fieldmanager::apply(res, sub, Some(served), &patch, &manager, force)?,
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
            if kind != PatchType::Apply {
                crate::fieldmanager::track_update(res, sub, Some(served), &mut patched, &manager);
            }
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
    Ok(respond_written(res, stored, json, code, out, &warnings))
}
