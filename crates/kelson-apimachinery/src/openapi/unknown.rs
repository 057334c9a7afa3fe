//! Unknown-field detection for `fieldValidation=Strict|Warn`.
//!
//! Built-in kinds follow Go's strict JSON decoding into the typed structs:
//! only objects with declared `properties` can have unknown fields; maps
//! (`additionalProperties`) and opaque objects (RawExtension, JSON, FieldsV1)
//! accept anything. Custom resources follow structural-schema pruning: an
//! object schema keeps only the fields it declares unless it has
//! `additionalProperties` or `x-kubernetes-preserve-unknown-fields`.
//! Paths use upstream's format: `spec.containers[0].imagee`, map values as
//! `spec.selector[key]`; like upstream, at most 100 distinct paths.

use serde_json::{Map, Value};

const MAX_ERRORS: usize = 100;

/// Resolves `$ref` names to definitions.
pub(crate) trait Defs {
    fn get(&self, name: &str) -> Option<&Value>;
}

impl Defs for Map<String, Value> {
    fn get(&self, name: &str) -> Option<&Value> {
        Map::get(self, name)
    }
}

pub(crate) struct Walker<'a, D: Defs> {
    pub defs: &'a D,
    pub prefix: &'a str,
    pub out: Vec<String>,
}

fn child(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

static NULL: Value = Value::Null;

/// Follows `$ref`s (bounded, so a cyclic reference cannot loop).
fn resolve<'x, D: Defs>(defs: &'x D, prefix: &str, mut schema: &'x Value) -> &'x Value {
    for _ in 0..32 {
        let Some(r) = schema.get("$ref").and_then(Value::as_str) else {
            return schema;
        };
        let name = r.strip_prefix(prefix).unwrap_or(r);
        match defs.get(name) {
            Some(s) => schema = s,
            None => return &NULL,
        }
    }
    schema
}

impl<'a, D: Defs> Walker<'a, D> {
    fn report(&mut self, path: String) {
        if self.out.len() < MAX_ERRORS && !self.out.contains(&path) {
            self.out.push(path);
        }
    }

    pub(crate) fn walk(&mut self, schema: &'a Value, value: &Value, path: &str) {
        let schema = resolve(self.defs, self.prefix, schema);
        let Some(s) = schema.as_object() else {
            return;
        };
        if s.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true))
            && !s.contains_key("properties")
            && !s.contains_key("additionalProperties")
            && !s.contains_key("items")
        {
            return;
        }
        if s.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true)) {
            return;
        }
        // k8s-openapi describes "schema or array/bool" unions with oneOf;
        // pick the alternative that matches the value's JSON type.
        if let Some(alts) = s
            .get("oneOf")
            .or_else(|| s.get("anyOf"))
            .and_then(Value::as_array)
        {
            if !s.contains_key("properties") && !s.contains_key("items") {
                if let Some(alt) = alts.iter().find(|a| self.matches_type(a, value)) {
                    self.walk(alt, value, path);
                }
                return;
            }
        }
        match value {
            Value::Object(obj) => self.walk_object(s, obj, path),
            Value::Array(items) => {
                if let Some(item_schema) = s.get("items") {
                    for (i, item) in items.iter().enumerate() {
                        self.walk(item_schema, item, &format!("{path}[{i}]"));
                    }
                }
            }
            _ => {}
        }
    }

    fn matches_type(&self, alt: &Value, value: &Value) -> bool {
        let alt = resolve(self.defs, self.prefix, alt);
        let ty = alt.get("type").and_then(Value::as_str);
        match value {
            Value::Object(_) => {
                ty == Some("object") || (ty.is_none() && alt.get("properties").is_some())
            }
            Value::Array(_) => ty == Some("array"),
            _ => false,
        }
    }

    fn walk_object(&mut self, s: &'a Map<String, Value>, obj: &Map<String, Value>, path: &str) {
        let props = s.get("properties").and_then(Value::as_object);
        let additional = s.get("additionalProperties");
        let preserve = s.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
        let embedded = s.get("x-kubernetes-embedded-resource") == Some(&Value::Bool(true));
        if props.is_none() && additional.is_none() {
            // Opaque object (RawExtension, JSON, FieldsV1, Patch).
            return;
        }
        for (key, v) in obj {
            if let Some(p) = props.and_then(|p| p.get(key)) {
                self.walk(p, v, &child(path, key));
            } else if let Some(add) = additional {
                match add {
                    Value::Bool(false) => self.report(child(path, key)),
                    Value::Bool(true) => {}
                    add => self.walk(add, v, &format!("{path}[{key}]")),
                }
            } else if preserve {
                // Unknown fields are kept.
            } else if embedded && matches!(key.as_str(), "apiVersion" | "kind" | "metadata") {
                // Embedded objects always carry type and object metadata.
            } else {
                self.report(child(path, key));
            }
        }
    }
}
