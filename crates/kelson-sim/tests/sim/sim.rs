//! Simulated nodes against a real API server: registration, Leases, pods
//! run, deleted and finished, heartbeats stopped and resumed.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use kelson_runtime::testing::TestCluster;
use kelson_sim::{Sim, SimConfig, EXIT_AFTER_ANNOTATION, STOP_HEARTBEAT_ANNOTATION};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;
use tokio_util::sync::CancellationToken;

async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Creates a pod, bound to `node` at creation when given.
async fn create_pod(pods: &Api<Pod>, name: &str, node: Option<&str>, extra: serde_json::Value) {
    let mut v = json!({
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "app", "image": "nginx:1.27"}]},
    });
    if let Some(node) = node {
        v["spec"]["nodeName"] = json!(node);
    }
    if let Some(a) = extra.get("annotations") {
        v["metadata"]["annotations"] = a.clone();
    }
    if let Some(r) = extra.get("restartPolicy") {
        v["spec"]["restartPolicy"] = r.clone();
    }
    let pod: Pod = serde_json::from_value(v).unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
}

async fn bind(pods: &Api<Pod>, name: &str, node: &str) {
    let binding = json!({
        "apiVersion": "v1", "kind": "Binding",
        "metadata": {"name": name},
        "target": {"apiVersion": "v1", "kind": "Node", "name": node},
    });
    let _: serde_json::Value = pods
        .create_subresource("binding", name, &PostParams::default(), &binding)
        .await
        .unwrap();
}

fn condition(pod: &Pod, t: &str) -> Option<String> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == t)
        .map(|c| c.status.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sim_nodes_register_heartbeat_and_run_pods() {
    let cluster = TestCluster::start().await.unwrap();
    let client = cluster.admin_client("kelson-sim").await.unwrap();
    let shutdown = CancellationToken::new();
    let mut config = SimConfig::new("sim", 3);
    config.zones = Some(2);
    config.heartbeat_interval = Duration::from_secs(1);
    config.pod_cidr_wait = Duration::from_secs(1);
    let sim = Sim::start(client.clone(), config, shutdown.clone())
        .await
        .unwrap();
    assert_eq!(sim.node_names(), ["sim-0", "sim-1", "sim-2"]);

    let nodes: Api<Node> = Api::all(client.clone());
    for (i, name) in sim.node_names().iter().enumerate() {
        let n = nodes.get(name).await.unwrap();
        let labels = n.metadata.labels.clone().unwrap();
        assert_eq!(labels["kubernetes.io/hostname"], *name);
        assert_eq!(
            labels["topology.kubernetes.io/zone"],
            format!("zone-{}", i % 2)
        );
        let ready = n
            .status
            .as_ref()
            .unwrap()
            .conditions
            .as_ref()
            .unwrap()
            .iter()
            .find(|c| c.type_ == "Ready")
            .cloned()
            .unwrap();
        assert_eq!(ready.status, "True");
        assert_eq!(ready.reason.as_deref(), Some("KubeletReady"));
        assert_eq!(n.status.unwrap().capacity.unwrap()["pods"].0, "110");
    }
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let first = leases.get("sim-0").await.unwrap();
    let spec = first.spec.clone().unwrap();
    assert_eq!(spec.holder_identity.as_deref(), Some("sim-0"));
    assert_eq!(spec.lease_duration_seconds, Some(40));
    let renewed_at = spec.renew_time.unwrap().0;
    wait_for("a lease renewal", Duration::from_secs(5), || {
        let leases = leases.clone();
        async move {
            let t = leases.get("sim-0").await.ok()?.spec?.renew_time?.0;
            (t > renewed_at).then_some(())
        }
    })
    .await;

    // nodeipam's part, done by hand: sim-1 gets a podCIDR.
    nodes
        .patch(
            "sim-1",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"spec": {"podCIDR": "10.42.1.0/24", "podCIDRs": ["10.42.1.0/24"]}}),
            ),
        )
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    create_pod(&pods, "web", Some("sim-1"), json!({})).await;
    let running = wait_for("web running and ready", Duration::from_secs(10), || {
        let pods = pods.clone();
        async move {
            let p = pods.get("web").await.ok()?;
            let phase = p.status.as_ref()?.phase.clone()?;
            (phase == "Running" && condition(&p, "Ready").as_deref() == Some("True")).then_some(p)
        }
    })
    .await;
    let status = running.status.unwrap();
    let ip = status.pod_ip.unwrap();
    assert!(
        ip.starts_with("10.42.1."),
        "pod IP {ip} is in the node's podCIDR"
    );
    assert_eq!(status.host_ip.as_deref(), Some("10.244.0.2"));
    assert_eq!(status.qos_class.as_deref(), Some("BestEffort"));
    let cs = &status.container_statuses.unwrap()[0];
    assert!(cs.ready && cs.started == Some(true));
    assert!(cs.state.as_ref().unwrap().running.is_some());

    // A second pod on the same node gets another address.
    create_pod(&pods, "web2", Some("sim-1"), json!({})).await;
    let ip2 = wait_for("web2 gets an IP", Duration::from_secs(10), || {
        let pods = pods.clone();
        async move { pods.get("web2").await.ok()?.status?.pod_ip }
    })
    .await;
    assert_ne!(ip, ip2);

    // Graceful deletion: the kubelet finishes the pod and it goes.
    pods.delete("web", &DeleteParams::default()).await.unwrap();
    wait_for("web deleted", Duration::from_secs(10), || {
        let pods = pods.clone();
        async move {
            pods.get_opt("web")
                .await
                .ok()
                .and_then(|p| p.is_none().then_some(()))
        }
    })
    .await;

    // A pod told to exit after 1 s completes.
    create_pod(
        &pods,
        "job",
        Some("sim-1"),
        json!({"annotations": {EXIT_AFTER_ANNOTATION: "1s"}, "restartPolicy": "Never"}),
    )
    .await;
    let done = wait_for("job succeeded", Duration::from_secs(10), || {
        let pods = pods.clone();
        async move {
            let p = pods.get("job").await.ok()?;
            (p.status.as_ref()?.phase.as_deref() == Some("Succeeded")).then_some(p)
        }
    })
    .await;
    let term = done.status.unwrap().container_statuses.unwrap()[0]
        .state
        .clone()
        .unwrap()
        .terminated
        .unwrap();
    assert_eq!(term.exit_code, 0);
    assert_eq!(term.reason.as_deref(), Some("Completed"));

    // Without a podCIDR the node falls back to its stand-in range.
    create_pod(&pods, "early", Some("sim-2"), json!({})).await;
    let fallback_ip = wait_for("fallback IP", Duration::from_secs(10), || {
        let pods = pods.clone();
        async move { pods.get("early").await.ok()?.status?.pod_ip }
    })
    .await;
    assert!(fallback_ip.starts_with("100.64.2."), "{fallback_ip}");

    // A pod the scheduler's way: created unbound, then bound.
    create_pod(&pods, "bound", None, json!({})).await;
    bind(&pods, "bound", "sim-1").await;
    let bound_ip = wait_for("bound pod running", Duration::from_secs(10), || {
        let pods = pods.clone();
        async move {
            let p = pods.get("bound").await.ok()?;
            (condition(&p, "Ready").as_deref() == Some("True")).then_some(p.status?.pod_ip?)
        }
    })
    .await;
    assert!(bound_ip.starts_with("10.42.1."), "{bound_ip}");

    // A failed node: its Lease stops moving until it resumes.
    assert!(sim.stop_heartbeat("sim-0"));
    assert_eq!(sim.is_heartbeating("sim-0"), Some(false));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let frozen = leases
        .get("sim-0")
        .await
        .unwrap()
        .spec
        .unwrap()
        .renew_time
        .unwrap()
        .0;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let still = leases
        .get("sim-0")
        .await
        .unwrap()
        .spec
        .unwrap()
        .renew_time
        .unwrap()
        .0;
    assert_eq!(frozen, still, "a stopped node does not renew its lease");
    assert!(sim.resume_heartbeat("sim-0"));
    wait_for("renewal after resume", Duration::from_secs(5), || {
        let leases = leases.clone();
        async move {
            let t = leases.get("sim-0").await.ok()?.spec?.renew_time?.0;
            (t > still).then_some(())
        }
    })
    .await;

    // The annotation stops a node too.
    nodes
        .patch(
            "sim-2",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"annotations": {STOP_HEARTBEAT_ANNOTATION: "true"}}}),
            ),
        )
        .await
        .unwrap();
    wait_for("annotation seen", Duration::from_secs(5), || {
        let hb = sim.is_heartbeating("sim-2");
        async move { (hb == Some(false)).then_some(()) }
    })
    .await;

    shutdown.cancel();
    sim.wait().await;
    cluster.stop().await;
}
