//! Validation of built-in types, mirroring upstream's `pkg/apis/*/validation`.
//!
//! Objects are plain JSON (after defaulting). Every check produces a
//! [`Cause`] whose `reason`, `message` and `field` are exactly what the
//! upstream API server puts in the `details.causes` of a 422 `Invalid`
//! status, so clients (kubectl, controllers) see the same errors.

use serde_json::Value;

mod apps;
mod core;
mod format;
mod other;

pub use format::{
    config_map_key, dns1035_label, dns1123_label, dns1123_subdomain, label_value, port_name,
    qualified_name,
};

/// One field error, as in upstream `metav1.StatusCause`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Cause {
    /// Upstream CauseType, e.g. "FieldValueRequired".
    pub reason: &'static str,
    /// Upstream `field.Error.ErrorBody()`, e.g. `Required value`.
    pub message: String,
    /// Field path, e.g. `spec.template.spec.containers[0].image`.
    pub field: String,
}

/// How a bad value is rendered in a message (Go's `%q`, `%v` or `%#v`).
#[derive(Debug, Clone)]
pub(crate) enum Bad {
    Str(String),
    Int(i64),
    Bool(bool),
    /// Pre-rendered Go-syntax value (maps, structs, lists).
    Raw(String),
}

impl Bad {
    fn render(&self) -> String {
        match self {
            Bad::Str(s) => format::go_quote(s),
            Bad::Int(i) => i.to_string(),
            Bad::Bool(b) => b.to_string(),
            Bad::Raw(r) => r.clone(),
        }
    }
}

pub(crate) fn s(v: impl Into<String>) -> Bad {
    Bad::Str(v.into())
}

/// Renders a JSON value the way upstream's `%v`/`%#v` shows the Go value it
/// decoded into, for the scalar cases that matter.
pub(crate) fn bad_json(v: &Value) -> Bad {
    match v {
        Value::String(x) => Bad::Str(x.clone()),
        Value::Bool(b) => Bad::Bool(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => Bad::Int(i),
            None => Bad::Raw(n.to_string()),
        },
        Value::Null => Bad::Raw("null".into()),
        other => Bad::Raw(other.to_string()),
    }
}

/// Go `%#v` of a `map[string]string` (keys sorted, as Go's fmt does).
pub(crate) fn go_string_map(v: Option<&Value>) -> String {
    match v.and_then(Value::as_object) {
        None => "map[string]string(nil)".into(),
        Some(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            let items: Vec<String> = keys
                .iter()
                .map(|k| {
                    let val = m.get(*k).and_then(Value::as_str).unwrap_or_default();
                    format!("{}:{}", format::go_quote(k), format::go_quote(val))
                })
                .collect();
            format!("map[string]string{{{}}}", items.join(", "))
        }
    }
}

pub(crate) fn required(field: &str, detail: &str) -> Cause {
    let mut message = "Required value".to_string();
    if !detail.is_empty() {
        message.push_str(": ");
        message.push_str(detail);
    }
    Cause {
        reason: "FieldValueRequired",
        message,
        field: field.to_string(),
    }
}

pub(crate) fn invalid(field: &str, bad: Bad, detail: &str) -> Cause {
    let mut message = format!("Invalid value: {}", bad.render());
    if !detail.is_empty() {
        message.push_str(": ");
        message.push_str(detail);
    }
    Cause {
        reason: "FieldValueInvalid",
        message,
        field: field.to_string(),
    }
}

pub(crate) fn not_supported(field: &str, bad: Bad, valid: &[&str]) -> Cause {
    let mut message = format!("Unsupported value: {}", bad.render());
    if !valid.is_empty() {
        let q: Vec<String> = valid.iter().map(|v| format::go_quote(v)).collect();
        message.push_str(": supported values: ");
        message.push_str(&q.join(", "));
    }
    Cause {
        reason: "FieldValueNotSupported",
        message,
        field: field.to_string(),
    }
}

pub(crate) fn duplicate(field: &str, bad: Bad) -> Cause {
    Cause {
        reason: "FieldValueDuplicate",
        message: format!("Duplicate value: {}", bad.render()),
        field: field.to_string(),
    }
}

pub(crate) fn forbidden(field: &str, detail: &str) -> Cause {
    let mut message = "Forbidden".to_string();
    if !detail.is_empty() {
        message.push_str(": ");
        message.push_str(detail);
    }
    Cause {
        reason: "FieldValueForbidden",
        message,
        field: field.to_string(),
    }
}

pub(crate) fn not_found(field: &str, bad: Bad) -> Cause {
    Cause {
        reason: "FieldValueNotFound",
        message: format!("Not found: {}", bad.render()),
        field: field.to_string(),
    }
}

pub(crate) fn too_long(field: &str, max: usize) -> Cause {
    Cause {
        reason: "FieldValueTooLong",
        message: format!("Too long: may not be more than {max} bytes"),
        field: field.to_string(),
    }
}

pub(crate) const IMMUTABLE: &str = "field is immutable";
pub(crate) const NEGATIVE: &str = "must be greater than or equal to 0";

/// `field.Path` helpers: `child("spec", "containers")` → `spec.containers`.
pub(crate) fn child(p: &str, name: &str) -> String {
    if p.is_empty() {
        name.to_string()
    } else {
        format!("{p}.{name}")
    }
}
pub(crate) fn index(p: &str, i: usize) -> String {
    format!("{p}[{i}]")
}
pub(crate) fn key(p: &str, k: &str) -> String {
    format!("{p}[{k}]")
}

// JSON accessors that treat missing or mistyped fields as absent, so no
// input can make validation panic.
pub(crate) fn st<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or("")
}
pub(crate) fn arr<'a>(v: &'a Value, k: &str) -> &'a [Value] {
    v.get(k)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}
pub(crate) fn int(v: &Value, k: &str) -> Option<i64> {
    v.get(k).and_then(Value::as_i64)
}
pub(crate) fn obj<'a>(v: &'a Value, k: &str) -> Option<&'a serde_json::Map<String, Value>> {
    v.get(k).and_then(Value::as_object)
}
pub(crate) fn truthy(v: &Value, k: &str) -> bool {
    v.get(k).and_then(Value::as_bool).unwrap_or(false)
}
pub(crate) fn present(v: &Value, k: &str) -> bool {
    v.get(k).is_some_and(|x| !x.is_null())
}

/// Upstream `ValidateNonnegativeField`.
pub(crate) fn nonneg(out: &mut Vec<Cause>, v: &Value, k: &str, path: &str) {
    if let Some(n) = int(v, k) {
        if n < 0 {
            out.push(invalid(&child(path, k), Bad::Int(n), NEGATIVE));
        }
    }
}

/// Which rule a resource's `metadata.name` follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameRule {
    /// RFC 1123 subdomain (most resources).
    Subdomain,
    /// RFC 1123 label (namespaces).
    Label,
    /// RFC 1035 label (services).
    Dns1035Label,
    /// Path segment: anything but '.', '..', '/' and '%' (RBAC, CRD-less kinds).
    PathSegment,
}

/// The name rule upstream applies to `kind` in `group`.
pub fn name_rule(group: &str, kind: &str) -> NameRule {
    match (group, kind) {
        ("", "Namespace") => NameRule::Label,
        ("", "Service") => NameRule::Dns1035Label,
        ("rbac.authorization.k8s.io", _) => NameRule::PathSegment,
        // Token reviews and access reviews are not stored; their names are
        // not checked beyond path safety.
        ("authentication.k8s.io" | "authorization.k8s.io", _) => NameRule::PathSegment,
        _ => NameRule::Subdomain,
    }
}

/// Error strings of `rule` for `name` (`prefix`: it is a generateName).
pub(crate) fn name_errors(rule: NameRule, name: &str, prefix: bool) -> Vec<String> {
    let n = format::mask_trailing_dash(name, prefix);
    match rule {
        NameRule::Subdomain => format::dns1123_subdomain(&n),
        NameRule::Label => format::dns1123_label(&n),
        NameRule::Dns1035Label => format::dns1035_label(&n),
        NameRule::PathSegment => format::path_segment_name(name),
    }
}

/// Upstream `ValidateLabels`: keys are qualified names, values label values;
/// every error is reported on the map's own path.
pub(crate) fn validate_labels(out: &mut Vec<Cause>, labels: Option<&Value>, path: &str) {
    let Some(m) = labels.and_then(Value::as_object) else {
        return;
    };
    for (k, v) in m {
        for msg in format::qualified_name(k) {
            out.push(invalid(path, s(k), &msg));
        }
        let val = v.as_str().unwrap_or_default();
        for msg in format::label_value(val) {
            out.push(invalid(path, s(val), &msg));
        }
    }
}

/// Upstream `ValidateAnnotations`, including the 256 KiB total size limit.
pub(crate) fn validate_annotations(out: &mut Vec<Cause>, ann: Option<&Value>, path: &str) {
    let Some(m) = ann.and_then(Value::as_object) else {
        return;
    };
    let mut total = 0usize;
    for (k, v) in m {
        for msg in format::qualified_name(&k.to_lowercase()) {
            out.push(invalid(path, s(k), &msg));
        }
        total += k.len() + v.as_str().map_or(0, str::len);
    }
    if total > 256 * 1024 {
        out.push(too_long(path, 256 * 1024));
    }
}

/// Finalizer names kube itself understands without a domain prefix.
const STANDARD_FINALIZERS: &[&str] = &["kubernetes", "orphan", "foregroundDeletion"];

/// Validates object metadata on create (upstream `ValidateObjectMeta`).
pub fn validate_meta(meta: &Value, namespaced: bool, rule: NameRule) -> Vec<Cause> {
    let mut out = Vec::new();
    let p = "metadata";
    let gen = st(meta, "generateName");
    if !gen.is_empty() {
        for msg in name_errors(rule, gen, true) {
            out.push(invalid(&child(p, "generateName"), s(gen), &msg));
        }
    }
    let name = st(meta, "name");
    if name.is_empty() {
        out.push(required(
            &child(p, "name"),
            "name or generateName is required",
        ));
    } else {
        for msg in name_errors(rule, name, false) {
            out.push(invalid(&child(p, "name"), s(name), &msg));
        }
    }
    let ns = st(meta, "namespace");
    if namespaced {
        if ns.is_empty() {
            out.push(required(&child(p, "namespace"), ""));
        } else {
            for msg in format::dns1123_label(ns) {
                out.push(invalid(&child(p, "namespace"), s(ns), &msg));
            }
        }
    } else if !ns.is_empty() {
        out.push(forbidden(
            &child(p, "namespace"),
            "not allowed on this type",
        ));
    }
    nonneg(&mut out, meta, "generation", p);
    validate_labels(&mut out, meta.get("labels"), &child(p, "labels"));
    validate_annotations(&mut out, meta.get("annotations"), &child(p, "annotations"));
    validate_owner_refs(&mut out, meta, &child(p, "ownerReferences"));
    validate_finalizers(&mut out, meta, &child(p, "finalizers"));
    out
}

fn validate_owner_refs(out: &mut Vec<Cause>, meta: &Value, path: &str) {
    let mut first_controller: Option<String> = None;
    for r in arr(meta, "ownerReferences") {
        let api_version = st(r, "apiVersion");
        let version = api_version.rsplit('/').next().unwrap_or_default();
        if version.is_empty() || api_version.split('/').count() > 2 {
            out.push(invalid(
                &child(path, "apiVersion"),
                s(api_version),
                "version must not be empty",
            ));
        }
        for f in ["kind", "name", "uid"] {
            let val = st(r, f);
            if val.is_empty() {
                out.push(invalid(&child(path, f), s(val), "must not be empty"));
            }
        }
        if api_version == "v1" && st(r, "kind") == "Event" {
            out.push(invalid(
                path,
                Bad::Raw(r.to_string()),
                "/v1, Kind=Event is disallowed from being an owner",
            ));
        }
        if truthy(r, "controller") {
            let cur = format!("{}/{}", st(r, "kind"), st(r, "name"));
            match &first_controller {
                Some(first) => out.push(invalid(
                    path,
                    Bad::Raw(Value::Array(arr(meta, "ownerReferences").to_vec()).to_string()),
                    &format!("Only one reference can have Controller set to true. Found \"true\" in references for {first} and {cur}"),
                )),
                None => first_controller = Some(cur),
            }
        }
    }
}

fn validate_finalizers(out: &mut Vec<Cause>, meta: &Value, path: &str) {
    let list = arr(meta, "finalizers");
    let names: Vec<&str> = list.iter().filter_map(Value::as_str).collect();
    for f in &names {
        for msg in format::qualified_name(f) {
            out.push(invalid(path, s(*f), &msg));
        }
    }
    if names.contains(&"orphan") && names.contains(&"foregroundDeletion") {
        out.push(invalid(
            path,
            Bad::Raw(format!(
                "[]string{{{}}}",
                names
                    .iter()
                    .map(|n| format::go_quote(n))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            "finalizer orphan and foregroundDeletion cannot be both set",
        ));
    }
    for (i, f) in names.iter().enumerate() {
        if !f.contains('/') && !STANDARD_FINALIZERS.contains(f) {
            out.push(invalid(
                &index(path, i),
                s(*f),
                "name is neither a standard finalizer name nor is it fully qualified",
            ));
        }
    }
}

/// Upstream `ValidateObjectMetaUpdate`, minus the resourceVersion presence
/// check (the API server owns resourceVersion handling).
pub(crate) fn validate_meta_update(new: &Value, old: &Value) -> Vec<Cause> {
    let mut out = Vec::new();
    let nm = new.get("metadata").unwrap_or(&Value::Null);
    let om = old.get("metadata").unwrap_or(&Value::Null);
    let p = "metadata";
    if present(om, "deletionTimestamp") {
        let old_f: Vec<&str> = arr(om, "finalizers")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        let mut extra: Vec<&str> = arr(nm, "finalizers")
            .iter()
            .filter_map(Value::as_str)
            .filter(|f| !old_f.contains(f))
            .collect();
        extra.sort();
        extra.dedup();
        if !extra.is_empty() {
            let list: Vec<String> = extra.iter().map(|f| format::go_quote(f)).collect();
            out.push(forbidden(
                &child(p, "finalizers"),
                &format!("no new finalizers can be added if the object is being deleted, found new finalizers []string{{{}}}", list.join(", ")),
            ));
        }
    }
    if let (Some(n), Some(o)) = (int(nm, "generation"), int(om, "generation")) {
        if n < o {
            out.push(invalid(
                &child(p, "generation"),
                Bad::Int(n),
                "must not be decremented",
            ));
        }
    }
    for f in ["name", "namespace"] {
        if st(nm, f) != st(om, f) {
            out.push(invalid(&child(p, f), s(st(nm, f)), IMMUTABLE));
        }
    }
    // The server may fill these from the stored object; only a client that
    // sends a different value is wrong.
    for f in ["uid", "creationTimestamp"] {
        if !st(nm, f).is_empty() && !st(om, f).is_empty() && st(nm, f) != st(om, f) {
            out.push(invalid(&child(p, f), s(st(nm, f)), IMMUTABLE));
        }
    }
    validate_labels(&mut out, nm.get("labels"), &child(p, "labels"));
    validate_annotations(&mut out, nm.get("annotations"), &child(p, "annotations"));
    validate_owner_refs(&mut out, nm, &child(p, "ownerReferences"));
    validate_finalizers(&mut out, nm, &child(p, "finalizers"));
    out
}

/// Upstream `ValidateLabelSelector` for a `metav1.LabelSelector`.
pub(crate) fn validate_label_selector(out: &mut Vec<Cause>, sel: &Value, path: &str) {
    validate_labels(out, sel.get("matchLabels"), &child(path, "matchLabels"));
    for (i, e) in arr(sel, "matchExpressions").iter().enumerate() {
        let ep = index(&child(path, "matchExpressions"), i);
        let op = st(e, "operator");
        let values = arr(e, "values");
        match op {
            "In" | "NotIn" => {
                if values.is_empty() {
                    out.push(required(
                        &child(&ep, "values"),
                        "must be specified when `operator` is 'In' or 'NotIn'",
                    ));
                }
            }
            "Exists" | "DoesNotExist" => {
                if !values.is_empty() {
                    out.push(forbidden(
                        &child(&ep, "values"),
                        "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
                    ));
                }
            }
            _ => out.push(invalid(
                &child(&ep, "operator"),
                s(op),
                "not a valid selector operator",
            )),
        }
        for msg in format::qualified_name(st(e, "key")) {
            out.push(invalid(&child(&ep, "key"), s(st(e, "key")), &msg));
        }
        for (j, v) in values.iter().enumerate() {
            let val = v.as_str().unwrap_or_default();
            for msg in format::label_value(val) {
                out.push(invalid(&index(&child(&ep, "values"), j), s(val), &msg));
            }
        }
    }
}

/// Whether a `metav1.LabelSelector` matches `labels` (empty selector: all).
pub(crate) fn selector_matches(sel: &Value, labels: Option<&Value>) -> bool {
    let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
    if let Some(m) = obj(sel, "matchLabels") {
        for (k, v) in m {
            if get(k) != v.as_str() {
                return false;
            }
        }
    }
    for e in arr(sel, "matchExpressions") {
        let k = st(e, "key");
        let values: Vec<&str> = arr(e, "values").iter().filter_map(Value::as_str).collect();
        let ok = match st(e, "operator") {
            "In" => get(k).is_some_and(|v| values.contains(&v)),
            "NotIn" => get(k).is_none_or(|v| !values.contains(&v)),
            "Exists" => get(k).is_some(),
            "DoesNotExist" => get(k).is_none(),
            _ => false,
        };
        if !ok {
            return false;
        }
    }
    true
}

/// Go `%#v` of a `metav1.LabelSelector`, as upstream prints it in
/// "field is immutable" errors.
pub(crate) fn go_label_selector(sel: Option<&Value>) -> String {
    let Some(sel) = sel.filter(|v| v.is_object()) else {
        return "nil".into();
    };
    let exprs = arr(sel, "matchExpressions");
    let exprs = if exprs.is_empty() && !present(sel, "matchExpressions") {
        "[]v1.LabelSelectorRequirement(nil)".to_string()
    } else {
        let items: Vec<String> = exprs
            .iter()
            .map(|e| {
                let vals: Vec<String> = arr(e, "values")
                    .iter()
                    .filter_map(Value::as_str)
                    .map(format::go_quote)
                    .collect();
                format!(
                    "v1.LabelSelectorRequirement{{Key:{}, Operator:{}, Values:[]string{{{}}}}}",
                    format::go_quote(st(e, "key")),
                    format::go_quote(st(e, "operator")),
                    vals.join(", ")
                )
            })
            .collect();
        format!("[]v1.LabelSelectorRequirement{{{}}}", items.join(", "))
    };
    format!(
        "v1.LabelSelector{{MatchLabels:{}, MatchExpressions:{}}}",
        go_string_map(sel.get("matchLabels")),
        exprs
    )
}

/// Type-specific validation on create (`old` = None) or update.
pub fn validate(
    group: &str,
    version: &str,
    kind: &str,
    obj: &Value,
    old: Option<&Value>,
) -> Vec<Cause> {
    let _ = version; // all served versions share upstream's internal validation
    let meta = obj.get("metadata").unwrap_or(&Value::Null);
    let namespaced = !is_cluster_scoped(group, kind);
    let mut out = validate_meta(meta, namespaced, name_rule(group, kind));
    if let Some(old) = old {
        out.extend(validate_meta_update(obj, old));
    }
    match group {
        "" => core::validate(kind, obj, old, &mut out),
        "apps" | "batch" => apps::validate(kind, obj, old, &mut out),
        _ => other::validate(group, kind, obj, old, &mut out),
    }
    dedup(out)
}

/// Upstream aggregates identical messages once (`ToAggregate`).
fn dedup(list: Vec<Cause>) -> Vec<Cause> {
    let mut out: Vec<Cause> = Vec::with_capacity(list.len());
    for c in list {
        if !out.contains(&c) {
            out.push(c);
        }
    }
    out
}

/// Built-in kinds that are cluster-scoped.
pub(crate) fn is_cluster_scoped(group: &str, kind: &str) -> bool {
    matches!(
        (group, kind),
        (
            "",
            "Namespace" | "Node" | "PersistentVolume" | "ComponentStatus"
        ) | (
            "rbac.authorization.k8s.io",
            "ClusterRole" | "ClusterRoleBinding"
        ) | (
            "storage.k8s.io",
            "StorageClass" | "CSIDriver" | "CSINode" | "VolumeAttachment" | "VolumeAttributesClass"
        ) | ("scheduling.k8s.io", "PriorityClass")
            | ("apiextensions.k8s.io", "CustomResourceDefinition")
            | ("apiregistration.k8s.io", "APIService")
            | ("admissionregistration.k8s.io", _)
            | (
                "certificates.k8s.io",
                "CertificateSigningRequest" | "ClusterTrustBundle"
            )
            | (
                "networking.k8s.io",
                "IngressClass" | "IPAddress" | "ServiceCIDR"
            )
            | ("node.k8s.io", "RuntimeClass")
            | ("flowcontrol.apiserver.k8s.io", _)
            | (
                "authentication.k8s.io" | "authorization.k8s.io",
                "TokenReview"
                    | "SelfSubjectReview"
                    | "SubjectAccessReview"
                    | "SelfSubjectAccessReview"
                    | "SelfSubjectRulesReview"
            )
    )
}

#[cfg(test)]
mod tests;
