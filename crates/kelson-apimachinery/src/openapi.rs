//! OpenAPI documents (`/openapi/v2`, `/openapi/v3`) and strict field checking.
//!
//! Schemas come from k8s-openapi's `schemars` impls (so they match the
//! upstream 1.33 definitions and names), post-processed into the shapes the
//! upstream API server publishes: `x-kubernetes-group-version-kind` on kinds,
//! int-or-string and quantity shapes, list/patch extensions, and REST paths
//! whose operations carry `x-kubernetes-action` and the GVK. Documents are
//! built on demand; the caller caches them.

mod builtin;
mod custom;
mod lists;
mod paths;
mod sha512;
mod unknown;

use builtin::{BuiltIn, V2_PREFIX, V3_PREFIX};
use paths::Flavor;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

/// One resource the API server serves (built-in or from a CRD).
#[derive(Clone, Debug, PartialEq)]
pub struct ServedResource {
    pub group: String,
    pub version: String,
    pub kind: String,
    pub plural: String,
    pub namespaced: bool,
    pub verbs: Vec<String>,
    /// e.g. "status", "scale", "eviction", "binding", "log".
    pub subresources: Vec<String>,
    pub schema: SchemaSource,
}

/// Where a resource's schema comes from.
#[derive(Clone, Debug, PartialEq)]
pub enum SchemaSource {
    /// Looked up by group/version/kind among k8s-openapi's types.
    BuiltIn,
    /// A CRD version's `openAPIV3Schema`.
    Custom(Value),
}

/// Definition name of a built-in kind, e.g. ("apps","v1","Deployment") ->
/// "io.k8s.api.apps.v1.Deployment".
pub fn definition_name(group: &str, version: &str, kind: &str) -> Option<&'static str> {
    builtin::lookup(group, version, kind).map(|b| b.def)
}

/// "api/v1" for the core group, "apis/<group>/<version>" otherwise.
pub(crate) fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// (kind definition, list definition, strategic merge patch supported).
fn resource_defs(r: &ServedResource) -> Option<(String, String, bool)> {
    match &r.schema {
        SchemaSource::BuiltIn => {
            let b = builtin::lookup(&r.group, &r.version, &r.kind)?;
            // Strategic merge patch is offered where the server implements it.
            let smp = crate::strategic::supports(b.def);
            Some((b.def.to_string(), format!("{}List", b.def), smp))
        }
        SchemaSource::Custom(_) => {
            let def = custom::def_name(&r.group, &r.version, &r.kind);
            let list = format!("{def}List");
            Some((def, list, false))
        }
    }
}

fn needs_list(r: &ServedResource) -> bool {
    match &r.schema {
        SchemaSource::BuiltIn => {
            builtin::lookup(&r.group, &r.version, &r.kind).is_some_and(|b| b.has_list)
                || r.verbs.iter().any(|v| v == "list")
        }
        SchemaSource::Custom(_) => true,
    }
}

fn gvk(group: &str, version: &str, kind: &str) -> Value {
    json!({"group": group, "kind": kind, "version": version})
}

/// Builds the definitions for `resources` plus `extra` built-in roots, with
/// `#/definitions/` refs (rewritten later for v3).
fn build_definitions(
    resources: &[&ServedResource],
    extra: &[&str],
    gvs: &BTreeSet<(String, String)>,
    flavor: Flavor,
) -> Map<String, Value> {
    let v3 = flavor == Flavor::V3;
    let mut roots: Vec<&BuiltIn> = extra.iter().filter_map(|d| builtin::by_def(d)).collect();
    if !resources.is_empty() {
        for d in [
            builtin::STATUS,
            builtin::DELETE_OPTIONS,
            builtin::WATCH_EVENT,
            builtin::API_RESOURCE_LIST,
            builtin::PATCH,
        ] {
            roots.extend(builtin::by_def(d));
        }
    }
    let mut any_custom = false;
    for r in resources {
        match r.schema {
            SchemaSource::BuiltIn => roots.extend(builtin::lookup(&r.group, &r.version, &r.kind)),
            SchemaSource::Custom(_) => any_custom = true,
        }
        for sub in &r.subresources {
            let d = match sub.as_str() {
                "scale" => builtin::SCALE,
                "eviction" => builtin::EVICTION,
                "binding" => builtin::BINDING,
                _ => continue,
            };
            roots.extend(builtin::by_def(d));
        }
    }
    if any_custom {
        roots.extend(builtin::by_def(builtin::OBJECT_META));
    }
    roots.sort_by_key(|b| b.def);
    roots.dedup_by_key(|b| b.def);

    let mut defs = builtin::generate(&roots);
    for (name, schema) in defs.iter_mut() {
        builtin::adjust_special(name, schema, v3);
        builtin::drop_metadata_required(schema);
        lists::apply(name, schema);
        if !v3 {
            strip_unions(schema);
        }
    }

    // Lists and custom kinds.
    let mut kinds: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for r in resources {
        let Some((def, list_def, _)) = resource_defs(r) else {
            continue;
        };
        if let SchemaSource::Custom(schema) = &r.schema {
            defs.insert(def.clone(), custom::wrap(schema, v3));
            kinds
                .entry(def.clone())
                .or_default()
                .push(gvk(&r.group, &r.version, &r.kind));
        }
        if needs_list(r) {
            defs.insert(list_def.clone(), custom::list_def(&r.kind, &def));
            kinds.entry(list_def).or_default().push(gvk(
                &r.group,
                &r.version,
                &format!("{}List", r.kind),
            ));
        }
    }
    // Group-version-kinds of the built-in kinds present in this document.
    for b in builtin::BUILTINS.iter().filter(|b| !b.kind.is_empty()) {
        if defs.contains_key(b.def) {
            let list = if b.def == builtin::DELETE_OPTIONS || b.def == builtin::WATCH_EVENT {
                // Shared by every group-version, as upstream registers them.
                gvs.iter().map(|(g, v)| gvk(g, v, b.kind)).collect()
            } else {
                vec![gvk(b.group, b.version, b.kind)]
            };
            kinds.entry(b.def.to_string()).or_default().extend(list);
        }
    }
    for (def, mut list) in kinds {
        list.dedup();
        if let Some(obj) = defs.get_mut(&def).and_then(Value::as_object_mut) {
            obj.insert("x-kubernetes-group-version-kind".into(), Value::Array(list));
        }
    }
    defs
}

/// Swagger 2.0 cannot express `oneOf`/`anyOf` (k8s-openapi uses them for the
/// JSONSchemaPropsOr* unions); upstream publishes those as untyped schemas.
fn strip_unions(schema: &mut Value) {
    if let Some(obj) = schema.as_object_mut() {
        obj.remove("oneOf");
        obj.remove("anyOf");
    }
}

/// Rewrites `#/definitions/` refs into `#/components/schemas/` refs.
fn rewrite_refs(v: &mut Value) {
    match v {
        Value::Object(m) => {
            for (k, val) in m.iter_mut() {
                // JSONSchemaProps has a *property* named "$ref": only string
                // values are references.
                if let (true, Some(s)) = (k == "$ref", val.as_str()) {
                    if let Some(rest) = s.strip_prefix(V2_PREFIX) {
                        *val = Value::String(format!("{V3_PREFIX}{rest}"));
                    }
                } else {
                    rewrite_refs(val);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(rewrite_refs),
        _ => {}
    }
}

/// Every (group, version) served, plus core v1 where the meta kinds live.
fn served_gvs(resources: &[ServedResource]) -> BTreeSet<(String, String)> {
    let mut gvs: BTreeSet<(String, String)> = resources
        .iter()
        .map(|r| (r.group.clone(), r.version.clone()))
        .collect();
    gvs.insert((String::new(), "v1".into()));
    gvs
}

fn served_groups(resources: &[ServedResource]) -> BTreeSet<String> {
    resources
        .iter()
        .filter(|r| !r.group.is_empty())
        .map(|r| r.group.clone())
        .collect()
}

fn add_resource_paths(
    resources: &[&ServedResource],
    flavor: Flavor,
    paths: &mut Map<String, Value>,
) {
    for r in resources {
        if let Some((def, list_def, smp)) = resource_defs(r) {
            paths::resource_paths(r, &def, &list_def, smp, flavor, paths);
        }
    }
}

const BEARER: &str = "Bearer Token authentication";

/// The Swagger 2.0 document (`/openapi/v2`) describing every served resource.
pub fn v2(resources: &[ServedResource]) -> Value {
    let all: Vec<&ServedResource> = resources.iter().collect();
    let gvs = served_gvs(resources);
    let defs = build_definitions(
        &all,
        &[
            builtin::API_VERSIONS,
            builtin::API_GROUP_LIST,
            builtin::API_GROUP,
            builtin::VERSION_INFO,
        ],
        &gvs,
        Flavor::V2,
    );
    let mut paths = Map::new();
    for which in ["api", "apis", "version"] {
        paths::root_path(which, Flavor::V2, &mut paths);
    }
    for g in served_groups(resources) {
        paths::group_path(&g, Flavor::V2, &mut paths);
    }
    for (g, v) in resources
        .iter()
        .map(|r| (&r.group, &r.version))
        .collect::<BTreeSet<_>>()
    {
        paths::resources_path(g, v, Flavor::V2, &mut paths);
    }
    add_resource_paths(&all, Flavor::V2, &mut paths);
    json!({
        "swagger": "2.0",
        "info": {"title": "Kubernetes", "version": "unversioned"},
        "paths": paths,
        "definitions": defs,
        "securityDefinitions": {
            "BearerToken": {"description": BEARER, "type": "apiKey", "name": "authorization", "in": "header"}
        },
        "security": [{"BearerToken": []}],
    })
}

fn v3_wrap(mut paths: Map<String, Value>, mut defs: Map<String, Value>) -> Value {
    for p in paths.values_mut() {
        rewrite_refs(p);
    }
    for d in defs.values_mut() {
        rewrite_refs(d);
    }
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "unversioned"},
        "paths": paths,
        "components": {
            "schemas": defs,
            "securitySchemes": {
                "BearerToken": {"type": "apiKey", "description": BEARER, "name": "authorization", "in": "header"}
            },
        },
    })
}

/// The document keys of the /openapi/v3 index, in order.
fn v3_keys(resources: &[ServedResource]) -> Vec<String> {
    let mut keys: BTreeSet<String> = ["api", "apis", "version"].map(String::from).into();
    for r in resources {
        keys.insert(gv_path(&r.group, &r.version));
        if !r.group.is_empty() {
            keys.insert(format!("apis/{}", r.group));
        }
    }
    keys.into_iter().collect()
}

/// The /openapi/v3 index: `{"paths": {"apis/apps/v1": {"serverRelativeURL":
/// "/openapi/v3/apis/apps/v1?hash=<SHA512>"}, ...}}`. The hash is the
/// upper-case hex SHA-512 of the compact JSON serialization of
/// [`v3_document`]'s result, so the server must serve exactly
/// `serde_json::to_vec(&v3_document(..))` for the URL to be stable.
pub fn v3_index(resources: &[ServedResource]) -> Value {
    let mut paths = Map::new();
    for key in v3_keys(resources) {
        let Some(doc) = v3_document(resources, &key) else {
            continue;
        };
        let bytes = serde_json::to_vec(&doc).unwrap_or_default();
        let hash = sha512::hex_upper(&bytes);
        paths.insert(
            key.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{key}?hash={hash}")}),
        );
    }
    json!({ "paths": paths })
}

/// One OpenAPI 3.0 document of the index ("api/v1", "apis/apps/v1",
/// "apis/apps", "api", "apis", "version"); None if nothing is served there.
pub fn v3_document(resources: &[ServedResource], path: &str) -> Option<Value> {
    let path = path.trim_matches('/');
    let gvs = served_gvs(resources);
    let mut paths = Map::new();
    let root_def = match path {
        "api" => Some(builtin::API_VERSIONS),
        "apis" => Some(builtin::API_GROUP_LIST),
        "version" => Some(builtin::VERSION_INFO),
        _ => None,
    };
    if let Some(def) = root_def {
        paths::root_path(path, Flavor::V3, &mut paths);
        let defs = build_definitions(&[], &[def], &gvs, Flavor::V3);
        return Some(v3_wrap(paths, defs));
    }
    let selected: Vec<&ServedResource> = resources
        .iter()
        .filter(|r| gv_path(&r.group, &r.version) == path)
        .collect();
    if let Some(first) = selected.first() {
        let (group, version) = (first.group.clone(), first.version.clone());
        // Only this group-version (and core v1) in the shared meta kinds' GVKs.
        let local: BTreeSet<(String, String)> = [
            (String::new(), "v1".to_string()),
            (group.clone(), version.clone()),
        ]
        .into();
        let defs = build_definitions(&selected, &[], &local, Flavor::V3);
        paths::resources_path(&group, &version, Flavor::V3, &mut paths);
        add_resource_paths(&selected, Flavor::V3, &mut paths);
        return Some(v3_wrap(paths, defs));
    }
    let group = path.strip_prefix("apis/")?;
    if group.contains('/') || !resources.iter().any(|r| r.group == group) {
        return None;
    }
    paths::group_path(group, Flavor::V3, &mut paths);
    let defs = build_definitions(&[], &[builtin::API_GROUP], &gvs, Flavor::V3);
    Some(v3_wrap(paths, defs))
}

/// All built-in definitions without documentation, in k8s-openapi's raw
/// shape, for field checking. Built once on first use (a few hundred KB).
fn validation_defs() -> &'static Map<String, Value> {
    static DEFS: OnceLock<Map<String, Value>> = OnceLock::new();
    DEFS.get_or_init(|| {
        let roots: Vec<&BuiltIn> = builtin::BUILTINS.iter().collect();
        let mut defs = builtin::generate(&roots);
        for schema in defs.values_mut() {
            strip_docs(schema);
        }
        defs
    })
}

/// Removes `description`s from a schema, keeping property names intact.
fn strip_docs(schema: &mut Value) {
    let Some(obj) = schema.as_object_mut() else {
        return;
    };
    obj.remove("description");
    for (k, v) in obj.iter_mut() {
        match k.as_str() {
            "properties" => {
                if let Some(props) = v.as_object_mut() {
                    props.values_mut().for_each(strip_docs);
                }
            }
            "items" | "additionalProperties" => strip_docs(v),
            "oneOf" | "anyOf" | "allOf" => {
                if let Some(a) = v.as_array_mut() {
                    a.iter_mut().for_each(strip_docs);
                }
            }
            _ => {}
        }
    }
}

/// Strict field validation for a built-in kind: the paths of fields in `obj`
/// unknown to the schema of `definition_name`, e.g.
/// `["spec.template.spec.containers[0].imagee"]` (upstream reports each as
/// `unknown field "<path>"`). Unknown definitions yield no paths.
pub fn unknown_fields(definition_name: &str, obj: &Value) -> Vec<String> {
    let defs = validation_defs();
    let Some(schema) = defs.get(definition_name) else {
        return Vec::new();
    };
    let mut w = unknown::Walker {
        defs,
        prefix: V2_PREFIX,
        out: Vec::new(),
    };
    w.walk(schema, obj, "");
    w.out
}

#[cfg(test)]
mod tests;
