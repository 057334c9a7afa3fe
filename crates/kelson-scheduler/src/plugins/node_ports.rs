//! NodePorts: a pod's host ports must be free on the node.

use crate::cache::Snapshot;
use crate::framework::{
    action, ClusterEvent, CycleState, FilterPlugin, Plugin, PreFilterPlugin, PreFilterResult,
    Status,
};
use crate::plugins::{node_event, pod_event};
use crate::types::{NodeInfo, PodInfo};

pub const ERR_REASON: &str = "node(s) didn't have free ports for the requested pod ports";

#[derive(Debug, Default, Clone, Copy)]
pub struct NodePorts;

impl Plugin for NodePorts {
    fn name(&self) -> &'static str {
        "NodePorts"
    }
    fn events_to_register(&self) -> Vec<ClusterEvent> {
        vec![pod_event(action::DELETE), node_event(action::ADD)]
    }
}

impl PreFilterPlugin for NodePorts {
    fn pre_filter(
        &self,
        _: &mut CycleState,
        pod: &PodInfo,
        _: &Snapshot,
    ) -> (PreFilterResult, Status) {
        if pod.host_ports.is_empty() {
            return (PreFilterResult::default(), Status::skip());
        }
        (PreFilterResult::default(), Status::success())
    }
}

impl FilterPlugin for NodePorts {
    fn filter(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        let conflict = pod
            .host_ports
            .iter()
            .any(|want| node.used_ports.iter().any(|used| used.conflicts(want)));
        if conflict {
            Status::unschedulable(ERR_REASON)
        } else {
            Status::success()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framework::Code;
    use crate::testutil::{node, pod};
    use std::sync::Arc;

    #[test]
    fn host_port_conflicts() {
        let mut n = NodeInfo::from_node(node("n").build());
        n.add_pod(Arc::new(PodInfo::new(Arc::new(
            pod("a").host_port(8080, "", "TCP").build(),
        ))));
        let same = PodInfo::new(Arc::new(
            pod("p").host_port(8080, "10.0.0.1", "TCP").build(),
        ));
        let s = NodePorts.filter(&CycleState::new(), &same, &n);
        assert_eq!(s.code, Code::Unschedulable);
        assert_eq!(s.reasons, [ERR_REASON]);
        let udp = PodInfo::new(Arc::new(pod("p").host_port(8080, "", "UDP").build()));
        assert!(NodePorts.filter(&CycleState::new(), &udp, &n).is_success());
        let other = PodInfo::new(Arc::new(pod("p").host_port(9090, "", "TCP").build()));
        assert!(NodePorts
            .filter(&CycleState::new(), &other, &n)
            .is_success());
        let none = PodInfo::new(Arc::new(pod("p").build()));
        assert!(NodePorts
            .pre_filter(&mut CycleState::new(), &none, &Snapshot::default())
            .1
            .is_skip());
    }
}
