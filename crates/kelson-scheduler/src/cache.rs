//! The scheduler cache (nodes with their assigned and assumed pods) and the
//! snapshot each scheduling cycle reads.
//!
//! Node infos are shared `Arc`s: the cache changes a node copy-on-write and
//! records its name, so refreshing the snapshot copies only changed nodes.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::Node;

use crate::selectors::SpreadSelectors;
use crate::types::{NamespaceLabels, NodeInfo, PodInfo};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CacheError {
    #[error("pod {0} is already in the cache")]
    PodExists(String),
    #[error("pod {0} is not in the cache")]
    PodMissing(String),
    #[error("pod {0} was not assumed")]
    NotAssumed(String),
}

#[derive(Debug)]
struct PodState {
    info: Arc<PodInfo>,
    node: String,
    assumed: bool,
}

/// Nodes and the pods on them, including pods assumed by the scheduler but
/// not yet seen bound by the API.
#[derive(Debug, Default)]
pub struct Cache {
    nodes: HashMap<String, Arc<NodeInfo>>,
    pods: HashMap<String, PodState>,
    dirty: HashSet<String>,
    /// Nodes added or removed since the last snapshot: the node list is rebuilt.
    structure_changed: bool,
    generation: u64,
    namespaces: Arc<NamespaceLabels>,
    namespaces_changed: bool,
    spread_selectors: Arc<SpreadSelectors>,
    spread_selectors_changed: bool,
}

impl Cache {
    pub fn new() -> Cache {
        Cache::default()
    }

    fn node_mut(&mut self, name: &str) -> &mut NodeInfo {
        self.generation += 1;
        let generation = self.generation;
        self.dirty.insert(name.to_string());
        let entry = self
            .nodes
            .entry(name.to_string())
            .or_insert_with(|| Arc::new(NodeInfo::new(name)));
        let n = Arc::make_mut(entry);
        n.generation = generation;
        n
    }

    /// Adds or replaces a node object.
    pub fn add_or_update_node(&mut self, node: Node) {
        let name = node.metadata.name.clone().unwrap_or_default();
        let existed = self.nodes.get(&name).is_some_and(|n| n.node.is_some());
        self.node_mut(&name).set_node(Arc::new(node));
        if !existed {
            self.structure_changed = true;
        }
    }

    /// Removes a node; pods still assigned to it keep a placeholder entry
    /// until they are removed, as upstream.
    pub fn remove_node(&mut self, name: &str) {
        let Some(n) = self.nodes.get(name) else {
            return;
        };
        if n.pods.is_empty() {
            self.nodes.remove(name);
            self.dirty.insert(name.to_string());
        } else {
            self.node_mut(name).clear_node();
        }
        self.structure_changed = true;
    }

    /// A node by name, if its object is known.
    pub fn node(&self, name: &str) -> Option<&Arc<NodeInfo>> {
        self.nodes.get(name).filter(|n| n.node.is_some())
    }

    pub fn node_count(&self) -> usize {
        self.nodes.values().filter(|n| n.node.is_some()).count()
    }

    fn place(&mut self, info: Arc<PodInfo>, node: &str, assumed: bool) {
        let uid = info.uid.clone();
        self.node_mut(node).add_pod(info.clone());
        self.pods.insert(
            uid,
            PodState {
                info,
                node: node.to_string(),
                assumed,
            },
        );
    }

    fn unplace(&mut self, uid: &str) -> Option<PodState> {
        let st = self.pods.remove(uid)?;
        let node = st.node.clone();
        self.node_mut(&node).remove_pod(uid);
        let empty_placeholder = self
            .nodes
            .get(&node)
            .is_some_and(|n| n.node.is_none() && n.pods.is_empty());
        if empty_placeholder {
            self.nodes.remove(&node);
        }
        Some(st)
    }

    /// Records a pod the scheduler decided to place on `node` before the
    /// binding is confirmed.
    pub fn assume_pod(&mut self, info: Arc<PodInfo>, node: &str) -> Result<(), CacheError> {
        if self.pods.contains_key(&info.uid) {
            return Err(CacheError::PodExists(info.key()));
        }
        self.place(info, node, true);
        Ok(())
    }

    /// Drops an assumed pod (binding failed or the cycle was aborted).
    pub fn forget_pod(&mut self, uid: &str) -> Result<(), CacheError> {
        match self.pods.get(uid) {
            Some(st) if st.assumed => {
                self.unplace(uid);
                Ok(())
            }
            Some(st) => Err(CacheError::NotAssumed(st.info.key())),
            None => Err(CacheError::PodMissing(uid.to_string())),
        }
    }

    pub fn is_assumed(&self, uid: &str) -> bool {
        self.pods.get(uid).is_some_and(|s| s.assumed)
    }

    /// The cached info of a pod on some node.
    pub fn pod(&self, uid: &str) -> Option<Arc<PodInfo>> {
        self.pods.get(uid).map(|s| s.info.clone())
    }

    pub fn contains_pod(&self, uid: &str) -> bool {
        self.pods.contains_key(uid)
    }

    /// Adds or updates a pod the API shows assigned to a node; confirms an
    /// assumed pod. Terminal pods (Succeeded/Failed) free their resources.
    pub fn add_or_update_pod(&mut self, info: Arc<PodInfo>) {
        let phase = info.pod.status.as_ref().and_then(|s| s.phase.as_deref());
        if matches!(phase, Some("Succeeded") | Some("Failed")) {
            self.remove_pod(&info.uid);
            return;
        }
        let Some(node) = info.node_name().map(str::to_string) else {
            return;
        };
        self.unplace(&info.uid);
        self.place(info, &node, false);
    }

    pub fn remove_pod(&mut self, uid: &str) {
        self.unplace(uid);
    }

    pub fn set_namespace_labels(
        &mut self,
        namespace: &str,
        labels: Option<crate::selectors::Labels>,
    ) {
        let map = Arc::make_mut(&mut self.namespaces);
        match labels {
            Some(l) => map.insert(namespace.to_string(), l),
            None => map.remove(namespace),
        };
        self.namespaces_changed = true;
    }

    pub fn set_spread_selector(
        &mut self,
        namespace: &str,
        id: &str,
        selector: Option<crate::selectors::LabelSelector>,
    ) {
        Arc::make_mut(&mut self.spread_selectors).set(namespace, id, selector);
        self.spread_selectors_changed = true;
    }

    /// Brings `snap` up to date, copying only nodes changed since the last call.
    pub fn update_snapshot(&mut self, snap: &mut Snapshot) {
        if self.spread_selectors_changed {
            snap.spread_selectors = self.spread_selectors.clone();
            self.spread_selectors_changed = false;
        }
        if self.namespaces_changed {
            snap.namespaces = self.namespaces.clone();
            self.namespaces_changed = false;
        }
        if self.dirty.is_empty() && !self.structure_changed {
            return;
        }
        if self.structure_changed {
            // Keep the existing order of surviving nodes so the rotating start
            // index stays meaningful; new nodes go to the end.
            let mut nodes: Vec<Arc<NodeInfo>> = snap
                .nodes
                .iter()
                .filter_map(|n| self.node(&n.name).cloned())
                .collect();
            let known: HashSet<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
            let mut added: Vec<&Arc<NodeInfo>> = self
                .nodes
                .values()
                .filter(|n| n.node.is_some() && !known.contains(n.name.as_str()))
                .collect();
            added.sort_by(|a, b| a.name.cmp(&b.name));
            nodes.extend(added.into_iter().cloned());
            snap.index = nodes
                .iter()
                .enumerate()
                .map(|(i, n)| (n.name.clone(), i))
                .collect();
            snap.nodes = nodes;
            let list = |has: fn(&NodeInfo) -> bool| -> Vec<usize> {
                (0..snap.nodes.len())
                    .filter(|&i| has(&snap.nodes[i]))
                    .collect()
            };
            snap.with_affinity = list(|n| n.pods_with_affinity > 0);
            snap.with_required_anti_affinity = list(|n| n.pods_with_required_anti_affinity > 0);
            snap.with_score_terms = list(|n| n.pods_with_score_terms > 0);
            self.structure_changed = false;
        } else {
            for name in &self.dirty {
                let Some(&i) = snap.index.get(name) else {
                    continue;
                };
                if let Some(n) = self.node(name) {
                    let old = &snap.nodes[i];
                    // The index lists stay sorted; only flipped nodes move.
                    set_member(
                        &mut snap.with_affinity,
                        i,
                        old.pods_with_affinity > 0,
                        n.pods_with_affinity > 0,
                    );
                    set_member(
                        &mut snap.with_required_anti_affinity,
                        i,
                        old.pods_with_required_anti_affinity > 0,
                        n.pods_with_required_anti_affinity > 0,
                    );
                    set_member(
                        &mut snap.with_score_terms,
                        i,
                        old.pods_with_score_terms > 0,
                        n.pods_with_score_terms > 0,
                    );
                    snap.nodes[i] = n.clone();
                }
            }
        }
        self.dirty.clear();
        snap.generation = self.generation;
    }
}

/// Adds `i` to or removes it from the sorted index list `list` when a
/// node's membership changed from `was` to `is`.
fn set_member(list: &mut Vec<usize>, i: usize, was: bool, is: bool) {
    if was == is {
        return;
    }
    match (list.binary_search(&i), is) {
        (Err(pos), true) => list.insert(pos, i),
        (Ok(pos), false) => {
            list.remove(pos);
        }
        _ => {}
    }
}

/// An immutable view of the cluster for one scheduling cycle.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    pub nodes: Vec<Arc<NodeInfo>>,
    index: HashMap<String, usize>,
    /// Indexes of nodes with at least one pod that has (anti-)affinity.
    pub with_affinity: Vec<usize>,
    /// Indexes of nodes with at least one pod with required anti-affinity.
    pub with_required_anti_affinity: Vec<usize>,
    /// Indexes of nodes with at least one pod whose terms can change another
    /// pod's InterPodAffinity score (`PodInfo::has_score_terms`).
    pub with_score_terms: Vec<usize>,
    pub namespaces: Arc<NamespaceLabels>,
    /// Selectors for the system-default topology spread constraints.
    pub spread_selectors: Arc<SpreadSelectors>,
    pub generation: u64,
}

impl Snapshot {
    pub fn get(&self, name: &str) -> Option<&Arc<NodeInfo>> {
        self.index.get(name).map(|&i| &self.nodes[i])
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{node, pod};

    #[test]
    fn assume_confirm_forget_and_snapshot_copies_only_changes() {
        let mut cache = Cache::new();
        cache.add_or_update_node(node("n1").cpu("2").build());
        cache.add_or_update_node(node("n2").cpu("2").build());
        let mut snap = Snapshot::default();
        cache.update_snapshot(&mut snap);
        assert_eq!(snap.len(), 2);
        let n2_before = snap.get("n2").unwrap().clone();

        let p = Arc::new(PodInfo::new(Arc::new(pod("p1").cpu("500m").build())));
        cache.assume_pod(p.clone(), "n1").unwrap();
        assert!(cache.assume_pod(p.clone(), "n1").is_err());
        cache.update_snapshot(&mut snap);
        assert_eq!(snap.get("n1").unwrap().requested.milli_cpu, 500);
        assert!(
            Arc::ptr_eq(&n2_before, snap.get("n2").unwrap()),
            "untouched node is shared"
        );

        cache.forget_pod(&p.uid).unwrap();
        cache.update_snapshot(&mut snap);
        assert_eq!(snap.get("n1").unwrap().requested.milli_cpu, 0);

        // The informer confirms a binding: the pod is no longer assumed.
        let bound = Arc::new(PodInfo::new(Arc::new(
            pod("p1").cpu("500m").node("n1").build(),
        )));
        cache.assume_pod(p, "n1").unwrap();
        cache.add_or_update_pod(bound.clone());
        assert!(!cache.is_assumed(&bound.uid));
        assert!(cache.forget_pod(&bound.uid).is_err());
        cache.update_snapshot(&mut snap);
        assert_eq!(snap.get("n1").unwrap().pods.len(), 1);

        cache.remove_node("n2");
        cache.update_snapshot(&mut snap);
        assert_eq!(snap.len(), 1);
        assert!(snap.get("n2").is_none());
    }

    #[test]
    fn affinity_index_lists_follow_incremental_changes() {
        let mut cache = Cache::new();
        for n in ["n1", "n2", "n3", "n4"] {
            cache.add_or_update_node(node(n).build());
        }
        let mut snap = Snapshot::default();
        cache.update_snapshot(&mut snap);
        let full = |snap: &Snapshot, has: fn(&NodeInfo) -> bool| -> Vec<usize> {
            (0..snap.len()).filter(|&i| has(&snap.nodes[i])).collect()
        };
        let check = |snap: &Snapshot| {
            assert_eq!(snap.with_affinity, full(snap, |n| n.pods_with_affinity > 0));
            assert_eq!(
                snap.with_required_anti_affinity,
                full(snap, |n| n.pods_with_required_anti_affinity > 0)
            );
            assert_eq!(
                snap.with_score_terms,
                full(snap, |n| n.pods_with_score_terms > 0)
            );
        };
        let anti = |name: &str, n: &str| {
            Arc::new(PodInfo::new(Arc::new(
                pod(name)
                    .node(n)
                    .required_anti_affinity("a", "b", "zone")
                    .build(),
            )))
        };
        let pref = |name: &str, n: &str| {
            Arc::new(PodInfo::new(Arc::new(
                pod(name)
                    .node(n)
                    .preferred_affinity(1, "a", "b", "zone")
                    .build(),
            )))
        };
        cache.add_or_update_pod(anti("p1", "n3"));
        cache.add_or_update_pod(pref("p2", "n1"));
        cache.update_snapshot(&mut snap);
        check(&snap);
        assert_eq!(snap.with_required_anti_affinity.len(), 1);
        assert_eq!(snap.with_score_terms.len(), 1);
        cache.add_or_update_pod(anti("p3", "n2"));
        cache.add_or_update_pod(pref("p4", "n4"));
        cache.add_or_update_pod(anti("p5", "n3"));
        cache.remove_pod(&anti("p1", "n3").uid);
        cache.update_snapshot(&mut snap);
        check(&snap);
        assert_eq!(snap.with_affinity.len(), 4);
        cache.remove_pod(&pref("p2", "n1").uid);
        cache.remove_pod(&anti("p5", "n3").uid);
        cache.update_snapshot(&mut snap);
        check(&snap);
        assert_eq!(snap.with_affinity.len(), 2);
        cache.add_or_update_node(node("n0").build());
        cache.add_or_update_pod(pref("p6", "n0"));
        cache.update_snapshot(&mut snap);
        check(&snap);
        assert_eq!(snap.with_score_terms.len(), 2);
    }
}
