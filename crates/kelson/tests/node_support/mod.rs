//! Harness of the node end-to-end tests: a real `kelson server` (with its
//! agent, containerd, runc and the CNI plugins) inside a network namespace
//! made by the test, driven by the real kubectl from inside that namespace.
//!
//! Network safety: every process that can see pod IPs (server, agents,
//! containerd, kubectl, curl, the registry) runs in a test namespace
//! (`nsenter --net`, which keeps the host's mount namespace so that
//! cgroups and the mounts of a restarted server behave as on a real host).
//! The namespace has `lo` and a bridge `kbr0` with the node IP and no
//! default route: nothing routes out. A second node lives in a second
//! namespace joined to the first by a veth pair.
//!
//! Cleanup runs on drop, also after a failed assertion: SIGTERM then SIGKILL
//! to the processes started here (by PID), SIGKILL to every process left in
//! the test namespaces (containerd, shims) and in the test's cgroup root
//! (containers), lazy unmount of what is mounted under the test's dirs, the
//! pod network namespaces the test's containerd created, the cgroup dirs,
//! and the namespaces themselves. Tests of this binary run one at a time so
//! that "new since the test started" means "made by this test".

// Each test uses a different part of this module.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use nix::fcntl::{Flock, FlockArg};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const KELSON: &str = env!("CARGO_BIN_EXE_kelson");
pub const KUBECTL: &str = "/usr/bin/kubectl";
/// The test image, imported by the agent at start (air-gapped path).
pub const BUSYBOX: &str = "kelson.dev/busybox:1";
/// The API server's port inside the test namespace (each namespace has its
/// own port space).
pub const API_PORT: u16 = 6443;
/// The registry's port inside the test namespace.
pub const REGISTRY_PORT: u16 = 5000;
const CNI_BIN: &str = "/usr/lib/cni";
const NETNS_DIR: &str = "/var/run/netns";
const CGROUP_FS: &str = "/sys/fs/cgroup";

/// Clusters that may run at once: each is a server, an agent and a
/// containerd; more than this on two cores mostly adds waiting.
const PARALLEL: usize = 3;

/// Slots are lock files (flock), so the limit holds across test processes
/// too (cargo-nextest runs each test in its own). Tests that compare
/// host-wide state (the pod network namespaces) take every slot and run
/// alone.
pub struct SlotGuard(#[allow(dead_code)] Vec<Flock<std::fs::File>>);

fn slot_file(i: usize) -> std::fs::File {
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(std::env::temp_dir().join(format!("kelson-e2e-slot-{i}.lock")))
        .expect("opening a slot lock file")
}

fn acquire_slots(all: bool) -> SlotGuard {
    if all {
        let held = (0..PARALLEL)
            .map(|i| {
                Flock::lock(slot_file(i), FlockArg::LockExclusive)
                    .map_err(|(_, e)| e)
                    .expect("locking a slot")
            })
            .collect();
        return SlotGuard(held);
    }
    loop {
        for i in 0..PARALLEL {
            if let Ok(l) = Flock::lock(slot_file(i), FlockArg::LockExclusiveNonblock) {
                return SlotGuard(vec![l]);
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
static COUNTER: AtomicU32 = AtomicU32::new(0);

fn in_path(bin: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(bin).is_file()))
        .unwrap_or(false)
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2))
                == Some("0")
        })
        .unwrap_or(false)
}

/// Why this machine cannot run the node tests (None: it can). `extra`
/// names further programs a test needs (e.g. `docker-registry`).
pub fn missing_prerequisites(extra: &[&str]) -> Option<String> {
    if !is_root() {
        return Some("not root (network namespaces, cgroups and mounts need it)".into());
    }
    for bin in ["containerd", "runc", "ctr", "nsenter", "ip", "curl"]
        .iter()
        .chain(extra)
    {
        if !in_path(bin) {
            return Some(format!("{bin} is not installed"));
        }
    }
    for plugin in ["bridge", "host-local", "loopback", "portmap"] {
        if !Path::new(CNI_BIN).join(plugin).is_file() {
            return Some(format!("CNI plugin {CNI_BIN}/{plugin} is missing"));
        }
    }
    if !Path::new(KUBECTL).is_file() {
        return Some(format!("{KUBECTL} is missing"));
    }
    if !Path::new("/bin/busybox").is_file() && !Path::new("/usr/bin/busybox").is_file() {
        return Some("busybox-static is not installed (test image)".into());
    }
    None
}

/// Prints why the test is skipped and returns true when it must be.
pub fn skip(test: &str, extra: &[&str]) -> bool {
    match missing_prerequisites(extra) {
        Some(why) => {
            eprintln!("SKIPPED {test}: {why}");
            true
        }
        None => false,
    }
}

/// The busybox test image archive, built once per test process: the
/// applets of `busybox_image` plus those kubectl cp and the tty test use.
pub fn busybox_tar() -> &'static [u8] {
    static TAR: OnceLock<Vec<u8>> = OnceLock::new();
    TAR.get_or_init(|| {
        let binary = ["/bin/busybox", "/usr/bin/busybox"]
            .iter()
            .find_map(|p| std::fs::read(p).ok())
            .expect("busybox binary");
        let mut image = kelson_cri::image::ImageBuilder::new(BUSYBOX)
            .file("bin/busybox", binary, 0o755)
            .dir("tmp", 0o1777)
            .dir("root", 0o700)
            .dir("var/www", 0o755)
            .dir("proc", 0o555)
            .dir("sys", 0o555)
            .dir("dev", 0o755)
            .file(
                "etc/passwd",
                "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
                0o644,
            )
            .file("etc/group", "root:x:0:\nnogroup:x:65534:\n", 0o644)
            .cmd(["sh"]);
        let extra = ["tar", "tty", "stty", "mkfifo", "base64", "md5sum", "free", "nproc"];
        let mut seen = BTreeSet::new();
        for applet in kelson_cri::image::BUSYBOX_APPLETS.iter().chain(extra.iter()) {
            if seen.insert(*applet) {
                image = image.symlink(format!("bin/{applet}"), "busybox");
            }
        }
        image.build().expect("building the busybox image")
    })
}

// ---------------------------------------------------------------------
// Network namespaces

/// A network namespace made by the test (`ip netns add`).
pub struct Netns {
    pub name: String,
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    out
}

fn ip(args: &[&str]) {
    run(Command::new("ip").args(args));
}

impl Netns {
    pub fn create(name: &str) -> Netns {
        ip(&["netns", "add", name]);
        let ns = Netns {
            name: name.to_string(),
        };
        ip(&["-n", name, "link", "set", "lo", "up"]);
        ns
    }

    pub fn path(&self) -> PathBuf {
        Path::new(NETNS_DIR).join(&self.name)
    }

    /// `program` run inside this namespace (network only: same mounts and
    /// cgroups as the host).
    pub fn cmd(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net={}", self.path().display()))
            .arg("--")
            .arg(program);
        c
    }

    /// The namespace's inode (what /proc/PID/ns/net links to).
    pub fn inode(&self) -> Option<u64> {
        std::fs::metadata(self.path()).ok().map(|m| m.ino())
    }

    fn delete(&self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stderr(Stdio::null())
            .status();
    }
}

// ---------------------------------------------------------------------
// Processes

/// Sends `sig` to `pid` (by number, with kill(1)).
fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .stderr(Stdio::null())
        .status();
}

/// SIGTERM, then SIGKILL after `grace`; reaps the child.
fn stop_child(child: &mut Child, grace: Duration) {
    if child.try_wait().ok().flatten().is_some() {
        return;
    }
    signal(child.id(), "TERM");
    let deadline = Instant::now() + grace;
    while child.try_wait().ok().flatten().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// PIDs of every process whose network namespace has inode `ino`.
fn pids_in_netns(ino: u64) -> Vec<u32> {
    let want = format!("net:[{ino}]");
    let mut pids = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return pids;
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if let Ok(link) = std::fs::read_link(e.path().join("ns/net")) {
            if link.to_string_lossy() == want {
                pids.push(pid);
            }
        }
    }
    pids
}

/// Whether any process is in the network namespace bound at `path`.
fn netns_in_use(path: &Path) -> bool {
    match std::fs::metadata(path) {
        Ok(m) => !pids_in_netns(m.ino()).is_empty(),
        Err(_) => false,
    }
}

/// The cgroup hierarchies mounted under /sys/fs/cgroup (v1 controllers,
/// name=systemd, the unified v2 mount).
fn cgroup_hierarchies() -> Vec<PathBuf> {
    let mut v = Vec::new();
    if let Ok(dir) = std::fs::read_dir(CGROUP_FS) {
        for e in dir.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                v.push(e.path());
            }
        }
    }
    v
}

/// Every cgroup dir at or under `root` (e.g. `/kelson-e2e-1-2`) in every
/// hierarchy, parents before children.
pub fn cgroup_dirs(root: &str) -> Vec<PathBuf> {
    let rel = root.trim_start_matches('/');
    let mut out = Vec::new();
    for h in cgroup_hierarchies() {
        let top = h.join(rel);
        if !top.is_dir() {
            continue;
        }
        let mut stack = vec![top];
        while let Some(d) = stack.pop() {
            if let Ok(rd) = std::fs::read_dir(&d) {
                for e in rd.flatten() {
                    if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                        stack.push(e.path());
                    }
                }
            }
            out.push(d);
        }
    }
    out.sort_by_key(|p| p.components().count());
    out
}

fn cgroup_pids(dirs: &[PathBuf]) -> BTreeSet<u32> {
    dirs.iter()
        .filter_map(|d| std::fs::read_to_string(d.join("cgroup.procs")).ok())
        .flat_map(|s| {
            s.lines()
                .filter_map(|l| l.trim().parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

/// Mount points (from /proc/self/mountinfo, octal escapes decoded).
pub fn mount_points() -> Vec<String> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    text.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape_mount)
        .collect()
}

fn unescape_mount(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn lazy_umount(path: &str) {
    let _ = Command::new("umount")
        .args(["-l", path])
        .stderr(Stdio::null())
        .status();
}

/// Entries of /var/run/netns whose name starts with `cni-` (containerd's
/// pod namespaces).
pub fn cni_netns() -> BTreeSet<String> {
    std::fs::read_dir(NETNS_DIR)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().to_str().map(str::to_string))
                .filter(|n| n.starts_with("cni-"))
                .collect()
        })
        .unwrap_or_default()
}

// ---------------------------------------------------------------------
// Nodes

/// What a node process (the server with its agent, or an agent) was
/// started with.
pub struct NodeProc {
    pub ns: usize,
    pub ip: String,
    pub data_dir: PathBuf,
    pub cgroup_root: String,
    pub pod_logs_dir: PathBuf,
    pub log: PathBuf,
    pub node_name: Option<String>,
    args: Vec<String>,
    child: Option<Child>,
    pub spawned: Option<Instant>,
}

impl NodeProc {
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

/// One test's world: namespaces, a server, maybe more nodes and a
/// registry, and a kubectl pointed at the server.
pub struct NodeEnv {
    pub id: String,
    pub n: u32,
    pub dir: tempfile::TempDir,
    pub netns: Vec<Netns>,
    pub server: NodeProc,
    pub agents: Vec<NodeProc>,
    registry: Option<Child>,
    baseline_cni: BTreeSet<String>,
    cgroup_root: String,
    // Last: released after cleanup.
    _slot: SlotGuard,
}

impl NodeEnv {
    /// A namespace with `lo` and `kbr0` (the node IP), the busybox image in
    /// the agent's import dir, and `kelson server` spawned in it (not waited
    /// for: see `wait_api` / `wait_node_ready`).
    pub fn start() -> NodeEnv {
        Self::start_with(&[])
    }

    pub fn start_with(extra_server_args: &[&str]) -> NodeEnv {
        Self::start_inner(true, extra_server_args, 1)
    }

    /// [`NodeEnv::start`] with no other test's cluster running meanwhile.
    pub fn start_alone() -> NodeEnv {
        Self::start_inner(true, &[], PARALLEL)
    }

    /// A ready node with no other test's cluster running meanwhile.
    pub fn ready_alone() -> NodeEnv {
        let mut env = Self::start_inner(true, &[], PARALLEL);
        env.wait_api();
        env.wait_node_ready(Duration::from_secs(60));
        env
    }

    /// The server alone (`--disable-agent`, none of the node flags): for
    /// checking the harness itself.
    pub fn start_control_plane_only() -> NodeEnv {
        Self::start_inner(false, &["--disable-agent"], PARALLEL)
    }

    fn start_inner(agent: bool, extra_server_args: &[&str], slots: usize) -> NodeEnv {
        let slot = acquire_slots(slots == PARALLEL);
        let n = COUNTER.fetch_add(1, Ordering::SeqCst) % 200 + 1;
        let id = format!("kelson-e2e-{}-{n}", std::process::id());
        let dir = tempfile::Builder::new()
            .prefix("kelson-e2e-")
            .tempdir()
            .unwrap();
        let baseline_cni = cni_netns();
        let ns = Netns::create(&id);
        let node_ip = format!("10.250.{n}.1");
        ip(&["-n", &ns.name, "link", "add", "kbr0", "type", "bridge"]);
        ip(&[
            "-n",
            &ns.name,
            "addr",
            "add",
            &format!("{node_ip}/24"),
            "dev",
            "kbr0",
        ]);
        ip(&["-n", &ns.name, "link", "set", "kbr0", "up"]);
        let cgroup_root = format!("/{id}");
        let data_dir = dir.path().join("node1");
        let server = NodeProc {
            ns: 0,
            ip: node_ip.clone(),
            cgroup_root: format!("{cgroup_root}/node1"),
            pod_logs_dir: dir.path().join("pod-logs-node1"),
            log: dir.path().join("server.log"),
            node_name: None,
            args: Vec::new(),
            child: None,
            spawned: None,
            data_dir,
        };
        let mut env = NodeEnv {
            id,
            n,
            dir,
            netns: vec![ns],
            server,
            agents: Vec::new(),
            registry: None,
            baseline_cni,
            cgroup_root,
            _slot: slot,
        };
        let mut args: Vec<String> = [
            "server",
            "--data-dir",
            &env.server.data_dir.to_string_lossy(),
            "--bind-address",
            &node_ip,
            "--https-port",
            &API_PORT.to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if agent {
            for (flag, value) in [
                ("--node-ip", node_ip.clone()),
                (
                    "--pod-logs-dir",
                    env.server.pod_logs_dir.to_string_lossy().into_owned(),
                ),
                ("--cgroup-root", env.server.cgroup_root.clone()),
            ] {
                args.push(flag.to_string());
                args.push(value);
            }
        }
        args.extend(extra_server_args.iter().map(|s| s.to_string()));
        env.server.args = args;
        put_image(&env.server.data_dir);
        env.spawn_server();
        env
    }

    /// (Re)starts the server process with the arguments it was made with.
    pub fn spawn_server(&mut self) {
        let child = spawn_node(&self.netns[self.server.ns], &self.server);
        self.server.spawned = Some(Instant::now());
        self.server.child = Some(child);
    }

    /// SIGKILL to the server (its in-process agent dies with it).
    pub fn kill9_server(&mut self) {
        if let Some(mut c) = self.server.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM (SIGKILL after 20 s) to the server.
    pub fn stop_server(&mut self) {
        if let Some(mut c) = self.server.child.take() {
            stop_child(&mut c, Duration::from_secs(20));
        }
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.server.data_dir.join("kubeconfig.yaml")
    }

    pub fn ns(&self) -> &Netns {
        &self.netns[0]
    }

    /// Last lines of every node's log, for failure messages.
    pub fn logs(&self) -> String {
        let mut s = format!(
            "--- server log ({}):\n{}",
            self.server.log.display(),
            self.server.log_tail(40)
        );
        for a in &self.agents {
            s.push_str(&format!(
                "\n--- agent log ({}):\n{}",
                a.log.display(),
                a.log_tail(30)
            ));
        }
        s
    }

    // -- kubectl ----------------------------------------------------------

    /// kubectl (inside the namespace) with the server's admin kubeconfig.
    pub fn kubectl_cmd(&self, args: &[&str]) -> Command {
        let mut c = self.ns().cmd(KUBECTL);
        c.arg("--kubeconfig")
            .arg(self.kubeconfig())
            .arg("--cache-dir")
            .arg(self.dir.path().join("kube-cache"))
            .args(args)
            .env_remove("KUBERNETES_SERVICE_HOST");
        c
    }

    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_cmd(args).output().unwrap()
    }

    /// kubectl with `input` on stdin.
    pub fn kubectl_stdin(&self, args: &[&str], input: &[u8]) -> Output {
        use std::io::Write;
        let mut child = self
            .kubectl_cmd(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(input).unwrap();
        drop(stdin);
        child.wait_with_output().unwrap()
    }

    /// Runs kubectl, asserts success, returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}{}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout),
            self.logs()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Writes `obj` as JSON and `kubectl apply`s it.
    pub fn apply(&self, obj: &Value) {
        let name = obj["metadata"]["name"].as_str().unwrap_or("obj");
        let kind = obj["kind"].as_str().unwrap_or("obj");
        let path = self.dir.path().join(format!("{kind}-{name}.json"));
        std::fs::write(&path, obj.to_string()).unwrap();
        self.ok(&["apply", "-f", &path.to_string_lossy()]);
    }

    /// `kubectl get ARGS -o json`, None when it fails.
    pub fn get_json(&self, args: &[&str]) -> Option<Value> {
        let mut a = vec!["get"];
        a.extend_from_slice(args);
        a.extend_from_slice(&["-o", "json"]);
        let out = self.kubectl(&a);
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }

    pub fn pod(&self, name: &str) -> Option<Value> {
        self.get_json(&["pod", name])
    }

    /// Polls `check` (every 200 ms) until it returns Ok or `limit` passes;
    /// `Err` carries the last state, shown with the logs on timeout.
    pub fn wait<T>(
        &self,
        what: &str,
        limit: Duration,
        mut check: impl FnMut() -> Result<T, String>,
    ) -> T {
        let deadline = Instant::now() + limit;
        loop {
            match check() {
                Ok(v) => return v,
                Err(last) => {
                    if Instant::now() > deadline {
                        panic!(
                            "timed out after {limit:?} waiting for {what}; last state: {last}\n{}",
                            self.logs()
                        );
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Waits until `/readyz` answers through kubectl.
    pub fn wait_api(&self) {
        self.wait("the API server", Duration::from_secs(60), || {
            if !self.kubeconfig().exists() {
                return Err("no kubeconfig yet".into());
            }
            let out = self.kubectl(&["get", "--raw", "/readyz"]);
            if out.status.success() {
                Ok(())
            } else {
                Err(String::from_utf8_lossy(&out.stderr).into_owned())
            }
        })
    }

    /// The name of the Node whose InternalIP is `ip`, if it is Ready.
    fn ready_node_with_ip(&self, ip: &str) -> Result<String, String> {
        let nodes = self
            .get_json(&["nodes"])
            .ok_or_else(|| "kubectl get nodes failed".to_string())?;
        let items = nodes["items"].as_array().cloned().unwrap_or_default();
        for node in &items {
            let has_ip = node["status"]["addresses"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .any(|x| x["type"] == "InternalIP" && x["address"] == ip)
                })
                .unwrap_or(false);
            if !has_ip {
                continue;
            }
            let ready = node["status"]["conditions"]
                .as_array()
                .map(|c| {
                    c.iter()
                        .any(|x| x["type"] == "Ready" && x["status"] == "True")
                })
                .unwrap_or(false);
            let name = node["metadata"]["name"].as_str().unwrap_or("").to_string();
            if ready {
                return Ok(name);
            }
            return Err(format!(
                "node {name} not Ready: {}",
                node["status"]["conditions"]
            ));
        }
        Err(format!(
            "no node with InternalIP {ip} among {:?}",
            items
                .iter()
                .map(|n| n["metadata"]["name"].clone())
                .collect::<Vec<_>>()
        ))
    }

    /// Waits until the server's node is Ready; returns its name and the
    /// time from the server's spawn to the Ready observation.
    pub fn wait_node_ready(&mut self, limit: Duration) -> (String, Duration) {
        let ip = self.server.ip.clone();
        let name = self.wait("the server's node to be Ready", limit, || {
            self.ready_node_with_ip(&ip)
        });
        let took = self.server.spawned.map(|s| s.elapsed()).unwrap_or_default();
        self.server.node_name = Some(name.clone());
        (name, took)
    }

    /// The server's node name (after `wait_node_ready`).
    pub fn node1(&self) -> String {
        self.server
            .node_name
            .clone()
            .expect("wait_node_ready first")
    }

    /// Starts the API, waits for the node: the usual start of a test.
    pub fn ready() -> NodeEnv {
        let mut env = NodeEnv::start();
        env.wait_api();
        env.wait_node_ready(Duration::from_secs(60));
        env
    }

    // -- more nodes ---------------------------------------------------------

    /// A second namespace joined to the first by a veth pair (on `kbr0`),
    /// with `kelson agent` joining the server; returns the agent's index.
    pub fn add_agent(&mut self) -> usize {
        let k = self.netns.len();
        let name = format!("{}-n{}", self.id, k + 1);
        let ns = Netns::create(&name);
        let a = &self.netns[0].name;
        let host_end = format!("veth-n{}", k + 1);
        ip(&[
            "-n", a, "link", "add", &host_end, "type", "veth", "peer", "name", "eth0", "netns",
            &ns.name,
        ]);
        ip(&["-n", a, "link", "set", &host_end, "master", "kbr0", "up"]);
        let node_ip = format!("10.250.{}.{}", self.n, k + 1);
        ip(&[
            "-n",
            &ns.name,
            "addr",
            "add",
            &format!("{node_ip}/24"),
            "dev",
            "eth0",
        ]);
        ip(&["-n", &ns.name, "link", "set", "eth0", "up"]);
        self.netns.push(ns);

        let token_path = self.server.data_dir.join("server").join("node-token");
        let token = self.wait("the node token", Duration::from_secs(30), || {
            std::fs::read_to_string(&token_path)
                .map(|t| t.trim().to_string())
                .map_err(|e| format!("{}: {e}", token_path.display()))
        });
        let node_dir = format!("node{}", k + 1);
        let node_name = format!("e2e-{}-{node_dir}", self.n);
        let mut agent = NodeProc {
            ns: k,
            ip: node_ip.clone(),
            data_dir: self.dir.path().join(&node_dir),
            cgroup_root: format!("{}/{node_dir}", self.cgroup_root),
            pod_logs_dir: self.dir.path().join(format!("pod-logs-{node_dir}")),
            log: self.dir.path().join(format!("agent-{node_dir}.log")),
            node_name: Some(node_name.clone()),
            args: Vec::new(),
            child: None,
            spawned: None,
        };
        agent.args = [
            "agent",
            "--server",
            &format!("https://{}:{API_PORT}", self.server.ip),
            "--token",
            &token,
            "--data-dir",
            &agent.data_dir.to_string_lossy(),
            "--node-name",
            &node_name,
            "--node-ip",
            &node_ip,
            "--pod-logs-dir",
            &agent.pod_logs_dir.to_string_lossy(),
            "--cgroup-root",
            &agent.cgroup_root,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        put_image(&agent.data_dir);
        let child = spawn_node(&self.netns[k], &agent);
        agent.spawned = Some(Instant::now());
        agent.child = Some(child);
        self.agents.push(agent);
        self.agents.len() - 1
    }

    /// Waits until agent `i`'s node is Ready.
    pub fn wait_agent_ready(&self, i: usize, limit: Duration) -> String {
        let ip = self.agents[i].ip.clone();
        self.wait(&format!("agent {i}'s node to be Ready"), limit, || {
            self.ready_node_with_ip(&ip)
        })
    }

    // -- registry -----------------------------------------------------------

    /// Debian's docker-registry on 127.0.0.1:REGISTRY_PORT inside the
    /// namespace; returns `host:port`.
    pub fn start_registry(&mut self) -> String {
        let root = self.dir.path().join("registry");
        std::fs::create_dir_all(&root).unwrap();
        let config = self.dir.path().join("registry.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{REGISTRY_PORT}\n",
                root.display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(self.dir.path().join("registry.log")).unwrap();
        let child = self
            .ns()
            .cmd("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.registry = Some(child);
        let url = format!("http://127.0.0.1:{REGISTRY_PORT}/v2/");
        self.wait("the registry", Duration::from_secs(20), || {
            let out = self
                .ns()
                .cmd("curl")
                .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", &url])
                .output()
                .map_err(|e| e.to_string())?;
            let code = String::from_utf8_lossy(&out.stdout).into_owned();
            if code == "200" {
                Ok(())
            } else {
                Err(format!("GET {url}: {code}"))
            }
        });
        format!("127.0.0.1:{REGISTRY_PORT}")
    }

    /// `curl -s URL` from inside the server's namespace (2 s timeout).
    pub fn curl(&self, url: &str) -> Result<String, String> {
        let out = self
            .ns()
            .cmd("curl")
            .args(["-s", "-S", "--max-time", "2", url])
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    // -- what the node left -------------------------------------------------

    /// Pod network namespaces created since this test started.
    pub fn new_cni_netns(&self) -> Vec<String> {
        cni_netns()
            .difference(&self.baseline_cni)
            .cloned()
            .collect()
    }

    /// Pod cgroups (`pod<uid>` dirs) left under a node's cgroup root.
    pub fn pod_cgroups(&self, node: &NodeProc) -> Vec<PathBuf> {
        cgroup_dirs(&node.cgroup_root)
            .into_iter()
            .filter(|d| {
                d.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("pod"))
            })
            .collect()
    }

    /// Processes in a node's cgroups (containers).
    pub fn cgroup_processes(&self, node: &NodeProc) -> BTreeSet<u32> {
        cgroup_pids(&cgroup_dirs(&node.cgroup_root))
    }

    /// Mounts under a node's data dir.
    pub fn mounts_under(&self, node: &NodeProc) -> Vec<String> {
        let prefix = format!("{}/", node.data_dir.display());
        mount_points()
            .into_iter()
            .filter(|m| m.starts_with(&prefix))
            .collect()
    }

    /// The node's containerd socket (found under its data dir).
    pub fn containerd_socket(&self, node: &NodeProc) -> Option<PathBuf> {
        let mut stack = vec![node.data_dir.clone()];
        while let Some(d) = stack.pop() {
            let Ok(rd) = std::fs::read_dir(&d) else {
                continue;
            };
            for e in rd.flatten() {
                let Ok(t) = e.file_type() else { continue };
                if t.is_dir() && !t.is_symlink() {
                    // containerd's content and snapshots are big and hold no socket.
                    let name = e.file_name();
                    if name != "root" && name != "snapshots" {
                        stack.push(e.path());
                    }
                } else if e.file_name() == "containerd.sock" {
                    return Some(e.path());
                }
            }
        }
        None
    }

    /// `ctr -n k8s.io ARGS` against a node's containerd (inside its
    /// namespace); the IDs it lists (first column, header dropped).
    pub fn ctr_ids(&self, node: &NodeProc, args: &[&str]) -> Result<Vec<String>, String> {
        let sock = self
            .containerd_socket(node)
            .ok_or_else(|| "no containerd.sock under the data dir".to_string())?;
        let out = self.netns[node.ns]
            .cmd("ctr")
            .arg("--address")
            .arg(&sock)
            .args(["-n", "k8s.io"])
            .args(args)
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .skip(1)
            .filter_map(|l| l.split_whitespace().next().map(str::to_string))
            .collect())
    }

    // -- cleanup --------------------------------------------------------------

    fn cleanup(&mut self) {
        // The processes started here, by PID: the node processes get a
        // chance to stop their containerd.
        for a in self.agents.iter_mut() {
            if let Some(mut c) = a.child.take() {
                stop_child(&mut c, Duration::from_secs(15));
            }
        }
        if let Some(mut c) = self.server.child.take() {
            stop_child(&mut c, Duration::from_secs(15));
        }
        if let Some(mut c) = self.registry.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        // What they left: containerd and its shims live in the test
        // namespaces, containers in the test's cgroups.
        let inodes: Vec<u64> = self.netns.iter().filter_map(|n| n.inode()).collect();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mut pids: BTreeSet<u32> = inodes.iter().flat_map(|i| pids_in_netns(*i)).collect();
            pids.extend(cgroup_pids(&cgroup_dirs(&self.cgroup_root)));
            pids.remove(&std::process::id());
            if pids.is_empty() || Instant::now() > deadline {
                break;
            }
            for p in pids {
                signal(p, "KILL");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        // Mounts under the test dir, deepest first.
        let prefix = format!("{}/", self.dir.path().display());
        let mut mounts: Vec<String> = mount_points()
            .into_iter()
            .filter(|m| m.starts_with(&prefix))
            .collect();
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        mounts.dedup();
        for m in &mounts {
            lazy_umount(m);
        }
        // Pod network namespaces our containerd made and nobody uses now.
        for name in self.new_cni_netns() {
            let path = Path::new(NETNS_DIR).join(&name);
            if !netns_in_use(&path) {
                lazy_umount(&path.to_string_lossy());
                let _ = std::fs::remove_file(&path);
            }
        }
        // Cgroups, children first (a dir empties once its tasks are gone).
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let dirs = cgroup_dirs(&self.cgroup_root);
            if dirs.is_empty() || Instant::now() > deadline {
                break;
            }
            for d in dirs.iter().rev() {
                let _ = std::fs::remove_dir(d);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        for ns in self.netns.iter().rev() {
            ns.delete();
        }
    }
}

impl Drop for NodeEnv {
    fn drop(&mut self) {
        self.cleanup();
    }
}

/// Writes the busybox archive where the agent imports images at start.
fn put_image(data_dir: &Path) {
    let images = data_dir.join("agent").join("images");
    std::fs::create_dir_all(&images).unwrap();
    std::fs::write(images.join("busybox.tar"), busybox_tar()).unwrap();
}

fn spawn_node(ns: &Netns, node: &NodeProc) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&node.log)
        .unwrap();
    ns.cmd(KELSON)
        .args(&node.args)
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
        )
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap()
}

// ---------------------------------------------------------------------
// Background kubectl (logs -f, port-forward)

/// A kubectl left running in the background; its stdout is collected.
pub struct Background {
    child: Child,
    out: Arc<Mutex<String>>,
}

impl Background {
    pub fn start(env: &NodeEnv, args: &[&str]) -> Background {
        let mut child = env
            .kubectl_cmd(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let out = Arc::new(Mutex::new(String::new()));
        for stream in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let out = out.clone();
            std::thread::spawn(move || {
                let mut stream = stream;
                let mut buf = [0u8; 4096];
                while let Ok(n) = stream.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    out.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            });
        }
        Background { child, out }
    }

    /// Everything it printed so far (stdout and stderr).
    pub fn output(&self) -> String {
        self.out.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn exited(&mut self) -> bool {
        self.child.try_wait().ok().flatten().is_some()
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------
// JSON helpers

/// A Pod object named `name` with `spec` (containers etc.).
pub fn pod_obj(name: &str, labels: Value, spec: Value) -> Value {
    serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": spec,
    })
}

/// A busybox container running `script` with `sh -c`.
pub fn sh_container(name: &str, script: &str) -> Value {
    serde_json::json!({"name": name, "image": BUSYBOX, "command": ["sh", "-c", script]})
}

/// The status of container `c` of `pod` (app or init containers).
pub fn container_status<'a>(pod: &'a Value, c: &str) -> Option<&'a Value> {
    ["containerStatuses", "initContainerStatuses"]
        .iter()
        .filter_map(|k| pod["status"][k].as_array())
        .flatten()
        .find(|s| s["name"] == c)
}

pub fn phase(pod: &Value) -> &str {
    pod["status"]["phase"].as_str().unwrap_or("")
}

pub fn condition<'a>(pod: &'a Value, t: &str) -> Option<&'a str> {
    pod["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == t)?["status"]
        .as_str()
}

/// Seconds since the epoch of an RFC 3339 UTC timestamp with whole seconds
/// (`2025-01-02T03:04:05Z`), as the API server writes them.
pub fn epoch_seconds(ts: &str) -> Option<i64> {
    let ts = ts.strip_suffix('Z')?;
    let (date, time) = ts.split_once('T')?;
    let mut d = date.split('-').map(|x| x.parse::<i64>());
    let (y, m, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let mut t = time
        .split(':')
        .map(|x| x.split('.').next().unwrap_or("").parse::<i64>());
    let (hh, mm, ss) = (t.next()?.ok()?, t.next()?.ok()?, t.next()?.ok()?);
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146097 + doe - 719468;
    Some(days * 86400 + hh * 3600 + mm * 60 + ss)
}

#[test]
fn epoch_seconds_parses_api_timestamps() {
    assert_eq!(epoch_seconds("1970-01-01T00:00:00Z"), Some(0));
    assert_eq!(epoch_seconds("2024-03-01T00:00:10Z"), Some(1709251210));
    assert_eq!(epoch_seconds("nonsense"), None);
}
