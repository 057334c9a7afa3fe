//! The runtime manager against a real containerd (needs root, containerd,
//! runc and busybox-static; skipped otherwise): a host-network pod with an
//! init container and a main container runs, reports Running/Ready, stops
//! within its grace period and leaves no sandbox behind.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};
use kelson_cri::containerd::{Containerd, ContainerdOptions};
use kelson_cri::{image, import, pause, Cri, PAUSE_IMAGE};
use kelson_kubelet::resources::CgroupDriver;
use kelson_kubelet::runtime::{
    CriRuntime, PodRuntimeStatus, ProbeState, RuntimeConfig, RuntimeManager, SyncContext,
};
use kelson_kubelet::sources::PodSources;
use kelson_kubelet::volume_manager::PodVolumes;

const BUSYBOX: &str = "kelson.dev/rt-busybox:1";
const UID: &str = "kelson-rt-test-uid";

struct NoProbes;
impl ProbeState for NoProbes {
    fn ready(&self, _: &str, _: &str) -> Option<bool> {
        None
    }
    fn started(&self, _: &str, _: &str) -> Option<bool> {
        None
    }
}

fn usable() -> bool {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root");
        return false;
    }
    let found = std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("containerd").exists()));
    if !found {
        eprintln!("skipped: containerd not installed");
    }
    found
}

fn hierarchies() -> Vec<PathBuf> {
    let root = Path::new("/sys/fs/cgroup");
    let mut out: Vec<PathBuf> = std::fs::read_dir(root)
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default();
    if root.join("cgroup.controllers").exists() {
        out.push(root.to_path_buf());
    }
    out
}

/// Directories under `dir`, deepest first.
fn subdirs(dir: &Path, out: &mut Vec<PathBuf>) {
    if let Ok(d) = std::fs::read_dir(dir) {
        for e in d.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                subdirs(&e.path(), out);
            }
        }
    }
    out.push(dir.to_path_buf());
}

fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut out: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(PathBuf::from)
        .filter(|m| m.starts_with(dir))
        .collect();
    out.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
    out
}

/// Tears down everything on drop, also after a failed assertion.
struct Guard {
    rt: tokio::runtime::Runtime,
    dir: Option<tempfile::TempDir>,
    containerd: Option<Containerd>,
    cgroup_root: String,
    /// Container and sandbox ids seen (their cgroups and runc state).
    ids: Arc<parking_lot::Mutex<HashSet<String>>>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(c) = self.containerd.as_ref() {
            let socket = c.socket().to_path_buf();
            let _ = self.rt.block_on(async {
                tokio::time::timeout(Duration::from_secs(60), async {
                    let Ok(cri) = Cri::connect(&socket).await else {
                        return;
                    };
                    for c in cri.list_containers().await.unwrap_or_default() {
                        let _ = cri.stop_container(&c.id, 1).await;
                        let _ = cri.remove_container(&c.id).await;
                    }
                    for s in cri.list_pod_sandboxes().await.unwrap_or_default() {
                        let _ = cri.stop_pod_sandbox(&s.id).await;
                        let _ = cri.remove_pod_sandbox(&s.id).await;
                    }
                })
                .await
            });
        }
        if let Some(mut c) = self.containerd.take() {
            let _ = self.rt.block_on(c.stop());
        }
        // Shims exit once their containers are gone; give them a moment.
        std::thread::sleep(Duration::from_millis(500));
        let ids = self.ids.lock().clone();
        for h in hierarchies() {
            let mut dirs = Vec::new();
            subdirs(&h.join(self.cgroup_root.trim_start_matches('/')), &mut dirs);
            for id in &ids {
                subdirs(&h.join("k8s.io").join(id), &mut dirs);
            }
            for d in dirs {
                let _ = std::fs::remove_dir(d);
            }
        }
        for id in &ids {
            let _ = std::fs::remove_dir_all(Path::new("/run/containerd/runc/k8s.io").join(id));
        }
        if let Some(dir) = self.dir.take() {
            for m in mounts_under(dir.path()) {
                let _ = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH);
            }
            let _ = dir.close();
        }
    }
}

fn container(name: &str, script: &str) -> Container {
    Container {
        name: name.into(),
        image: Some(BUSYBOX.into()),
        image_pull_policy: Some("Never".into()),
        command: Some(vec!["sh".into(), "-c".into(), script.into()]),
        ..Default::default()
    }
}

fn test_pod() -> Pod {
    let mut p = Pod::default();
    p.metadata.name = Some("rt-test".into());
    p.metadata.namespace = Some("default".into());
    p.metadata.uid = Some(UID.into());
    p.spec = Some(PodSpec {
        host_network: Some(true),
        init_containers: Some(vec![container("init", "echo init done")]),
        containers: vec![container("main", "sleep 300")],
        restart_policy: Some("Always".into()),
        termination_grace_period_seconds: Some(3),
        ..Default::default()
    });
    p
}

#[test]
fn pod_runs_reports_ready_stops_and_is_removed() {
    if !usable() {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::Builder::new()
        .prefix("krt")
        .tempdir_in("/tmp")
        .expect("tempdir");
    let path = dir.path().to_path_buf();
    let mut guard = Guard {
        rt,
        dir: Some(dir),
        containerd: None,
        cgroup_root: format!("/kelson-rt-test-{}", std::process::id()),
        ids: Arc::default(),
    };
    let containerd = guard
        .rt
        .block_on(Containerd::start(ContainerdOptions::new(&path)))
        .expect("containerd starts");
    let socket = containerd.socket().to_path_buf();
    guard.containerd = Some(containerd);
    let ids = guard.ids.clone();
    let cgroup_root = guard.cgroup_root.clone();

    guard.rt.block_on(async move {
        let images = path.join("images");
        std::fs::create_dir_all(&images).unwrap();
        std::fs::write(images.join("pause.tar"), pause::image_tarball().unwrap()).unwrap();
        std::fs::write(
            images.join("busybox.tar"),
            image::busybox_image(BUSYBOX).unwrap(),
        )
        .unwrap();
        import::import_all(&socket, &images).await.expect("import");
        let cri = Arc::new(Cri::connect(&socket).await.expect("connect"));
        for name in [PAUSE_IMAGE, BUSYBOX] {
            let deadline = Instant::now() + Duration::from_secs(15);
            while cri
                .image_status(name)
                .await
                .expect("image status")
                .is_none()
            {
                assert!(Instant::now() < deadline, "{name} never visible to the CRI");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        // Events go nowhere: no API server in this test.
        let client =
            kube::Client::try_from(kube::Config::new("http://127.0.0.1:9".parse().unwrap()))
                .unwrap();
        let recorder = kelson_runtime::Recorder::new(client, "kubelet", "node-1");
        let rm = RuntimeManager::new(
            cri.clone(),
            RuntimeConfig {
                node_name: "node-1".into(),
                root_dir: path.join("kubelet"),
                pod_logs_dir: path.join("logs"),
                cgroup_driver: CgroupDriver::Cgroupfs,
                cgroup_root,
                pause_image: PAUSE_IMAGE.into(),
                cluster_dns: vec![],
                cluster_domain: "cluster.local".into(),
            },
            recorder,
        );
        rm.set_node_ip("127.0.0.1");
        let pod = test_pod();
        let sources = PodSources::from_objects("default", vec![], vec![], vec![], vec![]);
        let volumes = PodVolumes::default();
        let alloc = kelson_kubelet::env::NodeAllocatable::default();
        let unhealthy = HashSet::new();
        let current = |m: std::collections::HashMap<String, PodRuntimeStatus>| {
            m.get(UID).cloned().unwrap_or_default()
        };

        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            let st = current(rm.relist().await.expect("relist"));
            for c in &st.containers {
                ids.lock().insert(c.id.clone());
            }
            for s in &st.sandboxes {
                ids.lock().insert(s.id.clone());
            }
            let api = rm.api_status(&pod, &st, &NoProbes, "127.0.0.1");
            let ready = api
                .conditions
                .iter()
                .flatten()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            if api.phase.as_deref() == Some("Running") && ready {
                break (st, api);
            }
            assert!(Instant::now() < deadline, "pod never got ready: {api:?}");
            let ctx = SyncContext {
                sources: &sources,
                volumes: &volumes,
                node_allocatable: &alloc,
                unhealthy: &unhealthy,
            };
            let r = rm.sync_pod(&pod, &st, &ctx).await;
            assert!(r.errors.is_empty(), "{:?}", r.errors);
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let (st, api) = status;
        let init = &api.init_container_statuses.as_ref().unwrap()[0];
        let t = init.state.as_ref().unwrap().terminated.as_ref().unwrap();
        assert_eq!((t.exit_code, t.reason.as_deref()), (0, Some("Completed")));
        assert_eq!(api.pod_ip.as_deref(), Some("127.0.0.1"));
        let main = &api.container_statuses.as_ref().unwrap()[0];
        assert!(
            main.ready
                && main
                    .container_id
                    .as_deref()
                    .unwrap()
                    .starts_with("containerd://")
        );
        // The init container's log is where upstream puts it.
        let log = path
            .join("logs")
            .join(format!("default_rt-test_{UID}"))
            .join("init")
            .join("0.log");
        assert!(std::fs::read_to_string(&log).unwrap().contains("init done"));

        // `sleep` as PID 1 ignores SIGTERM: SIGKILL after the 3 s grace.
        let t0 = Instant::now();
        rm.kill_pod(Some(&pod), &st, None).await.expect("kill");
        let took = t0.elapsed();
        assert!(took < Duration::from_secs(8), "stop took {took:?}");
        let st = current(rm.relist().await.unwrap());
        assert!(st.containers.iter().all(|c| !c.is_running()));
        assert!(st.sandboxes.iter().all(|s| !s.ready));
        rm.remove_pod(&st).await.expect("remove");
        let left = rm.relist().await.unwrap();
        assert!(!left.contains_key(UID), "{:?}", left.get(UID));
        assert!(cri.list_pod_sandboxes().await.unwrap().is_empty());
        assert!(!path
            .join("logs")
            .join(format!("default_rt-test_{UID}"))
            .exists());
    });
    drop(guard);
}
