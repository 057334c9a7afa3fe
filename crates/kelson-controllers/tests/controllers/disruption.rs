//! The disruption controller against a real API server: PodDisruptionBudget
//! status follows its pods' readiness and their controllers' scale.

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetStatus};
use kube::api::Api;
use kube::Client;

use crate::support::{
    create, default_events, eventually, merge_patch, patch_pod_status, set_ready, wait_until,
    Harness,
};

async fn start() -> Harness {
    let mut h = Harness::start().await;
    h.spawn(kelson_controllers::disruption::run(
        h.client.clone(),
        h.shutdown.clone(),
    ));
    h
}

/// A ReplicaSet of `replicas` labelled `app`, as its controller would find
/// it (no ReplicaSet controller runs here: the test makes the pods).
async fn replica_set(client: &Client, name: &str, app: &str, replicas: i32) -> ReplicaSet {
    create(
        &Api::<ReplicaSet>::namespaced(client.clone(), "default"),
        serde_json::json!({
            "metadata": {"name": name},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": app}},
                "template": crate::support::app_template(app),
            }
        }),
    )
    .await
}

/// A pod labelled `app`, controlled by `owner` when given, Running and
/// Ready as its kubelet would report.
async fn ready_pod(client: &Client, name: &str, app: &str, owner: Option<&ReplicaSet>) -> Pod {
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let mut meta = serde_json::json!({"name": name, "labels": {"app": app}});
    if let Some(rs) = owner {
        meta["ownerReferences"] = serde_json::json!([{
            "apiVersion": "apps/v1", "kind": "ReplicaSet",
            "name": rs.metadata.name, "uid": rs.metadata.uid,
            "controller": true, "blockOwnerDeletion": true
        }]);
    }
    let pod = create(
        &pods,
        serde_json::json!({
            "metadata": meta,
            "spec": {"containers": [{"name": "app", "image": "nginx:1.25"}], "nodeName": "node-1"}
        }),
    )
    .await;
    set_ready(&pods, name, jiff::Timestamp::now()).await;
    pod
}

async fn budget(client: &Client, name: &str, spec: serde_json::Value) -> PodDisruptionBudget {
    create(
        &Api::<PodDisruptionBudget>::namespaced(client.clone(), "default"),
        serde_json::json!({"metadata": {"name": name}, "spec": spec}),
    )
    .await
}

/// Waits until the budget's status satisfies `ok`.
async fn status_until(
    client: &Client,
    name: &str,
    what: &str,
    ok: impl Fn(&PodDisruptionBudgetStatus) -> bool,
) -> PodDisruptionBudget {
    let api: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), "default");
    wait_until(&api, name, 30, what, |pdb| {
        pdb.status.as_ref().is_some_and(&ok)
    })
    .await
}

/// (status, reason) of the DisruptionAllowed condition.
fn allowed_condition(s: &PodDisruptionBudgetStatus) -> Option<(String, String, String)> {
    s.conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "DisruptionAllowed")
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

fn counts(s: &PodDisruptionBudgetStatus) -> (i32, i32, i32, i32) {
    (
        s.current_healthy,
        s.desired_healthy,
        s.expected_pods,
        s.disruptions_allowed,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_available_follows_pod_readiness() {
    let h = start().await;
    let rs = replica_set(&h.client, "web", "web", 3).await;
    for i in 0..3 {
        ready_pod(&h.client, &format!("web-{i}"), "web", Some(&rs)).await;
    }
    // A pod of another app is not counted.
    ready_pod(&h.client, "other", "other", None).await;
    budget(
        &h.client,
        "web-pdb",
        serde_json::json!({"minAvailable": 2, "selector": {"matchLabels": {"app": "web"}}}),
    )
    .await;

    let pdb = status_until(&h.client, "web-pdb", "one disruption allowed", |s| {
        counts(s) == (3, 2, 3, 1)
    })
    .await;
    let s = pdb.status.unwrap();
    assert_eq!(s.observed_generation, pdb.metadata.generation);
    assert_eq!(
        allowed_condition(&s),
        Some(("True".into(), "SufficientPods".into(), String::new()))
    );

    // One pod stops being ready: nothing may be disrupted any more.
    let pods: Api<Pod> = h.api();
    patch_pod_status(
        &pods,
        "web-1",
        serde_json::json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "False"}]}),
    )
    .await
    .unwrap();
    let pdb = status_until(&h.client, "web-pdb", "no disruption allowed", |s| {
        counts(s) == (2, 2, 3, 0)
    })
    .await;
    assert_eq!(
        allowed_condition(&pdb.status.unwrap()).map(|c| (c.0, c.1)),
        Some(("False".into(), "InsufficientPods".into()))
    );

    // A pod being deleted (its kubelet has not confirmed yet) is not
    // healthy either.
    set_ready(&pods, "web-1", jiff::Timestamp::now()).await;
    status_until(&h.client, "web-pdb", "ready again", |s| {
        counts(s) == (3, 2, 3, 1)
    })
    .await;
    pods.delete("web-2", &Default::default()).await.unwrap();
    status_until(&h.client, "web-pdb", "deleted pod uncounted", |s| {
        s.current_healthy == 2 && s.disruptions_allowed == 0
    })
    .await;

    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_unavailable_percentage_uses_the_owners_replicas() {
    let h = start().await;
    // Four replicas wanted, three exist so far.
    let rs = replica_set(&h.client, "api", "api", 4).await;
    for i in 0..3 {
        ready_pod(&h.client, &format!("api-{i}"), "api", Some(&rs)).await;
    }
    budget(
        &h.client,
        "api-pdb",
        serde_json::json!({"maxUnavailable": "50%", "selector": {"matchLabels": {"app": "api"}}}),
    )
    .await;
    // expected 4 (the owner's replicas), 50% of 4 = 2 may be unavailable,
    // so 2 must be healthy; 3 are.
    status_until(&h.client, "api-pdb", "expected pods from replicas", |s| {
        counts(s) == (3, 2, 4, 1)
    })
    .await;

    // Scaling the owner up raises the bar: 50% of 10 = 5 must be healthy.
    let rs_api: Api<ReplicaSet> = h.api();
    merge_patch(
        &rs_api,
        "api",
        serde_json::json!({"spec": {"replicas": 10}}),
    )
    .await;
    let pdb = status_until(&h.client, "api-pdb", "scaled owner", |s| {
        counts(s) == (3, 5, 10, 0)
    })
    .await;
    assert_eq!(
        allowed_condition(&pdb.status.unwrap()).map(|c| c.1),
        Some("InsufficientPods".into())
    );

    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_whose_controller_is_missing_fail_the_sync() {
    let h = start().await;
    // The pod names a ReplicaSet that does not exist (made, then deleted).
    let rs = replica_set(&h.client, "ghost", "ghost", 2).await;
    let rs_api: Api<ReplicaSet> = h.api();
    rs_api.delete("ghost", &Default::default()).await.unwrap();
    ready_pod(&h.client, "ghost-0", "ghost", Some(&rs)).await;
    budget(
        &h.client,
        "ghost-pdb",
        serde_json::json!({"minAvailable": "50%", "selector": {"matchLabels": {"app": "ghost"}}}),
    )
    .await;

    let pdb = status_until(&h.client, "ghost-pdb", "SyncFailed condition", |s| {
        allowed_condition(s).is_some_and(|c| c.1 == "SyncFailed")
    })
    .await;
    let s = pdb.status.unwrap();
    assert_eq!(s.disruptions_allowed, 0);
    assert_eq!(
        allowed_condition(&s),
        Some((
            "False".into(),
            "SyncFailed".into(),
            "found no controllers for pod \"ghost-0\"".into()
        ))
    );
    let events = eventually(30, "NoControllers events", || {
        let client = h.client.clone();
        async move {
            let events = default_events(&client).await;
            let has = |reason: &str, msg: &str| {
                events.iter().any(|e| {
                    e.reason.as_deref() == Some(reason)
                        && e.message.as_deref() == Some(msg)
                        && e.involved_object.kind.as_deref() == Some("PodDisruptionBudget")
                        && e.type_.as_deref() == Some("Warning")
                })
            };
            (has("NoControllers", "found no controllers for pod \"ghost-0\"")
                && has(
                    "CalculateExpectedPodCountFailed",
                    "Failed to calculate the number of expected pods: found no controllers for pod \"ghost-0\"",
                ))
            .then_some(events)
        }
    })
    .await;
    assert!(events
        .iter()
        .filter(|e| e.reason.as_deref() == Some("NoControllers"))
        .all(
            |e| e.source.as_ref().and_then(|s| s.component.as_deref()) == Some("controllermanager")
        ));

    h.stop().await;
}
