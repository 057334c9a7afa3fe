//! Server-side Table output (`Accept: application/json;as=Table;v=v1;g=meta.k8s.io`).
//!
//! kubectl asks the API server for a `meta.k8s.io/v1` Table and prints it
//! as-is, so the columns and cell text must be exactly what upstream's
//! printers produce. This module supplies the column definitions and the
//! cells of one row; the server builds the Table envelope around them.
//!
//! Like upstream's server-side convertor, rows always carry every column,
//! including the `-o wide` ones (priority 1): the client hides them.

mod cluster;
mod core_v1;
mod custom;
mod util;
mod workloads;

use jiff::Timestamp;
use serde_json::Value;

pub use custom::{custom_cells, custom_columns, validate_json_path, CustomColumn};

/// Errors while reading printer column definitions.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TableError {
    /// A printer column's JSONPath cannot be parsed.
    #[error("invalid JSONPath {path:?}: {reason}")]
    InvalidJsonPath { path: String, reason: String },
}

/// One column of a Table (`meta.k8s.io/v1` TableColumnDefinition).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Column {
    pub name: &'static str,
    /// "string" | "integer" | "number" | "boolean" | "date"
    pub type_: &'static str,
    /// "name" for the NAME column, else "".
    pub format: &'static str,
    pub description: &'static str,
    /// 0 always shown, 1 only with `-o wide`.
    pub priority: i32,
}

impl Column {
    pub(crate) const fn new(
        name: &'static str,
        type_: &'static str,
        description: &'static str,
    ) -> Self {
        Column {
            name,
            type_,
            format: "",
            description,
            priority: 0,
        }
    }

    /// A column kubectl shows only with `-o wide`.
    pub(crate) const fn wide(
        name: &'static str,
        type_: &'static str,
        description: &'static str,
    ) -> Self {
        Column {
            name,
            type_,
            format: "",
            description,
            priority: 1,
        }
    }
}

pub(crate) const NAME_DESC: &str =
    "Name of the object, unique within its namespace (or the cluster for cluster-scoped kinds).";
pub(crate) const AGE_DESC: &str =
    "Time since the object was created, from metadata.creationTimestamp.";
pub(crate) const CONTAINERS_DESC: &str = "Names of the containers in the pod template.";
pub(crate) const IMAGES_DESC: &str = "Images used by the containers in the pod template.";

pub(crate) const NAME: Column = Column {
    name: "Name",
    type_: "string",
    format: "name",
    description: NAME_DESC,
    priority: 0,
};
pub(crate) const AGE: Column = Column::new("Age", "string", AGE_DESC);

const DEFAULT_COLUMNS: &[Column] = &[
    NAME,
    Column::new(
        "Created At",
        "date",
        "Time the object was created, from metadata.creationTimestamp.",
    ),
];

/// Columns for a built-in resource (group "" for core), `None` when upstream
/// has no printer for it (roles, clusterroles, limitranges,
/// customresourcedefinitions, ...): the server then uses [`default_columns`].
pub fn columns(group: &str, resource: &str) -> Option<&'static [Column]> {
    printer(group, resource).map(|p| p.0)
}

/// One row's cells for `obj`, in the order of [`columns`]. For a resource
/// without a printer this is [`default_cells`]. `now` is the current time.
pub fn cells(group: &str, resource: &str, obj: &Value, now: Timestamp) -> Vec<Value> {
    match printer(group, resource) {
        Some((_, f)) => f(obj, now),
        None => default_cells(obj, now),
    }
}

/// The table upstream's default convertor serves for kinds without a
/// printer: NAME and CREATED AT (a `date` column holding the RFC 3339
/// creation time, which kubectl shows verbatim).
pub fn default_columns() -> &'static [Column] {
    DEFAULT_COLUMNS
}

/// Cells for [`default_columns`]: the name and the creation time in UTC
/// RFC 3339 with whole seconds (Go's zero time when unset, as upstream).
pub fn default_cells(obj: &Value, _now: Timestamp) -> Vec<Value> {
    let created = util::get(obj, &["metadata", "creationTimestamp"])
        .and_then(Value::as_str)
        .and_then(|t| t.parse::<Timestamp>().ok());
    let created = match created {
        Some(t) => t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        None => "0001-01-01T00:00:00Z".to_owned(),
    };
    vec![util::name(obj), Value::String(created)]
}

/// Human age as kubectl shows it (upstream `duration.HumanDuration` of the
/// time since `timestamp`): "<unknown>" when missing, empty or Go's zero
/// time, "<invalid>" when unparsable or more than a second in the future.
pub fn age(timestamp: Option<&str>, now: Timestamp) -> String {
    let Some(raw) = timestamp.filter(|t| !t.is_empty()) else {
        return "<unknown>".into();
    };
    match raw.parse::<Timestamp>() {
        Ok(_) => match util::parse_time(raw) {
            Some(t) => util::since_time(t, now),
            None => "<unknown>".into(),
        },
        Err(_) => "<invalid>".into(),
    }
}

type CellFn = fn(&Value, Timestamp) -> Vec<Value>;

fn printer(group: &str, resource: &str) -> Option<(&'static [Column], CellFn)> {
    use cluster as c;
    use core_v1 as k;
    use workloads as w;
    let p: (&'static [Column], CellFn) = match (group, resource) {
        ("", "pods") => (k::POD_COLUMNS, k::pod_cells),
        ("", "podtemplates") => (k::POD_TEMPLATE_COLUMNS, k::pod_template_cells),
        ("", "services") => (k::SERVICE_COLUMNS, k::service_cells),
        ("", "endpoints") => (k::ENDPOINTS_COLUMNS, k::endpoints_cells),
        ("", "nodes") => (k::NODE_COLUMNS, k::node_cells),
        ("", "events") => (k::EVENT_COLUMNS, k::core_event_cells),
        ("events.k8s.io", "events") => (k::EVENT_COLUMNS, k::events_v1_cells),
        ("", "namespaces") => (k::NAMESPACE_COLUMNS, k::namespace_cells),
        ("", "secrets") => (k::SECRET_COLUMNS, k::secret_cells),
        ("", "configmaps") => (k::CONFIGMAP_COLUMNS, k::configmap_cells),
        ("", "serviceaccounts") => (k::SERVICE_ACCOUNT_COLUMNS, k::service_account_cells),
        ("", "persistentvolumes") => (k::PV_COLUMNS, k::pv_cells),
        ("", "persistentvolumeclaims") => (k::PVC_COLUMNS, k::pvc_cells),
        ("", "resourcequotas") => (k::RESOURCE_QUOTA_COLUMNS, k::resource_quota_cells),
        ("", "replicationcontrollers") => (k::RC_COLUMNS, k::rc_cells),
        ("", "componentstatuses") => (k::COMPONENT_STATUS_COLUMNS, k::component_status_cells),
        ("apps", "deployments") => (w::DEPLOYMENT_COLUMNS, w::deployment_cells),
        ("apps", "replicasets") => (w::REPLICASET_COLUMNS, w::replicaset_cells),
        ("apps", "statefulsets") => (w::STATEFULSET_COLUMNS, w::statefulset_cells),
        ("apps", "daemonsets") => (w::DAEMONSET_COLUMNS, w::daemonset_cells),
        ("apps", "controllerrevisions") => {
            (w::CONTROLLER_REVISION_COLUMNS, w::controller_revision_cells)
        }
        ("batch", "jobs") => (w::JOB_COLUMNS, w::job_cells),
        ("batch", "cronjobs") => (w::CRONJOB_COLUMNS, w::cronjob_cells),
        ("autoscaling", "horizontalpodautoscalers") => (w::HPA_COLUMNS, w::hpa_cells),
        ("policy", "poddisruptionbudgets") => (w::PDB_COLUMNS, w::pdb_cells),
        ("coordination.k8s.io", "leases") => (c::LEASE_COLUMNS, c::lease_cells),
        ("discovery.k8s.io", "endpointslices") => {
            (c::ENDPOINT_SLICE_COLUMNS, c::endpoint_slice_cells)
        }
        ("rbac.authorization.k8s.io", "rolebindings" | "clusterrolebindings") => {
            (c::ROLE_BINDING_COLUMNS, c::role_binding_cells)
        }
        ("networking.k8s.io", "ingresses") => (c::INGRESS_COLUMNS, c::ingress_cells),
        ("networking.k8s.io", "ingressclasses") => {
            (c::INGRESS_CLASS_COLUMNS, c::ingress_class_cells)
        }
        ("networking.k8s.io", "networkpolicies") => {
            (c::NETWORK_POLICY_COLUMNS, c::network_policy_cells)
        }
        ("storage.k8s.io", "storageclasses") => (c::STORAGE_CLASS_COLUMNS, c::storage_class_cells),
        ("storage.k8s.io", "csidrivers") => (c::CSI_DRIVER_COLUMNS, c::csi_driver_cells),
        ("storage.k8s.io", "csinodes") => (c::CSI_NODE_COLUMNS, c::csi_node_cells),
        ("storage.k8s.io", "volumeattachments") => {
            (c::VOLUME_ATTACHMENT_COLUMNS, c::volume_attachment_cells)
        }
        ("scheduling.k8s.io", "priorityclasses") => {
            (c::PRIORITY_CLASS_COLUMNS, c::priority_class_cells)
        }
        ("node.k8s.io", "runtimeclasses") => (c::RUNTIME_CLASS_COLUMNS, c::runtime_class_cells),
        (
            "admissionregistration.k8s.io",
            "mutatingwebhookconfigurations" | "validatingwebhookconfigurations",
        ) => (c::WEBHOOK_COLUMNS, c::webhook_cells),
        ("certificates.k8s.io", "certificatesigningrequests") => (c::CSR_COLUMNS, c::csr_cells),
        _ => return None,
    };
    Some(p)
}

#[cfg(test)]
mod tests;
