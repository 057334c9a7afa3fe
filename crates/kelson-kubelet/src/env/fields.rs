//! Downward API values: pod fields (`fieldRef`) and container resources
//! (`resourceFieldRef`), as upstream's `podFieldSelectorRuntimeValue`,
//! `pkg/fieldpath` and `pkg/api/v1/resource`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, ObjectFieldSelector, Pod, ResourceFieldSelector};
use kelson_apimachinery::quantity::Quantity;

use super::{divisor_of, go_quote, parse_quantity, selector_parts, sort_pod_ips};
use super::{EnvError, NodeAllocatable};

/// The value of an env var's `fieldRef` (upstream
/// `podFieldSelectorRuntimeValue`): the path is checked against the fields
/// the downward API offers, then read from the pod or the node.
pub fn pod_field_value(
    pod: &Pod,
    selector: &ObjectFieldSelector,
    node_ip: &str,
    pod_ips: &[String],
) -> Result<String, EnvError> {
    let (version, label) = selector_parts(selector);
    let path = convert_field_label(version, label)?;
    let sorted = sort_pod_ips(pod_ips, node_ip);
    let spec = pod.spec.as_ref();
    match path.as_str() {
        "spec.nodeName" => Ok(spec.and_then(|s| s.node_name.clone()).unwrap_or_default()),
        "spec.serviceAccountName" => Ok(spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_default()),
        "status.hostIP" => host_ips(node_ip).map(|ips| ips[0].clone()),
        "status.hostIPs" => host_ips(node_ip).map(|ips| ips.join(",")),
        "status.podIP" => Ok(sorted.first().cloned().unwrap_or_default()),
        "status.podIPs" => Ok(sorted.join(",")),
        _ => pod_metadata_field(pod, &path),
    }
}

fn host_ips(node_ip: &str) -> Result<Vec<String>, EnvError> {
    let ips: Vec<String> = node_ip
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    if ips.is_empty() {
        return Err(EnvError::HostIpUnknown);
    }
    Ok(ips)
}

/// Upstream `ConvertDownwardAPIFieldLabel` for pods.
fn convert_field_label(version: &str, label: &str) -> Result<String, EnvError> {
    if version != "v1" {
        return Err(EnvError::UnsupportedVersion(version.to_string()));
    }
    if let Some((path, _)) = split_subscript(label) {
        return match path {
            "metadata.annotations" | "metadata.labels" => Ok(label.to_string()),
            _ => Err(EnvError::FieldLabelNoSubscript(label.to_string())),
        };
    }
    match label {
        "metadata.annotations"
        | "metadata.labels"
        | "metadata.name"
        | "metadata.namespace"
        | "metadata.uid"
        | "spec.nodeName"
        | "spec.restartPolicy"
        | "spec.serviceAccountName"
        | "spec.schedulerName"
        | "status.phase"
        | "status.hostIP"
        | "status.hostIPs"
        | "status.podIP"
        | "status.podIPs" => Ok(label.to_string()),
        // Old clients' name for spec.nodeName.
        "spec.host" => Ok("spec.nodeName".to_string()),
        _ => Err(EnvError::FieldLabelNotSupported(label.to_string())),
    }
}

/// Upstream `SplitMaybeSubscriptedPath`: `metadata.labels['key']`.
fn split_subscript(path: &str) -> Option<(&str, &str)> {
    let s = path.strip_suffix("']")?;
    let (head, sub) = s.split_once("['")?;
    if head.is_empty() {
        return None;
    }
    Some((head, sub))
}

/// Upstream `fieldpath.ExtractFieldPathAsString` (what downwardAPI volumes
/// use): metadata name, namespace, uid, labels and annotations, whole or
/// subscripted. Whole maps are `key="value"` lines sorted by key.
pub fn pod_metadata_field(pod: &Pod, path: &str) -> Result<String, EnvError> {
    let meta = &pod.metadata;
    if let Some((head, sub)) = split_subscript(path) {
        let (map, key_check) = match head {
            // Annotation keys are checked lower-cased, as upstream.
            "metadata.annotations" => (&meta.annotations, sub.to_lowercase()),
            "metadata.labels" => (&meta.labels, sub.to_string()),
            _ => return Err(EnvError::FieldPathNoSubscript(path.to_string())),
        };
        let errs = kelson_apimachinery::validation::qualified_name(&key_check);
        if !errs.is_empty() {
            return Err(EnvError::InvalidSubscript {
                path: path.to_string(),
                reason: errs.join(";"),
            });
        }
        return Ok(map
            .as_ref()
            .and_then(|m| m.get(sub).cloned())
            .unwrap_or_default());
    }
    match path {
        "metadata.annotations" => Ok(format_map(meta.annotations.as_ref())),
        "metadata.labels" => Ok(format_map(meta.labels.as_ref())),
        "metadata.name" => Ok(meta.name.clone().unwrap_or_default()),
        "metadata.namespace" => Ok(meta.namespace.clone().unwrap_or_default()),
        "metadata.uid" => Ok(meta.uid.clone().unwrap_or_default()),
        _ => Err(EnvError::UnsupportedFieldPath(path.to_string())),
    }
}

/// Upstream `FormatMap`: sorted `key="quoted value"` lines.
fn format_map(m: Option<&BTreeMap<String, String>>) -> String {
    m.map(|m| {
        m.iter()
            .map(|(k, v)| format!("{k}={}", go_quote(v)))
            .collect::<Vec<_>>()
            .join("\n")
    })
    .unwrap_or_default()
}

/// The value of a `resourceFieldRef` (env var or downwardAPI volume item).
/// With `containerName` set the named container (or init container) of the
/// pod is read, else `container`. Missing cpu, memory and ephemeral-storage
/// limits read as the node's allocatable; the result is rounded up to whole
/// divisors.
pub fn container_resource_value(
    selector: &ResourceFieldSelector,
    pod: &Pod,
    container: &Container,
    allocatable: &NodeAllocatable,
) -> Result<String, EnvError> {
    let target = match selector.container_name.as_deref().filter(|n| !n.is_empty()) {
        None => container,
        Some(name) => find_container(pod, name)?,
    };
    resource_value_of(selector, target, allocatable)
}

/// As [`container_resource_value`] for a downwardAPI volume item, where the
/// selector must name the container (upstream
/// `ExtractResourceValueByContainerNameAndNodeAllocatable`).
pub fn pod_container_resource_value(
    selector: &ResourceFieldSelector,
    pod: &Pod,
    allocatable: &NodeAllocatable,
) -> Result<String, EnvError> {
    let name = selector.container_name.as_deref().unwrap_or("");
    resource_value_of(selector, find_container(pod, name)?, allocatable)
}

fn resource_value_of(
    selector: &ResourceFieldSelector,
    target: &Container,
    allocatable: &NodeAllocatable,
) -> Result<String, EnvError> {
    let divisor = divisor_of(selector)?;
    let resources = target.resources.as_ref();
    let read = |list: Option<
        &BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
    >,
                name: &str|
     -> Result<Option<Quantity>, EnvError> {
        match list.and_then(|l| l.get(name)) {
            Some(q) => parse_quantity(&q.0).map(Some),
            None => Ok(None),
        }
    };
    let (which, name) = selector
        .resource
        .split_once('.')
        .ok_or_else(|| EnvError::UnsupportedResource(selector.resource.clone()))?;
    let supported =
        matches!(name, "cpu" | "memory" | "ephemeral-storage") || name.starts_with("hugepages-");
    if !supported || !matches!(which, "limits" | "requests") {
        return Err(EnvError::UnsupportedResource(selector.resource.clone()));
    }
    let value = if which == "limits" {
        let lim = read(resources.and_then(|r| r.limits.as_ref()), name)?;
        // Upstream MergeContainerResourceLimits: unset or zero limits take
        // the node's allocatable.
        let fallback = match name {
            "cpu" => allocatable.cpu.clone(),
            "memory" => allocatable.memory.clone(),
            "ephemeral-storage" => allocatable.ephemeral_storage.clone(),
            _ => None,
        };
        match lim {
            Some(q) if !q.is_zero() => Some(q),
            other => fallback.or(other),
        }
    } else {
        read(resources.and_then(|r| r.requests.as_ref()), name)?
    };
    let (num, den) = match value {
        None => (0, 1),
        Some(q) if name == "cpu" => (q.milli_value(), divisor.milli_value()),
        Some(q) => (q.value(), divisor.value()),
    };
    Ok(ceil_div(num, den).to_string())
}

/// Rounds up like upstream's `math.Ceil(float64(a) / float64(b))`, exactly.
fn ceil_div(a: i128, b: i128) -> i128 {
    if b == 0 {
        return 0;
    }
    let q = a / b;
    if a % b != 0 && ((a < 0) == (b < 0)) {
        q + 1
    } else {
        q
    }
}

fn find_container<'a>(pod: &'a Pod, name: &str) -> Result<&'a Container, EnvError> {
    let spec = pod.spec.as_ref();
    spec.into_iter()
        .flat_map(|s| s.containers.iter())
        .chain(
            spec.into_iter()
                .flat_map(|s| s.init_containers.iter().flatten()),
        )
        .find(|c| c.name == name)
        .ok_or_else(|| EnvError::ContainerNotFound(name.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodSpec, ResourceRequirements};
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity as Q;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn pod() -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("prod".into()),
                uid: Some("1234".into()),
                labels: Some(BTreeMap::from([
                    ("app".to_string(), "web".to_string()),
                    ("tier".to_string(), "front\"end".to_string()),
                ])),
                annotations: Some(BTreeMap::from([("note".to_string(), "a\nb".to_string())])),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: Some("node-1".into()),
                service_account_name: Some("sa".into()),
                containers: vec![Container {
                    name: "app".into(),
                    resources: Some(ResourceRequirements {
                        requests: Some(BTreeMap::from([
                            ("cpu".to_string(), Q("250m".into())),
                            ("memory".to_string(), Q("64Mi".into())),
                        ])),
                        limits: Some(BTreeMap::from([("cpu".to_string(), Q("1500m".into()))])),
                        ..Default::default()
                    }),
                    ..Default::default()
                }],
                init_containers: Some(vec![Container {
                    name: "init".into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn field(p: &Pod, path: &str) -> Result<String, EnvError> {
        let sel = ObjectFieldSelector {
            api_version: Some("v1".into()),
            field_path: path.into(),
        };
        pod_field_value(
            p,
            &sel,
            "10.0.0.5,fd00::5",
            &["fd00::9".into(), "10.1.0.9".into()],
        )
    }

    #[test]
    fn field_refs_read_pod_and_node() {
        let p = pod();
        assert_eq!(field(&p, "metadata.name").unwrap(), "web");
        assert_eq!(field(&p, "metadata.namespace").unwrap(), "prod");
        assert_eq!(field(&p, "metadata.uid").unwrap(), "1234");
        assert_eq!(field(&p, "metadata.labels['app']").unwrap(), "web");
        assert_eq!(field(&p, "metadata.labels['missing']").unwrap(), "");
        assert_eq!(
            field(&p, "metadata.labels").unwrap(),
            "app=\"web\"\ntier=\"front\\\"end\""
        );
        assert_eq!(field(&p, "metadata.annotations").unwrap(), "note=\"a\\nb\"");
        assert_eq!(field(&p, "metadata.annotations['note']").unwrap(), "a\nb");
        assert_eq!(field(&p, "spec.nodeName").unwrap(), "node-1");
        assert_eq!(field(&p, "spec.host").unwrap(), "node-1");
        assert_eq!(field(&p, "spec.serviceAccountName").unwrap(), "sa");
        assert_eq!(field(&p, "status.hostIP").unwrap(), "10.0.0.5");
        assert_eq!(field(&p, "status.hostIPs").unwrap(), "10.0.0.5,fd00::5");
        // The node is IPv4 first, so the pod's IPv4 address leads.
        assert_eq!(field(&p, "status.podIP").unwrap(), "10.1.0.9");
        assert_eq!(field(&p, "status.podIPs").unwrap(), "10.1.0.9,fd00::9");
    }

    #[test]
    fn field_ref_errors_match_upstream() {
        let p = pod();
        assert_eq!(
            field(&p, "spec.nodeSelector").unwrap_err().to_string(),
            "field label not supported: spec.nodeSelector"
        );
        assert_eq!(
            field(&p, "metadata.name['x']").unwrap_err().to_string(),
            "field label does not support subscript: metadata.name['x']"
        );
        assert_eq!(
            field(&p, "status.phase").unwrap_err().to_string(),
            "unsupported fieldPath: status.phase"
        );
        let sel = ObjectFieldSelector {
            api_version: Some("v2".into()),
            field_path: "metadata.name".into(),
        };
        assert_eq!(
            pod_field_value(&p, &sel, "10.0.0.5", &[])
                .unwrap_err()
                .to_string(),
            "unsupported pod version: v2"
        );
        let sel = ObjectFieldSelector {
            api_version: None,
            field_path: "status.hostIP".into(),
        };
        assert_eq!(
            pod_field_value(&p, &sel, "", &[]).unwrap_err(),
            EnvError::HostIpUnknown
        );
        assert!(matches!(
            pod_metadata_field(&p, "metadata.labels['bad key']"),
            Err(EnvError::InvalidSubscript { .. })
        ));
        assert_eq!(
            pod_metadata_field(&p, "spec.nodeName")
                .unwrap_err()
                .to_string(),
            "unsupported fieldPath: spec.nodeName"
        );
    }

    fn res(
        resource: &str,
        divisor: Option<&str>,
        container: Option<&str>,
    ) -> Result<String, EnvError> {
        let p = pod();
        let sel = ResourceFieldSelector {
            resource: resource.into(),
            divisor: divisor.map(|d| Q(d.into())),
            container_name: container.map(str::to_string),
        };
        let alloc = NodeAllocatable {
            cpu: Quantity::parse("4").ok(),
            memory: Quantity::parse("8Gi").ok(),
            ephemeral_storage: None,
        };
        let c = p.spec.as_ref().unwrap().containers[0].clone();
        container_resource_value(&sel, &p, &c, &alloc)
    }

    #[test]
    fn resource_refs_round_up_and_default_limits() {
        assert_eq!(res("requests.cpu", None, None).unwrap(), "1");
        assert_eq!(res("requests.cpu", Some("1m"), None).unwrap(), "250");
        assert_eq!(res("limits.cpu", None, None).unwrap(), "2");
        assert_eq!(res("limits.cpu", Some("100m"), None).unwrap(), "15");
        assert_eq!(res("requests.memory", None, None).unwrap(), "67108864");
        assert_eq!(res("requests.memory", Some("1Mi"), None).unwrap(), "64");
        assert_eq!(res("requests.memory", Some("0"), None).unwrap(), "67108864");
        // No memory limit: node allocatable.
        assert_eq!(res("limits.memory", Some("1Gi"), None).unwrap(), "8");
        // No ephemeral-storage limit nor allocatable: zero.
        assert_eq!(res("limits.ephemeral-storage", None, None).unwrap(), "0");
        assert_eq!(res("requests.hugepages-2Mi", None, None).unwrap(), "0");
        // The init container has no limits: allocatable again.
        assert_eq!(res("limits.cpu", None, Some("init")).unwrap(), "4");
        assert_eq!(
            res("limits.cpu", None, Some("nope"))
                .unwrap_err()
                .to_string(),
            "container nope not found"
        );
        assert_eq!(
            res("limits.gpu", None, None).unwrap_err().to_string(),
            "unsupported container resource : limits.gpu"
        );
    }

    #[test]
    fn ceil_div_rounds_up() {
        assert_eq!(ceil_div(7, 2), 4);
        assert_eq!(ceil_div(6, 2), 3);
        assert_eq!(ceil_div(0, 5), 0);
        assert_eq!(ceil_div(5, 0), 0);
    }
}
