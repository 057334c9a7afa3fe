//! The Job and TTL-after-finished controllers against a real API server.
//! No kubelet runs: the tests finish pods through the status subresource
//! (phase and terminated container states), as upstream's integration
//! tests do.

use std::time::Duration;

use k8s_openapi::api::batch::v1::{Job, JobCondition, JobStatus};
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::ResourceExt;

use crate::support::{
    controller_ref, create, events_for, eventually, merge_patch, patch_pod_status, pods_matching,
    wait_event, wait_events, wait_gone, wait_until, Harness,
};

const FINALIZER: &str = "batch.kubernetes.io/job-tracking";

/// The Job controller with a short pod-replacement back-off, and the TTL
/// controller.
async fn start() -> Harness {
    let mut h = Harness::start().await;
    let options = kelson_controllers::job::Options {
        pod_failure_backoff: Duration::from_millis(200),
        max_pod_failure_backoff: Duration::from_secs(1),
        ..Default::default()
    };
    h.spawn(kelson_controllers::job::run_with(
        kelson_controllers::informers::Informers::new(h.client.clone()),
        h.shutdown.clone(),
        options,
    ));
    h.spawn(kelson_controllers::ttlafterfinished::run(
        h.client.clone(),
        h.shutdown.clone(),
    ));
    h
}

/// A cluster running the Job controllers, with Job `name` of `spec`
/// created in it.
async fn start_with_job(name: &str, spec: serde_json::Value) -> (Harness, Api<Job>, Api<Pod>, Job) {
    let h = start().await;
    let jobs: Api<Job> = h.api();
    let pods: Api<Pod> = h.api();
    let job = create(&jobs, job_json(name, spec)).await;
    (h, jobs, pods, job)
}

fn job_json(name: &str, spec: serde_json::Value) -> serde_json::Value {
    let mut s = serde_json::json!({
        "template": {"spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "main", "image": "busybox"}]
        }}
    });
    if let (Some(s), Some(extra)) = (s.as_object_mut(), spec.as_object()) {
        for (k, v) in extra {
            s.insert(k.clone(), v.clone());
        }
    }
    serde_json::json!({"metadata": {"name": name}, "spec": s})
}

/// The Job's pods that are neither finished nor being deleted.
async fn active_pods(pods: &Api<Pod>, job: &str) -> Vec<Pod> {
    all_pods(pods, job)
        .await
        .into_iter()
        .filter(|p| {
            let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
            p.metadata.deletion_timestamp.is_none()
                && phase != Some("Succeeded")
                && phase != Some("Failed")
        })
        .collect()
}

async fn all_pods(pods: &Api<Pod>, job: &str) -> Vec<Pod> {
    pods_matching(pods, &format!("batch.kubernetes.io/job-name={job}")).await
}

/// Waits until the Job's active pods satisfy `ok`, and returns them.
async fn wait_active(
    pods: &Api<Pod>,
    job: &str,
    secs: u64,
    what: &str,
    ok: impl Fn(&[Pod]) -> bool,
) -> Vec<Pod> {
    eventually(secs, what, || async {
        let p = active_pods(pods, job).await;
        ok(&p).then_some(p)
    })
    .await
}

/// Waits until the Job has no pods left at all.
async fn wait_no_pods(pods: &Api<Pod>, job: &str) {
    eventually(10, "pods gone", || async {
        all_pods(pods, job).await.is_empty().then_some(())
    })
    .await;
}

/// Waits until the Job's status satisfies `ok`.
async fn wait_status(
    jobs: &Api<Job>,
    name: &str,
    what: &str,
    ok: impl Fn(&JobStatus) -> bool,
) -> Job {
    wait_until(jobs, name, 10, what, |j| j.status.as_ref().is_some_and(&ok)).await
}

/// What a kubelet reports when the pod's only container exited.
async fn finish_pod(pods: &Api<Pod>, name: &str, exit_code: i32) {
    let phase = if exit_code == 0 {
        "Succeeded"
    } else {
        "Failed"
    };
    let now = jiff::Timestamp::now().to_string();
    patch_pod_status(
        pods,
        name,
        serde_json::json!({
            "phase": phase,
            "conditions": [{"type": "Ready", "status": "False", "lastTransitionTime": now}],
            "containerStatuses": [{
                "name": "main", "image": "busybox", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"terminated": {
                    "exitCode": exit_code,
                    "reason": if exit_code == 0 { "Completed" } else { "Error" },
                    "startedAt": now, "finishedAt": now
                }}
            }]
        }),
    )
    .await
    .unwrap();
}

fn condition<'a>(job: &'a Job, type_: &str) -> Option<&'a JobCondition> {
    job.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_ && c.status == "True")
}

async fn wait_condition(jobs: &Api<Job>, name: &str, type_: &str, secs: u64) -> Job {
    let what = format!("{name} {type_}");
    wait_until(jobs, name, secs, &what, |j| condition(j, type_).is_some()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completions_respect_parallelism_and_complete_the_job() {
    let (h, jobs, pods, job) = start_with_job(
        "work",
        serde_json::json!({"completions": 5, "parallelism": 2}),
    )
    .await;
    let uid = job.uid().unwrap();

    let mut finished: i32 = 0;
    while finished < 5 {
        let running = wait_active(&pods, "work", 10, "a running pod", |p| !p.is_empty()).await;
        assert!(
            running.len() <= 2,
            "{} pods active with parallelism 2",
            running.len()
        );
        // Remaining completions bound the pods too: never more than needed.
        assert!(
            running.len() as i32 <= 5 - finished,
            "{} active, {finished} done",
            running.len()
        );
        let p = &running[0];
        assert_eq!(p.metadata.generate_name.as_deref(), Some("work-"));
        let labels = p.metadata.labels.clone().unwrap_or_default();
        for (k, v) in [
            ("batch.kubernetes.io/controller-uid", uid.as_str()),
            ("controller-uid", uid.as_str()),
            ("batch.kubernetes.io/job-name", "work"),
            ("job-name", "work"),
        ] {
            assert_eq!(labels.get(k).map(String::as_str), Some(v), "label {k}");
        }
        assert!(p.finalizers().iter().any(|f| f == FINALIZER));
        let owner = controller_ref(p);
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str()),
            ("Job", uid.as_str())
        );
        finish_pod(&pods, &p.name_any(), 0).await;
        finished += 1;
        // Wait until the controller counted it before finishing the next.
        wait_status(&jobs, "work", "succeeded count", |st| {
            st.succeeded == Some(finished)
        })
        .await;
    }
    let job = wait_condition(&jobs, "work", "Complete", 10).await;
    let st = job.status.clone().unwrap();
    assert_eq!(
        (st.succeeded, st.failed, st.active),
        (Some(5), None, Some(0))
    );
    assert_eq!((st.ready, st.terminating), (Some(0), Some(0)));
    assert!(st.completion_time.is_some() && st.start_time.is_some());
    let unc = st.uncounted_terminated_pods.unwrap();
    assert!(unc.succeeded.is_none() && unc.failed.is_none());
    let scm = condition(&job, "SuccessCriteriaMet").expect("SuccessCriteriaMet first");
    let complete = condition(&job, "Complete").unwrap();
    for c in [scm, complete] {
        assert_eq!(c.reason.as_deref(), Some("CompletionsReached"));
        assert_eq!(
            c.message.as_deref(),
            Some("Reached expected number of succeeded pods")
        );
    }
    // Every pod was counted, so none keeps the finalizer.
    let all = all_pods(&pods, "work").await;
    assert_eq!(all.len(), 5);
    assert!(all
        .iter()
        .all(|p| !p.finalizers().iter().any(|f| f == FINALIZER)));
    let events = wait_events(&h.client, "work", 10, "events", |e| {
        let creates = e
            .iter()
            .filter(|(r, m)| r == "SuccessfulCreate" && m.starts_with("Created pod: work-"))
            .count();
        creates == 5
            && e.iter()
                .any(|(r, m)| r == "Completed" && m == "Job completed")
    })
    .await;
    assert!(
        !events.iter().any(|(r, _)| r == "TooManySucceededPods"),
        "{events:?}"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_pods_stop_at_the_backoff_limit() {
    let (h, jobs, pods, _) = start_with_job("flaky", serde_json::json!({"backoffLimit": 2})).await;
    for attempt in 1..=3 {
        let running = wait_active(&pods, "flaky", 20, "a replacement pod", |p| !p.is_empty()).await;
        assert_eq!(running.len(), 1);
        finish_pod(&pods, &running[0].name_any(), 1).await;
        wait_status(&jobs, "flaky", "failed count", |st| {
            st.failed == Some(attempt)
        })
        .await;
    }
    let job = wait_condition(&jobs, "flaky", "Failed", 10).await;
    let failed = condition(&job, "Failed").unwrap();
    assert_eq!(failed.reason.as_deref(), Some("BackoffLimitExceeded"));
    assert_eq!(
        failed.message.as_deref(),
        Some("Job has reached the specified backoff limit")
    );
    assert!(
        condition(&job, "FailureTarget").is_some(),
        "FailureTarget comes first"
    );
    let st = job.status.unwrap();
    assert_eq!(
        (st.failed, st.succeeded, st.active),
        (Some(3), None, Some(0))
    );
    assert!(st.completion_time.is_none());
    // No fourth pod.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(all_pods(&pods, "flaky").await.len(), 3);
    wait_event(&h.client, "flaky", 10, "BackoffLimitExceeded", |m| {
        m == "Job has reached the specified backoff limit"
    })
    .await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn indexed_jobs_track_completed_indexes() {
    let (h, jobs, pods, _) = start_with_job(
        "idx",
        serde_json::json!({"completions": 3, "parallelism": 3, "completionMode": "Indexed"}),
    )
    .await;
    let running = wait_active(&pods, "idx", 10, "3 indexed pods", |p| p.len() == 3).await;
    let mut by_index = std::collections::BTreeMap::new();
    for p in &running {
        let ix = p.annotations()["batch.kubernetes.io/job-completion-index"].clone();
        assert_eq!(p.labels()["batch.kubernetes.io/job-completion-index"], ix);
        assert_eq!(
            p.metadata.generate_name.as_deref(),
            Some(format!("idx-{ix}-").as_str())
        );
        let spec = p.spec.as_ref().unwrap();
        assert_eq!(spec.hostname.as_deref(), Some(format!("idx-{ix}").as_str()));
        let env = spec.containers[0].env.as_ref().unwrap();
        let var = env
            .iter()
            .find(|e| e.name == "JOB_COMPLETION_INDEX")
            .unwrap();
        let field = var.value_from.as_ref().and_then(|v| v.field_ref.as_ref());
        assert_eq!(
            field.map(|f| f.field_path.as_str()),
            Some("metadata.labels['batch.kubernetes.io/job-completion-index']")
        );
        by_index.insert(ix, p.name_any());
    }
    assert_eq!(by_index.keys().collect::<Vec<_>>(), ["0", "1", "2"]);

    finish_pod(&pods, &by_index["0"], 0).await;
    finish_pod(&pods, &by_index["2"], 0).await;
    wait_status(&jobs, "idx", "completedIndexes 0,2", |st| {
        st.completed_indexes.as_deref() == Some("0,2") && st.succeeded == Some(2)
    })
    .await;
    // A failed index gets a new pod with the same index.
    finish_pod(&pods, &by_index["1"], 1).await;
    let replacement = wait_active(&pods, "idx", 10, "replacement for index 1", |p| {
        p.len() == 1
    })
    .await
    .remove(0);
    assert_eq!(
        replacement.annotations()["batch.kubernetes.io/job-completion-index"],
        "1"
    );
    finish_pod(&pods, &replacement.name_any(), 0).await;
    let job = wait_condition(&jobs, "idx", "Complete", 10).await;
    let st = job.status.unwrap();
    assert_eq!(st.completed_indexes.as_deref(), Some("0-2"));
    assert_eq!((st.succeeded, st.failed), (Some(3), Some(1)));
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_deadline_fails_the_job_and_removes_its_pods() {
    let (h, jobs, pods, _) = start_with_job(
        "slow",
        serde_json::json!({"activeDeadlineSeconds": 2, "parallelism": 2, "completions": 4}),
    )
    .await;
    wait_active(&pods, "slow", 10, "2 pods", |p| p.len() == 2).await;
    let job = wait_condition(&jobs, "slow", "Failed", 15).await;
    let failed = condition(&job, "Failed").unwrap();
    assert_eq!(failed.reason.as_deref(), Some("DeadlineExceeded"));
    assert_eq!(
        failed.message.as_deref(),
        Some("Job was active longer than specified deadline")
    );
    let st = job.status.unwrap();
    assert_eq!(
        (st.active, st.failed, st.terminating),
        (Some(0), Some(2), Some(0))
    );
    // The pods were deleted and, their finalizer removed, are gone.
    wait_no_pods(&pods, "slow").await;
    wait_event(&h.client, "slow", 10, "DeadlineExceeded", |_| true).await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspend_and_resume() {
    let (h, jobs, pods, _) = start_with_job(
        "later",
        serde_json::json!({"suspend": true, "parallelism": 2, "completions": 2}),
    )
    .await;
    let job = wait_condition(&jobs, "later", "Suspended", 10).await;
    let c = condition(&job, "Suspended").unwrap();
    assert_eq!(
        (c.reason.as_deref(), c.message.as_deref()),
        (Some("JobSuspended"), Some("Job suspended"))
    );
    assert!(job.status.as_ref().unwrap().start_time.is_none());
    assert!(all_pods(&pods, "later").await.is_empty());
    // A settled Job is not rewritten on every look.
    let rv = job.resource_version();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(jobs.get("later").await.unwrap().resource_version(), rv);

    let set_suspend = |v: bool| serde_json::json!({"spec": {"suspend": v}});
    merge_patch(&jobs, "later", set_suspend(false)).await;
    wait_active(&pods, "later", 10, "2 pods after resume", |p| p.len() == 2).await;
    let suspended = |st: &JobStatus| {
        st.conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == "Suspended")
            .cloned()
    };
    let job = wait_status(&jobs, "later", "resumed condition", |st| {
        suspended(st).is_some_and(|c| c.status == "False") && st.start_time.is_some()
    })
    .await;
    let resumed = suspended(job.status.as_ref().unwrap()).unwrap();
    assert_eq!(resumed.reason.as_deref(), Some("JobResumed"));
    assert_eq!(resumed.message.as_deref(), Some("Job resumed"));

    // Suspending again deletes the running pods without counting failures.
    merge_patch(&jobs, "later", set_suspend(true)).await;
    let job = wait_until(&jobs, "later", 10, "suspended again", |j| {
        condition(j, "Suspended").is_some()
            && j.status.as_ref().is_some_and(|s| s.active == Some(0))
    })
    .await;
    assert_eq!(job.status.unwrap().failed, None);
    wait_no_pods(&pods, "later").await;
    let events = events_for(&h.client, "later").await;
    assert!(
        events
            .iter()
            .any(|(r, m)| r == "Resumed" && m == "Job resumed"),
        "{events:?}"
    );
    assert!(
        events
            .iter()
            .any(|(r, m)| r == "SuccessfulDelete" && m.starts_with("Deleted pod: later-")),
        "{events:?}"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_failure_policy_fails_the_job_on_an_exit_code() {
    let (h, jobs, pods, _) = start_with_job("strict", serde_json::json!({
        "backoffLimit": 6,
        "podFailurePolicy": {"rules": [
            {"action": "FailJob", "onExitCodes": {"containerName": "main", "operator": "In", "values": [42]}}
        ]}
    }))
    .await;
    let running = wait_active(&pods, "strict", 10, "a pod", |p| !p.is_empty()).await;
    let name = running[0].name_any();
    finish_pod(&pods, &name, 42).await;
    let job = wait_condition(&jobs, "strict", "Failed", 10).await;
    let failed = condition(&job, "Failed").unwrap();
    assert_eq!(failed.reason.as_deref(), Some("PodFailurePolicy"));
    assert_eq!(
        failed.message.as_deref(),
        Some(format!("Container main for pod default/{name} failed with exit code 42 matching FailJob rule at index 0").as_str())
    );
    assert_eq!(job.status.unwrap().failed, Some(1));
    assert_eq!(
        all_pods(&pods, "strict").await.len(),
        1,
        "no retry after FailJob"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_jobs_are_deleted_after_their_ttl() {
    let (mut h, jobs, pods, _) =
        start_with_job("brief", serde_json::json!({"ttlSecondsAfterFinished": 1})).await;
    h.spawn(kelson_controllers::garbagecollector::run(
        h.client.clone(),
        Default::default(),
        h.shutdown.clone(),
    ));
    let running = wait_active(&pods, "brief", 10, "a pod", |p| !p.is_empty()).await;
    finish_pod(&pods, &running[0].name_any(), 0).await;
    wait_condition(&jobs, "brief", "Complete", 10).await;
    wait_gone(&jobs, "brief", 20).await;
    eventually(20, "its pods deleted", || async {
        all_pods(&pods, "brief").await.is_empty().then_some(())
    })
    .await;
    h.stop().await;
}
