//! The in-tree plugins and the default profile.

use std::sync::Arc;

use crate::framework::{
    action, BindPlugin, ClusterEvent, CycleState, EventResource, FilterPlugin, Framework, Plugin,
    QueueSortPlugin, Status,
};
use crate::queue::{QueuedPodInfo, SchedulingQueue};
use crate::scheduler::SchedulerEffects;
use crate::selectors::tolerates;
use crate::types::{NodeInfo, PodInfo};

pub mod inter_pod_affinity;
pub mod node_affinity;
pub mod node_ports;
pub mod node_resources;
pub mod pod_topology_spread;
pub mod taint_toleration;

pub use inter_pod_affinity::InterPodAffinity;
pub use node_affinity::NodeAffinity;
pub use node_ports::NodePorts;
pub use node_resources::{BalancedAllocation, NodeResourcesFit, ScoringStrategy};
pub use pod_topology_spread::PodTopologySpread;
pub use taint_toleration::TaintToleration;

pub(crate) const fn node_event(actions: u32) -> ClusterEvent {
    ClusterEvent::new(EventResource::Node, actions)
}

pub(crate) const fn pod_event(actions: u32) -> ClusterEvent {
    ClusterEvent::new(EventResource::AssignedPod, actions)
}

/// Orders the active queue by priority, then by time in the queue.
#[derive(Debug, Default, Clone, Copy)]
pub struct PrioritySort;

impl Plugin for PrioritySort {
    fn name(&self) -> &'static str {
        "PrioritySort"
    }
}

impl QueueSortPlugin for PrioritySort {
    fn less(&self, a: &QueuedPodInfo, b: &QueuedPodInfo) -> bool {
        let (pa, pb) = (a.info.priority, b.info.priority);
        pa > pb
            || (pa == pb
                && (a.timestamp < b.timestamp
                    || (a.timestamp == b.timestamp
                        && SchedulingQueue::seq_of(a) < SchedulingQueue::seq_of(b))))
    }
}

/// Rejects nodes other than the pod's `spec.nodeName`, when set.
#[derive(Debug, Default, Clone, Copy)]
pub struct NodeName;

pub const ERR_REASON_NODE_NAME: &str = "node(s) didn't match the requested node name";

impl Plugin for NodeName {
    fn name(&self) -> &'static str {
        "NodeName"
    }
    fn events_to_register(&self) -> Vec<ClusterEvent> {
        vec![node_event(action::ADD)]
    }
}

impl FilterPlugin for NodeName {
    fn filter(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        match pod.node_name() {
            Some(n) if n != node.name => Status::unresolvable(ERR_REASON_NODE_NAME),
            _ => Status::success(),
        }
    }
}

/// Rejects cordoned nodes unless the pod tolerates the unschedulable taint.
#[derive(Debug, Default, Clone, Copy)]
pub struct NodeUnschedulable;

pub const ERR_REASON_UNSCHEDULABLE: &str = "node(s) were unschedulable";
pub const TAINT_NODE_UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";

impl Plugin for NodeUnschedulable {
    fn name(&self) -> &'static str {
        "NodeUnschedulable"
    }
    fn events_to_register(&self) -> Vec<ClusterEvent> {
        vec![node_event(action::ADD | action::UPDATE_NODE_TAINT)]
    }
}

impl FilterPlugin for NodeUnschedulable {
    fn filter(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        if !node.unschedulable() {
            return Status::success();
        }
        let taint = k8s_openapi::api::core::v1::Taint {
            key: TAINT_NODE_UNSCHEDULABLE.to_string(),
            effect: "NoSchedule".to_string(),
            ..Default::default()
        };
        if pod.tolerations().iter().any(|t| tolerates(t, &taint)) {
            Status::success()
        } else {
            Status::unresolvable(ERR_REASON_UNSCHEDULABLE)
        }
    }
}

/// Binds through the side-effect trait (pods/binding in the real wiring).
#[derive(Debug, Default, Clone, Copy)]
pub struct DefaultBinder;

impl Plugin for DefaultBinder {
    fn name(&self) -> &'static str {
        "DefaultBinder"
    }
}

impl BindPlugin for DefaultBinder {
    fn bind(
        &self,
        _: &CycleState,
        pod: &PodInfo,
        node: &str,
        effects: &dyn SchedulerEffects,
    ) -> Status {
        match effects.bind(&pod.pod, node) {
            Ok(()) => Status::success(),
            Err(e) => Status::error(e.to_string()),
        }
    }
}

/// Upstream's default profile (1.33) without the volume and DRA plugins:
/// filters in upstream order, score weights TaintToleration 3,
/// NodeAffinity 2, NodeResourcesFit 1, PodTopologySpread 2,
/// InterPodAffinity 2, NodeResourcesBalancedAllocation 1.
pub fn default_profile(scheduler_name: &str) -> Framework {
    let mut fw = Framework::new(scheduler_name, Arc::new(PrioritySort));
    let unsched = Arc::new(NodeUnschedulable);
    let node_name = Arc::new(NodeName);
    let taints = Arc::new(TaintToleration);
    let affinity = Arc::new(NodeAffinity);
    let ports = Arc::new(NodePorts);
    let fit = Arc::new(NodeResourcesFit::default());
    let spread = Arc::new(PodTopologySpread::default());
    let ipa = Arc::new(InterPodAffinity::default());
    let balanced = Arc::new(BalancedAllocation::default());
    let preemption = Arc::new(crate::preemption::DefaultPreemption);

    fw.pre_filter = vec![affinity.clone(), ports.clone(), spread.clone(), ipa.clone()];
    fw.filter = vec![
        unsched.clone(),
        node_name.clone(),
        taints.clone(),
        affinity.clone(),
        ports.clone(),
        fit.clone(),
        spread.clone(),
        ipa.clone(),
    ];
    fw.post_filter = vec![preemption.clone()];
    fw.pre_score = vec![
        taints.clone(),
        affinity.clone(),
        fit.clone(),
        spread.clone(),
        ipa.clone(),
        balanced.clone(),
    ];
    fw.score = vec![
        (taints.clone(), 3),
        (affinity.clone(), 2),
        (fit.clone(), 1),
        (spread.clone(), 2),
        (ipa.clone(), 2),
        (balanced.clone(), 1),
    ];
    fw.bind = vec![Arc::new(DefaultBinder)];
    let all: [&dyn Plugin; 10] = [
        unsched.as_ref(),
        node_name.as_ref(),
        taints.as_ref(),
        affinity.as_ref(),
        ports.as_ref(),
        fit.as_ref(),
        spread.as_ref(),
        ipa.as_ref(),
        balanced.as_ref(),
        preemption.as_ref(),
    ];
    for p in all {
        fw.register_events(p);
    }
    fw
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{node, pod};

    fn run(p: &dyn FilterPlugin, pod: &PodInfo, n: &NodeInfo) -> Status {
        p.filter(&CycleState::new(), pod, n)
    }

    #[test]
    fn node_name_filter() {
        let n = NodeInfo::from_node(node("n1").build());
        let p = PodInfo::new(Arc::new(pod("p").node("n2").build()));
        assert_eq!(
            run(&NodeName, &p, &n),
            Status::unresolvable(ERR_REASON_NODE_NAME)
        );
        let p = PodInfo::new(Arc::new(pod("p").node("n1").build()));
        assert!(run(&NodeName, &p, &n).is_success());
    }

    #[test]
    fn unschedulable_node_filter() {
        let n = NodeInfo::from_node(node("n1").unschedulable().build());
        let p = PodInfo::new(Arc::new(pod("p").build()));
        assert_eq!(
            run(&NodeUnschedulable, &p, &n),
            Status::unresolvable("node(s) were unschedulable")
        );
        let p = PodInfo::new(Arc::new(
            pod("p")
                .toleration(TAINT_NODE_UNSCHEDULABLE, "Exists", "", "NoSchedule")
                .build(),
        ));
        assert!(run(&NodeUnschedulable, &p, &n).is_success());
    }
}
