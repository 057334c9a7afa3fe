//! The control-plane components that run beside the API server (or as their
//! own processes): each gets a kube client with its own identity and acts
//! only while it holds its Lease.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use kelson_runtime::{CancellationToken, LeaderElectionConfig, LeaderElector, Outcome};

fn duration(s: &str) -> Result<Duration, String> {
    kelson_runtime::parse_go_duration(s).ok_or_else(|| format!("invalid duration {s:?}"))
}

/// Leader election timing, with upstream's flag names and defaults.
#[derive(clap::Args, Clone, Debug)]
pub struct LeaderElectionArgs {
    /// How long a Lease holds without renewal before others may take it
    #[arg(long, default_value = "15s", value_parser = duration)]
    pub leader_elect_lease_duration: Duration,
    /// How long the leader keeps retrying a renewal before it gives up
    #[arg(long, default_value = "10s", value_parser = duration)]
    pub leader_elect_renew_deadline: Duration,
    /// How long candidates wait between tries
    #[arg(long, default_value = "2s", value_parser = duration)]
    pub leader_elect_retry_period: Duration,
}

impl LeaderElectionArgs {
    fn config(&self) -> LeaderElectionConfig {
        LeaderElectionConfig {
            lease_duration: self.leader_elect_lease_duration,
            renew_deadline: self.leader_elect_renew_deadline,
            retry_period: self.leader_elect_retry_period,
            release_on_cancel: true,
        }
    }
}

impl Default for LeaderElectionArgs {
    fn default() -> Self {
        let d = LeaderElectionConfig::default();
        LeaderElectionArgs {
            leader_elect_lease_duration: d.lease_duration,
            leader_elect_renew_deadline: d.renew_deadline,
            leader_elect_retry_period: d.retry_period,
        }
    }
}

/// `kelson controller-manager`
#[derive(clap::Args)]
pub struct ControllerManagerArgs {
    /// kubeconfig with the API server's address and this component's credentials
    #[arg(long)]
    pub kubeconfig: PathBuf,
    /// Take the kube-system/kube-controller-manager Lease before acting
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_elect: bool,
    #[command(flatten)]
    pub election: LeaderElectionArgs,
    /// How long a node may go without a heartbeat before it is marked unhealthy
    #[arg(long, default_value = "50s", value_parser = duration)]
    pub node_monitor_grace_period: Duration,
    /// How often node health is checked
    #[arg(long, default_value = "5s", value_parser = duration)]
    pub node_monitor_period: Duration,
    /// How long a node that never reported may take before it is marked unhealthy
    #[arg(long, default_value = "1m", value_parser = duration)]
    pub node_startup_grace_period: Duration,
    /// Nodes per second tainted for eviction in a healthy zone
    #[arg(long, default_value_t = 0.1)]
    pub node_eviction_rate: f32,
    /// CA certificate published to every namespace as kube-root-ca.crt
    /// [default: the kubeconfig's certificate authority]
    #[arg(long)]
    pub root_ca_file: Option<PathBuf>,
    /// Pod network nodes get their podCIDRs from
    #[arg(long, default_value = "10.42.0.0/16")]
    pub cluster_cidr: String,
}

/// `kelson scheduler`
#[derive(clap::Args)]
pub struct SchedulerArgs {
    /// kubeconfig with the API server's address and this component's credentials
    #[arg(long)]
    pub kubeconfig: PathBuf,
    /// Take the kube-system/kube-scheduler Lease before acting
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_elect: bool,
    #[command(flatten)]
    pub election: LeaderElectionArgs,
}

/// The kubeconfig's current cluster CA, as PEM.
fn kubeconfig_ca(path: &std::path::Path) -> anyhow::Result<String> {
    use base64::Engine;
    let kc = kube::config::Kubeconfig::read_from(path)?;
    let current = kc.current_context.clone().unwrap_or_default();
    let cluster = kc
        .contexts
        .iter()
        .find(|c| c.name == current)
        .and_then(|c| c.context.as_ref())
        .map(|c| c.cluster.clone())
        .unwrap_or_default();
    let data = kc
        .clusters
        .iter()
        .find(|c| c.name == cluster)
        .and_then(|c| c.cluster.as_ref())
        .and_then(|c| c.certificate_authority_data.clone())
        .context("the kubeconfig names no certificate-authority-data; pass --root-ca-file")?;
    let pem = base64::engine::general_purpose::STANDARD.decode(data.trim())?;
    Ok(String::from_utf8(pem)?)
}

/// Campaigns for `lease` in kube-system and runs `work` while leading.
async fn elect_and_run<F, Fut>(
    client: &kube::Client,
    lease: &str,
    election: &LeaderElectionArgs,
    shutdown: &CancellationToken,
    work: F,
) -> anyhow::Result<Outcome>
where
    F: FnOnce(CancellationToken) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut elector = LeaderElector::new(
        client.clone(),
        kelson_runtime::leader::LEASE_NAMESPACE,
        lease,
        kelson_runtime::leader::default_identity(),
        election.config(),
    )?;
    Ok(elector.run(shutdown, work).await)
}

/// A standalone component ends like upstream's: with an error when its
/// Lease was taken.
fn standalone_outcome(outcome: Outcome) -> anyhow::Result<()> {
    match outcome {
        Outcome::LostLease => anyhow::bail!("leaderelection lost"),
        Outcome::Shutdown | Outcome::Finished => Ok(()),
    }
}

/// Inside `kelson server` a lost Lease means another process leads now:
/// campaign again rather than take the API server down with it.
async fn run_in_server<F, Fut>(
    name: &str,
    client: kube::Client,
    lease: &str,
    shutdown: CancellationToken,
    work: F,
) where
    F: Fn(CancellationToken) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    while !shutdown.is_cancelled() {
        match elect_and_run(
            &client,
            lease,
            &LeaderElectionArgs::default(),
            &shutdown,
            &work,
        )
        .await
        {
            Ok(Outcome::LostLease) => tracing::warn!("{name} lost its lease; campaigning again"),
            Ok(_) => {}
            Err(e) => {
                tracing::error!(error = %e, "{name}");
                return;
            }
        }
    }
}

async fn scheduler_work(client: kube::Client, token: CancellationToken) {
    if let Err(e) = kelson_scheduler::run(client, Default::default(), token).await {
        tracing::error!(error = %e, "scheduler stopped");
    }
}

/// Runs the controller manager as its own process until SIGTERM/SIGINT.
pub async fn controller_manager(args: ControllerManagerArgs) -> anyhow::Result<()> {
    kelson_runtime::client::install_crypto_provider();
    let shutdown = kelson_runtime::shutdown_on_signals()?;
    let root_ca_pem = match &args.root_ca_file {
        Some(f) => {
            std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?
        }
        None => kubeconfig_ca(&args.kubeconfig)?,
    };
    let options = kelson_controllers::Options {
        root_ca_pem,
        cluster_cidr: args.cluster_cidr.clone(),
        node_lifecycle: kelson_controllers::nodelifecycle::NodeLifecycleOptions {
            grace_period: args.node_monitor_grace_period,
            monitor_period: args.node_monitor_period,
            startup_grace_period: args.node_startup_grace_period,
            eviction_rate: args.node_eviction_rate,
            ..Default::default()
        },
    };
    let client =
        kelson_runtime::client_from_kubeconfig(&args.kubeconfig, "kelson-controller-manager")
            .await
            .with_context(|| format!("reading {}", args.kubeconfig.display()))?;
    if !args.leader_elect {
        kelson_controllers::run_all(client, options, shutdown).await;
        return Ok(());
    }
    let lease = kelson_runtime::leader::CONTROLLER_MANAGER_LEASE;
    standalone_outcome(
        elect_and_run(&client.clone(), lease, &args.election, &shutdown, |token| {
            kelson_controllers::run_all(client, options, token)
        })
        .await?,
    )
}

/// Runs the controller manager inside `kelson server` until `shutdown`.
pub async fn controller_manager_in_server(
    client: kube::Client,
    options: kelson_controllers::Options,
    shutdown: CancellationToken,
) {
    let lease = kelson_runtime::leader::CONTROLLER_MANAGER_LEASE;
    run_in_server(
        "controller manager",
        client.clone(),
        lease,
        shutdown,
        |token| kelson_controllers::run_all(client.clone(), options.clone(), token),
    )
    .await
}

/// Runs the scheduler as its own process until SIGTERM/SIGINT.
pub async fn scheduler(args: SchedulerArgs) -> anyhow::Result<()> {
    kelson_runtime::client::install_crypto_provider();
    let shutdown = kelson_runtime::shutdown_on_signals()?;
    let client = kelson_runtime::client_from_kubeconfig(&args.kubeconfig, "kelson-scheduler")
        .await
        .with_context(|| format!("reading {}", args.kubeconfig.display()))?;
    if !args.leader_elect {
        kelson_scheduler::run(client, Default::default(), shutdown).await?;
        return Ok(());
    }
    let lease = kelson_runtime::leader::SCHEDULER_LEASE;
    standalone_outcome(
        elect_and_run(&client.clone(), lease, &args.election, &shutdown, |token| {
            scheduler_work(client, token)
        })
        .await?,
    )
}

/// Runs the scheduler inside `kelson server` until `shutdown`.
pub async fn scheduler_in_server(client: kube::Client, shutdown: CancellationToken) {
    let lease = kelson_runtime::leader::SCHEDULER_LEASE;
    run_in_server("scheduler", client.clone(), lease, shutdown, |token| {
        scheduler_work(client.clone(), token)
    })
    .await
}

/// `kelson sim`: simulated nodes until SIGTERM/SIGINT.
pub async fn sim(args: kelson_sim::SimArgs) -> anyhow::Result<()> {
    kelson_runtime::client::install_crypto_provider();
    let shutdown = kelson_runtime::shutdown_on_signals()?;
    let path = args
        .kubeconfig
        .clone()
        .context("--kubeconfig (or KUBECONFIG) is required")?;
    let client = kelson_runtime::client_from_kubeconfig(&path, "kelson-sim")
        .await
        .with_context(|| format!("reading {}", path.display()))?;
    kelson_sim::run(client, args, shutdown).await?;
    Ok(())
}
