//! The DaemonSet controller (upstream pkg/controller/daemon): one pod per
//! eligible node. A node is eligible when the template's nodeSelector,
//! required node affinity and tolerations (plus the daemon defaults) fit it;
//! a pod already on a node stays while it tolerates the node's NoExecute
//! taints. Pods are placed by the default scheduler through a required
//! `metadata.name In [node]` affinity term, as upstream since 1.12.
//!
//! Each sync: claims pods and ControllerRevisions, makes sure the revision
//! of the current template exists, creates missing pods (slow-start
//! batches), deletes failed (with back-off), surplus and misplaced ones,
//! replaces old pods under the RollingUpdate strategy honouring
//! maxUnavailable / maxSurge, trims the revision history and reports
//! status. Node, pod and revision events trigger the DaemonSets they
//! concern.

mod update;
pub mod util;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet, DaemonSetStatus};
use k8s_openapi::api::core::v1::{Node, Pod};
use kelson_runtime::{EventType, Recorder};
use kube::api::{Api, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::store::Writer;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Client, ResourceExt};
use tokio_util::sync::CancellationToken;

use crate::history;
use crate::informers::Informers;
use crate::podcontrol::{
    self, claim, indexed_watch, is_pod_available, is_pod_ready, owners_of_child, pod_from_template,
    ClaimOwner, Expectations, OwnerIndex, PodControl, Selector,
};
use crate::runner;
use util::Placement;

/// Events' source component, as upstream names it.
pub const COMPONENT: &str = "daemonset-controller";
/// Upstream's cap on creations or deletions in one sync (lower than the
/// ReplicaSet's, to spare image registries).
pub const BURST_REPLICAS: usize = 250;

/// Event reasons, as upstream.
pub const SELECTING_ALL: &str = "SelectingAll";
pub const FAILED_DAEMON_POD: &str = "FailedDaemonPod";
pub const SUCCEEDED_DAEMON_POD: &str = "SucceededDaemonPod";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Pods(#[from] podcontrol::Error),
    #[error("failed to construct revisions of DaemonSet: {0}")]
    History(#[source] history::Error),
    #[error("failed to clean up revisions of DaemonSet: {0}")]
    Cleanup(#[source] history::Error),
    #[error("{0}: {1}")]
    Api(String, #[source] kube::Error),
    #[error("couldn't get unavailable numbers: {0}")]
    Counts(#[from] util::Error),
    #[error("{} errors, first: {}", .0.len(), .0.first().map(|e| e.to_string()).unwrap_or_default())]
    Several(Vec<podcontrol::Error>),
}

/// Tunables; the defaults are upstream's.
#[derive(Debug, Clone)]
pub struct Options {
    /// DaemonSets synced at the same time (--concurrent-daemonset-syncs).
    pub workers: u16,
    /// Most pods created or deleted in one sync.
    pub burst_replicas: usize,
    /// First and longest wait before deleting another failed pod on the
    /// same node.
    pub failed_pod_backoff: (Duration, Duration),
}

impl Default for Options {
    fn default() -> Self {
        Options {
            workers: 2,
            burst_replicas: BURST_REPLICAS,
            failed_pod_backoff: (Duration::from_secs(1), Duration::from_secs(15 * 60)),
        }
    }
}

// ---------------------------------------------------------------------------
// Back-off for failed pods

#[derive(Debug, Clone, Copy)]
struct BackoffEntry {
    backoff: Duration,
    last_update: Instant,
}

/// Upstream's flowcontrol.Backoff as the DaemonSet controller uses it: a
/// per-(DaemonSet, generation, node) delay that doubles each time a failed
/// pod is deleted there, so a kubelet rejecting the pod is not hot-looped.
#[derive(Debug)]
struct Backoff {
    entries: Mutex<HashMap<String, BackoffEntry>>,
    initial: Duration,
    max: Duration,
}

impl Backoff {
    fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff {
            entries: Mutex::new(HashMap::new()),
            initial,
            max,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, BackoffEntry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn expired(&self, e: &BackoffEntry, now: Instant) -> bool {
        now.saturating_duration_since(e.last_update) > self.max * 2
    }

    /// Whether less than the current delay has passed since the last step.
    fn in_backoff(&self, key: &str, now: Instant) -> bool {
        self.lock().get(key).is_some_and(|e| {
            !self.expired(e, now) && now.saturating_duration_since(e.last_update) < e.backoff
        })
    }

    fn delay(&self, key: &str) -> Duration {
        self.lock().get(key).map_or(Duration::ZERO, |e| e.backoff)
    }

    /// Steps the delay for `key` (and forgets long-expired keys).
    fn next(&self, key: &str, now: Instant) {
        let mut map = self.lock();
        map.retain(|_, e| !self.expired(e, now));
        let backoff = match map.get(key) {
            Some(e) => (e.backoff * 2).min(self.max),
            None => self.initial,
        };
        map.insert(
            key.to_string(),
            BackoffEntry {
                backoff,
                last_update: now,
            },
        );
    }
}

// ---------------------------------------------------------------------------
// Controller

struct Context {
    client: Client,
    pods: Arc<OwnerIndex<Pod>>,
    revisions: Arc<OwnerIndex<ControllerRevision>>,
    nodes: Store<Node>,
    /// Creations and deletions in flight, in two trackers because
    /// podcontrol's tracker holds one kind per owner at a time.
    creations: Arc<Expectations>,
    deletions: Arc<Expectations>,
    pod_control: PodControl,
    recorder: Recorder,
    failed_pods: Backoff,
    /// Consecutive failed syncs per DaemonSet UID, for the retry delay.
    failures: Mutex<HashMap<String, u32>>,
    options: Options,
}

impl Context {
    fn satisfied(&self, uid: &str) -> bool {
        // Both are asked: `satisfied` also clears a fulfilled entry.
        let c = self.creations.satisfied(uid);
        let d = self.deletions.satisfied(uid);
        c && d
    }

    fn failures(&self) -> std::sync::MutexGuard<'_, HashMap<String, u32>> {
        self.failures.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Runs the DaemonSet controller until `shutdown` fires.
pub async fn run(client: Client, shutdown: CancellationToken) {
    run_with(Informers::new(client), shutdown, Options::default()).await;
}

/// Runs the controller with `options`.
pub async fn run_with(informers: Informers, shutdown: CancellationToken, options: Options) {
    let client = informers.client().clone();
    let creations = Arc::new(Expectations::default());
    let deletions = Arc::new(Expectations::default());
    let (c, d) = (creations.clone(), deletions.clone());
    let (pods, pod_stream) = indexed_watch::<Pod, _>(&informers, move |n| {
        c.observe(n);
        d.observe(n);
    });
    let (revisions, rev_stream) = indexed_watch::<ControllerRevision, _>(&informers, |_| {});
    let (node_reader, node_writer) = reflector::store::<Node>();

    let recorder = Recorder::new(client.clone(), COMPONENT, "");
    let (initial, max) = options.failed_pod_backoff;
    let controller = runner::controller::<DaemonSet>(&client, options.workers);
    let ds_store = controller.store();
    let node_stream = node_triggers(
        Api::all(client.clone()),
        node_reader.clone(),
        node_writer,
        ds_store.clone(),
    );
    let ctx = Arc::new(Context {
        pod_control: PodControl::new(client.clone(), recorder.clone()),
        recorder: recorder.clone(),
        client,
        pods,
        revisions,
        nodes: node_reader,
        creations,
        deletions,
        failed_pods: Backoff::new(initial, max),
        failures: Mutex::new(HashMap::new()),
        options,
    });
    let (s1, s2) = (ds_store.clone(), ds_store);
    let controller = controller
        .watches_shared_stream(pod_stream, move |pod: Arc<Pod>| {
            owners_of_child(&s1, &pod.metadata, ds_selector)
        })
        .watches_shared_stream(rev_stream, move |rev: Arc<ControllerRevision>| {
            owners_of_child(&s2, &rev.metadata, ds_selector)
        })
        .reconcile_on(node_stream)
        .graceful_shutdown_on(shutdown.cancelled_owned())
        .run(reconcile, error_policy, ctx);
    runner::drive(controller, "daemonset sync").await;
    recorder.flush().await;
}

fn ds_selector(ds: &DaemonSet) -> Result<Selector, podcontrol::Error> {
    Selector::from_label_selector(ds.spec.as_ref().map(|s| &s.selector))
}

/// A watch of nodes feeding `writer`, yielding the DaemonSets each change
/// concerns (upstream's addNode / updateNode): a new node triggers those
/// that should run there; a relabelled or retainted node those whose
/// verdict changed; heartbeats and other status updates trigger nothing.
/// Upstream ignores node deletions; here they trigger the DaemonSets that
/// had the node, so desiredNumberScheduled drops and pods pending for the
/// node go without waiting for another event.
fn node_triggers(
    api: Api<Node>,
    reader: Store<Node>,
    mut writer: Writer<Node>,
    daemonsets: Store<DaemonSet>,
) -> impl Stream<Item = ObjectRef<DaemonSet>> + Send {
    watcher(api, watcher::Config::default())
        .default_backoff()
        // Only names, labels and taints matter here; node status (images,
        // conditions) is most of a node's size.
        .modify(|n: &mut Node| {
            n.metadata.managed_fields = None;
            n.metadata.annotations = None;
            n.status = None;
        })
        .map(move |ev| {
            let refs = match ev {
                Ok(ev) => {
                    let refs = affected_by_node_event(&ev, &reader, &daemonsets);
                    writer.apply_watcher_event(&ev);
                    refs
                }
                Err(e) => {
                    tracing::debug!(error = %e, "node watch");
                    Vec::new()
                }
            };
            futures::stream::iter(refs)
        })
        .flatten()
}

fn affected_by_node_event(
    ev: &watcher::Event<Node>,
    nodes: &Store<Node>,
    daemonsets: &Store<DaemonSet>,
) -> Vec<ObjectRef<DaemonSet>> {
    let select = |f: &dyn Fn(&Placement) -> bool| -> Vec<ObjectRef<DaemonSet>> {
        daemonsets
            .state()
            .iter()
            .filter(|ds| f(&Placement::new(ds)))
            .map(|ds| ObjectRef::from_obj(ds.as_ref()))
            .collect()
    };
    match ev {
        watcher::Event::Apply(node) => match nodes.get(&ObjectRef::from_obj(node)) {
            None => select(&|p| p.should_run(node).0),
            Some(old) => {
                let taints = |n: &Node| n.spec.as_ref().and_then(|s| s.taints.clone());
                if old.metadata.labels == node.metadata.labels && taints(&old) == taints(node) {
                    return Vec::new();
                }
                select(&|p| p.should_run(&old) != p.should_run(node))
            }
        },
        watcher::Event::Delete(node) => select(&|p| {
            let (run, stay) = p.should_run(node);
            run || stay
        }),
        // A relist may hide any change: look at everything once it is done.
        watcher::Event::InitDone => select(&|_| true),
        watcher::Event::Init | watcher::Event::InitApply(_) => Vec::new(),
    }
}

fn error_policy(ds: Arc<DaemonSet>, err: &Error, ctx: Arc<Context>) -> Action {
    tracing::warn!(
        namespace = ds.metadata.namespace.as_deref().unwrap_or(""),
        name = ds.metadata.name.as_deref().unwrap_or(""),
        error = %err,
        "daemonset sync failed"
    );
    // Upstream's per-item exponential retry: 5 ms doubling up to 1000 s.
    let uid = ds.metadata.uid.clone().unwrap_or_default();
    let mut failures = ctx.failures();
    let n = failures.entry(uid).or_insert(0);
    *n = n.saturating_add(1);
    let delay = Duration::from_millis(5)
        .saturating_mul(1u32 << (*n).min(20))
        .min(Duration::from_secs(1000));
    Action::requeue(delay)
}

/// What a sync leaves to do later.
#[derive(Default)]
struct Later {
    requeue: Option<Duration>,
}

impl Later {
    fn after(&mut self, d: Duration) {
        self.requeue = Some(self.requeue.map_or(d, |r| r.min(d)));
    }
}

/// Claimed pods grouped by the node they are for (upstream's
/// getNodesToDaemonPods); finished pods already being deleted are left out
/// unless `with_deleted_terminal`.
fn pods_by_node(pods: &[Arc<Pod>], with_deleted_terminal: bool) -> BTreeMap<String, Vec<Arc<Pod>>> {
    let mut out: BTreeMap<String, Vec<Arc<Pod>>> = BTreeMap::new();
    for p in pods {
        if !with_deleted_terminal && is_terminal(p) && p.metadata.deletion_timestamp.is_some() {
            continue;
        }
        if let Some(node) = util::target_node_name(p) {
            out.entry(node.to_string()).or_default().push(p.clone());
        }
    }
    out
}

fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

fn is_terminal(pod: &Pod) -> bool {
    matches!(phase(pod), "Failed" | "Succeeded")
}

async fn reconcile(ds: Arc<DaemonSet>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ready = ctx.pods.store().wait_until_ready().await.is_ok()
        && ctx.nodes.wait_until_ready().await.is_ok()
        && ctx.revisions.store().wait_until_ready().await.is_ok();
    if !ready {
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    let (Some(uid), Some(_)) = (ds.metadata.uid.clone(), ds.metadata.namespace.as_ref()) else {
        return Ok(Action::await_change());
    };
    let result = sync(&ds, &uid, &ctx).await;
    if result.is_ok() {
        ctx.failures().remove(&uid);
    }
    result
}

async fn sync(ds: &DaemonSet, uid: &str, ctx: &Context) -> Result<Action, Error> {
    let namespace = ds.metadata.namespace.clone().unwrap_or_default();
    let name = ds.name_any();
    let selector = match ds_selector(ds) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(%namespace, %name, error = %e, "invalid selector");
            return Ok(Action::await_change());
        }
    };
    if selector.is_everything() {
        ctx.recorder.event_for(
            ds,
            EventType::Warning,
            SELECTING_ALL,
            "This daemon set is selecting all pods. A non-empty selector is required.",
        );
        return Ok(Action::await_change());
    }
    // While the DaemonSet is deleted its revisions may already be gone:
    // upstream neither manages pods nor reports status then.
    if ds.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }

    let current = update::construct_history(ctx, ds, uid, &selector).await?;
    let hash = current.hash.clone();
    let nodes = ctx.nodes.state();
    let placement = Placement::new(ds);
    let mut later = Later::default();

    let satisfied = ctx.satisfied(uid);
    let mut sync_err = None;
    if satisfied {
        if let Err(e) = update_daemon_set(
            ctx, ds, uid, &selector, &nodes, &placement, &current, &mut later,
        )
        .await
        {
            sync_err = Some(e);
        }
    }

    // Status from the cache, as upstream: what was just created or deleted
    // shows up with the watch events that follow.
    let owned = ctx.pods.children(&namespace, uid, false);
    let by_node = pods_by_node(&owned, false);
    let counts = calculate_status(ds, &nodes, &placement, &by_node, &hash, Timestamp::now());
    let status_err = update_status(ctx, ds, &counts, satisfied, current.collision_count)
        .await
        .err();
    if let Some(e) = sync_err {
        if let Some(s) = status_err {
            tracing::warn!(%namespace, %name, error = %s, "failed to update status");
        }
        return Err(e);
    }
    if let Some(e) = status_err {
        return Err(e);
    }

    let min_ready = min_ready_seconds(ds);
    if min_ready > 0 && counts.ready != counts.available {
        // Pods become available by the passing of time, not by an event.
        later.after(Duration::from_secs(min_ready as u64));
    }
    if !ctx.satisfied(uid) {
        // Level-triggered safety net should a watch event go missing.
        later.after(podcontrol::EXPECTATIONS_TIMEOUT);
    }
    Ok(match later.requeue {
        Some(d) => Action::requeue(d),
        None => Action::await_change(),
    })
}

fn min_ready_seconds(ds: &DaemonSet) -> i32 {
    ds.spec
        .as_ref()
        .and_then(|s| s.min_ready_seconds)
        .unwrap_or(0)
}

/// Upstream's updateDaemonSet: manage, then (if nothing is in flight) the
/// rolling update, then history cleanup.
#[allow(clippy::too_many_arguments)]
async fn update_daemon_set(
    ctx: &Context,
    ds: &DaemonSet,
    uid: &str,
    selector: &Selector,
    nodes: &[Arc<Node>],
    placement: &Placement,
    current: &update::Current,
    later: &mut Later,
) -> Result<(), Error> {
    let namespace = ds.metadata.namespace.clone().unwrap_or_default();
    let name = ds.name_any();
    let owner = ClaimOwner {
        reference: podcontrol::controller_ref(ds),
        namespace: &namespace,
        deleting: false,
    };
    let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
    let ds_api: Api<DaemonSet> = Api::namespaced(ctx.client.clone(), &namespace);
    let candidates = ctx.pods.children(&namespace, uid, true);
    let claimed = claim(&pods_api, &owner, selector, candidates, || {
        can_adopt(&ds_api, &name, uid)
    })
    .await?;
    let by_node = pods_by_node(&claimed, false);

    let (to_create, to_delete) = manage_plan(
        ctx,
        ds,
        uid,
        nodes,
        placement,
        &by_node,
        &current.hash,
        later,
    );
    let issued = sync_nodes(ctx, ds, uid, to_delete, to_create, &current.hash).await?;

    // The rolling update works off the same snapshot, valid only while
    // nothing was created or deleted since.
    if issued == 0 && ctx.satisfied(uid) {
        let rolling = ds
            .spec
            .as_ref()
            .and_then(|s| s.update_strategy.as_ref())
            .and_then(|u| u.type_.as_deref())
            .unwrap_or("RollingUpdate")
            == "RollingUpdate";
        if rolling {
            let (delete, create) = update::rolling_update_plan(
                ds,
                placement,
                nodes,
                &by_node,
                &current.hash,
                Timestamp::now(),
            )?;
            sync_nodes(ctx, ds, uid, delete, create, &current.hash).await?;
        }
    }

    update::cleanup_history(ctx, ds, &current.old, &claimed).await
}

/// Upstream's canAdopt: a fresh read proves the DaemonSet still exists with
/// this UID and is not being deleted, so a stale cache cannot adopt.
async fn can_adopt(api: &Api<DaemonSet>, name: &str, uid: &str) -> Result<(), podcontrol::Error> {
    match api.get(name).await {
        Ok(fresh) if fresh.metadata.uid.as_deref() != Some(uid) => {
            Err(podcontrol::Error::CanAdopt(
                name.into(),
                format!(
                    "original DaemonSet {name} is gone: got uid {:?}, wanted {uid}",
                    fresh.metadata.uid
                ),
            ))
        }
        Ok(fresh) if fresh.metadata.deletion_timestamp.is_some() => {
            Err(podcontrol::Error::CanAdopt(
                name.into(),
                format!("DaemonSet {name} has just been deleted"),
            ))
        }
        Ok(_) => Ok(()),
        Err(e) => Err(podcontrol::Error::CanAdopt(name.into(), e.to_string())),
    }
}

/// Upstream's manage: for every node, the pod to create or the pods to
/// delete (podsShouldBeOnNode), plus unscheduled pods waiting for nodes
/// that no longer exist (nobody else deletes those: pod GC only handles
/// bound pods). Returns (nodes needing pods, pods to delete).
#[allow(clippy::too_many_arguments)]
fn manage_plan(
    ctx: &Context,
    ds: &DaemonSet,
    uid: &str,
    nodes: &[Arc<Node>],
    placement: &Placement,
    by_node: &BTreeMap<String, Vec<Arc<Pod>>>,
    hash: &str,
    later: &mut Later,
) -> (Vec<String>, Vec<String>) {
    let mut create = Vec::new();
    let mut delete = Vec::new();
    let now = Instant::now();
    let observed = ds
        .status
        .as_ref()
        .and_then(|s| s.observed_generation)
        .unwrap_or(0);
    let namespace = ds.metadata.namespace.as_deref().unwrap_or("");
    for node in nodes {
        let node_name = node.metadata.name.as_deref().unwrap_or("");
        let (should_run, should_stay) = placement.should_run(node);
        let pods = by_node.get(node_name);
        match pods {
            None if should_run => create.push(node_name.to_string()),
            Some(pods) if should_stay => {
                let mut running: Vec<&Arc<Pod>> = Vec::new();
                for p in pods {
                    if p.metadata.deletion_timestamp.is_some() {
                        continue;
                    }
                    let pod_name = p.metadata.name.as_deref().unwrap_or("");
                    match phase(p) {
                        "Failed" => {
                            // Kubelets that reject the pod would otherwise
                            // have it recreated in a hot loop.
                            let key = format!("{uid}/{observed}/{node_name}");
                            if ctx.failed_pods.in_backoff(&key, now) {
                                later.after(ctx.failed_pods.delay(&key));
                                continue;
                            }
                            ctx.failed_pods.next(&key, now);
                            ctx.recorder.event_for(
                                ds,
                                EventType::Warning,
                                FAILED_DAEMON_POD,
                                format!("Found failed daemon pod {namespace}/{pod_name} on node {node_name}, will try to kill it"),
                            );
                            delete.push(pod_name.to_string());
                        }
                        "Succeeded" => {
                            ctx.recorder.event_for(
                                ds,
                                EventType::Normal,
                                SUCCEEDED_DAEMON_POD,
                                format!("Found succeeded daemon pod {namespace}/{pod_name} on node {node_name}, will try to delete it"),
                            );
                            delete.push(pod_name.to_string());
                        }
                        _ => running.push(p),
                    }
                }
                let (c, d) = excess_on_node(ds, running, should_run, hash, Timestamp::now());
                if c {
                    create.push(node_name.to_string());
                }
                delete.extend(d);
            }
            Some(pods) if !should_stay => {
                delete.extend(
                    pods.iter()
                        .filter(|p| p.metadata.deletion_timestamp.is_none())
                        .filter_map(|p| p.metadata.name.clone()),
                );
            }
            _ => {}
        }
    }
    let existing: HashSet<&str> = nodes
        .iter()
        .filter_map(|n| n.metadata.name.as_deref())
        .collect();
    for (node, pods) in by_node {
        if existing.contains(node.as_str()) {
            continue;
        }
        delete.extend(
            pods.iter()
                .filter(|p| !util::is_scheduled(p))
                .filter_map(|p| p.metadata.name.clone()),
        );
    }
    (create, delete)
}

/// Which of the live pods on a node go (the second half of upstream's
/// podsShouldBeOnNode), and whether a pod must be created. Without surge
/// only the oldest stays. With surge an old and a new pod may coexist while
/// the new one is not yet available and the old one still ready.
fn excess_on_node(
    ds: &DaemonSet,
    mut running: Vec<&Arc<Pod>>,
    should_run: bool,
    hash: &str,
    now: Timestamp,
) -> (bool, Vec<String>) {
    let name = |p: &Pod| p.metadata.name.clone().unwrap_or_default();
    running.sort_by(|a, b| util::oldest_first(a, b));
    if !util::allows_surge(ds) {
        return (false, running.iter().skip(1).map(|p| name(p)).collect());
    }
    if running.len() <= 1 {
        return (running.is_empty() && should_run, Vec::new());
    }
    let mut delete = Vec::new();
    let mut oldest_new: Option<&Arc<Pod>> = None;
    let mut oldest_old: Option<&Arc<Pod>> = None;
    for p in running {
        let is_new = p
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(history::CONTROLLER_REVISION_HASH_LABEL))
            .is_some_and(|h| h == hash);
        let slot = if is_new {
            &mut oldest_new
        } else {
            &mut oldest_old
        };
        if slot.is_none() {
            *slot = Some(p);
        } else {
            delete.push(name(p));
        }
    }
    if let (Some(new), Some(old)) = (oldest_new, oldest_old) {
        if !is_pod_ready(old) || is_pod_available(new, min_ready_seconds(ds), now) {
            delete.push(name(old));
        }
    }
    (false, delete)
}

/// Upstream's syncNodes: deletes `to_delete` and creates a pod for each of
/// `to_create` (at most `burst_replicas` each), creations in slow-start
/// batches. Returns how many calls were issued.
async fn sync_nodes(
    ctx: &Context,
    ds: &DaemonSet,
    uid: &str,
    mut to_delete: Vec<String>,
    mut to_create: Vec<String>,
    hash: &str,
) -> Result<usize, Error> {
    let burst = ctx.options.burst_replicas;
    to_create.truncate(burst);
    to_delete.truncate(burst);
    if to_create.is_empty() && to_delete.is_empty() {
        return Ok(0);
    }
    let namespace = ds.metadata.namespace.clone().unwrap_or_default();
    let keys: Vec<String> = to_delete
        .iter()
        .map(|n| format!("{namespace}/{n}"))
        .collect();
    // Expectations before acting, so that fast watch events are counted
    // (create_pods sets those of the creations).
    ctx.deletions.expect_deletions(uid, keys.iter().cloned());

    let owner_ref = kelson_runtime::events::object_reference(ds);
    let mut errors = Vec::new();
    if !to_create.is_empty() {
        let template = ds
            .spec
            .as_ref()
            .map(|s| util::create_pod_template(&s.template, util::template_generation(ds), hash))
            .unwrap_or_default();
        let controller_ref = podcontrol::controller_ref(ds);
        let ds_name = ds.name_any();
        let (_, err) = ctx
            .pod_control
            .create_pods(
                &ctx.creations,
                uid,
                &namespace,
                &owner_ref,
                to_create.len(),
                |i| {
                    let mut t = template.clone();
                    if let Some(spec) = t.spec.as_mut() {
                        spec.affinity = Some(util::replace_node_name_affinity(
                            spec.affinity.take(),
                            &to_create[i],
                        ));
                    }
                    pod_from_template(&t, &ds_name, Some(controller_ref.clone()))
                },
            )
            .await;
        errors.extend(err);
    }
    let results = futures::future::join_all(to_delete.iter().map(|pod| {
        let namespace = &namespace;
        let owner_ref = &owner_ref;
        async move { ctx.pod_control.delete_pod(namespace, pod, owner_ref).await }
    }))
    .await;
    for (r, key) in results.into_iter().zip(&keys) {
        if let Err(e) = r {
            ctx.deletions.deletion_observed(uid, key);
            if !e.is_not_found() {
                errors.push(e);
            }
        }
    }
    let issued = to_create.len() + to_delete.len();
    match errors.len() {
        0 => Ok(issued),
        1 => Err(errors.remove(0).into()),
        _ => Err(Error::Several(errors)),
    }
}

// ---------------------------------------------------------------------------
// Status

/// The counters of a DaemonSet's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counts {
    pub desired: i32,
    pub current: i32,
    pub misscheduled: i32,
    pub ready: i32,
    pub updated: i32,
    pub available: i32,
    pub unavailable: i32,
}

/// Upstream's updateDaemonSetStatus counting: per node that should run the
/// daemon, whether it has a pod, and whether its oldest pod is ready,
/// available and of the current revision; pods on nodes that should not
/// run it are misscheduled.
pub fn calculate_status(
    ds: &DaemonSet,
    nodes: &[Arc<Node>],
    placement: &Placement,
    by_node: &BTreeMap<String, Vec<Arc<Pod>>>,
    hash: &str,
    now: Timestamp,
) -> Counts {
    let mut c = Counts::default();
    let generation = util::template_generation(ds);
    let min_ready = min_ready_seconds(ds);
    for node in nodes {
        let (should_run, _) = placement.should_run(node);
        let pods = node
            .metadata
            .name
            .as_ref()
            .and_then(|n| by_node.get(n))
            .filter(|p| !p.is_empty());
        if !should_run {
            if pods.is_some() {
                c.misscheduled += 1;
            }
            continue;
        }
        c.desired += 1;
        let Some(pods) = pods else { continue };
        c.current += 1;
        let Some(pod) = pods.iter().min_by(|a, b| util::oldest_first(a, b)) else {
            continue;
        };
        if is_pod_ready(pod) {
            c.ready += 1;
            if is_pod_available(pod, min_ready, now) {
                c.available += 1;
            }
        }
        if util::is_pod_updated(pod, hash, generation) {
            c.updated += 1;
        }
    }
    c.unavailable = c.desired - c.available;
    c
}

fn counts_of(s: &DaemonSetStatus) -> Counts {
    Counts {
        desired: s.desired_number_scheduled,
        current: s.current_number_scheduled,
        misscheduled: s.number_misscheduled,
        ready: s.number_ready,
        updated: s.updated_number_scheduled.unwrap_or(0),
        available: s.number_available.unwrap_or(0),
        unavailable: s.number_unavailable.unwrap_or(0),
    }
}

/// Zero is left out of the optional counters, as Go's omitempty does.
fn nonzero(n: i32) -> Option<i32> {
    (n != 0).then_some(n)
}

fn set_counts(s: &mut DaemonSetStatus, c: &Counts) {
    s.desired_number_scheduled = c.desired;
    s.current_number_scheduled = c.current;
    s.number_misscheduled = c.misscheduled;
    s.number_ready = c.ready;
    s.updated_number_scheduled = nonzero(c.updated);
    s.number_available = nonzero(c.available);
    s.number_unavailable = nonzero(c.unavailable);
}

/// Upstream's storeDaemonSetStatus: writes the counts (and, after a full
/// sync, observedGeneration) unless nothing changed, with one retry on a
/// fresh copy. The collision count a revision name clash raised is
/// persisted here too.
async fn update_status(
    ctx: &Context,
    ds: &DaemonSet,
    counts: &Counts,
    observe_generation: bool,
    collision_count: i32,
) -> Result<(), Error> {
    let generation = ds.metadata.generation.unwrap_or(0);
    let status = ds.status.clone().unwrap_or_default();
    let collisions = status.collision_count.unwrap_or(0);
    if counts_of(&status) == *counts
        && status.observed_generation.unwrap_or(0) >= generation
        && collisions >= collision_count
    {
        return Ok(());
    }
    let namespace = ds.metadata.namespace.clone().unwrap_or_default();
    let name = ds.name_any();
    let api: Api<DaemonSet> = Api::namespaced(ctx.client.clone(), &namespace);
    let mut target = ds.clone();
    for attempt in 0..2 {
        let s = target.status.get_or_insert_with(Default::default);
        if observe_generation {
            s.observed_generation = Some(generation);
        }
        set_counts(s, counts);
        if collision_count > s.collision_count.unwrap_or(0) {
            s.collision_count = Some(collision_count);
        }
        match api
            .replace_status(&name, &PostParams::default(), &target)
            .await
        {
            Ok(_) => return Ok(()),
            Err(e) if podcontrol::is_not_found(&e) => return Ok(()),
            Err(e) if attempt == 1 => {
                return Err(Error::Api(
                    format!("error storing status for daemon set {namespace}/{name}"),
                    e,
                ))
            }
            Err(_) => match api.get(&name).await {
                Ok(fresh) => target = fresh,
                Err(e) if podcontrol::is_not_found(&e) => return Ok(()),
                Err(e) => {
                    return Err(Error::Api(
                        format!("reading daemon set {namespace}/{name}"),
                        e,
                    ))
                }
            },
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
