//! Priority: resolves a new pod's priority (and preemption policy) from its
//! PriorityClass, the global default class, or 0; refuses unknown classes;
//! validates PriorityClasses (one global default, the reserved `system-`
//! names).

use serde_json::{json, Value};

use super::{list, Attributes, Denial, Operation};
use crate::handler::Api;
use crate::status::Cause;

/// Upstream's built-in classes (scheduling.SystemPriorityClasses), created
/// at bootstrap: (name, value, description).
pub const SYSTEM_CLASSES: &[(&str, i64, &str)] = &[
    (
        "system-node-critical",
        2_000_001_000,
        "Used for system critical pods that must not be moved from their current node.",
    ),
    (
        "system-cluster-critical",
        2_000_000_000,
        "Used for system critical pods that must run in the cluster, but can be moved to another node if necessary.",
    ),
];

const DEFAULT_PREEMPTION: &str = "PreemptLowerPriority";

async fn classes(api: &Api) -> Result<Vec<Value>, Denial> {
    list(api, "scheduling.k8s.io", "priorityclasses", "").await
}

fn name(v: &Value) -> &str {
    v.pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
}

fn value(v: &Value) -> i64 {
    v.get("value").and_then(Value::as_i64).unwrap_or(0)
}

fn is_global_default(v: &Value) -> bool {
    v.get("globalDefault")
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

/// The global default class; with several (a race), the lowest value wins.
fn default_class(classes: &[Value]) -> Option<&Value> {
    classes
        .iter()
        .filter(|c| is_global_default(c))
        .min_by_key(|c| value(c))
}

pub(super) async fn mutate(api: &Api, a: &Attributes<'_>, pod: &mut Value) -> Result<(), Denial> {
    if !a.is("", "pods") || !a.subresource.is_empty() {
        return Ok(());
    }
    match a.operation {
        Operation::Update => {
            keep_on_update(pod, a.old);
            Ok(())
        }
        Operation::Create => {
            let mut all = classes(api).await?;
            let named = pod
                .pointer("/spec/priorityClassName")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            // A class created a moment ago may not be cached yet.
            if !named.is_empty() && !all.iter().any(|c| name(c) == named) {
                if let Some(res) = super::served(api, "scheduling.k8s.io", "priorityclasses") {
                    if let Ok(c) = api.registry.get(&res, None, &named).await {
                        all.push(c);
                    }
                }
            }
            resolve(&all, pod)
        }
    }
}

/// Priority is set on create only; an update that leaves it out keeps it
/// (validation then refuses real changes).
fn keep_on_update(pod: &mut Value, old: Option<&Value>) {
    let Some(old_spec) = old.and_then(|o| o.get("spec")) else {
        return;
    };
    let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    for f in ["priority", "preemptionPolicy"] {
        if spec.get(f).is_none_or(Value::is_null) {
            if let Some(v) = old_spec.get(f).filter(|v| !v.is_null()) {
                spec.insert(f.into(), v.clone());
            }
        }
    }
}

/// What this server's defaulting already filled in before admission (it
/// stands in for this plugin when admission is skipped): not a value the
/// client provided, so never a conflict.
fn defaulted_priority(class: &str) -> Option<i64> {
    match class {
        "" => Some(0),
        c => SYSTEM_CLASSES
            .iter()
            .find(|(n, _, _)| *n == c)
            .map(|(_, v, _)| *v),
    }
}

/// Upstream `admitPod` on create.
pub(crate) fn resolve(classes: &[Value], pod: &mut Value) -> Result<(), Denial> {
    let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else {
        return Ok(());
    };
    let named = spec
        .get("priorityClassName")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let (class_name, priority, preemption) = if named.is_empty() {
        match default_class(classes) {
            Some(c) => (
                name(c).to_string(),
                value(c),
                c.get("preemptionPolicy")
                    .and_then(Value::as_str)
                    .map(String::from),
            ),
            None => (String::new(), 0, Some(DEFAULT_PREEMPTION.to_string())),
        }
    } else {
        let Some(c) = classes.iter().find(|c| name(c) == named) else {
            return Err(Denial::Forbidden(format!(
                "no PriorityClass with name {named} was found"
            )));
        };
        (
            named.clone(),
            value(c),
            c.get("preemptionPolicy")
                .and_then(Value::as_str)
                .map(String::from),
        )
    };
    if let Some(given) = spec.get("priority").and_then(Value::as_i64) {
        if given != priority && Some(given) != defaulted_priority(&named) {
            return Err(Denial::Forbidden(format!(
                "the integer value of priority ({given}) must not be provided in pod spec; priority admission controller computed {priority} from the given PriorityClass name"
            )));
        }
    }
    if !class_name.is_empty() {
        spec.insert("priorityClassName".into(), json!(class_name));
    }
    spec.insert("priority".into(), json!(priority));
    if let Some(p) = preemption {
        if let Some(given) = spec.get("preemptionPolicy").and_then(Value::as_str) {
            if given != p && given != DEFAULT_PREEMPTION {
                return Err(Denial::Forbidden(format!(
                    "the string value of PreemptionPolicy ({given}) must not be provided in pod spec; priority admission controller computed {p} from the given PriorityClass name"
                )));
            }
        }
        spec.insert("preemptionPolicy".into(), json!(p));
    }
    Ok(())
}

pub(super) async fn validate(api: &Api, a: &Attributes<'_>, pc: &Value) -> Result<(), Denial> {
    if !a.is("scheduling.k8s.io", "priorityclasses") || !a.subresource.is_empty() {
        return Ok(());
    }
    reserved_name(pc)?;
    if !is_global_default(pc) {
        return Ok(());
    }
    let all = classes(api).await?;
    one_default(&all, pc, a.operation)
}

/// Upstream validation's `IsKnownSystemPriorityClass` check.
pub(crate) fn reserved_name(pc: &Value) -> Result<(), Denial> {
    let n = name(pc);
    if !n.starts_with("system-") {
        return Ok(());
    }
    let why = match SYSTEM_CLASSES.iter().find(|(s, _, _)| *s == n) {
        None => format!("{n} is not a known system priority class"),
        Some((_, v, _)) if value(pc) != *v => format!("value of {n} PriorityClass must be {v}"),
        Some(_) if is_global_default(pc) => {
            format!("globalDefault of {n} PriorityClass must be false")
        }
        Some(_) => return Ok(()),
    };
    Err(Denial::Invalid(vec![Cause {
        reason: "FieldValueForbidden".into(),
        message: format!(
            "Forbidden: priority class names with 'system-' prefix are reserved for system use only. error: {why}"
        ),
        field: "metadata.name".into(),
    }]))
}

/// Only one class may be the global default.
pub(crate) fn one_default(classes: &[Value], pc: &Value, op: Operation) -> Result<(), Denial> {
    let Some(current) = default_class(classes) else {
        return Ok(());
    };
    if op == Operation::Create || name(current) != name(pc) {
        return Err(Denial::Forbidden(format!(
            "PriorityClass {} is already marked as default. Only one default can exist",
            name(current)
        )));
    }
    Ok(())
}

/// The built-in classes as bootstrap creates them.
pub fn system_class_objects() -> Vec<Value> {
    SYSTEM_CLASSES
        .iter()
        .map(|(n, v, d)| {
            json!({
                "apiVersion": "scheduling.k8s.io/v1",
                "kind": "PriorityClass",
                "metadata": {"name": n},
                "value": v,
                "description": d,
                "preemptionPolicy": DEFAULT_PREEMPTION,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pc(n: &str, v: i64, default: bool) -> Value {
        json!({"metadata": {"name": n}, "value": v, "globalDefault": default, "preemptionPolicy": "PreemptLowerPriority"})
    }

    #[test]
    fn named_class_sets_priority_and_policy() {
        let mut never = pc("batch", 100, false);
        never["preemptionPolicy"] = json!("Never");
        let mut pod = json!({"spec": {"priorityClassName": "batch", "preemptionPolicy": "PreemptLowerPriority"}});
        resolve(&[never], &mut pod).unwrap();
        assert_eq!(pod["spec"]["priority"], 100);
        assert_eq!(pod["spec"]["preemptionPolicy"], "Never");
    }

    #[test]
    fn unknown_class_refused() {
        let mut pod = json!({"spec": {"priorityClassName": "nope"}});
        assert_eq!(
            resolve(&[], &mut pod),
            Err(Denial::Forbidden(
                "no PriorityClass with name nope was found".into()
            ))
        );
    }

    #[test]
    fn global_default_or_zero() {
        let mut pod = json!({"spec": {"priority": 0}});
        resolve(
            &[pc("low", 5, true), pc("lower", 3, true), pc("x", 9, false)],
            &mut pod,
        )
        .unwrap();
        assert_eq!(pod["spec"]["priorityClassName"], "lower");
        assert_eq!(pod["spec"]["priority"], 3);

        let mut none = json!({"spec": {}});
        resolve(&[pc("x", 9, false)], &mut none).unwrap();
        assert_eq!(none["spec"]["priority"], 0);
        assert_eq!(none["spec"]["preemptionPolicy"], "PreemptLowerPriority");
        assert!(none["spec"].get("priorityClassName").is_none());
    }

    #[test]
    fn explicit_conflicting_priority_refused() {
        let mut pod = json!({"spec": {"priorityClassName": "high", "priority": 7}});
        let err = resolve(&[pc("high", 1000, false)], &mut pod).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the integer value of priority (7) must not be provided in pod spec; priority admission controller computed 1000 from the given PriorityClass name"
        );
    }

    #[test]
    fn update_keeps_priority() {
        let old = json!({"spec": {"priority": 10, "preemptionPolicy": "Never"}});
        let mut new = json!({"spec": {}});
        keep_on_update(&mut new, Some(&old));
        assert_eq!(
            new["spec"],
            json!({"priority": 10, "preemptionPolicy": "Never"})
        );
    }

    #[test]
    fn system_names_reserved() {
        assert!(reserved_name(&pc("system-node-critical", 2_000_001_000, false)).is_ok());
        let Err(Denial::Invalid(c)) = reserved_name(&pc("system-mine", 5, false)) else {
            panic!("expected Invalid");
        };
        assert_eq!(c[0].field, "metadata.name");
        assert_eq!(
            c[0].message,
            "Forbidden: priority class names with 'system-' prefix are reserved for system use only. error: system-mine is not a known system priority class"
        );
        assert!(reserved_name(&pc("system-cluster-critical", 1, false)).is_err());
        assert!(reserved_name(&pc("mine", 5, false)).is_ok());
    }

    #[test]
    fn only_one_global_default() {
        let existing = [pc("a", 1, true)];
        assert_eq!(
            one_default(&existing, &pc("b", 2, true), Operation::Create),
            Err(Denial::Forbidden(
                "PriorityClass a is already marked as default. Only one default can exist".into()
            ))
        );
        assert!(one_default(&existing, &pc("a", 1, true), Operation::Update).is_ok());
        assert!(one_default(&[], &pc("b", 2, true), Operation::Create).is_ok());
    }
}
