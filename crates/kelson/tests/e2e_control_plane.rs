//! End to end on simulated nodes: the real `kelson server` (API server,
//! scheduler, controller manager) plus `kelson sim`, driven by kubectl.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Cluster, KELSON};
use serde_json::{json, Value};

/// A `kelson` child process (sim, scheduler, controller manager), stopped
/// by PID on drop; its stderr goes to `<data dir>/<log>`.
struct Proc(Child);

impl Proc {
    fn start(c: &Cluster, log: &str, args: &[&str]) -> Proc {
        let log = std::fs::File::create(c.dir.path().join(log)).unwrap();
        let child = Command::new(KELSON)
            .args(args)
            .arg("--kubeconfig")
            .arg(c.kubeconfig())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        Proc(child)
    }

    /// `kelson sim` with `nodes` nodes and extra flags.
    fn sim(c: &Cluster, nodes: u32, extra: &[&str]) -> Proc {
        let n = nodes.to_string();
        let mut args = vec!["sim", "--nodes", &n];
        args.extend_from_slice(extra);
        let sim = Proc::start(c, "sim.log", &args);
        c.eventually(&["get", "nodes", "--no-headers"], |o| {
            o.lines().filter(|l| l.contains(" Ready ")).count() == nodes as usize
        });
        sim
    }

    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `kubectl get pods -l SELECTOR -w --output-watch-events -o json` in the
/// background, its output kept in the data dir until `stop`.
struct PodWatch {
    child: Child,
    log: std::path::PathBuf,
}

impl PodWatch {
    fn start(c: &Cluster, selector: &str, log: &str) -> PodWatch {
        let log = c.dir.path().join(log);
        let child = Command::new(common::kubectl_bin(32))
            .args([
                "get",
                "pods",
                "-l",
                selector,
                "-w",
                "--output-watch-events",
                "-o",
                "json",
            ])
            .env("KUBECONFIG", c.kubeconfig())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        PodWatch { child, log }
    }

    /// Stops the watch (after a moment for the last events to arrive);
    /// returns each event with its pod's name.
    fn stop(mut self) -> Vec<(Value, String)> {
        std::thread::sleep(Duration::from_millis(500));
        let _ = self.child.kill();
        let _ = self.child.wait();
        let text = std::fs::read_to_string(&self.log).unwrap();
        serde_json::Deserializer::from_str(&text)
            .into_iter::<Value>()
            .map(|ev| {
                let ev = ev.unwrap();
                let name = ev["object"]["metadata"]["name"]
                    .as_str()
                    .unwrap()
                    .to_string();
                (ev, name)
            })
            .collect()
    }
}

impl Drop for PodWatch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes `obj` as JSON into the data dir and `kubectl apply`s it.
fn apply(c: &Cluster, name: &str, obj: Value) {
    let path = c.write(&format!("{name}.json"), &obj.to_string());
    c.ok(&["apply", "-f", &path]);
}

/// A Deployment of `app` whose pod spec is busybox plus `spec_extra`.
fn deployment(app: &str, replicas: u32, spec_extra: Value) -> Value {
    let mut spec = json!({"containers": [{"name": "c", "image": "busybox"}]});
    if let (Some(s), Some(extra)) = (spec.as_object_mut(), spec_extra.as_object()) {
        for (k, v) in extra {
            s.insert(k.clone(), v.clone());
        }
    }
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": app},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": app}},
            "template": {"metadata": {"labels": {"app": app}}, "spec": spec}
        }
    })
}

/// node name → number of Running pods of `app` on it.
fn placement(c: &Cluster, app: &str) -> HashMap<String, usize> {
    let out = c.ok(&[
        "get",
        "pods",
        "-l",
        &format!("app={app}"),
        "--field-selector=status.phase=Running",
        "-o",
        "jsonpath={range .items[*]}{.spec.nodeName}{\"\\n\"}{end}",
    ]);
    let mut m = HashMap::new();
    for n in out.lines().filter(|l| !l.is_empty()) {
        *m.entry(n.to_string()).or_default() += 1;
    }
    m
}

/// Waits until `app` has `n` Running pods; returns their placement.
fn wait_running(c: &Cluster, app: &str, n: usize) -> HashMap<String, usize> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let p = placement(c, app);
        if p.values().sum::<usize>() == n {
            return p;
        }
        assert!(
            Instant::now() < deadline,
            "{app}: {p:?}, wanted {n} Running"
        );
        std::thread::sleep(Duration::from_millis(250));
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
    let _sim = Proc::sim(&c, 3, &[]);

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
    // A watch of the pods proves the rollout kept within maxSurge (25% of
    // 3 → 1 extra pod) and maxUnavailable (25% of 3 → none unavailable).
    let watch = PodWatch::start(&c, "app=web", "pods-watch.json");
    c.ok(&["set", "image", "deployment/web", "busybox=busybox:2"]);
    c.ok(&["rollout", "status", "deployment/web", "--timeout=60s"]);
    check_rollout_bounds(&watch.stop(), 3, 1, 0);
    check_new_image_then_undo(&c, "deployment/web", "app=web", 3);
}

#[test]
fn an_unschedulable_pod_says_why() {
    let c = Cluster::start();
    let _sim = Proc::sim(&c, 2, &[]);
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

/// Replays the watch events of a rollout and asserts that, once `replicas` pods were ready, there were never more than
/// `replicas + surge` live pods nor fewer than `replicas - unavailable`
/// ready ones (live: not terminal, not being deleted).
fn check_rollout_bounds(
    events: &[(Value, String)],
    replicas: usize,
    surge: usize,
    unavailable: usize,
) {
    let mut pods: HashMap<String, (bool, bool)> = HashMap::new();
    let mut steady = false;
    for (ev, name) in events {
        let name = name.clone();
        let obj = &ev["object"];
        if ev["type"] == "DELETED" {
            pods.remove(&name);
        } else {
            let phase = obj["status"]["phase"].as_str().unwrap_or("");
            let live = obj["metadata"]["deletionTimestamp"].is_null()
                && phase != "Succeeded"
                && phase != "Failed";
            let ready = live
                && obj["status"]["conditions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True");
            pods.insert(name, (live, ready));
        }
        let live = pods.values().filter(|p| p.0).count();
        let ready = pods.values().filter(|p| p.1).count();
        steady |= ready >= replicas;
        if steady {
            assert!(live <= replicas + surge, "{live} live pods: {pods:?}");
            assert!(
                ready + unavailable >= replicas,
                "{ready} ready pods: {pods:?}"
            );
        }
    }
    // Three old pods went and three new ones came: at least 12 events.
    assert!(events.len() >= 12, "only {} watch events", events.len());
}

fn pod_field(c: &Cluster, pod: &str, path: &str) -> String {
    c.ok(&["get", "pod", pod, "-o", &format!("jsonpath={{{path}}}")])
}

/// Waits for the pod's PodScheduled message (set when it cannot be placed).
fn unschedulable_message(c: &Cluster, selector: &str) -> String {
    c.eventually(
        &[
            "get",
            "pods",
            "-l",
            selector,
            "--field-selector=status.phase=Pending",
            "-o",
            "jsonpath={.items[*].status.conditions[?(@.type==\"PodScheduled\")].message}",
        ],
        |o| !o.is_empty(),
    )
}

#[test]
fn the_scheduler_honours_selectors_affinity_taints_spread_and_priority() {
    let c = Cluster::start();
    // 4 nodes of 4 CPUs: zone-0 holds sim-node-0 and -2, zone-1 -1 and -3.
    let _sim = Proc::sim(&c, 4, &["--zones", "2", "--cpu", "4"]);

    // nodeSelector.
    c.ok(&["label", "node", "sim-node-3", "disk=ssd"]);
    apply(
        &c,
        "sel",
        deployment("sel", 2, json!({"nodeSelector": {"disk": "ssd"}})),
    );
    assert_eq!(
        wait_running(&c, "sel", 2),
        HashMap::from([("sim-node-3".into(), 2)])
    );

    // Required node affinity to a zone.
    let zone0 = json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": [{
            "key": "topology.kubernetes.io/zone", "operator": "In", "values": ["zone-0"]}]}]}}});
    apply(&c, "aff", deployment("aff", 4, json!({"affinity": zone0})));
    let p = wait_running(&c, "aff", 4);
    assert!(
        p.keys().all(|n| n == "sim-node-0" || n == "sim-node-2"),
        "{p:?}"
    );

    // Required pod anti-affinity per host: four replicas on four nodes, the
    // fifth cannot go anywhere and says so.
    let anti = json!({"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [{
        "labelSelector": {"matchLabels": {"app": "anti"}},
        "topologyKey": "kubernetes.io/hostname"}]}});
    apply(&c, "anti", deployment("anti", 4, json!({"affinity": anti})));
    let p = wait_running(&c, "anti", 4);
    assert_eq!(p.len(), 4, "{p:?}");
    c.ok(&["scale", "deployment/anti", "--replicas=5"]);
    let msg = unschedulable_message(&c, "app=anti");
    assert!(
        msg.starts_with("0/4 nodes are available: 4 node(s) didn't match pod anti-affinity rules."),
        "{msg}"
    );

    // A NoSchedule taint keeps new pods off a node.
    c.ok(&["taint", "node", "sim-node-1", "dedicated=db:NoSchedule"]);
    apply(&c, "tainted", deployment("tainted", 6, json!({})));
    let p = wait_running(&c, "tainted", 6);
    assert!(!p.contains_key("sim-node-1"), "{p:?}");

    // Topology spread over zones beats a strong preference for one zone.
    let prefer0 = json!({"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{
        "weight": 100, "preference": {"matchExpressions": [{
            "key": "topology.kubernetes.io/zone", "operator": "In", "values": ["zone-0"]}]}}]}});
    let spread = json!([{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
        "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {"matchLabels": {"app": "zonal"}}}]);
    c.ok(&["taint", "node", "sim-node-1", "dedicated-"]);
    apply(
        &c,
        "zonal",
        deployment(
            "zonal",
            4,
            json!({"affinity": prefer0, "topologySpreadConstraints": spread}),
        ),
    );
    let p = wait_running(&c, "zonal", 4);
    let in_zone0: usize = ["sim-node-0", "sim-node-2"]
        .iter()
        .filter_map(|n| p.get(*n))
        .sum();
    assert_eq!(in_zone0, 2, "{p:?}");

    // Preemption: low-priority pods fill every node; a high-priority pod
    // evicts one of them and runs.
    for app in ["sel", "aff", "anti", "tainted", "zonal"] {
        c.ok(&["delete", "deployment", app]);
    }
    c.eventually(&["get", "pods", "-o", "name"], |o| o.trim().is_empty());
    apply(
        &c,
        "classes",
        json!({"apiVersion": "v1", "kind": "List", "items": [
            {"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
             "metadata": {"name": "low"}, "value": 10},
            {"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
             "metadata": {"name": "high"}, "value": 1000}]}),
    );
    let three_cpus =
        json!([{"name": "c", "image": "busybox", "resources": {"requests": {"cpu": "3"}}}]);
    apply(
        &c,
        "low",
        deployment(
            "low",
            4,
            json!({"priorityClassName": "low", "containers": three_cpus}),
        ),
    );
    wait_running(&c, "low", 4);
    apply(
        &c,
        "high",
        deployment(
            "high",
            1,
            json!({"priorityClassName": "high", "containers": three_cpus}),
        ),
    );
    wait_running(&c, "high", 1);
    assert_eq!(placement(&c, "low").values().sum::<usize>(), 3);
    let preempted = c.ok(&[
        "get",
        "events",
        "--field-selector=reason=Preempted",
        "-o",
        "name",
    ]);
    assert!(!preempted.trim().is_empty(), "no Preempted event");
    let msg = unschedulable_message(&c, "app=low");
    assert!(msg.contains("Insufficient cpu"), "{msg}");
}

#[test]
fn a_node_that_stops_heartbeating_loses_its_pods_to_other_nodes() {
    // The controller manager runs as its own process with a short grace
    // period (sim nodes renew their Lease every 10 s, as kubelets do).
    let c = Cluster::start_with(&["--disable-controller-manager"]);
    let _cm = Proc::start(
        &c,
        "controller-manager.log",
        &[
            "controller-manager",
            "--node-monitor-grace-period",
            "15s",
            "--node-monitor-period",
            "1s",
        ],
    );
    let _sim = Proc::sim(&c, 3, &[]);
    let tolerate = |key: &str| json!({"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 2});
    apply(
        &c,
        "web",
        deployment(
            "web",
            6,
            json!({"tolerations": [tolerate("node.kubernetes.io/not-ready"),
                                   tolerate("node.kubernetes.io/unreachable")]}),
        ),
    );
    let p = wait_running(&c, "web", 6);
    let victim = p.keys().next().unwrap().clone();
    c.ok(&[
        "annotate",
        "node",
        &victim,
        "kelson.dev/sim-stop-heartbeat=true",
    ]);
    // The node controller marks it unknown and taints it...
    c.eventually(
        &[
            "get",
            "node",
            &victim,
            "-o",
            "jsonpath={.spec.taints[*].key}",
        ],
        |o| o.contains("node.kubernetes.io/unreachable"),
    );
    let ready = c.ok(&[
        "get",
        "node",
        &victim,
        "-o",
        "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
    ]);
    assert_eq!(ready, "Unknown");
    // ...its pods are evicted after their 2 s toleration and replaced.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let live = c.ok(&[
            "get",
            "pods",
            "-l",
            "app=web",
            "-o",
            "jsonpath={range .items[?(@.status.phase==\"Running\")]}{.spec.nodeName} {.metadata.deletionTimestamp}{\"\\n\"}{end}",
        ]);
        let healthy: Vec<_> = live
            .lines()
            .filter(|l| l.split(' ').nth(1).is_some_and(str::is_empty))
            .collect();
        if healthy.len() == 6
            && healthy
                .iter()
                .all(|l| !l.starts_with(&format!("{victim} ")))
        {
            break;
        }
        assert!(Instant::now() < deadline, "pods not replaced: {live}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The identity a component logged when it started campaigning.
fn identity_in(log: &Path) -> Option<String> {
    let text = std::fs::read_to_string(log).ok()?;
    let line = text
        .lines()
        .find(|l| l.contains("attempting to acquire leader lease"))?;
    let rest = &line[line.find("identity=")? + "identity=".len()..];
    Some(rest.split_whitespace().next()?.to_string())
}

#[test]
fn a_standby_scheduler_takes_over_when_the_leader_is_killed() {
    let c = Cluster::start_with(&["--disable-scheduler"]);
    let _sim = Proc::sim(&c, 1, &[]);
    let election = [
        "--leader-elect-lease-duration",
        "4s",
        "--leader-elect-renew-deadline",
        "3s",
        "--leader-elect-retry-period",
        "500ms",
    ];
    let mut schedulers: Vec<(Proc, String)> = ["a", "b"]
        .iter()
        .map(|n| {
            let log = format!("scheduler-{n}.log");
            let mut args = vec!["scheduler"];
            args.extend_from_slice(&election);
            (Proc::start(&c, &log, &args), log)
        })
        .collect();
    let holder = |c: &Cluster| {
        c.ok(&[
            "get",
            "lease",
            "-n",
            "kube-system",
            "kube-scheduler",
            "-o",
            "jsonpath={.spec.holderIdentity}",
        ])
    };
    let first = c.eventually(
        &[
            "get",
            "lease",
            "-n",
            "kube-system",
            "kube-scheduler",
            "-o",
            "jsonpath={.spec.holderIdentity}",
        ],
        |o| !o.is_empty(),
    );
    apply(&c, "one", deployment("one", 1, json!({})));
    wait_running(&c, "one", 1);

    // Kill the leader outright (no lease release) and schedule again.
    let ids: Vec<String> = schedulers
        .iter()
        .map(|(_, log)| identity_in(&c.dir.path().join(log)).expect("identity logged"))
        .collect();
    let leader = ids
        .iter()
        .position(|i| *i == first)
        .expect("the holder is one of ours");
    schedulers[leader].0.kill();
    apply(&c, "two", deployment("two", 1, json!({})));
    wait_running(&c, "two", 1);
    assert_eq!(holder(&c), ids[1 - leader]);
}

#[test]
fn deleting_a_deployment_cascades_in_the_background_foreground_or_not_at_all() {
    let c = Cluster::start();
    let _sim = Proc::sim(&c, 2, &[]);
    for app in ["bg", "fg", "orphan"] {
        apply(&c, app, deployment(app, 2, json!({})));
    }
    for app in ["bg", "fg", "orphan"] {
        wait_running(&c, app, 2);
    }
    let count = |kind: &str, app: &str| {
        c.ok(&["get", kind, "-l", &format!("app={app}"), "-o", "name"])
            .lines()
            .count()
    };

    c.ok(&["delete", "deployment", "bg"]);
    c.eventually(&["get", "rs,pods", "-l", "app=bg", "-o", "name"], |o| {
        o.trim().is_empty()
    });

    // Foreground: kubectl waits until the owner is gone, which happens only
    // after its dependents are.
    c.ok(&[
        "delete",
        "deployment",
        "fg",
        "--cascade=foreground",
        "--timeout=60s",
    ]);
    assert_eq!(count("rs", "fg"), 0);
    assert_eq!(count("pods", "fg"), 0);

    // Orphan: the ReplicaSet and its pods stay, with no owner.
    c.ok(&["delete", "deployment", "orphan", "--cascade=orphan"]);
    c.eventually(&["get", "deployments", "-o", "name"], |o| {
        o.trim().is_empty()
    });
    assert_eq!(count("rs", "orphan"), 1);
    assert_eq!(wait_running(&c, "orphan", 2).values().sum::<usize>(), 2);
    let owners = c.ok(&[
        "get",
        "rs",
        "-l",
        "app=orphan",
        "-o",
        "jsonpath={.items[*].metadata.ownerReferences}",
    ]);
    assert!(owners.trim().is_empty(), "{owners}");
}

#[test]
fn endpoint_slices_follow_pod_readiness() {
    let c = Cluster::start();
    let _sim = Proc::sim(&c, 2, &[]);
    apply(
        &c,
        "gated",
        deployment(
            "gated",
            2,
            json!({"readinessGates": [{"conditionType": "example.com/ready"}]}),
        ),
    );
    c.ok(&["expose", "deployment", "gated", "--port=80"]);
    let endpoints = |c: &Cluster| {
        c.ok(&[
            "get",
            "endpointslices",
            "-l",
            "kubernetes.io/service-name=gated",
            "-o",
            "jsonpath={range .items[*].endpoints[*]}{.targetRef.name}={.conditions.ready}{\"\\n\"}{end}",
        ])
    };
    // Running but held back by the gate: listed, not ready.
    wait_running(&c, "gated", 2);
    let deadline = Instant::now() + Duration::from_secs(60);
    while endpoints(&c)
        .lines()
        .filter(|l| l.ends_with("=false"))
        .count()
        != 2
    {
        assert!(Instant::now() < deadline, "{}", endpoints(&c));
        std::thread::sleep(Duration::from_millis(250));
    }
    // Opening the gate of one pod makes just that endpoint ready.
    let pod = c.ok(&[
        "get",
        "pods",
        "-l",
        "app=gated",
        "-o",
        "jsonpath={.items[0].metadata.name}",
    ]);
    c.ok(&[
        "patch",
        "pod",
        &pod,
        "--subresource=status",
        "--type=json",
        "-p",
        r#"[{"op":"add","path":"/status/conditions/-","value":{"type":"example.com/ready","status":"True"}}]"#,
    ]);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let e = endpoints(&c);
        if e.lines().any(|l| l == format!("{pod}=true"))
            && e.lines().filter(|l| l.ends_with("=false")).count() == 1
        {
            break;
        }
        assert!(Instant::now() < deadline, "{e}");
        std::thread::sleep(Duration::from_millis(250));
    }
    assert_eq!(
        pod_field(&c, &pod, ".status.conditions[?(@.type==\"Ready\")].status"),
        "True"
    );
}

/// Pod names of `app` with their nodes, sorted.
fn pods_of(c: &Cluster, app: &str) -> Vec<(String, String)> {
    let out = c.ok(&[
        "get",
        "pods",
        "-l",
        &format!("app={app}"),
        "-o",
        "jsonpath={range .items[*]}{.metadata.name} {.spec.nodeName} {.metadata.deletionTimestamp}{\"\\n\"}{end}",
    ]);
    // Pods being deleted are on their way out: not counted.
    let mut v: Vec<(String, String)> = out
        .lines()
        .map(|l| l.split(' ').collect::<Vec<_>>())
        .filter(|f| f.len() == 3 && f[2].is_empty())
        .map(|f| (f[0].to_string(), f[1].to_string()))
        .collect();
    v.sort();
    v
}

/// Waits until `app`'s Running pods sit exactly on `nodes`, one each.
fn wait_daemon_on(c: &Cluster, app: &str, nodes: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let p = placement(c, app);
        let mut on: Vec<&str> = p.keys().map(String::as_str).collect();
        on.sort();
        if on == nodes && p.values().all(|n| *n == 1) && pods_of(c, app).len() == nodes.len() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{app} on {p:?}, wanted {nodes:?}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn a_daemonset_follows_nodes_joining_leaving_and_tainted() {
    let c = Cluster::start();
    let _sim = Proc::sim(&c, 2, &[]);
    let ds = json!({
        "apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "agent"},
        "spec": {"selector": {"matchLabels": {"app": "agent"}},
                 "template": {"metadata": {"labels": {"app": "agent"}},
                              "spec": {"containers": [{"name": "c", "image": "busybox:1"}]}}}});
    apply(&c, "agent", ds);
    c.ok(&["rollout", "status", "daemonset/agent", "--timeout=60s"]);
    wait_daemon_on(&c, "agent", &["sim-node-0", "sim-node-1"]);

    // A node joins.
    let mut extra = Proc::start(
        &c,
        "sim-extra.log",
        &["sim", "--nodes", "1", "--prefix", "extra"],
    );
    wait_daemon_on(&c, "agent", &["extra-0", "sim-node-0", "sim-node-1"]);
    // ...and leaves.
    extra.kill();
    c.ok(&["delete", "node", "extra-0"]);
    wait_daemon_on(&c, "agent", &["sim-node-0", "sim-node-1"]);
    // A NoExecute taint the pods do not tolerate evicts them from that node.
    c.ok(&["taint", "node", "sim-node-1", "maintenance=now:NoExecute"]);
    wait_daemon_on(&c, "agent", &["sim-node-0"]);
    c.ok(&["taint", "node", "sim-node-1", "maintenance-"]);
    wait_daemon_on(&c, "agent", &["sim-node-0", "sim-node-1"]);

    // A template change rolls out as a new revision; undo goes back.
    let generation = |c: &Cluster| {
        c.ok(&[
            "get",
            "ds",
            "agent",
            "-o",
            "jsonpath={.metadata.annotations.deprecated\\.daemonset\\.template\\.generation}",
        ])
    };
    assert_eq!(generation(&c), "1");
    c.ok(&["set", "image", "daemonset/agent", "c=busybox:2"]);
    assert_eq!(generation(&c), "2");
    c.ok(&["rollout", "status", "daemonset/agent", "--timeout=60s"]);
    check_new_image_then_undo(&c, "daemonset/agent", "app=agent", 2);
}

#[test]
fn a_statefulset_starts_pods_in_order_and_removes_them_in_reverse() {
    let c = Cluster::start();
    let _sim = Proc::sim(&c, 2, &[]);
    let watch = PodWatch::start(&c, "app=web", "sts-watch.json");
    let sts = json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "web"},
        "spec": {"serviceName": "web", "replicas": 3,
                 "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "c", "image": "busybox:1",
                                        "volumeMounts": [{"name": "www", "mountPath": "/www"}]}]}},
                 "volumeClaimTemplates": [{"metadata": {"name": "www"},
                     "spec": {"accessModes": ["ReadWriteOnce"],
                              "resources": {"requests": {"storage": "1Gi"}}}}]}});
    apply(&c, "web", sts);
    c.ok(&["rollout", "status", "statefulset/web", "--timeout=60s"]);
    assert_eq!(
        pods_of(&c, "web")
            .into_iter()
            .map(|p| p.0)
            .collect::<Vec<_>>(),
        ["web-0", "web-1", "web-2"]
    );
    let claims = c.ok(&["get", "pvc", "-o", "name"]);
    for i in 0..3 {
        assert!(claims.contains(&format!("www-web-{i}")), "{claims}");
    }
    c.ok(&["scale", "statefulset/web", "--replicas=0"]);
    c.eventually(&["get", "pods", "-l", "app=web", "-o", "name"], |o| {
        o.trim().is_empty()
    });
    // From the watch: each pod was created only after the one before it
    // was Ready, and they were deleted highest ordinal first.
    let mut created = Vec::new();
    let mut ready = Vec::new();
    let mut deleting = Vec::new();
    for (ev, name) in watch.stop() {
        let obj = &ev["object"];
        if ev["type"] == "ADDED" && !created.contains(&name) {
            assert!(
                created.len() == ready.len(),
                "{name} created before {:?} was ready",
                created.last()
            );
            created.push(name.clone());
        }
        let is_ready = obj["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Ready" && c["status"] == "True");
        if is_ready && !ready.contains(&name) && obj["metadata"]["deletionTimestamp"].is_null() {
            ready.push(name.clone());
        }
        if !obj["metadata"]["deletionTimestamp"].is_null() && !deleting.contains(&name) {
            deleting.push(name);
        }
    }
    assert_eq!(created, ["web-0", "web-1", "web-2"]);
    assert_eq!(deleting, ["web-2", "web-1", "web-0"]);
}

fn job(name: &str, completions: u32, parallelism: u32, backoff: u32, exit_code: i32) -> Value {
    json!({
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
        "spec": {"completions": completions, "parallelism": parallelism, "backoffLimit": backoff,
                 "template": {"metadata": {"annotations": {
                                 "kelson.dev/sim-exit-after": "1s",
                                 "kelson.dev/sim-exit-code": exit_code.to_string()}},
                              "spec": {"restartPolicy": "Never",
                                       "containers": [{"name": "c", "image": "busybox"}]}}}})
}

#[test]
fn jobs_complete_or_stop_at_their_backoff_limit() {
    let c = Cluster::start();
    let _sim = Proc::sim(&c, 2, &[]);
    let watch = PodWatch::start(&c, "job-name=five", "job-watch.json");
    apply(&c, "five", job("five", 5, 2, 6, 0));
    apply(&c, "fails", job("fails", 1, 1, 2, 3));
    c.ok(&[
        "wait",
        "--for=condition=Complete",
        "job/five",
        "--timeout=90s",
    ]);
    assert_eq!(
        c.ok(&["get", "job", "five", "-o", "jsonpath={.status.succeeded}"]),
        "5"
    );
    // Never more than `parallelism` pods running at once.
    let mut running: HashMap<String, bool> = HashMap::new();
    for (ev, name) in watch.stop() {
        let obj = &ev["object"];
        let phase = obj["status"]["phase"].as_str().unwrap_or("");
        running.insert(
            name,
            ev["type"] != "DELETED" && (phase == "Running" || phase == "Pending"),
        );
        let active = running.values().filter(|r| **r).count();
        assert!(active <= 2, "{active} pods active at once");
    }

    c.ok(&[
        "wait",
        "--for=condition=Failed",
        "job/fails",
        "--timeout=120s",
    ]);
    let reason = c.ok(&[
        "get",
        "job",
        "fails",
        "-o",
        "jsonpath={.status.conditions[?(@.type==\"Failed\")].reason}",
    ]);
    assert_eq!(reason, "BackoffLimitExceeded");
    // backoffLimit 2: the first try and two retries.
    assert_eq!(
        c.ok(&["get", "job", "fails", "-o", "jsonpath={.status.failed}"]),
        "3"
    );
}

#[test]
fn a_cronjob_creates_a_job_at_the_next_real_minute() {
    let c = Cluster::start();
    let _sim = Proc::sim(&c, 1, &[]);
    let cj = json!({
        "apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "tick"},
        "spec": {"schedule": "* * * * *",
                 "jobTemplate": {"spec": {"template": {
                     "metadata": {"annotations": {"kelson.dev/sim-exit-after": "1s"}},
                     "spec": {"restartPolicy": "Never",
                              "containers": [{"name": "c", "image": "busybox"}]}}}}}});
    apply(&c, "tick", cj);
    // Within a minute and a bit: a Job named for its scheduled minute,
    // which then completes and is recorded on the CronJob.
    let deadline = Instant::now() + Duration::from_secs(80);
    let name = loop {
        let jobs = c.ok(&["get", "jobs", "-o", "jsonpath={.items[*].metadata.name}"]);
        if let Some(n) = jobs.split_whitespace().next() {
            break n.to_string();
        }
        assert!(Instant::now() < deadline, "no Job from the CronJob");
        std::thread::sleep(Duration::from_millis(500));
    };
    let minutes: u64 = name.strip_prefix("tick-").unwrap().parse().unwrap();
    let now_minutes = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        / 60;
    assert!(
        now_minutes.abs_diff(minutes) <= 1,
        "{name} at minute {now_minutes}"
    );
    c.ok(&[
        "wait",
        "--for=condition=Complete",
        &format!("job/{name}"),
        "--timeout=60s",
    ]);
    c.eventually(
        &[
            "get",
            "cronjob",
            "tick",
            "-o",
            "jsonpath={.status.lastSuccessfulTime}",
        ],
        |o| !o.is_empty(),
    );
}

/// After `kubectl set image … =busybox:2` has rolled out: every Running pod
/// of `selector` runs busybox:2, history lists both revisions, and
/// `rollout undo` brings the template back to busybox:1.
fn check_new_image_then_undo(c: &Cluster, workload: &str, selector: &str, pods: usize) {
    let images = c.ok(&[
        "get",
        "pods",
        "-l",
        selector,
        "--field-selector=status.phase=Running",
        "-o",
        "jsonpath={.items[*].spec.containers[0].image}",
    ]);
    assert_eq!(
        images.split_whitespace().collect::<Vec<_>>(),
        vec!["busybox:2"; pods]
    );
    let history = c.ok(&["rollout", "history", workload]);
    assert!(history.contains('1') && history.contains('2'), "{history}");
    c.ok(&["rollout", "undo", workload]);
    c.ok(&["rollout", "status", workload, "--timeout=60s"]);
    assert_eq!(
        c.ok(&[
            "get",
            workload,
            "-o",
            "jsonpath={.spec.template.spec.containers[0].image}"
        ]),
        "busybox:1"
    );
}
