//! Remaining groups: RBAC, coordination (Lease), networking, scheduling.

use super::format as f;
use super::*;
use serde_json::Value;

pub(super) fn validate(
    group: &str,
    kind: &str,
    o: &Value,
    old: Option<&Value>,
    out: &mut Vec<Cause>,
) {
    match (group, kind) {
        ("apiextensions.k8s.io", "CustomResourceDefinition") => crd_schemas(o, out),
        ("rbac.authorization.k8s.io", "Role" | "ClusterRole") => {
            let namespaced = kind == "Role";
            for (i, r) in arr(o, "rules").iter().enumerate() {
                policy_rule(out, r, namespaced, &index("rules", i));
            }
            if kind == "ClusterRole" {
                if let Some(ar) = o.get("aggregationRule").filter(|v| v.is_object()) {
                    for (i, sel) in arr(ar, "clusterRoleSelectors").iter().enumerate() {
                        validate_label_selector(
                            out,
                            sel,
                            &index("aggregationRule.clusterRoleSelectors", i),
                        );
                    }
                }
            }
        }
        ("rbac.authorization.k8s.io", "RoleBinding" | "ClusterRoleBinding") => {
            binding(out, o, kind == "RoleBinding");
            if let Some(old) = old {
                if !super::core::json_equal_ignoring_empty(
                    o.get("roleRef").unwrap_or(&Value::Null),
                    old.get("roleRef").unwrap_or(&Value::Null),
                ) {
                    let rr = o.get("roleRef").unwrap_or(&Value::Null);
                    out.push(invalid(
                        "roleRef",
                        Bad::Raw(format!(
                            "rbac.RoleRef{{APIGroup:{}, Kind:{}, Name:{}}}",
                            f::go_quote(st(rr, "apiGroup")),
                            f::go_quote(st(rr, "kind")),
                            f::go_quote(st(rr, "name"))
                        )),
                        "cannot change roleRef",
                    ));
                }
            }
        }
        ("coordination.k8s.io", "Lease") => {
            let spec = o.get("spec").unwrap_or(&Value::Null);
            if let Some(d) = int(spec, "leaseDurationSeconds") {
                if d <= 0 {
                    out.push(invalid(
                        "spec.leaseDurationSeconds",
                        Bad::Int(d),
                        "must be greater than 0",
                    ));
                }
            }
            nonneg(out, spec, "leaseTransitions", "spec");
            if let Some(s_) = spec.get("strategy").and_then(Value::as_str) {
                if s_ != "OldestEmulationVersion" {
                    out.push(not_supported(
                        "spec.strategy",
                        s(s_),
                        &["OldestEmulationVersion"],
                    ));
                }
            }
        }
        ("scheduling.k8s.io", "PriorityClass") => {
            if let Some(v) = int(o, "value") {
                if v > 1_000_000_000
                    && !st(o.get("metadata").unwrap_or(&Value::Null), "name").starts_with("system-")
                {
                    out.push(forbidden(
                        "value",
                        "maximum allowed value of a user defined priority is 1000000000",
                    ));
                }
            }
            if let Some(old) = old {
                if int(o, "value") != int(old, "value") {
                    out.push(forbidden("value", "may not be changed in an update."));
                }
            }
        }
        ("networking.k8s.io", "NetworkPolicy") => {
            let spec = o.get("spec").unwrap_or(&Value::Null);
            if let Some(sel) = spec.get("podSelector").filter(|v| v.is_object()) {
                validate_label_selector(out, sel, "spec.podSelector");
            }
            for (i, t) in arr(spec, "policyTypes").iter().enumerate() {
                let t = t.as_str().unwrap_or_default();
                if t != "Ingress" && t != "Egress" {
                    out.push(not_supported(
                        &index("spec.policyTypes", i),
                        s(t),
                        &["Ingress", "Egress"],
                    ));
                }
            }
        }
        _ => {}
    }
}

fn policy_rule(out: &mut Vec<Cause>, r: &Value, namespaced: bool, path: &str) {
    if arr(r, "verbs").is_empty() {
        out.push(required(
            &child(path, "verbs"),
            "verbs must contain at least one value",
        ));
    }
    let urls = arr(r, "nonResourceURLs");
    if !urls.is_empty() {
        if namespaced {
            out.push(invalid(
                &child(path, "nonResourceURLs"),
                Bad::Raw(go_strings(urls)),
                "namespaced rules cannot apply to non-resource URLs",
            ));
        }
        if !arr(r, "apiGroups").is_empty()
            || !arr(r, "resources").is_empty()
            || !arr(r, "resourceNames").is_empty()
        {
            out.push(invalid(
                &child(path, "nonResourceURLs"),
                Bad::Raw(go_strings(urls)),
                "rules cannot apply to both regular resources and non-resource URLs",
            ));
        }
        return;
    }
    if arr(r, "apiGroups").is_empty() {
        out.push(required(
            &child(path, "apiGroups"),
            "resource rules must supply at least one api group",
        ));
    }
    if arr(r, "resources").is_empty() {
        out.push(required(
            &child(path, "resources"),
            "resource rules must supply at least one resource",
        ));
    }
}

fn go_strings(list: &[Value]) -> String {
    let items: Vec<String> = list
        .iter()
        .map(|v| f::go_quote(v.as_str().unwrap_or_default()))
        .collect();
    format!("[]string{{{}}}", items.join(", "))
}

fn binding(out: &mut Vec<Cause>, o: &Value, namespaced: bool) {
    let rr = o.get("roleRef").unwrap_or(&Value::Null);
    if st(rr, "apiGroup") != "rbac.authorization.k8s.io" {
        out.push(not_supported(
            "roleRef.apiGroup",
            s(st(rr, "apiGroup")),
            &["rbac.authorization.k8s.io"],
        ));
    }
    let kinds: &[&str] = if namespaced {
        &["Role", "ClusterRole"]
    } else {
        &["ClusterRole"]
    };
    if !kinds.contains(&st(rr, "kind")) {
        out.push(not_supported("roleRef.kind", s(st(rr, "kind")), kinds));
    }
    let name = st(rr, "name");
    if name.is_empty() {
        out.push(required("roleRef.name", ""));
    } else {
        for m in f::path_segment_name(name) {
            out.push(invalid("roleRef.name", s(name), &m));
        }
    }
    for (i, sub) in arr(o, "subjects").iter().enumerate() {
        let p = index("subjects", i);
        let name = st(sub, "name");
        if name.is_empty() {
            out.push(required(&child(&p, "name"), ""));
        }
        let ag = st(sub, "apiGroup");
        match st(sub, "kind") {
            "ServiceAccount" => {
                if !name.is_empty() {
                    for m in f::dns1123_subdomain(name) {
                        out.push(invalid(&child(&p, "name"), s(name), &m));
                    }
                }
                if !ag.is_empty() {
                    out.push(not_supported(&child(&p, "apiGroup"), s(ag), &[""]));
                }
                if !namespaced && st(sub, "namespace").is_empty() {
                    out.push(required(&child(&p, "namespace"), ""));
                }
            }
            "User" | "Group" => {
                if ag != "rbac.authorization.k8s.io" {
                    out.push(not_supported(
                        &child(&p, "apiGroup"),
                        s(ag),
                        &["rbac.authorization.k8s.io"],
                    ));
                }
            }
            other => out.push(not_supported(
                &child(&p, "kind"),
                s(other),
                &["ServiceAccount", "User", "Group"],
            )),
        }
    }
}

/// Each version's schema must be structural (and its defaults valid), or
/// its objects could not be pruned, defaulted and validated.
fn crd_schemas(o: &Value, out: &mut Vec<Cause>) {
    for (i, v) in arr(o.get("spec").unwrap_or(&Value::Null), "versions")
        .iter()
        .enumerate()
    {
        let Some(schema) = v.pointer("/schema/openAPIV3Schema") else {
            continue;
        };
        let opts = crate::structural::CheckOptions {
            status_subresource: v.pointer("/subresources/status").is_some(),
        };
        out.extend(crate::structural::check_crd_schema_with(
            schema,
            &format!("spec.versions[{i}].schema.openAPIV3Schema"),
            opts,
        ));
    }
}
