//! Running one probe and reporting it (upstream `pkg/kubelet/prober/prober.go`).

use k8s_openapi::api::core::v1::{Container, Pod, PodStatus, Probe};
use kelson_runtime::events::EventType;

use super::{
    exec, grpc, http, tcp, Health, ProbeError, ProbeKind, ProbeManager, ProbeOutcome, ProbeResult,
    Timings,
};

/// Upstream retries a probe that errors (not one that fails) this often.
const MAX_PROBE_RETRIES: usize = 3;

/// Runs the probe (with retries on errors), records upstream's events and
/// maps the outcome to a result. `Err` is a probe that could not be run.
#[allow(clippy::too_many_arguments)]
pub(super) async fn probe(
    manager: &ProbeManager,
    kind: ProbeKind,
    pod: &Pod,
    status: &PodStatus,
    container: &Container,
    init: bool,
    spec: &Probe,
    container_id: &str,
) -> Result<Health, ProbeError> {
    let mut last = None;
    for _ in 0..MAX_PROBE_RETRIES {
        match run_once(manager, pod, status, container, spec, container_id).await {
            Ok(outcome) => {
                last = Some(Ok(outcome));
                break;
            }
            Err(e) => last = Some(Err(e)),
        }
    }
    let field_path = if init {
        format!("spec.initContainers{{{}}}", container.name)
    } else {
        format!("spec.containers{{{}}}", container.name)
    };
    let event = |kind_: EventType, reason: &str, message: String| {
        manager
            .shared
            .events
            .container_event(pod, &field_path, kind_, reason, message);
    };
    let name = kind.as_str();
    match last {
        Some(Ok(outcome)) => match outcome.result {
            ProbeResult::Success => Ok(Health::Success),
            ProbeResult::Warning => {
                event(
                    EventType::Warning,
                    "ProbeWarning",
                    format!("{name} probe warning: {}", outcome.output),
                );
                Ok(Health::Success)
            }
            ProbeResult::Failure => {
                event(
                    EventType::Warning,
                    "Unhealthy",
                    format!("{name} probe failed: {}", outcome.output),
                );
                Ok(Health::Failure)
            }
        },
        Some(Err(e)) => {
            tracing::debug!(probe = name, container = %container.name, error = %e, "probe errored");
            event(
                EventType::Warning,
                "Unhealthy",
                format!("{name} probe errored and resulted in unknown state: {e}"),
            );
            Err(e)
        }
        None => Err(ProbeError::MissingHandler {
            pod: pod_name(pod),
            container: container.name.clone(),
        }),
    }
}

/// One attempt of whichever handler the probe has.
async fn run_once(
    manager: &ProbeManager,
    pod: &Pod,
    status: &PodStatus,
    container: &Container,
    spec: &Probe,
    container_id: &str,
) -> Result<ProbeOutcome, ProbeError> {
    let timeout = Timings::of(spec).timeout;
    let pod_ip = status.pod_ip.as_deref().unwrap_or("");
    if let Some(e) = &spec.exec {
        let cmd = exec::expand_static(e.command.as_deref().unwrap_or(&[]), container);
        return exec::probe(manager.shared.exec.as_ref(), container_id, cmd, timeout).await;
    }
    if let Some(h) = &spec.http_get {
        return http::http_get(h, pod_ip, container, timeout).await;
    }
    if let Some(t) = &spec.tcp_socket {
        let port = super::http::resolve_port(&t.port, container)?;
        let host = t
            .host
            .as_deref()
            .filter(|h| !h.is_empty())
            .unwrap_or(pod_ip);
        return Ok(tcp::probe(host, port, timeout).await);
    }
    if let Some(g) = &spec.grpc {
        let port = u16::try_from(g.port)
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| ProbeError::Port(format!("invalid port number: {}", g.port)))?;
        let service = g.service.as_deref().unwrap_or("");
        return Ok(grpc::probe(pod_ip, port, service, timeout).await);
    }
    Err(ProbeError::MissingHandler {
        pod: pod_name(pod),
        container: container.name.clone(),
    })
}

/// `name_namespace(uid)` as upstream's format.Pod.
fn pod_name(pod: &Pod) -> String {
    format!(
        "{}_{}({})",
        pod.metadata.name.as_deref().unwrap_or(""),
        pod.metadata.namespace.as_deref().unwrap_or(""),
        pod.metadata.uid.as_deref().unwrap_or("")
    )
}
