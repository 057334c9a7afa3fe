//! The node agent (`kelson agent`, and the agent inside `kelson server`):
//! containerd, images, the pod network and the kubelet, as k3s's agent.
//!
//! Layout under `DATA_DIR/agent`: `containerd/` (its root, state, socket,
//! config and log), `cni/net.d` (the conflist), `cni/networks` (host-local
//! allocations), `images/*.tar` (imported at every start), `kubelet/` (the
//! kubelet's root: pod volumes), `tls/` (the node's credentials, written by
//! `kelson agent` after joining).
//!
//! Stopping stops the kubelet, then containerd; containers keep running in
//! their shims (as with k3s), so a restarted agent adopts them again.

use crate::images::{self, agent_dir, images_dir};
use crate::join::NodeCredentials;
pub use crate::network::detect_node_ip;
use crate::network::{self, IpRouter, Router};
use anyhow::Context;
use kelson_cri::containerd::{Containerd, ContainerdOptions};
use kelson_kubelet::kubelet::KubeletConfig;
use kelson_kubelet::node::NodeConfig;
use kelson_kubelet::resources::CgroupDriver;
use kelson_kubelet::runtime::RuntimeConfig;
use kelson_kubelet::server::ServerConfig;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// The User-Agent (and default field manager) of the agent's requests.
pub const USER_AGENT: &str = "kelson-agent";
/// Upstream kubelet's default `--max-pods`.
pub const DEFAULT_MAX_PODS: u32 = 110;
/// Upstream kubelet's default `--port`.
pub const DEFAULT_KUBELET_PORT: u16 = 10250;
/// Where the CRI writes container logs (upstream's `/var/log/pods`).
pub const DEFAULT_POD_LOGS_DIR: &str = "/var/log/pods";
/// The cgroup parent of pods (upstream's `kubepods` under the cgroupfs
/// driver).
pub const DEFAULT_CGROUP_ROOT: &str = "/kubepods";
/// Upstream's default `--cluster-domain`.
pub const CLUSTER_DOMAIN: &str = "cluster.local";
/// The CNI conf dir of a runtime we do not configure ourselves (containerd's
/// default).
pub const EXTERNAL_CNI_CONF_DIR: &str = "/etc/cni/net.d";

/// Everything the agent runs with.
pub struct AgentConfig {
    pub data_dir: PathBuf,
    /// The API server, `https://host:port`.
    pub server: String,
    pub credentials: NodeCredentials,
    pub node_name: String,
    pub node_ip: IpAddr,
    /// A CRI socket to use instead of starting containerd
    /// (`unix:///path` or `/path`).
    pub container_runtime_endpoint: Option<String>,
    pub kubelet_port: u16,
    pub pod_logs_dir: PathBuf,
    pub cgroup_root: String,
}

impl AgentConfig {
    /// A config with upstream's defaults for the rest.
    pub fn new(
        data_dir: impl Into<PathBuf>,
        server: impl Into<String>,
        credentials: NodeCredentials,
        node_name: impl Into<String>,
        node_ip: IpAddr,
    ) -> Self {
        AgentConfig {
            data_dir: data_dir.into(),
            server: server.into(),
            credentials,
            node_name: node_name.into(),
            node_ip,
            container_runtime_endpoint: None,
            kubelet_port: DEFAULT_KUBELET_PORT,
            pod_logs_dir: PathBuf::from(DEFAULT_POD_LOGS_DIR),
            cgroup_root: DEFAULT_CGROUP_ROOT.to_string(),
        }
    }
}

/// The agent's directories under a data dir.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentLayout {
    /// `DATA_DIR/agent`, also containerd's data dir.
    pub root: PathBuf,
    pub images: PathBuf,
    pub kubelet: PathBuf,
    pub tls: PathBuf,
    /// host-local's allocation store.
    pub cni_networks: PathBuf,
    /// The pause image archive, rewritten at every start.
    pub pause_tar: PathBuf,
}

impl AgentLayout {
    pub fn new(data_dir: &Path) -> Self {
        let root = agent_dir(data_dir);
        AgentLayout {
            images: images_dir(data_dir),
            kubelet: root.join("kubelet"),
            tls: root.join("tls"),
            cni_networks: root.join("cni").join("networks"),
            pause_tar: root.join("pause.tar"),
            root,
        }
    }

    /// Creates the directories (the credentials dir stays private).
    pub fn create(&self) -> std::io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        for dir in [&self.root, &self.images, &self.kubelet, &self.cni_networks] {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::create_dir_all(&self.tls)?;
        std::fs::set_permissions(&self.tls, std::fs::Permissions::from_mode(0o700))
    }
}

/// Where the credentials of a data dir live (`DATA_DIR/agent/tls`).
pub fn credentials_dir(data_dir: &Path) -> PathBuf {
    AgentLayout::new(data_dir).tls
}

/// The kubelet's settings for this agent.
pub fn kubelet_config(cfg: &AgentConfig, layout: &AgentLayout) -> KubeletConfig {
    KubeletConfig {
        node: NodeConfig {
            name: cfg.node_name.clone(),
            node_ip: cfg.node_ip,
            kubelet_port: cfg.kubelet_port,
            labels: BTreeMap::new(),
            max_pods: DEFAULT_MAX_PODS,
            root_dir: layout.kubelet.clone(),
        },
        runtime: RuntimeConfig {
            node_name: cfg.node_name.clone(),
            root_dir: layout.kubelet.clone(),
            pod_logs_dir: cfg.pod_logs_dir.clone(),
            cgroup_driver: CgroupDriver::Cgroupfs,
            cgroup_root: cfg.cgroup_root.clone(),
            pause_image: kelson_cri::PAUSE_IMAGE.to_string(),
            // No cluster DNS yet: ClusterFirst pods fall back to the node's
            // resolv.conf, as upstream's kubelet does without --cluster-dns.
            cluster_dns: Vec::new(),
            cluster_domain: CLUSTER_DOMAIN.to_string(),
        },
        server: ServerConfig {
            // Upstream's kubelet listens on all addresses (--address 0.0.0.0).
            addr: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), cfg.kubelet_port),
            cert_pem: cfg.credentials.serving_cert_pem.clone(),
            key_pem: cfg.credentials.serving_key_pem.clone(),
            client_ca_pem: cfg.credentials.ca_pem.clone(),
            node_name: cfg.node_name.clone(),
        },
    }
}

/// Runs the agent until `cancel` (or until the kubelet fails).
pub async fn run(cfg: AgentConfig, cancel: CancellationToken) -> anyhow::Result<()> {
    let layout = AgentLayout::new(&cfg.data_dir);
    layout
        .create()
        .with_context(|| format!("creating {}", layout.root.display()))?;
    let mut containerd = match &cfg.container_runtime_endpoint {
        Some(endpoint) => Containerd::existing(endpoint)
            .with_context(|| format!("--container-runtime-endpoint {endpoint}"))?,
        None => Containerd::start(ContainerdOptions::new(&layout.root))
            .await
            .context("starting containerd")?,
    };
    let result = run_on(&cfg, &layout, &containerd, cancel).await;
    // Containers stay in their shims; only containerd itself stops.
    if let Err(e) = containerd.stop().await {
        tracing::warn!(error = %e, "stopping containerd");
    }
    result
}

/// The agent once the runtime is up.
async fn run_on(
    cfg: &AgentConfig,
    layout: &AgentLayout,
    containerd: &Containerd,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let socket = containerd.socket().to_path_buf();
    let managed = containerd.paths().is_some();
    if let Err(e) = import_images(&socket, layout).await {
        // A runtime we do not run may not be containerd (ctr cannot reach
        // it); it must then provide the pause image itself.
        if managed {
            return Err(e);
        }
        tracing::warn!(error = %e, "importing images into the external runtime");
    }
    let cri = containerd
        .connect()
        .await
        .context("connecting to the CRI")?;
    let client = kelson_runtime::client_from_pem(
        &cfg.server,
        &cfg.credentials.ca_pem,
        &cfg.credentials.client_cert_pem,
        &cfg.credentials.client_key_pem,
        USER_AGENT,
    )
    .await
    .context("building the API client")?;

    let cni_conf_dir = containerd
        .paths()
        .map(|p| p.cni_conf_dir.clone())
        .unwrap_or_else(|| PathBuf::from(EXTERNAL_CNI_CONF_DIR));
    let net_cancel = cancel.child_token();
    let net = tokio::spawn(run_network(
        client.clone(),
        cfg.node_name.clone(),
        cni_conf_dir,
        layout.cni_networks.clone(),
        Arc::new(IpRouter::host()),
        net_cancel.clone(),
    ));

    let kubelet = kelson_kubelet::kubelet::run(
        client,
        cri,
        kubelet_config(cfg, layout),
        cancel.child_token(),
    )
    .await;
    net_cancel.cancel();
    if let Err(e) = net.await {
        tracing::warn!(error = %e, "pod network task failed");
    }
    kubelet.context("kubelet")
}

/// The pause image, then `DATA_DIR/agent/images/*.tar`. Only a failed
/// pause import is an error: a bad archive in the images dir is logged and
/// the node still runs (it can pull images).
async fn import_images(socket: &Path, layout: &AgentLayout) -> anyhow::Result<()> {
    let tarball = kelson_cri::pause::image_tarball().context("building the pause image")?;
    tokio::fs::write(&layout.pause_tar, tarball)
        .await
        .with_context(|| format!("writing {}", layout.pause_tar.display()))?;
    kelson_cri::import::import_tarball(socket, &layout.pause_tar)
        .await
        .context("importing the pause image")?;
    match images::import_dir(socket, &layout.images).await {
        Ok(names) if names.is_empty() => {}
        Ok(names) => tracing::info!(images = ?names, "imported image archives"),
        Err(e) => {
            tracing::error!(error = %e, dir = %layout.images.display(), "importing image archives")
        }
    }
    Ok(())
}

/// The pod network of this node: once the node has its podCIDR, the CNI
/// config for it, then routes to the other nodes' pods until `cancel`.
pub async fn run_network(
    client: kube::Client,
    node_name: String,
    cni_conf_dir: PathBuf,
    ipam_dir: PathBuf,
    router: Arc<dyn Router>,
    cancel: CancellationToken,
) {
    let forward = router.clone();
    match tokio::task::spawn_blocking(move || forward.enable_ip_forward()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "enabling net.ipv4.ip_forward"),
        Err(e) => tracing::warn!(error = %e, "enabling net.ipv4.ip_forward"),
    }
    let Some(pod_cidr) = network::wait_for_pod_cidr(client.clone(), &node_name, &cancel).await
    else {
        return;
    };
    match network::write_conflist(&cni_conf_dir, &pod_cidr, &ipam_dir) {
        Ok(path) => tracing::info!(%pod_cidr, conflist = %path.display(), "pod network configured"),
        // Pods cannot get addresses; the runtime reports NetworkReady=false
        // and the node stays NotReady, which says enough.
        Err(e) => tracing::error!(error = %e, %pod_cidr, "writing the CNI config"),
    }
    network::run_routes(client, node_name, router, cancel).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds() -> NodeCredentials {
        NodeCredentials {
            ca_pem: "CA".into(),
            client_cert_pem: "CC".into(),
            client_key_pem: "CK".into(),
            serving_cert_pem: "SC".into(),
            serving_key_pem: "SK".into(),
        }
    }

    #[test]
    fn layout_is_under_data_dir_agent() {
        let l = AgentLayout::new(Path::new("/var/lib/kelson"));
        assert_eq!(l.root, Path::new("/var/lib/kelson/agent"));
        assert_eq!(l.images, Path::new("/var/lib/kelson/agent/images"));
        assert_eq!(l.kubelet, Path::new("/var/lib/kelson/agent/kubelet"));
        assert_eq!(l.tls, Path::new("/var/lib/kelson/agent/tls"));
        assert_eq!(
            l.cni_networks,
            Path::new("/var/lib/kelson/agent/cni/networks")
        );
    }

    #[test]
    fn layout_create_keeps_credentials_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let l = AgentLayout::new(dir.path());
        l.create().expect("create");
        l.create().expect("idempotent");
        for d in [&l.images, &l.kubelet, &l.cni_networks, &l.tls] {
            assert!(d.is_dir(), "{}", d.display());
        }
        let mode = std::fs::metadata(&l.tls)
            .expect("stat")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
    }

    #[test]
    fn kubelet_config_from_agent_config() {
        let mut cfg = AgentConfig::new(
            "/data",
            "https://10.0.0.1:6443",
            creds(),
            "node-a",
            "192.0.2.7".parse().expect("ip"),
        );
        cfg.kubelet_port = 10255;
        let k = kubelet_config(&cfg, &AgentLayout::new(&cfg.data_dir));
        assert_eq!(k.node.name, "node-a");
        assert_eq!(k.node.max_pods, 110);
        assert_eq!(k.node.kubelet_port, 10255);
        assert_eq!(k.node.root_dir, Path::new("/data/agent/kubelet"));
        assert_eq!(k.runtime.root_dir, Path::new("/data/agent/kubelet"));
        assert_eq!(k.runtime.pod_logs_dir, Path::new("/var/log/pods"));
        assert_eq!(k.runtime.cgroup_root, "/kubepods");
        assert_eq!(k.runtime.pause_image, "kelson.dev/pause:1");
        assert!(k.runtime.cluster_dns.is_empty());
        assert_eq!(k.runtime.cluster_domain, "cluster.local");
        assert_eq!(k.server.addr, "0.0.0.0:10255".parse().expect("addr"));
        assert_eq!(k.server.cert_pem, "SC");
        assert_eq!(k.server.key_pem, "SK");
        assert_eq!(k.server.client_ca_pem, "CA");
    }
}
