//! The pure rules of node lifecycle: tolerations against taints, which
//! NoSchedule taints node conditions call for, zone states, and the token
//! bucket that paces NoExecute tainting.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Taint, Toleration};

pub const TAINT_NOT_READY: &str = "node.kubernetes.io/not-ready";
pub const TAINT_UNREACHABLE: &str = "node.kubernetes.io/unreachable";
pub const TAINT_UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";
pub const NO_EXECUTE: &str = "NoExecute";
pub const NO_SCHEDULE: &str = "NoSchedule";
/// Nodes with this label do not count towards their zone's health.
pub const LABEL_EXCLUDE_DISRUPTION: &str = "node.kubernetes.io/exclude-disruption";

/// (condition type, status) → NoSchedule taint key, as upstream maps them.
const CONDITION_TAINTS: [(&str, &str, &str); 6] = [
    ("Ready", "False", TAINT_NOT_READY),
    ("Ready", "Unknown", TAINT_UNREACHABLE),
    (
        "MemoryPressure",
        "True",
        "node.kubernetes.io/memory-pressure",
    ),
    ("DiskPressure", "True", "node.kubernetes.io/disk-pressure"),
    (
        "NetworkUnavailable",
        "True",
        "node.kubernetes.io/network-unavailable",
    ),
    ("PIDPressure", "True", "node.kubernetes.io/pid-pressure"),
];

pub fn taint(key: &str, effect: &str) -> Taint {
    Taint {
        key: key.to_string(),
        effect: effect.to_string(),
        ..Taint::default()
    }
}

/// Whether `t` tolerates `taint` (upstream's Toleration.ToleratesTaint).
pub fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    if t.effect
        .as_deref()
        .is_some_and(|e| !e.is_empty() && e != taint.effect)
    {
        return false;
    }
    if t.key
        .as_deref()
        .is_some_and(|k| !k.is_empty() && k != taint.key)
    {
        return false;
    }
    match t.operator.as_deref().unwrap_or("") {
        "" | "Equal" => t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or(""),
        "Exists" => true,
        _ => false,
    }
}

/// How long a pod may stay on a node with `taints` (all NoExecute):
/// None when some taint is not tolerated (evict now), Some(None) when it
/// tolerates them forever, Some(Some(d)) when the shortest
/// tolerationSeconds among the tolerations used is d.
pub fn toleration_time(taints: &[Taint], tolerations: &[Toleration]) -> Option<Option<Duration>> {
    let mut min: Option<Duration> = None;
    for taint in taints {
        let used = tolerations.iter().find(|t| tolerates(t, taint))?;
        if let Some(secs) = used.toleration_seconds {
            let d = Duration::from_secs(secs.max(0) as u64);
            min = Some(min.map_or(d, |m| m.min(d)));
        }
    }
    Some(min)
}

/// The NoExecute taints of a node.
pub fn no_execute_taints(node: &Node) -> Vec<Taint> {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .map(|ts| {
            ts.iter()
                .filter(|t| t.effect == NO_EXECUTE)
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

pub fn has_taint(node: &Node, key: &str, effect: &str) -> bool {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .is_some_and(|ts| ts.iter().any(|t| t.key == key && t.effect == effect))
}

/// NoSchedule taints the controller wants (from conditions and
/// spec.unschedulable) and those of its kind the node has:
/// (to add, to remove).
pub fn no_schedule_diff(node: &Node) -> (Vec<Taint>, Vec<Taint>) {
    let conditions = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_deref())
        .unwrap_or(&[]);
    let mut want: Vec<&str> = Vec::new();
    for c in conditions {
        for (t, s, key) in CONDITION_TAINTS {
            if c.type_ == t && c.status == s {
                want.push(key);
            }
        }
    }
    if node
        .spec
        .as_ref()
        .and_then(|s| s.unschedulable)
        .unwrap_or(false)
    {
        want.push(TAINT_UNSCHEDULABLE);
    }
    let managed =
        |k: &str| k == TAINT_UNSCHEDULABLE || CONDITION_TAINTS.iter().any(|(_, _, key)| *key == k);
    let have: Vec<&Taint> = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .map(|ts| {
            ts.iter()
                .filter(|t| t.effect == NO_SCHEDULE && managed(&t.key))
                .collect()
        })
        .unwrap_or_default();
    let add = want
        .iter()
        .filter(|k| !have.iter().any(|t| t.key == **k))
        .map(|k| taint(k, NO_SCHEDULE))
        .collect();
    let remove = have
        .iter()
        .filter(|t| !want.contains(&t.key.as_str()))
        .map(|t| (*t).clone())
        .collect();
    (add, remove)
}

/// The node's taints after adding `add` (stamped `now`; a taint of the
/// same key and effect stays as it is) and removing `remove` (by key and
/// effect); None when nothing changes.
pub fn swap_taints(
    current: &[Taint],
    add: &[Taint],
    remove: &[Taint],
    now: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time,
) -> Option<Vec<Taint>> {
    let mut out: Vec<Taint> = current
        .iter()
        .filter(|t| {
            !remove
                .iter()
                .any(|r| r.key == t.key && r.effect == t.effect)
        })
        .cloned()
        .collect();
    let mut changed = out.len() != current.len();
    for a in add {
        if !out.iter().any(|t| t.key == a.key && t.effect == a.effect) {
            let mut a = a.clone();
            a.time_added = Some(now.clone());
            out.push(a);
            changed = true;
        }
    }
    changed.then_some(out)
}

/// Where a node's failures are counted: region and zone labels.
pub fn zone_key(node: &Node) -> String {
    let labels = node.metadata.labels.as_ref();
    let get = |a: &str, b: &str| {
        labels
            .and_then(|l| l.get(a).or_else(|| l.get(b)))
            .cloned()
            .unwrap_or_default()
    };
    let region = get(
        "topology.kubernetes.io/region",
        "failure-domain.beta.kubernetes.io/region",
    );
    let zone = get(
        "topology.kubernetes.io/zone",
        "failure-domain.beta.kubernetes.io/zone",
    );
    if region.is_empty() && zone.is_empty() {
        return String::new();
    }
    format!("{region}:\x00:{zone}")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ZoneState {
    Initial,
    Normal,
    FullDisruption,
    PartialDisruption,
}

/// Upstream's ComputeZoneState over the zone's Ready statuses.
pub fn zone_state(ready: &[bool], unhealthy_threshold: f32) -> ZoneState {
    let ready_n = ready.iter().filter(|r| **r).count();
    let not_ready = ready.len() - ready_n;
    if ready_n == 0 && not_ready > 0 {
        ZoneState::FullDisruption
    } else if not_ready > 2 && not_ready as f32 / ready.len() as f32 >= unhealthy_threshold {
        ZoneState::PartialDisruption
    } else {
        ZoneState::Normal
    }
}

/// A token bucket with burst 1 (upstream's eviction limiter); a rate of 0
/// never accepts.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    qps: f32,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub fn new(qps: f32, now: Instant) -> TokenBucket {
        TokenBucket {
            qps,
            tokens: 1.0,
            last: now,
        }
    }

    pub fn try_accept(&mut self, now: Instant) -> bool {
        if self.qps <= 0.0 {
            return false;
        }
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * f64::from(self.qps)).min(1.0);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Changes the rate as upstream's SwapLimiter does: a fresh bucket,
    /// drained if the old one had nothing left.
    pub fn swap(&mut self, qps: f32, now: Instant) {
        if self.qps == qps {
            return;
        }
        let was_empty = !self.try_accept(now);
        let mut fresh = TokenBucket::new(qps, now);
        if qps > 0.0 && was_empty {
            fresh.try_accept(now);
        }
        *self = fresh;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tol(v: serde_json::Value) -> Toleration {
        serde_json::from_value(v).unwrap()
    }

    fn node(v: serde_json::Value) -> Node {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn toleration_matching() {
        let unreachable = taint(TAINT_UNREACHABLE, NO_EXECUTE);
        assert!(tolerates(
            &tol(serde_json::json!({"operator": "Exists"})),
            &unreachable
        ));
        assert!(tolerates(
            &tol(
                serde_json::json!({"key": TAINT_UNREACHABLE, "operator": "Exists", "effect": "NoExecute"})
            ),
            &unreachable
        ));
        assert!(!tolerates(
            &tol(
                serde_json::json!({"key": TAINT_UNREACHABLE, "operator": "Exists", "effect": "NoSchedule"})
            ),
            &unreachable
        ));
        assert!(!tolerates(
            &tol(serde_json::json!({"key": TAINT_NOT_READY, "operator": "Exists"})),
            &unreachable
        ));
        // Equal with no value matches a taint with no value.
        assert!(tolerates(
            &tol(serde_json::json!({"key": TAINT_UNREACHABLE})),
            &unreachable
        ));
    }

    #[test]
    fn shortest_toleration_wins_and_untolerated_means_now() {
        let taints = [taint(TAINT_UNREACHABLE, NO_EXECUTE)];
        assert_eq!(toleration_time(&taints, &[]), None);
        let t300 = tol(
            serde_json::json!({"key": TAINT_UNREACHABLE, "operator": "Exists",
                                            "effect": "NoExecute", "tolerationSeconds": 300}),
        );
        assert_eq!(
            toleration_time(&taints, std::slice::from_ref(&t300)),
            Some(Some(Duration::from_secs(300)))
        );
        let forever = tol(serde_json::json!({"operator": "Exists"}));
        assert_eq!(toleration_time(&taints, &[forever]), Some(None));
        let two = [
            taint(TAINT_UNREACHABLE, NO_EXECUTE),
            taint(TAINT_NOT_READY, NO_EXECUTE),
        ];
        assert_eq!(toleration_time(&two, &[t300]), None);
    }

    #[test]
    fn conditions_map_to_no_schedule_taints() {
        let n = node(serde_json::json!({
            "metadata": {"name": "n"},
            "spec": {"unschedulable": true, "taints": [
                {"key": "node.kubernetes.io/disk-pressure", "effect": "NoSchedule"},
                {"key": "example.com/mine", "effect": "NoSchedule"},
            ]},
            "status": {"conditions": [
                {"type": "Ready", "status": "Unknown"},
                {"type": "MemoryPressure", "status": "True"},
                {"type": "DiskPressure", "status": "False"},
            ]},
        }));
        let (add, remove) = no_schedule_diff(&n);
        let keys: Vec<&str> = add.iter().map(|t| t.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                TAINT_UNREACHABLE,
                "node.kubernetes.io/memory-pressure",
                TAINT_UNSCHEDULABLE
            ]
        );
        let removed: Vec<&str> = remove.iter().map(|t| t.key.as_str()).collect();
        assert_eq!(
            removed,
            ["node.kubernetes.io/disk-pressure"],
            "foreign taints stay"
        );
    }

    #[test]
    fn swapping_keeps_existing_and_stamps_new() {
        let now = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::UNIX_EPOCH);
        let current = [taint(TAINT_NOT_READY, NO_EXECUTE), taint("x", NO_SCHEDULE)];
        let out = swap_taints(
            &current,
            &[taint(TAINT_UNREACHABLE, NO_EXECUTE)],
            &[taint(TAINT_NOT_READY, NO_EXECUTE)],
            now.clone(),
        )
        .unwrap();
        assert_eq!(out.len(), 2);
        assert_eq!(out[1].key, TAINT_UNREACHABLE);
        assert!(out[1].time_added.is_some());
        assert!(swap_taints(&out, &[taint(TAINT_UNREACHABLE, NO_EXECUTE)], &[], now).is_none());
    }

    #[test]
    fn zone_states() {
        assert_eq!(zone_state(&[false, false], 0.55), ZoneState::FullDisruption);
        assert_eq!(
            zone_state(&[true, false, false], 0.55),
            ZoneState::Normal,
            "two down is never partial"
        );
        assert_eq!(
            zone_state(&[true, false, false, false], 0.55),
            ZoneState::PartialDisruption
        );
        assert_eq!(zone_state(&[true; 5], 0.55), ZoneState::Normal);
    }

    #[test]
    fn zone_keys() {
        let n = node(
            serde_json::json!({"metadata": {"name": "n", "labels": {"topology.kubernetes.io/zone": "z1"}}}),
        );
        assert_eq!(zone_key(&n), ":\u{0}:z1");
        assert_eq!(
            zone_key(&node(serde_json::json!({"metadata": {"name": "n"}}))),
            ""
        );
    }

    #[test]
    fn token_bucket_paces() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(0.1, t0);
        assert!(b.try_accept(t0), "starts with one token");
        assert!(!b.try_accept(t0 + Duration::from_secs(5)));
        assert!(b.try_accept(t0 + Duration::from_secs(10)));
        b.swap(0.0, t0 + Duration::from_secs(11));
        assert!(!b.try_accept(t0 + Duration::from_secs(100)));
    }
}
