//! ResourceQuota (validating): charges the object's usage to every quota
//! of its namespace that tracks it, refusing what would exceed one, and
//! records the new `status.used` with compare-and-swap (retried on
//! conflict) before the object is stored, as upstream's quota evaluator.
//! Dry runs are checked but charge nothing.

use futures::future::BoxFuture;
use kelson_apimachinery::quota::{
    self, add, constraints, exceeded, mask, matches_scopes, parse_list, tracks, ResourceList,
};
use serde_json::Value;

use super::{list, served, Attributes, Denial, Operation};
use crate::handler::Api;
use crate::meta;
use crate::registry::WriteOptions;
use crate::status::ApiError;

/// Which operations change a resource's usage (upstream evaluators'
/// `Handles`): pods and plain object counts on create, services and
/// claims on create and update.
fn handles(group: &str, resource: &str, op: Operation) -> bool {
    match (group, resource) {
        ("", "services") | ("", "persistentvolumeclaims") => true,
        _ => op == Operation::Create,
    }
}

pub(super) async fn validate(api: &Api, a: &Attributes<'_>, obj: &Value) -> Result<(), Denial> {
    if !a.subresource.is_empty() {
        return Ok(());
    }
    let Some(ns) = a.namespace.filter(|n| !n.is_empty()) else {
        return Ok(());
    };
    let (group, resource) = (a.res.storage.0.as_str(), a.res.storage.1.as_str());
    if !handles(group, resource, a.operation) {
        return Ok(());
    }
    let quotas = list(api, "", "resourcequotas", ns).await?;
    let mut charge = Vec::new();
    for q in &quotas {
        if check(q, group, resource, a.operation, obj, a.old)
            .map_err(Denial::Forbidden)?
            .is_some()
        {
            charge.push(meta::name(q).to_string());
        }
    }
    if a.dry_run || charge.is_empty() {
        return Ok(());
    }
    let Some(rq) = served(api, "", "resourcequotas") else {
        return Ok(());
    };
    for name in charge {
        let mut denied: Option<String> = None;
        let opts = WriteOptions::default();
        // Boxed: the registry calls admission, which calls the registry.
        let update: BoxFuture<'_, Result<(Value, bool), ApiError>> = Box::pin(
            api.registry
                .guaranteed_update(&rq, Some(ns), &name, &opts, |current| {
                    let Some(current) = current else {
                        return Err(ApiError::not_found("", "resourcequotas", &name));
                    };
                    let mut new = current.clone();
                    // No precondition: a concurrent change of the quota is
                    // retried against the fresh object.
                    meta::meta_mut(&mut new).remove("resourceVersion");
                    match check(current, group, resource, a.operation, obj, a.old) {
                        Err(why) => {
                            denied = Some(why.clone());
                            Err(ApiError::forbidden(why))
                        }
                        Ok(None) => Ok(new),
                        Ok(Some(used)) => {
                            if let Some(st) = new.get_mut("status").and_then(Value::as_object_mut) {
                                st.insert("used".into(), quota::to_json(&used));
                            }
                            Ok(new)
                        }
                    }
                }),
        );
        let result = update.await;
        match result {
            Ok(_) => {}
            Err(_) if denied.is_some() => {
                return Err(Denial::Forbidden(denied.unwrap_or_default()));
            }
            // Deleted meanwhile: nothing to charge.
            Err(e) if e.code == 404 => {}
            Err(e) => return Err(Denial::Internal(e.message)),
        }
    }
    Ok(())
}

/// Only the entries of `list` named in `names`.
fn only(list: &ResourceList, names: &[String]) -> ResourceList {
    list.iter()
        .filter(|(k, _)| names.contains(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Upstream's `prettyPrint`: `a=1,b=2`, sorted by name.
fn pretty(list: &ResourceList) -> String {
    list.iter()
        .map(|(k, v)| format!("{k}={}", v.to_upstream_string()))
        .collect::<Vec<_>>()
        .join(",")
}

/// Upstream `SubtractWithNonNegativeResult` followed by `RemoveZeros`.
fn positive_delta(new: &ResourceList, old: &ResourceList) -> ResourceList {
    new.iter()
        .filter_map(|(k, v)| {
            let d = match old.get(k) {
                Some(o) => v.checked_sub(o)?,
                None => v.clone(),
            };
            (!d.is_zero() && !d.is_negative()).then(|| (k.clone(), d))
        })
        .collect()
}

/// One quota against one request (upstream `CheckRequest` for a single
/// quota). `Ok(None)`: the quota does not apply or nothing changes;
/// `Ok(Some(used))`: the new status.used; `Err`: the refusal message.
pub(crate) fn check(
    q: &Value,
    group: &str,
    resource: &str,
    op: Operation,
    obj: &Value,
    old: Option<&Value>,
) -> Result<Option<ResourceList>, String> {
    let name = meta::name(q);
    let spec = q.get("spec").unwrap_or(&Value::Null);
    // A quota the controller has not synced yet (no status.hard) matches
    // nothing, as upstream.
    let hard = parse_list(q.pointer("/status/hard").unwrap_or(&Value::Null));
    let restricted: Vec<String> = hard
        .keys()
        .filter(|n| tracks(group, resource, n))
        .cloned()
        .collect();
    if restricted.is_empty() || !matches_scopes(spec, group, resource, obj) {
        return Ok(None);
    }
    if let Some(why) = constraints(group, resource, &restricted, obj) {
        return Err(format!("failed quota: {name}: {why}"));
    }
    let used = parse_list(q.pointer("/status/used").unwrap_or(&Value::Null));
    if restricted.iter().any(|n| !used.contains_key(n)) {
        return Err(format!(
            "status unknown for quota: {name}, resources: {}",
            restricted.join(",")
        ));
    }
    let input = quota::usage(group, resource, obj);
    let negative: Vec<String> = input
        .iter()
        .filter(|(_, v)| v.is_negative())
        .map(|(k, _)| k.clone())
        .collect();
    if !negative.is_empty() {
        return Err(format!(
            "quota usage is negative for resource(s): {}",
            negative.join(",")
        ));
    }
    let mut delta = positive_delta(&input, &ResourceList::new());
    if op == Operation::Update {
        // Charge only the growth of an object the quota already counted.
        if let Some(old) = old.filter(|o| meta::resource_version(o).is_some()) {
            if matches_scopes(spec, group, resource, old) {
                delta = positive_delta(&input, &quota::usage(group, resource, old));
            }
        }
    }
    let requested = mask(&delta, &hard);
    if requested.is_empty() {
        return Ok(None);
    }
    let new_used = add(&used, &requested);
    let names: Vec<String> = requested.keys().cloned().collect();
    let over = exceeded(&only(&new_used, &names), &hard);
    if !over.is_empty() {
        return Err(format!(
            "exceeded quota: {name}, requested: {}, used: {}, limited: {}",
            pretty(&only(&requested, &over)),
            pretty(&only(&used, &over)),
            pretty(&only(&hard, &over)),
        ));
    }
    Ok(Some(new_used))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rq(hard: Value, used: Value) -> Value {
        json!({"metadata": {"name": "q"}, "spec": {"hard": hard}, "status": {"hard": hard, "used": used}})
    }

    fn pod(cpu: Option<&str>) -> Value {
        let res = match cpu {
            Some(c) => json!({"requests": {"cpu": c}, "limits": {"cpu": c}}),
            None => json!({}),
        };
        json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "resources": res}]}})
    }

    #[test]
    fn pods_counted_until_the_limit() {
        let q = rq(json!({"pods": "2"}), json!({"pods": "1"}));
        let used = check(&q, "", "pods", Operation::Create, &pod(None), None)
            .unwrap()
            .unwrap();
        assert_eq!(quota::to_json(&used), json!({"pods": "2"}));
        let full = rq(json!({"pods": "2"}), json!({"pods": "2"}));
        assert_eq!(
            check(&full, "", "pods", Operation::Create, &pod(None), None),
            Err("exceeded quota: q, requested: pods=1, used: pods=2, limited: pods=2".into())
        );
    }

    #[test]
    fn cpu_quota_requires_limits_on_every_container() {
        let q = rq(json!({"limits.cpu": "4"}), json!({"limits.cpu": "0"}));
        assert_eq!(
            check(&q, "", "pods", Operation::Create, &pod(None), None),
            Err("failed quota: q: must specify limits.cpu for: c".into())
        );
        let used = check(&q, "", "pods", Operation::Create, &pod(Some("1500m")), None)
            .unwrap()
            .unwrap();
        assert_eq!(quota::to_json(&used), json!({"limits.cpu": "1500m"}));
    }

    #[test]
    fn unsynced_quota_ignored_and_missing_usage_refused() {
        let unsynced = json!({"metadata": {"name": "q"}, "spec": {"hard": {"pods": "1"}}});
        assert_eq!(
            check(&unsynced, "", "pods", Operation::Create, &pod(None), None),
            Ok(None)
        );
        let partial = rq(
            json!({"pods": "5", "count/pods": "5"}),
            json!({"pods": "0"}),
        );
        assert_eq!(
            check(&partial, "", "pods", Operation::Create, &pod(None), None),
            Err("status unknown for quota: q, resources: count/pods,pods".into())
        );
    }

    #[test]
    fn scoped_quota_skips_other_pods() {
        let mut q = rq(json!({"pods": "1"}), json!({"pods": "1"}));
        q["spec"]["scopes"] = json!(["NotBestEffort"]);
        assert_eq!(
            check(&q, "", "pods", Operation::Create, &pod(None), None),
            Ok(None)
        );
        assert!(check(&q, "", "pods", Operation::Create, &pod(Some("1")), None).is_err());
    }

    #[test]
    fn service_update_charges_only_growth() {
        let q = rq(
            json!({"services.nodeports": "2"}),
            json!({"services.nodeports": "1"}),
        );
        let old = json!({"metadata": {"name": "s", "resourceVersion": "5"},
            "spec": {"type": "NodePort", "ports": [{"port": 1}]}});
        let same = old.clone();
        assert_eq!(
            check(&q, "", "services", Operation::Update, &same, Some(&old)),
            Ok(None)
        );
        let mut grown = old.clone();
        grown["spec"]["ports"] = json!([{"port": 1}, {"port": 2}, {"port": 3}]);
        assert_eq!(
            check(&q, "", "services", Operation::Update, &grown, Some(&old)),
            Err("exceeded quota: q, requested: services.nodeports=2, used: services.nodeports=1, limited: services.nodeports=2".into())
        );
        // Pods are only charged on create.
        assert!(!handles("", "pods", Operation::Update));
        assert!(handles("", "services", Operation::Update));
    }

    #[test]
    fn object_counts_for_other_resources() {
        let q = rq(
            json!({"count/configmaps": "1"}),
            json!({"count/configmaps": "1"}),
        );
        assert_eq!(
            check(&q, "", "configmaps", Operation::Create, &json!({}), None),
            Err("exceeded quota: q, requested: count/configmaps=1, used: count/configmaps=1, limited: count/configmaps=1".into())
        );
        assert_eq!(
            check(&q, "", "secrets", Operation::Create, &json!({}), None),
            Ok(None)
        );
    }
}
