//! tcpSocket probes (upstream `pkg/probe/tcp`): success when a connection
//! opens within the timeout.

use std::time::Duration;

use tokio::net::TcpStream;

use super::{ProbeOutcome, ProbeResult};

pub(super) async fn probe(host: &str, port: u16, timeout: Duration) -> ProbeOutcome {
    match dial(host, port, timeout).await {
        Ok(_conn) => ProbeOutcome::new(ProbeResult::Success, ""),
        Err(msg) => ProbeOutcome::new(ProbeResult::Failure, msg),
    }
}

/// Opens a TCP connection within `timeout`; errors read like Go's net
/// package ("dial tcp 10.0.0.1:80: connect: connection refused").
pub(super) async fn dial(host: &str, port: u16, timeout: Duration) -> Result<TcpStream, String> {
    match tokio::time::timeout(timeout, connect(host, port)).await {
        Ok(r) => r,
        Err(_) => Err(format!(
            "dial tcp {}: i/o timeout",
            join_host_port(host, port)
        )),
    }
}

/// [`dial`] without a timeout of its own (the caller has one).
pub(super) async fn connect(host: &str, port: u16) -> Result<TcpStream, String> {
    TcpStream::connect((host, port)).await.map_err(|e| {
        format!(
            "dial tcp {}: {}",
            join_host_port(host, port),
            go_io_error(&e)
        )
    })
}

/// Go's net.JoinHostPort: IPv6 literals in brackets.
pub(crate) fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// An io error worded as Go's syscall errors for the common cases.
pub(super) fn go_io_error(e: &std::io::Error) -> String {
    use std::io::ErrorKind;
    match e.kind() {
        ErrorKind::ConnectionRefused => "connect: connection refused".into(),
        ErrorKind::NetworkUnreachable => "connect: network is unreachable".into(),
        ErrorKind::HostUnreachable => "connect: no route to host".into(),
        ErrorKind::TimedOut => "i/o timeout".into(),
        ErrorKind::ConnectionReset => "read: connection reset by peer".into(),
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn open_port_succeeds_closed_port_fails() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let out = probe("127.0.0.1", port, Duration::from_secs(1)).await;
        assert_eq!(out.result, ProbeResult::Success);
        assert_eq!(out.output, "");

        drop(l);
        let out = probe("127.0.0.1", port, Duration::from_secs(1)).await;
        assert_eq!(out.result, ProbeResult::Failure);
        assert_eq!(
            out.output,
            format!("dial tcp 127.0.0.1:{port}: connect: connection refused")
        );
    }

    #[test]
    fn ipv6_hosts_are_bracketed() {
        assert_eq!(join_host_port("fd00::1", 80), "[fd00::1]:80");
        assert_eq!(join_host_port("10.0.0.1", 80), "10.0.0.1:80");
    }
}
