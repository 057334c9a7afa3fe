//! Clients for Kelson's components: kube-rs over TLS with the component's
//! own client certificate, tuned for an API server on the same machine or
//! network.
//!
//! kube-rs 5 speaks HTTP/1.1 only (its rustls connector offers no `h2` in
//! ALPN), so each watch holds its own pooled connection; that is cheap
//! against a local API server.

use std::path::Path;
use std::time::Duration;

use base64::Engine;
use kube::config::{KubeConfigOptions, Kubeconfig};

/// Dialling a local API server that does not answer within this is down.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A request body that cannot be written within this is stuck.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("reading kubeconfig {path}: {source}")]
    Read {
        path: String,
        source: kube::config::KubeconfigError,
    },
    #[error("reading the kubeconfig was interrupted: {0}")]
    Join(String),
    #[error("kubeconfig: {0}")]
    Kubeconfig(#[from] kube::config::KubeconfigError),
    #[error("user agent {0:?} is not a valid header value")]
    UserAgent(String),
    #[error("building the client: {0}")]
    Build(#[from] kube::Error),
}

/// The User-Agent a component sends, in upstream's layout
/// (`kube-scheduler/v1.33.0 (linux/amd64) kubernetes/abcdef`):
/// `kelson-scheduler/v0.1.0 (linux/x86_64) kelson`. The API server takes
/// the part before the first `/` as the default field manager.
pub fn user_agent(component: &str) -> String {
    format!(
        "{component}/v{} ({}/{}) kelson",
        env!("CARGO_PKG_VERSION"),
        std::env::consts::OS,
        std::env::consts::ARCH
    )
}

/// A client from a kubeconfig file (its current context), for `component`
/// (e.g. "kelson-scheduler").
pub async fn client_from_kubeconfig(
    path: &Path,
    component: &str,
) -> Result<kube::Client, ClientError> {
    let owned = path.to_path_buf();
    // Reading the file is blocking I/O.
    let kubeconfig = tokio::task::spawn_blocking(move || Kubeconfig::read_from(&owned))
        .await
        .map_err(|e| ClientError::Join(e.to_string()))?
        .map_err(|source| ClientError::Read {
            path: path.display().to_string(),
            source,
        })?;
    client_from_parsed(kubeconfig, component).await
}

/// A client from kubeconfig YAML held in memory.
pub async fn client_from_kubeconfig_yaml(
    yaml: &str,
    component: &str,
) -> Result<kube::Client, ClientError> {
    let kubeconfig = Kubeconfig::from_yaml(yaml)?;
    client_from_parsed(kubeconfig, component).await
}

/// A client for `server` (e.g. `https://127.0.0.1:6443`) that trusts
/// `ca_pem` and authenticates with a client certificate and key (PEM).
pub async fn client_from_pem(
    server: &str,
    ca_pem: &str,
    cert_pem: &str,
    key_pem: &str,
    component: &str,
) -> Result<kube::Client, ClientError> {
    client_from_kubeconfig_yaml(
        &kubeconfig_yaml(server, ca_pem, cert_pem, key_pem),
        component,
    )
    .await
}

/// A one-context kubeconfig with embedded credentials, as `kelson server`
/// writes them: what a component started as its own process is given.
pub fn kubeconfig_yaml(server: &str, ca_pem: &str, cert_pem: &str, key_pem: &str) -> String {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
    // JSON strings are valid YAML scalars, so the server URL needs no
    // further quoting.
    let server = serde_json::Value::String(server.to_string());
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- cluster:\n    certificate-authority-data: {}\n    server: {server}\n  name: default\n\
         contexts:\n- context:\n    cluster: default\n    user: default\n  name: default\n\
         current-context: default\npreferences: {{}}\n\
         users:\n- name: default\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\n",
        b64(ca_pem),
        b64(cert_pem),
        b64(key_pem),
    )
}

async fn client_from_parsed(
    kubeconfig: Kubeconfig,
    component: &str,
) -> Result<kube::Client, ClientError> {
    install_crypto_provider();
    let mut config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
    tune(&mut config, component)?;
    Ok(kube::client::ClientBuilder::try_from(config)?
        .with_layer(&tower::util::MapResponseLayer::new(
            crate::trim::trim_response,
        ))
        .build())
}

/// Settings for a component talking to a nearby API server.
fn tune(config: &mut kube::Config, component: &str) -> Result<(), ClientError> {
    // kube-rs would pick up HTTPS_PROXY from the environment; the API
    // server is local and this build has no proxy support anyway.
    config.proxy_url = None;
    config.connect_timeout = Some(CONNECT_TIMEOUT);
    config.write_timeout = Some(WRITE_TIMEOUT);
    // No read timeout: watches stay open for minutes (kube-rs' watcher has
    // its own idle timeout), and requests that wait are bounded by callers.
    config.read_timeout = None;
    let agent = user_agent(component);
    let value =
        http::HeaderValue::from_str(&agent).map_err(|_| ClientError::UserAgent(agent.clone()))?;
    config
        .headers
        .retain(|(name, _)| name != http::header::USER_AGENT);
    config.headers.push((http::header::USER_AGENT, value));
    Ok(())
}

/// rustls needs a process-wide crypto provider; ring is the one the
/// workspace builds. A provider installed earlier (e.g. by the API server
/// in the same process) is kept.
pub fn install_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_agent_names_the_component_first() {
        let ua = user_agent("kelson-scheduler");
        assert!(ua.starts_with("kelson-scheduler/v"), "{ua}");
        // The default field manager upstream is the part before '/'.
        assert_eq!(ua.split('/').next(), Some("kelson-scheduler"));
        assert!(http::HeaderValue::from_str(&ua).is_ok());
    }

    #[test]
    fn kubeconfig_yaml_round_trips_through_kube() {
        let yaml = kubeconfig_yaml("https://127.0.0.1:6443", "CA", "CERT", "KEY");
        let kc = Kubeconfig::from_yaml(&yaml).unwrap();
        assert_eq!(kc.current_context.as_deref(), Some("default"));
        let cluster = kc.clusters[0].cluster.as_ref().unwrap();
        assert_eq!(cluster.server.as_deref(), Some("https://127.0.0.1:6443"));
        assert_eq!(
            cluster.certificate_authority_data.as_deref(),
            Some(
                base64::engine::general_purpose::STANDARD
                    .encode("CA")
                    .as_str()
            )
        );
        let user = kc.auth_infos[0].auth_info.as_ref().unwrap();
        assert_eq!(
            user.client_certificate_data.as_deref(),
            Some(
                base64::engine::general_purpose::STANDARD
                    .encode("CERT")
                    .as_str()
            )
        );
    }

    #[tokio::test]
    async fn tuned_config_drops_proxy_and_sets_agent() {
        let yaml = kubeconfig_yaml("https://127.0.0.1:6443", "CA", "CERT", "KEY");
        let kc = Kubeconfig::from_yaml(&yaml).unwrap();
        let mut config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
            .await
            .unwrap();
        config.proxy_url = Some("http://proxy:3128".parse().unwrap());
        tune(&mut config, "kelson-controller-manager").unwrap();
        assert!(config.proxy_url.is_none());
        assert_eq!(config.connect_timeout, Some(CONNECT_TIMEOUT));
        let agents: Vec<_> = config
            .headers
            .iter()
            .filter(|(n, _)| n == http::header::USER_AGENT)
            .collect();
        assert_eq!(agents.len(), 1);
        assert!(agents[0]
            .1
            .to_str()
            .unwrap()
            .starts_with("kelson-controller-manager/"));
    }
}
