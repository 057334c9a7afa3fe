//! The garbage collector's dependency graph: one small node per object
//! (keyed by uid) with its owner references and the uids of its dependents,
//! built from metadata watches. Owners referenced but not (yet) observed are
//! "virtual" nodes that the workers verify with a live GET. Each change
//! reports which nodes the workers must look at.

use std::collections::{HashMap, HashSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

pub(crate) const FOREGROUND_FINALIZER: &str = "foregroundDeletion";
pub(crate) const ORPHAN_FINALIZER: &str = "orphan";

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Owner {
    pub uid: String,
    pub api_version: String,
    pub kind: String,
    pub name: String,
    /// blockOwnerDeletion
    pub block: bool,
}

/// What the graph keeps of one watched object.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Meta {
    pub uid: String,
    pub namespace: Option<String>,
    pub name: String,
    pub owners: Vec<Owner>,
    pub deleting: bool,
    pub foreground: bool,
    pub orphan: bool,
}

impl Meta {
    pub(crate) fn from_object_meta(m: &ObjectMeta) -> Option<Meta> {
        let has = |f: &str| m.finalizers.iter().flatten().any(|x| x == f);
        Some(Meta {
            uid: m.uid.clone()?,
            namespace: m.namespace.clone(),
            name: m.name.clone()?,
            owners: m
                .owner_references
                .iter()
                .flatten()
                .map(|o| Owner {
                    uid: o.uid.clone(),
                    api_version: o.api_version.clone(),
                    kind: o.kind.clone(),
                    name: o.name.clone(),
                    block: o.block_owner_deletion.unwrap_or(false),
                })
                .collect(),
            deleting: m.deletion_timestamp.is_some(),
            foreground: has(FOREGROUND_FINALIZER),
            orphan: has(ORPHAN_FINALIZER),
        })
    }
}

/// How a node's object is reached through the API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Identity {
    /// Observed through the watch of this resource (index into the
    /// collector's resource table).
    Resource(usize),
    /// Only known from an owner reference.
    Ref { api_version: String, kind: String },
}

#[derive(Clone, Debug)]
pub(crate) struct Node {
    pub identity: Identity,
    pub namespace: Option<String>,
    pub name: String,
    pub owners: Vec<Owner>,
    pub dependents: HashSet<String>,
    pub being_deleted: bool,
    /// Foreground deletion in progress: waiting for blocking dependents.
    pub deleting_dependents: bool,
    pub observed: bool,
}

/// Uids the workers must process after a graph change.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Work {
    pub delete: Vec<String>,
    pub orphan: Vec<String>,
}

#[derive(Default)]
pub(crate) struct Graph {
    nodes: HashMap<String, Node>,
    /// Uids seen per resource during a relist.
    relisting: HashMap<usize, HashSet<String>>,
}

impl Graph {
    pub(crate) fn get(&self, uid: &str) -> Option<&Node> {
        self.nodes.get(uid)
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.nodes.len()
    }

    /// An object was added or changed.
    pub(crate) fn apply(&mut self, res: usize, m: Meta, work: &mut Work) {
        if let Some(seen) = self.relisting.get_mut(&res) {
            seen.insert(m.uid.clone());
        }
        let uid = m.uid.clone();
        let (old_owners, was_virtual) = match self.nodes.get_mut(&uid) {
            Some(n) => {
                let was_virtual = !n.observed;
                n.identity = Identity::Resource(res);
                n.namespace = m.namespace.clone();
                n.name = m.name.clone();
                n.observed = true;
                (std::mem::take(&mut n.owners), was_virtual)
            }
            None => {
                self.nodes.insert(
                    uid.clone(),
                    Node {
                        identity: Identity::Resource(res),
                        namespace: m.namespace.clone(),
                        name: m.name.clone(),
                        owners: Vec::new(),
                        dependents: HashSet::new(),
                        being_deleted: false,
                        deleting_dependents: false,
                        observed: true,
                    },
                );
                (Vec::new(), false)
            }
        };
        if was_virtual {
            // Dependents may have named this owner from another namespace:
            // such references are invalid and must be re-checked.
            if let Some(ns) = &m.namespace {
                let deps: Vec<String> = self.nodes[&uid].dependents.iter().cloned().collect();
                for d in deps {
                    if self
                        .nodes
                        .get(&d)
                        .is_some_and(|d| d.namespace.as_ref() != Some(ns))
                    {
                        work.delete.push(d);
                    }
                }
            }
        }
        for old in &old_owners {
            let now = m.owners.iter().find(|o| o.uid == old.uid);
            let Some(owner) = self.nodes.get_mut(&old.uid) else {
                continue;
            };
            match now {
                None => {
                    owner.dependents.remove(&uid);
                    if old.block && owner.deleting_dependents {
                        work.delete.push(old.uid.clone());
                    }
                    self.drop_unused_virtual(&old.uid);
                }
                // No longer blocking: the owner may be able to go.
                Some(n) if old.block && !n.block && owner.deleting_dependents => {
                    work.delete.push(old.uid.clone());
                }
                Some(_) => {}
            }
        }
        for o in &m.owners {
            if old_owners.iter().any(|x| x.uid == o.uid) {
                continue;
            }
            match self.nodes.get_mut(&o.uid) {
                Some(owner) => {
                    owner.dependents.insert(uid.clone());
                    let invalid = owner.observed
                        && owner.namespace.is_some()
                        && owner.namespace != m.namespace;
                    if invalid {
                        work.delete.push(uid.clone());
                    }
                }
                None => {
                    // Unseen owner: a virtual node, checked by a worker.
                    self.nodes.insert(
                        o.uid.clone(),
                        Node {
                            identity: Identity::Ref {
                                api_version: o.api_version.clone(),
                                kind: o.kind.clone(),
                            },
                            namespace: m.namespace.clone(),
                            name: o.name.clone(),
                            owners: Vec::new(),
                            dependents: HashSet::from([uid.clone()]),
                            being_deleted: false,
                            deleting_dependents: false,
                            observed: false,
                        },
                    );
                    work.delete.push(o.uid.clone());
                }
            }
        }
        let Some(node) = self.nodes.get_mut(&uid) else {
            return;
        };
        node.owners = m.owners;
        node.being_deleted = m.deleting;
        if m.deleting && m.orphan {
            work.orphan.push(uid);
        } else if m.deleting && m.foreground {
            node.deleting_dependents = true;
            work.delete.extend(node.dependents.iter().cloned());
            work.delete.push(uid);
        }
    }

    /// An observed object is gone.
    pub(crate) fn delete(&mut self, uid: &str, work: &mut Work) -> bool {
        let Some(node) = self.nodes.remove(uid) else {
            return false;
        };
        for o in &node.owners {
            if let Some(owner) = self.nodes.get_mut(&o.uid) {
                owner.dependents.remove(uid);
                if owner.deleting_dependents {
                    work.delete.push(o.uid.clone());
                }
            }
            self.drop_unused_virtual(&o.uid);
        }
        let had_dependents = !node.dependents.is_empty();
        work.delete.extend(node.dependents);
        had_dependents
    }

    /// A worker found a virtual node's object absent: its dependents must
    /// be checked. Observed nodes wait for their watch's delete event.
    pub(crate) fn virtual_delete(&mut self, uid: &str, work: &mut Work) {
        if self.nodes.get(uid).is_some_and(|n| !n.observed) {
            if let Some(n) = self.nodes.remove(uid) {
                work.delete.extend(n.dependents);
            }
        }
    }

    /// A virtual node nobody references any more is forgotten.
    fn drop_unused_virtual(&mut self, uid: &str) {
        if self
            .nodes
            .get(uid)
            .is_some_and(|n| !n.observed && n.dependents.is_empty())
        {
            self.nodes.remove(uid);
        }
    }

    pub(crate) fn begin_relist(&mut self, res: usize) {
        self.relisting.insert(res, HashSet::new());
    }

    /// Objects of `res` not seen in the relist were deleted meanwhile.
    pub(crate) fn end_relist(&mut self, res: usize, work: &mut Work) -> Vec<String> {
        let Some(seen) = self.relisting.remove(&res) else {
            return Vec::new();
        };
        let gone: Vec<String> = self
            .nodes
            .iter()
            .filter(|(uid, n)| {
                n.identity == Identity::Resource(res) && n.observed && !seen.contains(*uid)
            })
            .map(|(uid, _)| uid.clone())
            .collect();
        let mut with_dependents = Vec::new();
        for uid in gone {
            if self.delete(&uid, work) {
                with_dependents.push(uid);
            }
        }
        with_dependents
    }

    /// Dependents whose reference to `uid` blocks its deletion.
    pub(crate) fn blocking_dependents(&self, uid: &str) -> Vec<String> {
        let Some(node) = self.nodes.get(uid) else {
            return Vec::new();
        };
        let mut out: Vec<String> = node
            .dependents
            .iter()
            .filter(|d| {
                self.nodes
                    .get(*d)
                    .is_some_and(|d| d.owners.iter().any(|o| o.uid == uid && o.block))
            })
            .cloned()
            .collect();
        out.sort();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(uid: &str, block: bool) -> Owner {
        Owner {
            uid: uid.into(),
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
            name: format!("name-{uid}"),
            block,
        }
    }

    fn meta(uid: &str, owners: Vec<Owner>) -> Meta {
        Meta {
            uid: uid.into(),
            namespace: Some("ns".into()),
            name: format!("name-{uid}"),
            owners,
            deleting: false,
            foreground: false,
            orphan: false,
        }
    }

    #[test]
    fn an_unseen_owner_becomes_a_virtual_node_to_verify() {
        let mut g = Graph::default();
        let mut w = Work::default();
        g.apply(0, meta("dep", vec![owner("own", true)]), &mut w);
        assert_eq!(w.delete, ["own"]);
        let own = g.get("own").unwrap();
        assert!(!own.observed);
        assert!(own.dependents.contains("dep"));
        // Seeing the owner later makes it real; nothing to do.
        let mut w = Work::default();
        g.apply(0, meta("own", vec![]), &mut w);
        assert_eq!(w, Work::default());
        assert!(g.get("own").unwrap().observed);
        // Found absent: dependents are checked, the virtual node goes.
        let mut g = Graph::default();
        g.apply(
            0,
            meta("dep", vec![owner("own", true)]),
            &mut Work::default(),
        );
        let mut w = Work::default();
        g.virtual_delete("own", &mut w);
        assert_eq!(w.delete, ["dep"]);
        assert!(g.get("own").is_none());
    }

    #[test]
    fn deleting_an_owner_queues_its_dependents() {
        let mut g = Graph::default();
        g.apply(0, meta("own", vec![]), &mut Work::default());
        g.apply(
            0,
            meta("a", vec![owner("own", false)]),
            &mut Work::default(),
        );
        g.apply(
            0,
            meta("b", vec![owner("own", false)]),
            &mut Work::default(),
        );
        let mut w = Work::default();
        assert!(g.delete("own", &mut w));
        w.delete.sort();
        assert_eq!(w.delete, ["a", "b"]);
    }

    #[test]
    fn foreground_deletion_waits_for_blocking_dependents() {
        let mut g = Graph::default();
        g.apply(0, meta("own", vec![]), &mut Work::default());
        g.apply(0, meta("a", vec![owner("own", true)]), &mut Work::default());
        g.apply(
            0,
            meta("b", vec![owner("own", false)]),
            &mut Work::default(),
        );
        let mut m = meta("own", vec![]);
        m.deleting = true;
        m.foreground = true;
        let mut w = Work::default();
        g.apply(0, m, &mut w);
        w.delete.sort();
        assert_eq!(w.delete, ["a", "b", "own"]);
        assert!(g.get("own").unwrap().deleting_dependents);
        assert_eq!(g.blocking_dependents("own"), ["a"]);
        // The blocking dependent goes: the owner is looked at again.
        let mut w = Work::default();
        g.delete("a", &mut w);
        assert_eq!(w.delete, ["own"]);
        assert!(g.blocking_dependents("own").is_empty());
    }

    #[test]
    fn unblocking_a_reference_requeues_a_waiting_owner() {
        let mut g = Graph::default();
        let mut m = meta("own", vec![]);
        m.deleting = true;
        m.foreground = true;
        g.apply(0, m, &mut Work::default());
        g.apply(0, meta("a", vec![owner("own", true)]), &mut Work::default());
        let mut w = Work::default();
        g.apply(0, meta("a", vec![owner("own", false)]), &mut w);
        assert_eq!(w.delete, ["own"]);
        let mut w = Work::default();
        g.apply(0, meta("a", vec![]), &mut w);
        assert!(
            w.delete.is_empty(),
            "a non-blocking ref removed: nothing waits"
        );
        assert!(g.get("own").unwrap().dependents.is_empty());
    }

    #[test]
    fn orphan_finalizer_queues_the_owner_for_orphaning() {
        let mut g = Graph::default();
        let mut m = meta("own", vec![]);
        m.deleting = true;
        m.orphan = true;
        let mut w = Work::default();
        g.apply(0, m, &mut w);
        assert_eq!(w.orphan, ["own"]);
        assert!(w.delete.is_empty());
    }

    #[test]
    fn a_relist_deletes_what_it_no_longer_lists() {
        let mut g = Graph::default();
        g.apply(1, meta("own", vec![]), &mut Work::default());
        g.apply(
            0,
            meta("a", vec![owner("own", false)]),
            &mut Work::default(),
        );
        g.begin_relist(1);
        let mut w = Work::default();
        assert_eq!(g.end_relist(1, &mut w), ["own"]);
        assert_eq!(w.delete, ["a"]);
        assert_eq!(g.len(), 1);
    }

    #[test]
    fn a_reference_across_namespaces_is_rechecked() {
        let mut g = Graph::default();
        let mut own = meta("own", vec![]);
        own.namespace = Some("other".into());
        g.apply(0, own, &mut Work::default());
        let mut w = Work::default();
        g.apply(0, meta("dep", vec![owner("own", false)]), &mut w);
        assert_eq!(w.delete, ["dep"]);
    }

    #[test]
    fn virtual_nodes_without_dependents_are_dropped() {
        let mut g = Graph::default();
        g.apply(
            0,
            meta("dep", vec![owner("own", false)]),
            &mut Work::default(),
        );
        assert_eq!(g.len(), 2);
        g.apply(0, meta("dep", vec![]), &mut Work::default());
        assert_eq!(g.len(), 1);
    }
}
