use jiff::{SignedDuration, Timestamp};
use serde_json::{json, Value};

use super::*;

fn now() -> Timestamp {
    "2024-06-01T12:00:00Z".parse().unwrap()
}

/// RFC 3339 text for `now - secs`.
fn ago(secs: i64) -> String {
    (now() - SignedDuration::from_secs(secs)).to_string()
}

fn row(group: &str, resource: &str, obj: &Value) -> Vec<Value> {
    let cells = cells(group, resource, obj, now());
    let cols = columns(group, resource).expect("printer");
    assert_eq!(
        cells.len(),
        cols.len(),
        "one cell per column for {resource}"
    );
    cells
}

fn strs(cells: &[Value]) -> Vec<String> {
    cells
        .iter()
        .map(|c| match c {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
        .collect()
}

fn names(cols: &[Column]) -> Vec<&str> {
    cols.iter().map(|c| c.name).collect()
}

// ---------------------------------------------------------------- ages

#[test]
fn age_follows_human_duration_boundaries() {
    let cases: &[(i64, &str)] = &[
        (0, "0s"),
        (59, "59s"),
        (60, "60s"),
        (119, "119s"),
        (120, "2m"),
        (125, "2m5s"),
        (599, "9m59s"),
        (600, "10m"),
        (179 * 60 + 59, "179m"),
        (3 * 3600, "3h"),
        (3 * 3600 + 5 * 60, "3h5m"),
        (8 * 3600 - 1, "7h59m"),
        (8 * 3600, "8h"),
        (47 * 3600, "47h"),
        (48 * 3600, "2d"),
        (51 * 3600, "2d3h"),
        (8 * 86400 - 1, "7d23h"),
        (8 * 86400, "8d"),
        (729 * 86400, "729d"),
        (730 * 86400, "2y"),
        (735 * 86400, "2y5d"),
        (8 * 365 * 86400, "8y"),
        (-1, "0s"),
        (-2, "<invalid>"),
    ];
    for &(secs, want) in cases {
        assert_eq!(age(Some(&ago(secs)), now()), want, "{secs}s");
    }
}

#[test]
fn age_of_missing_or_zero_time_is_unknown() {
    assert_eq!(age(None, now()), "<unknown>");
    assert_eq!(age(Some(""), now()), "<unknown>");
    assert_eq!(age(Some("0001-01-01T00:00:00Z"), now()), "<unknown>");
    assert_eq!(age(Some("yesterday"), now()), "<invalid>");
    // Fractional (MicroTime) timestamps parse too.
    assert_eq!(age(Some("2024-06-01T11:55:00.123456Z"), now()), "4m59s");
}

// ---------------------------------------------------------------- pods

fn pod(status: Value) -> Value {
    json!({
        "metadata": {"name": "web", "namespace": "default", "creationTimestamp": ago(300)},
        "spec": {"nodeName": "node-1", "containers": [{"name": "app", "image": "nginx"}]},
        "status": status,
    })
}

#[test]
fn pod_columns_match_kubectl_headers() {
    let cols = columns("", "pods").unwrap();
    assert_eq!(
        names(cols),
        [
            "Name",
            "Ready",
            "Status",
            "Restarts",
            "Age",
            "IP",
            "Node",
            "Nominated Node",
            "Readiness Gates"
        ]
    );
    assert_eq!(cols[0].format, "name");
    assert_eq!(cols[3].type_, "string");
    assert!(cols[..5].iter().all(|c| c.priority == 0));
    assert!(cols[5..].iter().all(|c| c.priority == 1));
}

#[test]
fn running_pod() {
    let p = pod(json!({
        "phase": "Running", "podIP": "10.244.0.5", "podIPs": [{"ip": "10.244.0.5"}],
        "conditions": [{"type": "Ready", "status": "True"}],
        "containerStatuses": [{"name": "app", "ready": true, "restartCount": 0,
            "state": {"running": {"startedAt": ago(290)}}}],
    }));
    assert_eq!(
        strs(&row("", "pods", &p)),
        [
            "web",
            "1/1",
            "Running",
            "0",
            "5m",
            "10.244.0.5",
            "node-1",
            "<none>",
            "<none>"
        ]
    );
}

#[test]
fn pending_pods() {
    let mut p = pod(json!({"phase": "Pending"}));
    p["spec"].as_object_mut().unwrap().remove("nodeName");
    assert_eq!(
        strs(&row("", "pods", &p)),
        ["web", "0/1", "Pending", "0", "5m", "<none>", "<none>", "<none>", "<none>"]
    );
    let p = pod(
        json!({"phase": "Pending", "containerStatuses": [{"name": "app", "ready": false,
        "restartCount": 0, "state": {"waiting": {"reason": "ContainerCreating"}}}]}),
    );
    assert_eq!(
        strs(&row("", "pods", &p))[1..3],
        ["0/1", "ContainerCreating"]
    );
}

#[test]
fn init_container_states() {
    let with_init = |init_status: Value| {
        let mut p = pod(
            json!({"phase": "Pending", "initContainerStatuses": [init_status],
            "containerStatuses": [{"name": "app", "ready": false, "restartCount": 0,
                "state": {"waiting": {"reason": "PodInitializing"}}}]}),
        );
        p["spec"]["initContainers"] = json!([{"name": "setup", "image": "busybox"}]);
        strs(&row("", "pods", &p))
    };
    let running = with_init(json!({"name": "setup", "ready": false, "restartCount": 0,
        "state": {"running": {"startedAt": ago(10)}}}));
    assert_eq!(running[1..4], ["0/1", "Init:0/1", "0"]);

    let crashing = with_init(json!({"name": "setup", "ready": false, "restartCount": 4,
        "state": {"waiting": {"reason": "CrashLoopBackOff"}},
        "lastState": {"terminated": {"exitCode": 1, "reason": "Error", "finishedAt": ago(60)}}}));
    assert_eq!(crashing[2..4], ["Init:CrashLoopBackOff", "4 (60s ago)"]);

    let failed = with_init(json!({"name": "setup", "ready": false, "restartCount": 0,
        "state": {"terminated": {"exitCode": 2}}}));
    assert_eq!(failed[2], "Init:ExitCode:2");

    let signalled = with_init(json!({"name": "setup", "ready": false, "restartCount": 0,
        "state": {"terminated": {"exitCode": 137, "signal": 9}}}));
    assert_eq!(signalled[2], "Init:Signal:9");

    // A finished init container hands over to the main containers' state.
    let done = with_init(json!({"name": "setup", "ready": false, "restartCount": 0,
        "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}));
    assert_eq!(done[2], "PodInitializing");
}

#[test]
fn crashlooping_pod_shows_restarts_with_last_restart_age() {
    let p = pod(
        json!({"phase": "Running", "containerStatuses": [{"name": "app", "ready": false,
        "restartCount": 3, "state": {"waiting": {"reason": "CrashLoopBackOff"}},
        "lastState": {"terminated": {"exitCode": 1, "reason": "Error", "finishedAt": ago(300)}}}]}),
    );
    assert_eq!(
        strs(&row("", "pods", &p))[1..4],
        ["0/1", "CrashLoopBackOff", "3 (5m ago)"]
    );
}

#[test]
fn restarts_without_termination_time_show_only_the_count() {
    let p = pod(
        json!({"phase": "Running", "containerStatuses": [{"name": "app", "ready": true,
        "restartCount": 2, "state": {"running": {}}}]}),
    );
    assert_eq!(strs(&row("", "pods", &p))[3], "2");
}

#[test]
fn terminating_and_completed_pods() {
    let mut p = pod(
        json!({"phase": "Running", "containerStatuses": [{"name": "app", "ready": true,
        "restartCount": 0, "state": {"running": {}}}]}),
    );
    p["metadata"]["deletionTimestamp"] = json!(ago(5));
    assert_eq!(strs(&row("", "pods", &p))[2], "Terminating");

    // Deleting a finished pod keeps its final status.
    let mut done = pod(
        json!({"phase": "Succeeded", "containerStatuses": [{"name": "app",
        "ready": false, "restartCount": 0,
        "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]}),
    );
    assert_eq!(strs(&row("", "pods", &done))[1..3], ["0/1", "Completed"]);
    done["metadata"]["deletionTimestamp"] = json!(ago(5));
    assert_eq!(strs(&row("", "pods", &done))[2], "Completed");

    let mut lost = pod(json!({"phase": "Running", "reason": "NodeLost"}));
    lost["metadata"]["deletionTimestamp"] = json!(ago(5));
    assert_eq!(strs(&row("", "pods", &lost))[2], "Unknown");

    let failed = pod(
        json!({"phase": "Failed", "containerStatuses": [{"name": "app",
        "ready": false, "restartCount": 0, "state": {"terminated": {"exitCode": 3}}}]}),
    );
    assert_eq!(strs(&row("", "pods", &failed))[2], "ExitCode:3");
}

#[test]
fn completed_container_next_to_a_running_one() {
    let p = |ready: &str| {
        let mut p = pod(json!({"phase": "Running",
            "conditions": [{"type": "Ready", "status": ready}],
            "containerStatuses": [
                {"name": "app", "ready": true, "restartCount": 0, "state": {"running": {}}},
                {"name": "batch", "ready": false, "restartCount": 0,
                 "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]}));
        p["spec"]["containers"] = json!([{"name": "app"}, {"name": "batch"}]);
        strs(&row("", "pods", &p))
    };
    assert_eq!(p("True")[1..3], ["1/2", "Running"]);
    assert_eq!(p("False")[1..3], ["1/2", "NotReady"]);
}

#[test]
fn sidecar_containers_count_toward_ready() {
    let mut p = pod(json!({"phase": "Running",
        "conditions": [{"type": "Initialized", "status": "True"}, {"type": "Ready", "status": "True"}],
        "initContainerStatuses": [{"name": "proxy", "ready": true, "started": true, "restartCount": 1,
            "state": {"running": {}},
            "lastState": {"terminated": {"exitCode": 1, "finishedAt": ago(120)}}}],
        "containerStatuses": [{"name": "app", "ready": true, "restartCount": 0, "state": {"running": {}}}]}));
    p["spec"]["initContainers"] = json!([{"name": "proxy", "restartPolicy": "Always"}]);
    assert_eq!(
        strs(&row("", "pods", &p))[1..4],
        ["2/2", "Running", "1 (2m ago)"]
    );
}

#[test]
fn scheduling_gated_pod_and_readiness_gates() {
    let mut p = pod(json!({"phase": "Pending",
        "conditions": [{"type": "PodScheduled", "status": "False", "reason": "SchedulingGated"},
                       {"type": "example.com/lb", "status": "True"}]}));
    p["spec"]["readinessGates"] =
        json!([{"conditionType": "example.com/lb"}, {"conditionType": "other"}]);
    let r = strs(&row("", "pods", &p));
    assert_eq!(r[2], "SchedulingGated");
    assert_eq!(r[8], "1/2");
}

// ---------------------------------------------------------------- workloads

#[test]
fn deployment_row() {
    let d = json!({
        "metadata": {"name": "web", "creationTimestamp": ago(2 * 86400 + 3 * 3600)},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
            "template": {"spec": {"containers": [{"name": "nginx", "image": "nginx:1.25"},
                                                 {"name": "log", "image": "busybox"}]}}},
        "status": {"replicas": 3, "readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2},
    });
    assert_eq!(
        names(columns("apps", "deployments").unwrap()),
        [
            "Name",
            "Ready",
            "Up-to-date",
            "Available",
            "Age",
            "Containers",
            "Images",
            "Selector"
        ]
    );
    let r = row("apps", "deployments", &d);
    assert_eq!(r[1], json!("2/3"));
    assert_eq!(r[2], json!(3));
    assert_eq!(r[3], json!(2));
    assert_eq!(
        strs(&r)[4..],
        ["2d3h", "nginx,log", "nginx:1.25,busybox", "app=web"]
    );

    // A fresh deployment without status.
    let fresh = json!({"metadata": {"name": "x"}, "spec": {"replicas": 1}});
    assert_eq!(
        strs(&row("apps", "deployments", &fresh))[1..5],
        ["0/1", "0", "0", "<unknown>"]
    );
}

#[test]
fn selectors_render_like_upstream() {
    let rs = json!({"metadata": {"name": "r"}, "spec": {"replicas": 2, "selector": {
        "matchLabels": {"tier": "web", "app": "shop"},
        "matchExpressions": [{"key": "env", "operator": "In", "values": ["prod", "dev"]},
                             {"key": "canary", "operator": "DoesNotExist"}]}}});
    assert_eq!(
        strs(&row("apps", "replicasets", &rs))[7],
        "app=shop,!canary,env in (dev,prod),tier=web"
    );
    let empty = json!({"metadata": {"name": "r"}, "spec": {"selector": {}}});
    assert_eq!(strs(&row("apps", "replicasets", &empty))[7], "<none>");
}

#[test]
fn statefulset_and_daemonset_rows() {
    let ss = json!({"metadata": {"name": "db", "creationTimestamp": ago(60)},
        "spec": {"replicas": 3, "template": {"spec": {"containers": [{"name": "pg", "image": "postgres"}]}}},
        "status": {"readyReplicas": 1}});
    assert_eq!(
        strs(&row("apps", "statefulsets", &ss)),
        ["db", "1/3", "60s", "pg", "postgres"]
    );

    let ds = json!({"metadata": {"name": "agent", "creationTimestamp": ago(60)},
        "spec": {"selector": {"matchLabels": {"app": "agent"}},
            "template": {"spec": {"nodeSelector": {"kubernetes.io/os": "linux"},
                "containers": [{"name": "a", "image": "agent:1"}]}}},
        "status": {"desiredNumberScheduled": 2, "currentNumberScheduled": 2, "numberReady": 1,
            "updatedNumberScheduled": 2, "numberAvailable": 1}});
    assert_eq!(
        strs(&row("apps", "daemonsets", &ds)),
        [
            "agent",
            "2",
            "2",
            "1",
            "2",
            "1",
            "kubernetes.io/os=linux",
            "60s",
            "a",
            "agent:1",
            "app=agent"
        ]
    );
}

#[test]
fn controller_revision_names_its_owner() {
    let cr = json!({"metadata": {"name": "agent-7d9f", "creationTimestamp": ago(60),
        "ownerReferences": [{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "agent", "controller": true}]},
        "revision": 2});
    assert_eq!(
        strs(&row("apps", "controllerrevisions", &cr)),
        ["agent-7d9f", "daemonset.apps/agent", "2", "60s"]
    );
}

#[test]
fn job_rows() {
    let done = json!({"metadata": {"name": "pi", "creationTimestamp": ago(600)},
        "spec": {"completions": 1, "parallelism": 1, "selector": {"matchLabels": {"batch.kubernetes.io/controller-uid": "u1"}},
            "template": {"spec": {"containers": [{"name": "pi", "image": "perl"}]}}},
        "status": {"succeeded": 1, "startTime": ago(600), "completionTime": ago(570),
            "conditions": [{"type": "SuccessCriteriaMet", "status": "True"}, {"type": "Complete", "status": "True"}]}});
    assert_eq!(
        names(columns("batch", "jobs").unwrap()),
        [
            "Name",
            "Status",
            "Completions",
            "Duration",
            "Age",
            "Containers",
            "Images",
            "Selector"
        ]
    );
    assert_eq!(
        strs(&row("batch", "jobs", &done)),
        [
            "pi",
            "Complete",
            "1/1",
            "30s",
            "10m",
            "pi",
            "perl",
            "batch.kubernetes.io/controller-uid=u1"
        ]
    );

    let running = json!({"metadata": {"name": "work", "creationTimestamp": ago(200)},
        "spec": {"parallelism": 3}, "status": {"startTime": ago(190), "active": 3}});
    assert_eq!(
        strs(&row("batch", "jobs", &running))[1..4],
        ["Running", "0/1 of 3", "3m10s"]
    );

    let failed = json!({"metadata": {"name": "f"}, "spec": {"completions": 2},
        "status": {"conditions": [{"type": "Failed", "status": "True"}]}});
    assert_eq!(
        strs(&row("batch", "jobs", &failed))[1..4],
        ["Failed", "0/2", ""]
    );

    let suspended = json!({"metadata": {"name": "s"}, "spec": {},
        "status": {"conditions": [{"type": "Suspended", "status": "True"}]}});
    assert_eq!(
        strs(&row("batch", "jobs", &suspended))[1..3],
        ["Suspended", "0/1"]
    );
}

#[test]
fn cronjob_row() {
    let cj = json!({"metadata": {"name": "backup", "creationTimestamp": ago(3 * 86400)},
        "spec": {"schedule": "*/5 * * * *", "suspend": false,
            "jobTemplate": {"spec": {"template": {"spec": {"containers": [{"name": "b", "image": "backup:2"}]}}}}},
        "status": {"active": [{"name": "backup-1"}], "lastScheduleTime": ago(120)}});
    assert_eq!(
        names(columns("batch", "cronjobs").unwrap()),
        [
            "Name",
            "Schedule",
            "Timezone",
            "Suspend",
            "Active",
            "Last Schedule",
            "Age",
            "Containers",
            "Images",
            "Selector"
        ]
    );
    let r = row("batch", "cronjobs", &cj);
    assert_eq!(r[4], json!(1));
    assert_eq!(
        strs(&r),
        [
            "backup",
            "*/5 * * * *",
            "<none>",
            "False",
            "1",
            "2m",
            "3d",
            "b",
            "backup:2",
            "<none>"
        ]
    );
    let never =
        json!({"metadata": {"name": "n"}, "spec": {"schedule": "@daily", "timeZone": "Etc/UTC"}});
    assert_eq!(
        strs(&row("batch", "cronjobs", &never))[1..6],
        ["@daily", "Etc/UTC", "<unset>", "0", "<none>"]
    );
}

#[test]
fn hpa_targets() {
    let hpa = json!({"metadata": {"name": "web", "creationTimestamp": ago(60)},
        "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"}, "minReplicas": 1, "maxReplicas": 10,
            "metrics": [
                {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 50}}},
                {"type": "Resource", "resource": {"name": "memory", "target": {"type": "AverageValue", "averageValue": "100Mi"}}},
                {"type": "Pods", "pods": {"metric": {"name": "qps"}, "target": {"type": "AverageValue", "averageValue": "1k"}}}]},
        "status": {"currentReplicas": 2, "currentMetrics": [
            {"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": 12, "averageValue": "60m"}}}]}});
    assert_eq!(
        strs(&row("autoscaling", "horizontalpodautoscalers", &hpa)),
        [
            "web",
            "Deployment/web",
            "cpu: 12%/50%, memory: <unknown>/100Mi + 1 more...",
            "1",
            "10",
            "2",
            "60s"
        ]
    );
    // autoscaling/v1 shape.
    let v1 = json!({"metadata": {"name": "v1"}, "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "a"},
        "maxReplicas": 3, "targetCPUUtilizationPercentage": 80}, "status": {"currentReplicas": 1}});
    assert_eq!(
        strs(&row("autoscaling", "horizontalpodautoscalers", &v1))[2..4],
        ["cpu: <unknown>/80%", "<unset>"]
    );
}

#[test]
fn pdb_row() {
    let pdb = json!({"metadata": {"name": "db", "creationTimestamp": ago(60)},
        "spec": {"minAvailable": "50%"}, "status": {"disruptionsAllowed": 1}});
    assert_eq!(
        strs(&row("policy", "poddisruptionbudgets", &pdb)),
        ["db", "50%", "N/A", "1", "60s"]
    );
}

// ---------------------------------------------------------------- services & network

fn svc(spec: Value, status: Value) -> Value {
    json!({"metadata": {"name": "web", "creationTimestamp": ago(7200)}, "spec": spec, "status": status})
}

#[test]
fn service_rows() {
    let cluster_ip = svc(
        json!({"type": "ClusterIP", "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"],
            "selector": {"app": "web"}, "ports": [{"port": 80, "protocol": "TCP", "targetPort": 8080}]}),
        json!({}),
    );
    assert_eq!(
        strs(&row("", "services", &cluster_ip)),
        [
            "web",
            "ClusterIP",
            "10.96.0.10",
            "<none>",
            "80/TCP",
            "120m",
            "app=web"
        ]
    );

    let node_port = svc(
        json!({"type": "NodePort", "clusterIP": "10.96.1.1", "ports": [
            {"port": 80, "nodePort": 30080, "protocol": "TCP"}, {"port": 53, "nodePort": 30053, "protocol": "UDP"}]}),
        json!({}),
    );
    assert_eq!(
        strs(&row("", "services", &node_port))[2..5],
        ["10.96.1.1", "<none>", "80:30080/TCP,53:30053/UDP"]
    );

    let pending = svc(
        json!({"type": "LoadBalancer", "clusterIP": "10.96.2.2", "ports": [{"port": 443, "nodePort": 31443}]}),
        json!({"loadBalancer": {}}),
    );
    assert_eq!(
        strs(&row("", "services", &pending))[3..5],
        ["<pending>", "443:31443/TCP"]
    );

    let provisioned = svc(
        json!({"type": "LoadBalancer", "clusterIP": "10.96.2.2", "externalIPs": ["192.0.2.9"], "ports": []}),
        json!({"loadBalancer": {"ingress": [{"ip": "203.0.113.7"}, {"hostname": "a-very-long-lb-hostname.example.com"}]}}),
    );
    // The server renders the wide form: nothing is clipped to 16 characters.
    assert_eq!(
        strs(&row("", "services", &provisioned))[3..5],
        [
            "203.0.113.7,a-very-long-lb-hostname.example.com,192.0.2.9",
            "<none>"
        ]
    );

    let headless = svc(
        json!({"clusterIP": "None", "ports": [{"port": 5432}]}),
        json!({}),
    );
    assert_eq!(
        strs(&row("", "services", &headless))[1..5],
        ["ClusterIP", "None", "<none>", "5432/TCP"]
    );

    let external = svc(
        json!({"type": "ExternalName", "externalName": "db.example.com"}),
        json!({}),
    );
    assert_eq!(
        strs(&row("", "services", &external))[1..5],
        ["ExternalName", "<none>", "db.example.com", "<none>"]
    );
}

#[test]
fn endpoints_and_slices() {
    let ep = json!({"metadata": {"name": "web", "creationTimestamp": ago(60)}, "subsets": [
        {"addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}], "ports": [{"port": 80}, {"port": 443}]}]});
    assert_eq!(
        strs(&row("", "endpoints", &ep)),
        [
            "web",
            "10.0.0.1:80,10.0.0.2:80,10.0.0.1:443 + 1 more...",
            "60s"
        ]
    );
    let none = json!({"metadata": {"name": "x"}});
    assert_eq!(strs(&row("", "endpoints", &none))[1], "<none>");

    let slice = json!({"metadata": {"name": "web-abc", "creationTimestamp": ago(60)}, "addressType": "IPv6",
        "ports": [{"name": "http", "port": 80}, {"name": "named"}],
        "endpoints": [{"addresses": ["fd00::1"]}, {"addresses": ["fd00::2"]}]});
    assert_eq!(
        strs(&row("discovery.k8s.io", "endpointslices", &slice)),
        ["web-abc", "IPv6", "80,named", "fd00::1,fd00::2", "60s"]
    );
    let empty = json!({"metadata": {"name": "e"}, "addressType": "IPv4"});
    assert_eq!(
        strs(&row("discovery.k8s.io", "endpointslices", &empty))[2..4],
        ["<unset>", "<unset>"]
    );
}

#[test]
fn ingress_rows() {
    let ing = json!({"metadata": {"name": "web", "creationTimestamp": ago(60)},
        "spec": {"ingressClassName": "nginx", "tls": [{"hosts": ["a.example.com"]}],
            "rules": [{"host": "a.example.com"}, {"host": "b.example.com"}, {}, {"host": "d.example.com"}, {"host": "e.example.com"}]},
        "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.1"}]}}});
    assert_eq!(
        strs(&row("networking.k8s.io", "ingresses", &ing)),
        [
            "web",
            "nginx",
            "a.example.com,b.example.com,d.example.com + 2 more...",
            "192.0.2.1",
            "80, 443",
            "60s"
        ]
    );
    let bare = json!({"metadata": {"name": "b"}, "spec": {"defaultBackend": {}}});
    assert_eq!(
        strs(&row("networking.k8s.io", "ingresses", &bare))[1..5],
        ["<none>", "*", "", "80"]
    );

    let class = json!({"metadata": {"name": "nginx"}, "spec": {"controller": "k8s.io/ingress-nginx",
        "parameters": {"apiGroup": "k8s.example.com", "kind": "IngressParameters", "name": "p"}}});
    assert_eq!(
        strs(&row("networking.k8s.io", "ingressclasses", &class))[1..3],
        [
            "k8s.io/ingress-nginx",
            "IngressParameters.k8s.example.com/p"
        ]
    );
    let np = json!({"metadata": {"name": "deny"}, "spec": {"podSelector": {}}});
    assert_eq!(
        strs(&row("networking.k8s.io", "networkpolicies", &np))[1],
        "<none>"
    );
}

// ---------------------------------------------------------------- nodes & events

#[test]
fn node_rows() {
    let node = json!({"metadata": {"name": "cp-1", "creationTimestamp": ago(10 * 86400), "labels": {
            "node-role.kubernetes.io/control-plane": "", "node-role.kubernetes.io/etcd": "true",
            "kubernetes.io/role": "master", "kubernetes.io/hostname": "cp-1"}},
        "spec": {"unschedulable": true},
        "status": {"conditions": [{"type": "MemoryPressure", "status": "False"}, {"type": "Ready", "status": "True"}],
            "addresses": [{"type": "Hostname", "address": "cp-1"}, {"type": "InternalIP", "address": "172.18.0.2"}],
            "nodeInfo": {"kubeletVersion": "v1.33.1", "osImage": "Debian GNU/Linux 12 (bookworm)",
                "kernelVersion": "6.1.0", "containerRuntimeVersion": "containerd://1.7.0"}}});
    assert_eq!(
        strs(&row("", "nodes", &node)),
        [
            "cp-1",
            "Ready,SchedulingDisabled",
            "control-plane,etcd,master",
            "10d",
            "v1.33.1",
            "172.18.0.2",
            "<none>",
            "Debian GNU/Linux 12 (bookworm)",
            "6.1.0",
            "containerd://1.7.0"
        ]
    );
    let bare = json!({"metadata": {"name": "w"}, "status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}});
    assert_eq!(
        strs(&row("", "nodes", &bare))[1..],
        [
            "NotReady",
            "<none>",
            "<unknown>",
            "",
            "<none>",
            "<none>",
            "<unknown>",
            "<unknown>",
            "<unknown>"
        ]
    );
    let fresh = json!({"metadata": {"name": "n"}});
    assert_eq!(strs(&row("", "nodes", &fresh))[1], "Unknown");
}

#[test]
fn event_rows_in_both_api_versions() {
    assert_eq!(
        names(columns("", "events").unwrap()),
        [
            "Last Seen",
            "Type",
            "Reason",
            "Object",
            "Subobject",
            "Source",
            "Message",
            "First Seen",
            "Count",
            "Name"
        ]
    );
    let core = json!({"metadata": {"name": "web.17a"}, "type": "Warning", "reason": "BackOff",
        "message": "Back-off restarting failed container\n", "count": 7,
        "firstTimestamp": ago(3600), "lastTimestamp": ago(30),
        "involvedObject": {"kind": "Pod", "name": "web", "fieldPath": "spec.containers{app}"},
        "source": {"component": "kubelet", "host": "node-1"}});
    assert_eq!(
        strs(&row("", "events", &core)),
        [
            "30s",
            "Warning",
            "BackOff",
            "pod/web",
            "spec.containers{app}",
            "kubelet, node-1",
            "Back-off restarting failed container",
            "60m",
            "7",
            "web.17a"
        ]
    );
    let v1 = json!({"metadata": {"name": "n.1"}, "type": "Normal", "reason": "Scheduled", "note": "ok",
        "eventTime": "2024-06-01T11:59:00.000000Z", "reportingController": "default-scheduler",
        "reportingInstance": "sched-1", "regarding": {"kind": "Pod", "name": "web"}});
    assert_eq!(
        strs(&row("events.k8s.io", "events", &v1)),
        [
            "60s",
            "Normal",
            "Scheduled",
            "pod/web",
            "",
            "default-scheduler, sched-1",
            "ok",
            "60s",
            "1",
            "n.1"
        ]
    );
    let series = json!({"metadata": {"name": "s"}, "type": "Normal", "reason": "R",
        "eventTime": ago(600), "series": {"count": 4, "lastObservedTime": ago(10)},
        "involvedObject": {"kind": "Node"}});
    let r = row("", "events", &series);
    assert_eq!(strs(&r)[..4], ["10s", "Normal", "R", "node"]);
    assert_eq!(r[8], json!(4));
}

// ---------------------------------------------------------------- config & storage

#[test]
fn simple_core_rows() {
    let ns = json!({"metadata": {"name": "kube-system", "creationTimestamp": ago(86400)}, "status": {"phase": "Active"}});
    assert_eq!(
        strs(&row("", "namespaces", &ns)),
        ["kube-system", "Active", "24h"]
    );
    let cm = json!({"metadata": {"name": "c"}, "data": {"a": "1", "b": "2"}, "binaryData": {"c": "AA=="}});
    assert_eq!(row("", "configmaps", &cm)[1], json!(3));
    let secret = json!({"metadata": {"name": "s"}, "type": "kubernetes.io/tls", "data": {"tls.crt": "", "tls.key": ""}});
    assert_eq!(
        strs(&row("", "secrets", &secret))[1..3],
        ["kubernetes.io/tls", "2"]
    );
    let sa = json!({"metadata": {"name": "default"}});
    assert_eq!(row("", "serviceaccounts", &sa)[1], json!(0));
    let tpl = json!({"metadata": {"name": "t"}, "template": {"metadata": {"labels": {"b": "2", "a": "1"}},
        "spec": {"containers": [{"name": "c", "image": "i"}]}}});
    assert_eq!(
        strs(&row("", "podtemplates", &tpl)),
        ["t", "c", "i", "a=1,b=2"]
    );
    let rc = json!({"metadata": {"name": "rc"}, "spec": {"replicas": 2, "selector": {"app": "x"},
        "template": {"spec": {"containers": [{"name": "c", "image": "i"}]}}}, "status": {"replicas": 2, "readyReplicas": 1}});
    assert_eq!(
        strs(&row("", "replicationcontrollers", &rc)),
        ["rc", "2", "2", "1", "<unknown>", "c", "i", "app=x"]
    );
}

#[test]
fn volume_rows() {
    let pv = json!({"metadata": {"name": "pv-1", "creationTimestamp": ago(60)},
        "spec": {"capacity": {"storage": "10Gi"}, "accessModes": ["ReadWriteMany", "ReadWriteOnce", "ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Retain", "storageClassName": "fast",
            "claimRef": {"namespace": "default", "name": "data"}, "volumeMode": "Filesystem"},
        "status": {"phase": "Bound"}});
    assert_eq!(
        strs(&row("", "persistentvolumes", &pv)),
        [
            "pv-1",
            "10Gi",
            "RWO,RWX",
            "Retain",
            "Bound",
            "default/data",
            "fast",
            "<unset>",
            "",
            "60s",
            "Filesystem"
        ]
    );
    let pending = json!({"metadata": {"name": "data"}, "spec": {"resources": {"requests": {"storage": "1Gi"}},
        "storageClassName": "standard"}, "status": {"phase": "Pending"}});
    assert_eq!(
        strs(&row("", "persistentvolumeclaims", &pending)),
        [
            "data",
            "Pending",
            "",
            "",
            "",
            "standard",
            "<unset>",
            "<unknown>",
            "<unset>"
        ]
    );
    let mut bound = json!({"metadata": {"name": "data"}, "spec": {"volumeName": "pv-1", "storageClassName": "fast"},
        "status": {"phase": "Bound", "capacity": {"storage": "10Gi"}, "accessModes": ["ReadWriteOnce"]}});
    assert_eq!(
        strs(&row("", "persistentvolumeclaims", &bound))[1..5],
        ["Bound", "pv-1", "10Gi", "RWO"]
    );
    bound["metadata"]["deletionTimestamp"] = json!(ago(1));
    assert_eq!(
        strs(&row("", "persistentvolumeclaims", &bound))[1],
        "Terminating"
    );
}

#[test]
fn resource_quota_splits_requests_and_limits() {
    let rq = json!({"metadata": {"name": "q"}, "status": {
        "hard": {"pods": "10", "requests.cpu": "4", "limits.memory": "8Gi", "limits.cpu": "8"},
        "used": {"pods": "3", "requests.cpu": "500m", "limits.cpu": "1"}}});
    assert_eq!(
        strs(&row("", "resourcequotas", &rq))[1..3],
        [
            "pods: 3/10, requests.cpu: 500m/4",
            "limits.cpu: 1/8, limits.memory: 0/8Gi"
        ]
    );
}

#[test]
fn cluster_scoped_rows() {
    let sc = json!({"metadata": {"name": "standard", "creationTimestamp": ago(60),
        "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
        "provisioner": "rancher.io/local-path", "volumeBindingMode": "WaitForFirstConsumer"});
    let r = row("storage.k8s.io", "storageclasses", &sc);
    assert_eq!(
        strs(&r),
        [
            "standard (default)",
            "rancher.io/local-path",
            "Delete",
            "WaitForFirstConsumer",
            "false",
            "60s"
        ]
    );
    assert_eq!(r[4], json!(false));

    let pc = json!({"metadata": {"name": "system-node-critical"}, "value": 2000001000,
        "preemptionPolicy": "PreemptLowerPriority"});
    let r = row("scheduling.k8s.io", "priorityclasses", &pc);
    assert_eq!(r[1], json!(2000001000));
    assert_eq!(r[2], json!(false));
    assert_eq!(r[4], json!("PreemptLowerPriority"));

    let lease =
        json!({"metadata": {"name": "kube-scheduler"}, "spec": {"holderIdentity": "cp-1_abc"}});
    assert_eq!(
        strs(&row("coordination.k8s.io", "leases", &lease))[1],
        "cp-1_abc"
    );

    let rb = json!({"metadata": {"name": "admins", "creationTimestamp": ago(60)},
        "roleRef": {"kind": "ClusterRole", "name": "cluster-admin"},
        "subjects": [{"kind": "User", "name": "alice"}, {"kind": "Group", "name": "ops"},
                     {"kind": "User", "name": "bob"}, {"kind": "ServiceAccount", "namespace": "ci", "name": "deployer"}]});
    assert_eq!(
        strs(&row(
            "rbac.authorization.k8s.io",
            "clusterrolebindings",
            &rb
        )),
        [
            "admins",
            "ClusterRole/cluster-admin",
            "60s",
            "alice, bob",
            "ops",
            "ci/deployer"
        ]
    );
}

// ---------------------------------------------------------------- defaults

#[test]
fn kinds_without_printers_use_the_default_table() {
    for (g, r) in [
        ("rbac.authorization.k8s.io", "roles"),
        ("rbac.authorization.k8s.io", "clusterroles"),
        ("", "limitranges"),
        ("apiextensions.k8s.io", "customresourcedefinitions"),
    ] {
        assert!(columns(g, r).is_none(), "{g}/{r}");
    }
    assert_eq!(names(default_columns()), ["Name", "Created At"]);
    assert_eq!(default_columns()[1].type_, "date");
    let role = json!({"metadata": {"name": "reader", "creationTimestamp": "2024-05-01T08:30:00Z"}});
    assert_eq!(
        cells("rbac.authorization.k8s.io", "roles", &role, now()),
        [json!("reader"), json!("2024-05-01T08:30:00Z")]
    );
    let unset = json!({"metadata": {"name": "x"}});
    assert_eq!(
        default_cells(&unset, now())[1],
        json!("0001-01-01T00:00:00Z")
    );
}

// ---------------------------------------------------------------- custom resources

#[test]
fn crd_printer_columns() {
    let defs = json!([
        {"name": "Replicas", "type": "integer", "jsonPath": ".spec.replicas"},
        {"name": "Ready", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].status",
         "description": "Readiness"},
        {"name": "Ratio", "type": "number", "jsonPath": ".status.ratio", "priority": 1},
        {"name": "Paused", "type": "boolean", "jsonPath": ".spec.paused"},
        {"name": "Labels", "type": "string", "jsonPath": ".metadata.labels"},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ]);
    let cols = custom_columns(&defs);
    let names: Vec<&str> = cols.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        ["Name", "Replicas", "Ready", "Ratio", "Paused", "Labels", "Age"]
    );
    assert_eq!(cols[0].format, "name");
    assert_eq!(
        cols[1].description,
        "Custom resource definition column (in JSONPath format): .spec.replicas"
    );
    assert_eq!(cols[2].description, "Readiness");
    assert_eq!(cols[3].priority, 1);

    let obj = json!({"metadata": {"name": "demo", "creationTimestamp": ago(300), "labels": {"a": "b"}},
        "spec": {"replicas": 3, "paused": "no"},
        "status": {"ratio": 0.5, "conditions": [{"type": "Synced", "status": "True"}, {"type": "Ready", "status": "False"}]}});
    assert_eq!(
        custom_cells(&cols, &obj, now()),
        [
            json!("demo"),
            json!(3),
            json!("False"),
            json!(0.5),
            Value::Null,
            json!("{\"a\":\"b\"}"),
            json!("5m")
        ]
    );
    // Missing values are null cells.
    let sparse = json!({"metadata": {"name": "s"}});
    assert_eq!(
        custom_cells(&cols, &sparse, now()),
        [
            json!("s"),
            Value::Null,
            Value::Null,
            Value::Null,
            Value::Null,
            Value::Null,
            Value::Null
        ]
    );
}

#[test]
fn crd_without_columns_gets_age() {
    let cols = custom_columns(&json!([]));
    let names: Vec<&str> = cols.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["Name", "Age"]);
    assert_eq!(cols[1].type_, "date");
    let obj = json!({"metadata": {"name": "x", "creationTimestamp": ago(7200)}});
    assert_eq!(
        custom_cells(&cols, &obj, now()),
        [json!("x"), json!("120m")]
    );
}

#[test]
fn json_path_subset() {
    let cols = |path: &str, type_: &str| {
        vec![CustomColumn {
            name: "C".into(),
            type_: type_.into(),
            format: String::new(),
            description: String::new(),
            priority: 0,
            json_path: path.into(),
        }]
    };
    let obj = json!({"spec": {"items": [{"n": 1}, {"n": 2}, {"n": 3}], "a.b": "dotted", "big": 1e21, "n": null},
        "status": {"count": 7}});
    let cell = |path: &str, type_: &str| custom_cells(&cols(path, type_), &obj, now()).remove(0);
    assert_eq!(cell(".spec.items[1].n", "integer"), json!(2));
    assert_eq!(cell(".spec.items[-1].n", "integer"), json!(3));
    assert_eq!(cell(".spec.items[*].n", "integer"), json!(1));
    assert_eq!(cell(".spec.items[1:].n", "string"), json!("2"));
    assert_eq!(cell(".spec.items[::2].n", "integer"), json!(1));
    assert_eq!(
        cell(".spec.items[1::9223372036854775807].n", "integer"),
        json!(2)
    );
    assert_eq!(cell(".spec.items[?(@.n > 1)].n", "integer"), json!(2));
    assert_eq!(cell(".spec['a.b']", "string"), json!("dotted"));
    assert_eq!(cell(".spec.a\\.b", "string"), json!("dotted"));
    assert_eq!(cell("..count", "integer"), json!(7));
    assert_eq!(cell(".spec.big", "string"), json!("1e+21"));
    assert_eq!(cell(".spec.n", "string"), json!("<no value>"));
    assert_eq!(cell(".status.count", "string"), json!("7"));
    assert_eq!(cell(".spec.items[9].n", "integer"), Value::Null);
    assert_eq!(cell(".spec.items[?(@.n == 'x')]", "string"), Value::Null);
    assert_eq!(cell(".status.count", "date"), Value::Null);
    assert!(validate_json_path(".spec.replicas").is_ok());
    assert!(validate_json_path(".status.conditions[?(@.type==\"Ready\")].status").is_ok());
    assert!(validate_json_path("spec.replicas").is_err());
    assert!(validate_json_path(".spec[").is_err());
    assert!(validate_json_path(".spec..").is_err());
}

#[test]
fn malformed_objects_never_panic_and_fill_every_column() {
    let resources: &[(&str, &str)] = &[
        ("", "pods"),
        ("", "podtemplates"),
        ("", "services"),
        ("", "endpoints"),
        ("", "nodes"),
        ("", "events"),
        ("events.k8s.io", "events"),
        ("", "namespaces"),
        ("", "secrets"),
        ("", "configmaps"),
        ("", "serviceaccounts"),
        ("", "persistentvolumes"),
        ("", "persistentvolumeclaims"),
        ("", "resourcequotas"),
        ("", "replicationcontrollers"),
        ("", "componentstatuses"),
        ("apps", "deployments"),
        ("apps", "replicasets"),
        ("apps", "statefulsets"),
        ("apps", "daemonsets"),
        ("apps", "controllerrevisions"),
        ("batch", "jobs"),
        ("batch", "cronjobs"),
        ("autoscaling", "horizontalpodautoscalers"),
        ("policy", "poddisruptionbudgets"),
        ("coordination.k8s.io", "leases"),
        ("discovery.k8s.io", "endpointslices"),
        ("rbac.authorization.k8s.io", "rolebindings"),
        ("rbac.authorization.k8s.io", "clusterrolebindings"),
        ("networking.k8s.io", "ingresses"),
        ("networking.k8s.io", "ingressclasses"),
        ("networking.k8s.io", "networkpolicies"),
        ("storage.k8s.io", "storageclasses"),
        ("storage.k8s.io", "csidrivers"),
        ("storage.k8s.io", "csinodes"),
        ("storage.k8s.io", "volumeattachments"),
        ("scheduling.k8s.io", "priorityclasses"),
        ("node.k8s.io", "runtimeclasses"),
        (
            "admissionregistration.k8s.io",
            "validatingwebhookconfigurations",
        ),
        ("certificates.k8s.io", "certificatesigningrequests"),
    ];
    let weird = [
        json!(null),
        json!([1, 2]),
        json!({"metadata": 5, "spec": "x", "status": []}),
        json!({"metadata": {"name": 7, "creationTimestamp": "garbage", "labels": [1]},
            "spec": {"replicas": "3", "selector": {"matchExpressions": [{"operator": "Bogus"}]},
                "ports": [null, {"port": "80"}], "metrics": [{"type": "Resource"}, {}],
                "containers": [null], "initContainers": 3},
            "status": {"containerStatuses": [{"state": null}], "initContainerStatuses": [{"state": {"terminated": 1}}],
                "conditions": "Ready", "active": {}, "hard": {"x": {}}}}),
    ];
    for &(g, r) in resources {
        let want = columns(g, r).expect("printer").len();
        for obj in &weird {
            assert_eq!(cells(g, r, obj, now()).len(), want, "{g}/{r} with {obj}");
        }
    }
}
