//! The pod network, host-gateway style (as flannel's host-gw backend in
//! k3s), with the standard CNI plugins from `/usr/lib/cni`:
//!
//! - [`write_conflist`]: the node's CNI config for containerd: a `kelson0`
//!   bridge that is the pods' gateway, host-local IPAM over the node's
//!   `spec.podCIDR`, and portmap for `hostPort`. Loopback needs no entry:
//!   containerd 1.6's CRI plugin always adds its own `cni-loopback` network
//!   (go-cni `WithLoNetwork`), which runs the `loopback` plugin found in
//!   the CNI bin dir.
//! - [`run_routes`]: for every other node, a route `podCIDR via InternalIP`
//!   so pods reach pods on other nodes without encapsulation (nodes share
//!   one L2 segment, as host-gw requires).
//! - Masquerade: traffic from pods to anything outside every node's pod
//!   range leaves with the node's address (one nftables rule, as flannel's
//!   ipMasq in k3s); pod-to-pod traffic, also across nodes, keeps the
//!   pod's address, as the Kubernetes network model requires. The bridge
//!   plugin's own `ipMasq` would NAT traffic to other nodes' pods too, and
//!   costs a chain of iptables rules per pod.
//! - [`detect_node_ip`]: the address the node is reached at.

pub mod router;

pub use router::{
    masquerade_script, FakeRouter, IpRouter, PodRoute, Router, NAT_TABLE, ROUTE_PROTO,
};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::runtime::{reflector, watcher, WatchStreamExt};
use kube::Api;
use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The CNI config file (containerd loads the first file of its conf dir).
pub const CONFLIST_NAME: &str = "10-kelson.conflist";
/// The network's name (CNI result caches and host-local's dir use it).
pub const NETWORK_NAME: &str = "kelson";
/// The Linux bridge pods are attached to.
pub const BRIDGE_NAME: &str = "kelson0";
/// CNI spec version of the conflist. containernetworking-plugins 1.1.1
/// (Debian) supports 0.1.0 through 1.0.0, and containerd 1.6's libcni reads
/// 1.0.0 configs.
pub const CNI_VERSION: &str = "1.0.0";
/// How often the route table is checked again without any Node change (a
/// route someone removed comes back).
const RESYNC: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("{0:?} is not a CIDR (want e.g. 10.42.1.0/24)")]
    Cidr(String),
    #[error("writing {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("running {command}: {source}")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{command} failed ({status}): {stderr}")]
    Command {
        command: String,
        status: String,
        stderr: String,
    },
    #[error("parsing {0}")]
    Parse(String),
    #[error("route worker stopped: {0}")]
    Join(String),
}

/// An IP network `addr/prefix` with the host bits cleared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    pub fn is_ipv6(&self) -> bool {
        self.addr.is_ipv6()
    }
}

impl FromStr for Cidr {
    type Err = NetworkError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || NetworkError::Cidr(s.to_string());
        let (addr, prefix) = s.trim().split_once('/').ok_or_else(bad)?;
        let addr: IpAddr = addr.parse().map_err(|_| bad())?;
        // Only decimal digits (u8's parser would take "+8").
        if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let prefix: u8 = prefix.parse().map_err(|_| bad())?;
        let addr = match addr {
            IpAddr::V4(a) if prefix <= 32 => {
                let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
                IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask))
            }
            IpAddr::V6(a) if prefix <= 128 => {
                let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
                IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask))
            }
            _ => return Err(bad()),
        };
        Ok(Cidr { addr, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// The node's CNI config: bridge (pods' gateway, masquerade to outside the
/// pod range, hairpin for a pod reaching itself through a Service) with
/// host-local IPAM over `pod_cidr`, then portmap for `hostPort`.
/// `ipam_data_dir` is host-local's allocation store.
pub fn conflist(pod_cidr: &str, ipam_data_dir: &Path) -> Result<serde_json::Value, NetworkError> {
    let cidr: Cidr = pod_cidr.parse()?;
    let default_route = if cidr.is_ipv6() { "::/0" } else { "0.0.0.0/0" };
    Ok(serde_json::json!({
        "cniVersion": CNI_VERSION,
        "name": NETWORK_NAME,
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE_NAME,
                "isGateway": true,
                "ipMasq": false,
                "hairpinMode": true,
                // A new podCIDR (node re-created) moves the bridge address.
                "forceAddress": true,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{ "subnet": cidr.to_string() }]],
                    "routes": [{ "dst": default_route }],
                    "dataDir": ipam_data_dir.to_string_lossy(),
                },
            },
            {
                "type": "portmap",
                "capabilities": { "portMappings": true },
                "snat": true,
            },
        ],
    }))
}

/// Writes [`conflist`] to `conf_dir/10-kelson.conflist` atomically (a
/// temporary file renamed over it: containerd watches the directory and
/// must never read half a file). Returns the file's path.
pub fn write_conflist(
    conf_dir: &Path,
    pod_cidr: &str,
    ipam_data_dir: &Path,
) -> Result<PathBuf, NetworkError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| NetworkError::Io { path, source }
    };
    let value = conflist(pod_cidr, ipam_data_dir)?;
    let text = serde_json::to_string_pretty(&value)
        .map_err(|e| NetworkError::Parse(format!("conflist: {e}")))?;
    std::fs::create_dir_all(conf_dir).map_err(io(conf_dir))?;
    std::fs::create_dir_all(ipam_data_dir).map_err(io(ipam_data_dir))?;
    let path = conf_dir.join(CONFLIST_NAME);
    // Not a .conf/.conflist/.json name: containerd ignores it meanwhile.
    let tmp = conf_dir.join(format!(".{CONFLIST_NAME}.tmp"));
    std::fs::write(&tmp, text + "\n").map_err(io(&tmp))?;
    std::fs::rename(&tmp, &path).map_err(io(&path))?;
    Ok(path)
}

/// A node's pod ranges: `spec.podCIDRs`, else `spec.podCIDR`.
fn pod_cidrs(node: &Node) -> Vec<String> {
    let Some(spec) = node.spec.as_ref() else {
        return Vec::new();
    };
    match &spec.pod_cidrs {
        Some(list) if !list.is_empty() => list.clone(),
        _ => spec.pod_cidr.iter().cloned().collect(),
    }
}

fn internal_ips(node: &Node) -> Vec<IpAddr> {
    node.status
        .as_ref()
        .and_then(|s| s.addresses.as_ref())
        .map(|addrs| {
            addrs
                .iter()
                .filter(|a| a.type_ == "InternalIP")
                .filter_map(|a| a.address.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The routes this node needs: each other node's pod range via its
/// InternalIP of the same family. A range claimed by two nodes goes to the
/// first by name. This node's own range needs none (it is on the bridge).
pub fn desired_routes<'a>(
    nodes: impl IntoIterator<Item = &'a Node>,
    self_name: &str,
) -> BTreeMap<Cidr, IpAddr> {
    let mut sorted: Vec<&Node> = nodes.into_iter().collect();
    sorted.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let mut out = BTreeMap::new();
    for node in sorted {
        if node.metadata.name.as_deref() == Some(self_name) {
            continue;
        }
        let ips = internal_ips(node);
        for cidr in pod_cidrs(node) {
            let Ok(cidr) = cidr.parse::<Cidr>() else {
                continue;
            };
            if let Some(ip) = ips.iter().find(|ip| ip.is_ipv6() == cidr.is_ipv6()) {
                out.entry(cidr).or_insert(*ip);
            }
        }
    }
    out
}

/// Every node's pod ranges (this node's too), without duplicates: what
/// pods may reach without being masqueraded.
pub fn cluster_pod_ranges<'a>(nodes: impl IntoIterator<Item = &'a Node>) -> Vec<Cidr> {
    let mut out: Vec<Cidr> = nodes
        .into_iter()
        .flat_map(pod_cidrs)
        .filter_map(|c| c.parse().ok())
        .collect();
    out.sort();
    out.dedup();
    out
}

/// A change to the routing table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RouteChange {
    /// Add, or replace a route with another gateway.
    Add(PodRoute),
    Del(Cidr),
}

/// What turns `current` (Kelson's routes now) into `desired`. Deletions
/// come first so a range that moved to another node never has two routes.
pub fn plan_routes(desired: &BTreeMap<Cidr, IpAddr>, current: &[PodRoute]) -> Vec<RouteChange> {
    let mut have: BTreeMap<Cidr, Vec<IpAddr>> = BTreeMap::new();
    for r in current {
        have.entry(r.dst).or_default().push(r.via);
    }
    let mut changes = Vec::new();
    for dst in have.keys() {
        if !desired.contains_key(dst) {
            changes.push(RouteChange::Del(*dst));
        }
    }
    for (dst, via) in desired {
        let up_to_date = have.get(dst).is_some_and(|v| v.as_slice() == [*via]);
        if !up_to_date {
            changes.push(RouteChange::Add(PodRoute {
                dst: *dst,
                via: *via,
            }));
        }
    }
    changes
}

/// Brings the router to `desired`; returns the changes made. Keeps going
/// past a failed change (one unreachable node must not block the others)
/// and returns the first error after trying them all.
pub fn reconcile_routes(
    router: &dyn Router,
    desired: &BTreeMap<Cidr, IpAddr>,
) -> Result<Vec<RouteChange>, NetworkError> {
    let current = router.list_routes()?;
    let changes = plan_routes(desired, &current);
    let mut first_err = None;
    let mut done = Vec::new();
    for change in changes {
        let result = match &change {
            RouteChange::Add(r) => router.add_route(r),
            RouteChange::Del(dst) => router.del_route(dst),
        };
        match result {
            Ok(()) => done.push(change),
            Err(e) => {
                tracing::warn!(?change, error = %e, "pod route change failed");
                first_err.get_or_insert(e);
            }
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(done),
    }
}

/// Keeps the routes to other nodes' pods in step with the Nodes until
/// `cancel`. Routes stay in place when it stops (pods keep talking while
/// the agent restarts); a restarted agent removes those whose node is gone.
pub async fn run_routes(
    client: kube::Client,
    node_name: String,
    router: Arc<dyn Router>,
    cancel: CancellationToken,
) {
    let api: Api<Node> = Api::all(client);
    let (reader, writer) = reflector::store::<Node>();
    let stream = reflector(
        writer,
        watcher(api, watcher::Config::default()).default_backoff(),
    );
    let mut stream = std::pin::pin!(stream);
    // Until the first full list the store is incomplete: reconciling then
    // would delete the routes of nodes not yet seen.
    let mut synced = false;
    // The pod ranges the masquerade rule was last written for.
    let mut masquerading: Option<Vec<Cidr>> = None;
    let mut tick = tokio::time::interval(RESYNC);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let reconcile = tokio::select! {
            _ = cancel.cancelled() => break,
            ev = stream.next() => match ev {
                Some(Ok(watcher::Event::InitDone)) => { synced = true; true }
                Some(Ok(watcher::Event::Apply(_) | watcher::Event::Delete(_))) => synced,
                Some(Ok(_)) => false,
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "watching nodes for pod routes");
                    false
                }
                None => break,
            },
            _ = tick.tick() => synced,
        };
        if !reconcile {
            continue;
        }
        let nodes = reader.state();
        let desired = desired_routes(nodes.iter().map(|n| n.as_ref()), &node_name);
        let ranges = cluster_pod_ranges(nodes.iter().map(|n| n.as_ref()));
        if masquerading.as_ref() != Some(&ranges) {
            let r = router.clone();
            let want = ranges.clone();
            match tokio::task::spawn_blocking(move || r.set_masquerade(&want)).await {
                Ok(Ok(())) => {
                    tracing::info!(ranges = ?ranges, "pod masquerade updated");
                    masquerading = Some(ranges);
                }
                // The next tick retries.
                Ok(Err(e)) => tracing::warn!(error = %e, "setting the pod masquerade"),
                Err(e) => tracing::warn!(error = %e, "pod masquerade worker failed"),
            }
        }
        let router = router.clone();
        let result =
            tokio::task::spawn_blocking(move || reconcile_routes(router.as_ref(), &desired)).await;
        match result {
            Ok(Ok(changes)) => {
                for c in changes {
                    tracing::info!(change = ?c, "pod route updated");
                }
            }
            // Logged per change; the next tick retries.
            Ok(Err(_)) => {}
            Err(e) => tracing::warn!(error = %e, "pod route worker failed"),
        }
    }
}

/// Waits until this node's Node has a pod range (the node IPAM controller
/// assigns it after the kubelet registers the node); `None` on cancel.
pub async fn wait_for_pod_cidr(
    client: kube::Client,
    node_name: &str,
    cancel: &CancellationToken,
) -> Option<String> {
    let api: Api<Node> = Api::all(client);
    let mut logged = false;
    loop {
        match api.get_opt(node_name).await {
            Ok(Some(node)) => {
                if let Some(cidr) = pod_cidrs(&node)
                    .into_iter()
                    .find(|c| c.parse::<Cidr>().is_ok())
                {
                    return Some(cidr);
                }
            }
            Ok(None) => {}
            Err(e) => tracing::debug!(error = %e, "reading own Node"),
        }
        if !logged {
            tracing::info!(node = node_name, "waiting for the node's podCIDR");
            logged = true;
        }
        tokio::select! {
            _ = cancel.cancelled() => return None,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// The source address of the default route, from `ip -j route get`
/// output.
pub fn parse_route_get(json: &str) -> Option<IpAddr> {
    let v: serde_json::Value = serde_json::from_str(json.trim()).ok()?;
    v.as_array()?
        .iter()
        .find_map(|r| r["prefsrc"].as_str()?.parse().ok())
}

/// The first global IPv4 address in `ip -j -4 addr show` output, skipping
/// loopback.
pub fn parse_addr_show(json: &str) -> Option<IpAddr> {
    let v: serde_json::Value = serde_json::from_str(json.trim()).ok()?;
    v.as_array()?.iter().find_map(|link| {
        link["addr_info"].as_array()?.iter().find_map(|a| {
            if a["family"].as_str() != Some("inet") {
                return None;
            }
            let ip: Ipv4Addr = a["local"].as_str()?.parse().ok()?;
            (!ip.is_loopback()).then_some(IpAddr::V4(ip))
        })
    })
}

fn ip_json(args: &[&str]) -> Option<String> {
    let out = std::process::Command::new("ip").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The node's address: the source address the kernel picks for the
/// default route (`ip route get` only consults the table, it sends
/// nothing), else the first non-loopback IPv4 address; `None` when there
/// is neither (callers then use 127.0.0.1).
pub fn detect_node_ip() -> Option<IpAddr> {
    ip_json(&["-j", "-4", "route", "get", "1.1.1.1"])
        .and_then(|j| parse_route_get(&j))
        .or_else(|| ip_json(&["-j", "-4", "addr", "show"]).and_then(|j| parse_addr_show(&j)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeAddress, NodeSpec, NodeStatus};

    fn node(name: &str, cidrs: &[&str], ips: &[(&str, &str)]) -> Node {
        Node {
            metadata: kube::api::ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            spec: Some(NodeSpec {
                pod_cidr: cidrs.first().map(|s| s.to_string()),
                pod_cidrs: Some(cidrs.iter().map(|s| s.to_string()).collect()),
                ..Default::default()
            }),
            status: Some(NodeStatus {
                addresses: Some(
                    ips.iter()
                        .map(|(t, a)| NodeAddress {
                            type_: t.to_string(),
                            address: a.to_string(),
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
        }
    }

    fn cidr(s: &str) -> Cidr {
        s.parse().expect("cidr")
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn cidrs_parse_and_normalise() {
        assert_eq!(cidr("10.42.1.7/24").to_string(), "10.42.1.0/24");
        assert_eq!(cidr("10.42.1.0/24").prefix(), 24);
        assert_eq!(cidr("0.0.0.0/0").to_string(), "0.0.0.0/0");
        assert_eq!(cidr("fd00:1:2::5/64").to_string(), "fd00:1:2::/64");
        assert!(cidr("fd00::/64").is_ipv6());
        for bad in [
            "10.42.1.0",
            "10.42.1.0/33",
            "x/24",
            "10.0.0.0/+8",
            "::/129",
            "/8",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn conflist_content() {
        let v = conflist(
            "10.42.3.0/24",
            Path::new("/var/lib/kelson/agent/cni/networks"),
        )
        .expect("conflist");
        assert_eq!(v["cniVersion"], "1.0.0");
        assert_eq!(v["name"], "kelson");
        let bridge = &v["plugins"][0];
        assert_eq!(bridge["type"], "bridge");
        assert_eq!(bridge["bridge"], "kelson0");
        assert_eq!(bridge["isGateway"], true);
        assert_eq!(bridge["ipMasq"], false);
        assert_eq!(bridge["hairpinMode"], true);
        assert_eq!(bridge["ipam"]["type"], "host-local");
        assert_eq!(bridge["ipam"]["ranges"][0][0]["subnet"], "10.42.3.0/24");
        assert_eq!(bridge["ipam"]["routes"][0]["dst"], "0.0.0.0/0");
        assert_eq!(
            bridge["ipam"]["dataDir"],
            "/var/lib/kelson/agent/cni/networks"
        );
        let portmap = &v["plugins"][1];
        assert_eq!(portmap["type"], "portmap");
        assert_eq!(portmap["capabilities"]["portMappings"], true);
        assert_eq!(portmap["snat"], true);
        assert_eq!(v["plugins"].as_array().map(Vec::len), Some(2));

        let v6 = conflist("fd00:42:1::/64", Path::new("/d")).expect("v6");
        assert_eq!(v6["plugins"][0]["ipam"]["routes"][0]["dst"], "::/0");
        assert!(conflist("10.42.3.0", Path::new("/d")).is_err());
    }

    #[test]
    fn conflist_is_written_atomically() {
        let dir = tempfile::tempdir().expect("tempdir");
        let conf = dir.path().join("net.d");
        let ipam = dir.path().join("networks");
        let path = write_conflist(&conf, "10.42.3.0/24", &ipam).expect("write");
        assert_eq!(path, conf.join("10-kelson.conflist"));
        let text = std::fs::read_to_string(&path).expect("read");
        let v: serde_json::Value = serde_json::from_str(&text).expect("json");
        assert_eq!(
            v["plugins"][0]["ipam"]["ranges"][0][0]["subnet"],
            "10.42.3.0/24"
        );
        // Rewritten in place for a new range; no temporary file left.
        write_conflist(&conf, "10.42.4.0/24", &ipam).expect("rewrite");
        let names: Vec<_> = std::fs::read_dir(&conf)
            .expect("ls")
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("10-kelson.conflist")]);
        assert!(ipam.is_dir());
        assert!(std::fs::read_to_string(&path)
            .expect("read")
            .contains("10.42.4.0/24"));
    }

    #[test]
    fn desired_routes_skip_self_and_incomplete_nodes() {
        let nodes = vec![
            node("a", &["10.42.0.0/24"], &[("InternalIP", "192.0.2.10")]),
            node(
                "b",
                &["10.42.1.0/24"],
                &[("Hostname", "b"), ("InternalIP", "192.0.2.11")],
            ),
            // No pod range yet.
            node("c", &[], &[("InternalIP", "192.0.2.12")]),
            // No InternalIP.
            node("d", &["10.42.3.0/24"], &[("ExternalIP", "203.0.113.1")]),
            // Dual stack: each range via the address of its family.
            node(
                "e",
                &["10.42.4.0/24", "fd00:42:4::/64"],
                &[("InternalIP", "192.0.2.14"), ("InternalIP", "2001:db8::14")],
            ),
        ];
        let want: BTreeMap<Cidr, IpAddr> = [
            (cidr("10.42.1.0/24"), ip("192.0.2.11")),
            (cidr("10.42.4.0/24"), ip("192.0.2.14")),
            (cidr("fd00:42:4::/64"), ip("2001:db8::14")),
        ]
        .into_iter()
        .collect();
        assert_eq!(desired_routes(&nodes, "a"), want);
    }

    #[test]
    fn pod_ranges_of_every_node_are_exempt_from_masquerade() {
        let nodes = [
            node("b", &["10.42.1.0/24"], &[("InternalIP", "192.0.2.2")]),
            node("a", &["10.42.0.0/24"], &[("InternalIP", "192.0.2.1")]),
            // Not assigned a range yet, or a claimed range seen twice.
            node("c", &[], &[("InternalIP", "192.0.2.3")]),
            node("d", &["10.42.1.0/24"], &[]),
        ];
        assert_eq!(
            cluster_pod_ranges(nodes.iter()),
            vec![cidr("10.42.0.0/24"), cidr("10.42.1.0/24")]
        );
    }

    #[test]
    fn a_range_claimed_twice_goes_to_the_first_node_by_name() {
        let nodes = vec![
            node("z", &["10.42.1.0/24"], &[("InternalIP", "192.0.2.26")]),
            node("m", &["10.42.1.0/24"], &[("InternalIP", "192.0.2.13")]),
        ];
        assert_eq!(
            desired_routes(&nodes, "self").get(&cidr("10.42.1.0/24")),
            Some(&ip("192.0.2.13"))
        );
    }

    #[test]
    fn plan_adds_replaces_and_deletes() {
        let desired: BTreeMap<Cidr, IpAddr> = [
            (cidr("10.42.1.0/24"), ip("192.0.2.11")),
            (cidr("10.42.2.0/24"), ip("192.0.2.99")),
            (cidr("10.42.3.0/24"), ip("192.0.2.13")),
        ]
        .into_iter()
        .collect();
        let current = vec![
            PodRoute {
                dst: cidr("10.42.1.0/24"),
                via: ip("192.0.2.11"),
            },
            PodRoute {
                dst: cidr("10.42.2.0/24"),
                via: ip("192.0.2.12"),
            },
            PodRoute {
                dst: cidr("10.42.9.0/24"),
                via: ip("192.0.2.19"),
            },
        ];
        assert_eq!(
            plan_routes(&desired, &current),
            vec![
                RouteChange::Del(cidr("10.42.9.0/24")),
                RouteChange::Add(PodRoute {
                    dst: cidr("10.42.2.0/24"),
                    via: ip("192.0.2.99"),
                }),
                RouteChange::Add(PodRoute {
                    dst: cidr("10.42.3.0/24"),
                    via: ip("192.0.2.13"),
                }),
            ]
        );
        // In step: nothing to do.
        let current: Vec<PodRoute> = desired
            .iter()
            .map(|(d, v)| PodRoute { dst: *d, via: *v })
            .collect();
        assert!(plan_routes(&desired, &current).is_empty());
    }

    #[test]
    fn reconcile_with_the_fake_router() {
        let router = FakeRouter::new();
        // Left over from a node that is gone.
        router.preload(PodRoute {
            dst: cidr("10.42.7.0/24"),
            via: ip("192.0.2.17"),
        });
        let mut nodes = vec![
            node("self", &["10.42.0.0/24"], &[("InternalIP", "192.0.2.10")]),
            node("b", &["10.42.1.0/24"], &[("InternalIP", "192.0.2.11")]),
        ];
        let desired = desired_routes(&nodes, "self");
        reconcile_routes(&router, &desired).expect("reconcile");
        assert_eq!(
            router.calls(),
            vec!["del 10.42.7.0/24", "add 10.42.1.0/24 via 192.0.2.11"]
        );
        // Node b changes address: the route is replaced.
        nodes[1] = node("b", &["10.42.1.0/24"], &[("InternalIP", "192.0.2.21")]);
        reconcile_routes(&router, &desired_routes(&nodes, "self")).expect("reconcile");
        assert_eq!(
            router.routes().get(&cidr("10.42.1.0/24")),
            Some(&ip("192.0.2.21"))
        );
        // Node b goes away.
        nodes.pop();
        reconcile_routes(&router, &desired_routes(&nodes, "self")).expect("reconcile");
        assert!(router.routes().is_empty());
        // A failing add is reported; the next pass retries it.
        nodes.push(node(
            "c",
            &["10.42.2.0/24"],
            &[("InternalIP", "192.0.2.12")],
        ));
        router.fail_adds(true);
        assert!(reconcile_routes(&router, &desired_routes(&nodes, "self")).is_err());
        router.fail_adds(false);
        let done = reconcile_routes(&router, &desired_routes(&nodes, "self")).expect("retry");
        assert_eq!(done.len(), 1);
    }

    #[test]
    fn node_ip_from_route_get() {
        let json = r#"[{"dst":"1.1.1.1","gateway":"192.0.2.1","dev":"eth0","prefsrc":"192.0.2.2","flags":[],"uid":0,"cache":[]}]"#;
        assert_eq!(parse_route_get(json), Some(ip("192.0.2.2")));
        // No default route: `ip route get` fails, or prints no prefsrc.
        assert_eq!(parse_route_get("[]"), None);
        assert_eq!(parse_route_get(""), None);
    }

    #[test]
    fn node_ip_from_addr_show_skips_loopback() {
        let json = r#"[
          {"ifindex":1,"ifname":"lo","addr_info":[{"family":"inet","local":"127.0.0.1","prefixlen":8}]},
          {"ifindex":2,"ifname":"eth0","addr_info":[{"family":"inet6","local":"fe80::1","prefixlen":64},
                                                    {"family":"inet","local":"198.51.100.7","prefixlen":24}]}
        ]"#;
        assert_eq!(parse_addr_show(json), Some(ip("198.51.100.7")));
        assert_eq!(
            parse_addr_show(
                r#"[{"ifname":"lo","addr_info":[{"family":"inet","local":"127.0.0.1"}]}]"#
            ),
            None
        );
    }
}
