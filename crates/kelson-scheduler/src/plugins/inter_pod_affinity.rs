//! InterPodAffinity: required pod affinity and anti-affinity (including
//! existing pods' anti-affinity towards the incoming pod) as a filter,
//! preferred terms as a score. Counts per topology pair are computed once
//! per pod in PreFilter/PreScore.

use std::collections::HashMap;
use std::sync::Arc;

use crate::cache::Snapshot;
use crate::framework::{
    action, ClusterEvent, CycleState, FilterPlugin, Plugin, PreFilterPlugin, PreFilterResult,
    PreScorePlugin, ScorePlugin, Status, MAX_NODE_SCORE,
};
use crate::plugins::{node_event, pod_event};
use crate::types::{AffinityTerm, NamespaceLabels, NodeInfo, PodInfo};

pub const ERR_REASON_AFFINITY: &str = "node(s) didn't match pod affinity rules";
pub const ERR_REASON_ANTI_AFFINITY: &str = "node(s) didn't match pod anti-affinity rules";
pub const ERR_REASON_EXISTING_ANTI_AFFINITY: &str =
    "node(s) didn't satisfy existing pods anti-affinity rules";

const PRE_FILTER_KEY: &str = "PreFilterInterPodAffinity";
const PRE_SCORE_KEY: &str = "PreScoreInterPodAffinity";

type Counts = HashMap<(String, String), i64>;

#[derive(Debug, Clone)]
pub struct InterPodAffinity {
    /// Weight of existing pods' required affinity towards the incoming pod.
    pub hard_pod_affinity_weight: i64,
}

impl Default for InterPodAffinity {
    fn default() -> Self {
        InterPodAffinity {
            hard_pod_affinity_weight: 1,
        }
    }
}

#[derive(Debug, Clone, Default)]
struct PreFilterState {
    existing_anti_affinity: Counts,
    affinity: Counts,
    anti_affinity: Counts,
}

fn bump(counts: &mut Counts, term: &AffinityTerm, node: &NodeInfo, delta: i64) {
    if let Some(v) = node.label(&term.topology_key) {
        let e = counts
            .entry((term.topology_key.clone(), v.to_string()))
            .or_default();
        *e += delta;
    }
}

impl PreFilterState {
    /// Accounts for `other` on `node` (delta +1 added, -1 removed).
    fn update(
        &mut self,
        pod: &PodInfo,
        other: &PodInfo,
        node: &NodeInfo,
        ns: &NamespaceLabels,
        delta: i64,
    ) {
        for t in &other.required_anti_affinity {
            if t.matches(pod, ns) {
                bump(&mut self.existing_anti_affinity, t, node, delta);
            }
        }
        for t in &pod.required_affinity {
            if t.matches(other, ns) {
                bump(&mut self.affinity, t, node, delta);
            }
        }
        for t in &pod.required_anti_affinity {
            if t.matches(other, ns) {
                bump(&mut self.anti_affinity, t, node, delta);
            }
        }
    }
}

impl Plugin for InterPodAffinity {
    fn name(&self) -> &'static str {
        "InterPodAffinity"
    }
    fn events_to_register(&self) -> Vec<ClusterEvent> {
        vec![
            pod_event(action::ADD | action::UPDATE_POD_LABEL | action::DELETE),
            node_event(action::ADD | action::UPDATE_NODE_LABEL),
        ]
    }
}

impl PreFilterPlugin for InterPodAffinity {
    fn pre_filter(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        snap: &Snapshot,
    ) -> (PreFilterResult, Status) {
        if let Some(e) = &pod.parse_error {
            return (PreFilterResult::default(), Status::error(e.clone()));
        }
        let has_required =
            !pod.required_affinity.is_empty() || !pod.required_anti_affinity.is_empty();
        if !has_required && snap.with_required_anti_affinity.is_empty() {
            return (PreFilterResult::default(), Status::skip());
        }
        let ns = &snap.namespaces;
        let mut s = PreFilterState::default();
        for &i in &snap.with_required_anti_affinity {
            let node = &snap.nodes[i];
            for other in &node.pods {
                for t in &other.required_anti_affinity {
                    if t.matches(pod, ns) {
                        bump(&mut s.existing_anti_affinity, t, node, 1);
                    }
                }
            }
        }
        if has_required {
            for node in &snap.nodes {
                for other in &node.pods {
                    for t in &pod.required_affinity {
                        if t.matches(other, ns) {
                            bump(&mut s.affinity, t, node, 1);
                        }
                    }
                    for t in &pod.required_anti_affinity {
                        if t.matches(other, ns) {
                            bump(&mut s.anti_affinity, t, node, 1);
                        }
                    }
                }
            }
        }
        state.write(PRE_FILTER_KEY, (s, snap.namespaces.clone()));
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
        if let Some((s, ns)) =
            state.read_mut::<(PreFilterState, Arc<NamespaceLabels>)>(PRE_FILTER_KEY)
        {
            let ns = ns.clone();
            s.update(pod, other, node, &ns, 1);
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
        if let Some((s, ns)) =
            state.read_mut::<(PreFilterState, Arc<NamespaceLabels>)>(PRE_FILTER_KEY)
        {
            let ns = ns.clone();
            s.update(pod, other, node, &ns, -1);
        }
        Status::success()
    }
}

fn count(c: &Counts, key: &str, value: &str) -> i64 {
    // Avoids allocating a key tuple for the lookup in the common empty case.
    if c.is_empty() {
        return 0;
    }
    c.get(&(key.to_string(), value.to_string()))
        .copied()
        .unwrap_or(0)
}

fn satisfies_affinity(
    s: &PreFilterState,
    pod: &PodInfo,
    node: &NodeInfo,
    ns: &NamespaceLabels,
) -> bool {
    let mut pods_exist = true;
    for t in &pod.required_affinity {
        let Some(v) = node.label(&t.topology_key) else {
            // Every topology label must exist on the node.
            return false;
        };
        if count(&s.affinity, &t.topology_key, v) <= 0 {
            pods_exist = false;
        }
    }
    if pods_exist {
        return true;
    }
    // The first pod of a group with affinity to itself may go anywhere that
    // has the topology labels, if no pod matches yet.
    s.affinity.values().all(|c| *c <= 0) && pod.required_affinity.iter().all(|t| t.matches(pod, ns))
}

impl FilterPlugin for InterPodAffinity {
    fn filter(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        let Some((s, ns)) = state.read::<(PreFilterState, Arc<NamespaceLabels>)>(PRE_FILTER_KEY)
        else {
            return Status::success();
        };
        if !satisfies_affinity(s, pod, node, ns) {
            return Status::unresolvable(ERR_REASON_AFFINITY);
        }
        for t in &pod.required_anti_affinity {
            if let Some(v) = node.label(&t.topology_key) {
                if count(&s.anti_affinity, &t.topology_key, v) > 0 {
                    return Status::unschedulable(ERR_REASON_ANTI_AFFINITY);
                }
            }
        }
        if s.existing_anti_affinity.values().any(|c| *c > 0) {
            if let Some(labels) = node.labels() {
                for (k, v) in labels {
                    if count(&s.existing_anti_affinity, k, v) > 0 {
                        return Status::unschedulable(ERR_REASON_EXISTING_ANTI_AFFINITY);
                    }
                }
            }
        }
        Status::success()
    }
}

/// topology key → value → score.
#[derive(Debug, Clone, Default)]
struct TopologyScore(HashMap<String, HashMap<String, i64>>);

impl TopologyScore {
    fn add(&mut self, term: &AffinityTerm, node: &NodeInfo, weight: i64) {
        if weight == 0 {
            return;
        }
        if let Some(v) = node.label(&term.topology_key) {
            *self
                .0
                .entry(term.topology_key.clone())
                .or_default()
                .entry(v.to_string())
                .or_default() += weight;
        }
    }
}

impl PreScorePlugin for InterPodAffinity {
    fn pre_score(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        _: &[Arc<NodeInfo>],
        snap: &Snapshot,
    ) -> Status {
        let has_preferred =
            !pod.preferred_affinity.is_empty() || !pod.preferred_anti_affinity.is_empty();
        if !has_preferred && snap.with_affinity.is_empty() {
            return Status::skip();
        }
        let ns = &snap.namespaces;
        let mut ts = TopologyScore::default();
        let mut process = |node: &NodeInfo| {
            if node.labels().is_none() {
                return;
            }
            for other in &node.pods {
                for t in &pod.preferred_affinity {
                    if t.matches(other, ns) {
                        ts.add(t, node, t.weight as i64);
                    }
                }
                for t in &pod.preferred_anti_affinity {
                    if t.matches(other, ns) {
                        ts.add(t, node, -(t.weight as i64));
                    }
                }
                for t in &other.required_affinity {
                    if t.matches(pod, ns) {
                        ts.add(t, node, self.hard_pod_affinity_weight);
                    }
                }
                for t in &other.preferred_affinity {
                    if t.matches(pod, ns) {
                        ts.add(t, node, t.weight as i64);
                    }
                }
                for t in &other.preferred_anti_affinity {
                    if t.matches(pod, ns) {
                        ts.add(t, node, -(t.weight as i64));
                    }
                }
            }
        };
        if has_preferred {
            snap.nodes.iter().for_each(|n| process(n));
        } else {
            snap.with_affinity
                .iter()
                .for_each(|&i| process(&snap.nodes[i]));
        }
        if ts.0.is_empty() {
            return Status::skip();
        }
        state.write(PRE_SCORE_KEY, ts);
        Status::success()
    }
}

impl ScorePlugin for InterPodAffinity {
    fn score(&self, state: &CycleState, _: &PodInfo, node: &NodeInfo) -> Result<i64, Status> {
        let Some(ts) = state.read::<TopologyScore>(PRE_SCORE_KEY) else {
            return Ok(0);
        };
        Ok(ts
            .0
            .iter()
            .filter_map(|(k, vals)| node.label(k).and_then(|v| vals.get(v)))
            .sum())
    }

    fn normalize(
        &self,
        _: &CycleState,
        _: &PodInfo,
        _: &[Arc<NodeInfo>],
        scores: &mut [i64],
    ) -> Status {
        let (min, max) = scores
            .iter()
            .fold((i64::MAX, i64::MIN), |(lo, hi), s| (lo.min(*s), hi.max(*s)));
        let diff = max.saturating_sub(min);
        for s in scores.iter_mut() {
            *s = if diff > 0 {
                (MAX_NODE_SCORE as f64 * ((*s - min) as f64 / diff as f64)) as i64
            } else {
                0
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
    use crate::testutil::{node, pod};

    fn snapshot(
        nodes: Vec<k8s_openapi::api::core::v1::Node>,
        pods: Vec<k8s_openapi::api::core::v1::Pod>,
    ) -> Snapshot {
        let mut cache = Cache::new();
        for n in nodes {
            cache.add_or_update_node(n);
        }
        for p in pods {
            cache.add_or_update_pod(Arc::new(PodInfo::new(Arc::new(p))));
        }
        let mut snap = Snapshot::default();
        cache.update_snapshot(&mut snap);
        snap
    }

    fn filter_all(snap: &Snapshot, p: &PodInfo) -> Vec<Status> {
        let mut st = CycleState::new();
        let plugin = InterPodAffinity::default();
        let (_, s) = plugin.pre_filter(&mut st, p, snap);
        if s.is_skip() {
            return snap.nodes.iter().map(|_| Status::success()).collect();
        }
        snap.nodes
            .iter()
            .map(|n| plugin.filter(&st, p, n))
            .collect()
    }

    fn zones() -> Vec<k8s_openapi::api::core::v1::Node> {
        vec![
            node("a1").label("zone", "a").build(),
            node("a2").label("zone", "a").build(),
            node("b1").label("zone", "b").build(),
        ]
    }

    #[test]
    fn required_affinity_follows_matching_pods() {
        let snap = snapshot(
            zones(),
            vec![pod("db").label("app", "db").node("a1").build()],
        );
        let p = PodInfo::new(Arc::new(
            pod("web").required_affinity("app", "db", "zone").build(),
        ));
        let st = filter_all(&snap, &p);
        assert!(st[0].is_success() && st[1].is_success());
        assert_eq!(st[2].code, Code::UnschedulableAndUnresolvable);
        assert_eq!(st[2].reasons, [ERR_REASON_AFFINITY]);
    }

    #[test]
    fn first_pod_with_self_affinity_is_allowed() {
        let snap = snapshot(zones(), vec![]);
        let p = PodInfo::new(Arc::new(
            pod("web")
                .label("app", "web")
                .required_affinity("app", "web", "zone")
                .build(),
        ));
        assert!(filter_all(&snap, &p).iter().all(Status::is_success));
        // Without matching its own term it has nowhere to go.
        let q = PodInfo::new(Arc::new(
            pod("web").required_affinity("app", "web", "zone").build(),
        ));
        assert!(filter_all(&snap, &q).iter().all(|s| !s.is_success()));
    }

    #[test]
    fn anti_affinity_both_directions() {
        let snap = snapshot(
            zones(),
            vec![pod("x")
                .label("app", "web")
                .node("a1")
                .required_anti_affinity("app", "web", "zone")
                .build()],
        );
        let p = PodInfo::new(Arc::new(pod("y").label("app", "web").build()));
        let st = filter_all(&snap, &p);
        assert_eq!(st[0].reasons, [ERR_REASON_EXISTING_ANTI_AFFINITY]);
        assert_eq!(st[1].code, Code::Unschedulable);
        assert!(st[2].is_success());

        let q = PodInfo::new(Arc::new(
            pod("z")
                .required_anti_affinity("app", "web", "kubernetes.io/hostname")
                .build(),
        ));
        let snap = snapshot(
            vec![
                node("a1").label("kubernetes.io/hostname", "a1").build(),
                node("b1").label("kubernetes.io/hostname", "b1").build(),
            ],
            vec![pod("x").label("app", "web").node("a1").build()],
        );
        let st = filter_all(&snap, &q);
        assert_eq!(st[0].reasons, [ERR_REASON_ANTI_AFFINITY]);
        assert!(st[1].is_success());
    }

    #[test]
    fn preferred_affinity_scores_zones() {
        let snap = snapshot(
            zones(),
            vec![pod("db").label("app", "db").node("b1").build()],
        );
        let p = PodInfo::new(Arc::new(
            pod("web")
                .preferred_affinity(10, "app", "db", "zone")
                .build(),
        ));
        let plugin = InterPodAffinity::default();
        let mut st = CycleState::new();
        assert!(plugin
            .pre_score(&mut st, &p, &snap.nodes, &snap)
            .is_success());
        let mut s: Vec<i64> = snap
            .nodes
            .iter()
            .map(|n| plugin.score(&st, &p, n).unwrap())
            .collect();
        assert_eq!(s, [0, 0, 10]);
        plugin.normalize(&st, &p, &snap.nodes, &mut s);
        assert_eq!(s, [0, 0, 100]);
    }
}
