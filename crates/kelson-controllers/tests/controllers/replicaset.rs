//! The ReplicaSet and ReplicationController controllers against a real API
//! server. No kubelet runs: the tests set pods Running/Ready through the
//! status subresource, as upstream's integration tests do.

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetStatus};
use k8s_openapi::api::core::v1::{Pod, ReplicationController};
use kube::api::{Api, DeleteParams, PostParams};
use kube::ResourceExt;

use crate::support::{
    app_template, controller_ref, eventually, from_json, live_pods_matching, merge_patch,
    set_ready, wait_events, wait_until, Harness,
};

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

/// Waits until the live pods matching `selector` number `n`, and returns
/// them.
async fn wait_pod_count(api: &Api<Pod>, selector: &str, n: usize) -> Vec<Pod> {
    eventually(10, &format!("{n} pods with {selector}"), || async {
        let p = live_pods_matching(api, selector).await;
        (p.len() == n).then_some(p)
    })
    .await
}

/// Waits until the status of ReplicaSet `name` satisfies `ok`.
async fn wait_status(
    rss: &Api<ReplicaSet>,
    name: &str,
    what: &str,
    ok: impl Fn(&ReplicaSet, &ReplicaSetStatus) -> bool,
) -> ReplicaSet {
    wait_until(rss, name, 10, what, |rs| {
        rs.status.as_ref().is_some_and(|st| ok(rs, st))
    })
    .await
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
    wait_status(&rss, "web", "observedGeneration", |rs, st| {
        st.observed_generation == rs.metadata.generation && st.replicas == 0
    })
    .await;

    let scale = |n: i32| serde_json::json!({"spec": {"replicas": n}});
    merge_patch(&rss, "web", scale(3)).await;
    let created = wait_pod_count(&pods, "app=web", 3).await;
    for p in &created {
        assert!(p.name_any().starts_with("web-"), "{}", p.name_any());
        assert_eq!(p.metadata.generate_name.as_deref(), Some("web-"));
        let owner = controller_ref(p);
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str(), owner.uid.as_str()),
            ("ReplicaSet", "web", uid.as_str())
        );
    }
    // No more than asked for, even after the controller looked again.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(live_pods_matching(&pods, "app=web").await.len(), 3);

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
    wait_status(&rss, "web", "2 ready replicas", |_, st| {
        st.ready_replicas == Some(2) && st.available_replicas == Some(2)
    })
    .await;
    merge_patch(&rss, "web", scale(1)).await;
    let left = wait_pod_count(&pods, "app=web", 1).await;
    assert_eq!(left[0].name_any(), names[0]);
    let rs = wait_status(&rss, "web", "status after scale-down", |rs, st| {
        st.observed_generation == rs.metadata.generation
            && st.replicas == 1
            && st.ready_replicas == Some(1)
    })
    .await;
    let st = rs.status.unwrap();
    assert_eq!(
        (st.fully_labeled_replicas, st.available_replicas),
        (Some(1), Some(1))
    );
    assert!(st.conditions.is_none(), "{:?}", st.conditions);

    let events = wait_events(&h.client, "web", 10, "events", |e| {
        let creates = e.iter().filter(|(r, _)| r == "SuccessfulCreate").count();
        let deletes = e.iter().filter(|(r, _)| r == "SuccessfulDelete").count();
        creates == 3 && deletes == 2
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
        let p = live_pods_matching(&pods, "app=api").await;
        let stray = p.iter().find(|p| p.name_any() == "stray")?;
        let refs = stray.metadata.owner_references.clone()?;
        (p.len() == 2 && refs.len() == 1 && refs[0].uid == uid).then_some(p)
    })
    .await;
    let stray = owned.iter().find(|p| p.name_any() == "stray").unwrap();
    controller_ref(stray);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        live_pods_matching(&pods, "app=api").await.len(),
        2,
        "the adopted pod counts"
    );

    // Relabelled out of the selector: released, and replaced.
    merge_patch(
        &pods,
        "stray",
        serde_json::json!({"metadata": {"labels": {"app": "elsewhere"}}}),
    )
    .await;
    eventually(10, "release and replacement", || async {
        let stray = pods.get("stray").await.unwrap();
        let released = stray
            .metadata
            .owner_references
            .as_ref()
            .is_none_or(|r| r.is_empty());
        (released && live_pods_matching(&pods, "app=api").await.len() == 2).then_some(())
    })
    .await;

    // A deleted pod is replaced by a new one.
    let before: BTreeSet<String> = live_pods_matching(&pods, "app=api")
        .await
        .iter()
        .map(|p| p.name_any())
        .collect();
    let victim = before.iter().next().unwrap().clone();
    pods.delete(&victim, &DeleteParams::default())
        .await
        .unwrap();
    let after = eventually(10, "replacement pod", || async {
        let now: BTreeSet<String> = live_pods_matching(&pods, "app=api")
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
    let created = wait_pod_count(&pods, "app=legacy", 2).await;
    for p in &created {
        set_ready(&pods, &p.name_any(), jiff::Timestamp::now()).await;
        let owner = &p.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.api_version.as_str(), owner.kind.as_str()),
            ("v1", "ReplicationController")
        );
    }
    wait_until(&rcs, "legacy", 10, "RC status", |rc| {
        rc.status.as_ref().is_some_and(|st| {
            st.replicas == 2
                && st.ready_replicas == Some(2)
                && st.available_replicas == Some(2)
                && st.observed_generation == rc.metadata.generation
        })
    })
    .await;
    h.stop().await;
}
