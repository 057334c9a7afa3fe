//! ProbeManager and worker behaviour with a fake exec runner on tokio's
//! paused clock (no jitter), plus one httpGet probe against a local server.

use super::*;
use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStatus, ExecAction,
    HTTPGetAction, PodSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::sync::Mutex as StdMutex;

/// Exit codes by the probe command's first word; counts calls.
#[derive(Default)]
struct FakeExec {
    codes: StdMutex<HashMap<String, Result<i32, String>>>,
    calls: StdMutex<Vec<(String, String)>>,
}

impl FakeExec {
    fn set(&self, cmd: &str, code: i32) {
        self.codes.lock().unwrap().insert(cmd.into(), Ok(code));
    }
    fn fail_with(&self, cmd: &str, msg: &str) {
        self.codes
            .lock()
            .unwrap()
            .insert(cmd.into(), Err(msg.into()));
    }
    fn calls(&self, cmd: &str) -> usize {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, c)| c == cmd)
            .count()
    }
    fn ids(&self) -> Vec<String> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .map(|(id, _)| id.clone())
            .collect()
    }
}

#[async_trait::async_trait]
impl ExecRunner for FakeExec {
    async fn exec_sync(
        &self,
        container_id: &str,
        cmd: Vec<String>,
        _timeout: Duration,
    ) -> Result<(i32, Vec<u8>, Vec<u8>), ExecError> {
        let first = cmd.first().cloned().unwrap_or_default();
        self.calls
            .lock()
            .unwrap()
            .push((container_id.to_string(), first.clone()));
        match self
            .codes
            .lock()
            .unwrap()
            .get(&first)
            .cloned()
            .unwrap_or(Ok(0))
        {
            Ok(code) => Ok((code, format!("{first} exited {code}").into_bytes(), vec![])),
            Err(msg) => Err(ExecError::Failed(msg)),
        }
    }
}

#[derive(Default)]
struct Events(StdMutex<Vec<(String, &'static str, String, String)>>);

impl ProbeEvents for Events {
    fn container_event(
        &self,
        _pod: &Pod,
        field_path: &str,
        kind: EventType,
        reason: &str,
        message: String,
    ) {
        self.0.lock().unwrap().push((
            field_path.to_string(),
            kind.as_str(),
            reason.to_string(),
            message,
        ));
    }
}

impl Events {
    fn messages(&self) -> Vec<String> {
        self.0.lock().unwrap().iter().map(|e| e.3.clone()).collect()
    }
}

struct Fixture {
    exec: Arc<FakeExec>,
    events: Arc<Events>,
    probes: ProbeManager,
    rx: mpsc::UnboundedReceiver<String>,
}

fn fixture() -> Fixture {
    let exec = Arc::new(FakeExec::default());
    let events = Arc::new(Events::default());
    let (probes, rx) = ProbeManager::build(exec.clone(), events.clone(), false);
    Fixture {
        exec,
        events,
        probes,
        rx,
    }
}

impl Fixture {
    /// Drains the update channel; true when the pod's UID was sent.
    fn notified(&mut self) -> bool {
        let mut seen = false;
        while let Ok(uid) = self.rx.try_recv() {
            assert_eq!(uid, "uid-1");
            seen = true;
        }
        seen
    }
}

fn exec_probe(cmd: &str, period: i32, success: i32, failure: i32) -> Probe {
    Probe {
        exec: Some(ExecAction {
            command: Some(vec![cmd.to_string(), "arg".to_string()]),
        }),
        period_seconds: Some(period),
        success_threshold: Some(success),
        failure_threshold: Some(failure),
        timeout_seconds: Some(1),
        ..Default::default()
    }
}

fn pod(containers: Vec<Container>) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some("web".into()),
            namespace: Some("default".into()),
            uid: Some("uid-1".into()),
            ..Default::default()
        },
        spec: Some(PodSpec {
            containers,
            restart_policy: Some("Always".into()),
            ..Default::default()
        }),
        status: None,
    }
}

fn container(name: &str) -> Container {
    Container {
        name: name.into(),
        ..Default::default()
    }
}

fn running(name: &str, id: &str, started: bool) -> ContainerStatus {
    ContainerStatus {
        name: name.into(),
        container_id: Some(format!("containerd://{id}")),
        state: Some(ContainerState {
            running: Some(ContainerStateRunning {
                started_at: Some(Time(jiff::Timestamp::now())),
            }),
            ..Default::default()
        }),
        started: Some(started),
        ..Default::default()
    }
}

fn status(containers: Vec<ContainerStatus>) -> PodStatus {
    PodStatus {
        phase: Some("Running".into()),
        pod_ip: Some("127.0.0.1".into()),
        container_statuses: Some(containers),
        ..Default::default()
    }
}

async fn wait(secs: f64) {
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
}

#[tokio::test(start_paused = true)]
async fn liveness_fails_after_failure_threshold_then_holds_until_a_new_container() {
    let mut f = fixture();
    f.exec.set("live", 1);
    let mut c = container("app");
    c.liveness_probe = Some(exec_probe("live", 10, 1, 3));
    let p = pod(vec![c]);
    f.probes
        .update_pod(&p, &status(vec![running("app", "c1", true)]));

    wait(1.0).await;
    assert_eq!(f.exec.calls("live"), 1);
    assert_eq!(f.exec.ids(), ["c1"], "the bare CRI ID is exec'd into");
    assert!(f.probes.unhealthy("uid-1").is_empty());
    assert_eq!(
        f.events.0.lock().unwrap()[0],
        (
            "spec.containers{app}".to_string(),
            "Warning",
            "Unhealthy".to_string(),
            "Liveness probe failed: live exited 1".to_string()
        )
    );
    // Liveness starts out successful: recording that is the first change.
    assert!(f.notified());

    wait(10.0).await; // second failure at t=10
    assert!(f.probes.unhealthy("uid-1").is_empty());
    assert!(!f.notified());
    wait(10.0).await; // third at t=20
    assert_eq!(f.exec.calls("live"), 3);
    assert_eq!(
        f.probes.unhealthy("uid-1"),
        HashSet::from(["app".to_string()])
    );
    assert!(f.probes.is_unhealthy("uid-1", "app", "containerd://c1"));
    assert!(!f.probes.is_unhealthy("uid-1", "app", "containerd://c2"));
    assert!(f.notified());

    // On hold: the doomed container is not probed again.
    wait(60.0).await;
    assert_eq!(f.exec.calls("live"), 3);

    // The restarted container starts healthy, at once.
    f.exec.set("live", 0);
    f.probes
        .update_pod(&p, &status(vec![running("app", "c2", true)]));
    assert!(f.probes.unhealthy("uid-1").is_empty());
    assert!(f.notified());
    wait(10.5).await;
    assert_eq!(f.exec.ids().last().map(String::as_str), Some("c2"));
    assert!(f.probes.unhealthy("uid-1").is_empty());
}

#[tokio::test(start_paused = true)]
async fn initial_delay_postpones_the_first_probe() {
    let f = fixture();
    let mut c = container("app");
    let mut probe = exec_probe("live", 1, 1, 3);
    probe.initial_delay_seconds = Some(5);
    c.liveness_probe = Some(probe);
    f.probes
        .update_pod(&pod(vec![c]), &status(vec![running("app", "c1", true)]));
    wait(4.5).await;
    assert_eq!(f.exec.calls("live"), 0);
    wait(1.0).await;
    assert_eq!(f.exec.calls("live"), 1);
}

#[tokio::test(start_paused = true)]
async fn readiness_is_false_until_success_threshold_and_for_a_stopped_container() {
    let mut f = fixture();
    let mut c = container("app");
    c.readiness_probe = Some(exec_probe("ready", 10, 2, 3));
    let p = pod(vec![c, container("plain")]);
    let st = status(vec![
        running("app", "c1", true),
        running("plain", "p1", true),
    ]);
    assert_eq!(f.probes.ready("uid-1", "app"), None, "unknown pod");
    f.probes.update_pod(&p, &st);
    assert_eq!(f.probes.ready("uid-1", "app"), Some(false));
    assert_eq!(
        f.probes.ready("uid-1", "plain"),
        None,
        "no probe: ready when running"
    );

    wait(1.0).await;
    assert_eq!(f.exec.calls("ready"), 1);
    assert_eq!(
        f.probes.ready("uid-1", "app"),
        Some(false),
        "1 of 2 successes"
    );
    wait(10.0).await;
    assert_eq!(f.probes.ready("uid-1", "app"), Some(true));
    assert_eq!(
        f.probes.ready_for("uid-1", "app", "containerd://c1"),
        Some(true)
    );
    assert_eq!(
        f.probes.ready_for("uid-1", "app", "containerd://old"),
        Some(false)
    );
    assert!(f.notified());
    assert!(f.events.messages().is_empty());

    // The container exits: not ready, and (restartPolicy Always) still watched.
    let mut stopped = running("app", "c1", true);
    stopped.state = Some(ContainerState {
        terminated: Some(ContainerStateTerminated {
            exit_code: 1,
            ..Default::default()
        }),
        ..Default::default()
    });
    f.probes
        .update_pod(&p, &status(vec![stopped, running("plain", "p1", true)]));
    wait(10.0).await;
    assert_eq!(f.probes.ready("uid-1", "app"), Some(false));
    assert!(f.notified());
    assert_eq!(f.probes.worker_count(), 1);

    // Its successor must earn readiness again.
    f.probes
        .update_pod(&p, &status(vec![running("app", "c2", true)]));
    assert_eq!(f.probes.ready("uid-1", "app"), Some(false));
}

#[tokio::test(start_paused = true)]
async fn failing_readiness_reports_each_failure_and_never_restarts() {
    let f = fixture();
    f.exec.set("ready", 3);
    let mut c = container("app");
    c.readiness_probe = Some(exec_probe("ready", 5, 1, 1));
    f.probes
        .update_pod(&pod(vec![c]), &status(vec![running("app", "c1", true)]));
    wait(11.0).await;
    assert_eq!(f.exec.calls("ready"), 3, "probed at 0, 5 and 10 s");
    assert_eq!(
        f.events.messages(),
        vec!["Readiness probe failed: ready exited 3".to_string(); 3]
    );
    assert!(f.probes.unhealthy("uid-1").is_empty());
    assert_eq!(f.probes.ready("uid-1", "app"), Some(false));
}

#[tokio::test(start_paused = true)]
async fn startup_probe_gates_liveness_and_readiness() {
    let mut f = fixture();
    f.exec.set("startup", 1);
    let mut c = container("app");
    c.startup_probe = Some(exec_probe("startup", 10, 1, 30));
    c.liveness_probe = Some(exec_probe("live", 10, 1, 3));
    c.readiness_probe = Some(exec_probe("ready", 100, 1, 3));
    let p = pod(vec![c]);
    f.probes
        .update_pod(&p, &status(vec![running("app", "c1", false)]));
    assert_eq!(f.probes.started("uid-1", "app"), Some(false));

    wait(15.0).await;
    assert_eq!(f.exec.calls("startup"), 2);
    assert_eq!(f.exec.calls("live") + f.exec.calls("ready"), 0);
    assert_eq!(
        f.events.messages()[0],
        "Startup probe failed: startup exited 1"
    );
    assert_eq!(f.probes.started("uid-1", "app"), Some(false));
    f.notified();

    f.exec.set("startup", 0);
    wait(10.0).await;
    assert_eq!(f.probes.started("uid-1", "app"), Some(true));
    assert!(f.notified());

    // The kubelet re-generates the status (started) and hands it over:
    // readiness runs at once, not a period later; startup stops probing.
    f.probes
        .update_pod(&p, &status(vec![running("app", "c1", true)]));
    wait(0.5).await;
    assert_eq!(f.exec.calls("ready"), 1);
    assert_eq!(f.probes.ready("uid-1", "app"), Some(true));
    wait(20.0).await;
    assert!(f.exec.calls("live") >= 2);
    assert_eq!(f.exec.calls("startup"), 3);
}

#[tokio::test(start_paused = true)]
async fn startup_failure_makes_the_container_unhealthy() {
    let f = fixture();
    f.exec.set("startup", 1);
    let mut c = container("app");
    c.startup_probe = Some(exec_probe("startup", 1, 1, 2));
    f.probes
        .update_pod(&pod(vec![c]), &status(vec![running("app", "c1", false)]));
    wait(1.5).await;
    assert_eq!(
        f.probes.unhealthy("uid-1"),
        HashSet::from(["app".to_string()])
    );
    assert_eq!(f.probes.started("uid-1", "app"), Some(false));
}

#[tokio::test(start_paused = true)]
async fn errors_are_retried_reported_and_not_counted() {
    let f = fixture();
    f.exec.fail_with("live", "boom");
    let mut c = container("app");
    c.liveness_probe = Some(exec_probe("live", 10, 1, 1));
    f.probes
        .update_pod(&pod(vec![c]), &status(vec![running("app", "c1", true)]));
    wait(25.0).await;
    assert_eq!(f.exec.calls("live"), 9, "3 tries per round");
    assert_eq!(
        f.events.messages(),
        vec!["Liveness probe errored and resulted in unknown state: boom".to_string(); 3]
    );
    assert!(f.probes.unhealthy("uid-1").is_empty());
}

#[tokio::test(start_paused = true)]
async fn sidecar_probes_use_the_init_container_field_path() {
    let f = fixture();
    f.exec.set("side", 1);
    let mut side = container("proxy");
    side.restart_policy = Some("Always".into());
    side.liveness_probe = Some(exec_probe("side", 10, 1, 3));
    let mut plain_init = container("setup");
    plain_init.liveness_probe = Some(exec_probe("setup", 10, 1, 3));
    let mut p = pod(vec![container("app")]);
    p.spec.as_mut().unwrap().init_containers = Some(vec![plain_init, side]);
    let mut st = status(vec![]);
    st.init_container_statuses = Some(vec![running("proxy", "s1", true)]);
    f.probes.update_pod(&p, &st);
    wait(1.0).await;
    assert_eq!(f.probes.worker_count(), 1, "only the sidecar is probed");
    assert_eq!(
        f.events.0.lock().unwrap()[0].0,
        "spec.initContainers{proxy}"
    );
}

#[tokio::test(start_paused = true)]
async fn workers_stop_for_removed_terminal_and_deleted_pods() {
    let f = fixture();
    let mut c = container("app");
    c.liveness_probe = Some(exec_probe("live", 10, 1, 3));
    c.readiness_probe = Some(exec_probe("ready", 10, 1, 3));
    let p = pod(vec![c]);
    f.probes
        .update_pod(&p, &status(vec![running("app", "c1", true)]));
    wait(1.0).await;
    assert_eq!(f.probes.worker_count(), 2);
    f.probes.remove_pod("uid-1");
    wait(1.0).await;
    assert_eq!(f.probes.worker_count(), 0);
    assert_eq!(f.probes.ready("uid-1", "app"), None);
    let calls = f.exec.calls.lock().unwrap().len();
    wait(30.0).await;
    assert_eq!(f.exec.calls.lock().unwrap().len(), calls);

    // A finished pod: workers end by themselves.
    let mut other = p.clone();
    other.metadata.uid = Some("uid-2".into());
    f.probes
        .update_pod(&other, &status(vec![running("app", "c9", true)]));
    assert_eq!(f.probes.worker_count(), 2);
    let mut done = status(vec![running("app", "c9", true)]);
    done.phase = Some("Succeeded".into());
    f.probes.update_pod(&other, &done);
    wait(11.0).await;
    assert_eq!(f.probes.worker_count(), 0);

    // A pod being deleted: liveness goes quiet (success), readiness stays.
    let mut third = p.clone();
    third.metadata.uid = Some("uid-3".into());
    f.probes
        .update_pod(&third, &status(vec![running("app", "c7", true)]));
    wait(1.0).await;
    third.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::now()));
    f.probes
        .update_pod(&third, &status(vec![running("app", "c7", true)]));
    wait(10.0).await;
    assert_eq!(f.probes.worker_count(), 1);
    assert!(f.probes.unhealthy("uid-3").is_empty());
    // After remove_pod, a late status report does not restart anything.
    f.probes.remove_pod("uid-3");
    f.probes
        .update_pod(&third, &status(vec![running("app", "c7", true)]));
    assert_eq!(f.probes.worker_count(), 0);
}

#[tokio::test]
async fn http_readiness_probe_reports_the_status_code() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await;
            let _ = s
                .write_all(b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 4\r\nconnection: close\r\n\r\noops")
                .await;
        }
    });
    let f = fixture();
    let mut c = container("web");
    c.ports = Some(vec![k8s_openapi::api::core::v1::ContainerPort {
        name: Some("http".into()),
        container_port: i32::from(port),
        ..Default::default()
    }]);
    c.readiness_probe = Some(Probe {
        http_get: Some(HTTPGetAction {
            port: IntOrString::String("http".into()),
            path: Some("/ready".into()),
            ..Default::default()
        }),
        ..Default::default()
    });
    f.probes
        .update_pod(&pod(vec![c]), &status(vec![running("web", "w1", true)]));
    let deadline = std::time::Instant::now() + Duration::from_secs(1);
    while f.events.messages().is_empty() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        f.events.messages(),
        ["Readiness probe failed: HTTP probe failed with statuscode: 500"]
    );
    assert_eq!(f.probes.ready("uid-1", "web"), Some(false));
    f.probes.remove_pod("uid-1");
    server.abort();
}

#[test]
fn timings_default_and_clamp_like_upstream() {
    let t = Timings::of(&Probe::default());
    assert_eq!(
        (
            t.initial_delay,
            t.period,
            t.timeout,
            t.success_threshold,
            t.failure_threshold
        ),
        (
            Duration::ZERO,
            Duration::from_secs(10),
            Duration::from_secs(1),
            1,
            3
        )
    );
    let t = Timings::of(&Probe {
        period_seconds: Some(0),
        timeout_seconds: Some(-1),
        failure_threshold: Some(0),
        ..Default::default()
    });
    assert_eq!(
        (t.period, t.timeout, t.failure_threshold),
        (Duration::from_secs(1), Duration::from_secs(1), 1)
    );
    assert_eq!(parse_container_id("containerd://abc"), "abc");
    assert_eq!(parse_container_id("abc"), "abc");
}
