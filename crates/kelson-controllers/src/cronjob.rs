//! The CronJob controller (upstream pkg/controller/cronjob, the "v2"
//! controller): at each time a CronJob's schedule names it creates a Job
//! from the job template, named `<cronjob>-<scheduled minutes since the
//! epoch>` so a time is never run twice, and keeps status.active,
//! lastScheduleTime and lastSuccessfulTime. It honours
//! concurrencyPolicy (Allow, Forbid, Replace), startingDeadlineSeconds,
//! suspend, timeZone and the history limits, with upstream's events.
//!
//! Timing: the controller does not wait for watch events to reach the next
//! scheduled minute. Each sync computes when the schedule next fires (plus
//! upstream's 100 ms margin) and a timer task wakes the CronJob then. The
//! timer re-reads the [`Clock`] at least once a second rather than trusting
//! one long sleep, so a wall-clock step (NTP, suspend) or a test clock that
//! jumps is noticed within a second.
//!
//! Time zones: `spec.timeZone` is an IANA name read from the system tzdb
//! (jiff, `/usr/share/zoneinfo`). Without it the schedule runs in the
//! controller's local zone, as upstream's does: the zone `TZ` or
//! `/etc/localtime` names, UTC when neither is set or readable.

pub mod schedule;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use kelson_runtime::events::object_reference;
use kelson_runtime::{EventType, Recorder};
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Client, ResourceExt};
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

use crate::informers::Informers;
use crate::podcontrol::{controller_of, indexed_watch, OwnerIndex};
use crate::runner;
use schedule::{load_location, Schedule};

/// The annotation holding the time a Job was scheduled for (RFC 3339, in
/// the CronJob's time zone).
pub const SCHEDULED_TIMESTAMP_ANNOTATION: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";

/// Events' source component, as upstream names it.
const COMPONENT: &str = "cronjob-controller";

/// Upstream's nextScheduleDelta: wake a little after the scheduled time so
/// that a slightly fast clock does not wake us just before it.
const NEXT_SCHEDULE_DELTA: SignedDuration = SignedDuration::from_millis(100);

/// The longest the timer sleeps before reading the clock again.
const CLOCK_POLL: Duration = Duration::from_secs(1);

/// More missed start times than this draw the TooManyMissedTimes warning.
const TOO_MANY_MISSED: i64 = 100;

/// Upstream's --concurrent-cron-job-syncs default.
const WORKERS: u16 = 5;

/// What time it is, for the controller. Tests drive their own.
pub trait Clock: Send + Sync {
    fn now(&self) -> Timestamp;
}

/// The system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// Tunables.
#[derive(Clone)]
pub struct Options {
    pub clock: Arc<dyn Clock>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            clock: Arc::new(SystemClock),
        }
    }
}

impl fmt::Debug for Options {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Options").finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("getting cronjob {0}: {1}")]
    GetCronJob(String, #[source] kube::Error),
    #[error("getting job {0}: {1}")]
    GetJob(String, #[source] kube::Error),
    #[error("could not replace job {0}")]
    Replace(String),
    #[error("creating job {0}: {1}")]
    CreateJob(String, #[source] kube::Error),
    #[error("making a job for {0}: {1}")]
    Template(String, #[source] schedule::ZoneError),
    #[error("updating status of cronjob {0}: {1}")]
    Status(String, #[source] kube::Error),
}

struct Context {
    client: Client,
    jobs: Arc<OwnerIndex<Job>>,
    recorder: Recorder,
    clock: Arc<dyn Clock>,
    /// The zone schedules without a timeZone run in.
    local: TimeZone,
    wakeups: Arc<Wakeups>,
}

/// Runs the controller until `shutdown` fires.
pub async fn run(client: Client, options: Options, shutdown: CancellationToken) {
    run_with(Informers::new(client), options, shutdown).await;
}

/// Runs the CronJob controller on shared informers until `shutdown` fires.
pub async fn run_with(informers: Informers, options: Options, shutdown: CancellationToken) {
    let client = informers.client().clone();
    let controller = runner::controller::<CronJob>(&client, WORKERS);
    let (jobs, job_stream) = indexed_watch::<Job, _>(&informers, |_| {});
    let recorder = Recorder::new(client.clone(), COMPONENT, "");
    let wakeups = Arc::new(Wakeups::default());
    let (wake_tx, wake_rx) = mpsc::channel(1024);
    let timer = tokio::spawn(drive_wakeups(
        wakeups.clone(),
        options.clock.clone(),
        wake_tx,
        shutdown.clone(),
    ));
    let ctx = Arc::new(Context {
        client,
        jobs,
        recorder: recorder.clone(),
        clock: options.clock,
        local: TimeZone::try_system().unwrap_or(TimeZone::UTC),
        wakeups,
    });
    let woken =
        futures::stream::unfold(
            wake_rx,
            |mut rx| async move { rx.recv().await.map(|r| (r, rx)) },
        );
    let controller = controller
        .watches_shared_stream(job_stream, |job: Arc<Job>| owner_of_job(&job))
        .reconcile_on(woken)
        .graceful_shutdown_on(shutdown.cancelled_owned())
        .run(reconcile, error_policy, ctx);
    runner::drive(controller, "cronjob sync").await;
    if let Err(e) = timer.await {
        tracing::warn!(error = %e, "cronjob timer ended abnormally");
    }
    recorder.flush().await;
}

/// The CronJob a Job event concerns: its controller, if that is a CronJob.
fn owner_of_job(job: &Job) -> Option<ObjectRef<CronJob>> {
    let r = controller_of(&job.metadata)?;
    if r.kind != "CronJob" || r.api_version != "batch/v1" {
        return None;
    }
    let ns = job.metadata.namespace.as_deref()?;
    Some(ObjectRef::new(&r.name).within(ns))
}

fn error_policy(_cj: Arc<CronJob>, err: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(error = %err, "cronjob sync failed");
    Action::requeue(Duration::from_secs(2))
}

// ---------------------------------------------------------------------------
// Wake-ups at scheduled times

/// When each CronJob next wants a sync, in clock time.
#[derive(Default)]
struct Wakeups {
    state: Mutex<WakeState>,
    changed: Notify,
}

#[derive(Default)]
struct WakeState {
    by_key: HashMap<(String, String), Timestamp>,
    queue: BTreeSet<(Timestamp, String, String)>,
}

impl Wakeups {
    fn lock(&self) -> std::sync::MutexGuard<'_, WakeState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Wake `key` at `at`, replacing any earlier request: the latest sync
    /// knows best.
    fn set(&self, key: (String, String), at: Timestamp) {
        let mut s = self.lock();
        if let Some(old) = s.by_key.insert(key.clone(), at) {
            s.queue.remove(&(old, key.0.clone(), key.1.clone()));
        }
        s.queue.insert((at, key.0, key.1));
        drop(s);
        self.changed.notify_one();
    }

    fn clear(&self, key: &(String, String)) {
        let mut s = self.lock();
        if let Some(old) = s.by_key.remove(key) {
            s.queue.remove(&(old, key.0.clone(), key.1.clone()));
        }
    }

    /// Removes and returns the keys due at `now`.
    fn take_due(&self, now: Timestamp) -> Vec<(String, String)> {
        let mut s = self.lock();
        let mut due = Vec::new();
        while let Some(first) = s.queue.first() {
            if first.0 > now {
                break;
            }
            if let Some((_, ns, name)) = s.queue.pop_first() {
                s.by_key.remove(&(ns.clone(), name.clone()));
                due.push((ns, name));
            }
        }
        due
    }

    fn earliest(&self) -> Option<Timestamp> {
        self.lock().queue.first().map(|e| e.0)
    }
}

/// Sends each CronJob into the controller when its wake-up time comes.
async fn drive_wakeups(
    wakeups: Arc<Wakeups>,
    clock: Arc<dyn Clock>,
    tx: mpsc::Sender<ObjectRef<CronJob>>,
    shutdown: CancellationToken,
) {
    loop {
        let now = clock.now();
        for (ns, name) in wakeups.take_due(now) {
            let send = tx.send(ObjectRef::new(&name).within(&ns));
            tokio::select! {
                _ = shutdown.cancelled() => return,
                sent = send => if sent.is_err() { return },
            }
        }
        let wait = match wakeups.earliest() {
            Some(at) => Duration::try_from(at.duration_since(now))
                .unwrap_or(Duration::ZERO)
                .min(CLOCK_POLL),
            None => CLOCK_POLL,
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = wakeups.changed.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

// ---------------------------------------------------------------------------
// Sync

async fn reconcile(cj: Arc<CronJob>, ctx: Arc<Context>) -> Result<Action, Error> {
    if ctx.jobs.store().wait_until_ready().await.is_err() {
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    let (Some(namespace), Some(uid)) = (cj.metadata.namespace.clone(), cj.metadata.uid.clone())
    else {
        return Ok(Action::await_change());
    };
    let name = cj.name_any();
    let key = (namespace.clone(), name.clone());
    let jobs = ctx.jobs.children(&namespace, &uid, false);

    // All changes go to one copy and one status update, as upstream does.
    let mut copy = (*cj).clone();
    let cleaned = cleanup_finished_jobs(&ctx, &mut copy, &jobs).await;
    let synced = sync_cron_job(&ctx, &mut copy, &jobs).await;
    if cleaned || synced.update {
        let api: Api<CronJob> = Api::namespaced(ctx.client.clone(), &namespace);
        if let Err(e) = api
            .replace_status(&name, &PostParams::default(), &copy)
            .await
        {
            return Err(Error::Status(format!("{namespace}/{name}"), e));
        }
    }
    match synced.wake_at {
        Some(at) => {
            ctx.wakeups.set(key, at);
            Ok(Action::await_change())
        }
        None => {
            ctx.wakeups.clear(&key);
            match synced.error {
                Some(e) => Err(e),
                None => Ok(Action::await_change()),
            }
        }
    }
}

/// What one sync decided.
struct Synced {
    /// When to sync again (the next scheduled time plus the margin).
    wake_at: Option<Timestamp>,
    /// Whether the status changed.
    update: bool,
    error: Option<Error>,
}

impl Synced {
    fn done(update: bool) -> Synced {
        Synced {
            wake_at: None,
            update,
            error: None,
        }
    }

    fn failed(update: bool, error: Error) -> Synced {
        Synced {
            wake_at: None,
            update,
            error: Some(error),
        }
    }

    fn wake(wake_at: Option<Timestamp>, update: bool) -> Synced {
        Synced {
            wake_at,
            update,
            error: None,
        }
    }
}

/// Upstream's syncCronJob: reconcile status with the Jobs, then start the
/// Job for the most recent unmet scheduled time if the policy allows.
async fn sync_cron_job(ctx: &Context, cj: &mut CronJob, jobs: &[Arc<Job>]) -> Synced {
    let now = ctx.clock.now();
    let namespace = cj.metadata.namespace.clone().unwrap_or_default();
    let name = cj.name_any();
    let cronjobs: Api<CronJob> = Api::namespaced(ctx.client.clone(), &namespace);
    let job_api: Api<Job> = Api::namespaced(ctx.client.clone(), &namespace);
    let mut update = false;

    let mut children: HashSet<String> = HashSet::new();
    for j in jobs {
        let uid = j.metadata.uid.clone().unwrap_or_default();
        children.insert(uid.clone());
        let found = in_active_list(cj, &uid);
        let finished = finished_condition(j);
        match finished {
            None if !found => {
                // Our status may just be older than the Job: re-read it.
                let fresh = match cronjobs.get(&name).await {
                    Ok(c) => c,
                    Err(e) => {
                        return Synced::failed(update, Error::GetCronJob(name, e));
                    }
                };
                if in_active_list(&fresh, &uid) {
                    *cj = fresh;
                    continue;
                }
                ctx.recorder.event_for(
                    cj,
                    EventType::Warning,
                    "UnexpectedJob",
                    format!(
                        "Saw a job that the controller did not create or forgot: {}",
                        j.name_any()
                    ),
                );
            }
            None => {}
            Some(condition) => {
                if found {
                    delete_from_active_list(cj, &uid);
                    ctx.recorder.event_for(
                        cj,
                        EventType::Normal,
                        "SawCompletedJob",
                        format!(
                            "Saw completed job: {}, condition: {condition}",
                            j.name_any()
                        ),
                    );
                    update = true;
                }
                if job_succeeded(j) {
                    // Finished Jobs need not be active to count.
                    let completed = j.status.as_ref().and_then(|s| s.completion_time.clone());
                    if let Some(completed) = completed {
                        let status = cj.status.get_or_insert_with(Default::default);
                        if status
                            .last_successful_time
                            .as_ref()
                            .is_none_or(|last| completed.0 > last.0)
                        {
                            status.last_successful_time = Some(completed);
                            update = true;
                        }
                    }
                }
            }
        }
    }

    // Active entries whose Job is gone would block Forbid forever. The
    // cache may lag a fresh create, so ask the API server before dropping.
    let active: Vec<ObjectReference> = active_list(cj).to_vec();
    for r in active {
        let uid = r.uid.clone().unwrap_or_default();
        if children.contains(&uid) {
            continue;
        }
        let job_name = r.name.clone().unwrap_or_default();
        let api: Api<Job> = Api::namespaced(
            ctx.client.clone(),
            r.namespace.as_deref().unwrap_or(&namespace),
        );
        match api.get(&job_name).await {
            Err(kube::Error::Api(s)) if s.is_not_found() => {
                ctx.recorder.event_for(
                    cj,
                    EventType::Normal,
                    "MissingJob",
                    format!("Active job went missing: {job_name}"),
                );
                delete_from_active_list(cj, &uid);
                update = true;
            }
            Err(e) => return Synced::failed(update, Error::GetJob(job_name, e)),
            Ok(_) => {}
        }
    }

    if cj.metadata.deletion_timestamp.is_some() {
        return Synced::done(update);
    }

    let spec = cj.spec.clone().unwrap_or_default();
    if let Some(tz) = &spec.time_zone {
        if let Err(e) = load_location(tz) {
            let message = format!("invalid timeZone: {tz:?}: {e}");
            return unusable_schedule(ctx, cj, "UnknownTimeZone", message, update);
        }
    }
    if spec.suspend == Some(true) {
        return Synced::done(update);
    }

    let formatted = format_schedule(ctx, cj);
    let sched = match Schedule::parse(&formatted) {
        Ok(s) => s,
        Err(e) => {
            let message = format!("unparseable schedule: {:?} : {e}", spec.schedule);
            return unusable_schedule(ctx, cj, "UnparseableSchedule", message, update);
        }
    };
    let timing = Timing {
        cj,
        now,
        sched: &sched,
        local: &ctx.local,
    };
    let scheduled = match timing.most_recent(true) {
        Err(e) => {
            let message = format!("invalid schedule: {} : {e}", spec.schedule);
            return unusable_schedule(ctx, cj, "InvalidSchedule", message, update);
        }
        Ok(recent) => {
            if recent.missed > TOO_MANY_MISSED && recent.time.is_some_and(|t| t <= now) {
                ctx.recorder.event_for(
                    cj,
                    EventType::Warning,
                    "TooManyMissedTimes",
                    "too many missed start times. Set or decrease .spec.startingDeadlineSeconds or check clock skew",
                );
            }
            match recent.time {
                Some(t) if t <= now => t,
                // Nothing due yet: sleep until it is.
                _ => return Synced::wake(timing.wake_at(), update),
            }
        }
    };

    if let Some(deadline) = spec.starting_deadline_seconds {
        let latest = scheduled.checked_add(SignedDuration::from_secs(deadline));
        if latest.is_ok_and(|latest| latest < now) {
            ctx.recorder.event_for(
                cj,
                EventType::Warning,
                "MissSchedule",
                format!(
                    "Missed scheduled time to start a job: {}",
                    scheduled.strftime("%a, %d %b %Y %H:%M:%S +0000")
                ),
            );
            return Synced::wake(timing.wake_at(), update);
        }
    }

    let job_name = job_name(&name, scheduled);
    let already = active_list(cj).iter().any(|r| {
        r.name.as_deref() == Some(job_name.as_str())
            && r.namespace.as_deref() == Some(namespace.as_str())
    }) || last_schedule_time(cj) == Some(scheduled);
    if already {
        return Synced::wake(timing.wake_at(), update);
    }

    let policy = spec.concurrency_policy.as_deref().unwrap_or("Allow");
    if policy == "Forbid" && !active_list(cj).is_empty() {
        ctx.recorder.event_for(
            cj,
            EventType::Normal,
            "JobAlreadyActive",
            "Not starting job because prior execution is running and concurrency policy is Forbid",
        );
        return Synced::wake(timing.wake_at(), update);
    }
    if policy == "Replace" {
        for r in active_list(cj).to_vec() {
            let running = r.name.clone().unwrap_or_default();
            let api: Api<Job> = Api::namespaced(
                ctx.client.clone(),
                r.namespace.as_deref().unwrap_or(&namespace),
            );
            let job = match api.get(&running).await {
                Ok(j) => j,
                Err(e) => {
                    ctx.recorder.event_for(
                        cj,
                        EventType::Warning,
                        "FailedGet",
                        format!("Get job: {}", api_message(&e)),
                    );
                    return Synced::failed(update, Error::GetJob(running, e));
                }
            };
            if !delete_job(ctx, cj, &job).await {
                return Synced::failed(
                    update,
                    Error::Replace(format!(
                        "{}/{}",
                        job.metadata.namespace.as_deref().unwrap_or(""),
                        job.name_any()
                    )),
                );
            }
            update = true;
        }
    }

    let wanted = match job_from_template(cj, scheduled, &job_name, &ctx.local) {
        Ok(j) => j,
        Err(e) => return Synced::failed(update, e),
    };
    let created = match job_api.create(&PostParams::default(), &wanted).await {
        Ok(job) => {
            ctx.recorder.event_for(
                cj,
                EventType::Normal,
                "SuccessfulCreate",
                format!("Created job {}", job.name_any()),
            );
            job
        }
        Err(kube::Error::Api(s)) if namespace_terminating(&s) => {
            return Synced::failed(update, Error::CreateJob(job_name, kube::Error::Api(s)));
        }
        Err(kube::Error::Api(s)) if s.is_already_exists() => {
            // Created by an earlier sync whose status update was lost, or
            // by someone else: adopt only our own, and only once.
            let existing = match job_api.get(&job_name).await {
                Ok(j) => j,
                Err(e) => return Synced::failed(update, Error::GetJob(job_name, e)),
            };
            let ours = controller_of(&existing.metadata)
                .is_some_and(|r| Some(&r.uid) == cj.metadata.uid.as_ref());
            let uid = existing.metadata.uid.clone().unwrap_or_default();
            if !ours || in_active_list(cj, &uid) {
                return Synced::done(update);
            }
            existing
        }
        Err(e) => {
            ctx.recorder.event_for(
                cj,
                EventType::Warning,
                "FailedCreate",
                format!("Error creating job: {}", api_message(&e)),
            );
            return Synced::failed(update, Error::CreateJob(job_name, e));
        }
    };

    let status = cj.status.get_or_insert_with(Default::default);
    status
        .active
        .get_or_insert_with(Vec::new)
        .push(object_reference(&created));
    status.last_schedule_time = Some(Time(scheduled));
    let timing = Timing {
        cj,
        now,
        sched: &sched,
        local: &ctx.local,
    };
    Synced::wake(timing.wake_at(), true)
}

/// The schedule string upstream parses: a timeZone becomes a `TZ=`
/// prefix; a schedule that names a zone itself is used as is, with a
/// warning (the API no longer accepts new ones).
/// A schedule or time zone the controller can't work with: a Warning, and
/// no further sync until the CronJob changes (upstream returns without a
/// requeue too).
fn unusable_schedule(
    ctx: &Context,
    cj: &CronJob,
    reason: &str,
    message: String,
    update: bool,
) -> Synced {
    ctx.recorder
        .event_for(cj, EventType::Warning, reason, message);
    Synced::done(update)
}

fn format_schedule(ctx: &Context, cj: &CronJob) -> String {
    let spec = cj.spec.as_ref();
    let sched = spec.map(|s| s.schedule.as_str()).unwrap_or("");
    if sched.contains("TZ") {
        ctx.recorder.event_for(
            cj,
            EventType::Warning,
            "UnsupportedSchedule",
            format!(
                "CRON_TZ or TZ used in schedule {sched:?} is not officially supported, see https://kubernetes.io/docs/concepts/workloads/controllers/cron-jobs/ for more details"
            ),
        );
        return sched.to_string();
    }
    match spec.and_then(|s| s.time_zone.as_deref()) {
        Some(tz) if load_location(tz).is_ok() => format!("TZ={tz} {sched}"),
        _ => sched.to_string(),
    }
}

/// The schedule arithmetic of upstream's utils.go for one CronJob at one
/// moment.
struct Timing<'a> {
    cj: &'a CronJob,
    now: Timestamp,
    sched: &'a Schedule,
    local: &'a TimeZone,
}

/// The most recent scheduled time not yet handled.
struct Recent {
    /// lastScheduleTime, else creationTimestamp (or the deadline's start).
    earliest: Timestamp,
    /// The latest scheduled time in (earliest, now], if any.
    time: Option<Timestamp>,
    /// Roughly how many scheduled times passed unhandled.
    missed: i64,
}

#[derive(Debug, thiserror::Error)]
#[error("time difference between two schedules is less than 1 second")]
struct NoInterval;

impl Timing<'_> {
    fn next(&self, t: Timestamp) -> Option<Timestamp> {
        self.sched.next(t, self.local)
    }

    /// Upstream's mostRecentScheduleTime. The count of missed times is an
    /// estimate from the interval between the first two, so one walk of
    /// the schedule stays short however long the controller was away.
    fn most_recent(&self, include_deadline: bool) -> Result<Recent, NoInterval> {
        let status = self.cj.status.as_ref();
        let mut earliest = status
            .and_then(|s| s.last_schedule_time.as_ref())
            .or(self.cj.metadata.creation_timestamp.as_ref())
            .map(|t| t.0)
            .unwrap_or(self.now);
        if include_deadline {
            let deadline = self
                .cj
                .spec
                .as_ref()
                .and_then(|s| s.starting_deadline_seconds);
            if let Some(secs) = deadline {
                // Nothing before this point will be started any more.
                if let Ok(from) = self.now.checked_sub(SignedDuration::from_secs(secs)) {
                    earliest = earliest.max(from);
                }
            }
        }
        let t1 = self.next(earliest).ok_or(NoInterval)?;
        if self.now < t1 {
            return Ok(Recent {
                earliest,
                time: None,
                missed: 0,
            });
        }
        let t2 = self.next(t1).ok_or(NoInterval)?;
        if self.now < t2 {
            return Ok(Recent {
                earliest,
                time: Some(t1),
                missed: 0,
            });
        }
        let interval = round_to_seconds(t2.duration_since(t1));
        if interval < 1 {
            return Err(NoInterval);
        }
        let elapsed = self.now.duration_since(t1).as_secs();
        let missed = elapsed / interval + 1;
        // Start one interval before the estimate and walk to now, so that
        // irregular schedules (`30 6-16/4 * * 1-5`) still land on a real
        // scheduled time.
        let back = SignedDuration::from_secs((missed - 2).saturating_mul(interval));
        let mut time = None;
        if let Ok(start) = t1.checked_add(back) {
            let mut t = self.next(start);
            // The estimate keeps this walk to a few steps; the bound only
            // guards against a pathological schedule.
            for _ in 0..10_000 {
                match t {
                    Some(at) if at <= self.now => {
                        time = Some(at);
                        t = self.next(at);
                    }
                    _ => break,
                }
            }
        }
        Ok(Recent {
            earliest,
            time,
            missed,
        })
    }

    /// Upstream's nextScheduleTimeDuration, as a clock time: the scheduled
    /// time after the most recent one, plus the margin.
    fn wake_at(&self) -> Option<Timestamp> {
        let base = match self.most_recent(false) {
            Err(_) => self.now,
            Ok(Recent { time: Some(t), .. }) => t,
            Ok(Recent {
                earliest,
                missed: 0,
                ..
            }) => earliest,
            Ok(_) => self.now,
        };
        self.next(base)?.checked_add(NEXT_SCHEDULE_DELTA).ok()
    }
}

/// Go's `Duration.Round(time.Second)` in whole seconds: halves away from
/// zero.
fn round_to_seconds(d: SignedDuration) -> i64 {
    let secs = d.as_secs();
    let nanos = i64::from(d.subsec_nanos());
    if nanos >= 500_000_000 {
        secs + 1
    } else if nanos <= -500_000_000 {
        secs - 1
    } else {
        secs
    }
}

/// `<cronjob>-<scheduled time in minutes since the epoch>`: the same time
/// always gives the same name, which makes creation idempotent.
pub fn job_name(cronjob: &str, scheduled: Timestamp) -> String {
    format!("{cronjob}-{}", scheduled.as_second() / 60)
}

/// Go's RFC 3339 layout: `Z` for a zero offset, else `±hh:mm`.
fn rfc3339_in(t: Timestamp, tz: &TimeZone) -> String {
    let zoned = t.to_zoned(tz.clone());
    let base = zoned.strftime("%Y-%m-%dT%H:%M:%S").to_string();
    let offset = zoned.offset().seconds();
    if offset == 0 {
        format!("{base}Z")
    } else {
        let sign = if offset < 0 { '-' } else { '+' };
        let abs = offset.unsigned_abs();
        format!("{base}{sign}{:02}:{:02}", abs / 3600, abs % 3600 / 60)
    }
}

/// Upstream's getJobFromTemplate2: the template's labels, annotations
/// plus the scheduled time, and spec; controlled by the CronJob.
fn job_from_template(
    cj: &CronJob,
    scheduled: Timestamp,
    name: &str,
    local: &TimeZone,
) -> Result<Job, Error> {
    let spec = cj.spec.clone().unwrap_or_default();
    let template_meta = spec.job_template.metadata.unwrap_or_default();
    let labels = template_meta.labels.unwrap_or_default();
    let mut annotations = template_meta.annotations.unwrap_or_default();
    // An unset timeZone annotates in UTC (Go loads "" as UTC), though the
    // schedule itself runs in the local zone.
    let zone = load_location(spec.time_zone.as_deref().unwrap_or(""))
        .map_err(|e| Error::Template(cj.name_any(), e))?
        .unwrap_or_else(|| local.clone());
    annotations.insert(
        SCHEDULED_TIMESTAMP_ANNOTATION.to_string(),
        rfc3339_in(scheduled, &zone),
    );
    Ok(Job {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: cj.metadata.namespace.clone(),
            labels: (!labels.is_empty()).then_some(labels),
            annotations: Some(annotations),
            owner_references: Some(vec![OwnerReference {
                api_version: "batch/v1".into(),
                kind: "CronJob".into(),
                name: cj.name_any(),
                uid: cj.metadata.uid.clone().unwrap_or_default(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]),
            ..ObjectMeta::default()
        },
        spec: spec.job_template.spec,
        status: None,
    })
}

/// Upstream's cleanupFinishedJobs: keep at most the history limits of
/// succeeded and failed Jobs, deleting the oldest. Returns whether the
/// status changed.
async fn cleanup_finished_jobs(ctx: &Context, cj: &mut CronJob, jobs: &[Arc<Job>]) -> bool {
    let (successful_limit, failed_limit) = match &cj.spec {
        Some(s) => (s.successful_jobs_history_limit, s.failed_jobs_history_limit),
        None => (None, None),
    };
    if successful_limit.is_none() && failed_limit.is_none() {
        return false;
    }
    let mut successful = Vec::new();
    let mut failed = Vec::new();
    for j in jobs {
        match finished_condition(j) {
            Some("Complete") => successful.push(j.clone()),
            Some("Failed") => failed.push(j.clone()),
            _ => {}
        }
    }
    let mut update = false;
    if let Some(limit) = successful_limit {
        update |= remove_oldest_jobs(ctx, cj, successful, limit).await;
    }
    if let Some(limit) = failed_limit {
        update |= remove_oldest_jobs(ctx, cj, failed, limit).await;
    }
    update
}

async fn remove_oldest_jobs(
    ctx: &Context,
    cj: &mut CronJob,
    mut jobs: Vec<Arc<Job>>,
    limit: i32,
) -> bool {
    let excess = jobs.len() as i64 - i64::from(limit);
    if excess <= 0 {
        return false;
    }
    // Oldest start first; Jobs that never started last; then by name.
    jobs.sort_by_key(|j| {
        let start = j
            .status
            .as_ref()
            .and_then(|s| s.start_time.as_ref())
            .map(|t| t.0);
        (start.is_none(), start, j.name_any())
    });
    let mut update = false;
    for j in jobs.iter().take(excess as usize) {
        update |= delete_job(ctx, cj, j).await;
    }
    update
}

/// Deletes a Job (its pods go with it in the background) and its entry in
/// status.active.
async fn delete_job(ctx: &Context, cj: &mut CronJob, job: &Job) -> bool {
    let namespace = job.metadata.namespace.clone().unwrap_or_default();
    let api: Api<Job> = Api::namespaced(ctx.client.clone(), &namespace);
    if let Err(e) = api
        .delete(&job.name_any(), &DeleteParams::background())
        .await
    {
        ctx.recorder.event_for(
            cj,
            EventType::Warning,
            "FailedDelete",
            format!("Deleted job: {}", api_message(&e)),
        );
        tracing::warn!(job = %job.name_any(), error = %e, "deleting job of cronjob");
        return false;
    }
    delete_from_active_list(cj, job.metadata.uid.as_deref().unwrap_or(""));
    ctx.recorder.event_for(
        cj,
        EventType::Normal,
        "SuccessfulDelete",
        format!("Deleted job {}", job.name_any()),
    );
    true
}

/// The Complete or Failed condition that is True, if the Job finished.
fn finished_condition(job: &Job) -> Option<&'static str> {
    let conditions = job.status.as_ref()?.conditions.as_ref()?;
    conditions.iter().find_map(|c| match c.type_.as_str() {
        "Complete" if c.status == "True" => Some("Complete"),
        "Failed" if c.status == "True" => Some("Failed"),
        _ => None,
    })
}

fn job_succeeded(job: &Job) -> bool {
    job.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| {
            c.iter()
                .any(|c| c.type_ == "Complete" && c.status == "True")
        })
}

fn active_list(cj: &CronJob) -> &[ObjectReference] {
    cj.status
        .as_ref()
        .and_then(|s| s.active.as_deref())
        .unwrap_or(&[])
}

fn in_active_list(cj: &CronJob, uid: &str) -> bool {
    active_list(cj)
        .iter()
        .any(|r| r.uid.as_deref() == Some(uid))
}

/// Drops `uid` from status.active; an empty list is left out, as Go's
/// omitempty leaves it.
fn delete_from_active_list(cj: &mut CronJob, uid: &str) {
    if let Some(status) = cj.status.as_mut() {
        if let Some(active) = status.active.as_mut() {
            active.retain(|r| r.uid.as_deref() != Some(uid));
            if active.is_empty() {
                status.active = None;
            }
        }
    }
}

fn last_schedule_time(cj: &CronJob) -> Option<Timestamp> {
    cj.status
        .as_ref()
        .and_then(|s| s.last_schedule_time.as_ref())
        .map(|t| t.0)
}

fn namespace_terminating(s: &kube::core::Status) -> bool {
    s.details
        .as_ref()
        .is_some_and(|d| d.causes.iter().any(|c| c.reason == "NamespaceTerminating"))
}

/// The text Go prints for a client error: the API server's message.
fn api_message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) if !s.message.is_empty() => s.message.clone(),
        e => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::batch::v1::{CronJobSpec, CronJobStatus, JobCondition, JobStatus};

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn cronjob(schedule: &str, created: &str) -> CronJob {
        CronJob {
            metadata: ObjectMeta {
                name: Some("nightly".into()),
                namespace: Some("default".into()),
                uid: Some("uid-1".into()),
                creation_timestamp: Some(Time(ts(created))),
                ..Default::default()
            },
            spec: Some(CronJobSpec {
                schedule: schedule.into(),
                ..Default::default()
            }),
            status: None,
        }
    }

    fn recent(cj: &CronJob, now: &str, include_deadline: bool) -> (Option<String>, i64) {
        let sched = Schedule::parse(&cj.spec.as_ref().unwrap().schedule).unwrap();
        let timing = Timing {
            cj,
            now: ts(now),
            sched: &sched,
            local: &TimeZone::UTC,
        };
        let r = timing.most_recent(include_deadline).unwrap();
        (r.time.map(|t| t.to_string()), r.missed)
    }

    fn wake(cj: &CronJob, now: &str) -> Option<String> {
        let sched = Schedule::parse(&cj.spec.as_ref().unwrap().schedule).unwrap();
        Timing {
            cj,
            now: ts(now),
            sched: &sched,
            local: &TimeZone::UTC,
        }
        .wake_at()
        .map(|t| t.to_string())
    }

    #[test]
    fn most_recent_scheduled_time() {
        let mut cj = cronjob("*/5 * * * *", "2024-05-14T10:02:30Z");
        // Before the first time: nothing due, wake just after 10:05.
        assert_eq!(recent(&cj, "2024-05-14T10:04:00Z", true), (None, 0));
        assert_eq!(
            wake(&cj, "2024-05-14T10:04:00Z").as_deref(),
            Some("2024-05-14T10:05:00.1Z")
        );
        // Just after it: that one.
        assert_eq!(
            recent(&cj, "2024-05-14T10:05:10Z", true),
            (Some("2024-05-14T10:05:00Z".into()), 0)
        );
        // Several missed: the latest, with a count.
        assert_eq!(
            recent(&cj, "2024-05-14T10:31:00Z", true),
            (Some("2024-05-14T10:30:00Z".into()), 6)
        );
        // lastScheduleTime moves the start.
        cj.status = Some(CronJobStatus {
            last_schedule_time: Some(Time(ts("2024-05-14T10:30:00Z"))),
            ..Default::default()
        });
        assert_eq!(recent(&cj, "2024-05-14T10:31:00Z", true), (None, 0));
        assert_eq!(
            wake(&cj, "2024-05-14T10:31:00Z").as_deref(),
            Some("2024-05-14T10:35:00.1Z")
        );
    }

    #[test]
    fn starting_deadline_hides_older_times() {
        let mut cj = cronjob("*/5 * * * *", "2024-05-14T10:02:30Z");
        cj.spec.as_mut().unwrap().starting_deadline_seconds = Some(60);
        // 10:05 passed more than a minute ago: nothing may start.
        assert_eq!(recent(&cj, "2024-05-14T10:07:00Z", true), (None, 0));
        // Without the deadline (for the wake-up) it is still the latest.
        assert_eq!(
            recent(&cj, "2024-05-14T10:07:00Z", false),
            (Some("2024-05-14T10:05:00Z".into()), 0)
        );
        assert_eq!(
            wake(&cj, "2024-05-14T10:07:00Z").as_deref(),
            Some("2024-05-14T10:10:00.1Z")
        );
    }

    #[test]
    fn many_missed_times_are_counted_not_walked() {
        let cj = cronjob("* * * * *", "2024-05-14T00:00:30Z");
        let (time, missed) = recent(&cj, "2024-05-14T10:00:30Z", true);
        assert_eq!(time.as_deref(), Some("2024-05-14T10:00:00Z"));
        assert_eq!(missed, 600);
        assert!(missed > TOO_MANY_MISSED);
    }

    #[test]
    fn irregular_schedules_land_on_real_times() {
        // Every four hours from 06:30 on weekdays; 2024-05-17 is a Friday.
        let cj = cronjob("30 6-16/4 * * 1-5", "2024-05-17T07:00:00Z");
        assert_eq!(
            recent(&cj, "2024-05-20T08:00:00Z", true).0.as_deref(),
            Some("2024-05-20T06:30:00Z")
        );
    }

    #[test]
    fn job_names_and_template() {
        let t = ts("2024-05-14T10:05:00Z");
        assert_eq!(job_name("nightly", t), "nightly-28594685");
        let mut cj = cronjob("*/5 * * * *", "2024-05-14T10:02:30Z");
        let spec = cj.spec.as_mut().unwrap();
        spec.job_template.metadata = Some(ObjectMeta {
            labels: Some([("app".to_string(), "report".to_string())].into()),
            annotations: Some([("note".to_string(), "x".to_string())].into()),
            ..Default::default()
        });
        let job = job_from_template(&cj, t, "nightly-28594685", &TimeZone::UTC).unwrap();
        assert_eq!(job.metadata.name.as_deref(), Some("nightly-28594685"));
        assert_eq!(job.metadata.labels.unwrap()["app"], "report");
        let ann = job.metadata.annotations.unwrap();
        assert_eq!(ann["note"], "x");
        assert_eq!(ann[SCHEDULED_TIMESTAMP_ANNOTATION], "2024-05-14T10:05:00Z");
        let owner = &job.metadata.owner_references.unwrap()[0];
        assert_eq!(
            (
                owner.kind.as_str(),
                owner.api_version.as_str(),
                owner.uid.as_str()
            ),
            ("CronJob", "batch/v1", "uid-1")
        );
        assert_eq!(owner.controller, Some(true));
        assert_eq!(owner.block_owner_deletion, Some(true));

        // In the CronJob's zone when it has one.
        cj.spec.as_mut().unwrap().time_zone = Some("Asia/Kolkata".into());
        let job = job_from_template(&cj, t, "n", &TimeZone::UTC).unwrap();
        assert_eq!(
            job.metadata.annotations.unwrap()[SCHEDULED_TIMESTAMP_ANNOTATION],
            "2024-05-14T15:35:00+05:30"
        );
    }

    #[test]
    fn finished_jobs() {
        let job = |conditions: &[(&str, &str)]| Job {
            status: Some(JobStatus {
                conditions: Some(
                    conditions
                        .iter()
                        .map(|(t, s)| JobCondition {
                            type_: t.to_string(),
                            status: s.to_string(),
                            ..Default::default()
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            finished_condition(&job(&[("Complete", "True")])),
            Some("Complete")
        );
        assert_eq!(
            finished_condition(&job(&[("Failed", "True")])),
            Some("Failed")
        );
        assert_eq!(finished_condition(&job(&[("Complete", "False")])), None);
        // Success criteria met is not yet finished.
        assert_eq!(
            finished_condition(&job(&[("SuccessCriteriaMet", "True")])),
            None
        );
        assert!(!job_succeeded(&job(&[("Failed", "True")])));
    }

    #[test]
    fn go_rounding_of_intervals() {
        assert_eq!(round_to_seconds(SignedDuration::from_millis(1500)), 2);
        assert_eq!(round_to_seconds(SignedDuration::from_millis(1499)), 1);
        assert_eq!(round_to_seconds(SignedDuration::from_millis(400)), 0);
    }
}
