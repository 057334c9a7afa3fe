//! The scheduler: feeds cluster events into the cache and queue, runs the
//! scheduling cycle (filter → score → select → reserve → permit → bind)
//! and reports results through [`SchedulerEffects`].

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Namespace, Node, Pod, PodCondition};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;

use crate::cache::{Cache, Snapshot};
use crate::framework::{
    action, fit_error_message, ClusterEvent, Code, CycleState, Diagnosis, EventResource, Framework,
    PostFilterResult, Status,
};
use crate::queue::{Clock, QueuedPodInfo, SchedulingQueue, SystemClock};
use crate::selectors::LabelSelector;
use crate::types::{NodeInfo, PodInfo};

pub const DEFAULT_SCHEDULER_NAME: &str = "default-scheduler";
const MIN_FEASIBLE_NODES_TO_FIND: usize = 100;
const MIN_FEASIBLE_NODES_PERCENTAGE_TO_FIND: usize = 5;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EffectError {
    #[error("{0}")]
    Failed(String),
}

/// An Event to record on a pod (upstream's events.k8s.io fields).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchedulingEvent {
    /// "Normal" or "Warning".
    pub type_: &'static str,
    pub reason: &'static str,
    pub action: &'static str,
    pub message: String,
}

/// A pod status change: the PodScheduled condition and/or nominatedNodeName
/// (`Some("")` clears it).
#[derive(Debug, Clone, PartialEq)]
pub struct PodStatusUpdate {
    pub condition: Option<PodCondition>,
    pub nominated_node_name: Option<String>,
}

/// Side effects of scheduling. The kube-rs wiring implements these with API
/// calls; they may be queued and run asynchronously, reporting a failed
/// binding back through [`Scheduler::on_binding_failed`].
pub trait SchedulerEffects: Send + Sync {
    /// POST pods/binding.
    fn bind(&self, pod: &Pod, node: &str) -> Result<(), EffectError>;
    fn record_event(&self, pod: &Pod, event: &SchedulingEvent);
    /// PATCH pods/status.
    fn update_pod_status(&self, pod: &Pod, update: &PodStatusUpdate);
    /// Deletes a preemption victim.
    fn delete_pod(&self, victim: &Pod) -> Result<(), EffectError>;
}

/// A PodDisruptionBudget as preemption uses it.
#[derive(Debug, Clone)]
pub struct PdbInfo {
    pub namespace: String,
    pub name: String,
    pub selector: LabelSelector,
    pub disruptions_allowed: i32,
}

/// Pods nominated to nodes by preemption, counted as if running there when
/// lower- or equal-priority pods are filtered.
#[derive(Debug, Default)]
pub struct Nominator {
    by_node: HashMap<String, Vec<Arc<PodInfo>>>,
    by_uid: HashMap<String, String>,
}

impl Nominator {
    pub fn add(&mut self, pod: Arc<PodInfo>, node: &str) {
        self.remove(&pod.uid);
        self.by_uid.insert(pod.uid.clone(), node.to_string());
        self.by_node.entry(node.to_string()).or_default().push(pod);
    }

    pub fn remove(&mut self, uid: &str) {
        if let Some(node) = self.by_uid.remove(uid) {
            if let Some(v) = self.by_node.get_mut(&node) {
                v.retain(|p| p.uid != uid);
                if v.is_empty() {
                    self.by_node.remove(&node);
                }
            }
        }
    }

    pub fn pods_on(&self, node: &str) -> &[Arc<PodInfo>] {
        self.by_node.get(node).map(Vec::as_slice).unwrap_or(&[])
    }

    pub fn node_of(&self, uid: &str) -> Option<&str> {
        self.by_uid.get(uid).map(String::as_str)
    }

    pub fn is_empty(&self) -> bool {
        self.by_node.is_empty()
    }
}

/// Small deterministic PRNG (xorshift64*) for tie-breaking and sampling.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in 0..n (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
}

/// What plugins at PostFilter may use.
pub struct Handle<'a> {
    pub framework: &'a Framework,
    pub snapshot: &'a Snapshot,
    pub nominator: &'a mut Nominator,
    pub pdbs: &'a [PdbInfo],
    pub effects: &'a dyn SchedulerEffects,
    pub rng: &'a mut Rng,
}

/// Runs filters with higher-or-equal-priority pods nominated to the node
/// counted as present (and again without them, as upstream), so space freed
/// by preemption is not taken by others.
pub fn filter_with_nominated(
    fw: &Framework,
    nominator: &Nominator,
    state: &CycleState,
    pod: &PodInfo,
    node: &NodeInfo,
) -> Status {
    if nominator.is_empty() {
        return fw.run_filter(state, pod, node);
    }
    let nominated: Vec<&Arc<PodInfo>> = nominator
        .pods_on(&node.name)
        .iter()
        .filter(|p| p.uid != pod.uid && p.priority >= pod.priority)
        .collect();
    if nominated.is_empty() {
        return fw.run_filter(state, pod, node);
    }
    let mut node2 = node.clone();
    let mut state2 = state.clone();
    for p in nominated {
        node2.add_pod(p.clone());
        let s = fw.run_pre_filter_add_pod(&mut state2, pod, p, &node2);
        if !s.is_success() {
            return s;
        }
    }
    let s = fw.run_filter(&state2, pod, &node2);
    if !s.is_success() {
        return s;
    }
    fw.run_filter(state, pod, node)
}

/// Result of one `schedule_one` call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScheduleOutcome {
    Scheduled {
        pod: String,
        node: String,
    },
    Unschedulable {
        pod: String,
        message: String,
        nominated_node: Option<String>,
    },
    Error {
        pod: String,
        message: String,
    },
}

enum CycleError {
    Fit {
        num_nodes: usize,
        diagnosis: Box<Diagnosis>,
    },
    NoNodes,
    Error(String),
}

fn responsible_for(pod: &Pod, scheduler_name: &str) -> bool {
    let name = pod
        .spec
        .as_ref()
        .and_then(|s| s.scheduler_name.as_deref())
        .filter(|n| !n.is_empty());
    name.unwrap_or(DEFAULT_SCHEDULER_NAME) == scheduler_name
}

fn is_assigned(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .is_some_and(|n| !n.is_empty())
}

fn is_terminal(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded") | Some("Failed")
    )
}

fn pod_key(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or(""),
        pod.metadata.name.as_deref().unwrap_or("")
    )
}

/// Upstream's adaptive sampling: all nodes below 100, else
/// max(100, nodes × (50 − nodes/125)%, at least 5%).
pub fn num_feasible_nodes_to_find(percentage: Option<u32>, num_all_nodes: usize) -> usize {
    if num_all_nodes < MIN_FEASIBLE_NODES_TO_FIND {
        return num_all_nodes;
    }
    let pct = match percentage {
        Some(p) if p > 0 => (p as usize).min(100),
        _ => {
            (50usize.saturating_sub(num_all_nodes / 125)).max(MIN_FEASIBLE_NODES_PERCENTAGE_TO_FIND)
        }
    };
    (num_all_nodes * pct / 100).max(MIN_FEASIBLE_NODES_TO_FIND)
}

pub struct Scheduler<E: SchedulerEffects> {
    framework: Framework,
    effects: E,
    cache: Cache,
    snapshot: Snapshot,
    queue: SchedulingQueue,
    nominator: Nominator,
    pdbs: Vec<PdbInfo>,
    next_start_node_index: usize,
    rng: Rng,
}

impl<E: SchedulerEffects> Scheduler<E> {
    pub fn new(framework: Framework, effects: E) -> Scheduler<E> {
        Scheduler::with_clock(framework, effects, Arc::new(SystemClock))
    }

    pub fn with_clock(framework: Framework, effects: E, clock: Arc<dyn Clock>) -> Scheduler<E> {
        let queue = SchedulingQueue::new(
            framework.queue_sort.clone(),
            clock,
            framework.events.clone(),
        );
        Scheduler {
            framework,
            effects,
            cache: Cache::new(),
            snapshot: Snapshot::default(),
            queue,
            nominator: Nominator::default(),
            pdbs: Vec::new(),
            next_start_node_index: 0,
            rng: Rng::new(0x5eed),
        }
    }

    pub fn effects(&self) -> &E {
        &self.effects
    }

    pub fn queue(&self) -> &SchedulingQueue {
        &self.queue
    }

    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    pub fn scheduler_name(&self) -> &str {
        &self.framework.scheduler_name
    }

    /// A pod was added or changed (informer Add/Update).
    pub fn on_pod_upsert(&mut self, pod: Pod) {
        let key = pod_key(&pod);
        if is_assigned(&pod) {
            // Bound (by us or anyone): it leaves the queue and occupies its node.
            self.queue.delete(&key);
            let info = Arc::new(PodInfo::new(Arc::new(pod)));
            self.nominator.remove(&info.uid);
            let old = self.cache.pod(&info.uid);
            let terminal = is_terminal(&info.pod);
            self.cache.add_or_update_pod(info.clone());
            let actions = match (&old, terminal) {
                (_, true) => action::DELETE,
                (None, _) => action::ADD,
                (Some(old), _) => {
                    let mut a = 0;
                    if old.labels() != info.labels() {
                        a |= action::UPDATE_POD_LABEL;
                    }
                    let (o, n) = (&old.requests, &info.requests);
                    if n.milli_cpu < o.milli_cpu
                        || n.memory < o.memory
                        || n.ephemeral_storage < o.ephemeral_storage
                    {
                        a |= action::UPDATE_POD_SCALE_DOWN;
                    }
                    a
                }
            };
            if actions != 0 {
                self.queue
                    .move_on_event(ClusterEvent::new(EventResource::AssignedPod, actions));
            }
            return;
        }
        if !responsible_for(&pod, &self.framework.scheduler_name) {
            return;
        }
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        if self.cache.is_assumed(&uid) {
            // Our own binding is in flight; the bound update will follow.
            return;
        }
        if pod.metadata.deletion_timestamp.is_some() || is_terminal(&pod) {
            self.queue.delete(&key);
            self.nominator.remove(&uid);
            return;
        }
        let info = Arc::new(PodInfo::new(Arc::new(pod)));
        match info.nominated_node_name() {
            Some(n) => self.nominator.add(info.clone(), n),
            None => self.nominator.remove(&uid),
        }
        if self.queue.contains(&key) {
            self.queue.update(info);
        } else {
            self.queue.add(info);
        }
    }

    /// A pod was deleted.
    pub fn on_pod_delete(&mut self, pod: &Pod) {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        self.queue.delete(&pod_key(pod));
        self.nominator.remove(&uid);
        if self.cache.contains_pod(&uid) {
            self.cache.remove_pod(&uid);
            self.queue.move_on_event(ClusterEvent::new(
                EventResource::AssignedPod,
                action::DELETE,
            ));
        }
    }

    /// A binding issued through the effects failed asynchronously: the pod is
    /// forgotten and retried after backoff.
    pub fn on_binding_failed(&mut self, pod: &Pod, message: &str) {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        if self.cache.forget_pod(&uid).is_ok() {
            let info = Arc::new(PodInfo::new(Arc::new(pod.clone())));
            self.effects
                .record_event(pod, &failed_event(message.to_string()));
            self.queue.add(info);
        }
    }

    pub fn on_node_upsert(&mut self, node: Node) {
        let name = node.metadata.name.clone().unwrap_or_default();
        let actions = match self.cache.node(&name).and_then(|n| n.node.clone()) {
            None => action::ADD,
            Some(old) => node_update_actions(&old, &node),
        };
        self.cache.add_or_update_node(node);
        if actions != 0 {
            self.queue
                .move_on_event(ClusterEvent::new(EventResource::Node, actions));
        }
    }

    pub fn on_node_delete(&mut self, name: &str) {
        self.cache.remove_node(name);
        self.queue
            .move_on_event(ClusterEvent::new(EventResource::Node, action::DELETE));
    }

    pub fn on_pdb_upsert(&mut self, pdb: &PodDisruptionBudget) {
        let ns = pdb.metadata.namespace.clone().unwrap_or_default();
        let name = pdb.metadata.name.clone().unwrap_or_default();
        self.pdbs.retain(|p| !(p.namespace == ns && p.name == name));
        let selector = pdb
            .spec
            .as_ref()
            .and_then(|s| s.selector.as_ref())
            .filter(|s| {
                s.match_labels.as_ref().is_some_and(|m| !m.is_empty())
                    || s.match_expressions.as_ref().is_some_and(|m| !m.is_empty())
            });
        // A PDB with an empty or invalid selector matches no pods.
        let selector = match selector.map(|s| LabelSelector::compile(Some(s))) {
            Some(Ok(s)) => s,
            _ => LabelSelector::nothing(),
        };
        let disruptions_allowed = pdb
            .status
            .as_ref()
            .map(|s| s.disruptions_allowed)
            .unwrap_or(0);
        self.pdbs.push(PdbInfo {
            namespace: ns,
            name,
            selector,
            disruptions_allowed,
        });
    }

    pub fn on_pdb_delete(&mut self, namespace: &str, name: &str) {
        self.pdbs
            .retain(|p| !(p.namespace == namespace && p.name == name));
    }

    /// Namespace labels, for pod affinity terms with a namespaceSelector.
    pub fn on_namespace_upsert(&mut self, ns: &Namespace) {
        let name = ns.metadata.name.clone().unwrap_or_default();
        self.cache
            .set_namespace_labels(&name, Some(ns.metadata.labels.clone().unwrap_or_default()));
        self.queue
            .move_on_event(ClusterEvent::new(EventResource::Other, action::ALL));
    }

    /// No requeue: default spreading only scores, it never made a pod
    /// unschedulable.
    pub fn on_spread_selector(
        &mut self,
        namespace: &str,
        id: &str,
        selector: Option<crate::selectors::LabelSelector>,
    ) {
        self.cache.set_spread_selector(namespace, id, selector);
    }

    pub fn on_namespace_delete(&mut self, name: &str) {
        self.cache.set_namespace_labels(name, None);
    }

    /// Moves due backoffs and stale unschedulable pods to the active queue.
    pub fn flush_queues(&mut self) {
        self.queue.flush();
    }

    /// Schedules every pod that is ready now; returns how many were attempted.
    pub fn run_until_idle(&mut self) -> usize {
        let mut n = 0;
        while self.schedule_one().is_some() {
            n += 1;
        }
        n
    }

    /// Pops one pod and runs a scheduling cycle for it; `None` when the
    /// active queue is empty.
    pub fn schedule_one(&mut self) -> Option<ScheduleOutcome> {
        self.queue.flush();
        let q = self.queue.pop()?;
        let cycle = self.queue.scheduling_cycle();
        let pod = q.info.clone();
        self.cache.update_snapshot(&mut self.snapshot);
        let mut state = CycleState::new();
        let node = match self.schedule_pod(&mut state, &pod) {
            Ok(node) => node,
            Err(CycleError::NoNodes) => {
                let msg = "no nodes available to schedule pods".to_string();
                return Some(self.fail(q, cycle, false, msg, None, BTreeSet::new()));
            }
            Err(CycleError::Error(msg)) => {
                return Some(self.fail(q, cycle, true, msg, None, BTreeSet::new()))
            }
            Err(CycleError::Fit {
                num_nodes,
                mut diagnosis,
            }) => {
                let (result, status) = self.run_post_filter(&state, &pod, &diagnosis);
                if !status.is_success() && status.code != Code::Error {
                    diagnosis.post_filter_msg = status.message();
                }
                let msg = fit_error_message(num_nodes, &diagnosis);
                let plugins = diagnosis.unschedulable_plugins.clone();
                return Some(self.fail(q, cycle, false, msg, result.nominated_node_name, plugins));
            }
        };

        // Assume, then reserve / permit / bind.
        if let Err(e) = self.cache.assume_pod(pod.clone(), &node) {
            return Some(self.fail(q, cycle, true, e.to_string(), None, BTreeSet::new()));
        }
        let fw = &self.framework;
        for (i, p) in fw.reserve.iter().enumerate() {
            let s = p.reserve(&mut state, &pod, &node);
            if !s.is_success() {
                for r in fw.reserve[..=i].iter().rev() {
                    r.unreserve(&mut state, &pod, &node);
                }
                let _ = self.cache.forget_pod(&pod.uid);
                let msg = format!("running Reserve plugin {:?}: {}", p.name(), s.message());
                let plugins = BTreeSet::from([p.name()]);
                return Some(self.fail(q, cycle, !s.is_rejected(), msg, None, plugins));
            }
        }
        for p in &fw.permit {
            let (s, _timeout) = p.permit(&mut state, &pod, &node);
            if !s.is_success() {
                for r in fw.reserve.iter().rev() {
                    r.unreserve(&mut state, &pod, &node);
                }
                let _ = self.cache.forget_pod(&pod.uid);
                let msg = if s.code == Code::Wait {
                    format!(
                        "pod {:?} rejected while waiting on permit: waiting is not supported",
                        pod.name
                    )
                } else {
                    s.message()
                };
                let plugins = BTreeSet::from([p.name()]);
                return Some(self.fail(q, cycle, s.code == Code::Error, msg, None, plugins));
            }
        }
        let mut bound = Status::error("no bind plugin bound the pod");
        for b in &fw.bind {
            let s = b.bind(&state, &pod, &node, &self.effects);
            if s.is_skip() {
                continue;
            }
            bound = if s.is_success() {
                s
            } else {
                Status::error(format!(
                    "running Bind plugin {:?}: {}",
                    b.name(),
                    s.message()
                ))
            };
            break;
        }
        if !bound.is_success() {
            for r in fw.reserve.iter().rev() {
                r.unreserve(&mut state, &pod, &node);
            }
            let _ = self.cache.forget_pod(&pod.uid);
            return Some(self.fail(q, cycle, true, bound.message(), None, BTreeSet::new()));
        }
        self.nominator.remove(&pod.uid);
        self.effects.record_event(
            &pod.pod,
            &SchedulingEvent {
                type_: "Normal",
                reason: "Scheduled",
                action: "Binding",
                message: format!(
                    "Successfully assigned {}/{} to {}",
                    pod.namespace, pod.name, node
                ),
            },
        );
        Some(ScheduleOutcome::Scheduled {
            pod: pod.key(),
            node,
        })
    }

    fn run_post_filter(
        &mut self,
        state: &CycleState,
        pod: &Arc<PodInfo>,
        d: &Diagnosis,
    ) -> (PostFilterResult, Status) {
        let mut handle = Handle {
            framework: &self.framework,
            snapshot: &self.snapshot,
            nominator: &mut self.nominator,
            pdbs: &self.pdbs,
            effects: &self.effects,
            rng: &mut self.rng,
        };
        let mut last = (PostFilterResult::default(), Status::unschedulable(""));
        for p in &self.framework.post_filter {
            let (r, s) = p.post_filter(&mut handle, state, pod, d);
            if s.is_success() || !s.is_rejected() {
                return (r, s);
            }
            last = (r, s);
        }
        if self.framework.post_filter.is_empty() {
            return (PostFilterResult::default(), Status::success());
        }
        last
    }

    fn fail(
        &mut self,
        mut q: QueuedPodInfo,
        cycle: u64,
        error: bool,
        message: String,
        nominated: Option<String>,
        plugins: BTreeSet<&'static str>,
    ) -> ScheduleOutcome {
        let pod = q.info.clone();
        self.effects
            .record_event(&pod.pod, &failed_event(message.clone()));
        let reason = if error {
            "SchedulerError"
        } else {
            "Unschedulable"
        };
        let condition = PodCondition {
            type_: "PodScheduled".into(),
            status: "False".into(),
            reason: Some(reason.into()),
            message: Some(message.clone()),
            ..Default::default()
        };
        self.effects.update_pod_status(
            &pod.pod,
            &PodStatusUpdate {
                condition: Some(condition),
                nominated_node_name: nominated.clone(),
            },
        );
        match nominated.as_deref() {
            Some("") => self.nominator.remove(&pod.uid),
            Some(n) => self.nominator.add(pod.clone(), n),
            None => {}
        }
        q.unschedulable_plugins = plugins.into_iter().collect();
        let key = pod.key();
        self.queue.add_unschedulable(q, cycle, error);
        if error {
            ScheduleOutcome::Error { pod: key, message }
        } else {
            ScheduleOutcome::Unschedulable {
                pod: key,
                message,
                nominated_node: nominated.filter(|n| !n.is_empty()),
            }
        }
    }

    fn schedule_pod(
        &mut self,
        state: &mut CycleState,
        pod: &Arc<PodInfo>,
    ) -> Result<String, CycleError> {
        let fw = &self.framework;
        let snap = &self.snapshot;
        if snap.is_empty() {
            return Err(CycleError::NoNodes);
        }
        let mut diagnosis = Diagnosis::default();
        let (pre, s) = fw.run_pre_filter(state, pod, snap);
        if !s.is_success() {
            if !s.is_rejected() {
                return Err(CycleError::Error(s.message()));
            }
            diagnosis.pre_filter_msg = s.message();
            diagnosis.unschedulable_plugins.insert(s.plugin);
            diagnosis.absent_status = Some(s);
            return Err(CycleError::Fit {
                num_nodes: snap.len(),
                diagnosis: Box::new(diagnosis),
            });
        }

        // A nominated node (from an earlier preemption) is tried first.
        if let Some(nn) = pod.nominated_node_name() {
            if let Some(n) = snap.get(nn) {
                if filter_with_nominated(fw, &self.nominator, state, pod, n).is_success() {
                    return Ok(nn.to_string());
                }
            }
        }

        let narrowed: Vec<Arc<NodeInfo>>;
        let nodes: &[Arc<NodeInfo>] = match &pre.node_names {
            None => &snap.nodes,
            Some(names) => {
                narrowed = names.iter().filter_map(|n| snap.get(n).cloned()).collect();
                let plugins: Vec<&str> = fw
                    .pre_filter
                    .iter()
                    .map(|p| p.name())
                    .filter(|n| !state.skip_filter.contains(n))
                    .collect();
                diagnosis.absent_status = Some(Status::unresolvable(format!(
                    "node(s) didn't satisfy plugin(s) [{}]",
                    plugins.join(" ")
                )));
                &narrowed
            }
        };
        let to_find = num_feasible_nodes_to_find(fw.percentage_of_nodes_to_score, nodes.len());
        let mut feasible: Vec<Arc<NodeInfo>> = Vec::with_capacity(to_find.min(nodes.len()));
        let len = nodes.len();
        let start = if len == 0 {
            0
        } else {
            self.next_start_node_index % len
        };
        let mut processed = 0;
        for i in 0..len {
            let n = &nodes[(start + i) % len];
            processed = i + 1;
            let s = filter_with_nominated(fw, &self.nominator, state, pod, n);
            if s.is_success() {
                feasible.push(n.clone());
                if feasible.len() >= to_find {
                    break;
                }
            } else if s.is_rejected() {
                diagnosis.unschedulable_plugins.insert(s.plugin);
                diagnosis.node_statuses.push((n.name.clone(), s));
            } else {
                return Err(CycleError::Error(s.message()));
            }
        }
        if len > 0 {
            self.next_start_node_index = (start + processed) % len;
        }
        if feasible.is_empty() {
            return Err(CycleError::Fit {
                num_nodes: snap.len(),
                diagnosis: Box::new(diagnosis),
            });
        }
        if feasible.len() == 1 {
            return Ok(feasible[0].name.clone());
        }
        let scores = fw
            .run_score(state, pod, &feasible, snap)
            .map_err(|s| CycleError::Error(s.message()))?;
        // Highest total; ties broken uniformly (reservoir sampling).
        let mut best = 0usize;
        let mut ties = 0usize;
        for i in 0..scores.len() {
            if scores[i] > scores[best] {
                best = i;
                ties = 1;
            } else if scores[i] == scores[best] {
                ties += 1;
                if self.rng.below(ties) == 0 {
                    best = i;
                }
            }
        }
        Ok(feasible[best].name.clone())
    }
}

fn failed_event(message: String) -> SchedulingEvent {
    SchedulingEvent {
        type_: "Warning",
        reason: "FailedScheduling",
        action: "Scheduling",
        message,
    }
}

/// Which node changes happened, as upstream's node update event types.
fn node_update_actions(old: &Node, new: &Node) -> u32 {
    let mut a = 0;
    let alloc = |n: &Node| n.status.as_ref().and_then(|s| s.allocatable.clone());
    if alloc(old) != alloc(new) {
        a |= action::UPDATE_NODE_ALLOCATABLE;
    }
    if old.metadata.labels != new.metadata.labels {
        a |= action::UPDATE_NODE_LABEL;
    }
    let taints = |n: &Node| n.spec.as_ref().map(|s| (s.taints.clone(), s.unschedulable));
    if taints(old) != taints(new) {
        a |= action::UPDATE_NODE_TAINT;
    }
    let conds = |n: &Node| {
        n.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .map(|c| {
                c.iter()
                    .map(|c| (c.type_.clone(), c.status.clone()))
                    .collect::<Vec<_>>()
            })
    };
    if conds(old) != conds(new) {
        a |= action::UPDATE_NODE_CONDITION;
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::default_profile;
    use crate::queue::FakeClock;
    use crate::testutil::{node, pod};
    use parking_lot::Mutex;
    use std::time::Duration;

    /// Records every side effect.
    #[derive(Default)]
    struct Fake {
        binds: Mutex<Vec<(String, String)>>,
        events: Mutex<Vec<(String, SchedulingEvent)>>,
        statuses: Mutex<Vec<(String, PodStatusUpdate)>>,
        deleted: Mutex<Vec<String>>,
        fail_bind: Mutex<bool>,
    }

    impl SchedulerEffects for Fake {
        fn bind(&self, pod: &Pod, node: &str) -> Result<(), EffectError> {
            if *self.fail_bind.lock() {
                return Err(EffectError::Failed("conflict".into()));
            }
            self.binds.lock().push((pod_key(pod), node.to_string()));
            Ok(())
        }
        fn record_event(&self, pod: &Pod, e: &SchedulingEvent) {
            self.events.lock().push((pod_key(pod), e.clone()));
        }
        fn update_pod_status(&self, pod: &Pod, u: &PodStatusUpdate) {
            self.statuses.lock().push((pod_key(pod), u.clone()));
        }
        fn delete_pod(&self, victim: &Pod) -> Result<(), EffectError> {
            self.deleted.lock().push(pod_key(victim));
            Ok(())
        }
    }

    fn sched() -> (Scheduler<Fake>, Arc<FakeClock>) {
        let clock = Arc::new(FakeClock::default());
        (
            Scheduler::with_clock(
                default_profile(DEFAULT_SCHEDULER_NAME),
                Fake::default(),
                clock.clone(),
            ),
            clock,
        )
    }

    #[test]
    fn schedules_and_records_event() {
        let (mut s, _) = sched();
        s.on_node_upsert(node("n1").cpu("1").memory("1Gi").build());
        s.on_node_upsert(node("n2").cpu("4").memory("8Gi").build());
        s.on_pod_upsert(pod("p").cpu("500m").memory("256Mi").build());
        let out = s.schedule_one().unwrap();
        // Least-allocated prefers the larger node.
        assert_eq!(
            out,
            ScheduleOutcome::Scheduled {
                pod: "default/p".into(),
                node: "n2".into()
            }
        );
        assert_eq!(
            s.effects().binds.lock().as_slice(),
            [("default/p".to_string(), "n2".to_string())]
        );
        let ev = s.effects().events.lock()[0].1.clone();
        assert_eq!((ev.type_, ev.reason), ("Normal", "Scheduled"));
        assert_eq!(ev.message, "Successfully assigned default/p to n2");
        assert!(s.cache().is_assumed("uid-p"));
        // The informer's bound update confirms the assumption.
        s.on_pod_upsert(pod("p").cpu("500m").memory("256Mi").node("n2").build());
        assert!(!s.cache().is_assumed("uid-p"));
        assert!(s.schedule_one().is_none());
    }

    #[test]
    fn other_scheduler_names_are_ignored() {
        let (mut s, _) = sched();
        s.on_node_upsert(node("n1").cpu("1").build());
        s.on_pod_upsert(pod("p").scheduler_name("my-scheduler").build());
        assert!(s.schedule_one().is_none());
    }

    #[test]
    fn fit_error_message_condition_and_requeue_on_node_add() {
        let (mut s, clock) = sched();
        for n in ["n1", "n2", "n3"] {
            s.on_node_upsert(node(n).cpu("1").memory("1Gi").build());
        }
        s.on_pod_upsert(pod("big").cpu("2").build());
        let out = s.schedule_one().unwrap();
        let msg = "0/3 nodes are available: 3 Insufficient cpu. preemption: 0/3 nodes are available: 3 No preemption victims found for incoming pod..";
        assert_eq!(
            out,
            ScheduleOutcome::Unschedulable {
                pod: "default/big".into(),
                message: msg.into(),
                nominated_node: None
            }
        );
        let ev = s.effects().events.lock()[0].1.clone();
        assert_eq!(
            (ev.type_, ev.reason, ev.message.as_str()),
            ("Warning", "FailedScheduling", msg)
        );
        let st = s.effects().statuses.lock()[0].1.clone();
        let cond = st.condition.unwrap();
        assert_eq!(
            (cond.type_.as_str(), cond.status.as_str()),
            ("PodScheduled", "False")
        );
        assert_eq!(cond.reason.as_deref(), Some("Unschedulable"));
        assert_eq!(s.queue().unschedulable_len(), 1);

        // A label change does not help; a bigger node does (after backoff).
        s.on_node_upsert(node("n1").cpu("1").memory("1Gi").label("x", "y").build());
        assert_eq!(s.queue().unschedulable_len(), 1);
        s.on_node_upsert(node("n4").cpu("4").build());
        assert_eq!(s.queue().backoff_len(), 1);
        assert!(s.schedule_one().is_none());
        clock.advance(Duration::from_secs(1));
        assert_eq!(
            s.schedule_one().unwrap(),
            ScheduleOutcome::Scheduled {
                pod: "default/big".into(),
                node: "n4".into()
            }
        );
    }

    #[test]
    fn taint_and_affinity_messages_are_aggregated() {
        let (mut s, _) = sched();
        s.on_node_upsert(node("n1").taint("dedicated", "gpu", "NoSchedule").build());
        s.on_node_upsert(node("n2").unschedulable().build());
        s.on_node_upsert(node("n3").label("disk", "hdd").build());
        s.on_pod_upsert(pod("p").node_selector("disk", "ssd").build());
        let ScheduleOutcome::Unschedulable { message, .. } = s.schedule_one().unwrap() else {
            panic!("expected unschedulable")
        };
        assert_eq!(
            message,
            "0/3 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, \
             1 node(s) had untolerated taint {dedicated: gpu}, 1 node(s) were unschedulable. \
             preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling.."
        );
    }

    #[test]
    fn no_nodes() {
        let (mut s, _) = sched();
        s.on_pod_upsert(pod("p").build());
        let ScheduleOutcome::Unschedulable { message, .. } = s.schedule_one().unwrap() else {
            panic!("expected unschedulable")
        };
        assert_eq!(message, "no nodes available to schedule pods");
    }

    #[test]
    fn preemption_evicts_lowest_priority_and_nominates() {
        let (mut s, clock) = sched();
        s.on_node_upsert(node("n1").cpu("2").build());
        s.on_node_upsert(node("n2").cpu("2").build());
        s.on_pod_upsert(pod("low1").cpu("1500m").priority(10).node("n1").build());
        s.on_pod_upsert(pod("mid").cpu("1500m").priority(50).node("n2").build());
        s.on_pod_upsert(pod("high").cpu("1").priority(100).build());
        let out = s.schedule_one().unwrap();
        assert_eq!(
            out,
            ScheduleOutcome::Unschedulable {
                pod: "default/high".into(),
                message: "0/2 nodes are available: 2 Insufficient cpu.".into(),
                nominated_node: Some("n1".into()),
            }
        );
        assert_eq!(
            s.effects().deleted.lock().as_slice(),
            ["default/low1".to_string()]
        );
        let preempted = s
            .effects()
            .events
            .lock()
            .iter()
            .find(|(_, e)| e.reason == "Preempted")
            .cloned()
            .unwrap();
        assert_eq!(preempted.0, "default/low1");
        assert_eq!(preempted.1.message, "Preempted by pod uid-high on node n1");
        let st = s.effects().statuses.lock().last().cloned().unwrap();
        assert_eq!(st.1.nominated_node_name.as_deref(), Some("n1"));

        // A lower-priority pod may not take the space nominated for `high`.
        s.on_pod_delete(&pod("low1").cpu("1500m").priority(10).node("n1").build());
        s.on_pod_upsert(pod("sneaky").cpu("1500m").priority(5).build());
        let ScheduleOutcome::Unschedulable { .. } = s.schedule_one().unwrap() else {
            panic!("sneaky must not fit")
        };
        clock.advance(Duration::from_secs(1));
        assert_eq!(
            s.schedule_one().unwrap(),
            ScheduleOutcome::Scheduled {
                pod: "default/high".into(),
                node: "n1".into()
            }
        );
    }

    #[test]
    fn preemption_policy_never() {
        let (mut s, _) = sched();
        s.on_node_upsert(node("n1").cpu("1").build());
        s.on_pod_upsert(pod("low").cpu("1").priority(1).node("n1").build());
        s.on_pod_upsert(pod("p").cpu("1").priority(100).preemption_never().build());
        let ScheduleOutcome::Unschedulable { message, .. } = s.schedule_one().unwrap() else {
            panic!("expected unschedulable")
        };
        assert_eq!(
            message,
            "0/1 nodes are available: 1 Insufficient cpu. preemption: not eligible due to preemptionPolicy=Never.."
        );
        assert!(s.effects().deleted.lock().is_empty());
    }

    #[test]
    fn preemption_respects_pdb_when_possible() {
        use k8s_openapi::api::policy::v1::{
            PodDisruptionBudget, PodDisruptionBudgetSpec, PodDisruptionBudgetStatus,
        };
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector as ApiSel, ObjectMeta};
        let (mut s, _) = sched();
        s.on_node_upsert(node("n1").cpu("1").build());
        s.on_node_upsert(node("n2").cpu("1").build());
        s.on_pod_upsert(
            pod("guarded")
                .cpu("1")
                .priority(1)
                .label("app", "db")
                .node("n1")
                .build(),
        );
        s.on_pod_upsert(pod("free").cpu("1").priority(1).node("n2").build());
        s.on_pdb_upsert(&PodDisruptionBudget {
            metadata: ObjectMeta {
                name: Some("db".into()),
                namespace: Some("default".into()),
                ..Default::default()
            },
            spec: Some(PodDisruptionBudgetSpec {
                selector: Some(ApiSel {
                    match_labels: Some([("app".to_string(), "db".to_string())].into()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            status: Some(PodDisruptionBudgetStatus {
                disruptions_allowed: 0,
                ..Default::default()
            }),
        });
        s.on_pod_upsert(pod("p").cpu("1").priority(100).build());
        let ScheduleOutcome::Unschedulable { nominated_node, .. } = s.schedule_one().unwrap()
        else {
            panic!()
        };
        assert_eq!(nominated_node.as_deref(), Some("n2"));
        assert_eq!(
            s.effects().deleted.lock().as_slice(),
            ["default/free".to_string()]
        );
    }

    #[test]
    fn binding_failure_backs_off() {
        let (mut s, clock) = sched();
        s.on_node_upsert(node("n1").cpu("1").build());
        *s.effects().fail_bind.lock() = true;
        s.on_pod_upsert(pod("p").build());
        let out = s.schedule_one().unwrap();
        assert_eq!(
            out,
            ScheduleOutcome::Error {
                pod: "default/p".into(),
                message: "running Bind plugin \"DefaultBinder\": conflict".into()
            }
        );
        assert!(!s.cache().contains_pod("uid-p"));
        assert_eq!(s.queue().backoff_len(), 1);
        *s.effects().fail_bind.lock() = false;
        clock.advance(Duration::from_secs(1));
        assert!(matches!(
            s.schedule_one(),
            Some(ScheduleOutcome::Scheduled { .. })
        ));
    }

    #[test]
    fn sampling_matches_upstream() {
        assert_eq!(num_feasible_nodes_to_find(None, 50), 50);
        assert_eq!(num_feasible_nodes_to_find(None, 5000), 500);
        assert_eq!(num_feasible_nodes_to_find(None, 200), 100);
        assert_eq!(num_feasible_nodes_to_find(None, 10000), 500);
        assert_eq!(num_feasible_nodes_to_find(Some(100), 5000), 5000);
    }

    #[test]
    fn spreads_pods_across_nodes() {
        let (mut s, _) = sched();
        for i in 0..4 {
            s.on_node_upsert(node(&format!("n{i}")).cpu("4").memory("8Gi").build());
        }
        for i in 0..8 {
            s.on_pod_upsert(pod(&format!("p{i}")).cpu("500m").memory("1Gi").build());
        }
        assert_eq!(s.run_until_idle(), 8);
        let mut per_node: HashMap<String, usize> = HashMap::new();
        for (_, n) in s.effects().binds.lock().iter() {
            *per_node.entry(n.clone()).or_default() += 1;
        }
        assert!(per_node.values().all(|&c| c == 2), "{per_node:?}");
    }
}
