//! `spec.podFailurePolicy` and `spec.successPolicy` (upstream
//! pod_failure_policy.go and success_policy.go).

use k8s_openapi::api::batch::v1::{
    PodFailurePolicy, PodFailurePolicyOnExitCodesRequirement, SuccessPolicy,
};
use k8s_openapi::api::core::v1::{ContainerStatus, Pod};

use super::indexes::Intervals;

/// The action of the pod failure policy rule a failed pod matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureAction {
    FailJob,
    FailIndex,
    Ignore,
    Count,
}

impl FailureAction {
    fn parse(s: &str) -> Option<FailureAction> {
        match s {
            "FailJob" => Some(FailureAction::FailJob),
            "FailIndex" => Some(FailureAction::FailIndex),
            "Ignore" => Some(FailureAction::Ignore),
            "Count" => Some(FailureAction::Count),
            _ => None,
        }
    }
}

/// What a failed pod means under the policy: the Job failure message (a
/// FailJob rule matched), whether the failure counts towards the backoff
/// limit (not for Ignore), and the matched action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyMatch {
    pub fail_job_message: Option<String>,
    pub count_failed: bool,
    pub action: Option<FailureAction>,
}

impl PolicyMatch {
    fn unmatched() -> PolicyMatch {
        PolicyMatch {
            fail_job_message: None,
            count_failed: true,
            action: None,
        }
    }
}

/// Matches a failed pod against the rules, first match wins (upstream's
/// matchPodFailurePolicy).
pub fn match_pod_failure_policy(policy: Option<&PodFailurePolicy>, pod: &Pod) -> PolicyMatch {
    let Some(policy) = policy else {
        return PolicyMatch::unmatched();
    };
    let ns = pod.metadata.namespace.as_deref().unwrap_or("");
    let name = pod.metadata.name.as_deref().unwrap_or("");
    for (index, rule) in policy.rules.iter().enumerate() {
        // An action this controller doesn't know makes the rule inert.
        let Some(action) = FailureAction::parse(&rule.action) else {
            continue;
        };
        let matched = if let Some(req) = &rule.on_exit_codes {
            match_on_exit_codes(pod, req).map(|cs| {
                let code = cs
                    .state
                    .as_ref()
                    .and_then(|s| s.terminated.as_ref())
                    .map(|t| t.exit_code)
                    .unwrap_or(0);
                format!(
                    "Container {} for pod {ns}/{name} failed with exit code {code} matching {} rule at index {index}",
                    cs.name, rule.action
                )
            })
        } else if let Some(patterns) = &rule.on_pod_conditions {
            pod.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .into_iter()
                .flatten()
                .find(|c| {
                    patterns
                        .iter()
                        .any(|p| p.type_ == c.type_ && p.status == c.status)
                })
                .map(|c| {
                    format!(
                        "Pod {ns}/{name} has condition {} matching {} rule at index {index}",
                        c.type_, rule.action
                    )
                })
        } else {
            None
        };
        let Some(message) = matched else {
            continue;
        };
        return match action {
            FailureAction::Ignore => PolicyMatch {
                fail_job_message: None,
                count_failed: false,
                action: Some(action),
            },
            FailureAction::Count | FailureAction::FailIndex => PolicyMatch {
                fail_job_message: None,
                count_failed: true,
                action: Some(action),
            },
            FailureAction::FailJob => PolicyMatch {
                fail_job_message: Some(message),
                count_failed: true,
                action: Some(action),
            },
        };
    }
    PolicyMatch::unmatched()
}

/// The first terminated container (then init container) with a non-zero
/// exit code satisfying the requirement.
fn match_on_exit_codes<'a>(
    pod: &'a Pod,
    req: &PodFailurePolicyOnExitCodesRequirement,
) -> Option<&'a ContainerStatus> {
    let status = pod.status.as_ref()?;
    let lists = [
        status.container_statuses.as_deref().unwrap_or_default(),
        status
            .init_container_statuses
            .as_deref()
            .unwrap_or_default(),
    ];
    lists.into_iter().find_map(|list| {
        list.iter().find(|cs| {
            let Some(t) = cs.state.as_ref().and_then(|s| s.terminated.as_ref()) else {
                return false;
            };
            if req.container_name.as_ref().is_some_and(|n| *n != cs.name) || t.exit_code == 0 {
                return false;
            }
            match req.operator.as_str() {
                "In" => req.values.contains(&t.exit_code),
                "NotIn" => !req.values.contains(&t.exit_code),
                _ => false,
            }
        })
    })
}

/// Whether the succeeded indexes satisfy a success policy rule; returns
/// the SuccessCriteriaMet message ("Matched rules at index N").
pub fn match_success_policy(
    policy: Option<&SuccessPolicy>,
    completions: i32,
    succeeded: &Intervals,
) -> Option<String> {
    let policy = policy?;
    if succeeded.is_empty() {
        return None;
    }
    for (index, rule) in policy.rules.iter().enumerate() {
        let met = if let Some(ix) = &rule.succeeded_indexes {
            let required = Intervals::parse(ix, completions);
            if required.is_empty() {
                continue;
            }
            let contains = overlap(&required, succeeded);
            contains == required.total() || rule.succeeded_count.is_some_and(|c| contains >= c)
        } else {
            rule.succeeded_count.is_some_and(|c| succeeded.total() >= c)
        };
        if met {
            return Some(format!("Matched rules at index {index}"));
        }
    }
    None
}

/// How many indexes two interval lists share.
fn overlap(a: &Intervals, b: &Intervals) -> i32 {
    let (mut i, mut j, mut n) = (0, 0, 0);
    while i < a.0.len() && j < b.0.len() {
        let (x, y) = (a.0[i], b.0[j]);
        let o = x.last.min(y.last) - x.first.max(y.first) + 1;
        if o > 0 {
            n += o;
        }
        if y.last < x.last {
            j += 1;
        } else if y.last > x.last {
            i += 1;
        } else {
            i += 1;
            j += 1;
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed_pod(exit: i32, conditions: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns"},
            "status": {
                "phase": "Failed",
                "conditions": conditions,
                "containerStatuses": [{
                    "name": "main", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
                    "state": {"terminated": {"exitCode": exit}}
                }]
            }
        }))
        .unwrap()
    }

    fn policy(v: serde_json::Value) -> PodFailurePolicy {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn fail_job_on_exit_code_has_upstream_message() {
        let p = policy(serde_json::json!({"rules": [
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
            {"action": "FailJob", "onExitCodes": {"containerName": "main", "operator": "In", "values": [42]}}
        ]}));
        let m = match_pod_failure_policy(Some(&p), &failed_pod(42, serde_json::json!([])));
        assert_eq!(m.action, Some(FailureAction::FailJob));
        assert_eq!(
            m.fail_job_message.as_deref(),
            Some("Container main for pod ns/p failed with exit code 42 matching FailJob rule at index 1")
        );
        let other = match_pod_failure_policy(Some(&p), &failed_pod(1, serde_json::json!([])));
        assert_eq!(other, PolicyMatch::unmatched());
    }

    #[test]
    fn ignore_on_condition_does_not_count_and_not_in_matches_others() {
        let p = policy(serde_json::json!({"rules": [
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
            {"action": "Count", "onExitCodes": {"operator": "NotIn", "values": [1]}}
        ]}));
        let disrupted = failed_pod(
            137,
            serde_json::json!([{"type": "DisruptionTarget", "status": "True"}]),
        );
        let m = match_pod_failure_policy(Some(&p), &disrupted);
        assert_eq!(
            (m.count_failed, m.action),
            (false, Some(FailureAction::Ignore))
        );
        let m = match_pod_failure_policy(Some(&p), &failed_pod(3, serde_json::json!([])));
        assert_eq!(
            (m.count_failed, m.action),
            (true, Some(FailureAction::Count))
        );
        // Exit code 0 never matches an exit code rule.
        let m = match_pod_failure_policy(Some(&p), &failed_pod(0, serde_json::json!([])));
        assert_eq!(m.action, None);
    }

    #[test]
    fn success_policy_rules() {
        let sp: SuccessPolicy = serde_json::from_value(serde_json::json!({"rules": [
            {"succeededIndexes": "0-2", "succeededCount": 2},
            {"succeededCount": 4}
        ]}))
        .unwrap();
        let s = |v: &str| Intervals::parse(v, 10);
        assert_eq!(match_success_policy(Some(&sp), 10, &s("")), None);
        assert_eq!(match_success_policy(Some(&sp), 10, &s("0,5")), None);
        assert_eq!(
            match_success_policy(Some(&sp), 10, &s("0,2")).as_deref(),
            Some("Matched rules at index 0")
        );
        assert_eq!(
            match_success_policy(Some(&sp), 10, &s("5-8")).as_deref(),
            Some("Matched rules at index 1")
        );
    }
}
