//! A real Kelson API server inside the test process, on 127.0.0.1 with a
//! free port and a temporary data dir, for components' integration tests:
//!
//! ```ignore
//! let cluster = TestCluster::start().await?;
//! let client = cluster.component_client("system:kube-scheduler", &[], "kelson-scheduler").await?;
//! // ... exercise the component ...
//! cluster.stop().await;
//! ```

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use kelson_apiserver::pki::{CertPair, Pki};
use kelson_store::{Durability, EmbeddedStore, Options, Store};

use crate::client::{self, ClientError};

#[derive(Debug, thiserror::Error)]
pub enum TestingError {
    #[error("creating the temporary data dir: {0}")]
    TempDir(std::io::Error),
    #[error("opening the store: {0}")]
    Store(#[from] kelson_store::Error),
    #[error("starting the API server: {0}")]
    Start(#[from] kelson_apiserver::StartError),
    #[error("issuing a client certificate: {0}")]
    Pki(#[from] kelson_apiserver::pki::PkiError),
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("the test cluster is stopped")]
    Stopped,
}

/// An API server over an embedded store in a temporary directory. Stop it
/// with [`TestCluster::stop`]; dropping it also removes the directory, and
/// the server ends with the test's runtime.
pub struct TestCluster {
    running: Option<kelson_apiserver::Running>,
    store: Option<Arc<EmbeddedStore>>,
    /// Removed when the cluster is dropped.
    pub dir: tempfile::TempDir,
    /// The admin (system:admin, group system:masters) kubeconfig.
    pub kubeconfig: PathBuf,
    /// `https://127.0.0.1:PORT`
    pub url: String,
    pub addr: SocketAddr,
}

impl TestCluster {
    pub async fn start() -> Result<TestCluster, TestingError> {
        let dir = tempfile::tempdir().map_err(TestingError::TempDir)?;
        let store = EmbeddedStore::open(
            dir.path().join("server").join("db").join("state.redb"),
            Options {
                // Tests need no power-loss safety; fsync would dominate.
                durability: Durability::NoSync,
                ..Options::default()
            },
        )
        .await?;
        let store = Arc::new(store);
        let dyn_store: Arc<dyn Store> = store.clone();
        let kubeconfig = dir.path().join("kubeconfig.yaml");
        let config = kelson_apiserver::Config {
            bind_address: IpAddr::V4(Ipv4Addr::LOCALHOST),
            // The kernel picks a free port; `Running::addr` tells which.
            https_port: 0,
            tls_dir: dir.path().join("server").join("tls"),
            kubeconfig_path: kubeconfig.clone(),
            service_cidr: (Ipv4Addr::new(10, 43, 0, 0), 16),
            token_auth_file: None,
            hostname: "localhost".to_string(),
            git_commit: "test".to_string(),
        };
        let running = kelson_apiserver::start(config, dyn_store).await?;
        let addr = running.addr;
        Ok(TestCluster {
            url: format!("https://127.0.0.1:{}", addr.port()),
            addr,
            running: Some(running),
            store: Some(store),
            dir,
            kubeconfig,
        })
    }

    /// The cluster's certificate authority and the admin credentials.
    pub fn pki(&self) -> Option<&Pki> {
        self.running.as_ref().map(|r| r.pki.as_ref())
    }

    /// A client as the cluster admin, sending `component`'s User-Agent.
    pub async fn admin_client(&self, component: &str) -> Result<kube::Client, TestingError> {
        Ok(client::client_from_kubeconfig(&self.kubeconfig, component).await?)
    }

    /// A fresh client certificate for `user` in `groups` (e.g.
    /// "system:kube-scheduler", no groups), signed by the cluster CA.
    pub fn issue(&self, user: &str, groups: &[&str]) -> Result<CertPair, TestingError> {
        let Some(running) = &self.running else {
            return Err(TestingError::Stopped);
        };
        Ok(running.pki.issue_client(user, groups)?)
    }

    /// A kubeconfig (YAML) for `user` in `groups`: what a component run as
    /// its own process would be given.
    pub fn kubeconfig_for(&self, user: &str, groups: &[&str]) -> Result<String, TestingError> {
        let pair = self.issue(user, groups)?;
        let ca = self
            .pki()
            .map(|p| p.ca.cert_pem.clone())
            .unwrap_or_default();
        Ok(client::kubeconfig_yaml(
            &self.url,
            &ca,
            &pair.cert_pem,
            &pair.key_pem,
        ))
    }

    /// A client authenticated as `user` in `groups` with its own
    /// certificate, as each component is.
    pub async fn component_client(
        &self,
        user: &str,
        groups: &[&str],
        component: &str,
    ) -> Result<kube::Client, TestingError> {
        let yaml = self.kubeconfig_for(user, groups)?;
        Ok(client::client_from_kubeconfig_yaml(&yaml, component).await?)
    }

    /// Stops the server and closes the store; the directory goes when
    /// `self` is dropped.
    pub async fn stop(mut self) {
        if let Some(running) = self.running.take() {
            running.stop().await;
        }
        let Some(mut store) = self.store.take() else {
            return;
        };
        // Connections finishing up may hold the store a moment longer.
        for _ in 0..100 {
            match Arc::try_unwrap(store) {
                Ok(s) => {
                    s.close().await;
                    return;
                }
                Err(s) => {
                    store = s;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    }
}
