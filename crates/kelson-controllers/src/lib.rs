//! The controller manager's reconcile loops. Each controller reaches the
//! cluster only through a `kube::Client`, as a standalone
//! kube-controller-manager would, and is level-triggered: it reads the
//! current state on every pass and converges, so a missed event or a restart
//! costs only a delay.

use kube::Client;
use tokio_util::sync::CancellationToken;

pub mod cronjob;
pub mod daemonset;
pub mod deployment;
pub mod disruption;
pub mod endpoints;
pub mod garbagecollector;
pub mod history;
pub mod informers;
pub mod job;
pub mod namespace;
pub mod nodeipam;
pub mod nodelifecycle;
pub mod podcontrol;
pub mod podgc;
pub mod replicaset;
pub mod resourcequota;
pub mod runner;
pub mod serviceaccount;
pub mod statefulset;
pub mod ttlafterfinished;

/// What the controllers need besides a client.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The cluster CA (PEM) published to every namespace as
    /// `kube-root-ca.crt`.
    pub root_ca_pem: String,
    /// The pod network nodes get their podCIDRs from (`--cluster-cidr`).
    pub cluster_cidr: String,
    /// Node health tunables (`--node-monitor-grace-period`, …).
    pub node_lifecycle: nodelifecycle::NodeLifecycleOptions,
}

/// Runs every controller until `shutdown` is cancelled, then returns once
/// they have stopped.
pub async fn run_all(client: Client, options: Options, shutdown: CancellationToken) {
    tracing::info!("starting controllers");
    let c = || client.clone();
    let s = || shutdown.child_token();
    // One watch and one store per type for all controllers.
    let informers = informers::Informers::new(client.clone());
    let i = || informers.clone();
    let tasks = vec![
        tokio::spawn(namespace::run(c(), s())),
        tokio::spawn(
            replicaset::run_with::<k8s_openapi::api::apps::v1::ReplicaSet>(
                i(),
                s(),
                Default::default(),
            ),
        ),
        tokio::spawn(replicaset::run_with::<
            k8s_openapi::api::core::v1::ReplicationController,
        >(i(), s(), Default::default())),
        tokio::spawn(deployment::run_with(i(), s(), Default::default())),
        tokio::spawn(statefulset::run_with(i(), s(), Default::default())),
        tokio::spawn(daemonset::run_with(i(), s(), Default::default())),
        tokio::spawn(job::run_with(i(), s(), Default::default())),
        tokio::spawn(ttlafterfinished::run(c(), s())),
        tokio::spawn(cronjob::run_with(i(), Default::default(), s())),
        tokio::spawn(disruption::run_with(i(), Default::default(), s())),
        tokio::spawn(resourcequota::run(c(), s())),
        tokio::spawn(garbagecollector::run(c(), Default::default(), s())),
        tokio::spawn(serviceaccount::run(
            c(),
            serviceaccount::RootCa {
                pem: options.root_ca_pem.clone(),
            },
            s(),
        )),
        tokio::spawn(endpoints::run_with(i(), s())),
        tokio::spawn(podgc::run_with(i(), Default::default(), s())),
        tokio::spawn(nodelifecycle::run_with(
            i(),
            options.node_lifecycle.clone(),
            s(),
        )),
        tokio::spawn({
            let cidr = nodeipam::ClusterCidr::new(options.cluster_cidr.clone());
            let (c, s) = (c(), s());
            async move {
                if let Err(e) = nodeipam::run(c, cidr, s).await {
                    tracing::error!(error = %e, "node IPAM stopped");
                }
            }
        }),
    ];
    shutdown.cancelled().await;
    // The informers stop once every controller has dropped its handle.
    drop(informers);
    for task in tasks {
        if let Err(e) = task.await {
            tracing::warn!(error = %e, "controller task ended abnormally");
        }
    }
    tracing::info!("controllers stopped");
}
