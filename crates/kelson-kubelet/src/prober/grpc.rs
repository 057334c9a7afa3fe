//! gRPC probes (upstream `pkg/probe/grpc`): `grpc.health.v1.Health/Check`
//! over plaintext HTTP/2; SERVING is success.

use std::marker::PhantomData;
use std::time::Duration;

use kelson_apimachinery::labels::go_quote;
use tokio::time::Instant;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

use super::tcp::join_host_port;
use super::{go_duration, ProbeOutcome, ProbeResult};

const CHECK_PATH: &str = "/grpc.health.v1.Health/Check";
const USER_AGENT: &str = "kube-probe/1.33";

/// grpc.health.v1.HealthCheckRequest.
#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct HealthCheckRequest {
    #[prost(string, tag = "1")]
    pub service: String,
}

/// grpc.health.v1.HealthCheckResponse (the status enum as its number).
#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct HealthCheckResponse {
    #[prost(int32, tag = "1")]
    pub status: i32,
}

/// HealthCheckResponse.ServingStatus names.
fn serving_status_name(n: i32) -> String {
    match n {
        0 => "UNKNOWN".into(),
        1 => "SERVING".into(),
        2 => "NOT_SERVING".into(),
        3 => "SERVICE_UNKNOWN".into(),
        other => other.to_string(),
    }
}

pub(super) async fn probe(host: &str, port: u16, service: &str, timeout: Duration) -> ProbeOutcome {
    let addr = join_host_port(host, port);
    let deadline = Instant::now() + timeout;
    let fail = |msg: String| ProbeOutcome::new(ProbeResult::Failure, msg);
    let channel = match connect(&addr, deadline).await {
        Ok(c) => c,
        Err(None) => {
            return fail(format!(
                "timeout: failed to connect service {} within {}: context deadline exceeded",
                go_quote(&addr),
                go_duration(timeout)
            ))
        }
        Err(Some(e)) => {
            return fail(format!(
                "error: failed to connect service at {}: {e}",
                go_quote(&addr)
            ))
        }
    };
    let mut client = tonic::client::Grpc::new(channel);
    let call = async {
        client
            .ready()
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let mut req = tonic::Request::new(HealthCheckRequest {
            service: service.to_string(),
        });
        req.set_timeout(deadline.saturating_duration_since(Instant::now()));
        client
            .unary(
                req,
                http::uri::PathAndQuery::from_static(CHECK_PATH),
                ProstCodec::<HealthCheckRequest, HealthCheckResponse>::default(),
            )
            .await
    };
    let resp = match tokio::time::timeout_at(deadline, call).await {
        Ok(Ok(r)) => r.into_inner(),
        Ok(Err(s)) if s.code() == Code::Unimplemented => {
            return fail(format!(
                "error: this server does not implement the grpc health protocol (grpc.health.v1.Health): {}",
                s.message()
            ))
        }
        Err(_) => {
            return fail(format!(
                "timeout: health rpc did not complete within {}",
                go_duration(timeout)
            ))
        }
        // However the client noticed it (tonic cancels at the deadline it
        // sent as grpc-timeout), a call that ran out of time is a timeout.
        Ok(Err(s)) if s.code() == Code::DeadlineExceeded || Instant::now() >= deadline => {
            return fail(format!(
                "timeout: health rpc did not complete within {}",
                go_duration(timeout)
            ))
        }
        Ok(Err(s)) => {
            return fail(format!(
                "error: health rpc probe failed: rpc error: code = {} desc = {}",
                code_name(s.code()),
                s.message()
            ))
        }
    };
    if resp.status != 1 {
        return fail(format!(
            "service unhealthy (responded with {})",
            go_quote(&serving_status_name(resp.status))
        ));
    }
    ProbeOutcome::new(ProbeResult::Success, "service is serving")
}

/// Connects before `deadline`, retrying refused connections with back-off
/// as grpc-go's blocking dial does. `Err(None)` is the deadline.
async fn connect(addr: &str, deadline: Instant) -> Result<Channel, Option<String>> {
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .and_then(|e| e.user_agent(USER_AGENT))
        .map_err(|e| Some(e.to_string()))?;
    let mut backoff = Duration::from_secs(1);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(None);
        }
        let attempt = endpoint.clone().connect_timeout(left);
        match tokio::time::timeout_at(deadline, attempt.connect()).await {
            Ok(Ok(c)) => return Ok(c),
            Ok(Err(_)) => {}
            Err(_) => return Err(None),
        }
        let wait = backoff.min(deadline.saturating_duration_since(Instant::now()));
        tokio::time::sleep(wait).await;
        backoff = backoff.mul_f64(1.6).min(Duration::from_secs(120));
    }
}

/// Go's codes.Code names.
pub(crate) fn code_name(c: Code) -> &'static str {
    match c {
        Code::Ok => "OK",
        Code::Cancelled => "Canceled",
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "InvalidArgument",
        Code::DeadlineExceeded => "DeadlineExceeded",
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "PermissionDenied",
        Code::ResourceExhausted => "ResourceExhausted",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Aborted",
        Code::OutOfRange => "OutOfRange",
        Code::Unimplemented => "Unimplemented",
        Code::Internal => "Internal",
        Code::Unavailable => "Unavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthenticated",
    }
}

/// A prost codec for tonic (the crate has no tonic-prost).
struct ProstCodec<E, D>(PhantomData<fn(E) -> D>);

impl<E, D> Default for ProstCodec<E, D> {
    fn default() -> Self {
        ProstCodec(PhantomData)
    }
}

struct ProstEncoder<E>(PhantomData<fn(E)>);
struct ProstDecoder<D>(PhantomData<fn() -> D>);

impl<E, D> Codec for ProstCodec<E, D>
where
    E: prost::Message + Send + 'static,
    D: prost::Message + Default + Send + 'static,
{
    type Encode = E;
    type Decode = D;
    type Encoder = ProstEncoder<E>;
    type Decoder = ProstDecoder<D>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder(PhantomData)
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstDecoder(PhantomData)
    }
}

impl<E: prost::Message> Encoder for ProstEncoder<E> {
    type Item = E;
    type Error = Status;

    fn encode(&mut self, item: E, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(dst)
            .map_err(|e| Status::internal(e.to_string()))
    }
}

impl<D: prost::Message + Default> Decoder for ProstDecoder<D> {
    type Item = D;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<D>, Status> {
        D::decode(src)
            .map(Some)
            .map_err(|e| Status::internal(e.to_string()))
    }
}

#[cfg(test)]
mod tests;
