//! The kubelet's Node: registration (upstream `tryRegisterWithAPIServer`),
//! the status updates (`syncNodeStatus`: every 10 s, sent when something
//! changed or every 5 min) and the heartbeat Lease in `kube-node-lease`
//! (renewed every 10 s, 40 s long, owned by the Node).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

mod host;
mod status;

pub use host::{
    allocatable_ephemeral_storage, allocatable_memory, binary_si, go_arch, HostInfo,
    EVICTION_MEMORY_BYTES,
};
pub use status::{
    default_labels, desired_status, initial_node, node_labels, status_changed, RuntimeState,
    StatusInputs, CMAD_ANNOTATION, RUNTIME_SYNC_THRESHOLD,
};

/// What `kubectl get nodes` shows as VERSION: the upstream release whose
/// behaviour Kelson follows.
pub const KUBELET_VERSION: &str = "v1.33.0";
/// Where heartbeat Leases live.
pub const LEASE_NAMESPACE: &str = "kube-node-lease";
/// Upstream's default `nodeLeaseDurationSeconds`.
pub const LEASE_DURATION_SECONDS: i32 = 40;

#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub name: String,
    pub node_ip: IpAddr,
    pub kubelet_port: u16,
    /// Extra labels (`--node-labels`); they override the defaults.
    pub labels: BTreeMap<String, String>,
    /// `pods` capacity (upstream default 110).
    pub max_pods: u32,
    /// The kubelet's root directory; its filesystem is ephemeral storage.
    pub root_dir: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("unable to register node {name:?} with API server: {source}")]
    Register {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("error updating node status: {0}")]
    Status(#[source] kube::Error),
}

/// One condition of a CRI `Status` answer (`RuntimeReady`, `NetworkReady`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeCondition {
    pub type_: String,
    pub status: bool,
    pub reason: String,
    pub message: String,
}

/// Where the status loop learns whether the runtime and its network are
/// ready (CRI `Status`); a trait so tests can play a runtime.
#[async_trait::async_trait]
pub trait RuntimeStatusSource: Send + Sync + 'static {
    async fn runtime_conditions(&self) -> Result<Vec<RuntimeCondition>, String>;
}

#[async_trait::async_trait]
impl RuntimeStatusSource for kelson_cri::Cri {
    async fn runtime_conditions(&self) -> Result<Vec<RuntimeCondition>, String> {
        let mut rt = self.runtime_client();
        let resp = rt
            .status(kelson_cri::api::StatusRequest { verbose: false })
            .await
            .map_err(|s| s.to_string())?
            .into_inner();
        Ok(resp
            .status
            .map(|s| s.conditions)
            .unwrap_or_default()
            .into_iter()
            .map(|c| RuntimeCondition {
                type_: c.r#type,
                status: c.status,
                reason: c.reason,
                message: c.message,
            })
            .collect())
    }
}

/// `containerd://1.7.24`: how nodeInfo.containerRuntimeVersion reads a CRI
/// `Version` answer.
pub fn runtime_version_string(v: &kelson_cri::api::VersionResponse) -> String {
    format!("{}://{}", v.runtime_name, v.runtime_version)
}

fn now() -> Timestamp {
    Timestamp::now()
}

/// Creates the Node, or — when it exists (a restart, or a re-join) —
/// brings its labels and annotation up to date and reports a fresh status,
/// keeping the object (its UID, spec, taints and podCIDR). Returns the
/// stored Node.
///
/// A new Node starts NotReady ("container runtime status check may not
/// have completed yet"): readiness is the status loop's to report. An
/// existing Node keeps its conditions until then.
pub async fn register(
    client: &kube::Client,
    cfg: &NodeConfig,
    runtime_version: &str,
) -> Result<Node, NodeError> {
    let host = HostInfo::detect(&cfg.root_dir);
    let reg_err = |source| NodeError::Register {
        name: cfg.name.clone(),
        source,
    };
    let pending = RuntimeState::default().errors(Instant::now());
    let api: Api<Node> = Api::all(client.clone());
    let inputs = StatusInputs {
        cfg,
        host: &host,
        runtime_version,
        runtime_errors: &pending,
        now: now(),
    };
    let node = initial_node(&inputs);
    match api.create(&PostParams::default(), &node).await {
        Ok(created) => {
            // A server that drops status on create still gets ours.
            if created
                .status
                .as_ref()
                .and_then(|s| s.node_info.as_ref())
                .is_some()
            {
                return Ok(created);
            }
            let patch = json!({ "status": node.status });
            return api
                .patch_status(&cfg.name, &PatchParams::default(), &Patch::Strategic(patch))
                .await
                .map_err(reg_err);
        }
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => return Err(reg_err(e)),
    }

    let existing = api.get(&cfg.name).await.map_err(reg_err)?;
    let want_labels = node_labels(cfg);
    let have_labels = existing.metadata.labels.clone().unwrap_or_default();
    let have_cmad = existing
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(CMAD_ANNOTATION))
        .map(String::as_str);
    let labels_stale = want_labels
        .iter()
        .any(|(k, v)| have_labels.get(k) != Some(v));
    if labels_stale || have_cmad != Some("true") {
        let patch = json!({"metadata": {
            "labels": want_labels,
            "annotations": {CMAD_ANNOTATION: "true"},
        }});
        api.patch(&cfg.name, &PatchParams::default(), &Patch::Merge(patch))
            .await
            .map_err(reg_err)?;
    }
    // Capacity, addresses and nodeInfo (a new bootID after a reboot) now;
    // the conditions stay as stored until the loop knows the runtime.
    let mut status = desired_status(existing.status.as_ref(), &inputs);
    status.conditions = existing.status.as_ref().and_then(|s| s.conditions.clone());
    let patch = json!({ "status": status });
    api.patch_status(&cfg.name, &PatchParams::default(), &Patch::Strategic(patch))
        .await
        .map_err(reg_err)
}

/// How often the status loop works; [`StatusTiming::default`] is upstream's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusTiming {
    /// `nodeStatusUpdateFrequency` (10 s): how often the status is computed
    /// (and the runtime asked).
    pub update: Duration,
    /// `nodeStatusReportFrequency` (5 min): an unchanged status is still
    /// sent this often.
    pub report: Duration,
    /// Lease renewal (a quarter of the lease duration, 10 s).
    pub lease_renew: Duration,
    pub lease_duration_seconds: i32,
}

impl Default for StatusTiming {
    fn default() -> Self {
        StatusTiming {
            update: Duration::from_secs(10),
            report: Duration::from_secs(300),
            lease_renew: Duration::from_secs(10),
            lease_duration_seconds: LEASE_DURATION_SECONDS,
        }
    }
}

/// Background: the Lease renewed every 10 s, the node status recomputed
/// every 10 s from the runtime's readiness and sent when it changed or
/// every 5 min. Ends when `cancel` fires.
pub fn spawn_status_loop(
    client: kube::Client,
    cfg: NodeConfig,
    runtime_version: String,
    runtime: Arc<dyn RuntimeStatusSource>,
    cancel: CancellationToken,
) -> JoinHandle<()> {
    spawn_status_loop_with(
        client,
        cfg,
        runtime_version,
        runtime,
        StatusTiming::default(),
        cancel,
    )
}

/// [`spawn_status_loop`] with its intervals given.
pub fn spawn_status_loop_with(
    client: kube::Client,
    cfg: NodeConfig,
    runtime_version: String,
    runtime: Arc<dyn RuntimeStatusSource>,
    timing: StatusTiming,
    cancel: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let lease = lease_loop(client.clone(), cfg.name.clone(), timing, cancel.clone());
        let status = status_loop(client, cfg, runtime_version, runtime, timing, cancel);
        tokio::join!(lease, status);
    })
}

/// How often the status is checked until the node is first Ready.
const FAST_UPDATE: Duration = Duration::from_millis(200);

async fn status_loop(
    client: kube::Client,
    cfg: NodeConfig,
    runtime_version: String,
    runtime: Arc<dyn RuntimeStatusSource>,
    timing: StatusTiming,
    cancel: CancellationToken,
) {
    let api: Api<Node> = Api::all(client);
    let host = HostInfo::detect(&cfg.root_dir);
    let mut state = RuntimeState::default();
    let mut last_report: Option<Instant> = None;
    // Until the node has first reported Ready, check often (upstream's
    // fast status update at start): a node should turn Ready as soon as
    // its runtime and network are, not up to a whole period later.
    let mut fast = true;
    let mut first = true;
    loop {
        let wait = if first {
            Duration::ZERO
        } else if fast {
            FAST_UPDATE
        } else {
            timing.update
        };
        first = false;
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        // A hung runtime must not stall the heartbeat.
        let answer = tokio::time::timeout(timing.update, runtime.runtime_conditions())
            .await
            .unwrap_or_else(|_| Err("CRI Status timed out".to_string()));
        if let Err(e) = &answer {
            tracing::warn!(error = %e, "container runtime sanity check failed");
        }
        state.observe(&answer, Instant::now());
        match sync_status(
            &api,
            &cfg,
            &host,
            &runtime_version,
            &state,
            last_report,
            timing,
        )
        .await
        {
            Ok(sent) => {
                if sent {
                    last_report = Some(Instant::now());
                }
                if fast && state.errors(Instant::now()).is_empty() {
                    fast = false;
                }
            }
            Err(e) => tracing::warn!(node = %cfg.name, error = %e, "node status update failed"),
        }
    }
}

/// One pass of upstream's `tryUpdateNodeStatus`; true when a status was
/// sent.
async fn sync_status(
    api: &Api<Node>,
    cfg: &NodeConfig,
    host: &HostInfo,
    runtime_version: &str,
    state: &RuntimeState,
    last_report: Option<Instant>,
    timing: StatusTiming,
) -> Result<bool, NodeError> {
    let node = api.get(&cfg.name).await.map_err(NodeError::Status)?;
    let errors = state.errors(Instant::now());
    let inputs = StatusInputs {
        cfg,
        host,
        runtime_version,
        runtime_errors: &errors,
        now: now(),
    };
    let status = desired_status(node.status.as_ref(), &inputs);
    let due = last_report.is_none_or(|t| t.elapsed() >= timing.report);
    if !due && !status_changed(node.status.as_ref(), &status) {
        return Ok(false);
    }
    let patch = json!({ "status": status });
    api.patch_status(&cfg.name, &PatchParams::default(), &Patch::Strategic(patch))
        .await
        .map_err(NodeError::Status)?;
    Ok(true)
}

/// The heartbeat Lease as upstream's node lease controller writes it.
pub fn lease_object(
    node_name: &str,
    node_uid: Option<&str>,
    duration_seconds: i32,
    now: Timestamp,
) -> Lease {
    Lease {
        metadata: ObjectMeta {
            name: Some(node_name.to_string()),
            namespace: Some(LEASE_NAMESPACE.to_string()),
            owner_references: node_uid.map(|uid| vec![node_owner(node_name, uid)]),
            ..Default::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(node_name.to_string()),
            lease_duration_seconds: Some(duration_seconds),
            renew_time: Some(MicroTime(now)),
            ..Default::default()
        }),
    }
}

fn node_owner(node_name: &str, uid: &str) -> OwnerReference {
    OwnerReference {
        api_version: "v1".into(),
        kind: "Node".into(),
        name: node_name.to_string(),
        uid: uid.to_string(),
        ..Default::default()
    }
}

async fn lease_loop(
    client: kube::Client,
    name: String,
    timing: StatusTiming,
    cancel: CancellationToken,
) {
    let leases: Api<Lease> = Api::namespaced(client.clone(), LEASE_NAMESPACE);
    let nodes: Api<Node> = Api::all(client);
    let mut tick = tokio::time::interval(timing.lease_renew);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Err(e) = renew_lease(&leases, &nodes, &name, timing.lease_duration_seconds).await {
            tracing::warn!(node = %name, error = %e, "failed to renew the node lease");
        }
    }
}

/// Creates the Lease or moves its renewTime to now (upstream `ensureLease`
/// then `retryUpdateLease`); the owner reference is added once the Node
/// exists.
async fn renew_lease(
    leases: &Api<Lease>,
    nodes: &Api<Node>,
    name: &str,
    duration_seconds: i32,
) -> Result<(), kube::Error> {
    let node_uid = || async {
        nodes
            .get_opt(name)
            .await
            .ok()
            .flatten()
            .and_then(|n| n.metadata.uid)
    };
    match leases.get_opt(name).await? {
        None => {
            let uid = node_uid().await;
            let lease = lease_object(name, uid.as_deref(), duration_seconds, now());
            leases.create(&PostParams::default(), &lease).await?;
        }
        Some(mut lease) => {
            let spec = lease.spec.get_or_insert_with(Default::default);
            spec.holder_identity = Some(name.to_string());
            spec.lease_duration_seconds = Some(duration_seconds);
            spec.renew_time = Some(MicroTime(now()));
            if lease
                .metadata
                .owner_references
                .as_ref()
                .is_none_or(|o| o.is_empty())
            {
                if let Some(uid) = node_uid().await {
                    lease.metadata.owner_references = Some(vec![node_owner(name, &uid)]);
                }
            }
            // A conflict means someone else wrote it; the next tick retries
            // from a fresh read.
            leases.replace(name, &PostParams::default(), &lease).await?;
        }
    }
    Ok(())
}
