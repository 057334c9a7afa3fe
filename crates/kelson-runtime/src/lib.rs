//! What every Kelson component (scheduler, controller manager, node agent)
//! shares to reach the cluster. Components talk to the API server only
//! through kube-rs, each with its own client certificate, whether they run
//! inside `kelson server` or as their own processes.
//!
//! - [`client`]: kube clients from a kubeconfig or PEMs, with the
//!   component's User-Agent.
//! - [`leader`]: leader election on a coordination.k8s.io/v1 Lease.
//! - [`events`]: core/v1 Event recorder with upstream's deduplication.
//! - [`trim`]: managedFields cut from responses before they are decoded.
//! - [`shutdown_on_signals`], [`CancellationToken`], [`hostname`].
//! - `testing` (cargo feature `testing`): an in-process API server for
//!   tests.

pub mod client;
pub mod duration;
pub mod events;
pub mod leader;
#[cfg(feature = "testing")]
pub mod testing;
pub mod trim;

pub use client::{
    client_from_kubeconfig, client_from_kubeconfig_yaml, client_from_pem, ClientError,
};
pub use duration::parse_go_duration;
pub use events::{EventType, Recorder};
pub use leader::{LeaderElectionConfig, LeaderElector, Outcome};
pub use tokio_util::sync::CancellationToken;

/// This machine's hostname (what upstream's os.Hostname gives), or
/// "localhost" when it cannot be read.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()))
        .unwrap_or_else(|| "localhost".to_string())
}

#[derive(Debug, thiserror::Error)]
#[error("installing the {signal} handler: {source}")]
pub struct SignalError {
    signal: &'static str,
    source: std::io::Error,
}

/// A token cancelled on the first SIGTERM or SIGINT: the root of a
/// standalone component's shutdown. Hand child tokens
/// ([`CancellationToken::child_token`]) to its parts.
pub fn shutdown_on_signals() -> Result<CancellationToken, SignalError> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).map_err(|source| SignalError {
        signal: "SIGTERM",
        source,
    })?;
    let mut int = signal(SignalKind::interrupt()).map_err(|source| SignalError {
        signal: "SIGINT",
        source,
    })?;
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("received SIGTERM, shutting down"),
            _ = int.recv() => tracing::info!("received SIGINT, shutting down"),
            _ = cancel.cancelled() => return,
        }
        cancel.cancel();
    });
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostname_is_never_empty() {
        assert!(!hostname().is_empty());
    }

    #[tokio::test]
    async fn sigterm_cancels_the_token() {
        let token = shutdown_on_signals().unwrap();
        assert!(!token.is_cancelled());
        // Signal ourselves: the handler is installed, so the process lives.
        let pid = std::process::id().to_string();
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap();
        assert!(status.success());
        tokio::time::timeout(std::time::Duration::from_secs(5), token.cancelled())
            .await
            .unwrap();
    }
}
