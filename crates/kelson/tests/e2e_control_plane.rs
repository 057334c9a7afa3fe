//! End to end on simulated nodes: the real `kelson server` (API server,
//! scheduler, controller manager) plus `kelson sim`, driven by kubectl.

mod common;

use std::process::{Child, Command, Stdio};

use common::{Cluster, KELSON};

/// `kelson sim` as a child process, stopped by PID on drop.
struct Sim(Child);

impl Sim {
    fn start(c: &Cluster, nodes: u32) -> Sim {
        let log = std::fs::File::create(c.dir.path().join("sim.log")).unwrap();
        let child = Command::new(KELSON)
            .args(["sim", "--nodes", &nodes.to_string(), "--kubeconfig"])
            .arg(c.kubeconfig())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        Sim(child)
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn running(c: &Cluster, selector: &str) -> usize {
    c.ok(&[
        "get",
        "pods",
        "-l",
        selector,
        "--field-selector=status.phase=Running",
        "-o",
        "name",
    ])
    .lines()
    .count()
}

#[test]
fn a_deployment_rolls_out_scales_and_updates_on_simulated_nodes() {
    let c = Cluster::start();
    let _sim = Sim::start(&c, 3);
    c.eventually(&["get", "nodes", "--no-headers"], |o| {
        o.lines().filter(|l| l.contains(" Ready ")).count() == 3
    });

    c.ok(&[
        "create",
        "deployment",
        "web",
        "--image=busybox:1",
        "--replicas=3",
    ]);
    c.ok(&["rollout", "status", "deployment/web", "--timeout=60s"]);
    assert_eq!(running(&c, "app=web"), 3);
    // Every pod got a node and an IP from that node's podCIDR.
    let pods = c.ok(&[
        "get",
        "pods",
        "-l",
        "app=web",
        "-o",
        "jsonpath={range .items[*]}{.spec.nodeName} {.status.podIP}{\"\\n\"}{end}",
    ]);
    for line in pods.lines() {
        let (node, ip) = line.split_once(' ').unwrap();
        let cidr = c.ok(&["get", "node", node, "-o", "jsonpath={.spec.podCIDR}"]);
        let net = cidr.trim_end_matches(".0/24");
        assert!(ip.starts_with(&format!("{net}.")), "{ip} outside {cidr}");
    }

    // Scale 3 → 10 → 0.
    c.ok(&["scale", "deployment/web", "--replicas=10"]);
    c.ok(&["rollout", "status", "deployment/web", "--timeout=60s"]);
    assert_eq!(running(&c, "app=web"), 10);
    c.ok(&["scale", "deployment/web", "--replicas=0"]);
    c.eventually(&["get", "pods", "-l", "app=web", "-o", "name"], |o| {
        o.trim().is_empty()
    });

    // A new image rolls out to a second ReplicaSet; history records both.
    c.ok(&["scale", "deployment/web", "--replicas=3"]);
    c.ok(&["rollout", "status", "deployment/web", "--timeout=60s"]);
    c.ok(&["set", "image", "deployment/web", "busybox=busybox:2"]);
    c.ok(&["rollout", "status", "deployment/web", "--timeout=60s"]);
    let images = c.ok(&[
        "get",
        "pods",
        "-l",
        "app=web",
        "--field-selector=status.phase=Running",
        "-o",
        "jsonpath={.items[*].spec.containers[0].image}",
    ]);
    assert_eq!(
        images.split_whitespace().collect::<Vec<_>>(),
        vec!["busybox:2"; 3]
    );
    let history = c.ok(&["rollout", "history", "deployment/web"]);
    assert!(history.contains('1') && history.contains('2'), "{history}");
    c.ok(&["rollout", "undo", "deployment/web"]);
    c.ok(&["rollout", "status", "deployment/web", "--timeout=60s"]);
    assert_eq!(
        c.ok(&[
            "get",
            "deployment",
            "web",
            "-o",
            "jsonpath={.spec.template.spec.containers[0].image}"
        ]),
        "busybox:1"
    );
}

#[test]
fn an_unschedulable_pod_says_why() {
    let c = Cluster::start();
    let _sim = Sim::start(&c, 2);
    c.eventually(&["get", "nodes", "--no-headers"], |o| {
        o.lines().filter(|l| l.contains(" Ready ")).count() == 2
    });
    let pod = c.write(
        "big.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: big}\nspec:\n  containers:\n  - name: c\n    image: busybox\n    resources: {requests: {cpu: '64'}}\n",
    );
    c.ok(&["apply", "-f", &pod]);
    let message = c.eventually(
        &[
            "get",
            "pod",
            "big",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"PodScheduled\")].message}",
        ],
        |o| !o.is_empty(),
    );
    assert!(
        message.starts_with("0/2 nodes are available: 2 Insufficient cpu."),
        "{message}"
    );
    let events = c.ok(&["describe", "pod", "big"]);
    assert!(events.contains("FailedScheduling"), "{events}");
}
