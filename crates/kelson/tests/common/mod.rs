//! Shared by the end-to-end tests: a real `kelson server` on 127.0.0.1 with
//! its own data dir, and a kubectl wrapper pointed at it.

// Each test binary uses a different part of this module.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const KELSON: &str = env!("CARGO_BIN_EXE_kelson");
const KUBECTL_DIR: &str = "/usr/lib/google-cloud-sdk/bin";

/// kubectl 1.`minor` if installed side by side, else the one on PATH.
pub fn kubectl_bin(minor: u32) -> PathBuf {
    let versioned = PathBuf::from(format!("{KUBECTL_DIR}/kubectl.1.{minor}"));
    if versioned.exists() {
        versioned
    } else {
        PathBuf::from("kubectl")
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `kelson server` on 127.0.0.1 with its own data dir, stopped by PID.
pub struct Cluster {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub port: u16,
    extra: Vec<String>,
}

impl Cluster {
    pub fn start() -> Cluster {
        Cluster::start_with(&[])
    }

    /// Starts with extra `kelson server` flags; files named in them may use
    /// the `{dir}` placeholder for the cluster's data dir.
    pub fn start_with(extra: &[&str]) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let extra = extra
            .iter()
            .map(|a| a.replace("{dir}", &dir.path().to_string_lossy()))
            .collect();
        let mut c = Cluster {
            child: None,
            dir,
            port: free_port(),
            extra,
        };
        c.boot();
        c
    }

    /// Starts the server (again, after `stop`) on the same port and data dir,
    /// and waits until it is ready.
    pub fn boot(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("server.log"))
            .unwrap();
        let child = Command::new(KELSON)
            .args([
                "server",
                // The control plane only: these tests bring simulated nodes
                // (or none); a real node belongs in a test-made network
                // namespace (e2e_node.rs).
                "--disable-agent",
                "--bind-address",
                "127.0.0.1",
                "--https-port",
                &self.port.to_string(),
            ])
            .args(&self.extra)
            .arg("--data-dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if self.kubeconfig().exists()
                && self.kubectl(&["get", "--raw", "/readyz"]).status.success()
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "server did not become ready: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Everything the server(s) of this cluster wrote to stderr.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// Stops the server: SIGTERM to its PID, SIGKILL after 20 s.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(20);
            while child.try_wait().unwrap().is_none() {
                if Instant::now() > deadline {
                    let _ = child.kill();
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.wait();
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        self.boot();
    }

    /// The admin kubeconfig the server wrote.
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("kubeconfig.yaml")
    }

    /// The store file (only to be opened while the server is stopped).
    pub fn store_path(&self) -> PathBuf {
        self.dir.path().join("server").join("db").join("state.redb")
    }

    pub fn kubectl_v(&self, minor: u32, args: &[&str]) -> Output {
        Command::new(kubectl_bin(minor))
            .args(args)
            .env("KUBECONFIG", self.kubeconfig())
            .env_remove("KUBERNETES_SERVICE_HOST")
            .output()
            .unwrap()
    }

    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_v(32, args)
    }

    /// Runs kubectl, asserts success, returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs kubectl, asserts failure, returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            !out.status.success(),
            "kubectl {args:?} should fail: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// Writes a file into the data dir; returns its path.
    /// Polls `kubectl args` until it succeeds with output satisfying `ok`
    /// (60 s at most); returns that output.
    pub fn eventually(&self, args: &[&str], ok: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let out = self.kubectl(args);
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            if out.status.success() && ok(&text) {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "kubectl {args:?} never matched; last output: {text}{}",
                String::from_utf8_lossy(&out.stderr)
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    pub fn write(&self, name: &str, text: &str) -> String {
        let p = self.dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.to_string_lossy().into_owned()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
    }
}
