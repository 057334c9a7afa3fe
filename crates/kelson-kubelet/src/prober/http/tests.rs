use super::*;
use k8s_openapi::api::core::v1::{ContainerPort, HTTPHeader};
use std::convert::Infallible;
use tokio::net::TcpListener;

/// A local HTTP/1.1 server; returns its port. Routes by path.
async fn server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let svc =
                    hyper::service::service_fn(move |req: http::Request<Incoming>| async move {
                        Ok::<_, Infallible>(route(req, port).await)
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    port
}

async fn route(
    req: http::Request<Incoming>,
    port: u16,
) -> http::Response<http_body_util::Full<Bytes>> {
    let resp = |code: u16, body: String| {
        http::Response::builder()
            .status(code)
            .body(http_body_util::Full::new(Bytes::from(body)))
            .unwrap()
    };
    let redirect = |to: String| {
        http::Response::builder()
            .status(302)
            .header("location", to)
            .body(http_body_util::Full::new(Bytes::from_static(b"moved")))
            .unwrap()
    };
    match req.uri().path() {
        "/ok" => resp(200, "fine".into()),
        "/fail" => resp(500, "secret details".into()),
        "/redirect-local" => redirect("/ok".into()),
        "/redirect-relative" => redirect("ok".into()),
        "/redirect-away" => redirect(format!("http://localhost:{port}/ok")),
        "/loop" => redirect("/loop".into()),
        "/big" => resp(200, "x".repeat(20_000)),
        "/slow" => {
            tokio::time::sleep(Duration::from_secs(5)).await;
            resp(200, String::new())
        }
        "/headers" => {
            let h = req.headers();
            let get = |n: &str| h.get(n).map(|v| v.to_str().unwrap().to_string());
            resp(
                200,
                format!(
                    "ua={:?} accept={:?} host={:?} custom={:?} query={:?}",
                    get("user-agent"),
                    get("accept"),
                    get("host"),
                    get("x-custom"),
                    req.uri().query()
                ),
            )
        }
        _ => resp(404, String::new()),
    }
}

fn action(port: u16, path: &str) -> HTTPGetAction {
    HTTPGetAction {
        port: IntOrString::Int(i32::from(port)),
        path: Some(path.into()),
        ..Default::default()
    }
}

const T: Duration = Duration::from_secs(1);

#[tokio::test]
async fn status_codes_decide_the_result() {
    let port = server().await;
    let c = Container::default();
    let out = http_get(&action(port, "/ok"), "127.0.0.1", &c, T)
        .await
        .unwrap();
    assert_eq!(out.result, ProbeResult::Success);
    assert_eq!(out.output, "fine");
    assert_eq!(out.status_code, Some(200));

    let out = http_get(&action(port, "/fail"), "127.0.0.1", &c, T)
        .await
        .unwrap();
    assert_eq!(out.result, ProbeResult::Failure);
    // The body stays out of the message.
    assert_eq!(out.output, "HTTP probe failed with statuscode: 500");
    assert_eq!(out.status_code, Some(500));

    let out = http_get(&action(port, "/missing"), "127.0.0.1", &c, T)
        .await
        .unwrap();
    assert_eq!(out.output, "HTTP probe failed with statuscode: 404");
}

#[tokio::test]
async fn redirects_are_followed_on_the_same_host_only() {
    let port = server().await;
    let c = Container::default();
    for path in ["/redirect-local", "/redirect-relative"] {
        let out = http_get(&action(port, path), "127.0.0.1", &c, T)
            .await
            .unwrap();
        assert_eq!(
            (out.result, out.output.as_str()),
            (ProbeResult::Success, "fine"),
            "{path}"
        );
    }
    // Another host name: not followed; the redirect is a warning.
    let out = http_get(&action(port, "/redirect-away"), "127.0.0.1", &c, T)
        .await
        .unwrap();
    assert_eq!(out.result, ProbeResult::Warning);
    assert_eq!(
        out.output,
        "Probe terminated redirects, Response body: moved"
    );
    assert_eq!(out.status_code, Some(302));

    let out = http_get(&action(port, "/loop"), "127.0.0.1", &c, T)
        .await
        .unwrap();
    assert_eq!(out.result, ProbeResult::Failure);
    assert_eq!(out.output, "Get \"/loop\": stopped after 10 redirects");
}

#[tokio::test]
async fn success_body_is_capped_at_10_kib() {
    let port = server().await;
    let out = http_get(&action(port, "/big"), "127.0.0.1", &Container::default(), T)
        .await
        .unwrap();
    assert_eq!(out.result, ProbeResult::Success);
    assert_eq!(out.output.len(), 10 * 1024);
}

#[tokio::test]
async fn default_and_custom_headers() {
    let port = server().await;
    let c = Container::default();
    let out = http_get(&action(port, "/headers?a=b"), "127.0.0.1", &c, T)
        .await
        .unwrap();
    assert_eq!(
        out.output,
        format!(
            "ua=Some(\"kube-probe/1.33\") accept=Some(\"*/*\") host=Some(\"127.0.0.1:{port}\") custom=None query=Some(\"a=b\")"
        )
    );

    let mut a = action(port, "headers");
    a.http_headers = Some(vec![
        HTTPHeader {
            name: "X-Custom".into(),
            value: "v".into(),
        },
        HTTPHeader {
            name: "Host".into(),
            value: "example.test".into(),
        },
        HTTPHeader {
            name: "User-Agent".into(),
            value: "mine".into(),
        },
        HTTPHeader {
            name: "Accept".into(),
            value: "".into(),
        },
    ]);
    let out = http_get(&a, "127.0.0.1", &c, T).await.unwrap();
    assert_eq!(
        out.output,
        "ua=Some(\"mine\") accept=None host=Some(\"example.test\") custom=Some(\"v\") query=None"
    );

    let out = http_get_as(&action(port, "/headers"), "127.0.0.1", &c, T, "lifecycle")
        .await
        .unwrap();
    assert!(
        out.output.starts_with("ua=Some(\"kube-lifecycle/1.33\")"),
        "{}",
        out.output
    );
}

#[tokio::test]
async fn host_field_overrides_the_pod_ip() {
    let port = server().await;
    let mut a = action(port, "/ok");
    a.host = Some("127.0.0.1".into());
    let out = http_get(&a, "192.0.2.1", &Container::default(), T)
        .await
        .unwrap();
    assert_eq!(out.result, ProbeResult::Success);
}

#[tokio::test]
async fn transport_errors_and_timeouts_are_failures() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let closed = l.local_addr().unwrap().port();
    drop(l);
    let out = http_get(
        &action(closed, "/healthz"),
        "127.0.0.1",
        &Container::default(),
        T,
    )
    .await
    .unwrap();
    assert_eq!(out.result, ProbeResult::Failure);
    assert_eq!(out.status_code, None);
    assert_eq!(
        out.output,
        format!(
            "Get \"http://127.0.0.1:{closed}/healthz\": dial tcp 127.0.0.1:{closed}: connect: connection refused"
        )
    );

    let port = server().await;
    let started = std::time::Instant::now();
    let out = http_get(
        &action(port, "/slow"),
        "127.0.0.1",
        &Container::default(),
        T,
    )
    .await
    .unwrap();
    assert!(started.elapsed() < Duration::from_millis(1900));
    assert_eq!(
        out.output,
        format!(
            "Get \"http://127.0.0.1:{port}/slow\": context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
        )
    );
}

#[test]
fn ports_resolve_by_number_name_or_numeric_string() {
    let c = Container {
        ports: Some(vec![ContainerPort {
            name: Some("http".into()),
            container_port: 8080,
            ..Default::default()
        }]),
        ..Default::default()
    };
    let p = |v: IntOrString| resolve_port(&v, &c).map_err(|e| e.to_string());
    assert_eq!(p(IntOrString::Int(80)), Ok(80));
    assert_eq!(p(IntOrString::String("http".into())), Ok(8080));
    assert_eq!(p(IntOrString::String("9090".into())), Ok(9090));
    assert_eq!(
        p(IntOrString::String("metrics".into())),
        Err("strconv.Atoi: parsing \"metrics\": invalid syntax".into())
    );
    assert_eq!(p(IntOrString::Int(0)), Err("invalid port number: 0".into()));
    assert_eq!(
        p(IntOrString::Int(70000)),
        Err("invalid port number: 70000".into())
    );
    assert_eq!(
        p(IntOrString::String("-1".into())),
        Err("invalid port number: -1".into())
    );
}

#[test]
fn urls_are_built_and_redirects_resolved() {
    let t = Target::new("http", "10.0.0.1", 8080, "healthz");
    assert_eq!(t.to_string(), "http://10.0.0.1:8080/healthz");
    let t = Target::new("http", "fd00::1", 80, "/a b");
    assert_eq!(t.to_string(), "http://[fd00::1]:80/a%20b");
    let t = Target::new("http", "h", 80, "/x/y?q=1");
    assert_eq!(t.resolve("z").unwrap().to_string(), "http://h:80/x/z");
    assert_eq!(t.resolve("/z").unwrap().to_string(), "http://h:80/z");
    assert_eq!(
        t.resolve("?r=2").unwrap().to_string(),
        "http://h:80/x/y?r=2"
    );
    let abs = t.resolve("https://other:8443/p").unwrap();
    assert_eq!(
        (abs.host.as_str(), abs.port, abs.scheme.as_str()),
        ("other", 8443, "https")
    );
    let abs = t.resolve("//h/p").unwrap();
    assert_eq!(abs.to_string(), "http://h:80/p");
}
