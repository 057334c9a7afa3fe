//! Lifecycle hooks (upstream `lifecycle/handlers.go`): exec through CRI
//! ExecSync, httpGet to the pod, sleep. Errors carry upstream's messages.

use std::time::Duration;

use http_body_util::BodyExt as _;
use k8s_openapi::api::core::v1::{Container, HTTPGetAction, LifecycleHandler, Pod};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::config::format_pod;
use super::cri::CriRuntime;

/// Runs `h` for `container_id`; the user-facing failure message.
pub async fn run(
    cri: &dyn CriRuntime,
    pod: &Pod,
    c: &Container,
    container_id: &str,
    h: &LifecycleHandler,
    pod_ip: &str,
    timeout: Option<Duration>,
) -> Result<(), String> {
    let fp = format_pod(pod);
    if let Some(exec) = &h.exec {
        let cmd = exec.command.clone().unwrap_or_default();
        let (err, output) = match cri
            .exec_sync(container_id, cmd.clone(), timeout.unwrap_or(Duration::ZERO))
            .await
        {
            Ok(o) if o.exit_code == 0 => return Ok(()),
            Ok(o) => {
                let mut output = o.stdout.clone();
                output.extend_from_slice(&o.stderr);
                (
                    format!(
                        "command '{}' exited with {}: {}",
                        cmd.join(" "),
                        o.exit_code,
                        String::from_utf8_lossy(&o.stderr)
                    ),
                    String::from_utf8_lossy(&output).into_owned(),
                )
            }
            Err(e) => (e.to_string(), String::new()),
        };
        return Err(format!(
            "Exec lifecycle hook ([{}]) for Container \"{}\" in Pod \"{fp}\" failed - error: {err}, message: {:?}",
            cmd.join(" "),
            c.name,
            output
        ));
    }
    if let Some(get) = &h.http_get {
        return http_get(get, c, pod_ip, timeout).await.map_err(|err| {
            format!(
                "HTTP lifecycle hook ({}) for Container \"{}\" in Pod \"{fp}\" failed - error: {err}",
                get.path.as_deref().unwrap_or(""),
                c.name
            )
        });
    }
    if let Some(sleep) = &h.sleep {
        tokio::time::sleep(Duration::from_secs(
            u64::try_from(sleep.seconds).unwrap_or(0),
        ))
        .await;
        return Ok(());
    }
    Err("Cannot run handler: invalid handler".to_string())
}

/// The port of an httpGet action: a number, or a named container port.
fn resolve_port(port: &IntOrString, c: &Container) -> Result<u16, String> {
    match port {
        IntOrString::Int(n) => u16::try_from(*n).map_err(|_| format!("invalid port number: {n}")),
        IntOrString::String(name) => {
            if let Ok(n) = name.parse::<u16>() {
                return Ok(n);
            }
            c.ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(name.as_str()))
                .and_then(|p| u16::try_from(p.container_port).ok())
                .ok_or_else(|| format!("couldn't find port: {name} in {}", c.name))
        }
    }
}

/// A GET that succeeds when any response arrives (upstream ignores the
/// status code of hook requests).
async fn http_get(
    a: &HTTPGetAction,
    c: &Container,
    pod_ip: &str,
    timeout: Option<Duration>,
) -> Result<(), String> {
    let host = a
        .host
        .clone()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| pod_ip.to_string());
    let port = resolve_port(&a.port, c)?;
    if a.scheme.as_deref() == Some("HTTPS") {
        return Err("HTTPS lifecycle hooks are not supported".into());
    }
    let host_part = if host.contains(':') {
        format!("[{host}]")
    } else {
        host
    };
    let mut path = a.path.clone().unwrap_or_default();
    if !path.starts_with('/') {
        path.insert(0, '/');
    }
    let uri = format!("http://{host_part}:{port}{path}");
    let mut req = http::Request::get(&uri).header("User-Agent", "kube-lifecycle/1.33");
    for h in a.http_headers.iter().flatten() {
        req = req.header(h.name.as_str(), h.value.as_str());
    }
    let req = req
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .map_err(|e| e.to_string())?;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http();
    let fut = async {
        let resp = client.request(req).await.map_err(|e| e.to_string())?;
        // Drain the body so the connection closes cleanly.
        let _ = resp.into_body().collect().await;
        Ok::<(), String>(())
    };
    match timeout {
        Some(t) if !t.is_zero() => tokio::time::timeout(t, fut)
            .await
            .map_err(|_| "context deadline exceeded".to_string())?,
        _ => fut.await,
    }
}
