//! The admission chain through the real server over HTTPS: LimitRanger,
//! Priority, DefaultTolerationSeconds, ServiceAccount and ResourceQuota as
//! a client sees them.

mod support;

use serde_json::{json, Value};
use support::{container, Server};

impl Server {
    async fn create(&self, path: &str, body: Value) -> (u16, Value) {
        self.json("POST", path, Some(&body)).await
    }

    async fn get(&self, path: &str) -> Value {
        let (code, v) = self.json("GET", path, None).await;
        assert_eq!(code, 200, "GET {path}: {v}");
        v
    }
}

fn pod(name: &str, containers: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": {"containers": containers}})
}

async fn namespace(s: &Server, name: &str) {
    let (code, v) = s
        .create(
            "/api/v1/namespaces",
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}),
        )
        .await;
    assert_eq!(code, 201, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limit_ranges_default_and_bound_pod_resources() {
    let s = Server::start().await;
    namespace(&s, "lr").await;
    let (code, v) = s
        .create(
            "/api/v1/namespaces/lr/limitranges",
            json!({"apiVersion": "v1", "kind": "LimitRange", "metadata": {"name": "limits"},
                "spec": {"limits": [{"type": "Container",
                    "default": {"cpu": "500m", "memory": "128Mi"},
                    "defaultRequest": {"cpu": "100m", "memory": "64Mi"},
                    "max": {"cpu": "1"}}]}}),
        )
        .await;
    assert_eq!(code, 201, "{v}");

    let (code, p) = s
        .create(
            "/api/v1/namespaces/lr/pods",
            pod("defaulted", json!([container("app")])),
        )
        .await;
    assert_eq!(code, 201, "{p}");
    let res = &p["spec"]["containers"][0]["resources"];
    assert_eq!(res["limits"], json!({"cpu": "500m", "memory": "128Mi"}));
    assert_eq!(res["requests"], json!({"cpu": "100m", "memory": "64Mi"}));
    assert_eq!(
        p["metadata"]["annotations"]["kubernetes.io/limit-ranger"],
        "LimitRanger plugin set: cpu, memory request for container app; cpu, memory limit for container app"
    );
    // Defaults make it Burstable: the QoS class follows the admitted spec.
    assert_eq!(p["status"]["qosClass"], "Burstable");
    // ServiceAccount and DefaultTolerationSeconds ran too.
    assert_eq!(p["spec"]["serviceAccountName"], "default");
    let tolerations = p["spec"]["tolerations"].as_array().unwrap();
    for key in [
        "node.kubernetes.io/not-ready",
        "node.kubernetes.io/unreachable",
    ] {
        assert!(
            tolerations.iter().any(|t| t["key"] == key
                && t["tolerationSeconds"] == 300
                && t["effect"] == "NoExecute"),
            "{key} missing from {tolerations:?}"
        );
    }

    let mut big = container("big");
    big["resources"] = json!({"limits": {"cpu": "2"}});
    let (code, st) = s
        .create("/api/v1/namespaces/lr/pods", pod("too-big", json!([big])))
        .await;
    assert_eq!(code, 403, "{st}");
    assert_eq!(st["reason"], "Forbidden");
    assert_eq!(
        st["message"],
        "pods \"too-big\" is forbidden: maximum cpu usage per Container is 1, but limit is 2"
    );
    s.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn priority_classes_resolve_and_unknown_ones_are_refused() {
    let s = Server::start().await;
    // The built-in classes exist from the start.
    let sys = s
        .get("/apis/scheduling.k8s.io/v1/priorityclasses/system-node-critical")
        .await;
    assert_eq!(sys["value"], 2_000_001_000);

    let (code, v) = s
        .create(
            "/apis/scheduling.k8s.io/v1/priorityclasses",
            json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
                "metadata": {"name": "high"}, "value": 1000, "preemptionPolicy": "Never"}),
        )
        .await;
    assert_eq!(code, 201, "{v}");
    let mut p = pod("important", json!([container("app")]));
    p["spec"]["priorityClassName"] = json!("high");
    let (code, created) = s.create("/api/v1/namespaces/default/pods", p).await;
    assert_eq!(code, 201, "{created}");
    assert_eq!(created["spec"]["priority"], 1000);
    assert_eq!(created["spec"]["preemptionPolicy"], "Never");

    let mut p = pod("critical", json!([container("app")]));
    p["spec"]["priorityClassName"] = json!("system-cluster-critical");
    let (code, created) = s.create("/api/v1/namespaces/default/pods", p).await;
    assert_eq!(code, 201, "{created}");
    assert_eq!(created["spec"]["priority"], 2_000_000_000);

    let mut p = pod("lost", json!([container("app")]));
    p["spec"]["priorityClassName"] = json!("nope");
    let (code, st) = s.create("/api/v1/namespaces/default/pods", p).await;
    assert_eq!(code, 403, "{st}");
    assert_eq!(
        st["message"],
        "pods \"lost\" is forbidden: no PriorityClass with name nope was found"
    );

    // Reserved names and a second global default are refused.
    let (code, st) = s
        .create(
            "/apis/scheduling.k8s.io/v1/priorityclasses",
            json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
                "metadata": {"name": "system-mine"}, "value": 5}),
        )
        .await;
    assert_eq!(code, 422, "{st}");
    for name in ["first", "second"] {
        let (code, st) = s
            .create(
                "/apis/scheduling.k8s.io/v1/priorityclasses",
                json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
                    "metadata": {"name": name}, "value": 10, "globalDefault": true}),
            )
            .await;
        if name == "first" {
            assert_eq!(code, 201, "{st}");
        } else {
            assert_eq!(code, 403, "{st}");
            assert_eq!(
                st["message"],
                "priorityclasses.scheduling.k8s.io \"second\" is forbidden: PriorityClass first is already marked as default. Only one default can exist"
            );
        }
    }
    // Pods without a class now get the global default.
    let (code, created) = s
        .create(
            "/api/v1/namespaces/default/pods",
            pod("plain", json!([container("app")])),
        )
        .await;
    assert_eq!(code, 201, "{created}");
    assert_eq!(created["spec"]["priorityClassName"], "first");
    assert_eq!(created["spec"]["priority"], 10);
    s.running.stop().await;
}

/// A ResourceQuota with `hard`, and the status the quota controller's first
/// sync would write (this server runs no controllers).
async fn quota(s: &Server, ns: &str, name: &str, hard: Value, used: Value) {
    let (code, v) = s
        .create(
            &format!("/api/v1/namespaces/{ns}/resourcequotas"),
            json!({"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": name},
                "spec": {"hard": hard}}),
        )
        .await;
    assert_eq!(code, 201, "{v}");
    let (code, v) = s
        .json(
            "PATCH",
            &format!("/api/v1/namespaces/{ns}/resourcequotas/{name}/status"),
            Some(&json!({"status": {"hard": hard, "used": used}})),
        )
        .await;
    assert_eq!(code, 200, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_quota_refuses_the_third_pod_and_tracks_usage() {
    let s = Server::start().await;
    namespace(&s, "rq").await;
    quota(&s, "rq", "q", json!({"pods": "2"}), json!({"pods": "0"})).await;
    let used = |q: &Value| q["status"]["used"]["pods"].clone();

    for name in ["one", "two"] {
        let (code, v) = s
            .create(
                "/api/v1/namespaces/rq/pods",
                pod(name, json!([container("app")])),
            )
            .await;
        assert_eq!(code, 201, "{v}");
    }
    let q = s.get("/api/v1/namespaces/rq/resourcequotas/q").await;
    assert_eq!(used(&q), "2");

    let (code, st) = s
        .create(
            "/api/v1/namespaces/rq/pods",
            pod("three", json!([container("app")])),
        )
        .await;
    assert_eq!(code, 403, "{st}");
    assert_eq!(
        st["message"],
        "pods \"three\" is forbidden: exceeded quota: q, requested: pods=1, used: pods=2, limited: pods=2"
    );

    // A dry run goes through admission (refused while full)...
    let (code, st) = s
        .create(
            "/api/v1/namespaces/rq/pods?dryRun=All",
            pod("dry", json!([container("app")])),
        )
        .await;
    assert_eq!(code, 403, "{st}");
    // ...and when admitted charges nothing.
    let (code, v) = s
        .json(
            "PATCH",
            "/api/v1/namespaces/rq/resourcequotas/q/status",
            Some(&json!({"status": {"hard": {"pods": "3"}}})),
        )
        .await;
    assert_eq!(code, 200, "{v}");
    let (code, v) = s
        .create(
            "/api/v1/namespaces/rq/pods?dryRun=All",
            pod("dry", json!([container("app")])),
        )
        .await;
    assert_eq!(code, 201, "{v}");
    let q = s.get("/api/v1/namespaces/rq/resourcequotas/q").await;
    assert_eq!(used(&q), "2");
    let (code, _) = s.json("GET", "/api/v1/namespaces/rq/pods/dry", None).await;
    assert_eq!(code, 404);
    s.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpu_quota_requires_limits() {
    let s = Server::start().await;
    namespace(&s, "cpu").await;
    let (hard, used) = (json!({"limits.cpu": "2"}), json!({"limits.cpu": "0"}));
    quota(&s, "cpu", "compute", hard, used).await;
    let (code, st) = s
        .create(
            "/api/v1/namespaces/cpu/pods",
            pod("bare", json!([container("app")])),
        )
        .await;
    assert_eq!(code, 403, "{st}");
    assert_eq!(
        st["message"],
        "pods \"bare\" is forbidden: failed quota: compute: must specify limits.cpu for: app"
    );
    let mut c = container("app");
    c["resources"] = json!({"limits": {"cpu": "1500m"}});
    let (code, v) = s
        .create("/api/v1/namespaces/cpu/pods", pod("sized", json!([c])))
        .await;
    assert_eq!(code, 201, "{v}");
    let q = s.get("/api/v1/namespaces/cpu/resourcequotas/compute").await;
    assert_eq!(q["status"]["used"]["limits.cpu"], "1500m");
    s.running.stop().await;
}
