//! NodeAffinity: `nodeSelector` and required node affinity as a filter,
//! preferred node affinity as a score.

use std::collections::BTreeSet;
use std::sync::Arc;

use crate::cache::Snapshot;
use crate::framework::{
    action, default_normalize, ClusterEvent, CycleState, FilterPlugin, Plugin, PreFilterPlugin,
    PreFilterResult, PreScorePlugin, ScorePlugin, Status, MAX_NODE_SCORE,
};
use crate::plugins::node_event;
use crate::selectors::{Labels, NodeSelectorTermC};
use crate::types::{NodeInfo, PodInfo};

pub const ERR_REASON_POD: &str = "node(s) didn't match Pod's node affinity/selector";
pub const ERR_REASON_CONFLICT: &str = "pod affinity terms conflict";

const PRE_FILTER_KEY: &str = "PreFilterNodeAffinity";
const PRE_SCORE_KEY: &str = "PreScoreNodeAffinity";

#[derive(Debug, Default, Clone, Copy)]
pub struct NodeAffinity;

/// The pod's hard node constraints, compiled.
#[derive(Debug, Clone)]
pub struct RequiredNodeAffinity {
    node_selector: Option<Labels>,
    /// ORed terms; `None` when the pod has no required node affinity.
    terms: Option<Vec<NodeSelectorTermC>>,
}

impl RequiredNodeAffinity {
    pub fn from_pod(pod: &PodInfo) -> RequiredNodeAffinity {
        let spec = pod.pod.spec.as_ref();
        let node_selector = spec
            .and_then(|s| s.node_selector.clone())
            .filter(|s| !s.is_empty());
        let terms = spec
            .and_then(|s| s.affinity.as_ref())
            .and_then(|a| a.node_affinity.as_ref())
            .and_then(|a| {
                a.required_during_scheduling_ignored_during_execution
                    .as_ref()
            })
            .map(|r| {
                r.node_selector_terms
                    .iter()
                    .map(NodeSelectorTermC::compile)
                    .collect()
            });
        RequiredNodeAffinity {
            node_selector,
            terms,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.node_selector.is_none() && self.terms.is_none()
    }

    pub fn matches(&self, node: &NodeInfo) -> bool {
        let labels = node.labels();
        if let Some(sel) = &self.node_selector {
            let Some(labels) = labels else { return false };
            if !sel.iter().all(|(k, v)| labels.get(k) == Some(v)) {
                return false;
            }
        }
        match &self.terms {
            Some(terms) => terms.iter().any(|t| t.matches(&node.name, labels)),
            None => true,
        }
    }
}

impl Plugin for NodeAffinity {
    fn name(&self) -> &'static str {
        "NodeAffinity"
    }
    fn events_to_register(&self) -> Vec<ClusterEvent> {
        vec![node_event(action::ADD | action::UPDATE_NODE_LABEL)]
    }
}

impl PreFilterPlugin for NodeAffinity {
    fn pre_filter(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        _: &Snapshot,
    ) -> (PreFilterResult, Status) {
        let req = RequiredNodeAffinity::from_pod(pod);
        if req.is_empty() {
            return (PreFilterResult::default(), Status::skip());
        }
        // Terms that all pin metadata.name narrow the candidate nodes.
        let mut names: Option<BTreeSet<String>> = None;
        if let Some(terms) = &req.terms {
            for t in terms {
                match t.required_names() {
                    None => {
                        names = None;
                        break;
                    }
                    Some(n) => names.get_or_insert_with(BTreeSet::new).extend(n),
                }
            }
        }
        state.write(PRE_FILTER_KEY, req);
        match names {
            Some(n) if n.is_empty() => (
                PreFilterResult::default(),
                Status::unresolvable(ERR_REASON_CONFLICT),
            ),
            n => (PreFilterResult { node_names: n }, Status::success()),
        }
    }
}

impl FilterPlugin for NodeAffinity {
    fn filter(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        let ok = match state.read::<RequiredNodeAffinity>(PRE_FILTER_KEY) {
            Some(req) => req.matches(node),
            None => RequiredNodeAffinity::from_pod(pod).matches(node),
        };
        if ok {
            Status::success()
        } else {
            Status::unresolvable(ERR_REASON_POD)
        }
    }
}

#[derive(Debug, Clone)]
struct Preferred(Vec<(i32, NodeSelectorTermC)>);

impl PreScorePlugin for NodeAffinity {
    fn pre_score(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        _: &[Arc<NodeInfo>],
        _: &Snapshot,
    ) -> Status {
        let terms: Vec<(i32, NodeSelectorTermC)> = pod
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.affinity.as_ref())
            .and_then(|a| a.node_affinity.as_ref())
            .and_then(|a| {
                a.preferred_during_scheduling_ignored_during_execution
                    .as_ref()
            })
            .into_iter()
            .flatten()
            .filter(|t| t.weight != 0)
            .map(|t| (t.weight, NodeSelectorTermC::compile(&t.preference)))
            .collect();
        if terms.is_empty() {
            return Status::skip();
        }
        state.write(PRE_SCORE_KEY, Preferred(terms));
        Status::success()
    }
}

impl ScorePlugin for NodeAffinity {
    fn score(&self, state: &CycleState, _: &PodInfo, node: &NodeInfo) -> Result<i64, Status> {
        let Some(pref) = state.read::<Preferred>(PRE_SCORE_KEY) else {
            return Ok(0);
        };
        Ok(pref
            .0
            .iter()
            .filter(|(_, t)| t.matches(&node.name, node.labels()))
            .map(|(w, _)| *w as i64)
            .sum())
    }

    fn normalize(
        &self,
        _: &CycleState,
        _: &PodInfo,
        _: &[Arc<NodeInfo>],
        scores: &mut [i64],
    ) -> Status {
        default_normalize(MAX_NODE_SCORE, false, scores);
        Status::success()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framework::Code;
    use crate::testutil::{node, pod};
    use k8s_openapi::api::core::v1::{
        NodeSelectorRequirement, NodeSelectorTerm, PreferredSchedulingTerm,
    };

    fn term(key: &str, op: &str, values: &[&str]) -> NodeSelectorTerm {
        NodeSelectorTerm {
            match_expressions: Some(vec![NodeSelectorRequirement {
                key: key.into(),
                operator: op.into(),
                values: Some(values.iter().map(|v| v.to_string()).collect()),
            }]),
            match_fields: None,
        }
    }

    fn filter(p: &PodInfo, n: &NodeInfo) -> Status {
        let mut st = CycleState::new();
        let (_, s) = NodeAffinity.pre_filter(&mut st, p, &Snapshot::default());
        if s.is_skip() {
            return Status::success();
        }
        NodeAffinity.filter(&st, p, n)
    }

    #[test]
    fn node_selector_and_required_terms() {
        let zone_a = NodeInfo::from_node(node("a").label("zone", "a").label("disk", "ssd").build());
        let zone_b = NodeInfo::from_node(node("b").label("zone", "b").build());
        let p = PodInfo::new(Arc::new(pod("p").node_selector("disk", "ssd").build()));
        assert!(filter(&p, &zone_a).is_success());
        let s = filter(&p, &zone_b);
        assert_eq!(s.code, Code::UnschedulableAndUnresolvable);
        assert_eq!(s.reasons, [ERR_REASON_POD]);

        let p = PodInfo::new(Arc::new(
            pod("p")
                .required_node_terms(vec![term("zone", "In", &["x"]), term("zone", "In", &["b"])])
                .build(),
        ));
        assert!(!filter(&p, &zone_a).is_success());
        assert!(filter(&p, &zone_b).is_success());
    }

    #[test]
    fn match_fields_narrow_nodes() {
        let t = NodeSelectorTerm {
            match_expressions: None,
            match_fields: Some(vec![NodeSelectorRequirement {
                key: "metadata.name".into(),
                operator: "In".into(),
                values: Some(vec!["b".into()]),
            }]),
        };
        let p = PodInfo::new(Arc::new(pod("p").required_node_terms(vec![t]).build()));
        let (r, s) = NodeAffinity.pre_filter(&mut CycleState::new(), &p, &Snapshot::default());
        assert!(s.is_success());
        assert_eq!(r.node_names, Some(["b".to_string()].into()));
    }

    #[test]
    fn preferred_terms_score_and_normalize() {
        let p = PodInfo::new(Arc::new(
            pod("p")
                .preferred_node_terms(vec![
                    PreferredSchedulingTerm {
                        weight: 2,
                        preference: term("zone", "In", &["a"]),
                    },
                    PreferredSchedulingTerm {
                        weight: 8,
                        preference: term("disk", "Exists", &[]),
                    },
                ])
                .build(),
        ));
        let nodes = vec![
            Arc::new(NodeInfo::from_node(node("a").label("zone", "a").build())),
            Arc::new(NodeInfo::from_node(
                node("b").label("zone", "a").label("disk", "ssd").build(),
            )),
            Arc::new(NodeInfo::from_node(node("c").build())),
        ];
        let mut st = CycleState::new();
        assert!(NodeAffinity
            .pre_score(&mut st, &p, &nodes, &Snapshot::default())
            .is_success());
        let mut scores: Vec<i64> = nodes
            .iter()
            .map(|n| NodeAffinity.score(&st, &p, n).unwrap())
            .collect();
        assert_eq!(scores, [2, 10, 0]);
        NodeAffinity.normalize(&st, &p, &nodes, &mut scores);
        assert_eq!(scores, [20, 100, 0]);
    }
}
