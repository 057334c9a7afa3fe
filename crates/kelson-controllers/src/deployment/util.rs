//! Pure helpers of the Deployment controller, after upstream's
//! pkg/controller/deployment/util: fenceposts, the pod-template hash,
//! revisions and annotations, conditions and the status arithmetic.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::Value;

use crate::history::{fnv1a_32, safe_encode, FNV_OFFSET};

pub const REVISION_ANNOTATION: &str = "deployment.kubernetes.io/revision";
pub const REVISION_HISTORY_ANNOTATION: &str = "deployment.kubernetes.io/revision-history";
pub const DESIRED_REPLICAS_ANNOTATION: &str = "deployment.kubernetes.io/desired-replicas";
pub const MAX_REPLICAS_ANNOTATION: &str = "deployment.kubernetes.io/max-replicas";
const DEPRECATED_ROLLBACK_TO: &str = "deprecated.deployment.rollback.to";
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";
/// The label a Deployment adds to its replica sets, their selectors and
/// pods.
pub const POD_TEMPLATE_HASH_LABEL: &str = "pod-template-hash";
/// Upstream caps the revision-history annotation at this many characters.
const MAX_REV_HISTORY_CHARS: usize = 2000;

// Condition types and reasons, as upstream.
pub const PROGRESSING: &str = "Progressing";
pub const AVAILABLE: &str = "Available";
pub const REPLICA_FAILURE: &str = "ReplicaFailure";
pub const REASON_RS_UPDATED: &str = "ReplicaSetUpdated";
pub const REASON_RS_CREATE_ERROR: &str = "ReplicaSetCreateError";
pub const REASON_NEW_RS_CREATED: &str = "NewReplicaSetCreated";
pub const REASON_FOUND_NEW_RS: &str = "FoundNewReplicaSet";
pub const REASON_NEW_RS_AVAILABLE: &str = "NewReplicaSetAvailable";
pub const REASON_TIMED_OUT: &str = "ProgressDeadlineExceeded";
pub const REASON_PAUSED: &str = "DeploymentPaused";
pub const REASON_RESUMED: &str = "DeploymentResumed";
pub const REASON_MIN_AVAILABLE: &str = "MinimumReplicasAvailable";
pub const REASON_MIN_UNAVAILABLE: &str = "MinimumReplicasUnavailable";

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum Error {
    #[error("invalid value for IntOrString: invalid value {0:?}: {1}")]
    IntOrString(String, String),
}

/// `spec.replicas`, 1 when unset as the API defaults it.
pub fn desired(d: &Deployment) -> i32 {
    d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

pub fn is_rolling_update(d: &Deployment) -> bool {
    d.spec
        .as_ref()
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.type_.as_deref())
        .unwrap_or("RollingUpdate")
        == "RollingUpdate"
}

pub fn is_paused(d: &Deployment) -> bool {
    d.spec.as_ref().and_then(|s| s.paused).unwrap_or(false)
}

pub fn min_ready_seconds(d: &Deployment) -> i32 {
    d.spec
        .as_ref()
        .and_then(|s| s.min_ready_seconds)
        .unwrap_or(0)
}

/// `progressDeadlineSeconds` unless unset or MaxInt32 ("no deadline").
pub fn progress_deadline(d: &Deployment) -> Option<i32> {
    d.spec
        .as_ref()
        .and_then(|s| s.progress_deadline_seconds)
        .filter(|s| *s != i32::MAX)
}

/// An int, or a percentage of `total` rounded up or down
/// (intstr.GetScaledValueFromIntOrPercent).
pub fn scaled_value(v: &IntOrString, total: i32, round_up: bool) -> Result<i32, Error> {
    match v {
        IntOrString::Int(i) => Ok(*i),
        IntOrString::String(s) => {
            let Some(p) = s.strip_suffix('%') else {
                return Err(Error::IntOrString(
                    s.clone(),
                    "must be an integer or percentage (e.g '5%')".into(),
                ));
            };
            let p: i64 = p.parse().map_err(|e: std::num::ParseIntError| {
                Error::IntOrString(s.clone(), e.to_string())
            })?;
            let scaled = p * i64::from(total);
            let v = if round_up {
                scaled.div_euclid(100) + i64::from(scaled.rem_euclid(100) != 0)
            } else {
                scaled.div_euclid(100)
            };
            Ok(v.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32)
        }
    }
}

/// Upstream's ResolveFenceposts: maxSurge rounds up, maxUnavailable down,
/// and both zero becomes maxUnavailable 1 so a rollout can progress.
pub fn resolve_fenceposts(
    max_surge: Option<&IntOrString>,
    max_unavailable: Option<&IntOrString>,
    desired: i32,
) -> Result<(i32, i32), Error> {
    let quarter = IntOrString::String("25%".into());
    let surge = scaled_value(max_surge.unwrap_or(&quarter), desired, true)?;
    let unavailable = scaled_value(max_unavailable.unwrap_or(&quarter), desired, false)?;
    if surge == 0 && unavailable == 0 {
        return Ok((0, 1));
    }
    Ok((surge, unavailable))
}

fn fenceposts(d: &Deployment) -> (i32, i32) {
    let ru = d
        .spec
        .as_ref()
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.rolling_update.as_ref());
    // Validation rejects bad values; treat a bad one as 0 rather than fail.
    resolve_fenceposts(
        ru.and_then(|r| r.max_surge.as_ref()),
        ru.and_then(|r| r.max_unavailable.as_ref()),
        desired(d),
    )
    .unwrap_or((0, 1))
}

/// Extra pods allowed above `spec.replicas` (0 for Recreate).
pub fn max_surge(d: &Deployment) -> i32 {
    if !is_rolling_update(d) {
        return 0;
    }
    fenceposts(d).0
}

/// Pods allowed below `spec.replicas` (0 for Recreate), at most all.
pub fn max_unavailable(d: &Deployment) -> i32 {
    if !is_rolling_update(d) || desired(d) == 0 {
        return 0;
    }
    fenceposts(d).1.min(desired(d))
}

/// The pod-template-hash: fnv32a over the template's JSON (upstream hashes
/// its Go dump, so the numbers differ, but it is as stable) and the
/// collision count, printed in decimal and safe-encoded.
pub fn compute_hash(template: &PodTemplateSpec, collision_count: Option<i32>) -> String {
    let json = serde_json::to_vec(template).unwrap_or_default();
    let mut h = fnv1a_32(&json, FNV_OFFSET);
    if let Some(c) = collision_count {
        h = fnv1a_32(&(c as u32).to_le_bytes(), h);
    }
    safe_encode(&h.to_string())
}

/// Drops what semantic equality ignores: nulls and empty lists, and empty
/// label/annotation maps.
fn normalize(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|_, v| !v.is_null() && !matches!(v, Value::Array(a) if a.is_empty()));
            for (_, v) in m.iter_mut() {
                normalize(v);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(normalize),
        _ => {}
    }
}

fn template_without_hash(t: &PodTemplateSpec) -> Value {
    let mut v = serde_json::to_value(t).unwrap_or(Value::Null);
    if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        if let Some(labels) = meta.get_mut("labels").and_then(Value::as_object_mut) {
            labels.remove(POD_TEMPLATE_HASH_LABEL);
        }
        for k in ["labels", "annotations"] {
            if meta
                .get(k)
                .and_then(Value::as_object)
                .is_some_and(|m| m.is_empty())
            {
                meta.remove(k);
            }
        }
        if meta.is_empty() {
            if let Some(o) = v.as_object_mut() {
                o.remove("metadata");
            }
        }
    }
    normalize(&mut v);
    v
}

/// Whether two templates are equal but for the pod-template-hash label
/// (upstream's EqualIgnoreHash).
pub fn equal_ignore_hash(a: &PodTemplateSpec, b: &PodTemplateSpec) -> bool {
    template_without_hash(a) == template_without_hash(b)
}

/// The revision annotation as a number; 0 when missing, None when garbled.
pub fn revision(meta: &ObjectMeta) -> Option<i64> {
    match meta
        .annotations
        .as_ref()
        .and_then(|a| a.get(REVISION_ANNOTATION))
    {
        None => Some(0),
        Some(v) => v.parse().ok(),
    }
}

pub fn max_revision(rss: &[ReplicaSet]) -> i64 {
    rss.iter()
        .filter_map(|rs| revision(&rs.metadata))
        .max()
        .unwrap_or(0)
        .max(0)
}

fn skip_copy(key: &str) -> bool {
    matches!(
        key,
        LAST_APPLIED
            | REVISION_ANNOTATION
            | REVISION_HISTORY_ANNOTATION
            | DESIRED_REPLICAS_ANNOTATION
            | MAX_REPLICAS_ANNOTATION
            | DEPRECATED_ROLLBACK_TO
    )
}

fn copy_deployment_annotations(d: &Deployment, rs: &mut ObjectMeta) -> bool {
    let mut changed = false;
    let target = rs.annotations.get_or_insert_with(BTreeMap::new);
    for (k, v) in d.metadata.annotations.iter().flatten() {
        if skip_copy(k) || target.get(k) == Some(v) {
            continue;
        }
        target.insert(k.clone(), v.clone());
        changed = true;
    }
    changed
}

/// Sets desired-replicas and max-replicas; true when something changed.
pub fn set_replicas_annotations(meta: &mut ObjectMeta, desired: i32, max: i32) -> bool {
    let a = meta.annotations.get_or_insert_with(BTreeMap::new);
    let mut changed = false;
    for (k, v) in [
        (DESIRED_REPLICAS_ANNOTATION, desired),
        (MAX_REPLICAS_ANNOTATION, max),
    ] {
        let v = v.to_string();
        if a.get(k) != Some(&v) {
            a.insert(k.to_string(), v);
            changed = true;
        }
    }
    changed
}

pub fn replicas_annotations_need_update(meta: &ObjectMeta, desired: i32, max: i32) -> bool {
    let a = meta.annotations.as_ref();
    let get = |k: &str| a.and_then(|a| a.get(k)).cloned();
    get(DESIRED_REPLICAS_ANNOTATION) != Some(desired.to_string())
        || get(MAX_REPLICAS_ANNOTATION) != Some(max.to_string())
}

fn int_annotation(rs: &ReplicaSet, key: &str) -> Option<i32> {
    rs.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .and_then(|v| v.parse().ok())
}

pub fn desired_replicas_annotation(rs: &ReplicaSet) -> Option<i32> {
    int_annotation(rs, DESIRED_REPLICAS_ANNOTATION)
}

/// Upstream's SetNewReplicaSetAnnotations: copies the deployment's
/// annotations, raises the revision to `new_revision` (keeping the old one
/// in revision-history on a rollback) and, for a replica set about to be
/// created, records the replicas annotations.
pub fn set_new_rs_annotations(
    d: &Deployment,
    rs: &mut ObjectMeta,
    new_revision: i64,
    exists: bool,
) -> bool {
    let mut changed = copy_deployment_annotations(d, rs);
    let a = rs.annotations.get_or_insert_with(BTreeMap::new);
    let old = a.get(REVISION_ANNOTATION).cloned();
    let old_int = match &old {
        None => 0,
        Some(v) => match v.parse::<i64>() {
            Ok(v) => v,
            Err(_) => return false,
        },
    };
    if old_int < new_revision {
        a.insert(REVISION_ANNOTATION.into(), new_revision.to_string());
        changed = true;
        if let Some(old) = old {
            let history = a
                .get(REVISION_HISTORY_ANNOTATION)
                .cloned()
                .unwrap_or_default();
            if history.is_empty() {
                a.insert(REVISION_HISTORY_ANNOTATION.into(), old);
            } else {
                let mut revs: Vec<&str> = history.split(',').collect();
                let mut total = history.len() + old.len() + 1;
                let mut start = 0;
                while total > MAX_REV_HISTORY_CHARS && start < revs.len() {
                    total -= revs[start].len() + 1;
                    start += 1;
                }
                if total <= MAX_REV_HISTORY_CHARS {
                    revs = revs.split_off(start);
                    revs.push(&old);
                    let joined = revs.join(",");
                    a.insert(REVISION_HISTORY_ANNOTATION.into(), joined);
                }
            }
        }
    }
    if !exists && set_replicas_annotations(rs, desired(d), desired(d) + max_surge(d)) {
        changed = true;
    }
    changed
}

pub fn rs_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

pub fn rs_status(rs: &ReplicaSet) -> (i32, i32, i32) {
    let s = rs.status.as_ref();
    (
        s.map(|s| s.replicas).unwrap_or(0),
        s.and_then(|s| s.ready_replicas).unwrap_or(0),
        s.and_then(|s| s.available_replicas).unwrap_or(0),
    )
}

/// Sum of `spec.replicas`.
pub fn replica_count(rss: &[&ReplicaSet]) -> i32 {
    rss.iter().map(|rs| rs_replicas(rs)).sum()
}

/// Sum of `status.replicas`.
pub fn actual_replica_count(rss: &[&ReplicaSet]) -> i32 {
    rss.iter().map(|rs| rs_status(rs).0).sum()
}

pub fn available_replica_count(rss: &[&ReplicaSet]) -> i32 {
    rss.iter().map(|rs| rs_status(rs).2).sum()
}

/// Replicas of the new replica set after one rolling step: up to
/// `spec.replicas + maxSurge` pods in all, never above `spec.replicas`
/// (upstream's NewRSNewReplicas).
pub fn new_rs_new_replicas(d: &Deployment, all: &[&ReplicaSet], new_rs_replicas: i32) -> i32 {
    if !is_rolling_update(d) {
        return desired(d);
    }
    let max_total = desired(d) + max_surge(d);
    let current = replica_count(all);
    if current >= max_total {
        return new_rs_replicas;
    }
    let up = (max_total - current).min(desired(d) - new_rs_replicas);
    new_rs_replicas + up.max(0)
}

/// The new replica set runs all the desired replicas, available.
pub fn is_saturated(d: &Deployment, rs: &ReplicaSet) -> bool {
    desired_replicas_annotation(rs) == Some(desired(d))
        && rs_replicas(rs) == desired(d)
        && rs_status(rs).2 == desired(d)
}

/// By creation time, then name (upstream's ReplicaSetsByCreationTimestamp).
pub fn by_creation(a: &ReplicaSet, b: &ReplicaSet) -> Ordering {
    let t = |rs: &ReplicaSet| rs.metadata.creation_timestamp.as_ref().map(|t| t.0);
    t(a).cmp(&t(b))
        .then_with(|| a.metadata.name.cmp(&b.metadata.name))
}

/// Oldest revision first, then creation time.
pub fn by_revision(a: &ReplicaSet, b: &ReplicaSet) -> Ordering {
    let r = |rs: &ReplicaSet| revision(&rs.metadata).unwrap_or(0);
    r(a).cmp(&r(b)).then_with(|| by_creation(a, b))
}

/// Proportion of `to_add` a replica set gets when a Deployment with several
/// active replica sets is scaled (upstream's GetReplicaSetProportion).
pub fn proportion(rs: &ReplicaSet, d: &Deployment, to_add: i32, added: i32) -> i32 {
    if rs_replicas(rs) == 0 || to_add == 0 || to_add == added {
        return 0;
    }
    let fraction = if desired(d) == 0 {
        -rs_replicas(rs)
    } else {
        let max = desired(d) + max_surge(d);
        let before = match int_annotation(rs, MAX_REPLICAS_ANNOTATION) {
            Some(v) if v != 0 => v,
            _ => d.status.as_ref().and_then(|s| s.replicas).unwrap_or(0),
        };
        if before == 0 {
            0
        } else {
            let size = f64::from(rs_replicas(rs)) * f64::from(max) / f64::from(before);
            size.round() as i32 - rs_replicas(rs)
        }
    };
    let allowed = to_add - added;
    if to_add > 0 {
        fraction.min(allowed)
    } else {
        fraction.max(allowed)
    }
}

pub fn condition<'a>(
    status: Option<&'a DeploymentStatus>,
    kind: &str,
) -> Option<&'a DeploymentCondition> {
    status?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == kind)
}

pub fn new_condition(
    kind: &str,
    status: &str,
    reason: &str,
    message: String,
    now: Timestamp,
) -> DeploymentCondition {
    DeploymentCondition {
        type_: kind.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message),
        last_update_time: Some(Time(now)),
        last_transition_time: Some(Time(now)),
    }
}

/// Upstream's SetDeploymentCondition: nothing changes when status and
/// reason are the same; the transition time survives when only the reason
/// changes.
pub fn set_condition(status: &mut DeploymentStatus, mut cond: DeploymentCondition) {
    let conditions = status.conditions.get_or_insert_with(Vec::new);
    if let Some(cur) = conditions.iter().find(|c| c.type_ == cond.type_) {
        if cur.status == cond.status && cur.reason == cond.reason {
            return;
        }
        if cur.status == cond.status {
            cond.last_transition_time = cur.last_transition_time.clone();
        }
    }
    conditions.retain(|c| c.type_ != cond.type_);
    conditions.push(cond);
}

pub fn remove_condition(status: &mut DeploymentStatus, kind: &str) {
    if let Some(c) = status.conditions.as_mut() {
        c.retain(|c| c.type_ != kind);
        if c.is_empty() {
            status.conditions = None;
        }
    }
}

/// Upstream's calculateStatus over all replica sets (`new_rs` among them).
pub fn calculate_status(
    all: &[&ReplicaSet],
    new_rs: Option<&ReplicaSet>,
    d: &Deployment,
    now: Timestamp,
) -> DeploymentStatus {
    let available = available_replica_count(all);
    let total = replica_count(all);
    let unavailable = (total - available).max(0);
    let old = d.status.clone().unwrap_or_default();
    let mut status = DeploymentStatus {
        observed_generation: d.metadata.generation,
        replicas: Some(actual_replica_count(all)),
        updated_replicas: Some(new_rs.map(|rs| rs_status(rs).0).unwrap_or(0)),
        ready_replicas: Some(all.iter().map(|rs| rs_status(rs).1).sum()),
        available_replicas: Some(available),
        unavailable_replicas: Some(unavailable),
        collision_count: old.collision_count,
        conditions: old.conditions.clone(),
        terminating_replicas: old.terminating_replicas,
    };
    if available >= desired(d) - max_unavailable(d) {
        set_condition(
            &mut status,
            new_condition(
                AVAILABLE,
                "True",
                REASON_MIN_AVAILABLE,
                "Deployment has minimum availability.".into(),
                now,
            ),
        );
    } else {
        set_condition(
            &mut status,
            new_condition(
                AVAILABLE,
                "False",
                REASON_MIN_UNAVAILABLE,
                "Deployment does not have minimum availability.".into(),
                now,
            ),
        );
    }
    status
}

pub fn n(v: Option<i32>) -> i32 {
    v.unwrap_or(0)
}

/// All replicas updated and available, and the latest spec observed.
pub fn deployment_complete(d: &Deployment, s: &DeploymentStatus) -> bool {
    n(s.updated_replicas) == desired(d)
        && n(s.replicas) == desired(d)
        && n(s.available_replicas) == desired(d)
        && s.observed_generation.unwrap_or(0) >= d.metadata.generation.unwrap_or(0)
}

/// Whether `new` shows progress over the deployment's recorded status.
pub fn deployment_progressing(d: &Deployment, new: &DeploymentStatus) -> bool {
    let old = d.status.clone().unwrap_or_default();
    let old_old = n(old.replicas) - n(old.updated_replicas);
    let new_old = n(new.replicas) - n(new.updated_replicas);
    n(new.updated_replicas) > n(old.updated_replicas)
        || new_old < old_old
        || n(new.ready_replicas) > n(old.ready_replicas)
        || n(new.available_replicas) > n(old.available_replicas)
}

/// The Progressing condition was last updated more than the deadline ago.
pub fn deployment_timed_out(d: &Deployment, s: &DeploymentStatus, now: Timestamp) -> bool {
    let Some(deadline) = progress_deadline(d) else {
        return false;
    };
    let Some(cond) = condition(Some(s), PROGRESSING) else {
        return false;
    };
    match cond.reason.as_deref() {
        Some(REASON_NEW_RS_AVAILABLE) => false,
        Some(REASON_TIMED_OUT) => true,
        _ => cond
            .last_update_time
            .as_ref()
            .and_then(|t| {
                t.0.checked_add(jiff::SignedDuration::from_secs(i64::from(deadline)))
                    .ok()
            })
            .is_some_and(|limit| limit < now),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(replicas: i32, surge: &str, unavailable: &str) -> Deployment {
        let p = |v: &str| -> Value {
            match v.parse::<i64>() {
                Ok(i) => Value::from(i),
                Err(_) => Value::from(v),
            }
        };
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "default", "generation": 1},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": "web"}},
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": p(surge), "maxUnavailable": p(unavailable)}},
                "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "nginx:1"}]}}
            }
        }))
        .unwrap()
    }

    #[test]
    fn fenceposts_round_as_upstream() {
        // 25% of 10: surge rounds up to 3, unavailable down to 2.
        let d = deployment(10, "25%", "25%");
        assert_eq!((max_surge(&d), max_unavailable(&d)), (3, 2));
        // 0 and 0 cannot progress: maxUnavailable becomes 1.
        let d = deployment(3, "0", "0");
        assert_eq!((max_surge(&d), max_unavailable(&d)), (0, 1));
        let d = deployment(1, "25%", "25%");
        assert_eq!((max_surge(&d), max_unavailable(&d)), (1, 0));
        // maxUnavailable never exceeds replicas.
        let d = deployment(2, "0", "5");
        assert_eq!(max_unavailable(&d), 2);
        assert!(scaled_value(&IntOrString::String("x".into()), 3, true).is_err());
        let mut r = deployment(3, "1", "1");
        r.spec.as_mut().unwrap().strategy = Some(k8s_openapi::api::apps::v1::DeploymentStrategy {
            type_: Some("Recreate".into()),
            rolling_update: None,
        });
        assert_eq!((max_surge(&r), max_unavailable(&r)), (0, 0));
    }

    #[test]
    fn hash_is_stable_label_safe_and_changes_with_template_and_collisions() {
        let d = deployment(3, "1", "0");
        let t = &d.spec.as_ref().unwrap().template;
        let h = compute_hash(t, None);
        assert_eq!(h, compute_hash(t, None));
        assert!(!h.is_empty() && h.len() <= 10);
        assert!(
            h.bytes()
                .all(|b| b"bcdfghjklmnpqrstvwxz2456789".contains(&b)),
            "{h}"
        );
        assert_ne!(h, compute_hash(t, Some(1)));
        let mut t2 = t.clone();
        t2.spec.as_mut().unwrap().containers[0].image = Some("nginx:2".into());
        assert_ne!(h, compute_hash(&t2, None));
        // The hash label itself does not make templates differ.
        let mut labelled = t.clone();
        labelled
            .metadata
            .as_mut()
            .unwrap()
            .labels
            .as_mut()
            .unwrap()
            .insert(POD_TEMPLATE_HASH_LABEL.into(), h.clone());
        assert!(equal_ignore_hash(&labelled, t));
        assert!(!equal_ignore_hash(&t2, t));
    }

    #[test]
    fn rolling_step_respects_surge() {
        let d = deployment(3, "1", "0");
        let rs = |name: &str, n: i32| -> ReplicaSet {
            serde_json::from_value(serde_json::json!({"metadata": {"name": name}, "spec": {"replicas": n, "selector": {}}}))
                .unwrap()
        };
        // 3 old pods: one surge pod is allowed.
        assert_eq!(
            new_rs_new_replicas(&d, &[&rs("old", 3), &rs("new", 0)], 0),
            1
        );
        // 2 old and 1 new: room for one more.
        assert_eq!(
            new_rs_new_replicas(&d, &[&rs("old", 2), &rs("new", 1)], 1),
            2
        );
        // 4 pods already: no growth.
        assert_eq!(
            new_rs_new_replicas(&d, &[&rs("old", 2), &rs("new", 2)], 2),
            2
        );
        // Never above spec.replicas.
        assert_eq!(
            new_rs_new_replicas(&d, &[&rs("old", 0), &rs("new", 3)], 3),
            3
        );
    }

    #[test]
    fn revisions_move_to_history_on_rollback() {
        let d = deployment(3, "1", "0");
        let mut meta = ObjectMeta::default();
        assert!(set_new_rs_annotations(&d, &mut meta, 1, false));
        let a = meta.annotations.clone().unwrap();
        assert_eq!(a[REVISION_ANNOTATION], "1");
        assert_eq!(a[DESIRED_REPLICAS_ANNOTATION], "3");
        assert_eq!(a[MAX_REPLICAS_ANNOTATION], "4");
        // Rolled back to at revision 3, then again at 5.
        assert!(set_new_rs_annotations(&d, &mut meta, 3, true));
        assert!(set_new_rs_annotations(&d, &mut meta, 5, true));
        let a = meta.annotations.unwrap();
        assert_eq!(a[REVISION_ANNOTATION], "5");
        assert_eq!(a[REVISION_HISTORY_ANNOTATION], "1,3");
    }

    #[test]
    fn conditions_keep_transition_time_when_status_is_unchanged() {
        let t0 = Timestamp::from_second(0).unwrap();
        let t1 = Timestamp::from_second(100).unwrap();
        let mut s = DeploymentStatus::default();
        set_condition(
            &mut s,
            new_condition(PROGRESSING, "True", REASON_NEW_RS_CREATED, "a".into(), t0),
        );
        set_condition(
            &mut s,
            new_condition(PROGRESSING, "True", REASON_RS_UPDATED, "b".into(), t1),
        );
        let c = condition(Some(&s), PROGRESSING).unwrap();
        assert_eq!(c.reason.as_deref(), Some(REASON_RS_UPDATED));
        assert_eq!(c.last_transition_time, Some(Time(t0)));
        assert_eq!(c.last_update_time, Some(Time(t1)));
    }

    #[test]
    fn deadline_counts_from_last_update() {
        let mut d = deployment(3, "1", "0");
        d.spec.as_mut().unwrap().progress_deadline_seconds = Some(10);
        let mut s = DeploymentStatus::default();
        set_condition(
            &mut s,
            new_condition(
                PROGRESSING,
                "True",
                REASON_RS_UPDATED,
                "x".into(),
                Timestamp::from_second(0).unwrap(),
            ),
        );
        assert!(!deployment_timed_out(
            &d,
            &s,
            Timestamp::from_second(10).unwrap()
        ));
        assert!(deployment_timed_out(
            &d,
            &s,
            Timestamp::from_second(11).unwrap()
        ));
    }
}
