use super::*;
use crate::wire::{Reader, Value as Wire};
use serde_json::json;

/// A decoded message: its fields in wire order.
struct Msg<'a>(Vec<(u32, Wire<'a>)>);

fn decode(bytes: &[u8]) -> Msg<'_> {
    let mut r = Reader::new(bytes);
    let mut fields = Vec::new();
    while let Some(f) = r.next_field().expect("valid protobuf") {
        fields.push(f);
    }
    Msg(fields)
}

impl<'a> Msg<'a> {
    fn numbers(&self) -> Vec<u32> {
        self.0.iter().map(|(n, _)| *n).collect()
    }

    fn all_bytes(&self, number: u32) -> Vec<&'a [u8]> {
        self.0
            .iter()
            .filter(|(n, _)| *n == number)
            .map(|(_, v)| match v {
                Wire::Bytes(b) => *b,
                other => panic!("field {number} is {other:?}, not length-delimited"),
            })
            .collect()
    }

    fn bytes(&self, number: u32) -> &'a [u8] {
        let all = self.all_bytes(number);
        assert_eq!(all.len(), 1, "field {number} occurs {} times", all.len());
        all[0]
    }

    fn msg(&self, number: u32) -> Msg<'a> {
        decode(self.bytes(number))
    }

    fn msgs(&self, number: u32) -> Vec<Msg<'a>> {
        self.all_bytes(number).into_iter().map(decode).collect()
    }

    fn str(&self, number: u32) -> &'a str {
        std::str::from_utf8(self.bytes(number)).expect("utf-8")
    }

    fn strs(&self, number: u32) -> Vec<&'a str> {
        self.all_bytes(number)
            .into_iter()
            .map(|b| std::str::from_utf8(b).expect("utf-8"))
            .collect()
    }

    fn varint(&self, number: u32) -> u64 {
        match self.0.iter().find(|(n, _)| *n == number) {
            Some((_, Wire::Varint(v))) => *v,
            other => panic!("field {number}: {other:?}"),
        }
    }

    fn has(&self, number: u32) -> bool {
        self.0.iter().any(|(n, _)| *n == number)
    }

    /// The `value` of the `Named*` entry called `name` in repeated field
    /// `number`.
    fn named(&self, number: u32, name: &str) -> Msg<'a> {
        self.msgs(number)
            .into_iter()
            .find(|m| m.str(1) == name)
            .unwrap_or_else(|| panic!("no {name:?} in field {number}"))
            .msg(2)
    }

    fn names(&self, number: u32) -> Vec<&'a str> {
        self.msgs(number).iter().map(|m| m.str(1)).collect()
    }

    /// A vendor extension's YAML (`NamedAny.value.yaml`).
    fn extension(&self, number: u32, name: &str) -> &'a str {
        self.named(number, name).str(2)
    }
}

// Field numbers used below, from gnostic's OpenAPIv2.proto.
const DOC_SWAGGER: u32 = 1;
const DOC_INFO: u32 = 2;
const DOC_PATHS: u32 = 8;
const DOC_DEFINITIONS: u32 = 9;
const DOC_SECURITY: u32 = 12;
const DOC_SECURITY_DEFINITIONS: u32 = 13;
const SCHEMA_REF: u32 = 1;
const SCHEMA_FORMAT: u32 = 2;
const SCHEMA_DESCRIPTION: u32 = 4;
const SCHEMA_REQUIRED: u32 = 19;
const SCHEMA_ENUM: u32 = 20;
const SCHEMA_ADDITIONAL_PROPERTIES: u32 = 21;
const SCHEMA_TYPE: u32 = 22;
const SCHEMA_ITEMS: u32 = 23;
const SCHEMA_PROPERTIES: u32 = 25;
const SCHEMA_VENDOR: u32 = 31;

fn deployment_doc() -> Value {
    json!({
        "swagger": "2.0",
        "info": {"title": "Kubernetes", "version": "v1.33.0"},
        "paths": {},
        "definitions": {
            "io.k8s.api.apps.v1.Deployment": {
                "description": "Deployment enables declarative updates for Pods and ReplicaSets.",
                "type": "object",
                "required": ["spec"],
                "properties": {
                    "apiVersion": {"description": "APIVersion defines the versioned schema.", "type": "string"},
                    "metadata": {"$ref": "#/definitions/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta", "default": {}},
                    "spec": {"$ref": "#/definitions/io.k8s.api.apps.v1.DeploymentSpec"},
                    "replicas": {"type": "integer", "format": "int32"},
                },
                "x-kubernetes-group-version-kind": [
                    {"group": "apps", "kind": "Deployment", "version": "v1"}
                ],
            },
            "io.k8s.api.core.v1.PodSpec": {
                "type": "object",
                "properties": {
                    "containers": {
                        "type": "array",
                        "items": {"$ref": "#/definitions/io.k8s.api.core.v1.Container"},
                        "x-kubernetes-list-map-keys": ["name"],
                        "x-kubernetes-list-type": "map",
                        "x-kubernetes-patch-merge-key": "name",
                        "x-kubernetes-patch-strategy": "merge",
                    },
                    "nodeSelector": {
                        "type": "object",
                        "additionalProperties": {"type": "string", "default": ""},
                        "x-kubernetes-map-type": "atomic",
                    },
                    "restartPolicy": {
                        "type": "string",
                        "enum": ["Always", "Never", "OnFailure"],
                    },
                },
            },
            "io.k8s.apimachinery.pkg.apis.meta.v1.Patch": {
                "type": "object",
                "properties": {},
                "additionalProperties": false,
            },
        },
        "securityDefinitions": {
            "BearerToken": {"description": "Bearer Token authentication", "type": "apiKey", "name": "authorization", "in": "header"}
        },
        "security": [{"BearerToken": []}],
    })
}

#[test]
fn document_fields_and_security() {
    let bytes = encode_v2(&deployment_doc()).unwrap();
    let doc = decode(&bytes);
    // Fields are written in field-number order, like Go's proto.Marshal.
    assert_eq!(
        doc.numbers(),
        [
            DOC_SWAGGER,
            DOC_INFO,
            DOC_PATHS,
            DOC_DEFINITIONS,
            DOC_SECURITY,
            DOC_SECURITY_DEFINITIONS
        ]
    );
    assert_eq!(doc.str(DOC_SWAGGER), "2.0");
    let info = doc.msg(DOC_INFO);
    assert_eq!((info.str(1), info.str(2)), ("Kubernetes", "v1.33.0"));
    // An empty paths object is still a (zero-length) Paths message.
    assert!(doc.bytes(DOC_PATHS).is_empty());

    // security: [SecurityRequirement{[NamedStringArray{"BearerToken", {}}]}]
    let requirement = &doc.msgs(DOC_SECURITY)[0];
    assert_eq!(requirement.names(1), ["BearerToken"]);
    assert!(requirement.named(1, "BearerToken").0.is_empty());

    // securityDefinitions -> NamedSecurityDefinitionsItem -> api_key_security (2)
    let item = doc.msg(DOC_SECURITY_DEFINITIONS).named(1, "BearerToken");
    assert_eq!(item.numbers(), [2]);
    let api_key = item.msg(2);
    assert_eq!(api_key.str(1), "apiKey");
    assert_eq!(api_key.str(2), "authorization");
    assert_eq!(api_key.str(3), "header");
    assert_eq!(api_key.str(4), "Bearer Token authentication");
}

#[test]
fn definitions_keep_schemas_refs_and_gvk() {
    let bytes = encode_v2(&deployment_doc()).unwrap();
    let defs = decode(&bytes).msg(DOC_DEFINITIONS);
    assert_eq!(
        defs.names(1),
        [
            "io.k8s.api.apps.v1.Deployment",
            "io.k8s.api.core.v1.PodSpec",
            "io.k8s.apimachinery.pkg.apis.meta.v1.Patch"
        ]
    );

    let deployment = defs.named(1, "io.k8s.api.apps.v1.Deployment");
    assert!(deployment
        .str(SCHEMA_DESCRIPTION)
        .starts_with("Deployment enables"));
    assert_eq!(deployment.strs(SCHEMA_REQUIRED), ["spec"]);
    assert_eq!(deployment.msg(SCHEMA_TYPE).strs(1), ["object"]);
    // kubectl reads the GVK by parsing this YAML.
    assert_eq!(
        deployment.extension(SCHEMA_VENDOR, "x-kubernetes-group-version-kind"),
        "- group: apps\n  kind: Deployment\n  version: v1\n"
    );

    let props = deployment.msg(SCHEMA_PROPERTIES);
    assert_eq!(
        props.names(1),
        ["apiVersion", "metadata", "replicas", "spec"]
    );
    let spec = props.named(1, "spec");
    assert_eq!(spec.numbers(), [SCHEMA_REF]);
    assert_eq!(
        spec.str(SCHEMA_REF),
        "#/definitions/io.k8s.api.apps.v1.DeploymentSpec"
    );
    // default: {} is an Any whose yaml is "{}\n".
    assert_eq!(props.named(1, "metadata").msg(5).str(2), "{}\n");
    let replicas = props.named(1, "replicas");
    assert_eq!(replicas.str(SCHEMA_FORMAT), "int32");
    assert_eq!(replicas.msg(SCHEMA_TYPE).strs(1), ["integer"]);
}

#[test]
fn arrays_maps_enums_and_patch_extensions() {
    let bytes = encode_v2(&deployment_doc()).unwrap();
    let defs = decode(&bytes).msg(DOC_DEFINITIONS);
    let props = defs
        .named(1, "io.k8s.api.core.v1.PodSpec")
        .msg(SCHEMA_PROPERTIES);

    let containers = props.named(1, "containers");
    assert_eq!(containers.msg(SCHEMA_TYPE).strs(1), ["array"]);
    // items: ItemsItem { repeated Schema schema = 1 } with exactly one schema.
    let items = containers.msg(SCHEMA_ITEMS).msgs(1);
    assert_eq!(items.len(), 1);
    assert_eq!(
        items[0].str(SCHEMA_REF),
        "#/definitions/io.k8s.api.core.v1.Container"
    );
    // Vendor extensions in key order, values as YAML documents.
    assert_eq!(
        containers.names(SCHEMA_VENDOR),
        [
            "x-kubernetes-list-map-keys",
            "x-kubernetes-list-type",
            "x-kubernetes-patch-merge-key",
            "x-kubernetes-patch-strategy"
        ]
    );
    assert_eq!(
        containers.extension(SCHEMA_VENDOR, "x-kubernetes-list-map-keys"),
        "- name\n"
    );
    assert_eq!(
        containers.extension(SCHEMA_VENDOR, "x-kubernetes-list-type"),
        "map\n"
    );
    assert_eq!(
        containers.extension(SCHEMA_VENDOR, "x-kubernetes-patch-merge-key"),
        "name\n"
    );
    assert_eq!(
        containers.extension(SCHEMA_VENDOR, "x-kubernetes-patch-strategy"),
        "merge\n"
    );
    // NamedAny.value is an Any with only `yaml` (field 2) set.
    let any = containers
        .msgs(SCHEMA_VENDOR)
        .into_iter()
        .next()
        .unwrap()
        .msg(2);
    assert_eq!(any.numbers(), [2]);

    // additionalProperties: AdditionalPropertiesItem.schema (1).
    let node_selector = props.named(1, "nodeSelector");
    let additional = node_selector.msg(SCHEMA_ADDITIONAL_PROPERTIES);
    assert_eq!(additional.numbers(), [1]);
    let value_schema = additional.msg(1);
    assert_eq!(value_schema.msg(SCHEMA_TYPE).strs(1), ["string"]);
    assert_eq!(value_schema.msg(5).str(2), "\"\"\n");

    // enum: repeated Any.
    let restart = props.named(1, "restartPolicy");
    let values: Vec<&str> = restart.msgs(SCHEMA_ENUM).iter().map(|a| a.str(2)).collect();
    assert_eq!(values, ["Always\n", "Never\n", "OnFailure\n"]);

    // `properties: {}` is present but empty, and `additionalProperties: false`
    // is the oneof's boolean member written even though it is false.
    let patch = defs.named(1, "io.k8s.apimachinery.pkg.apis.meta.v1.Patch");
    assert!(patch.bytes(SCHEMA_PROPERTIES).is_empty());
    let additional = patch.msg(SCHEMA_ADDITIONAL_PROPERTIES);
    assert_eq!(additional.numbers(), [2]);
    assert_eq!(additional.varint(2), 0);
}

fn paths_doc() -> Value {
    json!({
        "swagger": "2.0",
        "info": {"title": "Kubernetes", "version": "unversioned"},
        "paths": {
            "/apis/apps/v1/namespaces/{namespace}/deployments/{name}": {
                "get": {
                    "description": "read the specified Deployment",
                    "consumes": ["*/*"],
                    "produces": ["application/json", "application/yaml"],
                    "schemes": ["https"],
                    "tags": ["apps_v1"],
                    "operationId": "readAppsV1NamespacedDeployment",
                    "responses": {
                        "200": {"description": "OK", "schema": {"$ref": "#/definitions/io.k8s.api.apps.v1.Deployment"}},
                        "401": {"description": "Unauthorized"}
                    },
                    "x-kubernetes-action": "get",
                    "x-kubernetes-group-version-kind": {"group": "apps", "kind": "Deployment", "version": "v1"}
                },
                "put": {
                    "operationId": "replaceAppsV1NamespacedDeployment",
                    "parameters": [
                        {"name": "body", "in": "body", "required": true,
                         "schema": {"$ref": "#/definitions/io.k8s.api.apps.v1.Deployment"}},
                        {"uniqueItems": true, "type": "string", "description": "fieldManager is a name…",
                         "name": "fieldManager", "in": "query"}
                    ],
                    "responses": {"200": {"$ref": "#/responses/ok"}}
                },
                "parameters": [
                    {"uniqueItems": true, "type": "string", "description": "name of the Deployment",
                     "name": "name", "in": "path", "required": true},
                    {"$ref": "#/parameters/namespace-vgWSWtn3"}
                ]
            },
            "x-note": "not a path"
        }
    })
}

#[test]
fn path_items_operations_parameters_and_responses() {
    let bytes = encode_v2(&paths_doc()).unwrap();
    let paths = decode(&bytes).msg(DOC_PATHS);
    // Paths: vendor_extension = 1 before path = 2.
    assert_eq!(paths.numbers(), [1, 2]);
    assert_eq!(paths.extension(1, "x-note"), "not a path\n");
    let item = paths.named(2, "/apis/apps/v1/namespaces/{namespace}/deployments/{name}");
    // PathItem: get = 2, put = 3, parameters = 9 (twice).
    assert_eq!(item.numbers(), [2, 3, 9, 9]);

    let get = item.msg(2);
    assert_eq!(get.strs(1), ["apps_v1"]);
    assert_eq!(get.str(3), "read the specified Deployment");
    assert_eq!(get.str(5), "readAppsV1NamespacedDeployment");
    assert_eq!(get.strs(6), ["application/json", "application/yaml"]);
    assert_eq!(get.strs(7), ["*/*"]);
    assert_eq!(get.strs(10), ["https"]);
    assert_eq!(get.extension(13, "x-kubernetes-action"), "get\n");
    assert_eq!(
        get.extension(13, "x-kubernetes-group-version-kind"),
        "group: apps\nkind: Deployment\nversion: v1\n"
    );
    // Responses.response_code (1) -> ResponseValue.response (1) ->
    // Response.schema (2) -> SchemaItem.schema (1).
    let responses = get.msg(9);
    assert_eq!(responses.names(1), ["200", "401"]);
    let ok = responses.named(1, "200");
    assert_eq!(ok.numbers(), [1]);
    let ok = ok.msg(1);
    assert_eq!(ok.str(1), "OK");
    let schema_item = ok.msg(2);
    assert_eq!(schema_item.numbers(), [1]);
    assert_eq!(
        schema_item.msg(1).str(SCHEMA_REF),
        "#/definitions/io.k8s.api.apps.v1.Deployment"
    );
    assert!(!responses.named(1, "401").msg(1).has(2));

    let put = item.msg(3);
    let params = put.msgs(8);
    assert_eq!(params.len(), 2);
    // ParametersItem.parameter (1) -> Parameter.body_parameter (1).
    let body = params[0].msg(1).msg(1);
    assert_eq!(body.str(2), "body");
    assert_eq!(body.str(3), "body");
    assert_eq!(body.varint(4), 1);
    assert_eq!(
        body.msg(5).str(SCHEMA_REF),
        "#/definitions/io.k8s.api.apps.v1.Deployment"
    );
    // ... -> Parameter.non_body_parameter (2) -> query_parameter_sub_schema (3).
    let non_body = params[1].msg(1).msg(2);
    assert_eq!(non_body.numbers(), [3]);
    let query = non_body.msg(3);
    assert_eq!(query.str(2), "query");
    assert_eq!(query.str(3), "fieldManager is a name…");
    assert_eq!(query.str(4), "fieldManager");
    assert_eq!(query.str(6), "string");
    assert_eq!(query.varint(20), 1);
    // A $ref response is ResponseValue.json_reference (2).
    let referenced = put.msg(9).named(1, "200");
    assert_eq!(referenced.numbers(), [2]);
    assert_eq!(referenced.msg(2).str(1), "#/responses/ok");

    // Path-level parameters: a path sub-schema (4), then a JsonReference (2).
    let path_params = item.msgs(9);
    let path_param = path_params[0].msg(1).msg(2).msg(4);
    assert_eq!(path_param.varint(1), 1);
    assert_eq!(path_param.str(2), "path");
    assert_eq!(path_param.str(4), "name");
    assert_eq!(path_param.str(5), "string");
    assert_eq!(path_param.varint(19), 1);
    assert_eq!(path_params[1].numbers(), [2]);
    assert_eq!(
        path_params[1].msg(2).str(1),
        "#/parameters/namespace-vgWSWtn3"
    );
}

#[test]
fn wrong_types_are_errors_with_a_pointer() {
    assert_eq!(encode_v2(&json!([])), Err(EncodeError::NotAnObject));
    let doc = json!({"swagger": "2.0", "definitions": {"a/b": {"properties": {"x": {"maxLength": 1.5}}}}});
    assert_eq!(
        encode_v2(&doc),
        Err(EncodeError::FieldType {
            path: "/definitions/a~1b/properties/x/maxLength".into(),
            expected: "an integer"
        })
    );
    let doc = json!({"swagger": "2.0", "definitions": {"a": {"additionalProperties": "yes"}}});
    assert!(matches!(
        encode_v2(&doc),
        Err(EncodeError::FieldType { .. })
    ));
    let doc = json!({"paths": {"/x": {"get": {"parameters": [{"name": "c", "in": "cookie", "type": "string"}]}}}});
    assert!(matches!(
        encode_v2(&doc),
        Err(EncodeError::Unsupported {
            what: "parameter location",
            ..
        })
    ));
}

#[test]
fn proto3_defaults_are_omitted_and_integers_pass_as_strings() {
    let doc = json!({
        "swagger": "2.0",
        "host": "",
        "definitions": {"a": {
            "description": null, "readOnly": false, "maxLength": 0, "minimum": 0.0,
            "format": 5, "maximum": -0.5, "minLength": 3
        }},
    });
    let bytes = encode_v2(&doc).unwrap();
    let doc = decode(&bytes);
    assert_eq!(doc.numbers(), [DOC_SWAGGER, DOC_DEFINITIONS]);
    let a = doc.msg(DOC_DEFINITIONS).named(1, "a");
    // format (2, from an integer), maximum (7, double), minLength (12).
    assert_eq!(a.numbers(), [2, 7, 12]);
    assert_eq!(a.str(2), "5");
    assert_eq!(a.0[1].1, Wire::Fixed64((-0.5f64).to_bits()));
    assert_eq!(a.varint(12), 3);
}

#[test]
fn file_schemas_and_type_lists() {
    let doc = json!({"paths": {"/upload": {"post": {"responses": {
        "200": {"description": "file", "schema": {"type": "file"}},
        "default": {"description": "d", "schema": {"type": ["string", "null"]}}
    }}}}});
    let bytes = encode_v2(&doc).unwrap();
    let responses = decode(&bytes)
        .msg(DOC_PATHS)
        .named(2, "/upload")
        .msg(4)
        .msg(9);
    let file = responses.named(1, "200").msg(1).msg(2);
    assert_eq!(file.numbers(), [2]);
    assert_eq!(file.msg(2).str(6), "file");
    let types = responses
        .named(1, "default")
        .msg(1)
        .msg(2)
        .msg(1)
        .msg(SCHEMA_TYPE);
    assert_eq!(types.strs(1), ["string", "null"]);
}

#[test]
fn specs_are_in_field_number_order() {
    for spec in [
        &DOCUMENT,
        &SCHEMA,
        &BODY_PARAMETER,
        &QUERY_OR_FORM_PARAMETER,
        &HEADER_OR_PATH_PARAMETER,
        &PRIMITIVES_ITEMS,
        &HEADER,
    ] {
        let numbers: Vec<u32> = spec.fields.iter().map(|f| f.1).collect();
        assert!(numbers.windows(2).all(|w| w[0] < w[1]), "{numbers:?}");
        let last = *numbers.last().unwrap();
        assert_eq!(spec.vendor, Some(last + 1), "{numbers:?}");
    }
}
/// The document Kelson's API server serves, as kubectl's decoder walks it:
/// every definition present in order, each with a parseable schema and the
/// GVK extension on kinds.
#[test]
fn encodes_the_served_document() {
    use kelson_apimachinery::openapi::{v2, SchemaSource, ServedResource};
    let res = |group: &str, version: &str, kind: &str, plural: &str| ServedResource {
        group: group.into(),
        version: version.into(),
        kind: kind.into(),
        plural: plural.into(),
        namespaced: true,
        verbs: [
            "create", "delete", "get", "list", "patch", "update", "watch",
        ]
        .map(String::from)
        .to_vec(),
        subresources: vec!["status".into()],
        schema: SchemaSource::BuiltIn,
    };
    let doc = v2(&[
        res("", "v1", "Pod", "pods"),
        res("", "v1", "ConfigMap", "configmaps"),
        res("apps", "v1", "Deployment", "deployments"),
    ]);
    let bytes = encode_v2(&doc).unwrap();
    let decoded = decode(&bytes);

    let json_defs = doc["definitions"].as_object().unwrap();
    let defs = decoded.msg(DOC_DEFINITIONS);
    let names = defs.names(1);
    assert_eq!(
        names,
        json_defs.keys().map(String::as_str).collect::<Vec<_>>()
    );
    let deployment = defs.named(1, "io.k8s.api.apps.v1.Deployment");
    assert_eq!(
        deployment.extension(SCHEMA_VENDOR, "x-kubernetes-group-version-kind"),
        "- group: apps\n  kind: Deployment\n  version: v1\n"
    );
    let pod_spec = defs
        .named(1, "io.k8s.api.core.v1.PodSpec")
        .msg(SCHEMA_PROPERTIES);
    let containers = pod_spec.named(1, "containers");
    assert_eq!(
        containers.extension(SCHEMA_VENDOR, "x-kubernetes-patch-merge-key"),
        "name\n"
    );
    assert_eq!(
        containers.extension(SCHEMA_VENDOR, "x-kubernetes-patch-strategy"),
        "merge\n"
    );

    let json_paths = doc["paths"].as_object().unwrap();
    assert_eq!(decoded.msg(DOC_PATHS).msgs(2).len(), json_paths.len());
}
