//! Kelson's API server: the Kubernetes REST API over the store.
//!
//! Objects are kept as JSON in the store under `/registry/<group>/<resource>/`
//! with their resourceVersion taken from the store revision. Reads and
//! watches are served from per-resource watch caches ([`cache`]); writes go
//! through the generic registry ([`registry`]) and per-type strategies
//! ([`strategy`]) to the store. See ARCHITECTURE.md.

pub mod admission;
pub mod authn;
pub mod bootstrap;
pub mod cache;
pub mod convert;
pub mod discovery;
pub mod fieldmanager;
pub mod handler;
pub mod hooks;
pub mod join;
pub mod list;
pub mod meta;
pub mod negotiate;
pub mod nodeauth;
pub mod nodeproxy;
pub mod openapi;
pub mod patch;
pub mod pki;
pub mod registry;
pub mod resources;
pub mod scale;
pub mod server;
pub mod status;
pub mod strategy;
pub mod subresources;
pub mod table;
pub mod watch;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use kelson_store::Store;

pub use handler::Api;

/// How the API server is started (the `kelson server` flags it uses).
#[derive(Debug, Clone)]
pub struct Config {
    pub bind_address: IpAddr,
    pub https_port: u16,
    /// DATA_DIR/server/tls
    pub tls_dir: PathBuf,
    pub kubeconfig_path: PathBuf,
    pub service_cidr: (Ipv4Addr, u8),
    pub token_auth_file: Option<PathBuf>,
    pub hostname: String,
    pub git_commit: String,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Pki(#[from] pki::PkiError),
    #[error(transparent)]
    Serve(#[from] server::ServeError),
    #[error(transparent)]
    Authn(#[from] authn::AuthnError),
    #[error("bootstrapping the API: {0}")]
    Api(#[from] status::ApiError),
    #[error(transparent)]
    NodeProxy(#[from] nodeproxy::NodeProxyError),
    #[error(transparent)]
    Join(#[from] join::JoinError),
    #[error("the service CIDR {0}/{1} has no room for the kubernetes Service")]
    ServiceCidr(Ipv4Addr, u8),
}

/// The first address of a CIDR after the network address: the
/// `kubernetes` Service's cluster IP.
pub fn first_service_ip(cidr: (Ipv4Addr, u8)) -> Result<Ipv4Addr, StartError> {
    let (net, bits) = cidr;
    if bits >= 31 {
        return Err(StartError::ServiceCidr(net, bits));
    }
    let mask = if bits == 0 {
        0
    } else {
        u32::MAX << (32 - bits)
    };
    Ok(Ipv4Addr::from((u32::from(net) & mask) + 1))
}

/// A running API server.
pub struct Running {
    pub api: Arc<Api>,
    pub addr: SocketAddr,
    pub pki: Arc<pki::Pki>,
    /// The token agents join with (DATA_DIR/server/node-token).
    pub node_token: String,
    shutdown: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.task.await;
    }
}

/// Starts serving: certificates, kubeconfig, listener, caches, bootstrap
/// objects. Returns once `/readyz` is OK.
pub async fn start(config: Config, store: Arc<dyn Store>) -> Result<Running, StartError> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let service_ip = first_service_ip(config.service_cidr)?;
    let names = pki::ServingNames::new(
        &config.hostname,
        config.bind_address,
        IpAddr::V4(service_ip),
    );
    let pki = Arc::new(pki::Pki::load_or_create(&config.tls_dir, &names)?);
    // The token lives beside tls/: DATA_DIR/server/node-token.
    let server_dir = config.tls_dir.parent().unwrap_or(&config.tls_dir);
    let node_token = join::load_or_create_node_token(server_dir, &pki.ca.cert_pem)?;
    let tokens = match &config.token_auth_file {
        Some(p) => authn::TokenFile::load(p)?,
        None => authn::TokenFile::default(),
    };
    let listener = server::bind(SocketAddr::new(config.bind_address, config.https_port)).await?;
    let addr = listener
        .local_addr()
        .map_err(|source| server::ServeError::Bind {
            addr: SocketAddr::new(config.bind_address, config.https_port),
            source,
        })?;
    let host = if config.bind_address.is_unspecified() {
        "127.0.0.1".to_string()
    } else {
        match config.bind_address {
            IpAddr::V6(a) => format!("[{a}]"),
            a => a.to_string(),
        }
    };
    let url = format!("https://{host}:{}", addr.port());
    let kubeconfig = pki::kubeconfig(&url, &pki.ca.cert_pem, &pki.admin);
    if let Some(dir) = config.kubeconfig_path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    pki::write_private(&config.kubeconfig_path, kubeconfig.as_bytes())?;

    let registry = registry::Registry::new(store);
    let api = Arc::new(Api::new(
        registry,
        resources::built_in(),
        format!("{host}:{}", addr.port()),
        config.git_commit.clone(),
    ));
    let kubelet = nodeproxy::KubeletClient::new(&pki.ca, &pki.kubelet_client)?;
    let _ = api.kubelet.set(Arc::new(kubelet));
    let _ = api.join.set(Arc::new(join::Joiner::new(
        node_token.clone(),
        pki.clone(),
        server_dir,
    )));
    let tls = server::tls_config(&pki)?;
    let shutdown = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(server::serve(
        listener,
        tls,
        api.clone(),
        Arc::new(tokens),
        shutdown.clone(),
    ));
    // Caches for every built-in storage, then the bootstrap objects and the
    // custom resources; ready after that.
    let mut seen = std::collections::HashSet::new();
    for r in api.resources().iter() {
        if seen.insert(r.key_prefix()) {
            api.registry.cache(r).await?;
        }
    }
    bootstrap::ensure(&api, service_ip, addr.port()).await?;
    hooks::sync_crds(&api).await;
    api.ready.store(true, Ordering::Release);
    Ok(Running {
        api,
        addr,
        pki,
        node_token,
        shutdown,
        task,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_service_ip_of_default_cidr() {
        assert_eq!(
            first_service_ip(("10.43.0.0".parse().unwrap(), 16)).unwrap(),
            Ipv4Addr::new(10, 43, 0, 1)
        );
        assert_eq!(
            first_service_ip(("10.96.5.9".parse().unwrap(), 12)).unwrap(),
            Ipv4Addr::new(10, 96, 0, 1)
        );
        assert!(first_service_ip(("10.0.0.0".parse().unwrap(), 32)).is_err());
    }
}
