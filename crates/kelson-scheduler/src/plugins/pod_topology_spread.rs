//! PodTopologySpread: `DoNotSchedule` constraints filter on skew,
//! `ScheduleAnyway` constraints score. Matching pod counts per topology
//! domain are computed once per pod (PreFilter / PreScore).

mod count_cache;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::cache::Snapshot;
use crate::framework::{
    action, ClusterEvent, CycleState, FilterPlugin, Plugin, PreFilterPlugin, PreFilterResult,
    PreScorePlugin, ScorePlugin, Status, MAX_NODE_SCORE,
};
use crate::plugins::node_affinity::RequiredNodeAffinity;
use crate::plugins::{node_event, pod_event};
use crate::selectors::{first_untolerated, LabelSelector, SelectorError};
use crate::types::{NodeInfo, PodInfo};

pub const ERR_REASON_CONSTRAINTS_NOT_MATCH: &str =
    "node(s) didn't match pod topology spread constraints";
pub const ERR_REASON_NODE_LABEL_NOT_MATCH: &str =
    "node(s) didn't match pod topology spread constraints (missing required label)";
pub const LABEL_HOSTNAME: &str = "kubernetes.io/hostname";

const PRE_FILTER_KEY: &str = "PreFilterPodTopologySpread";
const PRE_SCORE_KEY: &str = "PreScorePodTopologySpread";

#[derive(Debug, Default)]
pub struct PodTopologySpread {
    /// PreFilter's counts carried between cycles.
    counts: count_cache::CountCache,
    /// Score's per-node counts for hostname constraints, likewise.
    node_counts: count_cache::NodeCountCache,
}

#[derive(Debug, Clone)]
struct Constraint {
    max_skew: i64,
    topology_key: String,
    selector: LabelSelector,
    min_domains: i64,
    honor_node_affinity: bool,
    honor_node_taints: bool,
}

/// Upstream's system defaults (kube-scheduler's `defaultingType: System`):
/// soft spreading over hosts and zones by the selectors of the pod's
/// Services, ReplicationControllers, ReplicaSets and StatefulSets. Applied
/// only to pods without constraints of their own.
const SYSTEM_DEFAULTS: [(&str, i64); 2] = [(LABEL_HOSTNAME, 3), (LABEL_ZONE, 5)];
pub const LABEL_ZONE: &str = "topology.kubernetes.io/zone";

fn system_default_constraints(pod: &PodInfo, snap: &Snapshot) -> Vec<Constraint> {
    let Some(selector) = snap
        .spread_selectors
        .default_selector(&pod.namespace, pod.labels())
    else {
        return Vec::new();
    };
    SYSTEM_DEFAULTS
        .iter()
        .map(|(key, skew)| Constraint {
            max_skew: *skew,
            topology_key: key.to_string(),
            selector: selector.clone(),
            min_domains: 1,
            honor_node_affinity: true,
            honor_node_taints: false,
        })
        .collect()
}

fn has_own_constraints(pod: &PodInfo) -> bool {
    pod.pod
        .spec
        .as_ref()
        .and_then(|s| s.topology_spread_constraints.as_ref())
        .is_some_and(|c| !c.is_empty())
}

fn constraints(pod: &PodInfo, when: &str) -> Result<Vec<Constraint>, SelectorError> {
    let mut out = Vec::new();
    let spec = pod.pod.spec.as_ref();
    for c in spec
        .and_then(|s| s.topology_spread_constraints.as_ref())
        .into_iter()
        .flatten()
    {
        if c.when_unsatisfiable != when {
            continue;
        }
        let mut selector = LabelSelector::compile(c.label_selector.as_ref())?;
        // matchLabelKeys: the pod's own values for these keys join the selector.
        for k in c.match_label_keys.iter().flatten() {
            if let Some(v) = pod.labels().and_then(|l| l.get(k)) {
                selector.require_equal(k, v);
            }
        }
        out.push(Constraint {
            max_skew: c.max_skew as i64,
            topology_key: c.topology_key.clone(),
            selector,
            min_domains: c.min_domains.unwrap_or(1) as i64,
            honor_node_affinity: c.node_affinity_policy.as_deref() != Some("Ignore"),
            honor_node_taints: c.node_taints_policy.as_deref() == Some("Honor"),
        });
    }
    Ok(out)
}

impl Constraint {
    fn includes_node(
        &self,
        pod: &PodInfo,
        node: &NodeInfo,
        affinity: &RequiredNodeAffinity,
    ) -> bool {
        if self.honor_node_affinity && !affinity.matches(node) {
            return false;
        }
        if self.honor_node_taints
            && first_untolerated(
                node.taints(),
                pod.tolerations(),
                &["NoSchedule", "NoExecute"],
            )
            .is_some()
        {
            return false;
        }
        true
    }
}

fn has_all_keys(node: &NodeInfo, cs: &[Constraint]) -> bool {
    cs.iter().all(|c| node.label(&c.topology_key).is_some())
}

/// The topology values of `node` for every constraint, into `out`; false
/// (and `out` partly filled) when the node lacks one of the keys.
fn topology_values<'a>(node: &'a NodeInfo, cs: &[Constraint], out: &mut Vec<&'a str>) -> bool {
    out.clear();
    let Some(labels) = node.labels() else {
        return cs.is_empty();
    };
    for c in cs {
        match labels.get(&c.topology_key) {
            Some(v) => out.push(v),
            None => return false,
        }
    }
    true
}

fn count_matching(pods: &[Arc<PodInfo>], sel: &LabelSelector, ns: &str) -> i64 {
    // Cheapest checks first: the flag and namespace live in the PodInfo,
    // the labels behind another pointer.
    pods.iter()
        .filter(|p| !p.terminating && p.namespace == ns && sel.matches(p.labels()))
        .count() as i64
}

/// Adds `delta` to the count of `value`, allocating only for a new value.
fn add_count(counts: &mut HashMap<String, i64>, value: &str, delta: i64) {
    match counts.get_mut(value) {
        Some(c) => *c += delta,
        None => {
            counts.insert(value.to_string(), delta);
        }
    }
}

/// Per constraint, domain value → matching pods over `nodes` (PreFilter's
/// count without the cross-cycle cache).
fn count_all(
    pod: &PodInfo,
    cs: &[Constraint],
    affinity: &RequiredNodeAffinity,
    nodes: &[Arc<NodeInfo>],
) -> Vec<HashMap<String, i64>> {
    let mut counts = vec![HashMap::new(); cs.len()];
    let mut values = Vec::with_capacity(cs.len());
    for node in nodes {
        if !topology_values(node, cs, &mut values) {
            continue;
        }
        for (i, c) in cs.iter().enumerate() {
            if !c.includes_node(pod, node, affinity) {
                continue;
            }
            let n = count_matching(&node.pods, &c.selector, &pod.namespace);
            add_count(&mut counts[i], values[i], n);
        }
    }
    counts
}

#[derive(Debug, Clone)]
struct PreFilterState {
    constraints: Vec<Constraint>,
    /// Per constraint: domain value → matching pods (shared with the
    /// cross-cycle cache; preemption's updates copy on write).
    counts: Vec<Arc<HashMap<String, i64>>>,
    /// Per constraint: the smallest count over its domains.
    min: Vec<i64>,
    /// Per constraint: 1 when the incoming pod matches its own selector.
    self_match: Vec<i64>,
    affinity: RequiredNodeAffinity,
}

impl PreFilterState {
    fn recompute_min(&mut self, i: usize) {
        self.min[i] = self.counts[i].values().copied().min().unwrap_or(i64::MAX);
    }

    fn update(&mut self, pod: &PodInfo, other: &PodInfo, node: &NodeInfo, delta: i64) {
        let mut values = Vec::with_capacity(self.constraints.len());
        if other.namespace != pod.namespace
            || !topology_values(node, &self.constraints, &mut values)
        {
            return;
        }
        for (i, v) in values.into_iter().enumerate() {
            let c = &self.constraints[i];
            if !c.includes_node(pod, node, &self.affinity) || !c.selector.matches(other.labels()) {
                continue;
            }
            add_count(Arc::make_mut(&mut self.counts[i]), v, delta);
            self.recompute_min(i);
        }
    }
}

impl Plugin for PodTopologySpread {
    fn name(&self) -> &'static str {
        "PodTopologySpread"
    }
    fn events_to_register(&self) -> Vec<ClusterEvent> {
        vec![
            pod_event(action::ADD | action::UPDATE_POD_LABEL | action::DELETE),
            node_event(
                action::ADD
                    | action::DELETE
                    | action::UPDATE_NODE_LABEL
                    | action::UPDATE_NODE_TAINT,
            ),
        ]
    }
}

impl PreFilterPlugin for PodTopologySpread {
    fn pre_filter(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        snap: &Snapshot,
    ) -> (PreFilterResult, Status) {
        let cs = match constraints(pod, "DoNotSchedule") {
            Ok(cs) if cs.is_empty() => return (PreFilterResult::default(), Status::skip()),
            Ok(cs) => cs,
            Err(e) => return (PreFilterResult::default(), Status::error(e.to_string())),
        };
        let affinity = RequiredNodeAffinity::from_pod(pod);
        // Counts that depend only on namespace, keys and selectors carry
        // over between cycles; others are counted afresh.
        let cacheable = cs
            .iter()
            .all(|c| (!c.honor_node_affinity || affinity.is_empty()) && !c.honor_node_taints);
        let counts = if cacheable {
            let key = count_cache::CountKey {
                namespace: pod.namespace.clone(),
                constraints: cs
                    .iter()
                    .map(|c| (c.topology_key.clone(), c.selector.clone()))
                    .collect(),
            };
            self.counts.counts(key, &snap.nodes)
        } else {
            count_all(pod, &cs, &affinity, &snap.nodes)
                .into_iter()
                .map(Arc::new)
                .collect()
        };
        let self_match = cs
            .iter()
            .map(|c| i64::from(c.selector.matches(pod.labels())))
            .collect();
        let mut s = PreFilterState {
            min: vec![0; cs.len()],
            self_match,
            constraints: cs,
            counts,
            affinity,
        };
        for i in 0..s.constraints.len() {
            s.recompute_min(i);
        }
        state.write(PRE_FILTER_KEY, s);
        (PreFilterResult::default(), Status::success())
    }

    fn has_extensions(&self) -> bool {
        true
    }

    fn add_pod(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        other: &PodInfo,
        node: &NodeInfo,
    ) -> Status {
        if let Some(s) = state.read_mut::<PreFilterState>(PRE_FILTER_KEY) {
            s.update(pod, other, node, 1);
        }
        Status::success()
    }

    fn remove_pod(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        other: &PodInfo,
        node: &NodeInfo,
    ) -> Status {
        if let Some(s) = state.read_mut::<PreFilterState>(PRE_FILTER_KEY) {
            s.update(pod, other, node, -1);
        }
        Status::success()
    }
}

impl FilterPlugin for PodTopologySpread {
    fn filter(&self, state: &CycleState, _: &PodInfo, node: &NodeInfo) -> Status {
        let Some(s) = state.read::<PreFilterState>(PRE_FILTER_KEY) else {
            return Status::success();
        };
        for (i, c) in s.constraints.iter().enumerate() {
            let Some(v) = node.label(&c.topology_key) else {
                return Status::unresolvable(ERR_REASON_NODE_LABEL_NOT_MATCH);
            };
            let self_match = s.self_match[i];
            // Fewer eligible domains than minDomains: the global minimum is 0.
            let min = if (s.counts[i].len() as i64) < c.min_domains {
                0
            } else {
                s.min[i]
            };
            let matched = s.counts[i].get(v).copied().unwrap_or(0);
            if matched + self_match - min > c.max_skew {
                return Status::unschedulable(ERR_REASON_CONSTRAINTS_NOT_MATCH);
            }
        }
        Status::success()
    }
}

#[derive(Debug, Clone)]
struct PreScoreState {
    constraints: Vec<Constraint>,
    ignored: HashSet<String>,
    /// (key, value) → matching pods, for non-hostname keys.
    pair_counts: HashMap<(String, String), i64>,
    /// Per constraint (hostname keys only): node info address → matching
    /// pods on it, for the scored nodes.
    host_counts: Vec<HashMap<usize, i64>>,
    weights: Vec<f64>,
}

impl PreScorePlugin for PodTopologySpread {
    fn pre_score(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        filtered: &[Arc<NodeInfo>],
        snap: &Snapshot,
    ) -> Status {
        let system_defaulted = !has_own_constraints(pod);
        let cs = if system_defaulted {
            system_default_constraints(pod, snap)
        } else {
            match constraints(pod, "ScheduleAnyway") {
                Ok(cs) => cs,
                Err(e) => return Status::error(e.to_string()),
            }
        };
        if cs.is_empty() {
            return Status::skip();
        }
        // A pod's own constraints need nodes with every key; the defaults
        // count each key where nodes have it (upstream's
        // requireAllTopologies).
        let require_all = !system_defaulted;
        let affinity = RequiredNodeAffinity::from_pod(pod);
        let mut ignored = HashSet::new();
        let mut domains: Vec<HashSet<&str>> = vec![HashSet::new(); cs.len()];
        let mut pair_counts = HashMap::new();
        for node in filtered {
            if require_all && !has_all_keys(node, &cs) {
                ignored.insert(node.name.clone());
                continue;
            }
            for (i, c) in cs.iter().enumerate() {
                let Some(v) = node.label(&c.topology_key) else {
                    continue;
                };
                if c.topology_key == LABEL_HOSTNAME {
                    continue;
                }
                domains[i].insert(v);
                pair_counts.insert((c.topology_key.clone(), v.to_string()), 0i64);
            }
        }
        let scored = (filtered.len() - ignored.len()) as f64;
        let weights = cs
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let size = if c.topology_key == LABEL_HOSTNAME {
                    scored
                } else {
                    domains[i].len() as f64
                };
                (size + 2.0).ln()
            })
            .collect();
        if !pair_counts.is_empty() {
            for node in &snap.nodes {
                if require_all && !has_all_keys(node, &cs) {
                    continue;
                }
                for c in &cs {
                    if c.topology_key == LABEL_HOSTNAME || !c.includes_node(pod, node, &affinity) {
                        continue;
                    }
                    let Some(v) = node.label(&c.topology_key) else {
                        continue;
                    };
                    let key = (c.topology_key.clone(), v.to_string());
                    if let Some(e) = pair_counts.get_mut(&key) {
                        *e += count_matching(&node.pods, &c.selector, &pod.namespace);
                    }
                }
            }
        }
        // Hostname domains are single nodes: count each scored node here,
        // through a cache, as most nodes are unchanged since the last cycle.
        let scored_nodes: Vec<&Arc<NodeInfo>> =
            if cs.iter().any(|c| c.topology_key == LABEL_HOSTNAME) {
                filtered
                    .iter()
                    .filter(|n| !ignored.contains(&n.name))
                    .collect()
            } else {
                Vec::new()
            };
        let host_counts = cs
            .iter()
            .map(|c| {
                if c.topology_key != LABEL_HOSTNAME {
                    return HashMap::new();
                }
                let counts = self
                    .node_counts
                    .counts(&pod.namespace, &c.selector, &scored_nodes);
                scored_nodes
                    .iter()
                    .map(|n| Arc::as_ptr(n) as usize)
                    .zip(counts)
                    .collect()
            })
            .collect();
        state.write(
            PRE_SCORE_KEY,
            PreScoreState {
                constraints: cs,
                ignored,
                pair_counts,
                host_counts,
                weights,
            },
        );
        Status::success()
    }
}

impl ScorePlugin for PodTopologySpread {
    fn score(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Result<i64, Status> {
        let Some(s) = state.read::<PreScoreState>(PRE_SCORE_KEY) else {
            return Ok(0);
        };
        if s.ignored.contains(&node.name) {
            return Ok(0);
        }
        let mut score = 0f64;
        for (i, c) in s.constraints.iter().enumerate() {
            let Some(v) = node.label(&c.topology_key) else {
                continue;
            };
            let cnt = if c.topology_key == LABEL_HOSTNAME {
                let addr = node as *const NodeInfo as usize;
                match s.host_counts.get(i).and_then(|m| m.get(&addr)) {
                    Some(&n) => n,
                    None => count_matching(&node.pods, &c.selector, &pod.namespace),
                }
            } else {
                s.pair_counts
                    .get(&(c.topology_key.clone(), v.to_string()))
                    .copied()
                    .unwrap_or(0)
            };
            score += cnt as f64 * s.weights[i] + (c.max_skew - 1) as f64;
        }
        Ok(score.round() as i64)
    }

    fn normalize(
        &self,
        state: &CycleState,
        _: &PodInfo,
        nodes: &[Arc<NodeInfo>],
        scores: &mut [i64],
    ) -> Status {
        let Some(s) = state.read::<PreScoreState>(PRE_SCORE_KEY) else {
            return Status::success();
        };
        let (mut min, mut max) = (i64::MAX, 0i64);
        for (n, sc) in nodes.iter().zip(scores.iter()) {
            if s.ignored.contains(&n.name) {
                continue;
            }
            min = min.min(*sc);
            max = max.max(*sc);
        }
        for (n, sc) in nodes.iter().zip(scores.iter_mut()) {
            *sc = if s.ignored.contains(&n.name) {
                0
            } else if max == 0 {
                MAX_NODE_SCORE
            } else {
                MAX_NODE_SCORE * (max + min - *sc) / max
            };
        }
        Status::success()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::Cache;
    use crate::framework::Code;
    use crate::selectors::LabelSelector;
    use crate::testutil::{node, pod};
    use std::collections::BTreeMap;

    fn snapshot(
        nodes: Vec<k8s_openapi::api::core::v1::Node>,
        pods: Vec<k8s_openapi::api::core::v1::Pod>,
    ) -> Snapshot {
        snapshot_with(nodes, pods, |_| {})
    }

    /// A snapshot of `nodes` and `pods`, after `more` has set up the cache.
    fn snapshot_with(
        nodes: Vec<k8s_openapi::api::core::v1::Node>,
        pods: Vec<k8s_openapi::api::core::v1::Pod>,
        more: impl FnOnce(&mut Cache),
    ) -> Snapshot {
        let mut cache = Cache::new();
        for n in nodes {
            cache.add_or_update_node(n);
        }
        for p in pods {
            cache.add_or_update_pod(Arc::new(PodInfo::new(Arc::new(p))));
        }
        more(&mut cache);
        let mut snap = Snapshot::default();
        cache.update_snapshot(&mut snap);
        snap
    }

    fn cluster() -> Snapshot {
        snapshot(
            vec![
                node("a1")
                    .label("zone", "a")
                    .label(LABEL_HOSTNAME, "a1")
                    .build(),
                node("b1")
                    .label("zone", "b")
                    .label(LABEL_HOSTNAME, "b1")
                    .build(),
                node("nolabel").build(),
            ],
            vec![
                pod("w1").label("app", "web").node("a1").build(),
                pod("w2").label("app", "web").node("a1").build(),
                pod("other").label("app", "db").node("b1").build(),
            ],
        )
    }

    #[test]
    fn hard_constraint_filters_on_skew_and_missing_label() {
        let snap = cluster();
        let p = PodInfo::new(Arc::new(
            pod("w3")
                .label("app", "web")
                .spread(1, "zone", "DoNotSchedule", "app", "web")
                .build(),
        ));
        let mut st = CycleState::new();
        assert!(PodTopologySpread::default()
            .pre_filter(&mut st, &p, &snap)
            .1
            .is_success());
        let s: Vec<Status> = snap
            .nodes
            .iter()
            .map(|n| PodTopologySpread::default().filter(&st, &p, n))
            .collect();
        // zone a: 2 + 1 - 0 = 3 > 1
        assert_eq!(s[0].code, Code::Unschedulable);
        assert_eq!(s[0].reasons, [ERR_REASON_CONSTRAINTS_NOT_MATCH]);
        assert!(s[1].is_success());
        assert_eq!(s[2].code, Code::UnschedulableAndUnresolvable);
        assert_eq!(s[2].reasons, [ERR_REASON_NODE_LABEL_NOT_MATCH]);
    }

    #[test]
    fn soft_constraint_prefers_emptier_domains() {
        let snap = cluster();
        let p = PodInfo::new(Arc::new(
            pod("w3")
                .label("app", "web")
                .spread(1, "zone", "ScheduleAnyway", "app", "web")
                .build(),
        ));
        let mut st = CycleState::new();
        assert!(PodTopologySpread::default()
            .pre_score(&mut st, &p, &snap.nodes, &snap)
            .is_success());
        let mut s: Vec<i64> = snap
            .nodes
            .iter()
            .map(|n| PodTopologySpread::default().score(&st, &p, n).unwrap())
            .collect();
        // weight ln(2 + 2) = 1.386: zone a 2 pods → 3, zone b → 0.
        assert_eq!(s[..2], [3, 0]);
        PodTopologySpread::default().normalize(&st, &p, &snap.nodes, &mut s);
        assert_eq!(s, [0, 100, 0]);
    }

    #[test]
    fn preemption_extensions_update_counts() {
        let snap = cluster();
        let p = PodInfo::new(Arc::new(
            pod("w3")
                .label("app", "web")
                .spread(1, "zone", "DoNotSchedule", "app", "web")
                .build(),
        ));
        let mut st = CycleState::new();
        PodTopologySpread::default().pre_filter(&mut st, &p, &snap);
        let a1 = snap.get("a1").unwrap().clone();
        for victim in a1.pods.clone() {
            PodTopologySpread::default().remove_pod(&mut st, &p, &victim, &a1);
        }
        assert!(PodTopologySpread::default()
            .filter(&st, &p, &a1)
            .is_success());
    }

    fn zoned_cluster() -> Snapshot {
        let nodes = [("a1", "a"), ("a2", "a"), ("b1", "b")].map(|(n, z)| {
            node(n)
                .label(LABEL_ZONE, z)
                .label(LABEL_HOSTNAME, n)
                .build()
        });
        let pods = [("w1", "a1"), ("w2", "a1"), ("w3", "a2")]
            .map(|(p, n)| pod(p).label("app", "web").node(n).build());
        snapshot_with(nodes.into(), pods.into(), |cache| {
            let map = BTreeMap::from([("app".to_string(), "web".to_string())]);
            let selector = LabelSelector::from_map(Some(&map));
            cache.set_spread_selector("default", "ReplicaSet/web", Some(selector));
        })
    }

    fn scores(snap: &Snapshot, p: &PodInfo) -> Option<Vec<i64>> {
        scores_with(&PodTopologySpread::default(), snap, p)
    }

    fn scores_with(plugin: &PodTopologySpread, snap: &Snapshot, p: &PodInfo) -> Option<Vec<i64>> {
        let mut st = CycleState::new();
        let status = plugin.pre_score(&mut st, p, &snap.nodes, snap);
        if status.code == Code::Skip {
            return None;
        }
        let mut s: Vec<i64> = snap
            .nodes
            .iter()
            .map(|n| PodTopologySpread::default().score(&st, p, n).unwrap())
            .collect();
        PodTopologySpread::default().normalize(&st, p, &snap.nodes, &mut s);
        Some(s)
    }

    #[test]
    fn system_defaults_spread_pods_of_one_owner_over_hosts_and_zones() {
        let snap = zoned_cluster();
        let p = PodInfo::new(Arc::new(pod("w4").label("app", "web").build()));
        let s = scores(&snap, &p).expect("default constraints apply");
        let by_name: HashMap<&str, i64> = snap
            .nodes
            .iter()
            .map(|n| n.name.as_str())
            .zip(s.iter().copied())
            .collect();
        // b1 (empty host, empty zone) beats a2 (one pod, busy zone), which
        // beats a1 (two pods).
        assert!(by_name["b1"] > by_name["a2"], "{by_name:?}");
        assert!(by_name["a2"] > by_name["a1"], "{by_name:?}");
    }

    #[test]
    fn cached_host_counts_follow_pods_placed_between_cycles() {
        let mut cache = Cache::new();
        for n in ["h1", "h2", "h3"] {
            cache.add_or_update_node(node(n).label(LABEL_HOSTNAME, n).build());
        }
        let map = BTreeMap::from([("app".to_string(), "web".to_string())]);
        cache.set_spread_selector(
            "default",
            "ReplicaSet/web",
            Some(LabelSelector::from_map(Some(&map))),
        );
        let web = |name: &str, n: &str| {
            Arc::new(PodInfo::new(Arc::new(
                pod(name).label("app", "web").node(n).build(),
            )))
        };
        let p = PodInfo::new(Arc::new(pod("new").label("app", "web").build()));
        // One plugin throughout, so later cycles read the cache.
        let plugin = PodTopologySpread::default();
        let mut snap = Snapshot::default();
        let mut cycle = |cache: &mut Cache| {
            cache.update_snapshot(&mut snap);
            let cached = scores_with(&plugin, &snap, &p).unwrap();
            assert_eq!(Some(cached.clone()), scores(&snap, &p));
            let best = snap.nodes[cached
                .iter()
                .enumerate()
                .max_by_key(|(_, s)| **s)
                .unwrap()
                .0]
                .name
                .clone();
            best
        };
        cache.add_or_update_pod(web("w1", "h1"));
        cache.add_or_update_pod(web("w2", "h2"));
        assert_eq!(cycle(&mut cache), "h3");
        // h3 fills up; the emptiest host is now h1 or h2, not h3.
        cache.add_or_update_pod(web("w3", "h3"));
        cache.add_or_update_pod(web("w4", "h3"));
        cache.add_or_update_pod(web("w5", "h2"));
        assert_eq!(cycle(&mut cache), "h1");
        cache.remove_pod(&web("w4", "h3").uid);
        cache.remove_pod(&web("w3", "h3").uid);
        assert_eq!(cycle(&mut cache), "h3");
    }

    #[test]
    fn system_defaults_need_an_owner_selector_and_yield_to_own_constraints() {
        let snap = zoned_cluster();
        // Selected by nothing: no default constraints.
        let loner = PodInfo::new(Arc::new(pod("x").label("app", "other").build()));
        assert!(scores(&snap, &loner).is_none());
        // Own (hard-only) constraints: the defaults do not apply either.
        let own = PodInfo::new(Arc::new(
            pod("w5")
                .label("app", "web")
                .spread(1, LABEL_ZONE, "DoNotSchedule", "app", "web")
                .build(),
        ));
        assert!(scores(&snap, &own).is_none());
    }

    type DomainCounts = Vec<HashMap<String, i64>>;

    /// The PreFilter counts of `p` as maps, and a fresh recount to compare.
    fn cached_and_fresh(
        plugin: &PodTopologySpread,
        snap: &Snapshot,
        p: &PodInfo,
    ) -> (DomainCounts, DomainCounts) {
        let mut st = CycleState::new();
        assert!(plugin.pre_filter(&mut st, p, snap).1.is_success());
        let s = st.read::<PreFilterState>(PRE_FILTER_KEY).unwrap();
        let cached = s.counts.iter().map(|c| (**c).clone()).collect();
        let fresh = count_all(p, &s.constraints, &s.affinity, &snap.nodes);
        (cached, fresh)
    }

    #[test]
    fn counts_carried_across_cycles_match_a_recount() {
        let mut cache = Cache::new();
        for (n, z) in [("a1", "a"), ("a2", "a"), ("b1", "b"), ("c1", "c")] {
            cache.add_or_update_node(
                node(n)
                    .label(LABEL_ZONE, z)
                    .label(LABEL_HOSTNAME, n)
                    .build(),
            );
        }
        let web = |name: &str, n: &str| {
            Arc::new(PodInfo::new(Arc::new(
                pod(name).label("app", "web").node(n).build(),
            )))
        };
        let p = PodInfo::new(Arc::new(
            pod("new")
                .label("app", "web")
                .spread(1, LABEL_ZONE, "DoNotSchedule", "app", "web")
                .spread(1, LABEL_HOSTNAME, "DoNotSchedule", "app", "web")
                .build(),
        ));
        // One plugin throughout, so each step reads what the last one left.
        let plugin = PodTopologySpread::default();
        let mut snap = Snapshot::default();
        let mut step = |cache: &mut Cache, expect_a: i64| {
            cache.update_snapshot(&mut snap);
            let (cached, fresh) = cached_and_fresh(&plugin, &snap, &p);
            assert_eq!(cached, fresh);
            assert_eq!(cached[0].get("a").copied(), Some(expect_a));
        };
        step(&mut cache, 0);
        cache.add_or_update_pod(web("w1", "a1"));
        cache.add_or_update_pod(web("w2", "a2"));
        cache.add_or_update_pod(web("w3", "b1"));
        step(&mut cache, 2);
        cache.remove_pod(&web("w1", "a1").uid);
        step(&mut cache, 1);
        // A node losing its zone label leaves its domains.
        cache.add_or_update_node(node("c1").label(LABEL_HOSTNAME, "c1").build());
        step(&mut cache, 1);
        // Nodes added and removed (the snapshot's node list is rebuilt).
        cache.add_or_update_node(
            node("d1")
                .label(LABEL_ZONE, "d")
                .label(LABEL_HOSTNAME, "d1")
                .build(),
        );
        cache.add_or_update_pod(web("w4", "d1"));
        step(&mut cache, 1);
        cache.remove_node("a1");
        step(&mut cache, 1);

        // Preemption's updates to one cycle's state stay out of the cache.
        let mut st = CycleState::new();
        plugin.pre_filter(&mut st, &p, &snap);
        let a2 = snap.get("a2").unwrap().clone();
        for victim in a2.pods.clone() {
            plugin.remove_pod(&mut st, &p, &victim, &a2);
        }
        let s = st.read::<PreFilterState>(PRE_FILTER_KEY).unwrap();
        assert_eq!(s.counts[0].get("a").copied(), Some(0));
        let (cached, _) = cached_and_fresh(&plugin, &snap, &p);
        assert_eq!(cached[0].get("a").copied(), Some(1));
    }
}
