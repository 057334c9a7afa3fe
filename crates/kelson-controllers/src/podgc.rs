//! Pod garbage collection, as upstream's podgc controller: every period it
//! deletes terminated pods beyond a threshold (oldest first), pods bound to
//! nodes that no longer exist (after a quarantine, confirmed by a live GET),
//! and terminating pods that were never scheduled. Pods that are not yet
//! terminal are first marked `Failed` (and orphaned ones get a
//! `DisruptionTarget` condition) through a server-side apply of their status,
//! then force-deleted with a zero grace period.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, PartialObjectMeta, Patch, PatchParams};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::Client;
use tokio_util::sync::CancellationToken;

use crate::informers::{Informers, Notice};

/// The field manager upstream's podgc applies pod status with.
pub const FIELD_MANAGER: &str = "PodGC";

#[derive(Clone, Debug)]
pub struct PodGcOptions {
    /// Terminated pods kept before the oldest are deleted; 0 disables that
    /// part (kube-controller-manager's --terminated-pod-gc-threshold).
    pub terminated_pod_gc_threshold: usize,
    /// How often a pass runs (upstream: 20 s).
    pub gc_check_period: Duration,
    /// How long a node must stay missing before its pods go (upstream: 40 s).
    pub quarantine_time: Duration,
}

impl Default for PodGcOptions {
    fn default() -> Self {
        PodGcOptions {
            terminated_pod_gc_threshold: 12500,
            gc_check_period: Duration::from_secs(20),
            quarantine_time: Duration::from_secs(40),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("marking pod {0}/{1} failed: {2}")]
    MarkFailed(String, String, #[source] kube::Error),
    #[error("deleting pod {0}/{1}: {2}")]
    Delete(String, String, #[source] kube::Error),
    #[error("checking node {0}: {1}")]
    Node(String, #[source] kube::Error),
}

/// What podgc needs of a pod: a few fields instead of the whole object, so
/// the cache stays small at tens of thousands of pods.
#[derive(Clone, Debug, PartialEq)]
struct PodInfo {
    namespace: String,
    name: String,
    uid: String,
    created: Option<jiff::Timestamp>,
    node_name: String,
    phase: String,
    deleting: bool,
}

impl PodInfo {
    fn from_pod(pod: &Pod) -> Option<PodInfo> {
        Some(PodInfo {
            namespace: pod.metadata.namespace.clone()?,
            name: pod.metadata.name.clone()?,
            uid: pod.metadata.uid.clone().unwrap_or_default(),
            created: pod.metadata.creation_timestamp.as_ref().map(|t| t.0),
            node_name: pod
                .spec
                .as_ref()
                .and_then(|s| s.node_name.clone())
                .unwrap_or_default(),
            phase: pod
                .status
                .as_ref()
                .and_then(|s| s.phase.clone())
                .unwrap_or_default(),
            deleting: pod.metadata.deletion_timestamp.is_some(),
        })
    }

    /// Upstream's isPodTerminated: anything not Pending, Running or Unknown.
    fn terminated(&self) -> bool {
        !matches!(self.phase.as_str(), "Pending" | "Running" | "Unknown" | "")
    }
}

type Cache<T> = Arc<RwLock<HashMap<String, T>>>;

/// Runs the collector until `shutdown` fires.
pub async fn run(client: Client, options: PodGcOptions, shutdown: CancellationToken) {
    run_with(Informers::new(client), options, shutdown).await;
}

/// Runs the collector on shared informers until `shutdown` fires.
pub async fn run_with(informers: Informers, options: PodGcOptions, shutdown: CancellationToken) {
    let client = informers.client().clone();
    let pods: Cache<PodInfo> = Default::default();
    let nodes: Cache<()> = Default::default();
    let (pods_ready, nodes_ready) = (CancellationToken::new(), CancellationToken::new());
    let pod_task = tokio::spawn(mirror_pods(
        informers.get::<Pod>().subscribe(),
        pods.clone(),
        pods_ready.clone(),
        shutdown.clone(),
    ));
    // Node names only: a metadata-only watch keeps this cheap.
    let node_task = tokio::spawn(mirror(
        Api::<PartialObjectMeta<Node>>::all(client.clone()),
        nodes.clone(),
        |n: &PartialObjectMeta<Node>| Some((n.metadata.name.clone()?, ())),
        nodes_ready.clone(),
        shutdown.clone(),
    ));
    // Upstream waits for both caches before its first pass.
    tokio::select! {
        _ = shutdown.cancelled() => {}
        _ = async { pods_ready.cancelled().await; nodes_ready.cancelled().await } => {
            let mut gc = Collector { client, options, pods, nodes, quarantine: HashMap::new() };
            loop {
                gc.pass().await;
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(gc.options.gc_check_period) => {}
                }
            }
        }
    }
    for t in [pod_task, node_task] {
        let _ = t.await;
    }
}

/// Keeps `cache` equal to the shared pod informer, as [`PodInfo`]s.
async fn mirror_pods(
    notices: futures::channel::mpsc::UnboundedReceiver<Notice<Pod>>,
    cache: Cache<PodInfo>,
    ready: CancellationToken,
    shutdown: CancellationToken,
) {
    let mut notices = std::pin::pin!(notices);
    loop {
        let n = tokio::select! {
            _ = shutdown.cancelled() => return,
            n = notices.next() => n,
        };
        let key = |p: &Pod| {
            format!(
                "{}/{}",
                p.metadata.namespace.as_deref().unwrap_or(""),
                p.metadata.name.as_deref().unwrap_or("")
            )
        };
        match n {
            None => return,
            Some(Notice::Apply { obj, .. }) => {
                let mut map = cache.write().unwrap_or_else(|e| e.into_inner());
                match PodInfo::from_pod(&obj) {
                    Some(info) => map.insert(key(&obj), info),
                    None => map.remove(&key(&obj)),
                };
            }
            Some(Notice::Delete(p)) => {
                cache
                    .write()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&key(&p));
            }
            Some(Notice::Synced) => ready.cancel(),
        }
    }
}

/// Keeps `cache` equal to the watched objects, reduced by `project`.
async fn mirror<K, T>(
    api: Api<K>,
    cache: Cache<T>,
    project: impl Fn(&K) -> Option<(String, T)>,
    ready: CancellationToken,
    shutdown: CancellationToken,
) where
    K: kube::Resource
        + Clone
        + k8s_openapi::serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + 'static,
{
    let mut stream = watcher(api).boxed();
    let mut seen: Option<HashSet<String>> = None;
    loop {
        let ev = tokio::select! {
            _ = shutdown.cancelled() => return,
            ev = stream.try_next() => ev,
        };
        let ev = match ev {
            Ok(Some(ev)) => ev,
            Ok(None) => return,
            Err(e) => {
                tracing::debug!(error = %e, "podgc watch");
                continue;
            }
        };
        let mut map = cache.write().unwrap_or_else(|e| e.into_inner());
        match ev {
            Event::Init => seen = Some(HashSet::new()),
            Event::InitApply(o) | Event::Apply(o) => {
                if let Some((k, v)) = project(&o) {
                    if let Some(s) = seen.as_mut() {
                        s.insert(k.clone());
                    }
                    map.insert(k, v);
                }
            }
            Event::Delete(o) => {
                if let Some((k, _)) = project(&o) {
                    map.remove(&k);
                }
            }
            Event::InitDone => {
                if let Some(s) = seen.take() {
                    map.retain(|k, _| s.contains(k));
                }
                ready.cancel();
            }
        }
    }
}

fn watcher<K>(api: Api<K>) -> impl futures::Stream<Item = Result<Event<K>, watcher::Error>>
where
    K: kube::Resource
        + Clone
        + k8s_openapi::serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + 'static,
{
    watcher::watcher(api, watcher::Config::default()).default_backoff()
}

struct Collector {
    client: Client,
    options: PodGcOptions,
    pods: Cache<PodInfo>,
    nodes: Cache<()>,
    /// Missing node → when it was first seen missing.
    quarantine: HashMap<String, Instant>,
}

/// Deletions a pass decided on, with how each pod is marked first.
#[derive(Debug, Default, PartialEq)]
struct Plan {
    terminated: Vec<PodInfo>,
    unscheduled_terminating: Vec<PodInfo>,
    /// Nodes whose quarantine ended: confirm with a GET before acting.
    suspect_nodes: Vec<String>,
}

/// Upstream's order: oldest creation first, name as the tie-breaker.
fn by_age(a: &PodInfo, b: &PodInfo) -> std::cmp::Ordering {
    a.created.cmp(&b.created).then_with(|| a.name.cmp(&b.name))
}

/// Decides one pass from the caches; `quarantine` is updated in place.
fn plan(
    pods: &HashMap<String, PodInfo>,
    nodes: &HashMap<String, ()>,
    quarantine: &mut HashMap<String, Instant>,
    options: &PodGcOptions,
    now: Instant,
) -> Plan {
    let mut out = Plan::default();
    if options.terminated_pod_gc_threshold > 0 {
        let mut terminated: Vec<&PodInfo> = pods.values().filter(|p| p.terminated()).collect();
        let excess = terminated
            .len()
            .saturating_sub(options.terminated_pod_gc_threshold);
        if excess > 0 {
            terminated.sort_by(|a, b| by_age(a, b));
            out.terminated = terminated.into_iter().take(excess).cloned().collect();
        }
    }
    let mut missing = HashSet::new();
    for p in pods.values() {
        if !p.node_name.is_empty() && !nodes.contains_key(&p.node_name) {
            missing.insert(p.node_name.as_str());
        }
        if p.deleting && p.node_name.is_empty() {
            out.unscheduled_terminating.push(p.clone());
        }
    }
    // A node that reappeared, or has no pods left, leaves quarantine.
    quarantine.retain(|n, _| missing.contains(n.as_str()));
    for n in missing {
        let since = *quarantine.entry(n.to_string()).or_insert(now);
        if now.duration_since(since) >= options.quarantine_time {
            out.suspect_nodes.push(n.to_string());
        }
    }
    out.suspect_nodes.sort();
    out.unscheduled_terminating.sort_by(by_age);
    out
}

impl Collector {
    async fn pass(&mut self) {
        let plan = {
            let pods = self.pods.read().unwrap_or_else(|e| e.into_inner());
            let nodes = self.nodes.read().unwrap_or_else(|e| e.into_inner());
            plan(
                &pods,
                &nodes,
                &mut self.quarantine,
                &self.options,
                Instant::now(),
            )
        };
        let this = &*self;
        if !plan.terminated.is_empty() {
            tracing::info!(num_pods = plan.terminated.len(), "garbage collecting pods");
        }
        // Upstream deletes terminated pods concurrently; bound it here.
        futures::stream::iter(plan.terminated.iter())
            .for_each_concurrent(32, |p| async move {
                if let Err(e) = this.mark_failed_and_delete(p, None).await {
                    tracing::warn!(error = %e, "podgc");
                }
            })
            .await;

        let nodes_api: Api<Node> = Api::all(self.client.clone());
        let mut gone = HashSet::new();
        for n in &plan.suspect_nodes {
            match nodes_api.get_opt(n).await {
                Ok(None) => {
                    gone.insert(n.clone());
                }
                Ok(Some(_)) => {}
                Err(e) => tracing::warn!(error = %Error::Node(n.clone(), e), "podgc"),
            }
        }
        if !gone.is_empty() {
            let orphans: Vec<PodInfo> = {
                let pods = self.pods.read().unwrap_or_else(|e| e.into_inner());
                pods.values()
                    .filter(|p| gone.contains(&p.node_name))
                    .cloned()
                    .collect()
            };
            futures::stream::iter(orphans.iter())
                .for_each_concurrent(32, |p| async move {
                    tracing::info!(pod = %format!("{}/{}", p.namespace, p.name), node = %p.node_name,
                        "found orphaned pod assigned to the node, deleting");
                    let condition = serde_json::json!({
                        "type": "DisruptionTarget",
                        "status": "True",
                        "reason": "DeletionByPodGC",
                        "message": "PodGC: node no longer exists",
                        "lastTransitionTime": Time(jiff::Timestamp::now()),
                    });
                    if let Err(e) = this.mark_failed_and_delete(p, Some(condition)).await {
                        tracing::warn!(error = %e, "podgc");
                    }
                })
                .await;
        }
        for p in &plan.unscheduled_terminating {
            if let Err(e) = this.mark_failed_and_delete(p, None).await {
                tracing::warn!(error = %e, "podgc");
            }
        }
        // Handled: a pod still bound there later starts a new quarantine.
        for n in &gone {
            self.quarantine.remove(n);
        }
    }

    /// Upstream's markFailedAndDeletePodWithCondition: apply the condition
    /// and a Failed phase (unless already terminal) as field manager PodGC,
    /// then delete with grace period 0.
    async fn mark_failed_and_delete(
        &self,
        pod: &PodInfo,
        condition: Option<serde_json::Value>,
    ) -> Result<(), Error> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &pod.namespace);
        let terminal = matches!(pod.phase.as_str(), "Succeeded" | "Failed");
        if condition.is_some() || !terminal {
            let mut status = serde_json::Map::new();
            if let Some(c) = condition {
                status.insert("conditions".into(), serde_json::json!([c]));
            }
            if !terminal {
                status.insert("phase".into(), "Failed".into());
            }
            let body = serde_json::json!({
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": pod.name, "namespace": pod.namespace},
                "status": status,
            });
            let pp = PatchParams::apply(FIELD_MANAGER).force();
            match api.patch_status(&pod.name, &pp, &Patch::Apply(&body)).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => return Ok(()),
                Err(e) => {
                    return Err(Error::MarkFailed(
                        pod.namespace.clone(),
                        pod.name.clone(),
                        e,
                    ))
                }
            }
        }
        let mut dp = DeleteParams {
            grace_period_seconds: Some(0),
            ..Default::default()
        };
        // Never delete a namesake that replaced the pod we looked at.
        if !pod.uid.is_empty() {
            dp.preconditions = Some(kube::api::Preconditions {
                uid: Some(pod.uid.clone()),
                resource_version: None,
            });
        }
        match api.delete(&pod.name, &dp).await {
            Ok(_) => {
                tracing::info!(pod = %format!("{}/{}", pod.namespace, pod.name), "PodGC is force deleting Pod");
                Ok(())
            }
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
            Err(e) => Err(Error::Delete(pod.namespace.clone(), pod.name.clone(), e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, secs: i64, node: &str, phase: &str, deleting: bool) -> (String, PodInfo) {
        (
            format!("default/{name}"),
            PodInfo {
                namespace: "default".into(),
                name: name.into(),
                uid: format!("uid-{name}"),
                created: Some(jiff::Timestamp::from_second(secs).unwrap()),
                node_name: node.into(),
                phase: phase.into(),
                deleting,
            },
        )
    }

    fn opts(threshold: usize) -> PodGcOptions {
        PodGcOptions {
            terminated_pod_gc_threshold: threshold,
            gc_check_period: Duration::from_secs(1),
            quarantine_time: Duration::from_secs(40),
        }
    }

    #[test]
    fn terminated_pods_over_the_threshold_go_oldest_first() {
        let pods: HashMap<_, _> = [
            pod("c", 30, "n1", "Succeeded", false),
            pod("a", 10, "n1", "Failed", false),
            pod("b", 10, "n1", "Succeeded", false),
            pod("run", 1, "n1", "Running", false),
            pod("pend", 1, "n1", "Pending", false),
        ]
        .into();
        let nodes = HashMap::from([("n1".to_string(), ())]);
        let mut q = HashMap::new();
        let p = plan(&pods, &nodes, &mut q, &opts(1), Instant::now());
        let names: Vec<_> = p.terminated.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["a", "b"], "oldest first, name breaks ties");
        let p = plan(&pods, &nodes, &mut q, &opts(0), Instant::now());
        assert!(p.terminated.is_empty(), "a zero threshold disables it");
        let p = plan(&pods, &nodes, &mut q, &opts(3), Instant::now());
        assert!(p.terminated.is_empty());
    }

    #[test]
    fn missing_nodes_are_suspected_only_after_quarantine() {
        let pods: HashMap<_, _> = [
            pod("x", 1, "gone", "Running", false),
            pod("y", 1, "here", "Running", false),
            pod("z", 1, "", "Pending", true),
        ]
        .into();
        let nodes = HashMap::from([("here".to_string(), ())]);
        let mut q = HashMap::new();
        let t0 = Instant::now();
        let p = plan(&pods, &nodes, &mut q, &opts(10), t0);
        assert!(p.suspect_nodes.is_empty());
        assert_eq!(p.unscheduled_terminating.len(), 1);
        assert_eq!(p.unscheduled_terminating[0].name, "z");
        let p = plan(
            &pods,
            &nodes,
            &mut q,
            &opts(10),
            t0 + Duration::from_secs(41),
        );
        assert_eq!(p.suspect_nodes, ["gone"]);
        // The node shows up again: out of quarantine.
        let nodes = HashMap::from([("here".to_string(), ()), ("gone".to_string(), ())]);
        let p = plan(
            &pods,
            &nodes,
            &mut q,
            &opts(10),
            t0 + Duration::from_secs(42),
        );
        assert!(p.suspect_nodes.is_empty());
        assert!(q.is_empty());
    }
}
