//! Default service accounts and the root CA ConfigMap in every namespace.

use k8s_openapi::api::core::v1::{ConfigMap, ServiceAccount};
use kelson_controllers::serviceaccount::{self, RootCa};
use kube::api::{Api, DeleteParams, Patch, PatchParams};

use crate::support::{create_namespace, eventually, Harness};

const PEM: &str = "-----BEGIN CERTIFICATE-----\nMIIBtest\n-----END CERTIFICATE-----\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_namespace_gets_a_default_account_and_the_root_ca() {
    let mut h = Harness::start().await;
    h.spawn(serviceaccount::run(
        h.client.clone(),
        RootCa { pem: PEM.into() },
        h.shutdown.clone(),
    ));

    create_namespace(&h.client, "team").await;
    let accounts: Api<ServiceAccount> = Api::namespaced(h.client.clone(), "team");
    let cms: Api<ConfigMap> = Api::namespaced(h.client.clone(), "team");

    let check = || async {
        let sa = accounts.get_opt("default").await.unwrap()?;
        let cm = cms.get_opt("kube-root-ca.crt").await.unwrap()?;
        let data = cm.data.clone().unwrap_or_default();
        (data.get("ca.crt").map(String::as_str) == Some(PEM)).then_some((sa, cm))
    };
    let (_, cm) = eventually(15, "default account and root CA in a new namespace", check).await;
    let desc = cm.metadata.annotations.unwrap_or_default();
    assert!(desc["kubernetes.io/description"]
        .starts_with("Contains a CA bundle that can be used to verify the kube-apiserver"));
    // Existing namespaces are covered too.
    let default_ns: Api<ServiceAccount> = h.api();
    eventually(15, "default account in default", || async {
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
    eventually(15, "both recreated", check).await;

    // Tampered: the CA is restored.
    cms.patch(
        "kube-root-ca.crt",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"data": {"ca.crt": "bogus"}})),
    )
    .await
    .unwrap();
    eventually(15, "CA restored", check).await;

    h.stop().await;
}
