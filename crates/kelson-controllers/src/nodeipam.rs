//! Node IPAM (upstream's range allocator): every node gets a podCIDR carved
//! from the cluster CIDR (10.42.0.0/16 → 10.42.0.0/24, 10.42.1.0/24, …).
//! Allocations are read back from the nodes themselves on start, so a
//! restart never hands out a range twice; a deleted node's range goes back
//! to the pool. When the pool is empty the node gets a "CIDRNotAvailable"
//! Event and waits.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, ObjectReference};
use kelson_runtime::{EventType, Recorder};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::{watcher, WatchStreamExt};
use kube::Client;
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;

/// Upstream caps a cluster CIDR at 2^16 node ranges.
const MAX_SUBNET_BITS: u8 = 16;
/// Retry of nodes whose patch failed or who found the pool empty.
const RETRY: Duration = Duration::from_secs(5);

/// Where pod ranges come from: `--cluster-cidr` and the per-node mask
/// (`--node-cidr-mask-size`, 24 for IPv4 and 64 for IPv6 by default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterCidr {
    pub cidr: String,
    pub node_mask: u8,
}

impl ClusterCidr {
    /// `cidr` with upstream's default node mask for its family.
    pub fn new(cidr: impl Into<String>) -> ClusterCidr {
        let cidr = cidr.into();
        let node_mask = if cidr.contains(':') { 64 } else { 24 };
        ClusterCidr { cidr, node_mask }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("invalid cluster CIDR {0:?}")]
    InvalidCidr(String),
    #[error("node CIDR mask /{node_mask} does not fit cluster CIDR {cidr} (must be between /{prefix} and /{max}, at most {MAX_SUBNET_BITS} bits longer)")]
    InvalidMask {
        cidr: String,
        node_mask: u8,
        prefix: u8,
        max: u8,
    },
}

/// The pool of node ranges in a cluster CIDR, allocated round robin from
/// the last allocation as upstream's cidrset does.
#[derive(Debug, Clone)]
pub struct CidrSet {
    base: u128,
    v4: bool,
    cluster_prefix: u8,
    node_mask: u8,
    used: Vec<bool>,
    in_use: usize,
    next: usize,
}

fn parse_cidr(s: &str) -> Option<(IpAddr, u8)> {
    let (addr, prefix) = s.trim().split_once('/')?;
    let addr: IpAddr = addr.parse().ok()?;
    let prefix: u8 = prefix.parse().ok()?;
    let bits = if addr.is_ipv4() { 32 } else { 128 };
    (prefix <= bits).then_some((addr, prefix))
}

fn to_u128(a: IpAddr) -> u128 {
    match a {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

impl CidrSet {
    pub fn new(c: &ClusterCidr) -> Result<CidrSet, Error> {
        let (addr, prefix) =
            parse_cidr(&c.cidr).ok_or_else(|| Error::InvalidCidr(c.cidr.clone()))?;
        let v4 = addr.is_ipv4();
        let max = if v4 { 32 } else { 128 };
        if c.node_mask < prefix || c.node_mask > max || c.node_mask - prefix > MAX_SUBNET_BITS {
            return Err(Error::InvalidMask {
                cidr: c.cidr.clone(),
                node_mask: c.node_mask,
                prefix,
                max,
            });
        }
        let host_bits = u32::from(max - prefix);
        let mask = !1u128
            .checked_shl(host_bits)
            .map(|v| v - 1)
            .unwrap_or(u128::MAX);
        Ok(CidrSet {
            base: to_u128(addr) & mask,
            v4,
            cluster_prefix: prefix,
            node_mask: c.node_mask,
            used: vec![false; 1usize << (c.node_mask - prefix)],
            in_use: 0,
            next: 0,
        })
    }

    fn bits(&self) -> u8 {
        if self.v4 {
            32
        } else {
            128
        }
    }

    fn subnet(&self, idx: usize) -> String {
        let step = 1u128 << u32::from(self.bits() - self.node_mask);
        let v = self.base + step * idx as u128;
        let ip = if self.v4 {
            IpAddr::V4(Ipv4Addr::from(v as u32))
        } else {
            IpAddr::V6(Ipv6Addr::from(v))
        };
        format!("{ip}/{}", self.node_mask)
    }

    /// Indexes of the node ranges `cidr` covers, if it lies in the pool.
    fn indexes(&self, cidr: &str) -> Option<std::ops::Range<usize>> {
        let (addr, prefix) = parse_cidr(cidr)?;
        if addr.is_ipv4() != self.v4 || prefix < self.cluster_prefix {
            return None;
        }
        let off = to_u128(addr).checked_sub(self.base)?;
        let shift = u32::from(self.bits() - self.node_mask);
        let start = (off >> shift) as usize;
        if start >= self.used.len() {
            return None;
        }
        // A range wider than a node's covers several; a narrower one, one.
        let count = if prefix < self.node_mask {
            1usize << (self.node_mask - prefix)
        } else {
            1
        };
        Some(start..(start + count).min(self.used.len()))
    }

    /// The next free range, or None when all are taken.
    pub fn allocate_next(&mut self) -> Option<String> {
        let n = self.used.len();
        for i in 0..n {
            let idx = (self.next + i) % n;
            if !self.used[idx] {
                self.used[idx] = true;
                self.in_use += 1;
                self.next = (idx + 1) % n;
                return Some(self.subnet(idx));
            }
        }
        None
    }

    /// Marks `cidr` (a node's existing podCIDR) taken; false if it is not in
    /// the pool.
    pub fn occupy(&mut self, cidr: &str) -> bool {
        let Some(r) = self.indexes(cidr) else {
            return false;
        };
        for i in r {
            if !self.used[i] {
                self.used[i] = true;
                self.in_use += 1;
            }
        }
        true
    }

    /// Gives `cidr` back to the pool.
    pub fn release(&mut self, cidr: &str) {
        if let Some(r) = self.indexes(cidr) {
            for i in r {
                if self.used[i] {
                    self.used[i] = false;
                    self.in_use -= 1;
                }
            }
        }
    }

    pub fn free(&self) -> usize {
        self.used.len() - self.in_use
    }
}

fn node_cidrs(node: &Node) -> Vec<String> {
    let Some(spec) = node.spec.as_ref() else {
        return Vec::new();
    };
    match (&spec.pod_cidrs, &spec.pod_cidr) {
        (Some(v), _) if !v.is_empty() => v.clone(),
        (_, Some(c)) if !c.is_empty() => vec![c.clone()],
        _ => Vec::new(),
    }
}

/// The reference upstream's node events carry.
fn node_ref(node: &Node) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Node".into()),
        name: node.metadata.name.clone(),
        uid: node.metadata.uid.clone(),
        ..ObjectReference::default()
    }
}

enum Outcome {
    Patched,
    /// The patch failed: the range goes back and the node is retried.
    Failed {
        name: String,
        cidr: String,
    },
}

struct Allocator {
    client: Client,
    set: CidrSet,
    recorder: Recorder,
    /// Ranges handed out, by node.
    assigned: HashMap<String, Vec<String>>,
    /// Nodes without a range, with their UID.
    waiting: HashMap<String, Node>,
    /// Waiting nodes already told that the pool is empty.
    told: HashSet<String>,
    permits: Arc<Semaphore>,
    tx: mpsc::UnboundedSender<Outcome>,
}

impl Allocator {
    fn observe(&mut self, node: Node) {
        let Some(name) = node.metadata.name.clone() else {
            return;
        };
        let cidrs = node_cidrs(&node);
        if cidrs.is_empty() {
            if !self.assigned.contains_key(&name) {
                self.waiting.insert(name, node);
            }
            return;
        }
        self.waiting.remove(&name);
        self.told.remove(&name);
        let mine = self.assigned.get(&name);
        if mine.is_some_and(|m| *m == cidrs) {
            return;
        }
        // The node shows other ranges than we noted (set by someone else,
        // or we are catching up after a restart): theirs win.
        if let Some(old) = self.assigned.remove(&name) {
            for c in &old {
                self.set.release(c);
            }
        }
        for c in &cidrs {
            if !self.set.occupy(c) {
                tracing::debug!(node = %name, cidr = %c, "node podCIDR outside the cluster CIDR");
            }
        }
        self.assigned.insert(name, cidrs);
    }

    fn forget(&mut self, name: &str) {
        self.waiting.remove(name);
        self.told.remove(name);
        if let Some(old) = self.assigned.remove(name) {
            for c in &old {
                self.set.release(c);
            }
        }
    }

    /// Hands ranges to every waiting node.
    fn allocate_waiting(&mut self) {
        // With the pool empty, every node event would otherwise go over all
        // waiting nodes again (thousands in a cluster that outgrew its CIDR).
        if self.set.free() == 0 && self.waiting.keys().all(|n| self.told.contains(n)) {
            return;
        }
        let mut names: Vec<String> = self.waiting.keys().cloned().collect();
        names.sort();
        for name in names {
            let Some(node) = self.waiting.remove(&name) else {
                continue;
            };
            let Some(cidr) = self.set.allocate_next() else {
                // Once per node until it gets a range: the retry tick and
                // every node event come back here.
                if self.told.insert(name.clone()) {
                    tracing::warn!(node = %name, "no pod CIDR left in the cluster CIDR");
                    self.recorder.event(
                        &node_ref(&node),
                        EventType::Normal,
                        "CIDRNotAvailable",
                        format!("Node {name} status is now: CIDRNotAvailable"),
                    );
                }
                self.waiting.insert(name, node);
                continue;
            };
            self.told.remove(&name);
            self.assigned.insert(name.clone(), vec![cidr.clone()]);
            let (client, permits, tx) =
                (self.client.clone(), self.permits.clone(), self.tx.clone());
            let uid = node.metadata.uid.clone();
            tokio::spawn(async move {
                let Ok(_permit) = permits.acquire().await else {
                    return;
                };
                let nodes: Api<Node> = Api::all(client);
                // The UID makes it fail rather than hit a new node of the
                // same name.
                let patch = serde_json::json!({
                    "metadata": {"uid": uid},
                    "spec": {"podCIDR": cidr, "podCIDRs": [cidr]},
                });
                let outcome = match nodes
                    .patch(&name, &PatchParams::default(), &Patch::Strategic(patch))
                    .await
                {
                    Ok(_) => {
                        tracing::info!(node = %name, cidr = %cidr, "set node podCIDR");
                        Outcome::Patched
                    }
                    Err(e) => {
                        tracing::warn!(node = %name, error = %e, "setting node podCIDR");
                        Outcome::Failed { name, cidr }
                    }
                };
                let _ = tx.send(outcome);
            });
        }
    }
}

/// Runs node IPAM until `shutdown` fires. Fails at once only when the
/// cluster CIDR or mask is invalid.
pub async fn run(
    client: Client,
    cidr: ClusterCidr,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let set = CidrSet::new(&cidr)?;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut alloc = Allocator {
        recorder: Recorder::new(client.clone(), "cidrAllocator", ""),
        client: client.clone(),
        set,
        assigned: HashMap::new(),
        waiting: HashMap::new(),
        told: HashSet::new(),
        permits: Arc::new(Semaphore::new(16)),
        tx,
    };
    let api: Api<Node> = Api::all(client);
    let stream = watcher(api, watcher::Config::default()).default_backoff();
    futures::pin_mut!(stream);
    // Allocation waits until the first full list: every existing range must
    // be known before a new one is handed out.
    let mut synced = false;
    let mut listed: Option<HashSet<String>> = None;
    let mut retry = tokio::time::interval(RETRY);
    retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            ev = stream.next() => {
                let Some(ev) = ev else { return Ok(()) };
                match ev {
                    Err(e) => tracing::debug!(error = %e, "node watch"),
                    Ok(watcher::Event::Init) => listed = Some(HashSet::new()),
                    Ok(watcher::Event::InitApply(n)) => {
                        if let (Some(l), Some(name)) = (listed.as_mut(), n.metadata.name.clone()) {
                            l.insert(name);
                        }
                        alloc.observe(n);
                    }
                    Ok(watcher::Event::InitDone) => {
                        if let Some(l) = listed.take() {
                            let gone: Vec<String> = alloc
                                .assigned
                                .keys()
                                .chain(alloc.waiting.keys())
                                .filter(|k| !l.contains(*k))
                                .cloned()
                                .collect();
                            for name in gone {
                                alloc.forget(&name);
                            }
                        }
                        synced = true;
                        alloc.allocate_waiting();
                    }
                    Ok(watcher::Event::Apply(n)) => {
                        alloc.observe(n);
                        if synced {
                            alloc.allocate_waiting();
                        }
                    }
                    Ok(watcher::Event::Delete(n)) => {
                        if let Some(name) = n.metadata.name.as_deref() {
                            alloc.forget(name);
                        }
                        if synced {
                            alloc.allocate_waiting();
                        }
                    }
                }
            }
            Some(outcome) = rx.recv() => {
                if let Outcome::Failed { name, cidr } = outcome {
                    // Only undo if the node still holds what we handed out
                    // (the watch may already show otherwise).
                    if alloc.assigned.get(&name).is_some_and(|c| *c == [cidr.clone()]) {
                        alloc.set.release(&cidr);
                        alloc.assigned.remove(&name);
                        // Back to waiting only if it still exists: the next
                        // watch event or relist says.
                        let nodes: Api<Node> = Api::all(alloc.client.clone());
                        if let Ok(Some(n)) = nodes.get_opt(&name).await {
                            alloc.observe(n);
                        }
                    }
                }
            }
            _ = retry.tick() => {
                if synced && !alloc.waiting.is_empty() {
                    alloc.allocate_waiting();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn carves_node_ranges_in_order() {
        let mut s = CidrSet::new(&ClusterCidr::new("10.42.0.0/16")).unwrap();
        assert_eq!(s.allocate_next().as_deref(), Some("10.42.0.0/24"));
        assert_eq!(s.allocate_next().as_deref(), Some("10.42.1.0/24"));
        assert_eq!(s.free(), 254);
    }

    #[test]
    fn existing_ranges_are_skipped_and_released_ones_reused_later() {
        let mut s = CidrSet::new(&ClusterCidr::new("10.42.0.0/22")).unwrap();
        assert!(s.occupy("10.42.0.0/24"));
        assert!(!s.occupy("192.168.0.0/24"));
        assert_eq!(s.allocate_next().as_deref(), Some("10.42.1.0/24"));
        s.release("10.42.0.0/24");
        // Round robin: the next one up comes first, the freed one after.
        assert_eq!(s.allocate_next().as_deref(), Some("10.42.2.0/24"));
        assert_eq!(s.allocate_next().as_deref(), Some("10.42.3.0/24"));
        assert_eq!(s.allocate_next().as_deref(), Some("10.42.0.0/24"));
        assert_eq!(s.allocate_next(), None, "exhausted");
    }

    #[test]
    fn a_wider_range_occupies_several() {
        let mut s = CidrSet::new(&ClusterCidr::new("10.42.0.0/22")).unwrap();
        assert!(s.occupy("10.42.2.0/23"));
        assert_eq!(s.free(), 2);
    }

    #[test]
    fn masks_are_checked() {
        assert!(matches!(
            CidrSet::new(&ClusterCidr {
                cidr: "10.0.0.0/8".into(),
                node_mask: 25
            }),
            Err(Error::InvalidMask { .. })
        ));
        assert!(matches!(
            CidrSet::new(&ClusterCidr {
                cidr: "10.42.0.0/16".into(),
                node_mask: 12
            }),
            Err(Error::InvalidMask { .. })
        ));
        assert!(matches!(
            CidrSet::new(&ClusterCidr::new("nope")),
            Err(Error::InvalidCidr(_))
        ));
        let mut v6 = CidrSet::new(&ClusterCidr::new("fd00:10:42::/56")).unwrap();
        assert_eq!(v6.allocate_next().as_deref(), Some("fd00:10:42::/64"));
        assert_eq!(v6.allocate_next().as_deref(), Some("fd00:10:42:1::/64"));
    }
}
