//! Custom resources: definition names and the published shape of a CRD
//! version's `openAPIV3Schema`.

use super::builtin::{OBJECT_META, V2_PREFIX};
use serde_json::{json, Map, Value};

/// Upstream names CRD definitions by the reversed group followed by version
/// and kind: ("stable.example.com", "v1", "CronTab") -> "com.example.stable.v1.CronTab".
pub(crate) fn def_name(group: &str, version: &str, kind: &str) -> String {
    let reversed: Vec<&str> = group.split('.').rev().collect();
    format!("{}.{version}.{kind}", reversed.join("."))
}

const API_VERSION_DESC: &str = "APIVersion defines the versioned schema of this representation of an object. Servers should convert recognized schemas to the latest internal value, and may reject unrecognized values. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#resources";
const KIND_DESC: &str = "Kind is a string value representing the REST resource this object represents. Servers may infer this from the endpoint the client submits requests to. Cannot be updated. In CamelCase. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds";
const METADATA_DESC: &str = "Standard object's metadata. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata";

/// The object schema published for a custom resource: the CRD's schema with
/// `apiVersion`, `kind` and `metadata` (a reference to ObjectMeta) set, as
/// the upstream API server publishes it. For Swagger 2.0 the constructs it
/// cannot express are dropped first.
pub(crate) fn wrap(schema: &Value, v3: bool) -> Value {
    let mut s = match schema {
        Value::Object(m) => Value::Object(m.clone()),
        _ => json!({"type": "object"}),
    };
    if !v3 {
        to_v2(&mut s);
    }
    let Some(obj) = s.as_object_mut() else {
        return s;
    };
    obj.entry("type").or_insert_with(|| "object".into());
    let props = obj
        .entry("properties")
        .or_insert_with(|| Value::Object(Map::new()));
    if let Some(props) = props.as_object_mut() {
        props.insert(
            "apiVersion".into(),
            json!({"description": API_VERSION_DESC, "type": "string"}),
        );
        props.insert(
            "kind".into(),
            json!({"description": KIND_DESC, "type": "string"}),
        );
        props.insert(
            "metadata".into(),
            json!({"$ref": format!("{V2_PREFIX}{OBJECT_META}"), "description": METADATA_DESC}),
        );
    }
    s
}

/// The `<Kind>List` definition for a kind whose definition is `item_def`.
pub(crate) fn list_def(kind: &str, item_def: &str) -> Value {
    json!({
        "description": format!("{kind}List is a list of {kind}"),
        "type": "object",
        "required": ["items"],
        "properties": {
            "apiVersion": {"description": API_VERSION_DESC, "type": "string"},
            "items": {
                "description": format!("List of {kind} objects."),
                "type": "array",
                "items": {"$ref": format!("{V2_PREFIX}{item_def}")},
            },
            "kind": {"description": KIND_DESC, "type": "string"},
            "metadata": {
                "$ref": format!("{V2_PREFIX}{}", super::builtin::LIST_META),
                "description": "Standard list metadata. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata",
            },
        },
    })
}

/// Swagger 2.0 has no `nullable`, `oneOf`, `anyOf`, `not`, and no way to say
/// "integer or string": those nodes lose the constraint (upstream does the
/// same so that kubectl's v2 validation does not reject valid objects).
fn to_v2(s: &mut Value) {
    match s {
        Value::Object(m) => {
            for k in ["oneOf", "anyOf", "allOf", "not", "x-kubernetes-validations"] {
                m.remove(k);
            }
            let nullable = m
                .remove("nullable")
                .and_then(|v| v.as_bool())
                .unwrap_or(false);
            let int_or_string = m
                .get("x-kubernetes-int-or-string")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            if nullable || int_or_string {
                m.remove("type");
            }
            for (k, v) in m.iter_mut() {
                // Values under these keys are data, not schemas.
                if matches!(k.as_str(), "default" | "example" | "enum") {
                    continue;
                }
                if k == "properties" {
                    if let Some(props) = v.as_object_mut() {
                        props.values_mut().for_each(to_v2);
                    }
                } else {
                    to_v2(v);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(to_v2),
        _ => {}
    }
}
