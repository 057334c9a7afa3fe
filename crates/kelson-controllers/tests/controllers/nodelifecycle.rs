//! Node lifecycle against a real API server with simulated kubelets: a node
//! that stops heartbeating goes Unknown, is tainted, loses its pods as
//! their tolerations say, and recovers when it heartbeats again.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Pod};
use kelson_controllers::nodelifecycle::{self, NodeLifecycleOptions, TAINT_UNREACHABLE};
use kelson_sim::{Sim, SimConfig};
use kube::api::{Api, PostParams};
use serde_json::json;

use crate::support::{
    create, pod_condition, wait_gone_every, wait_terminating_every, wait_until_every, Harness,
};

/// Finer than the 500 ms heartbeat and monitor periods, so that waits end
/// close to what they wait for.
const POLL: Duration = Duration::from_millis(50);

async fn run_pod(pods: &Api<Pod>, name: &str, node: &str, tolerations: serde_json::Value) {
    // Bound at creation, as a pod that names its node is: no scheduler
    // here, and binding is covered by the sim's own tests.
    let mut spec = json!({"nodeName": node, "containers": [{"name": "app", "image": "nginx"}]});
    if tolerations.as_array().is_some_and(|t| !t.is_empty()) {
        spec["tolerations"] = tolerations;
    }
    create(pods, json!({"metadata": {"name": name}, "spec": spec})).await;
}

fn ready(p: &Pod) -> Option<&str> {
    pod_condition(p, "Ready")
}

fn node_ready(n: &Node) -> Option<(String, Option<String>)> {
    n.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| (c.status.clone(), c.reason.clone()))
}

fn taints(n: &Node) -> Vec<(String, String)> {
    n.spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|t| (t.key, t.effect))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_node_is_tainted_evicted_and_recovers() {
    let mut h = Harness::start().await;
    let admin = h.cluster.admin_client("test").await.unwrap();
    let mut config = SimConfig::new("sim", 3);
    config.heartbeat_interval = Duration::from_millis(500);
    config.pod_cidr_wait = Duration::ZERO;
    let sim = Sim::start(admin.clone(), config, h.shutdown.clone())
        .await
        .unwrap();
    let opts = NodeLifecycleOptions {
        grace_period: Duration::from_secs(3),
        monitor_period: Duration::from_millis(500),
        ..NodeLifecycleOptions::default()
    };
    h.spawn(nodelifecycle::run(
        h.client.clone(),
        opts,
        h.shutdown.clone(),
    ));

    let pods: Api<Pod> = Api::namespaced(admin.clone(), "default");
    // The API server gives every pod 300 s tolerations of not-ready and
    // unreachable (DefaultTolerationSeconds); 0 s means at once.
    run_pod(
        &pods,
        "doomed",
        "sim-0",
        json!([{"key": TAINT_UNREACHABLE, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 0}]),
    )
    .await;
    run_pod(
        &pods,
        "patient",
        "sim-0",
        json!([{"key": TAINT_UNREACHABLE, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 2}]),
    )
    .await;
    run_pod(&pods, "stubborn", "sim-0", json!([{"operator": "Exists"}])).await;
    run_pod(&pods, "bystander", "sim-1", json!([])).await;
    run_pod(&pods, "victim", "sim-2", json!([])).await;
    for name in ["doomed", "patient", "stubborn", "bystander", "victim"] {
        wait_until_every(&pods, name, 10, POLL, &format!("{name} ready"), |p| {
            ready(p) == Some("True")
        })
        .await;
    }

    // Healthy nodes are left alone well past the grace period.
    let nodes: Api<Node> = Api::all(admin.clone());
    tokio::time::sleep(Duration::from_secs(4)).await;
    for n in ["sim-0", "sim-1", "sim-2"] {
        let node = nodes.get(n).await.unwrap();
        assert_eq!(node_ready(&node).unwrap().0, "True");
        assert!(taints(&node).is_empty(), "{n} is untainted");
    }

    // A NoExecute taint the pod does not tolerate at all evicts it at once.
    let mut n2 = nodes.get("sim-2").await.unwrap();
    n2.spec.get_or_insert_with(Default::default).taints = Some(vec![serde_json::from_value(
        json!({"key": "example.com/drain", "effect": "NoExecute"}),
    )
    .unwrap()]);
    nodes
        .replace("sim-2", &PostParams::default(), &n2)
        .await
        .unwrap();
    wait_gone_every(&pods, "victim", 5, POLL).await;

    sim.stop_heartbeat("sim-0");
    let stopped = Instant::now();
    let node = wait_until_every(&nodes, "sim-0", 10, POLL, "sim-0 Unknown", |n| {
        node_ready(n).is_some_and(|c| c.0 == "Unknown")
    })
    .await;
    assert!(
        stopped.elapsed() >= Duration::from_secs(2),
        "not before the grace period"
    );
    let cond = node_ready(&node).unwrap();
    assert_eq!(cond.1.as_deref(), Some("NodeStatusUnknown"));
    let node = wait_until_every(&nodes, "sim-0", 5, POLL, "unreachable taints", |n| {
        let t = taints(n);
        let want = |e: &str| t.contains(&(TAINT_UNREACHABLE.to_string(), e.to_string()));
        want("NoSchedule") && want("NoExecute")
    })
    .await;
    let no_execute = node
        .spec
        .unwrap()
        .taints
        .unwrap()
        .into_iter()
        .find(|t| t.effect == "NoExecute")
        .unwrap();
    assert!(no_execute.time_added.is_some());
    let tainted = Instant::now();

    // The untolerating pod goes at once, the patient one after its 2 s.
    wait_terminating_every(&pods, "doomed", 3, POLL).await;
    let p = pods.get("patient").await.unwrap();
    assert!(
        p.metadata.deletion_timestamp.is_none(),
        "patient tolerates for 2 s"
    );
    assert_eq!(
        ready(&p),
        Some("False"),
        "pods of a lost node are not ready"
    );
    let p = wait_terminating_every(&pods, "patient", 6, POLL).await;
    assert!(
        tainted.elapsed() >= Duration::from_millis(1500),
        "patient went too early"
    );
    let dt = p
        .status
        .unwrap()
        .conditions
        .unwrap()
        .into_iter()
        .find(|c| c.type_ == "DisruptionTarget")
        .unwrap();
    assert_eq!(dt.reason.as_deref(), Some("DeletionByTaintManager"));
    let s = pods.get("stubborn").await.unwrap();
    assert!(s.metadata.deletion_timestamp.is_none(), "tolerates forever");
    let b = pods.get("bystander").await.unwrap();
    assert_eq!(ready(&b), Some("True"), "other nodes' pods are untouched");

    // Back to life: Ready, untainted; the deleted pods are finished off and
    // the survivor is ready again.
    sim.resume_heartbeat("sim-0");
    wait_until_every(&nodes, "sim-0", 10, POLL, "sim-0 recovers", |n| {
        node_ready(n).is_some_and(|c| c.0 == "True") && taints(n).is_empty()
    })
    .await;
    for name in ["doomed", "patient"] {
        wait_gone_every(&pods, name, 10, POLL).await;
    }
    wait_until_every(&pods, "stubborn", 10, POLL, "stubborn ready again", |p| {
        ready(p) == Some("True")
    })
    .await;

    h.stop_tasks().await;
    sim.wait().await;
    h.stop().await;
}
