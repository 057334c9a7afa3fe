//! The CronJob controller against a real API server. A test clock drives
//! the schedule (the controller must wake itself when the clock crosses a
//! scheduled minute, with no event to prompt it); one test waits for a
//! real minute boundary on the system clock.
//!
//! No Job controller runs here: the tests finish Jobs by setting their
//! status conditions, as a Job controller would.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use kelson_controllers::cronjob::{self, Clock, Options, SCHEDULED_TIMESTAMP_ANNOTATION};
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::Client;

use crate::support::{controller_ref, create, default_events, eventually, merge_patch, Harness};

/// A clock the test sets by hand.
struct TestClock(Mutex<Timestamp>);

impl TestClock {
    fn new(t: Timestamp) -> Arc<TestClock> {
        Arc::new(TestClock(Mutex::new(t)))
    }

    fn set(&self, t: Timestamp) {
        *self.0.lock().unwrap() = t;
    }
}

impl Clock for TestClock {
    fn now(&self) -> Timestamp {
        *self.0.lock().unwrap()
    }
}

/// A cluster running the CronJob controller on `clock`.
async fn start(clock: Arc<TestClock>) -> Harness {
    let mut h = Harness::start().await;
    h.spawn(cronjob::run(
        h.client.clone(),
        Options { clock },
        h.shutdown.clone(),
    ));
    h
}

/// A test clock at the present, a cluster running the CronJob controller on
/// it, and CronJob `name` on an every-minute schedule with `spec` added.
/// The clock is then set to the CronJob's creation; also returned is the
/// first scheduled minute after it.
async fn start_with(
    name: &str,
    spec: serde_json::Value,
) -> (Arc<TestClock>, Harness, CronJob, Timestamp) {
    let clock = TestClock::new(Timestamp::now());
    let h = start(clock.clone()).await;
    let (cj, m1) = create_cronjob(&h, cronjob_json(name, "*/1 * * * *", spec)).await;
    clock.set(cj.metadata.creation_timestamp.clone().unwrap().0);
    (clock, h, cj, m1)
}

fn cronjob_json(name: &str, schedule: &str, spec: serde_json::Value) -> serde_json::Value {
    let mut v = serde_json::json!({
        "metadata": {"name": name},
        "spec": {
            "schedule": schedule,
            "jobTemplate": {
                "metadata": {"labels": {"app": name}},
                "spec": {"template": {"spec": {
                    "restartPolicy": "OnFailure",
                    "containers": [{"name": "work", "image": "busybox:1.36"}]
                }}}
            }
        }
    });
    if let (Some(dst), Some(src)) = (v["spec"].as_object_mut(), spec.as_object()) {
        for (k, val) in src {
            dst.insert(k.clone(), val.clone());
        }
    }
    v
}

/// Creates the CronJob and returns it with the first scheduled minute after
/// its creation (for the every-minute schedules the tests use).
async fn create_cronjob(h: &Harness, v: serde_json::Value) -> (CronJob, Timestamp) {
    let cj: CronJob = create(&h.api(), v).await;
    let created = cj.metadata.creation_timestamp.clone().unwrap().0;
    (cj, next_minute(created))
}

fn next_minute(t: Timestamp) -> Timestamp {
    Timestamp::from_second((t.as_second().div_euclid(60) + 1) * 60).unwrap()
}

fn plus(t: Timestamp, secs: i64) -> Timestamp {
    t.checked_add(SignedDuration::from_secs(secs)).unwrap()
}

fn job_name(cronjob: &str, scheduled: Timestamp) -> String {
    format!("{cronjob}-{}", scheduled.as_second() / 60)
}

/// The Jobs labelled `app=<app>`, sorted by name.
async fn jobs_of(client: &Client, app: &str) -> Vec<Job> {
    let jobs: Api<Job> = Api::namespaced(client.clone(), "default");
    let mut items = jobs
        .list(&ListParams::default().labels(&format!("app={app}")))
        .await
        .unwrap()
        .items;
    items.sort_by_key(|j| j.metadata.name.clone());
    items
}

fn names(jobs: &[Job]) -> Vec<String> {
    jobs.iter()
        .filter(|j| j.metadata.deletion_timestamp.is_none())
        .filter_map(|j| j.metadata.name.clone())
        .collect()
}

/// Waits until the Jobs of `app` (not being deleted) are exactly `want`.
async fn wait_for_jobs(client: &Client, app: &str, want: &[String]) -> Vec<Job> {
    eventually(20, &format!("jobs {want:?} of {app}"), || async {
        let jobs = jobs_of(client, app).await;
        (names(&jobs) == want).then_some(jobs)
    })
    .await
}

/// The messages of the events with `reason` about CronJob `name`.
async fn events(client: &Client, name: &str, reason: &str) -> Vec<String> {
    default_events(client)
        .await
        .into_iter()
        .filter(|e| {
            e.involved_object.kind.as_deref() == Some("CronJob")
                && e.involved_object.name.as_deref() == Some(name)
                && e.reason.as_deref() == Some(reason)
        })
        .filter_map(|e| e.message)
        .collect()
}

async fn wait_for_event(client: &Client, name: &str, reason: &str, message: &str) {
    eventually(20, &format!("event {reason}: {message}"), || async {
        events(client, name, reason)
            .await
            .iter()
            .any(|m| m == message)
            .then_some(())
    })
    .await;
}

/// Marks a Job finished as the Job controller would: `Complete` or
/// `Failed`, started at `started`.
async fn finish(client: &Client, name: &str, condition: &str, started: Timestamp) {
    let jobs: Api<Job> = Api::namespaced(client.clone(), "default");
    let now = Timestamp::now().to_string();
    let mut status = serde_json::json!({
        "startTime": started.to_string(),
        "conditions": [{
            "type": condition, "status": "True",
            "lastProbeTime": now, "lastTransitionTime": now
        }]
    });
    if condition == "Complete" {
        status["completionTime"] = serde_json::json!(now);
        status["succeeded"] = serde_json::json!(1);
    } else {
        status["failed"] = serde_json::json!(1);
    }
    jobs.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({ "status": status })),
    )
    .await
    .unwrap();
}

/// Waits until the Jobs of `app` are `jobs` and the CronJob's
/// status.active lists `active`.
async fn wait_for_run(client: &Client, app: &str, jobs: &[String], active: &[String]) {
    wait_for_jobs(client, app, jobs).await;
    wait_for_active(client, app, active).await;
}

async fn get_cronjob(client: &Client, name: &str) -> CronJob {
    Api::<CronJob>::namespaced(client.clone(), "default")
        .get(name)
        .await
        .unwrap()
}

fn active_names(cj: &CronJob) -> Vec<String> {
    let mut v: Vec<String> = cj
        .status
        .as_ref()
        .and_then(|s| s.active.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|r| r.name.clone())
        .collect();
    v.sort();
    v
}

async fn wait_for_active(client: &Client, name: &str, want: &[String]) -> CronJob {
    eventually(20, &format!("{name} active = {want:?}"), || async {
        let cj = get_cronjob(client, name).await;
        (active_names(&cj) == want).then_some(cj)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creates_a_job_when_the_clock_crosses_a_scheduled_minute() {
    let (clock, h, cj, m1) = start_with("tick", serde_json::json!({})).await;

    // Crossing the minute is enough: nothing touches the CronJob.
    clock.set(plus(m1, 5));
    let first = job_name("tick", m1);
    let jobs = wait_for_jobs(&h.client, "tick", std::slice::from_ref(&first)).await;
    let job = &jobs[0];
    assert_eq!(job.metadata.labels.as_ref().unwrap()["app"], "tick");
    assert_eq!(
        job.metadata.annotations.as_ref().unwrap()[SCHEDULED_TIMESTAMP_ANNOTATION],
        m1.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        "the scheduled time, RFC 3339 in UTC (no timeZone set)"
    );
    let owner = controller_ref(job);
    assert_eq!(owner.kind, "CronJob");
    assert_eq!(owner.name, "tick");
    assert_eq!(Some(&owner.uid), cj.metadata.uid.as_ref());
    let template = job.spec.as_ref().unwrap();
    assert_eq!(
        template.template.spec.as_ref().unwrap().containers[0]
            .image
            .as_deref(),
        Some("busybox:1.36")
    );

    let status = wait_for_active(&h.client, "tick", std::slice::from_ref(&first))
        .await
        .status
        .unwrap();
    assert_eq!(status.last_schedule_time.map(|t| t.0), Some(m1));
    let active = &status.active.unwrap()[0];
    assert_eq!(active.kind.as_deref(), Some("Job"));
    assert_eq!(active.api_version.as_deref(), Some("batch/v1"));
    assert_eq!(active.uid, job.metadata.uid);
    wait_for_event(
        &h.client,
        "tick",
        "SuccessfulCreate",
        &format!("Created job {first}"),
    )
    .await;

    // Allow: the next minute runs alongside the first.
    let m2 = plus(m1, 60);
    clock.set(plus(m2, 5));
    let second = job_name("tick", m2);
    let both = [first.clone(), second.clone()];
    wait_for_run(&h.client, "tick", &both, &both).await;

    // A finished Job leaves status.active and sets lastSuccessfulTime.
    finish(&h.client, &first, "Complete", plus(m1, 1)).await;
    let cj = wait_for_active(&h.client, "tick", std::slice::from_ref(&second)).await;
    assert!(cj.status.unwrap().last_successful_time.is_some());
    wait_for_event(
        &h.client,
        "tick",
        "SawCompletedJob",
        &format!("Saw completed job: {first}, condition: Complete"),
    )
    .await;

    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forbid_skips_while_a_job_is_active() {
    let (clock, h, _, m1) =
        start_with("solo", serde_json::json!({"concurrencyPolicy": "Forbid"})).await;

    clock.set(plus(m1, 5));
    let first = job_name("solo", m1);
    let only_first = std::slice::from_ref(&first);
    wait_for_run(&h.client, "solo", only_first, only_first).await;

    let m2 = plus(m1, 60);
    clock.set(plus(m2, 5));
    wait_for_event(
        &h.client,
        "solo",
        "JobAlreadyActive",
        "Not starting job because prior execution is running and concurrency policy is Forbid",
    )
    .await;
    assert_eq!(names(&jobs_of(&h.client, "solo").await), [first.as_str()]);

    // Once it finishes, the skipped minute still starts (no deadline set).
    finish(&h.client, &first, "Complete", plus(m1, 1)).await;
    let second = job_name("solo", m2);
    wait_for_run(
        &h.client,
        "solo",
        &[first.clone(), second.clone()],
        std::slice::from_ref(&second),
    )
    .await;

    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replace_deletes_the_active_job() {
    let (clock, h, _, m1) =
        start_with("swap", serde_json::json!({"concurrencyPolicy": "Replace"})).await;

    clock.set(plus(m1, 5));
    let first = job_name("swap", m1);
    let only_first = std::slice::from_ref(&first);
    wait_for_run(&h.client, "swap", only_first, only_first).await;

    let m2 = plus(m1, 60);
    clock.set(plus(m2, 5));
    let second = job_name("swap", m2);
    let only_second = std::slice::from_ref(&second);
    wait_for_run(&h.client, "swap", only_second, only_second).await;
    wait_for_event(
        &h.client,
        "swap",
        "SuccessfulDelete",
        &format!("Deleted job {first}"),
    )
    .await;

    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_limits_remove_the_oldest_finished_jobs() {
    let (clock, h, _, m1) = start_with(
        "hist",
        serde_json::json!({"successfulJobsHistoryLimit": 2, "failedJobsHistoryLimit": 1}),
    )
    .await;

    // Five runs: three succeed, then two fail.
    let mut made: Vec<String> = Vec::new();
    for (i, outcome) in ["Complete", "Complete", "Complete", "Failed", "Failed"]
        .into_iter()
        .enumerate()
    {
        let at = plus(m1, 60 * i as i64);
        clock.set(plus(at, 5));
        let name = job_name("hist", at);
        eventually(20, &format!("job {name}"), || async {
            names(&jobs_of(&h.client, "hist").await)
                .contains(&name)
                .then_some(())
        })
        .await;
        finish(&h.client, &name, outcome, plus(at, 1)).await;
        made.push(name);
    }
    // Kept: the newest two successes and the newest failure.
    wait_for_jobs(
        &h.client,
        "hist",
        &[made[1].clone(), made[2].clone(), made[4].clone()],
    )
    .await;
    for gone in [&made[0], &made[3]] {
        wait_for_event(
            &h.client,
            "hist",
            "SuccessfulDelete",
            &format!("Deleted job {gone}"),
        )
        .await;
    }

    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspend_stops_creation_until_resumed() {
    let (clock, h, _, m1) = start_with("paused", serde_json::json!({"suspend": true})).await;
    // A twin that is not suspended shows when the controller has handled
    // the minute.
    let (_, twin_m1) = create_cronjob(
        &h,
        cronjob_json("twin", "*/1 * * * *", serde_json::json!({})),
    )
    .await;
    // The two may straddle a minute: go to the later first minute.
    let m1 = m1.max(twin_m1);

    clock.set(plus(m1, 5));
    eventually(20, "the twin's job", || async {
        (!jobs_of(&h.client, "twin").await.is_empty()).then_some(())
    })
    .await;
    // Past the timer's longest sleep, the suspended one still has none.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(jobs_of(&h.client, "paused").await.is_empty());
    assert!(get_cronjob(&h.client, "paused")
        .await
        .status
        .and_then(|s| s.last_schedule_time)
        .is_none());

    // Resuming starts the missed minute.
    merge_patch(
        &h.api::<CronJob>(),
        "paused",
        serde_json::json!({"spec": {"suspend": false}}),
    )
    .await;
    wait_for_jobs(&h.client, "paused", &[job_name("paused", m1)]).await;

    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_zones_deadlines_and_missed_starts() {
    let (clock, h, _, m1) =
        start_with("tokyo", serde_json::json!({"timeZone": "Asia/Tokyo"})).await;
    create_cronjob(
        &h,
        cronjob_json(
            "mars",
            "*/1 * * * *",
            serde_json::json!({"timeZone": "Mars/Olympus"}),
        ),
    )
    .await;
    create_cronjob(
        &h,
        cronjob_json(
            "late",
            "*/1 * * * *",
            serde_json::json!({"startingDeadlineSeconds": 10}),
        ),
    )
    .await;

    // 30 s after the minute: too late for a 10 s deadline, fine otherwise.
    clock.set(plus(m1, 30));
    let jobs = wait_for_jobs(&h.client, "tokyo", &[job_name("tokyo", m1)]).await;
    let stamp = &jobs[0].metadata.annotations.as_ref().unwrap()[SCHEDULED_TIMESTAMP_ANNOTATION];
    let tz = jiff::tz::TimeZone::get("Asia/Tokyo").unwrap();
    assert_eq!(
        stamp,
        &format!("{}+09:00", m1.to_zoned(tz).strftime("%Y-%m-%dT%H:%M:%S")),
        "the scheduled time in the CronJob's zone"
    );
    wait_for_event(
        &h.client,
        "mars",
        "UnknownTimeZone",
        "invalid timeZone: \"Mars/Olympus\": unknown time zone Mars/Olympus",
    )
    .await;
    assert!(jobs_of(&h.client, "mars").await.is_empty());
    assert!(jobs_of(&h.client, "late").await.is_empty());

    // The next minute, on time, does start.
    let m2 = plus(m1, 60);
    clock.set(plus(m2, 5));
    wait_for_jobs(&h.client, "late", &[job_name("late", m2)]).await;
    wait_for_jobs(
        &h.client,
        "tokyo",
        &[job_name("tokyo", m1), job_name("tokyo", m2)],
    )
    .await;

    // A clock far ahead: one Job for the latest time, and a warning.
    let far = plus(m2, 200 * 60);
    clock.set(plus(far, 5));
    wait_for_event(
        &h.client,
        "tokyo",
        "TooManyMissedTimes",
        "too many missed start times. Set or decrease .spec.startingDeadlineSeconds or check clock skew",
    )
    .await;
    wait_for_jobs(
        &h.client,
        "tokyo",
        &[
            job_name("tokyo", m1),
            job_name("tokyo", m2),
            job_name("tokyo", far),
        ],
    )
    .await;

    h.stop().await;
}

/// The one test on the real clock: a `* * * * *` CronJob's first Job
/// appears at the next minute boundary, so this waits up to a minute.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_clock_creates_the_first_job_at_the_next_minute() {
    let mut h = Harness::start().await;
    h.spawn(cronjob::run(
        h.client.clone(),
        Options::default(),
        h.shutdown.clone(),
    ));
    let (_, m1) =
        create_cronjob(&h, cronjob_json("wall", "* * * * *", serde_json::json!({}))).await;
    let want = job_name("wall", m1);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(70);
    loop {
        let jobs = names(&jobs_of(&h.client, "wall").await);
        if !jobs.is_empty() {
            assert_eq!(jobs, [want.as_str()]);
            break;
        }
        assert!(Instant::now() < deadline, "no job within 70 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Not before the scheduled minute.
    assert!(Timestamp::now() >= m1);
    h.stop().await;
}
