//! # kelson-node-bench
//!
//! Pod startup latency on a real node, as upstream's SLO defines it: from a
//! pod's creation to the moment a watch shows it Running, with its image
//! already on the node (upstream's density tests use the pause image too).
//! Also the resident memory of the server, the agent, containerd and the
//! shims, at idle and with `--rss-pods` pods running. It prints figures
//! and asserts nothing.
//!
//! ```text
//! cargo build --release -p kelson -p kelson-apiserver-bench
//! sudo target/release/kelson-node-bench [--kelson PATH] [--pods 100] \
//!     [--rss-pods 50] [--qps 20] [--image kelson.dev/pause:1] [--in-server-agent]
//! ```
//!
//! Runs as root: the bench makes a network namespace (`lo` and a bridge
//! holding the node IP, no route out), re-executes itself inside it with
//! `nsenter --net`, and there starts `kelson server` and (unless
//! `--in-server-agent`) a separate `kelson agent`, so that the agent's own
//! memory can be read. Latency is measured with local clocks: from just
//! before each create is sent to the first watch event showing the pod
//! Running (millisecond precision; `creationTimestamp` has only seconds).
//! Whatever way it ends, the outer process then kills what runs in the
//! namespace and in the bench's cgroups, unmounts what is mounted under its
//! temporary dir, removes the pod network namespaces its containerd left,
//! the cgroups and the namespace.

use std::collections::{BTreeSet, HashMap};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kelson_apiserver_bench::server::memory_of;
use kelson_apiserver_bench::stats::percentile;
use kube::api::{Api, PostParams};
use kube::runtime::watcher;

const NODE_IP: &str = "10.251.0.1";
const API_PORT: u16 = 6443;
const NAMESPACE: &str = "bench";
const NETNS_DIR: &str = "/var/run/netns";

#[derive(Parser, Clone)]
#[command(
    name = "kelson-node-bench",
    about = "Pod startup latency and memory of a real Kelson node"
)]
struct Args {
    /// The kelson binary
    #[arg(long, default_value = "target/release/kelson")]
    kelson: PathBuf,
    /// Pods whose startup is measured
    #[arg(long, default_value_t = 100)]
    pods: usize,
    /// Memory is read again once this many pods run
    #[arg(long, default_value_t = 50)]
    rss_pods: usize,
    /// Pod creations per second
    #[arg(long, default_value_t = 20.0)]
    qps: f64,
    /// The pods' image; it must be on the node already (the pause image is
    /// imported by every agent at start)
    #[arg(long, default_value = "kelson.dev/pause:1")]
    image: String,
    /// Let the server run its own agent (then the agent's memory is the
    /// server's) instead of a separate `kelson agent`
    #[arg(long)]
    in_server_agent: bool,
    /// Copy the server's and the agent's logs here before cleaning up
    #[arg(long)]
    keep_logs: Option<PathBuf>,
    /// Internal: the work dir, set when re-executed inside the namespace
    #[arg(long, hide = true)]
    inner_dir: Option<PathBuf>,
    /// Internal: the cgroup root given to the node
    #[arg(long, hide = true, default_value = "")]
    inner_cgroup_root: String,
}

fn progress(msg: impl AsRef<str>) {
    eprintln!("[node-bench] {}", msg.as_ref());
}

fn main() -> ExitCode {
    let args = Args::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match args.inner_dir.clone() {
        Some(dir) => rt.block_on(inner(args, dir)),
        None => rt.block_on(outer(args)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

// ---------------------------------------------------------------------
// Outside the namespace: set up, run the inner bench, clean up.

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running ip")?;
    if !out.status.success() {
        bail!("ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

async fn outer(args: Args) -> Result<()> {
    if !is_root() {
        bail!("run as root: the bench makes a network namespace and cgroups");
    }
    let kelson = std::fs::canonicalize(&args.kelson)
        .with_context(|| format!("the kelson binary {}", args.kelson.display()))?;
    let dir = tempfile::Builder::new()
        .prefix("kelson-node-bench-")
        .tempdir()?;
    let name = format!("kelson-bench-{}", std::process::id());
    let mut world = World {
        netns: name.clone(),
        cgroup_root: format!("/{name}"),
        dir: dir.path().to_path_buf(),
        baseline_cni: cni_netns(),
        made_netns: false,
    };
    let result = run_inner(&args, &kelson, &mut world).await;
    if let Some(keep) = &args.keep_logs {
        std::fs::create_dir_all(keep)?;
        for log in ["server.log", "agent.log"] {
            let from = dir.path().join(log);
            if from.exists() {
                std::fs::copy(&from, keep.join(log))
                    .with_context(|| format!("keeping {}", from.display()))?;
            }
        }
        progress(format!("logs kept in {}", keep.display()));
    }
    progress("cleaning up");
    world.cleanup();
    drop(dir);
    result
}

async fn run_inner(args: &Args, kelson: &Path, world: &mut World) -> Result<()> {
    ip(&["netns", "add", &world.netns])?;
    world.made_netns = true;
    ip(&["-n", &world.netns, "link", "set", "lo", "up"])?;
    ip(&["-n", &world.netns, "link", "add", "kbr0", "type", "bridge"])?;
    ip(&[
        "-n",
        &world.netns,
        "addr",
        "add",
        &format!("{NODE_IP}/24"),
        "dev",
        "kbr0",
    ])?;
    ip(&["-n", &world.netns, "link", "set", "kbr0", "up"])?;
    let me = std::env::current_exe()?;
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net={NETNS_DIR}/{}", world.netns))
        .arg("--")
        .arg(me)
        .arg("--kelson")
        .arg(kelson)
        .args(["--pods", &args.pods.to_string()])
        .args(["--rss-pods", &args.rss_pods.to_string()])
        .args(["--qps", &args.qps.to_string()])
        .args(["--image", &args.image])
        .arg("--inner-dir")
        .arg(&world.dir)
        .args(["--inner-cgroup-root", &world.cgroup_root]);
    if args.in_server_agent {
        cmd.arg("--in-server-agent");
    }
    let mut child = cmd
        .spawn()
        .context("starting the bench inside the namespace")?;
    let status = loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {
                progress("interrupted: stopping");
                stop(&mut child, Duration::from_secs(20));
                bail!("interrupted");
            }
            _ = tokio::time::sleep(Duration::from_millis(200)) => {
                if let Some(st) = child.try_wait()? {
                    break st;
                }
            }
        }
    };
    if !status.success() {
        bail!("the bench inside the namespace failed ({status})");
    }
    Ok(())
}

/// What the bench made, for cleanup.
struct World {
    netns: String,
    cgroup_root: String,
    dir: PathBuf,
    baseline_cni: BTreeSet<String>,
    made_netns: bool,
}

impl World {
    fn cleanup(&mut self) {
        let ino = std::fs::metadata(Path::new(NETNS_DIR).join(&self.netns))
            .ok()
            .map(|m| m.ino());
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mut pids: BTreeSet<u32> = ino.map(pids_in_netns).unwrap_or_default();
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
        let prefix = format!("{}/", self.dir.display());
        let mut mounts: Vec<String> = mount_points()
            .into_iter()
            .filter(|m| m.starts_with(&prefix))
            .collect();
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in mounts {
            lazy_umount(&m);
        }
        for name in cni_netns().difference(&self.baseline_cni) {
            let path = Path::new(NETNS_DIR).join(name);
            let in_use = std::fs::metadata(&path)
                .map(|m| !pids_in_netns(m.ino()).is_empty())
                .unwrap_or(false);
            if !in_use {
                lazy_umount(&path.to_string_lossy());
                let _ = std::fs::remove_file(&path);
            }
        }
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
        if self.made_netns {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.netns])
                .status();
            self.made_netns = false;
        }
    }
}

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .stderr(Stdio::null())
        .status();
}

/// SIGTERM, SIGKILL after `grace`.
fn stop(child: &mut Child, grace: Duration) {
    if matches!(child.try_wait(), Ok(Some(_))) {
        return;
    }
    signal(child.id(), "TERM");
    let deadline = Instant::now() + grace;
    while matches!(child.try_wait(), Ok(None)) {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.wait();
}

/// `net:[inode]` of a process's network namespace.
fn netns_of(pid: &str) -> Option<String> {
    std::fs::read_link(format!("/proc/{pid}/ns/net"))
        .ok()
        .map(|l| l.to_string_lossy().into_owned())
}

fn all_pids() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok()))
                .collect()
        })
        .unwrap_or_default()
}

fn pids_in_netns(ino: u64) -> BTreeSet<u32> {
    let want = format!("net:[{ino}]");
    all_pids()
        .into_iter()
        .filter(|p| netns_of(&p.to_string()).as_deref() == Some(want.as_str()))
        .collect()
}

fn cgroup_dirs(root: &str) -> Vec<PathBuf> {
    let rel = root.trim_start_matches('/');
    let mut out = Vec::new();
    if rel.is_empty() {
        return out;
    }
    let Ok(hier) = std::fs::read_dir("/sys/fs/cgroup") else {
        return out;
    };
    for h in hier.flatten() {
        if !h.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            continue;
        }
        let top = h.path().join(rel);
        let mut stack = vec![top];
        while let Some(d) = stack.pop() {
            let Ok(rd) = std::fs::read_dir(&d) else {
                continue;
            };
            for e in rd.flatten() {
                if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    stack.push(e.path());
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

fn mount_points() -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        // Octal escapes (\040 for a space) only occur in odd paths; ours
        // have none, and an escaped one simply does not match the prefix.
        .map(str::to_string)
        .collect()
}

fn lazy_umount(path: &str) {
    let _ = Command::new("umount")
        .args(["-l", path])
        .stderr(Stdio::null())
        .status();
}

fn cni_netns() -> BTreeSet<String> {
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
// Inside the namespace: the node and the measurement.

/// Child processes of the inner bench, stopped by PID on drop.
struct Procs(Vec<(String, Child)>);

impl Drop for Procs {
    fn drop(&mut self) {
        for (_, c) in self.0.iter_mut().rev() {
            stop(c, Duration::from_secs(20));
        }
    }
}

fn spawn_kelson(kelson: &Path, args: &[String], log: &Path) -> Result<Child> {
    let out = std::fs::File::create(log)?;
    Command::new(kelson)
        .args(args)
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()
        .with_context(|| format!("starting {}", kelson.display()))
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// Polls `f` every 100 ms until it yields, or fails after `limit`.
async fn poll<T, F, Fut>(what: &str, limit: Duration, mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f().await {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("timed out after {limit:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Resident memory (KiB) of the namespace's containerd and the sum over
/// its shims.
fn runtime_rss() -> (Option<u64>, u64, usize) {
    let me = netns_of("self");
    let mut containerd = None;
    let mut shims = 0;
    let mut n_shims = 0;
    for pid in all_pids() {
        if netns_of(&pid.to_string()) != me {
            continue;
        }
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        let rss = memory_of(pid).map(|m| m.rss_kib).unwrap_or(0);
        match comm.trim() {
            "containerd" => containerd = Some(rss),
            c if c.starts_with("containerd-shim") => {
                shims += rss;
                n_shims += 1;
            }
            _ => {}
        }
    }
    (containerd, shims, n_shims)
}

#[derive(Debug, Clone, Copy)]
struct Rss {
    server_kib: u64,
    agent_kib: Option<u64>,
    containerd_kib: Option<u64>,
    shims_kib: u64,
    shims: usize,
}

fn read_rss(server: u32, agent: Option<u32>) -> Result<Rss> {
    let (containerd_kib, shims_kib, shims) = runtime_rss();
    Ok(Rss {
        server_kib: memory_of(server)?.rss_kib,
        agent_kib: agent.map(memory_of).transpose()?.map(|m| m.rss_kib),
        containerd_kib,
        shims_kib,
        shims,
    })
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn print_rss(label: &str, r: &Rss) {
    println!(
        "{label:<16} server {:>10}  agent {:>10}  containerd {:>10}  shims {:>10} ({} shims)",
        mib(r.server_kib),
        r.agent_kib.map(mib).unwrap_or_else(|| "(in server)".into()),
        r.containerd_kib.map(mib).unwrap_or_else(|| "-".into()),
        mib(r.shims_kib),
        r.shims
    );
}

fn pod_manifest(name: &str, image: &str) -> Result<Pod> {
    Ok(serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "node-bench"}},
        "spec": {
            "containers": [{"name": "c", "image": image, "imagePullPolicy": "Never"}],
            "terminationGracePeriodSeconds": 0
        }
    }))?)
}

async fn inner(args: Args, dir: PathBuf) -> Result<()> {
    let data = dir.join("server");
    let server_log = dir.join("server.log");
    let mut server_args: Vec<String> = vec![
        "server".into(),
        "--data-dir".into(),
        data.display().to_string(),
        "--bind-address".into(),
        NODE_IP.into(),
        "--https-port".into(),
        API_PORT.to_string(),
    ];
    let node_flags = |logs: &str, cg: &str| -> Vec<String> {
        vec![
            "--node-ip".into(),
            NODE_IP.into(),
            "--pod-logs-dir".into(),
            dir.join(logs).display().to_string(),
            "--cgroup-root".into(),
            format!("{}/{cg}", args.inner_cgroup_root),
        ]
    };
    if args.in_server_agent {
        server_args.extend(node_flags("pod-logs", "node"));
    } else {
        server_args.push("--disable-agent".into());
    }
    let t0 = Instant::now();
    let mut procs = Procs(Vec::new());
    let server = spawn_kelson(&args.kelson, &server_args, &server_log)?;
    let server_pid = server.id();
    procs.0.push(("server".into(), server));
    let kubeconfig = data.join("kubeconfig.yaml");
    poll("the kubeconfig", Duration::from_secs(60), || async {
        kubeconfig.exists().then_some(())
    })
    .await
    .with_context(|| log_tail(&server_log))?;
    kelson_runtime::client::install_crypto_provider();
    let client = kelson_runtime::client_from_kubeconfig(&kubeconfig, "kelson-node-bench").await?;
    poll("the API server", Duration::from_secs(60), || {
        let c = client.clone();
        async move { c.apiserver_version().await.ok() }
    })
    .await
    .with_context(|| log_tail(&server_log))?;
    progress(format!(
        "API ready after {:.2} s",
        t0.elapsed().as_secs_f64()
    ));

    let mut agent_pid = None;
    let mut agent_log = None;
    if !args.in_server_agent {
        let token_path = data.join("server").join("node-token");
        let token = poll("the node token", Duration::from_secs(30), || async {
            std::fs::read_to_string(&token_path).ok()
        })
        .await?;
        let mut a: Vec<String> = vec![
            "agent".into(),
            "--server".into(),
            format!("https://{NODE_IP}:{API_PORT}"),
            "--token".into(),
            token.trim().to_string(),
            "--data-dir".into(),
            dir.join("agent-node").display().to_string(),
            "--node-name".into(),
            "bench-node".into(),
        ];
        a.extend(node_flags("pod-logs", "node"));
        let log = dir.join("agent.log");
        let child = spawn_kelson(&args.kelson, &a, &log)?;
        agent_pid = Some(child.id());
        procs.0.push(("agent".into(), child));
        agent_log = Some(log);
    }
    let logs = || {
        let mut s = format!("server log:\n{}", log_tail(&server_log));
        if let Some(l) = &agent_log {
            s.push_str(&format!("\nagent log:\n{}", log_tail(l)));
        }
        s
    };

    let nodes: Api<Node> = Api::all(client.clone());
    let t_agent = Instant::now();
    poll("a Ready node", Duration::from_secs(120), || {
        let nodes = nodes.clone();
        async move {
            let list = nodes.list(&Default::default()).await.ok()?;
            list.items
                .iter()
                .any(|n| {
                    n.status
                        .as_ref()
                        .and_then(|s| s.conditions.as_ref())
                        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
                })
                .then_some(())
        }
    })
    .await
    .with_context(logs)?;
    progress(format!(
        "node Ready {:.2} s after the agent started ({:.2} s after the server)",
        t_agent.elapsed().as_secs_f64(),
        t0.elapsed().as_secs_f64()
    ));
    // Let start-up work (image import, first syncs) settle before reading
    // idle memory.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let idle = read_rss(server_pid, agent_pid)?;

    let ns: Api<Namespace> = Api::all(client.clone());
    ns.create(
        &PostParams::default(),
        &serde_json::from_value(serde_json::json!({"metadata": {"name": NAMESPACE}}))?,
    )
    .await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);

    // The watch: first time each pod is seen Running.
    let running: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let seen = running.clone();
    // And the first time each is seen bound to the node, to split the
    // latency into scheduling and the node's part.
    let bound: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let seen_bound = bound.clone();
    let watch_api = pods.clone();
    let watch = tokio::spawn(async move {
        let mut stream = watcher(watch_api, watcher::Config::default()).boxed();
        while let Some(ev) = stream.next().await {
            let now = Instant::now();
            let objs = match ev {
                Ok(watcher::Event::Apply(p)) | Ok(watcher::Event::InitApply(p)) => vec![p],
                _ => continue,
            };
            for p in objs {
                let is_running =
                    p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
                let is_bound = p.spec.as_ref().is_some_and(|s| s.node_name.is_some());
                if let (true, Some(name)) = (is_bound, p.metadata.name.clone()) {
                    seen_bound
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .entry(name)
                        .or_insert(now);
                }
                if let (true, Some(name)) = (is_running, p.metadata.name) {
                    seen.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .entry(name)
                        .or_insert(now);
                }
            }
        }
    });
    // Let the watch start before the first create.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut sent: HashMap<String, Instant> = HashMap::new();
    let interval = Duration::from_secs_f64(1.0 / args.qps.max(0.1));
    let rss_at = args.rss_pods.min(args.pods);
    let mut with_pods = None;
    // Creations are paced from `t_create`; the pause to read memory starts
    // the pacing afresh, so no burst makes up for it.
    let mut t_create = Instant::now();
    let mut paced_from = 0;
    for i in 0..args.pods {
        if i == rss_at && rss_at > 0 {
            wait_all_running(&running, &sent, &logs).await?;
            tokio::time::sleep(Duration::from_secs(5)).await;
            with_pods = Some(read_rss(server_pid, agent_pid)?);
            progress(format!("{rss_at} pods Running; memory read"));
            t_create = Instant::now();
            paced_from = i;
        }
        let name = format!("bench-{i:04}");
        let due = t_create + interval * (i - paced_from) as u32;
        tokio::time::sleep_until(due.into()).await;
        let pod = pod_manifest(&name, &args.image)?;
        sent.insert(name.clone(), Instant::now());
        pods.create(&PostParams::default(), &pod)
            .await
            .with_context(|| format!("creating {name}"))?;
    }
    wait_all_running(&running, &sent, &logs).await?;
    if with_pods.is_none() && rss_at > 0 {
        with_pods = Some(read_rss(server_pid, agent_pid)?);
    }
    watch.abort();

    let seen = running.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let mut lat: Vec<Duration> = sent
        .iter()
        .filter_map(|(n, t)| seen.get(n).map(|r| r.saturating_duration_since(*t)))
        .collect();
    lat.sort();
    let ms = |d: Option<Duration>| {
        d.map(|d| format!("{:.0} ms", d.as_secs_f64() * 1e3))
            .unwrap_or_default()
    };
    println!("pod startup latency (create sent -> Running seen by a watch), {} pods at {} pods/s, image {}:", lat.len(), args.qps, args.image);
    println!(
        "  p50 {}   p90 {}   p99 {}   max {}",
        ms(percentile(&lat, 50.0)),
        ms(percentile(&lat, 90.0)),
        ms(percentile(&lat, 99.0)),
        ms(lat.last().copied())
    );
    let bound = bound.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let mut sched: Vec<Duration> = sent
        .iter()
        .filter_map(|(n, t)| bound.get(n).map(|b| b.saturating_duration_since(*t)))
        .collect();
    sched.sort();
    let mut node: Vec<Duration> = bound
        .iter()
        .filter_map(|(n, b)| seen.get(n).map(|r| r.saturating_duration_since(*b)))
        .collect();
    node.sort();
    for (what, v) in [("create -> bound", &sched), ("bound -> Running", &node)] {
        println!(
            "  of which {what}: p50 {}   p99 {}",
            ms(percentile(v, 50.0)),
            ms(percentile(v, 99.0))
        );
    }
    print_rss("idle", &idle);
    if let Some(r) = &with_pods {
        print_rss(&format!("{rss_at} pods"), r);
    }
    let rss_json = |r: &Rss| {
        serde_json::json!({
            "server_kib": r.server_kib, "agent_kib": r.agent_kib,
            "containerd_kib": r.containerd_kib, "shims_kib": r.shims_kib, "shims": r.shims
        })
    };
    println!(
        "{}",
        serde_json::json!({
            "pods": lat.len(), "qps": args.qps, "image": args.image,
            "agent": if args.in_server_agent { "in-server" } else { "separate" },
            "p50_ms": percentile(&lat, 50.0).map(|d| d.as_millis() as u64),
            "p90_ms": percentile(&lat, 90.0).map(|d| d.as_millis() as u64),
            "p99_ms": percentile(&lat, 99.0).map(|d| d.as_millis() as u64),
            "max_ms": lat.last().map(|d| d.as_millis() as u64),
            "rss_idle": rss_json(&idle),
            "rss_with_pods": with_pods.as_ref().map(rss_json),
            "rss_pods": rss_at,
        })
    );
    drop(procs);
    Ok(())
}

/// Waits until every pod created so far has been seen Running.
async fn wait_all_running(
    running: &Arc<Mutex<HashMap<String, Instant>>>,
    sent: &HashMap<String, Instant>,
    logs: &dyn Fn() -> String,
) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let missing = {
            let seen = running.lock().unwrap_or_else(|e| e.into_inner());
            sent.keys().filter(|n| !seen.contains_key(*n)).count()
        };
        if missing == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{missing} pods never Running\n{}", logs());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
