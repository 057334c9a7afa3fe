//! End to end against a real containerd (needs root, containerd, runc, ctr
//! and busybox-static): start containerd in a temp data dir, import the pause
//! and busybox images, run a host-network pod with one container that prints
//! "hello", tear everything down and check nothing is left behind.

use kelson_cri::api::{
    ContainerConfig, ContainerMetadata, ContainerState, ContainerStatusRequest,
    CreateContainerRequest, Image, ImageSpec, ImageStatusRequest, LinuxContainerConfig,
    LinuxContainerSecurityContext, LinuxPodSandboxConfig, LinuxSandboxSecurityContext,
    NamespaceMode, NamespaceOption, PodSandboxConfig, PodSandboxMetadata, PodSandboxStatusRequest,
    RemoveContainerRequest, RemovePodSandboxRequest, RunPodSandboxRequest, StartContainerRequest,
    StopContainerRequest, StopPodSandboxRequest,
};
use kelson_cri::containerd::{Containerd, ContainerdOptions};
use kelson_cri::{image, import, pause, Cri, PAUSE_IMAGE};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const CGROUP_ROOT: &str = "/sys/fs/cgroup";
const BUSYBOX: &str = "kelson.dev/e2e-busybox:1";

/// Whether the test can run; says why not when it cannot.
fn runs_as_root() -> bool {
    let root = nix::unistd::geteuid().is_root();
    if !root {
        eprintln!("skipped: needs root (containerd, runc, cgroups)");
    }
    root
}

/// Everything the test created, torn down on drop (also after a failed
/// assertion). Owns the runtime so cleanup can make CRI calls from `Drop`.
struct Guard {
    rt: tokio::runtime::Runtime,
    dir: Option<tempfile::TempDir>,
    containerd: Option<Containerd>,
    socket: PathBuf,
    /// Shared with the scenario so a failed assertion still leaves the ids
    /// for cleanup.
    recorded: Arc<Mutex<Recorded>>,
    /// Whether `/sys/fs/cgroup/<h>/k8s.io` and `/run/containerd` existed
    /// before: only what we created is removed.
    preexisting_k8s_cgroup: Vec<PathBuf>,
    preexisting_run_containerd: bool,
    /// Helpers the test started (a registry); killed by PID in cleanup.
    children: Vec<std::process::Child>,
    /// Shim sockets under /run/containerd/s before the test.
    preexisting_shim_sockets: Vec<PathBuf>,
    cleaned: bool,
}

fn hierarchies() -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(CGROUP_ROOT) {
        for e in entries.flatten() {
            let p = e.path();
            // Skip the symlinks (cpu,cpuacct → cpu) to visit each once.
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                out.push(p);
            }
        }
    }
    // A pure cgroup v2 host: the root itself is the hierarchy.
    if Path::new(CGROUP_ROOT).join("cgroup.controllers").exists() {
        out.push(PathBuf::from(CGROUP_ROOT));
    }
    out
}

/// Cgroup dirs named after one of `ids` (searched a few levels deep, the CRI
/// puts them at `/k8s.io/<id>`).
fn cgroup_dirs(ids: &[String]) -> Vec<PathBuf> {
    fn walk(dir: &Path, depth: usize, ids: &[String], out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            if !e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                continue;
            }
            let p = e.path();
            if ids.iter().any(|id| e.file_name() == id.as_str()) {
                out.push(p.clone());
            }
            if depth > 1 {
                walk(&p, depth - 1, ids, out);
            }
        }
    }
    let mut out = Vec::new();
    if ids.is_empty() {
        return out;
    }
    for h in hierarchies() {
        walk(&h, 3, ids, &mut out);
    }
    out
}

/// `(pid, argv)` of every process.
fn processes() -> Vec<(i32, Vec<String>)> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(raw) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let argv = raw
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        out.push((pid, argv));
    }
    out
}

fn alive(pid: i32) -> bool {
    // A zombie still has a /proc entry but is gone for our purposes.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z')),
        Err(_) => false,
    }
}

/// Socket files the shims listen on.
fn shim_sockets() -> Vec<PathBuf> {
    std::fs::read_dir("/run/containerd/s")
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

/// The e2e tests share /run/containerd and the /k8s.io cgroups: one at a
/// time.
static SERIAL: Mutex<()> = Mutex::new(());

/// Mount points at or under `dir`, deepest first.
fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut out: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| PathBuf::from(m.replace("\\040", " ")))
        .filter(|m| m.starts_with(dir))
        .collect();
    out.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
    out.dedup();
    out
}

/// Removes `dir` and everything under it that is an empty directory
/// (bottom-up); leaves anything holding files.
fn remove_empty_dirs(dir: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    let mut empty = true;
    for e in entries.flatten() {
        let is_dir = e.file_type().map(|t| t.is_dir()).unwrap_or(false);
        if !(is_dir && remove_empty_dirs(&e.path())) {
            empty = false;
        }
    }
    empty && std::fs::remove_dir(dir).is_ok()
}

impl Guard {
    fn new() -> Guard {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let preexisting_k8s_cgroup = hierarchies()
            .into_iter()
            .map(|h| h.join("k8s.io"))
            .filter(|p| p.exists())
            .collect();
        Guard {
            rt,
            // Short path: keeps the socket inside the data dir.
            dir: Some(
                tempfile::Builder::new()
                    .prefix("kcri")
                    .tempdir_in("/tmp")
                    .expect("tempdir"),
            ),
            containerd: None,
            socket: PathBuf::new(),
            recorded: Arc::default(),
            preexisting_k8s_cgroup,
            preexisting_run_containerd: Path::new("/run/containerd").exists(),
            children: Vec::new(),
            preexisting_shim_sockets: shim_sockets(),
            cleaned: false,
        }
    }

    /// Starts containerd in the temp dir, owned by the guard; its PID.
    fn start_containerd(&mut self) -> i32 {
        let containerd = self
            .rt
            .block_on(Containerd::start(ContainerdOptions::new(self.dir())))
            .expect("containerd starts");
        let pid = containerd.pid().expect("pid") as i32;
        self.socket = containerd.socket().to_path_buf();
        self.containerd = Some(containerd);
        pid
    }

    fn dir(&self) -> PathBuf {
        self.dir
            .as_ref()
            .map(|d| d.path().to_path_buf())
            .unwrap_or_default()
    }

    fn recorded(&self) -> Recorded {
        self.recorded.lock().map(|r| r.clone()).unwrap_or_default()
    }

    fn ids(&self) -> Vec<String> {
        let r = self.recorded();
        r.sandboxes.iter().chain(&r.containers).cloned().collect()
    }

    /// Processes that belong to this test: shims for our ids or on our
    /// socket, anything started with our temp dir on its command line, and
    /// the pause/container PIDs we saw.
    fn our_processes(&self) -> Vec<(i32, Vec<String>)> {
        let dir = self.dir().to_string_lossy().into_owned();
        let socket = self.socket.to_string_lossy().into_owned();
        let ids = self.ids();
        let pids = self.recorded().pids;
        processes()
            .into_iter()
            .filter(|(pid, argv)| {
                let me = *pid == std::process::id() as i32;
                let shim_of_ours = argv.first().is_some_and(|a| a.contains("containerd-shim"))
                    && (argv.iter().any(|a| ids.contains(a))
                        || (!socket.is_empty() && argv.contains(&socket)));
                let mentions_dir = !dir.is_empty() && argv.iter().any(|a| a.contains(&dir));
                let seen = pids.contains(pid);
                !me && (shim_of_ours || mentions_dir || seen) && alive(*pid)
            })
            .collect()
    }

    /// Idempotent teardown; the test calls it, `Drop` calls it again after a
    /// failure.
    fn cleanup(&mut self) {
        if self.cleaned {
            return;
        }
        self.cleaned = true;
        // 1. Through the CRI while containerd is up: stop and remove what
        //    the test created, so the shims exit and unmount on their own.
        let mut graceful = false;
        if self.containerd.is_some() {
            let socket = self.socket.clone();
            let Recorded {
                containers,
                sandboxes,
                ..
            } = self.recorded();
            graceful = self
                .rt
                // The timer must be created inside the runtime.
                .block_on(async move {
                    tokio::time::timeout(Duration::from_secs(60), async move {
                        let Ok(mut cri) = Cri::connect(&socket).await else {
                            return false;
                        };
                        let mut ok = true;
                        for id in containers.iter().rev() {
                            ok &= cri
                                .runtime()
                                .stop_container(StopContainerRequest {
                                    container_id: id.clone(),
                                    timeout: 2,
                                })
                                .await
                                .is_ok();
                            ok &= cri
                                .runtime()
                                .remove_container(RemoveContainerRequest {
                                    container_id: id.clone(),
                                })
                                .await
                                .is_ok();
                        }
                        for id in sandboxes.iter().rev() {
                            ok &= cri
                                .runtime()
                                .stop_pod_sandbox(StopPodSandboxRequest {
                                    pod_sandbox_id: id.clone(),
                                })
                                .await
                                .is_ok();
                            ok &= cri
                                .runtime()
                                .remove_pod_sandbox(RemovePodSandboxRequest {
                                    pod_sandbox_id: id.clone(),
                                })
                                .await
                                .is_ok();
                        }
                        ok
                    })
                    .await
                    .unwrap_or(false)
                });
        }
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        // 2. containerd itself.
        if let Some(mut c) = self.containerd.take() {
            let _ = self.rt.block_on(c.stop());
        }
        // 3. Stragglers (shims, container processes): after an orderly
        //    teardown give the shims a moment to exit, then SIGKILL by PID.
        //    Also anything still in our cgroups.
        let grace = if graceful { 10 } else { 1 };
        let deadline = Instant::now() + Duration::from_secs(grace);
        while !self.our_processes().is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        let mut victims: Vec<i32> = self.our_processes().into_iter().map(|(p, _)| p).collect();
        for cg in cgroup_dirs(&self.ids()) {
            if let Ok(procs) = std::fs::read_to_string(cg.join("cgroup.procs")) {
                victims.extend(procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
            }
        }
        victims.sort_unstable();
        victims.dedup();
        victims.retain(|pid| *pid > 1 && *pid != std::process::id() as i32);
        for &pid in &victims {
            {
                eprintln!("cleanup: killing leftover pid {pid}");
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        // SIGKILL takes a moment (a PID namespace's init takes its
        // namespace down with it).
        let deadline = Instant::now() + Duration::from_secs(5);
        while victims.iter().any(|p| alive(*p)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        // 4. Cgroups: the CRI leaves /k8s.io/<id> behind in every v1
        //    hierarchy. rmdir only works once they are empty, so retry.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let left = cgroup_dirs(&self.ids());
            // Children before parents.
            let mut left_sorted = left.clone();
            left_sorted.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
            for cg in &left_sorted {
                let _ = std::fs::remove_dir(cg);
            }
            if cgroup_dirs(&self.ids()).is_empty() || Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        for h in hierarchies() {
            let parent = h.join("k8s.io");
            if !self.preexisting_k8s_cgroup.contains(&parent) {
                // Fails (harmlessly) if someone else has cgroups in it.
                let _ = std::fs::remove_dir(&parent);
            }
        }
        // 5. Mounts under the temp dir (sandbox shm, container rootfs).
        let dir = self.dir();
        if !dir.as_os_str().is_empty() {
            for m in mounts_under(&dir) {
                eprintln!("cleanup: unmounting {}", m.display());
                let _ = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH);
            }
        }
        // 6. What the shims keep under /run/containerd: runc state for our
        //    ids, sockets of shims that were killed (new since the test
        //    started, nobody listening), then the directories if we created
        //    them and they are empty.
        for id in self.ids() {
            let _ = std::fs::remove_dir_all(Path::new("/run/containerd/runc/k8s.io").join(&id));
        }
        for sock in shim_sockets() {
            if !self.preexisting_shim_sockets.contains(&sock)
                && std::os::unix::net::UnixStream::connect(&sock).is_err()
            {
                let _ = std::fs::remove_file(&sock);
            }
        }
        if !self.preexisting_run_containerd {
            remove_empty_dirs(Path::new("/run/containerd"));
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.cleanup();
        // TempDir removes the files once nothing is mounted there.
        if let Some(dir) = self.dir.take() {
            let path = dir.path().to_path_buf();
            if let Err(e) = dir.close() {
                eprintln!("cleanup: removing {}: {e}", path.display());
            }
        }
    }
}

fn namespaces() -> NamespaceOption {
    NamespaceOption {
        network: NamespaceMode::Node as i32,
        pid: NamespaceMode::Pod as i32,
        ipc: NamespaceMode::Pod as i32,
        ..Default::default()
    }
}

type TestResult<T> = Result<T, Box<dyn std::error::Error>>;

/// The CRI's view of an image, `None` while it does not know it.
async fn image_status(cri: &mut Cri, image: &str) -> TestResult<Option<Image>> {
    let status = cri
        .images()
        .image_status(ImageStatusRequest {
            image: Some(ImageSpec {
                image: image.to_string(),
                ..Default::default()
            }),
            verbose: false,
        })
        .await?
        .into_inner();
    Ok(status.image)
}

/// A running pod with one container.
struct PodRun {
    cri: Cri,
    sandbox: String,
    container: String,
    logs: PathBuf,
    run_sandbox: Duration,
    create_start: Duration,
}

/// Imports the images, runs a host-network pod and starts one busybox
/// container with `command`; records ids and PIDs as it creates things.
async fn run_pod(
    dir: &Path,
    socket: &Path,
    recorded: &Mutex<Recorded>,
    command: &str,
) -> TestResult<PodRun> {
    // --- images ---
    let images_dir = dir.join("images");
    std::fs::create_dir_all(&images_dir)?;
    std::fs::write(images_dir.join("pause.tar"), pause::image_tarball()?)?;
    std::fs::write(
        images_dir.join("busybox.tar"),
        image::busybox_image(BUSYBOX)?,
    )?;
    let names = import::import_all(socket, &images_dir).await?;
    assert!(names.iter().any(|n| n == PAUSE_IMAGE), "{names:?}");
    assert!(names.iter().any(|n| n == BUSYBOX), "{names:?}");

    let mut cri = Cri::connect(socket).await?;
    // The CRI plugin learns about imported images from events.
    for name in [PAUSE_IMAGE, BUSYBOX] {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if image_status(&mut cri, name).await?.is_some() {
                break;
            }
            assert!(Instant::now() < deadline, "{name} never visible to the CRI");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    // --- sandbox ---
    let logs = dir.join("logs");
    std::fs::create_dir_all(&logs)?;
    let sandbox_config = PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: "e2e".into(),
            uid: format!("kelson-cri-e2e-{}", std::process::id()),
            namespace: "default".into(),
            attempt: 0,
        }),
        // No hostname: with the node's network the pod shares the node's
        // UTS namespace too, and runc refuses to set a hostname there.
        log_directory: logs.to_string_lossy().into_owned(),
        linux: Some(LinuxPodSandboxConfig {
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(namespaces()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let t = Instant::now();
    let sandbox = cri
        .runtime()
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(sandbox_config.clone()),
            runtime_handler: String::new(),
        })
        .await?
        .into_inner()
        .pod_sandbox_id;
    let run_sandbox = t.elapsed();
    record(recorded, |r| r.sandboxes.push(sandbox.clone()));
    let status = cri
        .runtime()
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: sandbox.clone(),
            verbose: true,
        })
        .await?
        .into_inner();
    if let Some(pid) = info_pid(&status.info) {
        record(recorded, |r| r.pids.push(pid));
    }

    // --- container ---
    let t = Instant::now();
    let container = cri
        .runtime()
        .create_container(CreateContainerRequest {
            pod_sandbox_id: sandbox.clone(),
            config: Some(ContainerConfig {
                metadata: Some(ContainerMetadata {
                    name: "hello".into(),
                    attempt: 0,
                }),
                image: Some(ImageSpec {
                    image: BUSYBOX.into(),
                    ..Default::default()
                }),
                command: vec!["sh".into(), "-c".into(), command.into()],
                log_path: "hello_0.log".into(),
                linux: Some(LinuxContainerConfig {
                    security_context: Some(LinuxContainerSecurityContext {
                        namespace_options: Some(namespaces()),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            sandbox_config: Some(sandbox_config),
        })
        .await?
        .into_inner()
        .container_id;
    record(recorded, |r| r.containers.push(container.clone()));
    cri.runtime()
        .start_container(StartContainerRequest {
            container_id: container.clone(),
        })
        .await?;
    let create_start = t.elapsed();
    // Both live in /k8s.io/<id> cgroups (cgroupfs driver, no parent given).
    let cgroups = cgroup_dirs(&[sandbox.clone(), container.clone()]);
    for id in [&sandbox, &container] {
        assert!(
            cgroups
                .iter()
                .any(|p| p.ends_with(Path::new("k8s.io").join(id))),
            "no /k8s.io/{id} cgroup: {cgroups:?}"
        );
    }

    Ok(PodRun {
        cri,
        sandbox,
        container,
        logs,
        run_sandbox,
        create_start,
    })
}

/// The main scenario: a container that prints "hello" and exits 0, then an
/// orderly teardown through the CRI.
async fn scenario(
    dir: PathBuf,
    socket: PathBuf,
    recorded: Arc<Mutex<Recorded>>,
) -> TestResult<(Duration, Duration)> {
    let PodRun {
        mut cri,
        sandbox,
        container,
        logs,
        run_sandbox,
        create_start,
    } = run_pod(&dir, &socket, &recorded, "echo hello; sleep 1").await?;

    // --- wait for exit ---
    let deadline = Instant::now() + Duration::from_secs(30);
    let exited = loop {
        let resp = cri
            .runtime()
            .container_status(ContainerStatusRequest {
                container_id: container.clone(),
                verbose: true,
            })
            .await?
            .into_inner();
        if let Some(pid) = info_pid(&resp.info) {
            record(&recorded, |r| {
                if !r.pids.contains(&pid) {
                    r.pids.push(pid)
                }
            });
        }
        let st = resp.status.ok_or("no container status")?;
        if st.state == ContainerState::ContainerExited as i32 {
            break st;
        }
        assert!(Instant::now() < deadline, "container never exited: {st:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(exited.exit_code, 0, "{exited:?}");
    let log = std::fs::read_to_string(logs.join("hello_0.log"))?;
    assert!(
        log.lines().any(|l| l.ends_with(" stdout F hello")),
        "log: {log:?}"
    );

    // --- teardown through the CRI ---
    cri.runtime()
        .stop_container(StopContainerRequest {
            container_id: container.clone(),
            timeout: 5,
        })
        .await?;
    cri.runtime()
        .remove_container(RemoveContainerRequest {
            container_id: container,
        })
        .await?;
    cri.runtime()
        .stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: sandbox.clone(),
        })
        .await?;
    cri.runtime()
        .remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: sandbox,
        })
        .await?;
    Ok((run_sandbox, create_start))
}

/// The `pid` in the verbose `info` JSON of a sandbox or container status.
fn info_pid(info: &std::collections::HashMap<String, String>) -> Option<i32> {
    let v: serde_json::Value = serde_json::from_str(info.get("info")?).ok()?;
    v["pid"]
        .as_i64()
        .and_then(|p| i32::try_from(p).ok())
        .filter(|p| *p > 0)
}

/// Nothing of the pods' cgroups nor mounts under the temp dir remains.
fn assert_no_cgroups_or_mounts(ids: &[String], dir: &Path) {
    let left = cgroup_dirs(ids);
    assert!(left.is_empty(), "cgroups left: {left:?}");
    let mounts = mounts_under(dir);
    assert!(mounts.is_empty(), "mounts left: {mounts:?}");
}

/// What the scenario created, in creation order.
#[derive(Default, Clone, Debug)]
struct Recorded {
    sandboxes: Vec<String>,
    containers: Vec<String>,
    /// Pause and container PIDs seen while running.
    pids: Vec<i32>,
}

fn record(recorded: &Mutex<Recorded>, f: impl FnOnce(&mut Recorded)) {
    if let Ok(mut r) = recorded.lock() {
        f(&mut r);
    }
}

#[test]
fn pod_with_a_container_runs_and_leaves_nothing_behind() {
    if !runs_as_root() {
        return;
    }
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "kelson_cri=info".into()),
        )
        .with_test_writer()
        .try_init();
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut guard = Guard::new();
    let dir = guard.dir();
    let containerd_pid = guard.start_containerd();
    assert!(guard.socket.starts_with(&dir), "{:?}", guard.socket);

    let result = guard.rt.block_on(scenario(
        dir.clone(),
        guard.socket.clone(),
        guard.recorded.clone(),
    ));
    let (run_sandbox, create_start) = result.expect("scenario");
    eprintln!("RunPodSandbox: {run_sandbox:?}; CreateContainer+StartContainer: {create_start:?}");
    let recorded = guard.recorded();
    assert_eq!(recorded.sandboxes.len(), 1);
    assert_eq!(recorded.containers.len(), 1);
    assert!(
        recorded.pids.len() >= 2,
        "pause and container pids: {:?}",
        recorded.pids
    );

    // Orderly stop of containerd, then: the shims exit on their own once
    // their sandbox is removed.
    let mut containerd = guard.containerd.take().expect("containerd");
    guard
        .rt
        .block_on(containerd.stop())
        .expect("containerd stops");
    assert!(!alive(containerd_pid), "containerd still running");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !guard.our_processes().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let left = guard.our_processes();
    assert!(left.is_empty(), "processes left after teardown: {left:?}");

    // The test removes whatever cgroups the CRI left (it leaves them when
    // containerd goes away before the pods), then checks.
    let ids = guard.ids();
    guard.cleanup();
    assert_no_cgroups_or_mounts(&ids, &dir);
    for pid in &recorded.pids {
        assert!(!alive(*pid), "pid {pid} still alive");
    }
    drop(guard);
    assert!(!dir.exists(), "temp dir left: {}", dir.display());
}

/// The guard's own cleanup, in the case the brief worries about: containerd
/// killed while a pod runs (shims, containers, mounts and cgroups stay), then
/// a failing assertion. Dropping the guard must leave nothing behind.
#[test]
fn guard_cleans_up_after_containerd_is_killed_mid_test() {
    if !runs_as_root() {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut guard = Guard::new();
    let dir = guard.dir();
    let containerd_pid = guard.start_containerd();
    let run = guard
        .rt
        .block_on(run_pod(&dir, &guard.socket, &guard.recorded, "sleep 300"))
        .expect("pod runs");
    drop(run);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(containerd_pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill containerd");
    let recorded = guard.recorded();
    let ids = guard.ids();
    assert!(!cgroup_dirs(&ids).is_empty(), "pod cgroups exist");
    assert!(!mounts_under(&dir).is_empty(), "rootfs and shm are mounted");
    assert!(
        !guard.our_processes().is_empty(),
        "shims and containers outlive containerd"
    );

    // A failing test: the guard is dropped while unwinding.
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        let _guard = guard;
        panic!("simulated assertion failure");
    }));
    assert!(outcome.is_err());

    for pid in recorded.pids.iter().chain([&containerd_pid]) {
        assert!(!alive(*pid), "pid {pid} still alive");
    }
    assert_no_cgroups_or_mounts(&ids, &dir);
    assert!(!dir.exists(), "temp dir left: {}", dir.display());
    for id in &ids {
        assert!(!Path::new("/run/containerd/runc/k8s.io").join(id).exists());
    }
}

/// The generated registry config lets the CRI pull over plain HTTP from a
/// registry on 127.0.0.1 (Debian's docker-registry, pushed to with skopeo).
#[test]
fn pulls_over_plain_http_from_a_loopback_registry() {
    if !runs_as_root() {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut guard = Guard::new();
    let dir = guard.dir();

    // A registry on a free loopback port.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let registry_dir = dir.join("registry");
    std::fs::create_dir_all(&registry_dir).expect("mkdir");
    let config = registry_dir.join("config.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
            registry_dir.join("data").display()
        ),
    )
    .expect("registry config");
    let registry = std::process::Command::new("docker-registry")
        .arg("serve")
        .arg(&config)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(registry_dir.join("log")).expect("log"))
        .spawn()
        .expect("docker-registry (Debian package docker-registry)");
    guard.children.push(registry);
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "registry did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }

    // Push the busybox image over HTTP.
    let archive = dir.join("busybox.tar");
    std::fs::write(&archive, image::busybox_image(BUSYBOX).expect("image")).expect("write");
    let reference = format!("127.0.0.1:{port}/e2e/busybox:1");
    let out = std::process::Command::new("skopeo")
        .args(["copy", "--quiet", "--dest-tls-verify=false"])
        .arg(format!("oci-archive:{}", archive.display()))
        .arg(format!("docker://{reference}"))
        .output()
        .expect("skopeo");
    assert!(
        out.status.success(),
        "skopeo: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    guard.start_containerd();
    let socket = guard.socket.clone();
    let pulled = guard
        .rt
        .block_on(async {
            let mut cri = Cri::connect(&socket).await?;
            let resp = cri
                .images()
                .pull_image(kelson_cri::api::PullImageRequest {
                    image: Some(ImageSpec {
                        image: reference.clone(),
                        ..Default::default()
                    }),
                    ..Default::default()
                })
                .await?
                .into_inner();
            let image = image_status(&mut cri, &reference).await?;
            Ok::<_, Box<dyn std::error::Error>>((resp.image_ref, image))
        })
        .expect("pull over plain HTTP");
    let (image_ref, image) = pulled;
    assert!(image_ref.starts_with("sha256:"), "{image_ref}");
    let image = image.expect("pulled image is visible");
    assert!(
        image.repo_tags.contains(&reference),
        "{:?}",
        image.repo_tags
    );
    drop(guard);
    assert!(!dir.exists(), "temp dir left: {}", dir.display());
}
