//! The ReplicaSet controller (upstream pkg/controller/replicaset), and the
//! same loop for core/v1 ReplicationControllers as upstream runs it: keep
//! `spec.replicas` active pods matching the selector, adopting orphans and
//! releasing pods that no longer match, and report replicas,
//! fullyLabeledReplicas, readyReplicas, availableReplicas,
//! observedGeneration and the ReplicaFailure condition.

use std::collections::HashSet;
use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetCondition, ReplicaSetStatus};
use k8s_openapi::api::core::v1::{
    Pod, PodTemplateSpec, ReplicationController, ReplicationControllerCondition,
    ReplicationControllerStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kelson_runtime::Recorder;
use kube::api::{Api, PostParams};
use kube::runtime::controller::Action;
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::informers::Informers;
use crate::podcontrol::{
    self, claim, indexed_watch, is_pod_active, is_pod_available, is_pod_ready, owners_of_child,
    pod_from_template, pods_to_delete, ClaimOwner, Expectations, OwnerIndex, PodControl, Selector,
    BURST_REPLICAS,
};
use crate::runner;

/// The ReplicaFailure condition type.
pub const REPLICA_FAILURE: &str = "ReplicaFailure";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Pods(#[from] podcontrol::Error),
    #[error("updating status of {0}: {1}")]
    Status(String, #[source] kube::Error),
}

/// Tunables; the defaults are upstream's.
#[derive(Debug, Clone)]
pub struct Options {
    /// Owners synced at the same time (--concurrent-replicaset-syncs).
    pub workers: u16,
    /// Most pods created or deleted in one sync.
    pub burst_replicas: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            workers: runner::DEFAULT_WORKERS,
            burst_replicas: BURST_REPLICAS,
        }
    }
}

/// The status fields the controller writes, common to both kinds.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ReplicaStatus {
    pub replicas: i32,
    pub fully_labeled_replicas: i32,
    pub ready_replicas: i32,
    pub available_replicas: i32,
    pub observed_generation: i64,
    /// The ReplicaFailure condition: (reason, message, lastTransitionTime).
    pub failure: Option<(String, String, Option<Time>)>,
}

/// What the controller needs of a ReplicaSet or ReplicationController.
pub trait Replicated:
    Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
    + Clone
    + DeserializeOwned
    + Serialize
    + Debug
    + Send
    + Sync
    + 'static
{
    /// Events' source component, as upstream names it.
    const COMPONENT: &'static str;
    fn replicas(&self) -> i32;
    fn min_ready_seconds(&self) -> i32;
    fn pod_selector(&self) -> Result<Selector, podcontrol::Error>;
    fn template(&self) -> Option<&PodTemplateSpec>;
    fn replica_status(&self) -> ReplicaStatus;
    fn set_replica_status(&mut self, status: &ReplicaStatus);
}

/// The status accessors of `Replicated`: ReplicaSet and
/// ReplicationController statuses have the same fields under different
/// k8s-openapi types.
macro_rules! replica_status_accessors {
    ($status:ident, $condition:ident) => {
        fn replica_status(&self) -> ReplicaStatus {
            let s = self.status.clone().unwrap_or_default();
            ReplicaStatus {
                replicas: s.replicas,
                fully_labeled_replicas: s.fully_labeled_replicas.unwrap_or(0),
                ready_replicas: s.ready_replicas.unwrap_or(0),
                available_replicas: s.available_replicas.unwrap_or(0),
                observed_generation: s.observed_generation.unwrap_or(0),
                failure: s
                    .conditions
                    .iter()
                    .flatten()
                    .find(|c| c.type_ == REPLICA_FAILURE)
                    .map(|c| {
                        (
                            c.reason.clone().unwrap_or_default(),
                            c.message.clone().unwrap_or_default(),
                            c.last_transition_time.clone(),
                        )
                    }),
            }
        }

        fn set_replica_status(&mut self, st: &ReplicaStatus) {
            let mut status = self.status.clone().unwrap_or_else(|| $status {
                replicas: 0,
                ..Default::default()
            });
            status.replicas = st.replicas;
            status.fully_labeled_replicas = Some(st.fully_labeled_replicas);
            status.ready_replicas = Some(st.ready_replicas);
            status.available_replicas = Some(st.available_replicas);
            status.observed_generation = Some(st.observed_generation);
            let mut conditions: Vec<$condition> = status
                .conditions
                .take()
                .unwrap_or_default()
                .into_iter()
                .filter(|c| c.type_ != REPLICA_FAILURE)
                .collect();
            if let Some((reason, message, at)) = &st.failure {
                conditions.push($condition {
                    type_: REPLICA_FAILURE.into(),
                    status: "True".into(),
                    reason: Some(reason.clone()),
                    message: Some(message.clone()),
                    last_transition_time: at.clone(),
                });
            }
            status.conditions = (!conditions.is_empty()).then_some(conditions);
            self.status = Some(status);
        }
    };
}

impl Replicated for ReplicaSet {
    const COMPONENT: &'static str = "replicaset-controller";

    fn replicas(&self) -> i32 {
        self.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
    }

    fn min_ready_seconds(&self) -> i32 {
        self.spec
            .as_ref()
            .and_then(|s| s.min_ready_seconds)
            .unwrap_or(0)
    }

    fn pod_selector(&self) -> Result<Selector, podcontrol::Error> {
        Selector::from_label_selector(self.spec.as_ref().map(|s| &s.selector))
    }

    fn template(&self) -> Option<&PodTemplateSpec> {
        self.spec.as_ref().and_then(|s| s.template.as_ref())
    }

    replica_status_accessors!(ReplicaSetStatus, ReplicaSetCondition);
}

impl Replicated for ReplicationController {
    const COMPONENT: &'static str = "replication-controller";

    fn replicas(&self) -> i32 {
        self.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
    }

    fn min_ready_seconds(&self) -> i32 {
        self.spec
            .as_ref()
            .and_then(|s| s.min_ready_seconds)
            .unwrap_or(0)
    }

    fn pod_selector(&self) -> Result<Selector, podcontrol::Error> {
        // The API server defaults an RC's selector to its template's labels.
        Ok(self
            .spec
            .as_ref()
            .and_then(|s| s.selector.as_ref())
            .map(Selector::from_map)
            .unwrap_or_else(Selector::nothing))
    }

    fn template(&self) -> Option<&PodTemplateSpec> {
        self.spec.as_ref().and_then(|s| s.template.as_ref())
    }

    replica_status_accessors!(ReplicationControllerStatus, ReplicationControllerCondition);
}

struct Context<W: Replicated> {
    client: Client,
    pods: Arc<OwnerIndex<Pod>>,
    expectations: Arc<Expectations>,
    pod_control: PodControl,
    options: Options,
    _kind: std::marker::PhantomData<W>,
}

/// Runs the ReplicaSet controller until `shutdown` fires.
pub async fn run(client: Client, shutdown: CancellationToken) {
    run_with::<ReplicaSet>(Informers::new(client), shutdown, Options::default()).await;
}

/// Runs the ReplicationController controller until `shutdown` fires.
pub async fn run_replication_controllers(client: Client, shutdown: CancellationToken) {
    run_with::<ReplicationController>(Informers::new(client), shutdown, Options::default()).await;
}

/// Runs the controller for kind `W` with `options`.
pub async fn run_with<W: Replicated>(
    informers: Informers,
    shutdown: CancellationToken,
    options: Options,
) {
    let client = informers.client().clone();
    let expectations = Arc::new(Expectations::default());
    let exp = expectations.clone();
    let (pods, pod_stream) = indexed_watch::<Pod, _>(&informers, move |n| exp.observe(n));
    let controller = runner::controller::<W>(&client, options.workers);
    let owner_store = controller.store();
    let recorder = Recorder::new(client.clone(), W::COMPONENT, "");
    let ctx = Arc::new(Context::<W> {
        pod_control: PodControl::new(client.clone(), recorder.clone()),
        client,
        pods,
        expectations,
        options: options.clone(),
        _kind: std::marker::PhantomData,
    });
    let controller = controller
        .watches_shared_stream(pod_stream, move |pod: Arc<Pod>| {
            owners_of_child(&owner_store, &pod.metadata, W::pod_selector)
        })
        .graceful_shutdown_on(shutdown.cancelled_owned())
        .run(reconcile::<W>, error_policy::<W>, ctx);
    runner::drive(controller, &format!("{} sync", W::kind(&()))).await;
    recorder.flush().await;
}

fn error_policy<W: Replicated>(_obj: Arc<W>, err: &Error, _ctx: Arc<Context<W>>) -> Action {
    tracing::warn!(error = %err, kind = %W::kind(&()), "replica sync failed");
    Action::requeue(Duration::from_secs(2))
}

async fn reconcile<W: Replicated>(obj: Arc<W>, ctx: Arc<Context<W>>) -> Result<Action, Error> {
    if ctx.pods.store().wait_until_ready().await.is_err() {
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    let (Some(namespace), Some(uid)) = (obj.meta().namespace.clone(), obj.meta().uid.clone())
    else {
        return Ok(Action::await_change());
    };
    let name = obj.name_any();
    let selector = match obj.pod_selector() {
        Ok(s) => s,
        Err(e) => {
            // Upstream logs and waits for the user to fix the object.
            tracing::warn!(%namespace, %name, error = %e, "invalid selector");
            return Ok(Action::await_change());
        }
    };
    let needs_sync = ctx.expectations.satisfied(&uid);
    let deleting = obj.meta().deletion_timestamp.is_some();
    let candidates: Vec<Arc<Pod>> = ctx
        .pods
        .children(&namespace, &uid, true)
        .into_iter()
        .filter(|p| is_pod_active(p))
        .collect();
    let owner = ClaimOwner {
        reference: podcontrol::controller_ref(obj.as_ref()),
        namespace: &namespace,
        deleting,
    };
    let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
    let owners_api: Api<W> = Api::namespaced(ctx.client.clone(), &namespace);
    let claimed = claim(&pods_api, &owner, &selector, candidates, || {
        can_adopt(&owners_api, &name, &uid)
    })
    .await;
    let mut pods = match claimed {
        Ok(p) => p,
        Err(e) => return Err(e.into()),
    };

    let mut manage_err = None;
    if needs_sync && !deleting {
        match manage_replicas(&ctx, obj.as_ref(), &uid, &pods).await {
            Ok(deleted) => {
                // Deleted pods are gone from the API already (or terminating):
                // report the state the sync left behind, not the one before.
                pods.retain(|p| !deleted.contains(&p.name_any()));
            }
            Err(e) => manage_err = Some(e),
        }
    }
    let status = calculate_status(obj.as_ref(), &pods, manage_err.as_ref(), Timestamp::now());
    let updated = update_status(&owners_api, obj.as_ref(), status).await?;
    if let Some(e) = manage_err {
        return Err(e.into());
    }
    if !needs_sync {
        // Level-triggered safety net: look again once the expectations
        // would have expired even if no event arrives.
        return Ok(Action::requeue(podcontrol::EXPECTATIONS_TIMEOUT));
    }
    let min_ready = obj.min_ready_seconds();
    if min_ready > 0
        && updated.ready_replicas == obj.replicas()
        && updated.available_replicas != obj.replicas()
    {
        // Pods become available by the passing of time, not by an event.
        return Ok(Action::requeue(Duration::from_secs(min_ready as u64)));
    }
    Ok(Action::await_change())
}

/// Upstream's canAdopt: a fresh read proves the owner still exists with
/// this UID and is not being deleted, so a stale cache cannot adopt.
async fn can_adopt<W: Replicated>(
    api: &Api<W>,
    name: &str,
    uid: &str,
) -> Result<(), podcontrol::Error> {
    match api.get(name).await {
        Ok(fresh) if fresh.meta().uid.as_deref() != Some(uid) => Err(podcontrol::Error::CanAdopt(
            name.into(),
            format!(
                "original {} {name} is gone: got uid {:?}, wanted {uid}",
                W::kind(&()),
                fresh.meta().uid
            ),
        )),
        Ok(fresh) if fresh.meta().deletion_timestamp.is_some() => Err(podcontrol::Error::CanAdopt(
            name.into(),
            format!("{} {name} has just been deleted", W::kind(&())),
        )),
        Ok(_) => Ok(()),
        Err(e) => Err(podcontrol::Error::CanAdopt(name.into(), e.to_string())),
    }
}

/// Creates or deletes pods towards `spec.replicas`, at most
/// `burst_replicas` at a time. Returns the names of the deleted pods.
async fn manage_replicas<W: Replicated>(
    ctx: &Context<W>,
    obj: &W,
    uid: &str,
    pods: &[Arc<Pod>],
) -> Result<HashSet<String>, podcontrol::Error> {
    let want = obj.replicas().max(0) as usize;
    let have = pods.len();
    let namespace = obj.meta().namespace.clone().unwrap_or_default();
    let owner_ref = kelson_runtime::events::object_reference(obj);
    if have < want {
        let diff = (want - have).min(ctx.options.burst_replicas);
        let Some(template) = obj.template() else {
            return Ok(HashSet::new());
        };
        let pod = pod_from_template(
            template,
            &obj.name_any(),
            Some(podcontrol::controller_ref(obj)),
        );
        let (_, err) = ctx
            .pod_control
            .create_pods(&ctx.expectations, uid, &namespace, &owner_ref, diff, |_| {
                pod.clone()
            })
            .await;
        return match err {
            Some(e) => Err(e),
            None => Ok(HashSet::new()),
        };
    }
    if have > want {
        let diff = (have - want).min(ctx.options.burst_replicas);
        let victims = pods_to_delete(pods.to_vec(), pods, diff, Timestamp::now());
        let keys: Vec<String> = victims
            .iter()
            .map(|p| podcontrol::object_key(&p.metadata))
            .collect();
        ctx.expectations.expect_deletions(uid, keys.iter().cloned());
        let results = futures::future::join_all(victims.iter().map(|p| {
            let owner_ref = &owner_ref;
            let namespace = &namespace;
            async move {
                let name = p.name_any();
                let r = ctx
                    .pod_control
                    .delete_pod(namespace, &name, owner_ref)
                    .await;
                (name, r)
            }
        }))
        .await;
        let mut deleted = HashSet::new();
        let mut first_err = None;
        for ((name, r), key) in results.into_iter().zip(keys) {
            match r {
                Ok(()) => {
                    deleted.insert(name);
                }
                Err(e) => {
                    ctx.expectations.deletion_observed(uid, &key);
                    if e.is_not_found() {
                        deleted.insert(name);
                    } else if first_err.is_none() {
                        first_err = Some(e);
                    }
                }
            }
        }
        return match first_err {
            Some(e) => Err(e),
            None => Ok(deleted),
        };
    }
    Ok(HashSet::new())
}

/// Upstream's calculateStatus: counts over the claimed active pods, and a
/// ReplicaFailure condition while creating or deleting fails.
pub fn calculate_status<W: Replicated>(
    obj: &W,
    pods: &[Arc<Pod>],
    manage_err: Option<&podcontrol::Error>,
    now: Timestamp,
) -> ReplicaStatus {
    let mut status = obj.replica_status();
    let template_labels = obj
        .template()
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let template_selector = Selector::from_map(&template_labels);
    let min_ready = obj.min_ready_seconds();
    let mut fully_labeled = 0;
    let mut ready = 0;
    let mut available = 0;
    for p in pods {
        if template_selector.matches(p.metadata.labels.as_ref()) {
            fully_labeled += 1;
        }
        if is_pod_ready(p) {
            ready += 1;
            if is_pod_available(p, min_ready, now) {
                available += 1;
            }
        }
    }
    match (manage_err, &status.failure) {
        (Some(e), None) => {
            let diff = pods.len() as i64 - i64::from(obj.replicas());
            let reason = if diff < 0 {
                "FailedCreate"
            } else if diff > 0 {
                "FailedDelete"
            } else {
                ""
            };
            status.failure = Some((reason.into(), failure_message(e), Some(Time(now))));
        }
        (None, Some(_)) => status.failure = None,
        _ => {}
    }
    status.replicas = pods.len() as i32;
    status.fully_labeled_replicas = fully_labeled;
    status.ready_replicas = ready;
    status.available_replicas = available;
    status
}

/// The condition message: the API server's own words, as upstream's
/// `err.Error()` of a StatusError.
fn failure_message(e: &podcontrol::Error) -> String {
    match e {
        podcontrol::Error::Create(k) | podcontrol::Error::Delete(k) => podcontrol::api_message(k),
        e => e.to_string(),
    }
}

/// Writes `status` (with observedGeneration) unless nothing changed; one
/// retry on a fresh copy after a failure, as upstream.
async fn update_status<W: Replicated>(
    api: &Api<W>,
    obj: &W,
    mut status: ReplicaStatus,
) -> Result<ReplicaStatus, Error> {
    let generation = obj.meta().generation.unwrap_or(0);
    let current = obj.replica_status();
    status.observed_generation = generation;
    if current == status {
        return Ok(status);
    }
    let name = obj.name_any();
    let mut target = obj.clone();
    for attempt in 0..2 {
        target.set_replica_status(&status);
        match api
            .replace_status(&name, &PostParams::default(), &target)
            .await
        {
            Ok(_) => return Ok(status),
            Err(e) if podcontrol::is_not_found(&e) => return Ok(status),
            Err(e) if attempt == 1 => return Err(Error::Status(name, e)),
            Err(_) => match api.get(&name).await {
                Ok(fresh) => {
                    status.observed_generation =
                        fresh.meta().generation.unwrap_or(0).max(generation);
                    target = fresh;
                }
                Err(e) if podcontrol::is_not_found(&e) => return Ok(status),
                Err(e) => return Err(Error::Status(name, e)),
            },
        }
    }
    Ok(status)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodCondition, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn rs(replicas: i32, min_ready: i32) -> ReplicaSet {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "default", "generation": 3},
            "spec": {
                "replicas": replicas,
                "minReadySeconds": min_ready,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web", "tier": "fe"}}, "spec": {"containers": []}}
            }
        }))
        .unwrap()
    }

    fn pod(labels: &[(&str, &str)], ready_at: Option<i64>) -> Arc<Pod> {
        Arc::new(Pod {
            metadata: ObjectMeta {
                labels: Some(
                    labels
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                ..Default::default()
            },
            spec: None,
            status: Some(PodStatus {
                phase: Some("Running".into()),
                conditions: ready_at.map(|t| {
                    vec![PodCondition {
                        type_: "Ready".into(),
                        status: "True".into(),
                        last_transition_time: Some(Time(Timestamp::from_second(t).unwrap())),
                        ..Default::default()
                    }]
                }),
                ..Default::default()
            }),
        })
    }

    #[test]
    fn status_counts_labels_readiness_and_availability() {
        let now = Timestamp::from_second(1000).unwrap();
        let pods = vec![
            pod(&[("app", "web"), ("tier", "fe")], Some(100)),
            pod(&[("app", "web")], Some(995)),
            pod(&[("app", "web"), ("tier", "fe")], None),
        ];
        let s = calculate_status(&rs(3, 10), &pods, None, now);
        assert_eq!(
            (
                s.replicas,
                s.fully_labeled_replicas,
                s.ready_replicas,
                s.available_replicas
            ),
            (3, 2, 2, 1)
        );
        assert!(s.failure.is_none());
    }

    #[test]
    fn failures_set_and_clear_the_replica_failure_condition() {
        let now = Timestamp::from_second(1000).unwrap();
        let err = podcontrol::Error::NoLabels;
        let s = calculate_status(&rs(3, 0), &[], Some(&err), now);
        let (reason, message, _) = s.failure.clone().unwrap();
        assert_eq!(reason, "FailedCreate");
        assert_eq!(message, "unable to create pods, no labels");
        let mut obj = rs(3, 0);
        obj.set_replica_status(&s);
        let cond = &obj.status.as_ref().unwrap().conditions.as_ref().unwrap()[0];
        assert_eq!(
            (cond.type_.as_str(), cond.status.as_str()),
            ("ReplicaFailure", "True")
        );
        let cleared = calculate_status(&obj, &[], None, now);
        assert!(cleared.failure.is_none());
        obj.set_replica_status(&cleared);
        assert!(obj.status.unwrap().conditions.is_none());
    }

    #[test]
    fn rc_selector_is_a_plain_map() {
        let rc: ReplicationController = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "old", "namespace": "default"},
            "spec": {"selector": {"app": "old"}, "template": {"metadata": {"labels": {"app": "old"}}}}
        }))
        .unwrap();
        let sel = rc.pod_selector().unwrap();
        assert!(sel.matches(
            pod(&[("app", "old"), ("x", "y")], None)
                .metadata
                .labels
                .as_ref()
        ));
        assert!(!sel.matches(pod(&[("app", "new")], None).metadata.labels.as_ref()));
        assert_eq!(rc.replicas(), 1, "replicas default to 1");
    }
}
