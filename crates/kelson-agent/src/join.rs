//! Joining a cluster: the node token, the server's CA pinned by the token's
//! hash, and the node's certificates from the server's join endpoint.
//!
//! The token has k3s's secure format `K10<sha256 hex of the CA PEM>::server:<secret>`.
//! The agent fetches the CA without verifying the server (it has nothing to
//! verify with yet), accepts it only if its hash is the token's, then posts
//! the join request over TLS verified against that CA.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use sha2::{Digest, Sha256};

/// The server's CA, anonymously.
pub const CACERTS_PATH: &str = "/kelson.dev/v1/cacerts";
/// Certificates for a node, with the token.
pub const JOIN_PATH: &str = "/kelson.dev/v1/join";
/// Each request's limit.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Answers larger than this are refused.
const MAX_ANSWER: usize = 1024 * 1024;

/// Files under the credentials dir (k3s's agent names).
const CA_FILE: &str = "server-ca.crt";
const CLIENT_CERT_FILE: &str = "client-kubelet.crt";
const CLIENT_KEY_FILE: &str = "client-kubelet.key";
const SERVING_CERT_FILE: &str = "serving-kubelet.crt";
const SERVING_KEY_FILE: &str = "serving-kubelet.key";

#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error("the token is empty")]
    EmptyToken,
    #[error("the token's CA hash {0:?} is not a SHA-256 hex digest")]
    BadHash(String),
    #[error("the token has no secret after its CA hash")]
    NoSecret,
    #[error("server URL {0:?}: {1}")]
    BadServer(String, String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}: not a usable PEM file")]
    Pem(PathBuf),
    #[error("connecting to {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("TLS: {0}")]
    Tls(String),
    #[error("HTTP: {0}")]
    Http(String),
    #[error("{what} took longer than {REQUEST_TIMEOUT:?}")]
    Timeout { what: &'static str },
    #[error(
        "the server's CA (sha256 {actual}) is not the one the token names (sha256 {expected})"
    )]
    CaHashMismatch { expected: String, actual: String },
    #[error("the server sent no CA certificate")]
    NoCa,
    #[error("the server refused to join the node ({status}): {message}")]
    Refused { status: u16, message: String },
    #[error("the server's join answer is malformed: {0}")]
    BadAnswer(String),
}

/// A parsed node token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    /// The SHA-256 hex of the CA PEM the server must present; `None` for a
    /// bare secret (then the CA is trusted on first use).
    pub ca_hash: Option<String>,
    /// `server` in K10 tokens; empty for a bare secret.
    pub username: String,
    pub secret: String,
    /// What to present as the bearer credential.
    pub raw: String,
}

/// Parses `K10<hash>::<user>:<secret>` (or `K10<hash>::<secret>`), or a bare
/// secret.
pub fn parse_token(s: &str) -> Result<Token, JoinError> {
    let raw = s.trim();
    if raw.is_empty() {
        return Err(JoinError::EmptyToken);
    }
    let Some(rest) = raw.strip_prefix("K10") else {
        return Ok(Token {
            ca_hash: None,
            username: String::new(),
            secret: raw.to_string(),
            raw: raw.to_string(),
        });
    };
    let (hash, creds) = rest.split_once("::").ok_or(JoinError::NoSecret)?;
    let hash = hash.to_ascii_lowercase();
    if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(JoinError::BadHash(hash));
    }
    let (username, secret) = match creds.split_once(':') {
        Some((u, p)) => (u.to_string(), p.to_string()),
        None => ("server".to_string(), creds.to_string()),
    };
    if secret.is_empty() {
        return Err(JoinError::NoSecret);
    }
    Ok(Token {
        ca_hash: Some(hash),
        username,
        secret,
        raw: raw.to_string(),
    })
}

/// SHA-256 of the CA PEM bytes, lowercase hex: what K10 tokens carry.
pub fn ca_hash(ca_pem: &[u8]) -> String {
    Sha256::digest(ca_pem)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Checks a fetched CA against the token's pin.
pub fn check_ca(token: &Token, ca_pem: &[u8]) -> Result<(), JoinError> {
    match &token.ca_hash {
        Some(expected) => {
            let actual = ca_hash(ca_pem);
            if &actual == expected {
                Ok(())
            } else {
                Err(JoinError::CaHashMismatch {
                    expected: expected.clone(),
                    actual,
                })
            }
        }
        None => {
            tracing::warn!(
                "the node token is a bare secret: trusting the server's CA without pinning it (use the K10 token from the server's node-token file)"
            );
            Ok(())
        }
    }
}

/// What the node authenticates and serves with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeCredentials {
    pub ca_pem: String,
    pub client_cert_pem: String,
    pub client_key_pem: String,
    pub serving_cert_pem: String,
    pub serving_key_pem: String,
}

impl NodeCredentials {
    /// The credentials saved under `dir`; `None` when any file is missing.
    pub fn load(dir: &Path) -> Result<Option<NodeCredentials>, JoinError> {
        let mut texts = Vec::new();
        for name in [
            CA_FILE,
            CLIENT_CERT_FILE,
            CLIENT_KEY_FILE,
            SERVING_CERT_FILE,
            SERVING_KEY_FILE,
        ] {
            let path = dir.join(name);
            match std::fs::read_to_string(&path) {
                Ok(t) => texts.push((path, t)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(source) => return Err(JoinError::Io { path, source }),
            }
        }
        for (i, (path, text)) in texts.iter().enumerate() {
            let usable = if i == 2 || i == 4 {
                rustls_pki_types::PrivateKeyDer::from_pem_slice(text.as_bytes()).is_ok()
            } else {
                CertificateDer::pem_slice_iter(text.as_bytes()).any(|c| c.is_ok())
            };
            if !usable {
                return Err(JoinError::Pem(path.clone()));
            }
        }
        let mut it = texts.into_iter().map(|(_, t)| t);
        let mut next = || it.next().unwrap_or_default();
        Ok(Some(NodeCredentials {
            ca_pem: next(),
            client_cert_pem: next(),
            client_key_pem: next(),
            serving_cert_pem: next(),
            serving_key_pem: next(),
        }))
    }

    /// Writes the credentials under `dir` (0700): keys 0600, certificates
    /// 0644, each written beside and renamed so a crash leaves no half file.
    pub fn save(&self, dir: &Path) -> Result<(), JoinError> {
        use std::os::unix::fs::PermissionsExt;
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| JoinError::Io { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io(dir))?;
        for (name, text, mode) in [
            (CA_FILE, &self.ca_pem, 0o644),
            (CLIENT_CERT_FILE, &self.client_cert_pem, 0o644),
            (CLIENT_KEY_FILE, &self.client_key_pem, 0o600),
            (SERVING_CERT_FILE, &self.serving_cert_pem, 0o644),
            (SERVING_KEY_FILE, &self.serving_key_pem, 0o600),
        ] {
            write_file(&dir.join(name), text.as_bytes(), mode)?;
        }
        Ok(())
    }
}

fn write_file(path: &Path, data: &[u8], mode: u32) -> Result<(), JoinError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| JoinError::Io {
        path: path.to_path_buf(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io)?;
    f.write_all(data).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

/// Where the server is: host (for SNI and Host) and port.
struct Endpoint {
    host: String,
    port: u16,
}

fn endpoint(server: &str) -> Result<Endpoint, JoinError> {
    let bad = |why: &str| JoinError::BadServer(server.to_string(), why.to_string());
    let uri: http::Uri = server.parse().map_err(|_| bad("not a URL"))?;
    if uri.scheme_str() != Some("https") {
        return Err(bad("must be https://host:port"));
    }
    let host = uri.host().ok_or_else(|| bad("no host"))?;
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    Ok(Endpoint {
        host,
        port: uri.port_u16().unwrap_or(6443),
    })
}

/// Accepts whatever certificate the server shows (still checking that the
/// handshake is signed by it): only for fetching the CA, which the token's
/// hash then vouches for.
#[derive(Debug)]
struct AcceptAny(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn insecure_tls() -> Result<rustls::ClientConfig, JoinError> {
    let p = provider();
    let mut cfg = rustls::ClientConfig::builder_with_provider(p.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| JoinError::Tls(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAny(p)))
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

fn pinned_tls(ca_pem: &str) -> Result<rustls::ClientConfig, JoinError> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        let c = c.map_err(|_| JoinError::NoCa)?;
        roots.add(c).map_err(|e| JoinError::Tls(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(JoinError::NoCa);
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| JoinError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

/// One HTTP/1.1 request on a fresh TLS connection: (status, body).
async fn request(
    ep: &Endpoint,
    tls: rustls::ClientConfig,
    req: http::Request<Full<Bytes>>,
) -> Result<(u16, Bytes), JoinError> {
    let addr = if ep.host.contains(':') {
        format!("[{}]:{}", ep.host, ep.port)
    } else {
        format!("{}:{}", ep.host, ep.port)
    };
    let tcp = tokio::net::TcpStream::connect(&addr)
        .await
        .map_err(|source| JoinError::Connect {
            addr: addr.clone(),
            source,
        })?;
    let name = ServerName::try_from(ep.host.clone())
        .map_err(|e| JoinError::BadServer(ep.host.clone(), e.to_string()))?;
    let stream = tokio_rustls::TlsConnector::from(Arc::new(tls))
        .connect(name, tcp)
        .await
        .map_err(|e| JoinError::Tls(e.to_string()))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| JoinError::Http(e.to_string()))?;
    let driver = tokio::spawn(async move {
        let _ = conn.await;
    });
    let result = async {
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| JoinError::Http(e.to_string()))?;
        let status = resp.status().as_u16();
        let body = http_body_util::Limited::new(resp.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| JoinError::Http(e.to_string()))?
            .to_bytes();
        Ok((status, body))
    }
    .await;
    driver.abort();
    result
}

fn host_header(ep: &Endpoint) -> String {
    if ep.host.contains(':') {
        format!("[{}]:{}", ep.host, ep.port)
    } else {
        format!("{}:{}", ep.host, ep.port)
    }
}

/// The message of a Status answer, else the body as text.
fn refusal(status: u16, body: &[u8]) -> JoinError {
    let message = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(String::from))
        .unwrap_or_else(|| String::from_utf8_lossy(body).chars().take(500).collect());
    JoinError::Refused { status, message }
}

/// Fetches the server's CA without verifying the server.
pub async fn fetch_ca(server: &str) -> Result<String, JoinError> {
    let ep = endpoint(server)?;
    let req = http::Request::get(CACERTS_PATH)
        .header(http::header::HOST, host_header(&ep))
        .body(Full::new(Bytes::new()))
        .map_err(|e| JoinError::Http(e.to_string()))?;
    let (status, body) = tokio::time::timeout(REQUEST_TIMEOUT, request(&ep, insecure_tls()?, req))
        .await
        .map_err(|_| JoinError::Timeout {
            what: "fetching the CA",
        })??;
    if status != 200 {
        return Err(refusal(status, &body));
    }
    String::from_utf8(body.to_vec()).map_err(|_| JoinError::NoCa)
}

/// Joins `server` (`https://host:port`) as `node_name` with `token` (the
/// content of the server's DATA_DIR/server/node-token): checks the server's
/// CA against the token's hash, then asks for the node's certificates over
/// TLS verified against that CA. The serving certificate covers
/// `node_name` and `node_ips`.
pub async fn join(
    server: &str,
    token: &str,
    node_name: &str,
    node_ips: &[IpAddr],
    node_password: &str,
) -> Result<NodeCredentials, JoinError> {
    let token = parse_token(token)?;
    let ep = endpoint(server)?;
    let ca_pem = fetch_ca(server).await?;
    check_ca(&token, ca_pem.as_bytes())?;
    let body = serde_json::json!({
        "nodeName": node_name,
        "nodePassword": node_password,
        "addresses": node_ips.iter().map(|ip| ip.to_string()).collect::<Vec<_>>(),
        "hostnames": Vec::<String>::new(),
    });
    let req = http::Request::post(JOIN_PATH)
        .header(http::header::HOST, host_header(&ep))
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::ACCEPT, "application/json")
        .header(http::header::AUTHORIZATION, format!("Bearer {}", token.raw))
        .body(Full::new(Bytes::from(body.to_string())))
        .map_err(|e| JoinError::Http(e.to_string()))?;
    let (status, body) =
        tokio::time::timeout(REQUEST_TIMEOUT, request(&ep, pinned_tls(&ca_pem)?, req))
            .await
            .map_err(|_| JoinError::Timeout {
                what: "the join request",
            })??;
    if status != 200 {
        return Err(refusal(status, &body));
    }
    let creds = parse_answer(&body)?;
    if creds.ca_pem != ca_pem {
        return Err(JoinError::BadAnswer(
            "its CA is not the one the server presented".into(),
        ));
    }
    Ok(creds)
}

/// The node password's file name under `DATA_DIR/agent`.
pub const NODE_PASSWORD_FILE: &str = "node-password";

/// This machine's node password (sent with every join, so the server ties
/// the node's name to this machine): read from `dir/node-password`, or
/// made up (128 random bits, hex) and kept there, readable by root only.
pub fn load_or_create_node_password(dir: &Path) -> Result<String, JoinError> {
    let path = dir.join(NODE_PASSWORD_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) if !text.trim().is_empty() => return Ok(text.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => return Err(JoinError::Io { path, source }),
    }
    let password: String = (0..16)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect();
    std::fs::create_dir_all(dir).map_err(|source| JoinError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    write_file(&path, format!("{password}\n").as_bytes(), 0o600)?;
    Ok(password)
}

/// The join endpoint's JSON answer.
fn parse_answer(body: &[u8]) -> Result<NodeCredentials, JoinError> {
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| JoinError::BadAnswer(e.to_string()))?;
    let field = |k: &str| -> Result<String, JoinError> {
        v.get(k)
            .and_then(|x| x.as_str())
            .filter(|s| !s.is_empty())
            .map(String::from)
            .ok_or_else(|| JoinError::BadAnswer(format!("no {k}")))
    };
    Ok(NodeCredentials {
        ca_pem: field("caCert")?,
        client_cert_pem: field("clientCert")?,
        client_key_pem: field("clientKey")?,
        serving_cert_pem: field("servingCert")?,
        serving_key_pem: field("servingKey")?,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn node_password_made_once_and_kept_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let a = super::load_or_create_node_password(dir.path()).unwrap();
        assert_eq!(a.len(), 32);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        let file = dir.path().join(super::NODE_PASSWORD_FILE);
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(super::load_or_create_node_password(dir.path()).unwrap(), a);
        let other = tempfile::tempdir().unwrap();
        assert_ne!(
            super::load_or_create_node_password(other.path()).unwrap(),
            a
        );
    }

    use super::*;

    const HASH: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

    #[test]
    fn parses_k10_tokens_and_bare_secrets() {
        let t = parse_token(&format!(" K10{HASH}::server:abc123\n")).unwrap();
        assert_eq!(t.ca_hash.as_deref(), Some(HASH));
        assert_eq!(t.username, "server");
        assert_eq!(t.secret, "abc123");
        assert_eq!(t.raw, format!("K10{HASH}::server:abc123"));
        let t = parse_token(&format!("K10{HASH}::node:pw")).unwrap();
        assert_eq!((t.username.as_str(), t.secret.as_str()), ("node", "pw"));
        let bare = parse_token("justasecret").unwrap();
        assert_eq!(bare.ca_hash, None);
        assert_eq!(bare.secret, "justasecret");
        assert!(matches!(parse_token("  "), Err(JoinError::EmptyToken)));
        assert!(matches!(
            parse_token("K10abc::server:x"),
            Err(JoinError::BadHash(_))
        ));
        assert!(matches!(
            parse_token(&format!("K10{HASH}")),
            Err(JoinError::NoSecret)
        ));
        assert!(matches!(
            parse_token(&format!("K10{HASH}::server:")),
            Err(JoinError::NoSecret)
        ));
    }

    #[test]
    fn ca_checked_against_the_pin() {
        assert_eq!(ca_hash(b"abc"), HASH);
        let t = parse_token(&format!("K10{HASH}::server:s")).unwrap();
        assert!(check_ca(&t, b"abc").is_ok());
        match check_ca(&t, b"abd") {
            Err(JoinError::CaHashMismatch { expected, actual }) => {
                assert_eq!(expected, HASH);
                assert_ne!(actual, HASH);
            }
            other => panic!("{other:?}"),
        }
        // A bare secret pins nothing.
        assert!(check_ca(&parse_token("s").unwrap(), b"anything").is_ok());
    }

    #[test]
    fn server_urls() {
        let ep = endpoint("https://10.0.0.1:6443").unwrap();
        assert_eq!((ep.host.as_str(), ep.port), ("10.0.0.1", 6443));
        let ep = endpoint("https://[fd00::1]:7443").unwrap();
        assert_eq!((ep.host.as_str(), ep.port), ("fd00::1", 7443));
        assert_eq!(endpoint("https://server").unwrap().port, 6443);
        assert!(endpoint("http://server:6443").is_err());
    }

    #[test]
    fn credentials_saved_and_loaded_with_private_keys() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("agent");
        assert_eq!(NodeCredentials::load(&sub).unwrap(), None);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["n1".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let creds = NodeCredentials {
            ca_pem: cert.pem(),
            client_cert_pem: cert.pem(),
            client_key_pem: key.serialize_pem(),
            serving_cert_pem: cert.pem(),
            serving_key_pem: key.serialize_pem(),
        };
        creds.save(&sub).unwrap();
        assert_eq!(NodeCredentials::load(&sub).unwrap(), Some(creds));
        let mode = |f: &str| std::fs::metadata(sub.join(f)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(CLIENT_KEY_FILE), 0o600);
        assert_eq!(mode(SERVING_KEY_FILE), 0o600);
        assert_eq!(mode(CA_FILE), 0o644);
        std::fs::write(sub.join(CLIENT_KEY_FILE), "garbage").unwrap();
        assert!(matches!(
            NodeCredentials::load(&sub),
            Err(JoinError::Pem(_))
        ));
    }

    #[test]
    fn answer_needs_every_part() {
        let ok = br#"{"caCert":"a","clientCert":"b","clientKey":"c","servingCert":"d","servingKey":"e"}"#;
        assert_eq!(parse_answer(ok).unwrap().serving_key_pem, "e");
        assert!(matches!(
            parse_answer(br#"{"caCert":"a"}"#),
            Err(JoinError::BadAnswer(_))
        ));
    }
}
