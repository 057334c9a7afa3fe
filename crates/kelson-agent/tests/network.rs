//! The pod network against the real kernel (needs root and `ip`; the CNI
//! test also the plugins in /usr/lib/cni): the iproute2 router, and the
//! bridge plugin run with our conflist. Everything happens inside network
//! namespaces the tests create and delete, so the host is never touched.

use kelson_agent::network::{self, Cidr, IpRouter, PodRoute, Router, ROUTE_PROTO};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::process::Command;

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

fn ip(args: &[&str]) -> Result<String, String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip {args:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "ip {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A network namespace with a veth pair (192.0.2.1/24 on one end), deleted
/// on drop, also after a failed assertion.
struct Netns {
    name: String,
}

impl Netns {
    /// An empty namespace with lo up.
    fn empty(tag: &str) -> Result<Netns, String> {
        let name = format!("kelson-{tag}-{}", std::process::id());
        ip(&["netns", "add", &name])?;
        let ns = Netns { name };
        ip(&["-n", &ns.name, "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    fn create() -> Result<Netns, String> {
        let name = format!("kelson-rt-{}", std::process::id());
        ip(&["netns", "add", &name])?;
        // From here on, Drop removes it.
        let ns = Netns { name };
        let n = ns.name.as_str();
        ip(&["-n", n, "link", "set", "lo", "up"])?;
        ip(&[
            "-n", n, "link", "add", "kv0", "type", "veth", "peer", "name", "kv1",
        ])?;
        ip(&["-n", n, "addr", "add", "192.0.2.1/24", "dev", "kv0"])?;
        ip(&["-n", n, "link", "set", "kv0", "up"])?;
        ip(&["-n", n, "link", "set", "kv1", "up"])?;
        Ok(ns)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(e) = ip(&["netns", "del", &self.name]) {
            eprintln!("cleanup: {e}");
        }
    }
}

fn cidr(s: &str) -> Cidr {
    s.parse().expect("cidr")
}

fn addr(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

#[test]
fn routes_in_a_private_netns() {
    if !is_root() {
        eprintln!("skipped: needs root (network namespaces)");
        return;
    }
    let ns = Netns::create().expect("netns");
    let router = IpRouter::in_netns(&ns.name);

    // A route that is not Kelson's: never listed, never removed.
    ip(&[
        "-n",
        &ns.name,
        "route",
        "add",
        "10.99.0.0/24",
        "via",
        "192.0.2.99",
    ])
    .expect("foreign route");
    assert!(router.list_routes().expect("list").is_empty());

    let r1 = PodRoute {
        dst: cidr("10.42.1.0/24"),
        via: addr("192.0.2.11"),
    };
    router.add_route(&r1).expect("add");
    assert_eq!(router.list_routes().expect("list"), vec![r1.clone()]);
    // Tagged with Kelson's protocol number in the kernel's table.
    let shown = ip(&["-n", &ns.name, "route", "show", "10.42.1.0/24"]).expect("show");
    assert!(shown.contains(&format!("proto {ROUTE_PROTO}")), "{shown:?}");

    // Replacing moves the gateway; adding twice is not an error.
    let r1b = PodRoute {
        via: addr("192.0.2.12"),
        ..r1.clone()
    };
    router.add_route(&r1b).expect("replace");
    router.add_route(&r1b).expect("replace again");
    assert_eq!(router.list_routes().expect("list"), vec![r1b.clone()]);

    // Reconcile: a new node's range appears, the old one goes.
    let desired: BTreeMap<Cidr, IpAddr> = [(cidr("10.42.2.0/24"), addr("192.0.2.13"))]
        .into_iter()
        .collect();
    network::reconcile_routes(&router, &desired).expect("reconcile");
    assert_eq!(
        router.list_routes().expect("list"),
        vec![PodRoute {
            dst: cidr("10.42.2.0/24"),
            via: addr("192.0.2.13"),
        }]
    );
    // Deleting a route that is gone is fine.
    router
        .del_route(&cidr("10.42.1.0/24"))
        .expect("del missing");
    // The foreign route survived.
    let all = ip(&["-n", &ns.name, "route", "show"]).expect("show");
    assert!(all.contains("10.99.0.0/24 via 192.0.2.99"), "{all:?}");

    // An unreachable gateway is an error, not a panic.
    assert!(router
        .add_route(&PodRoute {
            dst: cidr("10.42.3.0/24"),
            via: addr("198.51.100.1"),
        })
        .is_err());

    // Forwarding is per namespace.
    router.enable_ip_forward().expect("ip_forward");
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns.name,
            "cat",
            "/proc/sys/net/ipv4/ip_forward",
        ])
        .output()
        .expect("read ip_forward");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1");
}

fn nft_in(ns: &Netns, args: &[&str]) -> String {
    let out = Command::new("ip")
        .args(["netns", "exec", &ns.name, "nft"])
        .args(args)
        .output()
        .expect("nft");
    assert!(
        out.status.success(),
        "nft {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn masquerade_rule_in_a_private_netns() {
    if !is_root() {
        eprintln!("skipped: needs root (network namespaces)");
        return;
    }
    let ns = Netns::empty("masq").expect("netns");
    let router = IpRouter::in_netns(&ns.name);

    router
        .set_masquerade(&[cidr("10.42.0.0/24"), cidr("10.42.2.0/24")])
        .expect("first");
    let table = nft_in(&ns, &["list", "table", "inet", network::NAT_TABLE]);
    assert!(
        table.contains("10.42.0.0/24") && table.contains("10.42.2.0/24"),
        "{table}"
    );
    assert!(
        table.contains("ip saddr @pod-ranges-v4 ip daddr != @pod-ranges-v4"),
        "{table}"
    );

    // A node left: its range is no longer exempt, and the rule is there
    // once, not twice.
    router
        .set_masquerade(&[cidr("10.42.0.0/24")])
        .expect("second");
    let table = nft_in(&ns, &["list", "table", "inet", network::NAT_TABLE]);
    assert!(!table.contains("10.42.2.0/24"), "{table}");
    assert_eq!(table.matches("masquerade").count(), 1, "{table}");
    let ruleset = nft_in(&ns, &["list", "tables"]);
    assert_eq!(ruleset.trim(), format!("table inet {}", network::NAT_TABLE));
}

/// Runs a CNI plugin inside the netns `host` with `config` on stdin.
fn cni(
    host: &Netns,
    command: &str,
    plugin: &str,
    pod: &Netns,
    config: &serde_json::Value,
) -> Result<serde_json::Value, String> {
    use std::io::Write;
    let mut child = Command::new("ip")
        .args(["netns", "exec", &host.name])
        .arg(format!("/usr/lib/cni/{plugin}"))
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", "kelson-test")
        .env("CNI_NETNS", format!("/run/netns/{}", pod.name))
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", "/usr/lib/cni")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("{plugin}: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(config.to_string().as_bytes())
            .map_err(|e| format!("{plugin} stdin: {e}"))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("{plugin}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{plugin} {command}: {} {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    if out.stdout.is_empty() {
        return Ok(serde_json::Value::Null);
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("{plugin} output: {e}"))
}

/// One plugin's config out of a conflist, as libcni hands it over.
fn plugin_config(list: &serde_json::Value, i: usize) -> serde_json::Value {
    let mut conf = list["plugins"][i].clone();
    conf["cniVersion"] = list["cniVersion"].clone();
    conf["name"] = list["name"].clone();
    conf
}

#[test]
fn conflist_bridge_gives_a_pod_its_address() {
    if !is_root() {
        eprintln!("skipped: needs root (network namespaces)");
        return;
    }
    if !std::path::Path::new("/usr/lib/cni/bridge").exists() {
        eprintln!("skipped: the CNI plugins are not in /usr/lib/cni");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let host = Netns::empty("nh").expect("host netns");
    let pod = Netns::empty("np").expect("pod netns");
    let path = network::write_conflist(
        &dir.path().join("net.d"),
        "10.42.3.0/24",
        &dir.path().join("networks"),
    )
    .expect("conflist");
    let list: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("read")).expect("json");

    let bridge = plugin_config(&list, 0);
    let result = cni(&host, "ADD", "bridge", &pod, &bridge).expect("bridge ADD");
    assert_eq!(result["cniVersion"], "1.0.0", "{result}");
    // The first address after the gateway, on the pod's eth0.
    let ips = result["ips"].as_array().cloned().unwrap_or_default();
    assert!(
        ips.iter()
            .any(|i| i["address"] == "10.42.3.2/24" && i["gateway"] == "10.42.3.1"),
        "{result}"
    );
    let pod_addrs = ip(&["-n", &pod.name, "-4", "addr", "show", "dev", "eth0"]).expect("addr");
    assert!(pod_addrs.contains("10.42.3.2/24"), "{pod_addrs}");
    let pod_routes = ip(&["-n", &pod.name, "route", "show"]).expect("routes");
    assert!(pod_routes.contains("default via 10.42.3.1"), "{pod_routes}");
    // The bridge on the node side is the pods' gateway.
    let bridge_addr =
        ip(&["-n", &host.name, "-4", "addr", "show", "dev", "kelson0"]).expect("kelson0");
    assert!(bridge_addr.contains("10.42.3.1/24"), "{bridge_addr}");
    // host-local kept the allocation in our data dir.
    assert!(dir
        .path()
        .join("networks")
        .join("kelson")
        .join("10.42.3.2")
        .exists());

    // portmap takes the bridge's result (no port mappings: a no-op ADD
    // that must still accept the config).
    let mut portmap = plugin_config(&list, 1);
    portmap["prevResult"] = result.clone();
    cni(&host, "ADD", "portmap", &pod, &portmap).expect("portmap ADD");
    cni(&host, "DEL", "portmap", &pod, &portmap).expect("portmap DEL");

    let mut del = bridge.clone();
    del["prevResult"] = result;
    cni(&host, "DEL", "bridge", &pod, &del).expect("bridge DEL");
    assert!(!dir
        .path()
        .join("networks")
        .join("kelson")
        .join("10.42.3.2")
        .exists());
}
