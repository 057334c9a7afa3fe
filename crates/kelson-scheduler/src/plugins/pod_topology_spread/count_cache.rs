//! PreFilter's matching-pod counts carried from one scheduling cycle to the
//! next, so that a cycle recounts only the nodes that changed instead of
//! every pod in the cluster.
//!
//! Why this is exact: the cache shares node infos copy-on-write, so a node
//! info behind an `Arc` never changes; a changed node is a new allocation.
//! Each entry keeps a `Weak` to the node info it counted at each snapshot
//! position (which keeps the allocation, so the address cannot be reused)
//! plus what that node contributed. A position whose pointer is unchanged
//! contributes the same; any other position has its old contribution
//! subtracted and the new node's added. Only constraint sets whose counts
//! depend on nothing but the namespace, topology keys and selectors (no
//! node affinity or taint filtering) are cached.
//!
//! The cache belongs to the plugin instance; a scheduler runs its cycles
//! one at a time, so its lock is never contended.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use crate::selectors::LabelSelector;
use crate::types::NodeInfo;

use super::{add_count, count_matching};

/// Everything a node's contribution depends on besides the node: the
/// incoming pod's namespace and every constraint's topology key and
/// selector (a node counts only when it has all the keys).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct CountKey {
    pub namespace: String,
    pub constraints: Vec<(String, LabelSelector)>,
}

/// Domains of one constraint.
#[derive(Debug, Default)]
struct Domains {
    /// Domain value → id (index into `names` and `nodes`).
    ids: HashMap<String, usize>,
    names: Vec<String>,
    /// Per id: counted nodes in the domain (the domain exists while > 0).
    nodes: Vec<usize>,
    /// Domain value → matching pods, for the domains that exist.
    counts: Arc<HashMap<String, i64>>,
}

#[derive(Debug)]
struct Entry {
    key: CountKey,
    /// The node info counted at each snapshot position.
    nodes: Vec<Weak<NodeInfo>>,
    /// Per position and constraint (`position * constraints + i`): the
    /// domain id and count the node added, `None` when it was not counted.
    contrib: Vec<Option<(usize, i64)>>,
    domains: Vec<Domains>,
}

/// Entries kept (one per recently seen constraint set).
const MAX_ENTRIES: usize = 4;

/// Runs `f` on the entry `is` picks (or a `new` one), keeping `entries`
/// most recently used first and at most [`MAX_ENTRIES`] long.
fn with_entry<E, R>(
    entries: &Mutex<Vec<E>>,
    is: impl Fn(&E) -> bool,
    new: impl FnOnce() -> E,
    f: impl FnOnce(&mut E) -> R,
) -> R {
    let mut entries = entries.lock().unwrap_or_else(|p| p.into_inner());
    let mut e = match entries.iter().position(is) {
        Some(i) => entries.remove(i),
        None => {
            entries.truncate(MAX_ENTRIES - 1);
            new()
        }
    };
    let out = f(&mut e);
    entries.insert(0, e);
    out
}

/// The counts of the last few constraint sets, most recently used first.
#[derive(Debug, Default)]
pub(super) struct CountCache {
    entries: Mutex<Vec<Entry>>,
}

/// The topology values of `node` for every key with the matching pod count
/// for each, into `out`; false when the node lacks a key (not counted).
fn node_counts<'a>(key: &CountKey, node: &'a NodeInfo, out: &mut Vec<(&'a str, i64)>) -> bool {
    out.clear();
    let Some(labels) = node.labels() else {
        return key.constraints.is_empty();
    };
    for (k, _) in &key.constraints {
        match labels.get(k) {
            Some(v) => out.push((v.as_str(), 0)),
            None => return false,
        }
    }
    for (o, (_, sel)) in out.iter_mut().zip(&key.constraints) {
        o.1 = count_matching(&node.pods, sel, &key.namespace);
    }
    true
}

impl Entry {
    fn new(key: CountKey) -> Entry {
        let mut e = Entry {
            key,
            nodes: Vec::new(),
            contrib: Vec::new(),
            domains: Vec::new(),
        };
        e.reset();
        e
    }

    fn reset(&mut self) {
        self.nodes.clear();
        self.contrib.clear();
        self.domains = (0..self.key.constraints.len())
            .map(|_| Domains::default())
            .collect();
    }

    /// Brings the counts up to date with `nodes` (a snapshot's node list).
    fn refresh(&mut self, nodes: &[Arc<NodeInfo>]) {
        let width = self.key.constraints.len();
        let mut buf = Vec::with_capacity(width);
        if self.nodes.len() != nodes.len() {
            self.reset();
            for (j, node) in nodes.iter().enumerate() {
                self.nodes.push(Arc::downgrade(node));
                self.contrib.resize((j + 1) * width, None);
                self.add(j, node, &mut buf);
            }
            return;
        }
        for (j, node) in nodes.iter().enumerate() {
            if std::ptr::eq(self.nodes[j].as_ptr(), Arc::as_ptr(node)) {
                continue;
            }
            self.remove(j);
            self.add(j, node, &mut buf);
            self.nodes[j] = Arc::downgrade(node);
        }
    }

    fn add<'a>(&mut self, j: usize, node: &'a NodeInfo, buf: &mut Vec<(&'a str, i64)>) {
        if !node_counts(&self.key, node, buf) {
            return;
        }
        let width = self.key.constraints.len();
        for (i, &(v, n)) in buf.iter().enumerate() {
            let d = &mut self.domains[i];
            let id = match d.ids.get(v) {
                Some(&id) => id,
                None => {
                    let id = d.names.len();
                    d.ids.insert(v.to_string(), id);
                    d.names.push(v.to_string());
                    d.nodes.push(0);
                    id
                }
            };
            d.nodes[id] += 1;
            add_count(Arc::make_mut(&mut d.counts), v, n);
            self.contrib[j * width + i] = Some((id, n));
        }
    }

    fn remove(&mut self, j: usize) {
        let width = self.key.constraints.len();
        for i in 0..width {
            let Some((id, n)) = self.contrib[j * width + i].take() else {
                continue;
            };
            let d = &mut self.domains[i];
            let counts = Arc::make_mut(&mut d.counts);
            d.nodes[id] -= 1;
            if d.nodes[id] == 0 {
                counts.remove(&d.names[id]);
            } else if let Some(c) = counts.get_mut(&d.names[id]) {
                *c -= n;
            }
        }
    }
}

impl CountCache {
    /// Per constraint of `key`, domain value → matching pods over `nodes`.
    pub(super) fn counts(
        &self,
        key: CountKey,
        nodes: &[Arc<NodeInfo>],
    ) -> Vec<Arc<HashMap<String, i64>>> {
        with_entry(
            &self.entries,
            |e| e.key == key,
            || Entry::new(key.clone()),
            |e| {
                e.refresh(nodes);
                e.domains.iter().map(|d| d.counts.clone()).collect()
            },
        )
    }
}

/// Per node, the pods matching one (namespace, selector): what Score counts
/// for a hostname constraint. Like [`CountCache`], an entry is valid while
/// the node info it was counted on is the same allocation.
#[derive(Debug, Default)]
pub(super) struct NodeCountCache {
    entries: Mutex<Vec<NodeEntry>>,
}

#[derive(Debug)]
struct NodeEntry {
    namespace: String,
    selector: LabelSelector,
    /// Node name → the node info counted and its count.
    by_node: HashMap<String, (Weak<NodeInfo>, i64)>,
}

impl NodeCountCache {
    /// The matching pods of each of `nodes`, in order.
    pub(super) fn counts(
        &self,
        namespace: &str,
        selector: &LabelSelector,
        nodes: &[&Arc<NodeInfo>],
    ) -> Vec<i64> {
        with_entry(
            &self.entries,
            |e| e.namespace == namespace && e.selector == *selector,
            || NodeEntry {
                namespace: namespace.to_string(),
                selector: selector.clone(),
                by_node: HashMap::new(),
            },
            |e| {
                nodes
                    .iter()
                    .map(|node| match e.by_node.get_mut(node.name.as_str()) {
                        Some((seen, n)) if std::ptr::eq(seen.as_ptr(), Arc::as_ptr(node)) => *n,
                        Some(slot) => {
                            let n = count_matching(&node.pods, selector, namespace);
                            *slot = (Arc::downgrade(node), n);
                            n
                        }
                        None => {
                            let n = count_matching(&node.pods, selector, namespace);
                            e.by_node
                                .insert(node.name.clone(), (Arc::downgrade(node), n));
                            n
                        }
                    })
                    .collect()
            },
        )
    }
}
