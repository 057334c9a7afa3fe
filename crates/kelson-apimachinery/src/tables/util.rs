//! Small JSON accessors and the formatting helpers every printer shares:
//! ages, label sets, label selectors, container lists.

use jiff::Timestamp;
use serde_json::{Map, Value};

/// Walks `path` through nested objects; `None` as soon as a step is missing.
pub(crate) fn get<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(v, |cur, key| cur.get(key))
}

/// A string field, `""` when missing or not a string (Go's zero value).
pub(crate) fn text<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    get(v, path).and_then(Value::as_str).unwrap_or("")
}

/// An integer field, 0 when missing (Go's zero value). Floats are truncated
/// the way a Go decoder into an int32 field would have refused them; we are
/// lenient instead of failing the whole table.
pub(crate) fn int(v: &Value, path: &[&str]) -> i64 {
    get(v, path).map(as_int).unwrap_or(0)
}

pub(crate) fn as_int(v: &Value) -> i64 {
    v.as_i64()
        .or_else(|| v.as_u64().map(|u| i64::try_from(u).unwrap_or(i64::MAX)))
        .or_else(|| v.as_f64().map(|f| f as i64))
        .unwrap_or(0)
}

/// An optional integer (a Go `*int32`): `None` when missing or null.
pub(crate) fn opt_int(v: &Value, path: &[&str]) -> Option<i64> {
    get(v, path).filter(|x| x.is_number()).map(as_int)
}

pub(crate) fn flag(v: &Value, path: &[&str]) -> bool {
    get(v, path).and_then(Value::as_bool).unwrap_or(false)
}

/// An array field, empty when missing.
pub(crate) fn list<'a>(v: &'a Value, path: &[&str]) -> &'a [Value] {
    get(v, path)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

pub(crate) fn map<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Map<String, Value>> {
    get(v, path).and_then(Value::as_object)
}

/// True when `path` holds an object (a non-nil Go pointer to a struct).
pub(crate) fn present(v: &Value, path: &[&str]) -> bool {
    get(v, path).is_some_and(Value::is_object)
}

pub(crate) fn name(obj: &Value) -> Value {
    Value::String(text(obj, &["metadata", "name"]).to_owned())
}

pub(crate) fn s(x: impl Into<String>) -> Value {
    Value::String(x.into())
}

/// Parses a metav1.Time / MicroTime. Go's zero time (year 1) counts as unset,
/// as `metav1.Time.IsZero` does.
pub(crate) fn parse_time(raw: &str) -> Option<Timestamp> {
    let t: Timestamp = raw.parse().ok()?;
    (t != zero_time()).then_some(t)
}

fn zero_time() -> Timestamp {
    // 0001-01-01T00:00:00Z, Go's time.Time{}.
    Timestamp::from_second(-62_135_596_800).unwrap_or(Timestamp::MIN)
}

pub(crate) fn time_at(v: &Value, path: &[&str]) -> Option<Timestamp> {
    get(v, path).and_then(Value::as_str).and_then(parse_time)
}

/// `b - a` as Go's saturating `time.Duration` (int64 nanoseconds).
pub(crate) fn elapsed_ns(a: Timestamp, b: Timestamp) -> i64 {
    let d = b.as_nanosecond() - a.as_nanosecond();
    i64::try_from(d).unwrap_or(if d < 0 { i64::MIN } else { i64::MAX })
}

/// Age of the timestamp at `path`: "<unknown>" when unset.
pub(crate) fn since(v: &Value, path: &[&str], now: Timestamp) -> String {
    super::age(get(v, path).and_then(Value::as_str), now)
}

pub(crate) fn since_time(t: Timestamp, now: Timestamp) -> String {
    human_duration(elapsed_ns(t, now))
}

/// The AGE cell of any object.
pub(crate) fn age_cell(obj: &Value, now: Timestamp) -> Value {
    s(since(obj, &["metadata", "creationTimestamp"], now))
}

const NS_PER_SEC: i64 = 1_000_000_000;
const NS_PER_MIN: i64 = 60 * NS_PER_SEC;
const NS_PER_HOUR: i64 = 60 * NS_PER_MIN;

/// Upstream's `duration.HumanDuration`: about two to three significant figures,
/// tolerating one second of clock skew into the future.
pub(crate) fn human_duration(ns: i64) -> String {
    let seconds = ns / NS_PER_SEC; // truncates toward zero, like int(d.Seconds())
    if seconds < -1 {
        return "<invalid>".into();
    }
    if seconds < 0 {
        return "0s".into();
    }
    if seconds < 60 * 2 {
        return format!("{seconds}s");
    }
    let minutes = ns / NS_PER_MIN;
    if minutes < 10 {
        let secs = seconds % 60;
        return if secs == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{secs}s")
        };
    }
    if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = ns / NS_PER_HOUR;
    if hours < 8 {
        let mins = minutes % 60;
        return if mins == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{mins}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{}h", hours / 24, h)
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let days = (hours / 24) % 365;
        return if days == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{}d", hours / 24 / 365, days)
        };
    }
    format!("{}y", hours / 24 / 365)
}

/// `labels.FormatLabels`: sorted `k=v` pairs joined by commas, "<none>" if empty.
pub(crate) fn format_labels(m: Option<&Map<String, Value>>) -> String {
    let mut pairs: Vec<String> = m
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
        .collect();
    pairs.sort();
    if pairs.is_empty() {
        "<none>".into()
    } else {
        pairs.join(",")
    }
}

/// `metav1.LabelSelectorAsSelector(sel).String()`: "" for a nil or empty
/// selector, `Err` for a selector upstream refuses to convert.
pub(crate) fn selector_string(sel: Option<&Value>) -> Result<String, ()> {
    let Some(sel) = sel.filter(|v| v.is_object()) else {
        return Ok(String::new());
    };
    // (key, rendered requirement); sorted by key like upstream's selector.Add.
    let mut reqs: Vec<(String, String)> = Vec::new();
    for (k, v) in map(sel, &["matchLabels"]).into_iter().flatten() {
        let v = v.as_str().ok_or(())?;
        reqs.push((k.clone(), format!("{k}={v}")));
    }
    for expr in list(sel, &["matchExpressions"]) {
        let key = text(expr, &["key"]);
        let mut values: Vec<&str> = list(expr, &["values"])
            .iter()
            .map(|v| v.as_str().ok_or(()))
            .collect::<Result<_, _>>()?;
        values.sort_unstable();
        let rendered = match text(expr, &["operator"]) {
            "In" | "NotIn" if values.is_empty() => return Err(()),
            "In" => format!("{key} in ({})", values.join(",")),
            "NotIn" => format!("{key} notin ({})", values.join(",")),
            "Exists" | "DoesNotExist" if !values.is_empty() => return Err(()),
            "Exists" => key.to_owned(),
            "DoesNotExist" => format!("!{key}"),
            _ => return Err(()),
        };
        reqs.push((key.to_owned(), rendered));
    }
    reqs.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(reqs
        .into_iter()
        .map(|(_, r)| r)
        .collect::<Vec<_>>()
        .join(","))
}

/// `metav1.FormatLabelSelector`: "<none>" for empty, "<error>" for invalid.
pub(crate) fn format_label_selector(sel: Option<&Value>) -> String {
    match selector_string(sel) {
        Ok(s) if s.is_empty() => "<none>".into(),
        Ok(s) => s,
        Err(()) => "<error>".into(),
    }
}

/// Container names and images, each comma-joined, for the -o wide columns.
pub(crate) fn container_cells(containers: &[Value]) -> (Value, Value) {
    let names: Vec<&str> = containers.iter().map(|c| text(c, &["name"])).collect();
    let images: Vec<&str> = containers.iter().map(|c| text(c, &["image"])).collect();
    (s(names.join(",")), s(images.join(",")))
}

/// `net.JoinHostPort`: brackets IPv6 literals.
pub(crate) fn join_host_port(host: &str, port: i64) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// A quantity as upstream prints it, `zero` when absent. Quantities are
/// shown as stored: canonicalisation happens when objects are written.
pub(crate) fn quantity(v: Option<&Value>, zero: &str) -> String {
    match v {
        Some(Value::String(q)) => q.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => zero.to_owned(),
    }
}

/// An IntOrString rendered as `intstr.String()`.
pub(crate) fn int_or_string(v: &Value) -> String {
    match v {
        Value::String(x) => x.clone(),
        Value::Number(_) => as_int(v).to_string(),
        _ => String::new(),
    }
}

/// Upstream's `listWithMoreString`: at most `max` items, then "+ N more...".
pub(crate) fn list_with_more(items: &[String], max: usize, empty: &str) -> String {
    let shown = items
        .iter()
        .take(max)
        .cloned()
        .collect::<Vec<_>>()
        .join(",");
    if items.len() > max {
        format!("{shown} + {} more...", items.len() - max)
    } else if shown.is_empty() {
        empty.to_owned()
    } else {
        shown
    }
}
