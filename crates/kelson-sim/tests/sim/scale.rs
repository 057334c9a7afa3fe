//! Scale check, not a timed assertion: N simulated nodes (1,000 unless
//! KELSON_SIM_SCALE_NODES says otherwise) in one process register and stay
//! Ready. The sim runs in a child process (this test binary again) so its
//! memory is measured apart from the API server's. Run with
//! `cargo test -p kelson-sim --release --test sim -- scale:: --ignored --nocapture`.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kelson_runtime::testing::TestCluster;
use kelson_sim::{Sim, SimConfig};
use kube::api::{Api, ListParams};
use tokio_util::sync::CancellationToken;

const KUBECONFIG_ENV: &str = "KELSON_SIM_CHILD_KUBECONFIG";

fn nodes_wanted() -> u32 {
    std::env::var("KELSON_SIM_SCALE_NODES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000)
}

/// (RSS in MiB, CPU seconds used) of this process.
fn usage() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let rss_kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which ends with ')'): utime is the
    // 12th, stime the 13th; both in clock ticks (100 per second on Linux).
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<f64> = after
        .split_whitespace()
        .filter_map(|v| v.parse().ok())
        .collect();
    let ticks = f.get(11).copied().unwrap_or(0.0) + f.get(12).copied().unwrap_or(0.0);
    (rss_kb / 1024.0, ticks / 100.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "scale check; run explicitly"]
async fn many_nodes_in_one_process() {
    let cluster = TestCluster::start().await.unwrap();
    let exe = std::env::current_exe().unwrap();
    let kubeconfig = cluster.kubeconfig.clone();
    let status = tokio::task::spawn_blocking(move || {
        std::process::Command::new(exe)
            .args(["scale::sim_child", "--exact", "--ignored", "--nocapture"])
            .env(KUBECONFIG_ENV, &kubeconfig)
            .env("KELSON_SIM_SCALE_NODES", nodes_wanted().to_string())
            .status()
    })
    .await
    .unwrap()
    .unwrap();
    assert!(status.success(), "the sim process failed");
    cluster.stop().await;
}

/// The child's part: does nothing unless started by the test above.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "started by many_nodes_in_one_process"]
async fn sim_child() {
    let Ok(kubeconfig) = std::env::var(KUBECONFIG_ENV) else {
        return;
    };
    let n = nodes_wanted();
    let client =
        kelson_runtime::client_from_kubeconfig(std::path::Path::new(&kubeconfig), "kelson-sim")
            .await
            .unwrap();
    let shutdown = CancellationToken::new();
    let (rss0, _) = usage();
    let started = Instant::now();
    let sim = Sim::start(client.clone(), SimConfig::new("scale", n), shutdown.clone())
        .await
        .unwrap();
    let took = started.elapsed();
    let (rss1, cpu1) = usage();
    println!(
        "registered {n} nodes in {:.1} s; RSS {rss0:.1} → {rss1:.1} MiB; CPU {cpu1:.1} s",
        took.as_secs_f64()
    );

    // Steady state: a minute of heartbeats.
    let steady = Duration::from_secs(60);
    tokio::time::sleep(steady).await;
    let (rss2, cpu2) = usage();
    println!(
        "after {} s of heartbeats: RSS {rss2:.1} MiB; CPU {:.2} s per second",
        steady.as_secs(),
        (cpu2 - cpu1) / steady.as_secs_f64()
    );

    let nodes: Api<Node> = Api::all(client.clone());
    let list = nodes.list(&ListParams::default()).await.unwrap();
    let ready = list
        .items
        .iter()
        .filter(|node| {
            node.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
        .count();
    assert_eq!(ready, n as usize, "every node Ready");
    let leases: Api<Lease> = Api::namespaced(client, "kube-node-lease");
    let now = jiff::Timestamp::now();
    let fresh = leases
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .filter(|l| {
            l.spec
                .as_ref()
                .and_then(|s| s.renew_time.as_ref())
                .is_some_and(|t| now.duration_since(t.0) < jiff::SignedDuration::from_secs(20))
        })
        .count();
    assert_eq!(fresh, n as usize, "every Lease renewed within 20 s");
    println!("all {n} nodes Ready, all Leases fresh");
    shutdown.cancel();
    sim.wait().await;
}
