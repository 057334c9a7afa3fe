//! Pod garbage collection: orphaned, unscheduled terminating and excess
//! terminated pods.

mod support;

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kelson_controllers::podgc::{self, PodGcOptions};
use kube::api::{Api, DeleteParams, PostParams};

use support::{clear_finalizers, create_node, eventually, from_json, patch_pod_status, Harness};

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

    eventually(15, "orphaned pod deleted", || async {
        pods.get_opt("orphan")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    let held = eventually(15, "held orphan marked and deleted", || async {
        let p = pods.get("orphan-held").await.unwrap();
        p.metadata.deletion_timestamp.is_some().then_some(p)
    })
    .await;
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

    eventually(15, "unscheduled terminating pod marked failed", || async {
        let p = pods.get("unscheduled").await.unwrap();
        (p.status.and_then(|s| s.phase).as_deref() == Some("Failed")).then_some(())
    })
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
    eventually(
        15,
        "oldest terminated pod over the threshold deleted",
        || async {
            pods.get_opt("done-a")
                .await
                .unwrap()
                .is_none()
                .then_some(())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    for name in ["done-b", "done-c", "running"] {
        assert!(
            pods.get_opt(name).await.unwrap().is_some(),
            "{name} must stay"
        );
    }
    h.stop().await;
}
