//! Unit tests of the DaemonSet controller's pure parts.

use super::*;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

fn ds(extra_spec: serde_json::Value) -> DaemonSet {
    let mut spec = serde_json::json!({
        "selector": {"matchLabels": {"app": "agent"}},
        "template": {"metadata": {"labels": {"app": "agent"}}, "spec": {"containers": [], "nodeSelector": {"role": "worker"}}}
    });
    if let (Some(s), Some(extra)) = (spec.as_object_mut(), extra_spec.as_object()) {
        for (k, v) in extra {
            s.insert(k.clone(), v.clone());
        }
    }
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": "agent", "namespace": "default", "uid": "u1", "generation": 2},
        "spec": spec
    }))
    .unwrap()
}

fn node(name: &str, role: &str) -> Arc<Node> {
    Arc::new(
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "labels": {"role": role}}
        }))
        .unwrap(),
    )
}

fn pod(name: &str, node: &str, hash: &str, ready_at: Option<i64>, created: i64) -> Arc<Pod> {
    let mut p: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "labels": {"app": "agent", "controller-revision-hash": hash},
                     "creationTimestamp": Timestamp::from_second(created).unwrap().to_string()},
        "spec": {"containers": [], "nodeName": node},
        "status": {"phase": "Running"}
    }))
    .unwrap();
    if let Some(t) = ready_at {
        p.status.as_mut().unwrap().conditions =
            Some(vec![k8s_openapi::api::core::v1::PodCondition {
                type_: "Ready".into(),
                status: "True".into(),
                last_transition_time: Some(Time(Timestamp::from_second(t).unwrap())),
                ..Default::default()
            }]);
    }
    Arc::new(p)
}

#[test]
fn status_counts_desired_scheduled_misscheduled_ready_available_updated() {
    let d = ds(serde_json::json!({"minReadySeconds": 10}));
    let nodes = vec![
        node("w1", "worker"),
        node("w2", "worker"),
        node("w3", "worker"),
        node("m1", "master"),
    ];
    let pods = vec![
        pod("a", "w1", "new", Some(100), 0),
        pod("b", "w2", "old", Some(995), 0),
        pod("c", "m1", "new", None, 0),
    ];
    let by_node = pods_by_node(&pods, false);
    let now = Timestamp::from_second(1000).unwrap();
    let c = calculate_status(&d, &nodes, &Placement::new(&d), &by_node, "new", now);
    assert_eq!(
        c,
        Counts {
            desired: 3,
            current: 2,
            misscheduled: 1,
            ready: 2,
            updated: 1,
            available: 1,
            unavailable: 2,
        }
    );
}

#[test]
fn status_looks_at_the_oldest_pod_of_a_node() {
    let d = ds(serde_json::json!({}));
    let nodes = vec![node("w1", "worker")];
    let pods = vec![
        pod("young", "w1", "new", Some(10), 500),
        pod("old", "w1", "old", None, 100),
    ];
    let by_node = pods_by_node(&pods, false);
    let c = calculate_status(
        &d,
        &nodes,
        &Placement::new(&d),
        &by_node,
        "new",
        Timestamp::from_second(1000).unwrap(),
    );
    assert_eq!((c.current, c.ready, c.updated), (1, 0, 0));
}

#[test]
fn terminal_pods_being_deleted_are_left_out() {
    let mut done = (*pod("done", "w1", "h", None, 0)).clone();
    done.status.as_mut().unwrap().phase = Some("Failed".into());
    done.metadata.deletion_timestamp = Some(Time(Timestamp::from_second(5).unwrap()));
    let pods = vec![Arc::new(done)];
    assert!(pods_by_node(&pods, false).is_empty());
    assert_eq!(pods_by_node(&pods, true)["w1"].len(), 1);
}

#[test]
fn excess_pods_on_a_node_keep_the_oldest() {
    let d = ds(serde_json::json!({}));
    let a = pod("a", "w1", "h", None, 300);
    let b = pod("b", "w1", "h", None, 100);
    let c = pod("c", "w1", "h", None, 200);
    let (create, delete) = excess_on_node(&d, vec![&a, &b, &c], true, "h", Timestamp::now());
    assert!(!create);
    assert_eq!(delete, ["c", "a"]);
}

#[test]
fn with_surge_old_pod_goes_once_new_one_is_available() {
    let d = ds(serde_json::json!({
        "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}
    }));
    let now = Timestamp::from_second(1000).unwrap();
    let old = pod("old", "w1", "h1", Some(10), 10);
    let new_unready = pod("new", "w1", "h2", None, 20);
    let (_, delete) = excess_on_node(&d, vec![&old, &new_unready], true, "h2", now);
    assert!(delete.is_empty(), "both stay while the new pod starts");
    let new_ready = pod("new", "w1", "h2", Some(900), 20);
    let (_, delete) = excess_on_node(&d, vec![&old, &new_ready], true, "h2", now);
    assert_eq!(delete, ["old"]);
    let (create, _) = excess_on_node(&d, vec![], true, "h2", now);
    assert!(create);
}

#[test]
fn failed_pod_backoff_doubles_up_to_the_cap() {
    let b = Backoff::new(Duration::from_secs(1), Duration::from_secs(4));
    let t0 = Instant::now();
    assert!(!b.in_backoff("k", t0));
    b.next("k", t0);
    assert_eq!(b.delay("k"), Duration::from_secs(1));
    assert!(b.in_backoff("k", t0 + Duration::from_millis(500)));
    assert!(!b.in_backoff("k", t0 + Duration::from_secs(2)));
    b.next("k", t0 + Duration::from_secs(2));
    assert_eq!(b.delay("k"), Duration::from_secs(2));
    b.next("k", t0 + Duration::from_secs(5));
    b.next("k", t0 + Duration::from_secs(6));
    assert_eq!(b.delay("k"), Duration::from_secs(4));
    // Long quiet: the delay starts over.
    b.next("k", t0 + Duration::from_secs(100));
    assert_eq!(b.delay("k"), Duration::from_secs(1));
}

#[test]
fn status_omits_zero_optional_counters() {
    let mut s = DaemonSetStatus::default();
    set_counts(
        &mut s,
        &Counts {
            desired: 2,
            current: 2,
            ..Default::default()
        },
    );
    let v = serde_json::to_value(&s).unwrap();
    assert_eq!(v["desiredNumberScheduled"], 2);
    assert_eq!(v["numberReady"], 0);
    assert!(v.get("numberAvailable").is_none());
    assert!(v.get("updatedNumberScheduled").is_none());
}
