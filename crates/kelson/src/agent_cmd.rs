//! `kelson agent`: joins this machine to a cluster as a node (once, with
//! the cluster's node token) and runs the node agent: containerd, the pod
//! network and the kubelet, until SIGTERM or SIGINT.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use kelson_agent::agent::{self, AgentConfig};
use kelson_agent::join::{self, NodeCredentials};

use crate::node_args::NodeArgs;
use crate::DEFAULT_DATA_DIR;

#[derive(clap::Args)]
pub struct AgentArgs {
    /// The API server to join, https://HOST:PORT
    #[arg(long, env = "KELSON_URL")]
    pub server: String,
    /// The cluster's node token (DATA_DIR/server/node-token on a server);
    /// needed only for the first start, later starts reuse the credentials
    #[arg(long, env = "KELSON_TOKEN", conflicts_with = "token_file")]
    pub token: Option<String>,
    /// File holding the node token
    #[arg(long, env = "KELSON_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// Folder holding all of the agent's state
    #[arg(long, default_value = DEFAULT_DATA_DIR, env = "KELSON_DATA_DIR")]
    pub data_dir: PathBuf,
    #[command(flatten)]
    pub node: NodeArgs,
}

/// The token in a token file: its content without surrounding whitespace.
pub fn read_token_file(path: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the token file {}", path.display()))?;
    let token = text.trim();
    if token.is_empty() {
        bail!("the token file {} is empty", path.display());
    }
    Ok(token.to_string())
}

/// `--token` or `--token-file`, if either was given.
fn token(args: &AgentArgs) -> anyhow::Result<Option<String>> {
    if let Some(t) = &args.token {
        let t = t.trim();
        if t.is_empty() {
            bail!("--token is empty");
        }
        return Ok(Some(t.to_string()));
    }
    args.token_file.as_deref().map(read_token_file).transpose()
}

/// The node name: `--node-name`, else the hostname, lowercased as
/// upstream's kubelet does.
pub fn node_name(flag: Option<&str>) -> String {
    flag.map(str::to_string)
        .unwrap_or_else(kelson_runtime::hostname)
        .trim()
        .to_lowercase()
}

pub async fn run(args: AgentArgs) -> anyhow::Result<()> {
    if !args.server.starts_with("https://") {
        bail!("--server must be an https:// URL, got {:?}", args.server);
    }
    let server = args.server.trim_end_matches('/').to_string();
    let node_name = node_name(args.node.node_name.as_deref());
    let node_ip = args
        .node
        .node_ip
        .or_else(agent::detect_node_ip)
        .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));
    // Signals first: a stop while joining must still end the process.
    let cancel = kelson_runtime::shutdown_on_signals()?;

    let tls = agent::credentials_dir(&args.data_dir);
    let credentials = match NodeCredentials::load(&tls)
        .with_context(|| format!("loading the node credentials from {}", tls.display()))?
    {
        Some(c) => {
            tracing::info!(dir = %tls.display(), "using the saved node credentials");
            c
        }
        None => {
            let Some(token) = token(&args)? else {
                bail!(
                    "this node has not joined yet ({} holds no credentials): pass --token or --token-file",
                    tls.display()
                );
            };
            tracing::info!(%server, node = %node_name, "joining the cluster");
            let node_ips = [node_ip];
            let agent_dir = agent::AgentLayout::new(&args.data_dir).root;
            let password =
                join::load_or_create_node_password(&agent_dir).context("the node password")?;
            let creds = tokio::select! {
                r = join::join(&server, &token, &node_name, &node_ips, &password) => r.context("joining the cluster")?,
                _ = cancel.cancelled() => return Ok(()),
            };
            creds
                .save(&tls)
                .with_context(|| format!("saving the node credentials to {}", tls.display()))?;
            creds
        }
    };

    let cfg = AgentConfig {
        data_dir: args.data_dir.clone(),
        server,
        credentials,
        node_name,
        node_ip,
        container_runtime_endpoint: args.node.container_runtime_endpoint.clone(),
        kubelet_port: args.node.kubelet_port,
        pod_logs_dir: args.node.pod_logs_dir.clone(),
        cgroup_root: args.node.cgroup_root.clone(),
    };
    tracing::info!(node = %cfg.node_name, node_ip = %cfg.node_ip, "starting the node agent");
    agent::run(cfg, cancel).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        agent: AgentArgs,
    }

    fn parse(args: &[&str]) -> Result<AgentArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("agent").chain(args.iter().copied())).map(|c| c.agent)
    }

    #[test]
    fn token_file_is_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("token");
        std::fs::write(&f, "K10abc::server:secret\n").unwrap();
        assert_eq!(read_token_file(&f).unwrap(), "K10abc::server:secret");
        std::fs::write(&f, " \n").unwrap();
        assert!(read_token_file(&f).is_err());
        assert!(read_token_file(&dir.path().join("missing")).is_err());
    }

    #[test]
    fn flags_and_defaults() {
        let a = parse(&["--server", "https://10.0.0.1:6443", "--token", "t"]).unwrap();
        assert_eq!(a.server, "https://10.0.0.1:6443");
        assert_eq!(a.data_dir, PathBuf::from("/var/lib/kelson"));
        assert_eq!(a.node.kubelet_port, 10250);
        assert_eq!(token(&a).unwrap().as_deref(), Some("t"));
        // --server is required; --token and --token-file exclude each other.
        assert!(parse(&["--token", "t"]).is_err());
        assert!(parse(&[
            "--server",
            "https://x:6443",
            "--token",
            "t",
            "--token-file",
            "/f"
        ])
        .is_err());
        let a = parse(&[
            "--server",
            "https://x:6443",
            "--node-name",
            "Node-A",
            "--node-ip",
            "192.0.2.4",
            "--kubelet-port",
            "10255",
            "--container-runtime-endpoint",
            "unix:///run/containerd/containerd.sock",
        ])
        .unwrap();
        assert_eq!(node_name(a.node.node_name.as_deref()), "node-a");
        assert_eq!(a.node.node_ip, Some("192.0.2.4".parse().unwrap()));
        assert_eq!(a.node.kubelet_port, 10255);
        assert_eq!(token(&a).unwrap(), None);
    }
}
