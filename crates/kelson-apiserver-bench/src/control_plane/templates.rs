//! The objects the control-plane bench creates, shaped after upstream's
//! scheduler_perf templates (test/integration/scheduler_perf/templates):
//! pod-default (one pause container requesting and limited to 100m CPU and
//! 500Mi memory), pod-with-pod-anti-affinity and
//! pod-with-topology-spreading, plus a Deployment of pod-default pods.

use serde_json::{json, Value};

/// The pause container of pod-default.
fn container() -> Value {
    json!({
        "name": "pause",
        "image": "registry.k8s.io/pause:3.10",
        "ports": [{"containerPort": 80}],
        "resources": {
            "limits": {"cpu": "100m", "memory": "500Mi"},
            "requests": {"cpu": "100m", "memory": "500Mi"},
        },
    })
}

/// What the pods of a phase look like besides the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodKind {
    /// pod-default: no constraints.
    Default,
    /// Label `color: green` and a required anti-affinity to every pod with
    /// it on the same `kubernetes.io/hostname`, in these namespaces.
    AntiAffinity { namespaces: Vec<String> },
    /// Label `color: blue` and a DoNotSchedule spread over
    /// `topology.kubernetes.io/zone` of the pods with it.
    Spread { max_skew: u32 },
}

/// The pod `name` of `kind`, as JSON bytes for a create.
pub fn pod(name: &str, kind: &PodKind) -> Vec<u8> {
    let mut spec = json!({"containers": [container()]});
    let mut labels = json!({"app": "kelson-bench"});
    match kind {
        PodKind::Default => {}
        PodKind::AntiAffinity { namespaces } => {
            labels["color"] = "green".into();
            spec["affinity"] = json!({"podAntiAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": [{
                    "labelSelector": {"matchLabels": {"color": "green"}},
                    "topologyKey": "kubernetes.io/hostname",
                    "namespaces": namespaces,
                }],
            }});
        }
        PodKind::Spread { max_skew } => {
            labels["color"] = "blue".into();
            spec["topologySpreadConstraints"] = json!([{
                "maxSkew": max_skew,
                "topologyKey": "topology.kubernetes.io/zone",
                "whenUnsatisfiable": "DoNotSchedule",
                "labelSelector": {"matchLabels": {"color": "blue"}},
            }]);
        }
    }
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": spec,
    })
    .to_string()
    .into_bytes()
}

/// A Deployment `name` of `replicas` pod-default pods labelled `app: name`.
pub fn deployment(name: &str, replicas: u32) -> Vec<u8> {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [container()]},
            },
        },
    })
    .to_string()
    .into_bytes()
}

/// A Namespace `name`.
pub fn namespace(name: &str) -> Vec<u8> {
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
        .to_string()
        .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(b: &[u8]) -> Value {
        serde_json::from_slice(b).unwrap()
    }

    #[test]
    fn default_pod_requests_what_upstream_pod_default_does() {
        let p = parse(&pod("pod-1", &PodKind::Default));
        assert_eq!(p["metadata"]["name"], "pod-1");
        let c = &p["spec"]["containers"][0];
        assert_eq!(c["resources"]["requests"]["cpu"], "100m");
        assert_eq!(c["resources"]["requests"]["memory"], "500Mi");
        assert_eq!(c["resources"]["limits"], c["resources"]["requests"]);
        assert!(p["spec"].get("affinity").is_none());
    }

    #[test]
    fn anti_affinity_pods_repel_their_own_colour_per_host() {
        let kind = PodKind::AntiAffinity {
            namespaces: vec!["sched-0".into(), "sched-1".into()],
        };
        let p = parse(&pod("pod-1", &kind));
        assert_eq!(p["metadata"]["labels"]["color"], "green");
        let term = &p["spec"]["affinity"]["podAntiAffinity"]
            ["requiredDuringSchedulingIgnoredDuringExecution"][0];
        assert_eq!(term["topologyKey"], "kubernetes.io/hostname");
        assert_eq!(term["labelSelector"]["matchLabels"]["color"], "green");
        assert_eq!(term["namespaces"], json!(["sched-0", "sched-1"]));
    }

    #[test]
    fn spread_pods_spread_over_zones() {
        let p = parse(&pod("pod-1", &PodKind::Spread { max_skew: 1 }));
        let c = &p["spec"]["topologySpreadConstraints"][0];
        assert_eq!(c["maxSkew"], 1);
        assert_eq!(c["whenUnsatisfiable"], "DoNotSchedule");
        assert_eq!(c["topologyKey"], "topology.kubernetes.io/zone");
        assert_eq!(c["labelSelector"]["matchLabels"]["color"], "blue");
        assert_eq!(p["metadata"]["labels"]["color"], "blue");
    }

    #[test]
    fn deployment_selects_its_template() {
        let d = parse(&deployment("web", 30_000));
        assert_eq!(d["spec"]["replicas"], 30_000);
        assert_eq!(
            d["spec"]["selector"]["matchLabels"],
            d["spec"]["template"]["metadata"]["labels"]
        );
        assert_eq!(parse(&namespace("x"))["metadata"]["name"], "x");
    }
}
