//! NodeResourcesFit (requests versus allocatable, least/most-allocated
//! scoring) and NodeResourcesBalancedAllocation.

use std::sync::Arc;

use crate::cache::Snapshot;
use crate::framework::{
    action, ClusterEvent, Code, CycleState, FilterPlugin, Plugin, PreScorePlugin, ScorePlugin,
    Status, MAX_NODE_SCORE,
};
use crate::plugins::{node_event, pod_event};
use crate::resources::{is_extended_resource_name, CPU, MEMORY};
use crate::types::{NodeInfo, PodInfo};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ScoringStrategy {
    /// Favours nodes with more free resources (the default).
    #[default]
    LeastAllocated,
    /// Favours nodes with fewer free resources (bin packing).
    MostAllocated,
}

/// Checks that the node has room for the pod's requests and scores nodes by
/// their allocation of CPU and memory (weights 1 and 1 by default).
#[derive(Debug, Clone)]
pub struct NodeResourcesFit {
    /// Extended resources the filter does not check.
    pub ignored_resources: Vec<String>,
    pub strategy: ScoringStrategy,
    /// Scored resources and weights.
    pub resources: Vec<(String, i64)>,
}

impl Default for NodeResourcesFit {
    fn default() -> Self {
        NodeResourcesFit {
            ignored_resources: Vec::new(),
            strategy: ScoringStrategy::LeastAllocated,
            resources: vec![(CPU.to_string(), 1), (MEMORY.to_string(), 1)],
        }
    }
}

/// One resource the pod does not fit on a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InsufficientResource {
    pub resource: String,
    pub reason: String,
    pub requested: i64,
    pub used: i64,
    pub capacity: i64,
}

/// Upstream's `fitsRequest`: pod count, CPU, memory, ephemeral storage and
/// scalar resources, in that order.
pub fn fits_request(
    pod: &PodInfo,
    node: &NodeInfo,
    ignored: &[String],
) -> Vec<InsufficientResource> {
    let mut out = Vec::new();
    let allowed = node.allocatable.allowed_pods;
    if node.pods.len() as i64 + 1 > allowed {
        out.push(InsufficientResource {
            resource: "pods".into(),
            reason: "Too many pods".into(),
            requested: 1,
            used: node.pods.len() as i64,
            capacity: allowed,
        });
    }
    let req = &pod.requests;
    if req.is_zero_request() {
        return out;
    }
    let alloc = &node.allocatable;
    let used = &node.requested;
    let mut check = |name: &str, reason: &str, r: i64, a: i64, u: i64| {
        if r > 0 && r > a - u {
            out.push(InsufficientResource {
                resource: name.to_string(),
                reason: reason.to_string(),
                requested: r,
                used: u,
                capacity: a,
            });
        }
    };
    check(
        CPU,
        "Insufficient cpu",
        req.milli_cpu,
        alloc.milli_cpu,
        used.milli_cpu,
    );
    check(
        MEMORY,
        "Insufficient memory",
        req.memory,
        alloc.memory,
        used.memory,
    );
    check(
        "ephemeral-storage",
        "Insufficient ephemeral-storage",
        req.ephemeral_storage,
        alloc.ephemeral_storage,
        used.ephemeral_storage,
    );
    for (name, q) in &req.scalar {
        if *q == 0 || (is_extended_resource_name(name) && ignored.iter().any(|i| i == name)) {
            continue;
        }
        check(
            name,
            &format!("Insufficient {name}"),
            *q,
            alloc.scalar(name),
            used.scalar(name),
        );
    }
    out
}

impl Plugin for NodeResourcesFit {
    fn name(&self) -> &'static str {
        "NodeResourcesFit"
    }
    fn events_to_register(&self) -> Vec<ClusterEvent> {
        vec![
            pod_event(action::DELETE | action::UPDATE_POD_SCALE_DOWN),
            node_event(action::ADD | action::UPDATE_NODE_ALLOCATABLE),
        ]
    }
}

impl FilterPlugin for NodeResourcesFit {
    fn filter(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        let insufficient = fits_request(pod, node, &self.ignored_resources);
        if insufficient.is_empty() {
            return Status::success();
        }
        Status::new(
            Code::Unschedulable,
            insufficient.into_iter().map(|r| r.reason).collect(),
        )
    }
}

impl PreScorePlugin for NodeResourcesFit {
    fn pre_score(
        &self,
        _: &mut CycleState,
        _: &PodInfo,
        _: &[Arc<NodeInfo>],
        _: &Snapshot,
    ) -> Status {
        Status::success()
    }
}

/// (allocatable, requested) for one scored resource; requested includes the
/// pod. `use_requested` picks actual requests instead of non-zero defaults.
fn allocatable_and_requested(
    pod: &PodInfo,
    node: &NodeInfo,
    resource: &str,
    use_requested: bool,
) -> (i64, i64) {
    match resource {
        CPU if use_requested => (
            node.allocatable.milli_cpu,
            node.requested.milli_cpu + pod.requests.milli_cpu,
        ),
        CPU => (
            node.allocatable.milli_cpu,
            node.non_zero_cpu + pod.non_zero_cpu,
        ),
        MEMORY if use_requested => (
            node.allocatable.memory,
            node.requested.memory + pod.requests.memory,
        ),
        MEMORY => (
            node.allocatable.memory,
            node.non_zero_memory + pod.non_zero_memory,
        ),
        other => {
            let pod_req = pod.requests.get(other);
            // Scalar resources the pod does not request are not scored.
            if pod_req == 0 && other != "ephemeral-storage" {
                return (0, 0);
            }
            (
                node.allocatable.get(other),
                node.requested.get(other) + pod_req,
            )
        }
    }
}

impl ScorePlugin for NodeResourcesFit {
    fn score(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Result<i64, Status> {
        let (mut total, mut weights) = (0i64, 0i64);
        for (name, weight) in &self.resources {
            let (alloc, req) = allocatable_and_requested(pod, node, name, false);
            if alloc == 0 {
                continue;
            }
            let s = match self.strategy {
                ScoringStrategy::LeastAllocated if req > alloc => 0,
                ScoringStrategy::LeastAllocated => (alloc - req) * MAX_NODE_SCORE / alloc,
                ScoringStrategy::MostAllocated => req.min(alloc) * MAX_NODE_SCORE / alloc,
            };
            total += s * weight;
            weights += weight;
        }
        Ok(if weights == 0 { 0 } else { total / weights })
    }
}

/// Favours nodes whose CPU and memory usage fractions stay close together.
#[derive(Debug, Clone)]
pub struct BalancedAllocation {
    pub resources: Vec<String>,
}

impl Default for BalancedAllocation {
    fn default() -> Self {
        BalancedAllocation {
            resources: vec![CPU.to_string(), MEMORY.to_string()],
        }
    }
}

impl Plugin for BalancedAllocation {
    fn name(&self) -> &'static str {
        "NodeResourcesBalancedAllocation"
    }
}

impl PreScorePlugin for BalancedAllocation {
    fn pre_score(
        &self,
        _: &mut CycleState,
        pod: &PodInfo,
        _: &[Arc<NodeInfo>],
        _: &Snapshot,
    ) -> Status {
        // Best-effort pods would all pile onto one node (upstream #129138).
        if self.resources.iter().all(|r| pod.requests.get(r) == 0) {
            return Status::skip();
        }
        Status::success()
    }
}

impl ScorePlugin for BalancedAllocation {
    fn score(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Result<i64, Status> {
        let mut fractions = [0f64; 8];
        let mut n = 0usize;
        let mut total = 0f64;
        for r in &self.resources {
            let (alloc, req) = allocatable_and_requested(pod, node, r, true);
            if alloc == 0 || n == fractions.len() {
                continue;
            }
            let f = (req as f64 / alloc as f64).min(1.0);
            fractions[n] = f;
            total += f;
            n += 1;
        }
        let std = match n {
            0 | 1 => 0.0,
            2 => ((fractions[0] - fractions[1]) / 2.0).abs(),
            _ => {
                let mean = total / n as f64;
                let var = fractions[..n]
                    .iter()
                    .map(|f| (f - mean) * (f - mean))
                    .sum::<f64>()
                    / n as f64;
                var.sqrt()
            }
        };
        Ok(((1.0 - std) * MAX_NODE_SCORE as f64) as i64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{node, pod};

    fn node_with(n: NodeInfo, pods: &[PodInfo]) -> NodeInfo {
        let mut n = n;
        for p in pods {
            n.add_pod(Arc::new(PodInfo::new(p.pod.clone())));
        }
        n
    }

    #[test]
    fn insufficient_cpu_and_memory_are_both_reported() {
        let n = node_with(
            NodeInfo::from_node(node("n1").cpu("1").memory("1Gi").pods(10).build()),
            &[PodInfo::new(Arc::new(
                pod("a").cpu("600m").memory("512Mi").build(),
            ))],
        );
        let p = PodInfo::new(Arc::new(pod("p").cpu("500m").memory("600Mi").build()));
        let s = NodeResourcesFit::default().filter(&CycleState::new(), &p, &n);
        assert_eq!(
            s,
            Status::new(
                Code::Unschedulable,
                vec!["Insufficient cpu".into(), "Insufficient memory".into()]
            )
        );
        let small = PodInfo::new(Arc::new(pod("p").cpu("400m").memory("100Mi").build()));
        assert!(NodeResourcesFit::default()
            .filter(&CycleState::new(), &small, &n)
            .is_success());
    }

    #[test]
    fn too_many_pods_and_extended_resources() {
        let n = node_with(
            NodeInfo::from_node(
                node("n1")
                    .cpu("4")
                    .pods(1)
                    .extended("example.com/gpu", "1")
                    .build(),
            ),
            &[PodInfo::new(Arc::new(pod("a").build()))],
        );
        let p = PodInfo::new(Arc::new(pod("p").extended("example.com/gpu", "2").build()));
        let s = NodeResourcesFit::default().filter(&CycleState::new(), &p, &n);
        assert_eq!(s.reasons, ["Too many pods", "Insufficient example.com/gpu"]);
        let ignoring = NodeResourcesFit {
            ignored_resources: vec!["example.com/gpu".into()],
            ..Default::default()
        };
        assert_eq!(
            ignoring.filter(&CycleState::new(), &p, &n).reasons,
            ["Too many pods"]
        );
    }

    #[test]
    fn least_allocated_score_uses_non_zero_defaults() {
        // 4 CPU / 8Gi node with 1 CPU used; pod without requests counts 100m/200Mi.
        let n = node_with(
            NodeInfo::from_node(node("n1").cpu("4").memory("8Gi").pods(110).build()),
            &[PodInfo::new(Arc::new(
                pod("a").cpu("1").memory("2Gi").build(),
            ))],
        );
        let p = PodInfo::new(Arc::new(pod("p").build()));
        let s = NodeResourcesFit::default()
            .score(&CycleState::new(), &p, &n)
            .unwrap();
        // cpu: (4000-1100)*100/4000 = 72; mem: (8192-2248)Mi*100/8192Mi = 72
        assert_eq!(s, 72);
        let most = NodeResourcesFit {
            strategy: ScoringStrategy::MostAllocated,
            ..Default::default()
        };
        assert_eq!(most.score(&CycleState::new(), &p, &n).unwrap(), 27);
    }

    #[test]
    fn balanced_allocation_prefers_even_usage() {
        let n = NodeInfo::from_node(node("n1").cpu("4").memory("8Gi").pods(110).build());
        // cpu 2/4 = 0.5, memory 2/8 = 0.25: std = 0.125 → 87
        let p = PodInfo::new(Arc::new(pod("p").cpu("2").memory("2Gi").build()));
        assert_eq!(
            BalancedAllocation::default()
                .score(&CycleState::new(), &p, &n)
                .unwrap(),
            87
        );
        let even = PodInfo::new(Arc::new(pod("p").cpu("2").memory("4Gi").build()));
        assert_eq!(
            BalancedAllocation::default()
                .score(&CycleState::new(), &even, &n)
                .unwrap(),
            100
        );
        let best_effort = PodInfo::new(Arc::new(pod("p").build()));
        let snap = Snapshot::default();
        assert!(BalancedAllocation::default()
            .pre_score(&mut CycleState::new(), &best_effort, &[], &snap)
            .is_skip());
    }
}
