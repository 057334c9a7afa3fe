//! What every workload controller (ReplicaSet, ReplicationController,
//! Deployment, later StatefulSet, DaemonSet, Job) shares, after upstream's
//! pkg/controller/controller_utils.go and controller_ref_manager.go:
//!
//! - [`pod_from_template`] / [`controller_ref`]: the Pod a controller creates
//!   from its template, owned through a controller reference;
//! - [`PodControl`]: creating and deleting pods with upstream's Events;
//! - [`slow_start_batch`]: creations in batches of 1, 2, 4, … while all
//!   succeed;
//! - [`Expectations`]: don't act again on an owner until the creations and
//!   deletions it issued have been observed (or a timeout passed);
//! - [`OwnerIndex`] / [`indexed_watch`]: a reflector store of children indexed
//!   by controlling owner UID, plus the orphans of each namespace;
//! - [`claim`]: adopting orphans that match a selector and releasing owned
//!   objects that no longer do;
//! - [`pods_to_delete`]: upstream's ranking of pods for scale-down;
//! - [`is_pod_active`], [`is_pod_ready`], [`is_pod_available`].

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Debug;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{ObjectReference, Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use kelson_runtime::{EventType, Recorder};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::informers::{Informed, Informers, Notice};

/// Upstream's limit on creations or deletions issued in one sync.
pub const BURST_REPLICAS: usize = 500;
/// First batch of [`slow_start_batch`].
pub const SLOW_START_INITIAL_BATCH_SIZE: usize = 1;
/// How long unobserved expectations hold an owner back (upstream's
/// ExpectationsTimeout).
pub const EXPECTATIONS_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// Pods with a lower cost are deleted first on scale-down.
pub const POD_DELETION_COST_ANNOTATION: &str = "controller.kubernetes.io/pod-deletion-cost";

/// Event reasons upstream's pod control records.
pub const SUCCESSFUL_CREATE: &str = "SuccessfulCreate";
pub const FAILED_CREATE: &str = "FailedCreate";
pub const SUCCESSFUL_DELETE: &str = "SuccessfulDelete";
pub const FAILED_DELETE: &str = "FailedDelete";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("unable to create pods, no labels")]
    NoLabels,
    #[error("unable to create pods: {0}")]
    Create(#[source] Box<kube::Error>),
    #[error("unable to delete pods: {0}")]
    Delete(#[source] Box<kube::Error>),
    #[error("invalid label selector: {0}")]
    Selector(String),
    #[error("adopting or releasing {kind} {namespace}/{name}: {source}")]
    Claim {
        kind: String,
        namespace: String,
        name: String,
        #[source]
        source: Box<kube::Error>,
    },
    #[error("checking whether {0} may adopt: {1}")]
    CanAdopt(String, String),
}

impl Error {
    /// Whether the API server refused because the namespace is being
    /// deleted; upstream records no Event and treats it as done.
    pub fn is_namespace_terminating(&self) -> bool {
        match self {
            Error::Create(e) | Error::Delete(e) => is_namespace_terminating(e),
            _ => false,
        }
    }

    /// Whether the object was already gone.
    pub fn is_not_found(&self) -> bool {
        match self {
            Error::Create(e) | Error::Delete(e) => is_not_found(e),
            Error::Claim { source, .. } => is_not_found(source),
            _ => false,
        }
    }
}

pub fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

pub fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409 && s.reason != "AlreadyExists")
}

pub fn is_already_exists(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409 && s.reason == "AlreadyExists")
}

fn is_namespace_terminating(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(s) => s
            .details
            .as_ref()
            .is_some_and(|d| d.causes.iter().any(|c| c.reason == "NamespaceTerminating")),
        _ => false,
    }
}

// ---------------------------------------------------------------------------
// Label selectors

#[derive(Debug, Clone, PartialEq)]
enum Requirement {
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
}

/// A label selector, as upstream's labels.Selector: every requirement must
/// hold. An empty selector matches everything; [`Selector::nothing`] nothing.
#[derive(Debug, Clone, PartialEq)]
pub struct Selector {
    requirements: Vec<Requirement>,
    nothing: bool,
}

impl Selector {
    /// What metav1.LabelSelectorAsSelector makes of `sel`; `None` selects
    /// nothing, an empty selector everything.
    pub fn from_label_selector(sel: Option<&LabelSelector>) -> Result<Selector, Error> {
        let Some(sel) = sel else {
            return Ok(Selector::nothing());
        };
        let mut requirements = Vec::new();
        for (k, v) in sel.match_labels.iter().flatten() {
            requirements.push(Requirement::In(k.clone(), vec![v.clone()]));
        }
        for e in sel.match_expressions.iter().flatten() {
            let values = e.values.clone().unwrap_or_default();
            let r = match e.operator.as_str() {
                "In" | "NotIn" if values.is_empty() => {
                    return Err(Error::Selector(format!(
                        "for 'in', 'notin' operators, values set can't be empty (key {})",
                        e.key
                    )))
                }
                "In" => Requirement::In(e.key.clone(), values),
                "NotIn" => Requirement::NotIn(e.key.clone(), values),
                "Exists" => Requirement::Exists(e.key.clone()),
                "DoesNotExist" => Requirement::DoesNotExist(e.key.clone()),
                op => {
                    return Err(Error::Selector(format!(
                        "{op:?} is not a valid label selector operator"
                    )))
                }
            };
            requirements.push(r);
        }
        Ok(Selector {
            requirements,
            nothing: false,
        })
    }

    /// A set-based selector from a plain map (ReplicationController's
    /// `spec.selector`, a template's labels).
    pub fn from_map(map: &BTreeMap<String, String>) -> Selector {
        Selector {
            requirements: map
                .iter()
                .map(|(k, v)| Requirement::In(k.clone(), vec![v.clone()]))
                .collect(),
            nothing: false,
        }
    }

    pub fn nothing() -> Selector {
        Selector {
            requirements: Vec::new(),
            nothing: true,
        }
    }

    /// Whether this selector selects everything (upstream refuses to act
    /// on such a selector for Deployments).
    pub fn is_everything(&self) -> bool {
        !self.nothing && self.requirements.is_empty()
    }

    pub fn matches(&self, labels: Option<&BTreeMap<String, String>>) -> bool {
        if self.nothing {
            return false;
        }
        let get = |k: &str| labels.and_then(|l| l.get(k));
        self.requirements.iter().all(|r| match r {
            Requirement::In(k, vs) => get(k).is_some_and(|v| vs.contains(v)),
            Requirement::NotIn(k, vs) => get(k).is_none_or(|v| !vs.contains(v)),
            Requirement::Exists(k) => get(k).is_some(),
            Requirement::DoesNotExist(k) => get(k).is_none(),
        })
    }
}

// ---------------------------------------------------------------------------
// Pods from templates

/// The controller reference a controller puts on what it creates or adopts:
/// `controller: true`, `blockOwnerDeletion: true`.
pub fn controller_ref<K>(owner: &K) -> OwnerReference
where
    K: Resource<DynamicType = ()>,
{
    OwnerReference {
        api_version: K::api_version(&()).into_owned(),
        kind: K::kind(&()).into_owned(),
        name: owner.meta().name.clone().unwrap_or_default(),
        uid: owner.meta().uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// The controller reference of `obj`, if any.
pub fn controller_of(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .iter()
        .flatten()
        .find(|r| r.controller == Some(true))
}

/// The owners of kind `K` an event about a child (pod, replica set,
/// revision) concerns, as upstream's event handlers resolve them: its
/// controller if that is a `K` (same kind and API group), else, for an
/// orphan not being deleted, every `K` of its namespace whose selector
/// (from `selector`) matches it, since any of them may adopt it. An empty
/// selector selects nothing here, as in upstream's GetPodXs listers.
pub fn owners_of_child<K>(
    store: &Store<K>,
    child: &ObjectMeta,
    selector: impl Fn(&K) -> Result<Selector, Error>,
) -> Vec<ObjectRef<K>>
where
    K: Resource<DynamicType = ()> + Clone,
{
    let ns = child.namespace.as_deref().unwrap_or_default();
    match controller_of(child) {
        Some(r) => {
            let group = r.api_version.rsplit_once('/').map_or("", |(g, _)| g);
            if r.kind == K::kind(&()) && group == K::group(&()) {
                vec![ObjectRef::new(&r.name).within(ns)]
            } else {
                Vec::new()
            }
        }
        None if child.deletion_timestamp.is_some() => Vec::new(),
        None => store
            .state()
            .iter()
            .filter(|o| o.meta().namespace.as_deref() == Some(ns))
            .filter(|o| {
                selector(o).is_ok_and(|s| !s.is_everything() && s.matches(child.labels.as_ref()))
            })
            .map(|o| ObjectRef::from_obj(o.as_ref()))
            .collect(),
    }
}

/// `<owner>-` as the pods' generateName, or the bare owner name when the
/// dash would make it no valid DNS subdomain (upstream's getPodsPrefix).
pub fn pod_name_prefix(owner_name: &str) -> String {
    let prefix = format!("{owner_name}-");
    if is_dns_subdomain_prefix(&prefix) {
        prefix
    } else {
        owner_name.to_string()
    }
}

fn is_dns_subdomain_prefix(prefix: &str) -> bool {
    // A generateName gets 5 random characters appended; upstream validates
    // the prefix with a trailing dash allowed and the result within 253.
    let trimmed = prefix.trim_end_matches('-');
    !trimmed.is_empty()
        && prefix.len() <= 253
        && trimmed.split('.').all(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && p.as_bytes()[0].is_ascii_alphanumeric()
                && p.as_bytes()[p.len() - 1].is_ascii_alphanumeric()
        })
}

/// The pod a controller named `owner_name` creates from `template`
/// (upstream's GetPodFromTemplate): the template's labels, annotations,
/// finalizers and spec, `generateName: <owner>-`, and `owner` as its
/// controller reference.
pub fn pod_from_template(
    template: &PodTemplateSpec,
    owner_name: &str,
    owner: Option<OwnerReference>,
) -> Pod {
    let meta = template.metadata.clone().unwrap_or_default();
    let mut pod = Pod::default();
    pod.metadata.labels = meta.labels.filter(|l| !l.is_empty());
    pod.metadata.annotations = meta.annotations.filter(|a| !a.is_empty());
    pod.metadata.finalizers = meta.finalizers.filter(|f| !f.is_empty());
    pod.metadata.generate_name = Some(pod_name_prefix(owner_name));
    pod.metadata.owner_references = owner.map(|o| vec![o]);
    pod.spec = template.spec.clone();
    pod
}

/// Creates and deletes pods for controllers, recording upstream's Events on
/// the owner ("Created pod: web-7d4b9c-x2k9q", "Error creating: …").
#[derive(Clone)]
pub struct PodControl {
    client: Client,
    recorder: Recorder,
}

impl PodControl {
    pub fn new(client: Client, recorder: Recorder) -> PodControl {
        PodControl { client, recorder }
    }

    pub fn recorder(&self) -> &Recorder {
        &self.recorder
    }

    /// Creates `pod` in `namespace` (with its `generateName`, or an explicit
    /// name as StatefulSets give); `owner` is the object the Events are
    /// about.
    pub async fn create_pod(
        &self,
        namespace: &str,
        pod: &Pod,
        owner: &ObjectReference,
    ) -> Result<Pod, Error> {
        if pod.metadata.labels.as_ref().is_none_or(|l| l.is_empty()) {
            return Err(Error::NoLabels);
        }
        let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        match api.create(&PostParams::default(), pod).await {
            Ok(created) => {
                self.recorder.event(
                    owner,
                    EventType::Normal,
                    SUCCESSFUL_CREATE,
                    format!("Created pod: {}", created.name_any()),
                );
                Ok(created)
            }
            Err(e) => {
                if !is_namespace_terminating(&e) {
                    self.recorder.event(
                        owner,
                        EventType::Warning,
                        FAILED_CREATE,
                        format!("Error creating: {}", api_message(&e)),
                    );
                }
                Err(Error::Create(Box::new(e)))
            }
        }
    }

    /// Creates `count` pods in `namespace`, the i-th from `make(i)`, in
    /// slow-start batches (see [`slow_start_batch`]), expecting them in
    /// `expectations` for the owner with `uid` first so that fast watch
    /// events are counted. Creations refused because the namespace is
    /// terminating count as done (no pod will appear, nothing to report);
    /// failed or skipped ones are marked observed, since the watch will
    /// never show them. Returns the successes and the first error.
    pub async fn create_pods<F>(
        &self,
        expectations: &Expectations,
        uid: &str,
        namespace: &str,
        owner: &ObjectReference,
        count: usize,
        mut make: F,
    ) -> (usize, Option<Error>)
    where
        F: FnMut(usize) -> Pod,
    {
        expectations.expect_creations(uid, count);
        let (successes, err) = slow_start_batch(count, SLOW_START_INITIAL_BATCH_SIZE, |i| {
            let pod = make(i);
            async move {
                match self.create_pod(namespace, &pod, owner).await {
                    Ok(_) => Ok(()),
                    Err(e) if e.is_namespace_terminating() => {
                        expectations.creation_observed(uid);
                        Ok(())
                    }
                    Err(e) => Err(e),
                }
            }
        })
        .await;
        for _ in successes..count {
            expectations.creation_observed(uid);
        }
        (successes, err)
    }

    /// Deletes pod `name`; a pod already gone is reported as
    /// [`Error::is_not_found`] without an Event.
    pub async fn delete_pod(
        &self,
        namespace: &str,
        name: &str,
        owner: &ObjectReference,
    ) -> Result<(), Error> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        match api.delete(name, &DeleteParams::default()).await {
            Ok(_) => {
                self.recorder.event(
                    owner,
                    EventType::Normal,
                    SUCCESSFUL_DELETE,
                    format!("Deleted pod: {name}"),
                );
                Ok(())
            }
            Err(e) if is_not_found(&e) => Err(Error::Delete(Box::new(e))),
            Err(e) => {
                self.recorder.event(
                    owner,
                    EventType::Warning,
                    FAILED_DELETE,
                    format!("Error deleting: {}", api_message(&e)),
                );
                Err(Error::Delete(Box::new(e)))
            }
        }
    }
}

/// The API server's message for an API error (what upstream's `%v` of a
/// StatusError prints), else the error itself.
pub fn api_message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) if !s.message.is_empty() => s.message.clone(),
        e => e.to_string(),
    }
}

/// Runs `count` calls of `f` in batches of 1, 2, 4, … (starting at
/// `initial`), each batch concurrently, stopping after the first batch with
/// a failure: a controller whose pods are refused (quota, admission) makes
/// one failing call instead of hundreds. Returns the successes and the
/// first error.
pub async fn slow_start_batch<F, Fut, E>(
    count: usize,
    initial: usize,
    mut f: F,
) -> (usize, Option<E>)
where
    F: FnMut(usize) -> Fut,
    Fut: Future<Output = Result<(), E>>,
{
    let mut remaining = count;
    let mut successes = 0;
    let mut issued = 0;
    let mut batch = remaining.min(initial.max(1));
    while batch > 0 {
        let calls: Vec<Fut> = (0..batch).map(|i| f(issued + i)).collect();
        issued += batch;
        let results = futures::future::join_all(calls).await;
        let mut first_err = None;
        for r in results {
            match r {
                Ok(()) => successes += 1,
                Err(e) => {
                    if first_err.is_none() {
                        first_err = Some(e);
                    }
                }
            }
        }
        if first_err.is_some() {
            return (successes, first_err);
        }
        remaining -= batch;
        batch = remaining.min(batch * 2);
    }
    (successes, None)
}

// ---------------------------------------------------------------------------
// Expectations

#[derive(Debug)]
struct Expectation {
    adds: i64,
    deletes: HashSet<String>,
    set_at: Instant,
}

/// Creations and deletions an owner issued and has not seen in its watch
/// yet (upstream's UIDTrackingControllerExpectations), keyed by the owner's
/// UID: while any are outstanding the owner's pod list is stale and it
/// must not create or delete again, unless `timeout` has passed.
#[derive(Debug)]
pub struct Expectations {
    inner: Mutex<HashMap<String, Expectation>>,
    timeout: Duration,
}

impl Default for Expectations {
    fn default() -> Self {
        Expectations::new(EXPECTATIONS_TIMEOUT)
    }
}

impl Expectations {
    pub fn new(timeout: Duration) -> Expectations {
        Expectations {
            inner: Mutex::new(HashMap::new()),
            timeout,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Expectation>> {
        // A panic elsewhere while holding the lock leaves plain counters
        // behind; they remain usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `owner` may act: everything it issued was observed, its
    /// expectations expired, or it never issued anything.
    pub fn satisfied(&self, owner: &str) -> bool {
        let mut map = self.lock();
        match map.get(owner) {
            None => true,
            Some(e) if e.adds <= 0 && e.deletes.is_empty() => {
                map.remove(owner);
                true
            }
            Some(e) if e.set_at.elapsed() > self.timeout => {
                tracing::debug!(owner, "expectations expired");
                map.remove(owner);
                true
            }
            Some(_) => false,
        }
    }

    /// Records that `owner` is about to create `n` objects.
    pub fn expect_creations(&self, owner: &str, n: usize) {
        let mut map = self.lock();
        let e = map.entry(owner.to_string()).or_insert_with(|| Expectation {
            adds: 0,
            deletes: HashSet::new(),
            set_at: Instant::now(),
        });
        e.adds = n as i64;
        e.deletes.clear();
        e.set_at = Instant::now();
    }

    /// Records that `owner` is about to delete `keys` ("namespace/name").
    pub fn expect_deletions(&self, owner: &str, keys: impl IntoIterator<Item = String>) {
        let mut map = self.lock();
        let e = map.entry(owner.to_string()).or_insert_with(|| Expectation {
            adds: 0,
            deletes: HashSet::new(),
            set_at: Instant::now(),
        });
        e.adds = 0;
        e.deletes = keys.into_iter().collect();
        e.set_at = Instant::now();
    }

    /// One creation by `owner` was seen (or will never happen).
    pub fn creation_observed(&self, owner: &str) {
        if let Some(e) = self.lock().get_mut(owner) {
            e.adds -= 1;
        }
    }

    /// The deletion of `key` by `owner` was seen (or will never happen).
    pub fn deletion_observed(&self, owner: &str, key: &str) {
        if let Some(e) = self.lock().get_mut(owner) {
            e.deletes.remove(key);
        }
    }

    /// Drops what is known about `owner` (it was deleted).
    pub fn forget(&self, owner: &str) {
        self.lock().remove(owner);
    }

    /// Feeds one informer notice about a child into the expectations of
    /// its controlling owner: a child new to the store counts as a seen
    /// creation, a deleted or terminating one as a seen deletion.
    pub fn observe<K>(&self, notice: &Notice<K>)
    where
        K: Resource<DynamicType = ()>,
    {
        let (obj, deleted, is_new) = match notice {
            Notice::Apply { obj, old } => (obj, false, old.is_none()),
            Notice::Delete(o) => (o, true, false),
            Notice::Synced => return,
        };
        let Some(owner) = controller_of(obj.meta()).map(|r| r.uid.clone()) else {
            return;
        };
        if self.lock().get(&owner).is_none() {
            return;
        }
        let key = object_key(obj.meta());
        if deleted || obj.meta().deletion_timestamp.is_some() {
            self.deletion_observed(&owner, &key);
        }
        if is_new {
            self.creation_observed(&owner);
        }
    }
}

/// "namespace/name"
pub fn object_key(meta: &ObjectMeta) -> String {
    format!(
        "{}/{}",
        meta.namespace.as_deref().unwrap_or(""),
        meta.name.as_deref().unwrap_or("")
    )
}

// ---------------------------------------------------------------------------
// Children indexed by owner

/// Children of one owner, or the orphans of one namespace, by
/// (namespace, name).
type Children<K> = HashMap<(String, String), Arc<K>>;

struct Index<K> {
    /// Controlling owner's UID → its children.
    by_owner: HashMap<String, Children<K>>,
    /// Namespace → children without a controller.
    orphans: HashMap<String, Children<K>>,
}

impl<K> Default for Index<K> {
    fn default() -> Self {
        Index {
            by_owner: HashMap::new(),
            orphans: HashMap::new(),
        }
    }
}

/// A reflector store of children (pods, replica sets) with an index from
/// the controlling owner's UID to its children and from each namespace to
/// its orphans, so a sync reads only what concerns its owner instead of
/// scanning every pod in the cluster. The index holds the same `Arc`s as
/// the store, so reading an owner's children copies no object and looks
/// nothing up.
pub struct OwnerIndex<K>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    store: Store<K>,
    index: Mutex<Index<K>>,
}

impl<K> OwnerIndex<K>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    pub fn new(store: Store<K>) -> OwnerIndex<K> {
        OwnerIndex {
            store,
            index: Mutex::new(Index::default()),
        }
    }

    pub fn store(&self) -> &Store<K> {
        &self.store
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Index<K>> {
        self.index.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn key(obj: &K) -> (String, String) {
        let meta = obj.meta();
        (
            meta.namespace.clone().unwrap_or_default(),
            meta.name.clone().unwrap_or_default(),
        )
    }

    /// Removes `obj` from the bucket its own metadata places it in.
    fn remove(index: &mut Index<K>, obj: &K, key: &(String, String)) {
        let (map, bucket) = match controller_of(obj.meta()) {
            Some(r) => (&mut index.by_owner, r.uid.clone()),
            None => (&mut index.orphans, key.0.clone()),
        };
        if let Some(children) = map.get_mut(&bucket) {
            children.remove(key);
            if children.is_empty() {
                map.remove(&bucket);
            }
        }
    }

    /// Updates the index from a notice the store has already applied.
    pub fn observe(&self, notice: &Notice<K>) {
        match notice {
            Notice::Apply { obj, old } => {
                let key = Self::key(obj);
                let mut index = self.lock();
                // A new controller (or none) moves the child between
                // buckets; the notice carries what it was filed under.
                if let Some(old) = old {
                    let before = controller_of(old.meta()).map(|r| r.uid.as_str());
                    let after = controller_of(obj.meta()).map(|r| r.uid.as_str());
                    if before != after {
                        Self::remove(&mut index, old, &key);
                    }
                }
                let bucket = match controller_of(obj.meta()) {
                    Some(r) => index.by_owner.entry(r.uid.clone()),
                    None => index.orphans.entry(key.0.clone()),
                };
                bucket.or_default().insert(key, obj.clone());
            }
            Notice::Delete(o) => {
                let key = Self::key(o);
                Self::remove(&mut self.lock(), o, &key);
            }
            // Relists arrive as exact changes: nothing to rebuild.
            Notice::Synced => {}
        }
    }

    /// The children controlled by the owner with `uid`, plus the orphans of
    /// `namespace` when `with_orphans`.
    pub fn children(&self, namespace: &str, uid: &str, with_orphans: bool) -> Vec<Arc<K>> {
        let index = self.lock();
        let owned = index.by_owner.get(uid);
        let orphans = with_orphans.then(|| index.orphans.get(namespace)).flatten();
        let mut out =
            Vec::with_capacity(owned.map_or(0, HashMap::len) + orphans.map_or(0, HashMap::len));
        out.extend(owned.into_iter().flat_map(|c| c.values().cloned()));
        out.extend(orphans.into_iter().flat_map(|c| c.values().cloned()));
        out
    }
}

/// A subscription to the shared informer of `K` feeding a new
/// [`OwnerIndex`] over the informer's store, with `on_notice` called on
/// each notice before the index sees it (for [`Expectations::observe`]).
/// Returns the index and the stream of touched objects, which triggers the
/// owners' syncs and must be driven for the index to fill.
pub fn indexed_watch<K, B>(
    informers: &Informers,
    mut on_notice: B,
) -> (Arc<OwnerIndex<K>>, impl Stream<Item = Arc<K>> + Send)
where
    K: Informed,
    B: FnMut(&Notice<K>) + Send + 'static,
{
    let informer = informers.get::<K>();
    let index = Arc::new(OwnerIndex::new(informer.store()));
    let observer = index.clone();
    let stream = informer.subscribe().filter_map(move |n| {
        on_notice(&n);
        observer.observe(&n);
        std::future::ready(n.object().cloned())
    });
    (index, stream)
}

// ---------------------------------------------------------------------------
// Claiming

/// The owner a claim acts for.
pub struct ClaimOwner<'a> {
    pub reference: OwnerReference,
    pub namespace: &'a str,
    /// The owner is being deleted: it adopts and releases nothing.
    pub deleting: bool,
}

/// Upstream's ControllerRefManager.Claim*: of `candidates` (the owner's
/// children and the namespace's orphans), keeps the children that match
/// `selector`, adopts matching orphans (after `can_adopt` confirmed, once,
/// that the owner still exists unchanged) and releases children that no
/// longer match. Returns what the owner now controls.
pub async fn claim<K, F, Fut>(
    api: &Api<K>,
    owner: &ClaimOwner<'_>,
    selector: &Selector,
    candidates: Vec<Arc<K>>,
    can_adopt: F,
) -> Result<Vec<Arc<K>>, Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Serialize + Debug,
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<(), Error>>,
{
    let uid = owner.reference.uid.as_str();
    let mut claimed = Vec::with_capacity(candidates.len());
    let mut can_adopt = Some(can_adopt);
    let mut adopt_checked: Option<Result<(), String>> = None;
    let mut errors = Vec::new();
    for obj in candidates {
        let matches = selector.matches(obj.meta().labels.as_ref());
        match controller_of(obj.meta()) {
            Some(r) if r.uid != uid => {}
            Some(_) if matches => claimed.push(obj),
            Some(_) => {
                if owner.deleting {
                    continue;
                }
                if let Err(e) = release(api, owner, &obj).await {
                    if !e.is_not_found() {
                        errors.push(e);
                    }
                }
            }
            None => {
                if owner.deleting || !matches || obj.meta().deletion_timestamp.is_some() {
                    continue;
                }
                if adopt_checked.is_none() {
                    let check = match can_adopt.take() {
                        Some(f) => f().await.map_err(|e| e.to_string()),
                        None => Ok(()),
                    };
                    adopt_checked = Some(check);
                }
                if let Some(Err(e)) = &adopt_checked {
                    errors.push(Error::CanAdopt(owner.reference.name.clone(), e.clone()));
                    continue;
                }
                match adopt(api, owner, &obj).await {
                    Ok(adopted) => claimed.push(Arc::new(adopted)),
                    Err(e) if e.is_not_found() => {}
                    Err(e) => errors.push(e),
                }
            }
        }
    }
    match errors.into_iter().next() {
        Some(e) => Err(e),
        None => Ok(claimed),
    }
}

fn claim_error<K: Resource<DynamicType = ()>>(obj: &K, source: kube::Error) -> Error {
    Error::Claim {
        kind: K::kind(&()).into_owned(),
        namespace: obj.meta().namespace.clone().unwrap_or_default(),
        name: obj.meta().name.clone().unwrap_or_default(),
        source: Box::new(source),
    }
}

async fn adopt<K>(api: &Api<K>, owner: &ClaimOwner<'_>, obj: &K) -> Result<K, Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Serialize + Debug,
{
    // The object's UID guards against adopting a same-named successor.
    let patch = serde_json::json!({
        "metadata": {
            "ownerReferences": [owner.reference],
            "uid": obj.meta().uid,
        }
    });
    let name = obj.meta().name.clone().unwrap_or_default();
    api.patch(&name, &PatchParams::default(), &Patch::Strategic(patch))
        .await
        .map_err(|e| claim_error(obj, e))
}

async fn release<K>(api: &Api<K>, owner: &ClaimOwner<'_>, obj: &K) -> Result<(), Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Serialize + Debug,
{
    let patch = serde_json::json!({
        "metadata": {
            "ownerReferences": [{"$patch": "delete", "uid": owner.reference.uid}],
            "uid": obj.meta().uid,
        }
    });
    let name = obj.meta().name.clone().unwrap_or_default();
    match api
        .patch(&name, &PatchParams::default(), &Patch::Strategic(patch))
        .await
    {
        Ok(_) => Ok(()),
        // Gone, or replaced by another object of the same name (the UID
        // precondition failed): nothing left to release.
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 422 => Ok(()),
        Err(e) => Err(claim_error(obj, e)),
    }
}

// ---------------------------------------------------------------------------
// Pod state

/// Neither finished (Succeeded/Failed) nor being deleted.
pub fn is_pod_active(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    phase != Some("Succeeded")
        && phase != Some("Failed")
        && pod.metadata.deletion_timestamp.is_none()
}

fn ready_condition(pod: &Pod) -> Option<&k8s_openapi::api::core::v1::PodCondition> {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
}

/// The pod's Ready condition is True.
pub fn is_pod_ready(pod: &Pod) -> bool {
    ready_condition(pod).is_some_and(|c| c.status == "True")
}

/// When the pod last became Ready, if it is.
pub fn pod_ready_time(pod: &Pod) -> Option<Timestamp> {
    ready_condition(pod)
        .filter(|c| c.status == "True")
        .and_then(|c| c.last_transition_time.as_ref())
        .map(|t| t.0)
}

/// Ready for at least `min_ready_seconds` at `now` (upstream's
/// IsPodAvailable: with 0 any ready pod is available).
pub fn is_pod_available(pod: &Pod, min_ready_seconds: i32, now: Timestamp) -> bool {
    if !is_pod_ready(pod) {
        return false;
    }
    if min_ready_seconds <= 0 {
        return true;
    }
    match pod_ready_time(pod) {
        Some(t) => t
            .checked_add(jiff::SignedDuration::from_secs(i64::from(
                min_ready_seconds,
            )))
            .is_ok_and(|t| t < now),
        None => false,
    }
}

/// The names of the pod's sidecars: init containers with restartPolicy
/// Always, which run alongside the main containers.
pub fn sidecar_names(pod: &Pod) -> HashSet<&str> {
    pod.spec
        .iter()
        .flat_map(|s| s.init_containers.iter().flatten())
        .filter(|c| c.restart_policy.as_deref() == Some("Always"))
        .map(|c| c.name.as_str())
        .collect()
}

/// The highest restart count of the pod's containers, counting sidecars
/// (restartable init containers) as upstream does.
pub fn max_container_restarts(pod: &Pod) -> i32 {
    let Some(status) = &pod.status else {
        return 0;
    };
    let mut max = status
        .container_statuses
        .iter()
        .flatten()
        .map(|c| c.restart_count)
        .max()
        .unwrap_or(0);
    let sidecars = sidecar_names(pod);
    for c in status.init_container_statuses.iter().flatten() {
        if sidecars.contains(c.name.as_str()) {
            max = max.max(c.restart_count);
        }
    }
    max
}

fn phase_ordinal(pod: &Pod) -> u8 {
    match pod.status.as_ref().and_then(|s| s.phase.as_deref()) {
        Some("Pending") => 0,
        Some("Unknown") => 1,
        Some("Running") => 2,
        _ => 3,
    }
}

fn deletion_cost(pod: &Pod) -> i32 {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(POD_DELETION_COST_ANNOTATION))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// log2 of the nanoseconds from `t` to `now` (-1 for none), upstream's
/// logarithmic scale-down buckets: pods of similar age count as equal.
fn log_bucket(t: Timestamp, now: Timestamp) -> i64 {
    let d = now.as_nanosecond() - t.as_nanosecond();
    if d > 0 {
        (d as f64).log2() as i64
    } else {
        -1
    }
}

/// Older-than comparison on optional times with upstream's rules: a
/// missing time sorts first, then newer before older (logarithmic buckets,
/// ties broken by UID).
fn newer_first(
    a: Option<Timestamp>,
    b: Option<Timestamp>,
    now: Timestamp,
    ua: &str,
    ub: &str,
) -> Ordering {
    match (a, b) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        (Some(a), Some(b)) if a == b => Ordering::Equal,
        (Some(a), Some(b)) => match log_bucket(a, now).cmp(&log_bucket(b, now)) {
            Ordering::Equal => ua.cmp(ub),
            o => o,
        },
    }
}

/// Upstream's ActivePodsWithRanks order: pods that should go first sort
/// first. `rank` is how many related pods share the pod's node.
pub fn compare_for_deletion(
    a: &Pod,
    rank_a: usize,
    b: &Pod,
    rank_b: usize,
    now: Timestamp,
) -> Ordering {
    let node = |p: &Pod| {
        p.spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .filter(|n| !n.is_empty())
            .is_some()
    };
    // 1. unassigned < assigned
    match node(a).cmp(&node(b)) {
        Ordering::Equal => {}
        o => return o,
    }
    // 2. Pending < Unknown < Running
    match phase_ordinal(a).cmp(&phase_ordinal(b)) {
        Ordering::Equal => {}
        o => return o,
    }
    // 3. not ready < ready
    match is_pod_ready(a).cmp(&is_pod_ready(b)) {
        Ordering::Equal => {}
        o => return o,
    }
    // 4. lower deletion cost < higher
    match deletion_cost(a).cmp(&deletion_cost(b)) {
        Ordering::Equal => {}
        o => return o,
    }
    // 5. doubled up on a node < alone
    match rank_b.cmp(&rank_a) {
        Ordering::Equal => {}
        o => return o,
    }
    let (ua, ub) = (
        a.metadata.uid.as_deref().unwrap_or(""),
        b.metadata.uid.as_deref().unwrap_or(""),
    );
    // 6. ready for less time < more time
    if is_pod_ready(a) && is_pod_ready(b) {
        match newer_first(pod_ready_time(a), pod_ready_time(b), now, ua, ub) {
            Ordering::Equal => {}
            o => return o,
        }
    }
    // 7. more restarts < fewer
    match max_container_restarts(b).cmp(&max_container_restarts(a)) {
        Ordering::Equal => {}
        o => return o,
    }
    // 8. newer < older
    let created = |p: &Pod| p.metadata.creation_timestamp.as_ref().map(|t| t.0);
    newer_first(created(a), created(b), now, ua, ub)
}

/// The `count` pods of `pods` to delete on scale-down, ranked as upstream
/// does; `related` are the pods of the owner's siblings (all replica sets
/// of a Deployment) used to prefer nodes running several of them.
pub fn pods_to_delete(
    mut pods: Vec<Arc<Pod>>,
    related: &[Arc<Pod>],
    count: usize,
    now: Timestamp,
) -> Vec<Arc<Pod>> {
    if count >= pods.len() {
        return pods;
    }
    let mut on_node: HashMap<&str, usize> = HashMap::new();
    for p in related {
        if !is_pod_active(p) {
            continue;
        }
        if let Some(n) = p.spec.as_ref().and_then(|s| s.node_name.as_deref()) {
            *on_node.entry(n).or_default() += 1;
        }
    }
    let rank = |p: &Pod| {
        p.spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .and_then(|n| on_node.get(n).copied())
            .unwrap_or(0)
    };
    let mut ranked: Vec<(usize, Arc<Pod>)> = pods.drain(..).map(|p| (rank(&p), p)).collect();
    ranked.sort_by(|(ra, a), (rb, b)| compare_for_deletion(a, *ra, b, *rb, now));
    ranked.into_iter().take(count).map(|(_, p)| p).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodCondition, PodSpec, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
        LabelSelectorRequirement, ObjectMeta, Time,
    };
    use kube::runtime::{reflector, watcher};

    fn ts(secs: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + secs).unwrap()
    }

    fn pod(
        name: &str,
        node: Option<&str>,
        phase: &str,
        ready_since: Option<i64>,
        created: i64,
    ) -> Arc<Pod> {
        let mut conditions = Vec::new();
        if let Some(t) = ready_since {
            conditions.push(PodCondition {
                type_: "Ready".into(),
                status: "True".into(),
                last_transition_time: Some(Time(ts(t))),
                ..Default::default()
            });
        }
        Arc::new(Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                uid: Some(format!("uid-{name}")),
                creation_timestamp: Some(Time(ts(created))),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: node.map(String::from),
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: Some(phase.into()),
                conditions: Some(conditions),
                ..Default::default()
            }),
        })
    }

    fn names(p: &[Arc<Pod>]) -> Vec<String> {
        p.iter().map(|p| p.name_any()).collect()
    }

    fn owned(name: &str, owner: Option<&str>) -> Arc<Pod> {
        let mut p = (*pod(name, None, "Pending", None, 0)).clone();
        p.metadata.namespace = Some("ns".into());
        p.metadata.owner_references = owner.map(|uid| {
            vec![OwnerReference {
                api_version: "apps/v1".into(),
                kind: "ReplicaSet".into(),
                name: format!("rs-{uid}"),
                uid: uid.into(),
                controller: Some(true),
                ..Default::default()
            }]
        });
        Arc::new(p)
    }

    fn sorted(mut v: Vec<String>) -> Vec<String> {
        v.sort();
        v
    }

    #[test]
    fn owner_index_follows_adoption_release_and_deletion() {
        let index = OwnerIndex::new(reflector::store::Writer::<Pod>::default().as_reader());
        let apply = |obj: Arc<Pod>, old: Option<Arc<Pod>>| {
            index.observe(&Notice::Apply { obj, old });
        };
        let a = owned("a", Some("u1"));
        apply(a.clone(), None);
        apply(owned("b", Some("u1")), None);
        apply(owned("o", None), None);
        assert_eq!(
            sorted(names(&index.children("ns", "u1", false))),
            ["a", "b"]
        );
        assert_eq!(
            sorted(names(&index.children("ns", "u1", true))),
            ["a", "b", "o"]
        );
        // Another controller takes `a`: it leaves u1's children.
        let moved = owned("a", Some("u2"));
        apply(moved.clone(), Some(a));
        assert_eq!(names(&index.children("ns", "u1", false)), ["b"]);
        assert_eq!(names(&index.children("ns", "u2", false)), ["a"]);
        // Released: it becomes an orphan of its namespace, and only there.
        let released = owned("a", None);
        apply(released.clone(), Some(moved));
        assert!(index.children("ns", "u2", false).is_empty());
        assert_eq!(
            sorted(names(&index.children("ns", "u1", true))),
            ["a", "b", "o"]
        );
        assert_eq!(index.children("other", "u1", true).len(), 1);
        // An update keeps one entry and hands out the newest copy.
        let mut newer = (*released).clone();
        newer.metadata.resource_version = Some("7".into());
        apply(Arc::new(newer), Some(released.clone()));
        let orphans: Vec<_> = index
            .children("ns", "none", true)
            .into_iter()
            .filter(|p| p.name_any() == "a")
            .collect();
        assert_eq!(orphans.len(), 1);
        assert_eq!(orphans[0].metadata.resource_version.as_deref(), Some("7"));
        index.observe(&Notice::Delete(orphans[0].clone()));
        assert_eq!(names(&index.children("ns", "none", true)), ["o"]);
    }

    #[test]
    fn scale_down_prefers_unassigned_pending_unready_then_newest() {
        let now = ts(100_000);
        let pods = vec![
            pod("running-old", Some("n1"), "Running", Some(10), 0),
            pod("unassigned", None, "Pending", None, 50),
            pod("pending", Some("n2"), "Pending", None, 60),
            pod("running-unready", Some("n3"), "Running", None, 5),
            pod("running-new", Some("n4"), "Running", Some(99_000), 98_000),
        ];
        let chosen = pods_to_delete(pods.clone(), &pods, 4, now);
        assert_eq!(
            names(&chosen),
            ["unassigned", "pending", "running-unready", "running-new"]
        );
    }

    #[test]
    fn scale_down_prefers_doubled_up_nodes_and_more_restarts() {
        let now = ts(100_000);
        let a = pod("a", Some("n1"), "Running", Some(10), 0);
        let b = pod("b", Some("n1"), "Running", Some(10), 0);
        let c = pod("c", Some("n2"), "Running", Some(10), 0);
        let chosen = pods_to_delete(
            vec![c.clone(), a.clone(), b.clone()],
            &[a.clone(), b.clone(), c.clone()],
            1,
            now,
        );
        assert_ne!(names(&chosen), ["c"], "a pod sharing its node goes first");

        let mut restarted = (*pod("r", Some("n5"), "Running", Some(10), 0)).clone();
        restarted.status.as_mut().unwrap().container_statuses =
            Some(vec![k8s_openapi::api::core::v1::ContainerStatus {
                name: "app".into(),
                restart_count: 4,
                ..Default::default()
            }]);
        let calm = pod("calm", Some("n6"), "Running", Some(10), 0);
        let chosen = pods_to_delete(vec![calm.clone(), Arc::new(restarted)], &[], 1, now);
        assert_eq!(names(&chosen), ["r"]);
    }

    #[test]
    fn deletion_cost_annotation_wins_over_age() {
        let now = ts(100_000);
        let mut cheap = (*pod("cheap", Some("n1"), "Running", Some(10), 0)).clone();
        cheap.metadata.annotations = Some(BTreeMap::from([(
            POD_DELETION_COST_ANNOTATION.to_string(),
            "-5".to_string(),
        )]));
        let new = pod("new", Some("n2"), "Running", Some(99_990), 99_990);
        let chosen = pods_to_delete(vec![new, Arc::new(cheap)], &[], 1, now);
        assert_eq!(names(&chosen), ["cheap"]);
    }

    #[test]
    fn availability_needs_min_ready_seconds_to_pass() {
        let p = pod("p", None, "Running", Some(0), 0);
        assert!(is_pod_available(&p, 0, ts(0)));
        assert!(!is_pod_available(&p, 10, ts(10)));
        assert!(is_pod_available(&p, 10, ts(11)));
        let unready = pod("u", None, "Running", None, 0);
        assert!(!is_pod_available(&unready, 0, ts(100)));
        let mut done = (*p).clone();
        done.status.as_mut().unwrap().phase = Some("Succeeded".into());
        assert!(!is_pod_active(&done));
        assert!(is_pod_active(&p));
    }

    #[test]
    fn pod_from_template_copies_metadata_and_sets_owner() {
        let template: PodTemplateSpec = serde_json::from_value(serde_json::json!({
            "metadata": {"labels": {"app": "web"}, "annotations": {"a": "b"}, "finalizers": ["x/y"]},
            "spec": {"containers": [{"name": "c", "image": "nginx"}]}
        }))
        .unwrap();
        let owner = OwnerReference {
            api_version: "apps/v1".into(),
            kind: "ReplicaSet".into(),
            name: "web-abc".into(),
            uid: "u1".into(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        };
        let p = pod_from_template(&template, "web-abc", Some(owner.clone()));
        assert_eq!(p.metadata.generate_name.as_deref(), Some("web-abc-"));
        assert_eq!(p.metadata.labels.unwrap()["app"], "web");
        assert_eq!(p.metadata.annotations.unwrap()["a"], "b");
        assert_eq!(p.metadata.finalizers.unwrap(), ["x/y"]);
        assert_eq!(p.metadata.owner_references.unwrap(), [owner]);
        assert_eq!(
            p.spec.unwrap().containers[0].image.as_deref(),
            Some("nginx")
        );
        // A name ending in a dot cannot take a dash: the bare name is used.
        assert_eq!(pod_name_prefix("UPPER"), "UPPER");
    }

    #[test]
    fn selectors_follow_upstream_semantics() {
        let sel: LabelSelector = LabelSelector {
            match_labels: Some(BTreeMap::from([("app".into(), "web".into())])),
            match_expressions: Some(vec![
                LabelSelectorRequirement {
                    key: "tier".into(),
                    operator: "NotIn".into(),
                    values: Some(vec!["db".into()]),
                },
                LabelSelectorRequirement {
                    key: "canary".into(),
                    operator: "DoesNotExist".into(),
                    values: None,
                },
            ]),
        };
        let s = Selector::from_label_selector(Some(&sel)).unwrap();
        let l = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>()
        };
        assert!(s.matches(Some(&l(&[("app", "web")]))));
        assert!(s.matches(Some(&l(&[("app", "web"), ("tier", "fe")]))));
        assert!(!s.matches(Some(&l(&[("app", "web"), ("tier", "db")]))));
        assert!(!s.matches(Some(&l(&[("app", "web"), ("canary", "1")]))));
        assert!(!s.matches(None));
        assert!(!Selector::from_label_selector(None)
            .unwrap()
            .matches(Some(&l(&[]))));
        let all = Selector::from_label_selector(Some(&LabelSelector::default())).unwrap();
        assert!(all.is_everything() && all.matches(None));
        let bad = LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "k".into(),
                operator: "In".into(),
                values: Some(vec![]),
            }]),
            ..Default::default()
        };
        assert!(Selector::from_label_selector(Some(&bad)).is_err());
    }

    #[tokio::test]
    async fn slow_start_doubles_batches_and_stops_at_first_failing_batch() {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let c = calls.clone();
        let (ok, err) = slow_start_batch(10, 1, move |i| {
            let c = c.clone();
            async move {
                c.lock().unwrap().push(i);
                if i >= 4 {
                    Err("quota")
                } else {
                    Ok(())
                }
            }
        })
        .await;
        // Batches 1, 2, 4: the third batch (calls 3..7) holds failures.
        assert_eq!(calls.lock().unwrap().len(), 7);
        assert_eq!(ok, 4);
        assert_eq!(err, Some("quota"));
        let (ok, err) = slow_start_batch(5, 1, |_| async { Ok::<(), ()>(()) }).await;
        assert_eq!((ok, err), (5, None));
    }

    #[test]
    fn expectations_hold_until_observed_or_expired() {
        let e = Expectations::new(Duration::from_secs(60));
        assert!(e.satisfied("rs"));
        e.expect_creations("rs", 2);
        assert!(!e.satisfied("rs"));
        e.creation_observed("rs");
        assert!(!e.satisfied("rs"));
        e.creation_observed("rs");
        assert!(e.satisfied("rs"));
        e.expect_deletions("rs", ["ns/a".to_string()]);
        assert!(!e.satisfied("rs"));
        e.deletion_observed("rs", "ns/b");
        assert!(!e.satisfied("rs"));
        e.deletion_observed("rs", "ns/a");
        assert!(e.satisfied("rs"));
        let short = Expectations::new(Duration::from_millis(0));
        short.expect_creations("rs", 1);
        std::thread::sleep(Duration::from_millis(2));
        assert!(
            short.satisfied("rs"),
            "expired expectations no longer block"
        );
    }

    #[test]
    fn child_events_map_to_their_controller_or_selecting_owners() {
        use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
        let (reader, mut writer) = reflector::store::<Deployment>();
        for (name, ns, selector) in [
            (
                "web",
                "default",
                serde_json::json!({"matchLabels": {"app": "web"}}),
            ),
            (
                "other-ns",
                "kube-system",
                serde_json::json!({"matchLabels": {"app": "web"}}),
            ),
            ("everything", "default", serde_json::json!({})),
        ] {
            let d: Deployment = serde_json::from_value(serde_json::json!({
                "metadata": {"name": name, "namespace": ns, "uid": name},
                "spec": {"selector": selector, "template": {}}
            }))
            .unwrap();
            writer.apply_watcher_event(&watcher::Event::Apply(d));
        }
        let selector =
            |d: &Deployment| Selector::from_label_selector(d.spec.as_ref().map(|s| &s.selector));
        let rs = |labels: serde_json::Value, owner: serde_json::Value| -> ReplicaSet {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "x", "namespace": "default", "labels": labels, "ownerReferences": owner},
                "spec": {"selector": {}}
            }))
            .unwrap()
        };
        let owners = |rs: &ReplicaSet| owners_of_child(&reader, &rs.metadata, selector);

        // An orphan: the selecting owners of its namespace; an empty
        // selector selects nothing.
        let orphan = rs(serde_json::json!({"app": "web"}), serde_json::json!([]));
        assert_eq!(
            owners(&orphan),
            vec![ObjectRef::new("web").within("default")]
        );
        assert!(owners(&rs(serde_json::json!({"app": "db"}), serde_json::json!([]))).is_empty());
        // A deleting orphan can't be adopted.
        let mut deleting = orphan.clone();
        deleting.metadata.deletion_timestamp = Some(Time(ts(0)));
        assert!(owners(&deleting).is_empty());

        // A controlled child: its controller, if of the owners' kind.
        let owned = rs(
            serde_json::json!({"app": "web"}),
            serde_json::json!([{"apiVersion": "apps/v1", "kind": "Deployment", "name": "api", "uid": "d2", "controller": true}]),
        );
        assert_eq!(
            owners(&owned),
            vec![ObjectRef::new("api").within("default")]
        );
        let foreign = rs(
            serde_json::json!({"app": "web"}),
            serde_json::json!([{"apiVersion": "example.com/v1", "kind": "Deployment", "name": "api", "uid": "d3", "controller": true}]),
        );
        assert!(owners(&foreign).is_empty());
    }
}
