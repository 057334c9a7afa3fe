//! Pod garbage collection: orphaned, unscheduled terminating and excess
//! terminated pods.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Pod};
use kelson_controllers::podgc::{self, PodGcOptions};
use kelson_runtime::testing::TestCluster;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use tokio_util::sync::CancellationToken;

async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn pod(name: &str, node: Option<&str>, finalizers: &[&str]) -> Pod {
    let mut spec = serde_json::json!({"containers": [{"name": "c", "image": "busybox"}]});
    if let Some(n) = node {
        spec["nodeName"] = n.into();
    }
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "finalizers": finalizers},
        "spec": spec,
    }))
    .unwrap()
}

async fn release(pods: &Api<Pod>, name: &str) {
    pods.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_of_missing_nodes_and_unscheduled_terminating_pods_go() {
    let cluster = TestCluster::start().await.unwrap();
    let client = cluster
        .component_client(
            "system:kube-controller-manager",
            &[],
            "kelson-controller-manager",
        )
        .await
        .unwrap();
    let pp = PostParams::default();
    let nodes: Api<Node> = Api::all(client.clone());
    let node: Node =
        serde_json::from_value(serde_json::json!({"metadata": {"name": "present"}})).unwrap();
    nodes.create(&pp, &node).await.unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
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

    let shutdown = CancellationToken::new();
    let controller = tokio::spawn(podgc::run(
        client.clone(),
        PodGcOptions {
            terminated_pod_gc_threshold: 12500,
            gc_check_period: Duration::from_millis(300),
            quarantine_time: Duration::from_secs(1),
        },
        shutdown.clone(),
    ));
    pods.delete("unscheduled", &DeleteParams::default())
        .await
        .unwrap();

    eventually("orphaned pod deleted", || async {
        pods.get_opt("orphan")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    let held = eventually("held orphan marked and deleted", || async {
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

    eventually("unscheduled terminating pod marked failed", || async {
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
        release(&pods, name).await;
    }
    shutdown.cancel();
    controller.await.unwrap();
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminated_pods_over_the_threshold_go_oldest_first() {
    let cluster = TestCluster::start().await.unwrap();
    let client = cluster
        .component_client(
            "system:kube-controller-manager",
            &[],
            "kelson-controller-manager",
        )
        .await
        .unwrap();
    let pp = PostParams::default();
    let nodes: Api<Node> = Api::all(client.clone());
    let node: Node =
        serde_json::from_value(serde_json::json!({"metadata": {"name": "present"}})).unwrap();
    nodes.create(&pp, &node).await.unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    pods.create(&pp, &pod("running", Some("present"), &[]))
        .await
        .unwrap();
    // Created in this order: done-a is the oldest (same-second ties go by
    // name, as upstream sorts).
    for name in ["done-a", "done-b", "done-c"] {
        pods.create(&pp, &pod(name, Some("present"), &[]))
            .await
            .unwrap();
        pods.patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"status": {"phase": "Succeeded"}})),
        )
        .await
        .unwrap();
    }
    let shutdown = CancellationToken::new();
    let controller = tokio::spawn(podgc::run(
        client.clone(),
        PodGcOptions {
            terminated_pod_gc_threshold: 2,
            gc_check_period: Duration::from_millis(300),
            quarantine_time: Duration::from_secs(1),
        },
        shutdown.clone(),
    ));
    eventually(
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
    shutdown.cancel();
    controller.await.unwrap();
    cluster.stop().await;
}
