//! Node lifecycle (upstream's node-lifecycle-controller) and taint-based
//! eviction (its taint-eviction-controller), in one task:
//!
//! - every `monitor_period` each node's health is judged from its Lease
//!   renewals and Ready heartbeats; one silent for longer than
//!   `grace_period` (`startup_grace_period` before it ever reported) gets
//!   Ready/MemoryPressure/DiskPressure/PIDPressure Unknown ("Kubelet stopped
//!   posting node status."), a "NodeNotReady" Event, and its pods Ready=False;
//! - node conditions become NoSchedule taints (not-ready, unreachable,
//!   memory-pressure, …, unschedulable) as soon as they change;
//! - a not-ready or unreachable node gets the matching NoExecute taint,
//!   paced per zone by a token bucket (`eviction_rate`, the secondary rate
//!   in a largely disrupted zone of a large cluster, none when every zone
//!   is down), removed when the node is Ready again;
//! - pods on a node with NoExecute taints they do not tolerate are deleted
//!   at once; those tolerating them for tolerationSeconds, that long after.

mod rules;

pub use rules::{TAINT_NOT_READY, TAINT_UNREACHABLE};

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{
    Node, NodeCondition, ObjectReference, Pod, PodCondition, Taint, Toleration,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kelson_runtime::{EventType, Recorder};
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::Client;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::informers::{Informers, Notice};
use rules::{ZoneState, NO_EXECUTE};

/// Tunables; the defaults are kube-controller-manager's.
#[derive(Debug, Clone)]
pub struct NodeLifecycleOptions {
    /// --node-monitor-period (5 s).
    pub monitor_period: Duration,
    /// --node-monitor-grace-period (50 s).
    pub grace_period: Duration,
    /// --node-startup-grace-period (60 s): for nodes that never reported.
    pub startup_grace_period: Duration,
    /// --node-eviction-rate (0.1 nodes/s tainted NoExecute per zone).
    pub eviction_rate: f32,
    /// --secondary-node-eviction-rate (0.01) for a partially disrupted zone
    /// of more than `large_cluster_size_threshold` nodes; 0 below it.
    pub secondary_eviction_rate: f32,
    /// --large-cluster-size-threshold (50).
    pub large_cluster_size_threshold: usize,
    /// --unhealthy-zone-threshold (0.55): share of not-ready nodes (at
    /// least 3) that makes a zone partially disrupted.
    pub unhealthy_zone_threshold: f32,
    /// Run the taint-eviction part (deleting pods from NoExecute nodes).
    pub taint_eviction: bool,
}

impl Default for NodeLifecycleOptions {
    fn default() -> Self {
        NodeLifecycleOptions {
            monitor_period: Duration::from_secs(5),
            grace_period: Duration::from_secs(50),
            startup_grace_period: Duration::from_secs(60),
            eviction_rate: 0.1,
            secondary_eviction_rate: 0.01,
            large_cluster_size_threshold: 50,
            unhealthy_zone_threshold: 0.55,
            taint_eviction: true,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("updating node {0}: {1}")]
    Node(String, #[source] kube::Error),
    #[error("updating pod {0}: {1}")]
    Pod(String, #[source] kube::Error),
    #[error("updating node {0}: conflicts on every try")]
    Conflicts(String),
}

/// How often the NoExecute tainting queues are worked (upstream's
/// nodeEvictionPeriod).
const EVICTION_PERIOD: Duration = Duration::from_millis(100);
/// Tries of a read-modify-write that meets conflicts.
const UPDATE_TRIES: usize = 5;

/// What the controller needs of a pod, kept small: the index holds every
/// bound pod of the cluster.
#[derive(Debug, Clone)]
struct PodInfo {
    uid: String,
    node: String,
    /// NoExecute-capable tolerations only (effect NoExecute or any).
    tolerations: Vec<Toleration>,
    terminating: bool,
    ready: bool,
}

#[derive(Default)]
struct PodIndex {
    pods: HashMap<String, PodInfo>,
    by_node: HashMap<String, HashSet<String>>,
    synced: bool,
}

impl PodIndex {
    fn insert(&mut self, key: String, info: PodInfo) {
        if let Some(old) = self.pods.get(&key) {
            if old.node != info.node {
                self.unlink(&key, &old.node.clone());
            }
        }
        self.by_node
            .entry(info.node.clone())
            .or_default()
            .insert(key.clone());
        self.pods.insert(key, info);
    }

    fn unlink(&mut self, key: &str, node: &str) {
        if let Some(set) = self.by_node.get_mut(node) {
            set.remove(key);
            if set.is_empty() {
                self.by_node.remove(node);
            }
        }
    }

    fn remove(&mut self, key: &str) {
        if let Some(old) = self.pods.remove(key) {
            self.unlink(key, &old.node);
        }
    }

    fn on_node(&self, node: &str) -> Vec<(String, PodInfo)> {
        self.by_node
            .get(node)
            .map(|keys| {
                keys.iter()
                    .filter_map(|k| self.pods.get(k).map(|p| (k.clone(), p.clone())))
                    .collect()
            })
            .unwrap_or_default()
    }
}

fn pod_key(ns: &str, name: &str) -> String {
    format!("{ns}/{name}")
}

fn pod_info(p: &Pod) -> Option<(String, PodInfo)> {
    let spec = p.spec.as_ref()?;
    let node = spec.node_name.clone().filter(|n| !n.is_empty())?;
    let key = pod_key(
        p.metadata.namespace.as_deref()?,
        p.metadata.name.as_deref()?,
    );
    let tolerations = spec
        .tolerations
        .as_deref()
        .unwrap_or(&[])
        .iter()
        .filter(|t| {
            t.effect
                .as_deref()
                .is_none_or(|e| e.is_empty() || e == NO_EXECUTE)
        })
        .cloned()
        .collect();
    let ready = p
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    Some((
        key,
        PodInfo {
            uid: p.metadata.uid.clone().unwrap_or_default(),
            node,
            tolerations,
            terminating: p.metadata.deletion_timestamp.is_some(),
            ready,
        },
    ))
}

fn lock(index: &Mutex<PodIndex>) -> MutexGuard<'_, PodIndex> {
    index.lock().unwrap_or_else(|e| e.into_inner())
}

/// Keeps the index of bound pods from the shared pod informer and tells
/// the controller which pods changed.
async fn watch_pods(
    notices: futures::channel::mpsc::UnboundedReceiver<Notice<Pod>>,
    index: Arc<Mutex<PodIndex>>,
    tx: mpsc::UnboundedSender<Msg>,
    shutdown: CancellationToken,
) {
    futures::pin_mut!(notices);
    loop {
        let n = tokio::select! {
            _ = shutdown.cancelled() => return,
            n = notices.next() => n,
        };
        match n {
            None => return,
            // Pods not bound to a node are none of this controller's
            // business (and a bound pod never becomes unbound).
            Some(Notice::Apply { obj, .. }) => {
                if let Some((key, info)) = pod_info(&obj) {
                    lock(&index).insert(key.clone(), info);
                    let _ = tx.send(Msg::Pod(key));
                }
            }
            Some(Notice::Delete(p)) => {
                if let Some((key, _)) = pod_info(&p) {
                    lock(&index).remove(&key);
                    let _ = tx.send(Msg::Pod(key));
                }
            }
            Some(Notice::Synced) => lock(&index).synced = true,
        }
    }
}

enum Msg {
    /// A node was added or changed.
    Node(String),
    /// A pod was added, changed or deleted.
    Pod(String),
}

/// What the controller remembers of a node between passes (upstream's
/// nodeHealthData).
#[derive(Clone)]
struct Health {
    probe: Instant,
    ready_transition: Instant,
    saved_ready: Option<NodeCondition>,
    lease_renew: Option<Timestamp>,
}

/// The NoExecute tainting queue of one zone (upstream's
/// RateLimitedTimedQueue): a node is queued once per not-ready episode.
struct Tainter {
    limiter: rules::TokenBucket,
    queue: VecDeque<(String, Instant)>,
    set: HashSet<String>,
}

impl Tainter {
    fn new(qps: f32, now: Instant) -> Tainter {
        Tainter {
            limiter: rules::TokenBucket::new(qps, now),
            queue: VecDeque::new(),
            set: HashSet::new(),
        }
    }

    fn add(&mut self, name: &str, now: Instant) -> bool {
        if self.set.insert(name.to_string()) {
            self.queue.push_back((name.to_string(), now));
            true
        } else {
            false
        }
    }

    fn remove(&mut self, name: &str) {
        self.set.remove(name);
        self.queue.retain(|(n, _)| n != name);
    }
}

/// A pod's scheduled deletion.
#[derive(Clone, Copy)]
struct Scheduled {
    created: Instant,
    at: Instant,
}

struct Controller {
    client: Client,
    opts: NodeLifecycleOptions,
    recorder: Recorder,
    taint_recorder: Recorder,
    nodes: Store<Node>,
    leases: Store<Lease>,
    pods: Arc<Mutex<PodIndex>>,
    health: HashMap<String, Health>,
    known: HashSet<String>,
    zone_states: HashMap<String, ZoneState>,
    tainters: HashMap<String, Tainter>,
    /// Nodes whose pods could not all be marked not ready.
    retry_not_ready: HashSet<String>,
    /// NoExecute taints of nodes that have any.
    tainted: HashMap<String, Vec<Taint>>,
    evictions: HashMap<String, Scheduled>,
    eviction_timers: BTreeSet<(Instant, String)>,
}

/// Runs the controller until `shutdown` fires.
pub async fn run(client: Client, opts: NodeLifecycleOptions, shutdown: CancellationToken) {
    run_with(Informers::new(client), opts, shutdown).await;
}

/// Runs the controller on shared informers until `shutdown` fires.
pub async fn run_with(
    informers: Informers,
    opts: NodeLifecycleOptions,
    shutdown: CancellationToken,
) {
    let client = informers.client().clone();
    let (tx, mut rx) = mpsc::unbounded_channel();

    let (nodes, node_writer) = reflector::store();
    let node_stream = reflector::reflector(
        node_writer,
        watcher(Api::<Node>::all(client.clone()), watcher::Config::default()).default_backoff(),
    )
    .touched_objects();
    let node_tx = tx.clone();
    let node_shutdown = shutdown.clone();
    let node_task = tokio::spawn(async move {
        futures::pin_mut!(node_stream);
        loop {
            let next = tokio::select! {
                _ = node_shutdown.cancelled() => return,
                n = node_stream.next() => n,
            };
            match next {
                None => return,
                Some(Ok(n)) => {
                    if let Some(name) = n.metadata.name.clone() {
                        let _ = node_tx.send(Msg::Node(name));
                    }
                }
                Some(Err(e)) => tracing::debug!(error = %e, "node watch"),
            }
        }
    });

    let (leases, lease_writer) = reflector::store();
    let lease_stream = reflector::reflector(
        lease_writer,
        watcher(
            Api::<Lease>::namespaced(client.clone(), "kube-node-lease"),
            watcher::Config::default(),
        )
        .default_backoff(),
    );
    let lease_shutdown = shutdown.clone();
    let lease_task = tokio::spawn(async move {
        futures::pin_mut!(lease_stream);
        loop {
            tokio::select! {
                _ = lease_shutdown.cancelled() => return,
                n = lease_stream.next() => if n.is_none() { return },
            }
        }
    });

    let pods = Arc::new(Mutex::new(PodIndex::default()));
    let pod_task = tokio::spawn(watch_pods(
        informers.get::<Pod>().subscribe(),
        pods.clone(),
        tx.clone(),
        shutdown.clone(),
    ));

    let mut c = Controller {
        recorder: Recorder::new(client.clone(), "node-controller", ""),
        taint_recorder: Recorder::new(client.clone(), "taint-eviction-controller", ""),
        client,
        opts,
        nodes,
        leases,
        pods,
        health: HashMap::new(),
        known: HashSet::new(),
        zone_states: HashMap::new(),
        tainters: HashMap::new(),
        retry_not_ready: HashSet::new(),
        tainted: HashMap::new(),
        evictions: HashMap::new(),
        eviction_timers: BTreeSet::new(),
    };

    // Judge nothing before the caches hold the whole cluster.
    let synced = async {
        let _ = c.nodes.wait_until_ready().await;
        let _ = c.leases.wait_until_ready().await;
        while !lock(&c.pods).synced {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::select! {
        _ = shutdown.cancelled() => {}
        _ = synced => c.run(&mut rx, &shutdown).await,
    }
    shutdown.cancel();
    for t in [node_task, lease_task, pod_task] {
        let _ = t.await;
    }
}

fn ready_condition(node: &Node) -> Option<&NodeCondition> {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
}

fn node_ref(node: &Node) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Node".into()),
        name: node.metadata.name.clone(),
        uid: node.metadata.uid.clone(),
        ..ObjectReference::default()
    }
}

fn pod_ref(key: &str) -> ObjectReference {
    let (ns, name) = key.split_once('/').unwrap_or(("", key));
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        name: Some(name.into()),
        namespace: Some(ns.into()),
        ..ObjectReference::default()
    }
}

/// The Instant at which wall-clock time `ts` was (clamped to now).
fn instant_of(ts: Timestamp) -> Instant {
    let ago = Timestamp::now().duration_since(ts);
    let ago = Duration::try_from(ago).unwrap_or(Duration::ZERO);
    Instant::now().checked_sub(ago).unwrap_or_else(Instant::now)
}

fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

impl Controller {
    async fn run(&mut self, rx: &mut mpsc::UnboundedReceiver<Msg>, shutdown: &CancellationToken) {
        let mut monitor = tokio::time::interval(self.opts.monitor_period);
        monitor.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut tainting = tokio::time::interval(EVICTION_PERIOD);
        tainting.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Nodes and pods already known: every one is looked at once.
        for n in self.nodes.state() {
            self.on_node_changed(&n).await;
        }
        loop {
            let next_eviction = self.eviction_timers.first().map(|(t, _)| *t);
            let eviction_due = async {
                match next_eviction {
                    Some(t) => tokio::time::sleep_until(tokio::time::Instant::from_std(t)).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = monitor.tick() => self.monitor_node_health().await,
                _ = tainting.tick() => self.no_execute_tainting_pass().await,
                _ = eviction_due => self.evict_due(),
                msg = rx.recv() => match msg {
                    None => return,
                    Some(Msg::Node(name)) => {
                        match self.get_node(&name) {
                            Some(n) => self.on_node_changed(&n).await,
                            None => self.on_node_deleted(&name),
                        }
                    }
                    Some(Msg::Pod(key)) => self.on_pod_changed(&key),
                },
            }
        }
    }

    fn get_node(&self, name: &str) -> Option<Arc<Node>> {
        self.nodes.get(&reflector::ObjectRef::new(name))
    }

    // ---- node events: NoSchedule taints and taint eviction ----

    async fn on_node_changed(&mut self, node: &Node) {
        let Some(name) = node.metadata.name.clone() else {
            return;
        };
        let (add, remove) = rules::no_schedule_diff(node);
        if !(add.is_empty() && remove.is_empty()) {
            if let Err(e) = self.swap_taints(&name, &add, &remove).await {
                tracing::warn!(error = %e, "updating NoSchedule taints");
            }
        }
        if !self.opts.taint_eviction {
            return;
        }
        let taints = rules::no_execute_taints(node);
        let old = self.tainted.get(&name);
        if old.is_some_and(|o| same_taints(o, &taints)) || (old.is_none() && taints.is_empty()) {
            return;
        }
        if taints.is_empty() {
            self.tainted.remove(&name);
        } else {
            self.tainted.insert(name.clone(), taints.clone());
        }
        let pods = lock(&self.pods).on_node(&name);
        let now = Instant::now();
        for (key, info) in pods {
            if taints.is_empty() {
                self.cancel_eviction(&key, true);
            } else {
                self.process_pod(&key, &info, &taints, now);
            }
        }
    }

    fn on_node_deleted(&mut self, name: &str) {
        if self.tainted.remove(name).is_some() {
            for (key, _) in lock(&self.pods).on_node(name) {
                self.evictions.remove(&key);
            }
        }
    }

    fn on_pod_changed(&mut self, key: &str) {
        if !self.opts.taint_eviction {
            return;
        }
        let info = lock(&self.pods).pods.get(key).cloned();
        let Some(info) = info else {
            self.cancel_eviction(key, false);
            return;
        };
        match self.tainted.get(&info.node).cloned() {
            Some(taints) => self.process_pod(key, &info, &taints, Instant::now()),
            None => self.cancel_eviction(key, true),
        }
    }

    /// Upstream's processPodOnNode.
    fn process_pod(&mut self, key: &str, info: &PodInfo, taints: &[Taint], now: Instant) {
        if info.terminating {
            // Already on its way out.
            self.cancel_eviction(key, false);
            return;
        }
        match rules::toleration_time(taints, &info.tolerations) {
            None => {
                tracing::info!(pod = %key, node = %info.node, "not all taints are tolerated, deleting pod");
                self.cancel_eviction(key, false);
                self.schedule_eviction(key, now, now);
            }
            Some(None) => self.cancel_eviction(key, true),
            Some(Some(d)) => {
                let mut created = now;
                if let Some(s) = self.evictions.get(key).copied() {
                    created = s.created;
                    // An earlier deadline already set stays.
                    if s.created + d < now + d {
                        return;
                    }
                    self.cancel_eviction(key, true);
                }
                self.schedule_eviction(key, created, created + d);
            }
        }
    }

    fn schedule_eviction(&mut self, key: &str, created: Instant, at: Instant) {
        if let Some(old) = self
            .evictions
            .insert(key.to_string(), Scheduled { created, at })
        {
            self.eviction_timers.remove(&(old.at, key.to_string()));
        }
        self.eviction_timers.insert((at, key.to_string()));
    }

    fn cancel_eviction(&mut self, key: &str, with_event: bool) {
        if let Some(old) = self.evictions.remove(key) {
            self.eviction_timers.remove(&(old.at, key.to_string()));
            if with_event {
                self.taint_recorder.event(
                    &pod_ref(key),
                    EventType::Normal,
                    "TaintManagerEviction",
                    format!("Cancelling deletion of Pod {key}"),
                );
            }
        }
    }

    /// Deletes the pods whose time has come, in the background.
    fn evict_due(&mut self) {
        let now = Instant::now();
        while let Some((at, key)) = self.eviction_timers.first().cloned() {
            if at > now {
                break;
            }
            self.eviction_timers.pop_first();
            self.evictions.remove(&key);
            let uid = lock(&self.pods).pods.get(&key).map(|p| p.uid.clone());
            let Some(uid) = uid else { continue };
            self.taint_recorder.event(
                &pod_ref(&key),
                EventType::Normal,
                "TaintManagerEviction",
                format!("Marking for deletion Pod {key}"),
            );
            let client = self.client.clone();
            tokio::spawn(async move {
                for _ in 0..UPDATE_TRIES {
                    match delete_pod_for_taint(&client, &key, &uid).await {
                        Ok(()) => return,
                        Err(e) => {
                            tracing::warn!(pod = %key, error = %e, "taint eviction");
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                    }
                }
            });
        }
    }

    // ---- node health ----

    /// One pass of upstream's monitorNodeHealth.
    async fn monitor_node_health(&mut self) {
        let nodes = self.nodes.state();
        let now = Instant::now();
        let names: HashSet<String> = nodes
            .iter()
            .filter_map(|n| n.metadata.name.clone())
            .collect();
        for n in &nodes {
            let Some(name) = n.metadata.name.as_deref() else {
                continue;
            };
            if self.known.insert(name.to_string()) {
                let msg = format!("Node {name} event: Registered Node {name} in Controller");
                self.recorder
                    .event(&node_ref(n), EventType::Normal, "RegisteredNode", msg);
                let zone = rules::zone_key(n);
                if !self.tainters.contains_key(&zone) {
                    self.tainters
                        .insert(zone.clone(), Tainter::new(self.opts.eviction_rate, now));
                    self.zone_states.insert(zone, ZoneState::Initial);
                }
            }
        }
        let deleted: Vec<String> = self
            .known
            .iter()
            .filter(|k| !names.contains(*k))
            .cloned()
            .collect();
        for name in deleted {
            let msg = format!("Node {name} event: Removing Node {name} from Controller");
            let r = ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Node".into()),
                name: Some(name.clone()),
                ..ObjectReference::default()
            };
            self.recorder
                .event(&r, EventType::Normal, "RemovingNode", msg);
            self.known.remove(&name);
            self.health.remove(&name);
            self.retry_not_ready.remove(&name);
            for t in self.tainters.values_mut() {
                t.remove(&name);
            }
        }

        let mut zones: HashMap<String, Vec<bool>> = HashMap::new();
        for node in &nodes {
            let Some(name) = node.metadata.name.clone() else {
                continue;
            };
            let (observed, current) = match self.try_update_node_health(node).await {
                Ok(v) => v,
                Err(e) => {
                    tracing::warn!(node = %name, error = %e, "updating node health");
                    continue;
                }
            };
            let excluded = node
                .metadata
                .labels
                .as_ref()
                .is_some_and(|l| l.contains_key(rules::LABEL_EXCLUDE_DISRUPTION));
            if !excluded {
                zones
                    .entry(rules::zone_key(node))
                    .or_default()
                    .push(current.as_ref().is_some_and(|c| c.status == "True"));
            }
            let Some(current) = current else { continue };
            self.process_taint_based_eviction(node, &observed).await;
            let needs_retry = self.retry_not_ready.contains(&name);
            let became_not_ready = current.status != "True" && observed.status == "True";
            if became_not_ready {
                self.recorder.event(
                    &node_ref(node),
                    EventType::Normal,
                    "NodeNotReady",
                    format!("Node {name} status is now: NodeNotReady"),
                );
            }
            if became_not_ready || (needs_retry && observed.status != "True") {
                if let Err(e) = self.mark_pods_not_ready(&name).await {
                    tracing::warn!(node = %name, error = %e, "marking pods not ready; will retry");
                    self.retry_not_ready.insert(name);
                    continue;
                }
            }
            self.retry_not_ready.remove(&name);
        }
        self.handle_disruption(&zones, &nodes).await;
    }

    /// Upstream's tryUpdateNodeHealth: (observed Ready, current Ready).
    async fn try_update_node_health(
        &mut self,
        node: &Node,
    ) -> Result<(NodeCondition, Option<NodeCondition>), Error> {
        let name = node.metadata.name.clone().unwrap_or_default();
        let now = Instant::now();
        let created = node.metadata.creation_timestamp.clone();
        let created_at = created.as_ref().map(|t| instant_of(t.0)).unwrap_or(now);
        let current = ready_condition(node).cloned();
        let (observed, grace) = match &current {
            Some(c) => (c.clone(), self.opts.grace_period),
            None => (
                NodeCondition {
                    type_: "Ready".into(),
                    status: "Unknown".into(),
                    last_heartbeat_time: created.clone(),
                    last_transition_time: created.clone(),
                    ..NodeCondition::default()
                },
                self.opts.startup_grace_period,
            ),
        };
        let saved = self.health.get(&name).cloned();
        let fresh = |probe| Health {
            probe,
            ready_transition: probe,
            saved_ready: current.clone(),
            lease_renew: None,
        };
        let mut h = match (saved, &current) {
            (None, None) => fresh(created_at),
            (None, Some(_)) => fresh(now),
            (Some(s), cur) => match (&s.saved_ready, cur) {
                (None, Some(_)) | (Some(_), None) => Health {
                    lease_renew: s.lease_renew,
                    ..fresh(now)
                },
                (Some(old), Some(cur)) if old.last_heartbeat_time != cur.last_heartbeat_time => {
                    Health {
                        probe: now,
                        ready_transition: if old.last_transition_time != cur.last_transition_time {
                            now
                        } else {
                            s.ready_transition
                        },
                        saved_ready: Some(cur.clone()),
                        lease_renew: s.lease_renew,
                    }
                }
                _ => s,
            },
        };
        // A renewed Lease counts as a heartbeat.
        let lease = self
            .leases
            .get(&reflector::ObjectRef::new(&name).within("kube-node-lease"));
        let renew = lease
            .as_ref()
            .and_then(|l| l.spec.as_ref()?.renew_time.as_ref())
            .map(|t| t.0);
        if let Some(r) = renew {
            if h.lease_renew.is_none_or(|old| old < r) {
                h.lease_renew = Some(r);
                h.probe = now;
            }
        }

        let mut result = (observed.clone(), current.clone());
        if now > h.probe + grace {
            let mut updated = node.clone();
            let stamp = Time(Timestamp::now());
            let status = updated.status.get_or_insert_with(Default::default);
            let conds = status.conditions.get_or_insert_with(Vec::new);
            for t in ["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"] {
                match conds.iter_mut().find(|c| c.type_ == t) {
                    None => conds.push(NodeCondition {
                        type_: t.into(),
                        status: "Unknown".into(),
                        reason: Some("NodeStatusNeverUpdated".into()),
                        message: Some("Kubelet never posted node status.".into()),
                        last_heartbeat_time: created.clone(),
                        last_transition_time: Some(stamp.clone()),
                    }),
                    Some(c) if c.status != "Unknown" => {
                        c.status = "Unknown".into();
                        c.reason = Some("NodeStatusUnknown".into());
                        c.message = Some("Kubelet stopped posting node status.".into());
                        c.last_transition_time = Some(stamp.clone());
                    }
                    Some(_) => {}
                }
            }
            let new_ready = ready_condition(&updated).cloned();
            if new_ready.as_ref() != Some(&observed) {
                tracing::info!(node = %name, "node stopped posting status; marking it Unknown");
                let api: Api<Node> = Api::all(self.client.clone());
                api.replace_status(&name, &PostParams::default(), &updated)
                    .await
                    .map_err(|e| Error::Node(name.clone(), e))?;
                h = Health {
                    probe: h.probe,
                    ready_transition: now,
                    saved_ready: new_ready.clone(),
                    lease_renew: h.lease_renew,
                };
                result = (observed, new_ready);
            }
        }
        self.health.insert(name, h);
        Ok(result)
    }

    async fn process_taint_based_eviction(&mut self, node: &Node, observed: &NodeCondition) {
        let name = node.metadata.name.clone().unwrap_or_default();
        let zone = rules::zone_key(node);
        let now = Instant::now();
        let (this, other) = match observed.status.as_str() {
            "False" => (rules::TAINT_NOT_READY, rules::TAINT_UNREACHABLE),
            "Unknown" => (rules::TAINT_UNREACHABLE, rules::TAINT_NOT_READY),
            "True" => {
                self.mark_node_reachable(&name, node, &zone).await;
                return;
            }
            _ => return,
        };
        if rules::has_taint(node, other, NO_EXECUTE) {
            // Flip the kind of NoExecute taint at once, unpaced.
            let r = self
                .swap_taints(
                    &name,
                    &[rules::taint(this, NO_EXECUTE)],
                    &[rules::taint(other, NO_EXECUTE)],
                )
                .await;
            if let Err(e) = r {
                tracing::warn!(node = %name, error = %e, "swapping NoExecute taints; will retry");
            }
        } else if let Some(t) = self.tainters.get_mut(&zone) {
            if t.add(&name, now) {
                tracing::info!(node = %name, status = %observed.status, "node not ready; queued for NoExecute taint");
            }
        }
    }

    async fn mark_node_reachable(&mut self, name: &str, node: &Node, zone: &str) {
        if let Some(t) = self.tainters.get_mut(zone) {
            t.remove(name);
        }
        if rules::has_taint(node, rules::TAINT_UNREACHABLE, NO_EXECUTE)
            || rules::has_taint(node, rules::TAINT_NOT_READY, NO_EXECUTE)
        {
            let remove = [
                rules::taint(rules::TAINT_UNREACHABLE, NO_EXECUTE),
                rules::taint(rules::TAINT_NOT_READY, NO_EXECUTE),
            ];
            match self.swap_taints(name, &[], &remove).await {
                Ok(()) => {
                    tracing::info!(node = %name, "node is healthy again; removed NoExecute taints")
                }
                Err(e) => {
                    tracing::warn!(node = %name, error = %e, "removing NoExecute taints; will retry")
                }
            }
        }
    }

    /// Upstream's doNoExecuteTaintingPass: taints queued nodes as each
    /// zone's limiter allows.
    async fn no_execute_tainting_pass(&mut self) {
        let zones: Vec<String> = self.tainters.keys().cloned().collect();
        for zone in zones {
            loop {
                let now = Instant::now();
                let Some(t) = self.tainters.get_mut(&zone) else {
                    break;
                };
                let Some((name, at)) = t.queue.front().cloned() else {
                    break;
                };
                if !t.limiter.try_accept(now) || now < at {
                    break;
                }
                let done = match self.get_node(&name) {
                    None => true,
                    Some(node) => match ready_condition(&node).map(|c| c.status.as_str()) {
                        None => false,
                        Some(status @ ("False" | "Unknown")) => {
                            let (add, remove) = if status == "False" {
                                (rules::TAINT_NOT_READY, rules::TAINT_UNREACHABLE)
                            } else {
                                (rules::TAINT_UNREACHABLE, rules::TAINT_NOT_READY)
                            };
                            match self
                                .swap_taints(
                                    &name,
                                    &[rules::taint(add, NO_EXECUTE)],
                                    &[rules::taint(remove, NO_EXECUTE)],
                                )
                                .await
                            {
                                Ok(()) => {
                                    tracing::info!(node = %name, taint = add, "tainted node NoExecute");
                                    true
                                }
                                Err(e) => {
                                    tracing::warn!(node = %name, error = %e, "tainting node");
                                    false
                                }
                            }
                        }
                        // Ready again: nothing to taint.
                        Some(_) => true,
                    },
                };
                let Some(t) = self.tainters.get_mut(&zone) else {
                    break;
                };
                t.queue.pop_front();
                if !done {
                    t.queue
                        .push_back((name, Instant::now() + Duration::from_millis(50)));
                }
            }
        }
    }

    /// Upstream's handleDisruption.
    async fn handle_disruption(&mut self, zones: &HashMap<String, Vec<bool>>, nodes: &[Arc<Node>]) {
        let now = Instant::now();
        let mut new_states = HashMap::new();
        let mut all_fully = true;
        for (zone, ready) in zones {
            let state = rules::zone_state(ready, self.opts.unhealthy_zone_threshold);
            if state != ZoneState::FullDisruption {
                all_fully = false;
            }
            new_states.insert(zone.clone(), state);
            self.zone_states
                .entry(zone.clone())
                .or_insert(ZoneState::Initial);
            self.tainters
                .entry(zone.clone())
                .or_insert_with(|| Tainter::new(self.opts.eviction_rate, now));
        }
        let mut all_were_fully = true;
        let stale: Vec<String> = self
            .zone_states
            .keys()
            .filter(|z| !zones.contains_key(*z))
            .cloned()
            .collect();
        for z in stale {
            self.zone_states.remove(&z);
        }
        if self
            .zone_states
            .values()
            .any(|s| *s != ZoneState::FullDisruption)
        {
            all_were_fully = false;
        }
        if all_fully && all_were_fully {
            return;
        }
        if all_fully {
            tracing::info!(
                "all nodes are not ready: entering master disruption mode, stopping evictions"
            );
            for n in nodes {
                if let Some(name) = n.metadata.name.clone() {
                    self.mark_node_reachable(&name, n, &rules::zone_key(n))
                        .await;
                }
            }
            for (zone, t) in self.tainters.iter_mut() {
                if self.zone_states.contains_key(zone) {
                    t.limiter.swap(0.0, now);
                }
            }
            for s in self.zone_states.values_mut() {
                *s = ZoneState::FullDisruption;
            }
            return;
        }
        if all_were_fully {
            tracing::info!("some nodes are ready: exiting master disruption mode");
            for h in self.health.values_mut() {
                h.probe = now;
                h.ready_transition = now;
            }
            let zs: Vec<String> = self.zone_states.keys().cloned().collect();
            for z in zs {
                let state = new_states.get(&z).copied().unwrap_or(ZoneState::Normal);
                self.set_limiter(&z, zones.get(&z).map_or(0, Vec::len), state, now);
                self.zone_states.insert(z, state);
            }
            return;
        }
        let zs: Vec<(String, ZoneState)> = self
            .zone_states
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        for (z, old) in zs {
            let state = new_states.get(&z).copied().unwrap_or(ZoneState::Normal);
            if state == old {
                continue;
            }
            tracing::info!(zone = %z.replace('\0', ""), ?state, "zone is in a new state");
            self.set_limiter(&z, zones.get(&z).map_or(0, Vec::len), state, now);
            self.zone_states.insert(z, state);
        }
    }

    fn set_limiter(&mut self, zone: &str, size: usize, state: ZoneState, now: Instant) {
        let qps = match state {
            ZoneState::Normal | ZoneState::FullDisruption | ZoneState::Initial => {
                self.opts.eviction_rate
            }
            ZoneState::PartialDisruption => {
                if size > self.opts.large_cluster_size_threshold {
                    self.opts.secondary_eviction_rate
                } else {
                    0.0
                }
            }
        };
        if let Some(t) = self.tainters.get_mut(zone) {
            t.limiter.swap(qps, now);
        }
    }

    /// Upstream's MarkPodsNotReady: Ready=False on each pod of the node.
    async fn mark_pods_not_ready(&self, node: &str) -> Result<(), Error> {
        let pods = lock(&self.pods).on_node(node);
        let mut first_err = None;
        for (key, info) in pods {
            if !info.ready {
                continue;
            }
            let (ns, name) = key.split_once('/').unwrap_or(("", &key));
            let api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
            match set_pod_not_ready(&api, name).await {
                Ok(true) => {
                    self.recorder.event(
                        &pod_ref(&key),
                        EventType::Warning,
                        "NodeNotReady",
                        "Node is not ready",
                    );
                }
                Ok(false) => {}
                Err(e) if is_not_found(&e) => {}
                Err(e) => {
                    first_err.get_or_insert(Error::Pod(key.clone(), e));
                }
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Adds and removes taints with a fresh read, retrying conflicts.
    async fn swap_taints(&self, name: &str, add: &[Taint], remove: &[Taint]) -> Result<(), Error> {
        let api: Api<Node> = Api::all(self.client.clone());
        for _ in 0..UPDATE_TRIES {
            let mut node = match api.get(name).await {
                Ok(n) => n,
                Err(e) if is_not_found(&e) => return Ok(()),
                Err(e) => return Err(Error::Node(name.into(), e)),
            };
            let spec = node.spec.get_or_insert_with(Default::default);
            let current = spec.taints.clone().unwrap_or_default();
            let Some(next) = rules::swap_taints(&current, add, remove, Time(Timestamp::now()))
            else {
                return Ok(());
            };
            spec.taints = (!next.is_empty()).then_some(next);
            match api.replace(name, &PostParams::default(), &node).await {
                Ok(_) => return Ok(()),
                Err(e) if is_conflict(&e) => continue,
                Err(e) => return Err(Error::Node(name.into(), e)),
            }
        }
        Err(Error::Conflicts(name.into()))
    }
}

fn same_taints(a: &[Taint], b: &[Taint]) -> bool {
    a.len() == b.len()
        && a.iter().all(|t| {
            b.iter()
                .any(|u| u.key == t.key && u.value == t.value && u.effect == t.effect)
        })
}

/// Sets the pod's Ready condition False (fresh read, conflicts retried);
/// false if it already was.
async fn set_pod_not_ready(api: &Api<Pod>, name: &str) -> Result<bool, kube::Error> {
    let mut last = None;
    for _ in 0..UPDATE_TRIES {
        let mut pod = api.get(name).await?;
        let Some(conds) = pod.status.as_mut().and_then(|s| s.conditions.as_mut()) else {
            return Ok(false);
        };
        let Some(ready) = conds.iter_mut().find(|c| c.type_ == "Ready") else {
            return Ok(false);
        };
        if ready.status == "False" {
            return Ok(false);
        }
        ready.status = "False".into();
        ready.last_transition_time = Some(Time(Timestamp::now()));
        match api.replace_status(name, &PostParams::default(), &pod).await {
            Ok(_) => return Ok(true),
            Err(e) if is_conflict(&e) => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    match last {
        Some(e) => Err(e),
        None => Ok(false),
    }
}

/// Upstream's taint-eviction deletion: a DisruptionTarget condition, then
/// an ordinary (graceful) delete of that very pod.
async fn delete_pod_for_taint(client: &Client, key: &str, uid: &str) -> Result<(), kube::Error> {
    let (ns, name) = key.split_once('/').unwrap_or(("", key));
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let Some(mut pod) = api.get_opt(name).await? else {
        return Ok(());
    };
    if pod.metadata.uid.as_deref() != Some(uid) || pod.metadata.deletion_timestamp.is_some() {
        return Ok(());
    }
    let status = pod.status.get_or_insert_with(Default::default);
    let conds = status.conditions.get_or_insert_with(Vec::new);
    if !conds
        .iter()
        .any(|c| c.type_ == "DisruptionTarget" && c.status == "True")
    {
        conds.retain(|c| c.type_ != "DisruptionTarget");
        conds.push(PodCondition {
            type_: "DisruptionTarget".into(),
            status: "True".into(),
            reason: Some("DeletionByTaintManager".into()),
            message: Some("Taint manager: deleting due to NoExecute taint".into()),
            last_transition_time: Some(Time(Timestamp::now())),
            ..PodCondition::default()
        });
        match api.replace_status(name, &PostParams::default(), &pod).await {
            Ok(_) => {}
            Err(e) if is_not_found(&e) => return Ok(()),
            Err(e) => return Err(e),
        }
    }
    let dp = DeleteParams {
        preconditions: Some(kube::api::Preconditions {
            uid: Some(uid.to_string()),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match api.delete(name, &dp).await {
        Ok(_) => Ok(()),
        Err(e) if is_not_found(&e) => Ok(()),
        Err(e) => Err(e),
    }
}
