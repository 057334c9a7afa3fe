//! The kubelet's HTTPS API, as upstream's kubelet server serves it on
//! port 10250: `/healthz`, `/pods`, `/stats/summary`, `/metrics/resource`,
//! `/containerLogs/{ns}/{pod}/{container}`, `/exec/...`, `/attach/...` and
//! `/portForward/...`.
//!
//! TLS with the node's serving certificate; every client must present a
//! certificate signed by the cluster CA (the API server connects with its
//! kubelet client certificate). Streaming endpoints ask the CRI for the
//! runtime's streaming URL and bridge the client to it (see
//! [`streaming`]).

pub mod logs;
pub mod spdy;
pub mod stats;
pub mod streaming;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::{Body as HttpBody, Frame, Incoming};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::Pod;
use rustls_pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use kelson_cri::api::{
    AttachRequest, ContainerState, ContainerStatusRequest, ExecRequest, ListContainerStatsRequest,
    ListPodSandboxRequest, PodSandboxFilter, PodSandboxState, PodSandboxStateValue,
    PortForwardRequest,
};

use streaming::{
    StreamFlags, TranslateOptions, PORT_FORWARD_PROTOCOL, PORT_FORWARD_TUNNEL_PROTOCOL,
    STREAM_PROTOCOL_V4, WS_PROTOCOL_V5,
};

/// Where and how the kubelet serves.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub addr: SocketAddr,
    /// The node's serving certificate chain and key (PEM).
    pub cert_pem: String,
    pub key_pem: String,
    /// The CA that client certificates must chain to (PEM).
    pub client_ca_pem: String,
    /// The node's name, for `/stats/summary`.
    pub node_name: String,
}

/// Where a container's output is: its runtime ID and CRI log file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerLocation {
    pub id: String,
    pub log_path: PathBuf,
    pub running: bool,
}

/// The kubelet's pods, as the server needs them.
pub trait PodProvider: Send + Sync + 'static {
    /// Every pod bound to this node.
    fn pods(&self) -> Vec<Pod>;
    fn pod(&self, ns: &str, name: &str) -> Option<Pod>;
    /// The container instance whose logs a request reads (`previous`: the
    /// last terminated one). The error is upstream's text (see
    /// [`log_container_id`]), answered as 400.
    fn container(
        &self,
        ns: &str,
        pod: &str,
        container: &str,
        previous: bool,
    ) -> Result<ContainerLocation, String>;
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("kubelet server TLS configuration: {0}")]
    Tls(String),
    #[error("binding the kubelet server to {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Upstream's validateContainerLogStatus: the ID (without the runtime
/// scheme) of the container instance whose logs to read, from the pod's
/// status, or the error text the kubelet answers.
pub fn log_container_id(pod: &Pod, container: &str, previous: bool) -> Result<String, String> {
    let pod_name = pod.metadata.name.as_deref().unwrap_or_default();
    let st = pod.status.as_ref();
    let found = [
        st.and_then(|s| s.container_statuses.as_ref()),
        st.and_then(|s| s.init_container_statuses.as_ref()),
        st.and_then(|s| s.ephemeral_container_statuses.as_ref()),
    ]
    .into_iter()
    .flatten()
    .flatten()
    .find(|c| c.name == container);
    let Some(cs) = found else {
        return Err(format!(
            "container {container:?} in pod {pod_name:?} is not available"
        ));
    };
    let last = cs.last_state.as_ref().and_then(|s| s.terminated.as_ref());
    let last_id = last
        .and_then(|t| t.container_id.as_deref())
        .filter(|i| !i.is_empty());
    let state = cs.state.as_ref();
    let terminated = |p: &str| format!("container {container:?} in pod {p:?} is terminated");
    let id = if previous {
        last_id.ok_or_else(|| {
            format!("previous terminated container {container:?} in pod {pod_name:?} not found")
        })?
    } else if state.and_then(|s| s.running.as_ref()).is_some() {
        cs.container_id.as_deref().unwrap_or_default()
    } else if let Some(t) = state.and_then(|s| s.terminated.as_ref()) {
        match t.container_id.as_deref().filter(|i| !i.is_empty()) {
            Some(i) => i,
            None => last_id.ok_or_else(|| terminated(pod_name))?,
        }
    } else if last.is_some() {
        last_id.ok_or_else(|| terminated(pod_name))?
    } else if let Some(w) = state.and_then(|s| s.waiting.as_ref()) {
        let reason = w.reason.as_deref().unwrap_or_default();
        let why = match reason {
            "ErrImagePull" => "image can't be pulled",
            "ImagePullBackOff" => "trying and failing to pull image",
            r => r,
        };
        return Err(format!(
            "container {container:?} in pod {pod_name:?} is waiting to start: {why}"
        ));
    } else {
        return Err(format!(
            "container {container:?} in pod {pod_name:?} is waiting to start - no logs yet"
        ));
    };
    Ok(id
        .split_once("://")
        .map(|(_, i)| i)
        .unwrap_or(id)
        .to_string())
}

type Body = BoxBody<Bytes, Infallible>;

fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).boxed()
}

fn respond(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(full(body));
    *r.status_mut() = status;
    if let Ok(v) = HeaderValue::from_str(content_type) {
        r.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    r
}

/// An error as go-restful's WriteError and Go's http.Error write it.
fn text_error(status: StatusCode, msg: impl Into<String>) -> Response<Body> {
    respond(status, "text/plain; charset=utf-8", msg.into())
}

fn not_found() -> Response<Body> {
    text_error(StatusCode::NOT_FOUND, "404 page not found\n")
}

/// A body fed by a channel: streamed log output.
struct ChannelBody(mpsc::Receiver<Bytes>);

impl HttpBody for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b))))
    }
}

struct State {
    cri: kelson_cri::Cri,
    pods: Arc<dyn PodProvider>,
    node_name: String,
    cpu: stats::CpuSampler,
    /// Ends the streams (logs, exec, port-forward) still open at shutdown.
    cancel: CancellationToken,
}

impl State {
    /// Runs a stream's work in the background until it ends or the server
    /// stops.
    fn spawn<F>(&self, work: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let cancel = self.cancel.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = cancel.cancelled() => {}
                _ = work => {}
            }
        });
    }
}

/// Serves until `cancel`; open connections are dropped then too.
pub async fn serve(
    cfg: ServerConfig,
    cri: kelson_cri::Cri,
    pods: Arc<dyn PodProvider>,
    cancel: CancellationToken,
) -> Result<(), ServerError> {
    let tls = Arc::new(tls_config(&cfg)?);
    let listener = TcpListener::bind(cfg.addr)
        .await
        .map_err(|source| ServerError::Bind {
            addr: cfg.addr,
            source,
        })?;
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let state = Arc::new(State {
        cri,
        pods,
        node_name: cfg.node_name.clone(),
        cpu: stats::CpuSampler::default(),
        cancel: cancel.clone(),
    });
    let mut conns = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            _ = cancel.cancelled() => break,
            a = listener.accept() => a,
            // Reap finished connections so the set does not grow.
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
        };
        let (tcp, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::debug!(error = %e, "kubelet server accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let state = state.clone();
        conns.spawn(async move {
            let tls =
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(t)) => t,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "kubelet server TLS handshake failed");
                        return;
                    }
                    Err(_) => return,
                };
            // The CA also signs nodes' and users' certificates; only the API
            // server (and cluster admins) may use the kubelet's API, as
            // upstream's webhook authorizer would decide.
            let allowed = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .is_some_and(|c| may_use_kubelet_api(c.as_ref()));
            if !allowed {
                tracing::debug!(%peer, "kubelet API refused: client is not the API server");
                return;
            }
            let svc = hyper::service::service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(route(state, req).await) }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tls), svc)
                .with_upgrades()
                .await
            {
                tracing::debug!(%peer, error = %e, "kubelet server connection ended");
            }
        });
    }
    conns.shutdown().await;
    Ok(())
}

/// The API server's kubelet client (CN kube-apiserver-kubelet-client) and
/// members of system:masters.
fn may_use_kubelet_api(der: &[u8]) -> bool {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return false;
    };
    let subject = cert.subject();
    let cn_ok = subject
        .iter_common_name()
        .filter_map(|a| a.as_str().ok())
        .any(|cn| cn == "kube-apiserver-kubelet-client");
    let masters = subject
        .iter_organization()
        .filter_map(|a| a.as_str().ok())
        .any(|o| o == "system:masters");
    cn_ok || masters
}

fn tls_config(cfg: &ServerConfig) -> Result<rustls::ServerConfig, ServerError> {
    let err = |e: String| ServerError::Tls(e);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(cfg.client_ca_pem.as_bytes()) {
        roots
            .add(c.map_err(|e| err(format!("client CA: {e}")))?)
            .map_err(|e| err(format!("client CA: {e}")))?;
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .map_err(|e| err(format!("client verifier: {e}")))?;
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(cfg.cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|e| err(format!("serving certificate: {e}")))?;
    let key = PrivateKeyDer::from_pem_slice(cfg.key_pem.as_bytes())
        .map_err(|e| err(format!("serving key: {e}")))?;
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| err(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| err(e.to_string()))?;
    // Upgrades (SPDY, WebSocket) need HTTP/1.1.
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tls)
}

/// Decodes %XX escapes (and `+` in queries).
fn percent_decode(s: &str, plus_is_space: bool) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(v) => {
                        out.push(v);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b'+' if plus_is_space => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Query parameters in order, every value kept.
fn parse_query(q: Option<&str>) -> Vec<(String, String)> {
    q.unwrap_or("")
        .split('&')
        .filter(|s| !s.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (percent_decode(k, true), percent_decode(v, true))
        })
        .collect()
}

async fn route(state: Arc<State>, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_string();
    let segs: Vec<String> = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| percent_decode(s, false))
        .collect();
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    let get = matches!(*req.method(), Method::GET | Method::HEAD);
    let get_or_post = get || *req.method() == Method::POST;
    match segs.as_slice() {
        ["healthz"] if get => respond(StatusCode::OK, "text/plain; charset=utf-8", "ok"),
        ["pods"] if get => pods(&state),
        ["stats", "summary"] if get_or_post => {
            let s = summary(&state).await;
            respond(
                StatusCode::OK,
                "application/json",
                serde_json::to_vec(&s).unwrap_or_default(),
            )
        }
        ["metrics", "resource"] if get => respond(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            stats::resource_metrics(&summary(&state).await),
        ),
        ["containerLogs", ns, pod, container] if get => {
            container_logs(&state, &req, ns, pod, container).await
        }
        ["exec" | "attach", ns, pod, container] if get_or_post => {
            let (ns, pod, container) = (ns.to_string(), pod.to_string(), container.to_string());
            remote_command(&state, req, &ns, &pod, None, &container).await
        }
        ["exec" | "attach", ns, pod, uid, container] if get_or_post => {
            let (ns, pod, uid, container) = (
                ns.to_string(),
                pod.to_string(),
                uid.to_string(),
                container.to_string(),
            );
            remote_command(&state, req, &ns, &pod, Some(&uid), &container).await
        }
        ["portForward", ns, pod] if get_or_post => {
            let (ns, pod) = (ns.to_string(), pod.to_string());
            port_forward(&state, req, &ns, &pod, None).await
        }
        ["portForward", ns, pod, uid] if get_or_post => {
            let (ns, pod, uid) = (ns.to_string(), pod.to_string(), uid.to_string());
            port_forward(&state, req, &ns, &pod, Some(&uid)).await
        }
        _ => not_found(),
    }
}

fn pods(state: &State) -> Response<Body> {
    let list = serde_json::json!({
        "kind": "PodList",
        "apiVersion": "v1",
        "metadata": {},
        "items": state.pods.pods(),
    });
    respond(
        StatusCode::OK,
        "application/json",
        serde_json::to_vec(&list).unwrap_or_default(),
    )
}

/// The Summary (stats/v1alpha1) of the node and its pods.
async fn summary(state: &State) -> serde_json::Value {
    let proc_root = std::path::Path::new("/proc");
    let now = stats::rfc3339(jiff::Timestamp::now());
    let mut cpu = serde_json::json!({ "time": now });
    if let Some(u) = stats::node_cpu_usage(std::path::Path::new("/sys/fs/cgroup"), proc_root) {
        cpu["usageCoreNanoSeconds"] = u.into();
        if let Some(r) = state.cpu.observe(Instant::now(), u) {
            cpu["usageNanoCores"] = r.into();
        }
    }
    let mut node = serde_json::json!({
        "nodeName": state.node_name,
        "systemContainers": [],
        "cpu": cpu,
        "memory": stats::node_memory(proc_root, &now),
    });
    if let Some(b) = stats::boot_time(proc_root) {
        node["startTime"] = b.into();
    }
    if let Some(fs) = stats::fs_stats(std::path::Path::new("/"), &now) {
        node["fs"] = fs;
    }
    let container_stats = state
        .cri
        .runtime_client()
        .list_container_stats(ListContainerStatsRequest { filter: None })
        .await
        .map(|r| r.into_inner().stats)
        .unwrap_or_else(|e| {
            tracing::debug!(error = %e, "ListContainerStats failed");
            Vec::new()
        });
    serde_json::json!({
        "node": node,
        "pods": stats::pod_stats(&state.pods.pods(), &container_stats, &now),
    })
}

/// Whether a pod spec names the container (init, regular or ephemeral).
fn has_container(pod: &Pod, name: &str) -> bool {
    let Some(spec) = &pod.spec else { return false };
    spec.containers.iter().any(|c| c.name == name)
        || spec
            .init_containers
            .iter()
            .flatten()
            .any(|c| c.name == name)
        || spec
            .ephemeral_containers
            .iter()
            .flatten()
            .any(|c| c.name == name)
}

/// The runtime's view of a container, for `follow`.
struct CriState(kelson_cri::Cri);

#[async_trait::async_trait]
impl logs::ContainerRunning for CriState {
    async fn running(&self, id: &str) -> bool {
        self.0
            .runtime_client()
            .container_status(ContainerStatusRequest {
                container_id: id.to_string(),
                verbose: false,
            })
            .await
            .ok()
            .and_then(|r| r.into_inner().status)
            .is_some_and(|s| s.state == ContainerState::ContainerRunning as i32)
    }
}

async fn container_logs(
    state: &State,
    req: &Request<Incoming>,
    ns: &str,
    pod: &str,
    container: &str,
) -> Response<Body> {
    let params = parse_query(req.uri().query());
    let opts = match logs::LogOptions::from_query(&params) {
        Ok(o) => o,
        Err(logs::OptionsError::Decode) => {
            return text_error(
                StatusCode::BAD_REQUEST,
                r#"{"message": "Unable to decode query."}"#,
            )
        }
        Err(logs::OptionsError::Invalid) => {
            return text_error(
                StatusCode::UNPROCESSABLE_ENTITY,
                r#"{"message": "Invalid request."}"#,
            )
        }
    };
    let Some(p) = state.pods.pod(ns, pod) else {
        return text_error(StatusCode::NOT_FOUND, format!("pod {pod:?} does not exist"));
    };
    if !has_container(&p, container) {
        return text_error(
            StatusCode::NOT_FOUND,
            format!("container {container:?} not found in pod {pod:?}"),
        );
    }
    let loc = match state.pods.container(ns, pod, container, opts.previous) {
        Ok(l) => l,
        Err(msg) => return text_error(StatusCode::BAD_REQUEST, msg),
    };
    // Open before answering so a missing file is still a 400.
    if let Err(e) = tokio::fs::metadata(&loc.log_path).await {
        return text_error(
            StatusCode::BAD_REQUEST,
            format!("failed to open log file {:?}: {e}", loc.log_path),
        );
    }
    let (tx, rx) = mpsc::channel(16);
    let cri = CriState(state.cri.clone());
    state.spawn(async move {
        if let Err(e) = logs::read_logs(&loc.log_path, &loc.id, &opts, &cri, tx).await {
            tracing::debug!(error = %e, "reading container logs");
        }
    });
    let mut r = Response::new(ChannelBody(rx).boxed());
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// An error from the CRI, as upstream's streaming.WriteError answers it.
fn cri_error(s: &tonic::Status) -> Response<Body> {
    let status = match s.code() {
        tonic::Code::NotFound => StatusCode::NOT_FOUND,
        tonic::Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    text_error(
        status,
        format!("rpc error: code = {:?} desc = {}", s.code(), s.message()),
    )
}

async fn remote_command(
    state: &State,
    req: Request<Incoming>,
    ns: &str,
    pod: &str,
    uid: Option<&str>,
    container: &str,
) -> Response<Body> {
    let exec = req.uri().path().starts_with("/exec/");
    let params = parse_query(req.uri().query());
    let flags = match StreamFlags::from_query(&params) {
        Ok(f) => f,
        Err(e) => return text_error(StatusCode::BAD_REQUEST, e),
    };
    let Some(p) = state.pods.pod(ns, pod) else {
        return text_error(StatusCode::NOT_FOUND, "pod does not exist");
    };
    let not_found = || {
        text_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("container not found ({container:?})"),
        )
    };
    if uid.is_some_and(|u| p.metadata.uid.as_deref() != Some(u)) {
        return not_found();
    }
    let id = match state.pods.container(ns, pod, container, false) {
        Ok(l) if l.running => l.id,
        _ => return not_found(),
    };
    let mut rt = state.cri.runtime_client();
    let url = if exec {
        let cmd: Vec<String> = params
            .iter()
            .filter(|(k, _)| k == "command")
            .map(|(_, v)| v.clone())
            .collect();
        rt.exec(ExecRequest {
            container_id: id,
            cmd,
            tty: flags.tty,
            stdin: flags.stdin,
            stdout: flags.stdout,
            stderr: flags.stderr,
        })
        .await
        .map(|r| r.into_inner().url)
    } else {
        rt.attach(AttachRequest {
            container_id: id,
            stdin: flags.stdin,
            tty: flags.tty,
            stdout: flags.stdout,
            stderr: flags.stderr,
        })
        .await
        .map(|r| r.into_inner().url)
    };
    let url = match url {
        Ok(u) => u,
        Err(s) => return cri_error(&s),
    };
    if streaming::is_websocket(req.headers()) {
        let offered = streaming::ws_protocols(req.headers());
        let Some(proto) = streaming::negotiate(&offered, &[WS_PROTOCOL_V5, STREAM_PROTOCOL_V4])
        else {
            return protocol_error(&offered, &[WS_PROTOCOL_V5, STREAM_PROTOCOL_V4]);
        };
        let opts = TranslateOptions {
            close_signal: proto == WS_PROTOCOL_V5,
            initial: Vec::new(),
        };
        return translate_ws(
            state,
            req,
            &url,
            &proto,
            streaming::exec_channels(flags),
            opts,
            &[STREAM_PROTOCOL_V4],
        )
        .await;
    }
    passthrough(state, req, &url).await
}

fn protocol_error(offered: &[String], supported: &[&str]) -> Response<Body> {
    text_error(
        StatusCode::BAD_REQUEST,
        format!(
            "unable to upgrade: unable to negotiate protocol: client supports {:?}, server supports {:?}",
            offered, supported
        ),
    )
}

/// The ready sandbox of a pod, by the uid label the kubelet sets.
async fn sandbox_of(state: &State, pod: &Pod) -> Option<String> {
    let uid = pod.metadata.uid.clone()?;
    let resp = state
        .cri
        .runtime_client()
        .list_pod_sandbox(ListPodSandboxRequest {
            filter: Some(PodSandboxFilter {
                id: String::new(),
                state: Some(PodSandboxStateValue {
                    state: PodSandboxState::SandboxReady as i32,
                }),
                label_selector: [("io.kubernetes.pod.uid".to_string(), uid)]
                    .into_iter()
                    .collect(),
            }),
        })
        .await
        .ok()?
        .into_inner();
    resp.items
        .into_iter()
        .max_by_key(|s| s.created_at)
        .map(|s| s.id)
}

async fn port_forward(
    state: &State,
    req: Request<Incoming>,
    ns: &str,
    pod: &str,
    uid: Option<&str>,
) -> Response<Body> {
    let params = parse_query(req.uri().query());
    let mut ports: Vec<u16> = Vec::new();
    for (_, v) in params.iter().filter(|(k, _)| k == "port") {
        for p in v.split(',').filter(|p| !p.is_empty()) {
            match p.trim().parse::<u16>() {
                Ok(n) if n > 0 => ports.push(n),
                _ => {
                    return text_error(
                        StatusCode::BAD_REQUEST,
                        format!("unable to parse {p:?} as a port: invalid port"),
                    )
                }
            }
        }
    }
    let Some(p) = state.pods.pod(ns, pod) else {
        return text_error(StatusCode::NOT_FOUND, "pod does not exist");
    };
    let full_name = format!("{pod}_{ns}");
    if uid.is_some_and(|u| p.metadata.uid.as_deref() != Some(u)) {
        return text_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("pod not found ({full_name:?})"),
        );
    }
    let Some(sandbox) = sandbox_of(state, &p).await else {
        return text_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("pod not found ({full_name:?})"),
        );
    };
    let url = match state
        .cri
        .runtime_client()
        .port_forward(PortForwardRequest {
            pod_sandbox_id: sandbox,
            port: ports.iter().map(|p| i32::from(*p)).collect(),
        })
        .await
    {
        Ok(r) => r.into_inner().url,
        Err(s) => return cri_error(&s),
    };
    if streaming::is_websocket(req.headers()) {
        let offered = streaming::ws_protocols(req.headers());
        if offered.iter().any(|p| p == PORT_FORWARD_TUNNEL_PROTOCOL) {
            return tunnel_ws(state, req, &url).await;
        }
        let supported = [STREAM_PROTOCOL_V4, PORT_FORWARD_PROTOCOL];
        let proto = streaming::negotiate(&offered, &supported);
        if proto.is_none() && !offered.is_empty() {
            return protocol_error(&offered, &supported);
        }
        if ports.is_empty() {
            return text_error(
                StatusCode::BAD_REQUEST,
                "query parameter \"port\" is required",
            );
        }
        // Each channel opens with its port, little-endian.
        let initial = streaming::port_forward_channels(&ports)
            .iter()
            .map(|c| {
                let port = ports[usize::from(c.channel / 2)];
                (c.channel, port.to_le_bytes().to_vec())
            })
            .collect();
        let opts = TranslateOptions {
            close_signal: false,
            initial,
        };
        let proto = proto.unwrap_or_default();
        return translate_ws(
            state,
            req,
            &url,
            &proto,
            streaming::port_forward_channels(&ports),
            opts,
            &[PORT_FORWARD_PROTOCOL],
        )
        .await;
    }
    passthrough(state, req, &url).await
}

/// The runtime's refusal of an upgrade, relayed.
fn relay_refusal(status: StatusCode, body: Bytes) -> Response<Body> {
    respond(status, "text/plain; charset=utf-8", body)
}

fn dial_failed(e: &streaming::StreamError) -> Response<Body> {
    text_error(
        StatusCode::INTERNAL_SERVER_ERROR,
        format!("error dialing backend: {e}"),
    )
}

/// SPDY (or any non-WebSocket) upgrade: re-issued to the runtime, then
/// spliced.
async fn passthrough(state: &State, mut req: Request<Incoming>, url: &str) -> Response<Body> {
    if !streaming::is_upgrade(req.headers()) {
        return text_error(StatusCode::BAD_REQUEST, "Upgrade request required");
    }
    let client_side = hyper::upgrade::on(&mut req);
    let headers = streaming::passthrough_headers(req.headers());
    let mut resp = match streaming::dial(url, req.method().clone(), headers).await {
        Ok(r) => r,
        Err(e) => return dial_failed(&e),
    };
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        let status = resp.status();
        let body = streaming::read_limited(resp.into_body()).await;
        return relay_refusal(status, body);
    }
    let runtime_side = hyper::upgrade::on(&mut resp);
    let mut out = Response::new(full(Bytes::new()));
    *out.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    *out.headers_mut() = resp.headers().clone();
    state.spawn(async move {
        match tokio::join!(client_side, runtime_side) {
            (Ok(c), Ok(r)) => streaming::splice(TokioIo::new(c), TokioIo::new(r)).await,
            (c, r) => tracing::debug!(
                client_ok = c.is_ok(),
                runtime_ok = r.is_ok(),
                "streaming upgrade did not complete"
            ),
        }
    });
    out
}

/// Accepts the WebSocket (after the runtime accepted its SPDY upgrade) and
/// translates its channels to SPDY streams.
async fn translate_ws(
    state: &State,
    mut req: Request<Incoming>,
    url: &str,
    protocol: &str,
    channels: Vec<streaming::ChannelSpec>,
    opts: TranslateOptions,
    runtime_protocols: &[&str],
) -> Response<Body> {
    let proto = (!protocol.is_empty()).then_some(protocol);
    let Some(accept) = streaming::websocket_accept(req.headers(), proto) else {
        return text_error(StatusCode::BAD_REQUEST, "missing Sec-WebSocket-Key");
    };
    let runtime = match streaming::spdy_upgrade(url, runtime_protocols).await {
        Ok(Ok(u)) => u,
        Ok(Err((status, body))) => return relay_refusal(status, body),
        Err(e) => return dial_failed(&e),
    };
    let client_side = hyper::upgrade::on(&mut req);
    state.spawn(async move {
        let Ok(client) = client_side.await else {
            return;
        };
        let ws = streaming::server_websocket(TokioIo::new(client)).await;
        if let Err(e) = streaming::translate(ws, TokioIo::new(runtime), channels, opts).await {
            tracing::debug!(error = %e, "websocket stream translation ended");
        }
    });
    switching(accept)
}

/// WebSocket port-forward tunneling: SPDY inside WebSocket messages.
async fn tunnel_ws(state: &State, mut req: Request<Incoming>, url: &str) -> Response<Body> {
    let Some(accept) =
        streaming::websocket_accept(req.headers(), Some(PORT_FORWARD_TUNNEL_PROTOCOL))
    else {
        return text_error(StatusCode::BAD_REQUEST, "missing Sec-WebSocket-Key");
    };
    let runtime = match streaming::spdy_upgrade(url, &[PORT_FORWARD_PROTOCOL]).await {
        Ok(Ok(u)) => u,
        Ok(Err((status, body))) => return relay_refusal(status, body),
        Err(e) => return dial_failed(&e),
    };
    let client_side = hyper::upgrade::on(&mut req);
    state.spawn(async move {
        let Ok(client) = client_side.await else {
            return;
        };
        let ws = streaming::server_websocket(TokioIo::new(client)).await;
        streaming::tunnel(ws, TokioIo::new(runtime)).await;
    });
    let mut accept = accept;
    accept.insert(
        "x-stream-protocol-version",
        HeaderValue::from_static(PORT_FORWARD_PROTOCOL),
    );
    switching(accept)
}

fn switching(headers: http::HeaderMap) -> Response<Body> {
    let mut out = Response::new(full(Bytes::new()));
    *out.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    *out.headers_mut() = headers;
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(status: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "web"}, "status": status})).unwrap()
    }

    #[test]
    fn log_container_follows_upstreams_rules() {
        let running = pod(json!({"containerStatuses": [{
            "name": "app", "containerID": "containerd://abc", "image": "", "imageID": "",
            "ready": true, "restartCount": 1,
            "state": {"running": {}},
            "lastState": {"terminated": {"exitCode": 1, "containerID": "containerd://old"}}
        }]}));
        assert_eq!(log_container_id(&running, "app", false).unwrap(), "abc");
        assert_eq!(log_container_id(&running, "app", true).unwrap(), "old");
        assert_eq!(
            log_container_id(&running, "x", false).unwrap_err(),
            "container \"x\" in pod \"web\" is not available"
        );
        let waiting = pod(json!({"containerStatuses": [{
            "name": "app", "image": "", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"waiting": {"reason": "ImagePullBackOff"}}
        }]}));
        assert_eq!(
            log_container_id(&waiting, "app", false).unwrap_err(),
            "container \"app\" in pod \"web\" is waiting to start: trying and failing to pull image"
        );
        assert_eq!(
            log_container_id(&waiting, "app", true).unwrap_err(),
            "previous terminated container \"app\" in pod \"web\" not found"
        );
        let creating = pod(json!({"containerStatuses": [{
            "name": "app", "image": "", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"waiting": {"reason": "ContainerCreating"}}
        }]}));
        assert_eq!(
            log_container_id(&creating, "app", false).unwrap_err(),
            "container \"app\" in pod \"web\" is waiting to start: ContainerCreating"
        );
        // Terminated without an id (next start failed): the last one.
        let crashed = pod(json!({"initContainerStatuses": [{
            "name": "init", "image": "", "imageID": "", "ready": false, "restartCount": 2,
            "state": {"terminated": {"exitCode": 1}},
            "lastState": {"terminated": {"exitCode": 1, "containerID": "containerd://prev"}}
        }]}));
        assert_eq!(log_container_id(&crashed, "init", false).unwrap(), "prev");
    }

    #[test]
    fn queries_and_paths_decode() {
        let q = parse_query(Some("command=sh&command=-c&command=echo+hi%26&input=1&x"));
        assert_eq!(q[2], ("command".to_string(), "echo hi&".to_string()));
        assert_eq!(q[4], ("x".to_string(), String::new()));
        assert_eq!(percent_decode("a%2Fb+c", false), "a/b+c");
        // A broken escape is kept as it is.
        assert_eq!(percent_decode("100%", true), "100%");
        assert_eq!(percent_decode("%zz", true), "%zz");
    }
}
