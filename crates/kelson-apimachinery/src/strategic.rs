//! Strategic merge patch (SMP) over JSON, for the built-in types.
//!
//! This follows k8s.io/apimachinery/pkg/util/strategicpatch as the API server
//! runs it (`StrategicMergeMapPatch`: parallel lists are merged, unmatched nulls
//! are dropped): maps merge recursively, `null` deletes a key, lists whose field
//! has `patchStrategy: merge` merge item by item (by `patchMergeKey` for lists
//! of objects, as a set for lists of scalars), every other list is replaced,
//! and the directives `$patch`, `$retainKeys`, `$setElementOrder/<field>` and
//! `$deleteFromPrimitiveList/<field>` are honoured. Item order follows
//! upstream's rules (`$setElementOrder` first, then the order in the patch,
//! then the order in the live object), including its quirk of putting new
//! items of a keyed list first when the patch has no `$setElementOrder`.
//!
//! The per-field rules live in the generated [`table`] (see
//! `gen/strategic_table.py`). Where upstream would decode the merged map into a
//! Go struct, which drops nulls and directive keys inside newly added values,
//! this module strips those itself so the stored JSON matches.

use serde_json::{Map, Value};

mod table;
#[cfg(test)]
mod tests;

const DIRECTIVE: &str = "$patch";
const DELETE: &str = "delete";
const REPLACE: &str = "replace";
const MERGE: &str = "merge";
const RETAIN_KEYS: &str = "retainKeys";
const RETAIN_KEYS_DIRECTIVE: &str = "$retainKeys";
const DELETE_FROM_PRIMITIVE_LIST: &str = "$deleteFromPrimitiveList";
const SET_ELEMENT_ORDER: &str = "$setElementOrder";

/// Why a strategic merge patch could not be applied.
///
/// Upstream's API server answers [`BadRequest`](Self::BadRequest) with 400,
/// [`Unprocessable`](Self::Unprocessable) with 422 and passes every other merge
/// error through unclassified (a 500 carrying the message); see
/// [`StrategicError::http_status`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StrategicError {
    /// The type has no strategic merge rules (custom resources, unknown kinds).
    #[error("strategic merge patch format is not supported for {0}")]
    UnknownType(String),
    /// A malformed document or directive list (upstream: 400 Bad Request).
    #[error("{0}")]
    BadRequest(String),
    /// A patch upstream classifies as unprocessable (422), e.g. lists of lists.
    #[error("{0}")]
    Unprocessable(String),
    /// Any other patch that cannot be merged: missing merge keys, unknown
    /// `$patch` values, mismatched element types, ... (upstream: 500).
    #[error("{0}")]
    InvalidPatch(String),
}

impl StrategicError {
    /// The HTTP status upstream's API server answers with for this error.
    pub fn http_status(&self) -> u16 {
        match self {
            StrategicError::UnknownType(_) => 415,
            StrategicError::BadRequest(_) => 400,
            StrategicError::Unprocessable(_) => 422,
            StrategicError::InvalidPatch(_) => 500,
        }
    }
}

type Result<T> = std::result::Result<T, StrategicError>;

/// How server-side apply merges a field, as k8s-openapi encodes it
/// (`x-kubernetes-list-type`, `x-kubernetes-list-map-keys`,
/// `x-kubernetes-map-type`). Strategic merge patch uses [`PatchMeta`] instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListStrategy {
    /// A scalar or nested-object field, or a field the table does not know.
    NotCollection,
    /// A list replaced as a whole (also apply's default for unmarked lists).
    Atomic,
    /// A list of scalars merged as a set.
    Set,
    /// A list of objects merged by the values of these keys.
    Map { keys: &'static [&'static str] },
    /// A string-keyed map replaced as a whole.
    MapAtomic,
    /// A string-keyed map merged key by key.
    MapGranular,
}

/// The strategic-merge-patch rules of one field (Go tags `patchStrategy` and
/// `patchMergeKey`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PatchMeta {
    /// `patchStrategy` contains `merge`: lists merge instead of being replaced.
    pub merge: bool,
    /// `patchStrategy` contains `replace`: an object is replaced, not merged.
    pub replace: bool,
    /// `patchStrategy` contains `retainKeys`: clients send `$retainKeys`.
    pub retain_keys: bool,
    /// `patchMergeKey`, the key identifying items of a merged list of objects.
    pub merge_key: Option<&'static str>,
}

/// One struct definition of the table.
#[derive(Debug)]
struct TypeInfo {
    name: &'static str,
    /// Sorted by `name`.
    fields: &'static [FieldInfo],
}

/// One field of a struct; only fields with a rule or an object type are listed.
#[derive(Debug)]
struct FieldInfo {
    name: &'static str,
    /// Definition of the field's object type, or of the items of a list/map.
    item: Option<&'static str>,
    apply: ListStrategy,
    /// Raw Go tag, e.g. `merge,retainKeys`.
    patch_strategy: &'static str,
    merge_key: &'static str,
}

fn lookup_type(name: &str) -> Option<&'static TypeInfo> {
    table::TYPES
        .binary_search_by(|t| t.name.cmp(name))
        .ok()
        .and_then(|i| table::TYPES.get(i))
}

fn lookup_field(type_name: &str, field: &str) -> Option<&'static FieldInfo> {
    lookup_type(type_name).and_then(|t| t.field(field))
}

impl TypeInfo {
    fn field(&self, name: &str) -> Option<&'static FieldInfo> {
        let fields: &'static [FieldInfo] = self.fields;
        fields
            .binary_search_by(|f| f.name.cmp(name))
            .ok()
            .and_then(|i| fields.get(i))
    }
}

impl FieldInfo {
    fn patch_meta(&self) -> PatchMeta {
        let mut meta = PatchMeta::default();
        for strategy in self.patch_strategy.split(',') {
            match strategy {
                MERGE => meta.merge = true,
                REPLACE => meta.replace = true,
                RETAIN_KEYS => meta.retain_keys = true,
                _ => {}
            }
        }
        if !self.merge_key.is_empty() {
            meta.merge_key = Some(self.merge_key);
        }
        meta
    }

    fn is_map(&self) -> bool {
        matches!(
            self.apply,
            ListStrategy::MapAtomic | ListStrategy::MapGranular
        )
    }
}

/// Applies a strategic merge patch to `original`, both JSON objects of the type
/// whose OpenAPI definition name is `type_name` (e.g. "io.k8s.api.apps.v1.Deployment").
pub fn strategic_merge(
    original: &Value,
    patch: &Value,
    type_name: &str,
) -> std::result::Result<Value, StrategicError> {
    let ty =
        lookup_type(type_name).ok_or_else(|| StrategicError::UnknownType(type_name.to_owned()))?;
    let (Some(original), Some(patch)) = (original.as_object(), patch.as_object()) else {
        return Err(StrategicError::BadRequest("invalid JSON document".into()));
    };
    merge_map(original.clone(), patch.clone(), Schema::Struct(ty)).map(Value::Object)
}

/// True if strategic merge patch is supported for this type (a struct
/// definition of the built-in types known to k8s-openapi).
pub fn supports(type_name: &str) -> bool {
    lookup_type(type_name).is_some()
}

/// Server-side-apply merge rules of one field (from k8s-openapi).
pub fn list_strategy(type_name: &str, field: &str) -> ListStrategy {
    lookup_field(type_name, field).map_or(ListStrategy::NotCollection, |f| f.apply)
}

/// Strategic-merge-patch rules of one field; all-default for unknown fields.
pub fn patch_meta(type_name: &str, field: &str) -> PatchMeta {
    lookup_field(type_name, field).map_or_else(PatchMeta::default, FieldInfo::patch_meta)
}

/// Definition name of the field's type: the object type itself, or the item
/// type of a list or string-keyed map. `None` for scalars (including
/// Quantity, IntOrString, Time) and unknown fields.
pub fn field_type(type_name: &str, field: &str) -> Option<&'static str> {
    lookup_field(type_name, field).and_then(|f| f.item)
}

/// What is known about the object being merged.
#[derive(Clone, Copy)]
enum Schema {
    /// Not in the table: maps merge, lists are replaced.
    Unknown,
    Struct(&'static TypeInfo),
    /// A string-keyed map whose values are of this type (if an object).
    MapOf(Option<&'static TypeInfo>),
}

impl Schema {
    fn field(self, key: &str) -> Option<&'static FieldInfo> {
        match self {
            Schema::Struct(t) => t.field(key),
            _ => None,
        }
    }

    fn meta(self, key: &str) -> PatchMeta {
        self.field(key)
            .map_or_else(PatchMeta::default, FieldInfo::patch_meta)
    }

    /// Schema of the object stored under `key`.
    fn child(self, key: &str) -> Schema {
        match self {
            Schema::Struct(t) => match t.field(key) {
                Some(f) if f.is_map() => Schema::MapOf(f.item.and_then(lookup_type)),
                Some(f) => Self::of(f.item),
                None => Schema::Unknown,
            },
            Schema::MapOf(t) => t.map_or(Schema::Unknown, Schema::Struct),
            Schema::Unknown => Schema::Unknown,
        }
    }

    /// Schema of the items of the list stored under `key`.
    fn items(self, key: &str) -> Schema {
        Self::of(self.field(key).and_then(|f| f.item))
    }

    fn of(item: Option<&str>) -> Schema {
        item.and_then(lookup_type)
            .map_or(Schema::Unknown, Schema::Struct)
    }
}

/// Splits `$prefix/field` into `field`; anything else is a malformed directive.
fn extract_key<'a>(key: &'a str, prefix: &str) -> Result<&'a str> {
    match key.split_once('/') {
        Some((p, rest)) if p == prefix => Ok(rest),
        _ if prefix == SET_ELEMENT_ORDER => Err(StrategicError::BadRequest(
            "invalid patch format of setElementOrder list".into(),
        )),
        _ => Err(StrategicError::BadRequest(
            "invalid patch format of primitive list".into(),
        )),
    }
}

fn merge_map(
    mut original: Map<String, Value>,
    mut patch: Map<String, Value>,
    schema: Schema,
) -> Result<Map<String, Value>> {
    if let Some(directive) = patch.remove(DIRECTIVE) {
        return map_directive(&directive, patch);
    }
    apply_retain_keys(&mut original, &mut patch)?;
    merge_ordered_lists(&mut original, &mut patch, schema)?;

    for (key, patch_value) in patch {
        let (field, delete_list) = if key.starts_with(DELETE_FROM_PRIMITIVE_LIST) {
            (
                extract_key(&key, DELETE_FROM_PRIMITIVE_LIST)?.to_owned(),
                true,
            )
        } else {
            (key, false)
        };
        // A null deletes the field (and, like upstream, also the list a
        // `$deleteFromPrimitiveList/<field>: null` names).
        if patch_value.is_null() {
            original.remove(&field);
            continue;
        }
        // Taken out of its slot (not removed) so key order survives even with
        // serde_json's `preserve_order`.
        let Some(current) = original.get_mut(&field).map(std::mem::take) else {
            if !delete_list {
                if let Some(v) = new_value(patch_value) {
                    original.insert(field, v);
                }
            }
            continue;
        };
        let merged = match (current, patch_value) {
            (Value::Object(current), Value::Object(patch_map)) => {
                if schema.meta(&field).replace {
                    new_value(Value::Object(patch_map))
                } else {
                    Some(Value::Object(merge_map(
                        current,
                        patch_map,
                        schema.child(&field),
                    )?))
                }
            }
            (Value::Array(current), Value::Array(patch_list)) => {
                let meta = schema.meta(&field);
                if meta.merge || delete_list {
                    let key = meta.merge_key.unwrap_or("");
                    Some(Value::Array(merge_list(
                        current,
                        patch_list,
                        schema.items(&field),
                        key,
                        delete_list,
                    )?))
                } else {
                    new_value(Value::Array(patch_list))
                }
            }
            // A deletion list whose field is not a list leaves it alone.
            (current, patch_value)
                if delete_list && Kind::of(&current) != Kind::of(&patch_value) =>
            {
                Some(current)
            }
            (_, patch_value) => new_value(patch_value),
        };
        match merged {
            Some(v) => {
                original.insert(field, v);
            }
            None => {
                original.remove(&field);
            }
        }
    }
    Ok(original)
}

/// `$patch` inside an object: `replace` keeps only the patch's own content,
/// `delete` empties the object.
fn map_directive(directive: &Value, rest: Map<String, Value>) -> Result<Map<String, Value>> {
    match directive.as_str() {
        Some(REPLACE) => Ok(match new_value(Value::Object(rest)) {
            Some(Value::Object(m)) => m,
            _ => Map::new(),
        }),
        Some(DELETE) => Ok(Map::new()),
        _ => Err(StrategicError::InvalidPatch(format!(
            "unknown patch type: {} in map: {}",
            display_scalar(directive),
            Value::Object(rest)
        ))),
    }
}

fn display_scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `$retainKeys`: drop every field of `original` not listed; every non-null
/// field the patch sets must be listed.
fn apply_retain_keys(
    original: &mut Map<String, Value>,
    patch: &mut Map<String, Value>,
) -> Result<()> {
    let Some(retain) = patch.remove(RETAIN_KEYS_DIRECTIVE) else {
        return Ok(());
    };
    let bad = || StrategicError::BadRequest("invalid patch format of retainKeys".into());
    let Value::Array(keep) = retain else {
        return Err(bad());
    };
    let listed = |k: &str| keep.iter().any(|v| v.as_str() == Some(k));
    for (k, v) in patch.iter() {
        if v.is_null()
            || k.starts_with(DELETE_FROM_PRIMITIVE_LIST)
            || k.starts_with(SET_ELEMENT_ORDER)
        {
            continue;
        }
        if !listed(k) {
            return Err(bad());
        }
    }
    original.retain(|k, _| listed(k));
    Ok(())
}

/// Processes every `$setElementOrder/<field>` together with `<field>`: merges
/// the list and orders it by the directive, then removes both from the patch.
fn merge_ordered_lists(
    original: &mut Map<String, Value>,
    patch: &mut Map<String, Value>,
    schema: Schema,
) -> Result<()> {
    let directives: Vec<String> = patch
        .keys()
        .filter(|k| k.starts_with(SET_ELEMENT_ORDER))
        .cloned()
        .collect();
    for directive in directives {
        let Some(order) = patch.remove(&directive) else {
            continue;
        };
        let Value::Array(order) = order else {
            return Err(bad_arg("list", &order));
        };
        let field = extract_key(&directive, SET_ELEMENT_ORDER)?.to_owned();
        let original_list = match original.get(&field) {
            None => None,
            Some(Value::Array(l)) => Some(l.clone()),
            Some(other) => return Err(bad_arg("list", other)),
        };
        let patch_list = match patch.remove(&field) {
            None => None,
            Some(Value::Array(l)) => Some(l),
            Some(other) => return Err(bad_arg("list", &other)),
        };
        let meta = schema.meta(&field);
        let key = meta.merge_key.unwrap_or("");
        validate_with_order(patch_list.as_deref().unwrap_or(&[]), &order, key)?;

        let mut server_order = original_list.clone().unwrap_or_default();
        let merged = match (&original_list, &patch_list) {
            (Some(o), None) => o.clone(),
            (None, Some(p)) => match new_value(Value::Array(p.clone())) {
                Some(Value::Array(l)) => l,
                _ => Vec::new(),
            },
            (Some(o), Some(p)) => {
                if meta.merge {
                    let (merged, view) = merge_list_with_view(
                        o.clone(),
                        p.clone(),
                        schema.items(&field),
                        key,
                        false,
                    )?;
                    server_order = view;
                    merged
                } else {
                    match new_value(Value::Array(p.clone())) {
                        Some(Value::Array(l)) => l,
                        _ => Vec::new(),
                    }
                }
            }
            (None, None) => continue,
        };
        let (in_order, server_only) = partition(merged, &order, key)?;
        let kind = element_kind(&[&server_order, patch_list.as_deref().unwrap_or(&[])])?;
        let ordered =
            normalize_element_order(in_order, server_only, &order, &server_order, key, kind)?;
        original.insert(field, Value::Array(ordered));
    }
    Ok(())
}

/// Upstream's check that the patch list is a subsequence of the
/// `$setElementOrder` list (deletions and other directive items ignored).
fn validate_with_order(patch: &[Value], order: &[Value], key: &str) -> Result<()> {
    if patch.is_empty() || order.is_empty() {
        return Ok(());
    }
    let mut items = Vec::with_capacity(patch.len());
    for item in patch {
        if !key.is_empty() {
            let Value::Object(m) = item else {
                return Err(bad_arg("map", item));
            };
            if m.get(DIRECTIVE).and_then(Value::as_str) == Some(DELETE) {
                continue;
            }
        }
        items.push(item);
    }
    let (mut p, mut o) = (0, 0);
    while let (Some(item), Some(ordered)) = (items.get(p), order.get(o)) {
        if item.get(DIRECTIVE).is_some() {
            p += 1;
            continue;
        }
        if key_value_equal(item, ordered, key)? {
            p += 1;
        }
        o += 1;
    }
    if p < items.len() {
        return Err(StrategicError::InvalidPatch(format!(
            "The order in patch list:\n{}\n doesn't match $setElementOrder list:\n{}\n",
            Value::Array(patch.to_vec()),
            Value::Array(order.to_vec())
        )));
    }
    Ok(())
}

fn key_value_equal(left: &Value, right: &Value, key: &str) -> Result<bool> {
    if key.is_empty() {
        return Ok(left == right);
    }
    Ok(merge_key_of(left, key)? == merge_key_of(right, key)?)
}

/// The merge-key value of a list item, which must be an object holding it.
fn merge_key_of<'a>(item: &'a Value, key: &str) -> Result<&'a Value> {
    let Value::Object(m) = item else {
        return Err(bad_arg("map", item));
    };
    m.get(key).ok_or_else(|| no_merge_key(m, key))
}

fn no_merge_key(m: &Map<String, Value>, key: &str) -> StrategicError {
    StrategicError::InvalidPatch(format!(
        "map: {} does not contain declared merge key: {key}",
        Value::Object(m.clone())
    ))
}

fn bad_arg(expected: &str, actual: &Value) -> StrategicError {
    StrategicError::InvalidPatch(format!(
        "expected a {expected}, but received a {}",
        Kind::of(actual).name()
    ))
}

/// JSON kinds, standing in for the Go reflect kinds upstream compares.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Null,
    Bool,
    Number,
    String,
    List,
    Map,
}

impl Kind {
    fn of(v: &Value) -> Kind {
        match v {
            Value::Null => Kind::Null,
            Value::Bool(_) => Kind::Bool,
            Value::Number(_) => Kind::Number,
            Value::String(_) => Kind::String,
            Value::Array(_) => Kind::List,
            Value::Object(_) => Kind::Map,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Null => "null",
            Kind::Bool => "bool",
            Kind::Number => "number",
            Kind::String => "string",
            Kind::List => "list",
            Kind::Map => "map",
        }
    }
}

/// The common kind of the items of all lists; lists of lists are refused.
fn element_kind(lists: &[&[Value]]) -> Result<Kind> {
    let mut kind = None;
    for item in lists.iter().flat_map(|l| l.iter()) {
        let k = Kind::of(item);
        match kind {
            None if k == Kind::List => {
                return Err(StrategicError::Unprocessable(
                    "lists of lists are not supported".into(),
                ))
            }
            None => kind = Some(k),
            Some(prev) if prev != k => {
                return Err(StrategicError::InvalidPatch(format!(
                    "list element types are not identical: {}",
                    Value::Array(lists.iter().flat_map(|l| l.iter().cloned()).collect())
                )))
            }
            Some(_) => {}
        }
    }
    kind.ok_or_else(|| {
        StrategicError::InvalidPatch("no elements in any of the given slices".into())
    })
}

/// Merges a list whose field has `patchStrategy: merge` (or a
/// `$deleteFromPrimitiveList` list).
fn merge_list(
    original: Vec<Value>,
    patch: Vec<Value>,
    items: Schema,
    key: &str,
    delete_list: bool,
) -> Result<Vec<Value>> {
    merge_list_with_view(original, patch, items, key, delete_list).map(|(merged, _)| merged)
}

/// [`merge_list`], also returning the live list as upstream sees it afterwards.
///
/// Upstream deletes and appends items of a keyed list in place, in the Go
/// slice it was handed; the caller processing `$setElementOrder` then orders
/// by that same slice (at its original length), so the final order reflects
/// those edits: deletions shift the rest left (the last slot keeps its old
/// value) and appended items fill the slots deletions freed.
fn merge_list_with_view(
    original: Vec<Value>,
    patch: Vec<Value>,
    items: Schema,
    key: &str,
    delete_list: bool,
) -> Result<(Vec<Value>, Vec<Value>)> {
    if original.is_empty() && patch.is_empty() {
        return Ok((Vec::new(), original));
    }
    let kind = element_kind(&[&original, &patch])?;
    if kind != Kind::Map {
        if delete_list {
            let kept = original
                .iter()
                .filter(|v| !patch.contains(v))
                .cloned()
                .collect();
            return Ok((kept, original));
        }
        let mut merged: Vec<Value> = Vec::with_capacity(original.len() + patch.len());
        for v in original.iter().chain(patch.iter()) {
            if !merged.contains(v) {
                merged.push(v.clone());
            }
        }
        let (in_patch, server_only) = partition(merged, &patch, "")?;
        let ordered = normalize_element_order(in_patch, server_only, &patch, &original, "", kind)?;
        return Ok((ordered, original));
    }
    if key.is_empty() {
        return Err(StrategicError::InvalidPatch(
            "cannot merge lists without merge key for struct".into(),
        ));
    }
    let mut view = original;
    let (live, patch, replaced) = apply_item_directives(&mut view, patch, key)?;
    let merged = merge_keyed_items(live.clone(), &patch, key, items)?;
    if !replaced {
        for (slot, item) in view.iter_mut().zip(merged.iter()).skip(live.len()) {
            *slot = item.clone();
        }
    }
    let (in_patch, server_only) = partition(merged, &patch, key)?;
    let ordered = normalize_element_order(in_patch, server_only, &patch, &live, key, kind)?;
    Ok((ordered, view))
}

/// Handles items carrying `$patch`: `delete` removes the matching items,
/// `replace` makes the rest of the patch list the whole list. Deletions edit
/// `view` the way upstream edits its slice. Returns the live items left, the
/// plain patch items, and whether the list was replaced.
fn apply_item_directives(
    view: &mut [Value],
    patch: Vec<Value>,
    key: &str,
) -> Result<(Vec<Value>, Vec<Value>, bool)> {
    let mut len = view.len();
    let mut plain = Vec::with_capacity(patch.len());
    let mut replace = false;
    for item in patch {
        let Value::Object(m) = &item else {
            return Err(bad_arg("map", &item));
        };
        let Some(directive) = m.get(DIRECTIVE) else {
            plain.push(item);
            continue;
        };
        match directive.as_str() {
            Some(DELETE) => {
                let value = m.get(key).ok_or_else(|| no_merge_key(m, key))?;
                while let Some(at) = find_by_key(view.get(..len).unwrap_or(&[]), key, value)? {
                    // Shift the tail left; the old last slot keeps its value.
                    if let Some(live) = view.get_mut(at..len) {
                        for i in 1..live.len() {
                            live.swap(i - 1, i);
                        }
                        if let (Some(last), Some(prev)) =
                            (live.len().checked_sub(1), live.len().checked_sub(2))
                        {
                            let kept = live[prev].clone();
                            live[last] = kept;
                        }
                    }
                    len -= 1;
                }
            }
            Some(REPLACE) => replace = true,
            Some(MERGE) => {
                return Err(StrategicError::InvalidPatch(
                    "merging lists cannot yet be specified in the patch".into(),
                ))
            }
            _ => {
                return Err(StrategicError::InvalidPatch(format!(
                    "unknown patch type: {} in map: {}",
                    display_scalar(directive),
                    item
                )))
            }
        }
    }
    if replace {
        let list = plain.into_iter().filter_map(new_value).collect();
        return Ok((list, Vec::new(), true));
    }
    Ok((view.get(..len).unwrap_or(&[]).to_vec(), plain, false))
}

/// Index of the first object in `list` whose merge key equals `value`;
/// every item must be an object.
fn find_by_key(list: &[Value], key: &str, value: &Value) -> Result<Option<usize>> {
    for (i, item) in list.iter().enumerate() {
        let Value::Object(m) = item else {
            return Err(not_a_map(i));
        };
        if m.get(key) == Some(value) {
            return Ok(Some(i));
        }
    }
    Ok(None)
}

fn not_a_map(index: usize) -> StrategicError {
    StrategicError::InvalidPatch(format!("value for key {index} is not a map"))
}

/// Merges each patch item into the original item with the same key, or appends it.
fn merge_keyed_items(
    mut original: Vec<Value>,
    patch: &[Value],
    key: &str,
    items: Schema,
) -> Result<Vec<Value>> {
    for item in patch {
        let value = merge_key_of(item, key)?;
        let Value::Object(patch_map) = item else {
            return Err(bad_arg("map", item));
        };
        let found = find_by_key(&original, key, value)?;
        match found.and_then(|i| original.get_mut(i)) {
            Some(slot) => {
                let current = match std::mem::take(slot) {
                    Value::Object(m) => m,
                    _ => Map::new(),
                };
                *slot = Value::Object(merge_map(current, patch_map.clone(), items)?);
            }
            None => {
                if let Some(v) = new_value(item.clone()) {
                    original.push(v);
                }
            }
        }
    }
    Ok(original)
}

/// Splits `merged` into the items present in `by` and the others, keeping order.
fn partition(merged: Vec<Value>, by: &[Value], key: &str) -> Result<(Vec<Value>, Vec<Value>)> {
    let mut present = Vec::new();
    let mut others = Vec::new();
    for item in merged {
        let found = if key.is_empty() {
            by.contains(&item)
        } else {
            find_by_key(by, key, merge_key_of(&item, key)?)?.is_some()
        };
        if found {
            present.push(item);
        } else {
            others.push(item);
        }
    }
    Ok((present, others))
}

/// Orders `patch_items` by `patch_order` and `server_only` by `server_order`,
/// then interleaves them (upstream's `normalizeElementOrder`).
fn normalize_element_order(
    patch_items: Vec<Value>,
    server_only: Vec<Value>,
    patch_order: &[Value],
    server_order: &[Value],
    key: &str,
    kind: Kind,
) -> Result<Vec<Value>> {
    let patch_items = normalize_slice_order(patch_items, patch_order, key, kind)?;
    let server_only = normalize_slice_order(server_only, server_order, key, kind)?;
    Ok(merge_sorted(
        server_only,
        patch_items,
        server_order,
        key,
        kind,
    ))
}

/// Position of `item` in `list`: by merge-key value for objects, by value otherwise.
fn position(list: &[Value], item: &Value, key: &str, kind: Kind) -> Option<usize> {
    if kind == Kind::Map {
        let want = item.as_object().and_then(|m| m.get(key));
        list.iter()
            .position(|v| v.as_object().and_then(|m| m.get(key)) == want)
    } else {
        list.iter().position(|v| v == item)
    }
}

fn normalize_slice_order(
    items: Vec<Value>,
    order: &[Value],
    key: &str,
    kind: Kind,
) -> Result<Vec<Value>> {
    let (mut items, deletions) = if kind == Kind::Map {
        for item in items.iter().chain(order.iter()) {
            merge_key_of(item, key)?;
        }
        items
            .into_iter()
            .partition::<Vec<_>, _>(|v| v.get(DIRECTIVE).and_then(Value::as_str) != Some(DELETE))
    } else {
        (items, Vec::new())
    };
    // Stable: items missing from `order` keep their relative order at the end.
    items.sort_by_key(|v| position(order, v, key, kind).unwrap_or(usize::MAX));
    items.extend(deletions);
    Ok(items)
}

/// Inserts the server-only items (`left`) among the patch items (`right`):
/// a left item goes before the first right item it precedes in the live list;
/// when either is not in the live list the right item comes first.
fn merge_sorted(
    left: Vec<Value>,
    right: Vec<Value>,
    server_order: &[Value],
    key: &str,
    kind: Kind,
) -> Vec<Value> {
    let mut out = Vec::with_capacity(left.len() + right.len());
    let mut left = left.into_iter().peekable();
    let mut right = right.into_iter().peekable();
    loop {
        let take_left = match (left.peek(), right.peek()) {
            (None, None) => break,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some(l), Some(r)) => matches!(
                (position(server_order, l, key, kind), position(server_order, r, key, kind)),
                (Some(li), Some(ri)) if li < ri
            ),
        };
        let next = if take_left { left.next() } else { right.next() };
        out.extend(next);
    }
    out
}

/// A patch value taken as is (the field is new or replaced): drops nulls
/// inside objects, objects carrying `$patch`, and leftover directive keys,
/// as upstream's merge plus decoding into the Go type would.
fn new_value(value: Value) -> Option<Value> {
    match value {
        Value::Object(m) => {
            if m.contains_key(DIRECTIVE) {
                return None;
            }
            let cleaned = m
                .into_iter()
                .filter(|(k, v)| !v.is_null() && !is_directive_key(k))
                .filter_map(|(k, v)| new_value(v).map(|v| (k, v)))
                .collect();
            Some(Value::Object(cleaned))
        }
        Value::Array(items) => Some(Value::Array(
            items.into_iter().filter_map(new_value).collect(),
        )),
        other => Some(other),
    }
}

fn is_directive_key(k: &str) -> bool {
    k == RETAIN_KEYS_DIRECTIVE
        || k.starts_with(SET_ELEMENT_ORDER)
        || k.starts_with(DELETE_FROM_PRIMITIVE_LIST)
}
