//! The ResourceQuota controller (upstream pkg/controller/resourcequota):
//! keeps every quota's `status.hard` equal to its `spec.hard` and
//! `status.used` equal to what the objects of its namespace that its scopes
//! select actually use, for each resource it limits. The API server's quota
//! admission raises `used` as objects are created; this controller is the
//! source of truth that lowers it again when they go (or turn terminal) and
//! corrects any drift.
//!
//! Usage comes from watches of exactly the resources some quota limits
//! (pods for `pods`/`requests.cpu`/…, services, PVCs, and `count/<r>.<g>`
//! resolved through discovery), each reduced to per-object usage by
//! [`monitor`]. A quota is recomputed when its spec changes, when usage in
//! its namespace changes, when a deleting pod's grace period ends, and on a
//! full resync.

pub mod monitor;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::channel::mpsc;
use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{ResourceQuota, ResourceQuotaStatus};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as K8sQuantity;
use kelson_apimachinery::quota::{self, ResourceList};
use kube::api::{Api, PostParams};
use kube::discovery::{self, verbs, ApiResource, Scope};
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, PredicateConfig, WatchStreamExt};
use kube::{Client, ResourceExt};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::podcontrol::{is_conflict, is_not_found};
use crate::runner;
use monitor::{GroupResource, Monitor};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("discovering {0}: {1}")]
    Discovery(GroupResource, #[source] kube::Error),
    #[error("usage of {0} is not known yet: its watch has not listed")]
    NotSynced(GroupResource),
    #[error("updating the status of ResourceQuota {0}: {1}")]
    Update(String, #[source] kube::Error),
    #[error("{0}")]
    Aggregate(String),
}

/// Tunables; the defaults are upstream's.
#[derive(Debug, Clone)]
pub struct Options {
    /// Every quota is fully recomputed at least this often
    /// (--resource-quota-sync-period).
    pub resync: Duration,
    /// Quotas synced at the same time (--concurrent-resource-quota-syncs).
    pub workers: u16,
    /// Least time between two recomputations of one quota: changes meanwhile
    /// are folded into the next one (a Deployment creating pods would
    /// otherwise recount the namespace per pod).
    pub min_sync_interval: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            resync: Duration::from_secs(5 * 60),
            workers: runner::DEFAULT_WORKERS,
            min_sync_interval: Duration::from_millis(500),
        }
    }
}

/// How long a resource discovery did not find is not asked for again.
const REDISCOVER_AFTER: Duration = Duration::from_secs(30);
/// How long a sync waits for a newly started watch to list.
const SYNC_WAIT: Duration = Duration::from_secs(10);

/// The core resources quota knows by name, with their kinds.
const CORE_RESOURCES: &[(&str, &str)] = &[
    ("pods", "Pod"),
    ("services", "Service"),
    ("persistentvolumeclaims", "PersistentVolumeClaim"),
    ("configmaps", "ConfigMap"),
    ("secrets", "Secret"),
    ("resourcequotas", "ResourceQuota"),
    ("replicationcontrollers", "ReplicationController"),
];

/// The resource whose objects the quota resource `name` counts: pods for
/// `pods`, `cpu`, `requests.memory`, `count/pods`…, services for
/// `services.nodeports`, PVCs for `requests.storage`, and
/// `count/<resource>[.<group>]` for any other resource. None for names no
/// evaluator knows (upstream leaves those out of `used`).
pub fn resource_for(name: &str) -> Option<GroupResource> {
    for (plural, _) in CORE_RESOURCES {
        if quota::tracks("", plural, name) {
            return Some(GroupResource::new("", plural));
        }
    }
    let rest = name.strip_prefix("count/")?;
    let (resource, group) = rest.split_once('.').unwrap_or((rest, ""));
    (!resource.is_empty()).then(|| GroupResource::new(group, resource))
}

/// The watches, started on first need.
struct Monitors {
    client: Client,
    monitors: Mutex<HashMap<GroupResource, Arc<Monitor>>>,
    /// Resources discovery did not find, and when it was asked.
    missing: Mutex<HashMap<GroupResource, Instant>>,
    changes: mpsc::UnboundedSender<(GroupResource, String)>,
    shutdown: CancellationToken,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Monitors {
    /// The monitor of `gr`, started if needed; None when the cluster does
    /// not serve `gr` as a namespaced, listable, watchable resource.
    async fn get(&self, gr: &GroupResource) -> Result<Option<Arc<Monitor>>, Error> {
        if let Some(m) = lock(&self.monitors).get(gr) {
            return Ok(Some(m.clone()));
        }
        if lock(&self.missing)
            .get(gr)
            .is_some_and(|at| at.elapsed() < REDISCOVER_AFTER)
        {
            return Ok(None);
        }
        let Some(resource) = self.resolve(gr).await? else {
            lock(&self.missing).insert(gr.clone(), Instant::now());
            return Ok(None);
        };
        lock(&self.missing).remove(gr);
        let mut monitors = lock(&self.monitors);
        if let Some(m) = monitors.get(gr) {
            return Ok(Some(m.clone()));
        }
        let m = Arc::new(Monitor::new(gr.clone()));
        monitors.insert(gr.clone(), m.clone());
        let tx = self.changes.clone();
        tracing::debug!(resource = %gr, "starting quota monitor");
        let task = tokio::spawn(monitor::run(
            self.client.clone(),
            resource,
            m.clone(),
            move |gr, ns| {
                let _ = tx.unbounded_send((gr.clone(), ns));
            },
            self.shutdown.clone(),
        ));
        lock(&self.tasks).push(task);
        Ok(Some(m))
    }

    async fn resolve(&self, gr: &GroupResource) -> Result<Option<ApiResource>, Error> {
        if gr.group.is_empty() {
            if let Some((plural, kind)) = CORE_RESOURCES.iter().find(|(p, _)| *p == gr.resource) {
                return Ok(Some(ApiResource {
                    group: String::new(),
                    version: "v1".into(),
                    api_version: "v1".into(),
                    kind: (*kind).into(),
                    plural: (*plural).into(),
                }));
            }
        }
        let group = match discovery::group(&self.client, &gr.group).await {
            Ok(g) => g,
            Err(kube::Error::Discovery(_)) => return Ok(None),
            Err(e) if is_not_found(&e) => return Ok(None),
            Err(e) => return Err(Error::Discovery(gr.clone(), e)),
        };
        // Upstream quotas what can be created, listed, watched and deleted.
        Ok(group
            .recommended_resources()
            .into_iter()
            .find(|(ar, caps)| {
                ar.plural == gr.resource
                    && caps.scope == Scope::Namespaced
                    && [verbs::CREATE, verbs::LIST, verbs::WATCH, verbs::DELETE]
                        .iter()
                        .all(|v| caps.supports_operation(v))
            })
            .map(|(ar, _)| ar))
    }

    async fn stop(&self) {
        let tasks: Vec<_> = lock(&self.tasks).drain(..).collect();
        for t in tasks {
            if let Err(e) = t.await {
                tracing::warn!(error = %e, "quota monitor ended abnormally");
            }
        }
    }
}

struct Context {
    client: Client,
    monitors: Monitors,
    options: Options,
    quotas: Store<ResourceQuota>,
    /// When each quota (by UID) was last recomputed.
    last_sync: Mutex<HashMap<String, Instant>>,
}

impl Context {
    /// Waits out the rest of `min_sync_interval` since the quota's last
    /// sync. The controller never runs two syncs of one quota at once and
    /// folds the triggers arriving meanwhile into one, so this bounds the
    /// rate without ever postponing a sync indefinitely.
    async fn pace(&self, uid: &str) {
        let wait = lock(&self.last_sync)
            .get(uid)
            .map(|at| self.options.min_sync_interval.saturating_sub(at.elapsed()));
        if let Some(wait) = wait.filter(|w| !w.is_zero()) {
            tokio::time::sleep(wait).await;
        }
        let mut last = lock(&self.last_sync);
        if last.len() > 1024 {
            let stale = self.options.resync * 2;
            last.retain(|_, at| at.elapsed() < stale);
        }
        last.insert(uid.to_string(), Instant::now());
    }
}

/// Runs the controller until `shutdown` fires.
pub async fn run(client: Client, shutdown: CancellationToken) {
    run_with(client, Options::default(), shutdown).await;
}

/// What a quota sync depends on in its own object: the spec (status
/// updates, mostly this controller's and admission's, don't trigger one).
fn spec_hash(q: &ResourceQuota) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    serde_json::to_string(&q.spec)
        .unwrap_or_default()
        .hash(&mut h);
    Some(h.finish())
}

/// Runs the controller with `options` until `shutdown` fires.
pub async fn run_with(client: Client, options: Options, shutdown: CancellationToken) {
    let (reader, writer) = reflector::store::<ResourceQuota>();
    let quotas = watcher(
        Api::<ResourceQuota>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .modify(|q: &mut ResourceQuota| q.metadata.managed_fields = None)
    .reflect(writer)
    .applied_objects()
    .predicate_filter(spec_hash, PredicateConfig::default());
    let (tx, rx) = mpsc::unbounded();
    let monitor_shutdown = shutdown.child_token();
    let ctx = Arc::new(Context {
        monitors: Monitors {
            client: client.clone(),
            monitors: Mutex::new(HashMap::new()),
            missing: Mutex::new(HashMap::new()),
            changes: tx,
            shutdown: monitor_shutdown.clone(),
            tasks: Mutex::new(Vec::new()),
        },
        client,
        options: options.clone(),
        last_sync: Mutex::new(HashMap::new()),
        quotas: reader.clone(),
    });
    let store = reader.clone();
    let usage_changes =
        rx.flat_map(move |(gr, ns)| futures::stream::iter(quotas_tracking(&store, &gr, &ns)));
    let controller = Controller::for_stream(quotas, reader)
        .with_config(controller::Config::default().concurrency(options.workers))
        .reconcile_on(usage_changes)
        .graceful_shutdown_on(shutdown.cancelled_owned())
        .run(reconcile, error_policy, ctx.clone());
    runner::drive(controller, "resource quota sync").await;
    monitor_shutdown.cancel();
    ctx.monitors.stop().await;
}

/// The quotas of `namespace` limiting something `gr`'s objects use.
fn quotas_tracking(
    store: &Store<ResourceQuota>,
    gr: &GroupResource,
    namespace: &str,
) -> Vec<ObjectRef<ResourceQuota>> {
    store
        .state()
        .iter()
        .filter(|q| q.metadata.namespace.as_deref() == Some(namespace))
        .filter(|q| {
            let spec = q.spec.as_ref().and_then(|s| s.hard.as_ref());
            let status = q.status.as_ref().and_then(|s| s.hard.as_ref());
            spec.into_iter()
                .chain(status)
                .flat_map(|h| h.keys())
                .any(|name| resource_for(name).as_ref() == Some(gr))
        })
        .map(|q| ObjectRef::from_obj(q.as_ref()))
        .collect()
}

fn error_policy(_q: Arc<ResourceQuota>, err: &Error, _ctx: Arc<Context>) -> Action {
    match err {
        Error::Update(_, e) if is_conflict(e) => {
            // Admission or another writer got there first: recount.
            tracing::debug!(error = %err, "resource quota sync conflict");
            Action::requeue(Duration::from_millis(200))
        }
        Error::NotSynced(_) => Action::requeue(Duration::from_secs(1)),
        _ => {
            tracing::warn!(error = %err, "resource quota sync failed");
            Action::requeue(Duration::from_secs(5))
        }
    }
}

/// Upstream's quota.Equals: the same names with equal quantities.
fn lists_equal(a: &ResourceList, b: &ResourceList) -> bool {
    a.len() == b.len() && a.iter().all(|(k, v)| b.get(k) == Some(v))
}

fn to_k8s(list: &ResourceList) -> BTreeMap<String, K8sQuantity> {
    list.iter()
        .map(|(k, v)| (k.clone(), K8sQuantity(v.to_upstream_string())))
        .collect()
}

async fn reconcile(q: Arc<ResourceQuota>, ctx: Arc<Context>) -> Result<Action, Error> {
    let Some(namespace) = q.metadata.namespace.clone() else {
        return Ok(Action::await_change());
    };
    ctx.pace(q.metadata.uid.as_deref().unwrap_or_default())
        .await;
    // Read what the cache holds after the wait: it may be newer.
    let q = ctx
        .quotas
        .get(&ObjectRef::from_obj(q.as_ref()))
        .unwrap_or(q);
    let now = Timestamp::now();
    let obj = serde_json::to_value(q.as_ref()).unwrap_or(Value::Null);
    let spec = obj.get("spec").cloned().unwrap_or(Value::Null);
    let status = obj.get("status").unwrap_or(&Value::Null);
    let hard = quota::parse_list(spec.get("hard").unwrap_or(&Value::Null));
    let status_hard = status.get("hard").filter(|v| !v.is_null());
    let status_used = status.get("used").filter(|v| !v.is_null());
    let old_used = status_used.map(quota::parse_list).unwrap_or_default();
    let mut dirty = status_hard.is_none()
        || status_used.is_none()
        || !lists_equal(
            &hard,
            &status_hard.map(quota::parse_list).unwrap_or_default(),
        );

    // The hard names, by the resource whose objects they count.
    let mut by_resource: BTreeMap<GroupResource, Vec<String>> = BTreeMap::new();
    for name in hard.keys() {
        if let Some(gr) = resource_for(name) {
            by_resource.entry(gr).or_default().push(name.clone());
        }
    }
    // Names that could not be computed keep their last observed usage.
    let mut used = old_used.clone();
    let mut errors = Vec::new();
    let mut requeue = ctx.options.resync;
    for (gr, names) in &by_resource {
        let monitor = match ctx.monitors.get(gr).await {
            Ok(Some(m)) => m,
            Ok(None) => {
                // Not served (yet): look again once discovery may know it.
                requeue = requeue.min(REDISCOVER_AFTER);
                continue;
            }
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        if !monitor.wait_ready(SYNC_WAIT).await {
            errors.push(Error::NotSynced(gr.clone()));
            continue;
        }
        let sum = monitor.sum(&namespace, names, &spec, now);
        used.extend(sum.used);
        if let Some(at) = sum.next_change {
            let wait = now.duration_until(at).unsigned_abs() + Duration::from_secs(1);
            requeue = requeue.min(wait);
        }
    }
    let used = quota::mask(&used, &hard);
    dirty = dirty || !lists_equal(&used, &old_used);
    if dirty {
        let mut updated = (*q).clone();
        updated.status = Some(ResourceQuotaStatus {
            hard: Some(to_k8s(&hard)),
            used: Some(to_k8s(&used)),
        });
        let api: Api<ResourceQuota> = Api::namespaced(ctx.client.clone(), &namespace);
        let name = q.name_any();
        match api
            .replace_status(&name, &PostParams::default(), &updated)
            .await
        {
            Ok(_) => {}
            Err(e) if is_not_found(&e) => return Ok(Action::await_change()),
            Err(e) => return Err(Error::Update(format!("{namespace}/{name}"), e)),
        }
    }
    match errors.len() {
        0 => Ok(Action::requeue(requeue)),
        1 => Err(errors.remove(0)),
        _ => Err(Error::Aggregate(
            errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", "),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quota_names_map_to_the_resources_they_count() {
        let gr = |g: &str, r: &str| Some(GroupResource::new(g, r));
        assert_eq!(resource_for("pods"), gr("", "pods"));
        assert_eq!(resource_for("count/pods"), gr("", "pods"));
        assert_eq!(resource_for("requests.cpu"), gr("", "pods"));
        assert_eq!(resource_for("cpu"), gr("", "pods"));
        assert_eq!(resource_for("limits.memory"), gr("", "pods"));
        assert_eq!(resource_for("services.nodeports"), gr("", "services"));
        assert_eq!(resource_for("services"), gr("", "services"));
        assert_eq!(
            resource_for("requests.storage"),
            gr("", "persistentvolumeclaims")
        );
        assert_eq!(
            resource_for("gold.storageclass.storage.k8s.io/requests.storage"),
            gr("", "persistentvolumeclaims")
        );
        assert_eq!(resource_for("configmaps"), gr("", "configmaps"));
        assert_eq!(resource_for("secrets"), gr("", "secrets"));
        assert_eq!(resource_for("count/secrets"), gr("", "secrets"));
        assert_eq!(
            resource_for("count/deployments.apps"),
            gr("apps", "deployments")
        );
        assert_eq!(
            resource_for("count/widgets.example.com"),
            gr("example.com", "widgets")
        );
        assert_eq!(resource_for("count/endpoints"), gr("", "endpoints"));
        assert_eq!(resource_for("count/"), None);
        assert_eq!(resource_for("something-else"), None);
    }

    #[test]
    fn lists_compare_by_value() {
        let l = |v: serde_json::Value| quota::parse_list(&v);
        assert!(lists_equal(
            &l(serde_json::json!({"cpu": "1", "pods": "2"})),
            &l(serde_json::json!({"cpu": "1000m", "pods": "2"}))
        ));
        assert!(!lists_equal(
            &l(serde_json::json!({"cpu": "1"})),
            &l(serde_json::json!({"cpu": "1", "pods": "0"}))
        ));
    }
}
