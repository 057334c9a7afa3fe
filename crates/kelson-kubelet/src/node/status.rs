//! The Node object and status a kubelet reports (upstream's
//! `pkg/kubelet/nodestatus` setters and `runtimeState`), as pure functions
//! of the machine facts, the runtime's readiness and the time.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{
    DaemonEndpoint, Node, NodeAddress, NodeCondition, NodeDaemonEndpoints, NodeStatus,
    NodeSystemInfo,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

use super::host::{
    allocatable_ephemeral_storage, allocatable_memory, binary_si, go_arch, HostInfo,
};
use super::{NodeConfig, RuntimeCondition, KUBELET_VERSION};

/// The annotation kubelets set to say the attach/detach controller owns
/// volume attachment.
pub const CMAD_ANNOTATION: &str = "volumes.kubernetes.io/controller-managed-attach-detach";

/// The labels every kubelet puts on its Node.
pub fn default_labels(node_name: &str) -> BTreeMap<String, String> {
    let arch = go_arch().to_string();
    BTreeMap::from([
        ("beta.kubernetes.io/arch".to_string(), arch.clone()),
        ("beta.kubernetes.io/os".to_string(), "linux".to_string()),
        ("kubernetes.io/arch".to_string(), arch),
        ("kubernetes.io/hostname".to_string(), node_name.to_string()),
        ("kubernetes.io/os".to_string(), "linux".to_string()),
    ])
}

/// Default labels, then the configured ones (which win, as upstream's
/// `--node-labels`).
pub fn node_labels(cfg: &NodeConfig) -> BTreeMap<String, String> {
    let mut labels = default_labels(&cfg.name);
    labels.extend(cfg.labels.clone());
    labels
}

/// What upstream's runtimeState tracks between CRI Status calls.
#[derive(Debug, Clone)]
pub struct RuntimeState {
    last_sync: Option<Instant>,
    sync_threshold: Duration,
    network_error: Option<String>,
    runtime_error: Option<String>,
}

/// Upstream's `maxWaitForContainerRuntime`: without a good Status answer
/// for this long, the runtime counts as down.
pub const RUNTIME_SYNC_THRESHOLD: Duration = Duration::from_secs(30);

impl Default for RuntimeState {
    fn default() -> Self {
        RuntimeState::new(RUNTIME_SYNC_THRESHOLD)
    }
}

impl RuntimeState {
    pub fn new(sync_threshold: Duration) -> RuntimeState {
        RuntimeState {
            last_sync: None,
            sync_threshold,
            // Upstream's ErrNetworkUnknown until the first Status answer.
            network_error: Some("network state unknown".to_string()),
            runtime_error: None,
        }
    }

    /// Upstream `updateRuntimeUp` with the answer of a CRI Status call: a
    /// failed call changes nothing (the runtime goes "down" once the
    /// threshold passes).
    pub fn observe(&mut self, status: &Result<Vec<RuntimeCondition>, String>, now: Instant) {
        let Ok(conds) = status else { return };
        let find = |t: &str| conds.iter().find(|c| c.type_ == t);
        self.network_error = match find("NetworkReady") {
            Some(c) if c.status => None,
            c => Some(format!(
                "container runtime network not ready: {}",
                describe(c)
            )),
        };
        match find("RuntimeReady") {
            Some(c) if c.status => {
                self.runtime_error = None;
                self.last_sync = Some(now);
            }
            c => {
                self.runtime_error = Some(format!("container runtime not ready: {}", describe(c)));
            }
        }
    }

    /// Why the node is not ready, in upstream's order (runtime errors, then
    /// network errors); empty when it is.
    pub fn errors(&self, now: Instant) -> Vec<String> {
        let mut errs = Vec::new();
        match self.last_sync {
            None => errs.push("container runtime status check may not have completed yet".into()),
            Some(t) if now.saturating_duration_since(t) >= self.sync_threshold => {
                errs.push("container runtime is down".into())
            }
            Some(_) => {}
        }
        errs.extend(self.runtime_error.clone());
        errs.extend(self.network_error.clone());
        errs
    }
}

/// Upstream `RuntimeCondition.String()`; a missing condition prints as Go's
/// nil pointer does.
fn describe(c: Option<&RuntimeCondition>) -> String {
    match c {
        Some(c) => format!(
            "{}={} reason:{} message:{}",
            c.type_, c.status, c.reason, c.message
        ),
        None => "<nil>".to_string(),
    }
}

/// Go's `utilerrors.NewAggregate(errs).Error()`: one message alone, several
/// deduplicated in brackets.
pub fn aggregate(errs: &[String]) -> String {
    let mut seen: Vec<&str> = Vec::new();
    for e in errs {
        if !seen.contains(&e.as_str()) {
            seen.push(e);
        }
    }
    match seen.as_slice() {
        [one] => one.to_string(),
        many => format!("[{}]", many.join(", ")),
    }
}

fn q(s: String) -> Quantity {
    Quantity(s)
}

/// Capacity and allocatable of the machine.
pub fn resources(
    host: &HostInfo,
    max_pods: u32,
) -> (BTreeMap<String, Quantity>, BTreeMap<String, Quantity>) {
    let mut capacity = BTreeMap::new();
    let mut allocatable = BTreeMap::new();
    if host.cpu_cores > 0 {
        capacity.insert("cpu".into(), q(host.cpu_cores.to_string()));
        allocatable.insert("cpu".into(), q(host.cpu_cores.to_string()));
    }
    if host.memory_bytes > 0 {
        capacity.insert("memory".into(), q(binary_si(host.memory_bytes)));
        allocatable.insert(
            "memory".into(),
            q(binary_si(allocatable_memory(host.memory_bytes))),
        );
    }
    if host.ephemeral_storage_bytes > 0 {
        capacity.insert(
            "ephemeral-storage".into(),
            q(binary_si(host.ephemeral_storage_bytes)),
        );
        allocatable.insert(
            "ephemeral-storage".into(),
            q(binary_si(allocatable_ephemeral_storage(
                host.ephemeral_storage_bytes,
            ))),
        );
    }
    for (name, bytes) in &host.hugepages {
        capacity.insert(name.clone(), q(binary_si(*bytes)));
        allocatable.insert(name.clone(), q(binary_si(*bytes)));
    }
    capacity.insert("pods".into(), q(max_pods.to_string()));
    allocatable.insert("pods".into(), q(max_pods.to_string()));
    (capacity, allocatable)
}

/// Everything a status update needs.
pub struct StatusInputs<'a> {
    pub cfg: &'a NodeConfig,
    pub host: &'a HostInfo,
    pub runtime_version: &'a str,
    /// [`RuntimeState::errors`]; empty when the runtime is ready.
    pub runtime_errors: &'a [String],
    pub now: Timestamp,
}

/// The status the kubelet wants, starting from the stored one (conditions
/// others added are kept; ours keep their transition time while their
/// status holds).
pub fn desired_status(existing: Option<&NodeStatus>, inputs: &StatusInputs<'_>) -> NodeStatus {
    let (capacity, allocatable) = resources(inputs.host, inputs.cfg.max_pods);
    let mut status = existing.cloned().unwrap_or_default();
    let now = Time(inputs.now);

    let mut not_ready: Vec<String> = inputs.runtime_errors.to_vec();
    let missing: Vec<&str> = ["cpu", "memory", "pods", "ephemeral-storage"]
        .into_iter()
        .filter(|r| !capacity.contains_key(*r))
        .collect();
    if !missing.is_empty() {
        not_ready.push(format!(
            "Missing node capacity for resources: {}",
            missing.join(", ")
        ));
    }

    status.capacity = Some(capacity);
    status.allocatable = Some(allocatable);
    status.addresses = Some(vec![
        NodeAddress {
            type_: "InternalIP".into(),
            address: inputs.cfg.node_ip.to_string(),
        },
        NodeAddress {
            type_: "Hostname".into(),
            address: inputs.cfg.name.clone(),
        },
    ]);
    status.daemon_endpoints = Some(NodeDaemonEndpoints {
        kubelet_endpoint: Some(DaemonEndpoint {
            port: i32::from(inputs.cfg.kubelet_port),
        }),
    });
    let h = inputs.host;
    status.node_info = Some(NodeSystemInfo {
        machine_id: h.machine_id.clone(),
        system_uuid: h.system_uuid.clone(),
        boot_id: h.boot_id.clone(),
        kernel_version: h.kernel_version.clone(),
        os_image: h.os_image.clone(),
        container_runtime_version: inputs.runtime_version.to_string(),
        kubelet_version: KUBELET_VERSION.to_string(),
        // Kubelets stopped reporting it in 1.31 (DisableNodeKubeProxyVersion).
        kube_proxy_version: String::new(),
        operating_system: "linux".into(),
        architecture: go_arch().to_string(),
        ..Default::default()
    });

    let mut conds = status.conditions.take().unwrap_or_default();
    set_pressure(
        &mut conds,
        "MemoryPressure",
        "KubeletHasSufficientMemory",
        "kubelet has sufficient memory available",
        &now,
    );
    set_pressure(
        &mut conds,
        "DiskPressure",
        "KubeletHasNoDiskPressure",
        "kubelet has no disk pressure",
        &now,
    );
    set_pressure(
        &mut conds,
        "PIDPressure",
        "KubeletHasSufficientPID",
        "kubelet has sufficient PID available",
        &now,
    );
    let ready = if not_ready.is_empty() {
        NodeCondition {
            type_: "Ready".into(),
            status: "True".into(),
            reason: Some("KubeletReady".into()),
            message: Some("kubelet is posting ready status".into()),
            last_heartbeat_time: Some(now.clone()),
            last_transition_time: Some(now.clone()),
        }
    } else {
        NodeCondition {
            type_: "Ready".into(),
            status: "False".into(),
            reason: Some("KubeletNotReady".into()),
            message: Some(aggregate(&not_ready)),
            last_heartbeat_time: Some(now.clone()),
            last_transition_time: Some(now.clone()),
        }
    };
    match conds.iter_mut().find(|c| c.type_ == "Ready") {
        Some(c) => {
            let mut ready = ready;
            if c.status == ready.status {
                ready.last_transition_time = c.last_transition_time.clone();
            }
            *c = ready;
        }
        None => conds.push(ready),
    }
    status.conditions = Some(conds);
    status
}

/// Upstream's pressure setters when there is no pressure: the heartbeat
/// moves; reason, message and transition time change only when the status
/// was not already False.
fn set_pressure(conds: &mut Vec<NodeCondition>, type_: &str, reason: &str, msg: &str, now: &Time) {
    let idx = match conds.iter().position(|c| c.type_ == type_) {
        Some(i) => i,
        None => {
            conds.push(NodeCondition {
                type_: type_.into(),
                status: "Unknown".into(),
                ..Default::default()
            });
            conds.len() - 1
        }
    };
    let c = &mut conds[idx];
    c.last_heartbeat_time = Some(now.clone());
    if c.status != "False" {
        c.status = "False".into();
        c.reason = Some(reason.into());
        c.message = Some(msg.into());
        c.last_transition_time = Some(now.clone());
    }
}

/// Whether two statuses differ other than in heartbeat times (upstream
/// `nodeStatusHasChanged`), deciding if an update must be sent before the
/// report interval.
pub fn status_changed(old: Option<&NodeStatus>, new: &NodeStatus) -> bool {
    let strip = |s: &NodeStatus| {
        let mut s = s.clone();
        for c in s.conditions.iter_mut().flatten() {
            c.last_heartbeat_time = None;
        }
        s
    };
    match old {
        None => true,
        Some(old) => strip(old) != strip(new),
    }
}

/// The Node a kubelet creates at registration.
pub fn initial_node(inputs: &StatusInputs<'_>) -> Node {
    Node {
        metadata: ObjectMeta {
            name: Some(inputs.cfg.name.clone()),
            labels: Some(node_labels(inputs.cfg)),
            annotations: Some(BTreeMap::from([(
                CMAD_ANNOTATION.to_string(),
                "true".to_string(),
            )])),
            ..Default::default()
        },
        spec: Some(Default::default()),
        status: Some(desired_status(None, inputs)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr};
    use std::path::PathBuf;

    fn cfg() -> NodeConfig {
        NodeConfig {
            name: "node-a".into(),
            node_ip: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 5)),
            kubelet_port: 10250,
            labels: BTreeMap::from([("tier".to_string(), "edge".to_string())]),
            max_pods: 110,
            root_dir: PathBuf::from("/var/lib/kubelet"),
        }
    }

    fn host() -> HostInfo {
        HostInfo {
            cpu_cores: 2,
            memory_bytes: 4_025_216 * 1024,
            ephemeral_storage_bytes: 61_202_244 * 1024,
            hugepages: BTreeMap::from([("hugepages-2Mi".to_string(), 0)]),
            machine_id: "m".into(),
            system_uuid: "s".into(),
            boot_id: "b".into(),
            kernel_version: "6.1.0".into(),
            os_image: "Debian GNU/Linux 12 (bookworm)".into(),
        }
    }

    fn ts(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    fn cond<'a>(s: &'a NodeStatus, t: &str) -> &'a NodeCondition {
        s.conditions
            .as_ref()
            .unwrap()
            .iter()
            .find(|c| c.type_ == t)
            .unwrap()
    }

    #[test]
    fn fresh_status_like_a_kubelets() {
        let (c, h) = (cfg(), host());
        let inputs = StatusInputs {
            cfg: &c,
            host: &h,
            runtime_version: "containerd://1.7.0",
            runtime_errors: &[],
            now: ts(1_700_000_000),
        };
        let node = initial_node(&inputs);
        let labels = node.metadata.labels.as_ref().unwrap();
        assert_eq!(labels["kubernetes.io/hostname"], "node-a");
        assert_eq!(labels["kubernetes.io/os"], "linux");
        assert_eq!(labels["tier"], "edge");
        let s = node.status.unwrap();
        let cap = s.capacity.as_ref().unwrap();
        assert_eq!(cap["cpu"].0, "2");
        assert_eq!(cap["memory"].0, "4025216Ki");
        assert_eq!(cap["ephemeral-storage"].0, "61202244Ki");
        assert_eq!(cap["pods"].0, "110");
        assert_eq!(cap["hugepages-2Mi"].0, "0");
        let alloc = s.allocatable.as_ref().unwrap();
        assert_eq!(alloc["memory"].0, "3922816Ki");
        assert_eq!(alloc["ephemeral-storage"].0, "56403987978");
        let types: Vec<&str> = s
            .conditions
            .as_ref()
            .unwrap()
            .iter()
            .map(|c| c.type_.as_str())
            .collect();
        assert_eq!(
            types,
            ["MemoryPressure", "DiskPressure", "PIDPressure", "Ready"]
        );
        let ready = cond(&s, "Ready");
        assert_eq!(ready.status, "True");
        assert_eq!(
            ready.message.as_deref(),
            Some("kubelet is posting ready status")
        );
        let mem = cond(&s, "MemoryPressure");
        assert_eq!(mem.reason.as_deref(), Some("KubeletHasSufficientMemory"));
        let addrs = s.addresses.as_ref().unwrap();
        assert_eq!(addrs[0].type_, "InternalIP");
        assert_eq!(addrs[0].address, "10.0.0.5");
        assert_eq!(addrs[1].type_, "Hostname");
        let info = s.node_info.as_ref().unwrap();
        assert_eq!(info.kubelet_version, "v1.33.0");
        assert_eq!(info.container_runtime_version, "containerd://1.7.0");
        assert_eq!(
            s.daemon_endpoints.unwrap().kubelet_endpoint.unwrap().port,
            10250
        );
    }

    #[test]
    fn transitions_keep_or_move_times() {
        let (c, h) = (cfg(), host());
        let errs = vec!["container runtime network not ready: x".to_string()];
        let first = desired_status(
            None,
            &StatusInputs {
                cfg: &c,
                host: &h,
                runtime_version: "r",
                runtime_errors: &errs,
                now: ts(100),
            },
        );
        assert_eq!(cond(&first, "Ready").status, "False");
        assert_eq!(
            cond(&first, "Ready").reason.as_deref(),
            Some("KubeletNotReady")
        );
        // Same state later: only heartbeats move, so no change to report.
        let same = desired_status(
            Some(&first),
            &StatusInputs {
                cfg: &c,
                host: &h,
                runtime_version: "r",
                runtime_errors: &errs,
                now: ts(200),
            },
        );
        assert!(!status_changed(Some(&first), &same));
        assert_eq!(
            cond(&same, "Ready").last_transition_time,
            Some(Time(ts(100)))
        );
        assert_eq!(
            cond(&same, "Ready").last_heartbeat_time,
            Some(Time(ts(200)))
        );
        // Ready now: a transition.
        let ready = desired_status(
            Some(&same),
            &StatusInputs {
                cfg: &c,
                host: &h,
                runtime_version: "r",
                runtime_errors: &[],
                now: ts(300),
            },
        );
        assert!(status_changed(Some(&same), &ready));
        assert_eq!(
            cond(&ready, "Ready").last_transition_time,
            Some(Time(ts(300)))
        );
        assert_eq!(
            cond(&ready, "MemoryPressure").last_transition_time,
            Some(Time(ts(100)))
        );
    }

    #[test]
    fn controller_set_unknown_is_taken_back() {
        let (c, h) = (cfg(), host());
        let mut s = desired_status(
            None,
            &StatusInputs {
                cfg: &c,
                host: &h,
                runtime_version: "r",
                runtime_errors: &[],
                now: ts(100),
            },
        );
        for cnd in s.conditions.iter_mut().flatten() {
            cnd.status = "Unknown".into();
            cnd.reason = Some("NodeStatusUnknown".into());
        }
        // Someone else's condition survives.
        s.conditions.as_mut().unwrap().push(NodeCondition {
            type_: "KernelDeadlock".into(),
            status: "False".into(),
            ..Default::default()
        });
        let n = desired_status(
            Some(&s),
            &StatusInputs {
                cfg: &c,
                host: &h,
                runtime_version: "r",
                runtime_errors: &[],
                now: ts(500),
            },
        );
        let disk = cond(&n, "DiskPressure");
        assert_eq!(disk.status, "False");
        assert_eq!(disk.reason.as_deref(), Some("KubeletHasNoDiskPressure"));
        assert_eq!(disk.last_transition_time, Some(Time(ts(500))));
        assert_eq!(cond(&n, "Ready").status, "True");
        assert!(n
            .conditions
            .unwrap()
            .iter()
            .any(|c| c.type_ == "KernelDeadlock"));
    }

    #[test]
    fn missing_capacity_is_not_ready() {
        let c = cfg();
        let h = HostInfo {
            cpu_cores: 1,
            ..Default::default()
        };
        let s = desired_status(
            None,
            &StatusInputs {
                cfg: &c,
                host: &h,
                runtime_version: "r",
                runtime_errors: &[],
                now: ts(1),
            },
        );
        assert_eq!(
            cond(&s, "Ready").message.as_deref(),
            Some("Missing node capacity for resources: memory, ephemeral-storage")
        );
    }

    fn rc(t: &str, ok: bool) -> RuntimeCondition {
        RuntimeCondition {
            type_: t.into(),
            status: ok,
            reason: if ok { "" } else { "NetworkPluginNotReady" }.into(),
            message: if ok {
                ""
            } else {
                "Network plugin returns error: cni plugin not initialized"
            }
            .into(),
        }
    }

    #[test]
    fn runtime_state_messages() {
        let t0 = Instant::now();
        let mut st = RuntimeState::default();
        assert_eq!(
            aggregate(&st.errors(t0)),
            "[container runtime status check may not have completed yet, network state unknown]"
        );
        st.observe(
            &Ok(vec![rc("RuntimeReady", true), rc("NetworkReady", false)]),
            t0,
        );
        assert_eq!(
            aggregate(&st.errors(t0)),
            "container runtime network not ready: NetworkReady=false \
             reason:NetworkPluginNotReady message:Network plugin returns error: \
             cni plugin not initialized"
        );
        st.observe(
            &Ok(vec![rc("RuntimeReady", true), rc("NetworkReady", true)]),
            t0,
        );
        assert!(st.errors(t0).is_empty());
        // Failed Status calls: ready until the threshold passes.
        st.observe(&Err("unavailable".into()), t0 + Duration::from_secs(10));
        assert!(st.errors(t0 + Duration::from_secs(10)).is_empty());
        assert_eq!(
            st.errors(t0 + RUNTIME_SYNC_THRESHOLD),
            vec!["container runtime is down".to_string()]
        );
        // A runtime without conditions.
        st.observe(&Ok(vec![]), t0);
        assert_eq!(
            st.errors(t0),
            vec![
                "container runtime not ready: <nil>".to_string(),
                "container runtime network not ready: <nil>".to_string()
            ]
        );
    }
}
