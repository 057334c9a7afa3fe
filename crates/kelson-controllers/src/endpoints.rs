//! The endpoints and endpointslice controllers: for every Service with a
//! selector, core/v1 Endpoints and discovery.k8s.io/v1 EndpointSlices listing
//! the selected pods that have an IP, as upstream's two controllers do.
//! Selector-less Services are left to their users; the Endpoints of a
//! deleted Service are deleted (its slices go with their owner reference).
//!
//! Pods, Services and node zones are mirrored into compact caches from
//! watches; a pod change re-syncs only the Services that select it (before
//! or after the change).

pub mod desired;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, RwLock};

use futures::{Stream, StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Endpoints, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, PartialObjectMeta, PostParams};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::Client;
use tokio_util::sync::CancellationToken;

use crate::garbagecollector::queue::WorkQueue;
use crate::informers::{Informers, Notice};
use desired::{PodInfo, Skipped};

/// Upstream's annotation with the time of the change behind an update.
pub const LAST_CHANGE_TRIGGER_TIME: &str = "endpoints.kubernetes.io/last-change-trigger-time";
/// Set on Endpoints truncated to 1000 addresses.
pub const OVER_CAPACITY: &str = "endpoints.kubernetes.io/over-capacity";
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "endpointslice-controller.k8s.io";
pub const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";
/// Endpoints used as leader-election locks are never cleaned up.
const LEADER_ANNOTATION: &str = "control-plane.alpha.kubernetes.io/leader";
/// Upstream runs 5 workers for each controller.
const WORKERS: usize = 5;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("syncing Endpoints {0}/{1}: {2}")]
    Endpoints(String, String, #[source] kube::Error),
    #[error("syncing EndpointSlices of {0}/{1}: {2}")]
    Slices(String, String, #[source] kube::Error),
    #[error("pods of {0}/{1} are on nodes not known yet: {2}")]
    UnknownNodes(String, String, String),
}

type ByNamespace<T> = RwLock<HashMap<String, HashMap<String, Arc<T>>>>;

struct State {
    client: Client,
    services: ByNamespace<Service>,
    pods: ByNamespace<PodInfo>,
    /// Node name → its topology.kubernetes.io/zone label.
    nodes: RwLock<HashMap<String, Option<String>>>,
    queue: Arc<WorkQueue<(String, String)>>,
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|e| e.into_inner())
}

fn key_of(meta: &ObjectMeta) -> Option<(String, String)> {
    Some((meta.namespace.clone()?, meta.name.clone()?))
}

/// Runs both controllers until `shutdown` fires.
pub async fn run(client: Client, shutdown: CancellationToken) {
    run_with(Informers::new(client), shutdown).await;
}

/// Runs both controllers on shared informers until `shutdown` fires.
pub async fn run_with(informers: Informers, shutdown: CancellationToken) {
    let client = informers.client().clone();
    let state = Arc::new(State {
        client: client.clone(),
        services: Default::default(),
        pods: Default::default(),
        nodes: Default::default(),
        queue: WorkQueue::new(shutdown.clone()),
    });
    let synced: Vec<CancellationToken> = (0..3).map(|_| CancellationToken::new()).collect();
    let mut tasks = Vec::new();

    let st = state.clone();
    tasks.push(tokio::spawn(drive(
        watcher::watcher(Api::<Service>::all(client.clone()), Default::default()),
        synced[0].clone(),
        shutdown.clone(),
        {
            let mut seen = None;
            move |ev| st.on_service(ev, &mut seen)
        },
    )));
    let st = state.clone();
    let pod_notices = informers.get::<Pod>().subscribe();
    let (pods_synced, stop) = (synced[1].clone(), shutdown.clone());
    tasks.push(tokio::spawn(async move {
        let mut notices = std::pin::pin!(pod_notices);
        loop {
            let n = tokio::select! {
                _ = stop.cancelled() => return,
                n = notices.next() => n,
            };
            match n {
                Some(Notice::Synced) => pods_synced.cancel(),
                Some(n) => st.on_pod(n),
                None => return,
            }
        }
    }));
    let st = state.clone();
    tasks.push(tokio::spawn(drive(
        watcher::watcher(
            Api::<PartialObjectMeta<Node>>::all(client.clone()),
            Default::default(),
        ),
        synced[2].clone(),
        shutdown.clone(),
        {
            let mut seen = None;
            move |ev| st.on_node(ev, &mut seen)
        },
    )));
    // Our own objects are watched (metadata only) so that a deleted one is
    // put back, and leftovers of deleted Services are found at start.
    let st = state.clone();
    tasks.push(tokio::spawn(drive(
        watcher::watcher(
            Api::<PartialObjectMeta<Endpoints>>::all(client.clone()),
            Default::default(),
        ),
        CancellationToken::new(),
        shutdown.clone(),
        {
            let mut seen = None;
            move |ev| st.on_endpoints(ev, &mut seen)
        },
    )));
    let st = state.clone();
    tasks.push(tokio::spawn(drive(
        watcher::watcher(
            Api::<PartialObjectMeta<EndpointSlice>>::all(client.clone()),
            watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY}")),
        ),
        CancellationToken::new(),
        shutdown.clone(),
        {
            let mut seen = None;
            move |ev| st.on_slice(ev, &mut seen)
        },
    )));

    let all_synced = async {
        for s in &synced {
            s.cancelled().await;
        }
    };
    tokio::select! {
        _ = shutdown.cancelled() => {}
        _ = all_synced => {
            let workers: Vec<_> = (0..WORKERS)
                .map(|_| {
                    let st = state.clone();
                    tokio::spawn(async move { st.work().await })
                })
                .collect();
            for w in workers {
                let _ = w.await;
            }
        }
    }
    for t in tasks {
        let _ = t.await;
    }
}

/// Feeds a watch into `handle` until shutdown; `synced` fires after the
/// first complete list.
async fn drive<K>(
    stream: impl Stream<Item = Result<Event<K>, watcher::Error>> + Send,
    synced: CancellationToken,
    shutdown: CancellationToken,
    mut handle: impl FnMut(Event<K>) + Send,
) {
    let mut stream = std::pin::pin!(stream.default_backoff());
    loop {
        let ev = tokio::select! {
            _ = shutdown.cancelled() => return,
            ev = stream.try_next() => ev,
        };
        match ev {
            Ok(Some(ev)) => {
                let done = matches!(ev, Event::InitDone);
                handle(ev);
                if done {
                    synced.cancel();
                }
            }
            Ok(None) => return,
            Err(e) => tracing::debug!(error = %e, "endpoints watch"),
        }
    }
}

type Seen = Option<HashSet<(String, String)>>;

impl State {
    fn on_service(&self, ev: Event<Service>, seen: &mut Seen) {
        match ev {
            Event::Init => *seen = Some(HashSet::new()),
            Event::InitApply(s) | Event::Apply(s) => {
                let Some((ns, name)) = key_of(&s.metadata) else {
                    return;
                };
                if let Some(seen) = seen.as_mut() {
                    seen.insert((ns.clone(), name.clone()));
                }
                write(&self.services)
                    .entry(ns.clone())
                    .or_default()
                    .insert(name.clone(), Arc::new(s));
                self.queue.add((ns, name));
            }
            Event::Delete(s) => {
                let Some((ns, name)) = key_of(&s.metadata) else {
                    return;
                };
                if let Some(m) = write(&self.services).get_mut(&ns) {
                    m.remove(&name);
                }
                self.queue.add((ns, name));
            }
            Event::InitDone => {
                let Some(seen) = seen.take() else {
                    return;
                };
                let mut services = write(&self.services);
                for (ns, m) in services.iter_mut() {
                    m.retain(|name, _| {
                        let keep = seen.contains(&(ns.clone(), name.clone()));
                        if !keep {
                            self.queue.add((ns.clone(), name.clone()));
                        }
                        keep
                    });
                }
            }
        }
    }

    fn on_pod(&self, notice: Notice<Pod>) {
        match notice {
            Notice::Apply { obj: p, .. } => {
                let Some(info) = PodInfo::from_pod(&p) else {
                    return;
                };
                let info = Arc::new(info);
                let old = write(&self.pods)
                    .entry(info.namespace.clone())
                    .or_default()
                    .insert(info.name.clone(), info.clone());
                // Most pod updates change nothing the endpoints show.
                if old.as_deref() != Some(&*info) {
                    self.enqueue_for_pod(&info.namespace, old.as_deref(), Some(&info));
                }
            }
            Notice::Delete(p) => {
                let Some((ns, name)) = key_of(&p.metadata) else {
                    return;
                };
                let old = write(&self.pods).get_mut(&ns).and_then(|m| m.remove(&name));
                if let Some(old) = old {
                    self.enqueue_for_pod(&ns, Some(&old), None);
                }
            }
            // Relists arrive as exact changes.
            Notice::Synced => {}
        }
    }

    /// Queues every Service that selected the pod before or selects it now.
    fn enqueue_for_pod(&self, ns: &str, old: Option<&PodInfo>, new: Option<&PodInfo>) {
        let services = read(&self.services);
        let Some(m) = services.get(ns) else {
            return;
        };
        for (name, svc) in m {
            let Some(sel) = desired::selector(svc) else {
                continue;
            };
            let hit = |p: Option<&PodInfo>| p.is_some_and(|p| desired::selects(sel, &p.labels));
            if hit(old) || hit(new) {
                self.queue.add((ns.to_string(), name.clone()));
            }
        }
    }

    fn on_node(&self, ev: Event<PartialObjectMeta<Node>>, seen: &mut Seen) {
        let zone = |n: &PartialObjectMeta<Node>| {
            n.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("topology.kubernetes.io/zone").cloned())
        };
        match ev {
            Event::Init => *seen = Some(HashSet::new()),
            Event::InitApply(n) | Event::Apply(n) => {
                let Some(name) = n.metadata.name.clone() else {
                    return;
                };
                if let Some(seen) = seen.as_mut() {
                    seen.insert((String::new(), name.clone()));
                }
                write(&self.nodes).insert(name, zone(&n));
            }
            Event::Delete(n) => {
                if let Some(name) = &n.metadata.name {
                    write(&self.nodes).remove(name);
                }
            }
            Event::InitDone => {
                if let Some(seen) = seen.take() {
                    write(&self.nodes).retain(|n, _| seen.contains(&(String::new(), n.clone())));
                }
            }
        }
    }

    fn on_endpoints(&self, ev: Event<PartialObjectMeta<Endpoints>>, _seen: &mut Seen) {
        match ev {
            // At start every Endpoints is checked: those of deleted
            // Services go. Later, only a deletion needs us.
            Event::InitApply(e) | Event::Delete(e) => {
                let leader = e
                    .metadata
                    .annotations
                    .as_ref()
                    .is_some_and(|a| a.contains_key(LEADER_ANNOTATION));
                if let (false, Some(key)) = (leader, key_of(&e.metadata)) {
                    self.queue.add(key);
                }
            }
            Event::Init | Event::Apply(_) | Event::InitDone => {}
        }
    }

    fn on_slice(&self, ev: Event<PartialObjectMeta<EndpointSlice>>, _seen: &mut Seen) {
        if let Event::Delete(s) = ev {
            let service = s
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(SERVICE_NAME_LABEL).cloned());
            if let (Some(ns), Some(svc)) = (s.metadata.namespace.clone(), service) {
                self.queue.add((ns, svc));
            }
        }
    }

    async fn work(self: &Arc<Self>) {
        while let Some(key) = self.queue.get().await {
            match self.sync(&key.0, &key.1).await {
                Ok(()) => self.queue.forget(&key),
                Err(e) => {
                    tracing::debug!(error = %e, "endpoints sync");
                    self.queue.add_rate_limited(key.clone());
                }
            }
            self.queue.done(&key);
        }
    }

    async fn sync(&self, ns: &str, name: &str) -> Result<(), Error> {
        // The API server owns the `kubernetes` Service's Endpoints.
        if (ns, name) == ("default", "kubernetes") {
            return Ok(());
        }
        let svc = read(&self.services)
            .get(ns)
            .and_then(|m| m.get(name))
            .cloned();
        let Some(svc) = svc else {
            return self.delete_endpoints(ns, name).await;
        };
        let external_name =
            svc.spec.as_ref().and_then(|s| s.type_.as_deref()) == Some("ExternalName");
        let Some(selector) = desired::selector(&svc).filter(|_| !external_name) else {
            return Ok(());
        };
        let pods: Vec<Arc<PodInfo>> = read(&self.pods)
            .get(ns)
            .map(|m| {
                m.values()
                    .filter(|p| desired::selects(selector, &p.labels))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        let pods: Vec<&PodInfo> = pods.iter().map(|p| &**p).collect();
        let endpoints = self.sync_endpoints(&svc, &pods).await;
        let slices = self.sync_slices(&svc, &pods).await;
        endpoints.and(slices)
    }

    async fn delete_endpoints(&self, ns: &str, name: &str) -> Result<(), Error> {
        let api: Api<Endpoints> = Api::namespaced(self.client.clone(), ns);
        match api.delete(name, &DeleteParams::default()).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(Error::Endpoints(ns.into(), name.into(), e)),
        }
    }

    async fn sync_endpoints(&self, svc: &Service, pods: &[&PodInfo]) -> Result<(), Error> {
        let (ns, name) = key_of(&svc.metadata).unwrap_or_default();
        let err = |e| Error::Endpoints(ns.clone(), name.clone(), e);
        let (subsets, truncated) = desired::endpoints_subsets(svc, pods);
        let labels = object_labels(svc, false);
        let api: Api<Endpoints> = Api::namespaced(self.client.clone(), &ns);
        let current = api.get_opt(&name).await.map_err(err)?;
        let trigger = desired::trigger_time(svc, pods.iter().copied());
        let annotate = |meta: &mut ObjectMeta| {
            let a = meta.annotations.get_or_insert_with(Default::default);
            match trigger {
                Some(t) => a.insert(LAST_CHANGE_TRIGGER_TIME.into(), t.to_string()),
                None => a.remove(LAST_CHANGE_TRIGGER_TIME),
            };
            if truncated {
                a.insert(OVER_CAPACITY.into(), "truncated".into());
            } else {
                a.remove(OVER_CAPACITY);
            }
            if a.is_empty() {
                meta.annotations = None;
            }
        };
        match current {
            Some(mut cur) => {
                let same = cur.subsets.clone().unwrap_or_default() == subsets
                    && cur.metadata.labels.clone().unwrap_or_default() == labels
                    && cur
                        .metadata
                        .annotations
                        .as_ref()
                        .is_some_and(|a| a.contains_key(OVER_CAPACITY))
                        == truncated;
                if same {
                    return Ok(());
                }
                cur.subsets = Some(subsets);
                cur.metadata.labels = Some(labels);
                annotate(&mut cur.metadata);
                match api.replace(&name, &PostParams::default(), &cur).await {
                    Ok(_) => Ok(()),
                    Err(e) => Err(err(e)),
                }
            }
            None => {
                let mut ep = Endpoints {
                    metadata: ObjectMeta {
                        name: Some(name.clone()),
                        labels: Some(labels),
                        ..Default::default()
                    },
                    subsets: Some(subsets),
                };
                annotate(&mut ep.metadata);
                match api.create(&PostParams::default(), &ep).await {
                    Ok(_) => Ok(()),
                    // Created meanwhile: the next pass compares.
                    Err(kube::Error::Api(s)) if s.code == 409 => Err(err(kube::Error::Api(s))),
                    Err(e) => Err(err(e)),
                }
            }
        }
    }

    async fn sync_slices(&self, svc: &Service, pods: &[&PodInfo]) -> Result<(), Error> {
        let (ns, name) = key_of(&svc.metadata).unwrap_or_default();
        let err = |e| Error::Slices(ns.clone(), name.clone(), e);
        let mut want = BTreeMap::new();
        let mut unknown_nodes = Vec::new();
        {
            let nodes = read(&self.nodes);
            for family in desired::families(svc) {
                let (eps, skipped) =
                    desired::slice_endpoints(svc, pods, &family, |n| nodes.get(n).cloned());
                for Skipped::UnknownNode(n) in skipped {
                    unknown_nodes.push(n);
                }
                want.insert(family, eps);
            }
        }
        let api: Api<EndpointSlice> = Api::namespaced(self.client.clone(), &ns);
        let lp = ListParams::default().labels(&format!(
            "{SERVICE_NAME_LABEL}={name},{MANAGED_BY_LABEL}={MANAGED_BY}"
        ));
        let current = api.list(&lp).await.map_err(err)?.items;
        let existing: Vec<desired::ExistingSlice> = current
            .iter()
            .map(|s| desired::ExistingSlice {
                name: s.metadata.name.clone().unwrap_or_default(),
                address_type: s.address_type.clone(),
                ports: s.ports.clone().unwrap_or_default(),
                endpoints: s.endpoints.clone(),
            })
            .collect();
        let plan = desired::plan_slices(&want, &existing, desired::MAX_ENDPOINTS_PER_SLICE);
        let labels = object_labels(svc, true);
        let owner = OwnerReference {
            api_version: "v1".into(),
            kind: "Service".into(),
            name: name.clone(),
            uid: svc.metadata.uid.clone().unwrap_or_default(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        };
        let trigger = desired::trigger_time(svc, pods.iter().copied());
        let set_meta = |meta: &mut ObjectMeta| {
            meta.labels = Some(labels.clone());
            meta.owner_references = Some(vec![owner.clone()]);
            let a = meta.annotations.get_or_insert_with(Default::default);
            match trigger {
                Some(t) => a.insert(LAST_CHANGE_TRIGGER_TIME.into(), t.to_string()),
                None => a.remove(LAST_CHANGE_TRIGGER_TIME),
            };
            if a.is_empty() {
                meta.annotations = None;
            }
        };
        let pp = PostParams::default();
        // Upstream's order: create, then update, then delete, so clients
        // never see fewer endpoints than there are.
        for (address_type, ports, endpoints) in plan.create {
            let mut slice = EndpointSlice {
                address_type,
                endpoints,
                metadata: ObjectMeta {
                    generate_name: Some(format!("{name}-")),
                    ..Default::default()
                },
                ports: Some(ports),
            };
            set_meta(&mut slice.metadata);
            api.create(&pp, &slice).await.map_err(err)?;
        }
        let by_name: HashMap<&str, &EndpointSlice> = current
            .iter()
            .filter_map(|s| Some((s.metadata.name.as_deref()?, s)))
            .collect();
        let mut updates: Vec<EndpointSlice> = Vec::new();
        for (slice_name, endpoints) in plan.update {
            if let Some(cur) = by_name.get(slice_name.as_str()) {
                let mut s = (*cur).clone();
                s.endpoints = endpoints;
                set_meta(&mut s.metadata);
                updates.push(s);
            }
        }
        // Slices whose endpoints stay may still need the current labels
        // or owner.
        for slice_name in &plan.keep {
            if let Some(cur) = by_name.get(slice_name.as_str()) {
                let owned = cur
                    .metadata
                    .owner_references
                    .as_ref()
                    .is_some_and(|o| o.iter().any(|o| o.uid == owner.uid));
                if cur.metadata.labels.as_ref() != Some(&labels) || !owned {
                    let mut s = (*cur).clone();
                    set_meta(&mut s.metadata);
                    updates.push(s);
                }
            }
        }
        for s in updates {
            let n = s.metadata.name.clone().unwrap_or_default();
            api.replace(&n, &pp, &s).await.map_err(err)?;
        }
        for slice_name in plan.delete {
            match api.delete(&slice_name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(err(e)),
            }
        }
        if unknown_nodes.is_empty() {
            Ok(())
        } else {
            unknown_nodes.sort();
            unknown_nodes.dedup();
            Err(Error::UnknownNodes(ns, name, unknown_nodes.join(", ")))
        }
    }
}

/// The labels of the Endpoints (or, with `slice`, EndpointSlices) of a
/// Service: the Service's own, the headless marker, and for slices the
/// service-name and managed-by labels.
fn object_labels(svc: &Service, slice: bool) -> BTreeMap<String, String> {
    let mut labels = svc.metadata.labels.clone().unwrap_or_default();
    labels.remove(HEADLESS_LABEL);
    if slice {
        labels.remove(SERVICE_NAME_LABEL);
        labels.remove(MANAGED_BY_LABEL);
        labels.insert(
            SERVICE_NAME_LABEL.into(),
            svc.metadata.name.clone().unwrap_or_default(),
        );
        labels.insert(MANAGED_BY_LABEL.into(), MANAGED_BY.into());
    }
    if desired::is_headless(svc) {
        labels.insert(HEADLESS_LABEL.into(), String::new());
    }
    labels
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_mark_headless_services_and_slices_carry_their_service() {
        let svc: Service = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "db", "namespace": "ns", "labels": {"app": "db", "kubernetes.io/service-name": "spoof"}},
            "spec": {"clusterIP": "None", "selector": {"app": "db"}}
        }))
        .unwrap();
        let ep = object_labels(&svc, false);
        assert_eq!(ep.get("app").map(String::as_str), Some("db"));
        assert_eq!(ep.get(HEADLESS_LABEL).map(String::as_str), Some(""));
        let sl = object_labels(&svc, true);
        assert_eq!(sl[SERVICE_NAME_LABEL], "db");
        assert_eq!(sl[MANAGED_BY_LABEL], "endpointslice-controller.k8s.io");
    }
}
