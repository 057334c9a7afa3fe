//! Host routes to other nodes' pod ranges, behind [`Router`] so the
//! controller can be tested without touching the host's routing table.
//!
//! The real [`IpRouter`] drives iproute2 (`ip route replace/del/show`) and
//! marks every route it adds with the routing protocol number
//! [`ROUTE_PROTO`]: `ip route show proto 75` then lists exactly Kelson's
//! routes, so stale ones can be found and removed after a restart. The
//! pods' masquerade rule lives in its own nftables table, [`NAT_TABLE`],
//! written whole in one `nft -f` transaction.

use super::{Cidr, NetworkError};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::process::Command;
use std::sync::Mutex;

/// The `proto` of Kelson's routes (0x4b, "K"). Unassigned in the kernel's
/// and iproute2's tables (kernel 2, boot 3, static 4, dhcp 16, babel 42,
/// bgp 186...).
pub const ROUTE_PROTO: u8 = 0x4b;

/// The nftables table (family `inet`) holding the pods' masquerade.
pub const NAT_TABLE: &str = "kelson-nat";

/// One route: the pod range `dst` through the node address `via`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct PodRoute {
    pub dst: Cidr,
    pub via: IpAddr,
}

/// The routing table, as far as Kelson's routes go. Calls block (they run
/// commands); async callers use `spawn_blocking`.
pub trait Router: Send + Sync + 'static {
    /// Adds the route, or replaces the one to the same destination.
    fn add_route(&self, route: &PodRoute) -> Result<(), NetworkError>;
    /// Removes Kelson's route to `dst` (a missing route is no error).
    fn del_route(&self, dst: &Cidr) -> Result<(), NetworkError>;
    /// Kelson's routes currently in the table.
    fn list_routes(&self) -> Result<Vec<PodRoute>, NetworkError>;
    /// `net.ipv4.ip_forward = 1`: pods' traffic is routed through the node.
    fn enable_ip_forward(&self) -> Result<(), NetworkError>;
    /// Masquerades traffic from `pod_ranges` to addresses outside them,
    /// replacing what an earlier call set.
    fn set_masquerade(&self, pod_ranges: &[Cidr]) -> Result<(), NetworkError>;
}

/// The `nft -f` script for [`Router::set_masquerade`]: it creates the
/// table if missing, then deletes and rewrites it, all in one transaction,
/// so there is never a moment without the rule. Multicast is left alone,
/// as flannel does.
pub fn masquerade_script(pod_ranges: &[Cidr]) -> String {
    let mut s = format!("table inet {NAT_TABLE} {{}}\ndelete table inet {NAT_TABLE}\n");
    s.push_str(&format!("table inet {NAT_TABLE} {{\n"));
    let families = [
        ("v4", "ipv4_addr", "ip", "224.0.0.0/4", false),
        ("v6", "ipv6_addr", "ip6", "ff00::/8", true),
    ];
    let mut rules = Vec::new();
    for (tag, ty, kw, multicast, v6) in families {
        let ranges: Vec<String> = pod_ranges
            .iter()
            .filter(|c| c.is_ipv6() == v6)
            .map(|c| c.to_string())
            .collect();
        if ranges.is_empty() {
            continue;
        }
        s.push_str(&format!(
            "  set pod-ranges-{tag} {{\n    type {ty}; flags interval; auto-merge\n    elements = {{ {} }}\n  }}\n",
            ranges.join(", ")
        ));
        rules.push(format!(
            "    {kw} saddr @pod-ranges-{tag} {kw} daddr != @pod-ranges-{tag} {kw} daddr != {multicast} masquerade\n"
        ));
    }
    s.push_str(
        "  chain postrouting {\n    type nat hook postrouting priority srcnat; policy accept;\n",
    );
    for r in rules {
        s.push_str(&r);
    }
    s.push_str("  }\n}\n");
    s
}

/// The host's routing table through iproute2, optionally inside a named
/// network namespace (`ip -n NAME`; tests use one of their own).
#[derive(Clone, Debug, Default)]
pub struct IpRouter {
    netns: Option<String>,
}

impl IpRouter {
    /// The routing table of this process's network namespace.
    pub fn host() -> Self {
        IpRouter { netns: None }
    }

    /// The routing table of the named namespace (`ip netns add NAME`).
    pub fn in_netns(name: impl Into<String>) -> Self {
        IpRouter {
            netns: Some(name.into()),
        }
    }

    fn ip(&self, args: &[&str]) -> Result<String, NetworkError> {
        let mut cmd = Command::new("ip");
        if let Some(ns) = &self.netns {
            cmd.arg("-n").arg(ns);
        }
        cmd.args(args);
        run(cmd, &format!("ip {}", args.join(" ")))
    }
}

fn run(mut cmd: Command, what: &str) -> Result<String, NetworkError> {
    let out = cmd.output().map_err(|source| NetworkError::Spawn {
        command: what.to_string(),
        source,
    })?;
    if !out.status.success() {
        return Err(NetworkError::Command {
            command: what.to_string(),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Routes in `ip -j route show` output; entries without a gateway (not
/// ours to manage) are skipped.
pub fn parse_route_list(json: &str, ipv6: bool) -> Result<Vec<PodRoute>, NetworkError> {
    let text = json.trim();
    if text.is_empty() {
        return Ok(Vec::new());
    }
    let entries: Vec<serde_json::Value> =
        serde_json::from_str(text).map_err(|e| NetworkError::Parse(format!("ip -j route: {e}")))?;
    let mut out = Vec::new();
    for e in entries {
        let (Some(dst), Some(gw)) = (e["dst"].as_str(), e["gateway"].as_str()) else {
            continue;
        };
        // A host route is printed without its prefix length.
        let dst = if dst.contains('/') {
            dst.to_string()
        } else if ipv6 {
            format!("{dst}/128")
        } else {
            format!("{dst}/32")
        };
        let (Ok(dst), Ok(via)) = (dst.parse::<Cidr>(), gw.parse::<IpAddr>()) else {
            continue;
        };
        out.push(PodRoute { dst, via });
    }
    Ok(out)
}

impl Router for IpRouter {
    fn add_route(&self, route: &PodRoute) -> Result<(), NetworkError> {
        let family = if route.dst.is_ipv6() { "-6" } else { "-4" };
        self.ip(&[
            family,
            "route",
            "replace",
            &route.dst.to_string(),
            "via",
            &route.via.to_string(),
            "proto",
            &ROUTE_PROTO.to_string(),
        ])
        .map(drop)
    }

    fn del_route(&self, dst: &Cidr) -> Result<(), NetworkError> {
        let family = if dst.is_ipv6() { "-6" } else { "-4" };
        match self.ip(&[
            family,
            "route",
            "del",
            &dst.to_string(),
            "proto",
            &ROUTE_PROTO.to_string(),
        ]) {
            Ok(_) => Ok(()),
            // Already gone.
            Err(NetworkError::Command { stderr, .. }) if stderr.contains("No such process") => {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    fn list_routes(&self) -> Result<Vec<PodRoute>, NetworkError> {
        let proto = ROUTE_PROTO.to_string();
        let mut routes = parse_route_list(
            &self.ip(&["-j", "-4", "route", "show", "proto", &proto])?,
            false,
        )?;
        // A host without IPv6 refuses `-6` listings: nothing of ours there.
        if let Ok(v6) = self.ip(&["-j", "-6", "route", "show", "proto", &proto]) {
            routes.extend(parse_route_list(&v6, true)?);
        }
        Ok(routes)
    }

    fn enable_ip_forward(&self) -> Result<(), NetworkError> {
        const KEY: &str = "/proc/sys/net/ipv4/ip_forward";
        match &self.netns {
            None => {
                if std::fs::read_to_string(KEY).is_ok_and(|v| v.trim() == "1") {
                    return Ok(());
                }
                std::fs::write(KEY, "1").map_err(|source| NetworkError::Io {
                    path: KEY.into(),
                    source,
                })
            }
            // /proc/sys/net is per network namespace: write it from inside.
            Some(ns) => {
                let mut cmd = Command::new("ip");
                cmd.args(["netns", "exec", ns, "sh", "-c"])
                    .arg(format!("echo 1 > {KEY}"));
                run(cmd, &format!("ip netns exec {ns} (ip_forward=1)")).map(drop)
            }
        }
    }

    fn set_masquerade(&self, pod_ranges: &[Cidr]) -> Result<(), NetworkError> {
        use std::io::Write;
        let mut cmd = match &self.netns {
            None => Command::new("nft"),
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "nft"]);
                c
            }
        };
        cmd.args(["-f", "-"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let what = "nft -f - (pod masquerade)";
        let spawn = |source| NetworkError::Spawn {
            command: what.to_string(),
            source,
        };
        let mut child = cmd.spawn().map_err(spawn)?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(masquerade_script(pod_ranges).as_bytes())
                .map_err(spawn)?;
        }
        let out = child.wait_with_output().map_err(spawn)?;
        if !out.status.success() {
            return Err(NetworkError::Command {
                command: what.to_string(),
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(())
    }
}

/// An in-memory routing table for tests; records every change.
#[derive(Debug, Default)]
pub struct FakeRouter {
    state: Mutex<FakeState>,
}

#[derive(Debug, Default)]
struct FakeState {
    routes: BTreeMap<Cidr, IpAddr>,
    forwarding: bool,
    masquerade: Option<Vec<Cidr>>,
    calls: Vec<String>,
    fail_adds: bool,
}

impl FakeRouter {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FakeState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The table now.
    pub fn routes(&self) -> BTreeMap<Cidr, IpAddr> {
        self.lock().routes.clone()
    }

    /// Changes made, as `add DST via GW` / `del DST`.
    pub fn calls(&self) -> Vec<String> {
        self.lock().calls.clone()
    }

    pub fn forwarding(&self) -> bool {
        self.lock().forwarding
    }

    /// The pod ranges last masqueraded, if any call set them.
    pub fn masquerade(&self) -> Option<Vec<Cidr>> {
        self.lock().masquerade.clone()
    }

    /// Puts a route in place as if an earlier run had added it.
    pub fn preload(&self, route: PodRoute) {
        self.lock().routes.insert(route.dst, route.via);
    }

    /// Makes `add_route` fail (an unreachable gateway, say).
    pub fn fail_adds(&self, fail: bool) {
        self.lock().fail_adds = fail;
    }
}

impl Router for FakeRouter {
    fn add_route(&self, route: &PodRoute) -> Result<(), NetworkError> {
        let mut s = self.lock();
        if s.fail_adds {
            return Err(NetworkError::Command {
                command: format!("add {}", route.dst),
                status: "exit status: 2".into(),
                stderr: "Error: Nexthop has invalid gateway.".into(),
            });
        }
        s.calls.push(format!("add {} via {}", route.dst, route.via));
        s.routes.insert(route.dst, route.via);
        Ok(())
    }

    fn del_route(&self, dst: &Cidr) -> Result<(), NetworkError> {
        let mut s = self.lock();
        s.calls.push(format!("del {dst}"));
        s.routes.remove(dst);
        Ok(())
    }

    fn list_routes(&self) -> Result<Vec<PodRoute>, NetworkError> {
        Ok(self
            .lock()
            .routes
            .iter()
            .map(|(dst, via)| PodRoute {
                dst: *dst,
                via: *via,
            })
            .collect())
    }

    fn enable_ip_forward(&self) -> Result<(), NetworkError> {
        self.lock().forwarding = true;
        Ok(())
    }

    fn set_masquerade(&self, pod_ranges: &[Cidr]) -> Result<(), NetworkError> {
        self.lock().masquerade = Some(pod_ranges.to_vec());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ip_route_json() {
        let json = r#"[{"dst":"10.42.1.0/24","gateway":"192.0.2.5","dev":"eth0","flags":[]},
                       {"dst":"10.42.9.7","gateway":"192.0.2.9","dev":"eth0","flags":[]},
                       {"dst":"10.42.0.0/24","dev":"kelson0","prefsrc":"10.42.0.1","flags":[]}]"#;
        let routes = parse_route_list(json, false).expect("parse");
        assert_eq!(
            routes,
            vec![
                PodRoute {
                    dst: "10.42.1.0/24".parse().expect("cidr"),
                    via: "192.0.2.5".parse().expect("ip"),
                },
                PodRoute {
                    dst: "10.42.9.7/32".parse().expect("cidr"),
                    via: "192.0.2.9".parse().expect("ip"),
                },
            ]
        );
        assert!(parse_route_list("", false).expect("empty").is_empty());
        assert!(parse_route_list("not json", false).is_err());
    }

    #[test]
    fn masquerade_script_skips_pod_ranges_and_multicast() {
        let ranges: Vec<Cidr> = ["10.42.0.0/24", "10.42.1.0/24", "fd00:42::/64"]
            .iter()
            .map(|c| c.parse().expect("cidr"))
            .collect();
        let s = masquerade_script(&ranges);
        assert!(s.starts_with("table inet kelson-nat {}\ndelete table inet kelson-nat\n"));
        assert!(
            s.contains("elements = { 10.42.0.0/24, 10.42.1.0/24 }"),
            "{s}"
        );
        assert!(s.contains("elements = { fd00:42::/64 }"), "{s}");
        assert!(s.contains(
            "ip saddr @pod-ranges-v4 ip daddr != @pod-ranges-v4 ip daddr != 224.0.0.0/4 masquerade"
        ));
        assert!(s.contains("ip6 saddr @pod-ranges-v6 ip6 daddr != @pod-ranges-v6"));
        assert!(s.contains("type nat hook postrouting priority srcnat"));
        // No ranges yet: the chain is there but masquerades nothing.
        let empty = masquerade_script(&[]);
        assert!(!empty.contains("masquerade"), "{empty}");
        assert!(!empty.contains("set "), "{empty}");
    }

    #[test]
    fn fake_records_changes() {
        let r = FakeRouter::new();
        let route = PodRoute {
            dst: "10.42.1.0/24".parse().expect("cidr"),
            via: "192.0.2.5".parse().expect("ip"),
        };
        r.add_route(&route).expect("add");
        assert_eq!(r.list_routes().expect("list"), vec![route.clone()]);
        r.del_route(&route.dst).expect("del");
        assert!(r.routes().is_empty());
        assert_eq!(
            r.calls(),
            vec!["add 10.42.1.0/24 via 192.0.2.5", "del 10.42.1.0/24"]
        );
    }
}
