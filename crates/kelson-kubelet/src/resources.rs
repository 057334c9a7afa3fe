//! Pod QoS and the cgroup settings the kubelet derives from resources, as
//! upstream's `pkg/apis/core/v1/helper/qos`, `pkg/kubelet/qos/policy.go`,
//! `pkg/kubelet/cm` (helpers_linux.go, pod/QoS container naming) and
//! `pkg/kubelet/kuberuntime` (container Linux resources).
//!
//! Results are plain structs; the caller maps them to CRI messages. Pod-level
//! resources (alpha in 1.33) and hugepages are not handled.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod};
use kelson_apimachinery::quantity::Quantity;

/// Kernel bounds for cpu.shares.
pub const MIN_SHARES: i64 = 2;
pub const MAX_SHARES: i64 = 262_144;
const SHARES_PER_CPU: i64 = 1024;
const MILLI_CPU_TO_CPU: i64 = 1000;
/// Default CFS period, µs (100 ms).
pub const QUOTA_PERIOD: i64 = 100_000;
/// Smallest CFS quota the kernel accepts, µs (1 ms).
pub const MIN_QUOTA_PERIOD: i64 = 1000;

const GUARANTEED_OOM_SCORE_ADJ: i64 = -997;
const BEST_EFFORT_OOM_SCORE_ADJ: i64 = 1000;
/// Priority at and above which a pod is critical (`system-cluster-critical`).
const SYSTEM_CRITICAL_PRIORITY: i32 = 2_000_000_000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResourcesError {
    #[error("invalid quantity {value:?} for {resource}: {reason}")]
    InvalidQuantity {
        resource: String,
        value: String,
        reason: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QosClass {
    Guaranteed,
    Burstable,
    BestEffort,
}

impl QosClass {
    pub fn as_str(self) -> &'static str {
        match self {
            QosClass::Guaranteed => "Guaranteed",
            QosClass::Burstable => "Burstable",
            QosClass::BestEffort => "BestEffort",
        }
    }
}

/// Upstream `GetPodQOS`: `status.qosClass` when set (it is immutable once
/// the API server computed it), else [`compute_pod_qos`].
pub fn pod_qos(pod: &Pod) -> QosClass {
    match pod.status.as_ref().and_then(|s| s.qos_class.as_deref()) {
        Some("Guaranteed") => QosClass::Guaranteed,
        Some("Burstable") => QosClass::Burstable,
        Some("BestEffort") => QosClass::BestEffort,
        _ => compute_pod_qos(pod),
    }
}

/// Upstream `ComputePodQOS` over cpu and memory: BestEffort without any
/// positive request or limit; Guaranteed when every container (init ones
/// included) has positive cpu and memory limits and the summed requests
/// equal the summed limits; Burstable otherwise. Unparsable quantities
/// count as absent (the API server rejects them).
pub fn compute_pod_qos(pod: &Pod) -> QosClass {
    let mut requests: BTreeMap<&str, Quantity> = BTreeMap::new();
    let mut limits: BTreeMap<&str, Quantity> = BTreeMap::new();
    let mut guaranteed = true;
    for c in all_containers(pod) {
        let res = c.resources.as_ref();
        let mut limit_found = 0;
        for name in ["cpu", "memory"] {
            if let Some(q) = positive(res.and_then(|r| r.requests.as_ref()), name) {
                add_to(&mut requests, name, &q);
            }
            if let Some(q) = positive(res.and_then(|r| r.limits.as_ref()), name) {
                limit_found += 1;
                add_to(&mut limits, name, &q);
            }
        }
        if limit_found < 2 {
            guaranteed = false;
        }
    }
    if requests.is_empty() && limits.is_empty() {
        return QosClass::BestEffort;
    }
    if guaranteed
        && requests.iter().all(|(n, r)| limits.get(n) == Some(r))
        && requests.len() == limits.len()
    {
        return QosClass::Guaranteed;
    }
    QosClass::Burstable
}

type List = BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>;

fn positive(list: Option<&List>, name: &str) -> Option<Quantity> {
    let q = Quantity::parse(&list?.get(name)?.0).ok()?;
    (!q.is_zero() && !q.is_negative()).then_some(q)
}

fn add_to<'a>(acc: &mut BTreeMap<&'a str, Quantity>, name: &'a str, q: &Quantity) {
    let sum = match acc.get(name) {
        Some(cur) => cur.checked_add(q).unwrap_or_else(|| cur.clone()),
        None => q.clone(),
    };
    acc.insert(name, sum);
}

fn all_containers(pod: &Pod) -> impl Iterator<Item = &Container> {
    let spec = pod.spec.as_ref();
    spec.into_iter().flat_map(|s| s.containers.iter()).chain(
        spec.into_iter()
            .flat_map(|s| s.init_containers.iter().flatten()),
    )
}

/// A container's Linux cgroup settings, as the kubelet sends them in CRI
/// `LinuxContainerResources` (0 means unset for quota and memory).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LinuxResources {
    pub cpu_shares: i64,
    pub cpu_quota: i64,
    pub cpu_period: i64,
    pub memory_limit_in_bytes: i64,
    pub oom_score_adj: i64,
}

/// Upstream `MilliCPUToShares`: 1024 shares per cpu, clamped to the kernel's
/// [2, 262144]; no request gives the minimum.
pub fn milli_cpu_to_shares(milli_cpu: i64) -> i64 {
    if milli_cpu <= 0 {
        return MIN_SHARES;
    }
    (milli_cpu.saturating_mul(SHARES_PER_CPU) / MILLI_CPU_TO_CPU).clamp(MIN_SHARES, MAX_SHARES)
}

/// Upstream `milliCPUToQuota`: quota over `period` µs, at least 1 ms; 0 (no
/// quota) without a limit.
pub fn milli_cpu_to_quota(milli_cpu: i64, period: i64) -> i64 {
    if milli_cpu == 0 {
        return 0;
    }
    (milli_cpu.saturating_mul(period) / MILLI_CPU_TO_CPU).max(MIN_QUOTA_PERIOD)
}

/// Upstream `generateLinuxContainerResources` (CFS quota on, default
/// period): shares from the cpu request (or the limit when no request is
/// given), quota from the cpu limit, the memory limit, and the OOM score
/// adjustment for `memory_capacity` bytes of node memory.
pub fn container_linux_resources(
    pod: &Pod,
    container: &Container,
    memory_capacity: i64,
) -> Result<LinuxResources, ResourcesError> {
    let res = container.resources.as_ref();
    let requests = res.and_then(|r| r.requests.as_ref());
    let limits = res.and_then(|r| r.limits.as_ref());
    let cpu_request = quantity(requests, "cpu")?;
    let cpu_limit = quantity(limits, "cpu")?;
    let memory_limit = quantity(limits, "memory")?;
    let cpu_limit_milli = cpu_limit.as_ref().map_or(0, |q| clamp_i64(q.milli_value()));
    // The API server defaults a missing request to the limit; older pods may
    // lack that default, so the kubelet repeats it.
    let shares_from = match (&cpu_request, &cpu_limit) {
        (None, Some(_)) => cpu_limit_milli,
        (r, _) => r.as_ref().map_or(0, |q| clamp_i64(q.milli_value())),
    };
    Ok(LinuxResources {
        cpu_shares: milli_cpu_to_shares(shares_from),
        cpu_quota: milli_cpu_to_quota(cpu_limit_milli, QUOTA_PERIOD),
        cpu_period: QUOTA_PERIOD,
        memory_limit_in_bytes: memory_limit.map_or(0, |q| clamp_i64(q.value())),
        oom_score_adj: oom_score_adj(pod, container, memory_capacity)?,
    })
}

fn quantity(list: Option<&List>, name: &str) -> Result<Option<Quantity>, ResourcesError> {
    match list.and_then(|l| l.get(name)) {
        None => Ok(None),
        Some(q) => Quantity::parse(&q.0)
            .map(Some)
            .map_err(|e| ResourcesError::InvalidQuantity {
                resource: name.to_string(),
                value: q.0.clone(),
                reason: e.to_string(),
            }),
    }
}

fn clamp_i64(v: i128) -> i64 {
    v.clamp(i64::MIN as i128, i64::MAX as i128) as i64
}

fn memory_request(c: &Container) -> Result<i64, ResourcesError> {
    let requests = c.resources.as_ref().and_then(|r| r.requests.as_ref());
    Ok(quantity(requests, "memory")?.map_or(0, |q| clamp_i64(q.value())))
}

/// Upstream `GetContainerOOMScoreAdjust`: node-critical and Guaranteed pods
/// -997, BestEffort 1000, Burstable `1000 - 1000*request/capacity` kept in
/// [3, 999]. A sidecar (restartable init container) gets no higher a score
/// than the regular container with the smallest memory request.
pub fn oom_score_adj(
    pod: &Pod,
    container: &Container,
    memory_capacity: i64,
) -> Result<i64, ResourcesError> {
    if is_node_critical(pod) {
        return Ok(GUARANTEED_OOM_SCORE_ADJ);
    }
    match pod_qos(pod) {
        QosClass::Guaranteed => return Ok(GUARANTEED_OOM_SCORE_ADJ),
        QosClass::BestEffort => return Ok(BEST_EFFORT_OOM_SCORE_ADJ),
        QosClass::Burstable => {}
    }
    let score = |req: i64| -> i64 {
        if memory_capacity <= 0 {
            return 1000;
        }
        // i128: 1000 × a large request overflows i64.
        clamp_i64(1000 - (1000 * req as i128) / memory_capacity as i128)
    };
    let mut adj = score(memory_request(container)?);
    if container.restart_policy.as_deref() == Some("Always") {
        let regular = pod
            .spec
            .as_ref()
            .map(|s| s.containers.as_slice())
            .unwrap_or(&[]);
        let mut min_req: Option<i64> = None;
        for c in regular {
            let r = memory_request(c)?;
            min_req = Some(min_req.map_or(r, |m| m.min(r)));
        }
        if let Some(m) = min_req {
            adj = adj.min(score(m));
        }
    }
    let floor = 1000 + GUARANTEED_OOM_SCORE_ADJ;
    if adj < floor {
        return Ok(floor);
    }
    if adj == BEST_EFFORT_OOM_SCORE_ADJ {
        return Ok(adj - 1);
    }
    Ok(adj)
}

/// Upstream `IsNodeCriticalPod`: a critical pod (static, mirror, or priority
/// ≥ 2000000000) of priority class `system-node-critical`.
fn is_node_critical(pod: &Pod) -> bool {
    let spec = pod.spec.as_ref();
    if spec.and_then(|s| s.priority_class_name.as_deref()) != Some("system-node-critical") {
        return false;
    }
    let ann = pod.metadata.annotations.as_ref();
    let is_static = ann
        .and_then(|a| a.get("kubernetes.io/config.source"))
        .is_some_and(|s| s != "api");
    let is_mirror = ann.is_some_and(|a| a.contains_key("kubernetes.io/config.mirror"));
    let high = spec
        .and_then(|s| s.priority)
        .is_some_and(|p| p >= SYSTEM_CRITICAL_PRIORITY);
    is_static || is_mirror || high
}

/// The kubelet's cgroup driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupDriver {
    Cgroupfs,
    Systemd,
}

/// The cgroup of the pod's QoS class under `kubepods`, as components
/// (Guaranteed pods sit directly under `kubepods`).
pub fn qos_cgroup_name(qos: QosClass) -> Vec<String> {
    let mut name = vec!["kubepods".to_string()];
    match qos {
        QosClass::Guaranteed => {}
        QosClass::Burstable => name.push("burstable".into()),
        QosClass::BestEffort => name.push("besteffort".into()),
    }
    name
}

/// Upstream `GetPodContainerName`'s cgroup name: `kubepods[/qos]/pod<uid>`.
pub fn pod_cgroup_name(pod: &Pod) -> Vec<String> {
    let mut name = qos_cgroup_name(pod_qos(pod));
    name.push(format!("pod{}", pod.metadata.uid.as_deref().unwrap_or("")));
    name
}

/// A cgroup name in the driver's literal form: `/kubepods/burstable/pod<uid>`
/// for cgroupfs; for systemd each level is a slice named after its ancestors
/// with `-` in components turned to `_`
/// (`/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid>.slice`).
pub fn cgroup_name_literal(name: &[String], driver: CgroupDriver) -> String {
    if name.is_empty() {
        return "/".to_string();
    }
    match driver {
        CgroupDriver::Cgroupfs => format!("/{}", name.join("/")),
        CgroupDriver::Systemd => {
            let mut out = String::new();
            let mut prefix = String::new();
            for part in name {
                let part = part.replace('-', "_");
                if !prefix.is_empty() {
                    prefix.push('-');
                }
                prefix.push_str(&part);
                out.push('/');
                out.push_str(&prefix);
                out.push_str(".slice");
            }
            out
        }
    }
}

/// The pod's cgroup parent for the CRI sandbox config.
pub fn pod_cgroup_parent(pod: &Pod, driver: CgroupDriver) -> String {
    cgroup_name_literal(&pod_cgroup_name(pod), driver)
}

/// Limits of the pod-level cgroup (upstream `ResourceConfigForPod`). `None`
/// leaves a setting alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PodResourceConfig {
    pub cpu_shares: Option<i64>,
    pub cpu_quota: Option<i64>,
    pub cpu_period: Option<i64>,
    pub memory_limit_in_bytes: Option<i64>,
}

/// Upstream `ResourceConfigForPod`: shares from the pod's effective cpu
/// request, quota and memory limit from its effective limits (regular
/// containers summed, sidecars added, other init containers as a floor, pod
/// overhead included). Guaranteed pods get every setting, Burstable ones
/// only limits every container declares, BestEffort pods minimal shares.
/// `enforce_cpu_limits` false (kubelet `cpuCFSQuota: false`) sets quota -1.
pub fn pod_resource_config(
    pod: &Pod,
    enforce_cpu_limits: bool,
    cpu_period: i64,
) -> Result<PodResourceConfig, ResourcesError> {
    let reqs = pod_requests(pod)?;
    let (limits, cpu_declared, mem_declared) = pod_limits(pod)?;
    let cpu_requests = reqs.get("cpu").map_or(0, |q| clamp_i64(q.milli_value()));
    let cpu_limits = limits.get("cpu").map_or(0, |q| clamp_i64(q.milli_value()));
    let memory = limits.get("memory").map_or(0, |q| clamp_i64(q.value()));
    let shares = milli_cpu_to_shares(cpu_requests);
    let quota = if enforce_cpu_limits {
        milli_cpu_to_quota(cpu_limits, cpu_period)
    } else {
        -1
    };
    Ok(match pod_qos(pod) {
        QosClass::Guaranteed => PodResourceConfig {
            cpu_shares: Some(shares),
            cpu_quota: Some(quota),
            cpu_period: Some(cpu_period),
            memory_limit_in_bytes: Some(memory),
        },
        QosClass::Burstable => PodResourceConfig {
            cpu_shares: Some(shares),
            cpu_quota: cpu_declared.then_some(quota),
            cpu_period: cpu_declared.then_some(cpu_period),
            memory_limit_in_bytes: mem_declared.then_some(memory),
        },
        QosClass::BestEffort => PodResourceConfig {
            cpu_shares: Some(MIN_SHARES),
            ..Default::default()
        },
    })
}

type Sums = BTreeMap<String, Quantity>;

fn parse_list(list: Option<&List>) -> Result<Sums, ResourcesError> {
    let mut out = Sums::new();
    for (k, v) in list.into_iter().flatten() {
        let q = Quantity::parse(&v.0).map_err(|e| ResourcesError::InvalidQuantity {
            resource: k.clone(),
            value: v.0.clone(),
            reason: e.to_string(),
        })?;
        out.insert(k.clone(), q);
    }
    Ok(out)
}

fn add_list(acc: &mut Sums, add: &Sums) {
    for (k, v) in add {
        let sum = match acc.get(k) {
            Some(cur) => cur.checked_add(v).unwrap_or_else(|| cur.clone()),
            None => v.clone(),
        };
        acc.insert(k.clone(), sum);
    }
}

fn max_list(acc: &mut Sums, other: &Sums) {
    for (k, v) in other {
        if acc.get(k).is_none_or(|cur| v > cur) {
            acc.insert(k.clone(), v.clone());
        }
    }
}

fn is_sidecar(c: &Container) -> bool {
    c.restart_policy.as_deref() == Some("Always")
}

/// Upstream `AggregateContainerRequests`/`Limits`: regular containers and
/// sidecars summed; each other init container, plus the sidecars started
/// before it, as a floor. `on_each` sees every container's (or init step's)
/// list, as upstream's ContainerFn.
fn aggregate(
    pod: &Pod,
    pick: fn(&Container) -> Option<&List>,
    mut on_each: impl FnMut(&Sums),
) -> Result<Sums, ResourcesError> {
    let spec = pod.spec.as_ref();
    let mut total = Sums::new();
    for c in spec.into_iter().flat_map(|s| s.containers.iter()) {
        let l = parse_list(pick(c))?;
        on_each(&l);
        add_list(&mut total, &l);
    }
    let mut sidecars = Sums::new();
    let mut init_floor = Sums::new();
    for c in spec
        .into_iter()
        .flat_map(|s| s.init_containers.iter().flatten())
    {
        let l = parse_list(pick(c))?;
        let step = if is_sidecar(c) {
            add_list(&mut total, &l);
            add_list(&mut sidecars, &l);
            sidecars.clone()
        } else {
            let mut tmp = l;
            add_list(&mut tmp, &sidecars);
            tmp
        };
        on_each(&step);
        max_list(&mut init_floor, &step);
    }
    max_list(&mut total, &init_floor);
    Ok(total)
}

fn requests_of(c: &Container) -> Option<&List> {
    c.resources.as_ref().and_then(|r| r.requests.as_ref())
}

fn limits_of(c: &Container) -> Option<&List> {
    c.resources.as_ref().and_then(|r| r.limits.as_ref())
}

fn overhead(pod: &Pod) -> Result<Sums, ResourcesError> {
    parse_list(pod.spec.as_ref().and_then(|s| s.overhead.as_ref()))
}

/// The pod's effective requests, overhead included (upstream `PodRequests`).
pub fn pod_requests(pod: &Pod) -> Result<BTreeMap<String, Quantity>, ResourcesError> {
    let mut reqs = aggregate(pod, requests_of, |_| {})?;
    add_list(&mut reqs, &overhead(pod)?);
    Ok(reqs)
}

/// The pod's effective limits, with overhead added to the limits present
/// (upstream `PodLimits`), and whether every container declared a cpu and a
/// memory limit.
fn pod_limits(pod: &Pod) -> Result<(Sums, bool, bool), ResourcesError> {
    let (mut cpu_declared, mut mem_declared) = (true, true);
    let mut limits = aggregate(pod, limits_of, |l| {
        if l.get("cpu").is_none_or(Quantity::is_zero) {
            cpu_declared = false;
        }
        if l.get("memory").is_none_or(Quantity::is_zero) {
            mem_declared = false;
        }
    })?;
    for (k, v) in overhead(pod)? {
        if let Some(cur) = limits.get(&k) {
            let sum = cur.checked_add(&v).unwrap_or_else(|| cur.clone());
            limits.insert(k, sum);
        }
    }
    Ok((limits, cpu_declared, mem_declared))
}

#[cfg(test)]
mod tests;
