//! Label selectors, as k8s.io/apimachinery/pkg/labels (Kubernetes 1.33):
//! the `?labelSelector=` string syntax, matching against `metadata.labels`,
//! and conversion from a `metav1.LabelSelector` JSON object.
//!
//! Error messages reproduce upstream's text because the API server returns
//! them to clients verbatim (e.g. `unable to parse requirement: ...`).

use std::fmt;

use serde_json::{Map, Value};

/// Errors from parsing or building a selector. `Display` is upstream's text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LabelError {
    /// A syntax or validation error from the string parser.
    #[error("{0}")]
    Parse(String),
    /// A requirement failed upstream's `NewRequirement` checks.
    #[error("{0}")]
    InvalidRequirement(String),
    /// A `matchExpressions` operator other than In/NotIn/Exists/DoesNotExist.
    #[error("{} is not a valid label selector operator", go_quote(.0))]
    InvalidOperator(String),
    /// The LabelSelector JSON has the wrong shape (upstream fails to decode it).
    #[error("invalid label selector: {0}")]
    Malformed(String),
}

/// A requirement's operator; `as_str` gives upstream's `selection.Operator`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operator {
    Equals,
    DoubleEquals,
    NotEquals,
    In,
    NotIn,
    Exists,
    DoesNotExist,
    GreaterThan,
    LessThan,
}

impl Operator {
    pub fn as_str(self) -> &'static str {
        match self {
            Operator::Equals => "=",
            Operator::DoubleEquals => "==",
            Operator::NotEquals => "!=",
            Operator::In => "in",
            Operator::NotIn => "notin",
            Operator::Exists => "exists",
            Operator::DoesNotExist => "!",
            Operator::GreaterThan => "gt",
            Operator::LessThan => "lt",
        }
    }
}

/// One `key op values` term of a selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    key: String,
    operator: Operator,
    values: Vec<String>,
}

impl Requirement {
    /// Validates like upstream `labels.NewRequirement` (key syntax, value
    /// count per operator, integer values for gt/lt, value syntax).
    pub fn new(
        key: &str,
        operator: Operator,
        values: Vec<String>,
    ) -> Result<Requirement, LabelError> {
        let mut errs = Vec::new();
        if let Some(e) = validate_label_key(key, "key") {
            errs.push(e);
        }
        match operator {
            Operator::In | Operator::NotIn if values.is_empty() => errs.push(invalid_list(
                "values",
                &values,
                "for 'in', 'notin' operators, values set can't be empty",
            )),
            Operator::Equals | Operator::DoubleEquals | Operator::NotEquals
                if values.len() != 1 =>
            {
                errs.push(invalid_list(
                    "values",
                    &values,
                    "exact-match compatibility requires one single value",
                ))
            }
            Operator::Exists | Operator::DoesNotExist if !values.is_empty() => {
                errs.push(invalid_list(
                    "values",
                    &values,
                    "values set must be empty for exists and does not exist",
                ))
            }
            Operator::GreaterThan | Operator::LessThan => {
                if values.len() != 1 {
                    errs.push(invalid_list(
                        "values",
                        &values,
                        "for 'Gt', 'Lt' operators, exactly one value is required",
                    ));
                }
                for (i, v) in values.iter().enumerate() {
                    if parse_go_int64(v).is_none() {
                        errs.push(invalid(
                            &format!("values[{i}]"),
                            v,
                            "for 'Gt', 'Lt' operators, the value must be an integer",
                        ));
                    }
                }
            }
            _ => {}
        }
        for (i, v) in values.iter().enumerate() {
            let msgs = label_value_errors(v);
            if !msgs.is_empty() {
                let path = format!("values[{i}][{key}]");
                errs.push(invalid(&path, v, &msgs.join("; ")));
            }
        }
        if errs.is_empty() {
            Ok(Requirement {
                key: key.to_string(),
                operator,
                values,
            })
        } else {
            Err(LabelError::InvalidRequirement(aggregate(errs)))
        }
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    pub fn operator(&self) -> Operator {
        self.operator
    }

    pub fn values(&self) -> &[String] {
        &self.values
    }

    /// Whether a label set satisfies this requirement.
    pub fn matches(&self, labels: &Map<String, Value>) -> bool {
        let found = labels.get(&self.key).map(label_text);
        let has = |v: &str| self.values.iter().any(|x| x == v);
        match self.operator {
            Operator::In | Operator::Equals | Operator::DoubleEquals => {
                found.is_some_and(|v| has(&v))
            }
            Operator::NotIn | Operator::NotEquals => found.is_none_or(|v| !has(&v)),
            Operator::Exists => found.is_some(),
            Operator::DoesNotExist => found.is_none(),
            Operator::GreaterThan | Operator::LessThan => {
                let Some(actual) = found.as_deref().and_then(parse_go_int64) else {
                    return false;
                };
                let [bound] = self.values.as_slice() else {
                    return false;
                };
                let Some(bound) = parse_go_int64(bound) else {
                    return false;
                };
                if self.operator == Operator::GreaterThan {
                    actual > bound
                } else {
                    actual < bound
                }
            }
        }
    }
}

/// Label values are strings; anything else (only in malformed objects) is
/// compared by its JSON text so it can never equal a valid label value.
fn label_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.operator == Operator::DoesNotExist {
            f.write_str("!")?;
        }
        f.write_str(&self.key)?;
        let op = match self.operator {
            Operator::Exists | Operator::DoesNotExist => return Ok(()),
            Operator::Equals => "=",
            Operator::DoubleEquals => "==",
            Operator::NotEquals => "!=",
            Operator::In => " in (",
            Operator::NotIn => " notin (",
            Operator::GreaterThan => ">",
            Operator::LessThan => "<",
        };
        f.write_str(op)?;
        let mut sorted = self.values.clone();
        sorted.sort();
        f.write_str(&sorted.join(","))?;
        if matches!(self.operator, Operator::In | Operator::NotIn) {
            f.write_str(")")?;
        }
        Ok(())
    }
}

/// A conjunction of requirements; no requirements selects everything.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Selector {
    requirements: Vec<Requirement>,
}

impl Selector {
    /// The selector that matches every object (upstream `labels.Everything()`).
    pub fn everything() -> Selector {
        Selector::default()
    }

    /// Builds an equality selector from a label map without validation, like
    /// upstream `SelectorFromSet` (used for e.g. a Service's `spec.selector`).
    /// Non-string values are compared by their JSON text.
    pub fn from_set(set: &Map<String, Value>) -> Selector {
        let mut requirements: Vec<Requirement> = set
            .iter()
            .map(|(k, v)| Requirement {
                key: k.clone(),
                operator: Operator::Equals,
                values: vec![label_text(v)],
            })
            .collect();
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        Selector { requirements }
    }

    /// Adds requirements, keeping them sorted by key as upstream does.
    pub fn with_requirements(mut self, reqs: impl IntoIterator<Item = Requirement>) -> Selector {
        self.requirements.extend(reqs);
        self.requirements.sort_by(|a, b| a.key.cmp(&b.key));
        self
    }

    /// True when there are no requirements (so it matches everything).
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }

    /// Whether the labels satisfy every requirement.
    pub fn matches(&self, labels: &Map<String, Value>) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    /// Matches against `metadata.labels` of an object (absent labels = none).
    pub fn matches_object(&self, obj: &Value) -> bool {
        static EMPTY: std::sync::OnceLock<Map<String, Value>> = std::sync::OnceLock::new();
        let labels = obj
            .pointer("/metadata/labels")
            .and_then(Value::as_object)
            .unwrap_or_else(|| EMPTY.get_or_init(Map::new));
        self.matches(labels)
    }

    /// The value `label` must equal for this selector to match, if the
    /// selector pins it (upstream `RequiresExactMatch`); useful for indexes.
    pub fn requires_exact_match(&self, label: &str) -> Option<&str> {
        let r = self.requirements.iter().find(|r| r.key == label)?;
        match (r.operator, r.values.as_slice()) {
            (Operator::Equals | Operator::DoubleEquals | Operator::In, [v]) => Some(v),
            _ => None,
        }
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for Selector {
    type Err = LabelError;
    fn from_str(s: &str) -> Result<Selector, LabelError> {
        parse(s)
    }
}

/// Parses the `?labelSelector=` string form (upstream `labels.Parse`).
pub fn parse(s: &str) -> Result<Selector, LabelError> {
    let tokens = lex(s);
    let mut p = Parser { tokens, pos: 0 };
    let mut requirements = p.parse().map_err(LabelError::Parse)?;
    // Upstream sorts by key for deterministic output (stable for equal keys).
    requirements.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(Selector { requirements })
}

/// Converts a `metav1.LabelSelector` JSON (upstream `LabelSelectorAsSelector`).
///
/// Returns `Ok(None)` for JSON `null`: upstream's nil selector matches
/// *nothing*, whereas an empty object `{}` gives `Some(everything)`.
pub fn from_label_selector(v: &Value) -> Result<Option<Selector>, LabelError> {
    let obj = match v {
        Value::Null => return Ok(None),
        Value::Object(o) => o,
        _ => return Err(LabelError::Malformed("expected an object".into())),
    };
    let match_labels = match obj.get("matchLabels") {
        None | Some(Value::Null) => None,
        Some(Value::Object(m)) => Some(m),
        Some(_) => {
            return Err(LabelError::Malformed(
                "matchLabels must be an object".into(),
            ))
        }
    };
    let exprs = match obj.get("matchExpressions") {
        None | Some(Value::Null) => &[][..],
        Some(Value::Array(a)) => a.as_slice(),
        Some(_) => {
            return Err(LabelError::Malformed(
                "matchExpressions must be an array".into(),
            ))
        }
    };
    let mut reqs = Vec::new();
    // serde_json maps iterate in key order, so the first error is deterministic.
    for (k, v) in match_labels.into_iter().flatten() {
        let Value::String(val) = v else {
            return Err(LabelError::Malformed(format!(
                "matchLabels[{k}] must be a string"
            )));
        };
        reqs.push(Requirement::new(k, Operator::Equals, vec![val.clone()])?);
    }
    for expr in exprs {
        let key = match expr.get("key") {
            Some(Value::String(s)) => s.as_str(),
            None | Some(Value::Null) => "",
            Some(_) => {
                return Err(LabelError::Malformed(
                    "matchExpressions key must be a string".into(),
                ))
            }
        };
        let op = match expr.get("operator") {
            Some(Value::String(s)) => s.as_str(),
            None | Some(Value::Null) => "",
            Some(_) => {
                return Err(LabelError::Malformed(
                    "matchExpressions operator must be a string".into(),
                ))
            }
        };
        let operator = match op {
            "In" => Operator::In,
            "NotIn" => Operator::NotIn,
            "Exists" => Operator::Exists,
            "DoesNotExist" => Operator::DoesNotExist,
            other => return Err(LabelError::InvalidOperator(other.to_string())),
        };
        let values = match expr.get("values") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(a)) => a
                .iter()
                .map(|x| x.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| {
                    LabelError::Malformed("matchExpressions values must be strings".into())
                })?,
            Some(_) => {
                return Err(LabelError::Malformed(
                    "matchExpressions values must be an array".into(),
                ))
            }
        };
        reqs.push(Requirement::new(key, operator, values)?);
    }
    Ok(Some(Selector::everything().with_requirements(reqs)))
}

// ---------------------------------------------------------------------------
// Lexer and parser, following upstream's token rules and error texts.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tok {
    Error,
    End,
    ClosedPar,
    Comma,
    DoesNotExist,
    DoubleEquals,
    Equals,
    GreaterThan,
    Identifier,
    In,
    LessThan,
    NotEquals,
    NotIn,
    OpenPar,
}

fn keyword(s: &str) -> Option<Tok> {
    Some(match s {
        ")" => Tok::ClosedPar,
        "," => Tok::Comma,
        "!" => Tok::DoesNotExist,
        "==" => Tok::DoubleEquals,
        "=" => Tok::Equals,
        ">" => Tok::GreaterThan,
        "in" => Tok::In,
        "<" => Tok::LessThan,
        "!=" => Tok::NotEquals,
        "notin" => Tok::NotIn,
        "(" => Tok::OpenPar,
        _ => return None,
    })
}

fn is_whitespace(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\r' | b'\n')
}

fn is_special(c: u8) -> bool {
    matches!(c, b'=' | b'!' | b'(' | b')' | b',' | b'>' | b'<')
}

/// Splits the selector into tokens; like upstream, a NUL byte ends input.
fn lex(s: &str) -> Vec<(Tok, String)> {
    let b = s.as_bytes();
    let at = |i: usize| b.get(i).copied().unwrap_or(0);
    let mut pos = 0;
    let mut out = Vec::new();
    loop {
        while is_whitespace(at(pos)) {
            pos += 1;
        }
        let c = at(pos);
        if c == 0 {
            out.push((Tok::End, String::new()));
            return out;
        }
        if is_special(c) {
            // Longest run of special characters that still forms a token.
            let start = pos;
            let mut last: Option<(Tok, usize)> = None;
            while is_special(at(pos)) {
                pos += 1;
                if let Some(t) = keyword(&s[start..pos]) {
                    last = Some((t, pos));
                } else if last.is_some() {
                    pos -= 1;
                    break;
                }
            }
            match last {
                Some((t, end)) => {
                    pos = end;
                    out.push((t, s[start..end].to_string()));
                }
                None => out.push((
                    Tok::Error,
                    format!("error expected: keyword found '{}'", &s[start..pos]),
                )),
            }
        } else {
            let start = pos;
            while !matches!(at(pos), 0) && !is_special(at(pos)) && !is_whitespace(at(pos)) {
                pos += 1;
            }
            let word = &s[start..pos];
            out.push((keyword(word).unwrap_or(Tok::Identifier), word.to_string()));
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Ctx {
    KeyAndOperator,
    Values,
}

struct Parser {
    tokens: Vec<(Tok, String)>,
    pos: usize,
}

const BINARY_OPERATORS: &str = "in, notin, =, ==, !=, gt, lt";

impl Parser {
    fn peek(&self, ctx: Ctx) -> (Tok, String) {
        let (t, l) = self
            .tokens
            .get(self.pos)
            .cloned()
            .unwrap_or((Tok::End, String::new()));
        // In value position the words `in`/`notin` are plain identifiers.
        match (ctx, t) {
            (Ctx::Values, Tok::In | Tok::NotIn) => (Tok::Identifier, l),
            _ => (t, l),
        }
    }

    fn next(&mut self, ctx: Ctx) -> (Tok, String) {
        let r = self.peek(ctx);
        self.pos += 1;
        r
    }

    fn parse(&mut self) -> Result<Vec<Requirement>, String> {
        let mut reqs = Vec::new();
        loop {
            let (tok, lit) = self.peek(Ctx::Values);
            match tok {
                Tok::Identifier | Tok::DoesNotExist => {
                    let r = self
                        .parse_requirement()
                        .map_err(|e| format!("unable to parse requirement: {e}"))?;
                    reqs.push(r);
                    let (t, l) = self.next(Ctx::Values);
                    match t {
                        Tok::End => return Ok(reqs),
                        Tok::Comma => {
                            let (t2, l2) = self.peek(Ctx::Values);
                            if t2 != Tok::Identifier && t2 != Tok::DoesNotExist {
                                return Err(format!(
                                    "found '{l2}', expected: identifier after ','"
                                ));
                            }
                        }
                        _ => return Err(format!("found '{l}', expected: ',' or 'end of string'")),
                    }
                }
                Tok::End => return Ok(reqs),
                _ => {
                    return Err(format!(
                        "found '{lit}', expected: !, identifier, or 'end of string'"
                    ))
                }
            }
        }
    }

    fn parse_requirement(&mut self) -> Result<Requirement, String> {
        let (key, inferred) = self.parse_key_and_infer_operator()?;
        if let Some(op) = inferred {
            return Requirement::new(&key, op, Vec::new()).map_err(|e| e.to_string());
        }
        let op = self.parse_operator()?;
        let values = match op {
            Operator::In | Operator::NotIn => self.parse_values()?,
            _ => self.parse_exact_value()?,
        };
        Requirement::new(&key, op, values).map_err(|e| e.to_string())
    }

    fn parse_key_and_infer_operator(&mut self) -> Result<(String, Option<Operator>), String> {
        let mut op = None;
        let (mut tok, mut lit) = self.next(Ctx::Values);
        if tok == Tok::DoesNotExist {
            op = Some(Operator::DoesNotExist);
            (tok, lit) = self.next(Ctx::Values);
        }
        if tok != Tok::Identifier {
            return Err(format!("found '{lit}', expected: identifier"));
        }
        // Upstream validates the key here with a nil field path.
        if let Some(e) = validate_label_key(&lit, "<nil>") {
            return Err(e);
        }
        let (next, _) = self.peek(Ctx::Values);
        if (next == Tok::End || next == Tok::Comma) && op.is_none() {
            op = Some(Operator::Exists);
        }
        Ok((lit, op))
    }

    fn parse_operator(&mut self) -> Result<Operator, String> {
        let (tok, lit) = self.next(Ctx::KeyAndOperator);
        Ok(match tok {
            Tok::In => Operator::In,
            Tok::Equals => Operator::Equals,
            Tok::DoubleEquals => Operator::DoubleEquals,
            Tok::GreaterThan => Operator::GreaterThan,
            Tok::LessThan => Operator::LessThan,
            Tok::NotIn => Operator::NotIn,
            Tok::NotEquals => Operator::NotEquals,
            _ => return Err(format!("found '{lit}', expected: {BINARY_OPERATORS}")),
        })
    }

    /// `( v1, v2 )`: returns the values sorted and de-duplicated, as upstream's set.
    fn parse_values(&mut self) -> Result<Vec<String>, String> {
        let (tok, lit) = self.next(Ctx::Values);
        if tok != Tok::OpenPar {
            return Err(format!("found '{lit}' expected: '('"));
        }
        let (tok, lit) = self.peek(Ctx::Values);
        let mut set = match tok {
            Tok::Identifier | Tok::Comma => {
                let s = self.parse_identifiers_list()?;
                if self.next(Ctx::Values).0 != Tok::ClosedPar {
                    return Err(format!("found '{lit}', expected: ')'"));
                }
                s
            }
            Tok::ClosedPar => {
                self.next(Ctx::Values);
                vec![String::new()]
            }
            _ => return Err(format!("found '{lit}', expected: ',', ')' or identifier")),
        };
        set.sort();
        set.dedup();
        Ok(set)
    }

    /// Mirrors upstream 1.33, where an empty item (`(,`, `,,`, `,)`) stands for "".
    fn parse_identifiers_list(&mut self) -> Result<Vec<String>, String> {
        let mut s: Vec<String> = Vec::new();
        loop {
            let (tok, lit) = self.next(Ctx::Values);
            match tok {
                Tok::Identifier => {
                    s.push(lit);
                    let (t2, l2) = self.peek(Ctx::Values);
                    match t2 {
                        Tok::Comma => continue,
                        Tok::ClosedPar => return Ok(s),
                        _ => return Err(format!("found '{l2}', expected: ',' or ')'")),
                    }
                }
                Tok::Comma => {
                    if s.is_empty() {
                        s.push(String::new());
                    }
                    let (t2, _) = self.peek(Ctx::Values);
                    if t2 == Tok::ClosedPar {
                        s.push(String::new());
                        return Ok(s);
                    }
                    if t2 == Tok::Comma {
                        self.next(Ctx::Values);
                        s.push(String::new());
                    }
                }
                _ => return Err(format!("found '{lit}', expected: ',', or identifier")),
            }
        }
    }

    fn parse_exact_value(&mut self) -> Result<Vec<String>, String> {
        let (tok, _) = self.peek(Ctx::Values);
        if tok == Tok::End || tok == Tok::Comma {
            return Ok(vec![String::new()]);
        }
        let (tok, lit) = self.next(Ctx::Values);
        if tok == Tok::Identifier {
            Ok(vec![lit])
        } else {
            Err(format!("found '{lit}', expected: identifier"))
        }
    }
}

// ---------------------------------------------------------------------------
// Key and value rules live in the validation module (one wording for all).

/// Upstream `validation.IsQualifiedName` (label keys).
pub(crate) fn qualified_name_errors(value: &str) -> Vec<String> {
    crate::validation::qualified_name(value)
}

/// Upstream `validation.IsValidLabelValue`.
pub(crate) fn label_value_errors(value: &str) -> Vec<String> {
    crate::validation::label_value(value)
}

fn validate_label_key(key: &str, path: &str) -> Option<String> {
    let errs = qualified_name_errors(key);
    (!errs.is_empty()).then(|| invalid(path, key, &errs.join("; ")))
}

/// `field.Invalid(path, value, detail).Error()` for a string value.
fn invalid(path: &str, value: &str, detail: &str) -> String {
    format!("{path}: Invalid value: {}: {detail}", go_quote(value))
}

/// `field.Invalid` for a `[]string` value, which upstream renders as JSON
/// (`null` for an absent list).
fn invalid_list(path: &str, values: &[String], detail: &str) -> String {
    let rendered = if values.is_empty() {
        "null".to_string()
    } else {
        serde_json::to_string(values).unwrap_or_default()
    };
    format!("{path}: Invalid value: {rendered}: {detail}")
}

/// Upstream's aggregate error text: one message alone, several in brackets.
fn aggregate(mut errs: Vec<String>) -> String {
    let mut seen = std::collections::HashSet::new();
    errs.retain(|e| seen.insert(e.clone()));
    if errs.len() == 1 {
        errs.remove(0)
    } else {
        format!("[{}]", errs.join(", "))
    }
}

/// Go's `%q` (`strconv.Quote`), which upstream uses in many error messages.
/// Rust strings are valid UTF-8, so only the escapes of control and
/// non-printable characters apply. Shared by every module (and crate) that
/// renders upstream messages, so they all escape alike.
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c if !go_printable(c) => {
                let n = c as u32;
                if n < 0x10000 {
                    out.push_str(&format!("\\u{n:04x}"));
                } else {
                    out.push_str(&format!("\\U{n:08x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Approximates Go's `strconv.IsPrint` without Unicode tables: controls,
/// non-ASCII spaces / separators, common format characters, private-use
/// characters (planes 15 and 16 hold nothing else) are escaped.
fn go_printable(c: char) -> bool {
    if c.is_control() {
        return false;
    }
    if c != ' ' && c.is_whitespace() {
        return false;
    }
    !matches!(c as u32,
        0xad | 0x600..=0x605 | 0x61c | 0x6dd | 0x70f | 0x180e | 0x200b..=0x200f
        | 0x202a..=0x202e | 0x2060..=0x2064 | 0x2066..=0x206f | 0xfeff | 0xfff9..=0xfffb
        | 0xe000..=0xf8ff | 0xfffe | 0xffff | 0xf0000..=0x10ffff)
}

/// Go's `strconv.ParseInt(s, 10, 64)`.
pub(crate) fn parse_go_int64(s: &str) -> Option<i64> {
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn go_quote_escapes_like_strconv_quote() {
        // Values checked against Go's strconv.Quote.
        assert_eq!(
            go_quote("a\"b\\c\n\u{1}é\u{200b}"),
            "\"a\\\"b\\\\c\\n\\x01é\\u200b\""
        );
        assert_eq!(go_quote("\u{7}\u{b}\u{7f}"), "\"\\a\\v\\x7f\"");
        assert_eq!(
            go_quote("\u{85}\u{e000}\u{10ffff}"),
            "\"\\u0085\\ue000\\U0010ffff\""
        );
    }

    fn labels(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    fn err(s: &str) -> String {
        parse(s).expect_err(s).to_string()
    }

    #[test]
    fn good_strings_round_trip_without_spaces() {
        for s in [
            "x=a,y=b,z=c",
            "",
            "x!=a,y=b",
            "x=",
            "x= ",
            "x=,z= ",
            "x= ,z= ",
            "!x",
            "x>1",
            "x>1,z<5",
        ] {
            let sel = parse(s).unwrap_or_else(|e| panic!("{s}: {e}"));
            assert_eq!(sel.to_string(), s.replace(' ', ""), "{s}");
        }
    }

    #[test]
    fn canonical_string_sorts_keys_and_values() {
        let sel = parse("x notin (abc,,def),bar,z in (),w").unwrap();
        assert_eq!(sel.to_string(), "bar,w,x notin (,abc,def),z in ()");
        let sel = parse("a in (x,y,notin, z,in)").unwrap();
        assert_eq!(sel.to_string(), "a in (in,notin,x,y,z)");
        let sel = parse("0.1.2.domain/99 notin (10.10.100.1, tick.tack.clock)").unwrap();
        assert_eq!(
            sel.requirements()[0].values(),
            ["10.10.100.1", "tick.tack.clock"]
        );
        assert_eq!(
            parse("foo  in\t (abc)").unwrap().to_string(),
            "foo in (abc)"
        );
        assert_eq!(parse("\rx").unwrap().to_string(), "x");
        assert_eq!(parse("x notin (, a)").unwrap().to_string(), "x notin (,a)");
        assert_eq!(parse("in in (in)").unwrap().to_string(), "in in (in)");
    }

    #[test]
    fn bad_strings_give_upstream_errors() {
        // `a||y` lexes as one identifier, then fails label-value validation.
        assert!(err("x=a||y=b").starts_with(
            "unable to parse requirement: values[0][x]: Invalid value: \"a||y\": a valid label"
        ));
        assert_eq!(
            err("x==a==b"),
            "found '==', expected: ',' or 'end of string'"
        );
        assert_eq!(err("!x=a"), "found '=', expected: ',' or 'end of string'");
        assert_eq!(
            err("x<a"),
            "unable to parse requirement: values[0]: Invalid value: \"a\": for 'Gt', 'Lt' operators, the value must be an integer"
        );
        assert_eq!(err("x,,y"), "found ',', expected: identifier after ','");
        assert_eq!(
            err(",x,y"),
            "found ',', expected: !, identifier, or 'end of string'"
        );
        assert_eq!(
            err("x nott in (y)"),
            "unable to parse requirement: found 'nott', expected: in, notin, =, ==, !=, gt, lt"
        );
        assert_eq!(
            err("a in (xyz),"),
            "found '', expected: identifier after ','"
        );
        assert_eq!(
            err("a in (xyz)b notin ()"),
            "found 'b', expected: ',' or 'end of string'"
        );
        assert_eq!(
            err("a in (xyz abc)"),
            "unable to parse requirement: found 'abc', expected: ',' or ')'"
        );
        assert_eq!(
            err("a notin("),
            "unable to parse requirement: found '', expected: ',', ')' or identifier"
        );
        assert_eq!(
            err("a ("),
            "unable to parse requirement: found '(', expected: in, notin, =, ==, !=, gt, lt"
        );
        assert_eq!(
            err("("),
            "found '(', expected: !, identifier, or 'end of string'"
        );
        // 1.33 consumes the second comma of ",," so ",,)" is an error.
        assert_eq!(
            err("x in (a,,)"),
            "unable to parse requirement: found ')', expected: ',', or identifier"
        );
    }

    #[test]
    fn invalid_keys_and_values_use_validation_messages() {
        assert_eq!(
            err("-a=b"),
            "unable to parse requirement: <nil>: Invalid value: \"-a\": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
        );
        assert_eq!(
            err("env=-bad"),
            "unable to parse requirement: values[0][env]: Invalid value: \"-bad\": a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
        );
        let long = "a".repeat(64);
        assert!(err(&long).ends_with("name part must be no more than 63 characters"));
        assert!(err("Example.com/x").contains("prefix part a lowercase RFC 1123 subdomain"));
        assert!(err("a/b/c").contains("a qualified name must consist of"));
        assert!(parse("example.com/x-y_z.w=ok").is_ok());
    }

    #[test]
    fn matching_follows_upstream_semantics() {
        let l = labels(json!({"x": "foo", "y": "baz", "n": "7"}));
        assert!(parse("x=foo").unwrap().matches(&l));
        assert!(parse("x==foo,y!=alpha").unwrap().matches(&l));
        assert!(!parse("x in (bar)").unwrap().matches(&l));
        // NotIn / != match when the label is absent.
        assert!(parse("absent notin (a),absent!=b").unwrap().matches(&l));
        assert!(parse("x,!absent").unwrap().matches(&l));
        assert!(!parse("!x").unwrap().matches(&l));
        assert!(parse("n>6,n<8").unwrap().matches(&l));
        assert!(!parse("x>1").unwrap().matches(&l));
        assert!(!parse("absent>1").unwrap().matches(&l));
        // "x in ()" means the empty value, which only an empty label has.
        assert!(parse("y in ()").unwrap().matches(&labels(json!({"y": ""}))));
        assert!(!parse("y in ()").unwrap().matches(&l));
        assert!(Selector::everything().matches(&l));
        assert!(parse("").unwrap().is_empty());
    }

    #[test]
    fn matches_object_reads_metadata_labels() {
        let pod = json!({"metadata": {"name": "p", "labels": {"app": "web"}}});
        assert!(parse("app=web").unwrap().matches_object(&pod));
        assert!(!parse("app")
            .unwrap()
            .matches_object(&json!({"metadata": {"name": "p"}})));
        assert!(parse("!app")
            .unwrap()
            .matches_object(&json!({"metadata": {"name": "p"}})));
    }

    #[test]
    fn label_selector_objects() {
        assert_eq!(from_label_selector(&Value::Null).unwrap(), None);
        let all = from_label_selector(&json!({})).unwrap().unwrap();
        assert!(all.is_empty());
        let all = from_label_selector(&json!({"matchLabels": {}, "matchExpressions": []}))
            .unwrap()
            .unwrap();
        assert!(all.is_empty());
        let sel = from_label_selector(&json!({
            "matchLabels": {"app": "web"},
            "matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["fe", "be"]},
                {"key": "canary", "operator": "DoesNotExist"}
            ]
        }))
        .unwrap()
        .unwrap();
        assert_eq!(sel.to_string(), "app=web,!canary,tier in (be,fe)");
        assert!(sel.matches(&labels(json!({"app": "web", "tier": "fe"}))));
        assert!(!sel.matches(&labels(json!({"app": "web", "tier": "fe", "canary": "1"}))));
        assert_eq!(sel.requires_exact_match("app"), Some("web"));

        let e = from_label_selector(
            &json!({"matchExpressions": [{"key": "a", "operator": "Gt", "values": ["1"]}]}),
        );
        assert_eq!(
            e.unwrap_err().to_string(),
            "\"Gt\" is not a valid label selector operator"
        );
        let e = from_label_selector(&json!({"matchExpressions": [{"key": "a", "operator": "In"}]}));
        assert_eq!(
            e.unwrap_err().to_string(),
            "values: Invalid value: null: for 'in', 'notin' operators, values set can't be empty"
        );
        let e = from_label_selector(
            &json!({"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]}),
        );
        assert_eq!(
            e.unwrap_err().to_string(),
            "values: Invalid value: [\"x\"]: values set must be empty for exists and does not exist"
        );
        let e = from_label_selector(&json!({"matchLabels": {"a b": "x"}})).unwrap_err();
        assert!(e
            .to_string()
            .starts_with("key: Invalid value: \"a b\": name part"));
    }

    #[test]
    fn requirement_constructor_aggregates_errors() {
        let e = Requirement::new("x", Operator::Equals, vec!["a".into(), "-b".into()]).unwrap_err();
        let s = e.to_string();
        assert!(s.starts_with("[values: Invalid value: [\"a\",\"-b\"]: exact-match compatibility requires one single value, values[1][x]: Invalid value: \"-b\": a valid label"), "{s}");
    }

    #[test]
    fn from_set_builds_equality_selector() {
        let sel = Selector::from_set(&labels(json!({"b": "2", "a": "1"})));
        assert_eq!(sel.to_string(), "a=1,b=2");
        assert!(sel.matches(&labels(json!({"a": "1", "b": "2", "c": "3"}))));
    }
}
