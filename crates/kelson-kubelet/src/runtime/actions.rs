//! Upstream `computePodActions` / `computeInitContainerActions`: what one
//! sync must do to move the runtime state of a pod towards its spec.

use std::collections::HashSet;

use k8s_openapi::api::core::v1::{Container, Pod};

use super::labels::container_hash;
use super::{ContainerState, ContainerStatus, PodRuntimeStatus};

/// Why a running container is stopped (selects the grace period).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KillReason {
    #[default]
    Other,
    LivenessProbe,
    StartupProbe,
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KillInfo {
    pub id: String,
    pub name: String,
    pub message: String,
    pub reason: KillReason,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodActions {
    pub kill_pod: bool,
    pub create_sandbox: bool,
    /// The sandbox to use (or the one being replaced).
    pub sandbox_id: String,
    pub attempt: u32,
    /// Indexes into `spec.initContainers`, in order.
    pub init_containers_to_start: Vec<usize>,
    /// Indexes into `spec.containers`.
    pub containers_to_start: Vec<usize>,
    pub containers_to_kill: Vec<KillInfo>,
}

/// Probe results the decisions depend on.
pub struct ProbeView<'a> {
    /// Containers whose liveness or startup probe failed.
    pub unhealthy: &'a HashSet<String>,
    /// Startup probe state: `None` without a startup probe.
    pub started: &'a dyn Fn(&str) -> Option<bool>,
}

pub fn is_sidecar(c: &Container) -> bool {
    c.restart_policy.as_deref() == Some("Always")
}

pub fn restart_policy(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| s.restart_policy.as_deref())
        .unwrap_or("Always")
}

fn should_restart_on_failure(pod: &Pod) -> bool {
    restart_policy(pod) != "Never"
}

/// Upstream `PodSandboxChanged`: whether a new sandbox is needed, its
/// attempt, and the current sandbox id.
pub fn sandbox_changed(pod: &Pod, status: &PodRuntimeStatus) -> (bool, u32, String) {
    let Some(newest) = status.sandboxes.first() else {
        return (true, 0, String::new());
    };
    let ready = status.sandboxes.iter().filter(|s| s.ready).count();
    let next = newest.attempt.saturating_add(1);
    if ready > 1 || !newest.ready {
        return (true, next, newest.id.clone());
    }
    let host_network = pod
        .spec
        .as_ref()
        .and_then(|s| s.host_network)
        .unwrap_or(false);
    if newest.host_network != host_network {
        return (true, next, String::new());
    }
    if !host_network && newest.ip.as_deref().unwrap_or("").is_empty() {
        return (true, next, newest.id.clone());
    }
    (false, newest.attempt, newest.id.clone())
}

fn find<'a>(status: &'a PodRuntimeStatus, name: &str) -> Option<&'a ContainerStatus> {
    status.containers.iter().find(|c| c.name == name)
}

fn succeeded(c: &Container, status: &PodRuntimeStatus) -> bool {
    find(status, &c.name).is_some_and(|s| s.state == ContainerState::Exited && s.exit_code == 0)
}

/// Upstream `ShouldContainerBeRestarted`.
pub fn should_container_be_restarted(
    container: &Container,
    pod: &Pod,
    status: &PodRuntimeStatus,
) -> bool {
    if pod.metadata.deletion_timestamp.is_some() {
        return false;
    }
    let Some(s) = find(status, &container.name) else {
        return true;
    };
    match s.state {
        ContainerState::Running => false,
        ContainerState::Unknown | ContainerState::Created => true,
        ContainerState::Exited => match restart_policy(pod) {
            "Never" => false,
            "OnFailure" => s.exit_code != 0,
            _ => true,
        },
    }
}

fn has_any_regular_container_created(pod: &Pod, status: &PodRuntimeStatus) -> bool {
    let spec = pod.spec.as_ref();
    spec.into_iter()
        .flat_map(|s| s.containers.iter())
        .any(|c| find(status, &c.name).is_some())
}

fn kill_unknown(s: &ContainerStatus, what: &str) -> KillInfo {
    KillInfo {
        id: s.id.clone(),
        name: s.name.clone(),
        message: format!(
            "{what} is in \"{}\" state, try killing it before restart",
            s.state.as_str()
        ),
        reason: KillReason::Unknown,
    }
}

fn probe_kill(c: &Container, probes: &ProbeView<'_>, init: bool) -> Option<(String, KillReason)> {
    if !probes.unhealthy.contains(&c.name) {
        return None;
    }
    let prefix = if init { "Init container" } else { "Container" };
    // A startup probe that has not succeeded is the one that failed.
    if c.startup_probe.is_some() && (probes.started)(&c.name) != Some(true) {
        Some((
            format!("{prefix} {} failed startup probe", c.name),
            KillReason::StartupProbe,
        ))
    } else {
        Some((
            format!("{prefix} {} failed liveness probe", c.name),
            KillReason::LivenessProbe,
        ))
    }
}

pub fn compute_pod_actions(
    pod: &Pod,
    status: &PodRuntimeStatus,
    probes: &ProbeView<'_>,
) -> PodActions {
    let (create, attempt, sandbox_id) = sandbox_changed(pod, status);
    let mut ch = PodActions {
        kill_pod: create,
        create_sandbox: create,
        sandbox_id,
        attempt,
        ..Default::default()
    };
    let empty = Vec::new();
    let spec = pod.spec.as_ref();
    let containers = spec.map(|s| &s.containers).unwrap_or(&empty);
    let init_containers = spec
        .and_then(|s| s.init_containers.as_ref())
        .unwrap_or(&empty);

    if create {
        if !should_restart_on_failure(pod) && attempt != 0 && !status.containers.is_empty() {
            // Done pods get no new sandbox.
            ch.create_sandbox = false;
            return ch;
        }
        let to_start: Vec<usize> = containers
            .iter()
            .enumerate()
            .filter(|(_, c)| !(restart_policy(pod) == "OnFailure" && succeeded(c, status)))
            .map(|(i, _)| i)
            .collect();
        if to_start.is_empty() && has_any_regular_container_created(pod, status) {
            ch.create_sandbox = false;
            return ch;
        }
        if !init_containers.is_empty() {
            ch.init_containers_to_start = vec![0];
            return ch;
        }
        ch.containers_to_start = to_start;
        return ch;
    }

    let initialized =
        compute_init_actions(pod, init_containers, containers, status, probes, &mut ch);
    if ch.kill_pod || !initialized {
        return ch;
    }

    let mut keep = 0;
    for (idx, c) in containers.iter().enumerate() {
        let cs = find(status, &c.name);
        let running = cs.is_some_and(|s| s.state == ContainerState::Running);
        if !running {
            if should_container_be_restarted(c, pod, status) {
                ch.containers_to_start.push(idx);
                if let Some(s) = cs.filter(|s| s.state == ContainerState::Unknown) {
                    ch.containers_to_kill.push(kill_unknown(s, "Container"));
                }
            }
            continue;
        }
        let Some(s) = cs else { continue };
        let mut restart = should_restart_on_failure(pod);
        let (message, reason) = if s.hash != container_hash(c) {
            // A changed definition restarts whatever the policy.
            restart = true;
            (
                format!("Container {} definition changed", c.name),
                KillReason::Other,
            )
        } else if let Some(k) = probe_kill(c, probes, false) {
            k
        } else {
            keep += 1;
            continue;
        };
        let message = if restart {
            ch.containers_to_start.push(idx);
            format!("{message}, will be restarted")
        } else {
            message
        };
        ch.containers_to_kill.push(KillInfo {
            id: s.id.clone(),
            name: s.name.clone(),
            message,
            reason,
        });
    }
    if keep == 0 && ch.containers_to_start.is_empty() {
        ch.kill_pod = true;
        // Sidecars alone must not keep the pod alive.
        ch.init_containers_to_start.clear();
    }
    ch
}

/// Upstream `computeInitContainerActions`; returns whether the pod has
/// been initialized.
fn compute_init_actions(
    pod: &Pod,
    init: &[Container],
    regular: &[Container],
    status: &PodRuntimeStatus,
    probes: &ProbeView<'_>,
    ch: &mut PodActions,
) -> bool {
    if init.is_empty() {
        return true;
    }
    let mut initialized = regular.iter().any(|c| {
        find(status, &c.name)
            .is_some_and(|s| matches!(s.state, ContainerState::Created | ContainerState::Running))
    });
    let mut previously = initialized;
    let restart_on_failure = should_restart_on_failure(pod);
    let mut to_start: Vec<usize> = Vec::new();

    for i in (0..init.len()).rev() {
        let c = &init[i];
        let sidecar = is_sidecar(c);
        let Some(s) = find(status, &c.name) else {
            if previously && sidecar {
                to_start.push(i);
            }
            continue;
        };
        if previously && !sidecar {
            continue;
        }
        match s.state {
            ContainerState::Created => to_start.push(i),
            ContainerState::Running => {
                if sidecar {
                    'sidecar: {
                        if c.startup_probe.is_some() {
                            match (probes.started)(&c.name) {
                                Some(true) => {}
                                _ => {
                                    if let Some((message, reason)) = probe_kill(c, probes, true) {
                                        ch.containers_to_kill.push(KillInfo {
                                            id: s.id.clone(),
                                            name: c.name.clone(),
                                            message,
                                            reason,
                                        });
                                        to_start.push(i);
                                    }
                                    break 'sidecar;
                                }
                            }
                        }
                        if i == init.len() - 1 {
                            initialized = true;
                        } else if !previously {
                            to_start.push(i + 1);
                        }
                        if s.hash != container_hash(c) {
                            ch.containers_to_kill.push(KillInfo {
                                id: s.id.clone(),
                                name: c.name.clone(),
                                message: format!(
                                    "Init container {} definition changed, will be restarted",
                                    c.name
                                ),
                                reason: KillReason::Other,
                            });
                            to_start.push(i);
                        } else if let Some((message, reason)) = probe_kill(c, probes, true) {
                            ch.containers_to_kill.push(KillInfo {
                                id: s.id.clone(),
                                name: c.name.clone(),
                                message,
                                reason,
                            });
                            to_start.push(i);
                        }
                    }
                }
            }
            ContainerState::Exited => {
                if sidecar {
                    to_start.push(i);
                } else if s.exit_code != 0 {
                    if !restart_on_failure {
                        ch.kill_pod = true;
                        ch.init_containers_to_start.clear();
                        return false;
                    }
                    to_start.push(i);
                } else if i == init.len() - 1 {
                    initialized = true;
                } else {
                    to_start.push(i + 1);
                }
            }
            ContainerState::Unknown => {
                if !sidecar && !restart_on_failure {
                    ch.kill_pod = true;
                    ch.init_containers_to_start.clear();
                    return false;
                }
                ch.containers_to_kill
                    .push(kill_unknown(s, "Init container"));
                to_start.push(i);
            }
        }
        previously = true;
    }
    if !previously {
        to_start.push(0);
    }
    to_start.reverse();
    ch.init_containers_to_start = to_start;
    initialized
}
