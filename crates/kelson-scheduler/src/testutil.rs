//! Builders for realistic pods and nodes (tests, benchmarks).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, Container, ContainerPort, Node, NodeAffinity, NodeSelector, NodeSelectorTerm,
    NodeSpec, NodeStatus, Pod, PodAffinity, PodAffinityTerm, PodAntiAffinity, PodSchedulingGate,
    PodSpec, PodStatus, PreferredSchedulingTerm, ResourceRequirements, Taint, Toleration,
    TopologySpreadConstraint, WeightedPodAffinityTerm,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, Time};

pub struct NodeBuilder(Node);

pub fn node(name: &str) -> NodeBuilder {
    let mut alloc = BTreeMap::new();
    alloc.insert("pods".to_string(), Quantity("110".into()));
    NodeBuilder(Node {
        metadata: ObjectMeta {
            name: Some(name.into()),
            uid: Some(format!("uid-node-{name}")),
            ..Default::default()
        },
        spec: Some(NodeSpec::default()),
        status: Some(NodeStatus {
            allocatable: Some(alloc.clone()),
            capacity: Some(alloc),
            ..Default::default()
        }),
    })
}

impl NodeBuilder {
    fn alloc(mut self, k: &str, v: &str) -> Self {
        let st = self.0.status.get_or_insert_with(Default::default);
        st.allocatable
            .get_or_insert_with(Default::default)
            .insert(k.into(), Quantity(v.into()));
        st.capacity
            .get_or_insert_with(Default::default)
            .insert(k.into(), Quantity(v.into()));
        self
    }
    pub fn cpu(self, v: &str) -> Self {
        self.alloc("cpu", v)
    }
    pub fn memory(self, v: &str) -> Self {
        self.alloc("memory", v)
    }
    pub fn pods(self, n: i64) -> Self {
        self.alloc("pods", &n.to_string())
    }
    pub fn extended(self, k: &str, v: &str) -> Self {
        self.alloc(k, v)
    }
    pub fn label(mut self, k: &str, v: &str) -> Self {
        self.0
            .metadata
            .labels
            .get_or_insert_with(Default::default)
            .insert(k.into(), v.into());
        self
    }
    pub fn taint(mut self, k: &str, v: &str, effect: &str) -> Self {
        let spec = self.0.spec.get_or_insert_with(Default::default);
        spec.taints.get_or_insert_with(Vec::new).push(Taint {
            key: k.into(),
            value: (!v.is_empty()).then(|| v.to_string()),
            effect: effect.into(),
            time_added: None,
        });
        self
    }
    pub fn unschedulable(mut self) -> Self {
        self.0
            .spec
            .get_or_insert_with(Default::default)
            .unschedulable = Some(true);
        self
    }
    pub fn build(self) -> Node {
        self.0
    }
}

pub struct PodBuilder(Pod);

pub fn pod(name: &str) -> PodBuilder {
    PodBuilder(Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            uid: Some(format!("uid-{name}")),
            ..Default::default()
        },
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "c".into(),
                image: Some("pause".into()),
                ..Default::default()
            }],
            ..Default::default()
        }),
        status: Some(PodStatus {
            phase: Some("Pending".into()),
            ..Default::default()
        }),
    })
}

fn selector(k: &str, v: &str) -> LabelSelector {
    LabelSelector {
        match_labels: Some([(k.to_string(), v.to_string())].into()),
        match_expressions: None,
    }
}

fn term(k: &str, v: &str, topo: &str) -> PodAffinityTerm {
    PodAffinityTerm {
        label_selector: Some(selector(k, v)),
        topology_key: topo.into(),
        ..Default::default()
    }
}

impl PodBuilder {
    fn spec(&mut self) -> &mut PodSpec {
        self.0.spec.get_or_insert_with(Default::default)
    }
    fn affinity(&mut self) -> &mut Affinity {
        self.spec().affinity.get_or_insert_with(Default::default)
    }
    fn request(mut self, k: &str, v: &str) -> Self {
        let c = &mut self.spec().containers[0];
        c.resources
            .get_or_insert_with(ResourceRequirements::default)
            .requests
            .get_or_insert_with(Default::default)
            .insert(k.into(), Quantity(v.into()));
        self
    }
    pub fn cpu(self, v: &str) -> Self {
        self.request("cpu", v)
    }
    pub fn memory(self, v: &str) -> Self {
        self.request("memory", v)
    }
    pub fn extended(self, k: &str, v: &str) -> Self {
        self.request(k, v)
    }
    pub fn namespace(mut self, ns: &str) -> Self {
        self.0.metadata.namespace = Some(ns.into());
        self
    }
    pub fn uid(mut self, uid: &str) -> Self {
        self.0.metadata.uid = Some(uid.into());
        self
    }
    pub fn label(mut self, k: &str, v: &str) -> Self {
        self.0
            .metadata
            .labels
            .get_or_insert_with(Default::default)
            .insert(k.into(), v.into());
        self
    }
    pub fn node(mut self, n: &str) -> Self {
        self.spec().node_name = Some(n.into());
        if let Some(st) = self.0.status.as_mut() {
            st.phase = Some("Running".into());
        }
        self
    }
    pub fn priority(mut self, p: i32) -> Self {
        self.spec().priority = Some(p);
        self
    }
    pub fn scheduler_name(mut self, n: &str) -> Self {
        self.spec().scheduler_name = Some(n.into());
        self
    }
    pub fn preemption_never(mut self) -> Self {
        self.spec().preemption_policy = Some("Never".into());
        self
    }
    pub fn start_time(mut self, secs: i64) -> Self {
        let ts = k8s_openapi::jiff::Timestamp::from_second(secs).unwrap_or_default();
        self.0
            .status
            .get_or_insert_with(Default::default)
            .start_time = Some(Time(ts));
        self
    }
    pub fn toleration(mut self, k: &str, op: &str, v: &str, effect: &str) -> Self {
        let opt = |s: &str| (!s.is_empty()).then(|| s.to_string());
        self.spec()
            .tolerations
            .get_or_insert_with(Vec::new)
            .push(Toleration {
                key: opt(k),
                operator: opt(op),
                value: opt(v),
                effect: opt(effect),
                toleration_seconds: None,
            });
        self
    }
    pub fn node_selector(mut self, k: &str, v: &str) -> Self {
        self.spec()
            .node_selector
            .get_or_insert_with(Default::default)
            .insert(k.into(), v.into());
        self
    }
    pub fn required_node_terms(mut self, terms: Vec<NodeSelectorTerm>) -> Self {
        self.affinity()
            .node_affinity
            .get_or_insert_with(NodeAffinity::default)
            .required_during_scheduling_ignored_during_execution = Some(NodeSelector {
            node_selector_terms: terms,
        });
        self
    }
    pub fn preferred_node_terms(mut self, terms: Vec<PreferredSchedulingTerm>) -> Self {
        self.affinity()
            .node_affinity
            .get_or_insert_with(NodeAffinity::default)
            .preferred_during_scheduling_ignored_during_execution = Some(terms);
        self
    }
    pub fn host_port(mut self, port: i32, ip: &str, proto: &str) -> Self {
        self.spec().containers[0]
            .ports
            .get_or_insert_with(Vec::new)
            .push(ContainerPort {
                container_port: port,
                host_port: Some(port),
                host_ip: (!ip.is_empty()).then(|| ip.to_string()),
                protocol: Some(proto.into()),
                name: None,
            });
        self
    }
    pub fn required_affinity(mut self, k: &str, v: &str, topo: &str) -> Self {
        self.affinity()
            .pod_affinity
            .get_or_insert_with(PodAffinity::default)
            .required_during_scheduling_ignored_during_execution
            .get_or_insert_with(Vec::new)
            .push(term(k, v, topo));
        self
    }
    pub fn required_anti_affinity(mut self, k: &str, v: &str, topo: &str) -> Self {
        self.affinity()
            .pod_anti_affinity
            .get_or_insert_with(PodAntiAffinity::default)
            .required_during_scheduling_ignored_during_execution
            .get_or_insert_with(Vec::new)
            .push(term(k, v, topo));
        self
    }
    pub fn preferred_affinity(mut self, w: i32, k: &str, v: &str, topo: &str) -> Self {
        self.affinity()
            .pod_affinity
            .get_or_insert_with(PodAffinity::default)
            .preferred_during_scheduling_ignored_during_execution
            .get_or_insert_with(Vec::new)
            .push(WeightedPodAffinityTerm {
                weight: w,
                pod_affinity_term: term(k, v, topo),
            });
        self
    }
    pub fn spread(mut self, max_skew: i32, topo: &str, when: &str, k: &str, v: &str) -> Self {
        self.spec()
            .topology_spread_constraints
            .get_or_insert_with(Vec::new)
            .push(TopologySpreadConstraint {
                max_skew,
                topology_key: topo.into(),
                when_unsatisfiable: when.into(),
                label_selector: Some(selector(k, v)),
                ..Default::default()
            });
        self
    }
    pub fn gate(mut self, name: &str) -> Self {
        self.spec()
            .scheduling_gates
            .get_or_insert_with(Vec::new)
            .push(PodSchedulingGate { name: name.into() });
        self
    }
    pub fn build(self) -> Pod {
        self.0
    }
}
