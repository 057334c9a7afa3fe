//! The kubelet server against a real containerd (needs root, containerd,
//! runc and busybox-static; skipped otherwise): a host-network pod with a
//! busybox container, the server on 127.0.0.1 with test certificates, then
//! logs (tail, follow), exec over WebSocket v5 with stdin closed, exec over
//! SPDY/3.1 spliced to the runtime, and port-forward tunneled in WebSocket.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::Pod;
use kelson_cri::api::{
    ContainerConfig, ContainerMetadata, CreateContainerRequest, ImageSpec, ImageStatusRequest,
    LinuxContainerConfig, LinuxContainerSecurityContext, LinuxPodSandboxConfig,
    LinuxSandboxSecurityContext, NamespaceMode, NamespaceOption, PodSandboxConfig,
    PodSandboxMetadata, RemoveContainerRequest, RemovePodSandboxRequest, RunPodSandboxRequest,
    StartContainerRequest, StopContainerRequest, StopPodSandboxRequest,
};
use kelson_cri::{image, import, pause, Containerd, ContainerdOptions, Cri, PAUSE_IMAGE};
use kelson_kubelet::server::spdy::{self, Frame, FrameReader, FrameWriter, FLAG_FIN};
use kelson_kubelet::server::{self, ContainerLocation, PodProvider, ServerConfig};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    SanType,
};
use rustls_pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

const BUSYBOX: &str = "kelson.dev/server-e2e-busybox:1";

type TestResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

fn can_run() -> bool {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root");
        return false;
    }
    let has = |b: &str| {
        std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).any(|d| d.join(b).exists()))
            .unwrap_or(false)
    };
    if !(has("containerd") && has("runc")) {
        eprintln!("skipped: needs containerd and runc");
        return false;
    }
    true
}

#[derive(Default, Clone)]
struct Recorded {
    sandboxes: Vec<String>,
    containers: Vec<String>,
}

/// Everything the test creates, torn down on drop (also after a failed
/// assertion).
struct Guard {
    rt: tokio::runtime::Runtime,
    dir: Option<tempfile::TempDir>,
    containerd: Option<Containerd>,
    socket: PathBuf,
    recorded: Arc<Mutex<Recorded>>,
    /// `k8s.io` cgroup parents and /run/containerd that existed before:
    /// only what the test created is removed.
    preexisting: Vec<PathBuf>,
}

/// The CRI's cgroup parents (every v1 hierarchy, or the v2 root).
fn cgroup_parents() -> Vec<PathBuf> {
    let mut out = vec![PathBuf::from("/sys/fs/cgroup/k8s.io")];
    if let Ok(d) = std::fs::read_dir("/sys/fs/cgroup") {
        out.extend(
            d.flatten()
                .map(|e| e.path())
                .filter(|p| p.is_dir() && !p.is_symlink())
                .map(|p| p.join("k8s.io")),
        );
    }
    out
}

fn existing_paths() -> Vec<PathBuf> {
    cgroup_parents()
        .into_iter()
        .chain([PathBuf::from("/run/containerd")])
        .filter(|p| p.exists())
        .collect()
}

/// Removes empty directories under and including `dir`, bottom-up.
fn remove_empty_dirs(dir: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    let mut empty = true;
    for e in entries.flatten() {
        let is_dir = e.file_type().map(|t| t.is_dir()).unwrap_or(false);
        if !(is_dir && remove_empty_dirs(&e.path())) {
            empty = false;
        }
    }
    empty && std::fs::remove_dir(dir).is_ok()
}

impl Guard {
    fn ids(&self) -> Vec<String> {
        let r = self.recorded.lock().map(|r| r.clone()).unwrap_or_default();
        r.sandboxes.into_iter().chain(r.containers).collect()
    }

    fn dir(&self) -> PathBuf {
        self.dir
            .as_ref()
            .map(|d| d.path().to_path_buf())
            .unwrap_or_default()
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let r = self.recorded.lock().map(|r| r.clone()).unwrap_or_default();
        let socket = self.socket.clone();
        if self.containerd.is_some() {
            self.rt.block_on(async move {
                let _ = tokio::time::timeout(Duration::from_secs(60), async move {
                    let Ok(mut cri) = Cri::connect(&socket).await else {
                        return;
                    };
                    for id in r.containers.iter().rev() {
                        let _ = cri
                            .runtime()
                            .stop_container(StopContainerRequest {
                                container_id: id.clone(),
                                timeout: 1,
                            })
                            .await;
                        let _ = cri
                            .runtime()
                            .remove_container(RemoveContainerRequest {
                                container_id: id.clone(),
                            })
                            .await;
                    }
                    for id in r.sandboxes.iter().rev() {
                        let _ = cri
                            .runtime()
                            .stop_pod_sandbox(StopPodSandboxRequest {
                                pod_sandbox_id: id.clone(),
                            })
                            .await;
                        let _ = cri
                            .runtime()
                            .remove_pod_sandbox(RemovePodSandboxRequest {
                                pod_sandbox_id: id.clone(),
                            })
                            .await;
                    }
                })
                .await;
            });
        }
        if let Some(mut c) = self.containerd.take() {
            let _ = self.rt.block_on(c.stop());
        }
        let ids = self.ids();
        let dir = self.dir();
        // Stragglers: shims of our ids or anything started from our dir.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let ours = our_processes(&ids, &dir);
            if ours.is_empty() {
                break;
            }
            if Instant::now() > deadline {
                for pid in ours {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
                std::thread::sleep(Duration::from_millis(500));
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        // Mounts under the temp dir, deepest first.
        let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut mounts: Vec<PathBuf> = info
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .map(PathBuf::from)
            .filter(|m| !dir.as_os_str().is_empty() && m.starts_with(&dir))
            .collect();
        mounts.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
        for m in mounts {
            let _ = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH);
        }
        // The CRI's /k8s.io/<id> cgroups in every hierarchy, then the
        // parents the test created (rmdir fails if others use them).
        for parent in cgroup_parents() {
            for id in &ids {
                let _ = std::fs::remove_dir(parent.join(id));
            }
            if !self.preexisting.contains(&parent) {
                let _ = std::fs::remove_dir(&parent);
            }
        }
        for id in &ids {
            let _ = std::fs::remove_dir_all(Path::new("/run/containerd/runc/k8s.io").join(id));
        }
        let run = PathBuf::from("/run/containerd");
        if !self.preexisting.contains(&run) {
            remove_empty_dirs(&run);
        }
        if let Some(d) = self.dir.take() {
            let _ = d.close();
        }
    }
}

fn our_processes(ids: &[String], dir: &Path) -> Vec<i32> {
    let me = std::process::id() as i32;
    let dir = dir.to_string_lossy().into_owned();
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(raw) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let argv: Vec<String> = raw
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let shim = argv.first().is_some_and(|a| a.contains("containerd-shim"))
            && argv.iter().any(|a| ids.contains(a));
        let from_dir = !dir.is_empty() && argv.iter().any(|a| a.contains(&dir));
        let zombie = std::fs::read_to_string(e.path().join("stat"))
            .map(|s| s.rsplit_once(") ").is_some_and(|(_, r)| r.starts_with('Z')))
            .unwrap_or(true);
        if pid != me && (shim || from_dir) && !zombie {
            out.push(pid);
        }
    }
    out
}

fn namespaces() -> NamespaceOption {
    NamespaceOption {
        network: NamespaceMode::Node as i32,
        pid: NamespaceMode::Pod as i32,
        ipc: NamespaceMode::Pod as i32,
        ..Default::default()
    }
}

struct Provider {
    pod: Pod,
    loc: ContainerLocation,
}

impl PodProvider for Provider {
    fn pods(&self) -> Vec<Pod> {
        vec![self.pod.clone()]
    }
    fn pod(&self, ns: &str, name: &str) -> Option<Pod> {
        (ns == "default" && name == "web").then(|| self.pod.clone())
    }
    fn container(
        &self,
        _ns: &str,
        pod: &str,
        container: &str,
        previous: bool,
    ) -> Result<ContainerLocation, String> {
        if previous {
            return Err(format!(
                "previous terminated container {container:?} in pod {pod:?} not found"
            ));
        }
        Ok(self.loc.clone())
    }
}

struct Certs {
    ca: String,
    server_cert: String,
    server_key: String,
    client_cert: String,
    client_key: String,
}

fn certs() -> TestResult<Certs> {
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::default();
    ca.distinguished_name.push(DnType::CommonName, "test-ca");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, &ca_key);
    let server_key = KeyPair::generate()?;
    let mut sp = CertificateParams::default();
    sp.distinguished_name
        .push(DnType::CommonName, "system:node:test");
    sp.subject_alt_names = vec![SanType::IpAddress("127.0.0.1".parse()?)];
    sp.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server_cert = sp.signed_by(&server_key, &issuer)?;
    let client_key = KeyPair::generate()?;
    let mut cp = CertificateParams::default();
    cp.distinguished_name
        .push(DnType::CommonName, "kube-apiserver-kubelet-client");
    cp.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let client_cert = cp.signed_by(&client_key, &issuer)?;
    Ok(Certs {
        ca: ca_cert.pem(),
        server_cert: server_cert.pem(),
        server_key: server_key.serialize_pem(),
        client_cert: client_cert.pem(),
        client_key: client_key.serialize_pem(),
    })
}

fn client_tls(c: &Certs, with_cert: bool) -> TestResult<Arc<rustls::ClientConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(c.ca.as_bytes()) {
        roots.add(cert?)?;
    }
    let b = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let mut cfg = if with_cert {
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(c.client_cert.as_bytes()).collect::<Result<_, _>>()?;
        b.with_client_auth_cert(
            chain,
            PrivateKeyDer::from_pem_slice(c.client_key.as_bytes())?,
        )?
    } else {
        b.with_no_client_auth()
    };
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

type Tls = tokio_rustls::client::TlsStream<TcpStream>;

async fn connect(addr: SocketAddr, tls: &Arc<rustls::ClientConfig>) -> TestResult<Tls> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::IpAddress(addr.ip().into());
    Ok(tokio_rustls::TlsConnector::from(tls.clone())
        .connect(name, tcp)
        .await?)
}

/// One HTTP request; the response with its body streaming.
async fn request(
    addr: SocketAddr,
    tls: &Arc<rustls::ClientConfig>,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> TestResult<http::Response<hyper::body::Incoming>> {
    let io = connect(addr, tls).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    let mut b = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string());
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    Ok(sender.send_request(b.body(Empty::<Bytes>::new())?).await?)
}

async fn get(
    addr: SocketAddr,
    tls: &Arc<rustls::ClientConfig>,
    path: &str,
) -> TestResult<(u16, String)> {
    let resp = request(addr, tls, "GET", path, &[]).await?;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

fn query_escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn exec_path(cmd: &[&str], streams: &str) -> String {
    let mut q: Vec<String> = cmd
        .iter()
        .map(|c| format!("command={}", query_escape(c)))
        .collect();
    q.push(streams.to_string());
    format!("/exec/default/web/app?{}", q.join("&"))
}

/// Exec over WebSocket v5: sends `stdin` then closes it; returns stdout,
/// stderr and the error channel.
async fn ws_exec(
    addr: SocketAddr,
    tls: &Arc<rustls::ClientConfig>,
    cmd: &[&str],
    stdin: Option<&[u8]>,
) -> TestResult<(Vec<u8>, Vec<u8>, String)> {
    let streams = if stdin.is_some() {
        "input=1&output=1&error=1"
    } else {
        "output=1&error=1"
    };
    let url = format!("wss://{addr}{}", exec_path(cmd, streams));
    let mut req = url.as_str().into_client_request()?;
    req.headers_mut().insert(
        "sec-websocket-protocol",
        http::HeaderValue::from_static("v5.channel.k8s.io, v4.channel.k8s.io"),
    );
    let io = connect(addr, tls).await?;
    let (mut ws, resp) = tokio_tungstenite::client_async(req, io).await?;
    assert_eq!(
        resp.headers()
            .get("sec-websocket-protocol")
            .and_then(|v| v.to_str().ok()),
        Some("v5.channel.k8s.io")
    );
    if let Some(data) = stdin {
        let mut m = vec![0u8];
        m.extend_from_slice(data);
        ws.send(Message::Binary(m.into())).await?;
        // v5's close signal for stdin.
        ws.send(Message::Binary(Bytes::from_static(&[255, 0])))
            .await?;
    }
    let (mut out, mut err, mut status) = (Vec::new(), Vec::new(), Vec::new());
    while let Some(m) = tokio::time::timeout(Duration::from_secs(30), ws.next()).await? {
        match m? {
            Message::Binary(b) if !b.is_empty() => match b[0] {
                1 => out.extend_from_slice(&b[1..]),
                2 => err.extend_from_slice(&b[1..]),
                3 => status.extend_from_slice(&b[1..]),
                c => panic!("unexpected channel {c}"),
            },
            Message::Close(_) => break,
            _ => {}
        }
    }
    Ok((out, err, String::from_utf8_lossy(&status).into_owned()))
}

/// Exec over SPDY/3.1, the way kubectl < 1.30 does it: stdout, stderr
/// and the error stream.
async fn spdy_exec(
    addr: SocketAddr,
    tls: &Arc<rustls::ClientConfig>,
    cmd: &[&str],
) -> TestResult<(Vec<u8>, Vec<u8>, String)> {
    let mut resp = request(
        addr,
        tls,
        "POST",
        &exec_path(cmd, "output=1&error=1"),
        &[
            ("connection", "Upgrade"),
            ("upgrade", "SPDY/3.1"),
            ("x-stream-protocol-version", "v4.channel.k8s.io"),
        ],
    )
    .await?;
    assert_eq!(resp.status(), http::StatusCode::SWITCHING_PROTOCOLS);
    assert_eq!(
        resp.headers()
            .get("x-stream-protocol-version")
            .and_then(|v| v.to_str().ok()),
        Some("v4.channel.k8s.io")
    );
    let io = TokioIo::new(hyper::upgrade::on(&mut resp).await?);
    let (rd, wr) = tokio::io::split(io);
    let mut w = FrameWriter::new(wr)?;
    let mut r = FrameReader::new(rd);
    let mut ids = HashMap::new();
    for (i, t) in ["error", "stdout", "stderr"].iter().enumerate() {
        let id = 2 * i as u32 + 1;
        w.send(&Frame::SynStream {
            stream_id: id,
            associated_to: 0,
            priority: 0,
            flags: 0,
            headers: vec![("streamtype".into(), t.to_string())],
        })
        .await?;
        ids.insert(id, *t);
    }
    let mut got: HashMap<&str, Vec<u8>> = HashMap::new();
    let mut replies = 0;
    let mut finished = 0;
    loop {
        let f = tokio::time::timeout(Duration::from_secs(30), r.next()).await??;
        match f {
            None | Some(Frame::GoAway { .. }) => break,
            Some(Frame::SynReply { .. }) => replies += 1,
            Some(Frame::Data {
                stream_id,
                flags,
                data,
            }) => {
                if let Some(t) = ids.get(&stream_id) {
                    got.entry(t).or_default().extend_from_slice(&data);
                }
                if flags & FLAG_FIN != 0 {
                    finished += 1;
                    if finished == ids.len() {
                        break;
                    }
                }
            }
            Some(Frame::Ping(id)) => w.send(&Frame::Ping(id)).await?,
            Some(_) => {}
        }
    }
    assert_eq!(replies, 3, "the runtime accepts every stream");
    Ok((
        got.remove("stdout").unwrap_or_default(),
        got.remove("stderr").unwrap_or_default(),
        String::from_utf8_lossy(&got.remove("error").unwrap_or_default()).into_owned(),
    ))
}

/// Port-forward tunneled in WebSocket, as kubectl >= 1.31: a SPDY client
/// inside binary messages; one request to `port`, whose answer is
/// returned.
async fn tunneled_port_forward(
    addr: SocketAddr,
    tls: &Arc<rustls::ClientConfig>,
    port: u16,
    send: &[u8],
) -> TestResult<Vec<u8>> {
    let url = format!("wss://{addr}/portForward/default/web");
    let mut req = url.as_str().into_client_request()?;
    req.headers_mut().insert(
        "sec-websocket-protocol",
        http::HeaderValue::from_static("SPDY/3.1+portforward.k8s.io"),
    );
    let io = connect(addr, tls).await?;
    let (ws, _) = tokio_tungstenite::client_async(req, io).await?;
    let (mut tx, mut rx) = ws.split();
    let mut enc = spdy::Encoder::new()?;
    let mut dec = spdy::Decoder::new();
    let mut wire = Vec::new();
    let headers = |t: &str| {
        vec![
            ("streamtype".to_string(), t.to_string()),
            ("port".to_string(), port.to_string()),
            ("requestid".to_string(), "0".to_string()),
        ]
    };
    for (id, t) in [(1u32, "error"), (3, "data")] {
        enc.encode(
            &Frame::SynStream {
                stream_id: id,
                associated_to: 0,
                priority: 0,
                flags: 0,
                headers: headers(t),
            },
            &mut wire,
        )?;
    }
    enc.encode(
        &Frame::Data {
            stream_id: 3,
            flags: 0,
            data: Bytes::copy_from_slice(send),
        },
        &mut wire,
    )?;
    tx.send(Message::Binary(wire.into())).await?;
    let mut buf = bytes::BytesMut::new();
    let mut answer = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    'outer: while Instant::now() < deadline {
        let Some(m) = tokio::time::timeout(Duration::from_secs(30), rx.next()).await? else {
            break;
        };
        match m? {
            Message::Binary(b) => buf.extend_from_slice(&b),
            Message::Close(_) => break,
            _ => continue,
        }
        while let Some(f) = dec.decode(&mut buf)? {
            match f {
                Frame::Data {
                    stream_id: 3,
                    flags,
                    data,
                } => {
                    answer.extend_from_slice(&data);
                    if flags & FLAG_FIN != 0 {
                        break 'outer;
                    }
                }
                Frame::Data {
                    stream_id: 1, data, ..
                } if !data.is_empty() => {
                    return Err(
                        format!("port-forward error: {}", String::from_utf8_lossy(&data)).into(),
                    )
                }
                _ => {}
            }
        }
    }
    Ok(answer)
}

/// Port-forward over a channelled WebSocket (`v4.channel.k8s.io`,
/// `?port=`): each channel first says its port; channel 0 carries the data.
async fn ws_port_forward(
    addr: SocketAddr,
    tls: &Arc<rustls::ClientConfig>,
    port: u16,
    send: &[u8],
) -> TestResult<(Vec<(u8, Vec<u8>)>, Vec<u8>)> {
    let url = format!("wss://{addr}/portForward/default/web?port={port}");
    let mut req = url.as_str().into_client_request()?;
    req.headers_mut().insert(
        "sec-websocket-protocol",
        http::HeaderValue::from_static("v4.channel.k8s.io"),
    );
    let io = connect(addr, tls).await?;
    let (mut ws, _) = tokio_tungstenite::client_async(req, io).await?;
    let mut first = Vec::new();
    while first.len() < 2 {
        match tokio::time::timeout(Duration::from_secs(30), ws.next()).await? {
            Some(Ok(Message::Binary(b))) if !b.is_empty() => first.push((b[0], b[1..].to_vec())),
            Some(Ok(_)) => {}
            other => return Err(format!("port-forward ended early: {other:?}").into()),
        }
    }
    let mut m = vec![0u8];
    m.extend_from_slice(send);
    ws.send(Message::Binary(m.into())).await?;
    let mut answer = Vec::new();
    while let Some(m) = tokio::time::timeout(Duration::from_secs(30), ws.next()).await? {
        match m? {
            Message::Binary(b) if b.first() == Some(&0) => answer.extend_from_slice(&b[1..]),
            Message::Binary(b) if b.len() > 1 => {
                return Err(
                    format!("port-forward error: {}", String::from_utf8_lossy(&b[1..])).into(),
                )
            }
            Message::Close(_) => break,
            _ => {}
        }
    }
    Ok((first, answer))
}

/// Appends the next chunk of a streamed body.
async fn next_chunk(body: &mut hyper::body::Incoming, followed: &mut Vec<u8>) -> TestResult<()> {
    let f = tokio::time::timeout(Duration::from_secs(20), body.frame())
        .await?
        .ok_or("log stream ended")??;
    if let Ok(d) = f.into_data() {
        followed.extend_from_slice(&d);
    }
    Ok(())
}

async fn image_known(cri: &mut Cri, image: &str) -> TestResult<bool> {
    Ok(cri
        .images()
        .image_status(ImageStatusRequest {
            image: Some(ImageSpec {
                image: image.to_string(),
                ..Default::default()
            }),
            verbose: false,
        })
        .await?
        .into_inner()
        .image
        .is_some())
}

/// Starts the pod: a container that logs three lines, serves HTTP on
/// 127.0.0.1:`port` with busybox httpd, waits for /tmp/go, logs a fourth.
async fn run_pod(
    dir: &Path,
    socket: &Path,
    recorded: &Mutex<Recorded>,
    uid: &str,
    port: u16,
) -> TestResult<(String, PathBuf)> {
    let images = dir.join("images");
    std::fs::create_dir_all(&images)?;
    std::fs::write(images.join("pause.tar"), pause::image_tarball()?)?;
    std::fs::write(images.join("busybox.tar"), image::busybox_image(BUSYBOX)?)?;
    import::import_all(socket, &images).await?;
    let mut cri = Cri::connect(socket).await?;
    for name in [PAUSE_IMAGE, BUSYBOX] {
        let deadline = Instant::now() + Duration::from_secs(15);
        while !image_known(&mut cri, name).await? {
            assert!(Instant::now() < deadline, "{name} never visible to the CRI");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let logs = dir.join("logs");
    std::fs::create_dir_all(logs.join("app"))?;
    let sandbox_config = PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: "web".into(),
            uid: uid.into(),
            namespace: "default".into(),
            attempt: 0,
        }),
        labels: [("io.kubernetes.pod.uid".to_string(), uid.to_string())]
            .into_iter()
            .collect(),
        log_directory: logs.to_string_lossy().into_owned(),
        linux: Some(LinuxPodSandboxConfig {
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(namespaces()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let sandbox = cri
        .runtime()
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(sandbox_config.clone()),
            runtime_handler: String::new(),
        })
        .await?
        .into_inner()
        .pod_sandbox_id;
    if let Ok(mut r) = recorded.lock() {
        r.sandboxes.push(sandbox.clone());
    }
    let script = format!(
        "echo one; echo two; echo three; \
         mkdir -p /tmp/www; echo forwarded > /tmp/www/index.html; httpd -f -p 127.0.0.1:{port} -h /tmp/www & \
         while [ ! -f /tmp/go ]; do sleep 0.1; done; echo four; exec sleep 3600"
    );
    let container = cri
        .runtime()
        .create_container(CreateContainerRequest {
            pod_sandbox_id: sandbox.clone(),
            config: Some(ContainerConfig {
                metadata: Some(ContainerMetadata {
                    name: "app".into(),
                    attempt: 0,
                }),
                image: Some(ImageSpec {
                    image: BUSYBOX.into(),
                    ..Default::default()
                }),
                // The labels the kubelet puts on containers (stats find
                // their pod by them).
                labels: [
                    ("io.kubernetes.pod.uid", uid),
                    ("io.kubernetes.pod.name", "web"),
                    ("io.kubernetes.pod.namespace", "default"),
                    ("io.kubernetes.container.name", "app"),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
                command: vec!["sh".into(), "-c".into(), script],
                log_path: "app/0.log".into(),
                linux: Some(LinuxContainerConfig {
                    security_context: Some(LinuxContainerSecurityContext {
                        namespace_options: Some(namespaces()),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            sandbox_config: Some(sandbox_config),
        })
        .await?
        .into_inner()
        .container_id;
    if let Ok(mut r) = recorded.lock() {
        r.containers.push(container.clone());
    }
    cri.runtime()
        .start_container(StartContainerRequest {
            container_id: container.clone(),
        })
        .await?;
    Ok((container, logs.join("app").join("0.log")))
}

async fn scenario(dir: PathBuf, socket: PathBuf, recorded: Arc<Mutex<Recorded>>) -> TestResult<()> {
    let uid = format!("kelson-server-e2e-{}", std::process::id());
    let free_port = || -> TestResult<u16> {
        Ok(std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port())
    };
    let app_port = free_port()?;
    let (container, log_path) = run_pod(&dir, &socket, &recorded, &uid, app_port).await?;
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "web", "namespace": "default", "uid": uid},
        "spec": {"containers": [{"name": "app", "image": BUSYBOX}]},
    }))?;
    let provider = Arc::new(Provider {
        pod,
        loc: ContainerLocation {
            id: container,
            log_path: log_path.clone(),
            running: true,
        },
    });
    let c = certs()?;
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
    let cancel = CancellationToken::new();
    let cri = Cri::connect(&socket).await?;
    let server = tokio::spawn(server::serve(
        ServerConfig {
            addr,
            cert_pem: c.server_cert.clone(),
            key_pem: c.server_key.clone(),
            client_ca_pem: c.ca.clone(),
            node_name: "test".into(),
        },
        cri,
        provider,
        cancel.clone(),
    ));
    let tls = client_tls(&c, true)?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match get(addr, &tls, "/healthz").await {
            Ok((200, body)) => {
                assert_eq!(body, "ok");
                break;
            }
            other => {
                assert!(
                    Instant::now() < deadline,
                    "server never answered: {other:?}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }

    // Without a client certificate nothing is served.
    let anonymous = client_tls(&c, false)?;
    assert!(get(addr, &anonymous, "/healthz").await.is_err());

    // /pods and /stats/summary.
    let (code, body) = get(addr, &tls, "/pods").await?;
    assert_eq!(code, 200);
    let list: serde_json::Value = serde_json::from_str(&body)?;
    assert_eq!(list["kind"], "PodList");
    assert_eq!(list["items"][0]["metadata"]["name"], "web");
    let (code, body) = get(addr, &tls, "/stats/summary").await?;
    assert_eq!(code, 200, "{body}");
    let summary: serde_json::Value = serde_json::from_str(&body)?;
    assert_eq!(summary["node"]["nodeName"], "test");
    assert!(summary["node"]["memory"]["workingSetBytes"]
        .as_u64()
        .is_some());
    assert_eq!(summary["pods"][0]["podRef"]["uid"], uid.as_str());
    let (code, body) = get(addr, &tls, "/metrics/resource").await?;
    assert_eq!(code, 200);
    assert!(body.contains("\nnode_memory_working_set_bytes "), "{body}");
    assert!(body.contains("container_cpu_usage_seconds_total{container=\"app\",namespace=\"default\",pod=\"web\"}"), "{body}");

    // --- logs ---
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::fs::read_to_string(&log_path)
        .map(|l| l.lines().count() < 3)
        .unwrap_or(true)
    {
        assert!(Instant::now() < deadline, "the container never logged");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        get(addr, &tls, "/containerLogs/default/web/app").await?,
        (200, "one\ntwo\nthree\n".to_string())
    );
    assert_eq!(
        get(addr, &tls, "/containerLogs/default/web/app?tailLines=2").await?,
        (200, "two\nthree\n".to_string())
    );
    let (code, body) = get(
        addr,
        &tls,
        "/containerLogs/default/web/app?timestamps=true&limitBytes=35",
    )
    .await?;
    assert_eq!(code, 200);
    assert!(body.ends_with("Z one\n") && body.len() == 35, "{body:?}");
    assert_eq!(
        get(addr, &tls, "/containerLogs/default/web/app?previous=true").await?,
        (
            400,
            "previous terminated container \"app\" in pod \"web\" not found".to_string()
        )
    );
    assert_eq!(
        get(addr, &tls, "/containerLogs/default/web/nope").await?,
        (
            404,
            "container \"nope\" not found in pod \"web\"".to_string()
        )
    );
    assert_eq!(
        get(addr, &tls, "/containerLogs/default/web/app?tailLines=-1")
            .await?
            .0,
        422
    );

    // follow: the last line now, the next one when the container writes
    // it (after an exec over WebSocket releases it).
    let resp = request(
        addr,
        &tls,
        "GET",
        "/containerLogs/default/web/app?follow=true&tailLines=1",
        &[],
    )
    .await?;
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let mut followed = Vec::new();
    while followed != b"three\n" {
        next_chunk(&mut body, &mut followed).await?;
        assert!(b"three\n".starts_with(&followed), "{followed:?}");
    }
    let (out, err, status) = ws_exec(addr, &tls, &["touch", "/tmp/go"], None).await?;
    assert!(out.is_empty() && err.is_empty(), "{out:?} {err:?}");
    assert!(status.contains("\"status\":\"Success\""), "{status}");
    while followed != b"three\nfour\n" {
        next_chunk(&mut body, &mut followed).await?;
    }
    drop(body);

    // --- exec over WebSocket v5, stdin closed by the close signal ---
    let (out, _, status) = ws_exec(addr, &tls, &["cat"], Some(b"hello through v5\n")).await?;
    assert_eq!(String::from_utf8_lossy(&out), "hello through v5\n");
    assert!(status.contains("\"status\":\"Success\""), "{status}");
    let (out, err, status) = ws_exec(
        addr,
        &tls,
        &["sh", "-c", "echo out; echo err >&2; exit 3"],
        None,
    )
    .await?;
    assert_eq!(
        (out.as_slice(), err.as_slice()),
        (&b"out\n"[..], &b"err\n"[..])
    );
    assert!(status.contains("NonZeroExitCode"), "{status}");
    assert!(status.contains("\"message\":\"3\""), "{status}");

    // --- exec over SPDY, spliced to the runtime ---
    let (out, err, status) = spdy_exec(
        addr,
        &tls,
        &["sh", "-c", "echo spdy out; echo spdy err >&2; exit 2"],
    )
    .await?;
    assert_eq!(String::from_utf8_lossy(&out), "spdy out\n");
    assert_eq!(String::from_utf8_lossy(&err), "spdy err\n");
    assert!(
        status.contains("NonZeroExitCode") && status.contains("\"message\":\"2\""),
        "{status}"
    );

    // Errors before any upgrade.
    let (code, body) = get(addr, &tls, "/exec/default/web/app?command=true").await?;
    assert_eq!(
        (code, body.as_str()),
        (400, "you must specify at least 1 of stdin, stdout, stderr")
    );
    let (code, _) = get(addr, &tls, "/exec/default/nosuch/app?command=true&output=1").await?;
    assert_eq!(code, 404);

    // --- port-forward tunneled in WebSocket ---
    let answer = tunneled_port_forward(addr, &tls, app_port, b"GET / HTTP/1.0\r\n\r\n").await?;
    assert!(
        String::from_utf8_lossy(&answer).ends_with("\r\n\r\nforwarded\n"),
        "{:?}",
        String::from_utf8_lossy(&answer)
    );

    // --- port-forward over channels ---
    let (first, answer) = ws_port_forward(addr, &tls, app_port, b"GET / HTTP/1.0\r\n\r\n").await?;
    let mut first = first;
    first.sort();
    let le = app_port.to_le_bytes().to_vec();
    assert_eq!(first, vec![(0, le.clone()), (1, le)]);
    assert!(
        String::from_utf8_lossy(&answer).ends_with("\r\n\r\nforwarded\n"),
        "{:?}",
        String::from_utf8_lossy(&answer)
    );

    cancel.cancel();
    server.await??;
    Ok(())
}

#[test]
fn logs_exec_and_port_forward_against_containerd() {
    if !can_run() {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::Builder::new()
        .prefix("kksrv")
        .tempdir_in("/tmp")
        .expect("tempdir");
    let mut guard = Guard {
        rt,
        dir: Some(dir),
        containerd: None,
        socket: PathBuf::new(),
        recorded: Arc::default(),
        preexisting: existing_paths(),
    };
    let containerd = guard
        .rt
        .block_on(Containerd::start(ContainerdOptions::new(guard.dir())))
        .expect("containerd starts");
    guard.socket = containerd.socket().to_path_buf();
    guard.containerd = Some(containerd);
    let result = guard.rt.block_on(scenario(
        guard.dir(),
        guard.socket.clone(),
        guard.recorded.clone(),
    ));
    result.expect("scenario");
    let dir = guard.dir();
    drop(guard);
    assert!(!dir.exists(), "temp dir left: {}", dir.display());
}
