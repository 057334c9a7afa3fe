//! Printers for core/v1 kinds.

use std::collections::{BTreeSet, HashMap};

use jiff::Timestamp;
use serde_json::Value;

use super::util::{
    age_cell, as_int, container_cells, flag, format_labels, get, int, join_host_port, list, map,
    name, parse_time, present, quantity, s, since_time, text, time_at,
};
use super::{Column, AGE, CONTAINERS_DESC, IMAGES_DESC, NAME};

// ---------------------------------------------------------------- pods

pub(crate) const POD_COLUMNS: &[Column] = &[
    NAME,
    Column::new(
        "Ready",
        "string",
        "How many of the pod's containers are ready, out of all of them.",
    ),
    Column::new(
        "Status",
        "string",
        "The pod's overall status, summarised from its phase and container states.",
    ),
    Column::new(
        "Restarts",
        "string",
        "How often the pod's containers restarted, and how long ago the latest restart was.",
    ),
    AGE,
    Column::wide(
        "IP",
        "string",
        "The pod's IP address (the first of status.podIPs).",
    ),
    Column::wide(
        "Node",
        "string",
        "The node the pod is bound to (spec.nodeName).",
    ),
    Column::wide(
        "Nominated Node",
        "string",
        "The node the scheduler nominated after preemption.",
    ),
    Column::wide(
        "Readiness Gates",
        "string",
        "How many of the pod's readiness gates are satisfied.",
    ),
];

fn condition_status<'a>(conditions: &'a [Value], type_: &str) -> Option<&'a str> {
    conditions
        .iter()
        .find(|c| text(c, &["type"]) == type_)
        .map(|c| text(c, &["status"]))
}

/// Keeps the latest restart time seen so far.
fn note_restart(latest: &mut Option<Timestamp>, status: &Value) {
    if let Some(t) = time_at(status, &["lastState", "terminated", "finishedAt"]) {
        if latest.is_none_or(|l| l < t) {
            *latest = Some(t);
        }
    }
}

fn terminated_reason(prefix: &str, term: &Value) -> String {
    let reason = text(term, &["reason"]);
    if !reason.is_empty() {
        return format!("{prefix}{reason}");
    }
    let signal = int(term, &["signal"]);
    if signal != 0 {
        format!("{prefix}Signal:{signal}")
    } else {
        format!("{prefix}ExitCode:{}", int(term, &["exitCode"]))
    }
}

pub(crate) fn pod_cells(pod: &Value, now: Timestamp) -> Vec<Value> {
    let spec = get(pod, &["spec"]).unwrap_or(&Value::Null);
    let status = get(pod, &["status"]).unwrap_or(&Value::Null);
    let conditions = list(status, &["conditions"]);

    let phase = text(status, &["phase"]);
    let mut reason = match text(status, &["reason"]) {
        "" => phase.to_owned(),
        r => r.to_owned(),
    };
    if conditions
        .iter()
        .any(|c| text(c, &["type"]) == "PodScheduled" && text(c, &["reason"]) == "SchedulingGated")
    {
        reason = "SchedulingGated".into();
    }

    // Sidecars (init containers with restartPolicy Always) count as containers.
    let init_specs = list(spec, &["initContainers"]);
    let sidecars: HashMap<&str, bool> = init_specs
        .iter()
        .map(|c| (text(c, &["name"]), text(c, &["restartPolicy"]) == "Always"))
        .collect();
    let is_sidecar = |n: &str| sidecars.get(n).copied().unwrap_or(false);
    let total = list(spec, &["containers"]).len() + sidecars.values().filter(|&&b| b).count();

    let mut ready = 0usize;
    let mut restarts = 0i64;
    let mut sidecar_restarts = 0i64;
    let mut last_restart = None;
    let mut last_sidecar_restart = None;
    let mut initializing = false;

    for (i, cs) in list(status, &["initContainerStatuses"]).iter().enumerate() {
        let sidecar = is_sidecar(text(cs, &["name"]));
        restarts += int(cs, &["restartCount"]);
        note_restart(&mut last_restart, cs);
        if sidecar {
            sidecar_restarts += int(cs, &["restartCount"]);
            note_restart(&mut last_sidecar_restart, cs);
        }
        let terminated = get(cs, &["state", "terminated"]).filter(|t| t.is_object());
        let waiting_reason = text(cs, &["state", "waiting", "reason"]);
        if terminated.is_some_and(|t| int(t, &["exitCode"]) == 0) {
            continue;
        }
        if sidecar && flag(cs, &["started"]) {
            if flag(cs, &["ready"]) {
                ready += 1;
            }
            continue;
        }
        reason = if let Some(t) = terminated {
            terminated_reason("Init:", t)
        } else if present(cs, &["state", "waiting"])
            && !waiting_reason.is_empty()
            && waiting_reason != "PodInitializing"
        {
            format!("Init:{waiting_reason}")
        } else {
            format!("Init:{i}/{}", init_specs.len())
        };
        initializing = true;
        break;
    }

    if !initializing || condition_status(conditions, "Initialized") == Some("True") {
        restarts = sidecar_restarts;
        last_restart = last_sidecar_restart;
        let mut has_running = false;
        for cs in list(status, &["containerStatuses"]).iter().rev() {
            restarts += int(cs, &["restartCount"]);
            note_restart(&mut last_restart, cs);
            let waiting_reason = text(cs, &["state", "waiting", "reason"]);
            let terminated = get(cs, &["state", "terminated"]).filter(|t| t.is_object());
            if !waiting_reason.is_empty() {
                reason = waiting_reason.to_owned();
            } else if let Some(t) = terminated {
                reason = terminated_reason("", t);
            } else if flag(cs, &["ready"]) && present(cs, &["state", "running"]) {
                has_running = true;
                ready += 1;
            }
        }
        // A pod whose last container completed but others still run is not "Completed".
        if reason == "Completed" && has_running {
            reason = if condition_status(conditions, "Ready") == Some("True") {
                "Running".into()
            } else {
                "NotReady".into()
            };
        }
    }

    let deleting = get(pod, &["metadata", "deletionTimestamp"]).is_some_and(|d| !d.is_null());
    if deleting && text(status, &["reason"]) == "NodeLost" {
        reason = "Unknown".into();
    } else if deleting && phase != "Succeeded" && phase != "Failed" {
        reason = "Terminating".into();
    }

    let restarts_cell = match last_restart {
        Some(t) if restarts != 0 => format!("{restarts} ({} ago)", since_time(t, now)),
        _ => restarts.to_string(),
    };

    let pod_ip = list(status, &["podIPs"])
        .first()
        .map(|ip| text(ip, &["ip"]))
        .filter(|ip| !ip.is_empty())
        .unwrap_or_else(|| text(status, &["podIP"]));
    let gates = list(spec, &["readinessGates"]);
    let gates_cell = if gates.is_empty() {
        "<none>".to_owned()
    } else {
        let satisfied = gates
            .iter()
            .filter(|g| condition_status(conditions, text(g, &["conditionType"])) == Some("True"))
            .count();
        format!("{satisfied}/{}", gates.len())
    };
    vec![
        name(pod),
        s(format!("{ready}/{total}")),
        s(reason),
        s(restarts_cell),
        age_cell(pod, now),
        s(or_none(pod_ip)),
        s(or_none(text(spec, &["nodeName"]))),
        s(or_none(text(status, &["nominatedNodeName"]))),
        s(gates_cell),
    ]
}

fn or_none(v: &str) -> String {
    if v.is_empty() {
        "<none>".into()
    } else {
        v.to_owned()
    }
}

fn or_unknown(v: &str) -> String {
    if v.is_empty() {
        "<unknown>".into()
    } else {
        v.to_owned()
    }
}

// ---------------------------------------------------------------- podtemplates

pub(crate) const POD_TEMPLATE_COLUMNS: &[Column] = &[
    NAME,
    Column::new("Containers", "string", CONTAINERS_DESC),
    Column::new("Images", "string", IMAGES_DESC),
    Column::new("Pod Labels", "string", "Labels of the pod template."),
];

pub(crate) fn pod_template_cells(obj: &Value, _now: Timestamp) -> Vec<Value> {
    let (names, images) = container_cells(list(obj, &["template", "spec", "containers"]));
    vec![
        name(obj),
        names,
        images,
        s(format_labels(map(obj, &["template", "metadata", "labels"]))),
    ]
}

// ---------------------------------------------------------------- services

pub(crate) const SERVICE_COLUMNS: &[Column] = &[
    NAME,
    Column::new(
        "Type",
        "string",
        "How the service is exposed (ClusterIP, NodePort, LoadBalancer, ExternalName).",
    ),
    Column::new(
        "Cluster-IP",
        "string",
        "The service's virtual IP inside the cluster.",
    ),
    Column::new(
        "External-IP",
        "string",
        "Addresses the service is reachable on from outside the cluster.",
    ),
    Column::new("Port(s)", "string", "The ports the service exposes."),
    AGE,
    Column::wide(
        "Selector",
        "string",
        "Labels selecting the pods behind the service.",
    ),
];

/// Load-balancer ingress points (IPs, else hostnames), de-duplicated and
/// sorted. The server renders the wide form, so nothing is clipped.
pub(crate) fn load_balancer_ingress(status: &Value) -> String {
    let set: BTreeSet<&str> = list(status, &["ingress"])
        .iter()
        .filter_map(|i| {
            let ip = text(i, &["ip"]);
            let host = text(i, &["hostname"]);
            if !ip.is_empty() {
                Some(ip)
            } else if !host.is_empty() {
                Some(host)
            } else {
                None
            }
        })
        .collect();
    set.into_iter().collect::<Vec<_>>().join(",")
}

fn strings(v: &[Value]) -> Vec<&str> {
    v.iter().filter_map(Value::as_str).collect()
}

fn service_external_ip(svc: &Value, type_: &str) -> String {
    let external = strings(list(svc, &["spec", "externalIPs"]));
    match type_ {
        "ClusterIP" | "NodePort" => {
            if external.is_empty() {
                "<none>".into()
            } else {
                external.join(",")
            }
        }
        "LoadBalancer" => {
            let lb = load_balancer_ingress(
                get(svc, &["status", "loadBalancer"]).unwrap_or(&Value::Null),
            );
            if !external.is_empty() {
                let mut all: Vec<&str> = if lb.is_empty() {
                    Vec::new()
                } else {
                    lb.split(',').collect()
                };
                all.extend(external);
                all.join(",")
            } else if !lb.is_empty() {
                lb
            } else {
                "<pending>".into()
            }
        }
        "ExternalName" => text(svc, &["spec", "externalName"]).to_owned(),
        _ => "<unknown>".into(),
    }
}

pub(crate) fn service_cells(svc: &Value, now: Timestamp) -> Vec<Value> {
    // Defaults (type ClusterIP, protocol TCP) are applied on write upstream;
    // assume them here too so a sparse object still prints sensibly.
    let type_ = match text(svc, &["spec", "type"]) {
        "" => "ClusterIP",
        t => t,
    };
    let cluster_ip = list(svc, &["spec", "clusterIPs"])
        .first()
        .and_then(Value::as_str)
        .or_else(|| get(svc, &["spec", "clusterIP"]).and_then(Value::as_str))
        .filter(|ip| !ip.is_empty())
        .unwrap_or("<none>");
    let ports: Vec<String> = list(svc, &["spec", "ports"])
        .iter()
        .map(|p| {
            let protocol = match text(p, &["protocol"]) {
                "" => "TCP",
                proto => proto,
            };
            let port = int(p, &["port"]);
            let node_port = int(p, &["nodePort"]);
            if node_port > 0 {
                format!("{port}:{node_port}/{protocol}")
            } else {
                format!("{port}/{protocol}")
            }
        })
        .collect();
    let ports = if ports.is_empty() {
        "<none>".to_owned()
    } else {
        ports.join(",")
    };
    vec![
        name(svc),
        s(type_),
        s(cluster_ip),
        s(service_external_ip(svc, type_)),
        s(ports),
        age_cell(svc, now),
        s(format_labels(map(svc, &["spec", "selector"]))),
    ]
}

// ---------------------------------------------------------------- endpoints

pub(crate) const ENDPOINTS_COLUMNS: &[Column] = &[
    NAME,
    Column::new(
        "Endpoints",
        "string",
        "The addresses and ports backing the service.",
    ),
    AGE,
];

/// Upstream's `formatEndpoints`: the first three `ip:port` pairs, then a
/// count of the rest.
fn format_endpoints(obj: &Value) -> String {
    let subsets = list(obj, &["subsets"]);
    if subsets.is_empty() {
        return "<none>".into();
    }
    const MAX: usize = 3;
    let mut shown: Vec<String> = Vec::new();
    let mut more = false;
    let mut count = 0usize;
    for ss in subsets {
        let addresses = list(ss, &["addresses"]);
        let ports = list(ss, &["ports"]);
        if ports.is_empty() {
            // Headless services may have no ports.
            count += addresses.len();
            for a in addresses {
                if shown.len() == MAX {
                    more = true;
                    break;
                }
                shown.push(text(a, &["ip"]).to_owned());
            }
            continue;
        }
        for p in ports {
            count += addresses.len();
            for a in addresses {
                if shown.len() == MAX {
                    more = true;
                    break;
                }
                shown.push(join_host_port(text(a, &["ip"]), int(p, &["port"])));
            }
        }
    }
    let joined = shown.join(",");
    if more {
        format!("{joined} + {} more...", count.saturating_sub(MAX))
    } else {
        joined
    }
}

pub(crate) fn endpoints_cells(obj: &Value, now: Timestamp) -> Vec<Value> {
    vec![name(obj), s(format_endpoints(obj)), age_cell(obj, now)]
}

// ---------------------------------------------------------------- nodes

pub(crate) const NODE_COLUMNS: &[Column] = &[
    NAME,
    Column::new(
        "Status",
        "string",
        "The node's readiness, and whether scheduling onto it is disabled.",
    ),
    Column::new(
        "Roles",
        "string",
        "The node's roles, from node-role.kubernetes.io/<role> labels.",
    ),
    AGE,
    Column::new("Version", "string", "The kubelet version the node reports."),
    Column::wide(
        "Internal-IP",
        "string",
        "The node's first InternalIP address.",
    ),
    Column::wide(
        "External-IP",
        "string",
        "The node's first ExternalIP address.",
    ),
    Column::wide(
        "OS-Image",
        "string",
        "The operating system image the node reports.",
    ),
    Column::wide(
        "Kernel-Version",
        "string",
        "The kernel version the node reports.",
    ),
    Column::wide(
        "Container-Runtime",
        "string",
        "The container runtime and version the node reports.",
    ),
];

fn node_roles(node: &Value) -> String {
    const PREFIX: &str = "node-role.kubernetes.io/";
    let mut roles = BTreeSet::new();
    for (k, v) in map(node, &["metadata", "labels"]).into_iter().flatten() {
        if let Some(role) = k.strip_prefix(PREFIX) {
            if !role.is_empty() {
                roles.insert(role.to_owned());
            }
        } else if k == "kubernetes.io/role" {
            if let Some(v) = v.as_str().filter(|v| !v.is_empty()) {
                roles.insert(v.to_owned());
            }
        }
    }
    if roles.is_empty() {
        "<none>".into()
    } else {
        roles.into_iter().collect::<Vec<_>>().join(",")
    }
}

fn node_address(node: &Value, type_: &str) -> String {
    list(node, &["status", "addresses"])
        .iter()
        .find(|a| text(a, &["type"]) == type_)
        .map(|a| text(a, &["address"]).to_owned())
        .unwrap_or_else(|| "<none>".into())
}

pub(crate) fn node_cells(node: &Value, now: Timestamp) -> Vec<Value> {
    // Only the Ready condition is summarised; the last duplicate wins.
    let ready = list(node, &["status", "conditions"])
        .iter()
        .rev()
        .find(|c| text(c, &["type"]) == "Ready");
    let mut status = vec![match ready {
        Some(c) if text(c, &["status"]) == "True" => "Ready",
        Some(_) => "NotReady",
        None => "Unknown",
    }];
    if flag(node, &["spec", "unschedulable"]) {
        status.push("SchedulingDisabled");
    }
    let info = |k: &str| text(node, &["status", "nodeInfo", k]);
    vec![
        name(node),
        s(status.join(",")),
        s(node_roles(node)),
        age_cell(node, now),
        s(info("kubeletVersion")),
        s(node_address(node, "InternalIP")),
        s(node_address(node, "ExternalIP")),
        s(or_unknown(info("osImage"))),
        s(or_unknown(info("kernelVersion"))),
        s(or_unknown(info("containerRuntimeVersion"))),
    ]
}

// ---------------------------------------------------------------- events

pub(crate) const EVENT_COLUMNS: &[Column] = &[
    Column::new(
        "Last Seen",
        "string",
        "Time since the event was last observed.",
    ),
    Column::new("Type", "string", "The event's type (Normal or Warning)."),
    Column::new(
        "Reason",
        "string",
        "A short machine-readable reason for the event.",
    ),
    Column::new("Object", "string", "The object the event is about."),
    Column::wide(
        "Subobject",
        "string",
        "The part of the object the event is about (fieldPath).",
    ),
    Column::wide(
        "Source",
        "string",
        "The component (and host) that reported the event.",
    ),
    Column::new(
        "Message",
        "string",
        "A human-readable description of the event.",
    ),
    Column::wide(
        "First Seen",
        "string",
        "Time since the event was first observed.",
    ),
    Column::wide("Count", "string", "How many times the event occurred."),
    Column {
        name: "Name",
        type_: "string",
        format: "name",
        description: super::NAME_DESC,
        priority: 1,
    },
];

/// The fields upstream's event printer reads, whichever API version the
/// object was written in (core/v1 and events.k8s.io/v1 name them differently).
struct EventView<'a> {
    first: Option<&'a Value>,
    last: Option<&'a Value>,
    event_time: Option<&'a Value>,
    count: i64,
    series: Option<&'a Value>,
    regarding: Option<&'a Value>,
    source: Option<&'a Value>,
    reporting_controller: &'a str,
    reporting_instance: &'a str,
    message: &'a str,
}

pub(crate) fn core_event_cells(ev: &Value, now: Timestamp) -> Vec<Value> {
    event_cells(
        ev,
        EventView {
            first: get(ev, &["firstTimestamp"]),
            last: get(ev, &["lastTimestamp"]),
            event_time: get(ev, &["eventTime"]),
            count: int(ev, &["count"]),
            series: get(ev, &["series"]),
            regarding: get(ev, &["involvedObject"]),
            source: get(ev, &["source"]),
            reporting_controller: text(ev, &["reportingComponent"]),
            reporting_instance: text(ev, &["reportingInstance"]),
            message: text(ev, &["message"]),
        },
        now,
    )
}

pub(crate) fn events_v1_cells(ev: &Value, now: Timestamp) -> Vec<Value> {
    event_cells(
        ev,
        EventView {
            first: get(ev, &["deprecatedFirstTimestamp"]),
            last: get(ev, &["deprecatedLastTimestamp"]),
            event_time: get(ev, &["eventTime"]),
            count: int(ev, &["deprecatedCount"]),
            series: get(ev, &["series"]),
            regarding: get(ev, &["regarding"]),
            source: get(ev, &["deprecatedSource"]),
            reporting_controller: text(ev, &["reportingController"]),
            reporting_instance: text(ev, &["reportingInstance"]),
            message: text(ev, &["note"]),
        },
        now,
    )
}

fn time_of(v: Option<&Value>) -> Option<Timestamp> {
    v.and_then(Value::as_str).and_then(parse_time)
}

fn age_or_unknown(t: Option<Timestamp>, now: Timestamp) -> String {
    t.map_or_else(|| "<unknown>".to_owned(), |t| since_time(t, now))
}

fn event_cells(ev: &Value, v: EventView<'_>, now: Timestamp) -> Vec<Value> {
    let first = match time_of(v.first) {
        Some(t) => since_time(t, now),
        None => age_or_unknown(time_of(v.event_time), now),
    };
    let mut last = match time_of(v.last) {
        Some(t) => since_time(t, now),
        None => first.clone(),
    };
    let mut count = v.count;
    match v.series.filter(|s| s.is_object()) {
        Some(series) => {
            last = age_or_unknown(time_of(get(series, &["lastObservedTime"])), now);
            count = int(series, &["count"]);
        }
        // Singleton events written through events.k8s.io carry no count.
        None if count == 0 => count = 1,
        None => {}
    }
    let regarding = v.regarding.unwrap_or(&Value::Null);
    let kind = text(regarding, &["kind"]).to_lowercase();
    let target = match text(regarding, &["name"]) {
        "" => kind,
        n => format!("{kind}/{n}"),
    };
    let source = v.source.unwrap_or(&Value::Null);
    let component = first_non_empty(text(source, &["component"]), v.reporting_controller);
    let host = first_non_empty(text(source, &["host"]), v.reporting_instance);
    let source = if host.is_empty() {
        component.to_owned()
    } else {
        format!("{component}, {host}")
    };
    vec![
        s(last),
        s(text(ev, &["type"])),
        s(text(ev, &["reason"])),
        s(target),
        s(text(regarding, &["fieldPath"])),
        s(source),
        s(v.message.trim()),
        s(first),
        Value::from(count),
        name(ev),
    ]
}

fn first_non_empty<'a>(a: &'a str, b: &'a str) -> &'a str {
    if a.is_empty() {
        b
    } else {
        a
    }
}

// ---------------------------------------------------------------- simple kinds

pub(crate) const NAMESPACE_COLUMNS: &[Column] = &[
    NAME,
    Column::new(
        "Status",
        "string",
        "The namespace's phase (Active or Terminating).",
    ),
    AGE,
];

pub(crate) fn namespace_cells(obj: &Value, now: Timestamp) -> Vec<Value> {
    vec![
        name(obj),
        s(text(obj, &["status", "phase"])),
        age_cell(obj, now),
    ]
}

pub(crate) const SECRET_COLUMNS: &[Column] = &[
    NAME,
    Column::new(
        "Type",
        "string",
        "The secret's type, which says how its data is used.",
    ),
    Column::new("Data", "string", "How many keys the secret holds."),
    AGE,
];

pub(crate) fn secret_cells(obj: &Value, now: Timestamp) -> Vec<Value> {
    // stringData is merged into data on write; count the union in case it was not.
    let mut keys: BTreeSet<&str> = BTreeSet::new();
    for field in ["data", "stringData"] {
        keys.extend(
            map(obj, &[field])
                .into_iter()
                .flatten()
                .map(|(k, _)| k.as_str()),
        );
    }
    vec![
        name(obj),
        s(text(obj, &["type"])),
        Value::from(keys.len()),
        age_cell(obj, now),
    ]
}

pub(crate) const CONFIGMAP_COLUMNS: &[Column] = &[
    NAME,
    Column::new(
        "Data",
        "string",
        "How many keys the config map holds (data and binaryData).",
    ),
    AGE,
];

pub(crate) fn configmap_cells(obj: &Value, now: Timestamp) -> Vec<Value> {
    let count = map(obj, &["data"]).map_or(0, |m| m.len())
        + map(obj, &["binaryData"]).map_or(0, |m| m.len());
    vec![name(obj), Value::from(count), age_cell(obj, now)]
}

pub(crate) const SERVICE_ACCOUNT_COLUMNS: &[Column] = &[
    NAME,
    Column::new(
        "Secrets",
        "string",
        "How many secrets the service account lists.",
    ),
    AGE,
];

pub(crate) fn service_account_cells(obj: &Value, now: Timestamp) -> Vec<Value> {
    vec![
        name(obj),
        Value::from(list(obj, &["secrets"]).len()),
        age_cell(obj, now),
    ]
}

pub(crate) const COMPONENT_STATUS_COLUMNS: &[Column] = &[
    NAME,
    Column::new("Status", "string", "Whether the component is healthy."),
    Column::new("Message", "string", "The component's health message."),
    Column::new("Error", "string", "The component's health error."),
];

pub(crate) fn component_status_cells(obj: &Value, _now: Timestamp) -> Vec<Value> {
    let healthy = list(obj, &["conditions"])
        .iter()
        .find(|c| text(c, &["type"]) == "Healthy");
    let (status, message, error) = match healthy {
        Some(c) => (
            if text(c, &["status"]) == "True" {
                "Healthy"
            } else {
                "Unhealthy"
            },
            text(c, &["message"]),
            text(c, &["error"]),
        ),
        None => ("Unknown", "", ""),
    };
    vec![name(obj), s(status), s(message), s(error)]
}

// ---------------------------------------------------------------- storage

pub(crate) const PV_COLUMNS: &[Column] = &[
    NAME,
    Column::new("Capacity", "string", "The volume's storage capacity."),
    Column::new(
        "Access Modes",
        "string",
        "How the volume can be mounted (RWO, ROX, RWX, RWOP).",
    ),
    Column::new(
        "Reclaim Policy",
        "string",
        "What happens to the volume once its claim is released.",
    ),
    Column::new("Status", "string", "The volume's phase."),
    Column::new(
        "Claim",
        "string",
        "The claim bound to the volume, as namespace/name.",
    ),
    Column::new("StorageClass", "string", "StorageClass of the pv"),
    Column::new(
        "VolumeAttributesClass",
        "string",
        "VolumeAttributesClass of the pv",
    ),
    Column::new(
        "Reason",
        "string",
        "Why the volume is in its phase, if it says.",
    ),
    AGE,
    Column::wide(
        "VolumeMode",
        "string",
        "Whether the volume is a filesystem or a raw block device.",
    ),
];

/// `helper.GetAccessModesAsString`: abbreviations in a fixed order, no repeats.
fn access_modes(modes: &[Value]) -> String {
    let has = |m: &str| modes.iter().any(|v| v.as_str() == Some(m));
    [
        ("ReadWriteOnce", "RWO"),
        ("ReadOnlyMany", "ROX"),
        ("ReadWriteMany", "RWX"),
        ("ReadWriteOncePod", "RWOP"),
    ]
    .iter()
    .filter(|(full, _)| has(full))
    .map(|(_, short)| *short)
    .collect::<Vec<_>>()
    .join(",")
}

/// The beta storage-class annotation still wins over the spec field.
fn storage_class(obj: &Value) -> String {
    if let Some(class) = get(
        obj,
        &[
            "metadata",
            "annotations",
            "volume.beta.kubernetes.io/storage-class",
        ],
    )
    .and_then(Value::as_str)
    {
        return class.to_owned();
    }
    text(obj, &["spec", "storageClassName"]).to_owned()
}

fn unset_or(v: &Value, path: &[&str]) -> String {
    match get(v, path).and_then(Value::as_str) {
        Some(x) => x.to_owned(),
        None => "<unset>".into(),
    }
}

fn deleting(obj: &Value) -> bool {
    get(obj, &["metadata", "deletionTimestamp"]).is_some_and(|d| !d.is_null())
}

pub(crate) fn pv_cells(pv: &Value, now: Timestamp) -> Vec<Value> {
    let claim = match get(pv, &["spec", "claimRef"]).filter(|c| c.is_object()) {
        Some(c) => format!("{}/{}", text(c, &["namespace"]), text(c, &["name"])),
        None => String::new(),
    };
    let phase = if deleting(pv) {
        "Terminating"
    } else {
        text(pv, &["status", "phase"])
    };
    vec![
        name(pv),
        s(quantity(get(pv, &["spec", "capacity", "storage"]), "0")),
        s(access_modes(list(pv, &["spec", "accessModes"]))),
        s(text(pv, &["spec", "persistentVolumeReclaimPolicy"])),
        s(phase),
        s(claim),
        s(storage_class(pv)),
        s(unset_or(pv, &["spec", "volumeAttributesClassName"])),
        s(text(pv, &["status", "reason"])),
        age_cell(pv, now),
        s(unset_or(pv, &["spec", "volumeMode"])),
    ]
}

pub(crate) const PVC_COLUMNS: &[Column] = &[
    NAME,
    Column::new("Status", "string", "The claim's phase."),
    Column::new("Volume", "string", "The volume bound to the claim."),
    Column::new("Capacity", "string", "The capacity of the bound volume."),
    Column::new(
        "Access Modes",
        "string",
        "How the bound volume can be mounted.",
    ),
    Column::new("StorageClass", "string", "StorageClass of the pvc"),
    Column::new(
        "VolumeAttributesClass",
        "string",
        "VolumeAttributesClass of the pvc",
    ),
    AGE,
    Column::wide(
        "VolumeMode",
        "string",
        "Whether the claim wants a filesystem or a raw block device.",
    ),
];

pub(crate) fn pvc_cells(pvc: &Value, now: Timestamp) -> Vec<Value> {
    let phase = if deleting(pvc) {
        "Terminating"
    } else {
        text(pvc, &["status", "phase"])
    };
    let volume = text(pvc, &["spec", "volumeName"]);
    // Capacity and modes are only meaningful once bound.
    let (capacity, modes) = if volume.is_empty() {
        (String::new(), String::new())
    } else {
        (
            quantity(get(pvc, &["status", "capacity", "storage"]), "0"),
            access_modes(list(pvc, &["status", "accessModes"])),
        )
    };
    vec![
        name(pvc),
        s(phase),
        s(volume),
        s(capacity),
        s(modes),
        s(storage_class(pvc)),
        s(unset_or(pvc, &["spec", "volumeAttributesClassName"])),
        age_cell(pvc, now),
        s(unset_or(pvc, &["spec", "volumeMode"])),
    ]
}

// ---------------------------------------------------------------- quotas

pub(crate) const RESOURCE_QUOTA_COLUMNS: &[Column] = &[
    NAME,
    Column::new(
        "Request",
        "string",
        "Used and hard limits of the quota's request (non-limits) resources.",
    ),
    Column::new(
        "Limit",
        "string",
        "Used and hard limits of the quota's limits.* resources.",
    ),
    AGE,
];

pub(crate) fn resource_quota_cells(rq: &Value, now: Timestamp) -> Vec<Value> {
    let hard = map(rq, &["status", "hard"]);
    let mut resources: Vec<&String> = hard.into_iter().flatten().map(|(k, _)| k).collect();
    resources.sort();
    let mut requests = Vec::new();
    let mut limits = Vec::new();
    for r in resources {
        let used = quantity(get(rq, &["status", "used", r]), "0");
        let hard = quantity(hard.and_then(|h| h.get(r)), "0");
        let entry = format!("{r}: {used}/{hard}");
        let mut pieces = r.split('.');
        let first = pieces.next();
        if first == Some("limits") && pieces.next().is_some() {
            limits.push(entry);
        } else {
            requests.push(entry);
        }
    }
    vec![
        name(rq),
        s(requests.join(", ")),
        s(limits.join(", ")),
        age_cell(rq, now),
    ]
}

// ---------------------------------------------------------------- replicationcontrollers

pub(crate) const RC_COLUMNS: &[Column] = &[
    NAME,
    Column::new("Desired", "integer", "How many replicas are wanted."),
    Column::new("Current", "integer", "How many replicas exist."),
    Column::new("Ready", "integer", "How many replicas are ready."),
    AGE,
    Column::wide("Containers", "string", CONTAINERS_DESC),
    Column::wide("Images", "string", IMAGES_DESC),
    Column::wide(
        "Selector",
        "string",
        "Labels selecting the controller's pods.",
    ),
];

pub(crate) fn rc_cells(rc: &Value, now: Timestamp) -> Vec<Value> {
    let desired = get(rc, &["spec", "replicas"])
        .filter(|v| v.is_number())
        .map_or(1, as_int);
    let (names, images) = container_cells(list(rc, &["spec", "template", "spec", "containers"]));
    vec![
        name(rc),
        Value::from(desired),
        Value::from(int(rc, &["status", "replicas"])),
        Value::from(int(rc, &["status", "readyReplicas"])),
        age_cell(rc, now),
        names,
        images,
        s(format_labels(map(rc, &["spec", "selector"]))),
    ]
}
