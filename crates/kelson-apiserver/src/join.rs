//! Joining nodes: the node token and the two endpoints agents use, outside
//! the Kubernetes paths on the API server's port.
//!
//! The token has k3s's secure format, `K10<sha256 hex of the CA PEM>::server:<secret>`:
//! an agent fetches the CA anonymously (`GET /kelson.dev/v1/cacerts`), checks
//! its hash against the token, then trusts it to `POST /kelson.dev/v1/join`
//! with the token as a bearer credential and gets the node's certificates:
//! a client certificate for `system:node:NAME` in `system:nodes` and a
//! kubelet serving certificate for the node's names and addresses.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};

use crate::handler::{error_response, full, Api, Body};
use crate::pki::{Pki, ServingNames};
use crate::status::{ApiError, Cause};

/// Paths served here start with this.
pub const PREFIX: &str = "/kelson.dev/";
pub const CACERTS_PATH: &str = "/kelson.dev/v1/cacerts";
pub const JOIN_PATH: &str = "/kelson.dev/v1/join";
/// The token file's name under DATA_DIR/server.
pub const TOKEN_FILE: &str = "node-token";
/// The user part of server tokens (k3s's).
pub const TOKEN_USER: &str = "server";
/// Join requests are small; anything larger is refused.
const MAX_JOIN_BODY: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}: the node token file is empty")]
    Empty(PathBuf),
    #[error("generating the node token: no secure random numbers")]
    Random,
    #[error("hashing: SHA-256 is not available from the TLS crypto provider")]
    Hash,
    #[error(transparent)]
    Pki(#[from] crate::pki::PkiError),
}

/// SHA-256 of `data` as lowercase hex (through rustls' ring provider, so
/// no further crypto crate is needed).
pub fn sha256_hex(data: &[u8]) -> Result<String, JoinError> {
    let suite = rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256
        .tls13()
        .ok_or(JoinError::Hash)?;
    let digest = suite.common.hash_provider.hash(data);
    Ok(hex(digest.as_ref()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `K10<hash>::server:<secret>`.
pub fn format_token(ca_pem: &str, secret: &str) -> Result<String, JoinError> {
    Ok(format!(
        "K10{}::{TOKEN_USER}:{secret}",
        sha256_hex(ca_pem.as_bytes())?
    ))
}

/// The secret of a token file's content: the part after `::user:` of a
/// K10 token, else the whole (a token the administrator chose).
fn secret_of(token: &str) -> &str {
    match token.strip_prefix("K10").and_then(|t| t.split_once("::")) {
        Some((_, creds)) => creds.split_once(':').map(|(_, p)| p).unwrap_or(creds),
        None => token,
    }
}

/// Reads DATA_DIR/server/node-token, creating it (0600) with a fresh
/// 128-bit secret on first start. The hash always follows the current CA;
/// the secret is kept across restarts.
pub fn load_or_create_node_token(server_dir: &Path, ca_pem: &str) -> Result<String, JoinError> {
    let path = server_dir.join(TOKEN_FILE);
    let io = |source| JoinError::Io {
        path: path.clone(),
        source,
    };
    let existing = match std::fs::read_to_string(&path) {
        Ok(s) => Some(s.trim().to_string()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(io(e)),
    };
    let secret = match &existing {
        Some(t) => {
            let s = secret_of(t);
            if s.is_empty() {
                return Err(JoinError::Empty(path));
            }
            s.to_string()
        }
        None => {
            let mut buf = [0u8; 16];
            rustls::crypto::ring::default_provider()
                .secure_random
                .fill(&mut buf)
                .map_err(|_| JoinError::Random)?;
            hex(&buf)
        }
    };
    let token = format_token(ca_pem, &secret)?;
    if existing.as_deref() != Some(token.as_str()) {
        std::fs::create_dir_all(server_dir).map_err(|source| JoinError::Io {
            path: server_dir.to_path_buf(),
            source,
        })?;
        crate::pki::write_private(&path, format!("{token}\n").as_bytes())?;
    }
    Ok(token)
}

/// What the join endpoints need: the token, the CA that signs, and where
/// each node name's password hash is kept.
pub struct Joiner {
    token: String,
    secret: String,
    pki: Arc<Pki>,
    passwords: PathBuf,
}

impl Joiner {
    /// `server_dir` holds `node-passwords/`, one file per node name.
    pub fn new(token: String, pki: Arc<Pki>, server_dir: &Path) -> Joiner {
        let secret = secret_of(&token).to_string();
        Joiner {
            token,
            secret,
            pki,
            passwords: server_dir.join(NODE_PASSWORDS_DIR),
        }
    }

    /// Whether a bearer credential is this token: the whole token,
    /// `server:<secret>` or the bare secret.
    pub fn accepts(&self, presented: &str) -> bool {
        let with_user = format!("{TOKEN_USER}:{}", self.secret);
        // Compare all three without stopping early.
        let a = constant_eq(presented, &self.token);
        let b = constant_eq(presented, &with_user);
        let c = constant_eq(presented, &self.secret);
        !self.secret.is_empty() && (a | b | c)
    }
}

/// Equality whose time depends only on the lengths.
fn constant_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Where the hashes of node passwords live, under the server's directory.
pub const NODE_PASSWORDS_DIR: &str = "node-passwords";
/// Longest node password accepted.
const MAX_NODE_PASSWORD: usize = 256;

/// Ties a node name to the machine that first joined under it (k3s's node
/// password): the agent keeps a random password and sends it with every
/// join; the server keeps its SHA-256 per node name. Another password under
/// the name of a Node that still exists is refused, so one token holder
/// cannot take over another node's identity. Once the Node is deleted, the
/// name is free again and the new password replaces the old.
pub fn check_node_password(
    dir: &Path,
    node_name: &str,
    password: &str,
    node_exists: bool,
) -> Result<(), ApiError> {
    let internal = |what: &str, e: std::io::Error| {
        ApiError::internal(format!("{what} the node password of {node_name:?}: {e}"))
    };
    // nodeName is a DNS subdomain (checked before): no '/', no "..".
    let path = dir.join(node_name);
    let hash = sha256_hex(password.as_bytes()).map_err(|e| ApiError::internal(e.to_string()))?;
    match std::fs::read_to_string(&path) {
        Ok(kept) if constant_eq(kept.trim(), &hash) => return Ok(()),
        Ok(_) if node_exists => {
            return Err(ApiError::forbidden(format!(
                "node {node_name:?} already exists and joined with another node password: \
                 to join this machine under that name, delete the Node first, or give the \
                 agent another --node-name"
            )))
        }
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(internal("reading", e)),
    }
    std::fs::create_dir_all(dir).map_err(|e| internal("storing", e))?;
    crate::pki::write_private(&path, format!("{hash}\n").as_bytes())
        .map_err(|e| ApiError::internal(format!("storing the node password: {e}")))
}

/// What an agent sends to join.
#[derive(Debug, Clone, PartialEq)]
pub struct JoinRequest {
    pub node_name: String,
    /// The agent's own secret, kept beside its identity.
    pub node_password: String,
    pub addresses: Vec<IpAddr>,
    pub hostnames: Vec<String>,
}

fn invalid(name: &str, causes: Vec<Cause>) -> ApiError {
    ApiError::invalid("kelson.dev", "JoinRequest", name, causes)
}

fn invalid_value(field: String, value: &str, why: &str) -> Cause {
    Cause {
        reason: "FieldValueInvalid".into(),
        message: format!("Invalid value: \"{value}\": {why}"),
        field,
    }
}

/// Parses and validates the JSON body: nodeName a DNS subdomain, every
/// address an IP, every hostname a DNS subdomain (422 otherwise).
pub fn parse_request(body: &[u8]) -> Result<JoinRequest, ApiError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("decoding the join request: {e}")))?;
    if !v.is_object() {
        return Err(ApiError::bad_request(
            "decoding the join request: not a JSON object",
        ));
    }
    let name = v.get("nodeName").and_then(Value::as_str).unwrap_or("");
    let mut causes = Vec::new();
    if name.is_empty() {
        causes.push(Cause {
            reason: "FieldValueRequired".into(),
            message: "Required value".into(),
            field: "nodeName".into(),
        });
    } else {
        for why in kelson_apimachinery::validation::dns1123_subdomain(name) {
            causes.push(invalid_value("nodeName".into(), name, &why));
        }
    }
    let strings = |key: &str, causes: &mut Vec<Cause>| -> Vec<String> {
        match v.get(key) {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(a)) => a
                .iter()
                .enumerate()
                .filter_map(|(i, x)| match x.as_str() {
                    Some(s) => Some(s.to_string()),
                    None => {
                        causes.push(invalid_value(
                            format!("{key}[{i}]"),
                            &x.to_string(),
                            "must be a string",
                        ));
                        None
                    }
                })
                .collect(),
            Some(other) => {
                causes.push(invalid_value(
                    key.to_string(),
                    &other.to_string(),
                    "must be a list of strings",
                ));
                Vec::new()
            }
        }
    };
    let node_password = v.get("nodePassword").and_then(Value::as_str).unwrap_or("");
    if node_password.is_empty() {
        causes.push(Cause {
            reason: "FieldValueRequired".into(),
            message: "Required value".into(),
            field: "nodePassword".into(),
        });
    } else if node_password.len() > MAX_NODE_PASSWORD {
        causes.push(Cause {
            reason: "FieldValueTooLong".into(),
            message: format!("Too long: may not be more than {MAX_NODE_PASSWORD} bytes"),
            field: "nodePassword".into(),
        });
    }
    let raw_addresses = strings("addresses", &mut causes);
    let hostnames = strings("hostnames", &mut causes);
    let mut addresses = Vec::new();
    for (i, a) in raw_addresses.iter().enumerate() {
        match a.parse::<IpAddr>() {
            Ok(ip) => addresses.push(ip),
            Err(_) => causes.push(invalid_value(
                format!("addresses[{i}]"),
                a,
                "must be a valid IP address",
            )),
        }
    }
    for (i, h) in hostnames.iter().enumerate() {
        for why in kelson_apimachinery::validation::dns1123_subdomain(h) {
            causes.push(invalid_value(format!("hostnames[{i}]"), h, &why));
        }
    }
    if !causes.is_empty() {
        return Err(invalid(name, causes));
    }
    Ok(JoinRequest {
        node_name: name.to_string(),
        node_password: node_password.to_string(),
        addresses,
        hostnames,
    })
}

/// The node's certificates, as the join endpoint answers them.
pub fn issue(pki: &Pki, req: &JoinRequest) -> Result<Value, ApiError> {
    let user = format!("{}{}", crate::nodeauth::NODE_USER_PREFIX, req.node_name);
    let client = pki
        .issue_client(&user, &[crate::nodeauth::NODES_GROUP])
        .map_err(|e| ApiError::internal(format!("issuing the node's client certificate: {e}")))?;
    let mut dns = vec![req.node_name.clone()];
    for h in &req.hostnames {
        if !dns.contains(h) {
            dns.push(h.clone());
        }
    }
    let names = ServingNames {
        dns,
        ips: req.addresses.clone(),
    };
    let serving = pki
        .issue_kubelet_serving(&req.node_name, &names)
        .map_err(|e| ApiError::internal(format!("issuing the kubelet serving certificate: {e}")))?;
    Ok(json!({
        "caCert": pki.ca.cert_pem,
        "clientCert": client.cert_pem,
        "clientKey": client.key_pem,
        "servingCert": serving.cert_pem,
        "servingKey": serving.key_pem,
    }))
}

/// Serves a request under [`PREFIX`] (no Kubernetes authentication).
pub async fn serve(api: &Api, req: Request<hyper::body::Incoming>) -> Response<Body> {
    match try_serve(api, req).await {
        Ok(r) => r,
        Err(e) => error_response(&e),
    }
}

async fn try_serve(
    api: &Api,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Body>, ApiError> {
    let joiner = api.join.get().ok_or_else(crate::handler::not_found)?;
    let path = req.uri().path().to_string();
    match (path.as_str(), req.method()) {
        (CACERTS_PATH, &Method::GET) => Ok(Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, "application/x-pem-file")
            .body(full(joiner.pki.ca.cert_pem.clone()))
            .unwrap_or_else(|_| Response::new(full("")))),
        (JOIN_PATH, &Method::POST) => {
            let presented = req
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|h| {
                    h.strip_prefix("Bearer ")
                        .or_else(|| h.strip_prefix("bearer "))
                })
                .map(str::trim)
                .unwrap_or("");
            if !joiner.accepts(presented) {
                return Err(ApiError::unauthorized());
            }
            let body = read_limited(req.into_body()).await?;
            let join = parse_request(&body)?;
            use crate::nodeauth::Objects;
            let exists = crate::nodeauth::CachedObjects::load(api)
                .await?
                .get("", "nodes", None, &join.node_name)
                .is_some();
            check_node_password(
                &joiner.passwords,
                &join.node_name,
                &join.node_password,
                exists,
            )?;
            let answer = issue(&joiner.pki, &join)?;
            tracing::info!(node = %join.node_name, "node joined");
            Ok(Response::builder()
                .status(StatusCode::OK)
                .header(header::CONTENT_TYPE, "application/json")
                .body(full(serde_json::to_vec(&answer).unwrap_or_default()))
                .unwrap_or_else(|_| Response::new(full(""))))
        }
        (CACERTS_PATH | JOIN_PATH, m) => Err(ApiError::method_not_allowed(format!(
            "the server does not allow this method on the requested resource ({m})"
        ))),
        _ => Err(crate::handler::not_found()),
    }
}

async fn read_limited(body: hyper::body::Incoming) -> Result<Bytes, ApiError> {
    match http_body_util::Limited::new(body, MAX_JOIN_BODY)
        .collect()
        .await
    {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(ApiError::too_large(format!(
            "Request entity too large: limit is {MAX_JOIN_BODY}"
        ))),
        Err(e) => Err(ApiError::bad_request(format!("reading request body: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls_pki_types::pem::PemObject;

    #[test]
    fn sha256_matches_known_digest() {
        assert_eq!(
            sha256_hex(b"abc").unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn token_created_0600_and_reused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let ca = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        let t = load_or_create_node_token(dir.path(), ca).unwrap();
        let hash = sha256_hex(ca.as_bytes()).unwrap();
        let rest = t.strip_prefix(&format!("K10{hash}::server:")).unwrap();
        assert_eq!(rest.len(), 32);
        assert!(rest.chars().all(|c| c.is_ascii_hexdigit()));
        let mode = std::fs::metadata(dir.path().join(TOKEN_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(load_or_create_node_token(dir.path(), ca).unwrap(), t);
        // A new CA keeps the secret and changes the pin.
        let t2 = load_or_create_node_token(dir.path(), "other").unwrap();
        assert!(t2.ends_with(rest));
        assert_ne!(t2, t);
    }

    #[test]
    fn administrator_chosen_token_becomes_k10() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(TOKEN_FILE), "mysecret\n").unwrap();
        let t = load_or_create_node_token(dir.path(), "ca").unwrap();
        assert!(
            t.starts_with("K10") && t.ends_with("::server:mysecret"),
            "{t}"
        );
    }

    #[test]
    fn accepts_whole_token_user_secret_or_secret() {
        let dir = tempfile::tempdir().unwrap();
        let names = ServingNames::new(
            "h",
            "127.0.0.1".parse().unwrap(),
            "10.43.0.1".parse().unwrap(),
        );
        let pki = Arc::new(Pki::load_or_create(&dir.path().join("tls"), &names).unwrap());
        let token = format_token(&pki.ca.cert_pem, "s3cr3t").unwrap();
        let j = Joiner::new(token.clone(), pki, dir.path());
        assert!(j.accepts(&token));
        assert!(j.accepts("server:s3cr3t"));
        assert!(j.accepts("s3cr3t"));
        assert!(!j.accepts("s3cr3"));
        assert!(!j.accepts(""));
    }

    #[test]
    fn join_request_validated() {
        let ok = parse_request(br#"{"nodeName":"node-1","nodePassword":"pw","addresses":["10.0.0.5","fd00::1"],"hostnames":["node-1.local"]}"#).unwrap();
        assert_eq!(ok.node_name, "node-1");
        assert_eq!(ok.node_password, "pw");
        assert_eq!(ok.addresses.len(), 2);
        let e = parse_request(br#"{"nodeName":"Bad_Name","addresses":["nope"]}"#).unwrap_err();
        assert_eq!(e.code, 422);
        assert!(e.message.starts_with("JoinRequest.kelson.dev \"Bad_Name\" is invalid: [nodeName: Invalid value: \"Bad_Name\": a lowercase RFC 1123 subdomain"), "{}", e.message);
        assert!(
            e.message
                .contains("addresses[0]: Invalid value: \"nope\": must be a valid IP address"),
            "{}",
            e.message
        );
        assert_eq!(
            parse_request(br#"{}"#).unwrap_err().message,
            "JoinRequest.kelson.dev \"\" is invalid: [nodeName: Required value, nodePassword: Required value]"
        );
        let long = format!(r#"{{"nodeName":"n","nodePassword":"{}"}}"#, "x".repeat(257));
        assert!(parse_request(long.as_bytes())
            .unwrap_err()
            .message
            .contains("nodePassword: Too long: may not be more than 256 bytes"));
        assert_eq!(parse_request(b"not json").unwrap_err().code, 400);
    }

    #[test]
    fn a_node_name_stays_with_its_password_while_the_node_exists() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join(NODE_PASSWORDS_DIR);
        // First join under a name: kept, readable by root only.
        check_node_password(&pw, "n1", "alpha", false).unwrap();
        let mode = std::fs::metadata(pw.join("n1"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        // The same machine again (its Node exists): fine.
        check_node_password(&pw, "n1", "alpha", true).unwrap();
        // Another machine under that name while the Node exists: 403.
        let e = check_node_password(&pw, "n1", "beta", true).unwrap_err();
        assert_eq!(e.code, 403);
        assert!(e.message.contains("another node password"), "{}", e.message);
        // Other names are not affected.
        check_node_password(&pw, "n2", "beta", true).unwrap();
        // Once the Node is gone, the name goes to the new password.
        check_node_password(&pw, "n1", "beta", false).unwrap();
        assert_eq!(
            check_node_password(&pw, "n1", "alpha", true)
                .unwrap_err()
                .code,
            403
        );
    }

    #[test]
    fn issued_certificates_name_the_node() {
        let dir = tempfile::tempdir().unwrap();
        let names = ServingNames::new(
            "h",
            "127.0.0.1".parse().unwrap(),
            "10.43.0.1".parse().unwrap(),
        );
        let pki = Pki::load_or_create(&dir.path().join("tls"), &names).unwrap();
        let req = JoinRequest {
            node_name: "n1".into(),
            node_password: "pw".into(),
            addresses: vec!["10.0.0.5".parse().unwrap()],
            hostnames: vec!["n1.example".into()],
        };
        let out = issue(&pki, &req).unwrap();
        let der = rustls_pki_types::CertificateDer::pem_slice_iter(
            out["clientCert"].as_str().unwrap().as_bytes(),
        )
        .next()
        .unwrap()
        .unwrap();
        let user = crate::authn::user_from_cert(der.as_ref()).unwrap();
        assert_eq!(user.name, "system:node:n1");
        assert_eq!(user.groups, ["system:nodes"]);
        let der = rustls_pki_types::CertificateDer::pem_slice_iter(
            out["servingCert"].as_str().unwrap().as_bytes(),
        )
        .next()
        .unwrap()
        .unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).unwrap();
        let san = cert.subject_alternative_name().unwrap().unwrap();
        let text = format!("{:?}", san.value.general_names);
        assert!(
            text.contains("n1.example") && text.contains("DNSName(\"n1\")"),
            "{text}"
        );
        assert_eq!(out["caCert"], pki.ca.cert_pem);
    }
}
