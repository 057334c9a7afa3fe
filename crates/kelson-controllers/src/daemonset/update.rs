//! Rolling updates and revision history of DaemonSets (upstream
//! pkg/controller/daemon/update.go).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::ResourceExt;

use super::util::{self, Placement};
use super::{can_adopt, min_ready_seconds, Context, Error};
use crate::history::{self, CONTROLLER_REVISION_HASH_LABEL};
use crate::podcontrol::{self, claim, is_pod_available, ClaimOwner, Selector};

/// The DaemonSet's current revision and the others it owns.
pub(super) struct Current {
    /// The current revision's `controller-revision-hash`, which new pods
    /// carry.
    pub hash: String,
    pub old: Vec<Arc<ControllerRevision>>,
    /// The collision count after creating the current revision.
    pub collision_count: i32,
}

fn hash_label(r: &ControllerRevision) -> Option<&str> {
    r.metadata
        .labels
        .as_ref()?
        .get(CONTROLLER_REVISION_HASH_LABEL)
        .map(String::as_str)
}

/// Upstream's constructHistory: claims the DaemonSet's revisions, finds the
/// one(s) holding the current template, creates it if missing (or makes an
/// old one the newest again, as `kubectl rollout undo` does), and removes
/// duplicates.
pub(super) async fn construct_history(
    ctx: &Context,
    ds: &DaemonSet,
    uid: &str,
    selector: &Selector,
) -> Result<Current, Error> {
    let namespace = ds.metadata.namespace.clone().unwrap_or_default();
    let name = ds.name_any();
    let api: Api<ControllerRevision> = Api::namespaced(ctx.client.clone(), &namespace);
    let ds_api: Api<DaemonSet> = Api::namespaced(ctx.client.clone(), &namespace);
    let owner = ClaimOwner {
        reference: podcontrol::controller_ref(ds),
        namespace: &namespace,
        deleting: false,
    };
    let candidates = ctx.revisions.children(&namespace, uid, true);
    let claimed = claim(&api, &owner, selector, candidates, || {
        can_adopt(&ds_api, &name, uid)
    })
    .await?;

    // Revisions written before the hash label existed get their name as
    // the label (upstream avoids recomputing hashes that may collide).
    let mut revisions = Vec::with_capacity(claimed.len());
    for r in claimed {
        if hash_label(&r).is_some() {
            revisions.push(r);
            continue;
        }
        let rname = r.name_any();
        let patch =
            serde_json::json!({"metadata": {"labels": {CONTROLLER_REVISION_HASH_LABEL: rname}}});
        let patched = api
            .patch(&rname, &PatchParams::default(), &Patch::Merge(patch))
            .await
            .map_err(|e| {
                Error::Api(
                    format!("labelling controller revision {namespace}/{rname}"),
                    e,
                )
            })?;
        revisions.push(Arc::new(patched));
    }

    let data = util::revision_data(ds);
    let current = history::find_equal(&revisions, &data);
    let current_names: HashSet<&str> = current
        .iter()
        .filter_map(|r| r.metadata.name.as_deref())
        .collect();
    let old: Vec<Arc<ControllerRevision>> = revisions
        .iter()
        .filter(|r| !current_names.contains(r.metadata.name.as_deref().unwrap_or("")))
        .cloned()
        .collect();
    let next = history::next_revision(&old);
    let mut collision_count = ds
        .status
        .as_ref()
        .and_then(|s| s.collision_count)
        .unwrap_or(0);
    let cur = match current.first() {
        None => snapshot(ctx, ds, data, next, &mut collision_count).await?,
        Some(keep) => {
            dedup(ctx, ds, uid, keep, &current[1..]).await?;
            if keep.revision < next {
                history::update_revision(&ctx.client, keep, next)
                    .await
                    .map_err(Error::History)?
            } else {
                (**keep).clone()
            }
        }
    };
    Ok(Current {
        hash: hash_label(&cur).unwrap_or_default().to_string(),
        old,
        collision_count,
    })
}

/// Upstream's snapshot: a new revision of the current template, labelled
/// like the pods (so `kubectl rollout history` finds it by the DaemonSet's
/// selector) plus the hash, annotated like the DaemonSet (so it shows the
/// change-cause).
async fn snapshot(
    ctx: &Context,
    ds: &DaemonSet,
    data: serde_json::Value,
    revision: i64,
    collision_count: &mut i32,
) -> Result<ControllerRevision, Error> {
    let namespace = ds.metadata.namespace.clone().unwrap_or_default();
    let mut labels = ds
        .spec
        .as_ref()
        .and_then(|s| s.template.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let first_hash = history::hash_revision(&data, Some(*collision_count));
    labels.insert(CONTROLLER_REVISION_HASH_LABEL.to_string(), first_hash);
    let created = history::create_revision(
        &ctx.client,
        &namespace,
        podcontrol::controller_ref(ds),
        labels,
        data.clone(),
        revision,
        collision_count,
    )
    .await
    .map_err(Error::History)?;
    // A name collision moved the name on to another hash: the label follows
    // it. The annotations cannot be passed to create_revision.
    let hash = history::hash_revision(&data, Some(*collision_count));
    let label_ok = hash_label(&created) == Some(hash.as_str());
    let annotations = ds.metadata.annotations.clone().unwrap_or_default();
    let annotate = !annotations.is_empty()
        && created
            .metadata
            .annotations
            .as_ref()
            .is_none_or(|a| a.is_empty());
    if label_ok && !annotate {
        return Ok(created);
    }
    let mut meta = serde_json::Map::new();
    if !label_ok {
        meta.insert(
            "labels".into(),
            serde_json::json!({ CONTROLLER_REVISION_HASH_LABEL: hash }),
        );
    }
    if annotate {
        meta.insert("annotations".into(), serde_json::json!(annotations));
    }
    let rname = created.name_any();
    let api: Api<ControllerRevision> = Api::namespaced(ctx.client.clone(), &namespace);
    api.patch(
        &rname,
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({ "metadata": meta })),
    )
    .await
    .map_err(|e| {
        Error::Api(
            format!("updating controller revision {namespace}/{rname}"),
            e,
        )
    })
}

/// Upstream's dedupCurHistories: several revisions hold the current
/// template; the newest is kept, pods of the others are relabelled to it,
/// and the others are deleted. Upstream relabels every pod whose hash
/// differs, old-template pods included, which would end their rolling
/// update; only pods of the duplicates are relabelled here.
async fn dedup(
    ctx: &Context,
    ds: &DaemonSet,
    uid: &str,
    keep: &ControllerRevision,
    duplicates: &[Arc<ControllerRevision>],
) -> Result<(), Error> {
    if duplicates.is_empty() {
        return Ok(());
    }
    let namespace = ds.metadata.namespace.clone().unwrap_or_default();
    let keep_hash = hash_label(keep).unwrap_or_default();
    let dup_hashes: HashSet<&str> = duplicates.iter().filter_map(|r| hash_label(r)).collect();
    let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
    for pod in ctx.pods.children(&namespace, uid, false) {
        let h = pod
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(CONTROLLER_REVISION_HASH_LABEL));
        if !h.is_some_and(|h| dup_hashes.contains(h.as_str())) {
            continue;
        }
        let pname = pod.name_any();
        let patch = serde_json::json!({"metadata": {"labels": {CONTROLLER_REVISION_HASH_LABEL: keep_hash}}});
        match pods_api
            .patch(&pname, &PatchParams::default(), &Patch::Merge(patch))
            .await
        {
            Ok(_) => {}
            Err(e) if podcontrol::is_not_found(&e) => {}
            Err(e) => {
                return Err(Error::Api(
                    format!("relabelling pod {namespace}/{pname}"),
                    e,
                ))
            }
        }
    }
    let api: Api<ControllerRevision> = Api::namespaced(ctx.client.clone(), &namespace);
    for dup in duplicates {
        let rname = dup.name_any();
        match api.delete(&rname, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(e) if podcontrol::is_not_found(&e) => {}
            Err(e) => {
                return Err(Error::Api(
                    format!("deleting controller revision {namespace}/{rname}"),
                    e,
                ))
            }
        }
    }
    Ok(())
}

/// The old revisions upstream's cleanupHistory deletes: beyond
/// revisionHistoryLimit old revisions, the oldest whose hash no pod carries
/// any more.
pub(super) fn revisions_to_delete(
    old: &[Arc<ControllerRevision>],
    live_hashes: &HashSet<&str>,
    limit: usize,
) -> Vec<Arc<ControllerRevision>> {
    let Some(to_kill) = old.len().checked_sub(limit).filter(|n| *n > 0) else {
        return Vec::new();
    };
    let mut sorted = old.to_vec();
    sorted.sort_by(|a, b| history::compare_revisions(a, b));
    sorted
        .into_iter()
        .filter(|r| !hash_label(r).is_some_and(|h| live_hashes.contains(h)))
        .take(to_kill)
        .collect()
}

/// Upstream's cleanupHistory, over every claimed pod (finished ones
/// included: their revision is still in use).
pub(super) async fn cleanup_history(
    ctx: &Context,
    ds: &DaemonSet,
    old: &[Arc<ControllerRevision>],
    claimed: &[Arc<Pod>],
) -> Result<(), Error> {
    let limit = ds
        .spec
        .as_ref()
        .and_then(|s| s.revision_history_limit)
        .unwrap_or(10)
        .max(0) as usize;
    if old.len() <= limit {
        return Ok(());
    }
    let live: HashSet<&str> = claimed
        .iter()
        .filter(|p| util::target_node_name(p).is_some())
        .filter_map(|p| {
            p.metadata
                .labels
                .as_ref()?
                .get(CONTROLLER_REVISION_HASH_LABEL)
                .map(String::as_str)
        })
        .filter(|h| !h.is_empty())
        .collect();
    let doomed = revisions_to_delete(old, &live, limit);
    let namespace = ds.metadata.namespace.clone().unwrap_or_default();
    // Everything passed is to go: no limit, nothing live.
    history::truncate_history(&ctx.client, &namespace, &doomed, &HashSet::new(), 0)
        .await
        .map_err(Error::Cleanup)
}

/// Upstream's findUpdatedPodsOnNode: the node's one new and one old pod
/// (not being deleted), or `None` if it holds more of either, which the
/// manage loop prunes first.
type NewAndOld<'a> = (Option<&'a Arc<Pod>>, Option<&'a Arc<Pod>>);

fn updated_pods_on_node<'a>(
    pods: &'a [Arc<Pod>],
    hash: &str,
    generation: Option<i64>,
) -> Option<NewAndOld<'a>> {
    let mut new = None;
    let mut old = None;
    for p in pods {
        if p.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let slot = if util::is_pod_updated(p, hash, generation) {
            &mut new
        } else {
            &mut old
        };
        if slot.is_some() {
            return None;
        }
        *slot = Some(p);
    }
    Some((new, old))
}

/// Upstream's rollingUpdate: which old pods to delete and on which nodes to
/// create new ones, returned as (pods to delete, nodes needing pods).
///
/// Without surge, old pods are deleted while fewer than maxUnavailable
/// nodes lack an available pod (old unavailable pods always go); the manage
/// loop then recreates them. With surge, a new pod is started next to an
/// old one on up to maxSurge nodes (at once where the old one is
/// unavailable), and the old one is deleted once the new one is available.
pub(super) fn rolling_update_plan(
    ds: &DaemonSet,
    placement: &Placement,
    nodes: &[Arc<Node>],
    by_node: &BTreeMap<String, Vec<Arc<Pod>>>,
    hash: &str,
    now: Timestamp,
) -> Result<(Vec<String>, Vec<String>), util::Error> {
    let min_ready = min_ready_seconds(ds);
    let generation = util::template_generation(ds);
    let available = |p: &Pod| is_pod_available(p, min_ready, now);
    let name = |p: &Pod| p.metadata.name.clone().unwrap_or_default();

    // upstream's updatedDesiredNodeCounts
    let mut all: BTreeMap<&str, &[Arc<Pod>]> = by_node
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_slice()))
        .collect();
    let mut node_index: HashMap<&str, &Node> = HashMap::with_capacity(nodes.len());
    let mut desired = 0;
    for n in nodes {
        let Some(node_name) = n.metadata.name.as_deref() else {
            continue;
        };
        node_index.insert(node_name, n);
        if placement.should_run(n).0 {
            desired += 1;
            all.entry(node_name).or_insert(&[]);
        }
    }
    let mut max_unavailable = util::unavailable_count(ds, desired)?;
    let max_surge = util::surge_count(ds, desired)?;
    // An impossible configuration (both 0) falls back to one at a time.
    if desired > 0 && max_unavailable == 0 && max_surge == 0 {
        max_unavailable = 1;
    }

    if max_surge == 0 {
        let mut unavailable = 0;
        let mut replace = Vec::new();
        let mut candidates = Vec::new();
        for pods in all.values() {
            let Some((new, old)) = updated_pods_on_node(pods, hash, generation) else {
                unavailable += 1;
                continue;
            };
            match (new, old) {
                (None, None) | (Some(_), Some(_)) => unavailable += 1,
                (Some(new), None) => {
                    if !available(new) {
                        unavailable += 1;
                    }
                }
                (None, Some(old)) => {
                    if !available(old) {
                        replace.push(name(old));
                        unavailable += 1;
                    } else if unavailable < max_unavailable {
                        candidates.push(name(old));
                    }
                }
            }
        }
        let room = (max_unavailable - unavailable).max(0) as usize;
        replace.extend(candidates.into_iter().take(room));
        return Ok((replace, Vec::new()));
    }

    // A node that is gone no longer wants the daemon (upstream fails the
    // sync on it instead).
    let wants = |node: &str| {
        node_index
            .get(node)
            .is_some_and(|n| placement.should_run(n).0)
    };
    let mut delete = Vec::new();
    let mut leaving = Vec::new();
    let mut candidate_nodes = Vec::new();
    let mut create = Vec::new();
    let mut surging = 0;
    let mut num_available = 0;
    for (node, pods) in &all {
        let Some((new, old)) = updated_pods_on_node(pods, hash, generation) else {
            surging += 1;
            continue;
        };
        if let Some(p) = old.or(new) {
            if available(p) {
                num_available += 1;
            }
        }
        match (new, old) {
            (_, None) => {}
            (None, Some(old)) => {
                if !available(old) {
                    if wants(node) {
                        create.push(node.to_string());
                    } else {
                        delete.push(name(old));
                    }
                } else if !wants(node) {
                    leaving.push(name(old));
                } else if surging < max_surge {
                    candidate_nodes.push(node.to_string());
                }
            }
            (Some(new), Some(old)) => {
                if available(new) {
                    delete.push(name(old));
                } else {
                    surging += 1;
                }
            }
        }
    }
    // Pods on nodes the daemon is leaving go only once as many pods are
    // available elsewhere as are desired: maxSurge promises availability.
    let deletable = (num_available - desired).max(0) as usize;
    delete.extend(leaving.into_iter().take(deletable));
    let room = (max_surge - surging).max(0) as usize;
    create.extend(candidate_nodes.into_iter().take(room));
    Ok((delete, create))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn ds(strategy: serde_json::Value) -> DaemonSet {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "agent", "namespace": "default"},
            "spec": {
                "selector": {"matchLabels": {"app": "agent"}},
                "updateStrategy": strategy,
                "template": {"metadata": {"labels": {"app": "agent"}}, "spec": {"containers": []}}
            }
        }))
        .unwrap()
    }

    fn node(name: &str) -> Arc<Node> {
        Arc::new(Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            ..Default::default()
        })
    }

    fn pod(name: &str, node: &str, hash: &str, ready: bool) -> Arc<Pod> {
        let mut status = serde_json::json!({"phase": "Running"});
        if ready {
            status["conditions"] = serde_json::json!([{"type": "Ready", "status": "True", "lastTransitionTime": "2024-01-01T00:00:00Z"}]);
        }
        Arc::new(
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": name, "labels": {"app": "agent", "controller-revision-hash": hash}},
                "spec": {"containers": [], "nodeName": node},
                "status": status
            }))
            .unwrap(),
        )
    }

    /// Plans a rolling update towards revision "new" with the pods laid
    /// out by node, as the sync loop does.
    fn plan(d: &DaemonSet, nodes: &[Arc<Node>], pods: &[Arc<Pod>]) -> (Vec<String>, Vec<String>) {
        let mut by_node: BTreeMap<String, Vec<Arc<Pod>>> = BTreeMap::new();
        for p in pods {
            by_node
                .entry(util::target_node_name(p).unwrap().to_string())
                .or_default()
                .push(p.clone());
        }
        rolling_update_plan(
            d,
            &Placement::new(d),
            nodes,
            &by_node,
            "new",
            Timestamp::now(),
        )
        .unwrap()
    }

    #[test]
    fn without_surge_old_pods_go_within_max_unavailable() {
        let d = ds(
            serde_json::json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 2, "maxSurge": 0}}),
        );
        let nodes: Vec<_> = ["a", "b", "c", "d"].into_iter().map(node).collect();
        let pods = vec![
            pod("pa", "a", "old", true),
            pod("pb", "b", "old", true),
            pod("pc", "c", "old", true),
            pod("pd", "d", "old", false),
        ];
        let (delete, create) = plan(&d, &nodes, &pods);
        // pd is unavailable anyway and always replaced; one more fits.
        assert_eq!(delete, ["pd", "pa"]);
        assert!(create.is_empty());

        // A new pod not yet available counts against the budget.
        let pods = vec![
            pod("pa", "a", "new", false),
            pod("pb", "b", "new", false),
            pod("pc", "c", "old", true),
            pod("pd", "d", "old", true),
        ];
        let (delete, _) = plan(&d, &nodes, &pods);
        assert!(delete.is_empty(), "{delete:?}");
    }

    #[test]
    fn with_surge_new_pods_start_before_old_ones_go() {
        let d = ds(
            serde_json::json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}),
        );
        let nodes: Vec<_> = ["a", "b"].into_iter().map(node).collect();
        let pods = vec![pod("pa", "a", "old", true), pod("pb", "b", "old", true)];
        let (delete, create) = plan(&d, &nodes, &pods);
        assert!(delete.is_empty());
        assert_eq!(create, ["a"]);

        let pods = vec![
            pod("pa", "a", "old", true),
            pod("pa2", "a", "new", true),
            pod("pb", "b", "old", true),
        ];
        let (delete, create) = plan(&d, &nodes, &pods);
        assert_eq!(delete, ["pa"]);
        assert_eq!(create, ["b"]);
    }

    #[test]
    fn impossible_budget_falls_back_to_one() {
        let d = ds(
            serde_json::json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 0}}),
        );
        let nodes: Vec<_> = ["a", "b"].into_iter().map(node).collect();
        let pods = vec![pod("pa", "a", "old", true), pod("pb", "b", "old", true)];
        let (delete, _) = plan(&d, &nodes, &pods);
        assert_eq!(delete.len(), 1);
    }

    #[test]
    fn history_cleanup_keeps_the_limit_and_live_revisions() {
        let rev = |name: &str, hash: &str, n: i64| {
            Arc::new(ControllerRevision {
                metadata: ObjectMeta {
                    name: Some(name.into()),
                    labels: Some(BTreeMap::from([(
                        CONTROLLER_REVISION_HASH_LABEL.to_string(),
                        hash.to_string(),
                    )])),
                    ..Default::default()
                },
                revision: n,
                data: None,
            })
        };
        let old = vec![rev("r3", "h3", 3), rev("r1", "h1", 1), rev("r2", "h2", 2)];
        let live = HashSet::from(["h1"]);
        let doomed = revisions_to_delete(&old, &live, 1);
        let names: Vec<_> = doomed.iter().map(|r| r.name_any()).collect();
        assert_eq!(names, ["r2", "r3"]);
        assert!(revisions_to_delete(&old, &live, 3).is_empty());
    }
}
