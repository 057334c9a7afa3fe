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

/// Matching pods per topology domain, grouped by topology key so that
/// lookups borrow the key and value (no allocation per node checked). A pod
/// has few distinct topology keys, so the outer list is scanned linearly.
#[derive(Debug, Clone, Default)]
struct Counts {
    by_key: Vec<(String, HashMap<String, i64>)>,
    /// How many domains have a positive count, kept up to date so Filter
    /// need not scan every domain.
    positive: usize,
    /// Initial capacity of a key's value map (avoids repeated rehashing
    /// when, say, every node is its own domain).
    capacity: usize,
}

/// Upper bound for `Counts::capacity`, so a guess never reserves much.
const MAX_CAPACITY_HINT: usize = 2048;

impl Counts {
    fn with_capacity_hint(n: usize) -> Counts {
        Counts {
            capacity: n.min(MAX_CAPACITY_HINT),
            ..Counts::default()
        }
    }

    fn add(&mut self, key: &str, value: &str, delta: i64) {
        let i = match self.by_key.iter().position(|(k, _)| k == key) {
            Some(i) => i,
            None => {
                let values = HashMap::with_capacity(self.capacity);
                self.by_key.push((key.to_string(), values));
                self.by_key.len() - 1
            }
        };
        let values = &mut self.by_key[i].1;
        let (before, after) = match values.get_mut(value) {
            Some(c) => {
                let before = *c;
                *c += delta;
                (before, *c)
            }
            None => {
                values.insert(value.to_string(), delta);
                (0, delta)
            }
        };
        match (before > 0, after > 0) {
            (false, true) => self.positive += 1,
            (true, false) => self.positive -= 1,
            _ => {}
        }
    }

    fn get(&self, key: &str, value: &str) -> i64 {
        self.by_key
            .iter()
            .find(|(k, _)| k == key)
            .and_then(|(_, values)| values.get(value))
            .copied()
            .unwrap_or(0)
    }

    /// Whether some domain of `node` has a positive count.
    fn any_positive_on(&self, node: &NodeInfo) -> bool {
        self.positive > 0
            && self.by_key.iter().any(|(k, values)| {
                node.label(k)
                    .and_then(|v| values.get(v))
                    .is_some_and(|c| *c > 0)
            })
    }
}

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
        counts.add(&term.topology_key, v, delta);
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
        // Nodes with such pods bound the domains the existing pods' terms
        // can count; a useful guess for the incoming pod's terms too.
        let hint = snap.with_required_anti_affinity.len();
        let mut s = PreFilterState {
            existing_anti_affinity: Counts::with_capacity_hint(hint),
            affinity: Counts::with_capacity_hint(hint),
            anti_affinity: Counts::with_capacity_hint(hint),
        };
        let existing = |s: &mut PreFilterState, node: &NodeInfo| {
            for other in &node.pods {
                for t in &other.required_anti_affinity {
                    if t.matches(pod, ns) {
                        bump(&mut s.existing_anti_affinity, t, node, 1);
                    }
                }
            }
        };
        if !has_required {
            for &i in &snap.with_required_anti_affinity {
                existing(&mut s, &snap.nodes[i]);
            }
        } else {
            // One pass over all nodes covers both directions.
            for node in &snap.nodes {
                if node.pods.is_empty() {
                    continue;
                }
                if node.pods_with_required_anti_affinity > 0 {
                    existing(&mut s, node);
                }
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
        if s.affinity.get(&t.topology_key, v) <= 0 {
            pods_exist = false;
        }
    }
    if pods_exist {
        return true;
    }
    // The first pod of a group with affinity to itself may go anywhere that
    // has the topology labels, if no pod matches yet.
    s.affinity.positive == 0 && pod.required_affinity.iter().all(|t| t.matches(pod, ns))
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
                if s.anti_affinity.get(&t.topology_key, v) > 0 {
                    return Status::unschedulable(ERR_REASON_ANTI_AFFINITY);
                }
            }
        }
        // Only the topology keys that have counts need a look (upstream
        // walks the node's labels; the result is the same).
        if s.existing_anti_affinity.any_positive_on(node) {
            return Status::unschedulable(ERR_REASON_EXISTING_ANTI_AFFINITY);
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
        let Some(v) = node.label(&term.topology_key) else {
            return;
        };
        // Borrowed lookups first: the strings are cloned only for a new entry.
        let values = match self.0.get_mut(term.topology_key.as_str()) {
            Some(values) => values,
            None => self.0.entry(term.topology_key.clone()).or_default(),
        };
        match values.get_mut(v) {
            Some(c) => *c += weight,
            None => {
                values.insert(v.to_string(), weight);
            }
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
        // Without preferred terms of its own, only existing pods' required
        // affinity and preferred terms can score the pod (as upstream's
        // processExistingPod: required anti-affinity never counts here).
        if !has_preferred && snap.with_score_terms.is_empty() {
            return Status::skip();
        }
        let ns = &snap.namespaces;
        let mut ts = TopologyScore::default();
        let mut process = |node: &NodeInfo| {
            if node.labels().is_none() {
                return;
            }
            for other in &node.pods {
                if !has_preferred && !other.has_score_terms() {
                    continue;
                }
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
            snap.with_score_terms
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

    fn raw_scores(snap: &Snapshot, p: &PodInfo) -> Option<Vec<i64>> {
        let plugin = InterPodAffinity::default();
        let mut st = CycleState::new();
        if plugin.pre_score(&mut st, p, &snap.nodes, snap).is_skip() {
            return None;
        }
        Some(
            snap.nodes
                .iter()
                .map(|n| plugin.score(&st, p, n).unwrap())
                .collect(),
        )
    }

    #[test]
    fn existing_pods_terms_score_a_pod_without_preferences() {
        let incoming = PodInfo::new(Arc::new(pod("web").label("app", "web").build()));
        // Existing required anti-affinity never scores (upstream's
        // processExistingPod), so there is nothing to score.
        let hater = pod("x")
            .label("app", "x")
            .node("a1")
            .required_anti_affinity("app", "web", "zone")
            .build();
        let snap = snapshot(zones(), vec![hater.clone()]);
        assert_eq!(raw_scores(&snap, &incoming), None);
        // An existing pod's preferred affinity towards the incoming pod
        // scores its zone by the term's weight.
        let fan = pod("fan")
            .label("app", "fan")
            .node("b1")
            .preferred_affinity(7, "app", "web", "zone")
            .build();
        let snap = snapshot(zones(), vec![hater.clone(), fan.clone()]);
        assert_eq!(raw_scores(&snap, &incoming), Some(vec![0, 0, 7]));
        // Existing required affinity counts with hardPodAffinityWeight.
        let follower = pod("follower")
            .label("app", "f")
            .node("a2")
            .required_affinity("app", "web", "zone")
            .build();
        let snap = snapshot(zones(), vec![hater, fan, follower]);
        assert_eq!(raw_scores(&snap, &incoming), Some(vec![1, 1, 7]));
    }

    #[test]
    fn existing_anti_affinity_checks_only_counted_keys() {
        // Two topology keys among existing pods' terms; the node is rejected
        // through either.
        let nodes = vec![
            node("a1").label("zone", "a").label("rack", "r1").build(),
            node("a2").label("zone", "a").label("rack", "r2").build(),
            node("b1").label("zone", "b").label("rack", "r1").build(),
            node("b2").label("zone", "b").label("rack", "r3").build(),
        ];
        let pods = vec![
            pod("x")
                .node("a1")
                .required_anti_affinity("app", "web", "zone")
                .build(),
            pod("y")
                .node("b1")
                .required_anti_affinity("app", "web", "rack")
                .build(),
        ];
        let snap = snapshot(nodes, pods);
        let p = PodInfo::new(Arc::new(pod("web").label("app", "web").build()));
        let ok: Vec<bool> = filter_all(&snap, &p)
            .iter()
            .map(Status::is_success)
            .collect();
        assert_eq!(ok, [false, false, false, true]);
    }
}
