//! Pod garbage collection: orphaned, unscheduled terminating and excess
//! terminated pods.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kelson_controllers::podgc::{self, PodGcOptions};
use kube::api::{Api, DeleteParams, PostParams};

use crate::support::{
    clear_finalizers, create_node, from_json, patch_pod_status, wait_gone, wait_terminating,
    wait_until, Harness,
};

fn pod(name: &str, node: Option<&str>, finalizers: &[&str]) -> Pod {
    let mut spec = serde_json::json!({"containers": [{"name": "c", "image": "busybox"}]});
    if let Some(n) = node {
        spec["nodeName"] = n.into();
    }
    from_json(serde_json::json!({
        "metadata": {"name": name, "finalizers": finalizers},
        "spec": spec,
    }))
}

/// Starts pod GC with fast checks, a 1 s quarantine and the given
/// threshold of terminated pods.
fn start_podgc(h: &mut Harness, terminated_pod_gc_threshold: usize) {
    h.spawn(podgc::run(
        h.client.clone(),
        PodGcOptions {
            terminated_pod_gc_threshold,
            gc_check_period: Duration::from_millis(300),
            quarantine_time: Duration::from_secs(1),
        },
        h.shutdown.clone(),
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_of_missing_nodes_and_unscheduled_terminating_pods_go() {
    let mut h = Harness::start().await;
    let pp = PostParams::default();
    create_node(&h.client, "present").await;
    let pods: Api<Pod> = h.api();
    pods.create(&pp, &pod("on-present", Some("present"), &[]))
        .await
        .unwrap();
    pods.create(&pp, &pod("orphan", Some("ghost"), &[]))
        .await
        .unwrap();
    // Held by a finalizer so that the marks podgc leaves can be read.
    pods.create(
        &pp,
        &pod("orphan-held", Some("ghost"), &["example.com/hold"]),
    )
    .await
    .unwrap();
    pods.create(&pp, &pod("unscheduled", None, &["example.com/hold"]))
        .await
        .unwrap();

    start_podgc(&mut h, 12500);
    pods.delete("unscheduled", &DeleteParams::default())
        .await
        .unwrap();

    wait_gone(&pods, "orphan", 15).await;
    let held = wait_terminating(&pods, "orphan-held", 15).await;
    let status = held.status.unwrap();
    assert_eq!(status.phase.as_deref(), Some("Failed"));
    let cond = status
        .conditions
        .unwrap_or_default()
        .into_iter()
        .find(|c| c.type_ == "DisruptionTarget")
        .expect("DisruptionTarget condition");
    assert_eq!(cond.status, "True");
    assert_eq!(cond.reason.as_deref(), Some("DeletionByPodGC"));
    assert_eq!(
        cond.message.as_deref(),
        Some("PodGC: node no longer exists")
    );
    assert_eq!(held.metadata.deletion_grace_period_seconds, Some(0));

    wait_until(
        &pods,
        "unscheduled",
        15,
        "unscheduled terminating pod marked failed",
        |p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Failed"),
    )
    .await;
    let ok = pods.get("on-present").await.unwrap();
    assert!(
        ok.metadata.deletion_timestamp.is_none(),
        "pods of existing nodes stay"
    );

    for name in ["orphan-held", "unscheduled"] {
        clear_finalizers(&pods, name).await;
    }
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminated_pods_over_the_threshold_go_oldest_first() {
    let mut h = Harness::start().await;
    let pp = PostParams::default();
    create_node(&h.client, "present").await;
    let pods: Api<Pod> = h.api();
    pods.create(&pp, &pod("running", Some("present"), &[]))
        .await
        .unwrap();
    // Created in this order: done-a is the oldest (same-second ties go by
    // name, as upstream sorts).
    for name in ["done-a", "done-b", "done-c"] {
        pods.create(&pp, &pod(name, Some("present"), &[]))
            .await
            .unwrap();
        patch_pod_status(&pods, name, serde_json::json!({"phase": "Succeeded"}))
            .await
            .unwrap();
    }
    start_podgc(&mut h, 2);
    // The oldest terminated pod over the threshold goes.
    wait_gone(&pods, "done-a", 15).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    for name in ["done-b", "done-c", "running"] {
        assert!(
            pods.get_opt(name).await.unwrap().is_some(),
            "{name} must stay"
        );
    }
    h.stop().await;
}
