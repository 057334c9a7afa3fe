//! The StatefulSet controller against a real API server. No kubelet runs:
//! the tests set pods Running/Ready through the status subresource, as
//! upstream's integration tests do, and hold pods in Terminating with a
//! finalizer to observe the order of deletions.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{ControllerRevision, StatefulSet, StatefulSetStatus};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::api::{Api, ListParams};
use kube::ResourceExt;

use crate::support::{
    controller_ref, create, events_for, eventually, live_pods_matching, merge_patch,
    patch_pod_status, pods_matching, set_ready, wait_events, wait_terminating, wait_until, Harness,
};

const HOLD: &str = "test.kelson.io/hold";

/// A cluster running the StatefulSet controller.
async fn start() -> (Harness, Api<StatefulSet>, Api<Pod>) {
    let mut h = Harness::start().await;
    h.spawn(kelson_controllers::statefulset::run(
        h.client.clone(),
        h.shutdown.clone(),
    ));
    let (sets, pods) = (h.api(), h.api());
    (h, sets, pods)
}

/// Creates StatefulSet `name` of `replicas` with `extra` in its spec.
async fn stateful_set(
    sets: &Api<StatefulSet>,
    name: &str,
    replicas: i32,
    extra: serde_json::Value,
) -> StatefulSet {
    let mut v = serde_json::json!({
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "serviceName": "nginx",
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "nginx", "image": "nginx:1.25"}]}
            }
        }
    });
    if let (Some(spec), serde_json::Value::Object(extra)) = (v["spec"].as_object_mut(), extra) {
        spec.extend(extra);
    }
    create(sets, v).await
}

fn claim_templates() -> serde_json::Value {
    serde_json::json!([{
        "metadata": {"name": "www"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}
    }])
}

fn by_name(pods: Vec<Pod>) -> BTreeMap<String, Pod> {
    pods.into_iter().map(|p| (p.name_any(), p)).collect()
}

/// Live (not terminating) pods of the set, by name.
async fn live_pods(api: &Api<Pod>, app: &str) -> BTreeMap<String, Pod> {
    by_name(live_pods_matching(api, &format!("app={app}")).await)
}

async fn all_pods(api: &Api<Pod>, app: &str) -> BTreeMap<String, Pod> {
    by_name(pods_matching(api, &format!("app={app}")).await)
}

fn names(m: &BTreeMap<String, Pod>) -> Vec<&str> {
    m.keys().map(String::as_str).collect()
}

fn revision_label(p: &Pod) -> String {
    p.labels()
        .get("controller-revision-hash")
        .cloned()
        .unwrap_or_default()
}

async fn scale(api: &Api<StatefulSet>, name: &str, n: i32) {
    merge_patch(api, name, serde_json::json!({"spec": {"replicas": n}})).await;
}

async fn set_finalizers(api: &Api<Pod>, name: &str, finalizers: &[&str]) {
    merge_patch(
        api,
        name,
        serde_json::json!({"metadata": {"finalizers": finalizers}}),
    )
    .await;
}

/// Waits until the set's status, once it reflects the latest spec,
/// satisfies `ok`.
async fn wait_status(
    sets: &Api<StatefulSet>,
    name: &str,
    secs: u64,
    what: &str,
    ok: impl Fn(&StatefulSetStatus) -> bool,
) -> StatefulSetStatus {
    let set = wait_until(sets, name, secs, what, |s| {
        s.status
            .as_ref()
            .is_some_and(|st| st.observed_generation == s.metadata.generation && ok(st))
    })
    .await;
    set.status.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordered_ready_creates_in_order_and_removes_in_reverse() {
    let (h, sets, pods) = start().await;
    let claims: Api<PersistentVolumeClaim> = h.api();
    let set = stateful_set(
        &sets,
        "web",
        3,
        serde_json::json!({"volumeClaimTemplates": claim_templates()}),
    )
    .await;
    let uid = set.uid().unwrap();

    // web-0 first, and nothing else until it is Running and Ready.
    let web0 = eventually(15, "web-0", || async {
        live_pods(&pods, "web").await.remove("web-0")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(names(&live_pods(&pods, "web").await), ["web-0"]);

    // Identity, storage and ownership.
    let labels = web0.labels();
    assert_eq!(labels["statefulset.kubernetes.io/pod-name"], "web-0");
    assert_eq!(labels["apps.kubernetes.io/pod-index"], "0");
    let rev = revision_label(&web0);
    assert!(rev.starts_with("web-"), "{rev}");
    let spec = web0.spec.clone().unwrap();
    assert_eq!(spec.hostname.as_deref(), Some("web-0"));
    assert_eq!(spec.subdomain.as_deref(), Some("nginx"));
    let vol = spec
        .volumes
        .unwrap()
        .into_iter()
        .find(|v| v.name == "www")
        .unwrap();
    assert_eq!(vol.persistent_volume_claim.unwrap().claim_name, "www-web-0");
    let owner = controller_ref(&web0);
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str(), owner.uid.as_str()),
        ("StatefulSet", "web", uid.as_str())
    );
    let pvc = claims.get("www-web-0").await.unwrap();
    assert_eq!(pvc.labels()["app"], "web");
    // Retain/Retain: the claim outlives the set, so nothing owns it.
    assert!(pvc.metadata.owner_references.unwrap_or_default().is_empty());

    let now = jiff::Timestamp::now();
    set_ready(&pods, "web-0", now).await;
    eventually(15, "web-1", || async {
        live_pods(&pods, "web").await.remove("web-1")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(names(&live_pods(&pods, "web").await), ["web-0", "web-1"]);
    set_ready(&pods, "web-1", now).await;
    eventually(15, "web-2", || async {
        live_pods(&pods, "web").await.remove("web-2")
    })
    .await;
    set_ready(&pods, "web-2", now).await;

    let st = wait_status(&sets, "web", 15, "status of 3 ready replicas", |st| {
        st.replicas == 3 && st.ready_replicas == Some(3) && st.available_replicas == Some(3)
    })
    .await;
    assert_eq!(st.current_replicas, Some(3));
    assert_eq!(st.updated_replicas, Some(3));
    assert_eq!(st.current_revision.as_deref(), Some(rev.as_str()));
    assert_eq!(st.update_revision.as_deref(), Some(rev.as_str()));
    assert_eq!(st.collision_count, Some(0));
    for n in ["www-web-1", "www-web-2"] {
        claims.get(n).await.unwrap();
    }
    let revs: Api<ControllerRevision> = h.api();
    let cr = revs.get(&rev).await.unwrap();
    assert_eq!(cr.revision, 1);
    assert_eq!(cr.metadata.owner_references.unwrap()[0].uid, uid);
    assert_eq!(cr.data.unwrap().0["spec"]["template"]["$patch"], "replace");

    // Scale down holds each pod in Terminating: the next one waits.
    for n in ["web-1", "web-2"] {
        set_finalizers(&pods, n, &[HOLD]).await;
    }
    scale(&sets, "web", 1).await;
    wait_terminating(&pods, "web-2", 15).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(pods
        .get("web-1")
        .await
        .unwrap()
        .metadata
        .deletion_timestamp
        .is_none());
    set_finalizers(&pods, "web-2", &[]).await;
    wait_terminating(&pods, "web-1", 15).await;
    set_finalizers(&pods, "web-1", &[]).await;
    eventually(15, "only web-0 left", || async {
        (names(&all_pods(&pods, "web").await) == ["web-0"]).then_some(())
    })
    .await;
    // Claims are retained on scale-down.
    claims.get("www-web-2").await.unwrap();

    let events = wait_events(&h.client, "web", 15, "events", |e| {
        let want = [
            (
                "SuccessfulCreate",
                "create Claim www-web-0 Pod web-0 in StatefulSet web success",
            ),
            (
                "SuccessfulCreate",
                "create Pod web-0 in StatefulSet web successful",
            ),
            (
                "SuccessfulCreate",
                "create Pod web-2 in StatefulSet web successful",
            ),
            (
                "SuccessfulDelete",
                "delete Pod web-2 in StatefulSet web successful",
            ),
            (
                "SuccessfulDelete",
                "delete Pod web-1 in StatefulSet web successful",
            ),
        ];
        want.iter()
            .all(|(r, m)| e.iter().any(|(er, em)| er == r && em == m))
    })
    .await;
    assert!(
        !events.iter().any(|(r, _)| r.starts_with("Failed")),
        "{events:?}"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_creates_at_once_recreates_failed_pods_and_sets_claim_owners() {
    let (h, sets, pods) = start().await;
    let claims: Api<PersistentVolumeClaim> = h.api();
    let set = stateful_set(
        &sets,
        "db",
        3,
        serde_json::json!({
            "podManagementPolicy": "Parallel",
            "ordinals": {"start": 5},
            "volumeClaimTemplates": claim_templates(),
            "persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Delete", "whenScaled": "Delete"}
        }),
    )
    .await;
    let uid = set.uid().unwrap();

    // All three at once, none ready, numbered from spec.ordinals.start.
    let created = eventually(15, "3 pods", || async {
        let p = live_pods(&pods, "db").await;
        (p.len() == 3).then_some(p)
    })
    .await;
    assert_eq!(names(&created), ["db-5", "db-6", "db-7"]);
    assert_eq!(
        created["db-6"].labels()["apps.kubernetes.io/pod-index"],
        "6"
    );

    // whenDeleted=Delete: the set owns the claims of its live pods.
    let pvc = wait_until(&claims, "www-db-7", 15, "claim owned by the set", |c| {
        c.owner_references()
            .iter()
            .any(|r| r.kind == "StatefulSet" && r.uid == uid)
    })
    .await;
    assert_eq!(pvc.metadata.owner_references.unwrap().len(), 1);

    // A failed pod is deleted and created again.
    let old_uid = created["db-5"].uid().unwrap();
    patch_pod_status(&pods, "db-5", serde_json::json!({"phase": "Failed"}))
        .await
        .unwrap();
    eventually(15, "db-5 recreated", || async {
        let p = live_pods(&pods, "db").await.remove("db-5")?;
        (p.uid().unwrap() != old_uid).then_some(())
    })
    .await;

    // whenScaled=Delete: the scaled-away pod's claim is handed to the pod
    // (the garbage collector deletes it with the pod).
    set_finalizers(&pods, "db-7", &[HOLD]).await;
    let db7_uid = pods.get("db-7").await.unwrap().uid().unwrap();
    scale(&sets, "db", 2).await;
    wait_until(
        &claims,
        "www-db-7",
        15,
        "claim of db-7 owned by the pod",
        |c| {
            let refs = c.owner_references();
            refs.len() == 1 && refs[0].kind == "Pod" && refs[0].uid == db7_uid
        },
    )
    .await;
    wait_terminating(&pods, "db-7", 15).await;
    set_finalizers(&pods, "db-7", &[]).await;

    // Parallel scale-down does not wait for readiness.
    scale(&sets, "db", 0).await;
    eventually(15, "no pods", || async {
        all_pods(&pods, "db").await.is_empty().then_some(())
    })
    .await;
    let st = wait_status(&sets, "db", 15, "status of 0 replicas", |st| {
        st.replicas == 0
    })
    .await;
    assert_eq!(st.ready_replicas.unwrap_or(0), 0);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_update_honours_partition_and_rollback_reuses_revision() {
    let (mut h, sets, pods) = start().await;
    h.spawn(crate::support::kubelet(
        h.api(),
        ListParams::default().labels("app=app"),
        h.shutdown.clone(),
    ));
    let revs: Api<ControllerRevision> = h.api();
    stateful_set(
        &sets,
        "app",
        3,
        serde_json::json!({
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 2}},
            "revisionHistoryLimit": 1
        }),
    )
    .await;
    let st = wait_status(&sets, "app", 30, "3 ready", |st| {
        st.ready_replicas == Some(3) && st.replicas == 3
    })
    .await;
    let old_rev = st.current_revision.clone().unwrap();
    assert_eq!(st.update_revision.as_deref(), Some(old_rev.as_str()));

    let image = |img: &str| serde_json::json!({"spec": {"template": {"spec": {"containers": [{"name": "nginx", "image": img}]}}}});
    merge_patch(&sets, "app", image("nginx:1.26")).await;
    // Only ordinals >= partition (2) move to the new revision.
    let st = wait_status(&sets, "app", 30, "partitioned rollout", |st| {
        st.updated_replicas == Some(1) && st.ready_replicas == Some(3)
    })
    .await;
    let new_rev = st.update_revision.clone().unwrap();
    assert_ne!(new_rev, old_rev);
    assert_eq!(st.current_revision.as_deref(), Some(old_rev.as_str()));
    assert_eq!(st.current_replicas, Some(2));
    let p = live_pods(&pods, "app").await;
    assert_eq!(revision_label(&p["app-2"]), new_rev);
    assert_eq!(
        p["app-2"].spec.as_ref().unwrap().containers[0]
            .image
            .as_deref(),
        Some("nginx:1.26")
    );
    for n in ["app-0", "app-1"] {
        assert_eq!(revision_label(&p[n]), old_rev, "{n}");
    }
    assert_eq!(revs.get(&new_rev).await.unwrap().revision, 2);

    // Partition 0: the rest follow, highest ordinal first, and the update
    // revision becomes the current one.
    merge_patch(
        &sets,
        "app",
        serde_json::json!({"spec": {"updateStrategy": {"rollingUpdate": {"partition": 0}}}}),
    )
    .await;
    let st = wait_status(&sets, "app", 30, "rollout complete", |st| {
        st.current_revision.as_deref() == Some(new_rev.as_str()) && st.ready_replicas == Some(3)
    })
    .await;
    assert_eq!(
        (st.current_replicas, st.updated_replicas),
        (Some(3), Some(3))
    );
    let p = live_pods(&pods, "app").await;
    assert!(p.values().all(|p| revision_label(p) == new_rev));

    // Undo (as kubectl rollout undo does: restore the old template): the old
    // revision is reused and renumbered as the newest.
    merge_patch(&sets, "app", image("nginx:1.25")).await;
    let st = wait_status(&sets, "app", 30, "rolled back", |st| {
        st.current_revision.as_deref() == Some(old_rev.as_str())
            && st.update_revision.as_deref() == Some(old_rev.as_str())
            && st.ready_replicas == Some(3)
    })
    .await;
    assert_eq!(st.updated_replicas, Some(3));
    assert_eq!(revs.get(&old_rev).await.unwrap().revision, 3);
    // revisionHistoryLimit 1: once a third template has rolled out, only
    // the live revision and the newest non-live one remain.
    merge_patch(&sets, "app", image("nginx:1.27")).await;
    let st = wait_status(&sets, "app", 30, "third rollout", |st| {
        st.current_revision == st.update_revision
            && st.current_revision.as_deref() != Some(old_rev.as_str())
            && st.ready_replicas == Some(3)
    })
    .await;
    let third = st.current_revision.unwrap();
    let left = eventually(15, "history truncated", || async {
        let all = revs
            .list(&ListParams::default().labels("app=app"))
            .await
            .ok()?;
        let mut n: Vec<(i64, String)> = all
            .items
            .iter()
            .map(|r| (r.revision, r.name_any()))
            .collect();
        n.sort();
        (n.len() == 2).then_some(n)
    })
    .await;
    assert_eq!(left, [(3, old_rev.clone()), (4, third)]);

    let events = events_for(&h.client, "app").await;
    assert!(
        events.iter().any(|(r, m)| r == "SuccessfulDelete"
            && m == "delete Pod app-2 in StatefulSet app successful"),
        "{events:?}"
    );
    h.stop().await;
}
