//! containerd as a child process of the node agent.
//!
//! [`Containerd::start`] writes a containerd 1.6 config (version 2) under the
//! node's data dir, spawns `containerd --config FILE` in its own process
//! group, and waits until the socket answers a CRI `Version` call.
//! [`Containerd::stop`] (and, best effort, `Drop`) ends that one PID:
//! SIGTERM, then SIGKILL after a timeout. Shims are left alone on purpose:
//! like kubelet with a system containerd, containers outlive a runtime
//! restart; removing pods is the caller's job.
//!
//! [`Containerd::existing`] wraps a user-supplied CRI socket
//! (`--container-runtime-endpoint`); it owns no process.

use crate::client::{socket_path, ClientError, Cri};
use crate::pause::PAUSE_IMAGE;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

/// `sun_path` is 108 bytes including the terminating NUL.
const MAX_SOCKET_PATH: usize = 107;
/// containerd puts its ttrpc socket at the gRPC address plus this suffix.
const TTRPC_SUFFIX: &str = ".ttrpc";
/// Where sockets go when the data dir is too deep for a Unix socket path.
const SHORT_SOCKET_ROOT: &str = "/run/kelson";

#[derive(Debug, thiserror::Error)]
pub enum ContainerdError {
    #[error("preparing containerd directories and config under {path}: {source}")]
    Setup {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("spawning {binary}: {source}")]
    Spawn {
        binary: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("containerd exited during startup ({status}); log {log}: {tail}")]
    Exited {
        status: std::process::ExitStatus,
        log: PathBuf,
        tail: String,
    },
    #[error("containerd did not answer CRI Version on {socket} within {timeout:?} (last error: {last}); log {log}")]
    Timeout {
        socket: PathBuf,
        timeout: Duration,
        last: String,
        log: PathBuf,
    },
    #[error("waiting for containerd: {0}")]
    Wait(#[source] std::io::Error),
    #[error("signalling containerd pid {pid}: {source}")]
    Signal {
        pid: u32,
        #[source]
        source: nix::Error,
    },
    #[error(transparent)]
    Client(#[from] ClientError),
}

/// How to run containerd.
#[derive(Clone, Debug)]
pub struct ContainerdOptions {
    /// The node's data dir; everything goes under `<data_dir>/containerd`
    /// and `<data_dir>/cni`.
    pub data_dir: PathBuf,
    /// The containerd binary (default: `containerd` from PATH).
    pub binary: PathBuf,
    /// CRI `sandbox_image` (default [`PAUSE_IMAGE`]).
    pub sandbox_image: String,
    /// How long to wait for the socket to answer.
    pub start_timeout: Duration,
    /// SIGTERM grace before SIGKILL in [`Containerd::stop`].
    pub stop_timeout: Duration,
    /// Extra `host:port` registries to reach over plain HTTP. Loopback hosts
    /// (`127.0.0.1:*`, `localhost:*`, `[::1]:*`) need no entry: containerd
    /// already falls back to HTTP for them when no hosts.toml names them.
    pub insecure_registries: Vec<String>,
    /// containerd's `--log-level`.
    pub log_level: String,
}

impl ContainerdOptions {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        ContainerdOptions {
            data_dir: data_dir.into(),
            binary: PathBuf::from("containerd"),
            sandbox_image: PAUSE_IMAGE.to_string(),
            start_timeout: Duration::from_secs(30),
            stop_timeout: Duration::from_secs(10),
            insecure_registries: Vec::new(),
            log_level: "info".to_string(),
        }
    }
}

/// Where a managed containerd keeps its files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerdPaths {
    pub root: PathBuf,
    pub state: PathBuf,
    /// The gRPC (and CRI) socket.
    pub socket: PathBuf,
    pub config: PathBuf,
    pub log: PathBuf,
    /// The PID of the containerd we run, so a restarted agent can find one
    /// its killed predecessor left behind.
    pub pid_file: PathBuf,
    /// `config_path` for registry hosts (`<host>/hosts.toml`).
    pub registry_config_dir: PathBuf,
    /// CNI config dir given to the CRI plugin.
    pub cni_conf_dir: PathBuf,
    /// `/opt`-style plugin dir (kept under the data dir, not /opt/containerd).
    pub opt: PathBuf,
}

impl ContainerdPaths {
    pub fn new(data_dir: &Path) -> Self {
        let base = data_dir.join("containerd");
        let preferred = base.join("containerd.sock");
        let socket = if preferred.as_os_str().len() + TTRPC_SUFFIX.len() <= MAX_SOCKET_PATH {
            preferred
        } else {
            // Too deep for sun_path: a short, stable per-data-dir location.
            let digest = Sha256::digest(data_dir.as_os_str().as_encoded_bytes());
            let hash: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
            Path::new(SHORT_SOCKET_ROOT)
                .join(hash)
                .join("containerd.sock")
        };
        ContainerdPaths {
            root: base.join("root"),
            state: base.join("state"),
            socket,
            config: base.join("config.toml"),
            log: base.join("containerd.log"),
            pid_file: base.join("containerd.pid"),
            registry_config_dir: base.join("certs.d"),
            cni_conf_dir: data_dir.join("cni").join("net.d"),
            opt: base.join("opt"),
        }
    }
}

/// A TOML basic string.
fn toml_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\u{:04x}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn path_str(p: &Path) -> String {
    toml_str(&p.to_string_lossy())
}

/// The containerd config (version 2) for these options and paths.
pub fn render_config(opts: &ContainerdOptions, paths: &ContainerdPaths) -> String {
    let cri = "plugins.\"io.containerd.grpc.v1.cri\"";
    let mut ttrpc = paths.socket.as_os_str().to_os_string();
    ttrpc.push(TTRPC_SUFFIX);
    format!(
        r#"# Generated by kelson-cri; rewritten on every start.
version = 2
root = {root}
state = {state}
# The kernel here may refuse a negative oom_score_adj; keep containerd's own.
oom_score = 0

[grpc]
  address = {socket}

[ttrpc]
  address = {ttrpc}

[debug]
  address = ""
  level = {level}

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = {opt}

[{cri}]
  sandbox_image = {sandbox}
  # runc otherwise fails sandboxes with "can't get final child's PID from
  # pipe: EOF" where negative oom_score_adj values are denied.
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  disable_apparmor = true

[{cri}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"

[{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[{cri}.containerd.runtimes.runc.options]
  SystemdCgroup = false

[{cri}.cni]
  bin_dir = "/usr/lib/cni"
  conf_dir = {cni}
  max_conf_num = 1

[{cri}.registry]
  # hosts.toml per registry; loopback registries need none (plain HTTP).
  config_path = {certs}
"#,
        root = path_str(&paths.root),
        state = path_str(&paths.state),
        socket = path_str(&paths.socket),
        ttrpc = toml_str(&ttrpc.to_string_lossy()),
        level = toml_str(&opts.log_level),
        opt = path_str(&paths.opt),
        sandbox = toml_str(&opts.sandbox_image),
        cni = path_str(&paths.cni_conf_dir),
        certs = path_str(&paths.registry_config_dir),
    )
}

/// `hosts.toml` allowing plain HTTP (and unverified TLS) for `host`.
pub fn insecure_hosts_toml(host: &str) -> String {
    let server = toml_str(&format!("http://{host}"));
    format!(
        "server = {server}\n\n[host.{server}]\n  capabilities = [\"pull\", \"resolve\", \"push\"]\n  skip_verify = true\n"
    )
}

fn setup_err(path: &Path) -> impl FnOnce(std::io::Error) -> ContainerdError + '_ {
    move |source| ContainerdError::Setup {
        path: path.to_path_buf(),
        source,
    }
}

/// Creates the directories and writes the config (and hosts.toml files).
pub fn write_config(opts: &ContainerdOptions) -> Result<ContainerdPaths, ContainerdError> {
    let paths = ContainerdPaths::new(&opts.data_dir);
    for dir in [
        &paths.root,
        &paths.state,
        &paths.registry_config_dir,
        &paths.cni_conf_dir,
        &paths.opt,
    ] {
        std::fs::create_dir_all(dir).map_err(setup_err(dir))?;
    }
    if let Some(parent) = paths.socket.parent() {
        std::fs::create_dir_all(parent).map_err(setup_err(parent))?;
    }
    for host in &opts.insecure_registries {
        // A host like "10.0.0.1:5000" is a plain directory name.
        let dir = paths.registry_config_dir.join(host.replace('/', "_"));
        std::fs::create_dir_all(&dir).map_err(setup_err(&dir))?;
        let file = dir.join("hosts.toml");
        std::fs::write(&file, insecure_hosts_toml(host)).map_err(setup_err(&file))?;
    }
    std::fs::write(&paths.config, render_config(opts, &paths)).map_err(setup_err(&paths.config))?;
    Ok(paths)
}

/// A CRI runtime: a containerd we run, or one the user gave us.
#[derive(Debug)]
pub struct Containerd {
    socket: PathBuf,
    child: Option<Child>,
    pid: Option<u32>,
    paths: Option<ContainerdPaths>,
    stop_timeout: Duration,
}

impl Containerd {
    /// Writes the config, spawns containerd and waits until it answers.
    pub async fn start(opts: ContainerdOptions) -> Result<Containerd, ContainerdError> {
        let paths = write_config(&opts)?;
        // A containerd left by an agent that was killed still holds the
        // data dir's database: stop it first (its containers keep running
        // in their shims, and the new one takes them over).
        stop_leftover(&paths, opts.stop_timeout).await;
        // A stale socket from a killed run would make the readiness probe
        // talk to nothing; containerd replaces it anyway.
        let _ = std::fs::remove_file(&paths.socket);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&paths.log)
            .map_err(setup_err(&paths.log))?;
        let mut cmd = Command::new(&opts.binary);
        cmd.arg("--config")
            .arg(&paths.config)
            .arg("--log-level")
            .arg(&opts.log_level)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            // Its own process group: a terminal's Ctrl-C goes to us, and we
            // decide how containerd stops.
            .process_group(0)
            .kill_on_drop(false);
        let child = cmd.spawn().map_err(|source| ContainerdError::Spawn {
            binary: opts.binary.clone(),
            source,
        })?;
        let pid = child.id();
        if let Some(pid) = pid {
            let _ = std::fs::write(&paths.pid_file, format!("{pid}\n"));
        }
        tracing::info!(pid = ?pid, socket = %paths.socket.display(), config = %paths.config.display(), "containerd started");
        let mut me = Containerd {
            socket: paths.socket.clone(),
            child: Some(child),
            pid,
            paths: Some(paths),
            stop_timeout: opts.stop_timeout,
        };
        if let Err(e) = me.wait_ready(opts.start_timeout).await {
            let _ = me.stop().await;
            return Err(e);
        }
        Ok(me)
    }

    async fn wait_ready(&mut self, timeout: Duration) -> Result<(), ContainerdError> {
        let started = Instant::now();
        let log = self
            .paths
            .as_ref()
            .map(|p| p.log.clone())
            .unwrap_or_default();
        let mut last = String::from("socket not created yet");
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait().map_err(ContainerdError::Wait)? {
                    self.child = None;
                    self.pid = None;
                    return Err(ContainerdError::Exited {
                        status,
                        tail: log_tail(&log),
                        log,
                    });
                }
            }
            if self.socket.exists() {
                match Cri::connect(&self.socket).await {
                    Ok(mut cri) => match cri.version().await {
                        Ok(v) => {
                            tracing::info!(
                                runtime = %v.runtime_name,
                                version = %v.runtime_version,
                                elapsed = ?started.elapsed(),
                                "containerd ready"
                            );
                            return Ok(());
                        }
                        Err(e) => last = e.to_string(),
                    },
                    Err(e) => last = e.to_string(),
                }
            }
            if started.elapsed() >= timeout {
                return Err(ContainerdError::Timeout {
                    socket: self.socket.clone(),
                    timeout,
                    last,
                    log,
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A runtime the user runs (`--container-runtime-endpoint`,
    /// `unix:///path` or `/path`); nothing to start or stop.
    pub fn existing(endpoint: &str) -> Result<Containerd, ContainerdError> {
        Ok(Containerd {
            socket: socket_path(endpoint)?,
            child: None,
            pid: None,
            paths: None,
            stop_timeout: Duration::ZERO,
        })
    }

    /// The CRI socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The containerd PID while we run it.
    pub fn pid(&self) -> Option<u32> {
        self.pid
    }

    /// Files of a containerd we run; `None` for [`Containerd::existing`].
    pub fn paths(&self) -> Option<&ContainerdPaths> {
        self.paths.as_ref()
    }

    /// A new CRI client on the socket.
    pub async fn connect(&self) -> Result<Cri, ContainerdError> {
        Ok(Cri::connect(&self.socket).await?)
    }

    /// Stops a containerd we run: SIGTERM, SIGKILL after the stop timeout.
    /// A no-op for an existing runtime or one already stopped.
    pub async fn stop(&mut self) -> Result<(), ContainerdError> {
        let (Some(mut child), Some(pid)) = (self.child.take(), self.pid.take()) else {
            return Ok(());
        };
        if child.try_wait().map_err(ContainerdError::Wait)?.is_some() {
            return Ok(());
        }
        signal(pid, Signal::SIGTERM)?;
        match tokio::time::timeout(self.stop_timeout, child.wait()).await {
            Ok(status) => {
                let status = status.map_err(ContainerdError::Wait)?;
                tracing::info!(pid, %status, "containerd stopped");
            }
            Err(_) => {
                tracing::warn!(pid, timeout = ?self.stop_timeout, "containerd ignored SIGTERM; killing");
                signal(pid, Signal::SIGKILL)?;
                child.wait().await.map_err(ContainerdError::Wait)?;
            }
        }
        self.remove_sockets();
        if let Some(p) = &self.paths {
            let _ = std::fs::remove_file(&p.pid_file);
        }
        Ok(())
    }

    /// Sockets a killed containerd leaves, and the short-path directory.
    fn remove_sockets(&self) {
        let mut ttrpc = self.socket.as_os_str().to_os_string();
        ttrpc.push(TTRPC_SUFFIX);
        let _ = std::fs::remove_file(&self.socket);
        let _ = std::fs::remove_file(ttrpc);
        if self.socket.starts_with(SHORT_SOCKET_ROOT) {
            if let Some(dir) = self.socket.parent() {
                let _ = std::fs::remove_dir(dir);
            }
            // Only if no other node agent uses it.
            let _ = std::fs::remove_dir(SHORT_SOCKET_ROOT);
        }
    }
}

/// Stops the containerd named by the pid file if it is still running with
/// this config (a PID reused by another program is left alone).
async fn stop_leftover(paths: &ContainerdPaths, timeout: Duration) {
    let Some(pid) = std::fs::read_to_string(&paths.pid_file)
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
    else {
        return;
    };
    let ours = |pid: u32| {
        std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmd| {
            let config = paths.config.as_os_str().as_encoded_bytes();
            cmd.split(|b| *b == 0).any(|arg| arg == config)
        })
    };
    if !ours(pid) {
        let _ = std::fs::remove_file(&paths.pid_file);
        return;
    }
    tracing::info!(pid, "stopping the containerd a previous agent left running");
    let _ = signal(pid, Signal::SIGTERM);
    let started = Instant::now();
    while ours(pid) && started.elapsed() < timeout {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if ours(pid) {
        let _ = signal(pid, Signal::SIGKILL);
        while ours(pid) && started.elapsed() < timeout + Duration::from_secs(5) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let _ = std::fs::remove_file(&paths.pid_file);
}

fn signal(pid: u32, sig: Signal) -> Result<(), ContainerdError> {
    let raw = i32::try_from(pid).map_err(|_| ContainerdError::Signal {
        pid,
        source: nix::Error::EINVAL,
    })?;
    match kill(Pid::from_raw(raw), sig) {
        // Already gone (exited between our check and the signal).
        Ok(()) | Err(nix::Error::ESRCH) => Ok(()),
        Err(source) => Err(ContainerdError::Signal { pid, source }),
    }
}

/// The last lines of the log, for startup errors.
fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(5)..].join("\n")
}

impl Drop for Containerd {
    /// Best effort, by PID: SIGTERM, a short synchronous grace, then
    /// SIGKILL. `stop()` is the orderly way.
    fn drop(&mut self) {
        let (Some(mut child), Some(pid)) = (self.child.take(), self.pid.take()) else {
            return;
        };
        if matches!(child.try_wait(), Ok(None)) && signal(pid, Signal::SIGTERM).is_ok() {
            let deadline = Instant::now() + self.stop_timeout.min(Duration::from_secs(5));
            while matches!(child.try_wait(), Ok(None)) {
                if Instant::now() >= deadline {
                    tracing::warn!(pid, "containerd still running on drop; killing");
                    let _ = signal(pid, Signal::SIGKILL);
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        self.remove_sockets();
        // tokio reaps the child in the background once it is dropped.
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_live_under_the_data_dir() {
        let p = ContainerdPaths::new(Path::new("/var/lib/kelson"));
        assert_eq!(p.root, Path::new("/var/lib/kelson/containerd/root"));
        assert_eq!(p.state, Path::new("/var/lib/kelson/containerd/state"));
        assert_eq!(
            p.socket,
            Path::new("/var/lib/kelson/containerd/containerd.sock")
        );
        assert_eq!(p.cni_conf_dir, Path::new("/var/lib/kelson/cni/net.d"));
    }

    #[test]
    fn deep_data_dirs_get_a_short_socket() {
        let deep = PathBuf::from(format!("/tmp/{}", "d".repeat(100)));
        let p = ContainerdPaths::new(&deep);
        assert!(p.socket.starts_with(SHORT_SOCKET_ROOT), "{:?}", p.socket);
        assert!(p.socket.as_os_str().len() + TTRPC_SUFFIX.len() <= MAX_SOCKET_PATH);
        // Stable per data dir, distinct across data dirs.
        assert_eq!(p.socket, ContainerdPaths::new(&deep).socket);
        let other = PathBuf::from(format!("/tmp/{}", "e".repeat(100)));
        assert_ne!(p.socket, ContainerdPaths::new(&other).socket);
        // The rest stays under the data dir.
        assert!(p.root.starts_with(&deep));
    }

    #[test]
    fn config_has_the_cri_settings() {
        let opts = ContainerdOptions::new("/data/k\"x");
        let paths = ContainerdPaths::new(&opts.data_dir);
        let cfg = render_config(&opts, &paths);
        for want in [
            "version = 2",
            r#"root = "/data/k\"x/containerd/root""#,
            r#"state = "/data/k\"x/containerd/state""#,
            r#"address = "/data/k\"x/containerd/containerd.sock""#,
            r#"address = "/data/k\"x/containerd/containerd.sock.ttrpc""#,
            r#"sandbox_image = "kelson.dev/pause:1""#,
            "restrict_oom_score_adj = true",
            r#"snapshotter = "overlayfs""#,
            r#"runtime_type = "io.containerd.runc.v2""#,
            "SystemdCgroup = false",
            r#"bin_dir = "/usr/lib/cni""#,
            r#"conf_dir = "/data/k\"x/cni/net.d""#,
            r#"config_path = "/data/k\"x/containerd/certs.d""#,
        ] {
            assert!(cfg.contains(want), "missing {want:?} in\n{cfg}");
        }
    }

    #[test]
    fn insecure_registry_hosts_file() {
        let t = insecure_hosts_toml("10.1.2.3:5000");
        assert!(t.starts_with("server = \"http://10.1.2.3:5000\"\n"), "{t}");
        assert!(t.contains("[host.\"http://10.1.2.3:5000\"]"), "{t}");
    }

    #[test]
    fn existing_endpoint_owns_no_process() {
        let c = Containerd::existing("unix:///run/x/containerd.sock").expect("endpoint");
        assert_eq!(c.socket(), Path::new("/run/x/containerd.sock"));
        assert_eq!(c.pid(), None);
        assert!(c.paths().is_none());
        assert!(Containerd::existing("x.sock").is_err());
    }

    #[tokio::test]
    async fn a_runtime_that_never_answers_times_out_and_is_stopped() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let fake = dir.path().join("fake-containerd");
        std::fs::write(
            &fake,
            format!(
                "#!/bin/sh\necho started >&2\necho $$ > {}\nexec sleep 300\n",
                dir.path().join("pid").display()
            ),
        )
        .expect("write");
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let mut opts = ContainerdOptions::new(dir.path());
        opts.binary = fake;
        opts.start_timeout = Duration::from_millis(500);
        opts.stop_timeout = Duration::from_secs(5);
        // Another test thread forking while the script was open for writing
        // can make exec fail with ETXTBSY for a moment.
        let mut err = Containerd::start(opts.clone()).await;
        for _ in 0..50 {
            match &err {
                Err(ContainerdError::Spawn { source, .. }) if source.raw_os_error() == Some(26) => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    err = Containerd::start(opts.clone()).await;
                }
                _ => break,
            }
        }
        let Err(ContainerdError::Timeout { log, .. }) = err else {
            panic!("want a timeout, got {err:?}");
        };
        // stderr went to the log file.
        let text = std::fs::read_to_string(log).expect("log");
        assert!(text.contains("started"), "{text:?}");
        // The fake (same PID after exec) was stopped and reaped.
        let pid = std::fs::read_to_string(dir.path().join("pid")).expect("pid file");
        assert!(
            !Path::new("/proc").join(pid.trim()).exists(),
            "fake containerd {} still exists",
            pid.trim()
        );
    }

    #[tokio::test]
    async fn a_binary_that_exits_is_reported_with_its_log() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut opts = ContainerdOptions::new(dir.path());
        opts.binary = PathBuf::from("false");
        opts.start_timeout = Duration::from_secs(10);
        let err = Containerd::start(opts).await;
        assert!(
            matches!(err, Err(ContainerdError::Exited { .. })),
            "{err:?}"
        );
    }
}
