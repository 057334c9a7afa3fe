//! Shared by the integration tests: the real API server in-process on
//! 127.0.0.1 (embedded store in a temporary directory) and a minimal HTTPS
//! client that authenticates with the cluster's admin certificate.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use kelson_apiserver::Running;
use kelson_store::{Durability, EmbeddedStore, Options, Store};
use rustls_pki_types::ServerName;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A client TLS connection to the server.
pub type Tls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

pub struct Server {
    pub running: Running,
    pub tls: Arc<rustls::ClientConfig>,
    /// Holds the store, TLS material and kubeconfig; removed on drop. Not
    /// every test binary reads it.
    #[allow(dead_code)]
    pub dir: tempfile::TempDir,
}

impl Server {
    pub async fn start() -> Server {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(
            dir.path().join("state.redb"),
            Options {
                durability: Durability::NoSync,
                ..Options::default()
            },
        )
        .await
        .unwrap();
        let store: Arc<dyn Store> = Arc::new(store);
        let config = kelson_apiserver::Config {
            bind_address: IpAddr::V4(Ipv4Addr::LOCALHOST),
            https_port: 0,
            tls_dir: dir.path().join("tls"),
            kubeconfig_path: dir.path().join("kubeconfig.yaml"),
            service_cidr: (Ipv4Addr::new(10, 43, 0, 0), 16),
            token_auth_file: None,
            hostname: "localhost".to_string(),
            git_commit: "test".to_string(),
        };
        let running = kelson_apiserver::start(config, store).await.unwrap();
        let mut roots = rustls::RootCertStore::empty();
        for c in running.pki.ca.cert_der() {
            roots.add(c).unwrap();
        }
        let mut tls = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_client_auth_cert(
                running.pki.admin.cert_der(),
                running.pki.admin.key_der().unwrap(),
            )
            .unwrap();
        // The requests are written by hand as HTTP/1.1.
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        Server {
            running,
            tls: Arc::new(tls),
            dir,
        }
    }

    /// A fresh TLS connection to the server.
    pub async fn connect(&self) -> Tls {
        let tcp = tokio::net::TcpStream::connect(self.running.addr)
            .await
            .unwrap();
        let connector = tokio_rustls::TlsConnector::from(self.tls.clone());
        let name = ServerName::IpAddress(Ipv4Addr::LOCALHOST.into());
        connector.connect(name, tcp).await.unwrap()
    }

    /// One JSON request on a fresh connection (PATCH as a merge patch),
    /// read to the end: (status, head, body).
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> (u16, String, Vec<u8>) {
        self.call_accept(method, path, body, "application/json")
            .await
    }

    /// [`Server::call`] asking for the representation `accept`.
    pub async fn call_accept(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        accept: &str,
    ) -> (u16, String, Vec<u8>) {
        let payload = body.map(|b| b.to_string()).unwrap_or_default();
        let ctype = if method == "PATCH" {
            "application/merge-patch+json"
        } else {
            "application/json"
        };
        let mut tls = self.connect().await;
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: {accept}\r\n\
             Content-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{payload}",
            payload.len()
        );
        tls.write_all(req.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        // The server closes the connection after answering; a TLS
        // close_notify may be missing, which is not an error here.
        let _ = tokio::time::timeout(Duration::from_secs(20), tls.read_to_end(&mut raw)).await;
        split_response(&raw)
    }

    /// [`Server::call`] with the body read as JSON (`null` when it is not).
    pub async fn json(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let (code, _, body) = self.call(method, path, body).await;
        (code, serde_json::from_slice(&body).unwrap_or(Value::Null))
    }
}

/// Splits a raw HTTP/1.1 response into (status, head, body), undoing
/// chunked transfer encoding.
pub fn split_response(raw: &[u8]) -> (u16, String, Vec<u8>) {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("response has headers");
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut body = raw[split + 4..].to_vec();
    let code: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status line");
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    (code, head, body)
}

/// The data of a chunked body; stops at the last chunk or where it is cut.
fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(i) = b.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(String::from_utf8_lossy(&b[..i]).trim(), 16).unwrap_or(0);
        if size == 0 || b.len() < i + 2 + size {
            break;
        }
        let start = i + 2;
        out.extend_from_slice(&b[start..start + size]);
        b = &b[(start + size + 2).min(b.len())..];
    }
    out
}

/// A container spec with only a name and an image.
#[allow(dead_code)] // not every test binary builds pods
pub fn container(name: &str) -> Value {
    json!({"name": name, "image": "busybox"})
}
