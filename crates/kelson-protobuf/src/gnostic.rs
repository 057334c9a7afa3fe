//! The OpenAPI v2 document as gnostic's protobuf message
//! (`openapi.v2.Document` from github.com/google/gnostic-models), which
//! kubectl 1.27–1.29 request from `/openapi/v2` with [`CONTENT_TYPE`].
//!
//! Upstream the API server parses its Swagger JSON with gnostic's compiler
//! and marshals the result; [`encode_v2`] does the same walk over the
//! `serde_json::Value` directly:
//!
//! - JSON objects whose keys are names (definitions, properties, paths,
//!   responses, security definitions, …) become lists of `Named*` pairs in
//!   the map's iteration order.
//! - Keys starting with `x-` become `vendor_extension` entries whose `Any`
//!   holds the value as YAML text in `yaml` (field 2), exactly as go-yaml v3
//!   would print it; kubectl parses that text back (GVKs, patch strategy and
//!   merge keys, list types). `default`, `enum` and `example` use `Any` too.
//! - oneofs are chosen the way gnostic's compiler ends up choosing them:
//!   `$ref` objects are `JsonReference`s among parameters and responses,
//!   `in: body` parameters are `BodyParameter`s and other parameters pick
//!   the sub-schema named by `in`, `additionalProperties` is a schema or a
//!   boolean, a response schema of `type: file` is a `FileSchema`.
//! - Scalars follow proto3: empty strings, `false` and zero are omitted,
//!   while present objects are always written (kubectl tells "no
//!   properties" from "empty properties").
//!
//! Field numbers are transcribed from gnostic-models' `OpenAPIv2.proto`.
//! Unknown keys are skipped (gnostic would reject the whole document); a
//! known key holding the wrong JSON type is an [`EncodeError`], as it is
//! upstream.

mod yaml;

use crate::wire::Writer;
use serde_json::{Map, Value};
use std::fmt;
use thiserror::Error;

/// The media type kubectl asks for and the server answers with.
pub const CONTENT_TYPE: &str = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf";

/// Why a document cannot be encoded.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum EncodeError {
    #[error("the OpenAPI v2 document is not a JSON object")]
    NotAnObject,
    /// `path` is a JSON pointer to the offending value.
    #[error("{path}: expected {expected}")]
    FieldType {
        path: String,
        expected: &'static str,
    },
    #[error("{path}: unsupported {what} {value:?}")]
    Unsupported {
        path: String,
        what: &'static str,
        value: String,
    },
}

/// Encodes a Swagger 2.0 document as gnostic's `openapi.v2.Document`.
pub fn encode_v2(doc: &Value) -> Result<Vec<u8>, EncodeError> {
    if !doc.is_object() {
        return Err(EncodeError::NotAnObject);
    }
    Ok(document(doc, &Path::ROOT)?.into_bytes())
}

// ---------------------------------------------------------------------------
// Locations, for error messages only: a linked list rendered on failure.

#[derive(Clone, Copy)]
enum Seg<'a> {
    Root,
    Key(&'a str),
    Index(usize),
}

#[derive(Clone, Copy)]
struct Path<'a> {
    parent: Option<&'a Path<'a>>,
    seg: Seg<'a>,
}

impl<'a> Path<'a> {
    const ROOT: Path<'static> = Path {
        parent: None,
        seg: Seg::Root,
    };

    fn key(&'a self, key: &'a str) -> Path<'a> {
        Path {
            parent: Some(self),
            seg: Seg::Key(key),
        }
    }

    fn index(&'a self, i: usize) -> Path<'a> {
        Path {
            parent: Some(self),
            seg: Seg::Index(i),
        }
    }

    fn type_error(&self, expected: &'static str) -> EncodeError {
        EncodeError::FieldType {
            path: self.to_string(),
            expected,
        }
    }
}

impl fmt::Display for Path<'_> {
    /// A JSON pointer ("" for the document itself).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(parent) = self.parent {
            parent.fmt(f)?;
        }
        match self.seg {
            Seg::Root => Ok(()),
            Seg::Key(k) => write!(f, "/{}", k.replace('~', "~0").replace('/', "~1")),
            Seg::Index(i) => write!(f, "/{i}"),
        }
    }
}

// ---------------------------------------------------------------------------
// Table-driven messages: a list of (JSON key, field number, kind) in field
// number order, plus the number of `repeated NamedAny vendor_extension`,
// which is always the highest-numbered field.

type Encode = fn(&Value, &Path) -> Result<Writer, EncodeError>;

#[derive(Clone, Copy)]
enum Kind {
    /// `string`: JSON string, integer (its text) or null (empty).
    Str,
    Bool,
    /// `int64`: a JSON integer.
    Int,
    /// `double`: any JSON number.
    Float,
    /// `repeated string` from a JSON array.
    StrList,
    /// `Any` holding the value as YAML.
    Any,
    /// `repeated Any` from a JSON array.
    AnyList,
    Msg(Encode),
    MsgList(Encode),
}

struct Spec {
    fields: &'static [(&'static str, u32, Kind)],
    vendor: Option<u32>,
}

fn object<'v>(v: &'v Value, path: &Path) -> Result<&'v Map<String, Value>, EncodeError> {
    v.as_object().ok_or_else(|| path.type_error("an object"))
}

fn array<'v>(v: &'v Value, path: &Path) -> Result<&'v [Value], EncodeError> {
    v.as_array()
        .map(Vec::as_slice)
        .ok_or_else(|| path.type_error("an array"))
}

fn encode_spec(v: &Value, spec: &Spec, path: &Path) -> Result<Writer, EncodeError> {
    let obj = object(v, path)?;
    let mut w = Writer::new();
    for &(key, number, kind) in spec.fields {
        if let Some(value) = obj.get(key) {
            field(&mut w, number, kind, value, &path.key(key))?;
        }
    }
    if let Some(number) = spec.vendor {
        vendor_extensions(&mut w, number, obj);
    }
    Ok(w)
}

/// String conversion of gnostic's `StringForScalarNode`.
fn scalar_string<'v>(v: &'v Value) -> Option<std::borrow::Cow<'v, str>> {
    match v {
        Value::String(s) => Some(s.as_str().into()),
        Value::Number(n) if n.is_i64() || n.is_u64() => Some(n.to_string().into()),
        Value::Null => Some("".into()),
        _ => None,
    }
}

fn field(
    w: &mut Writer,
    number: u32,
    kind: Kind,
    v: &Value,
    path: &Path,
) -> Result<(), EncodeError> {
    match kind {
        Kind::Str => {
            let s = scalar_string(v).ok_or_else(|| path.type_error("a string"))?;
            if !s.is_empty() {
                w.string(number, &s);
            }
        }
        Kind::Bool => {
            if v.as_bool().ok_or_else(|| path.type_error("a boolean"))? {
                w.bool(number, true);
            }
        }
        Kind::Int => {
            let n = v.as_i64().ok_or_else(|| path.type_error("an integer"))?;
            if n != 0 {
                w.int64(number, n);
            }
        }
        Kind::Float => {
            let n = v.as_f64().ok_or_else(|| path.type_error("a number"))?;
            // proto3 omits zero, but keeps -0.0.
            if n != 0.0 || n.is_sign_negative() {
                w.double(number, n);
            }
        }
        Kind::StrList => {
            // Elements that are not scalars are dropped, as gnostic does.
            for item in array(v, path)? {
                if let Some(s) = scalar_string(item) {
                    w.string(number, &s);
                }
            }
        }
        Kind::Any => w.message(number, &any(v)),
        Kind::AnyList => {
            for item in array(v, path)? {
                w.message(number, &any(item));
            }
        }
        Kind::Msg(encode) => w.message(number, &encode(v, path)?),
        Kind::MsgList(encode) => {
            for (i, item) in array(v, path)?.iter().enumerate() {
                w.message(number, &encode(item, &path.index(i))?);
            }
        }
    }
    Ok(())
}

/// `Any { yaml = 2 }`; `value` (a google.protobuf.Any) stays unset, as it
/// does upstream without compiler extensions.
fn any(v: &Value) -> Writer {
    let mut w = Writer::new();
    w.string(2, &yaml::to_yaml(v));
    w
}

/// `NamedX { name = 1; value = 2 }`.
fn named(name: &str, value: &Writer) -> Writer {
    let mut w = Writer::new();
    if !name.is_empty() {
        w.string(1, name);
    }
    w.message(2, value);
    w
}

fn vendor_extensions(w: &mut Writer, number: u32, obj: &Map<String, Value>) {
    for (k, v) in obj {
        if k.starts_with("x-") {
            w.message(number, &named(k, &any(v)));
        }
    }
}

/// A message that is a map from names to `value` messages, e.g.
/// `Definitions { repeated NamedSchema additional_properties = 1 }`.
fn named_map(v: &Value, path: &Path, value: Encode) -> Result<Writer, EncodeError> {
    let mut w = Writer::new();
    for (k, item) in object(v, path)? {
        w.message(1, &named(k, &value(item, &path.key(k))?));
    }
    Ok(w)
}

// ---------------------------------------------------------------------------
// Document and its parts.

const DOCUMENT: Spec = Spec {
    fields: &[
        ("swagger", 1, Kind::Str),
        ("info", 2, Kind::Msg(info)),
        ("host", 3, Kind::Str),
        ("basePath", 4, Kind::Str),
        ("schemes", 5, Kind::StrList),
        ("consumes", 6, Kind::StrList),
        ("produces", 7, Kind::StrList),
        ("paths", 8, Kind::Msg(paths)),
        ("definitions", 9, Kind::Msg(definitions)),
        ("parameters", 10, Kind::Msg(parameter_definitions)),
        ("responses", 11, Kind::Msg(response_definitions)),
        ("security", 12, Kind::MsgList(security_requirement)),
        ("securityDefinitions", 13, Kind::Msg(security_definitions)),
        ("tags", 14, Kind::MsgList(tag)),
        ("externalDocs", 15, Kind::Msg(external_docs)),
    ],
    vendor: Some(16),
};

fn document(v: &Value, path: &Path) -> Result<Writer, EncodeError> {
    encode_spec(v, &DOCUMENT, path)
}

fn info(v: &Value, path: &Path) -> Result<Writer, EncodeError> {
    const SPEC: Spec = Spec {
        fields: &[
            ("title", 1, Kind::Str),
            ("version", 2, Kind::Str),
            ("description", 3, Kind::Str),
            ("termsOfService", 4, Kind::Str),
            ("contact", 5, Kind::Msg(contact)),
            ("license", 6, Kind::Msg(license)),
        ],
        vendor: Some(7),
    };
    encode_spec(v, &SPEC, path)
}

fn contact(v: &Value, path: &Path) -> Result<Writer, EncodeError> {
    const SPEC: Spec = Spec {
        fields: &[
            ("name", 1, Kind::Str),
            ("url", 2, Kind::Str),
            ("email", 3, Kind::Str),
        ],
        vendor: Some(4),
    };
    encode_spec(v, &SPEC, path)
}

fn license(v: &Value, path: &Path) -> Result<Writer, EncodeError> {
    const SPEC: Spec = Spec {
        fields: &[("name", 1, Kind::Str), ("url", 2, Kind::Str)],
        vendor: Some(3),
    };
    encode_spec(v, &SPEC, path)
}

fn external_docs(v: &Value, path: &Path) -> Result<Writer, EncodeError> {
    const SPEC: Spec = Spec {
        fields: &[("description", 1, Kind::Str), ("url", 2, Kind::Str)],
        vendor: Some(3),
    };
    encode_spec(v, &SPEC, path)
}

fn tag(v: &Value, path: &Path) -> Result<Writer, EncodeError> {
    const SPEC: Spec = Spec {
        fields: &[
            ("name", 1, Kind::Str),
            ("description", 2, Kind::Str),
            ("externalDocs", 3, Kind::Msg(external_docs)),
        ],
        vendor: Some(4),
    };
    encode_spec(v, &SPEC, path)
}

/// `Paths { repeated NamedAny vendor_extension = 1; repeated NamedPathItem
/// path = 2 }`: `x-` keys are extensions, `/` keys are paths.
fn paths(v: &Value, path: &Path) -> Result<Writer, EncodeError> {
    let obj = object(v, path)?;
    let mut w = Writer::new();
    vendor_extensions(&mut w, 1, obj);
    for (k, item) in obj {
        if k.starts_with('/') {
            w.message(2, &named(k, &path_item(item, &path.key(k))?));
        }
    }
    Ok(w)
}

fn path_item(v: &Value, path: &Path) -> Result<Writer, EncodeError> {
    const SPEC: Spec = Spec {
        fields: &[
            ("$ref", 1, Kind::Str),
            ("get", 2, Kind::Msg(operation)),
            ("put", 3, Kind::Msg(operation)),
            ("post", 4, Kind::Msg(operation)),
            ("delete", 5, Kind::Msg(operation)),
            ("options", 6, Kind::Msg(operation)),
            ("head", 7, Kind::Msg(operation)),
            ("patch", 8, Kind::Msg(operation)),
            ("parameters", 9, Kind::MsgList(parameters_item)),
        ],
        vendor: Some(10),
    };
    encode_spec(v, &SPEC, path)
}

fn operation(v: &Value, path: &Path) -> Result<Writer, EncodeError> {
    const SPEC: Spec = Spec {
        fields: &[
            ("tags", 1, Kind::StrList),
            ("summary", 2, Kind::Str),
            ("description", 3, Kind::Str),
            ("externalDocs", 4, Kind::Msg(external_docs)),
            ("operationId", 5, Kind::Str),
            ("produces", 6, Kind::StrList),
            ("consumes", 7, Kind::StrList),
            ("parameters", 8, Kind::MsgList(parameters_item)),
            ("responses", 9, Kind::Msg(responses)),
            ("schemes", 10, Kind::StrList),
            ("deprecated", 11, Kind::Bool),
            ("security", 12, Kind::MsgList(security_requirement)),
        ],
        vendor: Some(13),
    };
    encode_spec(v, &SPEC, path)
}

fn json_reference(v: &Value, path: &Path) -> Result<Writer, EncodeError> {
    const SPEC: Spec = Spec {
        fields: &[("$ref", 1, Kind::Str), ("description", 2, Kind::Str)],
        vendor: None,
    };
    encode_spec(v, &SPEC, path)
}

/// `ParametersItem { oneof { Parameter parameter = 1; JsonReference
/// json_reference = 2 } }`.
fn parameters_item(v: &Value, path: &Path) -> Result<Writer, EncodeError> {
    let mut w = Writer::new();
    if object(v, path)?.contains_key("$ref") {
        w.message(2, &json_reference(v, path)?);
    } else {
        w.message(1, &parameter(v, path)?);
    }
    Ok(w)
}

/// `Parameter { oneof { BodyParameter body_parameter = 1; NonBodyParameter
/// non_body_parameter = 2 } }`, and inside `NonBodyParameter` the
/// sub-schema for the parameter's location.
fn parameter(v: &Value, path: &Path) -> Result<Writer, EncodeError> {
    let obj = object(v, path)?;
    let location = match obj.get("in") {
        Some(Value::String(s)) => s.as_str(),
        Some(_) => return Err(path.key("in").type_error("a string")),
        None => "",
    };
    let (number, spec) = match location {
        "body" => {
            let mut w = Writer::new();
            w.message(1, &encode_spec(v, &BODY_PARAMETER, path)?);
            return Ok(w);
        }
        "header" => (1, &HEADER_OR_PATH_PARAMETER),
        "formData" => (2, &QUERY_OR_FORM_PARAMETER),
        "query" => (3, &QUERY_OR_FORM_PARAMETER),
        "path" => (4, &HEADER_OR_PATH_PARAMETER),
        other => {
            return Err(EncodeError::Unsupported {
                path: path.key("in").to_string(),
                what: "parameter location",
                value: other.to_string(),
            })
        }
    };
    let mut non_body = Writer::new();
    non_body.message(number, &encode_spec(v, spec, path)?);
    let mut w = Writer::new();
    w.message(2, &non_body);
    Ok(w)
}

const BODY_PARAMETER: Spec = Spec {
    fields: &[
        ("description", 1, Kind::Str),
        ("name", 2, Kind::Str),
        ("in", 3, Kind::Str),
        ("required", 4, Kind::Bool),
        ("schema", 5, Kind::Msg(schema)),
    ],
    vendor: Some(6),
};

/// `QueryParameterSubSchema` and `FormDataParameterSubSchema` share numbers.
const QUERY_OR_FORM_PARAMETER: Spec = Spec {
    fields: &[
        ("required", 1, Kind::Bool),
        ("in", 2, Kind::Str),
        ("description", 3, Kind::Str),
        ("name", 4, Kind::Str),
        ("allowEmptyValue", 5, Kind::Bool),
        ("type", 6, Kind::Str),
        ("format", 7, Kind::Str),
        ("items", 8, Kind::Msg(primitives_items)),
        ("collectionFormat", 9, Kind::Str),
        ("default", 10, Kind::Any),
        ("maximum", 11, Kind::Float),
        ("exclusiveMaximum", 12, Kind::Bool),
        ("minimum", 13, Kind::Float),
        ("exclusiveMinimum", 14, Kind::Bool),
        ("maxLength", 15, Kind::Int),
        ("minLength", 16, Kind::Int),
        ("pattern", 17, Kind::Str),
        ("maxItems", 18, Kind::Int),
        ("minItems", 19, Kind::Int),
        ("uniqueItems", 20, Kind::Bool),
        ("enum", 21, Kind::AnyList),
        ("multipleOf", 22, Kind::Float),
    ],
    vendor: Some(23),
};

/// `HeaderParameterSubSchema` and `PathParameterSubSchema` share numbers
/// (no `allowEmptyValue`).
const HEADER_OR_PATH_PARAMETER: Spec = Spec {
    fields: &[
        ("required", 1, Kind::Bool),
        ("in", 2, Kind::Str),
        ("description", 3, Kind::Str),
        ("name", 4, Kind::Str),
        ("type", 5, Kind::Str),
        ("format", 6, Kind::Str),
        ("items", 7, Kind::Msg(primitives_items)),
        ("collectionFormat", 8, Kind::Str),
        ("default", 9, Kind::Any),
        ("maximum", 10, Kind::Float),
        ("exclusiveMaximum", 11, Kind::Bool),
        ("minimum", 12, Kind::Float),
        ("exclusiveMinimum", 13, Kind::Bool),
        ("maxLength", 14, Kind::Int),
        ("minLength", 15, Kind::Int),
        ("pattern", 16, Kind::Str),
        ("maxItems", 17, Kind::Int),
        ("minItems", 18, Kind::Int),
        ("uniqueItems", 19, Kind::Bool),
        ("enum", 20, Kind::AnyList),
        ("multipleOf", 21, Kind::Float),
    ],
    vendor: Some(22),
};

/// `PrimitivesItems` fields 1–17; `Header` adds `description = 18`.
const PRIMITIVE_FIELDS: [(&str, u32, Kind); 17] = [
    ("type", 1, Kind::Str),
    ("format", 2, Kind::Str),
    ("items", 3, Kind::Msg(primitives_items)),
    ("collectionFormat", 4, Kind::Str),
    ("default", 5, Kind::Any),
    ("maximum", 6, Kind::Float),
    ("exclusiveMaximum", 7, Kind::Bool),
    ("minimum", 8, Kind::Float),
    ("exclusiveMinimum", 9, Kind::Bool),
    ("maxLength", 10, Kind::Int),
    ("minLength", 11, Kind::Int),
    ("pattern", 12, Kind::Str),
    ("maxItems", 13, Kind::Int),
    ("minItems", 14, Kind::Int),
    ("uniqueItems", 15, Kind::Bool),
    ("enum", 16, Kind::AnyList),
    ("multipleOf", 17, Kind::Float),
];

const PRIMITIVES_ITEMS: Spec = Spec {
    fields: &PRIMITIVE_FIELDS,
    vendor: Some(18),
};

fn primitives_items(v: &Value, path: &Path) -> Result<Writer, EncodeError> {
    encode_spec(v, &PRIMITIVES_ITEMS, path)
}

const HEADER: Spec = Spec {
    fields: &{
        let mut f = [("", 0, Kind::Str); 18];
        let mut i = 0;
        while i < 17 {
            f[i] = PRIMITIVE_FIELDS[i];
            i += 1;
        }
        f[17] = ("description", 18, Kind::Str);
        f
    },
    vendor: Some(19),
};

fn header(v: &Value, path: &Path) -> Result<Writer, EncodeError> {
    encode_spec(v, &HEADER, path)
}

/// `Responses { repeated NamedResponseValue response_code = 1; repeated
/// NamedAny vendor_extension = 2 }`: keys are status codes or `default`.
fn responses(v: &Value, path: &Path) -> Result<Writer, EncodeError> {
    let obj = object(v, path)?;
    let mut w = Writer::new();
    for (k, item) in obj {
        let is_code = k.len() == 3 && k.bytes().all(|b| b.is_ascii_digit());
        if is_code || k == "default" {
            w.message(1, &named(k, &response_value(item, &path.key(k))?));
        }
    }
    vendor_extensions(&mut w, 2, obj);
    Ok(w)
}

/// `ResponseValue { oneof { Response response = 1; JsonReference
/// json_reference = 2 } }`.
fn response_value(v: &Value, path: &Path) -> Result<Writer, EncodeError> {
    let mut w = Writer::new();
    if object(v, path)?.contains_key("$ref") {
        w.message(2, &json_reference(v, path)?);
    } else {
        w.message(1, &response(v, path)?);
    }
    Ok(w)
}

fn response(v: &Value, path: &Path) -> Result<Writer, EncodeError> {
    const SPEC: Spec = Spec {
        fields: &[
            ("description", 1, Kind::Str),
            ("schema", 2, Kind::Msg(schema_item)),
            ("headers", 3, Kind::Msg(headers)),
            ("examples", 4, Kind::Msg(examples)),
        ],
        vendor: Some(5),
    };
    encode_spec(v, &SPEC, path)
}

fn headers(v: &Value, path: &Path) -> Result<Writer, EncodeError> {
    named_map(v, path, header)
}

fn examples(v: &Value, path: &Path) -> Result<Writer, EncodeError> {
    let mut w = Writer::new();
    for (k, item) in object(v, path)? {
        w.message(1, &named(k, &any(item)));
    }
    Ok(w)
}

/// Keys a `FileSchema` may have (besides `x-` ones).
const FILE_SCHEMA_KEYS: [&str; 9] = [
    "default",
    "description",
    "example",
    "externalDocs",
    "format",
    "readOnly",
    "required",
    "title",
    "type",
];

/// `SchemaItem { oneof { Schema schema = 1; FileSchema file_schema = 2 } }`.
/// gnostic keeps the last alternative that compiles, so a schema of
/// `type: file` using only `FileSchema` keys is a `FileSchema`.
fn schema_item(v: &Value, path: &Path) -> Result<Writer, EncodeError> {
    let obj = object(v, path)?;
    let is_file = obj.get("type").and_then(Value::as_str) == Some("file")
        && obj
            .keys()
            .all(|k| k.starts_with("x-") || FILE_SCHEMA_KEYS.contains(&k.as_str()));
    let mut w = Writer::new();
    if is_file {
        const SPEC: Spec = Spec {
            fields: &[
                ("format", 1, Kind::Str),
                ("title", 2, Kind::Str),
                ("description", 3, Kind::Str),
                ("default", 4, Kind::Any),
                ("required", 5, Kind::StrList),
                ("type", 6, Kind::Str),
                ("readOnly", 7, Kind::Bool),
                ("externalDocs", 8, Kind::Msg(external_docs)),
                ("example", 9, Kind::Any),
            ],
            vendor: Some(10),
        };
        w.message(2, &encode_spec(v, &SPEC, path)?);
    } else {
        w.message(1, &schema(v, path)?);
    }
    Ok(w)
}

const SCHEMA: Spec = Spec {
    fields: &[
        ("$ref", 1, Kind::Str),
        ("format", 2, Kind::Str),
        ("title", 3, Kind::Str),
        ("description", 4, Kind::Str),
        ("default", 5, Kind::Any),
        ("multipleOf", 6, Kind::Float),
        ("maximum", 7, Kind::Float),
        ("exclusiveMaximum", 8, Kind::Bool),
        ("minimum", 9, Kind::Float),
        ("exclusiveMinimum", 10, Kind::Bool),
        ("maxLength", 11, Kind::Int),
        ("minLength", 12, Kind::Int),
        ("pattern", 13, Kind::Str),
        ("maxItems", 14, Kind::Int),
        ("minItems", 15, Kind::Int),
        ("uniqueItems", 16, Kind::Bool),
        ("maxProperties", 17, Kind::Int),
        ("minProperties", 18, Kind::Int),
        ("required", 19, Kind::StrList),
        ("enum", 20, Kind::AnyList),
        ("additionalProperties", 21, Kind::Msg(additional_properties)),
        ("type", 22, Kind::Msg(type_item)),
        ("items", 23, Kind::Msg(items_item)),
        ("allOf", 24, Kind::MsgList(schema)),
        ("properties", 25, Kind::Msg(properties)),
        ("discriminator", 26, Kind::Str),
        ("readOnly", 27, Kind::Bool),
        ("xml", 28, Kind::Msg(xml)),
        ("externalDocs", 29, Kind::Msg(external_docs)),
        ("example", 30, Kind::Any),
    ],
    vendor: Some(31),
};

fn schema(v: &Value, path: &Path) -> Result<Writer, EncodeError> {
    encode_spec(v, &SCHEMA, path)
}

fn definitions(v: &Value, path: &Path) -> Result<Writer, EncodeError> {
    named_map(v, path, schema)
}

fn properties(v: &Value, path: &Path) -> Result<Writer, EncodeError> {
    named_map(v, path, schema)
}

/// `AdditionalPropertiesItem { oneof { Schema schema = 1; bool boolean = 2
/// } }`; a oneof member is written even when it is `false`.
fn additional_properties(v: &Value, path: &Path) -> Result<Writer, EncodeError> {
    let mut w = Writer::new();
    match v {
        Value::Bool(b) => w.bool(2, *b),
        Value::Object(_) => w.message(1, &schema(v, path)?),
        _ => return Err(path.type_error("a schema or a boolean")),
    }
    Ok(w)
}

/// `TypeItem { repeated string value = 1 }`: one type or a list of them.
fn type_item(v: &Value, path: &Path) -> Result<Writer, EncodeError> {
    fn text(v: &Value) -> Option<String> {
        match v {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            Value::Null => Some("null".into()),
            _ => None,
        }
    }
    let mut w = Writer::new();
    match v {
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let s = text(item).ok_or_else(|| path.index(i).type_error("a type name"))?;
                w.string(1, &s);
            }
        }
        other => w.string(
            1,
            &text(other).ok_or_else(|| path.type_error("a type name"))?,
        ),
    }
    Ok(w)
}

/// `ItemsItem { repeated Schema schema = 1 }`. Swagger allows one schema;
/// an array of schemas (JSON Schema tuples) is kept element by element.
fn items_item(v: &Value, path: &Path) -> Result<Writer, EncodeError> {
    let mut w = Writer::new();
    match v {
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                w.message(1, &schema(item, &path.index(i))?);
            }
        }
        _ => w.message(1, &schema(v, path)?),
    }
    Ok(w)
}

fn xml(v: &Value, path: &Path) -> Result<Writer, EncodeError> {
    const SPEC: Spec = Spec {
        fields: &[
            ("name", 1, Kind::Str),
            ("namespace", 2, Kind::Str),
            ("prefix", 3, Kind::Str),
            ("attribute", 4, Kind::Bool),
            ("wrapped", 5, Kind::Bool),
        ],
        vendor: Some(6),
    };
    encode_spec(v, &SPEC, path)
}

fn parameter_definitions(v: &Value, path: &Path) -> Result<Writer, EncodeError> {
    named_map(v, path, parameter)
}

fn response_definitions(v: &Value, path: &Path) -> Result<Writer, EncodeError> {
    named_map(v, path, response)
}

/// `SecurityRequirement { repeated NamedStringArray additional_properties
/// = 1 }`, each value a `StringArray { repeated string value = 1 }`.
fn security_requirement(v: &Value, path: &Path) -> Result<Writer, EncodeError> {
    let mut w = Writer::new();
    for (k, scopes) in object(v, path)? {
        let mut list = Writer::new();
        // gnostic keeps every element, non-strings as "".
        for item in scopes.as_array().map(Vec::as_slice).unwrap_or_default() {
            list.string(1, &scalar_string(item).unwrap_or_default());
        }
        w.message(1, &named(k, &list));
    }
    Ok(w)
}

fn security_definitions(v: &Value, path: &Path) -> Result<Writer, EncodeError> {
    named_map(v, path, security_definitions_item)
}

/// `SecurityDefinitionsItem`: the scheme is chosen by `type` (and `flow`
/// for OAuth2).
fn security_definitions_item(v: &Value, path: &Path) -> Result<Writer, EncodeError> {
    const BASIC: Spec = Spec {
        fields: &[("type", 1, Kind::Str), ("description", 2, Kind::Str)],
        vendor: Some(3),
    };
    const API_KEY: Spec = Spec {
        fields: &[
            ("type", 1, Kind::Str),
            ("name", 2, Kind::Str),
            ("in", 3, Kind::Str),
            ("description", 4, Kind::Str),
        ],
        vendor: Some(5),
    };
    const IMPLICIT: Spec = Spec {
        fields: &[
            ("type", 1, Kind::Str),
            ("flow", 2, Kind::Str),
            ("scopes", 3, Kind::Msg(oauth2_scopes)),
            ("authorizationUrl", 4, Kind::Str),
            ("description", 5, Kind::Str),
        ],
        vendor: Some(6),
    };
    // Password and application flows share a layout.
    const TOKEN_ONLY: Spec = Spec {
        fields: &[
            ("type", 1, Kind::Str),
            ("flow", 2, Kind::Str),
            ("scopes", 3, Kind::Msg(oauth2_scopes)),
            ("tokenUrl", 4, Kind::Str),
            ("description", 5, Kind::Str),
        ],
        vendor: Some(6),
    };
    const ACCESS_CODE: Spec = Spec {
        fields: &[
            ("type", 1, Kind::Str),
            ("flow", 2, Kind::Str),
            ("scopes", 3, Kind::Msg(oauth2_scopes)),
            ("authorizationUrl", 4, Kind::Str),
            ("tokenUrl", 5, Kind::Str),
            ("description", 6, Kind::Str),
        ],
        vendor: Some(7),
    };
    let obj = object(v, path)?;
    let text = |k: &str| obj.get(k).and_then(Value::as_str).unwrap_or("");
    let (number, spec) = match (text("type"), text("flow")) {
        ("basic", _) => (1, &BASIC),
        ("apiKey", _) => (2, &API_KEY),
        ("oauth2", "implicit") => (3, &IMPLICIT),
        ("oauth2", "password") => (4, &TOKEN_ONLY),
        ("oauth2", "application") => (5, &TOKEN_ONLY),
        ("oauth2", "accessCode") => (6, &ACCESS_CODE),
        (kind, flow) => {
            return Err(EncodeError::Unsupported {
                path: path.to_string(),
                what: "security scheme",
                value: format!("{kind} {flow}").trim().to_string(),
            })
        }
    };
    let mut w = Writer::new();
    w.message(number, &encode_spec(v, spec, path)?);
    Ok(w)
}

/// `Oauth2Scopes { repeated NamedString additional_properties = 1 }`.
fn oauth2_scopes(v: &Value, path: &Path) -> Result<Writer, EncodeError> {
    let mut w = Writer::new();
    for (k, item) in object(v, path)? {
        let s = scalar_string(item).ok_or_else(|| path.key(k).type_error("a string"))?;
        let mut pair = Writer::new();
        if !k.is_empty() {
            pair.string(1, k);
        }
        if !s.is_empty() {
            pair.string(2, &s);
        }
        w.message(1, &pair);
    }
    Ok(w)
}

#[cfg(test)]
mod tests;
