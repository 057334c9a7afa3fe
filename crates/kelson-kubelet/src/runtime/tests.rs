//! SyncPod / status tests against the in-memory runtime.

use std::collections::HashSet;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{
    Container, ExecAction, Lifecycle, LifecycleHandler, Pod, PodSecurityContext, PodSpec,
};
use kelson_runtime::EventType;
use parking_lot::Mutex;

use super::fake::FakeCri;
use super::*;
use crate::sources::PodSources;
use crate::volume_manager::PodVolumes;

const S: i64 = 1_000_000_000;

#[derive(Default)]
struct Events(Mutex<Vec<(String, String)>>);

impl EventSink for Events {
    fn event(&self, _: &Pod, _: Option<String>, _: EventType, reason: &str, message: String) {
        self.0.lock().push((reason.to_string(), message));
    }
}

struct Probes {
    ready: Option<bool>,
}

impl ProbeState for Probes {
    fn ready(&self, _: &str, _: &str) -> Option<bool> {
        self.ready
    }
    fn started(&self, _: &str, _: &str) -> Option<bool> {
        None
    }
}

struct Env {
    cri: Arc<FakeCri>,
    rm: RuntimeManager,
    events: Arc<Events>,
    clock: Arc<AtomicI64>,
    _tmp: tempfile::TempDir,
}

fn env_with(cri: FakeCri) -> Env {
    let tmp = tempfile::tempdir().unwrap();
    let cri = Arc::new(cri);
    let events = Arc::new(Events::default());
    let clock = Arc::new(AtomicI64::new(1_000 * S));
    cri.set_now(1_000 * S);
    let c2 = clock.clone();
    let rm = RuntimeManager::build(
        cri.clone(),
        RuntimeConfig {
            node_name: "n1".into(),
            root_dir: tmp.path().join("kubelet"),
            pod_logs_dir: tmp.path().join("logs"),
            cgroup_driver: crate::resources::CgroupDriver::Cgroupfs,
            cgroup_root: "/kubepods".into(),
            pause_image: "pause".into(),
            cluster_dns: vec!["10.43.0.10".into()],
            cluster_domain: "cluster.local".into(),
        },
        events.clone(),
        Arc::new(move || c2.load(Ordering::SeqCst)),
        HostDns::default(),
    );
    rm.set_node_ip("192.168.1.5");
    Env {
        cri,
        rm,
        events,
        clock,
        _tmp: tmp,
    }
}

fn container(name: &str) -> Container {
    Container {
        name: name.into(),
        image: Some("busybox:1".into()),
        image_pull_policy: Some("IfNotPresent".into()),
        ..Default::default()
    }
}

fn pod(init: Vec<Container>, containers: Vec<Container>, policy: &str) -> Pod {
    let mut p = Pod::default();
    p.metadata.name = Some("web".into());
    p.metadata.namespace = Some("default".into());
    p.metadata.uid = Some("uid-1".into());
    p.spec = Some(PodSpec {
        init_containers: (!init.is_empty()).then_some(init),
        containers,
        restart_policy: Some(policy.into()),
        termination_grace_period_seconds: Some(30),
        ..Default::default()
    });
    p
}

impl Env {
    async fn status(&self) -> PodRuntimeStatus {
        self.rm
            .relist()
            .await
            .unwrap()
            .remove("uid-1")
            .unwrap_or_default()
    }

    async fn sync(&self, pod: &Pod, unhealthy: &[&str]) -> SyncResult {
        let st = self.status().await;
        let sources = PodSources::from_objects("default", vec![], vec![], vec![], vec![]);
        let volumes = PodVolumes::default();
        let unhealthy: HashSet<String> = unhealthy.iter().map(|s| s.to_string()).collect();
        let ctx = SyncContext {
            sources: &sources,
            volumes: &volumes,
            node_allocatable: &env::NodeAllocatable::default(),
            unhealthy: &unhealthy,
        };
        self.rm.sync_pod(pod, &st, &ctx).await
    }

    async fn api(&self, pod: &Pod) -> PodStatus {
        let st = self.status().await;
        self.rm
            .api_status(pod, &st, &Probes { ready: None }, "192.168.1.5")
    }

    fn advance(&self, secs: i64) {
        let t = self.clock.fetch_add(secs * S, Ordering::SeqCst) + secs * S;
        self.cri.set_now(t);
    }

    /// Containers created so far (dead ones get garbage collected).
    fn created(&self) -> usize {
        self.reasons().iter().filter(|r| *r == "Created").count()
    }

    fn reasons(&self) -> Vec<String> {
        self.events
            .0
            .lock()
            .iter()
            .map(|(r, _)| r.clone())
            .collect()
    }
}

fn state_of<'a>(s: &'a PodStatus, name: &str) -> &'a k8s_openapi::api::core::v1::ContainerStatus {
    s.container_statuses
        .iter()
        .flatten()
        .chain(s.init_container_statuses.iter().flatten())
        .find(|c| c.name == name)
        .unwrap()
}

fn waiting_reason(s: &PodStatus, name: &str) -> Option<String> {
    state_of(s, name)
        .state
        .as_ref()
        .and_then(|s| s.waiting.as_ref())
        .and_then(|w| w.reason.clone())
}

fn cond(s: &PodStatus, t: &str) -> String {
    s.conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == t)
        .map(|c| c.status.clone())
        .unwrap_or_default()
}

#[tokio::test]
async fn init_containers_run_in_order_then_app_containers() {
    let e = env_with(FakeCri::with_images(&["busybox:1"]));
    let p = pod(
        vec![container("init1"), container("init2")],
        vec![container("app")],
        "Always",
    );
    // Before anything runs: Pending, PodInitializing.
    let s = e.api(&p).await;
    assert_eq!(s.phase.as_deref(), Some("Pending"));
    assert_eq!(
        waiting_reason(&s, "app").as_deref(),
        Some("PodInitializing")
    );

    assert!(e.sync(&p, &[]).await.errors.is_empty());
    assert_eq!(e.cri.count("init1"), 1);
    assert_eq!(e.cri.count("init2"), 0);
    assert_eq!(e.cri.count("app"), 0);
    let s = e.api(&p).await;
    assert_eq!(cond(&s, "PodReadyToStartContainers"), "True");
    assert_eq!(cond(&s, "Initialized"), "False");
    let msg = s
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "Initialized")
        .unwrap()
        .message
        .clone();
    assert_eq!(
        msg.as_deref(),
        Some("containers with incomplete status: [init1 init2]")
    );

    let (id, _) = e.cri.latest("init1").unwrap();
    e.cri.exit(&id, 0, "Completed");
    e.sync(&p, &[]).await;
    assert_eq!(e.cri.count("init2"), 1);
    assert_eq!(e.cri.count("app"), 0);
    let (id, _) = e.cri.latest("init2").unwrap();
    e.cri.exit(&id, 0, "Completed");
    e.sync(&p, &[]).await;
    assert_eq!(e.cri.count("app"), 1);
    let s = e.api(&p).await;
    assert_eq!(s.phase.as_deref(), Some("Running"));
    assert_eq!(cond(&s, "Initialized"), "True");
    assert_eq!(cond(&s, "Ready"), "True");
    assert_eq!(cond(&s, "ContainersReady"), "True");
    assert_eq!(cond(&s, "PodScheduled"), "True");
    assert_eq!(s.pod_ip.as_deref(), Some("10.42.0.7"));
    let app = state_of(&s, "app");
    assert!(app.ready && app.started == Some(true));
    assert!(app.container_id.as_deref().unwrap().starts_with("fake://"));
    let init1 = state_of(&s, "init1");
    let t = init1.state.as_ref().unwrap().terminated.as_ref().unwrap();
    assert_eq!(t.reason.as_deref(), Some("Completed"));
    assert!(init1.ready);
    // Nothing more to do.
    e.sync(&p, &[]).await;
    assert_eq!(e.cri.count("app"), 1);
    assert!(e.reasons().contains(&"Created".to_string()));
    assert!(e.reasons().contains(&"Pulled".to_string()));
}

#[tokio::test]
async fn restart_policy_never_and_on_failure() {
    // Never: a failed container is not restarted and the pod fails.
    let e = env_with(FakeCri::with_images(&["busybox:1"]));
    let p = pod(vec![], vec![container("app")], "Never");
    e.sync(&p, &[]).await;
    let (id, _) = e.cri.latest("app").unwrap();
    e.cri.exit(&id, 3, "Error");
    e.sync(&p, &[]).await;
    assert_eq!(e.cri.count("app"), 1);
    let st = e.status().await;
    assert!(!st.sandboxes[0].ready, "sandbox stopped once all is done");
    let s = e.api(&p).await;
    assert_eq!(s.phase.as_deref(), Some("Failed"));
    // No new sandbox for a done pod.
    e.sync(&p, &[]).await;
    assert_eq!(e.status().await.sandboxes.len(), 1);

    // OnFailure: exit 1 restarts, exit 0 completes.
    let e = env_with(FakeCri::with_images(&["busybox:1"]));
    let p = pod(vec![], vec![container("app")], "OnFailure");
    e.sync(&p, &[]).await;
    let (id, _) = e.cri.latest("app").unwrap();
    e.cri.exit(&id, 1, "Error");
    e.sync(&p, &[]).await;
    assert_eq!(e.created(), 2);
    let s = e.api(&p).await;
    assert_eq!(state_of(&s, "app").restart_count, 1);
    let (id, _) = e.cri.latest("app").unwrap();
    e.cri.exit(&id, 0, "Completed");
    e.sync(&p, &[]).await;
    assert_eq!(e.created(), 2);
    assert_eq!(e.api(&p).await.phase.as_deref(), Some("Succeeded"));
}

#[tokio::test]
async fn crash_loop_back_off_doubles() {
    let e = env_with(FakeCri::with_images(&["busybox:1"]));
    let p = pod(vec![], vec![container("app")], "Always");
    e.sync(&p, &[]).await;
    let (id, _) = e.cri.latest("app").unwrap();
    e.cri.exit(&id, 1, "Error");
    // The first restart is immediate.
    let r = e.sync(&p, &[]).await;
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(e.created(), 2);
    let (id, _) = e.cri.latest("app").unwrap();
    e.cri.exit(&id, 1, "Error");
    e.advance(1);
    let r = e.sync(&p, &[]).await;
    assert_eq!(e.created(), 2);
    assert_eq!(
        r.errors,
        vec![(
            "app".to_string(),
            "CrashLoopBackOff".to_string(),
            "back-off 10s restarting failed container=app pod=web_default(uid-1)".to_string()
        )]
    );
    let s = e.api(&p).await;
    assert_eq!(
        waiting_reason(&s, "app").as_deref(),
        Some("CrashLoopBackOff")
    );
    let app = state_of(&s, "app");
    let last = app
        .last_state
        .as_ref()
        .unwrap()
        .terminated
        .as_ref()
        .unwrap();
    assert_eq!(last.exit_code, 1);
    assert_eq!(s.phase.as_deref(), Some("Running"));
    assert!(e.reasons().contains(&"BackOff".to_string()));
    // After the back-off, restarted; the next back-off is 20 s.
    e.advance(10);
    e.sync(&p, &[]).await;
    assert_eq!(e.created(), 3);
    let (id, _) = e.cri.latest("app").unwrap();
    e.cri.exit(&id, 1, "Error");
    e.advance(1);
    let r = e.sync(&p, &[]).await;
    assert!(r.errors[0].2.starts_with("back-off 20s"), "{:?}", r.errors);
    // Only the newest dead instances are kept.
    assert_eq!(e.cri.count("app"), 1);
}

#[tokio::test]
async fn liveness_failure_kills_and_restarts() {
    let e = env_with(FakeCri::with_images(&["busybox:1"]));
    let p = pod(vec![], vec![container("app")], "Always");
    e.sync(&p, &[]).await;
    e.sync(&p, &["app"]).await;
    assert_eq!(e.cri.count("app"), 2);
    let ev = e.events.0.lock().clone();
    assert!(ev.contains(&(
        "Killing".to_string(),
        "Container app failed liveness probe, will be restarted".to_string()
    )));
    // The pod's grace period went to StopContainer.
    assert_eq!(e.cri.state.lock().stops.last().unwrap().1, 30);
}

#[tokio::test]
async fn sidecar_starts_before_app_and_restarts() {
    let e = env_with(FakeCri::with_images(&["busybox:1"]));
    let mut side = container("proxy");
    side.restart_policy = Some("Always".into());
    let p = pod(vec![side], vec![container("app")], "Never");
    e.sync(&p, &[]).await;
    assert_eq!((e.cri.count("proxy"), e.cri.count("app")), (1, 0));
    e.sync(&p, &[]).await;
    assert_eq!(e.cri.count("app"), 1);
    let s = e.api(&p).await;
    assert_eq!(s.phase.as_deref(), Some("Running"));
    // The sidecar exits: restarted despite restartPolicy Never.
    let (id, _) = e.cri.latest("proxy").unwrap();
    e.cri.exit(&id, 1, "Error");
    e.sync(&p, &[]).await;
    assert_eq!(e.cri.count("proxy"), 2);
    // The app finishes: the pod is done, the sidecar is stopped.
    let (id, _) = e.cri.latest("app").unwrap();
    e.cri.exit(&id, 0, "Completed");
    e.sync(&p, &[]).await;
    let st = e.status().await;
    assert!(st
        .containers
        .iter()
        .all(|c| c.state != ContainerState::Running));
    assert_eq!(e.api(&p).await.phase.as_deref(), Some("Succeeded"));
}

#[tokio::test]
async fn oom_killed_and_termination_message_fallback() {
    let e = env_with(FakeCri::with_images(&["busybox:1"]));
    let mut c = container("app");
    c.termination_message_policy = Some("FallbackToLogsOnError".into());
    let p = pod(vec![], vec![c, container("mem")], "Never");
    e.sync(&p, &[]).await;
    let (id, fc) = e.cri.latest("app").unwrap();
    // The container wrote nothing to /dev/termination-log: its log tail.
    let sb = e.cri.state.lock().sandboxes[&fc.sandbox]
        .config
        .log_directory
        .clone();
    let log = std::path::Path::new(&sb).join(&fc.config.log_path);
    std::fs::create_dir_all(log.parent().unwrap()).unwrap();
    std::fs::write(&log, "2024-01-01T00:00:00Z stderr F panic: boom\n").unwrap();
    e.cri.exit(&id, 2, "Error");
    let (mid, mc) = e.cri.latest("mem").unwrap();
    // A termination message file written by the container wins.
    let tm = mc
        .config
        .mounts
        .iter()
        .find(|m| m.container_path == "/dev/termination-log")
        .unwrap();
    std::fs::write(&tm.host_path, "out of memory").unwrap();
    e.cri.exit(&mid, 137, "OOMKilled");
    let s = e.api(&p).await;
    let t = |n: &str| state_of(&s, n).state.clone().unwrap().terminated.unwrap();
    assert_eq!(t("app").message.as_deref(), Some("panic: boom\n"));
    assert_eq!(t("app").reason.as_deref(), Some("Error"));
    assert_eq!(t("mem").reason.as_deref(), Some("OOMKilled"));
    assert_eq!(t("mem").exit_code, 137);
    assert_eq!(t("mem").message.as_deref(), Some("out of memory"));
    assert_eq!(s.phase.as_deref(), Some("Failed"));
}

#[tokio::test]
async fn image_pull_errors_then_back_off() {
    let e = env_with(FakeCri::default());
    e.cri.state.lock().pull_error = Some(CriError::Other {
        code: "NotFound".into(),
        message: "failed to resolve reference \"busybox:1\"".into(),
    });
    let p = pod(vec![], vec![container("app")], "Always");
    let r = e.sync(&p, &[]).await;
    assert_eq!(r.errors[0].1, "ErrImagePull");
    let s = e.api(&p).await;
    assert_eq!(waiting_reason(&s, "app").as_deref(), Some("ErrImagePull"));
    let r = e.sync(&p, &[]).await;
    assert_eq!(r.errors[0].1, "ImagePullBackOff");
    assert_eq!(
        r.errors[0].2,
        "Back-off pulling image \"busybox:1\": ErrImagePull: rpc error: code = NotFound desc = failed to resolve reference \"busybox:1\""
    );
    assert_eq!(e.cri.state.lock().pulls.len(), 1);
    e.advance(11);
    e.cri.state.lock().pull_error = None;
    assert!(e.sync(&p, &[]).await.errors.is_empty());
    assert_eq!(e.api(&p).await.phase.as_deref(), Some("Running"));
}

#[tokio::test]
async fn run_as_non_root_with_root_image_is_a_config_error() {
    let e = env_with(FakeCri::default());
    e.cri.add_image("busybox:1", Some(0));
    let mut p = pod(vec![], vec![container("app")], "Always");
    p.spec.as_mut().unwrap().security_context = Some(PodSecurityContext {
        run_as_non_root: Some(true),
        ..Default::default()
    });
    let r = e.sync(&p, &[]).await;
    assert_eq!(r.errors[0].1, "CreateContainerConfigError");
    let s = e.api(&p).await;
    let w = state_of(&s, "app").state.clone().unwrap().waiting.unwrap();
    assert_eq!(w.reason.as_deref(), Some("CreateContainerConfigError"));
    assert_eq!(
        w.message.as_deref(),
        Some("container has runAsNonRoot and image will run as root (pod: \"web_default(uid-1)\", container: app)")
    );
}

#[tokio::test]
async fn kill_pod_from_cri_state_alone_runs_pre_stop() {
    let e = env_with(FakeCri::with_images(&["busybox:1"]));
    let mut c = container("app");
    c.lifecycle = Some(Lifecycle {
        pre_stop: Some(LifecycleHandler {
            exec: Some(ExecAction {
                command: Some(vec!["/bin/drain".into()]),
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
    let mut p = pod(vec![], vec![c], "Always");
    p.metadata.deletion_grace_period_seconds = Some(9);
    e.sync(&p, &[]).await;
    // A new manager (a restarted kubelet) adopts and stops the pod
    // without the pod object.
    let fresh = env_with(FakeCri::default());
    let rm = RuntimeManager::build(
        e.cri.clone(),
        RuntimeConfig {
            node_name: "n1".into(),
            root_dir: fresh._tmp.path().into(),
            pod_logs_dir: fresh._tmp.path().join("logs"),
            cgroup_driver: crate::resources::CgroupDriver::Cgroupfs,
            cgroup_root: "/kubepods".into(),
            pause_image: "pause".into(),
            cluster_dns: vec![],
            cluster_domain: "cluster.local".into(),
        },
        fresh.events.clone(),
        Arc::new(|| 0),
        HostDns::default(),
    );
    let st = rm.relist().await.unwrap().remove("uid-1").unwrap();
    assert_eq!(
        (st.name.as_str(), st.namespace.as_str()),
        ("web", "default")
    );
    rm.kill_pod(None, &st, None).await.unwrap();
    {
        let cri = e.cri.state.lock();
        assert_eq!(cri.execs.len(), 1);
        assert_eq!(cri.execs[0].1, ["/bin/drain"]);
        assert_eq!(cri.stops.last().unwrap().1, 9);
        assert!(cri.sandboxes.values().all(|s| !s.ready));
    }
    rm.remove_pod(&st).await.unwrap();
    assert!(e.cri.state.lock().sandboxes.is_empty());
    assert!(e.cri.state.lock().containers.is_empty());
}

#[test]
fn compute_actions_first_start_and_changed_sandbox() {
    let p = pod(
        vec![container("i")],
        vec![container("a"), container("b")],
        "Always",
    );
    let none = HashSet::new();
    let started = |_: &str| None;
    let view = ProbeView {
        unhealthy: &none,
        started: &started,
    };
    let a = compute_pod_actions(&p, &PodRuntimeStatus::default(), &view);
    assert!(a.create_sandbox && a.kill_pod);
    assert_eq!(a.attempt, 0);
    assert_eq!(a.init_containers_to_start, vec![0]);
    assert!(a.containers_to_start.is_empty());
    let q = pod(vec![], vec![container("a"), container("b")], "Always");
    let a = compute_pod_actions(&q, &PodRuntimeStatus::default(), &view);
    assert_eq!(a.containers_to_start, vec![0, 1]);
    // A dead sandbox is replaced with the next attempt.
    let st = PodRuntimeStatus {
        sandboxes: vec![SandboxStatus {
            id: "s".into(),
            ready: false,
            ip: None,
            additional_ips: vec![],
            created_at: 1,
            attempt: 2,
            host_network: false,
        }],
        ..Default::default()
    };
    let a = compute_pod_actions(&q, &st, &view);
    assert!(a.create_sandbox);
    assert_eq!(a.attempt, 3);
    assert_eq!(a.sandbox_id, "s");
}
