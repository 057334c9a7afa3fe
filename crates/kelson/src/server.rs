//! `kelson server`: runs the control plane on this machine: the embedded
//! store, the local admin socket and the API server. The scheduler,
//! controllers and the node agent join it here.

use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context};
use kelson_runtime::CancellationToken;
use kelson_store::{EmbeddedStore, Options, Store};
use tokio::net::UnixListener;
use tokio::signal::unix::{signal, SignalKind};

use crate::{admin, admin_socket_path, store_path, DEFAULT_DATA_DIR, VERSION};

#[derive(clap::Args)]
pub struct ServerArgs {
    /// Folder holding all of the server's state
    #[arg(long, default_value = DEFAULT_DATA_DIR, env = "KELSON_DATA_DIR")]
    pub data_dir: PathBuf,
    /// Address the API server listens on
    #[arg(long, default_value = "0.0.0.0")]
    pub bind_address: IpAddr,
    /// Port of the API server (HTTPS)
    #[arg(long, default_value_t = 6443)]
    pub https_port: u16,
    /// Where to write the admin kubeconfig [default: DATA_DIR/kubeconfig.yaml]
    #[arg(long)]
    pub write_kubeconfig: Option<PathBuf>,
    /// Run no node agent on this machine
    #[arg(long)]
    pub disable_agent: bool,
    /// Pod network of the cluster (one podCIDR per node is cut from it)
    #[arg(long, default_value = "10.42.0.0/16")]
    pub cluster_cidr: String,
    /// Service cluster IPs are taken from this network
    #[arg(long, default_value = "10.43.0.0/16")]
    pub service_cidr: String,
    /// Run no controller manager in this process (run it elsewhere with
    /// `kelson controller-manager`)
    #[arg(long)]
    pub disable_controller_manager: bool,
    /// Run no scheduler in this process (run it elsewhere with
    /// `kelson scheduler`)
    #[arg(long)]
    pub disable_scheduler: bool,
    /// Static bearer tokens, one per line: token,user,uid[,"group1,group2"]
    #[arg(long)]
    pub token_auth_file: Option<PathBuf>,
    /// How long the embedded store gathers concurrent writes into one
    /// commit, in milliseconds (a tuning knob, like etcd's batch interval)
    #[arg(long, hide = true, env = "KELSON_STORE_COMMIT_INTERVAL_MS", value_parser = parse_interval_ms)]
    pub store_commit_interval_ms: Option<std::time::Duration>,
    /// How long a gathering commit waits for the next concurrent write
    /// before it goes ahead anyway, in milliseconds
    #[arg(long, hide = true, env = "KELSON_STORE_COMMIT_GAP_MS", value_parser = parse_interval_ms)]
    pub store_commit_gap_ms: Option<std::time::Duration>,
    #[command(flatten)]
    pub agent: crate::node_args::NodeArgs,
}

/// Milliseconds (fractions allowed) from 0 to 1000.
fn parse_interval_ms(s: &str) -> Result<std::time::Duration, String> {
    match s.parse::<f64>() {
        Ok(ms) if (0.0..=1000.0).contains(&ms) => {
            Ok(std::time::Duration::from_secs_f64(ms / 1000.0))
        }
        _ => Err(format!(
            "{s:?} is not a number of milliseconds from 0 to 1000"
        )),
    }
}

/// Parses an IPv4 CIDR such as 10.43.0.0/16.
pub fn parse_cidr(s: &str) -> anyhow::Result<(Ipv4Addr, u8)> {
    let (ip, bits) = s
        .split_once('/')
        .with_context(|| format!("{s:?} is not a CIDR (expected e.g. 10.43.0.0/16)"))?;
    let ip: Ipv4Addr = ip.parse().with_context(|| format!("{s:?}: bad address"))?;
    let bits: u8 = bits
        .parse()
        .with_context(|| format!("{s:?}: bad prefix length"))?;
    if bits > 32 {
        bail!("{s:?}: prefix length over 32");
    }
    Ok((ip, bits))
}

/// A client for an in-process component, with its own certificate (CN
/// `user`) and User-Agent, talking to this server over TLS like any other.
async fn component_client(
    api: &kelson_apiserver::Running,
    user: &str,
    agent: &str,
) -> anyhow::Result<kube::Client> {
    let pair = api.pki.issue_client(user, &[])?;
    let host = if api.addr.ip().is_unspecified() {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else {
        api.addr.ip()
    };
    let url = format!(
        "https://{}",
        std::net::SocketAddr::new(host, api.addr.port())
    );
    kelson_runtime::client::install_crypto_provider();
    Ok(kelson_runtime::client_from_pem(
        &url,
        &api.pki.ca.cert_pem,
        &pair.cert_pem,
        &pair.key_pem,
        agent,
    )
    .await?)
}

/// The agent this server runs for its own machine: it needs no join, the
/// server issues its node credentials directly.
fn local_agent_config(
    args: &ServerArgs,
    api: &kelson_apiserver::Running,
) -> anyhow::Result<kelson_agent::agent::AgentConfig> {
    let node_name = crate::agent_cmd::node_name(args.agent.node_name.as_deref());
    let node_ip = args
        .agent
        .node_ip
        .or_else(kelson_agent::agent::detect_node_ip)
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
    // The name is tied to this machine as a joined node's is, so no agent
    // elsewhere can join under it.
    let password = kelson_agent::join::load_or_create_node_password(
        &kelson_agent::agent::AgentLayout::new(&args.data_dir).root,
    )
    .context("the node password")?;
    kelson_apiserver::join::check_node_password(
        &args
            .data_dir
            .join("server")
            .join(kelson_apiserver::join::NODE_PASSWORDS_DIR),
        &node_name,
        &password,
        false,
    )
    .map_err(|e| anyhow::anyhow!("keeping the node password: {}", e.message))?;
    let client = api
        .pki
        .issue_client(&format!("system:node:{node_name}"), &["system:nodes"])
        .context("issuing the node's client certificate")?;
    let names = kelson_apiserver::pki::ServingNames {
        dns: vec![node_name.clone(), "localhost".to_string()],
        ips: vec![node_ip, IpAddr::V4(Ipv4Addr::LOCALHOST)],
    };
    let serving = api
        .pki
        .issue_kubelet_serving(&node_name, &names)
        .context("issuing the kubelet's serving certificate")?;
    let host = if api.addr.ip().is_unspecified() {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else {
        api.addr.ip()
    };
    Ok(kelson_agent::agent::AgentConfig {
        data_dir: args.data_dir.clone(),
        server: format!(
            "https://{}",
            std::net::SocketAddr::new(host, api.addr.port())
        ),
        credentials: kelson_agent::join::NodeCredentials {
            ca_pem: api.pki.ca.cert_pem.clone(),
            client_cert_pem: client.cert_pem,
            client_key_pem: client.key_pem,
            serving_cert_pem: serving.cert_pem,
            serving_key_pem: serving.key_pem,
        },
        node_name,
        node_ip,
        container_runtime_endpoint: args.agent.container_runtime_endpoint.clone(),
        kubelet_port: args.agent.kubelet_port,
        pod_logs_dir: args.agent.pod_logs_dir.clone(),
        cgroup_root: args.agent.cgroup_root.clone(),
    })
}

pub async fn run(args: ServerArgs) -> anyhow::Result<()> {
    // Handle signals from the start: a stop that arrives while the API
    // server is still starting must still shut down cleanly.
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let service_cidr = parse_cidr(&args.service_cidr).context("--service-cidr")?;
    parse_cidr(&args.cluster_cidr).context("--cluster-cidr")?;
    tracing::info!(version = VERSION, data_dir = %args.data_dir.display(), "starting kelson server");
    let server_dir = args.data_dir.join("server");
    std::fs::create_dir_all(&server_dir)
        .with_context(|| format!("creating {}", server_dir.display()))?;
    // Cluster state and credentials live here: root only.
    std::fs::set_permissions(&server_dir, std::fs::Permissions::from_mode(0o700))?;

    let socket = admin_socket_path(&args.data_dir);
    if tokio::net::UnixStream::connect(&socket).await.is_ok() {
        bail!(
            "another kelson server is already running with data dir {}",
            args.data_dir.display()
        );
    }
    let path = store_path(&args.data_dir);
    let mut store_options = Options::default();
    if let Some(interval) = args.store_commit_interval_ms {
        store_options.commit_interval = interval;
    }
    if let Some(gap) = args.store_commit_gap_ms {
        store_options.commit_gap = gap;
    }
    let store = EmbeddedStore::open(&path, store_options)
        .await
        .with_context(|| format!("opening the store at {}", path.display()))?;
    let status = store.status().await?;
    tracing::info!(
        path = %path.display(),
        revision = status.revision,
        compacted = status.compacted,
        "store ready"
    );
    let store = Arc::new(store);
    let dyn_store: Arc<dyn Store> = store.clone();

    // A socket file left by a server that was killed is stale: nothing
    // answered on it above.
    let _ = std::fs::remove_file(&socket);
    let listener = UnixListener::bind(&socket)
        .with_context(|| format!("listening on {}", socket.display()))?;
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600))?;
    let admin_task = tokio::spawn(admin::serve(listener, store.clone()));
    tracing::info!(socket = %socket.display(), "admin socket listening");

    let kubeconfig = args
        .write_kubeconfig
        .clone()
        .unwrap_or_else(|| args.data_dir.join("kubeconfig.yaml"));
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    let config = kelson_apiserver::Config {
        bind_address: args.bind_address,
        https_port: args.https_port,
        tls_dir: server_dir.join("tls"),
        kubeconfig_path: kubeconfig.clone(),
        service_cidr,
        token_auth_file: args.token_auth_file.clone(),
        hostname,
        git_commit: crate::COMMIT.to_string(),
    };
    let api = kelson_apiserver::start(config, dyn_store)
        .await
        .context("starting the API server")?;
    tracing::info!(addr = %api.addr, "API server ready");
    tracing::info!(path = %kubeconfig.display(), "wrote kubeconfig");
    let components = CancellationToken::new();
    let controllers = if args.disable_controller_manager {
        None
    } else {
        let client = component_client(
            &api,
            "system:kube-controller-manager",
            "kelson-controller-manager",
        )
        .await
        .context("a client for the controller manager")?;
        let options = kelson_controllers::Options {
            root_ca_pem: api.pki.ca.cert_pem.clone(),
            cluster_cidr: args.cluster_cidr.clone(),
            ..Default::default()
        };
        Some(tokio::spawn(
            crate::components::controller_manager_in_server(
                client,
                options,
                components.child_token(),
            ),
        ))
    };
    let scheduler = if args.disable_scheduler {
        None
    } else {
        let client = component_client(&api, "system:kube-scheduler", "kelson-scheduler")
            .await
            .context("a client for the scheduler")?;
        Some(tokio::spawn(crate::components::scheduler_in_server(
            client,
            components.child_token(),
        )))
    };

    let agent_stop = CancellationToken::new();
    let agent = if args.disable_agent {
        None
    } else {
        let cfg = local_agent_config(&args, &api)?;
        tracing::info!(node = %cfg.node_name, node_ip = %cfg.node_ip, "starting the node agent");
        let stop = agent_stop.clone();
        Some(tokio::spawn(async move {
            if let Err(e) = kelson_agent::agent::run(cfg, stop).await {
                tracing::error!(error = format!("{e:#}"), "node agent stopped");
            }
        }))
    };

    tokio::select! {
        _ = term.recv() => tracing::info!("received SIGTERM, shutting down"),
        _ = int.recv() => tracing::info!("received SIGINT, shutting down"),
    }
    // The node first (it stops containerd; containers keep running), then
    // the other components, while the API server can still take their last
    // writes (the Lease release).
    agent_stop.cancel();
    if let Some(task) = agent {
        if tokio::time::timeout(std::time::Duration::from_secs(15), task)
            .await
            .is_err()
        {
            tracing::warn!("the node agent did not stop within 15 s");
        }
    }
    components.cancel();
    for (name, task) in [
        ("controller manager", controllers),
        ("scheduler", scheduler),
    ] {
        if let Some(task) = task {
            if tokio::time::timeout(std::time::Duration::from_secs(5), task)
                .await
                .is_err()
            {
                tracing::warn!("the {name} did not stop within 5 s");
            }
        }
    }
    api.stop().await;
    admin_task.abort();
    let _ = admin_task.await;
    let _ = std::fs::remove_file(&socket);
    // Connections finishing up may hold the store a moment longer.
    let mut store = store;
    for _ in 0..50 {
        match Arc::try_unwrap(store) {
            Ok(s) => {
                s.close().await;
                tracing::info!("kelson server stopped");
                return Ok(());
            }
            Err(s) => {
                store = s;
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        }
    }
    tracing::warn!("store still in use at shutdown; every write is already on disk");
    tracing::info!("kelson server stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_interval_is_milliseconds_within_a_second() {
        assert_eq!(
            parse_interval_ms("2.5"),
            Ok(std::time::Duration::from_micros(2500))
        );
        assert_eq!(parse_interval_ms("0"), Ok(std::time::Duration::ZERO));
        for bad in ["-1", "1001", "3ms", "", "NaN"] {
            assert!(parse_interval_ms(bad).is_err(), "{bad}");
        }
    }
}
