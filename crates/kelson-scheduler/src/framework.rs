//! The scheduling framework: statuses, cycle state, one trait per extension
//! point, and the `Framework` (a profile) that runs plugins in order.

use std::any::Any;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use crate::cache::Snapshot;
use crate::queue::QueuedPodInfo;
use crate::types::{NodeInfo, PodInfo};

pub const MAX_NODE_SCORE: i64 = 100;
pub const MIN_NODE_SCORE: i64 = 0;

/// Outcome class of a plugin call, as upstream's `framework.Code`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    Success,
    Error,
    /// The node does not fit now; preemption may help.
    Unschedulable,
    /// The node cannot fit whatever is preempted.
    UnschedulableAndUnresolvable,
    Wait,
    Skip,
}

/// A plugin's verdict with its reasons (shown in the FailedScheduling message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub code: Code,
    pub reasons: Vec<String>,
    /// The plugin that produced a failure.
    pub plugin: &'static str,
}

impl Status {
    pub const fn success() -> Status {
        Status {
            code: Code::Success,
            reasons: Vec::new(),
            plugin: "",
        }
    }

    pub const fn skip() -> Status {
        Status {
            code: Code::Skip,
            reasons: Vec::new(),
            plugin: "",
        }
    }

    pub fn new(code: Code, reasons: Vec<String>) -> Status {
        Status {
            code,
            reasons,
            plugin: "",
        }
    }

    pub fn unschedulable(reason: impl Into<String>) -> Status {
        Status::new(Code::Unschedulable, vec![reason.into()])
    }

    pub fn unresolvable(reason: impl Into<String>) -> Status {
        Status::new(Code::UnschedulableAndUnresolvable, vec![reason.into()])
    }

    pub fn error(msg: impl Into<String>) -> Status {
        Status::new(Code::Error, vec![msg.into()])
    }

    pub fn with_plugin(mut self, plugin: &'static str) -> Status {
        self.plugin = plugin;
        self
    }

    pub fn is_success(&self) -> bool {
        self.code == Code::Success
    }

    pub fn is_skip(&self) -> bool {
        self.code == Code::Skip
    }

    /// Unschedulable or UnschedulableAndUnresolvable.
    pub fn is_rejected(&self) -> bool {
        matches!(
            self.code,
            Code::Unschedulable | Code::UnschedulableAndUnresolvable
        )
    }

    pub fn message(&self) -> String {
        self.reasons.join(", ")
    }
}

/// Data a plugin stores in the cycle state; cloned when preemption simulates
/// removing pods.
pub trait StateData: Any + Send + Sync {
    fn clone_box(&self) -> Box<dyn StateData>;
    fn as_any(&self) -> &dyn Any;
    fn as_any_mut(&mut self) -> &mut dyn Any;
}

impl<T: Any + Clone + Send + Sync> StateData for T {
    fn clone_box(&self) -> Box<dyn StateData> {
        Box::new(self.clone())
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

/// Per-cycle storage shared by the plugins of one pod's scheduling attempt.
#[derive(Default)]
pub struct CycleState {
    slots: Vec<(&'static str, Box<dyn StateData>)>,
    /// Plugins whose PreFilter returned Skip: their Filter is not run.
    pub skip_filter: BTreeSet<&'static str>,
    /// Plugins whose PreScore returned Skip: their Score is not run.
    pub skip_score: BTreeSet<&'static str>,
    /// `skip_filter` as a bit per filter plugin (by index), set by
    /// PreFilter: Filter runs once per node, and name lookups there were a
    /// measurable part of a cycle over thousands of nodes.
    filter_skip_mask: Option<u64>,
}

impl Clone for CycleState {
    fn clone(&self) -> Self {
        CycleState {
            slots: self
                .slots
                .iter()
                .map(|(k, v)| (*k, (**v).clone_box()))
                .collect(),
            skip_filter: self.skip_filter.clone(),
            skip_score: self.skip_score.clone(),
            filter_skip_mask: self.filter_skip_mask,
        }
    }
}

impl CycleState {
    pub fn new() -> CycleState {
        CycleState::default()
    }

    pub fn write<T: StateData>(&mut self, key: &'static str, value: T) {
        let boxed: Box<dyn StateData> = Box::new(value);
        match self.slots.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = boxed,
            None => self.slots.push((key, boxed)),
        }
    }

    pub fn read<T: 'static>(&self, key: &str) -> Option<&T> {
        self.slots
            .iter()
            .find(|(k, _)| *k == key)
            .and_then(|(_, v)| v.as_ref().as_any().downcast_ref::<T>())
    }

    pub fn read_mut<T: 'static>(&mut self, key: &str) -> Option<&mut T> {
        self.slots
            .iter_mut()
            .find(|(k, _)| *k == key)
            .and_then(|(_, v)| v.as_mut().as_any_mut().downcast_mut::<T>())
    }
}

/// What a cluster change touched, for re-queueing unschedulable pods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventResource {
    /// A pod assigned to a node.
    AssignedPod,
    Node,
    /// PodDisruptionBudgets, namespaces and other objects.
    Other,
}

/// Action bits (upstream's `ActionType`).
pub mod action {
    pub const ADD: u32 = 1;
    pub const DELETE: u32 = 1 << 1;
    pub const UPDATE_NODE_ALLOCATABLE: u32 = 1 << 2;
    pub const UPDATE_NODE_LABEL: u32 = 1 << 3;
    pub const UPDATE_NODE_TAINT: u32 = 1 << 4;
    pub const UPDATE_NODE_CONDITION: u32 = 1 << 5;
    pub const UPDATE_POD_LABEL: u32 = 1 << 6;
    /// A pod's requests went down (in-place resize).
    pub const UPDATE_POD_SCALE_DOWN: u32 = 1 << 7;
    pub const UPDATE: u32 = UPDATE_NODE_ALLOCATABLE
        | UPDATE_NODE_LABEL
        | UPDATE_NODE_TAINT
        | UPDATE_NODE_CONDITION
        | UPDATE_POD_LABEL
        | UPDATE_POD_SCALE_DOWN;
    pub const ALL: u32 = ADD | DELETE | UPDATE;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClusterEvent {
    pub resource: EventResource,
    pub actions: u32,
}

impl ClusterEvent {
    pub const fn new(resource: EventResource, actions: u32) -> ClusterEvent {
        ClusterEvent { resource, actions }
    }

    /// Whether `self` (a registration) covers the event `e`.
    pub fn covers(&self, e: &ClusterEvent) -> bool {
        self.resource == e.resource && self.actions & e.actions != 0
    }
}

pub trait Plugin: Send + Sync {
    fn name(&self) -> &'static str;
    /// Cluster events that could make a pod this plugin rejected schedulable.
    fn events_to_register(&self) -> Vec<ClusterEvent> {
        Vec::new()
    }
}

pub trait QueueSortPlugin: Plugin {
    fn less(&self, a: &QueuedPodInfo, b: &QueuedPodInfo) -> bool;
}

/// Node names a PreFilter restricts the pod to (`None` = all nodes).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PreFilterResult {
    pub node_names: Option<BTreeSet<String>>,
}

pub trait PreFilterPlugin: Plugin {
    fn pre_filter(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        snap: &Snapshot,
    ) -> (PreFilterResult, Status);
    /// Whether `add_pod`/`remove_pod` are implemented (preemption support).
    fn has_extensions(&self) -> bool {
        false
    }
    /// Updates the pre-filter state as if `other` were added to `node`.
    fn add_pod(
        &self,
        _state: &mut CycleState,
        _pod: &PodInfo,
        _other: &PodInfo,
        _node: &NodeInfo,
    ) -> Status {
        Status::success()
    }
    /// Updates the pre-filter state as if `other` were removed from `node`.
    fn remove_pod(
        &self,
        _state: &mut CycleState,
        _pod: &PodInfo,
        _other: &PodInfo,
        _node: &NodeInfo,
    ) -> Status {
        Status::success()
    }
}

pub trait FilterPlugin: Plugin {
    fn filter(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status;
}

/// Result of PostFilter: the node the pod is nominated to (`Some("")` clears).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PostFilterResult {
    pub nominated_node_name: Option<String>,
}

pub trait PostFilterPlugin: Plugin {
    fn post_filter(
        &self,
        handle: &mut crate::scheduler::Handle<'_>,
        state: &CycleState,
        pod: &Arc<PodInfo>,
        diagnosis: &Diagnosis,
    ) -> (PostFilterResult, Status);
}

pub trait PreScorePlugin: Plugin {
    fn pre_score(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        nodes: &[Arc<NodeInfo>],
        snap: &Snapshot,
    ) -> Status;
}

pub trait ScorePlugin: Plugin {
    fn score(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Result<i64, Status>;
    /// Rescales raw scores (parallel to `nodes`) to 0..=MAX_NODE_SCORE.
    fn normalize(
        &self,
        _state: &CycleState,
        _pod: &PodInfo,
        _nodes: &[Arc<NodeInfo>],
        _scores: &mut [i64],
    ) -> Status {
        Status::success()
    }
}

pub trait ReservePlugin: Plugin {
    fn reserve(&self, state: &mut CycleState, pod: &PodInfo, node: &str) -> Status;
    fn unreserve(&self, state: &mut CycleState, pod: &PodInfo, node: &str);
}

pub trait PermitPlugin: Plugin {
    /// Success allows, a rejection fails the pod; Wait (with a timeout) is
    /// treated as a rejection for now (no waiting-pods map yet).
    fn permit(&self, state: &mut CycleState, pod: &PodInfo, node: &str) -> (Status, Duration);
}

pub trait BindPlugin: Plugin {
    /// Skip passes the pod to the next bind plugin.
    fn bind(
        &self,
        state: &CycleState,
        pod: &PodInfo,
        node: &str,
        effects: &dyn crate::scheduler::SchedulerEffects,
    ) -> Status;
}

/// Why each node was rejected in one cycle.
#[derive(Debug, Clone, Default)]
pub struct Diagnosis {
    /// Statuses of evaluated nodes that were rejected, by node name.
    pub node_statuses: Vec<(String, Status)>,
    /// Status of nodes not evaluated (PreFilter narrowed or rejected).
    pub absent_status: Option<Status>,
    pub unschedulable_plugins: BTreeSet<&'static str>,
    pub pre_filter_msg: String,
    pub post_filter_msg: String,
}

impl Diagnosis {
    pub fn status_of(&self, node: &str) -> Option<&Status> {
        self.node_statuses
            .iter()
            .find(|(n, _)| n == node)
            .map(|(_, s)| s)
            .or(self.absent_status.as_ref())
    }
}

/// Upstream's FitError message: "0/N nodes are available: <reasons>."
pub fn fit_error_message(num_all_nodes: usize, d: &Diagnosis) -> String {
    let mut msg = format!("0/{num_all_nodes} nodes are available:");
    if !d.pre_filter_msg.is_empty() {
        msg.push_str(&format!(" {}.", d.pre_filter_msg));
    } else {
        let mut counts: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
        for (_, s) in &d.node_statuses {
            for r in &s.reasons {
                *counts.entry(r.as_str()).or_default() += 1;
            }
        }
        if d.node_statuses.len() < num_all_nodes {
            if let Some(abs) = &d.absent_status {
                for r in &abs.reasons {
                    *counts.entry(r.as_str()).or_default() += num_all_nodes - d.node_statuses.len();
                }
            }
        }
        // Upstream sorts the formatted "<count> <reason>" strings.
        let mut parts: Vec<String> = counts
            .into_iter()
            .map(|(r, n)| format!("{n} {r}"))
            .collect();
        parts.sort();
        if !parts.is_empty() {
            msg.push_str(&format!(" {}.", parts.join(", ")));
        }
    }
    if !d.post_filter_msg.is_empty() {
        msg.push_str(&format!(" {}.", d.post_filter_msg));
    }
    msg
}

/// A scheduling profile: the plugins enabled at each extension point.
pub struct Framework {
    pub scheduler_name: String,
    pub queue_sort: Arc<dyn QueueSortPlugin>,
    pub pre_filter: Vec<Arc<dyn PreFilterPlugin>>,
    pub filter: Vec<Arc<dyn FilterPlugin>>,
    pub post_filter: Vec<Arc<dyn PostFilterPlugin>>,
    pub pre_score: Vec<Arc<dyn PreScorePlugin>>,
    /// Score plugins with their weights.
    pub score: Vec<(Arc<dyn ScorePlugin>, i64)>,
    pub reserve: Vec<Arc<dyn ReservePlugin>>,
    pub permit: Vec<Arc<dyn PermitPlugin>>,
    pub bind: Vec<Arc<dyn BindPlugin>>,
    /// `None`: adaptive (50% - nodes/125, at least 5%).
    pub percentage_of_nodes_to_score: Option<u32>,
    /// Events each plugin registered, by plugin name.
    pub events: Vec<(&'static str, Vec<ClusterEvent>)>,
}

impl Framework {
    /// An empty profile with the given queue sort plugin.
    pub fn new(scheduler_name: &str, queue_sort: Arc<dyn QueueSortPlugin>) -> Framework {
        Framework {
            scheduler_name: scheduler_name.to_string(),
            queue_sort,
            pre_filter: Vec::new(),
            filter: Vec::new(),
            post_filter: Vec::new(),
            pre_score: Vec::new(),
            score: Vec::new(),
            reserve: Vec::new(),
            permit: Vec::new(),
            bind: Vec::new(),
            percentage_of_nodes_to_score: None,
            events: Vec::new(),
        }
    }

    /// Records a plugin's event registrations (call once per plugin).
    pub fn register_events(&mut self, p: &dyn Plugin) {
        if !self.events.iter().any(|(n, _)| *n == p.name()) {
            self.events.push((p.name(), p.events_to_register()));
        }
    }

    /// Runs PreFilter plugins; returns the merged node restriction.
    pub fn run_pre_filter(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        snap: &Snapshot,
    ) -> (PreFilterResult, Status) {
        let mut result = PreFilterResult::default();
        let mut narrowing: Vec<&'static str> = Vec::new();
        for p in &self.pre_filter {
            let (r, s) = p.pre_filter(state, pod, snap);
            if s.is_skip() {
                state.skip_filter.insert(p.name());
                continue;
            }
            if !s.is_success() {
                return (result, s.with_plugin(p.name()));
            }
            if let Some(names) = r.node_names {
                narrowing.push(p.name());
                result.node_names = Some(match result.node_names {
                    None => names,
                    Some(prev) => prev.intersection(&names).cloned().collect(),
                });
                if result.node_names.as_ref().is_some_and(|n| n.is_empty()) {
                    let msg = format!(
                        "node(s) didn't satisfy plugin(s) [{}] simultaneously",
                        narrowing.join(" ")
                    );
                    return (result, Status::unresolvable(msg).with_plugin(p.name()));
                }
            }
        }
        let mut mask = 0u64;
        for (i, p) in self.filter.iter().enumerate().take(64) {
            if state.skip_filter.contains(p.name()) {
                mask |= 1 << i;
            }
        }
        state.filter_skip_mask = Some(mask);
        (result, Status::success())
    }

    /// Runs Filter plugins on one node, stopping at the first rejection.
    #[inline]
    pub fn run_filter(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        for (i, p) in self.filter.iter().enumerate() {
            let skip = match state.filter_skip_mask {
                Some(mask) if i < 64 => mask & (1 << i) != 0,
                _ => !state.skip_filter.is_empty() && state.skip_filter.contains(p.name()),
            };
            if skip {
                continue;
            }
            let s = p.filter(state, pod, node);
            if !s.is_success() {
                return s.with_plugin(p.name());
            }
        }
        Status::success()
    }

    pub fn run_pre_filter_add_pod(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        other: &PodInfo,
        node: &NodeInfo,
    ) -> Status {
        for p in &self.pre_filter {
            if !p.has_extensions() || state.skip_filter.contains(p.name()) {
                continue;
            }
            let s = p.add_pod(state, pod, other, node);
            if !s.is_success() {
                return s.with_plugin(p.name());
            }
        }
        Status::success()
    }

    pub fn run_pre_filter_remove_pod(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        other: &PodInfo,
        node: &NodeInfo,
    ) -> Status {
        for p in &self.pre_filter {
            if !p.has_extensions() || state.skip_filter.contains(p.name()) {
                continue;
            }
            let s = p.remove_pod(state, pod, other, node);
            if !s.is_success() {
                return s.with_plugin(p.name());
            }
        }
        Status::success()
    }

    /// Runs PreScore and Score plugins; returns the weighted total per node.
    pub fn run_score(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        nodes: &[Arc<NodeInfo>],
        snap: &Snapshot,
    ) -> Result<Vec<i64>, Status> {
        for p in &self.pre_score {
            let s = p.pre_score(state, pod, nodes, snap);
            if s.is_skip() {
                state.skip_score.insert(p.name());
            } else if !s.is_success() {
                return Err(s.with_plugin(p.name()));
            }
        }
        let mut totals = vec![0i64; nodes.len()];
        let mut scores = vec![0i64; nodes.len()];
        for (p, weight) in &self.score {
            if state.skip_score.contains(p.name()) {
                continue;
            }
            for (i, n) in nodes.iter().enumerate() {
                scores[i] = p
                    .score(state, pod, n)
                    .map_err(|s| s.with_plugin(p.name()))?;
            }
            let s = p.normalize(state, pod, nodes, &mut scores);
            if !s.is_success() {
                return Err(s.with_plugin(p.name()));
            }
            for (t, s) in totals.iter_mut().zip(&scores) {
                *t += s * weight;
            }
        }
        Ok(totals)
    }
}

/// Upstream's `DefaultNormalizeScore`: scales to 0..=max by the highest
/// score, optionally reversed.
pub fn default_normalize(max_priority: i64, reverse: bool, scores: &mut [i64]) {
    let max = scores.iter().copied().max().unwrap_or(0);
    if max == 0 {
        if reverse {
            scores.iter_mut().for_each(|s| *s = max_priority);
        }
        return;
    }
    for s in scores.iter_mut() {
        let mut v = max_priority * *s / max;
        if reverse {
            v = max_priority - v;
        }
        *s = v;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fit_error_message_counts_and_sorts_reasons() {
        let d = Diagnosis {
            node_statuses: vec![
                (
                    "a".into(),
                    Status::new(
                        Code::Unschedulable,
                        vec!["Insufficient cpu".into(), "Insufficient memory".into()],
                    ),
                ),
                ("b".into(), Status::unschedulable("Insufficient cpu")),
                (
                    "c".into(),
                    Status::unresolvable("node(s) had untolerated taint {dedicated: gpu}"),
                ),
            ],
            ..Default::default()
        };
        assert_eq!(
            fit_error_message(3, &d),
            "0/3 nodes are available: 1 Insufficient memory, 1 node(s) had untolerated taint {dedicated: gpu}, 2 Insufficient cpu."
        );
        let d = Diagnosis {
            pre_filter_msg: "boom".into(),
            post_filter_msg: "preemption: x.".into(),
            ..Default::default()
        };
        assert_eq!(
            fit_error_message(2, &d),
            "0/2 nodes are available: boom. preemption: x.."
        );
    }

    #[test]
    fn default_normalize_scales_and_reverses() {
        let mut s = [0, 2, 4];
        default_normalize(100, false, &mut s);
        assert_eq!(s, [0, 50, 100]);
        let mut s = [0, 2, 4];
        default_normalize(100, true, &mut s);
        assert_eq!(s, [100, 50, 0]);
        let mut s = [0, 0];
        default_normalize(100, true, &mut s);
        assert_eq!(s, [100, 100]);
    }

    #[test]
    fn cycle_state_clones_data() {
        let mut st = CycleState::new();
        st.write("k", 5u32);
        let mut c = st.clone();
        *c.read_mut::<u32>("k").unwrap() = 7;
        assert_eq!(st.read::<u32>("k"), Some(&5));
        assert_eq!(c.read::<u32>("k"), Some(&7));
    }
}
