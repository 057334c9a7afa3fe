//! [`SchedulerEffects`] through the API server with kube-rs: bindings via
//! `pods/binding`, the PodScheduled condition and nominatedNodeName via
//! `pods/status`, preemption victims marked (DisruptionTarget) and deleted,
//! Events through [`kelson_runtime::Recorder`].
//!
//! Every call is queued and returns at once: the scheduling thread never
//! waits for the network. API calls run as tasks on the I/O runtime, at most
//! `concurrency` at a time; a failed binding comes back to the scheduler as
//! [`SchedulerInput::BindingFailed`].

use std::future::Future;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Binding, ObjectReference, Pod, PodCondition};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use k8s_openapi::serde_json::{json, Map, Value};
use kelson_runtime::{EventType, Recorder};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::Api;
use tokio::sync::mpsc::UnboundedSender;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::driver::SchedulerInput;
use crate::scheduler::{EffectError, PodStatusUpdate, SchedulerEffects, SchedulingEvent};

/// The bind plugin's name in upstream's failure messages.
const BINDER: &str = "DefaultBinder";

pub struct KubeEffects {
    client: kube::Client,
    /// The runtime that performs the API calls (not the scheduling thread).
    rt: tokio::runtime::Handle,
    recorder: Recorder,
    inputs: UnboundedSender<SchedulerInput>,
    permits: Arc<Semaphore>,
    concurrency: usize,
    shutdown: CancellationToken,
    scheduler_name: String,
}

impl KubeEffects {
    /// `rt` runs the API calls; `inputs` receives binding failures.
    pub fn new(
        client: kube::Client,
        rt: tokio::runtime::Handle,
        recorder: Recorder,
        inputs: UnboundedSender<SchedulerInput>,
        concurrency: usize,
        scheduler_name: String,
        shutdown: CancellationToken,
    ) -> KubeEffects {
        let concurrency = concurrency.max(1);
        KubeEffects {
            client,
            rt,
            recorder,
            inputs,
            permits: Arc::new(Semaphore::new(concurrency)),
            concurrency,
            shutdown,
            scheduler_name,
        }
    }

    /// Waits until no API call is running (queued ones are dropped once
    /// `shutdown` is cancelled).
    pub async fn drain(permits: &Semaphore, concurrency: usize) {
        let n = u32::try_from(concurrency).unwrap_or(u32::MAX);
        let _ = permits.acquire_many(n).await;
    }

    /// The semaphore bounding calls in flight and its size, for [`drain`].
    ///
    /// [`drain`]: KubeEffects::drain
    pub fn permits(&self) -> (Arc<Semaphore>, usize) {
        (self.permits.clone(), self.concurrency)
    }

    fn spawn_call(&self, call: impl Future<Output = ()> + Send + 'static) {
        let permits = self.permits.clone();
        let shutdown = self.shutdown.clone();
        self.rt.spawn(async move {
            let Ok(_permit) = permits.acquire_owned().await else {
                return;
            };
            if shutdown.is_cancelled() {
                return;
            }
            call.await;
        });
    }

    fn pods(&self, ns: &str) -> Api<Pod> {
        Api::namespaced(self.client.clone(), ns)
    }
}

fn name_ns(pod: &Pod) -> (String, String) {
    (
        pod.metadata.name.clone().unwrap_or_default(),
        pod.metadata.namespace.clone().unwrap_or_default(),
    )
}

/// The message of an API error (the Status message), else the error.
fn error_message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) if !s.message.is_empty() => s.message.clone(),
        e => e.to_string(),
    }
}

fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// The strategic-merge patch that sets `wanted` on `pod`'s status, as
/// upstream's UpdatePodCondition decides: `None` when the condition (type,
/// status, reason, message) is already there. The transition time moves
/// only when the status changes.
pub fn condition_patch(pod: &Pod, wanted: &PodCondition, now: Timestamp) -> Option<Value> {
    let old = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == wanted.type_));
    if let Some(o) = old {
        if o.status == wanted.status && o.reason == wanted.reason && o.message == wanted.message {
            return None;
        }
    }
    let transition = match old {
        Some(o) if o.status == wanted.status => o.last_transition_time.clone(),
        _ => Some(Time(now)),
    };
    let mut c = Map::new();
    c.insert("type".into(), json!(wanted.type_));
    c.insert("status".into(), json!(wanted.status));
    if let Some(r) = &wanted.reason {
        c.insert("reason".into(), json!(r));
    }
    if let Some(m) = &wanted.message {
        c.insert("message".into(), json!(m));
    }
    c.insert("lastProbeTime".into(), Value::Null);
    c.insert(
        "lastTransitionTime".into(),
        // Time serializes as upstream does (RFC 3339, whole seconds).
        transition
            .and_then(|t| k8s_openapi::serde_json::to_value(t).ok())
            .unwrap_or(Value::Null),
    );
    Some(Value::Object(c))
}

/// The `status` patch for a [`PodStatusUpdate`], or `None` when it changes
/// nothing.
pub fn status_patch(pod: &Pod, update: &PodStatusUpdate, now: Timestamp) -> Option<Value> {
    let mut status = Map::new();
    if let Some(c) = update
        .condition
        .as_ref()
        .and_then(|c| condition_patch(pod, c, now))
    {
        status.insert("conditions".into(), json!([c]));
    }
    if let Some(nn) = &update.nominated_node_name {
        let current = pod
            .status
            .as_ref()
            .and_then(|s| s.nominated_node_name.as_deref())
            .unwrap_or("");
        if current != nn {
            let v = if nn.is_empty() {
                Value::Null
            } else {
                json!(nn)
            };
            status.insert("nominatedNodeName".into(), v);
        }
    }
    (!status.is_empty()).then(|| json!({ "status": status }))
}

impl SchedulerEffects for KubeEffects {
    fn bind(&self, pod: &Pod, node: &str) -> Result<(), EffectError> {
        let (name, ns) = name_ns(pod);
        // Upstream's DefaultBinder: the uid guards against a recreated pod.
        let binding = Binding {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(ns.clone()),
                uid: pod.metadata.uid.clone(),
                ..ObjectMeta::default()
            },
            target: ObjectReference {
                kind: Some("Node".into()),
                name: Some(node.to_string()),
                ..ObjectReference::default()
            },
        };
        let api = self.pods(&ns);
        let inputs = self.inputs.clone();
        // Kept for the failure report, which requeues this very pod.
        let pod = pod.clone();
        self.spawn_call(async move {
            let r = api
                .create_subresource::<_, kube::core::Status>(
                    "binding",
                    &name,
                    &PostParams::default(),
                    &binding,
                )
                .await;
            if let Err(e) = r {
                let message = format!("running Bind plugin {BINDER:?}: {}", error_message(&e));
                tracing::debug!(pod = %name, namespace = %ns, %message, "binding failed");
                let _ = inputs.send(SchedulerInput::BindingFailed { pod, message });
            }
        });
        Ok(())
    }

    fn record_event(&self, pod: &Pod, event: &SchedulingEvent) {
        let kind = if event.type_ == "Warning" {
            EventType::Warning
        } else {
            EventType::Normal
        };
        self.recorder
            .event_for(pod, kind, event.reason, event.message.as_str());
    }

    fn update_pod_status(&self, pod: &Pod, update: &PodStatusUpdate) {
        let Some(patch) = status_patch(pod, update, Timestamp::now()) else {
            return;
        };
        let (name, ns) = name_ns(pod);
        let api = self.pods(&ns);
        self.spawn_call(async move {
            let r = api
                .patch_status(&name, &PatchParams::default(), &Patch::Strategic(patch))
                .await;
            match r {
                Ok(_) => {}
                Err(e) if is_not_found(&e) => {}
                Err(e) => {
                    tracing::warn!(pod = %name, namespace = %ns, error = %e, "updating pod status failed")
                }
            }
        });
    }

    fn delete_pod(&self, victim: &Pod) -> Result<(), EffectError> {
        // Upstream marks the victim DisruptionTarget before deleting it, and
        // deletes with default options (the pod's own grace period).
        let condition = PodCondition {
            type_: "DisruptionTarget".into(),
            status: "True".into(),
            reason: Some("PreemptionByScheduler".into()),
            message: Some(format!(
                "{}: preempting to accommodate a higher priority pod",
                self.scheduler_name
            )),
            ..PodCondition::default()
        };
        let patch = condition_patch(victim, &condition, Timestamp::now())
            .map(|c| json!({ "status": { "conditions": [c] } }));
        let (name, ns) = name_ns(victim);
        let uid = victim.metadata.uid.clone();
        let api = self.pods(&ns);
        self.spawn_call(async move {
            if let Some(patch) = patch {
                match api
                    .patch_status(&name, &PatchParams::default(), &Patch::Strategic(patch))
                    .await
                {
                    Ok(_) => {}
                    Err(e) if is_not_found(&e) => return,
                    Err(e) => {
                        tracing::warn!(pod = %name, namespace = %ns, error = %e, "marking preemption victim failed")
                    }
                }
            }
            let dp = DeleteParams {
                preconditions: uid.map(|uid| kube::api::Preconditions {
                    uid: Some(uid),
                    resource_version: None,
                }),
                ..DeleteParams::default()
            };
            match api.delete(&name, &dp).await {
                Ok(_) => {}
                Err(e) if is_not_found(&e) => {}
                Err(e) => {
                    tracing::warn!(pod = %name, namespace = %ns, error = %e, "deleting preemption victim failed")
                }
            }
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::PodStatus;

    fn unschedulable(msg: &str) -> PodCondition {
        PodCondition {
            type_: "PodScheduled".into(),
            status: "False".into(),
            reason: Some("Unschedulable".into()),
            message: Some(msg.into()),
            ..PodCondition::default()
        }
    }

    fn pod_with(conditions: Vec<PodCondition>, nominated: Option<&str>) -> Pod {
        Pod {
            status: Some(PodStatus {
                conditions: Some(conditions),
                nominated_node_name: nominated.map(String::from),
                ..PodStatus::default()
            }),
            ..Pod::default()
        }
    }

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn first_failure_sets_the_condition_with_transition_time() {
        let p = status_patch(
            &Pod::default(),
            &PodStatusUpdate {
                condition: Some(unschedulable("0/1 nodes are available")),
                nominated_node_name: None,
            },
            ts("2025-01-02T03:04:05Z"),
        )
        .unwrap();
        assert_eq!(
            p,
            json!({"status": {"conditions": [{
                "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                "message": "0/1 nodes are available", "lastProbeTime": null,
                "lastTransitionTime": "2025-01-02T03:04:05Z"}]}})
        );
    }

    #[test]
    fn unchanged_condition_is_not_patched_and_new_message_keeps_transition_time() {
        let mut old = unschedulable("a");
        old.last_transition_time = Some(Time(ts("2024-01-01T00:00:00Z")));
        let pod = pod_with(vec![old], None);
        let same = PodStatusUpdate {
            condition: Some(unschedulable("a")),
            nominated_node_name: None,
        };
        assert_eq!(status_patch(&pod, &same, ts("2025-01-01T00:00:00Z")), None);
        let changed = PodStatusUpdate {
            condition: Some(unschedulable("b")),
            nominated_node_name: None,
        };
        let p = status_patch(&pod, &changed, ts("2025-01-01T00:00:00Z")).unwrap();
        assert_eq!(
            p["status"]["conditions"][0]["lastTransitionTime"],
            "2024-01-01T00:00:00Z"
        );
        assert_eq!(p["status"]["conditions"][0]["message"], "b");
    }

    #[test]
    fn nominated_node_is_set_and_cleared_with_null() {
        let now = ts("2025-01-01T00:00:00Z");
        let set = PodStatusUpdate {
            condition: None,
            nominated_node_name: Some("n1".into()),
        };
        assert_eq!(
            status_patch(&Pod::default(), &set, now),
            Some(json!({"status": {"nominatedNodeName": "n1"}}))
        );
        let nominated = pod_with(vec![], Some("n1"));
        assert_eq!(status_patch(&nominated, &set, now), None);
        let clear = PodStatusUpdate {
            condition: None,
            nominated_node_name: Some(String::new()),
        };
        assert_eq!(
            status_patch(&nominated, &clear, now),
            Some(json!({"status": {"nominatedNodeName": null}}))
        );
        assert_eq!(status_patch(&Pod::default(), &clear, now), None);
    }
}
