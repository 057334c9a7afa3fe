//! The TTL-after-finished controller (upstream
//! pkg/controller/ttlafterfinished): deletes a finished Job (Complete or
//! Failed) `spec.ttlSecondsAfterFinished` seconds after it finished, with
//! foreground propagation so its pods go first.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::batch::v1::Job;
use kube::api::{Api, DeleteParams, Preconditions, PropagationPolicy};
use kube::runtime::controller::Action;
use kube::{Client, ResourceExt};
use tokio_util::sync::CancellationToken;

use crate::runner::{self, WorkerOptions};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("unable to find the time when the Job {0} finished")]
    NoFinishTime(String),
    #[error("reading Job {0}: {1}")]
    Get(String, #[source] kube::Error),
    #[error("deleting Job {0}: {1}")]
    Delete(String, #[source] kube::Error),
}

/// Tunables; `workers` is --concurrent-ttl-after-finished-syncs.
pub type Options = WorkerOptions;

struct Context {
    client: Client,
}

/// Runs the controller with upstream's defaults until `shutdown` fires.
pub async fn run(client: Client, shutdown: CancellationToken) {
    run_with(client, shutdown, Options::default()).await;
}

/// Runs the controller with `options` until `shutdown` fires.
pub async fn run_with(client: Client, shutdown: CancellationToken, options: Options) {
    let controller = runner::controller::<Job>(&client, options.workers)
        .graceful_shutdown_on(shutdown.cancelled_owned())
        .run(reconcile, error_policy, Arc::new(Context { client }));
    runner::drive(controller, "ttl-after-finished").await;
}

fn error_policy(_job: Arc<Job>, err: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(error = %err, "ttl-after-finished");
    match err {
        // Only a change of the Job can fix it.
        Error::NoFinishTime(_) => Action::await_change(),
        _ => Action::requeue(Duration::from_secs(1)),
    }
}

/// When the finished Job may be deleted: None if it isn't finished, has no
/// TTL or is being deleted.
pub fn expire_time(job: &Job) -> Result<Option<Timestamp>, Error> {
    let Some(ttl) = job.spec.as_ref().and_then(|s| s.ttl_seconds_after_finished) else {
        return Ok(None);
    };
    if job.metadata.deletion_timestamp.is_some() {
        return Ok(None);
    }
    let Some(finished) = job
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .find(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
    else {
        return Ok(None);
    };
    let at = finished
        .last_transition_time
        .as_ref()
        .map(|t| t.0)
        .ok_or_else(|| Error::NoFinishTime(key(job)))?;
    let ttl = jiff::SignedDuration::from_secs(i64::from(ttl.max(0)));
    Ok(Some(at.checked_add(ttl).unwrap_or(Timestamp::MAX)))
}

fn key(job: &Job) -> String {
    format!("{}/{}", job.namespace().unwrap_or_default(), job.name_any())
}

/// Time left until `expire`, zero once passed.
fn left(expire: Timestamp, now: Timestamp) -> Duration {
    Duration::try_from(expire.duration_since(now)).unwrap_or(Duration::ZERO)
}

async fn reconcile(job: Arc<Job>, ctx: Arc<Context>) -> Result<Action, Error> {
    let Some(expire) = expire_time(&job)? else {
        return Ok(Action::await_change());
    };
    let remaining = left(expire, Timestamp::now());
    if !remaining.is_zero() {
        return Ok(Action::requeue(remaining));
    }
    // The cached TTL may be stale: check a fresh copy before deleting.
    let Some(ns) = job.namespace() else {
        return Ok(Action::await_change());
    };
    let api: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
    let name = job.name_any();
    let fresh = match api.get(&name).await {
        Ok(f) => f,
        Err(kube::Error::Api(s)) if s.code == 404 => return Ok(Action::await_change()),
        Err(e) => return Err(Error::Get(key(&job), e)),
    };
    let Some(expire) = expire_time(&fresh)? else {
        return Ok(Action::await_change());
    };
    let remaining = left(expire, Timestamp::now());
    if !remaining.is_zero() {
        return Ok(Action::requeue(remaining));
    }
    let params = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Foreground),
        preconditions: Some(Preconditions {
            uid: fresh.metadata.uid.clone(),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    tracing::debug!(job = %key(&fresh), "cleaning up finished job");
    match api.delete(&name, &params).await {
        Ok(_) => Ok(Action::await_change()),
        // Gone, or replaced by a new Job of that name (UID precondition).
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(Action::await_change()),
        Err(e) => Err(Error::Delete(key(&fresh), e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(v: serde_json::Value) -> Job {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn expires_ttl_seconds_after_the_terminal_condition() {
        let j = job(serde_json::json!({
            "metadata": {"name": "j", "namespace": "d"},
            "spec": {"ttlSecondsAfterFinished": 100, "template": {}},
            "status": {"conditions": [
                {"type": "SuccessCriteriaMet", "status": "True", "lastTransitionTime": "2024-01-01T00:00:00Z"},
                {"type": "Complete", "status": "True", "lastTransitionTime": "2024-01-01T00:00:10Z"}
            ]}
        }));
        let at = expire_time(&j).unwrap().unwrap();
        assert_eq!(at.to_string(), "2024-01-01T00:01:50Z");
        assert_eq!(
            left(at, "2024-01-01T00:01:00Z".parse().unwrap()),
            Duration::from_secs(50)
        );
        assert_eq!(
            left(at, "2024-01-01T00:02:00Z".parse().unwrap()),
            Duration::ZERO
        );
    }

    #[test]
    fn unfinished_untimed_or_deleting_jobs_are_left_alone() {
        let running = job(serde_json::json!({
            "spec": {"ttlSecondsAfterFinished": 0, "template": {}},
            "status": {"conditions": [{"type": "FailureTarget", "status": "True", "lastTransitionTime": "2024-01-01T00:00:00Z"}]}
        }));
        assert_eq!(expire_time(&running).unwrap(), None);
        let no_ttl = job(serde_json::json!({
            "spec": {"template": {}},
            "status": {"conditions": [{"type": "Failed", "status": "True", "lastTransitionTime": "2024-01-01T00:00:00Z"}]}
        }));
        assert_eq!(expire_time(&no_ttl).unwrap(), None);
        let no_time = job(serde_json::json!({
            "metadata": {"name": "j", "namespace": "d"},
            "spec": {"ttlSecondsAfterFinished": 5, "template": {}},
            "status": {"conditions": [{"type": "Failed", "status": "True"}]}
        }));
        assert!(matches!(expire_time(&no_time), Err(Error::NoFinishTime(k)) if k == "d/j"));
    }
}
