//! Resource quota usage evaluation, as upstream's quota evaluators
//! (k8s.io/kubernetes/pkg/quota/v1/evaluator/core and
//! k8s.io/apiserver/pkg/quota/v1): what one object charges against a
//! ResourceQuota, whether a quota's scopes select it, and ResourceList
//! arithmetic. Shared by the ResourceQuota admission plugin and the quota
//! controller, so both count exactly the same way.
//!
//! Pure functions over JSON. The only clock use is [`usage`], which needs
//! "now" to tell whether a deleting pod is past its grace period; callers
//! wanting determinism use [`usage_at`].

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde_json::{Map, Value};

use crate::quantity::{parse_json, Format, Quantity};

pub type ResourceList = BTreeMap<String, Quantity>;

/// Upstream `storageClassSuffix`: `<class>.storageclass.storage.k8s.io/<resource>`.
const STORAGE_CLASS_SUFFIX: &str = ".storageclass.storage.k8s.io/";

/// The compute resource names the pod evaluator tracks (upstream `podResources`).
const POD_RESOURCES: &[&str] = &[
    "count/pods",
    "cpu",
    "memory",
    "ephemeral-storage",
    "requests.cpu",
    "requests.memory",
    "requests.ephemeral-storage",
    "limits.cpu",
    "limits.memory",
    "limits.ephemeral-storage",
    "pods",
];

/// Names whose presence in a quota forces every container to declare them
/// (upstream's backward-compatibility `validationSet`).
const POD_VALIDATION_SET: &[&str] = &[
    "cpu",
    "memory",
    "requests.cpu",
    "requests.memory",
    "limits.cpu",
    "limits.memory",
];

const SERVICE_RESOURCES: &[&str] = &[
    "count/services",
    "services",
    "services.nodeports",
    "services.loadbalancers",
];

fn one() -> Quantity {
    Quantity::from_milli(1000, Format::DecimalSI)
}

fn count(n: usize) -> Quantity {
    Quantity::from_milli(
        i128::try_from(n).unwrap_or(i128::MAX / 1000) * 1000,
        Format::DecimalSI,
    )
}

fn zero() -> Quantity {
    Quantity::from_milli(0, Format::DecimalSI)
}

/// Upstream `ObjectCountQuotaResourceNameFor`: `count/<resource>[.<group>]`.
pub fn object_count_name(group: &str, resource: &str) -> String {
    if group.is_empty() {
        format!("count/{resource}")
    } else {
        format!("count/{resource}.{group}")
    }
}

/// The pre-`count/` names still honoured for a few core resources.
fn legacy_alias(group: &str, resource: &str) -> Option<&'static str> {
    if !group.is_empty() {
        return None;
    }
    match resource {
        "configmaps" => Some("configmaps"),
        "resourcequotas" => Some("resourcequotas"),
        "replicationcontrollers" => Some("replicationcontrollers"),
        "secrets" => Some("secrets"),
        _ => None,
    }
}

/// Usage of one object of `group`/`resource` (plural) toward a quota: e.g. a
/// pod gives pods, count/pods, requests.cpu, cpu, limits.memory, ...; a
/// service gives services, services.nodeports, services.loadbalancers,
/// count/services; a PVC requests.storage, persistentvolumeclaims,
/// <class>.storageclass.storage.k8s.io/...; any other resource
/// count/<resource>[.<group>]. Terminal pods (Succeeded/Failed) and pods
/// being deleted past their grace period count as nothing, as upstream.
pub fn usage(group: &str, resource: &str, obj: &Value) -> ResourceList {
    usage_at(group, resource, obj, Timestamp::now())
}

/// [`usage`] with an explicit "now" (for the deleting-pod grace check).
pub fn usage_at(group: &str, resource: &str, obj: &Value, now: Timestamp) -> ResourceList {
    match (group, resource) {
        ("", "pods") => pod_usage(obj, now),
        ("", "services") => service_usage(obj),
        ("", "persistentvolumeclaims") => pvc_usage(obj),
        _ => {
            let mut out = ResourceList::new();
            out.insert(object_count_name(group, resource), one());
            if let Some(alias) = legacy_alias(group, resource) {
                out.insert(alias.to_string(), one());
            }
            out
        }
    }
}

/// Whether the evaluator for `group`/`resource` tracks the quota resource
/// `name` (upstream `MatchingResources`). A quota applies to an object only
/// when its hard limits name at least one tracked resource.
pub fn tracks(group: &str, resource: &str, name: &str) -> bool {
    match (group, resource) {
        ("", "pods") => {
            POD_RESOURCES.contains(&name)
                || name.starts_with("hugepages-")
                || name.starts_with("requests.hugepages-")
                || (!is_native(name) && name.starts_with("requests."))
        }
        ("", "services") => SERVICE_RESOURCES.contains(&name),
        ("", "persistentvolumeclaims") => {
            name == "count/persistentvolumeclaims"
                || name == "persistentvolumeclaims"
                || name == "requests.storage"
                || ["persistentvolumeclaims", "requests.storage"]
                    .iter()
                    .any(|r| name.ends_with(&format!("{STORAGE_CLASS_SUFFIX}{r}")))
        }
        _ => {
            name == object_count_name(group, resource)
                || legacy_alias(group, resource) == Some(name)
        }
    }
}

/// Whether the object falls under the quota's spec.scopes / spec.scopeSelector.
///
/// Only pods understand scopes (upstream's other evaluators match no scope,
/// so a scoped quota never applies to them); an unscoped quota matches all.
pub fn matches_scopes(quota_spec: &Value, group: &str, resource: &str, obj: &Value) -> bool {
    let mut selectors: Vec<(String, String, Vec<String>)> = Vec::new();
    for s in quota_spec
        .get("scopes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(s) = s.as_str() {
            selectors.push((s.to_string(), "Exists".to_string(), Vec::new()));
        }
    }
    for e in quota_spec
        .pointer("/scopeSelector/matchExpressions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let name = e.get("scopeName").and_then(Value::as_str).unwrap_or("");
        let op = e.get("operator").and_then(Value::as_str).unwrap_or("");
        let values = e
            .get("values")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect();
        selectors.push((name.to_string(), op.to_string(), values));
    }
    let is_pod = group.is_empty() && resource == "pods";
    selectors
        .iter()
        .all(|(scope, op, values)| is_pod && pod_matches_scope(scope, op, values, obj))
}

fn pod_matches_scope(scope: &str, op: &str, values: &[String], pod: &Value) -> bool {
    let spec = pod.get("spec").unwrap_or(&Value::Null);
    match scope {
        "Terminating" => is_terminating(spec),
        "NotTerminating" => !is_terminating(spec),
        "BestEffort" => crate::defaults::pod_qos_class(spec) == "BestEffort",
        "NotBestEffort" => crate::defaults::pod_qos_class(spec) != "BestEffort",
        "PriorityClass" => {
            let class = spec
                .get("priorityClassName")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty());
            // A label-selector requirement over {PriorityClass: <name>}.
            match op {
                "Exists" => class.is_some(),
                "DoesNotExist" => class.is_none(),
                "In" => class.is_some_and(|c| values.iter().any(|v| v == c)),
                "NotIn" => !class.is_some_and(|c| values.iter().any(|v| v == c)),
                _ => false,
            }
        }
        "CrossNamespacePodAffinity" => uses_cross_namespace_affinity(spec),
        _ => false,
    }
}

fn is_terminating(spec: &Value) -> bool {
    spec.get("activeDeadlineSeconds")
        .and_then(Value::as_i64)
        .is_some_and(|s| s >= 0)
}

fn uses_cross_namespace_affinity(spec: &Value) -> bool {
    let cross = |term: &Value| {
        term.get("namespaces")
            .and_then(Value::as_array)
            .is_some_and(|a| !a.is_empty())
            || term.get("namespaceSelector").is_some_and(|s| !s.is_null())
    };
    ["podAffinity", "podAntiAffinity"].iter().any(|kind| {
        let a = spec.pointer(&format!("/affinity/{kind}"));
        let Some(a) = a else { return false };
        let required = a
            .get("requiredDuringSchedulingIgnoredDuringExecution")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .any(cross);
        let preferred = a
            .get("preferredDuringSchedulingIgnoredDuringExecution")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|w| w.get("podAffinityTerm"))
            .any(cross);
        required || preferred
    })
}

/// Keeps only the names `hard` constrains.
pub fn mask(usage: &ResourceList, hard: &ResourceList) -> ResourceList {
    usage
        .iter()
        .filter(|(k, _)| hard.contains_key(*k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Sum per name; names present in only one list are copied.
pub fn add(a: &ResourceList, b: &ResourceList) -> ResourceList {
    let mut out = a.clone();
    for (k, v) in b {
        match out.get(k).and_then(|x| x.checked_add(v)) {
            Some(sum) => {
                out.insert(k.clone(), sum);
            }
            None if !out.contains_key(k) => {
                out.insert(k.clone(), v.clone());
            }
            // Overflow: keep the left value rather than panic.
            None => {}
        }
    }
    out
}

/// `a - b` per name; a name only in `b` yields its negation, as upstream.
pub fn subtract(a: &ResourceList, b: &ResourceList) -> ResourceList {
    let mut out = a.clone();
    for (k, v) in b {
        let base = out.get(k).cloned().unwrap_or_else(zero);
        if let Some(d) = base.checked_sub(v) {
            out.insert(k.clone(), d);
        }
    }
    out
}

/// Parses a JSON ResourceList (e.g. spec.hard); invalid quantities skipped.
pub fn parse_list(v: &Value) -> ResourceList {
    v.as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, q)| parse_json(q).ok().map(|q| (k.clone(), q)))
        .collect()
}

pub fn to_json(list: &ResourceList) -> Value {
    Value::Object(
        list.iter()
            .map(|(k, v)| (k.clone(), Value::String(v.to_upstream_string())))
            .collect::<Map<String, Value>>(),
    )
}

/// Names in `usage` whose value exceeds `hard`, i.e. upstream
/// `LessThanOrEqual`'s failures; names `hard` lacks are not limits.
pub fn exceeded(usage: &ResourceList, hard: &ResourceList) -> Vec<String> {
    usage
        .iter()
        .filter(|(k, v)| hard.get(*k).is_some_and(|h| *v > h))
        .map(|(k, _)| k.clone())
        .collect()
}

/// Upstream pod evaluator's `Constraints`: when a quota tracks cpu or memory
/// (`required`), every container must declare them. Returns upstream's
/// message (`must specify limits.cpu for: a,b; requests.memory for: a`).
/// Other resources have no constraints.
pub fn constraints(
    group: &str,
    resource: &str,
    required: &[String],
    obj: &Value,
) -> Option<String> {
    if !(group.is_empty() && resource == "pods") {
        return None;
    }
    let required: Vec<&str> = required
        .iter()
        .map(String::as_str)
        .filter(|r| POD_VALIDATION_SET.contains(r))
        .collect();
    if required.is_empty() {
        return None;
    }
    let mut missing: BTreeMap<&str, std::collections::BTreeSet<String>> = BTreeMap::new();
    let spec = obj.get("spec").unwrap_or(&Value::Null);
    for c in containers(spec) {
        let res = c.get("resources").unwrap_or(&Value::Null);
        let have = compute_usage(
            &parse_list(res.get("requests").unwrap_or(&Value::Null)),
            &parse_list(res.get("limits").unwrap_or(&Value::Null)),
        );
        let name = c.get("name").and_then(Value::as_str).unwrap_or("");
        for r in &required {
            if !have.contains_key(*r) {
                missing.entry(r).or_default().insert(name.to_string());
            }
        }
    }
    if missing.is_empty() {
        return None;
    }
    let parts: Vec<String> = missing
        .iter()
        .map(|(r, names)| {
            format!(
                "{r} for: {}",
                names.iter().cloned().collect::<Vec<_>>().join(",")
            )
        })
        .collect();
    Some(format!("must specify {}", parts.join("; ")))
}

fn containers(spec: &Value) -> impl Iterator<Item = &Value> {
    ["containers", "initContainers"]
        .into_iter()
        .flat_map(move |k| {
            spec.get(k)
                .and_then(Value::as_array)
                .map(Vec::as_slice)
                .unwrap_or(&[])
                .iter()
        })
}

/// When a deleting pod's grace period ends (deletionTimestamp plus
/// deletionGracePeriodSeconds): past it the pod stops being charged compute
/// resources. None when the pod is not being deleted.
pub fn pod_grace_end(pod: &Value) -> Option<Timestamp> {
    let meta = pod.get("metadata")?;
    let deleted = meta
        .get("deletionTimestamp")
        .and_then(Value::as_str)
        .and_then(|s| s.parse::<Timestamp>().ok())?;
    let grace = meta
        .get("deletionGracePeriodSeconds")
        .and_then(Value::as_i64)?;
    Some(
        deleted
            .checked_add(jiff::SignedDuration::from_secs(grace))
            .unwrap_or(Timestamp::MAX),
    )
}

/// Upstream `QuotaV1Pod`: terminal pods and pods deleting past their grace
/// period are not charged compute resources.
fn pod_is_charged(pod: &Value, now: Timestamp) -> bool {
    let phase = pod.pointer("/status/phase").and_then(Value::as_str);
    if matches!(phase, Some("Succeeded") | Some("Failed")) {
        return false;
    }
    pod_grace_end(pod).is_none_or(|end| now <= end)
}

fn pod_usage(pod: &Value, now: Timestamp) -> ResourceList {
    let mut out = ResourceList::new();
    // The object count covers every stored pod; the rest only live ones.
    out.insert("count/pods".to_string(), one());
    if !pod_is_charged(pod, now) {
        return out;
    }
    let (requests, limits) = pod_requests_limits(pod);
    add(&out, &compute_usage(&requests, &limits))
}

/// Upstream `podComputeUsageHelper`: quota names from aggregated requests
/// and limits.
fn compute_usage(requests: &ResourceList, limits: &ResourceList) -> ResourceList {
    let mut out = ResourceList::new();
    out.insert("pods".to_string(), one());
    for r in ["cpu", "memory", "ephemeral-storage"] {
        if let Some(q) = requests.get(r) {
            out.insert(r.to_string(), q.clone());
            out.insert(format!("requests.{r}"), q.clone());
        }
        if let Some(q) = limits.get(r) {
            out.insert(format!("limits.{r}"), q.clone());
        }
    }
    for (name, q) in requests {
        if name.starts_with("hugepages-") {
            out.insert(name.clone(), q.clone());
            out.insert(format!("requests.{name}"), q.clone());
        }
        if is_extended(name) {
            out.insert(format!("requests.{name}"), q.clone());
        }
    }
    out
}

/// Upstream `IsNativeResource`: no domain prefix, or a kubernetes.io one.
fn is_native(name: &str) -> bool {
    !name.contains('/') || name.contains("kubernetes.io/")
}

/// Upstream `IsExtendedResourceName` (minus the qualified-name syntax check,
/// which validation has already enforced on stored pods).
fn is_extended(name: &str) -> bool {
    !is_native(name) && !name.starts_with("requests.")
}

fn add_into(acc: &mut ResourceList, l: &ResourceList) {
    *acc = add(acc, l);
}

fn max_into(acc: &mut ResourceList, l: &ResourceList) {
    for (k, v) in l {
        if acc.get(k).is_none_or(|cur| v > cur) {
            acc.insert(k.clone(), v.clone());
        }
    }
}

/// Sidecar-aware aggregation of one per-container list (upstream
/// `aggregateContainerResourcesByFn`): regular containers and restartable
/// init containers add up; each plain init container needs itself plus the
/// sidecars started before it; the pod needs the max of both.
fn aggregate(spec: &Value, list: &dyn Fn(&Value) -> ResourceList) -> ResourceList {
    let arr = |k: &str| {
        spec.get(k)
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or(&[])
            .to_vec()
    };
    let mut result = ResourceList::new();
    for c in arr("containers") {
        add_into(&mut result, &list(&c));
    }
    let mut sidecars = ResourceList::new();
    let mut init = ResourceList::new();
    for c in arr("initContainers") {
        let l = list(&c);
        let restartable = c.get("restartPolicy").and_then(Value::as_str) == Some("Always");
        let need = if restartable {
            add_into(&mut result, &l);
            add_into(&mut sidecars, &l);
            sidecars.clone()
        } else {
            add(&l, &sidecars)
        };
        max_into(&mut init, &need);
    }
    max_into(&mut result, &init);
    result
}

fn container_status<'a>(pod: &'a Value, name: &str) -> Option<&'a Value> {
    ["containerStatuses", "initContainerStatuses"]
        .iter()
        .filter_map(|k| {
            pod.pointer(&format!("/status/{k}"))
                .and_then(Value::as_array)
        })
        .flatten()
        .find(|s| s.get("name").and_then(Value::as_str) == Some(name))
}

fn resize_infeasible(pod: &Value) -> bool {
    pod.pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|c| c.get("type").and_then(Value::as_str) == Some("PodResizePending"))
        .is_some_and(|c| c.get("reason").and_then(Value::as_str) == Some("Infeasible"))
}

/// Upstream `PodRequests`/`PodLimits` with in-place resize on (its 1.33
/// default): the larger of the spec and what the kubelet allocated or
/// actuated, plus the pod overhead (added to limits only where non-zero).
fn pod_requests_limits(pod: &Value) -> (ResourceList, ResourceList) {
    pod_resources(pod, true)
}

/// A pod's effective requests and limits: containers summed, init
/// containers (with the sidecars started before them) taken as a maximum,
/// the larger of spec and status for resized containers, and the overhead
/// when `overhead` (LimitRanger's pod limits leave it out).
pub fn pod_resources(pod: &Value, overhead: bool) -> (ResourceList, ResourceList) {
    let spec = pod.get("spec").unwrap_or(&Value::Null);
    let infeasible = resize_infeasible(pod);
    let of = |c: &Value, which: &str| {
        parse_list(
            c.pointer(&format!("/resources/{which}"))
                .unwrap_or(&Value::Null),
        )
    };
    let name = |c: &Value| {
        c.get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let status_list = |c: &Value, ptrs: &[&str]| {
        let cs = container_status(pod, &name(c))?;
        ptrs.iter()
            .find_map(|p| cs.pointer(p).filter(|v| v.is_object()))
            .map(parse_list)
    };

    let spec_req = aggregate(spec, &|c| of(c, "requests"));
    let allocated = aggregate(spec, &|c| {
        status_list(c, &["/allocatedResources"]).unwrap_or_else(|| {
            if infeasible {
                ResourceList::new()
            } else {
                of(c, "requests")
            }
        })
    });
    let actuated_req = aggregate(spec, &|c| {
        status_list(c, &["/resources/requests", "/allocatedResources"]).unwrap_or_else(|| {
            if infeasible {
                ResourceList::new()
            } else {
                of(c, "requests")
            }
        })
    });
    let mut requests = if infeasible {
        ResourceList::new()
    } else {
        spec_req
    };
    max_into(&mut requests, &allocated);
    max_into(&mut requests, &actuated_req);

    let spec_lim = aggregate(spec, &|c| of(c, "limits"));
    let actuated_lim = aggregate(spec, &|c| {
        status_list(c, &["/resources/limits"]).unwrap_or_else(|| {
            if infeasible {
                ResourceList::new()
            } else {
                of(c, "limits")
            }
        })
    });
    let mut limits = if infeasible {
        ResourceList::new()
    } else {
        spec_lim
    };
    max_into(&mut limits, &actuated_lim);

    if !overhead {
        return (requests, limits);
    }
    let overhead = parse_list(spec.get("overhead").unwrap_or(&Value::Null));
    requests = add(&requests, &overhead);
    for (k, v) in &overhead {
        if let Some(l) = limits.get(k).filter(|l| !l.is_zero()) {
            if let Some(sum) = l.checked_add(v) {
                limits.insert(k.clone(), sum);
            }
        }
    }
    (requests, limits)
}

fn service_usage(svc: &Value) -> ResourceList {
    let spec = svc.get("spec").unwrap_or(&Value::Null);
    let ports = spec
        .get("ports")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    let mut out = ResourceList::new();
    out.insert("count/services".to_string(), one());
    out.insert("services".to_string(), one());
    out.insert("services.loadbalancers".to_string(), zero());
    out.insert("services.nodeports".to_string(), zero());
    match spec.get("type").and_then(Value::as_str) {
        Some("NodePort") => {
            out.insert("services.nodeports".to_string(), count(ports.len()));
        }
        Some("LoadBalancer") => {
            // Without node-port allocation only explicitly set ports count.
            let n = if spec.get("allocateLoadBalancerNodePorts") == Some(&Value::Bool(false)) {
                ports
                    .iter()
                    .filter(|p| {
                        p.get("nodePort")
                            .and_then(Value::as_i64)
                            .is_some_and(|n| n != 0)
                    })
                    .count()
            } else {
                ports.len()
            };
            out.insert("services.nodeports".to_string(), count(n));
            out.insert("services.loadbalancers".to_string(), one());
        }
        _ => {}
    }
    out
}

/// Rounds up to a whole number, keeping the format (upstream `RoundUp(0)`),
/// so fractional byte requests are charged as whole bytes.
fn round_up_whole(q: &Quantity) -> Quantity {
    if q.milli_value() % 1000 == 0 {
        q.clone()
    } else {
        Quantity::from_milli(q.value().saturating_mul(1000), q.format())
    }
}

fn pvc_usage(pvc: &Value) -> ResourceList {
    let mut out = ResourceList::new();
    out.insert("persistentvolumeclaims".to_string(), one());
    out.insert("count/persistentvolumeclaims".to_string(), one());
    // Upstream `GetPersistentVolumeClaimClass`: the beta annotation wins.
    let class = pvc
        .pointer("/metadata/annotations/volume.beta.kubernetes.io~1storage-class")
        .and_then(Value::as_str)
        .or_else(|| {
            pvc.pointer("/spec/storageClassName")
                .and_then(Value::as_str)
        })
        .filter(|c| !c.is_empty());
    if let Some(c) = class {
        out.insert(
            format!("{c}{STORAGE_CLASS_SUFFIX}persistentvolumeclaims"),
            one(),
        );
    }
    let requested = pvc
        .pointer("/spec/resources/requests/storage")
        .and_then(|v| parse_json(v).ok())
        .map(|q| round_up_whole(&q));
    let allocated = pvc
        .pointer("/status/allocatedResources/storage")
        .and_then(|v| parse_json(v).ok());
    // A larger allocation (an expansion in progress) is what is charged.
    let storage = match (requested, allocated) {
        (Some(r), Some(a)) if a > r => Some(round_up_whole(&a)),
        (r, _) => r,
    };
    if let Some(s) = storage {
        out.insert("requests.storage".to_string(), s.clone());
        if let Some(c) = class {
            out.insert(format!("{c}{STORAGE_CLASS_SUFFIX}requests.storage"), s);
        }
    }
    out
}

#[cfg(test)]
mod tests;
