//! The API status of a pod from its runtime state: upstream
//! `generateAPIPodStatus`, `convertToAPIContainerStatuses`, `getPhase`,
//! the prober's ready/started and `status/generate.go` conditions.

use std::collections::{BTreeMap, HashMap};

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{
    Container, ContainerState as ApiState, ContainerStateRunning, ContainerStateTerminated,
    ContainerStateWaiting, ContainerStatus as ApiStatus, HostIP, Pod, PodCondition, PodIP,
    PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::actions::{is_sidecar, restart_policy, should_container_be_restarted};
use super::{ContainerState, PodRuntimeStatus, ProbeState};
use crate::resources;

fn time(ns: i64) -> Option<Time> {
    if ns <= 0 {
        return None;
    }
    Timestamp::from_nanosecond(i128::from(ns)).ok().map(Time)
}

/// Inputs besides the pod and its runtime status.
pub struct StatusInputs<'a> {
    pub runtime_name: &'a str,
    pub host_ip: &'a str,
    pub probes: &'a dyn ProbeState,
    /// Waiting (reason, message) per container from the last sync.
    pub reasons: &'a HashMap<String, (String, String)>,
    pub now: Timestamp,
}

fn convert(cs: &super::ContainerStatus, old: Option<&ApiStatus>, runtime_name: &str) -> ApiStatus {
    let cid = format!("{runtime_name}://{}", cs.id);
    let mut st = ApiStatus {
        name: cs.name.clone(),
        restart_count: cs.attempt,
        image: cs.image.clone(),
        image_id: cs.image_ref.clone(),
        container_id: Some(cid.clone()),
        ..Default::default()
    };
    st.state = Some(match cs.state {
        ContainerState::Running => ApiState {
            running: Some(ContainerStateRunning {
                started_at: time(cs.started_at),
            }),
            ..Default::default()
        },
        ContainerState::Exited => ApiState {
            terminated: Some(ContainerStateTerminated {
                exit_code: cs.exit_code,
                reason: Some(cs.reason.clone()).filter(|s| !s.is_empty()),
                message: Some(cs.message.clone()).filter(|s| !s.is_empty()),
                started_at: time(cs.started_at),
                finished_at: time(cs.finished_at),
                container_id: Some(cid),
                signal: None,
            }),
            ..Default::default()
        },
        ContainerState::Unknown
            if old
                .and_then(|o| o.state.as_ref())
                .is_some_and(|s| s.running.is_some()) =>
        {
            st.restart_count = old.map_or(0, |o| o.restart_count) + 1;
            ApiState {
                terminated: Some(ContainerStateTerminated {
                    exit_code: 137,
                    reason: Some("ContainerStatusUnknown".into()),
                    message: Some(
                        "The container could not be located when the pod was terminated".into(),
                    ),
                    ..Default::default()
                }),
                ..Default::default()
            }
        }
        _ => ApiState {
            waiting: Some(ContainerStateWaiting::default()),
            ..Default::default()
        },
    });
    st
}

fn waiting(s: &ApiStatus) -> Option<&ContainerStateWaiting> {
    s.state.as_ref().and_then(|s| s.waiting.as_ref())
}

fn terminated(s: &Option<ApiState>) -> Option<&ContainerStateTerminated> {
    s.as_ref().and_then(|s| s.terminated.as_ref())
}

/// Upstream `convertToAPIContainerStatuses` for one list (init or regular).
fn container_statuses(
    pod: &Pod,
    rt: &PodRuntimeStatus,
    containers: &[Container],
    old: &[ApiStatus],
    is_init: bool,
    has_init: bool,
    inp: &StatusInputs<'_>,
) -> Vec<ApiStatus> {
    let old: HashMap<&str, &ApiStatus> = old.iter().map(|s| (s.name.as_str(), s)).collect();
    let default_reason = if has_init {
        "PodInitializing"
    } else {
        "ContainerCreating"
    };
    let mut statuses: BTreeMap<String, ApiStatus> = BTreeMap::new();
    for c in containers {
        let mut st = ApiStatus {
            name: c.name.clone(),
            image: c.image.clone().unwrap_or_default(),
            state: Some(ApiState {
                waiting: Some(ContainerStateWaiting {
                    reason: Some(default_reason.into()),
                    message: None,
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        if let Some(o) = old.get(c.name.as_str()) {
            if terminated(&o.state).is_some() {
                st = (*o).clone();
            } else {
                st.restart_count = o.restart_count;
                st.last_state = o.last_state.clone();
            }
        }
        statuses.insert(c.name.clone(), st);
    }
    // A container that was running and vanished from the runtime.
    for c in containers {
        if rt
            .containers
            .iter()
            .any(|s| s.name == c.name && s.state == ContainerState::Unknown)
        {
            continue;
        }
        let Some(o) = old.get(c.name.as_str()) else {
            continue;
        };
        if terminated(&o.state).is_some()
            || o.state.as_ref().and_then(|s| s.running.as_ref()).is_none()
        {
            continue;
        }
        if rt.containers.iter().any(|s| s.name == c.name) {
            continue;
        }
        let Some(st) = statuses.get_mut(&c.name) else {
            continue;
        };
        let is_default = waiting(st).and_then(|w| w.reason.as_deref()) == Some(default_reason);
        if !is_default || terminated(&st.last_state).is_some() {
            continue;
        }
        st.last_state = Some(ApiState {
            terminated: Some(ContainerStateTerminated {
                exit_code: 137,
                reason: Some("ContainerStatusUnknown".into()),
                message: Some("The container could not be located when the pod was deleted.  The container used to be Running".into()),
                ..Default::default()
            }),
            ..Default::default()
        });
        if pod.metadata.deletion_timestamp.is_none() {
            st.restart_count += 1;
        }
    }
    // Newest instance is the state, the one before it the last state.
    let mut seen: HashMap<&str, u32> = HashMap::new();
    for cs in &rt.containers {
        if !statuses.contains_key(&cs.name) {
            continue;
        }
        let n = seen.entry(cs.name.as_str()).or_insert(0);
        if *n >= 2 {
            continue;
        }
        let conv = convert(cs, old.get(cs.name.as_str()).copied(), inp.runtime_name);
        if *n == 0 {
            statuses.insert(cs.name.clone(), conv);
        } else if let Some(st) = statuses.get_mut(&cs.name) {
            st.last_state = conv.state;
        }
        *n += 1;
    }
    // Containers that will be (re)started show the reason of the last sync.
    for c in containers {
        let latest = rt.containers.iter().find(|s| s.name == c.name);
        if is_init && latest.is_some_and(|s| s.state == ContainerState::Exited && s.exit_code == 0)
        {
            continue;
        }
        if !should_container_be_restarted(c, pod, rt) {
            continue;
        }
        let Some((reason, message)) = inp.reasons.get(&c.name) else {
            continue;
        };
        let Some(st) = statuses.get_mut(&c.name) else {
            continue;
        };
        if terminated(&st.state).is_some() {
            st.last_state = st.state.clone();
        }
        st.state = Some(ApiState {
            waiting: Some(ContainerStateWaiting {
                reason: Some(reason.clone()),
                message: Some(message.clone()).filter(|m| !m.is_empty()),
            }),
            ..Default::default()
        });
    }
    // Ready and started (the prober's UpdatePodStatus).
    let uid = pod.metadata.uid.as_deref().unwrap_or("");
    let mut out = Vec::new();
    for c in containers {
        let Some(mut st) = statuses.remove(&c.name) else {
            continue;
        };
        let running = st.state.as_ref().and_then(|s| s.running.as_ref()).is_some();
        let cid = st.container_id.clone().unwrap_or_default();
        let started = running && inp.probes.started_for(uid, &c.name, &cid).unwrap_or(true);
        st.started = Some(started);
        st.ready = if is_init && !is_sidecar(c) {
            terminated(&st.state).is_some_and(|t| t.exit_code == 0)
        } else {
            started && inp.probes.ready_for(uid, &c.name, &cid).unwrap_or(true)
        };
        out.push(st);
    }
    if !is_init {
        out.sort_by(|a, b| a.name.cmp(&b.name));
    }
    out
}

fn find<'a>(list: &'a [ApiStatus], name: &str) -> Option<&'a ApiStatus> {
    list.iter().find(|s| s.name == name)
}

/// Upstream `getPhase`.
pub fn phase(
    pod: &Pod,
    init_statuses: &[ApiStatus],
    statuses: &[ApiStatus],
    terminal: bool,
    has_initialized: bool,
) -> &'static str {
    let spec = pod.spec.as_ref();
    let empty = Vec::new();
    let init = spec
        .and_then(|s| s.init_containers.as_ref())
        .unwrap_or(&empty);
    let regular = spec.map(|s| &s.containers).unwrap_or(&empty);
    let (mut pending_init, mut pending_sidecar, mut failed_init) = (0, 0, 0);
    let (mut unknown, mut running, mut waiting_n, mut stopped, mut succeeded) = (0, 0, 0, 0, 0);
    for c in init.iter().filter(|c| !is_sidecar(c)) {
        let Some(s) = find(init_statuses, &c.name) else {
            pending_init += 1;
            continue;
        };
        let st = s.state.as_ref();
        if st.and_then(|s| s.running.as_ref()).is_some() {
            pending_init += 1;
        } else if let Some(t) = st.and_then(|s| s.terminated.as_ref()) {
            if t.exit_code != 0 {
                failed_init += 1;
            }
        } else if st.and_then(|s| s.waiting.as_ref()).is_some() {
            match terminated(&s.last_state) {
                Some(t) if t.exit_code != 0 => failed_init += 1,
                Some(_) => {}
                None => pending_init += 1,
            }
        } else {
            pending_init += 1;
        }
    }
    for c in init.iter().filter(|c| is_sidecar(c)) {
        let Some(s) = find(init_statuses, &c.name) else {
            unknown += 1;
            continue;
        };
        let st = s.state.as_ref();
        if st.and_then(|s| s.running.as_ref()).is_some() {
            if s.started != Some(true) {
                pending_sidecar += 1;
            }
            running += 1;
        } else if st.and_then(|s| s.terminated.as_ref()).is_some() {
        } else if st.and_then(|s| s.waiting.as_ref()).is_some() {
            if terminated(&s.last_state).is_none() {
                pending_sidecar += 1;
                waiting_n += 1;
            }
        } else {
            pending_sidecar += 1;
            unknown += 1;
        }
    }
    for c in regular {
        let Some(s) = find(statuses, &c.name) else {
            unknown += 1;
            continue;
        };
        let st = s.state.as_ref();
        if st.and_then(|s| s.running.as_ref()).is_some() {
            running += 1;
        } else if let Some(t) = st.and_then(|s| s.terminated.as_ref()) {
            stopped += 1;
            if t.exit_code == 0 {
                succeeded += 1;
            }
        } else if st.and_then(|s| s.waiting.as_ref()).is_some() {
            if terminated(&s.last_state).is_some() {
                stopped += 1;
            } else {
                waiting_n += 1;
            }
        } else {
            unknown += 1;
        }
    }
    let policy = restart_policy(pod);
    if failed_init > 0 && policy == "Never" {
        return "Failed";
    }
    if pending_init > 0 || (pending_sidecar > 0 && !has_initialized) || waiting_n > 0 {
        return "Pending";
    }
    if running > 0 && unknown == 0 {
        return "Running";
    }
    if running == 0 && stopped > 0 && unknown == 0 {
        if terminal {
            return if stopped == succeeded {
                "Succeeded"
            } else {
                "Failed"
            };
        }
        if policy == "Always" {
            return "Running";
        }
        if stopped == succeeded {
            return "Succeeded";
        }
        if policy == "Never" {
            return "Failed";
        }
        return "Running";
    }
    "Pending"
}

fn cond(type_: &str, ok: bool, reason: Option<&str>, message: Option<String>) -> PodCondition {
    PodCondition {
        type_: type_.into(),
        status: if ok { "True" } else { "False" }.into(),
        reason: reason.map(str::to_string),
        message,
        ..Default::default()
    }
}

fn go_list(names: &[String]) -> String {
    format!("[{}]", names.join(" "))
}

fn initialized_condition(
    pod: &Pod,
    init: &[ApiStatus],
    regular: &[ApiStatus],
    phase: &str,
) -> PodCondition {
    let spec = pod.spec.as_ref();
    let init_specs = spec
        .and_then(|s| s.init_containers.as_deref())
        .unwrap_or(&[]);
    if init_specs.is_empty() {
        return cond("Initialized", true, None, None);
    }
    let regular_started = regular.iter().any(|s| {
        s.state
            .as_ref()
            .is_some_and(|st| st.running.is_some() || st.terminated.is_some())
    });
    if regular_started {
        return cond("Initialized", true, None, None);
    }
    let (mut unknown, mut incomplete) = (Vec::new(), Vec::new());
    for c in init_specs {
        let Some(s) = find(init, &c.name) else {
            unknown.push(c.name.clone());
            continue;
        };
        if is_sidecar(c) {
            if s.started != Some(true) {
                incomplete.push(c.name.clone());
            }
            continue;
        }
        if terminated(&s.state).is_none_or(|t| t.exit_code != 0) {
            incomplete.push(c.name.clone());
        }
    }
    if phase == "Succeeded" && unknown.is_empty() {
        return cond("Initialized", true, Some("PodCompleted"), None);
    }
    let mut msgs = Vec::new();
    if !unknown.is_empty() {
        msgs.push(format!(
            "containers with unknown status: {}",
            go_list(&unknown)
        ));
    }
    if !incomplete.is_empty() {
        msgs.push(format!(
            "containers with incomplete status: {}",
            go_list(&incomplete)
        ));
    }
    if msgs.is_empty() {
        cond("Initialized", true, None, None)
    } else {
        cond(
            "Initialized",
            false,
            Some("ContainersNotInitialized"),
            Some(msgs.join(", ")),
        )
    }
}

fn containers_ready_condition(
    pod: &Pod,
    init: &[ApiStatus],
    regular: &[ApiStatus],
    phase: &str,
) -> PodCondition {
    let spec = pod.spec.as_ref();
    let (mut unknown, mut unready) = (Vec::new(), Vec::new());
    for c in spec
        .and_then(|s| s.init_containers.as_deref())
        .unwrap_or(&[])
        .iter()
        .filter(|c| is_sidecar(c))
    {
        match find(init, &c.name) {
            Some(s) if !s.ready => unready.push(c.name.clone()),
            Some(_) => {}
            None => unknown.push(c.name.clone()),
        }
    }
    for c in spec.map(|s| s.containers.as_slice()).unwrap_or(&[]) {
        match find(regular, &c.name) {
            Some(s) if !s.ready => unready.push(c.name.clone()),
            Some(_) => {}
            None => unknown.push(c.name.clone()),
        }
    }
    if phase == "Succeeded" && unknown.is_empty() {
        return cond("ContainersReady", false, Some("PodCompleted"), None);
    }
    if phase == "Failed" {
        return cond("ContainersReady", false, Some("PodFailed"), None);
    }
    let mut msgs = Vec::new();
    if !unknown.is_empty() {
        msgs.push(format!(
            "containers with unknown status: {}",
            go_list(&unknown)
        ));
    }
    if !unready.is_empty() {
        msgs.push(format!(
            "containers with unready status: {}",
            go_list(&unready)
        ));
    }
    if msgs.is_empty() {
        cond("ContainersReady", true, None, None)
    } else {
        cond(
            "ContainersReady",
            false,
            Some("ContainersNotReady"),
            Some(msgs.join(", ")),
        )
    }
}

fn ready_condition(
    pod: &Pod,
    containers_ready: &PodCondition,
    old: &[PodCondition],
) -> PodCondition {
    if containers_ready.status != "True" {
        let mut c = containers_ready.clone();
        c.type_ = "Ready".into();
        return c;
    }
    let mut unready = Vec::new();
    for gate in pod
        .spec
        .as_ref()
        .and_then(|s| s.readiness_gates.as_deref())
        .unwrap_or(&[])
    {
        match old.iter().find(|c| c.type_ == gate.condition_type) {
            None => unready.push(format!(
                "corresponding condition of pod readiness gate \"{}\" does not exist.",
                gate.condition_type
            )),
            Some(c) if c.status != "True" => unready.push(format!(
                "the status of pod readiness gate \"{}\" is not \"True\", but {}",
                gate.condition_type, c.status
            )),
            _ => {}
        }
    }
    if unready.is_empty() {
        cond("Ready", true, None, None)
    } else {
        cond(
            "Ready",
            false,
            Some("ReadinessGatesNotReady"),
            Some(unready.join(", ")),
        )
    }
}

const KUBELET_CONDITIONS: &[&str] = &[
    "PodScheduled",
    "Ready",
    "Initialized",
    "ContainersReady",
    "PodReadyToStartContainers",
];

pub fn api_status(pod: &Pod, rt: &PodRuntimeStatus, inp: &StatusInputs<'_>) -> PodStatus {
    let old = pod.status.clone().unwrap_or_default();
    let spec = pod.spec.as_ref();
    let empty = Vec::new();
    let init_specs = spec
        .and_then(|s| s.init_containers.as_ref())
        .unwrap_or(&empty);
    let regular_specs = spec.map(|s| &s.containers).unwrap_or(&empty);
    let has_init = !init_specs.is_empty();
    let init = container_statuses(
        pod,
        rt,
        init_specs,
        old.init_container_statuses.as_deref().unwrap_or(&[]),
        true,
        has_init,
        inp,
    );
    let regular = container_statuses(
        pod,
        rt,
        regular_specs,
        old.container_statuses.as_deref().unwrap_or(&[]),
        false,
        has_init,
        inp,
    );
    let newest_sandbox = rt.sandboxes.first().map(|s| s.id.as_str());
    let has_initialized = regular_specs.iter().any(|c| {
        rt.containers
            .iter()
            .any(|s| s.name == c.name && Some(s.sandbox_id.as_str()) == newest_sandbox)
    });
    // A pod being deleted whose containers all stopped is terminal.
    let terminal = pod.metadata.deletion_timestamp.is_some()
        && !rt
            .containers
            .iter()
            .any(|c| matches!(c.state, ContainerState::Running | ContainerState::Created));
    let mut phase = phase(pod, &init, &regular, terminal, has_initialized).to_string();
    // Terminal phases never go back.
    let old_phase = old.phase.clone().unwrap_or_default();
    if phase != "Failed"
        && phase != "Succeeded"
        && (old_phase == "Failed" || old_phase == "Succeeded")
    {
        phase = old_phase.clone();
    }

    let host_network = spec.and_then(|s| s.host_network).unwrap_or(false);
    let mut pod_ips: Vec<String> = Vec::new();
    if host_network {
        if !inp.host_ip.is_empty() {
            pod_ips.push(inp.host_ip.to_string());
        }
    } else if let Some(sb) = rt.sandboxes.first().filter(|s| s.ready) {
        pod_ips.extend(sb.ip.iter().filter(|s| !s.is_empty()).cloned());
        pod_ips.extend(sb.additional_ips.iter().cloned());
    }
    if pod_ips.is_empty() {
        // Keep what was reported while the sandbox is gone (upstream keeps
        // the old IPs of a terminating pod).
        pod_ips = old.pod_ips.iter().flatten().map(|p| p.ip.clone()).collect();
    }

    let ready_to_start = {
        let (changed, _, _) = super::actions::sandbox_changed(pod, rt);
        cond("PodReadyToStartContainers", !changed, None, None)
    };
    let initialized = initialized_condition(pod, &init, &regular, &phase);
    let containers_ready = containers_ready_condition(pod, &init, &regular, &phase);
    let old_conditions = old.conditions.clone().unwrap_or_default();
    let ready = ready_condition(pod, &containers_ready, &old_conditions);
    let mut conditions: Vec<PodCondition> = old_conditions
        .iter()
        .filter(|c| !KUBELET_CONDITIONS.contains(&c.type_.as_str()))
        .cloned()
        .collect();
    let scheduled = old_conditions
        .iter()
        .find(|c| c.type_ == "PodScheduled")
        .cloned()
        .unwrap_or_else(|| cond("PodScheduled", true, None, None));
    for mut c in [
        ready_to_start,
        initialized,
        ready,
        containers_ready,
        scheduled,
    ] {
        // The transition time moves only when the status changes.
        c.last_transition_time = match old_conditions.iter().find(|o| o.type_ == c.type_) {
            Some(o) if o.status == c.status && o.last_transition_time.is_some() => {
                o.last_transition_time.clone()
            }
            _ => Some(Time(inp.now)),
        };
        conditions.push(c);
    }

    PodStatus {
        phase: Some(phase.clone()),
        reason: if phase == old_phase {
            old.reason.clone()
        } else {
            None
        },
        message: if phase == old_phase {
            old.message.clone()
        } else {
            None
        },
        nominated_node_name: old.nominated_node_name.clone(),
        conditions: Some(conditions),
        host_ip: Some(inp.host_ip.to_string()).filter(|s| !s.is_empty()),
        host_ips: (!inp.host_ip.is_empty()).then(|| {
            vec![HostIP {
                ip: inp.host_ip.to_string(),
            }]
        }),
        pod_ip: pod_ips.first().cloned(),
        pod_ips: (!pod_ips.is_empty())
            .then(|| pod_ips.iter().map(|ip| PodIP { ip: ip.clone() }).collect()),
        qos_class: Some(resources::pod_qos(pod).as_str().to_string()),
        start_time: old.start_time.clone().or(Some(Time(inp.now))),
        init_container_statuses: has_init.then_some(init),
        container_statuses: Some(regular),
        ephemeral_container_statuses: old.ephemeral_container_statuses.clone(),
        ..Default::default()
    }
}
