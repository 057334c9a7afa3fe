//! Resource amounts as the scheduler counts them, and a pod's requests.
//!
//! Amounts are integers: CPU in millicores, everything else in units, as
//! upstream's `framework.Resource`. Quantities that do not parse count as zero
//! (the API server validates them, so this only guards against bad input).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as ApiQuantity;
use kelson_apimachinery::quantity::Quantity;

/// CPU counted for scoring when a container requests none (upstream's
/// `DefaultMilliCPURequest`).
pub const DEFAULT_MILLI_CPU_REQUEST: i64 = 100;
/// Memory counted for scoring when a container requests none (200Mi).
pub const DEFAULT_MEMORY_REQUEST: i64 = 200 * 1024 * 1024;

pub const CPU: &str = "cpu";
pub const MEMORY: &str = "memory";
pub const EPHEMERAL_STORAGE: &str = "ephemeral-storage";
pub const PODS: &str = "pods";

/// A vector of resource amounts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resource {
    pub milli_cpu: i64,
    pub memory: i64,
    pub ephemeral_storage: i64,
    /// Only meaningful for allocatable: the node's `pods` capacity.
    pub allowed_pods: i64,
    /// Extended resources, hugepages and other scalar resources, sorted by name.
    pub scalar: Vec<(String, i64)>,
}

fn to_i64(v: i128) -> i64 {
    v.clamp(i64::MIN as i128, i64::MAX as i128) as i64
}

/// Parses a quantity as millis (for CPU) or whole units (everything else).
pub fn quantity_value(name: &str, q: &ApiQuantity) -> i64 {
    match Quantity::parse(&q.0) {
        Ok(q) if name == CPU => to_i64(q.milli_value()),
        Ok(q) => to_i64(q.value()),
        Err(_) => 0,
    }
}

/// Upstream's `IsScalarResourceName`: extended resources, hugepages,
/// attachable volumes and other `kubernetes.io/`-prefixed native resources.
pub fn is_scalar_resource_name(name: &str) -> bool {
    is_extended_resource_name(name)
        || name.starts_with("hugepages-")
        || name.starts_with("attachable-volumes-")
        || (name.contains('/') && name.starts_with("kubernetes.io/"))
}

/// Upstream's `IsExtendedResourceName`: a domain-prefixed name outside
/// `kubernetes.io/` that does not start with `requests.`.
pub fn is_extended_resource_name(name: &str) -> bool {
    if name.starts_with("requests.") || !name.contains('/') {
        return false;
    }
    let domain = name.split('/').next().unwrap_or("");
    !(domain == "kubernetes.io" || domain.ends_with(".kubernetes.io"))
}

impl Resource {
    /// Builds a resource vector from a ResourceList (requests, allocatable).
    pub fn from_list(list: &BTreeMap<String, ApiQuantity>) -> Resource {
        let mut r = Resource::default();
        r.add_list(list);
        r
    }

    pub fn add_list(&mut self, list: &BTreeMap<String, ApiQuantity>) {
        for (name, q) in list {
            self.add_named(name, quantity_value(name, q));
        }
    }

    fn add_named(&mut self, name: &str, v: i64) {
        match name {
            CPU => self.milli_cpu = self.milli_cpu.saturating_add(v),
            MEMORY => self.memory = self.memory.saturating_add(v),
            EPHEMERAL_STORAGE => self.ephemeral_storage = self.ephemeral_storage.saturating_add(v),
            PODS => self.allowed_pods = self.allowed_pods.saturating_add(v),
            _ if is_scalar_resource_name(name) => {
                let cur = self.scalar(name);
                self.set_scalar(name, cur.saturating_add(v));
            }
            _ => {}
        }
    }

    /// The amount of a scalar resource (0 when absent).
    pub fn scalar(&self, name: &str) -> i64 {
        self.scalar
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| *v)
            .unwrap_or(0)
    }

    pub fn set_scalar(&mut self, name: &str, v: i64) {
        match self.scalar.binary_search_by(|(n, _)| n.as_str().cmp(name)) {
            Ok(i) => self.scalar[i].1 = v,
            Err(i) => self.scalar.insert(i, (name.to_string(), v)),
        }
    }

    /// Amount of any resource by name.
    pub fn get(&self, name: &str) -> i64 {
        match name {
            CPU => self.milli_cpu,
            MEMORY => self.memory,
            EPHEMERAL_STORAGE => self.ephemeral_storage,
            PODS => self.allowed_pods,
            _ => self.scalar(name),
        }
    }

    pub fn add(&mut self, other: &Resource) {
        self.milli_cpu = self.milli_cpu.saturating_add(other.milli_cpu);
        self.memory = self.memory.saturating_add(other.memory);
        self.ephemeral_storage = self
            .ephemeral_storage
            .saturating_add(other.ephemeral_storage);
        self.allowed_pods = self.allowed_pods.saturating_add(other.allowed_pods);
        for (n, v) in &other.scalar {
            let cur = self.scalar(n);
            self.set_scalar(n, cur.saturating_add(*v));
        }
    }

    pub fn sub(&mut self, other: &Resource) {
        self.milli_cpu = self.milli_cpu.saturating_sub(other.milli_cpu);
        self.memory = self.memory.saturating_sub(other.memory);
        self.ephemeral_storage = self
            .ephemeral_storage
            .saturating_sub(other.ephemeral_storage);
        self.allowed_pods = self.allowed_pods.saturating_sub(other.allowed_pods);
        for (n, v) in &other.scalar {
            let cur = self.scalar(n);
            self.set_scalar(n, cur.saturating_sub(*v));
        }
    }

    /// Raises each dimension to at least `other`'s.
    pub fn set_max(&mut self, other: &Resource) {
        self.milli_cpu = self.milli_cpu.max(other.milli_cpu);
        self.memory = self.memory.max(other.memory);
        self.ephemeral_storage = self.ephemeral_storage.max(other.ephemeral_storage);
        self.allowed_pods = self.allowed_pods.max(other.allowed_pods);
        for (n, v) in &other.scalar {
            let cur = self.scalar(n);
            self.set_scalar(n, cur.max(*v));
        }
    }

    /// True when the pod requests nothing the fit filter checks.
    pub fn is_zero_request(&self) -> bool {
        self.milli_cpu == 0
            && self.memory == 0
            && self.ephemeral_storage == 0
            && self.scalar.iter().all(|(_, v)| *v == 0)
    }
}

fn container_requests(c: &Container, non_missing_defaults: bool) -> Resource {
    let mut r = Resource::default();
    let requests = c.resources.as_ref().and_then(|r| r.requests.as_ref());
    if let Some(list) = requests {
        r.add_list(list);
    }
    if non_missing_defaults {
        // Only an absent request takes the default; an explicit 0 stays 0.
        if !requests.is_some_and(|l| l.contains_key(CPU)) {
            r.milli_cpu = DEFAULT_MILLI_CPU_REQUEST;
        }
        if !requests.is_some_and(|l| l.contains_key(MEMORY)) {
            r.memory = DEFAULT_MEMORY_REQUEST;
        }
    }
    r
}

fn is_restartable_init_container(c: &Container) -> bool {
    c.restart_policy.as_deref() == Some("Always")
}

/// Upstream's `PodRequests`: the sum of app containers and sidecars, raised to
/// the largest init-container phase (each init container runs beside the
/// sidecars started before it), plus the pod overhead.
fn compute(pod: &Pod, non_missing_defaults: bool) -> Resource {
    let Some(spec) = pod.spec.as_ref() else {
        return Resource::default();
    };
    let mut reqs = Resource::default();
    for c in &spec.containers {
        reqs.add(&container_requests(c, non_missing_defaults));
    }
    let mut sidecars = Resource::default();
    let mut init_max = Resource::default();
    for c in spec.init_containers.iter().flatten() {
        let mut r = container_requests(c, non_missing_defaults);
        if is_restartable_init_container(c) {
            reqs.add(&r);
            sidecars.add(&r);
            r = sidecars.clone();
        } else {
            r.add(&sidecars);
        }
        init_max.set_max(&r);
    }
    reqs.set_max(&init_max);
    if let Some(overhead) = spec.overhead.as_ref() {
        reqs.add_list(overhead);
    }
    reqs
}

/// What a pod requests, as the fit filter counts it.
pub fn pod_requests(pod: &Pod) -> Resource {
    compute(pod, false)
}

/// CPU and memory with upstream's non-zero defaults, used only for scoring.
pub fn pod_non_zero_requests(pod: &Pod) -> (i64, i64) {
    let r = compute(pod, true);
    (r.milli_cpu, r.memory)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodSpec, ResourceRequirements};

    fn container(reqs: &[(&str, &str)], sidecar: bool) -> Container {
        Container {
            name: "c".into(),
            resources: Some(ResourceRequirements {
                requests: Some(
                    reqs.iter()
                        .map(|(k, v)| (k.to_string(), ApiQuantity(v.to_string())))
                        .collect(),
                ),
                ..Default::default()
            }),
            restart_policy: sidecar.then(|| "Always".to_string()),
            ..Default::default()
        }
    }

    #[test]
    fn init_containers_take_the_max_app_containers_the_sum() {
        // Upstream's doc example: result CPU 3, memory 3G.
        let pod = Pod {
            spec: Some(PodSpec {
                init_containers: Some(vec![
                    container(&[("cpu", "2"), ("memory", "1G")], false),
                    container(&[("cpu", "2"), ("memory", "3G")], false),
                ]),
                containers: vec![
                    container(&[("cpu", "2"), ("memory", "1G")], false),
                    container(&[("cpu", "1"), ("memory", "1G")], false),
                ],
                overhead: Some([("cpu".to_string(), ApiQuantity("250m".into()))].into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let r = pod_requests(&pod);
        assert_eq!(r.milli_cpu, 3250);
        assert_eq!(r.memory, 3_000_000_000);
    }

    #[test]
    fn sidecars_add_to_the_sum_and_to_later_init_containers() {
        let pod = Pod {
            spec: Some(PodSpec {
                init_containers: Some(vec![
                    container(&[("cpu", "1")], true),
                    container(&[("cpu", "3")], false),
                ]),
                containers: vec![container(&[("cpu", "1"), ("nvidia.com/gpu", "1")], false)],
                ..Default::default()
            }),
            ..Default::default()
        };
        let r = pod_requests(&pod);
        // max(1 app + 1 sidecar, 3 init + 1 sidecar) = 4
        assert_eq!(r.milli_cpu, 4000);
        assert_eq!(r.scalar("nvidia.com/gpu"), 1);
    }

    #[test]
    fn non_zero_defaults_apply_only_to_missing_requests() {
        let pod = Pod {
            spec: Some(PodSpec {
                containers: vec![container(&[], false), container(&[("cpu", "0")], false)],
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(pod_requests(&pod), Resource::default());
        assert_eq!(
            pod_non_zero_requests(&pod),
            (100, 2 * DEFAULT_MEMORY_REQUEST)
        );
    }

    #[test]
    fn scalar_names() {
        assert!(is_extended_resource_name("example.com/foo"));
        assert!(!is_extended_resource_name("kubernetes.io/foo"));
        assert!(is_scalar_resource_name("hugepages-2Mi"));
        assert!(!is_scalar_resource_name("foo"));
    }
}
