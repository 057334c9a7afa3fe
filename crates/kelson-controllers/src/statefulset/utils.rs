//! Pure StatefulSet logic, after upstream's stateful_set_utils.go: stable
//! pod identities (`<set>-<ordinal>`), claims from volumeClaimTemplates,
//! the claim ownership a retention policy implies, revisions as template
//! patches, and the status arithmetic.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{ControllerRevision, StatefulSet, StatefulSetStatus};
use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimVolumeSource, Pod, PodTemplateSpec, Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use serde_json::Value;

use crate::history::CONTROLLER_REVISION_HASH_LABEL;
use crate::podcontrol::{self, is_pod_available, is_pod_ready};

/// The label carrying a StatefulSet pod's own name (a per-pod selector
/// for services).
pub const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";
/// The label carrying a pod's ordinal (PodIndexLabel, on by default).
pub const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";
pub const PARALLEL: &str = "Parallel";
pub const ON_DELETE: &str = "OnDelete";
pub const ROLLING_UPDATE: &str = "RollingUpdate";
pub const RETAIN: &str = "Retain";
pub const DELETE: &str = "Delete";

const SET_API_VERSION: &str = "apps/v1";
const SET_KIND: &str = "StatefulSet";
const POD_API_VERSION: &str = "v1";
const POD_KIND: &str = "Pod";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("revision {0} has no pod template in its data")]
    RevisionData(String),
    #[error("decoding the template of revision {0}: {1}")]
    RevisionTemplate(String, #[source] serde_json::Error),
    #[error("encoding the pod template: {0}")]
    Template(#[source] serde_json::Error),
}

// ---------------------------------------------------------------------------
// Identity

/// The parent set's name and the ordinal of a pod named `<parent>-<n>`
/// (upstream's `(.*)-([0-9]+)$`); the ordinal is None when the name has no
/// such suffix or it does not fit an int32.
pub fn parent_and_ordinal(name: &str) -> (Option<&str>, Option<i32>) {
    let Some((parent, digits)) = name.rsplit_once('-') else {
        return (None, None);
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return (None, None);
    }
    (Some(parent), digits.parse::<i32>().ok())
}

fn pod_name_of(pod: &Pod) -> &str {
    pod.metadata.name.as_deref().unwrap_or("")
}

/// The pod's ordinal, or -1 (upstream's getOrdinal).
pub fn ordinal(pod: &Pod) -> i32 {
    parent_and_ordinal(pod_name_of(pod)).1.unwrap_or(-1)
}

pub fn replicas(set: &StatefulSet) -> i32 {
    set.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

pub fn min_ready_seconds(set: &StatefulSet) -> i32 {
    set.spec
        .as_ref()
        .and_then(|s| s.min_ready_seconds)
        .unwrap_or(0)
}

/// The first ordinal (spec.ordinals.start, else 0).
pub fn start_ordinal(set: &StatefulSet) -> i32 {
    set.spec
        .as_ref()
        .and_then(|s| s.ordinals.as_ref())
        .and_then(|o| o.start)
        .unwrap_or(0)
}

/// The last ordinal, inclusive.
pub fn end_ordinal(set: &StatefulSet) -> i32 {
    start_ordinal(set).saturating_add(replicas(set)) - 1
}

/// Whether the pod's ordinal is one the set currently wants.
pub fn in_ordinal_range(pod: &Pod, set: &StatefulSet) -> bool {
    let o = ordinal(pod);
    o >= 0 && o >= start_ordinal(set) && o <= end_ordinal(set)
}

fn set_name(set: &StatefulSet) -> &str {
    set.metadata.name.as_deref().unwrap_or("")
}

/// `<set>-<ordinal>`
pub fn pod_name(set: &StatefulSet, ordinal: i32) -> String {
    format!("{}-{ordinal}", set_name(set))
}

/// `<claim template>-<set>-<ordinal>`
pub fn claim_name(set: &StatefulSet, template: &PersistentVolumeClaim, ordinal: i32) -> String {
    format!(
        "{}-{}-{ordinal}",
        template.metadata.name.as_deref().unwrap_or(""),
        set_name(set)
    )
}

/// Named `<set>-<n>`: the set may claim it.
pub fn is_member_of(set: &StatefulSet, pod: &Pod) -> bool {
    parent_and_ordinal(pod_name_of(pod)).0 == Some(set_name(set))
}

/// Name, namespace and pod-name label fit the set.
pub fn identity_matches(set: &StatefulSet, pod: &Pod) -> bool {
    let (parent, ord) = parent_and_ordinal(pod_name_of(pod));
    let Some(ord) = ord else { return false };
    parent == Some(set_name(set))
        && pod_name_of(pod) == pod_name(set, ord)
        && pod.metadata.namespace == set.metadata.namespace
        && pod
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(POD_NAME_LABEL))
            .map(String::as_str)
            == Some(pod_name_of(pod))
}

fn claim_templates(set: &StatefulSet) -> &[PersistentVolumeClaim] {
    set.spec
        .as_ref()
        .and_then(|s| s.volume_claim_templates.as_deref())
        .unwrap_or(&[])
}

/// The pod has a volume per claim template, pointing at its claim.
pub fn storage_matches(set: &StatefulSet, pod: &Pod) -> bool {
    let ord = ordinal(pod);
    if ord < 0 {
        return false;
    }
    let volumes = pod
        .spec
        .as_ref()
        .and_then(|s| s.volumes.as_deref())
        .unwrap_or(&[]);
    claim_templates(set).iter().all(|t| {
        let name = t.metadata.name.as_deref().unwrap_or("");
        volumes.iter().any(|v| {
            v.name == name
                && v.persistent_volume_claim
                    .as_ref()
                    .is_some_and(|c| c.claim_name == claim_name(set, t, ord))
        })
    })
}

/// The claims of the pod with `ordinal`, keyed by template (volume) name,
/// in template order: the template with the pod's claim name and the set's
/// namespace, labelled with the set's selector labels.
pub fn claims_for(set: &StatefulSet, ordinal: i32) -> Vec<(String, PersistentVolumeClaim)> {
    let selector_labels = set
        .spec
        .as_ref()
        .and_then(|s| s.selector.match_labels.clone())
        .unwrap_or_default();
    claim_templates(set)
        .iter()
        .map(|t| {
            let mut claim = t.clone();
            claim.metadata.name = Some(claim_name(set, t, ordinal));
            claim.metadata.namespace = set.metadata.namespace.clone();
            let mut labels = claim.metadata.labels.take().unwrap_or_default();
            labels.extend(selector_labels.clone());
            claim.metadata.labels = (!labels.is_empty()).then_some(labels);
            claim.status = None;
            (t.metadata.name.clone().unwrap_or_default(), claim)
        })
        .collect()
}

/// Points the pod's volumes at its claims, replacing same-named volumes
/// (upstream's updateStorage).
pub fn update_storage(set: &StatefulSet, pod: &mut Pod) {
    let claims = claims_for(set, ordinal(pod));
    if claims.is_empty() {
        return;
    }
    let spec = pod.spec.get_or_insert_with(Default::default);
    let current = spec.volumes.take().unwrap_or_default();
    let mut volumes: Vec<Volume> = claims
        .iter()
        .map(|(name, claim)| Volume {
            name: name.clone(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: claim.metadata.name.clone().unwrap_or_default(),
                read_only: Some(false),
            }),
            ..Volume::default()
        })
        .collect();
    volumes.extend(
        current
            .into_iter()
            .filter(|v| !claims.iter().any(|(n, _)| *n == v.name)),
    );
    spec.volumes = Some(volumes);
}

/// Sets name, namespace and the pod-name and pod-index labels (upstream's
/// updateIdentity).
pub fn update_identity(set: &StatefulSet, pod: &mut Pod) {
    let ord = ordinal(pod);
    let name = pod_name(set, ord);
    pod.metadata.name = Some(name.clone());
    pod.metadata.namespace = set.metadata.namespace.clone();
    let labels = pod.metadata.labels.get_or_insert_with(BTreeMap::new);
    labels.insert(POD_NAME_LABEL.to_string(), name);
    labels.insert(POD_INDEX_LABEL.to_string(), ord.to_string());
}

/// The pod for `ordinal` built from `set`'s template: the template's
/// labels, annotations and spec, the set as controller, its stable name,
/// hostname and subdomain, and volumes for its claims.
pub fn new_pod(set: &StatefulSet, owner: OwnerReference, ordinal: i32) -> Pod {
    let template = set
        .spec
        .as_ref()
        .map(|s| s.template.clone())
        .unwrap_or_default();
    let mut pod = podcontrol::pod_from_template(&template, set_name(set), Some(owner));
    pod.metadata.name = Some(pod_name(set, ordinal));
    update_identity(set, &mut pod);
    let spec = pod.spec.get_or_insert_with(Default::default);
    // Set only at creation: both fields are immutable.
    spec.hostname = pod.metadata.name.clone();
    spec.subdomain = set
        .spec
        .as_ref()
        .and_then(|s| s.service_name.clone())
        .filter(|s| !s.is_empty());
    update_storage(set, &mut pod);
    pod
}

/// The `controller-revision-hash` label.
pub fn pod_revision(pod: &Pod) -> &str {
    pod.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(CONTROLLER_REVISION_HASH_LABEL))
        .map_or("", String::as_str)
}

fn set_pod_revision(pod: &mut Pod, revision: &str) {
    pod.metadata
        .labels
        .get_or_insert_with(BTreeMap::new)
        .insert(CONTROLLER_REVISION_HASH_LABEL.into(), revision.into());
}

fn update_type(set: &StatefulSet) -> &str {
    set.spec
        .as_ref()
        .and_then(|s| s.update_strategy.as_ref())
        .and_then(|u| u.type_.as_deref())
        .unwrap_or(ROLLING_UPDATE)
}

pub fn is_on_delete(set: &StatefulSet) -> bool {
    update_type(set) == ON_DELETE
}

/// rollingUpdate.partition, if a rollingUpdate block is present.
pub fn partition(set: &StatefulSet) -> Option<i32> {
    set.spec
        .as_ref()
        .and_then(|s| s.update_strategy.as_ref())
        .and_then(|u| u.rolling_update.as_ref())
        .map(|r| r.partition.unwrap_or(0))
}

/// A new pod at the current revision when its ordinal is below the
/// partition (or below the current replicas without a rollingUpdate
/// block), else at the update revision (upstream's
/// newVersionedStatefulSetPod, operator precedence included).
pub fn new_versioned_pod(
    current_set: &StatefulSet,
    update_set: &StatefulSet,
    owner: OwnerReference,
    current_revision: &str,
    update_revision: &str,
    ordinal: i32,
) -> Pod {
    let start = i64::from(start_ordinal(current_set));
    let ord = i64::from(ordinal);
    let current_replicas = current_set
        .status
        .as_ref()
        .and_then(|s| s.current_replicas)
        .unwrap_or(0);
    let below_current = update_type(current_set) == ROLLING_UPDATE
        && partition(current_set).is_none()
        && ord < start + i64::from(current_replicas);
    let below_partition = partition(current_set).is_some_and(|p| ord < start + i64::from(p));
    if below_current || below_partition {
        let mut pod = new_pod(current_set, owner, ordinal);
        set_pod_revision(&mut pod, current_revision);
        pod
    } else {
        let mut pod = new_pod(update_set, owner, ordinal);
        set_pod_revision(&mut pod, update_revision);
        pod
    }
}

// ---------------------------------------------------------------------------
// Pod state

fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

pub fn is_running_and_ready(pod: &Pod) -> bool {
    phase(pod) == "Running" && is_pod_ready(pod)
}

pub fn is_running_and_available(pod: &Pod, min_ready_seconds: i32, now: Timestamp) -> bool {
    is_pod_available(pod, min_ready_seconds, now)
}

/// Known to the API server (it sets a phase on creation).
pub fn is_created(pod: &Pod) -> bool {
    !phase(pod).is_empty()
}

pub fn is_pending(pod: &Pod) -> bool {
    phase(pod) == "Pending"
}

pub fn is_failed(pod: &Pod) -> bool {
    phase(pod) == "Failed"
}

pub fn is_succeeded(pod: &Pod) -> bool {
    phase(pod) == "Succeeded"
}

pub fn is_terminating(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some()
}

pub fn is_healthy(pod: &Pod) -> bool {
    is_running_and_ready(pod) && !is_terminating(pod)
}

/// podManagementPolicy Parallel: create and delete without waiting.
pub fn allows_burst(set: &StatefulSet) -> bool {
    set.spec
        .as_ref()
        .and_then(|s| s.pod_management_policy.as_deref())
        == Some(PARALLEL)
}

// ---------------------------------------------------------------------------
// Claim retention

/// (whenDeleted, whenScaled), Retain when unset.
pub fn retention_policy(set: &StatefulSet) -> (&str, &str) {
    let p = set
        .spec
        .as_ref()
        .and_then(|s| s.persistent_volume_claim_retention_policy.as_ref());
    (
        p.and_then(|p| p.when_deleted.as_deref()).unwrap_or(RETAIN),
        p.and_then(|p| p.when_scaled.as_deref()).unwrap_or(RETAIN),
    )
}

fn refs(claim: &PersistentVolumeClaim) -> &[OwnerReference] {
    claim.metadata.owner_references.as_deref().unwrap_or(&[])
}

fn uid_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> &str {
    meta.uid.as_deref().unwrap_or("")
}

fn is_set_ref(r: &OwnerReference, set: &StatefulSet) -> bool {
    r.api_version == SET_API_VERSION && r.kind == SET_KIND && r.name == set_name(set)
}

fn is_pod_ref(r: &OwnerReference, pod: &Pod) -> bool {
    r.api_version == POD_API_VERSION && r.kind == POD_KIND && r.name == pod_name_of(pod)
}

fn has_owner_ref(claim: &PersistentVolumeClaim, uid: &str) -> bool {
    refs(claim).iter().any(|r| r.uid == uid)
}

/// A reference naming the pod whose UID is not the pod's: left over from a
/// predecessor of the same name.
pub fn has_stale_pod_ref(claim: &PersistentVolumeClaim, pod: &Pod) -> bool {
    refs(claim)
        .iter()
        .find(|r| is_pod_ref(r, pod))
        .is_some_and(|r| r.uid != uid_of(&pod.metadata))
}

fn has_stale_set_ref(claim: &PersistentVolumeClaim, set: &StatefulSet) -> bool {
    refs(claim)
        .iter()
        .find(|r| is_set_ref(r, set))
        .is_some_and(|r| r.uid != uid_of(&set.metadata))
}

/// Another controller (or a stale reference to ours) manages the claim
/// while a Delete policy is in force.
pub fn has_unexpected_controller(
    claim: &PersistentVolumeClaim,
    set: &StatefulSet,
    pod: &Pod,
) -> bool {
    if retention_policy(set) == (RETAIN, RETAIN) {
        return false;
    }
    for r in refs(claim) {
        if is_set_ref(r, set) {
            if r.uid != uid_of(&set.metadata) {
                return true;
            }
            continue;
        }
        if is_pod_ref(r, pod) {
            if r.uid != uid_of(&pod.metadata) {
                return true;
            }
            continue;
        }
        if r.controller == Some(true) {
            return true;
        }
    }
    false
}

fn has_non_controller_owner(claim: &PersistentVolumeClaim, set: &StatefulSet, pod: &Pod) -> bool {
    let (su, pu) = (uid_of(&set.metadata), uid_of(&pod.metadata));
    refs(claim)
        .iter()
        .any(|r| (r.uid == su || r.uid == pu) && r.controller != Some(true))
}

/// Whether the claim's ownerReferences are what the retention policy asks
/// for: Retain/Retain none, whenDeleted=Delete the set, whenScaled=Delete
/// the pod once it is scaled away (upstream's isClaimOwnerUpToDate).
pub fn claim_owner_up_to_date(claim: &PersistentVolumeClaim, set: &StatefulSet, pod: &Pod) -> bool {
    if has_stale_set_ref(claim, set) || has_stale_pod_ref(claim, pod) {
        // Managed by a deleted predecessor: leave it to the garbage collector.
        return true;
    }
    let (su, pu) = (uid_of(&set.metadata), uid_of(&pod.metadata));
    if has_unexpected_controller(claim, set, pod) {
        return !(has_owner_ref(claim, su) || has_owner_ref(claim, pu));
    }
    if has_non_controller_owner(claim, set, pod) {
        return false;
    }
    let scaled_down = !in_ordinal_range(pod, set);
    match retention_policy(set) {
        (DELETE, RETAIN) => has_owner_ref(claim, su) && !has_owner_ref(claim, pu),
        (RETAIN, DELETE) => !has_owner_ref(claim, su) && scaled_down == has_owner_ref(claim, pu),
        (DELETE, DELETE) => {
            scaled_down != has_owner_ref(claim, su) && scaled_down == has_owner_ref(claim, pu)
        }
        // Retain/Retain, and unknown values treated as Retain.
        _ => !has_owner_ref(claim, su) && !has_owner_ref(claim, pu),
    }
}

fn controller_ref_to(api_version: &str, kind: &str, name: &str, uid: &str) -> OwnerReference {
    OwnerReference {
        api_version: api_version.into(),
        kind: kind.into(),
        name: name.into(),
        uid: uid.into(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// The claim's ownerReferences rewritten for the retention policy
/// (upstream's updateClaimOwnerRefForSetAndPod).
pub fn claim_owner_refs(
    claim: &PersistentVolumeClaim,
    set: &StatefulSet,
    pod: &Pod,
) -> Vec<OwnerReference> {
    let unexpected = has_unexpected_controller(claim, set, pod);
    let mut out: Vec<OwnerReference> = refs(claim)
        .iter()
        .filter(|r| !is_set_ref(r, set) && !is_pod_ref(r, pod))
        .cloned()
        .collect();
    if unexpected {
        return out;
    }
    let (su, pu) = (uid_of(&set.metadata), uid_of(&pod.metadata));
    let mut add = |r: OwnerReference| {
        if !out.iter().any(|o| o.uid == r.uid) {
            out.push(r);
        }
    };
    let set_ref = || controller_ref_to(SET_API_VERSION, SET_KIND, set_name(set), su);
    let pod_ref = || controller_ref_to(POD_API_VERSION, POD_KIND, pod_name_of(pod), pu);
    let scaled_down = !in_ordinal_range(pod, set);
    match retention_policy(set) {
        (DELETE, RETAIN) => add(set_ref()),
        (RETAIN, DELETE) if scaled_down => add(pod_ref()),
        (DELETE, DELETE) => {
            if scaled_down {
                add(pod_ref());
            } else {
                add(set_ref());
            }
        }
        _ => {}
    }
    out
}

// ---------------------------------------------------------------------------
// Revisions

/// The revision data for the set's template: a strategic-merge patch
/// replacing `spec.template` (upstream's getPatch).
pub fn revision_data(set: &StatefulSet) -> Result<Value, Error> {
    let template = set
        .spec
        .as_ref()
        .map(|s| &s.template)
        .cloned()
        .unwrap_or_default();
    let mut t = serde_json::to_value(&template).map_err(Error::Template)?;
    if let Value::Object(m) = &mut t {
        m.insert("$patch".into(), Value::String("replace".into()));
    }
    Ok(serde_json::json!({ "spec": { "template": t } }))
}

/// The set with the revision's template restored (upstream's
/// ApplyRevision: the data replaces `spec.template`).
pub fn apply_revision(set: &StatefulSet, rev: &ControllerRevision) -> Result<StatefulSet, Error> {
    let name = rev.metadata.name.clone().unwrap_or_default();
    let mut template = rev
        .data
        .as_ref()
        .and_then(|d| d.0.get("spec"))
        .and_then(|s| s.get("template"))
        .cloned()
        .ok_or_else(|| Error::RevisionData(name.clone()))?;
    if let Value::Object(m) = &mut template {
        m.remove("$patch");
    }
    let template: PodTemplateSpec =
        serde_json::from_value(template).map_err(|e| Error::RevisionTemplate(name, e))?;
    let mut out = set.clone();
    if let Some(spec) = out.spec.as_mut() {
        spec.template = template;
    }
    Ok(out)
}

// ---------------------------------------------------------------------------
// Status

/// Adds the counts of `pods` to `status` (upstream's computeReplicaStatus).
pub fn count_pods<'a>(
    status: &mut StatefulSetStatus,
    pods: impl IntoIterator<Item = &'a Pod>,
    min_ready_seconds: i32,
    current_revision: &str,
    update_revision: &str,
    now: Timestamp,
) {
    let add = |f: &mut Option<i32>| *f = Some(f.unwrap_or(0) + 1);
    for pod in pods {
        if is_created(pod) {
            status.replicas += 1;
        }
        if is_running_and_ready(pod) {
            add(&mut status.ready_replicas);
            if is_running_and_available(pod, min_ready_seconds, now) {
                add(&mut status.available_replicas);
            }
        }
        if is_created(pod) && !is_terminating(pod) {
            let rev = pod_revision(pod);
            if rev == current_revision {
                add(&mut status.current_replicas);
            }
            if rev == update_revision {
                add(&mut status.updated_replicas);
            }
        }
    }
}

/// Zeroes the counts (so absent means 0 below).
pub fn reset_counts(status: &mut StatefulSetStatus) {
    status.replicas = 0;
    status.ready_replicas = Some(0);
    status.available_replicas = Some(0);
    status.current_replicas = Some(0);
    status.updated_replicas = Some(0);
}

/// Once every replica is updated and ready, the update revision becomes
/// the current one (upstream's completeRollingUpdate).
pub fn complete_rolling_update(set: &StatefulSet, status: &mut StatefulSetStatus) {
    let want = replicas(set);
    if update_type(set) == ROLLING_UPDATE
        && status.updated_replicas.unwrap_or(0) == want
        && status.ready_replicas.unwrap_or(0) == want
        && status.replicas == want
    {
        status.current_replicas = status.updated_replicas;
        status.current_revision = status.update_revision.clone();
    }
}

/// Whether `status` differs from what the set reports (upstream's
/// inconsistentStatus; collisionCount alone does not trigger a write).
pub fn inconsistent_status(set: &StatefulSet, status: &StatefulSetStatus) -> bool {
    let cur = set.status.clone().unwrap_or_default();
    let n = |v: Option<i32>| v.unwrap_or(0);
    status.observed_generation.unwrap_or(0) > cur.observed_generation.unwrap_or(0)
        || status.replicas != cur.replicas
        || n(status.current_replicas) != n(cur.current_replicas)
        || n(status.ready_replicas) != n(cur.ready_replicas)
        || n(status.updated_replicas) != n(cur.updated_replicas)
        || status.current_revision.as_deref().unwrap_or("")
            != cur.current_revision.as_deref().unwrap_or("")
        || n(status.available_replicas) != n(cur.available_replicas)
        || status.update_revision.as_deref().unwrap_or("")
            != cur.update_revision.as_deref().unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn set(v: Value) -> StatefulSet {
        let mut base = json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "set-uid"},
            "spec": {
                "replicas": 3,
                "serviceName": "nginx",
                "selector": {"matchLabels": {"app": "nginx"}},
                "template": {
                    "metadata": {"labels": {"app": "nginx"}},
                    "spec": {"containers": [{"name": "nginx", "image": "nginx:1.25"}]}
                },
                "volumeClaimTemplates": [{
                    "metadata": {"name": "www"},
                    "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}
                }]
            }
        });
        merge(&mut base, v);
        serde_json::from_value(base).unwrap()
    }

    fn merge(a: &mut Value, b: Value) {
        match (a, b) {
            (Value::Object(a), Value::Object(b)) => {
                for (k, v) in b {
                    merge(a.entry(k).or_insert(Value::Null), v);
                }
            }
            (a, b) => *a = b,
        }
    }

    fn owner() -> OwnerReference {
        controller_ref_to(SET_API_VERSION, SET_KIND, "web", "set-uid")
    }

    #[test]
    fn parses_parent_and_ordinal_like_upstream() {
        assert_eq!(parent_and_ordinal("web-0"), (Some("web"), Some(0)));
        assert_eq!(parent_and_ordinal("my-web-12"), (Some("my-web"), Some(12)));
        assert_eq!(parent_and_ordinal("web"), (None, None));
        assert_eq!(parent_and_ordinal("web-x1"), (None, None));
        assert_eq!(parent_and_ordinal("web-"), (None, None));
        // Too large for an int32: a member without a usable ordinal.
        assert_eq!(parent_and_ordinal("web-99999999999"), (Some("web"), None));
    }

    #[test]
    fn new_pod_has_stable_identity_storage_and_owner() {
        let s = set(json!({}));
        let pod = new_pod(&s, owner(), 2);
        assert_eq!(pod.metadata.name.as_deref(), Some("web-2"));
        assert_eq!(pod.metadata.namespace.as_deref(), Some("default"));
        let labels = pod.metadata.labels.clone().unwrap();
        assert_eq!(labels[POD_NAME_LABEL], "web-2");
        assert_eq!(labels[POD_INDEX_LABEL], "2");
        assert_eq!(labels["app"], "nginx");
        let spec = pod.spec.clone().unwrap();
        assert_eq!(spec.hostname.as_deref(), Some("web-2"));
        assert_eq!(spec.subdomain.as_deref(), Some("nginx"));
        let vols = spec.volumes.unwrap();
        assert_eq!(vols[0].name, "www");
        assert_eq!(
            vols[0].persistent_volume_claim.as_ref().unwrap().claim_name,
            "www-web-2"
        );
        let o = &pod.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!((o.kind.as_str(), o.controller), ("StatefulSet", Some(true)));
        assert!(identity_matches(&s, &pod));
        assert!(storage_matches(&s, &pod));
    }

    #[test]
    fn claims_carry_selector_labels() {
        let s = set(json!({}));
        let claims = claims_for(&s, 1);
        assert_eq!(claims.len(), 1);
        let (vol, claim) = &claims[0];
        assert_eq!(vol, "www");
        assert_eq!(claim.metadata.name.as_deref(), Some("www-web-1"));
        assert_eq!(claim.metadata.labels.as_ref().unwrap()["app"], "nginx");
    }

    #[test]
    fn ordinals_start_is_honoured() {
        let s = set(json!({"spec": {"ordinals": {"start": 5}, "replicas": 2}}));
        assert_eq!((start_ordinal(&s), end_ordinal(&s)), (5, 6));
        let p =
            |n: &str| -> Pod { serde_json::from_value(json!({"metadata": {"name": n}})).unwrap() };
        assert!(!in_ordinal_range(&p("web-4"), &s));
        assert!(in_ordinal_range(&p("web-5"), &s));
        assert!(in_ordinal_range(&p("web-6"), &s));
        assert!(!in_ordinal_range(&p("web-7"), &s));
    }

    #[test]
    fn identity_mismatch_is_detected() {
        let s = set(json!({}));
        let mut pod = new_pod(&s, owner(), 0);
        pod.metadata.labels.as_mut().unwrap().remove(POD_NAME_LABEL);
        assert!(!identity_matches(&s, &pod));
        update_identity(&s, &mut pod);
        assert!(identity_matches(&s, &pod));
    }

    #[test]
    fn versioned_pod_respects_partition() {
        let s = set(
            json!({"spec": {"updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 2}}}}),
        );
        let below = new_versioned_pod(&s, &s, owner(), "web-a", "web-b", 1);
        let above = new_versioned_pod(&s, &s, owner(), "web-a", "web-b", 2);
        assert_eq!(pod_revision(&below), "web-a");
        assert_eq!(pod_revision(&above), "web-b");
        // OnDelete: new pods are at the update revision.
        let od = set(json!({"spec": {"updateStrategy": {"type": "OnDelete"}}}));
        assert_eq!(
            pod_revision(&new_versioned_pod(&od, &od, owner(), "a", "b", 0)),
            "b"
        );
    }

    #[test]
    fn revision_round_trips_the_template() {
        let s = set(json!({}));
        let data = revision_data(&s).unwrap();
        assert_eq!(data["spec"]["template"]["$patch"], "replace");
        assert!(data["spec"].get("replicas").is_none());
        let rev = ControllerRevision {
            data: Some(k8s_openapi::apimachinery::pkg::runtime::RawExtension(data)),
            ..Default::default()
        };
        let changed = set(
            json!({"spec": {"template": {"spec": {"containers": [{"name": "nginx", "image": "httpd"}]}}}}),
        );
        let restored = apply_revision(&changed, &rev).unwrap();
        assert_eq!(restored.spec.unwrap().template, s.spec.unwrap().template);
    }

    fn claim(refs: Value) -> PersistentVolumeClaim {
        serde_json::from_value(json!({"metadata": {"name": "www-web-1", "ownerReferences": refs}}))
            .unwrap()
    }

    fn pod(name: &str, uid: &str) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": name, "uid": uid}})).unwrap()
    }

    #[test]
    fn retention_policy_ownership() {
        let set_ref = json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "web", "uid": "set-uid", "controller": true});
        let pod_ref = json!({"apiVersion": "v1", "kind": "Pod", "name": "web-1", "uid": "pod-uid", "controller": true});
        let p = pod("web-1", "pod-uid");

        // Retain/Retain: no references wanted.
        let s = set(json!({}));
        assert!(claim_owner_up_to_date(&claim(json!([])), &s, &p));
        assert!(!claim_owner_up_to_date(
            &claim(json!([set_ref.clone()])),
            &s,
            &p
        ));
        assert!(claim_owner_refs(&claim(json!([set_ref.clone()])), &s, &p).is_empty());

        // whenDeleted=Delete: owned by the set.
        let s = set(
            json!({"spec": {"persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Delete", "whenScaled": "Retain"}}}),
        );
        assert!(!claim_owner_up_to_date(&claim(json!([])), &s, &p));
        let refs = claim_owner_refs(&claim(json!([])), &s, &p);
        assert_eq!(refs.len(), 1);
        assert_eq!(
            (refs[0].kind.as_str(), refs[0].uid.as_str()),
            ("StatefulSet", "set-uid")
        );
        assert_eq!(refs[0].block_owner_deletion, Some(true));
        assert!(claim_owner_up_to_date(
            &claim(json!([set_ref.clone()])),
            &s,
            &p
        ));

        // whenScaled=Delete: owned by the pod once scaled away (3 -> 1).
        let s = set(
            json!({"spec": {"replicas": 1, "persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Retain", "whenScaled": "Delete"}}}),
        );
        assert!(!claim_owner_up_to_date(&claim(json!([])), &s, &p));
        let refs = claim_owner_refs(&claim(json!([])), &s, &p);
        assert_eq!(
            (refs[0].kind.as_str(), refs[0].uid.as_str()),
            ("Pod", "pod-uid")
        );
        assert!(claim_owner_up_to_date(
            &claim(json!([pod_ref.clone()])),
            &s,
            &p
        ));

        // Delete/Delete while in range: the set, not the pod.
        let s = set(
            json!({"spec": {"persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Delete", "whenScaled": "Delete"}}}),
        );
        let refs = claim_owner_refs(&claim(json!([pod_ref.clone()])), &s, &p);
        assert_eq!(refs.len(), 1);
        assert_eq!(refs[0].kind, "StatefulSet");

        // A stale pod reference (predecessor's UID) is left alone.
        let stale = json!({"apiVersion": "v1", "kind": "Pod", "name": "web-1", "uid": "old", "controller": true});
        assert!(has_stale_pod_ref(&claim(json!([stale.clone()])), &p));
        assert!(claim_owner_up_to_date(&claim(json!([stale])), &s, &p));

        // Another controller: our references are dropped, none added.
        let other =
            json!({"apiVersion": "v1", "kind": "Foo", "name": "x", "uid": "x", "controller": true});
        let c = claim(json!([other, set_ref]));
        assert!(has_unexpected_controller(&c, &s, &p));
        assert!(!claim_owner_up_to_date(&c, &s, &p));
        let refs = claim_owner_refs(&c, &s, &p);
        assert_eq!(refs.len(), 1);
        assert_eq!(refs[0].kind, "Foo");
    }

    fn ready_pod(name: &str, rev: &str, since: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {"controller-revision-hash": rev}},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": since}]}
        }))
        .unwrap()
    }

    #[test]
    fn status_counts_and_completion() {
        let s = set(json!({"spec": {"replicas": 2, "minReadySeconds": 10}}));
        let now: Timestamp = "2024-01-01T00:01:00Z".parse().unwrap();
        let pods = [
            ready_pod("web-0", "web-b", "2024-01-01T00:00:00Z"),
            ready_pod("web-1", "web-b", "2024-01-01T00:00:55Z"),
        ];
        let mut st = StatefulSetStatus {
            current_revision: Some("web-a".into()),
            update_revision: Some("web-b".into()),
            ..Default::default()
        };
        reset_counts(&mut st);
        count_pods(&mut st, pods.iter(), 10, "web-a", "web-b", now);
        assert_eq!(st.replicas, 2);
        assert_eq!(st.ready_replicas, Some(2));
        assert_eq!(st.available_replicas, Some(1), "web-1 ready for only 5s");
        assert_eq!(
            (st.current_replicas, st.updated_replicas),
            (Some(0), Some(2))
        );
        complete_rolling_update(&s, &mut st);
        assert_eq!(st.current_revision.as_deref(), Some("web-b"));
        assert_eq!(st.current_replicas, Some(2));
        assert!(inconsistent_status(&s, &st));
    }
}
