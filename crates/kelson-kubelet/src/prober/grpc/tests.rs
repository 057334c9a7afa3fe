use super::*;
use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};
use prost::Message;
use std::convert::Infallible;
use tokio::net::TcpListener;

type Body = StreamBody<futures::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, Infallible>>>>;

/// A hand-written grpc.health.v1 server: service "" is SERVING, "down"
/// NOT_SERVING, "slow" answers after 5 s, anything else NotFound; other
/// methods are Unimplemented.
async fn server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    |req: http::Request<hyper::body::Incoming>| async move {
                        Ok::<_, Infallible>(handle(req).await)
                    },
                );
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    port
}

async fn handle(req: http::Request<hyper::body::Incoming>) -> http::Response<Body> {
    let path = req.uri().path().to_string();
    let body = req.into_body().collect().await.unwrap().to_bytes();
    let trailers = |code: i32, msg: &str| {
        let mut t = http::HeaderMap::new();
        t.insert("grpc-status", code.to_string().parse().unwrap());
        t.insert("grpc-message", msg.parse().unwrap());
        t
    };
    let reply = |frames: Vec<Frame<Bytes>>| {
        http::Response::builder()
            .header("content-type", "application/grpc")
            .body(StreamBody::new(futures::stream::iter(
                frames.into_iter().map(Ok).collect::<Vec<_>>(),
            )))
            .unwrap()
    };
    if path != CHECK_PATH {
        return reply(vec![Frame::trailers(trailers(
            12,
            "unknown service grpc.health.v1.Other",
        ))]);
    }
    let req = HealthCheckRequest::decode(&body[5..]).unwrap();
    let status = match req.service.as_str() {
        "" => 1,
        "down" => 2,
        "slow" => {
            tokio::time::sleep(Duration::from_secs(5)).await;
            1
        }
        _ => return reply(vec![Frame::trailers(trailers(5, "unknown service"))]),
    };
    let msg = HealthCheckResponse { status }.encode_to_vec();
    let mut framed = vec![0u8];
    framed.extend_from_slice(&u32::try_from(msg.len()).unwrap().to_be_bytes());
    framed.extend_from_slice(&msg);
    reply(vec![
        Frame::data(Bytes::from(framed)),
        Frame::trailers(trailers(0, "")),
    ])
}

const T: Duration = Duration::from_secs(1);

#[tokio::test]
async fn serving_is_success_other_statuses_fail() {
    let port = server().await;
    let out = probe("127.0.0.1", port, "", T).await;
    assert_eq!(
        out,
        ProbeOutcome::new(ProbeResult::Success, "service is serving")
    );

    let out = probe("127.0.0.1", port, "down", T).await;
    assert_eq!(
        out,
        ProbeOutcome::new(
            ProbeResult::Failure,
            "service unhealthy (responded with \"NOT_SERVING\")"
        )
    );

    let out = probe("127.0.0.1", port, "nope", T).await;
    assert_eq!(
        out.output,
        "error: health rpc probe failed: rpc error: code = NotFound desc = unknown service"
    );
}

#[tokio::test]
async fn slow_server_times_out() {
    let port = server().await;
    let started = std::time::Instant::now();
    let out = probe("127.0.0.1", port, "slow", T).await;
    assert!(started.elapsed() < Duration::from_millis(1900));
    assert_eq!(out.result, ProbeResult::Failure);
    assert_eq!(out.output, "timeout: health rpc did not complete within 1s");
}

#[tokio::test]
async fn closed_port_fails_after_the_timeout() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    let out = probe("127.0.0.1", port, "", T).await;
    assert_eq!(out.result, ProbeResult::Failure);
    assert_eq!(
        out.output,
        format!(
            "timeout: failed to connect service \"127.0.0.1:{port}\" within 1s: context deadline exceeded"
        )
    );
}

#[test]
fn go_names() {
    assert_eq!(code_name(Code::Cancelled), "Canceled");
    assert_eq!(serving_status_name(3), "SERVICE_UNKNOWN");
    assert_eq!(go_duration(Duration::from_secs(90)), "1m30s");
    assert_eq!(go_duration(Duration::from_secs(3600)), "1h0m0s");
}
