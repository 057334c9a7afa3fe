//! The disruption controller (upstream pkg/controller/disruption): keeps
//! every PodDisruptionBudget's status current — how many of its pods are
//! healthy, how many must be, how many are expected (from the pods'
//! controllers' scale when the budget is a percentage or a maxUnavailable),
//! how many may be disrupted now, and the DisruptionAllowed condition the
//! eviction API reads. It also expires `disruptedPods` entries of evictions
//! that never led to a deletion, and resets stale DisruptionTarget pod
//! conditions.

pub mod status;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{Pod, PodCondition, PodStatus, ReplicationController};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kelson_runtime::{EventType, Recorder};
use kube::api::{Api, DynamicObject, PostParams};
use kube::core::GroupVersionKind;
use kube::discovery::{self, ApiResource};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{predicates, watcher, PredicateConfig, WatchStreamExt};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::informers::Informers;
use crate::podcontrol::{controller_of, is_conflict, is_not_found, Selector};
use crate::runner;
use status::Counts;

/// Upstream's event source for this controller.
const COMPONENT: &str = "controllermanager";

/// How long a DisruptionTarget condition may stay on a pod that is not
/// being deleted before it is reset to False.
const STALE_POD_DISRUPTION_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Selector(String),
    #[error("{0}")]
    Scale(#[from] status::Error),
    #[error("found no controllers for pod {0:?}")]
    NoControllers(String),
    #[error("unexpected GroupVersion string: {0}")]
    GroupVersion(String),
    #[error("no matches for kind {kind:?} in version {version:?}")]
    NoKindMatch { kind: String, version: String },
    #[error("{0} does not implement the scale subresource")]
    NotScalable(String),
    #[error("{0}")]
    Api(#[source] kube::Error),
    #[error("updating the status of PodDisruptionBudget {0}: {1}")]
    Update(String, #[source] kube::Error),
}

impl Error {
    fn is_conflict(&self) -> bool {
        matches!(self, Error::Update(_, e) if is_conflict(e))
    }
}

/// Tunables.
#[derive(Debug, Clone)]
pub struct Options {
    /// Every budget is recomputed at least this often, even without a pod
    /// event (a pod whose labels stopped matching is noticed then).
    pub resync: Duration,
    /// See [`STALE_POD_DISRUPTION_TIMEOUT`].
    pub stale_pod_disruption_timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            resync: Duration::from_secs(5 * 60),
            stale_pod_disruption_timeout: STALE_POD_DISRUPTION_TIMEOUT,
        }
    }
}

/// A resolved kind: its resource, and whether it serves `scale`.
type Mapping = (ApiResource, bool);

struct Context {
    client: Client,
    recorder: Recorder,
    pods: Store<Pod>,
    replica_sets: Store<ReplicaSet>,
    deployments: Store<Deployment>,
    stateful_sets: Store<StatefulSet>,
    replication_controllers: Store<ReplicationController>,
    /// Kinds resolved through discovery for the scale fallback.
    mappings: Mutex<HashMap<GroupVersionKind, Mapping>>,
    options: Options,
}

/// Runs the disruption controller until `shutdown` fires.
pub async fn run(client: Client, shutdown: CancellationToken) {
    run_with(Informers::new(client), Options::default(), shutdown).await;
}

/// A watch of every `K` into a store, yielding touched objects; `strip`
/// drops what the controller never reads.
fn watch_into<K>(
    client: &Client,
    strip: fn(&mut K),
) -> (
    Store<K>,
    impl futures::Stream<Item = Result<K, watcher::Error>> + Send + 'static,
)
where
    K: Resource<DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store::<K>();
    let stream = watcher(Api::<K>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .modify(strip)
        .reflect(writer)
        .touched_objects();
    (reader, stream)
}

fn strip_rs(rs: &mut ReplicaSet) {
    rs.metadata.managed_fields = None;
    if let Some(spec) = rs.spec.as_mut() {
        spec.template = None;
    }
    rs.status = None;
}

fn strip_deployment(d: &mut Deployment) {
    d.metadata.managed_fields = None;
    if let Some(spec) = d.spec.as_mut() {
        spec.template = Default::default();
    }
    d.status = None;
}

fn strip_sts(s: &mut StatefulSet) {
    s.metadata.managed_fields = None;
    if let Some(spec) = s.spec.as_mut() {
        spec.template = Default::default();
        spec.volume_claim_templates = None;
    }
    s.status = None;
}

fn strip_rc(rc: &mut ReplicationController) {
    rc.metadata.managed_fields = None;
    if let Some(spec) = rc.spec.as_mut() {
        spec.template = None;
    }
    rc.status = None;
}

/// Runs the controller with `options` until `shutdown` fires.
pub async fn run_with(informers: Informers, options: Options, shutdown: CancellationToken) {
    let client = informers.client().clone();
    // Pods come from the shared informer: one copy of each for every
    // controller, and no watch of this controller's own.
    let pod_informer = informers.get::<Pod>();
    let pods = pod_informer.store();
    let pod_stream = pod_informer
        .subscribe()
        .filter_map(|n| futures::future::ready(n.object().cloned()));
    let (replica_sets, rs_stream) = watch_into::<ReplicaSet>(&client, strip_rs);
    let (deployments, d_stream) = watch_into::<Deployment>(&client, strip_deployment);
    let (stateful_sets, sts_stream) = watch_into::<StatefulSet>(&client, strip_sts);
    let (replication_controllers, rc_stream) =
        watch_into::<ReplicationController>(&client, strip_rc);
    let recorder = Recorder::new(client.clone(), COMPONENT, "");

    // Pods with a stale DisruptionTarget condition go to their own worker.
    let (stale_tx, stale_rx) = mpsc::unbounded_channel();
    let stale_timeout = options.stale_pod_disruption_timeout;
    let pod_stream = pod_stream.inspect(move |pod| {
        if let Some(after) = stale_disruption_condition(pod, stale_timeout, Timestamp::now()) {
            let _ = stale_tx.send((ObjectRef::from_obj(&**pod), after));
        }
    });
    let stale_shutdown = shutdown.child_token();
    let stale_worker = tokio::spawn(stale_condition_worker(
        client.clone(),
        pods.clone(),
        stale_timeout,
        stale_rx,
        stale_shutdown.clone(),
    ));

    let ctx = Arc::new(Context {
        client: client.clone(),
        recorder: recorder.clone(),
        pods,
        replica_sets,
        deployments,
        stateful_sets,
        replication_controllers,
        mappings: Mutex::new(HashMap::new()),
        options,
    });
    let controller = Controller::new(
        Api::<PodDisruptionBudget>::all(client),
        watcher::Config::default(),
    );
    let budgets = controller.store();
    let (b1, b2, b3, b4, b5) = (
        budgets.clone(),
        budgets.clone(),
        budgets.clone(),
        budgets.clone(),
        budgets,
    );
    // A workload's scale feeds expectedPods: recompute its namespace's
    // budgets when its spec (generation) changes, not on status updates.
    let pc = PredicateConfig::default;
    let controller = controller
        .watches_shared_stream(pod_stream, move |pod: Arc<Pod>| budgets_for_pod(&b1, &pod))
        .watches_stream(
            rs_stream.predicate_filter(predicates::generation, pc()),
            move |o: ReplicaSet| budgets_in_namespace(&b2, o.namespace()),
        )
        .watches_stream(
            d_stream.predicate_filter(predicates::generation, pc()),
            move |o: Deployment| budgets_in_namespace(&b3, o.namespace()),
        )
        .watches_stream(
            sts_stream.predicate_filter(predicates::generation, pc()),
            move |o: StatefulSet| budgets_in_namespace(&b4, o.namespace()),
        )
        .watches_stream(
            rc_stream.predicate_filter(predicates::generation, pc()),
            move |o: ReplicationController| budgets_in_namespace(&b5, o.namespace()),
        )
        .graceful_shutdown_on(shutdown.cancelled_owned())
        .run(reconcile, error_policy, ctx);
    runner::drive(controller, "disruption budget sync").await;
    stale_shutdown.cancel();
    if let Err(e) = stale_worker.await {
        tracing::warn!(error = %e, "stale disruption condition worker ended abnormally");
    }
    recorder.flush().await;
}

/// The budgets of the pod's namespace whose selector matches it.
fn budgets_for_pod(
    store: &Store<PodDisruptionBudget>,
    pod: &Pod,
) -> Vec<ObjectRef<PodDisruptionBudget>> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
    store
        .state()
        .iter()
        .filter(|b| b.metadata.namespace.as_deref() == Some(ns))
        .filter(|b| {
            Selector::from_label_selector(b.spec.as_ref().and_then(|s| s.selector.as_ref()))
                .is_ok_and(|s| s.matches(pod.metadata.labels.as_ref()))
        })
        .map(|b| ObjectRef::from_obj(b.as_ref()))
        .collect()
}

fn budgets_in_namespace(
    store: &Store<PodDisruptionBudget>,
    ns: Option<String>,
) -> Vec<ObjectRef<PodDisruptionBudget>> {
    store
        .state()
        .iter()
        .filter(|b| b.metadata.namespace == ns)
        .map(|b| ObjectRef::from_obj(b.as_ref()))
        .collect()
}

fn error_policy(_pdb: Arc<PodDisruptionBudget>, err: &Error, _ctx: Arc<Context>) -> Action {
    if err.is_conflict() {
        // Someone else wrote first: the next pass reads the new state.
        tracing::debug!(error = %err, "disruption budget sync conflict");
        return Action::requeue(Duration::from_millis(200));
    }
    tracing::warn!(error = %err, "disruption budget sync failed");
    Action::requeue(Duration::from_secs(5))
}

async fn reconcile(pdb: Arc<PodDisruptionBudget>, ctx: Arc<Context>) -> Result<Action, Error> {
    // Counting before the caches are filled would report too few pods.
    for ready in [
        ctx.pods.wait_until_ready().await,
        ctx.replica_sets.wait_until_ready().await,
        ctx.deployments.wait_until_ready().await,
        ctx.stateful_sets.wait_until_ready().await,
        ctx.replication_controllers.wait_until_ready().await,
    ] {
        if ready.is_err() {
            return Ok(Action::requeue(Duration::from_secs(1)));
        }
    }
    let now = Timestamp::now();
    let result = match try_sync(&pdb, &ctx, now).await {
        Ok(recheck) => Ok(recheck),
        Err(e) if e.is_conflict() => return Err(e),
        Err(e) => {
            tracing::warn!(pdb = %pdb.name_any(), error = %e, "failed to sync PDB");
            let status = status::fail_safe_status(&pdb, e.to_string(), now);
            // Rewriting an identical status would only wake this sync again.
            if pdb.status.as_ref() == Some(&status) {
                Ok(None)
            } else {
                write_status(&ctx, &pdb, status).await.map(|()| None)
            }
        }
    };
    let resync = ctx.options.resync;
    result.map(|recheck| match recheck {
        Some(at) => {
            let wait = now.duration_until(at).unsigned_abs();
            Action::requeue(wait.min(resync) + Duration::from_millis(100))
        }
        None => Action::requeue(resync),
    })
}

/// One pass (upstream's trySync). Returns when the budget must be looked at
/// again because a disruptedPods entry expires.
async fn try_sync(
    pdb: &PodDisruptionBudget,
    ctx: &Context,
    now: Timestamp,
) -> Result<Option<Timestamp>, Error> {
    let pods = match pods_for_budget(&ctx.pods, pdb) {
        Ok(p) => p,
        Err(e) => {
            ctx.recorder.event_for(
                pdb,
                EventType::Warning,
                "NoPods",
                format!("Failed to get pods: {e}"),
            );
            return Err(e);
        }
    };
    if pods.is_empty() {
        ctx.recorder
            .event_for(pdb, EventType::Normal, "NoPods", "No matching pods found");
    }
    let (expected_pods, desired_healthy, unmanaged) =
        match expected_pod_count(ctx, pdb, &pods).await {
            Ok(v) => v,
            Err(e) => {
                ctx.recorder.event_for(
                    pdb,
                    EventType::Warning,
                    "CalculateExpectedPodCountFailed",
                    format!("Failed to calculate the number of expected pods: {e}"),
                );
                return Err(e);
            }
        };
    if !unmanaged.is_empty() {
        tracing::debug!(pdb = %pdb.name_any(), pods = ?unmanaged, "unmanaged pods");
        let selector =
            status::go_selector_string(pdb.spec.as_ref().and_then(|s| s.selector.as_ref()));
        ctx.recorder.event_for(
            pdb,
            EventType::Warning,
            "UnmanagedPods",
            format!(
                "Pods selected by this PodDisruptionBudget (selector: {selector}) were found to be \
                 unmanaged. As a result, the status of the PDB cannot be calculated correctly, which \
                 may result in undefined behavior. To account for these pods please set \
                 \".spec.minAvailable\" field of the PDB to an integer value."
            ),
        );
    }
    let disrupted = status::build_disrupted_pods(&pods, pdb, now);
    let namespace = pdb.metadata.namespace.as_deref().unwrap_or_default();
    for pod in &disrupted.not_deleted {
        // Upstream names the budget "<namespace>/<namespace>" here.
        ctx.recorder.event_for(
            pod.as_ref(),
            EventType::Warning,
            "NotDeleted",
            format!("Pod was expected by PDB {namespace}/{namespace} to be deleted but it wasn't"),
        );
    }
    let counts = Counts {
        current_healthy: status::count_healthy(&pods, &disrupted.kept, now),
        desired_healthy,
        expected_pods,
    };
    if let Some(new) = status::next_status(pdb, counts, disrupted.kept, now) {
        write_status(ctx, pdb, new).await?;
    }
    Ok(disrupted.recheck)
}

fn pods_for_budget(pods: &Store<Pod>, pdb: &PodDisruptionBudget) -> Result<Vec<Arc<Pod>>, Error> {
    let selector =
        Selector::from_label_selector(pdb.spec.as_ref().and_then(|s| s.selector.as_ref()))
            .map_err(|e| Error::Selector(e.to_string()))?;
    let ns = pdb.metadata.namespace.as_deref();
    Ok(pods
        .state()
        .into_iter()
        .filter(|p| p.metadata.namespace.as_deref() == ns)
        .filter(|p| selector.matches(p.metadata.labels.as_ref()))
        .collect())
}

/// (expectedPods, desiredHealthy, names of pods without a controller), as
/// upstream's getExpectedPodCount.
async fn expected_pod_count(
    ctx: &Context,
    pdb: &PodDisruptionBudget,
    pods: &[Arc<Pod>],
) -> Result<(i32, i32, Vec<String>), Error> {
    let spec = pdb.spec.clone().unwrap_or_default();
    if let Some(max_unavailable) = &spec.max_unavailable {
        let (expected, unmanaged) = expected_scale(ctx, pdb, pods).await?;
        let max = status::scaled_value(max_unavailable, expected, true)?;
        return Ok((expected, (expected - max).max(0), unmanaged));
    }
    match &spec.min_available {
        Some(IntOrString::Int(min)) => {
            Ok((pods.len().try_into().unwrap_or(i32::MAX), *min, Vec::new()))
        }
        Some(v) => {
            let (expected, unmanaged) = expected_scale(ctx, pdb, pods).await?;
            let min = status::scaled_value(v, expected, true)?;
            Ok((expected, min, unmanaged))
        }
        None => Ok((0, 0, Vec::new())),
    }
}

/// The sum of the scales of the pods' controllers, each counted once.
async fn expected_scale(
    ctx: &Context,
    pdb: &PodDisruptionBudget,
    pods: &[Arc<Pod>],
) -> Result<(i32, Vec<String>), Error> {
    let mut scales: BTreeMap<String, i32> = BTreeMap::new();
    let mut unmanaged = Vec::new();
    for pod in pods {
        let name = pod.name_any();
        let Some(r) = controller_of(&pod.metadata) else {
            unmanaged.push(name);
            continue;
        };
        if scales.contains_key(&r.uid) {
            continue;
        }
        let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
        match find_controller(ctx, r, ns).await? {
            Some((uid, scale)) => {
                scales.insert(uid, scale);
            }
            None => {
                let e = Error::NoControllers(name);
                ctx.recorder
                    .event_for(pdb, EventType::Warning, "NoControllers", e.to_string());
                return Err(e);
            }
        }
    }
    let total = scales.values().fold(0i32, |acc, s| acc.saturating_add(*s));
    Ok((total, unmanaged))
}

/// The group of an apiVersion ("apps/v1" → "apps", "v1" → "").
fn group_version(api_version: &str) -> Result<(&str, &str), Error> {
    match api_version.split_once('/') {
        None => Ok(("", api_version)),
        Some((g, v)) if !v.contains('/') => Ok((g, v)),
        Some(_) => Err(Error::GroupVersion(api_version.to_string())),
    }
}

fn is_kind(r: &OwnerReference, kind: &str, groups: &[&str]) -> Result<bool, Error> {
    let (group, _) = group_version(&r.api_version)?;
    Ok(r.kind == kind && groups.contains(&group))
}

fn lookup<K>(store: &Store<K>, ns: &str, r: &OwnerReference) -> Option<Arc<K>>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    store
        .get(&ObjectRef::new(&r.name).within(ns))
        .filter(|o| o.meta().uid.as_deref() == Some(r.uid.as_str()))
}

/// (uid, scale) of the controller `r` points to, trying what upstream's
/// finders try in order: ReplicationController, the Deployment of a
/// ReplicaSet, a ReplicaSet without Deployment, StatefulSet, then any kind
/// through its scale subresource.
async fn find_controller(
    ctx: &Context,
    r: &OwnerReference,
    ns: &str,
) -> Result<Option<(String, i32)>, Error> {
    let replicas = |n: Option<i32>| n.unwrap_or(1);
    if is_kind(r, "ReplicationController", &[""])? {
        if let Some(rc) = lookup(&ctx.replication_controllers, ns, r) {
            return Ok(Some((
                r.uid.clone(),
                replicas(rc.spec.as_ref().and_then(|s| s.replicas)),
            )));
        }
    }
    if is_kind(r, "ReplicaSet", &["apps", "extensions"])? {
        if let Some(rs) = lookup(&ctx.replica_sets, ns, r) {
            match controller_of(&rs.metadata) {
                Some(d) if is_kind(d, "Deployment", &["apps", "extensions"])? => {
                    if let Some(dep) = lookup(&ctx.deployments, ns, d) {
                        return Ok(Some((
                            d.uid.clone(),
                            replicas(dep.spec.as_ref().and_then(|s| s.replicas)),
                        )));
                    }
                }
                // Owned by a Deployment of another group: not this finder's.
                Some(d) if d.kind == "Deployment" => {}
                _ => {
                    return Ok(Some((
                        r.uid.clone(),
                        replicas(rs.spec.as_ref().and_then(|s| s.replicas)),
                    )))
                }
            }
        }
    }
    if is_kind(r, "StatefulSet", &["apps"])? {
        if let Some(s) = lookup(&ctx.stateful_sets, ns, r) {
            return Ok(Some((
                r.uid.clone(),
                replicas(s.spec.as_ref().and_then(|s| s.replicas)),
            )));
        }
    }
    scale_controller(ctx, r, ns).await
}

/// Upstream's getScaleController: the scale subresource of any kind.
async fn scale_controller(
    ctx: &Context,
    r: &OwnerReference,
    ns: &str,
) -> Result<Option<(String, i32)>, Error> {
    let (group, version) = group_version(&r.api_version)?;
    let gvk = GroupVersionKind::gvk(group, version, &r.kind);
    let (resource, has_scale) = mapping(ctx, &gvk).await?;
    let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), ns, &resource);
    match api.get_scale(&r.name).await {
        Ok(scale) => {
            if scale.metadata.uid.as_deref() != Some(r.uid.as_str()) {
                return Ok(None);
            }
            let n = scale.spec.and_then(|s| s.replicas).unwrap_or(0);
            Ok(Some((r.uid.clone(), n)))
        }
        // Either the object is gone or its kind has no scale: say which.
        Err(e) if is_not_found(&e) => {
            if has_scale {
                Ok(None)
            } else {
                let gr = if resource.group.is_empty() {
                    resource.plural.clone()
                } else {
                    format!("{}.{}", resource.plural, resource.group)
                };
                Err(Error::NotScalable(gr))
            }
        }
        Err(e) => Err(Error::Api(e)),
    }
}

async fn mapping(ctx: &Context, gvk: &GroupVersionKind) -> Result<Mapping, Error> {
    if let Some(m) = lock(&ctx.mappings).get(gvk) {
        return Ok(m.clone());
    }
    let no_match = || Error::NoKindMatch {
        kind: gvk.kind.clone(),
        version: gvk.api_version(),
    };
    let (resource, caps) = match discovery::pinned_kind(&ctx.client, gvk).await {
        Ok(v) => v,
        Err(kube::Error::Discovery(_)) => return Err(no_match()),
        Err(e) if is_not_found(&e) => return Err(no_match()),
        Err(e) => return Err(Error::Api(e)),
    };
    let has_scale = caps
        .subresources
        .iter()
        .any(|(sub, _)| sub.plural == "scale" && sub.kind == "Scale");
    let m = (resource, has_scale);
    lock(&ctx.mappings).insert(gvk.clone(), m.clone());
    Ok(m)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Writes `new` as the budget's status (an update, so a concurrent writer
/// makes it fail with a conflict and the sync runs again).
async fn write_status(
    ctx: &Context,
    pdb: &PodDisruptionBudget,
    new: k8s_openapi::api::policy::v1::PodDisruptionBudgetStatus,
) -> Result<(), Error> {
    let name = pdb.name_any();
    let ns = pdb.metadata.namespace.as_deref().unwrap_or_default();
    let api: Api<PodDisruptionBudget> = Api::namespaced(ctx.client.clone(), ns);
    let mut updated = pdb.clone();
    updated.status = Some(new);
    match api
        .replace_status(&name, &PostParams::default(), &updated)
        .await
    {
        Ok(_) => Ok(()),
        // Deleted meanwhile: nothing to report on.
        Err(e) if is_not_found(&e) => Ok(()),
        Err(e) => Err(Error::Update(format!("{ns}/{name}"), e)),
    }
}

// ---------------------------------------------------------------------------
// Stale DisruptionTarget conditions

/// If the pod carries a DisruptionTarget=True condition set by someone other
/// than its kubelet, is neither being deleted nor finished: how long until
/// that condition counts as stale (zero when it already does).
fn stale_disruption_condition(pod: &Pod, timeout: Duration, now: Timestamp) -> Option<Duration> {
    if pod.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let status = pod.status.as_ref()?;
    if matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")) {
        return None;
    }
    let cond = disruption_target(status)?;
    if cond.status != "True" || cond.reason.as_deref() == Some("TerminationByKubelet") {
        return None;
    }
    let since = cond
        .last_transition_time
        .as_ref()
        .map(|t| t.0)
        .unwrap_or(now);
    let elapsed = now.duration_since(since);
    let remaining = jiff::SignedDuration::try_from(timeout)
        .unwrap_or(jiff::SignedDuration::MAX)
        .checked_sub(elapsed)
        .unwrap_or(jiff::SignedDuration::ZERO);
    Some(remaining.try_into().unwrap_or(Duration::ZERO))
}

fn disruption_target(status: &PodStatus) -> Option<&PodCondition> {
    status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "DisruptionTarget")
}

/// Resets DisruptionTarget conditions that stayed True too long on pods
/// nobody deleted (an eviction whose deletion failed, say).
async fn stale_condition_worker(
    client: Client,
    pods: Store<Pod>,
    timeout: Duration,
    mut rx: mpsc::UnboundedReceiver<(ObjectRef<Pod>, Duration)>,
    shutdown: CancellationToken,
) {
    // Due time per pod; a pod appears once however often it is reported.
    let mut due: HashMap<ObjectRef<Pod>, tokio::time::Instant> = HashMap::new();
    loop {
        let next = due.values().min().copied();
        let sleep = async {
            match next {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            msg = rx.recv() => match msg {
                Some((r, after)) => {
                    let at = tokio::time::Instant::now() + after;
                    let entry = due.entry(r).or_insert(at);
                    *entry = (*entry).min(at);
                }
                None => return,
            },
            _ = sleep => {
                let now = tokio::time::Instant::now();
                let ready: Vec<_> = due.iter().filter(|(_, at)| **at <= now).map(|(r, _)| r.clone()).collect();
                for r in ready {
                    due.remove(&r);
                    let Some(pod) = pods.get(&r) else { continue };
                    match stale_disruption_condition(&pod, timeout, Timestamp::now()) {
                        Some(after) if after.is_zero() => {
                            if let Err(e) = reset_disruption_target(&client, &r).await {
                                tracing::warn!(pod = %r, error = %e, "resetting DisruptionTarget condition");
                                due.insert(r, now + Duration::from_secs(5));
                            }
                        }
                        Some(after) => {
                            due.insert(r, now + after);
                        }
                        None => {}
                    }
                }
            }
        }
    }
}

/// Sets the pod's DisruptionTarget condition to False (without reason or
/// message, as upstream's UpdatePodCondition leaves it).
async fn reset_disruption_target(client: &Client, r: &ObjectRef<Pod>) -> Result<(), kube::Error> {
    let api: Api<Pod> = Api::namespaced(client.clone(), r.namespace.as_deref().unwrap_or_default());
    let mut pod = match api.get(&r.name).await {
        Ok(p) => p,
        Err(e) if is_not_found(&e) => return Ok(()),
        Err(e) => return Err(e),
    };
    let Some(status) = pod.status.as_mut() else {
        return Ok(());
    };
    let Some(cond) = status
        .conditions
        .iter_mut()
        .flatten()
        .find(|c| c.type_ == "DisruptionTarget" && c.status == "True")
    else {
        return Ok(());
    };
    *cond = PodCondition {
        type_: "DisruptionTarget".into(),
        status: "False".into(),
        last_transition_time: Some(Time(Timestamp::now())),
        ..Default::default()
    };
    api.replace_status(&r.name, &PostParams::default(), &pod)
        .await
        .map(|_| tracing::info!(pod = %r, "reset stale DisruptionTarget condition to False"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(v: serde_json::Value) -> Pod {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn group_versions_parse_as_upstream() {
        assert_eq!(group_version("v1").unwrap(), ("", "v1"));
        assert_eq!(group_version("apps/v1").unwrap(), ("apps", "v1"));
        assert_eq!(
            group_version("a/b/c").unwrap_err().to_string(),
            "unexpected GroupVersion string: a/b/c"
        );
    }

    #[test]
    fn stale_disruption_target_conditions() {
        let now = Timestamp::now();
        let timeout = Duration::from_secs(120);
        let at = |secs: i64| (now - jiff::SignedDuration::from_secs(secs)).to_string();
        let evicted = |reason: &str, secs: i64| {
            pod(serde_json::json!({
                "metadata": {"name": "p"},
                "status": {"phase": "Running", "conditions": [{
                    "type": "DisruptionTarget", "status": "True", "reason": reason,
                    "lastTransitionTime": at(secs)
                }]}
            }))
        };
        assert_eq!(
            stale_disruption_condition(&evicted("EvictionByEvictionAPI", 150), timeout, now),
            Some(Duration::ZERO)
        );
        assert_eq!(
            stale_disruption_condition(&evicted("EvictionByEvictionAPI", 20), timeout, now),
            Some(Duration::from_secs(100))
        );
        // The kubelet's own condition never goes stale.
        assert_eq!(
            stale_disruption_condition(&evicted("TerminationByKubelet", 500), timeout, now),
            None
        );
        let mut deleting = evicted("EvictionByEvictionAPI", 500);
        deleting.metadata.deletion_timestamp = Some(Time(now));
        assert_eq!(stale_disruption_condition(&deleting, timeout, now), None);
    }
}
