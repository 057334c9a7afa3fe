//! Prefetching a pod's ConfigMaps, Secrets and Services from a real API
//! server, and the volumes and environment built from them.

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Secret, Service};
use kelson_kubelet::env::{service_env, EnvSources, NodeAllocatable};
use kelson_kubelet::sources;
use kelson_kubelet::volume_manager::setup_pod_volumes;
use kelson_kubelet::volumes::{FakeMounter, VolumeSources};
use kelson_runtime::testing::TestCluster;
use kube::api::{Api, PostParams};
use serde_json::{json, Value};

async fn create<K>(api: &Api<K>, v: Value)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let obj: K = serde_json::from_value(v).unwrap();
    api.create(&PostParams::default(), &obj).await.unwrap();
}

fn pod(ns: &str, links: Option<bool>) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": "web", "namespace": ns, "uid": "0b0b0b0b-1111-2222-3333-444444444444"},
        "spec": {
            "enableServiceLinks": links,
            "imagePullSecrets": [{"name": "regcred"}, {"name": "no-such-regcred"}],
            "containers": [{
                "name": "app", "image": "busybox",
                "env": [{"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "mode"}}}],
                "envFrom": [{"secretRef": {"name": "absent", "optional": true}}]
            }],
            "volumes": [
                {"name": "cfg", "configMap": {"name": "settings"}},
                {"name": "creds", "secret": {"secretName": "regcred"}}
            ]
        }
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefetch_reads_what_the_pod_references() {
    let cluster = TestCluster::start().await.unwrap();
    let client = cluster.admin_client("test").await.unwrap();
    let namespaces: Api<Namespace> = Api::all(client.clone());
    create(&namespaces, json!({"metadata": {"name": "shop"}})).await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "shop");
    create(
        &cms,
        json!({"metadata": {"name": "settings"}, "data": {"mode": "fast", "app.conf": "x=1"}}),
    )
    .await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "shop");
    create(
        &secrets,
        json!({"metadata": {"name": "regcred"}, "type": "kubernetes.io/dockerconfigjson",
               "data": {".dockerconfigjson": "e30="}}),
    )
    .await;
    let svcs: Api<Service> = Api::namespaced(client.clone(), "shop");
    create(
        &svcs,
        json!({"metadata": {"name": "cart"}, "spec": {"clusterIP": "10.43.0.50", "ports": [{"port": 8080}]}}),
    )
    .await;

    let p = pod("shop", None);
    let src = sources::prefetch(&client, &p).await;
    let cm = EnvSources::config_map(&src, "shop", "settings")
        .unwrap()
        .unwrap();
    assert_eq!(cm["mode"], "fast");
    assert_eq!(EnvSources::secret(&src, "shop", "absent"), Ok(None));
    assert!(VolumeSources::secret(&src, "shop", "regcred")
        .unwrap()
        .is_some());
    let pulls = src.pull_secrets();
    assert_eq!(pulls.len(), 1);
    assert_eq!(pulls[0].metadata.name.as_deref(), Some("regcred"));

    // Service links: the namespace's Services and default/kubernetes.
    assert!(src.services_error().is_none());
    let env = service_env(src.services(), "shop", true);
    assert!(env.contains_key("CART_SERVICE_HOST"), "{env:?}");
    assert_eq!(env["CART_SERVICE_PORT"], "8080");
    assert!(env.contains_key("KUBERNETES_SERVICE_HOST"), "{env:?}");

    // Without service links only the kubernetes Service remains.
    let src = sources::prefetch(&client, &pod("shop", Some(false))).await;
    let env = service_env(src.services(), "shop", false);
    assert!(env.contains_key("KUBERNETES_SERVICE_HOST"));
    assert!(!env.contains_key("CART_SERVICE_HOST"));

    // The volumes built from what was fetched.
    let root = tempfile::tempdir().unwrap();
    let src = sources::prefetch(&client, &p).await;
    let vols = setup_pod_volumes(
        root.path(),
        &p,
        &src,
        &NodeAllocatable::default(),
        &FakeMounter::default(),
    )
    .unwrap();
    let cfg = &vols.volumes["cfg"];
    assert!(cfg.read_only);
    assert_eq!(
        std::fs::read_to_string(cfg.host_path.join("app.conf")).unwrap(),
        "x=1"
    );
    assert_eq!(
        std::fs::read_to_string(vols.volumes["creds"].host_path.join(".dockerconfigjson")).unwrap(),
        "{}"
    );
    cluster.stop().await;
}
