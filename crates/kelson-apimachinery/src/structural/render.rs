//! Renders JSON values the way upstream's Go `fmt` shows the decoded
//! `interface{}` values in messages (`%v`, `%q`, `%#v`).

use serde_json::{Number, Value};

/// Go `strconv.Quote`.
pub(crate) use crate::labels::go_quote as quote;

/// A JSON number as Go's decoder types it: int64 when it is written as an
/// integer that fits, float64 otherwise.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Num {
    Int(i64),
    Float(f64),
}

pub(crate) fn num(n: &Number) -> Num {
    match n.as_i64() {
        Some(i) => Num::Int(i),
        None => Num::Float(n.as_f64().unwrap_or(0.0)),
    }
}

/// Go `%v` of a float64 (`strconv.FormatFloat(f, 'g', -1, 64)`).
pub(crate) fn go_float(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "+Inf" } else { "-Inf" }.into();
    }
    if f == 0.0 {
        return if f.is_sign_negative() { "-0" } else { "0" }.into();
    }
    // Shortest round-trip digits, then strconv's %g layout rule for the
    // shortest precision: exponent form when exp < -4 || exp >= 6.
    let sci = format!("{f:e}");
    let (mant, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if !(-4..6).contains(&exp) {
        let sign = if exp < 0 { '-' } else { '+' };
        return format!("{mant}e{sign}{:02}", exp.abs());
    }
    format!("{f}")
}

/// Go `%v` of a decoded JSON number.
pub(crate) fn go_num(n: Num) -> String {
    match n {
        Num::Int(i) => i.to_string(),
        Num::Float(f) => go_float(f),
    }
}

/// Go `%#v` of a decoded JSON value inside an `interface{}`.
pub(crate) fn go_sharp(v: &Value) -> String {
    match v {
        Value::Null => "interface {}(nil)".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => go_num(num(n)),
        Value::String(s) => quote(s),
        Value::Array(items) => {
            let inner: Vec<String> = items.iter().map(go_sharp).collect();
            format!("[]interface {{}}{{{}}}", inner.join(", "))
        }
        Value::Object(m) => {
            // serde_json's map is sorted, as Go's fmt sorts map keys.
            let inner: Vec<String> = m
                .iter()
                .map(|(k, v)| format!("{}:{}", quote(k), go_sharp(v)))
                .collect();
            format!("map[string]interface {{}}{{{}}}", inner.join(", "))
        }
    }
}

/// How upstream 1.33 `field.Error.ErrorBody` prints a bad value: simple
/// printer for numbers and bools, `%q` for strings, `"null"` for nil and
/// `%#v` for everything else.
pub(crate) fn bad_value(v: &Value) -> String {
    match v {
        Value::Null => quote("null"),
        Value::String(s) => quote(s),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => go_num(num(n)),
        other => go_sharp(other),
    }
}

/// Go `json.Marshal` of a decoded value (enum values in "supported values").
pub(crate) fn go_json(v: &Value) -> String {
    match v {
        Value::Number(n) => match num(n) {
            Num::Int(i) => i.to_string(),
            Num::Float(f) => {
                let a = f.abs();
                if a != 0.0 && !(1e-6..1e21).contains(&a) {
                    go_float(f)
                } else {
                    format!("{f}")
                }
            }
        },
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn renders_like_go_fmt() {
        assert_eq!(go_float(10.0), "10");
        assert_eq!(go_float(1.5), "1.5");
        assert_eq!(go_float(1e21), "1e+21");
        assert_eq!(go_float(1e6), "1e+06");
        assert_eq!(go_float(123456.0), "123456");
        assert_eq!(go_float(0.00001), "1e-05");
        assert_eq!(
            go_sharp(&json!({"b": [1, "x"], "a": 1.5})),
            r#"map[string]interface {}{"a":1.5, "b":[]interface {}{1, "x"}}"#
        );
        assert_eq!(bad_value(&Value::Null), r#""null""#);
        assert_eq!(bad_value(&json!("a\"b")), r#""a\"b""#);
    }
}
