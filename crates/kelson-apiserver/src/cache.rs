//! The watch cache: one per storage location, fed by one store watch.
//!
//! It holds the current objects (already serialized with their
//! resourceVersion, so a list or a watch event is mostly byte copies) and a
//! short window of recent events. Lists and watches are served from it;
//! a watch that starts before the window is served from the store's own
//! history instead, so only compaction makes a resourceVersion "too old".
//!
//! Consistency: the cache knows how far it has seen the store (the store
//! watch reports progress even when nothing under this prefix changes), so a
//! list that must reflect every acknowledged write waits until the cache has
//! reached the store's current revision.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use kelson_apimachinery::sparse::Filter;
use kelson_store::{EventKind, RangeRequest, Revision, Store, WatchStart, WatchStream};
use parking_lot::RwLock;
use serde_json::Value;
use tokio::sync::{broadcast, watch};

/// Events kept in memory for watches that start a little in the past.
const HISTORY: usize = 8192;
/// Live event fan-out buffer; a watcher further behind catches up from history.
const FANOUT: usize = 8192;

/// Derives what selectors need from a stored object: its labels and the
/// values of the fields that field selectors may name. Only the parts of
/// the object those come from are parsed.
#[derive(Clone)]
pub struct Indexer(Arc<IndexerParts>);

/// Field-selector values from the parsed parts.
type FieldsFn = dyn Fn(&Value) -> Vec<(String, String)> + Send + Sync;

struct IndexerParts {
    filter: Filter,
    fields: Box<FieldsFn>,
}

impl Indexer {
    /// `sources`: where in the object `fields` looks, beyond the name and
    /// namespace (see [`kelson_apimachinery::fields::field_sources`]).
    pub fn new(
        sources: &[&[&str]],
        fields: impl Fn(&Value) -> Vec<(String, String)> + Send + Sync + 'static,
    ) -> Indexer {
        let always: [&[&str]; 3] = [
            &["metadata", "name"],
            &["metadata", "namespace"],
            &["metadata", "labels"],
        ];
        Indexer(Arc::new(IndexerParts {
            filter: Filter::new(always.into_iter().chain(sources.iter().copied())),
            fields: Box::new(fields),
        }))
    }

    /// The parts of `json` the index reads.
    fn parse(&self, json: &[u8]) -> Option<Value> {
        self.0.filter.parse(json).ok()
    }

    fn fields(&self, obj: &Value) -> Vec<(String, String)> {
        (self.0.fields)(obj)
    }
}

/// One object as the cache holds it.
#[derive(Debug)]
pub struct CachedObject {
    pub key: Bytes,
    pub namespace: String,
    pub name: String,
    pub rev: Revision,
    /// The stored object with `metadata.resourceVersion` set.
    pub json: Bytes,
    pub labels: serde_json::Map<String, Value>,
    /// Field-selector values (e.g. "spec.nodeName" → "node1").
    pub fields: Vec<(String, String)>,
}

impl CachedObject {
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn value(&self) -> Value {
        serde_json::from_slice(&self.json).unwrap_or(Value::Null)
    }

    /// The object's metadata alone: the rest is scanned, not built, which
    /// is what metadata-only lists and watches need.
    pub fn metadata(&self) -> Value {
        #[derive(serde::Deserialize)]
        struct Only {
            #[serde(default)]
            metadata: Option<Value>,
        }
        serde_json::from_slice::<Only>(&self.json)
            .ok()
            .and_then(|o| o.metadata)
            .unwrap_or_else(|| Value::Object(Default::default()))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

#[derive(Debug)]
pub struct CacheEvent {
    pub kind: EventType,
    pub rev: Revision,
    /// The new state; for deletes, the last state with the delete's revision.
    pub obj: Arc<CachedObject>,
    /// The state before the change (for selector transitions).
    pub prev: Option<Arc<CachedObject>>,
}

struct State {
    objects: BTreeMap<Bytes, Arc<CachedObject>>,
    history: VecDeque<Arc<CacheEvent>>,
    /// History covers every event with a revision in `(oldest, rev]`.
    oldest: Revision,
    rev: Revision,
    events: broadcast::Sender<Arc<CacheEvent>>,
}

pub struct WatchCache {
    prefix: Bytes,
    store: Arc<dyn Store>,
    indexer: Indexer,
    state: RwLock<State>,
    rev_tx: watch::Sender<Revision>,
}

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("too old resource version: {requested} ({oldest})")]
    TooOld {
        requested: Revision,
        oldest: Revision,
    },
    #[error("Too large resource version: {requested}, current: {current}")]
    TooNew {
        requested: Revision,
        current: Revision,
    },
    #[error(transparent)]
    Store(#[from] kelson_store::Error),
}

/// Decodes one stored value into a cache entry.
pub fn decode(
    indexer: &Indexer,
    key: &Bytes,
    value: &[u8],
    rev: Revision,
) -> Option<Arc<CachedObject>> {
    // Splicing the resourceVersion into the stored bytes is much cheaper
    // than encoding the decoded object again; only when that cannot be done
    // is the whole object parsed.
    let spliced = crate::meta::with_resource_version(value, rev);
    let mut v: Value = match spliced {
        Some(_) => indexer.parse(value)?,
        None => serde_json::from_slice(value).ok()?,
    };
    let meta = v.get_mut("metadata")?.as_object_mut()?;
    if spliced.is_none() {
        meta.insert("resourceVersion".into(), Value::String(rev.to_string()));
    }
    let name = meta
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let namespace = meta
        .get("namespace")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let labels = meta
        .get("labels")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let fields = indexer.fields(&v);
    let json = match spliced {
        Some(json) => Bytes::from(json),
        None => Bytes::from(serde_json::to_vec(&v).ok()?),
    };
    Some(Arc::new(CachedObject {
        key: key.clone(),
        namespace,
        name,
        rev,
        json,
        labels,
        fields,
    }))
}

impl WatchCache {
    /// Lists the prefix, then follows it. Returns once the initial list is in.
    pub async fn start(
        store: Arc<dyn Store>,
        prefix: String,
        indexer: Indexer,
    ) -> Result<Arc<WatchCache>, CacheError> {
        let prefix = Bytes::from(prefix);
        let (objects, rev) = load(&store, &prefix, &indexer).await?;
        let (events, _) = broadcast::channel(FANOUT);
        let (rev_tx, _) = watch::channel(rev);
        let cache = Arc::new(WatchCache {
            prefix: prefix.clone(),
            store: store.clone(),
            indexer,
            state: RwLock::new(State {
                objects,
                history: VecDeque::new(),
                oldest: rev,
                rev,
                events,
            }),
            rev_tx,
        });
        let stream = store.watch(prefix, WatchStart::After(rev)).await?;
        tokio::spawn(follow(Arc::downgrade(&cache), stream));
        Ok(cache)
    }

    pub fn prefix(&self) -> &Bytes {
        &self.prefix
    }

    /// The revision the cache reflects.
    pub fn revision(&self) -> Revision {
        self.state.read().rev
    }

    /// Waits until the cache reflects the store at `rev` or later.
    pub async fn wait_for(&self, rev: Revision, timeout: Duration) -> Result<(), CacheError> {
        let mut rx = self.rev_tx.subscribe();
        let reached =
            tokio::time::timeout(timeout, async { rx.wait_for(|r| *r >= rev).await.is_ok() }).await;
        match reached {
            Ok(true) => Ok(()),
            _ => Err(CacheError::TooNew {
                requested: rev,
                current: self.revision(),
            }),
        }
    }

    /// Waits until the cache has seen every write acknowledged so far.
    pub async fn sync(&self) -> Result<Revision, CacheError> {
        let rev = self.store.status().await?.revision;
        self.wait_for(rev, Duration::from_secs(10)).await?;
        Ok(self.revision().max(rev))
    }

    /// A snapshot of objects under `sub` (a namespace prefix such as
    /// "default/", or "" for all), at the cache's revision.
    pub fn list(&self, sub: &str) -> (Vec<Arc<CachedObject>>, Revision) {
        let st = self.state.read();
        let mut from = self.prefix.to_vec();
        from.extend_from_slice(sub.as_bytes());
        let items = st
            .objects
            .range(Bytes::from(from.clone())..)
            .take_while(|(k, _)| k.starts_with(&from))
            .map(|(_, v)| v.clone())
            .collect();
        (items, st.rev)
    }

    pub fn get(&self, key: &[u8]) -> Option<Arc<CachedObject>> {
        self.state.read().objects.get(key).cloned()
    }

    /// Whether a watch after `rev` could start from the window now.
    pub fn covers(&self, rev: Revision) -> bool {
        let st = self.state.read();
        rev >= st.oldest && rev <= st.rev
    }

    /// Starts a watch after `rev`: events from the window, then live ones.
    /// Fails with `TooOld` if the window does not reach back that far (the
    /// caller then watches the store directly).
    pub fn watch_after(self: &Arc<Self>, rev: Revision) -> Result<CacheWatch, CacheError> {
        let st = self.state.read();
        if rev < st.oldest {
            return Err(CacheError::TooOld {
                requested: rev,
                oldest: st.oldest,
            });
        }
        if rev > st.rev {
            return Err(CacheError::TooNew {
                requested: rev,
                current: st.rev,
            });
        }
        let live = st.events.subscribe();
        let pending: VecDeque<_> = st.history.iter().filter(|e| e.rev > rev).cloned().collect();
        Ok(CacheWatch {
            cache: self.clone(),
            live,
            pending,
            last: rev,
        })
    }

    fn apply(&self, ev: kelson_store::Event) {
        let rev = ev.revision();
        let mut st = self.state.write();
        if rev <= st.rev {
            return;
        }
        let key = ev.kv.key.clone();
        let prev = st.objects.get(&key).cloned();
        let event = match ev.kind {
            EventKind::Put => {
                let Some(obj) = decode(&self.indexer, &key, &ev.kv.value, rev) else {
                    tracing::warn!(key = %String::from_utf8_lossy(&key), "undecodable object in store; skipped");
                    st.rev = rev;
                    return;
                };
                st.objects.insert(key, obj.clone());
                CacheEvent {
                    kind: if prev.is_some() {
                        EventType::Modified
                    } else {
                        EventType::Added
                    },
                    rev,
                    obj,
                    prev,
                }
            }
            EventKind::Delete => {
                st.objects.remove(&key);
                let last = ev
                    .prev
                    .as_ref()
                    .and_then(|p| decode(&self.indexer, &key, &p.value, rev));
                let Some(obj) = last.or_else(|| prev.clone()) else {
                    st.rev = rev;
                    return;
                };
                CacheEvent {
                    kind: EventType::Deleted,
                    rev,
                    obj,
                    prev,
                }
            }
        };
        let event = Arc::new(event);
        st.history.push_back(event.clone());
        while st.history.len() > HISTORY {
            if let Some(old) = st.history.pop_front() {
                st.oldest = old.rev;
            }
        }
        st.rev = rev;
        // No receivers is fine: nobody is watching.
        let _ = st.events.send(event);
        drop(st);
        self.rev_tx.send_replace(rev);
    }

    fn advance(&self, rev: Revision) {
        let mut st = self.state.write();
        if rev > st.rev {
            st.rev = rev;
            if st.history.is_empty() {
                // Nothing happened here since `oldest`: a watch from any
                // revision up to now misses nothing.
                st.oldest = rev;
            }
            drop(st);
            self.rev_tx.send_replace(rev);
        }
    }

    /// Rebuilds from a fresh list after the store watch broke; watchers are
    /// cut off (their channel closes) and must start again.
    async fn relist(&self) -> Result<WatchStream, CacheError> {
        let (objects, rev) = load(&self.store, &self.prefix, &self.indexer).await?;
        let stream = self
            .store
            .watch(self.prefix.clone(), WatchStart::After(rev))
            .await?;
        let mut st = self.state.write();
        st.objects = objects;
        st.history.clear();
        st.oldest = rev;
        st.rev = st.rev.max(rev);
        let (events, _) = broadcast::channel(FANOUT);
        st.events = events;
        drop(st);
        self.rev_tx.send_replace(rev);
        Ok(stream)
    }
}

async fn load(
    store: &Arc<dyn Store>,
    prefix: &Bytes,
    indexer: &Indexer,
) -> Result<(BTreeMap<Bytes, Arc<CachedObject>>, Revision), CacheError> {
    let resp = store.range(RangeRequest::prefix(prefix.clone())).await?;
    let mut objects = BTreeMap::new();
    for kv in resp.kvs {
        if let Some(obj) = decode(indexer, &kv.key, &kv.value, kv.mod_revision) {
            objects.insert(kv.key.clone(), obj);
        }
    }
    Ok((objects, resp.revision))
}

async fn follow(cache: std::sync::Weak<WatchCache>, mut stream: WatchStream) {
    let mut progress = stream.progress();
    loop {
        tokio::select! {
            ev = stream.next() => {
                let Some(cache) = cache.upgrade() else { return };
                match ev {
                    Some(Ok(ev)) => cache.apply(ev),
                    Some(Err(kelson_store::Error::Closed)) | None => return,
                    Some(Err(e)) => {
                        tracing::warn!(prefix = %String::from_utf8_lossy(&cache.prefix), error = %e, "watch cache relisting");
                        loop {
                            match cache.relist().await {
                                Ok(s) => { stream = s; progress = stream.progress(); break; }
                                Err(e) => {
                                    tracing::warn!(error = %e, "relist failed; retrying");
                                    tokio::time::sleep(Duration::from_millis(500)).await;
                                }
                            }
                        }
                    }
                }
            }
            changed = progress.changed() => {
                if changed.is_err() {
                    return;
                }
                let Some(cache) = cache.upgrade() else { return };
                // Read the mark first: every event at or below it is queued.
                let mark = *progress.borrow_and_update();
                while let Some(ev) = stream.try_next() {
                    match ev {
                        Ok(ev) => cache.apply(ev),
                        Err(_) => break,
                    }
                }
                cache.advance(mark);
            }
        }
    }
}

/// A watch on the cache: window events first, then live ones, each once and
/// in revision order.
pub struct CacheWatch {
    cache: Arc<WatchCache>,
    live: broadcast::Receiver<Arc<CacheEvent>>,
    pending: VecDeque<Arc<CacheEvent>>,
    last: Revision,
}

impl CacheWatch {
    /// The next event; `Err(TooOld)` if this watcher fell so far behind that
    /// the window no longer covers it; `Ok(None)` when the cache was reset.
    pub async fn next(&mut self) -> Result<Option<Arc<CacheEvent>>, CacheError> {
        loop {
            if let Some(ev) = self.take_pending() {
                return Ok(Some(ev));
            }
            match self.live.recv().await {
                Ok(ev) => {
                    if ev.rev > self.last {
                        self.last = ev.rev;
                        return Ok(Some(ev));
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => self.catch_up()?,
                Err(broadcast::error::RecvError::Closed) => return Ok(None),
            }
        }
    }

    /// The next event if one is ready now, without waiting: lets a watch
    /// write a burst of events as one chunk.
    pub fn try_next(&mut self) -> Result<Option<Arc<CacheEvent>>, CacheError> {
        loop {
            if let Some(ev) = self.take_pending() {
                return Ok(Some(ev));
            }
            match self.live.try_recv() {
                Ok(ev) => {
                    if ev.rev > self.last {
                        self.last = ev.rev;
                        return Ok(Some(ev));
                    }
                }
                Err(broadcast::error::TryRecvError::Lagged(_)) => self.catch_up()?,
                Err(_) => return Ok(None),
            }
        }
    }

    /// The revision of the last event handed out (where a watch that has to
    /// continue elsewhere resumes).
    pub fn last_revision(&self) -> Revision {
        self.last
    }

    fn take_pending(&mut self) -> Option<Arc<CacheEvent>> {
        while let Some(ev) = self.pending.pop_front() {
            if ev.rev > self.last {
                self.last = ev.rev;
                return Some(ev);
            }
        }
        None
    }

    /// After falling behind the live feed: continue from the window, or
    /// report `TooOld` when it no longer reaches back far enough.
    fn catch_up(&mut self) -> Result<(), CacheError> {
        let st = self.cache.state.read();
        if self.last < st.oldest {
            return Err(CacheError::TooOld {
                requested: self.last,
                oldest: st.oldest,
            });
        }
        self.live = st.events.subscribe();
        self.pending = st
            .history
            .iter()
            .filter(|e| e.rev > self.last)
            .cloned()
            .collect();
        Ok(())
    }

    /// A revision a bookmark may carry now: the cache's, provided every
    /// event up to it has been handed to this watcher; `None` while some are
    /// still queued.
    pub fn bookmark_revision(&self) -> Option<Revision> {
        let st = self.cache.state.read();
        // Events are queued before the revision moves (both under the lock),
        // so an empty queue here means nothing at or below `st.rev` is owed.
        if self.pending.is_empty() && self.live.is_empty() {
            Some(st.rev.max(self.last))
        } else {
            None
        }
    }
}
