//! The garbage collector against a real API server: background, foreground
//! and orphan propagation through ownerReferences.

use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kelson_controllers::garbagecollector::{self, GcOptions};
use kube::api::{Api, DeleteParams};

use crate::support::{clear_finalizers, create, eventually, wait_gone, wait_until, Harness};

/// Starts the garbage collector with its default options.
async fn start() -> Harness {
    let mut h = Harness::start().await;
    h.spawn(garbagecollector::run(
        h.client.clone(),
        GcOptions::default(),
        h.shutdown.clone(),
    ));
    h
}

async fn config_map(api: &Api<ConfigMap>, name: &str, owners: &[(&ConfigMap, bool)]) -> ConfigMap {
    let refs: Vec<_> = owners
        .iter()
        .map(|(o, block)| {
            serde_json::json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "name": o.metadata.name, "uid": o.metadata.uid,
                "blockOwnerDeletion": block,
            })
        })
        .collect();
    create(
        api,
        serde_json::json!({
            "metadata": {"name": name, "ownerReferences": refs},
            "data": {"k": "v"},
        }),
    )
    .await
}

fn owner_names(cm: &ConfigMap) -> Vec<String> {
    cm.metadata
        .owner_references
        .iter()
        .flatten()
        .map(|o| o.name.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_deletion_removes_dependents_but_keeps_those_with_other_owners() {
    let h = start().await;
    let cms: Api<ConfigMap> = h.api();
    let owner = config_map(&cms, "owner", &[]).await;
    let other = config_map(&cms, "other", &[]).await;
    config_map(&cms, "only-child", &[(&owner, false)]).await;
    config_map(&cms, "shared-child", &[(&owner, true), (&other, false)]).await;
    config_map(&cms, "unrelated", &[(&other, false)]).await;

    cms.delete("owner", &DeleteParams::default()).await.unwrap();
    wait_gone(&cms, "only-child", 15).await;
    let shared = wait_until(
        &cms,
        "shared-child",
        15,
        "shared-child loses its dangling reference",
        |cm| owner_names(cm) == ["other"],
    )
    .await;
    assert!(shared.metadata.deletion_timestamp.is_none());
    assert!(cms.get_opt("unrelated").await.unwrap().is_some());
    assert!(cms.get_opt("other").await.unwrap().is_some());

    // A dependent created after its owner is gone is collected too.
    let gone = owner;
    config_map(&cms, "late-child", &[(&gone, false)]).await;
    wait_gone(&cms, "late-child", 15).await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreground_deletion_removes_dependents_before_the_owner() {
    let h = start().await;
    let cms: Api<ConfigMap> = h.api();
    let owner = config_map(&cms, "fg-owner", &[]).await;
    config_map(&cms, "fg-plain", &[(&owner, true)]).await;
    // A finalizer keeps this blocking dependent around until released.
    create(
        &cms,
        serde_json::json!({
            "metadata": {"name": "fg-held", "finalizers": ["example.com/hold"], "ownerReferences": [{
                "apiVersion": "v1", "kind": "ConfigMap", "name": "fg-owner",
                "uid": owner.metadata.uid, "blockOwnerDeletion": true,
            }]},
        }),
    )
    .await;

    cms.delete("fg-owner", &DeleteParams::foreground())
        .await
        .unwrap();
    eventually(15, "fg-plain deleted and fg-held terminating", || async {
        let plain = cms.get_opt("fg-plain").await.unwrap();
        let held = cms.get("fg-held").await.unwrap();
        (plain.is_none() && held.metadata.deletion_timestamp.is_some()).then_some(())
    })
    .await;
    // The owner waits for its blocking dependent.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let o = cms.get("fg-owner").await.unwrap();
    assert!(o.metadata.deletion_timestamp.is_some());
    assert_eq!(
        o.metadata.finalizers.as_deref(),
        Some(&["foregroundDeletion".to_string()][..])
    );

    clear_finalizers(&cms, "fg-held").await;
    wait_gone(&cms, "fg-owner", 15).await;
    assert!(cms.get_opt("fg-held").await.unwrap().is_none());
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphan_deletion_keeps_dependents_without_the_reference() {
    let h = start().await;
    let cms: Api<ConfigMap> = h.api();
    let owner = config_map(&cms, "or-owner", &[]).await;
    let keep = config_map(&cms, "or-keep", &[]).await;
    config_map(&cms, "or-a", &[(&owner, true)]).await;
    config_map(&cms, "or-b", &[(&owner, false), (&keep, false)]).await;

    cms.delete("or-owner", &DeleteParams::orphan())
        .await
        .unwrap();
    wait_gone(&cms, "or-owner", 15).await;
    let a = cms.get("or-a").await.unwrap();
    assert!(owner_names(&a).is_empty(), "{a:?}");
    assert!(a.metadata.deletion_timestamp.is_none());
    let b = cms.get("or-b").await.unwrap();
    assert_eq!(owner_names(&b), ["or-keep"]);
    // Nothing collects the orphans afterwards.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(cms.get_opt("or-a").await.unwrap().is_some());
    h.stop().await;
}
