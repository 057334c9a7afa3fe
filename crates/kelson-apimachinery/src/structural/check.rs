//! What upstream's CRD validation reports about a version's
//! `schema.openAPIV3Schema` (apiextensions `validateCustomResourceDefinitionValidation`):
//! structural-ness, unsupported keywords, list/map type rules, static
//! `x-kubernetes-validations` shape and invalid defaults.

use serde_json::{Map, Value};

use super::render::{bad_value, quote};
use super::{parse_node, prune, validate, Structural};
use crate::validation::{self as v, Bad, Cause};

/// Options that depend on the rest of the CRD version.
#[derive(Debug, Clone, Copy, Default)]
pub struct CheckOptions {
    /// The version enables the `status` subresource (restricts the root).
    pub status_subresource: bool,
}

/// Checks a schema as upstream does on CRD create/update. `field_path` is
/// the path of the schema itself, e.g.
/// `spec.versions[0].schema.openAPIV3Schema`.
pub fn check_crd_schema(schema: &Value, field_path: &str) -> Vec<Cause> {
    check_crd_schema_with(schema, field_path, CheckOptions::default())
}

/// [`check_crd_schema`] with version-dependent options.
pub fn check_crd_schema_with(schema: &Value, field_path: &str, opts: CheckOptions) -> Vec<Cause> {
    let p = field_path;
    let mut out = Vec::new();
    let Some(root) = schema.as_object() else {
        out.push(v::invalid(
            p,
            Bad::Raw(bad_value(schema)),
            "must be an object",
        ));
        return out;
    };
    if opts.status_subresource {
        status_root(root, p, &mut out);
    }
    if root.get("nullable").and_then(Value::as_bool) == Some(true) {
        out.push(v::forbidden(
            &child(p, "nullable"),
            "nullable cannot be true at the root",
        ));
    }
    let init_err = init_error(schema);
    if init_err.is_none() {
        let s = parse_node(schema);
        let mut structural = Vec::new();
        invariants(&s, Level::Root, p, &mut structural);
        completeness(&s, p, &mut structural);
        // Upstream sorts by the rendered error ("field: message").
        structural.sort_by_key(|c| format!("{}: {}", c.field, c.message));
        if structural.is_empty() {
            let mut root = s.clone();
            root.embedded_resource = true;
            defaults(&root, p, false, &mut out);
        } else {
            out.extend(structural);
        }
    }
    let ctx = Ctx {
        allow_defaults: true,
        defaults_reason: String::new(),
        inside_meta: false,
    };
    openapi(schema, p, &ctx, true, &mut out);
    if out.is_empty() {
        if let Some(e) = init_err {
            out.push(v::invalid(p, Bad::Str(String::new()), &e));
        }
    }
    out
}

fn child(p: &str, name: &str) -> String {
    if p.is_empty() {
        name.to_string()
    } else {
        format!("{p}.{name}")
    }
}

fn key(p: &str, k: &str) -> String {
    format!("{p}[{k}]")
}

fn string_list(v: &[String]) -> Bad {
    let q: Vec<String> = v.iter().map(|s| quote(s)).collect();
    Bad::Raw(format!("[]string{{{}}}", q.join(", ")))
}

/// JSONSchemaProps fields in Go struct order, by JSON name.
const FIELD_ORDER: &[&str] = &[
    "id",
    "$schema",
    "$ref",
    "description",
    "type",
    "format",
    "title",
    "default",
    "maximum",
    "exclusiveMaximum",
    "minimum",
    "exclusiveMinimum",
    "maxLength",
    "minLength",
    "pattern",
    "maxItems",
    "minItems",
    "uniqueItems",
    "multipleOf",
    "enum",
    "maxProperties",
    "minProperties",
    "required",
    "items",
    "allOf",
    "oneOf",
    "anyOf",
    "not",
    "properties",
    "additionalProperties",
    "patternProperties",
    "dependencies",
    "additionalItems",
    "definitions",
    "externalDocs",
    "example",
    "nullable",
    "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-embedded-resource",
    "x-kubernetes-int-or-string",
    "x-kubernetes-list-map-keys",
    "x-kubernetes-list-type",
    "x-kubernetes-map-type",
    "x-kubernetes-validations",
];

const ALLOWED_AT_STATUS_ROOT: &[&str] = &[
    "description",
    "type",
    "format",
    "title",
    "maximum",
    "exclusiveMaximum",
    "minimum",
    "exclusiveMinimum",
    "maxLength",
    "minLength",
    "pattern",
    "maxItems",
    "minItems",
    "uniqueItems",
    "multipleOf",
    "required",
    "items",
    "properties",
    "externalDocs",
    "example",
    "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-validations",
];

fn is_zero(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(m) => m.is_empty(),
        Value::Number(_) => false,
    }
}

fn status_root(root: &Map<String, Value>, p: &str, out: &mut Vec<Cause>) {
    for f in FIELD_ORDER {
        let Some(val) = root.get(*f).filter(|v| !is_zero(v)) else {
            continue;
        };
        if *f == "type" {
            if val.as_str() != Some("object") {
                out.push(v::invalid(
                    &child(p, "type"),
                    Bad::Raw(bad_value(val)),
                    r#"only "object" is allowed as the type at the root of the schema if the status subresource is enabled"#,
                ));
                return;
            }
            continue;
        }
        if !ALLOWED_AT_STATUS_ROOT.contains(f) {
            out.push(v::invalid(
                p,
                Bad::Raw(bad_value(&Value::Object(root.clone()))),
                "only [Description Type Format Title Maximum ExclusiveMaximum Minimum ExclusiveMinimum MaxLength MinLength Pattern MaxItems MinItems UniqueItems MultipleOf Required Items Properties ExternalDocs Example XPreserveUnknownFields XValidations] fields are allowed at the root of the schema if the status subresource is enabled",
            ));
            return;
        }
    }
}

/// Upstream `NewStructural` conversion errors (shown only when nothing
/// else is reported).
fn init_error(v: &Value) -> Option<String> {
    let m = v.as_object()?;
    let set = |k: &str| m.get(k).is_some_and(|x| !is_zero(x));
    for (k, name) in [
        ("id", "id"),
        ("$schema", "schema"),
        ("$ref", "$ref"),
        ("patternProperties", "patternProperties"),
        ("dependencies", "dependencies"),
    ] {
        if set(k) {
            return Some(format!("OpenAPIV3Schema '{name}' is not supported"));
        }
    }
    if m.get("additionalItems").is_some_and(|x| !x.is_null()) {
        return Some("OpenAPIV3Schema 'additionalItems' is not supported".into());
    }
    if set("definitions") {
        return Some("OpenAPIV3Schema 'definitions' is not supported".into());
    }
    if let Some(e) = m.get("not").and_then(init_error) {
        return Some(e);
    }
    for k in ["allOf", "anyOf", "oneOf"] {
        for sub in m.get(k).and_then(Value::as_array).into_iter().flatten() {
            if let Some(e) = init_error(sub) {
                return Some(e);
            }
        }
    }
    if m.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(false)) {
        return Some(
            "internal error: 'x-kubernetes-preserve-unknown-fields' must be true or undefined"
                .into(),
        );
    }
    match m.get("items") {
        Some(Value::Array(a)) if !a.is_empty() => {
            return Some("OpenAPIV3Schema 'items' must be a schema, but is an array".into())
        }
        Some(i) => {
            if let Some(e) = init_error(i) {
                return Some(e);
            }
        }
        None => {}
    }
    for sub in m
        .get("properties")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        if let Some(e) = init_error(sub.1) {
            return Some(e);
        }
    }
    m.get("additionalProperties").and_then(init_error)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Level {
    Root,
    Item,
    Field,
}

/// `anyOf: [{type: integer}, {type: string}]` and nothing else in them.
fn is_int_or_string_any_of(any_of: &[Structural]) -> bool {
    any_of.len() == 2 && bare_type(&any_of[0], "integer") && bare_type(&any_of[1], "string")
}

fn bare_type(s: &Structural, t: &str) -> bool {
    s.type_ == t && {
        let mut z = s.clone();
        z.type_.clear();
        is_empty_schema(&z)
    }
}

/// Whether nothing at all is specified in `s`.
fn is_empty_schema(s: &Structural) -> bool {
    s.type_.is_empty()
        && s.format.is_empty()
        && s.title.is_empty()
        && s.description.is_empty()
        && !s.nullable
        && s.default.is_none()
        && s.maximum.is_none()
        && !s.exclusive_maximum
        && s.minimum.is_none()
        && !s.exclusive_minimum
        && s.max_length.is_none()
        && s.min_length.is_none()
        && s.pattern.is_empty()
        && s.max_items.is_none()
        && s.min_items.is_none()
        && !s.unique_items
        && s.multiple_of.is_none()
        && s.enum_.is_empty()
        && s.max_properties.is_none()
        && s.min_properties.is_none()
        && s.required.is_empty()
        && s.all_of.is_empty()
        && s.any_of.is_empty()
        && s.one_of.is_empty()
        && s.not.is_none()
        && s.properties.is_empty()
        && s.additional_properties.is_none()
        && s.items.is_none()
        && s.preserve_unknown_fields.is_none()
        && !s.embedded_resource
        && !s.int_or_string
        && s.list_type.is_none()
        && s.list_map_keys.is_empty()
        && s.map_type.is_none()
        && s.validations.is_empty()
}

fn forbidden(out: &mut Vec<Cause>, p: &str, f: &str, detail: &str) {
    out.push(v::forbidden(&child(p, f), detail));
}

/// Upstream `validateStructuralInvariants`.
fn invariants(s: &Structural, lvl: Level, p: &str, out: &mut Vec<Cause>) {
    if s.type_ == "array" && s.items.is_none() {
        out.push(v::required(&child(p, "items"), "must be specified"));
    }
    if let Some(is) = &s.items {
        invariants(is, Level::Item, &child(p, "items"), out);
    }
    for (k, prop) in &s.properties {
        invariants(prop, Level::Field, &key(&child(p, "properties"), k), out);
    }
    if let Some(ap) = &s.additional_properties {
        if lvl == Level::Root {
            forbidden(
                out,
                p,
                "additionalProperties",
                "must not be used at the root",
            );
        }
        if let Some(sub) = &ap.schema {
            invariants(sub, Level::Field, &child(p, "additionalProperties"), out);
        }
    }
    let preserve = s.preserve();
    if s.int_or_string && preserve {
        out.push(v::invalid(
            &child(p, "x-kubernetes-preserve-unknown-fields"),
            Bad::Bool(true),
            "must be false if x-kubernetes-int-or-string is true",
        ));
    }
    if s.int_or_string && s.embedded_resource {
        out.push(v::invalid(
            &child(p, "x-kubernetes-embedded-resource"),
            Bad::Bool(true),
            "must be false if x-kubernetes-int-or-string is true",
        ));
    }
    let skip_any_of = is_int_or_string_any_of(&s.any_of);
    let skip_first_all_of = s
        .all_of
        .first()
        .is_some_and(|a| is_int_or_string_any_of(&a.any_of));
    value_validation(s, skip_any_of, skip_first_all_of, lvl, p, out);

    let check_meta = lvl == Level::Root || s.embedded_resource;
    if s.embedded_resource && s.type_ != "object" {
        let d = "must be object if x-kubernetes-embedded-resource is true";
        if s.type_.is_empty() {
            out.push(v::required(&child(p, "type"), d));
        } else {
            out.push(v::invalid(&child(p, "type"), Bad::Str(s.type_.clone()), d));
        }
    } else if s.type_.is_empty() && !s.int_or_string && !preserve {
        let d = match lvl {
            Level::Root => "must not be empty at the root",
            Level::Item => "must not be empty for specified array items",
            Level::Field => "must not be empty for specified object fields",
        };
        out.push(v::required(&child(p, "type"), d));
    }
    if s.embedded_resource && s.additional_properties.is_some() {
        forbidden(
            out,
            p,
            "additionalProperties",
            "must not be used if x-kubernetes-embedded-resource is set",
        );
    }
    if lvl == Level::Root && !s.type_.is_empty() && s.type_ != "object" {
        out.push(v::invalid(
            &child(p, "type"),
            Bad::Str(s.type_.clone()),
            "must be object at the root",
        ));
    }
    for f in ["kind", "apiVersion"] {
        if let Some(prop) = s.properties.get(f).filter(|_| check_meta) {
            if prop.type_ != "string" {
                out.push(v::invalid(
                    &child(&key(&child(p, "properties"), f), "type"),
                    Bad::Str(prop.type_.clone()),
                    "must be string",
                ));
            }
        }
    }
    if let Some(meta) = s.properties.get("metadata") {
        let mp = key(&child(p, "properties"), "metadata");
        if check_meta && meta.type_ != "object" {
            out.push(v::invalid(
                &child(&mp, "type"),
                Bad::Str(meta.type_.clone()),
                "must be object",
            ));
        }
        if lvl == Level::Root {
            let mut m = meta.clone();
            let has_name = m.properties.contains_key("name");
            let has_gen = m.properties.contains_key("generateName");
            let n = m.properties.len();
            if (has_name && has_gen && n == 2) || ((has_name || has_gen) && n == 1) {
                m.properties.clear();
            }
            m.type_.clear();
            m.default = None;
            if !is_empty_schema(&m) || m.has_docs_extras {
                out.push(v::forbidden(
                    &mp,
                    "must not specify anything other than name and generateName, but metadata is implicitly specified",
                ));
            }
        }
    }
    if s.embedded_resource && !preserve && s.properties.is_empty() {
        out.push(v::required(
            &child(p, "properties"),
            "must not be empty if x-kubernetes-embedded-resource is true without x-kubernetes-preserve-unknown-fields",
        ));
    }
}

/// Upstream `validateValueValidation` (junctors and pattern).
fn value_validation(
    s: &Structural,
    skip_any_of: bool,
    skip_first_all_of: bool,
    lvl: Level,
    p: &str,
    out: &mut Vec<Cause>,
) {
    if !skip_any_of {
        for (i, sub) in s.any_of.iter().enumerate() {
            nested(sub, false, lvl, &format!("{}[{i}]", child(p, "anyOf")), out);
        }
    }
    for (i, sub) in s.all_of.iter().enumerate() {
        let skip = skip_first_all_of && i == 0;
        nested(sub, skip, lvl, &format!("{}[{i}]", child(p, "allOf")), out);
    }
    for (i, sub) in s.one_of.iter().enumerate() {
        nested(sub, false, lvl, &format!("{}[{i}]", child(p, "oneOf")), out);
    }
    if let Some(not) = &s.not {
        nested(not, false, lvl, &child(p, "not"), out);
    }
    if let Some(Err(e)) = &s.regex {
        out.push(v::invalid(
            &child(p, "pattern"),
            Bad::Str(s.pattern.clone()),
            &format!("must be a valid regular expression, but isn't: {e}"),
        ));
    }
}

/// Upstream `validateNestedValueValidation`: only value validations may
/// appear under a logical junctor.
fn nested(s: &Structural, skip_any_of: bool, lvl: Level, p: &str, out: &mut Vec<Cause>) {
    value_validation(s, skip_any_of, false, lvl, p, out);
    if let Some(is) = &s.items {
        nested(is, false, lvl, &child(p, "items"), out);
    }
    for (k, prop) in &s.properties {
        nested(
            prop,
            false,
            Level::Field,
            &key(&child(p, "properties"), k),
            out,
        );
    }
    let be = "must be empty to be structural";
    let bu = "must be undefined to be structural";
    let bf = "must be false to be structural";
    if !s.type_.is_empty() {
        forbidden(out, p, "type", be);
    }
    match &s.additional_properties {
        Some(ap) if ap.allows || ap.schema.is_some() => {
            forbidden(out, p, "additionalProperties", bu)
        }
        _ => {}
    }
    if s.default.is_some() {
        forbidden(out, p, "default", bu);
    }
    if !s.title.is_empty() {
        forbidden(out, p, "title", be);
    }
    if !s.description.is_empty() {
        forbidden(out, p, "description", be);
    }
    if s.nullable {
        forbidden(out, p, "nullable", bf);
    }
    if s.preserve() {
        forbidden(out, p, "x-kubernetes-preserve-unknown-fields", bf);
    }
    if s.embedded_resource {
        forbidden(out, p, "x-kubernetes-embedded-resource", bf);
    }
    if s.int_or_string {
        forbidden(out, p, "x-kubernetes-int-or-string", bf);
    }
    if !s.list_map_keys.is_empty() {
        forbidden(out, p, "x-kubernetes-list-map-keys", be);
    }
    if s.list_type.is_some() {
        forbidden(out, p, "x-kubernetes-list-type", bu);
    }
    if s.map_type.is_some() {
        forbidden(out, p, "x-kubernetes-map-type", bu);
    }
    if !s.validations.is_empty() {
        forbidden(out, p, "x-kubernetes-validations", be);
    }
    if s.properties.contains_key("metadata") {
        out.push(v::forbidden(
            &key(&child(p, "properties"), "metadata"),
            "must not be specified in a nested context",
        ));
    }
}

/// Upstream `validateStructuralCompleteness` (it only looks at the
/// junctors of the root node).
fn completeness(s: &Structural, p: &str, out: &mut Vec<Cause>) {
    vv_complete(s, s, p, p, out);
}

fn vv_complete(v: &Structural, s: &Structural, sp: &str, vp: &str, out: &mut Vec<Cause>) {
    if let Some(not) = &v.not {
        nested_complete(not, Some(s), sp, &child(vp, "not"), out);
    }
    for (name, list) in [
        ("allOf", &v.all_of),
        ("anyOf", &v.any_of),
        ("oneOf", &v.one_of),
    ] {
        for (i, sub) in list.iter().enumerate() {
            nested_complete(sub, Some(s), sp, &format!("{}[{i}]", child(vp, name)), out);
        }
    }
}

fn nested_complete(
    v: &Structural,
    s: Option<&Structural>,
    sp: &str,
    vp: &str,
    out: &mut Vec<Cause>,
) {
    let Some(s) = s else {
        out.push(v::required(sp, &format!("because it is defined in {vp}")));
        return;
    };
    vv_complete(v, s, sp, vp, out);
    if let Some(vi) = &v.items {
        nested_complete(
            vi,
            s.items.as_deref(),
            &child(sp, "items"),
            &child(vp, "items"),
            out,
        );
    }
    for (k, vf) in &v.properties {
        let spk = key(&child(sp, "properties"), k);
        let vpk = key(&child(vp, "properties"), k);
        match s.properties.get(k) {
            Some(sf) => nested_complete(vf, Some(sf), &spk, &vpk, out),
            None => out.push(v::required(
                &spk,
                &format!("because it is defined in {vpk}"),
            )),
        }
    }
}

/// Upstream `defaulting.ValidateDefaults` (without CEL). `s` is already
/// marked as a resource root by the caller.
fn defaults(s: &Structural, p: &str, inside_meta: bool, out: &mut Vec<Cause>) {
    let inside_meta = inside_meta && !s.embedded_resource;
    if let Some(d) = &s.default {
        let dp = child(p, "default");
        if !inside_meta && prune::needs_pruning(d, s) {
            out.push(v::invalid(
                &dp,
                Bad::Raw(bad_value(d)),
                "must not have unknown fields",
            ));
        }
        let mut meta_errs = Vec::new();
        if s.embedded_resource && !inside_meta {
            // The default is itself an embedded object: check its TypeMeta
            // and ObjectMeta like a custom resource's embedded objects.
            let mut wrapper = <Structural as Default>::default();
            wrapper.properties.insert("default".into(), s.clone());
            let wrapped = Value::Object(Map::from_iter([("default".to_string(), d.clone())]));
            for mut c in validate::embedded_resources(&wrapper, &wrapped) {
                c.field = format!("{p}.{}", c.field);
                meta_errs.push(c);
            }
        }
        if meta_errs.is_empty() {
            out.extend(validate::schema_causes(s, d, Some(&dp)));
        } else {
            out.extend(meta_errs);
        }
    }
    if let Some(is) = &s.items {
        defaults(is, &child(p, "items"), inside_meta, out);
    }
    for (k, prop) in &s.properties {
        let sub_meta = inside_meta
            || (s.embedded_resource && ["metadata", "apiVersion", "kind"].contains(&k.as_str()));
        defaults(prop, &key(&child(p, "properties"), k), sub_meta, out);
    }
}

struct Ctx {
    allow_defaults: bool,
    defaults_reason: String,
    inside_meta: bool,
}

impl Ctx {
    fn forbid_defaults(&self, reason: &str) -> Ctx {
        Ctx {
            allow_defaults: false,
            defaults_reason: reason.to_string(),
            inside_meta: self.inside_meta,
        }
    }
}

const TYPES: &[&str] = &["array", "boolean", "integer", "number", "object", "string"];

/// Upstream `ValidateCustomResourceDefinitionOpenAPISchema` (static parts).
fn openapi(schema: &Value, p: &str, ctx: &Ctx, is_root: bool, out: &mut Vec<Cause>) {
    let Some(m) = schema.as_object() else {
        return;
    };
    let st = |k: &str| m.get(k).and_then(Value::as_str).unwrap_or("");
    let ty = st("type");
    let present = |k: &str| m.get(k).is_some_and(|x| !x.is_null());
    // specStandardValidatorV3.validate
    if !ty.is_empty() && !TYPES.contains(&ty) {
        out.push(v::not_supported(
            &child(p, "type"),
            Bad::Str(ty.into()),
            TYPES,
        ));
    }
    if present("default") && !ctx.allow_defaults {
        let mut d = "must not be set".to_string();
        if !ctx.defaults_reason.is_empty() {
            d.push(' ');
            d.push_str(&ctx.defaults_reason);
        }
        forbidden(out, p, "default", &d);
    }
    if !st("id").is_empty() {
        forbidden(out, p, "id", "id is not supported");
    }
    if present("additionalItems") {
        forbidden(
            out,
            p,
            "additionalItems",
            "additionalItems is not supported",
        );
    }
    if m.get("patternProperties").is_some_and(|x| !is_zero(x)) {
        forbidden(
            out,
            p,
            "patternProperties",
            "patternProperties is not supported",
        );
    }
    if m.get("definitions").is_some_and(|x| !is_zero(x)) {
        forbidden(out, p, "definitions", "definitions is not supported");
    }
    if present("dependencies") {
        forbidden(out, p, "dependencies", "dependencies is not supported");
    }
    if present("$ref") {
        forbidden(out, p, "$ref", "$ref is not supported");
    }
    if ty == "null" {
        forbidden(
            out,
            p,
            "type",
            "type cannot be set to null, use nullable as an alternative",
        );
    }
    let items = m.get("items");
    if let Some(Value::Array(a)) = items {
        if !a.is_empty() {
            forbidden(
                out,
                p,
                "items",
                "items must be a schema object and not an array",
            );
        }
    }
    let embedded = m.get("x-kubernetes-embedded-resource") == Some(&Value::Bool(true));
    if ctx.inside_meta && embedded {
        forbidden(
            out,
            p,
            "x-kubernetes-embedded-resource",
            "must not be used inside of resource meta",
        );
    }
    if m.get("uniqueItems") == Some(&Value::Bool(true)) {
        forbidden(
            out,
            p,
            "uniqueItems",
            "uniqueItems cannot be set to true since the runtime complexity becomes quadratic",
        );
    }
    let props = m.get("properties").and_then(Value::as_object);
    let has_props = props.is_some_and(|p| !p.is_empty());
    if let Some(ap) = m.get("additionalProperties").filter(|x| !x.is_null()) {
        if has_props && (ap == &Value::Bool(false) || ap.is_object()) {
            forbidden(
                out,
                p,
                "additionalProperties",
                "additionalProperties and properties are mutual exclusive",
            );
        }
        let sub = if ctx.inside_meta {
            ctx.forbid_defaults("inside additionalProperties applying to object metadata")
        } else {
            ctx_clone(ctx)
        };
        openapi(ap, &child(p, "additionalProperties"), &sub, false, out);
    }
    for (k, ps) in props.into_iter().flatten() {
        let mut sub = ctx_clone(ctx);
        if (is_root || embedded) && ["metadata", "kind", "apiVersion"].contains(&k.as_str()) {
            sub.inside_meta = true;
            if is_root {
                sub = sub.forbid_defaults(&format!("in top-level {k}"));
            }
        }
        openapi(ps, &key(&child(p, "properties"), k), &sub, false, out);
    }
    if let Some(not) = m.get("not") {
        openapi(not, &child(p, "not"), ctx, false, out);
    }
    for name in ["allOf", "oneOf", "anyOf"] {
        for (i, sub) in m
            .get(name)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            openapi(sub, &format!("{}[{i}]", child(p, name)), ctx, false, out);
        }
    }
    for (k, sub) in m
        .get("definitions")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        openapi(sub, &key(&child(p, "definitions"), k), ctx, false, out);
    }
    match items {
        Some(i @ Value::Object(_)) => openapi(i, &child(p, "items"), ctx, false, out),
        Some(Value::Array(a)) => {
            for (i, sub) in a.iter().enumerate() {
                openapi(sub, &format!("{}[{i}]", child(p, "items")), ctx, false, out);
            }
        }
        _ => {}
    }
    for (k, sub) in m
        .get("dependencies")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        if sub.is_object() {
            openapi(sub, &key(&child(p, "dependencies"), k), ctx, false, out);
        }
    }
    if m.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(false)) {
        out.push(v::invalid(
            &child(p, "x-kubernetes-preserve-unknown-fields"),
            Bad::Bool(false),
            "must be true or undefined",
        ));
    }
    list_and_map_types(m, p, out);
    rules(m, p, out);
}

fn ctx_clone(ctx: &Ctx) -> Ctx {
    Ctx {
        allow_defaults: ctx.allow_defaults,
        defaults_reason: ctx.defaults_reason.clone(),
        inside_meta: ctx.inside_meta,
    }
}

fn type_must_be(out: &mut Vec<Cause>, p: &str, ty: &str, detail: &str) {
    if ty.is_empty() {
        out.push(v::required(&child(p, "type"), detail));
    } else {
        out.push(v::invalid(&child(p, "type"), Bad::Str(ty.into()), detail));
    }
}

fn list_and_map_types(m: &Map<String, Value>, p: &str, out: &mut Vec<Cause>) {
    let st = |k: &str| m.get(k).and_then(Value::as_str);
    let ty = st("type").unwrap_or("");
    let map_type = st("x-kubernetes-map-type");
    let list_type = st("x-kubernetes-list-type");
    if map_type.is_some() && ty != "object" {
        type_must_be(
            out,
            p,
            ty,
            "must be object if x-kubernetes-map-type is specified",
        );
    }
    if let Some(mt) = map_type.filter(|mt| *mt != "atomic" && *mt != "granular") {
        out.push(v::not_supported(
            &child(p, "x-kubernetes-map-type"),
            Bad::Str(mt.into()),
            &["atomic", "granular"],
        ));
    }
    let items = m.get("items").and_then(Value::as_object);
    let item_str = |k: &str| items.and_then(|i| i.get(k)).and_then(Value::as_str);
    if list_type.is_some() && ty != "array" {
        type_must_be(
            out,
            p,
            ty,
            "must be array if x-kubernetes-list-type is specified",
        );
    } else if list_type == Some("set") && items.is_some() {
        let d = "must be atomic as item of a list with x-kubernetes-list-type=set";
        let ip = child(p, "items");
        match item_str("type") {
            Some("array") => {
                if let Some(lt) = item_str("x-kubernetes-list-type").filter(|lt| *lt != "atomic") {
                    out.push(v::invalid(
                        &child(&ip, "x-kubernetes-list-type"),
                        Bad::Str(lt.into()),
                        d,
                    ));
                }
            }
            Some("object") if item_str("x-kubernetes-map-type") != Some("atomic") => {
                // Upstream reports the items' list type here (a nil
                // pointer prints as "null").
                let lt = item_str("x-kubernetes-list-type").unwrap_or("null");
                out.push(v::invalid(
                    &child(&ip, "x-kubernetes-map-type"),
                    Bad::Str(lt.into()),
                    d,
                ));
            }
            _ => {}
        }
    }
    if let Some(lt) = list_type.filter(|lt| !["atomic", "set", "map"].contains(lt)) {
        out.push(v::not_supported(
            &child(p, "x-kubernetes-list-type"),
            Bad::Str(lt.into()),
            &["atomic", "set", "map"],
        ));
    }
    let keys: Vec<String> = m
        .get("x-kubernetes-list-map-keys")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(String::from)
                .collect()
        })
        .unwrap_or_default();
    if !keys.is_empty() {
        let d = "must be map if x-kubernetes-list-map-keys is non-empty";
        match list_type {
            None => out.push(v::required(&child(p, "x-kubernetes-list-type"), d)),
            Some(lt) if lt != "map" => out.push(v::invalid(
                &child(p, "x-kubernetes-list-type"),
                Bad::Str(lt.into()),
                d,
            )),
            _ => {}
        }
    }
    if list_type == Some("map") {
        let kp = child(p, "x-kubernetes-list-map-keys");
        if keys.is_empty() {
            out.push(v::required(
                &kp,
                "must not be empty if x-kubernetes-list-type is map",
            ));
        }
        match m.get("items") {
            None | Some(Value::Null) => out.push(v::required(
                &child(p, "items"),
                "must have a schema if x-kubernetes-list-type is map",
            )),
            Some(i @ Value::Array(_)) => out.push(v::invalid(
                &child(p, "items"),
                Bad::Raw(bad_value(i)),
                "must only have a single schema if x-kubernetes-list-type is map",
            )),
            _ => {}
        }
        if let Some(is) = items {
            let ity = item_str("type").unwrap_or("");
            if ity != "object" {
                out.push(v::invalid(
                    &child(&child(p, "items"), "type"),
                    Bad::Str(ity.into()),
                    "must be object if parent array's x-kubernetes-list-type is map",
                ));
            } else {
                let iprops = is.get("properties").and_then(Value::as_object);
                let mut seen: Vec<&str> = Vec::new();
                for k in &keys {
                    match iprops.and_then(|pr| pr.get(k)) {
                        Some(ps) => {
                            let t = ps.get("type").and_then(Value::as_str).unwrap_or("");
                            if t == "array" || t == "object" {
                                out.push(v::invalid(
                                    &child(&key(&child(&child(p, "items"), "properties"), k), "type"),
                                    Bad::Str(ity.into()),
                                    "must be a scalar type if parent array's x-kubernetes-list-type is map",
                                ));
                            }
                        }
                        None => out.push(v::invalid(
                            &kp,
                            string_list(&keys),
                            "entries must all be names of item properties",
                        )),
                    }
                    if seen.contains(&k.as_str()) {
                        out.push(v::invalid(
                            &kp,
                            string_list(&keys),
                            "must not contain duplicate entries",
                        ));
                    }
                    seen.push(k);
                }
            }
        }
    }
    // validateMapListKeysMapSet
    let Some(is) = items else {
        return;
    };
    let Some(lt) = list_type.filter(|lt| *lt == "set" || *lt == "map") else {
        return;
    };
    let ip = child(p, "items");
    if is.get("nullable") == Some(&Value::Bool(true)) {
        out.push(v::forbidden(
            &child(&ip, "nullable"),
            &format!("cannot be nullable when x-kubernetes-list-type is {lt}"),
        ));
    }
    if lt == "map" {
        let required: Vec<&str> = is
            .get("required")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let iprops = is.get("properties").and_then(Value::as_object);
        for k in &keys {
            let Some(ps) = iprops.and_then(|pr| pr.get(k)) else {
                continue;
            };
            let kp = key(&child(&ip, "properties"), k);
            let has_default = ps.get("default").is_some_and(|d| !d.is_null());
            if !required.contains(&k.as_str()) && !has_default {
                out.push(v::required(
                    &child(&kp, "default"),
                    "this property is in x-kubernetes-list-map-keys, so it must have a default or be a required property",
                ));
            }
            if ps.get("nullable") == Some(&Value::Bool(true)) {
                out.push(v::forbidden(
                    &child(&kp, "nullable"),
                    "this property is in x-kubernetes-list-map-keys, so it cannot be nullable",
                ));
            }
        }
    }
}

/// Static checks of `x-kubernetes-validations` (the CEL rules themselves are
/// neither compiled nor evaluated).
fn rules(m: &Map<String, Value>, p: &str, out: &mut Vec<Cause>) {
    const REASONS: &[&str] = &[
        "FieldValueDuplicate",
        "FieldValueForbidden",
        "FieldValueInvalid",
        "FieldValueRequired",
    ];
    let list = m
        .get("x-kubernetes-validations")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    let newline = |s: &str| s.contains(['\n', '\r']);
    for (i, r) in list.iter().enumerate() {
        let rp = format!("{}[{i}]", child(p, "x-kubernetes-validations"));
        let get = |k: &str| r.get(k).and_then(Value::as_str).unwrap_or("");
        let (rule, msg, msg_expr) = (get("rule"), get("message"), get("messageExpression"));
        if rule.trim().is_empty() {
            out.push(v::required(&child(&rp, "rule"), "rule is not specified"));
        } else if !msg.is_empty() && msg.trim().is_empty() {
            out.push(v::invalid(
                &child(&rp, "message"),
                Bad::Str(msg.into()),
                "must be non-empty if specified",
            ));
        } else if newline(msg.trim()) {
            out.push(v::invalid(
                &child(&rp, "message"),
                Bad::Str(msg.into()),
                "must not contain line breaks",
            ));
        } else if newline(rule.trim()) && msg.trim().is_empty() {
            out.push(v::required(
                &child(&rp, "message"),
                "message must be specified if rule contains line breaks",
            ));
        }
        if !msg_expr.is_empty() && msg_expr.trim().is_empty() {
            out.push(v::required(
                &child(&rp, "messageExpression"),
                "messageExpression must be non-empty if specified",
            ));
        }
        if let Some(reason) = r.get("reason").and_then(Value::as_str) {
            if !REASONS.contains(&reason) {
                out.push(v::not_supported(
                    &child(&rp, "reason"),
                    Bad::Str(reason.into()),
                    REASONS,
                ));
            }
        }
        let fp = get("fieldPath");
        if !fp.is_empty() && fp.trim().is_empty() {
            out.push(v::invalid(
                &child(&rp, "fieldPath"),
                Bad::Str(fp.into()),
                "must be non-empty if specified",
            ));
        }
        if newline(fp) {
            out.push(v::invalid(
                &child(&rp, "fieldPath"),
                Bad::Str(fp.into()),
                "must not contain line breaks",
            ));
        }
    }
}
