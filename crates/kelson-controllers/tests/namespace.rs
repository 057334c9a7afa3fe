//! Namespace deletion against a real API server: everything in the
//! namespace goes, then the namespace itself.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use kelson_runtime::testing::TestCluster;
use kube::api::{Api, DeleteParams, PostParams};
use tokio_util::sync::CancellationToken;

fn from_json<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
    serde_json::from_value(v).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_namespace_removes_its_content_then_the_namespace() {
    let cluster = TestCluster::start().await.unwrap();
    let client = cluster
        .component_client(
            "system:kube-controller-manager",
            &[],
            "kelson-controller-manager",
        )
        .await
        .unwrap();
    let shutdown = CancellationToken::new();
    let controller = tokio::spawn(kelson_controllers::namespace::run(
        client.clone(),
        shutdown.clone(),
    ));

    let namespaces: Api<Namespace> = Api::all(client.clone());
    let pp = PostParams::default();
    namespaces
        .create(
            &pp,
            &from_json(serde_json::json!({"metadata": {"name": "doomed"}})),
        )
        .await
        .unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "doomed");
    for i in 0..3 {
        cms.create(
            &pp,
            &from_json(
                serde_json::json!({"metadata": {"name": format!("cm-{i}")}, "data": {"k": "v"}}),
            ),
        )
        .await
        .unwrap();
    }
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "doomed");
    // A finalizer holds this one until the test removes it: the namespace
    // must wait for it and say so in its conditions.
    secrets
        .create(
            &pp,
            &from_json(serde_json::json!({"metadata": {"name": "held", "finalizers": ["example.com/hold"]}})),
        )
        .await
        .unwrap();
    // A neighbour namespace must be left alone.
    let neighbours: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    neighbours
        .create(
            &pp,
            &from_json(serde_json::json!({"metadata": {"name": "keep"}})),
        )
        .await
        .unwrap();

    namespaces
        .delete("doomed", &DeleteParams::default())
        .await
        .unwrap();
    let ns = namespaces.get("doomed").await.unwrap();
    assert_eq!(
        ns.status.and_then(|s| s.phase).as_deref(),
        Some("Terminating"),
        "a deleted namespace stays, Terminating, until it is empty"
    );
    // New content is refused while it terminates.
    let refused = cms
        .create(
            &pp,
            &from_json(serde_json::json!({"metadata": {"name": "late"}})),
        )
        .await
        .unwrap_err();
    match refused {
        kube::Error::Api(s) => assert_eq!(s.code, 403, "{s:?}"),
        e => panic!("unexpected error {e}"),
    }

    // The config maps go; the held secret stays, reported by the conditions.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ns = namespaces.get("doomed").await.unwrap();
        let conditions = ns.status.and_then(|s| s.conditions).unwrap_or_default();
        let remaining = conditions
            .iter()
            .find(|c| c.type_ == "NamespaceFinalizersRemaining")
            .map(|c| (c.status.clone(), c.message.clone().unwrap_or_default()));
        if cms
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .is_empty()
            && remaining.as_ref().is_some_and(|(s, m)| {
                s == "True" && m.contains("example.com/hold in 1 resource instances")
            })
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "content not deleted: {conditions:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(namespaces.get_opt("doomed").await.unwrap().is_some());

    // Releasing the finalizer lets the namespace finish.
    secrets
        .patch(
            "held",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(serde_json::json!({"metadata": {"finalizers": null}})),
        )
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while let Some(ns) = namespaces.get_opt("doomed").await.unwrap() {
        assert!(
            Instant::now() < deadline,
            "namespace never went away: {ns:?}, secrets left: {:?}",
            secrets.list(&Default::default()).await.unwrap().items
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(neighbours.get_opt("keep").await.unwrap().is_some());

    shutdown.cancel();
    controller.await.unwrap();
    cluster.stop().await;
}
