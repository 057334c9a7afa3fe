//! The exponential delay before failed pods are replaced (upstream
//! backoff_utils.go): 10 s after the first failure since the last success,
//! doubling with each further one, capped.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{ContainerStatus, Pod};

use super::indexes::{
    annotation_count, INDEX_FAILURE_COUNT_ANNOTATION, INDEX_IGNORED_FAILURE_COUNT_ANNOTATION,
};

/// Consecutive failures of a Job's pods since its last success.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BackoffRecord {
    pub failures_after_last_success: i32,
    pub last_failure_time: Option<Timestamp>,
}

impl BackoffRecord {
    /// How long until a failed pod may be replaced.
    pub fn remaining(&self, now: Timestamp, base: Duration, max: Duration) -> Duration {
        remaining_for_failures(
            now,
            base,
            max,
            self.failures_after_last_success,
            self.last_failure_time,
        )
    }
}

/// The records of all Jobs, by "namespace/name".
#[derive(Debug, Default)]
pub struct BackoffStore {
    records: Mutex<HashMap<String, BackoffRecord>>,
}

impl BackoffStore {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, BackoffRecord>> {
        self.records.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The record after `new_succeeded` and `new_failed` pods finished:
    /// any success resets the count to the failures that came after it.
    pub fn next_record(
        &self,
        key: &str,
        new_succeeded: &[Arc<Pod>],
        new_failed: &[Arc<Pod>],
    ) -> BackoffRecord {
        let mut rec = self.lock().get(key).cloned().unwrap_or_default();
        let mut failed: Vec<Timestamp> = new_failed.iter().map(|p| finished_time(p)).collect();
        failed.sort();
        let last_success = new_succeeded.iter().map(|p| finished_time(p)).max();
        match last_success {
            None => {
                if let Some(last) = failed.last() {
                    rec.failures_after_last_success += failed.len() as i32;
                    rec.last_failure_time = Some(*last);
                }
            }
            Some(success) => {
                rec.failures_after_last_success = 0;
                rec.last_failure_time = None;
                for t in failed.iter().rev() {
                    if *t <= success {
                        break;
                    }
                    if rec.last_failure_time.is_none() {
                        rec.last_failure_time = Some(*t);
                    }
                    rec.failures_after_last_success += 1;
                }
            }
        }
        rec
    }

    pub fn update(&self, key: &str, record: BackoffRecord) {
        self.lock().insert(key.to_string(), record);
    }

    pub fn remove(&self, key: &str) {
        self.lock().remove(key);
    }
}

/// How long until an index may get a new pod after `last_failed` failed:
/// the failure count comes from the pod's index annotations.
pub fn remaining_for_index(
    now: Timestamp,
    base: Duration,
    max: Duration,
    last_failed: Option<&Pod>,
) -> Duration {
    let Some(pod) = last_failed else {
        return Duration::ZERO;
    };
    let failures = absolute_index_failures(pod).saturating_add(1);
    remaining_for_failures(now, base, max, failures, Some(finished_time(pod)))
}

/// Failures counted plus ignored within the pod's index.
pub fn absolute_index_failures(pod: &Pod) -> i32 {
    annotation_count(pod, INDEX_FAILURE_COUNT_ANNOTATION).saturating_add(annotation_count(
        pod,
        INDEX_IGNORED_FAILURE_COUNT_ANNOTATION,
    ))
}

fn remaining_for_failures(
    now: Timestamp,
    base: Duration,
    max: Duration,
    failures: i32,
    last_failure: Option<Timestamp>,
) -> Duration {
    if failures <= 0 {
        return Duration::ZERO;
    }
    let Some(last) = last_failure else {
        return Duration::ZERO;
    };
    let mut delay = base;
    for _ in 1..failures {
        delay = delay.saturating_mul(2);
        if delay >= max {
            delay = max;
            break;
        }
    }
    let elapsed = now.duration_since(last);
    let elapsed = Duration::try_from(elapsed).unwrap_or(Duration::ZERO);
    delay.saturating_sub(elapsed)
}

/// When the pod finished: its containers' latest finishedAt, else when it
/// became not Ready, else its deletion time minus the grace period, else
/// its creation (upstream's getFinishedTime).
pub fn finished_time(pod: &Pod) -> Timestamp {
    if let Some(t) = finish_time_from_containers(pod) {
        return t;
    }
    let status = pod.status.as_ref();
    if let Some(t) = status
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .filter(|c| c.status == "False")
        .and_then(|c| c.last_transition_time.as_ref())
    {
        return t.0;
    }
    if let Some(d) = &pod.metadata.deletion_timestamp {
        let grace = pod.metadata.deletion_grace_period_seconds.unwrap_or(0);
        return d
            .0
            .checked_sub(jiff::SignedDuration::from_secs(grace))
            .unwrap_or(d.0);
    }
    pod.metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0)
        .unwrap_or(Timestamp::UNIX_EPOCH)
}

fn finish_time_from_containers(pod: &Pod) -> Option<Timestamp> {
    let status = pod.status.as_ref()?;
    let mut latest = latest_finish(None, status.container_statuses.as_deref(), None)?;
    // Sidecars (restartable init containers) finish after the main ones.
    let sidecars = crate::podcontrol::sidecar_names(pod);
    if !sidecars.is_empty() {
        latest = latest_finish(
            Some(latest),
            status.init_container_statuses.as_deref(),
            Some(&sidecars),
        )?;
    }
    Some(latest)
}

/// The latest finishedAt of `statuses` (those named in `only`, if given),
/// or None when any of them has not terminated.
fn latest_finish(
    prev: Option<Timestamp>,
    statuses: Option<&[ContainerStatus]>,
    only: Option<&HashSet<&str>>,
) -> Option<Timestamp> {
    let mut latest = prev;
    for cs in statuses.unwrap_or_default() {
        if only.is_some_and(|o| !o.contains(cs.name.as_str())) {
            continue;
        }
        let t = cs
            .state
            .as_ref()
            .and_then(|s| s.terminated.as_ref())
            .and_then(|t| t.finished_at.as_ref())?;
        if latest.is_none_or(|l| l < t.0) {
            latest = Some(t.0);
        }
    }
    latest
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + s).unwrap()
    }

    fn pod_finished_at(s: i64) -> Arc<Pod> {
        Arc::new(
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "p", "creationTimestamp": ts(0).to_string()},
                "status": {"containerStatuses": [{
                    "name": "c", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
                    "state": {"terminated": {"exitCode": 1, "finishedAt": ts(s).to_string()}}
                }]}
            }))
            .unwrap(),
        )
    }

    #[test]
    fn delay_doubles_from_ten_seconds_up_to_the_cap() {
        let base = Duration::from_secs(10);
        let max = Duration::from_secs(600);
        let rec = |n| BackoffRecord {
            failures_after_last_success: n,
            last_failure_time: Some(ts(0)),
        };
        assert_eq!(rec(0).remaining(ts(0), base, max), Duration::ZERO);
        assert_eq!(rec(1).remaining(ts(0), base, max), Duration::from_secs(10));
        assert_eq!(rec(3).remaining(ts(5), base, max), Duration::from_secs(35));
        assert_eq!(rec(20).remaining(ts(0), base, max), max);
        assert_eq!(rec(1).remaining(ts(11), base, max), Duration::ZERO);
    }

    #[test]
    fn a_success_resets_the_failure_count() {
        let store = BackoffStore::default();
        let r = store.next_record("ns/j", &[], &[pod_finished_at(1), pod_finished_at(3)]);
        assert_eq!(r.failures_after_last_success, 2);
        assert_eq!(r.last_failure_time, Some(ts(3)));
        store.update("ns/j", r);
        let r = store.next_record(
            "ns/j",
            &[pod_finished_at(10)],
            &[pod_finished_at(5), pod_finished_at(12)],
        );
        assert_eq!(r.failures_after_last_success, 1);
        assert_eq!(r.last_failure_time, Some(ts(12)));
        let r = store.next_record("ns/j", &[pod_finished_at(10)], &[]);
        assert_eq!(r, BackoffRecord::default());
    }

    #[test]
    fn finished_time_falls_back_to_creation() {
        let p: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "creationTimestamp": ts(7).to_string()},
            "status": {"phase": "Failed"}
        }))
        .unwrap();
        assert_eq!(finished_time(&p), ts(7));
        assert_eq!(finished_time(&pod_finished_at(9)), ts(9));
    }
}
