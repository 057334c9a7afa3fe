//! The pure part of the disruption controller: from a budget and the pods it
//! selects, the status upstream's controller writes (currentHealthy,
//! desiredHealthy, disruptionsAllowed, disruptedPods and the
//! DisruptionAllowed condition).

use std::collections::BTreeMap;
use std::sync::Arc;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::podcontrol::is_pod_ready;

/// How long a pod may stay in `status.disruptedPods` (the eviction API put
/// it there) without being deleted before it counts as healthy again.
pub const DELETION_TIMEOUT: SignedDuration = SignedDuration::from_secs(120);

/// The condition the controller maintains, and its reasons.
pub const DISRUPTION_ALLOWED: &str = "DisruptionAllowed";
pub const SUFFICIENT_PODS: &str = "SufficientPods";
pub const INSUFFICIENT_PODS: &str = "InsufficientPods";
pub const SYNC_FAILED: &str = "SyncFailed";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Words as upstream's intstr.GetScaledValueFromIntOrPercent.
    #[error("invalid value for IntOrString: invalid type: string is not a percentage")]
    NotPercent,
    #[error("invalid value for IntOrString: invalid value {0:?}: strconv.Atoi: parsing {1:?}: invalid syntax")]
    BadPercent(String, String),
}

/// An int, or a percentage of `total` rounded up (`round_up`) or down.
pub fn scaled_value(v: &IntOrString, total: i32, round_up: bool) -> Result<i32, Error> {
    match v {
        IntOrString::Int(i) => Ok(*i),
        IntOrString::String(s) => {
            let Some(digits) = s.strip_suffix('%') else {
                return Err(Error::NotPercent);
            };
            let pct: i64 = digits
                .parse()
                .map_err(|_| Error::BadPercent(s.clone(), digits.to_string()))?;
            let product = pct.saturating_mul(i64::from(total));
            let scaled = if round_up {
                product.div_euclid(100) + i64::from(product.rem_euclid(100) != 0)
            } else {
                product.div_euclid(100)
            };
            Ok(scaled.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32)
        }
    }
}

/// Pods that count as healthy: Ready, not being deleted, and not recently
/// evicted (still listed in `disrupted`).
pub fn count_healthy(pods: &[Arc<Pod>], disrupted: &BTreeMap<String, Time>, now: Timestamp) -> i32 {
    let mut healthy = 0;
    for pod in pods {
        if pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let name = pod.metadata.name.as_deref().unwrap_or_default();
        if let Some(t) = disrupted.get(name) {
            if t.0.checked_add(DELETION_TIMEOUT).is_ok_and(|d| d > now) {
                continue;
            }
        }
        if is_pod_ready(pod) {
            healthy += 1;
        }
    }
    healthy
}

/// What remains of `status.disruptedPods`: entries for pods that still
/// exist, are not yet being deleted and were evicted less than
/// [`DELETION_TIMEOUT`] ago. Also returns when the earliest kept entry
/// expires (time to look again) and the pods whose entry expired without
/// their deletion (upstream warns about them).
pub struct DisruptedPods {
    pub kept: BTreeMap<String, Time>,
    pub recheck: Option<Timestamp>,
    pub not_deleted: Vec<Arc<Pod>>,
}

pub fn build_disrupted_pods(
    pods: &[Arc<Pod>],
    pdb: &PodDisruptionBudget,
    now: Timestamp,
) -> DisruptedPods {
    let mut out = DisruptedPods {
        kept: BTreeMap::new(),
        recheck: None,
        not_deleted: Vec::new(),
    };
    let Some(listed) = pdb.status.as_ref().and_then(|s| s.disrupted_pods.as_ref()) else {
        return out;
    };
    if listed.is_empty() {
        return out;
    }
    for pod in pods {
        if pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let name = pod.metadata.name.as_deref().unwrap_or_default();
        let Some(t) = listed.get(name) else {
            continue;
        };
        let expected = t.0.checked_add(DELETION_TIMEOUT).unwrap_or(t.0);
        if expected < now {
            out.not_deleted.push(pod.clone());
        } else {
            if out.recheck.is_none_or(|r| expected < r) {
                out.recheck = Some(expected);
            }
            out.kept.insert(name.to_string(), t.clone());
        }
    }
    out
}

/// apimeta.SetStatusCondition: adds or updates the condition of the same
/// type; lastTransitionTime moves only when the status changes.
pub fn set_condition(conditions: &mut Vec<Condition>, mut new: Condition, now: Timestamp) {
    match conditions.iter_mut().find(|c| c.type_ == new.type_) {
        Some(existing) => {
            if existing.status != new.status {
                existing.status = new.status;
                existing.last_transition_time = Time(now);
            }
            existing.reason = new.reason;
            existing.message = new.message;
            existing.observed_generation = new.observed_generation;
        }
        None => {
            if new.last_transition_time.0 == Timestamp::UNIX_EPOCH {
                new.last_transition_time = Time(now);
            }
            conditions.push(new);
        }
    }
}

/// A condition of type [`DISRUPTION_ALLOWED`]; its message is empty but on
/// sync failures, as upstream's.
pub fn disruption_allowed(
    status: bool,
    reason: &str,
    message: String,
    generation: i64,
) -> Condition {
    Condition {
        type_: DISRUPTION_ALLOWED.into(),
        status: if status { "True" } else { "False" }.into(),
        reason: reason.into(),
        message,
        observed_generation: Some(generation),
        last_transition_time: Time(Timestamp::UNIX_EPOCH),
    }
}

/// pdbhelper.ConditionsAreUpToDate: the condition matches disruptionsAllowed
/// and the status describes the current generation.
fn conditions_up_to_date(pdb: &PodDisruptionBudget) -> bool {
    let Some(status) = pdb.status.as_ref() else {
        return false;
    };
    let Some(cond) = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == DISRUPTION_ALLOWED)
    else {
        return false;
    };
    if status.observed_generation != pdb.metadata.generation {
        return false;
    }
    if status.disruptions_allowed > 0 {
        cond.status == "True" && cond.reason == SUFFICIENT_PODS
    } else {
        cond.status == "False" && cond.reason == INSUFFICIENT_PODS
    }
}

/// The counts a sync computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub current_healthy: i32,
    pub desired_healthy: i32,
    pub expected_pods: i32,
}

/// The status to write, or None when the current one already says it
/// (upstream's updatePdbStatus).
pub fn next_status(
    pdb: &PodDisruptionBudget,
    counts: Counts,
    disrupted: BTreeMap<String, Time>,
    now: Timestamp,
) -> Option<PodDisruptionBudgetStatus> {
    // Nothing may be disrupted while no pods are expected: a budget whose
    // pods are just appearing stays safe until counted.
    let mut allowed = counts.current_healthy - counts.desired_healthy;
    if counts.expected_pods <= 0 || allowed <= 0 {
        allowed = 0;
    }
    let generation = pdb.metadata.generation.unwrap_or(0);
    let current = pdb.status.clone().unwrap_or_default();
    let current_disrupted = current.disrupted_pods.clone().unwrap_or_default();
    if current.current_healthy == counts.current_healthy
        && current.desired_healthy == counts.desired_healthy
        && current.expected_pods == counts.expected_pods
        && current.disruptions_allowed == allowed
        && current_disrupted == disrupted
        && current.observed_generation.unwrap_or(0) == generation
        && conditions_up_to_date(pdb)
    {
        return None;
    }
    let mut conditions = current.conditions.unwrap_or_default();
    let condition = if allowed > 0 {
        disruption_allowed(true, SUFFICIENT_PODS, String::new(), generation)
    } else {
        disruption_allowed(false, INSUFFICIENT_PODS, String::new(), generation)
    };
    set_condition(&mut conditions, condition, now);
    Some(PodDisruptionBudgetStatus {
        current_healthy: counts.current_healthy,
        desired_healthy: counts.desired_healthy,
        expected_pods: counts.expected_pods,
        disruptions_allowed: allowed,
        disrupted_pods: (!disrupted.is_empty()).then_some(disrupted),
        observed_generation: Some(generation),
        conditions: Some(conditions),
    })
}

/// upstream's failSafe: no disruptions allowed, and a SyncFailed condition
/// carrying the error.
pub fn fail_safe_status(
    pdb: &PodDisruptionBudget,
    message: String,
    now: Timestamp,
) -> PodDisruptionBudgetStatus {
    let mut status = pdb.status.clone().unwrap_or_default();
    status.disruptions_allowed = 0;
    let mut conditions = status.conditions.take().unwrap_or_default();
    let generation = status.observed_generation.unwrap_or(0);
    set_condition(
        &mut conditions,
        disruption_allowed(false, SYNC_FAILED, message, generation),
        now,
    );
    status.conditions = Some(conditions);
    status
}

/// A selector as Go prints a *metav1.LabelSelector with %v (its generated
/// String method), for the UnmanagedPods event.
pub fn go_selector_string(sel: Option<&LabelSelector>) -> String {
    let Some(sel) = sel else {
        return "nil".into();
    };
    let mut labels = String::from("map[string]string{");
    for (k, v) in sel.match_labels.iter().flatten() {
        labels.push_str(&format!("{k}: {v},"));
    }
    labels.push('}');
    let mut exprs = String::from("[]LabelSelectorRequirement{");
    for e in sel.match_expressions.iter().flatten() {
        let values = e.values.as_deref().unwrap_or_default().join(" ");
        exprs.push_str(&format!(
            "LabelSelectorRequirement{{Key:{},Operator:{},Values:[{values}],}},",
            e.key, e.operator
        ));
    }
    exprs.push('}');
    format!("&LabelSelector{{MatchLabels:{labels},MatchExpressions:{exprs},}}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, ready: bool) -> Arc<Pod> {
        Arc::new(
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": name, "namespace": "default"},
                "status": {"phase": "Running", "conditions": [
                    {"type": "Ready", "status": if ready { "True" } else { "False" }}
                ]}
            }))
            .unwrap(),
        )
    }

    fn pdb(v: serde_json::Value) -> PodDisruptionBudget {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn percentages_round_up_as_upstream() {
        let p = |s: &str| IntOrString::String(s.into());
        assert_eq!(scaled_value(&p("50%"), 3, true), Ok(2));
        assert_eq!(scaled_value(&p("50%"), 3, false), Ok(1));
        assert_eq!(scaled_value(&p("34%"), 3, true), Ok(2));
        assert_eq!(scaled_value(&p("100%"), 7, true), Ok(7));
        assert_eq!(scaled_value(&p("0%"), 7, true), Ok(0));
        assert_eq!(scaled_value(&IntOrString::Int(4), 10, true), Ok(4));
        assert_eq!(scaled_value(&p("3"), 10, true), Err(Error::NotPercent));
        assert_eq!(
            scaled_value(&p("x%"), 10, true).unwrap_err().to_string(),
            "invalid value for IntOrString: invalid value \"x%\": strconv.Atoi: parsing \"x\": invalid syntax"
        );
    }

    #[test]
    fn healthy_pods_are_ready_not_deleting_and_not_recently_evicted() {
        let now = Timestamp::now();
        let mut deleting = (*pod("d", true)).clone();
        deleting.metadata.deletion_timestamp = Some(Time(now));
        let pods = vec![
            pod("a", true),
            pod("b", false),
            pod("c", true),
            Arc::new(deleting),
            pod("e", true),
        ];
        let mut disrupted = BTreeMap::new();
        disrupted.insert("c".to_string(), Time(now - SignedDuration::from_secs(10)));
        // An entry past the timeout no longer hides the pod.
        disrupted.insert("e".to_string(), Time(now - SignedDuration::from_secs(300)));
        assert_eq!(count_healthy(&pods, &disrupted, now), 2);
    }

    #[test]
    fn disrupted_pods_expire_after_two_minutes() {
        let now = Timestamp::now();
        let recent = now - SignedDuration::from_secs(30);
        let old = now - SignedDuration::from_secs(180);
        let b = pdb(serde_json::json!({
            "metadata": {"name": "p"},
            "status": {"disruptedPods": {
                "recent": recent.to_string(),
                "old": old.to_string(),
                "gone": recent.to_string(),
            }, "currentHealthy": 0, "desiredHealthy": 0, "expectedPods": 0, "disruptionsAllowed": 0}
        }));
        let pods = vec![pod("recent", true), pod("old", true)];
        let out = build_disrupted_pods(&pods, &b, now);
        assert_eq!(out.kept.keys().collect::<Vec<_>>(), vec!["recent"]);
        assert_eq!(out.recheck, Some(recent + DELETION_TIMEOUT));
        assert_eq!(out.not_deleted.len(), 1);
        assert_eq!(out.not_deleted[0].metadata.name.as_deref(), Some("old"));
    }

    #[test]
    fn status_reports_allowed_disruptions_and_condition() {
        let now = Timestamp::now();
        let b = pdb(serde_json::json!({"metadata": {"name": "p", "generation": 3}}));
        let counts = Counts {
            current_healthy: 3,
            desired_healthy: 2,
            expected_pods: 3,
        };
        let s = next_status(&b, counts, BTreeMap::new(), now).unwrap();
        assert_eq!(s.disruptions_allowed, 1);
        assert_eq!(s.observed_generation, Some(3));
        let c = &s.conditions.as_ref().unwrap()[0];
        assert_eq!(
            (c.type_.as_str(), c.status.as_str(), c.reason.as_str()),
            ("DisruptionAllowed", "True", "SufficientPods")
        );
        assert_eq!(c.last_transition_time, Time(now));
        // Writing it again changes nothing.
        let mut written = b.clone();
        written.status = Some(s.clone());
        assert_eq!(next_status(&written, counts, BTreeMap::new(), now), None);
        // One pod fewer: nothing may be disrupted.
        let later = now + SignedDuration::from_secs(5);
        let fewer = Counts {
            current_healthy: 2,
            ..counts
        };
        let s2 = next_status(&written, fewer, BTreeMap::new(), later).unwrap();
        assert_eq!(s2.disruptions_allowed, 0);
        let c = &s2.conditions.as_ref().unwrap()[0];
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", "InsufficientPods")
        );
        assert_eq!(c.last_transition_time, Time(later));
    }

    #[test]
    fn no_disruptions_without_expected_pods() {
        let b = pdb(serde_json::json!({"metadata": {"name": "p", "generation": 1}}));
        let counts = Counts {
            current_healthy: 2,
            desired_healthy: 0,
            expected_pods: 0,
        };
        let s = next_status(&b, counts, BTreeMap::new(), Timestamp::now()).unwrap();
        assert_eq!(s.disruptions_allowed, 0);
    }

    #[test]
    fn fail_safe_keeps_counts_and_reports_the_error() {
        let b = pdb(serde_json::json!({
            "metadata": {"name": "p", "generation": 2},
            "status": {"currentHealthy": 3, "desiredHealthy": 1, "expectedPods": 3,
                       "disruptionsAllowed": 2, "observedGeneration": 1}
        }));
        let s = fail_safe_status(
            &b,
            "found no controllers for pod \"x\"".into(),
            Timestamp::now(),
        );
        assert_eq!(s.disruptions_allowed, 0);
        assert_eq!(s.current_healthy, 3);
        let c = &s.conditions.unwrap()[0];
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", "SyncFailed")
        );
        assert_eq!(c.message, "found no controllers for pod \"x\"");
        assert_eq!(c.observed_generation, Some(1));
    }

    #[test]
    fn selector_prints_as_go_does() {
        let sel: LabelSelector = serde_json::from_value(serde_json::json!({
            "matchLabels": {"app": "web", "tier": "fe"},
            "matchExpressions": [{"key": "env", "operator": "In", "values": ["a", "b"]}]
        }))
        .unwrap();
        assert_eq!(
            go_selector_string(Some(&sel)),
            "&LabelSelector{MatchLabels:map[string]string{app: web,tier: fe,},\
             MatchExpressions:[]LabelSelectorRequirement{LabelSelectorRequirement{Key:env,Operator:In,Values:[a b],},},}"
        );
    }
}
