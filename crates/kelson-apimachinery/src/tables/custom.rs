//! Tables for custom resources, driven by a CRD version's
//! `additionalPrinterColumns`, with the JSONPath subset those columns use.

use jiff::Timestamp;
use serde_json::Value;

use super::util::parse_time;
use super::{TableError, AGE_DESC, NAME_DESC};

/// One printer column of a custom resource (owned: it comes from a CRD).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomColumn {
    pub name: String,
    /// "string" | "integer" | "number" | "boolean" | "date"
    pub type_: String,
    pub format: String,
    pub description: String,
    pub priority: i32,
    pub json_path: String,
}

const NAME_PATH: &str = ".metadata.name";

/// The full column list for a CRD version: a leading NAME column, then the
/// version's `additionalPrinterColumns` (`defs`, a JSON array). With no
/// columns defined upstream serves a single AGE column (`date`,
/// `.metadata.creationTimestamp`), and so do we.
pub fn custom_columns(defs: &Value) -> Vec<CustomColumn> {
    let mut cols = vec![CustomColumn {
        name: "Name".into(),
        type_: "string".into(),
        format: "name".into(),
        description: NAME_DESC.into(),
        priority: 0,
        json_path: NAME_PATH.into(),
    }];
    let defs = defs.as_array().map(Vec::as_slice).unwrap_or(&[]);
    if defs.is_empty() {
        cols.push(CustomColumn {
            name: "Age".into(),
            type_: "date".into(),
            format: String::new(),
            description: AGE_DESC.into(),
            priority: 0,
            json_path: ".metadata.creationTimestamp".into(),
        });
        return cols;
    }
    for def in defs {
        let field = |k: &str| def.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
        let json_path = field("jsonPath");
        let description = match field("description") {
            d if d.is_empty() => {
                format!("Custom resource definition column (in JSONPath format): {json_path}")
            }
            d => d,
        };
        cols.push(CustomColumn {
            name: field("name"),
            type_: field("type"),
            format: field("format"),
            description,
            priority: def
                .get("priority")
                .and_then(Value::as_i64)
                .and_then(|p| i32::try_from(p).ok())
                .unwrap_or(0),
            json_path,
        });
    }
    cols
}

/// One row's cells for a custom resource, in the order of `cols`.
///
/// As upstream's CRD table convertor: a missing value is `null`; `string`
/// columns print whatever the path finds (objects and arrays as JSON);
/// other types keep only values of that JSON type; `date` columns become a
/// human age ("5m") computed against `now`, as the server does.
pub fn custom_cells(cols: &[CustomColumn], obj: &Value, now: Timestamp) -> Vec<Value> {
    cols.iter().map(|col| custom_cell(col, obj, now)).collect()
}

/// Checks a printer column's JSONPath the way this module will evaluate it.
pub fn validate_json_path(path: &str) -> Result<(), TableError> {
    parse(path).map(|_| ())
}

fn custom_cell(col: &CustomColumn, obj: &Value, now: Timestamp) -> Value {
    // The leading NAME column is the object's name even when it is absent.
    if col.format == "name" && col.json_path == NAME_PATH {
        return Value::String(
            obj.pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned(),
        );
    }
    // An unparsable path yields empty cells (CRD validation rejects them).
    let Ok(steps) = parse(&col.json_path) else {
        return Value::Null;
    };
    let results = eval(&steps, obj);
    // Only simple paths are expected: the first match is the value.
    let Some(&value) = results.first() else {
        return Value::Null;
    };
    match col.type_.as_str() {
        "string" => Value::String(print_value(value)),
        "integer" => match value {
            Value::Number(n) => n
                .as_i64()
                .or_else(|| n.as_f64().map(|f| f as i64))
                .map_or(Value::Null, Value::from),
            _ => Value::Null,
        },
        "number" => match value {
            Value::Number(n) => n.as_f64().map_or(Value::Null, Value::from),
            _ => Value::Null,
        },
        "boolean" => match value {
            Value::Bool(b) => Value::Bool(*b),
            _ => Value::Null,
        },
        "date" => match value {
            Value::String(raw) if raw.is_empty() || raw == "null" => {
                Value::String("<unknown>".into())
            }
            Value::String(raw) => match raw.parse::<Timestamp>() {
                Ok(_) => Value::String(match parse_time(raw) {
                    Some(t) => super::util::since_time(t, now),
                    None => "<unknown>".into(),
                }),
                Err(_) => Value::String("<invalid>".into()),
            },
            _ => Value::Null,
        },
        _ => Value::Null,
    }
}

/// How client-go's JSONPath printer renders one value.
fn print_value(v: &Value) -> String {
    match v {
        // A present-but-null field prints as Go templates print nil.
        Value::Null => "<no value>".into(),
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => i.to_string(),
            (None, Some(u), _) => u.to_string(),
            (None, None, Some(f)) => go_float(f),
            _ => n.to_string(),
        },
        Value::Array(_) | Value::Object(_) => serde_json::to_string(v).unwrap_or_default(),
    }
}

/// Go's `%v` for a float64: shortest digits, exponent form outside
/// 1e-4 <= |f| < 1e21.
fn go_float(f: f64) -> String {
    let sci = format!("{f:e}");
    let Some((mantissa, exp)) = sci.split_once('e') else {
        return sci;
    };
    let exp: i32 = exp.parse().unwrap_or(0);
    if f != 0.0 && !(-4..21).contains(&exp) {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exp.abs())
    } else {
        format!("{f}")
    }
}

// ---------------------------------------------------------------- JSONPath

#[derive(Debug, Clone, PartialEq)]
enum Selector {
    Name(String),
    Index(i64),
    Wildcard,
}

#[derive(Debug, Clone, PartialEq)]
enum Literal {
    Str(String),
    Num(f64),
    Bool(bool),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone, PartialEq)]
enum Step {
    Child(Vec<Selector>),
    /// `..`: the current values and everything below them.
    Descendants,
    Slice(Option<i64>, Option<i64>, Option<i64>),
    /// `[?(@.path)]` or `[?(@.path op literal)]`.
    Filter(Vec<Step>, Option<(Op, Literal)>),
}

fn invalid(path: &str, reason: impl Into<String>) -> TableError {
    TableError::InvalidJsonPath {
        path: path.to_owned(),
        reason: reason.into(),
    }
}

/// Parses a CRD column path such as `.status.conditions[?(@.type=="Ready")].status`.
fn parse(path: &str) -> Result<Vec<Step>, TableError> {
    let chars: Vec<char> = path.trim().chars().collect();
    let body = match chars.first() {
        Some('$') => &chars[1..],
        Some('.') | Some('[') => &chars[..],
        Some(_) => return Err(invalid(path, "must start with '.' or '['")),
        None => return Err(invalid(path, "empty path")),
    };
    parse_steps(body, path)
}

fn parse_steps(chars: &[char], path: &str) -> Result<Vec<Step>, TableError> {
    let mut steps = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '.' => {
                i += 1;
                if chars.get(i) == Some(&'.') {
                    steps.push(Step::Descendants);
                    i += 1;
                    if chars.get(i) == Some(&'[') {
                        continue;
                    }
                }
                let (name, next) = read_name(chars, i);
                if name.is_empty() {
                    return Err(invalid(path, format!("missing field name at {i}")));
                }
                i = next;
                steps.push(Step::Child(vec![if name == "*" {
                    Selector::Wildcard
                } else {
                    Selector::Name(name)
                }]));
            }
            '[' => {
                let end = closing_bracket(chars, i).ok_or_else(|| invalid(path, "unclosed '['"))?;
                let inner: String = chars[i + 1..end].iter().collect();
                steps.push(parse_bracket(inner.trim(), path)?);
                i = end + 1;
            }
            c => return Err(invalid(path, format!("unexpected {c:?} at {i}"))),
        }
    }
    Ok(steps)
}

/// A field name up to the next unescaped '.' or '['; `\.` escapes a dot.
fn read_name(chars: &[char], mut i: usize) -> (String, usize) {
    let mut name = String::new();
    while let Some(&c) = chars.get(i) {
        match c {
            '\\' if i + 1 < chars.len() => {
                name.push(chars[i + 1]);
                i += 2;
            }
            '.' | '[' => break,
            _ => {
                name.push(c);
                i += 1;
            }
        }
    }
    (name, i)
}

/// Index of the ']' closing the '[' at `open`, skipping quoted text and
/// nested brackets (filters may contain both).
fn closing_bracket(chars: &[char], open: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut quote: Option<char> = None;
    for (i, &c) in chars.iter().enumerate().skip(open) {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"') => quote = Some(c),
            (None, '[') => depth += 1,
            (None, ']') => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
    }
    None
}

fn unquote(s: &str) -> Option<String> {
    let s = s.trim();
    let first = s.chars().next()?;
    if (first == '\'' || first == '"') && s.len() >= 2 && s.ends_with(first) {
        Some(s[1..s.len() - 1].to_owned())
    } else {
        None
    }
}

fn parse_bracket(inner: &str, path: &str) -> Result<Step, TableError> {
    if inner == "*" {
        return Ok(Step::Child(vec![Selector::Wildcard]));
    }
    if let Some(rest) = inner.strip_prefix('?') {
        let rest = rest.trim();
        let expr = rest
            .strip_prefix('(')
            .and_then(|r| r.strip_suffix(')'))
            .ok_or_else(|| invalid(path, "filter must be ?(...)"))?;
        return parse_filter(expr.trim(), path);
    }
    if unquote(inner).is_none() && inner.contains(':') {
        let parts: Vec<&str> = inner.split(':').collect();
        if parts.len() > 3 {
            return Err(invalid(path, "bad slice"));
        }
        let num = |i: usize| -> Result<Option<i64>, TableError> {
            match parts.get(i).map(|p| p.trim()) {
                None | Some("") => Ok(None),
                Some(p) => p
                    .parse()
                    .map(Some)
                    .map_err(|_| invalid(path, format!("bad slice bound {p:?}"))),
            }
        };
        return Ok(Step::Slice(num(0)?, num(1)?, num(2)?));
    }
    let mut sels = Vec::new();
    for part in split_outside_quotes(inner, ',') {
        let part = part.trim();
        if let Some(name) = unquote(part) {
            sels.push(Selector::Name(name));
        } else if let Ok(idx) = part.parse::<i64>() {
            sels.push(Selector::Index(idx));
        } else {
            return Err(invalid(path, format!("unsupported subscript {part:?}")));
        }
    }
    if sels.is_empty() {
        return Err(invalid(path, "empty subscript"));
    }
    Ok(Step::Child(sels))
}

fn split_outside_quotes(s: &str, sep: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut quote: Option<char> = None;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"') => quote = Some(c),
            (None, c) if c == sep => {
                parts.push(&s[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts
}

fn parse_filter(expr: &str, path: &str) -> Result<Step, TableError> {
    // Find the comparison operator outside quotes; two-char ones first.
    let mut quote: Option<char> = None;
    let bytes: Vec<(usize, char)> = expr.char_indices().collect();
    let mut found: Option<(usize, usize, Op)> = None;
    for (k, &(i, c)) in bytes.iter().enumerate() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"') => quote = Some(c),
            (None, '=' | '!' | '<' | '>') => {
                let next = bytes.get(k + 1).map(|&(_, n)| n);
                let op = match (c, next) {
                    ('=', Some('=')) => Some((2, Op::Eq)),
                    ('!', Some('=')) => Some((2, Op::Ne)),
                    ('<', Some('=')) => Some((2, Op::Le)),
                    ('>', Some('=')) => Some((2, Op::Ge)),
                    ('<', _) => Some((1, Op::Lt)),
                    ('>', _) => Some((1, Op::Gt)),
                    _ => None,
                };
                if let Some((len, op)) = op {
                    found = Some((i, len, op));
                    break;
                }
            }
            _ => {}
        }
    }
    let (left, cmp) = match found {
        None => (expr, None),
        Some((at, len, op)) => {
            let right = expr[at + len..].trim();
            let lit = if let Some(s) = unquote(right) {
                Literal::Str(s)
            } else if right == "true" || right == "false" {
                Literal::Bool(right == "true")
            } else if let Ok(n) = right.parse::<f64>() {
                Literal::Num(n)
            } else {
                return Err(invalid(
                    path,
                    format!("unsupported filter operand {right:?}"),
                ));
            };
            (expr[..at].trim(), Some((op, lit)))
        }
    };
    let rel = left
        .strip_prefix('@')
        .ok_or_else(|| invalid(path, "filter must start with '@'"))?;
    let chars: Vec<char> = rel.chars().collect();
    let steps = parse_steps(&chars, path)?;
    Ok(Step::Filter(steps, cmp))
}

fn eval<'a>(steps: &[Step], root: &'a Value) -> Vec<&'a Value> {
    let mut cur = vec![root];
    for step in steps {
        let mut next = Vec::new();
        for v in cur {
            apply(step, v, &mut next);
        }
        cur = next;
    }
    cur
}

fn apply<'a>(step: &Step, v: &'a Value, out: &mut Vec<&'a Value>) {
    match step {
        Step::Child(sels) => {
            for sel in sels {
                match (sel, v) {
                    (Selector::Name(n), Value::Object(m)) => out.extend(m.get(n)),
                    (Selector::Index(i), Value::Array(a)) => {
                        let len = a.len() as i64;
                        let idx = if *i < 0 { len + i } else { *i };
                        if (0..len).contains(&idx) {
                            out.extend(a.get(idx as usize));
                        }
                    }
                    (Selector::Wildcard, Value::Object(m)) => out.extend(m.values()),
                    (Selector::Wildcard, Value::Array(a)) => out.extend(a.iter()),
                    _ => {}
                }
            }
        }
        Step::Descendants => descendants(v, out),
        Step::Slice(start, end, step) => {
            let Value::Array(a) = v else { return };
            let len = a.len() as i64;
            let norm = |x: i64| if x < 0 { (len + x).max(0) } else { x.min(len) };
            let start = norm(start.unwrap_or(0));
            let end = norm(end.unwrap_or(len));
            let step = step.unwrap_or(1);
            if step <= 0 {
                return;
            }
            let mut i = start;
            while i < end {
                out.extend(a.get(i as usize));
                let Some(next) = i.checked_add(step) else {
                    break;
                };
                i = next;
            }
        }
        Step::Filter(left, cmp) => {
            let Value::Array(a) = v else { return };
            for item in a {
                let lefts = eval(left, item);
                let keep = match (cmp, lefts.first()) {
                    (_, None) => false,
                    (None, Some(_)) => true,
                    (Some((op, lit)), Some(l)) => compare(l, *op, lit),
                };
                if keep {
                    out.push(item);
                }
            }
        }
    }
}

fn descendants<'a>(v: &'a Value, out: &mut Vec<&'a Value>) {
    out.push(v);
    match v {
        Value::Object(m) => m.values().for_each(|c| descendants(c, out)),
        Value::Array(a) => a.iter().for_each(|c| descendants(c, out)),
        _ => {}
    }
}

fn compare(left: &Value, op: Op, lit: &Literal) -> bool {
    use std::cmp::Ordering;
    let ord: Option<Ordering> = match (left, lit) {
        (Value::String(l), Literal::Str(r)) => Some(l.as_str().cmp(r.as_str())),
        (Value::Number(l), Literal::Num(r)) => l.as_f64().and_then(|l| l.partial_cmp(r)),
        (Value::Bool(l), Literal::Bool(r)) => Some(l.cmp(r)),
        _ => None,
    };
    match (ord, op) {
        (None, Op::Ne) => true,
        (None, _) => false,
        (Some(o), Op::Eq) => o == Ordering::Equal,
        (Some(o), Op::Ne) => o != Ordering::Equal,
        (Some(o), Op::Lt) => o == Ordering::Less,
        (Some(o), Op::Le) => o != Ordering::Greater,
        (Some(o), Op::Gt) => o == Ordering::Greater,
        (Some(o), Op::Ge) => o != Ordering::Less,
    }
}
