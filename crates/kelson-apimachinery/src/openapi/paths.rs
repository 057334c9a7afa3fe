//! REST paths and operations per served resource, rendered as Swagger 2.0 or
//! OpenAPI 3.0. kubectl relies on these: it finds the PATCH operation tagged
//! with a resource's `x-kubernetes-group-version-kind` and checks it for the
//! `fieldValidation` / `dryRun` query parameters (server-side validation and
//! dry-run support) and for the `application/strategic-merge-patch+json`
//! content type (whether client-side apply may send a strategic merge patch).

use super::builtin::{
    API_GROUP, API_GROUP_LIST, API_RESOURCE_LIST, API_VERSIONS, BINDING, DELETE_OPTIONS, EVICTION,
    PATCH, SCALE, STATUS, V2_PREFIX, VERSION_INFO,
};
use super::{gv_path, ServedResource};
use serde_json::{json, Map, Value};

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flavor {
    V2,
    V3,
}

struct Param {
    name: &'static str,
    location: &'static str,
    ty: &'static str,
    description: &'static str,
}

const fn q(name: &'static str, ty: &'static str, description: &'static str) -> Param {
    Param {
        name,
        location: "query",
        ty,
        description,
    }
}

const PRETTY: Param = q(
    "pretty",
    "string",
    "If 'true', then the output is pretty printed.",
);
const DRY_RUN: Param = q(
    "dryRun",
    "string",
    "When present, indicates that modifications should not be persisted. Valid values are: - All: all dry run stages will be processed",
);
const FIELD_MANAGER: Param = q(
    "fieldManager",
    "string",
    "fieldManager is a name associated with the actor or entity that is making these changes.",
);
const FIELD_VALIDATION: Param = q(
    "fieldValidation",
    "string",
    "fieldValidation instructs the server on how to handle objects in the request containing unknown or duplicate fields. Valid values are: - Ignore - Warn - Strict",
);
const FORCE: Param = q(
    "force",
    "boolean",
    "Force is going to \"force\" Apply requests: the user re-acquires conflicting fields owned by other managers. Must be unset for non-apply patch requests.",
);
const LIST_PARAMS: [Param; 10] = [
    q("allowWatchBookmarks", "boolean", "allowWatchBookmarks requests watch events with type \"BOOKMARK\"."),
    q("continue", "string", "The continue option should be set when retrieving more results from the server, with the value returned by a previous list call."),
    q("fieldSelector", "string", "A selector to restrict the list of returned objects by their fields. Defaults to everything."),
    q("labelSelector", "string", "A selector to restrict the list of returned objects by their labels. Defaults to everything."),
    q("limit", "integer", "limit is a maximum number of responses to return for a list call."),
    q("resourceVersion", "string", "resourceVersion sets a constraint on what resource versions a request may be served from."),
    q("resourceVersionMatch", "string", "resourceVersionMatch determines how resourceVersion is applied to list calls."),
    q("sendInitialEvents", "boolean", "`sendInitialEvents=true` may be set together with `watch=true` to start the watch stream with synthetic events for the current state."),
    q("timeoutSeconds", "integer", "Timeout for the list/watch call."),
    q("watch", "boolean", "Watch for changes to the described resources and return them as a stream of add, update, and remove notifications."),
];
const DELETE_PARAMS: [Param; 5] = [
    DRY_RUN,
    q("gracePeriodSeconds", "integer", "The duration in seconds before the object should be deleted. Zero means delete immediately."),
    q("ignoreStoreReadErrorWithClusterBreakingPotential", "boolean", "if set to true, it will trigger an unsafe deletion of the resource in case the normal deletion flow fails with a corrupt object error."),
    q("orphanDependents", "boolean", "Deprecated: please use the PropagationPolicy."),
    q("propagationPolicy", "string", "Whether and how garbage collection will be performed: 'Orphan', 'Background' or 'Foreground'."),
];

const JSON_TYPES: [&str; 3] = [
    "application/json",
    "application/yaml",
    "application/vnd.kubernetes.protobuf",
];
const WATCH_TYPES: [&str; 5] = [
    "application/json",
    "application/yaml",
    "application/vnd.kubernetes.protobuf",
    "application/json;stream=watch",
    "application/vnd.kubernetes.protobuf;stream=watch",
];
const PATCH_TYPES: [&str; 4] = [
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
    "application/apply-patch+yaml",
];

enum Body {
    Def(String),
    Text,
}

struct Op {
    method: &'static str,
    id: String,
    description: String,
    action: &'static str,
    gvk: Option<(String, String, String)>,
    params: Vec<&'static Param>,
    request: Option<(String, Vec<&'static str>)>,
    /// (status code, description, body)
    responses: Vec<(&'static str, &'static str, Body)>,
    produces: Vec<&'static str>,
}

/// One path with its shared parameters and operations.
struct PathItem {
    params: Vec<Value>,
    ops: Vec<Op>,
}

/// Names used in operation ids and tags: ("Core", "V1") / ("RbacAuthorization", "V1").
fn id_parts(group: &str, version: &str) -> (String, String) {
    let g = if group.is_empty() {
        "Core".to_string()
    } else {
        group
            .strip_suffix(".k8s.io")
            .unwrap_or(group)
            .split(['.', '-'])
            .map(upper_first)
            .collect()
    };
    (g, upper_first(version))
}

fn upper_first(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

fn lower_first(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_lowercase().chain(c).collect(),
        None => String::new(),
    }
}

pub(crate) fn tag(group: &str, version: &str) -> String {
    let (g, _) = id_parts(group, version);
    format!("{}_{}", lower_first(&g), version)
}

fn path_param(name: &str, description: &str, flavor: Flavor) -> Value {
    match flavor {
        Flavor::V2 => {
            json!({"uniqueItems": true, "type": "string", "description": description, "name": name, "in": "path", "required": true})
        }
        Flavor::V3 => {
            json!({"name": name, "in": "path", "description": description, "required": true, "schema": {"type": "string", "uniqueItems": true}})
        }
    }
}

fn query_param(p: &Param, flavor: Flavor) -> Value {
    match flavor {
        Flavor::V2 => {
            json!({"uniqueItems": true, "type": p.ty, "description": p.description, "name": p.name, "in": p.location})
        }
        Flavor::V3 => {
            json!({"name": p.name, "in": p.location, "description": p.description, "schema": {"type": p.ty, "uniqueItems": true}})
        }
    }
}

fn gvk_value(g: &str, v: &str, k: &str) -> Value {
    json!({"group": g, "kind": k, "version": v})
}

fn render_op(op: &Op, tag: &str, flavor: Flavor) -> Value {
    let mut o = Map::new();
    o.insert("description".into(), op.description.clone().into());
    o.insert("operationId".into(), op.id.clone().into());
    o.insert("tags".into(), json!([tag]));
    let mut params: Vec<Value> = op.params.iter().map(|p| query_param(p, flavor)).collect();
    let schema_of = |b: &Body| match b {
        Body::Def(d) => json!({"$ref": format!("{V2_PREFIX}{d}")}),
        Body::Text => json!({"type": "string"}),
    };
    match flavor {
        Flavor::V2 => {
            if let Some((def, types)) = &op.request {
                params.insert(
                    0,
                    json!({"name": "body", "in": "body", "required": true, "schema": {"$ref": format!("{V2_PREFIX}{def}")}}),
                );
                o.insert("consumes".into(), json!(types));
            } else {
                o.insert("consumes".into(), json!(["*/*"]));
            }
            o.insert("produces".into(), json!(op.produces));
            o.insert("schemes".into(), json!(["https"]));
            let mut responses = Map::new();
            for (code, desc, body) in &op.responses {
                responses.insert(
                    (*code).into(),
                    json!({"description": desc, "schema": schema_of(body)}),
                );
            }
            responses.insert("401".into(), json!({"description": "Unauthorized"}));
            o.insert("responses".into(), Value::Object(responses));
        }
        Flavor::V3 => {
            if let Some((def, types)) = &op.request {
                let content: Map<String, Value> = types
                    .iter()
                    .map(|t| {
                        (
                            (*t).to_string(),
                            json!({"schema": {"$ref": format!("{V2_PREFIX}{def}")}}),
                        )
                    })
                    .collect();
                o.insert(
                    "requestBody".into(),
                    json!({"content": content, "required": true}),
                );
            }
            let mut responses = Map::new();
            for (code, desc, body) in &op.responses {
                let content: Map<String, Value> = op
                    .produces
                    .iter()
                    .map(|t| ((*t).to_string(), json!({"schema": schema_of(body)})))
                    .collect();
                responses.insert(
                    (*code).into(),
                    json!({"description": desc, "content": content}),
                );
            }
            responses.insert("401".into(), json!({"description": "Unauthorized"}));
            o.insert("responses".into(), Value::Object(responses));
        }
    }
    if !params.is_empty() {
        o.insert("parameters".into(), Value::Array(params));
    }
    o.insert("x-kubernetes-action".into(), op.action.into());
    if let Some((g, v, k)) = &op.gvk {
        o.insert("x-kubernetes-group-version-kind".into(), gvk_value(g, v, k));
    }
    Value::Object(o)
}

fn render_item(item: PathItem, tag: &str, flavor: Flavor) -> Value {
    let mut m = Map::new();
    if !item.params.is_empty() {
        m.insert("parameters".into(), Value::Array(item.params));
    }
    for op in &item.ops {
        m.insert(op.method.into(), render_op(op, tag, flavor));
    }
    Value::Object(m)
}

fn ok(def: &str) -> Vec<(&'static str, &'static str, Body)> {
    vec![("200", "OK", Body::Def(def.to_string()))]
}

fn created(def: &str) -> Vec<(&'static str, &'static str, Body)> {
    vec![
        ("200", "OK", Body::Def(def.to_string())),
        ("201", "Created", Body::Def(def.to_string())),
        ("202", "Accepted", Body::Def(def.to_string())),
    ]
}

/// The operations for one served resource. `def` is the kind's definition
/// name, `list_def` its list's.
pub(crate) fn resource_paths(
    r: &ServedResource,
    def: &str,
    list_def: &str,
    smp: bool,
    flavor: Flavor,
    out: &mut Map<String, Value>,
) {
    let prefix = format!("/{}", gv_path(&r.group, &r.version));
    let (g, v) = id_parts(&r.group, &r.version);
    let tag = tag(&r.group, &r.version);
    let ns = if r.namespaced { "Namespaced" } else { "" };
    let kind = &r.kind;
    let gvk = Some((r.group.clone(), r.version.clone(), r.kind.clone()));
    let has = |verb: &str| r.verbs.iter().any(|x| x == verb);
    let patch_types: Vec<&'static str> = PATCH_TYPES
        .iter()
        .copied()
        .filter(|t| smp || !t.contains("strategic"))
        .collect();
    let base = if r.namespaced {
        format!("{prefix}/namespaces/{{namespace}}/{}", r.plural)
    } else {
        format!("{prefix}/{}", r.plural)
    };
    let ns_param = || {
        path_param(
            "namespace",
            "object name and auth scope, such as for teams and projects",
            flavor,
        )
    };
    let scope_params = |name_desc: Option<String>| {
        let mut p = Vec::new();
        if let Some(d) = name_desc {
            p.push(path_param("name", &d, flavor));
        }
        if r.namespaced {
            p.push(ns_param());
        }
        p.push(query_param(&PRETTY, flavor));
        p
    };
    let list_params: Vec<&'static Param> = LIST_PARAMS.iter().collect();

    // Collection.
    let mut coll = PathItem {
        params: scope_params(None),
        ops: Vec::new(),
    };
    if has("list") {
        coll.ops.push(Op {
            method: "get",
            id: format!("list{g}{v}{ns}{kind}"),
            description: format!("list or watch objects of kind {kind}"),
            action: "list",
            gvk: gvk.clone(),
            params: list_params.clone(),
            request: None,
            responses: ok(list_def),
            produces: WATCH_TYPES.to_vec(),
        });
    }
    if has("create") {
        coll.ops.push(Op {
            method: "post",
            id: format!("create{g}{v}{ns}{kind}"),
            description: format!("create a {kind}"),
            action: "post",
            gvk: gvk.clone(),
            params: vec![&DRY_RUN, &FIELD_MANAGER, &FIELD_VALIDATION],
            request: Some((def.to_string(), vec!["*/*"])),
            responses: created(def),
            produces: JSON_TYPES.to_vec(),
        });
    }
    if has("deletecollection") {
        let mut params: Vec<&'static Param> = DELETE_PARAMS.iter().collect();
        params.extend(
            LIST_PARAMS
                .iter()
                .filter(|p| p.name != "watch" && p.name != "allowWatchBookmarks"),
        );
        coll.ops.push(Op {
            method: "delete",
            id: format!("delete{g}{v}Collection{ns}{kind}"),
            description: format!("delete collection of {kind}"),
            action: "deletecollection",
            gvk: gvk.clone(),
            params,
            request: Some((DELETE_OPTIONS.to_string(), vec!["*/*"])),
            responses: ok(STATUS),
            produces: JSON_TYPES.to_vec(),
        });
    }
    if !coll.ops.is_empty() {
        out.insert(base.clone(), render_item(coll, &tag, flavor));
    }

    // List across namespaces.
    if r.namespaced && has("list") {
        let item = PathItem {
            params: vec![query_param(&PRETTY, flavor)],
            ops: vec![Op {
                method: "get",
                id: format!("list{g}{v}{kind}ForAllNamespaces"),
                description: format!("list or watch objects of kind {kind}"),
                action: "list",
                gvk: gvk.clone(),
                params: list_params.clone(),
                request: None,
                responses: ok(list_def),
                produces: WATCH_TYPES.to_vec(),
            }],
        };
        out.insert(
            format!("{prefix}/{}", r.plural),
            render_item(item, &tag, flavor),
        );
    }

    // Single object.
    let name_desc = format!("name of the {kind}");
    let mut obj = PathItem {
        params: scope_params(Some(name_desc.clone())),
        ops: Vec::new(),
    };
    if has("get") {
        obj.ops.push(Op {
            method: "get",
            id: format!("read{g}{v}{ns}{kind}"),
            description: format!("read the specified {kind}"),
            action: "get",
            gvk: gvk.clone(),
            params: Vec::new(),
            request: None,
            responses: ok(def),
            produces: JSON_TYPES.to_vec(),
        });
    }
    if has("update") {
        obj.ops.push(replace_op(
            format!("replace{g}{v}{ns}{kind}"),
            kind,
            def,
            gvk.clone(),
        ));
    }
    if has("patch") {
        obj.ops.push(patch_op(
            format!("patch{g}{v}{ns}{kind}"),
            kind,
            def,
            gvk.clone(),
            &patch_types,
        ));
    }
    if has("delete") {
        obj.ops.push(Op {
            method: "delete",
            id: format!("delete{g}{v}{ns}{kind}"),
            description: format!("delete a {kind}"),
            action: "delete",
            gvk: gvk.clone(),
            params: DELETE_PARAMS.iter().collect(),
            request: Some((DELETE_OPTIONS.to_string(), vec!["*/*"])),
            responses: vec![
                ("200", "OK", Body::Def(STATUS.to_string())),
                ("202", "Accepted", Body::Def(STATUS.to_string())),
            ],
            produces: JSON_TYPES.to_vec(),
        });
    }
    if !obj.ops.is_empty() {
        out.insert(format!("{base}/{{name}}"), render_item(obj, &tag, flavor));
    }

    // Subresources.
    for sub in &r.subresources {
        let params = scope_params(Some(name_desc.clone()));
        let cap = upper_first(sub);
        let ops = match sub.as_str() {
            "status" | "scale" | "ephemeralcontainers" | "resize" | "approval" => {
                let (sdef, sgvk) = if sub == "scale" {
                    (
                        SCALE.to_string(),
                        Some(("autoscaling".into(), "v1".into(), "Scale".into())),
                    )
                } else {
                    (def.to_string(), gvk.clone())
                };
                let id = |verb: &str| format!("{verb}{g}{v}{ns}{kind}{cap}");
                let read = Op {
                    method: "get",
                    id: id("read"),
                    description: format!("read {sub} of the specified {kind}"),
                    action: "get",
                    gvk: sgvk.clone(),
                    params: Vec::new(),
                    request: None,
                    responses: ok(&sdef),
                    produces: JSON_TYPES.to_vec(),
                };
                let mut replace = replace_op(id("replace"), kind, &sdef, sgvk.clone());
                replace.description = format!("replace {sub} of the specified {kind}");
                let mut patch = patch_op(id("patch"), kind, &sdef, sgvk, &patch_types);
                patch.description = format!("partially update {sub} of the specified {kind}");
                vec![read, replace, patch]
            }
            "eviction" | "binding" => {
                let (sdef, sgvk) = if sub == "eviction" {
                    (
                        EVICTION,
                        (
                            "policy".to_string(),
                            "v1".to_string(),
                            "Eviction".to_string(),
                        ),
                    )
                } else {
                    (
                        BINDING,
                        (String::new(), "v1".to_string(), "Binding".to_string()),
                    )
                };
                vec![Op {
                    method: "post",
                    id: format!("create{g}{v}{ns}{kind}{cap}"),
                    description: format!("create {sub} of a {kind}"),
                    action: "post",
                    gvk: Some(sgvk),
                    params: vec![&DRY_RUN, &FIELD_MANAGER, &FIELD_VALIDATION],
                    request: Some((sdef.to_string(), vec!["*/*"])),
                    responses: created(sdef),
                    produces: JSON_TYPES.to_vec(),
                }]
            }
            "log" => vec![Op {
                method: "get",
                id: format!("read{g}{v}{ns}{kind}Log"),
                description: format!("read log of the specified {kind}"),
                action: "get",
                gvk: gvk.clone(),
                params: Vec::new(),
                request: None,
                responses: vec![("200", "OK", Body::Text)],
                produces: vec![
                    "text/plain",
                    "application/json",
                    "application/yaml",
                    "application/vnd.kubernetes.protobuf",
                ],
            }],
            // Streaming subresources (exec, attach, portforward, proxy) are
            // not described: no client reads them from OpenAPI.
            _ => continue,
        };
        out.insert(
            format!("{base}/{{name}}/{sub}"),
            render_item(PathItem { params, ops }, &tag, flavor),
        );
    }
}

fn replace_op(id: String, kind: &str, def: &str, gvk: Option<(String, String, String)>) -> Op {
    Op {
        method: "put",
        id,
        description: format!("replace the specified {kind}"),
        action: "put",
        gvk,
        params: vec![&DRY_RUN, &FIELD_MANAGER, &FIELD_VALIDATION],
        request: Some((def.to_string(), vec!["*/*"])),
        responses: vec![
            ("200", "OK", Body::Def(def.to_string())),
            ("201", "Created", Body::Def(def.to_string())),
        ],
        produces: JSON_TYPES.to_vec(),
    }
}

fn patch_op(
    id: String,
    kind: &str,
    def: &str,
    gvk: Option<(String, String, String)>,
    types: &[&'static str],
) -> Op {
    Op {
        method: "patch",
        id,
        description: format!("partially update the specified {kind}"),
        action: "patch",
        gvk,
        params: vec![&DRY_RUN, &FIELD_MANAGER, &FIELD_VALIDATION, &FORCE],
        request: Some((PATCH.to_string(), types.to_vec())),
        responses: vec![
            ("200", "OK", Body::Def(def.to_string())),
            ("201", "Created", Body::Def(def.to_string())),
        ],
        produces: JSON_TYPES.to_vec(),
    }
}

fn discovery_item(id: String, description: &str, def: &str, tag: &str, flavor: Flavor) -> Value {
    let op = Op {
        method: "get",
        id,
        description: description.to_string(),
        action: "get",
        gvk: None,
        params: Vec::new(),
        request: None,
        responses: ok(def),
        produces: JSON_TYPES.to_vec(),
    };
    let mut v = render_item(
        PathItem {
            params: Vec::new(),
            ops: vec![op],
        },
        tag,
        flavor,
    );
    // Discovery endpoints carry no Kubernetes action upstream.
    if let Some(get) = v.get_mut("get").and_then(Value::as_object_mut) {
        get.remove("x-kubernetes-action");
    }
    v
}

/// `GET /apis/<group>/<version>/` (or `/api/v1/`): the APIResourceList.
pub(crate) fn resources_path(
    group: &str,
    version: &str,
    flavor: Flavor,
    out: &mut Map<String, Value>,
) {
    let (g, v) = id_parts(group, version);
    out.insert(
        format!("/{}/", gv_path(group, version)),
        discovery_item(
            format!("get{g}{v}APIResources"),
            "get available resources",
            API_RESOURCE_LIST,
            &tag(group, version),
            flavor,
        ),
    );
}

/// `GET /apis/<group>/`: the APIGroup.
pub(crate) fn group_path(group: &str, flavor: Flavor, out: &mut Map<String, Value>) {
    let (g, _) = id_parts(group, "");
    out.insert(
        format!("/apis/{group}/"),
        discovery_item(
            format!("get{g}APIGroup"),
            "get information of a group",
            API_GROUP,
            &lower_first(&g),
            flavor,
        ),
    );
}

/// `GET /api/`, `GET /apis/` and `GET /version/`.
pub(crate) fn root_path(which: &str, flavor: Flavor, out: &mut Map<String, Value>) {
    let (path, id, desc, def, tag) = match which {
        "api" => (
            "/api/",
            "getCoreAPIVersions",
            "get available API versions",
            API_VERSIONS,
            "core",
        ),
        "apis" => (
            "/apis/",
            "getAPIVersions",
            "get available API versions",
            API_GROUP_LIST,
            "apis",
        ),
        _ => (
            "/version/",
            "getCodeVersion",
            "get the version information for this server",
            VERSION_INFO,
            "version",
        ),
    };
    out.insert(
        path.to_string(),
        discovery_item(id.to_string(), desc, def, tag, flavor),
    );
}
