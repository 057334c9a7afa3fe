//! Namespace deletion against a real API server: everything in the
//! namespace goes, then the namespace itself.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use kube::api::{Api, DeleteParams, PostParams};

use crate::support::{clear_finalizers, create, create_namespace, from_json, Harness};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_namespace_removes_its_content_then_the_namespace() {
    let mut h = Harness::start().await;
    h.spawn(kelson_controllers::namespace::run(
        h.client.clone(),
        h.shutdown.clone(),
    ));

    let namespaces: Api<Namespace> = Api::all(h.client.clone());
    create_namespace(&h.client, "doomed").await;
    let cms: Api<ConfigMap> = Api::namespaced(h.client.clone(), "doomed");
    for i in 0..3 {
        create(
            &cms,
            serde_json::json!({"metadata": {"name": format!("cm-{i}")}, "data": {"k": "v"}}),
        )
        .await;
    }
    let secrets: Api<Secret> = Api::namespaced(h.client.clone(), "doomed");
    // A finalizer holds this one until the test removes it: the namespace
    // must wait for it and say so in its conditions.
    create(
        &secrets,
        serde_json::json!({"metadata": {"name": "held", "finalizers": ["example.com/hold"]}}),
    )
    .await;
    // A neighbour namespace must be left alone.
    let neighbours: Api<ConfigMap> = h.api();
    create(
        &neighbours,
        serde_json::json!({"metadata": {"name": "keep"}}),
    )
    .await;

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
            &PostParams::default(),
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
    clear_finalizers(&secrets, "held").await;
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

    h.stop().await;
}
