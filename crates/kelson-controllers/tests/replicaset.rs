//! The ReplicaSet and ReplicationController controllers against a real API
//! server. No kubelet runs: the tests set pods Running/Ready through the
//! status subresource, as upstream's integration tests do.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{Pod, ReplicationController};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};

use support::{app_template, default_events, eventually, from_json, set_ready, Harness};

/// Starts the ReplicaSet and ReplicationController controllers.
async fn start() -> Harness {
    let mut h = Harness::start().await;
    h.spawn(kelson_controllers::replicaset::run(
        h.client.clone(),
        h.shutdown.clone(),
    ));
    h.spawn(kelson_controllers::replicaset::run_replication_controllers(
        h.client.clone(),
        h.shutdown.clone(),
    ));
    h
}

async fn pods_with(api: &Api<Pod>, selector: &str) -> Vec<Pod> {
    api.list(&ListParams::default().labels(selector))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect()
}

async fn events_for(client: &Client, name: &str) -> Vec<(String, String)> {
    default_events(client)
        .await
        .into_iter()
        .filter(|e| e.involved_object.name.as_deref() == Some(name))
        .map(|e| (e.reason.unwrap_or_default(), e.message.unwrap_or_default()))
        .collect()
}

fn replica_set(name: &str, app: &str, replicas: i32) -> ReplicaSet {
    from_json(serde_json::json!({
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": app}},
            "template": app_template(app)
        }
    }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scales_up_then_down_deleting_the_least_valuable_pods() {
    let h = start().await;
    let rss: Api<ReplicaSet> = h.api();
    let pods: Api<Pod> = h.api();
    let rs = rss
        .create(&PostParams::default(), &replica_set("web", "web", 0))
        .await
        .unwrap();
    let uid = rs.uid().unwrap();
    eventually(10, "observedGeneration", || async {
        let rs = rss.get("web").await.unwrap();
        let st = rs.status?;
        (st.observed_generation == rs.metadata.generation && st.replicas == 0).then_some(())
    })
    .await;

    let scale = |n: i32| Patch::Merge(serde_json::json!({"spec": {"replicas": n}}));
    rss.patch("web", &PatchParams::default(), &scale(3))
        .await
        .unwrap();
    let created = eventually(10, "3 pods", || async {
        let p = pods_with(&pods, "app=web").await;
        (p.len() == 3).then_some(p)
    })
    .await;
    for p in &created {
        assert!(p.name_any().starts_with("web-"), "{}", p.name_any());
        assert_eq!(p.metadata.generate_name.as_deref(), Some("web-"));
        let owner = &p.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str(), owner.uid.as_str()),
            ("ReplicaSet", "web", uid.as_str())
        );
        assert_eq!(
            (owner.controller, owner.block_owner_deletion),
            (Some(true), Some(true))
        );
    }
    // No more than asked for, even after the controller looked again.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(pods_with(&pods, "app=web").await.len(), 3);

    // One pod ready for an hour, one just ready, one still pending: scaling
    // to 1 keeps the long-ready one.
    let names: Vec<String> = created.iter().map(|p| p.name_any()).collect();
    let now = jiff::Timestamp::now();
    set_ready(
        &pods,
        &names[0],
        now - jiff::SignedDuration::from_secs(3600),
    )
    .await;
    set_ready(&pods, &names[1], now).await;
    eventually(10, "2 ready replicas", || async {
        let st = rss.get("web").await.unwrap().status?;
        (st.ready_replicas == Some(2) && st.available_replicas == Some(2)).then_some(())
    })
    .await;
    rss.patch("web", &PatchParams::default(), &scale(1))
        .await
        .unwrap();
    let left = eventually(10, "1 pod", || async {
        let p = pods_with(&pods, "app=web").await;
        (p.len() == 1).then_some(p)
    })
    .await;
    assert_eq!(left[0].name_any(), names[0]);
    let rs = eventually(10, "status after scale-down", || async {
        let rs = rss.get("web").await.unwrap();
        let st = rs.status.clone()?;
        (st.observed_generation == rs.metadata.generation
            && st.replicas == 1
            && st.ready_replicas == Some(1))
        .then_some(rs)
    })
    .await;
    let st = rs.status.unwrap();
    assert_eq!(
        (st.fully_labeled_replicas, st.available_replicas),
        (Some(1), Some(1))
    );
    assert!(st.conditions.is_none(), "{:?}", st.conditions);

    let events = eventually(10, "events", || async {
        let e = events_for(&h.client, "web").await;
        let creates = e.iter().filter(|(r, _)| r == "SuccessfulCreate").count();
        let deletes = e.iter().filter(|(r, _)| r == "SuccessfulDelete").count();
        (creates == 3 && deletes == 2).then_some(e)
    })
    .await;
    for n in &names {
        assert!(
            events
                .iter()
                .any(|(r, m)| r == "SuccessfulCreate" && m == &format!("Created pod: {n}")),
            "{events:?}"
        );
    }
    for n in &names[1..] {
        assert!(
            events
                .iter()
                .any(|(r, m)| r == "SuccessfulDelete" && m == &format!("Deleted pod: {n}")),
            "{events:?}"
        );
    }
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adopts_matching_orphans_releases_mismatches_and_replaces_deleted_pods() {
    let h = start().await;
    let rss: Api<ReplicaSet> = h.api();
    let pods: Api<Pod> = h.api();
    let pp = PostParams::default();
    pods.create(
        &pp,
        &from_json(serde_json::json!({
            "metadata": {"name": "stray", "labels": {"app": "api"}},
            "spec": {"containers": [{"name": "app", "image": "nginx:1.25"}]}
        })),
    )
    .await
    .unwrap();
    let rs = rss
        .create(&pp, &replica_set("api", "api", 2))
        .await
        .unwrap();
    let uid = rs.uid().unwrap();
    let owned = eventually(10, "orphan adopted plus one created", || async {
        let p = pods_with(&pods, "app=api").await;
        let stray = p.iter().find(|p| p.name_any() == "stray")?;
        let refs = stray.metadata.owner_references.clone()?;
        (p.len() == 2 && refs.len() == 1 && refs[0].uid == uid).then_some(p)
    })
    .await;
    let stray = owned.iter().find(|p| p.name_any() == "stray").unwrap();
    let r = &stray.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (r.controller, r.block_owner_deletion),
        (Some(true), Some(true))
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        pods_with(&pods, "app=api").await.len(),
        2,
        "the adopted pod counts"
    );

    // Relabelled out of the selector: released, and replaced.
    pods.patch(
        "stray",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"metadata": {"labels": {"app": "elsewhere"}}})),
    )
    .await
    .unwrap();
    eventually(10, "release and replacement", || async {
        let stray = pods.get("stray").await.unwrap();
        let released = stray
            .metadata
            .owner_references
            .as_ref()
            .is_none_or(|r| r.is_empty());
        (released && pods_with(&pods, "app=api").await.len() == 2).then_some(())
    })
    .await;

    // A deleted pod is replaced by a new one.
    let before: BTreeSet<String> = pods_with(&pods, "app=api")
        .await
        .iter()
        .map(|p| p.name_any())
        .collect();
    let victim = before.iter().next().unwrap().clone();
    pods.delete(&victim, &DeleteParams::default())
        .await
        .unwrap();
    let after = eventually(10, "replacement pod", || async {
        let now: BTreeSet<String> = pods_with(&pods, "app=api")
            .await
            .iter()
            .map(|p| p.name_any())
            .collect();
        (now.len() == 2 && !now.contains(&victim)).then_some(now)
    })
    .await;
    assert_eq!(after.intersection(&before).count(), 1);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replication_controllers_keep_their_replicas() {
    let h = start().await;
    let rcs: Api<ReplicationController> = h.api();
    let pods: Api<Pod> = h.api();
    rcs.create(
        &PostParams::default(),
        &from_json(serde_json::json!({
            "metadata": {"name": "legacy"},
            "spec": {
                "replicas": 2,
                "selector": {"app": "legacy"},
                "template": app_template("legacy")
            }
        })),
    )
    .await
    .unwrap();
    let created = eventually(10, "2 pods", || async {
        let p = pods_with(&pods, "app=legacy").await;
        (p.len() == 2).then_some(p)
    })
    .await;
    for p in &created {
        set_ready(&pods, &p.name_any(), jiff::Timestamp::now()).await;
        let owner = &p.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.api_version.as_str(), owner.kind.as_str()),
            ("v1", "ReplicationController")
        );
    }
    eventually(10, "RC status", || async {
        let rc = rcs.get("legacy").await.unwrap();
        let st = rc.status?;
        (st.replicas == 2
            && st.ready_replicas == Some(2)
            && st.available_replicas == Some(2)
            && st.observed_generation == rc.metadata.generation)
            .then_some(())
    })
    .await;
    h.stop().await;
}
