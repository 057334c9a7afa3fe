//! Liveness, readiness and startup probes as upstream's kubelet prober
//! (`pkg/kubelet/prober`, `pkg/probe/*`, Kubernetes 1.33).
//!
//! [`ProbeManager`] runs one tokio task ("worker") per container and probe
//! kind. A worker probes every `periodSeconds` once `initialDelaySeconds`
//! have passed since the container started, counts equal results in a row
//! against `successThreshold` / `failureThreshold`, and records the result
//! for the container's current ID. The startup probe gates the other two;
//! readiness starts false, liveness true. Every change of a recorded result
//! sends the pod's UID on the manager's channel so the kubelet re-syncs the
//! pod (restarting containers listed by [`ProbeManager::unhealthy`]) and
//! regenerates its status (through [`ProbeState`]).
//!
//! Probe kinds: exec (through an [`ExecRunner`], CRI `ExecSync`), httpGet
//! ([`http_get`], also used by lifecycle hooks), tcpSocket and gRPC
//! (`grpc.health.v1.Health/Check`).

mod exec;
mod grpc;
mod http;
mod run;
mod tcp;
mod worker;

#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Pod, PodStatus, Probe};
use kelson_runtime::events::{object_reference, EventType};
use parking_lot::Mutex;
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

pub use exec::{ExecError, ExecRunner};
pub use http::{http_get, http_get_as};

/// Probe results the runtime reads when it builds a pod's API status.
///
/// `None` means the container has no such probe: a running container is then
/// ready (readiness) or started (startup).
pub trait ProbeState {
    /// Whether the readiness probe of `container` has succeeded (false until
    /// its first success and for a container that is not running).
    fn ready(&self, pod_uid: &str, container: &str) -> Option<bool>;
    /// Whether the startup probe of `container` has succeeded.
    fn started(&self, pod_uid: &str, container: &str) -> Option<bool>;
    /// [`ProbeState::ready`] for one container instance: a result recorded
    /// for an older container (before a restart) does not count. `container_id`
    /// may carry the `runtime://` prefix.
    fn ready_for(&self, pod_uid: &str, container: &str, container_id: &str) -> Option<bool> {
        let _ = container_id;
        self.ready(pod_uid, container)
    }
    /// [`ProbeState::started`] for one container instance.
    fn started_for(&self, pod_uid: &str, container: &str, container_id: &str) -> Option<bool> {
        let _ = container_id;
        self.started(pod_uid, container)
    }
}

/// What one probe attempt found (upstream `probe.Result` plus its output).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeOutcome {
    pub result: ProbeResult,
    /// The message upstream puts into events (e.g. "HTTP probe failed with
    /// statuscode: 500"), or the exec command's output.
    pub output: String,
    /// The final HTTP status code, for httpGet when a response came back
    /// (lifecycle hooks only fail on transport errors, i.e. `None`).
    pub status_code: Option<u16>,
}

/// Upstream `probe.Result` without `Unknown` (which is a [`ProbeError`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeResult {
    Success,
    /// Counts as success; recorded as a `ProbeWarning` event (an httpGet
    /// redirect to another host).
    Warning,
    Failure,
}

impl ProbeOutcome {
    pub(crate) fn new(result: ProbeResult, output: impl Into<String>) -> Self {
        ProbeOutcome {
            result,
            output: output.into(),
            status_code: None,
        }
    }
}

/// A probe that could not be run at all ("errored and resulted in unknown
/// state"). Messages are upstream's.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// A port that is neither a number nor a named container port, or out of
    /// range.
    #[error("{0}")]
    Port(String),
    /// An httpGet request that cannot be built.
    #[error("{0}")]
    Request(String),
    /// The exec runner (CRI) failed for another reason than the command's
    /// exit code or a timeout.
    #[error("{0}")]
    Exec(String),
    #[error("missing probe handler for {pod}:{container}")]
    MissingHandler { pod: String, container: String },
}

/// The three probe kinds of a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProbeKind {
    Liveness,
    Readiness,
    Startup,
}

impl ProbeKind {
    /// As upstream prints it in event messages.
    pub fn as_str(self) -> &'static str {
        match self {
            ProbeKind::Liveness => "Liveness",
            ProbeKind::Readiness => "Readiness",
            ProbeKind::Startup => "Startup",
        }
    }

    fn spec(self, c: &Container) -> Option<&Probe> {
        match self {
            ProbeKind::Liveness => c.liveness_probe.as_ref(),
            ProbeKind::Readiness => c.readiness_probe.as_ref(),
            ProbeKind::Startup => c.startup_probe.as_ref(),
        }
    }

    /// The result recorded before the first probe of a container.
    fn initial(self) -> Health {
        match self {
            ProbeKind::Liveness => Health::Success,
            ProbeKind::Readiness => Health::Failure,
            ProbeKind::Startup => Health::Unknown,
        }
    }
}

/// A recorded result (upstream `results.Result`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Health {
    Unknown,
    Success,
    Failure,
}

/// Where probe events go. The kubelet uses its [`kelson_runtime::Recorder`];
/// tests capture them.
pub trait ProbeEvents: Send + Sync + 'static {
    /// An event about `pod`'s container at `field_path`
    /// (`spec.containers{NAME}` or `spec.initContainers{NAME}`).
    fn container_event(
        &self,
        pod: &Pod,
        field_path: &str,
        kind: EventType,
        reason: &str,
        message: String,
    );
}

impl ProbeEvents for kelson_runtime::Recorder {
    fn container_event(
        &self,
        pod: &Pod,
        field_path: &str,
        kind: EventType,
        reason: &str,
        message: String,
    ) {
        let mut target = object_reference(pod);
        target.field_path = Some(field_path.to_string());
        self.event(&target, kind, reason, message);
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    uid: String,
    container: String,
    kind: ProbeKind,
}

impl Key {
    fn new(uid: &str, container: &str, kind: ProbeKind) -> Key {
        Key {
            uid: uid.to_string(),
            container: container.to_string(),
            kind,
        }
    }
}

/// The latest pod and status the kubelet reported; workers probe from it
/// (upstream reads the status manager's cache).
struct PodEntry {
    pod: Arc<Pod>,
    status: Arc<PodStatus>,
}

struct WorkerHandle {
    id: u64,
    stop: CancellationToken,
    trigger: Arc<Notify>,
}

#[derive(Default)]
struct Inner {
    pods: HashMap<String, PodEntry>,
    workers: HashMap<Key, WorkerHandle>,
    /// Result per probe, for the container ID it was recorded for
    /// (upstream keys its results cache by container ID).
    results: HashMap<Key, (String, Health)>,
    next_id: u64,
}

struct Shared {
    inner: Mutex<Inner>,
    exec: Arc<dyn ExecRunner>,
    events: Arc<dyn ProbeEvents>,
    updates: mpsc::UnboundedSender<String>,
    /// When the manager was created: workers started within one period of
    /// it wait a random part of the period first (a restarted kubelet must
    /// not probe everything at once).
    start: tokio::time::Instant,
    jitter: bool,
}

/// Runs the probes of this node's pods. Cheap to clone.
#[derive(Clone)]
pub struct ProbeManager {
    shared: Arc<Shared>,
}

impl ProbeManager {
    /// A manager whose events go to `recorder`, and the channel on which it
    /// sends the UID of each pod whose probe results changed.
    pub fn new(
        exec: Arc<dyn ExecRunner>,
        recorder: kelson_runtime::Recorder,
    ) -> (Self, mpsc::UnboundedReceiver<String>) {
        Self::with_events(exec, Arc::new(recorder))
    }

    /// [`ProbeManager::new`] with any event sink.
    pub fn with_events(
        exec: Arc<dyn ExecRunner>,
        events: Arc<dyn ProbeEvents>,
    ) -> (Self, mpsc::UnboundedReceiver<String>) {
        Self::build(exec, events, true)
    }

    fn build(
        exec: Arc<dyn ExecRunner>,
        events: Arc<dyn ProbeEvents>,
        jitter: bool,
    ) -> (Self, mpsc::UnboundedReceiver<String>) {
        let (updates, rx) = mpsc::unbounded_channel();
        let shared = Shared {
            inner: Mutex::new(Inner::default()),
            exec,
            events,
            updates,
            start: tokio::time::Instant::now(),
            jitter,
        };
        (
            ProbeManager {
                shared: Arc::new(shared),
            },
            rx,
        )
    }

    /// Called after every sync with the pod and the API status just
    /// generated for it. The first call for a pod starts its workers (one per
    /// container probe, sidecars included); later calls hand the workers the
    /// new status. A container ID that changed resets that container's
    /// results at once, so a restarted container is neither unhealthy nor
    /// ready because of its predecessor. Must be called inside a tokio
    /// runtime.
    pub fn update_pod(&self, pod: &Pod, status: &PodStatus) {
        let Some(uid) = pod.metadata.uid.as_deref().filter(|u| !u.is_empty()) else {
            return;
        };
        let mut changed = false;
        let mut inner = self.shared.inner.lock();
        let known = inner.pods.contains_key(uid);
        if !known && (pod.metadata.deletion_timestamp.is_some() || is_terminal(status)) {
            // Nothing to probe in a pod on its way out (the kubelet may report
            // its status after remove_pod).
            return;
        }
        inner.pods.insert(
            uid.to_string(),
            PodEntry {
                pod: Arc::new(pod.clone()),
                status: Arc::new(status.clone()),
            },
        );

        for (c, _) in probed_containers(pod) {
            let Some(cs) = container_status(status, &c.name) else {
                continue;
            };
            let id = parse_container_id(cs.container_id.as_deref().unwrap_or(""));
            for kind in [
                ProbeKind::Startup,
                ProbeKind::Readiness,
                ProbeKind::Liveness,
            ] {
                if kind.spec(c).is_none() {
                    continue;
                }
                let key = Key::new(uid, &c.name, kind);
                if let Some((old, _)) = inner.results.get(&key) {
                    if old != id {
                        inner
                            .results
                            .insert(key.clone(), (id.to_string(), kind.initial()));
                        changed = true;
                    }
                }
            }
            // Upstream's UpdatePodStatus: a started, running container whose
            // readiness has not succeeded yet is probed now rather than a
            // period later.
            let running = cs.state.as_ref().is_some_and(|s| s.running.is_some());
            if running && cs.started == Some(true) {
                let key = Key::new(uid, &c.name, ProbeKind::Readiness);
                let ready =
                    matches!(inner.results.get(&key), Some((rid, Health::Success)) if rid == id);
                if !ready {
                    if let Some(w) = inner.workers.get(&key) {
                        w.trigger.notify_one();
                    }
                }
            }
        }

        if !known {
            for (c, init) in probed_containers(pod) {
                for kind in [
                    ProbeKind::Startup,
                    ProbeKind::Readiness,
                    ProbeKind::Liveness,
                ] {
                    let Some(spec) = kind.spec(c) else { continue };
                    let key = Key::new(uid, &c.name, kind);
                    if inner.workers.contains_key(&key) {
                        continue;
                    }
                    inner.next_id += 1;
                    let handle = WorkerHandle {
                        id: inner.next_id,
                        stop: CancellationToken::new(),
                        trigger: Arc::new(Notify::new()),
                    };
                    let w = worker::Worker::new(
                        self.clone(),
                        key.clone(),
                        handle.id,
                        c.clone(),
                        init,
                        spec.clone(),
                        handle.stop.clone(),
                        handle.trigger.clone(),
                    );
                    inner.workers.insert(key, handle);
                    tokio::spawn(w.run());
                }
            }
        }
        drop(inner);
        if changed {
            let _ = self.shared.updates.send(uid.to_string());
        }
    }

    /// Stops the pod's workers and forgets its results.
    pub fn remove_pod(&self, pod_uid: &str) {
        let mut inner = self.shared.inner.lock();
        inner.pods.remove(pod_uid);
        inner.workers.retain(|k, w| {
            if k.uid == pod_uid {
                w.stop.cancel();
                false
            } else {
                true
            }
        });
        inner.results.retain(|k, _| k.uid != pod_uid);
    }

    /// Containers (by name) whose liveness or startup probe has failed
    /// `failureThreshold` times in a row since their current container
    /// started: the runtime restarts them.
    pub fn unhealthy(&self, pod_uid: &str) -> HashSet<String> {
        let inner = self.shared.inner.lock();
        inner
            .results
            .iter()
            .filter(|(k, (_, h))| {
                k.uid == pod_uid
                    && matches!(k.kind, ProbeKind::Liveness | ProbeKind::Startup)
                    && *h == Health::Failure
            })
            .map(|(k, _)| k.container.clone())
            .collect()
    }

    /// Whether the container instance `container_id` failed its liveness or
    /// startup probe (upstream looks results up by container ID).
    pub fn is_unhealthy(&self, pod_uid: &str, container: &str, container_id: &str) -> bool {
        let id = parse_container_id(container_id);
        let inner = self.shared.inner.lock();
        [ProbeKind::Liveness, ProbeKind::Startup]
            .iter()
            .any(|kind| {
                matches!(inner.results.get(&Key::new(pod_uid, container, *kind)),
                Some((rid, Health::Failure)) if rid == id)
            })
    }

    /// Number of running workers (for tests and debugging).
    pub fn worker_count(&self) -> usize {
        self.shared.inner.lock().workers.len()
    }

    fn lookup(
        &self,
        pod_uid: &str,
        container: &str,
        id: Option<&str>,
        kind: ProbeKind,
    ) -> Option<bool> {
        let key = Key::new(pod_uid, container, kind);
        let inner = self.shared.inner.lock();
        if let Some((rid, Health::Success)) = inner.results.get(&key) {
            if id.is_none_or(|id| parse_container_id(id) == rid) {
                return Some(true);
            }
        }
        // A probe that has not succeeded (or not run yet) for this container.
        inner.workers.contains_key(&key).then_some(false)
    }

    /// Records `health` for the worker's container; sends the pod's UID when
    /// it changed (upstream results manager's update channel).
    fn set_result(&self, key: &Key, container_id: &str, health: Health) {
        let mut inner = self.shared.inner.lock();
        let new = (container_id.to_string(), health);
        if inner.results.get(key) == Some(&new) {
            return;
        }
        inner.results.insert(key.clone(), new);
        drop(inner);
        let _ = self.shared.updates.send(key.uid.clone());
    }

    fn remove_result(&self, key: &Key, container_id: &str) {
        let mut inner = self.shared.inner.lock();
        if inner
            .results
            .get(key)
            .is_some_and(|(id, _)| id == container_id)
        {
            inner.results.remove(key);
        }
    }

    /// Called by a worker as it exits.
    fn worker_done(&self, key: &Key, id: u64) {
        let mut inner = self.shared.inner.lock();
        if inner.workers.get(key).is_some_and(|w| w.id == id) {
            inner.workers.remove(key);
        }
    }

    fn pod_entry(&self, uid: &str) -> Option<(Arc<Pod>, Arc<PodStatus>)> {
        let inner = self.shared.inner.lock();
        inner
            .pods
            .get(uid)
            .map(|e| (e.pod.clone(), e.status.clone()))
    }
}

impl ProbeState for ProbeManager {
    fn ready(&self, pod_uid: &str, container: &str) -> Option<bool> {
        self.lookup(pod_uid, container, None, ProbeKind::Readiness)
    }

    fn started(&self, pod_uid: &str, container: &str) -> Option<bool> {
        self.lookup(pod_uid, container, None, ProbeKind::Startup)
    }

    fn ready_for(&self, pod_uid: &str, container: &str, container_id: &str) -> Option<bool> {
        self.lookup(pod_uid, container, Some(container_id), ProbeKind::Readiness)
    }

    fn started_for(&self, pod_uid: &str, container: &str, container_id: &str) -> Option<bool> {
        self.lookup(pod_uid, container, Some(container_id), ProbeKind::Startup)
    }
}

/// The containers that get probe workers: app containers and sidecars (init
/// containers with restartPolicy Always), with whether each is an init
/// container.
fn probed_containers(pod: &Pod) -> Vec<(&Container, bool)> {
    let Some(spec) = pod.spec.as_ref() else {
        return Vec::new();
    };
    let mut out: Vec<(&Container, bool)> = spec.containers.iter().map(|c| (c, false)).collect();
    for c in spec.init_containers.iter().flatten() {
        if c.restart_policy.as_deref() == Some("Always") {
            out.push((c, true));
        }
    }
    out
}

/// The status of container `name`: app containers first, then init
/// containers (as upstream's worker looks it up), skipping entries without
/// a container ID.
fn container_status<'a>(
    status: &'a PodStatus,
    name: &str,
) -> Option<&'a k8s_openapi::api::core::v1::ContainerStatus> {
    let find = |list: &'a Option<Vec<k8s_openapi::api::core::v1::ContainerStatus>>| {
        list.iter()
            .flatten()
            .find(|c| c.name == name && c.container_id.as_deref().is_some_and(|id| !id.is_empty()))
    };
    find(&status.container_statuses).or_else(|| find(&status.init_container_statuses))
}

/// `containerd://abc` → `abc` (upstream ParseContainerID keeps the ID part).
pub(crate) fn parse_container_id(id: &str) -> &str {
    id.split_once("://").map_or(id, |(_, rest)| rest)
}

fn is_terminal(status: &PodStatus) -> bool {
    matches!(status.phase.as_deref(), Some("Succeeded" | "Failed"))
}

/// Probe timings with upstream's defaults and minimums (1 s timeout and
/// period, thresholds of 1; defaulting in the API server normally fills
/// them in).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timings {
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    pub success_threshold: u32,
    pub failure_threshold: u32,
}

impl Timings {
    pub(crate) fn of(p: &Probe) -> Timings {
        let secs = |v: Option<i32>, default: i32, min: i32| {
            Duration::from_secs(u64::try_from(v.unwrap_or(default).max(min)).unwrap_or(1))
        };
        let count =
            |v: Option<i32>, default: i32| u32::try_from(v.unwrap_or(default).max(1)).unwrap_or(1);
        Timings {
            initial_delay: secs(p.initial_delay_seconds, 0, 0),
            period: secs(p.period_seconds, 10, 1),
            timeout: secs(p.timeout_seconds, 1, 1),
            success_threshold: count(p.success_threshold, 1),
            failure_threshold: count(p.failure_threshold, 3),
        }
    }
}

/// Go's `time.Duration` formatting for whole seconds ("1s", "1m30s").
pub(crate) fn go_duration(d: Duration) -> String {
    let s = d.as_secs();
    let frac = d.subsec_millis();
    let (h, m, sec) = (s / 3600, (s % 3600) / 60, s % 60);
    let secs = if frac == 0 {
        format!("{sec}s")
    } else {
        format!("{sec}.{}s", format!("{frac:03}").trim_end_matches('0'))
    };
    if h > 0 {
        format!("{h}h{m}m{secs}")
    } else if m > 0 {
        format!("{m}m{secs}")
    } else {
        secs
    }
}
