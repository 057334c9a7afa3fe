//! The bench's HTTPS client: the admin kubeconfig's CA and client
//! certificate, TLS with the ring provider (as the server), and HTTP/2
//! connections that multiplex many requests and watches.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use base64::Engine;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("kubeconfig has no {0}")]
    Missing(&'static str),
    #[error("kubeconfig {field}: {reason}")]
    Bad { field: &'static str, reason: String },
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    #[error("connecting to {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("the server did not offer HTTP/2 (ALPN)")]
    NoHttp2,
    #[error("HTTP: {0}")]
    Http(#[from] hyper::Error),
    #[error("building a request: {0}")]
    Request(#[from] http::Error),
}

/// What the admin kubeconfig holds: where the server is and who we are.
pub struct Kubeconfig {
    pub server: String,
    ca: Vec<CertificateDer<'static>>,
    cert: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

/// The value of the first `key: value` line (the kubeconfig Kelson writes
/// has one cluster and one user, so a line scan is enough).
fn field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines().find_map(|line| {
        let rest = line.trim_start().strip_prefix(key)?.strip_prefix(':')?;
        Some(rest.trim().trim_matches('"'))
    })
}

fn pem_field(text: &str, key: &'static str) -> Result<Vec<u8>, ClientError> {
    let b64 = field(text, key).ok_or(ClientError::Missing(key))?;
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|e| ClientError::Bad {
            field: key,
            reason: e.to_string(),
        })
}

impl Kubeconfig {
    pub fn parse(text: &str) -> Result<Kubeconfig, ClientError> {
        let server = field(text, "server")
            .ok_or(ClientError::Missing("server"))?
            .to_string();
        let bad = |field: &'static str| {
            move |e: rustls_pki_types::pem::Error| ClientError::Bad {
                field,
                reason: e.to_string(),
            }
        };
        let ca_pem = pem_field(text, "certificate-authority-data")?;
        let ca = CertificateDer::pem_slice_iter(&ca_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(bad("certificate-authority-data"))?;
        let cert_pem = pem_field(text, "client-certificate-data")?;
        let cert = CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(bad("client-certificate-data"))?;
        let key_pem = pem_field(text, "client-key-data")?;
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(bad("client-key-data"))?;
        if ca.is_empty() {
            return Err(ClientError::Missing("certificate-authority-data"));
        }
        if cert.is_empty() {
            return Err(ClientError::Missing("client-certificate-data"));
        }
        Ok(Kubeconfig {
            server,
            ca,
            cert,
            key,
        })
    }

    pub fn load(path: &Path) -> Result<Kubeconfig, ClientError> {
        let text = std::fs::read_to_string(path).map_err(|source| ClientError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Kubeconfig::parse(&text)
    }

    /// A client configuration trusting only the cluster CA, presenting the
    /// admin certificate, offering HTTP/2 only.
    pub fn tls(&self) -> Result<Arc<rustls::ClientConfig>, ClientError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for c in &self.ca {
            roots.add(c.clone())?;
        }
        let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_client_auth_cert(self.cert.clone(), self.key.clone_key())?;
        cfg.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(cfg))
    }
}

/// One HTTP/2 connection to the API server; clones share it.
#[derive(Clone)]
pub struct Conn {
    send: SendRequest<Full<Bytes>>,
    base: String,
}

impl Conn {
    pub async fn open(
        addr: SocketAddr,
        tls: Arc<rustls::ClientConfig>,
    ) -> Result<Conn, ClientError> {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|source| ClientError::Connect { addr, source })?;
        let _ = tcp.set_nodelay(true);
        let name = ServerName::IpAddress(addr.ip().into());
        let stream = TlsConnector::from(tls)
            .connect(name, tcp)
            .await
            .map_err(|source| ClientError::Connect { addr, source })?;
        if stream.get_ref().1.alpn_protocol() != Some(b"h2") {
            return Err(ClientError::NoHttp2);
        }
        let (send, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .handshake(TokioIo::new(stream))
            .await?;
        tokio::spawn(async move {
            // Ends when every clone of the sender is gone or the server
            // closes; either way the requests on it report the error.
            let _ = conn.await;
        });
        Ok(Conn {
            send,
            base: format!("https://{addr}"),
        })
    }

    /// Sends a request and returns the response with its body unread.
    pub async fn start(
        &self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
    ) -> Result<Response<Incoming>, ClientError> {
        let patch = method == Method::PATCH;
        let mut b = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header(http::header::ACCEPT, "application/json");
        if body.is_some() {
            // The bench's patches are all merge patches.
            let kind = if patch {
                "application/merge-patch+json"
            } else {
                "application/json"
            };
            b = b.header(http::header::CONTENT_TYPE, kind);
        }
        let req = b.body(Full::new(body.unwrap_or_default()))?;
        let mut send = self.send.clone();
        send.ready().await?;
        Ok(send.send_request(req).await?)
    }

    /// Sends a request and reads the whole response.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        let resp = self.start(method, path, body).await?;
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_fields_of_a_k3s_style_kubeconfig() {
        let text = "apiVersion: v1\nclusters:\n- cluster:\n    certificate-authority-data: QUJD\n    server: https://127.0.0.1:6443\n  name: default\nusers:\n- name: default\n  user:\n    client-certificate-data: \"REVG\"\n";
        assert_eq!(field(text, "server"), Some("https://127.0.0.1:6443"));
        assert_eq!(field(text, "certificate-authority-data"), Some("QUJD"));
        assert_eq!(field(text, "client-certificate-data"), Some("REVG"));
        assert_eq!(field(text, "client-key-data"), None);
        assert_eq!(
            pem_field(text, "certificate-authority-data").unwrap(),
            b"ABC"
        );
        assert!(matches!(
            Kubeconfig::parse(text),
            Err(ClientError::Bad { .. }) | Err(ClientError::Missing(_))
        ));
    }
}
