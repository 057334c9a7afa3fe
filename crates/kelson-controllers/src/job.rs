//! The Job controller (upstream pkg/controller/job): runs a Job's pods to
//! completion and reports progress in its status, as Kubernetes 1.33 does.
//!
//! - Pods are created up to `parallelism` and the remaining completions
//!   (Indexed Jobs: one per pending index, with the
//!   `batch.kubernetes.io/job-completion-index` annotation and label,
//!   hostname `<job>-<index>`, generateName `<job>-<index>-` and the
//!   JOB_COMPLETION_INDEX variable), in slow-start batches.
//! - Every pod carries the `batch.kubernetes.io/job-tracking` finalizer:
//!   a finished pod is first recorded in `status.uncountedTerminatedPods`,
//!   then its finalizer is removed, then it moves to `succeeded`/`failed`,
//!   so no pod is counted twice or lost even if it is deleted at once.
//! - backoffLimit (and backoffLimitPerIndex), exponential pod-replacement
//!   back-off, activeDeadlineSeconds, podFailurePolicy, successPolicy and
//!   suspend; terminal conditions go through the interim
//!   SuccessCriteriaMet / FailureTarget conditions first.
//! - Pods of deleted or finished Jobs, and orphans, lose the finalizer.

mod backoff;
mod indexes;
mod policy;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::channel::mpsc;
use futures::{StreamExt, TryStreamExt};
use jiff::Timestamp;
use k8s_openapi::api::batch::v1::{Job, JobCondition, JobStatus, UncountedTerminatedPods};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kelson_runtime::{EventType, Recorder};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Client, ResourceExt};
use tokio_util::sync::CancellationToken;

use crate::informers::{Informers, Notice};
use crate::podcontrol::{
    self, claim, controller_of, controller_ref, indexed_watch, is_pod_active, is_pod_ready,
    owners_of_child, pod_from_template, ClaimOwner, Expectations, OwnerIndex, PodControl, Selector,
};
pub use backoff::BackoffRecord;
pub use indexes::{
    Intervals, COMPLETION_INDEX_ANNOTATION, COMPLETION_INDEX_ENV, INDEX_FAILURE_COUNT_ANNOTATION,
    INDEX_IGNORED_FAILURE_COUNT_ANNOTATION,
};
pub use policy::{match_pod_failure_policy, FailureAction, PolicyMatch};

use crate::runner;
use backoff::BackoffStore;
use indexes::{completion_index, index_sort_key};

/// The finalizer that keeps a pod until the controller has counted it.
pub const JOB_TRACKING_FINALIZER: &str = "batch.kubernetes.io/job-tracking";
/// `spec.managedBy` of Jobs this controller handles (or no value).
pub const JOB_CONTROLLER_NAME: &str = "kubernetes.io/job-controller";
/// Events' source component.
pub const COMPONENT: &str = "job-controller";

pub const CONDITION_COMPLETE: &str = "Complete";
pub const CONDITION_FAILED: &str = "Failed";
pub const CONDITION_SUSPENDED: &str = "Suspended";
pub const CONDITION_FAILURE_TARGET: &str = "FailureTarget";
pub const CONDITION_SUCCESS_CRITERIA_MET: &str = "SuccessCriteriaMet";

pub const REASON_BACKOFF_LIMIT_EXCEEDED: &str = "BackoffLimitExceeded";
pub const REASON_DEADLINE_EXCEEDED: &str = "DeadlineExceeded";
pub const REASON_POD_FAILURE_POLICY: &str = "PodFailurePolicy";
pub const REASON_MAX_FAILED_INDEXES_EXCEEDED: &str = "MaxFailedIndexesExceeded";
pub const REASON_FAILED_INDEXES: &str = "FailedIndexes";
pub const REASON_SUCCESS_POLICY: &str = "SuccessPolicy";
pub const REASON_COMPLETIONS_REACHED: &str = "CompletionsReached";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Pods(#[from] podcontrol::Error),
    #[error("updating status of job {0}: {1}")]
    Status(String, #[source] kube::Error),
    #[error("removing tracking finalizer from pod {0}: {1}")]
    RemoveFinalizer(String, #[source] kube::Error),
    #[error("adding tracking finalizer to adopted pod {0}: {1}")]
    AddFinalizer(String, #[source] kube::Error),
}

impl Error {
    fn is_conflict(&self) -> bool {
        matches!(self, Error::Status(_, e) if podcontrol::is_conflict(e))
    }
}

/// Tunables; the defaults are upstream's.
#[derive(Debug, Clone)]
pub struct Options {
    /// Jobs synced at the same time (--concurrent-job-syncs).
    pub workers: u16,
    /// Delay before replacing the first failed pod; doubles per further
    /// consecutive failure.
    pub pod_failure_backoff: Duration,
    /// Cap of that delay.
    pub max_pod_failure_backoff: Duration,
    /// Most pod UIDs in `status.uncountedTerminatedPods` at once.
    pub max_uncounted_pods: usize,
    /// Most pods created or deleted in one sync.
    pub max_pods_per_sync: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            workers: runner::DEFAULT_WORKERS,
            pod_failure_backoff: Duration::from_secs(10),
            max_pod_failure_backoff: Duration::from_secs(10 * 60),
            max_uncounted_pods: 500,
            max_pods_per_sync: 500,
        }
    }
}

/// Pod UIDs whose finalizer removal a Job issued and hasn't seen yet
/// (upstream's uidTrackingExpectations), by Job UID: until then the pod
/// store may still show the finalizer, and counting the pod again would
/// count it twice.
#[derive(Debug, Default)]
struct FinalizerExpectations {
    inner: Mutex<HashMap<String, HashSet<String>>>,
}

impl FinalizerExpectations {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, HashSet<String>>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn expect(&self, job: &str, pods: impl IntoIterator<Item = String>) {
        self.lock().entry(job.to_string()).or_default().extend(pods);
    }

    fn observed(&self, job: &str, pod: &str) {
        let mut map = self.lock();
        if let Some(set) = map.get_mut(job) {
            set.remove(pod);
            if set.is_empty() {
                map.remove(job);
            }
        }
    }

    fn expected(&self, job: &str) -> HashSet<String> {
        self.lock().get(job).cloned().unwrap_or_default()
    }

    fn forget(&self, job: &str) {
        self.lock().remove(job);
    }
}

/// Work for the orphan worker, which removes tracking finalizers no Job
/// sync will remove.
#[derive(Debug, Clone)]
enum OrphanWork {
    /// Check one pod.
    Pod { namespace: String, name: String },
    /// A Job is gone: check the pods it controlled.
    JobGone { namespace: String, uid: String },
    /// Check every pod with the finalizer (after start, and periodically,
    /// since a relist drops deleted Jobs without an event).
    Sweep,
}

struct Context {
    client: Client,
    jobs: Store<Job>,
    pods: Arc<OwnerIndex<Pod>>,
    expectations: Arc<Expectations>,
    finalizers: Arc<FinalizerExpectations>,
    backoff: Arc<BackoffStore>,
    pod_control: PodControl,
    recorder: Recorder,
    orphans: mpsc::UnboundedSender<OrphanWork>,
    options: Options,
}

/// Runs the Job controller with upstream's defaults until `shutdown` fires.
pub async fn run(client: Client, shutdown: CancellationToken) {
    run_with(Informers::new(client), shutdown, Options::default()).await;
}

/// Runs the Job controller with `options` until `shutdown` fires.
pub async fn run_with(informers: Informers, shutdown: CancellationToken, options: Options) {
    let client = informers.client().clone();
    let jobs_api: Api<Job> = Api::all(client.clone());
    let (job_reader, job_writer) = reflector::store::<Job>();
    let expectations = Arc::new(Expectations::default());
    let finalizers = Arc::new(FinalizerExpectations::default());
    let backoff = Arc::new(BackoffStore::default());
    let (orphan_tx, orphan_rx) = mpsc::unbounded::<OrphanWork>();

    let job_stream = {
        let (expectations, finalizers, backoff, tx) = (
            expectations.clone(),
            finalizers.clone(),
            backoff.clone(),
            orphan_tx.clone(),
        );
        watcher(jobs_api, watcher::Config::default())
            .default_backoff()
            .modify(|j: &mut Job| j.metadata.managed_fields = None)
            .reflect(job_writer)
            .inspect_ok(move |ev| {
                if let watcher::Event::Delete(job) = ev {
                    let (ns, uid) = (
                        job.namespace().unwrap_or_default(),
                        job.metadata.uid.clone(),
                    );
                    backoff.remove(&format!("{ns}/{}", job.name_any()));
                    if let Some(uid) = uid {
                        expectations.forget(&uid);
                        finalizers.forget(&uid);
                        let _ = tx.unbounded_send(OrphanWork::JobGone { namespace: ns, uid });
                    }
                }
            })
            .touched_objects()
    };
    let (pods, pod_stream) = {
        let (expectations, finalizers, jobs, tx) = (
            expectations.clone(),
            finalizers.clone(),
            job_reader.clone(),
            orphan_tx.clone(),
        );
        indexed_watch::<Pod, _>(&informers, move |n| {
            expectations.observe(n);
            observe_pod_event(n, &finalizers, &jobs, &tx);
        })
    };

    let recorder = Recorder::new(client.clone(), COMPONENT, "");
    let ctx = Arc::new(Context {
        pod_control: PodControl::new(client.clone(), recorder.clone()),
        recorder: recorder.clone(),
        client,
        jobs: job_reader.clone(),
        pods,
        expectations,
        finalizers,
        backoff,
        orphans: orphan_tx,
        options: options.clone(),
    });
    let job_store = job_reader.clone();
    let controller = Controller::for_stream(job_stream, job_reader)
        .with_config(controller::Config::default().concurrency(options.workers))
        .watches_shared_stream(pod_stream, move |pod: Arc<Pod>| {
            owners_of_child(&job_store, &pod.metadata, job_selector)
        })
        .graceful_shutdown_on(shutdown.clone().cancelled_owned())
        .run(reconcile, error_policy, ctx.clone());
    let controller = runner::drive(controller, "job sync");
    tokio::join!(controller, orphan_worker(ctx, orphan_rx, shutdown));
    recorder.flush().await;
}

fn has_tracking_finalizer(pod: &Pod) -> bool {
    pod.metadata
        .finalizers
        .iter()
        .flatten()
        .any(|f| f == JOB_TRACKING_FINALIZER)
}

/// Whether the controller reference names a batch/v1 Job.
fn is_job_ref(r: &k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference) -> bool {
    r.kind == "Job" && r.api_version == "batch/v1"
}

/// Feeds pod events into the finalizer expectations and hands pods whose
/// finalizer no Job sync will remove to the orphan worker.
fn observe_pod_event(
    notice: &Notice<Pod>,
    finalizers: &FinalizerExpectations,
    jobs: &Store<Job>,
    orphans: &mpsc::UnboundedSender<OrphanWork>,
) {
    let (pod, deleted) = match notice {
        Notice::Apply { obj, .. } => (obj, false),
        Notice::Delete(p) => (p, true),
        Notice::Synced => return,
    };
    let has_finalizer = has_tracking_finalizer(pod);
    let owner = controller_of(&pod.metadata);
    if let (Some(r), Some(uid)) = (owner, pod.metadata.uid.as_deref()) {
        if deleted || !has_finalizer {
            finalizers.observed(&r.uid, uid);
        }
    }
    if deleted || !has_finalizer {
        return;
    }
    let orphaned = match owner {
        None => true,
        Some(r) if is_job_ref(r) => {
            let ns = pod.metadata.namespace.as_deref().unwrap_or("");
            match jobs.get(&ObjectRef::new(&r.name).within(ns)) {
                Some(job) => {
                    job.metadata.uid.as_deref() != Some(r.uid.as_str()) || is_finished(&job)
                }
                None => true,
            }
        }
        Some(_) => false,
    };
    if orphaned {
        let _ = orphans.unbounded_send(OrphanWork::Pod {
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
            name: pod.metadata.name.clone().unwrap_or_default(),
        });
    }
}

/// A Job's pod selector (the API server generates it unless
/// manualSelector is set).
fn job_selector(job: &Job) -> Result<Selector, podcontrol::Error> {
    Selector::from_label_selector(job.spec.as_ref().and_then(|s| s.selector.as_ref()))
}

fn error_policy(job: Arc<Job>, err: &Error, _ctx: Arc<Context>) -> Action {
    if err.is_conflict() {
        // A newer Job is on its way through the watch; retry soon.
        tracing::debug!(job = %job.name_any(), error = %err, "job sync conflict");
        return Action::requeue(Duration::from_millis(500));
    }
    tracing::warn!(job = %job.name_any(), error = %err, "job sync failed");
    Action::requeue(Duration::from_secs(1))
}

// ---------------------------------------------------------------------------
// Job predicates

/// Complete or Failed is True (upstream's IsJobFinished).
pub fn is_finished(job: &Job) -> bool {
    conditions(job).iter().any(|c| {
        (c.type_ == CONDITION_COMPLETE || c.type_ == CONDITION_FAILED) && c.status == "True"
    })
}

fn conditions(job: &Job) -> &[JobCondition] {
    job.status
        .as_ref()
        .and_then(|s| s.conditions.as_deref())
        .unwrap_or_default()
}

fn managed_externally(job: &Job) -> bool {
    job.spec
        .as_ref()
        .and_then(|s| s.managed_by.as_deref())
        .is_some_and(|m| m != JOB_CONTROLLER_NAME)
}

fn is_indexed(job: &Job) -> bool {
    job.spec.as_ref().and_then(|s| s.completion_mode.as_deref()) == Some("Indexed")
}

fn is_suspended(job: &Job) -> bool {
    job.spec.as_ref().and_then(|s| s.suspend) == Some(true)
}

fn completions(job: &Job) -> Option<i32> {
    job.spec.as_ref().and_then(|s| s.completions)
}

fn backoff_limit_per_index(job: &Job) -> Option<i32> {
    job.spec.as_ref().and_then(|s| s.backoff_limit_per_index)
}

/// Pods are replaced only once they reached Failed, not while terminating.
fn only_replace_failed_pods(job: &Job) -> bool {
    let spec = job.spec.as_ref();
    spec.and_then(|s| s.pod_replacement_policy.as_deref()) == Some("Failed")
        || spec.is_some_and(|s| s.pod_failure_policy.is_some())
}

/// Failed, or (unless only failed pods are replaced) deleted before
/// succeeding: an orphan may never reach the Failed phase.
fn is_pod_failed(pod: &Pod, job: &Job) -> bool {
    let phase = pod_phase(pod);
    if phase == Some("Failed") {
        return true;
    }
    !only_replace_failed_pods(job)
        && pod.metadata.deletion_timestamp.is_some()
        && phase != Some("Succeeded")
}

fn pod_phase(pod: &Pod) -> Option<&str> {
    pod.status.as_ref().and_then(|s| s.phase.as_deref())
}

fn is_terminating(pod: &Pod) -> bool {
    let phase = pod_phase(pod);
    pod.metadata.deletion_timestamp.is_some()
        && phase != Some("Succeeded")
        && phase != Some("Failed")
}

fn pod_uid(pod: &Pod) -> &str {
    pod.metadata.uid.as_deref().unwrap_or("")
}

fn find_condition<'a>(list: &'a [JobCondition], type_: &str) -> Option<&'a JobCondition> {
    list.iter().find(|c| c.type_ == type_)
}

fn new_condition(
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
    now: Timestamp,
) -> JobCondition {
    let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_string());
    JobCondition {
        type_: type_.into(),
        status: status.into(),
        reason: non_empty(reason),
        message: non_empty(message),
        last_probe_time: Some(Time(now)),
        last_transition_time: Some(Time(now)),
    }
}

/// Sets the condition of `type_` (replacing one that differs), never adding
/// a False condition that didn't exist. Returns whether anything changed.
/// The terminal condition (Failed, Complete) an interim one (FailureTarget,
/// SuccessCriteriaMet) leads to: same reason and message.
fn terminal_condition(interim: &JobCondition, type_: &str, now: Timestamp) -> JobCondition {
    new_condition(
        type_,
        "True",
        interim.reason.as_deref().unwrap_or(""),
        interim.message.as_deref().unwrap_or(""),
        now,
    )
}

fn ensure_condition(
    list: &mut Vec<JobCondition>,
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
    now: Timestamp,
) -> bool {
    if let Some(c) = list.iter_mut().find(|c| c.type_ == type_) {
        let same = c.status == status
            && c.reason.as_deref().unwrap_or("") == reason
            && c.message.as_deref().unwrap_or("") == message;
        if !same {
            *c = new_condition(type_, status, reason, message, now);
        }
        return !same;
    }
    if status != "False" {
        list.push(new_condition(type_, status, reason, message, now));
        return true;
    }
    false
}

fn is_true(c: Option<&JobCondition>, type_: &str) -> bool {
    c.is_some_and(|c| c.type_ == type_ && c.status == "True")
}

/// With restartPolicy OnFailure failures show as container restarts of
/// running pods: their sum reaching backoffLimit fails the Job.
fn past_backoff_limit_on_failure(job: &Job, pods: &[Arc<Pod>]) -> bool {
    let spec = job.spec.as_ref();
    let restart = spec
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|s| s.restart_policy.as_deref());
    if restart != Some("OnFailure") {
        return false;
    }
    let limit = spec.and_then(|s| s.backoff_limit).unwrap_or(6);
    let mut restarts: i64 = 0;
    for p in pods {
        if !matches!(pod_phase(p), Some("Running") | Some("Pending")) {
            continue;
        }
        let Some(st) = &p.status else { continue };
        let lists = [
            st.init_container_statuses.as_deref(),
            st.container_statuses.as_deref(),
        ];
        for cs in lists.into_iter().flatten().flatten() {
            restarts += i64::from(cs.restart_count);
        }
    }
    if limit == 0 {
        restarts > 0
    } else {
        restarts >= i64::from(limit)
    }
}

/// How many pods should be active (upstream's manageJob): without
/// completions, parallelism until the first success, then what is left
/// running; with completions, the remaining ones up to parallelism.
pub fn want_active(completions: Option<i32>, parallelism: i32, succeeded: i32, active: i32) -> i32 {
    match completions {
        None if succeeded > 0 => active,
        None => parallelism,
        Some(c) => (c - succeeded).min(parallelism).max(0),
    }
}

/// The active pods to delete: for Indexed Jobs those without a valid index
/// and all but one pod per repeated index; then the least valuable ones
/// (unscheduled, pending, not ready, …) until `rm_at_least` are chosen.
fn active_pods_for_removal(
    job: &Job,
    pods: &[Arc<Pod>],
    rm_at_least: usize,
    now: Timestamp,
) -> Vec<Arc<Pod>> {
    let order = |a: &Arc<Pod>, b: &Arc<Pod>| podcontrol::compare_for_deletion(a, 0, b, 0, now);
    let mut rm = Vec::new();
    let mut left: Vec<Arc<Pod>>;
    if is_indexed(job) {
        let completions = completions(job).unwrap_or(0);
        let mut sorted = pods.to_vec();
        sorted.sort_by_key(|p| index_sort_key(p));
        left = Vec::with_capacity(sorted.len());
        let mut i = 0;
        while i < sorted.len() {
            let ix = completion_index(&sorted[i]);
            let mut j = i + 1;
            while j < sorted.len() && completion_index(&sorted[j]) == ix {
                j += 1;
            }
            let mut group = sorted[i..j].to_vec();
            match ix {
                Some(ix) if ix < completions => {
                    group.sort_by(order);
                    if let Some(keep) = group.pop() {
                        left.push(keep);
                    }
                    rm.extend(group);
                }
                _ => rm.extend(group),
            }
            i = j;
        }
    } else {
        left = pods.to_vec();
    }
    if rm.len() < rm_at_least {
        left.sort_by(order);
        let more = (rm_at_least - rm.len()).min(left.len());
        rm.extend(left.into_iter().take(more));
    }
    rm
}

// ---------------------------------------------------------------------------
// The sync

/// What one sync of a Job works with (upstream's syncJobCtx).
struct JobSync<'a> {
    ctx: &'a Context,
    job: Job,
    /// The status as last written or read, to tell whether to write.
    written: Option<JobStatus>,
    key: String,
    uid: String,
    namespace: String,
    name: String,
    now: Timestamp,
    pods: Vec<Arc<Pod>>,
    active_pods: Vec<Arc<Pod>>,
    finished: Option<JobCondition>,
    succeeded: i32,
    failed: i32,
    prev_succeeded_indexes: Intervals,
    succeeded_indexes: Intervals,
    failed_indexes: Option<Intervals>,
    new_backoff: BackoffRecord,
    expected_rm: HashSet<String>,
    uncounted_succeeded: HashSet<String>,
    uncounted_failed: HashSet<String>,
    delayed_deletion: HashMap<i32, Arc<Pod>>,
    terminating: i32,
    ready: i32,
    /// When to look again even without events.
    requeue: Option<Duration>,
}

impl JobSync<'_> {
    fn requeue_after(&mut self, d: Duration) {
        // At least the batching period, or what the back-off asks if less
        // (tests use short back-offs), so a loop can't spin.
        let floor = Duration::from_secs(1).min(self.ctx.options.pod_failure_backoff);
        let d = d.max(floor).max(Duration::from_millis(10));
        self.requeue = Some(self.requeue.map_or(d, |r| r.min(d)));
    }

    fn spec_completions(&self) -> i32 {
        completions(&self.job).unwrap_or(0)
    }

    fn status(&mut self) -> &mut JobStatus {
        self.job.status.get_or_insert_with(JobStatus::default)
    }

    fn uncounted(&mut self) -> &mut UncountedTerminatedPods {
        self.status()
            .uncounted_terminated_pods
            .get_or_insert_with(UncountedTerminatedPods::default)
    }

    fn policy_counts(&self, pod: &Pod) -> PolicyMatch {
        match_pod_failure_policy(
            self.job
                .spec
                .as_ref()
                .and_then(|s| s.pod_failure_policy.as_ref()),
            pod,
        )
    }

    /// Pods with the finalizer (so not counted yet), not in `uncounted`,
    /// not expected to lose it, with a valid index for Indexed Jobs, and
    /// passing `filter`.
    fn valid_pods(
        &self,
        uncounted: Option<&HashSet<String>>,
        filter: impl Fn(&Pod) -> bool,
    ) -> Vec<Arc<Pod>> {
        let indexed = is_indexed(&self.job);
        let completions = self.spec_completions();
        self.pods
            .iter()
            .filter(|p| {
                let uid = pod_uid(p);
                has_tracking_finalizer(p)
                    && !uncounted.is_some_and(|u| u.contains(uid))
                    && !self.expected_rm.contains(uid)
            })
            .filter(|p| !indexed || completion_index(p).is_some_and(|i| i < completions))
            .filter(|p| filter(p))
            .cloned()
            .collect()
    }

    fn fail_job_message(&self) -> Option<String> {
        self.job.spec.as_ref()?.pod_failure_policy.as_ref()?;
        self.pods
            .iter()
            .filter(|p| is_pod_failed(p, &self.job))
            .find_map(|p| self.policy_counts(p).fail_job_message)
    }

    fn past_active_deadline(&self) -> bool {
        self.active_deadline_remaining()
            .is_some_and(|r| r.is_zero())
    }

    /// Time left before activeDeadlineSeconds passes (None without one,
    /// or while suspended).
    fn active_deadline_remaining(&self) -> Option<Duration> {
        let ads = self.job.spec.as_ref()?.active_deadline_seconds?;
        if is_suspended(&self.job) {
            return None;
        }
        let start = self.job.status.as_ref()?.start_time.as_ref()?.0;
        let elapsed = Duration::try_from(self.now.duration_since(start)).unwrap_or(Duration::ZERO);
        Some(Duration::from_secs(ads.max(0) as u64).saturating_sub(elapsed))
    }

    fn failure_condition(&self, reason: &str, message: &str) -> JobCondition {
        new_condition(CONDITION_FAILURE_TARGET, "True", reason, message, self.now)
    }

    fn is_index_failed(&self, pod: &Pod, limit: i32) -> bool {
        let mut counted = false;
        if is_pod_failed(pod, &self.job) {
            let m = self.policy_counts(pod);
            if m.action == Some(FailureAction::FailIndex) {
                return true;
            }
            counted = m.count_failed;
        }
        counted && indexes::annotation_count(pod, INDEX_FAILURE_COUNT_ANNOTATION) >= limit
    }

    /// Per index, the failed pod whose removal waits until its replacement
    /// exists, so that the replacement can carry the index's failure count.
    fn pods_with_delayed_deletion(&self) -> HashMap<i32, Arc<Pod>> {
        let active: HashSet<i32> = indexes::indexes_of(&self.active_pods).into_iter().collect();
        let mut out: HashMap<i32, Arc<Pod>> = HashMap::new();
        let failed = self.valid_pods(None, |p| is_pod_failed(p, &self.job));
        for p in failed {
            let Some(ix) = completion_index(&p) else {
                continue;
            };
            if self.succeeded_indexes.has(ix)
                || self.failed_indexes.as_ref().is_some_and(|f| f.has(ix))
                || active.contains(&ix)
            {
                continue;
            }
            match out.get(&ix) {
                Some(last)
                    if !(backoff::absolute_index_failures(last)
                        <= backoff::absolute_index_failures(&p)
                        && backoff::finished_time(&p) >= backoff::finished_time(last)) => {}
                _ => {
                    out.insert(ix, p);
                }
            }
        }
        out
    }

    async fn write_status(&mut self) -> Result<(), Error> {
        if self.written.as_ref() == self.job.status.as_ref() {
            return Ok(());
        }
        let api: Api<Job> = Api::namespaced(self.ctx.client.clone(), &self.namespace);
        let updated = api
            .replace_status(&self.name, &PostParams::default(), &self.job)
            .await
            .map_err(|e| Error::Status(self.key.clone(), e))?;
        self.written = updated.status.clone();
        self.job = updated;
        Ok(())
    }
}

async fn reconcile(job: Arc<Job>, ctx: Arc<Context>) -> Result<Action, Error> {
    if ctx.pods.store().wait_until_ready().await.is_err() {
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    let (Some(namespace), Some(uid)) = (job.metadata.namespace.clone(), job.metadata.uid.clone())
    else {
        return Ok(Action::await_change());
    };
    let name = job.name_any();
    let key = format!("{namespace}/{name}");
    if managed_externally(&job) {
        return Ok(Action::await_change());
    }
    if is_finished(&job) {
        ctx.backoff.remove(&key);
        // Backup for finalizers a finished Job left behind.
        for p in ctx.pods.children(&namespace, &uid, false) {
            if has_tracking_finalizer(&p) {
                let _ = ctx.orphans.unbounded_send(OrphanWork::Pod {
                    namespace: namespace.clone(),
                    name: p.name_any(),
                });
            }
        }
        return Ok(Action::await_change());
    }
    let mode = job.spec.as_ref().and_then(|s| s.completion_mode.as_deref());
    if mode.is_some_and(|m| m != "NonIndexed" && m != "Indexed") {
        ctx.recorder.event_for(
            job.as_ref(),
            EventType::Warning,
            "UnknownCompletionMode",
            "Skipped Job sync because completion mode is unknown",
        );
        return Ok(Action::await_change());
    }

    // Checked before reading the pods: a pod created after this point only
    // defers the sync, it can't be missed.
    let satisfied = ctx.expectations.satisfied(&uid);
    let pods = claim_pods(&ctx, &job, &namespace, &name, &uid).await?;
    let now = Timestamp::now();
    let status = job.status.clone().unwrap_or_default();
    let uncounted = status.uncounted_terminated_pods.clone().unwrap_or_default();
    let active_pods: Vec<Arc<Pod>> = pods.iter().filter(|p| is_pod_active(p)).cloned().collect();
    let mut sync = JobSync {
        ctx: &ctx,
        written: job.status.clone(),
        job: (*job).clone(),
        key,
        uid,
        namespace,
        name,
        now,
        ready: active_pods.iter().filter(|p| is_pod_ready(p)).count() as i32,
        terminating: pods.iter().filter(|p| is_terminating(p)).count() as i32,
        active_pods,
        pods,
        finished: None,
        succeeded: 0,
        failed: 0,
        prev_succeeded_indexes: Intervals::default(),
        succeeded_indexes: Intervals::default(),
        failed_indexes: None,
        new_backoff: BackoffRecord::default(),
        expected_rm: HashSet::new(),
        uncounted_succeeded: uncounted.succeeded.iter().flatten().cloned().collect(),
        uncounted_failed: uncounted.failed.iter().flatten().cloned().collect(),
        delayed_deletion: HashMap::new(),
        requeue: None,
    };
    sync.expected_rm = ctx.finalizers.expected(&sync.uid);
    sync.uncounted();
    let result = sync_job(&mut sync, satisfied).await;
    let requeue = if satisfied {
        sync.requeue
    } else {
        // Safety net should the awaited events never come.
        Some(sync.requeue.map_or(podcontrol::EXPECTATIONS_TIMEOUT, |r| {
            r.min(podcontrol::EXPECTATIONS_TIMEOUT)
        }))
    };
    result?;
    Ok(requeue.map_or_else(Action::await_change, Action::requeue))
}

/// Upstream's getPodsForJob: the Job's pods, adopting matching orphans
/// (which get the tracking finalizer) and releasing pods that no longer
/// match.
async fn claim_pods(
    ctx: &Context,
    job: &Job,
    namespace: &str,
    name: &str,
    uid: &str,
) -> Result<Vec<Arc<Pod>>, Error> {
    let selector = job_selector(job)?;
    let candidates = ctx.pods.children(namespace, uid, true);
    let orphans: HashSet<String> = candidates
        .iter()
        .filter(|p| controller_of(&p.metadata).is_none())
        .map(|p| pod_uid(p).to_string())
        .collect();
    let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
    let jobs_api: Api<Job> = Api::namespaced(ctx.client.clone(), namespace);
    let owner = ClaimOwner {
        reference: controller_ref(job),
        namespace,
        deleting: job.metadata.deletion_timestamp.is_some(),
    };
    let mut pods = claim(&pods_api, &owner, &selector, candidates, || {
        can_adopt(&jobs_api, name, uid)
    })
    .await?;
    if orphans.is_empty() {
        return Ok(pods);
    }
    for p in pods.iter_mut() {
        if !orphans.contains(pod_uid(p)) || has_tracking_finalizer(p) {
            continue;
        }
        let patch = serde_json::json!({
            "metadata": {"finalizers": [JOB_TRACKING_FINALIZER], "uid": p.metadata.uid}
        });
        let pod_name = p.name_any();
        let adopted = pods_api
            .patch(&pod_name, &PatchParams::default(), &Patch::Strategic(patch))
            .await
            .map_err(|e| Error::AddFinalizer(pod_name, e))?;
        *p = Arc::new(adopted);
    }
    Ok(pods)
}

/// A fresh read proves the Job still exists with this UID and is not being
/// deleted, so that a stale cache cannot adopt.
async fn can_adopt(api: &Api<Job>, name: &str, uid: &str) -> Result<(), podcontrol::Error> {
    match api.get(name).await {
        Ok(fresh) if fresh.metadata.uid.as_deref() != Some(uid) => {
            Err(podcontrol::Error::CanAdopt(
                name.into(),
                format!(
                    "original Job {name} is gone: got uid {:?}, wanted {uid}",
                    fresh.metadata.uid
                ),
            ))
        }
        Ok(fresh) if fresh.metadata.deletion_timestamp.is_some() => Err(
            podcontrol::Error::CanAdopt(name.into(), format!("Job {name} has just been deleted")),
        ),
        Ok(_) => Ok(()),
        Err(e) => Err(podcontrol::Error::CanAdopt(name.into(), e.to_string())),
    }
}

/// Upstream's syncJob after the pods were claimed.
async fn sync_job(s: &mut JobSync<'_>, satisfied: bool) -> Result<(), Error> {
    let status = s.job.status.clone().unwrap_or_default();
    let spec = s.job.spec.clone().unwrap_or_default();
    let indexed = is_indexed(&s.job);
    let mut active = s.active_pods.len() as i32;

    let uncounted_succeeded = s.uncounted_succeeded.clone();
    let uncounted_failed = s.uncounted_failed.clone();
    let new_succeeded = s.valid_pods(Some(&uncounted_succeeded), |p| {
        pod_phase(p) == Some("Succeeded")
    });
    let new_failed = s.valid_pods(Some(&uncounted_failed), |p| is_pod_failed(p, &s.job));
    let counted_failures = new_failed
        .iter()
        .filter(|p| s.policy_counts(p).count_failed)
        .count() as i32;
    s.succeeded = status.succeeded.unwrap_or(0)
        + new_succeeded.len() as i32
        + uncounted_succeeded.len() as i32;
    s.failed = status.failed.unwrap_or(0) + counted_failures + uncounted_failed.len() as i32;

    // First start; a suspended Job starts when resumed.
    if status.start_time.is_none() && !is_suspended(&s.job) {
        let now = s.now;
        s.status().start_time = Some(Time(now));
    }
    s.new_backoff = s
        .ctx
        .backoff
        .next_record(&s.key, &new_succeeded, &new_failed);

    let backoff_limit = spec.backoff_limit.unwrap_or(6);
    let conds = conditions(&s.job).to_vec();
    s.finished = find_condition(&conds, CONDITION_SUCCESS_CRITERIA_MET)
        .filter(|c| c.status == "True")
        .cloned();
    // Once success is established the failure policy no longer applies.
    if s.finished.is_none() {
        if let Some(ft) =
            find_condition(&conds, CONDITION_FAILURE_TARGET).filter(|c| c.status == "True")
        {
            s.finished = Some(terminal_condition(ft, CONDITION_FAILED, s.now));
        } else if let Some(msg) = s.fail_job_message() {
            s.finished = Some(s.failure_condition(REASON_POD_FAILURE_POLICY, &msg));
        }
    }
    if s.finished.is_none() {
        if s.failed > backoff_limit || past_backoff_limit_on_failure(&s.job, &s.pods) {
            s.finished = Some(s.failure_condition(
                REASON_BACKOFF_LIMIT_EXCEEDED,
                "Job has reached the specified backoff limit",
            ));
        } else if s.past_active_deadline() {
            s.finished = Some(s.failure_condition(
                REASON_DEADLINE_EXCEEDED,
                "Job was active longer than specified deadline",
            ));
        } else if let Some(left) = s.active_deadline_remaining() {
            s.requeue_after(left);
        }
    }

    if indexed {
        let completions = s.spec_completions();
        s.prev_succeeded_indexes = Intervals::parse(
            status.completed_indexes.as_deref().unwrap_or(""),
            completions,
        );
        let new_ix: Vec<i32> = s
            .pods
            .iter()
            .filter(|p| pod_phase(p) == Some("Succeeded") && has_tracking_finalizer(p))
            .filter_map(|p| completion_index(p))
            .filter(|i| *i < completions)
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        s.succeeded_indexes = s.prev_succeeded_indexes.with_indexes(new_ix);
        s.succeeded = s.succeeded_indexes.total();
        if let Some(limit) = backoff_limit_per_index(&s.job) {
            let prev =
                Intervals::parse(status.failed_indexes.as_deref().unwrap_or(""), completions);
            let new_failed_ix: Vec<i32> = s
                .pods
                .iter()
                .filter(|p| has_tracking_finalizer(p))
                .filter(|p| completion_index(p).is_some_and(|i| i < completions))
                .filter(|p| s.is_index_failed(p, limit))
                .filter_map(|p| completion_index(p))
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect();
            let failed_indexes = prev.with_indexes(new_failed_ix);
            if s.finished.is_none() {
                if spec
                    .max_failed_indexes
                    .is_some_and(|m| failed_indexes.total() > m)
                {
                    s.finished = Some(s.failure_condition(
                        REASON_MAX_FAILED_INDEXES_EXCEEDED,
                        "Job has exceeded the specified maximal number of failed indexes",
                    ));
                } else if failed_indexes.total() > 0
                    && failed_indexes.total() + s.succeeded_indexes.total() >= completions
                {
                    s.finished =
                        Some(s.failure_condition(REASON_FAILED_INDEXES, "Job has failed indexes"));
                }
            }
            s.failed_indexes = Some(failed_indexes);
            s.delayed_deletion = s.pods_with_delayed_deletion();
        }
        if s.finished.is_none() {
            if let Some(msg) = policy::match_success_policy(
                spec.success_policy.as_ref(),
                completions,
                &s.succeeded_indexes,
            ) {
                s.finished = Some(new_condition(
                    CONDITION_SUCCESS_CRITERIA_MET,
                    "True",
                    REASON_SUCCESS_POLICY,
                    &msg,
                    s.now,
                ));
            }
        }
    }

    let mut manage_err = None;
    if s.finished.is_some() {
        // The Job is done: its remaining pods go (keeping their finalizers
        // until they are counted below).
        let (deleted_ready, deleted, err) = delete_active_pods(s).await;
        if deleted != active || !satisfied {
            // Pods may remain, or be missing from the cache: not yet.
            s.finished = None;
        }
        active -= deleted;
        s.terminating += deleted;
        s.ready -= deleted_ready;
        manage_err = err;
    } else {
        let mut managed = false;
        if satisfied && s.job.metadata.deletion_timestamp.is_none() {
            match manage_job(s).await {
                Ok(a) => active = a,
                Err((a, e)) => {
                    active = a;
                    manage_err = Some(e);
                }
            }
            managed = true;
        }
        let complete = match spec.completions {
            None => s.succeeded > 0 && active == 0,
            Some(c) => s.succeeded >= c && active == 0,
        };
        if complete {
            s.finished = Some(new_condition(
                CONDITION_SUCCESS_CRITERIA_MET,
                "True",
                REASON_COMPLETIONS_REACHED,
                "Reached expected number of succeeded pods",
                s.now,
            ));
        } else if managed {
            let now = s.now;
            let suspended = is_suspended(&s.job);
            let mut list = s.status().conditions.take().unwrap_or_default();
            let changed = if suspended {
                ensure_condition(
                    &mut list,
                    CONDITION_SUSPENDED,
                    "True",
                    "JobSuspended",
                    "Job suspended",
                    now,
                )
            } else {
                ensure_condition(
                    &mut list,
                    CONDITION_SUSPENDED,
                    "False",
                    "JobResumed",
                    "Job resumed",
                    now,
                )
            };
            s.status().conditions = (!list.is_empty()).then_some(list);
            if changed && suspended {
                s.ctx
                    .recorder
                    .event_for(&s.job, EventType::Normal, "Suspended", "Job suspended");
            } else if changed {
                s.ctx
                    .recorder
                    .event_for(&s.job, EventType::Normal, "Resumed", "Job resumed");
                // activeDeadlineSeconds counts continuous activity: a
                // resumed Job starts afresh.
                s.status().start_time = Some(Time(now));
            }
        }
    }

    let (ready, terminating) = (s.ready, s.terminating);
    let st = s.status();
    st.active = Some(active);
    st.ready = Some(ready);
    st.terminating = Some(terminating);
    track_status_and_remove_finalizers(s).await?;
    match manage_err {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Deletes the active pods of a finished Job (upstream's deleteActivePods).
/// Returns (ready pods deleted, pods deleted, first error).
async fn delete_active_pods(s: &JobSync<'_>) -> (i32, i32, Option<Error>) {
    let owner = kelson_runtime::events::object_reference(&s.job);
    let results = futures::future::join_all(s.active_pods.iter().map(|p| {
        let owner = &owner;
        async move {
            let r = s
                .ctx
                .pod_control
                .delete_pod(&s.namespace, &p.name_any(), owner)
                .await;
            (is_pod_ready(p), r)
        }
    }))
    .await;
    let (mut ready, mut deleted, mut err) = (0, 0, None);
    for (was_ready, r) in results {
        match r {
            Err(e) if !e.is_not_found() => {
                err.get_or_insert(Error::Pods(e));
            }
            _ => {
                deleted += 1;
                if was_ready {
                    ready += 1;
                }
            }
        }
    }
    (ready, deleted, err)
}

/// Removes the finalizer from, then deletes, `pods` (scale-down and
/// suspension: they must not count as failures). Returns (ready pods
/// removed, pods removed, first error).
async fn delete_job_pods(s: &JobSync<'_>, pods: &[Arc<Pod>]) -> (i32, i32, Option<Error>) {
    let owner = kelson_runtime::events::object_reference(&s.job);
    let keys: Vec<String> = pods
        .iter()
        .map(|p| podcontrol::object_key(&p.metadata))
        .collect();
    s.ctx
        .expectations
        .expect_deletions(&s.uid, keys.iter().cloned());
    let api: Api<Pod> = Api::namespaced(s.ctx.client.clone(), &s.namespace);
    let results = futures::future::join_all(pods.iter().zip(&keys).map(|(p, key)| {
        let (owner, api) = (&owner, &api);
        async move {
            let name = p.name_any();
            if has_tracking_finalizer(p) {
                if let Err(e) = remove_finalizer(api, &name).await {
                    s.ctx.expectations.deletion_observed(&s.uid, key);
                    if podcontrol::is_not_found(&e) {
                        return Ok(false);
                    }
                    return Err(Error::RemoveFinalizer(name, e));
                }
            }
            match s
                .ctx
                .pod_control
                .delete_pod(&s.namespace, &name, owner)
                .await
            {
                Ok(()) => Ok(is_pod_ready(p)),
                Err(e) => {
                    s.ctx.expectations.deletion_observed(&s.uid, key);
                    if e.is_not_found() {
                        Ok(is_pod_ready(p))
                    } else {
                        Err(Error::Pods(e))
                    }
                }
            }
        }
    }))
    .await;
    let (mut ready, mut removed, mut err) = (0, 0, None);
    for r in results {
        match r {
            Ok(was_ready) => {
                removed += 1;
                if was_ready {
                    ready += 1;
                }
            }
            Err(e) => {
                err.get_or_insert(e);
            }
        }
    }
    (ready, removed, err)
}

async fn remove_finalizer(api: &Api<Pod>, name: &str) -> kube::Result<Pod> {
    let patch = serde_json::json!({
        "metadata": {"$deleteFromPrimitiveList/finalizers": [JOB_TRACKING_FINALIZER]}
    });
    api.patch(name, &PatchParams::default(), &Patch::Strategic(patch))
        .await
}

/// Creates or deletes pods towards the wanted number of active ones
/// (upstream's manageJob). Returns the active count, with the error if
/// something failed.
async fn manage_job(s: &mut JobSync<'_>) -> Result<i32, (i32, Error)> {
    let mut active = s.active_pods.len() as i32;
    let max = s.ctx.options.max_pods_per_sync;
    if is_suspended(&s.job) {
        let victims = active_pods_for_removal(&s.job, &s.active_pods, s.active_pods.len(), s.now);
        let (ready, removed, err) = delete_job_pods(s, &victims).await;
        active -= removed;
        s.terminating += removed;
        s.ready -= ready;
        return err.map_or(Ok(active), |e| Err((active, e)));
    }
    let spec = s.job.spec.clone().unwrap_or_default();
    let want = want_active(
        spec.completions,
        spec.parallelism.unwrap_or(1),
        s.succeeded,
        active,
    );
    let rm_at_least = (active - want).max(0) as usize;
    let mut victims = active_pods_for_removal(&s.job, &s.active_pods, rm_at_least, s.now);
    victims.truncate(max);
    if !victims.is_empty() {
        // Deletions and creations never mix in one sync; deletions first.
        let (ready, removed, err) = delete_job_pods(s, &victims).await;
        active -= removed;
        s.terminating += removed;
        s.ready -= ready;
        return err.map_or(Ok(active), |e| Err((active, e)));
    }

    let terminating = if only_replace_failed_pods(&s.job) {
        s.terminating
    } else {
        0
    };
    let diff = want - terminating - active;
    if diff <= 0 {
        return Ok(active);
    }
    let per_index = backoff_limit_per_index(&s.job).is_some();
    let opts = &s.ctx.options;
    if !per_index {
        let remaining = s.new_backoff.remaining(
            s.now,
            opts.pod_failure_backoff,
            opts.max_pod_failure_backoff,
        );
        if !remaining.is_zero() {
            s.requeue_after(remaining);
            return Ok(active);
        }
    }
    let mut diff = (diff as usize).min(max);
    let mut to_create: Vec<Option<i32>> = vec![None; diff];
    if is_indexed(&s.job) {
        let completions = s.spec_completions();
        let mut non_pending = s
            .succeeded_indexes
            .with_indexes(indexes::indexes_of(&s.active_pods));
        if only_replace_failed_pods(&s.job) {
            let terminating: Vec<Arc<Pod>> = s
                .pods
                .iter()
                .filter(|p| is_terminating(p))
                .cloned()
                .collect();
            non_pending = non_pending.with_indexes(indexes::indexes_of(&terminating));
        }
        if let Some(f) = &s.failed_indexes {
            non_pending = non_pending.merge(f);
        }
        let mut pending = indexes::first_pending_indexes(&non_pending, diff, completions);
        if per_index {
            let mut now_ready = Vec::new();
            let mut min_wait: Option<Duration> = None;
            for ix in pending {
                let wait = backoff::remaining_for_index(
                    s.now,
                    opts.pod_failure_backoff,
                    opts.max_pod_failure_backoff,
                    s.delayed_deletion.get(&ix).map(|p| p.as_ref()),
                );
                if wait.is_zero() {
                    now_ready.push(ix);
                } else {
                    min_wait = Some(min_wait.map_or(wait, |m| m.min(wait)));
                }
            }
            if now_ready.is_empty() {
                if let Some(w) = min_wait {
                    s.requeue_after(w);
                }
                return Ok(active);
            }
            pending = now_ready;
        }
        diff = pending.len();
        to_create = pending.into_iter().map(Some).collect();
    }
    if diff == 0 {
        return Ok(active);
    }

    let job = &s.job;
    let mut template = spec.template.clone();
    if is_indexed(job) {
        if let Some(ps) = template.spec.as_mut() {
            indexes::add_completion_index_env(ps);
        }
    }
    let meta = template.metadata.get_or_insert_with(Default::default);
    let fins = meta.finalizers.get_or_insert_with(Vec::new);
    if !fins.iter().any(|f| f == JOB_TRACKING_FINALIZER) {
        fins.push(JOB_TRACKING_FINALIZER.to_string());
    }
    let base = pod_from_template(&template, &s.name, Some(controller_ref(job)));
    let owner = kelson_runtime::events::object_reference(job);
    let (name, delayed) = (&s.name, &s.delayed_deletion);
    let (successes, err) = s
        .ctx
        .pod_control
        .create_pods(
            &s.ctx.expectations,
            &s.uid,
            &s.namespace,
            &owner,
            diff,
            |i| {
                let mut pod = base.clone();
                if let Some(Some(ix)) = to_create.get(i) {
                    index_pod(
                        &mut pod,
                        job,
                        name,
                        *ix,
                        per_index.then(|| delayed.get(ix)).flatten(),
                    );
                }
                pod
            },
        )
        .await;
    active += successes as i32;
    match err {
        Some(e) => Err((active, Error::Pods(e))),
        None => Ok(active),
    }
}

/// Gives a pod of an Indexed Job its index: annotation, label, hostname,
/// generateName, and with backoffLimitPerIndex the failure counts of the
/// pod it replaces.
fn index_pod(pod: &mut Pod, job: &Job, job_name: &str, ix: i32, replaced: Option<&Arc<Pod>>) {
    let annotations = pod
        .metadata
        .annotations
        .get_or_insert_with(Default::default);
    annotations.insert(COMPLETION_INDEX_ANNOTATION.into(), ix.to_string());
    if backoff_limit_per_index(job).is_some() {
        let (mut failures, mut ignored) = (0, 0);
        if let Some(prev) = replaced {
            failures = indexes::annotation_count(prev, INDEX_FAILURE_COUNT_ANNOTATION);
            ignored = indexes::annotation_count(prev, INDEX_IGNORED_FAILURE_COUNT_ANNOTATION);
            let counts = match_pod_failure_policy(
                job.spec
                    .as_ref()
                    .and_then(|s| s.pod_failure_policy.as_ref()),
                prev,
            )
            .count_failed;
            if counts {
                failures = failures.saturating_add(1);
            } else {
                ignored = ignored.saturating_add(1);
            }
        }
        annotations.insert(INDEX_FAILURE_COUNT_ANNOTATION.into(), failures.to_string());
        if ignored > 0 {
            annotations.insert(
                INDEX_IGNORED_FAILURE_COUNT_ANNOTATION.into(),
                ignored.to_string(),
            );
        }
    }
    pod.metadata
        .labels
        .get_or_insert_with(Default::default)
        .insert(COMPLETION_INDEX_ANNOTATION.into(), ix.to_string());
    pod.metadata.generate_name = Some(indexes::generate_name_with_index(job_name, ix));
    if let Some(spec) = pod.spec.as_mut() {
        spec.hostname = Some(format!("{job_name}-{ix}"));
    }
}

/// Moves UIDs of pods that no longer have the finalizer from
/// `uncountedTerminatedPods` to the counters. Returns whether any moved.
fn clean_uncounted(status: &mut JobStatus, with_finalizer: &HashSet<String>) -> bool {
    let unc = status
        .uncounted_terminated_pods
        .get_or_insert_with(UncountedTerminatedPods::default);
    let mut moved_succeeded = 0;
    let mut moved_failed = 0;
    if let Some(list) = unc.succeeded.as_mut() {
        let before = list.len();
        list.retain(|u| with_finalizer.contains(u));
        moved_succeeded = (before - list.len()) as i32;
        if list.is_empty() {
            unc.succeeded = None;
        }
    }
    if let Some(list) = unc.failed.as_mut() {
        let before = list.len();
        list.retain(|u| with_finalizer.contains(u));
        moved_failed = (before - list.len()) as i32;
        if list.is_empty() {
            unc.failed = None;
        }
    }
    if moved_succeeded > 0 {
        status.succeeded = Some(status.succeeded.unwrap_or(0) + moved_succeeded);
    }
    if moved_failed > 0 {
        status.failed = Some(status.failed.unwrap_or(0) + moved_failed);
    }
    moved_succeeded + moved_failed > 0
}

/// Whether the pod's finalizer may go now: the Job is being deleted or is
/// done, the pod succeeded, or it failed (unless it waits for its
/// replacement to inherit the index's failure count).
fn can_remove_finalizer(s: &JobSync<'_>, pod: &Pod, considered_failed: bool) -> bool {
    if s.job.metadata.deletion_timestamp.is_some()
        || s.finished.is_some()
        || pod_phase(pod) == Some("Succeeded")
    {
        return true;
    }
    if !considered_failed {
        return false;
    }
    if backoff_limit_per_index(&s.job).is_some() {
        if let Some(ix) = completion_index(pod) {
            if s.delayed_deletion
                .get(&ix)
                .is_some_and(|p| pod_uid(p) == pod_uid(pod))
            {
                return false;
            }
        }
    }
    true
}

/// Upstream's trackJobStatusAndRemoveFinalizers: records finished pods in
/// `uncountedTerminatedPods` (written first), removes their finalizers,
/// moves them to the counters, and sets the terminal condition once
/// nothing is left uncounted or terminating.
async fn track_status_and_remove_finalizers(s: &mut JobSync<'_>) -> Result<(), Error> {
    let indexed = is_indexed(&s.job);
    let completions = s.spec_completions();
    if indexed {
        s.pods.sort_by_key(|p| index_sort_key(p));
    }
    let mut with_finalizer: HashSet<String> = s
        .pods
        .iter()
        .filter(|p| has_tracking_finalizer(p) && !s.expected_rm.contains(pod_uid(p)))
        .map(|p| pod_uid(p).to_string())
        .collect();
    clean_uncounted(s.status(), &with_finalizer);

    let max_uncounted = s.ctx.options.max_uncounted_pods;
    let mut to_remove: Vec<Arc<Pod>> = Vec::new();
    let mut new_succeeded_ix: Vec<i32> = Vec::new();
    let mut add_succeeded: Vec<String> = Vec::new();
    let mut add_failed: Vec<String> = Vec::new();
    let finished_as_failure = s
        .finished
        .as_ref()
        .is_some_and(|c| !is_true(Some(c), CONDITION_SUCCESS_CRITERIA_MET));
    let (unc_s, unc_f) = {
        let u = s.uncounted().clone();
        (
            u.succeeded.unwrap_or_default().len(),
            u.failed.unwrap_or_default().len(),
        )
    };
    let mut reached_max = false;
    for pod in &s.pods {
        let uid = pod_uid(pod);
        if !has_tracking_finalizer(pod) || s.expected_rm.contains(uid) {
            continue;
        }
        let failed = is_pod_failed(pod, &s.job);
        if !can_remove_finalizer(s, pod, failed) {
            continue;
        }
        to_remove.push(pod.clone());
        if pod_phase(pod) == Some("Succeeded") && !s.uncounted_failed.contains(uid) {
            if indexed {
                if let Some(ix) = completion_index(pod) {
                    if ix < completions && !s.prev_succeeded_indexes.has(ix) {
                        new_succeeded_ix.push(ix);
                    }
                }
            } else if !s.uncounted_succeeded.contains(uid) {
                add_succeeded.push(uid.to_string());
            }
        } else if failed || finished_as_failure {
            // Once the Job is finished every pod not succeeded is failed.
            let valid_index = completion_index(pod).is_some_and(|i| i < completions);
            if !s.uncounted_failed.contains(uid)
                && (!indexed || valid_index)
                && s.policy_counts(pod).count_failed
            {
                add_failed.push(uid.to_string());
            }
        }
        if new_succeeded_ix.len() + unc_s + add_succeeded.len() + unc_f + add_failed.len()
            >= max_uncounted
        {
            // Keep the status small and leave other Jobs their turn; the
            // writes below bring this Job back.
            reached_max = true;
            break;
        }
    }
    {
        let unc = s.uncounted();
        if !add_succeeded.is_empty() {
            unc.succeeded
                .get_or_insert_with(Vec::new)
                .extend(add_succeeded);
        }
        if !add_failed.is_empty() {
            unc.failed.get_or_insert_with(Vec::new).extend(add_failed);
        }
    }
    if indexed {
        s.succeeded_indexes = s.succeeded_indexes.with_indexes(new_succeeded_ix);
        let total = s.succeeded_indexes.total();
        let text = s.succeeded_indexes.to_string();
        let failed_text = s.failed_indexes.as_ref().map(|f| f.to_string());
        let st = s.status();
        st.succeeded = Some(total);
        st.completed_indexes = (!text.is_empty()).then_some(text);
        st.failed_indexes = failed_text;
    }
    // The interim conditions (FailureTarget, SuccessCriteriaMet) record the
    // outcome before finalizers go; Failed or Complete, with the same reason
    // and message, follows once everything is counted.
    if let Some(f) = s.finished.clone() {
        let terminal = if f.type_ == CONDITION_FAILURE_TARGET {
            Some((CONDITION_FAILED, false))
        } else if is_true(Some(&f), CONDITION_SUCCESS_CRITERIA_MET) {
            let has = is_true(
                find_condition(conditions(&s.job), CONDITION_SUCCESS_CRITERIA_MET),
                CONDITION_SUCCESS_CRITERIA_MET,
            );
            Some((CONDITION_COMPLETE, has))
        } else {
            None
        };
        if let Some((terminal, already_recorded)) = terminal {
            if !already_recorded {
                s.status()
                    .conditions
                    .get_or_insert_with(Vec::new)
                    .push(f.clone());
            }
            s.finished = Some(terminal_condition(&f, terminal, s.now));
        }
    }

    // 1. Persist what is about to be counted.
    let needs_flush = s.written.as_ref() != s.job.status.as_ref();
    s.write_status().await?;
    if needs_flush {
        s.ctx.backoff.update(&s.key, s.new_backoff.clone());
    }

    // 2. Remove the finalizers.
    let mut rm_err = None;
    if !to_remove.is_empty() {
        let uids: Vec<String> = to_remove.iter().map(|p| pod_uid(p).to_string()).collect();
        s.ctx.finalizers.expect(&s.uid, uids);
        let api: Api<Pod> = Api::namespaced(s.ctx.client.clone(), &s.namespace);
        let results = futures::future::join_all(to_remove.iter().map(|p| {
            let api = &api;
            async move { (p, remove_finalizer(api, &p.name_any()).await) }
        }))
        .await;
        for (p, r) in results {
            match r {
                Ok(_) => {
                    with_finalizer.remove(pod_uid(p));
                }
                Err(e) => {
                    // No update will show this removal.
                    s.ctx.finalizers.observed(&s.uid, pod_uid(p));
                    if podcontrol::is_not_found(&e) {
                        with_finalizer.remove(pod_uid(p));
                    } else if rm_err.is_none() {
                        rm_err = Some(Error::RemoveFinalizer(p.name_any(), e));
                    }
                }
            }
        }
    }

    // 3. Count what lost its finalizer.
    clean_uncounted(s.status(), &with_finalizer);
    if let Some(e) = rm_err {
        s.write_status().await?;
        return Err(e);
    }

    // 4. The terminal condition, once nothing is uncounted or terminating.
    let finished = !reached_max && enact_finished(s);
    s.write_status().await?;
    if finished {
        record_finished(s);
    }
    Ok(())
}

fn enact_finished(s: &mut JobSync<'_>) -> bool {
    let Some(f) = s.finished.clone() else {
        return false;
    };
    let unc = s.uncounted().clone();
    if !unc.succeeded.unwrap_or_default().is_empty() || !unc.failed.unwrap_or_default().is_empty() {
        return false;
    }
    if s.terminating > 0 {
        return false;
    }
    let now = s.now;
    let st = s.status();
    ensure_condition(
        st.conditions.get_or_insert_with(Vec::new),
        &f.type_,
        &f.status,
        f.reason.as_deref().unwrap_or(""),
        f.message.as_deref().unwrap_or(""),
        now,
    );
    if f.type_ == CONDITION_COMPLETE {
        st.completion_time = f.last_transition_time.clone();
    }
    true
}

fn record_finished(s: &JobSync<'_>) {
    let Some(f) = &s.finished else { return };
    let rec = &s.ctx.recorder;
    if f.type_ == CONDITION_COMPLETE {
        let succeeded = s
            .job
            .status
            .as_ref()
            .and_then(|st| st.succeeded)
            .unwrap_or(0);
        if completions(&s.job).is_some_and(|c| succeeded > c) {
            rec.event_for(
                &s.job,
                EventType::Warning,
                "TooManySucceededPods",
                "Too many succeeded pods running after completion count reached",
            );
        }
        rec.event_for(&s.job, EventType::Normal, "Completed", "Job completed");
    } else {
        rec.event_for(
            &s.job,
            EventType::Warning,
            f.reason.as_deref().unwrap_or(""),
            f.message.clone().unwrap_or_default(),
        );
    }
}

// ---------------------------------------------------------------------------
// Orphan pods

/// Removes the tracking finalizer from pods no Job sync will handle: those
/// without a controller, of a deleted Job, or of a finished Job (upstream's
/// orphan queue).
async fn orphan_worker(
    ctx: Arc<Context>,
    rx: mpsc::UnboundedReceiver<OrphanWork>,
    shutdown: CancellationToken,
) {
    let ready = async {
        let _ = ctx.jobs.wait_until_ready().await;
        let _ = ctx.pods.store().wait_until_ready().await;
    };
    tokio::select! {
        _ = shutdown.cancelled() => return,
        _ = ready => {}
    }
    let ticks = futures::stream::unfold(
        tokio::time::interval(Duration::from_secs(60)),
        |mut i| async move {
            i.tick().await;
            Some((OrphanWork::Sweep, i))
        },
    );
    futures::stream::select(rx, ticks)
        .take_until(shutdown.cancelled())
        .for_each_concurrent(16, |work| {
            let ctx = ctx.clone();
            async move { handle_orphan_work(&ctx, work).await }
        })
        .await;
}

async fn handle_orphan_work(ctx: &Context, work: OrphanWork) {
    match work {
        OrphanWork::Pod { namespace, name } => {
            release_orphan(ctx, &namespace, &name).await;
        }
        OrphanWork::JobGone { namespace, uid } => {
            for p in ctx.pods.children(&namespace, &uid, false) {
                if has_tracking_finalizer(&p) {
                    release_orphan(ctx, &namespace, &p.name_any()).await;
                }
            }
        }
        OrphanWork::Sweep => {
            for p in ctx.pods.store().state() {
                if has_tracking_finalizer(&p) && finalizer_is_orphaned(ctx, &p) {
                    let _ = ctx.orphans.unbounded_send(OrphanWork::Pod {
                        namespace: p.namespace().unwrap_or_default(),
                        name: p.name_any(),
                    });
                }
            }
        }
    }
}

/// Whether no Job sync will remove this pod's finalizer.
fn finalizer_is_orphaned(ctx: &Context, pod: &Pod) -> bool {
    match controller_of(&pod.metadata) {
        None => true,
        Some(r) if !is_job_ref(r) => false,
        Some(r) => {
            let ns = pod.metadata.namespace.as_deref().unwrap_or("");
            match ctx.jobs.get(&ObjectRef::new(&r.name).within(ns)) {
                Some(job) if job.metadata.uid.as_deref() == Some(r.uid.as_str()) => {
                    !managed_externally(&job) && is_finished(&job)
                }
                _ => true,
            }
        }
    }
}

async fn release_orphan(ctx: &Context, namespace: &str, name: &str) {
    let Some(pod) = ctx
        .pods
        .store()
        .get(&ObjectRef::new(name).within(namespace))
    else {
        return;
    };
    if !has_tracking_finalizer(&pod) || !finalizer_is_orphaned(ctx, &pod) {
        return;
    }
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
    match remove_finalizer(&api, name).await {
        Ok(_) => {}
        Err(e) if podcontrol::is_not_found(&e) => {}
        Err(e) => {
            tracing::warn!(pod = %name, %namespace, error = %e, "removing job tracking finalizer");
            let tx = ctx.orphans.clone();
            let work = OrphanWork::Pod {
                namespace: namespace.to_string(),
                name: name.to_string(),
            };
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let _ = tx.unbounded_send(work);
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(v: serde_json::Value) -> Job {
        serde_json::from_value(v).unwrap()
    }

    fn pod(v: serde_json::Value) -> Arc<Pod> {
        Arc::new(serde_json::from_value(v).unwrap())
    }

    #[test]
    fn wanted_active_pods_follow_completions_and_parallelism() {
        assert_eq!(want_active(Some(5), 2, 0, 0), 2);
        assert_eq!(want_active(Some(5), 2, 4, 1), 1);
        assert_eq!(want_active(Some(5), 2, 6, 0), 0);
        // Work queue: parallelism until one succeeded, then no new pods.
        assert_eq!(want_active(None, 3, 0, 1), 3);
        assert_eq!(want_active(None, 3, 1, 2), 2);
    }

    #[test]
    fn deleted_pods_count_as_failed_unless_only_failed_pods_are_replaced() {
        let deleted = pod(serde_json::json!({
            "metadata": {"name": "p", "deletionTimestamp": "2024-01-01T00:00:00Z"},
            "status": {"phase": "Running"}
        }));
        let plain = job(serde_json::json!({"spec": {"template": {}}}));
        assert!(is_pod_failed(&deleted, &plain));
        assert!(is_terminating(&deleted));
        let with_policy =
            job(serde_json::json!({"spec": {"template": {}, "podFailurePolicy": {"rules": []}}}));
        assert!(!is_pod_failed(&deleted, &with_policy));
        let replace_failed =
            job(serde_json::json!({"spec": {"template": {}, "podReplacementPolicy": "Failed"}}));
        assert!(!is_pod_failed(&deleted, &replace_failed));
    }

    #[test]
    fn conditions_are_set_once_and_false_is_never_added() {
        let now = Timestamp::from_second(1_700_000_000).unwrap();
        let mut list = Vec::new();
        assert!(!ensure_condition(
            &mut list,
            "Suspended",
            "False",
            "JobResumed",
            "Job resumed",
            now
        ));
        assert!(list.is_empty());
        assert!(ensure_condition(
            &mut list,
            "Suspended",
            "True",
            "JobSuspended",
            "Job suspended",
            now
        ));
        assert!(!ensure_condition(
            &mut list,
            "Suspended",
            "True",
            "JobSuspended",
            "Job suspended",
            now
        ));
        assert!(ensure_condition(
            &mut list,
            "Suspended",
            "False",
            "JobResumed",
            "Job resumed",
            now
        ));
        assert_eq!(list.len(), 1);
        assert_eq!(
            (list[0].status.as_str(), list[0].reason.as_deref()),
            ("False", Some("JobResumed"))
        );
    }

    #[test]
    fn on_failure_restarts_count_towards_the_backoff_limit() {
        let j = job(
            serde_json::json!({"spec": {"backoffLimit": 2, "template": {"spec": {"restartPolicy": "OnFailure", "containers": []}}}}),
        );
        let p = |restarts: i32| {
            pod(
                serde_json::json!({"metadata": {"name": "p"}, "status": {"phase": "Running", "containerStatuses": [
                    {"name": "c", "image": "x", "imageID": "", "ready": true, "restartCount": restarts}
                ]}}),
            )
        };
        assert!(!past_backoff_limit_on_failure(&j, &[p(1)]));
        assert!(past_backoff_limit_on_failure(&j, &[p(1), p(1)]));
        let never = job(
            serde_json::json!({"spec": {"backoffLimit": 0, "template": {"spec": {"restartPolicy": "Never", "containers": []}}}}),
        );
        assert!(!past_backoff_limit_on_failure(&never, &[p(5)]));
    }

    #[test]
    fn indexed_removal_drops_duplicates_and_out_of_range_indexes() {
        let now = Timestamp::from_second(1_700_000_000).unwrap();
        let j = job(
            serde_json::json!({"spec": {"completionMode": "Indexed", "completions": 3, "template": {}}}),
        );
        let p = |name: &str, ix: Option<&str>, ready: bool| {
            let mut ann = serde_json::Map::new();
            if let Some(ix) = ix {
                ann.insert(COMPLETION_INDEX_ANNOTATION.into(), ix.into());
            }
            pod(serde_json::json!({
                "metadata": {"name": name, "uid": name, "annotations": ann},
                "spec": {"containers": [], "nodeName": "n"},
                "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]}
            }))
        };
        let pods = vec![
            p("a0", Some("0"), true),
            p("b0", Some("0"), false),
            p("c1", Some("1"), true),
            p("d5", Some("5"), true),
            p("none", None, true),
        ];
        let mut names: Vec<String> = active_pods_for_removal(&j, &pods, 0, now)
            .iter()
            .map(|p| p.name_any())
            .collect();
        names.sort();
        assert_eq!(names, ["b0", "d5", "none"]);
        // More removals take the least valuable remaining pods.
        assert_eq!(active_pods_for_removal(&j, &pods, 4, now).len(), 4);
    }

    #[test]
    fn uncounted_pods_move_to_counters_once_their_finalizer_is_gone() {
        let mut st = JobStatus {
            succeeded: Some(2),
            uncounted_terminated_pods: Some(UncountedTerminatedPods {
                succeeded: Some(vec!["a".into(), "b".into()]),
                failed: Some(vec!["c".into()]),
            }),
            ..Default::default()
        };
        let with: HashSet<String> = ["b".to_string()].into();
        assert!(clean_uncounted(&mut st, &with));
        assert_eq!((st.succeeded, st.failed), (Some(3), Some(1)));
        let unc = st.uncounted_terminated_pods.clone().unwrap();
        assert_eq!(unc.succeeded, Some(vec!["b".to_string()]));
        assert_eq!(unc.failed, None);
        assert!(!clean_uncounted(&mut st, &with));
    }
}
