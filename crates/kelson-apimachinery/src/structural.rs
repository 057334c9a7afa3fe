//! Structural schemas of CustomResourceDefinitions (apiextensions.k8s.io/v1).
//!
//! Upstream requires every CRD version's `schema.openAPIV3Schema` to be
//! *structural* and, for each custom resource it decodes, runs:
//!
//! 1. decode, then [`Structural::prune`]: unknown fields are dropped (the
//!    paths are reported for `fieldValidation=Warn|Strict` as
//!    `unknown field "spec.foo"`), non-nullable `null`s without a default are
//!    removed, and embedded `metadata` is coerced to ObjectMeta;
//! 2. [`Structural::default`]: `default` values are applied;
//! 3. admission, then [`Structural::validate`]: the kube-openapi schema
//!    validation, embedded-resource TypeMeta/ObjectMeta checks and
//!    `x-kubernetes-list-type` set/map uniqueness, with the messages and
//!    field paths of upstream's 422 `Invalid` causes.
//!
//! [`check_crd_schema`] reports what upstream's CRD validation reports for
//! a schema (structural-ness, unsupported keywords, list/map type rules and
//! invalid defaults). `x-kubernetes-validations` (CEL) rules are parsed for
//! their static shape only; they are never evaluated.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::validation::Cause;

mod check;
mod formats;
mod prune;
mod regex;
mod render;
mod validate;

pub use check::{check_crd_schema, check_crd_schema_with, CheckOptions};
pub use regex::{Regex, RegexError};

/// `additionalProperties` of a schema: `false`, `true`, or a schema.
#[derive(Debug, Clone)]
pub struct AdditionalProperties {
    /// Whether extra properties are allowed (`true` or a schema).
    pub allows: bool,
    /// The schema of every extra property, when one is given.
    pub schema: Option<Box<Structural>>,
}

/// A parsed OpenAPI v3 schema node of a CRD (the whole tree, including the
/// value validations nested under `allOf`/`anyOf`/`oneOf`/`not`).
#[derive(Debug, Clone, Default)]
pub struct Structural {
    pub(crate) type_: String,
    pub(crate) format: String,
    pub(crate) title: String,
    pub(crate) description: String,
    pub(crate) nullable: bool,
    pub(crate) default: Option<Value>,
    pub(crate) maximum: Option<f64>,
    pub(crate) exclusive_maximum: bool,
    pub(crate) minimum: Option<f64>,
    pub(crate) exclusive_minimum: bool,
    pub(crate) max_length: Option<i64>,
    pub(crate) min_length: Option<i64>,
    pub(crate) pattern: String,
    /// Compiled `pattern`, or Go's compile error text.
    pub(crate) regex: Option<Result<Regex, RegexError>>,
    pub(crate) max_items: Option<i64>,
    pub(crate) min_items: Option<i64>,
    pub(crate) unique_items: bool,
    pub(crate) multiple_of: Option<f64>,
    pub(crate) enum_: Vec<Value>,
    pub(crate) max_properties: Option<i64>,
    pub(crate) min_properties: Option<i64>,
    pub(crate) required: Vec<String>,
    pub(crate) all_of: Vec<Structural>,
    pub(crate) any_of: Vec<Structural>,
    pub(crate) one_of: Vec<Structural>,
    pub(crate) not: Option<Box<Structural>>,
    pub(crate) properties: BTreeMap<String, Structural>,
    pub(crate) additional_properties: Option<AdditionalProperties>,
    pub(crate) items: Option<Box<Structural>>,
    /// `x-kubernetes-preserve-unknown-fields` (`Some(false)` is invalid).
    pub(crate) preserve_unknown_fields: Option<bool>,
    pub(crate) embedded_resource: bool,
    pub(crate) int_or_string: bool,
    pub(crate) list_type: Option<String>,
    pub(crate) list_map_keys: Vec<String>,
    pub(crate) map_type: Option<String>,
    /// Raw `x-kubernetes-validations` rules (never evaluated).
    pub(crate) validations: Vec<Value>,
    /// `example` or `externalDocs` is set (only matters for root metadata).
    pub(crate) has_docs_extras: bool,
}

/// Parses a schema (a `schema.openAPIV3Schema` value). Parsing is lenient:
/// keywords of the wrong JSON type are ignored, so call it only for schemas
/// that passed [`check_crd_schema`]. Defaults are pruned against their own
/// schema, as upstream does when it starts serving a CRD.
pub fn parse(schema: &Value) -> Structural {
    let mut s = parse_node(schema);
    prune::prune_defaults(&mut s);
    s
}

pub(crate) fn parse_node(v: &Value) -> Structural {
    let Some(m) = v.as_object() else {
        return <Structural as Default>::default();
    };
    let string = |k: &str| m.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let boolean = |k: &str| m.get(k).and_then(Value::as_bool).unwrap_or(false);
    let float = |k: &str| m.get(k).and_then(Value::as_f64);
    let int = |k: &str| m.get(k).and_then(Value::as_i64);
    let list = |k: &str| -> Vec<Structural> {
        m.get(k)
            .and_then(Value::as_array)
            .map(|a| a.iter().map(parse_node).collect())
            .unwrap_or_default()
    };
    let strings = |k: &str| -> Vec<String> {
        m.get(k)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default()
    };
    let pattern = string("pattern");
    Structural {
        type_: string("type"),
        format: string("format"),
        title: string("title"),
        description: string("description"),
        nullable: boolean("nullable"),
        // `default: null` decodes to no default upstream.
        default: m.get("default").filter(|d| !d.is_null()).cloned(),
        maximum: float("maximum"),
        exclusive_maximum: boolean("exclusiveMaximum"),
        minimum: float("minimum"),
        exclusive_minimum: boolean("exclusiveMinimum"),
        max_length: int("maxLength"),
        min_length: int("minLength"),
        regex: (!pattern.is_empty()).then(|| Regex::new(&pattern)),
        pattern,
        max_items: int("maxItems"),
        min_items: int("minItems"),
        unique_items: boolean("uniqueItems"),
        multiple_of: float("multipleOf"),
        enum_: m
            .get("enum")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default(),
        max_properties: int("maxProperties"),
        min_properties: int("minProperties"),
        required: strings("required"),
        all_of: list("allOf"),
        any_of: list("anyOf"),
        one_of: list("oneOf"),
        not: m
            .get("not")
            .filter(|n| n.is_object())
            .map(|n| Box::new(parse_node(n))),
        properties: m
            .get("properties")
            .and_then(Value::as_object)
            .map(|p| p.iter().map(|(k, v)| (k.clone(), parse_node(v))).collect())
            .unwrap_or_default(),
        additional_properties: match m.get("additionalProperties") {
            Some(Value::Bool(b)) => Some(AdditionalProperties {
                allows: *b,
                schema: None,
            }),
            Some(v @ Value::Object(_)) => Some(AdditionalProperties {
                allows: true,
                schema: Some(Box::new(parse_node(v))),
            }),
            _ => None,
        },
        items: m
            .get("items")
            .filter(|i| i.is_object())
            .map(|i| Box::new(parse_node(i))),
        preserve_unknown_fields: m
            .get("x-kubernetes-preserve-unknown-fields")
            .and_then(Value::as_bool),
        embedded_resource: boolean("x-kubernetes-embedded-resource"),
        int_or_string: boolean("x-kubernetes-int-or-string"),
        list_type: m
            .get("x-kubernetes-list-type")
            .and_then(Value::as_str)
            .map(String::from),
        list_map_keys: strings("x-kubernetes-list-map-keys"),
        map_type: m
            .get("x-kubernetes-map-type")
            .and_then(Value::as_str)
            .map(String::from),
        validations: m
            .get("x-kubernetes-validations")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default(),
        has_docs_extras: m.get("example").is_some_and(|e| !e.is_null())
            || m.get("externalDocs").is_some_and(|e| !e.is_null()),
    }
}

impl Structural {
    /// Removes fields the schema does not specify, as upstream's decoder
    /// does for a custom resource (`obj` is the whole object). Also drops
    /// non-nullable `null`s that have no default and coerces embedded
    /// `metadata` to ObjectMeta's fields. Returns the removed paths
    /// (`spec.foo`, `spec.list[0].bar`, `metadata.foo`), sorted as upstream
    /// reports them in `unknown field "…"` warnings.
    pub fn prune(&self, obj: &mut Value) -> Vec<String> {
        prune::prune_object(self, obj)
    }

    /// Applies `default` values to absent fields (and to `null` where the
    /// field is not nullable), following properties, additionalProperties
    /// and items; defaults of nested objects cascade.
    pub fn default(&self, obj: &mut Value) {
        prune::apply_defaults(obj, Some(self));
    }

    /// Validates a whole custom resource as upstream's create/update
    /// strategy does: schema validation, embedded resources' TypeMeta and
    /// ObjectMeta, and `x-kubernetes-list-type` set/map uniqueness. The
    /// root `metadata` itself is validated by the caller (name rules etc.).
    pub fn validate(&self, obj: &Value) -> Vec<Cause> {
        let mut out = validate::schema_causes(self, obj, None);
        out.extend(validate::embedded_resources(self, obj));
        out.extend(validate::list_sets_and_maps(self, obj));
        out
    }

    /// Validates `value` against this schema only, reporting field paths
    /// under `prefix` (upstream validates the `status` subresource with the
    /// status schema and prefix `status`).
    pub fn validate_value(&self, value: &Value, prefix: Option<&str>) -> Vec<Cause> {
        validate::schema_causes(self, value, prefix)
    }

    /// The schema at `path` (property names; array items are stepped into
    /// implicitly, map values through `additionalProperties`).
    pub fn at(&self, path: &[&str]) -> Option<&Structural> {
        let mut cur = self;
        for seg in path {
            while cur.type_ == "array" {
                cur = cur.items.as_deref()?;
            }
            cur = match cur.properties.get(*seg) {
                Some(p) => p,
                None => cur.additional_properties.as_ref()?.schema.as_deref()?,
            };
        }
        Some(cur)
    }

    /// `type` (empty when unset).
    pub fn type_name(&self) -> &str {
        &self.type_
    }

    /// `x-kubernetes-list-type` (`atomic`, `set`, `map`), if set.
    pub fn list_type(&self) -> Option<&str> {
        self.list_type.as_deref()
    }

    /// `x-kubernetes-list-map-keys`.
    pub fn list_map_keys(&self) -> &[String] {
        &self.list_map_keys
    }

    /// `x-kubernetes-map-type` (`atomic`, `granular`), if set.
    pub fn map_type(&self) -> Option<&str> {
        self.map_type.as_deref()
    }

    /// Whether unknown fields below this node are kept.
    pub fn preserves_unknown_fields(&self) -> bool {
        self.preserve_unknown_fields == Some(true)
    }

    /// The `default` value, if any.
    pub fn default_value(&self) -> Option<&Value> {
        self.default.as_ref()
    }

    /// Property schemas by name.
    pub fn properties(&self) -> &BTreeMap<String, Structural> {
        &self.properties
    }

    /// The items schema of an array.
    pub fn items(&self) -> Option<&Structural> {
        self.items.as_deref()
    }

    fn preserve(&self) -> bool {
        self.preserve_unknown_fields == Some(true)
    }
}

#[cfg(test)]
mod tests;
