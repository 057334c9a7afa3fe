//! Pure computations of the endpoints controllers: which pods back a
//! Service, the core/v1 Endpoints subsets (upstream's RepackSubsets shape),
//! and how desired EndpointSlice endpoints are placed into slices.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, ObjectReference, Service, ServicePort,
};
use k8s_openapi::api::discovery::v1 as discovery;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// Upstream's cap on addresses in one Endpoints object.
pub const MAX_ENDPOINTS_CAPACITY: usize = 1000;
/// Upstream's default --max-endpoints-per-slice.
pub const MAX_ENDPOINTS_PER_SLICE: usize = 100;

/// A named container port a Service's targetPort may refer to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamedPort {
    pub name: String,
    pub port: i32,
    pub protocol: String,
}

/// What the endpoints controllers need of a pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodInfo {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub labels: BTreeMap<String, String>,
    pub node_name: Option<String>,
    pub hostname: Option<String>,
    pub subdomain: Option<String>,
    pub ips: Vec<String>,
    pub ready: bool,
    /// When the Ready condition last changed: upstream's trigger time.
    pub ready_changed: Option<jiff::Timestamp>,
    pub deleting: bool,
    /// Succeeded or Failed.
    pub terminal: bool,
    /// Named ports of the containers and of restartable (sidecar) init
    /// containers.
    pub named_ports: Vec<NamedPort>,
}

impl PodInfo {
    pub fn from_pod(pod: &k8s_openapi::api::core::v1::Pod) -> Option<PodInfo> {
        let spec = pod.spec.as_ref();
        let status = pod.status.as_ref();
        let mut ips: Vec<String> = status
            .and_then(|s| s.pod_ips.as_ref())
            .map(|ips| ips.iter().map(|i| i.ip.clone()).collect())
            .unwrap_or_default();
        if ips.is_empty() {
            if let Some(ip) = status
                .and_then(|s| s.pod_ip.clone())
                .filter(|i| !i.is_empty())
            {
                ips.push(ip);
            }
        }
        let ready_cond = status
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == "Ready"));
        let phase = status.and_then(|s| s.phase.as_deref()).unwrap_or("");
        let mut named_ports = Vec::new();
        if let Some(spec) = spec {
            let sidecars = spec
                .init_containers
                .iter()
                .flatten()
                .filter(|c| c.restart_policy.as_deref() == Some("Always"));
            for c in spec.containers.iter().chain(sidecars) {
                for p in c.ports.iter().flatten() {
                    if let Some(name) = p.name.as_ref().filter(|n| !n.is_empty()) {
                        named_ports.push(NamedPort {
                            name: name.clone(),
                            port: p.container_port,
                            protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                        });
                    }
                }
            }
        }
        Some(PodInfo {
            namespace: pod.metadata.namespace.clone()?,
            name: pod.metadata.name.clone()?,
            uid: pod.metadata.uid.clone().unwrap_or_default(),
            labels: pod.metadata.labels.clone().unwrap_or_default(),
            node_name: spec
                .and_then(|s| s.node_name.clone())
                .filter(|n| !n.is_empty()),
            hostname: spec
                .and_then(|s| s.hostname.clone())
                .filter(|n| !n.is_empty()),
            subdomain: spec
                .and_then(|s| s.subdomain.clone())
                .filter(|n| !n.is_empty()),
            ips,
            ready: ready_cond.is_some_and(|c| c.status == "True"),
            ready_changed: ready_cond.and_then(|c| c.last_transition_time.as_ref().map(|t| t.0)),
            deleting: pod.metadata.deletion_timestamp.is_some(),
            terminal: matches!(phase, "Succeeded" | "Failed"),
            named_ports,
        })
    }

    /// Upstream's ShouldPodBeInEndpoints.
    pub fn should_be_in_endpoints(&self, include_terminating: bool) -> bool {
        !self.terminal && !self.ips.is_empty() && (include_terminating || !self.deleting)
    }

    fn target_ref(&self) -> ObjectReference {
        ObjectReference {
            kind: Some("Pod".into()),
            namespace: Some(self.namespace.clone()),
            name: Some(self.name.clone()),
            uid: Some(self.uid.clone()).filter(|u| !u.is_empty()),
            ..Default::default()
        }
    }

    /// The pod's IP of the given family ("IPv4"/"IPv6"), or its first IP
    /// when the family is unknown.
    fn ip_for(&self, family: Option<&str>) -> Option<&str> {
        match family {
            None => self.ips.first().map(String::as_str),
            Some(f) => self
                .ips
                .iter()
                .find(|ip| family_of(ip) == Some(f))
                .map(String::as_str),
        }
    }

    /// Upstream's ShouldSetHostname: the pod asked for this Service as its
    /// subdomain.
    fn hostname_for(&self, svc: &Service) -> Option<String> {
        let same = self.subdomain.is_some()
            && self.subdomain.as_deref() == svc.metadata.name.as_deref()
            && svc.metadata.namespace.as_deref() == Some(self.namespace.as_str());
        if same {
            self.hostname.clone()
        } else {
            None
        }
    }
}

pub fn family_of(ip: &str) -> Option<&'static str> {
    match ip.parse::<IpAddr>() {
        Ok(IpAddr::V4(_)) => Some("IPv4"),
        Ok(IpAddr::V6(_)) => Some("IPv6"),
        Err(_) => None,
    }
}

/// The selector a Service selects pods with; None for selector-less
/// Services, whose Endpoints are the user's.
pub fn selector(svc: &Service) -> Option<&BTreeMap<String, String>> {
    svc.spec
        .as_ref()
        .and_then(|s| s.selector.as_ref())
        .filter(|s| !s.is_empty())
}

pub fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

pub fn is_headless(svc: &Service) -> bool {
    svc.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) == Some("None")
}

/// The address families the Service's endpoints are published for.
pub fn families(svc: &Service) -> Vec<String> {
    let spec = svc.spec.as_ref();
    if let Some(f) = spec
        .and_then(|s| s.ip_families.as_ref())
        .filter(|f| !f.is_empty())
    {
        return f.clone();
    }
    match spec
        .and_then(|s| s.cluster_ip.as_deref())
        .and_then(family_of)
    {
        Some(f) => vec![f.to_string()],
        None => vec!["IPv4".to_string()],
    }
}

/// Upstream's FindPort: a numeric targetPort as is, a named one through the
/// pod's container ports of the same protocol; no targetPort means `port`.
pub fn find_port(pod: &PodInfo, sp: &ServicePort) -> Option<i32> {
    let protocol = sp.protocol.as_deref().unwrap_or("TCP");
    match &sp.target_port {
        None => Some(sp.port),
        Some(IntOrString::Int(0)) => Some(sp.port),
        Some(IntOrString::Int(n)) => Some(*n),
        Some(IntOrString::String(name)) => match name.parse::<i32>() {
            Ok(n) => Some(n),
            Err(_) => pod
                .named_ports
                .iter()
                .find(|p| p.name == *name && p.protocol == protocol)
                .map(|p| p.port),
        },
    }
}

fn ports(svc: &Service) -> &[ServicePort] {
    svc.spec
        .as_ref()
        .and_then(|s| s.ports.as_deref())
        .unwrap_or_default()
}

fn publish_not_ready(svc: &Service) -> bool {
    svc.spec
        .as_ref()
        .and_then(|s| s.publish_not_ready_addresses)
        .unwrap_or(false)
}

/// Upstream's trigger time: the latest of the Service's creation and the
/// Ready transitions of the pods behind it.
pub fn trigger_time<'a>(
    svc: &Service,
    pods: impl IntoIterator<Item = &'a PodInfo>,
) -> Option<jiff::Timestamp> {
    let created = svc.metadata.creation_timestamp.as_ref().map(|t| t.0);
    pods.into_iter()
        .filter_map(|p| p.ready_changed)
        .chain(created)
        .max()
}

/// The Endpoints subsets for `svc` backed by `pods` (already selected),
/// packed and sorted; the flag tells whether they were truncated to
/// [`MAX_ENDPOINTS_CAPACITY`].
pub fn endpoints_subsets(svc: &Service, pods: &[&PodInfo]) -> (Vec<EndpointSubset>, bool) {
    let tolerate = publish_not_ready(svc);
    let family = svc
        .spec
        .as_ref()
        .and_then(|s| s.ip_families.as_ref())
        .and_then(|f| f.first().cloned())
        .or_else(|| {
            svc.spec
                .as_ref()
                .and_then(|s| s.cluster_ip.as_deref())
                .and_then(family_of)
                .map(String::from)
        });
    // Each port → the addresses offering it, with their readiness.
    type AddrKey = (String, String);
    let mut by_port: BTreeMap<PortKey, BTreeMap<AddrKey, bool>> = BTreeMap::new();
    let mut addrs: HashMap<AddrKey, EndpointAddress> = HashMap::new();
    for pod in pods {
        if !pod.should_be_in_endpoints(tolerate) {
            continue;
        }
        let Some(ip) = pod.ip_for(family.as_deref()) else {
            continue;
        };
        let addr = EndpointAddress {
            ip: ip.to_string(),
            hostname: pod.hostname_for(svc),
            node_name: pod.node_name.clone(),
            target_ref: Some(pod.target_ref()),
        };
        let key = (ip.to_string(), pod.uid.clone());
        let ready = tolerate || pod.ready;
        let mut offered = false;
        if ports(svc).is_empty() {
            if is_headless(svc) {
                by_port
                    .entry(PortKey::none())
                    .or_default()
                    .insert(key.clone(), ready);
                offered = true;
            }
        } else {
            for sp in ports(svc) {
                let Some(port) = find_port(pod, sp) else {
                    continue;
                };
                by_port
                    .entry(PortKey::of(sp, port))
                    .or_default()
                    .insert(key.clone(), ready);
                offered = true;
            }
        }
        if offered {
            addrs.insert(key, addr);
        }
    }
    // Ports offered by the same address set share a subset.
    let mut by_addrs: BTreeMap<Vec<(AddrKey, bool)>, Vec<PortKey>> = BTreeMap::new();
    for (port, set) in by_port {
        by_addrs
            .entry(set.into_iter().collect())
            .or_default()
            .push(port);
    }
    let mut subsets = Vec::new();
    for (set, ports) in by_addrs {
        let mut ready = Vec::new();
        let mut not_ready = Vec::new();
        for (key, is_ready) in set {
            if let Some(a) = addrs.get(&key) {
                if is_ready {
                    ready.push(a.clone());
                } else {
                    not_ready.push(a.clone());
                }
            }
        }
        let ports: Vec<EndpointPort> = ports.into_iter().filter_map(PortKey::into_port).collect();
        subsets.push(EndpointSubset {
            addresses: (!ready.is_empty()).then_some(ready),
            not_ready_addresses: (!not_ready.is_empty()).then_some(not_ready),
            ports: (!ports.is_empty()).then_some(ports),
        });
    }
    let truncated = truncate(&mut subsets);
    (subsets, truncated)
}

/// Keeps at most [`MAX_ENDPOINTS_CAPACITY`] addresses, ready ones first.
fn truncate(subsets: &mut [EndpointSubset]) -> bool {
    let count = |v: &Option<Vec<EndpointAddress>>| v.as_ref().map_or(0, Vec::len);
    let total: usize = subsets
        .iter()
        .map(|s| count(&s.addresses) + count(&s.not_ready_addresses))
        .sum();
    if total <= MAX_ENDPOINTS_CAPACITY {
        return false;
    }
    let mut room = MAX_ENDPOINTS_CAPACITY;
    for s in subsets.iter_mut() {
        if let Some(a) = s.addresses.as_mut() {
            a.truncate(room);
            room -= a.len();
        }
    }
    for s in subsets.iter_mut() {
        if let Some(a) = s.not_ready_addresses.as_mut() {
            a.truncate(room);
            room -= a.len();
        }
    }
    true
}

/// A Service port as resolved for a pod; orders and dedups ports.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct PortKey {
    name: String,
    port: i32,
    protocol: String,
    app_protocol: Option<String>,
}

impl PortKey {
    /// The sentinel for headless Services without ports.
    fn none() -> PortKey {
        PortKey {
            name: String::new(),
            port: -1,
            protocol: String::new(),
            app_protocol: None,
        }
    }

    fn of(sp: &ServicePort, port: i32) -> PortKey {
        PortKey {
            name: sp.name.clone().unwrap_or_default(),
            port,
            protocol: sp.protocol.clone().unwrap_or_else(|| "TCP".into()),
            app_protocol: sp.app_protocol.clone(),
        }
    }

    fn into_port(self) -> Option<EndpointPort> {
        (self.port > 0).then(|| EndpointPort {
            name: Some(self.name).filter(|n| !n.is_empty()),
            port: self.port,
            protocol: Some(self.protocol),
            app_protocol: self.app_protocol,
        })
    }
}

/// One desired slice endpoint with the ports its pod resolved.
#[derive(Clone, Debug, PartialEq)]
pub struct DesiredEndpoint {
    /// The pod's uid: identifies the endpoint across passes.
    pub key: String,
    pub endpoint: discovery::Endpoint,
    pub ports: Vec<discovery::EndpointPort>,
}

/// Why a pod was left out of the slices for now.
#[derive(Debug, PartialEq, Eq)]
pub enum Skipped {
    /// Its node is not (yet) known: retry later, as upstream does.
    UnknownNode(String),
}

/// The slice endpoints of one address family. `zone_of(node)` gives
/// `Some(zone label)` for a known node (None inside: no zone label) and
/// None for an unknown node.
pub fn slice_endpoints(
    svc: &Service,
    pods: &[&PodInfo],
    family: &str,
    zone_of: impl Fn(&str) -> Option<Option<String>>,
) -> (Vec<DesiredEndpoint>, Vec<Skipped>) {
    let publish = publish_not_ready(svc);
    let mut out = Vec::new();
    let mut skipped = Vec::new();
    for pod in pods {
        if !pod.should_be_in_endpoints(true) {
            continue;
        }
        let Some(ip) = pod.ip_for(Some(family)) else {
            continue;
        };
        let zone;
        if let Some(node) = &pod.node_name {
            match zone_of(node) {
                Some(z) => zone = z,
                None => {
                    skipped.push(Skipped::UnknownNode(node.clone()));
                    continue;
                }
            }
        } else {
            // Upstream looks the (empty) node name up and skips the pod.
            skipped.push(Skipped::UnknownNode(String::new()));
            continue;
        }
        let mut ports = Vec::new();
        for sp in ports_of(svc) {
            if let Some(port) = find_port(pod, sp) {
                ports.push(discovery::EndpointPort {
                    name: Some(sp.name.clone().unwrap_or_default()),
                    port: Some(port),
                    protocol: Some(sp.protocol.clone().unwrap_or_else(|| "TCP".into())),
                    app_protocol: sp.app_protocol.clone(),
                });
            }
        }
        // Ready never says true for a terminating pod unless the Service
        // publishes not-ready addresses; serving tells the truth.
        let ready = publish || (pod.ready && !pod.deleting);
        out.push(DesiredEndpoint {
            key: pod.uid.clone(),
            endpoint: discovery::Endpoint {
                addresses: vec![ip.to_string()],
                conditions: Some(discovery::EndpointConditions {
                    ready: Some(ready),
                    serving: Some(pod.ready),
                    terminating: Some(pod.deleting),
                }),
                hostname: pod.hostname_for(svc),
                node_name: pod.node_name.clone(),
                target_ref: Some(pod.target_ref()),
                zone,
                ..Default::default()
            },
            ports,
        });
    }
    (out, skipped)
}

fn ports_of(svc: &Service) -> &[ServicePort] {
    ports(svc)
}

/// An existing slice as the placement sees it.
#[derive(Clone, Debug)]
pub struct ExistingSlice {
    pub name: String,
    pub address_type: String,
    pub ports: Vec<discovery::EndpointPort>,
    pub endpoints: Vec<discovery::Endpoint>,
}

/// What to do with the slices of one Service.
#[derive(Debug, Default, PartialEq)]
pub struct SlicePlan {
    /// Existing slices to rewrite: (name, new endpoints).
    pub update: Vec<(String, Vec<discovery::Endpoint>)>,
    /// Existing slices whose endpoints stay as they are.
    pub keep: Vec<String>,
    /// New slices: (address type, ports, endpoints).
    pub create: Vec<(
        String,
        Vec<discovery::EndpointPort>,
        Vec<discovery::Endpoint>,
    )>,
    pub delete: Vec<String>,
}

fn endpoint_key(ep: &discovery::Endpoint) -> String {
    ep.target_ref
        .as_ref()
        .and_then(|r| r.uid.clone())
        .unwrap_or_else(|| ep.addresses.join(","))
}

/// A port set in comparable form: (name, port, protocol, appProtocol).
type PortsKey = Vec<(String, i32, String, String)>;
/// Slices are grouped by address type and port set.
type GroupKey = (String, PortsKey);

fn ports_key(ports: &[discovery::EndpointPort]) -> PortsKey {
    let mut k: Vec<_> = ports
        .iter()
        .map(|p| {
            (
                p.name.clone().unwrap_or_default(),
                p.port.unwrap_or_default(),
                p.protocol.clone().unwrap_or_default(),
                p.app_protocol.clone().unwrap_or_default(),
            )
        })
        .collect();
    k.sort();
    k
}

/// Places desired endpoints (per address type) into slices of at most
/// `max_per_slice`, keeping endpoints in the slice they are already in, as
/// upstream's reconciler does to limit churn. With no endpoints at all one
/// empty placeholder slice remains.
pub fn plan_slices(
    desired: &BTreeMap<String, Vec<DesiredEndpoint>>,
    existing: &[ExistingSlice],
    max_per_slice: usize,
) -> SlicePlan {
    let max = max_per_slice.max(1);
    let mut plan = SlicePlan::default();
    // (address type, ports key) → pending endpoints by key, and the ports.
    type Group = (
        Vec<discovery::EndpointPort>,
        BTreeMap<String, discovery::Endpoint>,
    );
    let mut groups: BTreeMap<GroupKey, Group> = BTreeMap::new();
    for (family, eps) in desired {
        for d in eps {
            let g = groups
                .entry((family.clone(), ports_key(&d.ports)))
                .or_insert_with(|| (d.ports.clone(), BTreeMap::new()));
            g.1.insert(d.key.clone(), d.endpoint.clone());
        }
    }
    let total: usize = groups.values().map(|g| g.1.len()).sum();
    // Slices that end up with room, per group: (slice, endpoints).
    let mut kept: BTreeMap<GroupKey, Vec<(String, Vec<discovery::Endpoint>, bool)>> =
        BTreeMap::new();
    let mut placeholder_kept = false;
    for slice in existing {
        let gk = (slice.address_type.clone(), ports_key(&slice.ports));
        let Some(group) = groups.get_mut(&gk) else {
            // An empty slice stays as the placeholder when nothing is
            // desired.
            if total == 0 && !placeholder_kept && desired.contains_key(&slice.address_type) {
                placeholder_kept = true;
                if slice.endpoints.is_empty() && slice.ports.is_empty() {
                    plan.keep.push(slice.name.clone());
                } else {
                    plan.delete.push(slice.name.clone());
                    placeholder_kept = false;
                }
            } else {
                plan.delete.push(slice.name.clone());
            }
            continue;
        };
        let mut eps = Vec::new();
        let mut changed = false;
        let mut seen = BTreeSet::new();
        for ep in &slice.endpoints {
            let key = endpoint_key(ep);
            match group.1.remove(&key) {
                Some(want) if seen.insert(key) && eps.len() < max => {
                    if want != *ep {
                        changed = true;
                    }
                    eps.push(want);
                }
                Some(want) => {
                    // Over capacity or a duplicate: goes elsewhere.
                    group.1.insert(endpoint_key(&want), want);
                    changed = true;
                }
                None => changed = true,
            }
        }
        kept.entry(gk)
            .or_default()
            .push((slice.name.clone(), eps, changed));
    }
    for (gk, (ports, mut pending)) in groups {
        let mut slices = kept.remove(&gk).unwrap_or_default();
        // Fill slices already being rewritten first, then the fullest
        // untouched ones, as upstream prefers.
        slices.sort_by_key(|(_, eps, changed)| (!*changed, std::cmp::Reverse(eps.len())));
        for (_, eps, changed) in slices.iter_mut() {
            while eps.len() < max {
                let Some(k) = pending.keys().next().cloned() else {
                    break;
                };
                if let Some(ep) = pending.remove(&k) {
                    eps.push(ep);
                    *changed = true;
                }
            }
        }
        for (name, eps, changed) in slices {
            if eps.is_empty() {
                plan.delete.push(name);
            } else if changed {
                plan.update.push((name, eps));
            } else {
                plan.keep.push(name);
            }
        }
        let rest: Vec<discovery::Endpoint> = pending.into_values().collect();
        for chunk in rest.chunks(max) {
            plan.create
                .push((gk.0.clone(), ports.clone(), chunk.to_vec()));
        }
    }
    // Slices of groups that no longer exist.
    for (_, slices) in kept {
        for (name, _, _) in slices {
            plan.delete.push(name);
        }
    }
    if total == 0 && !placeholder_kept {
        if let Some(family) = desired.keys().next() {
            plan.create.push((family.clone(), Vec::new(), Vec::new()));
        }
    }
    plan.delete.sort();
    plan.keep.sort();
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(v: serde_json::Value) -> Service {
        serde_json::from_value(v).unwrap()
    }

    fn pod(name: &str, ip: &str, ready: bool) -> PodInfo {
        PodInfo {
            namespace: "ns".into(),
            name: name.into(),
            uid: format!("uid-{name}"),
            labels: BTreeMap::from([("app".into(), "web".into())]),
            node_name: Some("node-1".into()),
            hostname: None,
            subdomain: None,
            ips: vec![ip.into()],
            ready,
            ready_changed: None,
            deleting: false,
            terminal: false,
            named_ports: vec![NamedPort {
                name: "http".into(),
                port: 8080,
                protocol: "TCP".into(),
            }],
        }
    }

    fn web() -> Service {
        svc(serde_json::json!({
            "metadata": {"name": "web", "namespace": "ns"},
            "spec": {"selector": {"app": "web"}, "ports": [
                {"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"},
                {"name": "metrics", "port": 9090, "targetPort": 9100, "protocol": "TCP"},
            ]}
        }))
    }

    #[test]
    fn ready_and_not_ready_pods_land_in_the_right_lists_with_resolved_ports() {
        let a = pod("a", "10.0.0.2", true);
        let b = pod("b", "10.0.0.1", false);
        let mut c = pod("c", "10.0.0.3", true);
        c.named_ports.clear(); // cannot serve "http": only offers metrics
        let (subsets, truncated) = endpoints_subsets(&web(), &[&a, &b, &c]);
        assert!(!truncated);
        // As upstream's RepackSubsets: one subset per distinct address set.
        assert_eq!(subsets.len(), 2, "{subsets:#?}");
        let ips = |v: &Option<Vec<EndpointAddress>>| {
            v.iter().flatten().map(|a| a.ip.clone()).collect::<Vec<_>>()
        };
        let with_port = |name: &str| {
            subsets
                .iter()
                .find(|s| s.ports.as_ref().unwrap()[0].name.as_deref() == Some(name))
                .unwrap()
        };
        let http = with_port("http");
        assert_eq!(http.ports.as_ref().unwrap().len(), 1);
        assert_eq!(
            http.ports.as_ref().unwrap()[0].port,
            8080,
            "named targetPort resolved"
        );
        assert_eq!(ips(&http.addresses), ["10.0.0.2"]);
        assert_eq!(ips(&http.not_ready_addresses), ["10.0.0.1"]);
        let metrics = with_port("metrics");
        assert_eq!(metrics.ports.as_ref().unwrap()[0].port, 9100);
        assert_eq!(ips(&metrics.addresses), ["10.0.0.2", "10.0.0.3"]);
        assert_eq!(ips(&metrics.not_ready_addresses), ["10.0.0.1"]);
        let addr = &http.addresses.as_ref().unwrap()[0];
        assert_eq!(addr.node_name.as_deref(), Some("node-1"));
        let tr = addr.target_ref.as_ref().unwrap();
        assert_eq!(
            (tr.kind.as_deref(), tr.name.as_deref(), tr.uid.as_deref()),
            (Some("Pod"), Some("a"), Some("uid-a"))
        );
        // Pods offering the same ports share one subset.
        let (subsets, _) = endpoints_subsets(&web(), &[&a, &b]);
        assert_eq!(subsets.len(), 1);
        assert_eq!(subsets[0].ports.as_ref().unwrap().len(), 2);
    }

    #[test]
    fn terminating_and_ipless_pods_and_publish_not_ready() {
        let mut t = pod("t", "10.0.0.5", true);
        t.deleting = true;
        let mut n = pod("n", "10.0.0.6", false);
        n.ips.clear();
        let u = pod("u", "10.0.0.7", false);
        let (subsets, _) = endpoints_subsets(&web(), &[&t, &n, &u]);
        let all: Vec<_> = subsets
            .iter()
            .flat_map(|s| {
                s.addresses
                    .iter()
                    .chain(s.not_ready_addresses.iter())
                    .flatten()
            })
            .map(|a| a.ip.as_str())
            .collect();
        assert_eq!(
            all,
            ["10.0.0.7"],
            "terminating and IP-less pods are left out"
        );

        let mut publish = web();
        publish.spec.as_mut().unwrap().publish_not_ready_addresses = Some(true);
        let (subsets, _) = endpoints_subsets(&publish, &[&t, &u]);
        assert_eq!(subsets.len(), 1);
        assert_eq!(subsets[0].addresses.as_ref().unwrap().len(), 2);
        assert!(subsets[0].not_ready_addresses.is_none());
    }

    #[test]
    fn slice_conditions_follow_readiness_and_termination() {
        let zone = |_: &str| Some(Some("zone-a".to_string()));
        let a = pod("a", "10.0.0.2", true);
        let b = pod("b", "10.0.0.1", false);
        let mut t = pod("t", "10.0.0.3", true);
        t.deleting = true;
        let (eps, skipped) = slice_endpoints(&web(), &[&a, &b, &t], "IPv4", zone);
        assert!(skipped.is_empty());
        let cond = |name: &str| {
            let e = eps
                .iter()
                .find(|e| e.endpoint.target_ref.as_ref().unwrap().name.as_deref() == Some(name))
                .unwrap();
            let c = e.endpoint.conditions.as_ref().unwrap();
            (c.ready.unwrap(), c.serving.unwrap(), c.terminating.unwrap())
        };
        assert_eq!(cond("a"), (true, true, false));
        assert_eq!(cond("b"), (false, false, false));
        assert_eq!(
            cond("t"),
            (false, true, true),
            "terminating: serving, not ready"
        );
        assert_eq!(eps[0].endpoint.zone.as_deref(), Some("zone-a"));
        assert_eq!(eps[0].ports.len(), 2);
        // An unknown node defers the pod.
        let (eps, skipped) = slice_endpoints(&web(), &[&a], "IPv4", |_| None);
        assert!(eps.is_empty());
        assert_eq!(skipped, [Skipped::UnknownNode("node-1".into())]);
        // IPv6 slices take nothing from IPv4-only pods.
        let (eps, _) = slice_endpoints(&web(), &[&a], "IPv6", zone);
        assert!(eps.is_empty());
    }

    fn desired(n: usize) -> Vec<DesiredEndpoint> {
        (0..n)
            .map(|i| {
                let p = pod(
                    &format!("p{i:03}"),
                    &format!("10.1.{}.{}", i / 200, i % 200),
                    true,
                );
                slice_endpoints(&web(), &[&p], "IPv4", |_| Some(None))
                    .0
                    .remove(0)
            })
            .collect()
    }

    #[test]
    fn slices_hold_at_most_the_maximum_and_keep_endpoints_in_place() {
        let want = BTreeMap::from([("IPv4".to_string(), desired(250))]);
        let plan = plan_slices(&want, &[], 100);
        let sizes: Vec<_> = plan.create.iter().map(|c| c.2.len()).collect();
        assert_eq!(sizes, [100, 100, 50]);
        // Existing slices with the same content are left alone.
        let existing: Vec<ExistingSlice> = plan
            .create
            .iter()
            .enumerate()
            .map(|(i, (at, ports, eps))| ExistingSlice {
                name: format!("web-{i}"),
                address_type: at.clone(),
                ports: ports.clone(),
                endpoints: eps.clone(),
            })
            .collect();
        let again = plan_slices(&want, &existing, 100);
        assert!(again.create.is_empty() && again.update.is_empty() && again.delete.is_empty());
        assert_eq!(again.keep.len(), 3);
        // Dropping to 30 endpoints rewrites and deletes, creating nothing.
        let fewer = BTreeMap::from([("IPv4".to_string(), desired(30))]);
        let shrink = plan_slices(&fewer, &existing, 100);
        assert!(shrink.create.is_empty());
        assert_eq!(shrink.update.len(), 1);
        assert_eq!(shrink.update[0].1.len(), 30);
        assert_eq!(shrink.delete.len(), 2);
    }

    #[test]
    fn no_endpoints_leaves_one_empty_placeholder() {
        let want = BTreeMap::from([("IPv4".to_string(), Vec::new())]);
        let plan = plan_slices(&want, &[], 100);
        assert_eq!(plan.create, [("IPv4".to_string(), vec![], vec![])]);
        let existing = [ExistingSlice {
            name: "web-x".into(),
            address_type: "IPv4".into(),
            ports: vec![],
            endpoints: vec![],
        }];
        let plan = plan_slices(&want, &existing, 100);
        assert!(plan.create.is_empty() && plan.delete.is_empty());
        assert_eq!(plan.keep, ["web-x"]);
    }
}
