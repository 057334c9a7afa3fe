//! The shape of the generated table: what a message's fields are on the wire
//! and how Go's `encoding/json` writes them.

/// A field's protobuf type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ty {
    /// string
    S,
    /// bytes (Go `[]byte`, JSON base64)
    B,
    /// bool
    Z,
    /// int32
    I,
    /// int64
    L,
    /// double
    D,
    /// A message, by index into [`super::table::MSGS`].
    M(u16),
}

/// How the Go field holds the value, which decides when JSON shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Card {
    /// A value field (`string`, `int32`, a struct, `[]byte`): absent on the
    /// wire means the zero value.
    One,
    /// A pointer field: absent on the wire means nil.
    Opt,
    /// A slice (`repeated`).
    Rep,
    /// A `map[string]T`: repeated entry messages {1: key, 2: value}.
    Map,
    /// An embedded struct with `json:",inline"`: its fields join the parent.
    Inline,
}

/// How a message becomes JSON: its struct fields, or a hand-written
/// `MarshalJSON` upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Shape {
    Struct,
    /// metav1.Time: {1: seconds, 2: nanos}, RFC 3339 in whole seconds.
    Time,
    /// metav1.MicroTime: RFC 3339 with six fractional digits.
    MicroTime,
    /// metav1.Duration: {1: nanoseconds}, Go's duration string.
    Duration,
    /// metav1.GroupVersion: "group/version".
    GroupVersion,
    /// resource.Quantity: {1: string}.
    Quantity,
    /// intstr.IntOrString: {1: type, 2: intVal, 3: strVal}.
    IntOrString,
    /// runtime.RawExtension, metav1.FieldsV1, apiextensions JSON: {1: raw
    /// JSON bytes}.
    RawJson,
    /// runtime.Unknown: {2: raw JSON bytes, 4: contentType}.
    Unknown,
    /// A Go named slice (metav1.Verbs, ExtraValue): {repeated 1: items},
    /// JSON is the array.
    Items,
    /// apiextensions JSONSchemaPropsOrArray: {1: schema, 2: schemas}.
    SchemaOrArray,
    /// apiextensions JSONSchemaPropsOrBool: {1: allows, 2: schema}.
    SchemaOrBool,
    /// apiextensions JSONSchemaPropsOrStringArray: {1: schema, 2: property}.
    SchemaOrStringArray,
}

#[derive(Debug)]
pub(super) struct Field {
    pub num: u32,
    /// The JSON name; empty for [`Card::Inline`].
    pub json: &'static str,
    /// For maps, the value type (keys are always strings).
    pub ty: Ty,
    pub card: Card,
    /// The Go tag has `omitempty`.
    pub omit: bool,
}

#[derive(Debug)]
pub(super) struct Msg {
    /// Short proto name: `apps/v1.Deployment`, `meta/v1.ObjectMeta`.
    pub name: &'static str,
    pub shape: Shape,
    /// Sorted by field number.
    pub fields: &'static [Field],
}

/// (apiVersion, kind, index into MSGS)
pub(super) type Kind = (&'static str, &'static str, u16);

pub(super) const fn f(num: u32, json: &'static str, ty: Ty, card: Card, omit: u8) -> Field {
    Field {
        num,
        json,
        ty,
        card,
        omit: omit != 0,
    }
}

pub(super) const fn m(name: &'static str, shape: Shape, fields: &'static [Field]) -> Msg {
    Msg {
        name,
        shape,
        fields,
    }
}

/// The index of the message registered for apiVersion + kind.
pub(super) fn kind(api_version: &str, kind: &str) -> Option<u16> {
    let kinds = super::table::KINDS;
    let i = kinds
        .binary_search_by(|(v, k, _)| (*v, *k).cmp(&(api_version, kind)))
        .ok()?;
    Some(kinds[i].2)
}

pub(super) fn msg(index: u16) -> Option<&'static Msg> {
    super::table::MSGS.get(usize::from(index))
}

impl Msg {
    pub(super) fn field(&self, num: u32) -> Option<(usize, &Field)> {
        let i = self.fields.binary_search_by_key(&num, |f| f.num).ok()?;
        Some((i, &self.fields[i]))
    }
}
