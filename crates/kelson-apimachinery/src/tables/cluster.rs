//! Printers for networking, RBAC, storage, scheduling, coordination,
//! discovery, node, admission and certificate kinds.

use std::collections::BTreeSet;

use jiff::Timestamp;
use serde_json::Value;

use super::core_v1::load_balancer_ingress;
use super::util::{
    age_cell, flag, format_label_selector, get, human_duration, int, list, list_with_more, name,
    opt_int, s, text,
};
use super::{Column, AGE, NAME};

// ---------------------------------------------------------------- leases

pub(crate) const LEASE_COLUMNS: &[Column] = &[
    NAME,
    Column::new(
        "Holder",
        "string",
        "Identity of the current holder of the lease.",
    ),
    AGE,
];

pub(crate) fn lease_cells(obj: &Value, now: Timestamp) -> Vec<Value> {
    vec![
        name(obj),
        s(text(obj, &["spec", "holderIdentity"])),
        age_cell(obj, now),
    ]
}

// ---------------------------------------------------------------- endpointslices

pub(crate) const ENDPOINT_SLICE_COLUMNS: &[Column] = &[
    NAME,
    Column::new(
        "AddressType",
        "string",
        "The kind of addresses in the slice (IPv4, IPv6, FQDN).",
    ),
    Column::new("Ports", "string", "The ports of the slice's endpoints."),
    Column::new("Endpoints", "string", "The addresses in the slice."),
    AGE,
];

pub(crate) fn endpoint_slice_cells(obj: &Value, now: Timestamp) -> Vec<Value> {
    let ports: Vec<String> = list(obj, &["ports"])
        .iter()
        .map(|p| {
            match (
                opt_int(p, &["port"]),
                get(p, &["name"]).and_then(Value::as_str),
            ) {
                (Some(port), _) => port.to_string(),
                (None, Some(n)) => n.to_owned(),
                (None, None) => "*".to_owned(),
            }
        })
        .collect();
    let addresses: Vec<String> = list(obj, &["endpoints"])
        .iter()
        .flat_map(|e| list(e, &["addresses"]))
        .map(|a| a.as_str().unwrap_or("").to_owned())
        .collect();
    vec![
        name(obj),
        s(text(obj, &["addressType"])),
        s(list_with_more(&ports, 3, "<unset>")),
        s(list_with_more(&addresses, 3, "<unset>")),
        age_cell(obj, now),
    ]
}

// ---------------------------------------------------------------- rbac

pub(crate) const ROLE_BINDING_COLUMNS: &[Column] = &[
    NAME,
    Column::new("Role", "string", "The role granted, as Kind/name."),
    AGE,
    Column::wide("Users", "string", "Users the binding grants the role to."),
    Column::wide("Groups", "string", "Groups the binding grants the role to."),
    Column::wide(
        "ServiceAccounts",
        "string",
        "Service accounts the binding grants the role to.",
    ),
];

/// Serves both rolebindings and clusterrolebindings: they print alike.
pub(crate) fn role_binding_cells(obj: &Value, now: Timestamp) -> Vec<Value> {
    let mut users = Vec::new();
    let mut groups = Vec::new();
    let mut sas = Vec::new();
    for subject in list(obj, &["subjects"]) {
        let n = text(subject, &["name"]);
        match text(subject, &["kind"]) {
            "ServiceAccount" => sas.push(format!("{}/{n}", text(subject, &["namespace"]))),
            "User" => users.push(n.to_owned()),
            "Group" => groups.push(n.to_owned()),
            _ => {}
        }
    }
    vec![
        name(obj),
        s(format!(
            "{}/{}",
            text(obj, &["roleRef", "kind"]),
            text(obj, &["roleRef", "name"])
        )),
        age_cell(obj, now),
        s(users.join(", ")),
        s(groups.join(", ")),
        s(sas.join(", ")),
    ]
}

// ---------------------------------------------------------------- networking

pub(crate) const INGRESS_COLUMNS: &[Column] = &[
    NAME,
    Column::new(
        "Class",
        "string",
        "The IngressClass that handles this ingress.",
    ),
    Column::new("Hosts", "string", "Hosts the ingress rules match."),
    Column::new(
        "Address",
        "string",
        "Addresses of the load balancer serving the ingress.",
    ),
    Column::new(
        "Ports",
        "string",
        "Ports the ingress serves (443 too when TLS is configured).",
    ),
    AGE,
];

/// Upstream's `formatHosts`: up to three hosts, "*" when none are named.
fn format_hosts(rules: &[Value]) -> String {
    const MAX: usize = 3;
    let mut shown: Vec<&str> = Vec::new();
    let mut more = false;
    for rule in rules {
        if shown.len() == MAX {
            more = true;
        }
        let host = text(rule, &["host"]);
        if !more && !host.is_empty() {
            shown.push(host);
        }
    }
    if shown.is_empty() {
        return "*".into();
    }
    let joined = shown.join(",");
    if more {
        format!("{joined} + {} more...", rules.len().saturating_sub(MAX))
    } else {
        joined
    }
}

pub(crate) fn ingress_cells(obj: &Value, now: Timestamp) -> Vec<Value> {
    let class = get(obj, &["spec", "ingressClassName"])
        .and_then(Value::as_str)
        .unwrap_or("<none>");
    let ports = if list(obj, &["spec", "tls"]).is_empty() {
        "80"
    } else {
        "80, 443"
    };
    vec![
        name(obj),
        s(class),
        s(format_hosts(list(obj, &["spec", "rules"]))),
        s(load_balancer_ingress(
            get(obj, &["status", "loadBalancer"]).unwrap_or(&Value::Null),
        )),
        s(ports),
        age_cell(obj, now),
    ]
}

pub(crate) const INGRESS_CLASS_COLUMNS: &[Column] = &[
    NAME,
    Column::new(
        "Controller",
        "string",
        "The controller that implements the class.",
    ),
    Column::new(
        "Parameters",
        "string",
        "The resource holding extra configuration for the class.",
    ),
    AGE,
];

pub(crate) fn ingress_class_cells(obj: &Value, now: Timestamp) -> Vec<Value> {
    let params = match get(obj, &["spec", "parameters"]).filter(|p| p.is_object()) {
        None => "<none>".to_owned(),
        Some(p) => {
            let mut out = text(p, &["kind"]).to_owned();
            if let Some(group) = get(p, &["apiGroup"]).and_then(Value::as_str) {
                out = format!("{out}.{group}");
            }
            format!("{out}/{}", text(p, &["name"]))
        }
    };
    vec![
        name(obj),
        s(text(obj, &["spec", "controller"])),
        s(params),
        age_cell(obj, now),
    ]
}

pub(crate) const NETWORK_POLICY_COLUMNS: &[Column] = &[
    NAME,
    Column::new("Pod-Selector", "string", "The pods the policy applies to."),
    AGE,
];

pub(crate) fn network_policy_cells(obj: &Value, now: Timestamp) -> Vec<Value> {
    // podSelector is a required struct: absent means "select all" ({}).
    let selector = get(obj, &["spec", "podSelector"])
        .cloned()
        .unwrap_or_else(|| Value::Object(Default::default()));
    vec![
        name(obj),
        s(format_label_selector(Some(&selector))),
        age_cell(obj, now),
    ]
}

// ---------------------------------------------------------------- storage

pub(crate) const STORAGE_CLASS_COLUMNS: &[Column] = &[
    NAME,
    Column::new(
        "Provisioner",
        "string",
        "The volume plugin that provisions volumes of this class.",
    ),
    Column::new(
        "ReclaimPolicy",
        "string",
        "What happens to provisioned volumes once released.",
    ),
    Column::new(
        "VolumeBindingMode",
        "string",
        "When volumes are bound and provisioned.",
    ),
    Column::new(
        "AllowVolumeExpansion",
        "string",
        "Whether volumes of this class can be expanded.",
    ),
    AGE,
];

fn is_default_class(obj: &Value) -> bool {
    [
        "storageclass.kubernetes.io/is-default-class",
        "storageclass.beta.kubernetes.io/is-default-class",
    ]
    .iter()
    .any(|k| text(obj, &["metadata", "annotations", k]) == "true")
}

pub(crate) fn storage_class_cells(obj: &Value, now: Timestamp) -> Vec<Value> {
    let mut n = text(obj, &["metadata", "name"]).to_owned();
    if is_default_class(obj) {
        n.push_str(" (default)");
    }
    let or = |k: &str, d: &'static str| {
        get(obj, &[k])
            .and_then(Value::as_str)
            .unwrap_or(d)
            .to_owned()
    };
    vec![
        s(n),
        s(text(obj, &["provisioner"])),
        s(or("reclaimPolicy", "Delete")),
        s(or("volumeBindingMode", "Immediate")),
        Value::Bool(flag(obj, &["allowVolumeExpansion"])),
        age_cell(obj, now),
    ]
}

pub(crate) const CSI_DRIVER_COLUMNS: &[Column] = &[
    NAME,
    Column::new(
        "AttachRequired",
        "boolean",
        "Whether volumes need an attach step.",
    ),
    Column::new(
        "PodInfoOnMount",
        "boolean",
        "Whether pod information is passed on mount.",
    ),
    Column::new(
        "StorageCapacity",
        "boolean",
        "Whether the driver reports storage capacity.",
    ),
    Column::new(
        "TokenRequests",
        "string",
        "Audiences of service account tokens passed to the driver.",
    ),
    Column::new(
        "RequiresRepublish",
        "boolean",
        "Whether volumes are periodically re-published.",
    ),
    Column::new(
        "Modes",
        "string",
        "Volume lifecycle modes the driver supports.",
    ),
    AGE,
];

pub(crate) fn csi_driver_cells(obj: &Value, now: Timestamp) -> Vec<Value> {
    let spec = get(obj, &["spec"]).unwrap_or(&Value::Null);
    let attach = get(spec, &["attachRequired"])
        .and_then(Value::as_bool)
        .unwrap_or(true);
    let tokens = match get(spec, &["tokenRequests"]).and_then(Value::as_array) {
        None => "<unset>".to_owned(),
        Some(reqs) => reqs
            .iter()
            .map(|t| text(t, &["audience"]))
            .collect::<Vec<_>>()
            .join(","),
    };
    let modes: Vec<&str> = list(spec, &["volumeLifecycleModes"])
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let modes = if modes.is_empty() {
        "<none>".to_owned()
    } else {
        modes.join(",")
    };
    vec![
        name(obj),
        Value::Bool(attach),
        Value::Bool(flag(spec, &["podInfoOnMount"])),
        Value::Bool(flag(spec, &["storageCapacity"])),
        s(tokens),
        Value::Bool(flag(spec, &["requiresRepublish"])),
        s(modes),
        age_cell(obj, now),
    ]
}

pub(crate) const CSI_NODE_COLUMNS: &[Column] = &[
    NAME,
    Column::new(
        "Drivers",
        "integer",
        "How many CSI drivers are registered on the node.",
    ),
    AGE,
];

pub(crate) fn csi_node_cells(obj: &Value, now: Timestamp) -> Vec<Value> {
    vec![
        name(obj),
        Value::from(list(obj, &["spec", "drivers"]).len()),
        age_cell(obj, now),
    ]
}

pub(crate) const VOLUME_ATTACHMENT_COLUMNS: &[Column] = &[
    NAME,
    Column {
        name: "Attacher",
        type_: "string",
        format: "name",
        description: "The volume driver that attaches the volume.",
        priority: 0,
    },
    Column::new("PV", "string", "The persistent volume being attached."),
    Column::new("Node", "string", "The node the volume is attached to."),
    Column::new(
        "Attached",
        "boolean",
        "Whether the attach operation succeeded.",
    ),
    AGE,
];

pub(crate) fn volume_attachment_cells(obj: &Value, now: Timestamp) -> Vec<Value> {
    vec![
        name(obj),
        s(text(obj, &["spec", "attacher"])),
        s(text(obj, &["spec", "source", "persistentVolumeName"])),
        s(text(obj, &["spec", "nodeName"])),
        Value::Bool(flag(obj, &["status", "attached"])),
        age_cell(obj, now),
    ]
}

// ---------------------------------------------------------------- scheduling & node

pub(crate) const PRIORITY_CLASS_COLUMNS: &[Column] = &[
    NAME,
    Column::new(
        "Value",
        "integer",
        "The priority pods of this class receive.",
    ),
    Column::new(
        "Global-Default",
        "boolean",
        "Whether pods without a class get this one.",
    ),
    AGE,
    Column::new(
        "PreemptionPolicy",
        "string",
        "Whether pods of this class may preempt others.",
    ),
];

pub(crate) fn priority_class_cells(obj: &Value, now: Timestamp) -> Vec<Value> {
    vec![
        name(obj),
        Value::from(int(obj, &["value"])),
        Value::Bool(flag(obj, &["globalDefault"])),
        age_cell(obj, now),
        s(text(obj, &["preemptionPolicy"])),
    ]
}

pub(crate) const RUNTIME_CLASS_COLUMNS: &[Column] = &[
    NAME,
    Column::new(
        "Handler",
        "string",
        "The CRI handler that runs pods of this class.",
    ),
    AGE,
];

pub(crate) fn runtime_class_cells(obj: &Value, now: Timestamp) -> Vec<Value> {
    vec![name(obj), s(text(obj, &["handler"])), age_cell(obj, now)]
}

// ---------------------------------------------------------------- admission

pub(crate) const WEBHOOK_COLUMNS: &[Column] = &[
    NAME,
    Column::new(
        "Webhooks",
        "integer",
        "How many webhooks the configuration registers.",
    ),
    AGE,
];

pub(crate) fn webhook_cells(obj: &Value, now: Timestamp) -> Vec<Value> {
    vec![
        name(obj),
        Value::from(list(obj, &["webhooks"]).len()),
        age_cell(obj, now),
    ]
}

// ---------------------------------------------------------------- certificates

pub(crate) const CSR_COLUMNS: &[Column] = &[
    NAME,
    AGE,
    Column::new(
        "SignerName",
        "string",
        "The signer asked to sign the request.",
    ),
    Column::new("Requestor", "string", "The user who created the request."),
    Column::new(
        "RequestedDuration",
        "string",
        "The certificate lifetime asked for.",
    ),
    Column::new(
        "Condition",
        "string",
        "Whether the request is approved, denied, failed or issued.",
    ),
];

pub(crate) fn csr_cells(obj: &Value, now: Timestamp) -> Vec<Value> {
    let types: BTreeSet<&str> = list(obj, &["status", "conditions"])
        .iter()
        .map(|c| text(c, &["type"]))
        .collect();
    let mut condition = if types.contains("Denied") {
        "Denied".to_owned()
    } else if types.contains("Approved") {
        "Approved".to_owned()
    } else {
        "Pending".to_owned()
    };
    if types.contains("Failed") {
        condition.push_str(",Failed");
    }
    if !text(obj, &["status", "certificate"]).is_empty() {
        condition.push_str(",Issued");
    }
    let signer = match text(obj, &["spec", "signerName"]) {
        "" => "<none>",
        n => n,
    };
    let duration = opt_int(obj, &["spec", "expirationSeconds"]).map_or_else(
        || "<none>".to_owned(),
        |secs| human_duration(secs.saturating_mul(1_000_000_000)),
    );
    vec![
        name(obj),
        age_cell(obj, now),
        s(signer),
        s(text(obj, &["spec", "username"])),
        s(duration),
        s(condition),
    ]
}
