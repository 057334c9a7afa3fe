//! Node IPAM against a real API server: distinct ranges, restart safety,
//! exhaustion and release.

use std::collections::HashSet;

use k8s_openapi::api::core::v1::Node;
use kelson_controllers::nodeipam::{self, ClusterCidr};
use kelson_runtime::testing::TestCluster;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::Client;
use tokio_util::sync::CancellationToken;

use crate::support::{controller_manager_client, create_node, default_events, eventually};

async fn pod_cidr(client: &Client, name: &str) -> Option<String> {
    let nodes: Api<Node> = Api::all(client.clone());
    let spec = nodes.get(name).await.ok()?.spec?;
    assert_eq!(
        spec.pod_cidrs.clone().unwrap_or_default(),
        spec.pod_cidr.clone().into_iter().collect::<Vec<_>>(),
        "podCIDRs holds podCIDR"
    );
    spec.pod_cidr
}

async fn wait_cidr(client: &Client, name: &str) -> String {
    eventually(10, &format!("{name} to get a podCIDR"), || {
        pod_cidr(client, name)
    })
    .await
}

fn start(
    client: &Client,
) -> (
    CancellationToken,
    tokio::task::JoinHandle<Result<(), nodeipam::Error>>,
) {
    let shutdown = CancellationToken::new();
    let cidr = ClusterCidr {
        cidr: "10.42.0.0/22".into(),
        node_mask: 24,
    };
    let task = tokio::spawn(nodeipam::run(client.clone(), cidr, shutdown.clone()));
    (shutdown, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_get_distinct_ranges_that_survive_a_restart() {
    let cluster = TestCluster::start().await.unwrap();
    let client = controller_manager_client(&cluster).await;

    let (stop, task) = start(&client);
    for n in ["n0", "n1", "n2"] {
        create_node(&client, n).await;
    }
    let mut seen = HashSet::new();
    for n in ["n0", "n1", "n2"] {
        let c = wait_cidr(&client, n).await;
        assert!(c.starts_with("10.42.") && c.ends_with(".0/24"), "{c}");
        assert!(seen.insert(c), "ranges are distinct");
    }
    stop.cancel();
    task.await.unwrap().unwrap();

    // A node registered while IPAM is down gets the one range left after
    // the restart, not one of the three already handed out.
    create_node(&client, "n3").await;
    let (stop, task) = start(&client);
    let c3 = wait_cidr(&client, "n3").await;
    assert!(seen.insert(c3.clone()), "{c3} was already handed out");

    // The pool is empty: the next node waits, with an Event saying so.
    create_node(&client, "n4").await;
    eventually(10, "a CIDRNotAvailable event", || async {
        let found = default_events(&client).await.iter().any(|e| {
            e.involved_object.name.as_deref() == Some("n4")
                && e.reason.as_deref() == Some("CIDRNotAvailable")
                && e.message.as_deref() == Some("Node n4 status is now: CIDRNotAvailable")
        });
        found.then_some(())
    })
    .await;
    assert_eq!(pod_cidr(&client, "n4").await, None);
    // Node updates while the pool stays empty do not tell it again (each
    // used to go over every waiting node, with a warning and an Event).
    let nodes: Api<Node> = Api::all(client.clone());
    for i in 0..5 {
        let patch = serde_json::json!({"metadata": {"labels": {"touch": i.to_string()}}});
        nodes
            .patch("n4", &PatchParams::default(), &Patch::Merge(patch))
            .await
            .unwrap();
    }
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let told: i32 = default_events(&client)
        .await
        .iter()
        .filter(|e| {
            e.involved_object.name.as_deref() == Some("n4")
                && e.reason.as_deref() == Some("CIDRNotAvailable")
        })
        .map(|e| e.count.unwrap_or(1))
        .sum();
    assert_eq!(told, 1, "n4 heard once that no range is left");

    // Deleting a node frees its range for the waiting one.
    let freed = pod_cidr(&client, "n0").await.unwrap();
    nodes.delete("n0", &DeleteParams::default()).await.unwrap();
    assert_eq!(wait_cidr(&client, "n4").await, freed);

    stop.cancel();
    task.await.unwrap().unwrap();
    for n in ["n1", "n2", "n3", "n4"] {
        nodes.delete(n, &DeleteParams::default()).await.unwrap();
    }
    cluster.stop().await;
}

#[tokio::test]
async fn an_invalid_cluster_cidr_is_refused() {
    let cluster = TestCluster::start().await.unwrap();
    let client = cluster.admin_client("test").await.unwrap();
    let bad = ClusterCidr {
        cidr: "10.42.0.0/16".into(),
        node_mask: 8,
    };
    let r = nodeipam::run(client, bad, CancellationToken::new()).await;
    assert!(matches!(r, Err(nodeipam::Error::InvalidMask { .. })));
    cluster.stop().await;
}
