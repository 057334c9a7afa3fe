//! httpGet probes and lifecycle hooks (upstream `pkg/probe/http` and
//! `NewRequestForHTTPGetAction`).
//!
//! One GET per request, `Connection: close`, no proxy, no compression, TLS
//! without certificate verification (as upstream's InsecureSkipVerify),
//! redirects followed only while they stay on the same host name, at most 10.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http::header::{
    HeaderMap, HeaderName, HeaderValue, ACCEPT, CONNECTION, HOST, LOCATION, USER_AGENT,
};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::{Container, HTTPGetAction};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kelson_apimachinery::labels::go_quote;
use tokio::io::{AsyncRead, AsyncWrite};

use super::tcp::{connect, join_host_port};
use super::{ProbeError, ProbeOutcome, ProbeResult};

/// Response body kept for the probe's message (upstream's 10 KiB).
const MAX_BODY: usize = 10 * 1024;
const MAX_REDIRECTS: usize = 10;
/// Major.minor in the User-Agent (`kube-probe/1.33`).
const KUBE_VERSION: &str = "1.33";

/// GETs the action's URL as a probe does: host defaults to `pod_ip`, a named
/// port is looked up in the container's ports. 2xx is success, 3xx a
/// warning (a redirect to another host, not followed), anything else or a
/// transport error a failure. `Err` when no request can be built (bad port).
pub async fn http_get(
    action: &HTTPGetAction,
    pod_ip: &str,
    container: &Container,
    timeout: Duration,
) -> Result<ProbeOutcome, ProbeError> {
    http_get_as(action, pod_ip, container, timeout, "probe").await
}

/// [`http_get`] with another User-Agent purpose: `"lifecycle"` for hooks
/// (`kube-lifecycle/1.33`). A hook only fails on a transport error
/// (`status_code` is `None`), whatever the status code.
pub async fn http_get_as(
    action: &HTTPGetAction,
    pod_ip: &str,
    container: &Container,
    timeout: Duration,
    purpose: &str,
) -> Result<ProbeOutcome, ProbeError> {
    let scheme = match action.scheme.as_deref().map(str::to_ascii_lowercase) {
        None => "http".to_string(),
        Some(s) if s.is_empty() => "http".to_string(),
        Some(s) => s,
    };
    let host = action
        .host
        .as_deref()
        .filter(|h| !h.is_empty())
        .unwrap_or(pod_ip)
        .to_string();
    let port = resolve_port(&action.port, container)?;
    let target = Target::new(&scheme, &host, port, action.path.as_deref().unwrap_or(""));
    let mut current = target.to_string();
    let fut = fetch(target, action, purpose, &mut current);
    match tokio::time::timeout(timeout, fut).await {
        Ok(r) => r,
        Err(_) => Ok(ProbeOutcome::new(
            ProbeResult::Failure,
            format!(
                "Get {}: context deadline exceeded (Client.Timeout exceeded while awaiting headers)",
                go_quote(&current)
            ),
        )),
    }
}

/// The probe's port: a number, a container port's name, or a number in a
/// string (upstream ResolveContainerPort).
pub(crate) fn resolve_port(port: &IntOrString, container: &Container) -> Result<u16, ProbeError> {
    let n: i64 = match port {
        IntOrString::Int(i) => i64::from(*i),
        IntOrString::String(name) => {
            let named = container
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(name.as_str()));
            match named {
                Some(p) => i64::from(p.container_port),
                None => parse_go_int(name)?,
            }
        }
    };
    u16::try_from(n)
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| ProbeError::Port(format!("invalid port number: {n}")))
}

/// strconv.Atoi with its error wording.
fn parse_go_int(s: &str) -> Result<i64, ProbeError> {
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ProbeError::Port(format!(
            "strconv.Atoi: parsing {}: invalid syntax",
            go_quote(s)
        )));
    }
    s.parse::<i64>().map_err(|_| {
        ProbeError::Port(format!(
            "strconv.Atoi: parsing {}: value out of range",
            go_quote(s)
        ))
    })
}

/// A request URL, split the way the connection needs it.
#[derive(Debug, Clone)]
struct Target {
    scheme: String,
    host: String,
    port: u16,
    /// Origin form: starts with `/`, may carry `?query`.
    path: String,
}

impl Target {
    fn new(scheme: &str, host: &str, port: u16, path: &str) -> Target {
        // A fragment never goes on the wire.
        let path = path.split('#').next().unwrap_or("");
        let mut p = String::new();
        if !path.starts_with('/') {
            p.push('/');
        }
        p.push_str(&escape(path));
        Target {
            scheme: scheme.to_string(),
            host: host.to_string(),
            port,
            path: p,
        }
    }

    fn authority(&self) -> String {
        join_host_port(&self.host, self.port)
    }

    /// The redirect target of a `Location` header, relative to `self`.
    fn resolve(&self, location: &str) -> Option<Target> {
        if let Some(rest) = location.strip_prefix("//") {
            return Target::absolute(&self.scheme, rest);
        }
        if let Some((scheme, rest)) = location.split_once("://") {
            if scheme
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
            {
                return Target::absolute(&scheme.to_ascii_lowercase(), rest);
            }
        }
        let path = if location.starts_with('/') {
            location.to_string()
        } else if location.starts_with('?') {
            let base = self.path.split('?').next().unwrap_or("/");
            format!("{base}{location}")
        } else {
            let base = self.path.split('?').next().unwrap_or("/");
            let dir = base.rsplit_once('/').map_or("", |(d, _)| d);
            format!("{dir}/{location}")
        };
        Some(Target::new(&self.scheme, &self.host, self.port, &path))
    }

    /// `host[:port]/path` after a scheme.
    fn absolute(scheme: &str, rest: &str) -> Option<Target> {
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        // Credentials in the URL are not used.
        let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
        let default_port = if scheme == "https" { 443 } else { 80 };
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, tail) = v6.split_once(']')?;
            let port = match tail.strip_prefix(':') {
                Some(p) => p.parse().ok()?,
                None => default_port,
            };
            (h.to_string(), port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), p.parse().ok()?),
                None => (authority.to_string(), default_port),
            }
        };
        if host.is_empty() {
            return None;
        }
        Some(Target::new(scheme, &host, port, path))
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}://{}{}", self.scheme, self.authority(), self.path)
    }
}

/// Percent-encodes what may not appear in a request target (as Go's URL
/// String would).
fn escape(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for b in path.bytes() {
        let ok = b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/%?".contains(&b);
        if ok {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Runs the request and its redirects; `current` tracks the URL in flight
/// for the timeout message.
async fn fetch(
    first: Target,
    action: &HTTPGetAction,
    purpose: &str,
    current: &mut String,
) -> Result<ProbeOutcome, ProbeError> {
    let failure = |url: &str, msg: String| {
        Ok(ProbeOutcome::new(
            ProbeResult::Failure,
            format!("Get {}: {msg}", go_quote(url)),
        ))
    };
    let (headers, host_override) = match request_headers(action, purpose) {
        Ok(h) => h,
        Err(msg) => return failure(&first.to_string(), msg),
    };
    let first_host = first.host.clone();
    let mut target = first;
    let mut host_header = host_override.clone();
    let mut redirects = 0;
    loop {
        *current = target.to_string();
        let (resp, driver) = match send(&target, &headers, host_header.as_deref()).await {
            Ok(r) => r,
            Err(msg) => return failure(current, msg),
        };
        let code = resp.status().as_u16();
        let location = resp
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let follows = matches!(code, 301 | 302 | 303 | 307 | 308);
        if let (true, Some(loc)) = (follows, location) {
            let Some(next) = target.resolve(&loc) else {
                driver.abort();
                return failure(
                    current,
                    format!("failed to parse Location header {}", go_quote(&loc)),
                );
            };
            if next.host == first_host {
                driver.abort();
                // Go's checker sees the requests made so far: the tenth
                // redirect response ends the chain.
                redirects += 1;
                if redirects >= MAX_REDIRECTS {
                    return failure(&loc, "stopped after 10 redirects".into());
                }
                // A Host override survives only a relative redirect (as
                // Go's client).
                if loc.contains("://") || loc.starts_with("//") {
                    host_header = None;
                }
                target = next;
                continue;
            }
            // Another host: stop and judge this response.
        }
        let body = read_capped(resp.into_body()).await;
        driver.abort();
        let body = match body {
            Ok(b) => b,
            Err(msg) => return Err(ProbeError::Request(msg)),
        };
        let body = String::from_utf8_lossy(&body).into_owned();
        let mut out = if (200..300).contains(&code) {
            ProbeOutcome::new(ProbeResult::Success, body)
        } else if (300..400).contains(&code) {
            ProbeOutcome::new(
                ProbeResult::Warning,
                format!("Probe terminated redirects, Response body: {body}"),
            )
        } else {
            // Upstream keeps the body out of the user-facing message.
            ProbeOutcome::new(
                ProbeResult::Failure,
                format!("HTTP probe failed with statuscode: {code}"),
            )
        };
        out.status_code = Some(code);
        return Ok(out);
    }
}

/// The action's headers plus upstream's defaults (User-Agent, `Accept: */*`
/// unless set; an empty Accept removes it). A `Host` header becomes the
/// request's host. Errors are Go's wording.
fn request_headers(
    action: &HTTPGetAction,
    purpose: &str,
) -> Result<(HeaderMap, Option<String>), String> {
    let mut headers = HeaderMap::new();
    let mut host = None;
    for h in action.http_headers.iter().flatten() {
        let name = HeaderName::from_bytes(h.name.as_bytes())
            .map_err(|_| format!("net/http: invalid header field name {}", go_quote(&h.name)))?;
        if name == HOST {
            host.get_or_insert_with(|| h.value.clone());
            continue;
        }
        let value = HeaderValue::from_str(&h.value).map_err(|_| {
            format!(
                "net/http: invalid header field value for {}",
                go_quote(&h.name)
            )
        })?;
        headers.append(name, value);
    }
    if !headers.contains_key(USER_AGENT) {
        let ua = format!("kube-{purpose}/{KUBE_VERSION}");
        if let Ok(v) = HeaderValue::from_str(&ua) {
            headers.insert(USER_AGENT, v);
        }
    }
    match headers.get(ACCEPT) {
        None => {
            headers.insert(ACCEPT, HeaderValue::from_static("*/*"));
        }
        Some(v) if v.is_empty() => {
            headers.remove(ACCEPT);
        }
        Some(_) => {}
    }
    headers.insert(CONNECTION, HeaderValue::from_static("close"));
    Ok((headers, host.filter(|h| !h.is_empty())))
}

type Driver = tokio::task::JoinHandle<()>;

/// One GET on a fresh connection. The returned task drives the connection;
/// abort it once the body has been read.
async fn send(
    target: &Target,
    headers: &HeaderMap,
    host: Option<&str>,
) -> Result<(http::Response<Incoming>, Driver), String> {
    let tcp = connect(&target.host, target.port).await?;
    let _ = tcp.set_nodelay(true);
    match target.scheme.as_str() {
        "http" => request(tcp, target, headers, host).await,
        "https" => {
            let name = rustls_pki_types::ServerName::try_from(target.host.clone())
                .map_err(|e| format!("tls: {e}"))?;
            let tls = tokio_rustls::TlsConnector::from(tls_config())
                .connect(name, tcp)
                .await
                .map_err(|e| e.to_string())?;
            request(tls, target, headers, host).await
        }
        other => Err(format!("unsupported protocol scheme {}", go_quote(other))),
    }
}

async fn request<S>(
    io: S,
    target: &Target,
    headers: &HeaderMap,
    host: Option<&str>,
) -> Result<(http::Response<Incoming>, Driver), String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| hyper_error(&e))?;
    let driver = tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut req = http::Request::builder()
        .method(http::Method::GET)
        .uri(target.path.as_str())
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    *req.headers_mut() = headers.clone();
    let host = host.map_or_else(|| target.authority(), str::to_string);
    let host = HeaderValue::from_str(&host)
        .map_err(|_| format!("invalid Host header {}", go_quote(&host)))?;
    req.headers_mut().insert(HOST, host);
    match sender.send_request(req).await {
        Ok(resp) => Ok((resp, driver)),
        Err(e) => {
            driver.abort();
            Err(hyper_error(&e))
        }
    }
}

/// Go reports a connection closed before a response as "EOF".
fn hyper_error(e: &hyper::Error) -> String {
    if e.is_incomplete_message() {
        "EOF".into()
    } else {
        e.to_string()
    }
}

/// The body, up to [`MAX_BODY`] bytes (the rest is not read).
async fn read_capped(mut body: Incoming) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    while out.len() < MAX_BODY {
        match body.frame().await {
            None => break,
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    let room = MAX_BODY - out.len();
                    out.extend_from_slice(&data[..data.len().min(room)]);
                }
            }
            Some(Err(e)) => return Err(hyper_error(&e)),
        }
    }
    Ok(out)
}

/// TLS without certificate checks (upstream's probes set
/// InsecureSkipVerify); handshake signatures are still verified.
fn tls_config() -> Arc<rustls::ClientConfig> {
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let verifier = Arc::new(SkipVerify(provider.clone()));
            let config = match rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
            {
                Ok(b) => b
                    .dangerous()
                    .with_custom_certificate_verifier(verifier)
                    .with_no_client_auth(),
                // ring supports the default versions; keep a usable config
                // regardless.
                Err(_) => rustls::ClientConfig::builder()
                    .dangerous()
                    .with_custom_certificate_verifier(verifier)
                    .with_no_client_auth(),
            };
            Arc::new(config)
        })
        .clone()
}

#[derive(Debug)]
struct SkipVerify(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for SkipVerify {
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

#[cfg(test)]
mod tests;
