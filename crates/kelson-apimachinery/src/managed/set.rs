//! Field sets (structured-merge-diff `fieldpath.Set`) and their FieldsV1
//! encoding.
//!
//! A set is a tree: `members` are path elements owned themselves, `children`
//! are path elements with owned descendants. Both are kept sorted in
//! upstream's order (fields, then keys, then values, then indices) because the
//! FieldsV1 encoding is written in that order.

use std::cmp::Ordering;
use std::fmt::Write as _;

use serde_json::{Map, Value};

use crate::labels::go_quote;

/// One step of a path.
#[derive(Debug, Clone)]
pub enum PathElement {
    /// `f:<name>`: a field of a struct or a key of a map.
    Field(String),
    /// `k:{...}`: an item of a keyed list, by its key fields (sorted by name).
    Key(Vec<(String, Value)>),
    /// `v:<json>`: an item of a set list.
    Value(Value),
    /// `i:<n>`: an item by position (only read; upstream never writes these
    /// for the built-in or CRD schemas).
    Index(i64),
}

impl PartialEq for PathElement {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for PathElement {}
impl PartialOrd for PathElement {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for PathElement {
    fn cmp(&self, other: &Self) -> Ordering {
        use PathElement::*;
        fn rank(p: &PathElement) -> u8 {
            match p {
                Field(_) => 0,
                Key(_) => 1,
                Value(_) => 2,
                Index(_) => 3,
            }
        }
        match (self, other) {
            (Field(a), Field(b)) => a.cmp(b),
            (Key(a), Key(b)) => {
                for (x, y) in a.iter().zip(b) {
                    let c = x.0.cmp(&y.0).then_with(|| compare_values(&x.1, &y.1));
                    if c != Ordering::Equal {
                        return c;
                    }
                }
                a.len().cmp(&b.len())
            }
            (Value(a), Value(b)) => compare_values(a, b),
            (Index(a), Index(b)) => a.cmp(b),
            _ => rank(self).cmp(&rank(other)),
        }
    }
}

impl std::fmt::Display for PathElement {
    /// Upstream's `PathElement.String()`: `.name`, `[k1=v1,k2=v2]`, `[=v]`, `[i]`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PathElement::Field(name) => write!(f, ".{name}"),
            PathElement::Key(fields) => {
                f.write_str("[")?;
                for (i, (k, v)) in fields.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{k}={}", value_to_string(v))?;
                }
                f.write_str("]")
            }
            PathElement::Value(v) => write!(f, "[={}]", value_to_string(v)),
            PathElement::Index(i) => write!(f, "[{i}]"),
        }
    }
}

/// Formats a path as upstream prints it in conflicts, e.g. `.spec.replicas`.
pub fn path_string(path: &[PathElement]) -> String {
    let mut s = String::new();
    for pe in path {
        let _ = write!(s, "{pe}");
    }
    s
}

/// upstream `value.ToString`: strings quoted Go-style, maps as `k=v` pairs.
fn value_to_string(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => i.to_string(),
            (_, Some(u)) => u.to_string(),
            _ => n.as_f64().map_or_else(String::new, go_float),
        },
        Value::String(s) => go_quote(s),
        Value::Array(items) => {
            let parts: Vec<String> = items.iter().map(value_to_string).collect();
            format!("[{}]", parts.join(","))
        }
        Value::Object(m) => m
            .iter()
            .map(|(k, v)| format!("{k}={}", value_to_string(v)))
            .collect(),
    }
}

/// Go's `%v` of a float64 (shortest representation, `e+NN` exponents).
fn go_float(f: f64) -> String {
    let abs = f.abs();
    if abs != 0.0 && !(1e-4..1e21).contains(&abs) {
        let s = format!("{f:e}");
        match s.split_once('e') {
            Some((m, e)) => {
                let (sign, digits) = e.strip_prefix('-').map_or(("+", e), |d| ("-", d));
                format!("{m}e{sign}{digits:0>2}")
            }
            None => s,
        }
    } else {
        format!("{f}")
    }
}

/// upstream `value.Compare`: numbers (int and float compared numerically) <
/// strings < booleans < lists < maps < null.
pub fn compare_values(a: &Value, b: &Value) -> Ordering {
    fn rank(v: &Value) -> u8 {
        match v {
            Value::Number(_) => 0,
            Value::String(_) => 1,
            Value::Bool(_) => 2,
            Value::Array(_) => 3,
            Value::Object(_) => 4,
            Value::Null => 5,
        }
    }
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            if let (Some(x), Some(y)) = (x.as_i64(), y.as_i64()) {
                x.cmp(&y)
            } else if let (Some(x), Some(y)) = (x.as_u64(), y.as_u64()) {
                x.cmp(&y)
            } else {
                let (x, y) = (x.as_f64().unwrap_or(0.0), y.as_f64().unwrap_or(0.0));
                x.partial_cmp(&y).unwrap_or(Ordering::Equal)
            }
        }
        (Value::String(x), Value::String(y)) => x.cmp(y),
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        (Value::Array(x), Value::Array(y)) => {
            for (p, q) in x.iter().zip(y) {
                let c = compare_values(p, q);
                if c != Ordering::Equal {
                    return c;
                }
            }
            x.len().cmp(&y.len())
        }
        (Value::Object(x), Value::Object(y)) => compare_maps(x, y),
        _ => rank(a).cmp(&rank(b)),
    }
}

/// Lexical comparison of maps by sorted keys, then values.
fn compare_maps(x: &Map<String, Value>, y: &Map<String, Value>) -> Ordering {
    // serde_json's map iterates in key order (no preserve_order feature).
    let mut xi = x.iter();
    let mut yi = y.iter();
    loop {
        match (xi.next(), yi.next()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some((xk, xv)), Some((yk, yv))) => {
                let c = match xk.cmp(yk) {
                    // The map holding the smaller key has a value the other
                    // lacks at that position: upstream counts it as smaller.
                    Ordering::Less => Ordering::Less,
                    Ordering::Greater => Ordering::Greater,
                    Ordering::Equal => compare_values(xv, yv),
                };
                if c != Ordering::Equal {
                    return c;
                }
            }
        }
    }
}

/// Value equality as upstream compares leaves (numbers numerically).
pub fn values_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .zip(y.iter())
                    .all(|((xk, xv), (yk, yv))| xk == yk && values_equal(xv, yv))
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| values_equal(p, q))
        }
        _ => compare_values(a, b) == Ordering::Equal,
    }
}

/// A set of paths.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Set {
    /// Sorted, unique.
    pub members: Vec<PathElement>,
    /// Sorted by path element, unique, never empty sets.
    pub children: Vec<(PathElement, Set)>,
}

impl Set {
    pub fn new() -> Self {
        Set::default()
    }

    /// O(1): children are never empty sets (every operation keeps that).
    pub fn is_empty(&self) -> bool {
        self.members.is_empty() && self.children.is_empty()
    }

    /// Inserts a path; the empty path is ignored (the root is never a member).
    pub fn insert(&mut self, path: &[PathElement]) {
        let Some((first, rest)) = path.split_first() else {
            return;
        };
        if rest.is_empty() {
            if let Err(i) = self.members.binary_search(first) {
                self.members.insert(i, first.clone());
            }
        } else {
            self.child_mut(first).insert(rest);
        }
    }

    /// The child set under `pe`, created if missing.
    pub fn child_mut(&mut self, pe: &PathElement) -> &mut Set {
        let i = match self.children.binary_search_by(|(p, _)| p.cmp(pe)) {
            Ok(i) => i,
            Err(i) => {
                self.children.insert(i, (pe.clone(), Set::new()));
                i
            }
        };
        // `i` is in bounds: found or just inserted there.
        &mut self.children[i].1
    }

    pub fn child(&self, pe: &PathElement) -> Option<&Set> {
        self.children
            .binary_search_by(|(p, _)| p.cmp(pe))
            .ok()
            .and_then(|i| self.children.get(i))
            .map(|(_, s)| s)
    }

    pub fn has_member(&self, pe: &PathElement) -> bool {
        self.members.binary_search(pe).is_ok()
    }

    /// Whether the path is in the set (as a member at its last step).
    pub fn has(&self, path: &[PathElement]) -> bool {
        match path.split_first() {
            None => false,
            Some((first, [])) => self.has_member(first),
            Some((first, rest)) => self.child(first).is_some_and(|c| c.has(rest)),
        }
    }

    fn prune_empty(mut self) -> Self {
        for (_, c) in &mut self.children {
            *c = std::mem::take(c).prune_empty();
        }
        self.children.retain(|(_, s)| !s.is_empty());
        self
    }

    pub fn union(&self, other: &Set) -> Set {
        let members = merge_sorted(&self.members, &other.members, |a, b| a.cmp(b), true, true);
        let mut children = Vec::with_capacity(self.children.len().max(other.children.len()));
        let (mut i, mut j) = (0, 0);
        while i < self.children.len() || j < other.children.len() {
            match (self.children.get(i), other.children.get(j)) {
                (Some(a), Some(b)) => match a.0.cmp(&b.0) {
                    Ordering::Less => {
                        children.push(a.clone());
                        i += 1;
                    }
                    Ordering::Greater => {
                        children.push(b.clone());
                        j += 1;
                    }
                    Ordering::Equal => {
                        children.push((a.0.clone(), a.1.union(&b.1)));
                        i += 1;
                        j += 1;
                    }
                },
                (Some(a), None) => {
                    children.push(a.clone());
                    i += 1;
                }
                (None, Some(b)) => {
                    children.push(b.clone());
                    j += 1;
                }
                (None, None) => break,
            }
        }
        Set { members, children }.prune_empty()
    }

    pub fn intersection(&self, other: &Set) -> Set {
        let members = self
            .members
            .iter()
            .filter(|m| other.has_member(m))
            .cloned()
            .collect();
        let children = self
            .children
            .iter()
            .filter_map(|(pe, s)| {
                other
                    .child(pe)
                    .map(|o| (pe.clone(), s.intersection(o)))
                    .filter(|(_, s)| !s.is_empty())
            })
            .collect();
        Set { members, children }
    }

    /// Paths of `self` not in `other` (exact paths).
    pub fn difference(&self, other: &Set) -> Set {
        let members = self
            .members
            .iter()
            .filter(|m| !other.has_member(m))
            .cloned()
            .collect();
        let children = self
            .children
            .iter()
            .filter_map(|(pe, s)| match other.child(pe) {
                Some(o) => Some((pe.clone(), s.difference(o))).filter(|(_, s)| !s.is_empty()),
                None => Some((pe.clone(), s.clone())),
            })
            .collect();
        Set { members, children }
    }

    /// Paths of `self` not in `other` and not below a member of `other`.
    pub fn recursive_difference(&self, other: &Set) -> Set {
        let members = self
            .members
            .iter()
            .filter(|m| !other.has_member(m))
            .cloned()
            .collect();
        let children = self
            .children
            .iter()
            .filter(|(pe, _)| !other.has_member(pe))
            .filter_map(|(pe, s)| match other.child(pe) {
                Some(o) => {
                    Some((pe.clone(), s.recursive_difference(o))).filter(|(_, s)| !s.is_empty())
                }
                None => Some((pe.clone(), s.clone())),
            })
            .collect();
        Set { members, children }
    }

    /// [`Set::difference`] consuming `self` (no copies of what is kept).
    pub fn without(mut self, other: &Set) -> Set {
        if other.is_empty() {
            return self;
        }
        self.members.retain(|m| !other.has_member(m));
        self.children = std::mem::take(&mut self.children)
            .into_iter()
            .filter_map(|(pe, s)| match other.child(&pe) {
                Some(o) => Some((pe, s.without(o))).filter(|(_, s)| !s.is_empty()),
                None => Some((pe, s)),
            })
            .collect();
        self
    }

    /// [`Set::recursive_difference`] consuming `self`.
    pub fn without_recursive(mut self, other: &Set) -> Set {
        if other.is_empty() {
            return self;
        }
        self.members.retain(|m| !other.has_member(m));
        self.children = std::mem::take(&mut self.children)
            .into_iter()
            .filter(|(pe, _)| !other.has_member(pe))
            .filter_map(|(pe, s)| match other.child(&pe) {
                Some(o) => Some((pe, s.without_recursive(o))).filter(|(_, s)| !s.is_empty()),
                None => Some((pe, s)),
            })
            .collect();
        self
    }

    /// Every path of the set, in order.
    pub fn paths(&self) -> Vec<Vec<PathElement>> {
        let mut out = Vec::new();
        self.collect_paths(&mut Vec::new(), &mut out);
        out
    }

    fn collect_paths(&self, prefix: &mut Vec<PathElement>, out: &mut Vec<Vec<PathElement>>) {
        // upstream iterates members first, then children.
        for m in &self.members {
            prefix.push(m.clone());
            out.push(prefix.clone());
            prefix.pop();
        }
        for (pe, s) in &self.children {
            prefix.push(pe.clone());
            s.collect_paths(prefix, out);
            prefix.pop();
        }
    }

    /// The FieldsV1 JSON text, byte for byte as upstream writes it.
    pub fn to_fields_v1(&self) -> String {
        let mut out = String::with_capacity(64);
        out.push('{');
        self.emit(false, &mut out);
        out.push('}');
        out
    }

    fn emit(&self, include_self: bool, out: &mut String) {
        let mut first = true;
        let mut sep = |out: &mut String| {
            if !std::mem::take(&mut first) {
                out.push(',');
            }
        };
        if include_self && !self.is_empty() {
            sep(out);
            out.push_str("\".\":{}");
        }
        let (mut mi, mut ci) = (0, 0);
        loop {
            let m = self.members.get(mi);
            let c = self.children.get(ci);
            let order = match (m, c) {
                (None, None) => break,
                (Some(_), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (Some(m), Some((pe, _))) => m.cmp(pe),
            };
            sep(out);
            match (order, m, c) {
                (Ordering::Less, Some(m), _) => {
                    write_json_string(&serialize_pe(m), out);
                    out.push_str(":{}");
                    mi += 1;
                }
                (Ordering::Greater, _, Some((pe, s))) => {
                    write_json_string(&serialize_pe(pe), out);
                    out.push_str(":{");
                    s.emit(false, out);
                    out.push('}');
                    ci += 1;
                }
                (_, _, Some((pe, s))) => {
                    write_json_string(&serialize_pe(pe), out);
                    out.push_str(":{");
                    s.emit(true, out);
                    out.push('}');
                    mi += 1;
                    ci += 1;
                }
                _ => break,
            }
        }
    }

    /// Parses FieldsV1 JSON (as a value). Unknown element prefixes are
    /// skipped, like upstream.
    pub fn from_fields_v1(v: &Value) -> Result<Set, String> {
        let (set, _) = read_fields(v)?;
        Ok(set.unwrap_or_default())
    }
}

fn read_fields(v: &Value) -> Result<(Option<Set>, bool), String> {
    let Value::Object(map) = v else {
        return Err("expected an object in FieldsV1".into());
    };
    let mut children: Option<Set> = None;
    let mut is_member = false;
    for (key, sub) in map {
        if key == "." {
            is_member = true;
            continue;
        }
        let Some(pe) = deserialize_pe(key)? else {
            continue;
        };
        let (grandchildren, child_is_member) = read_fields(sub)?;
        if child_is_member {
            let set = children.get_or_insert_with(Set::new);
            if let Err(i) = set.members.binary_search(&pe) {
                set.members.insert(i, pe.clone());
            }
        }
        if let Some(g) = grandchildren {
            let set = children.get_or_insert_with(Set::new);
            let slot = set.child_mut(&pe);
            *slot = slot.union(&g);
        }
    }
    if children.is_none() {
        is_member = true;
    }
    Ok((children.map(Set::prune_empty), is_member))
}

fn deserialize_pe(s: &str) -> Result<Option<PathElement>, String> {
    let Some((kind, rest)) = s.split_at_checked(2) else {
        return Err(format!("key must be 2 characters long: {s}"));
    };
    let (Some(t), Some(':')) = (kind.chars().next(), kind.chars().nth(1)) else {
        return Err(format!("missing colon: {s}"));
    };
    Ok(Some(match t {
        'f' => PathElement::Field(rest.to_owned()),
        'v' => PathElement::Value(
            serde_json::from_str(rest).map_err(|e| format!("parsing {s:?}: {e}"))?,
        ),
        'k' => {
            let Value::Object(m) =
                serde_json::from_str(rest).map_err(|e| format!("parsing {s:?}: {e}"))?
            else {
                return Err(format!("key of {s:?} is not an object"));
            };
            // serde_json's map is sorted by key, as upstream sorts key fields.
            PathElement::Key(m.into_iter().collect())
        }
        'i' => PathElement::Index(rest.parse().map_err(|e| format!("parsing {s:?}: {e}"))?),
        _ => return Ok(None),
    }))
}

/// `f:name`, `k:{"a":1,"b":"x"}`, `v:"x"`, `i:3`.
pub fn serialize_pe(pe: &PathElement) -> String {
    let mut out = String::new();
    match pe {
        // Field names are written raw, like upstream (`WriteRaw`).
        PathElement::Field(name) => {
            out.push_str("f:");
            out.push_str(name);
        }
        PathElement::Key(fields) => {
            out.push_str("k:{");
            for (i, (k, v)) in fields.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json_string(k, &mut out);
                out.push(':');
                write_go_json(v, &mut out);
            }
            out.push('}');
        }
        PathElement::Value(v) => {
            out.push_str("v:");
            write_go_json(v, &mut out);
        }
        PathElement::Index(i) => {
            let _ = write!(out, "i:{i}");
        }
    }
    out
}

/// JSON as Go's encoder writes it: sorted keys, HTML-safe escapes.
pub fn write_go_json(v: &Value, out: &mut String) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => {
            let _ = write!(out, "{n}");
        }
        Value::String(s) => write_json_string(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_go_json(item, out);
            }
            out.push(']');
        }
        Value::Object(m) => {
            out.push('{');
            for (i, (k, v)) in m.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json_string(k, out);
                out.push(':');
                write_go_json(v, out);
            }
            out.push('}');
        }
    }
}

/// A JSON string literal with Go's escaping (`<`, `>`, `&`, U+2028/9 as
/// `\u00XX`).
pub fn write_json_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn merge_sorted<T: Clone>(
    a: &[T],
    b: &[T],
    cmp: impl Fn(&T, &T) -> Ordering,
    keep_a_only: bool,
    keep_b_only: bool,
) -> Vec<T> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        match (a.get(i), b.get(j)) {
            (Some(x), Some(y)) => match cmp(x, y) {
                Ordering::Less => {
                    if keep_a_only {
                        out.push(x.clone());
                    }
                    i += 1;
                }
                Ordering::Greater => {
                    if keep_b_only {
                        out.push(y.clone());
                    }
                    j += 1;
                }
                Ordering::Equal => {
                    out.push(x.clone());
                    i += 1;
                    j += 1;
                }
            },
            (Some(x), None) => {
                if keep_a_only {
                    out.push(x.clone());
                }
                i += 1;
            }
            (None, Some(y)) => {
                if keep_b_only {
                    out.push(y.clone());
                }
                j += 1;
            }
            (None, None) => break,
        }
    }
    out
}
