//! Shared setup for the controller integration tests: a test cluster with a
//! controller-manager client, controllers running until shutdown, objects
//! built from JSON, polling with a deadline, and what a kubelet would report.

use std::fmt::Debug;
use std::future::Future;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Event, Namespace, Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kelson_runtime::testing::TestCluster;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
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

/// Applies the JSON merge patch `patch` to `name`, as `kubectl patch
/// --type=merge` does.
pub async fn merge_patch<K>(api: &Api<K>, name: &str, patch: serde_json::Value) -> K
where
    K: Clone + DeserializeOwned + Debug,
{
    api.patch(name, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .unwrap()
}

/// Removes every finalizer of `name`, letting its deletion finish.
pub async fn clear_finalizers<K>(api: &Api<K>, name: &str)
where
    K: Clone + DeserializeOwned + Debug,
{
    merge_patch(
        api,
        name,
        serde_json::json!({"metadata": {"finalizers": null}}),
    )
    .await;
}

/// How often the waits below look again, unless told otherwise.
pub const POLL: Duration = Duration::from_millis(100);

/// Polls `f` every 100 ms until it returns Some, for at most `secs` seconds.
pub async fn eventually<T, F, Fut>(secs: u64, what: &str, f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    eventually_every(secs, POLL, what, f).await
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

/// Waits until object `name` satisfies `ok`, and returns it. A failed read
/// (e.g. not created yet) counts as not yet.
pub async fn wait_until<K>(
    api: &Api<K>,
    name: &str,
    secs: u64,
    what: &str,
    ok: impl Fn(&K) -> bool,
) -> K
where
    K: Clone + DeserializeOwned + Debug,
{
    wait_until_every(api, name, secs, POLL, what, ok).await
}

/// [`wait_until`], looking every `interval`.
pub async fn wait_until_every<K>(
    api: &Api<K>,
    name: &str,
    secs: u64,
    interval: Duration,
    what: &str,
    ok: impl Fn(&K) -> bool,
) -> K
where
    K: Clone + DeserializeOwned + Debug,
{
    eventually_every(secs, interval, what, || async {
        let obj = api.get(name).await.ok()?;
        ok(&obj).then_some(obj)
    })
    .await
}

/// Waits, polling every `interval`, until `name` is being deleted (has a
/// deletionTimestamp), and returns it.
pub async fn wait_terminating_every<K>(api: &Api<K>, name: &str, secs: u64, interval: Duration) -> K
where
    K: kube::Resource + Clone + DeserializeOwned + Debug,
{
    let what = format!("{name} terminating");
    wait_until_every(api, name, secs, interval, &what, |obj| {
        obj.meta().deletion_timestamp.is_some()
    })
    .await
}

/// Waits until `name` is being deleted, and returns it.
pub async fn wait_terminating<K>(api: &Api<K>, name: &str, secs: u64) -> K
where
    K: kube::Resource + Clone + DeserializeOwned + Debug,
{
    wait_terminating_every(api, name, secs, POLL).await
}

/// Waits, polling every `interval`, until `name` no longer exists.
pub async fn wait_gone_every<K>(api: &Api<K>, name: &str, secs: u64, interval: Duration)
where
    K: Clone + DeserializeOwned + Debug,
{
    eventually_every(secs, interval, &format!("{name} gone"), || async {
        api.get_opt(name).await.ok()?.is_none().then_some(())
    })
    .await
}

/// Waits until `name` no longer exists.
pub async fn wait_gone<K>(api: &Api<K>, name: &str, secs: u64)
where
    K: Clone + DeserializeOwned + Debug,
{
    wait_gone_every(api, name, secs, POLL).await
}

/// The first owner reference of `obj`, checked to be the controlling one
/// that blocks its owner's deletion, as every workload controller sets it.
pub fn controller_ref<K: kube::Resource>(obj: &K) -> &OwnerReference {
    let owner = obj
        .meta()
        .owner_references
        .as_ref()
        .and_then(|refs| refs.first())
        .expect("an owner reference");
    assert_eq!(
        (owner.controller, owner.block_owner_deletion),
        (Some(true), Some(true)),
        "{owner:?}"
    );
    owner
}

/// The pods matching the label selector `selector`.
pub async fn pods_matching(pods: &Api<Pod>, selector: &str) -> Vec<Pod> {
    pods.list(&ListParams::default().labels(selector))
        .await
        .unwrap()
        .items
}

/// The pods matching `selector` that are not being deleted.
pub async fn live_pods_matching(pods: &Api<Pod>, selector: &str) -> Vec<Pod> {
    let mut all = pods_matching(pods, selector).await;
    all.retain(|p| p.metadata.deletion_timestamp.is_none());
    all
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

/// What kubelets do for each of `candidates` that is neither Ready nor
/// being deleted: report it Running and Ready. A pod deleted meanwhile is
/// passed over.
pub async fn ready_up<'a>(pods: &Api<Pod>, candidates: impl IntoIterator<Item = &'a Pod>) {
    for p in candidates {
        if pod_is_ready(p) || p.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let _ = patch_pod_status(
            pods,
            &p.name_any(),
            running_and_ready(jiff::Timestamp::now()),
        )
        .await;
    }
}

/// A stand-in kubelet: until `stop`, marks every pod `list` selects Running
/// and Ready soon after it appears.
pub async fn kubelet(pods: Api<Pod>, list: ListParams, stop: CancellationToken) {
    while !stop.is_cancelled() {
        if let Ok(found) = pods.list(&list).await {
            ready_up(&pods, &found.items).await;
        }
        tokio::select! {
            _ = stop.cancelled() => {}
            _ = tokio::time::sleep(POLL) => {}
        }
    }
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

/// (reason, message) of every event in "default" about an object named
/// `name`.
pub async fn events_for(client: &Client, name: &str) -> Vec<(String, String)> {
    default_events(client)
        .await
        .into_iter()
        .filter(|e| e.involved_object.name.as_deref() == Some(name))
        .map(|e| (e.reason.unwrap_or_default(), e.message.unwrap_or_default()))
        .collect()
}

/// Waits until the events about `name` satisfy `ok`, and returns them.
pub async fn wait_events(
    client: &Client,
    name: &str,
    secs: u64,
    what: &str,
    ok: impl Fn(&[(String, String)]) -> bool,
) -> Vec<(String, String)> {
    eventually(secs, what, || async {
        let events = events_for(client, name).await;
        ok(&events).then_some(events)
    })
    .await
}

/// Waits for an event about `name` with `reason` and a message that
/// satisfies `message`.
pub async fn wait_event(
    client: &Client,
    name: &str,
    secs: u64,
    reason: &str,
    message: impl Fn(&str) -> bool,
) {
    let what = format!("a {reason} event about {name}");
    wait_events(client, name, secs, &what, |events| {
        events.iter().any(|(r, m)| r == reason && message(m))
    })
    .await;
}
