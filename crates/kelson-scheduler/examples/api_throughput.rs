//! SchedulingBasic end to end through the API: an in-process API server
//! (kelson_runtime::testing), N nodes (4 CPU, 32Gi, 110 pods), M pending
//! pods (100m / 500Mi), then Kelson's scheduler; prints how fast it binds
//! them all. Not an assertion, a figure:
//! `cargo run --release -p kelson-scheduler --example api_throughput -- 500 2000`
//!
//! Two phases: pods created before the scheduler starts (scheduling and
//! binding only), then pods created while it runs (creation, watch,
//! scheduling and binding together).

use std::time::{Duration, Instant};

use futures::{stream, StreamExt};
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::serde_json::{self, json};
use kelson_runtime::testing::TestCluster;
use kelson_scheduler::{run, SchedulerOptions};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use tokio_util::sync::CancellationToken;

const CREATE_CONCURRENCY: usize = 32;

fn arg(i: usize, default: usize) -> usize {
    std::env::args()
        .nth(i)
        .and_then(|a| a.parse().ok())
        .unwrap_or(default)
}

async fn create_nodes(client: &kube::Client, n: usize) -> Result<(), kube::Error> {
    let nodes: Api<Node> = Api::all(client.clone());
    let results: Vec<Result<(), kube::Error>> = stream::iter(0..n)
        .map(|i| {
            let nodes = nodes.clone();
            async move {
                let name = format!("node-{i}");
                let node: Node = serde_json::from_value(json!({"metadata": {
                    "name": name,
                    "labels": {"kubernetes.io/hostname": name,
                               "topology.kubernetes.io/zone": format!("zone-{}", i % 3)}}}))
                .map_err(kube::Error::SerdeError)?;
                nodes.create(&PostParams::default(), &node).await?;
                let status = json!({"status": {
                    "capacity": {"cpu": "4", "memory": "32Gi", "pods": "110"},
                    "allocatable": {"cpu": "4", "memory": "32Gi", "pods": "110"},
                    "conditions": [{"type": "Ready", "status": "True"}]}});
                nodes
                    .patch_status(&name, &PatchParams::default(), &Patch::Merge(status))
                    .await?;
                Ok(())
            }
        })
        .buffer_unordered(CREATE_CONCURRENCY)
        .collect()
        .await;
    results.into_iter().collect()
}

async fn create_pods(client: &kube::Client, prefix: &str, n: usize) -> Result<(), kube::Error> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let results: Vec<Result<(), kube::Error>> = stream::iter(0..n)
        .map(|i| {
            let pods = pods.clone();
            async move {
                let pod: Pod = serde_json::from_value(json!({
                    "metadata": {"name": format!("{prefix}-{i}")},
                    "spec": {"containers": [{"name": "pause", "image": "registry.k8s.io/pause:3.10",
                        "resources": {"requests": {"cpu": "100m", "memory": "500Mi"}}}]}}))
                .map_err(kube::Error::SerdeError)?;
                pods.create(&PostParams::default(), &pod).await.map(|_| ())
            }
        })
        .buffer_unordered(CREATE_CONCURRENCY)
        .collect()
        .await;
    results.into_iter().collect()
}

/// Waits until no pod is left unassigned.
async fn wait_all_bound(client: &kube::Client) -> Result<(), kube::Error> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    // One unassigned pod is enough to know we are not done.
    let lp = ListParams::default().fields("spec.nodeName=").limit(1);
    loop {
        if pods.list(&lp).await?.items.is_empty() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(bench())
}

async fn bench() -> Result<(), Box<dyn std::error::Error>> {
    let (n_nodes, n_pods) = (arg(1, 500), arg(2, 2000));
    let cluster = TestCluster::start().await?;
    let admin = cluster.admin_client("api-throughput").await?;
    let t = Instant::now();
    create_nodes(&admin, n_nodes).await?;
    println!(
        "{n_nodes} nodes created in {:.2}s",
        t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    create_pods(&admin, "pre", n_pods).await?;
    println!(
        "{n_pods} pending pods created in {:.2}s",
        t.elapsed().as_secs_f64()
    );

    let client = cluster
        .component_client("system:kube-scheduler", &[], "kelson-scheduler")
        .await?;
    let shutdown = CancellationToken::new();
    let t = Instant::now();
    let sched = tokio::spawn(run(client, SchedulerOptions::default(), shutdown.clone()));
    wait_all_bound(&admin).await?;
    let secs = t.elapsed().as_secs_f64();
    println!(
        "pre-created: {n_pods} pods bound in {secs:.2}s = {:.0} pods/s (scheduler start, list, schedule, bind)",
        n_pods as f64 / secs
    );

    let t = Instant::now();
    create_pods(&admin, "live", n_pods).await?;
    let created = t.elapsed().as_secs_f64();
    wait_all_bound(&admin).await?;
    let secs = t.elapsed().as_secs_f64();
    println!(
        "created while running: {n_pods} pods created in {created:.2}s, all bound after {secs:.2}s = {:.0} pods/s",
        n_pods as f64 / secs
    );

    shutdown.cancel();
    sched.await??;
    // Shutdown flushed what the event recorder still queued.
    let events: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(admin.clone(), "default");
    let scheduled = events
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .filter(|e| e.reason.as_deref() == Some("Scheduled"))
        .count();
    println!(
        "{scheduled} Scheduled events written for {} pods",
        2 * n_pods
    );
    cluster.stop().await;
    Ok(())
}
