//! What a kubelet without containers does with a pod bound to its node:
//! decide the next step from the pod as the API server shows it ([`plan`])
//! and build the status it then reports. Pure functions, so every step is
//! unit-tested without a cluster.

use std::collections::HashMap;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{ContainerStatus, Pod, PodCondition};
use serde_json::{json, Value};

use crate::node::{fake_digest, time};
use kelson_runtime::parse_go_duration;

/// A pod with this annotation (a Go duration) ends its containers with
/// exit code 0 that long after they started.
pub const EXIT_AFTER_ANNOTATION: &str = "kelson.dev/sim-exit-after";
/// The exit code those containers end with (default 0): a failing Job.
pub const EXIT_CODE_ANNOTATION: &str = "kelson.dev/sim-exit-code";

fn exit_code(pod: &Pod) -> i32 {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(EXIT_CODE_ANNOTATION))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}
/// Exit code of a container killed at once (128 + SIGKILL).
const KILLED_EXIT_CODE: i32 = 137;

/// The next step for one pod.
#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    Nothing,
    /// Not running yet: give it an IP and report it Running.
    Start,
    /// Running, but its reported status lost what the kubelet owns (the
    /// node lifecycle controller marked it not ready): report it again.
    Resync,
    /// The exit-after time comes then.
    ExitAt(Timestamp),
    /// The exit-after time has come: complete or restart the containers.
    Exit,
    /// Being deleted while running: report its containers killed, then
    /// delete it for good.
    Kill,
    /// Being deleted and already finished: delete it for good.
    Remove,
    /// Finished: its IP goes back to the node's pool.
    Release,
}

fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending")
}

fn is_terminal(pod: &Pod) -> bool {
    matches!(phase(pod), "Succeeded" | "Failed")
}

fn conditions(pod: &Pod) -> &[PodCondition] {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_deref())
        .unwrap_or(&[])
}

fn condition_status<'a>(pod: &'a Pod, type_: &str) -> Option<&'a str> {
    conditions(pod)
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| c.status.as_str())
}

fn container_names(pod: &Pod) -> Vec<&str> {
    pod.spec
        .as_ref()
        .map(|s| s.containers.iter().map(|c| c.name.as_str()).collect())
        .unwrap_or_default()
}

fn container_statuses(pod: &Pod) -> &[ContainerStatus] {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_deref())
        .unwrap_or(&[])
}

/// Whether the sim already reported the pod running with an IP.
fn is_started(pod: &Pod) -> bool {
    let has_ip = pod
        .status
        .as_ref()
        .and_then(|s| s.pod_ip.as_deref())
        .is_some_and(|ip| !ip.is_empty());
    let statuses = container_statuses(pod);
    phase(pod) == "Running"
        && has_ip
        && container_names(pod).iter().all(|n| {
            statuses
                .iter()
                .any(|s| s.name == *n && s.state.as_ref().is_some_and(|st| st.running.is_some()))
        })
}

/// The Ready condition a running pod should have: (status, reason, message).
/// Readiness gates hold it back until their conditions are True.
fn desired_ready(pod: &Pod) -> (&'static str, Option<String>, Option<String>) {
    let gates = pod
        .spec
        .as_ref()
        .and_then(|s| s.readiness_gates.as_deref())
        .unwrap_or(&[]);
    let mut unready = Vec::new();
    for g in gates {
        match conditions(pod).iter().find(|c| c.type_ == g.condition_type) {
            None => unready.push(format!(
                "corresponding condition of pod readiness gate \"{}\" does not exist.",
                g.condition_type
            )),
            Some(c) if c.status != "True" => unready.push(format!(
                "the status of pod readiness gate \"{}\" is not \"True\", but {}",
                g.condition_type, c.status
            )),
            Some(_) => {}
        }
    }
    if unready.is_empty() {
        ("True", None, None)
    } else {
        (
            "False",
            Some("ReadinessGatesNotReady".into()),
            Some(unready.join(", ")),
        )
    }
}

/// When the pod's containers exit, from the exit-after annotation and the
/// latest container start.
fn exit_deadline(pod: &Pod) -> Option<Timestamp> {
    let after = pod
        .metadata
        .annotations
        .as_ref()?
        .get(EXIT_AFTER_ANNOTATION)
        .and_then(|v| parse_go_duration(v))?;
    let started = container_statuses(pod)
        .iter()
        .filter_map(|s| s.state.as_ref()?.running.as_ref()?.started_at.as_ref())
        .map(|t| t.0)
        .max()?;
    let after = jiff::SignedDuration::try_from(after).ok()?;
    started.checked_add(after).ok()
}

/// Decides what to do with `pod`, bound to a live simulated node.
pub fn plan(pod: &Pod, now: Timestamp) -> Plan {
    if pod.metadata.deletion_timestamp.is_some() {
        return if is_terminal(pod) {
            Plan::Remove
        } else {
            Plan::Kill
        };
    }
    if is_terminal(pod) {
        return Plan::Release;
    }
    if !is_started(pod) {
        return Plan::Start;
    }
    let (ready, _, _) = desired_ready(pod);
    if condition_status(pod, "Ready") != Some(ready)
        || condition_status(pod, "ContainersReady") != Some("True")
    {
        return Plan::Resync;
    }
    match exit_deadline(pod) {
        Some(at) if at <= now => Plan::Exit,
        Some(at) => Plan::ExitAt(at),
        None => Plan::Nothing,
    }
}

/// Builds the conditions list: those the kubelet does not own first, then
/// its own in upstream's order. A condition keeps its lastTransitionTime
/// while its status stays the same.
fn kubelet_conditions(
    pod: &Pod,
    own: &[(&str, &str, Option<String>, Option<String>)],
    now: Timestamp,
) -> Vec<Value> {
    const OWNED: [&str; 5] = [
        "PodReadyToStartContainers",
        "Initialized",
        "Ready",
        "ContainersReady",
        "PodScheduled",
    ];
    let existing = conditions(pod);
    let mut out: Vec<Value> = existing
        .iter()
        .filter(|c| !OWNED.contains(&c.type_.as_str()))
        .filter_map(|c| serde_json::to_value(c).ok())
        .collect();
    let ts = time(now);
    for (type_, status, reason, message) in own {
        let old = existing.iter().find(|c| c.type_ == *type_);
        let transition = match old {
            Some(c) if c.status == *status => c
                .last_transition_time
                .as_ref()
                .map(|t| time(t.0))
                .unwrap_or_else(|| ts.clone()),
            _ => ts.clone(),
        };
        let mut c = json!({"type": type_, "status": status, "lastProbeTime": null,
                           "lastTransitionTime": transition});
        if let Some(r) = reason {
            c["reason"] = json!(r);
        }
        if let Some(m) = message {
            c["message"] = json!(m);
        }
        out.push(c);
    }
    out
}

fn scheduled() -> (&'static str, &'static str, Option<String>, Option<String>) {
    ("PodScheduled", "True", None, None)
}

/// "repo@sha256:…" for an image reference, as containerd reports imageID.
fn image_id(image: &str) -> String {
    let no_digest = image.split('@').next().unwrap_or(image);
    let last_slash = no_digest.rfind('/').map(|i| i + 1).unwrap_or(0);
    let repo = match no_digest[last_slash..].rfind(':') {
        Some(i) => &no_digest[..last_slash + i],
        None => no_digest,
    };
    format!("{repo}@sha256:{}", fake_digest(image))
}

fn container_id(pod: &Pod, name: &str, restarts: i32) -> String {
    let uid = pod.metadata.uid.as_deref().unwrap_or("");
    format!("sim://{}", fake_digest(&format!("{uid}/{name}/{restarts}")))
}

/// Statuses of init containers of a starting pod: regular ones ran to
/// completion, sidecars (restartPolicy Always) run.
fn init_statuses(pod: &Pod, now: Timestamp) -> Vec<Value> {
    let ts = time(now);
    let Some(spec) = pod.spec.as_ref() else {
        return Vec::new();
    };
    spec.init_containers
        .as_deref()
        .unwrap_or(&[])
        .iter()
        .map(|c| {
            let cid = container_id(pod, &c.name, 0);
            let image = c.image.as_deref().unwrap_or("");
            let sidecar = c.restart_policy.as_deref() == Some("Always");
            let state = if sidecar {
                json!({"running": {"startedAt": ts}})
            } else {
                json!({"terminated": {"exitCode": 0, "reason": "Completed", "startedAt": ts,
                                      "finishedAt": ts, "containerID": cid}})
            };
            json!({"name": c.name, "image": image, "imageID": image_id(image), "containerID": cid,
                   "ready": true, "started": sidecar, "restartCount": 0, "state": state,
                   "lastState": {}})
        })
        .collect()
}

/// The status patch (JSON merge) that reports a pod Running and Ready on
/// its node with `pod_ip`. Container start times, restart counts and the
/// pod's startTime survive a resync.
pub fn running_status(pod: &Pod, host_ip: &str, pod_ip: &str, now: Timestamp) -> Value {
    let ts = time(now);
    let old: HashMap<&str, &ContainerStatus> = container_statuses(pod)
        .iter()
        .map(|s| (s.name.as_str(), s))
        .collect();
    let containers: Vec<Value> = pod
        .spec
        .as_ref()
        .map(|s| s.containers.as_slice())
        .unwrap_or(&[])
        .iter()
        .map(|c| {
            let prev = old.get(c.name.as_str());
            let restarts = prev.map(|p| p.restart_count).unwrap_or(0);
            let started = prev
                .and_then(|p| p.state.as_ref()?.running.as_ref()?.started_at.as_ref())
                .map(|t| time(t.0))
                .unwrap_or_else(|| ts.clone());
            let last_state = prev
                .and_then(|p| p.last_state.as_ref())
                .and_then(|s| serde_json::to_value(s).ok())
                .unwrap_or_else(|| json!({}));
            let image = c.image.as_deref().unwrap_or("");
            json!({"name": c.name, "image": image, "imageID": image_id(image),
                   "containerID": container_id(pod, &c.name, restarts),
                   "ready": true, "started": true, "restartCount": restarts,
                   "state": {"running": {"startedAt": started}}, "lastState": last_state})
        })
        .collect();
    let (ready, reason, message) = desired_ready(pod);
    let conds = kubelet_conditions(
        pod,
        &[
            ("PodReadyToStartContainers", "True", None, None),
            ("Initialized", "True", None, None),
            ("Ready", ready, reason, message),
            ("ContainersReady", "True", None, None),
            scheduled(),
        ],
        now,
    );
    let start_time = pod
        .status
        .as_ref()
        .and_then(|s| s.start_time.as_ref())
        .map(|t| time(t.0))
        .unwrap_or(ts);
    let mut status = json!({
        "phase": "Running",
        "conditions": conds,
        "hostIP": host_ip,
        "hostIPs": [{"ip": host_ip}],
        "podIP": pod_ip,
        "podIPs": [{"ip": pod_ip}],
        "startTime": start_time,
        "containerStatuses": containers,
    });
    let inits = init_statuses(pod, now);
    if !inits.is_empty() {
        // A resync keeps what the start reported.
        let old_inits = pod
            .status
            .as_ref()
            .and_then(|s| s.init_container_statuses.as_ref())
            .and_then(|v| serde_json::to_value(v).ok());
        status["initContainerStatuses"] = old_inits
            .filter(|v| v.as_array().is_some_and(|a| a.len() == inits.len()))
            .unwrap_or(Value::Array(inits));
    }
    json!({"status": status})
}

/// Terminated state of every container that was running, with `exit_code`.
fn terminated_containers(pod: &Pod, exit_code: i32, reason: &str, now: Timestamp) -> Vec<Value> {
    let ts = time(now);
    let old: HashMap<&str, &ContainerStatus> = container_statuses(pod)
        .iter()
        .map(|s| (s.name.as_str(), s))
        .collect();
    pod.spec
        .as_ref()
        .map(|s| s.containers.as_slice())
        .unwrap_or(&[])
        .iter()
        .map(|c| {
            let prev = old.get(c.name.as_str());
            let restarts = prev.map(|p| p.restart_count).unwrap_or(0);
            let started = prev
                .and_then(|p| p.state.as_ref()?.running.as_ref()?.started_at.as_ref())
                .map(|t| time(t.0));
            let image = c.image.as_deref().unwrap_or("");
            let cid = container_id(pod, &c.name, restarts);
            let mut term = json!({"exitCode": exit_code, "reason": reason,
                                  "finishedAt": ts, "containerID": cid});
            term["startedAt"] = json!(started.unwrap_or_else(|| ts.clone()));
            json!({"name": c.name, "image": image, "imageID": image_id(image), "containerID": cid,
                   "ready": false, "started": false, "restartCount": restarts,
                   "state": {"terminated": term}, "lastState": {}})
        })
        .collect()
}

fn restart_policy(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| s.restart_policy.as_deref())
        .unwrap_or("Always")
}

/// The status patch once the exit-after time has come: containers exit 0;
/// with restartPolicy Always they start again (restartCount + 1), otherwise
/// the pod has Succeeded.
pub fn exited_status(pod: &Pod, now: Timestamp) -> Value {
    let code = exit_code(pod);
    let reason = if code == 0 { "Completed" } else { "Error" };
    let policy = restart_policy(pod);
    if policy == "Always" || (policy == "OnFailure" && code != 0) {
        let ts = time(now);
        let containers: Vec<Value> = terminated_containers(pod, code, reason, now)
            .into_iter()
            .map(|mut c| {
                let restarts = c["restartCount"].as_i64().unwrap_or(0) + 1;
                let name = c["name"].as_str().unwrap_or("").to_string();
                c["lastState"] = c["state"].take();
                c["restartCount"] = json!(restarts);
                c["state"] = json!({"running": {"startedAt": ts}});
                c["ready"] = json!(true);
                c["started"] = json!(true);
                c["containerID"] = json!(container_id(pod, &name, restarts as i32));
                c
            })
            .collect();
        return json!({"status": {"containerStatuses": containers}});
    }
    let (phase, pod_reason) = if code == 0 {
        ("Succeeded", "PodCompleted")
    } else {
        ("Failed", "PodFailed")
    };
    let conds = kubelet_conditions(
        pod,
        &[
            ("PodReadyToStartContainers", "False", None, None),
            ("Initialized", "True", Some("PodCompleted".into()), None),
            ("Ready", "False", Some(pod_reason.into()), None),
            ("ContainersReady", "False", Some(pod_reason.into()), None),
            scheduled(),
        ],
        now,
    );
    json!({"status": {
        "phase": phase,
        "conditions": conds,
        "containerStatuses": terminated_containers(pod, code, reason, now),
    }})
}

/// The status patch of a pod being deleted: its containers were killed at
/// once, so they end with 137 and the pod has Failed.
pub fn killed_status(pod: &Pod, now: Timestamp) -> Value {
    let conds = kubelet_conditions(
        pod,
        &[
            ("PodReadyToStartContainers", "False", None, None),
            ("Initialized", "True", None, None),
            ("Ready", "False", Some("PodFailed".into()), None),
            ("ContainersReady", "False", Some("PodFailed".into()), None),
            scheduled(),
        ],
        now,
    );
    json!({"status": {
        "phase": "Failed",
        "conditions": conds,
        "containerStatuses": terminated_containers(pod, KILLED_EXIT_CODE, "Error", now),
    }})
}

/// The pod's current IP, if it has one.
pub fn pod_ip(pod: &Pod) -> Option<std::net::IpAddr> {
    pod.status.as_ref()?.pod_ip.as_deref()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(v: Value) -> Pod {
        serde_json::from_value(v).unwrap()
    }

    fn base() -> Value {
        json!({
            "metadata": {"name": "p", "namespace": "default", "uid": "u1"},
            "spec": {"nodeName": "n", "containers": [{"name": "app", "image": "nginx:1.27"}]},
            "status": {"phase": "Pending", "qosClass": "BestEffort",
                       "conditions": [{"type": "PodScheduled", "status": "True",
                                       "lastTransitionTime": "2024-01-01T00:00:00Z"}]},
        })
    }

    fn apply(pod_json: &mut Value, patch: &Value) {
        for (k, v) in patch["status"].as_object().unwrap() {
            pod_json["status"][k] = v.clone();
        }
    }

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    #[test]
    fn a_pending_pod_starts_running_and_ready() {
        let mut v = base();
        let p = pod(v.clone());
        assert_eq!(plan(&p, at(1_700_000_000)), Plan::Start);
        let patch = running_status(&p, "10.244.0.1", "10.42.0.2", at(1_700_000_000));
        let s = &patch["status"];
        assert_eq!(s["phase"], "Running");
        assert_eq!(s["podIP"], "10.42.0.2");
        assert_eq!(s["podIPs"][0]["ip"], "10.42.0.2");
        assert_eq!(s["hostIP"], "10.244.0.1");
        assert!(
            s.get("qosClass").is_none(),
            "the API server's qosClass stays"
        );
        let types: Vec<&str> = s["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["type"].as_str().unwrap())
            .collect();
        assert_eq!(
            types,
            [
                "PodReadyToStartContainers",
                "Initialized",
                "Ready",
                "ContainersReady",
                "PodScheduled"
            ]
        );
        // PodScheduled keeps its transition time.
        assert_eq!(
            s["conditions"][4]["lastTransitionTime"],
            "2024-01-01T00:00:00Z"
        );
        let c = &s["containerStatuses"][0];
        assert_eq!(c["ready"], true);
        assert_eq!(c["started"], true);
        assert_eq!(c["state"]["running"]["startedAt"], "2023-11-14T22:13:20Z");
        assert!(c["imageID"].as_str().unwrap().starts_with("nginx@sha256:"));
        assert!(c["containerID"].as_str().unwrap().starts_with("sim://"));
        apply(&mut v, &patch);
        v["status"]["phase"] = json!("Running");
        assert_eq!(plan(&pod(v), at(1_700_000_100)), Plan::Nothing);
    }

    #[test]
    fn a_pod_marked_not_ready_is_reported_again_keeping_its_start() {
        let mut v = base();
        let p = pod(v.clone());
        apply(
            &mut v,
            &running_status(&p, "h", "10.42.0.2", at(1_700_000_000)),
        );
        v["status"]["conditions"][2]["status"] = json!("False");
        let p = pod(v);
        assert_eq!(plan(&p, at(1_700_000_500)), Plan::Resync);
        let again = running_status(&p, "h", "10.42.0.2", at(1_700_000_500));
        assert_eq!(again["status"]["conditions"][2]["status"], "True");
        assert_eq!(
            again["status"]["containerStatuses"][0]["state"]["running"]["startedAt"],
            "2023-11-14T22:13:20Z"
        );
        assert_eq!(again["status"]["startTime"], "2023-11-14T22:13:20Z");
    }

    #[test]
    fn readiness_gates_hold_ready_back() {
        let mut v = base();
        v["spec"]["readinessGates"] = json!([{"conditionType": "example.com/lb"}]);
        let p = pod(v.clone());
        let patch = running_status(&p, "h", "10.42.0.2", at(1_700_000_000));
        let ready = &patch["status"]["conditions"][2];
        assert_eq!(ready["status"], "False");
        assert_eq!(ready["reason"], "ReadinessGatesNotReady");
        apply(&mut v, &patch);
        // Not ready because of the gate is what it should be: no resync loop.
        assert_eq!(plan(&pod(v), at(1_700_000_001)), Plan::Nothing);
    }

    #[test]
    fn exit_after_completes_or_restarts() {
        let mut v = base();
        v["metadata"]["annotations"] = json!({EXIT_AFTER_ANNOTATION: "5s"});
        v["spec"]["restartPolicy"] = json!("Never");
        let p = pod(v.clone());
        apply(
            &mut v,
            &running_status(&p, "h", "10.42.0.2", at(1_700_000_000)),
        );
        let p = pod(v.clone());
        assert_eq!(plan(&p, at(1_700_000_002)), Plan::ExitAt(at(1_700_000_005)));
        assert_eq!(plan(&p, at(1_700_000_005)), Plan::Exit);
        let done = exited_status(&p, at(1_700_000_005));
        assert_eq!(done["status"]["phase"], "Succeeded");
        let t = &done["status"]["containerStatuses"][0]["state"]["terminated"];
        assert_eq!(t["exitCode"], 0);
        assert_eq!(t["reason"], "Completed");
        assert_eq!(done["status"]["conditions"][2]["reason"], "PodCompleted");

        v["spec"]["restartPolicy"] = json!("Always");
        let p = pod(v);
        let restarted = exited_status(&p, at(1_700_000_005));
        let c = &restarted["status"]["containerStatuses"][0];
        assert_eq!(c["restartCount"], 1);
        assert_eq!(c["lastState"]["terminated"]["exitCode"], 0);
        assert_eq!(c["state"]["running"]["startedAt"], "2023-11-14T22:13:25Z");
    }

    #[test]
    fn deletion_kills_then_removes() {
        let mut v = base();
        v["metadata"]["deletionTimestamp"] = json!("2024-01-01T00:00:00Z");
        let p = pod(v.clone());
        assert_eq!(plan(&p, at(1)), Plan::Kill);
        let k = killed_status(&p, at(1_700_000_000));
        assert_eq!(k["status"]["phase"], "Failed");
        assert_eq!(
            k["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"],
            137
        );
        v["status"]["phase"] = json!("Failed");
        assert_eq!(plan(&pod(v), at(1)), Plan::Remove);
    }

    #[test]
    fn finished_pods_release_their_ip() {
        let mut v = base();
        v["status"]["phase"] = json!("Succeeded");
        assert_eq!(plan(&pod(v), at(1)), Plan::Release);
    }

    #[test]
    fn image_ids() {
        assert!(image_id("nginx:1.27").starts_with("nginx@sha256:"));
        assert!(image_id("localhost:5000/app").starts_with("localhost:5000/app@sha256:"));
        assert!(image_id("r.io/a/b:v1@sha256:00").starts_with("r.io/a/b@sha256:"));
    }
}
