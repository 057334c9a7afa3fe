//! Conversion between a served version and the storage version of the same
//! objects. Most resources are served in one version and stored as such;
//! the exceptions share storage across groups or versions.

use serde_json::{json, Value};

use crate::resources::Resource;

/// From what a client sent (in `res`'s version) to what is stored.
pub fn to_storage(res: &Resource, mut obj: Value) -> Value {
    match (
        res.group.as_str(),
        res.version.as_str(),
        res.plural.as_str(),
    ) {
        ("events.k8s.io", "v1", "events") => obj = event_to_core(obj),
        ("autoscaling", "v1", "horizontalpodautoscalers") => obj = hpa_v1_to_v2(obj),
        _ => {}
    }
    set_type(&mut obj, &storage_api_version(res), &res.kind);
    obj
}

/// From the stored object to `res`'s version.
pub fn from_storage(res: &Resource, mut obj: Value) -> Value {
    match (
        res.group.as_str(),
        res.version.as_str(),
        res.plural.as_str(),
    ) {
        ("events.k8s.io", "v1", "events") => obj = core_to_event(obj),
        ("autoscaling", "v1", "horizontalpodautoscalers") => obj = hpa_v2_to_v1(obj),
        _ => {}
    }
    set_type(&mut obj, &res.api_version(), &res.kind);
    obj
}

/// `obj` (as stored) the way `res` serves it: borrowed when the stored form
/// already is that, as for most resources.
pub fn served<'a>(res: &Resource, obj: &'a Value) -> std::borrow::Cow<'a, Value> {
    let typed = obj.get("kind").and_then(Value::as_str) == Some(res.kind.as_str())
        && obj.get("apiVersion").and_then(Value::as_str) == Some(res.api_version().as_str());
    if typed && !needs_conversion(res) {
        std::borrow::Cow::Borrowed(obj)
    } else {
        std::borrow::Cow::Owned(from_storage(res, obj.clone()))
    }
}

/// Whether objects of `res` need converting on the way out.
pub fn needs_conversion(res: &Resource) -> bool {
    res.group != res.storage.0 || res.version != res.storage_version
}

fn storage_api_version(res: &Resource) -> String {
    if res.storage.0.is_empty() {
        res.storage_version.clone()
    } else {
        format!("{}/{}", res.storage.0, res.storage_version)
    }
}

fn set_type(obj: &mut Value, api_version: &str, kind: &str) {
    if let Some(o) = obj.as_object_mut() {
        // Keep apiVersion and kind first, as upstream's encoder does.
        let mut out = serde_json::Map::new();
        out.insert("kind".into(), json!(kind));
        out.insert("apiVersion".into(), json!(api_version));
        for (k, v) in std::mem::take(o) {
            if k != "kind" && k != "apiVersion" {
                out.insert(k, v);
            }
        }
        *o = out;
    }
}

fn mv(from: &mut Value, from_key: &str, to: &mut serde_json::Map<String, Value>, to_key: &str) {
    if let Some(v) = from.as_object_mut().and_then(|o| o.remove(from_key)) {
        to.insert(to_key.into(), v);
    }
}

/// events.k8s.io/v1 Event → core/v1 Event (upstream's field mapping).
fn event_to_core(mut e: Value) -> Value {
    let mut out = serde_json::Map::new();
    for (from, to) in [
        ("metadata", "metadata"),
        ("regarding", "involvedObject"),
        ("related", "related"),
        ("note", "message"),
        ("reason", "reason"),
        ("type", "type"),
        ("action", "action"),
        ("eventTime", "eventTime"),
        ("series", "series"),
        ("reportingController", "reportingComponent"),
        ("reportingInstance", "reportingInstance"),
        ("deprecatedSource", "source"),
        ("deprecatedFirstTimestamp", "firstTimestamp"),
        ("deprecatedLastTimestamp", "lastTimestamp"),
        ("deprecatedCount", "count"),
    ] {
        mv(&mut e, from, &mut out, to);
    }
    Value::Object(out)
}

fn core_to_event(mut e: Value) -> Value {
    let mut out = serde_json::Map::new();
    for (from, to) in [
        ("metadata", "metadata"),
        ("involvedObject", "regarding"),
        ("related", "related"),
        ("message", "note"),
        ("reason", "reason"),
        ("type", "type"),
        ("action", "action"),
        ("eventTime", "eventTime"),
        ("series", "series"),
        ("reportingComponent", "reportingController"),
        ("reportingInstance", "reportingInstance"),
        ("source", "deprecatedSource"),
        ("firstTimestamp", "deprecatedFirstTimestamp"),
        ("lastTimestamp", "deprecatedLastTimestamp"),
        ("count", "deprecatedCount"),
    ] {
        mv(&mut e, from, &mut out, to);
    }
    Value::Object(out)
}

/// autoscaling/v1 keeps only a CPU utilization target; v2 holds a list of
/// metrics. The CPU target maps onto a Resource metric.
fn hpa_v1_to_v2(mut h: Value) -> Value {
    if let Some(spec) = h.get_mut("spec").and_then(Value::as_object_mut) {
        if let Some(cpu) = spec.remove("targetCPUUtilizationPercentage") {
            spec.insert(
                "metrics".into(),
                json!([{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": cpu}}}]),
            );
        }
    }
    if let Some(status) = h.get_mut("status").and_then(Value::as_object_mut) {
        if let Some(cpu) = status.remove("currentCPUUtilizationPercentage") {
            status.insert(
                "currentMetrics".into(),
                json!([{"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": cpu}}}]),
            );
        }
    }
    h
}

fn hpa_v2_to_v1(mut h: Value) -> Value {
    if let Some(spec) = h.get_mut("spec").and_then(Value::as_object_mut) {
        let cpu = spec.remove("metrics").and_then(|m| {
            m.as_array()?.iter().find_map(|m| {
                (m.pointer("/resource/name")? == "cpu")
                    .then(|| m.pointer("/resource/target/averageUtilization").cloned())
                    .flatten()
            })
        });
        spec.remove("behavior");
        if let Some(cpu) = cpu {
            spec.insert("targetCPUUtilizationPercentage".into(), cpu);
        }
    }
    if let Some(status) = h.get_mut("status").and_then(Value::as_object_mut) {
        let cpu = status.remove("currentMetrics").and_then(|m| {
            m.as_array()?.iter().find_map(|m| {
                (m.pointer("/resource/name")? == "cpu")
                    .then(|| m.pointer("/resource/current/averageUtilization").cloned())
                    .flatten()
            })
        });
        status.remove("conditions");
        if let Some(cpu) = cpu {
            status.insert("currentCPUUtilizationPercentage".into(), cpu);
        }
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::built_in;

    #[test]
    fn events_round_trip_between_groups() {
        let all = built_in();
        let ev = all.iter().find(|r| r.group == "events.k8s.io").unwrap();
        let new = json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "e"},
            "regarding": {"kind": "Pod", "name": "p"}, "note": "hello", "reason": "Started", "type": "Normal",
            "reportingController": "kelson", "reportingInstance": "i", "action": "Run", "eventTime": "2025-01-01T00:00:00.000000Z"});
        let stored = to_storage(ev, new.clone());
        assert_eq!(stored["apiVersion"], "v1");
        assert_eq!(stored["message"], "hello");
        assert_eq!(stored["involvedObject"]["name"], "p");
        assert_eq!(from_storage(ev, stored), new);
    }

    #[test]
    fn hpa_cpu_target_maps_between_versions() {
        let all = built_in();
        let v1 = all
            .iter()
            .find(|r| r.plural == "horizontalpodautoscalers" && r.version == "v1")
            .unwrap();
        let h = json!({"apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "h"},
            "spec": {"maxReplicas": 5, "scaleTargetRef": {"kind": "Deployment", "name": "d"}, "targetCPUUtilizationPercentage": 80}});
        let stored = to_storage(v1, h.clone());
        assert_eq!(stored["apiVersion"], "autoscaling/v2");
        assert_eq!(
            stored["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"],
            80
        );
        assert_eq!(from_storage(v1, stored), h);
    }
}
