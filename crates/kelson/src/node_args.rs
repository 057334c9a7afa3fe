//! The node flags `kelson server` (for its own agent) and `kelson agent`
//! share.

use std::net::IpAddr;
use std::path::PathBuf;

#[derive(clap::Args, Clone, Debug)]
pub struct NodeArgs {
    /// Name of this node [default: the hostname]
    #[arg(long)]
    pub node_name: Option<String>,
    /// IP address the node reports and serves the kubelet on [default: the
    /// address of the default route's interface]
    #[arg(long)]
    pub node_ip: Option<IpAddr>,
    /// Port of the kubelet's HTTPS API
    #[arg(long, default_value_t = 10250)]
    pub kubelet_port: u16,
    /// Use this CRI socket (unix:///path) instead of starting containerd
    #[arg(long)]
    pub container_runtime_endpoint: Option<String>,
    /// Where containers' logs are kept
    #[arg(long, default_value = "/var/log/pods", hide = true)]
    pub pod_logs_dir: PathBuf,
    /// Cgroup under which pod cgroups are made
    #[arg(long, default_value = "/kubepods", hide = true)]
    pub cgroup_root: String,
}
