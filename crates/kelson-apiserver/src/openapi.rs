//! /openapi/v2 and /openapi/v3, built on demand from the served resources
//! (k8s-openapi's schemas for built-ins, the CRD schema for custom ones).

use std::sync::Arc;

use bytes::Bytes;
use http::{header, Response, StatusCode};
use kelson_apimachinery::openapi::{self, SchemaSource, ServedResource};
use parking_lot::Mutex;
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

/// Clients ask for the gnostic media type with "@v1.0", which Go's media
/// type parser refuses in a response header; upstream answers with this
/// spelling instead.
const PROTOBUF_RESPONSE_TYPE: &str = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";

/// The encoded v2 document for one set of served resources.
#[derive(Default)]
pub struct V2Cache(Mutex<Option<V2Entry>>);

struct V2Entry {
    /// The resource list the entry was built from, compared by pointer.
    resources: Arc<Vec<Arc<Resource>>>,
    json: Bytes,
    protobuf: Option<Bytes>,
}

/// GET /openapi/v2: JSON, or gnostic protobuf for clients that accept only
/// that (kubectl 1.27–1.29).
pub fn v2(api: &Api, accept: Option<&str>) -> Result<Response<Body>, ApiError> {
    let wants_protobuf = accept.is_some_and(|a| {
        (a.contains(kelson_protobuf::gnostic::CONTENT_TYPE) || a.contains(PROTOBUF_RESPONSE_TYPE))
            && !a.contains("json")
    });
    if accept.is_some_and(|a| a.contains("protobuf") && !a.contains("json")) && !wants_protobuf {
        return Err(ApiError::not_acceptable(format!(
            "only the following media types are accepted: application/json, {}",
            kelson_protobuf::gnostic::CONTENT_TYPE
        )));
    }
    let resources = api.resources();
    let mut cache = api.openapi_v2.0.lock();
    let entry = match cache.as_mut() {
        Some(e) if Arc::ptr_eq(&e.resources, &resources) => e,
        _ => cache.insert(V2Entry {
            json: Bytes::from(serde_json::to_vec(&openapi::v2(&served(api))).unwrap_or_default()),
            resources,
            protobuf: None,
        }),
    };
    let (body, ctype) = if wants_protobuf {
        let pb = match &entry.protobuf {
            Some(pb) => pb.clone(),
            None => {
                let doc: Value = serde_json::from_slice(&entry.json).unwrap_or_default();
                let pb = Bytes::from(
                    kelson_protobuf::gnostic::encode_v2(&doc)
                        .map_err(|e| ApiError::internal(format!("encoding OpenAPI v2: {e}")))?,
                );
                entry.protobuf = Some(pb.clone());
                pb
            }
        };
        (pb, PROTOBUF_RESPONSE_TYPE)
    } else {
        (entry.json.clone(), "application/json")
    };
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, ctype)
        .body(full(body))
        .unwrap_or_else(|_| Response::new(full(""))))
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
        return match &res.structural {
            Some(schema) => schema.prune(&mut obj.clone()),
            None => Vec::new(),
        };
    }
    match openapi::definition_name(&res.group, &res.version, &res.kind) {
        Some(def) => openapi::unknown_fields(def, obj),
        None => Vec::new(),
    }
}
