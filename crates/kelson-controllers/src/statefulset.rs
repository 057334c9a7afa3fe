//! The StatefulSet controller (upstream pkg/controller/statefulset): pods
//! with stable names `<set>-<ordinal>`, hostnames and claims from
//! volumeClaimTemplates, created in ordinal order one at a time
//! (OrderedReady) or all at once (Parallel), removed in reverse order,
//! updated in reverse ordinal order down to the partition (RollingUpdate)
//! or only when deleted (OnDelete). Template revisions are
//! ControllerRevisions (see [`crate::history`]), so `kubectl rollout
//! status|history|undo statefulset` work; claim ownership follows
//! persistentVolumeClaimRetentionPolicy so the garbage collector removes
//! claims as the policy says.

pub mod utils;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{ControllerRevision, StatefulSet, StatefulSetStatus};
use k8s_openapi::api::core::v1::{ObjectReference, PersistentVolumeClaim, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kelson_runtime::{EventType, Recorder};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Client, ResourceExt};
use tokio_util::sync::CancellationToken;

use crate::history;
use crate::informers::Informers;
use crate::podcontrol::{
    self, api_message, claim, controller_of, controller_ref, indexed_watch, is_already_exists,
    is_not_found, owners_of_child, ClaimOwner, OwnerIndex, Selector,
};
use crate::runner::{self, WorkerOptions};
use utils::{
    allows_burst, claim_name, claim_owner_refs, claim_owner_up_to_date, claims_for,
    has_stale_pod_ref, has_unexpected_controller, identity_matches, is_created, is_failed,
    is_healthy, is_member_of, is_pending, is_running_and_available, is_running_and_ready,
    is_succeeded, is_terminating, min_ready_seconds, ordinal, pod_revision, replicas,
    retention_policy, start_ordinal, storage_matches, RETAIN,
};

/// Events' source component, as upstream names it.
const COMPONENT: &str = "statefulset-controller";
/// Upstream's cap on requests in flight in Parallel mode.
const MAX_BATCH_SIZE: usize = 500;
/// revisionHistoryLimit when unset (the API server defaults it to 10).
const DEFAULT_HISTORY_LIMIT: i32 = 10;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Pods(#[from] podcontrol::Error),
    #[error(transparent)]
    History(#[from] history::Error),
    #[error(transparent)]
    Revision(#[from] utils::Error),
    #[error("{what}: {source}")]
    Api {
        what: String,
        #[source]
        source: Box<kube::Error>,
    },
    /// The pod exists although the cache did not show it yet; the next sync
    /// sees it.
    #[error("pod {0} already exists")]
    PodExists(String),
    #[error("{0}")]
    Claims(String),
}

fn api_err(what: impl Into<String>, e: kube::Error) -> Error {
    Error::Api {
        what: what.into(),
        source: Box::new(e),
    }
}

/// Tunables; `workers` is --concurrent-statefulset-syncs.
pub type Options = WorkerOptions;

struct Context {
    client: Client,
    pods: Arc<OwnerIndex<Pod>>,
    revisions: Arc<OwnerIndex<ControllerRevision>>,
    claims: Store<PersistentVolumeClaim>,
    recorder: Recorder,
    /// Consecutive failed syncs per set, for the retry backoff.
    failures: Mutex<HashMap<ObjectRef<StatefulSet>, u32>>,
}

/// Runs the StatefulSet controller until `shutdown` fires.
pub async fn run(client: Client, shutdown: CancellationToken) {
    run_with(Informers::new(client), shutdown, Options::default()).await;
}

/// Runs the controller with `options`.
pub async fn run_with(informers: Informers, shutdown: CancellationToken, options: Options) {
    let client = informers.client().clone();
    let (pods, pod_stream) = indexed_watch::<Pod, _>(&informers, |_| {});
    let (revisions, rev_stream) = indexed_watch::<ControllerRevision, _>(&informers, |_| {});
    let (claim_reader, claim_writer) = reflector::store::<PersistentVolumeClaim>();
    let claim_stream = watcher(
        Api::<PersistentVolumeClaim>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .modify(|c: &mut PersistentVolumeClaim| c.metadata.managed_fields = None)
    .reflect(claim_writer)
    .touched_objects();

    let recorder = Recorder::new(client.clone(), COMPONENT, "");
    let ctx = Arc::new(Context {
        client: client.clone(),
        pods,
        revisions,
        claims: claim_reader,
        recorder: recorder.clone(),
        failures: Mutex::new(HashMap::new()),
    });
    let controller = runner::controller::<StatefulSet>(&client, options.workers);
    let set_store = controller.store();
    let main = controller
        .watches_shared_stream(pod_stream, move |pod: Arc<Pod>| {
            owners_of_child(&set_store, &pod.metadata, pod_selector)
        })
        .graceful_shutdown_on(shutdown.clone().cancelled_owned())
        .run(reconcile, error_policy, ctx);
    let main = runner::drive(main, "statefulset sync");
    // The revision and claim caches only serve reads; drive them until
    // shutdown.
    let revs = rev_stream
        .take_until(shutdown.clone().cancelled_owned())
        .for_each(|_| async {});
    let claims = claim_stream
        .take_until(shutdown.clone().cancelled_owned())
        .for_each(|_| async {});
    tokio::join!(main, revs, claims);
    recorder.flush().await;
}

fn pod_selector(set: &StatefulSet) -> Result<Selector, podcontrol::Error> {
    Selector::from_label_selector(set.spec.as_ref().map(|s| &s.selector))
}

fn error_policy(set: Arc<StatefulSet>, err: &Error, ctx: Arc<Context>) -> Action {
    let key = ObjectRef::from_obj(set.as_ref());
    let n = {
        let mut f = ctx.failures.lock().unwrap_or_else(|p| p.into_inner());
        let n = f.entry(key).or_insert(0);
        *n = n.saturating_add(1);
        *n
    };
    match err {
        // A stale cache, not a failure worth a warning.
        Error::PodExists(_) => tracing::debug!(error = %err, "statefulset sync"),
        _ => tracing::warn!(error = %err, set = %set.name_any(), "statefulset sync failed"),
    }
    // Upstream's per-item exponential backoff: 5 ms doubling, capped here
    // at a minute.
    let ms = 5u64.saturating_mul(1u64 << n.min(14));
    Action::requeue(Duration::from_millis(ms.min(60_000)))
}

async fn reconcile(set: Arc<StatefulSet>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ready = ctx.pods.store().wait_until_ready().await.is_ok()
        && ctx.revisions.store().wait_until_ready().await.is_ok()
        && ctx.claims.wait_until_ready().await.is_ok();
    if !ready {
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    let (Some(namespace), Some(uid)) = (set.metadata.namespace.clone(), set.metadata.uid.clone())
    else {
        return Ok(Action::await_change());
    };
    let name = set.name_any();
    let selector = match pod_selector(&set) {
        Ok(s) => s,
        Err(e) => {
            // Not transient: wait for the user to fix the set.
            tracing::warn!(%namespace, %name, error = %e, "invalid statefulset selector");
            return Ok(Action::await_change());
        }
    };
    let sets: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), &namespace);

    // Adopt orphaned revisions matching the selector.
    let orphans: Vec<_> = list_revisions(&ctx, &namespace, &uid, &selector)
        .into_iter()
        .filter(|r| controller_of(&r.metadata).is_none())
        .collect();
    if !orphans.is_empty() {
        can_adopt(&sets, &name, &uid).await?;
        for rev in orphans {
            history::adopt_revision(&ctx.client, &rev, controller_ref(set.as_ref())).await?;
        }
    }

    // Claim pods: owned ones, and orphans named like members.
    let candidates: Vec<Arc<Pod>> = ctx
        .pods
        .children(&namespace, &uid, true)
        .into_iter()
        .filter(|p| controller_of(&p.metadata).is_some() || is_member_of(&set, p))
        .collect();
    let owner = ClaimOwner {
        reference: controller_ref(set.as_ref()),
        namespace: &namespace,
        deleting: set.metadata.deletion_timestamp.is_some(),
    };
    let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
    let mut pods = claim(&pods_api, &owner, &selector, candidates, || async {
        can_adopt(&sets, &name, &uid)
            .await
            .map_err(|e| podcontrol::Error::CanAdopt(name.clone(), e.to_string()))
    })
    .await?;
    pods.retain(|p| is_member_of(&set, p));

    let status = sync(&ctx, &set, &namespace, &uid, &selector, &pods).await?;
    ctx.failures
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&ObjectRef::from_obj(set.as_ref()));
    let min_ready = min_ready_seconds(&set);
    if min_ready > 0 && status.available_replicas.unwrap_or(0) != replicas(&set) {
        // Pods become available by the passing of time, not by an event.
        return Ok(Action::requeue(Duration::from_secs(min_ready as u64 + 1)));
    }
    Ok(Action::await_change())
}

/// Upstream's canAdopt: a fresh read proves the set still exists with this
/// UID and is not being deleted, so a stale cache cannot adopt.
async fn can_adopt(api: &Api<StatefulSet>, name: &str, uid: &str) -> Result<(), Error> {
    let fresh = api
        .get(name)
        .await
        .map_err(|e| api_err(format!("can't adopt: reading StatefulSet {name}"), e))?;
    if fresh.metadata.uid.as_deref() != Some(uid) {
        return Err(Error::Claims(format!(
            "original StatefulSet {name} is gone: got uid {}, wanted {uid}",
            fresh.metadata.uid.unwrap_or_default()
        )));
    }
    if fresh.metadata.deletion_timestamp.is_some() {
        return Err(Error::Claims(format!(
            "StatefulSet {name} has just been deleted"
        )));
    }
    Ok(())
}

/// The set's revisions: those matching its selector that it controls or
/// that have no controller, oldest first.
fn list_revisions(
    ctx: &Context,
    namespace: &str,
    uid: &str,
    selector: &Selector,
) -> Vec<Arc<ControllerRevision>> {
    let mut revs: Vec<_> = ctx
        .revisions
        .children(namespace, uid, true)
        .into_iter()
        .filter(|r| selector.matches(r.metadata.labels.as_ref()))
        .collect();
    revs.sort_by(|a, b| history::compare_revisions(a, b));
    revs
}

/// Upstream's UpdateStatefulSet: settle revisions, converge pods, write
/// status, truncate history.
async fn sync(
    ctx: &Context,
    set: &StatefulSet,
    namespace: &str,
    uid: &str,
    selector: &Selector,
    pods: &[Arc<Pod>],
) -> Result<StatefulSetStatus, Error> {
    let revisions = list_revisions(ctx, namespace, uid, selector);
    let (current, update, collision_count) = get_revisions(ctx, set, namespace, &revisions).await?;
    let (mut status, result) =
        update_pods(ctx, set, &current, &update, collision_count, pods).await;
    let status_result = match &status {
        Some(st) => write_status(ctx, set, namespace, st).await,
        None => Ok(()),
    };
    let live: HashSet<String> = pods
        .iter()
        .map(|p| pod_revision(p).to_string())
        .chain([current.name_any(), update.name_any()])
        .collect();
    let limit = set
        .spec
        .as_ref()
        .and_then(|s| s.revision_history_limit)
        .unwrap_or(DEFAULT_HISTORY_LIMIT)
        .max(0) as usize;
    let truncated =
        history::truncate_history(&ctx.client, namespace, &revisions, &live, limit).await;
    result?;
    status_result?;
    truncated?;
    Ok(status.take().unwrap_or_default())
}

/// The current and update revisions (upstream's getStatefulSetRevisions):
/// the update revision is the latest if it holds the set's template, an
/// older equal one renumbered to be the latest (a rollback), or a new one.
async fn get_revisions(
    ctx: &Context,
    set: &StatefulSet,
    namespace: &str,
    revisions: &[Arc<ControllerRevision>],
) -> Result<(Arc<ControllerRevision>, Arc<ControllerRevision>, i32), Error> {
    let mut collision_count = set
        .status
        .as_ref()
        .and_then(|s| s.collision_count)
        .unwrap_or(0);
    let data = utils::revision_data(set)?;
    let next = history::next_revision(revisions);
    let equal = history::find_equal(revisions, &data);
    let update = match (equal.first(), revisions.last()) {
        (Some(eq), Some(last)) if eq.metadata.name == last.metadata.name => last.clone(),
        (Some(eq), _) => Arc::new(history::update_revision(&ctx.client, eq, next).await?),
        (None, _) => {
            let labels = set
                .spec
                .as_ref()
                .and_then(|s| s.template.metadata.as_ref())
                .and_then(|m| m.labels.clone())
                .unwrap_or_default();
            let annotations = set.metadata.annotations.clone().unwrap_or_default();
            Arc::new(
                history::create_revision_with_annotations(
                    &ctx.client,
                    namespace,
                    controller_ref(set),
                    labels,
                    annotations,
                    data,
                    next,
                    &mut collision_count,
                )
                .await?,
            )
        }
    };
    let current_name = set
        .status
        .as_ref()
        .and_then(|s| s.current_revision.as_deref())
        .unwrap_or("");
    let current = revisions
        .iter()
        .find(|r| r.metadata.name.as_deref() == Some(current_name))
        .cloned()
        .unwrap_or_else(|| update.clone());
    Ok((current, update, collision_count))
}

/// Counts of `replicas` and `condemned` into `status`.
fn recount(
    status: &mut StatefulSetStatus,
    set: &StatefulSet,
    current: &str,
    update: &str,
    lists: &[&[Arc<Pod>]],
) {
    utils::reset_counts(status);
    let now = Timestamp::now();
    for list in lists {
        utils::count_pods(
            status,
            list.iter().map(|p| p.as_ref()),
            min_ready_seconds(set),
            current,
            update,
            now,
        );
    }
}

/// Upstream's updateStatefulSet: create, repair, delete and update pods
/// towards the target state. Returns the status to record (None when the
/// revisions could not be applied) and the first error.
async fn update_pods(
    ctx: &Context,
    set: &StatefulSet,
    current: &ControllerRevision,
    update: &ControllerRevision,
    collision_count: i32,
    pods: &[Arc<Pod>],
) -> (Option<StatefulSetStatus>, Result<(), Error>) {
    let (current_set, update_set) = match (
        utils::apply_revision(set, current),
        utils::apply_revision(set, update),
    ) {
        (Ok(c), Ok(u)) => (c, u),
        (Err(e), _) | (_, Err(e)) => return (None, Err(e.into())),
    };
    let (current_name, update_name) = (current.name_any(), update.name_any());
    let mut status = StatefulSetStatus {
        observed_generation: set.metadata.generation,
        current_revision: Some(current_name.clone()),
        update_revision: Some(update_name.clone()),
        collision_count: Some(collision_count),
        ..StatefulSetStatus::default()
    };
    recount(&mut status, set, &current_name, &update_name, &[pods]);

    // Pods in the wanted ordinal range by index, and the condemned rest.
    let count = replicas(set).max(0) as usize;
    let start = start_ordinal(set);
    let mut slots: Vec<Option<Arc<Pod>>> = vec![None; count];
    let mut condemned: Vec<Arc<Pod>> = Vec::new();
    for pod in pods {
        let ord = ordinal(pod);
        if utils::in_ordinal_range(pod, set) {
            if let Some(slot) = slots.get_mut((ord - start) as usize) {
                *slot = Some(pod.clone());
            }
        } else if ord >= 0 {
            condemned.push(pod.clone());
        }
    }
    let owner = controller_ref(set);
    let replicas_list: Vec<Arc<Pod>> = slots
        .into_iter()
        .enumerate()
        .map(|(i, slot)| {
            slot.unwrap_or_else(|| {
                Arc::new(utils::new_versioned_pod(
                    &current_set,
                    &update_set,
                    owner.clone(),
                    &current_name,
                    &update_name,
                    start.saturating_add(i as i32),
                ))
            })
        })
        .collect();
    condemned.sort_by_key(|p| std::cmp::Reverse(ordinal(p)));

    // The first unhealthy pod: lowest wanted ordinal, else lowest condemned.
    let first_unhealthy: Option<String> = replicas_list
        .iter()
        .find(|p| !is_healthy(p))
        .or_else(|| condemned.iter().rev().find(|p| !is_healthy(p)))
        .map(|p| p.name_any());

    if set.metadata.deletion_timestamp.is_some() {
        return (Some(status), Ok(()));
    }
    let monotonic = !allows_burst(set);
    let all: [&[Arc<Pod>]; 2] = [&replicas_list, &condemned];

    // Living replicas first.
    let (exit, err) = run_for_all(replicas_list.len(), monotonic, |i| {
        let pod = replicas_list[i].clone();
        let update_set = &update_set;
        async move { process_replica(ctx, set, update_set, monotonic, &pod).await }
    })
    .await;
    if exit || err.is_some() {
        recount(&mut status, set, &current_name, &update_name, &all);
        return (Some(status), err.map_or(Ok(()), Err));
    }

    // Claims of condemned pods get the ownership the policy asks for.
    let (exit, err) = run_for_all(condemned.len(), monotonic, |i| {
        let pod = condemned[i].clone();
        let update_set = &update_set;
        async move {
            if !claims_match_retention(ctx, update_set, &pod) {
                update_claims_for_retention(ctx, update_set, &pod).await?;
            }
            Ok(false)
        }
    })
    .await;
    if exit || err.is_some() {
        recount(&mut status, set, &current_name, &update_name, &all);
        return (Some(status), err.map_or(Ok(()), Err));
    }

    // Scale down, highest ordinal first.
    let (exit, err) = run_for_all(condemned.len(), monotonic, |i| {
        let pod = condemned[i].clone();
        let first_unhealthy = first_unhealthy.as_deref();
        async move { process_condemned(ctx, set, first_unhealthy, monotonic, &pod).await }
    })
    .await;
    recount(&mut status, set, &current_name, &update_name, &all);
    if exit || err.is_some() {
        return (Some(status), err.map_or(Ok(()), Err));
    }

    if utils::is_on_delete(set) {
        return (Some(status), Ok(()));
    }
    // Rolling update: replace the highest pod not at the update revision,
    // one at a time, waiting for each to be healthy, down to the partition.
    let update_min = utils::partition(set).unwrap_or(0).max(0) as usize;
    for target in (update_min..replicas_list.len()).rev() {
        let pod = &replicas_list[target];
        if pod_revision(pod) != update_name && !is_terminating(pod) {
            tracing::debug!(pod = %pod.name_any(), "terminating pod for update");
            let r = delete_pod(ctx, set, pod).await;
            let cur = status.current_replicas.unwrap_or(0);
            status.current_replicas = Some(cur - 1);
            return (Some(status), r);
        }
        if !is_healthy(pod) {
            return (Some(status), Ok(()));
        }
    }
    (Some(status), Ok(()))
}

/// Runs `f` over `0..count`: in order, stopping at the first that asks to
/// (monotonic), or concurrently in batches of 1, 2, 4, … up to 500
/// stopping after a batch with an error (upstream's runForAll and
/// slowStartBatch). Returns whether to stop and the first error.
async fn run_for_all<F, Fut>(count: usize, monotonic: bool, mut f: F) -> (bool, Option<Error>)
where
    F: FnMut(usize) -> Fut,
    Fut: Future<Output = Result<bool, Error>>,
{
    if monotonic {
        for i in 0..count {
            match f(i).await {
                Ok(false) => {}
                Ok(true) => return (true, None),
                Err(e) => return (true, Some(e)),
            }
        }
        return (false, None);
    }
    let mut next = 0;
    let mut batch = count.min(1);
    while batch > 0 {
        let results = futures::future::join_all((next..next + batch).map(&mut f)).await;
        next += batch;
        if let Some(e) = results.into_iter().find_map(Result::err) {
            return (true, Some(e));
        }
        batch = (count - next).min(batch * 2).min(MAX_BATCH_SIZE);
    }
    (false, None)
}

/// One wanted replica (upstream's processReplica). Returns whether a
/// monotonic sync must stop here.
async fn process_replica(
    ctx: &Context,
    set: &StatefulSet,
    update_set: &StatefulSet,
    monotonic: bool,
    pod: &Pod,
) -> Result<bool, Error> {
    // Failed or succeeded pods are replaced: delete now, recreate on the
    // sync that sees them gone.
    if is_failed(pod) || is_succeeded(pod) {
        if !is_terminating(pod) {
            delete_pod(ctx, set, pod).await?;
        }
        return Ok(true);
    }
    if !is_created(pod) {
        if claim_is_stale(ctx, set, pod) {
            // A claim still owned by a deleted predecessor: wait for the
            // garbage collector.
            return Ok(true);
        }
        create_pod(ctx, set, pod).await?;
        if monotonic {
            return Ok(true);
        }
    }
    if is_pending(pod) {
        create_claims(ctx, set, pod).await?;
        update_claims_for_retention(ctx, set, pod).await?;
    }
    if monotonic {
        if is_terminating(pod) {
            tracing::debug!(pod = %pod.name_any(), "waiting for pod to terminate");
            return Ok(true);
        }
        if !is_running_and_ready(pod) {
            tracing::debug!(pod = %pod.name_any(), "waiting for pod to be Running and Ready");
            return Ok(true);
        }
        if !is_running_and_available(pod, min_ready_seconds(set), Timestamp::now()) {
            tracing::debug!(pod = %pod.name_any(), "waiting for pod to be Available");
            return Ok(true);
        }
    }
    let retention_match = !is_created(pod) || claims_match_retention(ctx, update_set, pod);
    if identity_matches(set, pod) && storage_matches(set, pod) && retention_match {
        return Ok(false);
    }
    update_pod(ctx, update_set, pod).await?;
    Ok(false)
}

/// One condemned pod (upstream's processCondemned).
async fn process_condemned(
    ctx: &Context,
    set: &StatefulSet,
    first_unhealthy: Option<&str>,
    monotonic: bool,
    pod: &Pod,
) -> Result<bool, Error> {
    if is_terminating(pod) {
        return Ok(monotonic);
    }
    let is_first_unhealthy = first_unhealthy == pod.metadata.name.as_deref();
    if monotonic && !is_first_unhealthy {
        if !is_running_and_ready(pod) {
            return Ok(true);
        }
        if !is_running_and_available(pod, min_ready_seconds(set), Timestamp::now()) {
            return Ok(true);
        }
    }
    tracing::debug!(pod = %pod.name_any(), "terminating pod for scale down");
    delete_pod(ctx, set, pod).await?;
    Ok(true)
}

// ---------------------------------------------------------------------------
// Pod and claim operations (upstream's StatefulPodControl)

fn set_reference(set: &StatefulSet) -> ObjectReference {
    kelson_runtime::events::object_reference(set)
}

/// "create Pod web-0 in StatefulSet web successful" and the like.
fn record_pod_event(ctx: &Context, verb: &str, set: &StatefulSet, pod: &Pod, err: Option<&str>) {
    let (pod_name, set_name) = (pod.name_any(), set.name_any());
    let message = match err {
        None => format!("{verb} Pod {pod_name} in StatefulSet {set_name} successful"),
        Some(e) => format!("{verb} Pod {pod_name} in StatefulSet {set_name} failed error: {e}"),
    };
    record_outcome(ctx, verb, set, err.is_some(), message);
}

fn record_claim_event(
    ctx: &Context,
    verb: &str,
    set: &StatefulSet,
    pod: &Pod,
    claim: &str,
    err: Option<&str>,
) {
    let (pod_name, set_name) = (pod.name_any(), set.name_any());
    let message = match err {
        None => format!("{verb} Claim {claim} Pod {pod_name} in StatefulSet {set_name} success"),
        Some(e) => format!(
            "{verb} Claim {claim} for Pod {pod_name} in StatefulSet {set_name} failed error: {e}"
        ),
    };
    record_outcome(ctx, verb, set, err.is_some(), message);
}

/// A `Successful<Verb>` (Normal) or `Failed<Verb>` (Warning) Event about
/// the set.
fn record_outcome(ctx: &Context, verb: &str, set: &StatefulSet, failed: bool, message: String) {
    let title = title_case(verb);
    let (kind, reason) = if failed {
        (EventType::Warning, format!("Failed{title}"))
    } else {
        (EventType::Normal, format!("Successful{title}"))
    };
    ctx.recorder
        .event(&set_reference(set), kind, &reason, message);
}

fn title_case(verb: &str) -> String {
    let mut c = verb.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

fn namespace_of(set: &StatefulSet) -> String {
    set.metadata.namespace.clone().unwrap_or_default()
}

fn cached_claim(ctx: &Context, namespace: &str, name: &str) -> Option<Arc<PersistentVolumeClaim>> {
    ctx.claims.get(&ObjectRef::new(name).within(namespace))
}

/// Claims first, then the pod, then the claims' retention ownership
/// (upstream's CreateStatefulPod).
async fn create_pod(ctx: &Context, set: &StatefulSet, pod: &Pod) -> Result<(), Error> {
    if let Err(e) = create_claims(ctx, set, pod).await {
        record_pod_event(ctx, "create", set, pod, Some(&e.to_string()));
        return Err(e);
    }
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace_of(set));
    match api.create(&PostParams::default(), pod).await {
        Ok(created) => {
            if let Err(e) = update_claims_for_retention(ctx, set, &created).await {
                record_pod_event(ctx, "update", set, pod, Some(&e.to_string()));
                return Err(e);
            }
            record_pod_event(ctx, "create", set, pod, None);
            Ok(())
        }
        // The cache lagged: no Event, the next sync sees the pod.
        Err(e) if is_already_exists(&e) => Err(Error::PodExists(pod.name_any())),
        Err(e) => {
            record_pod_event(ctx, "create", set, pod, Some(&api_message(&e)));
            Err(api_err(format!("creating pod {}", pod.name_any()), e))
        }
    }
}

/// Creates the pod's missing claims (upstream's
/// createPersistentVolumeClaims); a claim being deleted is an error until
/// it is gone.
async fn create_claims(ctx: &Context, set: &StatefulSet, pod: &Pod) -> Result<(), Error> {
    let namespace = namespace_of(set);
    let api: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &namespace);
    let mut errors = Vec::new();
    for (_, claim) in claims_for(set, ordinal(pod)) {
        let name = claim.metadata.name.clone().unwrap_or_default();
        match cached_claim(ctx, &namespace, &name) {
            None => match api.create(&PostParams::default(), &claim).await {
                Ok(_) => record_claim_event(ctx, "create", set, pod, &name, None),
                // Created by an earlier sync the cache has not shown yet.
                Err(e) if is_already_exists(&e) => {}
                Err(e) => {
                    let msg = api_message(&e);
                    record_claim_event(ctx, "create", set, pod, &name, Some(&msg));
                    errors.push(format!("failed to create PVC {name}: {msg}"));
                }
            },
            Some(existing) if existing.metadata.deletion_timestamp.is_some() => {
                errors.push(format!("pvc {name} is being deleted"));
            }
            Some(_) => {}
        }
    }
    aggregate(errors)
}

/// Go's aggregate error text: one error as is, several in brackets.
fn aggregate(errors: Vec<String>) -> Result<(), Error> {
    match errors.len() {
        0 => Ok(()),
        1 => Err(Error::Claims(errors.join(""))),
        _ => Err(Error::Claims(format!("[{}]", errors.join(", ")))),
    }
}

/// The claims of `pod` that exist, with their template-derived names.
fn existing_claims(ctx: &Context, set: &StatefulSet, pod: &Pod) -> Vec<Arc<PersistentVolumeClaim>> {
    let namespace = namespace_of(set);
    let ord = ordinal(pod);
    set.spec
        .as_ref()
        .and_then(|s| s.volume_claim_templates.as_deref())
        .unwrap_or(&[])
        .iter()
        .filter_map(|t| cached_claim(ctx, &namespace, &claim_name(set, t, ord)))
        .collect()
}

/// Every existing claim of the pod has the ownership the policy implies.
fn claims_match_retention(ctx: &Context, set: &StatefulSet, pod: &Pod) -> bool {
    existing_claims(ctx, set, pod)
        .iter()
        .all(|c| claim_owner_up_to_date(c, set, pod))
}

/// With whenScaled=Delete, a claim owned by a predecessor pod of the same
/// name blocks creation (upstream's PodClaimIsStale).
fn claim_is_stale(ctx: &Context, set: &StatefulSet, pod: &Pod) -> bool {
    if retention_policy(set).1 == RETAIN {
        return false;
    }
    existing_claims(ctx, set, pod)
        .iter()
        .any(|c| has_stale_pod_ref(c, pod))
}

/// Rewrites the ownerReferences of the pod's claims for the retention
/// policy (upstream's UpdatePodClaimForRetentionPolicy).
async fn update_claims_for_retention(
    ctx: &Context,
    set: &StatefulSet,
    pod: &Pod,
) -> Result<(), Error> {
    let namespace = namespace_of(set);
    let api: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &namespace);
    for claim in existing_claims(ctx, set, pod) {
        let name = claim.name_any();
        if has_unexpected_controller(&claim, set, pod) {
            ctx.recorder.event(
                &set_reference(set),
                EventType::Warning,
                "ConflictingController",
                format!(
                    "PersistentVolumeClaim {name} has a conflicting OwnerReference that acts as a manging controller, the retention policy is ignored for this claim"
                ),
            );
        }
        if claim_owner_up_to_date(&claim, set, pod) {
            continue;
        }
        let refs: Vec<OwnerReference> = claim_owner_refs(&claim, set, pod);
        let patch = serde_json::json!({"metadata": {"ownerReferences": refs}});
        api.patch(&name, &PatchParams::default(), &Patch::Merge(patch))
            .await
            .map_err(|e| {
                api_err(
                    format!("could not update claim {name} for delete policy ownerRefs"),
                    e,
                )
            })?;
    }
    Ok(())
}

/// Restores the pod's identity labels, storage and claim ownership
/// (upstream's UpdateStatefulPod).
async fn update_pod(ctx: &Context, set: &StatefulSet, pod: &Pod) -> Result<(), Error> {
    let mut fixed = pod.clone();
    let mut consistent = true;
    let mut storage_changed = false;
    if !identity_matches(set, &fixed) {
        utils::update_identity(set, &mut fixed);
        consistent = false;
    }
    if !storage_matches(set, &fixed) {
        utils::update_storage(set, &mut fixed);
        consistent = false;
        storage_changed = true;
        if let Err(e) = create_claims(ctx, set, &fixed).await {
            record_pod_event(ctx, "update", set, pod, Some(&e.to_string()));
            return Err(e);
        }
    }
    if !claims_match_retention(ctx, set, &fixed) {
        if let Err(e) = update_claims_for_retention(ctx, set, &fixed).await {
            record_pod_event(ctx, "update", set, pod, Some(&e.to_string()));
            return Err(e);
        }
        consistent = false;
    }
    if consistent {
        return Ok(());
    }
    let mut patch = serde_json::json!({"metadata": {"labels": fixed.metadata.labels}});
    if storage_changed {
        // Pod volumes are immutable: the API server refuses this, as it
        // refuses upstream's update, and the Event says so.
        patch["spec"] = serde_json::json!({"volumes": fixed.spec.as_ref().map(|s| &s.volumes)});
    }
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace_of(set));
    match api
        .patch(
            &pod.name_any(),
            &PatchParams::default(),
            &Patch::Merge(patch),
        )
        .await
    {
        Ok(_) => {
            record_pod_event(ctx, "update", set, pod, None);
            Ok(())
        }
        Err(e) => {
            record_pod_event(ctx, "update", set, pod, Some(&api_message(&e)));
            Err(api_err(format!("updating pod {}", pod.name_any()), e))
        }
    }
}

/// Deletes the pod with upstream's Event; a pod already gone is no error.
async fn delete_pod(ctx: &Context, set: &StatefulSet, pod: &Pod) -> Result<(), Error> {
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace_of(set));
    match api.delete(&pod.name_any(), &DeleteParams::default()).await {
        Ok(_) => {
            record_pod_event(ctx, "delete", set, pod, None);
            Ok(())
        }
        Err(e) if is_not_found(&e) => Ok(()),
        Err(e) => {
            record_pod_event(ctx, "delete", set, pod, Some(&api_message(&e)));
            Err(api_err(format!("deleting pod {}", pod.name_any()), e))
        }
    }
}

/// Writes the status if it changed (upstream's updateStatefulSetStatus).
async fn write_status(
    ctx: &Context,
    set: &StatefulSet,
    namespace: &str,
    status: &StatefulSetStatus,
) -> Result<(), Error> {
    let mut status = status.clone();
    utils::complete_rolling_update(set, &mut status);
    if !utils::inconsistent_status(set, &status) {
        return Ok(());
    }
    let api: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), namespace);
    let patch = serde_json::json!({
        "status": {
            "observedGeneration": status.observed_generation,
            "replicas": status.replicas,
            "readyReplicas": status.ready_replicas.unwrap_or(0),
            "currentReplicas": status.current_replicas.unwrap_or(0),
            "updatedReplicas": status.updated_replicas.unwrap_or(0),
            "availableReplicas": status.available_replicas.unwrap_or(0),
            "currentRevision": status.current_revision,
            "updateRevision": status.update_revision,
            "collisionCount": status.collision_count,
        }
    });
    api.patch_status(
        &set.name_any(),
        &PatchParams::default(),
        &Patch::Merge(patch),
    )
    .await
    .map_err(|e| {
        api_err(
            format!("updating status of StatefulSet {}", set.name_any()),
            e,
        )
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_reasons_are_title_cased_like_upstream() {
        assert_eq!(title_case("create"), "Create");
        assert_eq!(title_case("delete"), "Delete");
        assert_eq!(title_case(""), "");
    }

    #[test]
    fn aggregate_errors_print_like_go() {
        assert!(aggregate(vec![]).is_ok());
        let one = aggregate(vec!["a".into()]).unwrap_err().to_string();
        assert_eq!(one, "a");
        let two = aggregate(vec!["a".into(), "b".into()])
            .unwrap_err()
            .to_string();
        assert_eq!(two, "[a, b]");
    }

    #[tokio::test]
    async fn run_for_all_stops_where_monotonic_asks() {
        let seen = Mutex::new(Vec::new());
        let (exit, err) = run_for_all(5, true, |i| {
            seen.lock().unwrap().push(i);
            async move { Ok(i == 2) }
        })
        .await;
        assert!(exit && err.is_none());
        assert_eq!(*seen.lock().unwrap(), vec![0, 1, 2]);
    }

    #[tokio::test]
    async fn run_for_all_batches_in_parallel_mode() {
        let seen = Mutex::new(Vec::new());
        let (exit, err) = run_for_all(7, false, |i| {
            seen.lock().unwrap().push(i);
            async move { Ok(true) }
        })
        .await;
        // Parallel mode ignores "stop" and visits everything.
        assert!(!exit && err.is_none());
        assert_eq!(seen.lock().unwrap().len(), 7);
        let (exit, err) = run_for_all(7, false, |i| async move {
            if i == 0 {
                Err(Error::Claims("boom".into()))
            } else {
                Ok(false)
            }
        })
        .await;
        assert!(exit);
        assert_eq!(err.unwrap().to_string(), "boom");
    }
}
