//! The YAML text gnostic stores in `Any.yaml`.
//!
//! Upstream the API server parses its JSON document with go-yaml v3, clears
//! every node's style and marshals each vendor-extension / default / enum /
//! example value back with `yaml.Marshal` (4-space indent, unlimited width).
//! This module reproduces that output for JSON values: block mappings and
//! sequences, `{}` / `[]` for empty ones, plain scalars where go-yaml would
//! write them plain, double quotes for strings that would otherwise read back
//! as another type ("true", "1", "", timestamps), single quotes for strings
//! that cannot be plain, and `|` literal blocks for multi-line strings.
//! kubectl only parses the text back, so any valid YAML would do; matching
//! go-yaml keeps the bytes identical to what upstream serves.

use serde_json::{Map, Value};

const BEST_INDENT: i32 = 4;

/// The YAML document go-yaml v3 would marshal for `value` (always ends with
/// a newline).
pub(crate) fn to_yaml(value: &Value) -> String {
    let mut e = Emitter {
        out: String::new(),
        column: 0,
        whitespace: true,
        indention: true,
        indent: -1,
        indents: Vec::new(),
    };
    e.node(value, Parent::Root);
    // Document end: finish the last line.
    e.write_indent_at(0);
    e.out
}

/// Where a node sits; decides indentation and key-specific scalar rules.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Parent {
    Root,
    SeqItem,
    MapValue,
    SimpleKey,
    ComplexKey,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Style {
    Plain,
    Single,
    Double,
    Literal,
}

/// A scalar ready to be written: its text and whether it is a JSON string
/// (only strings are ever quoted).
struct Scalar<'a> {
    text: std::borrow::Cow<'a, str>,
    is_str: bool,
}

struct Emitter {
    out: String,
    /// Column in characters (only compared against indents, which are small).
    column: i32,
    whitespace: bool,
    indention: bool,
    indent: i32,
    indents: Vec<i32>,
}

impl Emitter {
    fn put(&mut self, c: char) {
        self.out.push(c);
        self.column += 1;
    }

    fn put_break(&mut self) {
        self.out.push('\n');
        self.column = 0;
        self.indention = true;
    }

    fn write_indent(&mut self) {
        self.write_indent_at(self.indent.max(0));
    }

    fn write_indent_at(&mut self, indent: i32) {
        if !self.indention || self.column > indent || (self.column == indent && !self.whitespace) {
            self.put_break();
        }
        while self.column < indent {
            self.put(' ');
        }
        self.whitespace = true;
    }

    fn indicator(&mut self, s: &str, need_ws: bool, is_ws: bool, is_indention: bool) {
        if need_ws && !self.whitespace {
            self.put(' ');
        }
        self.out.push_str(s);
        self.column += s.chars().count() as i32;
        self.whitespace = is_ws;
        self.indention = self.indention && is_indention;
    }

    fn increase_indent(&mut self, flow: bool, parent: Parent) {
        self.indents.push(self.indent);
        if self.indent < 0 {
            self.indent = if flow { BEST_INDENT } else { 0 };
        } else if parent == Parent::SeqItem {
            // The first indent inside a sequence skips the "- " indicator.
            self.indent += 2;
        } else {
            self.indent = BEST_INDENT * ((self.indent + BEST_INDENT) / BEST_INDENT);
        }
    }

    fn pop_indent(&mut self) {
        self.indent = self.indents.pop().unwrap_or(-1);
    }

    fn node(&mut self, value: &Value, parent: Parent) {
        match value {
            Value::Object(map) => self.mapping(map, parent),
            Value::Array(items) => self.sequence(items, parent),
            Value::String(s) => self.scalar(
                &Scalar {
                    text: s.as_str().into(),
                    is_str: true,
                },
                parent,
            ),
            Value::Null => self.scalar(&plain("null"), parent),
            Value::Bool(b) => self.scalar(&plain(if *b { "true" } else { "false" }), parent),
            Value::Number(n) => self.scalar(
                &Scalar {
                    text: n.to_string().into(),
                    is_str: false,
                },
                parent,
            ),
        }
    }

    fn empty_flow(&mut self, open: &str, close: &str, parent: Parent) {
        self.indicator(open, true, true, false);
        self.increase_indent(true, parent);
        self.pop_indent();
        self.indicator(close, false, false, false);
    }

    fn mapping(&mut self, map: &Map<String, Value>, parent: Parent) {
        if map.is_empty() {
            return self.empty_flow("{", "}", parent);
        }
        self.increase_indent(false, parent);
        for (key, value) in map {
            self.write_indent();
            let analysis = analyze(key);
            let key_scalar = Scalar {
                text: key.as_str().into(),
                is_str: true,
            };
            // go-yaml writes `key: value` unless the key is multi-line or
            // longer than 128 bytes, which need the explicit `? key` form.
            if !analysis.multiline && key.len() <= 128 {
                self.scalar(&key_scalar, Parent::SimpleKey);
                self.indicator(":", false, false, false);
            } else {
                self.indicator("?", true, false, true);
                self.scalar(&key_scalar, Parent::ComplexKey);
                self.write_indent();
                self.indicator(":", true, false, true);
            }
            self.node(value, Parent::MapValue);
        }
        self.pop_indent();
    }

    fn sequence(&mut self, items: &[Value], parent: Parent) {
        if items.is_empty() {
            return self.empty_flow("[", "]", parent);
        }
        self.increase_indent(false, parent);
        for item in items {
            self.write_indent();
            self.indicator("-", true, false, true);
            self.node(item, Parent::SeqItem);
        }
        self.pop_indent();
    }

    fn scalar(&mut self, scalar: &Scalar<'_>, parent: Parent) {
        let text: &str = &scalar.text;
        let style = select_style(text, scalar.is_str, parent == Parent::SimpleKey);
        self.increase_indent(true, parent);
        match style {
            Style::Plain => self.write_plain(text),
            Style::Single => self.write_single(text),
            Style::Double => self.write_double(text),
            Style::Literal => self.write_literal(text),
        }
        self.pop_indent();
    }

    fn write_plain(&mut self, text: &str) {
        if !text.is_empty() && !self.whitespace {
            self.put(' ');
        }
        // Plain scalars never contain breaks here (they force quoting).
        for c in text.chars() {
            self.put(c);
        }
        if !text.is_empty() {
            self.whitespace = false;
        }
        self.indention = false;
    }

    fn write_single(&mut self, text: &str) {
        self.indicator("'", true, false, false);
        let mut breaks = false;
        for c in text.chars() {
            if is_break(c) {
                if !breaks && c == '\n' {
                    self.put_break();
                }
                self.write_break(c);
                breaks = true;
            } else {
                if breaks {
                    self.write_indent();
                }
                if c == '\'' {
                    self.put('\'');
                }
                self.put(c);
                self.indention = false;
                breaks = false;
            }
        }
        self.indicator("'", false, false, false);
        self.whitespace = false;
        self.indention = false;
    }

    fn write_break(&mut self, c: char) {
        if c == '\n' {
            self.put_break();
        } else {
            self.out.push(c);
            self.column = 0;
            self.indention = true;
        }
    }

    fn write_double(&mut self, text: &str) {
        self.indicator("\"", true, false, false);
        // go-yaml's BOM check looks at the start of the value for every
        // character, so a leading BOM escapes the whole string.
        let bom = text.starts_with('\u{feff}');
        for c in text.chars() {
            if bom || !is_printable(c) || is_break(c) || c == '"' || c == '\\' {
                self.put('\\');
                match c {
                    '\0' => self.put('0'),
                    '\u{7}' => self.put('a'),
                    '\u{8}' => self.put('b'),
                    '\t' => self.put('t'),
                    '\n' => self.put('n'),
                    '\u{b}' => self.put('v'),
                    '\u{c}' => self.put('f'),
                    '\r' => self.put('r'),
                    '\u{1b}' => self.put('e'),
                    '"' => self.put('"'),
                    '\\' => self.put('\\'),
                    '\u{85}' => self.put('N'),
                    '\u{a0}' => self.put('_'),
                    '\u{2028}' => self.put('L'),
                    '\u{2029}' => self.put('P'),
                    _ => {
                        let v = u32::from(c);
                        let (prefix, digits) = if v <= 0xff {
                            ('x', 2)
                        } else if v <= 0xffff {
                            ('u', 4)
                        } else {
                            ('U', 8)
                        };
                        self.put(prefix);
                        for k in (0..digits).rev() {
                            let d = (v >> (k * 4)) & 0xf;
                            self.put(char::from_digit(d, 16).unwrap_or('0').to_ascii_uppercase());
                        }
                    }
                }
            } else {
                self.put(c);
            }
        }
        self.indicator("\"", false, false, false);
        self.whitespace = false;
        self.indention = false;
    }

    fn write_literal(&mut self, text: &str) {
        self.indicator("|", true, false, false);
        // Block scalar hints: an explicit indent when the text starts with a
        // space or break, and the chomping indicator for trailing breaks.
        if text.starts_with(' ') || text.chars().next().is_some_and(is_break) {
            let hint = char::from_digit(BEST_INDENT as u32, 10).unwrap_or('4');
            self.indicator(&hint.to_string(), false, false, false);
        }
        let mut rev = text.chars().rev();
        let chomp = match (rev.next(), rev.next()) {
            (None, _) => Some("-"),
            (Some(last), _) if !is_break(last) => Some("-"),
            (Some(_), None) => Some("+"),
            (Some(_), Some(prev)) if is_break(prev) => Some("+"),
            _ => None,
        };
        if let Some(chomp) = chomp {
            self.indicator(chomp, false, false, false);
        }
        self.put_break();
        self.whitespace = true;
        let mut breaks = true;
        for c in text.chars() {
            if is_break(c) {
                self.write_break(c);
                breaks = true;
            } else {
                if breaks {
                    self.write_indent();
                }
                self.put(c);
                self.indention = false;
                breaks = false;
            }
        }
    }
}

fn plain(text: &'static str) -> Scalar<'static> {
    Scalar {
        text: text.into(),
        is_str: false,
    }
}

/// go-yaml's choice of style for a scalar whose node style was cleared.
fn select_style(text: &str, is_str: bool, simple_key: bool) -> Style {
    if !is_str {
        return Style::Plain;
    }
    let requested = if text.contains('\n') {
        Style::Literal
    } else if !resolves_to_str(text) {
        // Written plain it would read back as a bool, number, null or
        // timestamp.
        Style::Double
    } else {
        Style::Plain
    };
    let a = analyze(text);
    let mut style = requested;
    if simple_key && a.multiline {
        style = Style::Double;
    }
    if style == Style::Plain && (!a.block_plain_allowed || (text.is_empty() && simple_key)) {
        style = Style::Single;
    }
    if style == Style::Single && !a.single_quoted_allowed {
        style = Style::Double;
    }
    if style == Style::Literal && (!a.block_allowed || simple_key) {
        style = Style::Double;
    }
    style
}

struct Analysis {
    multiline: bool,
    block_plain_allowed: bool,
    single_quoted_allowed: bool,
    block_allowed: bool,
}

fn is_break(c: char) -> bool {
    matches!(c, '\r' | '\n' | '\u{85}' | '\u{2028}' | '\u{2029}')
}

/// go-yaml's byte-level printable check; note that it rejects every
/// character outside the Basic Multilingual Plane.
fn is_printable(c: char) -> bool {
    matches!(c,
        '\n' | '\u{20}'..='\u{7e}' | '\u{a0}'..='\u{d7ff}' | '\u{e000}'..='\u{fffd}')
        && c != '\u{feff}'
}

/// go-yaml's `yaml_emitter_analyze_scalar`, reduced to the flags that
/// matter in block context.
fn analyze(value: &str) -> Analysis {
    if value.is_empty() {
        return Analysis {
            multiline: false,
            block_plain_allowed: true,
            single_quoted_allowed: true,
            block_allowed: false,
        };
    }
    let mut block_indicators = value.starts_with("---") || value.starts_with("...");
    let mut line_breaks = false;
    let mut special = false;
    let mut tabs = false;
    let mut leading_space = false;
    let mut leading_break = false;
    let mut trailing_space = false;
    let mut trailing_break = false;
    let mut break_space = false;
    let mut space_break = false;
    let mut previous_space = false;
    let mut previous_break = false;
    let mut preceded_by_ws = true;
    let chars: Vec<char> = value.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        let next = chars.get(i + 1).copied();
        let followed_by_ws = matches!(next, None | Some(' ') | Some('\t'));
        if i == 0 {
            match c {
                '#' | ',' | '[' | ']' | '{' | '}' | '&' | '*' | '!' | '|' | '>' | '\'' | '"'
                | '%' | '@' | '`' => block_indicators = true,
                '?' | ':' | '-' if followed_by_ws => block_indicators = true,
                _ => {}
            }
        } else {
            match c {
                ':' if followed_by_ws => block_indicators = true,
                '#' if preceded_by_ws => block_indicators = true,
                _ => {}
            }
        }
        if c == '\t' {
            tabs = true;
        } else if !is_printable(c) {
            special = true;
        }
        let last = i + 1 == chars.len();
        if c == ' ' {
            leading_space |= i == 0;
            trailing_space |= last;
            break_space |= previous_break;
            previous_space = true;
            previous_break = false;
        } else if is_break(c) {
            line_breaks = true;
            leading_break |= i == 0;
            trailing_break |= last;
            space_break |= previous_space;
            previous_space = false;
            previous_break = true;
        } else {
            previous_space = false;
            previous_break = false;
        }
        preceded_by_ws = matches!(c, ' ' | '\t' | '\0') || is_break(c);
    }
    let mut a = Analysis {
        multiline: line_breaks,
        block_plain_allowed: true,
        single_quoted_allowed: true,
        block_allowed: true,
    };
    if leading_space || leading_break || trailing_space || trailing_break {
        a.block_plain_allowed = false;
    }
    if trailing_space {
        a.block_allowed = false;
    }
    if break_space {
        a.block_plain_allowed = false;
        a.single_quoted_allowed = false;
    }
    if space_break || tabs || special {
        a.block_plain_allowed = false;
        a.single_quoted_allowed = false;
    }
    if space_break || special {
        a.block_allowed = false;
    }
    if line_breaks || block_indicators {
        a.block_plain_allowed = false;
    }
    a
}

/// Whether go-yaml's resolver reads `s`, written plain, back as a string
/// (rather than a bool, null, int, float or timestamp).
fn resolves_to_str(s: &str) -> bool {
    let Some(&first) = s.as_bytes().first() else {
        // The empty plain scalar is null.
        return false;
    };
    match first {
        b'y' | b'Y' | b'n' | b'N' | b't' | b'T' | b'f' | b'F' | b'o' | b'O' | b'~' => {
            !is_special_word(s)
        }
        b'.' => !is_special_word(s) && !is_dot_float(s),
        b'+' | b'-' | b'0'..=b'9' => {
            if is_special_word(s) {
                return false;
            }
            if is_timestamp(s) {
                return false;
            }
            let plain: String = s.chars().filter(|&c| c != '_').collect();
            !(is_go_int(&plain) || is_yaml_float(&plain) || is_binary_or_octal(&plain))
        }
        _ => true,
    }
}

/// The resolver's table of words: booleans, nulls, infinities, NaN.
fn is_special_word(s: &str) -> bool {
    matches!(
        s,
        "true"
            | "True"
            | "TRUE"
            | "false"
            | "False"
            | "FALSE"
            | "~"
            | "null"
            | "Null"
            | "NULL"
            | ".nan"
            | ".NaN"
            | ".NAN"
            | ".inf"
            | ".Inf"
            | ".INF"
            | "+.inf"
            | "+.Inf"
            | "+.INF"
            | "-.inf"
            | "-.Inf"
            | "-.INF"
    )
}

/// Go's `strconv.ParseFloat` on a string starting with '.': `.5`, `.5e3`.
fn is_dot_float(s: &str) -> bool {
    let rest = &s[1..];
    let (mantissa, exp) = match rest.find(['e', 'E']) {
        Some(i) => (&rest[..i], Some(&rest[i + 1..])),
        None => (rest, None),
    };
    let digits_ok = |d: &str| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit());
    digits_ok(mantissa) && exp.is_none_or(|e| digits_ok(e.strip_prefix(['+', '-']).unwrap_or(e)))
}

/// `YYYY-M-D` optionally followed by a time; go-yaml tries `time.Parse`
/// with such layouts. Checking the date part is enough to decide quoting
/// (a string that merely starts like a date is quoted, which reads back the
/// same).
fn is_timestamp(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() < 8 || !b[..4].iter().all(u8::is_ascii_digit) || b[4] != b'-' {
        return false;
    }
    let mut i = 5;
    let number = |i: &mut usize| -> Option<u32> {
        let start = *i;
        while *i < b.len() && *i - start < 2 && b[*i].is_ascii_digit() {
            *i += 1;
        }
        s.get(start..*i)?.parse().ok()
    };
    let Some(month) = number(&mut i) else {
        return false;
    };
    if b.get(i) != Some(&b'-') {
        return false;
    }
    i += 1;
    let Some(day) = number(&mut i) else {
        return false;
    };
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return false;
    }
    match b.get(i) {
        None => true,
        Some(b'T' | b't' | b' ') => i + 1 < b.len(),
        Some(_) => false,
    }
}

/// Go's `strconv.ParseInt(s, 0, 64)` or `ParseUint(s, 0, 64)` succeeding.
fn is_go_int(s: &str) -> bool {
    let (neg, body) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let (radix, digits) = if let Some(d) = body.strip_prefix("0x").or(body.strip_prefix("0X")) {
        (16, d)
    } else if let Some(d) = body.strip_prefix("0o").or(body.strip_prefix("0O")) {
        (8, d)
    } else if let Some(d) = body.strip_prefix("0b").or(body.strip_prefix("0B")) {
        (2, d)
    } else if body.len() > 1 && body.starts_with('0') {
        (8, &body[1..])
    } else {
        (10, body)
    };
    // Rust's from_str_radix would accept a sign here; Go does not.
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return false;
    }
    let Ok(magnitude) = u64::from_str_radix(digits, radix) else {
        return false;
    };
    if neg {
        magnitude <= 1u64 << 63
    } else {
        // ParseUint rejects a '+' sign, ParseInt caps at i64::MAX.
        magnitude <= i64::MAX as u64 || s.as_bytes().first() != Some(&b'+')
    }
}

/// go-yaml's `yamlStyleFloat`: `^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$`.
fn is_yaml_float(s: &str) -> bool {
    let s = s.strip_prefix(['+', '-']).unwrap_or(s);
    let (mantissa, exp) = match s.find(['e', 'E']) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let all_digits = |d: &str| d.bytes().all(|b| b.is_ascii_digit());
    let mantissa_ok = match mantissa.split_once('.') {
        Some(("", frac)) => !frac.is_empty() && all_digits(frac),
        Some((int, frac)) => all_digits(int) && all_digits(frac),
        None => !mantissa.is_empty() && all_digits(mantissa),
    };
    let exp_ok = exp.is_none_or(|e| {
        let e = e.strip_prefix(['+', '-']).unwrap_or(e);
        !e.is_empty() && all_digits(e)
    });
    mantissa_ok && exp_ok
}

/// The resolver's explicit `0b…`, `-0b…`, `0o…`, `-0o…` forms.
fn is_binary_or_octal(s: &str) -> bool {
    let body = s.strip_prefix('-').unwrap_or(s);
    let (radix, digits) = if let Some(d) = body.strip_prefix("0b") {
        (2, d)
    } else if let Some(d) = body.strip_prefix("0o") {
        (8, d)
    } else {
        return false;
    };
    !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && u64::from_str_radix(digits, radix).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn scalars_match_go_yaml() {
        assert_eq!(to_yaml(&json!("merge")), "merge\n");
        assert_eq!(to_yaml(&json!("")), "\"\"\n");
        assert_eq!(to_yaml(&json!("true")), "\"true\"\n");
        assert_eq!(to_yaml(&json!("10")), "\"10\"\n");
        assert_eq!(to_yaml(&json!("1.5")), "\"1.5\"\n");
        assert_eq!(to_yaml(&json!("2024-01-02")), "\"2024-01-02\"\n");
        assert_eq!(to_yaml(&json!("on")), "on\n");
        assert_eq!(to_yaml(&json!("1.2.3")), "1.2.3\n");
        assert_eq!(to_yaml(&json!("a: b")), "'a: b'\n");
        assert_eq!(to_yaml(&json!("it's")), "it's\n");
        assert_eq!(to_yaml(&json!("it's #1")), "'it''s #1'\n");
        assert_eq!(to_yaml(&json!("a#b")), "a#b\n");
        assert_eq!(to_yaml(&json!("*x")), "'*x'\n");
        assert_eq!(to_yaml(&json!("tab\there")), "\"tab\\there\"\n");
        assert_eq!(to_yaml(&json!("😀")), "\"\\U0001F600\"\n");
        assert_eq!(to_yaml(&json!(true)), "true\n");
        assert_eq!(to_yaml(&json!(null)), "null\n");
        assert_eq!(to_yaml(&json!(42)), "42\n");
        assert_eq!(to_yaml(&json!(-1.5)), "-1.5\n");
    }

    #[test]
    fn multi_line_strings_are_literal_blocks() {
        assert_eq!(to_yaml(&json!("a\nb")), "|-\n    a\n    b\n");
        assert_eq!(to_yaml(&json!("a\nb\n")), "|\n    a\n    b\n");
        assert_eq!(to_yaml(&json!({"k": "a\n\nb"})), "k: |-\n    a\n\n    b\n");
        assert_eq!(to_yaml(&json!(" a\nb")), "|4-\n     a\n    b\n");
        // A space before a break cannot be a block scalar.
        assert_eq!(to_yaml(&json!("a \nb")), "\"a \\nb\"\n");
    }

    #[test]
    fn collections_use_four_space_block_style() {
        let gvk = json!([{"group": "", "kind": "Pod", "version": "v1"}]);
        assert_eq!(to_yaml(&gvk), "- group: \"\"\n  kind: Pod\n  version: v1\n");
        assert_eq!(
            to_yaml(&json!({"a": [1, 2], "b": {"c": "d"}})),
            "a:\n    - 1\n    - 2\nb:\n    c: d\n"
        );
        assert_eq!(
            to_yaml(&json!([[1, 2], {"x": []}, {}])),
            "- - 1\n  - 2\n- x: []\n- {}\n"
        );
        assert_eq!(to_yaml(&json!({})), "{}\n");
        assert_eq!(to_yaml(&json!([])), "[]\n");
        assert_eq!(to_yaml(&json!({"true": 1})), "\"true\": 1\n");
        assert_eq!(
            to_yaml(&json!({"a": {"b": [{"c": 1, "d": [true]}]}})),
            "a:\n    b:\n        - c: 1\n          d:\n            - true\n"
        );
    }

    #[test]
    fn quoted_strings_read_back_as_strings() {
        for s in [
            "0x1F", "-0b101", "0o17", "+1", "1e3", ".5", "~", "NULL", "-.inf",
        ] {
            assert_eq!(to_yaml(&json!(s)), format!("\"{s}\"\n"), "{s}");
        }
        for s in ["0x", "1-2", "v1", "-x", "+.5x", "2024-13-01", "y", "no"] {
            assert_eq!(to_yaml(&json!(s)), format!("{s}\n"), "{s}");
        }
    }
}
