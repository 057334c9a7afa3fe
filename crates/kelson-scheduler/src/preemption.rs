//! DefaultPreemption: when no node fits, find nodes where evicting
//! lower-priority pods would let the pod fit, pick the cheapest, delete its
//! victims and nominate the node.

use std::sync::Arc;

use crate::framework::{
    fit_error_message, Code, CycleState, Diagnosis, Plugin, PostFilterPlugin, PostFilterResult,
    Status,
};
use crate::scheduler::{filter_with_nominated, Handle, PdbInfo, PodStatusUpdate, SchedulingEvent};
use crate::types::{NodeInfo, PodInfo};

pub const NO_VICTIMS: &str = "No preemption victims found for incoming pod";
pub const NOT_HELPFUL: &str = "Preemption is not helpful for scheduling";
const MIN_CANDIDATE_NODES_PERCENTAGE: usize = 10;
const MIN_CANDIDATE_NODES_ABSOLUTE: usize = 100;

#[derive(Debug, Default, Clone, Copy)]
pub struct DefaultPreemption;

impl Plugin for DefaultPreemption {
    fn name(&self) -> &'static str {
        "DefaultPreemption"
    }
}

/// A node where preemption would make room, with the pods to evict.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub node: String,
    /// Sorted most important first.
    pub victims: Vec<Arc<PodInfo>>,
    pub pdb_violations: usize,
}

impl PostFilterPlugin for DefaultPreemption {
    fn post_filter(
        &self,
        h: &mut Handle<'_>,
        state: &CycleState,
        pod: &Arc<PodInfo>,
        d: &Diagnosis,
    ) -> (PostFilterResult, Status) {
        let (r, s) = preempt(h, state, pod, d);
        let msg = s.message();
        if msg.is_empty() {
            return (r, s);
        }
        (r, Status::new(s.code, vec![format!("preemption: {msg}")]))
    }
}

/// Higher priority first, then the pod that started earlier.
fn more_important(a: &PodInfo, b: &PodInfo) -> std::cmp::Ordering {
    b.priority.cmp(&a.priority).then_with(|| {
        a.start_time()
            .unwrap_or(0)
            .cmp(&b.start_time().unwrap_or(0))
    })
}

fn eligible(h: &Handle<'_>, pod: &PodInfo, d: &Diagnosis) -> Result<(), &'static str> {
    let policy = pod
        .pod
        .spec
        .as_ref()
        .and_then(|s| s.preemption_policy.as_deref());
    if policy == Some("Never") {
        return Err("not eligible due to preemptionPolicy=Never.");
    }
    if let Some(nn) = pod.nominated_node_name() {
        // A pod whose nominated node became unusable may preempt again.
        if d.status_of(nn)
            .is_some_and(|s| s.code == Code::UnschedulableAndUnresolvable)
        {
            return Ok(());
        }
        if let Some(n) = h.snapshot.get(nn) {
            if n.pods
                .iter()
                .any(|p| p.priority < pod.priority && p.is_terminating())
            {
                return Err("not eligible due to a terminating pod on the nominated node.");
            }
        }
    }
    Ok(())
}

/// Splits pods (in order) into those whose eviction would violate a PDB and
/// the rest.
fn split_by_pdb(pods: &[Arc<PodInfo>], pdbs: &[PdbInfo]) -> (Vec<Arc<PodInfo>>, Vec<Arc<PodInfo>>) {
    let mut allowed: Vec<i32> = pdbs.iter().map(|p| p.disruptions_allowed).collect();
    let (mut violating, mut ok) = (Vec::new(), Vec::new());
    for p in pods {
        let mut violated = false;
        for (i, pdb) in pdbs.iter().enumerate() {
            if pdb.namespace != p.namespace
                || pdb.selector.is_empty()
                || !pdb.selector.matches(p.labels())
            {
                continue;
            }
            allowed[i] -= 1;
            if allowed[i] < 0 {
                violated = true;
            }
        }
        if violated {
            violating.push(p.clone());
        } else {
            ok.push(p.clone());
        }
    }
    (violating, ok)
}

/// Upstream's `SelectVictimsOnNode`: remove every lower-priority pod, check
/// the pod fits, then add back (reprieve) as many as possible, most
/// important first and PDB-protected pods before others.
pub fn select_victims(
    h: &Handle<'_>,
    state: &CycleState,
    pod: &PodInfo,
    node: &NodeInfo,
) -> Result<(Vec<Arc<PodInfo>>, usize), Status> {
    let fw = h.framework;
    let mut node = node.clone();
    let mut state = state.clone();
    let mut potential: Vec<Arc<PodInfo>> = node
        .pods
        .iter()
        .filter(|p| p.priority < pod.priority)
        .cloned()
        .collect();
    if potential.is_empty() {
        return Err(Status::unresolvable(NO_VICTIMS));
    }
    for v in &potential {
        node.remove_pod(&v.uid);
        let s = fw.run_pre_filter_remove_pod(&mut state, pod, v, &node);
        if !s.is_success() {
            return Err(s);
        }
    }
    let s = filter_with_nominated(fw, h.nominator, &state, pod, &node);
    if !s.is_success() {
        return Err(s);
    }
    potential.sort_by(|a, b| more_important(a, b));
    let (violating, ok) = split_by_pdb(&potential, h.pdbs);
    let mut victims = Vec::new();
    let mut violations = 0;
    let mut reprieve =
        |p: &Arc<PodInfo>, node: &mut NodeInfo, state: &mut CycleState| -> Result<bool, Status> {
            node.add_pod(p.clone());
            let s = fw.run_pre_filter_add_pod(state, pod, p, node);
            if !s.is_success() {
                return Err(s);
            }
            if filter_with_nominated(fw, h.nominator, state, pod, node).is_success() {
                return Ok(true);
            }
            node.remove_pod(&p.uid);
            let s = fw.run_pre_filter_remove_pod(state, pod, p, node);
            if !s.is_success() {
                return Err(s);
            }
            victims.push(p.clone());
            Ok(false)
        };
    for p in &violating {
        if !reprieve(p, &mut node, &mut state)? {
            violations += 1;
        }
    }
    for p in &ok {
        reprieve(p, &mut node, &mut state)?;
    }
    victims.sort_by(|a, b| more_important(a, b));
    Ok((victims, violations))
}

/// Upstream's `pickOneNodeForPreemption` criteria, in order: fewest PDB
/// violations, lowest highest-victim priority, lowest priority sum, fewest
/// victims, latest start of the highest-priority victims, first found.
pub fn pick_one(candidates: &[Candidate]) -> Option<&Candidate> {
    let key = |c: &Candidate| {
        let highest = c.victims.first().map(|v| v.priority).unwrap_or(i32::MIN);
        let sum: i64 = c
            .victims
            .iter()
            .map(|v| v.priority as i64 + i32::MAX as i64 + 1)
            .sum();
        let earliest_top = c
            .victims
            .iter()
            .filter(|v| v.priority == highest)
            .map(|v| v.start_time().unwrap_or(0))
            .min()
            .unwrap_or(0);
        (
            c.pdb_violations,
            highest,
            sum,
            c.victims.len(),
            std::cmp::Reverse(earliest_top),
        )
    };
    let mut best: Option<&Candidate> = None;
    for c in candidates {
        if best.is_none_or(|b| key(c) < key(b)) {
            best = Some(c);
        }
    }
    best
}

fn preempt(
    h: &mut Handle<'_>,
    state: &CycleState,
    pod: &Arc<PodInfo>,
    d: &Diagnosis,
) -> (PostFilterResult, Status) {
    if let Err(msg) = eligible(h, pod, d) {
        return (PostFilterResult::default(), Status::unschedulable(msg));
    }
    let all = h.snapshot.len();
    let potential: Vec<Arc<NodeInfo>> = h
        .snapshot
        .nodes
        .iter()
        .filter(|n| {
            d.status_of(&n.name)
                .is_none_or(|s| s.code != Code::UnschedulableAndUnresolvable)
        })
        .cloned()
        .collect();
    let mut statuses = Diagnosis {
        absent_status: Some(Status::unresolvable(NOT_HELPFUL)),
        ..Default::default()
    };
    let clear = PostFilterResult {
        nominated_node_name: Some(String::new()),
    };
    if potential.is_empty() {
        return (
            clear,
            Status::unschedulable(fit_error_message(all, &statuses)),
        );
    }
    let len = potential.len();
    let wanted = (len * MIN_CANDIDATE_NODES_PERCENTAGE / 100)
        .max(MIN_CANDIDATE_NODES_ABSOLUTE)
        .min(len);
    let offset = h.rng.below(len);
    let (mut ok, mut violating) = (Vec::new(), Vec::new());
    for i in 0..len {
        let node = &potential[(offset + i) % len];
        match select_victims(h, state, pod, node) {
            Ok((victims, _)) if victims.is_empty() => {
                let msg = format!("expected at least one victim pod on node {:?}", node.name);
                statuses
                    .node_statuses
                    .push((node.name.clone(), Status::error(msg)));
            }
            Ok((victims, v)) => {
                let c = Candidate {
                    node: node.name.clone(),
                    victims,
                    pdb_violations: v,
                };
                if v == 0 {
                    ok.push(c)
                } else {
                    violating.push(c)
                }
                if !ok.is_empty() && ok.len() + violating.len() >= wanted {
                    break;
                }
            }
            Err(s) if s.code == Code::Error => return (PostFilterResult::default(), s),
            Err(s) => statuses.node_statuses.push((node.name.clone(), s)),
        }
    }
    ok.extend(violating);
    let Some(best) = pick_one(&ok).cloned() else {
        return (
            clear,
            Status::unschedulable(fit_error_message(all, &statuses)),
        );
    };
    for v in &best.victims {
        if let Err(e) = h.effects.delete_pod(&v.pod) {
            return (PostFilterResult::default(), Status::error(e.to_string()));
        }
        h.effects.record_event(
            &v.pod,
            &SchedulingEvent {
                type_: "Normal",
                reason: "Preempted",
                action: "Preempting",
                message: format!("Preempted by pod {} on node {}", pod.uid, best.node),
            },
        );
    }
    // Lower-priority pods nominated to this node lose their nomination.
    let lower: Vec<Arc<PodInfo>> = h
        .nominator
        .pods_on(&best.node)
        .iter()
        .filter(|p| p.priority < pod.priority)
        .cloned()
        .collect();
    for p in lower {
        h.nominator.remove(&p.uid);
        h.effects.update_pod_status(
            &p.pod,
            &PodStatusUpdate {
                condition: None,
                nominated_node_name: Some(String::new()),
            },
        );
    }
    (
        PostFilterResult {
            nominated_node_name: Some(best.node),
        },
        Status::success(),
    )
}
