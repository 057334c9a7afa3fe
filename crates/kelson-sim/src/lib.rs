//! Simulated nodes: kubelets without containers. `kelson sim` registers N
//! nodes that keep their Leases and status fresh, run the pods bound to
//! them (Running and Ready with an IP from the node's podCIDR), honour
//! graceful deletion, finish pods that carry `kelson.dev/sim-exit-after`,
//! and can be told to stop heartbeating to play a failed node.
//!
//! Built to hold thousands of nodes in one process: one client, one node
//! watch and one pod watch for all of them, Lease renewals spread over the
//! renewal interval in small batches, and per node only a few words of
//! state — no task per node.

pub mod cidr;
mod node;
mod pods;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::{watcher, WatchStreamExt};
use kube::Client;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::cidr::Cidr;
pub use crate::node::{KUBELET_VERSION, LEASE_NAMESPACE};
pub use crate::pods::EXIT_AFTER_ANNOTATION;
pub use kelson_runtime::parse_go_duration;

/// A node annotation: "true" makes the sim stop heartbeating for that node
/// (no Lease renewals, no status, no pod updates), as a failed node would.
pub const STOP_HEARTBEAT_ANNOTATION: &str = "kelson.dev/sim-stop-heartbeat";

/// Batches the renewal interval is cut into: each node renews in its own.
const SLOTS: u32 = 100;

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("invalid {flag}: {message}")]
    InvalidArg { flag: &'static str, message: String },
    #[error("registering node {node}: {source}")]
    Register {
        node: String,
        #[source]
        source: kube::Error,
    },
    #[error("shut down while registering nodes")]
    Cancelled,
}

/// `kelson sim` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct SimArgs {
    /// Kubeconfig of the cluster to join.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<std::path::PathBuf>,
    /// How many nodes to simulate.
    #[arg(long)]
    pub nodes: u32,
    /// Node names are PREFIX-0, PREFIX-1, …
    #[arg(long, default_value = "sim-node")]
    pub prefix: String,
    /// CPU capacity of each node.
    #[arg(long, default_value = "32")]
    pub cpu: String,
    /// Memory capacity of each node.
    #[arg(long, default_value = "256Gi")]
    pub memory: String,
    /// Pod capacity of each node.
    #[arg(long, default_value_t = 110)]
    pub pods: u32,
    /// Spread nodes round robin over zone-0 … zone-(Z-1)
    /// (label topology.kubernetes.io/zone).
    #[arg(long)]
    pub zones: Option<u32>,
}

/// What to simulate and how; the defaults are a kubelet's.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub prefix: String,
    pub nodes: u32,
    pub cpu: String,
    pub memory: String,
    pub pods: u32,
    pub zones: Option<u32>,
    /// spec.leaseDurationSeconds of each node's Lease (40).
    pub lease_duration_seconds: i32,
    /// Lease renewal and node status check interval (10 s).
    pub heartbeat_interval: Duration,
    /// Unchanged status is still posted this often (5 min).
    pub status_report_interval: Duration,
    /// How long a pod waits for nodeipam to give its node a podCIDR before
    /// it gets an address from a stand-in range (100.64.0.0/10).
    pub pod_cidr_wait: Duration,
    /// Requests in flight at once.
    pub concurrency: usize,
}

impl SimConfig {
    pub fn new(prefix: impl Into<String>, nodes: u32) -> SimConfig {
        SimConfig {
            prefix: prefix.into(),
            nodes,
            cpu: "32".into(),
            memory: "256Gi".into(),
            pods: 110,
            zones: None,
            lease_duration_seconds: 40,
            heartbeat_interval: Duration::from_secs(10),
            status_report_interval: Duration::from_secs(300),
            pod_cidr_wait: Duration::from_secs(10),
            concurrency: 32,
        }
    }
}

impl From<&SimArgs> for SimConfig {
    fn from(a: &SimArgs) -> SimConfig {
        SimConfig {
            cpu: a.cpu.clone(),
            memory: a.memory.clone(),
            pods: a.pods,
            zones: a.zones,
            ..SimConfig::new(a.prefix.clone(), a.nodes)
        }
    }
}

/// Runs `kelson sim` until `shutdown` fires. Nodes stay registered when it
/// ends, as a stopped kubelet's do.
pub async fn run(
    client: Client,
    args: SimArgs,
    shutdown: CancellationToken,
) -> Result<(), SimError> {
    let started = std::time::Instant::now();
    let sim = Sim::start(client, SimConfig::from(&args), shutdown.clone()).await?;
    tracing::info!(
        nodes = args.nodes,
        seconds = started.elapsed().as_secs_f64(),
        "simulated nodes registered"
    );
    shutdown.cancelled().await;
    sim.wait().await;
    Ok(())
}

/// Immutable facts about one node.
struct NodeEntry {
    name: String,
    ip: String,
    zone: Option<String>,
    boot_id: String,
}

/// What the sim tracks of one node while it runs.
#[derive(Default)]
struct NodeState {
    /// Set once registered (and while the node exists).
    uid: Option<String>,
    gone: bool,
    stopped_by_api: bool,
    stopped_by_annotation: bool,
    /// Healthy conditions the API server does not show (node::unhealthy_bits).
    unhealthy: u8,
    last_status: Option<Instant>,
    pod_cidr: Option<Cidr>,
}

impl NodeState {
    fn stopped(&self) -> bool {
        self.stopped_by_api || self.stopped_by_annotation
    }
    fn live(&self) -> bool {
        self.uid.is_some() && !self.gone && !self.stopped()
    }
}

struct Inner {
    client: Client,
    config: SimConfig,
    shape: node::NodeShape,
    entries: Vec<NodeEntry>,
    by_name: HashMap<String, u32>,
    nodes: Mutex<Vec<NodeState>>,
    permits: Semaphore,
    pod_tx: mpsc::UnboundedSender<PodMsg>,
    shutdown: CancellationToken,
}

impl Inner {
    fn nodes(&self) -> MutexGuard<'_, Vec<NodeState>> {
        self.nodes.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn with_node<R>(&self, idx: u32, f: impl FnOnce(&mut NodeState) -> R) -> Option<R> {
        self.nodes().get_mut(idx as usize).map(f)
    }

    /// The node came back to life: heartbeat now and look at its pods.
    fn resumed(self: &Arc<Self>, idx: u32) {
        let _ = self.pod_tx.send(PodMsg::Resync(idx));
        let inner = self.clone();
        tokio::spawn(async move { inner.heartbeat(idx, true).await });
    }

    /// Renews the node's Lease and posts its status when due (or `force`).
    async fn heartbeat(self: Arc<Self>, idx: u32, force: bool) {
        let Some(entry) = self.entries.get(idx as usize) else {
            return;
        };
        let due = self.with_node(idx, |n| {
            if !n.live() {
                return None;
            }
            let stale = n
                .last_status
                .is_none_or(|t| t.elapsed() >= self.config.status_report_interval);
            Some((
                n.uid.clone().unwrap_or_default(),
                n.unhealthy,
                force || stale || n.unhealthy != 0,
            ))
        });
        let Some(Some((uid, unhealthy, post_status))) = due else {
            return;
        };
        let Ok(_permit) = self.permits.acquire().await else {
            return;
        };
        let now = Timestamp::now();
        if let Err(e) = self.renew_lease(&entry.name, &uid, now).await {
            tracing::debug!(node = %entry.name, error = %e, "lease renewal");
        }
        if post_status {
            let nodes: Api<Node> = Api::all(self.client.clone());
            let patch = node::status_patch(unhealthy, now);
            match nodes
                .patch_status(
                    &entry.name,
                    &PatchParams::default(),
                    &Patch::Strategic(patch),
                )
                .await
            {
                Ok(_) => {
                    self.with_node(idx, |n| {
                        n.last_status = Some(Instant::now());
                        n.unhealthy = 0;
                    });
                }
                Err(e) => tracing::debug!(node = %entry.name, error = %e, "node status"),
            }
        }
    }

    async fn renew_lease(
        &self,
        name: &str,
        node_uid: &str,
        now: Timestamp,
    ) -> Result<(), kube::Error> {
        let leases: Api<Lease> = Api::namespaced(self.client.clone(), LEASE_NAMESPACE);
        let patch = serde_json::json!({"spec": {"holderIdentity": name, "renewTime": node::micro_time(now)}});
        match leases
            .patch(name, &PatchParams::default(), &Patch::Merge(patch))
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_status(&e, 404) => {
                let lease =
                    node::lease_object(name, node_uid, self.config.lease_duration_seconds, now);
                create_json(&leases, lease).await.map(|_| ())
            }
            Err(e) => Err(e),
        }
    }

    /// Creates (or takes over) node `idx` and its Lease.
    async fn register(&self, idx: u32) -> Result<(), kube::Error> {
        let Some(entry) = self.entries.get(idx as usize) else {
            return Ok(());
        };
        let nodes: Api<Node> = Api::all(self.client.clone());
        let now = Timestamp::now();
        let id = node::NodeIdentity {
            name: &entry.name,
            ip: &entry.ip,
            zone: entry.zone.as_deref(),
        };
        let obj = node::node_object(&id, &self.shape, &entry.boot_id, now);
        let created = match create_json(&nodes, obj).await {
            Ok(n) => n,
            Err(e) if is_status(&e, 409) => {
                // A node of that name exists (a restarted sim): report its
                // status as ours, keeping what did not change.
                let existing = nodes.get(&entry.name).await?;
                let patch = node::status_patch(node::unhealthy_bits(&existing), now);
                nodes
                    .patch_status(
                        &entry.name,
                        &PatchParams::default(),
                        &Patch::Strategic(patch),
                    )
                    .await?
            }
            Err(e) => return Err(e),
        };
        let uid = created.metadata.uid.clone().unwrap_or_default();
        let cidr = created
            .spec
            .as_ref()
            .and_then(|s| s.pod_cidr.as_deref())
            .and_then(Cidr::parse);
        let stopped = has_stop_annotation(&created);
        self.renew_lease(&entry.name, &uid, now).await?;
        self.with_node(idx, |n| {
            n.uid = Some(uid);
            n.gone = false;
            n.last_status = Some(Instant::now());
            n.pod_cidr = n.pod_cidr.or(cidr);
            n.stopped_by_annotation = stopped;
        });
        Ok(())
    }
}

fn is_status(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

async fn create_json<K>(api: &Api<K>, obj: serde_json::Value) -> Result<K, kube::Error>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let typed: K = serde_json::from_value(obj).map_err(kube::Error::SerdeError)?;
    api.create(&PostParams::default(), &typed).await
}

fn has_stop_annotation(node: &Node) -> bool {
    node.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(STOP_HEARTBEAT_ANNOTATION))
        .is_some_and(|v| v == "true")
}

/// Simulated nodes at work. Dropping it does not stop them: cancel the
/// shutdown token given to [`Sim::start`], then [`Sim::wait`].
pub struct Sim {
    inner: Arc<Inner>,
    tasks: Vec<JoinHandle<()>>,
}

impl Sim {
    /// Registers the nodes and starts heartbeating and running their pods.
    /// Returns once every node is registered.
    pub async fn start(
        client: Client,
        config: SimConfig,
        shutdown: CancellationToken,
    ) -> Result<Sim, SimError> {
        let shape = node::NodeShape::new(&config.cpu, &config.memory, config.pods)?;
        if config.nodes == 0 {
            return Err(SimError::InvalidArg {
                flag: "--nodes",
                message: "must be positive".into(),
            });
        }
        if config.nodes > 700_000 {
            return Err(SimError::InvalidArg {
                flag: "--nodes",
                message: "at most 700000 (the fake node address range)".into(),
            });
        }
        if config.zones == Some(0) {
            return Err(SimError::InvalidArg {
                flag: "--zones",
                message: "must be positive".into(),
            });
        }
        if config.prefix.is_empty() {
            return Err(SimError::InvalidArg {
                flag: "--prefix",
                message: "must not be empty".into(),
            });
        }
        let now = Timestamp::now();
        let entries: Vec<NodeEntry> = (0..config.nodes)
            .map(|i| {
                let name = format!("{}-{i}", config.prefix);
                NodeEntry {
                    ip: cidr::node_ip(i).to_string(),
                    zone: config.zones.map(|z| format!("zone-{}", i % z)),
                    boot_id: node::boot_id(&name, now),
                    name,
                }
            })
            .collect();
        let by_name = entries
            .iter()
            .enumerate()
            .map(|(i, e)| (e.name.clone(), i as u32))
            .collect();
        let (pod_tx, pod_rx) = mpsc::unbounded_channel();
        let inner = Arc::new(Inner {
            permits: Semaphore::new(config.concurrency.max(1)),
            nodes: Mutex::new((0..config.nodes).map(|_| NodeState::default()).collect()),
            client,
            shape,
            entries,
            by_name,
            pod_tx,
            shutdown: shutdown.clone(),
            config,
        });
        let mut tasks = vec![tokio::spawn(watch_nodes(inner.clone()))];

        let registering = futures::stream::iter(0..inner.config.nodes)
            .map(|idx| {
                let inner = inner.clone();
                async move {
                    let mut tries = 0;
                    loop {
                        match inner.register(idx).await {
                            Ok(()) => return Ok(()),
                            Err(e) if tries < 4 && !is_status(&e, 422) && !is_status(&e, 403) => {
                                tries += 1;
                                tracing::debug!(error = %e, "registering node, retrying");
                                tokio::time::sleep(Duration::from_millis(500 * tries)).await;
                            }
                            Err(source) => {
                                return Err(SimError::Register {
                                    node: inner.entries[idx as usize].name.clone(),
                                    source,
                                })
                            }
                        }
                    }
                }
            })
            .buffer_unordered(inner.config.concurrency.max(1))
            .try_collect::<Vec<()>>();
        let outcome = tokio::select! {
            r = registering => r,
            _ = shutdown.cancelled() => Err(SimError::Cancelled),
        };
        if let Err(e) = outcome {
            shutdown.cancel();
            for t in tasks {
                let _ = t.await;
            }
            return Err(e);
        }
        tasks.push(tokio::spawn(PodLoop::new(inner.clone()).run(pod_rx)));
        tasks.push(tokio::spawn(heartbeats(inner.clone())));
        Ok(Sim { inner, tasks })
    }

    /// Names of the simulated nodes, in order.
    pub fn node_names(&self) -> Vec<String> {
        self.inner.entries.iter().map(|e| e.name.clone()).collect()
    }

    /// Stops heartbeating for `name`: its Lease and status go stale and its
    /// pods are left as they are, as if the machine had died. False if the
    /// node is not one of the sim's.
    pub fn stop_heartbeat(&self, name: &str) -> bool {
        let Some(&idx) = self.inner.by_name.get(name) else {
            return false;
        };
        self.inner
            .with_node(idx, |n| n.stopped_by_api = true)
            .is_some()
    }

    /// Resumes heartbeating for `name` (unless its node carries the
    /// stop-heartbeat annotation): Lease and status are renewed at once.
    pub fn resume_heartbeat(&self, name: &str) -> bool {
        let Some(&idx) = self.inner.by_name.get(name) else {
            return false;
        };
        let resumed = self.inner.with_node(idx, |n| {
            let was = n.stopped();
            n.stopped_by_api = false;
            was && !n.stopped()
        });
        if resumed == Some(true) {
            self.inner.resumed(idx);
        }
        resumed.is_some()
    }

    /// Whether `name` heartbeats now; None if it is not one of the sim's.
    pub fn is_heartbeating(&self, name: &str) -> Option<bool> {
        let idx = *self.inner.by_name.get(name)?;
        self.inner.with_node(idx, |n| n.live())
    }

    /// Waits for the sim's tasks to end (after shutdown).
    pub async fn wait(self) {
        self.inner.shutdown.cancelled().await;
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// Renews Leases slot by slot: node i in slot i % SLOTS, each slot once
/// per heartbeat interval, so the load is even over time.
async fn heartbeats(inner: Arc<Inner>) {
    let tick = (inner.config.heartbeat_interval / SLOTS).max(Duration::from_millis(1));
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut slot = 0u32;
    loop {
        tokio::select! {
            _ = inner.shutdown.cancelled() => return,
            _ = interval.tick() => {}
        }
        let batch: Vec<u32> = (slot..inner.config.nodes).step_by(SLOTS as usize).collect();
        slot = (slot + 1) % SLOTS;
        if batch.is_empty() {
            continue;
        }
        let inner = inner.clone();
        tokio::spawn(async move {
            futures::stream::iter(batch)
                .for_each_concurrent(None, |idx| inner.clone().heartbeat(idx, false))
                .await;
        });
    }
}

/// Follows the sim's nodes: podCIDRs from nodeipam, the stop-heartbeat
/// annotation, conditions others changed, deletion.
async fn watch_nodes(inner: Arc<Inner>) {
    let api: Api<Node> = Api::all(inner.client.clone());
    let stream = watcher(api, watcher::Config::default()).default_backoff();
    futures::pin_mut!(stream);
    loop {
        let ev = tokio::select! {
            _ = inner.shutdown.cancelled() => return,
            ev = stream.next() => ev,
        };
        let Some(ev) = ev else { return };
        let ev = match ev {
            Ok(ev) => ev,
            Err(e) => {
                tracing::debug!(error = %e, "node watch");
                continue;
            }
        };
        match ev {
            watcher::Event::Apply(n) | watcher::Event::InitApply(n) => {
                let Some(&idx) = n
                    .metadata
                    .name
                    .as_ref()
                    .and_then(|name| inner.by_name.get(name))
                else {
                    continue;
                };
                let cidr = n
                    .spec
                    .as_ref()
                    .and_then(|s| s.pod_cidr.as_deref())
                    .and_then(Cidr::parse);
                let stop = has_stop_annotation(&n);
                let bits = node::unhealthy_bits(&n);
                let uid = n.metadata.uid.clone();
                let resumed = inner.with_node(idx, |s| {
                    let was_stopped = s.stopped() || s.gone;
                    if s.uid.is_some() || s.gone {
                        s.uid = uid;
                    }
                    s.gone = false;
                    s.pod_cidr = cidr.or(s.pod_cidr);
                    s.stopped_by_annotation = stop;
                    s.unhealthy = bits;
                    was_stopped && s.live()
                });
                if resumed == Some(true) {
                    inner.resumed(idx);
                }
            }
            watcher::Event::Delete(n) => {
                if let Some(&idx) = n
                    .metadata
                    .name
                    .as_ref()
                    .and_then(|name| inner.by_name.get(name))
                {
                    inner.with_node(idx, |s| {
                        s.gone = true;
                        s.uid = None;
                    });
                }
            }
            watcher::Event::Init | watcher::Event::InitDone => {}
        }
    }
}

/// Messages to the pod loop.
enum PodMsg {
    /// A request for this pod finished.
    Done { key: String, retry: bool },
    /// A fresh copy of a pod (or None: it is gone).
    Fetched { key: String, pod: Option<Box<Pod>> },
    /// Node came back: look at all its pods.
    Resync(u32),
}

/// What the pod loop tracks of one pod.
struct PodEntry {
    uid: String,
    node: u32,
    /// Address held in the node's pool: (pool network, offset).
    ip: Option<(Cidr, u32)>,
    first_seen: Instant,
    busy: bool,
    /// Latest event seen while busy.
    pending: Option<Box<Pod>>,
    recheck_at: Option<Instant>,
}

/// Addresses in use on one node.
#[derive(Default)]
struct NodeIps {
    used: BTreeSet<(String, u32)>,
    next: u32,
}

/// The one task that runs every pod on every simulated node.
struct PodLoop {
    inner: Arc<Inner>,
    pods: HashMap<String, PodEntry>,
    ips: HashMap<u32, NodeIps>,
    timers: BTreeSet<(Instant, String)>,
    /// Keys seen since the watch (re)started.
    seen: Option<HashSet<String>>,
}

fn pod_key(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or(""),
        pod.metadata.name.as_deref().unwrap_or("")
    )
}

impl PodLoop {
    fn new(inner: Arc<Inner>) -> PodLoop {
        PodLoop {
            inner,
            pods: HashMap::new(),
            ips: HashMap::new(),
            timers: BTreeSet::new(),
            seen: None,
        }
    }

    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<PodMsg>) {
        let api: Api<Pod> = Api::all(self.inner.client.clone());
        // One watch for every bound pod; those of other nodes are skipped.
        let stream =
            watcher(api, watcher::Config::default().fields("spec.nodeName!=")).default_backoff();
        futures::pin_mut!(stream);
        let shutdown = self.inner.shutdown.clone();
        loop {
            let next_timer = self.timers.first().map(|(t, _)| *t);
            let sleep = async {
                match next_timer {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                ev = stream.next() => match ev {
                    None => return,
                    Some(Err(e)) => tracing::debug!(error = %e, "pod watch"),
                    Some(Ok(ev)) => self.on_event(ev),
                },
                msg = rx.recv() => match msg {
                    None => return,
                    Some(m) => self.on_msg(m),
                },
                _ = sleep => self.fire_timers(),
            }
        }
    }

    fn on_event(&mut self, ev: watcher::Event<Pod>) {
        match ev {
            watcher::Event::Init => self.seen = Some(HashSet::new()),
            watcher::Event::InitApply(p) => {
                if let Some(seen) = self.seen.as_mut() {
                    seen.insert(pod_key(&p));
                }
                self.handle(Box::new(p));
            }
            watcher::Event::InitDone => {
                if let Some(seen) = self.seen.take() {
                    let stale: Vec<String> = self
                        .pods
                        .keys()
                        .filter(|k| !seen.contains(*k))
                        .cloned()
                        .collect();
                    for k in stale {
                        self.forget(&k);
                    }
                }
            }
            watcher::Event::Apply(p) => self.handle(Box::new(p)),
            watcher::Event::Delete(p) => {
                let key = pod_key(&p);
                let same = self
                    .pods
                    .get(&key)
                    .is_some_and(|e| Some(e.uid.as_str()) == p.metadata.uid.as_deref());
                if same {
                    self.forget(&key);
                }
            }
        }
    }

    fn on_msg(&mut self, msg: PodMsg) {
        match msg {
            PodMsg::Done { key, retry } => {
                let Some(e) = self.pods.get_mut(&key) else {
                    return;
                };
                e.busy = false;
                if let Some(p) = e.pending.take() {
                    self.handle(p);
                } else if retry {
                    self.schedule(&key, Instant::now() + Duration::from_secs(1));
                }
            }
            PodMsg::Fetched { key, pod: Some(p) } => {
                if let Some(e) = self.pods.get_mut(&key) {
                    e.busy = false;
                }
                self.handle(p);
                let _ = key;
            }
            PodMsg::Fetched { key, pod: None } => self.forget(&key),
            PodMsg::Resync(idx) => {
                let Some(entry) = self.inner.entries.get(idx as usize) else {
                    return;
                };
                let name = entry.name.clone();
                let inner = self.inner.clone();
                tokio::spawn(async move {
                    let Ok(_permit) = inner.permits.acquire().await else {
                        return;
                    };
                    let api: Api<Pod> = Api::all(inner.client.clone());
                    let lp = ListParams::default().fields(&format!("spec.nodeName={name}"));
                    match api.list(&lp).await {
                        Ok(list) => {
                            for p in list.items {
                                let key = pod_key(&p);
                                let _ = inner.pod_tx.send(PodMsg::Fetched {
                                    key,
                                    pod: Some(Box::new(p)),
                                });
                            }
                        }
                        Err(e) => {
                            tracing::debug!(node = %name, error = %e, "listing pods of a resumed node")
                        }
                    }
                });
            }
        }
    }

    fn schedule(&mut self, key: &str, at: Instant) {
        let Some(e) = self.pods.get_mut(key) else {
            return;
        };
        if let Some(old) = e.recheck_at {
            if old <= at {
                return;
            }
            self.timers.remove(&(old, key.to_string()));
        }
        e.recheck_at = Some(at);
        self.timers.insert((at, key.to_string()));
    }

    fn fire_timers(&mut self) {
        let now = Instant::now();
        while let Some((at, key)) = self.timers.first().cloned() {
            if at > now {
                break;
            }
            self.timers.pop_first();
            let Some(e) = self.pods.get_mut(&key) else {
                continue;
            };
            e.recheck_at = None;
            if e.busy {
                continue;
            }
            e.busy = true;
            let (ns, name) = key
                .split_once('/')
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .unwrap_or_default();
            let inner = self.inner.clone();
            tokio::spawn(async move {
                let Ok(_permit) = inner.permits.acquire().await else {
                    return;
                };
                let api: Api<Pod> = Api::namespaced(inner.client.clone(), &ns);
                let msg = match api.get_opt(&name).await {
                    Ok(p) => PodMsg::Fetched {
                        key,
                        pod: p.map(Box::new),
                    },
                    Err(e) => {
                        tracing::debug!(error = %e, "re-reading pod");
                        PodMsg::Done { key, retry: true }
                    }
                };
                let _ = inner.pod_tx.send(msg);
            });
        }
    }

    fn forget(&mut self, key: &str) {
        if let Some(e) = self.pods.remove(key) {
            if let Some(at) = e.recheck_at {
                self.timers.remove(&(at, key.to_string()));
            }
            self.release(e.node, e.ip);
        }
    }

    fn release(&mut self, node: u32, ip: Option<(Cidr, u32)>) {
        if let Some((cidr, off)) = ip {
            if let Some(ips) = self.ips.get_mut(&node) {
                ips.used.remove(&(cidr.to_string(), off));
            }
        }
    }

    /// Takes the next free address of `cidr` on `node` (round robin, as
    /// host-local IPAM does).
    fn allocate(&mut self, node: u32, cidr: Cidr) -> Option<u32> {
        let ips = self.ips.entry(node).or_default();
        let range = cidr.pod_offsets();
        let span = range.end.saturating_sub(range.start);
        if span == 0 {
            return None;
        }
        let key = cidr.to_string();
        for i in 0..span {
            let off = range.start + (ips.next.wrapping_add(i) % span);
            if !ips.used.contains(&(key.clone(), off)) {
                ips.used.insert((key, off));
                ips.next = off - range.start + 1;
                return Some(off);
            }
        }
        None
    }

    fn claim(&mut self, node: u32, cidr: Cidr, off: u32) {
        self.ips
            .entry(node)
            .or_default()
            .used
            .insert((cidr.to_string(), off));
    }

    fn handle(&mut self, pod: Box<Pod>) {
        let Some(node_name) = pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) else {
            return;
        };
        let Some(&idx) = self.inner.by_name.get(node_name) else {
            return;
        };
        let node_view = self.inner.with_node(idx, |n| (n.live(), n.pod_cidr));
        let Some((live, node_cidr)) = node_view else {
            return;
        };
        if !live {
            // A dead kubelet does nothing; a resume looks again.
            return;
        }
        let key = pod_key(&pod);
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        if self.pods.get(&key).is_some_and(|e| e.uid != uid) {
            self.forget(&key);
        }
        let entry = self.pods.entry(key.clone()).or_insert_with(|| PodEntry {
            uid,
            node: idx,
            ip: None,
            first_seen: Instant::now(),
            busy: false,
            pending: None,
            recheck_at: None,
        });
        if entry.busy {
            entry.pending = Some(pod);
            return;
        }
        let first_seen = entry.first_seen;
        let known_ip = entry.ip;
        // Remember an address the pod already has (e.g. after a restart).
        if known_ip.is_none() {
            if let Some(ip) = pods::pod_ip(&pod) {
                let fallback = cidr::fallback_pod_cidr(idx);
                let pool = [node_cidr, Some(fallback)]
                    .into_iter()
                    .flatten()
                    .find_map(|c| c.offset_of(ip).map(|o| (c, o as u32)));
                if let Some((c, off)) = pool {
                    if !matches!(
                        pods::plan(&pod, Timestamp::now()),
                        pods::Plan::Release | pods::Plan::Remove
                    ) {
                        self.claim(idx, c, off);
                        if let Some(e) = self.pods.get_mut(&key) {
                            e.ip = Some((c, off));
                        }
                    }
                }
            }
        }
        let now = Timestamp::now();
        match pods::plan(&pod, now) {
            pods::Plan::Nothing => {}
            pods::Plan::ExitAt(at) => {
                let wait = at.duration_since(now).unsigned_abs();
                self.schedule(&key, Instant::now() + wait);
            }
            pods::Plan::Release => {
                let ip = self.pods.get_mut(&key).and_then(|e| e.ip.take());
                self.release(idx, ip);
            }
            pods::Plan::Start | pods::Plan::Resync => {
                let held = self.pods.get(&key).and_then(|e| e.ip);
                let ip = match held {
                    Some(ip) => Some(ip),
                    None => {
                        let pool = match node_cidr {
                            Some(c) => Some(c),
                            None if first_seen.elapsed() >= self.inner.config.pod_cidr_wait => {
                                Some(cidr::fallback_pod_cidr(idx))
                            }
                            None => None,
                        };
                        match pool {
                            None => {
                                // Wait for nodeipam; look again shortly.
                                let again = (first_seen + self.inner.config.pod_cidr_wait)
                                    .min(Instant::now() + Duration::from_millis(500));
                                self.schedule(&key, again);
                                return;
                            }
                            Some(c) => match self.allocate(idx, c) {
                                Some(off) => Some((c, off)),
                                None => {
                                    tracing::warn!(pod = %key, cidr = %c, "no free pod address on node");
                                    self.schedule(&key, Instant::now() + Duration::from_secs(5));
                                    return;
                                }
                            },
                        }
                    }
                };
                let Some((c, off)) = ip else { return };
                let Some(addr) = c.nth(u128::from(off)) else {
                    return;
                };
                if let Some(e) = self.pods.get_mut(&key) {
                    e.ip = Some((c, off));
                }
                let host_ip = self.inner.entries[idx as usize].ip.clone();
                let patch = pods::running_status(&pod, &host_ip, &addr.to_string(), now);
                self.send(key, &pod, Action::Status(patch));
            }
            pods::Plan::Exit => {
                let patch = pods::exited_status(&pod, now);
                if patch["status"]["phase"] == "Succeeded" || patch["status"]["phase"] == "Failed" {
                    let ip = self.pods.get_mut(&key).and_then(|e| e.ip.take());
                    self.release(idx, ip);
                }
                self.send(key, &pod, Action::Status(patch));
            }
            pods::Plan::Kill => {
                let patch = pods::killed_status(&pod, now);
                let ip = self.pods.get_mut(&key).and_then(|e| e.ip.take());
                self.release(idx, ip);
                self.send(key, &pod, Action::KillAndDelete(patch));
            }
            pods::Plan::Remove => {
                let ip = self.pods.get_mut(&key).and_then(|e| e.ip.take());
                self.release(idx, ip);
                self.send(key, &pod, Action::Delete);
            }
        }
    }

    /// Sends the request in the background; the loop hears back through
    /// PodMsg::Done.
    fn send(&mut self, key: String, pod: &Pod, action: Action) {
        let Some(e) = self.pods.get_mut(&key) else {
            return;
        };
        e.busy = true;
        let inner = self.inner.clone();
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let uid = pod.metadata.uid.clone();
        tokio::spawn(async move {
            let retry = {
                let Ok(_permit) = inner.permits.acquire().await else {
                    return;
                };
                let api: Api<Pod> = Api::namespaced(inner.client.clone(), &ns);
                let result = perform(&api, &name, uid, action).await;
                match result {
                    Ok(()) => false,
                    Err(e) if is_status(&e, 404) => false,
                    Err(e) => {
                        tracing::debug!(pod = %name, error = %e, "pod update");
                        true
                    }
                }
            };
            let _ = inner.pod_tx.send(PodMsg::Done { key, retry });
        });
    }
}

enum Action {
    Status(serde_json::Value),
    KillAndDelete(serde_json::Value),
    Delete,
}

async fn perform(
    api: &Api<Pod>,
    name: &str,
    uid: Option<String>,
    action: Action,
) -> Result<(), kube::Error> {
    let pp = PatchParams::default();
    // Like the kubelet's status manager: the final delete names the pod's
    // UID, so a new pod of the same name is never hit.
    let delete = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions {
            uid,
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match action {
        Action::Status(patch) => api
            .patch_status(name, &pp, &Patch::Merge(patch))
            .await
            .map(|_| ()),
        Action::KillAndDelete(patch) => {
            api.patch_status(name, &pp, &Patch::Merge(patch)).await?;
            api.delete(name, &delete).await.map(|_| ())
        }
        Action::Delete => api.delete(name, &delete).await.map(|_| ()),
    }
}
