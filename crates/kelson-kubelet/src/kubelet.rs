//! The kubelet's main loop, as upstream's `syncLoop`: this node's pods
//! arrive from a watch; the runtime is relisted every second (upstream's
//! PLEG); probe results come from the prober. Each of those only wakes the
//! pod's worker, which is level-triggered: it reads the pod and its runtime
//! state afresh, acts (start, restart, stop), and writes the pod's status.
//!
//! One worker task per pod serialises everything done to that pod; pods
//! never wait on each other.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod, PodStatus};
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::watcher;
use kube::runtime::WatchStreamExt;
use kube::Api;
use parking_lot::RwLock;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::env::NodeAllocatable;
use crate::node::{self, NodeConfig};
use crate::prober::ProbeManager;
use crate::runtime::{PodRuntimeStatus, RuntimeConfig, RuntimeManager, SyncContext};
use crate::server::{self, ContainerLocation, PodProvider, ServerConfig};
use crate::volumes::{CommandMounter, Mounter};
use crate::{cleanup, sources, volume_manager};

/// How often the runtime is relisted (upstream's PLEG period).
const RELIST_PERIOD: Duration = Duration::from_secs(1);
/// A pod is synced at least this often even when nothing changed (upstream's
/// resync interval is a minute; ConfigMap and Secret volumes refresh here).
const RESYNC_PERIOD: Duration = Duration::from_secs(30);
/// After a sync that left a container waiting (back-off, pull error), try
/// again after this, plus up to half again as jitter (upstream's pod
/// workers' back-off period); the runtime's back-off decides whether to act.
const RETRY_PERIOD: Duration = Duration::from_secs(10);
/// While a pod is being stopped and deleted, check it this often.
const TERMINATING_PERIOD: Duration = Duration::from_secs(1);
/// How often what deleted pods left behind on the host is swept (upstream's
/// housekeeping period; a sweep only reads local directories).
const CLEANUP_PERIOD: Duration = Duration::from_secs(2);

pub struct KubeletConfig {
    pub node: NodeConfig,
    pub runtime: RuntimeConfig,
    pub server: ServerConfig,
}

#[derive(Debug, thiserror::Error)]
pub enum KubeletError {
    #[error("asking the container runtime for its version: {0}")]
    RuntimeVersion(#[from] kelson_cri::client::ClientError),
    #[error("registering node: {0}")]
    Register(#[from] node::NodeError),
    #[error("kubelet server: {0}")]
    Server(#[from] server::ServerError),
}

/// What the workers, the server and the sweeps share.
struct State {
    node_name: String,
    host_ip: String,
    pod_logs_dir: PathBuf,
    root_dir: PathBuf,
    cgroup_root: String,
    client: kube::Client,
    runtime: RuntimeManager,
    probes: ProbeManager,
    mounter: Arc<dyn Mounter + Send + Sync>,
    /// This node's pods as the API server last showed them, by UID.
    pods: RwLock<HashMap<String, Pod>>,
    /// The runtime's view from the last relist, by pod UID.
    runtime_pods: RwLock<HashMap<String, PodRuntimeStatus>>,
    /// The status last written for each pod, so unchanged ones are not
    /// written again.
    sent: RwLock<HashMap<String, PodStatus>>,
    workers: RwLock<HashMap<String, Arc<Worker>>>,
    allocatable: RwLock<NodeAllocatable>,
    /// Set once the first pod list has arrived: until then a runtime pod
    /// missing from `pods` may simply not have been listed yet, and must
    /// not be stopped (a restarted kubelet re-adopts its pods).
    synced: std::sync::atomic::AtomicBool,
}

/// Runs the kubelet until `cancel`: registers the node, serves the kubelet
/// API, and runs this node's pods.
pub async fn run(
    client: kube::Client,
    cri: kelson_cri::Cri,
    cfg: KubeletConfig,
    cancel: CancellationToken,
) -> Result<(), KubeletError> {
    let mut version_client = cri.clone();
    let version = version_client.version().await?;
    let runtime_version = format!("{}://{}", version.runtime_name, version.runtime_version);
    let registered = node::register(&client, &cfg.node, &runtime_version).await?;
    tracing::info!(node = %cfg.node.name, runtime = %runtime_version, "node registered");
    let allocatable = allocatable_of(&registered);
    let status_loop = node::spawn_status_loop(
        client.clone(),
        cfg.node.clone(),
        runtime_version,
        Arc::new(cri.clone()),
        cancel.child_token(),
    );

    let recorder = kelson_runtime::Recorder::new(client.clone(), "kubelet", cfg.node.name.clone());
    let pod_logs_dir = cfg.runtime.pod_logs_dir.clone();
    let root_dir = cfg.runtime.root_dir.clone();
    let cgroup_root = cfg.runtime.cgroup_root.clone();
    let runtime = RuntimeManager::new(Arc::new(cri.clone()), cfg.runtime, recorder.clone());
    let (probes, mut probe_updates) = ProbeManager::new(Arc::new(cri.clone()), recorder.clone());
    runtime.set_node_ip(cfg.node.node_ip.to_string());
    runtime.set_probe_state(Arc::new(probes.clone()));
    let state = Arc::new(State {
        node_name: cfg.node.name.clone(),
        host_ip: cfg.node.node_ip.to_string(),
        pod_logs_dir,
        root_dir,
        cgroup_root,
        client: client.clone(),
        runtime,
        probes,
        mounter: Arc::new(CommandMounter),
        pods: RwLock::new(HashMap::new()),
        runtime_pods: RwLock::new(HashMap::new()),
        sent: RwLock::new(HashMap::new()),
        workers: RwLock::new(HashMap::new()),
        allocatable: RwLock::new(allocatable),
        synced: std::sync::atomic::AtomicBool::new(false),
    });

    let server = tokio::spawn(server::serve(
        cfg.server,
        cri.clone(),
        Arc::new(Provider(state.clone())),
        cancel.child_token(),
    ));
    let relist = tokio::spawn(relist_loop(state.clone(), cancel.child_token()));
    let sweeper = tokio::spawn(cleanup_loop(state.clone(), cancel.child_token()));
    let probe_task = {
        let state = state.clone();
        let cancel = cancel.child_token();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    uid = probe_updates.recv() => match uid {
                        Some(uid) => wake(&state, &uid),
                        None => return,
                    },
                }
            }
        })
    };

    watch_pods(state.clone(), cancel.clone()).await;

    for task in [relist, sweeper, probe_task] {
        let _ = task.await;
    }
    let _ = status_loop.await;
    recorder.flush().await;
    match server.await {
        Ok(Err(e)) => Err(e.into()),
        _ => Ok(()),
    }
}

/// Follows this node's pods; every change wakes that pod's worker.
async fn watch_pods(state: Arc<State>, cancel: CancellationToken) {
    let api: Api<Pod> = Api::all(state.client.clone());
    let config = watcher::Config::default().fields(&format!("spec.nodeName={}", state.node_name));
    let stream = watcher(api, config).default_backoff();
    futures::pin_mut!(stream);
    let mut listing: Option<HashSet<String>> = None;
    loop {
        let event = tokio::select! {
            _ = cancel.cancelled() => return,
            ev = stream.next() => match ev {
                None => return,
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "pod watch");
                    continue;
                }
                Some(Ok(ev)) => ev,
            },
        };
        match event {
            watcher::Event::Init => listing = Some(HashSet::new()),
            watcher::Event::InitApply(pod) => {
                if let (Some(seen), Some(uid)) = (listing.as_mut(), pod.metadata.uid.clone()) {
                    seen.insert(uid);
                }
                upsert(&state, pod);
            }
            watcher::Event::InitDone => {
                if let Some(seen) = listing.take() {
                    let gone: Vec<String> = state
                        .pods
                        .read()
                        .keys()
                        .filter(|uid| !seen.contains(*uid))
                        .cloned()
                        .collect();
                    for uid in gone {
                        state.pods.write().remove(&uid);
                        wake(&state, &uid);
                    }
                }
                if !state.synced.swap(true, std::sync::atomic::Ordering::SeqCst) {
                    tracing::info!("pods listed; syncing the runtime with them");
                    // Runtime pods the API no longer has get their workers
                    // now, to be stopped.
                    let orphans: Vec<String> = {
                        let pods = state.pods.read();
                        state
                            .runtime_pods
                            .read()
                            .keys()
                            .filter(|uid| !pods.contains_key(*uid))
                            .cloned()
                            .collect()
                    };
                    for uid in orphans {
                        wake(&state, &uid);
                    }
                }
            }
            watcher::Event::Apply(pod) => upsert(&state, pod),
            watcher::Event::Delete(pod) => {
                if let Some(uid) = pod.metadata.uid.as_deref() {
                    state.pods.write().remove(uid);
                    wake(&state, uid);
                }
            }
        }
    }
}

fn upsert(state: &Arc<State>, pod: Pod) {
    let Some(uid) = pod.metadata.uid.clone() else {
        return;
    };
    let changed = state
        .pods
        .write()
        .insert(uid.clone(), pod.clone())
        .is_none_or(|old| differs_semantically(&old, &pod));
    // A change of status alone (most often our own write coming back) needs
    // no sync, as upstream's pod config treats it.
    if changed {
        wake(state, &uid);
    }
}

/// Whether two versions of a pod differ in more than status and
/// bookkeeping metadata.
fn differs_semantically(a: &Pod, b: &Pod) -> bool {
    let meta = |p: &Pod| {
        let mut m = p.metadata.clone();
        m.resource_version = None;
        m.managed_fields = None;
        m
    };
    a.spec != b.spec || meta(a) != meta(b)
}

/// A pod worker's handle: its wake-up, and whether it is syncing now.
struct Worker {
    notify: Notify,
    busy: std::sync::atomic::AtomicBool,
}

/// Wakes the pod's worker, starting one if it has none.
fn wake(state: &Arc<State>, uid: &str) {
    if let Some(w) = state.workers.read().get(uid) {
        w.notify.notify_one();
        return;
    }
    let mut workers = state.workers.write();
    match workers.entry(uid.to_string()) {
        // Raced with another waker: that worker may be mid-sync.
        std::collections::hash_map::Entry::Occupied(w) => w.get().notify.notify_one(),
        // A new worker syncs as soon as it starts; a stored wake-up would
        // only make it sync twice.
        std::collections::hash_map::Entry::Vacant(slot) => {
            let worker = Arc::new(Worker {
                notify: Notify::new(),
                busy: std::sync::atomic::AtomicBool::new(false),
            });
            tokio::spawn(pod_worker(state.clone(), uid.to_string(), worker.clone()));
            slot.insert(worker);
        }
    }
}

/// Whether the pod's worker is in the middle of a sync: runtime changes it
/// makes itself must not wake it again (it re-reads the runtime when done).
fn syncing(state: &State, uid: &str) -> bool {
    state
        .workers
        .read()
        .get(uid)
        .is_some_and(|w| w.busy.load(std::sync::atomic::Ordering::SeqCst))
}

/// Relists the runtime every second; pods whose runtime state changed are
/// woken (upstream's PLEG events).
async fn relist_loop(state: Arc<State>, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(RELIST_PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let fresh = match state.runtime.relist().await {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(error = %e, "relisting the container runtime");
                continue;
            }
        };
        let changed: Vec<String> = {
            let old = state.runtime_pods.read();
            fresh
                .iter()
                .filter(|(uid, s)| old.get(*uid) != Some(*s))
                .map(|(uid, _)| uid.clone())
                .chain(old.keys().filter(|uid| !fresh.contains_key(*uid)).cloned())
                .collect()
        };
        *state.runtime_pods.write() = fresh;
        let synced = state.synced.load(std::sync::atomic::Ordering::SeqCst);
        for uid in changed {
            // Before the first pod list, only pods already known are woken.
            if (synced || state.pods.read().contains_key(&uid)) && !syncing(&state, &uid) {
                wake(&state, &uid);
            }
        }
    }
}

/// One pod's worker: syncs whenever woken, and at least every
/// [`RESYNC_PERIOD`]; ends once the pod is gone from both the API and the
/// runtime.
async fn pod_worker(state: Arc<State>, uid: String, worker: Arc<Worker>) {
    loop {
        worker.busy.store(true, std::sync::atomic::Ordering::SeqCst);
        let outcome = sync_pod(&state, &uid).await;
        worker
            .busy
            .store(false, std::sync::atomic::Ordering::SeqCst);
        let next = match outcome {
            Next::Done => break,
            Next::Retry => RETRY_PERIOD.mul_f64(1.0 + rand::random::<f64>() * 0.5),
            Next::Terminating => TERMINATING_PERIOD,
            Next::Resync => RESYNC_PERIOD,
        };
        tokio::select! {
            _ = worker.notify.notified() => {}
            _ = tokio::time::sleep(next) => {}
        }
    }
    state.workers.write().remove(&uid);
    state.sent.write().remove(&uid);
    // A pod that came back while the worker was ending needs a new one.
    if state.pods.read().contains_key(&uid) {
        wake(&state, &uid);
    }
}

enum Next {
    Done,
    Retry,
    Terminating,
    Resync,
}

fn runtime_status(state: &State, uid: &str, pod: Option<&Pod>) -> PodRuntimeStatus {
    if let Some(s) = state.runtime_pods.read().get(uid) {
        return s.clone();
    }
    let meta = pod.map(|p| &p.metadata);
    PodRuntimeStatus {
        uid: uid.to_string(),
        name: meta.and_then(|m| m.name.clone()).unwrap_or_default(),
        namespace: meta.and_then(|m| m.namespace.clone()).unwrap_or_default(),
        sandboxes: Vec::new(),
        containers: Vec::new(),
    }
}

/// Re-reads the runtime after acting, so the status written reflects what
/// was just done rather than the last relist.
async fn refresh(state: &State, uid: &str, pod: Option<&Pod>) -> PodRuntimeStatus {
    match state.runtime.relist().await {
        Ok(fresh) => {
            let s = fresh.get(uid).cloned();
            *state.runtime_pods.write() = fresh;
            s.unwrap_or_else(|| runtime_status(state, uid, pod))
        }
        Err(e) => {
            tracing::warn!(error = %e, "relisting the container runtime");
            runtime_status(state, uid, pod)
        }
    }
}

fn is_terminal(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded") | Some("Failed")
    )
}

fn has_running(rt: &PodRuntimeStatus) -> bool {
    rt.sandboxes.iter().any(|s| s.ready) || rt.containers.iter().any(|c| c.is_running())
}

async fn sync_pod(state: &Arc<State>, uid: &str) -> Next {
    let pod = state.pods.read().get(uid).cloned();
    let rt = runtime_status(state, uid, pod.as_ref());
    let Some(pod) = pod else {
        // Gone from the API (or never in it): stop and remove what runs.
        if !state.synced.load(std::sync::atomic::Ordering::SeqCst) {
            return Next::Resync;
        }
        return stop_orphan(state, uid, rt).await;
    };

    if pod.metadata.deletion_timestamp.is_some() {
        return terminate(state, uid, &pod, rt).await;
    }
    if is_terminal(&pod) {
        // Finished pods keep their containers for logs; only what still
        // runs is stopped.
        if has_running(&rt) {
            if let Err(e) = state.runtime.kill_pod(Some(&pod), &rt, None).await {
                tracing::warn!(pod = %pod_name(&pod), error = %e, "stopping a finished pod");
                return Next::Retry;
            }
        }
        state.probes.remove_pod(uid);
        return Next::Resync;
    }

    let started = std::time::Instant::now();
    let src = sources::prefetch(&state.client, &pod).await;
    let t_sources = started.elapsed();
    let allocatable = state.allocatable.read().clone();
    let volumes = {
        let root = state.root_dir.clone();
        let pod = pod.clone();
        let src = src.clone();
        let alloc = allocatable.clone();
        let mounter = state.mounter.clone();
        tokio::task::spawn_blocking(move || {
            volume_manager::setup_pod_volumes(&root, &pod, &src, &alloc, mounter.as_ref())
        })
        .await
    };
    let volumes = match volumes {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => {
            // Upstream reports a pod whose volumes cannot be set up with a
            // FailedMount event and leaves its containers waiting.
            tracing::warn!(pod = %pod_name(&pod), error = %e, "setting up volumes");
            state.runtime.record_failed_mount(&pod, &e.to_string());
            write_status(state, &pod, &rt).await;
            return Next::Retry;
        }
        Err(e) => {
            tracing::warn!(error = %e, "volume setup task");
            return Next::Retry;
        }
    };
    let unhealthy = state.probes.unhealthy(uid);
    let ctx = SyncContext {
        sources: &src,
        volumes: &volumes,
        node_allocatable: &allocatable,
        unhealthy: &unhealthy,
    };
    let t_volumes = started.elapsed();
    let result = state.runtime.sync_pod(&pod, &rt, &ctx).await;
    let t_runtime = started.elapsed();
    let rt = refresh(state, uid, Some(&pod)).await;
    let t_refresh = started.elapsed();
    write_status(state, &pod, &rt).await;
    tracing::debug!(
        pod = %pod_name(&pod),
        sources_ms = t_sources.as_millis() as u64,
        volumes_ms = t_volumes.as_millis() as u64,
        runtime_ms = t_runtime.as_millis() as u64,
        refresh_ms = t_refresh.as_millis() as u64,
        total_ms = started.elapsed().as_millis() as u64,
        "pod synced"
    );
    if result.errors.is_empty() {
        Next::Resync
    } else {
        Next::Retry
    }
}

/// A pod being deleted: stop it within its grace period, then let the API
/// server remove it (the kubelet's final delete with grace 0).
async fn terminate(state: &Arc<State>, uid: &str, pod: &Pod, rt: PodRuntimeStatus) -> Next {
    if has_running(&rt) {
        let grace = pod.metadata.deletion_grace_period_seconds;
        if let Err(e) = state.runtime.kill_pod(Some(pod), &rt, grace).await {
            tracing::warn!(pod = %pod_name(pod), error = %e, "stopping a pod being deleted");
            return Next::Terminating;
        }
    }
    state.probes.remove_pod(uid);
    let rt = refresh(state, uid, Some(pod)).await;
    write_status(state, pod, &rt).await;
    if let Err(e) = state.runtime.remove_pod(&rt).await {
        tracing::warn!(pod = %pod_name(pod), error = %e, "removing a stopped pod's containers");
    }
    teardown_volumes(state, uid).await;
    remove_pod_cgroups(state, uid).await;
    let api: Api<Pod> = Api::namespaced(
        state.client.clone(),
        pod.metadata.namespace.as_deref().unwrap_or("default"),
    );
    let params = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions {
            uid: Some(uid.to_string()),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match api.delete(&pod_name_only(pod), &params).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
        Err(e) => {
            tracing::warn!(pod = %pod_name(pod), error = %e, "deleting a stopped pod");
            return Next::Terminating;
        }
    }
    // The watch's Delete event ends the worker; until then keep checking.
    Next::Terminating
}

async fn stop_orphan(state: &Arc<State>, uid: &str, rt: PodRuntimeStatus) -> Next {
    if rt.sandboxes.is_empty() && rt.containers.is_empty() {
        teardown_volumes(state, uid).await;
        state.probes.remove_pod(uid);
        return Next::Done;
    }
    tracing::info!(pod = %format!("{}/{}", rt.namespace, rt.name), uid, "stopping a pod the API no longer has");
    if let Err(e) = state.runtime.kill_pod(None, &rt, None).await {
        tracing::warn!(uid, error = %e, "stopping an orphaned pod");
        return Next::Terminating;
    }
    let rt = refresh(state, uid, None).await;
    if let Err(e) = state.runtime.remove_pod(&rt).await {
        tracing::warn!(uid, error = %e, "removing an orphaned pod");
        return Next::Terminating;
    }
    state.probes.remove_pod(uid);
    teardown_volumes(state, uid).await;
    remove_pod_cgroups(state, uid).await;
    let rt = refresh(state, uid, None).await;
    if rt.sandboxes.is_empty() && rt.containers.is_empty() {
        Next::Done
    } else {
        Next::Terminating
    }
}

/// Removes the cgroups of a pod whose containers are gone (runc leaves the
/// pod-level ones), without waiting for the periodic sweep.
async fn remove_pod_cgroups(state: &Arc<State>, uid: &str) {
    let known: HashSet<String> = state
        .pods
        .read()
        .keys()
        .chain(state.runtime_pods.read().keys())
        .filter(|k| k.as_str() != uid)
        .cloned()
        .collect();
    let cgroup_root = state.cgroup_root.clone();
    let res = tokio::task::spawn_blocking(move || {
        cleanup::remove_orphaned_pod_cgroups(
            &cleanup::HostCgroupFs::default(),
            &cgroup_root,
            &known,
        )
    })
    .await;
    if let Ok(c) = res {
        for busy in c.busy {
            tracing::debug!(uid, cgroup = %busy.display(), "pod cgroup still has processes");
        }
    }
}

async fn teardown_volumes(state: &Arc<State>, uid: &str) {
    let root = state.root_dir.clone();
    let uid_owned = uid.to_string();
    let mounter = state.mounter.clone();
    let res = tokio::task::spawn_blocking(move || {
        volume_manager::teardown_pod_volumes(&root, &uid_owned, mounter.as_ref())
    })
    .await;
    match res {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(uid, error = %e, "tearing down volumes"),
        Err(e) => tracing::warn!(uid, error = %e, "volume teardown task"),
    }
}

/// Writes the pod's status when it differs from what was last written (the
/// status manager).
async fn write_status(state: &Arc<State>, pod: &Pod, rt: &PodRuntimeStatus) {
    let Some(uid) = pod.metadata.uid.clone() else {
        return;
    };
    let status = state
        .runtime
        .api_status(pod, rt, &state.probes, &state.host_ip);
    state.probes.update_pod(pod, &status);
    if state.sent.read().get(&uid) == Some(&status) || pod.status.as_ref() == Some(&status) {
        return;
    }
    let api: Api<Pod> = Api::namespaced(
        state.client.clone(),
        pod.metadata.namespace.as_deref().unwrap_or("default"),
    );
    // The UID in the patch makes it fail on a same-named successor pod.
    let patch = serde_json::json!({
        "metadata": {"uid": uid},
        "status": status,
    });
    match api
        .patch_status(
            &pod_name_only(pod),
            &PatchParams::default(),
            &Patch::Strategic(patch),
        )
        .await
    {
        Ok(updated) => {
            state.sent.write().insert(uid.clone(), status);
            // Keep the local copy current so the next sync starts from it.
            if let Some(p) = state.pods.write().get_mut(&uid) {
                if p.metadata.resource_version <= updated.metadata.resource_version
                    || p.metadata.resource_version.is_none()
                {
                    p.status = updated.status;
                }
            }
        }
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
        Err(e) => tracing::warn!(pod = %pod_name(pod), error = %e, "writing pod status"),
    }
}

async fn cleanup_loop(state: Arc<State>, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(CLEANUP_PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        if !state.synced.load(std::sync::atomic::Ordering::SeqCst) {
            continue;
        }
        // Pods the API or the runtime still knows keep their leftovers.
        let known: HashSet<String> = state
            .pods
            .read()
            .keys()
            .chain(state.runtime_pods.read().keys())
            .cloned()
            .collect();
        let root = state.root_dir.clone();
        let cgroup_root = state.cgroup_root.clone();
        let mounter = state.mounter.clone();
        let res = tokio::task::spawn_blocking(move || {
            let cgroups = cleanup::remove_orphaned_pod_cgroups(
                &cleanup::HostCgroupFs::default(),
                &cgroup_root,
                &known,
            );
            (
                cleanup::remove_orphaned_pod_dirs(&root, &known, mounter.as_ref()),
                cgroups,
            )
        })
        .await;
        if let Ok((dirs, cgroups)) = res {
            if let Err(e) = dirs {
                tracing::warn!(error = %e, "removing orphaned pod directories");
            }
            for busy in cgroups.busy {
                tracing::debug!(cgroup = %busy.display(), "orphaned pod cgroup still has processes");
            }
        }
    }
}

fn pod_name_only(pod: &Pod) -> String {
    pod.metadata.name.clone().unwrap_or_default()
}

fn pod_name(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or(""),
        pod.metadata.name.as_deref().unwrap_or("")
    )
}

/// What the kubelet server sees of the pods.
struct Provider(Arc<State>);

impl Provider {
    fn find(&self, ns: &str, name: &str) -> Option<Pod> {
        self.0
            .pods
            .read()
            .values()
            .find(|p| {
                p.metadata.namespace.as_deref() == Some(ns)
                    && p.metadata.name.as_deref() == Some(name)
            })
            .cloned()
    }
}

impl PodProvider for Provider {
    fn pods(&self) -> Vec<Pod> {
        self.0.pods.read().values().cloned().collect()
    }

    fn pod(&self, ns: &str, name: &str) -> Option<Pod> {
        self.find(ns, name)
    }

    fn container(
        &self,
        ns: &str,
        pod: &str,
        container: &str,
        previous: bool,
    ) -> Result<ContainerLocation, String> {
        let Some(p) = self.find(ns, pod) else {
            return Err(format!("pod \"{pod}\" not found"));
        };
        let uid = p.metadata.uid.clone().unwrap_or_default();
        let known = p
            .spec
            .as_ref()
            .map(|s| {
                s.containers
                    .iter()
                    .chain(s.init_containers.iter().flatten())
                    .any(|c| c.name == container)
                    || s.ephemeral_containers
                        .iter()
                        .flatten()
                        .any(|c| c.name == container)
            })
            .unwrap_or(false);
        if !known {
            return Err(format!("container {container} is not valid for pod {pod}"));
        }
        let rt = self.0.runtime_pods.read().get(&uid).cloned();
        // Newest first per name: the current instance, then the previous.
        let instances: Vec<_> = rt
            .iter()
            .flat_map(|r| r.containers.iter())
            .filter(|c| c.name == container)
            .cloned()
            .collect();
        let pick = if previous {
            instances.get(1)
        } else {
            instances.first()
        };
        let Some(c) = pick else {
            return Err(if previous {
                format!("previous terminated container \"{container}\" in pod \"{pod}\" not found")
            } else {
                format!("container \"{container}\" in pod \"{pod}\" is waiting to start: ContainerCreating")
            });
        };
        let log_path = self
            .0
            .pod_logs_dir
            .join(format!("{ns}_{pod}_{uid}"))
            .join(container)
            .join(format!("{}.log", c.attempt));
        Ok(ContainerLocation {
            id: c.id.clone(),
            log_path,
            running: c.is_running(),
        })
    }
}

/// A node's allocatable resources, for the downward API.
fn allocatable_of(node: &Node) -> NodeAllocatable {
    node.status
        .as_ref()
        .and_then(|s| s.allocatable.as_ref())
        .map(NodeAllocatable::from_resource_list)
        .unwrap_or_default()
}
