//! Kelson's scheduler against a real API server: it watches, binds,
//! reports failures in pod status and Events, and preempts.

use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Event, Node, Pod};
use k8s_openapi::api::scheduling::v1::PriorityClass;
use k8s_openapi::serde_json::{self, json, Value};
use kelson_runtime::testing::TestCluster;
use kelson_scheduler::{run, SchedulerOptions};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const TIMEOUT: Duration = Duration::from_secs(20);

fn from_json<T: k8s_openapi::serde::de::DeserializeOwned>(v: Value) -> T {
    serde_json::from_value(v).unwrap()
}

struct Env {
    cluster: TestCluster,
    admin: kube::Client,
    shutdown: CancellationToken,
    scheduler: JoinHandle<Result<(), kelson_scheduler::RunError>>,
}

impl Env {
    async fn start() -> Env {
        let cluster = TestCluster::start().await.unwrap();
        let admin = cluster.admin_client("scheduler-test").await.unwrap();
        let client = cluster
            .component_client("system:kube-scheduler", &[], "kelson-scheduler")
            .await
            .unwrap();
        let shutdown = CancellationToken::new();
        let scheduler = tokio::spawn(run(client, SchedulerOptions::default(), shutdown.clone()));
        Env {
            cluster,
            admin,
            shutdown,
            scheduler,
        }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        let r = tokio::time::timeout(TIMEOUT, self.scheduler)
            .await
            .expect("the scheduler stops promptly after shutdown")
            .unwrap();
        assert!(r.is_ok(), "{r:?}");
        self.cluster.stop().await;
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.admin.clone(), "default")
    }

    /// A Ready node with the given allocatable CPU, labels and taints.
    async fn node(&self, name: &str, cpu: &str, labels: Value, taints: Value) {
        let nodes: Api<Node> = Api::all(self.admin.clone());
        let mut labels = labels;
        labels["kubernetes.io/hostname"] = json!(name);
        nodes
            .create(
                &PostParams::default(),
                &from_json(json!({
                    "metadata": {"name": name, "labels": labels},
                    "spec": {"taints": taints},
                })),
            )
            .await
            .unwrap();
        let status = json!({"status": {
            "capacity": {"cpu": cpu, "memory": "8Gi", "pods": "110"},
            "allocatable": {"cpu": cpu, "memory": "8Gi", "pods": "110"},
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}],
        }});
        nodes
            .patch_status(name, &PatchParams::default(), &Patch::Merge(status))
            .await
            .unwrap();
    }

    async fn pod(&self, name: &str, cpu: &str, extra_spec: Value) -> Pod {
        let mut spec = json!({
            "containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10",
                "resources": {"requests": {"cpu": cpu, "memory": "64Mi"}}}],
        });
        if let (Some(s), Some(e)) = (spec.as_object_mut(), extra_spec.as_object()) {
            for (k, v) in e {
                s.insert(k.clone(), v.clone());
            }
        }
        self.pods()
            .create(
                &PostParams::default(),
                &from_json(json!({"metadata": {"name": name}, "spec": spec})),
            )
            .await
            .unwrap()
    }

    async fn node_of(&self, pod: &str) -> Option<String> {
        let p = self.pods().get(pod).await.ok()?;
        p.spec?.node_name.filter(|n| !n.is_empty())
    }

    async fn wait_bound(&self, pod: &str) -> String {
        match wait(|| async { self.node_of(pod).await }).await {
            Some(n) => n,
            None => {
                let events: Vec<_> = self
                    .events_for(pod)
                    .await
                    .into_iter()
                    .map(|e| (e.reason, e.message))
                    .collect();
                panic!("pod {pod} was not bound in time; events: {events:?}")
            }
        }
    }

    async fn events_for(&self, pod: &str) -> Vec<Event> {
        let events: Api<Event> = Api::namespaced(self.admin.clone(), "default");
        events
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|e| e.involved_object.name.as_deref() == Some(pod))
            .collect()
    }

    async fn wait_event(&self, pod: &str, reason: &str) -> Event {
        wait(|| async {
            self.events_for(pod)
                .await
                .into_iter()
                .find(|e| e.reason.as_deref() == Some(reason))
        })
        .await
        .unwrap_or_else(|| panic!("no {reason} event for {pod}"))
    }
}

/// Polls `f` until it returns `Some` or [`TIMEOUT`] passes.
async fn wait<T, F, Fut>(mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        if let Some(v) = f().await {
            return Some(v);
        }
        if tokio::time::Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn condition(pod: &Pod, type_: &str) -> Option<k8s_openapi::api::core::v1::PodCondition> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
        .cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binds_pods_to_fitting_nodes_honouring_selectors_taints_and_scheduler_name() {
    let env = Env::start().await;
    env.node("ssd", "2", json!({"disk": "ssd"}), json!([]))
        .await;
    env.node(
        "infra",
        "2",
        json!({}),
        json!([{"key": "dedicated", "value": "infra", "effect": "NoSchedule"}]),
    )
    .await;
    // Untolerated taint: only "ssd" fits.
    env.pod("plain", "100m", json!({})).await;
    env.pod(
        "wants-ssd",
        "100m",
        json!({"nodeSelector": {"disk": "ssd"}}),
    )
    .await;
    env.pod(
        "tolerates-infra",
        "100m",
        json!({
            "nodeSelector": {"kubernetes.io/hostname": "infra"},
            "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "infra", "effect": "NoSchedule"}],
        }),
    )
    .await;
    env.pod(
        "elsewhere",
        "100m",
        json!({"schedulerName": "other-scheduler"}),
    )
    .await;

    assert_eq!(env.wait_bound("plain").await, "ssd");
    assert_eq!(env.wait_bound("wants-ssd").await, "ssd");
    assert_eq!(env.wait_bound("tolerates-infra").await, "infra");

    let bound = env.pods().get("plain").await.unwrap();
    let c = condition(&bound, "PodScheduled").expect("binding sets PodScheduled");
    assert_eq!(c.status, "True");
    let ev = env.wait_event("plain", "Scheduled").await;
    assert_eq!(ev.type_.as_deref(), Some("Normal"));
    assert_eq!(
        ev.message.as_deref(),
        Some("Successfully assigned default/plain to ssd")
    );
    assert_eq!(
        ev.source.and_then(|s| s.component).as_deref(),
        Some("default-scheduler")
    );

    // Another scheduler's pod is left alone: no binding, no status, no event.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let other = env.pods().get("elsewhere").await.unwrap();
    assert_eq!(other.spec.as_ref().and_then(|s| s.node_name.clone()), None);
    assert!(condition(&other, "PodScheduled").is_none());
    assert!(env.events_for("elsewhere").await.is_empty());
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unschedulable_pod_reports_why_and_is_scheduled_once_a_node_fits() {
    let env = Env::start().await;
    env.node("small-1", "1", json!({}), json!([])).await;
    env.node("small-2", "1", json!({}), json!([])).await;
    env.pod("big", "3", json!({})).await;

    let expected = "0/2 nodes are available: 2 Insufficient cpu. preemption: 0/2 nodes are available: 2 No preemption victims found for incoming pod..";
    let c = wait(|| async {
        let p = env.pods().get("big").await.ok()?;
        condition(&p, "PodScheduled")
    })
    .await
    .expect("PodScheduled condition set");
    assert_eq!(c.status, "False");
    assert_eq!(c.reason.as_deref(), Some("Unschedulable"));
    assert_eq!(c.message.as_deref(), Some(expected));
    assert!(c.last_transition_time.is_some());
    let ev = env.wait_event("big", "FailedScheduling").await;
    assert_eq!(ev.type_.as_deref(), Some("Warning"));
    assert_eq!(ev.message.as_deref(), Some(expected));
    assert_eq!(env.node_of("big").await, None);

    // A node that fits moves the pod out of the unschedulable queue.
    env.node("large", "4", json!({}), json!([])).await;
    assert_eq!(env.wait_bound("big").await, "large");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn higher_priority_pod_preempts_a_lower_priority_one() {
    let env = Env::start().await;
    let classes: Api<PriorityClass> = Api::all(env.admin.clone());
    for (name, value) in [("low", 100), ("high", 1000)] {
        classes
            .create(
                &PostParams::default(),
                &from_json(json!({"metadata": {"name": name}, "value": value})),
            )
            .await
            .unwrap();
    }
    env.node("only", "1", json!({}), json!([])).await;
    // spec.priority is what the Priority admission plugin derives from the
    // class; set here explicitly.
    env.pod(
        "victim",
        "800m",
        json!({"priorityClassName": "low", "priority": 100, "terminationGracePeriodSeconds": 30}),
    )
    .await;
    assert_eq!(env.wait_bound("victim").await, "only");

    env.pod(
        "preemptor",
        "800m",
        json!({"priorityClassName": "high", "priority": 1000}),
    )
    .await;
    // The preemptor is nominated to the node while its victim terminates.
    let nominated = wait(|| async {
        let p = env.pods().get("preemptor").await.ok()?;
        p.status?.nominated_node_name.filter(|n| !n.is_empty())
    })
    .await
    .expect("preemptor nominated");
    assert_eq!(nominated, "only");
    let victim = wait(|| async {
        let v = env.pods().get("victim").await.ok()?;
        v.metadata.deletion_timestamp.is_some().then_some(v)
    })
    .await
    .expect("victim deleted gracefully");
    let dt = condition(&victim, "DisruptionTarget").expect("victim marked");
    assert_eq!(dt.status, "True");
    assert_eq!(dt.reason.as_deref(), Some("PreemptionByScheduler"));
    assert_eq!(
        dt.message.as_deref(),
        Some("default-scheduler: preempting to accommodate a higher priority pod")
    );
    let ev = env.wait_event("victim", "Preempted").await;
    let uid = env
        .pods()
        .get("preemptor")
        .await
        .unwrap()
        .metadata
        .uid
        .unwrap();
    assert_eq!(
        ev.message.as_deref(),
        Some(format!("Preempted by pod {uid} on node only").as_str())
    );
    // Still terminating: the space is not free yet.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(env.node_of("preemptor").await, None);

    // The kubelet would confirm the termination.
    env.pods()
        .delete("victim", &DeleteParams::default().grace_period(0))
        .await
        .unwrap();
    assert_eq!(env.wait_bound("preemptor").await, "only");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_that_exist_before_the_scheduler_starts_are_scheduled() {
    let cluster = TestCluster::start().await.unwrap();
    let admin = cluster.admin_client("scheduler-test").await.unwrap();
    let pods: Api<Pod> = Api::namespaced(admin.clone(), "default");
    for i in 0..5 {
        pods.create(
            &PostParams::default(),
            &from_json(json!({"metadata": {"name": format!("early-{i}")},
                "spec": {"containers": [{"name": "c", "image": "pause",
                    "resources": {"requests": {"cpu": "300m"}}}]}})),
        )
        .await
        .unwrap();
    }
    let nodes: Api<Node> = Api::all(admin.clone());
    nodes
        .create(
            &PostParams::default(),
            &from_json(json!({"metadata": {"name": "n1"},
                "status": {"allocatable": {"cpu": "1", "memory": "1Gi", "pods": "110"}}})),
        )
        .await
        .unwrap();
    nodes
        .patch_status(
            "n1",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"status": {"allocatable": {"cpu": "1", "memory": "1Gi", "pods": "110"}}}),
            ),
        )
        .await
        .unwrap();
    let client = cluster
        .component_client("system:kube-scheduler", &[], "kelson-scheduler")
        .await
        .unwrap();
    let shutdown = CancellationToken::new();
    let handle = tokio::spawn(run(client, SchedulerOptions::default(), shutdown.clone()));
    // Three fit (3 × 300m of 1 CPU), two stay pending.
    let bound = wait(|| async {
        let list = pods.list(&ListParams::default()).await.ok()?;
        let n = list
            .items
            .iter()
            .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some())
            .count();
        let failed = list
            .items
            .iter()
            .filter(|p| condition(p, "PodScheduled").is_some_and(|c| c.status == "False"))
            .count();
        (n == 3 && failed == 2).then_some(n)
    })
    .await;
    assert_eq!(bound, Some(3));
    shutdown.cancel();
    tokio::time::timeout(TIMEOUT, handle)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    cluster.stop().await;
}
