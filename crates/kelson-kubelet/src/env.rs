//! A container's environment, command and args, as upstream's kubelet builds
//! them (`makeEnvironmentVariables`, `third_party/forked/golang/expansion`,
//! `pkg/fieldpath`, `pkg/api/v1/resource` and `pkg/kubelet/envvars`).
//!
//! Errors carry upstream's messages: the kubelet reports them as the
//! container's `CreateContainerConfigError` message, which users read.

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{
    Container, ObjectFieldSelector, Pod, ResourceFieldSelector, Service,
};
use kelson_apimachinery::quantity::Quantity;

mod expansion;
mod fields;

pub use expansion::{expand, expand_command, expand_sub_path};
pub use fields::{
    container_resource_value, pod_container_resource_value, pod_field_value, pod_metadata_field,
};

/// Where `envFrom` and `valueFrom` read ConfigMaps and Secrets.
///
/// `Ok(None)` means "not found" (so `optional` can apply); `Err(msg)` is any
/// other failure and its message is passed through unchanged.
pub trait EnvSources {
    fn config_map(&self, ns: &str, name: &str) -> Result<Option<BTreeMap<String, String>>, String>;
    fn secret(&self, ns: &str, name: &str) -> Result<Option<BTreeMap<String, Vec<u8>>>, String>;
}

/// The node's allocatable resources: upstream uses them in place of a
/// container's missing cpu / memory / ephemeral-storage limit when the
/// downward API asks for `limits.*`.
#[derive(Debug, Clone, Default)]
pub struct NodeAllocatable {
    pub cpu: Option<Quantity>,
    pub memory: Option<Quantity>,
    pub ephemeral_storage: Option<Quantity>,
}

impl NodeAllocatable {
    /// From a node's `status.allocatable`; unparsable entries are left out.
    pub fn from_resource_list(
        list: &BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
    ) -> NodeAllocatable {
        let get = |k: &str| list.get(k).and_then(|q| Quantity::parse(&q.0).ok());
        NodeAllocatable {
            cpu: get("cpu"),
            memory: get("memory"),
            ephemeral_storage: get("ephemeral-storage"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvError {
    /// The message of upstream's NotFound error from the kubelet's ConfigMap
    /// manager (its resource is the singular `configmap`).
    #[error("configmap \"{name}\" not found")]
    ConfigMapNotFound { name: String },
    #[error("secret \"{name}\" not found")]
    SecretNotFound { name: String },
    #[error("couldn't find key {key} in ConfigMap {namespace}/{name}")]
    ConfigMapKeyNotFound {
        key: String,
        namespace: String,
        name: String,
    },
    #[error("couldn't find key {key} in Secret {namespace}/{name}")]
    SecretKeyNotFound {
        key: String,
        namespace: String,
        name: String,
    },
    /// A lookup failed for another reason; its message as given.
    #[error("{0}")]
    Source(String),
    #[error("unsupported pod version: {0}")]
    UnsupportedVersion(String),
    #[error("field label does not support subscript: {0}")]
    FieldLabelNoSubscript(String),
    #[error("field label not supported: {0}")]
    FieldLabelNotSupported(String),
    #[error("invalid key subscript in {path}: {reason}")]
    InvalidSubscript { path: String, reason: String },
    #[error("fieldPath {} does not support subscript", go_quote(.0))]
    FieldPathNoSubscript(String),
    #[error("unsupported fieldPath: {0}")]
    UnsupportedFieldPath(String),
    #[error("unsupported container resource : {0}")]
    UnsupportedResource(String),
    #[error("container {0} not found")]
    ContainerNotFound(String),
    #[error("invalid quantity {value:?}: {reason}")]
    InvalidQuantity { value: String, reason: String },
    /// Upstream's message when the node has no usable address.
    #[error("host IP unknown; known addresses: []")]
    HostIpUnknown,
    /// `subPathExpr` referenced variables that are unset or empty.
    #[error("missing value for {0}")]
    MissingSubPathValue(String),
}

/// The environment plus the warnings upstream would record as events.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerEnv {
    /// Unique names; service variables first, then `envFrom` / `env` in the
    /// order their names first appeared.
    pub vars: Vec<(String, String)>,
    /// Upstream's `InvalidEnvironmentVariableNames` event messages.
    pub warnings: Vec<String>,
}

/// The container's environment (see [`container_env_with_warnings`]);
/// warnings are logged.
pub fn container_env(
    pod: &Pod,
    container: &Container,
    service_env: &BTreeMap<String, String>,
    node_ip: &str,
    pod_ips: &[String],
    sources: &dyn EnvSources,
    allocatable: &NodeAllocatable,
) -> Result<Vec<(String, String)>, EnvError> {
    let env = container_env_with_warnings(
        pod,
        container,
        service_env,
        node_ip,
        pod_ips,
        sources,
        allocatable,
    )?;
    for w in &env.warnings {
        tracing::warn!(pod = ?pod.metadata.name, "{w}");
    }
    Ok(env.vars)
}

/// Builds the container's environment as upstream's `makeEnvironmentVariables`:
///
/// * `service_env` is what [`service_env`] computed for the pod's namespace
///   (it already honours `enableServiceLinks`); `env` / `envFrom` override it.
/// * `envFrom` sources in order, keys prefixed; a missing optional source is
///   skipped, a missing required one is an error.
/// * `env` in order: `value` has `$(VAR)` expanded against everything defined
///   before it (and the service variables); `valueFrom` resolves a field,
///   resource, ConfigMap key or Secret key.
///
/// `node_ip` is the node's address, or several comma-separated for a
/// dual-stack node (the first is `status.hostIP`).
pub fn container_env_with_warnings(
    pod: &Pod,
    container: &Container,
    service_env: &BTreeMap<String, String>,
    node_ip: &str,
    pod_ips: &[String],
    sources: &dyn EnvSources,
    allocatable: &NodeAllocatable,
) -> Result<ContainerEnv, EnvError> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("");
    let mut warnings = Vec::new();
    // Ordered map of the variables defined by envFrom / env ("tmpEnv").
    let mut tmp = OrderedEnv::default();
    let mut config_maps: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut secrets: BTreeMap<String, BTreeMap<String, Vec<u8>>> = BTreeMap::new();

    for from in container.env_from.as_deref().unwrap_or(&[]) {
        let prefix = from.prefix.as_deref().unwrap_or("");
        if let Some(cm) = &from.config_map_ref {
            let optional = cm.optional == Some(true);
            let Some(data) = get_config_map(sources, &mut config_maps, ns, &cm.name, optional)?
            else {
                continue;
            };
            let mut invalid = Vec::new();
            for (k, v) in data {
                let key = format!("{prefix}{k}");
                if is_env_var_name(&key) {
                    tmp.set(key, v.clone());
                } else {
                    invalid.push(key);
                }
            }
            if !invalid.is_empty() {
                warnings.push(invalid_keys_message(&invalid, "configMap", ns, &cm.name));
            }
        } else if let Some(s) = &from.secret_ref {
            let optional = s.optional == Some(true);
            let Some(data) = get_secret(sources, &mut secrets, ns, &s.name, optional)? else {
                continue;
            };
            let mut invalid = Vec::new();
            for (k, v) in data {
                let key = format!("{prefix}{k}");
                if is_env_var_name(&key) {
                    tmp.set(key, String::from_utf8_lossy(v).into_owned());
                } else {
                    invalid.push(key);
                }
            }
            if !invalid.is_empty() {
                warnings.push(invalid_keys_message(&invalid, "secret", ns, &s.name));
            }
        }
    }

    for var in container.env.as_deref().unwrap_or(&[]) {
        let value = var.value.as_deref().unwrap_or("");
        let runtime_val = if !value.is_empty() {
            // Earlier env / envFrom variables win over service variables.
            expand(value, |name| {
                tmp.get(name)
                    .or_else(|| service_env.get(name).map(String::as_str))
                    .map(str::to_string)
            })
        } else if let Some(from) = &var.value_from {
            if let Some(f) = &from.field_ref {
                pod_field_value(pod, f, node_ip, pod_ips)?
            } else if let Some(r) = &from.resource_field_ref {
                container_resource_value(r, pod, container, allocatable)?
            } else if let Some(sel) = &from.config_map_key_ref {
                let optional = sel.optional == Some(true);
                let Some(data) =
                    get_config_map(sources, &mut config_maps, ns, &sel.name, optional)?
                else {
                    continue;
                };
                match data.get(&sel.key) {
                    Some(v) => v.clone(),
                    None if optional => continue,
                    None => {
                        return Err(EnvError::ConfigMapKeyNotFound {
                            key: sel.key.clone(),
                            namespace: ns.to_string(),
                            name: sel.name.clone(),
                        })
                    }
                }
            } else if let Some(sel) = &from.secret_key_ref {
                let optional = sel.optional == Some(true);
                let Some(data) = get_secret(sources, &mut secrets, ns, &sel.name, optional)? else {
                    continue;
                };
                match data.get(&sel.key) {
                    Some(v) => String::from_utf8_lossy(v).into_owned(),
                    None if optional => continue,
                    None => {
                        return Err(EnvError::SecretKeyNotFound {
                            key: sel.key.clone(),
                            namespace: ns.to_string(),
                            name: sel.name.clone(),
                        })
                    }
                }
            } else {
                String::new()
            }
        } else {
            String::new()
        };
        tmp.set(var.name.clone(), runtime_val);
    }

    let mut vars: Vec<(String, String)> = service_env
        .iter()
        .filter(|(k, _)| tmp.get(k).is_none())
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    vars.extend(tmp.into_vec());
    Ok(ContainerEnv { vars, warnings })
}

/// Upstream's `getServiceEnvVarMap` + `envvars.FromServices`: the `kubernetes`
/// service of the `default` namespace always, and the services of the pod's
/// namespace when `enable_service_links`; headless services are skipped.
pub fn service_env(
    services: &[Service],
    pod_namespace: &str,
    enable_service_links: bool,
) -> BTreeMap<String, String> {
    let mut chosen: BTreeMap<String, &Service> = BTreeMap::new();
    for svc in services {
        let Some(spec) = &svc.spec else { continue };
        let ip = spec.cluster_ip.as_deref().unwrap_or("");
        if ip.is_empty() || ip == "None" {
            continue;
        }
        let name = svc.metadata.name.clone().unwrap_or_default();
        let svc_ns = svc.metadata.namespace.as_deref().unwrap_or("");
        if svc_ns == "default" && name == "kubernetes" {
            chosen.entry(name).or_insert(svc);
        } else if svc_ns == pod_namespace && enable_service_links {
            chosen.insert(name, svc);
        }
    }
    let mut out = BTreeMap::new();
    for svc in chosen.values() {
        add_service_vars(svc, &mut out);
    }
    out
}

fn add_service_vars(svc: &Service, out: &mut BTreeMap<String, String>) {
    let Some(spec) = &svc.spec else { return };
    let ip = spec.cluster_ip.clone().unwrap_or_default();
    let prefix = env_var_name(svc.metadata.name.as_deref().unwrap_or(""));
    let ports = spec.ports.as_deref().unwrap_or(&[]);
    out.insert(format!("{prefix}_SERVICE_HOST"), ip.clone());
    // Validation requires ports on a service with a cluster IP; without any
    // there is nothing more to describe.
    let Some(first) = ports.first() else { return };
    let port_var = format!("{prefix}_SERVICE_PORT");
    out.insert(port_var.clone(), first.port.to_string());
    for p in ports {
        if let Some(n) = p.name.as_deref().filter(|n| !n.is_empty()) {
            out.insert(
                format!("{port_var}_{}", env_var_name(n)),
                p.port.to_string(),
            );
        }
    }
    // Docker link variables.
    // As Go's net.JoinHostPort: brackets around hosts containing a colon.
    let host = if ip.contains(':') {
        format!("[{ip}]")
    } else {
        ip.clone()
    };
    for (i, p) in ports.iter().enumerate() {
        let proto = p
            .protocol
            .as_deref()
            .filter(|s| !s.is_empty())
            .unwrap_or("TCP");
        let lower = proto.to_lowercase();
        let url = format!("{lower}://{host}:{}", p.port);
        if i == 0 {
            out.insert(format!("{prefix}_PORT"), url.clone());
        }
        let pp = format!("{prefix}_PORT_{}_{}", p.port, proto.to_uppercase());
        out.insert(format!("{pp}_PROTO"), lower);
        out.insert(format!("{pp}_PORT"), p.port.to_string());
        out.insert(format!("{pp}_ADDR"), ip.clone());
        out.insert(pp, url);
    }
}

/// Upstream `makeEnvVariableName`: upper case, dashes to underscores.
fn env_var_name(s: &str) -> String {
    s.replace('-', "_").to_uppercase()
}

/// Insertion-ordered map: a redefinition keeps the first position and takes
/// the new value, as the final environment has each name once.
#[derive(Default)]
struct OrderedEnv {
    order: Vec<String>,
    values: BTreeMap<String, String>,
}

impl OrderedEnv {
    fn set(&mut self, k: String, v: String) {
        if !self.values.contains_key(&k) {
            self.order.push(k.clone());
        }
        self.values.insert(k, v);
    }

    fn get(&self, k: &str) -> Option<&str> {
        self.values.get(k).map(String::as_str)
    }

    fn into_vec(mut self) -> Vec<(String, String)> {
        self.order
            .into_iter()
            .filter_map(|k| self.values.remove(&k).map(|v| (k, v)))
            .collect()
    }
}

/// A ConfigMap's or Secret's data, looked up once per container: `None`
/// when it is missing but optional, an error when missing and required.
fn cached<'a, T>(
    cache: &'a mut BTreeMap<String, T>,
    name: &str,
    optional: bool,
    fetch: impl FnOnce() -> Result<Option<T>, String>,
    not_found: impl FnOnce() -> EnvError,
) -> Result<Option<&'a T>, EnvError> {
    if !cache.contains_key(name) {
        match fetch().map_err(EnvError::Source)? {
            Some(d) => {
                cache.insert(name.to_string(), d);
            }
            None if optional => return Ok(None),
            None => return Err(not_found()),
        }
    }
    Ok(cache.get(name))
}

fn get_config_map<'a>(
    sources: &dyn EnvSources,
    cache: &'a mut BTreeMap<String, BTreeMap<String, String>>,
    ns: &str,
    name: &str,
    optional: bool,
) -> Result<Option<&'a BTreeMap<String, String>>, EnvError> {
    cached(
        cache,
        name,
        optional,
        || sources.config_map(ns, name),
        || EnvError::ConfigMapNotFound { name: name.into() },
    )
}

fn get_secret<'a>(
    sources: &dyn EnvSources,
    cache: &'a mut BTreeMap<String, BTreeMap<String, Vec<u8>>>,
    ns: &str,
    name: &str,
    optional: bool,
) -> Result<Option<&'a BTreeMap<String, Vec<u8>>>, EnvError> {
    cached(
        cache,
        name,
        optional,
        || sources.secret(ns, name),
        || EnvError::SecretNotFound { name: name.into() },
    )
}

/// The relaxed rule upstream 1.33 applies to variable names (feature
/// RelaxedEnvironmentVariableValidation, on by default): printable ASCII
/// other than `=`. ConfigMap and Secret keys always pass it; this only
/// guards data that bypassed API validation.
fn is_env_var_name(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| (b' '..=b'~').contains(&b) && b != b'=')
}

fn invalid_keys_message(keys: &[String], kind: &str, ns: &str, name: &str) -> String {
    let mut keys = keys.to_vec();
    keys.sort();
    format!(
        "Keys [{}] from the EnvFrom {kind} {ns}/{name} were skipped since they are considered invalid environment variable names.",
        keys.join(", ")
    )
}

/// Go's `%q` (strconv.Quote), used in several upstream messages.
pub(crate) use kelson_apimachinery::labels::go_quote;

/// Orders pod IPs as upstream `sortPodIPs`: the first IP of the node's
/// family, then the first of the other family.
pub(crate) fn sort_pod_ips(pod_ips: &[String], node_ip: &str) -> Vec<String> {
    let first_node = node_ip.split(',').map(str::trim).find(|s| !s.is_empty());
    let node_v6 = matches!(
        first_node.and_then(|s| s.parse::<IpAddr>().ok()),
        Some(IpAddr::V6(_))
    );
    let is_v6 = |s: &str| match s.parse::<IpAddr>() {
        Ok(IpAddr::V6(_)) => Some(true),
        Ok(IpAddr::V4(_)) => Some(false),
        Err(_) => None,
    };
    let mut out = Vec::new();
    for want_v6 in [node_v6, !node_v6] {
        if let Some(ip) = pod_ips.iter().find(|ip| is_v6(ip) == Some(want_v6)) {
            out.push(ip.clone());
        }
    }
    out
}

/// Splits an ObjectFieldSelector into its API version (upstream's default
/// `v1` when unset) and path.
pub(crate) fn selector_parts(f: &ObjectFieldSelector) -> (&str, &str) {
    (
        f.api_version.as_deref().unwrap_or("v1"),
        f.field_path.as_str(),
    )
}

/// Divisor of a ResourceFieldSelector: `1` when unset or zero.
pub(crate) fn divisor_of(r: &ResourceFieldSelector) -> Result<Quantity, EnvError> {
    let one = || Quantity::from_milli(1000, kelson_apimachinery::quantity::Format::DecimalSI);
    match &r.divisor {
        None => Ok(one()),
        Some(q) => {
            let d = parse_quantity(&q.0)?;
            Ok(if d.is_zero() { one() } else { d })
        }
    }
}

pub(crate) fn parse_quantity(s: &str) -> Result<Quantity, EnvError> {
    Quantity::parse(s).map_err(|e| EnvError::InvalidQuantity {
        value: s.to_string(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests;
