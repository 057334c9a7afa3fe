//! Kubernetes protobuf request bodies (`application/vnd.kubernetes.protobuf`)
//! decoded into the JSON object upstream's API server would hold: what Go's
//! `encoding/json` writes for the struct the body decodes to.
//!
//! The body is the magic `k8s\0` and a `runtime.Unknown` envelope
//! {1: typeMeta {1: apiVersion, 2: kind}, 2: raw, 3: contentEncoding,
//! 4: contentType}; `raw` is the object's message, found in the generated
//! table (`k8s/table.rs`, one entry per message of k8s.io/api,
//! apimachinery's meta/v1, resource, intstr and runtime, and
//! apiextensions/v1) by apiVersion + kind.
//!
//! Go's JSON rules the result follows, since the API server then applies
//! defaulting that only fills absent fields:
//! - `omitempty` drops "", 0, false, and nil or empty slices, maps and
//!   `[]byte`; a nil slice, map or pointer without it is `null`;
//! - pointer fields are present whenever the wire has them, even when zero;
//! - struct fields are always present (`"status": {}`), whatever the tag;
//!   metav1.Time/MicroTime write `null` for the zero time, Quantity "0",
//!   IntOrString 0, Duration "0s", RawExtension `null`;
//! - unknown field numbers are skipped.

mod decode;
mod gofmt;
mod schema;
#[rustfmt::skip]
mod table;

use serde_json::Value;
use thiserror::Error;

use crate::wire::{Reader, Value as Wire};

/// The media type of these bodies.
pub const CONTENT_TYPE: &str = "application/vnd.kubernetes.protobuf";

/// Every Kubernetes protobuf body starts with these bytes.
const MAGIC: &[u8] = b"k8s\0";

/// Why a body could not be turned into JSON. `path` is the JSON path of
/// the offending field (`spec.template.spec.containers[0].ports`), empty
/// for the object itself.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("not a Kubernetes protobuf body: {0}")]
    NotProtobuf(&'static str),
    #[error("the protobuf envelope has no {0}")]
    MissingTypeMeta(&'static str),
    #[error("no protobuf message is known for apiVersion {api_version:?}, kind {kind:?}")]
    UnknownKind { api_version: String, kind: String },
    #[error("malformed protobuf at {}: {reason}", show(path))]
    Malformed { path: String, reason: String },
    #[error("invalid UTF-8 in a string at {}", show(path))]
    InvalidUtf8 { path: String },
    #[error("invalid value at {}: {reason}", show(path))]
    InvalidValue { path: String, reason: String },
    #[error("protobuf messages nested more than {0} deep")]
    TooDeep(usize),
}

fn show(path: &str) -> &str {
    if path.is_empty() {
        "the object root"
    } else {
        path
    }
}

impl DecodeError {
    /// The same error one level further out: `segment` is a field name or
    /// an `[index]` / `[key]`.
    fn within(mut self, segment: &str) -> DecodeError {
        if let DecodeError::Malformed { path, .. }
        | DecodeError::InvalidUtf8 { path }
        | DecodeError::InvalidValue { path, .. } = &mut self
        {
            if segment.is_empty() {
                return self;
            }
            *path = if path.is_empty() || path.starts_with('[') {
                format!("{segment}{path}")
            } else {
                format!("{segment}.{path}")
            };
        }
        self
    }
}

/// The JSON object a protobuf request body stands for, with `apiVersion`
/// and `kind` from its envelope.
pub fn decode(body: &[u8]) -> Result<Value, DecodeError> {
    let data = body
        .strip_prefix(MAGIC)
        .ok_or(DecodeError::NotProtobuf("missing the k8s\\0 prefix"))?;
    if data.is_empty() {
        return Err(DecodeError::NotProtobuf("empty body"));
    }
    let envelope = Envelope::parse(data).map_err(|e| e.within("(envelope)"))?;
    if envelope.kind.is_empty() {
        return Err(DecodeError::MissingTypeMeta("kind"));
    }
    if envelope.api_version.is_empty() {
        return Err(DecodeError::MissingTypeMeta("apiVersion"));
    }
    let index = schema::kind(&envelope.api_version, &envelope.kind).ok_or_else(|| {
        DecodeError::UnknownKind {
            api_version: envelope.api_version.clone(),
            kind: envelope.kind.clone(),
        }
    })?;
    let chunks: &[&[u8]] = match &envelope.raw {
        Some(raw) => std::slice::from_ref(raw),
        None => &[],
    };
    let mut object = match decode::render(index, chunks, 1)? {
        Value::Object(map) => map,
        _ => return Err(DecodeError::NotProtobuf("the kind is not an object type")),
    };
    object.insert(
        "apiVersion".to_string(),
        Value::String(envelope.api_version),
    );
    object.insert("kind".to_string(), Value::String(envelope.kind));
    Ok(Value::Object(object))
}

/// The parts of `runtime.Unknown` that matter here.
struct Envelope<'a> {
    api_version: String,
    kind: String,
    raw: Option<&'a [u8]>,
}

impl<'a> Envelope<'a> {
    fn parse(data: &'a [u8]) -> Result<Envelope<'a>, DecodeError> {
        let mut envelope = Envelope {
            api_version: String::new(),
            kind: String::new(),
            raw: None,
        };
        let mut reader = Reader::new(data);
        while let Some((num, value)) = next(&mut reader)? {
            match (num, value) {
                // Repeated typeMeta occurrences merge, as Go's decoder does.
                (1, Wire::Bytes(type_meta)) => {
                    let mut inner = Reader::new(type_meta);
                    while let Some((num, value)) =
                        next(&mut inner).map_err(|e| e.within("typeMeta"))?
                    {
                        match (num, value) {
                            (1, Wire::Bytes(s)) => {
                                envelope.api_version = text(s, "typeMeta.apiVersion")?
                            }
                            (2, Wire::Bytes(s)) => envelope.kind = text(s, "typeMeta.kind")?,
                            (1 | 2, _) => return Err(wrong("typeMeta field is not a string")),
                            _ => {}
                        }
                    }
                }
                (2, Wire::Bytes(raw)) => envelope.raw = Some(raw),
                // contentEncoding and contentType: upstream's decoder
                // ignores them too.
                (3 | 4, Wire::Bytes(_)) => {}
                (1..=4, _) => return Err(wrong("envelope field has the wrong wire type")),
                _ => {}
            }
        }
        Ok(envelope)
    }
}

fn next<'a>(reader: &mut Reader<'a>) -> Result<Option<(u32, Wire<'a>)>, DecodeError> {
    reader.next_field().map_err(|e| DecodeError::Malformed {
        path: String::new(),
        reason: e.to_string(),
    })
}

fn wrong(reason: &str) -> DecodeError {
    DecodeError::Malformed {
        path: String::new(),
        reason: reason.to_string(),
    }
}

fn text(bytes: &[u8], path: &str) -> Result<String, DecodeError> {
    String::from_utf8(bytes.to_vec()).map_err(|_| DecodeError::InvalidUtf8 {
        path: path.to_string(),
    })
}

#[cfg(test)]
mod tests;
