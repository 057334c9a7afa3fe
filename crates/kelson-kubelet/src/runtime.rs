//! Upstream's kuberuntime manager over CRI v1: pod sandboxes, image pulls,
//! init / sidecar / app containers with restart back-off, lifecycle hooks,
//! graceful stop, and the API status of a pod from what the runtime holds.
//!
//! * [`RuntimeManager::relist`] reads every sandbox and container from the
//!   CRI and groups them by the `io.kubernetes.pod.uid` label, so a
//!   restarted kubelet re-adopts everything it created.
//! * [`RuntimeManager::sync_pod`] is one pass of upstream's `SyncPod`
//!   (computePodActions, then act).
//! * [`RuntimeManager::kill_pod`] / [`RuntimeManager::remove_pod`] stop and
//!   remove a pod, from CRI state alone if the pod object is gone.
//! * [`RuntimeManager::api_status`] is upstream's `generateAPIPodStatus`.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, LifecycleHandler, Pod, PodStatus};
use kelson_cri::api;
use kelson_runtime::{EventType, Recorder};
use parking_lot::Mutex;

use crate::env;
use crate::resources::CgroupDriver;
use crate::sources::PodSources;
use crate::volume_manager::PodVolumes;

mod actions;
mod backoff;
mod config;
mod cri;
mod hooks;
mod images;
mod labels;
mod logs;
mod status;

#[cfg(test)]
mod fake;
#[cfg(test)]
mod tests;

pub use actions::{compute_pod_actions, KillInfo, KillReason, PodActions, ProbeView};
pub use config::{format_pod, ConfigError, HostDns};
pub use cri::{CriError, CriRuntime, ExecOutput};
pub use labels::ContainerInfo;

pub use crate::prober::ProbeState;

pub struct RuntimeConfig {
    pub node_name: String,
    /// Kubelet root (pods/<uid>/... per `volumes::pod_dir`).
    pub root_dir: PathBuf,
    /// `/var/log/pods`.
    pub pod_logs_dir: PathBuf,
    pub cgroup_driver: CgroupDriver,
    /// Parent of pod cgroups, e.g. `/kubepods`.
    pub cgroup_root: String,
    pub pause_image: String,
    pub cluster_dns: Vec<String>,
    pub cluster_domain: String,
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(transparent)]
    Cri(#[from] CriError),
    /// Several steps failed (Go aggregate text).
    #[error("{}", if .0.len() == 1 { .0[0].clone() } else { format!("[{}]", .0.join(", ")) })]
    Failed(Vec<String>),
    #[error("removing {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerState {
    Created,
    Running,
    Exited,
    Unknown,
}

impl ContainerState {
    /// Upstream's `kubecontainer.State` strings.
    pub fn as_str(self) -> &'static str {
        match self {
            ContainerState::Created => "created",
            ContainerState::Running => "running",
            ContainerState::Exited => "exited",
            ContainerState::Unknown => "unknown",
        }
    }

    fn from_cri(state: i32) -> ContainerState {
        match api::ContainerState::try_from(state) {
            Ok(api::ContainerState::ContainerCreated) => ContainerState::Created,
            Ok(api::ContainerState::ContainerRunning) => ContainerState::Running,
            Ok(api::ContainerState::ContainerExited) => ContainerState::Exited,
            _ => ContainerState::Unknown,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxStatus {
    pub id: String,
    pub ready: bool,
    pub ip: Option<String>,
    pub additional_ips: Vec<String>,
    /// Unix nanoseconds.
    pub created_at: i64,
    pub attempt: u32,
    /// Whether it uses the node's network namespace.
    pub host_network: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ContainerStatus {
    pub id: String,
    pub sandbox_id: String,
    pub name: String,
    pub state: ContainerState,
    /// Unix nanoseconds; 0 when unset.
    pub created_at: i64,
    pub started_at: i64,
    pub finished_at: i64,
    pub exit_code: i32,
    /// The runtime's reason (`Completed`, `Error`, `OOMKilled`, ...).
    pub reason: String,
    /// The runtime's message, with the termination message appended.
    pub message: String,
    pub image: String,
    pub image_ref: String,
    /// The restart count.
    pub attempt: i32,
    /// `io.kubernetes.container.hash`.
    pub hash: String,
    pub log_path: PathBuf,
    /// Everything the labels and annotations say.
    pub info: ContainerInfo,
}

impl ContainerStatus {
    pub fn is_running(&self) -> bool {
        self.state == ContainerState::Running
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct PodRuntimeStatus {
    pub uid: String,
    pub name: String,
    pub namespace: String,
    /// Newest first.
    pub sandboxes: Vec<SandboxStatus>,
    /// Newest first (so the first of a name is its latest instance).
    pub containers: Vec<ContainerStatus>,
}

/// What one sync needs besides the pod and its runtime state.
pub struct SyncContext<'a> {
    /// Prefetched ConfigMaps / Secrets / Services (env, pull secrets).
    pub sources: &'a PodSources,
    pub volumes: &'a PodVolumes,
    pub node_allocatable: &'a env::NodeAllocatable,
    /// Containers whose liveness or startup probe failed.
    pub unhealthy: &'a HashSet<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncResult {
    /// `(container or "" for the sandbox, reason, message)`.
    pub errors: Vec<(String, String, String)>,
}

/// Where events go; the recorder in production, a list in tests.
trait EventSink: Send + Sync {
    fn event(
        &self,
        pod: &Pod,
        field_path: Option<String>,
        kind: EventType,
        reason: &str,
        message: String,
    );
}

impl EventSink for Recorder {
    fn event(
        &self,
        pod: &Pod,
        field_path: Option<String>,
        kind: EventType,
        reason: &str,
        message: String,
    ) {
        let mut r = kelson_runtime::events::object_reference(pod);
        r.field_path = field_path;
        Recorder::event(self, &r, kind, reason, message);
    }
}

/// Mutable bookkeeping shared by syncs.
struct State {
    restart_backoff: backoff::Backoff,
    image_backoff: backoff::Backoff,
    prev_pull_errors: HashMap<String, String>,
    /// (pod uid, container) → waiting (reason, message) of the last start.
    reasons: HashMap<(String, String), (String, String)>,
    /// CRI status per container id and state (exited ones never change).
    container_cache: HashMap<String, (i32, ContainerStatus)>,
    sandbox_cache: HashMap<String, (i32, SandboxStatus)>,
    runtime_name: Option<String>,
}

type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

struct Inner {
    cri: Arc<dyn CriRuntime>,
    config: RuntimeConfig,
    events: Arc<dyn EventSink>,
    clock: Clock,
    memory_capacity: i64,
    host_dns: HostDns,
    state: Mutex<State>,
    /// The node's address(es), comma-separated for dual stack (downward
    /// API `status.hostIP`, host-network pod IPs); see `set_node_ip`.
    node_ip: Mutex<String>,
    /// Startup probe results gate sidecars; see `set_probe_state`.
    probes: Mutex<Option<Arc<dyn ProbeState + Send + Sync>>>,
}

/// The kuberuntime manager. Cheap to clone.
#[derive(Clone)]
pub struct RuntimeManager {
    inner: Arc<Inner>,
}

const RESTART_BACKOFF_INITIAL: i64 = 10;
const RESTART_BACKOFF_MAX: i64 = 300;
const MIN_GRACE_PERIOD: i64 = 2;

fn now_ns() -> i64 {
    jiff::Timestamp::now().as_nanosecond() as i64
}

/// MemTotal of /proc/meminfo in bytes (cadvisor's MemoryCapacity).
fn memory_capacity() -> i64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<i64>().ok())
        })
        .map_or(0, |kb| kb.saturating_mul(1024))
}

fn field_path(pod: &Pod, container: &str) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    if spec.containers.iter().any(|c| c.name == container) {
        return Some(format!("spec.containers{{{container}}}"));
    }
    if spec
        .init_containers
        .iter()
        .flatten()
        .any(|c| c.name == container)
    {
        return Some(format!("spec.initContainers{{{container}}}"));
    }
    None
}

fn pod_uid(pod: &Pod) -> String {
    pod.metadata.uid.clone().unwrap_or_default()
}

/// Upstream `GetStableKey`: the back-off key of a container.
fn stable_key(pod: &Pod, c: &Container) -> String {
    let m = &pod.metadata;
    format!(
        "{}_{}_{}_{}_{}",
        m.name.as_deref().unwrap_or(""),
        m.namespace.as_deref().unwrap_or(""),
        m.uid.as_deref().unwrap_or(""),
        c.name,
        labels::container_hash(c)
    )
}

/// Upstream `calcRestartCountByLogDir`: one past the highest `N.log`.
fn restart_count_from_logs(dir: &Path) -> i32 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_str()?
                .strip_suffix(".log")?
                .parse::<i32>()
                .ok()
        })
        .max()
        .map_or(0, |n| n.saturating_add(1))
}

impl RuntimeManager {
    pub fn new(cri: Arc<dyn CriRuntime>, config: RuntimeConfig, recorder: Recorder) -> Self {
        Self::build(
            cri,
            config,
            Arc::new(recorder),
            Arc::new(now_ns),
            HostDns::from_host(),
        )
    }

    fn build(
        cri: Arc<dyn CriRuntime>,
        config: RuntimeConfig,
        events: Arc<dyn EventSink>,
        clock: Clock,
        host_dns: HostDns,
    ) -> Self {
        RuntimeManager {
            inner: Arc::new(Inner {
                cri,
                config,
                events,
                clock,
                memory_capacity: memory_capacity(),
                host_dns,
                state: Mutex::new(State {
                    restart_backoff: backoff::Backoff::new(
                        RESTART_BACKOFF_INITIAL,
                        RESTART_BACKOFF_MAX,
                    ),
                    image_backoff: backoff::Backoff::new(
                        RESTART_BACKOFF_INITIAL,
                        RESTART_BACKOFF_MAX,
                    ),
                    prev_pull_errors: HashMap::new(),
                    reasons: HashMap::new(),
                    container_cache: HashMap::new(),
                    sandbox_cache: HashMap::new(),
                    runtime_name: None,
                }),
                node_ip: Mutex::new(String::new()),
                probes: Mutex::new(None),
            }),
        }
    }

    /// The node's address(es) (comma-separated for dual stack), for the
    /// downward API `status.hostIP` and host-network pod IPs.
    pub fn set_node_ip(&self, node_ip: impl Into<String>) {
        *self.inner.node_ip.lock() = node_ip.into();
    }

    /// The prober's results: a sidecar's startup probe gates the next init
    /// container. Without it, running sidecars count as started.
    pub fn set_probe_state(&self, probes: Arc<dyn ProbeState + Send + Sync>) {
        *self.inner.probes.lock() = Some(probes);
    }

    fn now(&self) -> i64 {
        (self.inner.clock)()
    }

    fn event(
        &self,
        pod: &Pod,
        container: Option<&str>,
        kind: EventType,
        reason: &str,
        msg: String,
    ) {
        let fp = container.and_then(|c| field_path(pod, c));
        self.inner.events.event(pod, fp, kind, reason, msg);
    }

    fn cri(&self) -> &dyn CriRuntime {
        self.inner.cri.as_ref()
    }

    /// The runtime's name for container IDs (`containerd://...`).
    async fn runtime_name(&self) -> String {
        if let Some(n) = self.inner.state.lock().runtime_name.clone() {
            return n;
        }
        match self.cri().version().await {
            Ok((name, _)) => {
                self.inner.state.lock().runtime_name = Some(name.clone());
                name
            }
            Err(_) => "containerd".into(),
        }
    }

    /// The container ID prefix reported in statuses.
    pub fn cached_runtime_name(&self) -> String {
        self.inner
            .state
            .lock()
            .runtime_name
            .clone()
            .unwrap_or_else(|| "containerd".into())
    }

    /// Every pod the runtime holds (sandboxes + containers grouped by the
    /// `io.kubernetes.pod.uid` label).
    pub async fn relist(&self) -> Result<HashMap<String, PodRuntimeStatus>, RuntimeError> {
        self.runtime_name().await;
        let sandboxes = self.cri().list_pod_sandboxes().await?;
        let containers = self.cri().list_containers().await?;
        let mut pods: HashMap<String, PodRuntimeStatus> = HashMap::new();
        let mut live: HashSet<String> = HashSet::new();

        for sb in sandboxes {
            let Some(uid) = sb.labels.get(labels::POD_UID_LABEL).cloned() else {
                continue;
            };
            live.insert(sb.id.clone());
            let cached = {
                let st = self.inner.state.lock();
                st.sandbox_cache
                    .get(&sb.id)
                    .filter(|(s, _)| *s == sb.state)
                    .map(|(_, v)| v.clone())
            };
            let status = match cached {
                Some(s) => s,
                None => match self.cri().pod_sandbox_status(&sb.id).await {
                    Ok(s) => {
                        let conv = convert_sandbox(&s);
                        self.inner
                            .state
                            .lock()
                            .sandbox_cache
                            .insert(sb.id.clone(), (sb.state, conv.clone()));
                        conv
                    }
                    Err(e) if e.is_not_found() => continue,
                    Err(e) => return Err(e.into()),
                },
            };
            let entry = pods.entry(uid.clone()).or_insert_with(|| PodRuntimeStatus {
                uid,
                name: sb
                    .labels
                    .get(labels::POD_NAME_LABEL)
                    .cloned()
                    .unwrap_or_default(),
                namespace: sb
                    .labels
                    .get(labels::POD_NAMESPACE_LABEL)
                    .cloned()
                    .unwrap_or_default(),
                ..Default::default()
            });
            entry.sandboxes.push(status);
        }

        for c in containers {
            let Some(uid) = c.labels.get(labels::POD_UID_LABEL).cloned() else {
                continue;
            };
            live.insert(c.id.clone());
            let cached = {
                let st = self.inner.state.lock();
                st.container_cache
                    .get(&c.id)
                    .filter(|(s, _)| *s == c.state)
                    .map(|(_, v)| v.clone())
            };
            let status = match cached {
                Some(s) => s,
                None => match self.cri().container_status(&c.id).await {
                    Ok(s) => {
                        let conv = convert_container(&s, &c.pod_sandbox_id);
                        self.inner
                            .state
                            .lock()
                            .container_cache
                            .insert(c.id.clone(), (s.state, conv.clone()));
                        conv
                    }
                    Err(e) if e.is_not_found() => continue,
                    Err(e) => return Err(e.into()),
                },
            };
            let entry = pods.entry(uid.clone()).or_insert_with(|| PodRuntimeStatus {
                uid,
                name: status.info.pod_name.clone(),
                namespace: status.info.pod_namespace.clone(),
                ..Default::default()
            });
            entry.containers.push(status);
        }
        {
            let mut st = self.inner.state.lock();
            st.container_cache.retain(|id, _| live.contains(id));
            st.sandbox_cache.retain(|id, _| live.contains(id));
        }
        for p in pods.values_mut() {
            p.sandboxes.sort_by_key(|s| std::cmp::Reverse(s.created_at));
            p.containers
                .sort_by_key(|c| std::cmp::Reverse(c.created_at));
        }
        Ok(pods)
    }

    /// One pass of upstream's SyncPod.
    pub async fn sync_pod(
        &self,
        pod: &Pod,
        status: &PodRuntimeStatus,
        ctx: &SyncContext<'_>,
    ) -> SyncResult {
        let mut result = SyncResult::default();
        let uid = pod_uid(pod);
        let probes = self.inner.probes.lock().clone();
        let node_ip = self.inner.node_ip.lock().clone();
        let started = |name: &str| probes.as_ref().and_then(|p| p.started(&uid, name));
        let actions = compute_pod_actions(
            pod,
            status,
            &ProbeView {
                unhealthy: ctx.unhealthy,
                started: &started,
            },
        );
        tracing::debug!(pod = %format_pod(pod), ?actions, "computePodActions");
        if actions.create_sandbox && !actions.sandbox_id.is_empty() {
            self.event(
                pod,
                None,
                EventType::Normal,
                "SandboxChanged",
                "Pod sandbox changed, it will be killed and re-created.".into(),
            );
        }

        if actions.kill_pod {
            if let Err(e) = self.kill_pod(Some(pod), status, None).await {
                result
                    .errors
                    .push((String::new(), "KillPodError".into(), e.to_string()));
                return result;
            }
            if actions.create_sandbox {
                self.purge_init_containers(pod, status).await;
            }
        } else {
            for k in &actions.containers_to_kill {
                let Some(cs) = status.containers.iter().find(|c| c.id == k.id) else {
                    continue;
                };
                if let Err(e) = self
                    .kill_container(Some(pod), cs, &k.message, k.reason, None, status)
                    .await
                {
                    result
                        .errors
                        .push((k.name.clone(), "KillContainerError".into(), e));
                    return result;
                }
            }
        }
        self.garbage_collect_containers(pod, status).await;

        if !actions.create_sandbox
            && actions.init_containers_to_start.is_empty()
            && actions.containers_to_start.is_empty()
        {
            return result;
        }

        let host_network = pod
            .spec
            .as_ref()
            .and_then(|s| s.host_network)
            .unwrap_or(false);
        let mut pod_ips: Vec<String> = status
            .sandboxes
            .first()
            .filter(|s| s.ready)
            .map(|s| {
                s.ip.iter()
                    .cloned()
                    .chain(s.additional_ips.iter().cloned())
                    .collect()
            })
            .unwrap_or_default();
        let mut sandbox_id = actions.sandbox_id.clone();
        let sandbox_config = config::sandbox_config(
            pod,
            actions.attempt,
            &self.inner.config,
            &self.inner.host_dns,
        );
        if actions.create_sandbox {
            match self.create_sandbox(pod, &sandbox_config).await {
                Ok((id, ips)) => {
                    sandbox_id = id;
                    if !host_network {
                        pod_ips = ips;
                    }
                }
                Err(msg) => {
                    result
                        .errors
                        .push((String::new(), "CreatePodSandboxError".into(), msg));
                    return result;
                }
            }
        }
        if host_network {
            pod_ips = node_ip
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect();
        }

        let spec = pod.spec.as_ref();
        let empty = Vec::new();
        let init = spec
            .and_then(|s| s.init_containers.as_ref())
            .unwrap_or(&empty);
        let regular = spec.map(|s| &s.containers).unwrap_or(&empty);
        let sb = StartArgs {
            node_ip: &node_ip,
            sandbox_id: &sandbox_id,
            sandbox_config: &sandbox_config,
            pod_ips: &pod_ips,
        };
        for &idx in &actions.init_containers_to_start {
            let Some(c) = init.get(idx) else { continue };
            if let Err((reason, msg)) = self.start_container(pod, c, status, ctx, &sb).await {
                self.set_reason(&uid, &c.name, Some((reason.clone(), msg.clone())));
                result.errors.push((c.name.clone(), reason, msg));
                if actions::is_sidecar(c) {
                    continue;
                }
                return result;
            }
            self.set_reason(&uid, &c.name, None);
        }
        for &idx in &actions.containers_to_start {
            let Some(c) = regular.get(idx) else { continue };
            match self.start_container(pod, c, status, ctx, &sb).await {
                Ok(()) => self.set_reason(&uid, &c.name, None),
                Err((reason, msg)) => {
                    self.set_reason(&uid, &c.name, Some((reason.clone(), msg.clone())));
                    result.errors.push((c.name.clone(), reason, msg));
                }
            }
        }
        result
    }

    fn set_reason(&self, uid: &str, container: &str, v: Option<(String, String)>) {
        let key = (uid.to_string(), container.to_string());
        let mut st = self.inner.state.lock();
        match v {
            Some(v) => {
                st.reasons.insert(key, v);
            }
            None => {
                st.reasons.remove(&key);
            }
        }
    }

    /// Runs the sandbox; its id and IPs. The error is the user-facing
    /// message.
    async fn create_sandbox(
        &self,
        pod: &Pod,
        cfg: &api::PodSandboxConfig,
    ) -> Result<(String, Vec<String>), String> {
        let fail = |e: String| {
            self.event(
                pod,
                None,
                EventType::Warning,
                "FailedCreatePodSandBox",
                format!("Failed to create pod sandbox: {e}"),
            );
            e
        };
        // The CRI does not create the log directory.
        let dir = PathBuf::from(&cfg.log_directory);
        if let Err(e) = std::fs::create_dir_all(&dir) {
            return Err(fail(format!(
                "create pod log directory {}: {e}",
                dir.display()
            )));
        }
        let t0 = std::time::Instant::now();
        let id = self
            .cri()
            .run_pod_sandbox(cfg.clone())
            .await
            .map_err(|e| fail(e.to_string()))?;
        tracing::debug!(pod = %format_pod(pod), ms = t0.elapsed().as_millis() as u64, "RunPodSandbox");
        let status = self.cri().pod_sandbox_status(&id).await.map_err(|e| {
            self.event(
                pod,
                None,
                EventType::Warning,
                "FailedStatusPodSandBox",
                format!("Unable to get pod sandbox status: {e}"),
            );
            e.to_string()
        })?;
        let conv = convert_sandbox(&status);
        let ips = conv
            .ip
            .iter()
            .filter(|s| !s.is_empty())
            .cloned()
            .chain(conv.additional_ips.iter().cloned())
            .collect();
        Ok((id, ips))
    }
}

struct StartArgs<'a> {
    node_ip: &'a str,
    sandbox_id: &'a str,
    sandbox_config: &'a api::PodSandboxConfig,
    pod_ips: &'a [String],
}

type StartError = (String, String);

impl RuntimeManager {
    /// Upstream `doBackOff` + `startContainer`.
    async fn start_container(
        &self,
        pod: &Pod,
        c: &Container,
        status: &PodRuntimeStatus,
        ctx: &SyncContext<'_>,
        sb: &StartArgs<'_>,
    ) -> Result<(), StartError> {
        let fp = format_pod(pod);
        // Back-off measured from when the last instance finished.
        if let Some(exited) = status
            .containers
            .iter()
            .find(|s| s.name == c.name && s.state == ContainerState::Exited)
        {
            let key = stable_key(pod, c);
            let now = self.now();
            let in_backoff = {
                let mut st = self.inner.state.lock();
                if st
                    .restart_backoff
                    .is_in_backoff_since(&key, exited.finished_at, now)
                {
                    Some(st.restart_backoff.get(&key))
                } else {
                    st.restart_backoff.next(&key, exited.finished_at, now);
                    None
                }
            };
            if let Some(delay) = in_backoff {
                self.event(
                    pod,
                    Some(&c.name),
                    EventType::Warning,
                    "BackOff",
                    format!(
                        "Back-off restarting failed container {} in pod {fp}",
                        c.name
                    ),
                );
                return Err((
                    "CrashLoopBackOff".into(),
                    format!(
                        "back-off {} restarting failed container={} pod={fp}",
                        backoff::go_duration(delay),
                        c.name
                    ),
                ));
            }
        }

        let t0 = std::time::Instant::now();
        let (image_ref, image_uid, image_user) = self.ensure_image(pod, c, ctx, sb).await?;
        let t_image = t0.elapsed();

        let restart_count = match status.containers.iter().find(|s| s.name == c.name) {
            Some(s) => s.attempt.saturating_add(1),
            None => restart_count_from_logs(
                &PathBuf::from(&sb.sandbox_config.log_directory).join(&c.name),
            ),
        };

        let config_err = |e: String| {
            self.event(
                pod,
                Some(&c.name),
                EventType::Warning,
                "Failed",
                format!("Error: {e}"),
            );
            ("CreateContainerConfigError".to_string(), e)
        };
        let cfg = self
            .container_config(
                pod,
                c,
                ctx,
                sb,
                restart_count,
                &image_ref,
                image_uid,
                &image_user,
            )
            .map_err(|e| config_err(e.to_string()))?;

        let id = match self
            .cri()
            .create_container(sb.sandbox_id, cfg, sb.sandbox_config.clone())
            .await
        {
            Ok(id) => id,
            Err(e) => {
                let msg = e.message().to_string();
                self.event(
                    pod,
                    Some(&c.name),
                    EventType::Warning,
                    "Failed",
                    format!("Error: {msg}"),
                );
                return Err(("CreateContainerError".into(), msg));
            }
        };
        let t_create = t0.elapsed();
        self.event(
            pod,
            Some(&c.name),
            EventType::Normal,
            "Created",
            format!("Created container: {}", c.name),
        );
        let started = self.cri().start_container(&id).await;
        tracing::debug!(
            pod = %fp,
            container = %c.name,
            image_ms = t_image.as_millis() as u64,
            create_ms = t_create.as_millis() as u64,
            start_ms = t0.elapsed().as_millis() as u64,
            "container started"
        );
        if let Err(e) = started {
            let msg = e.message().to_string();
            self.event(
                pod,
                Some(&c.name),
                EventType::Warning,
                "Failed",
                format!("Error: {msg}"),
            );
            return Err(("RunContainerError".into(), msg));
        }
        self.event(
            pod,
            Some(&c.name),
            EventType::Normal,
            "Started",
            format!("Started container {}", c.name),
        );

        if let Some(h) = c.lifecycle.as_ref().and_then(|l| l.post_start.as_ref()) {
            let pod_ip = sb.pod_ips.first().cloned().unwrap_or_default();
            if let Err(msg) = hooks::run(self.cri(), pod, c, &id, h, &pod_ip, None).await {
                // The hook's output may hold secrets: not in the event.
                self.event(
                    pod,
                    Some(&c.name),
                    EventType::Warning,
                    "FailedPostStartHook",
                    "PostStartHook failed".into(),
                );
                let cs = ContainerStatus {
                    id: id.clone(),
                    sandbox_id: sb.sandbox_id.to_string(),
                    name: c.name.clone(),
                    state: ContainerState::Running,
                    created_at: 0,
                    started_at: 0,
                    finished_at: 0,
                    exit_code: 0,
                    reason: String::new(),
                    message: String::new(),
                    image: String::new(),
                    image_ref: String::new(),
                    attempt: restart_count,
                    hash: String::new(),
                    log_path: PathBuf::new(),
                    info: ContainerInfo::default(),
                };
                let _ = self
                    .kill_container(
                        Some(pod),
                        &cs,
                        "FailedPostStartHook",
                        KillReason::Other,
                        None,
                        status,
                    )
                    .await;
                return Err(("PostStartHookError".into(), msg));
            }
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn container_config(
        &self,
        pod: &Pod,
        c: &Container,
        ctx: &SyncContext<'_>,
        sb: &StartArgs<'_>,
        restart_count: i32,
        image_ref: &str,
        image_uid: Option<i64>,
        image_user: &str,
    ) -> Result<api::ContainerConfig, ConfigError> {
        let ns = pod.metadata.namespace.as_deref().unwrap_or("");
        let links = pod
            .spec
            .as_ref()
            .and_then(|s| s.enable_service_links)
            .unwrap_or(true);
        let service_env = env::service_env(ctx.sources.services(), ns, links);
        let vars = env::container_env(
            pod,
            c,
            &service_env,
            sb.node_ip,
            sb.pod_ips,
            ctx.sources,
            ctx.node_allocatable,
        )?;
        let mut mounts = config::volume_mounts(c, &vars, &ctx.volumes.volumes)?;
        let root = &self.inner.config.root_dir;
        let uid = pod_uid(pod);
        // /etc/hosts managed by the kubelet, unless the container mounts
        // something there itself.
        if !sb.pod_ips.is_empty() && !mounts.iter().any(|m| m.container_path == "/etc/hosts") {
            let hosts =
                config::write_hosts_file(root, pod, sb.pod_ips, &self.inner.config.cluster_domain)?;
            mounts.push(api::Mount {
                container_path: "/etc/hosts".into(),
                host_path: hosts.to_string_lossy().into_owned(),
                ..Default::default()
            });
        }
        let tmp = c
            .termination_message_path
            .clone()
            .unwrap_or_else(|| "/dev/termination-log".into());
        if !tmp.is_empty() {
            let file = config::create_termination_file(root, &uid, &c.name)?;
            mounts.push(api::Mount {
                container_path: tmp,
                host_path: file.to_string_lossy().into_owned(),
                ..Default::default()
            });
        }
        config::container_config(
            pod,
            c,
            config::ContainerInputs {
                restart_count,
                image_ref,
                env: &vars,
                mounts,
                image_uid,
                image_user,
                memory_capacity: self.inner.memory_capacity,
            },
        )
    }

    /// Upstream `EnsureImageExists`: the image id and its user.
    async fn ensure_image(
        &self,
        pod: &Pod,
        c: &Container,
        ctx: &SyncContext<'_>,
        sb: &StartArgs<'_>,
    ) -> Result<(String, Option<i64>, String), StartError> {
        let requested = c.image.clone().unwrap_or_default();
        let ev = |kind: EventType, reason: &str, msg: String| {
            self.event(pod, Some(&c.name), kind, reason, msg)
        };
        if requested.is_empty() {
            let msg = format!("Failed to apply default image tag \"{requested}\": couldn't parse image name \"{requested}\": invalid reference format");
            ev(EventType::Warning, "InspectFailed", msg.clone());
            return Err(("InvalidImageName".into(), msg));
        }
        let image = images::with_default_tag(&requested);
        let user_of = |img: &api::Image| (img.uid.as_ref().map(|u| u.value), img.username.clone());
        let present = match self.cri().image_status(&image).await {
            Ok(p) => p,
            Err(e) => {
                let msg = format!("Failed to inspect image \"{image}\": {e}");
                ev(EventType::Warning, "InspectFailed", msg.clone());
                return Err(("ImageInspectError".into(), msg));
            }
        };
        let policy = images::pull_policy(c);
        if !images::should_pull(&policy, present.is_some()) {
            return match present {
                Some(img) => {
                    ev(
                        EventType::Normal,
                        "Pulled",
                        format!("Container image \"{requested}\" already present on machine"),
                    );
                    let (uid, user) = user_of(&img);
                    Ok((img.id.clone(), uid, user))
                }
                None => {
                    let msg = format!(
                        "Container image \"{requested}\" is not present with pull policy of Never"
                    );
                    ev(EventType::Warning, "ErrImageNeverPull", msg.clone());
                    Err(("ErrImageNeverPull".into(), msg))
                }
            };
        }
        let key = format!("{}_{image}", pod_uid(pod));
        let now = self.now();
        let backoff_msg = {
            let st = self.inner.state.lock();
            st.image_backoff
                .is_in_backoff_since_update(&key, now)
                .then(|| st.prev_pull_errors.get(&key).cloned())
        };
        if let Some(prev) = backoff_msg {
            let msg = format!("Back-off pulling image \"{image}\"");
            ev(EventType::Normal, "BackOff", msg.clone());
            let msg = match prev {
                Some(p) => format!("{msg}: {p}"),
                None => msg,
            };
            return Err(("ImagePullBackOff".into(), msg));
        }
        ev(
            EventType::Normal,
            "Pulling",
            format!("Pulling image \"{image}\""),
        );
        let started = Instant::now();
        let creds = images::credentials_for(&image, &ctx.sources.pull_secrets());
        let mut outcome: Result<String, CriError> = Err(CriError::NotFound(String::new()));
        if creds.is_empty() {
            outcome = self
                .cri()
                .pull_image(&image, None, Some(sb.sandbox_config.clone()))
                .await;
        } else {
            for auth in creds {
                outcome = self
                    .cri()
                    .pull_image(&image, Some(auth), Some(sb.sandbox_config.clone()))
                    .await;
                if outcome.is_ok() {
                    break;
                }
            }
        }
        match outcome {
            Err(e) => {
                ev(
                    EventType::Warning,
                    "Failed",
                    format!("Failed to pull image \"{image}\": {e}"),
                );
                let msg = e.to_string();
                let mut st = self.inner.state.lock();
                let now = self.now();
                st.image_backoff.next(&key, now, now);
                st.prev_pull_errors
                    .insert(key, format!("ErrImagePull: {msg}"));
                Err(("ErrImagePull".into(), msg))
            }
            Ok(image_ref) => {
                let elapsed = started.elapsed();
                let ms = (elapsed.as_millis() as i64).saturating_mul(1_000_000);
                let info = self.cri().image_status(&image_ref).await.ok().flatten();
                let size = info.as_ref().map_or(0, |i| i.size);
                ev(
                    EventType::Normal,
                    "Pulled",
                    format!(
                        "Successfully pulled image \"{image}\" in {} ({} including waiting). Image size: {size} bytes.",
                        backoff::go_duration(ms),
                        backoff::go_duration(ms)
                    ),
                );
                {
                    let mut st = self.inner.state.lock();
                    let now = self.now();
                    st.image_backoff.gc(now);
                }
                let (uid, user) = info.as_ref().map(user_of).unwrap_or((None, String::new()));
                Ok((image_ref, uid, user))
            }
        }
    }

    /// Upstream `killContainer`: the Killing event, the preStop hook within
    /// the grace period, then StopContainer with what is left (at least
    /// 2 s).
    async fn kill_container(
        &self,
        pod: Option<&Pod>,
        cs: &ContainerStatus,
        message: &str,
        reason: KillReason,
        grace_override: Option<i64>,
        status: &PodRuntimeStatus,
    ) -> Result<(), String> {
        let restored;
        let (pod, spec): (&Pod, Container) = match pod {
            Some(p) => {
                let spec = p
                    .spec
                    .as_ref()
                    .and_then(|s| {
                        s.containers
                            .iter()
                            .chain(s.init_containers.iter().flatten())
                            .find(|c| c.name == cs.name)
                            .cloned()
                    })
                    // A container no longer in the spec: what its labels say.
                    .unwrap_or_else(|| cs.info.restore().1);
                (p, spec)
            }
            None => {
                let (p, c) = cs.info.restore();
                restored = p;
                (&restored, c)
            }
        };
        let mut grace = termination_grace_period(pod, &spec, reason);
        let message = if message.is_empty() {
            format!("Stopping container {}", spec.name)
        } else {
            message.to_string()
        };
        self.event(pod, Some(&spec.name), EventType::Normal, "Killing", message);
        if let Some(g) = grace_override {
            grace = g;
        }
        if let Some(h) = spec.lifecycle.as_ref().and_then(|l| l.pre_stop.as_ref()) {
            if grace > 0 {
                grace -= self.pre_stop(pod, &spec, cs, h, grace, status).await;
            }
        }
        let grace = grace.max(MIN_GRACE_PERIOD);
        match self.cri().stop_container(&cs.id, grace).await {
            Ok(()) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Runs the preStop hook for at most `grace` seconds; the whole
    /// seconds it took.
    async fn pre_stop(
        &self,
        pod: &Pod,
        spec: &Container,
        cs: &ContainerStatus,
        h: &LifecycleHandler,
        grace: i64,
        status: &PodRuntimeStatus,
    ) -> i64 {
        let start = Instant::now();
        let pod_ip = status
            .sandboxes
            .first()
            .and_then(|s| s.ip.clone())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "127.0.0.1".into());
        let limit = Duration::from_secs(u64::try_from(grace).unwrap_or(0));
        let run = hooks::run(self.cri(), pod, spec, &cs.id, h, &pod_ip, Some(limit));
        match tokio::time::timeout(limit, run).await {
            Ok(Ok(())) => {}
            Ok(Err(msg)) => self.event(
                pod,
                Some(&spec.name),
                EventType::Warning,
                "FailedPreStopHook",
                msg,
            ),
            Err(_) => tracing::info!(
                pod = %format_pod(pod),
                container = %spec.name,
                "PreStop hook not completed in grace period"
            ),
        }
        start.elapsed().as_secs() as i64
    }

    /// Graceful stop: preStop hooks, SIGTERM, SIGKILL after the grace
    /// period, regular containers before sidecars, then the sandboxes.
    pub async fn kill_pod(
        &self,
        pod: Option<&Pod>,
        status: &PodRuntimeStatus,
        grace_override: Option<i64>,
    ) -> Result<(), RuntimeError> {
        let sidecars: HashSet<&str> = pod
            .and_then(|p| p.spec.as_ref())
            .map(|s| {
                s.init_containers
                    .iter()
                    .flatten()
                    .filter(|c| actions::is_sidecar(c))
                    .map(|c| c.name.as_str())
                    .collect()
            })
            .unwrap_or_default();
        let running: Vec<&ContainerStatus> = status
            .containers
            .iter()
            .filter(|c| c.state == ContainerState::Running)
            .collect();
        let mut errors = Vec::new();
        for phase_sidecars in [false, true] {
            let batch = running
                .iter()
                .filter(|c| sidecars.contains(c.name.as_str()) == phase_sidecars)
                .map(|c| {
                    self.kill_container(pod, c, "", KillReason::Other, grace_override, status)
                });
            for r in futures::future::join_all(batch).await {
                if let Err(e) = r {
                    errors.push(e);
                }
            }
        }
        for sb in &status.sandboxes {
            match self.cri().stop_pod_sandbox(&sb.id).await {
                Ok(()) => {}
                Err(e) if e.is_not_found() => {}
                Err(e) => errors.push(e.to_string()),
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(RuntimeError::Failed(errors))
        }
    }

    /// Removes the stopped containers and sandboxes of a pod (after
    /// `kill_pod`), and its log directory.
    pub async fn remove_pod(&self, status: &PodRuntimeStatus) -> Result<(), RuntimeError> {
        let mut errors = Vec::new();
        for c in &status.containers {
            if let Err(e) = self.cri().remove_container(&c.id).await {
                if !e.is_not_found() {
                    errors.push(e.to_string());
                }
            }
        }
        for sb in &status.sandboxes {
            for r in [
                self.cri().stop_pod_sandbox(&sb.id).await,
                self.cri().remove_pod_sandbox(&sb.id).await,
            ] {
                if let Err(e) = r {
                    if !e.is_not_found() {
                        errors.push(e.to_string());
                    }
                }
            }
        }
        {
            let mut st = self.inner.state.lock();
            st.reasons.retain(|(uid, _), _| *uid != status.uid);
            st.prev_pull_errors
                .retain(|k, _| !k.starts_with(&format!("{}_", status.uid)));
        }
        if !errors.is_empty() {
            return Err(RuntimeError::Failed(errors));
        }
        let dir = config::pod_log_dir(
            &self.inner.config.pod_logs_dir,
            &status.namespace,
            &status.name,
            &status.uid,
        );
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(RuntimeError::Io { path: dir, source }),
        }
    }

    /// Upstream `purgeInitContainers`: a new sandbox starts init over.
    async fn purge_init_containers(&self, pod: &Pod, status: &PodRuntimeStatus) {
        let names: HashSet<&str> = pod
            .spec
            .as_ref()
            .map(|s| {
                s.init_containers
                    .iter()
                    .flatten()
                    .map(|c| c.name.as_str())
                    .collect()
            })
            .unwrap_or_default();
        for c in status
            .containers
            .iter()
            .filter(|c| names.contains(c.name.as_str()))
        {
            self.remove_container(c).await;
        }
    }

    async fn remove_container(&self, c: &ContainerStatus) {
        if let Err(e) = self.cri().remove_container(&c.id).await {
            if !e.is_not_found() {
                tracing::warn!(container = %c.id, "removing container: {e}");
            }
            return;
        }
        if !c.log_path.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&c.log_path);
        }
    }

    /// Dead containers beyond what the status needs: per name, the newest
    /// instance and the newest exited one are kept (upstream's GC with
    /// MaxPerPodContainer=1 and `pruneInitContainersBeforeStart`).
    async fn garbage_collect_containers(&self, _pod: &Pod, status: &PodRuntimeStatus) {
        let mut seen_any: HashSet<&str> = HashSet::new();
        let mut seen_exited: HashSet<&str> = HashSet::new();
        let mut doomed = Vec::new();
        for c in &status.containers {
            let first = seen_any.insert(c.name.as_str());
            if c.state != ContainerState::Exited {
                continue;
            }
            let first_exited = seen_exited.insert(c.name.as_str());
            if !first && !first_exited {
                doomed.push(c);
            }
        }
        for c in doomed {
            self.remove_container(c).await;
        }
    }

    /// Upstream's FailedMount event for a pod whose volumes could not be
    /// set up (its containers keep waiting in ContainerCreating);
    /// `message` is the volume manager's ("MountVolume.SetUp failed ...").
    pub fn record_failed_mount(&self, pod: &Pod, message: &str) {
        self.event(
            pod,
            None,
            EventType::Warning,
            "FailedMount",
            message.to_string(),
        );
    }

    /// The API status of a pod from its runtime state.
    pub fn api_status(
        &self,
        pod: &Pod,
        status: &PodRuntimeStatus,
        probes: &dyn ProbeState,
        host_ip: &str,
    ) -> PodStatus {
        let uid = pod_uid(pod);
        let reasons: HashMap<String, (String, String)> = {
            let st = self.inner.state.lock();
            st.reasons
                .iter()
                .filter(|((u, _), _)| *u == uid)
                .map(|((_, c), v)| (c.clone(), v.clone()))
                .collect()
        };
        let runtime_name = self.cached_runtime_name();
        let now = jiff::Timestamp::from_nanosecond(i128::from(self.now()))
            .unwrap_or_else(|_| jiff::Timestamp::now());
        status::api_status(
            pod,
            status,
            &status::StatusInputs {
                runtime_name: &runtime_name,
                host_ip,
                probes,
                reasons: &reasons,
                now,
            },
        )
    }
}

/// Upstream `setTerminationGracePeriod`.
fn termination_grace_period(pod: &Pod, c: &Container, reason: KillReason) -> i64 {
    if let Some(g) = pod.metadata.deletion_grace_period_seconds {
        return g;
    }
    let Some(g) = pod
        .spec
        .as_ref()
        .and_then(|s| s.termination_grace_period_seconds)
    else {
        return MIN_GRACE_PERIOD;
    };
    let probe = match reason {
        KillReason::StartupProbe => c.startup_probe.as_ref(),
        KillReason::LivenessProbe => c.liveness_probe.as_ref(),
        _ => None,
    };
    probe
        .and_then(|p| p.termination_grace_period_seconds)
        .unwrap_or(g)
}

fn convert_sandbox(s: &api::PodSandboxStatus) -> SandboxStatus {
    let net = s.network.as_ref();
    SandboxStatus {
        id: s.id.clone(),
        ready: s.state == api::PodSandboxState::SandboxReady as i32,
        ip: net.map(|n| n.ip.clone()).filter(|ip| !ip.is_empty()),
        additional_ips: net
            .map(|n| n.additional_ips.iter().map(|i| i.ip.clone()).collect())
            .unwrap_or_default(),
        created_at: s.created_at,
        attempt: s.metadata.as_ref().map_or(0, |m| m.attempt),
        host_network: s
            .linux
            .as_ref()
            .and_then(|l| l.namespaces.as_ref())
            .and_then(|n| n.options.as_ref())
            .is_some_and(|o| o.network == api::NamespaceMode::Node as i32),
    }
}

/// Upstream `convertToKubeContainerStatus`, with the termination message
/// (or the log tail for FallbackToLogsOnError) appended to the message.
fn convert_container(s: &api::ContainerStatus, sandbox_id: &str) -> ContainerStatus {
    let info = ContainerInfo::from_cri(&s.labels, &s.annotations);
    let state = ContainerState::from_cri(s.state);
    let mut out = ContainerStatus {
        id: s.id.clone(),
        sandbox_id: sandbox_id.to_string(),
        name: if info.container_name.is_empty() {
            s.metadata
                .as_ref()
                .map(|m| m.name.clone())
                .unwrap_or_default()
        } else {
            info.container_name.clone()
        },
        state,
        created_at: s.created_at,
        started_at: s.started_at,
        finished_at: s.finished_at,
        exit_code: s.exit_code,
        reason: s.reason.clone(),
        message: s.message.clone(),
        image: s
            .image
            .as_ref()
            .map(|i| i.image.clone())
            .unwrap_or_default(),
        image_ref: s.image_ref.clone(),
        attempt: info.restart_count,
        hash: info.hash.clone(),
        log_path: PathBuf::from(&s.log_path),
        info,
    };
    if state != ContainerState::Running {
        let fallback = out.info.termination_message_policy == "FallbackToLogsOnError"
            && out.exit_code != 0
            && out.reason != "ContainerCannotRun";
        let (mut msg, check_logs) =
            logs::termination_message(&s.mounts, &out.info.termination_message_path, fallback);
        if check_logs {
            msg = logs::last_log_lines(&out.log_path);
        }
        if !msg.is_empty() {
            if !out.message.is_empty() {
                out.message.push_str(": ");
            }
            out.message.push_str(&msg);
        }
    }
    out
}
