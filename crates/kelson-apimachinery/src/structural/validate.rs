//! Custom resource validation: kube-openapi's schema validator (as
//! upstream's `ValidateCustomResource` runs it and turns its results into
//! field errors), embedded-resource TypeMeta/ObjectMeta checks and
//! `x-kubernetes-list-type` set/map uniqueness.

use serde_json::Value;

use super::formats;
use super::render::{bad_value, go_float, go_json, num, quote, Num};
use super::Structural;
use crate::validation::{self as v, Bad, Cause};

/// kube-openapi `errors.Validation` codes that upstream maps specially.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Code {
    InvalidType,
    Required,
    TooLong,
    Enum,
    MaxItems,
    TooManyProperties,
    Other,
}

/// One kube-openapi validation error.
#[derive(Debug, Clone)]
enum VErr {
    Validation {
        code: Code,
        name: String,
        value: Option<Value>,
        valid: Option<i64>,
        values: Vec<Value>,
        message: String,
    },
    /// Composite errors (anyOf/oneOf/allOf/not), which are not
    /// `*errors.Validation` and so land on the root path upstream.
    Composite(String),
}

impl VErr {
    fn message(&self) -> &str {
        match self {
            VErr::Validation { message, .. } | VErr::Composite(message) => message,
        }
    }
}

fn verr(code: Code, name: &str, value: Option<Value>, message: String) -> VErr {
    VErr::Validation {
        code,
        name: name.to_string(),
        value,
        valid: None,
        values: Vec::new(),
        message,
    }
}

/// kube-openapi `Result`: errors de-duplicated by message, and the match
/// count it uses to pick the "best" failing anyOf/oneOf branch.
#[derive(Debug, Default)]
struct Res {
    errors: Vec<VErr>,
    count: usize,
}

impl Res {
    fn err(e: VErr) -> Res {
        Res {
            errors: vec![e],
            count: 0,
        }
    }
    fn add(&mut self, e: VErr) {
        if !self.errors.iter().any(|x| x.message() == e.message()) {
            self.errors.push(e);
        }
    }
    fn merge(&mut self, other: Res) {
        for e in other.errors {
            self.add(e);
        }
        self.count += other.count;
    }
    fn valid(&self) -> bool {
        self.errors.is_empty()
    }
}

const IN: &str = "body";

/// `swag.IsFloat64AJSONInteger`.
fn is_json_integer(f: f64) -> bool {
    if !f.is_finite() || f.abs() > 9_007_199_254_740_992.0 {
        return false;
    }
    let g = f.trunc();
    if f == g {
        return true;
    }
    let diff = (f - g).abs();
    if f == 0.0 || g == 0.0 || diff < f64::MIN_POSITIVE {
        return diff < 1e-9 * f64::MIN_POSITIVE;
    }
    diff / (f.abs() + g.abs()).min(f64::MAX) < 1e-9
}

fn schema_types(s: &Structural) -> Vec<&'static str> {
    if s.int_or_string {
        return vec!["integer", "string"];
    }
    match s.type_.as_str() {
        "" => vec![],
        "object" => vec!["object"],
        "array" => vec!["array"],
        "string" => vec!["string"],
        "integer" => vec!["integer"],
        "number" => vec!["number"],
        "boolean" => vec!["boolean"],
        _ => vec!["<invalid>"],
    }
}

/// The JSON type and Go-derived format of a decoded value.
fn type_of(data: &Value) -> (&'static str, &'static str) {
    match data {
        Value::Bool(_) => ("boolean", ""),
        Value::String(_) => ("string", ""),
        Value::Number(n) => match num(n) {
            Num::Int(_) => ("integer", "int64"),
            Num::Float(_) => ("number", "float64"),
        },
        Value::Array(_) => ("array", ""),
        Value::Object(_) => ("object", ""),
        Value::Null => ("null", ""),
    }
}

fn invalid_type(name: &str, ty: &str, value: &str) -> VErr {
    verr(
        Code::InvalidType,
        name,
        Some(Value::String(value.to_string())),
        format!("{name} in {IN} must be of type {ty}: {}", quote(value)),
    )
}

/// The format the validator sees (upstream strips unsupported ones).
fn effective_format(s: &Structural) -> &str {
    if formats::is_supported(&s.format) {
        &s.format
    } else {
        ""
    }
}

fn type_validator(s: &Structural, path: &str, data: &Value) -> Res {
    let ok = Res {
        errors: Vec::new(),
        count: 1,
    };
    let types = schema_types(s);
    let format = effective_format(s);
    if data.is_null() {
        if !types.is_empty() && !s.nullable {
            return Res::err(invalid_type(path, &types.join(","), "null"));
        }
        return ok;
    }
    let (sch_type, data_format) = type_of(data);
    let float_int = match data {
        Value::Number(n) => matches!(num(n), Num::Float(f) if is_json_integer(f)),
        _ => false,
    } && types.contains(&"integer");
    let int_float = sch_type == "integer" && types.contains(&"number");
    let stringish = matches!(data, Value::String(_) | Value::Array(_));
    let type_ok = types.contains(&sch_type) || float_int || int_float;
    if !format.is_empty() {
        // kube-openapi first checks a format against non-string data, and
        // lets strings and arrays pass when the type is not numeric.
        if !(stringish || type_ok || data_format == format) {
            return Res::err(invalid_type(path, format, data_format));
        }
        let numeric = types.contains(&"number") || types.contains(&"integer");
        if stringish && !numeric {
            return ok;
        }
    }
    if !type_ok {
        return Res::err(invalid_type(path, &types.join(","), sch_type));
    }
    ok
}

fn schema_props_validator(s: &Structural, path: &str, data: &Value) -> Res {
    let mut main = Res::default();
    let qpath = quote(path);
    if !s.any_of.is_empty() {
        let mut best: Option<Res> = None;
        let mut first_success: Option<Res> = None;
        for sub in &s.any_of {
            let r = validate_schema(sub, path, data);
            if r.valid() {
                best = None;
                first_success = Some(r);
                break;
            }
            if best.as_ref().is_none_or(|b| r.count > b.count) {
                best = Some(r);
            }
        }
        if first_success.is_none() {
            main.add(VErr::Composite(format!(
                "{qpath} must validate at least one schema (anyOf)"
            )));
        }
        if let Some(b) = best.or(first_success) {
            main.merge(b);
        }
    }
    if !s.one_of.is_empty() {
        let mut best: Option<Res> = None;
        let mut first_success: Option<Res> = None;
        let mut validated = 0;
        for sub in &s.one_of {
            let r = validate_schema(sub, path, data);
            if r.valid() {
                validated += 1;
                best = None;
                if first_success.is_none() {
                    first_success = Some(r);
                }
                continue;
            }
            if validated == 0 && best.as_ref().is_none_or(|b| r.count > b.count) {
                best = Some(r);
            }
        }
        if validated != 1 {
            let extra = if validated == 0 {
                "Found none valid".to_string()
            } else {
                format!("Found {validated} valid alternatives")
            };
            main.add(VErr::Composite(format!(
                "{qpath} must validate one and only one schema (oneOf). {extra}"
            )));
            if let Some(b) = best {
                main.merge(b);
            }
        } else if let Some(f) = first_success {
            main.merge(f);
        }
    }
    if !s.all_of.is_empty() {
        let mut validated = 0;
        for sub in &s.all_of {
            let r = validate_schema(sub, path, data);
            if r.valid() {
                validated += 1;
            }
            main.merge(r);
        }
        if validated != s.all_of.len() {
            let extra = if validated == 0 {
                ". None validated"
            } else {
                ""
            };
            main.add(VErr::Composite(format!(
                "{qpath} must validate all the schemas (allOf){extra}"
            )));
        }
    }
    if let Some(not) = &s.not {
        if validate_schema(not, path, data).valid() {
            main.add(VErr::Composite(format!(
                "{qpath} must not validate the schema (not)"
            )));
        }
    }
    main.count += 1;
    main
}

fn string_validator(s: &Structural, path: &str, data: &str) -> Res {
    let len = data.chars().count() as i64;
    let value = || Some(Value::String(data.to_string()));
    if let Some(max) = s.max_length {
        if len > max {
            return Res::err(VErr::Validation {
                code: Code::TooLong,
                name: path.to_string(),
                value: value(),
                valid: Some(max),
                values: Vec::new(),
                message: format!("{path} in {IN} should be at most {max} chars long"),
            });
        }
    }
    if let Some(min) = s.min_length {
        if len < min {
            return Res::err(verr(
                Code::Other,
                path,
                value(),
                format!("{path} in {IN} should be at least {min} chars long"),
            ));
        }
    }
    if let Some(re) = &s.regex {
        let shown = match re {
            Ok(re) if re.is_match(data) => return Res::default(),
            Ok(_) => s.pattern.clone(),
            Err(e) => format!("{}, but pattern is invalid: {e}", s.pattern),
        };
        return Res::err(verr(
            Code::Other,
            path,
            value(),
            format!("{path} in {IN} should match '{shown}'"),
        ));
    }
    Res::default()
}

fn number_validator(s: &Structural, path: &str, n: Num) -> Res {
    let mut res = Res::default();
    let data = Value::from(match n {
        Num::Int(i) => serde_json::Number::from(i),
        Num::Float(f) => serde_json::Number::from_f64(f).unwrap_or_else(|| 0.into()),
    });
    let e = |msg: String, value: Value| verr(Code::Other, path, Some(value), msg);
    if let Some(factor) = s.multiple_of {
        match n {
            Num::Int(i) => {
                // Go converts the float factor to int64 (truncating).
                let f = factor as i64;
                if f <= 0 {
                    res.add(e(
                        format!("factor MultipleOf declared for {path} must be positive: {f}"),
                        Value::from(f),
                    ));
                } else if i % f != 0 {
                    res.add(e(
                        format!("{path} in {IN} should be a multiple of {f}"),
                        data.clone(),
                    ));
                }
            }
            Num::Float(x) => {
                if factor <= 0.0 {
                    res.add(e(
                        format!(
                            "factor MultipleOf declared for {path} must be positive: {}",
                            go_float(factor)
                        ),
                        Value::from(factor),
                    ));
                } else {
                    let mult = if factor < 1.0 {
                        1.0 / factor * x
                    } else {
                        x / factor
                    };
                    if !is_json_integer(mult) {
                        res.add(e(
                            format!(
                                "{path} in {IN} should be a multiple of {}",
                                go_float(factor)
                            ),
                            data.clone(),
                        ));
                    }
                }
            }
        }
    }
    let bound = |b: f64| match n {
        Num::Int(_) => (b as i64).to_string(),
        Num::Float(_) => go_float(b),
    };
    if let Some(min) = s.minimum {
        let fails = match n {
            Num::Int(i) => {
                let m = min as i64;
                if s.exclusive_minimum {
                    i <= m
                } else {
                    i < m
                }
            }
            Num::Float(x) => {
                if s.exclusive_minimum {
                    x <= min
                } else {
                    x < min
                }
            }
        };
        if fails {
            let op = if s.exclusive_minimum {
                "greater than"
            } else {
                "greater than or equal to"
            };
            res.add(e(
                format!("{path} in {IN} should be {op} {}", bound(min)),
                data.clone(),
            ));
        }
    }
    if let Some(max) = s.maximum {
        let fails = match n {
            Num::Int(i) => {
                let m = max as i64;
                if s.exclusive_maximum {
                    i >= m
                } else {
                    i > m
                }
            }
            Num::Float(x) => {
                if s.exclusive_maximum {
                    x >= max
                } else {
                    x > max
                }
            }
        };
        if fails {
            let op = if s.exclusive_maximum {
                "less than"
            } else {
                "less than or equal to"
            };
            res.add(e(
                format!("{path} in {IN} should be {op} {}", bound(max)),
                data.clone(),
            ));
        }
    }
    res.count += 1;
    res
}

fn slice_validator(s: &Structural, path: &str, items: &[Value]) -> Res {
    let mut res = Res::default();
    if let Some(is) = &s.items {
        for (i, item) in items.iter().enumerate() {
            res.merge(validate_schema(is, &format!("{path}[{i}]"), item));
        }
    }
    let size = items.len() as i64;
    if let Some(min) = s.min_items {
        if size < min {
            res.add(verr(
                Code::Other,
                path,
                Some(Value::from(size)),
                format!("{path} in {IN} should have at least {min} items"),
            ));
        }
    }
    if let Some(max) = s.max_items {
        if size > max {
            res.add(VErr::Validation {
                code: Code::MaxItems,
                name: path.to_string(),
                value: Some(Value::from(size)),
                valid: Some(max),
                values: Vec::new(),
                message: format!("{path} in {IN} should have at most {max} items"),
            });
        }
    }
    if s.unique_items {
        let dup = items
            .iter()
            .enumerate()
            .any(|(i, a)| items[..i].iter().any(|b| a == b));
        if dup {
            res.add(verr(
                Code::Other,
                path,
                None,
                format!("{path} in {IN} shouldn't contain duplicates"),
            ));
        }
    }
    res.count += 1;
    res
}

/// Go's `reflect` convert-then-DeepEqual enum comparison.
fn enum_matches(data: &Value, e: &Value) -> bool {
    match (data, e) {
        (Value::Null, _) | (_, Value::Null) => false,
        (Value::Number(d), Value::Number(x)) => match (num(d), num(x)) {
            (Num::Int(a), Num::Int(b)) => a == b,
            (Num::Int(a), Num::Float(b)) => a as f64 == b,
            (Num::Float(a), Num::Int(b)) => a as i64 == b,
            (Num::Float(a), Num::Float(b)) => a == b,
        },
        // An int64 converts to a string as the rune it encodes.
        (Value::Number(d), Value::String(s)) => match num(d) {
            Num::Int(i) => u32::try_from(i)
                .ok()
                .and_then(char::from_u32)
                .is_some_and(|c| s.chars().eq(std::iter::once(c))),
            Num::Float(_) => false,
        },
        (a, b) => a == b,
    }
}

fn common_validator(s: &Structural, path: &str, data: &Value) -> Res {
    if s.enum_.is_empty() || s.enum_.iter().any(|e| enum_matches(data, e)) {
        return Res::default();
    }
    let listed: Vec<String> = s.enum_.iter().map(go_json).collect();
    Res::err(VErr::Validation {
        code: Code::Enum,
        name: path.to_string(),
        value: Some(data.clone()),
        valid: None,
        values: s.enum_.clone(),
        message: format!("{path} in {IN} should be one of [{}]", listed.join(" ")),
    })
}

fn object_validator(s: &Structural, path: &str, m: &serde_json::Map<String, Value>) -> Res {
    let mut res = Res::default();
    let n = m.len() as i64;
    if let Some(min) = s.min_properties {
        if n < min {
            res.add(verr(
                Code::Other,
                path,
                Some(Value::from(n)),
                format!("{path} in {IN} should have at least {min} properties"),
            ));
        }
    }
    if let Some(max) = s.max_properties {
        if n > max {
            res.add(VErr::Validation {
                code: Code::TooManyProperties,
                name: path.to_string(),
                value: Some(Value::from(n)),
                valid: Some(max),
                values: Vec::new(),
                message: format!("{path} in {IN} should have at most {max} properties"),
            });
        }
    }
    match &s.additional_properties {
        Some(ap) if !ap.allows => {
            for k in m.keys().filter(|k| !s.properties.contains_key(*k)) {
                res.add(verr(
                    Code::Other,
                    path,
                    Some(Value::String(k.clone())),
                    format!("{path}.{k} in {IN} is a forbidden property"),
                ));
            }
        }
        Some(ap) => {
            if let Some(sub) = &ap.schema {
                for (k, val) in m.iter().filter(|(k, _)| !s.properties.contains_key(*k)) {
                    res.merge(validate_schema(sub, &format!("{path}.{k}"), val));
                }
            }
        }
        None => {}
    }
    for (name, ps) in &s.properties {
        if let Some(val) = m.get(name) {
            let child = if path.is_empty() {
                name.clone()
            } else {
                format!("{path}.{name}")
            };
            res.merge(validate_schema(ps, &child, val));
        }
    }
    for k in &s.required {
        if !m.contains_key(k) {
            let name = format!("{path}.{k}");
            let message = format!("{name} in {IN} is required");
            res.add(verr(Code::Required, &name, None, message));
        }
    }
    res
}

/// kube-openapi `SchemaValidator.Validate` for one schema node.
fn validate_schema(s: &Structural, path: &str, data: &Value) -> Res {
    let mut res = Res::default();
    let applies_type = !schema_types(s).is_empty() || !effective_format(s).is_empty();
    if data.is_null() {
        if applies_type {
            res.merge(type_validator(s, path, data));
        }
        res.merge(common_validator(s, path, data));
        return res;
    }
    let run = |res: &mut Res, r: Res| {
        res.merge(r);
        res.count += 1;
    };
    if applies_type {
        run(&mut res, type_validator(s, path, data));
    }
    run(&mut res, schema_props_validator(s, path, data));
    if let Value::String(text) = data {
        run(&mut res, string_validator(s, path, text));
        let format = effective_format(s);
        if !format.is_empty() {
            let mut r = Res::default();
            if !formats::validates(format, text) {
                r.add(invalid_type(path, &s.format, text));
            }
            run(&mut res, r);
        }
    }
    if let Value::Number(n) = data {
        run(&mut res, number_validator(s, path, num(n)));
    }
    if let Value::Array(items) = data {
        run(&mut res, slice_validator(s, path, items));
    }
    run(&mut res, common_validator(s, path, data));
    if let Value::Object(m) = data {
        run(&mut res, object_validator(s, path, m));
    }
    res.count += 1;
    res
}

/// Upstream `kubeOpenAPIResultToFieldErrors`.
fn to_causes(res: Res, prefix: Option<&str>) -> Vec<Cause> {
    let root = prefix.unwrap_or("<nil>").to_string();
    let field = |name: &str| -> String {
        if name.is_empty() || name == "." {
            return root.clone();
        }
        let child = name.strip_prefix('.').unwrap_or(name);
        match prefix {
            Some(p) => format!("{p}.{child}"),
            None => child.to_string(),
        }
    };
    let or_empty = |value: &Option<Value>| value.clone().unwrap_or(Value::String(String::new()));
    res.errors
        .into_iter()
        .map(|e| match e {
            VErr::Composite(message) => v::invalid(&root, Bad::Str(String::new()), &message),
            VErr::Validation {
                code,
                name,
                value,
                valid,
                values,
                message,
            } => {
                let f = field(&name);
                match code {
                    Code::Required => v::required(&f, ""),
                    Code::Enum => {
                        let listed: Vec<String> = values
                            .iter()
                            .map(|x| match x {
                                Value::String(s) => s.clone(),
                                other => go_json(other),
                            })
                            .collect();
                        let refs: Vec<&str> = listed.iter().map(String::as_str).collect();
                        let bad = value.as_ref().map_or(Value::Null, Clone::clone);
                        v::not_supported(&f, Bad::Raw(bad_value(&bad)), &refs)
                    }
                    Code::TooLong => Cause {
                        reason: "FieldValueTooLong",
                        message: format!(
                            "Too long: may not be more than {} bytes",
                            valid.unwrap_or(-1)
                        ),
                        field: f,
                    },
                    Code::MaxItems | Code::TooManyProperties => {
                        let actual = value.as_ref().and_then(Value::as_i64).unwrap_or(-1);
                        Cause {
                            reason: "FieldValueTooMany",
                            message: format!(
                                "Too many: {actual}: must have at most {} items",
                                valid.unwrap_or(-1)
                            ),
                            field: f,
                        }
                    }
                    Code::InvalidType => Cause {
                        reason: "FieldValueTypeInvalid",
                        message: format!(
                            "Invalid value: {}: {message}",
                            bad_value(&or_empty(&value))
                        ),
                        field: f,
                    },
                    Code::Other => v::invalid(&f, Bad::Raw(bad_value(&or_empty(&value))), &message),
                }
            }
        })
        .collect()
}

/// Schema validation of `data` with `s`, as field errors under `prefix`.
pub(crate) fn schema_causes(s: &Structural, data: &Value, prefix: Option<&str>) -> Vec<Cause> {
    to_causes(validate_schema(s, "", data), prefix)
}

fn child(p: &str, name: &str) -> String {
    if p.is_empty() {
        name.to_string()
    } else {
        format!("{p}.{name}")
    }
}

/// Upstream `objectmeta.Validate` (non-root): TypeMeta and ObjectMeta of
/// every `x-kubernetes-embedded-resource` object.
pub(crate) fn embedded_resources(s: &Structural, obj: &Value) -> Vec<Cause> {
    let mut out = Vec::new();
    embedded_walk(&mut out, "", obj, s, true);
    out
}

fn embedded_walk(out: &mut Vec<Cause>, pth: &str, x: &Value, s: &Structural, root: bool) {
    match x {
        Value::Object(m) => {
            if s.embedded_resource && !root {
                validate_embedded(out, pth, m);
            }
            for (k, val) in m {
                if let Some(prop) = s.properties.get(k) {
                    embedded_walk(out, &child(pth, k), val, prop, false);
                } else if let Some(sub) = s
                    .additional_properties
                    .as_ref()
                    .and_then(|ap| ap.schema.as_deref())
                {
                    embedded_walk(out, &format!("{pth}[{k}]"), val, sub, false);
                }
            }
        }
        Value::Array(items) => {
            if let Some(is) = s.items.as_deref() {
                for (i, val) in items.iter().enumerate() {
                    embedded_walk(out, &format!("{pth}[{i}]"), val, is, false);
                }
            }
        }
        _ => {}
    }
}

fn validate_embedded(out: &mut Vec<Cause>, pth: &str, m: &serde_json::Map<String, Value>) {
    if !m.contains_key("apiVersion") {
        out.push(v::required(&child(pth, "apiVersion"), ""));
    }
    if !m.contains_key("kind") {
        out.push(v::required(&child(pth, "kind"), ""));
    }
    for (k, val) in m {
        let f = child(pth, k);
        match k.as_str() {
            "apiVersion" => match val.as_str() {
                None => out.push(v::invalid(&f, Bad::Raw(bad_value(val)), "must be a string")),
                Some("") => out.push(v::invalid(&f, Bad::Str(String::new()), "must not be empty")),
                Some(gv) if gv != "/" && gv.matches('/').count() > 1 => out.push(v::invalid(
                    &f,
                    Bad::Str(gv.to_string()),
                    &format!("unexpected GroupVersion string: {gv}"),
                )),
                Some(_) => {}
            },
            "kind" => match val.as_str() {
                None => out.push(v::invalid(&f, Bad::Raw(bad_value(val)), "must be a string")),
                Some("") => out.push(v::invalid(&f, Bad::Str(String::new()), "must not be empty")),
                Some(kind) => {
                    let errs = v::dns1035_label(&kind.to_lowercase());
                    if !errs.is_empty() {
                        out.push(v::invalid(
                            &f,
                            Bad::Str(kind.to_string()),
                            &format!(
                                "may have mixed case, but should otherwise match: {}",
                                errs.join(",")
                            ),
                        ));
                    }
                }
            },
            "metadata" => {
                let Some(meta) = val.as_object() else {
                    out.push(v::invalid(
                        &f,
                        Bad::Raw(bad_value(val)),
                        "json: cannot unmarshal into Go value of type v1.ObjectMeta",
                    ));
                    continue;
                };
                let mut meta = meta.clone();
                // Upstream fills a fake name: embedded objects need none.
                if meta
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .is_empty()
                {
                    meta.insert("name".into(), Value::String("fakename".into()));
                }
                let namespaced = meta
                    .get("namespace")
                    .and_then(Value::as_str)
                    .is_some_and(|n| !n.is_empty());
                let causes =
                    v::validate_meta(&Value::Object(meta), namespaced, v::NameRule::PathSegment);
                for mut c in causes {
                    if let Some(rest) = c.field.strip_prefix("metadata") {
                        c.field = format!("{f}{rest}");
                    }
                    out.push(c);
                }
            }
            _ => {}
        }
    }
}

/// Upstream `listtype.ValidateListSetsAndMaps`.
pub(crate) fn list_sets_and_maps(s: &Structural, obj: &Value) -> Vec<Cause> {
    let mut out = Vec::new();
    if let Value::Object(m) = obj {
        lsm_object(&mut out, "", s, m);
    }
    out
}

fn lsm_object(out: &mut Vec<Cause>, pth: &str, s: &Structural, m: &serde_json::Map<String, Value>) {
    if let Some(sub) = s
        .additional_properties
        .as_ref()
        .and_then(|ap| ap.schema.as_deref())
    {
        for (k, val) in m {
            lsm_value(out, &format!("{pth}[{k}]"), sub, val);
        }
    }
    for (k, val) in m {
        if let Some(prop) = s.properties.get(k) {
            lsm_value(out, &child(pth, k), prop, val);
        }
    }
}

fn lsm_value(out: &mut Vec<Cause>, pth: &str, s: &Structural, x: &Value) {
    match x {
        Value::Array(items) => lsm_array(out, pth, s, items),
        Value::Object(m) => lsm_object(out, pth, s, m),
        _ => {}
    }
}

/// Indices of the second occurrence of each repeated key.
fn non_unique(keys: &[String]) -> Vec<usize> {
    let mut seen: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    let mut out = Vec::new();
    for (i, k) in keys.iter().enumerate() {
        let times = seen.entry(k.as_str()).or_insert(0);
        *times += 1;
        if *times == 2 {
            out.push(i);
        }
    }
    out
}

fn lsm_array(out: &mut Vec<Cause>, pth: &str, s: &Structural, items: &[Value]) {
    let at = |i: usize| format!("{pth}[{i}]");
    match s.list_type.as_deref() {
        Some("set") => {
            let keys: Vec<String> = items.iter().map(Value::to_string).collect();
            for i in non_unique(&keys) {
                out.push(v::duplicate(&at(i), Bad::Raw(bad_value(&items[i]))));
            }
        }
        Some("map") => lsm_map(out, pth, s, items),
        _ => {}
    }
    if let Some(is) = s.items.as_deref() {
        for (i, item) in items.iter().enumerate() {
            lsm_value(out, &at(i), is, item);
        }
    }
}

fn lsm_map(out: &mut Vec<Cause>, pth: &str, s: &Structural, items: &[Value]) {
    if let Some((i, x)) = items
        .iter()
        .enumerate()
        .find(|(_, x)| !x.is_null() && !x.is_object())
    {
        out.push(v::invalid(
            &format!("{pth}[{i}]"),
            Bad::Raw(bad_value(x)),
            "must be an object for an array of list-type map",
        ));
        return;
    }
    if items.len() <= 1 {
        return;
    }
    // The key of each element: the present key fields (absent ones are
    // distinct from explicit nulls).
    let keys: Vec<serde_json::Map<String, Value>> = items
        .iter()
        .map(|x| {
            s.list_map_keys
                .iter()
                .filter_map(|k| x.get(k).map(|val| (k.clone(), val.clone())))
                .collect()
        })
        .collect();
    let rendered: Vec<String> = keys
        .iter()
        .map(|k| Value::Object(k.clone()).to_string())
        .collect();
    for i in non_unique(&rendered) {
        out.push(v::duplicate(
            &format!("{pth}[{i}]"),
            Bad::Raw(bad_value(&Value::Object(keys[i].clone()))),
        ));
    }
}
