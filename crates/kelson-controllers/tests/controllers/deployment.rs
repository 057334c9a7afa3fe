//! The Deployment controller (with the ReplicaSet controller under it)
//! against a real API server. A stand-in kubelet marks every new pod
//! Running and Ready through the status subresource.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use kelson_runtime::testing::TestCluster;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{watcher, WatchStreamExt};
use kube::ResourceExt;

use crate::support::{
    app_template, controller_ref, eventually, from_json, merge_patch, pod_is_ready, wait_event,
    wait_until, Harness,
};

const REVISION: &str = "deployment.kubernetes.io/revision";

/// Starts the ReplicaSet and Deployment controllers, and a stand-in kubelet.
async fn start() -> (Harness, Api<Deployment>, Api<ReplicaSet>) {
    let mut h = Harness::start().await;
    let admin = h.cluster.admin_client("test-kubelet").await.unwrap();
    h.spawn(kelson_controllers::replicaset::run(
        h.client.clone(),
        h.shutdown.clone(),
    ));
    h.spawn(kelson_controllers::deployment::run(
        h.client.clone(),
        h.shutdown.clone(),
    ));
    h.spawn(crate::support::kubelet(
        Api::namespaced(admin, "default"),
        ListParams::default(),
        h.shutdown.clone(),
    ));
    let (deploys, rss) = (h.api(), h.api());
    (h, deploys, rss)
}

fn deployment(name: &str, replicas: i32, strategy: serde_json::Value) -> Deployment {
    from_json(serde_json::json!({
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "strategy": strategy,
            "template": app_template(name)
        }
    }))
}

fn rolling(surge: i32, unavailable: i32) -> serde_json::Value {
    serde_json::json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavailable}})
}

/// Creates `d` and waits for its rollout to complete.
async fn create_complete(api: &Api<Deployment>, d: &Deployment) -> Deployment {
    api.create(&PostParams::default(), d).await.unwrap();
    wait_complete(api, &d.name_any()).await
}

/// What `kubectl rollout status` waits for.
fn rollout_complete(d: &Deployment) -> bool {
    let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let Some(st) = &d.status else {
        return false;
    };
    st.observed_generation >= d.metadata.generation
        && st.updated_replicas == Some(want)
        && st.replicas == Some(want)
        && st.available_replicas == Some(want)
}

async fn wait_complete(api: &Api<Deployment>, name: &str) -> Deployment {
    wait_until(api, name, 15, "rollout to complete", rollout_complete).await
}

/// Waits until the rollout of revision `revision` is complete.
async fn wait_revision(
    api: &Api<Deployment>,
    name: &str,
    revision: &str,
    what: &str,
) -> Deployment {
    wait_until(api, name, 15, what, |d| {
        rollout_complete(d) && d.annotations().get(REVISION).map(String::as_str) == Some(revision)
    })
    .await
}

async fn owned_rs(api: &Api<ReplicaSet>, d: &Deployment) -> Vec<ReplicaSet> {
    let uid = d.uid().unwrap();
    api.list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|rs| {
            rs.owner_references()
                .iter()
                .any(|r| r.uid == uid && r.controller == Some(true))
        })
        .collect()
}

fn annotation(rs: &ReplicaSet, key: &str) -> Option<String> {
    rs.annotations().get(key).cloned()
}

fn replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0)
}

fn condition(d: &Deployment, kind: &str) -> Option<(String, String)> {
    d.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == kind)
        .map(|c| (c.status.clone(), c.reason.clone().unwrap_or_default()))
}

fn set_image(image: &str) -> Patch<serde_json::Value> {
    Patch::Strategic(
        serde_json::json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "image": image}]}}}}),
    )
}

/// kubectl, when installed, run against the test cluster.
fn kubectl(cluster: &TestCluster, args: &[&str]) -> Option<std::process::Output> {
    let out = std::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&cluster.kubeconfig)
        .args(args)
        .output()
        .ok()?;
    Some(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creates_a_hashed_replica_set_and_completes() {
    let (h, deploys, rss) = start().await;
    let pods: Api<Pod> = h.api();
    let d = create_complete(&deploys, &deployment("web", 3, serde_json::json!({}))).await;
    let st = d.status.clone().unwrap();
    assert_eq!(
        (st.ready_replicas, st.unavailable_replicas.unwrap_or(0)),
        (Some(3), 0)
    );
    assert_eq!(d.annotations().get(REVISION).map(String::as_str), Some("1"));

    let owned = owned_rs(&rss, &d).await;
    assert_eq!(owned.len(), 1);
    let rs = &owned[0];
    let hash = rs.labels().get("pod-template-hash").cloned().unwrap();
    assert_eq!(rs.name_any(), format!("web-{hash}"));
    assert_eq!(
        rs.spec
            .as_ref()
            .unwrap()
            .selector
            .match_labels
            .as_ref()
            .unwrap()["pod-template-hash"],
        hash
    );
    assert_eq!(annotation(rs, REVISION).as_deref(), Some("1"));
    // maxSurge defaults to 25% of 3, rounded up: 1.
    assert_eq!(
        annotation(rs, "deployment.kubernetes.io/desired-replicas").as_deref(),
        Some("3")
    );
    assert_eq!(
        annotation(rs, "deployment.kubernetes.io/max-replicas").as_deref(),
        Some("4")
    );
    assert_eq!(controller_ref(rs).kind, "Deployment");
    let p = pods
        .list(&ListParams::default().labels(&format!("pod-template-hash={hash}")))
        .await
        .unwrap();
    assert_eq!(p.items.len(), 3);

    let d = wait_until(&deploys, "web", 10, "conditions", |d| {
        condition(d, "Progressing") == Some(("True".into(), "NewReplicaSetAvailable".into()))
    })
    .await;
    assert_eq!(
        condition(&d, "Available"),
        Some(("True".into(), "MinimumReplicasAvailable".into()))
    );
    let message = d
        .status
        .unwrap()
        .conditions
        .unwrap()
        .into_iter()
        .find(|c| c.type_ == "Progressing")
        .unwrap()
        .message;
    assert_eq!(
        message,
        Some(format!(
            "ReplicaSet \"web-{hash}\" has successfully progressed."
        ))
    );

    let want = format!("Scaled up replica set web-{hash} from 0 to 3");
    wait_event(&h.client, "web", 10, "ScalingReplicaSet", |m| m == want).await;

    if let Some(out) = kubectl(
        &h.cluster,
        &["rollout", "status", "deployment/web", "--timeout=10s"],
    ) {
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{stdout} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("successfully rolled out"), "{stdout}");
    }
    h.stop().await;
}

/// Tracks, from watches, the largest sum of replica-set sizes and the
/// fewest ready pods seen.
#[derive(Default)]
struct Bounds {
    sizes: HashMap<String, i32>,
    max_total: i32,
    ready: HashMap<String, bool>,
    min_ready: Option<usize>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_update_stays_within_surge_and_unavailability_then_rolls_back() {
    let (h, deploys, rss) = start().await;
    let d = create_complete(&deploys, &deployment("web", 3, rolling(1, 0))).await;
    let first = owned_rs(&rss, &d).await.remove(0);

    // Watch sizes and readiness for the whole update.
    let bounds = Arc::new(Mutex::new(Bounds::default()));
    let b = bounds.clone();
    let rs_watch = tokio::spawn(
        watcher(rss.clone(), watcher::Config::default())
            .applied_objects()
            .try_for_each(move |rs| {
                let mut b = b.lock().unwrap();
                b.sizes.insert(rs.name_any(), replicas(&rs));
                let total: i32 = b.sizes.values().sum();
                b.max_total = b.max_total.max(total);
                futures::future::ready(Ok(()))
            }),
    );
    let b = bounds.clone();
    let pods: Api<Pod> = h.api();
    let pod_watch = tokio::spawn(
        watcher(pods, watcher::Config::default()).for_each(move |ev| {
            let mut b = b.lock().unwrap();
            match ev {
                Ok(watcher::Event::Apply(p)) | Ok(watcher::Event::InitApply(p)) => {
                    let ready = p.metadata.deletion_timestamp.is_none() && pod_is_ready(&p);
                    b.ready.insert(p.name_any(), ready);
                }
                Ok(watcher::Event::Delete(p)) => {
                    b.ready.remove(&p.name_any());
                }
                _ => {}
            }
            if !b.ready.is_empty() {
                let now = b.ready.values().filter(|r| **r).count();
                b.min_ready = Some(b.min_ready.map_or(now, |m| m.min(now)));
            }
            futures::future::ready(())
        }),
    );
    eventually(5, "watches to start", || async {
        let b = bounds.lock().unwrap();
        (b.ready.len() == 3 && !b.sizes.is_empty()).then_some(())
    })
    .await;
    // Count from the complete initial state, not the partial initial list.
    {
        let mut b = bounds.lock().unwrap();
        b.min_ready = None;
        b.max_total = 0;
    }

    deploys
        .patch("web", &PatchParams::default(), &set_image("nginx:1.26"))
        .await
        .unwrap();
    let d = wait_revision(&deploys, "web", "2", "revision 2 complete").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    rs_watch.abort();
    pod_watch.abort();
    {
        let b = bounds.lock().unwrap();
        assert!(
            b.max_total <= 4,
            "replica sets summed to {} > replicas + maxSurge",
            b.max_total
        );
        assert!(b.max_total == 4, "the surge was used: {}", b.max_total);
        assert!(
            b.min_ready >= Some(3),
            "ready pods fell to {:?} with maxUnavailable 0",
            b.min_ready
        );
    }
    let owned = owned_rs(&rss, &d).await;
    assert_eq!(owned.len(), 2);
    let old = owned.iter().find(|rs| rs.uid() == first.uid()).unwrap();
    assert_eq!(replicas(old), 0);
    let new = owned.iter().find(|rs| rs.uid() != first.uid()).unwrap();
    assert_eq!(
        (replicas(new), annotation(new, REVISION).as_deref()),
        (3, Some("2"))
    );
    let want = format!("Scaled down replica set {} from 1 to 0", first.name_any());
    wait_event(&h.client, "web", 10, "ScalingReplicaSet", |m| m == want).await;

    // Roll back to revision 1: kubectl does it client-side, patching the
    // template back; without kubectl the test sends the same patch.
    let undone = kubectl(
        &h.cluster,
        &["rollout", "undo", "deployment/web", "--to-revision=1"],
    );
    match undone {
        Some(out) => assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        ),
        None => {
            let mut template = first.spec.clone().unwrap().template.unwrap();
            template
                .metadata
                .as_mut()
                .unwrap()
                .labels
                .as_mut()
                .unwrap()
                .remove("pod-template-hash");
            let patch =
                serde_json::json!([{"op": "replace", "path": "/spec/template", "value": template}]);
            deploys
                .patch(
                    "web",
                    &PatchParams::default(),
                    &Patch::<serde_json::Value>::Json(from_json(patch)),
                )
                .await
                .unwrap();
        }
    }
    let d = wait_revision(&deploys, "web", "3", "rollback complete").await;
    let owned = owned_rs(&rss, &d).await;
    assert_eq!(
        owned.len(),
        2,
        "the old replica set is reused, not recreated"
    );
    let back = owned.iter().find(|rs| rs.uid() == first.uid()).unwrap();
    assert_eq!(replicas(back), 3);
    assert_eq!(annotation(back, REVISION).as_deref(), Some("3"));
    assert_eq!(
        annotation(back, "deployment.kubernetes.io/revision-history").as_deref(),
        Some("1")
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recreate_removes_old_pods_before_creating_new_ones() {
    let (h, deploys, _) = start().await;
    let pods: Api<Pod> = h.api();
    create_complete(
        &deploys,
        &deployment("db", 2, serde_json::json!({"type": "Recreate"})),
    )
    .await;

    let mixed = Arc::new(Mutex::new(false));
    let m = mixed.clone();
    let live: Arc<Mutex<HashMap<String, String>>> = Arc::default();
    let watch = tokio::spawn(
        watcher(pods, watcher::Config::default()).for_each(move |ev| {
            let mut live = live.lock().unwrap();
            match ev {
                Ok(watcher::Event::Apply(p)) | Ok(watcher::Event::InitApply(p)) => {
                    let hash = p
                        .labels()
                        .get("pod-template-hash")
                        .cloned()
                        .unwrap_or_default();
                    live.insert(p.name_any(), hash);
                }
                Ok(watcher::Event::Delete(p)) => {
                    live.remove(&p.name_any());
                }
                _ => {}
            }
            let hashes: std::collections::HashSet<&String> = live.values().collect();
            if hashes.len() > 1 {
                *m.lock().unwrap() = true;
            }
            futures::future::ready(())
        }),
    );
    deploys
        .patch("db", &PatchParams::default(), &set_image("nginx:1.26"))
        .await
        .unwrap();
    wait_revision(&deploys, "db", "2", "recreate rollout").await;
    watch.abort();
    assert!(
        !*mixed.lock().unwrap(),
        "old and new pods ran at the same time"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_deployments_do_not_roll_out_until_resumed() {
    let (h, deploys, rss) = start().await;
    create_complete(&deploys, &deployment("api", 2, rolling(1, 0))).await;
    let pause = |p: bool| serde_json::json!({"spec": {"paused": p}});
    merge_patch(&deploys, "api", pause(true)).await;
    wait_until(&deploys, "api", 10, "paused condition", |d| {
        condition(d, "Progressing") == Some(("Unknown".into(), "DeploymentPaused".into()))
    })
    .await;
    deploys
        .patch("api", &PatchParams::default(), &set_image("nginx:1.26"))
        .await
        .unwrap();
    // The change is observed but not rolled out.
    let d = wait_until(&deploys, "api", 10, "paused change observed", |d| {
        d.status
            .as_ref()
            .is_some_and(|s| s.observed_generation == d.metadata.generation)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(
        owned_rs(&rss, &d).await.len(),
        1,
        "no new replica set while paused"
    );
    // Scaling still works while paused.
    merge_patch(
        &deploys,
        "api",
        serde_json::json!({"spec": {"replicas": 3}}),
    )
    .await;
    eventually(10, "paused scale", || async {
        let d = deploys.get("api").await.unwrap();
        let rs = owned_rs(&rss, &d).await;
        (rs.len() == 1 && replicas(&rs[0]) == 3).then_some(())
    })
    .await;

    merge_patch(&deploys, "api", pause(false)).await;
    let d = wait_revision(&deploys, "api", "2", "resumed rollout").await;
    assert_eq!(owned_rs(&rss, &d).await.len(), 2);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_and_history_limit() {
    let (h, deploys, rss) = start().await;
    let mut d = deployment("hist", 1, rolling(1, 0));
    d.spec.as_mut().unwrap().revision_history_limit = Some(1);
    create_complete(&deploys, &d).await;
    // Two image changes and a `kubectl rollout restart` (a template
    // annotation): four revisions, of which the current and one old stay.
    let restart = Patch::Strategic(
        serde_json::json!({"spec": {"template": {"metadata": {"annotations": {
            "kubectl.kubernetes.io/restartedAt": jiff::Timestamp::now().to_string()
        }}}}}),
    );
    let steps = [set_image("nginx:1.26"), set_image("nginx:1.27"), restart];
    for (i, patch) in steps.iter().enumerate() {
        deploys
            .patch("hist", &PatchParams::default(), patch)
            .await
            .unwrap();
        wait_revision(&deploys, "hist", &(i + 2).to_string(), "revision complete").await;
    }
    let d = deploys.get("hist").await.unwrap();
    let owned = eventually(10, "history trimmed to 1 old replica set", || async {
        let owned = owned_rs(&rss, &d).await;
        (owned.len() == 2).then_some(owned)
    })
    .await;
    let mut revisions: Vec<String> = owned
        .iter()
        .filter_map(|rs| annotation(rs, REVISION))
        .collect();
    revisions.sort();
    assert_eq!(revisions, ["3", "4"]);
    h.stop().await;
}
