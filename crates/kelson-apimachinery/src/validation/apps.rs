//! Workload kinds: apps/v1 (Deployment, ReplicaSet, StatefulSet, DaemonSet)
//! and batch/v1 (Job, CronJob).

use super::core::{json_equal_ignoring_empty, pod_template};
use super::format as f;
use super::*;
use serde_json::Value;

pub(super) fn validate(kind: &str, o: &Value, old: Option<&Value>, out: &mut Vec<Cause>) {
    let spec = o.get("spec").unwrap_or(&Value::Null);
    let old_spec = old.map(|x| x.get("spec").unwrap_or(&Value::Null));
    match kind {
        "Deployment" | "ReplicaSet" => {
            replicated(out, spec, "deployment", kind);
            if kind == "Deployment" {
                deployment_extras(out, spec);
            }
        }
        "StatefulSet" => {
            replicated(out, spec, "statefulset", kind);
            statefulset_extras(out, spec, old_spec);
        }
        "DaemonSet" => {
            replicated(out, spec, "daemonset", kind);
            daemonset_strategy(out, spec);
        }
        "Job" => {
            job_spec(out, spec, "spec", true);
            if let Some(os) = old_spec {
                job_update(out, spec, os);
            }
        }
        "CronJob" => cronjob(out, spec),
        _ => {}
    }
    // apps/v1 selectors are immutable.
    if matches!(
        kind,
        "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet"
    ) {
        if let Some(os) = old_spec {
            if !json_equal_ignoring_empty(
                spec.get("selector").unwrap_or(&Value::Null),
                os.get("selector").unwrap_or(&Value::Null),
            ) {
                out.push(invalid(
                    "spec.selector",
                    Bad::Raw(go_label_selector(spec.get("selector"))),
                    IMMUTABLE,
                ));
            }
        }
    }
}

/// Selector, replicas and template rules shared by the apps/v1 workloads.
fn replicated(out: &mut Vec<Cause>, spec: &Value, what: &str, kind: &str) {
    if kind != "DaemonSet" {
        nonneg(out, spec, "replicas", "spec");
    }
    nonneg(out, spec, "minReadySeconds", "spec");
    let sel = spec.get("selector").filter(|v| v.is_object());
    match sel {
        None => out.push(required("spec.selector", "")),
        Some(sel) => {
            validate_label_selector(out, sel, "spec.selector");
            if arr(sel, "matchExpressions").is_empty()
                && obj(sel, "matchLabels").is_none_or(|m| m.is_empty())
            {
                out.push(invalid(
                    "spec.selector",
                    Bad::Raw(go_label_selector(Some(sel))),
                    &format!("empty selector is invalid for {what}"),
                ));
            }
        }
    }
    let t = spec.get("template").unwrap_or(&Value::Null);
    let labels = t.get("metadata").and_then(|m| m.get("labels"));
    if let Some(sel) = sel {
        let empty = arr(sel, "matchExpressions").is_empty()
            && obj(sel, "matchLabels").is_none_or(|m| m.is_empty());
        if !empty && !selector_matches(sel, labels) {
            out.push(invalid(
                "spec.template.metadata.labels",
                Bad::Raw(go_string_map(labels)),
                "`selector` does not match template `labels`",
            ));
        }
    }
    if kind == "StatefulSet" {
        // Pods of a StatefulSet mount its volumeClaimTemplates by name: the
        // template is checked as the pods the controller makes will be.
        pod_template(out, &with_claim_volumes(t, spec), "spec.template");
    } else {
        pod_template(out, t, "spec.template");
    }
    let ts = t.get("spec").unwrap_or(&Value::Null);
    if st(ts, "restartPolicy") != "Always" {
        out.push(not_supported(
            "spec.template.spec.restartPolicy",
            s(st(ts, "restartPolicy")),
            &["Always"],
        ));
    }
    if present(ts, "activeDeadlineSeconds") {
        let owner = if kind == "Deployment" {
            "ReplicaSet"
        } else {
            kind
        };
        out.push(forbidden(
            "spec.template.spec.activeDeadlineSeconds",
            &format!("activeDeadlineSeconds in {owner} is not Supported"),
        ));
    }
    nonneg(out, spec, "revisionHistoryLimit", "spec");
}

/// `template` plus a persistentVolumeClaim volume for each of the set's
/// volumeClaimTemplates the template does not already name.
fn with_claim_volumes(template: &Value, spec: &Value) -> Value {
    let mut t = template.clone();
    let claims: Vec<String> = arr(spec, "volumeClaimTemplates")
        .iter()
        .filter_map(|c| c.pointer("/metadata/name").and_then(Value::as_str))
        .map(String::from)
        .collect();
    if claims.is_empty() {
        return t;
    }
    if let Some(ps) = t.get_mut("spec").and_then(Value::as_object_mut) {
        let volumes = ps
            .entry("volumes")
            .or_insert_with(|| Value::Array(Vec::new()));
        if let Some(list) = volumes.as_array_mut() {
            for name in claims {
                if !list
                    .iter()
                    .any(|v| v.get("name").and_then(Value::as_str) == Some(&name))
                {
                    list.push(serde_json::json!({
                        "name": name,
                        "persistentVolumeClaim": {"claimName": name}
                    }));
                }
            }
        }
    }
    t
}

/// Renders an IntOrString the way its Go `String()` does.
fn int_or_string(v: &Value) -> String {
    match v {
        Value::String(x) => x.clone(),
        other => other.as_i64().unwrap_or(0).to_string(),
    }
}

/// (value, is_percent) of an IntOrString.
fn int_or_percent_value(v: &Value) -> i64 {
    match v {
        Value::String(x) if f::percent(x).is_empty() => {
            x.trim_end_matches('%').parse().unwrap_or(0)
        }
        Value::String(x) => x.parse().unwrap_or(0),
        other => other.as_i64().unwrap_or(0),
    }
}

fn positive_int_or_percent(out: &mut Vec<Cause>, v: Option<&Value>, path: &str) {
    match v {
        Some(Value::String(x)) => {
            for m in f::percent(x) {
                out.push(invalid(path, Bad::Raw(x.clone()), &m));
            }
        }
        Some(n) if n.is_number() => {
            let n = n.as_i64().unwrap_or(0);
            if n < 0 {
                out.push(invalid(path, Bad::Int(n), NEGATIVE));
            }
        }
        _ => {}
    }
}

fn not_more_than_100(out: &mut Vec<Cause>, v: Option<&Value>, path: &str) {
    if let Some(Value::String(x)) = v {
        if f::percent(x).is_empty() && int_or_percent_value(&Value::String(x.clone())) > 100 {
            out.push(invalid(
                path,
                Bad::Raw(x.clone()),
                "must not be greater than 100%",
            ));
        }
    }
}

fn deployment_extras(out: &mut Vec<Cause>, spec: &Value) {
    let strat = spec.get("strategy").unwrap_or(&Value::Null);
    let ty = st(strat, "type");
    let ru = strat.get("rollingUpdate").filter(|v| v.is_object());
    match ty {
        "Recreate" => {
            if ru.is_some() {
                out.push(forbidden(
                    "spec.strategy.rollingUpdate",
                    "may not be specified when strategy `type` is 'Recreate'",
                ));
            }
        }
        "RollingUpdate" => match ru {
            None => out.push(required(
                "spec.strategy.rollingUpdate",
                "this should be defaulted and never be nil",
            )),
            Some(ru) => {
                let p = "spec.strategy.rollingUpdate";
                let (mu, ms) = (ru.get("maxUnavailable"), ru.get("maxSurge"));
                positive_int_or_percent(out, mu, &child(p, "maxUnavailable"));
                positive_int_or_percent(out, ms, &child(p, "maxSurge"));
                if mu.map_or(0, int_or_percent_value) == 0
                    && ms.map_or(0, int_or_percent_value) == 0
                {
                    out.push(invalid(
                        &child(p, "maxUnavailable"),
                        Bad::Raw(mu.map_or("0".into(), int_or_string)),
                        "may not be 0 when `maxSurge` is 0",
                    ));
                }
                not_more_than_100(out, mu, &child(p, "maxUnavailable"));
            }
        },
        other => out.push(not_supported(
            "spec.strategy.type",
            s(other),
            &["Recreate", "RollingUpdate"],
        )),
    }
    if let Some(pds) = int(spec, "progressDeadlineSeconds") {
        if pds < 0 {
            out.push(invalid(
                "spec.progressDeadlineSeconds",
                Bad::Int(pds),
                NEGATIVE,
            ));
        } else if pds <= int(spec, "minReadySeconds").unwrap_or(0) {
            out.push(invalid(
                "spec.progressDeadlineSeconds",
                Bad::Int(pds),
                "must be greater than minReadySeconds",
            ));
        }
    }
}

fn daemonset_strategy(out: &mut Vec<Cause>, spec: &Value) {
    let strat = spec.get("updateStrategy").unwrap_or(&Value::Null);
    match st(strat, "type") {
        "OnDelete" => {}
        "RollingUpdate" => {
            let Some(ru) = strat.get("rollingUpdate").filter(|v| v.is_object()) else {
                out.push(required("spec.updateStrategy.rollingUpdate", ""));
                return;
            };
            let p = "spec.updateStrategy.rollingUpdate";
            let (mu, ms) = (ru.get("maxUnavailable"), ru.get("maxSurge"));
            positive_int_or_percent(out, mu, &child(p, "maxUnavailable"));
            positive_int_or_percent(out, ms, &child(p, "maxSurge"));
            let (u, sg) = (
                mu.map_or(0, int_or_percent_value),
                ms.map_or(0, int_or_percent_value),
            );
            if u == 0 && sg == 0 {
                out.push(invalid(
                    &child(p, "maxUnavailable"),
                    Bad::Raw(mu.map_or("0".into(), int_or_string)),
                    "may not be 0 when `maxSurge` is 0",
                ));
            }
            if u != 0 && sg != 0 {
                out.push(invalid(
                    &child(p, "maxSurge"),
                    Bad::Raw(ms.map_or("0".into(), int_or_string)),
                    "may not be set when maxUnavailable is non-zero",
                ));
            }
            not_more_than_100(out, mu, &child(p, "maxUnavailable"));
        }
        "" => out.push(required("spec.updateStrategy.type", "")),
        other => out.push(not_supported(
            "spec.updateStrategy.type",
            s(other),
            &["OnDelete", "RollingUpdate"],
        )),
    }
}

fn statefulset_extras(out: &mut Vec<Cause>, spec: &Value, old: Option<&Value>) {
    match st(spec, "podManagementPolicy") {
        "OrderedReady" | "Parallel" => {}
        "" => out.push(required("spec.podManagementPolicy", "")),
        other => out.push(invalid(
            "spec.podManagementPolicy",
            s(other),
            "must be 'OrderedReady' or 'Parallel'",
        )),
    }
    let strat = spec.get("updateStrategy").unwrap_or(&Value::Null);
    match st(strat, "type") {
        "RollingUpdate" | "OnDelete" => {}
        "" => out.push(required("spec.updateStrategy", "")),
        other => out.push(invalid(
            "spec.updateStrategy",
            s(other),
            "must be 'RollingUpdate' or 'OnDelete'",
        )),
    }
    if let Some(p) = strat
        .pointer("/rollingUpdate/partition")
        .and_then(Value::as_i64)
    {
        if p < 0 {
            out.push(invalid(
                "spec.updateStrategy.rollingUpdate.partition",
                Bad::Int(p),
                NEGATIVE,
            ));
        }
    }
    if let Some(old) = old {
        // Only these fields may change on update.
        let strip = |v: &Value| {
            let mut v = v.clone();
            if let Some(m) = v.as_object_mut() {
                for k in [
                    "replicas",
                    "ordinals",
                    "template",
                    "updateStrategy",
                    "persistentVolumeClaimRetentionPolicy",
                    "minReadySeconds",
                ] {
                    m.remove(k);
                }
            }
            v
        };
        if !json_equal_ignoring_empty(&strip(spec), &strip(old)) {
            out.push(forbidden("spec", "updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden"));
        }
    }
}

/// Upstream `ValidateJobSpec` (`require_selector`: a Job, not a template).
fn job_spec(out: &mut Vec<Cause>, spec: &Value, path: &str, require_selector: bool) {
    for k in [
        "parallelism",
        "completions",
        "activeDeadlineSeconds",
        "backoffLimit",
        "ttlSecondsAfterFinished",
    ] {
        nonneg(out, spec, k, path);
    }
    if let Some(m) = spec.get("completionMode").and_then(Value::as_str) {
        if m != "NonIndexed" && m != "Indexed" {
            out.push(not_supported(
                &child(path, "completionMode"),
                s(m),
                &["NonIndexed", "Indexed"],
            ));
        }
    }
    let t = spec.get("template").unwrap_or(&Value::Null);
    let tp = child(path, "template");
    let sel = spec.get("selector").filter(|v| v.is_object());
    match sel {
        None if require_selector => out.push(required(&child(path, "selector"), "")),
        None => {}
        Some(sel) => {
            validate_label_selector(out, sel, &child(path, "selector"));
            let labels = t.get("metadata").and_then(|m| m.get("labels"));
            if !selector_matches(sel, labels) {
                out.push(invalid(
                    &child(&child(&tp, "metadata"), "labels"),
                    Bad::Raw(go_string_map(labels)),
                    "`selector` does not match template `labels`",
                ));
            }
        }
    }
    pod_template(out, t, &tp);
    let rp = t
        .pointer("/spec/restartPolicy")
        .and_then(Value::as_str)
        .unwrap_or("");
    if rp != "OnFailure" && rp != "Never" {
        out.push(not_supported(
            &child(&child(&tp, "spec"), "restartPolicy"),
            s(rp),
            &["OnFailure", "Never"],
        ));
    }
}

fn job_update(out: &mut Vec<Cause>, spec: &Value, old: &Value) {
    let same = |k: &str| {
        json_equal_ignoring_empty(
            spec.get(k).unwrap_or(&Value::Null),
            old.get(k).unwrap_or(&Value::Null),
        )
    };
    if !same("selector") {
        out.push(invalid(
            "spec.selector",
            Bad::Raw(go_label_selector(spec.get("selector"))),
            IMMUTABLE,
        ));
    }
    if !same("template") {
        out.push(invalid(
            "spec.template",
            Bad::Raw("core.PodTemplateSpec{...}".into()),
            IMMUTABLE,
        ));
    }
    if !same("completionMode") {
        out.push(invalid(
            "spec.completionMode",
            s(st(spec, "completionMode")),
            IMMUTABLE,
        ));
    }
    let indexed = st(spec, "completionMode") == "Indexed";
    if !same("completions") && !indexed {
        match int(spec, "completions") {
            Some(c) => out.push(invalid("spec.completions", Bad::Int(c), IMMUTABLE)),
            None => out.push(invalid(
                "spec.completions",
                Bad::Raw("null".into()),
                IMMUTABLE,
            )),
        }
    }
}

fn cronjob(out: &mut Vec<Cause>, spec: &Value) {
    let sched = st(spec, "schedule");
    if sched.is_empty() {
        out.push(required("spec.schedule", ""));
    } else if !sched.starts_with('@') {
        let fields: Vec<&str> = sched
            .split_whitespace()
            .filter(|p| !p.starts_with("TZ=") && !p.starts_with("CRON_TZ="))
            .collect();
        if fields.len() != 5 {
            out.push(invalid(
                "spec.schedule",
                s(sched),
                &format!(
                    "expected exactly 5 fields, found {}: [{}]",
                    fields.len(),
                    fields.join(" ")
                ),
            ));
        }
        if sched.contains("TZ=") {
            out.push(invalid(
                "spec.schedule",
                s(sched),
                "cannot use TZ or CRON_TZ in schedule, use timeZone field instead",
            ));
        }
    }
    match st(spec, "concurrencyPolicy") {
        "Allow" | "Forbid" | "Replace" => {}
        "" => out.push(required("spec.concurrencyPolicy", "")),
        other => out.push(not_supported(
            "spec.concurrencyPolicy",
            s(other),
            &["Allow", "Forbid", "Replace"],
        )),
    }
    for k in [
        "startingDeadlineSeconds",
        "successfulJobsHistoryLimit",
        "failedJobsHistoryLimit",
    ] {
        nonneg(out, spec, k, "spec");
    }
    let jt = spec.get("jobTemplate").unwrap_or(&Value::Null);
    let js = jt.get("spec").unwrap_or(&Value::Null);
    if present(js, "selector") {
        out.push(invalid(
            "spec.jobTemplate.spec.selector",
            Bad::Raw(go_label_selector(js.get("selector"))),
            "`selector` will be auto-generated",
        ));
    }
    job_spec(out, js, "spec.jobTemplate.spec", false);
}
