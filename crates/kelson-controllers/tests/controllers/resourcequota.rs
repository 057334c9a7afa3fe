//! The ResourceQuota controller against a real API server: status.hard
//! mirrors spec.hard and status.used follows the namespace's objects.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, ResourceQuota};
use kube::api::{Api, DeleteParams, Patch, PatchParams};

use crate::support::{create, create_namespace, merge_patch, patch_pod_status, Harness};

async fn start() -> Harness {
    let mut h = Harness::start().await;
    h.spawn(kelson_controllers::resourcequota::run(
        h.client.clone(),
        h.shutdown.clone(),
    ));
    h
}

async fn pod(pods: &Api<Pod>, name: &str, cpu: &str) -> Pod {
    create(
        pods,
        serde_json::json!({
            "metadata": {"name": name},
            "spec": {"containers": [{
                "name": "app", "image": "nginx:1.25",
                "resources": {"requests": {"cpu": cpu}}
            }]}
        }),
    )
    .await
}

/// status.hard and status.used as plain strings.
type Status = (BTreeMap<String, String>, BTreeMap<String, String>);

fn status_of(q: &ResourceQuota) -> Option<Status> {
    let s = q.status.as_ref()?;
    let plain =
        |m: &Option<BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>| {
            m.as_ref().map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.0.clone()))
                    .collect::<BTreeMap<_, _>>()
            })
        };
    Some((plain(&s.hard)?, plain(&s.used)?))
}

fn list(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Waits until quota `name` in `quotas`' namespace has status exactly
/// `hard` / `used`; on timeout fails showing the last status seen.
async fn converges(
    quotas: &Api<ResourceQuota>,
    name: &str,
    hard: &[(&str, &str)],
    used: &[(&str, &str)],
) {
    let want = Some((list(hard), list(used)));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let seen = status_of(&quotas.get(name).await.unwrap());
        if seen == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "quota {name}: wanted {want:?}, last saw {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn used_follows_pods_being_created_and_deleted() {
    let h = start().await;
    create_namespace(&h.client, "team-a").await;
    let quotas: Api<ResourceQuota> = Api::namespaced(h.client.clone(), "team-a");
    create(
        &quotas,
        serde_json::json!({
            "metadata": {"name": "compute"},
            "spec": {"hard": {"pods": "10", "requests.cpu": "2", "configmaps": "5"}}
        }),
    )
    .await;
    // An empty namespace: everything limited is used at zero. (Every
    // namespace gets a kube-root-ca.crt config map only from the service
    // account controller, which does not run here.)
    // The limits stay as created until the spec changes below.
    let hard = [("configmaps", "5"), ("pods", "10"), ("requests.cpu", "2")];
    converges(
        &quotas,
        "compute",
        &hard,
        &[("configmaps", "0"), ("pods", "0"), ("requests.cpu", "0")],
    )
    .await;

    let pods: Api<Pod> = Api::namespaced(h.client.clone(), "team-a");
    for (name, cpu) in [("a", "100m"), ("b", "250m"), ("c", "500m")] {
        pod(&pods, name, cpu).await;
    }
    let cms: Api<ConfigMap> = Api::namespaced(h.client.clone(), "team-a");
    create(&cms, serde_json::json!({"metadata": {"name": "settings"}})).await;
    // Pods elsewhere are not counted.
    pod(&h.api(), "elsewhere", "1").await;
    converges(
        &quotas,
        "compute",
        &hard,
        &[("configmaps", "1"), ("pods", "3"), ("requests.cpu", "850m")],
    )
    .await;

    // Deleting a pod gives its share back.
    pods.delete("b", &DeleteParams::default().grace_period(0))
        .await
        .unwrap();
    converges(
        &quotas,
        "compute",
        &hard,
        &[("configmaps", "1"), ("pods", "2"), ("requests.cpu", "600m")],
    )
    .await;

    // A finished pod no longer counts (its object still exists).
    patch_pod_status(&pods, "c", serde_json::json!({"phase": "Succeeded"}))
        .await
        .unwrap();
    converges(
        &quotas,
        "compute",
        &hard,
        &[("configmaps", "1"), ("pods", "1"), ("requests.cpu", "100m")],
    )
    .await;

    // Changing the limits: status.hard follows, new names get usage.
    merge_patch(
        &quotas,
        "compute",
        serde_json::json!({"spec": {"hard": {
            "pods": "4", "requests.cpu": null, "configmaps": null, "count/pods": "20"
        }}}),
    )
    .await;
    converges(
        &quotas,
        "compute",
        &[("count/pods", "20"), ("pods", "4")],
        &[("count/pods", "2"), ("pods", "1")],
    )
    .await;

    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_in_used_is_corrected() {
    let h = start().await;
    let quotas: Api<ResourceQuota> = h.api();
    create(
        &quotas,
        serde_json::json!({"metadata": {"name": "objects"},
                           "spec": {"hard": {"count/pods": "5", "count/replicasets.apps": "2"}}}),
    )
    .await;
    pod(&h.api(), "only", "10m").await;
    // A count/<resource>.<group> name is found through discovery.
    create(
        &h.api::<ReplicaSet>(),
        serde_json::json!({"metadata": {"name": "rs"}, "spec": {
            "replicas": 0,
            "selector": {"matchLabels": {"app": "rs"}},
            "template": crate::support::app_template("rs"),
        }}),
    )
    .await;
    converges(
        &quotas,
        "objects",
        &[("count/pods", "5"), ("count/replicasets.apps", "2")],
        &[("count/pods", "1"), ("count/replicasets.apps", "1")],
    )
    .await;

    // Someone writes a wrong usage; the next recount (here: the quota's
    // spec changing) puts it right.
    quotas
        .patch_status(
            "objects",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"status": {"used": {"count/pods": "4"}}})),
        )
        .await
        .unwrap();
    merge_patch(
        &quotas,
        "objects",
        serde_json::json!({"spec": {"hard": {"count/pods": "6"}}}),
    )
    .await;
    converges(
        &quotas,
        "objects",
        &[("count/pods", "6"), ("count/replicasets.apps", "2")],
        &[("count/pods", "1"), ("count/replicasets.apps", "1")],
    )
    .await;

    h.stop().await;
}
