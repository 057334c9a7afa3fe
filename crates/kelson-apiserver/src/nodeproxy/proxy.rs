//! The upgrade-aware proxy to a kubelet: one HTTP/1.1 connection per
//! request, responses streamed back unbuffered, and for upgrade requests
//! (SPDY/3.1, WebSocket) the two upgraded connections spliced byte for byte
//! until either side closes, as upstream's UpgradeAwareHandler does.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Empty};
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::handler::{full, Body};
use crate::status::ApiError;

/// How long dialing and the TLS handshake may take.
const DIAL_TIMEOUT: Duration = Duration::from_secs(10);

/// The request body sent to the backend.
pub type OutBody = UnsyncBoxBody<Bytes, hyper::Error>;

pub fn no_body() -> OutBody {
    Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// How to talk to the backend.
#[derive(Clone)]
pub enum Transport {
    /// TLS with the given client configuration.
    Tls(Arc<rustls::ClientConfig>),
    /// Plain HTTP (nodes/proxy to a port other than the kubelet's).
    Plain,
}

/// Where a request goes.
pub struct Target {
    pub host: String,
    pub port: u16,
    pub transport: Transport,
}

impl Target {
    pub fn url(&self, path_and_query: &str) -> String {
        let scheme = match self.transport {
            Transport::Tls(_) => "https",
            Transport::Plain => "http",
        };
        format!("{scheme}://{}{path_and_query}", self.authority())
    }

    fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("dial tcp {addr}: {source}")]
    Dial {
        addr: String,
        source: std::io::Error,
    },
    #[error("dial tcp {0}: i/o timeout")]
    DialTimeout(String),
    #[error("tls: {0}")]
    Tls(std::io::Error),
    #[error("invalid host name {0:?}")]
    Name(String),
    #[error("{0}")]
    Http(#[from] hyper::Error),
    #[error("building the request: {0}")]
    Request(#[from] http::Error),
}

async fn dial(t: &Target) -> Result<Box<dyn Io>, ProxyError> {
    let addr = t.authority();
    let connect = async {
        let tcp = TcpStream::connect((t.host.as_str(), t.port))
            .await
            .map_err(|source| ProxyError::Dial {
                addr: addr.clone(),
                source,
            })?;
        let _ = tcp.set_nodelay(true);
        match &t.transport {
            Transport::Plain => Ok(Box::new(tcp) as Box<dyn Io>),
            Transport::Tls(cfg) => {
                let name = match t.host.parse::<std::net::IpAddr>() {
                    Ok(ip) => ServerName::IpAddress(ip.into()),
                    Err(_) => ServerName::try_from(t.host.clone())
                        .map_err(|_| ProxyError::Name(t.host.clone()))?,
                };
                let tls = tokio_rustls::TlsConnector::from(cfg.clone())
                    .connect(name, tcp)
                    .await
                    .map_err(ProxyError::Tls)?;
                Ok(Box::new(tls) as Box<dyn Io>)
            }
        }
    };
    tokio::time::timeout(DIAL_TIMEOUT, connect)
        .await
        .map_err(|_| ProxyError::DialTimeout(addr.clone()))?
}

/// Sends one request on a fresh connection and returns the response head
/// with its body still streaming.
pub async fn send(t: &Target, req: Request<OutBody>) -> Result<Response<Incoming>, ProxyError> {
    let io = dial(t).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "kubelet connection ended with an error");
        }
    });
    Ok(sender.send_request(req).await?)
}

/// Headers that describe one hop only, never forwarded by a proxy (the
/// upgrade pair is kept for upgrade requests).
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "proxy-connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// The client's headers as the backend should see them: without the
/// caller's credentials (upstream's authentication filter strips them),
/// without hop-by-hop headers unless the request upgrades.
pub fn forward_headers(from: &HeaderMap, upgrade: bool) -> HeaderMap {
    let mut out = HeaderMap::new();
    for (k, v) in from {
        let name = k.as_str();
        if name == "authorization"
            || name == "host"
            || name.starts_with("impersonate-")
            || (!upgrade && HOP_BY_HOP.contains(&name))
        {
            continue;
        }
        out.append(k.clone(), v.clone());
    }
    out
}

/// Whether a request asks to switch protocols (`Connection: Upgrade` plus
/// an `Upgrade` header), as upstream's httpstream.IsUpgradeRequest.
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// Builds the backend request.
pub fn request(
    method: http::Method,
    target: &Target,
    path_and_query: &str,
    headers: HeaderMap,
    body: OutBody,
) -> Result<Request<OutBody>, ProxyError> {
    let mut req = Request::builder()
        .method(method)
        .uri(path_and_query)
        .body(body)?;
    *req.headers_mut() = headers;
    if let Ok(h) = HeaderValue::from_str(&target.authority()) {
        req.headers_mut().insert(header::HOST, h);
    }
    Ok(req)
}

/// A backend body relayed to the client as it arrives; a broken backend
/// stream ends the client's stream.
struct Relay(Incoming);

impl HttpBody for Relay {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match Pin::new(&mut self.0).poll_frame(cx) {
            Poll::Ready(Some(Ok(f))) => Poll::Ready(Some(Ok(f))),
            Poll::Ready(Some(Err(e))) => {
                tracing::debug!(error = %e, "kubelet response body ended with an error");
                Poll::Ready(None)
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.0.size_hint()
    }
}

pub fn relay_body(b: Incoming) -> Body {
    Relay(b).boxed()
}

/// The backend's response as the client gets it: status, end-to-end
/// headers, streamed body.
pub fn relay_response(resp: Response<Incoming>) -> Response<Body> {
    let (parts, body) = resp.into_parts();
    let mut out = Response::new(relay_body(body));
    *out.status_mut() = parts.status;
    for (k, v) in &parts.headers {
        if !HOP_BY_HOP.contains(&k.as_str()) {
            out.headers_mut().append(k.clone(), v.clone());
        }
    }
    out
}

/// Proxies an upgrade request. A 101 from the backend is passed to the
/// client and the connections are spliced; an error response (400 and up)
/// is passed back as it is; anything else is an invalid upgrade response.
pub async fn upgrade(
    mut req: Request<Incoming>,
    target: &Target,
    path_and_query: &str,
) -> Result<Response<Body>, ApiError> {
    let client_side = hyper::upgrade::on(&mut req);
    let headers = forward_headers(req.headers(), true);
    let out = request(
        req.method().clone(),
        target,
        path_and_query,
        headers,
        no_body(),
    )
    .map_err(|e| ApiError::internal(e.to_string()))?;
    let mut resp = send(target, out)
        .await
        .map_err(|e| ApiError::new(500, "", format!("error dialing backend: {e}")))?;
    let status = resp.status();
    if status != StatusCode::SWITCHING_PROTOCOLS {
        if status.as_u16() < 400 {
            return Err(ApiError::new(
                500,
                "",
                format!("invalid upgrade response: status code {}", status.as_u16()),
            ));
        }
        return Ok(relay_response(resp));
    }
    let backend_side = hyper::upgrade::on(&mut resp);
    let mut out = Response::new(full(""));
    *out.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    *out.headers_mut() = resp.headers().clone();
    tokio::spawn(async move {
        // The client's side upgrades once this 101 has been written.
        let (client, backend) = tokio::join!(client_side, backend_side);
        match (client, backend) {
            (Ok(c), Ok(b)) => splice(TokioIo::new(c), TokioIo::new(b)).await,
            (c, b) => tracing::debug!(
                client_ok = c.is_ok(),
                backend_ok = b.is_ok(),
                "upgrade did not complete"
            ),
        }
    });
    Ok(out)
}

/// Copies both ways until either direction ends, then closes both, as
/// upstream's proxy does (a finished exec closes the client's stream).
async fn splice<A, B>(a: A, b: B)
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let (mut ar, mut aw) = tokio::io::split(a);
    let (mut br, mut bw) = tokio::io::split(b);
    tokio::select! {
        r = tokio::io::copy(&mut ar, &mut bw) => {
            if let Err(e) = r { tracing::debug!(error = %e, "client to kubelet copy ended"); }
        }
        r = tokio::io::copy(&mut br, &mut aw) => {
            if let Err(e) = r { tracing::debug!(error = %e, "kubelet to client copy ended"); }
        }
    }
    let _ = aw.shutdown().await;
    let _ = bw.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upgrade_requests_are_recognised_as_upstream() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        assert!(!is_upgrade(&h), "no Upgrade header");
        h.insert(header::UPGRADE, HeaderValue::from_static("SPDY/3.1"));
        assert!(is_upgrade(&h));
        h.insert(header::CONNECTION, HeaderValue::from_static("close"));
        assert!(!is_upgrade(&h));
    }

    #[test]
    fn credentials_and_hop_headers_are_not_forwarded() {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer x"));
        h.insert("impersonate-user", HeaderValue::from_static("bob"));
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(
            "x-stream-protocol-version",
            HeaderValue::from_static("v4.channel.k8s.io"),
        );
        let up = forward_headers(&h, true);
        assert!(up.get(header::AUTHORIZATION).is_none());
        assert!(up.get("impersonate-user").is_none());
        assert_eq!(up.get(header::UPGRADE).unwrap(), "websocket");
        assert!(up.get("x-stream-protocol-version").is_some());
        let plain = forward_headers(&h, false);
        assert!(plain.get(header::UPGRADE).is_none());
        assert!(plain.get(header::CONNECTION).is_none());
    }
}
