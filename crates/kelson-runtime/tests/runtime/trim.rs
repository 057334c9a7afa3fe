//! Component clients never see managedFields; the server still keeps them,
//! also across a write-back of an object read through such a client.

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kelson_runtime::testing::TestCluster;
use kube::api::{ListParams, PostParams, WatchEvent, WatchParams};
use kube::Api;

/// A stock kube-rs client: shows what the server really stores.
async fn plain_client(cluster: &TestCluster) -> kube::Client {
    let kubeconfig = kube::config::Kubeconfig::read_from(&cluster.kubeconfig).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    kube::Client::try_from(config).unwrap()
}

fn managers(cm: &ConfigMap) -> Vec<String> {
    let mut m: Vec<String> = cm
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter_map(|e| e.manager.clone())
        .collect();
    m.sort();
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn component_clients_read_objects_without_managed_fields() {
    let cluster = TestCluster::start().await.unwrap();
    let component = cluster.admin_client("kelson-test").await.unwrap();
    let plain: Api<ConfigMap> = Api::namespaced(plain_client(&cluster).await, "default");
    let cms: Api<ConfigMap> = Api::namespaced(component, "default");

    let created = cms
        .create(
            &PostParams::default(),
            &ConfigMap {
                metadata: ObjectMeta {
                    name: Some("trimmed".into()),
                    ..Default::default()
                },
                data: Some([("managedFields".to_string(), "kept".to_string())].into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(created.metadata.managed_fields, None);
    // A data key of the same name is data, not metadata.
    assert_eq!(created.data.as_ref().unwrap()["managedFields"], "kept");
    assert_eq!(
        managers(&plain.get("trimmed").await.unwrap()),
        ["kelson-test"]
    );

    let mut watch = cms
        .watch(
            &WatchParams::default().fields("metadata.name=trimmed"),
            &created.metadata.resource_version.clone().unwrap(),
        )
        .await
        .unwrap()
        .boxed();

    // A write-back of the trimmed object keeps the stored entries and adds
    // the writer's own.
    let mut fetched = cms.get("trimmed").await.unwrap();
    assert_eq!(fetched.metadata.managed_fields, None);
    fetched
        .data
        .as_mut()
        .unwrap()
        .insert("more".into(), "x".into());
    let writer: Api<ConfigMap> = Api::namespaced(
        cluster.admin_client("kelson-other").await.unwrap(),
        "default",
    );
    let replaced = writer
        .replace("trimmed", &PostParams::default(), &fetched)
        .await
        .unwrap();
    assert_eq!(replaced.metadata.managed_fields, None);
    assert_eq!(
        managers(&plain.get("trimmed").await.unwrap()),
        ["kelson-other", "kelson-test"]
    );

    match watch.try_next().await.unwrap() {
        Some(WatchEvent::Modified(cm)) => {
            assert_eq!(cm.metadata.managed_fields, None);
            assert_eq!(cm.data.unwrap()["more"], "x");
        }
        other => panic!("expected MODIFIED, got {other:?}"),
    }
    let listed = cms.list(&ListParams::default()).await.unwrap();
    assert!(!listed.items.is_empty());
    assert!(listed
        .items
        .iter()
        .all(|c| c.metadata.managed_fields.is_none()));
    let stored = plain.list(&ListParams::default()).await.unwrap();
    assert!(stored
        .items
        .iter()
        .any(|c| c.metadata.managed_fields.is_some()));
    cluster.stop().await;
}
