//! The `kelson server` child process: started with a data dir and port of
//! the bench's choosing, watched until `/readyz` answers 200, measured
//! through /proc, and stopped by PID whatever way the bench ends.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use http::{Method, StatusCode};

use crate::client::{Conn, Kubeconfig};

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("starting {path}: {source}")]
    Spawn {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("kelson server exited early ({status}); last log lines:\n{log}")]
    Exited { status: String, log: String },
    #[error("kelson server not ready after {0:?}; last log lines:\n{1}")]
    NotReady(Duration, String),
    #[error("reading /proc/{pid}/status: {reason}")]
    Proc { pid: u32, reason: String },
}

/// A running `kelson server`; dropping it stops the process.
pub struct ServerProc {
    child: Child,
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    log: PathBuf,
}

/// A port nobody listens on right now (the kernel picks it).
pub fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

/// Which parts of the control plane the server runs besides the API server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Components {
    /// The API server alone, as upstream's kube-apiserver figures are taken:
    /// no scheduler or controller manager alongside.
    ApiServerOnly,
    /// API server, scheduler and controller manager in one process.
    ControlPlane,
}

impl Components {
    fn flags(self) -> &'static [&'static str] {
        match self {
            Components::ApiServerOnly => &["--disable-controller-manager", "--disable-scheduler"],
            Components::ControlPlane => &[],
        }
    }
}

impl ServerProc {
    /// Starts the server (never with a node agent: nodes, if any, are
    /// simulated); `extra` flags are appended. Its output goes to `log`
    /// (read back on failure).
    pub fn spawn(
        kelson: &Path,
        data_dir: &Path,
        log: &Path,
        components: Components,
        extra: &[&str],
    ) -> Result<ServerProc, ServerError> {
        let port = free_port()?;
        let out = std::fs::File::create(log)?;
        let err = out.try_clone()?;
        let child = Command::new(kelson)
            .arg("server")
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--bind-address", "127.0.0.1", "--https-port"])
            .arg(port.to_string())
            .arg("--disable-agent")
            .args(components.flags())
            .args(extra)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|source| ServerError::Spawn {
                path: kelson.display().to_string(),
                source,
            })?;
        Ok(ServerProc {
            child,
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
            data_dir: data_dir.to_path_buf(),
            log: log.to_path_buf(),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn kubeconfig_path(&self) -> PathBuf {
        self.data_dir.join("kubeconfig.yaml")
    }

    /// The last lines the server logged.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    fn check_alive(&mut self) -> Result<(), ServerError> {
        match self.child.try_wait()? {
            Some(status) => Err(ServerError::Exited {
                status: status.to_string(),
                log: self.log_tail(),
            }),
            None => Ok(()),
        }
    }

    /// Polls every millisecond until `/readyz` answers 200: first for the
    /// kubeconfig (written before the listener opens), then for a TLS
    /// connection, then for the status. Returns the connection and the
    /// kubeconfig it used.
    pub async fn wait_ready(&mut self, limit: Duration) -> Result<(Conn, Kubeconfig), ServerError> {
        let deadline = Instant::now() + limit;
        let mut kubeconfig: Option<(Kubeconfig, std::sync::Arc<rustls::ClientConfig>)> = None;
        let mut conn: Option<Conn> = None;
        loop {
            if Instant::now() > deadline {
                return Err(ServerError::NotReady(limit, self.log_tail()));
            }
            self.check_alive()?;
            if kubeconfig.is_none() {
                // Missing or half written: try again in a moment.
                kubeconfig = Kubeconfig::load(&self.kubeconfig_path())
                    .ok()
                    .and_then(|k| k.tls().ok().map(|t| (k, t)));
            }
            if let (Some((_, tls)), None) = (&kubeconfig, &conn) {
                conn = Conn::open(self.addr, tls.clone()).await.ok();
            }
            if let Some(c) = &conn {
                match c.call(Method::GET, "/readyz", None).await {
                    Ok((StatusCode::OK, _)) => {
                        if let (Some(c), Some((k, _))) = (conn, kubeconfig) {
                            return Ok((c, k));
                        }
                        return Err(ServerError::NotReady(limit, self.log_tail()));
                    }
                    Ok(_) => {}
                    Err(_) => conn = None,
                }
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// Resident and peak resident memory of the server now.
    pub fn memory(&self) -> Result<Memory, ServerError> {
        memory_of(self.pid())
    }

    /// SIGTERM (through kill(1): no unsafe code for a signal), then SIGKILL
    /// after five seconds.
    pub fn stop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Resident and peak resident memory of process `pid` now.
pub fn memory_of(pid: u32) -> Result<Memory, ServerError> {
    let text =
        std::fs::read_to_string(format!("/proc/{pid}/status")).map_err(|e| ServerError::Proc {
            pid,
            reason: e.to_string(),
        })?;
    Memory::parse(&text).ok_or(ServerError::Proc {
        pid,
        reason: "no VmRSS/VmHWM lines".into(),
    })
}

/// User plus system CPU time of a process so far (`None` if unreadable),
/// from /proc/PID/stat (`"self"` for the bench itself).
pub fn cpu_time(pid: &str) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    cpu_from_stat(&stat, clock_ticks())
}

fn cpu_from_stat(stat: &str, ticks_per_sec: u64) -> Option<Duration> {
    // The command name may hold spaces and parentheses: fields are counted
    // from the last ')'; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_secs_f64(
        ticks as f64 / ticks_per_sec.max(1) as f64,
    ))
}

/// The kernel's clock ticks per second (`getconf CLK_TCK`; 100 on Linux
/// unless asked otherwise).
fn clock_ticks() -> u64 {
    static TICKS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100)
    })
}

/// Memory figures of /proc/PID/status, in KiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Memory {
    pub rss_kib: u64,
    pub hwm_kib: u64,
}

impl Memory {
    fn parse(status: &str) -> Option<Memory> {
        let kib = |key: &str| {
            status.lines().find_map(|l| {
                l.strip_prefix(key)?
                    .trim()
                    .strip_suffix("kB")?
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
        };
        Some(Memory {
            rss_kib: kib("VmRSS:")?,
            hwm_kib: kib("VmHWM:")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_status_memory_lines() {
        let status = "Name:\tkelson\nVmPeak:\t  900000 kB\nVmHWM:\t   41234 kB\nVmRSS:\t   30120 kB\nThreads:\t3\n";
        assert_eq!(
            Memory::parse(status),
            Some(Memory {
                rss_kib: 30120,
                hwm_kib: 41234
            })
        );
        assert_eq!(Memory::parse("Name:\tkelson\n"), None);
        assert!(memory_of(std::process::id()).is_ok_and(|m| m.rss_kib > 0));
    }

    #[test]
    fn only_the_api_bench_disables_components() {
        assert_eq!(
            Components::ApiServerOnly.flags(),
            ["--disable-controller-manager", "--disable-scheduler"]
        );
        assert!(Components::ControlPlane.flags().is_empty());
    }

    #[test]
    fn cpu_time_counts_user_and_system_ticks() {
        let stat =
            "4242 (kelson (x) y) S 1 4242 4242 0 -1 4194560 5000 0 0 0 250 50 0 0 20 0 9 0 100 0 0";
        assert_eq!(cpu_from_stat(stat, 100), Some(Duration::from_secs(3)));
        assert_eq!(cpu_from_stat("garbage", 100), None);
        assert!(cpu_time("self").is_some());
    }
}
