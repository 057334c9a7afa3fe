//! /openapi/v2 and /openapi/v3, built on demand from the served resources
//! (k8s-openapi's schemas for built-ins, the CRD schema for custom ones).

use http::{header, Response, StatusCode};
use kelson_apimachinery::openapi::{self, SchemaSource, ServedResource};
use serde_json::Value;

use crate::handler::{full, Api, Body};
use crate::resources::Resource;
use crate::status::ApiError;

fn served(api: &Api) -> Vec<ServedResource> {
    api.resources()
        .iter()
        .map(|r| ServedResource {
            group: r.group.clone(),
            version: r.version.clone(),
            kind: r.kind.clone(),
            plural: r.plural.clone(),
            namespaced: r.namespaced,
            verbs: r.verbs.clone(),
            subresources: r
                .subresources
                .iter()
                .filter(|s| s.name == "status" || s.name == "scale")
                .map(|s| s.name.clone())
                .collect(),
            schema: if r.custom {
                SchemaSource::Custom(r.schema.clone())
            } else {
                SchemaSource::BuiltIn
            },
        })
        .collect()
}

fn respond(v: &Value) -> Response<Body> {
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(full(serde_json::to_vec(v).unwrap_or_default()))
        .unwrap_or_else(|_| Response::new(full("")))
}

pub fn v2(api: &Api) -> Response<Body> {
    respond(&openapi::v2(&served(api)))
}

pub fn v3_index(api: &Api) -> Response<Body> {
    respond(&openapi::v3_index(&served(api)))
}

pub fn v3_document(api: &Api, path: &str) -> Result<Response<Body>, ApiError> {
    openapi::v3_document(&served(api), path)
        .map(|d| respond(&d))
        .ok_or_else(|| {
            ApiError::new(
                404,
                "NotFound",
                "the server could not find the requested resource",
            )
        })
}

/// Paths of fields in `obj` that its schema does not know.
pub fn unknown_fields(res: &Resource, obj: &Value) -> Vec<String> {
    if res.custom {
        if res.schema.is_null() {
            return Vec::new();
        }
        return openapi::unknown_fields_in_schema(&res.schema, obj);
    }
    match openapi::definition_name(&res.group, &res.version, &res.kind) {
        Some(def) => openapi::unknown_fields(def, obj),
        None => Vec::new(),
    }
}
