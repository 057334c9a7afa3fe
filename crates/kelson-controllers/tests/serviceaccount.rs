//! Default service accounts and the root CA ConfigMap in every namespace.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, ServiceAccount};
use kelson_controllers::serviceaccount::{self, RootCa};
use kelson_runtime::testing::TestCluster;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use tokio_util::sync::CancellationToken;

const PEM: &str = "-----BEGIN CERTIFICATE-----\nMIIBtest\n-----END CERTIFICATE-----\n";

async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_namespace_gets_a_default_account_and_the_root_ca() {
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
    let controller = tokio::spawn(serviceaccount::run(
        client.clone(),
        RootCa { pem: PEM.into() },
        shutdown.clone(),
    ));

    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace =
        serde_json::from_value(serde_json::json!({"metadata": {"name": "team"}})).unwrap();
    namespaces
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), "team");
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "team");

    let check = || async {
        let sa = accounts.get_opt("default").await.unwrap()?;
        let cm = cms.get_opt("kube-root-ca.crt").await.unwrap()?;
        let data = cm.data.clone().unwrap_or_default();
        (data.get("ca.crt").map(String::as_str) == Some(PEM)).then_some((sa, cm))
    };
    let (_, cm) = eventually("default account and root CA in a new namespace", check).await;
    let desc = cm.metadata.annotations.unwrap_or_default();
    assert!(desc["kubernetes.io/description"]
        .starts_with("Contains a CA bundle that can be used to verify the kube-apiserver"));
    // Existing namespaces are covered too.
    let default_ns: Api<ServiceAccount> = Api::namespaced(client.clone(), "default");
    eventually("default account in default", || async {
        default_ns.get_opt("default").await.unwrap()
    })
    .await;

    // Deleted: they come back.
    accounts
        .delete("default", &DeleteParams::default())
        .await
        .unwrap();
    cms.delete("kube-root-ca.crt", &DeleteParams::default())
        .await
        .unwrap();
    eventually("both recreated", check).await;

    // Tampered: the CA is restored.
    cms.patch(
        "kube-root-ca.crt",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"data": {"ca.crt": "bogus"}})),
    )
    .await
    .unwrap();
    eventually("CA restored", check).await;

    shutdown.cancel();
    controller.await.unwrap();
    cluster.stop().await;
}
