//! The node's API through the real server over HTTPS: pods/log, pods/exec
//! (SPDY and WebSocket upgrades), pods/portforward and nodes/proxy, proxied
//! to a fake kubelet that serves HTTPS with a certificate from the cluster
//! CA, demands the API server's client certificate and records what it gets.

mod support;

use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use kelson_apiserver::pki::{Pki, ServingNames};
use parking_lot::Mutex;
use serde_json::{json, Value};
use support::{container, split_response, Server, Tls};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One request as the fake kubelet saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    uri: String,
    headers: http::HeaderMap,
    client_cn: String,
}

struct Kubelet {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    /// Lets a following log stream send its second line.
    release: Arc<tokio::sync::Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl Kubelet {
    fn last(&self) -> Seen {
        self.seen
            .lock()
            .last()
            .cloned()
            .expect("the kubelet got a request")
    }
    fn count(&self) -> usize {
        self.seen.lock().len()
    }
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type FakeBody = UnsyncBoxBody<Bytes, Infallible>;

fn text(code: u16, body: &str) -> http::Response<FakeBody> {
    http::Response::builder()
        .status(code)
        .header("content-type", "text/plain")
        .body(Full::new(Bytes::from(body.to_string())).boxed_unsync())
        .unwrap()
}

async fn fake_kubelet(pki: &Pki) -> Kubelet {
    let cert = pki
        .issue_kubelet_serving(
            "node1",
            &ServingNames {
                dns: vec!["localhost".into()],
                ips: vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
            },
        )
        .unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for c in pki.ca.cert_der() {
        roots.add(c).unwrap();
    }
    // Like a kubelet: only clients with a certificate from the cluster CA.
    let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
        .build()
        .unwrap();
    let cfg = rustls::ServerConfig::builder()
        .with_client_cert_verifier(verifier)
        .with_single_cert(cert.cert_der(), cert.key_der().unwrap())
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let release = Arc::new(tokio::sync::Notify::new());
    let (seen2, release2) = (seen.clone(), release.clone());
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let seen = seen2.clone();
            let release = release2.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let cn = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .and_then(|c| {
                        let (_, cert) = x509_parser::parse_x509_certificate(c.as_ref()).ok()?;
                        let cn = cert.subject().iter_common_name().next()?;
                        cn.as_str().ok().map(String::from)
                    })
                    .unwrap_or_default();
                let svc = hyper::service::service_fn(move |req| {
                    let (seen, release, cn) = (seen.clone(), release.clone(), cn.clone());
                    async move { Ok::<_, Infallible>(kubelet(req, seen, release, cn).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), svc)
                    .with_upgrades()
                    .await;
            });
        }
    });
    Kubelet {
        addr,
        seen,
        release,
        task,
    }
}

/// The fake kubelet's answers.
async fn kubelet(
    mut req: http::Request<Incoming>,
    seen: Arc<Mutex<Vec<Seen>>>,
    release: Arc<tokio::sync::Notify>,
    client_cn: String,
) -> http::Response<FakeBody> {
    let uri = req.uri().to_string();
    seen.lock().push(Seen {
        method: req.method().to_string(),
        uri: uri.clone(),
        headers: req.headers().clone(),
        client_cn,
    });
    let path = req.uri().path().to_string();
    if path.starts_with("/containerLogs/") {
        if uri.contains("follow=true") {
            // One line now, the next only when the test says so.
            let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
            tokio::spawn(async move {
                let _ = tx.send(Bytes::from_static(b"line1\n")).await;
                release.notified().await;
                let _ = tx.send(Bytes::from_static(b"line2\n")).await;
            });
            let stream = futures::stream::unfold(rx, |mut rx| async move {
                rx.recv()
                    .await
                    .map(|b| (Ok::<_, Infallible>(Frame::data(b)), rx))
            });
            return http::Response::builder()
                .header("content-type", "text/plain")
                .body(StreamBody::new(stream).boxed_unsync())
                .unwrap();
        }
        return text(200, "hello from the fake kubelet\n");
    }
    if path.starts_with("/exec/")
        || path.starts_with("/attach/")
        || path.starts_with("/portForward/")
    {
        if uri.contains("command=fail") {
            return text(400, "container a is not running");
        }
        let upgrade = req
            .headers()
            .get("upgrade")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let on = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            let Ok(up) = on.await else { return };
            let mut io = TokioIo::new(up);
            let _ = io.write_all(b"hello-from-kubelet\n").await;
            let mut buf = [0u8; 1024];
            loop {
                match io.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    // "bye" ends the session from the kubelet's side.
                    Ok(n) if buf[..n].windows(3).any(|w| w == b"bye") => return,
                    Ok(n) => {
                        if io.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                }
            }
        });
        let mut b = http::Response::builder()
            .status(101)
            .header("connection", "Upgrade")
            .header("upgrade", upgrade.as_str());
        b = if upgrade.eq_ignore_ascii_case("websocket") {
            b.header("sec-websocket-accept", "fake-accept")
                .header("sec-websocket-protocol", "v5.channel.k8s.io")
        } else {
            b.header("x-stream-protocol-version", "v4.channel.k8s.io")
        };
        return b.body(Full::new(Bytes::new()).boxed_unsync()).unwrap();
    }
    if path == "/stats/summary" {
        return http::Response::builder()
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from_static(br#"{"node":{"nodeName":"node1"}}"#)).boxed_unsync())
            .unwrap();
    }
    if path == "/echo" {
        let body = req
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        return text(200, &format!("got {}", String::from_utf8_lossy(&body)));
    }
    text(404, "404 page not found")
}

impl Server {
    /// Sends a request head (and body) on a fresh connection.
    async fn open(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Tls {
        let mut tls = self.connect().await;
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer not-for-kubelets\r\n"
        );
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        if !body.is_empty() {
            req.push_str(&format!(
                "Content-Type: text/plain\r\nContent-Length: {}\r\n",
                body.len()
            ));
        }
        req.push_str("\r\n");
        req.push_str(body);
        tls.write_all(req.as_bytes()).await.unwrap();
        tls
    }
}

/// Reads one response (Content-Length or chunked) without waiting for the
/// connection to close: (status, head, body).
async fn read_one(tls: &mut Tls) -> (u16, String, Vec<u8>) {
    let mut buf = Vec::new();
    read_until(tls, &mut buf, b"\r\n\r\n").await;
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
    if head.contains("transfer-encoding: chunked") {
        read_until(tls, &mut buf, b"0\r\n\r\n").await;
    } else {
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        while buf.len() < end + len {
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout(Duration::from_secs(10), tls.read(&mut chunk))
                .await
                .expect("body in time")
                .unwrap();
            assert!(n > 0, "closed mid-body");
            buf.extend_from_slice(&chunk[..n]);
        }
    }
    split_response(&buf)
}

/// Reads until `needle` has arrived (or fails after a few seconds).
async fn read_until(tls: &mut Tls, buf: &mut Vec<u8>, needle: &[u8]) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !buf.windows(needle.len()).any(|w| w == needle) {
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout_at(deadline, tls.read(&mut chunk))
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "timed out waiting for {:?}; have {:?}",
                    String::from_utf8_lossy(needle),
                    String::from_utf8_lossy(buf)
                )
            })
            .unwrap();
        assert!(n > 0, "closed before {:?}", String::from_utf8_lossy(needle));
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// A Node whose kubelet is the fake, and pods: "solo" (one container, on
/// the node), "web" (containers a and b, init container init, on the node)
/// and "pending" (not scheduled).
async fn cluster() -> (Server, Kubelet) {
    let s = Server::start().await;
    let k = fake_kubelet(&s.running.pki).await;
    let (code, v) = s
        .json(
            "POST",
            "/api/v1/nodes",
            Some(&json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node1"}})),
        )
        .await;
    assert_eq!(code, 201, "{v}");
    let (code, v) = s
        .json(
            "PATCH",
            "/api/v1/nodes/node1/status",
            Some(&json!({"status": {
                "addresses": [
                    {"type": "Hostname", "address": "node1.invalid"},
                    {"type": "InternalIP", "address": "127.0.0.1"},
                ],
                "daemonEndpoints": {"kubeletEndpoint": {"Port": k.addr.port()}},
            }})),
        )
        .await;
    assert_eq!(code, 200, "{v}");
    for (name, containers, init, node) in [
        ("solo", vec![container("a")], vec![], Some("node1")),
        (
            "web",
            vec![container("a"), container("b")],
            vec![container("init")],
            Some("node1"),
        ),
        ("pending", vec![container("a")], vec![], None),
    ] {
        let mut spec = json!({"containers": containers, "initContainers": init});
        if let Some(n) = node {
            spec["nodeName"] = json!(n);
        }
        let (code, v) = s
            .json(
                "POST",
                "/api/v1/namespaces/default/pods",
                Some(&json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec})),
            )
            .await;
        assert_eq!(code, 201, "{v}");
    }
    (s, k)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_are_fetched_from_the_kubelet_with_the_options() {
    let (s, k) = cluster().await;
    let (code, head, body) = s
        .call(
            "GET",
            "/api/v1/namespaces/default/pods/solo/log?tailLines=5&timestamps=true&limitBytes=100&sinceSeconds=60",
            None,
        )
        .await;
    assert_eq!(code, 200, "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain"),
        "{head}"
    );
    assert_eq!(
        String::from_utf8_lossy(&body),
        "hello from the fake kubelet\n"
    );
    let seen = k.last();
    assert_eq!(seen.method, "GET");
    assert_eq!(
        seen.uri,
        "/containerLogs/default/solo/a?limitBytes=100&sinceSeconds=60&tailLines=5&timestamps=true"
    );
    // The API server's own kubelet client certificate, not the caller's.
    assert_eq!(seen.client_cn, "kube-apiserver-kubelet-client");
    assert!(seen.headers.get("authorization").is_none());

    // An init container may be named.
    let (code, _, _) = s
        .call(
            "GET",
            "/api/v1/namespaces/default/pods/web/log?container=init",
            None,
        )
        .await;
    assert_eq!(code, 200);
    assert_eq!(k.last().uri, "/containerLogs/default/web/init");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn following_logs_stream_each_line_as_it_comes() {
    let (s, k) = cluster().await;
    let mut tls = s
        .open(
            "GET",
            "/api/v1/namespaces/default/pods/web/log?container=b&follow=true",
            &[],
            "",
        )
        .await;
    let mut buf = Vec::new();
    // The first line arrives while the kubelet still holds the second back.
    read_until(&mut tls, &mut buf, b"line1\n").await;
    assert!(
        buf.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&buf)
    );
    assert!(!buf.windows(5).any(|w| w == b"line2"));
    assert_eq!(k.last().uri, "/containerLogs/default/web/b?follow=true");
    k.release.notify_one();
    read_until(&mut tls, &mut buf, b"line2\n").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_and_exec_errors_read_as_upstream() {
    let (s, k) = cluster().await;
    let (code, v) = s
        .json("GET", "/api/v1/namespaces/default/pods/web/log", None)
        .await;
    assert_eq!(code, 400, "{v}");
    assert_eq!(v["reason"], "BadRequest");
    assert_eq!(
        v["message"],
        "a container name must be specified for pod web, choose one of: [init a b]"
    );
    let (code, v) = s
        .json(
            "GET",
            "/api/v1/namespaces/default/pods/web/log?container=x",
            None,
        )
        .await;
    assert_eq!(code, 400);
    assert_eq!(v["message"], "container x is not valid for pod web");
    let (code, v) = s
        .json(
            "GET",
            "/api/v1/namespaces/default/pods/solo/log?tailLines=-1",
            None,
        )
        .await;
    assert_eq!(code, 422);
    assert_eq!(
        v["message"],
        "PodLogOptions \"solo\" is invalid: tailLines: Invalid value: -1: must be greater than or equal to 0"
    );
    let (code, v) = s
        .json("GET", "/api/v1/namespaces/default/pods/nope/log", None)
        .await;
    assert_eq!(code, 404);
    assert_eq!(v["message"], "pods \"nope\" not found");
    // An unscheduled pod has no log yet: upstream answers 204.
    let (code, _, body) = s
        .call("GET", "/api/v1/namespaces/default/pods/pending/log", None)
        .await;
    assert_eq!(code, 204);
    assert!(body.is_empty());

    // exec: the same container rules, then the host check.
    let upgrade = [("Connection", "Upgrade"), ("Upgrade", "SPDY/3.1")];
    for (path, want) in [
        (
            "/api/v1/namespaces/default/pods/web/exec?command=sh",
            "a container name must be specified for pod web, choose one of: [init a b]",
        ),
        (
            "/api/v1/namespaces/default/pods/pending/exec?command=sh",
            "pod pending does not have a host assigned",
        ),
        (
            "/api/v1/namespaces/default/pods/pending/portforward?ports=80",
            "pod pending does not have a host assigned",
        ),
    ] {
        let mut tls = s.open("POST", path, &upgrade, "").await;
        let (code, _, body) = read_one(&mut tls).await;
        let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        assert_eq!(code, 400, "{path}: {v}");
        assert_eq!(v["message"], want, "{path}");
    }
    // Without upgrade headers exec is refused before reaching the kubelet.
    let before = k.count();
    let (code, v) = s
        .json(
            "POST",
            "/api/v1/namespaces/default/pods/solo/exec?command=ls",
            None,
        )
        .await;
    assert_eq!(code, 400);
    assert_eq!(v["message"], "Upgrade request required");
    assert_eq!(k.count(), before);
    // pods/log takes GET only.
    let (code, _) = s
        .json("POST", "/api/v1/namespaces/default/pods/solo/log", None)
        .await;
    assert_eq!(code, 405);
}

/// Opens an exec upgrade, checks the relayed 101 and that bytes flow both
/// ways through the API server.
async fn upgraded_exec(s: &Server, headers: &[(&str, &str)]) -> String {
    let mut tls = s
        .open(
            "POST",
            "/api/v1/namespaces/default/pods/web/exec?container=a&command=sh&command=-c&command=echo+hi&stdin=true&stdout=true&tty=false",
            headers,
            "",
        )
        .await;
    let mut buf = Vec::new();
    read_until(&mut tls, &mut buf, b"\r\n\r\n").await;
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let head = String::from_utf8_lossy(&buf[..end]).to_string();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let mut rest = buf[end..].to_vec();
    // Kubelet → client.
    read_until(&mut tls, &mut rest, b"hello-from-kubelet\n").await;
    // Client → kubelet → client.
    tls.write_all(b"ping\x00\x01\xff").await.unwrap();
    read_until(&mut tls, &mut rest, b"ping\x00\x01\xff").await;
    tls.write_all(b"second").await.unwrap();
    read_until(&mut tls, &mut rest, b"second").await;
    // The kubelet ending the stream closes the client's connection.
    tls.write_all(b"bye").await.unwrap();
    let mut tail = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut tail)).await;
    assert!(closed.is_ok(), "the client's connection stayed open");
    assert!(tail.is_empty(), "{tail:?}");
    head
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_upgrades_are_spliced_to_the_kubelet() {
    let (s, k) = cluster().await;
    let head = upgraded_exec(
        &s,
        &[
            ("Connection", "Upgrade"),
            ("Upgrade", "SPDY/3.1"),
            ("X-Stream-Protocol-Version", "v4.channel.k8s.io"),
            ("X-Stream-Protocol-Version", "v3.channel.k8s.io"),
        ],
    )
    .await;
    assert!(
        head.to_ascii_lowercase()
            .contains("x-stream-protocol-version: v4.channel.k8s.io"),
        "{head}"
    );
    let seen = k.last();
    assert_eq!(
        seen.uri,
        "/exec/default/web/a?command=sh&command=-c&command=echo+hi&input=1&output=1"
    );
    assert_eq!(seen.headers.get("upgrade").unwrap(), "SPDY/3.1");
    let versions: Vec<_> = seen
        .headers
        .get_all("x-stream-protocol-version")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    assert_eq!(versions, ["v4.channel.k8s.io", "v3.channel.k8s.io"]);
    assert_eq!(seen.client_cn, "kube-apiserver-kubelet-client");
    assert!(seen.headers.get("authorization").is_none());

    let head = upgraded_exec(
        &s,
        &[
            ("Connection", "Upgrade"),
            ("Upgrade", "websocket"),
            ("Sec-WebSocket-Version", "13"),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
            (
                "Sec-WebSocket-Protocol",
                "v5.channel.k8s.io, v4.channel.k8s.io",
            ),
        ],
    )
    .await;
    let lower = head.to_ascii_lowercase();
    assert!(lower.contains("upgrade: websocket"), "{head}");
    assert!(
        lower.contains("sec-websocket-protocol: v5.channel.k8s.io"),
        "{head}"
    );
    let seen = k.last();
    assert_eq!(
        seen.headers.get("sec-websocket-key").unwrap(),
        "dGhlIHNhbXBsZSBub25jZQ=="
    );
    assert_eq!(
        seen.headers.get("sec-websocket-protocol").unwrap(),
        "v5.channel.k8s.io, v4.channel.k8s.io"
    );

    // attach and portforward reach their kubelet paths.
    let spdy = [("Connection", "Upgrade"), ("Upgrade", "SPDY/3.1")];
    let mut tls = s
        .open(
            "GET",
            "/api/v1/namespaces/default/pods/solo/attach?stdout=1&stderr=1",
            &spdy,
            "",
        )
        .await;
    let mut buf = Vec::new();
    read_until(&mut tls, &mut buf, b"hello-from-kubelet\n").await;
    assert!(buf.starts_with(b"HTTP/1.1 101"));
    assert_eq!(k.last().uri, "/attach/default/solo/a?error=1&output=1");
    let mut tls = s
        .open(
            "POST",
            "/api/v1/namespaces/default/pods/web/portforward?ports=8080&ports=9090",
            &spdy,
            "",
        )
        .await;
    let mut buf = Vec::new();
    read_until(&mut tls, &mut buf, b"hello-from-kubelet\n").await;
    assert_eq!(k.last().uri, "/portForward/default/web?port=8080%2C9090");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubelet_refusals_of_an_upgrade_pass_through() {
    let (s, _k) = cluster().await;
    let mut tls = s
        .open(
            "POST",
            "/api/v1/namespaces/default/pods/solo/exec?command=fail&stdout=true",
            &[("Connection", "Upgrade"), ("Upgrade", "SPDY/3.1")],
            "",
        )
        .await;
    let (code, head, body) = read_one(&mut tls).await;
    assert_eq!(code, 400, "{head}");
    assert_eq!(String::from_utf8_lossy(&body), "container a is not running");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_proxy_reaches_the_kubelet() {
    let (s, k) = cluster().await;
    let (code, v) = s
        .json(
            "GET",
            "/api/v1/nodes/node1/proxy/stats/summary?only_cpu_and_memory=true",
            None,
        )
        .await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v, json!({"node": {"nodeName": "node1"}}));
    let seen = k.last();
    assert_eq!(seen.uri, "/stats/summary?only_cpu_and_memory=true");
    assert_eq!(seen.client_cn, "kube-apiserver-kubelet-client");
    assert!(seen.headers.get("authorization").is_none());

    // Other methods and bodies go through; the kubelet's own port may be named.
    let port = k.addr.port();
    let mut tls = s
        .open(
            "POST",
            &format!("/api/v1/nodes/node1:{port}/proxy/echo"),
            &[("Connection", "close")],
            "payload",
        )
        .await;
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut raw)).await;
    let (code, _, body) = split_response(&raw);
    assert_eq!(code, 200);
    assert_eq!(String::from_utf8_lossy(&body), "got payload");
    assert_eq!(k.last().method, "POST");

    // A kubelet 404 is the client's 404.
    let (code, _, body) = s
        .call("GET", "/api/v1/nodes/node1/proxy/nothing", None)
        .await;
    assert_eq!(code, 404);
    assert_eq!(String::from_utf8_lossy(&body), "404 page not found");

    // Another port on a loopback address is refused, as upstream.
    let (code, v) = s.json("GET", "/api/v1/nodes/node1:1/proxy/", None).await;
    assert_eq!(code, 400, "{v}");
    assert_eq!(v["message"], "address not allowed");
    let (code, v) = s.json("GET", "/api/v1/nodes/nope/proxy/", None).await;
    assert_eq!(code, 404);
    assert_eq!(v["message"], "nodes \"nope\" not found");

    // Discovery declares the subresources with upstream's verbs.
    let (_, list) = s.json("GET", "/api/v1", None).await;
    let find = |n: &str| {
        list["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == n)
            .cloned()
            .unwrap_or(Value::Null)
    };
    assert_eq!(
        find("nodes/proxy")["verbs"],
        json!(["create", "delete", "get", "patch", "update"])
    );
    assert_eq!(find("pods/exec")["verbs"], json!(["create", "get"]));
    assert_eq!(find("pods/log")["verbs"], json!(["get"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_logs_and_raw_node_proxy_print_what_the_kubelet_returns() {
    let kubectl = std::path::Path::new("/usr/bin/kubectl");
    if !kubectl.exists() {
        eprintln!("kubectl not installed; skipping");
        return;
    }
    let (s, k) = cluster().await;
    let kubeconfig = s.dir.path().join("kubeconfig.yaml");
    let run = |args: Vec<String>| {
        let kubeconfig = kubeconfig.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                std::process::Command::new("/usr/bin/kubectl")
                    .arg("--kubeconfig")
                    .arg(&kubeconfig)
                    .args(&args)
                    .output()
                    .unwrap()
            })
            .await
            .unwrap()
        }
    };
    let out = run(vec!["logs".into(), "solo".into(), "--tail=3".into()]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "hello from the fake kubelet\n"
    );
    assert_eq!(k.last().uri, "/containerLogs/default/solo/a?tailLines=3");

    let out = run(vec![
        "logs".into(),
        "web".into(),
        "-c".into(),
        "nope".into(),
    ])
    .await;
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("container nope is not valid for pod web"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = run(vec![
        "get".into(),
        "--raw".into(),
        "/api/v1/nodes/node1/proxy/stats/summary".into(),
    ])
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        r#"{"node":{"nodeName":"node1"}}"#
    );
}
