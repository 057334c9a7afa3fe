//! Upstream behaviour of CRD structural schemas, on a realistic CronTab CRD.

use serde_json::{json, Value};

use super::*;

const P: &str = "spec.versions[0].schema.openAPIV3Schema";

fn crontab() -> Value {
    json!({
        "type": "object",
        "properties": {
            "spec": {
                "type": "object",
                "required": ["image"],
                "properties": {
                    "cronSpec": {"type": "string", "pattern": "^(\\d+|\\*)(/\\d+)?(\\s+(\\d+|\\*)(/\\d+)?){4}$"},
                    "image": {"type": "string", "maxLength": 20},
                    "replicas": {"type": "integer", "minimum": 1, "maximum": 10, "default": 1},
                    "mode": {"type": "string", "enum": ["Allow", "Forbid"], "default": "Allow"},
                    "port": {"x-kubernetes-int-or-string": true,
                             "anyOf": [{"type": "integer"}, {"type": "string"}]},
                    "ports": {
                        "type": "array",
                        "x-kubernetes-list-type": "map",
                        "x-kubernetes-list-map-keys": ["name"],
                        "items": {
                            "type": "object",
                            "required": ["name"],
                            "properties": {
                                "name": {"type": "string"},
                                "port": {"type": "integer", "format": "int32"},
                                "protocol": {"type": "string", "default": "TCP"}
                            }
                        }
                    },
                    "tags": {"type": "array", "maxItems": 3, "x-kubernetes-list-type": "set",
                             "items": {"type": "string"}},
                    "config": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                    "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                    "schedule": {
                        "type": "object",
                        "default": {},
                        "properties": {
                            "timezone": {"type": "string", "default": "UTC"},
                            "start": {"type": "string", "format": "date-time"}
                        }
                    },
                    "note": {"type": "string", "nullable": true},
                    "template": {"type": "object", "x-kubernetes-embedded-resource": true,
                                 "x-kubernetes-preserve-unknown-fields": true}
                }
            },
            "status": {"type": "object", "properties": {"ready": {"type": "boolean"}}}
        }
    })
}

fn messages(causes: &[Cause]) -> Vec<String> {
    causes
        .iter()
        .map(|c| format!("{}: {}", c.field, c.message))
        .collect()
}

fn valid_cr() -> Value {
    json!({
        "apiVersion": "stable.example.com/v1",
        "kind": "CronTab",
        "metadata": {"name": "my-cron", "namespace": "default"},
        "spec": {"cronSpec": "* * * * */5", "image": "my-image", "replicas": 3,
                 "ports": [{"name": "http", "port": 80}], "tags": ["a", "b"]}
    })
}

#[test]
fn realistic_schema_is_structural() {
    assert_eq!(check_crd_schema(&crontab(), P), vec![]);
}

#[test]
fn prune_drops_unknown_fields_and_reports_paths() {
    let s = parse(&crontab());
    let mut obj = json!({
        "apiVersion": "stable.example.com/v1",
        "kind": "CronTab",
        "metadata": {"name": "a", "bogus": true},
        "extra": 1,
        "spec": {
            "image": "x",
            "foo": "bar",
            "ports": [{"name": "http", "extra": 1}],
            "config": {"anything": {"goes": [1, 2]}},
            "labels": {"a": "b"},
            "template": {"apiVersion": "v1", "kind": "Pod",
                         "metadata": {"name": "p", "junk": 1}, "spec": {"x": 1}},
            "cronSpec": null,
            "note": null
        },
        "status": {"unknown": 1, "ready": true}
    });
    let paths = s.prune(&mut obj);
    assert_eq!(
        paths,
        vec![
            "metadata.bogus",
            "extra",
            "spec.foo",
            "spec.ports[0].extra",
            "status.unknown",
            "spec.template.metadata.junk",
        ]
    );
    assert_eq!(
        obj,
        json!({
            "apiVersion": "stable.example.com/v1",
            "kind": "CronTab",
            "metadata": {"name": "a"},
            "spec": {
                "image": "x",
                "ports": [{"name": "http"}],
                "config": {"anything": {"goes": [1, 2]}},
                "labels": {"a": "b"},
                // Embedded resources keep TypeMeta and their unknown fields
                // (preserve-unknown-fields); nullable nulls stay.
                "template": {"apiVersion": "v1", "kind": "Pod",
                             "metadata": {"name": "p"}, "spec": {"x": 1}},
                "note": null
            },
            "status": {"ready": true}
        })
    );
}

#[test]
fn object_without_properties_prunes_everything_inside() {
    let s = parse(&json!({"type": "object", "properties": {
        "spec": {"type": "object"}}}));
    let mut obj = json!({"spec": {"a": 1, "b": {"c": 2}}});
    assert_eq!(s.prune(&mut obj), vec!["spec.a", "spec.b"]);
    assert_eq!(obj, json!({"spec": {}}));
}

#[test]
fn defaults_apply_to_absent_and_null_fields_and_cascade() {
    let s = parse(&crontab());
    let mut obj = json!({"spec": {"image": "x", "replicas": null,
                                  "ports": [{"name": "http"}, {"name": "https", "protocol": "UDP"}]}});
    // Decoding keeps non-nullable nulls that have a default...
    s.prune(&mut obj);
    assert_eq!(obj["spec"]["replicas"], Value::Null);
    // ...and defaulting replaces them.
    s.default(&mut obj);
    assert_eq!(
        obj["spec"],
        json!({
            "image": "x",
            "replicas": 1,
            "mode": "Allow",
            // `schedule: {}` is defaulted, then its own fields are.
            "schedule": {"timezone": "UTC"},
            "ports": [{"name": "http", "protocol": "TCP"},
                      {"name": "https", "protocol": "UDP"}]
        })
    );
    // No spec at all: nothing to default inside.
    let mut empty = json!({"metadata": {"name": "a"}});
    s.default(&mut empty);
    assert_eq!(empty, json!({"metadata": {"name": "a"}}));
}

#[test]
fn defaults_in_additional_properties_and_items() {
    let s = parse(&json!({"type": "object", "properties": {
        "m": {"type": "object", "additionalProperties": {"type": "object",
              "properties": {"x": {"type": "integer", "default": 7}}}},
        "l": {"type": "array", "items": {"type": "string", "default": "d"}}}}));
    let mut obj = json!({"m": {"a": {}, "b": {"x": 1}}, "l": ["a", null]});
    s.default(&mut obj);
    assert_eq!(
        obj,
        json!({"m": {"a": {"x": 7}, "b": {"x": 1}}, "l": ["a", "d"]})
    );
}

#[test]
fn valid_object_has_no_errors() {
    let s = parse(&crontab());
    let mut obj = valid_cr();
    s.prune(&mut obj);
    s.default(&mut obj);
    assert_eq!(s.validate(&obj), vec![]);
}

fn errors_for(spec_patch: Value) -> Vec<String> {
    let s = parse(&crontab());
    let mut obj = valid_cr();
    if let (Some(spec), Some(patch)) = (obj["spec"].as_object_mut(), spec_patch.as_object()) {
        for (k, v) in patch {
            if v.is_null() {
                spec.remove(k);
            } else {
                spec.insert(k.clone(), v.clone());
            }
        }
    }
    messages(&s.validate(&obj))
}

#[test]
fn validation_messages_match_upstream() {
    assert_eq!(
        errors_for(json!({"replicas": "string"})),
        vec![
            r#"spec.replicas: Invalid value: "string": spec.replicas in body must be of type integer: "string""#
        ]
    );
    assert_eq!(
        errors_for(json!({"replicas": 11})),
        vec!["spec.replicas: Invalid value: 11: spec.replicas in body should be less than or equal to 10"]
    );
    assert_eq!(
        errors_for(json!({"replicas": 0})),
        vec!["spec.replicas: Invalid value: 0: spec.replicas in body should be greater than or equal to 1"]
    );
    // A float that is a JSON integer is an integer; others are numbers.
    assert_eq!(errors_for(json!({"replicas": 2.0})), Vec::<String>::new());
    assert_eq!(
        errors_for(json!({"replicas": 2.5})),
        vec![
            r#"spec.replicas: Invalid value: "number": spec.replicas in body must be of type integer: "number""#
        ]
    );
    assert_eq!(
        errors_for(json!({"cronSpec": "bad"})),
        vec![
            r#"spec.cronSpec: Invalid value: "bad": spec.cronSpec in body should match '^(\d+|\*)(/\d+)?(\s+(\d+|\*)(/\d+)?){4}$'"#
        ]
    );
    assert_eq!(
        errors_for(json!({"image": null})),
        vec!["spec.image: Required value"]
    );
    assert_eq!(
        errors_for(json!({"image": "an-image-name-that-is-too-long"})),
        vec!["spec.image: Too long: may not be more than 20 bytes"]
    );
    assert_eq!(
        errors_for(json!({"mode": "Maybe"})),
        vec![r#"spec.mode: Unsupported value: "Maybe": supported values: "Allow", "Forbid""#]
    );
    assert_eq!(
        errors_for(json!({"schedule": {"start": "yesterday"}})),
        vec![
            r#"spec.schedule.start: Invalid value: "yesterday": spec.schedule.start in body must be of type date-time: "yesterday""#
        ]
    );
    assert_eq!(
        errors_for(json!({"tags": ["a", "b", "a", "c"]})),
        vec![
            "spec.tags: Too many: 4: must have at most 3 items",
            r#"spec.tags[2]: Duplicate value: "a""#,
        ]
    );
    assert_eq!(
        errors_for(json!({"ports": [{"name": "http"}, {"name": "http", "port": 81}, {"port": 1}]})),
        vec![
            "spec.ports[2].name: Required value",
            r#"spec.ports[1]: Duplicate value: map[string]interface {}{"name":"http"}"#,
        ]
    );
    assert_eq!(
        errors_for(json!({"labels": {"a": 1}})),
        vec![
            r#"spec.labels.a: Invalid value: "integer": spec.labels.a in body must be of type string: "integer""#
        ]
    );
    assert_eq!(
        errors_for(json!({"template": {"apiVersion": "a/b/c", "metadata": {"name": "x/y"}}})),
        vec![
            "spec.template.kind: Required value",
            r#"spec.template.apiVersion: Invalid value: "a/b/c": unexpected GroupVersion string: a/b/c"#,
            r#"spec.template.metadata.name: Invalid value: "x/y": may not contain '/'"#,
        ]
    );
}

#[test]
fn int_or_string_accepts_both_and_reports_anyof() {
    assert_eq!(errors_for(json!({"port": 8080})), Vec::<String>::new());
    assert_eq!(errors_for(json!({"port": "http"})), Vec::<String>::new());
    let s = parse(&crontab());
    let causes = s.validate(&json!({"spec": {"image": "x", "port": true}}));
    assert_eq!(
        messages(&causes),
        vec![
            r#"spec.port: Invalid value: "boolean": spec.port in body must be of type integer,string: "boolean""#,
            r#"<nil>: Invalid value: "": "spec.port" must validate at least one schema (anyOf)"#,
            r#"spec.port: Invalid value: "boolean": spec.port in body must be of type integer: "boolean""#,
        ]
    );
    assert_eq!(causes[0].reason, "FieldValueTypeInvalid");
    assert_eq!(causes[1].reason, "FieldValueInvalid");
}

#[test]
fn status_is_validated_with_its_prefix() {
    let s = parse(&crontab());
    let status = s.at(&["status"]).expect("status schema");
    assert_eq!(
        messages(&status.validate_value(&json!({"ready": "yes"}), Some("status"))),
        vec![
            r#"status.ready: Invalid value: "string": ready in body must be of type boolean: "string""#
        ]
    );
}

#[test]
fn list_types_are_exposed_for_apply() {
    let s = parse(&crontab());
    let ports = s.at(&["spec", "ports"]).expect("ports");
    assert_eq!(ports.list_type(), Some("map"));
    assert_eq!(ports.list_map_keys(), ["name".to_string()]);
    assert_eq!(
        s.at(&["spec", "ports", "protocol"])
            .map(Structural::type_name),
        Some("string")
    );
    assert_eq!(
        s.at(&["spec", "tags"]).and_then(Structural::list_type),
        Some("set")
    );
    assert!(s.at(&["spec", "nope"]).is_none());
}

fn check(schema: Value) -> Vec<String> {
    messages(&check_crd_schema(&schema, P))
}

#[test]
fn non_structural_schemas_are_rejected_like_upstream() {
    assert_eq!(
        check(json!({"type": "object", "properties": {"spec": {"properties": {"a": {"type": "string"}}}}})),
        vec![format!("{P}.properties[spec].type: Required value: must not be empty for specified object fields")]
    );
    assert_eq!(
        check(json!({"properties": {"spec": {"type": "array"}}})),
        vec![
            format!("{P}.properties[spec].items: Required value: must be specified"),
            format!("{P}.type: Required value: must not be empty at the root"),
        ]
    );
    assert_eq!(
        check(json!({"type": "object", "properties": {"spec": {"type": "object",
            "properties": {"a": {"type": "string"}},
            "anyOf": [{"type": "object", "properties": {"b": {"description": "x"}}}]}}})),
        vec![
            format!("{P}.properties[spec].anyOf[0].properties[b].description: Forbidden: must be empty to be structural"),
            format!("{P}.properties[spec].anyOf[0].type: Forbidden: must be empty to be structural"),
        ]
    );
    assert_eq!(
        check(json!({"type": "object", "anyOf": [{"properties": {"missing": {"minLength": 1}}}]})),
        vec![format!("{P}.properties[missing]: Required value: because it is defined in {P}.anyOf[0].properties[missing]")]
    );
    assert_eq!(
        check(json!({"type": "object", "additionalProperties": {"type": "string"}})),
        vec![format!(
            "{P}.additionalProperties: Forbidden: must not be used at the root"
        )]
    );
    assert_eq!(
        check(json!({"type": "object", "properties": {"metadata": {"type": "object",
            "properties": {"labels": {"type": "object"}}}}})),
        vec![format!("{P}.properties[metadata]: Forbidden: must not specify anything other than name and generateName, but metadata is implicitly specified")]
    );
    // Restricting only name is allowed.
    assert_eq!(
        check(
            json!({"type": "object", "properties": {"metadata": {"type": "object",
            "properties": {"name": {"type": "string", "maxLength": 10}}}}})
        ),
        Vec::<String>::new()
    );
    assert_eq!(
        check(json!({"type": "object", "properties": {"x": {"type": "object",
            "x-kubernetes-embedded-resource": true}}})),
        vec![format!("{P}.properties[x].properties: Required value: must not be empty if x-kubernetes-embedded-resource is true without x-kubernetes-preserve-unknown-fields")]
    );
}

#[test]
fn unsupported_keywords_and_list_rules_are_rejected() {
    assert_eq!(
        check(json!({"type": "object", "properties": {
            "a": {"type": "string", "pattern": "(abc"},
            "b": {"type": "array", "uniqueItems": true, "items": {"type": "string"}},
            "d": {"type": "foo"}}})),
        vec![
            format!("{P}.properties[a].pattern: Invalid value: \"(abc\": must be a valid regular expression, but isn't: error parsing regexp: missing closing ): `(abc`"),
            format!("{P}.properties[b].uniqueItems: Forbidden: uniqueItems cannot be set to true since the runtime complexity becomes quadratic"),
            format!("{P}.properties[d].type: Unsupported value: \"foo\": supported values: \"array\", \"boolean\", \"integer\", \"number\", \"object\", \"string\""),
        ]
    );
    assert_eq!(
        check(json!({"type": "object", "properties": {"c": {"$ref": "#/definitions/x"}}})),
        vec![format!(
            "{P}.properties[c].$ref: Forbidden: $ref is not supported"
        )]
    );
    // Only the structural conversion notices `$schema`.
    assert_eq!(
        check(json!({"type": "object", "$schema": "http://json-schema.org/draft-04/schema#"})),
        vec![format!(
            "{P}: Invalid value: \"\": OpenAPIV3Schema 'schema' is not supported"
        )]
    );
    let list = |extra: Value| {
        let mut ports = json!({"type": "array", "x-kubernetes-list-type": "map",
            "items": {"type": "object", "properties": {"name": {"type": "string"}}}});
        if let (Some(p), Some(e)) = (ports.as_object_mut(), extra.as_object()) {
            p.extend(e.clone());
        }
        check(json!({"type": "object", "properties": {"ports": ports}}))
    };
    assert_eq!(
        list(json!({})),
        vec![format!("{P}.properties[ports].x-kubernetes-list-map-keys: Required value: must not be empty if x-kubernetes-list-type is map")]
    );
    assert_eq!(
        list(json!({"x-kubernetes-list-map-keys": ["name", "port"]})),
        vec![
            format!("{P}.properties[ports].x-kubernetes-list-map-keys: Invalid value: []string{{\"name\", \"port\"}}: entries must all be names of item properties"),
            format!("{P}.properties[ports].items.properties[name].default: Required value: this property is in x-kubernetes-list-map-keys, so it must have a default or be a required property"),
        ]
    );
    assert_eq!(
        check(json!({"type": "object", "properties": {"t": {"type": "string",
            "x-kubernetes-list-type": "set"}}})),
        vec![format!("{P}.properties[t].type: Invalid value: \"string\": must be array if x-kubernetes-list-type is specified")]
    );
}

#[test]
fn invalid_defaults_are_rejected() {
    let mut schema = crontab();
    schema["properties"]["spec"]["properties"]["replicas"]["default"] = json!(20);
    schema["properties"]["spec"]["properties"]["schedule"]["default"] = json!({"bogus": 1});
    assert_eq!(
        check(schema),
        vec![
            format!("{P}.properties[spec].properties[replicas].default: Invalid value: 20:  in body should be less than or equal to 10"),
            format!("{P}.properties[spec].properties[schedule].default: Invalid value: map[string]interface {{}}{{\"bogus\":1}}: must not have unknown fields"),
        ]
    );
    assert_eq!(
        check(
            json!({"type": "object", "properties": {"metadata": {"type": "object",
            "default": {"name": "x"}}}})
        ),
        vec![format!(
            "{P}.properties[metadata].default: Forbidden: must not be set in top-level metadata"
        )]
    );
    assert_eq!(
        check(json!({"type": "object", "nullable": true})),
        vec![format!(
            "{P}.nullable: Forbidden: nullable cannot be true at the root"
        )]
    );
}

#[test]
fn status_subresource_restricts_the_root() {
    let opts = CheckOptions {
        status_subresource: true,
    };
    let ok = check_crd_schema_with(&crontab(), P, opts);
    assert_eq!(ok, vec![]);
    let bad = check_crd_schema_with(
        &json!({"type": "object", "minProperties": 1, "properties": {"a": {"type": "string"}}}),
        P,
        opts,
    );
    assert_eq!(bad.len(), 1);
    assert_eq!(bad[0].field, P);
    assert!(bad[0].message.ends_with(
        "fields are allowed at the root of the schema if the status subresource is enabled"
    ));
}
