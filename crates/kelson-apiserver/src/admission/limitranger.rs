//! LimitRanger: default requests and limits for pod containers from the
//! namespace's LimitRanges (mutating), and their min / max /
//! maxLimitRequestRatio for Containers, Pods and PersistentVolumeClaims
//! (validating), with upstream's messages.

use std::collections::BTreeMap;

use kelson_apimachinery::quantity::{parse_json, Quantity};
use kelson_apimachinery::quota::{parse_list, pod_resources, ResourceList};
use serde_json::{json, Value};

use super::{list, Attributes, Denial, Operation};
use crate::handler::Api;

const ANNOTATION: &str = "kubernetes.io/limit-ranger";

/// Pods are only limited on create (their containers' resources cannot be
/// changed by an update); claims on create and update; never subresources.
fn applies(a: &Attributes<'_>) -> bool {
    if !a.subresource.is_empty() {
        return false;
    }
    if a.is("", "pods") {
        return a.operation == Operation::Create;
    }
    a.is("", "persistentvolumeclaims")
}

async fn limit_ranges(api: &Api, a: &Attributes<'_>) -> Result<Option<Vec<Value>>, Denial> {
    if !applies(a) {
        return Ok(None);
    }
    // Objects being deleted are left alone.
    if a.old
        .and_then(|o| o.pointer("/metadata/deletionTimestamp"))
        .is_some_and(|t| !t.is_null())
    {
        return Ok(None);
    }
    let ns = a.namespace.unwrap_or("");
    Ok(Some(list(api, "", "limitranges", ns).await?))
}

pub(super) async fn mutate(api: &Api, a: &Attributes<'_>, obj: &mut Value) -> Result<(), Denial> {
    let Some(ranges) = limit_ranges(api, a).await? else {
        return Ok(());
    };
    if a.is("", "pods") {
        for lr in &ranges {
            default_pod(lr, obj);
        }
    }
    Ok(())
}

pub(super) async fn validate(api: &Api, a: &Attributes<'_>, obj: &Value) -> Result<(), Denial> {
    let Some(ranges) = limit_ranges(api, a).await? else {
        return Ok(());
    };
    for lr in &ranges {
        let errs = if a.is("", "pods") {
            validate_pod(lr, obj)
        } else {
            validate_claim(lr, obj)
        };
        if !errs.is_empty() {
            return Err(Denial::Forbidden(aggregate(&errs)));
        }
    }
    Ok(())
}

/// Upstream's `utilerrors.NewAggregate` message.
fn aggregate(errs: &[String]) -> String {
    if errs.len() == 1 {
        errs[0].clone()
    } else {
        format!("[{}]", errs.join(", "))
    }
}

fn limits(lr: &Value) -> &[Value] {
    lr.pointer("/spec/limits")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

fn of_type<'a>(lr: &'a Value, ty: &'a str) -> impl Iterator<Item = &'a Value> {
    limits(lr)
        .iter()
        .filter(move |l| l.get("type").and_then(Value::as_str) == Some(ty))
}

/// Upstream `PodMutateLimitFunc`: the Container items' `defaultRequest`
/// and `default` fill what each container (and init container) lacks, and
/// the pod is annotated with what was set.
pub(crate) fn default_pod(lr: &Value, pod: &mut Value) {
    let mut requests: BTreeMap<String, Value> = BTreeMap::new();
    let mut lims: BTreeMap<String, Value> = BTreeMap::new();
    for l in of_type(lr, "Container") {
        for (field, acc) in [("defaultRequest", &mut requests), ("default", &mut lims)] {
            for (k, v) in l
                .get(field)
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
            {
                acc.insert(k.clone(), v.clone());
            }
        }
    }
    let mut notes: Vec<String> = Vec::new();
    let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    for (field, label) in [
        ("containers", "container"),
        ("initContainers", "init container"),
    ] {
        let Some(cs) = spec.get_mut(field).and_then(Value::as_array_mut) else {
            continue;
        };
        for c in cs.iter_mut() {
            let name = c
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let Some(c) = c.as_object_mut() else { continue };
            let res = c.entry("resources").or_insert_with(|| json!({}));
            if !res.is_object() {
                *res = json!({});
            }
            let set_req = fill(res, "requests", &requests);
            let set_lim = fill(res, "limits", &lims);
            if !set_req.is_empty() {
                notes.push(format!("{} request for {label} {name}", set_req.join(", ")));
            }
            if !set_lim.is_empty() {
                notes.push(format!("{} limit for {label} {name}", set_lim.join(", ")));
            }
        }
    }
    if notes.is_empty() {
        return;
    }
    let Some(meta) = pod.get_mut("metadata").and_then(Value::as_object_mut) else {
        return;
    };
    let ann = meta.entry("annotations").or_insert_with(|| json!({}));
    if !ann.is_object() {
        *ann = json!({});
    }
    if let Some(ann) = ann.as_object_mut() {
        ann.insert(
            ANNOTATION.into(),
            json!(format!("LimitRanger plugin set: {}", notes.join("; "))),
        );
    }
}

/// Sets the missing names of `defaults` in `res[field]`; returns them sorted.
fn fill(res: &mut Value, field: &str, defaults: &BTreeMap<String, Value>) -> Vec<String> {
    let Some(res) = res.as_object_mut() else {
        return Vec::new();
    };
    let list = res.entry(field).or_insert_with(|| json!({}));
    if !list.is_object() {
        *list = json!({});
    }
    let Some(list) = list.as_object_mut() else {
        return Vec::new();
    };
    let mut set = Vec::new();
    for (k, v) in defaults {
        if !list.contains_key(k) {
            list.insert(k.clone(), v.clone());
            set.push(k.clone());
        }
    }
    set
}

/// `(name, quantity)` pairs of a LimitRange item's field, sorted by name
/// (upstream iterates a map; sorting makes the first error deterministic).
fn constraint(l: &Value, field: &str) -> Vec<(String, Quantity)> {
    l.get(field)
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| parse_json(v).ok().map(|q| (k.clone(), q)))
        .collect::<BTreeMap<_, _>>()
        .into_iter()
        .collect()
}

fn container_lists(c: &Value) -> (ResourceList, ResourceList) {
    let r = c.get("resources").unwrap_or(&Value::Null);
    (
        parse_list(r.get("requests").unwrap_or(&Value::Null)),
        parse_list(r.get("limits").unwrap_or(&Value::Null)),
    )
}

/// Upstream `PodValidateLimitFunc`.
pub(crate) fn validate_pod(lr: &Value, pod: &Value) -> Vec<String> {
    let mut errs = Vec::new();
    let spec = pod.get("spec").unwrap_or(&Value::Null);
    for l in limits(lr) {
        let ty = l.get("type").and_then(Value::as_str).unwrap_or("");
        let check = |errs: &mut Vec<String>, req: &ResourceList, lim: &ResourceList| {
            for (k, v) in constraint(l, "min") {
                let checked = [("request", req), ("limit", lim)];
                errs.extend(bound_constraint(Bound::Min, ty, &k, &v, &checked));
            }
            for (k, v) in constraint(l, "max") {
                let checked = [("limit", lim), ("request", req)];
                errs.extend(bound_constraint(Bound::Max, ty, &k, &v, &checked));
            }
            for (k, v) in constraint(l, "maxLimitRequestRatio") {
                errs.extend(ratio_constraint(ty, &k, &v, req, lim));
            }
        };
        match ty {
            "Container" => {
                for field in ["containers", "initContainers"] {
                    for c in spec
                        .get(field)
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                    {
                        let (req, lim) = container_lists(c);
                        check(&mut errs, &req, &lim);
                    }
                }
            }
            "Pod" => {
                let (req, lim) = pod_resources(pod, false);
                check(&mut errs, &req, &lim);
            }
            _ => {}
        }
    }
    errs
}

/// Upstream `PersistentVolumeClaimValidateLimitFunc`: only the requests
/// count, against min and max.
pub(crate) fn validate_claim(lr: &Value, pvc: &Value) -> Vec<String> {
    let mut errs = Vec::new();
    let req = parse_list(
        pvc.pointer("/spec/resources/requests")
            .unwrap_or(&Value::Null),
    );
    let checked = [("request", &req)];
    for l in of_type(lr, "PersistentVolumeClaim") {
        for (bound, field) in [(Bound::Min, "min"), (Bound::Max, "max")] {
            for (k, v) in constraint(l, field) {
                let ty = "PersistentVolumeClaim";
                errs.extend(bound_constraint(bound, ty, &k, &v, &checked));
            }
        }
    }
    errs
}

/// Go's `Quantity.String()`.
fn s(q: &Quantity) -> String {
    q.to_upstream_string()
}

/// Which side of a `min` / `max` constraint a value must stay on.
#[derive(Clone, Copy)]
enum Bound {
    Min,
    Max,
}

/// Upstream `minConstraint` / `maxConstraint` (and the claim checks): the
/// first list in `checked` must name the resource; every value found must be
/// within the bound. The first problem is reported, worded as upstream.
fn bound_constraint(
    bound: Bound,
    ty: &str,
    name: &str,
    enforced: &Quantity,
    checked: &[(&str, &ResourceList)],
) -> Option<String> {
    let (word, outside) = match bound {
        Bound::Min => ("minimum", std::cmp::Ordering::Less),
        Bound::Max => ("maximum", std::cmp::Ordering::Greater),
    };
    let e = s(enforced);
    if let Some((what, list)) = checked.first() {
        if !list.contains_key(name) {
            return Some(format!(
                "{word} {name} usage per {ty} is {e}.  No {what} is specified"
            ));
        }
    }
    checked.iter().find_map(|(what, list)| {
        let q = list.get(name)?;
        (q.milli_value().cmp(&enforced.milli_value()) == outside).then(|| {
            format!(
                "{word} {name} usage per {ty} is {e}, but {what} is {}",
                s(q)
            )
        })
    })
}

fn ratio_constraint(
    ty: &str,
    name: &str,
    enforced: &Quantity,
    req: &ResourceList,
    lim: &ResourceList,
) -> Option<String> {
    let e = s(enforced);
    let r = req.get(name).map(Quantity::milli_value).unwrap_or(0);
    if r == 0 {
        return Some(format!(
            "{name} max limit to request ratio per {ty} is {e}, but no request is specified or request is 0"
        ));
    }
    let l = lim.get(name).map(Quantity::milli_value).unwrap_or(0);
    if l == 0 {
        return Some(format!(
            "{name} max limit to request ratio per {ty} is {e}, but no limit is specified or limit is 0"
        ));
    }
    // Float comparison as upstream (ratio × 1000 against the milli value).
    let ratio = l as f64 / r as f64;
    if ratio * 1000.0 > enforced.milli_value() as f64 {
        return Some(format!(
            "{name} max limit to request ratio per {ty} is {e}, but provided ratio is {ratio:.6}"
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lr(limits: Value) -> Value {
        json!({"metadata": {"name": "lr"}, "spec": {"limits": limits}})
    }

    #[test]
    fn defaults_fill_missing_requests_and_limits_with_annotation() {
        let r = lr(json!([{"type": "Container",
            "default": {"cpu": "500m", "memory": "256Mi"},
            "defaultRequest": {"cpu": "100m"}}]));
        let mut pod = json!({"metadata": {"name": "p"}, "spec": {
            "containers": [
                {"name": "a"},
                {"name": "b", "resources": {"limits": {"memory": "1Gi"}, "requests": {"memory": "1Gi"}}}
            ],
            "initContainers": [{"name": "i"}]
        }});
        default_pod(&r, &mut pod);
        let c = &pod["spec"]["containers"];
        assert_eq!(
            c[0]["resources"]["limits"],
            json!({"cpu": "500m", "memory": "256Mi"})
        );
        assert_eq!(c[0]["resources"]["requests"], json!({"cpu": "100m"}));
        assert_eq!(c[1]["resources"]["limits"]["memory"], "1Gi");
        assert_eq!(c[1]["resources"]["limits"]["cpu"], "500m");
        assert_eq!(
            pod["metadata"]["annotations"][ANNOTATION],
            "LimitRanger plugin set: cpu request for container a; cpu, memory limit for container a; \
             cpu request for container b; cpu limit for container b; \
             cpu request for init container i; cpu, memory limit for init container i"
        );
    }

    #[test]
    fn no_defaults_no_annotation() {
        let r = lr(json!([{"type": "Container", "max": {"cpu": "1"}}]));
        let mut pod = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "a"}]}});
        default_pod(&r, &mut pod);
        assert!(pod["metadata"].get("annotations").is_none());
    }

    #[test]
    fn container_max_min_and_ratio_messages() {
        let r = lr(
            json!([{"type": "Container", "max": {"cpu": "1"}, "min": {"memory": "64Mi"},
            "maxLimitRequestRatio": {"cpu": "2"}}]),
        );
        let pod = json!({"spec": {"containers": [{"name": "a", "resources": {
            "limits": {"cpu": "2", "memory": "32Mi"}, "requests": {"cpu": "500m", "memory": "32Mi"}}}]}});
        assert_eq!(
            validate_pod(&r, &pod),
            vec![
                "minimum memory usage per Container is 64Mi, but request is 32Mi",
                "maximum cpu usage per Container is 1, but limit is 2",
                "cpu max limit to request ratio per Container is 2, but provided ratio is 4.000000",
            ]
        );
        let none = json!({"spec": {"containers": [{"name": "a"}]}});
        assert_eq!(
            validate_pod(&r, &none),
            vec![
                "minimum memory usage per Container is 64Mi.  No request is specified",
                "maximum cpu usage per Container is 1.  No limit is specified",
                "cpu max limit to request ratio per Container is 2, but no request is specified or request is 0",
            ]
        );
        // Several failures read as upstream's aggregate: "[a, b]".
        let errs = validate_pod(&r, &none);
        assert_eq!(aggregate(&errs[..2]), format!("[{}, {}]", errs[0], errs[1]));
        assert_eq!(aggregate(&errs[1..2]), errs[1]);
    }

    #[test]
    fn pod_limits_sum_containers() {
        let r = lr(json!([{"type": "Pod", "max": {"cpu": "1"}}]));
        let c = |cpu: &str| json!({"name": cpu, "resources": {"limits": {"cpu": cpu}, "requests": {"cpu": cpu}}});
        let ok = json!({"spec": {"containers": [c("400m"), c("600m")]}});
        assert!(validate_pod(&r, &ok).is_empty());
        let big = json!({"spec": {"containers": [c("600m"), c("600m")]}});
        assert_eq!(
            validate_pod(&r, &big),
            vec!["maximum cpu usage per Pod is 1, but limit is 1200m"]
        );
    }

    #[test]
    fn claims_checked_against_requests() {
        let r = lr(
            json!([{"type": "PersistentVolumeClaim", "max": {"storage": "2Gi"}, "min": {"storage": "1Gi"}}]),
        );
        let pvc = |s: &str| json!({"spec": {"resources": {"requests": {"storage": s}}}});
        assert!(validate_claim(&r, &pvc("1Gi")).is_empty());
        assert_eq!(
            validate_claim(&r, &pvc("5Gi")),
            vec!["maximum storage usage per PersistentVolumeClaim is 2Gi, but request is 5Gi"]
        );
        assert_eq!(
            validate_claim(&r, &pvc("500Mi")),
            vec!["minimum storage usage per PersistentVolumeClaim is 1Gi, but request is 500Mi"]
        );
    }
}
