//! Shared informers: one watch and one store per resource type for the whole
//! controller manager, as upstream's SharedInformerFactory. Without them
//! every controller that follows pods opened its own watch, so each pod
//! change was sent, decrypted and deserialized once per controller, and
//! every controller kept its own copy of every pod.
//!
//! An informer is started by the first [`Informers::get`] of its type. Its
//! task applies each watch event to the shared [`Store`] first and then
//! tells every subscriber, so what a subscriber hears about is already in
//! the store (upstream's order: indexer, then handlers). A subscriber that
//! joins after the first list gets every stored object replayed, then
//! [`Notice::Synced`].

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};

use futures::channel::mpsc;
use futures::StreamExt;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher::{self, watcher};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

/// What a subscriber hears, after the store has applied it.
#[derive(Debug)]
pub enum Notice<K> {
    /// Added or changed; `old` is what the store held before (`None`: the
    /// object is new to this subscriber).
    Apply { obj: Arc<K>, old: Option<Arc<K>> },
    /// Removed from the store.
    Delete(Arc<K>),
    /// The store holds exactly what the last list returned; sent after the
    /// first list and after every relist.
    Synced,
}

impl<K> Notice<K> {
    /// The object this notice is about (none for `Synced`).
    pub fn object(&self) -> Option<&Arc<K>> {
        match self {
            Notice::Apply { obj, .. } | Notice::Delete(obj) => Some(obj),
            Notice::Synced => None,
        }
    }
}

impl<K> Clone for Notice<K> {
    fn clone(&self) -> Self {
        match self {
            Notice::Apply { obj, old } => Notice::Apply {
                obj: obj.clone(),
                old: old.clone(),
            },
            Notice::Delete(o) => Notice::Delete(o.clone()),
            Notice::Synced => Notice::Synced,
        }
    }
}

/// Bounds every informed type meets.
pub trait Informed:
    Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static
{
}

impl<K> Informed for K where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static
{
}

/// One resource type's shared watch and store.
pub struct SharedInformer<K: Informed> {
    store: Store<K>,
    register: mpsc::UnboundedSender<mpsc::UnboundedSender<Notice<K>>>,
}

impl<K: Informed> Clone for SharedInformer<K> {
    fn clone(&self) -> Self {
        SharedInformer {
            store: self.store.clone(),
            register: self.register.clone(),
        }
    }
}

impl<K: Informed> SharedInformer<K> {
    /// The shared store (filled once the first list is in).
    pub fn store(&self) -> Store<K> {
        self.store.clone()
    }

    /// A new subscriber's notices. Each subscriber must drain its own:
    /// the buffer is unbounded, as upstream's per-handler buffers are.
    pub fn subscribe(&self) -> mpsc::UnboundedReceiver<Notice<K>> {
        let (tx, rx) = mpsc::unbounded();
        // The informer task outlives every handle; if it has stopped (on
        // shutdown), the receiver just ends.
        let _ = self.register.unbounded_send(tx);
        rx
    }
}

struct Inner {
    client: Client,
    informers: Mutex<HashMap<TypeId, Box<dyn Any + Send + Sync>>>,
    stop: CancellationToken,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// The controller manager's informers, one per type, started on first use
/// and stopped when the last clone of this handle is dropped.
#[derive(Clone)]
pub struct Informers {
    inner: Arc<Inner>,
}

impl Debug for Informers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Informers").finish_non_exhaustive()
    }
}

impl Informers {
    pub fn new(client: Client) -> Informers {
        Informers {
            inner: Arc::new(Inner {
                client,
                informers: Mutex::new(HashMap::new()),
                stop: CancellationToken::new(),
            }),
        }
    }

    pub fn client(&self) -> &Client {
        &self.inner.client
    }

    /// The informer of every `K` in the cluster (managedFields dropped:
    /// controllers never read them). Must be called within a Tokio runtime.
    pub fn get<K: Informed>(&self) -> SharedInformer<K> {
        let mut map = self
            .inner
            .informers
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(i) = map
            .get(&TypeId::of::<K>())
            .and_then(|b| b.downcast_ref::<SharedInformer<K>>())
        {
            return i.clone();
        }
        let (reader, writer) = reflector::store::<K>();
        let (register, registrations) = mpsc::unbounded();
        let informer = SharedInformer {
            store: reader.clone(),
            register,
        };
        map.insert(TypeId::of::<K>(), Box::new(informer.clone()));
        let api = Api::<K>::all(self.inner.client.clone());
        tokio::spawn(run_informer(
            api,
            reader,
            writer,
            registrations,
            self.inner.stop.clone(),
        ));
        informer
    }
}

/// Subscribers of one informer; those whose receiver is gone are dropped.
struct Subscribers<K>(Vec<mpsc::UnboundedSender<Notice<K>>>);

impl<K> Subscribers<K> {
    fn send(&mut self, notice: Notice<K>) {
        self.0
            .retain(|tx| tx.unbounded_send(notice.clone()).is_ok());
    }
}

async fn run_informer<K: Informed>(
    api: Api<K>,
    reader: Store<K>,
    mut writer: reflector::store::Writer<K>,
    mut registrations: mpsc::UnboundedReceiver<mpsc::UnboundedSender<Notice<K>>>,
    stop: CancellationToken,
) {
    let stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .modify(|o: &mut K| o.meta_mut().managed_fields = None);
    let mut stream = std::pin::pin!(stream);
    let mut subs = Subscribers(Vec::new());
    let mut synced = false;
    let mut registering = true;
    // The store as it was when a (re)list began, to tell subscribers what
    // changed once it is done.
    let mut before_list: Option<HashMap<ObjectRef<K>, Arc<K>>> = None;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            reg = registrations.next(), if registering => match reg {
                Some(tx) => {
                    if synced {
                        for obj in reader.state() {
                            let _ = tx.unbounded_send(Notice::Apply { obj, old: None });
                        }
                        let _ = tx.unbounded_send(Notice::Synced);
                    }
                    subs.0.push(tx);
                }
                None => registering = false,
            },
            ev = stream.next() => match ev {
                None => return,
                Some(Err(e)) => {
                    tracing::debug!(kind = %K::kind(&()), error = %e, "shared informer watch");
                }
                Some(Ok(ev)) => {
                    apply(&ev, &reader, &mut writer, &mut subs, &mut before_list);
                    if matches!(ev, watcher::Event::InitDone) {
                        synced = true;
                    }
                }
            },
        }
    }
}

/// Applies one event to the store, then tells the subscribers.
fn apply<K: Informed>(
    ev: &watcher::Event<K>,
    reader: &Store<K>,
    writer: &mut reflector::store::Writer<K>,
    subs: &mut Subscribers<K>,
    before_list: &mut Option<HashMap<ObjectRef<K>, Arc<K>>>,
) {
    match ev {
        watcher::Event::Init => {
            *before_list = Some(
                reader
                    .state()
                    .into_iter()
                    .map(|o| (ObjectRef::from_obj(&*o), o))
                    .collect(),
            );
            writer.apply_watcher_event(ev);
        }
        watcher::Event::InitApply(_) => writer.apply_watcher_event(ev),
        watcher::Event::InitDone => {
            writer.apply_watcher_event(ev);
            let mut old = before_list.take().unwrap_or_default();
            for obj in reader.state() {
                let prev = old.remove(&ObjectRef::from_obj(&*obj));
                // A relist that found an object unchanged tells nobody.
                let unchanged = prev.as_ref().is_some_and(|p| {
                    p.meta().resource_version.is_some()
                        && p.meta().resource_version == obj.meta().resource_version
                });
                if !unchanged {
                    subs.send(Notice::Apply { obj, old: prev });
                }
            }
            for (_, gone) in old {
                subs.send(Notice::Delete(gone));
            }
            subs.send(Notice::Synced);
        }
        watcher::Event::Apply(o) => {
            let key = ObjectRef::from_obj(o);
            let old = reader.get(&key);
            writer.apply_watcher_event(ev);
            if let Some(obj) = reader.get(&key) {
                subs.send(Notice::Apply { obj, old });
            }
        }
        watcher::Event::Delete(o) => {
            let key = ObjectRef::from_obj(o);
            let old = reader.get(&key);
            writer.apply_watcher_event(ev);
            let obj = old.unwrap_or_else(|| Arc::new(o.clone()));
            subs.send(Notice::Delete(obj));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Pod;

    fn pod(name: &str, rv: &str) -> Pod {
        let mut p = Pod::default();
        p.metadata.name = Some(name.into());
        p.metadata.namespace = Some("ns".into());
        p.metadata.resource_version = Some(rv.into());
        p
    }

    fn drain(rx: &mut mpsc::UnboundedReceiver<Notice<Pod>>) -> Vec<String> {
        let mut out = Vec::new();
        while let Ok(n) = rx.try_recv() {
            out.push(match n {
                Notice::Apply { obj, old } => format!(
                    "apply {} {} old={}",
                    obj.metadata.name.as_deref().unwrap_or(""),
                    obj.metadata.resource_version.as_deref().unwrap_or(""),
                    old.and_then(|o| o.metadata.resource_version.clone())
                        .unwrap_or_else(|| "-".into())
                ),
                Notice::Delete(o) => {
                    format!("delete {}", o.metadata.name.as_deref().unwrap_or(""))
                }
                Notice::Synced => "synced".into(),
            });
        }
        out
    }

    #[test]
    fn list_watch_and_relist_reach_subscribers_after_the_store() {
        let (reader, mut writer) = reflector::store::<Pod>();
        let (tx, mut rx) = mpsc::unbounded();
        let mut subs = Subscribers(vec![tx]);
        let mut before = None;
        let mut feed = |ev: watcher::Event<Pod>| {
            apply(&ev, &reader, &mut writer, &mut subs, &mut before);
        };
        feed(watcher::Event::Init);
        feed(watcher::Event::InitApply(pod("a", "1")));
        feed(watcher::Event::InitApply(pod("b", "2")));
        feed(watcher::Event::InitDone);
        let mut first = drain(&mut rx);
        first[..2].sort();
        assert_eq!(first, ["apply a 1 old=-", "apply b 2 old=-", "synced"]);

        feed(watcher::Event::Apply(pod("a", "3")));
        feed(watcher::Event::Delete(pod("b", "4")));
        assert_eq!(drain(&mut rx), ["apply a 3 old=1", "delete b"]);
        assert!(reader.get(&ObjectRef::new("b").within("ns")).is_none());

        // A relist: a unchanged, c new, and d (stored) vanished meanwhile.
        feed(watcher::Event::Apply(pod("d", "5")));
        drain(&mut rx);
        feed(watcher::Event::Init);
        feed(watcher::Event::InitApply(pod("a", "3")));
        feed(watcher::Event::InitApply(pod("c", "6")));
        feed(watcher::Event::InitDone);
        assert_eq!(drain(&mut rx), ["apply c 6 old=-", "delete d", "synced"]);
        assert_eq!(reader.state().len(), 2);
    }

    #[test]
    fn closed_subscribers_are_dropped() {
        let (tx1, rx1) = mpsc::unbounded::<Notice<Pod>>();
        let (tx2, mut rx2) = mpsc::unbounded();
        let mut subs = Subscribers(vec![tx1, tx2]);
        drop(rx1);
        subs.send(Notice::Synced);
        assert_eq!(subs.0.len(), 1);
        assert_eq!(drain(&mut rx2), ["synced"]);
    }
}
