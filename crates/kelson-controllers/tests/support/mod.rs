//! Shared setup for the controller integration tests: a test cluster with a
//! controller-manager client, controllers running until shutdown, objects
//! built from JSON, polling with a deadline, and what a kubelet would report.
#![allow(dead_code)] // Each test binary uses only part of this module.

use std::fmt::Debug;
use std::future::Future;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Event, Namespace, Node, Pod};
use kelson_runtime::testing::TestCluster;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::Client;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

/// The identity the controller manager runs as.
pub async fn controller_manager_client(cluster: &TestCluster) -> Client {
    cluster
        .component_client(
            "system:kube-controller-manager",
            &[],
            "kelson-controller-manager",
        )
        .await
        .unwrap()
}

/// A test cluster, a controller-manager client for it, and the controllers
/// (or stand-ins) spawned against it, all stopped by one token.
pub struct Harness {
    pub cluster: TestCluster,
    pub client: Client,
    pub shutdown: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Harness {
    pub async fn start() -> Harness {
        let cluster = TestCluster::start().await.unwrap();
        let client = controller_manager_client(&cluster).await;
        Harness {
            cluster,
            client,
            shutdown: CancellationToken::new(),
            tasks: Vec::new(),
        }
    }

    /// Runs `task` (which should end when `self.shutdown` is cancelled)
    /// until `stop`.
    pub fn spawn(&mut self, task: impl Future<Output = ()> + Send + 'static) {
        self.tasks.push(tokio::spawn(task));
    }

    /// An API for `K` in the "default" namespace, as the controller manager.
    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), "default")
    }

    /// Cancels the token and waits for every spawned task to end; a task
    /// that panicked fails the test.
    pub async fn stop_tasks(&mut self) {
        self.shutdown.cancel();
        for t in self.tasks.drain(..) {
            t.await.unwrap();
        }
    }

    /// Stops the tasks, then the cluster.
    pub async fn stop(mut self) {
        self.stop_tasks().await;
        self.cluster.stop().await;
    }
}

pub fn from_json<T: DeserializeOwned>(v: serde_json::Value) -> T {
    serde_json::from_value(v).unwrap()
}

/// Creates the object `v` describes.
pub async fn create<K>(api: &Api<K>, v: serde_json::Value) -> K
where
    K: Clone + DeserializeOwned + Serialize + Debug,
{
    api.create(&PostParams::default(), &from_json(v))
        .await
        .unwrap()
}

pub async fn create_node(client: &Client, name: &str) -> Node {
    create(
        &Api::all(client.clone()),
        serde_json::json!({"metadata": {"name": name}}),
    )
    .await
}

pub async fn create_namespace(client: &Client, name: &str) -> Namespace {
    create(
        &Api::all(client.clone()),
        serde_json::json!({"metadata": {"name": name}}),
    )
    .await
}

/// Removes every finalizer of `name`, letting its deletion finish.
pub async fn clear_finalizers<K>(api: &Api<K>, name: &str)
where
    K: Clone + DeserializeOwned + Debug,
{
    api.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
}

/// Polls `f` every 100 ms until it returns Some, for at most `secs` seconds.
pub async fn eventually<T, F, Fut>(secs: u64, what: &str, f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    eventually_every(secs, Duration::from_millis(100), what, f).await
}

/// Polls `f` every `interval` until it returns Some, for at most `secs`
/// seconds.
pub async fn eventually_every<T, F, Fut>(secs: u64, interval: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(interval).await;
    }
}

/// A pod template labelled `app: <app>` running one nginx container.
pub fn app_template(app: &str) -> serde_json::Value {
    serde_json::json!({
        "metadata": {"labels": {"app": app}},
        "spec": {"containers": [{"name": "app", "image": "nginx:1.25"}]}
    })
}

/// Sets a pod's status through the status subresource, as a kubelet does.
pub async fn patch_pod_status(
    pods: &Api<Pod>,
    name: &str,
    status: serde_json::Value,
) -> kube::Result<Pod> {
    pods.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({ "status": status })),
    )
    .await
}

/// What a kubelet reports for a started pod: Running, Ready since `since`.
pub fn running_and_ready(since: jiff::Timestamp) -> serde_json::Value {
    serde_json::json!({
        "phase": "Running",
        "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": since.to_string()}]
    })
}

/// Marks a pod Running and Ready since `since`.
pub async fn set_ready(pods: &Api<Pod>, name: &str, since: jiff::Timestamp) {
    patch_pod_status(pods, name, running_and_ready(since))
        .await
        .unwrap();
}

/// Whether the pod has a Ready condition that is True.
pub fn pod_is_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The status of the pod's first condition of type `kind`.
pub fn pod_condition<'a>(p: &'a Pod, kind: &str) -> Option<&'a str> {
    p.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == kind)
        .map(|c| c.status.as_str())
}

/// Every event in the "default" namespace.
pub async fn default_events(client: &Client) -> Vec<Event> {
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    events.list(&ListParams::default()).await.unwrap().items
}
