//! Field selectors, as k8s.io/apimachinery/pkg/fields plus the per-type
//! field-label conversion and `GetAttrs` tables of the Kubernetes 1.33 API
//! server.
//!
//! Serving `?fieldSelector=` takes three steps, as upstream:
//! 1. [`parse`] the string (syntax and escaping errors);
//! 2. [`FieldSelector::convert`] it for the resource, which rejects labels the
//!    type does not support with upstream's exact message (HTTP 400) and maps
//!    legacy/alternate names (`spec.host`, events.k8s.io `regarding.*`);
//! 3. [`FieldSelector::matches_object`] each object, comparing against the
//!    string upstream derives for that field ([`field_value`]).

use std::fmt;

use serde_json::Value;

/// Errors from parsing or converting a field selector; `Display` is upstream's text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FieldError {
    #[error("invalid selector: '{selector}'; can't understand '{term}'")]
    Syntax { selector: String, term: String },
    #[error("invalid field selector: invalid escape sequence: {0}")]
    InvalidEscape(String),
    /// Upstream prints the rune with `%v`, i.e. as its code point number.
    #[error("invalid field selector: unescaped character in value: {}", *.0 as u32)]
    UnescapedRune(char),
    /// The field is not selectable for this resource; the message is the exact
    /// text upstream's conversion function returns (answered as HTTP 400).
    #[error("{0}")]
    NotSupported(String),
}

/// `=`/`==` (the same) or `!=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FieldOperator {
    Equals,
    NotEquals,
}

/// One `field op value` term (value already unescaped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldRequirement {
    pub field: String,
    pub operator: FieldOperator,
    pub value: String,
}

/// A conjunction of field terms; no terms selects everything.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FieldSelector {
    requirements: Vec<FieldRequirement>,
}

impl FieldSelector {
    pub fn everything() -> FieldSelector {
        FieldSelector::default()
    }

    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    pub fn requirements(&self) -> &[FieldRequirement] {
        &self.requirements
    }

    /// Whether every term holds, given a lookup of field values. A field the
    /// lookup does not know compares as `""`, like upstream's `fields.Set`.
    pub fn matches(&self, get: impl Fn(&str) -> Option<String>) -> bool {
        self.requirements.iter().all(|r| {
            let actual = get(&r.field).unwrap_or_default();
            match r.operator {
                FieldOperator::Equals => actual == r.value,
                FieldOperator::NotEquals => actual != r.value,
            }
        })
    }

    /// Matches a stored object of a built-in resource; use after [`FieldSelector::convert`].
    pub fn matches_object(&self, group: &str, resource: &str, obj: &Value) -> bool {
        self.matches(|f| field_value(group, resource, obj, f))
    }

    /// The value `field` must equal, if a term pins it (upstream `RequiresExactMatch`).
    pub fn requires_exact_match(&self, field: &str) -> Option<&str> {
        self.requirements
            .iter()
            .find(|r| r.field == field && r.operator == FieldOperator::Equals)
            .map(|r| r.value.as_str())
    }

    /// Applies the resource's field-label conversion to every term (upstream
    /// `Selector.Transform(ConvertFieldLabel)`): errors for unsupported labels
    /// and renames alternate labels to the ones [`field_value`] understands.
    pub fn convert(
        &self,
        group: &str,
        version: &str,
        resource: &str,
    ) -> Result<FieldSelector, FieldError> {
        let requirements = self
            .requirements
            .iter()
            .map(|r| {
                Ok(FieldRequirement {
                    field: convert_field_label(group, version, resource, &r.field)?.to_string(),
                    operator: r.operator,
                    value: r.value.clone(),
                })
            })
            .collect::<Result<Vec<_>, FieldError>>()?;
        Ok(FieldSelector { requirements })
    }
}

impl fmt::Display for FieldSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            let op = match r.operator {
                FieldOperator::Equals => "=",
                FieldOperator::NotEquals => "!=",
            };
            write!(f, "{}{op}{}", r.field, escape_value(&r.value))?;
        }
        Ok(())
    }
}

impl std::str::FromStr for FieldSelector {
    type Err = FieldError;
    fn from_str(s: &str) -> Result<FieldSelector, FieldError> {
        parse(s)
    }
}

/// Escapes `\`, `,` and `=` in a value (upstream `EscapeValue`).
pub fn escape_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '\\' | ',' | '=') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Reverses [`escape_value`]; a bare `,`/`=` or another escape is an error.
pub fn unescape_value(s: &str) -> Result<String, FieldError> {
    if !s.contains(['\\', ',', '=']) {
        return Ok(s.to_string());
    }
    let mut out = String::with_capacity(s.len());
    let mut in_slash = false;
    for c in s.chars() {
        if in_slash {
            if !matches!(c, '\\' | ',' | '=') {
                return Err(FieldError::InvalidEscape(format!("\\{c}")));
            }
            out.push(c);
            in_slash = false;
            continue;
        }
        match c {
            '\\' => in_slash = true,
            ',' | '=' => return Err(FieldError::UnescapedRune(c)),
            _ => out.push(c),
        }
    }
    if in_slash {
        return Err(FieldError::InvalidEscape("\\".to_string()));
    }
    Ok(out)
}

/// Parses `?fieldSelector=` (upstream `fields.ParseSelector`). No whitespace
/// is trimmed; terms come out sorted by their raw text, as upstream.
pub fn parse(selector: &str) -> Result<FieldSelector, FieldError> {
    let mut terms = split_terms(selector);
    terms.sort_unstable();
    let mut requirements = Vec::new();
    for term in terms.into_iter().filter(|t| !t.is_empty()) {
        let Some((lhs, op, rhs)) = split_term(term) else {
            return Err(FieldError::Syntax {
                selector: selector.to_string(),
                term: term.to_string(),
            });
        };
        requirements.push(FieldRequirement {
            field: lhs.to_string(),
            operator: op,
            value: unescape_value(rhs)?,
        });
    }
    Ok(FieldSelector { requirements })
}

/// Splits on commas not preceded by a backslash escape.
fn split_terms(s: &str) -> Vec<&str> {
    if s.is_empty() {
        return Vec::new();
    }
    let mut terms = Vec::new();
    let mut start = 0;
    let mut in_slash = false;
    for (i, c) in s.char_indices() {
        if in_slash {
            in_slash = false;
        } else if c == '\\' {
            in_slash = true;
        } else if c == ',' {
            terms.push(&s[start..i]);
            start = i + 1;
        }
    }
    terms.push(&s[start..]);
    terms
}

/// Finds the first operator position; at each position `!=` beats `==` beats `=`.
fn split_term(term: &str) -> Option<(&str, FieldOperator, &str)> {
    for (i, _) in term.char_indices() {
        let rest = &term[i..];
        for (op, kind) in [
            ("!=", FieldOperator::NotEquals),
            ("==", FieldOperator::Equals),
            ("=", FieldOperator::Equals),
        ] {
            if let Some(rhs) = rest.strip_prefix(op) {
                return Some((&term[..i], kind, rhs));
            }
        }
    }
    None
}

// ---------------------------------------------------------------------------
// Per-resource tables (Kubernetes 1.33 conversion funcs and GetAttrs).

const DEFAULT_FIELDS: &[&str] = &["metadata.name", "metadata.namespace"];

const POD_FIELDS: &[&str] = &[
    "metadata.name",
    "metadata.namespace",
    "spec.nodeName",
    "spec.restartPolicy",
    "spec.schedulerName",
    "spec.serviceAccountName",
    "spec.hostNetwork",
    "status.phase",
    "status.podIP",
    "status.podIPs",
    "status.nominatedNodeName",
];

const EVENT_FIELDS: &[&str] = &[
    "involvedObject.kind",
    "involvedObject.namespace",
    "involvedObject.name",
    "involvedObject.uid",
    "involvedObject.apiVersion",
    "involvedObject.resourceVersion",
    "involvedObject.fieldPath",
    "reason",
    "reportingComponent",
    "source",
    "type",
    "metadata.namespace",
    "metadata.name",
];

/// events.k8s.io labels and the core Event labels they stand for.
const EVENTS_V1_MAPPING: &[(&str, &str)] = &[
    ("reason", "reason"),
    ("regarding.kind", "involvedObject.kind"),
    ("regarding.namespace", "involvedObject.namespace"),
    ("regarding.name", "involvedObject.name"),
    ("regarding.uid", "involvedObject.uid"),
    ("regarding.apiVersion", "involvedObject.apiVersion"),
    (
        "regarding.resourceVersion",
        "involvedObject.resourceVersion",
    ),
    ("regarding.fieldPath", "involvedObject.fieldPath"),
    ("reportingController", "reportingComponent"),
    ("source", "source"),
    ("type", "type"),
    ("metadata.namespace", "metadata.namespace"),
    ("metadata.name", "metadata.name"),
];

const EVENTS_V1_FIELDS: &[&str] = &[
    "reason",
    "regarding.kind",
    "regarding.namespace",
    "regarding.name",
    "regarding.uid",
    "regarding.apiVersion",
    "regarding.resourceVersion",
    "regarding.fieldPath",
    "reportingController",
    "source",
    "type",
    "metadata.namespace",
    "metadata.name",
];

/// Field labels a client may use in `fieldSelector` for a built-in resource
/// (`group` is `""` for the core group). Types without a conversion function
/// upstream — including apps/v1 ReplicaSets, whose `status.replicas` upstream
/// rejects — accept only `metadata.name` and `metadata.namespace`. Note that
/// nodes and namespaces do not accept `metadata.namespace`.
pub fn supported_fields(group: &str, resource: &str) -> &'static [&'static str] {
    conversion_table(group, resource).unwrap_or(DEFAULT_FIELDS)
}

/// Where in an object [`field_value`] looks for `group`/`resource`: every
/// value it reads, apart from `metadata.name` and `metadata.namespace`, lies
/// at or below one of these paths (field names from the root). A reader
/// that parses only these parts (see [`crate::sparse`]) gets the same
/// field values.
pub fn field_sources(group: &str, resource: &str) -> &'static [&'static [&'static str]] {
    match (group, resource) {
        ("", "pods") => &[
            &["spec", "nodeName"],
            &["spec", "restartPolicy"],
            &["spec", "schedulerName"],
            &["spec", "serviceAccountName"],
            &["spec", "hostNetwork"],
            &["status", "phase"],
            &["status", "podIP"],
            &["status", "podIPs"],
            &["status", "nominatedNodeName"],
        ],
        ("", "nodes") => &[&["spec", "unschedulable"]],
        ("", "replicationcontrollers") => &[&["status", "replicas"]],
        ("", "events") => &[
            &["involvedObject"],
            &["reason"],
            &["type"],
            &["reportingComponent"],
            &["source"],
        ],
        ("", "namespaces") => &[&["status", "phase"]],
        ("", "secrets") => &[&["type"]],
        ("", "services") => &[&["spec", "clusterIP"], &["spec", "type"]],
        ("batch", "jobs") => &[&["status", "succeeded"]],
        ("certificates.k8s.io", _) => &[&["spec", "signerName"]],
        ("events.k8s.io", "events") => &[
            &["regarding"],
            &["reason"],
            &["type"],
            &["reportingController"],
            &["deprecatedSource"],
        ],
        ("resource.k8s.io", "resourceslices") => &[&["spec", "nodeName"], &["spec", "driver"]],
        _ => &[],
    }
}

/// The labels of resources for which upstream registers a field-label
/// conversion function; `None` means upstream's default conversion applies
/// (which decides the error text for an unsupported label).
fn conversion_table(group: &str, resource: &str) -> Option<&'static [&'static str]> {
    Some(match (group, resource) {
        ("", "pods") => POD_FIELDS,
        ("", "nodes") => &["metadata.name", "spec.unschedulable"],
        ("", "replicationcontrollers") => {
            &["metadata.name", "metadata.namespace", "status.replicas"]
        }
        ("", "events") => EVENT_FIELDS,
        ("", "namespaces") => &["status.phase", "metadata.name"],
        ("", "secrets") => &["type", "metadata.namespace", "metadata.name"],
        ("", "services") => &[
            "metadata.namespace",
            "metadata.name",
            "spec.clusterIP",
            "spec.type",
        ],
        ("batch", "jobs") => &["metadata.name", "metadata.namespace", "status.successful"],
        ("certificates.k8s.io", "certificatesigningrequests" | "clustertrustbundles") => {
            &["metadata.name", "spec.signerName"]
        }
        ("events.k8s.io", "events") => EVENTS_V1_FIELDS,
        ("resource.k8s.io", "resourceslices") => &["metadata.name", "spec.nodeName", "spec.driver"],
        _ => return None,
    })
}

/// Upstream `ConvertFieldLabel`: the label [`field_value`] understands, or
/// the exact error upstream returns for an unsupported label.
pub fn convert_field_label(
    group: &str,
    version: &str,
    resource: &str,
    label: &str,
) -> Result<&'static str, FieldError> {
    // Aliases first: legacy v1 clients send spec.host; events.k8s.io renames.
    if (group, resource, label) == ("", "pods", "spec.host") {
        return Ok("spec.nodeName");
    }
    if (group, resource) == ("events.k8s.io", "events") {
        return EVENTS_V1_MAPPING
            .iter()
            .find(|(k, _)| *k == label)
            .map(|(_, v)| *v)
            .ok_or_else(|| {
                FieldError::NotSupported(format!("field label not supported: {label}"))
            });
    }
    let fields = supported_fields(group, resource);
    if let Some(f) = fields.iter().find(|f| **f == label) {
        return Ok(f);
    }
    let msg = if conversion_table(group, resource).is_none() {
        format!(
            "{} is not a known field selector: only \"metadata.name\", \"metadata.namespace\"",
            crate::labels::go_quote(label)
        )
    } else {
        match (group, resource) {
            ("batch", "jobs") => format!(
                "field label {} not supported for Job",
                crate::labels::go_quote(label)
            ),
            ("resource.k8s.io", "resourceslices") => {
                format!("field label not supported for resource.k8s.io/{version}, Kind=ResourceSlice: {label}")
            }
            _ => format!("field label not supported: {label}"),
        }
    };
    Err(FieldError::NotSupported(msg))
}

/// The error upstream gives for a custom resource field that is not among
/// the CRD's `selectableFields` (or `metadata.name`/`metadata.namespace`).
pub fn custom_resource_unsupported(label: &str) -> FieldError {
    FieldError::NotSupported(format!("field label not supported: {label}"))
}

fn str_at<'a>(obj: &'a Value, path: &str) -> &'a str {
    obj.pointer(path).and_then(Value::as_str).unwrap_or("")
}

/// The string upstream compares for a (converted) field of a built-in
/// object, derived from its JSON as the registry's `GetAttrs` does: absent
/// strings are `""`, booleans `"true"`/`"false"`, counts decimal (`"0"` when
/// absent). `None` means the field is not selectable for that resource; a
/// selectable field upstream leaves out of its set (e.g. `status.podIPs`, or
/// `metadata.namespace` of a cluster-scoped object) is `Some("")`.
pub fn field_value(group: &str, resource: &str, obj: &Value, field: &str) -> Option<String> {
    let selectable = if (group, resource) == ("events.k8s.io", "events") {
        EVENTS_V1_MAPPING.iter().any(|(_, v)| *v == field)
    } else {
        supported_fields(group, resource).contains(&field)
    };
    if !selectable {
        return None;
    }
    let s = |p: &str| str_at(obj, p).to_string();
    let int = |p: &str| {
        obj.pointer(p)
            .and_then(Value::as_i64)
            .unwrap_or(0)
            .to_string()
    };
    let boolean = |p: &str| {
        obj.pointer(p)
            .and_then(Value::as_bool)
            .unwrap_or(false)
            .to_string()
    };
    let v = match field {
        "metadata.name" => s("/metadata/name"),
        "metadata.namespace" => s("/metadata/namespace"),
        _ => match (group, resource, field) {
            ("", "pods", "spec.nodeName") => s("/spec/nodeName"),
            ("", "pods", "spec.restartPolicy") => s("/spec/restartPolicy"),
            ("", "pods", "spec.schedulerName") => s("/spec/schedulerName"),
            ("", "pods", "spec.serviceAccountName") => s("/spec/serviceAccountName"),
            ("", "pods", "spec.hostNetwork") => boolean("/spec/hostNetwork"),
            ("", "pods", "status.phase") => s("/status/phase"),
            // v1 status.podIP converts into podIPs[0] when podIPs is empty.
            ("", "pods", "status.podIP") => {
                match obj.pointer("/status/podIPs/0/ip").and_then(Value::as_str) {
                    Some(ip) => ip.to_string(),
                    None => s("/status/podIP"),
                }
            }
            ("", "pods", "status.nominatedNodeName") => s("/status/nominatedNodeName"),
            ("", "nodes", "spec.unschedulable") => boolean("/spec/unschedulable"),
            ("", "replicationcontrollers", "status.replicas") => int("/status/replicas"),
            ("", "namespaces", "status.phase") => s("/status/phase"),
            ("", "secrets", "type") => s("/type"),
            ("", "services", "spec.clusterIP") => s("/spec/clusterIP"),
            ("", "services", "spec.type") => s("/spec/type"),
            ("batch", "jobs", "status.successful") => int("/status/succeeded"),
            ("certificates.k8s.io", _, "spec.signerName") => s("/spec/signerName"),
            ("resource.k8s.io", "resourceslices", "spec.nodeName") => s("/spec/nodeName"),
            ("resource.k8s.io", "resourceslices", "spec.driver") => s("/spec/driver"),
            ("", "events", f) => core_event_field(obj, f, false),
            ("events.k8s.io", "events", f) => core_event_field(obj, f, true),
            // Selectable but absent from upstream's set (status.podIPs).
            _ => String::new(),
        },
    };
    Some(v)
}

/// Event fields from either the core/v1 shape or (`v1_shape`) events.k8s.io/v1.
fn core_event_field(obj: &Value, field: &str, v1_shape: bool) -> String {
    let (regarding, reporting, source) = if v1_shape {
        (
            "/regarding",
            "/reportingController",
            "/deprecatedSource/component",
        )
    } else {
        (
            "/involvedObject",
            "/reportingComponent",
            "/source/component",
        )
    };
    match field {
        "reason" => str_at(obj, "/reason").to_string(),
        "type" => str_at(obj, "/type").to_string(),
        "reportingComponent" => str_at(obj, reporting).to_string(),
        // Upstream falls back to the reporting controller when no source is set.
        "source" => {
            let src = str_at(obj, source);
            if src.is_empty() {
                str_at(obj, reporting)
            } else {
                src
            }
            .to_string()
        }
        f => match f.strip_prefix("involvedObject.") {
            Some(sub) => str_at(obj, &format!("{regarding}/{sub}")).to_string(),
            None => String::new(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_and_prints_like_upstream() {
        let sel = parse("status.phase!=Running,spec.restartPolicy=Always").unwrap();
        // Terms are sorted by their raw text.
        assert_eq!(
            sel.to_string(),
            "spec.restartPolicy=Always,status.phase!=Running"
        );
        assert_eq!(parse("a==b").unwrap().to_string(), "a=b");
        assert_eq!(parse("").unwrap(), FieldSelector::everything());
        assert_eq!(parse("a=b,,").unwrap().requirements().len(), 1);
        let sel = parse("x=a\\,b\\=c\\\\").unwrap();
        assert_eq!(sel.requirements()[0].value, "a,b=c\\");
        assert_eq!(sel.to_string(), "x=a\\,b\\=c\\\\");
        assert_eq!(parse("x=").unwrap().requirements()[0].value, "");
        // Whitespace is part of the field name, as upstream.
        assert_eq!(parse("a = b").unwrap().requirements()[0].field, "a ");
        assert_eq!(parse("a=!b").unwrap().requirements()[0].value, "!b");
    }

    #[test]
    fn syntax_errors_match_upstream_text() {
        assert_eq!(
            parse("x in (a)").unwrap_err().to_string(),
            "invalid selector: 'x in (a)'; can't understand 'x in (a)'"
        );
        assert_eq!(
            parse("a=b,c").unwrap_err().to_string(),
            "invalid selector: 'a=b,c'; can't understand 'c'"
        );
        assert_eq!(
            parse("a=b=c").unwrap_err().to_string(),
            "invalid field selector: unescaped character in value: 61"
        );
        assert_eq!(
            parse("a=b\\x").unwrap_err().to_string(),
            "invalid field selector: invalid escape sequence: \\x"
        );
        assert_eq!(
            parse("a=b\\").unwrap_err().to_string(),
            "invalid field selector: invalid escape sequence: \\"
        );
    }

    #[test]
    fn unsupported_labels_get_upstream_messages() {
        let pods = parse("status.startTime=x")
            .unwrap()
            .convert("", "v1", "pods");
        assert_eq!(
            pods.unwrap_err().to_string(),
            "field label not supported: status.startTime"
        );
        let ing = parse("foo.bar=baz")
            .unwrap()
            .convert("networking.k8s.io", "v1", "ingresses");
        assert_eq!(
            ing.unwrap_err().to_string(),
            "\"foo.bar\" is not a known field selector: only \"metadata.name\", \"metadata.namespace\""
        );
        let rs = convert_field_label("apps", "v1", "replicasets", "status.replicas");
        assert!(rs
            .unwrap_err()
            .to_string()
            .starts_with("\"status.replicas\" is not a known"));
        let node = convert_field_label("", "v1", "nodes", "metadata.namespace");
        assert_eq!(
            node.unwrap_err().to_string(),
            "field label not supported: metadata.namespace"
        );
        let job = convert_field_label("batch", "v1", "jobs", "spec.x");
        assert_eq!(
            job.unwrap_err().to_string(),
            "field label \"spec.x\" not supported for Job"
        );
        let slice =
            convert_field_label("resource.k8s.io", "v1beta1", "resourceslices", "spec.pool");
        assert_eq!(
            slice.unwrap_err().to_string(),
            "field label not supported for resource.k8s.io/v1beta1, Kind=ResourceSlice: spec.pool"
        );
        let ev = convert_field_label("events.k8s.io", "v1", "events", "involvedObject.name");
        assert_eq!(
            ev.unwrap_err().to_string(),
            "field label not supported: involvedObject.name"
        );
    }

    #[test]
    fn aliases_are_converted() {
        assert_eq!(
            convert_field_label("", "v1", "pods", "spec.host"),
            Ok("spec.nodeName")
        );
        assert_eq!(
            convert_field_label("events.k8s.io", "v1", "events", "regarding.name"),
            Ok("involvedObject.name")
        );
        assert_eq!(
            convert_field_label("events.k8s.io", "v1", "events", "reportingController"),
            Ok("reportingComponent")
        );
    }

    #[test]
    fn pod_field_values() {
        let pod = json!({
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"restartPolicy": "Always"},
            "status": {"phase": "Running", "podIPs": [{"ip": "10.0.0.5"}, {"ip": "fd00::5"}]}
        });
        let v = |f| field_value("", "pods", &pod, f);
        assert_eq!(v("spec.nodeName").as_deref(), Some(""));
        assert_eq!(v("spec.hostNetwork").as_deref(), Some("false"));
        assert_eq!(v("status.podIP").as_deref(), Some("10.0.0.5"));
        assert_eq!(v("status.podIPs").as_deref(), Some(""));
        assert_eq!(v("status.startTime"), None);
        let sel = parse("spec.host=,status.phase=Running,metadata.namespace=default")
            .unwrap()
            .convert("", "v1", "pods")
            .unwrap();
        assert!(sel.matches_object("", "pods", &pod));
        let sel = parse("status.phase!=Running").unwrap();
        assert!(!sel.matches_object("", "pods", &pod));
    }

    #[test]
    fn other_resource_field_values() {
        let node = json!({"metadata": {"name": "n1"}, "spec": {"unschedulable": true}});
        assert_eq!(
            field_value("", "nodes", &node, "spec.unschedulable").as_deref(),
            Some("true")
        );
        let rc = json!({"metadata": {"name": "rc"}, "status": {}});
        assert_eq!(
            field_value("", "replicationcontrollers", &rc, "status.replicas").as_deref(),
            Some("0")
        );
        let job = json!({"metadata": {"name": "j"}, "status": {"succeeded": 3}});
        assert_eq!(
            field_value("batch", "jobs", &job, "status.successful").as_deref(),
            Some("3")
        );
        let secret = json!({"metadata": {"name": "s"}, "type": "kubernetes.io/tls"});
        let sel = parse("type=kubernetes.io/tls")
            .unwrap()
            .convert("", "v1", "secrets")
            .unwrap();
        assert!(sel.matches_object("", "secrets", &secret));
        let ns = json!({"metadata": {"name": "kube-system"}, "status": {"phase": "Active"}});
        assert_eq!(
            field_value("", "namespaces", &ns, "status.phase").as_deref(),
            Some("Active")
        );
        let cm = json!({"metadata": {"name": "c", "namespace": "d"}});
        assert_eq!(
            field_value("", "configmaps", &cm, "metadata.namespace").as_deref(),
            Some("d")
        );
        assert_eq!(field_value("", "configmaps", &cm, "data.x"), None);
    }

    #[test]
    fn event_fields_in_both_shapes() {
        let core = json!({
            "metadata": {"name": "e", "namespace": "default"},
            "involvedObject": {"kind": "Pod", "name": "web"},
            "reason": "Scheduled", "type": "Normal",
            "reportingComponent": "default-scheduler"
        });
        let sel = parse("involvedObject.kind=Pod,involvedObject.name=web,type=Normal").unwrap();
        assert!(sel
            .convert("", "v1", "events")
            .unwrap()
            .matches_object("", "events", &core));
        // No source component: upstream falls back to the reporting controller.
        assert_eq!(
            field_value("", "events", &core, "source").as_deref(),
            Some("default-scheduler")
        );

        let v1 = json!({
            "metadata": {"name": "e", "namespace": "default"},
            "regarding": {"kind": "Pod", "name": "web"},
            "reason": "Scheduled", "type": "Normal",
            "reportingController": "default-scheduler"
        });
        let sel = parse("regarding.name=web,reportingController=default-scheduler")
            .unwrap()
            .convert("events.k8s.io", "v1", "events")
            .unwrap();
        assert!(sel.matches_object("events.k8s.io", "events", &v1));
    }

    #[test]
    fn supported_fields_tables() {
        assert!(supported_fields("", "pods").contains(&"spec.hostNetwork"));
        assert!(!supported_fields("", "nodes").contains(&"metadata.namespace"));
        assert_eq!(supported_fields("apps", "deployments"), DEFAULT_FIELDS);
        assert_eq!(
            supported_fields("certificates.k8s.io", "certificatesigningrequests"),
            ["metadata.name", "spec.signerName"]
        );
    }

    #[test]
    fn exact_match_lookup() {
        let sel = parse("spec.nodeName=n1,status.phase!=Failed").unwrap();
        assert_eq!(sel.requires_exact_match("spec.nodeName"), Some("n1"));
        assert_eq!(sel.requires_exact_match("status.phase"), None);
    }

    #[test]
    fn field_sources_hold_everything_field_value_reads() {
        let who = json!({"kind": "Pod", "namespace": "ns", "name": "p", "uid": "u",
                         "apiVersion": "v1", "resourceVersion": "7", "fieldPath": "spec"});
        let full = json!({
            "metadata": {"name": "o", "namespace": "ns", "labels": {"a": "b"},
                         "managedFields": [{"manager": "m"}], "annotations": {"x": "y"}},
            "spec": {"nodeName": "n1", "restartPolicy": "Never", "schedulerName": "s",
                     "serviceAccountName": "sa", "hostNetwork": true, "unschedulable": true,
                     "clusterIP": "10.0.0.1", "type": "NodePort", "signerName": "k/s",
                     "driver": "d", "containers": [{"name": "c"}]},
            "status": {"phase": "Running", "podIP": "10.1.0.1", "podIPs": [{"ip": "10.1.0.2"}],
                       "nominatedNodeName": "n2", "replicas": 3, "succeeded": 2,
                       "conditions": [{"type": "Ready"}]},
            "involvedObject": who, "regarding": who,
            "reason": "R", "type": "Warning", "reportingComponent": "rc",
            "reportingController": "rctl", "source": {"component": "src"},
            "deprecatedSource": {"component": "dsrc"}, "data": {"k": "v"}
        });
        // Without the values others fall back from.
        let mut bare = full.clone();
        for (parent, key) in [
            ("status", "podIPs"),
            ("", "source"),
            ("", "deprecatedSource"),
        ] {
            let m = if parent.is_empty() {
                &mut bare
            } else {
                &mut bare[parent]
            };
            m.as_object_mut().unwrap().remove(key);
        }
        let resources = [
            ("", "pods"),
            ("", "nodes"),
            ("", "replicationcontrollers"),
            ("", "events"),
            ("", "namespaces"),
            ("", "secrets"),
            ("", "services"),
            ("batch", "jobs"),
            ("certificates.k8s.io", "certificatesigningrequests"),
            ("certificates.k8s.io", "clustertrustbundles"),
            ("events.k8s.io", "events"),
            ("resource.k8s.io", "resourceslices"),
            ("apps", "deployments"),
        ];
        for (group, resource) in resources {
            let filter = crate::sparse::Filter::new(
                [&["metadata", "name"][..], &["metadata", "namespace"]]
                    .into_iter()
                    .chain(field_sources(group, resource).iter().copied()),
            );
            let mut fields: Vec<&str> = supported_fields(group, resource).to_vec();
            fields.extend(EVENTS_V1_MAPPING.iter().map(|(_, v)| *v));
            for obj in [&full, &bare] {
                let sparse = filter.parse(&serde_json::to_vec(obj).unwrap()).unwrap();
                assert!(sparse
                    .get("spec")
                    .is_none_or(|s| s.get("containers").is_none()));
                for f in &fields {
                    assert_eq!(
                        field_value(group, resource, &sparse, f),
                        field_value(group, resource, obj, f),
                        "{group}/{resource} {f}"
                    );
                }
            }
        }
    }
}
