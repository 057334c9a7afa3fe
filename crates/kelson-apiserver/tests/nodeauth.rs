//! Nodes over HTTPS: joining with the node token (GET /kelson.dev/v1/cacerts,
//! POST /kelson.dev/v1/join), then the Node authorizer and NodeRestriction
//! as the joined node's certificate meets them.

mod support;

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::{json, Value};
use support::{container, split_response, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One request on a fresh connection with `tls`; the body read as JSON
/// (`Value::String` when it is not JSON).
async fn request(
    s: &Server,
    tls: Arc<rustls::ClientConfig>,
    method: &str,
    path: &str,
    extra: &str,
    body: Option<&Value>,
) -> (u16, Value) {
    let payload = body.map(|b| b.to_string()).unwrap_or_default();
    let ctype = if method == "PATCH" {
        "application/merge-patch+json"
    } else {
        "application/json"
    };
    let tcp = tokio::net::TcpStream::connect(s.running.addr)
        .await
        .unwrap();
    let name = ServerName::IpAddress(Ipv4Addr::LOCALHOST.into());
    let mut conn = tokio_rustls::TlsConnector::from(tls)
        .connect(name, tcp)
        .await
        .unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: application/json\r\n{extra}\
         Content-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{payload}",
        payload.len()
    );
    conn.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), conn.read_to_end(&mut raw)).await;
    let (code, _, body) = split_response(&raw);
    let v = serde_json::from_slice(&body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into()));
    (code, v)
}

/// TLS trusting `ca_pem`, with a client certificate when given.
fn tls(ca_pem: &str, client: Option<(&str, &str)>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder().with_root_certificates(roots);
    let mut cfg = match client {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                CertificateDer::pem_slice_iter(cert.as_bytes())
                    .map(|c| c.unwrap())
                    .collect(),
                PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(cfg)
}

/// Joins as `node` and returns TLS acting as that node.
async fn join(s: &Server, node: &str) -> Arc<rustls::ClientConfig> {
    let ca = s.running.pki.ca.cert_pem.clone();
    let auth = format!("Authorization: Bearer {}\r\n", s.running.node_token);
    let (code, v) = request(
        s,
        tls(&ca, None),
        "POST",
        "/kelson.dev/v1/join",
        &auth,
        Some(&json!({"nodeName": node, "nodePassword": format!("pw-{node}"), "addresses": ["127.0.0.1"]})),
    )
    .await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["caCert"], ca.as_str());
    tls(
        &ca,
        Some((
            v["clientCert"].as_str().unwrap(),
            v["clientKey"].as_str().unwrap(),
        )),
    )
}

fn node(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}})
}

fn pod_on(name: &str, node: &str, secret: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {"nodeName": node, "containers": [container("c")],
            "volumes": [{"name": "s", "secret": {"secretName": secret}}]}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cacerts_anonymous_and_join_needs_the_token() {
    let s = Server::start().await;
    let ca = s.running.pki.ca.cert_pem.clone();
    let anon = tls(&ca, None);
    let (code, v) = request(&s, anon.clone(), "GET", "/kelson.dev/v1/cacerts", "", None).await;
    assert_eq!(code, 200);
    assert_eq!(v, Value::String(ca.clone()));
    // The token written beside tls/ is the one served.
    let file = std::fs::read_to_string(s.dir.path().join("node-token")).unwrap();
    assert_eq!(file.trim(), s.running.node_token);

    let body = json!({"nodeName": "n1", "nodePassword": "pw-n1"});
    let (code, v) = request(
        &s,
        anon.clone(),
        "POST",
        "/kelson.dev/v1/join",
        "",
        Some(&body),
    )
    .await;
    assert_eq!(
        (code, v["reason"].as_str()),
        (401, Some("Unauthorized")),
        "{v}"
    );
    let wrong = "Authorization: Bearer K10abc::server:nope\r\n";
    let (code, _) = request(
        &s,
        anon.clone(),
        "POST",
        "/kelson.dev/v1/join",
        wrong,
        Some(&body),
    )
    .await;
    assert_eq!(code, 401);

    let secret = s.running.node_token.rsplit(':').next().unwrap().to_string();
    let auth = format!("Authorization: Bearer {secret}\r\n");
    let bad = json!({"nodeName": "Not_A_Name"});
    let (code, v) = request(
        &s,
        anon.clone(),
        "POST",
        "/kelson.dev/v1/join",
        &auth,
        Some(&bad),
    )
    .await;
    assert_eq!(code, 422, "{v}");
    assert_eq!(v["reason"], "Invalid");
    assert_eq!(v["details"]["causes"][0]["field"], "nodeName");
    let (code, v) = request(&s, anon, "POST", "/kelson.dev/v1/join", &auth, Some(&body)).await;
    assert_eq!(code, 200, "{v}");
    s.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joined_node_is_limited_to_itself() {
    let s = Server::start().await;
    let a = join(&s, "node-a").await;
    let call = |m: &'static str, p: String, b: Option<Value>| {
        let a = a.clone();
        let s = &s;
        async move { request(s, a, m, &p, "", b.as_ref()).await }
    };

    // Its own Node: create, status, Lease.
    let (code, v) = call("POST", "/api/v1/nodes".into(), Some(node("node-a"))).await;
    assert_eq!(code, 201, "{v}");
    let ready = json!({"status": {"conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}]}});
    let (code, v) = call(
        "PATCH",
        "/api/v1/nodes/node-a/status".into(),
        Some(ready.clone()),
    )
    .await;
    assert_eq!(code, 200, "{v}");
    let lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "node-a"}, "spec": {"holderIdentity": "node-a"}});
    let (code, v) = call(
        "POST",
        "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases".into(),
        Some(lease),
    )
    .await;
    assert_eq!(code, 201, "{v}");

    // Another node.
    let (code, v) = s.json("POST", "/api/v1/nodes", Some(&node("node-b"))).await;
    assert_eq!(code, 201, "{v}");
    let (code, v) = call("PATCH", "/api/v1/nodes/node-b/status".into(), Some(ready)).await;
    assert_eq!(code, 403, "{v}");
    assert_eq!(
        v["message"],
        "nodes \"node-b\" is forbidden: node \"node-a\" is not allowed to modify node \"node-b\""
    );
    assert_eq!(v["details"]["kind"], "nodes");
    let (code, _) = call("POST", "/api/v1/nodes".into(), Some(node("node-c"))).await;
    assert_eq!(code, 403);

    // Secrets: only those its pods use.
    for name in ["used", "unused", "b-secret"] {
        let sec = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "stringData": {"k": "v"}});
        let (code, v) = s
            .json("POST", "/api/v1/namespaces/default/secrets", Some(&sec))
            .await;
        assert_eq!(code, 201, "{v}");
    }
    for (name, on, secret) in [("mine", "node-a", "used"), ("theirs", "node-b", "b-secret")] {
        let (code, v) = s
            .json(
                "POST",
                "/api/v1/namespaces/default/pods",
                Some(&pod_on(name, on, secret)),
            )
            .await;
        assert_eq!(code, 201, "{v}");
    }
    // The caches see the pods a moment after the writes.
    let mut code = 0;
    for _ in 0..100 {
        (code, _) = call(
            "GET",
            "/api/v1/namespaces/default/secrets/used".into(),
            None,
        )
        .await;
        if code == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(code, 200);
    let (code, v) = call(
        "GET",
        "/api/v1/namespaces/default/secrets/unused".into(),
        None,
    )
    .await;
    assert_eq!(code, 403);
    assert_eq!(
        v["message"],
        "secrets \"unused\" is forbidden: User \"system:node:node-a\" cannot get resource \"secrets\" in API group \"\" in the namespace \"default\": no relationship found between node 'node-a' and this object"
    );
    let (code, _) = call(
        "GET",
        "/api/v1/namespaces/default/secrets/b-secret".into(),
        None,
    )
    .await;
    assert_eq!(code, 403);
    let (code, v) = call("GET", "/api/v1/namespaces/default/secrets".into(), None).await;
    assert_eq!(code, 403, "{v}");
    assert_eq!(v["message"], "secrets is forbidden: User \"system:node:node-a\" cannot list resource \"secrets\" in API group \"\" in the namespace \"default\": No Object name found");

    // Pods: status and delete of its own only; no plain pods.
    let st = json!({"status": {"phase": "Running"}});
    let (code, v) = call(
        "PATCH",
        "/api/v1/namespaces/default/pods/mine/status".into(),
        Some(st.clone()),
    )
    .await;
    assert_eq!(code, 200, "{v}");
    let (code, v) = call(
        "PATCH",
        "/api/v1/namespaces/default/pods/theirs/status".into(),
        Some(st),
    )
    .await;
    assert_eq!(code, 403);
    assert_eq!(
        v["message"],
        "pods \"theirs\" is forbidden: node \"node-a\" can only update pod status for pods with spec.nodeName set to itself"
    );
    let (code, _) = call(
        "DELETE",
        "/api/v1/namespaces/default/pods/theirs".into(),
        None,
    )
    .await;
    assert_eq!(code, 403);
    let (code, v) = call(
        "DELETE",
        "/api/v1/namespaces/default/pods/mine".into(),
        None,
    )
    .await;
    assert_eq!(code, 200, "{v}");
    let (code, v) = call(
        "POST",
        "/api/v1/namespaces/default/pods".into(),
        Some(
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "sneaky"},
            "spec": {"nodeName": "node-a", "containers": [container("c")]}}),
        ),
    )
    .await;
    assert_eq!(code, 403);
    assert_eq!(
        v["message"],
        "pods \"sneaky\" is forbidden: pod does not have \"kubernetes.io/config.mirror\" annotation, node \"node-a\" can only create mirror pods"
    );
    let (code, v) = call(
        "PATCH",
        "/api/v1/namespaces/default/pods/theirs".into(),
        Some(json!({})),
    )
    .await;
    assert_eq!(code, 403);
    assert_eq!(
        v["message"],
        "pods \"theirs\" is forbidden: User \"system:node:node-a\" cannot patch resource \"pods\" in API group \"\" in the namespace \"default\""
    );
    // The admin is not a node: unaffected.
    let (code, _) = s
        .json("GET", "/api/v1/namespaces/default/secrets", None)
        .await;
    assert_eq!(code, 200);
    s.running.stop().await;
}
