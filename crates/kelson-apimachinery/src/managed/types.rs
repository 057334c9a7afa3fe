//! Type information server-side apply needs: how each node merges.
//!
//! Upstream builds a structured-merge-diff schema from OpenAPI. Here a
//! [`TypeInfo`] answers the same questions lazily, one node at a time, so the
//! built-in table, a CRD's JSON schema, or nothing at all can back it.

use serde_json::Value;

use crate::strategic::{self, ListStrategy};

use super::table;

/// A position in a type. Implementations of [`TypeInfo`] hand these out and
/// get them back; the variants cover the three implementations of this module
/// (the built-in ones can be mixed into a schema, e.g. `metadata`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TypeRef<'a> {
    /// Nothing known: maps merge key by key (every key a member), lists are
    /// atomic, scalars are leaves.
    Deduced,
    /// A struct definition of the built-in table, e.g.
    /// "io.k8s.api.apps.v1.Deployment".
    Definition(&'a str),
    /// The list- or map-typed field `field` of built-in definition `def`.
    Collection { def: &'a str, field: &'a str },
    /// A node of a JSON (OpenAPI v3 / structural) schema.
    Schema(&'a Value),
}

/// How a list merges.
#[derive(Debug, Clone, PartialEq)]
pub enum ListKind {
    /// Replaced and owned as a whole.
    Atomic,
    /// A set of scalars; items are owned as `v:<value>`.
    Set,
    /// Items are objects identified by these key fields (with the default a
    /// missing key takes); items are owned as `k:{...}`.
    Map(Vec<(String, Option<Value>)>),
}

/// What a node is.
#[derive(Debug, Clone, PartialEq)]
pub enum Shape {
    /// An object with declared fields (see [`TypeInfo::field`]).
    Struct { atomic: bool },
    /// A string-keyed map whose values have the type [`TypeInfo::element`].
    Map { atomic: bool },
    /// A list whose items have the type [`TypeInfo::element`].
    List(ListKind),
    /// Untyped: see [`TypeRef::Deduced`].
    Deduced,
}

/// What Go's zero value of a built-in struct carries for a field. Upstream
/// compares Go objects, where such fields always exist, so a create or update
/// never "adds" them (this decides where the `.` marker appears).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Implicit {
    /// Omitted when empty: absent means absent.
    No,
    /// A non-pointer struct: always present, at least as `{}`.
    Empty,
    /// A list, map or pointer without `omitempty`: present as `null`.
    Null,
}

/// A declared field of a struct.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FieldType<'a> {
    pub ty: TypeRef<'a>,
    pub implicit: Implicit,
}

/// Type information for one kind of object.
pub trait TypeInfo {
    /// The type of the whole object.
    fn root(&self) -> TypeRef<'_>;

    /// What the node is.
    fn shape(&self, ty: TypeRef<'_>) -> Shape {
        builtin_shape(ty)
    }

    /// A declared field of a struct node; `None` for fields the type does not
    /// declare (they are owned like map entries, with a deduced type).
    fn field<'a>(&'a self, ty: TypeRef<'a>, name: &'a str) -> Option<FieldType<'a>> {
        builtin_field(ty, name)
    }

    /// The type of the values of a map node or the items of a list node.
    fn element<'a>(&'a self, ty: TypeRef<'a>) -> TypeRef<'a> {
        builtin_element(ty)
    }

    /// Whether explicit `null`s the applied configuration sets stay in the
    /// merged object. Built-in objects go through Go structs upstream, which
    /// drop them; custom resources are unstructured and keep them.
    fn keeps_nulls(&self) -> bool {
        false
    }

    /// A name that stands for this type information for as long as the
    /// process runs, so results computed with it can be remembered; None
    /// when it may change (a custom resource's schema).
    fn stable_id(&self) -> Option<&str> {
        None
    }
}

/// Built-in types, from the generated tables (`definition` as
/// [`crate::openapi::definition_name`] gives it).
#[derive(Debug, Clone, Copy)]
pub struct BuiltinTypes {
    pub definition: &'static str,
}

impl TypeInfo for BuiltinTypes {
    fn root(&self) -> TypeRef<'_> {
        TypeRef::Definition(self.definition)
    }

    fn stable_id(&self) -> Option<&str> {
        Some(self.definition)
    }
}

/// No type information: maps granular, lists atomic.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoTypes;

impl TypeInfo for NoTypes {
    fn root(&self) -> TypeRef<'_> {
        TypeRef::Deduced
    }
    fn keeps_nulls(&self) -> bool {
        true
    }
}

/// A custom resource's schema (`openAPIV3Schema` of the CRD version):
/// `x-kubernetes-list-type` (`atomic` default, `set`, `map` with
/// `x-kubernetes-list-map-keys`), `x-kubernetes-map-type` (`granular`
/// default, `atomic`), `x-kubernetes-preserve-unknown-fields`. `metadata` at
/// the root is always ObjectMeta, as upstream publishes it.
#[derive(Debug, Clone, Copy)]
pub struct SchemaTypes<'a> {
    pub schema: &'a Value,
}

const OBJECT_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta";

impl TypeInfo for SchemaTypes<'_> {
    fn root(&self) -> TypeRef<'_> {
        TypeRef::Schema(self.schema)
    }

    fn shape(&self, ty: TypeRef<'_>) -> Shape {
        let TypeRef::Schema(s) = ty else {
            return builtin_shape(ty);
        };
        let ext_str = |k: &str| s.get(k).and_then(Value::as_str);
        if s.get("x-kubernetes-int-or-string").and_then(Value::as_bool) == Some(true) {
            return Shape::Deduced;
        }
        match ext_str("type") {
            Some("array") => Shape::List(match ext_str("x-kubernetes-list-type") {
                Some("set") => ListKind::Set,
                Some("map") => {
                    let items = s.get("items");
                    let keys = s
                        .get("x-kubernetes-list-map-keys")
                        .and_then(Value::as_array)
                        .map(|keys| {
                            keys.iter()
                                .filter_map(Value::as_str)
                                .map(|k| {
                                    let default = items
                                        .and_then(|i| i.get("properties"))
                                        .and_then(|p| p.get(k))
                                        .and_then(|p| p.get("default"))
                                        .cloned();
                                    (k.to_owned(), default)
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    ListKind::Map(keys)
                }
                _ => ListKind::Atomic,
            }),
            Some("object") => {
                let atomic = ext_str("x-kubernetes-map-type") == Some("atomic");
                if s.get("properties").and_then(Value::as_object).is_some() {
                    Shape::Struct { atomic }
                } else if atomic || s.get("additionalProperties").is_some_and(Value::is_object) {
                    Shape::Map { atomic }
                } else {
                    Shape::Deduced
                }
            }
            _ => Shape::Deduced,
        }
    }

    fn field<'a>(&'a self, ty: TypeRef<'a>, name: &'a str) -> Option<FieldType<'a>> {
        let TypeRef::Schema(s) = ty else {
            return builtin_field(ty, name);
        };
        if std::ptr::eq(s, self.schema) && name == "metadata" {
            return Some(FieldType {
                ty: TypeRef::Definition(OBJECT_META),
                implicit: Implicit::No,
            });
        }
        let prop = s.get("properties")?.get(name)?;
        Some(FieldType {
            ty: TypeRef::Schema(prop),
            implicit: Implicit::No,
        })
    }

    fn element<'a>(&'a self, ty: TypeRef<'a>) -> TypeRef<'a> {
        let TypeRef::Schema(s) = ty else {
            return builtin_element(ty);
        };
        match s
            .get("items")
            .or_else(|| s.get("additionalProperties"))
            .filter(|v| v.is_object())
        {
            Some(e) => TypeRef::Schema(e),
            None => TypeRef::Deduced,
        }
    }

    fn keeps_nulls(&self) -> bool {
        true
    }
}

/// The generated table's row for a field, if any.
#[derive(Debug)]
pub(super) struct Field {
    pub def: &'static str,
    pub name: &'static str,
    pub rule: Rule,
    pub implicit: Implicit,
}

/// A field's merge rule as the Go markers give it.
#[derive(Debug)]
pub(super) enum Rule {
    /// Not a list or map (take the shape from the field's type).
    Other,
    Atomic,
    Set,
    /// Keyed list: key fields with their `+default` (JSON text).
    Map(&'static [(&'static str, Option<&'static str>)]),
    MapAtomic,
    MapGranular,
}

fn table_field(def: &str, name: &str) -> Option<&'static Field> {
    table::FIELDS
        .binary_search_by(|f| f.def.cmp(def).then_with(|| f.name.cmp(name)))
        .ok()
        .and_then(|i| table::FIELDS.get(i))
}

fn is_atomic_struct(def: &str) -> bool {
    table::ATOMIC_STRUCTS.binary_search(&def).is_ok()
}

/// Shape of the built-in variants; `Schema` nodes are deduced here.
pub fn builtin_shape(ty: TypeRef<'_>) -> Shape {
    match ty {
        TypeRef::Definition(def) => Shape::Struct {
            atomic: is_atomic_struct(def),
        },
        TypeRef::Collection { def, field } => {
            if let Some(f) = table_field(def, field) {
                match f.rule {
                    Rule::Atomic | Rule::Other => Shape::List(ListKind::Atomic),
                    Rule::Set => Shape::List(ListKind::Set),
                    Rule::Map(keys) => Shape::List(ListKind::Map(
                        keys.iter()
                            .map(|(k, d)| {
                                let default = d.and_then(|d| serde_json::from_str(d).ok());
                                ((*k).to_owned(), default)
                            })
                            .collect(),
                    )),
                    Rule::MapAtomic => Shape::Map { atomic: true },
                    Rule::MapGranular => Shape::Map { atomic: false },
                }
            } else {
                match strategic::list_strategy(def, field) {
                    ListStrategy::Set => Shape::List(ListKind::Set),
                    ListStrategy::Map { keys } => Shape::List(ListKind::Map(
                        keys.iter().map(|k| ((*k).to_owned(), None)).collect(),
                    )),
                    ListStrategy::MapAtomic => Shape::Map { atomic: true },
                    ListStrategy::MapGranular => Shape::Map { atomic: false },
                    ListStrategy::Atomic | ListStrategy::NotCollection => {
                        Shape::List(ListKind::Atomic)
                    }
                }
            }
        }
        TypeRef::Deduced | TypeRef::Schema(_) => Shape::Deduced,
    }
}

/// Field lookup of the built-in variants.
pub fn builtin_field<'a>(ty: TypeRef<'a>, name: &'a str) -> Option<FieldType<'a>> {
    let TypeRef::Definition(def) = ty else {
        return None;
    };
    let row = table_field(def, name);
    let implicit = row.map_or(Implicit::No, |f| f.implicit);
    let collection = match row {
        Some(f) => !matches!(f.rule, Rule::Other),
        None => !matches!(
            strategic::list_strategy(def, name),
            ListStrategy::NotCollection
        ),
    };
    let ty = if collection {
        TypeRef::Collection { def, field: name }
    } else {
        // A scalar field (or one the tables do not know) is owned as a leaf.
        strategic::field_type(def, name).map_or(TypeRef::Deduced, TypeRef::Definition)
    };
    Some(FieldType { ty, implicit })
}

/// Element type of the built-in variants.
pub fn builtin_element(ty: TypeRef<'_>) -> TypeRef<'_> {
    match ty {
        TypeRef::Collection { def, field } => {
            strategic::field_type(def, field).map_or(TypeRef::Deduced, TypeRef::Definition)
        }
        _ => TypeRef::Deduced,
    }
}
