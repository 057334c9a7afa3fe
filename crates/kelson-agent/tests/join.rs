//! Joining an in-process API server with the token from its node-token
//! file: the certificates work as the node's identity, which is limited to
//! the node itself; a token pinning another CA is refused before anything
//! is sent.

use std::net::{IpAddr, Ipv4Addr};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Secret};
use kelson_agent::join::{join, JoinError, NodeCredentials};
use kelson_runtime::testing::TestCluster;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

fn forbidden(e: kube::Error) -> String {
    match e {
        kube::Error::Api(s) if s.code == 403 => s.message,
        other => panic!("expected 403, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_with_the_node_token_then_act_as_the_node() {
    kelson_runtime::client::install_crypto_provider();
    let cluster = TestCluster::start().await.unwrap();
    let token =
        std::fs::read_to_string(cluster.dir.path().join("server").join("node-token")).unwrap();
    let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);

    let creds = join(&cluster.url, &token, "node-a", &[ip], "pw-a")
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    creds.save(dir.path()).unwrap();
    assert_eq!(
        NodeCredentials::load(dir.path()).unwrap(),
        Some(creds.clone())
    );

    let client = kelson_runtime::client::client_from_pem(
        &cluster.url,
        &creds.ca_pem,
        &creds.client_cert_pem,
        &creds.client_key_pem,
        "kelson-agent",
    )
    .await
    .unwrap();
    let nodes: Api<Node> = Api::all(client.clone());
    let node: Node = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": "node-a", "labels": {"kubernetes.io/hostname": "node-a"}}
    }))
    .unwrap();
    nodes.create(&PostParams::default(), &node).await.unwrap();

    // While node-a exists, only the machine that joined under its name
    // may join under it again (its node password).
    join(&cluster.url, &token, "node-a", &[ip], "pw-a")
        .await
        .expect("the same machine joins again");
    match join(&cluster.url, &token, "node-a", &[ip], "another-machine").await {
        Err(JoinError::Refused {
            status: 403,
            message,
        }) => assert!(message.contains("another node password"), "{message}"),
        other => panic!("expected 403, got {other:?}"),
    }
    let status = json!({"status": {"conditions": [{"type": "Ready", "status": "True",
        "reason": "KubeletReady", "message": "kubelet is posting ready status"}]}});
    let patched = nodes
        .patch_status("node-a", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
    assert_eq!(
        patched.status.unwrap().conditions.unwrap()[0]
            .reason
            .as_deref(),
        Some("KubeletReady")
    );

    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let lease: Lease = serde_json::from_value(json!({
        "metadata": {"name": "node-a"}, "spec": {"holderIdentity": "node-a", "leaseDurationSeconds": 40}
    }))
    .unwrap();
    leases.create(&PostParams::default(), &lease).await.unwrap();
    let mut other = lease.clone();
    other.metadata.name = Some("node-b".into());
    let msg = forbidden(
        leases
            .create(&PostParams::default(), &other)
            .await
            .unwrap_err(),
    );
    assert_eq!(
        msg,
        "leases.coordination.k8s.io \"node-b\" is forbidden: can only access node lease with the same name as the requesting node"
    );

    // Another node, created by the admin, is out of reach.
    let admin = cluster.admin_client("test").await.unwrap();
    let mut b = node.clone();
    b.metadata.name = Some("node-b".into());
    Api::<Node>::all(admin.clone())
        .create(&PostParams::default(), &b)
        .await
        .unwrap();
    let msg = forbidden(
        nodes
            .patch_status("node-b", &PatchParams::default(), &Patch::Merge(&status))
            .await
            .unwrap_err(),
    );
    assert_eq!(
        msg,
        "nodes \"node-b\" is forbidden: node \"node-a\" is not allowed to modify node \"node-b\""
    );

    // Secrets: none of its pods use this one, and listing is refused.
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "db"}, "stringData": {"password": "x"}
    }))
    .unwrap();
    Api::<Secret>::namespaced(admin.clone(), "default")
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let secrets: Api<Secret> = Api::namespaced(client, "default");
    assert_eq!(
        forbidden(secrets.get("db").await.unwrap_err()),
        "secrets \"db\" is forbidden: User \"system:node:node-a\" cannot get resource \"secrets\" in API group \"\" in the namespace \"default\": no relationship found between node 'node-a' and this object"
    );
    assert_eq!(
        forbidden(secrets.list(&ListParams::default()).await.unwrap_err()),
        "secrets is forbidden: User \"system:node:node-a\" cannot list resource \"secrets\" in API group \"\" in the namespace \"default\": No Object name found"
    );

    // Once the admin deletes node-a, a new machine may take its name.
    Api::<Node>::all(admin)
        .delete("node-a", &Default::default())
        .await
        .unwrap();
    let mut joined = None;
    for _ in 0..50 {
        // The delete reaches the join endpoint's cache a moment later.
        match join(&cluster.url, &token, "node-a", &[ip], "another-machine").await {
            Ok(c) => {
                joined = Some(c);
                break;
            }
            Err(JoinError::Refused { status: 403, .. }) => {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await
            }
            Err(e) => panic!("joining after the delete: {e}"),
        }
    }
    assert!(joined.is_some(), "still refused after the Node was deleted");
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_for_another_ca_or_secret_is_refused() {
    kelson_runtime::client::install_crypto_provider();
    let cluster = TestCluster::start().await.unwrap();
    let token =
        std::fs::read_to_string(cluster.dir.path().join("server").join("node-token")).unwrap();
    let secret = token.trim().rsplit(':').next().unwrap().to_string();
    let other_ca = format!("K10{}::server:{secret}", "0".repeat(64));
    match join(&cluster.url, &other_ca, "node-a", &[], "pw-a").await {
        Err(JoinError::CaHashMismatch { .. }) => {}
        other => panic!("expected a CA mismatch, got {other:?}"),
    }
    // The right CA with a wrong secret: the server says 401.
    let hash = token
        .trim()
        .strip_prefix("K10")
        .unwrap()
        .split("::")
        .next()
        .unwrap();
    let wrong = format!("K10{hash}::server:{}", "f".repeat(32));
    match join(&cluster.url, &wrong, "node-a", &[], "pw-a").await {
        Err(JoinError::Refused { status: 401, .. }) => {}
        other => panic!("expected 401, got {other:?}"),
    }
    // A bare secret is accepted without pinning.
    let creds = join(&cluster.url, &secret, "node-c", &[], "pw-c")
        .await
        .unwrap();
    assert!(creds.client_cert_pem.contains("BEGIN CERTIFICATE"));
    cluster.stop().await;
}
