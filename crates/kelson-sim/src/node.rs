//! The objects a kubelet writes for its node: the Node it registers, the
//! status it reports and the Lease it renews.

use jiff::Timestamp;
use serde_json::{json, Value};

use crate::SimError;

/// Where kubelets keep their heartbeat Leases.
pub const LEASE_NAMESPACE: &str = "kube-node-lease";
/// What the sim reports as kubelet version (upstream's release it follows).
pub const KUBELET_VERSION: &str = "v1.33.0";
/// Memory the kubelet keeps back: upstream's default hard eviction threshold
/// (memory.available<100Mi) comes off allocatable.
const EVICTION_MEMORY_BYTES: f64 = 100.0 * 1024.0 * 1024.0;

/// The conditions a healthy kubelet reports, in its order, with upstream's
/// reasons and messages: (type, status, reason, message).
pub const HEALTHY_CONDITIONS: [(&str, &str, &str, &str); 4] = [
    (
        "MemoryPressure",
        "False",
        "KubeletHasSufficientMemory",
        "kubelet has sufficient memory available",
    ),
    (
        "DiskPressure",
        "False",
        "KubeletHasNoDiskPressure",
        "kubelet has no disk pressure",
    ),
    (
        "PIDPressure",
        "False",
        "KubeletHasSufficientPID",
        "kubelet has sufficient PID available",
    ),
    (
        "Ready",
        "True",
        "KubeletReady",
        "kubelet is posting ready status",
    ),
];

/// What every simulated node shares: its size and platform.
#[derive(Debug, Clone)]
pub struct NodeShape {
    pub cpu: String,
    pub memory: String,
    pub allocatable_memory: String,
    pub pods: u32,
    pub arch: &'static str,
}

impl NodeShape {
    pub fn new(cpu: &str, memory: &str, pods: u32) -> Result<NodeShape, SimError> {
        let invalid = |flag: &'static str, message: String| SimError::InvalidArg { flag, message };
        let cores = parse_quantity(cpu)
            .ok_or_else(|| invalid("--cpu", format!("{cpu:?} is not a quantity")))?;
        if cores <= 0.0 {
            return Err(invalid("--cpu", "must be positive".into()));
        }
        let bytes = parse_quantity(memory)
            .ok_or_else(|| invalid("--memory", format!("{memory:?} is not a quantity")))?;
        if bytes <= EVICTION_MEMORY_BYTES {
            return Err(invalid("--memory", "must exceed 100Mi".into()));
        }
        if pods == 0 {
            return Err(invalid("--pods", "must be positive".into()));
        }
        // Kubelets report memory in Ki.
        let allocatable_ki = ((bytes - EVICTION_MEMORY_BYTES) / 1024.0).floor() as u64;
        Ok(NodeShape {
            cpu: cpu.to_string(),
            memory: memory.to_string(),
            allocatable_memory: format!("{allocatable_ki}Ki"),
            pods,
            arch: go_arch(),
        })
    }
}

/// This machine's architecture under Go's name, as kubelets label nodes.
fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "powerpc64" => "ppc64le",
        "s390x" => "s390x",
        other => other,
    }
}

/// A Kubernetes quantity ("32", "500m", "256Gi", "1.5G") as a number.
pub fn parse_quantity(s: &str) -> Option<f64> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(s.len());
    let (num, suffix) = s.split_at(split);
    let num: f64 = num.parse().ok()?;
    let factor = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        _ => return None,
    };
    let v = num * factor;
    v.is_finite().then_some(v)
}

/// RFC 3339 with seconds, as metav1.Time serialises.
pub fn time(ts: Timestamp) -> String {
    ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// RFC 3339 with microseconds, as metav1.MicroTime serialises.
pub fn micro_time(ts: Timestamp) -> String {
    format!(
        "{}.{:06}Z",
        ts.strftime("%Y-%m-%dT%H:%M:%S"),
        ts.subsec_microsecond()
    )
}

/// 64-bit FNV-1a: stable fake IDs derived from names.
fn fnv(seed: u64, s: &str) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ seed;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// A 64-hex-digit fake digest of `s` (container and image IDs).
pub fn fake_digest(s: &str) -> String {
    (0..4u64).map(|i| format!("{:016x}", fnv(i, s))).collect()
}

fn fake_uuid(s: &str) -> String {
    let h = fake_digest(s);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Identity of one simulated node.
pub struct NodeIdentity<'a> {
    pub name: &'a str,
    pub ip: &'a str,
    pub zone: Option<&'a str>,
}

/// The Node a kubelet registers: labels, annotations and full status.
pub fn node_object(
    id: &NodeIdentity<'_>,
    shape: &NodeShape,
    boot_id: &str,
    now: Timestamp,
) -> Value {
    let mut labels = json!({
        "beta.kubernetes.io/arch": shape.arch,
        "beta.kubernetes.io/os": "linux",
        "kubernetes.io/arch": shape.arch,
        "kubernetes.io/hostname": id.name,
        "kubernetes.io/os": "linux",
    });
    if let Some(zone) = id.zone {
        labels["topology.kubernetes.io/zone"] = json!(zone);
    }
    let resources = |memory: &str, storage: &str| {
        json!({
            "cpu": shape.cpu,
            "ephemeral-storage": storage,
            "hugepages-1Gi": "0",
            "hugepages-2Mi": "0",
            "memory": memory,
            "pods": shape.pods.to_string(),
        })
    };
    let ts = time(now);
    let conditions: Vec<Value> = HEALTHY_CONDITIONS
        .iter()
        .map(|(t, s, r, m)| {
            json!({"type": t, "status": s, "reason": r, "message": m,
                   "lastHeartbeatTime": ts, "lastTransitionTime": ts})
        })
        .collect();
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": id.name,
            "labels": labels,
            "annotations": {
                "node.alpha.kubernetes.io/ttl": "0",
                "volumes.kubernetes.io/controller-managed-attach-detach": "true",
            },
        },
        "spec": {},
        "status": {
            "capacity": resources(&shape.memory, "100Gi"),
            // Upstream's default nodefs.available<10% eviction threshold.
            "allocatable": resources(&shape.allocatable_memory, "90Gi"),
            "conditions": conditions,
            "addresses": [
                {"type": "InternalIP", "address": id.ip},
                {"type": "Hostname", "address": id.name},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {
                "machineID": &fake_digest(&format!("machine/{}", id.name))[..32],
                "systemUUID": fake_uuid(&format!("system/{}", id.name)),
                "bootID": boot_id,
                "kernelVersion": "6.1.0-kelson-sim",
                "osImage": "Kelson simulated node",
                "containerRuntimeVersion": "sim://0.1.0",
                "kubeletVersion": KUBELET_VERSION,
                "kubeProxyVersion": "",
                "operatingSystem": "linux",
                "architecture": shape.arch,
            },
        },
    })
}

/// A fresh boot ID: a new one each time the sim starts, as after a reboot.
pub fn boot_id(name: &str, now: Timestamp) -> String {
    fake_uuid(&format!("boot/{name}/{}", now.as_nanosecond()))
}

/// The strategic merge patch that reports healthy conditions. Conditions
/// whose bit is set in `changed` get a new lastTransitionTime; the others
/// keep theirs (the patch leaves the field alone).
pub fn status_patch(changed: u8, now: Timestamp) -> Value {
    let ts = time(now);
    let conditions: Vec<Value> = HEALTHY_CONDITIONS
        .iter()
        .enumerate()
        .map(|(i, (t, s, r, m))| {
            let mut c = json!({"type": t, "status": s, "reason": r, "message": m,
                               "lastHeartbeatTime": ts});
            if changed & (1 << i) != 0 {
                c["lastTransitionTime"] = json!(ts);
            }
            c
        })
        .collect();
    json!({"status": {"conditions": conditions}})
}

/// Bit i set when the node's condition HEALTHY_CONDITIONS[i] does not hold
/// the healthy status (someone, e.g. the node lifecycle controller, set it
/// to Unknown) or is missing.
pub fn unhealthy_bits(node: &k8s_openapi::api::core::v1::Node) -> u8 {
    let conds = node.status.as_ref().and_then(|s| s.conditions.as_ref());
    let mut bits = 0u8;
    for (i, (t, s, _, _)) in HEALTHY_CONDITIONS.iter().enumerate() {
        let ok = conds.is_some_and(|cs| cs.iter().any(|c| c.type_ == *t && c.status == *s));
        if !ok {
            bits |= 1 << i;
        }
    }
    bits
}

/// The heartbeat Lease, owned by its Node so it goes with it.
pub fn lease_object(name: &str, node_uid: &str, duration_seconds: i32, now: Timestamp) -> Value {
    json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {
            "name": name,
            "namespace": LEASE_NAMESPACE,
            "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": name, "uid": node_uid}],
        },
        "spec": {
            "holderIdentity": name,
            "leaseDurationSeconds": duration_seconds,
            "renewTime": micro_time(now),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        assert_eq!(parse_quantity("32"), Some(32.0));
        assert_eq!(parse_quantity("500m"), Some(0.5));
        assert_eq!(parse_quantity("256Gi"), Some(256.0 * 1024f64.powi(3)));
        assert_eq!(parse_quantity("1G"), Some(1e9));
        assert_eq!(parse_quantity("12Q"), None);
        assert_eq!(parse_quantity(""), None);
    }

    #[test]
    fn allocatable_memory_keeps_back_the_eviction_threshold() {
        let shape = NodeShape::new("32", "256Gi", 110).unwrap();
        // 256Gi = 268435456Ki, minus 100Mi = 102400Ki.
        assert_eq!(shape.allocatable_memory, "268333056Ki");
        assert!(NodeShape::new("x", "256Gi", 110).is_err());
        assert!(NodeShape::new("32", "64Mi", 110).is_err());
        assert!(NodeShape::new("32", "1Gi", 0).is_err());
    }

    #[test]
    fn node_looks_like_a_kubelets() {
        let shape = NodeShape::new("32", "256Gi", 110).unwrap();
        let id = NodeIdentity {
            name: "sim-node-3",
            ip: "10.244.0.4",
            zone: Some("zone-1"),
        };
        let now = Timestamp::from_second(1_700_000_000).unwrap();
        let n = node_object(&id, &shape, "b", now);
        assert_eq!(
            n["metadata"]["labels"]["kubernetes.io/hostname"],
            "sim-node-3"
        );
        assert_eq!(n["metadata"]["labels"]["kubernetes.io/os"], "linux");
        assert_eq!(
            n["metadata"]["labels"]["topology.kubernetes.io/zone"],
            "zone-1"
        );
        assert_eq!(n["status"]["capacity"]["pods"], "110");
        let ready = &n["status"]["conditions"][3];
        assert_eq!(ready["type"], "Ready");
        assert_eq!(ready["reason"], "KubeletReady");
        assert_eq!(ready["message"], "kubelet is posting ready status");
        assert_eq!(ready["lastHeartbeatTime"], "2023-11-14T22:13:20Z");
        assert_eq!(n["status"]["addresses"][0]["address"], "10.244.0.4");
        // The typed client must be able to read it back.
        let typed: k8s_openapi::api::core::v1::Node = serde_json::from_value(n).unwrap();
        assert_eq!(unhealthy_bits(&typed), 0);
    }

    #[test]
    fn status_patch_moves_transition_time_only_for_changed_conditions() {
        let now = Timestamp::from_second(1_700_000_000).unwrap();
        let p = status_patch(0b1000, now);
        let conds = p["status"]["conditions"].as_array().unwrap();
        assert!(conds[0].get("lastTransitionTime").is_none());
        assert_eq!(conds[3]["lastTransitionTime"], "2023-11-14T22:13:20Z");
        assert_eq!(conds[3]["lastHeartbeatTime"], "2023-11-14T22:13:20Z");
    }

    #[test]
    fn micro_time_has_six_digits() {
        let ts = Timestamp::new(1_700_000_000, 123_456_789).unwrap();
        assert_eq!(micro_time(ts), "2023-11-14T22:13:20.123456Z");
    }
}
