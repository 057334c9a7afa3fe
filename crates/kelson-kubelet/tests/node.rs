//! Node registration, status and Lease against a real API server.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, NodeCondition};
use kelson_kubelet::node::{
    self, NodeConfig, RuntimeCondition, RuntimeStatusSource, StatusTiming, KUBELET_VERSION,
};
use kelson_runtime::testing::TestCluster;
use kube::api::{Api, Patch, PatchParams};
use kube::Client;
use serde_json::json;
use tokio_util::sync::CancellationToken;

/// A runtime whose network readiness the test sets.
struct FakeRuntime {
    network_ready: AtomicBool,
}

#[async_trait::async_trait]
impl RuntimeStatusSource for FakeRuntime {
    async fn runtime_conditions(&self) -> Result<Vec<RuntimeCondition>, String> {
        let net = self.network_ready.load(Ordering::SeqCst);
        Ok(vec![
            RuntimeCondition {
                type_: "RuntimeReady".into(),
                status: true,
                reason: String::new(),
                message: String::new(),
            },
            RuntimeCondition {
                type_: "NetworkReady".into(),
                status: net,
                reason: if net { "" } else { "NetworkPluginNotReady" }.into(),
                message: if net {
                    ""
                } else {
                    "Network plugin returns error: cni plugin not initialized"
                }
                .into(),
            },
        ])
    }
}

fn config(root: &std::path::Path, labels: &[(&str, &str)]) -> NodeConfig {
    NodeConfig {
        name: "node-a".into(),
        node_ip: IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)),
        kubelet_port: 10250,
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        max_pods: 110,
        root_dir: root.to_path_buf(),
    }
}

fn fast() -> StatusTiming {
    StatusTiming {
        update: Duration::from_millis(200),
        report: Duration::from_secs(300),
        lease_renew: Duration::from_millis(300),
        lease_duration_seconds: 40,
    }
}

async fn eventually<T, F, Fut>(secs: u64, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn ready(node: &Node) -> NodeCondition {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready").cloned())
        .expect("a Ready condition")
}

async fn kubelet_client(cluster: &TestCluster) -> Client {
    cluster
        .component_client("system:node:node-a", &["system:nodes"], "kubelet")
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registers_reports_ready_and_renews_its_lease() {
    let cluster = TestCluster::start().await.unwrap();
    let client = kubelet_client(&cluster).await;
    let root = tempfile::tempdir().unwrap();
    let cfg = config(root.path(), &[("tier", "edge")]);

    let node = node::register(&client, &cfg, "containerd://1.7.24")
        .await
        .unwrap();
    let labels = node.metadata.labels.clone().unwrap();
    assert_eq!(labels["kubernetes.io/hostname"], "node-a");
    assert_eq!(labels["kubernetes.io/os"], "linux");
    assert_eq!(labels["kubernetes.io/arch"], node::go_arch());
    assert_eq!(labels["beta.kubernetes.io/os"], "linux");
    assert_eq!(labels["tier"], "edge");
    let status = node.status.clone().unwrap();
    let cap = status.capacity.clone().unwrap();
    for r in ["cpu", "memory", "ephemeral-storage", "pods"] {
        assert!(cap.contains_key(r), "capacity has {r}: {cap:?}");
    }
    assert_eq!(cap["pods"].0, "110");
    assert!(cap["memory"].0.ends_with("Ki"), "{:?}", cap["memory"]);
    let alloc = status.allocatable.clone().unwrap();
    assert_ne!(alloc["memory"], cap["memory"]);
    let addrs = status.addresses.clone().unwrap();
    assert_eq!(
        (addrs[0].type_.as_str(), addrs[0].address.as_str()),
        ("InternalIP", "127.0.0.1")
    );
    assert_eq!(
        (addrs[1].type_.as_str(), addrs[1].address.as_str()),
        ("Hostname", "node-a")
    );
    let info = status.node_info.clone().unwrap();
    assert_eq!(info.kubelet_version, KUBELET_VERSION);
    assert_eq!(info.container_runtime_version, "containerd://1.7.24");
    assert_eq!(info.operating_system, "linux");
    // Not ready until the runtime has answered.
    let r = ready(&node);
    assert_eq!(r.status, "False");
    assert_eq!(r.reason.as_deref(), Some("KubeletNotReady"));
    let types: Vec<String> = status
        .conditions
        .unwrap()
        .into_iter()
        .map(|c| c.type_)
        .collect();
    assert_eq!(
        types,
        ["MemoryPressure", "DiskPressure", "PIDPressure", "Ready"]
    );

    let runtime = Arc::new(FakeRuntime {
        network_ready: AtomicBool::new(true),
    });
    let cancel = CancellationToken::new();
    let task = node::spawn_status_loop_with(
        client.clone(),
        cfg.clone(),
        "containerd://1.7.24".into(),
        runtime.clone(),
        fast(),
        cancel.clone(),
    );
    let nodes: Api<Node> = Api::all(client.clone());
    let became_ready = eventually(10, "Ready=True", || async {
        let n = nodes.get("node-a").await.ok()?;
        let r = ready(&n);
        (r.status == "True").then_some(r)
    })
    .await;
    assert_eq!(became_ready.reason.as_deref(), Some("KubeletReady"));
    assert_eq!(
        became_ready.message.as_deref(),
        Some("kubelet is posting ready status")
    );

    // The Lease: held by the node, owned by it, renewed.
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let uid = nodes.get("node-a").await.unwrap().metadata.uid.unwrap();
    let first = eventually(10, "the node Lease", || async {
        let l = leases.get_opt("node-a").await.ok().flatten()?;
        let owned = l
            .metadata
            .owner_references
            .as_ref()
            .is_some_and(|o| o.iter().any(|o| o.kind == "Node" && o.uid == uid));
        owned.then_some(l)
    })
    .await;
    let spec = first.spec.clone().unwrap();
    assert_eq!(spec.holder_identity.as_deref(), Some("node-a"));
    assert_eq!(spec.lease_duration_seconds, Some(40));
    let t0 = spec.renew_time.unwrap().0;
    eventually(10, "a Lease renewal", || async {
        let l = leases.get("node-a").await.ok()?;
        (l.spec?.renew_time?.0 > t0).then_some(())
    })
    .await;

    // The runtime network goes down: NotReady with upstream's message.
    runtime.network_ready.store(false, Ordering::SeqCst);
    let not_ready = eventually(10, "Ready=False", || async {
        let n = nodes.get("node-a").await.ok()?;
        let r = ready(&n);
        (r.status == "False").then_some(r)
    })
    .await;
    assert_eq!(not_ready.reason.as_deref(), Some("KubeletNotReady"));
    assert_eq!(
        not_ready.message.as_deref(),
        Some(
            "container runtime network not ready: NetworkReady=false \
             reason:NetworkPluginNotReady message:Network plugin returns error: \
             cni plugin not initialized"
        )
    );
    runtime.network_ready.store(true, Ordering::SeqCst);
    eventually(10, "Ready=True again", || async {
        let n = nodes.get("node-a").await.ok()?;
        (ready(&n).status == "True").then_some(())
    })
    .await;

    cancel.cancel();
    task.await.unwrap();
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn re_registration_keeps_the_node() {
    let cluster = TestCluster::start().await.unwrap();
    let client = kubelet_client(&cluster).await;
    let root = tempfile::tempdir().unwrap();
    let cfg = config(root.path(), &[]);
    let first = node::register(&client, &cfg, "containerd://1.7.24")
        .await
        .unwrap();

    // What controllers and users add meanwhile.
    let admin = cluster.admin_client("test").await.unwrap();
    let nodes: Api<Node> = Api::all(admin);
    nodes
        .patch(
            "node-a",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"spec": {"podCIDR": "10.42.0.0/24", "podCIDRs": ["10.42.0.0/24"]},
                "metadata": {"labels": {"user": "set"}}}),
            ),
        )
        .await
        .unwrap();

    // The kubelet restarts with a new label and a new runtime version.
    let cfg2 = config(root.path(), &[("tier", "edge")]);
    let again = node::register(&client, &cfg2, "containerd://1.7.25")
        .await
        .unwrap();
    assert_eq!(again.metadata.uid, first.metadata.uid);
    assert_eq!(
        again.spec.as_ref().and_then(|s| s.pod_cidr.as_deref()),
        Some("10.42.0.0/24")
    );
    let labels: BTreeMap<String, String> = again.metadata.labels.clone().unwrap();
    assert_eq!(labels["tier"], "edge");
    assert_eq!(labels["user"], "set");
    assert_eq!(labels["kubernetes.io/hostname"], "node-a");
    assert_eq!(
        again
            .metadata
            .annotations
            .as_ref()
            .unwrap()
            .get(node::CMAD_ANNOTATION)
            .map(String::as_str),
        Some("true")
    );
    let info = again.status.as_ref().unwrap().node_info.clone().unwrap();
    assert_eq!(info.container_runtime_version, "containerd://1.7.25");
    // The conditions are the stored ones until the status loop runs.
    assert_eq!(
        ready(&again).last_transition_time,
        ready(&first).last_transition_time
    );
    cluster.stop().await;
}
