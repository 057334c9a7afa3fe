//! The two small pod-mutating plugins: ServiceAccount (the default service
//! account name only; no token volume is projected yet) and
//! DefaultTolerationSeconds.

use serde_json::{json, Value};

use super::{Attributes, Operation};

/// Mirror pods belong to the kubelet; upstream leaves their spec alone.
const MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";

/// Seconds a pod stays bound to a not-ready or unreachable node
/// (kube-apiserver's default for both flags).
const DEFAULT_TOLERATION_SECONDS: i64 = 300;

fn is_pod_create(a: &Attributes<'_>) -> bool {
    a.is("", "pods") && a.subresource.is_empty() && a.operation == Operation::Create
}

/// Upstream ServiceAccount admission's defaulting: a pod naming no service
/// account runs as "default" (the deprecated `serviceAccount` mirrors it,
/// as v1 conversion does).
pub(super) fn service_account(a: &Attributes<'_>, pod: &mut Value) {
    if !is_pod_create(a) {
        return;
    }
    if pod
        .pointer("/metadata/annotations")
        .and_then(Value::as_object)
        .is_some_and(|m| m.contains_key(MIRROR_ANNOTATION))
    {
        return;
    }
    let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    let named = spec
        .get("serviceAccountName")
        .and_then(Value::as_str)
        .is_some_and(|s| !s.is_empty());
    if !named {
        spec.insert("serviceAccountName".into(), json!("default"));
        spec.insert("serviceAccount".into(), json!("default"));
    }
}

/// Upstream DefaultTolerationSeconds: pods tolerate the not-ready and
/// unreachable NoExecute taints for 300s unless they already tolerate them
/// (an empty key or effect matches, whatever the operator).
pub(super) fn default_toleration_seconds(a: &Attributes<'_>, pod: &mut Value) {
    if !is_pod_create(a) {
        return;
    }
    let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    let list = spec.entry("tolerations").or_insert_with(|| json!([]));
    if list.is_null() {
        *list = json!([]);
    }
    let Some(list) = list.as_array_mut() else {
        return;
    };
    for key in [
        "node.kubernetes.io/not-ready",
        "node.kubernetes.io/unreachable",
    ] {
        let tolerated = list.iter().any(|t| {
            let k = t.get("key").and_then(Value::as_str).unwrap_or("");
            let e = t.get("effect").and_then(Value::as_str).unwrap_or("");
            (k == key || k.is_empty()) && (e == "NoExecute" || e.is_empty())
        });
        if !tolerated {
            list.push(json!({
                "key": key,
                "operator": "Exists",
                "effect": "NoExecute",
                "tolerationSeconds": DEFAULT_TOLERATION_SECONDS,
            }));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::built_in;

    fn attrs<'a>(
        res: &'a crate::resources::Resource,
        op: Operation,
        sub: &'a str,
    ) -> Attributes<'a> {
        Attributes {
            res,
            subresource: sub,
            operation: op,
            namespace: Some("default"),
            old: None,
            dry_run: false,
        }
    }

    fn pods() -> std::sync::Arc<crate::resources::Resource> {
        built_in().into_iter().find(|r| r.plural == "pods").unwrap()
    }

    #[test]
    fn pods_default_to_the_default_service_account() {
        let res = pods();
        let mut p = json!({"metadata": {"name": "p"}, "spec": {"containers": []}});
        service_account(&attrs(&res, Operation::Create, ""), &mut p);
        assert_eq!(p["spec"]["serviceAccountName"], "default");
        assert_eq!(p["spec"]["serviceAccount"], "default");

        let mut named = json!({"spec": {"serviceAccountName": "robot"}});
        service_account(&attrs(&res, Operation::Create, ""), &mut named);
        assert_eq!(named["spec"]["serviceAccountName"], "robot");

        let mut mirror = json!({"metadata": {"annotations": {MIRROR_ANNOTATION: "x"}}, "spec": {}});
        service_account(&attrs(&res, Operation::Create, ""), &mut mirror);
        assert!(mirror["spec"].get("serviceAccountName").is_none());
    }

    #[test]
    fn tolerations_added_unless_already_tolerated() {
        let res = pods();
        let mut p = json!({"spec": {}});
        default_toleration_seconds(&attrs(&res, Operation::Create, ""), &mut p);
        let t = p["spec"]["tolerations"].as_array().unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t[0]["key"], "node.kubernetes.io/not-ready");
        assert_eq!(t[1]["tolerationSeconds"], 300);

        // A wildcard toleration already covers both.
        let mut all = json!({"spec": {"tolerations": [{"operator": "Exists"}]}});
        default_toleration_seconds(&attrs(&res, Operation::Create, ""), &mut all);
        assert_eq!(all["spec"]["tolerations"].as_array().unwrap().len(), 1);

        // One custom not-ready toleration: only unreachable is added.
        let mut one = json!({"spec": {"tolerations": [{"key": "node.kubernetes.io/not-ready",
            "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 10}]}});
        default_toleration_seconds(&attrs(&res, Operation::Create, ""), &mut one);
        let t = one["spec"]["tolerations"].as_array().unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t[0]["tolerationSeconds"], 10);
        assert_eq!(t[1]["key"], "node.kubernetes.io/unreachable");

        // Updates and subresources are left alone.
        let mut upd = json!({"spec": {}});
        default_toleration_seconds(&attrs(&res, Operation::Update, ""), &mut upd);
        default_toleration_seconds(&attrs(&res, Operation::Create, "status"), &mut upd);
        assert!(upd["spec"].get("tolerations").is_none());
    }
}
