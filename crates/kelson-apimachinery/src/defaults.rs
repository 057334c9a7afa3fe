//! Defaulting of built-in types, mirroring upstream's `SetDefaults_*`
//! functions plus the values registry strategies and default admission
//! plugins fill in on create, so that an object read back after a create
//! looks like one from a real API server.
//!
//! Every default only fills a missing (or empty) field, so applying it again
//! — e.g. on an update carrying a previously read object — changes nothing.

use serde_json::{json, Map, Value};

mod pod;

/// The QoS class upstream computes for a pod spec (BestEffort, Burstable or
/// Guaranteed), from its containers' cpu and memory requests and limits.
pub fn pod_qos_class(spec: &Value) -> &'static str {
    spec.as_object().map(pod::qos_class).unwrap_or("BestEffort")
}

use pod::{pod_extras, pod_spec};

/// Applies upstream's defaulting for `group/version/kind` to `obj`.
pub fn apply(group: &str, version: &str, kind: &str, obj: &mut Value) {
    let _ = version; // defaults are identical across the served versions
    let Some(o) = obj.as_object_mut() else { return };
    match (group, kind) {
        ("", "Pod") => {
            pod_spec(o.entry("spec").or_insert_with(|| json!({})), true);
            pod_extras(o);
        }
        ("", "PodTemplate") => template(o.entry("template").or_insert_with(|| json!({}))),
        ("", "ReplicationController") => replication_controller(o),
        ("", "Service") => service(o),
        ("", "Secret") => set_str(o, "type", "Opaque"),
        ("", "Namespace") => namespace(o),
        ("", "PersistentVolumeClaim") => {
            let spec = o.entry("spec").or_insert_with(|| json!({}));
            if let Some(s) = spec.as_object_mut() {
                set_str(s, "volumeMode", "Filesystem");
            }
            status_phase(o, "Pending");
        }
        ("", "PersistentVolume") => {
            let spec = o.entry("spec").or_insert_with(|| json!({}));
            if let Some(s) = spec.as_object_mut() {
                set_str(s, "persistentVolumeReclaimPolicy", "Retain");
                set_str(s, "volumeMode", "Filesystem");
            }
            status_phase(o, "Pending");
        }
        ("", "Endpoints") => {
            for ss in list_mut(o, "subsets") {
                for p in list_mut_v(ss, "ports") {
                    set_str_v(p, "protocol", "TCP");
                }
            }
        }
        ("", "Node") => {
            if let Some(st) = o.get_mut("status").and_then(Value::as_object_mut) {
                if !st.contains_key("allocatable") {
                    if let Some(c) = st.get("capacity").cloned() {
                        st.insert("allocatable".into(), c);
                    }
                }
            }
        }
        ("apps", "Deployment") => deployment(o),
        ("apps", "ReplicaSet") => {
            spec_of(o, |s| {
                set(s, "replicas", json!(1));
                template(s.entry("template").or_insert_with(|| json!({})));
            });
            empty_status(o);
        }
        ("apps", "StatefulSet") => statefulset(o),
        ("apps", "DaemonSet") => daemonset(o),
        ("batch", "Job") => job(o),
        ("batch", "CronJob") => cronjob(o),
        ("rbac.authorization.k8s.io", "RoleBinding" | "ClusterRoleBinding") => {
            for sub in list_mut(o, "subjects") {
                if let Some(s) = sub.as_object_mut() {
                    if !s.contains_key("apiGroup") {
                        let kind = s.get("kind").and_then(Value::as_str).unwrap_or("");
                        if kind == "User" || kind == "Group" {
                            s.insert("apiGroup".into(), json!("rbac.authorization.k8s.io"));
                        }
                    }
                }
            }
        }
        ("networking.k8s.io", "NetworkPolicy") => network_policy(o),
        ("autoscaling", "HorizontalPodAutoscaler") => {
            spec_of(o, |s| set(s, "minReplicas", json!(1)))
        }
        _ => {}
    }
}

// ------------------------------------------------------------ JSON helpers

pub(crate) fn set(m: &mut Map<String, Value>, k: &str, v: Value) {
    if m.get(k).is_none_or(Value::is_null) {
        m.insert(k.to_string(), v);
    }
}

/// Sets a string field if missing or empty (Go's zero value).
pub(crate) fn set_str(m: &mut Map<String, Value>, k: &str, v: &str) {
    if m.get(k).and_then(Value::as_str).is_none_or(str::is_empty) {
        m.insert(k.to_string(), json!(v));
    }
}

pub(crate) fn set_str_v(v: &mut Value, k: &str, val: &str) {
    if let Some(m) = v.as_object_mut() {
        set_str(m, k, val);
    }
}

pub(crate) fn list_mut<'a>(
    m: &'a mut Map<String, Value>,
    k: &str,
) -> std::slice::IterMut<'a, Value> {
    match m.get_mut(k).and_then(Value::as_array_mut) {
        Some(a) => a.iter_mut(),
        None => [].iter_mut(),
    }
}

pub(crate) fn list_mut_v<'a>(v: &'a mut Value, k: &str) -> std::slice::IterMut<'a, Value> {
    match v.as_object_mut() {
        Some(m) => list_mut(m, k),
        None => [].iter_mut(),
    }
}

fn spec_of(o: &mut Map<String, Value>, f: impl FnOnce(&mut Map<String, Value>)) {
    let spec = o.entry("spec").or_insert_with(|| json!({}));
    if let Some(s) = spec.as_object_mut() {
        f(s);
    }
}

/// Workload create responses carry `status: {}`.
fn empty_status(o: &mut Map<String, Value>) {
    set(o, "status", json!({}));
}

fn status_phase(o: &mut Map<String, Value>, phase: &str) {
    let st = o.entry("status").or_insert_with(|| json!({}));
    set_str_v(st, "phase", phase);
}

/// Pod template defaults; upstream also serializes the zero creation
/// timestamp of an embedded ObjectMeta as `creationTimestamp: null`.
pub(crate) fn template(t: &mut Value) {
    let Some(tm) = t.as_object_mut() else { return };
    let meta = tm.entry("metadata").or_insert_with(|| json!({}));
    if let Some(m) = meta.as_object_mut() {
        if !m.contains_key("creationTimestamp") {
            m.insert("creationTimestamp".into(), Value::Null);
        }
    }
    pod_spec(tm.entry("spec").or_insert_with(|| json!({})), false);
}

fn template_labels(o: &Map<String, Value>, path: &[&str]) -> Option<Value> {
    let mut cur = o.get(path[0])?;
    for p in &path[1..] {
        cur = cur.get(*p)?;
    }
    cur.as_object()
        .filter(|m| !m.is_empty())
        .map(|m| Value::Object(m.clone()))
}

// ------------------------------------------------------------------- kinds

fn replication_controller(o: &mut Map<String, Value>) {
    let labels = template_labels(o, &["spec", "template", "metadata", "labels"]);
    spec_of(o, |s| {
        set(s, "replicas", json!(1));
        if let Some(l) = &labels {
            if s.get("selector")
                .and_then(Value::as_object)
                .is_none_or(|m| m.is_empty())
            {
                s.insert("selector".into(), l.clone());
            }
        }
        if let Some(t) = s.get_mut("template") {
            template(t);
        }
    });
    if let Some(l) = labels {
        let meta = o.entry("metadata").or_insert_with(|| json!({}));
        if let Some(m) = meta.as_object_mut() {
            if m.get("labels")
                .and_then(Value::as_object)
                .is_none_or(|x| x.is_empty())
            {
                m.insert("labels".into(), l);
            }
        }
    }
    empty_status(o);
}

fn service(o: &mut Map<String, Value>) {
    spec_of(o, |s| {
        set_str(s, "sessionAffinity", "None");
        let aff = s
            .get("sessionAffinity")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        if aff == "None" {
            s.remove("sessionAffinityConfig");
        } else if aff == "ClientIP"
            && s.get("sessionAffinityConfig")
                .and_then(|c| c.pointer("/clientIP/timeoutSeconds"))
                .is_none()
        {
            s.insert(
                "sessionAffinityConfig".into(),
                json!({"clientIP": {"timeoutSeconds": 10800}}),
            );
        }
        set_str(s, "type", "ClusterIP");
        for p in list_mut(s, "ports") {
            let Some(pm) = p.as_object_mut() else {
                continue;
            };
            set_str(pm, "protocol", "TCP");
            let tp = pm.get("targetPort");
            let unset = match tp {
                None | Some(Value::Null) => true,
                Some(Value::String(x)) => x.is_empty(),
                Some(n) => n.as_i64() == Some(0),
            };
            if unset {
                let port = pm.get("port").cloned().unwrap_or(json!(0));
                pm.insert("targetPort".into(), port);
            }
        }
        let ty = s
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let external = ty == "NodePort"
            || ty == "LoadBalancer"
            || s.get("externalIPs")
                .and_then(Value::as_array)
                .is_some_and(|a| !a.is_empty());
        if external {
            set_str(s, "externalTrafficPolicy", "Cluster");
        }
        if matches!(ty.as_str(), "NodePort" | "LoadBalancer" | "ClusterIP") {
            set(s, "internalTrafficPolicy", json!("Cluster"));
        }
        if ty == "LoadBalancer" {
            set(s, "allocateLoadBalancerNodePorts", json!(true));
        }
        // Registry strategy: keep clusterIP and clusterIPs in sync; the IP
        // allocator then records the single-stack IPv4 family.
        if ty != "ExternalName" {
            let cip = s
                .get("clusterIP")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let has_ips = s
                .get("clusterIPs")
                .and_then(Value::as_array)
                .is_some_and(|a| !a.is_empty());
            if !cip.is_empty() && !has_ips {
                s.insert("clusterIPs".into(), json!([cip]));
            }
            if cip.is_empty() {
                if let Some(first) = s
                    .get("clusterIPs")
                    .and_then(|a| a.get(0))
                    .and_then(Value::as_str)
                {
                    let first = first.to_string();
                    s.insert("clusterIP".into(), json!(first));
                }
            }
            set(s, "ipFamilyPolicy", json!("SingleStack"));
            if s.get("ipFamilies")
                .and_then(Value::as_array)
                .is_none_or(|a| a.is_empty())
            {
                let fam = match s.get("clusterIP").and_then(Value::as_str) {
                    Some(ip) if ip.contains(':') => "IPv6",
                    _ => "IPv4",
                };
                s.insert("ipFamilies".into(), json!([fam]));
            }
        }
    });
    let st = o.entry("status").or_insert_with(|| json!({}));
    if let Some(m) = st.as_object_mut() {
        set(m, "loadBalancer", json!({}));
    }
}

fn namespace(o: &mut Map<String, Value>) {
    let name = o
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if !name.is_empty() {
        let meta = o.entry("metadata").or_insert_with(|| json!({}));
        if let Some(m) = meta.as_object_mut() {
            let labels = m.entry("labels").or_insert_with(|| json!({}));
            if !labels.is_object() {
                *labels = json!({});
            }
            if let Some(l) = labels.as_object_mut() {
                l.insert("kubernetes.io/metadata.name".into(), json!(name));
            }
        }
    }
    // spec.finalizers is not a default: the API server sets it on create
    // only, so the namespace controller can clear it through finalize.
    status_phase(o, "Active");
}

fn deployment(o: &mut Map<String, Value>) {
    spec_of(o, |s| {
        set(s, "replicas", json!(1));
        let strat = s.entry("strategy").or_insert_with(|| json!({}));
        if let Some(st) = strat.as_object_mut() {
            set_str(st, "type", "RollingUpdate");
            if st.get("type").and_then(Value::as_str) == Some("RollingUpdate") {
                let ru = st.entry("rollingUpdate").or_insert_with(|| json!({}));
                if let Some(r) = ru.as_object_mut() {
                    set(r, "maxUnavailable", json!("25%"));
                    set(r, "maxSurge", json!("25%"));
                }
            }
        }
        set(s, "revisionHistoryLimit", json!(10));
        set(s, "progressDeadlineSeconds", json!(600));
        template(s.entry("template").or_insert_with(|| json!({})));
    });
    empty_status(o);
}

fn statefulset(o: &mut Map<String, Value>) {
    spec_of(o, |s| {
        set_str(s, "podManagementPolicy", "OrderedReady");
        let strat = s.entry("updateStrategy").or_insert_with(|| json!({}));
        if let Some(st) = strat.as_object_mut() {
            if st
                .get("type")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
            {
                st.insert("type".into(), json!("RollingUpdate"));
                set(st, "rollingUpdate", json!({}));
            }
            if st.get("type").and_then(Value::as_str) == Some("RollingUpdate") {
                if let Some(r) = st.get_mut("rollingUpdate").and_then(Value::as_object_mut) {
                    set(r, "partition", json!(0));
                }
            }
        }
        let pol = s
            .entry("persistentVolumeClaimRetentionPolicy")
            .or_insert_with(|| json!({}));
        set_str_v(pol, "whenDeleted", "Retain");
        set_str_v(pol, "whenScaled", "Retain");
        set(s, "replicas", json!(1));
        set(s, "revisionHistoryLimit", json!(10));
        template(s.entry("template").or_insert_with(|| json!({})));
        for pvc in list_mut(s, "volumeClaimTemplates") {
            if let Some(p) = pvc.as_object_mut() {
                let spec = p.entry("spec").or_insert_with(|| json!({}));
                set_str_v(spec, "volumeMode", "Filesystem");
                status_phase(p, "Pending");
            }
        }
    });
    empty_status(o);
}

fn daemonset(o: &mut Map<String, Value>) {
    spec_of(o, |s| {
        let strat = s.entry("updateStrategy").or_insert_with(|| json!({}));
        if let Some(st) = strat.as_object_mut() {
            set_str(st, "type", "RollingUpdate");
            if st.get("type").and_then(Value::as_str) == Some("RollingUpdate") {
                let ru = st.entry("rollingUpdate").or_insert_with(|| json!({}));
                if let Some(r) = ru.as_object_mut() {
                    set(r, "maxUnavailable", json!(1));
                    set(r, "maxSurge", json!(0));
                }
            }
        }
        set(s, "revisionHistoryLimit", json!(10));
        template(s.entry("template").or_insert_with(|| json!({})));
    });
    empty_status(o);
}

fn job_spec(s: &mut Map<String, Value>) {
    if s.get("completions").is_none_or(Value::is_null)
        && s.get("parallelism").is_none_or(Value::is_null)
    {
        s.insert("completions".into(), json!(1));
        s.insert("parallelism".into(), json!(1));
    }
    set(s, "parallelism", json!(1));
    if s.get("backoffLimitPerIndex").is_some_and(|v| !v.is_null()) {
        set(s, "backoffLimit", json!(i32::MAX));
    } else {
        set(s, "backoffLimit", json!(6));
    }
    set(s, "completionMode", json!("NonIndexed"));
    set(s, "suspend", json!(false));
    let policy = if s.get("podFailurePolicy").is_some_and(|v| !v.is_null()) {
        "Failed"
    } else {
        "TerminatingOrFailed"
    };
    set(s, "podReplacementPolicy", json!(policy));
}

fn job(o: &mut Map<String, Value>) {
    let uid = o
        .get("metadata")
        .and_then(|m| m.get("uid"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let name = o
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    spec_of(o, |s| {
        job_spec(s);
        let manual = s
            .get("manualSelector")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        // Registry strategy: generate the selector and template labels from
        // the object's uid (only possible once the server assigned one).
        if !manual && !uid.is_empty() {
            if s.get("selector").is_none_or(Value::is_null) {
                s.insert(
                    "selector".into(),
                    json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}),
                );
            }
            let t = s.entry("template").or_insert_with(|| json!({}));
            if let Some(tm) = t.as_object_mut() {
                let meta = tm.entry("metadata").or_insert_with(|| json!({}));
                if let Some(m) = meta.as_object_mut() {
                    let labels = m.entry("labels").or_insert_with(|| json!({}));
                    if let Some(l) = labels.as_object_mut() {
                        for (k, v) in [
                            ("batch.kubernetes.io/controller-uid", &uid),
                            ("batch.kubernetes.io/job-name", &name),
                            ("controller-uid", &uid),
                            ("job-name", &name),
                        ] {
                            l.entry(k).or_insert_with(|| json!(v));
                        }
                    }
                }
            }
        }
        template(s.entry("template").or_insert_with(|| json!({})));
    });
    let labels = template_labels(o, &["spec", "template", "metadata", "labels"]);
    if let Some(l) = labels {
        let meta = o.entry("metadata").or_insert_with(|| json!({}));
        if let Some(m) = meta.as_object_mut() {
            if m.get("labels")
                .and_then(Value::as_object)
                .is_none_or(|x| x.is_empty())
            {
                m.insert("labels".into(), l);
            }
        }
    }
    empty_status(o);
}

fn cronjob(o: &mut Map<String, Value>) {
    spec_of(o, |s| {
        set_str(s, "concurrencyPolicy", "Allow");
        set(s, "suspend", json!(false));
        set(s, "successfulJobsHistoryLimit", json!(3));
        set(s, "failedJobsHistoryLimit", json!(1));
        let jt = s.entry("jobTemplate").or_insert_with(|| json!({}));
        if let Some(j) = jt.as_object_mut() {
            let meta = j.entry("metadata").or_insert_with(|| json!({}));
            if let Some(m) = meta.as_object_mut() {
                if !m.contains_key("creationTimestamp") {
                    m.insert("creationTimestamp".into(), Value::Null);
                }
            }
            let spec = j.entry("spec").or_insert_with(|| json!({}));
            if let Some(js) = spec.as_object_mut() {
                template(js.entry("template").or_insert_with(|| json!({})));
            }
        }
    });
    empty_status(o);
}

fn network_policy(o: &mut Map<String, Value>) {
    spec_of(o, |s| {
        for dir in ["ingress", "egress"] {
            for rule in list_mut(s, dir) {
                for p in list_mut_v(rule, "ports") {
                    set_str_v(p, "protocol", "TCP");
                }
            }
        }
        if s.get("policyTypes")
            .and_then(Value::as_array)
            .is_none_or(|a| a.is_empty())
        {
            let mut types = vec![json!("Ingress")];
            if s.get("egress")
                .and_then(Value::as_array)
                .is_some_and(|a| !a.is_empty())
            {
                types.push(json!("Egress"));
            }
            s.insert("policyTypes".into(), Value::Array(types));
        }
    });
}

#[cfg(test)]
mod tests;
