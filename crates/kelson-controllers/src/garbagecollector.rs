//! The garbage collector: ownerReferences-based cleanup for every resource,
//! as upstream's garbagecollector controller does.
//!
//! - Background: once all owners of an object are gone (404, or a different
//!   uid under that name), the object is deleted; a dangling reference is
//!   only removed when other owners remain.
//! - Foreground: an owner with a deletionTimestamp and the
//!   `foregroundDeletion` finalizer has its dependents deleted; the finalizer
//!   is removed once no dependent with blockOwnerDeletion is left.
//! - Orphan: an owner with the `orphan` finalizer has its references removed
//!   from its dependents, then the finalizer.
//!
//! Every deletable, listable, watchable resource the API serves is watched
//! through a metadata-only watch (discovery is repeated so that new custom
//! resources join), feeding a compact uid graph (see [`graph`]).

pub(crate) mod graph;
pub(crate) mod queue;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use kube::api::{
    Api, DeleteParams, DynamicObject, PartialObjectMeta, Patch, PatchParams, Preconditions,
    PropagationPolicy,
};
use kube::discovery::{verbs, ApiResource, Discovery, Scope};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::Client;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use graph::{Graph, Identity, Meta, Work, FOREGROUND_FINALIZER, ORPHAN_FINALIZER};
use queue::WorkQueue;

#[derive(Clone, Debug)]
pub struct GcOptions {
    /// Workers deleting objects (upstream's --concurrent-gc-syncs: 20).
    pub workers: usize,
    /// How often discovery is repeated to pick up new resources.
    pub resync_period: Duration,
    /// Longest wait for the first lists before the workers start anyway.
    pub sync_timeout: Duration,
}

impl Default for GcOptions {
    fn default() -> Self {
        GcOptions {
            workers: 20,
            resync_period: Duration::from_secs(30),
            sync_timeout: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("discovering resources: {0}")]
    Discovery(#[source] kube::Error),
    #[error("unable to resolve the kind {kind} of {api_version}")]
    UnknownKind { api_version: String, kind: String },
    #[error("{verb} {resource} {name}: {source}")]
    Api {
        verb: &'static str,
        resource: String,
        name: String,
        #[source]
        source: Box<kube::Error>,
    },
    #[error("{0} has not been observed yet")]
    NotObserved(String),
    #[error("conflicting updates to {0}, retrying")]
    Conflict(String),
}

/// A served resource.
#[derive(Clone, Debug)]
struct Resource {
    ar: ApiResource,
    namespaced: bool,
}

/// Resources upstream never collects: events are too many and short-lived.
fn ignored(ar: &ApiResource) -> bool {
    ar.plural == "events" && (ar.group.is_empty() || ar.group == "events.k8s.io")
}

/// A graph change from one resource's watch.
enum GraphEvent {
    Apply(usize, Meta),
    Delete(String),
    Init(usize),
    InitDone(usize),
}

/// Uids known to be absent, so that a thousand dependents of one deleted
/// owner cost one GET. Bounded; the oldest entries fall out.
struct AbsentCache {
    set: HashSet<String>,
    order: VecDeque<String>,
}

const ABSENT_CACHE_SIZE: usize = 500;

impl AbsentCache {
    fn contains(&self, uid: &str) -> bool {
        self.set.contains(uid)
    }

    fn insert(&mut self, uid: String) {
        if self.set.insert(uid.clone()) {
            self.order.push_back(uid);
            if self.order.len() > ABSENT_CACHE_SIZE {
                if let Some(old) = self.order.pop_front() {
                    self.set.remove(&old);
                }
            }
        }
    }
}

struct Collector {
    client: Client,
    /// Append-only: graph nodes name resources by index.
    resources: RwLock<Vec<Resource>>,
    /// (group, kind) → index, for owner references.
    kinds: RwLock<HashMap<(String, String), usize>>,
    graph: Mutex<Graph>,
    absent: Mutex<AbsentCache>,
    delete_queue: Arc<WorkQueue<String>>,
    orphan_queue: Arc<WorkQueue<String>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs the collector until `shutdown` fires.
pub async fn run(client: Client, options: GcOptions, shutdown: CancellationToken) {
    let gc = Arc::new(Collector {
        client: client.clone(),
        resources: RwLock::new(Vec::new()),
        kinds: RwLock::new(HashMap::new()),
        graph: Mutex::new(Graph::default()),
        absent: Mutex::new(AbsentCache {
            set: HashSet::new(),
            order: VecDeque::new(),
        }),
        delete_queue: WorkQueue::new(shutdown.clone()),
        orphan_queue: WorkQueue::new(shutdown.clone()),
    });
    let (tx, rx) = mpsc::channel::<GraphEvent>(1024);
    let builder = tokio::spawn(gc.clone().build_graph(rx, shutdown.clone()));

    // (group, plural) → the token stopping its watch.
    let mut watching: HashMap<(String, String), CancellationToken> = HashMap::new();
    let mut first_sync: Vec<CancellationToken> = Vec::new();
    let mut workers = Vec::new();
    let mut started = false;
    loop {
        match gc.discover().await {
            Ok(watchable) => {
                let wanted: HashSet<(String, String)> = watchable
                    .iter()
                    .map(|&i| {
                        let r = &gc.resources.read().unwrap_or_else(|e| e.into_inner())[i];
                        (r.ar.group.clone(), r.ar.plural.clone())
                    })
                    .collect();
                watching.retain(|k, token| {
                    let keep = wanted.contains(k);
                    if !keep {
                        token.cancel();
                    }
                    keep
                });
                for i in watchable {
                    let r = gc.resources.read().unwrap_or_else(|e| e.into_inner())[i].clone();
                    let key = (r.ar.group.clone(), r.ar.plural.clone());
                    if watching.contains_key(&key) {
                        continue;
                    }
                    let token = shutdown.child_token();
                    let synced = CancellationToken::new();
                    if !started {
                        first_sync.push(synced.clone());
                    }
                    tokio::spawn(watch_resource(
                        client.clone(),
                        i,
                        r.ar,
                        tx.clone(),
                        synced,
                        token.clone(),
                    ));
                    watching.insert(key, token);
                }
            }
            Err(e) => tracing::warn!(error = %e, "garbage collector discovery"),
        }
        if !started {
            // The graph must know every dependent before foreground
            // deletions may finish: wait for the first lists.
            let all = async {
                for s in &first_sync {
                    s.cancelled().await;
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = all => {}
                _ = tokio::time::sleep(options.sync_timeout) => {
                    tracing::warn!("garbage collector: not every resource listed in time; starting anyway");
                }
            }
            first_sync.clear();
            started = true;
            for _ in 0..options.workers.max(1) {
                let gc = gc.clone();
                workers.push(tokio::spawn(async move { gc.delete_worker().await }));
            }
            for _ in 0..(options.workers / 4).max(1) {
                let gc = gc.clone();
                workers.push(tokio::spawn(async move { gc.orphan_worker().await }));
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(options.resync_period) => {}
        }
    }
    drop(tx);
    for w in workers {
        let _ = w.await;
    }
    let _ = builder.await;
}

/// Streams one resource's metadata into the graph builder.
async fn watch_resource(
    client: Client,
    index: usize,
    ar: ApiResource,
    tx: mpsc::Sender<GraphEvent>,
    synced: CancellationToken,
    stop: CancellationToken,
) {
    let api: Api<PartialObjectMeta<DynamicObject>> = Api::all_with(client, &ar);
    let mut stream =
        std::pin::pin!(watcher::watcher(api, watcher::Config::default()).default_backoff());
    loop {
        let ev = tokio::select! {
            _ = stop.cancelled() => return,
            ev = stream.try_next() => ev,
        };
        let ev = match ev {
            Ok(Some(ev)) => ev,
            Ok(None) => return,
            Err(e) => {
                tracing::debug!(resource = %ar.plural, error = %e, "garbage collector watch");
                continue;
            }
        };
        let out = match ev {
            Event::Init => Some(GraphEvent::Init(index)),
            Event::InitApply(o) | Event::Apply(o) => {
                Meta::from_object_meta(&o.metadata).map(|m| GraphEvent::Apply(index, m))
            }
            Event::Delete(o) => o.metadata.uid.map(GraphEvent::Delete),
            Event::InitDone => Some(GraphEvent::InitDone(index)),
        };
        let done = matches!(out, Some(GraphEvent::InitDone(_)));
        if let Some(out) = out {
            if tx.send(out).await.is_err() {
                return;
            }
        }
        if done {
            synced.cancel();
        }
    }
}

fn group_of(api_version: &str) -> &str {
    api_version.rsplit_once('/').map_or("", |(g, _)| g)
}

/// Whether a merge patch or delete lost a race and should be retried.
fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// Where a graph node's object lives in the API.
struct Target {
    res: Resource,
    namespace: Option<String>,
    name: String,
    uid: String,
}

impl Target {
    fn api(&self, client: &Client) -> Api<DynamicObject> {
        match (&self.namespace, self.res.namespaced) {
            (Some(ns), true) => Api::namespaced_with(client.clone(), ns, &self.res.ar),
            _ => Api::all_with(client.clone(), &self.res.ar),
        }
    }

    fn describe(&self) -> String {
        match (&self.namespace, self.res.namespaced) {
            (Some(ns), true) => format!("{}/{}", ns, self.name),
            _ => self.name.clone(),
        }
    }

    fn err(&self, verb: &'static str, source: kube::Error) -> Error {
        Error::Api {
            verb,
            resource: self.res.ar.plural.clone(),
            name: self.describe(),
            source: Box::new(source),
        }
    }
}

/// How one owner reference of an object stands.
#[derive(Debug, PartialEq)]
enum RefState {
    Solid,
    Dangling,
    /// The owner is being deleted in the foreground.
    Waiting,
}

impl Collector {
    /// Refreshes the resource table; returns the indexes to watch.
    async fn discover(&self) -> Result<Vec<usize>, Error> {
        let discovery = Discovery::new(self.client.clone())
            .run_aggregated()
            .await
            .map_err(Error::Discovery)?;
        let mut watchable = Vec::new();
        let mut resources = self.resources.write().unwrap_or_else(|e| e.into_inner());
        let mut kinds = self.kinds.write().unwrap_or_else(|e| e.into_inner());
        for group in discovery.groups() {
            for (ar, caps) in group.recommended_resources() {
                let key = (ar.group.clone(), ar.kind.clone());
                let res = Resource {
                    namespaced: caps.scope == Scope::Namespaced,
                    ar,
                };
                let index = match kinds.get(&key) {
                    Some(&i) if resources[i].ar.plural == res.ar.plural => {
                        resources[i] = res.clone();
                        i
                    }
                    _ => {
                        resources.push(res.clone());
                        kinds.insert(key, resources.len() - 1);
                        resources.len() - 1
                    }
                };
                if caps.supports_operation(verbs::LIST)
                    && caps.supports_operation(verbs::WATCH)
                    && caps.supports_operation(verbs::DELETE)
                    && !ignored(&res.ar)
                {
                    watchable.push(index);
                }
            }
        }
        Ok(watchable)
    }

    fn resolve(&self, api_version: &str, kind: &str) -> Option<Resource> {
        let i = *self
            .kinds
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(group_of(api_version).to_string(), kind.to_string()))?;
        // The served (preferred) version, not the reference's: a reference
        // written under a version no longer served must not read as absent.
        let res = self.resources.read().unwrap_or_else(|e| e.into_inner());
        res.get(i).cloned()
    }

    async fn build_graph(
        self: Arc<Self>,
        mut rx: mpsc::Receiver<GraphEvent>,
        shutdown: CancellationToken,
    ) {
        loop {
            let ev = tokio::select! {
                _ = shutdown.cancelled() => return,
                ev = rx.recv() => match ev { Some(ev) => ev, None => return },
            };
            let mut work = Work::default();
            let mut absent = Vec::new();
            {
                let mut g = lock(&self.graph);
                match ev {
                    GraphEvent::Apply(res, m) => g.apply(res, m, &mut work),
                    GraphEvent::Delete(uid) => {
                        if g.delete(&uid, &mut work) {
                            absent.push(uid);
                        }
                    }
                    GraphEvent::Init(res) => g.begin_relist(res),
                    GraphEvent::InitDone(res) => absent = g.end_relist(res, &mut work),
                }
            }
            {
                let mut cache = lock(&self.absent);
                for uid in absent {
                    cache.insert(uid);
                }
            }
            self.enqueue(work);
        }
    }

    fn enqueue(&self, work: Work) {
        for uid in work.delete {
            self.delete_queue.add(uid);
        }
        for uid in work.orphan {
            self.orphan_queue.add(uid);
        }
    }

    async fn delete_worker(self: Arc<Self>) {
        while let Some(uid) = self.delete_queue.get().await {
            match self.attempt_to_delete(&uid).await {
                Ok(()) => self.delete_queue.forget(&uid),
                Err(e) => {
                    if !matches!(e, Error::NotObserved(_)) {
                        tracing::debug!(error = %e, "garbage collector");
                    }
                    self.delete_queue.add_rate_limited(uid.clone());
                }
            }
            self.delete_queue.done(&uid);
        }
    }

    async fn orphan_worker(self: Arc<Self>) {
        while let Some(uid) = self.orphan_queue.get().await {
            match self.attempt_to_orphan(&uid).await {
                Ok(()) => self.orphan_queue.forget(&uid),
                Err(e) => {
                    tracing::debug!(error = %e, "garbage collector orphaning");
                    self.orphan_queue.add_rate_limited(uid.clone());
                }
            }
            self.orphan_queue.done(&uid);
        }
    }

    /// The API coordinates of a graph node.
    fn target(&self, uid: &str) -> Result<Option<(Target, graph::Node)>, Error> {
        let node = match lock(&self.graph).get(uid) {
            Some(n) => n.clone(),
            None => return Ok(None),
        };
        let res = match &node.identity {
            Identity::Resource(i) => self
                .resources
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .get(*i)
                .cloned(),
            Identity::Ref { api_version, kind } => self.resolve(api_version, kind),
        };
        let Some(res) = res else {
            let (api_version, kind) = match &node.identity {
                Identity::Ref { api_version, kind } => (api_version.clone(), kind.clone()),
                Identity::Resource(_) => (String::new(), String::new()),
            };
            return Err(Error::UnknownKind { api_version, kind });
        };
        let target = Target {
            res,
            namespace: node.namespace.clone(),
            name: node.name.clone(),
            uid: uid.to_string(),
        };
        Ok(Some((target, node)))
    }

    fn virtual_delete(&self, uid: &str) {
        let mut work = Work::default();
        lock(&self.graph).virtual_delete(uid, &mut work);
        if !work.delete.is_empty() {
            lock(&self.absent).insert(uid.to_string());
        }
        self.enqueue(work);
    }

    /// Upstream's attemptToDeleteItem.
    async fn attempt_to_delete(&self, uid: &str) -> Result<(), Error> {
        let Some((target, node)) = self.target(uid)? else {
            return Ok(());
        };
        if node.being_deleted && !node.deleting_dependents {
            return Ok(());
        }
        let api = target.api(&self.client);
        let latest = match api.get_metadata_opt(&target.name).await {
            Ok(l) => l,
            Err(e) => return Err(target.err("get", e)),
        };
        let Some(latest) = latest.filter(|l| l.metadata.uid.as_deref() == Some(uid)) else {
            self.virtual_delete(uid);
            return Ok(());
        };
        if !node.observed {
            // The owner exists; its watch will add it to the graph.
            return Err(Error::NotObserved(target.describe()));
        }
        if node.deleting_dependents {
            return self.process_deleting_dependents(uid, &target).await;
        }
        let refs = latest.metadata.owner_references.clone().unwrap_or_default();
        if refs.is_empty() {
            return Ok(());
        }
        let mut solid = Vec::new();
        let mut dangling = Vec::new();
        let mut waiting = Vec::new();
        for r in &refs {
            match self.classify(&target, r).await? {
                RefState::Solid => solid.push(r.uid.clone()),
                RefState::Dangling => dangling.push(r.uid.clone()),
                RefState::Waiting => waiting.push(r.uid.clone()),
            }
        }
        if !solid.is_empty() {
            if dangling.is_empty() && waiting.is_empty() {
                return Ok(());
            }
            // Other owners remain: only the references to owners that are
            // gone (or going) are removed.
            let remove: Vec<String> = dangling.into_iter().chain(waiting).collect();
            return self.remove_owner_refs(&target, &remove).await;
        }
        let has_dependents = !node.dependents.is_empty();
        let finalizers = latest.metadata.finalizers.unwrap_or_default();
        let policy = if !waiting.is_empty() && has_dependents {
            // Its own dependents must go first, so that its owner's
            // foreground deletion waits for the whole subtree.
            PropagationPolicy::Foreground
        } else if finalizers.iter().any(|f| f == ORPHAN_FINALIZER) {
            PropagationPolicy::Orphan
        } else if finalizers.iter().any(|f| f == FOREGROUND_FINALIZER) {
            PropagationPolicy::Foreground
        } else {
            PropagationPolicy::Background
        };
        tracing::debug!(object = %target.describe(), resource = %target.res.ar.plural, ?policy,
            "deleting object whose owners are all gone");
        let dp = DeleteParams {
            propagation_policy: Some(policy),
            preconditions: Some(Preconditions {
                uid: Some(uid.to_string()),
                resource_version: None,
            }),
            ..Default::default()
        };
        match api.delete(&target.name, &dp).await {
            Ok(_) => Ok(()),
            // Gone already, or replaced by a namesake.
            Err(e) if is_not_found(&e) || is_conflict(&e) => Ok(()),
            Err(e) => Err(target.err("delete", e)),
        }
    }

    /// Whether the owner a reference names exists (with that uid), is
    /// being deleted in the foreground, or is gone.
    async fn classify(
        &self,
        dependent: &Target,
        r: &k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference,
    ) -> Result<RefState, Error> {
        if lock(&self.absent).contains(&r.uid) {
            return Ok(RefState::Dangling);
        }
        let Some(res) = self.resolve(&r.api_version, &r.kind) else {
            return Err(Error::UnknownKind {
                api_version: r.api_version.clone(),
                kind: r.kind.clone(),
            });
        };
        let dependent_namespaced = dependent.res.namespaced;
        if res.namespaced && !dependent_namespaced {
            // A cluster-scoped object cannot have a namespaced owner:
            // upstream treats such a reference as unresolvable and never
            // collects the object because of it.
            tracing::warn!(object = %dependent.describe(), owner_kind = %r.kind,
                "cluster-scoped object references a namespaced owner");
            return Ok(RefState::Solid);
        }
        // The graph already knows a foreground deletion in progress; that
        // state is final, so no GET is needed.
        if let Some(n) = lock(&self.graph).get(&r.uid) {
            let same_ns = !res.namespaced || n.namespace == dependent.namespace;
            if n.observed && n.deleting_dependents && same_ns {
                return Ok(RefState::Waiting);
            }
        }
        let owner = Target {
            namespace: if res.namespaced {
                dependent.namespace.clone()
            } else {
                None
            },
            res,
            name: r.name.clone(),
            uid: r.uid.clone(),
        };
        match owner.api(&self.client).get_metadata_opt(&r.name).await {
            Ok(Some(o)) if o.metadata.uid.as_deref() == Some(r.uid.as_str()) => {
                let fg = o
                    .metadata
                    .finalizers
                    .iter()
                    .flatten()
                    .any(|f| f == FOREGROUND_FINALIZER);
                if o.metadata.deletion_timestamp.is_some() && fg {
                    Ok(RefState::Waiting)
                } else {
                    Ok(RefState::Solid)
                }
            }
            Ok(_) => {
                lock(&self.absent).insert(r.uid.clone());
                Ok(RefState::Dangling)
            }
            Err(e) => Err(owner.err("get", e)),
        }
    }

    /// Upstream's processDeletingDependentsItem.
    async fn process_deleting_dependents(&self, uid: &str, target: &Target) -> Result<(), Error> {
        let blocking = lock(&self.graph).blocking_dependents(uid);
        if blocking.is_empty() {
            return self.remove_finalizer(target, FOREGROUND_FINALIZER).await;
        }
        let g = lock(&self.graph);
        for dep in blocking {
            if g.get(&dep).is_some_and(|d| !d.deleting_dependents) {
                self.delete_queue.add(dep);
            }
        }
        Ok(())
    }

    /// Upstream's attemptToOrphanWorker: drop the references to the owner
    /// from every dependent, then the owner's `orphan` finalizer.
    async fn attempt_to_orphan(&self, uid: &str) -> Result<(), Error> {
        let Some((target, node)) = self.target(uid)? else {
            return Ok(());
        };
        let mut deps = Vec::new();
        for d in &node.dependents {
            if let Some((t, _)) = self.target(d)? {
                deps.push(t);
            }
        }
        let owner = [target.uid.clone()];
        let owner = &owner;
        let results: Vec<Result<(), Error>> = futures::stream::iter(deps)
            .map(|t| async move { self.remove_owner_refs(&t, owner).await })
            .buffer_unordered(16)
            .collect()
            .await;
        results.into_iter().collect::<Result<Vec<()>, Error>>()?;
        self.remove_finalizer(&target, ORPHAN_FINALIZER).await
    }

    /// Removes the references to `owners` from the object, with a merge
    /// patch guarded by its resourceVersion.
    async fn remove_owner_refs(&self, target: &Target, owners: &[String]) -> Result<(), Error> {
        let api = target.api(&self.client);
        for _ in 0..5 {
            let current = match api.get_metadata_opt(&target.name).await {
                Ok(Some(c)) if c.metadata.uid.as_deref() == Some(target.uid.as_str()) => c,
                Ok(_) => return Ok(()),
                Err(e) => return Err(target.err("get", e)),
            };
            let refs = current.metadata.owner_references.unwrap_or_default();
            let kept: Vec<_> = refs
                .iter()
                .filter(|r| !owners.contains(&r.uid))
                .cloned()
                .collect();
            if kept.len() == refs.len() {
                return Ok(());
            }
            let patch = serde_json::json!({"metadata": {
                "ownerReferences": if kept.is_empty() { serde_json::Value::Null } else { serde_json::to_value(&kept).unwrap_or_default() },
                "resourceVersion": current.metadata.resource_version,
            }});
            match api
                .patch(&target.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => return Ok(()),
                Err(e) if is_conflict(&e) => continue,
                Err(e) if is_not_found(&e) => return Ok(()),
                Err(e) => return Err(target.err("patch", e)),
            }
        }
        Err(Error::Conflict(target.describe()))
    }

    async fn remove_finalizer(&self, target: &Target, finalizer: &str) -> Result<(), Error> {
        let api = target.api(&self.client);
        for _ in 0..5 {
            let current = match api.get_metadata_opt(&target.name).await {
                Ok(Some(c)) if c.metadata.uid.as_deref() == Some(target.uid.as_str()) => c,
                Ok(_) => return Ok(()),
                Err(e) => return Err(target.err("get", e)),
            };
            let finalizers = current.metadata.finalizers.unwrap_or_default();
            if !finalizers.iter().any(|f| f == finalizer) {
                return Ok(());
            }
            let kept: Vec<&String> = finalizers.iter().filter(|f| *f != finalizer).collect();
            let patch = serde_json::json!({"metadata": {
                "finalizers": if kept.is_empty() { serde_json::Value::Null } else { serde_json::json!(kept) },
                "resourceVersion": current.metadata.resource_version,
            }});
            match api
                .patch(&target.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => return Ok(()),
                Err(e) if is_conflict(&e) => continue,
                Err(e) if is_not_found(&e) => return Ok(()),
                Err(e) => return Err(target.err("patch", e)),
            }
        }
        Err(Error::Conflict(target.describe()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_groups_come_from_the_api_version() {
        assert_eq!(group_of("v1"), "");
        assert_eq!(group_of("apps/v1"), "apps");
        assert_eq!(group_of("example.com/v1beta1"), "example.com");
    }

    #[test]
    fn events_are_never_collected() {
        let core = ApiResource {
            group: String::new(),
            version: "v1".into(),
            api_version: "v1".into(),
            kind: "Event".into(),
            plural: "events".into(),
        };
        assert!(ignored(&core));
        let mut other = core.clone();
        other.plural = "configmaps".into();
        assert!(!ignored(&other));
    }

    #[test]
    fn the_absent_cache_is_bounded() {
        let mut c = AbsentCache {
            set: HashSet::new(),
            order: VecDeque::new(),
        };
        for i in 0..(ABSENT_CACHE_SIZE + 10) {
            c.insert(format!("u{i}"));
        }
        assert_eq!(c.set.len(), ABSENT_CACHE_SIZE);
        assert!(!c.contains("u0"));
        assert!(c.contains(&format!("u{}", ABSENT_CACHE_SIZE + 9)));
    }
}
