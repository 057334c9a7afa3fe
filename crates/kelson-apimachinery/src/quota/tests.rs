use super::*;
use serde_json::json;

fn q(s: &str) -> Quantity {
    Quantity::parse(s).unwrap()
}

fn list(pairs: &[(&str, &str)]) -> ResourceList {
    pairs.iter().map(|(k, v)| (k.to_string(), q(v))).collect()
}

fn pod(containers: Value) -> Value {
    json!({"metadata": {"name": "p"}, "spec": {"containers": containers}})
}

#[test]
fn pod_usage_sums_containers_and_counts_the_pod() {
    let p = pod(json!([
        {"name": "a", "resources": {"requests": {"cpu": "100m", "memory": "1Gi"}, "limits": {"cpu": "1"}}},
        {"name": "b", "resources": {"requests": {"cpu": "200m"}, "limits": {"cpu": "500m", "memory": "2Gi"}}}
    ]));
    let u = usage("", "pods", &p);
    assert_eq!(u["pods"], q("1"));
    assert_eq!(u["count/pods"], q("1"));
    assert_eq!(u["requests.cpu"], q("300m"));
    assert_eq!(u["cpu"], q("300m"));
    assert_eq!(u["requests.memory"], q("1Gi"));
    assert_eq!(u["memory"], q("1Gi"));
    assert_eq!(u["limits.cpu"], q("1500m"));
    assert_eq!(u["limits.memory"], q("2Gi"));
    assert!(!u.contains_key("requests.ephemeral-storage"));
}

#[test]
fn init_containers_take_the_max_and_sidecars_add_up() {
    let p = json!({"spec": {
        "containers": [{"name": "a", "resources": {"requests": {"cpu": "1"}}}],
        "initContainers": [
            {"name": "side", "restartPolicy": "Always", "resources": {"requests": {"cpu": "500m"}}},
            {"name": "big", "resources": {"requests": {"cpu": "3"}}}
        ]
    }});
    // Regular 1 + sidecar 0.5 = 1.5; the init step needs 3 + 0.5.
    assert_eq!(usage("", "pods", &p)["requests.cpu"], q("3500m"));
}

#[test]
fn overhead_adds_to_requests_and_non_zero_limits() {
    let p = json!({"spec": {
        "overhead": {"cpu": "100m", "memory": "10Mi"},
        "containers": [{"name": "a", "resources": {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"cpu": "2"}}}]
    }});
    let u = usage("", "pods", &p);
    assert_eq!(u["requests.cpu"], q("1100m"));
    assert_eq!(u["limits.cpu"], q("2100m"));
    assert!(!u.contains_key("limits.memory"));
}

#[test]
fn extended_and_hugepages_requests() {
    let p = pod(json!([{"name": "a", "resources": {
        "requests": {"example.com/gpu": "2", "hugepages-2Mi": "4Mi"},
        "limits": {"example.com/gpu": "2", "hugepages-2Mi": "4Mi"}}}]));
    let u = usage("", "pods", &p);
    assert_eq!(u["requests.example.com/gpu"], q("2"));
    assert_eq!(u["hugepages-2Mi"], q("4Mi"));
    assert_eq!(u["requests.hugepages-2Mi"], q("4Mi"));
    assert!(tracks("", "pods", "requests.example.com/gpu"));
    assert!(!tracks("", "pods", "example.com/gpu"));
}

#[test]
fn terminal_and_long_deleted_pods_only_count_as_objects() {
    let mut p = pod(json!([{"name": "a", "resources": {"requests": {"cpu": "1"}}}]));
    p["status"] = json!({"phase": "Succeeded"});
    assert_eq!(usage("", "pods", &p), list(&[("count/pods", "1")]));

    let mut d = pod(json!([{"name": "a"}]));
    d["metadata"]["deletionTimestamp"] = json!("2024-01-01T00:00:00Z");
    d["metadata"]["deletionGracePeriodSeconds"] = json!(30);
    let before: Timestamp = "2024-01-01T00:00:10Z".parse().unwrap();
    let after: Timestamp = "2024-01-01T00:00:31Z".parse().unwrap();
    assert!(usage_at("", "pods", &d, before).contains_key("pods"));
    assert_eq!(
        usage_at("", "pods", &d, after),
        list(&[("count/pods", "1")])
    );
}

#[test]
fn service_usage_by_type() {
    let c = usage(
        "",
        "services",
        &json!({"spec": {"type": "ClusterIP", "ports": [{"port": 80}]}}),
    );
    assert_eq!(
        c,
        list(&[
            ("count/services", "1"),
            ("services", "1"),
            ("services.loadbalancers", "0"),
            ("services.nodeports", "0")
        ])
    );
    let n = usage(
        "",
        "services",
        &json!({"spec": {"type": "NodePort", "ports": [{"port": 80}, {"port": 81}]}}),
    );
    assert_eq!(n["services.nodeports"], q("2"));
    let lb = usage(
        "",
        "services",
        &json!({"spec": {"type": "LoadBalancer", "allocateLoadBalancerNodePorts": false,
            "ports": [{"port": 80, "nodePort": 30001}, {"port": 81}]}}),
    );
    assert_eq!(lb["services.nodeports"], q("1"));
    assert_eq!(lb["services.loadbalancers"], q("1"));
}

#[test]
fn pvc_usage_by_storage_class_with_whole_bytes() {
    let p = json!({"spec": {"storageClassName": "gold", "resources": {"requests": {"storage": "1500m"}}}});
    let u = usage("", "persistentvolumeclaims", &p);
    assert_eq!(u["persistentvolumeclaims"], q("1"));
    assert_eq!(u["count/persistentvolumeclaims"], q("1"));
    assert_eq!(u["requests.storage"], q("2"));
    assert_eq!(
        u["gold.storageclass.storage.k8s.io/requests.storage"],
        q("2")
    );
    assert_eq!(
        u["gold.storageclass.storage.k8s.io/persistentvolumeclaims"],
        q("1")
    );
    assert!(tracks(
        "",
        "persistentvolumeclaims",
        "gold.storageclass.storage.k8s.io/requests.storage"
    ));

    let grown = json!({"spec": {"resources": {"requests": {"storage": "1Gi"}}},
        "status": {"allocatedResources": {"storage": "2Gi"}}});
    assert_eq!(
        usage("", "persistentvolumeclaims", &grown)["requests.storage"],
        q("2Gi")
    );
}

#[test]
fn other_resources_count_objects_with_legacy_aliases() {
    assert_eq!(
        usage("apps", "deployments", &json!({})),
        list(&[("count/deployments.apps", "1")])
    );
    assert_eq!(
        usage("", "secrets", &json!({})),
        list(&[("count/secrets", "1"), ("secrets", "1")])
    );
    assert!(tracks("", "configmaps", "configmaps"));
    assert!(!tracks("apps", "deployments", "pods"));
}

#[test]
fn scopes_select_pods() {
    let be = pod(json!([{"name": "a"}]));
    let mut burst = pod(json!([{"name": "a", "resources": {"requests": {"cpu": "1"}}}]));
    burst["spec"]["activeDeadlineSeconds"] = json!(10);
    let spec = |s: &[&str]| json!({"scopes": s});
    assert!(matches_scopes(&json!({}), "", "pods", &be));
    assert!(matches_scopes(&spec(&["BestEffort"]), "", "pods", &be));
    assert!(!matches_scopes(&spec(&["BestEffort"]), "", "pods", &burst));
    assert!(matches_scopes(
        &spec(&["NotBestEffort", "Terminating"]),
        "",
        "pods",
        &burst
    ));
    assert!(!matches_scopes(
        &spec(&["NotTerminating"]),
        "",
        "pods",
        &burst
    ));
    // Scoped quotas never apply to resources other than pods.
    assert!(!matches_scopes(
        &spec(&["NotTerminating"]),
        "",
        "services",
        &json!({})
    ));
    assert!(matches_scopes(&json!({}), "", "services", &json!({})));
}

#[test]
fn priority_class_scope_selector() {
    let mut p = pod(json!([{"name": "a"}]));
    p["spec"]["priorityClassName"] = json!("high");
    let sel = |op: &str, vals: &[&str]| {
        json!({"scopeSelector": {"matchExpressions": [
            {"scopeName": "PriorityClass", "operator": op, "values": vals}]}})
    };
    assert!(matches_scopes(&sel("In", &["high", "mid"]), "", "pods", &p));
    assert!(!matches_scopes(&sel("NotIn", &["high"]), "", "pods", &p));
    assert!(matches_scopes(&sel("Exists", &[]), "", "pods", &p));
    let none = pod(json!([{"name": "a"}]));
    assert!(!matches_scopes(&sel("In", &["high"]), "", "pods", &none));
    assert!(matches_scopes(&sel("NotIn", &["high"]), "", "pods", &none));
    assert!(matches_scopes(&sel("DoesNotExist", &[]), "", "pods", &none));
}

#[test]
fn list_arithmetic_as_upstream() {
    let a = list(&[("pods", "2"), ("cpu", "1")]);
    let b = list(&[("pods", "1"), ("memory", "1Gi")]);
    assert_eq!(
        add(&a, &b),
        list(&[("pods", "3"), ("cpu", "1"), ("memory", "1Gi")])
    );
    assert_eq!(
        subtract(&a, &b),
        list(&[("pods", "1"), ("cpu", "1"), ("memory", "-1Gi")])
    );
    assert_eq!(mask(&a, &list(&[("pods", "10")])), list(&[("pods", "2")]));
    assert_eq!(
        exceeded(&a, &list(&[("pods", "1"), ("cpu", "1")])),
        vec!["pods"]
    );
}

#[test]
fn parse_and_serialise_lists() {
    let l = parse_list(&json!({"pods": "2", "cpu": "500m", "bad": "x1", "memory": 1024}));
    assert_eq!(l.len(), 3);
    assert_eq!(
        to_json(&add(&l, &list(&[("pods", "1")]))),
        json!({"pods": "3", "cpu": "500m", "memory": "1024"})
    );
}

#[test]
fn constraints_name_containers_missing_required_resources() {
    let p = json!({"spec": {
        "containers": [
            {"name": "a", "resources": {"limits": {"cpu": "1"}}},
            {"name": "b"}
        ],
        "initContainers": [{"name": "i"}]
    }});
    let req = vec![
        "limits.cpu".to_string(),
        "requests.memory".to_string(),
        "pods".to_string(),
    ];
    assert_eq!(
        constraints("", "pods", &req, &p).as_deref(),
        Some("must specify limits.cpu for: b,i; requests.memory for: a,b,i")
    );
    assert_eq!(constraints("", "pods", &["pods".to_string()], &p), None);
    assert_eq!(constraints("", "services", &req, &p), None);
}
