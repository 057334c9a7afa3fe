//! Pod and pod template defaults (`SetDefaults_PodSpec`, `SetDefaults_Pod`,
//! container/probe/volume defaults) and the pod create-time values set by
//! the registry strategy and default admission plugins.

use super::{list_mut, list_mut_v, set, set_str, set_str_v};
use crate::quantity::{parse_json, Quantity};
use serde_json::{json, Map, Value};

/// Upstream `parsers.ParseImageName` tag logic: an image without tag and
/// digest means `latest`.
fn image_tag(image: &str) -> &str {
    let (name, digest) = match image.split_once('@') {
        Some((n, _)) => (n, true),
        None => (image, false),
    };
    let last = name.rsplit('/').next().unwrap_or(name);
    match last.rsplit_once(':') {
        Some((_, tag)) => tag,
        None if digest => "",
        None => "latest",
    }
}

fn handler(h: &mut Value) {
    if let Some(g) = h.get_mut("httpGet").and_then(Value::as_object_mut) {
        set_str(g, "path", "/");
        set_str(g, "scheme", "HTTP");
    }
}

fn container(c: &mut Value) {
    let Some(m) = c.as_object_mut() else { return };
    if m.get("imagePullPolicy")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        let image = m.get("image").and_then(Value::as_str).unwrap_or("");
        let policy = if image_tag(image) == "latest" {
            "Always"
        } else {
            "IfNotPresent"
        };
        m.insert("imagePullPolicy".into(), json!(policy));
    }
    set_str(m, "terminationMessagePath", "/dev/termination-log");
    set_str(m, "terminationMessagePolicy", "File");
    set(m, "resources", json!({}));
    for p in list_mut(m, "ports") {
        set_str_v(p, "protocol", "TCP");
    }
    for k in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(p) = m.get_mut(k).filter(|v| v.is_object()) {
            if let Some(pm) = p.as_object_mut() {
                for (f, v) in [
                    ("timeoutSeconds", 1),
                    ("periodSeconds", 10),
                    ("successThreshold", 1),
                    ("failureThreshold", 3),
                ] {
                    if pm.get(f).and_then(Value::as_i64).is_none_or(|x| x == 0) {
                        pm.insert(f.into(), json!(v));
                    }
                }
            }
            handler(p);
        }
    }
    if let Some(l) = m.get_mut("lifecycle") {
        for k in ["postStart", "preStop"] {
            if let Some(h) = l.get_mut(k) {
                handler(h);
            }
        }
    }
    for e in list_mut(m, "env") {
        if let Some(fr) = e.pointer_mut("/valueFrom/fieldRef") {
            set_str_v(fr, "apiVersion", "v1");
        }
    }
}

const VOLUME_SOURCES_WITH_MODE: &[&str] = &["secret", "configMap", "downwardAPI", "projected"];

fn volume(v: &mut Value) {
    let Some(m) = v.as_object_mut() else { return };
    if !m.iter().any(|(k, x)| k != "name" && !x.is_null()) {
        m.insert("emptyDir".into(), json!({}));
    }
    for k in VOLUME_SOURCES_WITH_MODE {
        if let Some(src) = m.get_mut(*k).and_then(Value::as_object_mut) {
            set(src, "defaultMode", json!(420));
        }
    }
    if let Some(hp) = m.get_mut("hostPath").and_then(Value::as_object_mut) {
        set(hp, "type", json!(""));
    }
    if let Some(d) = m.get_mut("downwardAPI") {
        for item in list_mut_v(d, "items") {
            if let Some(fr) = item.get_mut("fieldRef") {
                set_str_v(fr, "apiVersion", "v1");
            }
        }
    }
    if let Some(p) = m.get_mut("projected") {
        for src in list_mut_v(p, "sources") {
            if let Some(t) = src
                .get_mut("serviceAccountToken")
                .and_then(Value::as_object_mut)
            {
                set(t, "expirationSeconds", json!(3600));
            }
            if let Some(d) = src.get_mut("downwardAPI") {
                for item in list_mut_v(d, "items") {
                    if let Some(fr) = item.get_mut("fieldRef") {
                        set_str_v(fr, "apiVersion", "v1");
                    }
                }
            }
        }
    }
}

/// `SetDefaults_PodSpec` and nested defaults; `is_pod` adds `SetDefaults_Pod`.
pub(super) fn pod_spec(spec: &mut Value, is_pod: bool) {
    let Some(s) = spec.as_object_mut() else {
        return;
    };
    set_str(s, "dnsPolicy", "ClusterFirst");
    set_str(s, "restartPolicy", "Always");
    set(s, "securityContext", json!({}));
    set(s, "terminationGracePeriodSeconds", json!(30));
    set_str(s, "schedulerName", "default-scheduler");
    for k in ["containers", "initContainers", "ephemeralContainers"] {
        for c in list_mut(s, k) {
            container(c);
        }
    }
    for v in list_mut(s, "volumes") {
        volume(v);
    }
    if !is_pod {
        return;
    }
    set(s, "enableServiceLinks", json!(true));
    // Requests default to limits (pods only, not templates).
    for k in ["containers", "initContainers"] {
        for c in list_mut(s, k) {
            let Some(r) = c.get_mut("resources").and_then(Value::as_object_mut) else {
                continue;
            };
            let Some(limits) = r.get("limits").and_then(Value::as_object).cloned() else {
                continue;
            };
            let req = r.entry("requests").or_insert_with(|| json!({}));
            if let Some(req) = req.as_object_mut() {
                for (name, q) in limits {
                    req.entry(name).or_insert(q);
                }
            }
        }
    }
    if s.get("hostNetwork")
        .and_then(Value::as_bool)
        .unwrap_or(false)
    {
        for k in ["containers", "initContainers"] {
            for c in list_mut(s, k) {
                for p in list_mut_v(c, "ports") {
                    if let Some(pm) = p.as_object_mut() {
                        if pm.get("hostPort").and_then(Value::as_i64).unwrap_or(0) == 0 {
                            if let Some(cp) = pm.get("containerPort").cloned() {
                                pm.insert("hostPort".into(), cp);
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Values a Pod gets on create from its registry strategy and the default
/// admission chain (ServiceAccount, Priority, DefaultTolerationSeconds).
pub(super) fn pod_extras(o: &mut Map<String, Value>) {
    let qos;
    {
        let Some(s) = o.get_mut("spec").and_then(Value::as_object_mut) else {
            return;
        };
        // v1 conversion mirrors serviceAccountName into the deprecated field.
        let sa = s
            .get("serviceAccountName")
            .and_then(Value::as_str)
            .filter(|x| !x.is_empty())
            .or_else(|| {
                s.get("serviceAccount")
                    .and_then(Value::as_str)
                    .filter(|x| !x.is_empty())
            })
            .unwrap_or("default")
            .to_string();
        s.insert("serviceAccountName".into(), json!(sa));
        s.insert("serviceAccount".into(), json!(sa));
        if s.get("priority").is_none_or(Value::is_null) {
            let class = s
                .get("priorityClassName")
                .and_then(Value::as_str)
                .unwrap_or("");
            let value = match class {
                "" => Some(0),
                "system-cluster-critical" => Some(2_000_000_000),
                "system-node-critical" => Some(2_000_001_000),
                _ => None, // resolved from the PriorityClass by the server
            };
            if let Some(v) = value {
                s.insert("priority".into(), json!(v));
            }
        }
        set(s, "preemptionPolicy", json!("PreemptLowerPriority"));
        let tol = s.entry("tolerations").or_insert_with(|| json!([]));
        if let Some(list) = tol.as_array_mut() {
            for key in [
                "node.kubernetes.io/not-ready",
                "node.kubernetes.io/unreachable",
            ] {
                let covered = list.iter().any(|t| {
                    let k = t.get("key").and_then(Value::as_str).unwrap_or("");
                    let e = t.get("effect").and_then(Value::as_str).unwrap_or("");
                    let op = t.get("operator").and_then(Value::as_str).unwrap_or("");
                    (k == key || (k.is_empty() && op == "Exists"))
                        && (e.is_empty() || e == "NoExecute")
                });
                if !covered {
                    list.push(json!({"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}));
                }
            }
        }
        qos = qos_class(s);
    }
    let st = o.entry("status").or_insert_with(|| json!({}));
    if let Some(m) = st.as_object_mut() {
        set_str(m, "phase", "Pending");
        set_str(m, "qosClass", qos);
    }
}

/// Upstream `ComputePodQOS` over cpu and memory.
pub(crate) fn qos_class(s: &Map<String, Value>) -> &'static str {
    let mut requests: Vec<(String, Quantity)> = Vec::new();
    let mut limits: Vec<(String, Quantity)> = Vec::new();
    let mut guaranteed = true;
    let add = |acc: &mut Vec<(String, Quantity)>, name: &str, q: Quantity| match acc
        .iter_mut()
        .find(|(n, _)| n == name)
    {
        Some((_, sum)) => {
            if let Some(t) = sum.checked_add(&q) {
                *sum = t;
            }
        }
        None => acc.push((name.to_string(), q)),
    };
    for k in ["containers", "initContainers"] {
        for c in s
            .get(k)
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or(&[])
        {
            let r = c.get("resources").unwrap_or(&Value::Null);
            let mut lim_names = 0;
            for (which, acc) in [("requests", &mut requests), ("limits", &mut limits)] {
                let Some(m) = r.get(which).and_then(Value::as_object) else {
                    continue;
                };
                for name in ["cpu", "memory"] {
                    let Some(q) = m.get(name).and_then(|v| parse_json(v).ok()) else {
                        continue;
                    };
                    if which == "limits" {
                        lim_names += 1;
                    }
                    if !q.is_zero() {
                        add(acc, name, q);
                    }
                }
            }
            if lim_names < 2 {
                guaranteed = false;
            }
        }
    }
    if requests.is_empty() && limits.is_empty() {
        return "BestEffort";
    }
    if guaranteed {
        for (name, req) in &requests {
            if !limits.iter().any(|(n, l)| n == name && l == req) {
                guaranteed = false;
            }
        }
    }
    if guaranteed && requests.len() == limits.len() {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

#[cfg(test)]
mod tests {
    use super::image_tag;

    #[test]
    fn image_tags_like_upstream_parser() {
        assert_eq!(image_tag("nginx"), "latest");
        assert_eq!(image_tag("nginx:1.27"), "1.27");
        assert_eq!(image_tag("localhost:5000/app"), "latest");
        assert_eq!(image_tag("localhost:5000/app:v2"), "v2");
        assert_eq!(image_tag("busybox@sha256:abcd"), "");
        assert_eq!(image_tag("busybox:latest@sha256:abcd"), "latest");
    }
}
