//! Walks a message's wire fields with the generated table and writes the
//! JSON Go's `encoding/json` would write for the decoded struct.
//!
//! A message is decoded in two steps: `collect` gathers, per table field,
//! what the wire said (the last scalar, every chunk of a singular message —
//! protobuf merges repeated occurrences —, every element of a repeated field
//! or map); `render` then applies Go's rules for absent and zero values.

use base64::Engine as _;
use serde_json::{Map, Value};

use super::gofmt;
use super::schema::{self, Card, Field, Msg, Shape, Ty};
use super::DecodeError;
use crate::wire::{Reader, Value as Wire};

/// Deeper nesting than this is refused rather than recursed into.
pub(super) const MAX_DEPTH: usize = 100;

/// What the wire carried for one table field.
#[derive(Debug, Default)]
enum Acc<'a> {
    #[default]
    Absent,
    /// A singular scalar: the last occurrence wins.
    Scalar(Wire<'a>),
    /// A singular message: all occurrences, merged in order.
    Chunks(Vec<&'a [u8]>),
    /// A repeated field's elements or a map's entries.
    List(Vec<Wire<'a>>),
}

impl<'a> Acc<'a> {
    fn push(&mut self, value: Wire<'a>) {
        match self {
            Acc::List(items) => items.push(value),
            _ => *self = Acc::List(vec![value]),
        }
    }

    fn chunks(&self) -> &[&'a [u8]] {
        match self {
            Acc::Chunks(chunks) => chunks,
            _ => &[],
        }
    }

    fn items(&self) -> &[Wire<'a>] {
        match self {
            Acc::List(items) => items,
            _ => &[],
        }
    }
}

fn malformed(reason: impl Into<String>) -> DecodeError {
    DecodeError::Malformed {
        path: String::new(),
        reason: reason.into(),
    }
}

fn invalid(reason: impl Into<String>) -> DecodeError {
    DecodeError::InvalidValue {
        path: String::new(),
        reason: reason.into(),
    }
}

/// The message at `index` (from the table), as JSON, from the merged
/// `chunks` (none: an empty message, i.e. Go's zero value of the type).
pub(super) fn render(index: u16, chunks: &[&[u8]], depth: usize) -> Result<Value, DecodeError> {
    if depth > MAX_DEPTH {
        return Err(DecodeError::TooDeep(MAX_DEPTH));
    }
    let msg = schema::msg(index).ok_or_else(|| malformed(format!("no message #{index}")))?;
    // These types have hand-written Unmarshal methods that start afresh on
    // each occurrence instead of merging: only the last one counts.
    let chunks = match msg.shape {
        Shape::Time | Shape::MicroTime | Shape::Quantity => match chunks.last() {
            Some(last) => std::slice::from_ref(last),
            None => &[],
        },
        _ => chunks,
    };
    let accs = collect(msg, chunks)?;
    let acc = |num: u32| -> (&Field, &Acc) {
        match msg.field(num).and_then(|(i, f)| Some((f, accs.get(i)?))) {
            Some(found) => found,
            None => (&NO_FIELD, &Acc::Absent),
        }
    };
    match msg.shape {
        Shape::Struct => object(msg, &accs, depth),
        Shape::Time | Shape::MicroTime => {
            // Time.Unmarshal treats empty data as the zero time.
            if chunks.last().is_none_or(|c| c.is_empty()) {
                return Ok(Value::Null);
            }
            let seconds = int(acc(1).1)?;
            let micro = msg.shape == Shape::MicroTime;
            // Time keeps whole seconds only (to match its JSON form).
            // nanos is an int32: Go keeps the varint's low 32 bits.
            let nanos = if micro {
                i64::from(int(acc(2).1)? as i32)
            } else {
                0
            };
            match gofmt::rfc3339(seconds, nanos, micro).map_err(invalid)? {
                Some(text) => Ok(Value::String(text)),
                None => Ok(Value::Null),
            }
        }
        Shape::Duration => Ok(Value::String(gofmt::duration(int(acc(1).1)?))),
        Shape::GroupVersion => {
            let group = string(acc(1).1)?;
            let version = string(acc(2).1)?;
            let text = match (group.as_str(), version.as_str()) {
                ("", "") => String::new(),
                ("", v) => v.to_string(),
                (g, v) => format!("{g}/{v}"),
            };
            if text.matches('/').count() > 1 {
                return Err(invalid(format!("illegal GroupVersion {text}")));
            }
            Ok(Value::String(text))
        }
        Shape::Quantity => match acc(1).1 {
            Acc::Absent => Ok(Value::String("0".to_string())),
            other => {
                let text = string(other)?;
                if text.is_empty() {
                    return Err(invalid("a quantity must not be empty"));
                }
                Ok(Value::String(text))
            }
        },
        Shape::IntOrString => match int(acc(1).1)? {
            0 => Ok(Value::from(int(acc(2).1)? as i32)),
            1 => Ok(Value::String(string(acc(3).1)?)),
            other => Err(invalid(format!("impossible IntOrString type {other}"))),
        },
        Shape::RawJson => raw_json(acc(1).1),
        Shape::Unknown => {
            let content_type = string(acc(4).1)?;
            if !content_type.is_empty() && content_type != "application/json" {
                return Err(invalid(format!(
                    "runtime.Unknown holds {content_type}, not JSON"
                )));
            }
            raw_json(acc(2).1)
        }
        Shape::Items => {
            let (field, items) = acc(1);
            Ok(Value::Array(elements(field, items, depth)?))
        }
        Shape::SchemaOrArray => {
            let (field, schemas) = acc(2);
            if !schemas.items().is_empty() {
                return Ok(Value::Array(elements(field, schemas, depth)?));
            }
            optional_message(acc(1), depth)
        }
        Shape::SchemaOrBool => {
            if matches!(acc(2).1, Acc::Chunks(_)) {
                return optional_message(acc(2), depth);
            }
            Ok(Value::Bool(int(acc(1).1)? != 0))
        }
        Shape::SchemaOrStringArray => {
            let (field, property) = acc(2);
            if !property.items().is_empty() {
                return Ok(Value::Array(elements(field, property, depth)?));
            }
            optional_message(acc(1), depth)
        }
    }
}

/// Stands in for a field a special shape expects but the table lacks.
static NO_FIELD: Field = schema::f(0, "", Ty::S, Card::One, 0);

fn optional_message((field, acc): (&Field, &Acc), depth: usize) -> Result<Value, DecodeError> {
    match (field.ty, acc) {
        (Ty::M(index), Acc::Chunks(chunks)) => {
            render(index, chunks, depth + 1).map_err(|e| e.within(field.json))
        }
        _ => Ok(Value::Null),
    }
}

/// Gathers every wire field of `chunks` under its table field; unknown
/// field numbers are skipped, as Go keeps them out of the struct.
fn collect<'a>(msg: &Msg, chunks: &[&'a [u8]]) -> Result<Vec<Acc<'a>>, DecodeError> {
    let mut accs: Vec<Acc<'a>> = std::iter::repeat_with(Acc::default)
        .take(msg.fields.len())
        .collect();
    for chunk in chunks {
        let mut reader = Reader::new(chunk);
        while let Some((num, value)) = reader
            .next_field()
            .map_err(|e| malformed(format!("{e} (in {})", msg.name)))?
        {
            let Some((i, field)) = msg.field(num) else {
                continue;
            };
            if let Some(acc) = accs.get_mut(i) {
                accept(field, value, acc).map_err(|e| e.within(field.json))?;
            }
        }
    }
    Ok(accs)
}

fn wrong_wire(field: &Field, value: &Wire) -> DecodeError {
    let got = match value {
        Wire::Varint(_) => 0,
        Wire::Fixed64(_) => 1,
        Wire::Bytes(_) => 2,
        Wire::Fixed32(_) => 5,
    };
    malformed(format!(
        "wrong wire type {got} for field {} ({:?})",
        field.num, field.ty
    ))
}

fn is_varint_type(ty: Ty) -> bool {
    matches!(ty, Ty::Z | Ty::I | Ty::L)
}

/// Whether `value`'s wire type is the one a singular field of `ty` uses.
fn wire_fits(ty: Ty, value: &Wire) -> bool {
    match value {
        Wire::Varint(_) => is_varint_type(ty),
        Wire::Fixed64(_) => ty == Ty::D,
        Wire::Bytes(_) => matches!(ty, Ty::S | Ty::B | Ty::M(_)),
        Wire::Fixed32(_) => false,
    }
}

fn accept<'a>(field: &Field, value: Wire<'a>, acc: &mut Acc<'a>) -> Result<(), DecodeError> {
    match field.card {
        Card::Map => match value {
            Wire::Bytes(_) => acc.push(value),
            _ => return Err(wrong_wire(field, &value)),
        },
        Card::Rep => match value {
            _ if wire_fits(field.ty, &value) => acc.push(value),
            // Packed encoding of repeated numbers, which Go also accepts.
            Wire::Bytes(bytes) if is_varint_type(field.ty) => {
                let mut rest = bytes;
                while !rest.is_empty() {
                    let (v, used) = varint(rest)?;
                    acc.push(Wire::Varint(v));
                    rest = rest.get(used..).unwrap_or_default();
                }
            }
            Wire::Bytes(bytes) if field.ty == Ty::D => {
                if bytes.len() % 8 != 0 {
                    return Err(malformed("packed doubles not a multiple of 8 bytes"));
                }
                for eight in bytes.chunks_exact(8) {
                    let mut raw = [0u8; 8];
                    raw.copy_from_slice(eight);
                    acc.push(Wire::Fixed64(u64::from_le_bytes(raw)));
                }
            }
            _ => return Err(wrong_wire(field, &value)),
        },
        Card::One | Card::Opt | Card::Inline => {
            if !wire_fits(field.ty, &value) {
                return Err(wrong_wire(field, &value));
            }
            match (field.ty, value) {
                (Ty::M(_), Wire::Bytes(bytes)) => match acc {
                    Acc::Chunks(chunks) => chunks.push(bytes),
                    _ => *acc = Acc::Chunks(vec![bytes]),
                },
                _ => *acc = Acc::Scalar(value),
            }
        }
    }
    Ok(())
}

/// One varint from the front of `bytes`: (value, bytes used).
fn varint(bytes: &[u8]) -> Result<(u64, usize), DecodeError> {
    let mut out = 0u64;
    for (i, byte) in bytes.iter().enumerate().take(10) {
        out |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok((out, i + 1));
        }
    }
    Err(malformed("truncated or overlong packed varint"))
}

/// A struct's JSON object: each field by Go's rules, then the fields of
/// inlined embedded structs where the struct has no field of that name.
fn object(msg: &Msg, accs: &[Acc], depth: usize) -> Result<Value, DecodeError> {
    let mut out = Map::new();
    let mut inlined = Vec::new();
    for (field, acc) in msg.fields.iter().zip(accs) {
        if field.card == Card::Inline {
            let Ty::M(index) = field.ty else {
                return Err(malformed("inline field is not a message"));
            };
            match render(index, acc.chunks(), depth + 1)? {
                Value::Object(map) => inlined.push(map),
                _ => return Err(malformed("inline field is not a struct")),
            }
            continue;
        }
        if let Some(value) = member(field, acc, depth).map_err(|e| e.within(field.json))? {
            out.insert(field.json.to_string(), value);
        }
    }
    for map in inlined {
        for (key, value) in map {
            out.entry(key).or_insert(value);
        }
    }
    Ok(Value::Object(out))
}

/// A nil slice, map or pointer: `null`, or nothing under `omitempty`.
fn nil(field: &Field) -> Option<Value> {
    (!field.omit).then_some(Value::Null)
}

/// One struct field's JSON value, or `None` when Go omits it.
fn member(field: &Field, acc: &Acc, depth: usize) -> Result<Option<Value>, DecodeError> {
    match field.card {
        Card::Opt => match (field.ty, acc) {
            (_, Acc::Absent) => Ok(nil(field)),
            (Ty::M(index), Acc::Chunks(chunks)) => render(index, chunks, depth + 1).map(Some),
            (ty, Acc::Scalar(value)) => scalar(ty, value).map(Some),
            _ => Err(malformed("inconsistent field")),
        },
        Card::One => match field.ty {
            Ty::M(index) => {
                let items = schema::msg(index).is_some_and(|m| m.shape == Shape::Items);
                // A named slice type is nil until the wire mentions it;
                // any other struct is its zero value.
                if items && matches!(acc, Acc::Absent) {
                    return Ok(nil(field));
                }
                let value = render(index, acc.chunks(), depth + 1)?;
                if items && field.omit && value.as_array().is_some_and(Vec::is_empty) {
                    return Ok(None);
                }
                Ok(Some(value))
            }
            Ty::B => match acc {
                Acc::Scalar(Wire::Bytes(bytes)) if !(field.omit && bytes.is_empty()) => {
                    scalar(Ty::B, &Wire::Bytes(bytes)).map(Some)
                }
                Acc::Scalar(_) => Ok(None),
                _ => Ok(nil(field)),
            },
            ty => {
                let value = match acc {
                    Acc::Scalar(value) => scalar(ty, value)?,
                    _ => zero(ty),
                };
                if field.omit && is_zero(&value) {
                    return Ok(None);
                }
                Ok(Some(value))
            }
        },
        Card::Rep => {
            if acc.items().is_empty() {
                return Ok(nil(field));
            }
            elements(field, acc, depth).map(|v| Some(Value::Array(v)))
        }
        Card::Map => {
            if acc.items().is_empty() {
                return Ok(nil(field));
            }
            let mut out = Map::new();
            for entry in acc.items() {
                let Wire::Bytes(entry) = entry else {
                    return Err(malformed("map entry is not a message"));
                };
                let (key, value) = map_entry(field.ty, entry, depth)?;
                out.insert(key, value);
            }
            Ok(Some(Value::Object(out)))
        }
        Card::Inline => Err(malformed("inline field out of place")),
    }
}

/// The elements of a repeated field, each with its index in error paths.
fn elements(field: &Field, acc: &Acc, depth: usize) -> Result<Vec<Value>, DecodeError> {
    acc.items()
        .iter()
        .enumerate()
        .map(|(n, item)| {
            match (field.ty, item) {
                (Ty::M(index), Wire::Bytes(bytes)) => render(index, &[bytes], depth + 1),
                (ty, value) => scalar(ty, value),
            }
            .map_err(|e| e.within(&format!("[{n}]")))
        })
        .collect()
}

/// One map entry {1: key, 2: value}. A missing key is "", a missing value
/// the zero value (Go allocates the value before reading the entry).
fn map_entry(ty: Ty, entry: &[u8], depth: usize) -> Result<(String, Value), DecodeError> {
    let mut key: &[u8] = &[];
    let mut value: Option<Wire> = None;
    let mut reader = Reader::new(entry);
    while let Some((num, v)) = reader.next_field().map_err(|e| malformed(e.to_string()))? {
        match (num, v) {
            (1, Wire::Bytes(bytes)) => key = bytes,
            (1, _) => return Err(malformed("map key is not a string")),
            (2, v) if wire_fits(ty, &v) => value = Some(v),
            (2, _) => return Err(malformed("map value has the wrong wire type")),
            _ => {}
        }
    }
    let key = std::str::from_utf8(key)
        .map_err(|_| DecodeError::InvalidUtf8 {
            path: String::new(),
        })?
        .to_string();
    let rendered = match (ty, value) {
        (Ty::M(index), Some(Wire::Bytes(bytes))) => render(index, &[bytes], depth + 1),
        (Ty::M(index), _) => render(index, &[], depth + 1),
        (ty, Some(v)) => scalar(ty, &v),
        (Ty::B, None) => Ok(Value::String(String::new())),
        (ty, None) => Ok(zero(ty)),
    }
    .map_err(|e| e.within(&format!("[{key}]")))?;
    Ok((key, rendered))
}

fn zero(ty: Ty) -> Value {
    match ty {
        Ty::S => Value::String(String::new()),
        Ty::Z => Value::Bool(false),
        Ty::B | Ty::M(_) => Value::Null,
        Ty::I | Ty::L | Ty::D => Value::from(0),
    }
}

/// Go's "empty value" for `omitempty` on a scalar.
fn is_zero(value: &Value) -> bool {
    match value {
        Value::String(s) => s.is_empty(),
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::Null => true,
        _ => false,
    }
}

fn scalar(ty: Ty, value: &Wire) -> Result<Value, DecodeError> {
    Ok(match (ty, *value) {
        (Ty::S, Wire::Bytes(bytes)) => Value::String(utf8(bytes)?),
        (Ty::B, Wire::Bytes(bytes)) => {
            Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
        }
        (Ty::Z, Wire::Varint(v)) => Value::Bool(v != 0),
        // Go keeps the low 32 bits of an int32/uint32 varint.
        (Ty::I, Wire::Varint(v)) => Value::from(v as u32 as i32),
        (Ty::L, Wire::Varint(v)) => Value::from(v as i64),
        (Ty::D, Wire::Fixed64(bits)) => gofmt::float(f64::from_bits(bits)).map_err(invalid)?,
        _ => return Err(malformed(format!("value does not fit type {ty:?}"))),
    })
}

fn utf8(bytes: &[u8]) -> Result<String, DecodeError> {
    String::from_utf8(bytes.to_vec()).map_err(|_| DecodeError::InvalidUtf8 {
        path: String::new(),
    })
}

/// A singular string field of a special shape ("" when absent).
fn string(acc: &Acc) -> Result<String, DecodeError> {
    match acc {
        Acc::Scalar(Wire::Bytes(bytes)) => utf8(bytes),
        Acc::Absent => Ok(String::new()),
        _ => Err(malformed("expected a string")),
    }
}

/// A singular varint field of a special shape (0 when absent).
fn int(acc: &Acc) -> Result<i64, DecodeError> {
    match acc {
        Acc::Scalar(Wire::Varint(v)) => Ok(*v as i64),
        Acc::Absent => Ok(0),
        _ => Err(malformed("expected an integer")),
    }
}

/// Embedded JSON (`[]byte` holding JSON): nil or empty is `null`.
fn raw_json(acc: &Acc) -> Result<Value, DecodeError> {
    match acc {
        Acc::Scalar(Wire::Bytes(bytes)) if !bytes.is_empty() => serde_json::from_slice(bytes)
            .map_err(|e| invalid(format!("embedded object is not JSON: {e}"))),
        _ => Ok(Value::Null),
    }
}
