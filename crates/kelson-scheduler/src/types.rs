//! Pod and node information precomputed for scheduling: a pod's requests,
//! affinity terms and host ports are derived once, a node keeps running sums
//! of what its pods request.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Pod, PodAffinityTerm, Taint, Toleration};

use crate::resources::{pod_non_zero_requests, pod_requests, Resource};
use crate::selectors::{LabelSelector, Labels, SelectorError};

/// Namespace name → labels, for affinity terms with a namespaceSelector.
pub type NamespaceLabels = HashMap<String, Labels>;

/// A compiled pod (anti-)affinity term.
#[derive(Debug, Clone)]
pub struct AffinityTerm {
    pub namespaces: Vec<String>,
    pub namespace_selector: Option<LabelSelector>,
    pub selector: LabelSelector,
    pub topology_key: String,
    pub weight: i32,
}

impl AffinityTerm {
    fn compile(owner_ns: &str, t: &PodAffinityTerm, weight: i32) -> Result<Self, SelectorError> {
        let namespaces = t.namespaces.clone().unwrap_or_default();
        // A set namespaceSelector widens the term (an empty one: all namespaces).
        let namespace_selector = match &t.namespace_selector {
            Some(s) => Some(LabelSelector::compile(Some(s))?),
            None => None,
        };
        let namespaces = if namespaces.is_empty() && namespace_selector.is_none() {
            vec![owner_ns.to_string()]
        } else {
            namespaces
        };
        Ok(AffinityTerm {
            namespaces,
            namespace_selector,
            selector: LabelSelector::compile(t.label_selector.as_ref())?,
            topology_key: t.topology_key.clone(),
            weight,
        })
    }

    /// Whether `pod` is selected by this term (namespace and labels).
    pub fn matches(&self, pod: &PodInfo, ns_labels: &NamespaceLabels) -> bool {
        let ns_ok = self.namespaces.contains(&pod.namespace)
            || self
                .namespace_selector
                .as_ref()
                .is_some_and(|s| s.is_empty() || s.matches(ns_labels.get(&pod.namespace)));
        ns_ok && self.selector.matches(pod.labels())
    }
}

/// A host port a pod binds (`hostIP` empty means all addresses).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    pub ip: String,
    pub protocol: String,
    pub port: i32,
}

impl HostPort {
    /// Upstream's `HostPortInfo` conflict rule: same protocol and port, and
    /// the same IP or either side on 0.0.0.0.
    pub fn conflicts(&self, other: &HostPort) -> bool {
        self.port == other.port
            && self.protocol == other.protocol
            && (self.ip == other.ip || self.ip == "0.0.0.0" || other.ip == "0.0.0.0")
    }
}

/// A pod with everything the plugins need precomputed.
#[derive(Debug)]
pub struct PodInfo {
    pub pod: Arc<Pod>,
    pub uid: String,
    pub namespace: String,
    pub name: String,
    pub priority: i32,
    pub requests: Resource,
    pub non_zero_cpu: i64,
    pub non_zero_memory: i64,
    pub required_affinity: Vec<AffinityTerm>,
    pub required_anti_affinity: Vec<AffinityTerm>,
    pub preferred_affinity: Vec<AffinityTerm>,
    pub preferred_anti_affinity: Vec<AffinityTerm>,
    pub host_ports: Vec<HostPort>,
    /// metadata.deletionTimestamp is set; cached here so counting loops over
    /// many pods need not read the pod object behind another pointer.
    pub terminating: bool,
    /// A selector in the pod's affinity that does not compile; such a pod is
    /// unschedulable with this message.
    pub parse_error: Option<String>,
}

static EMPTY_LABELS: Labels = BTreeMap::new();

impl PodInfo {
    pub fn new(pod: Arc<Pod>) -> PodInfo {
        let meta = &pod.metadata;
        let namespace = meta.namespace.clone().unwrap_or_default();
        let spec = pod.spec.as_ref();
        let mut parse_error = None;
        let mut compile = |terms: Option<&Vec<PodAffinityTerm>>| -> Vec<AffinityTerm> {
            terms
                .into_iter()
                .flatten()
                .filter_map(|t| match AffinityTerm::compile(&namespace, t, 0) {
                    Ok(t) => Some(t),
                    Err(e) => {
                        parse_error = Some(e.to_string());
                        None
                    }
                })
                .collect()
        };
        let affinity = spec.and_then(|s| s.affinity.as_ref());
        let pa = affinity.and_then(|a| a.pod_affinity.as_ref());
        let paa = affinity.and_then(|a| a.pod_anti_affinity.as_ref());
        let required_affinity = compile(pa.and_then(|a| {
            a.required_during_scheduling_ignored_during_execution
                .as_ref()
        }));
        let required_anti_affinity = compile(paa.and_then(|a| {
            a.required_during_scheduling_ignored_during_execution
                .as_ref()
        }));
        let mut compile_weighted =
            |terms: Option<&Vec<k8s_openapi::api::core::v1::WeightedPodAffinityTerm>>| {
                terms
                    .into_iter()
                    .flatten()
                    .filter_map(|t| {
                        match AffinityTerm::compile(&namespace, &t.pod_affinity_term, t.weight) {
                            Ok(t) => Some(t),
                            Err(e) => {
                                parse_error = Some(e.to_string());
                                None
                            }
                        }
                    })
                    .collect::<Vec<_>>()
            };
        let preferred_affinity = compile_weighted(pa.and_then(|a| {
            a.preferred_during_scheduling_ignored_during_execution
                .as_ref()
        }));
        let preferred_anti_affinity = compile_weighted(paa.and_then(|a| {
            a.preferred_during_scheduling_ignored_during_execution
                .as_ref()
        }));

        let mut host_ports = Vec::new();
        if let Some(spec) = spec {
            let sidecars = spec
                .init_containers
                .iter()
                .flatten()
                .filter(|c| c.restart_policy.as_deref() == Some("Always"));
            for c in spec.containers.iter().chain(sidecars) {
                for p in c.ports.iter().flatten() {
                    let Some(hp) = p.host_port.filter(|p| *p > 0) else {
                        continue;
                    };
                    let ip = match p.host_ip.as_deref() {
                        None | Some("") => "0.0.0.0".to_string(),
                        Some(ip) => ip.to_string(),
                    };
                    let protocol = p.protocol.clone().unwrap_or_else(|| "TCP".to_string());
                    host_ports.push(HostPort {
                        ip,
                        protocol,
                        port: hp,
                    });
                }
            }
        }
        let (non_zero_cpu, non_zero_memory) = pod_non_zero_requests(&pod);
        PodInfo {
            uid: meta.uid.clone().unwrap_or_default(),
            name: meta.name.clone().unwrap_or_default(),
            priority: spec.and_then(|s| s.priority).unwrap_or(0),
            requests: pod_requests(&pod),
            non_zero_cpu,
            non_zero_memory,
            required_affinity,
            required_anti_affinity,
            preferred_affinity,
            preferred_anti_affinity,
            host_ports,
            terminating: meta.deletion_timestamp.is_some(),
            parse_error,
            namespace,
            pod,
        }
    }

    /// `namespace/name`, the key used by the queue and the cache.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    pub fn labels(&self) -> Option<&Labels> {
        self.pod.metadata.labels.as_ref()
    }

    pub fn labels_or_empty(&self) -> &Labels {
        self.labels().unwrap_or(&EMPTY_LABELS)
    }

    pub fn node_name(&self) -> Option<&str> {
        self.pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .filter(|n| !n.is_empty())
    }

    pub fn tolerations(&self) -> &[Toleration] {
        self.pod
            .spec
            .as_ref()
            .and_then(|s| s.tolerations.as_deref())
            .unwrap_or(&[])
    }

    pub fn is_terminating(&self) -> bool {
        self.terminating
    }

    pub fn has_affinity(&self) -> bool {
        !(self.required_affinity.is_empty()
            && self.required_anti_affinity.is_empty()
            && self.preferred_affinity.is_empty()
            && self.preferred_anti_affinity.is_empty())
    }

    /// Whether this pod, once placed, can change another pod's
    /// InterPodAffinity score: only its required affinity and its preferred
    /// terms count there (its required anti-affinity never does).
    pub fn has_score_terms(&self) -> bool {
        !(self.required_affinity.is_empty()
            && self.preferred_affinity.is_empty()
            && self.preferred_anti_affinity.is_empty())
    }

    pub fn nominated_node_name(&self) -> Option<&str> {
        self.pod
            .status
            .as_ref()
            .and_then(|s| s.nominated_node_name.as_deref())
            .filter(|n| !n.is_empty())
    }

    /// Pod start time as seconds (for preemption's victim ordering).
    pub fn start_time(&self) -> Option<i64> {
        self.pod
            .status
            .as_ref()
            .and_then(|s| s.start_time.as_ref())
            .map(|t| t.0.as_second())
    }
}

/// A node with the pods assigned to it and running sums of their requests.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    /// `None` while pods reference a node the cache has not seen yet.
    pub node: Option<Arc<Node>>,
    pub name: String,
    pub allocatable: Resource,
    pub requested: Resource,
    pub non_zero_cpu: i64,
    pub non_zero_memory: i64,
    pub pods: Vec<Arc<PodInfo>>,
    pub pods_with_affinity: usize,
    pub pods_with_required_anti_affinity: usize,
    /// Pods for which `PodInfo::has_score_terms` holds.
    pub pods_with_score_terms: usize,
    pub used_ports: Vec<HostPort>,
    /// Bumped on every change, so a snapshot can copy only changed nodes.
    pub generation: u64,
    /// spec.unschedulable and whether spec.taints is non-empty, kept here
    /// so that filtering the usual untainted node reads only this struct,
    /// not the node object behind another pointer (at 5,000 nodes those
    /// cache misses were most of the filter time).
    unschedulable: bool,
    has_taints: bool,
}

impl NodeInfo {
    pub fn new(name: &str) -> NodeInfo {
        NodeInfo {
            node: None,
            name: name.to_string(),
            allocatable: Resource::default(),
            requested: Resource::default(),
            non_zero_cpu: 0,
            non_zero_memory: 0,
            pods: Vec::new(),
            pods_with_affinity: 0,
            pods_with_required_anti_affinity: 0,
            pods_with_score_terms: 0,
            used_ports: Vec::new(),
            generation: 0,
            unschedulable: false,
            has_taints: false,
        }
    }

    /// A node info for a node object with no pods yet.
    pub fn from_node(node: Node) -> NodeInfo {
        let mut n = NodeInfo::new(node.metadata.name.as_deref().unwrap_or(""));
        n.set_node(Arc::new(node));
        n
    }

    pub fn set_node(&mut self, node: Arc<Node>) {
        self.allocatable = node
            .status
            .as_ref()
            .and_then(|s| s.allocatable.as_ref())
            .map(Resource::from_list)
            .unwrap_or_default();
        let spec = node.spec.as_ref();
        self.unschedulable = spec.and_then(|s| s.unschedulable).unwrap_or(false);
        self.has_taints = spec
            .and_then(|s| s.taints.as_ref())
            .is_some_and(|t| !t.is_empty());
        self.node = Some(node);
    }

    /// Forgets the node object (deleted while pods still reference it).
    pub fn clear_node(&mut self) {
        self.node = None;
        self.unschedulable = false;
        self.has_taints = false;
    }

    pub fn labels(&self) -> Option<&Labels> {
        self.node.as_ref().and_then(|n| n.metadata.labels.as_ref())
    }

    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels().and_then(|l| l.get(key)).map(String::as_str)
    }

    pub fn taints(&self) -> &[Taint] {
        if !self.has_taints {
            return &[];
        }
        self.node
            .as_ref()
            .and_then(|n| n.spec.as_ref())
            .and_then(|s| s.taints.as_deref())
            .unwrap_or(&[])
    }

    pub fn unschedulable(&self) -> bool {
        self.unschedulable
    }

    pub fn add_pod(&mut self, pod: Arc<PodInfo>) {
        self.requested.add(&pod.requests);
        self.non_zero_cpu += pod.non_zero_cpu;
        self.non_zero_memory += pod.non_zero_memory;
        if pod.has_affinity() {
            self.pods_with_affinity += 1;
        }
        if !pod.required_anti_affinity.is_empty() {
            self.pods_with_required_anti_affinity += 1;
        }
        if pod.has_score_terms() {
            self.pods_with_score_terms += 1;
        }
        self.used_ports.extend(pod.host_ports.iter().cloned());
        self.pods.push(pod);
    }

    /// Removes the pod with this UID; false when it is not on the node.
    pub fn remove_pod(&mut self, uid: &str) -> bool {
        let Some(i) = self.pods.iter().position(|p| p.uid == uid) else {
            return false;
        };
        let pod = self.pods.swap_remove(i);
        self.requested.sub(&pod.requests);
        self.non_zero_cpu -= pod.non_zero_cpu;
        self.non_zero_memory -= pod.non_zero_memory;
        if pod.has_affinity() {
            self.pods_with_affinity -= 1;
        }
        if !pod.required_anti_affinity.is_empty() {
            self.pods_with_required_anti_affinity -= 1;
        }
        if pod.has_score_terms() {
            self.pods_with_score_terms -= 1;
        }
        for hp in &pod.host_ports {
            if let Some(j) = self.used_ports.iter().position(|u| u == hp) {
                self.used_ports.swap_remove(j);
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::node;

    #[test]
    fn node_flags_follow_the_node_object() {
        let mut n = NodeInfo::from_node(node("a").build());
        assert!(!n.unschedulable());
        assert!(n.taints().is_empty());
        n.set_node(Arc::new(
            node("a")
                .unschedulable()
                .taint("k", "v", "NoSchedule")
                .build(),
        ));
        assert!(n.unschedulable());
        assert_eq!(n.taints().len(), 1);
        assert_eq!(n.taints()[0].key, "k");
        n.clear_node();
        assert!(!n.unschedulable());
        assert!(n.taints().is_empty());
    }
}
