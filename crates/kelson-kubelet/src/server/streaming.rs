//! Exec, attach and port-forward: the runtime's streaming server (asked for
//! through CRI Exec / Attach / PortForward) does the work; this module
//! bridges the client to it.
//!
//! * SPDY/3.1 clients: the upgrade is re-issued to the runtime's URL and the
//!   two connections are spliced byte for byte (upstream's proxyStream).
//! * WebSocket exec/attach (`v5.channel.k8s.io`, `v4.channel.k8s.io`): the
//!   WebSocket is terminated here and translated to SPDY streams towards
//!   the runtime, as upstream's stream translator does.
//! * WebSocket port-forward tunneling (`SPDY/3.1+portforward.k8s.io`): the
//!   binary messages carry the client's SPDY connection; their payloads are
//!   spliced with a SPDY upgrade to the runtime.
//! * WebSocket port-forward with channels (`v4.channel.k8s.io`, `?port=`):
//!   a data and an error channel a port, translated to SPDY streams.

use std::collections::{HashMap, HashSet};

use bytes::{Bytes, BytesMut};
use futures::{SinkExt, StreamExt};
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::spdy::{Frame, FrameReader, FrameWriter, Headers, SpdyError, FLAG_FIN};

/// The remote command protocol spoken to the runtime.
pub const STREAM_PROTOCOL_V4: &str = "v4.channel.k8s.io";
/// The WebSocket remote command protocol with the stream-close signal.
pub const WS_PROTOCOL_V5: &str = "v5.channel.k8s.io";
/// Port-forward's SPDY protocol.
pub const PORT_FORWARD_PROTOCOL: &str = "portforward.k8s.io";
/// kubectl's SPDY-over-WebSocket port-forward subprotocol.
pub const PORT_FORWARD_TUNNEL_PROTOCOL: &str = "SPDY/3.1+portforward.k8s.io";
/// The v5 message that closes a channel: `[255, channel]`.
const CLOSE_SIGNAL: u8 = 255;

/// WebSocket channels of the remote command protocols.
pub const CH_STDIN: u8 = 0;
pub const CH_STDOUT: u8 = 1;
pub const CH_STDERR: u8 = 2;
pub const CH_ERROR: u8 = 3;
pub const CH_RESIZE: u8 = 4;

#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("invalid streaming URL {0:?}")]
    Url(String),
    #[error("dial {addr}: {source}")]
    Dial {
        addr: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Http(#[from] hyper::Error),
    #[error("building the request: {0}")]
    Request(#[from] http::Error),
    #[error(transparent)]
    Spdy(#[from] SpdyError),
    #[error("websocket: {0}")]
    WebSocket(#[from] tokio_tungstenite::tungstenite::Error),
}

/// Which streams an exec or attach carries (remotecommand's Options).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamFlags {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

impl StreamFlags {
    /// Reads `input`, `output`, `error` and `tty` (value "1", as the API
    /// server sends them; "true" is taken too). A TTY has no separate
    /// stderr. At least one stream is required.
    pub fn from_query(params: &[(String, String)]) -> Result<StreamFlags, String> {
        let on = |k: &str| {
            params
                .iter()
                .any(|(n, v)| n == k && (v == "1" || v.eq_ignore_ascii_case("true")))
        };
        let mut f = StreamFlags {
            stdin: on("input"),
            stdout: on("output"),
            stderr: on("error"),
            tty: on("tty"),
        };
        if f.tty && f.stderr {
            f.stderr = false;
        }
        if !(f.stdin || f.stdout || f.stderr) {
            return Err("you must specify at least 1 of stdin, stdout, stderr".into());
        }
        Ok(f)
    }
}

/// One SPDY stream behind one WebSocket channel.
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelSpec {
    pub channel: u8,
    pub headers: Headers,
    /// Client → runtime.
    pub inbound: bool,
    /// Runtime → client.
    pub outbound: bool,
}

fn stream_type(t: &str) -> Headers {
    vec![("streamtype".into(), t.into())]
}

/// The streams of a remote command, in upstream client's creation order
/// (error first), with their WebSocket channels.
pub fn exec_channels(f: StreamFlags) -> Vec<ChannelSpec> {
    let mut v = vec![ChannelSpec {
        channel: CH_ERROR,
        headers: stream_type("error"),
        inbound: false,
        outbound: true,
    }];
    if f.stdin {
        v.push(ChannelSpec {
            channel: CH_STDIN,
            headers: stream_type("stdin"),
            inbound: true,
            outbound: false,
        });
    }
    if f.stdout {
        v.push(ChannelSpec {
            channel: CH_STDOUT,
            headers: stream_type("stdout"),
            inbound: false,
            outbound: true,
        });
    }
    if f.stderr && !f.tty {
        v.push(ChannelSpec {
            channel: CH_STDERR,
            headers: stream_type("stderr"),
            inbound: false,
            outbound: true,
        });
    }
    if f.tty {
        v.push(ChannelSpec {
            channel: CH_RESIZE,
            headers: stream_type("resize"),
            inbound: true,
            outbound: false,
        });
    }
    v
}

/// The streams of a channel port-forward: for the i-th port, channel 2i is
/// its data and 2i+1 its errors (upstream's websocket port-forward).
pub fn port_forward_channels(ports: &[u16]) -> Vec<ChannelSpec> {
    let mut v = Vec::new();
    for (i, p) in ports.iter().enumerate() {
        let headers = |t: &str| -> Headers {
            vec![
                ("streamtype".into(), t.into()),
                ("port".into(), p.to_string()),
                ("requestid".into(), i.to_string()),
            ]
        };
        // Error stream first: the runtime pairs them by request id.
        v.push(ChannelSpec {
            channel: (2 * i + 1) as u8,
            headers: headers("error"),
            inbound: false,
            outbound: true,
        });
        v.push(ChannelSpec {
            channel: (2 * i) as u8,
            headers: headers("data"),
            inbound: true,
            outbound: true,
        });
    }
    v
}

/// Whether the request asks to switch protocols.
pub fn is_upgrade(h: &HeaderMap) -> bool {
    h.contains_key(header::UPGRADE)
        && h.get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

pub fn is_websocket(h: &HeaderMap) -> bool {
    is_upgrade(h)
        && h.get(header::UPGRADE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// The client's WebSocket subprotocols in preference order.
pub fn ws_protocols(h: &HeaderMap) -> Vec<String> {
    h.get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect()
}

/// The first of the client's subprotocols the server supports.
pub fn negotiate(client: &[String], supported: &[&str]) -> Option<String> {
    client
        .iter()
        .find(|p| supported.contains(&p.as_str()))
        .cloned()
}

/// Connects to the runtime's streaming URL (plain HTTP on loopback) and
/// sends one request; the response comes back with its body streaming and
/// its upgrade pending.
pub async fn dial(
    url: &str,
    method: Method,
    headers: HeaderMap,
) -> Result<Response<Incoming>, StreamError> {
    let uri: http::Uri = url.parse().map_err(|_| StreamError::Url(url.into()))?;
    if uri.scheme_str() != Some("http") {
        return Err(StreamError::Url(url.into()));
    }
    let host = uri
        .host()
        .ok_or_else(|| StreamError::Url(url.into()))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = uri.port_u16().unwrap_or(80);
    let addr = format!("{host}:{port}");
    let tcp = TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|source| StreamError::Dial {
            addr: addr.clone(),
            source,
        })?;
    let _ = tcp.set_nodelay(true);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "streaming server connection ended");
        }
    });
    let path = uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .body(Empty::<Bytes>::new())?;
    *req.headers_mut() = headers;
    if let Ok(h) = HeaderValue::from_str(uri.authority().map(|a| a.as_str()).unwrap_or(&addr)) {
        req.headers_mut().insert(header::HOST, h);
    }
    Ok(sender.send_request(req).await?)
}

/// A SPDY upgrade to the runtime offering `protocols`: the upgraded
/// connection, or the runtime's refusal (status and body).
pub async fn spdy_upgrade(
    url: &str,
    protocols: &[&str],
) -> Result<Result<Upgraded, (StatusCode, Bytes)>, StreamError> {
    let mut h = HeaderMap::new();
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("SPDY/3.1"));
    for p in protocols {
        if let Ok(v) = HeaderValue::from_str(p) {
            h.append("x-stream-protocol-version", v);
        }
    }
    let mut resp = dial(url, Method::POST, h).await?;
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        let status = resp.status();
        let body = read_limited(resp.into_body()).await;
        return Ok(Err((status, body)));
    }
    Ok(Ok(hyper::upgrade::on(&mut resp).await?))
}

/// At most 64 KiB of an error body.
pub async fn read_limited(mut body: Incoming) -> Bytes {
    let mut buf = BytesMut::new();
    while buf.len() < 64 * 1024 {
        match body.frame().await {
            Some(Ok(f)) => {
                if let Ok(d) = f.into_data() {
                    buf.extend_from_slice(&d);
                }
            }
            _ => break,
        }
    }
    buf.freeze()
}

/// The 101 answer accepting a WebSocket with `protocol`; None when the
/// request lacks a key.
pub fn websocket_accept(h: &HeaderMap, protocol: Option<&str>) -> Option<HeaderMap> {
    let key = h.get(header::SEC_WEBSOCKET_KEY)?;
    let mut out = HeaderMap::new();
    out.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    out.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    out.insert(
        header::SEC_WEBSOCKET_ACCEPT,
        HeaderValue::from_str(&derive_accept_key(key.as_bytes())).ok()?,
    );
    if let Some(p) = protocol {
        out.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_str(p).ok()?,
        );
    }
    Some(out)
}

/// A WebSocket over an upgraded server connection.
pub async fn server_websocket<S>(io: S) -> WebSocketStream<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    WebSocketStream::from_raw_socket(io, Role::Server, None).await
}

/// Headers a SPDY pass-through forwards to the runtime: the client's,
/// without its credentials and framing.
pub fn passthrough_headers(from: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    for (k, v) in from {
        if matches!(
            k.as_str(),
            "host" | "authorization" | "content-length" | "transfer-encoding"
        ) {
            continue;
        }
        out.append(k.clone(), v.clone());
    }
    out
}

/// Copies both ways until either side ends, then closes both.
pub async fn splice<A, B>(a: A, b: B)
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let (mut ar, mut aw) = tokio::io::split(a);
    let (mut br, mut bw) = tokio::io::split(b);
    tokio::select! {
        r = tokio::io::copy(&mut ar, &mut bw) => {
            if let Err(e) = r { tracing::debug!(error = %e, "client to runtime copy ended"); }
        }
        r = tokio::io::copy(&mut br, &mut aw) => {
            if let Err(e) = r { tracing::debug!(error = %e, "runtime to client copy ended"); }
        }
    }
    let _ = aw.shutdown().await;
    let _ = bw.shutdown().await;
}

/// Port-forward tunneling: WebSocket binary payloads are the client's SPDY
/// bytes, passed unchanged to and from the runtime's connection.
pub async fn tunnel<S, T>(ws: WebSocketStream<S>, runtime: T)
where
    S: AsyncRead + AsyncWrite + Unpin,
    T: AsyncRead + AsyncWrite + Unpin,
{
    let (mut ws_tx, mut ws_rx) = ws.split();
    let (mut rr, mut rw) = tokio::io::split(runtime);
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        tokio::select! {
            msg = ws_rx.next() => match msg {
                Some(Ok(Message::Binary(b))) => {
                    if rw.write_all(&b).await.is_err() || rw.flush().await.is_err() {
                        break;
                    }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            },
            n = rr.read(&mut buf) => match n {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if ws_tx.send(Message::Binary(Bytes::copy_from_slice(&buf[..n]))).await.is_err() {
                        break;
                    }
                }
            },
        }
    }
    let _ = ws_tx
        .send(Message::Close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        })))
        .await;
    let _ = rw.shutdown().await;
}

/// How a translation behaves.
#[derive(Debug, Clone, Default)]
pub struct TranslateOptions {
    /// v5: `[255, channel]` closes the channel's stream towards the runtime.
    pub close_signal: bool,
    /// Messages sent to the client first (port-forward announces each
    /// channel's port).
    pub initial: Vec<(u8, Vec<u8>)>,
}

/// Bridges a channelled WebSocket client to SPDY streams on the runtime's
/// upgraded connection (`runtime`), one stream per channel. Ends when the
/// client goes, when the runtime closes the connection, or when every
/// runtime → client stream has finished.
pub async fn translate<S, T>(
    ws: WebSocketStream<S>,
    runtime: T,
    specs: Vec<ChannelSpec>,
    opts: TranslateOptions,
) -> Result<(), StreamError>
where
    S: AsyncRead + AsyncWrite + Unpin,
    T: AsyncRead + AsyncWrite + Send + 'static,
{
    let (rd, wr) = tokio::io::split(runtime);
    let mut writer = FrameWriter::new(wr)?;
    // Client-initiated streams have odd ids.
    let mut by_channel: HashMap<u8, u32> = HashMap::new();
    let mut by_stream: HashMap<u32, (u8, bool)> = HashMap::new();
    let mut inbound: HashSet<u8> = HashSet::new();
    let mut open_outputs: HashSet<u32> = HashSet::new();
    for (i, spec) in specs.iter().enumerate() {
        let id = 2 * i as u32 + 1;
        writer
            .send(&Frame::SynStream {
                stream_id: id,
                associated_to: 0,
                priority: 0,
                flags: 0,
                headers: spec.headers.clone(),
            })
            .await?;
        by_channel.insert(spec.channel, id);
        by_stream.insert(id, (spec.channel, spec.outbound));
        if spec.inbound {
            inbound.insert(spec.channel);
        }
        if spec.outbound {
            open_outputs.insert(id);
        }
    }
    let (frames_tx, mut frames) = mpsc::channel::<Result<Frame, SpdyError>>(32);
    let reader = tokio::spawn(async move {
        let mut r = FrameReader::new(rd);
        loop {
            let f = r.next().await;
            let end = !matches!(f, Ok(Some(_)));
            let item = match f {
                Ok(Some(f)) => Ok(f),
                Ok(None) => break,
                Err(e) => Err(e),
            };
            if frames_tx.send(item).await.is_err() || end {
                break;
            }
        }
    });
    let (mut ws_tx, mut ws_rx) = ws.split();
    let mut result = Ok(());
    for (ch, data) in &opts.initial {
        let mut m = Vec::with_capacity(data.len() + 1);
        m.push(*ch);
        m.extend_from_slice(data);
        ws_tx.send(Message::Binary(m.into())).await?;
    }
    loop {
        tokio::select! {
            msg = ws_rx.next() => match msg {
                Some(Ok(Message::Binary(b))) => {
                    let Some((&ch, payload)) = b.split_first() else { continue };
                    if opts.close_signal && ch == CLOSE_SIGNAL {
                        if let Some(id) = payload.first().filter(|c| inbound.contains(c)).and_then(|c| by_channel.get(c)) {
                            if let Err(e) = writer.data(*id, &[], true).await {
                                result = Err(e.into());
                                break;
                            }
                        }
                        continue;
                    }
                    if let Some(id) = Some(ch).filter(|c| inbound.contains(c)).and_then(|c| by_channel.get(&c)) {
                        if let Err(e) = writer.data(*id, payload, false).await {
                            result = Err(e.into());
                            break;
                        }
                    }
                }
                Some(Ok(Message::Close(_))) | None => break,
                Some(Err(e)) => {
                    result = Err(e.into());
                    break;
                }
                Some(Ok(_)) => {}
            },
            f = frames.recv() => match f {
                Some(Ok(Frame::Data { stream_id, flags, data })) => {
                    if let Some((ch, true)) = by_stream.get(&stream_id) {
                        if !data.is_empty() {
                            let mut m = Vec::with_capacity(data.len() + 1);
                            m.push(*ch);
                            m.extend_from_slice(&data);
                            if let Err(e) = ws_tx.send(Message::Binary(m.into())).await {
                                result = Err(e.into());
                                break;
                            }
                        }
                    }
                    if flags & FLAG_FIN != 0 {
                        open_outputs.remove(&stream_id);
                        if open_outputs.is_empty() {
                            break;
                        }
                    }
                }
                Some(Ok(Frame::RstStream { stream_id, .. })) => {
                    open_outputs.remove(&stream_id);
                    if open_outputs.is_empty() {
                        break;
                    }
                }
                Some(Ok(Frame::Ping(id))) => {
                    // Even ids are the runtime's own pings: echo them.
                    if id % 2 == 0 {
                        if let Err(e) = writer.send(&Frame::Ping(id)).await {
                            result = Err(e.into());
                            break;
                        }
                    }
                }
                Some(Ok(Frame::GoAway { .. })) | None => break,
                Some(Err(e)) => {
                    result = Err(e.into());
                    break;
                }
                Some(Ok(_)) => {}
            },
        }
    }
    reader.abort();
    let _ = ws_tx
        .send(Message::Close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        })))
        .await;
    let _ = ws_tx.close().await;
    writer.shutdown().await;
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::DuplexStream;

    fn q(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn stream_flags_as_remotecommand_reads_them() {
        let f = StreamFlags::from_query(&q(&[("input", "1"), ("output", "1"), ("error", "1")]))
            .unwrap();
        assert_eq!(
            f,
            StreamFlags {
                stdin: true,
                stdout: true,
                stderr: true,
                tty: false
            }
        );
        // A TTY has no stderr.
        let f =
            StreamFlags::from_query(&q(&[("output", "1"), ("error", "1"), ("tty", "1")])).unwrap();
        assert!(!f.stderr && f.tty);
        assert_eq!(
            StreamFlags::from_query(&q(&[("tty", "1")])).unwrap_err(),
            "you must specify at least 1 of stdin, stdout, stderr"
        );
    }

    #[test]
    fn channels_of_exec_and_port_forward() {
        let chans: Vec<(u8, String)> = exec_channels(StreamFlags {
            stdin: true,
            stdout: true,
            stderr: false,
            tty: true,
        })
        .into_iter()
        .map(|c| (c.channel, c.headers[0].1.clone()))
        .collect();
        assert_eq!(
            chans,
            [
                (3, "error".to_string()),
                (0, "stdin".to_string()),
                (1, "stdout".to_string()),
                (4, "resize".to_string())
            ]
        );
        let pf = port_forward_channels(&[80, 443]);
        assert_eq!(pf.len(), 4);
        assert_eq!(pf[1].channel, 0);
        assert_eq!(pf[0].channel, 1);
        assert_eq!(pf[3].channel, 2);
        assert_eq!(
            super::super::spdy::header(&pf[3].headers, "port"),
            Some("443")
        );
        assert_eq!(
            super::super::spdy::header(&pf[3].headers, "requestid"),
            Some("1")
        );
    }

    #[test]
    fn negotiation_takes_the_clients_first_supported() {
        let mut h = HeaderMap::new();
        h.append(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static("v5.channel.k8s.io, v4.channel.k8s.io"),
        );
        let p = ws_protocols(&h);
        assert_eq!(
            negotiate(&p, &[STREAM_PROTOCOL_V4, WS_PROTOCOL_V5]).as_deref(),
            Some("v5.channel.k8s.io")
        );
        assert_eq!(negotiate(&p, &[PORT_FORWARD_TUNNEL_PROTOCOL]), None);
        h.insert(
            header::SEC_WEBSOCKET_KEY,
            HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ=="),
        );
        let acc = websocket_accept(&h, Some("v5.channel.k8s.io")).unwrap();
        // RFC 6455's example key and answer.
        assert_eq!(
            acc.get(header::SEC_WEBSOCKET_ACCEPT).unwrap(),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    /// A fake runtime on the SPDY side: accepts the streams, echoes stdin
    /// to stdout, and on stdin's FIN sends the exit status and closes.
    async fn fake_runtime(io: DuplexStream) -> Vec<(u32, Headers)> {
        let (rd, wr) = tokio::io::split(io);
        let mut r = FrameReader::new(rd);
        let mut w = FrameWriter::new(wr).unwrap();
        let mut streams = Vec::new();
        let mut ids: HashMap<String, u32> = HashMap::new();
        while let Ok(Some(f)) = r.next().await {
            match f {
                Frame::SynStream {
                    stream_id, headers, ..
                } => {
                    let t = super::super::spdy::header(&headers, "streamtype")
                        .unwrap_or("")
                        .to_string();
                    ids.insert(t, stream_id);
                    streams.push((stream_id, headers));
                    w.send(&Frame::SynReply {
                        stream_id,
                        flags: 0,
                        headers: vec![],
                    })
                    .await
                    .unwrap();
                }
                Frame::Data {
                    stream_id,
                    flags,
                    data,
                } if Some(&stream_id) == ids.get("stdin") => {
                    if !data.is_empty() {
                        w.data(ids["stdout"], &data, false).await.unwrap();
                    }
                    if flags & FLAG_FIN != 0 {
                        w.data(ids["stdout"], &[], true).await.unwrap();
                        w.data(ids["error"], br#"{"metadata":{},"status":"Success"}"#, true)
                            .await
                            .unwrap();
                        break;
                    }
                }
                _ => {}
            }
        }
        streams
    }

    #[tokio::test]
    async fn websocket_v5_channels_map_to_spdy_streams() {
        let (client_io, server_io) = tokio::io::duplex(4096);
        let (runtime_io, kubelet_side) = tokio::io::duplex(4096);
        let runtime = tokio::spawn(fake_runtime(runtime_io));
        let bridge = tokio::spawn(async move {
            let ws = server_websocket(server_io).await;
            translate(
                ws,
                kubelet_side,
                exec_channels(StreamFlags {
                    stdin: true,
                    stdout: true,
                    stderr: true,
                    tty: false,
                }),
                TranslateOptions {
                    close_signal: true,
                    initial: vec![],
                },
            )
            .await
        });
        let mut client = WebSocketStream::from_raw_socket(client_io, Role::Client, None).await;
        client
            .send(Message::Binary(Bytes::from_static(b"\x00hello ")))
            .await
            .unwrap();
        client
            .send(Message::Binary(Bytes::from_static(b"\x00world")))
            .await
            .unwrap();
        // v5: close stdin.
        client
            .send(Message::Binary(Bytes::from_static(&[255, 0])))
            .await
            .unwrap();
        let mut stdout = Vec::new();
        let mut status = Vec::new();
        while let Some(Ok(m)) = client.next().await {
            match m {
                Message::Binary(b) => match b[0] {
                    CH_STDOUT => stdout.extend_from_slice(&b[1..]),
                    CH_ERROR => status.extend_from_slice(&b[1..]),
                    other => panic!("unexpected channel {other}"),
                },
                Message::Close(_) => break,
                _ => {}
            }
        }
        assert_eq!(stdout, b"hello world");
        assert_eq!(status, br#"{"metadata":{},"status":"Success"}"#);
        bridge.await.unwrap().unwrap();
        let streams = runtime.await.unwrap();
        let kinds: Vec<(u32, &str)> = streams
            .iter()
            .map(|(id, h)| (*id, super::super::spdy::header(h, "streamtype").unwrap()))
            .collect();
        assert_eq!(
            kinds,
            [(1, "error"), (3, "stdin"), (5, "stdout"), (7, "stderr")]
        );
    }
}
