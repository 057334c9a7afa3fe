//! The typed walks of structured-merge-diff over JSON values: field sets of
//! an object, merging an applied configuration, comparing two objects, and
//! removing items.

use serde_json::{Map, Value};

use super::set::{values_equal, PathElement, Set};
use super::types::{FieldType, Implicit, ListKind, Shape, TypeInfo, TypeRef};

/// How a node is walked, from its type and its value.
enum Node {
    /// Owned as a whole: scalars, atomic lists/maps/structs, values whose
    /// type does not fit the schema.
    Leaf,
    /// Object with declared fields.
    Struct,
    /// Granular map (declared via the schema, or deduced): every key a member.
    Map,
    /// Set or keyed list.
    List(ListKind),
}

fn classify(types: &dyn TypeInfo, ty: TypeRef<'_>, v: &Value) -> Node {
    match (types.shape(ty), v) {
        (Shape::Struct { atomic: false }, Value::Object(_) | Value::Null) => Node::Struct,
        (Shape::Map { atomic: false }, Value::Object(_) | Value::Null) => Node::Map,
        (Shape::List(k @ (ListKind::Set | ListKind::Map(_))), Value::Array(_) | Value::Null) => {
            Node::List(k)
        }
        (Shape::Deduced, Value::Object(_)) => Node::Map,
        _ => Node::Leaf,
    }
}

/// Type of a map entry, and whether it is a declared field of a struct.
fn entry_type<'a>(
    types: &'a dyn TypeInfo,
    ty: TypeRef<'a>,
    is_struct: bool,
    key: &'a str,
) -> (TypeRef<'a>, bool, Implicit) {
    if is_struct {
        if let Some(FieldType { ty, implicit }) = types.field(ty, key) {
            return (ty, true, implicit);
        }
        return (TypeRef::Deduced, false, Implicit::No);
    }
    (types.element(ty), false, Implicit::No)
}

/// The path element of a list item (upstream `listItemToPathElement`).
pub fn item_pe(kind: &ListKind, item: &Value) -> Result<PathElement, String> {
    match kind {
        ListKind::Map(keys) => {
            let Value::Object(m) = item else {
                return Err(if item.is_null() {
                    "associative list with keys may not have a null element".into()
                } else {
                    "associative list with keys may not have non-map elements".into()
                });
            };
            let mut fields: Vec<(String, Value)> = Vec::with_capacity(keys.len());
            for (k, default) in keys {
                if let Some(v) = m.get(k) {
                    fields.push((k.clone(), v.clone()));
                } else if let Some(d) = default {
                    fields.push((k.clone(), d.clone()));
                }
            }
            if !keys.is_empty() && fields.is_empty() {
                let names: Vec<String> = keys.iter().map(|(k, _)| format!("{k:?}")).collect();
                return Err(format!(
                    "associative list with keys has an element that omits all key fields [{}] (and doesn't have default values for any key fields)",
                    names.join(" ")
                ));
            }
            fields.sort_by(|a, b| a.0.cmp(&b.0));
            Ok(PathElement::Key(fields))
        }
        _ => match item {
            Value::Object(_) => {
                Err("associative list without keys has an element that's a map type".into())
            }
            Value::Array(_) => Err("not supported: associative list with lists as elements".into()),
            Value::Null => {
                Err("associative list without keys has an element that's an explicit null".into())
            }
            v => Ok(PathElement::Value(v.clone())),
        },
    }
}

fn sort_children(children: &mut [(PathElement, Set)]) {
    children.sort_by(|a, b| a.0.cmp(&b.0));
}

fn insert_member(set: &mut Set, pe: PathElement) {
    if let Err(i) = set.members.binary_search(&pe) {
        set.members.insert(i, pe);
    }
}

/// Field set of a value. `strict` (applied configurations) rejects items
/// whose key cannot be computed and duplicate keys; otherwise duplicated
/// items are owned as a whole, like upstream's `AllowDuplicates`.
pub fn to_field_set(
    types: &dyn TypeInfo,
    ty: TypeRef<'_>,
    v: &Value,
    strict: bool,
) -> Result<Set, String> {
    let mut set = Set::new();
    match classify(types, ty, v) {
        Node::Leaf => {}
        node @ (Node::Struct | Node::Map) => {
            let Value::Object(m) = v else {
                return Ok(set);
            };
            let is_struct = matches!(node, Node::Struct);
            for (k, child) in m {
                let (cty, declared, _) = entry_type(types, ty, is_struct, k);
                let sub =
                    to_field_set(types, cty, child, strict).map_err(|e| format!(".{k}{e}"))?;
                let pe = PathElement::Field(k.clone());
                let leaf = matches!(classify(types, cty, child), Node::Leaf);
                let empty_map = child.as_object().is_some_and(Map::is_empty);
                if leaf || child.is_null() || empty_map || !declared {
                    set.members.push(pe.clone());
                }
                if !sub.is_empty() {
                    set.children.push((pe, sub));
                }
            }
        }
        Node::List(kind) => {
            let Value::Array(items) = v else {
                return Ok(set);
            };
            let ety = types.element(ty);
            let mut pes = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                match item_pe(&kind, item) {
                    Ok(pe) => pes.push(Some(pe)),
                    Err(e) if strict => return Err(format!(": element {i}: {e}")),
                    Err(_) => pes.push(None),
                }
            }
            let mut seen: Vec<&PathElement> = pes.iter().flatten().collect();
            seen.sort();
            let dup = |pe: &PathElement| {
                let lo = seen.partition_point(|p| *p < pe);
                seen.get(lo + 1).is_some_and(|p| *p == pe)
            };
            for (item, pe) in items.iter().zip(&pes) {
                let Some(pe) = pe else { continue };
                if dup(pe) {
                    if strict {
                        return Err(format!(": duplicate entries for key {pe}"));
                    }
                    insert_member(&mut set, pe.clone());
                    continue;
                }
                let sub = to_field_set(types, ety, item, strict).map_err(|e| format!("{pe}{e}"))?;
                insert_member(&mut set, pe.clone());
                if !sub.is_empty() {
                    set.children.push((pe.clone(), sub));
                }
            }
            sort_children(&mut set.children);
            set.children.dedup_by(|a, b| a.0 == b.0);
        }
    }
    Ok(set)
}

/// Merges `rhs` (applied configuration) into `lhs` (live): upstream's
/// `TypedValue.Merge` with "keep rhs" at the leaves.
pub fn merge(
    types: &dyn TypeInfo,
    ty: TypeRef<'_>,
    lhs: Option<&Value>,
    rhs: Option<&Value>,
) -> Result<Option<Value>, String> {
    let (l, r) = match (lhs, rhs) {
        (None, None) => return Ok(None),
        (Some(l), None) => return Ok(Some(l.clone())),
        (None, Some(r)) => {
            // Validate the configuration's keys (duplicates) on the way.
            to_field_set(types, ty, r, true)?;
            return Ok(Some(r.clone()));
        }
        (Some(l), Some(r)) => (l, r),
    };
    let node_r = classify(types, ty, r);
    let node_l = classify(types, ty, l);
    match (node_l, node_r) {
        (Node::Struct, Node::Struct) | (Node::Map, Node::Map) => {
            let is_struct = matches!(classify(types, ty, r), Node::Struct);
            let empty = Map::new();
            let lm = l.as_object().unwrap_or(&empty);
            let rm = r.as_object().unwrap_or(&empty);
            if lm.is_empty() && rm.is_empty() {
                return Ok(Some(r.clone()));
            }
            let mut out = Map::new();
            for (k, lv) in lm {
                let (cty, _, _) = entry_type(types, ty, is_struct, k);
                if let Some(v) =
                    merge(types, cty, Some(lv), rm.get(k)).map_err(|e| format!(".{k}{e}"))?
                {
                    out.insert(k.clone(), v);
                }
            }
            for (k, rv) in rm {
                if lm.contains_key(k) {
                    continue;
                }
                let (cty, _, _) = entry_type(types, ty, is_struct, k);
                if let Some(v) =
                    merge(types, cty, None, Some(rv)).map_err(|e| format!(".{k}{e}"))?
                {
                    out.insert(k.clone(), v);
                }
            }
            Ok((!out.is_empty()).then_some(Value::Object(out)))
        }
        (Node::List(kind), Node::List(_)) => merge_list(types, ty, &kind, l, r),
        (_, node_r) => {
            if !matches!(node_r, Node::Leaf) {
                to_field_set(types, ty, r, true)?;
            }
            Ok(Some(r.clone()))
        }
    }
}

fn merge_list(
    types: &dyn TypeInfo,
    ty: TypeRef<'_>,
    kind: &ListKind,
    l: &Value,
    r: &Value,
) -> Result<Option<Value>, String> {
    let empty = Vec::new();
    let litems = l.as_array().unwrap_or(&empty);
    let ritems = r.as_array().unwrap_or(&empty);
    if litems.is_empty() && ritems.is_empty() {
        return Ok(Some(r.clone()));
    }
    let ety = types.element(ty);
    // Index both sides; the configuration may not repeat a key, the live
    // object may (a duplicated live item merges as null).
    let mut rpes = Vec::with_capacity(ritems.len());
    for (i, item) in ritems.iter().enumerate() {
        let pe = item_pe(kind, item).map_err(|e| format!(": element {i}: {e}"))?;
        if rpes.iter().any(|(p, _)| *p == pe) {
            return Err(format!(": duplicate entries for key {pe}"));
        }
        rpes.push((pe, item));
    }
    let mut lpes: Vec<(PathElement, &Value)> = Vec::with_capacity(litems.len());
    let null = Value::Null;
    let mut lobserved: Vec<(PathElement, &Value)> = Vec::new();
    for (i, item) in litems.iter().enumerate() {
        let pe = item_pe(kind, item).map_err(|e| format!(": element {i}: {e}"))?;
        if let Some(slot) = lobserved.iter_mut().find(|(p, _)| *p == pe) {
            slot.1 = &null;
        } else {
            lobserved.push((pe.clone(), item));
        }
        lpes.push((pe, item));
    }
    let lget = |pe: &PathElement| lobserved.iter().find(|(p, _)| p == pe).map(|(_, v)| *v);
    let rget = |pe: &PathElement| rpes.iter().find(|(p, _)| p == pe).map(|(_, v)| *v);

    // upstream's order: live order, with configuration items placed so the
    // items both share keep the configuration's relative order.
    let mut shared: std::collections::VecDeque<&PathElement> = rpes
        .iter()
        .map(|(p, _)| p)
        .filter(|p| lget(p).is_some())
        .collect();
    let mut next_shared = shared.pop_front();
    let mut merged_rhs: Vec<&PathElement> = Vec::new();
    let mut out = Vec::with_capacity(litems.len().max(ritems.len()));
    let (mut li, mut ri) = (0, 0);
    while li < lpes.len() || ri < rpes.len() {
        if li < lpes.len() && ri < rpes.len() {
            let pe = &lpes[li].0;
            if *pe == rpes[ri].0 {
                merged_rhs.push(pe);
                let v = merge(types, ety, lget(pe), rget(pe)).map_err(|e| format!("{pe}{e}"))?;
                out.extend(v);
                li += 1;
                ri += 1;
                next_shared = shared.pop_front();
                continue;
            }
            if rget(pe).is_some() && next_shared.is_some_and(|n| n != pe) {
                li += 1;
                continue;
            }
        }
        if li < lpes.len() {
            let pe = &lpes[li].0;
            if rget(pe).is_none() {
                let v = merge(types, ety, Some(lpes[li].1), None)?;
                out.extend(v);
                li += 1;
                continue;
            } else if merged_rhs.contains(&pe) {
                li += 1;
            }
        }
        if ri < rpes.len() {
            let pe = &rpes[ri].0;
            merged_rhs.push(pe);
            let v = merge(types, ety, lget(pe), rget(pe)).map_err(|e| format!("{pe}{e}"))?;
            out.extend(v);
            ri += 1;
            if next_shared.is_some_and(|n| n == pe) {
                next_shared = shared.pop_front();
            }
        }
    }
    Ok((!out.is_empty()).then_some(Value::Array(out)))
}

/// Fields removed, modified and added between two objects.
#[derive(Debug, Default)]
pub struct Comparison {
    pub removed: Set,
    pub modified: Set,
    pub added: Set,
}

#[derive(Clone, Copy)]
enum Change {
    Removed,
    Modified,
    Added,
}

impl Comparison {
    fn attach(&mut self, pe: &PathElement, sub: Comparison, own: Option<Change>) {
        for (dst, src) in [
            (&mut self.removed, sub.removed),
            (&mut self.modified, sub.modified),
            (&mut self.added, sub.added),
        ] {
            if !src.is_empty() {
                dst.children.push((pe.clone(), src));
            }
        }
        match own {
            Some(Change::Removed) => insert_member(&mut self.removed, pe.clone()),
            Some(Change::Modified) => insert_member(&mut self.modified, pe.clone()),
            Some(Change::Added) => insert_member(&mut self.added, pe.clone()),
            None => {}
        }
    }

    fn sort(&mut self) {
        for s in [&mut self.removed, &mut self.modified, &mut self.added] {
            sort_children(&mut s.children);
        }
    }
}

/// upstream `TypedValue.Compare`, with Go's always-present fields (see
/// [`Implicit`]) treated as present on both sides.
pub fn compare(types: &dyn TypeInfo, ty: TypeRef<'_>, lhs: &Value, rhs: &Value) -> Comparison {
    compare_node(types, ty, Some(lhs), Some(rhs), Skip::Nothing).0
}

/// [`compare`] of two whole objects as if neither had
/// `metadata.managedFields`, which saves copying them without it.
pub fn compare_objects(
    types: &dyn TypeInfo,
    ty: TypeRef<'_>,
    lhs: &Value,
    rhs: &Value,
) -> Comparison {
    compare_node(types, ty, Some(lhs), Some(rhs), Skip::Root).0
}

/// Where the comparison stands relative to `metadata.managedFields`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Skip {
    Nothing,
    /// At the object: its `metadata` holds the field to skip.
    Root,
    /// At `metadata`: skip `managedFields`.
    Metadata,
}

fn compare_node(
    types: &dyn TypeInfo,
    ty: TypeRef<'_>,
    lhs: Option<&Value>,
    rhs: Option<&Value>,
    skip: Skip,
) -> (Comparison, Option<Change>) {
    let mut cmp = Comparison::default();
    // Identical subtrees hold no change. Checking first costs one scan
    // without allocation, where the walk below allocates path elements for
    // every field; most updates touch a small part of a large object.
    if let (Some(l), Some(r)) = (lhs, rhs) {
        if values_equal(l, r) {
            return (cmp, None);
        }
    }
    let own_presence = match (lhs, rhs) {
        (None, _) => Some(Change::Added),
        (_, None) => Some(Change::Removed),
        _ => None,
    };
    let lnode = lhs.map(|l| classify(types, ty, l));
    let rnode = rhs.map(|r| classify(types, ty, r));
    // Kinds that differ between the sides are compared as leaves.
    let same_kind = match (lhs, rhs, &lnode, &rnode) {
        (Some(l), Some(r), Some(a), Some(b)) => {
            l.is_null() || r.is_null() || std::mem::discriminant(a) == std::mem::discriminant(b)
        }
        _ => true,
    };
    let node = match (rhs, rnode, lnode) {
        (Some(r), Some(n), _) if !r.is_null() => n,
        (_, _, Some(n)) => n,
        (_, Some(n), None) => n,
        _ => Node::Leaf,
    };
    let leaf = |cmp: Comparison| {
        let change = match (lhs, rhs) {
            (None, _) => Some(Change::Added),
            (_, None) => Some(Change::Removed),
            (Some(l), Some(r)) => (!values_equal(l, r)).then_some(Change::Modified),
        };
        (cmp, change)
    };
    if !same_kind {
        return leaf(cmp);
    }
    match node {
        Node::Leaf => leaf(cmp),
        node @ (Node::Struct | Node::Map) => {
            let empty = Map::new();
            let lm = lhs.and_then(Value::as_object).unwrap_or(&empty);
            let rm = rhs.and_then(Value::as_object).unwrap_or(&empty);
            if lm.is_empty() && rm.is_empty() {
                return leaf(cmp);
            }
            let is_struct = matches!(node, Node::Struct);
            let empty_obj = Value::Object(Map::new());
            let null = Value::Null;
            let implicit_value = |imp: Implicit| match imp {
                Implicit::No => None,
                Implicit::Empty => Some(&empty_obj),
                Implicit::Null => Some(&null),
            };
            // The union of keys, in order (children are pushed sorted).
            let mut keys: Vec<&String> = lm
                .keys()
                .chain(rm.keys().filter(|k| !lm.contains_key(*k)))
                .collect();
            keys.sort_unstable();
            for k in keys {
                let child_skip = match (skip, k.as_str()) {
                    (Skip::Metadata, "managedFields") => continue,
                    (Skip::Root, "metadata") => Skip::Metadata,
                    _ => Skip::Nothing,
                };
                let (lv, rv) = (lm.get(k), rm.get(k));
                let (cty, _, implicit) = entry_type(types, ty, is_struct, k);
                // Sides that exist in the live object only as Go's zero value.
                let present = |v: Option<&Value>| v.is_some_and(|v| !v.is_null());
                let (lv, rv) = match (lv, rv, present(lhs), present(rhs)) {
                    (None, Some(r), true, _) => (implicit_value(implicit), Some(r)),
                    (Some(l), None, _, true) => (Some(l), implicit_value(implicit)),
                    (l, r, _, _) => (l, r),
                };
                if lv.is_none() && rv.is_none() {
                    continue;
                }
                let (sub, own) = compare_node(types, cty, lv, rv, child_skip);
                cmp.attach(&PathElement::Field(k.clone()), sub, own);
            }
            (cmp, own_presence)
        }
        Node::List(kind) => {
            let empty = Vec::new();
            let litems = lhs.and_then(Value::as_array).unwrap_or(&empty);
            let ritems = rhs.and_then(Value::as_array).unwrap_or(&empty);
            if litems.is_empty() && ritems.is_empty() {
                return leaf(cmp);
            }
            let ety = types.element(ty);
            let mut all: Vec<PathElement> = Vec::new();
            let mut lvals: Vec<(PathElement, Vec<&Value>)> = Vec::new();
            for item in litems {
                let Ok(pe) = item_pe(&kind, item) else {
                    continue;
                };
                match lvals.iter_mut().find(|(p, _)| *p == pe) {
                    Some(slot) => slot.1.push(item),
                    None => {
                        lvals.push((pe.clone(), vec![item]));
                        all.push(pe);
                    }
                }
            }
            let mut rvals: Vec<(PathElement, Vec<&Value>)> = Vec::new();
            for item in ritems {
                let Ok(pe) = item_pe(&kind, item) else {
                    continue;
                };
                match rvals.iter_mut().find(|(p, _)| *p == pe) {
                    Some(slot) => slot.1.push(item),
                    None => {
                        if !lvals.iter().any(|(p, _)| *p == pe) {
                            all.push(pe.clone());
                        }
                        rvals.push((pe, vec![item]));
                    }
                }
            }
            fn get<'v>(vals: &[(PathElement, Vec<&'v Value>)], pe: &PathElement) -> Vec<&'v Value> {
                vals.iter()
                    .find(|(p, _)| p == pe)
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default()
            }
            for pe in all {
                let (ll, rl) = (get(&lvals, &pe), get(&rvals, &pe));
                if ll.len() <= 1 && rl.len() <= 1 {
                    let (sub, own) = compare_node(
                        types,
                        ety,
                        ll.first().copied(),
                        rl.first().copied(),
                        Skip::Nothing,
                    );
                    cmp.attach(&pe, sub, own);
                } else if ll.len() >= 2 && rl.len() >= 2 {
                    let equal =
                        ll.len() == rl.len() && ll.iter().zip(&rl).all(|(a, b)| values_equal(a, b));
                    if !equal {
                        insert_member(&mut cmp.modified, pe);
                    }
                } else if ll.len() >= 2 {
                    if let Some(r) = rl.first() {
                        let (sub, own) = compare_node(types, ety, None, Some(r), Skip::Nothing);
                        cmp.attach(&pe, sub, own);
                    }
                    insert_member(&mut cmp.removed, pe);
                } else {
                    if let Some(l) = ll.first() {
                        let (sub, own) = compare_node(types, ety, Some(l), None, Skip::Nothing);
                        cmp.attach(&pe, sub, own);
                    }
                    insert_member(&mut cmp.added, pe);
                }
            }
            cmp.sort();
            merge_duplicate_children(&mut cmp);
            (cmp, own_presence)
        }
    }
}

fn merge_duplicate_children(cmp: &mut Comparison) {
    for s in [&mut cmp.removed, &mut cmp.modified, &mut cmp.added] {
        let mut merged: Vec<(PathElement, Set)> = Vec::with_capacity(s.children.len());
        for (pe, sub) in std::mem::take(&mut s.children) {
            match merged.last_mut() {
                Some((p, existing)) if *p == pe => *existing = existing.union(&sub),
                _ => merged.push((pe, sub)),
            }
        }
        s.children = merged;
    }
}

/// upstream `RemoveItems`: drops the members of `set` from the value.
/// `None` stands for upstream's null (a container left empty).
pub fn remove_items(types: &dyn TypeInfo, ty: TypeRef<'_>, v: &Value, set: &Set) -> Option<Value> {
    match classify(types, ty, v) {
        Node::Leaf => match (types.shape(ty), v) {
            // Atomic or mistyped containers reached by a removal come back
            // null, like upstream.
            (_, Value::Array(_)) | (Shape::Struct { .. } | Shape::Map { .. }, Value::Object(_)) => {
                None
            }
            _ => Some(v.clone()),
        },
        node @ (Node::Struct | Node::Map) => {
            let m = v.as_object()?;
            let is_struct = matches!(node, Node::Struct);
            let mut out = Map::new();
            for (k, child) in m {
                let pe = PathElement::Field(k.clone());
                if set.has_member(&pe) {
                    continue;
                }
                let child = match set.child(&pe) {
                    Some(sub) if !sub.is_empty() => {
                        let (cty, _, _) = entry_type(types, ty, is_struct, k);
                        match remove_items(types, cty, child, sub) {
                            Some(c) => c,
                            None if types.keeps_nulls() => Value::Null,
                            None => continue,
                        }
                    }
                    _ => child.clone(),
                };
                out.insert(k.clone(), child);
            }
            (!out.is_empty()).then_some(Value::Object(out))
        }
        Node::List(kind) => {
            let items = v.as_array()?;
            let ety = types.element(ty);
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                let Ok(pe) = item_pe(&kind, item) else {
                    out.push(item.clone());
                    continue;
                };
                if set.has_member(&pe) {
                    continue;
                }
                match set.child(&pe) {
                    Some(sub) if !sub.is_empty() => {
                        out.push(remove_items(types, ety, item, sub).unwrap_or(Value::Null))
                    }
                    _ => out.push(item.clone()),
                }
            }
            (!out.is_empty()).then_some(Value::Array(out))
        }
    }
}

/// upstream `EnsureNamedFieldsAreMembers`: declared struct fields with owned
/// descendants become members themselves.
pub fn ensure_named_fields_are_members(
    types: &dyn TypeInfo,
    ty: Option<TypeRef<'_>>,
    set: &Set,
) -> Set {
    let shape = ty.map(|t| types.shape(t));
    let mut out = Set {
        members: set.members.clone(),
        children: Vec::with_capacity(set.children.len()),
    };
    for (pe, sub) in &set.children {
        let child_ty = match (pe, ty, &shape) {
            (PathElement::Field(k), Some(t), Some(Shape::Struct { .. })) => {
                match types.field(t, k) {
                    Some(f) => {
                        insert_member(&mut out, pe.clone());
                        Some(f.ty)
                    }
                    None => Some(TypeRef::Deduced),
                }
            }
            (PathElement::Field(_), Some(t), Some(Shape::Map { .. })) => Some(types.element(t)),
            (PathElement::Key(_), Some(t), Some(Shape::List(_))) => Some(types.element(t)),
            _ => None,
        };
        out.children.push((
            pe.clone(),
            ensure_named_fields_are_members(types, child_ty, sub),
        ));
    }
    out
}

/// Drops `null` entries of objects (what decoding into Go structs does).
pub fn drop_nulls(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|_, v| !v.is_null());
            m.values_mut().for_each(drop_nulls);
        }
        Value::Array(items) => items.iter_mut().for_each(drop_nulls),
        _ => {}
    }
}
