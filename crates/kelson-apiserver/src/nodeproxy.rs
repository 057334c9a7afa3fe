//! The node's API through the API server: `pods/log`, `pods/exec`,
//! `pods/attach`, `pods/portforward` and `nodes/proxy`, proxied to the
//! kubelet of the pod's node over HTTPS with the API server's kubelet client
//! certificate, the kubelet's serving certificate checked against the
//! cluster CA (upstream's --kubelet-certificate-authority).
//!
//! Exec, attach and port-forward are upgrade requests (SPDY/3.1 or
//! WebSocket) that the kubelet answers with 101; the connections are then
//! spliced byte for byte. Upstream 1.33 terminates WebSocket exec itself and
//! speaks SPDY to the kubelet; here the WebSocket request reaches the
//! kubelet unchanged, so Kelson's kubelet serves both protocols (as
//! upstream's kubelet does with ExtendWebSocketsToKubelet).

mod location;
mod proxy;

use std::sync::Arc;

use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::Value;

pub use location::{
    is_global_unicast, kubelet_port, parse_params, portforward_query, preferred_address,
    split_scheme_name_port, validate_container, LogOptions, StreamOptions, DEFAULT_KUBELET_PORT,
    PREFERRED_ADDRESS_TYPES,
};
pub use proxy::is_upgrade;

use crate::handler::{full, not_found, Api, Body};
use crate::pki::CertPair;
use crate::resources::Resource;
use crate::status::ApiError;
use proxy::{Target, Transport};

#[derive(Debug, thiserror::Error)]
pub enum NodeProxyError {
    #[error("kubelet client TLS configuration: {0}")]
    Tls(String),
}

/// How the API server reaches kubelets.
pub struct KubeletClient {
    /// Verifies the kubelet against the cluster CA, presents the client
    /// certificate.
    tls: Arc<rustls::ClientConfig>,
    /// The same client certificate, the kubelet's certificate unchecked
    /// (`pods/log?insecureSkipTLSVerifyBackend=true`).
    insecure_tls: Arc<rustls::ClientConfig>,
    /// nodes/proxy to other ports over https: unchecked and without client
    /// certificate, as upstream's proxy transport.
    proxy_tls: Arc<rustls::ClientConfig>,
    /// Node address types tried in order (--kubelet-preferred-address-types).
    pub preferred_address_types: Vec<String>,
    /// Used when a Node reports no kubelet port.
    pub default_port: u16,
}

impl KubeletClient {
    /// A client trusting `ca` and presenting `client` (the API server's
    /// kubelet client certificate).
    pub fn new(ca: &CertPair, client: &CertPair) -> Result<KubeletClient, NodeProxyError> {
        let tls_err = |e: rustls::Error| NodeProxyError::Tls(e.to_string());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for c in ca.cert_der() {
            roots.add(c).map_err(tls_err)?;
        }
        let key = || {
            client
                .key_der()
                .ok_or_else(|| NodeProxyError::Tls("kubelet client key unreadable".into()))
        };
        let builder = || {
            rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .map_err(tls_err)
        };
        let mut tls = builder()?
            .with_root_certificates(roots)
            .with_client_auth_cert(client.cert_der(), key()?)
            .map_err(tls_err)?;
        let unchecked = Arc::new(AnyServer(provider.clone()));
        let mut insecure_tls = builder()?
            .dangerous()
            .with_custom_certificate_verifier(unchecked.clone())
            .with_client_auth_cert(client.cert_der(), key()?)
            .map_err(tls_err)?;
        let mut proxy_tls = builder()?
            .dangerous()
            .with_custom_certificate_verifier(unchecked)
            .with_no_client_auth();
        // One HTTP/1.1 connection per request: upgrades need HTTP/1.1.
        for c in [&mut tls, &mut insecure_tls, &mut proxy_tls] {
            c.alpn_protocols = vec![b"http/1.1".to_vec()];
        }
        Ok(KubeletClient {
            tls: Arc::new(tls),
            insecure_tls: Arc::new(insecure_tls),
            proxy_tls: Arc::new(proxy_tls),
            preferred_address_types: PREFERRED_ADDRESS_TYPES
                .iter()
                .map(|s| s.to_string())
                .collect(),
            default_port: DEFAULT_KUBELET_PORT,
        })
    }
}

/// Accepts any server certificate (still checking the handshake
/// signatures): only where upstream skips verification too.
#[derive(Debug)]
struct AnyServer(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls_pki_types::CertificateDer<'_>,
        _intermediates: &[rustls_pki_types::CertificateDer<'_>],
        _server_name: &rustls_pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
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
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
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

/// Requests that stream for long (upstream's long-running check: these
/// subresources never count against the in-flight limit).
pub fn is_long_running(path: &str) -> bool {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    match segs.as_slice() {
        ["api", "v1", "namespaces", _, "pods", _, sub, ..] => {
            matches!(*sub, "log" | "exec" | "attach" | "portforward" | "proxy")
        }
        ["api", "v1", "nodes", _, "proxy", ..] => true,
        _ => false,
    }
}

fn method_not_allowed(m: &Method) -> ApiError {
    ApiError::method_not_allowed(format!(
        "the server does not allow this method on the requested resource ({m})"
    ))
}

/// Serves `sub` of the pod or node `name`. The route has already checked
/// that `res` declares the subresource.
pub async fn serve(
    api: &Arc<Api>,
    res: &Arc<Resource>,
    ns: Option<&str>,
    name: &str,
    sub: &str,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let Some(client) = api.kubelet.get().cloned() else {
        return Err(ApiError::unavailable(format!(
            "{}/{sub} is not available: the API server has no kubelet client",
            res.plural
        )));
    };
    match (res.plural.as_str(), sub) {
        ("pods", "log") => {
            if req.method() != Method::GET {
                return Err(method_not_allowed(req.method()));
            }
            pod_log(api, &client, res, ns, name, &req).await
        }
        ("pods", "exec" | "attach" | "portforward") => {
            if !matches!(*req.method(), Method::GET | Method::POST) {
                return Err(method_not_allowed(req.method()));
            }
            pod_stream(api, &client, res, ns, name, sub, req).await
        }
        ("nodes", "proxy") => node_proxy(api, &client, name, req).await,
        _ => Err(not_found()),
    }
}

async fn get_node(api: &Api, node: &str) -> Result<Value, ApiError> {
    let nodes = api
        .find("", "v1", "nodes")
        .ok_or_else(|| ApiError::internal("nodes are not served"))?;
    api.registry.get(&nodes, None, node).await
}

/// The kubelet's address and port for a node (GetConnectionInfo).
async fn kubelet_of(
    api: &Api,
    client: &KubeletClient,
    node: &str,
) -> Result<(String, u16), ApiError> {
    let node = get_node(api, node).await?;
    let host = preferred_address(&node, &client.preferred_address_types)?;
    Ok((host, kubelet_port(&node, client.default_port)))
}

async fn pod_log(
    api: &Arc<Api>,
    client: &KubeletClient,
    res: &Arc<Resource>,
    ns: Option<&str>,
    name: &str,
    req: &Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let params = parse_params(req.uri().query());
    let opts = LogOptions::parse(&params, name)?;
    let pod = api.registry.get(res, ns, name).await?;
    let container = validate_container(&pod, opts.container.as_deref())?;
    let Some(node) = node_name(&pod) else {
        // Upstream answers an unscheduled pod's log with no content.
        return Ok(Response::builder()
            .status(StatusCode::NO_CONTENT)
            .body(full(""))
            .unwrap_or_else(|_| Response::new(full(""))));
    };
    let (host, port) = kubelet_of(api, client, node).await?;
    let tls = if opts.insecure_skip_tls_verify_backend {
        client.insecure_tls.clone()
    } else {
        client.tls.clone()
    };
    let target = Target {
        host,
        port,
        transport: Transport::Tls(tls),
    };
    let mut path = format!(
        "/containerLogs/{}/{name}/{container}",
        ns.unwrap_or_default()
    );
    let query = opts.kubelet_query();
    if !query.is_empty() {
        path = format!("{path}?{query}");
    }
    let out = proxy::request(
        Method::GET,
        &target,
        &path,
        http::HeaderMap::new(),
        proxy::no_body(),
    )
    .map_err(|e| ApiError::internal(e.to_string()))?;
    let resp = proxy::send(&target, out)
        .await
        .map_err(|e| ApiError::new(500, "", format!("Get {:?}: {e}", target.url(&path))))?;
    let status = resp.status().as_u16();
    if !(200..=206).contains(&status) {
        let body = read_limited(resp.into_body()).await;
        return Err(kubelet_error(status, &body, "pods/log", name));
    }
    let body = proxy::relay_body(resp.into_body());
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(http::header::CONTENT_TYPE, "text/plain")
        .body(body)
        .unwrap_or_else(|_| Response::new(full(""))))
}

/// Reads at most 50000 bytes of an error body, as upstream's response
/// checker does.
async fn read_limited(mut body: Incoming) -> String {
    const MAX: usize = 50_000;
    let mut buf = Vec::new();
    while buf.len() < MAX {
        match body.frame().await {
            Some(Ok(f)) => {
                if let Ok(d) = f.into_data() {
                    buf.extend_from_slice(&d);
                }
            }
            _ => break,
        }
    }
    buf.truncate(MAX);
    String::from_utf8_lossy(&buf).into_owned()
}

/// A kubelet error answer turned into a Status, as upstream's
/// GenericHttpResponseChecker and NewGenericServerResponse word it.
fn kubelet_error(code: u16, body: &str, resource: &str, name: &str) -> ApiError {
    if code == 400 {
        return ApiError::bad_request(body);
    }
    if code == 500 {
        let mut e = ApiError::internal(format!("Internal error occurred: {body}"));
        e.details.causes = vec![crate::status::Cause {
            reason: String::new(),
            message: body.to_string(),
            field: String::new(),
        }];
        return e;
    }
    let (reason, message): (&'static str, String) = match code {
        409 => ("Conflict", "the server reported a conflict".into()),
        404 => (
            "NotFound",
            "the server could not find the requested resource".into(),
        ),
        401 => (
            "Unauthorized",
            "the server has asked for the client to provide credentials".into(),
        ),
        403 => ("Forbidden", body.to_string()),
        405 => (
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource".into(),
        ),
        422 => (
            "Invalid",
            "the server rejected our request due to an error in our request".into(),
        ),
        504 => ("Timeout", "the server was unable to return a response in the time allotted, but may still be processing the request".into()),
        429 => ("TooManyRequests", "the server has received too many requests and has asked us to try again later".into()),
        c if c >= 500 => (
            "InternalError",
            format!("an error on the server ({body:?}) has prevented the request from succeeding"),
        ),
        c => (
            "",
            format!("the server responded with the status code {c} but did not return more information"),
        ),
    };
    let mut e = ApiError::new(code, reason, format!("{message} ( {resource} {name})"));
    e.details.kind = resource.to_string();
    e.details.name = name.to_string();
    e
}

fn node_name(pod: &Value) -> Option<&str> {
    location::node_name(pod)
}

async fn pod_stream(
    api: &Arc<Api>,
    client: &KubeletClient,
    res: &Arc<Resource>,
    ns: Option<&str>,
    name: &str,
    sub: &str,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let params = parse_params(req.uri().query());
    let pod = api.registry.get(res, ns, name).await?;
    let ns = ns.unwrap_or_default();
    let (kind, container, query) = match sub {
        "portforward" => ("portForward", None, portforward_query(&params)?),
        _ => {
            let opts = StreamOptions::parse(&params, sub == "exec");
            let c = validate_container(&pod, opts.container.as_deref())?;
            (sub, Some(c), opts.kubelet_query())
        }
    };
    let Some(node) = node_name(&pod) else {
        return Err(ApiError::bad_request(format!(
            "pod {name} does not have a host assigned"
        )));
    };
    let (host, port) = kubelet_of(api, client, node).await?;
    let mut path = match container {
        Some(c) => format!("/{kind}/{ns}/{name}/{c}"),
        None => format!("/{kind}/{ns}/{name}"),
    };
    if !query.is_empty() {
        path = format!("{path}?{query}");
    }
    if !is_upgrade(req.headers()) {
        return Err(ApiError::bad_request("Upgrade request required"));
    }
    let target = Target {
        host,
        port,
        transport: Transport::Tls(client.tls.clone()),
    };
    proxy::upgrade(req, &target, &path).await
}

async fn node_proxy(
    api: &Arc<Api>,
    client: &KubeletClient,
    id: &str,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    if !matches!(
        *req.method(),
        Method::GET
            | Method::POST
            | Method::PUT
            | Method::PATCH
            | Method::DELETE
            | Method::HEAD
            | Method::OPTIONS
    ) {
        return Err(method_not_allowed(req.method()));
    }
    let (scheme, node, port_req) = split_scheme_name_port(id)
        .ok_or_else(|| ApiError::bad_request(format!("invalid node request {id:?}")))?;
    // What follows `/nodes/{id}/proxy` in the raw path, trailing slash kept.
    let raw = req.uri().path();
    let marker = format!("/nodes/{id}/proxy");
    let rest = raw
        .find(&marker)
        .map(|i| &raw[i + marker.len()..])
        .filter(|r| r.is_empty() || r.starts_with('/'))
        .ok_or_else(not_found)?;
    let mut path = if rest.is_empty() {
        "/".to_string()
    } else {
        rest.to_string()
    };
    if let Some(q) = req.uri().query() {
        path = format!("{path}?{q}");
    }
    let (host, kport) = kubelet_of(api, client, node).await?;
    let target = if port_req.is_empty() || port_req == kport.to_string() {
        Target {
            host,
            port: kport,
            transport: Transport::Tls(client.tls.clone()),
        }
    } else {
        let port: u16 = port_req
            .parse()
            .map_err(|_| ApiError::bad_request(format!("invalid node request {id:?}")))?;
        check_proxyable(&host, port).await?;
        Target {
            host,
            port,
            transport: match scheme {
                "https" => Transport::Tls(client.proxy_tls.clone()),
                _ => Transport::Plain,
            },
        }
    };
    if is_upgrade(req.headers()) {
        return proxy::upgrade(req, &target, &path).await;
    }
    let (parts, body) = req.into_parts();
    let headers = proxy::forward_headers(&parts.headers, false);
    let out = proxy::request(
        parts.method.clone(),
        &target,
        &path,
        headers,
        body.boxed_unsync(),
    )
    .map_err(|e| ApiError::internal(e.to_string()))?;
    let resp = proxy::send(&target, out)
        .await
        .map_err(|e| ApiError::new(500, "", e.to_string()))?;
    Ok(proxy::relay_response(resp))
}

/// Other ports than the kubelet's may only be reached on global unicast
/// addresses (upstream's IsProxyableHostname).
async fn check_proxyable(host: &str, port: u16) -> Result<(), ApiError> {
    let addrs: Vec<std::net::SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| ApiError::bad_request(e.to_string()))?
        .collect();
    if addrs.is_empty() {
        return Err(ApiError::bad_request("no addresses for hostname"));
    }
    if addrs.iter().any(|a| !is_global_unicast(a.ip())) {
        return Err(ApiError::bad_request("address not allowed"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_running_subresources() {
        assert!(is_long_running("/api/v1/namespaces/d/pods/web/log"));
        assert!(is_long_running("/api/v1/namespaces/d/pods/web/exec"));
        assert!(is_long_running("/api/v1/nodes/n/proxy/stats/summary"));
        assert!(!is_long_running("/api/v1/namespaces/d/pods/web/status"));
        assert!(!is_long_running("/api/v1/namespaces/d/pods/log"));
    }

    #[test]
    fn kubelet_errors_worded_as_upstream() {
        let e = kubelet_error(404, "nope", "pods/log", "web");
        assert_eq!(e.reason, "NotFound");
        assert_eq!(
            e.message,
            "the server could not find the requested resource ( pods/log web)"
        );
        let e = kubelet_error(
            400,
            "container \"a\" in pod \"web\" is waiting to start: ContainerCreating",
            "pods/log",
            "web",
        );
        assert_eq!(e.code, 400);
        assert_eq!(
            e.message,
            "container \"a\" in pod \"web\" is waiting to start: ContainerCreating"
        );
        let e = kubelet_error(500, "boom", "pods/log", "web");
        assert_eq!(e.message, "Internal error occurred: boom");
        let e = kubelet_error(502, "bad", "pods/log", "web");
        assert_eq!(
            e.message,
            "an error on the server (\"bad\") has prevented the request from succeeding ( pods/log web)"
        );
    }
}
