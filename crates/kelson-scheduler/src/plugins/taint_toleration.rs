//! TaintToleration: NoSchedule/NoExecute taints filter, PreferNoSchedule
//! taints lower the score.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Toleration;

use crate::cache::Snapshot;
use crate::framework::{
    action, default_normalize, ClusterEvent, CycleState, FilterPlugin, Plugin, PreScorePlugin,
    ScorePlugin, Status, MAX_NODE_SCORE,
};
use crate::plugins::node_event;
use crate::selectors::{first_untolerated, tolerates};
use crate::types::{NodeInfo, PodInfo};

const PRE_SCORE_KEY: &str = "PreScoreTaintToleration";

#[derive(Debug, Default, Clone, Copy)]
pub struct TaintToleration;

impl Plugin for TaintToleration {
    fn name(&self) -> &'static str {
        "TaintToleration"
    }
    fn events_to_register(&self) -> Vec<ClusterEvent> {
        vec![node_event(action::ADD | action::UPDATE_NODE_TAINT)]
    }
}

impl FilterPlugin for TaintToleration {
    fn filter(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        match first_untolerated(
            node.taints(),
            pod.tolerations(),
            &["NoSchedule", "NoExecute"],
        ) {
            None => Status::success(),
            Some(t) => Status::unresolvable(format!(
                "node(s) had untolerated taint {{{}: {}}}",
                t.key,
                t.value.as_deref().unwrap_or("")
            )),
        }
    }
}

/// Tolerations that can apply to PreferNoSchedule taints.
#[derive(Debug, Clone)]
struct PreferTolerations(Vec<Toleration>);

impl PreScorePlugin for TaintToleration {
    fn pre_score(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        _: &[Arc<NodeInfo>],
        _: &Snapshot,
    ) -> Status {
        let tols = pod
            .tolerations()
            .iter()
            .filter(|t| {
                matches!(
                    t.effect.as_deref(),
                    None | Some("") | Some("PreferNoSchedule")
                )
            })
            .cloned()
            .collect();
        state.write(PRE_SCORE_KEY, PreferTolerations(tols));
        Status::success()
    }
}

impl ScorePlugin for TaintToleration {
    fn score(&self, state: &CycleState, _: &PodInfo, node: &NodeInfo) -> Result<i64, Status> {
        let empty = PreferTolerations(Vec::new());
        let tols = state
            .read::<PreferTolerations>(PRE_SCORE_KEY)
            .unwrap_or(&empty);
        Ok(node
            .taints()
            .iter()
            .filter(|t| {
                t.effect == "PreferNoSchedule" && !tols.0.iter().any(|tol| tolerates(tol, t))
            })
            .count() as i64)
    }

    fn normalize(
        &self,
        _: &CycleState,
        _: &PodInfo,
        _: &[Arc<NodeInfo>],
        scores: &mut [i64],
    ) -> Status {
        default_normalize(MAX_NODE_SCORE, true, scores);
        Status::success()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framework::Code;
    use crate::testutil::{node, pod};

    #[test]
    fn untolerated_taint_message() {
        let n = NodeInfo::from_node(node("n").taint("dedicated", "gpu", "NoSchedule").build());
        let p = PodInfo::new(Arc::new(pod("p").build()));
        let s = TaintToleration.filter(&CycleState::new(), &p, &n);
        assert_eq!(s.code, Code::UnschedulableAndUnresolvable);
        assert_eq!(
            s.reasons,
            ["node(s) had untolerated taint {dedicated: gpu}"]
        );
        let p = PodInfo::new(Arc::new(
            pod("p")
                .toleration("dedicated", "Equal", "gpu", "NoSchedule")
                .build(),
        ));
        assert!(TaintToleration
            .filter(&CycleState::new(), &p, &n)
            .is_success());
        // PreferNoSchedule taints never filter.
        let soft = NodeInfo::from_node(node("n").taint("a", "b", "PreferNoSchedule").build());
        assert!(TaintToleration
            .filter(
                &CycleState::new(),
                &PodInfo::new(Arc::new(pod("p").build())),
                &soft
            )
            .is_success());
    }

    #[test]
    fn prefer_no_schedule_lowers_score() {
        let nodes = vec![
            Arc::new(NodeInfo::from_node(node("clean").build())),
            Arc::new(NodeInfo::from_node(
                node("one").taint("a", "1", "PreferNoSchedule").build(),
            )),
            Arc::new(NodeInfo::from_node(
                node("two")
                    .taint("a", "1", "PreferNoSchedule")
                    .taint("b", "2", "PreferNoSchedule")
                    .build(),
            )),
        ];
        let p = PodInfo::new(Arc::new(pod("p").toleration("b", "Exists", "", "").build()));
        let mut st = CycleState::new();
        TaintToleration.pre_score(&mut st, &p, &nodes, &Snapshot::default());
        let mut s: Vec<i64> = nodes
            .iter()
            .map(|n| TaintToleration.score(&st, &p, n).unwrap())
            .collect();
        assert_eq!(s, [0, 1, 1]);
        TaintToleration.normalize(&st, &p, &nodes, &mut s);
        assert_eq!(s, [100, 0, 0]);
    }
}
